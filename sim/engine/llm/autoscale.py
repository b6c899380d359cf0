"""A replica autoscaler: the LLM stage's fleet follows a signal through the day.

Picture a flash sale on one replica with ``max_replicas: 3`` and ``signal: queue,
target: 4``.  Every ``decision_interval_s`` the autoscaler reads how many requests wait
at the ready replicas.  At 10:02 twelve are waiting: it decides on ``ceil(12 / 4) = 3``
replicas and starts two.  From that instant they cost money (a cloud bills a GPU from
the moment it is handed over), but they serve nothing until their *cold start* is over::

    cold_start_s = weights_bytes / load_bytes_per_s + engine_start_s

the whole model's weights read from storage (``weights_from``: a catalog disk or
drive, or ``load_gbps``), then the engine's start (process, compilation, CUDA graphs,
API server; ``engine_start_s``).  When the sale ends the queue empties, but the fleet
shrinks only once every count recommended over the last ``cooldown_s`` is lower.

**The rule** is the Kubernetes Horizontal Pod Autoscaler's
(https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/),
with replicas still starting counted at zero load, as the HPA counts pods not yet ready
when it scales up.  At each decision, with ``n`` replicas provisioned (starting or
ready) and ``total`` the signal summed over the ready ones::

    ratio     = total / (target * n)
    recommend = n                      if |ratio - 1| <= tolerance
              = ceil(total / target)   otherwise,   clamped to [min_replicas, max_replicas]

    scale up   at once to ``recommend`` when it is above n;
    scale down to the largest recommendation of the last ``cooldown_s`` when that is below n.

The signals, per ready replica: ``queue`` the requests waiting for admission (vLLM's
``num_requests_waiting``), ``kv`` the share of its KV blocks in use, ``utilization`` the
share of its ``max_batch`` slots running.  Each is read at the decision instant.

**Replicas.** The stage holds ``max_replicas`` replica slots; a slot is off, starting,
ready or draining.  Only ready replicas are routed to (the router is rebuilt over them at
every change).  A scale-down first cancels replicas still starting (latest first), then
retires the ready replica with the fewest requests in flight: it takes no new request,
finishes those it holds, and stops costing when it is empty.  A slot still draining
cannot be started again; a scale-up with no slot free waits for the next decision, and so does
the part of a scale-up that would have more than ``max_starting`` replicas starting at once
(a cluster that admits so many new GPU nodes at a time; no limit by default).

**Cost.** A slot is paid from the decision that starts it until it is cancelled or has
drained; ``history`` holds the paid, provisioned and ready counts at every change, from
which :mod:`sim.analysis.autoscale` takes the GPU-hours inside the measurement window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
import simpy
from simpy.events import ProcessGenerator

from sim.engine.clock import later
from sim.registry import ROUTERS
from sim.spec.schema import LLMConfig

OFF, STARTING, READY, DRAINING = "off", "starting", "ready", "draining"
#: A recommendation ``total / target`` this close above an integer is that integer (float noise).
_EPS = 1e-9


def cold_start_s(weights_bytes: float, load_bytes_per_s: float, engine_start_s: float) -> float:
    """Seconds from the decision to start a replica until it serves::

    weights_bytes / load_bytes_per_s + engine_start_s
    """
    return weights_bytes / load_bytes_per_s + engine_start_s


def mean_count(history: Sequence[Sequence[float]], column: int, lo: float, hi: float) -> float:
    """Time-average over ``[lo, hi)`` of a step function given as rows ``(t, ...)``: column
    ``column`` of each row holds from its ``t`` to the next row's (the last one to ``hi``)::

    sum(value_i * |[t_i, t_i+1) & [lo, hi)|) / (hi - lo)
    """
    if hi <= lo:
        return 0.0
    total = 0.0
    for k, row in enumerate(history):
        a = max(lo, row[0])
        b = min(hi, history[k + 1][0] if k + 1 < len(history) else hi)
        if b > a:
            total += row[column] * (b - a)
    return total / (hi - lo)


def recommend(total: float, target: float, provisioned: int, tolerance: float, lo: int, hi: int) -> int:
    """The replica count the HPA rule recommends (see the module docstring)::

    n if |total / (target * n) - 1| <= tolerance, else ceil(total / target); clamped to [lo, hi]
    """
    ratio = total / (target * provisioned)
    want = provisioned if abs(ratio - 1.0) <= tolerance else math.ceil(total / target - _EPS)
    return max(lo, min(hi, want))


class _Drained:
    """A retired replica's ``on_outstanding`` hook: tells the autoscaler when it is empty."""

    __slots__ = ("owner", "slot")

    def __init__(self, owner: Autoscaler, slot: int):
        self.owner, self.slot = owner, slot

    def __call__(self, _index: int, outstanding: int) -> None:
        if outstanding == 0:
            self.owner._drained(self.slot)


