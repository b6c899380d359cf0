"""What every calibration file says about the machine it was measured on, once."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def usable_cores() -> int | None:
    """Cores this process may run on (its affinity mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def run_header(
    kind: str,
    version: int,
    started: _dt.datetime,
    load_start: list[float] | None,
    command: str | None,
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The head of a calibration document: what, when, by which command, on which machine
    (with the load average at its start and end, so a noisy measurement says so)."""
    finished = _dt.datetime.now(_dt.timezone.utc)
    return {
        "version": version,
        "kind": kind,
        "created_utc": started.isoformat(timespec="seconds"),
        "finished_utc": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 1),
        "command": command,
        "machine": {**machine, "loadavg_start": load_start, "loadavg_end": loadavg()},
    }
