"""``capsim autoscale``: an autoscaled fleet against static ones, window by window.

Parse, call :func:`sim.run.autoscale.compare`, print and save; the runs live there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sim.cli import runs
from sim.cli.app import app, err_console, user_errors
from sim.errors import CapsimError


@app.command()
@user_errors
def autoscale(
    scenario: Path = typer.Argument(..., help="Scenario YAML file with an llm.autoscale section and an SLA."),
    set_: list[str] = typer.Option([], "--set", help="Override a dotted key: --set llm.autoscale.max_replicas=4"),
    static: Optional[str] = typer.Option(
        None, help="Static replica counts to compare, e.g. 1,2,3 (default: min_replicas to max_replicas)."
    ),
    out: Path = typer.Option(Path("autoscale"), help="Folder for autoscale.json and autoscale.png."),
    replications: Optional[int] = typer.Option(None, help="Replications per fleet (default run.replications)."),
    seed: Optional[int] = typer.Option(None, help="Override run.seed (every fleet shares it)."),
    jobs: Optional[int] = typer.Option(None, help="Parallel processes (default: all cores) or local-dask workers."),
    scheduler: Optional[str] = typer.Option(None, help=runs.SCHEDULER_HELP),
    json_: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """Run the scenario's autoscaled fleet beside static fleets (same seed: the same shoppers).

    Prints per fleet the SLA verdict, the SLA windows that fail, the worst window's P95, GPU-hours
    and cost, the cheapest static fleet that passes and what the autoscaler saves against it,
    and the autoscaled fleet's P95 and replicas per window; writes OUT/autoscale.json and
    OUT/autoscale.png.

    Exit codes: 0 the autoscaled fleet passes, 1 it fails, 2 bad input, 3 inconclusive,
    4 internal error, 5 a worker died, 6 an I/O failure, 130 Ctrl-C.
    """
    # deferred: the simulator loads pandas, scipy and pydantic
    from sim.run.autoscale import compare

    runs.check_counts(replications, jobs)
    counts: list[int] | None = None
    if static is not None:
        try:
            counts = [int(x) for x in static.split(",") if x.strip()]
        except ValueError:
            raise CapsimError(f"--static {static!r}: expected replica counts such as 1,2,3") from None
    runs.check_out_folder(out)
    ov = runs.checked_overrides(set_)
    with runs.pool(scheduler, jobs) as ex:
        res = compare(scenario, ov, static=counts, replications=replications, seed=seed, executor=ex)
    from sim.present.autoscale_figures import write_autoscale_figure  # deferred: matplotlib
    from sim.present.autoscale_tables import print_comparison

    runs.publish(res, out, "autoscale.json", write_autoscale_figure, print_comparison, json_)
    if res.autoscaled.verdict != "pass":
        err_console.print(f"autoscaled fleet: {res.autoscaled.verdict}", markup=False, highlight=False)
    raise typer.Exit(res.exit_code)
