"""Load that changes over time: the level of a profile at time ``t``.

Picture: a flash sale.  50 shoppers browse; at 10:00 a marketing email goes
out and over two minutes 1,000 are asking; five minutes later they drift
away.  A ``schedule`` profile says exactly that::

    steps: [{at_s: 0, value: 50}, {at_s: 120, value: 1000, ramp_s: 120}, {at_s: 540, value: 50, ramp_s: 60}]

The level is the number of shoppers (closed workload) or the arrival rate
per second (open workload).  A ``sinusoid`` is a daily cycle,
``mean + amplitude * cos(2 pi (t - peak_at_s) / period_s)``.

* Closed: user ``uid`` is present while ``uid < round(level(t))``; a user who
  is not present when their think time ends leaves and comes back (thinking
  first, like a new shopper) when the level next reaches them.
* Open: a non-homogeneous Poisson process by thinning (Lewis and Shedler,
  1979): candidates at the peak rate ``max level``, each kept with
  probability ``level(t) / max level``.
"""

from __future__ import annotations

import math

import numpy as np

from sim.spec.schema import ScheduleProfile, SinusoidProfile

Profile = ScheduleProfile | SinusoidProfile


def breakpoints(profile: ScheduleProfile) -> tuple[list[float], list[float]]:
    """The schedule as a piecewise-linear curve: times and levels (a step is two points at one time)."""
    s = profile.steps
    ts, vs = [0.0], [s[0].value]
    level = s[0].value
    for st in s:
        ts.append(st.at_s)
        vs.append(level)
        ts.append(st.at_s + st.ramp_s)
        vs.append(st.value)
        level = st.value
    return ts, vs


def level(profile: Profile, t: float | np.ndarray) -> np.ndarray:
    """The level at time(s) ``t`` (held at the last value after the schedule ends)."""
    tt = np.asarray(t, dtype=float)
    if isinstance(profile, SinusoidProfile):
        return profile.mean + profile.amplitude * np.cos(2 * math.pi * (tt - profile.peak_at_s) / profile.period_s)
    ts, vs = breakpoints(profile)
    # A step is two points at one time: before it the left value holds, after it the right one.
    held: np.ndarray = np.interp(tt, ts, vs)
    return held


def peak(profile: Profile, until_s: float) -> float:
    """The largest level over ``[0, until_s]`` (exact: a linear piece peaks at an end)."""
    if isinstance(profile, SinusoidProfile):
        if until_s >= profile.period_s:
            return profile.mean + profile.amplitude
        grid = np.linspace(0.0, until_s, 10_001)
        return float(np.max(level(profile, grid)))
    ts, vs = breakpoints(profile)
    return max([v for t, v in zip(ts, vs) if t <= until_s] + [float(level(profile, until_s))])


class Presence:
    """When closed user ``uid`` is present: ``uid < round(level(t))``, on a grid over the run."""

    def __init__(self, profile: Profile, until_s: float, resolution: int = 20_000):
        self.until_s = until_s
        self.t = np.linspace(0.0, until_s, resolution + 1)
        self.users = np.floor(level(profile, self.t) + 0.5).astype(np.int64)
        self.max_users = int(self.users.max())
        self._profile = profile

    def present(self, uid: int, t: float) -> bool:
        return uid < math.floor(float(level(self._profile, t)) + 0.5)

    def next_arrival(self, uid: int, t: float) -> float | None:
        """The first grid time after ``t`` at which ``uid`` is present (None: not before the end)."""
        i0 = int(np.searchsorted(self.t, t, side="right"))
        hit = np.flatnonzero(self.users[i0:] > uid)
        return float(self.t[i0 + hit[0]]) if hit.size else None
