"""The `capsim run` command: JSON, --set, --out, exit codes and bad input."""

import json

import pytest
import yaml

from tests.helpers import invoke, small_scenario, write


def test_json_document_has_the_contract_keys(tmp_path):
    p = write(tmp_path, small_scenario(sweep={"workload.users": [30, 40]}))
    r = invoke("run", p, "--json", "--jobs", "1")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["scenario"] == "small"
    assert [pt["params"] for pt in doc["points"]] == [{"workload.users": 30}, {"workload.users": 40}]
    pt = doc["points"][0]
    for key in ("metrics", "throughput_per_s", "cache_hit_rate", "utilization", "completed", "sla"):
        assert key in pt
    for m in (
        "e2e_ms",
        "ttft_ms",
        "retrieval_wait_ms",
        "retrieval_service_ms",
        "llm_wait_ms",
        "prefill_ms",
        "decode_ms",
    ):
        assert set(pt["metrics"][m]) >= {"mean", "p50", "p90", "p95", "p99", "max", "ci"}
    assert set(pt["utilization"]) == {"retrieval", "gpu"}
    assert set(pt["sla"][0]) >= {"metric", "stat", "threshold", "value", "verdict"}


def test_set_overrides_and_exit_code_1_on_failed_sla(tmp_path):
    p = write(tmp_path, small_scenario())
    r = invoke("run", p, "--json", "--jobs", "1", "--set", "sla.e2e_ms.p95=1")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["points"][0]["sla"][0]["verdict"] == "fail"


def test_no_sla_exits_zero_and_table_prints(tmp_path):
    p = write(tmp_path, small_scenario(sla={}))
    r = invoke("run", p, "--jobs", "1", "--replications", "1")
    assert r.exit_code == 0, r.output
    assert "e2e p95" in r.stdout


