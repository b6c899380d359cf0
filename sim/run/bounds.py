"""Bounds before work: the memory and time a run will take, estimated from the scenario.

``capsim run``, ``sweep`` and ``capacity`` call :func:`check_bounds` before the
first replication.  A run whose estimated peak memory exceeds the memory
available now (or ``--max-memory``) is refused with one line naming the key
that drives it, and so is one estimated at more than :data:`REFUSE_TIME_S` (30
days) of work, which would never finish; above half of the memory, or above
:data:`WARN_TIME_S` of estimated work, a warning goes to stderr and the run goes
ahead.

The model is deliberately simple, linear in what grows:

* where per-request records are kept (``run.records``; by default only for a
  folder's records.parquet), every request of every replication of every
  point is held as a record row until its point is written
  (``BYTES_PER_REQUEST`` including the in-flight objects); otherwise each
  replication holds one streaming digest (``BYTES_PER_DIGEST``, whatever its
  number of requests) until the run ends;
* every closed-loop user is a SimPy process, every GPU replica a scheduler
  with its KV accounting, every distinct query key a popularity entry, in
  each worker process at once (``BYTES_PER_USER``, ``BYTES_PER_REPLICA``,
  ``BYTES_PER_KEY``).

The constants were measured with ``tracemalloc`` on ``tests/data/rag_small.yaml``
(Python 3.11, x86-64): 731 B per request, 9.8 kB per user (4,000 users at the
same request rate), 25 kB per replica (200 replicas), 24 B per key (2 M keys),
and 66 us of CPU per request on one core; a digest's counters came to 2.4 MB
(``nbytes``) for the flagship at 1,000 shoppers, its widest case here.  They are rounded up: the estimate is
meant to stop runs that are orders of magnitude too big, not to predict RSS.
Requests per replication are ``rate_per_s x duration_s`` for open arrivals and
``users / mean think time x duration_s`` for a closed loop (an upper bound:
a saturated stage lowers it).  A load that changes over time is counted at its
peak: a ``profile``'s largest level over the run stands for ``users`` or
``rate_per_s``, and a trace counts the rows that arrive before ``duration_s``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.engine.load_profile import peak
from sim.engine.partition import check_partitions
from sim.engine.pipeline import retrieval_service_distribution
from sim.engine.routing import routing_setup
from sim.errors import CapsimError
from sim.run.executors import default_jobs
from sim.spec.scenario import Point
from sim.spec.schema import Scenario
from sim.spec.trace import load_trace

BYTES_PER_REQUEST = 1_000
BYTES_PER_DIGEST = 4_000_000
BYTES_PER_USER = 12_000
BYTES_PER_REPLICA = 32_000
BYTES_PER_KEY = 32
BYTES_PER_PROCESS = 150_000_000  # a worker's interpreter with numpy, pandas, scipy, simpy loaded
CPU_S_PER_REQUEST = 70e-6
CPU_S_PER_USER = 300e-6
WARN_FRACTION = 0.5
WARN_TIME_S = 3600.0
REFUSE_TIME_S = 30 * 86400.0
_DEFAULTS = {
    "run.duration_s": 600.0,
    "run.replications": 5,
    "run.max_replications": 30,
    "workload.users": 100,
    "workload.rate_per_s": 50.0,
    "workload.profile": 100.0,
    "workload.trace.path": 30_000.0,  # requests per replication: 50 per second for 600 s
}


def available_memory_bytes() -> int:
    """Memory available to a new process now (``MemAvailable`` on Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 34


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """``"8G"``, ``"500M"``, ``"1.5GiB"``, ``"1000000"`` -> bytes (powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise CapsimError(f"{flag} {text!r}: expected a size such as 8G, 500M or 2000000 (bytes)")
    value = float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2).lower() or "_")
    if value < 1:
        raise CapsimError(f"{flag} {text!r}: must be at least 1 byte")
    return int(value)


def _mean_think_s(scn: Scenario) -> float:
    t = scn.workload.think_s
    if t is None:
        return 0.0
    for name in ("mean", "value"):
        v = getattr(t, name, None)
        if isinstance(v, (int, float)):
            return float(v)
    low, high = getattr(t, "low", None), getattr(t, "high", None)
    if isinstance(low, (int, float)) and isinstance(high, (int, float)):
        return (low + high) / 2
    return 1.0


@dataclass
class Estimate:
    """Peak memory and CPU time of a run, with the terms that make them up."""

    requests: float = 0.0
    memory_bytes: float = 0.0
    cpu_s: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)  # memory by driving key
    request_keys: dict[str, Any] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)  # the largest value of a key the schema cannot name

    def driver(self) -> str:
        """The key that drives the memory estimate, with its value."""
        key = max(self.terms, key=lambda k: self.terms[k])
        return key if key != "requests" else self.requests_driver()

    def requests_driver(self) -> str:
        """The key that drives the number of requests (and the work)."""
        # requests grow with several keys: name the one furthest above its default
        ratios = {k: float(v) / _DEFAULTS[k] for k, v in self.request_keys.items() if k in _DEFAULTS}
        return max(ratios, key=lambda k: ratios[k]) if ratios else "run.duration_s"


def estimate_run(points: Sequence[Point], jobs: int = 1, keep_records: bool = True) -> Estimate:
    """Estimate the peak memory and CPU time of running ``points`` (see the module doc);
    ``keep_records``: the records are kept where ``run.records`` is unset."""
    est = Estimate()
    worker: dict[str, float] = {}
    biggest = -1.0
    for p in points:
        scn = p.scenario
        run = scn.run
        reps = run.max_replications if run.target_precision is not None else run.replications
        reps = max(reps, run.replications)
        span = run.duration_s
        w = scn.workload
        level = peak(w.profile, span) if w.profile is not None else None
        users = float(level if level is not None and w.mode == "closed" else (w.users or 0))
        keys: dict[str, Any]
        if w.mode == "trace":
            assert w.trace is not None  # the schema requires it in trace mode
            arrivals = load_trace(w.trace.path, w.trace.format, w.trace.time_scale).arrival_s
            per_rep = float(np.searchsorted(arrivals, span, side="left"))
            keys = {"workload.trace.path": per_rep}
        elif w.mode == "open":
            rate = float(level if level is not None else (w.rate_per_s or 0.0))
            keys = {"workload.profile" if level is not None else "workload.rate_per_s": rate}
            per_rep = rate * span
        else:
            per_rep = users / max(_mean_think_s(scn), 1e-3) * span
            keys = {"workload.profile" if level is not None else "workload.users": users}
        users_key = "workload.profile" if level is not None else "workload.users"
        if w.mode == "closed":
            est.values[users_key] = max(est.values.get(users_key, 0.0), users)
        keys["run.duration_s"] = span
        keys["run.max_replications" if run.target_precision is not None else "run.replications"] = reps
        n = per_rep * reps
        est.requests += n
        est.cpu_s += n * CPU_S_PER_REQUEST + users * CPU_S_PER_USER * reps
        kept = run.records if run.records is not None else keep_records
        if kept:
            est.terms["requests"] = est.terms.get("requests", 0.0) + n * BYTES_PER_REQUEST
        else:
            reps_key = "run.max_replications" if run.target_precision is not None else "run.replications"
            est.terms[reps_key] = est.terms.get(reps_key, 0.0) + reps * BYTES_PER_DIGEST
        if n >= biggest:
            biggest, est.request_keys = n, keys
        per = {
            users_key: users * BYTES_PER_USER if w.mode == "closed" else 0.0,
            "llm.replicas": scn.llm.replicas * BYTES_PER_REPLICA if getattr(scn.llm, "enabled", True) else 0.0,
            "workload.queries.distinct": w.queries.distinct * BYTES_PER_KEY,
        }
        for k, v in per.items():
            worker[k] = max(worker.get(k, 0.0), v)
    parallel = max(1, jobs)
    for k, v in worker.items():
        est.terms[k] = v * parallel
    est.memory_bytes = sum(est.terms.values()) + BYTES_PER_PROCESS * parallel
    est.cpu_s = est.cpu_s / parallel
    return est


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB" if x >= 1e8 else f"{x / 1e6:,.0f} MB"


def _duration(s: float) -> str:
    for unit, f in (("days", 86400), ("h", 3600), ("min", 60)):
        if s >= f:
            return f"{s / f:,.1f} {unit}"
    return f"{s:,.0f} s"


def check_bounds(
    points: Sequence[Point],
    max_memory: str | int | None = None,
    jobs: int | None = None,
    warn: Any = None,
    keep_records: bool = True,
) -> Estimate:
    """Refuse (one-line :class:`CapsimError`) a run whose estimated memory exceeds the limit;
    warn on stderr above half of it or above :data:`WARN_TIME_S` of work.  Reads every
    retrieval calibration the points use first, so a bad file is refused before any work.
    ``keep_records``: the records are kept where ``run.records`` is unset.  A point that
    cannot run as its ``run.partitions`` cells is refused here too."""
    check_partitions([p.scenario for p in points])
    check_calibrations(points)
    limit = parse_size(max_memory) if isinstance(max_memory, str) else max_memory
    flag = "--max-memory" if limit is not None else "available memory"
    limit = limit if limit is not None else available_memory_bytes()
    if jobs is None:
        jobs = default_jobs()
    est = estimate_run(
        points, jobs=min(jobs, max(1, sum(p.scenario.run.replications for p in points))), keep_records=keep_records
    )
    say = warn or (lambda msg: print(msg, file=sys.stderr))
    if est.memory_bytes > limit:
        key = est.driver()
        value = est.request_keys.get(key, est.values.get(key, _value(points, key)))
        raise CapsimError(
            f"{_said(key, value)}: the run would need about {_gb(est.memory_bytes)} of memory "
            f"({est.requests:,.3g} requests), more than the {_gb(limit)} of {flag}; "
            f"lower {key} (or raise --max-memory if the machine has the room)"
        )
    if est.cpu_s > REFUSE_TIME_S:
        key = est.requests_driver()
        value = est.request_keys.get(key, est.values.get(key, _value(points, key)))
        raise CapsimError(
            f"{_said(key, value)}: the run would take about {_duration(est.cpu_s)} of work "
            f"({est.requests:,.3g} requests), more than {_duration(REFUSE_TIME_S)}; lower {key}"
        )
    if est.memory_bytes > WARN_FRACTION * limit:
        say(f"warning: this run may use about {_gb(est.memory_bytes)} of the {_gb(limit)} of {flag}")
    if est.cpu_s > WARN_TIME_S:
        say(
            f"warning: this run is estimated at about {_duration(est.cpu_s)} of work "
            f"({est.requests:,.3g} requests); driven by {est.driver()}"
        )
    return est


def _said(key: str, value: float) -> str:
    return {
        "workload.trace.path": f"workload.trace.path: {value:,.0f} requests per replication",
        "workload.profile": f"workload.profile: a peak level of {value:g}",
    }.get(key, f"{key}={value:g}")


def check_calibrations(points: Sequence[Point]) -> None:
    """Build each point's retrieval service distribution and routing setup once: a
    calibration file that is unreadable, malformed, a FIFO or extrapolates to nonsense is a
    one-line error now, not mid-run (when a worker pool is already up)."""
    seen: set[tuple[Any, ...]] = set()
    for p in points:
        r = p.scenario.retrieval
        if r.enabled and r.service_ms is None:
            key: tuple[Any, ...] = (
                "retrieval",
                r.calibration,
                r.index,
                r.docs,
                r.dim,
                r.top_k,
                r.ef_search,
                r.nprobe,
                r.workers,
            )
            if key not in seen:
                seen.add(key)
                retrieval_service_distribution(p.scenario)
        g = p.scenario.routing
        if g.enabled or g.typed_variants:
            key = ("routing", g.calibration, g.enabled, g.typed_variants, g.impl, g.questions, g.threshold)
            if key not in seen:
                seen.add(key)
                routing_setup(p.scenario)


def _value(points: Sequence[Point], key: str) -> float:
    node: Any = points[0].scenario
    for part in key.split("."):
        node = getattr(node, part, None)
    return float(node) if isinstance(node, (int, float)) else float("nan")
