"""The ``capsim`` command.  No model logic here: parse, call, print.

Exit codes: 0 every SLA passes (or none is set), 1 an SLA fails, 3 a verdict
is inconclusive and none fails, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import CapsimError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Capacity simulator for retrieval-augmented LLM services.")
err_console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Turn a CapsimError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CapsimError as e:
            err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2)

    return wrapper


class progress_bar:
    """A rich progress bar on stderr, shown only when stderr is a terminal or forced."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.enabled = err_console.is_terminal if enabled is None else enabled
        self.label = label
        self._p: Progress | None = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                               TimeElapsedColumn(), console=err_console, transient=True)
            self._p.__enter__()
            self._task = self._p.add_task(self.label, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._p is not None:
            self._p.update(self._task, completed=done, total=total)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)


def check_out_dir(out: Path | None, flag: str = "--out") -> None:
    """Refuse an output folder that cannot be one, before any work is done."""
    if out is not None and out.exists() and not out.is_dir():
        raise CapsimError(f"{flag} {out}: is a file; give a folder (it is created if missing)")


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
) -> None:
    """Simulate a scenario (every sweep point) and judge its SLAs."""
    from . import report
    from .runner import simulate
    from .scenario import parse_overrides

    if replications is not None and replications < 1:
        raise CapsimError(f"--replications: must be >= 1, got {replications}")
    if jobs is not None and jobs < 1:
        raise CapsimError(f"--jobs: must be >= 1, got {jobs}")
    check_out_dir(out)
    overrides = parse_overrides(set_)
    with progress_bar("simulating") as bar:
        result = simulate(scenario, overrides, seed=seed, replications=replications, jobs=jobs, progress=bar)
    if out is not None:
        report.write_run(result, out)
    if json_:
        sys.stdout.write(report.to_json(result.summary) + "\n")
    else:
        report.print_run(result, stdout_console())
    raise typer.Exit(result.exit_code)


@app.command()
@user_errors
def schema() -> None:
    """Print the scenario JSON Schema."""
    import json

    from .config import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def stdout_console() -> Console:
    """Console for tables: the terminal's width, or a wide one when piped."""
    c = Console()
    return c if c.is_terminal else Console(width=200)


# Sub-commands that live in their own modules register themselves here; each
# module exposes ``register(app)`` and owns its command's options and output.
_COMMAND_MODULES = ("sim.cli_estimate", "sim.cli_sweep")


def _mount() -> None:
    import importlib

    try:
        from .calibrate.cli import app as calibrate_app
    except ModuleNotFoundError as e:
        if e.name != "sim.calibrate.cli":
            raise
    else:
        app.add_typer(calibrate_app, name="calibrate", help="Measure real runs and write calibration files.")
    for name in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        mod.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    # `python -m sim.cli`: the sub-command modules import `sim.cli`, so run the
    # importable module rather than mounting them on this `__main__` copy.
    from sim.cli import main as _main

    _main()
else:
    _mount()
