"""Scheduler checks of the vLLM half: what a scheduler model can get wrong while latencies look fine.

One closed-loop load (the scenario's workload, :func:`sim.verify.loadgen.run_load`) is played
against the running vLLM server while a sampler reads its ``/metrics`` every
:data:`SAMPLE_PERIOD_S`; the same load is simulated with the server's step table (profiled alone
by ``capsim verify --profile-llm`` just before) and the HTTP overhead ``capsim verify`` measured.
Held against each other, over the window after the warm-up:

* **running batch**: the time-mean of ``vllm:num_requests_running`` (sequences the scheduler
  holds: prefilling or decoding) against the time-mean of the simulated requests between their
  admission and their last token (:func:`time_mean_count`);
* **queue length**: ``vllm:num_requests_waiting`` against the simulated requests between their
  arrival at the LLM and their admission;
* **preemptions** per request: the change of ``vllm:num_preemptions_total`` over the load against
  the simulated requests' ``preemptions`` (a server started with a KV pool too small for every
  running sequence to grow preempts; one with a large pool never does);
* **TPOT** (time per output token after the first) P50 and P95 of the requests, measured as
  ``(e2e - ttft) / (output - 1)`` on the client against the simulated ``tpot_ms``; and the **TTFT
  P50 of the prompts longer than the token budget** (prefilled in chunks over several steps).

**Prefix caching** (:func:`prefix_check`): requests that share a system prompt of ``S`` tokens,
sent one after another, each with its own question; vLLM counts the prompt tokens it found
cached (``vllm:prefix_cache_hits_total``), capsim holds the system prompt's *full* blocks once
per replica (``LLMConfig.prefix_tokens``): each request after the first must hit exactly that many.

A row is ``within`` its bound (relative, or absolute where the quantity is near zero:
:data:`BOUNDS`), else ``outside``.  The results go to a JSON file and a table on stderr.

    python -m sim.verify.stack.vllm_checks --scenario S.yaml --target T.yaml \\
        --verify-json out_vllm/verify.json --users 8 --duration-s 60 --out checks.json [--name preemption]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.errors import CapsimError
from sim.spec.scenario import load_scenario
from sim.spec.target import load_target
from sim.verify.server_clock import parse_metrics, request_path
from sim.verify.wire import EndpointError, connection

if TYPE_CHECKING:
    import pandas as pd

    from sim.spec.schema import Scenario

SAMPLE_PERIOD_S = 0.2
#: The /metrics samples read, each summed over its label sets.
SAMPLED = {
    "vllm:num_requests_running": "running",
    "vllm:num_requests_waiting": "waiting",
    "vllm:num_preemptions_total": "preemptions",
    "vllm:prefix_cache_hits_total": "prefix_hits",
    "vllm:prefix_cache_queries_total": "prefix_queries",
}
#: Per row: (relative bound, absolute bound); a row is within when either holds.
BOUNDS: dict[str, tuple[float, float]] = {
    "running_mean": (0.15, 0.1),
    "waiting_mean": (0.25, 0.1),
    "preemptions_per_request": (0.5, 0.05),
    "tpot_ms p50": (0.10, 0.0),
    "tpot_ms p95": (0.15, 0.0),
    "ttft_ms p50, prompts over the budget": (0.15, 0.0),
    "prefix-cache hit tokens per request": (0.0, 0.0),
}


def parse_sampled(text: str) -> dict[str, float]:
    """The :data:`SAMPLED` values of a Prometheus text page, each summed over its label sets."""
    return parse_metrics(text, SAMPLED)


def read_metrics(url: str, timeout_s: float = 2.0) -> dict[str, float] | None:
    conn = connection(url, timeout_s)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read(1 << 22)
        return parse_sampled(body.decode("utf-8", "replace")) if r.status == 200 else None
    except (OSError, http.client.HTTPException, EndpointError):
        return None
    finally:
        conn.done()
        conn.close()


class Sampler(threading.Thread):
    """Reads the server's gauges every ``period_s`` until stopped: ``(seconds since start, values)``."""

    def __init__(self, url: str, period_s: float = SAMPLE_PERIOD_S) -> None:
        super().__init__(daemon=True)
        self.url, self.period_s = url, period_s
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.halt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self.halt.is_set():
            got = read_metrics(self.url)
            if got is not None:
                self.samples.append((time.perf_counter() - self.t0, got))
            self.halt.wait(self.period_s)


