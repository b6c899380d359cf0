"""Hand-computed values for the formulas this version added, and a one-line error with
exit 2 for each new bad input (no traceback, nothing written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.physics import gpu as gm
from tests.helpers import invoke

FLAGSHIP = "scenarios/order_support.yaml"


def test_attention_pairs_by_hand() -> None:
    # 4 new tokens after 10 cached: 4 * 10 + (1 + 2 + 3 + 4) = 50 pairs
    assert gm.attention_pairs(4, 10) == 50
    assert gm.attention_pairs(1, 0) == 1
    # the FLOPs formula is 4 * layers * heads * head_dim * pairs
    assert gm.attention_flops(2, 3, 8, 4, 10) == 4 * 2 * 3 * 8 * 50


def test_line_split_by_hand() -> None:
    # 1 + 2s vs 4 + s over 10 steps: line 1 >= line 2 from s = 3 on
    assert gm.line_split(1, 2, 4, 1, 10) == (3, True)
    # 10 - s vs 4 + s: line 1 wins while s <= 3
    assert gm.line_split(10, -1, 4, 1, 10) == (4, False)
    # and the closed-form sum agrees with the loop
    assert gm.sum_max_linear(1, 2, 4, 1, 10) == sum(max(1 + 2 * s, 4 + s) for s in range(10))


def test_request_kv_blocks_and_misfit_by_hand() -> None:
    # 1,000 + 100 tokens, nothing shared, blocks of 16: ceil(1099 / 16) = 69
    assert gm.request_kv_blocks(1000, 100, 0, 16) == 69
    # 320 of them shared: ceil(779 / 16) = 49
    assert gm.request_kv_blocks(1000, 100, 320, 16) == 49
    assert gm.kv_misfit(1000, 100, 0, 0, 69, 16) is None
    why = gm.kv_misfit(1000, 100, 0, 32, 70, 16)  # 2 blocks pinned by the prefix leave 68
    assert why is not None and "needs 69 KV blocks of 16 tokens but a replica holds 68" in why
    assert why.startswith("llm: a request of 1000 prompt + 100 output tokens needs 69")
    # the schema's check before running uses the same function: one place decides what fits
    why = gm.kv_misfit(1000, 100, 0, 32, 70, 16, longest=True)
    assert why is not None and why.startswith("llm: the longest request (1000 prompt + 100 output tokens) needs 69")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["capacity", FLAGSHIP, "--vary", "llm.replicas", "--band", "--set", "llm.efficiency=custom"],
            "--band: it sets llm.efficiency itself",
        ),
        (
            ["run", FLAGSHIP, "--set", "workload.rate_per_s=5"],
            "workload.rate_per_s: has no effect on a workload in closed mode",
        ),
        (
            ["run", FLAGSHIP, "--set", "llm.compute_dtype=fp8", "--set", "llm.gpu=a100-80gb"],
            "compute_dtype fp8 needs llm.gpu.fp8_tflops",
        ),
        (["run", FLAGSHIP, "--set", "llm.efficiency=fastest"], "llm.efficiency: input should be"),
        (["calibrate", "published", "--resamples", "-1", "--out", "{tmp}/fit.json"], "--resamples: must be >= 0"),
        (["calibrate", "routing", "--impls", "regex", "--out", "{tmp}/r.json"], "--impls: 'regex' is not one of"),
        (["calibrate", "routing", "--threshold", "2", "--out", "{tmp}/r.json"], "--threshold: 2 must lie in (0, 1)"),
    ],
    ids=["band-with-efficiency", "mode-key", "fp8-without-peak", "unknown-preset", "resamples", "impls", "threshold"],
)
def test_new_bad_inputs_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    r = invoke(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
