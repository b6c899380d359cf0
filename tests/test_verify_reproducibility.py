"""The retrieval probes' contention from the service's CPU clock, and a segmented load's verdict
held to how far its error moves between the load's segments; hand-computed values."""

from __future__ import annotations

import pytest

from sim.verify.probes import contention_from_cpu, cpu_per_request_ms
from sim.verify.segments import relative_errors, segment_errors
from sim.verify.verdict import RETRIEVAL_BOUNDS, LoadComparison, compared_row, error_interval, meets, verdict


def test_the_services_cpu_per_request_is_its_clocks_span_over_the_answers():
    """Stamps 100, 112, 106, 118 ms (answers of clients at once, out of order): 18 ms over 3."""
    assert cpu_per_request_ms([100.0, 112.0, 106.0, 118.0]) == pytest.approx(6.0)
    assert cpu_per_request_ms([100.0, 105.0]) is None  # too few
    assert cpu_per_request_ms([100.0, None, 110.0, 115.0]) is None  # an answer without the clock


def test_contention_from_the_cpu_clock_as_hand_computed():
    """Alone 5 ms of CPU a request (stamps 0, 5, 10, 15), two at once 6 (100, 112, 106, 118),
    three at once 4.5 (stamps 0, 4.5, 9, 13.5: under alone, noise, read as 1); the loop's 1 ms
    a request is not slowed: (6 - 1) / (5 - 1) = 1.25."""
    alone = [0.0, 5.0, 10.0, 15.0]
    assert contention_from_cpu(alone, [[100.0, 112.0, 106.0, 118.0]], 1.0) == pytest.approx((1.0, 1.25))
    assert contention_from_cpu(alone, [[100.0, 112.0, 106.0, 118.0], [0.0, 4.5, 9.0, 13.5]], 1.0) == pytest.approx(
        (1.0, 1.25, 1.0)
    )
    assert contention_from_cpu(alone, [[100.0, 112.0, 106.0, 118.0]], 0.0) == pytest.approx((1.0, 1.2))
    assert contention_from_cpu(alone, [[100.0, None, 106.0, 118.0]], 1.0) is None  # a clock missing
    assert contention_from_cpu([0.0, None, 10.0], [[0.0, 6.0, 12.0]], 1.0) is None
    assert contention_from_cpu(alone, [[0.0, 6.0, 12.0]], 5.0) is None  # no search CPU left alone


def test_per_segment_errors_as_hand_computed():
    """(9, 12) against (10, 10): -10 % and +20 %; a segment with no value on a side is left out."""
    import numpy as np

    assert relative_errors([9.0, 12.0], [10.0, 10.0]) == pytest.approx([-0.1, 0.2])
    assert relative_errors([9.0, 12.0, float("nan")], [10.0, 0.0, 5.0]) == pytest.approx([-0.1])
    # medians 2 vs 4 and 6 vs 5; the third segment has no live values
    pred = [np.array([1.0, 2.0, 3.0]), np.array([6.0]), np.array([1.0])]
    live = [np.array([4.0, 4.0, 4.0]), np.array([5.0, 5.0]), np.array([])]
    assert segment_errors(pred, live, 50.0) == pytest.approx([-0.5, 0.2])


def test_the_error_interval_over_segments_as_hand_computed():
    """Errors -14, -18, -10, -20 % around a pooled -15 %: sd 4.435 %, half width t(0.975, 3) *
    4.435 / sqrt(4) = 3.1824 * 2.2174 = 7.057 %: [-22.06, -7.94] %, which holds -10 %.  Errors
    -20, -21, -19, -20 % around -20 %: sd 0.8165 %, half width 1.299 %: [-21.30, -18.70] %."""
    lo, hi = error_interval(-0.15, [-0.14, -0.18, -0.10, -0.20])
    assert (lo, hi) == pytest.approx((-0.15 - 0.07057, -0.15 + 0.07057), abs=2e-5)
    assert meets([lo, hi], 0.10)
    lo2, hi2 = error_interval(-0.20, [-0.20, -0.21, -0.19, -0.20])
    assert (lo2, hi2) == pytest.approx((-0.21299, -0.18701), abs=2e-5)
    assert not meets([lo2, hi2], 0.10)
    assert meets([0.05, 0.3], 0.10) and meets([-0.3, 0.3], 0.10) and not meets([0.11, 0.3], 0.10)
    assert error_interval(None, [0.1, 0.2]) is None and error_interval(0.1, [0.2]) is None


