"""`capsim schema` accepts every shipped scenario and refuses what capsim refuses.

An editor that checks files against the schema must not mark a valid file red:
plain-number distributions, catalog names, ``extends:`` and SLA sections all
validate; unknown keys, unknown SLA metrics or statistics and unknown catalog
names do not.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from sim.spec.schema import json_schema
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted([*ROOT.glob("scenarios/*.yaml"), ROOT / "tests/data/rag_small.yaml"])


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_shipped_scenarios_validate(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    errors = [
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))
    ]
    assert not errors


GOOD = {
    "extends": "base.yaml",
    "workload": {"mode": "closed", "users": 10, "think_s": 3},
    "cache": {"lookup_ms": 1},
    "llm": {"model": "llama-3-8b", "gpu": "h200", "output_tokens": {"dist": "lognormal", "mean": 80, "cv": 0.5}},
    "sla": {"e2e_ms": {"p95": 800}, "ttft_ms": {"p99": 400}},
}


def test_file_forms_capsim_accepts_validate(validator: jsonschema.Draft202012Validator) -> None:
    assert not list(validator.iter_errors(GOOD))
    for reserve in ("vllm-v0.6", 2.5):
        assert not list(validator.iter_errors({**GOOD, "llm": {**GOOD["llm"], "engine_reserve": reserve}}))


@pytest.mark.parametrize(
    "patch",
    [
        {"workload": {"mode": "closed", "users": 10, "think_s": 3, "userz": 1}},
        {"sla": {"e2e_msec": {"p95": 800}}},
        {"sla": {"e2e_ms": {"p97": 800}}},
        {"sla": {"e2e_ms": {"p95": -1}}},
        {"llm": {"gpu": "h1000"}},
        {"cache": {"lookup_ms": -1}},
        {"llm": {"engine_reserve": "vllm-9"}},
        {"llm": {"engine_reserve": -1}},
    ],
    ids=[
        "unknown-key",
        "unknown-metric",
        "unknown-stat",
        "negative-threshold",
        "unknown-gpu",
        "negative-number",
        "unknown-reserve",
        "negative-reserve",
    ],
)
def test_invalid_files_are_refused(validator: jsonschema.Draft202012Validator, patch: dict) -> None:
    assert list(validator.iter_errors({**GOOD, **patch}))


def test_descriptions_carry_no_sphinx_markup() -> None:
    text = json.dumps(json_schema())
    assert "``" not in text and ":mod:`" not in text and ":func:`" not in text


def test_capsim_schema_prints_it() -> None:
    r = invoke("schema")
    assert r.exit_code == 0 and json.loads(r.output) == json_schema()


def _sections(schema: dict) -> dict[str, dict]:
    return {"Scenario": schema, **{k: v for k, v in schema["$defs"].items() if "properties" in v}}


def test_every_key_has_a_plain_description() -> None:
    """An editor shows each key's description on hover: every key of every section has one
    plain-text line."""
    missing = [
        f"{name}.{key}"
        for name, section in _sections(json_schema()).items()
        for key, prop in section["properties"].items()
        if not str(prop.get("description", "")).strip()
    ]
    assert not missing


def test_descriptions_name_only_keys_that_exist() -> None:
    from sim.spec.descriptions import FIELD_DESCRIPTIONS

    sections = _sections(json_schema())
    stale = [
        f"{name}.{key}"
        for name, fields in FIELD_DESCRIPTIONS.items()
        for key in fields
        if key not in sections.get(name, {}).get("properties", {})
    ]
    assert not stale


@pytest.mark.parametrize(
    "doc",
    [
        {"extends": "order_support.yaml", "sweep": None, "expect": None, "workload": {"users": 200}},
        {"extends": "base.yaml", "retrieval": {"service_ms": None}, "llm": {"max_batch": None}},
        {"extends": "base.yaml", "workload": {"think_s": {"cv": 0.5}}, "llm": {"gpu": {"memory_gb": 141}}},
    ],
    ids=["drop-sweep", "null-keys", "partial-sections"],
)
def test_a_derived_file_may_null_and_give_part_of_a_section(
    validator: jsonschema.Draft202012Validator, doc: dict
) -> None:
    """The documented ``sweep: null`` (a derived file drops its base's sweep) is valid
    under the schema; so is half a section, which the deep merge completes from the base."""
    assert not [e.message for e in validator.iter_errors(doc)]


@pytest.mark.parametrize(
    "doc",
    [
        {"extends": "base.yaml", "llm": {"maxbatch": 3}},
        {"extends": "base.yaml", "llm": {"max_batch": "x"}},
        {"extends": "base.yaml", "sla": {"e2e_msec": {"p95": 800}}},
        {**GOOD, "extends": 3},
        {k: v for k, v in {**GOOD, "llm": {**GOOD["llm"], "max_batch": None}}.items() if k != "extends"},
        {"llm": {"max_batch": 3}},
    ],
    ids=[
        "derived-unknown-key",
        "derived-bad-type",
        "derived-unknown-metric",
        "extends-not-a-path",
        "plain-null",
        "no-workload",
    ],
)
def test_derived_files_stay_checked_and_plain_files_stay_strict(
    validator: jsonschema.Draft202012Validator, doc: dict
) -> None:
    assert list(validator.iter_errors(doc))


def test_capsim_runs_the_derived_file_the_schema_accepts(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text((ROOT / "tests/data/rag_small.yaml").read_text())
    doc = {"extends": "base.yaml", "sweep": None, "expect": None, "llm": {"max_batch": None}}
    jsonschema.Draft202012Validator(json_schema()).validate(doc)
    (tmp_path / "derived.yaml").write_text(yaml.safe_dump(doc))
    r = invoke("estimate", str(tmp_path / "derived.yaml"))
    assert r.exit_code == 0, r.output
