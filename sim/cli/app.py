"""The ``capsim`` Typer app and what every command shares: one-line errors, the
progress bar, the output-folder check.  Commands live in sibling modules and
register themselves on :data:`app` when :func:`sim.cli.main` imports them.

Heavy libraries (pandas, pydantic, scipy, the simulator) are imported inside
command bodies, never here, so ``capsim --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from sim.errors import CapsimError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Capacity simulator for retrieval-augmented LLM services."
)
err_console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Turn a CapsimError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CapsimError as e:
            err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


class progress_bar:
    """A rich progress bar on stderr, shown only when stderr is a terminal or forced."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.enabled = err_console.is_terminal if enabled is None else enabled
        self.label = label
        self._p: Any = None
        self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import (  # deferred: only while a bar is shown
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
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


def stdout_console() -> Console:
    """Console for tables: the terminal's width, or a wide one when piped."""
    c = Console()
    return c if c.is_terminal else Console(width=200)