def sampled_mean(samples: list[tuple[float, dict[str, float]]], key: str, lo: float, hi: float) -> float | None:
    """Mean of the samples of ``key`` taken inside ``[lo, hi)`` (evenly spaced: a time-mean)."""
    v = [s[key] for t, s in samples if lo <= t < hi and key in s]
    return float(np.mean(v)) if v else None


def time_mean_count(starts: np.ndarray, ends: np.ndarray, lo: float, hi: float) -> float:
    """Time-mean, over ``[lo, hi)``, of how many intervals ``[start, end)`` hold:
    ``sum(max(0, min(end, hi) - max(start, lo))) / (hi - lo)``.

    Intervals [0, 4), [2, 3) and [5, 9) over [1, 6): 3 + 1 + 1 = 5 seconds held in 5 s: 1.0."""
    held = np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0.0, None)
    return float(held.sum() / (hi - lo))


def simulated_occupancy(rec: Any, lo: float, hi: float) -> dict[str, float]:
    """Running and waiting time-means of one simulated replication's records (ms columns in ms):
    a request waits from its arrival at the LLM (after its cache lookup and retrieval) to its
    admission, and runs from its admission to its last token."""
    at_llm = rec["arrival_s"] + (rec["cache_ms"] + rec["retrieval_wait_ms"] + rec["retrieval_service_ms"]) / 1e3
    admitted = at_llm + rec["llm_wait_ms"] / 1e3
    done = admitted + (rec["prefill_ms"] + rec["decode_ms"]) / 1e3
    a, w, d = (np.asarray(x, dtype=float) for x in (at_llm, admitted, done))
    return {"running_mean": time_mean_count(w, d, lo, hi), "waiting_mean": time_mean_count(a, w, lo, hi)}


def row(name: str, measured: float | None, predicted: float | None) -> dict[str, Any]:
    rel_bound, abs_bound = BOUNDS[name]
    if measured is None or predicted is None:
        return {"check": name, "measured": measured, "predicted": predicted, "verdict": "undecided"}
    diff = predicted - measured
    rel = diff / measured if measured else None
    ok = abs(diff) <= abs_bound or (rel is not None and abs(rel) <= rel_bound)
    return {
        "check": name,
        "measured": measured,
        "predicted": predicted,
        "error": rel,
        "bound": [rel_bound, abs_bound],
        "verdict": "within" if ok else "outside",
    }


def _pct(v: Any, q: float) -> float | None:
    """The ``q``-th percentile of ``v``; None when it is empty."""
    v = np.asarray(v, dtype=float)
    return float(np.percentile(v, q)) if len(v) else None


def _simulated(
    scn: Scenario, steps: tuple[Path, float], users: int, duration_s: float, warmup_s: float
) -> pd.DataFrame:
    """The load simulated once (``steps``: the step table and the HTTP overhead), its per-request
    records: occupancy and TPOT per request."""
    from sim.run.sweep import simulate  # deferred: the executor, for the simulated side only

    table, overhead_ms = steps
    ov: dict[str, Any] = {
        "workload.users": users,
        "run.duration_s": duration_s,
        "run.warmup_s": warmup_s,
        "run.replications": 1,
        "run.target_precision": None,
        **request_path(overhead_ms),
        "llm.replicas": 1,
        "llm.step_table": str(table),
    }
    rec = simulate(scn, ov, jobs=1, keep_records=True).points[0].records
    return rec[rec["replication"] == 0]


