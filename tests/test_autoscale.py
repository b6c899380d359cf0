"""The replica autoscaler (llm.autoscale): cold start, the HPA rule, the cool-down, what it
costs, a spike it misses because replicas start too slowly, bad input, and plan's knobs."""

from __future__ import annotations

import math

import pytest
import yaml

from sim.analysis.autoscale import fleet
from sim.engine.llm.autoscale import cold_start_s, mean_count, recommend
from sim.engine.llm.routers.least_outstanding import LeastOutstanding
from sim.engine.pipeline import Model
from sim.run.autoscale import compare
from sim.spec.schema import ENGINE_START_S, validate_scenario
from sim.spec.storage import storage, storage_names
from tests.helpers import invoke, toy_llm


def spike(**autoscale) -> dict:
    """Open arrivals, 6/s, 15/s from 60 s to 150 s, then 6/s again.  One toy replica with
    max_batch 1 serves a request in 4 steps of 25 ms (step_overhead 23 ms + 2 ms of weights):
    10 a second.  One replica drowns in the spike; two hold it (utilisation 0.75)."""
    d = {
        "name": "spike",
        "run": {"duration_s": 300, "warmup_s": 0, "replications": 2, "seed": 7, "drain_s": 60},
        "workload": {
            "mode": "open",
            "rate_per_s": 6,
            "profile": {
                "kind": "schedule",
                "steps": [{"at_s": 0, "value": 6}, {"at_s": 60, "value": 15}, {"at_s": 150, "value": 6}],
            },
            "queries": {"distinct": 1000, "hot_fraction": 0, "hot_keys": 0},
        },
        "cache": {"enabled": False},
        "retrieval": {"enabled": False},
        "llm": toy_llm(step_overhead_ms=23, max_batch=1, prompt_tokens=100, output_tokens=4, replicas=1),
        "timeline": {"window_s": 30, "sla": {"e2e_ms": {"p95": 1000}}},
        "cost": {"gpu_per_hour": 2.0},
    }
    if autoscale:
        d["llm"]["autoscale"] = {"max_replicas": 2, "target": 2, "decision_interval_s": 5, **autoscale}
    return d


# --------------------------------------------------------------------------- formulas


def test_cold_start_by_hand():
    # the toy model: 1e9 parameters x 2 bytes = 2e9 bytes, read at 125 MiB/s = 131,072,000 B/s
    # -> 15.2587890625 s, plus the engine's start
    assert storage("ebs-gp3").read_bytes_per_s == 125 * 2**20
    assert cold_start_s(2e9, 131_072_000, 58.0) == pytest.approx(15.2587890625 + 58.0, abs=1e-12)
    scn = validate_scenario(spike(engine_start_s=120))
    a = scn.llm.autoscale
    assert a is not None and a.engine_start_s == 120
    assert cold_start_s(scn.llm.weights_bytes, a.load_bytes_per_s, a.engine_start_s) == pytest.approx(135.2587890625)
    # load_gbps overrides the storage kind: 2e9 bytes at 4 GB/s = 0.5 s
    b = validate_scenario(spike(load_gbps=4, engine_start_s=0)).llm.autoscale
    assert b is not None and cold_start_s(2e9, b.load_bytes_per_s, b.engine_start_s) == pytest.approx(0.5)
    default = validate_scenario(spike(cooldown_s=300)).llm.autoscale
    assert default is not None and default.engine_start_s == ENGINE_START_S


def test_the_engine_serves_a_new_replica_after_exactly_its_cold_start():
    m = Model(validate_scenario(spike(engine_start_s=120)), 0)
    m.run()
    scaler = m.llm.autoscaler  # type: ignore[union-attr]
    ups = [(t, i) for t, what, i in scaler.events if what == "up"]
    ready = {i: t for t, what, i in scaler.events if what == "ready"}
    assert ups, "the spike makes it scale up"
    t_up, slot = ups[0]
    assert ready[slot] - t_up == pytest.approx(135.2587890625)
    # paid from the decision, serving only after the cold start
    paid_at_up = next(row for row in scaler.history if row[0] == t_up)
    assert paid_at_up[1] == 2 and paid_at_up[3] == 1


def test_storage_catalog_figures_match_their_quotes():
    for name in storage_names():
        s = storage(name)
        assert s.read_bytes_per_s == pytest.approx(s.from_quote, rel=1e-12), name
        assert s.source.startswith("http") and s.read_on


