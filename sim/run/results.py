"""What a run returns: points with their scenario, replications and summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.analysis.stats import combine_verdicts
from sim.analysis.summary import PointSummary
from sim.analysis.table import param_columns, summary_table, with_params
from sim.engine.pipeline import Replication
from sim.spec.schema import Scenario

if TYPE_CHECKING:
    import pandas as pd  # deferred where a frame is made: a run that prints its table never needs pandas


@dataclass
class PointResult:
    """What simulating one point gave: its swept values, resolved scenario, replications and
    :class:`~sim.analysis.summary.PointSummary` (the input side is :class:`sim.spec.scenario.Point`)."""

    params: dict[str, Any]
    scenario: Scenario
    replications: list[Replication]
    summary: PointSummary

    @property
    def records(self) -> pd.DataFrame:
        """One row per request (raises :class:`~sim.errors.ConfigError` unless kept: ``run.records``)."""
        import pandas as pd  # deferred: see the module's imports

        frames = [pd.DataFrame(r.records) for r in self.replications]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for k, v in self.params.items():
            df[k] = v
        return df


@dataclass
class Result:
    """What :func:`simulate` returns: one :class:`PointResult` per sweep point."""

    name: str
    points: list[PointResult]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> pd.DataFrame:
        """Every request of every point and replication (swept keys as columns)."""
        import pandas as pd  # deferred: see the module's imports

        frames = []
        for i, p in enumerate(self.points):
            df = p.records
            df.insert(0, "point", i)
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def summary(self) -> dict:
        """The document ``capsim run --json`` prints."""
        return {"scenario": self.name, **self.extras, "points": [p.summary.to_dict() for p in self.points]}

    @property
    def verdicts(self) -> list[str]:
        return [s.verdict for p in self.points for s in p.summary.sla]

    @property
    def exit_code(self) -> int:
        """0 all SLAs pass (or none set), 1 any fails, 3 inconclusive and none failing."""
        return {"fail": 1, "inconclusive": 3}.get(combine_verdicts(self.verdicts), 0)

    def point(self, **params: Any) -> PointResult:
        for p in self.points:
            if all(p.params.get(k) == v for k, v in params.items()):
                return p
        raise KeyError(params)


def rep_frame(reps: Sequence[Replication]) -> pd.DataFrame:
    """The records of the replications that kept them (none kept: an empty frame)."""
    import pandas as pd  # deferred: see the module's imports

    frames = [pd.DataFrame(r.records) for r in reps if r.has_records]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def timeseries_frame(reps: Sequence[Replication]) -> pd.DataFrame:
    """Long format: one row per (replication, sample, LLM replica)."""
    import pandas as pd  # deferred: see the module's imports

    frames = []
    for r in reps:
        ts = r.timeseries
        if not ts or not np.size(ts.get("t_s", ())):
            continue
        t = np.asarray(ts["t_s"], dtype=float)
        n = len(t)
        lw = np.asarray(ts["llm_waiting"], dtype=float).reshape(n, -1)
        k = max(1, lw.shape[1])
        per = {
            name: (np.asarray(ts[name], dtype=float).reshape(n, -1) if lw.shape[1] else np.full((n, 1), np.nan))
            for name in ("llm_waiting", "llm_running", "kv_tokens")
        }
        frames.append(
            pd.DataFrame(
                {
                    "replication": np.full(n * k, r.replication, dtype=np.int64),
                    "t_s": np.repeat(t, k),
                    "replica": np.tile(np.arange(k) if lw.shape[1] else np.array([-1]), n).astype(np.int64),
                    "retrieval_queue": np.repeat(np.asarray(ts["retrieval_queue"], dtype=float), k),
                    "retrieval_busy": np.repeat(np.asarray(ts["retrieval_busy"], dtype=float), k),
                    **{name: v.reshape(-1) for name, v in per.items()},
                    "kv_capacity_tokens": np.full(n * k, float(ts.get("kv_capacity_tokens", 0))),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass
class SweepPoint(PointResult):
    """A point of a sweep: computed now (replications in memory) or read back from ``out``."""

    id: str = ""
    computed: bool = False
    folder: Path | None = None

    def _frame(self, name: str, strict: bool = True) -> pd.DataFrame:
        """The point's ``records`` or ``timeseries`` frame; ``strict``: records that were not
        kept raise (else: an empty frame)."""
        import pandas as pd  # deferred: see the module's imports

        if self.replications:
            if name != "records":
                return timeseries_frame(self.replications)
            if strict:
                _ = [r.records for r in self.replications]  # raises, naming run.records, unless kept
            return rep_frame(self.replications)
        if self.folder is not None and (self.folder / f"{name}.parquet").is_file():
            return pd.read_parquet(self.folder / f"{name}.parquet")
        return pd.DataFrame()

    @property
    def records(self) -> pd.DataFrame:
        return with_params(self._frame("records"), self.params, param_columns([self.params]))

    @property
    def timeseries(self) -> pd.DataFrame:
        return with_params(self._frame("timeseries"), self.params, param_columns([self.params]))


@dataclass
class SweepResult(Result):
    """:class:`sim.Result` of a sweep, plus where it was saved and how much was computed."""

    points: list[SweepPoint]  # type: ignore[assignment]  # a sweep's points know their id and folder
    out: Path | None = None

    @property
    def computed(self) -> int:
        """Points computed by this call (the rest were read back from ``out``)."""
        return len({p.id for p in self.points if p.computed})

    @property
    def reused(self) -> int:
        return len({p.id for p in self.points}) - self.computed

    def _dtypes(self) -> dict[str, str]:
        return param_columns([p.params for p in self.points])

    def _concat(self, kind: str) -> pd.DataFrame:
        """Every point's ``kind`` frame, with the point index and swept keys as columns."""
        dt = self._dtypes()
        import pandas as pd  # deferred: see the module's imports

        frames = []
        for i, p in enumerate(self.points):
            df = with_params(p._frame(kind), p.params, dt)
            df.insert(0, "point", i)
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def records(self) -> pd.DataFrame:
        return self._concat("records")

    @property
    def timeseries(self) -> pd.DataFrame:
        return self._concat("timeseries")

    def table(self) -> pd.DataFrame:
        """One row per point: :func:`summary_table` of this sweep."""
        return summary_table(self.summary["points"], [p.id for p in self.points])
