"""Index kinds are registered once and work end to end; the one added by the development guide's recipe too."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import sim
from sim.indexes import kind, kinds
from sim.registry import INDEXES
from sim.spec.schema import RetrievalConfig
from tests.helpers import invoke


def test_schema_accepts_exactly_the_registered_kinds() -> None:
    allowed = typing.get_args(RetrievalConfig.model_fields["index"].annotation)
    assert set(allowed) == set(INDEXES.names()) == set(kinds())


def test_scaling_law_regressors_by_hand() -> None:
    assert kind("linear_numpy").law_x(5000) == 5000.0
    assert kind("hnsw").law_x(math.e**3) == 3.0
    assert kind("ivf").law_x(10_000, nlist=100, nprobe=8) == 100 + 10_000 / 100 * 8  # 900
    assert kind("flat_faiss").knob is None and kind("hnsw").knob_key == "retrieval.ef_search"


def test_flat_faiss_added_by_the_recipe_calibrates_and_simulates(tmp_path: Path) -> None:
    cal = tmp_path / "cal.json"
    r = invoke(
        "calibrate",
        "retrieval",
        "--docs",
        "600,1200",
        "--dim",
        "16",
        "--queries",
        "30",
        "--index",
        "flat_faiss",
        "--threads",
        "1",
        "--seed",
        "1",
        "--out",
        str(cal),
    )
    assert r.exit_code == 0, r.output
    res = sim.simulate(
        {
            "workload": {"mode": "open", "rate_per_s": 20},
            "cache": {"enabled": False},
            "llm": {"enabled": False},
            "retrieval": {"index": "flat_faiss", "docs": 900, "dim": 16, "calibration": str(cal), "workers": 1},
            "run": {"duration_s": 20, "warmup_s": 2, "replications": 2},
        }
    )
    r0 = res.points[0].summary.retrieval
    assert r0 is not None and r0["index"] == "flat_faiss" and r0["recall_at_k"] == 1.0
    assert 0 < res.points[0].summary.metrics["retrieval_service_ms"].values["mean"] < 50
