"""Default step-cost parameters, fitted to published measurements.

``sim/data/published/fit.json`` is written by ``capsim calibrate published``
(:mod:`sim.calibrate.published`): the roofline's bandwidth efficiency and MFU,
a fixed and a per-sequence step overhead and a per-all-reduce latency, fitted to
the published decode, prefill and throughput points in
``sim/data/published/published_steps.csv``, with each source's points held out
in turn to measure how far an unmeasured configuration can be trusted.

Presets (``llm.efficiency``):

* ``published``: the central fit (the default);
* ``published-slow`` / ``published-fast``: the bootstrap fits (sources resampled)
  whose reference decode step is at the 90th / 10th percentile: "as slow as a slow
  published engine" and "as fast as a fast one";
* ``custom``: nothing is filled in; set the parameters yourself (``capsim
  calibrate gpu`` writes such a fragment from your own engine's steps).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sim.files import data_path

EFFICIENCY_PRESETS: tuple[str, ...] = ("published", "published-slow", "published-fast", "custom")
#: The LLMConfig keys a preset fills.
PARAMETERS: tuple[str, ...] = (
    "bw_efficiency",
    "mfu",
    "step_overhead_ms",
    "step_overhead_per_seq_ms",
    "allreduce_latency_us",
)


@functools.cache
def fit_document() -> dict[str, Any]:
    """The shipped fit (parameters, band, held-out errors, provenance)."""
    text = data_path("published/fit.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def preset_parameters(preset: str) -> dict[str, float]:
    """The step-cost parameters of ``preset`` (empty for ``custom``)."""
    if preset == "custom":
        return {}
    p = fit_document()["presets"][preset]
    return {k: float(p[k]) for k in PARAMETERS}


def provenance(preset: str) -> str:
    """One line saying where the step-cost numbers of ``preset`` come from."""
    if preset == "custom":
        return "llm.efficiency custom: step-cost parameters as set in the scenario"
    doc = fit_document()
    ho = doc["held_out"]
    return (
        f"llm.efficiency {preset}: fitted to {doc['points_fitted']} published points from "
        f"{doc['sources_fitted']} sources (sim/data/published); held-out error when a source is left out: "
        f"decode {ho['decode']['mape_pct']:.0f}% MAPE (signed {ho['decode']['signed_mean_pct']:+.0f}%), "
        f"prefill {ho['prefill']['mape_pct']:.0f}% (signed {ho['prefill']['signed_mean_pct']:+.0f}%)"
    )
