"""Isolated measurements of a real stack, taken with nothing else sending: the LLM server's
overhead and speed, and the retrieval service one search at a time, after idle spells, ``m`` at
once and in pairs.  Everything a load's prediction is calibrated from, never the load itself."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

import numpy as np

from sim.errors import CapsimError
from sim.physics.gpu import attention_pairs
from sim.physics.sharing import contention_from_stretch
from sim.physics.steptable import load_table
from sim.spec.target import LLMTarget, Target
from sim.verify.loadgen import (
    SEARCH_TIMEOUT_S,
    complete,
    connection,
    prompt_ids,
    search,
    server_cpu_ms,
    server_ms,
)
from sim.verify.server_clock import bracket, learn_clock, own_timings, server_clock
from sim.verify.wire import DeadlineConnection, EndpointError, TargetError


def _probe_completion(llm: LLMTarget, ids: list[int], max_tokens: int, timeout_s: float) -> tuple[float, dict]:
    """One isolated completion of a probe: (ms from its send to its first token, the server's own
    account of it in llama-server's ``timings`` keys, from whichever clock the server has
    (:mod:`sim.verify.server_clock`); from a server with none, the client's: ``prompt_ms`` the first
    token less the send, ms per token from the streamed tokens' arrivals).  A failure, or an
    answer without tokens, is one CapsimError."""
    before = bracket(llm)
    toks: list[float] = []
    usage: dict = {}
    t0 = time.perf_counter()
    try:
        first, _end, _got, tim = complete(llm.url, llm.model, ids, max_tokens, timeout_s, toks, usage=usage)
    except (OSError, RuntimeError, http.client.HTTPException, ValueError) as e:
        raise CapsimError(f"llm endpoint {llm.url}: a probe completion failed: {e}") from None
    if first is None:
        raise CapsimError(f"llm endpoint {llm.url} streamed no tokens")
    clock = learn_clock(llm, tim)
    if clock == "timings":
        if not tim:
            raise CapsimError(f"llm endpoint {llm.url} streamed no timings (it did before)")
        return (first - t0) * 1e3, tim
    if clock == "metrics":
        if before is None:  # the clock was learnt from this answer: ask again, bracketed
            return _probe_completion(llm, ids, max_tokens, timeout_s)
        tim = own_timings(llm, before, 1)
        if not tim:
            raise CapsimError(f"llm endpoint {llm.url}: /metrics did not count the probe request")
        return (first - t0) * 1e3, tim
    tim = {"prompt_n": int(usage.get("prompt_tokens", len(ids))), "prompt_ms": (first - t0) * 1e3}
    if len(toks) >= 2:
        tim["predicted_per_token_ms"] = (toks[-1] - toks[0]) / (len(toks) - 1) * 1e3
    return (first - t0) * 1e3, tim


class SpeedTry(TypedDict):
    """One request of a speed probe: its prompt (as the server counted it) and the server's own times."""

    prompt_tokens: int
    prompt_ms: float
    decode_ms_per_token: float


class LLMSpeed(TypedDict):
    """:func:`probe_llm_speed`: the medians of the server's own prompt time and ms per decoded
    token over requests alone, and every request's (``tries``)."""

    prompt_tokens: int
    prompt_ms: float
    decode_ms_per_token: float
    output_tokens: int
    tries: list[SpeedTry]


class LLMProbe(TypedDict):
    """:func:`probe_llm`: the BOS tokens the server adds, the HTTP + SSE overhead (ms), which
    clock the server's times came from, and its speed alone (``server_alone``)."""

    bos_tokens: int
    overhead_ms: float
    server_clock: NotRequired[str | None]
    server_alone: LLMSpeed | None


def probe_llm(target: Target, n: int = 5, prompt_tokens: int = 32, timeout_s: float = 60.0) -> LLMProbe:
    """Isolated, one at a time: the BOS the server adds to a token prompt, and the HTTP + SSE
    overhead (client first token minus the server's own prompt time; 0 from a server that
    reports no time of its own: the client-timed prefill steps then hold it).  ``server_clock``
    says which clock the server's times came from (:mod:`sim.verify.server_clock`)."""
    rng = np.random.default_rng(12345)
    llm = target.llm_endpoint()
    over, extra = [], []
    for _ in range(n + 1):
        ttft_ms, tim = _probe_completion(llm, prompt_ids(rng, prompt_tokens), 2, timeout_s)
        over.append(ttft_ms - float(tim.get("prompt_ms", 0.0)))
        extra.append(int(tim.get("prompt_n", prompt_tokens)) - prompt_tokens)
    clock = server_clock(llm)
    return {
        "bos_tokens": max(0, int(np.median(extra[1:]))),
        "overhead_ms": float(np.median(over[1:])) if clock != "none" else 0.0,
        "server_clock": clock,
        # Longer requests alone: the server's own prompt and per-token times, to hold against the
        # step table (reported, not fed to the prediction).
        "server_alone": probe_llm_speed(target, timeout_s=timeout_s),
    }


#: Pause before each speed probe.  Live requests never arrive right behind one another from
#: the same client, and the server is slower after a pause: on this project's 2-core VM a
#: 145-token prompt alone took 280 ms after 2.5 s idle against 274 ms back to back (medians of
#: 15 each), ms per token 11.7 against 11.5; and in six runs' 4- and 7-user loads the live
#: prompts took 3-4 % (median) and 5-7 % (mean) longer than back-to-back probes had said.
PROBE_PAUSE_S = 1.0


def probe_llm_speed(
    target: Target,
    n: int = 3,
    prompt_tokens: int = 96,
    output_tokens: int = 24,
    timeout_s: float = 60.0,
    pause_s: float = 0.0,
) -> LLMSpeed:
    """The server's own speed right now, isolated: ``n`` requests one at a time, each a
    ``prompt_tokens`` prompt and ``output_tokens`` decoded alone, each after ``pause_s`` of idle;
    the medians of the server's own ``prompt_ms`` and ms per decoded token (~0.5 s a request for
    the 124.7 M model on one core), and every request's (``tries``).  Between the segments of a
    load it tells how far the host has drifted since the step profile."""
    rng = np.random.default_rng(2024)
    llm = target.llm_endpoint()
    got = []
    for _ in range(n):
        if pause_s > 0:
            time.sleep(pause_s)
        _ttft, tim = _probe_completion(llm, prompt_ids(rng, prompt_tokens), output_tokens, timeout_s)
        got.append(
            (
                int(tim.get("prompt_n", prompt_tokens)),
                float(tim.get("prompt_ms", np.nan)),
                float(tim.get("predicted_per_token_ms", np.nan)),
            )
        )
    return {
        "prompt_tokens": int(np.median([g[0] for g in got])),
        "prompt_ms": float(np.median([g[1] for g in got])),
        "decode_ms_per_token": float(np.median([g[2] for g in got])),
        "output_tokens": output_tokens,
        "tries": [{"prompt_tokens": a, "prompt_ms": b, "decode_ms_per_token": c} for a, b, c in got],
    }


def probe_retrieval(
    target: Target,
    k: int,
    n: int = 200,
    gap_s: float = 0.0,
    timeout_s: float | None = None,
    server: list | None = None,
    cpu: list | None = None,
) -> np.ndarray:
    """Isolated single searches, one at a time over keep-alive (HTTP overhead included), ms.

    ``gap_s`` spaces them (default back to back).  On this shared 2-core box, probes 50 ms apart
    timed p50 4.5 ms and back-to-back ones 0.9 ms, while the searches under load took 1.8-2.3 ms:
    wake-up and co-tenant noise, not the search, dominate a ~1 ms call here.  ``server``, when
    given, receives the service's own time of each search (None where it reports none);
    ``cpu`` its process CPU clock at each answer (:func:`~sim.verify.loadgen.server_cpu_ms`)."""
    timeout_s = timeout_s or SEARCH_TIMEOUT_S
    assert target.retrieval is not None
    conn = connection(target.retrieval.url, timeout_s)
    out = []
    for i in range(n + 20):
        if gap_s > 0:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        body = search(conn, i, k)
        if i >= 20:
            out.append((time.perf_counter() - t0) * 1e3)
            if server is not None:
                server.append(server_ms(body))
            if cpu is not None:
                cpu.append(server_cpu_ms(body))
    conn.close()
    return np.asarray(out)


def probe_wakeup(
    target: Target,
    k: int,
    rounds: int = 3,
    gaps_s: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03, 0.1),
    timeout_s: float | None = None,
    train_s: float = 1.0,
    block: int = 40,
) -> list[tuple[float, float]]:
    """Isolated: the extra time of a search that finds the service idle, by idle time:
    ``[(idle_ms, extra_ms), ...]``.

    ``rounds`` rounds over the gaps, one search at a time: per gap a train of single
    searches, each after an idle gap of that length, lasting ``train_s``, between two
    blocks of ``block`` searches back to back (each search a different query: repeating
    one would time its own warm cache lines).  Per gap, the median of the trains' searches
    (the first three of each left out, while the core settles into the train's rhythm)
    minus the median of the blocks around them (their last three quarters: back to speed).

    Why trains, and why blocks on both sides.  A search after a pause is slower by an
    amount that depends on how the core has been used in the last few hundred ms, not only
    on the last gap: on this project's 2-core VM, a search 30-100 ms after a burst of six
    back to back cost ~1.1 ms extra, while the searches of a closed loop at 7 % load (the
    same gaps, but between single searches) cost ~2.4 ms extra; the burst-based probe left
    2 users 17 % optimistic.  A train reproduces the pattern of a lightly loaded closed
    loop: single searches spaced by idle time.  The speed the blocks come back to drifts
    (1-s medians of back-to-back searches: sd 7 %, 4.8-7.3 ms over three minutes with
    nothing else running), so each train is held against the blocks on its two sides,
    taken within the same two seconds, not against a probe taken earlier."""
    timeout_s = timeout_s or SEARCH_TIMEOUT_S
    assert target.retrieval is not None
    conn = connection(target.retrieval.url, timeout_s)
    q = [500]

    def one() -> float:
        q[0] = 500 + (q[0] + 7 - 500) % 500  # queries 500-999, never the same twice running
        t0 = time.perf_counter()
        search(conn, q[0], k)
        return time.perf_counter() - t0

    spaced: dict[float, list[float]] = {g: [] for g in gaps_s}
    settled: dict[float, list[float]] = {g: [] for g in gaps_s}
    before = [one() for _ in range(block)]
    for _ in range(rounds):
        for g in gaps_s:
            train: list[float] = []
            end = time.perf_counter() + train_s
            while time.perf_counter() < end or len(train) < 8:
                time.sleep(g)
                train.append(one())
            after = [one() for _ in range(block)]
            spaced[g].extend(train[3:])
            settled[g].extend(before[block // 4 :] + after[block // 4 :])
            before = after
    conn.close()

    return [(g * 1e3, wakeup_extra_ms(spaced[g], settled[g])) for g in gaps_s]


def wakeup_extra_ms(cold_s: list[float], settled_s: list[float]) -> float:
    """The wake-up probe's figure for one idle gap: the median search after the gap over the
    median back-to-back search taken around it (seconds in); >= 0, ms."""
    return max(0.0, float(np.median(cold_s)) - float(np.median(settled_s))) * 1e3


def _searches_together(
    url: str, k: int, m: int, n: int, timeout_s: float, server: list | None = None, cpu: list | None = None
) -> list[list[float]]:
    """``m`` clients, each on its own keep-alive connection, ``n`` searches back to back, started
    together after 10 warm-up searches each: every client's latencies, ms (``server``, when
    given, receives ``(latency ms, the service's own ms or None)`` of every search; ``cpu`` the
    service's CPU clock at every answer, :func:`~sim.verify.loadgen.server_cpu_ms`)."""
    times: list[list[float]] = [[] for _ in range(m)]
    gate = threading.Barrier(m)

    errors: list[BaseException] = []

    def client(i: int) -> None:
        conn = connection(url, timeout_s)
        try:
            for j in range(10):
                search(conn, 10_000 * i + j, k)
            gate.wait(timeout_s)
            for j in range(n):
                t0 = time.perf_counter()
                body = search(conn, 10_000 * i + 10 + j, k)
                times[i].append((time.perf_counter() - t0) * 1e3)
                if server is not None:
                    server.append((times[i][-1], server_ms(body)))
                if cpu is not None:
                    cpu.append(server_cpu_ms(body))
        except (EndpointError, TargetError, threading.BrokenBarrierError) as e:
            errors.append(e)
            gate.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(m)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s * (n + 20))
    first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), None)
    if first is not None:
        raise first
    return times


