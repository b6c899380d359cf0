"""What the commands that run the simulator share: the count flags, the executor (local
processes or Dask), the checked ``--set`` overrides, and the output folder a command saves its
document and figures in.

The simulator and Dask load inside these helpers, when a command runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

from rich.console import Console

from sim.cli.app import stdout_console
from sim.errors import CapsimError
from sim.files import atomic_write_text, to_json

SCHEDULER_HELP = (
    "Run on a Dask cluster: tcp://host:8786 (an existing scheduler; gives up after 10 s) "
    "or local-dask (start a LocalCluster). Default: local processes."
)


def check_counts(replications: Optional[int], jobs: Optional[int]) -> None:
    """``--replications`` and ``--jobs``, when given, are at least 1."""
    if replications is not None and replications < 1:
        raise CapsimError(f"--replications: must be >= 1, got {replications}")
    if jobs is not None and jobs < 1:
        raise CapsimError(f"--jobs: must be >= 1, got {jobs}")


def executor(scheduler: Optional[str], jobs: Optional[int]) -> Any:
    """Local processes, or the Dask cluster ``--scheduler`` names."""
    from sim.run.executors import LocalExecutor  # deferred: the simulator

    if not scheduler:
        return LocalExecutor(jobs)
    from sim.run.dask import DaskExecutor  # deferred: dask is heavy and optional here

    return DaskExecutor(scheduler, n_workers=jobs)


def close(ex: Any) -> None:
    """Shut an executor down, when it has anything to shut."""
    shut = getattr(ex, "close", None)
    if shut:
        shut()


@contextlib.contextmanager
def pool(scheduler: Optional[str], jobs: Optional[int]) -> Iterator[Any]:
    """The executor for the body of a ``with``, shut down when it ends."""
    ex = executor(scheduler, jobs)
    try:
        yield ex
    finally:
        close(ex)


def checked_overrides(set_: list[str]) -> dict[str, Any]:
    """The ``--set`` overrides, each key one the scenario has."""
    from sim.spec.keys import check_key  # deferred: pydantic
    from sim.spec.scenario import parse_overrides

    ov = parse_overrides(set_)
    for k in ov:
        check_key(k, "--set")
    return ov


def check_out_folder(out: Path) -> None:
    """``--out`` is a folder, or nothing yet."""
    if out.exists() and not out.is_dir():
        raise CapsimError(f"--out {out}: exists and is not a folder")


def save_document(doc: str, out: Path, name: str) -> Path:
    """Write the JSON document ``doc`` to ``out/name``, the folder made as needed; the file written."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / name, doc + "\n")
    return out / name


def publish(
    res: Any,
    out: Path,
    name: str,
    draw: Callable[[Any, Path], list[Path]],
    show: Callable[[Any, Console, list[Path]], None],
    json_: bool,
) -> None:
    """Save ``res.to_dict()`` as ``out/name`` and ``draw`` its figures into ``out``; then print the
    document (``--json``) or ``show`` the result with the files written."""
    doc = to_json(res.to_dict())
    files = [save_document(doc, out, name), *draw(res, out)]
    if json_:
        sys.stdout.write(doc + "\n")
    else:
        show(res, stdout_console(), files)
