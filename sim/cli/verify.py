"""``capsim verify``: play the scenario against a real stack, simulate the same, print measured vs predicted.

Exit codes: 0 every error within the bounds, 1 an error exceeds its bound (with
``--confirm``: in both plays of the load) or more than 1 % of the requests
failed (the reason is printed), 2 bad input, an unreachable endpoint, or one that
fails a probe or answers outside its API (one line naming the endpoint and the
field), 3 no row outside but some undecided (said on stderr), 6 an I/O failure.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from sim.cli.app import app, err_console, stdout_console, user_errors
from sim.cli.calibrate import check_out_file, parse_int_list
from sim.errors import CapsimError
from sim.files import to_json


def _pct(x: float | None) -> str:
    from sim.verify.verdict import pct_text  # deferred: the verify stack loads the simulator

    return pct_text(x)


def _num(x: float | None, unit: str = "") -> str:
    from sim.verify.verdict import num_text  # deferred: the verify stack loads the simulator

    return "-" if x is None else f"{num_text(x)}{unit}"


@app.command()
@user_errors
def verify(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (with llm.step_table from calibrate llm)."),
    target: Path = typer.Option(..., "--target", help="Target YAML: the real endpoints on 127.0.0.1."),
    users: str = typer.Option("2,6,12", "--users", help="Closed-loop user counts, one live run each."),
    duration_s: float = typer.Option(120.0, "--duration-s", help="Seconds of live load per user count."),
    warmup_s: Optional[float] = typer.Option(None, "--warmup-s", help="Seconds cut at the start [15 % of duration]."),
    replications: int = typer.Option(5, "--replications", help="Simulated replications per load."),
    out: Optional[Path] = typer.Option(None, help="Write live requests (Parquet) and verify.json here."),
    json_: bool = typer.Option(False, "--json", help="Print only the JSON on stdout."),
    probe_s: float = typer.Option(
        1.0,
        "--probe-s",
        help="Seconds of each wake-up train of the retrieval probe (single searches spaced by one idle gap; "
        "five gaps, three rounds, before the first load and after every load).",
    ),
    segments: int = typer.Option(
        1,
        "--segments",
        help="Play each load as this many segments with short isolated probes between them (150 searches "
        "back to back; 3 requests alone to the LLM server, each after a 1-s pause and as long as the "
        "scenario's mean request), each predicted from the probes on its two "
        "sides: tracks the host's drift.",
    ),
    seed: Optional[int] = typer.Option(
        None,
        "--seed",
        help="Seed of the workload played and simulated (think times, keys, token counts) [the "
        "scenario's run.seed]; runs with different seeds are independent draws, to pool them.",
    ),
    confirm: bool = typer.Option(
        False,
        "--confirm",
        help="Play a load with a row outside its bound once more, re-profiled and re-probed; a row is "
        "outside only when both plays put it outside (a passing slow spell of the host does not fail "
        "the run, a miss of the model repeats); outside in one play only, it is undecided (exit 3).",
    ),
    profile_llm: bool = typer.Option(
        False,
        "--profile-llm",
        help="Before every load, profile the LLM server alone (requests sent together in batches of "
        "1..llm.parallel: each up to 8, then doubling; nothing else sending) and predict that load from its "
        "own profile instead of llm.step_table; the tables go to --out.",
    ),
) -> None:
    """Measure a real stack under the scenario's load and compare with capsim's prediction."""
    # deferred: the simulator loads pandas, scipy and pydantic; `capsim verify --help` needs none
    from sim.spec.target import load_target
    from sim.verify.run import verify as run_verify
    from sim.verify.verdict import outcome

    counts = parse_int_list("--users", users)
    warm = _check_flags(duration_s, warmup_s, probe_s, segments, replications, seed, out)
    tgt = load_target(target)
    scn = _scenario(scenario, seed)
    if out is not None:  # every path problem before the measurement, not after it
        _make_out(out)

    def say(msg: str) -> None:
        if not json_:
            err_console.print(msg, markup=False, highlight=False)

    with tempfile.TemporaryDirectory(prefix="capsim-verify-") as tmp:
        profile = _step_profile(out if out is not None else Path(tmp)) if profile_llm else None
        results, calib, lives = run_verify(
            scn,
            tgt,
            counts,
            duration_s,
            warm,
            replications=replications,
            progress=say,
            profile=profile,
            probe_s=probe_s,
            segments=segments,
            confirm=confirm,
        )
    doc = {
        "scenario": str(scenario),
        "target": str(target),
        "seed": scn.run.seed,
        "calibration": calib,
        "loads": [r.to_dict() for r in results],
    }
    if out is not None:
        _write_out(out, doc, lives)
    if json_:
        sys.stdout.write(to_json(doc) + "\n")
    else:
        _print(doc, stdout_console())
    code, why = outcome(results)
    if why:
        err_console.print(why, markup=False)
    if code:
        raise typer.Exit(code)


def _check_flags(
    duration_s: float,
    warmup_s: float | None,
    probe_s: float,
    segments: int,
    replications: int,
    seed: int | None,
    out: Path | None,
) -> float:
    """The flags that need no file checked, one line per mistake; the warm-up cut in seconds."""
    if duration_s <= 0 or duration_s > 3600:
        raise CapsimError(f"--duration-s: must be in (0, 3600], got {duration_s:g}")
    warm = 0.15 * duration_s if warmup_s is None else warmup_s
    if not 0 <= warm < duration_s:
        raise CapsimError(f"--warmup-s: must be >= 0 and < --duration-s ({duration_s:g}), got {warm:g}")
    if not 0.05 <= probe_s <= 60:
        raise CapsimError(f"--probe-s: must be in [0.05, 60] seconds, got {probe_s:g}")
    if not 1 <= segments <= 20:
        raise CapsimError(f"--segments: must be 1 to 20, got {segments}")
    if segments > 1 and duration_s / segments < 2 * (warm / segments) + 1:
        raise CapsimError(
            f"--segments: {segments} segments of {duration_s / segments:g} s leave too little after each warm-up"
        )
    if replications < 2:
        raise CapsimError("--replications: must be >= 2 (the interval needs them)")
    if seed is not None and not 0 <= seed < 2**32:
        raise CapsimError(f"--seed: must be an integer in [0, 2^32), got {seed}")
    if out is not None and out.exists() and not out.is_dir():
        raise CapsimError(f"--out {out}: is a file; give a folder (it is created if missing)")
    return warm


def _scenario(path: Path, seed: int | None):
    """The scenario, its ``run.seed`` replaced by ``--seed`` when given."""
    from sim.spec.scenario import load_scenario  # deferred: pydantic and the schema

    scn = load_scenario(path)
    if seed is not None:
        scn = scn.model_copy(update={"run": scn.run.model_copy(update={"seed": seed})})
    return scn


def _make_out(out: Path) -> None:
    """Create ``--out`` and check ``verify.json`` can be written there."""
    from sim.run.folder import make_folders  # deferred: only with --out

    try:
        make_folders(out)
    except OSError as e:
        raise CapsimError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    check_out_file(out / "verify.json")


def _step_profile(folder: Path):
    """The LLM server's step profile, its tables written in ``folder``."""
    from sim.verify.step_profile import ServerProfile  # deferred: the verify stack loads the simulator

    folder.mkdir(parents=True, exist_ok=True)
    return ServerProfile(folder)


