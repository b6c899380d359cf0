"""Plan a deployment: the cheapest configuration in a scenario's ``plan:`` space whose SLAs pass.

A scenario's ``plan:`` section opens the space, dotted key -> values to consider::

    plan:
      llm.gpu: [l40s, a100-80gb, h100-sxm, h200, b200]
      llm.tensor_parallel: [1, 2]
      llm.replicas: [1, 2, 3, 4]
      retrieval.workers: [1, 2, 4]

Every combination is a *candidate*.  :func:`plan` reasons before it simulates:

1. **Prune** (no simulation).  A candidate the schema refuses (the weights do not fit in
   the GPU's memory, ``tensor_parallel`` does not divide the heads) is out; so is one the
   analytic model of :mod:`sim.analysis.estimate` shows cannot pass: an open load with a
   stage utilised at 1 or more, a mean request that does not fit one replica's KV memory,
   or a lower bound on the mean end-to-end time already over an ``e2e_ms`` threshold
   (``mean``, ``p90`` and above) by more than ``margin``.  The bound is the
   asymptotic one of a closed network (Denning & Buzen),
   ``R >= max(sum D_i, N * max(D_i / m_i) - Z)`` plus the cache lookup and a lone
   request's decode, or ``sum D_i`` plus those for an open load.
2. **Order** the rest by cost per hour (prices from ``cost:`` or the catalog,
   :mod:`sim.spec.prices`), cheaper first, then by that bound.
3. **Screen**: simulate in that order with ``screen_replications`` replications until one
   does not fail; then every candidate within ``band`` of its cost, and a few dearer ones
   (the cheapest per cost level, for the Pareto front), within ``max_screen`` in all.
4. **Confirm** the cheapest candidates that did not fail the screen (the winner and its
   neighbours, ``confirm`` at a time) with the scenario's full replications and
   intervals; the winner is the cheapest whose every SLA passes.
5. **Knobs**: from the winner, each planned key one value each way (its neighbours in
   the ``plan:`` list), simulated with the screen's replications: the change in P95 and
   in cost.

An autoscaled candidate (``llm.autoscale``, whose keys may be planned too:
``llm.autoscale.max_replicas``, ``llm.autoscale.target``...) is ordered by what it costs at
``min_replicas``, the least it can; once simulated, its cost is the fleet it actually paid
for, on average (:mod:`sim.analysis.autoscale`), and it is ranked on that.

Every simulation uses the scenario's seed: replication ``r`` of every candidate draws the
same arrivals, questions and lengths (common random numbers), so a difference between two
candidates is their difference, not noise.  Candidates are screened in batches of a fixed
size, so the answer does not depend on how many processes run them.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.analysis.dollars import CostFigures, per_hour
from sim.analysis.estimate import gpu_station, gpu_stations, retrieval_station
from sim.analysis.summary import PointSummary
from sim.errors import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, ConfigError
from sim.physics import queueing as analytic
from sim.run.executors import LocalExecutor
from sim.run.loop import run_sweep
from sim.spec.keys import check_key
from sim.spec.scenario import Point, apply_overrides, expand, load_raw, run_overrides
from sim.spec.schema import Scenario, build_distribution, validate_scenario

#: Most candidates one plan enumerates (each is validated and bounded analytically).
MAX_CANDIDATES = 50_000
#: Candidates simulated together in one screening batch: fixed, so the candidates screened
#: (and so the answer) do not depend on the number of processes.
SCREEN_BATCH = 4
#: Sections whose keys are not deployment choices: the load, the run, the SLA and the prices.
NOT_KNOBS = ("workload", "run", "sla", "cost", "timeline", "sweep", "plan", "expect", "name", "description")
#: Statistics of an ``e2e_ms`` SLA a lower bound on the mean may prune against: the mean itself,
#: and the upper percentiles, which a response time's mean does not exceed unless its
#: distribution is far more skewed than queueing delays are.
BOUNDED_STATS = ("mean", "p90", "p95", "p99", "p999")


@dataclass
class Outcome:
    """What simulating one candidate said (screen or confirmation)."""

    replications: int
    verdict: str
    p95_ms: float | None
    ci: list[float | None]
    throughput_per_s: float
    stable: bool
    cost: CostFigures | None
    verdicts: list[dict[str, Any]]

    @classmethod
    def of(cls, s: PointSummary) -> Outcome:
        e2e = s.metrics.get("e2e_ms")
        p95 = e2e.values.get("p95") if e2e else None
        return cls(
            replications=s.replications,
            verdict=s.verdict,
            p95_ms=p95 if (p95 is not None and s.stable) else (math.inf if e2e else None),
            ci=list(e2e.ci.get("p95", [None, None])) if e2e and s.stable else [None, None],
            throughput_per_s=s.throughput_per_s,
            stable=s.stable,
            cost=s.cost,
            verdicts=[{k: v for k, v in sla.to_dict().items() if k != "hint"} for sla in s.sla],
        )

    @property
    def half_width_ms(self) -> float | None:
        lo, hi = self.ci
        return None if lo is None or hi is None else (hi - lo) / 2.0

    def why(self) -> str:
        """The SLA verdicts that are not a pass, in words."""
        bad = [v for v in self.verdicts if v["verdict"] != "pass"]
        out = []
        for v in bad:
            val = v.get("value")
            shown = "unbounded (no steady state)" if val is None or not math.isfinite(val) else f"{val:,.0f}"
            out.append(f"{v['metric']} {v['stat']} {shown} vs {v['threshold']:,.0f}: {v['verdict']}")
        return "; ".join(out) or self.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "replications": self.replications,
            "verdict": self.verdict,
            "p95_e2e_ms": None if self.p95_ms is None or not math.isfinite(self.p95_ms) else self.p95_ms,
            "ci": self.ci,
            "throughput_per_s": self.throughput_per_s,
            "stable": self.stable,
            "cost": self.cost,
            "verdicts": self.verdicts,
        }


@dataclass
class Candidate:
    """One configuration of the plan's space and what was learnt about it."""

    index: int
    params: dict[str, Any]
    scenario: Scenario | None = None
    cost_per_hour: float | None = None
    pruned: str | None = None
    skipped: str | None = None  # not simulated: a better-resourced candidate of its group failed
    bound_ms: float | None = None  # lower bound on the mean end-to-end time
    screen: Outcome | None = None
    confirm: Outcome | None = None

    @property
    def best(self) -> Outcome | None:
        """The confirmation when there is one, else the screen."""
        return self.confirm or self.screen

    @property
    def label(self) -> str:
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.params.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "cost_per_hour": self.cost_per_hour,
            "pruned": self.pruned,
            "skipped": self.skipped,
            "bound_e2e_ms": self.bound_ms,
            "screen": self.screen.to_dict() if self.screen else None,
            "confirm": self.confirm.to_dict() if self.confirm else None,
        }


