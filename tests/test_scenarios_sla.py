"""Every shipped scenario meets the SLA written in it, as a user's own test would check.

Each ``scenarios/*.yaml`` with an ``sla:`` section is run through
:func:`sim.testing.assert_sla`.  A sweeping scenario may include points that
are meant to fail (1,000 shoppers on one GPU, to show where it breaks); its
``expect:`` list names the points that must pass and those that must fail
(see :mod:`sim.testing`).  Without ``expect:`` every point must pass.

Short form (default): each expected-to-pass point runs 3 replications of at
most 120 simulated seconds and must not *fail* (a short run may be
inconclusive); expected-to-fail points run 3 replications at the scenario's
own length and must fail.  Long form
(``CAPSIM_LONG=1``): the scenario's own run settings; passing points must
pass outright and failing points must fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import sim
from sim.errors import CapsimError
from sim.spec.scenario import read_yaml
from sim.testing import assert_sla, expected_points

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SHORT_DURATION_S = 120.0
SHORT_REPLICATIONS = 3


def _cases() -> list:
    out = []
    for path in sorted(SCENARIOS.glob("*.yaml")):
        try:
            if not read_yaml(path).get("sla"):
                continue
            expectations = expected_points(path)
        except CapsimError as e:  # reported by the test, not at collection
            out.append(pytest.param(path, None, str(e), id=f"{path.stem}-invalid"))
            continue
        for grid, verdict in expectations:
            where = ",".join(f"{k.split('.')[-1]}={v[0]}" for k, v in grid.items()) or "all"
            out.append(pytest.param(path, grid, verdict, id=f"{path.stem}-{where}-{verdict}"))
    return out


def short_overrides(path: Path) -> dict:
    run = sim.load_scenario(path).run
    duration = min(run.duration_s, SHORT_DURATION_S)
    ov: dict = {"run.duration_s": duration, "run.replications": SHORT_REPLICATIONS, "run.target_precision": None}
    if run.warmup_s != "auto":
        ov["run.warmup_s"] = min(float(run.warmup_s), duration / 4)
    return ov


@pytest.mark.slow
@pytest.mark.parametrize("path,grid,verdict", _cases())
def test_scenario_meets_its_sla(path, grid, verdict, size):
    if grid is None:
        pytest.fail(f"{path.name}: {verdict}")
    try:
        if not size.long and verdict == "pass":
            assert_sla(path, short_overrides(path), grid=grid, jobs=2, allow_inconclusive=True)
            return

        if verdict == "pass":
            assert_sla(path, grid=grid, jobs=None)
            return
    except AssertionError as e:
        scn = sim.load_scenario(path)
        if scn.sweep and not scn.expect:
            raise AssertionError(
                f"{e}\n{path.name} sweeps {', '.join(scn.sweep)} without an expect: list, so "
                "every point must pass; mark the points meant to fail (see sim/testing.py)"
            ) from None
        raise
    # Points meant to fail run at the scenario's own length in both forms (a failing point is
    # usually an overloaded one, cheap to simulate), with 3 replications in the short form.
    overrides = None if size.long else {"run.replications": SHORT_REPLICATIONS, "run.target_precision": None}
    res = sim.simulate(path, overrides, grid=grid, jobs=None)
    for p in res.points:
        verdicts = [v["verdict"] for v in p.summary["sla"]]
        assert "fail" in verdicts, f"{path.name} at {p.params}: expected an SLA to fail, got {verdicts}"
