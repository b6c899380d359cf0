"""The benchmarks' result files: ``make bench`` writes them under ``benchmarks/results/``, and
the documentation's performance page is generated from them (machine and date included)."""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def machine() -> str:
    """CPU model, CPU count, OS and Python, as one line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} CPUs, {system}, Python {platform.python_version()}"


def figure(name: str, value: float, unit: str, target: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "value": round(float(value), 4), "unit": unit, "target": target, **extra}


def write(path: Path, benchmark: str, method: str, figures: list[dict[str, Any]]) -> None:
    """One result file: what was measured, how, where and when."""
    doc = {
        "benchmark": benchmark,
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "load_average_before": round(os.getloadavg()[0], 2),
        "method": method,
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")


@functools.cache
def user_env() -> dict[str, str]:
    """The environment a timed ``capsim`` process runs in: the package's bytecode compiled
    first, as an installed package's is, so that no process is timed compiling ``sim/`` (with
    ``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__`` every start pays that again)."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "sim")], check=True)
    return os.environ.copy()