@dataclass
class Knob:
    """One planned key moved one step from the winner: the change in P95 and in cost."""

    key: str
    direction: str  # "down" or "up" (the previous or next value of the plan's list)
    value: Any
    candidate: Candidate
    delta_p95_ms: float | None
    delta_cost_per_hour: float | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "direction": self.direction,
            "value": self.value,
            "delta_p95_ms": self.delta_p95_ms,
            "delta_cost_per_hour": self.delta_cost_per_hour,
            "verdict": self.candidate.screen.verdict if self.candidate.screen else None,
            "note": self.note,
        }


@dataclass
class PlanResult:
    """The answer of :func:`plan`: the winner, the front, the runner-ups, the knobs, the counts."""

    keys: dict[str, list[Any]]
    sla: dict[str, dict[str, float]]
    candidates: list[Candidate]
    winner: Candidate | None = None
    front: list[Candidate] = field(default_factory=list)
    runner_ups: list[tuple[Candidate, str]] = field(default_factory=list)
    knobs: list[Knob] = field(default_factory=list)
    screen_replications: int = 0
    replications: int = 0
    band: float = 0.10
    wall_s: float = 0.0
    simulations: int = 0

    @property
    def counts(self) -> dict[str, int]:
        c = self.candidates
        return {
            "configurations": len(c),
            "pruned": sum(1 for x in c if x.pruned),
            "skipped": sum(1 for x in c if x.skipped),
            "screened": sum(1 for x in c if x.screen),
            "confirmed": sum(1 for x in c if x.confirm),
        }

    @property
    def price_date(self) -> str | None:
        w = self.winner
        cost = w.confirm.cost if w and w.confirm else None
        return cost.get("price_date") if cost else None

    @property
    def exit_code(self) -> int:
        if self.winner is not None:
            return EXIT_PASS
        tried = [x.best for x in self.candidates if x.best]
        return EXIT_INCONCLUSIVE if any(o.verdict == "inconclusive" for o in tried) else EXIT_FAIL

    def to_dict(self) -> dict[str, Any]:
        w = self.winner
        return {
            "plan": self.keys,
            "sla": self.sla,
            "counts": self.counts,
            "simulations": self.simulations,
            "screen_replications": self.screen_replications,
            "replications": self.replications,
            "band": self.band,
            "wall_s": self.wall_s,
            "price_date": self.price_date,
            "winner": w.to_dict() if w else None,
            "front": [c.to_dict() for c in self.front],
            "runner_ups": [{**c.to_dict(), "why": why} for c, why in self.runner_ups],
            "knobs": [k.to_dict() for k in self.knobs],
            "candidates": [c.to_dict() for c in self.candidates if c.screen or c.confirm],
        }


