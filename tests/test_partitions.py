"""``run.partitions``: one replication run as independent cells, merged exactly.

The agreement test compares a shop run as one fleet with the same shop run as two cells,
where the cells change nothing but who serves whom: a ``random`` router (each request picks
a replica uniformly: the same law as picking a cell, then a replica in it), no result cache
(a shared cache holds more distinct answers than two halves do) and retrieval workers to
spare (a shared pool queues less than two halves).  Their percentiles must agree within
their confidence intervals; the seeds are fixed, so the outcome never changes between runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import sim
from sim.engine.digest import Digest
from sim.engine.partition import cell_scenario, merge_cells, partition_problem
from sim.engine.pipeline import Replication, run_replication
from sim.engine.records import Bins
from sim.spec.scenario import load_scenario
from tests.helpers import invoke

SMALL = Path(__file__).parent / "data" / "rag_small.yaml"
# Two replicas behind a random router, no cache, eight workers for ~4 busy at most.
CELLS_OV = {
    "llm.replicas": 2,
    "llm.router": "random",
    "llm.output_tokens": {"dist": "exponential", "mean": 60},
    "workload.users": 60,
    "cache.enabled": False,
    "retrieval.workers": 8,
    "run.replications": 5,
    "run.duration_s": 50,
    "run.warmup_s": 10,
}


def test_partitioned_percentiles_agree_with_one_process_within_their_intervals() -> None:
    one = sim.simulate(SMALL, {**CELLS_OV, "run.partitions": 1}).points[0].summary
    two = sim.simulate(SMALL, {**CELLS_OV, "run.partitions": 2}).points[0].summary
    assert abs(two.completed - one.completed) < 0.02 * one.completed
    for metric in ("e2e_ms", "ttft_ms"):
        for stat in ("p50", "p95", "p99"):
            lo1, hi1 = one.metrics[metric].ci[stat]
            lo2, hi2 = two.metrics[metric].ci[stat]
            assert None not in (lo1, hi1, lo2, hi2), (metric, stat)
            assert lo1 <= hi2 and lo2 <= hi1, (metric, stat, (lo1, hi1), (lo2, hi2))


def test_cells_in_worker_processes_give_what_one_process_gives() -> None:
    ov = {**CELLS_OV, "run.partitions": 2, "run.replications": 2, "run.duration_s": 30}
    here = sim.simulate(SMALL, ov, jobs=1).points[0].summary.to_dict()
    forked = sim.simulate(SMALL, ov, jobs=2).points[0].summary.to_dict()
    assert here == forked


@pytest.fixture(scope="module")
def merged() -> tuple[Replication, list[Replication]]:
    scn = load_scenario(SMALL, {**CELLS_OV, "run.partitions": 2, "run.duration_s": 30})
    cells = [run_replication(scn, 0, records=True, part=c) for c in range(2)]
    return run_replication(scn, 0, records=True), cells


def test_a_cell_serves_the_shoppers_whose_id_is_its_index_modulo_n(merged) -> None:
    whole, cells = merged
    for c, rep in enumerate(cells):
        users = rep.records["user"]
        assert len(users) and set(np.unique(users % 2)) == {c}
        assert set(np.unique(rep.records["replica"])) == {0}  # one replica a cell, numbered in the cell
    # Merged: cell 1's replica is the shop's replica 1, records in arrival order, renumbered.
    assert set(np.unique(whole.records["replica"][whole.records["user"] % 2 == 1])) == {1}
    assert np.all(np.diff(whole.records["arrival_s"]) >= 0)
    assert list(whole.records["request"]) == list(range(len(whole.records["request"])))
    assert len(whole.records["e2e_ms"]) == sum(len(r.records["e2e_ms"]) for r in cells)


def test_the_merged_digest_is_the_digest_of_the_merged_records(merged) -> None:
    whole, _ = merged
    assert whole.digest is not None
    again = Digest(whole.digest.edges, whole.digest.fine_end_s)
    again.add_records(whole.records)
    for m in ("e2e_ms", "ttft_ms", "llm_wait_ms"):
        assert again.hist[m].select(slice(None)) == whole.digest.hist[m].select(slice(None)), m
    for name in ("finished", "misses", "delivered"):
        assert np.array_equal(again.count(name), whole.digest.count(name)), name


def test_merge_adds_counters_and_places_replicas_side_by_side() -> None:
    def cell(started: int, busy: float, waiting: list[list[int]], queue: list[int]) -> Replication:
        bins = Bins(0.0, 10.0, 2)
        bins.add(0.0, 10.0, busy)
        series = {
            "t_s": np.array([0.0, 5.0]),
            "llm_waiting": np.array(waiting, dtype=float),
            "retrieval_queue": np.array(queue, dtype=float),
        }
        counters: dict = {"started_in_window": started, "gpu_kv_blocks": 100, "retrieval_busy_s": bins}
        return Replication(3, None, (0.0, 10.0), counters, series, None)

    out = merge_cells([cell(3, 4.0, [[1], [2]], [1, 0]), cell(4, 6.0, [[5], [7]], [2, 2])], replicas_per_cell=1)
    assert out.replication == 3 and out.kept is None
    assert out.counters["started_in_window"] == 7
    assert out.counters["gpu_kv_blocks"] == 100  # per replica: the same in every cell
    busy = out.counters["retrieval_busy_s"]
    assert isinstance(busy, Bins) and busy.values == [0.0, 5.0, 5.0]  # (4 + 6) spread over two bins
    assert out.timeseries["llm_waiting"].tolist() == [[1, 5], [2, 7]]
    assert out.timeseries["retrieval_queue"].tolist() == [3, 2]
    assert out.timeseries["t_s"].tolist() == [0.0, 5.0]


def test_a_cell_holds_an_equal_share_of_the_fleet() -> None:
    scn = load_scenario(SMALL, {**CELLS_OV, "run.partitions": 2, "cache.enabled": True, "cache.capacity": 300})
    cell = cell_scenario(scn)
    assert (cell.llm.replicas, cell.retrieval.workers, cell.cache.capacity) == (1, 4, 150)
    assert cell.workload == scn.workload


@pytest.mark.parametrize(
    ("ov", "says"),
    [
        ({"llm.router": "least_outstanding"}, "llm.router least_outstanding reads every replica"),
        (
            {"llm.autoscale": {"max_replicas": 4, "target": 2}},
            "llm.autoscale resizes the whole fleet",
        ),
        ({"workload.mode": "open", "workload.rate_per_s": 5, "workload.arrival": "gamma", "workload.cv": 2}, "gamma"),
        ({"retrieval.workers": 3}, "retrieval.workers (3) is not a multiple of 2"),
        ({"cache.capacity": 301}, "cache.capacity (301) is not a multiple of 2"),
    ],
)
def test_what_cannot_be_split_is_refused(ov: dict, says: str) -> None:
    scn = load_scenario(SMALL, {**CELLS_OV, "cache.enabled": True, "cache.capacity": 300, "run.partitions": 2, **ov})
    problem = partition_problem(scn)
    assert problem is not None and problem.startswith("run.partitions: 2") and says in problem, problem


def test_one_process_is_never_refused() -> None:
    scn = load_scenario(SMALL, {"llm.router": "least_outstanding", "retrieval.workers": 3})
    assert partition_problem(scn) is None


def test_the_cli_refuses_a_router_with_global_state_before_running(tmp_path: Path, monkeypatch) -> None:
    import sim.run.loop

    def no_simulation(*a, **k):
        raise AssertionError("simulated before refusing")

    monkeypatch.setattr(sim.run.loop, "_run_sweep", no_simulation)
    out = tmp_path / "out"
    r = invoke("run", SMALL, "--set", "llm.replicas=2", "--set", "run.partitions=2", "--out", out)
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, err)
    assert err.count("\n") == 0 and "run.partitions: 2" in err and "least_outstanding" in err, err
    assert not out.exists()
