"""The synthetic corpus behaves like real all-MiniLM-L6-v2 embeddings.

Reference: the 4,500 real vectors in tests/data (float16, 384-d, unit norm).
Everything is measured the same way on both: 4,000 documents, 500 held-out
queries, hnswlib M=16 ef_construction=100, recall@5 against exact search.
Isotropic Gaussian vectors of the same size must *fail* the same checks, so
the checks can tell the difference.
"""

from __future__ import annotations

from pathlib import Path

import hnswlib
import numpy as np
import pytest

from sim.calibrate.corpus import GENERATOR_DEFAULTS, make_corpus, make_queries, n_clusters
from sim.errors import CalibrationError

REAL = Path(__file__).parent / "data" / "minilm_l6_v2_4500x384_f16.npy"
DOCS, QUERIES, DIM = 4000, 500, 384
EFS = (10, 20, 50, 100)
RECALL_TOL = 0.04  # absolute, at each ef
PC_TOL = 0.15  # relative, for the 50 / 80 / 95 % counts
NN_TOL = 0.05  # absolute, on the 10 / 50 / 90 % quantiles of nearest-neighbour cosine


# The measurements, the same on real, synthetic and Gaussian vectors.


def hold_out(vectors: np.ndarray, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split real vectors into (documents, queries): a seeded permutation, the
    first ``n_queries`` rows are queries, the rest documents (never both)."""
    perm = np.random.default_rng(seed).permutation(len(vectors))
    return vectors[perm[n_queries:]], vectors[perm[:n_queries]]


def isotropic_gaussian(n: int, dim: int, seed: int) -> np.ndarray:
    """The naive baseline: isotropic Gaussian directions (unit vectors)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pc_counts(x: np.ndarray, fractions: tuple[float, ...] = (0.5, 0.8, 0.95)) -> list[int]:
    """Principal components needed to explain each fraction of the variance."""
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(axis=0)
    ev = np.linalg.svd(xc, compute_uv=False) ** 2
    c = np.cumsum(ev) / ev.sum()
    return [int(np.searchsorted(c, f) + 1) for f in fractions]


def nn_similarity(x: np.ndarray, n: int = 2000) -> np.ndarray:
    """Cosine similarity of each of the first ``n`` rows to its nearest other row."""
    a = np.asarray(x[:n], dtype=np.float32)
    s = a @ np.asarray(x, dtype=np.float32).T
    s[np.arange(len(a)), np.arange(len(a))] = -np.inf
    return s.max(axis=1)


def hnsw_recall_curve(
    docs: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 5,
    efs: tuple[int, ...] = (10, 20, 50, 100),
    M: int = 16,
    ef_construction: int = 100,
    seed: int = 1,
) -> list[float]:
    """hnswlib (inner product) recall@k against exact search, one value per ef."""
    idx = hnswlib.Index(space="ip", dim=docs.shape[1])
    idx.init_index(max_elements=len(docs), M=M, ef_construction=ef_construction, random_seed=seed)
    idx.add_items(docs, np.arange(len(docs)), num_threads=1)
    sc = queries @ docs.T
    truth = np.argpartition(-sc, k - 1, axis=1)[:, :k]
    out = []
    for ef in efs:
        idx.set_ef(ef)
        labels, _ = idx.knn_query(queries, k=k, num_threads=1)
        hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(labels, truth))
        out.append(hits / (k * len(queries)))
    return out


def _measure(docs: np.ndarray, queries: np.ndarray) -> dict:
    return {
        "recall": np.array(hnsw_recall_curve(docs, queries, k=5, efs=EFS)),
        "pcs": np.array(pc_counts(docs)),
        "nn": np.quantile(nn_similarity(docs), [0.1, 0.5, 0.9]),
    }


@pytest.fixture(scope="module")
def real() -> dict:
    x = np.load(REAL).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return _measure(*hold_out(x, QUERIES, seed=0))


@pytest.fixture(scope="module")
def synthetic() -> dict:
    return _measure(make_corpus(DOCS, DIM, seed=0), make_queries(QUERIES, DIM, seed=0, docs=DOCS))


@pytest.fixture(scope="module")
def gaussian() -> dict:
    g = isotropic_gaussian(DOCS + QUERIES, DIM, seed=0)
    return _measure(g[:DOCS], g[DOCS:])


def _recall_ok(m: dict, ref: dict) -> bool:
    return bool(np.all(np.abs(m["recall"] - ref["recall"]) <= RECALL_TOL))


def _pcs_ok(m: dict, ref: dict) -> bool:
    return bool(np.all(np.abs(m["pcs"] / ref["pcs"] - 1) <= PC_TOL))


def _nn_ok(m: dict, ref: dict) -> bool:
    return bool(np.all(np.abs(m["nn"] - ref["nn"]) <= NN_TOL))


def test_real_vectors_are_what_the_readme_says(real):
    # measured on 35,000 vectors of the same kind: ~45 / 132 / 231 PCs; recall at 35k 0.85/0.93/0.98/0.99 (higher at 4k)
    assert np.all(np.abs(real["pcs"] / np.array([45, 132, 231]) - 1) < 0.1)
    assert 0.8 < real["recall"][0] < 0.95 and real["recall"][-1] > 0.98


def test_synthetic_matches_real_recall_curve(real, synthetic):
    assert _recall_ok(synthetic, real), (synthetic["recall"], real["recall"])


def test_synthetic_matches_real_spectrum(real, synthetic):
    assert _pcs_ok(synthetic, real), (synthetic["pcs"], real["pcs"])


def test_synthetic_matches_real_neighbour_similarity(real, synthetic):
    assert _nn_ok(synthetic, real), (synthetic["nn"], real["nn"])


def test_isotropic_gaussian_fails_every_check(real, gaussian):
    assert not _recall_ok(gaussian, real)
    assert not _pcs_ok(gaussian, real)
    assert not _nn_ok(gaussian, real)
    assert gaussian["recall"][0] < real["recall"][0] - 0.3


def test_corpus_shape_norm_determinism():
    a = make_corpus(1000, 64, seed=5)
    assert a.dtype == np.float32 and a.shape == (1000, 64)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, make_corpus(1000, 64, seed=5))
    assert not np.array_equal(a, make_corpus(1000, 64, seed=6))
    q = make_queries(50, 64, seed=5, docs=1000)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # held out: no query is one of the documents
    assert (q @ a.T).max() < 0.9999


def test_topics_grow_with_corpus_size():
    p = GENERATOR_DEFAULTS
    c = [n_clusters(n, p["clusters"], p["clusters_ref_docs"], p["clusters_growth"]) for n in (4000, 16000, 50000)]
    assert c[0] == p["clusters"] and c[0] < c[1] < c[2]
    assert c[1] == round(p["clusters"] * 4 ** p["clusters_growth"])


def test_spectrum_scales_with_dimension():
    small = np.array(pc_counts(make_corpus(6000, 384, seed=2)))
    big = np.array(pc_counts(make_corpus(6000, 768, seed=2)))
    ratio = big / small
    assert np.all((ratio > 1.7) & (ratio < 2.3)), (small, big)


def test_bad_generator_parameters():
    with pytest.raises(CalibrationError, match="'bogus' is not one of"):
        make_corpus(10, 8, seed=0, bogus=1)
    with pytest.raises(CalibrationError, match="knee"):
        make_corpus(10, 8, seed=0, knee=0)
