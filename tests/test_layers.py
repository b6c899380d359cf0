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
``spec``.  Imports under ``if TYPE_CHECKING:`` are annotations and exempt.
A function-local import must say why it is deferred (a comment on it or just
above it): only heavy libraries may wait.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported sim module, line, inside a function) for every import of the file."""
    tree = ast.parse(path.read_text())
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking(child):
                continue
            func = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_func) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                out.append((child.module, child.lineno, in_func))
                if child.module == "sim" or child.module.startswith("sim."):
                    out.extend((f"{child.module}.{a.name}", child.lineno, in_func) for a in child.names)
            visit(child, func)

    visit(tree, False)
    return out


def sim_modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The sim module ``name`` refers to (``from sim.x import y`` may name a function y)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def test_no_relative_imports() -> None:
    for mod, path in sim_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{mod}:{node.lineno}: relative import"


def test_every_import_points_down() -> None:
    known = sim_modules()
    bad = []
    for mod, path in known.items():
        me, rank = layer(mod)
        for name, line, _ in imports(path):
            target = resolve(name, known) if name.startswith("sim") else None
            if target is None or target == mod or target == "sim":
                continue
            them, their_rank = layer(target)
            if them == "calibrate" and me not in ("calibrate", "cli", "api"):
                bad.append(f"{mod}:{line} imports the measurement harness {target}")
            elif me == "calibrate" and their_rank > RANK["spec"] and them != "calibrate":
                bad.append(f"{mod}:{line}: calibrate imports {target} ({them})")
            elif their_rank > rank:
                bad.append(f"{mod}:{line} ({me}) imports {target} ({them}), a higher layer")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    known = sim_modules()
    graph = {m: set() for m in known}
    for mod, path in known.items():
        for name, _, in_func in imports(path):
            target = resolve(name, known) if name.startswith("sim") else None
            if target and target != mod and not in_func:
                graph[mod].add(target)
    state: dict[str, int] = {}

    def dfs(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(n) :], m, n]))
            if n not in state:
                dfs(n, [*stack, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            dfs(m, [])


def test_function_local_imports_say_why() -> None:
    bad = []
    for mod, path in sim_modules().items():
        lines = path.read_text().splitlines()
        for name, line, in_func in imports(path):
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


def test_layering_test_would_catch_an_upward_import(tmp_path: Path) -> None:
    """The check is not vacuous: an upward import in a physics module is reported."""
    fake = tmp_path / "gpu.py"
    fake.write_text("from sim.engine.pipeline import Model\n")
    assert imports(fake) == [("sim.engine.pipeline", 1, False), ("sim.engine.pipeline.Model", 1, False)]
    assert layer("sim.physics.gpu")[1] < layer("sim.engine.pipeline")[1]


def test_version_is_the_one_pyproject_declares() -> None:
    import tomllib

    from sim.version import __version__

    pyproject = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__
