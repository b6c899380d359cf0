"""``capsim estimate`` (the cost model on paper) and ``capsim calibrate gpu``.

No model logic here: :mod:`sim.analysis.estimate` computes, this module parses and
prints.  A scenario with a ``sweep`` is estimated at every point: the JSON
holds the first point's figures at the top level and every point under
``points``; the table shows the first point in full and one line per point.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from sim.cli.app import app, stdout_console, user_errors
from sim.files import to_json


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.3f} ms"


def _bytes(x: float) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= f:
            return f"{x / f:,.2f} {unit} ({x:,.0f} B)"
    return f"{x:,.0f} B"


def _gib(x: float) -> str:
    return f"{x / 2**30:,.2f} GiB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def step_figures_line(f: dict[str, Any]) -> str:
    """Where the step costs come from, in one line: the model and the figures it uses."""
    parts = [
        f"{f['model']} on {f['gpu'] or 'an inline GPU'}: HBM {f['hbm_bandwidth_gbps']:,.0f} GB/s, "
        f"{f['peak_field']} {f['peak_tflops']:,.0f} TFLOPS (compute_dtype {f['compute_dtype']})"
        + (f", interconnect {f['interconnect_gbps']:,.0f} GB/s" if f.get("interconnect_gbps") else ""),
        f"weights {f['weights_dtype'] or 'dtype_bytes'} ({f['dtype_bytes']:g} B), KV {f['kv_dtype_bytes']:g} B",
    ]
    if "attention" in f:
        parts.append(f["attention"])
    moe = f.get("moe")
    if moe:
        reads = ", ".join(f"{v:,.1f} at batch {b}" for b, v in moe["experts_read_at_batch"].items())
        parts.append(
            f"MoE: {moe['active_params'] / 1e9:,.2f}B of {moe['params'] / 1e9:,.2f}B parameters active, "
            f"{moe['experts_per_token']} of {moe['experts']} experts per token, expert_parallel "
            f"{moe['expert_parallel']}; experts read per layer: {reads}"
        )
    if f.get("perop_not_used"):
        parts.append(f"per-operation tables not used: {f['perop_not_used']}")
    return "; ".join(parts)


def estimate_table(est: dict[str, Any]) -> Table:
    t = Table(
        title=f"estimate: {est.get('scenario')}" + (f" {est['params']}" if est.get("params") else ""), show_header=False
    )
    t.add_column("what")
    t.add_column("value", justify="right")
    if "weights_bytes" in est:
        _step_cost_rows(t, est)
        _memory_rows(t, est)
        _step_rows(t, est)
    _disaggregated_rows(t, est)
    if est.get("retrieval_service_ms") is not None:
        t.add_row("retrieval mean service time", _ms(est["retrieval_service_ms"]))
    if est.get("cache_hit_ratio") is not None:
        t.add_row("cache hit ratio (Che)", _pct(est["cache_hit_ratio"]))
    if est.get("utilization_method"):
        t.add_row("load", f"{est['load_rate_per_s']:,.2f} req/s ({est['utilization_method']})")
    for stage, u in est.get("utilization", {}).items():
        t.add_row(f"utilisation: {stage}", _pct(u))
    sat = est.get("saturation")
    if sat:
        users = f", {sat['users']:,.0f} users" if sat.get("users") is not None else ""
        t.add_row("first to saturate", f"{sat['stage']} at {sat['rate_per_s']:,.2f} req/s{users}")
    for note in est.get("notes", []):
        t.add_row("note", note)
    return t


def _step_cost_rows(t: Table, est: dict[str, Any]) -> None:
    """The model, the GPU and where the step cost comes from."""
    t.add_row("model / GPU", f"{est['model']} on {est['gpu']} x tp {est['tensor_parallel']}")
    sc = est["step_cost"]
    if sc.get("perop"):
        what = (
            f"kernels timed alone + overhead {sc['perop_overhead_ms']:.3g} ms + "
            f"{sc['perop_overhead_per_seq_ms']:.3g} ms/sequence, prefill work x {sc['perop_prefill_scale']:.3g}"
        )
    else:
        what = (
            f"bw_efficiency {sc['bw_efficiency']:.3g}, mfu {sc['mfu']:.3g}, "
            f"overhead {sc['step_overhead_ms']:.3g} ms + {sc['step_overhead_per_seq_ms']:.3g} ms/sequence, "
            f"all-reduce latency {sc['allreduce_latency_us']:.3g} us"
        )
    t.add_row(f"step cost ({'engine ' + sc['engine'] if sc.get('engine') else sc['efficiency']})", what)
    if "step_cost_figures" in est:
        t.add_row("step cost from", step_figures_line(est["step_cost_figures"]))


def _memory_rows(t: Table, est: dict[str, Any]) -> None:
    """Tokens, weights, KV and the engine's reserve: what fits in GPU memory."""
    t.add_row("mean prompt / output tokens", f"{est['mean_prompt_tokens']:,.0f} / {est['mean_output_tokens']:,.0f}")
    t.add_row("weights", _bytes(est["weights_bytes"]))
    t.add_row("KV per token", _bytes(est["kv_bytes_per_token"]))
    t.add_row("KV per request (prompt + output)", _bytes(est["kv_bytes_per_request"]))
    r = est["engine_reserve"]
    terms = ", ".join(f"{k.replace('_', '-')} {_gib(v)}" for k, v in r["terms_bytes"].items())
    t.add_row(
        f"engine reserve per GPU ({r['setting']})",
        f"{_gib(est['engine_reserve_bytes_per_gpu'])}: {terms} "
        f"(max_num_batched_tokens {r['max_batched_tokens']:,}, max_num_seqs {r['max_num_seqs']:,})",
    )
    t.add_row(
        "KV cache per GPU",
        f"{_gib(est['memory_exposed_bytes_per_gpu'])} exposed x {est['gpu_memory_utilization']:g} - "
        f"{_gib(est['weights_bytes_per_gpu'])} weights - {_gib(est['engine_reserve_bytes_per_gpu'])} reserve "
        f"= {_gib(est['kv_budget_bytes_per_gpu'])}",
    )
    # The engine's own start-up lines, to hold against a server's log.
    t.add_row("vLLM would log (V0)", f"# GPU blocks: {est['kv_blocks']} (blocks of {est['kv_block_tokens']} tokens)")
    t.add_row(
        "vLLM would log (V1)",
        f"Available KV cache memory: {est['kv_budget_bytes_per_gpu'] / 2**30:.2f} GiB; "
        f"GPU KV cache size: {est['kv_capacity_tokens']:,} tokens",
    )
    t.add_row("sequences that fit in KV memory", f"{est['max_sequences_in_memory']:,}")


