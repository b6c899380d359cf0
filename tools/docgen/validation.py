"""The validation page, rendered from committed result files (never typed by hand).

Inputs: ``sim/data/published/fit.json`` (``capsim calibrate published``),
``docs/data/kv_logs.json`` and ``docs/data/queueing.json`` (``make validation``),
``docs/data/verify_llm.json``, ``verify_retrieval.json`` and ``verify_vllm.json`` (the rows of
``capsim verify``'s JSON, as ``make verify`` plays them), ``docs/data/verify_timing.json``.
:func:`summary_rows` gives the one-line-per-check summary the README repeats;
``tests/test_docs.py`` holds the README to it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"
FIT = ROOT / "sim" / "data" / "published" / "fit.json"
SILICON = ROOT / "sim" / "data" / "silicon" / "validation" / "summary.json"
DISAGG = ROOT / "sim" / "data" / "silicon" / "validation" / "disaggregated" / "summary.json"

METRIC = {"e2e_ms": "e2e", "ttft_ms": "TTFT", "retrieval_ms": "retrieval", "throughput_per_s": "throughput"}


#: The live halves of ``make verify`` (docs/data/<name>.json) and their summary labels.
LIVE_HALVES = (
    ("verify_llm", "Live stack: LLM"),
    ("verify_retrieval", "Live stack: retrieval"),
    ("verify_vllm", "Live stack: vLLM V1 (CPU)"),
)


def load(name: str) -> dict[str, Any]:
    path = {"fit": FIT, "silicon": SILICON, "disaggregated": DISAGG}.get(name, DATA / f"{name}.json")
    return dict(json.loads(path.read_text()))


def pct(x: float | None, signed: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x:+.1f} %" if signed else f"{x:.1f} %"


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ci(ci: list | None) -> str:
    if not ci or ci[0] is None:
        return ""
    lo, hi = ci[0], ci[1] if len(ci) > 1 else None
    return f" ({_num(lo)}-{_num(hi) if hi is not None else ''})"


def verify_counts(doc: dict[str, Any]) -> tuple[int, int, int, float]:
    """(within, undecided, outside, largest |error| in %) over the bounded rows."""
    rows = [r for load in doc["loads"] for r in load["rows"] if r.get("bound") is not None]
    within = sum(r["verdict"] == "within" for r in rows)
    undecided = sum(r["verdict"] == "undecided" for r in rows)
    outside = sum(r["verdict"] == "outside" for r in rows)
    worst = max(abs(r["rel_error"]) for r in rows if r.get("rel_error") is not None) * 100
    return within, undecided, outside, worst


def summary_rows() -> list[tuple[str, str, str, str]]:
    """One row per check: (check, compared with, how far off, page anchor)."""
    fit = load("fit")
    kv = load("kv_logs")
    q = load("queueing")
    ho = fit["held_out"]
    kv_worst = max(kv["rows"], key=lambda r: abs(r["rel_error"]))
    q_worst = max(abs(r["rel_error"]) for r in q["rows"]) * 100
    out = [
        (
            "Queueing formulas",
            "Erlang C (M/M/1, M/M/10) and exact MVA (closed users)",
            f"within {q_worst:.1f} %, every exact value inside capsim's 95 % interval"
            if all(r["exact_inside_ci"] in (True, None) for r in q["rows"])
            else f"within {q_worst:.1f} %",
            "queueing-formulas",
        ),
        (
            "LLM step costs",
            f"{fit['points_fitted']} published measurements from {fit['sources_fitted']} sources, each source held out",
            f"decode MAPE {ho['decode']['mape_pct']:.0f} %, prefill {ho['prefill']['mape_pct']:.0f} %, "
            f"static runs {ho['throughput']['mape_pct']:.0f} %",
            "llm-step-costs-against-published-measurements",
        ),
        _silicon_row(load("silicon")),
        *([_disagg_row(load("disaggregated"))] if DISAGG.is_file() else []),
        (
            "KV memory",
            f"{len(kv['rows'])} published vLLM start-up logs",
            f"worst {kv_worst['rel_error'] * 100:+.1f} % (tolerance {kv['tolerance'] * 100:.0f} %)",
            "kv-memory-against-vllm-start-up-logs",
        ),
    ]
    return out + _live_rows()


def _live_rows() -> list[tuple[str, str, str, str]]:
    """The live stack's rows: each recorded half's verdict counts, then how long `make verify` took."""
    out = []
    for name, label in LIVE_HALVES:
        if not (DATA / f"{name}.json").is_file():  # a half not recorded yet
            continue
        doc = load(name)
        w, u, o, worst = verify_counts(doc)
        total = w + u + o
        out.append(
            (
                label,
                f"`make verify`: {doc['scenario']} against real servers",
                f"{w} of {total} rows within their bound, {u} undecided, {o} outside; largest error {worst:.1f} %",
                "live-stack-make-verify",
            )
        )
    runs = {r["kind"]: r for r in load("verify_timing")["rows"] if "kind" in r}
    if runs:
        said = []
        if "first" in runs:
            said.append(
                f"first run on an empty cache {runs['first']['minutes']:.0f} min "
                f"(set-up {runs['first']['setup_minutes']:.0f} min)"
            )
        if "warm" in runs:
            said.append(f"warm run {runs['warm']['minutes']:.0f} min")
        out.append(
            (
                "Live stack: time",
                "`make verify` on the machine named on its page",
                ", ".join(said),
                "how-long-make-verify-takes",
            )
        )
    return out


def _mape(cell: dict[str, Any]) -> str:
    return f"{cell['mape_pct']:.0f} % ({cell['signed_pct']:+.0f} %)"


_GPU_NAMES = {"h100-sxm": "H100", "h200": "H200", "b200": "B200", "gb200": "GB200", "b300": "B300", "gb300": "GB300"}


def _gpu_order(g: str) -> int:
    return list(_GPU_NAMES).index(g) if g in _GPU_NAMES else len(_GPU_NAMES)


def _silicon_row(sil: dict[str, Any]) -> tuple[str, str, str, str]:
    a = sil["all"]
    held, aic = a["engine_preset_held_out"], a["aiconfigurator"]
    same = a.get("engine_preset_on_aiconfigurator_rows")
    beside = f" (engine presets on them: TPOT {_mape(same['tpot'])}, TTFT {_mape(same['ttft'])})" if same else ""
    return (
        "Measured serving runs",
        f"{a['rows']:,} of aiconfigurator's {sil['rows_in_file']:,} measured vLLM / TensorRT-LLM / SGLang runs "
        f"({', '.join(_GPU_NAMES.get(g, g) for g in sorted(sil['by']['gpu'], key=_gpu_order))}; dense and MoE)",
        f"engine presets held out by (model, GPU): TPOT MAPE {_mape(held['tpot'])}, TTFT {_mape(held['ttft'])}; "
        f"aiconfigurator on its {aic['tpot']['n']} rows: TPOT {_mape(aic['tpot'])}, TTFT {_mape(aic['ttft'])}" + beside,
        "measured-serving-runs",
    )


def _disagg_row(dis: dict[str, Any]) -> tuple[str, str, str, str]:
    a = dis["all"]
    cap, held = a["capsim"], a["engine_preset_held_out"]
    return (
        "Measured disaggregated runs",
        f"{a['rows']:,} of aiconfigurator's {dis['disaggregated_rows_in_file']:,} measured runs with prefill and "
        "decode on separate workers (the others: worker counts not recorded, or layouts capsim does not build)",
        f"capsim `published`: TPOT MAPE {_mape(cap['tpot'])}, TTFT {_mape(cap['ttft'])}; engine presets held out: "
        f"TPOT {_mape(held['tpot'])}, TTFT {_mape(held['ttft'])}",
        "disaggregated-prefill-and-decode",
    )


def _silicon(sil: dict[str, Any], disagg: dict[str, Any] | None = None) -> list[str]:
    # the reasons are a property of the file and the code: the newer run's count, where there is one
    reasons = (disagg or sil)["rows_by_reason"]
    lines = [
        "",
        "## Measured serving runs",
        "",
        f"`capsim validate` replays the rows of {sil['data']} that capsim can represent "
        f"({sil['all']['rows']:,} of {sil['rows_in_file']:,}; the others: "
        + ", ".join(f"{reason} {n:,}" for reason, n in reasons.items() if reason != "representable")
        + f") as capsim scenarios: {sil['replay']}. Error = {sil['error']}. "
        "`engine preset, held out` fits each engine's step costs and frontend time without the row's "
        "(model, GPU) group and predicts the group; aiconfigurator's own predictions were computed once "
        "with its package and are committed beside the rows. MAPE with the signed mean in brackets.",
        "",
        "| engine | rows | capsim `published` TPOT | TTFT | engine preset, held out, TPOT | TTFT "
        "| aiconfigurator TPOT | TTFT |",
        "|---|---|---|---|---|---|---|---|",
    ]
    groups = [("all", sil["all"]), *sorted(sil["by"]["engine"].items())]
    for name, g in groups:
        cells = [g["capsim"], g["engine_preset_held_out"], g["aiconfigurator"]]
        row = [name, str(g["rows"])]
        for c in cells:
            for m in ("tpot", "ttft"):
                row.append(
                    _mape(c[m]) + (f" (n {c[m]['n']})" if c is g["aiconfigurator"] else "") if c[m]["n"] else "-"
                )
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "The same on the rows aiconfigurator predicts (the dense models on H100 and H200, and a fixed-seed "
        "sample of the mixture-of-experts rows, four per model, GPU and engine), so that the three "
        "predictors are compared on the same runs:",
        "",
        "| engine | rows | capsim `published` TPOT | TTFT | engine preset, held out, TPOT | TTFT "
        "| aiconfigurator TPOT | TTFT |",
        "|---|---|---|---|---|---|---|---|",
        *_same_rows(),
        "",
        "The per-row predictions are in `sim/data/silicon/validation/rows.csv`; `make validate` recomputes them.",
    ]
    return lines


def _agg_by_model_gpu() -> dict[tuple[str, str], list[dict[str, str]]]:
    with open(ROOT / "sim/data/silicon/validation/rows.csv", newline="") as fh:
        recs = [r for r in csv.DictReader(fh) if not r["capsim_error"]]
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in recs:
        out.setdefault((r["model"], r["gpu"]), []).append(r)
    return out


def _mape_of(recs: list[dict[str, str]], col: str) -> str:
    e = [float(r[col]) for r in recs if r[col]]
    if not e:
        return "-"
    return _mape({"mape_pct": 100 * sum(map(abs, e)) / len(e), "signed_pct": 100 * sum(e) / len(e)})


def _disaggregated(dis: dict[str, Any]) -> list[str]:
    """The disaggregated rows by (model, GPU), beside the aggregated rows of the same model and GPU."""
    agg = _agg_by_model_gpu()
    lines = [
        "",
        "### Disaggregated prefill and decode",
        "",
        f"`capsim validate --disaggregated` replays the disaggregated rows whose pools capsim builds as "
        f"`llm.disaggregated`: {dis['all']['rows']} of the file's {dis['disaggregated_rows_in_file']:,} "
        "(the others: "
        + ", ".join(
            f"{reason} {n:,}"
            for reason, n in dis["disaggregated_rows_by_reason"].items()
            if not reason.startswith("representable")
        )
        + f"). Replay: {dis['replay']}. The aggregated rows of the same model and GPU are beside them "
        "(capsim `published`).",
        "",
        "| model on GPU | disaggregated rows | capsim TPOT | TTFT | engine preset, held out, TPOT | TTFT "
        "| aggregated rows | capsim TPOT | TTFT |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, g in [("all", dis["all"]), *dis["by"]["model_gpu"].items()]:
        row = [name, str(g["rows"])]
        for who in ("capsim", "engine_preset_held_out"):
            for m in ("tpot", "ttft"):
                row.append(_mape(g[who][m]) if g[who][m]["n"] else "-")
        if name == "all":
            same = [r for recs in agg.values() for r in recs]
        else:
            model, _, gpu = name.partition(" on ")
            same = agg.get((model, gpu), [])
        row += [str(len(same)), _mape_of(same, "capsim_tpot_err"), _mape_of(same, "capsim_ttft_err")]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "The per-row predictions are in `sim/data/silicon/validation/disaggregated/rows.csv`.",
    ]
    return lines


def _same_rows() -> list[str]:
    """One table row per engine (and all): MAPE (signed mean) of each predictor on the rows of
    ``rows.csv`` that every predictor answered."""
    with open(ROOT / "sim/data/silicon/validation/rows.csv", newline="") as fh:
        recs = list(csv.DictReader(fh))
    cols = ("capsim", "engine", "aic")
    both = [r for r in recs if all(r[f"{c}_{m}_err"] for c in cols for m in ("tpot", "ttft"))]
    out = []
    for name in ("all", *sorted({r["engine"] for r in both})):
        sel = [r for r in both if name in ("all", r["engine"])]
        row = [name, str(len(sel))]
        for c in cols:
            for m in ("tpot", "ttft"):
                e = [float(r[f"{c}_{m}_err"]) for r in sel]
                row.append(_mape({"mape_pct": 100 * sum(map(abs, e)) / len(e), "signed_pct": 100 * sum(e) / len(e)}))
        out.append("| " + " | ".join(row) + " |")
    return out


def render() -> str:
    fit, kv, q = load("fit"), load("kv_logs"), load("queueing")
    lines = [
        "# Validation",
        "",
        "Every fidelity check capsim is held to, its method and its latest numbers. This page is generated "
        "from committed result files (`make validation` re-measures the ones any machine can; "
        "`make docs` renders the page); nothing here is typed by hand.",
        "",
        "| check | compared with | how far off |",
        "|---|---|---|",
    ]
    for check, against, off, anchor in summary_rows():
        lines.append(f"| [{check}](#{anchor}) | {against} | {off} |")
    disagg = load("disaggregated") if DISAGG.is_file() else None
    lines += _queueing(q) + _fit(fit) + _silicon(load("silicon"), disagg)
    if disagg is not None:
        lines += _disaggregated(disagg)
    lines += _kv(kv) + _verify()
    return "\n".join(lines) + "\n"


def _queueing(q: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Queueing formulas",
        "",
        "capsim end to end (`sim.simulate`, cache and LLM off, the retrieval stage as the queue) against "
        "exact formulas. Each simulated figure is the mean over "
        f"{q['replications']} replications with its {q['confidence']:.0%} interval. The test suite holds the "
        "same comparisons (`tests/test_queueing_checks.py`, `make test-long` for the long forms).",
        "",
        "| check | simulated (95 % interval) | exact | error |",
        "|---|---|---|---|",
    ]
    for r in q["rows"]:
        lines.append(
            f"| {r['check']} | {_num(r['simulated'])} {r['unit']}{_ci(r['ci'])} | {_num(r['exact'])} {r['unit']} "
            f"| {pct(r['rel_error'] * 100)} |"
        )
    lines += ["", f"*Measured {q['date']} with capsim {q['capsim']} on {q['machine']} (`make validation`).*"]
    return lines


def _fit(fit: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## LLM step costs against published measurements",
        "",
        f"The step-cost parameters of `llm.efficiency: published` are fitted to {fit['points_fitted']} published "
        f"measurements from {fit['sources_fitted']} sources (`sim/data/published/`, every row with its page and "
        "date). How far an unmeasured configuration can be trusted is measured by leaving each source out "
        "in turn and predicting it from the others. Error = predicted / measured - 1; MAPE and the signed mean.",
        "",
        "| | decode | prefill / TTFT | static-batch runs |",
        "|---|---|---|---|",
    ]
    for label, key in (
        ("assumed before the fit (0.8 / 0.5 / 1 ms)", "assumed_before"),
        ("the fit, in sample", "in_sample"),
        ("**the fit, each source held out**", "held_out"),
    ):
        cells = [
            f"{pct(fit[key][k]['mape_pct'], False)}, {pct(fit[key][k]['signed_mean_pct'])} (n {fit[key][k]['n']})"
            for k in ("decode", "prefill", "throughput")
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    t = fit["targets"]
    lines += [
        "",
        f"Targets: decode MAPE {t['decode_mape_pct']} %, prefill {t['prefill_mape_pct']} %, "
        f"bias within ±{t['signed_mean_pct']} %. Held out, source by source:",
        "",
        "| source | rows | MAPE | signed mean |",
        "|---|---|---|---|",
    ]
    for src, r in sorted(fit["held_out_by_source"].items(), key=lambda kv: kv[1]["mape_pct"]):
        lines.append(f"| `{src}` | {r['n']} | {pct(r['mape_pct'], False)} | {pct(r['signed_mean_pct'])} |")
    lines += ["", "Kept out of the fit and predicted anyway:", ""]
    for gpu, parts in fit["kept_out_gpus_under_the_fit"].items():
        thr = parts["throughput"]
        lines.append(
            f"* `{gpu}`: static runs MAPE {pct(thr['mape_pct'], False)}, signed {pct(thr['signed_mean_pct'])} "
            f"({thr['n']} rows): the fitted efficiencies are the CUDA engines'."
        )
    lines += ["", "The presets, and the reference step (Llama-3-8B, H100 SXM, batch 32, 1,024 tokens of context):", ""]
    lines += [
        "| preset | bw_efficiency | mfu | step overhead ms | per sequence ms | all-reduce µs | reference step ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in fit["presets"].items():
        lines.append(
            f"| `{name}` | {p['bw_efficiency']:.3f} | {p['mfu']:.3f} | {p['step_overhead_ms']:.2f} | "
            f"{p['step_overhead_per_seq_ms']:.3f} | {p['allreduce_latency_us']:.0f} | "
            f"{fit['reference_step_ms'][name]:.1f} |"
        )
    lines += [
        "",
        f"*Fitted {fit['created_utc'][:10]} by `capsim calibrate published` "
        f"({fit['resamples']} bootstrap resamples for the fast and slow presets); "
        "`tests/test_published_fit.py` re-runs the fit and pins these figures.*",
    ]
    return lines


def _kv(kv: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## KV memory against vLLM start-up logs",
        "",
        "Each published log is rebuilt as an `llm` section (model, GPU, tensor parallelism, "
        "`gpu_memory_utilization`, batch limits, the engine-reserve preset of its vLLM version) and capsim's "
        f"KV capacity in tokens is held against the one the engine logged (tolerance {kv['tolerance']:.0%}, "
        "`tests/test_kv_logs.py`).",
        "",
        "| log | model | GPU | tp | vLLM | preset | logged tokens | capsim | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in kv["rows"]:
        lines.append(
            f"| [{r['id']}]({r['source']}) | {r['model']} | {r['gpu']} | {r['tensor_parallel']} | {r['vllm']} | "
            f"`{r['engine_reserve']}` | {r['logged_tokens']:,} | {r['capsim_tokens']:,} | "
            f"{pct(r['rel_error'] * 100)} |"
        )
    lines += ["", f"*Computed {kv['date']} with capsim {kv['capsim']} (`make validation`).*"]
    return lines


def _checks(checks: list[dict[str, Any]]) -> list[str]:
    """The vLLM half's scheduler checks (``sim/verify/stack/vllm_checks.py``): one table per check."""
    lines: list[str] = []
    for c in checks:
        if "users" in c:
            said = (
                f"{c['users']} users for {c['duration_s']:.0f} s, {c['requests']} requests ({c['failures']} failed), "
                f"{c['kv_blocks']} KV blocks, {c['prompts_over_budget']} prompts over the {c['token_budget']}-token "
                "budget; running batch and queue length time-means of the server's /metrics against the "
                "simulated requests'"
            )
        else:
            said = (
                f"{c['requests']} requests one after another sharing a {c['system_tokens']}-token system prompt, "
                f"each with {c['question_tokens']} question tokens, {c['block_tokens']}-token blocks; the server's "
                "prefix-cache hit tokens per request after the first against capsim's cached prefix"
            )
        lines += [
            "",
            f"Scheduler check *{c['name']}*: {said}.",
            "",
            "| check | measured | predicted | error | verdict |",
            "|---|---|---|---|---|",
        ]
        for r in c["rows"]:
            err = pct(r["error"] * 100) if r.get("error") is not None else "-"
            lines.append(f"| {r['check']} | {_num(r['measured'])} | {_num(r['predicted'])} | {err} | {r['verdict']} |")
    return lines