# --------------------------------------------------------------------------- the space


def check_plan_keys(keys: Mapping[str, list[Any]], base: Scenario | None = None) -> None:
    """Every ``plan:`` key names a deployment choice of the schema (a one-line error otherwise);
    keys inside ``llm.autoscale`` need the scenario's autoscaler (``base``) to set them in."""
    for key in keys:
        if key.startswith("llm.autoscale.") and base is not None and base.llm.autoscale is None:
            raise ConfigError(
                f"plan.{key}: the scenario has no llm.autoscale section to vary; add one "
                f"(e.g. llm.autoscale: {{max_replicas: 4, target: 4}}), the plan's values replace its keys"
            )
        try:
            check_key(key, flag="plan")
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"plan {key}: ", f"plan.{key}: ", 1)) from None
        if key.split(".")[0] in NOT_KNOBS:
            raise ConfigError(
                f"plan.{key}: not a deployment choice; plan searches llm, retrieval, cache and routing keys "
                f"at the scenario's load (workload, run, sla and cost stay as the scenario sets them)"
            )


def _validate(data: dict) -> Scenario:
    return validate_scenario(data)


def _check_values(raw: dict, keys: Mapping[str, list[Any]]) -> None:
    """A value the schema refuses for its own key (an unknown GPU, a negative count) is a
    mistake in the ``plan:`` block, not a configuration that does not fit."""
    for key, values in keys.items():
        for v in values:
            try:
                _validate(_deployment(apply_overrides(raw, {key: v}), {}) or raw)
            except ConfigError as e:
                msg = str(e)
                if msg.startswith(f"{key}:") or msg.startswith(f"{key}."):
                    raise ConfigError(f"plan.{key}: {v!r}: {msg.split(': ', 1)[1]}") from None
                if msg.startswith("cost."):  # e.g. a GPU the price catalog does not price
                    raise ConfigError(f"plan.{key}: {v!r}: {msg}") from None


def _space(raw: dict, keys: Mapping[str, list[Any]]) -> list[Candidate]:
    names = list(keys)
    out = []
    for i, combo in enumerate(itertools.product(*(keys[k] for k in names))):
        params = dict(zip(names, combo))
        c = Candidate(i, params)
        data = _deployment(apply_overrides(raw, params), keys)
        if data is None:  # a disaggregated deployment at another planned llm.replicas: a duplicate
            c.pruned = (
                f"same deployment as llm.replicas {keys['llm.replicas'][0]}: "
                f"a disaggregated deployment's pools have their own replicas"
            )
            out.append(c)
            continue
        try:
            c.scenario = _validate(data)
        except ConfigError as e:
            c.pruned = f"does not fit: {e}"
        out.append(c)
    return out


def _deployment(data: dict, keys: Mapping[str, list[Any]]) -> dict | None:
    """``data`` as a candidate deployment: a disaggregated one (``llm.disaggregated`` set) takes
    its replicas from its pools, so the scenario's ``llm.replicas`` is dropped from it; None when
    the plan varies ``llm.replicas`` and this is not its first value (a duplicate deployment)."""
    llm = data.get("llm")
    if not isinstance(llm, dict) or not isinstance(llm.get("disaggregated"), dict):
        return data
    if "llm.replicas" in keys and llm.get("replicas") != keys["llm.replicas"][0]:
        return None
    llm.pop("replicas", None)
    return data


# --------------------------------------------------------------------------- the analytic layer