PAIR_OFFSETS_MS = (0.0, 2.0, 4.0, 6.0)  # how far apart the two searches of a pair are sent


PAIR_PAUSE_S = 0.03  # idle time before every pair


def probe_pairs(
    target: Target,
    k: int,
    offsets_ms: Sequence[float] = PAIR_OFFSETS_MS,
    n: int = 40,
    pause_s: float = PAIR_PAUSE_S,
    timeout_s: float | None = None,
) -> list[dict[str, float]]:
    """Isolated: two searches sent ``offset`` ms apart after ``pause_s`` idle, nothing else
    sending, ``n`` pairs per offset; per offset the medians of how far apart they really
    left (``apart_ms``) and of the latency of the one sent first and the one sent second, ms.

    The smallest case of sharing the service's cores, held against the model's sharing rule
    by :func:`sim.verify.pairs.pair_model` (the same pool and inputs as every load's
    prediction).  On this project's stack (two search threads on one core) the two of a
    pair sent 0-2 ms apart ended within about a millisecond of each other, some two
    searches and a wake-up after the first left; 4 ms apart, the first waited while the
    second ran (its scheduler slice was spent), as the scheduled pool has it.
    An unreachable service or a failed search is a :class:`CapsimError`."""
    timeout_s = timeout_s or SEARCH_TIMEOUT_S
    r = target.retrieval
    assert r is not None
    conns = [connection(r.url, timeout_s) for _ in range(2)]
    try:
        for i, c in enumerate(conns):
            for j in range(10):
                search(c, 10_000 * i + j, k)
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        raise CapsimError(f"retrieval endpoint {r.url}: the pair probe failed: {type(e).__name__}: {e}") from None
    out = []
    for off in offsets_ms:
        rows = []
        for p in range(n):
            time.sleep(pause_s)
            rows.append(_one_pair(conns, r.url, k, p, off, timeout_s))
        x = np.asarray(rows)
        med = np.median(x, axis=0)
        out.append(dict(offset_ms=float(off), apart_ms=float(med[0]), first_ms=float(med[1]), second_ms=float(med[2])))
    for c in conns:
        c.close()
    return out


