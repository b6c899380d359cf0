"""``capsim verify`` against a hostile target, as a table: every answer a stack under test
once got a verdict, a hang or an internal error (exit 4) out of must now be one line on
stderr naming the endpoint (and the field), exit 2, before any load is played.

To extend: add a :class:`Case` to ``CASES``: the behaviour of the fake server's
``/health``, ``/search`` and ``/v1/completions`` (see :class:`Hostile`), the scenario it
is held against and a fragment of the line the user must see.  Every server binds
127.0.0.1 only, and every case is bounded in time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.helpers import invoke

ROOT = Path(__file__).resolve().parent.parent
RETRIEVAL = ROOT / "scenarios" / "verify_retrieval.yaml"
LLM = ROOT / "scenarios" / "verify_local.yaml"


class Hostile(BaseHTTPRequestHandler):
    """Answers as ``behaviour`` says: ``health`` (``ok`` or ``not-http``), ``search`` (``ok``,
    ``garbage``, ``negative``, ``nan-text``, ``500``, ``silent``, ``drip``) and ``llm``
    (``ok``, ``text-nan``, ``usage-1e18``, ``timings-negative``)."""

    protocol_version = "HTTP/1.1"
    behaviour: ClassVar[dict[str, str]] = {}
    stop: ClassVar[threading.Event]

    def log_message(self, *a: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health" and self.behaviour.get("health") == "not-http":
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
            self.close_connection = True
            return
        if self.path == "/metrics":
            self._send(501, b"")
            return
        self._send(200, b"ok", "text/plain")

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        req = json.loads(self.rfile.read(n) or b"{}")
        if self.path == "/search":
            self._search()
        else:
            self._complete(int(req.get("max_tokens", 1)))

    def _search(self) -> None:
        how = self.behaviour.get("search", "ok")
        if how == "garbage":
            self._send(200, b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 8, "application/octet-stream")
        elif how == "negative":
            self._send(200, b'{"ids": [1, 2], "search_us": -1e308, "cpu_us": 5}')
        elif how == "nan":
            self._send(200, b'{"ids": [1, 2], "search_us": 100, "cpu_us": NaN}')
        elif how == "500":
            self._send(500, b'{"error": "index not loaded"}')
        elif how == "silent":
            self.stop.wait(30)
            self.close_connection = True
        elif how == "drip":
            body = b'{"ids": [1, 2, 3, 4, 5], "search_us": 100}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for b in body:  # one byte every 0.5 s: each read is within any socket timeout
                if self.stop.wait(0.5):
                    break
                self.wfile.write(bytes([b]))
                self.wfile.flush()
        else:
            self._send(200, b'{"ids": [1, 2, 3, 4, 5], "search_us": 900, "cpu_us": 1000}')

    def _complete(self, max_tokens: int) -> None:
        how = self.behaviour.get("llm", "ok")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for _ in range(max_tokens):
            text = "NaN" if how == "text-nan" else '"a"'
            self.wfile.write(f'data: {{"choices": [{{"text": {text}, "finish_reason": null}}]}}\n\n'.encode())
        usage = 10**18 if how == "usage-1e18" else max_tokens
        timings = -5 if how == "timings-negative" else 3.0
        last = {
            "choices": [{"text": "", "finish_reason": "length"}],
            "usage": {"prompt_tokens": 33, "completion_tokens": usage},
            "timings": {"prompt_n": 33, "prompt_ms": timings, "predicted_per_token_ms": 1.0},
        }
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())
        self.close_connection = True


class Server:
    """A :class:`Hostile` server on 127.0.0.1 with its own behaviour, stopped on exit."""

    def __init__(self, behaviour: dict[str, str]):
        handler = type("H", (Hostile,), {"behaviour": behaviour, "stop": threading.Event()})
        self.stop = handler.stop
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass(frozen=True)
class Case:
    id: str
    behaviour: dict
    scenario: Path
    says: str


CASES = [
    Case("search-binary-garbage", {"search": "garbage"}, RETRIEVAL, "POST /search answered b'\\x89PNG"),
    Case("search-us-negative", {"search": "negative"}, RETRIEVAL, "POST /search field search_us: -1e+308 is not"),
    Case("cpu-us-nan", {"search": "nan"}, RETRIEVAL, "POST /search field cpu_us: nan is not a finite number"),
    Case("search-500", {"search": "500"}, RETRIEVAL, "POST /search answered HTTP 500"),
    Case("search-never-answers", {"search": "silent"}, RETRIEVAL, "POST /search: no whole answer within 1 s"),
    Case("search-drips", {"search": "drip"}, RETRIEVAL, "POST /search: no whole answer within 1 s (cut off)"),
    Case("health-not-http", {"health": "not-http"}, RETRIEVAL, "GET /health: not an HTTP answer"),
    Case("llm-text-nan", {"llm": "text-nan"}, LLM, "POST /v1/completions: choices[].text: nan is not a string"),
    Case("llm-usage-1e18", {"llm": "usage-1e18"}, LLM, "usage.completion_tokens: 1000000000000000000 is not"),
    Case("llm-timings-negative", {"llm": "timings-negative"}, LLM, "timings.prompt_ms: -5 is not"),
]


def _target(tmp: Path, url: str) -> Path:
    t = tmp / "target.yaml"
    t.write_text(f"llm: {{url: '{url}', model_path: m.gguf}}\nretrieval: {{url: '{url}', workers: 2}}\n")
    return t


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_target(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sim.verify.loadgen
    import sim.verify.probes
    import sim.verify.run
    import sim.verify.segments

    monkeypatch.setattr(sim.verify.loadgen, "SEARCH_TIMEOUT_S", 1.0)
    monkeypatch.setattr(sim.verify.probes, "SEARCH_TIMEOUT_S", 1.0)

    def no_load(*a: Any, **k: Any) -> None:  # every refusal must come before the live load
        raise AssertionError("played a load against a hostile target")

    monkeypatch.setattr(sim.verify.run, "run_load", no_load)
    monkeypatch.setattr(sim.verify.segments, "run_load", no_load)
    scn = case.scenario
    if scn == LLM:  # no step table on disk: the probes run before it is read
        scn = tmp_path / "s.yaml"
        scn.write_text(f"extends: '{LLM}'\nllm: {{step_table: '{ROOT / 'scenarios' / 'verify_local_steps.csv'}'}}\n")
    with Server(case.behaviour) as srv:
        t0 = time.perf_counter()
        r = invoke("verify", scn, "--target", _target(tmp_path, srv.url), "--users", "1", "--duration-s", "5")
        took = time.perf_counter() - t0
    err = r.stderr.strip()
    assert r.exit_code == 2, (r.exit_code, err, r.exception)
    assert case.says in err and srv.url in err, err
    assert "Traceback" not in r.stderr and err.count("\n") == 0, err
    assert took < 20, took


def test_a_dripping_answer_is_cut_off_at_the_request_deadline() -> None:
    """Each byte comes within the socket timeout; the whole answer does not come within it."""
    from sim.verify.loadgen import search
    from sim.verify.wire import EndpointError, connection

    with Server({"search": "drip"}) as srv:
        conn = connection(srv.url, 1.0)
        t0 = time.perf_counter()
        with pytest.raises(EndpointError, match="cut off"):
            search(conn, 1, 5)
        assert time.perf_counter() - t0 < 3


def test_a_run_past_its_deadline_sends_nothing_more() -> None:
    from sim.verify.loadgen import search
    from sim.verify.wire import EndpointError, RunDeadline, connection

    with Server({}) as srv:
        search(connection(srv.url, 1.0), 1, 5)  # answers in time
        old = RunDeadline.at
        RunDeadline.at = time.monotonic() - 1
        try:
            with pytest.raises(EndpointError, match="past its deadline"):
                search(connection(srv.url, 1.0), 1, 5)
        finally:
            RunDeadline.at = old


def test_the_table_covers_every_target_finding() -> None:
    ids = {c.id for c in CASES}
    assert {"search-binary-garbage", "search-drips", "search-500", "search-never-answers", "health-not-http"} <= ids
    assert {"llm-text-nan", "llm-usage-1e18"} <= ids


def test_the_servers_bind_loopback_only() -> None:
    with Server({}) as srv:
        assert srv.httpd.server_address[0] == "127.0.0.1"
        with socket.create_connection(("127.0.0.1", srv.httpd.server_address[1]), timeout=2):
            pass