class _Stations:
    """The estimate's stations per candidate, memoised on the sections each depends on
    (candidates differing only in ``llm.replicas`` share a GPU demand)."""

    def __init__(self) -> None:
        self.retrieval: dict[str, tuple[tuple[float, int] | None, float]] = {}
        self.gpu: dict[str, tuple[tuple[float, int] | None, float]] = {}
        self.disagg: dict[str, tuple[dict[str, tuple[float, int]] | None, float]] = {}

    def of(self, scn: Scenario) -> tuple[dict[str, tuple[float, int]], float, bool]:
        """``({station: (demand s, servers)}, extra delay s, a mean request fits)``."""
        rkey = json.dumps([scn.cache.model_dump(mode="json"), scn.retrieval.model_dump(mode="json")], sort_keys=True)
        if rkey not in self.retrieval:
            self.retrieval[rkey] = retrieval_station(scn)
        r_station, cache_s = self.retrieval[rkey]
        stations: dict[str, tuple[float, int]] = {}
        if r_station is not None:
            stations["retrieval"] = r_station
        fits = True
        delay_s = 0.0
        if scn.llm.enabled and scn.llm.disaggregated is not None:  # two pools: their own stations
            gkey = json.dumps([scn.llm.model_dump(mode="json"), scn.retrieval.top_k, scn.retrieval.enabled])
            if gkey not in self.disagg:
                self.disagg[gkey] = gpu_stations(scn)
            pools, delay_s = self.disagg[gkey]
            if pools is None:
                fits = False
            else:
                stations.update(pools)
        elif scn.llm.enabled:
            llm = scn.llm.model_dump(mode="json")
            llm.pop("replicas")
            gkey = json.dumps([llm, scn.retrieval.top_k, scn.retrieval.enabled], sort_keys=True)
            if gkey not in self.gpu:
                self.gpu[gkey] = gpu_station(scn.model_copy(update={"llm": scn.llm.model_copy(update={"replicas": 1})}))
            g_station, delay_s = self.gpu[gkey]
            if g_station is None:
                fits = False
            else:
                a = scn.llm.autoscale  # an autoscaler may hold up to max_replicas: bound with them all
                stations["gpu"] = (g_station[0], scn.llm.replicas if a is None else a.max_replicas)
        return stations, cache_s + delay_s, fits


def bound_e2e_s(scn: Scenario, stations: Mapping[str, tuple[float, int]], extra_s: float) -> float:
    """A lower bound on the mean end-to-end time, s: ``max(sum D, N * D_max - Z) + extra`` for a
    closed load (``Z`` the think time plus ``extra``), ``sum D + extra`` for an open one."""
    demands = [d for d, _ in stations.values()]
    servers = [m for _, m in stations.values()]
    w = scn.workload
    if not demands:
        return extra_s
    if w.mode == "closed" and w.users is not None:
        z = build_distribution(w.think_s).mean + extra_s
        return analytic.closed_response_lower_bound_s(w.users, z, demands, servers) + extra_s
    return sum(demands) + extra_s


def cost_floor(scn: Scenario) -> float | None:
    """USD per hour before simulating: the fleet's; an autoscaled fleet's at ``min_replicas``, the
    least it can cost (once simulated, its measured mean fleet replaces it: :class:`_Runner`)."""
    a = scn.llm.autoscale if scn.llm.enabled else None
    if a is None:
        return per_hour(scn)
    return per_hour(scn, a.min_replicas * scn.llm.tensor_parallel)


def prune(candidates: list[Candidate], base: Scenario, margin: float) -> None:
    """Set ``pruned`` (and ``bound_ms``, ``cost_per_hour``) on every candidate the analysis rules out."""
    thresholds = [(st, t) for st, t in (base.sla.get("e2e_ms") or {}).items() if st in BOUNDED_STATS]
    memo = _Stations()
    steady = not base.workload.time_varying
    for c in candidates:
        scn = c.scenario
        if scn is None:
            continue
        c.cost_per_hour = cost_floor(scn)
        if not steady:
            continue
        stations, extra_s, fits = memo.of(scn)
        if not fits:
            c.pruned = "does not fit: a mean request does not fit one replica's KV memory"
            continue
        w = scn.workload
        if w.mode == "open" and w.rate_per_s is not None:
            for name, (d, m) in stations.items():
                u = analytic.utilization(w.rate_per_s, d, m)
                if u >= 1.0:
                    c.pruned = f"cannot pass: {name} utilisation {u:.2f} >= 1 at {w.rate_per_s:g} requests/s"
                    break
            if c.pruned:
                continue
        c.bound_ms = bound_e2e_s(scn, stations, extra_s) * 1e3
        for st, t in thresholds:
            if c.bound_ms > t * (1.0 + margin):
                c.pruned = f"cannot pass: mean e2e >= {c.bound_ms:,.0f} ms (lower bound) > {st} threshold {t:,.0f} ms"
                break