def _one_pair(
    conns: list[DeadlineConnection], url: str, k: int, p: int, off: float, timeout_s: float
) -> tuple[float, float, float]:
    """Pair ``p``: two searches released together, the second ``off`` ms late; how far apart they
    left and the latency of the one sent first and the one sent second, ms."""
    errors: list[str] = []
    sent = [0.0, 0.0]
    lat = [0.0, 0.0]
    gate = threading.Barrier(2)

    def one(i: int) -> None:
        try:
            gate.wait(timeout_s)
            if i:
                time.sleep(off / 1e3)
            sent[i] = time.perf_counter()
            search(conns[i], 500 * i + p % 500, k)
            lat[i] = (time.perf_counter() - sent[i]) * 1e3
        except (OSError, RuntimeError, http.client.HTTPException, threading.BrokenBarrierError) as e:
            errors.append(f"{type(e).__name__}: {e}")
        except TargetError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    if errors or any(t.is_alive() for t in threads) or min(lat) <= 0:
        why = errors[0] if errors else "timed out"
        raise CapsimError(f"retrieval endpoint {url}: a pair of searches did not finish: {why}")
    a, b = (0, 1) if sent[0] <= sent[1] else (1, 0)
    return (sent[b] - sent[a]) * 1e3, lat[a], lat[b]


