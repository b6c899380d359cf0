"""``capsim verify`` end to end against a search service whose times are exact: its verdicts.

The service is one worker serving each search in exactly ``search_ms`` in order of arrival;
its probes report that time, its live loads are computed from it on the load generator's own
streams (each user's think times drawn as :class:`sim.verify.loadgen._User` draws them), with
no clock read and no sleep.  A live system that behaves as its probes say is predicted within
every bound (the simulation replays the same think times: the errors are 0); one whose
searches run 30 % slower under load than alone is outside, so a prediction that misses fails
here whatever the machine's load.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from sim import distributions as D
from sim.engine.digest import RELATIVE_ERROR
from sim.engine.pipeline import TokenCounts
from sim.physics.gpu import attention_pairs
from sim.physics.steptable import load_table
from sim.rng import stream
from sim.spec.schema import Scenario, build_distribution
from sim.spec.target import Target
from sim.verify.loadgen import COLUMNS, LIVE_REP, LiveRun
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[1]


class ExactService:
    """One worker, FIFO, every search exactly ``search_ms`` alone and ``live_ms`` under load."""

    def __init__(self, search_ms: float, live_ms: float):
        self.search_ms, self.live_ms = search_ms, live_ms
        self.loads: list[int] = []

    def reachable(self, target: Target) -> None:
        pass

    def probe_retrieval(self, target: Target, k: int, n: int = 200, **kw) -> np.ndarray:
        return np.full(n, self.search_ms)

    def probe_wakeup(self, target: Target, k: int, **kw) -> list[tuple[float, float]]:
        return [(g, 0.0) for g in (1.0, 3.0, 10.0, 30.0, 100.0)]

    def probe_contention(self, target: Target, k: int, alone_ms: np.ndarray, **kw) -> tuple[tuple, list]:
        return (), []  # one worker: nothing runs beside a search

    def run_load(self, scn: Scenario, target: Target, users: int, duration_s: float, drain_s: float, bos: int):
        """The closed loop, computed: user ``u`` thinks, asks at ``t``, its search starts when
        the worker is free and takes ``live_ms``; arrivals stop at ``duration_s``."""
        self.loads.append(users)

        def serve(u: int, t: float, free: float) -> tuple[tuple, float]:
            end = max(t, free) + self.live_ms / 1e3
            return (u, t, end), end

        rows = closed_loop(scn, users, duration_s, serve)
        rec = {c: np.zeros(len(rows)) for c in COLUMNS}
        rec["user"] = np.array([r[0] for r in rows])
        rec["t_start_s"] = np.array([r[1] for r in rows])
        rec["llm_sent_s"] = rec["llm_end_s"] = np.array([r[2] for r in rows])
        rec["retrieval_ms"] = rec["e2e_ms"] = (rec["llm_end_s"] - rec["t_start_s"]) * 1e3
        rec["ttft_ms"] = np.full(len(rows), np.nan)
        return live_run(rec, users, duration_s)


def closed_loop(
    scn: Scenario, users: int, duration_s: float, serve: Callable[[int, float, float], tuple[tuple, float]]
) -> list[tuple]:
    """The closed loop, computed on the load generator's own think-time streams: user ``u`` thinks,
    asks at ``t``; ``serve(u, t, free)`` (``free``: when the server is next free) gives the
    request's row and when the server is free again, which is when ``u`` thinks anew.  Arrivals
    stop at ``duration_s``; the rows, in order of service."""
    think = [
        D.Sampler(build_distribution(scn.workload.think_s), stream(scn.run.seed, LIVE_REP, "user", u), 64)
        for u in range(users)
    ]
    due = [think[u]() for u in range(users)]
    free, rows = 0.0, []
    while min(due) < duration_s:
        u = int(np.argmin(due))
        row, free = serve(u, due[u], free)
        rows.append(row)
        due[u] = free + think[u]()
    return rows


def live_run(rec: dict[str, np.ndarray], users: int, duration_s: float) -> LiveRun:
    """The computed records as the load generator returns them: every request answered, no cache
    hit, in order of arrival."""
    n = len(rec["t_start_s"])
    rec["ok"] = np.ones(n, dtype=bool)
    rec["cache_hit"] = np.zeros(n, dtype=bool)
    rec["error"] = np.array([""] * n)
    order = np.argsort(rec["t_start_s"], kind="stable")
    return LiveRun(users, duration_s, {c: v[order] for c, v in rec.items()}, duration_s, 0.0, [])


def _play(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, svc: ExactService, segments: int, *flags: str
) -> tuple[int, str]:
    import sim.verify.run as run_mod
    import sim.verify.segments as seg_mod

    for mod in (run_mod, seg_mod):
        monkeypatch.setattr(mod, "run_load", svc.run_load, raising=False)
        monkeypatch.setattr(mod, "probe_retrieval", svc.probe_retrieval, raising=False)
    monkeypatch.setattr(run_mod, "check_reachable", svc.reachable)
    monkeypatch.setattr(run_mod, "probe_wakeup", svc.probe_wakeup)
    monkeypatch.setattr(run_mod, "probe_contention", svc.probe_contention)
    tgt, scn = _files(
        tmp_path,
        "retrieval: {url: 'http://127.0.0.1:9', workers: 1}\n",
        f"extends: {ROOT / 'scenarios' / 'verify_retrieval.yaml'}\nretrieval: {{workers: 1, cpu_cores: null}}\n",
    )
    argv = ["verify", str(scn), "--target", str(tgt), "--users", "3", "--duration-s", "40"]
    res = invoke(*argv, "--warmup-s", "5", "--segments", str(segments), "--out", str(tmp_path / "out"), *flags)
    return res.exit_code, res.stdout


def _files(tmp_path: Path, target: str, scenario: str) -> tuple[Path, Path]:
    """The target file and the scenario file, written under ``tmp_path``."""
    tgt, scn = tmp_path / "target.yaml", tmp_path / "s.yaml"
    tgt.write_text(target)
    scn.write_text(scenario)
    return tgt, scn


def _verdicts(doc: dict) -> dict[tuple[str, str], str | None]:
    return {(r["metric"], r["stat"]): r["verdict"] for r in doc["loads"][0]["rows"]}


@pytest.mark.parametrize("segments", [1, 2])
def test_a_service_that_behaves_as_probed_is_predicted_within_every_bound(tmp_path, monkeypatch, segments):
    """Searches of exactly 8 ms, alone and under load: the prediction replays the live run's
    think times, so every latency and the throughput match, all within: to 1e-6, or with one
    segment (percentiles from the summary's streaming histograms) within their 0.5 %."""
    svc = ExactService(8.0, 8.0)
    code, out = _play(tmp_path, monkeypatch, svc, segments, "--json")
    doc = json.loads(out)
    assert svc.loads == [3] * segments
    rows = doc["loads"][0]["rows"]
    bounded = [r for r in rows if r["bound"] is not None]
    assert len(bounded) == 5 and all(r["verdict"] == "within" for r in bounded), rows
    tol = RELATIVE_ERROR * (1 + 1e-6) if segments == 1 else 1e-6
    assert all(abs(r["rel_error"]) < tol for r in rows), [(r["metric"], r["stat"], r["rel_error"]) for r in rows]
    assert code == 0


@pytest.mark.parametrize("segments", [1, 2])
def test_a_service_slower_under_load_than_probed_is_outside(tmp_path, monkeypatch, segments):
    """Probed at 8 ms, serving at 10.4 ms (30 % slower) under load: every search of the live
    run takes 10.4 ms or more, so the predicted P50 (8 ms plus its queueing) is more than 10 %
    under the measured one in every segment; the row is outside and verify exits 1."""
    code, out = _play(tmp_path, monkeypatch, ExactService(8.0, 10.4), segments, "--json")
    doc = json.loads(out)
    got = _verdicts(doc)
    assert got[("retrieval_ms", "p50")] == "outside" and got[("e2e_ms", "p50")] == "outside", doc["loads"][0]["rows"]
    p50 = next(r for r in doc["loads"][0]["rows"] if (r["metric"], r["stat"]) == ("e2e_ms", "p50"))
    assert p50["measured"] >= 10.4 and p50["rel_error"] < -0.10
    assert code == 1


def test_the_table_prints_each_row_with_its_verdict_then_the_loads_health(tmp_path, monkeypatch):
    """Without --json: one table line per compared statistic (measured, predicted, error,
    bound, verdict), then the load's utilisation and its requests and failures."""
    code, out = _play(tmp_path, monkeypatch, ExactService(8.0, 10.4), 1)
    assert code == 1 and "capsim verify: measured vs predicted" in out
    lines = [" ".join(line.replace("│", " ").split()) for line in out.splitlines()]
    doc = json.loads((tmp_path / "out" / "verify.json").read_text())
    load = doc["loads"][0]
    for r in load["rows"]:
        row = next(x for x in lines if x.startswith(f"3 {r['metric']} {r['stat']} "))
        # the last two columns: the bound and the verdict (a row without a bound has neither)
        assert row.endswith(" -" if r["bound"] is None else f" {r['bound']:.0%} {r['verdict']}"), row
    assert any(x.startswith(f"3 requests / failed / loadgen {load['requests']} / 0 ") for x in lines), lines
    assert any(x.startswith("3 utilisation gpu / retrieval ") for x in lines), lines


class ExactLLM:
    """One slot, first come first served, each request's steps exactly as the step table says
    (``slow`` times that under load): its prompt in one prefill step, which makes the first
    token, then a decode step per further token, the context growing by one each step."""

    def __init__(self, table: Path, slow: float = 1.0):
        self.table, self.slow = load_table(table), slow

    def probe_llm(self, target: Target, **kw) -> dict:
        """Alone: no BOS added, no HTTP overhead, the server's own clock agreeing with the table."""
        n, out = 96, 24
        return {
            "bos_tokens": 0,
            "overhead_ms": 0.0,
            "server_clock": "timings",
            "server_alone": {
                "prompt_tokens": n,
                "output_tokens": out,
                "prompt_ms": self.table.prefill_ms(n, attention_pairs(n, 0)),
                "decode_ms_per_token": self.table.decode_ms(1, n + out / 2),
            },
        }

    def run_load(self, scn: Scenario, target: Target, users: int, duration_s: float, drain_s: float, bos: int):
        """The closed loop, computed on the load generator's own streams: user ``u`` thinks, asks
        at ``t`` for the tokens it draws, is served when the slot is free; arrivals stop at
        ``duration_s``."""
        seed = scn.run.seed
        tokens = [
            TokenCounts(scn, stream(seed, LIVE_REP, "tokens", u), 64, stream(seed, LIVE_REP, "output_tokens", u))
            for u in range(users)
        ]

        def serve(u: int, t: float, free: float) -> tuple[tuple, float]:
            prompt, output = tokens[u]()
            prefill_s = self.slow * self.table.prefill_ms(prompt, attention_pairs(prompt, 0)) / 1e3
            decode_s = self.slow * self.table.epoch_ms(1, prompt + 1, output - 1) / 1e3
            first = max(t, free) + prefill_s
            return (u, t, first, first + decode_s, prompt, output), first + decode_s

        rows = closed_loop(scn, users, duration_s, serve)
        rec = {c: np.zeros(len(rows)) for c in COLUMNS}
        for c, i in (("user", 0), ("t_start_s", 1), ("llm_sent_s", 1), ("llm_end_s", 3)):
            rec[c] = np.array([r[i] for r in rows])
        rec["prompt_tokens"] = np.array([r[4] for r in rows])
        rec["output_tokens"] = rec["tokens_received"] = np.array([r[5] for r in rows])
        rec["ttft_ms"] = np.array([(r[2] - r[1]) * 1e3 for r in rows])
        rec["e2e_ms"] = (rec["llm_end_s"] - rec["t_start_s"]) * 1e3
        rec["server_prompt_ms"] = rec["server_decode_ms_per_token"] = np.full(len(rows), np.nan)
        return live_run(rec, users, duration_s)


def _play_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm: ExactLLM) -> tuple[int, dict]:
    import sim.verify.run as run_mod

    monkeypatch.setattr(run_mod, "run_load", llm.run_load)
    monkeypatch.setattr(run_mod, "check_reachable", lambda target: None)
    monkeypatch.setattr(run_mod, "probe_llm", llm.probe_llm)
    tgt, scn = _files(
        tmp_path,
        "llm: {url: 'http://127.0.0.1:9', parallel: 1, n_batch: 2048}\n",
        f"extends: {ROOT / 'scenarios' / 'verify_local.yaml'}\n"
        "workload: {think_s: {dist: lognormal, mean: 1.0, cv: 1.0}}\n"
        "cache: {enabled: false}\nretrieval: {enabled: false}\n"
        f"llm: {{step_table: {STEPS}}}\n",
    )
    argv = ["verify", str(scn), "--target", str(tgt), "--users", "3", "--duration-s", "60", "--warmup-s", "5"]
    res = invoke(*argv, "--json")
    return res.exit_code, json.loads(res.stdout)


