"""``make validation``: re-measure the validation checks that run on any machine.

Writes, under ``docs/data/``:

* ``queueing.json``: capsim end to end (``sim.simulate``) against exact queueing
  formulas: M/M/1 and M/M/10 mean response (Erlang C), and a closed loop of users in
  front of one exponential server (exact MVA);
* ``kv_logs.json``: capsim's KV capacity against every published vLLM start-up log in
  ``sim/data/published/vllm_kv_logs.csv``.

The published step-cost fit (``sim/data/published/fit.json``) is rewritten by
``capsim calibrate published``; the live checks (``docs/data/verify_*.json``) by
``make verify``.  The validation page is generated from all of them.

    .venv/bin/python -m tools.docgen.measure
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import sim
from benchmarks.result_file import machine
from sim.physics import queueing

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "docs" / "data"


def _stamp() -> dict[str, Any]:
    return {
        "date": dt.date.today().isoformat(),
        "capsim": sim.__version__,
        "machine": machine(),
    }


def _open_mmc(c: int, rho: float, mean_ms: float, duration_s: float) -> dict[str, Any]:
    return {
        "name": f"mm{c}",
        "run": {"duration_s": duration_s, "warmup_s": duration_s * 0.05, "replications": 5, "seed": 1},
        "workload": {"mode": "open", "rate_per_s": rho * c / (mean_ms / 1e3)},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"service_ms": {"dist": "exponential", "mean": mean_ms}, "workers": c},
    }


def _closed(users: int, think_s: float, mean_ms: float, duration_s: float) -> dict[str, Any]:
    return {
        "name": "closed",
        "run": {"duration_s": duration_s, "warmup_s": duration_s * 0.05, "replications": 5, "seed": 1},
        "workload": {"mode": "closed", "users": users, "think_s": {"dist": "exponential", "mean": think_s}},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"service_ms": {"dist": "exponential", "mean": mean_ms}, "workers": 1},
    }


def _mean_e2e(scenario: dict[str, Any]) -> tuple[float, list[float], float]:
    point = sim.simulate(scenario).summary["points"][0]
    e2e = point["metrics"]["e2e_ms"]
    return float(e2e["mean"]), [float(x) for x in e2e["ci"]["mean"]], float(point["throughput_per_s"])


def queueing_checks() -> dict[str, Any]:
    rows = []
    for c, rho in ((1, 0.8), (10, 0.9)):
        mean_ms = 100.0
        scn = _open_mmc(c, rho, mean_ms, duration_s=4000.0)
        sim_ms, ci, _ = _mean_e2e(scn)
        exact = queueing.mmc(c, scn["workload"]["rate_per_s"], 1e3 / mean_ms).mean_response_s * 1e3
        rows.append(_row(f"M/M/{c} at rho {rho}, mean response (Erlang C)", "ms", sim_ms, ci, exact))
    users, think_s, mean_ms = 10, 1.0, 80.0
    sim_ms, ci, thr = _mean_e2e(_closed(users, think_s, mean_ms, duration_s=4000.0))
    exact_mva = queueing.mva(users, think_s, [mean_ms / 1e3])
    rows.append(
        _row(f"{users} closed users, 1 s think, one server: mean response (MVA)", "ms", sim_ms, ci, _mva_ms(exact_mva))
    )
    rows.append(_row(f"{users} closed users: throughput (MVA)", "req/s", thr, None, _mva_x(exact_mva)))
    return {**_stamp(), "replications": 5, "confidence": 0.95, "rows": rows}


def _mva_ms(result: Any) -> float:
    return float(result.response_s) * 1e3


def _mva_x(result: Any) -> float:
    return float(result.throughput_per_s)


def _row(check: str, unit: str, simulated: float, ci: list[float] | None, exact: float) -> dict[str, Any]:
    return {
        "check": check,
        "unit": unit,
        "simulated": round(simulated, 4),
        "ci": None if ci is None else [round(x, 4) for x in ci],
        "exact": round(exact, 4),
        "rel_error": round(simulated / exact - 1.0, 5),
        "exact_inside_ci": None if ci is None else bool(ci[0] <= exact <= ci[1]),
    }


def kv_log_checks() -> dict[str, Any]:
    from tests.test_kv_logs import capsim_tokens  # the test's own rebuild of each logged server

    with files("sim").joinpath("data", "published", "vllm_kv_logs.csv").open() as fh:
        logs = list(csv.DictReader(fh))
    rows = []
    for row in logs:
        ours = capsim_tokens(row)
        logged = int(row["kv_tokens"])
        rows.append(
            {
                "id": row["id"],
                "model": row["capsim_model"],
                "gpu": row["gpu"],
                "tensor_parallel": int(row["tensor_parallel"]),
                "vllm": row["vllm_version"].split(" ")[0],
                "engine_reserve": row["engine_reserve"],
                "logged_tokens": logged,
                "capsim_tokens": ours,
                "rel_error": round(ours / logged - 1.0, 5),
                "source": row["source_url"],
            }
        )
    return {**_stamp(), "tolerance": 0.10, "rows": rows}


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name, doc in (("kv_logs", kv_log_checks()), ("queueing", queueing_checks())):
        path = DATA / f"{name}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
