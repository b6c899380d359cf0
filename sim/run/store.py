"""The point store and the files of a sweep folder (see :mod:`sim.run.sweep`).

Importing this module loads neither pandas nor scipy (the summaries and frames are
imported where they are used): a sweep forks its workers before the parent loads
them, and the parent loads them while the workers run the first replications.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sim.engine.pipeline import Replication
from sim.errors import CapsimError
from sim.files import atomic_write_bytes, atomic_write_text, regular_file_problem, to_json
from sim.physics.retrieval import default_calibration_path
from sim.run.folder import seal, sha256_file, unseal, verify
from sim.spec.schema import Scenario
from sim.version import __version__

if TYPE_CHECKING:
    import pandas as pd

    from sim.analysis.summary import PointSummary
    from sim.run.results import Result, SweepPoint, SweepResult


def point_id(scn: Scenario) -> str:
    """Hash of what determines a point's results, 20 hex digits: sha256 of the resolved
    scenario's canonical JSON, capsim's version and, when retrieval times come from a
    calibration file, that file's contents (a re-measured file makes stale points miss)."""

    doc: dict[str, Any] = {"scenario": scn.model_dump(mode="json"), "capsim": __version__}
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
    from sim.analysis.summary import PointSummary  # deferred: loaded while the workers run

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

    def _real_folder(self, pid: str) -> bool:
        """Is ``points/<pid>`` a folder of its own (not a file, nor a link to elsewhere)?"""
        d = self.folder(pid)
        return not d.is_symlink() and d.is_dir()

    def has(self, pid: str) -> bool:
        d = self.folder(pid)
        return self._real_folder(pid) and all((d / f).is_file() for f in (*POINT_FILES, "hashes.json"))

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
            from sim.analysis.summary import PointSummary  # deferred: only to resume

            return PointSummary.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            return None  # unreadable or not a point summary: compute it again

    def save(self, pid: str, scn: Scenario, summary: PointSummary, reps: Sequence[Replication]) -> None:
        from sim.run.results import rep_frame, timeseries_frame  # deferred: pandas, loaded while the workers run

        d = self.folder(pid)
        if d.is_symlink() or (d.exists() and not d.is_dir()):
            d.unlink()  # a file or a link where the point's folder goes: never written through
        fresh = not d.exists()
        try:
            atomic_write_text(d / "scenario.yaml", yaml.safe_dump(scn.model_dump(mode="json"), sort_keys=False))
            atomic_write_bytes(d / "records.parquet", parquet_bytes(rep_frame(reps)))
            atomic_write_bytes(d / "timeseries.parquet", parquet_bytes(timeseries_frame(reps)))
            hashes = d / "hashes.json"
            if hashes.exists():
                hashes.unlink()  # a re-save: the point is incomplete until its new hashes land
            atomic_write_text(d / "summary.json", to_json(summary))
            digests = {f: sha256_file(d / f) for f in POINT_FILES}
            atomic_write_text(hashes, json.dumps(digests, indent=2) + "\n")  # last: marks the point complete
        except BaseException:
            if fresh:  # no half-written point folder is left (disk full, Ctrl-C): a re-run computes it
                shutil.rmtree(d, ignore_errors=True)
            raise


# --------------------------------------------------------------------------- results


