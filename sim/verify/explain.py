"""A verify run's calibration in sentences: what each load's prediction was calibrated from (the
LLM's overhead and step table, the retrieval probes, the pair check, the server's speed between
segments) and which loads were played twice."""

from __future__ import annotations

from typing import Any

from sim.verify.pairs import pair_text

#: How the overhead was measured, by the server's clock (sim/verify/server_clock.py).
CLOCK_TEXT = {
    "timings": " (first token less the server's own prompt time, from its streamed timings)",
    "metrics": " (first token less the server's own prefill time, from its /metrics request histograms)",
    "none": (
        ": the server reports no time of its own (neither streamed timings nor vLLM's /metrics), so the "
        "call's overhead stays inside the prefill steps timed by the client"
    ),
}


def calibration_lines(doc: dict[str, Any]) -> list[str]:
    """What a verify run's predictions were calibrated from, one sentence a line (``doc`` is the
    run's ``verify.json``: its ``calibration`` and ``loads``)."""
    lines: list[str] = []
    c = doc["calibration"]
    if c["llm_overhead_ms"] is not None:
        lines.append(
            f"calibrated (isolated): step table {c['step_table']}; LLM HTTP+SSE overhead {c['llm_overhead_ms']:.2f} ms"
            + CLOCK_TEXT.get(c.get("llm_server_clock") or "", "")
        )
    lines += [retrieval_line(n, r) for n, r in c["retrieval"].items()]
    pairs = c.get("retrieval_pairs")
    if pairs:
        lines.append(
            f"retrieval pairs (isolated, {pairs['pairs_each']} each after {pairs['pause_ms']:g} ms idle; "
            "median ms of the first / second sent, and what the pool models): "
            + "; ".join(pair_text(r) for r in pairs["rows"])
        )
    for n, sp in c.get("llm_speed", {}).items():
        f = sp["segment_factors_prompt_decode"]
        tok = sp.get("probe_tokens_prompt_output")
        how = f", {tok[0]}-token prompts after a {sp['probe_pause_s']:g}-s pause" if tok else ""
        lines.append(
            f"LLM server speed around {n} users (isolated, between segments{how}): step table scaled per segment by "
            + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in f)
            + " (prompt/decode)"
        )
    sv = c["server_alone_vs_table"]
    if sv:
        lines.append(
            f"server alone vs step table (diagnosis, not used): prompt time x{sv['prompt_ratio']:.2f}, "
            f"decode step at batch 1 x{sv['decode_ratio_batch1']:.2f}"
        )
    for load in doc["loads"]:
        first = load.get("first_attempt")
        if first is not None:
            lines.append(
                f"{load['users']} users were played twice (--confirm): the first play had "
                + "; ".join(first["misses"])
                + "; the table shows the replay, a row outside only when outside in both"
            )
    return lines


def retrieval_line(n: str, r: dict[str, Any]) -> str:
    """One load's retrieval calibration (``calibration.retrieval[n]`` of ``verify.json``)."""
    ri = r["isolated_ms"]
    parts = [f"one at a time p50 {ri['p50']:.2f} ms p95 {ri['p95']:.2f} ms (n={ri['n']})"]
    parts.append("wake-up after idle " + ", ".join(f"{x:g} ms: {y:.2f}" for x, y in r["wakeup_ms"]))
    if r["contention"]:
        parts.append("contention " + ", ".join(f"{x:.2f}" for x in r["contention"]))
    hb = r.get("handback_ms")
    sched = r.get("scheduler")
    if hb:
        used = " (measured; the scheduled threads make their own)" if sched else ""
        parts.append(f"answer waits behind a running search p50 {hb['p50']:.2f} ms p95 {hb['p95']:.2f} ms{used}")
    ph = r.get("phases_ms")
    if ph:
        parts.append(
            f"a search alone is {ph['search_ms']:.2f} ms searching + {ph['loop_cpu_ms']:.2f} ms of the "
            f"service's other CPU + {ph['off_core_ms']:.2f} ms off its cores"
        )
    if sched:
        parts.append(
            f"modelled as the service's event loop and search threads scheduled on one core (slice "
            f"{sched['slice_ms']:g} ms, tick {sched['tick_ms']:g} ms)"
        )
    return f"calibrated around {n} users (isolated, before and after the load): retrieval " + "; ".join(parts)