def probe_contention(
    target: Target,
    k: int,
    alone_ms: np.ndarray,
    n: int = 100,
    timeout_s: float | None = None,
    alone_server_ms: Sequence[float | None] = (),
    alone_cpu_ms: Sequence[float | None] = (),
) -> tuple[tuple[float, ...], list[float]]:
    """Isolated: how much slower each search runs with ``m`` in service at once, and how long
    an answer waits for the core a search still running holds.

    For ``m = 2 .. workers``: ``m`` clients search back to back at the same time (``m``
    searches always in service, nothing else sending); the mean time of a search over the
    mean of ``alone_ms`` (the one-at-a-time probe) is the stretch at ``m``, and the
    contention is what it adds to sharing the service's cores in time
    (:func:`sim.physics.sharing.contention_from_stretch`): two search threads on one core
    that take 2.3x as long as one alone have contention 1.15.  ``(1, c2, ...)``; empty with
    one worker.

    A service on one core that reports its CPU clock (``alone_cpu_ms``: the clock at each
    answer of the one-at-a-time probe) is held to its CPU instead: the contention is its CPU
    per search at ``m`` at once over its CPU per search alone (:func:`contention_from_cpu`).
    A latency stretch counts every pause of the core (a co-tenant's process on it, the
    hypervisor's steal) as slowdown; the service's own CPU clock does not, and slowing the
    search's work is what the contention stands for.

    The hand-back samples (ms; empty with one worker, or where the service does not report
    its own search time): at ``m = workers``, each search's time outside the search itself
    (latency minus the service's own time) over the median of the same alone.  Two search
    threads on one core behind one event loop: alone, the HTTP part took 1.1 ms (p50) to
    1.3 ms (p95); two at once, 2.2 ms to 5.9 ms, while the throughput stayed that of one
    search at a time (202-216 searches/s for 1 to 6 clients): no extra work, an answer
    waiting for the core while the other search holds it (a scheduler slice).  See
    :func:`handback_samples`."""
    timeout_s = timeout_s or SEARCH_TIMEOUT_S
    r = target.retrieval
    assert r is not None
    if r.workers < 2:
        return (), []
    base = float(np.mean(alone_ms))
    stretch = [1.0]
    clocks: list[list[float | None]] = []
    pairs: list[tuple[float, float | None]] = []
    for m in range(2, r.workers + 1):
        pairs = []
        clock: list[float | None] = []
        times = _searches_together(r.url, k, m, n, timeout_s, pairs, clock)
        got = [x for ts in times for x in ts]
        if len(got) < m * n:
            raise CapsimError(f"retrieval endpoint {r.url}: the contention probe at {m} at once did not finish")
        stretch.append(float(np.mean(got)) / base)
        clocks.append(clock)
    by_cpu = None
    if len(r.cores) == 1:
        by_cpu = contention_from_cpu(alone_cpu_ms, clocks, loop_cpu_ms(alone_cpu_ms, alone_server_ms) or 0.0)
    contention = by_cpu if by_cpu is not None else contention_from_stretch(stretch, len(r.cores) or r.workers)
    return contention, handback_samples([float(x) for x in alone_ms], alone_server_ms, pairs)


