"""The LLM server's own clock (sim/verify/server_clock.py): llama-server's streamed ``timings``, vLLM's
``/metrics`` request histograms, or none.  The parsing and the deltas by hand; the probes and the
profile against servers of each kind whose step times are known (tests/fake_llm_server.py)."""

from __future__ import annotations

import time

import pytest

from sim.physics.steptable import read_rows
from sim.spec.target import Target
from sim.verify.probes import probe_llm
from sim.verify.server_clock import metrics_timings, parse_metrics
from tests.fake_llm_server import FakeEngine, serve

DECODE_MS = {1: 20.0, 2: 45.0}
BASE_MS, PER_TOKEN_MS = 10.0, 0.5

# Two engines' label sets, as vLLM with data parallelism writes them, with the lines to skip.
EXPOSITION = """\
# HELP vllm:request_prefill_time_seconds Histogram of time spent in PREFILL phase for request.
# TYPE vllm:request_prefill_time_seconds histogram
vllm:request_prefill_time_seconds_sum{engine="0",model_name="m"} 1.0
vllm:request_prefill_time_seconds_sum{engine="1",model_name="m"} 0.25
vllm:request_prefill_time_seconds_bucket{engine="0",le="0.3",model_name="m"} 7.0
vllm:request_prefill_time_seconds_count{engine="0",model_name="m"} 6.0
vllm:request_prefill_time_seconds_count{engine="1",model_name="m"} 2.0
vllm:request_prefill_time_seconds_created{engine="0",model_name="m"} 1.764e+09
vllm:request_decode_time_seconds_sum{engine="0",model_name="m"} 4.0
vllm:request_prompt_tokens_sum{engine="0",model_name="m"} 300.0
vllm:request_generation_tokens_sum{engine="0",model_name="m"} 40.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 9.0
vllm:num_requests_running{engine="0",model_name="m"} 1.0
"""


def test_the_metrics_exposition_is_summed_over_label_sets_by_hand():
    got = parse_metrics(EXPOSITION)
    assert got == {
        "prefill_s": 1.25,
        "requests": 8.0,
        "decode_s": 4.0,
        "prompt_tokens": 300.0,
        "generation_tokens": 40.0,
    }


def test_one_requests_times_are_the_change_of_the_sums_by_hand():
    before = parse_metrics(EXPOSITION)
    after = {"prefill_s": 1.31, "requests": 10.0, "decode_s": 4.5, "prompt_tokens": 500.0, "generation_tokens": 62.0}
    got = metrics_timings(before, after)
    # two requests: 200 prompt tokens, 60 ms of prefill, 22 tokens of which 2 came from the prefills
    assert got["prompt_n"] == 100
    assert got["prompt_ms"] == pytest.approx(30.0)
    assert got["predicted_per_token_ms"] == pytest.approx(500.0 / 20)
    assert metrics_timings(before, before) == {}


def _server(decode_ms=DECODE_MS, **kind):
    engine = FakeEngine(decode_ms, PER_TOKEN_MS, BASE_MS, slots=2)
    srv, port = serve(engine, **kind)
    return engine, srv, Target.model_validate({"llm": {"url": f"http://127.0.0.1:{port}", "parallel": 2}})


@pytest.mark.parametrize("kind, clock", [({"timings": True}, "timings"), ({"timings": False}, "none")])
def test_the_probes_read_the_servers_own_clock_or_say_it_has_none(kind, clock):
    engine, srv, target = _server(**kind)
    try:
        probe = probe_llm(target, n=3)
    finally:
        srv.shutdown()
        engine.stop.set()
    gets = srv.RequestHandlerClass.metrics_gets[0]
    assert probe["server_clock"] == clock and probe["bos_tokens"] == 0
    alone = probe["server_alone"]  # 96-token prompts, 24 tokens decoded alone
    prefill_ms = BASE_MS + PER_TOKEN_MS * 96
    if clock == "timings":
        # the server's own clock: exactly the prefill it was told (the client's would be later)
        assert alone["prompt_ms"] == pytest.approx(prefill_ms, abs=1e-6)
        assert probe["overhead_ms"] >= 0.0
        assert gets == 0  # llama-server's path sends nothing more than it did
    else:
        # the client's clock: the prompt with the call's overhead in it, which verify then adds nowhere
        assert probe["overhead_ms"] == 0.0
        assert alone["prompt_ms"] >= prefill_ms  # no first token before its step is done
        # from the tokens' arrivals: the period the engine really kept between them
        assert alone["decode_ms_per_token"] == pytest.approx(engine.decode_period_ms(1), rel=0.10)
        assert gets == 1  # asked once whether the server keeps metrics


