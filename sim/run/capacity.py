"""Capacity search: the largest load, or the fewest resources, at which every SLA passes.

:func:`capacity` brackets then bisects on the statistical SLA verdict: the
largest value of a load key (``workload.users``) or the smallest value of a
resource key (``llm.replicas``) at which every SLA passes.  An inconclusive
verdict counts as not passing (and is reported).  Every value tried uses the
same seed (common random numbers), which keeps the verdict monotone in the
key far more often than independent draws would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sim.analysis.estimate import estimate
from sim.analysis.summary import PointSummary
from sim.errors import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, CapsimError, ConfigError
from sim.run.executors import LocalExecutor
from sim.run.loop import run_sweep
from sim.spec.keys import numeric_field
from sim.spec.scenario import apply_overrides, expand, load_raw, run_overrides
from sim.spec.schema import Scenario

# Direction by the key's meaning.  "max": more of it is more load, so capacity is the LARGEST
# value that meets the SLA.  "min": more of it is more resource (or less load), so capacity is
# the SMALLEST value that meets the SLA.  Matched on the full dotted key, then on its last part.
MIN_KEYS = {
    "llm.replicas",
    "llm.tensor_parallel",
    "llm.max_batch",
    "llm.gpu_memory_utilization",
    "llm.bw_efficiency",
    "llm.mfu",
    "retrieval.workers",
    "retrieval.cpu_cores",
    "cache.capacity",
    "workload.think_s.mean",
    "workload.think_s.value",
    "workload.queries.hot_fraction",
    "llm.gpu.hbm_bandwidth_gbps",
    "llm.gpu.memory_gb",
    "llm.gpu.peak_tflops",
    "llm.gpu.interconnect_gbps",
}
MAX_KEYS = {"workload.users", "workload.rate_per_s"}
_MIN_LAST = {"replicas", "workers", "cpu_cores", "capacity", "max_batch", "tensor_parallel"}


def default_direction(key: str) -> tuple[Literal["max", "min"], str]:
    """The search direction for ``key`` and why."""
    if key in MAX_KEYS:
        return "max", "more of it is more load"
    if key in MIN_KEYS or key.split(".")[-1] in _MIN_LAST:
        return "min", "more of it is more resource"
    return "max", "taken as load (the largest value that meets the SLA); use --direction min for a resource"


@dataclass
class Tried:
    value: float
    summary: PointSummary

    @property
    def verdict(self) -> str:
        return self.summary.verdict

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict:
        s = self.summary
        e2e = s.metrics.get("e2e_ms")
        return {
            "value": self.value,
            "verdict": self.verdict,
            "verdicts": [{k: v for k, v in sla.to_dict().items() if k != "hint"} for sla in s.sla],
            "p95_e2e_ms": e2e.values["p95"] if e2e else None,
            "ci": e2e.ci["p95"] if e2e else [None, None],
            "throughput_per_s": s.throughput_per_s,
            "stable": s.stable,
            "cost": s.cost,
        }


@dataclass
class CapacityResult:
    key: str
    direction: str
    capacity: float | None
    tried: list[Tried] = field(default_factory=list)
    note: str = ""
    best: Tried | None = None  # the most favourable value tried, when none passes
    reason: str = ""  # why this direction

    @property
    def inconclusive(self) -> bool:
        """No value passed and none failed outright: every one tried was undecided, so
        "no value meets the SLA" is not shown (add replications or run longer)."""
        return self.capacity is None and bool(self.tried) and all(t.verdict != "fail" for t in self.tried)

    @property
    def exit_code(self) -> int:
        if self.capacity is not None:
            return EXIT_PASS
        return EXIT_INCONCLUSIVE if self.inconclusive else EXIT_FAIL

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "direction": self.direction,
            "capacity": self.capacity,
            "tried": [t.to_dict() for t in self.tried],
            "note": self.note,
            "inconclusive": self.inconclusive,
            "best": self.best.to_dict() if self.best is not None else None,
        }


def capacity(
    source: str | Path | Mapping | Scenario,
    key: str,
    overrides: Mapping[str, Any] | None = None,
    *,
    low: float | None = None,
    high: float | None = None,
    direction: str | None = None,
    step: float | None = None,
    replications: int | None = None,
    seed: int | None = None,
    jobs: int | None = None,
    executor: Any = None,
    out: str | Path | None = None,
    max_steps: int = 12,
    on_try: Callable[[Tried], None] | None = None,
) -> CapacityResult:
    """The largest (``direction="max"``) or smallest (``"min"``) value of ``key`` at
    which every SLA passes, found by bracketing then bisection.

    Without ``low``/``high`` the search starts at the scenario's value and
    doubles or halves until the verdict flips (at most ``max_steps`` times),
    then bisects until the bracket is ``step`` wide (default 1 % of the value,
    and at least 1 for integer keys).  With both bounds it first tries the favourable
    end (no value passes if it fails: ``capacity`` is None and ``best`` holds
    it) and the unfavourable end (the whole range passes: ``capacity`` is that
    end, with a note).  Pass means every SLA verdict is ``pass``; an
    inconclusive verdict counts as not passing.
    """
    ov = run_overrides(overrides, seed, replications)
    raw = apply_overrides(load_raw(source.model_dump(mode="json") if isinstance(source, Scenario) else source), ov)
    raw.pop("sweep", None)
    base = expand(raw)[0].scenario
    if not base.sla:
        raise ConfigError("capacity needs an SLA: add an sla: section or --set sla.e2e_ms.p95=800")
    kind, lo_b, hi_b, current = numeric_field(base, key)
    direction, why = _direction(key, direction, base.workload.mode)
    _check_range(key, kind, lo_b, hi_b, low, high, step)
    cast = _caster(kind)
    L = cast(low) if low is not None else lo_b
    H = cast(high) if high is not None else hi_b
    res = CapacityResult(key, direction, None, reason=why)
    search = _Search(raw, key, kind, L, H, direction, executor or LocalExecutor(jobs), out, on_try, res)
    if low is not None and high is not None:
        bracket = search.ends()
    else:
        start = low if low is not None else high if high is not None else _estimated_start(key, base, current)
        if start is None:
            raise ConfigError(f"--vary {key}: the scenario sets no value for it; give --low and --high")
        bracket = search.bracket(cast(min(max(start, L), H)), max_steps)
    if bracket is not None:
        search.bisect(*bracket, step)
    return res


def _direction(key: str, direction: str | None, mode: str) -> tuple[str, str]:
    """The search direction (asked, or by the key's meaning) and why; a load key must match
    the workload's mode."""
    if direction is None:
        direction, why = default_direction(key)
    else:
        if direction not in ("max", "min"):
            raise ConfigError(f"--direction {direction!r}: expected max or min")
        why = "as asked"
    if (key == "workload.rate_per_s" and mode == "closed") or (key == "workload.users" and mode == "open"):
        raise ConfigError(
            f"--vary {key}: the scenario's workload is {mode}; "
            f"vary {'workload.users' if mode == 'closed' else 'workload.rate_per_s'} instead"
        )
    return direction, why


def _check_range(
    key: str, kind: type, lo_b: float, hi_b: float, low: float | None, high: float | None, step: float | None
) -> None:
    for name, v in (("--low", low), ("--high", high)):
        if v is not None and not (lo_b <= v <= hi_b):
            raise ConfigError(f"{name} {v:g}: {key} must lie in [{lo_b:g}, {hi_b:g}]")
        if v is not None and kind is int and float(v) != int(v):
            raise ConfigError(f"{name} {v:g}: {key} is an integer key")
    if low is not None and high is not None and low >= high:
        raise ConfigError(f"--low {low:g} must be below --high {high:g}")
    if step is not None and step <= 0:
        raise ConfigError(f"--step {step:g}: must be > 0")


def _caster(kind: type) -> Callable[[float], float]:
    def cast(v: float) -> float:
        return round(v) if kind is int else float(v)

    return cast


@dataclass
class _Search:
    """One capacity search over ``[L, H]``: every value is simulated once (memoised) and
    recorded in ``res.tried``; the steps below fill in ``res``."""

    raw: dict
    key: str
    kind: type
    L: float
    H: float
    direction: str
    ex: Any
    out: str | Path | None
    on_try: Callable[[Tried], None] | None
    res: CapacityResult
    cache: dict[float, Tried] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cast = _caster(self.kind)

    def test(self, v: float) -> bool:
        v = self.cast(v)
        if v not in self.cache:
            sr = run_sweep(expand(self.raw, {self.key: v}), self.out, executor=self.ex)
            t = Tried(v, sr.points[0].summary)
            self.cache[v] = t
            self.res.tried.append(t)
            if self.on_try:
                self.on_try(t)
        return self.cache[v].passed

    def grow(self, v: float, toward_hard: bool) -> float:
        """The next value of a geometric bracket search, clamped to [L, H]."""
        up = toward_hard == (self.direction == "max")
        if up:
            nv = v * 2 if v > 0 else (1 if self.kind is int else 1.0)
        else:
            nv = v / 2 if v > 0 else v - 1
        nv = self.cast(nv)
        if nv == v:
            nv = self.cast(v + (1 if up else -1))
        return min(max(nv, self.L), self.H)

    def ends(self) -> tuple[float, float] | None:
        """With both bounds: the favourable end must pass and the other fail, else ``res`` is final."""
        key, res = self.key, self.res
        easy, hard = (self.L, self.H) if self.direction == "max" else (self.H, self.L)
        easy, hard = self.cast(easy), self.cast(hard)
        if not self.test(easy):
            res.best = self.cache[easy]
            res.note = f"even {key}={easy:g}, the most favourable end of the range, does not meet the SLA"
            if res.inconclusive:
                res.note = _UNDECIDED.format(key=key)
            return None
        if self.test(hard):
            res.capacity = hard
            res.note = f"every value in [{self.L:g}, {self.H:g}] meets the SLA; the capacity is at least {hard:g}"
            return None
        return easy, hard

    def bracket(self, v: float, max_steps: int) -> tuple[float, float] | None:
        """From ``v``, double or halve (at most ``max_steps`` times) until the verdict flips:
        (passing, failing) values, or None with ``res`` final."""
        key, res = self.key, self.res
        good = bad = None
        if self.test(v):
            good = v
            for _ in range(max_steps):
                nv = self.grow(good, toward_hard=True)
                if nv == good:
                    break
                if not self.test(nv):
                    return good, nv
                good = nv
            res.capacity = good
            res.note = (
                f"{key}={good:g} still meets the SLA: the search stopped at "
                f"{'the end of the allowed range' if good in (self.L, self.H) else 'its step limit'}; "
                f"the capacity is at least {good:g}"
            )
            return None
        bad = v
        for _ in range(max_steps):
            nv = self.grow(bad, toward_hard=False)
            if nv == bad:
                break
            if self.test(nv):
                return nv, bad
            bad = nv
        res.best = self.cache[bad]
        res.note = f"no value of {key} tried meets the SLA (the most favourable tried: {bad:g})"
        if res.inconclusive:
            res.note = _UNDECIDED.format(key=key)
        return None

    def bisect(self, good: float, bad: float, step: float | None) -> None:
        """Bisect between ``good`` (passes) and ``bad`` (does not) until the bracket is ``step``
        wide (default 1 % of the value: finer, replications cannot tell neighbours apart)."""
        while True:
            rel = 0.01 * max(abs(good), abs(bad))
            tol = step if step is not None else (max(1, int(rel)) if self.kind is int else rel)
            if abs(bad - good) <= tol:
                break
            mid = self.cast((good + bad) / 2)
            if mid in (good, bad):
                break
            if self.test(mid):
                good = mid
            else:
                bad = mid
        inconc = [t.value for t in self.res.tried if t.verdict == "inconclusive"]
        self.res.capacity = good
        self.res.note = f"{self.key}={good:g} meets every SLA; {bad:g} does not" + (
            f" (inconclusive at {', '.join(f'{x:g}' for x in sorted(inconc))}: counted as not passing)"
            if inconc
            else ""
        )


_UNDECIDED = (
    "every value of {key} tried was inconclusive (no SLA verdict passed or failed): "
    "add replications (--replications) or lengthen run.duration_s"
)


def _estimated_start(key: str, scn: Scenario, current: Any) -> Any:
    """Where a load search without --low/--high starts: just under the load at which
    ``capsim estimate`` says the first stage saturates (the SLA usually breaks near it),
    rather than at the scenario's own value, which may be far off (50 shoppers when the
    answer is 1,000 took ~6 doublings, each a full simulation).  Other keys start at
    the scenario's value."""
    if key not in ("workload.users", "workload.rate_per_s"):
        return current
    try:
        est = estimate(scn)
    except CapsimError:  # e.g. a load that varies over time: start at the scenario's value
        return current
    sat = est.get("saturation") or {}
    value = sat.get("users" if key == "workload.users" else "rate_per_s")
    if value is None or not math.isfinite(value) or value <= 0:
        return current
    return 0.9 * value


#: The step-cost presets ``capacity_band`` searches with, fastest engine first.
BAND = ("published-fast", "published", "published-slow")
#: The serving-engine presets ``capacity_band(by="engine")`` searches with.
ENGINE_BAND = ("vllm", "trtllm", "sglang")


def capacity_band(
    source: str | Path | Mapping | Scenario,
    key: str,
    overrides: Mapping[str, Any] | None = None,
    on_preset: Callable[[str], None] | None = None,
    by: str = "efficiency",
    **kw: Any,
) -> dict[str, CapacityResult]:
    """:func:`capacity` once per step-cost assumption: ``by="efficiency"``, the LLM step costs of
    a fast, the central and a slow published engine (``llm.efficiency``: "2 replicas at the
    central estimate, 3 if the engine is as slow as a slow published one"); ``by="engine"``,
    each serving-engine preset (``llm.engine``: its scheduler and its step costs from its
    measured runs and kernels)."""
    ov = dict(overrides or {})
    field, presets, flag = {
        "efficiency": ("llm.efficiency", BAND, "--band"),
        "engine": ("llm.engine", ENGINE_BAND, "--engines"),
    }[by]
    if field in ov:
        raise ConfigError(f"{flag}: it sets {field} itself; drop --set {field}")
    out = {}
    for preset in presets:
        if on_preset is not None:
            on_preset(preset)
        out[preset] = capacity(source, key, {**ov, field: preset}, **kw)
    return out


def conservative(results: Mapping[str, CapacityResult]) -> str:
    """The preset whose answer asks the most: the smallest load held (``direction`` max) or the
    most resource needed (min); a preset with no answer first of all."""
    none = [p for p, r in results.items() if r.capacity is None]
    if none:
        return none[0]
    first = next(iter(results.values()))
    pick = min if first.direction == "max" else max
    return pick(results, key=lambda p: float(results[p].capacity))  # type: ignore[arg-type]
