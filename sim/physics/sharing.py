"""How much slower a search runs while others run beside it.

A pool of ``workers`` CPU workers on ``cpu_cores`` cores: with ``n`` searches
in service, ``m = min(n, cpu_cores)`` of them run at a time, so the ``n``
share the cores in time (``n / m``), and each is ``contention(n)`` times
slower than that alone would make it: memory bandwidth and caches shared
between cores, and where ``n`` exceeds the cores, what sharing one costs
beyond the time slices (context switches, a lock or an interpreter lock
handed between threads)::

    stretch(n) = contention(n) * n / min(n, cores)

``contention`` is measured with ``n = 1..K`` searches running back to back at
once against one alone (``contention(1) = 1``): ``capsim calibrate retrieval
--threads 1,2,...`` (one worker per core) or ``capsim verify``'s probe of a
live service (``n`` up to its workers), each measured stretch divided by
``n / min(n, cores)``.  Between measured counts it is linear; above ``K`` the
last two points' line continues (contention does not stop growing where the
measurement stopped) up to ``max(K, cores)``, and is held there: beyond the
cores more searches only slice the same cores thinner.

The simulator applies it exactly (processor sharing with a rate that depends
on the number running, :class:`sim.engine.pool.WorkerPool`): every search
holds its remaining work in seconds-alone, which drains at ``1 / stretch(n)``
per second, and when ``n`` changes every running search's finish time is
recomputed.  Two searches of 1 s alone on one core, the second starting at
0.5 s: the first finishes at 1.5 s, the second at 2.0 s.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence


def contention_at(m: int, contention: Sequence[float]) -> float:
    """The slowdown with ``m >= 1`` searches running at once (see the module text).

    ``contention = (1, 1.2)``: 1.0 at 1, 1.2 at 2, 1.4 at 3 (the line continued).
    """
    if m < 1:
        raise ValueError("m must be >= 1")
    k = len(contention)
    if k == 0:
        return 1.0
    if m <= k:
        return float(contention[m - 1])
    if k == 1:
        return float(contention[0])
    slope = max(0.0, float(contention[-1]) - float(contention[-2]))
    return float(contention[-1]) + slope * (m - k)


def stretch_factors(workers: int, cpu_cores: int | None, contention: Sequence[float] = ()) -> list[float]:
    """``[stretch(0), stretch(1), ..., stretch(workers)]`` (``stretch(0) = 1``, unused).

    4 workers on 2 cores, no contention: ``[1, 1, 1, 1.5, 2]``; with ``contention = (1, 1.2)``
    (measured to 2 = the cores, then held): ``[1, 1, 1.2, 1.8, 2.4]``; 2 workers on 1 core with
    ``contention = (1, 1.15)`` (two threads sharing one core cost 15 % more than the slices):
    ``[1, 1, 2.3]``.
    """
    cores = cpu_cores or workers
    top = max(len(contention), cores)
    out = [1.0]
    for n in range(1, workers + 1):
        out.append(contention_at(min(n, top), contention) * n / min(n, cores))
    return out


def contention_from_stretch(stretch: Sequence[float], cores: int) -> tuple[float, ...]:
    """Measured stretches at ``n = 1..K`` at once (mean time over the mean alone) -> contention.

    One core, two at once taking 2.3x: ``(1, 1.15)``.  Values below 1 (noise) read as 1."""
    return tuple(max(1.0, float(s) * min(n, cores) / n) for n, s in enumerate(stretch, start=1))


def check_contention(contention: Sequence[float], key: str) -> str | None:
    """A one-line problem with a contention list, or None."""
    if not contention:
        return None
    if abs(float(contention[0]) - 1.0) > 1e-9:
        return f"{key}[0] must be 1 (the service time is that of a search alone), got {contention[0]!r}"
    bad = [c for c in contention if not (float(c) >= 1.0 and float(c) < 1e6)]
    if bad:
        return f"{key}: every slowdown must be >= 1 (running beside others is never faster), got {bad[0]!r}"
    return None


def wakeup_after(wakeup_s: float | Sequence[tuple[float, float]], idle_s: float) -> float:
    """Extra work of a search that finds the pool idle for ``idle_s``: a constant, or linear
    between ``(idle, extra)`` points, from nothing at no idle time to the first point and
    flat beyond the last (a vCPU that slept longer wakes slower, its caches colder).
    Points ``[(0.001, 0.0004), (0.03, 0.0012)]``: 0.0008 after 15.5 ms idle, 0.0002
    after 0.5 ms."""
    if isinstance(wakeup_s, (int, float)):
        return float(wakeup_s)
    pts = sorted(wakeup_s)
    if idle_s <= pts[0][0]:
        return float(pts[0][1]) * max(0.0, idle_s) / pts[0][0]
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if idle_s <= x1:
            return float(y0 + (y1 - y0) * (idle_s - x0) / (x1 - x0))
    return float(pts[-1][1])
