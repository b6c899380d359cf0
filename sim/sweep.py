"""Sweeps that survive crashes, and capacity search.

**A sweep** is every combination of a grid (the scenario's ``sweep:``
section plus ``--grid`` keys) times its replications.  Each point is keyed by
a hash of its resolved scenario (:func:`point_id`: canonical JSON of
``scenario.model_dump(mode="json")``, so seed and replications are part of
it) and, the moment its last replication lands, written under ``out``::

    out/points/<id>/scenario.yaml        the resolved scenario
    out/points/<id>/records.parquet      one row per request, every replication
    out/points/<id>/timeseries.parquet   sampled queues, batch, KV use
    out/points/<id>/summary.json         written last: the point is complete

Running the same command again (after a crash, Ctrl-C or a killed worker)
reuses every complete point and computes only the missing ones.  At the end
the folder gets files any pandas user can read::

    out/summary.json      the document `capsim run --json` prints
    out/summary.csv       one row per point: swept keys, e2e p50/p95/p99 with
    out/summary.parquet   interval, throughput, utilisation, cost, verdicts
    out/records.parquet   every request of every point, swept keys as columns
    out/timeseries.parquet

**Capacity** (:func:`capacity`) finds, by bracketing and bisection on the
statistical SLA verdict, the largest value of a load key (``workload.users``)
or the smallest value of a resource key (``llm.replicas``) at which every SLA
passes.  An inconclusive verdict counts as not passing (and is reported).
Every value tried uses the same seed (common random numbers), which keeps
the verdict monotone in the key far more often than independent draws would.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel

from .config import Scenario, _model_of
from .errors import CapsimError, ConfigError
from .pipeline import Replication
from .runner import LocalExecutor, PointResult, Result, Task, _needs_more
from .scenario import Point, apply_overrides, expand, load_raw, parse_value
from .summary import summarize_point



class SweepInterrupted(Exception):
    """A sweep stopped before its end; what finished is saved.  ``exit_code`` for the CLI."""

    def __init__(self, message: str, exit_code: int = 4):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------- keys and grids


def point_id(scn: Scenario) -> str:
    """Hash of what determines a point's results, 20 hex digits: sha256 of the resolved
    scenario's canonical JSON, capsim's version and, when retrieval times come from a
    calibration file, that file's contents (a re-measured file makes stale points miss)."""
    import sim

    doc = {"scenario": scn.model_dump(mode="json"), "capsim": sim.__version__}
    r = scn.retrieval
    if r.enabled and r.service_ms is None:
        from .calibrate.profile import default_calibration_path

        path = Path(r.calibration) if r.calibration else default_calibration_path()
        try:
            doc["calibration_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            doc["calibration_sha256"] = None  # the run itself reports the missing file
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def check_key(key: str, flag: str = "--grid") -> None:
    """Raise :class:`ConfigError` unless ``key`` names a field of the scenario schema.

    Keys under a free-form mapping (``sla.e2e_ms.p95``) are accepted from the
    mapping down; the values are checked when the points are validated.
    """
    import difflib

    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{flag} {key!r}: expected a dotted key such as workload.users")
    models: list[type[BaseModel]] = [Scenario]
    for i, part in enumerate(parts):
        if not models:  # below a mapping / list: free-form
            return
        fields: dict[str, Any] = {}
        for m in models:
            for name, f in m.model_fields.items():
                fields.setdefault(name, []).append(f)
        if part not in fields:
            where = ".".join(parts[:i]) or "the scenario"
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{flag} {key}: {where} has no key {part!r} ({hint}allowed: {', '.join(fields)})")
        nxt: list[type[BaseModel]] = []
        for f in fields[part]:
            nxt += [m for m in _model_of(f.annotation) if m not in nxt]
        models = nxt


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["workload.users=50,100", "llm.gpu=h100-sxm,h200"]`` -> ``{key: [values]}``.

    Each value is read as a YAML scalar (``100`` an int, ``0.5`` a float,
    ``h200`` a string); ``KEY=[...]`` is read as one YAML list.
    """
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. workload.users=50,100,200")
        key, text = (s.strip() for s in item.split("=", 1))
        check_key(key)
        if text.startswith("["):
            values = parse_value(text)
            if not isinstance(values, list):
                raise ConfigError(f"--grid {key}: {text!r} is not a YAML list")
        else:
            values = [parse_value(v.strip()) for v in text.split(",")]
        if not values or any(v is None or v == "" for v in values):
            raise ConfigError(f"--grid {key}: empty value in {text!r}; expected V1,V2,...")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        grid[key] = values
    return grid


# --------------------------------------------------------------------------- the point store


def _rep_frame(reps: Sequence[Replication]) -> pd.DataFrame:
    frames = [pd.DataFrame(r.records) for r in reps]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _timeseries_frame(reps: Sequence[Replication]) -> pd.DataFrame:
    """Long format: one row per (replication, sample, LLM replica)."""
    frames = []
    for r in reps:
        ts = r.timeseries
        if not ts or not len(ts.get("t_s", ())):
            continue
        t = np.asarray(ts["t_s"], dtype=float)
        n = len(t)
        lw = np.asarray(ts["llm_waiting"], dtype=float).reshape(n, -1)
        k = max(1, lw.shape[1])
        per = {name: (np.asarray(ts[name], dtype=float).reshape(n, -1) if lw.shape[1] else np.full((n, 1), np.nan))
               for name in ("llm_waiting", "llm_running", "kv_tokens")}
        frames.append(pd.DataFrame({
            "replication": np.full(n * k, r.replication, dtype=np.int64),
            "t_s": np.repeat(t, k),
            "replica": np.tile(np.arange(k) if lw.shape[1] else np.array([-1]), n).astype(np.int64),
            "retrieval_queue": np.repeat(np.asarray(ts["retrieval_queue"], dtype=float), k),
            "retrieval_busy": np.repeat(np.asarray(ts["retrieval_busy"], dtype=float), k),
            **{name: v.reshape(-1) for name, v in per.items()},
            "kv_capacity_tokens": np.full(n * k, float(ts.get("kv_capacity_tokens", 0))),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def _normalize(summary: dict) -> dict:
    """The summary as it reads back from JSON, so fresh and reused points compare equal."""
    from .report import to_json

    return json.loads(to_json(summary))


class PointStore:
    """``out/points/<id>/``: one folder per completed point, ``summary.json`` written last."""

    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.points = self.root / "points"

    def folder(self, pid: str) -> Path:
        return self.points / pid

    def has(self, pid: str) -> bool:
        d = self.folder(pid)
        return all((d / f).is_file() for f in ("summary.json", "records.parquet", "scenario.yaml"))

    def load_summary(self, pid: str) -> dict | None:
        if not self.has(pid):
            return None
        try:
            return json.loads((self.folder(pid) / "summary.json").read_text())
        except (OSError, ValueError):
            return None  # unreadable: compute it again

    def save(self, pid: str, scn: Scenario, summary: dict, reps: Sequence[Replication]) -> None:
        from .report import atomic_write_bytes, atomic_write_text, to_json

        d = self.folder(pid)
        atomic_write_text(d / "scenario.yaml", yaml.safe_dump(scn.model_dump(mode="json"), sort_keys=False))
        atomic_write_bytes(d / "records.parquet", _parquet_bytes(_rep_frame(reps)))
        atomic_write_bytes(d / "timeseries.parquet", _parquet_bytes(_timeseries_frame(reps)))
        atomic_write_text(d / "summary.json", to_json(summary))  # last: marks the point complete


# --------------------------------------------------------------------------- results


def _param_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)


def _param_columns(params: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """A dtype per swept key, the same for every point (so Parquet schemas agree)."""
    keys: list[str] = []
    for p in params:
        keys += [k for k in p if k not in keys]
    out = {}
    for k in keys:
        vals = [_param_value(p.get(k)) for p in params]
        if all(isinstance(v, bool) for v in vals):
            out[k] = "bool"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            out[k] = "int64"
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = "float64"
        else:
            out[k] = "str"
    return out


def _with_params(df: pd.DataFrame, params: Mapping[str, Any], dtypes: Mapping[str, str]) -> pd.DataFrame:
    df = df.copy()
    for k, dt in dtypes.items():
        v = _param_value(params.get(k))
        df[k] = pd.Series([str(v) if dt == "str" else v] * len(df), dtype=object if dt == "str" else dt)
    return df


@dataclass
class SweepPoint(PointResult):
    """A point of a sweep: computed now (replications in memory) or read back from ``out``."""

    id: str = ""
    computed: bool = False
    folder: Path | None = None

    def _frame(self, name: str) -> pd.DataFrame:
        if self.replications:
            return _rep_frame(self.replications) if name == "records" else _timeseries_frame(self.replications)
        if self.folder is not None and (self.folder / f"{name}.parquet").is_file():
            return pd.read_parquet(self.folder / f"{name}.parquet")
        return pd.DataFrame()

    @property
    def records(self) -> pd.DataFrame:  # type: ignore[override]
        return _with_params(self._frame("records"), self.params, _param_columns([self.params]))

    @property
    def timeseries(self) -> pd.DataFrame:
        return _with_params(self._frame("timeseries"), self.params, _param_columns([self.params]))


@dataclass
class SweepResult(Result):
    """:class:`sim.Result` of a sweep, plus where it was saved and how much was computed."""

    out: Path | None = None

    @property
    def computed(self) -> int:
        """Points computed by this call (the rest were read back from ``out``)."""
        return len({p.id for p in self.points if getattr(p, "computed", False)})

    @property
    def reused(self) -> int:
        return len({p.id for p in self.points}) - self.computed

    def _dtypes(self) -> dict[str, str]:
        return _param_columns([p.params for p in self.points])

    def _concat(self, kind: str) -> pd.DataFrame:
        """Every point's ``kind`` frame, with the point index and swept keys as columns."""
        dt = self._dtypes()
        frames = []
        for i, p in enumerate(self.points):
            df = _with_params(p._frame(kind), p.params, dt)
            df.insert(0, "point", i)
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def records(self) -> pd.DataFrame:  # type: ignore[override]
        return self._concat("records")

    @property
    def timeseries(self) -> pd.DataFrame:
        return self._concat("timeseries")

    def table(self) -> pd.DataFrame:
        """One row per point: :func:`summary_table` of this sweep."""
        return summary_table(self.summary["points"], [p.id for p in self.points])


def overall_verdict(summary: dict) -> str:
    """``pass`` / ``fail`` / ``inconclusive`` over every SLA of a point (``none`` without SLAs)."""
    v = [s["verdict"] for s in summary.get("sla", [])]
    if not v:
        return "none"
    if "fail" in v:
        return "fail"
    return "inconclusive" if "inconclusive" in v else "pass"


def summary_table(points: Sequence[dict], ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Flatten point summaries (``summary["points"]``) into one row per point."""
    dtypes = _param_columns([p.get("params", {}) for p in points])
    rows = []
    for i, s in enumerate(points):
        row: dict[str, Any] = {"point": i}
        if ids is not None:
            row["id"] = ids[i]
        for k in dtypes:
            row[k] = _param_value(s.get("params", {}).get(k))
        e2e = s.get("metrics", {}).get("e2e_ms") or {}
        row["e2e_mean_ms"] = e2e.get("mean")
        for st in ("p50", "p95", "p99"):
            row[f"e2e_{st}_ms"] = e2e.get(st)
            lo, hi = (e2e.get("ci", {}).get(st) or [None, None])
            row[f"e2e_{st}_ci_low_ms"], row[f"e2e_{st}_ci_high_ms"] = lo, hi
        ttft = s.get("metrics", {}).get("ttft_ms") or {}
        row["ttft_p95_ms"] = ttft.get("p95")
        row["throughput_per_s"] = s.get("throughput_per_s")
        row["cache_hit_rate"] = s.get("cache_hit_rate")
        u = s.get("utilization", {})
        row["retrieval_utilization"] = u.get("retrieval")
        row["gpu_utilization"] = u.get("gpu")
        cost = s.get("cost") or {}
        row["cost_per_hour"] = cost.get("per_hour")
        row["cost_per_1000_answers"] = cost.get("per_1000_answers")
        row["cost_per_million_output_tokens"] = cost.get("per_million_output_tokens")
        row["replications"] = s.get("replications")
        row["stable"] = s.get("stability", {}).get("stable")
        row["verdict"] = overall_verdict(s)
        for v in s.get("sla", []):
            row[f"sla_{v['metric']}_{v['stat']}"] = v["verdict"]
        rows.append(row)
    df = pd.DataFrame(rows)
    for k, dt in dtypes.items():
        if dt != "str" and k in df:
            df[k] = df[k].astype(dt)
    for col in df.columns:  # a figure missing at every point (no interval) is still a float column
        if col.endswith(("_ms", "_per_s")) and df[col].dtype == object:
            df[col] = pd.to_numeric(df[col])
    return df


def rank_by_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Points that pass every SLA first, cheapest answer first; then the rest, cheapest first."""
    if "cost_per_1000_answers" not in table or table["cost_per_1000_answers"].isna().all():
        raise CapsimError("--rank cost: no cost figures; add a cost: section "
                          "(e.g. --set cost.gpu_per_hour=2.5 --set cost.cpu_worker_per_hour=0.05)")
    order = table.assign(_fails=table["verdict"] != "pass")
    return order.sort_values(["_fails", "cost_per_1000_answers"], kind="stable",
                             na_position="last").drop(columns="_fails")


# --------------------------------------------------------------------------- running


def _executor_jobs(executor: Any) -> int:
    return int(getattr(executor, "jobs", 1) or 1)


def iter_completed(executor: Any, tasks: Sequence[Task]) -> Iterator[tuple[int, Replication]]:
    """``(task index, replication)`` as tasks finish, whatever the executor.

    Uses ``executor.as_completed`` where it exists (:class:`~sim.runner.LocalExecutor`,
    :class:`~sim.dask_executor.DaskExecutor`); any other object with ``.map`` gets one call
    for every task (results arrive at the end).
    """
    if hasattr(executor, "as_completed"):
        yield from executor.as_completed(tasks)
        return
    yield from enumerate(executor.map(list(tasks)))


def run_sweep(points: Sequence[Point], out: str | Path | None = None, *, executor: Any = None,
              jobs: int | None = None, progress: Callable[[int, int], None] | None = None,
              name: str | None = None) -> SweepResult:
    """Run every point not already saved under ``out``; save each as it completes.

    Replications follow ``run.replications`` and ``run.target_precision``;
    ``capsim run`` and :func:`sim.simulate` run through here too, so a point's
    summary is the same from either, or from a re-run.
    """
    if not points:
        raise ConfigError("the sweep has no points")
    ex = executor or LocalExecutor(jobs)
    store = PointStore(out) if out is not None else None
    ids = [point_id(p.scenario) for p in points]
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        first.setdefault(pid, i)
    summaries: dict[str, dict] = {}
    computed: dict[str, list[Replication]] = {}
    if store is not None:
        for pid, i in first.items():
            s = store.load_summary(pid)
            if s is not None:
                summaries[pid] = s
    todo = [i for pid, i in first.items() if pid not in summaries]
    counts = {i: points[i].scenario.run.replications for i in todo}
    reps: dict[int, list[Replication]] = {i: [] for i in todo}
    total = sum(counts.values())
    done = 0

    def finish(i: int, summ: dict) -> None:
        pid = ids[i]
        summaries[pid] = summ
        computed[pid] = reps[i]
        if store is not None:
            store.save(pid, points[i].scenario, summ, reps[i])

    pending = todo
    try:
        while pending:
            tasks: list[Task] = []
            owners: list[int] = []
            for i in pending:
                for r in range(len(reps[i]), counts[i]):
                    tasks.append((points[i].scenario, r))
                    owners.append(i)
            need = {i: counts[i] - len(reps[i]) for i in pending}
            nxt: list[int] = []
            for j, rep in iter_completed(ex, tasks):
                i = owners[j]
                reps[i].append(rep)
                done += 1
                if progress:
                    progress(done, total)
                need[i] -= 1
                if need[i]:
                    continue
                reps[i].sort(key=lambda r: r.replication)
                p = points[i]
                summ = _normalize(summarize_point(p.scenario, reps[i], p.params))
                cap = p.scenario.run.max_replications
                if _needs_more(summ, p.scenario) and counts[i] < cap:
                    counts[i] = min(cap, max(counts[i] + 2, math.ceil(counts[i] * 1.5)))
                    total += counts[i] - len(reps[i])
                    nxt.append(i)
                else:
                    finish(i, summ)
            pending = nxt
    except KeyboardInterrupt:
        raise SweepInterrupted(_stopped_message("interrupted", len(summaries), len(first), out), 130) from None
    except cf.process.BrokenProcessPool:
        raise SweepInterrupted(_stopped_message("a worker process died", len(summaries), len(first), out)) from None

    result_points: list[PointResult] = []
    for i, p in enumerate(points):
        pid = ids[i]
        s = dict(summaries[pid])
        s["params"] = dict(p.params)  # the same scenario may be reached under other swept keys
        fresh = pid in computed and first[pid] == i
        keep = computed.get(pid, []) if store is None else []
        result_points.append(SweepPoint(dict(p.params), p.scenario, keep, s, id=pid, computed=fresh,
                                        folder=store.folder(pid) if store is not None else None))
    res = SweepResult(name or points[0].scenario.name, result_points, out=Path(out) if out is not None else None)
    if store is not None:
        write_sweep(res, out)
    return res


def _stopped_message(why: str, have: int, total: int, out: Any) -> str:
    if out is None:
        return f"{why}: {have} of {total} points finished (give --out DIR to keep them across runs)"
    return f"{why}: {have} of {total} points are saved in {out}; run the same command again to compute the rest"


def sweep(source: str | Path | Mapping | Scenario, overrides: Mapping[str, Any] | None = None,
          grid: Mapping[str, list] | None = None, *, out: str | Path | None = None,
          replications: int | None = None, seed: int | None = None, jobs: int | None = None,
          executor: Any = None, progress: Callable[[int, int], None] | None = None) -> SweepResult:
    """Expand ``source``'s ``sweep:`` plus ``grid`` and run it (see :func:`run_sweep`).

    ``sim.sweep.sweep("s.yaml", grid={"workload.users": [50, 100]}, out="runs/a")``
    """
    ov = dict(overrides or {})
    if seed is not None:
        ov["run.seed"] = seed
    if replications is not None:
        ov["run.replications"] = replications
    for k in (grid or {}):
        check_key(k)
    points = expand(source, ov, dict(grid) if grid else None)
    return run_sweep(points, out, executor=executor, jobs=jobs, progress=progress)


def write_sweep(result: SweepResult, out: str | Path) -> list[Path]:
    """The folder-level files: summary.json/.csv/.parquet, records.parquet, timeseries.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .report import atomic_write_bytes, atomic_write_text, to_json

    out = Path(out)
    written = []
    atomic_write_text(out / "summary.json", to_json(result.summary))
    table = result.table()
    atomic_write_text(out / "summary.csv", table.to_csv(index=False))
    atomic_write_bytes(out / "summary.parquet", _parquet_bytes(table))
    written += [out / "summary.json", out / "summary.csv", out / "summary.parquet"]
    dtypes = result._dtypes()
    for name in ("records", "timeseries"):
        # Stream point by point so a big sweep never sits in memory at once.
        tmp = out / f".{name}.parquet.tmp"
        writer = None
        try:
            for i, p in enumerate(result.points):
                df = _with_params(p._frame(name), p.params, dtypes)
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
        finally:
            if writer is not None:
                writer.close()
        if writer is not None:
            os.replace(tmp, out / f"{name}.parquet")
            written.append(out / f"{name}.parquet")
    return written


def load_sweep(out: str | Path) -> dict:
    """Read a sweep (or `capsim run --out`) folder: ``{"summary", "table", "records_path", ...}``."""
    out = Path(out)
    f = out / "summary.json"
    if not f.is_file():
        raise CapsimError(f"{out}: no summary.json here (expected a folder written by capsim sweep --out "
                          f"or capsim run --out)")
    try:
        summary = json.loads(f.read_text())
    except ValueError as e:
        raise CapsimError(f"{f}: not valid JSON ({e})") from None
    return {"summary": summary, "table": summary_table(summary.get("points", [])),
            "records": out / "records.parquet", "timeseries": out / "timeseries.parquet"}


# --------------------------------------------------------------------------- capacity search

# Direction by the key's meaning.  "max": more of it is more load, so capacity is the LARGEST
# value that meets the SLA.  "min": more of it is more resource (or less load), so capacity is
# the SMALLEST value that meets the SLA.  Matched on the full dotted key, then on its last part.
MIN_KEYS = {
    "llm.replicas", "llm.tensor_parallel", "llm.max_batch", "llm.gpu_memory_utilization",
    "llm.bw_efficiency", "llm.mfu", "retrieval.workers", "retrieval.cpu_cores", "cache.capacity",
    "workload.think_s.mean", "workload.think_s.value", "workload.queries.hot_fraction",
    "llm.gpu.hbm_bandwidth_gbps", "llm.gpu.memory_gb", "llm.gpu.peak_tflops", "llm.gpu.interconnect_gbps",
}
MAX_KEYS = {"workload.users", "workload.rate_per_s"}
_MIN_LAST = {"replicas", "workers", "cpu_cores", "capacity", "max_batch", "tensor_parallel"}


def default_direction(key: str) -> tuple[Literal["max", "min"], str]:
    """The search direction for ``key`` and why."""
    if key in MAX_KEYS:
        return "max", "more of it is more load"
    if key in MIN_KEYS or key.split(".")[-1] in _MIN_LAST:
        return "min", "more of it is more resource"
    return "max", "taken as load (the largest value that meets the SLA); use --direction min for a resource"


def _numeric_field(scn: Scenario, key: str) -> tuple[type, float, float, Any]:
    """(int or float, lowest allowed, highest allowed, current value) of a dotted key."""
    import annotated_types as at

    check_key(key, "--vary")
    parts = key.split(".")
    obj: Any = scn
    for i, part in enumerate(parts[:-1]):
        obj = getattr(obj, part, None)
        if not isinstance(obj, BaseModel):
            raise ConfigError(f"--vary {key}: {'.'.join(parts[: i + 1])} is not a section with numeric keys "
                              f"in this scenario")
    fld = type(obj).model_fields.get(parts[-1])
    if fld is None:
        raise ConfigError(f"--vary {key}: not a key of {'.'.join(parts[:-1])} in this scenario")
    current = getattr(obj, parts[-1])
    kinds: list[type] = []
    lo, hi = -math.inf, math.inf
    gt = False

    def walk(ann: Any, meta: list) -> None:
        nonlocal lo, hi, gt
        import typing

        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            args = typing.get_args(ann)
            walk(args[0], meta + list(args[1:]))
            return
        if origin is not None and origin is not typing.Literal:
            for a in typing.get_args(ann):
                walk(a, meta)
            return
        if ann in (int, float):
            kinds.append(ann)
            for m in meta + list(fld.metadata):
                for c in getattr(m, "metadata", [m]):
                    if isinstance(c, at.Ge):
                        lo = max(lo, float(c.ge))
                    elif isinstance(c, at.Gt):
                        lo, gt = max(lo, float(c.gt)), True
                    elif isinstance(c, at.Le):
                        hi = min(hi, float(c.le))
                    elif isinstance(c, at.Lt):
                        hi = min(hi, float(c.lt))

    walk(fld.annotation, [])
    if not kinds:
        shown = f"a {type(current).__name__} section" if isinstance(current, BaseModel) else repr(current)
        raise ConfigError(f"--vary {key}: not a numeric key (it holds {shown}); vary an integer or "
                          f"float key such as workload.users or llm.replicas")
    kind = int if kinds == [int] or (int in kinds and float not in kinds) else float
    if kind is int:
        lo = math.floor(lo) + 1 if gt else math.ceil(lo)
    elif gt:
        lo = lo + max(abs(lo) * 1e-9, 1e-12)
    if math.isinf(lo):
        lo = 0 if kind is int else 0.0
    return kind, lo, hi, current


@dataclass
class Tried:
    value: float
    summary: dict

    @property
    def verdict(self) -> str:
        return overall_verdict(self.summary)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def to_dict(self) -> dict:
        e2e = self.summary.get("metrics", {}).get("e2e_ms") or {}
        return {
            "value": self.value,
            "verdict": self.verdict,
            "verdicts": [{k: v[k] for k in ("metric", "stat", "threshold", "value", "ci", "verdict")}
                         for v in self.summary.get("sla", [])],
            "p95_e2e_ms": e2e.get("p95"),
            "ci": (e2e.get("ci") or {}).get("p95", [None, None]),
            "throughput_per_s": self.summary.get("throughput_per_s"),
            "stable": self.summary.get("stability", {}).get("stable"),
            "cost": self.summary.get("cost"),
        }


@dataclass
class CapacityResult:
    key: str
    direction: str
    capacity: float | None
    tried: list[Tried] = field(default_factory=list)
    note: str = ""
    best: Tried | None = None  # the most favourable value tried, when none passes
    reason: str = ""  # why this direction

    @property
    def exit_code(self) -> int:
        return 0 if self.capacity is not None else 1

    def to_dict(self) -> dict:
        return {"key": self.key, "direction": self.direction, "capacity": self.capacity,
                "tried": [t.to_dict() for t in self.tried], "note": self.note,
                "best": self.best.to_dict() if self.best is not None else None}


def capacity(source: str | Path | Mapping | Scenario, key: str, overrides: Mapping[str, Any] | None = None, *,
             low: float | None = None, high: float | None = None, direction: str | None = None,
             step: float | None = None, replications: int | None = None, seed: int | None = None,
             jobs: int | None = None, executor: Any = None, out: str | Path | None = None,
             max_steps: int = 12, on_try: Callable[[Tried], None] | None = None) -> CapacityResult:
    """The largest (``direction="max"``) or smallest (``"min"``) value of ``key`` at
    which every SLA passes, found by bracketing then bisection.

    Without ``low``/``high`` the search starts at the scenario's value and
    doubles or halves until the verdict flips (at most ``max_steps`` times),
    then bisects until the bracket is ``step`` wide (default 1 % of the value,
    and at least 1 for integer keys).  With both bounds it first tries the favourable
    end (no value passes if it fails: ``capacity`` is None and ``best`` holds
    it) and the unfavourable end (the whole range passes: ``capacity`` is that
    end, with a note).  Pass means every SLA verdict is ``pass``; an
    inconclusive verdict counts as not passing.
    """
    ov = dict(overrides or {})
    if seed is not None:
        ov["run.seed"] = seed
    if replications is not None:
        ov["run.replications"] = replications
    raw = apply_overrides(load_raw(source.model_dump(mode="json") if isinstance(source, Scenario) else source), ov)
    raw.pop("sweep", None)
    base = expand(raw)[0].scenario
    if not base.sla:
        raise ConfigError("capacity needs an SLA: add an sla: section or --set sla.e2e_ms.p95=800")
    kind, lo_b, hi_b, current = _numeric_field(base, key)
    if direction is None:
        direction, why = default_direction(key)
    else:
        if direction not in ("max", "min"):
            raise ConfigError(f"--direction {direction!r}: expected max or min")
        why = "as asked"
    mode = base.workload.mode
    if key == "workload.rate_per_s" and mode == "closed" or key == "workload.users" and mode == "open":
        raise ConfigError(f"--vary {key}: the scenario's workload is {mode}; "
                          f"vary {'workload.users' if mode == 'closed' else 'workload.rate_per_s'} instead")

    def cast(v: float) -> float:
        return int(round(v)) if kind is int else float(v)

    for name, v in (("--low", low), ("--high", high)):
        if v is not None and not (lo_b <= v <= hi_b):
            raise ConfigError(f"{name} {v:g}: {key} must lie in [{lo_b:g}, {hi_b:g}]")
        if v is not None and kind is int and float(v) != int(v):
            raise ConfigError(f"{name} {v:g}: {key} is an integer key")
    if low is not None and high is not None and low >= high:
        raise ConfigError(f"--low {low:g} must be below --high {high:g}")
    if step is not None and step <= 0:
        raise ConfigError(f"--step {step:g}: must be > 0")
    L = cast(low) if low is not None else lo_b
    H = cast(high) if high is not None else hi_b
    ex = executor or LocalExecutor(jobs)
    cache: dict[float, Tried] = {}
    res = CapacityResult(key, direction, None, reason=why)

    def test(v: float) -> bool:
        v = cast(v)
        if v not in cache:
            pts = expand(raw, {key: v})
            sr = run_sweep(pts, out, executor=ex)
            t = Tried(v, sr.points[0].summary)
            cache[v] = t
            res.tried.append(t)
            if on_try:
                on_try(t)
        return cache[v].passed

    easy, hard = (L, H) if direction == "max" else (H, L)

    def grow(v: float, toward_hard: bool) -> float:
        """The next value of a geometric bracket search, clamped to [L, H]."""
        up = toward_hard == (direction == "max")
        if up:
            nv = v * 2 if v > 0 else (1 if kind is int else 1.0)
        else:
            nv = v / 2 if v > 0 else v - 1
        nv = cast(nv)
        if nv == v:
            nv = cast(v + (1 if up else -1))
        return min(max(nv, L), H)

    good = bad = None
    if low is not None and high is not None:
        if not test(easy):
            res.best = cache[cast(easy)]
            res.note = f"even {key}={cast(easy):g}, the most favourable end of the range, does not meet the SLA"
            return res
        good = cast(easy)
        if test(hard):
            res.capacity = cast(hard)
            res.note = f"every value in [{L:g}, {H:g}] meets the SLA; the capacity is at least {cast(hard):g}"
            return res
        bad = cast(hard)
    else:
        start = low if low is not None else high if high is not None else current
        if start is None:
            raise ConfigError(f"--vary {key}: the scenario sets no value for it; give --low and --high")
        v = cast(min(max(start, L), H))
        if test(v):
            good = v
            for _ in range(max_steps):
                nv = grow(good, toward_hard=True)
                if nv == good:
                    break
                if test(nv):
                    good = nv
                else:
                    bad = nv
                    break
            if bad is None:
                res.capacity = good
                res.note = (f"{key}={good:g} still meets the SLA: the search stopped at "
                            f"{'the end of the allowed range' if good in (L, H) else 'its step limit'}; "
                            f"the capacity is at least {good:g}")
                return res
        else:
            bad = v
            for _ in range(max_steps):
                nv = grow(bad, toward_hard=False)
                if nv == bad:
                    break
                if test(nv):
                    good = nv
                    break
                bad = nv
            if good is None:
                res.best = cache[bad]
                res.note = f"no value of {key} tried meets the SLA (the most favourable tried: {bad:g})"
                return res
    # Bisect between good (passes) and bad (does not).
    assert good is not None and bad is not None
    def tol() -> float:
        # 1 % of the value: finer than that, replications cannot tell neighbours apart.
        rel = 0.01 * max(abs(good), abs(bad))
        return step if step is not None else (max(1, int(rel)) if kind is int else rel)

    while abs(bad - good) > tol():
        mid = cast((good + bad) / 2)
        if mid in (good, bad):
            break
        if test(mid):
            good = mid
        else:
            bad = mid
    res.capacity = good
    inconc = [t.value for t in res.tried if t.verdict == "inconclusive"]
    res.note = (f"{key}={good:g} meets every SLA; {bad:g} does not"
                + (f" (inconclusive at {', '.join(f'{x:g}' for x in sorted(inconc))}: counted as not passing)"
                   if inconc else ""))
    return res
