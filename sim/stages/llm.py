"""The LLM stage: GPU replicas running continuous batching over a paged KV cache.

Picture one replica (``tensor_parallel`` GPUs holding one copy of the model)
as a loop of forward *steps*, scheduled the way vLLM does:

* **Paged KV cache.**  The HBM that ``gpu_memory_utilization`` leaves after
  the weights (per GPU; with tensor parallelism every GPU holds its shard of
  the weights and of every KV block) is cut into blocks of
  ``kv_block_tokens`` tokens.  A sequence takes a block when its context
  grows past the last one, never up front.  When a step cannot get the
  blocks it needs, the *newest* running sequence is preempted (vLLM's
  recompute mode): its blocks are freed, it goes back to the front of the
  waiting queue, and when it is admitted again its prefill recomputes the
  prompt plus every token generated so far.
* **Prefill scheduling.**  A step processes at most ``max_batched_tokens``
  new tokens.  With ``chunked_prefill`` (vLLM's chunked-prefill policy) every
  running sequence first gets its decode token, then partial prefills and
  newly admitted prompts share what is left of the budget, a chunk each.
  Without it (vLLM's default V0 policy) a step either prefills whole prompts
  of newly admitted requests, or decodes; prefills go first.
* **Prefix caching.**  The shared system prompt's full blocks are computed by
  the first request that carries them, then held once by the replica: later
  admissions skip their prefill and share the blocks.
* Admission is first come first served: the head of the waiting queue, while
  ``max_batch``, the token budget and free blocks allow.  No request is
  admitted in a step that had to preempt.

A step costs what the roofline says (:mod:`sim.gpu_model`), per GPU::

    max(bytes / (bandwidth * bw_efficiency), flops / (peak * mfu)) + overhead + all-reduce

with bytes = weights / tp + KV of every sequence's context, flops = (2 *
params * new tokens + attention) / tp, and with tp > 1 two ring all-reduces
per layer of ``new_tokens * hidden * dtype_bytes``.

**Speed.** Between two events (an admission, a completion, running out of
blocks) the batch of decoders does not change and every context grows by one
token a step, so both roofline terms are linear in the step index and ``k``
steps have a closed-form time (:func:`sim.gpu_model.sum_max_linear`).  The
step at which the batch runs out of blocks has a closed form too
(:class:`DecodeBlocks`).  A replica therefore wakes the event loop once per
*epoch*, not once per token.  A request arriving mid-epoch with room to be
admitted wakes the replica, which ends the epoch at the boundary of the step
in progress: exactly where a step-by-step loop would have admitted it.
Steps that prefill are single events.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque

import numpy as np
import simpy

from .. import gpu_model as gm
from ..config import LLMConfig
from ..errors import ConfigError
from ..recorder import Bins

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3


class Sequence:
    """One request inside a replica.

    ``gen`` tokens generated so far; ``ctx`` tokens whose KV is computed;
    ``target`` the context a prefill must reach before the next token
    (prompt + gen: after a preemption the generated tokens are recomputed);
    ``shared`` the leading tokens whose blocks are the replica's shared prefix.
    """

    __slots__ = ("prompt", "output", "done", "req", "state", "shared", "target", "ctx", "gen", "held",
                 "base", "w", "heap_gen", "preemptions", "t_queued", "t_admitted", "t_first", "t_last",
                 "replica")

    def __init__(self, prompt: int, output: int, done: simpy.Event, req: object = None):
        self.prompt = prompt
        self.output = output
        self.done = done
        self.req = req
        self.state = WAITING
        self.shared = self.ctx = self.gen = self.held = self.base = self.w = 0
        self.target = prompt
        self.heap_gen = 0
        self.preemptions = 0
        self.t_queued = self.t_admitted = self.t_first = self.t_last = 0.0
        self.replica = -1


class StepCost:
    """Roofline coefficients of one replica (per GPU), precomputed once.

    ``time(new_tokens, ctx_tokens, attn_pairs)`` is one step; ``decode_lines``
    gives the linear coefficients of a pure-decode step as a function of the
    step offset ``j`` in an epoch.
    """

    def __init__(self, cfg: LLMConfig):
        m, g = cfg.model, cfg.gpu
        tp = cfg.tensor_parallel
        self.tp = tp
        self.params = m.param_count
        self.weights_bytes = cfg.weights_bytes / tp
        self.kv_per_token = cfg.kv_bytes_per_token_per_gpu
        self.inv_bw = 1.0 / (g.hbm_bandwidth_gbps * gm.GB * cfg.bw_efficiency)
        self.inv_peak = 1.0 / (g.peak_tflops * gm.TFLOP * cfg.mfu)
        self.flops_per_token = 2.0 * self.params / tp
        self.attn_coef = 4.0 * m.layers * m.heads * m.head_dim / tp
        self.overhead_s = cfg.step_overhead_ms / 1e3
        self.comm_per_token_s = gm.tp_allreduce_time_s(1.0, m.layers, m.hidden, cfg.dtype_bytes, tp,
                                                       g.interconnect_gbps)

    def work(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> tuple[float, float]:
        """(FLOPs, bytes) one GPU of the replica does and moves in one step."""
        return (self.flops_per_token * new_tokens + self.attn_coef * attn_pairs,
                self.weights_bytes + self.kv_per_token * ctx_tokens)

    def terms(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> tuple[float, float]:
        """(memory time, compute time) of one step, seconds."""
        flops, n_bytes = self.work(new_tokens, ctx_tokens, attn_pairs)
        return n_bytes * self.inv_bw, flops * self.inv_peak

    def time(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> float:
        mem, comp = self.terms(new_tokens, ctx_tokens, attn_pairs)
        return (mem if mem > comp else comp) + self.overhead_s + self.comm_per_token_s * new_tokens

    def memory_bound(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> bool:
        mem, comp = self.terms(new_tokens, ctx_tokens, attn_pairs)
        return mem >= comp

    def decode_lines(self, batch: int, ctx0: float) -> tuple[float, float, float, float, float]:
        """(a_mem, b_mem, a_comp, b_comp, const): step j of a decode epoch costs
        max(a_mem + b_mem j, a_comp + b_comp j) + const, where ``ctx0`` is the
        batch's total context after step 0 (it grows by ``batch`` per step)."""
        a_m = (self.weights_bytes + self.kv_per_token * ctx0) * self.inv_bw
        b_m = self.kv_per_token * batch * self.inv_bw
        a_c = (self.flops_per_token * batch + self.attn_coef * ctx0) * self.inv_peak
        b_c = self.attn_coef * batch * self.inv_peak
        return a_m, b_m, a_c, b_c, self.overhead_s + self.comm_per_token_s * batch

    @staticmethod
    def epoch_time(lines: tuple[float, float, float, float, float], k: int) -> float:
        a_m, b_m, a_c, b_c, const = lines
        return gm.sum_max_linear(a_m, b_m, a_c, b_c, k) + const * k

    @staticmethod
    def memory_bound_steps(lines: tuple[float, float, float, float, float], k: int) -> int:
        """How many of the first ``k`` decode steps are memory-bound."""
        a_m, b_m, a_c, b_c, _ = lines
        if k <= 0:
            return 0
        if b_m == b_c:
            return k if a_m >= a_c else 0
        x = min(max((a_c - a_m) / (b_m - b_c), -1.0), k + 1.0)  # mem >= comp on one side of x
        if b_m > b_c:
            first = min(max(int(np.ceil(x)), 0), k)
            return k - first
        return min(max(int(np.floor(x)) + 1, 0), k)


