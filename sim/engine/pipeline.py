"""Wires the stages into the request lifecycle and runs one replication.

A request's path::

    arrival -> (routing queue -> edit-distance routing) -> cache lookup -> (miss) retrieval queue -> search -> LLM queue
            -> prefill (first token: TTFT) -> decode -> last token (e2e)

Every request is one generator process; every stage stamps its times on the
request, and the recorder turns finished requests into one flat row each.
"""

from __future__ import annotations

import gc
import itertools
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import simpy
from simpy.events import ProcessGenerator

from sim import distributions as D
from sim.engine.cache import LRUCache
from sim.engine.clock import Calendar, later, run_until
from sim.engine.digest import Digest, cell_edges, window_edges
from sim.engine.llm.autoscale import mean_count
from sim.engine.llm.disagg import DisaggStage
from sim.engine.llm.stage import LLMStage
from sim.engine.load_profile import Presence, level, peak
from sim.engine.pool import WorkerPool
from sim.engine.records import CHUNK_ROWS, Bins, Recorder
from sim.engine.routing import OFF, Utterances, routing_setup
from sim.engine.sched import SchedulerPool, scheduler_pool
from sim.engine.workload import Popularity, QueryKeys
from sim.errors import ConfigError
from sim.physics.retrieval import default_calibration_path, load_calibration
from sim.rng import parked, parked_many, stream
from sim.spec.schema import LLMConfig, PromptComposition, Scenario, build_distribution
from sim.spec.trace import load_trace

#: What :meth:`Model.monitor` samples, by name: lists while the run goes (per LLM replica a list
#: per sample), the autoscaler's arrays, and the KV capacity (a number).
Samples = dict[str, list[float] | list[int] | list[list[int]] | np.ndarray | int]


class RetrievalInfo(TypedDict, total=False):
    """Where the retrieval service times come from, as the summary writes it: ``source``
    (``retrieval.service_ms`` or the calibration file), the contention of searches at once,
    the mean, and from a calibration its recall and how the profile was found."""

    source: str
    contention: tuple[float, ...]
    recall: float | None
    extrapolated: bool
    interpolated: bool
    description: str
    mean_ms: float


def retrieval_service_distribution(scn: Scenario) -> tuple[D.Distribution, RetrievalInfo]:
    """Service time of one search in **seconds**, and what it came from.

    An explicit ``retrieval.service_ms`` wins; otherwise the calibration file
    (``retrieval.calibration`` or the one shipped with the package) supplies
    measured quantiles for the configured index, corpus and knobs.
    ``retrieval.overhead_ms`` is added either way.
    """
    r = scn.retrieval
    info: RetrievalInfo = {"contention": tuple(r.contention or ())}
    if r.service_ms is not None:
        base = build_distribution(r.service_ms)
        info["source"] = "retrieval.service_ms"
    else:
        path = r.calibration or str(default_calibration_path())
        cal = load_calibration(path)
        knobs: dict[str, Any] = dict(docs=r.docs, dim=r.dim, top_k=r.top_k, ef_search=r.ef_search, nprobe=r.nprobe)
        # With 1-thread and many-thread records: the search alone, slowed by the measured
        # contention of the searches actually running (sim.physics.sharing).  Without: the
        # record at the pool's worker count, for every search.
        measured = cal.contention(r.index, **knobs)
        prof = cal.profile(r.index, workers=1 if measured else r.workers, **knobs)
        base = D.Quantile(tuple(prof.probs), tuple(prof.values_ms))
        info = {
            "source": path,
            "recall": prof.recall,
            "extrapolated": prof.extrapolated,
            "interpolated": prof.interpolated,
            "description": prof.description + (_contention_note(measured) if measured else ""),
            "contention": tuple(r.contention) if r.contention is not None else measured,
        }
    overhead = build_distribution(r.overhead_ms)
    dist: D.Distribution = base if overhead.mean == 0 and overhead.variance == 0 else D.Sum((base, overhead))
    info["mean_ms"] = dist.mean
    return D.Scaled(dist, factor=1e-3), info


def _contention_note(c: tuple[float, ...]) -> str:
    return f"; contention {', '.join(f'{x:.3f}' for x in c)} with 1..{len(c)} searches at once"


