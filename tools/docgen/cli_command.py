"""The click command behind the typer app, for mkdocs-click (the CLI reference page)."""

from __future__ import annotations

import typer

from sim.cli import app

command = typer.main.get_command(app)
