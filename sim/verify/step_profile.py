"""The running LLM server's own step times, measured in isolation.

``capsim calibrate llm --via server`` and ``capsim verify --profile-llm``.

``llama-batched-bench`` times the engine's forward passes, not the server:
sampling, detokenising and streaming every token, the server loop and its
batch shapes are not in it.  On this project's reference stack (llama.cpp's
``llama-server``, one core) the server took 1.1-1.4x the benchmark's batch-1
decode step per token, and at batch 3 38-39 ms a step against the
benchmark's 30 ms, so a table from the benchmark was optimistic exactly where
the load batches requests.

This profiles the server itself, still in isolation (nothing else sends to it
meanwhile; no closed-loop load): for every prompt length ``pp`` and batch size
``b``, ``b`` streamed requests of ``pp`` prompt tokens and ``tg`` output
tokens (``ignore_eos``) leave at the same instant (a barrier).  A continuous-
batching server admits them together, prefills the ``b`` prompts in one step
and then decodes the ``b`` sequences in lockstep, one token each a step:

* **prefill**: the server's own ``prompt_ms`` (llama-server's ``timings``,
  one value for the ``b`` requests of a shared step; vLLM's ``/metrics``
  histograms, the ``b`` requests' mean: :mod:`sim.verify.server_clock`) or, from a
  server that reports neither, the last first token minus the last send;
* **decode**: the median gap between consecutive streamed tokens while all
  ``b`` sequences decode (after the last first token, up to the first last
  token): the step period the server achieves, sampling and streaming
  included.

A try whose prompts were not prefilled in one step (a request arrived after
the others' prefill began: :func:`one_step`) keeps its decode steps (the
sequences still decode in lockstep once all are in) and is repeated for its
prefill, up to :data:`TRIES` times; a batch never prefilled as one step gets
no prefill row (batch 1 always has one, so the prefill law always has rows).

**Mixed steps** (:func:`profile_mixed`): one prompt sent once ``k`` other
requests are decoding, ``k = 1..parallel-1``; its prompt time is the step that
prefilled it beside ``k`` decode tokens.  Under load llama-server's prompt
time per token rose 8-10 % per sequence decoding beside it, which prefill-only
and decode-only rows cannot show; the table's ``decode_seqs`` column carries it.  Each configuration is
measured ``repeat`` times and the median kept.  The rows have the shape of
``llama-batched-bench``'s (:func:`sim.physics.steptable.step_rows` turns them
into a table).
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.errors import CapsimError
from sim.physics.steptable import BenchRow, StepRow, step_rows, write_table
from sim.spec.target import Target
from sim.verify.loadgen import complete, connection, prompt_ids
from sim.verify.server_clock import bracket, learn_clock, own_timings, server_clock
from sim.verify.wire import TargetError

#: What one request to the server may raise: its failure, or an answer that breaks the API.
REQUEST_ERRORS = (OSError, RuntimeError, http.client.HTTPException, ValueError, TargetError)

TRIES = 5


def lockstep_times(sends: list[float], tokens: list[list[float]]) -> tuple[float, float, float]:
    """From ``b`` streams sent together: (last send, last first token, median decode gap), seconds.

    The decode gaps are those between consecutive tokens of a stream whose later token
    arrives after the last stream's first token (every sequence is then decoding) and no
    later than the first stream's last token (none has left the batch yet).  Streams with
    tokens at ``[1.0, 1.1, 1.3, 1.4]`` and ``[1.05, 1.2, 1.35, 1.6]`` keep the gaps ending at
    1.1, 1.3, 1.4 and 1.2, 1.35 (0.1, 0.2, 0.1 and 0.15, 0.15): median 0.15.
    """
    if not tokens or any(len(t) < 2 for t in tokens):
        raise CapsimError("the server streamed fewer than 2 tokens for a profile request")
    last_first = max(t[0] for t in tokens)
    first_last = min(t[-1] for t in tokens)
    gaps = []
    for ts in tokens:
        a = np.asarray(ts)
        g = np.diff(a)
        inside = (a[1:] > last_first) & (a[1:] <= first_last)
        gaps.extend(g[inside].tolist())
    if not gaps:
        raise CapsimError("no token arrived while every profile request was decoding; raise --ntg")
    return max(sends), last_first, float(statistics.median(gaps))


def one_step(prompt_ms: list[float] | None, firsts: list[float], sent: float) -> bool:
    """Were ``b`` prompts sent together prefilled in one step?

    From the client: the first tokens came within half a lone prompt's share of the
    prefill (``(last first token - last send) / b / 2``), where a late prompt's own step
    puts its first token a whole share later; client-side jitter (a thread waiting for
    the core) is milliseconds against prefills of hundreds.  And with the server's own
    ``prompt_ms`` (llama-server): all the same step's time, within 10 %.  The server's
    times alone cannot tell: two prompts prefilled in two steps, one after the other,
    report two similar times too (each its own), and would read as one step half as long
    as it is."""
    if len(firsts) < 2:
        return True
    span = max(firsts) - sent
    together = max(firsts) - min(firsts) <= 0.5 * span / len(firsts)
    if prompt_ms is None:
        return together
    return together and min(prompt_ms) >= 0.9 * max(prompt_ms)


def _one_batch(target: Target, pp: int, tg: int, b: int, rng: np.random.Generator, timeout_s: float) -> dict:
    """One try at batch ``b``: the row; its ``t_pp_s`` is None when the prompts were not
    prefilled in one step (its decode steps are still ``b`` in lockstep at the end)."""
    sends = [0.0] * b
    tokens: list[list[float]] = [[] for _ in range(b)]
    timings: list[dict] = [{} for _ in range(b)]
    errors: list[str] = []
    prompts = [prompt_ids(rng, pp) for _ in range(b)]
    gate = threading.Barrier(b)
    llm = target.llm_endpoint()
    before = bracket(llm)

    def go(i: int) -> None:
        try:
            conn = connection(llm.url, timeout_s)
            conn.connect()  # before the barrier: after it, each request is one send
            gate.wait(timeout_s)
            sends[i] = time.perf_counter()
            _f, _e, got, tim = complete(llm.url, llm.model, prompts[i], tg, timeout_s, tokens[i], conn)
            timings[i] = tim
            if got != tg:
                errors.append(f"asked {tg} tokens, got {got}")
        except (*REQUEST_ERRORS, threading.BrokenBarrierError) as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=go, args=(i,), daemon=True) for i in range(b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 5)
    if errors or any(t.is_alive() for t in threads):
        raise CapsimError(f"llm endpoint {llm.url}: a profile request failed: {(errors or ['timed out'])[0]}")
    if learn_clock(llm, timings[0]) == "metrics":
        if before is None:  # the clock was learnt from this answer: the batch again, bracketed
            return _one_batch(target, pp, tg, b, rng, timeout_s)
        timings = [own_timings(llm, before, b)] * b  # the b requests' mean
    sent, last_first, gap = lockstep_times(sends, tokens)
    prompt_ms = [float(t["prompt_ms"]) for t in timings if "prompt_ms" in t]
    t_pp: float | None = max(prompt_ms) / 1e3 if len(prompt_ms) == b else last_first - sent
    if not one_step(prompt_ms if len(prompt_ms) == b else None, [t[0] for t in tokens], sent):
        t_pp = None  # a request came late: its prompt had a step of its own
    n = [int(t["prompt_n"]) for t in timings if "prompt_n" in t]
    return dict(pp=max(n) if len(n) == b else pp, tg=tg, b=b, t_pp_s=t_pp, t_tg_s=gap * tg)


def mixed_step(
    target: Target,
    pp: int,
    k: int,
    rng: np.random.Generator,
    timeout_s: float,
    bg_prompt: int = 64,
    bg_tokens: int = 32,
) -> tuple[int, int, int, float, int] | None:
    """One prompt of ``pp`` tokens prefilled while ``k`` sequences decode: a mixed step.

    ``k`` background requests (``bg_prompt`` tokens, ``bg_tokens`` out) are sent together;
    once each has streamed 3 tokens (all decoding), one more request of ``pp`` tokens is
    sent.  Its prompt time (the server's own, :mod:`sim.verify.server_clock`, else its first token
    minus its send) is the step that prefilled it beside the ``k`` decode tokens.  The row is
    ``(k + 1, context, pp + k, step_ms, k)``; None when a background request had finished
    before the prompt's first token (the step was not mixed with all ``k``)."""
    llm = target.llm_endpoint()
    bg: list[list[float]] = [[] for _ in range(k)]
    errors: list[str] = []

    def background(i: int, ids: list[int]) -> None:
        try:
            complete(llm.url, llm.model, ids, bg_tokens, timeout_s, bg[i])
        except REQUEST_ERRORS as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=background, args=(i, prompt_ids(rng, bg_prompt)), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    end = time.perf_counter() + timeout_s
    while any(len(x) < 3 for x in bg) and time.perf_counter() < end and not errors:
        time.sleep(0.002)
    fg: list[float] = []
    before = bracket(llm)
    sent = time.perf_counter()
    tim: dict = {}
    try:
        _f, _e, _got, tim = complete(llm.url, llm.model, prompt_ids(rng, pp), 2, timeout_s, fg)
    except REQUEST_ERRORS as e:
        errors.append(f"{type(e).__name__}: {e}")
    if before is not None and not errors:
        # vLLM's /metrics: the prompt's own prefill when it alone finished meanwhile (the
        # background requests are still decoding); the client's clock would add the wait for
        # the step under way when it arrived
        tim = own_timings(llm, before, 1, exact=True) or tim
    for t in threads:
        t.join(timeout_s + 5)
    if errors or not fg:
        raise CapsimError(f"llm endpoint {llm.url}: a profile request failed: {(errors or ['no tokens'])[0]}")
    if any(not x or x[-1] < fg[0] for x in bg):
        return None  # a background sequence left before the prompt was prefilled
    ms = float(tim["prompt_ms"]) if "prompt_ms" in tim else (fg[0] - sent) * 1e3
    n = int(tim.get("prompt_n", pp))
    ctx = n + k * (bg_prompt + 3)
    return (k + 1, ctx, n + k, ms, k)