# --------------------------------------------------------------------------- simulating


@dataclass
class _Runner:
    executor: Any
    simulations: int = 0

    def run(self, cands: list[Candidate], replications: int) -> list[Outcome]:
        if not cands:
            return []
        points = []
        for c in cands:
            assert c.scenario is not None
            data = c.scenario.model_dump(mode="json")
            data["run"]["replications"] = replications
            data["run"]["target_precision"] = None
            points.append(Point(dict(c.params), _validate(data)))
        self.simulations += len(points)
        sr = run_sweep(points, None, executor=self.executor)
        out = [Outcome.of(p.summary) for p in sr.points]
        for c, o in zip(cands, out):
            if c.scenario is not None and c.scenario.llm.autoscale is not None and o.cost:
                c.cost_per_hour = o.cost["per_hour"]  # the fleet it held, measured (confirm over screen)
        return out


def _cost(c: Candidate) -> float:
    return c.cost_per_hour if c.cost_per_hour is not None else math.inf


def _order(c: Candidate) -> tuple[float, float, int]:
    return (_cost(c), c.bound_ms if c.bound_ms is not None else 0.0, c.index)


def _key(params: Mapping[str, Any]) -> str:
    """A hashable form of a candidate's values (a value may be a mapping, e.g. a distribution)."""
    return json.dumps(params, sort_keys=True, default=str)


#: Keys of which more never makes a configuration slower: more retrieval workers (each on
#: its own core, or more cores) and a bigger LRU cache (whose hits only grow with its size).
MONOTONE = ("retrieval.workers", "retrieval.cpu_cores", "cache.capacity")


