"""A synthetic corpus that behaves like real sentence embeddings.

Why: HNSW's speed and recall depend on how the vectors are spread.  Isotropic
Gaussian vectors are far too hard for a graph index (recall@5 0.04-0.26 at ef
10-100 on 35k x 384) and a low-dimensional clustered toy far too easy (0.97-1.0).
Real all-MiniLM-L6-v2 embeddings sit between (0.85 / 0.93 / 0.98 / 0.99).

Picture of the generator (all in a ``dim``-dimensional space, then rotated by
a random orthogonal matrix so no coordinate is special):

1. a variance spectrum over the principal axes,
   ``lam(i) = (1 + r*ref_dim/knee) ** -alpha * exp(-(r/tail_cut) ** tail_power)``
   with relative rank ``r = i/dim``: a power law with a knee, cut off in the
   last quarter or so of the axes, like the real spectrum (real MiniLM needs
   ~45 / 132 / 231 of 384 principal components for 50 / 80 / 95 % of the
   variance);
2. topic centres drawn from N(0, diag(lam)), with Zipf-like popularity
   (weight of topic j proportional to ``(j+1) ** -cluster_zipf``).  The
   number of topics grows with the corpus like Heaps' law,
   ``clusters * (N / clusters_ref_docs) ** clusters_growth`` (682 at 4,000
   documents, ~2,100 at 50,000): a bigger corpus covers more subjects.  With a
   fixed topic count HNSW recall *rises* with N as topics fill in, unlike real
   text, whose recall falls slightly (0.87 -> 0.85 at ef 10 from 4k to 35k);
   growth with exponent 0.45 reproduces that (0.86 / 0.93 / 0.98 / 0.99 at
   35k x 384 against the real 0.85 / 0.93 / 0.98 / 0.99);
3. each document = its topic centre + per-point noise drawn from
   N(0, diag(lam_noise)) (same form, exponent ``noise_alpha``) scaled by
   ``noise_scale * exp(noise_spread * z)``, z ~ N(0,1) (some documents sit
   tight in their topic, some loose: that spreads the nearest-neighbour
   similarity like real text);
4. L2-normalise, add a shared offset of length ``mean_norm`` (real embeddings
   share a common direction: the mean of unit MiniLM vectors has length 0.31),
   rotate, L2-normalise again.

The defaults were fitted (random search, then local refinement) to the 4,500
real all-MiniLM-L6-v2 vectors in ``tests/data``: principal-component counts,
nearest-neighbour cosine quantiles, length of the mean vector and the hnswlib
recall@5 curve at ef 10/20/50/100 (4,000 documents, 500 held-out queries).

Other dimensions: the spectrum is defined on the *relative* rank ``i/dim``, so
at dim 768 every principal-component count roughly doubles (~88 / 240 / 455
for 50 / 80 / 95 % at 20,000 documents, against ~47 / 123 / 230 at 384): the
spectrum keeps its shape and the effective dimensionality scales with the
model width.  That is an assumption (we had real vectors only at 384),
recorded in every calibration file via the generator parameters.

Determinism: everything depends on ``(seed, dim)`` and, for the topic count,
on the corpus size.  Topic centres come in blocks with their own streams, so a
bigger corpus keeps a smaller one's topics and adds new ones; documents are
drawn in blocks of ``BLOCK`` rows, each from its own stream.  Queries
(:func:`make_queries`, told the corpus size) come from the same mixture through
a separate stream: never the same points as the documents (held out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.errors import CalibrationError

#: Parameters of :func:`make_corpus`, fitted to 4,500 real all-MiniLM-L6-v2
#: vectors (tests/data/minilm_l6_v2_4500x384_f16.npy); see tests/test_corpus.py.
GENERATOR_DEFAULTS: dict[str, Any] = {
    # number of topic centres at `clusters_ref_docs` documents, and its growth:
    # clusters(N) = clusters * (N / clusters_ref_docs) ** clusters_growth
    "clusters": 682,
    "clusters_ref_docs": 4000,
    "clusters_growth": 0.45,
    # Zipf popularity exponent of the topics
    "cluster_zipf": 0.689,
    # spectrum of the topic centres: (1 + r*ref_dim/knee)^-alpha, r = rank/dim
    "alpha": 1.576,
    "knee": 38.0,
    # spectrum exponent of the within-topic noise (same knee and tail)
    "noise_alpha": 0.854,
    # tail cut-off of both spectra: exp(-(r/tail_cut)^tail_power)
    "tail_cut": 0.623,
    "tail_power": 1.908,
    # within-topic noise scale and its log-normal spread across documents
    "noise_scale": 0.897,
    "noise_spread": 0.27,
    # length of the shared offset added to the unit vectors
    "mean_norm": 0.341,
    # the dimension the knee is expressed in (the real vectors' 384)
    "ref_dim": 384,
}

BLOCK = 4096
TOPIC_BLOCK = 256
_STRUCTURE, _DOCS, _QUERIES, _TOPICS = 0, 1, 2, 3


@dataclass(frozen=True)
class _Structure:
    rotation: np.ndarray
    centres: np.ndarray
    weights: np.ndarray
    noise_sd: np.ndarray
    offset: np.ndarray


def n_clusters(docs: int, clusters: int, clusters_ref_docs: int, clusters_growth: float) -> int:
    """Topics in a corpus of ``docs`` documents (Heaps-law-like growth):
    ``round(clusters * (docs / clusters_ref_docs) ** clusters_growth)``, at least 1."""
    return max(1, round(clusters * (max(docs, 1) / clusters_ref_docs) ** clusters_growth))


def _params(params: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(GENERATOR_DEFAULTS))
    if unknown:
        raise CalibrationError(
            f"corpus generator parameter {unknown[0]!r} is not one of {', '.join(sorted(GENERATOR_DEFAULTS))}"
        )
    p = {**GENERATOR_DEFAULTS, **params}
    for k in ("clusters", "ref_dim", "clusters_ref_docs"):
        if isinstance(p[k], bool) or not isinstance(p[k], (int, np.integer)) or p[k] < 1:
            raise CalibrationError(f"corpus generator parameter {k}={p[k]!r} must be a positive integer")
    for k in ("knee", "tail_cut", "tail_power"):
        if not float(p[k]) > 0:
            raise CalibrationError(f"corpus generator parameter {k}={p[k]!r} must be > 0")
    for k in ("alpha", "noise_alpha", "cluster_zipf", "noise_scale", "noise_spread", "mean_norm", "clusters_growth"):
        if not float(p[k]) >= 0:
            raise CalibrationError(f"corpus generator parameter {k}={p[k]!r} must be >= 0")
    return p


def spectrum(dim: int, alpha: float, knee: float, tail_cut: float, tail_power: float, ref_dim: int) -> np.ndarray:
    """Variances along the ``dim`` principal axes:
    ``(1 + r*ref_dim/knee)^-alpha * exp(-(r/tail_cut)^tail_power)``, ``r = i/dim``."""
    r = np.arange(dim) / dim
    return (1.0 + r * ref_dim / knee) ** (-alpha) * np.exp(-((r / tail_cut) ** tail_power))


def _rng(seed: int, dim: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=[int(seed), int(dim)], spawn_key=tuple(key)))


def _structure(dim: int, seed: int, docs: int, p: dict[str, Any]) -> _Structure:
    rng = _rng(seed, dim, _STRUCTURE)
    lam_c = spectrum(dim, p["alpha"], p["knee"], p["tail_cut"], p["tail_power"], p["ref_dim"])
    lam_n = spectrum(dim, p["noise_alpha"], p["knee"], p["tail_cut"], p["tail_power"], p["ref_dim"])
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q *= np.sign(np.diag(r))  # a uniformly random rotation
    offset = rng.standard_normal(dim)
    offset *= float(p["mean_norm"]) / np.linalg.norm(offset)
    c = n_clusters(docs, int(p["clusters"]), int(p["clusters_ref_docs"]), float(p["clusters_growth"]))
    # topic centres come in blocks with their own streams: a bigger corpus
    # keeps the smaller one's topics and adds new ones
    blocks = [
        _rng(seed, dim, _TOPICS, b).standard_normal((min(TOPIC_BLOCK, c - start), dim))
        for b, start in enumerate(range(0, c, TOPIC_BLOCK))
    ]
    centres = np.concatenate(blocks) * np.sqrt(lam_c)
    w = (1.0 + np.arange(c)) ** (-float(p["cluster_zipf"]))
    return _Structure(rotation=q, centres=centres, weights=w / w.sum(), noise_sd=np.sqrt(lam_n), offset=offset)


def _draw(n: int, dim: int, seed: int, stream: int, docs: int, p: dict[str, Any]) -> np.ndarray:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise CalibrationError(f"corpus size {n!r} must be a non-negative integer")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 2:
        raise CalibrationError(f"corpus dim {dim!r} must be an integer >= 2")
    st = _structure(dim, seed, docs, p)
    out = np.empty((n, dim), dtype=np.float32)
    for b, start in enumerate(range(0, n, BLOCK)):
        m = min(BLOCK, n - start)
        rng = _rng(seed, dim, stream, b)
        topic = rng.choice(st.centres.shape[0], size=m, p=st.weights)
        scale = float(p["noise_scale"]) * np.exp(float(p["noise_spread"]) * rng.standard_normal(m))
        x = st.centres[topic] + scale[:, None] * rng.standard_normal((m, dim)) * st.noise_sd
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += st.offset
        x = x @ st.rotation.T
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def make_corpus(n: int, dim: int, seed: int, **params: Any) -> np.ndarray:
    """``n`` synthetic documents, float32 (n, dim), L2-normalised rows.

    ``params`` override :data:`GENERATOR_DEFAULTS`.  The number of topics
    grows with ``n`` (see :func:`n_clusters`).
    """
    return _draw(n, dim, seed, _DOCS, n, _params(params))


def make_queries(n: int, dim: int, seed: int, *, docs: int, **params: Any) -> np.ndarray:
    """``n`` held-out queries for the corpus ``make_corpus(docs, dim, seed, **params)``:
    the same mixture (same topics), drawn from a separate random stream, so
    never one of the documents."""
    return _draw(n, dim, seed, _QUERIES, docs, _params(params))