def _step_rows(t: Table, est: dict[str, Any]) -> None:
    """Prefill and decode step times, intensity against the ridge point, and the replica capacity."""
    t.add_row(
        "prefill of the mean prompt",
        f"{_ms(est['prefill_ms'])} ({est['prefill_bound']})"
        + (f", {_ms(est['prefill_ms_uncached'])} without the cached prefix" if est["prefix_cached_tokens"] else ""),
    )
    for b, ms in est["decode_step_ms"].items():
        fits = "" if est["decode_fits"][b] else "  (does not fit in KV memory)"
        t.add_row(f"decode step at batch {b}", f"{_ms(ms)}, {est['decode_tokens_per_s'][b]:,.0f} tokens/s{fits}")
    ai = est["arithmetic_intensity"]
    t.add_row(
        "ridge point (hardware / with mfu, bw_efficiency)",
        f"{est['ridge_point_flops_per_byte']:,.1f} / {est['effective_ridge_flops_per_byte']:,.1f} FLOP/B",
    )
    for k, label in (("batch_1", "batch 1"), ("max_batch", "max_batch")):
        t.add_row(f"decode intensity at {label}", f"{ai[k]:,.1f} FLOP/B: {est['bound'][k]}")
    t.add_row("attention FLOPs at the prompt length", f"{est['attention_flops']:,.3e}")
    cap = est.get("replica_capacity")
    if cap:
        t.add_row(
            "replica capacity",
            f"{cap['requests_per_s']:,.2f} req/s, {cap['output_tokens_per_s']:,.0f} tokens/s at batch {cap['batch']}",
        )


