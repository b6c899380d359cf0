"""Calibration sanity: absurd retrieval calibrations and GPU step tables are
one-line errors, not silently fitted or extrapolated."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from sim.calibrate.gpu import fit_gpu, parse_measurements
from sim.errors import CalibrationError
from sim.physics.retrieval import default_calibration_path, load_calibration
from sim.spec.schema import LLMConfig
from tests.gpu_steps import synthetic_measurements

SHIPPED = json.loads(default_calibration_path().read_text())
H = "batch_size,context_tokens,new_tokens,step_ms\n"


def _write(tmp_path: Path, doc: dict) -> Path:
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(doc))
    return p


def test_the_shipped_calibration_extrapolates_to_a_positive_search():
    cal = load_calibration()
    dim = SHIPPED["records"][0]["dim"]
    top_k = SHIPPED["records"][0]["top_k"]
    p = cal.profile("linear_numpy", docs=5_000_000, dim=dim, top_k=top_k)
    assert p.extrapolated and p.mean_ms > 0 and p.values_ms[len(p.values_ms) // 2] > 1.0


def test_a_law_that_falls_with_n_is_refused_where_it_reaches_zero(tmp_path):
    doc = copy.deepcopy(SHIPPED)
    for f in doc["fits"]:
        if f["index"] == "linear_numpy":
            f["b"] = [-abs(b) for b in f["b"]]
            f["mean"]["b"] = -abs(f["mean"]["b"])
    cal = load_calibration(_write(tmp_path, doc))
    r = SHIPPED["records"][0]
    with pytest.raises(CalibrationError, match="not a search time"):
        cal.profile("linear_numpy", docs=50_000_000, dim=r["dim"], top_k=r["top_k"])


@pytest.mark.parametrize(
    "edit, says",
    [
        (lambda d: d["fits"][0].__setitem__("docs", [1000, 1000]), "2 distinct corpus sizes"),
        (lambda d: d["records"][0].__setitem__("values_ms", [0.0] * len(d["probs"])), "cannot take 0 ms"),
        (lambda d: d["records"][0].__setitem__("mean_ms", 0.0), "cannot take 0 ms"),
    ],
)
def test_calibration_file_sanity(tmp_path, edit, says):
    doc = copy.deepcopy(SHIPPED)
    edit(doc)
    with pytest.raises(CalibrationError, match=says) as e:
        load_calibration(_write(tmp_path, doc))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "rows, says",
    [
        ("4,100,2,5\n1,10,1,5\n2,20,2,6\n", "new_tokens 2 < batch_size 4"),
        ("1,10,20,5\n1,10,1,5\n2,20,2,6\n", "context_tokens 10 < new_tokens 20"),
        ("1.5,10,2,5\n1,10,1,5\n2,20,2,6\n", "must be a whole number"),
        ("1,10,1,70000\n1,10,1,5\n2,20,2,6\n", "not a forward step"),
        ("1,10,1,5\n1,10,1,6\n1,10,1,7\n", "only 1 distinct"),
    ],
)
def test_gpu_rows_that_are_not_steps(rows, says):
    with pytest.raises(CalibrationError, match=says):
        parse_measurements(H + rows)


def test_gpu_steps_far_slower_than_the_roofline_are_refused():
    cfg = LLMConfig(model="llama-3-8b", gpu="h100-sxm")
    data = synthetic_measurements(cfg, 0.0002, 0.0002, 0.5, np.random.default_rng(1), n=40, noise_cv=0.01)
    with pytest.raises(CalibrationError, match="lower bound|not below the smallest|off by"):
        fit_gpu(cfg, data)


def test_a_plausible_gpu_fit_still_passes():
    cfg = LLMConfig(model="llama-3-8b", gpu="h100-sxm")
    data = synthetic_measurements(cfg, 0.7, 0.4, 1.0, np.random.default_rng(2), n=60, noise_cv=0.02)
    fit = fit_gpu(cfg, data)
    assert fit.bw_efficiency == pytest.approx(0.7, rel=0.05) and fit.step_overhead_ms < data["step_ms"].min()