def test_the_hpa_rule_by_hand():
    assert recommend(12, 4, 1, 0.1, 1, 5) == 3  # ceil(12 / 4)
    assert recommend(4.2, 4, 1, 0.1, 1, 5) == 1  # ratio 1.05: inside the tolerance
    assert recommend(4.5, 4, 1, 0.1, 1, 5) == 2  # ratio 1.125: ceil(4.5 / 4)
    assert recommend(8.0, 4, 2, 0.1, 1, 5) == 2  # exactly on target
    assert recommend(100, 4, 1, 0.1, 1, 5) == 5  # clamped to max
    assert recommend(0, 4, 3, 0.1, 2, 5) == 2  # clamped to min
    assert recommend(0.3 * 3, 0.3, 1, 0.0, 1, 5) == 3  # 0.9 / 0.3 is 3.0000000000000004: still 3


def test_mean_count_by_hand():
    # 1 replica from 0, 3 from 10, 2 from 40; over [0, 60): (1*10 + 3*30 + 2*20) / 60 = 2.333...
    rows = [(0.0, 1), (10.0, 3), (40.0, 2)]
    assert mean_count(rows, 1, 0.0, 60.0) == pytest.approx(140 / 60)
    assert mean_count(rows, 1, 20.0, 50.0) == pytest.approx((3 * 20 + 2 * 10) / 30)
    assert mean_count(rows, 1, 5.0, 5.0) == 0.0


# --------------------------------------------------------------------------- the rule in the engine


def _replay(scaler, initial: int) -> None:
    """Replay the rule over the decisions the run took: the provisioned count after each must
    be what the history holds; a scale-down only once every recommendation of the last
    cooldown_s is below the count."""
    a = scaler.a
    n = initial
    seen: list[tuple[float, int]] = []
    for t, _total, want in scaler.decisions:
        seen.append((t, want))
        window = [w for tt, w in seen if tt >= t - a.cooldown_s]
        if want > n:
            n = want
        elif max(window) < n:
            n = max(window)
        held = [row for row in scaler.history if row[0] <= t][-1]
        assert held[2] == n, f"at {t} s the fleet is {held[2]}, the rule says {n}"


@pytest.mark.parametrize("cooldown", [0.0, 30.0, 90.0])
def test_scale_down_waits_out_the_cooldown(cooldown):
    m = Model(validate_scenario(spike(engine_start_s=0, load_gbps=1000, cooldown_s=cooldown)), 0)
    m.run()
    scaler = m.llm.autoscaler  # type: ignore[union-attr]
    _replay(scaler, 1)
    downs = [t for t, what, _ in scaler.events if what in ("retire", "cancel")]
    assert downs, "the load falls after the spike: it scales down"
    for t in downs:
        # the last recommendation of two replicas before the scale-down is at least cooldown_s old
        last_two = max(tt for tt, _, w in scaler.decisions if tt < t and w >= 2)
        assert t - last_two > cooldown
        assert t - last_two <= cooldown + scaler.a.decision_interval_s + 1e-9  # and not later than due


def test_a_retired_replica_finishes_its_requests_and_stops_costing_when_empty():
    m = Model(validate_scenario(spike(engine_start_s=0, load_gbps=1000, cooldown_s=30)), 0, records=True)
    rep = m.run()
    scaler = m.llm.autoscaler  # type: ignore[union-attr]
    for t, what, slot in scaler.events:
        if what == "retire":
            drained = min(tt for tt, w, s in scaler.events if w == "drained" and s == slot and tt >= t)
            assert drained >= t
    # every request routed to a replica was answered: none lost to a scale-down
    assert (rep.records["replica"] >= 0).all()
    assert rep.digest is not None
    assert len(rep.records["e2e_ms"]) == rep.digest.count("started").sum()


def test_least_outstanding_over_a_subset_of_replicas():
    class R:
        def __init__(self, index):
            self.index, self.on_outstanding, self.n = index, None, 0

        def outstanding(self):
            return self.n

    a, b = R(1), R(3)  # the autoscaler's ready replicas: slots 1 and 3
    router = LeastOutstanding([a, b], None)  # type: ignore[arg-type]
    a.on_outstanding(1, 5)
    b.on_outstanding(3, 2)
    assert router.pick() is b
    b.on_outstanding(3, 7)
    assert router.pick() is a


# --------------------------------------------------------------------------- the pinned spike


def test_a_slow_cold_start_misses_the_spike_that_static_provisioning_holds():
    slow = compare(spike(engine_start_s=120))  # replica ready 135 s after the decision
    a = slow.autoscaled
    assert [f.label for f in slow.static] == ["static 1", "static 2"]
    two = slow.static[1]
    assert two.verdict == "pass" and two.windows_failed == []
    assert slow.cheapest_static is two
    assert a.verdict == "fail"
    # every window of the spike fails: the second replica is ready only after it is over
    assert {60.0, 90.0, 120.0}.issubset(a.windows_failed)
    auto = a.autoscale
    assert auto is not None and auto["cold_start_s"] == pytest.approx(135.2587890625)
    first_ready = min(w["start_s"] for w in auto["windows"] if w["ready"] > 1.0)
    assert first_ready >= 150.0
    # and it paid for the replica while it started: GPU-hours above one replica's
    assert a.gpu_hours > 1 * 300 / 3600
    assert a.cost_per_hour == pytest.approx(2.0 * a.gpu_hours / (300 / 3600))
    # the same autoscaler with replicas ready within a second fails no window
    fast = compare(spike(engine_start_s=0, load_gbps=1000, cooldown_s=300), static=[2])
    assert fast.autoscaled.windows_failed == []
    assert fast.autoscaled.gpu_hours < two.gpu_hours  # and pays for less than the static pair


