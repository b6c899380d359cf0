"""``capsim plan``: the cheapest deployment of a scenario's ``plan:`` space whose SLAs pass.

Parse, call :func:`sim.run.plan.plan`, print and save; the search lives there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sim.cli import runs
from sim.cli.app import app, err_console, stdout_console, user_errors
from sim.errors import CapsimError


@app.command()
@user_errors
def plan(
    scenario: Path = typer.Argument(..., help="Scenario YAML file with a plan: section and an sla: section."),
    set_: list[str] = typer.Option([], "--set", help="Override a dotted key: --set workload.users=2000"),
    out: Path = typer.Option(Path("plan"), help="Folder for plan.json, pareto.png and tornado.png."),
    screen_replications: int = typer.Option(2, help="Replications of each screening simulation (and the knobs)."),
    replications: Optional[int] = typer.Option(None, help="Replications that confirm (default run.replications)."),
    seed: Optional[int] = typer.Option(None, help="Override run.seed (every candidate shares it)."),
    jobs: Optional[int] = typer.Option(None, help="Parallel processes (default: all cores) or local-dask workers."),
    scheduler: Optional[str] = typer.Option(None, help=runs.SCHEDULER_HELP),
    band: float = typer.Option(0.10, help="Runner-ups: configurations within this fraction of the winner's cost."),
    margin: float = typer.Option(
        0.10, help="Prune only when the analytic lower bound exceeds an SLA threshold by more than this fraction."
    ),
    max_screen: int = typer.Option(40, help="Most candidates screened by simulation."),
    knobs: bool = typer.Option(True, "--knobs/--no-knobs", help="Move each planned key one step from the winner."),
    json_: bool = typer.Option(False, "--json", help="Print the plan document as JSON."),
) -> None:
    """Find the cheapest configuration of the scenario's plan: space whose every SLA passes.

    Prunes analytically, screens in cost order with few replications, confirms the winner and its
    neighbours with full replications; prints the winner's cost and P95 interval, the Pareto front,
    the runner-ups within --band of its cost and the knob table, and writes OUT/plan.json,
    OUT/pareto.png and OUT/tornado.png.

    Exit codes: 0 a configuration passes, 1 none does, 2 bad input, 3 none passes but some were
    inconclusive, 4 internal error, 5 a worker died, 6 an I/O failure, 130 Ctrl-C.
    """
    # deferred: the simulator loads pandas, scipy and pydantic
    from sim.run.plan import plan as find_plan

    runs.check_counts(replications, jobs)
    if max_screen < 1:
        raise CapsimError(f"--max-screen: must be >= 1, got {max_screen}")
    runs.check_out_folder(out)
    ov = runs.checked_overrides(set_)
    con = err_console if json_ else stdout_console()

    def stage(name: str, n: int) -> None:
        con.print(f"{name}: {n:,} configurations", markup=False, highlight=False)

    with runs.pool(scheduler, jobs) as ex:
        res = find_plan(
            scenario,
            ov,
            screen_replications=screen_replications,
            replications=replications,
            seed=seed,
            executor=ex,
            band=band,
            margin=margin,
            max_screen=max_screen,
            knobs=knobs,
            on_stage=stage,
        )
    from sim.present.plan_figures import write_plan_figures  # deferred: matplotlib
    from sim.present.plan_tables import print_plan

    runs.publish(res, out, "plan.json", write_plan_figures, print_plan, json_)
    raise typer.Exit(res.exit_code)
