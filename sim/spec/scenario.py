"""Scenario files: YAML loading, ``extends:``, ``--set`` overrides, sweeps.

A scenario file is YAML read with ``yaml.safe_load``.  ``extends: base.yaml``
(relative to the file) deep-merges the file over its base, so a what-if is a
few lines on top of the flagship; ``key: null`` in the derived file removes the
base's key (``sweep: null`` drops the base's sweep).  ``--set llm.replicas=2`` overrides one
dotted key; the value is parsed as YAML (``2`` is an int, ``[1, 2]`` a list,
``h200`` a string).  A ``sweep:`` mapping of dotted key -> list of values
expands into one validated scenario per combination (a *point*), in the order
``itertools.product`` gives.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ConfigError
from sim.files import read_input_text
from sim.spec.schema import Scenario, validate_scenario


def _deep_merge(base: dict, over: Mapping) -> dict:
    """``over`` on top of ``base``, section by section; a key set to null in ``over`` is removed
    (so a derived scenario can drop its base's ``sweep:`` or ``cost:`` and get the default)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


MAX_DEPTH = 32  # sections nest a few levels; anything deeper is not a scenario
#: Most values a YAML document may hold once its aliases are expanded: an empirical
#: distribution of the largest allowed size and the rest of a scenario fit well within;
#: a "billion laughs" of nested aliases (9 aliases of 9 aliases ...) is refused as it grows.
MAX_NODES = 50_000
#: Most points one sweep expands to: each is validated, simulated and saved as a folder;
#: past ten thousand a sweep is a batch job to split, not one command.
MAX_POINTS = 10_000
#: A scenario file is kilobytes; an empirical distribution of the largest allowed size
#: (:data:`sim.spec.schema.MAX_EMPIRICAL_SAMPLES`) is a few hundred.  A bigger file is
#: refused by its size before it is parsed (the YAML parser reads some 10,000 to 60,000
#: values a second).
MAX_FILE_BYTES = 1024 * 1024


def read_text_file(path: str | Path, what: str) -> str:
    """The UTF-8 text of a regular file, or a one-line error (binary, unreadable, not a file)."""
    return read_input_text(path, what, ConfigError, MAX_FILE_BYTES)


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and nesting deeper than :data:`MAX_DEPTH`."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            alias = self.check_event(yaml.AliasEvent)
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            sizes: dict[int, int] = self.__dict__.setdefault("_sizes", {})
            if alias:  # an alias is a copy of its anchor once constructed: count it again
                size = sizes.get(id(node), 1)
            else:
                size = 1
                if isinstance(node, yaml.SequenceNode):
                    size += sum(sizes.get(id(n), 1) for n in node.value)
                elif isinstance(node, yaml.MappingNode):
                    size += sum(sizes.get(id(k), 1) + sizes.get(id(v), 1) for k, v in node.value)
                sizes[id(node)] = size
            self._expanded = getattr(self, "_expanded", 0) + (size if alias else 1)
            if self._expanded > MAX_NODES:
                raise yaml.YAMLError(
                    f"line {mark.line + 1}: more than {MAX_NODES:,} values (aliases expanded); "
                    "a scenario holds far fewer"
                )
            return node
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if dup:
                    raise yaml.YAMLError(
                        f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                        f"(first on line {seen[key] + 1}); give each key once"
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML safely: no tags that build objects, no duplicate keys, bounded nesting, at
    most :data:`MAX_NODES` values (aliases expanded; a text with more separators than that is
    refused before parsing)."""
    separators = text.count(",") + text.count("\n")
    if separators > MAX_NODES:
        raise ConfigError(f"{where}: {separators:,} values or lines, more than the {MAX_NODES:,} a scenario may hold")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # _StrictLoader subclasses SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a scenario") from None


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a scenario file, resolving ``extends:`` chains."""
    p = Path(path)
    what = "extends: base" if _seen else "scenario file"
    text = read_text_file(p, what)
    rp = p.resolve()
    if rp in _seen:
        raise ConfigError(f"extends: cycle through {p.name}")
    data = load_yaml_text(text, p.name)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p.name}: a scenario must be a mapping of sections")
    _relative_to(data, p.parent)
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError("extends: must be a path to another scenario file")
        parent = read_yaml(p.parent / base, (*_seen, rp))
        data = _deep_merge(parent, data)
    return data


def _relative_to(data: dict, folder: Path) -> None:
    """The files a scenario file names (calibrations, a trace, a step table) are relative to that
    file, like ``extends:``: made absolute in place."""
    wl = data.get("workload")
    places = [
        (data.get("retrieval"), "calibration"),
        (data.get("routing"), "calibration"),
        (wl.get("trace") if isinstance(wl, dict) else None, "path"),
        (data.get("llm"), "step_table"),
    ]
    for sec, key in places:
        if isinstance(sec, dict) and isinstance(sec.get(key), str):
            named = Path(sec[key]).expanduser()
            if not named.is_absolute():
                sec[key] = str((folder / named).resolve())


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def parse_value(text: str) -> Any:
    """A ``--set`` or ``--grid`` value read as YAML: ``2`` an int, ``0.5`` a float,
    ``h200`` a string, ``[1, 2]`` a list; ``1e9`` a number (YAML 1.1 would read a string;
    an integral one is an int).  Values YAML would build as bytes or dates are refused."""
    t = text.strip()
    if _NUMBER.match(t) and not re.match(r"^[-+]?\d+$", t):
        x = float(t)
        return int(x) if x.is_integer() and "." not in t and abs(x) < 2**63 else x
    try:
        v = load_yaml_text(t, "value")
    except ConfigError:
        return text
    _check_plain(v, text)
    return v


def _check_plain(v: Any, text: str) -> None:
    if isinstance(v, (bytes, datetime.date)):
        raise ConfigError(f"value {text!r}: YAML reads it as {type(v).__name__}; quote it to mean a string")
    if isinstance(v, dict):
        for x in v.values():
            _check_plain(x, text)
    elif isinstance(v, list):
        for x in v:
            _check_plain(x, text)


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


def _validate(data: dict) -> Scenario:
    """:func:`validate_scenario`, plus: a YAML boolean is never taken as a number
    (pydantic reads ``users: true`` as 1)."""
    scn = validate_scenario(data)
    _no_bool_numbers(data, scn, "")
    return scn


def _no_bool_numbers(raw: Any, model: Any, where: str) -> None:
    if isinstance(raw, bool):
        if model is not None and not isinstance(model, bool) and isinstance(model, (int, float)):
            raise ConfigError(f"{where}: {str(raw).lower()} is a boolean; give a number")
        return
    if isinstance(raw, dict):
        for k, v in raw.items():
            if not isinstance(k, str):
                continue
            sub = model.get(k) if isinstance(model, dict) else getattr(model, k, None)
            _no_bool_numbers(v, sub, f"{where}.{k}" if where else k)
    elif isinstance(raw, list) and isinstance(model, (list, tuple)):
        for i, (v, m) in enumerate(zip(raw, model)):
            _no_bool_numbers(v, m, f"{where}[{i}]")


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
    return _validate(data)


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

    ``grid`` (from ``--grid``) replaces a swept key of the same name, and an
    override (``--set``) of a swept key pins it: the key leaves the sweep, and
    ``expect:`` entries keep only the points that agree with the pinned value.
    Each point's scenario has its sweep section emptied and the swept values set.
    """
    if isinstance(source, Scenario):
        source = source.model_dump(mode="json")
    base = apply_overrides(load_raw(source), overrides)
    sweep = dict(base.pop("sweep", None) or {})
    if not isinstance(sweep, dict):
        raise ConfigError("sweep: expected a mapping of dotted key -> list of values")
    for key, value in (overrides or {}).items():
        if key in sweep:
            del sweep[key]
            if "expect" in base:
                base["expect"] = _pin_expectations(base["expect"], key, value)
    sweep.update(grid or {})
    _check_mode_keys(base, overrides or {}, sweep)
    # Validate the base first so an error names the real key, not a sweep point.
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.{key}: expected a non-empty list of values")
    count = math.prod(len(v) for v in sweep.values())
    if count > MAX_POINTS:
        sizes = " x ".join(f"{len(v):,} {k}" for k, v in sweep.items())
        raise ConfigError(
            f"sweep: {sizes} is {count:,} points, more than the {MAX_POINTS:,} one sweep runs; "
            "sweep fewer values (or split the sweep)"
        )
    _validate({**base, "sweep": sweep})
    keys = list(sweep)
    points: list[Point] = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        params = dict(zip(keys, combo))
        data = apply_overrides(base, params)
        try:
            scn = _validate(data)
        except ConfigError as e:
            where = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ConfigError(f"{e} (sweep point {where})") from None
        points.append(Point(params, scn))
    return points


def _pin_expectations(expect: Any, key: str, value: Any) -> Any:
    """``expect:`` after ``key`` is pinned to ``value``: entries about another value go,
    and the key leaves the rest (it is no longer swept)."""
    if not isinstance(expect, list):
        return expect
    out = []
    for e in expect:
        params = dict(e.get("params") or {}) if isinstance(e, dict) else None
        if params is None or key not in params:
            out.append(e)
        elif params.pop(key) == value:
            out.append({**e, "params": params})
    return out


_MODE_KEYS = {"workload.users": "closed", "workload.think_s": "closed", "workload.rate_per_s": "open"}


def _check_mode_keys(base: dict, overrides: Mapping[str, Any], sweep: Mapping[str, Any]) -> None:
    """An override or sweep of a key the workload's mode ignores is an error, not a no-op."""
    workload = base.get("workload")
    mode = workload.get("mode", "closed") if isinstance(workload, dict) else "closed"
    modes = sweep.get("workload.mode") or [mode]
    for key in [*overrides, *sweep]:
        need = _MODE_KEYS.get(key)
        if need is not None and need not in modes:
            other = "workload.rate_per_s" if need == "closed" else "workload.users"
            raise ConfigError(
                f"{key}: has no effect on a workload in {mode} mode; set {other} instead, or workload.mode={need}"
            )


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
