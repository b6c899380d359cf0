"""Small scenarios shared by the tests."""

from __future__ import annotations

import copy

import yaml
from typer.testing import CliRunner

# A GPU and a model with round numbers, so step times can be worked by hand:
# weights 1e9 params x 2 bytes = 2e9 bytes at 1,000 GB/s = 2 ms per step;
# KV 2 x 1 layer x 1 head x 128 x 2 bytes = 512 bytes per token.
TOY_GPU = {"name": "toy", "hbm_bandwidth_gbps": 1000, "memory_gb": 80, "peak_tflops": 1000}
TOY_MODEL = {
    "name": "toy",
    "layers": 1,
    "hidden": 128,
    "heads": 1,
    "kv_heads": 1,
    "head_dim": 128,
    "vocab": 1000,
    "params": 1e9,
}


def toy_llm(**keys) -> dict:
    """The toy model on the toy GPU with exact step costs (only the parameters set here): the
    ``llm`` section of a hand-checked scenario, ``keys`` on top."""
    return {
        "model": copy.deepcopy(TOY_MODEL),
        "gpu": copy.deepcopy(TOY_GPU),
        "efficiency": "custom",
        "bw_efficiency": 1.0,
        "mfu": 1.0,
        "step_overhead_ms": 0,
        **keys,
    }


def exact_scenario(**over) -> dict:
    """One user, constant everything: every timestamp is computable by hand."""
    d = {
        "name": "exact",
        "run": {"duration_s": 10, "warmup_s": 0, "replications": 1, "seed": 3, "drain_s": 5},
        "workload": {
            "mode": "closed",
            "users": 1,
            "think_s": 1.0,
            "queries": {"distinct": 1, "hot_fraction": 0, "hot_keys": 0},
        },
        "cache": {"enabled": True, "capacity": 10, "lookup_ms": 1},
        "retrieval": {"enabled": True, "workers": 1, "service_ms": 10},
        "llm": toy_llm(prompt_tokens=100, output_tokens=3),
    }
    for k, v in over.items():
        node = d
        parts = k.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return d


def small_scenario(**over) -> dict:
    """A quick, realistic-ish scenario for CLI and determinism tests."""
    d = {
        "name": "small",
        "run": {"duration_s": 60, "warmup_s": 10, "replications": 2, "seed": 7},
        "workload": {
            "mode": "closed",
            "users": 30,
            "think_s": {"dist": "exponential", "mean": 5},
            "queries": {"distinct": 500, "hot_fraction": 0.5, "hot_keys": 10, "zipf_s": 1.0},
        },
        "cache": {"capacity": 100, "lookup_ms": 1},
        "retrieval": {"workers": 2, "service_ms": {"dist": "lognormal", "mean": 20, "cv": 0.5}},
        "llm": {
            "model": "article-8l",
            "gpu": "h100-sxm",
            "prompt_tokens": 800,
            "output_tokens": {"dist": "uniform", "low": 20, "high": 60},
        },
        "sla": {"e2e_ms": {"p95": 5000}},
    }
    d.update(over)
    return d


def write(tmp_path, data: dict, name: str = "s.yaml"):
    """Write a scenario mapping as YAML under ``tmp_path``; return its path."""
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def invoke(*args):
    """Run the ``capsim`` command in-process (stdout and stderr kept apart)."""
    from sim.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def verify_exit_code(doc: dict) -> int:
    """The exit code ``capsim verify`` owes the verdicts of its JSON (``verify.json``): 1 when more
    than 1 % of a load's requests failed or a row is outside its bound, else 3 when a row is
    undecided, else 0."""
    loads = doc["loads"]
    rows = [r for load in loads for r in load["rows"]]
    if any(load["failures"] > 0.01 * max(1, load["requests"]) for load in loads):
        return 1
    if any(r.get("verdict") == "outside" for r in rows):
        return 1
    return 3 if any(r.get("verdict") == "undecided" for r in rows) else 0
