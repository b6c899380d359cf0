"""The measured step-time table (sim.physics.steptable): hand-computed values, exact epoch sums, the engine."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from sim.analysis.estimate import estimate
from sim.engine.llm.replica import Replica
from sim.errors import ConfigError
from sim.physics.steptable import StepTable, TableModel, read_rows, step_cost
from sim.spec.schema import LLMConfig, validate_scenario
from tests.helpers import TOY_GPU, TOY_MODEL, exact_scenario
from tests.test_llm_stage import run

# Decode: batch 1 through (100, 10), (300, 14), (500, 15) ms; batch 3 through (300, 30), (900, 42).
# Prefill rows follow 2 + 0.5 * new_tokens ms exactly (no attention term).
TABLE = """# a comment line is skipped
batch_size,context_tokens,new_tokens,step_ms
1,100,1,10
1,300,1,14
1,500,1,15
3,300,3,30
3,900,3,42
1,100,100,52
1,200,200,102
2,200,200,102
2,400,400,202
"""


@pytest.fixture
def table_path(tmp_path):
    p = tmp_path / "steps.csv"
    p.write_text(TABLE)
    return p


@pytest.fixture
def model(table_path):
    return TableModel(read_rows(table_path))


def test_decode_is_piecewise_linear_in_context_flat_below_and_last_slope_above(model):
    assert model.decode_ms(1, 200) == pytest.approx(12.0)  # halfway 10 -> 14
    assert model.decode_ms(1, 400) == pytest.approx(14.5)  # halfway 14 -> 15
    assert model.decode_ms(1, 50) == pytest.approx(10.0)  # flat below the first point
    assert model.decode_ms(1, 700) == pytest.approx(16.0)  # 15 + 0.005 * 200
    assert model.decode_ms(3, 600) == pytest.approx(36.0)


def test_decode_is_linear_in_batch_between_measured_batches(model):
    # batch 2 at 300: halfway between 14 (batch 1) and 30 (batch 3)
    assert model.decode_ms(2, 300) == pytest.approx(22.0)
    # above the largest batch (3) each sequence costs what it cost there: batch 5 over 300
    # tokens is 5/3 of batch 3 over 180 tokens, where the batch-3 curve is flat at 30: 50
    assert model.decode_ms(5, 300) == pytest.approx(50.0)


def test_prefill_law_fitted_from_prefill_rows(model):
    a, b, c, d = model.prefill
    assert a == pytest.approx(2.0, abs=1e-9) and b == pytest.approx(0.5) and c == pytest.approx(0.0, abs=1e-12)
    assert d == 0.0  # no mixed rows
    assert model.prefill_ms(300, 45150) == pytest.approx(152.0)


def test_epoch_sum_is_exact_across_knots(model):
    # batch 1 from 298: 13.96 + 13.98 + 14.00 + 14.005 + 14.01 = 69.955
    assert model.epoch_ms(1, 298, 5) == pytest.approx(69.955)
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 7))
        ctx0 = float(rng.integers(0, 1200))
        k = int(rng.integers(0, 300))
        brute = sum(model.decode_ms(n, ctx0 + n * j) for j in range(k))
        assert model.epoch_ms(n, ctx0, k) == pytest.approx(brute, rel=1e-9, abs=1e-9)


def _cfg(table_path, **kw) -> LLMConfig:
    base = dict(model=TOY_MODEL, gpu=TOY_GPU, step_table=str(table_path), max_batch=4, max_batched_tokens=512)
    base.update(kw)
    return LLMConfig(**base)


def test_step_cost_picks_the_table_only_when_set(table_path):
    assert isinstance(step_cost(_cfg(table_path)), StepTable)
    assert not isinstance(step_cost(_cfg(table_path, step_table=None)), StepTable)


def test_single_request_timeline_from_the_table(table_path):
    # prefill 100 tokens: 2 + 0.5 * 100 = 52 ms; then 4 decode steps at batch 1 over 101..104
    # context tokens: 4 * 10 + 0.02 * (1 + 2 + 3 + 4) = 40.2 ms.
    done, _ = run(_cfg(table_path), [(0.0, 100, 5)])
    assert done[0].t_first == pytest.approx(0.052)
    assert done[0].t_last == pytest.approx(0.0922)


def test_engine_epochs_equal_step_by_step_with_a_table(monkeypatch, table_path):
    rng = np.random.default_rng(4)
    n = 40
    t = np.cumsum(rng.exponential(0.05, n))
    arrivals = [(float(t[i]), int(rng.integers(5, 200)), int(rng.integers(1, 60))) for i in range(n)]
    c = _cfg(table_path)
    fast, _ = run(c, arrivals)
    monkeypatch.setattr(Replica, "epoch_cap", 1)
    slow, _ = run(c, arrivals)
    for f, s in zip(fast, slow):
        assert f.t_first == pytest.approx(s.t_first, rel=1e-9)
        assert f.t_last == pytest.approx(s.t_last, rel=1e-9)


def test_pipeline_and_estimate_use_the_table(table_path):
    scn = exact_scenario(
        cache__enabled=False, retrieval__enabled=False, llm__step_table=str(table_path), llm__output_tokens=5
    )
    pt = sim.simulate(scn, jobs=1).points[0]
    e2e = pt.summary.to_dict()["metrics"]["e2e_ms"]
    assert e2e["p50"] == pytest.approx(92.2) and e2e["max"] == pytest.approx(92.2)
    est = estimate(validate_scenario(scn))
    assert est["step_model"].startswith("table ")
    ctx = 100 + 5 / 2
    assert est["decode_step_ms"]["1"] == pytest.approx(10 + 0.02 * (ctx + 1 - 100))


@pytest.mark.parametrize(
    "text, msg",
    [
        ("batch_size,context_tokens,step_ms\n1,1,1\n", "lacks column(s) new_tokens"),
        ("batch_size,context_tokens,new_tokens,step_ms\n1,10,1,x\n", "line 2: not numbers"),
        ("batch_size,context_tokens,new_tokens,step_ms\n1,10,1,5\n", "needs prefill rows"),
        ("batch_size,context_tokens,new_tokens,step_ms\n1,10,1,-5\n", "must be > 0"),
    ],
)
def test_bad_table_is_one_line_naming_the_key(tmp_path, text, msg):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        validate_scenario(exact_scenario(llm__step_table=str(p)))
    line = str(err.value)
    assert msg in line and "llm" in line and "step_table" in line and "\n" not in line
    with pytest.raises(ConfigError, match="does not exist"):
        read_rows(tmp_path / "nope.csv")


def test_beyond_the_largest_batch_each_sequence_costs_what_it_cost_there(tmp_path):
    """A table of batches 1-4 asked about batch 32 or 128 (capsim estimate does) once
    extrapolated the batch line to a 0 ms step; now a step grows with the batch."""
    from sim.physics.steptable import load_table

    p = tmp_path / "t.csv"
    p.write_text(
        "batch_size,context_tokens,new_tokens,step_ms\n"
        "1,100,1,10\n1,1000,1,12\n2,200,2,27\n2,2000,2,30\n"
        "3,300,3,29\n3,3000,3,40\n4,400,4,30\n4,4000,4,33\n"
        "1,100,100,200\n2,400,400,700\n"
    )
    t = load_table(p)
    # batch 8 at 500 tokens each = batch 4 at 500 each, doubled (hand: 4-curve at 2000 tokens)
    b4_2000 = 30 + (33 - 30) * (2000 - 400) / (4000 - 400)
    assert t.decode_ms(8, 8 * 500) == pytest.approx(2 * b4_2000)
    steps = [t.decode_ms(b, 500 * b) for b in (4, 8, 32, 128)]
    assert all(s > 0 for s in steps) and steps == sorted(steps)
    assert t.epoch_ms(8, 8 * 500, 5) == pytest.approx(sum(t.decode_ms(8, 8 * 500 + 8 * j) for j in range(5)))


def test_mixed_rows_fit_what_decoders_riding_along_a_prefill_add(tmp_path):
    """A prompt prefilled beside k decoding sequences (llama-server's mixed step) costs here
    10 + 0.5 per new token + 20 ms per decoder: the law recovers each term, and a table
    without mixed rows keeps the old three-term law (d = 0)."""
    f = tmp_path / "t.csv"
    f.write_text(
        "batch_size,context_tokens,new_tokens,step_ms,decode_seqs\n"
        "1,30,1,12.0,0\n2,60,2,25.0,0\n3,90,3,30.0,0\n"  # decode rows
        "1,100,100,60.0,0\n1,200,200,110.0,0\n2,200,200,110.0,0\n"  # prompts alone: 10 + 0.5 new
        "2,170,101,80.5,1\n3,240,102,101.0,2\n3,340,202,151.0,2\n"  # beside 1 and 2 decoders
    )
    m = TableModel(read_rows(f))
    a, b, c, d = m.prefill
    assert (a, b, d) == pytest.approx((10.0, 0.5, 20.0), abs=1e-6) and c == pytest.approx(0.0, abs=1e-9)
    assert m.prefill_ms(150, 0.0, 3) == pytest.approx(10 + 75 + 60)
    bad = tmp_path / "bad.csv"
    bad.write_text("batch_size,context_tokens,new_tokens,step_ms,decode_seqs\n2,60,2,25.0,2\n")
    with pytest.raises(ConfigError, match="decode_seqs must be a whole number below batch_size"):
        read_rows(bad)


def test_a_scaled_table_multiplies_decode_and_prefill_rows_by_their_own_factors(tmp_path, table_path):
    """Decode rows times 1.1, prefill rows times 0.9: batch 1 at 200 tokens was 12.0 ms (halfway
    10 -> 14), now 13.2; the prefill law 2 + 0.5 n becomes 1.8 + 0.45 n, 300 tokens 136.8 ms.
    Mixed rows (a prompt beside decoders) are prefill steps and take the prefill factor."""
    from sim.physics.steptable import scaled_table

    out = tmp_path / "scaled.csv"
    scaled_table(table_path, out, 0.9, 1.1, "scaled for a test")
    m = TableModel(read_rows(out))
    assert out.read_text().startswith("# scaled for a test\n")
    assert m.decode_ms(1, 200) == pytest.approx(13.2)
    assert m.decode_ms(3, 600) == pytest.approx(39.6)
    assert m.prefill_ms(300, 45150) == pytest.approx(136.8)
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(
        "batch_size,context_tokens,new_tokens,step_ms,decode_seqs\n1,30,1,12.0,0\n"
        "1,100,100,60.0,0\n1,200,200,110.0,0\n2,170,101,80.5,1\n"
    )
    scaled_table(mixed, out, 2.0, 1.0, "x")
    assert read_rows(out)[:, 3].tolist() == [12.0, 120.0, 220.0, 161.0]
    assert read_rows(out)[:, 4].tolist() == [0, 0, 0, 1]
