"""Scenario files: YAML loading, ``extends:``, ``--set`` overrides, sweeps.

A scenario file is YAML read with ``yaml.safe_load``.  ``extends: base.yaml``
(relative to the file) deep-merges the file over its base, so a what-if is a
few lines on top of the flagship.  ``--set llm.replicas=2`` overrides one
dotted key; the value is parsed as YAML (``2`` is an int, ``[1, 2]`` a list,
``h200`` a string).  A ``sweep:`` mapping of dotted key -> list of values
expands into one validated scenario per combination (a *point*), in the order
``itertools.product`` gives.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ConfigError
from sim.spec.schema import Scenario, validate_scenario


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a scenario file, resolving ``extends:`` chains."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"scenario file {str(path)!r} does not exist")
    rp = p.resolve()
    if rp in _seen:
        raise ConfigError(f"extends: cycle through {p.name}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p.name}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p.name}: a scenario must be a mapping of sections")
    # A calibration file or step table named in a scenario file is relative to that file, like extends:.
    retrieval = data.get("retrieval")
    if isinstance(retrieval, dict) and isinstance(retrieval.get("calibration"), str):
        cal = Path(retrieval["calibration"]).expanduser()
        if not cal.is_absolute():
            retrieval["calibration"] = str((p.parent / cal).resolve())
    llm = data.get("llm")
    if isinstance(llm, dict) and isinstance(llm.get("step_table"), str):
        tab = Path(llm["step_table"]).expanduser()
        if not tab.is_absolute():
            llm["step_table"] = str((p.parent / tab).resolve())
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError("extends: must be a path to another scenario file")
        parent = read_yaml(p.parent / base, (*_seen, rp))
        data = _deep_merge(parent, data)
    return data


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``a.b.c = value`` in nested dicts, creating sections as needed."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"--set {key!r}: expected a dotted key such as llm.replicas")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"{key}: {where} is {nxt!r}, not a section with keys")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. llm.replicas=2")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def apply_overrides(data: dict, overrides: Mapping[str, Any] | None) -> dict:
    out = copy.deepcopy(data)
    for k, v in (overrides or {}).items():
        set_dotted(out, k, v)
    return out


def load_raw(source: str | Path | Mapping) -> dict:
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    return read_yaml(source)


def load_scenario(source: str | Path | Mapping | Scenario, overrides: Mapping[str, Any] | None = None) -> Scenario:
    """Load and validate one scenario (its ``sweep`` section kept, not expanded)."""
    if isinstance(source, Scenario):
        if not overrides:
            return source
        source = source.model_dump(mode="json")
    data = apply_overrides(load_raw(source), overrides)
    return validate_scenario(data)


@dataclass(frozen=True)
class Point:
    """One combination of a sweep: the swept values and the resolved scenario."""

    params: dict[str, Any]
    scenario: Scenario


def expand(
    source: str | Path | Mapping | Scenario,
    overrides: Mapping[str, Any] | None = None,
    grid: Mapping[str, list] | None = None,
) -> list[Point]:
    """Every combination of the scenario's ``sweep`` (plus ``grid``), validated.

    ``grid`` (from ``--grid``) replaces a swept key of the same name.  Each
    point's scenario has its sweep section emptied and the swept values set.
    """
    if isinstance(source, Scenario):
        source = source.model_dump(mode="json")
    base = apply_overrides(load_raw(source), overrides)
    sweep = dict(base.pop("sweep", None) or {})
    if not isinstance(sweep, dict):
        raise ConfigError("sweep: expected a mapping of dotted key -> list of values")
    sweep.update(grid or {})
    # Validate the base first so an error names the real key, not a sweep point.
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
    validate_scenario({**base, "sweep": sweep})
    keys = list(sweep)
    points: list[Point] = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        params = dict(zip(keys, combo))
        data = apply_overrides(base, params)
        try:
            scn = validate_scenario(data)
        except ConfigError as e:
            where = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"{e} (sweep point {where})") from None
        points.append(Point(params, scn))
    return points


def run_overrides(
    overrides: Mapping[str, Any] | None, seed: int | None = None, replications: int | None = None
) -> dict[str, Any]:
    """``overrides`` plus ``run.seed`` / ``run.replications`` when given (the ``--seed`` and
    ``--replications`` flags and the API's keywords)."""
    ov = dict(overrides or {})
    if seed is not None:
        ov["run.seed"] = seed
    if replications is not None:
        ov["run.replications"] = replications
    return ov
