"""Measure real retrieval indexes and write a calibration file.

Picture: for each corpus size N we build four real indexes over the same
L2-normalised vectors, then ask them the same held-out queries one at a time
and time every call with ``time.perf_counter_ns``:

* ``hnsw``          hnswlib HNSW graph, inner-product space (cosine on unit
                    vectors); knob ``ef`` (``ef_search``).
* ``linear_numpy``  exact scan: one matrix-vector product + ``np.argpartition``.
* ``linear_python`` exact scan written as the plain Python loop of the
                    article (``sum(a*b for a, b in zip(q, d))`` per document,
                    ``heapq.nlargest``).  Too slow for big N, so it is timed
                    on a subsample of at most ``linear_python_docs`` documents
                    and every latency is scaled by ``N / subsample`` (the scan
                    is O(N)); the record says so (``scaled_from_docs``).
* ``ivf``           faiss ``IndexIVFFlat`` with inner product; knob
                    ``nprobe``; ``nlist`` defaults to ``round(4*sqrt(N))``
                    capped at ``N // 39`` so k-means has >= 39 points per list.

Concurrency: for each thread count T the index is built once in this process,
then T worker processes are forked, each limited to one BLAS/OpenMP thread.
Each worker loads its own private copy of the index (hnswlib file, faiss
serialized bytes, a copied numpy matrix, fresh Python lists) -- like separate
server processes -- so concurrent workers compete for memory bandwidth and
cache as they would, without the flattering effect of two lock-step scans
sharing one copy in cache (measured here: a shared 150 MB matrix made two
workers *faster* than one).  Workers warm up, start together at a barrier and
time their own queries; the T x n_queries samples form one record.

Records keep the latency distribution as quantiles at ``PROBS`` (0, 0.01, ...,
0.99, 1), enough to rebuild it by inverse-CDF sampling
(:func:`sim.physics.retrieval.sample_quantiles`).  With several corpus sizes,
each (index, knob, threads) series gets a scaling law fitted for the mean and
for every quantile: ``y = a + b * x`` with ``x = law_x(...)``:

* linear scans: ``x = N``
* hnsw:         ``x = ln N``
* ivf:          ``x = nlist + N / nlist * nprobe``: the vectors an IVF query
                compares with (all centroids, then the probed lists).  With a
                fixed ``nlist`` this is the textbook ``a + b*N/nlist*nprobe``;
                with the default ``nlist ~ 4*sqrt(N)`` the centroid scan is
                the larger term at small nprobe and must be counted (without
                it the fit on 5k/20k/50k x 768 had r2 0.77-0.87).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata as md
import json
import multiprocessing
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from sim.calibrate.corpus import GENERATOR_DEFAULTS, make_corpus, make_queries
from sim.calibrate.machine import cpu_model, loadavg, run_header, usable_cores
from sim.errors import CalibrationError
from sim.indexes import kind, kinds
from sim.indexes.base import MIN_POINTS_PER_LIST, IndexParams, RetrievalRecord, ScaledFrom, auto_nlist

VERSION = 1
KIND = "capsim.retrieval_calibration"
#: Quantile probabilities stored for every record: 0 (min), 0.01 .. 0.99, 1 (max).
PROBS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))
WARMUP_QUERIES = 5

Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------
# scaling laws


def law_x(index: str, docs: int | float, *, nlist: int | None = None, nprobe: int | None = None) -> float:
    """The regressor ``x`` of the scaling law ``y = a + b*x`` for ``index`` (see :mod:`sim.indexes`)."""
    return kind(index).law_x(docs, nlist=nlist, nprobe=nprobe)


def fit_law(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Least-squares fit of ``y = a + b*x``; returns ``a``, ``b``, ``r2``, ``max_rel_err``.

    With a single distinct ``x`` the slope is 0 and ``a`` is the mean.  ``r2`` is
    1 - SS_res/SS_tot (1.0 when ``y`` is constant and fitted exactly);
    ``max_rel_err`` is max |fit - y| / |y| over the points.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.size == 0:
        raise ValueError("fit_law needs two 1-D sequences of the same non-zero length")
    if np.unique(xa).size < 2:
        a, b = float(ya.mean()), 0.0
    else:
        A = np.column_stack([np.ones_like(xa), xa])
        (a, b), *_ = np.linalg.lstsq(A, ya, rcond=None)
        a, b = float(a), float(b)
    fit = a + b * xa
    ss_res = float(np.sum((ya - fit) ** 2))
    ss_tot = float(np.sum((ya - ya.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res < 1e-18 else 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(fit - ya) / np.abs(ya)
    rel = rel[np.isfinite(rel)]
    return {"a": a, "b": b, "r2": r2, "max_rel_err": float(rel.max()) if rel.size else 0.0}


# --------------------------------------------------------------------------
# thread limiting (workers get one BLAS / OpenMP thread each)


def limit_threads(n: int = 1) -> Callable[[], None]:
    """Limit BLAS (threadpoolctl) and faiss OpenMP to ``n`` threads in this process; return
    a function that restores the previous limits."""
    undo: list[Callable[[], None]] = [threadpool_limits(n).restore_original_limits]
    env = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    for var in env:
        os.environ[var] = str(n)

    def _env_back() -> None:
        for var, val in env.items():
            if val is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = val

    undo.append(_env_back)
    import faiss  # deferred: heavy, only to limit its OpenMP threads

    omp = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    undo.append(lambda: faiss.omp_set_num_threads(omp))

    def restore() -> None:
        for f in reversed(undo):
            with contextlib.suppress(Exception):
                f()

    return restore


# --------------------------------------------------------------------------
# machine and corpus description


def _blas_description() -> dict[str, Any]:
    cfg = np.show_config(mode="dicts")
    blas = cfg.get("Build Dependencies", {}).get("blas", {})
    return {
        "numpy_build": {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas},
        "threadpools": [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer", "architecture")}
            for p in threadpool_info()
        ],
    }


def machine_description() -> dict[str, Any]:
    """CPU model, cores, BLAS, library versions (numpy, hnswlib, faiss, python)."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "numpy": np.__version__}
    try:
        versions["hnswlib"] = md.version("hnswlib")
    except Exception:
        versions["hnswlib"] = None
    import faiss  # deferred: heavy, only to report its version

    versions["faiss"] = getattr(faiss, "__version__", None)
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity_count": usable_cores(),
        "platform": platform.platform(),
        "blas": _blas_description(),
        "versions": versions,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_vectors(path: str | os.PathLike[str], dim: int | None = None) -> np.ndarray:
    """Load a user's ``.npy`` (float16/32/64, shape (n, d)), check it, return
    float32 L2-normalised rows.  Bad input -> :class:`CalibrationError`."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise CalibrationError(f"--vectors {path}: no such file")
    try:
        arr = np.load(p, allow_pickle=False, mmap_mode="r")
    except Exception as exc:
        raise CalibrationError(f"--vectors {name}: not a readable .npy file ({type(exc).__name__})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive (np.load returns its members)
        with contextlib.suppress(AttributeError):
            arr.close()
        raise CalibrationError(
            f"--vectors {name}: an .npz archive, not one .npy array; save the (n, d) array with np.save"
        )
    if arr.ndim != 2:
        raise CalibrationError(f"--vectors {name}: shape {tuple(arr.shape)} must be 2-D (n, d)")
    if arr.dtype.kind != "f":
        raise CalibrationError(f"--vectors {name}: dtype {arr.dtype} must be float16, float32 or float64")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise CalibrationError(f"--vectors {name}: shape {tuple(arr.shape)} needs at least 2 rows and 1 column")
    if dim is not None and arr.shape[1] != dim:
        raise CalibrationError(f"--vectors {name}: vectors have dim {arr.shape[1]} but --dim is {dim}")
    x = np.asarray(arr)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise CalibrationError(f"--vectors {name}: {bad} row(s) contain NaN or inf; all values must be finite")
    unit = unit_rows(x)
    if unit is None:
        raise CalibrationError(f"--vectors {name}: some row(s) are all zero; cannot normalise")
    return unit


def unit_rows(x: np.ndarray) -> np.ndarray | None:
    """Finite rows scaled to length 1, as float32 (None if a row is all zero).  Each row is
    divided by its largest magnitude first, so rows of 3e38 (whose squares overflow
    float32, and float64 past 1e154) keep their direction instead of becoming 0 / inf."""
    x = np.asarray(x, dtype=np.float64)
    peak = np.abs(x).max(axis=1)
    if (peak <= 0).any():
        return None
    y = x / peak[:, None]
    return np.ascontiguousarray(y / np.linalg.norm(y, axis=1)[:, None], dtype=np.float32)


# --------------------------------------------------------------------------
# indexes


def _exact_topk(docs: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for s in range(0, queries.shape[0], 256):
        sc = queries[s : s + 256] @ docs.T
        part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sc, part, axis=1), axis=1)
        out[s : s + 256] = np.take_along_axis(part, order, axis=1)
    return out


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / (k * truth.shape[0])


# --------------------------------------------------------------------------
# concurrent timing in forked workers


def _worker(
    make_search: Callable[[], Callable[[int], Any]],
    n_queries: int,
    offset: int,
    barrier: Any,
    conn: Any,
) -> None:
    try:
        limit_threads(1)
        search = make_search()  # this worker's private copy of the index
        order = [(offset + i) % n_queries for i in range(n_queries)]
        for i in order[: min(WARMUP_QUERIES, n_queries)]:
            search(i)
        lat = np.empty(n_queries, dtype=np.int64)
        ids: list[Any] = [None] * n_queries
        barrier.wait(timeout=600)
        for j, i in enumerate(order):
            t0 = time.perf_counter_ns()
            r = search(i)
            lat[j] = time.perf_counter_ns() - t0
            ids[i] = r
        conn.send(("ok", lat, np.asarray(ids, dtype=np.int64)))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("err", f"{type(exc).__name__}: {exc}", None))
    finally:
        conn.close()


def time_queries(
    make_search: Callable[[], Callable[[int], Any]], n_queries: int, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fork ``threads`` workers; each calls ``make_search()`` to get its own
    private copy of the index (like separate server processes: memory
    bandwidth and caches are shared as on the real machine, the index pages are
    not), warms up, waits at a barrier, then answers all ``n_queries`` queries
    one at a time, starting at a different offset.  Returns (latencies_ns of
    all workers, top-k ids from worker 0)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(threads)
    procs = []
    conns = []
    for w in range(threads):
        parent, child = ctx.Pipe(duplex=False)
        offset = (w * n_queries) // threads
        p = ctx.Process(target=_worker, args=(make_search, n_queries, offset, barrier, child), daemon=True)
        p.start()
        child.close()
        procs.append(p)
        conns.append(parent)
    results = []
    try:
        for c in conns:
            try:
                results.append(c.recv())
            except EOFError:
                results.append(("err", "worker died without an answer", None))
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    errs = [r[1] for r in results if r[0] != "ok"]
    if errs:
        raise RuntimeError(f"calibration worker failed: {errs[0]}")
    lat = np.concatenate([r[1] for r in results])
    return lat, results[0][2]


# --------------------------------------------------------------------------
# the calibration run


def _record(
    *,
    index: str,
    docs: int,
    dim: int,
    top_k: int,
    knob_value: int | None,
    threads: int,
    lat_ns: np.ndarray,
    scale: float,
    recall: float,
    build_s: float,
    memory_bytes: int,
    params: IndexParams,
    extra: ScaledFrom | None = None,
) -> RetrievalRecord:
    ms = lat_ns.astype(np.float64) / 1e6 * scale
    rec: RetrievalRecord = {
        "index": index,
        "docs": int(docs),
        "dim": int(dim),
        "top_k": int(top_k),
        "knob": kind(index).knob,
        "knob_value": None if knob_value is None else int(knob_value),
        "threads": int(threads),
        "samples": int(ms.size),
        "mean_ms": float(ms.mean()),
        "values_ms": [float(f"{v:.6g}") for v in np.quantile(ms, PROBS)],
        "recall": float(round(recall, 6)),
        "build_s": float(round(build_s, 4)),
        "memory_bytes": int(memory_bytes),
        "params": params,
    }
    if extra:
        rec.update(extra)
    return rec


def _parse_int_list(name: str, values: Sequence[int]) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise CalibrationError(f"{name}: {v!r} is not a positive integer")
        out.append(int(v))
    if not out:
        raise CalibrationError(f"{name}: needs at least one value")
    return sorted(set(out))


@dataclass(frozen=True)
class RetrievalOptions:
    """What ``capsim calibrate retrieval`` is asked to measure, as given: the corpus sizes (None
    with vectors: all rows left), the dimension, k, the held-out queries, the indexes, HNSW's M,
    ef_construction and ef values, IVF's nlist and nprobe values, and the query threads.
    :func:`validate_settings` checks and normalises them."""

    docs: list[int] | None
    dim: int | None
    top_k: int
    n_queries: int
    indexes: list[str]
    M: int
    ef_construction: int
    ef: list[int]
    nlist: int | None
    nprobe: list[int]
    threads: list[int]


class Settings(TypedDict):
    """The options :func:`validate_settings` checked, normalised: the index kinds in the
    registry's order, sorted unique knob and thread lists, the corpus sizes (None with
    vectors until the rows left after the queries fill it)."""

    indexes: list[str]
    ef: list[int]
    nprobe: list[int]
    threads: list[int]
    docs: list[int] | None


class LawFit(TypedDict):
    """One scaling-law fit of a calibration file's ``fits``: ``time = a + b*x`` per latency
    quantile (and for the mean) over the corpus sizes of one (index, knob value, threads)
    series, with each quantile's R² and largest relative error."""

    index: str
    knob: str | None
    knob_value: int | None
    threads: int
    law: str
    docs: list[int]
    x: list[float]
    mean: dict[str, float]
    a: list[float]
    b: list[float]
    r2: list[float]
    max_rel_err: list[float]


