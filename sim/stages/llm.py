"""The LLM stage: GPU replicas running continuous batching.

Picture one replica as a loop of forward *steps*.  Every step produces one
token for each running sequence; a step that also admits new requests runs
their prefill (the whole prompt) and so yields their first token.  At each
step boundary the replica admits waiting requests, first come first served,
while ``max_batch`` and the KV-cache memory left after the weights allow (each
admitted request reserves KV for its prompt plus its output).

A step costs what the roofline says (:mod:`sim.gpu_model`)::

    max(bytes / (bandwidth * bw_efficiency), flops / (peak * mfu)) + overhead

with bytes = weights + KV of every running sequence's context, flops =
2 * params * new tokens + attention.

**Speed.** Between an admission and the next completion the batch does not
change, and the context of every sequence grows by one token per step, so
both roofline terms are linear in the step index and the time of ``k`` steps
has a closed form (:func:`sim.gpu_model.sum_max_linear`).  A replica therefore
wakes the event loop once per *epoch* (until the next sequence finishes or a
new request can be admitted), not once per token.  If a request arrives in
the middle of an epoch and there is room for it, the replica wakes, finds the
boundary of the step in progress, and admits the request there: exactly when
a step-by-step loop would have.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Callable

import numpy as np
import simpy

from .. import gpu_model as gm
from ..config import LLMConfig


class Sequence:
    """One request inside a replica."""

    __slots__ = ("prompt", "output", "admit_step", "finish_step", "done", "t_queued",
                 "t_admitted", "t_first", "t_last", "replica", "req")

    def __init__(self, prompt: int, output: int, done: simpy.Event, req: object = None):
        self.prompt = prompt
        self.output = output
        self.done = done
        self.req = req
        self.admit_step = self.finish_step = -1
        self.t_queued = self.t_admitted = self.t_first = self.t_last = 0.0
        self.replica = -1


class StepCost:
    """Roofline coefficients of one replica, precomputed once.

    ``time(new_tokens, ctx_tokens, attn_pairs)`` is one step; ``decode`` gives
    the linear coefficients of a pure-decode step as a function of the step
    offset ``j`` in an epoch.
    """

    def __init__(self, cfg: LLMConfig):
        m, g = cfg.model, cfg.gpu
        self.params = m.param_count
        self.weights_bytes = cfg.weights_bytes
        self.kv_per_token = cfg.kv_bytes_per_token
        self.inv_bw = 1.0 / (g.hbm_bandwidth_gbps * gm.GB * cfg.bw_efficiency)
        self.inv_peak = 1.0 / (g.peak_tflops * gm.TFLOP * cfg.mfu)
        self.attn_coef = 4.0 * m.layers * m.heads * m.head_dim
        self.overhead_s = cfg.step_overhead_ms / 1e3

    def time(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> float:
        mem = (self.weights_bytes + self.kv_per_token * ctx_tokens) * self.inv_bw
        comp = (2.0 * self.params * new_tokens + self.attn_coef * attn_pairs) * self.inv_peak
        return (mem if mem > comp else comp) + self.overhead_s

    def memory_bound(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> bool:
        mem = (self.weights_bytes + self.kv_per_token * ctx_tokens) * self.inv_bw
        comp = (2.0 * self.params * new_tokens + self.attn_coef * attn_pairs) * self.inv_peak
        return mem >= comp

    def decode_lines(self, batch: int, ctx0: float) -> tuple[float, float, float, float]:
        """(a_mem, b_mem, a_comp, b_comp): step j of a decode epoch costs
        max(a_mem + b_mem j, a_comp + b_comp j) + overhead, where ``ctx0`` is
        the batch's total context at j = 0 and it grows by ``batch`` per step."""
        a_m = (self.weights_bytes + self.kv_per_token * ctx0) * self.inv_bw
        b_m = self.kv_per_token * batch * self.inv_bw
        a_c = (2.0 * self.params * batch + self.attn_coef * ctx0) * self.inv_peak
        b_c = self.attn_coef * batch * self.inv_peak
        return a_m, b_m, a_c, b_c

    def epoch_time(self, lines: tuple[float, float, float, float], k: int) -> float:
        a_m, b_m, a_c, b_c = lines
        return gm.sum_max_linear(a_m, b_m, a_c, b_c, k) + self.overhead_s * k

    def memory_bound_steps(self, lines: tuple[float, float, float, float], k: int) -> int:
        """How many of the first ``k`` decode steps are memory-bound."""
        a_m, b_m, a_c, b_c = lines
        if b_m == b_c:
            return k if a_m >= a_c else 0
        x = (a_c - a_m) / (b_m - b_c)  # mem >= comp on one side of x
        if b_m > b_c:
            first = min(max(int(np.ceil(x)), 0), k)
            return k - first
        return min(max(int(np.floor(x)) + 1, 0), k)


