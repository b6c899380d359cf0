"""The ``capsim`` Typer app and what every command shares: one-line errors, the
progress bar, the output-folder check.  Commands live in sibling modules and
register themselves on :data:`app` when :func:`sim.cli.main` imports them.

Heavy libraries (pandas, pydantic, scipy, the simulator) are imported inside
command bodies, never here, so ``capsim --help`` starts in a fraction of a second.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from sim.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, CapsimError, IOFailure, RunStopped

EXIT_HELP = (
    "Exit codes: 0 pass (every SLA passes, or the command succeeded), 1 an SLA fails, 2 bad input "
    "(one line on stderr), 3 inconclusive, 4 internal error (a bug: one line plus the file holding "
    "the traceback), 5 a worker process died (finished points saved; re-run resumes), 6 an I/O failure "
    "(disk full, file-size limit, read-only folder: one line; re-run resumes), 130 Ctrl-C."
)

MAX_MEMORY_HELP = (
    "Refuse a run whose estimated peak memory exceeds this (e.g. 8G, 500M; default: the memory available now)."
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Capacity simulator for retrieval-augmented LLM services.\n\n" + EXIT_HELP,
)
err_console = Console(stderr=True)


def save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s full traceback to a new file in the temp folder; return its path."""
    fd, path = tempfile.mkstemp(prefix="capsim-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"capsim {' '.join(sys.argv[1:])}\n\n")
        fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


def internal_error(exc: BaseException) -> typer.Exit:
    """One line on stderr naming the crash and where its traceback is; exit code 4 (never 1)."""
    try:
        where = f"traceback saved in {save_traceback(exc)}"
    except OSError as e:  # no writable temp folder: the line still says what happened
        where = f"traceback not saved ({e.strerror or e})"
    what = " ".join(str(exc).split())
    if len(what) > 200:
        what = what[:197] + "..."
    err_console.print(
        f"internal error (a bug in capsim, not in your input): {type(exc).__name__}: {what}; {where}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return typer.Exit(EXIT_INTERNAL)


def user_errors(fn: Callable) -> Callable:
    """The exit-code contract of every command (see :mod:`sim.errors`): a CapsimError is
    one line on stderr and exit 2; an OSError (disk full, read-only folder...) one line and
    exit 6; any other exception is an internal error, exit 4, with its traceback saved to a
    file; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CapsimError as e:
            err_console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except RunStopped as e:
            err_console.print(f"stopped: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print("interrupted", markup=False, highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except OSError as e:  # disk full, file-size limit, read-only folder: the system's, not a bug
            err = IOFailure.of(e)
            err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(err.exit_code) from None
        except Exception as e:
            raise internal_error(e) from None

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


def stdout_console() -> Console:
    """Console for tables: the terminal's width, or a wide one when piped."""
    c = Console()
    return c if c.is_terminal else Console(width=200)