def points_table(points: list[dict[str, Any]]) -> Table:
    t = Table(title="every sweep point")
    t.add_column("params")
    t.add_column("decode @max_batch", justify="right")
    t.add_column("bound @max_batch")
    t.add_column("utilisation")
    t.add_column("saturates")
    for p in points:
        util = ", ".join(f"{k} {v:.0%}" for k, v in p.get("utilization", {}).items())
        sat = p.get("saturation") or {}
        mb = p.get("decode_step_ms", {})
        at_max = mb.get(str(p["max_batch"]), mb.get(p["max_batch"])) if "max_batch" in p else None
        t.add_row(
            ", ".join(f"{k}={v}" for k, v in p["params"].items()),
            _ms(at_max) if at_max is not None else "-",
            (p.get("bound") or {}).get("max_batch", "-"),
            util,
            f"{sat.get('stage', '-')} at {sat.get('rate_per_s', float('nan')):,.2f} req/s" if sat else "-",
        )
    return t


@app.command("estimate")
@user_errors
def estimate_command(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a dotted key: --set llm.replicas=2"),
    json_: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """The cost model without simulating: memory, step times, roofline verdicts, utilisation, saturation."""
    # deferred: the cost model loads pydantic and numpy
    from sim.analysis.estimate import estimate_points
    from sim.spec.scenario import parse_overrides

    points = estimate_points(scenario, parse_overrides(set_))
    doc = dict(points[0])
    if len(points) > 1:
        doc["points"] = points
    if json_:
        sys.stdout.write(to_json(doc) + "\n")
        return
    console: Console = stdout_console()
    console.print(estimate_table(points[0]))
    if "step_cost" in points[0]:
        console.print(points[0]["step_cost"]["source"], markup=False, highlight=False, soft_wrap=True)
        figures = points[0].get("step_cost_figures", {}).get("sources")
        if isinstance(figures, dict):
            console.print(
                "GPU figures: " + "; ".join(f"{k} {v}" for k, v in figures.items()),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        r = points[0]["engine_reserve"]
        console.print(
            f"engine reserve {r['setting']}: {r['engine']} {r['versions']}; each term's source is in "
            "--json (engine_reserve.sources) and sim/spec/reserve.py; checked against the start-up logs in "
            "sim/data/published/vllm_kv_logs.csv",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if len(points) > 1:
        console.print(points_table(points))


def _disaggregated_rows(t: Table, est: dict[str, Any]) -> None:
    """The pools of a disaggregated fleet and the KV hand-off of the mean prompt."""
    dis = est.get("disaggregated")
    if dis:
        pf, dc = dis["prefill"], dis["decode"]
        t.add_row(
            "prefill pool",
            f"{pf['replicas']} x {pf['gpu']} tp {pf['tensor_parallel']}: {_ms(pf['prefill_ms'])} a prompt "
            f"({pf['prompts_per_step']} a step), {pf['requests_per_s']:,.2f} req/s a replica",
        )
        d_rate = f", {dc['requests_per_s']:,.2f} req/s a replica" if dc["requests_per_s"] else ""
        d_step = f"step {_ms(dc['decode_step_ms'])} at batch {dc['batch']}" if dc["decode_step_ms"] else "no batch fits"
        t.add_row("decode pool", f"{dc['replicas']} x {dc['gpu']} tp {dc['tensor_parallel']}: {d_step}{d_rate}")
        t.add_row(
            "KV hand-off of the mean prompt",
            f"{_bytes(dis['handoff_bytes'])} in all, {_bytes(dis['handoff_bytes_per_gpu'])} a decode GPU, over "
            f"{dis['link']} at {dis['link_gbps']:,.0f} GB/s: {_ms(dis['handoff_ms'])}",
        )
