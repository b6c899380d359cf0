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
from pathlib import Path

import numpy as np
import pytest

from sim import distributions as D
from sim.engine.digest import RELATIVE_ERROR
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
        think = [
            D.Sampler(build_distribution(scn.workload.think_s), stream(scn.run.seed, LIVE_REP, "user", u), 64)
            for u in range(users)
        ]
        due = [think[u]() for u in range(users)]
        free, rows = 0.0, []
        while min(due) < duration_s:
            u = int(np.argmin(due))
            t = due[u]
            end = max(t, free) + self.live_ms / 1e3
            free = end
            rows.append((u, t, end))
            due[u] = end + think[u]()
        rec = {c: np.zeros(len(rows)) for c in COLUMNS}
        rec["user"] = np.array([r[0] for r in rows])
        rec["t_start_s"] = np.array([r[1] for r in rows])
        rec["llm_sent_s"] = rec["llm_end_s"] = np.array([r[2] for r in rows])
        rec["retrieval_ms"] = rec["e2e_ms"] = (rec["llm_end_s"] - rec["t_start_s"]) * 1e3
        rec["ttft_ms"] = np.full(len(rows), np.nan)
        rec["ok"] = np.ones(len(rows), dtype=bool)
        rec["cache_hit"] = np.zeros(len(rows), dtype=bool)
        rec["error"] = np.array([""] * len(rows))
        order = np.argsort(rec["t_start_s"], kind="stable")
        return LiveRun(users, duration_s, {c: v[order] for c, v in rec.items()}, duration_s, 0.0, [])


def _play(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, svc: ExactService, segments: int) -> tuple[int, dict]:
    import sim.verify.run as run_mod
    import sim.verify.segments as seg_mod

    for mod in (run_mod, seg_mod):
        monkeypatch.setattr(mod, "run_load", svc.run_load, raising=False)
        monkeypatch.setattr(mod, "probe_retrieval", svc.probe_retrieval, raising=False)
    monkeypatch.setattr(run_mod, "check_reachable", svc.reachable)
    monkeypatch.setattr(run_mod, "probe_wakeup", svc.probe_wakeup)
    monkeypatch.setattr(run_mod, "probe_contention", svc.probe_contention)
    tgt = tmp_path / "target.yaml"
    tgt.write_text("retrieval: {url: 'http://127.0.0.1:9', workers: 1}\n")
    scn = tmp_path / "s.yaml"
    scn.write_text(
        f"extends: {ROOT / 'scenarios' / 'verify_retrieval.yaml'}\nretrieval: {{workers: 1, cpu_cores: null}}\n"
    )
    argv = ["verify", str(scn), "--target", str(tgt), "--users", "3", "--duration-s", "40"]
    res = invoke(*argv, "--warmup-s", "5", "--json", "--segments", str(segments), "--out", str(tmp_path / "out"))
    return res.exit_code, json.loads(res.stdout)


def _verdicts(doc: dict) -> dict[tuple[str, str], str | None]:
    return {(r["metric"], r["stat"]): r["verdict"] for r in doc["loads"][0]["rows"]}


@pytest.mark.parametrize("segments", [1, 2])
def test_a_service_that_behaves_as_probed_is_predicted_within_every_bound(tmp_path, monkeypatch, segments):
    """Searches of exactly 8 ms, alone and under load: the prediction replays the live run's
    think times, so every latency and the throughput match, all within: to 1e-6, or with one
    segment (percentiles from the summary's streaming histograms) within their 0.5 %."""
    svc = ExactService(8.0, 8.0)
    code, doc = _play(tmp_path, monkeypatch, svc, segments)
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
    code, doc = _play(tmp_path, monkeypatch, ExactService(8.0, 10.4), segments)
    got = _verdicts(doc)
    assert got[("retrieval_ms", "p50")] == "outside" and got[("e2e_ms", "p50")] == "outside", doc["loads"][0]["rows"]
    p50 = next(r for r in doc["loads"][0]["rows"] if (r["metric"], r["stat"]) == ("e2e_ms", "p50"))
    assert p50["measured"] >= 10.4 and p50["rel_error"] < -0.10
    assert code == 1
