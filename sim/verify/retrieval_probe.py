"""The retrieval service measured alone at one moment (:class:`RetrievalProbe`), two such probes
taken as one, how a one-core service's threads are then scheduled (:func:`scheduler_for`), and the
record of what a load's retrieval prediction was calibrated from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.spec.target import Target
from sim.verify.host import host_scheduler


def scheduler_for(target: Target, phases: dict[str, float] | None) -> dict[str, float] | None:
    """``retrieval.scheduler`` for a service on one core whose probes measured where a search's
    time goes (the loop's CPU, the part off the core), with this host's slice and tick
    (:mod:`sim.verify.host`); None otherwise (more cores, or a service that reports no CPU
    clock): the shared pool with the measured hand-back."""
    if target.retrieval is None or len(target.retrieval.cores) != 1 or not phases:
        return None
    host = host_scheduler()
    return {
        "loop_cpu_ms": round(max(0.0, phases["loop_cpu_ms"]), 4),
        "off_core_ms": round(max(0.0, phases["off_core_ms"]), 4),
        "slice_ms": host["slice_ms"],
        "tick_ms": host["tick_ms"],
    }


def spread(samples: Sequence[float] | np.ndarray) -> dict[str, float] | None:
    """P50, P95 and count of a sample, for the calibration record; None when empty."""
    if not len(samples):
        return None
    return {"p50": float(np.percentile(samples, 50)), "p95": float(np.percentile(samples, 95)), "n": len(samples)}


@dataclass(frozen=True)
class RetrievalProbe:
    """The retrieval service measured alone at one moment (see :mod:`sim.verify.probes`)."""

    alone_ms: np.ndarray  # one search at a time, back to back
    contention: tuple[float, ...]  # (1, c2, ..): slow-down with m searches in service at once
    wakeup_ms: list[tuple[float, float]]  # [(idle_ms, extra_ms), ..] for the first search after idle
    handback_ms: list[float] = field(default_factory=list)  # answers waiting for a held core, ms
    search_ms: float | None = None  # median of the service's own search time, one at a time
    loop_cpu_ms: float | None = None  # the service's CPU per request outside the search (loop_cpu_ms)

    @staticmethod
    def phases(a: RetrievalProbe | None, b: RetrievalProbe | None) -> dict[str, float] | None:
        """Where a search's time alone goes, from the probes that report it (averaged): the
        service's own search, its CPU outside the search (parse and answer: an event loop's
        work), and the rest, off the service's cores (the client and the wire): median
        latency alone less the other two: a one-core service's ``retrieval.scheduler``
        (:func:`scheduler_for`).  None when no probe has both."""
        got = [p for p in (a, b) if p is not None and p.search_ms is not None and p.loop_cpu_ms is not None]
        if not got:
            return None
        search = float(np.mean([p.search_ms for p in got]))
        loop = float(np.mean([p.loop_cpu_ms for p in got]))
        alone = float(np.mean([np.median(p.alone_ms) for p in got]))
        return {"search_ms": search, "loop_cpu_ms": loop, "off_core_ms": alone - search - loop}

    @staticmethod
    def pooled(
        a: RetrievalProbe | None, b: RetrievalProbe | None
    ) -> tuple[np.ndarray | None, tuple[float, ...], list[tuple[float, float]], list[float]]:
        """Two probes taken as one: the searches together, contention and wake-up averaged
        point by point (both probes use the same m and the same idle gaps), the hand-back
        samples together (none unless both have them)."""
        got = [p for p in (a, b) if p is not None]
        if not got:
            return None, (), [], []
        alone = np.concatenate([p.alone_ms for p in got])
        cont = tuple(float(np.mean(c)) for c in zip(*(p.contention for p in got)))
        wake = [(pts[0][0], float(np.mean([e for _, e in pts]))) for pts in zip(*(p.wakeup_ms for p in got))]
        back = [x for p in got for x in p.handback_ms] if all(p.handback_ms for p in got) else []
        return alone, cont, wake, back


def calibration_entry(
    alone_ms: np.ndarray,
    contention: Sequence[float],
    wakeup_ms: list[tuple[float, float]],
    handback_ms: Sequence[float],
    sides_p50: list[float],
    phases: dict[str, float] | None = None,
    scheduler: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What one load's retrieval prediction was calibrated from, for verify.json (``phases``:
    :meth:`RetrievalProbe.phases`; ``scheduler``: :func:`scheduler_for`'s, None where the
    shared pool and the hand-back stood for the service)."""
    return {
        "isolated_ms": spread(alone_ms),
        "contention": list(contention),
        "wakeup_ms": wakeup_ms,
        "handback_ms": spread(handback_ms),
        "p50_before_after_ms": sides_p50,
        "phases_ms": phases,
        "scheduler": scheduler,
    }