class TokenCounts:
    """Prompt and output token counts for one request.

    Prompt parts are drawn with ``rng``, output lengths with ``output_rng``
    (default ``rng``): with separate streams the output lengths stay the same
    when ``retrieval.top_k`` changes how many document lengths a prompt draws.
    """

    def __init__(
        self,
        scn: Scenario,
        rng: np.random.Generator,
        block: int = 256,
        output_rng: np.random.Generator | None = None,
        build: Callable[[Any], D.Distribution] = build_distribution,
    ):
        llm = scn.llm
        self.off = not llm.enabled  # no LLM stage: no prompt to build, nothing drawn
        self.top_k = scn.retrieval.top_k if scn.retrieval.enabled else 0
        if isinstance(llm.prompt_tokens, PromptComposition):
            c = llm.prompt_tokens
            self.system = c.system_tokens
            self._doc = D.Sampler(build(c.doc_tokens), rng, block)
            self._question = D.Sampler(build(c.question_tokens), rng, block)
            self._prompt = None
        else:
            self._prompt = D.Sampler(build(llm.prompt_tokens), rng, block)
        self._output = D.Sampler(build(llm.output_tokens), output_rng or rng, block)

    def __call__(self) -> tuple[int, int]:
        if self.off:
            return 0, 0
        if self._prompt is not None:
            p = self._prompt()
        else:
            docs = self._doc.add_next(self.top_k)  # summed apart, then added: the same rounding as sum() over them
            p = self.system + docs + self._question()
        return max(1, round(p)), max(1, round(self._output()))


@dataclass
class Replication:
    """What one replication produced: its streaming digest, stage counters and, when kept
    (``run.records``), the flat per-request records (``None`` otherwise)."""

    replication: int
    kept: dict[str, np.ndarray] | None  # the records, when kept
    window_s: tuple[float, float]
    # Plain numbers, and per-stage Bins (totals taken after the warm-up cut by the summary).
    counters: dict[str, float | Bins] = field(default_factory=dict)
    # Sampled state (see Model.monitor): t_s, retrieval_queue, retrieval_busy, and per LLM
    # replica (arrays of shape samples x replicas) llm_waiting, llm_running, kv_tokens; and
    # kv_capacity_tokens, a number.
    timeseries: dict[str, np.ndarray | int] = field(default_factory=dict)
    # Histograms and counts by time cell (sim.engine.digest): every summary is computed from it.
    digest: Digest | None = None

    @property
    def records(self) -> dict[str, np.ndarray]:
        """The per-request records (column arrays by arrival); only when they were kept."""
        if self.kept is None:
            raise ConfigError(
                "run.records: the per-request records were not kept; set run.records: true "
                "(--set run.records=true) to keep one record per request"
            )
        return self.kept

    @property
    def has_records(self) -> bool:
        return self.kept is not None


class _Request:
    """One request's state as it moves through the stages (times in simulated seconds)."""

    __slots__ = (
        "g_service",
        "g_wait",
        "hit",
        "key",
        "on_done",
        "outcome",
        "output",
        "prompt",
        "question",
        "r_service",
        "r_wait",
        "t0",
        "t_cache",
        "t_first",
        "t_mark",
        "user",
    )

    def __init__(
        self,
        user: int,
        key: int,
        prompt: int,
        output: int,
        question: int,
        outcome: int,
        t0: float,
        on_done: Callable[[], object] | None,
    ):
        self.user, self.key, self.prompt, self.output = user, key, prompt, output
        self.question, self.outcome, self.t0, self.on_done = question, outcome, t0, on_done
        self.hit = False
        self.t_cache = self.r_wait = self.r_service = self.g_wait = self.g_service = 0.0
        self.t_first = self.t_mark = t0


class _Answered:
    """What the LLM calls with the finished sequence: ``finish(request, sequence)``."""

    __slots__ = ("finish", "r")

    def __init__(self, finish: Callable[[_Request, Any], None], r: _Request):
        self.finish, self.r = finish, r

    def __call__(self, seq: Any) -> None:
        self.finish(self.r, seq)