class Autoscaler:
    """The autoscaler of one LLM stage (``stage.replicas`` are its ``max_replicas`` slots)."""

    def __init__(self, env: simpy.Environment, stage: Any, cfg: LLMConfig, rng: np.random.Generator):
        a = cfg.autoscale
        assert a is not None
        self.env, self.stage, self.cfg, self.a, self.rng = env, stage, cfg, a, rng
        self.slots = stage.replicas
        self.cold_start_s = cold_start_s(cfg.weights_bytes, a.load_bytes_per_s, a.engine_start_s)
        self.state = [READY if i < cfg.replicas else OFF for i in range(len(self.slots))]
        self._gen = [0] * len(self.slots)  # bumped on cancel: a cold start's end then finds it stale
        self._recent: deque[tuple[float, int]] = deque()  # (time, recommendation) within cooldown_s
        #: (time, paid, provisioned, ready) at the start and after every change.
        self.history: list[tuple[float, int, int, int]] = []
        #: (time, what, slot): "up" (decided), "ready", "cancel", "retire", "drained", "deferred".
        self.events: list[tuple[float, str, int]] = []
        #: (time, signal total, recommendation) of every decision.
        self.decisions: list[tuple[float, float, int]] = []
        self._note()
        self._route()
        env.process(self._loop())

    # -- counts
    def count(self, *states: str) -> int:
        return sum(1 for s in self.state if s in states)

    @property
    def provisioned(self) -> int:
        """Replicas starting or ready: the fleet the rule scales."""
        return self.count(STARTING, READY)

    @property
    def paid(self) -> int:
        """Replicas that cost money now: starting, ready or draining."""
        return self.count(STARTING, READY, DRAINING)

    def _note(self) -> None:
        row = (self.env.now, self.paid, self.provisioned, self.count(READY))
        if self.history and self.history[-1][0] == row[0]:
            self.history[-1] = row
        else:
            self.history.append(row)

    # -- routing
    def _route(self) -> None:
        """Rebuild the router over the ready replicas (in slot order)."""
        ready = [r for r, s in zip(self.slots, self.state) if s == READY]
        for r in ready:
            r.on_outstanding = None  # a slot that drained before kept its drain hook
        router = ROUTERS.load(self.cfg.router)(ready, self.rng)
        self.stage.router = router
        self.stage._pick = router.pick if len(ready) > 1 else (lambda only=ready[0]: only)

    # -- the signal
    def signal_total(self) -> float:
        """The signal summed over the ready replicas (see the module docstring)."""
        now = self.env.now
        ready = [r for r, s in zip(self.slots, self.state) if s == READY]
        kind = self.a.signal
        if kind == "queue":
            return float(sum(len(r.waiting) for r in ready))
        if kind == "kv":
            return float(sum(r.reserved_tokens_at(now) / (r.num_blocks * r.B) for r in ready))
        return float(sum(r.batch / r.max_batch for r in ready))

    # -- decisions
    def _loop(self) -> ProcessGenerator:
        while True:
            yield self.env.timeout(self.a.decision_interval_s)
            self.decide()

    def decide(self) -> None:
        a, now = self.a, self.env.now
        n = self.provisioned
        total = self.signal_total()
        want = recommend(total, a.target, n, a.tolerance, a.min_replicas, a.max_replicas)
        self.decisions.append((now, total, want))
        recent = self._recent
        recent.append((now, want))
        while recent and recent[0][0] < now - a.cooldown_s:
            recent.popleft()
        if want > n:
            self._scale_up(want - n)
        else:
            floor = max(w for _, w in recent)
            if floor < n:
                self._scale_down(n - floor)

    def _scale_up(self, k: int) -> None:
        now = self.env.now
        room = k if self.a.max_starting is None else max(0, self.a.max_starting - self.count(STARTING))
        for i, s in enumerate(self.state):
            if k == 0 or room == 0:
                break
            if s == OFF:
                room -= 1
                self.state[i] = STARTING
                self.events.append((now, "up", i))
                later(self.env, self.cold_start_s, self._started, (i, self._gen[i]))
                k -= 1
        for _ in range(k):
            self.events.append((now, "deferred", -1))
        self._note()

    def _started(self, arg: tuple[int, int]) -> None:
        i, gen = arg
        if self._gen[i] != gen or self.state[i] != STARTING:
            return  # cancelled while starting
        self.state[i] = READY
        self.events.append((self.env.now, "ready", i))
        self._route()
        self._note()

    def _scale_down(self, k: int) -> None:
        now = self.env.now
        starting = [i for i, s in enumerate(self.state) if s == STARTING]
        for i in sorted(starting, key=lambda j: (-self._decided_at(j), -j))[:k]:
            self.state[i] = OFF
            self._gen[i] += 1
            self.events.append((now, "cancel", i))
            k -= 1
        if k > 0:
            ready = [i for i, s in enumerate(self.state) if s == READY]
            keep = max(1, len(ready) - k)
            for i in sorted(ready, key=lambda j: (self.slots[j].outstanding(), -j))[: len(ready) - keep]:
                self.state[i] = DRAINING
                self.events.append((now, "retire", i))
                r = self.slots[i]
                r.on_outstanding = _Drained(self, i)
                if r.outstanding() == 0:
                    self._drained(i)
            self._route()
        self._note()

    def _decided_at(self, i: int) -> float:
        return max((t for t, what, s in self.events if s == i and what == "up"), default=0.0)

    def _drained(self, i: int) -> None:
        if self.state[i] != DRAINING:
            return
        self.state[i] = OFF
        self.slots[i].on_outstanding = None
        self.events.append((self.env.now, "drained", i))
        self._note()
        later(self.env, 0.0, self._forget_prefix, i)

    def _forget_prefix(self, i: int) -> None:
        """A drained replica's process is gone, and with it the shared prefix's KV blocks: the
        next replica started in the slot computes them again.  (Called once the replica's loop
        has gone idle, so its idle interval holds no blocks.)"""
        r = self.slots[i]
        if self.state[i] != OFF or r.order or r.waiting:
            return
        r.forget_cache()

    # -- results
    def timeseries(self) -> dict[str, np.ndarray]:
        """The history as arrays (step functions: each count holds from its time to the next)."""
        h = np.asarray(self.history, dtype=float).reshape(-1, 4)
        return {
            "autoscale_t_s": h[:, 0],
            "autoscale_paid": h[:, 1],
            "autoscale_provisioned": h[:, 2],
            "autoscale_ready": h[:, 3],
        }