def cpu_per_request_ms(cpu_ms: Sequence[float | None]) -> float | None:
    """The service's mean CPU per request, ms, from its CPU clock at each of a run of answers
    (in any order: answers of clients searching at once): the clock's span over the answers
    between the first and the last.  None unless every answer reported it, or with fewer than
    3.  Stamps 100, 112, 106 and 118 ms: 18 ms over 3 answers, 6 ms a request."""
    if len(cpu_ms) < 3 or any(x is None for x in cpu_ms):
        return None
    x = np.asarray(cpu_ms, dtype=float)
    return float(x.max() - x.min()) / (len(x) - 1)


def contention_from_cpu(
    alone_cpu_ms: Sequence[float | None], together_cpu_ms: Sequence[Sequence[float | None]], loop_ms: float
) -> tuple[float, ...] | None:
    """``(1, c2, ...)`` from the service's CPU clock: ``together_cpu_ms[i]`` its clock at the
    answers of ``m = i + 2`` clients searching at once, ``alone_cpu_ms`` one at a time;
    ``c_m`` is the CPU per request at ``m`` over that alone (:func:`cpu_per_request_ms`), each
    less ``loop_ms``, the event loop's CPU per request (:func:`loop_cpu_ms`), which the
    searches beside it do not slow (the model stretches the search alone); values below 1
    (noise) read as 1.  None when any clock is missing or the search's CPU alone is not
    positive.  Alone 5 ms a request, two at once 6, loop 1 ms: ``(1, (6 - 1) / (5 - 1)) =
    (1, 1.25)``."""
    alone = cpu_per_request_ms(alone_cpu_ms)
    together = [cpu_per_request_ms(c) for c in together_cpu_ms]
    if alone is None or alone - loop_ms <= 0 or any(t is None for t in together):
        return None
    return (1.0, *(max(1.0, (float(t) - loop_ms) / (alone - loop_ms)) for t in together if t is not None))