class _User:
    """A closed-loop user's streams, and the model's think and ask steps bound to this user."""

    __slots__ = ("_ask", "_think", "keys", "think", "tokens", "uid", "utter")

    def __init__(
        self,
        uid: int,
        think: D.Sampler,
        keys: QueryKeys,
        tokens: TokenCounts,
        utter: Utterances | None,
        model_think: Callable[[_User], None],
        model_ask: Callable[[_User], None],
    ):
        self.uid, self.think, self.keys, self.tokens, self.utter = uid, think, keys, tokens, utter
        self._think, self._ask = model_think, model_ask

    def ask(self, _event: object) -> None:  # the think timeout's callback
        self._ask(self)

    def think_again(self) -> None:  # the answer's on_done
        self._think(self)


def _llm_stage(
    env: simpy.Environment, llm: LLMConfig, rng: np.random.Generator, window: tuple[float, float]
) -> LLMStage | DisaggStage | None:
    """The LLM stage: one pool of replicas, or prefill and decode pools (``llm.disaggregated``)."""
    if not llm.enabled:
        return None
    return (LLMStage if llm.disaggregated is None else DisaggStage)(env, llm, rng, window)


class Model:
    """One replication's SimPy model of the whole pipeline."""

    def __init__(self, scn: Scenario, replication: int, records: bool | None = None, part: int = 0):
        """``records``: keep every request's record (default ``run.records``); the digest
        the summaries come from is kept either way.  ``part``: which cell of
        ``run.partitions`` this model is (``scn`` then holds one cell's share of the fleet,
        :func:`sim.engine.partition.cell_scenario`); its workload is split here."""
        self.scn = scn
        self.rep = replication
        self.part, self.parts = part, scn.run.partitions
        # The fleet's and open arrivals' streams are the cell's own; a shopper's are the shop's.
        self._cell = () if self.parts == 1 else (part,)
        self.env = env = simpy.Environment()
        run = scn.run
        warm = 0.0 if run.warmup_s == "auto" else float(run.warmup_s)
        self.window = (warm, float(run.duration_s))
        self.end_arrivals_s = float(run.duration_s)
        self.drain_s = run.drain_seconds
        keep = bool(run.records) if records is None else records
        self.digest = Digest(digest_edges(scn), float(run.duration_s) if run.warmup_s == "auto" else None)
        self.recorder = Recorder(replication, self.digest, keep)
        self._dists: dict[int, tuple[Any, D.Distribution]] = {}
        self.popularity = Popularity(scn.workload.queries)
        self.cache = LRUCache(scn.cache.capacity) if scn.cache.enabled else None
        self.cache_lookup_s = D.Sampler(D.Scaled(build_distribution(scn.cache.lookup_ms), 1e-3), self.stream("cache"))
        routing_dist, self.novel_share, self.routing_accuracy, self.routing_info = routing_setup(scn)
        self.routing_pool: WorkerPool | None = None
        if routing_dist is not None:
            self.routing_s = D.Sampler(routing_dist, self.stream("routing"))
            self.routing_pool = WorkerPool(env, scn.routing.workers, scn.routing.cpu_cores, self.window)
        self.novel_ids = itertools.count(-1, -1)
        self.pool, self.retrieval_info = self._retrieval_pool(scn)
        self.llm = _llm_stage(env, scn.llm, self.stream("router"), self.window)
        self.in_flight = 0
        self.started_in_window = 0
        self.calendar: Calendar | None = None  # where shoppers' think timers wait (many shoppers)
        self.scratch = np.random.Generator(np.random.PCG64(0))  # what parked streams draw through
        self.profile = scn.workload.profile
        self.presence = (
            Presence(self.profile, self.end_arrivals_s)
            if self.profile is not None and scn.workload.mode == "closed"
            else None
        )
        # 8 bytes (1 for a flag) a request, not a list of Python objects.
        self.started_s = array("d")
        self.lookup_t0 = array("d")
        self.lookup_hit = array("b")
        # The stages' callbacks, bound once (a bound method made per request costs time).
        self._cb_route, self._cb_routed = self._route, self._routed
        self._cb_looked_up, self._cb_search, self._cb_searched = self._looked_up, self._search, self._searched
        self._cb_finish = self._finish

    def _retrieval_pool(self, scn: Scenario) -> tuple[WorkerPool | SchedulerPool | None, RetrievalInfo]:
        """The retrieval workers (a worker pool, or an OS scheduler's run queue) and where their
        service times come from; (None, {}) without retrieval."""
        if not scn.retrieval.enabled:
            return None, {}
        env = self.env
        dist, info = retrieval_service_distribution(scn)
        self.retrieval_s = D.Sampler(dist, self.stream("retrieval"))
        rc = scn.retrieval
        handback = None
        if rc.handback_ms is not None:
            handback = D.Sampler(D.Scaled(build_distribution(rc.handback_ms), 1e-3), self.stream("retrieval_handback"))
        if rc.scheduler is None:
            return WorkerPool(
                env, rc.workers, rc.cpu_cores, self.window, info["contention"], rc.wakeup_s, handback
            ), info
        pool = scheduler_pool(
            env, rc.workers, self.window, rc.scheduler, self.stream("retrieval_ticks"), info["contention"], rc.wakeup_s
        )
        return pool, info

    def stream(self, purpose: str) -> np.random.Generator:
        """The stream for ``purpose`` of this replication (of this cell, in a partitioned run)."""
        return stream(self.scn.run.seed, self.rep, purpose, *self._cell)

    def shared(self, spec: Any) -> D.Distribution:
        """The distribution of ``spec`` (a part of this model's scenario), built once: every
        closed-loop user samples the same (immutable) think and token distributions."""
        held = self._dists.get(id(spec))
        if held is None or held[0] is not spec:
            held = self._dists[id(spec)] = (spec, build_distribution(spec))  # holding spec keeps its id unique
        return held[1]

    # ------------------------------------------------------------------ request
    def utterances(self, *purpose: int) -> Utterances | None:
        """The question -> cache key mapping for one stream (None when routing and variants are off)."""
        if self.routing_accuracy is None and self.novel_share == 0:
            return None
        rng = stream(self.scn.run.seed, self.rep, "utterance", *(purpose or self._cell))
        return Utterances(self.novel_share, self.routing_accuracy, self.scn.routing.questions, rng, self.novel_ids)

    def _count_started(self) -> None:
        self.digest.add_started(np.frombuffer(self.started_s, dtype=float))
        self.started_s = array("d")

    def _count_lookups(self) -> None:
        hit = np.frombuffer(self.lookup_hit, dtype=np.int8)
        self.digest.add_lookups(np.frombuffer(self.lookup_t0, dtype=float), hit)
        self.lookup_t0, self.lookup_hit = array("d"), array("b")

    def request(
        self,
        user: int,
        key: int,
        prompt: int,
        output: int,
        question: int = -1,
        outcome: int = OFF,
        on_done: Callable[[], object] | None = None,
    ) -> None:
        """Start one request for cache ``key`` (``question``: what was asked, default ``key``).

        A request is not a SimPy process: each stage schedules the next as a callback
        (a timer's callback, a free worker's hand-over, the LLM's answer), so a
        request costs one event per wait instead of a generator resumed at every step.
        ``on_done`` runs when its answer is complete.
        """
        now = self.env.now
        r = _Request(user, key, prompt, output, key if question < 0 else question, outcome, now, on_done)
        if self.window[0] <= now < self.window[1]:
            self.started_in_window += 1
        self.started_s.append(now)
        if len(self.started_s) >= CHUNK_ROWS:
            self._count_started()
        if self.routing_pool is not None:
            self.routing_pool.acquire(self._cb_route, r)
        else:
            self._lookup(r)

    def _route(self, r: _Request) -> None:  # a routing worker is free
        rpool = self.routing_pool
        assert rpool is not None
        r.t_mark = now = self.env.now
        r.g_wait = now - r.t0
        rpool.serve(self.routing_s(), self._cb_routed, r)

    def _routed(self, r: _Request) -> None:
        now = self.env.now
        assert self.routing_pool is not None
        self.routing_pool.release(r.t_mark, now)
        r.g_service = now - r.t_mark
        self._lookup(r)

    def _lookup(self, r: _Request) -> None:
        if self.cache is None:
            self._retrieve(r)
            return
        r.t_cache = t_cache = self.cache_lookup_s()
        if t_cache > 0:
            later(self.env, t_cache, self._cb_looked_up, r)
        else:
            self._looked_up(r)

    def _looked_up(self, r: _Request) -> None:
        assert self.cache is not None
        r.hit = self.cache.lookup(r.key)
        self.lookup_t0.append(r.t0)
        self.lookup_hit.append(r.hit)
        if len(self.lookup_t0) >= CHUNK_ROWS:
            self._count_lookups()
        self._retrieve(r)

    def _retrieve(self, r: _Request) -> None:
        pool = self.pool
        if pool is None or r.hit:
            self._generate(r)
            return
        r.t_mark = self.env.now
        pool.acquire(self._cb_search, r)

    def _search(self, r: _Request) -> None:  # a retrieval worker is free
        pool = self.pool
        assert pool is not None
        now = self.env.now
        r.r_wait = now - r.t_mark
        r.t_mark = now
        pool.serve(self.retrieval_s(), self._cb_searched, r)

    def _searched(self, r: _Request) -> None:
        now = self.env.now
        assert self.pool is not None
        self.pool.release(r.t_mark, now)
        r.r_service = now - r.t_mark
        if self.cache is not None:
            self.cache.insert(r.key)
        self._generate(r)

    def _generate(self, r: _Request) -> None:
        r.t_first = self.env.now
        if self.llm is None:
            self._finish(r, None)
            return
        self.llm.submit(r.prompt, r.output, then=_Answered(self._cb_finish, r))

    def _finish(self, r: _Request, seq: Any) -> None:
        replica = preemptions = -1
        l_wait = prefill = decode = 0.0
        t_first = r.t_first
        if seq is not None:
            replica = seq.replica
            l_wait = seq.t_admitted - seq.t_queued
            prefill = seq.t_first - seq.t_admitted
            decode = seq.t_last - seq.t_first
            t_first = seq.t_first
            preemptions = seq.preemptions
        t0 = r.t0
        self.recorder.add(
            r.user,
            t0,
            r.key,
            r.hit,
            r.t_cache,
            r.r_wait,
            r.r_service,
            l_wait,
            prefill,
            decode,
            r.prompt,
            r.output,
            replica,
            t_first - t0,
            self.env.now - t0,
            preemptions,
            r.question,
            r.g_wait,
            r.g_service,
            r.outcome,
        )
        if r.on_done is not None:
            r.on_done()

    # ------------------------------------------------------------------ workload
    def closed_users(self, uids: range) -> None:
        """Users ``uids`` (:meth:`closed_user`), their streams seeded a block at a time."""
        seed, scratch = self.scn.run.seed, self.scratch
        for i in range(0, len(uids), USER_BLOCK):
            block = uids[i : i + USER_BLOCK]
            per = [parked_many(scratch, seed, self.rep, purpose, block) for purpose in USER_STREAMS]
            for uid, streams in zip(block, zip(*per)):
                self.closed_user(uid, streams)

    def closed_user(self, uid: int, streams: Sequence[np.random.Generator] | None = None) -> None:
        """User ``uid``: think, ask, wait for the answer, think again, until arrivals stop.

        Driven by callbacks (one timeout per think); a load profile's comings and goings
        run as a process (:meth:`_present_user`).  ``streams``: the user's streams, one per
        purpose of :data:`USER_STREAMS` (default: made here)."""
        scn = self.scn
        # One stream per purpose per user: what user ``uid`` thinks, asks and how long the
        # prompt is do not depend on each other's draws (nor on the system under test).
        # Parked (sim.rng.ParkedStream): a shopper's streams hold their state alone and draw
        # through the model's scratch generator, the same values in a tenth of the memory.
        if streams is None:
            streams = [parked(self.scratch, scn.run.seed, self.rep, purpose, uid) for purpose in USER_STREAMS]
        think, query, tokens, output = streams
        u = _User(
            uid,
            D.Sampler(self.shared(scn.workload.think_s), think, 64),
            QueryKeys(self.popularity, query, 64),
            TokenCounts(scn, tokens, 64, output, self.shared),
            self.utterances(uid),
            self._think,
            self._ask,
        )
        if self.presence is not None:
            self.env.process(self._present_user(u))
        else:
            self._think(u)

    def _think(self, u: _User) -> None:
        if self.calendar is None:
            later(self.env, u.think(), u.ask)
        else:
            self.calendar.later(u.think(), u.ask)

    def _ask(self, u: _User) -> None:
        if self.env.now >= self.end_arrivals_s:
            return
        self._ask_now(u, u.think_again)

    def _ask_now(self, u: _User, on_done: Callable[[], object]) -> None:
        prompt, output = u.tokens()
        q = u.keys()
        if u.utter is None:
            self.request(u.uid, q, prompt, output, on_done=on_done)
        else:
            key, outcome = u.utter(q)
            self.request(u.uid, key, prompt, output, q, outcome, on_done=on_done)

    def _present_user(self, u: _User) -> ProcessGenerator:
        env, end, presence = self.env, self.end_arrivals_s, self.presence
        assert presence is not None
        while True:
            if not presence.present(u.uid, env.now):
                # Not among the shoppers now: come back (and think first) when the level reaches uid.
                back = presence.next_arrival(u.uid, env.now)
                if back is None or back >= end:
                    return
                yield env.timeout(back - env.now)
            yield env.timeout(u.think())
            if env.now >= end:
                return
            if not presence.present(u.uid, env.now):
                continue
            done = env.event()
            self._ask_now(u, done.succeed)
            yield done

    def open_arrivals(self) -> None:
        """Open arrivals at ``rate_per_s`` (or following a profile, by thinning): a chain of
        timeouts, each arrival's callback starting a request and scheduling the next."""
        scn = self.scn
        w = scn.workload
        profile = self.profile
        # With a profile: candidates at the peak rate, each kept with probability level / peak (thinning).
        top = peak(profile, self.end_arrivals_s) if profile is not None else float(w.rate_per_s or 0.0)
        share = 1.0 / self.parts  # a cell's Poisson stream: 1 / N of the rate
        top *= share
        if top <= 0:
            return
        mean_gap = 1.0 / top
        gap_dist: D.Distribution
        if w.arrival == "poisson":
            gap_dist = D.Exponential(mean_gap)
        else:
            assert w.cv is not None  # the schema requires cv for gamma arrivals
            gap_dist = D.Gamma(mean_gap, w.cv)
        gaps = D.Sampler(gap_dist, self.stream("arrivals"))
        keep = D.Sampler(D.Uniform(0.0, 1.0), self.stream("thinning")) if profile else None
        keys = QueryKeys(self.popularity, self.stream("query"))
        tokens = TokenCounts(scn, self.stream("tokens"), output_rng=self.stream("output_tokens"))
        utter = self.utterances()
        env, end, request = self.env, self.end_arrivals_s, self.request

        def arrive(_event: object) -> None:
            if env.now >= end:
                return
            if keep is None or profile is None or keep() * top < float(level(profile, env.now)) * share:
                prompt, output = tokens()
                q = keys()
                if utter is None:
                    request(-1, q, prompt, output)
                else:
                    key, outcome = utter(q)
                    request(-1, key, prompt, output, q, outcome)
            later(env, gaps(), arrive)

        later(env, gaps(), arrive)

    def trace_arrivals(self) -> ProcessGenerator:
        """Replay a trace: its arrival times (up to ``run.duration_s``), its token counts and
        query keys where it has them, the scenario's distributions where it does not."""
        env, scn = self.env, self.scn
        tc = scn.workload.trace
        assert tc is not None  # WorkloadConfig requires it in trace mode
        tr = load_trace(tc.path, tc.format, tc.time_scale)
        keys = QueryKeys(self.popularity, stream(scn.run.seed, self.rep, "query"))
        tokens = TokenCounts(
            scn, stream(scn.run.seed, self.rep, "tokens"), output_rng=stream(scn.run.seed, self.rep, "output_tokens")
        )
        utter = self.utterances()
        end = self.end_arrivals_s
        pt, ot, qk = tr.prompt_tokens, tr.output_tokens, tr.query_key
        for i, t in enumerate(tr.arrival_s.tolist()):
            if t >= end:
                return
            if t > env.now:
                yield env.timeout(t - env.now)
            prompt, output = tokens()
            if pt is not None:
                prompt = max(1, int(pt[i]))
            if ot is not None:
                output = max(1, int(ot[i]))
            q = int(qk[i]) if qk is not None else keys()
            if utter is None:
                self.request(-1, q, prompt, output)
            else:
                key, outcome = utter(q)
                self.request(-1, key, prompt, output, q, outcome)

    # ------------------------------------------------------------------ monitor
    MONITOR_SAMPLES = 200

    def monitor(self, out: Samples) -> ProcessGenerator:
        """Sample the state every ``duration / 200`` s (one event per sample, 201 samples).

        Reads only: retrieval queue length and busy workers, and per LLM replica the
        waiting queue, the running batch and the KV tokens in use (mid-epoch included).  It draws no random
        numbers and changes no state, so records are the same with or without it.
        """
        env, n = self.env, self.MONITOR_SAMPLES
        dt = self.end_arrivals_s / n
        pool, llm = self.pool, self.llm
        reps = llm.replicas if llm is not None else []
        t: list[float] = []
        rq: list[int] = []
        rb: list[int] = []
        lw: list[list[int]] = []
        lr: list[list[int]] = []
        kv: list[list[int]] = []
        out.update(
            t_s=t,
            retrieval_queue=rq,
            retrieval_busy=rb,
            llm_waiting=lw,
            llm_running=lr,
            kv_tokens=kv,
            kv_capacity_tokens=llm.kv_capacity_tokens if llm is not None else 0,
        )
        rpool = self.routing_pool
        gq: list[int] = []
        gb: list[int] = []
        if rpool is not None:
            out.update(routing_queue=gq, routing_busy=gb)
        lv: list[float] = []
        if self.profile is not None:
            out.update(load_level=lv)
        for i in range(n + 1):
            if i:
                yield env.timeout(max(0.0, i * dt - env.now))
            t.append(env.now)
            rq.append(pool.queue_length() if pool is not None else 0)
            rb.append(pool.busy if pool is not None else 0)
            lw.append([len(r.waiting) for r in reps])
            lr.append([r.batch for r in reps])
            kv.append([r.reserved_tokens_at(env.now) for r in reps])
            if rpool is not None:
                gq.append(rpool.queue_length())
                gb.append(rpool.busy)
            if self.profile is not None:
                lv.append(float(level(self.profile, env.now)))

    # ------------------------------------------------------------------ run
    def run(self) -> Replication:
        env, scn = self.env, self.scn
        sampled: Samples = {}
        env.process(self.monitor(sampled))
        with long_lived_model() as built:
            if scn.workload.mode == "closed":
                if self.presence is not None:
                    users = self.presence.max_users
                else:
                    assert scn.workload.users is not None  # WorkloadConfig requires users or a profile
                    users = scn.workload.users
                    # (with a profile, shoppers come and go as processes: their timeouts stay on the queue)
                    self.calendar = think_calendar(
                        env, len(range(self.part, users, self.parts)), self.shared(scn.workload.think_s)
                    )
                self.closed_users(range(self.part, users, self.parts))  # a cell's shoppers: its ids modulo N
            elif scn.workload.mode == "trace":
                env.process(self.trace_arrivals())
            else:
                self.open_arrivals()
            built()
            run_until(env, self.end_arrivals_s + self.drain_s)
        self.recorder.flush()
        self._count_started()
        self._count_lookups()
        records = self.recorder.arrays() if self.recorder.keep else None
        lo, hi = self.window
        counters: dict[str, float | Bins] = {"started_in_window": self.started_in_window}
        # Stage counters are Bins over time (sim.engine.records.Bins): the summary takes their
        # totals from the warm-up cut, fixed or chosen afterwards by MSER-5.
        if self.routing_pool is not None:
            counters.update(
                routing_busy_s=self.routing_pool.busy_bins,
                routing_workers=self.routing_pool.workers,
            )
        if self.pool is not None:
            counters.update(
                retrieval_busy_s=self.pool.busy_bins,
                retrieval_workers=self.pool.workers,
            )
        if self.llm is not None:
            reps = self.llm.replicas
            for r in reps:
                r.close(env.now)
            counters.update(
                {f"gpu_{k}": Bins.sum([r.bins[k] for r in reps]) for k in reps[0].bins},
                gpu_replicas=len(reps),
                gpu_kv_blocks=self.llm.kv_blocks,
            )
            scaler = self.llm.autoscaler
            if scaler is not None:
                # The fleet changed size: utilisation is busy time over the ready replicas'
                # time (their mean number in the window); the history prices the fleet.
                counters["gpu_replicas"] = mean_count(scaler.history, 3, lo, hi)
                sampled.update(scaler.timeseries())
        # every sample becomes an array of floats but the KV capacity, one int
        timeseries = {k: (v if isinstance(v, int) else np.asarray(v, dtype=float)) for k, v in sampled.items()}
        return Replication(self.rep, records, (lo, hi), counters, timeseries, self.digest)


