"""A make verify run becomes the result files the validation page is generated from."""

from __future__ import annotations

import json
from pathlib import Path

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