def handback_samples(
    alone_ms: Sequence[float], alone_server_ms: Sequence[float | None], together: Sequence[tuple[float, float | None]]
) -> list[float]:
    """Time outside the search itself (latency minus the service's own search time) of searches
    run beside others, over the median of the same alone, ms, >= 0 (see
    :func:`probe_contention`); empty unless every search reported its own time."""
    if not together or not alone_server_ms or len(alone_server_ms) != len(alone_ms):
        return []
    if any(s is None for s in alone_server_ms) or any(s is None for _, s in together):
        return []
    outside_alone = float(np.median([a - float(s) for a, s in zip(alone_ms, alone_server_ms) if s is not None]))
    return [round(max(0.0, lat - float(s) - outside_alone), 4) for lat, s in together if s is not None]


def loop_cpu_ms(cpu_ms: Sequence[float | None], search_ms: Sequence[float | None]) -> float | None:
    """The service's CPU per request outside the search itself, ms, from searches back to back on
    one connection: the median step of its CPU clock between consecutive answers (one request's
    CPU: parse, search, answer) less the median search.  None unless every answer reported
    both, or with fewer than 3.  Clock stamps 0, 5.0, 10.1 and 15.0 ms are steps of 5.0, 5.1 and
    4.9 (median 5.0); with searches of 4.3, 4.4 and 4.5 ms: 0.6 ms."""
    if len(cpu_ms) < 3 or any(x is None for x in cpu_ms) or any(x is None for x in search_ms):
        return None
    steps = np.diff(np.asarray(cpu_ms, dtype=float))
    return float(np.median(steps) - np.median(np.asarray(search_ms, dtype=float)))


def server_vs_table(path: str, alone: Mapping[str, Any]) -> dict[str, float]:
    """The server's own times for one request alone over what the table says for the same work."""
    t = load_table(path)
    n = alone["prompt_tokens"]
    return {
        "prompt_ratio": alone["prompt_ms"] / t.prefill_ms(n, attention_pairs(n, 0)),
        "decode_ratio_batch1": alone["decode_ms_per_token"] / t.decode_ms(1, n + alone["output_tokens"] / 2),
    }