#: A shopper's streams, by purpose (sim.rng.stream's ``purpose``).
USER_STREAMS = ("user", "query", "tokens", "output_tokens")
#: Shoppers whose streams are seeded together (sim.rng.parked_many).
USER_BLOCK = 4096

#: Think timers in one bucket of a shop's calendar (about; the queue holds two buckets' worth).
CALENDAR_TIMERS = 2048


def think_calendar(env: simpy.Environment, users: int, think: D.Distribution) -> Calendar | None:
    """Where ``users`` shoppers' think timers wait: a :class:`~sim.engine.clock.Calendar` whose
    buckets hold about :data:`CALENDAR_TIMERS` timers each (``users`` timers spread over a
    mean think time), or None (straight on the event queue) for fewer than twice that."""
    if users < 2 * CALENDAR_TIMERS or not think.mean > 0:
        return None
    return Calendar(env, think.mean * CALENDAR_TIMERS / users)


#: Allocations between two young-generation collections of the garbage collector while the
#: event loop runs (Python's default is 700).
GC_YOUNG_THRESHOLD = 20_000


@contextmanager
def long_lived_model() -> Iterator[Callable[[], None]]:
    """Build and run a model without the garbage collector rescanning what lives all run.

    Every shopper's streams and samplers, the replicas and the pools live for the whole run:
    with 100,000 shoppers they are millions of objects, which every full collection walked
    again, while they were built and while the loop ran (the collector's work per request
    grew with the shop).  Inside this block the collector is off while the model is built;
    calling what it yields once the model is built freezes everything alive
    (``gc.freeze``: left out of every collection until the block ends) and turns the
    collector back on, collecting the young generation every :data:`GC_YOUNG_THRESHOLD`
    allocations instead of 700 (a request's objects die by reference count; the collector
    only finds cycles, and a request makes none: tests/test_engine_cycles.py).  Nothing the
    model computes depends on when the collector runs, so every number is the same.  The
    collector's settings are restored at the end; where the process froze objects of its own
    already, nothing more is frozen."""
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    freeze = gc.get_freeze_count() == 0
    frozen = False

    def built() -> None:
        nonlocal frozen
        if freeze and not frozen:
            gc.freeze()
            frozen = True
        gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
        if enabled:
            gc.enable()

    gc.disable()
    try:
        yield built
    finally:
        gc.set_threshold(*threshold)
        if frozen:
            gc.unfreeze()
        if enabled:
            gc.enable()


