"""Real retrieval calibration: measure hnswlib / numpy / faiss indexes on this
machine and turn the measurements into latency profiles for the simulator.

The flow is one-way::

    corpus.make_corpus / --vectors FILE
        -> retrieval.run_calibration  (real builds, real queries, timed)
        -> retrieval.write_calibration (JSON, atomic)
        -> profile.load_calibration -> Calibration.profile(...) -> RetrievalProfile
        -> profile.sample_quantiles (inverse-CDF draws inside the simulator)

``cli.app`` is the ``capsim calibrate`` Typer app (command ``retrieval``).
"""

from __future__ import annotations

from sim.calibrate.corpus import GENERATOR_DEFAULTS, make_corpus, make_queries
from sim.calibrate.profile import (
    Calibration,
    RetrievalProfile,
    default_calibration_path,
    load_calibration,
    sample_quantiles,
)
from sim.calibrate.retrieval import (
    INDEXES,
    PROBS,
    fit_law,
    law_x,
    run_calibration,
    write_calibration,
)

__all__ = [
    "GENERATOR_DEFAULTS",
    "INDEXES",
    "PROBS",
    "Calibration",
    "RetrievalProfile",
    "default_calibration_path",
    "fit_law",
    "law_x",
    "load_calibration",
    "make_corpus",
    "make_queries",
    "run_calibration",
    "sample_quantiles",
    "write_calibration",
]
