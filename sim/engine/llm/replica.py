"""The LLM stage: GPU replicas running continuous batching over a paged KV cache.

Picture one replica (``tensor_parallel`` GPUs holding one copy of the model)
as a loop of forward *steps*, scheduled the way vLLM does:

* **Paged KV cache.**  The HBM that ``gpu_memory_utilization`` leaves after
  the weights (per GPU; with tensor parallelism every GPU holds its shard of
  the weights and of every KV block) is cut into blocks of
  ``kv_block_tokens`` tokens, one of which is vLLM's null block that no
  request holds (``LLMConfig.kv_blocks_usable``).  A sequence takes a block
  when its context grows past the last one, never up front.  When a step
  cannot get the blocks it needs, the *newest* running sequence is preempted
  (vLLM's recompute mode): its blocks are freed, it goes back to the front of
  the waiting queue, and when it is admitted again its prefill recomputes the
  prompt plus every token generated so far.
* **Prefill scheduling.**  A step processes at most ``max_batched_tokens``
  new tokens.  With ``chunked_prefill`` (vLLM's chunked-prefill policy) every
  running sequence first gets its decode token, then partial prefills and
  newly admitted prompts share what is left of the budget, a chunk each.
  Without it (vLLM's default V0 policy) a step either prefills whole prompts
  of newly admitted requests, or decodes; prefills go first.
* **Prefix caching.**  The shared system prompt's full blocks are computed by
  the first request that carries them, then held once by the replica: later
  admissions skip their prefill and share the blocks.  As in vLLM, a freed
  full block keeps its KV until another request needs the block
  (:class:`~sim.engine.llm.kv.CachedFree`: never-cached free blocks go first,
  then cached ones, freed longest ago first, a request's last block first):
  it counts as free, the system prompt stays cached while no request holds
  it, and a preempted request finds its own blocks that are still cached and
  recomputes only the rest.  capsim knows no other shared content, so the
  blocks of finished requests are never hit again.
* Admission is first come first served: the head of the waiting queue, while
  ``max_batch`` and the token budget allow and the free blocks hold its whole
  prompt (with chunked prefill only the first chunk's blocks are taken, but
  the rest must be free: vLLM V1's ``scheduler_reserve_full_isl``).  No
  request is admitted in a step that had to preempt.

A step costs what the roofline says (:mod:`sim.physics.gpu`), per GPU::

    max(bytes / (bandwidth * bw_efficiency), flops / (peak * mfu)) + overhead + all-reduce

with bytes = weights / tp + KV of every sequence's context, flops = (2 *
params * new tokens + attention) / tp, and with tp > 1 two ring all-reduces
per layer of ``new_tokens * hidden * dtype_bytes``.

**Speed.** Between two events (an admission, a completion, running out of
blocks) the batch of decoders does not change and every context grows by one
token a step, so both roofline terms are linear in the step index and ``k``
steps have a closed-form time (:func:`sim.physics.gpu.sum_max_linear`).  The
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
from collections.abc import Callable
from typing import NamedTuple

import simpy

from sim.engine.clock import Then, Waits, later, sleep, spawn
from sim.engine.llm.kv import CachedFree, DecodeBlocks
from sim.engine.records import Bins
from sim.errors import ConfigError
from sim.physics.gpu import DecodeLines, StepCost, attention_pairs, blocks_for_tokens, kv_misfit
from sim.registry import SCHEDULERS
from sim.spec.schema import LLMConfig

WAITING, PREFILL, DECODE, DONE = 0, 1, 2, 3
#: Owner of the shared system prompt's cached blocks in :class:`CachedFree`.
PREFIX = "system prompt"


class Generation:
    """One request inside a replica.

    ``gen`` tokens generated so far; ``ctx`` tokens whose KV is computed;
    ``target`` the context a prefill must reach before the next token
    (prompt + gen: after a preemption the generated tokens are recomputed);
    ``shared`` the leading tokens whose blocks are the replica's shared prefix;
    ``kv_in`` the tokens whose KV arrives computed from elsewhere (a disaggregated deployment's
    prefill replica, :mod:`sim.engine.llm.disagg`), taken on admission without computing them.
    """

    __slots__ = (
        "base",
        "ctx",
        "done",
        "gen",
        "heap_gen",
        "held",
        "kv_in",
        "output",
        "preemptions",
        "prompt",
        "replica",
        "req",
        "shared",
        "state",
        "t_admitted",
        "t_first",
        "t_last",
        "t_queued",
        "target",
        "w",
    )

    def __init__(self, prompt: int, output: int, done: simpy.Event | Then, req: object = None):
        self.prompt = prompt
        self.output = output
        self.done: simpy.Event | Then | None = done  # None once answered
        self.req = req
        self.state = WAITING
        self.shared = self.ctx = self.gen = self.held = self.base = self.w = self.kv_in = 0
        self.target = prompt
        self.heap_gen = 0
        self.preemptions = 0
        self.t_queued = self.t_admitted = self.t_first = self.t_last = 0.0
        self.replica = -1


class StepLine(NamedTuple):
    """One line of a replica's step log: ``steps`` steps from ``start_s`` (1 unless a decode
    epoch runs several), the tokens each running sequence computes in each (keyed by the
    sequence's ``req``, in running order: admission order, a readmitted sequence last), the KV
    blocks held while they run, and the sequences preempted to make room for them."""

    start_s: float
    steps: int
    tokens: dict[object, int]
    blocks: int
    preempted: tuple[object, ...]


def _wake_at_end(wake: simpy.Event) -> None:
    """A decode epoch's end: succeed the replica's wake event unless an arrival already did."""
    if not wake.triggered:
        wake.succeed()


class Replica:
    """One replica: ``tensor_parallel`` GPUs serving one copy of the model."""

    #: Longest decode epoch in steps (None: unbounded).  Tests set 1 to run the
    #: replica step by step and compare with the closed form.
    epoch_cap: int | None = None
    #: A list to append a :class:`StepLine` to for every step (every epoch), or None.  Tests
    #: set one on a replica to follow its scheduler step by step.
    step_log: list[StepLine] | None = None

    def __init__(self, env: simpy.Environment, index: int, cfg: LLMConfig, cost: StepCost, window: tuple[float, float]):
        self.env = env
        self.index = index
        self.cost = cost
        self.max_batch = cfg.max_batch
        self.budget_tokens = cfg.max_batched_tokens
        self.scheduler = SCHEDULERS.load(cfg.scheduler)
        # Whether a request may be admitted past a waiting one (then any arrival may end an epoch).
        self._passes = bool(getattr(self.scheduler, "ADMITS_PAST_WAITING", False))
        self.B = B = cfg.kv_block_tokens
        self.num_blocks = cfg.kv_blocks_usable  # the pool less vLLM's null block
        self.prefix_tokens = cfg.prefix_tokens
        self.pinned = 0  # blocks of the shared prefix while running sequences hold them
        self.sharers = 0  # running sequences that hold them
        self.cached = CachedFree()  # free blocks that still hold KV a request can hit
        self.caching = cfg.prefix_caching_enabled  # else a freed block keeps nothing
        self.waiting: deque[Generation] = deque()
        self.order: dict[Generation, None] = {}  # running sequences, in admission order
        # Called with (index, outstanding) whenever a request joins or leaves the replica:
        # a router that keeps its own view of the load (least outstanding) hooks in here.
        self.on_outstanding: Callable[[int, int], object] | None = None
        self._outstanding = 0
        self.prefilling: list[Generation] = []
        self.prefill_blocks = 0
        self.dec = DecodeBlocks(B)
        self.S0 = 0  # sum of decoders' (ctx - clock): their total context is S0 + n * D
        self.D = 0  # decode clock
        self.heap: list[tuple[int, int, int, Generation]] = []  # (finish clock, tie, heap_gen, seq)
        self._tie = itertools.count()
        self._wake: simpy.Event | None = None
        self.replan = False  # a step just preempted: the next boundary may admit, so stop there
        self._preempted: list[object] = []  # since the last step_log line
        self._idle_since: float | None = 0.0
        self._epoch: tuple[float, DecodeLines, int, int] | None = (
            None  # (start, lines, k, clock) of the decode epoch in progress
        )
        # counters over time (totals inside the window below; any cut later, see Bins)
        self.bins = {
            k: Bins(*window)
            for k in ("busy_s", "steps", "steps_memory_bound", "batch_step_sum", "kv_block_seconds", "preemptions")
        }
        self._step_bins = tuple(
            self.bins[k] for k in ("busy_s", "steps", "steps_memory_bound", "batch_step_sum", "kv_block_seconds")
        )
        spawn(env, self._loop())

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
        return self._outstanding

    # totals inside the measurement window
    busy_s = property(lambda self: self.bins["busy_s"].total)
    steps = property(lambda self: self.bins["steps"].total)
    steps_memory_bound = property(lambda self: self.bins["steps_memory_bound"].total)
    batch_step_sum = property(lambda self: self.bins["batch_step_sum"].total)
    kv_block_seconds = property(lambda self: self.bins["kv_block_seconds"].total)
    preemptions = property(lambda self: round(self.bins["preemptions"].total))

    def close(self, now: float) -> None:
        """At the end of a run: count the idle interval still open (its pinned prefix blocks)."""
        if self._idle_since is not None:
            self.bins["kv_block_seconds"].add(self._idle_since, now, self.pinned * (now - self._idle_since))
            self._idle_since = now

    # -- routing
    def submit(self, seq: Generation) -> None:
        seq.t_queued = self.env.now
        seq.replica = self.index
        was_empty = not self.waiting
        self.waiting.append(seq)
        self._outstanding += 1
        if self.on_outstanding is not None:
            self.on_outstanding(self.index, self._outstanding)
        w = self._wake
        if w is not None and (was_empty or self._passes) and not w.triggered and len(self.order) < self.max_batch:
            w.succeed()

    # -- bookkeeping
    def _account(self, start: float, end: float, steps: int, mem_steps: int, batch: int, blocks: float) -> None:
        """Work of ``steps`` steps over ``[start, end)``, spread evenly across it."""
        Bins.add_all(
            self._step_bins,
            start,
            end,
            (end - start, steps, mem_steps, batch * steps, blocks * (end - start)),
        )

    def _add_decoder(self, seq: Generation) -> None:
        D = self.D
        seq.state = DECODE
        seq.base = seq.ctx - D
        seq.w = seq.ctx - seq.shared - D + self.B - 1
        self.dec.add(seq.w)
        self.S0 += seq.base
        seq.heap_gen += 1
        heapq.heappush(self.heap, (D + seq.output - seq.gen, next(self._tie), seq.heap_gen, seq))

    def _remove_decoder(self, seq: Generation) -> None:
        self.dec.remove(seq.w)
        self.S0 -= seq.base
        seq.heap_gen += 1
        seq.ctx = seq.base + self.D

    def _release(self, seq: Generation, owner: Generation | None) -> None:
        """``seq``'s blocks are freed (it finished, or was preempted: ``owner`` is then ``seq``,
        which can hit them again): its full blocks stay cached, the shared prefix's too once no
        running sequence holds them (freed last: the most recent)."""
        if self.caching:
            self.cached.push(owner, (seq.ctx - seq.shared) // self.B)
        if seq.shared:
            self.sharers -= 1
            if not self.sharers:
                self.cached.push(PREFIX, self.pinned)
                self.pinned = 0

    def forget_cache(self) -> None:
        """The engine restarted (an autoscaler's new replica in this slot): no KV is cached, the
        shared prefix included.  Only between runs of the replica's loop: nothing may hold blocks."""
        assert not self.order and not self.waiting and not self.sharers, "a running replica keeps its cache"
        self.cached = CachedFree()
        self.pinned = 0

    def _finish(self, seq: Generation, now: float) -> None:
        self._release(seq, None)
        seq.state = DONE
        seq.t_last = now
        del self.order[seq]
        self._outstanding -= 1
        if self.on_outstanding is not None:
            self.on_outstanding(self.index, self._outstanding)
        done, seq.done = seq.done, None  # the event holds the sequence as its value: no cycle back
        assert done is not None  # a sequence finishes once
        done.succeed(seq)

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

    def preempt_newest(self) -> None:
        seq = next(reversed(self.order))
        if seq.state == DECODE:
            self._remove_decoder(seq)
            seq.gen = seq.ctx - seq.prompt + 1
        else:
            self.prefilling.remove(seq)
            self.prefill_blocks -= seq.held
        self._release(seq, seq)
        seq.held = 0
        seq.ctx = 0
        seq.target = seq.prompt + seq.gen
        seq.state = WAITING
        seq.preemptions += 1
        del self.order[seq]
        self.waiting.appendleft(seq)
        self.bins["preemptions"].add(self.env.now, self.env.now, 1)
        if self.step_log is not None:
            self._preempted.append(seq.req)

    def prefix_cached(self) -> int:
        """Blocks of the shared prefix with their KV: held, or cached free and not evicted."""
        return self.pinned or self.cached.held_by(PREFIX)

    def hits_for(self, seq: Generation) -> tuple[int, int]:
        """Tokens a waiting request finds cached, as vLLM's prefix-cache lookup does it
        (``KVCacheManager.get_computed_blocks``: the longest run of full blocks whose KV is
        cached, at most ``num_tokens - 1`` tokens): ``(shared, own)``, the shared prefix's
        tokens, then those of its own blocks a preemption freed that are not evicted yet
        (counted only when they follow the same prefix they followed before)."""
        if seq.kv_in:  # handed over from a prefill replica: no lookup, no shared prefix
            return 0, seq.kv_in
        B = self.B
        limit = (seq.target - 1) // B
        shared = min(self.prefix_cached(), limit) * B
        own = self.cached.held_by(seq)
        if own and seq.shared == shared:
            return shared, min(own, limit - shared // B) * B
        return shared, 0

    def touched_blocks(self, shared: int) -> int:
        """Free blocks a request admitted with ``shared`` prefix tokens takes back besides its
        own: the prefix's when no running sequence holds them."""
        return self.cached.held_by(PREFIX) if shared and not self.pinned else 0

    def check_fits(self, seq: Generation, shared: int) -> None:
        """Alone on the replica (with the shared prefix's blocks held) a request must be able to
        finish, or it would be preempted and readmitted forever: say so instead."""
        why = kv_misfit(seq.prompt, seq.output, shared, self.prefix_tokens, self.num_blocks, self.B)
        if why is not None:
            raise ConfigError(why)

    def admit(self, seq: Generation, shared: int, own: int, now: float) -> None:
        """Run ``seq`` from the waiting queue's head, with ``shared`` prefix tokens and ``own``
        tokens of its own blocks found cached (:meth:`hits_for`)."""
        self.waiting.popleft()
        if seq.preemptions == 0:
            seq.t_admitted = now
        if shared:
            if not self.pinned:
                self.pinned = self.cached.take(PREFIX)
            self.sharers += 1
        own_blocks = own // self.B
        if seq.kv_in:  # the handed-over KV lands in free blocks (the partial last one is the step's)
            seq.kv_in = 0
        elif own_blocks:
            self.cached.take(seq)
        else:
            self.cached.disown(seq)
        seq.shared = shared
        seq.ctx = shared + own
        seq.held = own_blocks
        self.prefill_blocks += own_blocks
        seq.state = PREFILL
        self.order[seq] = None
        self.prefilling.append(seq)

    def _loop(self) -> Waits:
        env = self.env
        while True:
            if not self.order and not self.waiting:
                self._idle_since = env.now
                self._wake = env.event()
                yield self._wake
                self._wake = None
                self.bins["kv_block_seconds"].add(self._idle_since, env.now, self.pinned * (env.now - self._idle_since))
                self._idle_since = None
            now = env.now
            work = self.scheduler.plan(self, now)
            if work is not None:
                yield from self._step(work, self.scheduler.DECODES_WITH_PREFILL)
            elif self.dec.n:
                yield from self._decode_epoch()
            else:  # pragma: no cover - admit raises first for a request that can never fit
                raise RuntimeError("LLM replica stalled with requests waiting and nothing running")

    def _step(self, work: list[tuple[Generation, int, int]], advance: bool) -> Waits:
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
            pairs += attention_pairs(chunk, c0)
            seq.held += nb
            self.prefill_blocks += nb
        dt = cost.time(new, ctx, pairs, n_dec + len(work), n_dec)
        mem = cost.memory_bound(new, ctx, pairs)
        batch = len(self.order)
        blocks = self.pinned + self.prefill_blocks + self.dec.blocks(self.D + (1 if n_dec else 0))
        if self.step_log is not None:
            chunks = {seq: chunk for seq, chunk, _ in work}
            tokens = {s.req: chunks.get(s, 1) for s in self.order if s in chunks or (n_dec and s.state == DECODE)}
            self._log(start, 1, tokens, blocks)
        yield sleep(env, dt)
        end = env.now
        if n_dec:
            self.D += 1
        p = self.prefix_tokens
        for seq, chunk, _ in work:
            seq.ctx += chunk
            if seq.shared < p <= seq.ctx and self.prefix_cached() < p // B:
                # This sequence computed the system prompt: its full blocks become the replica's.
                self.cached.disown(PREFIX)
                if not seq.shared:
                    self.sharers += 1
                self.pinned = p // B
                seq.shared = p
                held = blocks_for_tokens(seq.ctx - p, B)
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

    def _epoch_steps(self, D: int) -> int | None:
        """Steps the next decode epoch may run: to the next finish, fewer where the KV blocks run
        out (preempting the newest until one step fits); None when nothing is left to decode."""
        dec = self.dec
        k = self._next_finish() - D
        cap = self.num_blocks - self.pinned - self.prefill_blocks
        # G(D + k) <= V + n ((D + k) // B + 1): when that fits, blocks cannot end the epoch.
        if dec.V + dec.n * ((D + k) // self.B + 1) > cap:
            k_blocks = dec.max_clock(cap) - D
            while k_blocks < 1:  # the next step needs a block that is not there: preempt the newest
                self.preempt_newest()
                self.replan = True
                if not dec.n:
                    return None
                k = self._next_finish() - D
                k_blocks = dec.max_clock(cap) - D
            k = min(k, k_blocks)
        return k

    def _decode_epoch(self) -> Waits:
        env, cost, dec = self.env, self.cost, self.dec
        D = self.D
        k_fit = self._epoch_steps(D)
        if k_fit is None:
            return
        k = k_fit
        n = dec.n
        cap = 1 if self.replan else self.epoch_cap
        self.replan = False
        if cap is not None and k > cap:
            k = cap
        lines = cost.decode_lines(n, self.S0 + n * (D + 1))
        total = cost.epoch_time(lines, k)
        start = env.now
        steps = k
        self._epoch = (start, lines, k, D)
        if self.step_log is not None:
            tokens = {s.req: 1 for s in self.order if s.state == DECODE}
            self._log(start, k, tokens, self.pinned + self.prefill_blocks + dec.blocks(D + 1))
        # an arrival could be admitted mid-epoch
        if (not self.waiting or self._passes) and len(self.order) < self.max_batch:
            # Wait for the epoch's end or an admissible arrival, whichever comes first: the
            # end's timer succeeds the same wake event an arrival would (no Condition event).
            wake = self._wake = env.event()
            later(env, total, _wake_at_end, wake)
            yield wake
            self._wake = None
            elapsed = env.now - start
            if elapsed < total:
                # Admission waits for the step in progress to end.
                j = self._steps_to_cover(lines, k, elapsed)
                if j < k:
                    t_j = cost.epoch_time(lines, j)
                    if t_j > elapsed:
                        yield sleep(env, t_j - elapsed)
                    steps = j
                else:
                    yield sleep(env, total - elapsed)
        else:
            yield sleep(env, total)
        end = env.now
        self._epoch = None
        if self.step_log is not None and steps != k:  # an admission cut the epoch short
            self.step_log[-1] = self.step_log[-1]._replace(steps=steps)
        g0 = dec.blocks(D + 1)
        self.D = D + steps
        g1 = dec.blocks(D + steps)
        self.cached.evict_to(self.num_blocks - self.pinned - self.prefill_blocks - g1)
        self._account(start, end, steps, cost.memory_bound_steps(lines, steps), n, self.pinned + (g0 + g1) / 2.0)
        if steps == k:
            self._finish_due(end)

    def _log(self, start: float, steps: int, tokens: dict[object, int], blocks: int) -> None:
        assert self.step_log is not None
        self.step_log.append(StepLine(start, steps, tokens, blocks, tuple(self._preempted)))
        self._preempted.clear()

    def _steps_to_cover(self, lines: DecodeLines, k: int, elapsed: float) -> int:
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
