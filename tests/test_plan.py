"""capsim plan: finds an optimum known by construction, refuses bad plan: blocks, and its
answer for the shipped scenario is what `capsim run` of the chosen configuration gives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sim.physics import queueing as analytic
from sim.run.plan import Candidate, Outcome, bound_e2e_s, pareto_front, plan
from sim.spec.scenario import load_scenario
from tests.helpers import invoke, write

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "scenarios" / "order_support_plan.yaml"

# 60 users (exponential think time, mean 1 s) in front of k exponential servers of mean
# 100 ms: a closed product-form network that exact MVA solves.  Mean response by k:
# 5,000, 2,000, 1,000, 502, 244, 148 ms.  With the SLA "mean under 350 ms" and one
# core at $1/h, the cheapest passing deployment is k = 5 at $5/h, by construction.
USERS, THINK_S, SERVICE_MS, SLA_MEAN_MS = 60, 1.0, 100.0, 350.0


def mva_queue(duration_s: float = 300, replications: int = 4) -> dict:
    return {
        "name": "mva_plan",
        "run": {"duration_s": duration_s, "warmup_s": 30, "replications": replications, "seed": 11},
        "workload": {"mode": "closed", "users": USERS, "think_s": {"dist": "exponential", "mean": THINK_S}},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"service_ms": {"dist": "exponential", "mean": SERVICE_MS}, "workers": 1},
        "sla": {"e2e_ms": {"mean": SLA_MEAN_MS}},
        "cost": {"cpu_core_per_hour": 1.0},
        "plan": {"retrieval.workers": [1, 2, 3, 4, 5, 6]},
    }


def exact_mean_ms(k: int) -> float:
    return analytic.mva(USERS, THINK_S, [SERVICE_MS / 1e3], [k]).response_s * 1e3


def test_the_constructed_optimum_is_what_exact_mva_says() -> None:
    means = [exact_mean_ms(k) for k in range(1, 7)]
    assert means[3] > SLA_MEAN_MS > means[4]  # k = 4 fails, k = 5 passes
    assert means[0] == pytest.approx(5000, rel=1e-6) and means[4] == pytest.approx(244.13, rel=1e-3)


def test_plan_finds_the_known_optimum(size) -> None:
    dur, reps = size((200, 3), (1000, 8))
    res = plan(mva_queue(dur, reps), jobs=2, margin=0.5)
    w = res.winner
    assert w is not None and w.params == {"retrieval.workers": 5}
    assert w.cost_per_hour == pytest.approx(5.0)
    assert w.confirm is not None and w.confirm.replications == reps
    # the winner's simulated mean sits by the exact MVA value
    s = w.confirm.verdicts[0]
    assert s["stat"] == "mean" and s["value"] == pytest.approx(exact_mean_ms(5), rel=0.1)
    # k = 1..3 cannot pass by the bound N * D / k - Z, which exceeds 350 ms by over 50 %
    by_k = {c.params["retrieval.workers"]: c for c in res.candidates}
    for k in (1, 2, 3):
        assert by_k[k].pruned and by_k[k].pruned.startswith("cannot pass")
        assert by_k[k].bound_ms == pytest.approx((USERS * SERVICE_MS / 1e3 / k - THINK_S) * 1e3)
    assert not by_k[4].pruned and by_k[4].best is not None and by_k[4].best.verdict != "pass"
    # screened: k = 6 first (the group's most workers), then k = 4 (fails) and 5 (passes, confirmed)
    assert res.counts == {"configurations": 6, "pruned": 3, "skipped": 0, "screened": 3, "confirmed": 1}
    # knobs: one worker fewer is slower and $1/h cheaper, one more is faster and $1/h dearer
    knobs = {k.direction: k for k in res.knobs}
    assert knobs["down"].value == 4 and knobs["down"].delta_cost_per_hour == pytest.approx(-1.0)
    assert knobs["up"].value == 6 and knobs["up"].delta_cost_per_hour == pytest.approx(1.0)
    assert knobs["down"].delta_p95_ms is not None and knobs["down"].delta_p95_ms > 0
    assert knobs["up"].delta_p95_ms is not None and knobs["up"].delta_p95_ms < 0
    assert res.exit_code == 0


def test_a_failing_best_resourced_member_skips_its_group() -> None:
    """Two CPU classes (100 ms and 200 ms searches); no bound prunes (margin 10).  The slow
    class's best-resourced member, 6 workers (exact MVA mean over 1 s), fails the screen, so
    its 1 to 5 workers are skipped unsimulated; the fast class still gives k = 5."""
    d = mva_queue(200, 3)
    slow = {"dist": "exponential", "mean": 200.0}
    assert analytic.mva(USERS, THINK_S, [0.2], [6]).response_s * 1e3 > 2 * SLA_MEAN_MS
    d["plan"] = {"retrieval.service_ms": [d["retrieval"]["service_ms"], slow], "retrieval.workers": [1, 2, 3, 4, 5, 6]}
    res = plan(d, jobs=2, margin=10.0, knobs=False)
    by = {(c.params["retrieval.service_ms"]["mean"], c.params["retrieval.workers"]): c for c in res.candidates}
    assert by[(200.0, 6)].screen is not None and by[(200.0, 6)].screen.verdict == "fail"
    for k in (3, 4, 5):
        assert by[(200.0, k)].screen is None
        assert (by[(200.0, k)].skipped or "").startswith("skipped: even with workers=6 it fails")
    # the bound N * D / k - Z still exceeds 11 x 350 ms at 1 and 2 slow workers and 1 fast one
    assert {k for k, c in by.items() if c.pruned} == {(200.0, 1), (200.0, 2), (100.0, 1)}
    assert res.counts["skipped"] == 3
    assert res.winner is by[(100.0, 5)]


def test_closed_bound_by_hand() -> None:
    scn = load_scenario(mva_queue())
    # 60 users, Z = 1 s, D = 0.1 s on 2 servers: max(0.1, 60 * 0.05 - 1) = 2 s
    assert bound_e2e_s(scn, {"retrieval": (0.1, 2)}, 0.0) == pytest.approx(2.0)
    # light: 60 * 0.1 / 10 - 1 < 0.1, so the bound is the demand itself, plus the extra delay
    assert bound_e2e_s(scn, {"retrieval": (0.1, 10)}, 0.05) == pytest.approx(0.15)


def _c(i: int, cost: float, p95: float) -> Candidate:
    c = Candidate(i, {"k": i}, cost_per_hour=cost)
    c.screen = Outcome(2, "pass", p95, [None, None], 1.0, True, None, [])
    return c


def test_pareto_front_by_hand() -> None:
    cands = [_c(0, 1.0, 900), _c(1, 2.0, 500), _c(2, 2.0, 600), _c(3, 3.0, 700), _c(4, 4.0, 100), _c(5, 5.0, math.inf)]
    assert [c.index for c in pareto_front(cands)] == [0, 1, 4]


@pytest.mark.parametrize(
    ("plan_block", "message"),
    [
        ({"llm.gpux": ["h100-sxm"]}, "plan.llm.gpux: llm has no key 'gpux'"),
        ({"llm.replicas": []}, "plan.llm.replicas: list should have at least 1 item"),
        ({"llm.replicas": 3}, "plan.llm.replicas: input should be a valid list"),
        ({"workload.users": [10, 20]}, "plan.workload.users: not a deployment choice"),
        ({"llm.gpu": ["h100-sxm", "h100x"]}, "plan.llm.gpu: 'h100x': unknown GPU"),
        ({"retrieval.workers": [0, 1]}, "plan.retrieval.workers: 0:"),
        ([1, 2], "plan: input should be a valid dictionary"),
    ],
)
def test_bad_plan_blocks_exit_2_with_one_line(tmp_path, plan_block, message) -> None:
    d = mva_queue()
    d["plan"] = plan_block
    out = tmp_path / "plan"
    r = invoke("plan", write(tmp_path, d), "--out", out)
    assert r.exit_code == 2, r.output
    assert message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_a_gpu_without_a_price_is_a_bad_plan_value(tmp_path) -> None:
    d = mva_queue()
    d["llm"] = {"enabled": True}
    d["plan"] = {"llm.gpu": ["h100-sxm", "l4"]}
    r = invoke("plan", write(tmp_path, d), "--out", tmp_path / "p")
    assert r.exit_code == 2
    assert "plan.llm.gpu: 'l4': cost.gpu_per_hour: the price catalog has no price for GPU 'l4'" in r.stderr


def test_a_scenario_without_plan_or_sla_is_refused(tmp_path) -> None:
    d = mva_queue()
    del d["plan"]
    r = invoke("plan", write(tmp_path, d), "--out", tmp_path / "p")
    assert r.exit_code == 2 and "plan: the scenario has no plan: section" in r.stderr
    d = mva_queue()
    del d["sla"]
    r = invoke("plan", write(tmp_path, d), "--out", tmp_path / "p")
    assert r.exit_code == 2 and "plan needs an SLA" in r.stderr


def test_shipped_scenario_is_a_plan_over_500_configurations() -> None:
    scn = load_scenario(SHIPPED)
    assert scn.workload.users == 1000 and scn.sla == {"e2e_ms": {"p95": 800.0}}
    assert math.prod(len(v) for v in scn.plan.values()) >= 500
    assert {"l40s", "a100-80gb", "h100-sxm", "h200", "b200"} == set(scn.plan["llm.gpu"])


def _plan_then_run(tmp_path: Path, extra: list[str]) -> tuple[dict, dict]:
    out = tmp_path / "plan"
    r = invoke("plan", SHIPPED, "--out", out, "--jobs", "2", *extra)
    assert r.exit_code == 0, r.output
    assert "cheapest passing:" in r.stdout and "Pareto front" in r.stdout
    doc = json.loads((out / "plan.json").read_text())
    assert (out / "pareto.png").stat().st_size > 0
    w = doc["winner"]
    sets = [a for i, a in enumerate(extra) if i and extra[i - 1] == "--set" and not a.startswith("plan")]
    for k, v in w["params"].items():
        sets.append(f"{k}={v}")
    args: list[str] = ["run", str(SHIPPED), "--json", "--jobs", "2"]
    for s in sets:
        args += ["--set", s]
    if "--replications" in extra:
        args += ["--replications", extra[extra.index("--replications") + 1]]
    run = invoke(*args)
    assert run.exit_code == 0, run.output
    return w, json.loads(run.stdout)["points"][0]


def test_shipped_answer_is_confirmed_by_capsim_run_short(tmp_path) -> None:
    """Short form: the shipped scenario's load and SLA, a two-value space and short runs."""
    extra = [
        "--set",
        "plan={llm.gpu: [a100-80gb, h100-sxm], llm.replicas: [1, 2]}",
        "--set",
        "run.duration_s=40",
        "--set",
        "run.warmup_s=10",
        "--replications",
        "2",
        "--screen-replications",
        "1",
        "--no-knobs",
    ]
    w, summary = _plan_then_run(tmp_path, extra)
    assert w["params"] == {"llm.gpu": "h100-sxm", "llm.replicas": 1}
    lo, hi = w["confirm"]["ci"]
    p95 = summary["metrics"]["e2e_ms"]["p95"]
    assert lo <= p95 <= hi
    assert p95 == pytest.approx(w["confirm"]["p95_e2e_ms"])  # same seed, same replications
    assert w["confirm"]["cost"]["price_date"] == "2026-12-07"


