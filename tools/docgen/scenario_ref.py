"""The scenario reference: every key a scenario file accepts, generated from the schema.

The rows come from :func:`sim.spec.schema.json_schema` (the pydantic models, with the
one-line descriptions of ``sim/spec/descriptions.py`` already merged in), walked from
the top-level sections down.  A row is ``(dotted key, model, field, type, default,
description)``; ``tests/test_docs.py`` checks that every field of every section has a
row with a description, so a new key without a line in ``descriptions.py`` fails there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

DERIVED = "Derived"


@dataclass(frozen=True)
class Row:
    key: str  # dotted, e.g. "workload.queries.zipf_s"; [] marks list items
    model: str  # the section that defines the field ("Scenario" at the top)
    field: str
    type: str
    default: str
    description: str


def _schema() -> dict:
    from sim.spec.schema import json_schema

    return json_schema()


def _ref_name(node: dict) -> str | None:
    ref = node.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _sections(node: dict) -> list[str]:
    """Names of the object $defs a property may hold (directly, in a list, or in a union)."""
    names: list[str] = []
    name = _ref_name(node)
    if name:
        names.append(name)
    for key in ("anyOf", "oneOf"):
        for alt in node.get(key, []):
            names += _sections(alt)
    if isinstance(node.get("items"), dict):
        names += _sections(node["items"])
    return names


def _is_list_of_objects(node: dict, defs: dict) -> bool:
    items = node.get("items")
    if isinstance(items, dict):
        return any("properties" in defs.get(n, {}) for n in _sections(items))
    return any(_is_list_of_objects(alt, defs) for alt in node.get("anyOf", []) if isinstance(alt, dict))


def _type(node: dict, defs: dict) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    name = _ref_name(node)
    if name:
        if name in DISTRIBUTIONS:
            return "distribution"
        d = defs.get(name, {})
        return _type(d, defs) if "properties" not in d else "mapping"
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _either(node[key], defs)
    return _plain_type(node, defs)


def _either(alternatives: list[dict], defs: dict) -> str:
    """An ``anyOf``/``oneOf``: a distribution where a number may stand for one, else the types joined by "or"."""
    alts = [_type(a, defs) for a in alternatives]
    if all(a in ("distribution", "number") for a in alts) and "distribution" in alts:
        return "distribution"
    out: list[str] = []
    for a in alts:
        if a not in out and a != "null":
            out.append(a)
    return " or ".join(out) if out else "null"


def _plain_type(node: dict, defs: dict) -> str:
    """A JSON Schema ``type`` as the reference names it."""
    t = node.get("type")
    if t == "array":
        items = node.get("items")
        inner = _type(items, defs) if isinstance(items, dict) else "value"
        return f"list of {inner}"
    if t == "object":
        return "mapping"
    if t == "integer":
        return "integer"
    if t in ("number", "string", "boolean", "null"):
        return str(t)
    return "value"


def _default(node: dict) -> str:
    if "default" not in node:
        return ""
    value = node["default"]
    if "default:" in str(node.get("description", "")):
        return "see the description"
    if isinstance(value, dict) and value:
        return ""  # a section: its keys carry their own defaults
    if value is None:
        return "none"
    if isinstance(value, (dict, list)) and not value:
        return "empty"
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"`{text}`" if len(text) <= 40 else "(see the description)"


def _clean(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


DISTRIBUTIONS = (
    "ConstantSpec",
    "ExponentialSpec",
    "LognormalSpec",
    "GammaSpec",
    "UniformSpec",
    "EmpiricalSpec",
)


def rows(schema: dict | None = None) -> list[Row]:
    """Every key a scenario file accepts, in the order of the file's sections."""
    schema = schema or _schema()
    defs = {k: v for k, v in schema["$defs"].items() if not k.startswith(DERIVED)}
    top = dict(schema.get("else", {}).get("properties", {}))
    top = {"extends": schema["properties"]["extends"], **top}
    out: list[Row] = []
    seen: set[tuple[str, str]] = set()

    def walk(props: dict, model: str, prefix: str) -> None:
        for field, node in props.items():
            key = f"{prefix}{field}"
            out.append(
                Row(key, model, field, _type(node, defs), _default(node), _clean(str(node.get("description", ""))))
            )
            seen.add((model, field))
            suffix = "[]." if _is_list_of_objects(node, defs) else "."
            for name in _sections(node):
                section = defs.get(name, {})
                if "properties" in section and name not in DISTRIBUTIONS:
                    walk(section["properties"], name, f"{key}{suffix}")

    walk(top, "Scenario", "")
    for name in DISTRIBUTIONS:
        walk(defs[name]["properties"], name, f"{{dist: {defs[name]['properties']['dist'].get('const', name)}}}.")
    # Sections no path above reaches (none today) still get their rows.
    for name, section in defs.items():
        for field, node in section.get("properties", {}).items():
            if (name, field) not in seen:
                out.append(Row(f"{name}.{field}", name, field, _type(node, defs), _default(node), ""))
    return out