class Replica:
    """One GPU replica (``tensor_parallel`` GPUs serving one copy of the model)."""

    def __init__(self, env: simpy.Environment, index: int, cfg: LLMConfig, cost: StepCost,
                 window: tuple[float, float]):
        self.env = env
        self.index = index
        self.max_batch = cfg.max_batch
        self.kv_capacity_tokens = int(cfg.kv_budget_bytes // cost.kv_per_token)
        self.cost = cost
        self.waiting: deque[Sequence] = deque()
        self.running: list[tuple[int, int, Sequence]] = []  # heap by finish step
        self._tie = itertools.count()
        self.batch = 0
        self.ctx_offset = 0  # sum(prompt_i - admit_step_i): context at step s = ctx_offset + batch * s
        self.reserved_tokens = 0
        self.step = 0
        self._wake: simpy.Event | None = None
        self._window = window
        # counters inside the measurement window
        self.busy_s = 0.0
        self.steps = 0
        self.steps_memory_bound = 0
        self.batch_step_sum = 0  # sum over steps of batch size
        self.kv_token_seconds = 0.0  # integral of reserved KV tokens over busy time
        env.process(self._loop())

    # -- routing helpers
    def outstanding(self) -> int:
        return len(self.waiting) + self.batch

    def submit(self, seq: Sequence) -> None:
        seq.t_queued = self.env.now
        seq.replica = self.index
        self.waiting.append(seq)
        if self._wake is not None and not self._wake.triggered and self._can_admit():
            self._wake.succeed()

    # -- internals
    def _can_admit(self) -> bool:
        if not self.waiting or self.batch >= self.max_batch:
            return False
        head = self.waiting[0]
        return self.reserved_tokens + head.prompt + head.output <= self.kv_capacity_tokens

    def _account(self, start: float, end: float, steps: int, mem_steps: int, batch: int) -> None:
        lo, hi = self._window
        a, b = max(start, lo), min(end, hi)
        if b <= a:
            return
        frac = (b - a) / (end - start) if end > start else 1.0
        self.busy_s += b - a
        n = steps * frac
        self.steps += n
        self.steps_memory_bound += mem_steps * frac
        self.batch_step_sum += batch * n
        self.kv_token_seconds += self.reserved_tokens * (b - a)

    def _finish_through(self, step: int, now: float) -> None:
        run = self.running
        while run and run[0][0] <= step:
            _, _, seq = heapq.heappop(run)
            seq.t_last = now
            self.batch -= 1
            self.ctx_offset -= seq.prompt - seq.admit_step
            self.reserved_tokens -= seq.prompt + seq.output
            seq.done.succeed(seq)

    def _loop(self):
        env, cost = self.env, self.cost
        while True:
            if not self.batch and not self.waiting:
                self._wake = env.event()
                yield self._wake
                self._wake = None
            if self._can_admit():
                yield from self._prefill_step()
                continue
            if not self.batch:
                # The head of the queue can never fit (bigger than all KV memory).
                head = self.waiting.popleft()
                raise RuntimeError(
                    f"request of {head.prompt + head.output} tokens exceeds the replica's KV capacity "
                    f"of {self.kv_capacity_tokens} tokens"
                )
            yield from self._decode_epoch()

    def _prefill_step(self):
        env, cost, s = self.env, self.cost, self.step
        admitted: list[Sequence] = []
        now = env.now
        while self._can_admit():
            seq = self.waiting.popleft()
            self.reserved_tokens += seq.prompt + seq.output
            seq.t_admitted = now
            admitted.append(seq)
            self.batch += 1  # counted now so max_batch holds
        decoders = self.batch - len(admitted)
        dec_ctx = self.ctx_offset + decoders * s
        prompt_sum = sum(q.prompt for q in admitted)
        pairs = dec_ctx + sum(q.prompt * (q.prompt + 1) / 2 for q in admitted)
        new_tokens = prompt_sum + decoders
        ctx = dec_ctx + prompt_sum
        dt = cost.time(new_tokens, ctx, pairs)
        mem = cost.memory_bound(new_tokens, ctx, pairs)
        for seq in admitted:
            seq.admit_step = s
            seq.finish_step = s + seq.output - 1
            self.ctx_offset += seq.prompt - s
            heapq.heappush(self.running, (seq.finish_step, next(self._tie), seq))
        yield env.timeout(dt)
        end = env.now
        self._account(now, end, 1, int(mem), self.batch)
        for seq in admitted:
            seq.t_first = end
        self.step = s + 1
        self._finish_through(s, end)

    def _decode_epoch(self):
        env, cost, s = self.env, self.cost, self.step
        k = self.running[0][0] - s + 1
        lines = cost.decode_lines(self.batch, self.ctx_offset + self.batch * s)
        total = cost.epoch_time(lines, k)
        start = env.now
        room = self.batch < self.max_batch  # could an arrival be admitted mid-epoch?
        if room:
            self._wake = env.event()
            timer = env.timeout(total)
            yield env.any_of((timer, self._wake))
            self._wake = None
            elapsed = env.now - start
            if elapsed < total:
                # Admission waits for the step in progress to end.
                j = self._steps_to_cover(lines, k, elapsed)
                if j < k:
                    t_j = cost.epoch_time(lines, j)
                    if t_j > elapsed:
                        yield env.timeout(t_j - elapsed)
                    self._account(start, env.now, j, cost.memory_bound_steps(lines, j), self.batch)
                    self.step = s + j
                    return
                yield env.timeout(total - elapsed)
        else:
            yield env.timeout(total)
        self._account(start, env.now, k, cost.memory_bound_steps(lines, k), self.batch)
        self.step = s + k
        self._finish_through(s + k - 1, env.now)

    def _steps_to_cover(self, lines, k: int, elapsed: float) -> int:
        """Smallest j in [1, k] whose first j steps take at least ``elapsed``."""
        lo, hi = 1, k
        et = self.cost.epoch_time
        while lo < hi:
            mid = (lo + hi) // 2
            if et(lines, mid) >= elapsed:
                hi = mid
            else:
                lo = mid + 1
        return lo


class Router:
    """Sends each request to a replica: least outstanding, round robin or random."""

    def __init__(self, replicas: list[Replica], policy: str, rng: np.random.Generator):
        self.replicas = replicas
        self.policy = policy
        self._rr = itertools.cycle(range(len(replicas)))
        self._rng = rng

    def pick(self) -> Replica:
        reps = self.replicas
        if len(reps) == 1:
            return reps[0]
        if self.policy == "round_robin":
            return reps[next(self._rr)]
        if self.policy == "random":
            return reps[int(self._rng.integers(len(reps)))]
        return min(reps, key=Replica.outstanding)


class LLMStage:
    def __init__(self, env: simpy.Environment, cfg: LLMConfig, rng: np.random.Generator,
                 window: tuple[float, float]):
        self.env = env
        self.cost = StepCost(cfg)
        self.replicas = [Replica(env, i, cfg, self.cost, window) for i in range(cfg.replicas)]
        self.router = Router(self.replicas, cfg.router, rng)
        capacity = self.replicas[0].kv_capacity_tokens
        self.kv_capacity_tokens = capacity

    def submit(self, prompt: int, output: int, req: object = None) -> simpy.Event:
        done = self.env.event()
        self.router.pick().submit(Sequence(prompt, output, done, req))
        return done
