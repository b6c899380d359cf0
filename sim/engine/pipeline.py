"""Wires the stages into the request lifecycle and runs one replication.

A request's path::

    arrival -> (routing queue -> edit-distance routing) -> cache lookup -> (miss) retrieval queue -> search -> LLM queue
            -> prefill (first token: TTFT) -> decode -> last token (e2e)

Every request is one generator process; every stage stamps its times on the
request, and the recorder turns finished requests into one flat row each.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import simpy

from sim import distributions as D
from sim.engine.cache import LRUCache
from sim.engine.llm.stage import LLMStage
from sim.engine.pool import WorkerPool
from sim.engine.profile import Presence, level, peak
from sim.engine.records import Bins, Recorder
from sim.engine.routing import OFF, Utterances, routing_setup
from sim.engine.workload import Popularity, QueryKeys
from sim.physics.retrieval import default_calibration_path, load_calibration
from sim.rng import stream
from sim.spec.schema import PromptComposition, Scenario, build_distribution
from sim.spec.trace import load_trace


def retrieval_service_distribution(scn: Scenario) -> tuple[D.Distribution, dict]:
    """Service time of one search in **seconds**, and what it came from.

    An explicit ``retrieval.service_ms`` wins; otherwise the calibration file
    (``retrieval.calibration`` or the one shipped with the package) supplies
    measured quantiles for the configured index, corpus and knobs.
    ``retrieval.overhead_ms`` is added either way.
    """
    r = scn.retrieval
    info: dict = {}
    if r.service_ms is not None:
        base = build_distribution(r.service_ms)
        info["source"] = "retrieval.service_ms"
    else:
        path = r.calibration or str(default_calibration_path())
        prof = load_calibration(path).profile(
            r.index,
            docs=r.docs,
            dim=r.dim,
            top_k=r.top_k,
            ef_search=r.ef_search,
            nprobe=r.nprobe,
            workers=r.workers,
        )
        base = D.Quantile(tuple(prof.probs), tuple(prof.values_ms))
        info = {
            "source": path,
            "recall": prof.recall,
            "extrapolated": prof.extrapolated,
            "interpolated": prof.interpolated,
            "description": prof.description,
        }
    overhead = build_distribution(r.overhead_ms)
    dist: D.Distribution = base if overhead.mean == 0 and overhead.variance == 0 else D.Sum((base, overhead))
    info["mean_ms"] = dist.mean
    return D.Scaled(dist, factor=1e-3), info


class TokenCounts:
    """Prompt and output token counts for one request.

    Prompt parts are drawn with ``rng``, output lengths with ``output_rng``
    (default ``rng``): with separate streams the output lengths stay the same
    when ``retrieval.top_k`` changes how many document lengths a prompt draws.
    """

    def __init__(
        self, scn: Scenario, rng: np.random.Generator, block: int = 256, output_rng: np.random.Generator | None = None
    ):
        llm = scn.llm
        self.top_k = scn.retrieval.top_k if scn.retrieval.enabled else 0
        if isinstance(llm.prompt_tokens, PromptComposition):
            c = llm.prompt_tokens
            self.system = c.system_tokens
            self._doc = D.Sampler(build_distribution(c.doc_tokens), rng, block)
            self._question = D.Sampler(build_distribution(c.question_tokens), rng, block)
            self._prompt = None
        else:
            self._prompt = D.Sampler(build_distribution(llm.prompt_tokens), rng, block)
        self._output = D.Sampler(build_distribution(llm.output_tokens), output_rng or rng, block)

    def __call__(self) -> tuple[int, int]:
        if self._prompt is not None:
            p = self._prompt()
        else:
            doc = self._doc
            p = self.system + sum(doc() for _ in range(self.top_k)) + self._question()
        return max(1, round(p)), max(1, round(self._output()))


@dataclass
class Replication:
    """What one replication produced: flat records plus stage counters."""

    replication: int
    records: dict[str, np.ndarray]
    window_s: tuple[float, float]
    # Plain numbers, and per-stage Bins (totals taken after the warm-up cut by the summary).
    counters: dict[str, float | Bins] = field(default_factory=dict)
    # Sampled state (see Model.monitor): t_s, retrieval_queue, retrieval_busy, and per LLM
    # replica (arrays of shape samples x replicas) llm_waiting, llm_running, kv_tokens.
    timeseries: dict[str, np.ndarray] = field(default_factory=dict)
    # Arrival time of every request started (finished or not), for results over time.
    started_s: np.ndarray = field(default_factory=lambda: np.empty(0))


class Model:
    """One replication's SimPy model of the whole pipeline."""

    def __init__(self, scn: Scenario, replication: int):
        self.scn = scn
        self.rep = replication
        self.env = env = simpy.Environment()
        run = scn.run
        warm = 0.0 if run.warmup_s == "auto" else float(run.warmup_s)
        self.window = (warm, float(run.duration_s))
        self.end_arrivals_s = float(run.duration_s)
        self.drain_s = run.drain_seconds
        seed = run.seed
        self.recorder = Recorder(replication)
        self.popularity = Popularity(scn.workload.queries)
        self.cache = LRUCache(scn.cache.capacity) if scn.cache.enabled else None
        self.cache_lookup_s = D.Sampler(
            D.Scaled(build_distribution(scn.cache.lookup_ms), 1e-3), stream(seed, replication, "cache")
        )
        routing_dist, self.novel_share, self.routing_accuracy, self.routing_info = routing_setup(scn)
        self.routing_pool: WorkerPool | None = None
        if routing_dist is not None:
            self.routing_s = D.Sampler(routing_dist, stream(seed, replication, "routing"))
            self.routing_pool = WorkerPool(env, scn.routing.workers, scn.routing.cpu_cores, self.window)
        self.novel_ids = itertools.count(-1, -1)
        self.pool: WorkerPool | None
        if scn.retrieval.enabled:
            dist, self.retrieval_info = retrieval_service_distribution(scn)
            self.retrieval_s = D.Sampler(dist, stream(seed, replication, "retrieval"))
            self.pool = WorkerPool(env, scn.retrieval.workers, scn.retrieval.cpu_cores, self.window)
        else:
            self.pool = None
            self.retrieval_info = {}
        self.llm = LLMStage(env, scn.llm, stream(seed, replication, "router"), self.window) if scn.llm.enabled else None
        self.in_flight = 0
        self.started_in_window = 0
        self.profile = scn.workload.profile
        self.presence = (
            Presence(self.profile, self.end_arrivals_s)
            if self.profile is not None and scn.workload.mode == "closed"
            else None
        )
        self.started_s: list[float] = []

    # ------------------------------------------------------------------ request
    def utterances(self, *purpose: int) -> Utterances | None:
        """The question -> cache key mapping for one stream (None when routing and variants are off)."""
        if self.routing_accuracy is None and self.novel_share == 0:
            return None
        rng = stream(self.scn.run.seed, self.rep, "utterance", *purpose)
        return Utterances(self.novel_share, self.routing_accuracy, self.scn.routing.questions, rng, self.novel_ids)

    def request(self, user: int, key: int, prompt: int, output: int, question: int = -1, outcome: int = OFF):
        """One request for cache ``key`` (``question``: what was asked, default ``key``)."""
        env, rec = self.env, self.recorder
        t0 = env.now
        if self.window[0] <= t0 < self.window[1]:
            self.started_in_window += 1
        self.started_s.append(t0)
        g_wait = g_service = 0.0
        rpool = self.routing_pool
        if rpool is not None:
            yield rpool.acquire()
            t1 = env.now
            yield env.timeout(self.routing_s() * rpool.slowdown())
            t2 = env.now
            rpool.release(t1, t2)
            g_wait, g_service = t1 - t0, t2 - t1
        hit = False
        t_cache = 0.0
        if self.cache is not None:
            t_cache = self.cache_lookup_s()
            if t_cache > 0:
                yield env.timeout(t_cache)
            hit = self.cache.lookup(key)
        r_wait = r_service = 0.0
        pool = self.pool
        if pool is not None and not hit:
            t1 = env.now
            yield pool.acquire()
            t2 = env.now
            yield env.timeout(self.retrieval_s() * pool.slowdown())
            t3 = env.now
            pool.release(t2, t3)
            r_wait, r_service = t2 - t1, t3 - t2
            if self.cache is not None:
                self.cache.insert(key)
        replica = preemptions = -1
        l_wait = prefill = decode = 0.0
        t_first = env.now
        if self.llm is not None:
            seq = yield self.llm.submit(prompt, output)
            replica = seq.replica
            l_wait = seq.t_admitted - seq.t_queued
            prefill = seq.t_first - seq.t_admitted
            decode = seq.t_last - seq.t_first
            t_first = seq.t_first
            preemptions = seq.preemptions
        t_end = env.now
        rec.add(
            user,
            t0,
            key,
            hit,
            t_cache,
            r_wait,
            r_service,
            l_wait,
            prefill,
            decode,
            prompt,
            output,
            replica,
            t_first - t0,
            t_end - t0,
            preemptions,
            key if question < 0 else question,
            g_wait,
            g_service,
            outcome,
        )

    # ------------------------------------------------------------------ workload
    def closed_user(self, uid: int):
        env = self.env
        scn = self.scn
        # One stream per purpose per user: what user ``uid`` thinks, asks and how long the
        # prompt is do not depend on each other's draws (nor on the system under test).
        seed = scn.run.seed
        think = D.Sampler(build_distribution(scn.workload.think_s), stream(seed, self.rep, "user", uid), 64)
        keys = QueryKeys(self.popularity, stream(seed, self.rep, "query", uid), 64)
        tokens = TokenCounts(
            scn, stream(seed, self.rep, "tokens", uid), 64, stream(seed, self.rep, "output_tokens", uid)
        )
        utter = self.utterances(uid)
        end = self.end_arrivals_s
        presence = self.presence
        while True:
            if presence is not None and not presence.present(uid, env.now):
                # Not among the shoppers now: come back (and think first) when the level reaches uid.
                back = presence.next_arrival(uid, env.now)
                if back is None or back >= end:
                    return
                yield env.timeout(back - env.now)
            yield env.timeout(think())
            if env.now >= end:
                return
            if presence is not None and not presence.present(uid, env.now):
                continue
            prompt, output = tokens()
            q = keys()
            if utter is None:
                yield env.process(self.request(uid, q, prompt, output))
            else:
                key, outcome = utter(q)
                yield env.process(self.request(uid, key, prompt, output, q, outcome))

    def open_arrivals(self):
        env, scn = self.env, self.scn
        w = scn.workload
        profile = self.profile
        # With a profile: candidates at the peak rate, each kept with probability level / peak (thinning).
        top = peak(profile, self.end_arrivals_s) if profile is not None else float(w.rate_per_s or 0.0)
        if top <= 0:
            return
        mean_gap = 1.0 / top
        gap_dist = D.Exponential(mean_gap) if w.arrival == "poisson" else D.Gamma(mean_gap, w.cv)
        gaps = D.Sampler(gap_dist, stream(scn.run.seed, self.rep, "arrivals"))
        keep = D.Sampler(D.Uniform(0.0, 1.0), stream(scn.run.seed, self.rep, "thinning")) if profile else None
        keys = QueryKeys(self.popularity, stream(scn.run.seed, self.rep, "query"))
        tokens = TokenCounts(
            scn, stream(scn.run.seed, self.rep, "tokens"), output_rng=stream(scn.run.seed, self.rep, "output_tokens")
        )
        utter = self.utterances()
        end = self.end_arrivals_s
        while True:
            yield env.timeout(gaps())
            if env.now >= end:
                return
            if keep is not None and profile is not None and keep() * top >= float(level(profile, env.now)):
                continue
            prompt, output = tokens()
            q = keys()
            if utter is None:
                env.process(self.request(-1, q, prompt, output))
            else:
                key, outcome = utter(q)
                env.process(self.request(-1, key, prompt, output, q, outcome))

    def trace_arrivals(self):
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
                env.process(self.request(-1, q, prompt, output))
            else:
                key, outcome = utter(q)
                env.process(self.request(-1, key, prompt, output, q, outcome))

    # ------------------------------------------------------------------ monitor
    MONITOR_SAMPLES = 200

    def monitor(self, out: dict):
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
        sampled: dict = {}
        env.process(self.monitor(sampled))
        if scn.workload.mode == "closed":
            if self.presence is not None:
                users = self.presence.max_users
            else:
                assert scn.workload.users is not None  # WorkloadConfig requires users or a profile
                users = scn.workload.users
            for uid in range(users):
                env.process(self.closed_user(uid))
        elif scn.workload.mode == "trace":
            env.process(self.trace_arrivals())
        else:
            env.process(self.open_arrivals())
        env.run(until=self.end_arrivals_s + self.drain_s)
        records = self.recorder.arrays()
        lo, hi = self.window
        counters: dict[str, float | Bins] = {"sim_end_s": env.now, "started_in_window": self.started_in_window}
        if self.cache is not None:
            c = self.cache
            counters.update(cache_hits=c.hits, cache_misses=c.misses, cache_evictions=c.evictions)
        # Stage counters are Bins over time (sim.engine.records.Bins): the summary takes their
        # totals from the warm-up cut, fixed or chosen afterwards by MSER-5.
        if self.routing_pool is not None:
            counters.update(
                routing_busy_s=self.routing_pool.busy_bins,
                routing_workers=self.routing_pool.workers,
                routing_queue_at_end=self.routing_pool.queue_length(),
            )
        if self.pool is not None:
            counters.update(
                retrieval_busy_s=self.pool.busy_bins,
                retrieval_workers=self.pool.workers,
                retrieval_queue_at_end=self.pool.queue_length(),
            )
        if self.llm is not None:
            reps = self.llm.replicas
            for r in reps:
                r.close(env.now)
            counters.update(
                {f"gpu_{k}": Bins.sum([r.bins[k] for r in reps]) for k in reps[0].bins},
                gpu_replicas=len(reps),
                gpu_kv_blocks=self.llm.kv_blocks,
                llm_queue_at_end=sum(len(r.waiting) for r in reps),
                llm_running_at_end=sum(r.batch for r in reps),
            )
        timeseries = {k: (v if k == "kv_capacity_tokens" else np.asarray(v, dtype=float)) for k, v in sampled.items()}
        return Replication(self.rep, records, (lo, hi), counters, timeseries, np.asarray(self.started_s, dtype=float))


def run_replication(scn: Scenario, replication: int) -> Replication:
    return Model(scn, replication).run()