def schema_fields(schema: dict | None = None) -> set[tuple[str, str]]:
    """(section, field) for every field of every section the schema defines."""
    schema = schema or _schema()
    fields = {("Scenario", k) for k in schema.get("else", {}).get("properties", {})} | {("Scenario", "extends")}
    for name, section in schema["$defs"].items():
        if not name.startswith(DERIVED):
            fields |= {(name, k) for k in section.get("properties", {})}
    return fields


INTRO = """\
# Scenario keys

Every key a scenario file accepts, generated from capsim's pydantic models and the
one-line descriptions in `sim/spec/descriptions.py` (the same lines `capsim schema`
gives an editor). A test fails when a key has no line here.

Files are YAML. `extends: base.yaml` deep-merges this file over a base (a `key: null`
removes the base's key); `--set a.b=c` overrides one dotted key, its value read as YAML,
and on a swept key it pins that key. Unknown keys are refused with the nearest allowed
name. Where the type says *distribution*, write a plain number (a constant) or one of
the forms under [Distributions](#distributions). `[]` in a key marks the items of a list.
"""


def render() -> str:
    lines = [INTRO]
    current = None
    all_rows = rows()
    parents = {r.key.split(".")[0].split("[")[0] for r in all_rows if "." in r.key or "[" in r.key}
    # Keys with no keys under them (name, sla, sweep, ...) come first, together.
    all_rows.sort(key=lambda r: r.key.split(".")[0].split("[")[0] in parents or r.key.startswith("{dist"))
    for row in all_rows:
        top = row.key.split(".")[0].split("[")[0]
        if row.key.startswith("{dist"):
            section = "Distributions"
        elif top not in parents:
            section = "Top-level keys"
        else:
            section = f"`{top}`"
        if section != current:
            current = section
            lines += ["", f"## {section}", ""]
            if section == "Distributions":
                lines += ["A distribution is a plain number (a constant) or one of these mappings.", ""]
            lines += ["| key | type | default | description |", "|---|---|---|---|"]
        lines.append(f"| `{row.key}` | {row.type} | {row.default} | {row.description} |")
    lines += ["", _sla_note(), ""]
    return "\n".join(lines)


def _sla_note() -> str:
    from sim.spec.metrics import SLA_METRICS, STATS

    metrics = ", ".join(f"`{m}`" for m in SLA_METRICS)
    stats = ", ".join(f"`{s}`" for s in STATS)
    return (
        "## SLA metrics and statistics\n\n"
        f"`sla` and `timeline.sla` take a metric, then a statistic, then a threshold in ms, e.g. "
        f"`sla: {{e2e_ms: {{p95: 800}}}}`.\n\nMetrics: {metrics}.\n\nStatistics: {stats}."
    )