def run_check(
    scenario: Path,
    target_path: Path,
    verify: tuple[Path, float, int],
    users: int,
    duration_s: float,
    warmup_s: float,
    drain_s: float = 60.0,
) -> dict[str, Any]:
    """Play the load with the sampler running, simulate it, and compare (:data:`BOUNDS`).
    ``verify``: :func:`from_verify`'s step table, HTTP overhead and BOS tokens."""
    from sim.verify.loadgen import run_load  # deferred: the live side

    table, overhead_ms, bos = verify
    scn = load_scenario(scenario)
    target = load_target(target_path)
    llm = target.llm_endpoint()
    sampler = Sampler(llm.url)
    sampler.start()
    before = read_metrics(llm.url) or {}
    t_load = time.perf_counter() - sampler.t0
    live = run_load(scn, target, users, duration_s, drain_s, bos)
    after = read_metrics(llm.url) or {}
    sampler.halt.set()
    sampler.join(5.0)
    lo, hi = warmup_s, duration_s
    r = live.records
    ok = r["ok"].astype(bool)
    inside = ok & (r["t_start_s"] >= lo) & (r["t_start_s"] < hi)
    out = np.asarray(r["output_tokens"], dtype=float)
    tpot = ((r["e2e_ms"] - r["ttft_ms"]) / np.maximum(out - 1, 1))[inside & (out > 1)].astype(float)
    long_prompt = inside & (r["prompt_tokens"] > scn.llm.max_batched_tokens)

    rec = _simulated(scn, (table, overhead_ms), users, duration_s, warmup_s)
    sim_in = (rec["arrival_s"] >= lo) & (rec["arrival_s"] < hi)
    sim_tpot: Any = (rec["decode_ms"] / np.maximum(rec["output_tokens"] - 1, 1))[sim_in & (rec["output_tokens"] > 1)]
    sim_long = sim_in & (rec["prompt_tokens"] > scn.llm.max_batched_tokens)
    occ = simulated_occupancy(rec, lo, hi)

    n_live = int(ok.sum())
    preempted = after.get("preemptions", 0.0) - before.get("preemptions", 0.0)
    rows = [
        row("running_mean", sampled_mean(sampler.samples, "running", t_load + lo, t_load + hi), occ["running_mean"]),
        row("waiting_mean", sampled_mean(sampler.samples, "waiting", t_load + lo, t_load + hi), occ["waiting_mean"]),
        row(
            "preemptions_per_request",
            preempted / n_live if n_live else None,
            float(rec["preemptions"].clip(lower=0).sum() / len(rec)) if len(rec) else None,
        ),
        row("tpot_ms p50", _pct(tpot, 50), _pct(sim_tpot, 50)),
        row("tpot_ms p95", _pct(tpot, 95), _pct(sim_tpot, 95)),
        row(
            "ttft_ms p50, prompts over the budget",
            _pct(r["ttft_ms"][long_prompt], 50),
            _pct(rec["ttft_ms"][sim_long], 50),
        ),
    ]
    return {
        "users": users,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "requests": live.requests,
        "failures": len(live.failures),
        "samples": len(sampler.samples),
        "kv_blocks": scn.llm.kv_blocks,
        "token_budget": scn.llm.max_batched_tokens,
        "prompts_over_budget": int(long_prompt.sum()),
        "rows": rows,
    }


