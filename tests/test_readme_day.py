"""The README's "A day with capsim" runs as written: every `capsim` line of its first shell
block is executed, in order, in one folder.

Only sizes change, so the suite stays quick: your embeddings are the 4,500 real MiniLM
vectors shipped for tests (so --docs 20000,50000 becomes 2000,4000), simulations run
20 s with 2 replications, capacity searches take --low/--high bounds, and a Dask address
(`tcp://dask:8786`, a placeholder for your cluster) becomes local-dask.  A command may
answer 0, 1 (an SLA fails) or 3 (inconclusive), never 2 (bad input) or more.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--set", "run.duration_s=20", "--set", "run.warmup_s=4", "--set", "run.replications=2"]


def day_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A day with capsim") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README's day section has no sh block"
    joined = block.group(1).replace("\\\n", " ")
    cmds = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("capsim "):
            cmds.append(shlex.split(line)[1:])
    return cmds


def scaled(args: list[str], folder: Path) -> list[str]:
    out = [a.replace("our_embeddings.npy", str(folder / "our_embeddings.npy")) for a in args]
    out = ["2000,4000" if a == "20000,50000" else "local-dask" if a.startswith("tcp://") else a for a in out]
    if out[0] in ("run", "sweep", "capacity"):
        out += SHORT
    if out[0] == "capacity" and "--low" not in out:
        out += ["--low", "1", "--high", "2"] if "llm.replicas" in out else ["--low", "400", "--high", "1200"]
    return out


def test_readme_day_section_has_every_step() -> None:
    names = [c[0] for c in day_commands()]
    for step in ("calibrate", "estimate", "run", "capacity", "sweep", "report"):
        assert step in names


def test_readme_day_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / "tests/data/minilm_l6_v2_4500x384_f16.npy", tmp_path / "our_embeddings.npy")
    shutil.copytree(ROOT / "scenarios", tmp_path / "scenarios")
    monkeypatch.chdir(tmp_path)
    for args in day_commands():
        r = invoke(*scaled(args, tmp_path))
        assert r.exit_code in (0, 1, 3), f"capsim {' '.join(args)} -> {r.exit_code}\n{r.output[-2000:]}"
