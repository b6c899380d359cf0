"""``capsim validate``: replay measured serving runs as scenarios and report capsim's error.

A thin shell over :func:`sim.run.validate.run_validation`; the replay is described there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

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
        None, "--start", help="together (aiperf's concurrency mode: all users at t = 0; default) or spread."
    ),
    list_reasons: bool = typer.Option(
        False, "--list-reasons", help="Only count the rows by why capsim cannot replay them."
    ),
) -> None:
    """Replay aiconfigurator's measured serving runs as capsim scenarios; TTFT/TPOT error beside aiconfigurator's."""
    # deferred: the simulator and numpy load only when the command runs
    from sim.run.validate import run_validation
    from sim.spec.silicon import load_rows, reason_counts

    console = stdout_console()
    if list_reasons:
        for reason, n in reason_counts(load_rows()).items():
            typer.echo(f"{n:6d}  {reason}")
        return
    if jobs is not None and jobs < 1:
        raise CapsimError(f"--jobs: must be >= 1, got {jobs}")
    if start is not None and start not in ("together", "spread"):
        raise CapsimError(f"--start: expected together or spread, got {start!r}")
    if out is not None and out.exists() and not out.is_dir():
        raise CapsimError(f"--out: {str(out)!r} is a file, not a folder")
    doc = run_validation(sample=sample, out=out, jobs=jobs, use_cache=not no_cache, start=start)
    table = Table(box=box.SIMPLE, title=f"{doc['predictor']}: MAPE (signed mean), predicted / measured - 1")
    for col in ("rows", "capsim TTFT", "capsim TPOT", "aiconfigurator TTFT", "aiconfigurator TPOT"):
        table.add_column(col, justify="right")
    blocks = [("all", doc["all"])] + [(k, v) for k, v in doc["by"]["engine"].items()]
    for name, b in blocks:
        table.add_row(
            f"{name} ({b['rows'] - b['capsim_refused']})",
            _cell(b, "capsim", "ttft"),
            _cell(b, "capsim", "tpot"),
            _cell(b, "aiconfigurator", "ttft"),
            _cell(b, "aiconfigurator", "tpot"),
        )
    console.print(table)
    if doc["capsim_refusals"]:
        for why, n in doc["capsim_refusals"].items():
            typer.echo(f"capsim refused {n} row(s): {why}")
    if out is not None:
        typer.echo(f"wrote {out / 'rows.csv'} and {out / 'summary.json'}")
