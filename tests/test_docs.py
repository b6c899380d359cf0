"""The documentation follows the code and the committed result files.

* every key the scenario schema accepts has a row, with a description, in the generated
  scenario reference (a new key without a line in ``sim/spec/descriptions.py`` fails here);
* the README's validation and performance summaries are the rows the generated pages start
  from, so the front page cannot drift from the files behind it;
* the KV-log validation file is what the code computes now;
* the README stays a front page (at most 300 lines) and neither it nor the docs carry a diary.

``make test`` also builds the site with ``mkdocs build --strict`` (``make docs``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools.docgen import measure, performance, scenario_ref, validation

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_schema_key_has_a_reference_row_with_a_description() -> None:
    rows = scenario_ref.rows()
    documented = {(r.model, r.field) for r in rows if r.description.strip()}
    missing = sorted(f"{model}.{field}" for model, field in scenario_ref.schema_fields() - documented)
    assert not missing, f"scenario keys without a reference entry: {missing}"


def test_reference_rows_use_dotted_paths_from_the_top() -> None:
    keys = {r.key for r in scenario_ref.rows()}
    for key in ("workload.queries.zipf_s", "llm.gpu.memory_exposed_gib", "retrieval.scheduler.tick_ms", "sla"):
        assert key in keys
    assert "workload.profile.steps[].at_s" in keys
    page = scenario_ref.render()
    assert "| `llm.engine_reserve` |" in page and "## Distributions" in page


def test_a_key_without_a_description_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = json.loads(json.dumps(scenario_ref._schema()))
    schema["$defs"]["CacheConfig"]["properties"]["ttl_s"] = {"type": "number"}
    rows = scenario_ref.rows(schema)
    row = next(r for r in rows if r.key == "cache.ttl_s")
    assert row.description == ""


def test_readme_validation_summary_matches_the_generated_page() -> None:
    for check, against, off, _ in validation.summary_rows():
        assert f"| {check} | {against} | {off} |" in README, f"README's validation row for {check!r} is stale"


def test_readme_performance_summary_matches_the_result_files() -> None:
    for name, value, target in performance.summary_rows():
        assert f"| {name} | {value} | {target} |" in README, f"README's performance row for {name!r} is stale"


def test_committed_kv_log_results_are_what_the_code_gives() -> None:
    committed = json.loads((ROOT / "docs/data/kv_logs.json").read_text())["rows"]
    now = measure.kv_log_checks()["rows"]
    assert [(r["id"], r["capsim_tokens"]) for r in committed] == [(r["id"], r["capsim_tokens"]) for r in now], (
        "docs/data/kv_logs.json is stale: run make validation"
    )


def test_readme_is_a_front_page_and_nothing_is_a_diary() -> None:
    assert len(README.splitlines()) <= 300
    texts = {"README.md": README, **{str(p.relative_to(ROOT)): p.read_text() for p in (ROOT / "docs").rglob("*.md")}}
    diary = re.compile(r"th run\b|load average|earlier the same day|\bthirty|\btwenty-", re.I)
    found = [f"{name}: {m.group(0)!r}" for name, text in texts.items() for m in diary.finditer(text)]
    assert not found
