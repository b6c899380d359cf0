"""No function in ``sim/`` or ``tools/`` runs over 60 lines, its signature aside (a CLI command's
option list is its signature).

The functions still over are listed with their present length: a listed one may shrink, not grow,
and leaves the list once it is 60 lines or fewer; a new long function fails the test.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60

#: "path:function" -> body lines now. This list only shrinks.
STILL_LONG: dict[str, int] = {}


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement of the body (its docstring included) to the function's end."""
    assert fn.end_lineno is not None
    return fn.end_lineno - fn.body[0].lineno + 1


def lengths(files: list[Path], root: Path) -> dict[str, int]:
    """``"path:function"`` -> body lines, for every function (methods and nested ones too) over LIMIT."""
    out: dict[str, int] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > LIMIT:
                key = f"{path.relative_to(root).as_posix()}:{node.name}"
                out[key] = max(out.get(key, 0), body_lines(node))
    return out


def problems(found: dict[str, int], allowed: dict[str, int]) -> list[str]:
    """What breaks the rule: a new long function, a listed one grown, a listed one now short."""
    bad = [f"{k}: {n} lines (over {LIMIT}): split it" for k, n in found.items() if k not in allowed]
    bad += [
        f"{k}: {n} lines, listed at {allowed[k]}: it may only shrink" for k, n in found.items() if n > allowed.get(k, n)
    ]
    bad += [f"{k}: now {LIMIT} lines or fewer (or gone): take it off STILL_LONG" for k in allowed if k not in found]
    return sorted(bad)


def test_no_function_is_over_sixty_lines_but_those_listed() -> None:
    files = sorted(p for d in ("sim", "tools") for p in (ROOT / d).rglob("*.py"))
    assert not problems(lengths(files, ROOT), STILL_LONG), "\n".join(problems(lengths(files, ROOT), STILL_LONG))


def test_the_check_catches_a_long_function_a_grown_one_and_a_stale_entry(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n    '''doc'''\n{body}\n")
    found = lengths([tmp_path / "m.py"], tmp_path)
    assert found == {"m.py:long": LIMIT + 1}
    assert problems(found, {}) == [f"m.py:long: {LIMIT + 1} lines (over {LIMIT}): split it"]
    assert problems(found, {"m.py:long": LIMIT + 1}) == []
    assert problems(found, {"m.py:long": LIMIT}) == [
        f"m.py:long: {LIMIT + 1} lines, listed at {LIMIT}: it may only shrink"
    ]
    assert problems(found, {"m.py:long": 70, "m.py:short": 70}) == [
        f"m.py:short: now {LIMIT} lines or fewer (or gone): take it off STILL_LONG"
    ]