def prefix_check(
    scenario: Path, target_path: Path, system_tokens: int, question_tokens: int, n: int = 6, seed: int = 0
) -> dict[str, Any]:
    """Shared-system-prompt requests one after another: vLLM's hit tokens per request after the
    first against capsim's ``prefix_tokens`` for a prompt of ``system_tokens`` + a question."""
    from sim.spec.scenario import apply_overrides, load_raw  # deferred: this check only
    from sim.verify.loadgen import complete, prompt_ids  # deferred: the live side

    raw = load_raw(scenario)
    comp = {"system_tokens": system_tokens, "doc_tokens": 0, "question_tokens": question_tokens}
    llm_cfg = load_scenario(apply_overrides(raw, {"llm.prompt_tokens": comp})).llm
    target = load_target(target_path)
    llm = target.llm_endpoint()
    rng = np.random.default_rng(seed)
    system = prompt_ids(rng, system_tokens)
    before = read_metrics(llm.url) or {}
    first = read_metrics(llm.url) or {}
    for i in range(n):
        complete(llm.url, llm.model, system + prompt_ids(rng, question_tokens), 1, 60.0)
        if i == 0:
            first = read_metrics(llm.url) or {}
    after = read_metrics(llm.url) or {}
    hits = after.get("prefix_hits", 0.0) - first.get("prefix_hits", 0.0)
    return {
        "name": "prefix",
        "requests": n,
        "system_tokens": system_tokens,
        "question_tokens": question_tokens,
        "block_tokens": llm_cfg.kv_block_tokens,
        "first_request_hits": first.get("prefix_hits", 0.0) - before.get("prefix_hits", 0.0),
        "rows": [row("prefix-cache hit tokens per request", hits / (n - 1), float(llm_cfg.prefix_tokens))],
    }


def from_verify(path: Path) -> tuple[Path, float, int]:
    """The step table of the last load ``capsim verify`` profiled, the HTTP overhead and the BOS
    tokens the server adds, as it measured them."""
    try:
        cal = json.loads(path.read_text())["calibration"]
        tables = cal["step_tables"]
        return Path(tables[list(tables)[-1]]), float(cal["llm_overhead_ms"]), int(cal["llm_bos_tokens"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise CapsimError(f"--verify-json {path}: no step table and overhead of a profiled run ({e})") from None


def show(name: str, doc: dict[str, Any]) -> str:
    if "users" in doc:
        head = (
            f"{doc['users']} users, {doc['requests']} requests ({doc['failures']} failed), {doc['kv_blocks']} KV "
            f"blocks, budget {doc['token_budget']} tokens, {doc['prompts_over_budget']} prompts over it, "
            f"{doc['samples']} /metrics samples"
        )
    else:
        head = (
            f"{doc['requests']} requests of a {doc['system_tokens']}-token system prompt + {doc['question_tokens']} "
            f"question tokens, {doc['block_tokens']}-token blocks"
        )
    lines = [f"vLLM scheduler check '{name}': {head}"]
    for r in doc["rows"]:
        m, p = r["measured"], r["predicted"]
        err = f"{r['error'] * 100:+.1f}%" if r.get("error") is not None else "-"
        mt = "-" if m is None else f"{m:.3f}"
        pt = "-" if p is None else f"{p:.3f}"
        lines.append(f"  {r['check']:<38} measured {mt:>9}  predicted {pt:>9}  {err:>8}  {r['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", type=Path, required=True)
    p.add_argument("--target", type=Path, required=True)
    p.add_argument(
        "--verify-json",
        type=Path,
        help="capsim verify's verify.json against this server: its last step table and HTTP overhead",
    )
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--warmup-s", type=float, default=10.0)
    p.add_argument("--name", default="occupancy")
    p.add_argument(
        "--prefix",
        type=int,
        metavar="SYSTEM_TOKENS",
        help="the prefix-cache check instead: requests sharing a system prompt of this many tokens",
    )
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    try:
        if a.prefix is not None:
            doc = prefix_check(a.scenario, a.target, a.prefix, 40)
        elif a.verify_json is None:
            p.error("--verify-json is needed (the step table and overhead the load is simulated with)")
        else:
            doc = run_check(a.scenario, a.target, from_verify(a.verify_json), a.users, a.duration_s, a.warmup_s)
    except CapsimError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc["name"] = a.name
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(show(a.name, doc), file=sys.stderr)
    outside = [r["check"] for r in doc["rows"] if r["verdict"] == "outside"]
    return 1 if outside else 0


if __name__ == "__main__":
    raise SystemExit(main())