def _write_out(out: Path, doc: dict, lives) -> None:
    """The live requests (one row per request, with its load's users and attempt) and verify.json."""
    import pandas as pd  # deferred: heavy, only for --out

    out.mkdir(parents=True, exist_ok=True)
    frames = []
    for live in lives:
        df = pd.DataFrame(live.records)
        df.insert(0, "users", live.users)
        df.insert(1, "attempt", live.attempt)
        frames.append(df)
    pd.concat(frames).to_parquet(out / "live_requests.parquet", index=False)
    (out / "verify.json").write_text(to_json(doc) + "\n")


COLUMNS = ("users", "metric", "measured", "its 95 %", "predicted", "capsim 95 %", "inside", "error", "bound", "verdict")


def _print(doc: dict, con) -> None:
    """The calibration lines, then one table: per load its rows, utilisation and load-generator health."""
    from sim.verify.explain import calibration_lines  # deferred: the verify stack loads the simulator

    for line in calibration_lines(doc):
        con.print(line)
    t = Table(title="capsim verify: measured vs predicted")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("metric", "verdict") else "right")
    for load in doc["loads"]:
        for r in load["rows"]:
            t.add_row(*_row_cells(load["users"], r))
        t.add_row(*_utilisation_cells(load))
        t.add_row(*_loadgen_cells(load), end_section=True)
    con.print(t)


def _row_cells(users: int, r: dict) -> list[str]:
    """One compared statistic: measured and predicted with their intervals, error against its bound."""
    from sim.verify.verdict import span_text  # deferred: the verify stack loads the simulator

    lo, hi = r["ci"]
    mci = r.get("measured_ci", [None, None])
    return [
        str(users),
        f"{r['metric']} {r['stat']}",
        _num(r["measured"]),
        "-" if mci == [None, None] else span_text(mci),
        _num(r["predicted"]),
        "-" if lo is None else span_text([lo, hi]),
        {True: "yes", False: "no", None: "-"}[r["inside_ci"]],
        _pct(r["rel_error"]),
        "-" if r["bound"] is None else f"{r['bound']:.0%}",
        r.get("verdict") or "",
    ]


def _utilisation_cells(load: dict) -> list[str]:
    """GPU and retrieval busy shares, measured and predicted."""
    m, p = load["measured"]["utilization"], load["predicted"]["utilization"]
    return [
        str(load["users"]),
        "utilisation gpu / retrieval",
        f"{m['gpu']:.0%} / {m['retrieval']:.1%}",
        "",
        f"{p.get('gpu', 0):.0%} / {p.get('retrieval', 0):.1%}",
        *[""] * 5,
    ]


def _loadgen_cells(load: dict) -> list[str]:
    """Requests, failures and what the load generator cost (CPU per request, lag of its think timers)."""
    g = load["loadgen"]
    return [
        str(load["users"]),
        "requests / failed / loadgen",
        f"{load['requests']} / {load['failures']}",
        "",
        "",
        f"cpu {g['cpu_ms_per_request']:.1f} ms/req, lag p99 {g['think_timer_lag_p99_ms']:.1f} ms",
        *[""] * 4,
    ]
