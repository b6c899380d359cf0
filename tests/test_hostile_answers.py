"""Silent wrong answers the hostile campaign found, as tables: each input once gave an
answer that read as valid (an exit code, a count, a calibration) and was not.

To extend: add a row to the table of the answer it concerns.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers import exact_scenario, invoke

DATA = Path(__file__).parent / "data"
SMALL = DATA / "rag_small.yaml"


# ---- capacity: a search where nothing failed outright is inconclusive, not "no value"

INCONCLUSIVE = [
    # (verdicts of the values tried, capacity found, exit code, said as inconclusive)
    (["inconclusive"], None, 3, True),
    (["inconclusive", "inconclusive", "inconclusive"], None, 3, True),
    (["fail", "inconclusive"], None, 1, False),
    (["fail"], None, 1, False),
    (["pass", "inconclusive"], 8.0, 0, False),
    ([], None, 1, False),
]


@pytest.mark.parametrize("verdicts, found, code, inconclusive", INCONCLUSIVE)
def test_capacity_exit_code_by_what_was_tried(verdicts, found, code, inconclusive) -> None:
    from sim.run.capacity import CapacityResult, Tried

    res = CapacityResult("workload.users", "max", found)
    res.tried = [Tried(float(i), SimpleNamespace(verdict=v)) for i, v in enumerate(verdicts)]  # type: ignore[arg-type]
    assert (res.exit_code, res.inconclusive) == (code, inconclusive)


def test_capacity_where_every_point_is_inconclusive_says_so_and_exits_3() -> None:
    # 4 simulated seconds: too few requests for any interval, so every verdict is inconclusive
    r = invoke(
        "capacity",
        SMALL,
        "--vary",
        "workload.users",
        "--low",
        "10",
        "--high",
        "20",
        "--set",
        "run.duration_s=4",
        "--set",
        "run.warmup_s=1",
        "--jobs",
        "1",
    )
    assert r.exit_code == 3, (r.exit_code, r.stderr)
    assert "inconclusive: every value of workload.users tried was inconclusive" in r.stderr
    assert "no value meets the SLA" not in r.stderr


# ---- requests stuck in the warm-up are counted whatever the warm-up


def _stuck(warmup_s: float) -> dict:
    """5 shoppers whose first search finds the service idle and wakes it for 1,000 s."""
    d = exact_scenario()
    d["run"].update(duration_s=30, warmup_s=warmup_s, drain_s=5, replications=1)
    d["workload"].update(users=5, think_s={"dist": "exponential", "mean": 1.0})
    d["retrieval"]["wakeup_ms"] = 1e6
    d["cache"]["enabled"] = False
    return d


@pytest.mark.parametrize("warmup_s", [0.0, 5.0, 20.0])
def test_requests_stuck_in_the_warm_up_are_incomplete(warmup_s: float) -> None:
    from sim.run.sweep import simulate

    s = simulate(_stuck(warmup_s), jobs=1).points[0].summary.to_dict()
    assert s["completed"] == 0
    assert s["incomplete"] == 5
    assert s["stability"]["kind"] == "overloaded"


# ---- vectors whose squares overflow keep their direction


@pytest.mark.parametrize(
    "scale, dtype",
    [(1.0, np.float32), (3e38, np.float32), (1e-30, np.float32), (1e200, np.float64), (6e4, np.float16)],
)
def test_vectors_of_any_finite_size_normalise_to_their_direction(scale, dtype, tmp_path: Path) -> None:
    from sim.calibrate.retrieval import _user_vectors, load_vectors

    rng = np.random.default_rng(1)
    base = rng.uniform(-1, 1, size=(20, 8))
    x = (base / np.abs(base).max() * scale).astype(dtype)
    want = base / np.linalg.norm(base, axis=1)[:, None]
    f = tmp_path / "v.npy"
    np.save(f, x)
    for got in (load_vectors(f), _user_vectors(x, None)[0]):
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        assert np.allclose(got, want, atol=2e-3 if dtype == np.float16 else 1e-5)


# ---- --set of a swept key on a scenario with sweep: and no expect: pins it


def test_set_pins_a_swept_key_without_expectations(tmp_path: Path) -> None:
    from sim.spec.scenario import expand

    s = tmp_path / "s.yaml"
    s.write_text(f"extends: '{SMALL}'\nsweep: {{workload.users: [10, 20, 40]}}\n")
    points = expand(s, {"workload.users": 20})
    assert [p.scenario.workload.users for p in points] == [20]
    assert points[0].params == {}
    d = copy.deepcopy(exact_scenario())
    d["sweep"] = {"workload.users": [1, 2]}
    assert [p.scenario.workload.users for p in expand(d, {"workload.users": 2})] == [2]


# ---- a trace is counted before it is parsed


def test_a_trace_longer_than_the_row_limit_is_refused_before_parsing(tmp_path, monkeypatch) -> None:
    import sim.spec.trace as T
    from sim.errors import ConfigError

    monkeypatch.setattr(T, "MAX_TRACE_ROWS", 100)

    def parsed(*a, **k):
        raise AssertionError("parsed a trace past the row limit")

    monkeypatch.setattr(T, "_load", parsed)
    f = tmp_path / "t.csv"
    f.write_text("arrival_s\n" + "".join(f"{i}\n" for i in range(101)))
    with pytest.raises(ConfigError, match="has 101 rows, more than the 100 a run replays"):
        T.load_trace(f)


@pytest.mark.parametrize(
    "text, rows",
    [("a\n", 0), ("a\n1\n", 1), ("a\n1\n2", 2), ("a\n1\n2\n", 2), ("", 0), ("a", 0)],
)
def test_rows_are_counted_by_hand(tmp_path, text, rows) -> None:
    from sim.spec.trace import count_rows

    f = tmp_path / "t.csv"
    f.write_text(text)
    assert count_rows(f) == rows


def test_an_azure_offset_is_honoured() -> None:
    from sim.spec.trace import _parse_time

    utc, _ = _parse_time("2023-11-16 05:00:00.0000000", "azure")
    east, _ = _parse_time("2023-11-16 10:00:00.0000000+05:00", "azure")
    frac, _ = _parse_time("2023-11-16 10:00:00.5000000+05:00", "azure")
    assert east == utc and frac == utc + 0.5
