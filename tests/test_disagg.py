"""Disaggregated prefill and decode: the hand-off formula, exact timestamps, the pools, bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from sim.engine.pipeline import run_replication
from sim.physics.handoff import transfer_s
from sim.spec.links import link, link_names
from sim.spec.schema import LLMConfig, validate_scenario
from tests.helpers import exact_scenario, invoke


def test_transfer_time_by_hand():
    # Llama-3-8B, BF16: 2 x 32 layers x 8 KV heads x 128 x 2 bytes = 131,072 bytes a token;
    # 1,000 tokens over 50 GB/s = 2.62144 ms, plus 20 us of latency.
    assert transfer_s(1000, 131_072, 5e10, 20e-6) == pytest.approx(2.62144e-3 + 20e-6, rel=1e-12)
    cfg = LLMConfig.model_validate(
        {"model": "llama-3-8b", "disaggregated": {"prefill": {}, "decode": {"tensor_parallel": 2}}}
    )
    assert cfg.kv_bytes_per_token == 131_072
    # tensor parallel 2 splits the 8 KV heads: each decode GPU receives half over its own link
    assert cfg.pool("decode").kv_bytes_per_token_per_gpu == 65_536
    assert cfg.link_bytes_per_s == 5e10  # the default link: InfiniBand NDR, 400 Gb/s
    with pytest.raises(ValueError):
        transfer_s(1, 1, 0.0)


def test_link_catalog_figures_match_their_quotes_and_name_a_source():
    for name in link_names():
        e = link(name)
        if e.bytes_per_s is None:
            assert name == "nvlink"
            continue
        assert e.bytes_per_s == e.from_quote and e.source and e.source.startswith("http") and e.read_on
    # nvlink: the slower pool's GPU interconnect (H100 SXM 450 GB/s per direction, L40S PCIe Gen4 32)
    cfg = LLMConfig.model_validate(
        {"model": "llama-3-8b", "disaggregated": {"prefill": {"gpu": "l40s"}, "decode": {}, "link": "nvlink"}}
    )
    assert cfg.link_bytes_per_s == 32e9


def _write(d: dict):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _exact(disaggregated: dict | None, **over) -> dict:
    d = exact_scenario(**over)
    d["cache"] = {"enabled": False}
    d["retrieval"] = {"enabled": False}
    d["run"]["duration_s"] = 3.0
    d["workload"]["think_s"] = 1.0
    if disaggregated is not None:
        d["llm"]["disaggregated"] = disaggregated
    return d


def test_one_request_exact_timestamps():
    """Toy GPU (2 ms of weights a step, 512 KV bytes a token), prompt 100, output 3, a 1 GB/s link
    with 100 us of latency: prefill 2 ms + 51.2 KV us, hand-off 100 + 51.2 us, first decode step
    (the prompt's last token) 2 ms + 51.2 ns, then two decode steps reading 101 and 102 tokens."""
    dis = {"prefill": {}, "decode": {}, "link_gbps": 1.0, "latency_us": 100}
    rec = run_replication(validate_scenario(_exact(dis)), 0, records=True).records
    step = lambda ctx: 2e-3 + 512 * ctx / 1e12  # noqa: E731 - memory-bound: (2e9 + 512 ctx) / 1e12
    prefill, handoff, first = step(100), 100e-6 + 51_200 / 1e9, step(100)
    assert rec["ttft_ms"][0] == pytest.approx((prefill + handoff + first) * 1e3, rel=1e-9)
    assert rec["llm_wait_ms"][0] == pytest.approx(0.0, abs=1e-9)
    assert rec["prefill_ms"][0] == pytest.approx((prefill + handoff + first) * 1e3, rel=1e-9)
    assert rec["decode_ms"][0] == pytest.approx((step(101) + step(102)) * 1e3, rel=1e-9)
    # the decode replica is the second of the stage's replicas
    assert rec["replica"][0] == 1
    # the engine's frontend comes first: its time is part of the wait for a prefill replica
    fe = run_replication(validate_scenario(_exact(dis, llm__frontend_ms=5.0)), 0, records=True).records
    assert fe["llm_wait_ms"][0] == pytest.approx(5.0, rel=1e-9)
    assert fe["ttft_ms"][0] == pytest.approx(5.0 + (prefill + handoff + first) * 1e3, rel=1e-9)
    agg = run_replication(validate_scenario(_exact(None)), 0, records=True).records
    assert agg["ttft_ms"][0] == pytest.approx(prefill * 1e3, rel=1e-9)
    assert agg["decode_ms"][0] == pytest.approx((step(101) + step(102)) * 1e3, rel=1e-9)


def test_prefill_pool_queues_and_decode_pool_batches():
    """Four users at once on one prefill replica with a 100-token budget: prompts are prefilled one
    step each, in turn (the k-th waits k - 1 steps), and decoded together on the decode replica."""
    dis = {"prefill": {"max_batch": 1, "max_batched_tokens": 100}, "decode": {}, "link_gbps": 1.0}
    d = _exact(dis)
    d["workload"]["users"] = 4
    d["run"]["duration_s"] = 1.5  # one request each, all at t = 1 s (after one think time)
    rec = run_replication(validate_scenario(d), 0, records=True).records
    order = np.argsort(rec["llm_wait_ms"])
    waits = rec["llm_wait_ms"][order]
    step = 2e-3 + 512 * 100 / 1e12
    assert waits == pytest.approx([0, step * 1e3, 2 * step * 1e3, 3 * step * 1e3], rel=1e-6)
    assert set(rec["replica"].tolist()) == {1}


def test_disaggregated_pools_take_their_own_keys():
    cfg = LLMConfig.model_validate(
        {
            "model": "llama-3-70b",
            "gpu": "h100-sxm",
            "tensor_parallel": 4,
            "prompt_tokens": {"system_tokens": 64, "question_tokens": 10},
            "disaggregated": {
                "prefill": {"replicas": 2, "gpu": "h200", "tensor_parallel": 2},
                "decode": {"replicas": 3, "max_batch": 64},
            },
        }
    )
    p, dcfg = cfg.pool("prefill"), cfg.pool("decode")
    assert (p.replicas, p.gpu.name, p.tensor_parallel, p.prefix_caching_enabled) == (2, "h200", 2, True)
    assert (dcfg.replicas, dcfg.gpu.name, dcfg.tensor_parallel, dcfg.max_batch) == (3, "h100-sxm", 4, 64)
    assert not dcfg.prefix_caching_enabled  # the prompt's KV arrives whole


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"replicas": 2}, "set llm.disaggregated.prefill.replicas and llm.disaggregated.decode.replicas"),
        ({"disaggregated": {"prefill": {}, "decode": {}, "link": "carrier-pigeon"}}, "llm.disaggregated.link"),
        ({"disaggregated": {"prefill": {"tensor_parallel": 3}, "decode": {}}}, "llm.disaggregated.prefill"),
        ({"disaggregated": {"prefill": {}, "decode": {"replica": 2}}}, "llm.disaggregated.decode.replica"),
        ({"disaggregated": {"prefill": {}, "decode": {}, "link_gbps": 0}}, "llm.disaggregated.link_gbps"),
    ],
)
def test_bad_disaggregated_keys_exit_2_with_one_line(tmp_path, change, needle):
    d = _exact({"prefill": {}, "decode": {}})
    d["llm"].update(copy.deepcopy(change))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d))
    r = invoke("run", path, "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not (tmp_path / "out").exists()


def test_a_disaggregated_fleet_is_priced_per_pool():
    from sim.analysis.dollars import gpu_fleet, gpus, per_hour
    from sim.spec.prices import gpu_price

    d = _exact(None)
    d["llm"] = {
        "model": "llama-3-8b",
        "gpu": "h100-sxm",
        "disaggregated": {"prefill": {"replicas": 2, "gpu": "h200"}, "decode": {"replicas": 3, "tensor_parallel": 2}},
    }
    d["cost"] = {"cpu_core_per_hour": 0}
    scn = validate_scenario(d)
    assert gpu_fleet(scn) == [("h200", 2), ("h100-sxm", 6)] and gpus(scn) == 8
    h200, h100 = gpu_price("h200"), gpu_price("h100-sxm")
    assert h200 is not None and h100 is not None
    assert per_hour(scn) == pytest.approx(2 * h200.usd_per_hour + 6 * h100.usd_per_hour, rel=1e-12)


def test_estimate_gives_each_pool_its_load_and_the_hand_off():
    """Toy GPU, prompt 100, output 3, open at 100 requests/s: a prefill replica with a 100-token
    budget takes one prompt a step, 2 ms + 51.2 ns (utilisation 100 x that = 20.0 %); the hand-off
    of 51,200 bytes at 1 GB/s plus 100 us is 0.1512 ms; two decode replicas."""
    from sim.analysis.estimate import estimate

    dis = {"prefill": {"max_batch": 1, "max_batched_tokens": 100}, "decode": {"replicas": 2}, "link_gbps": 1.0}
    d = _exact({**dis, "latency_us": 100})
    d["workload"] = {"mode": "open", "rate_per_s": 100}
    est = estimate(validate_scenario(d))
    dis = est["disaggregated"]
    step = 2e-3 + 512 * 100 / 1e12
    assert dis["prefill"]["prefill_ms"] == pytest.approx(step * 1e3, rel=1e-9)
    assert dis["handoff_ms"] == pytest.approx(0.1512, rel=1e-12)
    assert dis["handoff_bytes"] == 51_200
    assert est["utilization"]["gpu_prefill"] == pytest.approx(100 * step, rel=1e-9)
    assert est["servers"] == {"gpu_prefill": 1, "gpu_decode": 2}
    assert est["saturation"]["stage"] == "gpu_prefill"  # 2 ms a prompt against ~3 ms / batch a request
    assert "replica_capacity" not in est
    # a run's "gpu load" of a disaggregated deployment is the busier pool's, at the throughput it delivered
    from sim.analysis.summary import _gpu_load

    assert _gpu_load(validate_scenario(d), 100.0) == pytest.approx(100 * step, rel=1e-9)
    r = invoke("estimate", _write(d))
    assert r.exit_code == 0, r.output
    assert "KV hand-off" in r.stdout and "first to saturate" in r.stdout and "gpu_prefill" in r.stdout


def test_a_measured_disaggregated_row_replays_as_its_pools():
    from sim.run import validate as V
    from sim.spec.silicon import load_rows, representable_disaggregated

    rows = {r.id: r for r in representable_disaggregated(load_rows())}
    big = rows["dsr1_gb200_trtllm_fp4_disagg_1024x1024_c564_cfg237"]
    llm = V.scenario(big).llm
    assert llm.disaggregated is not None and llm.disaggregated.link == "nvlink"
    p, d = llm.pool("prefill"), llm.pool("decode")
    assert (p.replicas, p.tensor_parallel, p.expert_parallel_size, p.max_batch) == (1, 4, 4, 1)
    assert (d.replicas, d.tensor_parallel, d.expert_parallel_size, d.max_batch) == (4, 8, 8, 256)
    small = min(rows.values(), key=lambda r: (r.concurrency * r.osl, r.id))
    res = V.replay(small)
    assert not res["error"] and res["requests"] >= small.concurrency
    assert res["ttft_ms"] > 0 and 0 < res["tpot_ms"] < res["ttft_ms"] * 10


def test_committed_disaggregated_validation_matches_its_rows():
    """The committed summary's MAPE is the mean |error| of its committed rows (nothing typed)."""
    import csv
    import json

    from sim.files import data_path

    folder = data_path("silicon/validation/disaggregated")
    doc = json.loads((folder / "summary.json").read_text())
    recs = list(csv.DictReader((folder / "rows.csv").open()))
    ok = [r for r in recs if not r["capsim_error"]]
    assert doc["all"]["rows"] == len(recs) == 75
    for m in ("ttft", "tpot"):
        e = np.array([float(r[f"capsim_{m}_err"]) for r in ok])
        assert doc["all"]["capsim"][m]["mape_pct"] == pytest.approx(100 * np.mean(np.abs(e)), abs=0.06)
    assert doc["rows_by_reason"]["representable (disaggregated)"] == 75


def _prefill_heavy_plan() -> dict:
    """Toy GPU, open load of 40 requests/s with 8,000-token prompts and 50-token answers, SLA on
    the P95 time per output token (2.2 ms; a decode step alone is about 2 ms).  An aggregated
    replica mixes 16 ms prefill chunks into its decode steps; a disaggregated decode replica does
    not."""
    from tests.helpers import toy_llm

    return {
        "name": "prefill_heavy",
        "run": {"duration_s": 30, "warmup_s": 5, "replications": 3, "seed": 5},
        "workload": {"mode": "open", "rate_per_s": 40},
        "cache": {"enabled": False},
        "retrieval": {"enabled": False},
        "llm": toy_llm(prompt_tokens=8000, output_tokens=50),
        "sla": {"tpot_ms": {"p95": 2.2}},
        "cost": {"gpu_per_hour": 1.0},
        "plan": {
            "llm.replicas": [1, 2, 3],
            "llm.disaggregated": [None, {"prefill": {"replicas": 1}, "decode": {"replicas": 1}}],
        },
    }


def test_plan_chooses_disaggregated_when_prefills_stall_decodes(tmp_path):
    from sim.run.plan import plan

    d = _prefill_heavy_plan()
    res = plan(d, jobs=1, margin=0.5, knobs=False)
    by = {(c.params["llm.replicas"], c.params["llm.disaggregated"] is not None): c for c in res.candidates}
    w = res.winner
    assert w is by[(1, True)] and w.cost_per_hour == pytest.approx(2.0)  # 1 prefill + 1 decode GPU
    assert w.confirm is not None and w.confirm.verdict == "pass"
    for k in (1, 2, 3):  # every aggregated fleet up to 3 GPUs misses the TPOT target
        agg = by[(k, False)]
        assert agg.best is not None and agg.best.verdict != "pass", (k, agg.best)
    for k in (2, 3):  # a disaggregated deployment has its pools' replicas: one candidate, not three
        assert (by[(k, True)].pruned or "").startswith("same deployment as llm.replicas 1")
    assert res.counts["pruned"] == 2
    # the tables print a disaggregated candidate's value (a mapping) and the JSON holds it
    import io

    from rich.console import Console

    from sim.files import to_json
    from sim.present.plan_tables import print_plan

    buf = io.StringIO()
    print_plan(res, Console(file=buf, width=200))
    assert "disaggregated" in buf.getvalue()
    assert '"prefill"' in to_json(res.to_dict())


def test_the_json_schema_takes_a_pool_gpu_by_catalog_name():
    import jsonschema

    from sim.spec.schema import json_schema

    v = jsonschema.Draft202012Validator(json_schema())
    d = _exact({"prefill": {"gpu": "h200", "tensor_parallel": 2}, "decode": {"replicas": 2}, "link": "roce-400g"})
    assert not list(v.iter_errors(d))
    d["llm"]["disaggregated"]["link"] = "carrier-pigeon"
    assert list(v.iter_errors(d))


def test_a_decode_replica_short_of_kv_preempts_and_recomputes_there():
    """A decode pool on a card with room for 963 KV blocks (12 requests of 1,000 + 200 tokens) and
    20 users: the decode replica preempts, recomputes the preempted requests itself (their KV is
    not handed over again) and every request still gets all its 200 tokens."""
    tiny = {
        "name": "tiny",
        "hbm_bandwidth_gbps": 1000,
        "memory_gb": 2.0,
        "memory_exposed_gib": 1.87,
        "peak_tflops": 1000,
    }
    d = _exact({"prefill": {}, "decode": {"gpu": tiny}, "link_gbps": 1.0})
    d["llm"].update(engine_reserve=0, gpu_memory_utilization=1.0, prompt_tokens=1000, output_tokens=200)
    d["workload"].update(users=20, think_s=0.0)
    d["run"]["duration_s"] = 5.0
    scn = validate_scenario(d)
    assert scn.llm.pool("decode").kv_blocks_usable == 963 and scn.llm.pool("prefill").kv_blocks_usable > 10_000
    rec = run_replication(scn, 0, records=True).records
    assert np.isfinite(rec["ttft_ms"]).all() and (rec["output_tokens"] == 200).all()
    assert rec["preemptions"].sum() > 0
    # 199 decode steps of at least the weights' 2 ms each after the first token
    assert (rec["decode_ms"] >= 199 * 2.0).all()
