"""A continuous-batching completion server with known step times, and a search service with a
known wake-up cost, for testing the verify probes.

Not a stand-in for a real engine in any prediction: it lets a test check that
:mod:`sim.verify.step_profile` recovers the step times the engine really took (``steps``: each
step's own duration, sleep overshoot and a busy box's delays included).  One engine thread
runs steps like llama-server: every step carries one token for each decoding
slot plus the prompts of every request admitted since the last step (one
prefill, all prompts together); a step lasts ``prefill_ms(new tokens)`` when
it prefills, else ``decode_ms[batch]``.  Each token is streamed as an SSE
chunk of ``/v1/completions`` (OpenAI format) and the last chunk carries
llama-server-style ``timings`` (``prompt_n``, ``prompt_ms``) when ``timings``
is set.  With ``metrics`` it answers like vLLM instead: no ``timings``, a
last chunk with ``usage`` only, and ``GET /metrics`` with vLLM's request
histograms (their ``_sum`` and ``_count`` samples, plus the ``_bucket`` and
``_created`` lines a parser must skip), each request added when its last
token is out.  Without either, ``GET /metrics`` answers 501, as llama-server
without ``--metrics`` does; ``metrics_gets`` counts those requests.
"""

from __future__ import annotations

import itertools
import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar


class FakeEngine:
    def decode_period_ms(self, batch: int, since: int = 0) -> float:
        """The median time from one step's tokens to the next's, over consecutive decode steps of
        ``batch`` (steps from index ``since`` on): the gap a client sees between its tokens."""
        s = self.steps[since:]
        gaps = [
            (b[2] - a[2]) * 1e3
            for a, b in itertools.pairwise(s)
            if a[0] + a[1] == batch and b[0] == batch and b[1] == 0
        ]
        return float(sorted(gaps)[len(gaps) // 2])

    def __init__(self, decode_ms: dict[int, float], prefill_ms_per_token: float, prefill_base_ms: float, slots: int):
        self.decode_ms = decode_ms
        self.per_token = prefill_ms_per_token
        self.base = prefill_base_ms
        self.slots = slots
        self.inbox: queue.Queue = queue.Queue()
        self.stop = threading.Event()
        #: every step as it really ran: (decoders, new prompts, when its tokens went out); the sleep
        #: overshoots on a busy box, and a profile is held to what the server did
        self.steps: list[tuple[int, int, float]] = []
        #: when set to an Event, the engine waits on it after each prefill step (its first tokens
        #: are out, the next step's are not): a test sees what a client has at that moment
        self.hold_after_prefill: threading.Event | None = None
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self) -> None:
        running: list[dict] = []
        while not self.stop.is_set():
            new = []
            while len(running) + len(new) < self.slots:
                try:
                    if new:  # a few ms for the rest of a burst: Python's HTTP threads hand requests over slowly
                        new.append(self.inbox.get(timeout=0.01))
                    elif running:
                        new.append(self.inbox.get_nowait())
                    else:
                        new.append(self.inbox.get(timeout=0.05))
                except queue.Empty:
                    break
            if not running and not new:
                continue
            if new:
                ms = self.base + self.per_token * (sum(r["prompt_n"] for r in new) + len(running))
            else:
                ms = self.decode_ms[len(running)]
            time.sleep(ms / 1e3)
            now = time.perf_counter()
            self.steps.append((len(running), len(new), now))
            for r in new:
                r["prompt_ms"] = ms
                r["t_first"] = now
            for r in running + new:
                r["t_last"] = now
                r["out"].put("tok")
                r["left"] -= 1
            running = [r for r in running + new if r["left"] > 0]
            if new and self.hold_after_prefill is not None:
                self.hold_after_prefill.wait()


class _NoDelay(BaseHTTPRequestHandler):
    """Headers and body go out in separate writes: without TCP_NODELAY, Nagle and the client's
    delayed ACK hold every second response on a keep-alive connection back ~40 ms."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


#: vLLM's request histograms (vllm/v1/metrics/loggers.py) as the fake keeps them: name -> request field.
_HISTOGRAMS = {
    "vllm:request_prefill_time_seconds": "prefill_s",
    "vllm:request_decode_time_seconds": "decode_s",
    "vllm:request_prompt_tokens": "prompt_n",
    "vllm:request_generation_tokens": "generated",
}


class _Handler(_NoDelay):
    engine: FakeEngine
    timings = True
    metrics = False
    sums: ClassVar[dict[str, float]]
    count: ClassVar[list[int]]
    metrics_gets: ClassVar[list[int]]
    lock: ClassVar[threading.Lock]

    def log_message(self, *a) -> None:  # quiet
        pass

    def _metrics(self) -> bytes:
        lines = []
        labels = 'engine="0",model_name="capsim"'
        with self.lock:
            for name, key in _HISTOGRAMS.items():
                lines += [
                    f"# HELP {name} Histogram.",
                    f"# TYPE {name} histogram",
                    f"{name}_sum{{{labels}}} {self.sums[key]!r}",
                    f'{name}_bucket{{engine="0",le="+Inf",model_name="capsim"}} {float(self.count[0])}',
                    f"{name}_count{{{labels}}} {float(self.count[0])}",
                    f"{name}_created{{{labels}}} 1.764e+09",
                ]
        return ("\n".join(lines) + "\n").encode()

    def do_GET(self) -> None:
        body = b'{"status":"ok"}'
        if self.path == "/metrics":
            self.metrics_gets[0] += 1
            if not self.metrics:
                body = b"This server does not support metrics endpoint."
                self.send_response(501)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            body = self._metrics()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        r = {"prompt_n": len(req["prompt"]), "left": int(req["max_tokens"]), "out": queue.Queue(), "prompt_ms": 0.0}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.engine.inbox.put(r)
        for i in range(int(req["max_tokens"])):
            r["out"].get(timeout=30)
            # vLLM: a first token that ends inside a UTF-8 character streams as ""
            text = "" if self.metrics and i == 0 else "x"
            self.wfile.write(f'data: {{"choices": [{{"text": "{text}"}}]}}\n\n'.encode())
            self.wfile.flush()
        usage = {"prompt_tokens": r["prompt_n"], "completion_tokens": req["max_tokens"]}
        last: dict = {"choices": [{"text": "", "finish_reason": "length"}], "usage": usage}
        if self.metrics:  # vLLM: the finished request joins the histograms; usage in a chunk of its own
            with self.lock:
                self.sums["prefill_s"] += r["prompt_ms"] / 1e3
                self.sums["decode_s"] += r["t_last"] - r["t_first"]
                self.sums["prompt_n"] += r["prompt_n"]
                self.sums["generated"] += int(req["max_tokens"])
                self.count[0] += 1
            last = {"choices": [], "usage": usage}
        if self.timings:
            last["timings"] = {"prompt_n": r["prompt_n"], "prompt_ms": r["prompt_ms"]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


def serve(engine: FakeEngine, timings: bool = True, metrics: bool = False) -> tuple[ThreadingHTTPServer, int]:
    """``timings``: llama-server's streamed timings; ``metrics``: vLLM's /metrics (not both)."""
    state = {
        "sums": dict.fromkeys(_HISTOGRAMS.values(), 0.0),
        "count": [0],
        "metrics_gets": [0],
        "lock": threading.Lock(),
    }
    handler = type("H", (_Handler,), {"engine": engine, "timings": timings, "metrics": metrics, **state})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


class _SearchHandler(_NoDelay):
    """``POST /search``: ``search_ms`` of sleep, ``wakeup_ms`` more after ``idle_ms`` without a request."""

    search_ms = 5.0
    wakeup_ms = 3.0
    idle_ms = 20.0
    last: ClassVar[list[float]] = [0.0]
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, *a) -> None:  # quiet
        pass

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._reply(b'{"status":"ok"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            now = time.perf_counter()
            cold = now - self.last[0] > self.idle_ms / 1e3
            time.sleep((self.search_ms + (self.wakeup_ms if cold else 0.0)) / 1e3)
            self.last[0] = time.perf_counter()
        self._reply(b'{"ids": [1, 2, 3, 4, 5]}')


def serve_search(search_ms: float, wakeup_ms: float) -> tuple[ThreadingHTTPServer, int]:
    """A one-worker search service whose service time and wake-up cost are known."""
    handler = type("S", (_SearchHandler,), {"search_ms": search_ms, "wakeup_ms": wakeup_ms, "last": [0.0]})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]
