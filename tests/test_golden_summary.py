"""``capsim run --json`` of a fixed-seed scenario does not drift.

``tests/data/golden_rag_small.json`` is ``capsim run tests/data/rag_small.yaml
--json``: every figure of a small fixed-seed run, the whole pipeline and the
LLM stage on the ``published`` step-cost preset.  Percentiles are read from the
streaming histograms (``sim.engine.digest``: within 0.5 % of the exact
percentile of the same requests; their intervals' ends move with them, see
docs/explanation/statistics.md).  Keys, their order and every value must agree; floats to
1e-9 relative, so a change in numpy's last bits does not fail it but any
change in the model or the statistics does: regenerate it only with a reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import sim
from sim.analysis.summary import PointSummary
from sim.files import to_json

DATA = Path(__file__).parent / "data"


def same(a: Any, b: Any, where: str = "$") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def fresh() -> dict:
    return json.loads(to_json(sim.simulate(DATA / "rag_small.yaml").summary))


def test_run_json_is_unchanged(fresh: dict) -> None:
    same(json.loads((DATA / "golden_rag_small.json").read_text()), fresh)


def test_point_summary_round_trips(fresh: dict) -> None:
    doc = fresh["points"][0]
    typed = PointSummary.from_dict(doc)
    assert typed.to_dict() == doc
    assert typed.verdict == "pass" and typed.stable
    assert typed.metrics["e2e_ms"].values["p95"] == doc["metrics"]["e2e_ms"]["p95"]
    assert typed["throughput_per_s"] == doc["throughput_per_s"]  # read access by key still works


@pytest.mark.parametrize("bad", [{}, [1], {"params": {}}, "text"])
def test_a_malformed_summary_is_refused(bad: Any) -> None:
    with pytest.raises((KeyError, TypeError, AttributeError)):
        PointSummary.from_dict(bad)
