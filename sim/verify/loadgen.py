"""A real closed-loop load generator playing a scenario's workload against a real stack.

Each of ``users`` threads loops like the simulator's closed user
(:meth:`sim.engine.pipeline.Model.closed_user`), drawing from the same named
streams: think (the scenario's ``think_s``), pick a query key (its popularity
model), look the key up in an in-process LRU (the application's answer cache,
:class:`sim.engine.cache.LRUCache`, shared by every user under a lock), on a
miss call the retrieval service over HTTP (``POST /search {"query_id", "k"}``)
and insert the key, then stream ``POST /v1/completions`` with a prompt of
exactly the drawn number of tokens (token ids, so no tokenizer is involved)
and ``max_tokens`` = the drawn output length with ``ignore_eos``.

Every request's stage timestamps are kept (:data:`COLUMNS`).  A request that
fails (HTTP error, connection error, fewer tokens than asked) is recorded
with its reason, never dropped.  Everything is bounded: arrivals stop at
``duration_s``, in-flight requests get ``drain_s`` more, every socket has a
timeout.

The generator's own cost is measured: how late each think timer fires
(``lag_ms``: the thread was runnable but did not get the core) and the
process CPU time per request.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from dataclasses import dataclass, field, fields

import numpy as np

from sim import distributions as D
from sim.engine.cache import LRUCache
from sim.engine.pipeline import TokenCounts
from sim.engine.workload import Popularity, QueryKeys
from sim.errors import CapsimError
from sim.rng import stream
from sim.spec.schema import Scenario, build_distribution
from sim.spec.target import Target
from sim.verify.wire import DeadlineConnection, EndpointError, TargetError, connection, finite_number

#: The live run draws from replication 0 of the scenario's streams: the simulated replication 0
#: replays exactly the same think times, keys and token counts (common random numbers).
LIVE_REP = 0


@dataclass(kw_only=True)
class RequestRow:
    """One live request as the load generator saw it: who asked what when, each stage's time
    (ms), the LLM's send and end times (s since the load started), the server's own account
    (llama-server's ``timings``: diagnosis only), and whether it succeeded or why not.  A stage
    the request did not reach keeps its default."""

    user: int
    t_start_s: float
    key: int
    cache_hit: bool = False
    cache_ms: float = 0
    retrieval_ms: float = 0.0
    ttft_ms: float = math.nan
    e2e_ms: float = math.nan
    prompt_tokens: int
    output_tokens: int
    tokens_received: int = 0
    llm_sent_s: float = 0
    llm_end_s: float = 0
    lag_ms: float = 0
    server_prompt_ms: float = math.nan
    server_decode_ms_per_token: float = math.nan
    ok: bool = False
    error: str = ""


#: The columns of a load's records, one per :class:`RequestRow` field.
COLUMNS = tuple(f.name for f in fields(RequestRow))

#: How long one search may take, whole answer, before it counts as failed.
SEARCH_TIMEOUT_S = 10.0

#: Fragments of a request's error that mean the target stopped answering: its user stops.
TIMED_OUT = ("timed out", "no answer within", "no whole answer within", "past its deadline")

VOCAB_LO, VOCAB_HI = 100, 31_000  # ordinary token ids of the Llama SPM vocabulary


def check_reachable(target: Target, timeout_s: float = 3.0) -> None:
    """GET /health on every endpoint; one CapsimError line if any does not answer 200."""
    eps = ([("llm", target.llm.url)] if target.llm else []) + (
        [("retrieval", target.retrieval.url)] if target.retrieval else []
    )
    for name, url in eps:
        c = connection(url, timeout_s)
        try:
            c.request("GET", "/health")
            r = c.getresponse()
            r.read(1 << 16)
            c.finish("GET /health")
        except EndpointError as e:
            raise CapsimError(str(e)) from None
        except (OSError, http.client.HTTPException) as e:
            if c.expired or isinstance(e, (TimeoutError, http.client.HTTPException)):
                raise CapsimError(str(c.failure("GET /health", e, name))) from None
            raise CapsimError(f"{name} endpoint {url} is unreachable: {e.strerror or e}") from None
        finally:
            c.done()
            c.close()
        if r.status != 200:
            raise CapsimError(f"{name} endpoint {url}/health answered HTTP {r.status}")


#: Most bytes of one /search answer read: a list of k ids and scores is kilobytes.
MAX_SEARCH_BYTES = 1 << 20


def search(conn: DeadlineConnection, key: int, k: int) -> bytes:
    """One ``POST /search``; the response body (see :func:`server_ms`), checked: a JSON
    object whose ``search_us`` and ``cpu_us``, when present, are finite numbers >= 0.
    A failed request is an :class:`EndpointError`, a malformed answer a :class:`TargetError`."""
    body = json.dumps({"query_id": int(key), "k": int(k)}).encode()  # bytes: one send()
    try:
        try:
            conn.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection: reconnect once, as a pool would.
            conn.close()
            conn.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
        data = r.read(MAX_SEARCH_BYTES + 1)
        conn.finish("POST /search")
        if not r.isclosed():
            conn.close()  # a longer answer than read: its connection cannot be reused
    except (OSError, http.client.HTTPException) as e:
        raise conn.failure("POST /search", e) from None
    finally:
        conn.done()
    if r.status != 200:
        raise EndpointError(f"{conn.endpoint('/search')}: POST /search answered HTTP {r.status}: {data[:100]!r}")
    check_search_answer(data, conn.url)
    return data


def check_search_answer(data: bytes, url: str) -> dict:
    """A /search answer as the JSON object it must be, or a :class:`TargetError` naming the field."""
    if len(data) > MAX_SEARCH_BYTES:
        raise TargetError(f"retrieval endpoint {url}: POST /search answered more than {MAX_SEARCH_BYTES:,} bytes")
    try:
        doc = json.loads(data.decode("utf-8"))  # NaN and Infinity parse: the field checks name them
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TargetError(
            f"retrieval endpoint {url}: POST /search answered {data[:40]!r}..., not JSON ({str(e)[:60]})"
        ) from None
    if not isinstance(doc, dict):
        raise TargetError(f"retrieval endpoint {url}: POST /search answered a JSON {type(doc).__name__}, not an object")
    for field_ in ("search_us", "cpu_us"):
        if field_ in doc:
            finite_number(doc[field_], f"retrieval endpoint {url}: POST /search field {field_}")
    return doc


def _reported_ms(body: bytes, key: str) -> float | None:
    """A microsecond figure the service put in its answer under ``key``, ms; None without one
    (the answer was checked by :func:`search`)."""
    try:
        us = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return None
    return float(us) / 1e3 if isinstance(us, (int, float)) and not isinstance(us, bool) else None


def server_cpu_ms(body: bytes) -> float | None:
    """The service's process CPU time so far (``cpu_us`` in its answer), ms; None when it
    reports none."""
    return _reported_ms(body, "cpu_us")


def server_ms(body: bytes) -> float | None:
    """The service's own time for the search (``search_us`` in its answer), ms; None when it
    reports none (any search service will do for verify; this one time is optional)."""
    return _reported_ms(body, "search_us")


def complete(
    url: str,
    model: str,
    prompt_ids: list[int],
    max_tokens: int,
    timeout_s: float,
    token_times: list[float] | None = None,
    conn: DeadlineConnection | None = None,
    usage: dict | None = None,
) -> tuple[float | None, float, int, dict]:
    """Stream one completion on a new connection (llama-server closes a streamed one), or on
    ``conn``, already connected: (first-token time, end time, tokens received, server timings:
    llama-server's streamed ``timings``, else empty).  ``token_times``, when given, receives the
    arrival time of every chunk that carries a token; ``usage`` the OpenAI ``usage`` object."""
    conn = conn or connection(url, timeout_s)
    try:
        return _complete(conn, model, prompt_ids, max_tokens, token_times, usage)
    except (OSError, http.client.HTTPException) as e:
        raise conn.failure("POST /v1/completions", e) from None
    finally:
        conn.done()
        conn.close()


#: Most bytes of one streamed line (a chunk of one token and its JSON, or the closing timings).
MAX_LINE_BYTES = 1 << 16


def _complete(
    conn: DeadlineConnection,
    model: str,
    prompt_ids: list[int],
    max_tokens: int,
    token_times: list[float] | None,
    usage: dict | None,
) -> tuple[float | None, float, int, dict]:
    where = f"llm endpoint {conn.url}: POST /v1/completions"
    r = _post_completion(conn, model, prompt_ids, max_tokens)
    got = _read_stream(r, where, max_tokens, token_times, usage)
    for _ in range(16):  # the rest of the stream (the closing chunk), bounded
        if not r.read(MAX_LINE_BYTES):
            break
    else:
        raise TargetError(f"{where}: more than {16 * MAX_LINE_BYTES:,} bytes after the last token")
    conn.finish("POST /v1/completions")
    end = time.perf_counter()
    n = int(got.usage_tokens) if got.usage_tokens is not None else got.chunks
    return got.first, end, n, got.timings


def _post_completion(
    conn: DeadlineConnection, model: str, prompt_ids: list[int], max_tokens: int
) -> http.client.HTTPResponse:
    """Send the streamed completion request; its response, once it answered HTTP 200."""
    body = {
        "model": model,
        "prompt": prompt_ids,
        "max_tokens": int(max_tokens),
        "stream": True,
        "ignore_eos": True,
        "temperature": 0.0,
        "cache_prompt": False,
        "stream_options": {"include_usage": True},
    }
    conn.request(
        "POST",
        "/v1/completions",
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    r = conn.getresponse()
    if r.status != 200:
        what = "POST /v1/completions"
        raise EndpointError(f"{conn.endpoint(what)}: {what} answered HTTP {r.status}: {r.read(200)[:100]!r}")
    return r


@dataclass
class _Streamed:
    """What a completion's stream has told so far: the first token's time, the tokens counted,
    the server's own count (``usage``) and its ``timings``."""

    first: float | None = None
    chunks: int = 0
    usage_tokens: float | None = None
    timings: dict = field(default_factory=dict)

    def take_tokens(self, d: dict, token_times: list[float] | None) -> None:
        """Count and time the tokens of one chunk."""
        for ch in d.get("choices") or []:
            # a token: text, or none yet (vLLM streams a token that ends inside a UTF-8 character
            # as ""); llama-server's closing chunk (text "", finish_reason set) carries none
            if "text" in ch and (ch["text"] or ch.get("finish_reason") is None):
                self.chunks += 1
                now = time.perf_counter()
                if self.first is None:
                    self.first = now
                if token_times is not None:
                    token_times.append(now)


def _read_stream(
    r: http.client.HTTPResponse, where: str, max_tokens: int, token_times: list[float] | None, usage: dict | None
) -> _Streamed:
    """Read the server-sent events up to ``[DONE]`` (or the end), bounded: one line per chunk plus blanks."""
    got = _Streamed()
    for _ in range(16 * max_tokens + 64):
        line = r.readline(MAX_LINE_BYTES + 1)
        if not line:
            break
        if len(line) > MAX_LINE_BYTES:
            raise TargetError(f"{where}: a streamed line longer than {MAX_LINE_BYTES:,} bytes")
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            break
        d = _chunk(payload, where)
        got.take_tokens(d, token_times)
        if d.get("usage"):
            got.usage_tokens = finite_number(
                d["usage"].get("completion_tokens", got.chunks),
                f"{where}: usage.completion_tokens",
                integer=True,
                most=max_tokens,
            )
            if usage is not None:
                usage.update(d["usage"])
        if d.get("timings"):
            got.timings = d["timings"]
    return got


#: The numbers of llama-server's streamed ``timings`` that verify reads.
TIMING_KEYS = ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_token_ms")


def _chunk(payload: bytes, where: str) -> dict:
    """One streamed ``data:`` chunk, checked: a JSON object; ``choices`` a list of objects whose
    ``text`` is a string; ``usage`` an object and ``usage.prompt_tokens`` a count; ``timings``
    an object of finite numbers >= 0.  Else a :class:`TargetError` naming the field."""
    try:
        d = json.loads(payload.decode("utf-8"))  # NaN and Infinity parse: the field checks name them
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise TargetError(f"{where}: a streamed chunk {payload[:40]!r} is not JSON ({str(e)[:60]})") from None
    if not isinstance(d, dict):
        raise TargetError(f"{where}: a streamed chunk is a JSON {type(d).__name__}, not an object")
    choices = d.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise TargetError(f"{where}: choices: {str(choices)[:40]} is not a list of objects")
    for c in choices:
        if "text" in c and not isinstance(c["text"], str):
            raise TargetError(f"{where}: choices[].text: {c['text']!r} is not a string")
    use = d.get("usage")
    if use is not None and not isinstance(use, dict):
        raise TargetError(f"{where}: usage: {str(use)[:40]} is not an object")
    if use and "prompt_tokens" in use:
        finite_number(use["prompt_tokens"], f"{where}: usage.prompt_tokens", integer=True)
    tim = d.get("timings")
    if tim is not None and not isinstance(tim, dict):
        raise TargetError(f"{where}: timings: {str(tim)[:40]} is not an object")
    for key in TIMING_KEYS:
        if tim and key in tim:
            finite_number(tim[key], f"{where}: timings.{key}")
    return d


def prompt_ids(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(VOCAB_LO, VOCAB_HI, size=max(1, n)).tolist()


@dataclass
class LiveRun:
    users: int
    duration_s: float
    records: dict[str, np.ndarray]
    wall_s: float
    cpu_s: float
    failures: list[str] = field(default_factory=list)
    attempt: int = 0  # 1: the replay of a load with a row outside its bound (verify --confirm)

    @property
    def requests(self) -> int:
        return len(self.records["user"])


class _User(threading.Thread):
    def __init__(self, uid, scn, target, pop, cache, lock, t0, duration_s, drain_s, bos, rows):
        super().__init__(daemon=True)
        seed = scn.run.seed
        self.uid = uid
        self.think = D.Sampler(build_distribution(scn.workload.think_s), stream(seed, LIVE_REP, "user", uid), 64)
        self.keys = QueryKeys(pop, stream(seed, LIVE_REP, "query", uid), 64)
        self.tokens = TokenCounts(
            scn, stream(seed, LIVE_REP, "tokens", uid), 64, stream(seed, LIVE_REP, "output_tokens", uid)
        )
        self.ids = stream(seed, LIVE_REP, "verify_prompt", uid)
        self.scn, self.target, self.cache, self.lock = scn, target, cache, lock
        self.t0, self.end, self.hard_end = t0, t0 + duration_s, t0 + duration_s + drain_s
        self.bos = bos
        self.rows = rows
        self.top_k = scn.retrieval.top_k
        self.bad: list[TargetError] = []

    def run(self) -> None:
        retrieves = self.target.retrieval is not None and self.scn.retrieval.enabled
        ret = connection(self.target.retrieval.url, SEARCH_TIMEOUT_S) if retrieves else None
        for _ in range(1_000_000):  # bounded: a request per think time until duration_s
            due = time.perf_counter() + self.think()
            if due >= self.end:
                break
            time.sleep(max(0.0, due - time.perf_counter()))
            now = time.perf_counter()
            lag_ms = (now - due) * 1e3
            prompt, output = self.tokens()
            key = self.keys()
            row = self.request(ret, key, prompt, output, now)
            row.lag_ms = lag_ms
            self.rows.append(row)
            if any(w in row.error for w in TIMED_OUT):
                break
            if row.error and ret is not None:  # reconnect after a failure
                ret.close()
                ret = connection(self.target.retrieval.url, SEARCH_TIMEOUT_S)
        if ret is not None:
            ret.close()

    def request(self, ret, key, prompt, output, t_start) -> RequestRow:
        row = RequestRow(
            user=self.uid, t_start_s=t_start - self.t0, key=key, prompt_tokens=prompt, output_tokens=output
        )
        try:
            t3 = self._retrieve(row, ret, key, t_start)
            row.llm_sent_s = t3 - self.t0
            if not self.scn.llm.enabled:  # retrieval only: the answer is the search result
                row.llm_end_s = row.llm_sent_s
                row.e2e_ms = (t3 - t_start) * 1e3
                row.ok = True
                return row
            self._ask_llm(row, prompt, output, t_start)
        except (OSError, RuntimeError, http.client.HTTPException, ValueError) as e:
            row.error = f"{type(e).__name__}: {e}"[:200]
        except TargetError as e:  # garbage from the target: no verdict from this load
            row.error = f"{type(e).__name__}: {e}"[:200]
            self.bad.append(e)
        return row

    def _retrieve(self, row: RequestRow, ret: DeadlineConnection | None, key: int, t_start: float) -> float:
        """Look ``key`` up in the answer cache and on a miss search for it (then cache it); the
        time the LLM request goes out."""
        hit = False
        if self.cache is not None:
            with self.lock:
                hit = self.cache.lookup(key)
        t1 = time.perf_counter()
        row.cache_ms = (t1 - t_start) * 1e3
        row.cache_hit = hit
        if ret is not None and not hit:
            search(ret, key, self.top_k)
            t2 = time.perf_counter()
            row.retrieval_ms = (t2 - t1) * 1e3
            if self.cache is not None:
                with self.lock:
                    self.cache.insert(key)
        return time.perf_counter()

    def _ask_llm(self, row: RequestRow, prompt: int, output: int, t_start: float) -> None:
        """Stream the completion: its first token and end times, the tokens received and the
        server's own timings; ok when every token asked for came."""
        llm = self.target.llm_endpoint()
        first, end, got, timings = complete(
            llm.url,
            llm.model,
            prompt_ids(self.ids, prompt - self.bos),
            output,
            max(5.0, self.hard_end - time.perf_counter()),
        )
        row.llm_end_s = end - self.t0
        row.tokens_received = got
        # The server's own account (llama-server `timings`): diagnosis only, never fed to the prediction.
        row.server_prompt_ms = float(timings.get("prompt_ms", np.nan))
        row.server_decode_ms_per_token = float(timings.get("predicted_per_token_ms", np.nan))
        row.ttft_ms = ((first if first is not None else end) - t_start) * 1e3
        row.e2e_ms = (end - t_start) * 1e3
        if got != output:
            row.error = f"asked {output} tokens, got {got}"
        else:
            row.ok = True


def run_load(scn: Scenario, target: Target, users: int, duration_s: float, drain_s: float, bos_tokens: int) -> LiveRun:
    """Play ``users`` closed-loop users for ``duration_s`` against the target; return every request."""
    pop = Popularity(scn.workload.queries)
    cache = LRUCache(scn.cache.capacity) if scn.cache.enabled else None
    lock = threading.Lock()
    rows: list[RequestRow] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    threads = [_User(u, scn, target, pop, cache, lock, t0, duration_s, drain_s, bos_tokens, rows) for u in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, t0 + duration_s + drain_s - time.perf_counter()))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stuck = sum(t.is_alive() for t in threads)
    bad = [e for t in threads for e in t.bad]
    if bad:
        raise bad[0]
    failures = [r.error for r in rows if r.error]
    if stuck:
        failures += [f"{stuck} user(s) still waiting after the {drain_s:.0f} s drain"] * stuck
    rows.sort(key=lambda r: r.t_start_s)
    rec = {c: np.asarray([getattr(r, c) for r in rows]) for c in COLUMNS}
    return LiveRun(users, duration_s, rec, wall, cpu, failures)
