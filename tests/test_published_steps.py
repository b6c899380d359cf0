"""The published GPU step measurements are well formed and sourced.

Every row names a model, GPU, engine, tensor parallel degree and batch, one
measured quantity with a positive value, and a public source with its date.
The catalog GPUs the rows name must exist, so a fit can look their figures up.
"""

from __future__ import annotations

import csv
from importlib.resources import files

from sim.spec import catalog

QUANTITIES = {"decode_step_ms", "itl_ms", "tpot_ms", "prefill_ms", "ttft_ms", "throughput_tok_s", "run_latency_s"}


def rows(name: str) -> list[dict[str, str]]:
    with files("sim").joinpath("data", "published", name).open() as fh:
        return list(csv.DictReader(fh))


def test_step_dataset_is_sourced_and_broad() -> None:
    data = rows("published_steps.csv")
    assert len(data) >= 40
    for r in data:
        assert r["source_url"].startswith("https://") and r["source_date"], r
        assert r["quantity"] in QUANTITIES, r["quantity"]
        assert float(r["value"]) > 0
        assert int(r["tensor_parallel"]) >= 1 and int(r["batch_size"]) >= 1
        catalog.gpu(r["gpu"], key="gpu")  # a catalog GPU (raises for an unknown name)
    assert len({r["gpu"] for r in data}) >= 5
    assert len({r["engine"] for r in data}) >= 4
    assert {int(r["tensor_parallel"]) for r in data} >= {1, 2, 4, 8}
    assert {"ttft_ms"} & {r["quantity"] for r in data}


def test_kv_logs_carry_the_engine_line_and_a_source() -> None:
    logs = rows("vllm_kv_logs.csv")
    assert len(logs) >= 8
    for r in logs:
        assert r["source_url"].startswith("https://")
        line = r["kv_line_verbatim"]
        assert any(k in line for k in ("GPU blocks", "KV cache", "kv_cache", "GiB")), line