class SweepFiles:
    """The folder-level ``records.parquet`` and ``timeseries.parquet`` of a sweep, appended
    point by point, in point order, while the sweep runs (:func:`~sim.run.loop.run_sweep`
    adds each point once it and every point before it are saved), so that what is left
    when the last replication lands is the small summary files.  The rows go to hidden
    ``.<name>.parquet.<random>.partial`` files that replace the real ones only in
    :meth:`finish`; a run that stops leaves the folder's earlier files as they were.  Every point's
    frame is the one :func:`write_sweep` always wrote (read back from its point folder,
    or from memory), so the bytes do not depend on when or by which process it is added."""

    NAMES = ("records", "timeseries")

    def __init__(self, out: str | Path, params: Sequence[dict[str, Any]]):
        """``params``: every point's swept values (they fix the columns' types)."""
        self.out = Path(out)
        self.params = params
        self._dtypes: dict[str, str] | None = None
        self.added = 0  # points 0 .. added-1 are in the files
        self._writers: dict[str, Any] = {}
        self._tmp: dict[str, Path] = {}

    @classmethod
    def clear_stale(cls, out: str | Path) -> None:
        """Remove what a killed sweep left streaming in ``out`` (call while holding its lock)."""
        for name in cls.NAMES:
            for tmp in Path(out).glob(f".{name}.parquet.*.partial"):
                tmp.unlink(missing_ok=True)

    def add(self, i: int, point: SweepPoint) -> None:
        """Append point ``i`` (the next one: points are added in order)."""
        import pyarrow as pa  # deferred: pyarrow only to stream a sweep
        import pyarrow.parquet as pq  # deferred: pyarrow only to stream a sweep

        from sim.analysis.table import param_columns, with_params  # deferred: pandas, loaded while the workers run

        if i != self.added:
            raise ValueError(f"sweep point {i} added out of order (expected {self.added})")
        if self._dtypes is None:
            self._dtypes = param_columns(self.params)
        for name in self.NAMES:
            df = with_params(point._frame(name, strict=False), point.params, self._dtypes)
            if df.empty:  # e.g. a point saved before time series existed
                continue
            df.insert(0, "point", i)
            df.insert(1, "id", point.id)
            t = pa.Table.from_pandas(df, preserve_index=False)
            writer = self._writers.get(name)
            if writer is None:
                fd, tmp = tempfile.mkstemp(dir=self.out, prefix=f".{name}.parquet.", suffix=".partial")
                os.close(fd)
                self._tmp[name] = Path(tmp)
                writer = self._writers[name] = pq.ParquetWriter(tmp, t.schema)
            elif t.schema != writer.schema:
                t = t.cast(writer.schema)
            writer.write_table(t)
        self.added += 1

    def finish(self) -> list[Path]:
        """Close the files and put them in place; the paths written."""
        written = []
        for name in self.NAMES:
            final = self.out / f"{name}.parquet"
            writer = self._writers.pop(name, None)
            if writer is not None:
                writer.close()
                tmp = self._tmp.pop(name)
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
                written.append(final)
            elif final.exists():
                final.unlink()  # stale from an earlier write of this folder
        return written

    def discard(self) -> None:
        """Drop what was streamed (the sweep stopped); safe after :meth:`finish`."""
        for name in self.NAMES:
            writer = self._writers.pop(name, None)
            if writer is not None:
                writer.close()
            tmp = self._tmp.pop(name, None)
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def write_sweep(result: SweepResult, out: str | Path, files: SweepFiles | None = None) -> list[Path]:
    """The folder-level files: summary.json/.csv/.parquet, records.parquet, timeseries.parquet.

    ``files``: the records and time series already streamed for the first points (see
    :class:`SweepFiles`); the rest are added here."""
    out = Path(out)
    files = files if files is not None else SweepFiles(out, [p.params for p in result.points])
    try:
        unseal(out)
        written = []
        atomic_write_text(out / "summary.json", to_json(result.summary))
        table = result.table()
        atomic_write_text(out / "summary.csv", table.to_csv(index=False))
        atomic_write_bytes(out / "summary.parquet", parquet_bytes(table))
        written += [out / "summary.json", out / "summary.csv", out / "summary.parquet"]
        # Stream point by point so a big sweep never sits in memory at once.
        for i in range(files.added, len(result.points)):
            files.add(i, result.points[i])
        written += files.finish()
    finally:
        files.discard()
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
    points = summary.get("points", [])
    if not isinstance(points, list):
        raise CapsimError(f"{f}: points is a {type(points).__name__}; a capsim summary holds a list of point summaries")
    from sim.analysis.summary import PointSummary  # deferred: scipy and pandas

    for i, doc in enumerate(points):  # what the plots and the table read, checked once
        try:
            PointSummary.from_dict(doc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            what = f"lacks {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise CapsimError(f"{f}: point {i} is not a capsim point summary ({what})") from None
    from sim.analysis.table import summary_table  # deferred: pandas

    return {
        "summary": summary,
        "table": summary_table(summary.get("points", [])),
        "records": out / "records.parquet",
        "timeseries": out / "timeseries.parquet",
    }


# --------------------------------------------------------------------------- capacity search


def write_run(result: Result, out_dir: str | Path) -> list[Path]:
    """Write the resolved scenario(s), the summary JSON and the Parquet records (when kept)."""
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
    if all(r.has_records for p in result.points for r in p.replications):
        buf = io.BytesIO()
        result.records.to_parquet(buf, index=False)
        atomic_write_bytes(out / "records.parquet", buf.getvalue())
        written.append(out / "records.parquet")
    else:  # run.records: false
        (out / "records.parquet").unlink(missing_ok=True)
    seal(out, "run", written, [point_id(p.scenario) for p in result.points])
    return written
