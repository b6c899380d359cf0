"""Streaming summaries (sim.engine.digest): percentiles within the stated relative error of
numpy's on the same values, exact merges, and intervals that keep their coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.engine.digest import GAMMA, RELATIVE_ERROR, ZERO_MS, CellHistograms, Histogram, bucket_of, bucket_value

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
TOL = RELATIVE_ERROR * (1 + 1e-9)


def _distributions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "exponential": rng.exponential(250.0, n),
        "lognormal_wide": rng.lognormal(np.log(400.0), 1.5, n),
        "pareto_tail": (rng.pareto(1.5, n) + 1) * 20.0,
        "uniform": rng.uniform(0.5, 3.0, n),
        "bimodal": np.concatenate([rng.normal(30, 2, n // 2).clip(1), rng.normal(2000, 300, n - n // 2).clip(1)]),
        "integers": rng.integers(1, 40, n).astype(float),
        "with_zeros": np.where(rng.random(n) < 0.4, 0.0, rng.exponential(5.0, n)),
    }


def test_the_bucket_reads_back_within_the_stated_error() -> None:
    # gamma = 1.005 / 0.995; a bucket (g^(i-1), g^i] reads as 2 g^i / (g + 1): hand-computed for i = 1
    assert math.isclose(GAMMA, 1.0100502512562815, rel_tol=1e-15)
    assert float(bucket_value(1)) == pytest.approx(2 * GAMMA / (GAMMA + 1), rel=1e-15)
    assert float(bucket_value(1)) == pytest.approx(1.005, rel=1e-12)  # = 1 + alpha
    x = np.geomspace(1e-5, 1e7, 200_001)
    rel = np.abs(bucket_value(bucket_of(x)) - x) / x
    assert rel.max() <= TOL


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 2, 7, 1000, 50_000])
def test_percentiles_agree_with_numpy_within_the_stated_error(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    for name, x in _distributions(rng, n).items():
        h = Histogram.of(x)
        exact = np.percentile(x, [100 * q for q in QS])
        got = h.quantiles(QS)
        err = np.abs(got - exact)
        # within alpha of the exact value; values under a nanosecond read as 0
        assert np.all(err <= TOL * np.abs(exact) + ZERO_MS), (name, n, exact, got)
        assert got[0] == x.min() and got[-1] == x.max(), name  # the extremes are exact
        assert h.mean == pytest.approx(x.mean(), rel=1e-12) and h.n == n


def test_a_constant_is_exact() -> None:
    h = Histogram.of(np.full(1000, 37.25))
    assert list(h.quantiles(QS)) == [37.25] * len(QS)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_value_that_is_not_finite_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        Histogram.of([1.0, bad])
    with pytest.raises(ValueError, match="NaN or infinite"):
        CellHistograms(2).add(np.array([0, 1]), np.array([1.0, bad]))


def test_merging_is_exact_and_order_free() -> None:
    rng = np.random.default_rng(5)
    parts = [rng.lognormal(3 + k, 0.7, 3000) for k in range(4)]
    whole = Histogram.of(np.concatenate(parts))
    merged = Histogram.sum([Histogram.of(p) for p in reversed(parts)])
    assert merged == whole
    assert np.array_equal(merged.quantiles(QS), whole.quantiles(QS))
    # the per-cell store gives the same histograms as single ones, in any cell selection
    cells = CellHistograms(4)
    for k, p in enumerate(parts):
        cells.add(np.full(len(p) // 2, k), p[: len(p) // 2])
    for k, p in enumerate(parts):
        cells.add(np.full(len(p) - len(p) // 2, k), p[len(p) // 2 :])
    assert cells.select(slice(None)) == whole
    assert cells.select(np.array([False, True, False, True])) == Histogram.of(np.concatenate([parts[1], parts[3]]))
    assert math.isnan(CellHistograms(3).select(slice(0, 2)).quantile(0.5))


def test_digests_of_two_shards_merge_into_the_digest_of_all() -> None:
    """A replication's requests split in two shards (odd and even rows), each counted into its
    own digest: the merged digest is the digest of all of them, counter for counter."""
    from sim.engine.digest import Digest, cell_edges
    from sim.engine.pipeline import run_replication
    from sim.spec.scenario import load_scenario

    scn = load_scenario("tests/data/rag_small.yaml", {"run.duration_s": 40, "run.warmup_s": 5})
    rec = run_replication(scn, 0, records=True).records
    edges = cell_edges(5.0, 40.0)
    whole, a, b = Digest(edges, 40.0), Digest(edges, 40.0), Digest(edges, 40.0)
    whole.add_records(rec)
    a.add_records({k: v[::2] for k, v in rec.items()})
    b.add_records({k: v[1::2] for k, v in rec.items()})
    merged = a.merge(b)
    assert np.allclose(merged.counts, whole.counts, rtol=1e-12, atol=0)
    assert merged.fine is not None and whole.fine is not None and np.allclose(merged.fine, whole.fine, rtol=1e-12)
    for m, h in whole.hist.items():
        got = merged.hist[m]
        assert np.array_equal(got.n, h.n) and np.array_equal(got.lo, h.lo) and np.array_equal(got.hi, h.hi), m
        assert (
            np.array_equal(got.trimmed().counts, h.trimmed().counts) and got.trimmed().offset == h.trimmed().offset
        ), m
    with pytest.raises(ValueError, match="different time cells"):
        whole.merge(Digest(cell_edges(0.0, 40.0)))


# --------------------------------------------------------------------------- coverage of the intervals


def _covered(trials: int, seed: int, reps: int, per_rep: int, one_run: bool) -> dict[str, float]:
    """Share of ``trials`` whose interval (the summary's own code path, fed from histograms)
    holds the true quantile of Exp(1): P50 = ln 2, P95 = ln 20, P99 = ln 100."""
    from sim.analysis.summary import _metric_entry

    truth = {"p50": math.log(2.0), "p95": math.log(20.0), "p99": math.log(100.0)}
    rng = np.random.default_rng(seed)
    hit = dict.fromkeys(truth, 0)
    for _ in range(trials):
        if one_run:  # one replication: 20 batches of its window
            x = rng.exponential(1.0, per_rep).reshape(20, -1)
            entry = _metric_entry([Histogram.of(x)], [0], 0.95, [Histogram.of(b) for b in x])
        else:
            entry = _metric_entry(
                [Histogram.of(rng.exponential(1.0, per_rep)) for _ in range(reps)], [0] * reps, 0.95, []
            )
        for st, q in truth.items():
            lo, hi = entry["ci"][st]
            hit[st] += lo is not None and hi is not None and lo <= q <= hi
    return {st: h / trials for st, h in hit.items()}


@pytest.mark.slow
@pytest.mark.parametrize("one_run", [False, True], ids=["replications", "batch_means"])
def test_intervals_from_histograms_keep_their_coverage(size, one_run: bool) -> None:
    # Fixed seeds: the same trials every run.  The band is about 3.5 standard errors of a
    # share of 0.95 over the trials (0.062 short, 0.020 long).
    trials = size(150, 1500)
    # One run: 20 batches of 1,000 values.  At 500 a batch (the least the summary gives a
    # P99 interval for) the batch-means P99 interval itself covers ~0.935, exact or streamed.
    cov = _covered(trials, 7, 5, 20_000 if one_run else 4_000, one_run)
    band = 3.5 * math.sqrt(0.95 * 0.05 / trials)
    for st, c in cov.items():
        assert abs(c - 0.95) <= band, (st, c, cov)


# --------------------------------------------------------------------------- through the simulator


def test_summary_percentiles_agree_with_the_records_within_the_stated_error() -> None:
    """The summary (from digests) against numpy on the kept records of the same run: every
    percentile within the stated error, counts and means exact (to rounding).  A percentile
    is the mean of the replications' (pooled when a replication is too short for it)."""
    import sim
    from sim.analysis.summary import _MIN_PER_REPLICATION
    from sim.engine.digest import metric_values

    res = sim.simulate("tests/data/rag_small.yaml", {"run.duration_s": 60, "run.warmup_s": 10}, keep_records=True)
    p = res.points[0]
    lo, hi = 10.0, 60.0
    for m, entry in p.summary.metrics.items():
        per = []
        for rep in p.replications:
            rec = rep.records
            keep = (rec["arrival_s"] >= lo) & (rec["arrival_s"] < hi)
            per.append(metric_values({k: v[keep] for k, v in rec.items()}, m))
        assert entry.n == sum(len(v) for v in per), m
        for st, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
            if min(len(v) for v in per) >= _MIN_PER_REPLICATION[st]:
                exact = float(np.mean([np.percentile(v, q) for v in per]))
            else:
                exact = float(np.percentile(np.concatenate(per), q))
            got = entry.values[st]
            assert got is not None and abs(got - exact) <= TOL * exact + ZERO_MS, (m, st, got, exact)
        assert entry.values["mean"] == pytest.approx(np.mean([v.mean() for v in per]), rel=1e-9), m
        maxima = [v.max() for v in per]
        assert entry.values["max"] in (pytest.approx(np.mean(maxima), rel=1e-12), max(maxima)), m


def _peak_bytes(duration_s: float, keep: bool) -> tuple[int, int, int]:
    """(tracemalloc peak of one replication, requests, the digest's counter bytes) of an open
    M/M/2 retrieval queue."""
    import tracemalloc

    from sim.engine.pipeline import Model
    from sim.spec.scenario import load_scenario

    scn = load_scenario(
        {
            "name": "mem",
            "run": {"duration_s": duration_s, "warmup_s": 5, "replications": 1, "seed": 2},
            "workload": {"mode": "open", "rate_per_s": 40.0},
            "cache": {"enabled": False},
            "llm": {"enabled": False},
            "retrieval": {"workers": 2, "service_ms": {"dist": "exponential", "mean": 20}},
        }
    )
    model = Model(scn, 0, records=keep)
    tracemalloc.start()
    try:
        rep = model.run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rep.digest is not None and (rep.kept is not None) == keep
    return peak, len(model.recorder), sum(h.counts.nbytes for h in rep.digest.hist.values())


@pytest.mark.slow
def test_memory_does_not_grow_with_requests_unless_records_are_kept(size) -> None:
    """Ten times the requests: without records only the histograms' bucket range may grow
    (a longer run sees rarer extremes: log-bucket counters, 231 a decade, per cell), twice
    over for the moment a range is copied to widen; with records, ~100 bytes a request."""
    short, long = size(100.0, 300.0), size(1000.0, 3000.0)
    _peak_bytes(short, False)  # modules and caches a first run loads are not the run's memory
    s1, n1, d1 = _peak_bytes(short, False)
    s10, n10, d10 = _peak_bytes(long, False)
    k1, _, _ = _peak_bytes(short, True)
    k10, _, _ = _peak_bytes(long, True)
    assert n10 > 9 * n1 > 30_000
    assert k10 - k1 >= 100 * (n10 - n1), (k1, k10, n1, n10)
    # + a block's temporaries (4,096 rows as columns and the metrics' masks)
    assert s10 - s1 <= 2 * (d10 - d1) + 1_000_000, (s1, s10, d1, d10)
    assert s10 - s1 <= (k10 - k1) / 5, (s1, s10, k1, k10)
