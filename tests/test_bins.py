"""Time bins keep every amount inside the window, whatever the float rounding of the edges."""

from __future__ import annotations

import pytest

import sim
from sim.engine.records import Bins


@pytest.mark.parametrize("lo, hi", [(20.0, 480.0), (0.0, 0.3), (60.0, 660.0), (7.0, 100.1)])
def test_amounts_up_to_the_window_end_are_kept(lo: float, hi: float) -> None:
    b = Bins(lo, hi)
    b.add(lo, hi, 5.0)  # spread over the whole window
    b.add(hi - 1e-9 * hi, hi + 10.0, 3.0)  # ends past hi: only the part inside counts
    b.add(hi - 1e-12, hi - 1e-12, 1.0)  # an instant just before hi
    inside = 3.0 * (1e-9 * hi) / (1e-9 * hi + 10.0)
    assert b.total == pytest.approx(5.0 + inside + 1.0, rel=1e-9)


def test_run_whose_window_end_rounds_down_completes() -> None:
    # 200 bins of (480 - 20) / 200 = 2.3 s: 20 + 200 * 2.3 rounds, which once made a step
    # ending at 480 s index past the last bin (IndexError).
    res = sim.simulate("tests/data/rag_small.yaml", {"run.duration_s": 480}, replications=1)
    assert res.points[0].summary.completed > 0


def test_add_all_equals_one_add_per_counter() -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    together = tuple(Bins(10.0, 110.0) for _ in range(3))
    apart = tuple(Bins(10.0, 110.0) for _ in range(3))
    for _ in range(2000):
        start = float(rng.uniform(-5, 120))
        end = start + float(rng.choice([0.0, rng.exponential(0.2), rng.exponential(5.0)]))
        amounts = tuple(float(x) for x in rng.uniform(0, 3, 3))
        Bins.add_all(together, start, end, amounts)
        for b, x in zip(apart, amounts):
            b.add(start, end, x)
    for a, b in zip(together, apart):
        assert a.values == pytest.approx(b.values, rel=1e-12, abs=1e-12)