class _Screener:
    """Screens candidates in cost order.  Candidates that differ only in :data:`MONOTONE`
    keys form a group; before any member is screened, the group's best-resourced member
    (the largest value of each such key in the plan) is, and when it fails the screen (its
    interval wholly over a threshold) the rest of the group is skipped: with fewer workers
    or a smaller cache none of them can pass."""

    def __init__(
        self, runner: _Runner, everyone: list[Candidate], alive: list[Candidate], reps: int, budget: int
    ) -> None:
        self.runner, self.alive, self.reps, self.left = runner, alive, reps, budget
        keys = list(everyone[0].params) if everyone else []
        self.mono = [k for k in keys if k in MONOTONE]
        by_params = {_key(c.params): c for c in everyone}
        tops: dict[str, Candidate] = {}
        self.members: dict[str, list[Candidate]] = {}
        for c in everyone:
            g = self.group(c)
            self.members.setdefault(g, []).append(c)
        for g, members in self.members.items():
            best = {k: max(m.params[k] for m in members) for k in self.mono}
            top = {k: best.get(k, v) for k, v in members[0].params.items()}
            tops[g] = by_params[_key(top)]
        self.tops = tops

    def group(self, c: Candidate) -> str:
        return _key({k: v for k, v in c.params.items() if k not in self.mono})

    def skip_group(self, top: Candidate, why: str) -> None:
        for m in self.members[self.group(top)]:
            if m is not top and m.screen is None and m.pruned is None and m.skipped is None:
                m.skipped = why

    def screen(self, batch: list[Candidate]) -> None:
        batch = [c for c in batch if c.screen is None][: max(self.left, 0)]
        for c, o in zip(batch, self.runner.run(batch, self.reps)):
            c.screen = o
        self.left -= len(batch)
        for c in batch:
            if self.mono and self.tops[self.group(c)] is c and c.screen is not None and c.screen.verdict == "fail":
                self.skip_group(c, f"skipped: even with {self.most(c)} it fails ({c.screen.why()})")

    def most(self, top: Candidate) -> str:
        """The monotone settings of a group's best-resourced member, in words."""
        return ", ".join(f"{k.split('.')[-1]}={top.params[k]}" for k in self.mono)

    def walk(self, limit: float, until_one: bool) -> None:
        """Screen the candidates up to ``limit`` USD per hour in cost order, SCREEN_BATCH at a
        time, within the budget: with ``until_one``, until one does not fail; without, the
        cheapest of each group not yet screened (its other members differ from it only in
        workers or cache, and cost more)."""
        while self.left > 0:
            if until_one:  # until a candidate that did not fail costs no more than any left
                limit = min([_cost(c) for c in self.alive if c.screen and c.screen.verdict != "fail"] + [limit])
            seen = {self.group(c) for c in self.alive if c.screen is not None}
            todo = [
                c
                for c in self.alive
                if c.screen is None
                and c.skipped is None
                and (_cost(c) < limit if until_one else _cost(c) <= limit)
                and (until_one or self.group(c) not in seen)
            ]
            if not todo:
                return
            head = todo[:SCREEN_BATCH]
            tops: list[Candidate] = []
            for c in head:
                t = self.tops[self.group(c)]
                if t is c or t.screen is not None or t in tops:
                    continue
                if t.pruned or t.scenario is None:  # the best of the group cannot pass: none can
                    self.skip_group(t, f"skipped: even with {self.most(t)}, {t.pruned}")
                else:
                    tops.append(t)
            if tops:
                self.screen(tops)
            elif until_one:
                self.screen([c for c in head if c.skipped is None])
            else:
                firsts: list[Candidate] = []
                for c in todo:
                    if c.skipped is None and all(self.group(f) != self.group(c) for f in firsts):
                        firsts.append(c)
                self.screen(firsts[:SCREEN_BATCH])


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both cost per hour and P95 (cheapest first)."""
    pts = [c for c in cands if c.best and c.best.p95_ms is not None and math.isfinite(c.best.p95_ms)]
    pts.sort(key=lambda c: (_cost(c), c.best.p95_ms, c.index))  # type: ignore[union-attr]
    front: list[Candidate] = []
    best = math.inf
    for c in pts:
        p = c.best.p95_ms  # type: ignore[union-attr]
        assert p is not None
        if p < best:
            front.append(c)
            best = p
    return front


def plan(
    source: str | Path | Mapping | Scenario,
    overrides: Mapping[str, Any] | None = None,
    *,
    screen_replications: int = 2,
    replications: int | None = None,
    seed: int | None = None,
    jobs: int | None = None,
    executor: Any = None,
    band: float = 0.10,
    margin: float = 0.10,
    max_screen: int = 40,
    confirm: int = 3,
    front_levels: int = 4,
    knobs: bool = True,
    on_stage: Callable[[str, int], None] | None = None,
) -> PlanResult:
    """The cheapest configuration of ``source``'s ``plan:`` space whose every SLA passes
    (see the module docstring for the steps).  ``replications`` (default ``run.replications``)
    confirm; ``screen_replications`` screen and measure the knobs.  ``on_stage(name, n)`` is
    told each stage and how many candidates it takes."""
    t0 = time.perf_counter()
    _check_options(screen_replications, band, margin)
    raw, keys = _load_space(source, run_overrides(overrides, seed, replications))
    base = _validate(raw)
    res = PlanResult(keys, {m: dict(s) for m, s in base.sla.items()}, _space(raw, keys))
    res.screen_replications, res.replications, res.band = screen_replications, base.run.replications, band

    def stage(name: str, n: int) -> None:
        if on_stage is not None:
            on_stage(name, n)

    stage("prune", len(res.candidates))
    prune(res.candidates, base, margin)
    alive = sorted((c for c in res.candidates if not c.pruned), key=_order)
    runner = _Runner(executor or LocalExecutor(jobs))
    screener = _Screener(runner, res.candidates, alive, screen_replications, max_screen)
    stage("screen", len(alive))
    _screen(screener, alive, band, front_levels)
    _confirm(res, screener, alive, max(confirm, 1), stage)
    if res.winner is not None:
        res.runner_ups = _runner_ups(res, band)
        if knobs:
            res.knobs = _knobs(res, runner, screen_replications, stage)
    res.front = pareto_front(res.candidates)  # after the knobs: their runs are simulated configurations too
    res.simulations = runner.simulations
    res.wall_s = time.perf_counter() - t0
    return res


def _check_options(screen_replications: int, band: float, margin: float) -> None:
    """The plan's own options, each a one-line error naming the flag."""
    if screen_replications < 1:
        raise ConfigError(f"--screen-replications: must be >= 1, got {screen_replications}")
    for name, v in (("--band", band), ("--margin", margin)):
        if not (0 <= v <= 10) or v != v:
            raise ConfigError(f"{name}: must be a fraction between 0 and 10, got {v}")