def digest_edges(scn: Scenario) -> np.ndarray:
    """The digest's time cells for ``scn``: :func:`sim.engine.digest.cell_edges` over the
    measurement window, plus the timeline's window edges when results over time are on."""
    run = scn.run
    lo = 0.0 if run.warmup_s == "auto" else float(run.warmup_s)
    end = float(run.duration_s)
    extra: list[float] = []
    if scn.timeline_on:
        for width in (scn.timeline.window_s, scn.timeline.sla_window_s):
            if width:
                extra.extend(window_edges(end, width))
    return cell_edges(lo, end, extra)


def run_replication(
    scn: Scenario, replication: int, records: bool | None = None, part: int | None = None
) -> Replication:
    """One replication of ``scn``; ``records``: keep every request's record (default ``run.records``).

    With ``run.partitions`` N > 1: cell ``part`` of it (:mod:`sim.engine.partition`), or, with
    ``part`` None, its N cells one after the other in this process, merged."""
    from sim.engine.partition import cell_scenario, merge_cells  # deferred: it imports this module

    n = scn.run.partitions
    if n == 1:
        return Model(scn, replication, records).run()
    cell = cell_scenario(scn)
    if part is not None:
        return Model(cell, replication, records, part).run()
    cells = [Model(cell, replication, records, c).run() for c in range(n)]
    return merge_cells(cells, cell.llm.replicas)
