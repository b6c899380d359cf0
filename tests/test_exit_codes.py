"""Exit codes that cannot lie: a crash in any command is 4 (never 1, the code of a failing
SLA), with one line on stderr naming the file that holds the full traceback; a dead worker
is 5 and Ctrl-C 130, distinct from both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from sim.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_IO,
    EXIT_PASS,
    EXIT_WORKER_DIED,
)
from tests.helpers import invoke

DATA = Path(__file__).parent / "data"
SMALL = DATA / "rag_small.yaml"

# command -> (module, function the command calls, argv).  Forcing the function to raise
# stands for any bug inside the command.
COMMANDS = {
    "run": ("sim.run.loop", "run_sweep", ["run", SMALL]),
    "schema": ("sim.spec.schema", "json_schema", ["schema"]),
    "estimate": ("sim.analysis.estimate", "estimate_points", ["estimate", SMALL]),
    "sweep": ("sim.run.loop", "run_sweep", ["sweep", SMALL]),
    "capacity": ("sim.run.capacity", "capacity", ["capacity", SMALL, "--vary", "workload.users"]),
    "plan": ("sim.run.plan", "plan", ["plan", SMALL, "--out", "{tmp}/plan"]),
    "autoscale": ("sim.run.autoscale", "compare", ["autoscale", SMALL, "--out", "{tmp}/autoscale"]),
    "report": ("sim.present.report", "write_report", ["report", "{sealed}"]),
    "calibrate retrieval": (
        "sim.calibrate.retrieval",
        "run_calibration",
        ["calibrate", "retrieval", "--docs", "1000", "--out", "{tmp}/cal.json"],
    ),
    "calibrate gpu": ("sim.calibrate.gpu", "fit_gpu", ["calibrate", "gpu", DATA / "gpu_steps_synthetic.csv"]),
    "calibrate routing": (
        "sim.calibrate.routing",
        "run_routing_calibration",
        ["calibrate", "routing", "--out", "{tmp}/r.json"],
    ),
    "calibrate published": (
        "sim.calibrate.published",
        "run_fit",
        ["calibrate", "published", "--resamples", "0", "--out", "{tmp}/fit.json"],
    ),
    "calibrate llm": (
        "sim.spec.target",
        "load_target",
        ["calibrate", "llm", "--target", "{tmp}/target.yaml", "--out", "{tmp}/steps.csv"],
    ),
    "validate": ("sim.run.validate", "run_validation", ["validate", "--sample", "--no-cache", "--jobs", "1"]),
    "verify": (
        "sim.spec.target",
        "load_target",
        ["verify", SMALL, "--target", "{tmp}/target.yaml", "--users", "1"],
    ),
}


def _dying(task):  # module level: the pool pickles it by name
    import os

    from sim.engine.pipeline import run_replication

    if task[0].workload.users == 41:
        os._exit(9)
    return run_replication(*task)


def _commands(group: typer.Typer, prefix: str = "") -> set[str]:
    names = {f"{prefix}{c.name or c.callback.__name__}".strip() for c in group.registered_commands}
    for g in group.registered_groups:
        names |= _commands(g.typer_instance, f"{prefix}{g.name} ")
    return names


def test_every_command_is_in_the_table() -> None:
    from sim.cli import app

    assert _commands(app) == set(COMMANDS)


def _sealed_run_folder(tmp: Path) -> Path:
    from sim.run.folder import seal

    d = tmp / "sealed"
    d.mkdir()
    f = d / "summary.json"
    f.write_text('{"points": []}')
    seal(d, "run", [f])
    return d


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_crash_in_any_command_exits_4_with_the_traceback_saved(command, tmp_path, monkeypatch):
    module, func, argv = COMMANDS[command]
    mod = __import__(module, fromlist=[func])

    def boom(*a, **k):
        raise RuntimeError("forced internal error")

    monkeypatch.setattr(mod, func, boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # so mkstemp honours TMPDIR
    sealed = _sealed_run_folder(tmp_path) if "{sealed}" in argv else None
    args = [str(a).replace("{tmp}", str(tmp_path)).replace("{sealed}", str(sealed)) for a in argv]
    r = invoke(*args)
    err = r.stderr.strip()
    assert r.exit_code == EXIT_INTERNAL, (r.exit_code, err)
    assert err.count("\n") == 0 and "internal error" in err and "RuntimeError: forced internal error" in err
    path = Path(re.search(r"traceback saved in (\S+)$", err).group(1))
    assert path.parent == tmp_path
    text = path.read_text()
    assert "Traceback (most recent call last)" in text and "boom" in text


def test_codes_are_distinct_and_documented() -> None:
    from sim.cli.app import EXIT_HELP

    codes = [
        EXIT_PASS,
        EXIT_FAIL,
        EXIT_BAD_INPUT,
        EXIT_INCONCLUSIVE,
        EXIT_INTERNAL,
        EXIT_WORKER_DIED,
        EXIT_IO,
        EXIT_INTERRUPTED,
    ]
    assert len(set(codes)) == len(codes) and EXIT_INTERNAL != EXIT_FAIL
    root = Path(__file__).parent.parent
    pages = {name: (root / name).read_text() for name in ("README.md", "docs/reference/exit-codes.md")}
    for c in codes:
        assert f"{c} " in EXIT_HELP
        for name, text in pages.items():
            assert f"| {c} |" in text, f"{name}'s exit-code table lacks {c}"
    r = invoke("--help")
    assert "4 internal error" in " ".join(r.stdout.split())


@pytest.mark.parametrize(
    "raise_, code",
    [("worker", EXIT_WORKER_DIED), ("ctrl-c", EXIT_INTERRUPTED)],
)
def test_worker_death_and_ctrl_c_have_their_own_codes(raise_, code, monkeypatch):
    import sim.run.loop
    import sim.run.sweep

    def stop(*a, **k):
        if raise_ == "worker":
            raise sim.run.loop.SweepInterrupted("a worker process died: 0 of 1 points finished", EXIT_WORKER_DIED)
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.run.sweep, "simulate", stop)
    monkeypatch.setattr(sim.run.loop, "run_sweep", stop)
    for argv in (["run", SMALL], ["sweep", SMALL]):
        r = invoke(*argv)
        assert r.exit_code == code, (argv, r.exit_code, r.stderr)
        assert "Traceback" not in r.stderr


def test_a_worker_that_dies_exits_5_and_the_rerun_resumes(tmp_path, monkeypatch):
    """A real dead worker: the replication function kills its own process."""
    import sim.run.executors as ex

    real = ex._run_task
    monkeypatch.setattr(ex, "_run_task", _dying)
    out = tmp_path / "o"
    argv = ["sweep", SMALL, "--grid", "workload.users=40,41", "--jobs", "2", "--out", out]
    argv += ["--set", "run.duration_s=30", "--set", "run.warmup_s=5"]
    r = invoke(*argv)
    assert r.exit_code == EXIT_WORKER_DIED, (r.exit_code, r.stderr)
    assert "run the same command again" in r.stderr
    assert not list(out.glob(".*.partial")), "the streamed folder files of the stopped sweep were left behind"
    monkeypatch.setattr(ex, "_run_task", real)
    r = invoke(*argv)
    assert r.exit_code in (EXIT_PASS, EXIT_FAIL, EXIT_INCONCLUSIVE), r.stderr