class DecodeBlocks:
    """Blocks held by a set of decoding sequences, as a function of the decode clock.

    Every decoding sequence ``i`` holds ``t_i(x) = e_i + x`` private tokens
    when the decode clock (decode steps run so far) reads ``x``, so together
    they hold::

        G(x) = sum_i ceil((e_i + x) / B)

    blocks.  Writing ``w_i = e_i + B - 1 = B v_i + u_i`` (``0 <= u_i < B``) and
    ``x = B m + r``, each term is ``v_i + m + [u_i >= B - r]``, so::

        G(x) = V + n m + #{i : u_i >= B - r}      (V = sum v_i)

    which needs only ``V``, ``n`` and a histogram of the ``u_i``: O(1) to add
    or remove a sequence, O(B) to evaluate, and :meth:`max_clock` finds the
    last clock at which ``G`` still fits a budget in O(B), so an epoch can end
    at the step where the batch would run out of blocks.
    """

    __slots__ = ("B", "n", "V", "hist")

    def __init__(self, block_tokens: int):
        self.B = block_tokens
        self.n = 0
        self.V = 0
        self.hist = [0] * block_tokens

    def add(self, w: int) -> None:
        v, u = divmod(w, self.B)
        self.n += 1
        self.V += v
        self.hist[u] += 1

    def remove(self, w: int) -> None:
        v, u = divmod(w, self.B)
        self.n -= 1
        self.V -= v
        self.hist[u] -= 1

    def blocks(self, x: int) -> int:
        """G(x): blocks the decoders hold at decode clock ``x``."""
        B = self.B
        m, r = divmod(x, B)
        return self.V + self.n * m + (sum(self.hist[B - r:]) if r else 0)

    def max_clock(self, cap: int) -> int:
        """The largest clock ``x`` with ``G(x) <= cap`` (needs ``n >= 1``)."""
        B, hist = self.B, self.hist
        m0, slack = divmod(cap - self.V, self.n)  # G(B m0) <= cap < G(B (m0 + 1)); slack in [0, n)
        r, c = 0, 0
        while r + 1 < B:
            c += hist[B - r - 1]
            if c > slack:
                break
            r += 1
        return B * m0 + r


