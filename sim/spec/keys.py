"""Dotted scenario keys: is ``llm.replicas`` a key, what numbers may it hold, and ``--grid`` values."""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Sequence
from typing import Any

import annotated_types as at
from pydantic import BaseModel

from sim.errors import ConfigError
from sim.spec.scenario import parse_value
from sim.spec.schema import Scenario, model_of


def check_key(key: str, flag: str = "--grid") -> None:
    """Raise :class:`ConfigError` unless ``key`` names a field of the scenario schema.

    Keys under a free-form mapping (``sla.e2e_ms.p95``) are accepted from the
    mapping down; the values are checked when the points are validated.
    """

    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"{flag} {key!r}: expected a dotted key such as workload.users")
    models: list[type[BaseModel]] = [Scenario]
    for i, part in enumerate(parts):
        if not models:  # below a mapping / list: free-form
            return
        fields: dict[str, Any] = {}
        for m in models:
            for name, f in m.model_fields.items():
                fields.setdefault(name, []).append(f)
        if part not in fields:
            where = ".".join(parts[:i]) or "the scenario"
            close = difflib.get_close_matches(part, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{flag} {key}: {where} has no key {part!r} ({hint}allowed: {', '.join(fields)})")
        nxt: list[type[BaseModel]] = []
        for f in fields[part]:
            nxt += [m for m in model_of(f.annotation) if m not in nxt]
        models = nxt


def parse_grid(items: Sequence[str]) -> dict[str, list]:
    """``["workload.users=50,100", "llm.gpu=h100-sxm,h200"]`` -> ``{key: [values]}``.

    Each value is read as a YAML scalar (``100`` an int, ``0.5`` a float,
    ``h200`` a string); ``KEY=[...]`` is read as one YAML list.
    """
    grid: dict[str, list] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,..., e.g. workload.users=50,100,200")
        key, text = (s.strip() for s in item.split("=", 1))
        check_key(key)
        if text.startswith("["):
            values = parse_value(text)
            if not isinstance(values, list):
                raise ConfigError(f"--grid {key}: {text!r} is not a YAML list")
        else:
            values = [parse_value(v.strip()) for v in text.split(",")]
        if not values or any(v is None or v == "" for v in values):
            raise ConfigError(f"--grid {key}: empty value in {text!r}; expected V1,V2,...")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        grid[key] = values
    return grid


# --------------------------------------------------------------------------- the point store


def _bound(v: object) -> float:
    """A bound of an ``annotated_types`` constraint as a float (the schema's bounds are numbers)."""
    if not isinstance(v, (int, float)):
        raise TypeError(f"not a numeric bound: {v!r}")
    return float(v)


def numeric_field(scn: Scenario, key: str) -> tuple[type, float, float, Any]:
    """(int or float, lowest allowed, highest allowed, current value) of a dotted key."""
    check_key(key, "--vary")
    obj, name = _section(scn, key)
    fld = type(obj).model_fields.get(name)
    if fld is None:
        raise ConfigError(f"--vary {key}: not a key of {key.rpartition('.')[0]} in this scenario")
    current = getattr(obj, name)
    kinds: list[type] = []
    bounds = [-math.inf, math.inf, 0.0]  # lowest, highest, 1.0 when the lowest is excluded (gt)
    _numbers(fld.annotation, list(fld.metadata), kinds, bounds)
    if not kinds:
        shown = f"a {type(current).__name__} section" if isinstance(current, BaseModel) else repr(current)
        raise ConfigError(
            f"--vary {key}: not a numeric key (it holds {shown}); vary an integer or "
            f"float key such as workload.users or llm.replicas"
        )
    lo, hi, gt = bounds
    kind = int if kinds == [int] or (int in kinds and float not in kinds) else float
    if kind is int:
        lo = math.floor(lo) + 1 if gt else math.ceil(lo)
    elif gt:
        lo = lo + max(abs(lo) * 1e-9, 1e-12)
    if math.isinf(lo):
        lo = 0 if kind is int else 0.0
    return kind, lo, hi, current


def _section(scn: Scenario, key: str) -> tuple[BaseModel, str]:
    """The section a dotted key's last part names a field of, and that part."""
    parts = key.split(".")
    obj: Any = scn
    for i, part in enumerate(parts[:-1]):
        obj = getattr(obj, part, None)
        if not isinstance(obj, BaseModel):
            raise ConfigError(
                f"--vary {key}: {'.'.join(parts[: i + 1])} is not a section with numeric keys in this scenario"
            )
    return obj, parts[-1]


def _numbers(ann: Any, meta: list, kinds: list[type], bounds: list[float]) -> None:
    """The numeric types in annotation ``ann`` (through ``Annotated``, ``Optional``, unions) into
    ``kinds``; their ``Ge``/``Gt``/``Le``/``Lt`` constraints tighten ``bounds`` (lowest, highest,
    lowest excluded)."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        args = typing.get_args(ann)
        _numbers(args[0], meta + list(args[1:]), kinds, bounds)
    elif origin is not None and origin is not typing.Literal:
        for a in typing.get_args(ann):
            _numbers(a, meta, kinds, bounds)
    elif ann in (int, float):
        kinds.append(ann)
        for m in meta:
            for c in getattr(m, "metadata", [m]):
                _tighten(c, bounds)


def _tighten(c: Any, bounds: list[float]) -> None:
    if isinstance(c, at.Ge):
        bounds[0] = max(bounds[0], _bound(c.ge))
    elif isinstance(c, at.Gt):
        bounds[0], bounds[2] = max(bounds[0], _bound(c.gt)), 1.0
    elif isinstance(c, at.Le):
        bounds[1] = min(bounds[1], _bound(c.le))
    elif isinstance(c, at.Lt):
        bounds[1] = min(bounds[1], _bound(c.lt))