@pytest.mark.slow
def test_shipped_answer_is_confirmed_by_capsim_run(tmp_path, size) -> None:
    """Long form (CAPSIM_LONG=1): the shipped plan as it is, then `capsim run` of its winner."""
    if not size.long:
        pytest.skip("the whole shipped plan takes minutes; CAPSIM_LONG=1 runs it")
    w, summary = _plan_then_run(tmp_path, [])
    lo, hi = w["confirm"]["ci"]
    assert lo <= summary["metrics"]["e2e_ms"]["p95"] <= hi


def test_plan_on_dask_gives_the_local_answer_bit_for_bit() -> None:
    """The same plan over local processes and over a Dask cluster: the same candidates, screens,
    confirmations, winner and knobs, every figure identical (only the wall time differs)."""
    from sim.run.dask import DaskExecutor

    def doc(res) -> str:
        d = res.to_dict()
        d.pop("wall_s")  # the only field that may differ: how long it took
        return json.dumps(d, sort_keys=True, default=str)

    d = mva_queue(60, 2)
    local = plan(d, jobs=1, margin=0.5)
    with DaskExecutor("local-dask", n_workers=2, processes=False) as ex:
        dask = plan(d, executor=ex, margin=0.5)
    assert local.winner is not None and local.winner.params == dask.winner.params  # type: ignore[union-attr]
    assert doc(local) == doc(dask)
