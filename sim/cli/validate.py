"""``capsim validate``: replay measured serving runs as scenarios and report capsim's error.

A thin shell over :func:`sim.run.validate.run_validation`; the replay is described there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from sim.cli.app import app, stdout_console, user_errors
from sim.errors import CapsimError


def _cell(block: dict, who: str, metric: str) -> str:
    s = block[who][metric]
    if not s.get("n"):
        return "-"
    return f"{s['mape_pct']:.0f}% ({s['signed_pct']:+.0f}%)"


@app.command("validate")
@user_errors
def validate(
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for rows.csv (per-row predictions and errors) and summary.json."
    ),
    sample: bool = typer.Option(
        False, "--sample", help="Only a stratified sample (a few rows per engine, GPU, model)."
    ),
    jobs: Optional[int] = typer.Option(None, "--jobs", help="Processes (default: every core)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Replay every row even if the model code is unchanged."),
    start: Optional[str] = typer.Option(
        None,
        "--start",
        help="together (all users at t = 0, the start cut as warm-up), spread (users join over a lifetime) or "
        "burst (an idle engine, c requests at once, the first 10 x c sent counted).",
    ),
    fit_engines: Optional[Path] = typer.Option(
        None,
        "--fit-engines",
        help="Fit each engine's step costs to its rows, held out by (model, GPU), and write the fit here "
        "(the shipped one is sim/data/silicon/engine_fit.json).",
    ),
    perop_only: bool = typer.Option(
        False,
        "--perop-only",
        help="With --fit-engines: keep the shipped roofline fit and fit only the per-operation step cost.",
    ),
    fit_frontend: Optional[Path] = typer.Option(
        None,
        "--fit-frontend",
        help="Replay every row with the shipped fit, fit each engine's frontend time (llm.frontend_ms) to "
        "TTFT, held out by (model, GPU), and write the shipped fit with it here.",
    ),
    list_reasons: bool = typer.Option(
        False, "--list-reasons", help="Only count the rows by why capsim cannot replay them."
    ),
    disaggregated: bool = typer.Option(
        False,
        "--disaggregated",
        help="Replay the disaggregated rows (separate prefill and decode workers) as llm.disaggregated instead.",
    ),
    engine: Optional[str] = typer.Option(
        None,
        "--engine",
        help="Only this engine's rows (vllm, trtllm or sglang); with --fit-engines / --fit-frontend only its "
        "fit, the other engines' blocks kept from the shipped fit.",
    ),
) -> None:
    """Replay aiconfigurator's measured serving runs as capsim scenarios; TTFT/TPOT error beside aiconfigurator's."""
    # deferred: the simulator and numpy load only when the command runs
    from sim.run.validate import BENCHMARK_ENGINES, run_validation
    from sim.spec.silicon import load_rows, reason_counts

    console = stdout_console()
    if list_reasons:
        for reason, n in reason_counts(load_rows()).items():
            typer.echo(f"{n:6d}  {reason}")
        return
    _check_options(out, jobs, start, engine, BENCHMARK_ENGINES)
    if fit_engines is not None:
        _fit_engines(fit_engines, jobs, perop_only, engine)
        return
    if fit_frontend is not None:
        _fit_frontend(fit_frontend, jobs, not no_cache, start, engine)
        return
    if disaggregated:
        _disaggregated(out, jobs, not no_cache)
        return
    doc = run_validation(sample=sample, out=out, jobs=jobs, use_cache=not no_cache, start=start, engine=engine)
    blocks = [("all", doc["all"])] + [(k, v) for k, v in doc["by"]["engine"].items()]
    console.print(
        _error_table(doc["predictor"], "rows", blocks, ("capsim", "engine_preset_held_out", "aiconfigurator"))
    )
    typer.echo(
        "capsim: llm.efficiency published; engine preset: llm.engine, step costs fitted without the row's "
        "(model, GPU) group (held out); aiconfigurator 0.12.0: its own per-operation database"
    )
    if doc["capsim_refusals"]:
        for why, n in doc["capsim_refusals"].items():
            typer.echo(f"capsim refused {n} row(s): {why}")
    if out is not None:
        typer.echo(f"wrote {out / 'rows.csv'} and {out / 'summary.json'}")


def _check_options(
    out: Path | None, jobs: int | None, start: str | None, engine: str | None, engines: tuple[str, ...]
) -> None:
    """One-line errors (exit 2) for option values the command cannot take."""
    if jobs is not None and jobs < 1:
        raise CapsimError(f"--jobs: must be >= 1, got {jobs}")
    if start is not None and start not in ("together", "spread", "burst"):
        raise CapsimError(f"--start: expected together, spread or burst, got {start!r}")
    if engine is not None and engine not in engines:
        raise CapsimError(f"--engine: expected {', '.join(engines[:-1])} or {engines[-1]}, got {engine!r}")
    if out is not None and out.exists() and not out.is_dir():
        raise CapsimError(f"--out: {str(out)!r} is a file, not a folder")


#: How each predictor's columns are headed.
_PREDICTORS = {"capsim": "capsim", "engine_preset_held_out": "engine preset", "aiconfigurator": "aiconfigurator"}


def _error_table(predictor: str, first: str, blocks: list[tuple[str, Any]], predictors: tuple[str, ...]) -> Table:
    """MAPE (signed mean) of TTFT and TPOT per block of rows, one pair of columns per predictor."""
    table = Table(box=box.SIMPLE, title=f"{predictor}: MAPE (signed mean), predicted / measured - 1")
    table.add_column(first, justify="right")
    for p in predictors:
        for m in ("TTFT", "TPOT"):
            table.add_column(f"{_PREDICTORS[p]} {m}", justify="right")
    for name, b in blocks:
        cells = [_cell(b, p, m) for p in predictors for m in ("ttft", "tpot")]
        table.add_row(f"{name} ({b['rows'] - b['capsim_refused']})", *cells)
    return table


def _disaggregated(out: Path | None, jobs: int | None, use_cache: bool) -> None:
    """``--disaggregated``: the disaggregated rows capsim represents, by (model, GPU)."""
    # deferred: the simulator and numpy load only when the command runs
    from sim.run.validate import run_disaggregated_validation

    doc = run_disaggregated_validation(out=out, jobs=jobs, use_cache=use_cache)
    blocks = [("all", doc["all"]), *doc["by"]["model_gpu"].items()]
    table = _error_table(doc["predictor"], "model on GPU (rows)", blocks, ("capsim", "engine_preset_held_out"))
    stdout_console().print(table)
    n, total = doc["all"]["rows"], doc["disaggregated_rows_in_file"]
    typer.echo(f"{n} of the file's {total} disaggregated rows replayed; the others:")
    for reason, k in doc["disaggregated_rows_by_reason"].items():
        if not reason.startswith("representable"):
            typer.echo(f"{k:6d}  {reason}")
    for why, k in doc["capsim_refusals"].items():
        typer.echo(f"capsim refused {k} row(s): {why}")
    if out is not None:
        typer.echo(f"wrote {out / 'rows.csv'} and {out / 'summary.json'}")


def _fit_engines(dest: Path, jobs: int | None, perop_only: bool, engine: str | None = None) -> None:
    """``--fit-engines``: each engine's step-cost fit, held out by (model, GPU), written to ``dest``."""
    # deferred: the fit loads scipy and the simulator; only this branch needs them
    from sim.files import atomic_write_text
    from sim.run.engine_fit import run_engine_fit
    from sim.spec.engines import ENGINES, fit_document
    from sim.spec.silicon import representable

    if dest.is_dir():
        raise CapsimError(f"--fit-engines: {str(dest)!r} is a folder; give a file name")
    keep = fit_document() if perop_only else None
    engines = (engine,) if engine else ENGINES  # one engine: the others' blocks as shipped
    fit = run_engine_fit(
        representable(), jobs=jobs, say=typer.echo, keep_roofline=keep, engines=engines, others=fit_document()
    )
    atomic_write_text(dest, json.dumps(fit, indent=1) + "\n")
    typer.echo(f"wrote {dest}")


def _fit_frontend(dest: Path, jobs: int | None, use_cache: bool, start: str | None, engine: str | None = None) -> None:
    """``--fit-frontend``: the shipped engine fit with each engine's frontend block refitted."""
    # deferred: the fit and the replays load numpy and the simulator
    from sim.files import atomic_write_text
    from sim.run.engine_fit import fit_frontend
    from sim.run.validate import validation_records
    from sim.spec.engines import ENGINES, fit_document

    if dest.is_dir():
        raise CapsimError(f"--fit-frontend: {str(dest)!r} is a folder; give a file name")
    records = validation_records(jobs=jobs, use_cache=use_cache, start=start, engine=engine)
    doc = fit_document()
    for name in (engine,) if engine else ENGINES:
        if name in doc.get("engines", {}):
            doc["engines"][name]["frontend"] = fe = fit_frontend(records, name)
            ms = fe.get("parameters", {}).get("frontend_ms", "-")
            typer.echo(f"{name}: frontend {ms} ms ({fe.get('rows', 0)} rows)")
    atomic_write_text(dest, json.dumps(doc, indent=1) + "\n")
    typer.echo(f"wrote {dest}")
