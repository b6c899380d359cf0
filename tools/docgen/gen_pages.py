"""Run by mkdocs-gen-files during ``mkdocs build``: writes the generated pages into the build.

Nothing it writes is committed; the pages are rebuilt from the code and the committed result
files every time the site is built.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

from tools.docgen import performance, scenario_ref, validation

ROOT = Path(__file__).resolve().parents[2]

for path, render in (
    ("reference/scenario.md", scenario_ref.render),
    ("validation.md", validation.render),
    ("performance.md", performance.render),
):
    with mkdocs_gen_files.open(path, "w") as fh:
        fh.write(render())
    mkdocs_gen_files.set_edit_path(path, "tools/docgen/gen_pages.py")

# The figures live beside the notebooks that draw them; the site takes them from there.
for png in sorted((ROOT / "notebooks" / "figures").glob("*.png")):
    with mkdocs_gen_files.open(f"assets/{png.name}", "wb") as fh:
        fh.write(png.read_bytes())