def profile_batches(parallel: int, dense: int = 8) -> list[int]:
    """The batch sizes ``--profile-llm`` profiles for a server of ``parallel`` slots: every one up to
    ``dense``, then doubling, and ``parallel`` itself (the table interpolates linearly between
    batches; a GPU server's 256 slots would otherwise take 256 batch profiles).  4 -> 1-4;
    12 -> 1-8, 12; 256 -> 1-8, 16, 32, 64, 128, 256."""
    out = list(range(1, min(parallel, dense) + 1))
    b = dense
    while b * 2 < parallel:
        b *= 2
        out.append(b)
    if parallel > dense:
        out.append(parallel)
    return out


def profile_server(
    target: Target,
    npp: list[int],
    ntg: int,
    npl: list[int],
    repeat: int = 2,
    timeout_s: float = 120.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Rows ``{pp, tg, b, t_pp_s, t_tg_s}``, the median of ``repeat`` runs of every (pp, b)."""
    llm = target.llm_endpoint()
    if max(npl) > llm.parallel:
        raise CapsimError(f"--npl: batch {max(npl)} exceeds the server's slots (target llm.parallel = {llm.parallel})")
    rng = np.random.default_rng(seed)
    pre: dict[tuple[int, int], list[float]] = {}  # (pp, b) -> prefill steps of the tries that were one step
    dec: dict[tuple[int, int], list[float]] = {}  # (pp, b) -> decode runs (t_tg_s), one per repeat
    pp_seen: dict[int, int] = {}  # the prompt length asked -> the server's count
    for r in range(repeat):
        for pp in npp:
            for b in npl:
                for _ in range(TRIES):
                    row = _one_batch(target, pp, ntg, b, rng, timeout_s)
                    if row["t_pp_s"] is not None:
                        pre.setdefault((pp, b), []).append(row["t_pp_s"])
                        break
                dec.setdefault((pp, b), []).append(row["t_tg_s"])
                pp_seen[pp] = row["pp"]
                if progress:
                    t_pp = row["t_pp_s"]
                    pf = f"{t_pp * 1e3:8.1f} ms" if t_pp is not None else f"not one step in {TRIES} tries"
                    progress(
                        f"  run {r + 1}/{repeat}  prompt {row['pp']:>5}  batch {b}: "
                        f"prefill {pf}, decode step {row['t_tg_s'] / ntg * 1e3:6.2f} ms"
                    )
    # A prefill row from the tries that were one step (a batch the server never took as one
    # step keeps its decode row only; batch 1 always is one step, so the law has rows).
    return [
        BenchRow(
            pp=pp_seen[pp],
            tg=ntg,
            b=b,
            t_pp_s=float(statistics.median(pre[(pp, b)])) if pre.get((pp, b)) else 0.0,
            t_tg_s=float(statistics.median(dec[(pp, b)])),
        )
        for pp in npp
        for b in npl
    ]


def profile_mixed(
    target: Target, pp: int, ks: list[int], repeat: int = 3, timeout_s: float = 120.0, seed: int = 1
) -> list[tuple[int, int, int, float, int]]:
    """Mixed-step rows (:func:`mixed_step`) for ``k`` in ``ks``, each the median of ``repeat`` tries
    that were mixed (up to :data:`TRIES` attempts each); a ``k`` never mixed gets no row."""
    rng = np.random.default_rng(seed)
    out = []
    for k in ks:
        got = []
        for _ in range(repeat):
            for _ in range(TRIES):
                row = mixed_step(target, pp, k, rng, timeout_s)
                if row is not None:
                    got.append(row)
                    break
        if got:
            ms = float(statistics.median(r[3] for r in got))
            b, ctx, n, _ms, kk = got[0]
            out.append((b, ctx, n, ms, kk))
    return out


#: Where a profile's prompt times came from, by the server's clock (:mod:`sim.verify.server_clock`).
PROMPT_CLOCK = {
    "timings": "the server's streamed timings",
    "metrics": "the server's /metrics histograms",
    "none": "the client (first token less send)",
}


def describe(target: Target, npp: list[int], ntg: int, npl: list[int], repeat: int) -> str:
    """The table's source line (after the profile: it names the clock the prompt times came from)."""
    llm = target.llm_endpoint()
    clock = PROMPT_CLOCK.get(server_clock(llm) or "", "")
    return (
        f"server profile of {llm.url} (isolated, {'/'.join(map(str, npl))} requests sent together): "
        f"npp {npp} ntg {ntg}, median of {repeat} run(s)" + (f"; prompt times from {clock}" if clock else "")
    )


@dataclass(frozen=True)
class ServerProfile:
    """``--profile-llm``: profile the server alone before every load (:mod:`sim.verify.step_profile`)."""

    folder: Path  # where the per-load tables are written
    npp: tuple[int, ...] = (64, 192)
    ntg: int = 24
    repeat: int = 3

    def table(self, target: Target, users: int, progress=None, replay: bool = False) -> str:
        npl = profile_batches(target.llm_endpoint().parallel)
        rows = profile_server(target, list(self.npp), self.ntg, npl, self.repeat)
        steps: list[StepRow] = step_rows(rows)
        steps += profile_mixed(target, max(self.npp), npl[:-1], self.repeat)
        path = self.folder / f"steps_{users}users{'_replay' if replay else ''}.csv"
        beside = "/".join(map(str, npl[:-1])) or "0"
        write_table(
            steps,
            path,
            describe(target, list(self.npp), self.ntg, npl, self.repeat)
            + f"; mixed steps: {max(self.npp)}-token prompt beside {beside} decoders",
        )
        if progress:
            dec = ", ".join(f"b{r['b']} {r['t_tg_s'] / r['tg'] * 1e3:.1f}" for r in rows if r["pp"] == rows[0]["pp"])
            progress(f"{users} users: server profiled alone -> {path.name} (decode step ms: {dec})")
        return str(path.resolve())
