"""The point store and the files of a sweep folder (see :mod:`sim.run.sweep`)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import sim
from sim.analysis.summary import PointSummary
from sim.analysis.table import summary_table, with_params
from sim.engine.pipeline import Replication
from sim.errors import CapsimError
from sim.files import atomic_write_bytes, atomic_write_text, regular_file_problem, to_json
from sim.physics.retrieval import default_calibration_path
from sim.run.folder import seal, sha256_file, unseal, verify
from sim.run.results import Result, SweepResult, rep_frame, timeseries_frame
from sim.spec.schema import Scenario


def point_id(scn: Scenario) -> str:
    """Hash of what determines a point's results, 20 hex digits: sha256 of the resolved
    scenario's canonical JSON, capsim's version and, when retrieval times come from a
    calibration file, that file's contents (a re-measured file makes stale points miss)."""

    doc: dict[str, Any] = {"scenario": scn.model_dump(mode="json"), "capsim": sim.__version__}
    r = scn.retrieval
    if r.enabled and r.service_ms is None:
        path = Path(r.calibration) if r.calibration else default_calibration_path()
        try:
            if regular_file_problem(path) is not None:  # a FIFO would block here
                raise OSError(path)
            doc["calibration_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            doc["calibration_sha256"] = None  # the run itself reports the missing file
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def normalize(summary: PointSummary) -> PointSummary:
    """The summary as it reads back from JSON, so fresh and reused points compare equal."""

    return PointSummary.from_dict(json.loads(to_json(summary)))


POINT_FILES = ("scenario.yaml", "records.parquet", "timeseries.parquet", "summary.json")


class PointStore:
    """``out/points/<id>/``: one folder per completed point; ``hashes.json`` (the sha256 of
    each of its files) written last marks it complete.  A point whose files do not match
    their hashes (a truncated Parquet file, an edited or emptied summary) is computed again."""

    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.points = self.root / "points"

    def folder(self, pid: str) -> Path:
        return self.points / pid

    def has(self, pid: str) -> bool:
        d = self.folder(pid)
        return all((d / f).is_file() for f in (*POINT_FILES, "hashes.json"))

    def intact(self, pid: str) -> bool:
        """Every file of the point matches the sha256 recorded when it was saved."""
        d = self.folder(pid)
        try:
            hashes = json.loads((d / "hashes.json").read_text())
            return isinstance(hashes, dict) and all(
                isinstance(hashes.get(f), str) and sha256_file(d / f) == hashes[f] for f in POINT_FILES
            )
        except (OSError, ValueError):
            return False

    def load_summary(self, pid: str) -> PointSummary | None:
        if not self.has(pid) or not self.intact(pid):
            return None
        try:
            doc = json.loads((self.folder(pid) / "summary.json").read_text())
            if not isinstance(doc, dict) or not doc:
                return None
            return PointSummary.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return None  # unreadable or not a point summary: compute it again

    def save(self, pid: str, scn: Scenario, summary: PointSummary, reps: Sequence[Replication]) -> None:

        d = self.folder(pid)
        atomic_write_text(d / "scenario.yaml", yaml.safe_dump(scn.model_dump(mode="json"), sort_keys=False))
        atomic_write_bytes(d / "records.parquet", parquet_bytes(rep_frame(reps)))
        atomic_write_bytes(d / "timeseries.parquet", parquet_bytes(timeseries_frame(reps)))
        hashes = d / "hashes.json"
        if hashes.exists():
            hashes.unlink()  # a re-save: the point is incomplete until its new hashes land
        atomic_write_text(d / "summary.json", to_json(summary))
        digests = {f: sha256_file(d / f) for f in POINT_FILES}
        atomic_write_text(hashes, json.dumps(digests, indent=2) + "\n")  # last: marks the point complete


# --------------------------------------------------------------------------- results


def write_sweep(result: SweepResult, out: str | Path) -> list[Path]:
    """The folder-level files: summary.json/.csv/.parquet, records.parquet, timeseries.parquet."""
    import pyarrow as pa  # deferred: pyarrow only to stream a sweep
    import pyarrow.parquet as pq  # deferred: pyarrow only to stream a sweep

    out = Path(out)
    unseal(out)
    written = []
    atomic_write_text(out / "summary.json", to_json(result.summary))
    table = result.table()
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    atomic_write_bytes(out / "summary.parquet", parquet_bytes(table))
    written += [out / "summary.json", out / "summary.csv", out / "summary.parquet"]
    dtypes = result._dtypes()
    for name in ("records", "timeseries"):
        # Stream point by point so a big sweep never sits in memory at once.
        fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{name}.parquet.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        writer = None
        try:
            for i, p in enumerate(result.points):
                df = with_params(p._frame(name), p.params, dtypes)
                if df.empty:  # e.g. a point saved before time series existed
                    continue
                df.insert(0, "point", i)
                df.insert(1, "id", p.id)
                t = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, t.schema)
                elif t.schema != writer.schema:
                    t = t.cast(writer.schema)
                writer.write_table(t)
            if writer is not None:
                writer.close()
                writer = None
                os.chmod(tmp, 0o644)
                os.replace(tmp, out / f"{name}.parquet")
                written.append(out / f"{name}.parquet")
            elif (out / f"{name}.parquet").exists():
                (out / f"{name}.parquet").unlink()  # stale from an earlier write of this folder
        finally:
            if writer is not None:
                writer.close()
            if tmp.exists():
                tmp.unlink()
    seal(out, "sweep", written, [p.id for p in result.points])
    return written


def load_sweep(out: str | Path) -> dict:
    """Read a sweep (or `capsim run --out`) folder: ``{"summary", "table", "records_path", ...}``."""
    out = Path(out)
    manifest = verify(out)
    f = out / "summary.json"
    if "summary.json" not in manifest["files"]:
        raise CapsimError(f"{out}: its {manifest.get('kind')} wrote no summary.json")
    try:
        summary = json.loads(f.read_text())
    except ValueError as e:
        raise CapsimError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(summary, dict):
        raise CapsimError(f"{f}: expected a JSON object (a capsim summary), got {type(summary).__name__}")
    return {
        "summary": summary,
        "table": summary_table(summary.get("points", [])),
        "records": out / "records.parquet",
        "timeseries": out / "timeseries.parquet",
    }


# --------------------------------------------------------------------------- capacity search


def write_run(result: Result, out_dir: str | Path) -> list[Path]:
    """Write the resolved scenario(s), the summary JSON and the Parquet records."""
    out = Path(out_dir)
    unseal(out)
    written = []
    scenarios = [p.scenario.model_dump(mode="json") for p in result.points]
    resolved = (
        scenarios[0]
        if len(scenarios) == 1
        else {"points": [{"params": p.params, "scenario": s} for p, s in zip(result.points, scenarios)]}
    )
    atomic_write_text(out / "scenario.resolved.yaml", yaml.safe_dump(resolved, sort_keys=False))
    written.append(out / "scenario.resolved.yaml")
    atomic_write_text(out / "summary.json", to_json(result.summary))
    written.append(out / "summary.json")
    df = result.records
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(out / "records.parquet", buf.getvalue())
    written.append(out / "records.parquet")
    seal(out, "run", written, [point_id(p.scenario) for p in result.points])
    return written