def _load_space(
    source: str | Path | Mapping | Scenario, overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """``(raw, keys)``: the scenario as data without its ``sweep:``, ``expect:`` and ``plan:``
    sections (every price from the catalog unless ``cost:`` gives one), and the ``plan:`` space,
    both checked: keys that are deployment choices, values the schema takes, a space of at
    most :data:`MAX_CANDIDATES`, and an SLA to meet."""
    raw = apply_overrides(
        load_raw(source.model_dump(mode="json") if isinstance(source, Scenario) else source), overrides
    )
    raw.pop("sweep", None)
    raw.pop("expect", None)
    base = expand(raw)[0].scenario
    keys = {k: list(v) for k, v in base.plan.items()}
    if not keys:
        raise ConfigError("plan: the scenario has no plan: section; add one, e.g. plan: {llm.replicas: [1, 2, 3]}")
    if not base.sla:
        raise ConfigError("plan needs an SLA: add an sla: section or --set sla.e2e_ms.p95=800")
    check_plan_keys(keys, base)
    size = math.prod(len(v) for v in keys.values())
    if size > MAX_CANDIDATES:
        sizes = " x ".join(f"{len(v):,} {k}" for k, v in keys.items())
        raise ConfigError(f"plan: {sizes} is {size:,} configurations, more than {MAX_CANDIDATES:,}; plan fewer values")
    raw.pop("plan", None)
    if raw.get("cost") is None:
        raw["cost"] = {}  # every price from the catalog
    _check_values(raw, keys)
    return raw, keys


def _screen(screener: _Screener, alive: list[Candidate], band: float, front_levels: int) -> None:
    """Screen in cost order until one does not fail (each group's best-resourced member first),
    then every group within ``band`` of its cost, then up to ``front_levels`` dearer cost levels
    (the most promising candidate of each) for the Pareto front."""
    screener.walk(math.inf, until_one=True)
    first = next((c for c in alive if c.screen and c.screen.verdict != "fail"), None)
    if first is None:
        return
    limit = _cost(first) * (1.0 + band)
    screener.walk(limit, until_one=False)
    levels: dict[float, Candidate] = {}
    for c in alive:
        if _cost(c) > limit and c.skipped is None and _cost(c) not in levels:
            levels[_cost(c)] = c
    dear = list(levels.values())
    take = min(front_levels, screener.left, len(dear))
    if take > 0:
        step = len(dear) / take
        screener.screen([dear[int(i * step)] for i in range(take)])


def _confirm(
    res: PlanResult, screener: _Screener, alive: list[Candidate], size: int, stage: Callable[[str, int], None]
) -> None:
    """Confirm the cheapest candidates that did not fail the screen, ``size`` at a time, until one
    passes; sets ``res.winner``.  Each batch: the cheapest candidate left and the next ones from
    other groups (its neighbours)."""
    hopeful = [c for c in alive if c.screen and c.screen.verdict != "fail" and c.skipped is None]
    while hopeful and res.winner is None:
        batch = [hopeful[0]]
        for c in hopeful[1:]:
            if len(batch) >= size:
                break
            if all(screener.group(b) != screener.group(c) for b in batch):
                batch.append(c)
        stage("confirm", len(batch))
        for c, o in zip(batch, screener.runner.run(batch, res.replications)):
            c.confirm = o
        hopeful = [c for c in hopeful if c.confirm is None]
        res.winner = _cheapest_passing(res.candidates)


def _cheapest_passing(cands: list[Candidate]) -> Candidate | None:
    """The cheapest confirmed candidate that passes (the lower confirmed P95 on a tie), or None."""
    passing = [c for c in cands if c.confirm and c.confirm.verdict == "pass"]
    if not passing:
        return None
    cheapest = min(_cost(c) for c in passing)
    return min(
        (c for c in passing if _cost(c) == cheapest),
        key=lambda c: (c.confirm.p95_ms if c.confirm and c.confirm.p95_ms is not None else math.inf, c.index),
    )


def audit_pruned(res: PlanResult, n: int, replications: int, jobs: int | None = None) -> list[Candidate]:
    """Simulate the ``n`` candidates the bound pruned closest to the line (smallest bound), to
    check that pruning discarded none that passes; returns them with ``screen`` set."""
    pruned = [c for c in res.candidates if c.scenario is not None and c.pruned and c.bound_ms is not None]
    pruned.sort(key=lambda c: (c.bound_ms, c.index))
    chosen = pruned[:n]
    for c, o in zip(chosen, _Runner(LocalExecutor(jobs)).run(chosen, replications)):
        c.screen = o
    return chosen


def _runner_ups(res: PlanResult, band: float) -> list[tuple[Candidate, str]]:
    """Every other candidate within ``band`` of the winner's cost (cheaper or dearer), and why it loses."""
    w = res.winner
    assert w is not None and w.confirm is not None
    wc = _cost(w)
    out = []
    for c in sorted(res.candidates, key=_order):
        if c is w or c.cost_per_hour is None or abs(c.cost_per_hour - wc) > wc * band:
            continue
        extra = c.cost_per_hour - wc
        dearer = f"costs ${extra:,.2f}/h more (+{extra / wc:.0%})" if extra > 1e-9 else "costs the same"
        if c.pruned or c.skipped:
            why = c.pruned or c.skipped or ""
        elif c.best is None:
            why = (
                f"{dearer}; not simulated"
                if extra > -1e-9
                else "not simulated: the screening budget (max_screen) ran out before it"
            )
        elif c.best.verdict != "pass":
            stage = "confirmed" if c.confirm else f"screen, {c.best.replications} replications"
            why = f"{c.best.why()} ({stage})"
        elif extra > 1e-9:
            why = f"passes but {dearer}"
        else:
            mine, theirs = c.best.p95_ms, w.confirm.p95_ms
            why = (
                f"passes at the same cost; {'not confirmed' if not c.confirm else 'confirmed'}, "
                f"P95 {mine:,.0f} vs the winner's {theirs:,.0f} ms"
                if mine is not None and theirs is not None
                else "passes at the same cost; ordered after the winner"
            )
        out.append((c, why))
    return out


def _knobs(res: PlanResult, runner: _Runner, reps: int, stage: Callable[[str, int], None]) -> list[Knob]:
    """Each planned key one step each way from the winner, on the screen's replications."""
    w = res.winner
    assert w is not None
    by_params = {_key(c.params): c for c in res.candidates}
    moves: list[tuple[str, str, Any, Candidate]] = []
    for key, values in res.keys.items():
        if len(values) < 2:
            continue
        i = values.index(w.params[key])
        for direction, j in (("down", i - 1), ("up", i + 1)):
            if 0 <= j < len(values):
                params = {**w.params, key: values[j]}
                moves.append((key, direction, values[j], by_params[_key(params)]))
    todo = [c for _, _, _, c in moves if c.scenario is not None and c.screen is None]
    if w.screen is None:
        todo.insert(0, w)
    stage("knobs", len(todo))
    for i in range(0, len(todo), SCREEN_BATCH):
        batch = todo[i : i + SCREEN_BATCH]
        for c, o in zip(batch, runner.run(batch, reps)):
            c.screen = o
    assert w.screen is not None
    base_p95 = w.screen.p95_ms
    out = []
    for key, direction, value, c in moves:
        d_cost = None if c.cost_per_hour is None or w.cost_per_hour is None else c.cost_per_hour - w.cost_per_hour
        if c.scenario is None:
            out.append(Knob(key, direction, value, c, None, d_cost, c.pruned or ""))
            continue
        s = c.screen
        assert s is not None
        if s.p95_ms is None or base_p95 is None:
            d_p95 = None
        else:
            d_p95 = s.p95_ms - base_p95 if math.isfinite(s.p95_ms) else math.inf
        note = "" if s.verdict == "pass" else s.why()
        out.append(Knob(key, direction, value, c, d_p95, d_cost, note))
    return out


__all__ = [
    "Candidate",
    "Knob",
    "Outcome",
    "PlanResult",
    "audit_pruned",
    "bound_e2e_s",
    "cost_floor",
    "pareto_front",
    "plan",
    "prune",
]
