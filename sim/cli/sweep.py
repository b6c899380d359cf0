"""``capsim sweep``, ``capsim capacity`` and ``capsim report``: the capacity planner's workbench.

No model logic: parse flags, call :mod:`sim.run.sweep` / :mod:`sim.present.report`, print.
Exit codes as ``capsim run`` (0 pass, 1 an SLA fails or no value meets it,
2 bad input, 3 inconclusive, 4 internal error), plus 5 when a worker died, 6 on an I/O failure and
130 on Ctrl-C; in all three cases every finished point is saved and the
same command resumes.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from sim.cli import runs
from sim.cli.app import MAX_MEMORY_HELP, app, err_console, progress_bar, stdout_console, user_errors
from sim.errors import CapsimError
from sim.files import to_json


def _money(x: Optional[float], digits: int = 3) -> str:
    return "-" if x is None else f"${x:,.{digits}f}"


def _ms(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _interval(ci: list) -> str:
    lo, hi = ci
    return "" if lo is None or hi is None else f" [{lo:,.0f}, {hi:,.0f}]"


def cost_table(table, keys: list[str], ranked: bool) -> Table:
    t = Table(title="cost at the simulated throughput" + (" (passing points first, cheapest first)" if ranked else ""))
    for k in keys:
        t.add_column(k.split(".")[-1], justify="right")
    for col in ("answers/s", "$/hour", "$/1000 answers", "$/M output tokens", "SLA"):
        t.add_column(col, justify="right")
    for _, r in table.iterrows():
        mark = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "inconclusive": "[yellow]?[/]", "none": "-"}[
            r["verdict"]
        ]
        t.add_row(
            *[str(r[k]) for k in keys],
            f"{r['throughput_per_s']:.1f}",
            _money(r["cost_per_hour"], 2),
            _money(r["cost_per_1000_answers"]),
            _money(r["cost_per_million_output_tokens"], 2),
            mark,
        )
    return t


@app.command()
@user_errors
def sweep(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    grid: list[str] = typer.Option(
        [],
        "--grid",
        help="Swept key and values: --grid workload.users=50,100,200 (values read as YAML; repeat for more keys).",
    ),
    out: Optional[Path] = typer.Option(
        None, help="Save every point here as it finishes; re-running the same command computes only the missing points."
    ),
    scheduler: Optional[str] = typer.Option(None, help=runs.SCHEDULER_HELP),
    set_: list[str] = typer.Option([], "--set", help="Override a dotted key: --set llm.replicas=2"),
    jobs: Optional[int] = typer.Option(None, help="Parallel processes (default: all cores) or local-dask workers."),
    replications: Optional[int] = typer.Option(None, help="Override run.replications."),
    seed: Optional[int] = typer.Option(None, help="Override run.seed."),
    rank: Optional[str] = typer.Option(
        None, help="'cost': list points that pass the SLA first, cheapest answer first (needs a cost: section)."
    ),
    json_: bool = typer.Option(False, "--json", help="Print only the summary JSON (as capsim run --json)."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
) -> None:
    """Run every combination of a grid (and the scenario's sweep:) x replications.

    Exit codes: 0 pass, 1 an SLA fails, 2 bad input, 3 inconclusive, 4 internal error, 5 a worker died,
    6 an I/O failure, 130 Ctrl-C.
    """
    # deferred: the simulator loads pydantic and numpy; `capsim sweep --help` needs neither.
    # pandas and scipy (the tables below) load after the workers start, beside them.
    from sim.run.bounds import check_bounds
    from sim.run.folder import locked, prepare_out
    from sim.run.loop import SweepInterrupted, run_sweep
    from sim.spec.keys import parse_grid
    from sim.spec.scenario import expand, run_overrides

    runs.check_counts(replications, jobs)
    if rank not in (None, "cost"):
        raise CapsimError(f"--rank {rank!r}: expected cost")
    g = parse_grid(grid)
    ov = run_overrides(runs.checked_overrides(set_), seed, replications)
    points = expand(scenario, ov, g or None)
    if rank == "cost" and points[0].scenario.cost is None:
        raise CapsimError(
            "--rank cost: the scenario has no cost: section "
            "(e.g. --set cost.gpu_per_hour=2.5 --set cost.cpu_worker_per_hour=0.05)"
        )
    check_bounds(points, max_memory, jobs)
    prepare_out(out, "sweep")
    ex = runs.executor(scheduler, jobs)
    try:
        with progress_bar(f"sweeping {len(points)} points") as bar:
            if out is not None:
                with locked(out):
                    result = run_sweep(points, out, executor=ex, progress=bar)
            else:
                result = run_sweep(points, out, executor=ex, progress=bar)
    except SweepInterrupted as e:
        err_console.print(f"stopped: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    finally:
        runs.close(ex)
    _print_sweep(result, [k for k in points[0].params], rank, json_, out)
    raise typer.Exit(result.exit_code)


def _print_sweep(result: Any, keys: list[str], rank: Optional[str], json_: bool, out: Optional[Path]) -> None:
    """What was computed and reused (stderr), then the summary JSON or the tables (ranked by cost with --rank)."""
    n = len({p.id for p in result.points})
    where = f" (saved in {out})" if out is not None else ""
    err_console.print(
        f"computed {result.computed} of {n} points, reused {result.reused}{where}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if json_:
        sys.stdout.write(to_json(result.summary) + "\n")
    else:
        from sim.analysis.dollars import rank_by_cost  # deferred: pandas, loaded once the workers run
        from sim.present.tables import print_run  # deferred: pandas, loaded once the workers run

        con = stdout_console()
        print_run(result, con)
        table = result.table()
        if table["cost_per_hour"].notna().any():
            if rank == "cost":
                table = rank_by_cost(table)
            con.print(cost_table(table, keys, rank == "cost"))


@app.command()
@user_errors
def capacity(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (with an sla: section)."),
    vary: str = typer.Option(..., "--vary", help="The integer or float key to search, e.g. workload.users."),
    low: Optional[float] = typer.Option(None, help="Lowest value to consider."),
    high: Optional[float] = typer.Option(None, help="Highest value to consider."),
    direction: Optional[str] = typer.Option(
        None,
        help="max: the largest value that meets every SLA (default for load: workload.users, "
        "workload.rate_per_s, token counts...); min: the smallest (default for resources: "
        "llm.replicas, retrieval.workers, cache.capacity, think time).",
    ),
    step: Optional[float] = typer.Option(
        None, help="Stop bisecting at this bracket width (default 1% of the value, at least 1 for integers)."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a dotted key: --set llm.replicas=2"),
    jobs: Optional[int] = typer.Option(None, help="Parallel processes (default: all cores)."),
    replications: Optional[int] = typer.Option(None, help="Override run.replications."),
    seed: Optional[int] = typer.Option(None, help="Override run.seed."),
    scheduler: Optional[str] = typer.Option(None, help=runs.SCHEDULER_HELP),
    out: Optional[Path] = typer.Option(None, help="Save (and reuse) every point tried, as capsim sweep --out."),
    json_: bool = typer.Option(False, "--json", help="Print {key, capacity, tried: [...]} as JSON."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help=MAX_MEMORY_HELP),
    band: bool = typer.Option(
        False,
        "--band",
        help="Search three times: with the LLM step costs of a fast, the central and a slow published engine "
        "(llm.efficiency published-fast / published / published-slow); the exit code is the central one's.",
    ),
    engines: bool = typer.Option(
        False,
        "--engines",
        help="Search once per serving-engine preset (llm.engine vllm / trtllm / sglang) and name each answer; "
        "the answer and exit code are the one that asks the most.",
    ),
) -> None:
    """Find the largest load (or smallest resource) at which every SLA passes.

    Exit codes: 0 a value meets every SLA, 1 none does, 2 bad input, 3 every value tried was inconclusive,
    4 internal error, 5 a worker died, 6 an I/O failure (disk full, read-only folder), 130 Ctrl-C.
    """
    # deferred: the simulator loads pandas, scipy and pydantic
    from sim.run.folder import locked, prepare_out
    from sim.run.loop import SweepInterrupted

    ov = _capacity_overrides(scenario, vary, set_, seed, replications, jobs, (low, high), max_memory)
    prepare_out(out, "sweep")
    con = stdout_console()

    ex = runs.executor(scheduler, jobs)
    hold = locked(out) if out is not None else contextlib.nullcontext()
    search = dict(
        low=low,
        high=high,
        direction=direction,
        step=step,
        replications=replications,
        seed=seed,
        executor=ex,
        out=out,
        on_try=_tried_printer(vary, err_console if json_ else con),
    )
    try:
        with hold:
            res, results = _search_capacity(scenario, vary, ov, band, engines, None if json_ else con, search)
    except SweepInterrupted as e:
        err_console.print(f"stopped: {e}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code) from None
    finally:
        runs.close(ex)
    _print_capacity(vary, res, results, json_, con)
    raise typer.Exit(res.exit_code)


def _capacity_overrides(
    scenario: Path,
    vary: str,
    set_: list[str],
    seed: Optional[int],
    replications: Optional[int],
    jobs: Optional[int],
    low_high: tuple[Optional[float], Optional[float]],
    max_memory: Optional[str],
) -> dict[str, Any]:
    """The --set overrides, checked, once the counts, --low/--high and the memory bound of the
    largest value tried are."""
    from sim.run.bounds import check_bounds  # deferred: the simulator loads pandas, scipy and pydantic
    from sim.spec.scenario import expand, run_overrides

    runs.check_counts(replications, jobs)
    low, high = low_high
    for flag, v in (("--low", low), ("--high", high)):
        if v is not None and not math.isfinite(v):
            raise CapsimError(f"{flag} {v:g}: must be a finite number")
    ov = runs.checked_overrides(set_)
    base_ov = run_overrides(ov, seed, replications)
    bound_points = expand(scenario, base_ov)
    if high is not None:  # the largest value tried drives the bound, when it is a valid one
        with contextlib.suppress(CapsimError):  # the search reports a bad --vary or --high itself
            bound_points = expand(scenario, {**base_ov, vary: int(high) if float(high).is_integer() else high})
    check_bounds(bound_points, max_memory, jobs)
    return ov


def _search_capacity(
    scenario: Path, vary: str, ov: dict[str, Any], band: bool, engines: bool, con: Any, search: dict[str, Any]
) -> tuple[Any, dict[str, Any] | None]:
    """One search, or one per published step-cost preset (--band) or engine preset (--engines): the
    answer and, for those, every preset's (named on ``con`` as each starts, when it is given)."""
    from sim.run.capacity import capacity as find_capacity  # deferred: the simulator loads pandas, scipy
    from sim.run.capacity import capacity_band, conservative

    if band and engines:
        raise CapsimError("--band and --engines: choose one")
    if band:
        announce = None if con is None else (lambda p: con.print(f"llm.efficiency {p}:", highlight=False))
        results = capacity_band(scenario, vary, ov, on_preset=announce, **search)
        return results["published"], results
    if engines:
        announce = None if con is None else (lambda p: con.print(f"llm.engine {p}:", highlight=False))
        results = capacity_band(scenario, vary, ov, on_preset=announce, by="engine", **search)
        return results[conservative(results)], results
    return find_capacity(scenario, vary, ov, **search), None


def _tried_printer(vary: str, console: Any) -> Callable[[Any], None]:
    """One line per value the capacity search tries (on stderr with --json)."""

    def show(t: Any) -> None:
        d = t.to_dict()
        p95 = "-" if d["p95_e2e_ms"] is None else f"{d['p95_e2e_ms']:,.0f} ms"
        slas = "; ".join(
            f"{v['metric']} {v['stat']} {_ms(v['value'])}{_interval(v['ci'])} <= {v['threshold']:g}: {v['verdict']}"
            for v in d["verdicts"]
        )
        line = f"tried {vary}={t.value:g}: {t.verdict.upper()}  e2e p95 {p95}{_interval(d['ci'])}  ({slas})"
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    return show


def _print_capacity(vary: str, res: Any, results: dict[str, Any] | None, json_: bool, con: Any) -> None:
    """The answer: JSON, or a line (and the band's); no value meeting the SLA goes to stderr."""
    if results is not None:
        shown = {p: ("none" if r.capacity is None else f"{r.capacity:g}") for p, r in results.items()}
        if "published" in shown:
            line = (
                f"capacity band: {vary} = {shown['published']} with the central published step costs, "
                f"{shown['published-fast']} if the engine is as fast as a fast published one, "
                f"{shown['published-slow']} if as slow as a slow one"
            )
        elif len(set(shown.values())) == 1:
            same = next(iter(shown.values()))
            line = f"capacity by engine: {vary} = {same} with every engine preset ({', '.join(shown)})"
        else:
            line = f"capacity by engine: {vary} = " + ", ".join(f"{v} with {p}" for p, v in shown.items())
    if json_:
        doc = res.to_dict()
        if results is not None:
            doc["band"] = {p: r.to_dict() for p, r in results.items()}
        sys.stdout.write(to_json(doc) + "\n")
    else:
        if results is not None:
            con.print(line, highlight=False, soft_wrap=True)
        how = "largest" if res.direction == "max" else "smallest"
        if res.capacity is not None:
            con.print(
                f"capacity: {vary} = {res.capacity:g} ({how} value meeting every SLA; {res.reason}). {res.note}",
                highlight=False,
                soft_wrap=True,
            )
    if res.capacity is None:
        b = res.best.to_dict() if res.best is not None else None
        best = (
            ""
            if b is None
            else (
                f"; best tried {vary}={b['value']:g}: {b['verdict']}, e2e p95 "
                f"{'-' if b['p95_e2e_ms'] is None else format(b['p95_e2e_ms'], ',.0f')} ms"
            )
        )
        head = "inconclusive" if res.inconclusive else "no value meets the SLA"
        err_console.print(f"{head}: {res.note}{best}", markup=False, highlight=False, soft_wrap=True)


@app.command("report")
@user_errors
def report_cmd(
    folder: Path = typer.Argument(..., help="A folder written by capsim sweep --out (or capsim run --out)."),
    key: Optional[str] = typer.Option(None, help="Swept key for the x axis (default: the first numeric one)."),
    point: Optional[int] = typer.Option(
        None, help="Point whose time series to draw (default: the most loaded point that still reaches a steady state)."
    ),
) -> None:
    """Write PNG plots and one self-contained report.html into FOLDER."""
    from sim.present.report import write_report  # deferred: matplotlib, pandas
    from sim.run.folder import locked, verify

    verify(folder)  # a partial, mixed or foreign folder is named before anything is drawn
    with locked(folder, flag="report"):
        paths = write_report(folder, key=key, point=point)
    for p in paths:
        sys.stdout.write(f"{p}\n")
