"""``capsim run`` and ``capsim schema``.  No model logic here: parse, call, print.

Exit codes: 0 every SLA passes (or none is set), 1 an SLA fails, 3 a verdict
is inconclusive and none fails, 2 bad input (one line on stderr), 4 internal
error (one line plus the saved traceback), 5 a worker died, 6 an I/O failure (disk full,
read-only folder: one line), 130 Ctrl-C.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from sim.cli.app import MAX_MEMORY_HELP, app, progress_bar, stdout_console, user_errors
from sim.errors import CapsimError
from sim.files import to_json


@app.command()
@user_errors
def run(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    set_: list[str] = typer.Option([], "--set", help="Override a dotted key: --set llm.replicas=2"),
    seed: Optional[int] = typer.Option(None, help="Override run.seed."),
    replications: Optional[int] = typer.Option(None, help="Override run.replications."),
    jobs: Optional[int] = typer.Option(None, help="Parallel processes (default: all cores)."),
    out: Optional[Path] = typer.Option(None, help="Write resolved scenario, summary.json, records.parquet here."),
    json_: bool = typer.Option(False, "--json", help="Print only the summary JSON on stdout."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
) -> None:
    """Simulate a scenario (every sweep point) and judge its SLAs.

    Exit codes: 0 pass, 1 an SLA fails, 2 bad input, 3 inconclusive, 4 internal error, 5 a worker died,
    6 an I/O failure, 130 Ctrl-C.
    """
    # deferred: the simulator loads pydantic and numpy; `capsim run --help` needs neither.
    # scipy (the summaries) loads after the workers start, beside them.
    from sim.run.bounds import check_bounds
    from sim.run.folder import locked, prepare_out
    from sim.run.loop import run_sweep
    from sim.run.store import write_run
    from sim.spec.scenario import expand, parse_overrides, run_overrides

    if replications is not None and replications < 1:
        raise CapsimError(f"--replications: must be >= 1, got {replications}")
    if jobs is not None and jobs < 1:
        raise CapsimError(f"--jobs: must be >= 1, got {jobs}")
    overrides = parse_overrides(set_)
    points = expand(scenario, run_overrides(overrides, seed, replications), None)  # read and checked once
    check_bounds(points, max_memory, jobs, keep_records=out is not None)
    if out is not None:
        with locked(prepare_out(out, "run") or out):
            with progress_bar("simulating") as bar:
                result = run_sweep(points, jobs=jobs, progress=bar, keep_records=True)  # records.parquet
            write_run(result, out)
    else:
        with progress_bar("simulating") as bar:
            result = run_sweep(points, jobs=jobs, progress=bar, keep_records=False)
    if json_:
        sys.stdout.write(to_json(result.summary) + "\n")
    else:
        from sim.present.tables import print_run  # deferred: loaded once the workers run

        print_run(result, stdout_console())
    raise typer.Exit(result.exit_code)


@app.command()
@user_errors
def schema() -> None:
    """Print the scenario JSON Schema."""

    from sim.spec.schema import json_schema  # deferred: pydantic

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")