def test_out_writes_resolved_scenario_summary_and_records(tmp_path):
    import pandas as pd

    p = write(tmp_path, small_scenario())
    out = tmp_path / "out"
    r = invoke("run", p, "--jobs", "1", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    resolved = yaml.safe_load((out / "scenario.resolved.yaml").read_text())
    assert resolved["llm"]["gpu"]["hbm_bandwidth_gbps"] == 3350  # catalog name resolved inline
    assert json.loads((out / "summary.json").read_text()) == json.loads(r.stdout)
    df = pd.read_parquet(out / "records.parquet")
    for col in (
        "request",
        "replication",
        "user",
        "arrival_s",
        "query_key",
        "cache_hit",
        "retrieval_wait_ms",
        "retrieval_service_ms",
        "prompt_tokens",
        "output_tokens",
        "replica",
        "ttft_ms",
        "e2e_ms",
    ):
        assert col in df.columns
    assert set(df["replication"]) == {0, 1}


def test_same_seed_same_records_different_seed_differs():
    import sim

    a = sim.simulate(small_scenario(), keep_records=True).records
    b = sim.simulate(small_scenario(), keep_records=True).records
    c = sim.simulate(small_scenario(), seed=8, keep_records=True).records
    assert a.equals(b)
    assert not a["e2e_ms"].equals(c["e2e_ms"])


BAD = [
    ({"workload": {"mode": "closed", "usres": 5, "think_s": 1}}, "workload.usres: unknown key (did you mean 'users'?"),
    ({"llm": {"replicas": "two"}}, "llm.replicas:"),
    ({"llm": {"replicas": 0}}, "llm.replicas: input should be greater than or equal to 1"),
    ({"retrieval": {"workers": -1}}, "retrieval.workers:"),
    (
        {"workload": {"mode": "closed", "users": 5, "think_s": 1, "queries": {"hot_fraction": 1.5, "hot_keys": 3}}},
        "workload.queries.hot_fraction: input should be less than or equal to 1",
    ),
    (
        {"workload": {"mode": "closed", "users": 5, "think_s": {"dist": "lognormal", "mean": 3}}},
        "workload.think_s.cv: is required",
    ),
    (
        {"workload": {"mode": "closed", "users": 5, "think_s": {"dist": "weibull", "mean": 3}}},
        "workload.think_s: Value error, unknown dist 'weibull'",
    ),
    ({"llm": {"model": "llama-3-70b", "gpu": "l4"}}, "llm: model weights (131.4 GiB per GPU"),
    (
        {"llm": {"engine_reserve": "vllm-9"}},
        "llm.engine_reserve: expected one of vllm-v0.17, vllm-v0.17-graphs, vllm-v0.15, vllm-v0.6, vllm-v0.2, none or a "
        "number of GiB",
    ),
    ({"llm": {"engine_reserve": -1}}, "llm.engine_reserve: expected one of vllm-v0.17"),
    (
        {"llm": {"gpu": {"hbm_bandwidth_gbps": 1, "memory_gb": 40, "peak_tflops": 1, "memory_exposed_gib": 79.19}}},
        "llm.gpu: memory_exposed_gib (79.19) must be 90-100 % of memory_gb (40, read as GiB)",
    ),
    (
        {"llm": {"gpu": {"hbm_bandwidth_gbps": 1, "memory_gb": 80, "peak_tflops": 1, "memory_exposed_gib": 0}}},
        "llm.gpu.memory_exposed_gib: input should be greater than 0",
    ),
    ({"llm": {"gpu": "h100"}}, "llm.gpu: unknown GPU 'h100' (did you mean 'h100-sxm'?"),
    ({"llm": {"model": "llama3"}}, "llm.model: unknown model 'llama3'"),
    ({"sla": {"e2e": {"p95": 800}}}, "sla: Value error, unknown SLA metric 'e2e' (did you mean 'e2e_ms'?"),
    ({"sla": {"e2e_ms": {"p97": 800}}}, "unknown statistic 'p97'"),
    ({"run": {"duration_s": 10, "warmup_s": 20}}, "run: Value error, warmup_s (20.0) must be < duration_s"),
]


@pytest.mark.parametrize("patch,message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, patch, message):
    data = small_scenario()
    for section, val in patch.items():
        if isinstance(val, dict) and isinstance(data.get(section), dict) and section != "workload":
            data[section] = {**data[section], **val}
        else:
            data[section] = val
    p = write(tmp_path, data)
    out = tmp_path / "out"
    r = invoke("run", p, "--out", out)
    assert r.exit_code == 2, r.output
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in r.output
    assert message.replace("Value error, ", "") in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "llm.replicass=2"], "llm.replicass: unknown key (did you mean 'replicas'?"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
        (["--set", "llm.model.layers=3"], "llm.model is 'article-8l'"),
        (["--replications", "0"], "--replications: must be >= 1"),
    ],
)
def test_bad_flags_exit_2(tmp_path, args, message):
    p = write(tmp_path, small_scenario())
    r = invoke("run", p, *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr and r.stderr.count("\n") == 1


def test_missing_file_and_bad_yaml(tmp_path):
    r = invoke("run", tmp_path / "nope.yaml")
    assert r.exit_code == 2 and "does not exist" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("workload: [unclosed\n")
    r = invoke("run", bad)
    assert r.exit_code == 2 and "not valid YAML" in r.stderr


def test_extends_merges_over_base(tmp_path):
    import sim

    write(tmp_path, small_scenario(), "base.yaml")
    child = write(tmp_path, {"extends": "base.yaml", "llm": {"replicas": 3}}, "child.yaml")
    scn = sim.load_scenario(child)
    assert scn.llm.replicas == 3 and scn.llm.gpu.name == "h100-sxm" and scn.workload.users == 30


@pytest.mark.parametrize(
    "patch,message",
    [
        ({"run": {"duration_s": float("inf")}}, "run.duration_s: input should be a finite number"),
        ({"run": {"seed": -1}}, "run.seed: input should be greater than or equal to 0"),
        (
            {"llm": {"enabled": False}, "sla": {"decode_ms": {"p95": 10}}},
            "sla.decode_ms: the llm stage is disabled (llm.enabled: false), so no request measures decode_ms",
        ),
        (
            {"retrieval": {"enabled": False}, "sla": {"retrieval_ms": {"p95": 10}}},
            "sla.retrieval_ms: the retrieval stage",
        ),
        (
            {
                "workload": {"mode": "closed", "users": 2, "think_s": 0},
                "cache": {"enabled": False},
                "retrieval": {"enabled": False},
                "llm": {"enabled": False},
                "sla": {},
            },
            "users would ask forever",
        ),
    ],
)
def test_more_bad_input_exits_2(tmp_path, patch, message):
    data = small_scenario()
    for section, val in patch.items():
        data[section] = {**data[section], **val} if section in ("run", "llm", "retrieval") else val
    r = invoke("run", write(tmp_path, data))
    assert r.exit_code == 2, r.output
    assert message in r.stderr and r.stderr.count("\n") == 1


def test_out_that_is_a_file_fails_before_simulating(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    for cmd in (["run"], ["sweep"]):
        r = invoke(*cmd, write(tmp_path, small_scenario()), "--out", f)
        assert r.exit_code == 2 and "is a file" in r.stderr, r.output
    assert f.read_text() == "x"


def test_calibration_path_in_a_file_is_relative_to_that_file(tmp_path):
    import shutil

    import sim
    from sim.physics.retrieval import default_calibration_path

    (tmp_path / "cal").mkdir()
    shutil.copy(default_calibration_path(), tmp_path / "cal" / "ours.json")
    data = small_scenario()
    data["retrieval"] = {"workers": 2, "calibration": "cal/ours.json", "ef_search": 50}
    scn = sim.load_scenario(write(tmp_path, data))
    assert scn.retrieval.calibration == str(tmp_path / "cal" / "ours.json")


def test_a_request_that_can_never_fit_is_refused_at_load(tmp_path):
    # article-8l on an L4: 24 GB x 0.9 - 3.76 GB of weights leaves ~17.8 GB = ~135k tokens of KV.
    data = small_scenario(llm={"model": "article-8l", "gpu": "l4", "prompt_tokens": 200_000, "output_tokens": 10})
    r = invoke("run", write(tmp_path, data))
    assert r.exit_code == 2, r.output
    assert "llm: the longest request (200000 prompt + 10 output tokens) needs" in r.stderr
