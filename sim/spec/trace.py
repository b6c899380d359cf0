"""Arrival traces: a CSV of request timestamps to replay as the workload.

Three column layouts are read (``format: auto`` picks one from the header):

* **azure** -- the Azure LLM inference traces (Azure/AzurePublicDataset,
  ``AzureLLMInferenceTrace_code.csv`` / ``_conv.csv``, 2023):
  ``TIMESTAMP,ContextTokens,GeneratedTokens`` with timestamps such as
  ``2023-11-16 18:15:46.6805900`` (the 2024 week-long files have the same
  columns);
* **burstgpt** -- BurstGPT (HPMLL/BurstGPT): ``Timestamp,Model,Request tokens,
  Response tokens,Total tokens,Log Type`` with ``Timestamp`` in seconds;
* **capsim** -- ``arrival_s`` and optionally ``prompt_tokens``,
  ``output_tokens``, ``query_key``.

Arrival times are taken relative to the first row (so a trace starts at 0)
and multiplied by ``time_scale``.  Token counts replace the scenario's token
distributions when present; ``query_key`` replaces the popularity law.

A malformed trace -- a missing column, a timestamp that is negative or earlier
than the row before, text where a number belongs -- raises
:class:`TraceError` naming the file, the line (1 = header) and the column.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from sim.errors import ConfigError
from sim.files import regular_file_problem

FORMATS = ("auto", "azure", "burstgpt", "capsim")
#: format -> (time column, prompt column, output column, key column); None: absent.
LAYOUTS: dict[str, tuple[str, str | None, str | None, str | None]] = {
    "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens", None),
    "burstgpt": ("Timestamp", "Request tokens", "Response tokens", None),
    "capsim": ("arrival_s", "prompt_tokens", "output_tokens", "query_key"),
}


class TraceError(ConfigError):
    """A trace file that cannot be replayed (one line: file, line, column, what is wrong)."""


@dataclass(frozen=True, eq=False)
class Trace:
    """A loaded trace: arrival seconds from 0 (ascending) and optional per-request columns."""

    path: str
    format: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray | None
    output_tokens: np.ndarray | None
    query_key: np.ndarray | None

    def __len__(self) -> int:
        return len(self.arrival_s)


def _detect(header: list[str], name: str) -> str:
    for fmt, (tcol, *_rest) in LAYOUTS.items():
        if tcol in header:
            return fmt
    raise TraceError(
        f"{name}:1: no timestamp column: expected TIMESTAMP (Azure), Timestamp (BurstGPT) or arrival_s "
        f"(found {', '.join(header) or 'nothing'})"
    )


_FRACTION = re.compile(r"\.(\d+)")


def _parse_time(text: str, fmt: str) -> tuple[float, bool]:
    """The time in seconds, and whether it is a date (an Azure stamp: its epoch
    seconds may be anything) rather than a count of seconds (which must be >= 0)."""
    if fmt == "azure":
        t = text.strip()
        # .NET-style 7-digit fractions: keep microseconds (and a UTC offset after them).
        m = _FRACTION.search(t)
        if m:
            t = f"{t[: m.start()]}.{m.group(1)[:6]}{t[m.end() :]}"
        try:
            stamp = dt.datetime.fromisoformat(t)
        except ValueError:
            return float(text), False  # seconds are accepted too
        if stamp.tzinfo is None:  # a stamp without an offset is UTC (the Azure traces')
            stamp = stamp.replace(tzinfo=dt.timezone.utc)
        return stamp.timestamp(), True
    return float(text), False


def _number(text: str, name: str, line: int, col: str, integer: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TraceError(f"{name}:{line}: column {col!r}: {text!r} is not a number") from None
    if not np.isfinite(v) or v < 0:
        raise TraceError(f"{name}:{line}: column {col!r}: {text!r} must be a finite number >= 0")
    if integer and v != int(v):
        raise TraceError(f"{name}:{line}: column {col!r}: {text!r} must be a whole number")
    return v


#: Most rows a trace may hold: every row is a request of every replication, held as a
#: record row until its point is summarised (about 1 kB each, :mod:`sim.run.bounds`), so
#: 5 million rows is already 5 GB per replication.  Counted before any row is parsed.
MAX_TRACE_ROWS = 5_000_000


def count_rows(path: str | os.PathLike[str]) -> int:
    """Lines after the header (an upper bound on the requests), counted without parsing."""
    n = 0
    last = b"\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return max(0, n - 1 + (last != b"\n"))


def load_trace(path: str | os.PathLike[str], fmt: str = "auto", time_scale: float = 1.0) -> Trace:
    """Read and check a trace (cached by path, size and modification time)."""
    p = Path(path)
    problem = regular_file_problem(p)  # before opening: a FIFO would block, a folder crash
    if problem is not None:
        raise TraceError(f"workload.trace.path: {p} {problem}")
    try:
        st = p.stat()
        rows = count_rows(p)
        if rows > MAX_TRACE_ROWS:
            raise TraceError(
                f"workload.trace.path: {p} has {rows:,} rows, more than the {MAX_TRACE_ROWS:,} a run replays "
                "(each is a request held in memory); replay a slice of it"
            )
        return _load(str(p), st.st_size, st.st_mtime_ns, fmt, float(time_scale))
    except UnicodeDecodeError as e:
        raise TraceError(f"workload.trace.path: {p}: not UTF-8 text (byte {e.start}); is it a binary file?") from None
    except OSError as e:
        raise TraceError(f"workload.trace.path: {p}: cannot be read ({e.strerror or e})") from None


@lru_cache(maxsize=8)
def _load(path: str, _size: int, _mtime: int, fmt: str, time_scale: float) -> Trace:
    name = Path(path).name
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        fmt, cols = _columns(header, fmt, name)
        tcol, pcol, ocol, kcol = LAYOUTS[fmt]
        times: list[float] = []
        extra: dict[str, list[float]] = {c: [] for c in cols if c != tcol}
        for i, row in enumerate(reader, start=2):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) < len(header):
                missing = header[len(row)]
                raise TraceError(f"{name}:{i}: column {missing!r}: missing value ({len(row)} of {len(header)} fields)")
            times.append(_time(row[cols[tcol]].strip(), fmt, name, i, tcol, times[-1] if times else -np.inf))
            for c in extra:
                extra[c].append(_number(row[cols[c]].strip(), name, i, c, integer=True))
    if not times:
        raise TraceError(f"{name}:2: no requests after the header")
    arr = (np.asarray(times) - times[0]) * time_scale

    def col(c: str | None) -> np.ndarray | None:
        return np.asarray(extra[c], dtype=np.int64) if c is not None and c in extra else None

    return Trace(path, fmt, arr, col(pcol), col(ocol), col(kcol))


def _columns(header: list[str], fmt: str, name: str) -> tuple[str, dict[str, int]]:
    """The trace's format (detected from the header with ``auto``) and where its columns sit."""
    if not header:
        raise TraceError(f"{name}:1: empty file; need a header row and one row per request")
    dup = next((h for i, h in enumerate(header) if h in header[:i]), None)
    if dup is not None:
        raise TraceError(f"{name}:1: column {dup!r} appears more than once; give each column once")
    if fmt == "auto":
        fmt = _detect(header, name)
    tcol, pcol, ocol, kcol = LAYOUTS[fmt]
    needed = [tcol] + ([c for c in (pcol, ocol) if c is not None] if fmt in ("azure", "burstgpt") else [])
    for c in needed:
        if c not in header:
            raise TraceError(f"{name}:1: missing column {c!r} for format {fmt} (found {', '.join(header)})")
    return fmt, {c: header.index(c) for c in (tcol, pcol, ocol, kcol) if c is not None and c in header}


def _time(text: str, fmt: str, name: str, line: int, col: str, prev: float) -> float:
    """One row's arrival time: a timestamp, >= 0 unless a date, not before ``prev``."""
    try:
        t, is_date = _parse_time(text, fmt)
    except ValueError:
        raise TraceError(f"{name}:{line}: column {col!r}: {text!r} is not a timestamp") from None
    if not np.isfinite(t) or (not is_date and t < 0):
        raise TraceError(f"{name}:{line}: column {col!r}: {text!r} must be a finite time >= 0")
    if t < prev:
        raise TraceError(f"{name}:{line}: column {col!r}: {text!r} is earlier than the row before (unsorted)")
    return t