def test_a_segmented_row_is_undecided_when_its_error_moves_across_the_bound_between_segments():
    """A P95 predicted 22.1 against 26.0 measured (-15.0 %) with a measured interval 25.4-28.0
    (22.1 / 0.9 = 24.56 < 25.4: outside by the sampling interval alone): undecided when the
    segments' errors (-14, -18, -10, -20 %: interval -22.1 to -7.9 %) hold -10 %, outside when
    they agree (-20, -21, -19, -20 % around -20 %)."""
    assert verdict(-0.15, 0.10, 22.1, [25.4, 28.0]) == "outside"
    assert verdict(-0.15, 0.10, 22.1, [25.4, 28.0], [-0.2206, -0.0794]) == "undecided"
    assert verdict(-0.15, 0.10, 22.1, [25.4, 28.0], [-0.21, -0.11]) == "outside"
    assert verdict(-0.05, 0.10, 24.7, [25.4, 28.0], [-0.5, 0.5]) == "within"  # within by its error first

    row = compared_row(
        "retrieval_ms",
        "p95",
        26.0,
        22.1,
        None,
        RETRIEVAL_BOUNDS,
        measured_ci=[25.4, 28.0],
        segment_errors=[-0.14, -0.18, -0.10, -0.20],
    )
    assert row["rel_error"] == pytest.approx(-0.15)
    assert row["verdict"] == "undecided" and row["segment_errors"] == [-0.14, -0.18, -0.1, -0.2]
    assert row["error_ci"] == pytest.approx([-0.15 - 0.07057, -0.15 + 0.07057], abs=2e-5)
    assert row["why"].startswith("retrieval_ms p95 off by -15.0% (bound 10%), but its error moves between the load's 4")
    lc = LoadComparison(6, [row], {}, {}, {}, 0, 100)
    assert lc.misses == [] and lc.undecided == [row["why"]]

    still = compared_row(
        "retrieval_ms",
        "p95",
        26.0,
        20.8,
        None,
        RETRIEVAL_BOUNDS,
        measured_ci=[25.4, 28.0],
        segment_errors=[-0.2, -0.21, -0.19, -0.2],
    )
    assert still["verdict"] == "outside" and "why" not in still
    one_piece = compared_row("retrieval_ms", "p95", 26.0, 22.1, None, RETRIEVAL_BOUNDS, measured_ci=[25.4, 28.0])
    assert one_piece["verdict"] == "outside" and "error_ci" not in one_piece


def test_a_runs_exit_code_and_message_from_its_loads():
    """Failures over 1 % win (exit 1), then rows outside (1), then undecided rows (3), else 0."""
    from sim.verify.verdict import outcome

    out = {"metric": "e2e_ms", "stat": "p95", "rel_error": -0.2, "bound": 0.1, "verdict": "outside"}
    und = {**out, "verdict": "undecided", "why": "e2e_ms p95 moves"}
    ok = {**out, "rel_error": 0.01, "verdict": "within"}
    assert outcome([LoadComparison(2, [ok], {}, {}, {}, 0, 100)]) == (0, None)
    assert outcome([LoadComparison(2, [ok], {}, {}, {}, 0, 100), LoadComparison(6, [und], {}, {}, {}, 0, 100)]) == (
        3,
        "verify: inconclusive (the data cannot decide these rows): 6 users: e2e_ms p95 moves",
    )
    assert outcome([LoadComparison(2, [out, und], {}, {}, {}, 0, 100)]) == (
        1,
        "verify: outside the bounds: 2 users: e2e_ms p95 off by -20.0% (bound 10%)",
    )
    failing = LoadComparison(2, [out], {}, {}, {}, 2, 100, ["HTTP 500"])
    assert outcome([failing]) == (1, "verify: 2 of 100 requests failed at 2 users (> 1 %): HTTP 500")
