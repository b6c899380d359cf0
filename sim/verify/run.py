"""``capsim verify``: measure a real stack under the scenario's load, simulate the same, compare.

The orchestration (:class:`VerifyRun`): probe, then per load play it live, probe again and predict it.

What the prediction is calibrated from (isolated measurements only, never the
closed-loop run it is compared with):

* the LLM's step times: the scenario's ``llm.step_table`` (``capsim calibrate
  llm``: llama-batched-bench alone on the server's cores, before the server runs),
  or with ``--profile-llm`` a profile of the server itself, alone, taken right
  before every load (:mod:`sim.verify.step_profile`: batches of requests sent
  together, nothing else sending);
* the server's slots and step budget: the target's ``llm.parallel`` and
  ``llm.n_batch`` (``llm.max_batch``, ``llm.max_batched_tokens``);
* the retrieval service time: single searches one at a time over keep-alive
  HTTP, before the load (so the HTTP overhead is in every sample), as an
  empirical distribution; the extra time of a search that finds the service
  idle, by how long it was idle (trains of single searches each after an idle
  gap of 1-100 ms over back-to-back blocks around them: ``retrieval.wakeup_ms``);
  the slowdown of ``m = 2..workers`` searches at once beyond sharing the cores
  in time (``retrieval.contention``; on one core, from the service's own CPU
  clock: its CPU per search at ``m`` at once over alone) and, where the service reports its own
  search time, how long an answer waits behind a running search
  (``retrieval.handback_ms``); where it also reports its CPU clock, where a
  search's time alone goes (the search, the event loop's CPU, the part off
  the service's cores: ``phases_ms``), and on a one-core service its threads
  are then scheduled on that core (``retrieval.scheduler``, with this host's
  slice and tick, :func:`~sim.verify.retrieval_probe.scheduler_for`) in place of the shared pool and its
  hand-back; workers and
  cores from the target; taken before the first load and after every load,
  and each load predicted from the two probes that bracket it, pooled; and,
  as a check of the pool in isolation (not a calibration), pairs
  of searches sent 0-6 ms apart, measured and as the pool models them
  (``retrieval_pairs``);
* the per-call HTTP + SSE overhead of the LLM endpoint: client first token
  minus the server's own prompt time, one request at a time, before the load;
  added as a constant to the (in-process, microseconds) cache lookup, i.e.
  to every request's path, outside any queue.

Bounds: P95 end to end <= 10 %, TTFT P95 <= 20 %, P50 (both) <= 10 %,
throughput <= 5 %.  A row outside its bound is ``undecided``, not ``outside``,
when the measurement cannot show the miss: the measured 95 % interval holds a
value within the bound, or, for a load played in segments, the error's own
interval over the segments does (:func:`~sim.verify.verdict.verdict`, :func:`~sim.verify.verdict.error_interval`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from sim.analysis.estimate import mean_output_tokens, mean_prompt_tokens
from sim.errors import CapsimError
from sim.spec.schema import Scenario
from sim.spec.target import Target
from sim.verify.compare import compare_one, overrides_for
from sim.verify.loadgen import (
    LiveRun,
    check_reachable,
    run_load,
)
from sim.verify.pairs import pair_check
from sim.verify.probes import (
    LLMProbe,
    loop_cpu_ms,
    probe_contention,
    probe_llm,
    probe_retrieval,
    probe_wakeup,
    server_vs_table,
)
from sim.verify.retrieval_probe import RetrievalProbe, calibration_entry, scheduler_for
from sim.verify.segments import SegmentPlan, play_segmented
from sim.verify.step_profile import ServerProfile
from sim.verify.verdict import (
    LoadComparison,
    confirmed,
)
from sim.verify.wire import EndpointError, RunDeadline

#: The calibration entries ``verify`` keeps per load (keyed by its user count).
PER_LOAD_CALIBRATION = ("step_tables", "retrieval", "llm_speed")


def verify(
    scn: Scenario,
    target: Target,
    users: list[int],
    duration_s: float,
    warmup_s: float,
    drain_s: float = 60.0,
    replications: int = 5,
    progress=None,
    profile: ServerProfile | None = None,
    probe_s: float = 1.0,
    segments: int = 1,
    confirm: bool = False,
) -> tuple[list[LoadComparison], dict[str, Any], list[LiveRun]]:
    """Probe (isolated), then for every load: play it for real and simulate it; compare.

    With ``profile``, the LLM server is profiled alone right before every load and that
    load is predicted from its own profile (a calibration minutes old on a shared machine
    is not the machine that serves the load).  With ``confirm``, a load with a row outside its
    bound is played once more, re-profiled and re-probed, and the two plays are merged by
    :func:`~sim.verify.verdict.confirmed` (the first play's calibration under ``calib["first_attempt"]``); the
    live requests of both plays are returned, the replay's with ``attempt`` 1."""
    llm_on = scn.llm.enabled
    if not llm_on and not scn.retrieval.enabled:
        raise CapsimError("verify needs llm.enabled or retrieval.enabled: there is no stage to hold against a server")
    if llm_on and scn.llm.step_table is None and profile is None:
        raise CapsimError(
            "llm.step_table: verify needs a measured step table; run `capsim calibrate llm` first or pass --profile-llm"
        )
    if scn.workload.mode != "closed":
        raise CapsimError("workload.mode: verify plays closed-loop users; set mode: closed")
    if scn.retrieval.enabled and target.retrieval is None:
        raise CapsimError("--target: the scenario retrieves (retrieval.enabled) but the target has no retrieval.url")
    if llm_on:
        target.llm_endpoint()  # a one-line error now, before anything is sent
    plays = len(users) * (2 if confirm else 1)
    budget_s = RUN_SETUP_S + plays * (duration_s + drain_s + RUN_PER_LOAD_S)
    before_deadline = RunDeadline.at
    RunDeadline.at = time.monotonic() + budget_s
    try:
        plan = Plan(users, (duration_s, warmup_s, drain_s), replications, profile, probe_s, segments, confirm)
        return VerifyRun(scn, target, plan, progress).run()
    except EndpointError as e:  # a probe's request failed: the target's fault, said as such
        raise CapsimError(str(e)) from None
    finally:
        RunDeadline.at = before_deadline


#: The deadline of a whole verify run, a net under every request's own: the set-up's
#: probes and profile, then per play of a load its live run and drain plus its probes.
RUN_SETUP_S = 900.0
RUN_PER_LOAD_S = 900.0


@dataclass(frozen=True)
class Plan:
    """What ``verify`` was asked to do: the loads, their times and how each is played."""

    users: list[int]
    times: tuple[float, float, float]  # duration_s, warmup_s, drain_s of each load
    replications: int
    profile: ServerProfile | None  # --profile-llm: the server profiled alone before every load
    probe_s: float  # the wake-up probe's train length, and the pair probe's size
    segments: int
    confirm: bool


class VerifyRun:
    """One ``capsim verify`` run: the isolated probes, then per load its live play, the probes
    after it and its prediction (:meth:`play`), the load replayed where ``--confirm`` asks.

    Its state is what the loads hand on: the step table in use, the retrieval probe that
    opens the next load (the one after the last load, or a fresh one before a replay), and the
    calibration record every load adds to."""

    def __init__(self, scn: Scenario, target: Target, plan: Plan, progress: Any = None):
        self.scn, self.target, self.plan, self.progress = scn, target, plan, progress
        self.llm_on = scn.llm.enabled
        self.retrieves = scn.retrieval.enabled and target.retrieval is not None
        self.workers = target.retrieval.workers if target.retrieval else 1
        self.table: str | None = None
        self.before: RetrievalProbe | None = None
        self.llm_probe: LLMProbe = {"overhead_ms": 0.0, "bos_tokens": 0, "server_alone": None}
        self.calib: dict[str, Any] = {}
        self.probe_tokens = (1, 1)

    def say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def run(self) -> tuple[list[LoadComparison], dict[str, Any], list[LiveRun]]:
        self.setup()
        out, lives = [], []
        for i, n in enumerate(self.plan.users):
            live, cmp = self.play(n, i == 0, 0)
            lives.append(live)
            if self.plan.confirm and cmp.misses and not cmp.too_many_failures:
                live, cmp = self.replay(n, cmp)
                lives.append(live)
            out.append(cmp)
        return out, self.calib, lives

    def setup(self) -> None:
        """Before the first load: the endpoints reached, the LLM probed (and profiled, or its
        table read), the retrieval probed and its pair check taken."""
        scn, target, plan = self.scn, self.target, self.plan
        check_reachable(target)
        if self.llm_on:
            self.table = (
                plan.profile.table(target, plan.users[0], self.progress) if plan.profile else str(scn.llm.step_table)
            )
            self.llm_probe = probe_llm(target)
        probe, table = self.llm_probe, self.table
        alone = probe["server_alone"]  # measured by probe_llm whenever there is a table (the LLM is on)
        self.calib = {
            "llm_overhead_ms": probe["overhead_ms"] if self.llm_on else None,
            "llm_server_clock": probe["server_clock"] if self.llm_on else None,
            "llm_bos_tokens": probe["bos_tokens"] if self.llm_on else None,
            "step_table": table if plan.profile is None else "profiled alone before every load (--profile-llm)",
            "step_tables": {},
            "server_alone_vs_table": server_vs_table(table, alone) if table and alone is not None else None,
            "retrieval": {},
            "llm_speed": {},
        }
        # Speed probes as long as the scenario's mean request (the prefill law is a least-squares
        # fit over every profiled row, a few % off at a given length): ids sent, less the BOS.
        self.probe_tokens = (
            max(1, round(mean_prompt_tokens(scn)) - int(probe["bos_tokens"])),
            max(1, round(mean_output_tokens(scn))),
        )
        self.before = self.probe_search()
        if self.before is not None and self.workers > 1:
            self.calib["retrieval_pairs"] = pair_check(
                target, scn.retrieval.top_k, self.before, plan.probe_s, self.progress
            )

    def probe_search(self) -> RetrievalProbe | None:
        """Retrieval alone: one at a time, m at once, after idle spells (seconds)."""
        if not self.retrieves:
            return None
        target, k = self.target, self.scn.retrieval.top_k
        own: list[float | None] = []
        cpu: list[float | None] = []
        r_ms = probe_retrieval(target, k, server=own, cpu=cpu)
        wake = probe_wakeup(target, k, train_s=self.plan.probe_s)
        contention, handback = probe_contention(target, k, r_ms, alone_server_ms=own, alone_cpu_ms=cpu)
        reported = [x for x in own if x is not None]
        search = float(np.median(reported)) if reported and len(reported) == len(own) else None
        return RetrievalProbe(r_ms, contention, wake, handback, search, loop_cpu_ms(cpu, own))

    def play(self, n: int, profiled: bool, attempt: int) -> tuple[LiveRun, LoadComparison]:
        """One load, live and simulated; ``profiled``: the table is this load's (else profile now)."""
        plan = self.plan
        if self.llm_on and plan.profile is not None and not profiled:
            self.table = plan.profile.table(self.target, n, self.progress, replay=attempt > 0)
        self.calib["step_tables"][str(n)] = self.table
        again = " (replay)" if attempt else ""
        duration_s, warmup_s, drain_s = plan.times
        if plan.segments > 1:
            self.say(f"{n} users{again}: live load for {duration_s:.0f} s in {plan.segments} segments, probed between")
            seg = SegmentPlan(
                n,
                plan.times,
                plan.replications,
                plan.segments,
                self.llm_probe,
                self.table,
                plan.profile is not None,
                self.probe_tokens,
            )
            live, cmp, self.before = play_segmented(
                self.scn, self.target, seg, self.before, self.probe_search, self.calib
            )
            return replace(live, attempt=attempt), cmp
        self.say(f"{n} users{again}: live load for {duration_s:.0f} s")
        live = run_load(self.scn, self.target, n, duration_s, drain_s, self.llm_probe["bos_tokens"])
        ov = self.overrides(n, self.probe_search())
        self.say(f"{n} users{again}: simulating")
        return replace(live, attempt=attempt), compare_one(live, self.scn, ov, warmup_s, self.workers)

    def overrides(self, n: int, after: RetrievalProbe | None) -> dict[str, Any]:
        """The simulation's overrides for a load played in one piece, from the probes on both
        sides of it, pooled: the service drifts by as much as the errors verify is after
        (one-at-a-time medians 5.7-7.0 ms between loads here), and a load is best described by
        the isolated measurements that bracket it.  ``after`` opens the next load."""
        before, self.before = self.before, after
        r_ms, contention, wakeup_ms, handback_ms = RetrievalProbe.pooled(before, after)
        sides = [float(np.median(p.alone_ms)) for p in (before, after) if p is not None]
        phases = RetrievalProbe.phases(before, after)
        sched = scheduler_for(self.target, phases)
        if r_ms is not None:
            self.calib["retrieval"][str(n)] = calibration_entry(
                r_ms, contention, wakeup_ms, handback_ms, sides, phases, sched
            )
        duration_s, warmup_s, _drain_s = self.plan.times
        ov = overrides_for(
            self.scn,
            self.target,
            n,
            duration_s,
            warmup_s,
            r_ms,
            self.llm_probe["overhead_ms"],
            self.plan.replications,
            contention,
            wakeup_ms,
            handback_ms,
            sched,
        )
        if self.table:
            ov["llm.step_table"] = self.table
        return ov

    def replay(self, n: int, first: LoadComparison) -> tuple[LiveRun, LoadComparison]:
        """``--confirm``: a load with a row outside its bound played again, re-profiled and
        re-probed, the two plays merged by :func:`~sim.verify.verdict.confirmed`."""
        self.say(f"{n} users: outside ({'; '.join(first.misses)}): playing the load again, re-probed")
        # the first play's per-load calibration, before the replay writes its own
        calib = self.calib
        first_calib = {k: calib[k].pop(str(n)) for k in PER_LOAD_CALIBRATION if str(n) in calib[k]}
        # Probed afresh on both sides: the probe after the first play would otherwise open the
        # replay too, and one odd probe would put both plays outside (README, "--confirm").
        self.before = self.probe_search()
        live, again = self.play(n, False, 1)
        calib.setdefault("first_attempt", {})[str(n)] = first_calib
        return live, confirmed(first, again)