def test_gpu_hours_follow_the_history():
    scn = validate_scenario(spike(engine_start_s=120))
    reps = [Model(scn, r).run() for r in range(2)]
    f = fleet(scn, reps)
    assert f is not None
    by_hand = []
    for rep in reps:
        t = [*rep.timeseries["autoscale_t_s"], 300.0]
        paid = rep.timeseries["autoscale_paid"]
        by_hand.append(sum(p * (min(b, 300.0) - min(a, 300.0)) for p, a, b in zip(paid, t, t[1:])) / 3600)
    assert f["gpu_hours"] == pytest.approx(sum(by_hand) / 2)
    assert reps[0].counters["gpu_replicas"] == pytest.approx(
        mean_count(
            list(
                zip(
                    reps[0].timeseries["autoscale_t_s"],
                    *(reps[0].timeseries[f"autoscale_{k}"] for k in ("paid", "provisioned", "ready")),
                )
            ),
            3,
            0.0,
            300.0,
        )
    )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"max_replicas": 0}, "llm.autoscale.max_replicas:"),
        ({"min_replicas": 3, "max_replicas": 2}, "llm.autoscale: max_replicas (2) is below min_replicas (3)"),
        ({"signal": "cpu"}, "llm.autoscale.signal:"),
        ({"signal": "kv", "target": 80}, "llm.autoscale: target 80 for signal kv"),
        ({"target": 0}, "llm.autoscale.target:"),
        ({"weights_from": "floppy"}, "llm.autoscale.weights_from:"),
        ({"decision_interval_s": -1}, "llm.autoscale.decision_interval_s:"),
        ({"max_replica": 3}, "did you mean 'max_replicas'"),
        ({"max_starting": 0}, "llm.autoscale.max_starting:"),
        ({"min_replicas": 2}, "llm: replicas (1) is the fleet the run starts with"),
    ],
)
def test_bad_autoscale_keys_exit_2_with_one_line(tmp_path, change, needle):
    d = spike(engine_start_s=0)
    d["llm"]["autoscale"].update(change)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    r = invoke("run", path)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, r.stderr
    assert not list(tmp_path.glob("runs*"))


def test_autoscale_refuses_mser_warmup_and_a_missing_autoscaler(tmp_path):
    d = spike(engine_start_s=0)
    d["workload"] = {"mode": "open", "rate_per_s": 6, "queries": d["workload"]["queries"]}
    d["run"]["warmup_s"] = "auto"
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    r = invoke("run", path)
    assert r.exit_code == 2 and "run.warmup_s: auto" in r.stderr and "llm.autoscale" in r.stderr, r.stderr
    plain = spike()
    path.write_text(yaml.safe_dump(plain))
    r = invoke("autoscale", path, "--out", tmp_path / "out")
    assert r.exit_code == 2 and r.stderr.strip().endswith("add an llm.autoscale section"), r.stderr


def test_plan_autoscale_keys_need_an_autoscaler(tmp_path):
    d = spike()
    d["sla"] = {"e2e_ms": {"p95": 1000}}
    d["plan"] = {"llm.autoscale.max_replicas": [2, 3]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    r = invoke("plan", path, "--out", tmp_path / "plan")
    assert r.exit_code == 2, r.output
    assert "plan.llm.autoscale.max_replicas: the scenario has no llm.autoscale section" in r.stderr


# --------------------------------------------------------------------------- plan and the CLI


def test_plan_searches_autoscaler_settings_at_their_measured_cost():
    from sim.run.plan import plan

    d = spike(engine_start_s=0, load_gbps=1000, cooldown_s=300)
    d["sla"] = {"e2e_ms": {"p95": 1000}}
    d["plan"] = {"llm.autoscale.target": [2, 8]}
    res = plan(d, screen_replications=2, replications=2, knobs=False)
    simulated = [c for c in res.candidates if c.best is not None]
    assert simulated
    for c in simulated:
        # ranked on the fleet it paid for, not on min_replicas
        assert c.cost_per_hour == pytest.approx(c.best.cost["per_hour"])  # type: ignore[union-attr,index]
        assert c.cost_per_hour > 2.0  # it held more than its one replica for some of the run
    if res.winner is not None:
        passing = [c for c in simulated if c.confirm and c.confirm.verdict == "pass"]
        assert res.winner.cost_per_hour == min(c.cost_per_hour for c in passing)


def test_cli_autoscale_writes_its_files_and_exits_on_the_autoscaled_verdict(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spike(engine_start_s=120)))
    out = tmp_path / "out"
    r = invoke("autoscale", path, "--out", out, "--static", "2")
    assert r.exit_code == 1, r.output
    assert "cheapest static fleet that passes: static 2" in r.output
    assert (out / "autoscale.json").is_file() and (out / "autoscale.png").stat().st_size > 0
    doc = yaml.safe_load((out / "autoscale.json").read_text())
    assert doc["cheapest_static"] == "static 2" and doc["autoscaled"]["verdict"] == "fail"
    assert math.isfinite(doc["saving_per_hour"])
    r = invoke("autoscale", path, "--out", out, "--static", "two")
    assert r.exit_code == 2 and "--static 'two'" in r.stderr


