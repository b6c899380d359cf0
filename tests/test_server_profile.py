"""The server profile (``capsim calibrate llm --via server``, ``capsim verify --profile-llm``):
the lockstep arithmetic by hand, and the whole profiler against a continuous-batching
server whose step times are known (tests/fake_llm_server.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.errors import CapsimError
from sim.physics.steptable import TableModel, read_rows
from sim.spec.target import Target
from sim.verify.probes import probe_retrieval, probe_wakeup
from sim.verify.step_profile import lockstep_times, one_step, profile_server
from tests.fake_llm_server import FakeEngine, serve
from tests.helpers import invoke

# Steps long enough that a loaded 2-core box's scheduling delays (a few ms) stay small against them.
DECODE_MS = {1: 20.0, 2: 45.0, 3: 60.0, 4: 50.0}  # not monotone, like llama.cpp's batch 3 on one core
PREFILL_BASE_MS, PREFILL_PER_TOKEN_MS = 10.0, 0.5


def test_lockstep_times_by_hand():
    sent, last_first, gap = lockstep_times([0.5, 0.6], [[1.0, 1.1, 1.3, 1.4], [1.05, 1.2, 1.35, 1.6]])
    assert sent == 0.6 and last_first == 1.05
    assert gap == pytest.approx(0.15)  # gaps 0.1, 0.2, 0.1 and 0.15, 0.15 (1.6 is after the first last token)
    # one stream: every gap after its first token
    assert lockstep_times([0.0], [[1.0, 1.02, 1.05]])[2] == pytest.approx(0.025)
    with pytest.raises(CapsimError, match="fewer than 2 tokens"):
        lockstep_times([0.0], [[1.0]])
    with pytest.raises(CapsimError, match="raise --ntg"):  # the streams never decode together
        lockstep_times([0.0, 0.0], [[1.0, 1.1], [2.0, 2.1]])


def test_one_step_by_hand():
    # llama-server's own prompt times: one shared step, or a late prompt in a step of its own
    assert one_step([412.0, 411.5, 412.0], [1.0, 1.0, 1.0], 0.5)
    assert not one_step([412.0, 411.5, 155.0], [1.0, 1.0, 1.2], 0.5)
    # two prompts in two steps one after the other: similar times each, but first tokens a step apart
    # (a profile once read this as a 384-token step of 376 ms)
    assert not one_step([370.0, 372.0], [1.37, 1.74], 1.0)
    # client only: first tokens 0.4 s after the last send, 3 prompts: a share is 0.133 s, half 0.067
    assert one_step(None, [1.38, 1.40, 1.39], 1.0)  # 20 ms of client jitter
    assert not one_step(None, [1.27, 1.27, 1.40], 1.0)  # the third a lone prompt's step later
    assert one_step(None, [1.4], 1.0)


@pytest.fixture(scope="module")
def fake():
    engine = FakeEngine(DECODE_MS, PREFILL_PER_TOKEN_MS, PREFILL_BASE_MS, slots=4)
    srv, port = serve(engine)
    yield engine, port
    srv.shutdown()
    engine.stop.set()


@pytest.fixture
def fake_server(fake):
    return fake[1]


def _target(port: int, parallel: int = 4) -> Target:
    return Target.model_validate({"llm": {"url": f"http://127.0.0.1:{port}", "parallel": parallel}})


def test_profile_recovers_the_servers_own_step_times(fake):
    """Prefill: the server's own prompt_ms, all b prompts in one step: exactly what it reports.
    Decode: the step period while all b decode, held to the period the engine really kept (its
    sleeps overshoot by as much as the box is busy), not to the time it was told."""
    engine, port = fake
    rows = []
    for b in (1, 2, 3, 4):
        since = len(engine.steps)
        rows += profile_server(_target(port), [40], 12, [b], repeat=1)
        step_ms = rows[-1]["t_tg_s"] / rows[-1]["tg"] * 1e3
        assert step_ms == pytest.approx(engine.decode_period_ms(b, since), rel=0.10), (b, step_ms)
    assert [r["b"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert r["pp"] == 40 and r["tg"] == 12
        want = PREFILL_BASE_MS + PREFILL_PER_TOKEN_MS * 40 * r["b"]
        assert r["t_pp_s"] * 1e3 == pytest.approx(want, rel=1e-9), (r["b"], r["t_pp_s"])


def test_without_server_timings_prefill_is_timed_by_the_client():
    engine = FakeEngine(DECODE_MS, PREFILL_PER_TOKEN_MS, PREFILL_BASE_MS, slots=2)
    srv, port = serve(engine, timings=False)
    try:
        rows = profile_server(_target(port, 2), [40], 8, [2], repeat=1)
    finally:
        srv.shutdown()
        engine.stop.set()
    want = PREFILL_BASE_MS + PREFILL_PER_TOKEN_MS * 80
    # the client's clock: the step and the way to the client (no first token before the step is done)
    assert rows[0]["t_pp_s"] * 1e3 >= want * 0.97


def test_calibrate_llm_via_server_writes_a_table_the_simulator_reads(fake, tmp_path):
    engine, port = fake
    since = len(engine.steps)
    tgt = tmp_path / "target.yaml"
    tgt.write_text(f"llm: {{url: 'http://127.0.0.1:{port}', parallel: 4}}\n")
    out = tmp_path / "steps.csv"
    r = invoke(
        "calibrate", "llm", "--target", str(tgt), "--via", "server", "--out", str(out), "--npp", "40", "--ntg", "6"
    )
    assert r.exit_code == 0, r.output
    assert "server profile of" in out.read_text().splitlines()[0]
    table = TableModel(read_rows(out))
    assert table.batches == [1, 2, 3, 4]
    assert table.decode_ms(3, 3 * 43) == pytest.approx(engine.decode_period_ms(3, since), rel=0.10)
    assert (tmp_path / "steps.yaml").is_file()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--via", "gpu"], "--via: must be bench or server"),
        (["--via", "server", "--npl", "1,8"], "exceeds the server's slots"),
        (["--via", "server", "--from-output", "x.txt"], "not with --via server"),
    ],
)
def test_calibrate_llm_via_bad_input_is_one_line_exit_2(fake_server, tmp_path, args, msg):
    tgt = tmp_path / "target.yaml"
    tgt.write_text(f"llm: {{url: 'http://127.0.0.1:{fake_server}', parallel: 4}}\n")
    out = tmp_path / "steps.csv"
    r = invoke("calibrate", "llm", "--target", str(tgt), "--out", str(out), *args)
    assert r.exit_code == 2 and msg in r.stderr and r.stderr.strip().count("\n") == 0, r.output
    assert not out.exists()


def test_wakeup_probe_measures_the_extra_time_after_idle():
    from tests.fake_llm_server import serve_search  # deferred: only this test starts it

    srv, port = serve_search(search_ms=5.0, wakeup_ms=4.0)
    try:
        tgt = Target.model_validate({"retrieval": {"url": f"http://127.0.0.1:{port}", "workers": 1}})
        got = dict(probe_wakeup(tgt, 5, rounds=1, gaps_s=(0.002, 0.05), train_s=0.3, block=8))
        alone = probe_retrieval(tgt, 5, n=30)
    finally:
        srv.shutdown()
    # the fake wakes slowly only after 20 ms idle (4 ms more): the extra shows after 50 ms idle, not
    # after 2 ms; each is measured against the back-to-back searches around it, so a busy box's
    # slower sleeps cancel
    assert set(got) == {2.0, 50.0} and got[50.0] - got[2.0] >= 4.0 * 0.75, got
    assert len(alone) == 30 and float(np.min(alone)) >= 5.0  # back to back: never under the search


def test_a_replayed_load_gets_its_own_profile_file(fake_server, tmp_path):
    """``verify --profile-llm --confirm``: the replay of a load re-profiles the server into a file of
    its own, so the first play's table (named in verify.json) is not overwritten."""
    from sim.verify.step_profile import ServerProfile

    prof = ServerProfile(tmp_path, npp=(40,), ntg=6, repeat=1)
    first = prof.table(_target(fake_server, parallel=2), 4)
    again = prof.table(_target(fake_server, parallel=2), 4, replay=True)
    assert Path(first).name == "steps_4users.csv" and Path(again).name == "steps_4users_replay.csv"
    for path in (first, again):
        assert TableModel(read_rows(Path(path))).batches == [1, 2]


def test_the_batches_profiled_are_every_one_then_doubling_by_hand():
    from sim.verify.step_profile import profile_batches

    assert profile_batches(1) == [1]
    assert profile_batches(4) == [1, 2, 3, 4]
    assert profile_batches(8) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert profile_batches(12) == [1, 2, 3, 4, 5, 6, 7, 8, 12]
    assert profile_batches(16) == [1, 2, 3, 4, 5, 6, 7, 8, 16]
    assert profile_batches(256) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256]
    assert profile_batches(100) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 100]