class Replica:
    """One replica: ``tensor_parallel`` GPUs serving one copy of the model."""

    #: Longest decode epoch in steps (None: unbounded).  Tests set 1 to run the
    #: replica step by step and compare with the closed form.
    epoch_cap: int | None = None

    def __init__(self, env: simpy.Environment, index: int, cfg: LLMConfig, cost: StepCost,
                 window: tuple[float, float]):
        self.env = env
        self.index = index
        self.cost = cost
        self.max_batch = cfg.max_batch
        self.budget_tokens = cfg.max_batched_tokens
        self.chunked = cfg.chunked_prefill
        self.B = B = cfg.kv_block_tokens
        self.num_blocks = cfg.kv_blocks
        self.prefix_tokens = cfg.prefix_tokens
        self.prefix_ready = False
        self.pinned = 0  # blocks of the shared prefix, once computed
        self.waiting: deque[Sequence] = deque()
        self.order: dict[Sequence, None] = {}  # running sequences, in admission order
        self.prefilling: list[Sequence] = []
        self.prefill_blocks = 0
        self.dec = DecodeBlocks(B)
        self.S0 = 0  # sum of decoders' (ctx - clock): their total context is S0 + n * D
        self.D = 0  # decode clock
        self.heap: list[tuple[int, int, int, Sequence]] = []  # (finish clock, tie, heap_gen, seq)
        self._tie = itertools.count()
        self._wake: simpy.Event | None = None
        self._replan = False  # a step just preempted: the next boundary may admit, so stop there
        self._idle_since: float | None = 0.0
        self._epoch: tuple | None = None  # (start, lines, k, clock) of the decode epoch in progress
        # counters over time (totals inside the window below; any cut later, see Bins)
        self.bins = {k: Bins(*window) for k in
                     ("busy_s", "steps", "steps_memory_bound", "batch_step_sum", "kv_block_seconds", "preemptions")}
        env.process(self._loop())

    # -- views
    @property
    def batch(self) -> int:
        """Running sequences (decoding or prefilling)."""
        return len(self.order)

    def blocks_used(self) -> int:
        return self.pinned + self.prefill_blocks + self.dec.blocks(self.D)

    @property
    def reserved_tokens(self) -> int:
        """KV tokens in use (block-granular: blocks in use x kv_block_tokens)."""
        return self.blocks_used() * self.B

    def reserved_tokens_at(self, now: float) -> int:
        """KV tokens in use at ``now``, counting the steps of a decode epoch already done
        (the replica's own state only moves at epoch boundaries)."""
        if self._epoch is None:
            return self.reserved_tokens
        start, lines, k, D = self._epoch
        elapsed = now - start
        j = self._steps_to_cover(lines, k, elapsed) if elapsed > 0 else 0
        if j and self.cost.epoch_time(lines, j) > elapsed:
            j -= 1  # step j is still in progress
        return (self.pinned + self.prefill_blocks + self.dec.blocks(D + j)) * self.B

    def outstanding(self) -> int:
        return len(self.waiting) + len(self.order)

    # totals inside the measurement window
    busy_s = property(lambda self: self.bins["busy_s"].total)
    steps = property(lambda self: self.bins["steps"].total)
    steps_memory_bound = property(lambda self: self.bins["steps_memory_bound"].total)
    batch_step_sum = property(lambda self: self.bins["batch_step_sum"].total)
    kv_block_seconds = property(lambda self: self.bins["kv_block_seconds"].total)
    preemptions = property(lambda self: int(round(self.bins["preemptions"].total)))

    def close(self, now: float) -> None:
        """At the end of a run: count the idle interval still open (its pinned prefix blocks)."""
        if self._idle_since is not None:
            self.bins["kv_block_seconds"].add(self._idle_since, now, self.pinned * (now - self._idle_since))
            self._idle_since = now

    # -- routing
    def submit(self, seq: Sequence) -> None:
        seq.t_queued = self.env.now
        seq.replica = self.index
        was_empty = not self.waiting
        self.waiting.append(seq)
        w = self._wake
        if w is not None and was_empty and not w.triggered and len(self.order) < self.max_batch:
            w.succeed()

    # -- bookkeeping
    def _account(self, start: float, end: float, steps: int, mem_steps: int, batch: int,
                 blocks: float) -> None:
        """Work of ``steps`` steps over ``[start, end)``, spread evenly across it."""
        b = self.bins
        b["busy_s"].add(start, end, end - start)
        b["steps"].add(start, end, steps)
        b["steps_memory_bound"].add(start, end, mem_steps)
        b["batch_step_sum"].add(start, end, batch * steps)
        b["kv_block_seconds"].add(start, end, blocks * (end - start))

    def _add_decoder(self, seq: Sequence) -> None:
        D = self.D
        seq.state = DECODE
        seq.base = seq.ctx - D
        seq.w = seq.ctx - seq.shared - D + self.B - 1
        self.dec.add(seq.w)
        self.S0 += seq.base
        seq.heap_gen += 1
        heapq.heappush(self.heap, (D + seq.output - seq.gen, next(self._tie), seq.heap_gen, seq))

    def _remove_decoder(self, seq: Sequence) -> None:
        self.dec.remove(seq.w)
        self.S0 -= seq.base
        seq.heap_gen += 1
        seq.ctx = seq.base + self.D

    def _finish(self, seq: Sequence, now: float) -> None:
        seq.state = DONE
        seq.t_last = now
        del self.order[seq]
        seq.done.succeed(seq)

    def _finish_due(self, now: float) -> None:
        heap, D = self.heap, self.D
        while heap and heap[0][0] <= D:
            _, _, hg, seq = heapq.heappop(heap)
            if hg != seq.heap_gen or seq.state != DECODE:
                continue  # stale entry of a preempted sequence
            self._remove_decoder(seq)
            seq.gen = seq.output
            self._finish(seq, now)

    def _next_finish(self) -> int:
        heap = self.heap
        while heap[0][2] != heap[0][3].heap_gen or heap[0][3].state != DECODE:
            heapq.heappop(heap)
        return heap[0][0]

    def _preempt_newest(self) -> None:
        seq = next(reversed(self.order))
        if seq.state == DECODE:
            self._remove_decoder(seq)
            seq.gen = seq.ctx - seq.prompt + 1
        else:
            self.prefilling.remove(seq)
            self.prefill_blocks -= seq.held
        seq.held = 0
        seq.ctx = 0
        seq.target = seq.prompt + seq.gen
        seq.state = WAITING
        seq.preemptions += 1
        del self.order[seq]
        self.waiting.appendleft(seq)
        self.bins["preemptions"].add(self.env.now, self.env.now, 1)

    def _shared_for(self, seq: Sequence) -> int:
        p = self.prefix_tokens
        return p if (self.prefix_ready and seq.target > p) else 0

    def _check_fits(self, seq: Sequence, shared: int) -> None:
        """Alone on the replica (with the shared prefix's blocks held) a request must be able to
        finish, or it would be preempted and readmitted forever: say so instead."""
        room = self.num_blocks - self.prefix_tokens // self.B
        final_blocks = gm.blocks_for_tokens(seq.prompt + seq.output - 1 - shared, self.B)
        if final_blocks > room:
            raise ConfigError(
                f"llm: a request of {seq.prompt} prompt + {seq.output} output tokens needs {final_blocks} KV "
                f"blocks of {self.B} tokens but a replica holds {room}; raise "
                f"llm.tensor_parallel or llm.gpu_memory_utilization, use a bigger GPU or lower kv_dtype_bytes, "
                f"or shorten llm.prompt_tokens / llm.output_tokens"
            )

    def _admit(self, seq: Sequence, shared: int, now: float) -> None:
        self.waiting.popleft()
        if seq.preemptions == 0:
            seq.t_admitted = now
        seq.shared = shared
        seq.ctx = shared
        seq.held = 0
        seq.state = PREFILL
        self.order[seq] = None
        self.prefilling.append(seq)

    # -- scheduling
    def _plan_chunked(self, now: float):
        """Work of the next step with chunked prefill, or None for a decode-only step."""
        if not self.prefilling and not self.waiting:
            return None  # the decode epoch makes its own room
        B, dec = self.B, self.dec
        preempted = False
        while True:
            held = dec.blocks(self.D)
            free = self.num_blocks - self.pinned - self.prefill_blocks - held
            need = dec.blocks(self.D + 1) - held if dec.n else 0
            budget = self.budget_tokens - dec.n
            work = []
            for seq in self.prefilling:  # partial prefills, oldest first
                chunk = min(seq.target - seq.ctx, budget)
                if chunk <= 0:
                    break
                nb = gm.blocks_for_tokens(seq.ctx + chunk - seq.shared, B) - seq.held
                need += nb
                budget -= chunk
                work.append((seq, chunk, nb))
            if need <= free:
                break
            self._preempt_newest()
            preempted = True
        self._replan = preempted
        if not preempted:
            free -= need
            waiting, order = self.waiting, self.order
            while waiting and budget > 0 and len(order) < self.max_batch:
                head = waiting[0]
                shared = self._shared_for(head)
                chunk = min(head.target - shared, budget)
                nb = gm.blocks_for_tokens(chunk, B)
                self._check_fits(head, shared)
                if nb > free:
                    break
                self._admit(head, shared, now)
                work.append((head, chunk, nb))
                free -= nb
                budget -= chunk
        return work or None

    def _plan_whole(self, now: float):
        """Work of the next step without chunked prefill: whole prompts, or None to decode."""
        if not self.waiting:
            return None
        B, dec = self.B, self.dec
        free = self.num_blocks - self.pinned - self.prefill_blocks - dec.blocks(self.D)
        work = []
        tokens = 0
        waiting, order = self.waiting, self.order
        while waiting and len(order) < self.max_batch:
            head = waiting[0]
            shared = self._shared_for(head)
            chunk = head.target - shared
            nb = gm.blocks_for_tokens(chunk, B)
            self._check_fits(head, shared)
            if (work and tokens + chunk > self.budget_tokens) or nb > free:
                break
            self._admit(head, shared, now)
            work.append((head, chunk, nb))
            free -= nb
            tokens += chunk
        return work or None

    def _loop(self):
        env = self.env
        while True:
            if not self.order and not self.waiting:
                self._idle_since = env.now
                self._wake = env.event()
                yield self._wake
                self._wake = None
                self.bins["kv_block_seconds"].add(self._idle_since, env.now,
                                                  self.pinned * (env.now - self._idle_since))
                self._idle_since = None
            now = env.now
            if self.chunked:
                work = self._plan_chunked(now)
                advance = True
            else:
                work = self._plan_whole(now)
                advance = False
            if work is not None:
                yield from self._step(work, advance)
            elif self.dec.n:
                yield from self._decode_epoch()
            else:  # pragma: no cover - _admit raises first for a request that can never fit
                raise RuntimeError("LLM replica stalled with requests waiting and nothing running")

    def _step(self, work, advance: bool):
        """One step that prefills (and, with chunked prefill, decodes every decoder)."""
        env, cost, B = self.env, self.cost, self.B
        start = env.now
        n_dec = self.dec.n if advance else 0
        ctx = self.S0 + n_dec * (self.D + 1) if n_dec else 0
        new = n_dec
        pairs = float(ctx)
        for seq, chunk, nb in work:
            c0 = seq.ctx
            new += chunk
            ctx += c0 + chunk
            pairs += chunk * c0 + chunk * (chunk + 1) / 2.0
            seq.held += nb
            self.prefill_blocks += nb
        dt = cost.time(new, ctx, pairs)
        mem = cost.memory_bound(new, ctx, pairs)
        batch = len(self.order)
        blocks = self.pinned + self.prefill_blocks + self.dec.blocks(self.D + (1 if n_dec else 0))
        yield env.timeout(dt)
        end = env.now
        if n_dec:
            self.D += 1
        p = self.prefix_tokens
        for seq, chunk, nb in work:
            seq.ctx += chunk
            if p and not self.prefix_ready and seq.shared == 0 and seq.ctx >= p:
                # This sequence computed the system prompt: its full blocks become the replica's.
                self.prefix_ready = True
                self.pinned = p // B
                seq.shared = p
                held = gm.blocks_for_tokens(seq.ctx - p, B)
                self.prefill_blocks += held - seq.held
                seq.held = held
            if seq.ctx >= seq.target:
                self.prefilling.remove(seq)
                self.prefill_blocks -= seq.held
                seq.held = 0
                if seq.gen == 0:
                    seq.t_first = end
                seq.gen += 1
                if seq.gen >= seq.output:
                    self._finish(seq, end)
                else:
                    self._add_decoder(seq)
        if n_dec:
            self._finish_due(end)
        self._account(start, end, 1, int(mem), batch, blocks)

    def _decode_epoch(self):
        env, cost, dec = self.env, self.cost, self.dec
        D = self.D
        k = self._next_finish() - D
        cap = self.num_blocks - self.pinned - self.prefill_blocks
        # G(D + k) <= V + n ((D + k) // B + 1): when that fits, blocks cannot end the epoch.
        if dec.V + dec.n * ((D + k) // self.B + 1) > cap:
            k_blocks = dec.max_clock(cap) - D
            while k_blocks < 1:  # the next step needs a block that is not there: preempt the newest
                self._preempt_newest()
                self._replan = True
                if not dec.n:
                    return
                k = self._next_finish() - D
                k_blocks = dec.max_clock(cap) - D
            if k_blocks < k:
                k = k_blocks
        n = dec.n
        cap = 1 if self._replan else self.epoch_cap
        self._replan = False
        if cap is not None and k > cap:
            k = cap
        lines = cost.decode_lines(n, self.S0 + n * (D + 1))
        total = cost.epoch_time(lines, k)
        start = env.now
        steps = k
        self._epoch = (start, lines, k, D)
        if not self.waiting and len(self.order) < self.max_batch:  # an arrival could be admitted mid-epoch
            self._wake = env.event()
            yield env.any_of((env.timeout(total), self._wake))
            self._wake = None
            elapsed = env.now - start
            if elapsed < total:
                # Admission waits for the step in progress to end.
                j = self._steps_to_cover(lines, k, elapsed)
                if j < k:
                    t_j = cost.epoch_time(lines, j)
                    if t_j > elapsed:
                        yield env.timeout(t_j - elapsed)
                    steps = j
                else:
                    yield env.timeout(total - elapsed)
        else:
            yield env.timeout(total)
        end = env.now
        self._epoch = None
        g0 = dec.blocks(D + 1)
        self.D = D + steps
        g1 = dec.blocks(D + steps)
        self._account(start, end, steps, cost.memory_bound_steps(lines, steps), n,
                      self.pinned + (g0 + g1) / 2.0)
        if steps == k:
            self._finish_due(end)

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
        return min(reps, key=lambda r: r.outstanding())


class LLMStage:
    def __init__(self, env: simpy.Environment, cfg: LLMConfig, rng: np.random.Generator,
                 window: tuple[float, float]):
        self.env = env
        self.cost = StepCost(cfg)
        self.replicas = [Replica(env, i, cfg, self.cost, window) for i in range(cfg.replicas)]
        self.router = Router(self.replicas, cfg.router, rng)
        self.kv_blocks = cfg.kv_blocks
        self.kv_capacity_tokens = cfg.kv_blocks * cfg.kv_block_tokens

    def submit(self, prompt: int, output: int, req: object = None) -> simpy.Event:
        done = self.env.event()
        self.router.pick().submit(Sequence(prompt, output, done, req))
        return done
