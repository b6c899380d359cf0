"""The ``capsim`` command: :data:`app` with one module per command group.

Each module registers its commands on the app when imported: ``main`` (run,
schema), ``estimate``, ``sweep`` (sweep, capacity, report), ``plan``, ``autoscale``, ``calibrate``
(retrieval, gpu).  They import only typer and rich at the top, so this is
quick; the simulator loads inside the command that needs it.
"""

from __future__ import annotations

import importlib

from sim.cli.app import app

# Imported for their registrations, in the order `capsim --help` lists them.
for _name in ("main", "estimate", "sweep", "plan", "autoscale", "calibrate", "verify", "validate"):
    importlib.import_module(f"sim.cli.{_name}")

__all__ = ["app", "main"]


def main() -> None:
    app()