def test_verify_runs_end_to_end_against_a_server_that_reports_times_only_on_metrics(tmp_path):
    """``capsim calibrate llm --via server`` and ``capsim verify`` against a vLLM-shaped server (no
    streamed timings, /metrics histograms): the profile's prefill steps, mixed ones too, are the
    server's own (its histograms' change across each batch, exactly what it was told: the client's
    clock would add the fake's 10-ms wait for the rest of a burst), the overhead is measured against that clock, and the
    preamble and the JSON say so."""
    import json
    from pathlib import Path

    import yaml

    from tests.helpers import invoke, verify_exit_code

    engine, srv, target = _server(decode_ms={1: 8.0, 2: 12.0}, timings=False, metrics=True)
    try:
        tgt = tmp_path / "target.yaml"
        tgt.write_text(f"llm: {{url: '{target.llm_endpoint().url}', parallel: 2}}\n")
        steps = tmp_path / "steps.csv"
        calibrate = ["calibrate", "llm", "--target", str(tgt), "--via", "server", "--out", str(steps)]
        r = invoke(*calibrate, "--npp", "40", "--ntg", "4", "--npl", "1,2", "--repeat", "1")
        assert r.exit_code == 0, r.output
        assert "prompt times from the server's /metrics histograms" in steps.read_text().splitlines()[0]
        rows = read_rows(steps)
        prefill = {(int(b), int(n)): ms for b, _ctx, n, ms, mixed in rows if n > b and not mixed}
        # a 40-token prompt prefilled beside one decoding sequence: 41 new tokens in the step
        mixed = {(int(b), int(n)): ms for b, _ctx, n, ms, mixed in rows if mixed}
        assert mixed == {(2, 41): pytest.approx(BASE_MS + PER_TOKEN_MS * 41, abs=1e-6)}
        assert prefill == {(1, 40): pytest.approx(BASE_MS + PER_TOKEN_MS * 40, abs=1e-6)} | {
            (2, 80): pytest.approx(BASE_MS + PER_TOKEN_MS * 80, abs=1e-6)
        }
        root = Path(__file__).resolve().parents[1]
        scn = yaml.safe_load((root / "scenarios" / "verify_local.yaml").read_text())
        scn["run"].update(duration_s=3, warmup_s=0.5, replications=2)
        scn["workload"].update(users=2, think_s={"dist": "exponential", "mean": 0.3})
        scn["cache"]["enabled"] = False
        scn["retrieval"]["enabled"] = False
        scn["llm"].update(step_table=str(steps), max_batch=2)
        scn["llm"]["prompt_tokens"] = {"system_tokens": 40, "doc_tokens": 0, "question_tokens": 8}
        scn["llm"]["output_tokens"] = {"dist": "constant", "value": 8}
        path = tmp_path / "vllm_like.yaml"
        path.write_text(yaml.safe_dump(scn))
        out = tmp_path / "out"
        res = invoke("verify", str(path), "--target", str(tgt), "--users", "2", "--duration-s", "3", "--out", str(out))
    finally:
        srv.shutdown()
        engine.stop.set()
    assert "from its /metrics request histograms" in " ".join(res.stdout.split())  # as rich wraps it
    doc = json.loads((out / "verify.json").read_text())
    # its steps sleep on a shared box, so the verdicts are not asserted here (an exact service's
    # are, in test_verify_exact.py); whichever they are, the exit code is theirs
    assert res.exit_code == verify_exit_code(doc), res.output
    assert doc["calibration"]["llm_server_clock"] == "metrics"
    assert doc["calibration"]["llm_overhead_ms"] >= 0.0
    load = doc["loads"][0]
    assert load["failures"] == 0 and load["requests"] > 5
    # the scenario has no retrieval stage: no retrieval rows
    assert {r["metric"] for r in load["rows"]} == {"e2e_ms", "ttft_ms", "throughput_per_s"}


@pytest.mark.parametrize("kind", [{"timings": False, "metrics": True}, {"timings": True}])
def test_a_token_streamed_without_text_is_still_the_first_token(kind):
    """vLLM streams a token that ends inside a UTF-8 character as text "" (the fake's first token, in
    its vLLM shape): the first token is that chunk, not the next one; and llama-server's closing
    chunk (text "", finish_reason set) is no token.  The engine holds its next step until the test
    has looked: the client has the first token while the second does not exist yet."""
    import threading

    from sim.verify.loadgen import complete

    engine, srv, target = _server(decode_ms={1: 5.0}, **kind)
    llm = target.llm_endpoint()
    times: list[float] = []
    result: list[tuple] = []
    gate = threading.Event()
    call = threading.Thread(target=lambda: result.append(complete(llm.url, llm.model, [500] * 20, 3, 30.0, times)))
    try:
        complete(llm.url, llm.model, [500] * 20, 2, 10.0)  # warm
        engine.hold_after_prefill = gate
        call.start()
        for _ in range(3000):  # until the first token is in (a bound for a failure, not on a latency)
            if times or not call.is_alive():
                break
            time.sleep(0.01)
        before_the_second = list(times)
        gate.set()
        call.join(30)
    finally:
        gate.set()
        srv.shutdown()
        engine.stop.set()
    assert len(before_the_second) == 1, before_the_second
    first, _end, got, _tim = result[0]
    assert first == times[0] == before_the_second[0]
    assert got == 3 and len(times) == 3, times
