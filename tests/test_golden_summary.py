"""``capsim run --json`` of a fixed-seed scenario does not drift.

``tests/data/golden_rag_small.json`` is ``capsim run tests/data/rag_small.yaml
--json``.  It was first captured with the flat-module layout before the
restructuring into layers and matched byte for byte after it; it was
regenerated once, deliberately, when the LLM step-cost defaults became the
fit to published measurements (``llm.efficiency: published``), which changes
every LLM figure, and once more when the cache hit rate started counting every
lookup in the window (not only finished requests) and a pooled percentile's
maximum became the pooled maximum (a p99 above the reported max was possible), and
when the gpu section gained ``load`` (answers/s over the replicas' capacity), and
when the KV pool became the engine's own accounting (memory as the card exposes it,
79.19 GiB for an H100, less the vLLM reserve of ``llm.engine_reserve``): only
``gpu.kv_blocks`` (32,538 -> 34,214) and ``gpu.kv_occupancy`` changed; and when the
published fit gained two sources (Argonne's LLM-Inference-Bench, TensorRT-LLM 0.9.0): the
``published`` preset moved (bw_efficiency 0.752 -> 0.728, mfu 0.470 -> 0.488, per-sequence
overhead 0.132 -> 0.059 ms, all-reduce latency 47 -> 50 us), so every LLM figure changed
(TPOT p50 3.47 -> 2.72 ms).  Percentiles are read from the streaming histograms
(``sim.engine.digest``: within 0.5 % of the exact percentile of the same requests; their
intervals' ends move with them, see docs/explanation/statistics.md).  Keys, their order and every value must agree; floats to
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