# --------------------------------------------------------------------------- the how-to page


@pytest.mark.parametrize(
    ("name", "scenario"), [("flash_sale", "flash_sale_autoscale"), ("diurnal", "diurnal_autoscale")]
)
def test_the_how_to_page_shows_the_committed_comparisons_of_the_shipped_scenarios(name, scenario):
    from sim.spec.scenario import load_scenario
    from tools.docgen import autoscale as page

    text = page.render()
    assert page.PAGE.read_text() == text, "docs/how-to/autoscale.md is stale: python -m tools.docgen.autoscale"
    c = page.load(name)
    for f in [c.autoscaled, *c.static]:
        assert f"| {f.label} |" in text and f"{f.gpu_hours:.3f}" in text
    if c.cheapest_static is not None:
        assert f"The cheapest static fleet that passes is {c.cheapest_static.label}" in text
    # the committed run is of the shipped scenario as the code reads it now
    scn = load_scenario(f"scenarios/{scenario}.yaml")
    a = scn.llm.autoscale
    assert a is not None and c.autoscaled.autoscale is not None
    assert c.autoscaled.autoscale["cold_start_s"] == pytest.approx(
        cold_start_s(scn.llm.weights_bytes, a.load_bytes_per_s, a.engine_start_s)
    )
    assert c.autoscaled.autoscale["max_replicas"] == a.max_replicas and c.scenario == scn.name


# the toy replica's KV pool holds some 1.4e8 tokens: one request's ~104 tokens use ~1e-6 of it
@pytest.mark.parametrize(("signal", "target"), [("queue", 2), ("kv", 1e-7), ("utilization", 0.5)])
def test_every_signal_reads_the_ready_replicas_and_scales_up_in_the_spike(signal, target):
    m = Model(validate_scenario(spike(signal=signal, target=target, engine_start_s=0, load_gbps=1000)), 0)
    m.run()
    scaler = m.llm.autoscaler  # type: ignore[union-attr]
    totals = [total for _, total, _ in scaler.decisions]
    assert all(x >= 0 for x in totals)
    if signal != "queue":  # a share per replica: the sum is at most the ready replicas
        assert max(totals) <= 2.0 + 1e-9
    in_spike = [want for t, _, want in scaler.decisions if 60 < t <= 150]
    assert max(in_spike) == 2


def test_max_starting_staggers_a_scale_up():
    """The spike asks for 3 replicas at once (target 1 waiting request each); with max_starting 1
    one starts, the rest of the scale-up is deferred, and the next starts only at a decision after
    the first is ready (a 20 s cold start, decisions every 5 s)."""

    def ups_and_ready(**extra):
        m = Model(validate_scenario(spike(engine_start_s=20, load_gbps=1000, max_replicas=3, target=1, **extra)), 0)
        m.run()
        scaler = m.llm.autoscaler  # type: ignore[union-attr]
        ups = [(t, i) for t, what, i in scaler.events if what == "up"]
        ready = {i: t for t, what, i in scaler.events if what == "ready"}
        deferred = [t for t, what, _ in scaler.events if what == "deferred"]
        return ups, ready, deferred, scaler

    ups, _, _, _ = ups_and_ready()
    assert ups[0][0] == ups[1][0]  # no limit: both extra replicas start at the same decision
    ups, ready, deferred, scaler = ups_and_ready(max_starting=1)
    (t1, s1), (t2, _) = ups[0], ups[1]
    assert t2 > t1 and t2 >= ready[s1] and t2 - ready[s1] < 5.0 + 1e-9  # the first decision after it is ready
    assert deferred and deferred[0] == t1  # the rest of the first scale-up waited
    # never two replicas starting at once: provisioned - ready <= 1 at every change
    assert all(row[2] - row[3] <= 1 for row in scaler.history)
