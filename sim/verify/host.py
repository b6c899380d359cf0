"""This host's CPU scheduler figures, for ``retrieval.scheduler`` (:mod:`sim.engine.sched`).

The live search service runs on this machine, so its scheduler's base slice and
timer tick are read here rather than assumed:

* the base slice: EEVDF's ``sysctl_sched_base_slice`` is 0.75 ms scaled, by
  default (``SCHED_TUNABLESCALING_LOG``), by ``1 + log2(min(online CPUs, 8))``:
  1.5 ms on 2 CPUs, 3 ms on 8 or more (Linux ``kernel/sched/fair.c``,
  ``sysctl_sched_base_slice = 750000ULL`` and ``get_update_sysctl_factor``);
* the tick: ``1000 / CONFIG_HZ`` ms, from the running kernel's configuration
  (``/proc/config.gz``, else ``/boot/config-<release>``); 4 ms (HZ=250, the
  most common distribution setting) when neither can be read, and said so.
"""

from __future__ import annotations

import gzip
import math
import os
import platform
import re
from pathlib import Path
from typing import Any

DEFAULT_HZ = 250


def base_slice_ms(cpus: int) -> float:
    """EEVDF's default base slice on ``cpus`` online CPUs: 1 -> 0.75, 2 -> 1.5, 4 -> 2.25, 8+ -> 3."""
    return 0.75 * (1 + int(math.log2(max(1, min(cpus, 8)))))


def config_hz(texts: list[str] | None = None) -> int | None:
    """``CONFIG_HZ`` of the running kernel (or of the given config texts); None when unknown."""
    if texts is None:
        texts = []
        for path in (Path("/proc/config.gz"), Path(f"/boot/config-{platform.release()}")):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            texts.append((gzip.decompress(raw) if path.suffix == ".gz" else raw).decode(errors="replace"))
    for text in texts:
        m = re.search(r"^CONFIG_HZ=(\d+)\s*$", text, re.M)
        if m and int(m.group(1)) > 0:
            return int(m.group(1))
    return None


def host_scheduler() -> dict[str, Any]:
    """``{slice_ms, tick_ms, cpus, hz_source}`` for this host."""
    cpus = os.cpu_count() or 1
    hz = config_hz()
    return {
        "slice_ms": base_slice_ms(cpus),
        "tick_ms": 1000.0 / (hz or DEFAULT_HZ),
        "cpus": cpus,
        "hz_source": "kernel config" if hz else f"assumed HZ={DEFAULT_HZ} (no kernel config readable)",
    }
