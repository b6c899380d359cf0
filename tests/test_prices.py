"""The price catalog: every figure is what its recorded source quoted, and cost: overrides it."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

import sim
from sim.analysis.dollars import cost_figures, per_hour, prices
from sim.errors import ConfigError
from sim.spec import catalog
from sim.spec.prices import cpu_core_price, gpu_price, priced_gpus

SMALL = Path(__file__).parent / "data" / "rag_small.yaml"


@pytest.mark.parametrize("name", priced_gpus())
def test_each_gpu_price_is_its_quote(name: str) -> None:
    p = gpu_price(name)
    assert p is not None
    assert p.usd_per_hour == pytest.approx(p.from_quote, rel=1e-12)
    assert re.match(r"https://\S+$", p.source)
    assert dt.date.fromisoformat(p.read_on) <= dt.date(2026, 12, 31)
    catalog.gpu(name)  # a priced GPU is a catalog GPU


def test_gpu_prices_by_hand() -> None:
    # RunPod's per-second flex prices, times 3,600 s.
    assert gpu_price("H100-SXM").usd_per_hour == pytest.approx(0.00116 * 3600)  # type: ignore[union-attr]
    assert gpu_price("b200").usd_per_hour == pytest.approx(8.64)  # type: ignore[union-attr]
    assert gpu_price("l4") is None
    assert set(priced_gpus()) >= {"h100-sxm", "h200", "l40s", "a100-80gb", "b200"}


def test_cpu_core_price_is_its_quote() -> None:
    p = cpu_core_price()
    assert p.usd_per_hour == pytest.approx(0.0816 / 2)  # an m7g.large's 2 vCPUs
    assert p.usd_per_hour == pytest.approx(p.from_quote)
    assert p.page_date == "2026-06-17" and p.source.startswith("https://")


def test_empty_cost_section_takes_the_catalog() -> None:
    s = sim.load_scenario(SMALL, {"cost": {}, "llm.replicas": 3, "llm.gpu": "h200"})
    cores = s.retrieval.cpu_cores or s.retrieval.workers
    assert per_hour(s) == pytest.approx(5.58 * 3 + 0.0408 * cores)
    p = prices(s)
    assert p is not None and p["price_date"] == "2026-12-07"
    c = cost_figures(s, 2.0, 100.0)
    assert c is not None and c["price_date"] == "2026-12-07"
    assert c["per_1000_answers"] == pytest.approx(per_hour(s) / 7200 * 1000)  # type: ignore[operator]


def test_scenario_prices_override_and_carry_no_date() -> None:
    s = sim.load_scenario(SMALL, {"cost": {"gpu_per_hour": 1.0, "cpu_core_per_hour": 0.5}, "retrieval.cpu_cores": 3})
    assert per_hour(s) == pytest.approx(1.0 * s.llm.replicas + 0.5 * 3)
    assert prices(s)["price_date"] is None  # type: ignore[index]
    # a per-worker price wins over the per-core one
    w = sim.load_scenario(SMALL, {"cost": {"gpu_per_hour": 1.0, "cpu_worker_per_hour": 0.2}})
    assert per_hour(w) == pytest.approx(1.0 * w.llm.replicas + 0.2 * w.retrieval.workers)


def test_unpriced_gpu_needs_a_price() -> None:
    with pytest.raises(ConfigError, match=r"cost\.gpu_per_hour: .*'l4'.*give cost\.gpu_per_hour"):
        sim.load_scenario(SMALL, {"cost": {}, "llm.gpu": "l4"})
    s = sim.load_scenario(SMALL, {"cost": {"gpu_per_hour": 0.8}, "llm.gpu": "l4"})
    assert prices(s)["gpu_per_hour"] == 0.8  # type: ignore[index]


def test_the_notes_name_the_price_date() -> None:
    from sim.present.headline import report_notes

    notes = dict(report_notes([{"cost": {"price_date": "2026-12-07"}, "stability": {"stable": True}}]))
    assert "read on 2026-12-07" in notes["prices"]
    assert "prices" not in dict(report_notes([{"cost": {"price_date": None}, "stability": {"stable": True}}]))
