"""A make verify run becomes the result files the validation page is generated from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.docgen import verify_record

ROW = {
    "metric": "e2e_ms",
    "stat": "p95",
    "measured": 500.0,
    "predicted": 520.0,
    "ci": [None, None],
    "measured_ci": [480.0, 530.0],
    "rel_error": 0.04,
    "inside_ci": None,
    "bound": 0.1,
    "verdict": "within",
}


def _work(tmp: Path, llama_s: float) -> Path:
    work = tmp / "verify"
    for folder, scenario in (("out", "verify_local.yaml"), ("out_retrieval", "verify_retrieval.yaml")):
        (work / folder).mkdir(parents=True)
        doc = {"scenario": f"/somewhere/clone/scenarios/{scenario}", "loads": [{"users": 4, "rows": [ROW]}]}
        (work / folder / "verify.json").write_text(json.dumps(doc))
    setup = {"sdist_s": 60.0, "llama_s": llama_s, "model_s": 6.0, "index_s": 30.0, "cache": "/c"}
    (work / "setup.json").write_text(json.dumps(setup))
    return work


def test_a_first_run_then_a_warm_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    verify_record.main(["--work", str(_work(tmp_path / "a", 1100.0)), "--total-s", "2400", "--data", str(data)])
    llm = json.loads((data / "verify_llm.json").read_text())
    assert llm["scenario"] == "scenarios/verify_local.yaml"
    assert llm["loads"] == [{"users": 4, "rows": [{k: ROW[k] for k in verify_record.ROW_KEYS}]}]
    assert json.loads((data / "verify_retrieval.json").read_text())["scenario"] == "scenarios/verify_retrieval.yaml"
    (first,) = json.loads((data / "verify_timing.json").read_text())["rows"]
    # 2,400 s = 40.0 min in all; set-up 60 + 1,100 + 6 + 30 = 1,196 s = 19.9 min
    assert (first["kind"], first["minutes"], first["setup_minutes"]) == ("first", 40.0, 19.9)

    verify_record.main(["--work", str(_work(tmp_path / "b", 0.2)), "--total-s", "900", "--data", str(data)])
    rows = json.loads((data / "verify_timing.json").read_text())["rows"]
    assert [(r["kind"], r["minutes"]) for r in rows] == [("first", 40.0), ("warm", 15.0)]


def test_the_vllm_half_is_recorded_with_its_scheduler_checks(tmp_path: Path) -> None:
    from tools.docgen.validation import _checks

    work = _work(tmp_path, 0.2)
    (work / "out_vllm").mkdir()
    doc = {"scenario": "/x/scenarios/verify_vllm.yaml", "loads": [{"users": 8, "rows": [ROW]}]}
    (work / "out_vllm" / "verify.json").write_text(json.dumps(doc))
    check = {
        "name": "preemption",
        "users": 8,
        "duration_s": 60.0,
        "requests": 90,
        "failures": 0,
        "kv_blocks": 8,
        "token_budget": 256,
        "prompts_over_budget": 0,
        "rows": [
            {"check": "preemptions_per_request", "measured": 0.4, "predicted": 0.5, "error": 0.25, "verdict": "within"}
        ],
    }
    (work / "out_vllm" / "check_preemption.json").write_text(json.dumps(check))
    data = tmp_path / "data"
    verify_record.main(["--work", str(work), "--total-s", "900", "--data", str(data)])
    got = json.loads((data / "verify_vllm.json").read_text())
    assert got["scenario"] == "scenarios/verify_vllm.yaml" and got["checks"] == [check]
    assert "| preemptions_per_request | 0.40 | 0.50 | +25.0 % | within |" in _checks(got["checks"])
    assert "checks" not in json.loads((data / "verify_llm.json").read_text())


def test_a_row_without_a_bound_shows_dashes_on_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A p99 row has no bound and no verdict: the validation page shows '-' in both columns."""
    import tools.docgen.validation as V

    data = tmp_path / "data"
    p99 = {**ROW, "stat": "p99", "bound": None, "verdict": None}
    verify_record.main(["--work", str(_work(tmp_path, 0.2)), "--total-s", "900", "--data", str(data)])
    doc = json.loads((data / "verify_llm.json").read_text())
    doc["loads"][0]["rows"].append({k: p99[k] for k in verify_record.ROW_KEYS})
    (data / "verify_llm.json").write_text(json.dumps(doc))
    monkeypatch.setattr(V, "DATA", data)
    (row,) = [line for line in V._verify() if "| e2e p99 |" in line]
    assert row.endswith("| - | - |") and "None" not in row