def _verify() -> list[str]:
    lines = [
        "",
        "## Live stack (`make verify`)",
        "",
        "`make verify` builds a real serving stack on the machine (llama.cpp's `llama-server` with a "
        "random-weight Llama-architecture model, an hnswlib search service behind uvicorn), plays closed-loop "
        "loads against it and compares every statistic with capsim's prediction, calibrated only from "
        "isolated probes. Verdicts: `within` the bound; `outside` when even the edge of the measurement's own "
        "95 % interval misses it; `undecided` otherwise (the load was too short to tell). "
        "See [Verify against your staging stack](how-to/verify.md).",
    ]
    for name, _label in LIVE_HALVES:
        if not (DATA / f"{name}.json").is_file():
            continue
        doc = load(name)
        w, u, o, _ = verify_counts(doc)
        lines += [
            "",
            f"### {doc['scenario']}",
            "",
            f"{doc['setup']}.",
            "",
            "| users | metric | measured (its 95 %) | predicted | error | bound | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        for load_ in doc["loads"]:
            for r in load_["rows"]:
                label = f"{METRIC.get(r['metric'], r['metric'])} {r['stat'] if r['stat'] != 'mean' else ''}".strip()
                lines.append(
                    f"| {load_['users']} | {label} | {_num(r['measured'])}{_ci(r.get('measured_ci'))} | "
                    f"{_num(r['predicted'])} | {pct(r['rel_error'] * 100)} | "
                    f"{pct(r['bound'] * 100, False) if r.get('bound') is not None else '-'} | {r['verdict'] or '-'} |"
                )
        lines += [
            "",
            f"{w} within, {u} undecided, {o} outside. *{doc['date']}, commit {doc['commit']}, {doc['machine']}. "
            f"Source: {doc['source']}.*",
        ]
        lines += _checks(doc.get("checks", []))
    timing = load("verify_timing")
    lines += ["", "### How long `make verify` takes", "", "| run | minutes | note |", "|---|---|---|"]
    for r in timing["rows"]:
        lines.append(f"| {r['what']} | {r['minutes']:.1f} (set-up {r['setup_minutes']:.1f}) | {r['note']} |")
    lines += ["", f"*{timing['machine']}. Source: {timing['source']}.*"]
    return lines
