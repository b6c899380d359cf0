"""The notebooks run, small, on every test run, so they never rot.

They import ``sim`` as an installed package (no path tricks) and ship executed at full scale,
with their figures; the copy run here is a fresh small-scale execution, not the shipped one.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["01_users_sweep.ipynb", "02_what_if.ipynb", "03_plan.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_small(path, monkeypatch):
    monkeypatch.setenv("CAPSIM_NOTEBOOK_SCALE", "small")
    # The kernel imports `sim` as an installed package; put this checkout first so a venv whose
    # editable install points at another checkout (a shared venv, a git worktree) tests this code.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= (2 if path.stem.startswith("01") else 1), "the notebook should draw its figures"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_ships_executed_with_figures(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "ship the notebook executed (make notebooks)"
    text = "".join(o.get("text", "") for c in code for o in c.get("outputs", []))
    assert "at scale 'full'" in text, "ship the full-scale run"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", []))