def validate_settings(o: RetrievalOptions) -> Settings:
    """Check every option before any work; return the normalised settings."""
    docs, dim, top_k, n_queries, indexes = o.docs, o.dim, o.top_k, o.n_queries, o.indexes
    M, ef_construction, ef, nlist, nprobe, threads = o.M, o.ef_construction, o.ef, o.nlist, o.nprobe, o.threads
    bad = [i for i in indexes if i not in kinds()]
    if bad or not indexes:
        raise CalibrationError(f"--index: {bad[0] if bad else 'nothing'!r} is not one of {', '.join(kinds())}")
    for name, v in (("--top-k", top_k), ("--queries", n_queries), ("--M", M), ("--ef-construction", ef_construction)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise CalibrationError(f"{name}: {v!r} is not a positive integer")
    if dim is not None and (not isinstance(dim, (int, np.integer)) or dim <= 0):
        raise CalibrationError(f"--dim: {dim!r} is not a positive integer")
    if M < 2:
        raise CalibrationError("--M: must be at least 2")
    if n_queries < 2:
        raise CalibrationError("--queries: must be at least 2")
    out: Settings = {
        "indexes": [i for i in kinds() if i in indexes],
        "ef": _parse_int_list("--ef", ef) if "hnsw" in indexes else [],
        "nprobe": _parse_int_list("--nprobe", nprobe) if "ivf" in indexes else [],
        "threads": _parse_int_list("--threads", threads),
        "docs": None if docs is None else _parse_int_list("--docs", docs),
    }
    if nlist is not None and (isinstance(nlist, bool) or not isinstance(nlist, (int, np.integer)) or nlist <= 0):
        raise CalibrationError(f"--nlist: {nlist!r} is not a positive integer")
    if out["docs"] is not None:
        small = [d for d in out["docs"] if d <= top_k]
        if small:
            raise CalibrationError(f"--docs: {small[0]} must be larger than --top-k {top_k}")
    cores = os.cpu_count() or 1
    if max(out["threads"]) > 4 * cores:
        raise CalibrationError(f"--threads: {max(out['threads'])} is more than 4x this machine's {cores} cores")
    return out


def _check_ivf(docs: list[int], nlist: int | None, nprobe: list[int]) -> dict[int, int]:
    lists = {}
    for n in docs:
        nl = auto_nlist(n) if nlist is None else nlist
        if nl > n:
            raise CalibrationError(f"--nlist: {nl} is more than the {n} documents of --docs {n}")
        if max(nprobe) > nl:
            raise CalibrationError(
                f"--nprobe: {max(nprobe)} is more than nlist={nl} used at --docs {n}; allowed 1..{nl}"
            )
        lists[n] = nl
    return lists


def _corpus(
    vectors: np.ndarray | str | os.PathLike[str] | None,
    dim: int | None,
    s: Settings,
    queries_k_seed: tuple[int, int, int],
    generator_params: dict[str, Any] | None,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """The user's vectors with the queries held out of them (pool, queries, corpus entry), or a
    synthetic corpus's entry alone (its corpus and queries are drawn per size: the topic count
    grows with N)."""
    n_queries, top_k, seed = queries_k_seed
    if vectors is not None:
        return _held_out(_user_vectors(vectors, dim), s, n_queries, top_k, seed)
    return None, None, _synthetic_source(s, dim, seed, generator_params)


def _ticker(s: Settings, docs: list[int], progress: Progress | None) -> Callable[[str], None]:
    """The progress bar's step: per corpus size, the corpus, then each index's build and searches
    (reported as ``progress(done, total, message)``, starting at 0)."""
    per_n = 1 + sum(1 + len(kind(ix).knob_values(_Settings(s))) * len(s["threads"]) for ix in s["indexes"])
    total = per_n * len(docs)
    done = 0

    def tick(msg: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, msg)

    if progress is not None:
        progress(0, total, "starting")
    return tick


def run_calibration(
    o: RetrievalOptions,
    *,
    vectors: np.ndarray | str | os.PathLike[str] | None,
    seed: int,
    progress: Progress | None = None,
    linear_python_docs: int = 2000,
    linear_python_queries: int = 50,
    generator_params: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Measure the requested indexes and return the calibration document.

    ``vectors`` is ``None`` (synthetic corpus from :func:`make_corpus`), an
    (n, d) float array, or a path to a ``.npy`` file.  Queries are held out:
    never in any index.  ``o.docs=None`` with vectors means "all rows left after
    the queries".  ``progress(done, total, message)`` is called as work goes.
    Raises :class:`CalibrationError` for bad input before measuring anything.
    """
    s = validate_settings(o)
    dim, top_k, n_queries, nlist = o.dim, o.top_k, o.n_queries, o.nlist
    load_start = loadavg()
    started = _dt.datetime.now(_dt.timezone.utc)

    pool, queries, source = _corpus(vectors, dim, s, (n_queries, top_k, seed), generator_params)
    dim = int(source["dim"]) if vectors is not None else dim
    assert dim is not None  # the vectors' own, or required without them (checked above)
    docs = s["docs"]
    assert docs is not None  # the rows the vectors leave, or required without them (checked above)
    lists = _check_ivf(docs, nlist, s["nprobe"]) if "ivf" in s["indexes"] else {}

    tick = _ticker(s, docs, progress)
    restore_threads = limit_threads(1)  # builds single-threaded (deterministic); workers inherit it
    try:
        bench = _Bench(
            s,
            dim=dim,
            top_k=top_k,
            n_queries=n_queries,
            M=o.M,
            ef_construction=o.ef_construction,
            seed=seed,
            lists=lists,
            tick=tick,
            linear_python_docs=linear_python_docs,
            linear_python_queries=linear_python_queries,
        )
        records = _measure_all(s=s, docs=docs, pool=pool, queries=queries, source=source, bench=bench)
    finally:
        restore_threads()
    fits = fit_records(records)
    return {
        **run_header(KIND, VERSION, started, load_start, command, machine_description()),
        "corpus": source,
        "settings": _settings_doc(s, bench, nlist),
        "probs": list(PROBS),
        "laws": {ix: kind(ix).law for ix in kinds()},
        "records": records,
        "fits": fits,
    }


def _user_vectors(vectors: np.ndarray | str | os.PathLike[str], dim: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The user's embeddings, unit-normalised float32, and where they came from."""
    if isinstance(vectors, (str, os.PathLike)):
        vpath = Path(vectors)
        return load_vectors(vpath, dim), {"source": "vectors", "file": vpath.name, "sha256": _sha256(vpath)}
    arr = np.asarray(vectors)
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise CalibrationError("vectors: must be a 2-D float array (n, d)")
    if not np.isfinite(arr).all():
        raise CalibrationError("vectors: contain NaN or inf; all values must be finite")
    if dim is not None and arr.shape[1] != dim:
        raise CalibrationError(f"vectors: dim {arr.shape[1]} but --dim is {dim}")
    unit = unit_rows(arr)
    if unit is None:
        raise CalibrationError("vectors: some rows are all zero; cannot normalise")
    allv = unit
    return allv, {"source": "vectors", "file": None, "sha256": hashlib.sha256(allv.tobytes()).hexdigest()}


def _held_out(
    loaded: tuple[np.ndarray, dict[str, Any]], s: Settings, n_queries: int, top_k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(documents, held-out queries, corpus entry) from the user's vectors; fills ``s["docs"]``
    (all rows left) when not given."""
    allv, source = loaded
    rows, dim = allv.shape
    source.update(rows=int(rows), dim=int(dim), normalised=True)
    avail = rows - n_queries
    if avail <= top_k:
        raise CalibrationError(
            f"--vectors: {rows} rows leave {avail} documents after --queries {n_queries}; "
            f"need more than --top-k {top_k}"
        )
    if s["docs"] is None:
        s["docs"] = [avail]
    elif max(s["docs"]) > avail:
        raise CalibrationError(
            f"--docs: {max(s['docs'])} plus --queries {n_queries} needs {max(s['docs']) + n_queries} rows "
            f"but --vectors has {rows}; use --docs at most {avail} or fewer --queries"
        )
    perm = np.random.default_rng(seed).permutation(rows)
    source["queries"] = "held out: first --queries rows of a seeded permutation; docs are prefixes of the rest"
    return allv[perm[n_queries:]], allv[perm[:n_queries]], source


def _synthetic_source(
    s: Settings, dim: int | None, seed: int, generator_params: dict[str, Any] | None
) -> dict[str, Any]:
    """The corpus entry of a synthetic corpus (:func:`make_corpus`), its parameters checked."""
    if dim is None:
        raise CalibrationError("--dim: required without --vectors (e.g. --dim 768)")
    if s["docs"] is None:
        raise CalibrationError("--docs: required without --vectors (e.g. --docs 5000,20000)")
    gp = dict(GENERATOR_DEFAULTS)
    if generator_params:
        unknown = sorted(set(generator_params) - set(gp))
        if unknown:
            raise CalibrationError(f"generator parameter {unknown[0]!r} is not one of {', '.join(sorted(gp))}")
        gp.update(generator_params)
    return {
        "source": "synthetic",
        "generator": "sim.calibrate.corpus.make_corpus",
        "seed": int(seed),
        "params": gp,
        "queries": "held out: sim.calibrate.corpus.make_queries(docs=N): same mixture as each corpus, separate stream",
    }


def _settings_doc(s: Settings, b: _Bench, nlist: int | None) -> dict[str, Any]:
    """The calibration file's ``settings``: what was measured (on ``b``), and how."""
    return {
        "docs": s["docs"],
        "dim": int(b.dim),
        "top_k": int(b.top_k),
        "n_queries": int(b.n_queries),
        "indexes": s["indexes"],
        "M": int(b.M),
        "ef_construction": int(b.ef_construction),
        "ef": s["ef"],
        "nlist": nlist,
        "nlist_rule": "fixed" if nlist is not None else f"round(4*sqrt(N)) capped at N//{MIN_POINTS_PER_LIST}",
        "nlist_by_docs": {str(k): v for k, v in b.lists.items()},
        "nprobe": s["nprobe"],
        "threads": s["threads"],
        "seed": int(b.seed),
        "linear_python_docs": int(b.linear_python_docs),
        "linear_python_queries": int(b.linear_python_queries),
        "timer": "time.perf_counter_ns around one search call (query already in memory)",
        "workers": "forked processes, each with a private copy of the index (like separate server "
        "processes), 1 BLAS/OpenMP thread each, started together at a barrier; "
        f"{WARMUP_QUERIES} untimed warm-up queries each",
        "build_threads": 1,
    }


class _Settings:
    """The knob lists of normalised settings (a :class:`sim.indexes.base.Knobs`)."""

    def __init__(self, s: Settings):
        self.ef, self.nprobe, self.threads = s["ef"], s["nprobe"], s["threads"]


class _Bench(_Settings):
    """The harness an index kind measures itself on (:class:`sim.indexes.Bench`)."""

    def __init__(
        self,
        s: Settings,
        *,
        dim: int,
        top_k: int,
        n_queries: int,
        M: int,
        ef_construction: int,
        seed: int,
        lists: dict[int, int],
        tick: Callable[[str], None],
        linear_python_docs: int,
        linear_python_queries: int,
    ):
        super().__init__(s)
        self.dim, self.top_k, self.n_queries, self.seed = dim, top_k, n_queries, seed
        self.M, self.ef_construction, self.lists = M, ef_construction, lists
        self.linear_python_docs, self.linear_python_queries = linear_python_docs, linear_python_queries
        self.cache: dict[Any, Any] = {}
        self.tick = tick

    def nlist(self, docs: int) -> int:
        return self.lists[docs]

    def time(
        self, factory: Callable[[], Callable[[int], Any]], n_queries: int, threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        return time_queries(factory, n_queries, threads)

    def record(
        self,
        *,
        index: str,
        docs: int,
        knob_value: int | None,
        threads: int,
        lat_ns: np.ndarray,
        scale: float,
        recall: float,
        build_s: float,
        memory_bytes: int,
        params: IndexParams,
        extra: ScaledFrom | None = None,
    ) -> RetrievalRecord:
        return _record(
            index=index,
            docs=docs,
            dim=self.dim,
            top_k=self.top_k,
            knob_value=knob_value,
            threads=threads,
            lat_ns=lat_ns,
            scale=scale,
            recall=recall,
            build_s=build_s,
            memory_bytes=memory_bytes,
            params=params,
            extra=extra,
        )

    def recall(self, found: np.ndarray, truth: np.ndarray) -> float:
        return _recall(found, truth)

    def exact_topk(self, docs: np.ndarray, queries: np.ndarray) -> np.ndarray:
        return _exact_topk(docs, queries, self.top_k)


def _measure_all(
    *,
    s: Settings,
    docs: list[int],
    pool: np.ndarray | None,
    queries: np.ndarray | None,
    source: dict[str, Any],
    bench: _Bench,
) -> list[RetrievalRecord]:
    """Every requested index kind measured at every corpus size (``docs``)."""
    records: list[RetrievalRecord] = []
    for n in docs:
        if pool is not None:
            corpus = np.ascontiguousarray(pool[:n], dtype=np.float32)
        else:
            corpus = make_corpus(n, bench.dim, bench.seed, **source["params"])
            queries = make_queries(bench.n_queries, bench.dim, bench.seed, docs=n, **source["params"])
        if queries is None:  # pragma: no cover - internal invariant
            raise RuntimeError("no queries")
        truth = _exact_topk(corpus, queries, bench.top_k)
        bench.tick(f"N={n}: corpus and exact top-{bench.top_k}")
        for ix in s["indexes"]:
            records += kind(ix).measure(bench, n, corpus, queries, truth)
    return records


def fit_records(records: list[RetrievalRecord]) -> list[LawFit]:
    """One scaling-law fit per (index, knob_value, threads) series with >= 2 corpus sizes."""
    groups: dict[tuple[str, int | None, int], list[RetrievalRecord]] = {}
    for r in records:
        groups.setdefault((r["index"], r["knob_value"], r["threads"]), []).append(r)
    fits: list[LawFit] = []
    for (ix, kv, T), recs in sorted(groups.items(), key=lambda t: (t[0][0], t[0][1] or 0, t[0][2])):
        recs = sorted(recs, key=lambda r: r["docs"])
        if len({r["docs"] for r in recs}) < 2:
            continue
        x = [law_x(ix, r["docs"], nlist=r["params"].get("nlist"), nprobe=r["knob_value"]) for r in recs]
        mean = fit_law(x, [r["mean_ms"] for r in recs])
        vals = np.array([r["values_ms"] for r in recs])
        qf = [fit_law(x, vals[:, j]) for j in range(vals.shape[1])]
        fits.append(
            {
                "index": ix,
                "knob": kind(ix).knob,
                "knob_value": kv,
                "threads": T,
                "law": kind(ix).law,
                "docs": [r["docs"] for r in recs],
                "x": [round(v, 6) for v in x],
                "mean": {k: float(f"{v:.6g}") for k, v in mean.items()},
                "a": [float(f"{f['a']:.6g}") for f in qf],
                "b": [float(f"{f['b']:.6g}") for f in qf],
                "r2": [round(f["r2"], 4) for f in qf],
                "max_rel_err": [round(f["max_rel_err"], 4) for f in qf],
            }
        )
    return fits


def write_calibration(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as JSON atomically (temp file in the same folder, then
    ``os.replace``): either the whole file appears or nothing changes."""
    p = Path(path)
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent if str(p.parent) else ".")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p
