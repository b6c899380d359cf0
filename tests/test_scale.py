"""What keeps a large shop's run cheap changes no number: the least-outstanding router's
tree picks what a scan over every replica picks, the recorder's packed blocks give the
rows it was handed, and a sampler's packed block hands out what ``tolist`` would."""

from __future__ import annotations

import numpy as np
import pytest

import sim.engine.records as records
from sim import distributions as D
from sim.engine.llm.routers.least_outstanding import LeastOutstanding
from sim.engine.pipeline import Model
from sim.run.loop import with_records
from sim.spec.scenario import load_scenario


def _scan(replicas):
    """The definition: fewest waiting + running, lowest index on a tie."""
    return min(replicas, key=lambda r: len(r.waiting) + len(r.order))


def test_least_outstanding_tree_picks_what_a_scan_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    picks = {"n": 0, "spread": set()}
    pick = LeastOutstanding.pick

    def checked(self):
        got = pick(self)
        assert got is _scan(self.replicas)
        picks["n"] += 1
        picks["spread"].add(got.index)
        return got

    monkeypatch.setattr(LeastOutstanding, "pick", checked)
    scn = load_scenario(
        {
            "name": "tree",
            "run": {"duration_s": 60, "warmup_s": 5, "replications": 1, "seed": 3},
            "workload": {"mode": "closed", "users": 300, "think_s": {"dist": "exponential", "mean": 2}},
            "cache": {"enabled": False},
            "retrieval": {"enabled": False},
            "llm": {
                "model": "article-8l",
                "gpu": "h100-sxm",
                "replicas": 7,  # not a power of two: padding leaves in the tree
                "router": "least_outstanding",
                "max_batch": 8,
                "prompt_tokens": {"dist": "uniform", "low": 200, "high": 1200},
                "output_tokens": {"dist": "gamma", "mean": 120, "cv": 0.8},
            },
        }
    )
    Model(scn, 0).run()
    assert picks["n"] > 5000 and picks["spread"] == set(range(7))


def test_tree_breaks_ties_to_the_lowest_index() -> None:
    class Rep:
        def __init__(self, n: int):
            self.n = n

        def outstanding(self) -> int:
            return self.n

    reps = [Rep(2), Rep(1), Rep(1), Rep(3), Rep(1)]
    r = LeastOutstanding(reps, np.random.default_rng(0))
    assert r.pick() is reps[1]
    r.update(1, 4)
    assert r.pick() is reps[2]
    r.update(2, 2)
    assert r.pick() is reps[4]
    r.update(0, 0)
    assert r.pick() is reps[0]


def _small(seed: int = 11):
    return load_scenario(
        {
            "name": "rows",
            "run": {"duration_s": 120, "warmup_s": 10, "replications": 1, "seed": seed},
            "workload": {"mode": "closed", "users": 80, "think_s": {"dist": "lognormal", "mean": 2, "cv": 1}},
            "cache": {"enabled": True, "capacity": 50, "lookup_ms": 1},
            "retrieval": {"enabled": True, "index": "hnsw", "ef_search": 50, "workers": 2},
            "llm": {"model": "article-8l", "gpu": "h100-sxm", "prompt_tokens": 300, "output_tokens": 40},
        }
    )


def test_packed_record_blocks_equal_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    scn = _small()
    whole = Model(scn, 0, records=True).run()
    monkeypatch.setattr(records, "CHUNK_ROWS", 7)  # many blocks, the last one partial
    chunked = Model(scn, 0, records=True).run()
    assert len(whole.records["e2e_ms"]) > 1000
    assert whole.records.keys() == chunked.records.keys()
    for k, v in whole.records.items():
        assert v.dtype == chunked.records[k].dtype and np.array_equal(v, chunked.records[k]), k
    # the digest counted block by block is the digest counted at once (sums to the last bit)
    a, b = whole.digest, chunked.digest
    assert a is not None and b is not None
    assert np.allclose(a.counts, b.counts, rtol=1e-12, atol=0)
    for m, h in a.hist.items():
        assert h.select(slice(None)) == b.hist[m].select(slice(None)), m
        assert np.array_equal(h.trimmed().counts, b.hist[m].trimmed().counts), m


@pytest.mark.parametrize(
    "dist",
    [D.Exponential(2.0), D.Constant(3.0), D.Uniform(0.0, 1.0)],
    ids=["exponential", "constant", "uniform"],
)
def test_sampler_hands_out_what_tolist_gives(dist: D.Distribution) -> None:
    s = D.Sampler(dist, np.random.default_rng(4), 16)
    want = dist.sample(np.random.default_rng(4), 16).tolist() + dist.sample(np.random.default_rng(4), 32).tolist()[16:]
    got = [s() for _ in range(32)]
    assert got == want and all(type(x) is float for x in got)


def test_packed_keeps_integers_exact() -> None:
    big = np.array([2**62 + 1, -5, 0], dtype=np.int64)
    assert list(D.packed(big)) == big.tolist()
    assert list(D.packed(np.array([1.5, 2.25]))) == [1.5, 2.25]


def test_a_single_heavy_task_runs_beside_the_prefetch(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``prefetch`` and two cores a lone replication goes to a forked worker while this
    process runs the prefetch; its records are those of the replication run here."""
    import os

    import sim.run.executors as ex

    where: list[int] = []
    run = ex.run_replication

    def tagged(scn, r):
        where.append(os.getpid())
        rep = run(scn, r)
        rep.counters["pid"] = os.getpid()
        return rep

    monkeypatch.setattr(ex, "run_replication", tagged)
    scn = with_records(_small(), True)
    called: list[bool] = []
    [(i, rep)] = list(ex.LocalExecutor(2, prefetch=lambda: called.append(True)).as_completed([(scn, 0)]))
    assert i == 0 and called == [True] and rep.counters["pid"] != os.getpid() and not where
    [(_, here)] = list(ex.LocalExecutor(2).as_completed([(scn, 0)]))
    assert here.counters["pid"] == os.getpid()
    for k, v in here.records.items():
        assert np.array_equal(v, rep.records[k]), k


def test_black_friday_brings_about_100000_shoppers_in_the_hour() -> None:
    """The rate profile integrates (by hand: 16 x 3,600 + 134 x (60/2 + 240 + 120/2)) to 101,820
    arrivals, 150 a second at the sale's height."""
    from pathlib import Path

    from sim.engine.load_profile import breakpoints, level, peak

    scn = load_scenario(Path(__file__).resolve().parents[1] / "scenarios" / "black_friday.yaml")
    prof = scn.workload.profile
    assert scn.workload.mode == "open" and scn.run.duration_s == 3600
    ts, vs = breakpoints(prof)
    ts, vs = [*ts, scn.run.duration_s], [*vs, vs[-1]]
    total = sum((b - a) * (x + y) / 2 for a, b, x, y in zip(ts, ts[1:], vs, vs[1:]))
    assert total == pytest.approx(16 * 3600 + 134 * (30 + 240 + 60)) == pytest.approx(101_820)
    assert peak(prof, 3600) == 150 and float(level(prof, 1000)) == 16
