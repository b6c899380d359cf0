"""The house is one-way: every import in ``sim`` points down the layer list.

Layers, lowest first (see docs/development.md)::

    leaves    errors, rng, files, distributions, registry, version
    indexes   retrieval index kinds (knobs, laws, build and search)
    physics   pure formulas: GPU step cost, queueing, retrieval profiles
    spec      schema, scenario loading, catalogs, metric registry, keys
    calibrate real measurements -> calibration files (only the CLI imports it)
    engine    the SimPy model
    analysis  statistics, summaries, verdicts, estimate, dollars
    run       executors, the replication loop, the point store, capacity
    verify    capsim verify: a real load generator and the measured-vs-predicted comparison
    present   tables, plots, HTML
    cli       the capsim command
    api       sim/__init__, sim.sweep, sim.testing, sim.__main__

A module may import its own layer or any layer below; nothing imports
``calibrate`` but the CLI and the API; ``calibrate`` imports nothing above
``spec``.  Imports under ``if TYPE_CHECKING:`` count as well: a lower layer
does not name a higher one's type (physics reads the replica's configuration
through :mod:`sim.physics.replica_config`), and no import cycle hides there.
A function-local import must say why it is deferred (a comment on it or just
above it), and must defer something: a module the file has already loaded,
itself or through its top-level imports, is imported at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "sim"
LEAVES = {"sim.errors", "sim.rng", "sim.files", "sim.distributions", "sim.registry", "sim.version"}
RANK = {
    "indexes": 1,
    "physics": 2,
    "spec": 3,
    "calibrate": 3.5,
    "engine": 4,
    "analysis": 5,
    "run": 6,
    "verify": 6.5,
    "present": 7,
    "cli": 8,
}
API = {"sim", "sim.sweep", "sim.testing", "sim.__main__"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(mod: str) -> tuple[str, float]:
    if mod in API:
        return "api", 9
    top = ".".join(mod.split(".")[:2])
    if top in LEAVES:
        return "leaves", 0
    name = mod.split(".")[1]
    assert name in RANK, f"{mod}: no layer for sim.{name}; add it to RANK and the map in docs/development.md"
    return name, RANK[name]


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def sim_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


KNOWN = sim_modules()


def _targets(node: ast.ImportFrom) -> list[str]:
    """The modules ``from M import a, b`` depends on: each name that is a module of its own,
    and ``M`` for the other names (or where ``M`` is a package with an ``__init__``).  ``from
    sim import distributions`` is no edge to ``sim``: every ``sim.*`` import runs its
    ``__init__`` anyway; ``from sim import x`` with x no module is one (the API layer)."""
    assert node.module is not None
    mod = node.module
    if not (mod == "sim" or mod.startswith("sim.")):
        return [mod]
    subs = [f"{mod}.{a.name}" for a in node.names]
    out = [t for t in subs if t in KNOWN]
    if len(out) < len(subs) or (mod in KNOWN and mod != "sim"):
        out.append(mod)
    return out


def imports(path: Path) -> list[tuple[str, int, bool, bool]]:
    """(imported module, line, inside a function, under ``if TYPE_CHECKING:``) for every import of
    the file; a name imported from a module counts as that module."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, int, bool, bool]] = []

    def visit(node: ast.AST, in_func: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            func = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            typed = typing_only or _type_checking(child)
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_func, typed) for a in child.names)
            elif (
                isinstance(child, ast.ImportFrom) and child.module and child.level == 0 and child.module != "__future__"
            ):
                out.extend((t, child.lineno, in_func, typed) for t in _targets(child))
            visit(child, func, typed)

    visit(tree, False, False)
    return out


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The sim module ``name`` is, or None for a library."""
    if not (name == "sim" or name.startswith("sim.")):
        return None
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_no_relative_imports() -> None:
    for mod, path in sim_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{mod}:{node.lineno}: relative import"


#: Imports the checks below let stand, each with why: (importer, imported) -> reason.
LEFT_STANDING = {
    ("sim.verify.stack.vllm_checks", "sim.spec.scenario"): "prefix_check imports two of its names in the function",
}


def edges() -> list[tuple[str, str, int, bool, bool]]:
    """(module, sim module it imports, line, inside a function, under TYPE_CHECKING)."""
    out = []
    for mod, path in KNOWN.items():
        for name, line, in_func, typed in imports(path):
            target = resolve(name, KNOWN)
            if target is not None and target != mod:
                out.append((mod, target, line, in_func, typed))
    return out


def test_every_import_points_down() -> None:
    bad = []
    for mod, target, line, _, typed in edges():
        me, rank = layer(mod)
        them, their_rank = layer(target)
        what = "names" if typed else "imports"
        if (mod, target) in LEFT_STANDING:
            continue
        if them == "calibrate" and me not in ("calibrate", "cli", "api"):
            bad.append(f"{mod}:{line} {what} the measurement harness {target}")
        elif me == "calibrate" and their_rank > RANK["spec"] and them != "calibrate":
            bad.append(f"{mod}:{line}: calibrate {what} {target} ({them})")
        elif their_rank > rank:
            bad.append(f"{mod}:{line} ({me}) {what} {target} ({them}), a higher layer")
    assert not bad, "\n".join(bad)


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}

    def dfs(path: list[str]) -> list[str] | None:
        m = path[-1]
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := dfs([*path, n])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := dfs([m])):
            return found
    return None


def test_no_import_cycles() -> None:
    """Module-level imports, those under ``if TYPE_CHECKING:`` included, form no cycle."""
    graph: dict[str, set[str]] = {m: set() for m in KNOWN}
    for mod, target, _, in_func, _ in edges():
        if not in_func and (mod, target) not in LEFT_STANDING:
            graph[mod].add(target)
    found = cycle(graph)
    assert found is None, "import cycle: " + " -> ".join(found or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_what_is_left_standing_is_still_there() -> None:
    """An entry of LEFT_STANDING whose import is gone goes too."""
    have = {(mod, target) for mod, target, *_ in edges()}
    assert set(LEFT_STANDING) <= have, set(LEFT_STANDING) - have


def test_function_local_imports_say_why() -> None:
    bad = []
    for mod, path in KNOWN.items():
        lines = path.read_text().splitlines()
        for name, line, in_func, _ in imports(path):
            if not in_func:
                continue
            i = line - 1
            block = [lines[i]]
            while i > 0 and lines[i - 1].strip() and not lines[i - 1].rstrip().endswith(":"):
                i -= 1
                block.append(lines[i])  # the import block and the comment above it
            if not any("#" in b for b in block):
                bad.append(f"{mod}:{line}: function-local import of {name} without a comment saying why")
    assert not bad, "\n".join(sorted(set(bad)))


def loaded_with(mod: str, seen: set[str] | None = None) -> set[str]:
    """What importing ``mod`` loads, as far as its files say: its packages' ``__init__``, its
    module-level imports (sim modules and libraries, by the name imported) and theirs."""
    seen = set() if seen is None else seen
    if mod in seen:
        return set()
    seen.add(mod)
    out: set[str] = set()
    parts = mod.split(".")
    for i in range(1, len(parts)):
        pkg = ".".join(parts[:i])
        if pkg in KNOWN:
            out |= {pkg} | loaded_with(pkg, seen)
    for name, _, in_func, typed in imports(KNOWN[mod]):
        if in_func or typed:
            continue
        target = resolve(name, KNOWN) or name
        out.add(target)
        if target in KNOWN:
            out |= loaded_with(target, seen)
    return out


def test_function_local_imports_defer_something() -> None:
    """A function-local import of what the module's own top-level imports have already loaded
    saves nothing: it goes to the top of the file."""
    bad = []
    for mod, path in KNOWN.items():
        local: dict[int, set[str]] = {}  # line -> what the import statement there loads
        for name, line, in_func, typed in imports(path):
            if in_func and not typed:
                local.setdefault(line, set()).add(resolve(name, KNOWN) or name)
        if not local:
            continue
        loaded = loaded_with(mod)
        for line, targets in local.items():
            if targets <= loaded and not {(mod, t) for t in targets} & set(LEFT_STANDING):
                names = ", ".join(sorted(targets))
                bad.append(f"{mod}:{line}: {names} loaded with the module already; import at the top")
    assert not bad, "\n".join(sorted(set(bad)))


def test_layering_test_would_catch_an_upward_import(tmp_path: Path) -> None:
    """The checks are not vacuous: an upward import in a physics module is reported, under
    TYPE_CHECKING too; a name from the package ``sim`` is an import of the API layer."""
    fake = tmp_path / "gpu.py"
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "from sim.engine.pipeline import Model\n"
        "from sim import __version__, distributions\n"
        "if TYPE_CHECKING:\n"
        "    from sim.spec.schema import LLMConfig\n"
        "def f():\n"
        "    import numpy  # deferred\n"
    )
    assert imports(fake) == [
        ("typing", 1, False, False),
        ("sim.engine.pipeline", 2, False, False),
        ("sim.distributions", 3, False, False),
        ("sim", 3, False, False),
        ("sim.spec.schema", 5, False, True),
        ("numpy", 7, True, False),
    ]
    assert layer("sim.physics.gpu")[1] < layer("sim.engine.pipeline")[1] < layer("sim")[1]
    assert layer("sim.physics.gpu")[1] < layer("sim.spec.schema")[1]


def test_version_is_the_one_pyproject_declares() -> None:
    import tomllib

    from sim.version import __version__

    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__
