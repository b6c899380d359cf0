"""Overrides do what they say: a --set on a swept key pins it, a key the
workload's mode ignores is refused, and extends: can drop a key of its base."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.errors import ConfigError
from sim.spec.scenario import expand, load_raw

FLAGSHIP = Path(__file__).resolve().parents[1] / "scenarios" / "order_support.yaml"


def test_set_on_a_swept_key_pins_it_and_keeps_the_matching_expectations() -> None:
    points = expand(FLAGSHIP, {"retrieval.index": "hnsw"})
    assert [p.params for p in points] == [{"workload.users": 50}, {"workload.users": 1000}]
    assert all(p.scenario.retrieval.index == "hnsw" for p in points)
    expect = points[0].scenario.expect
    assert [(e.params, e.verdict) for e in expect] == [
        ({"workload.users": 50}, "pass"),
        ({"workload.users": 1000}, "pass"),
    ]


def test_grid_and_set_together() -> None:
    points = expand(FLAGSHIP, {"workload.users": 200}, {"llm.replicas": [1, 2]})
    assert [p.params for p in points] == [
        {"retrieval.index": i, "llm.replicas": r} for i in ("linear_python", "linear_numpy", "hnsw") for r in (1, 2)
    ]
    assert {p.scenario.workload.users for p in points} == {200}


def test_a_key_the_mode_ignores_is_refused() -> None:
    with pytest.raises(ConfigError, match="workload.users: has no effect on a workload in open mode"):
        expand(FLAGSHIP, {"workload.mode": "open", "workload.rate_per_s": 5, "sweep": {}, "workload.users": 30})
    with pytest.raises(ConfigError, match="workload.rate_per_s: has no effect on a workload in closed mode"):
        expand(FLAGSHIP, {"workload.rate_per_s": 5})


def test_extends_can_drop_a_key_of_its_base(tmp_path: Path) -> None:
    derived = tmp_path / "one_point.yaml"
    derived.write_text(f"extends: {FLAGSHIP}\nsweep: null\nexpect: null\nworkload: {{users: 300}}\n")
    raw = load_raw(derived)
    assert "sweep" not in raw and "expect" not in raw and raw["workload"]["users"] == 300
    points = expand(derived)
    assert len(points) == 1 and points[0].scenario.workload.think_s is not None  # the rest of the base stays