STEPS = ROOT / "scenarios" / "verify_local_steps.csv"


def test_an_llm_server_that_steps_as_its_table_says_is_predicted_within_every_bound(tmp_path, monkeypatch):
    """One slot whose every step takes what the step table says: the prediction replays the live
    run's think times and token counts through the same steps, so TTFT, end to end and the
    throughput match (means to 1e-6, percentiles within the streaming histograms' error: the
    measured side is exact, the predicted one streamed), all within their bounds, exit 0."""
    code, doc = _play_llm(tmp_path, monkeypatch, ExactLLM(STEPS))
    rows = doc["loads"][0]["rows"]
    assert {(r["metric"], r["stat"]) for r in rows} >= {
        ("ttft_ms", "p95"),
        ("e2e_ms", "p50"),
        ("throughput_per_s", "mean"),
    }
    bounded = [r for r in rows if r["bound"] is not None]
    assert len(bounded) == 5 and all(r["verdict"] == "within" for r in bounded), rows
    # percentiles from the summary's streaming histograms: within their stated relative error
    tol = {"mean": 1e-6}
    assert all(abs(r["rel_error"]) <= tol.get(r["stat"], RELATIVE_ERROR) for r in rows), [
        (r["metric"], r["stat"], r["rel_error"]) for r in rows
    ]
    assert code == 0


def test_an_llm_server_slower_under_load_than_its_table_is_outside(tmp_path, monkeypatch):
    """Every step 30 % slower than the table under load: each request's TTFT is 30 % more than its
    prefill step as the table has it, and more again in the queue, so the predicted TTFT and
    end-to-end P50 are more than 10 % under the measured ones: outside, exit 1."""
    code, doc = _play_llm(tmp_path, monkeypatch, ExactLLM(STEPS, slow=1.3))
    got = _verdicts(doc)
    assert got[("ttft_ms", "p50")] == "outside" and got[("e2e_ms", "p50")] == "outside", doc["loads"][0]["rows"]
    p50 = next(r for r in doc["loads"][0]["rows"] if (r["metric"], r["stat"]) == ("e2e_ms", "p50"))
    assert p50["rel_error"] < -0.10
    assert code == 1
