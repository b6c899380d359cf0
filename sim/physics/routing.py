"""Fuzzy-routing figures for the simulator, read from a routing calibration file.

Picture: ``capsim calibrate routing`` routed generated shopper utterances
("wher is my ordr #48291??") to the nearest of N canonical questions with
three edit-distance implementations, timed every call, and fitted, per
implementation, ``t = a + b * x`` with ``x = len(u) * sum_q len(q)`` (DP
cells).  It also measured what routing *does*: the share of utterances routed
to their own question (correct), to another (wrong) or to none, at several
thresholds, and how many distinct cache keys a Zipf stream of raw utterances
makes.  This module turns that file into three things the model needs:

1. :meth:`RoutingCalibration.profile` -- the service time of one routed
   utterance against ``questions`` canonical questions: the mean from the
   process-CPU-time law at ``x = mean len(u) * mean len(q) * questions``
   (CPU time, because the calibration box may be shared; the wall time a
   descheduled call adds is not the router's work), with the *shape* of the
   wall-clock quantiles measured at the largest size (``values / mean``).  At a
   measured size the record's own CPU mean is used.
2. :meth:`RoutingCalibration.accuracy` -- correct / wrong / none shares at
   the threshold (one the file swept), from the measured size nearest below
   ``questions`` (the largest when beyond; ``extrapolated``).
3. :meth:`RoutingCalibration.novel_share` -- the variant model: a typed
   utterance is, with probability ``u``, a text no one typed before (a typo,
   an order number, odd punctuation) and otherwise the question's clean
   text.  ``u`` is solved from the measured key cardinality: the expected
   number of distinct raw keys of ``n`` utterances over ``Q`` Zipf(s)
   questions, ``E(u) = u n + sum_q [1 - (1 - (1 - u) p_q)^n]``, equals the
   measured count (``E`` rises with ``u``, so bisection finds it).

Anything the file cannot answer raises :class:`~sim.errors.CalibrationError`
with one line naming what the file has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import CalibrationError
from sim.files import data_path, read_input_text, regular_file_problem

KIND = "capsim.routing_calibration"
VERSION = 1


@dataclass(frozen=True)
class RoutingProfile:
    """Service time of one routed utterance, as quantiles in milliseconds."""

    probs: tuple[float, ...]
    values_ms: tuple[float, ...]
    mean_ms: float
    extrapolated: bool
    description: str


@dataclass(frozen=True)
class RoutingAccuracy:
    """What routing does with an utterance, as shares.

    For an utterance of a question in the canonical set: ``correct`` (routed
    to it), ``wrong`` (to another question), ``none`` (rejected; it keeps its
    raw key); they sum to 1.  For an utterance matching no canonical
    question: ``false_route`` (routed to some question anyway).
    """

    correct: float
    wrong: float
    none: float
    false_route: float
    questions_measured: int
    threshold: float
    extrapolated: bool


def novel_share_from_cardinality(distinct: int, n: int, weights: np.ndarray) -> float:
    """Solve ``u n + sum_q [1 - (1 - (1 - u) p_q)^n] = distinct`` for ``u`` in [0, 1].

    ``p = weights / sum(weights)``.  At ``u = 0`` the left side is the distinct
    questions expected among ``n`` draws; at ``u = 1`` it is ``n``.  A count
    outside that range is clipped to 0 or 1.
    """
    p = np.asarray(weights, dtype=float)
    p = p / p.sum()

    def expected(u: float) -> float:
        return float(u * n + np.sum(1.0 - (1.0 - (1.0 - u) * p) ** n))

    if distinct <= expected(0.0):
        return 0.0
    if distinct >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected(mid) < distinct:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True, eq=False)
class RoutingCalibration:
    """A loaded routing calibration file (see the module docstring)."""

    path: Path
    data: dict[str, Any]

    @property
    def impls(self) -> list[str]:
        return sorted({r["impl"] for r in self.data["records"]})

    @property
    def sizes(self) -> list[int]:
        return sorted({int(r["questions"]) for r in self.data["records"]})

    @property
    def thresholds(self) -> list[float]:
        sw = self.data.get("threshold_sweep") or []
        return sorted({float(t["threshold"]) for s in sw for t in s["by_threshold"]})

    def _records(self, impl: str) -> list[dict[str, Any]]:
        recs = sorted((r for r in self.data["records"] if r["impl"] == impl), key=lambda r: r["questions"])
        if not recs:
            raise CalibrationError(
                f"routing.impl={impl!r} is not in {self.path.name}; it has {', '.join(self.impls)}; "
                f"measure it with: capsim calibrate routing --impls {impl}"
            )
        return recs

    def profile(self, impl: str, questions: int) -> RoutingProfile:
        """Service time of routing one utterance against ``questions`` canonical questions."""
        recs = self._records(impl)
        if not isinstance(questions, int) or isinstance(questions, bool) or questions < 1:
            raise CalibrationError(f"routing.questions={questions!r} must be a positive integer")
        big = recs[-1]
        shape = np.asarray(big["values_ms"], dtype=float) / float(big["mean_ms"])
        probs = tuple(float(p) for p in self.data["probs"])
        exact = [r for r in recs if int(r["questions"]) == questions]
        sizes = [int(r["questions"]) for r in recs]
        if exact:
            mean = float(exact[0]["cpu_time"]["mean_ms"])
            how = f"measured at {questions} questions"
        else:
            fit = next(f for f in self.data["fits"] if f["impl"] == impl)["cpu_time_mean_ms"]
            len_u = float(np.mean([r["mean_len_u"] for r in recs]))
            len_q = float(np.mean([r["mean_len_q"] for r in recs]))
            x = len_u * len_q * questions
            mean = float(fit["a_ms"]) + float(fit["b_ms_per_cell"]) * x
            how = (
                f"law a + b*x at x = {len_u:.3g} x {len_q:.3g} x {questions} = {x:.4g} cells "
                f"(a {fit['a_ms']:.4g} ms, {fit['ns_per_cell']:.4g} ns/cell)"
            )
            if mean <= 0:
                raise CalibrationError(
                    f"routing.questions={questions}: {self.path.name}'s {impl} law gives a non-positive time "
                    f"({mean:.3g} ms) so far below its measured sizes {sizes}; use a measured size"
                )
        extrapolated = not sizes[0] <= questions <= sizes[-1]
        values = tuple(float(v) for v in np.maximum.accumulate(shape * mean))
        desc = (
            f"{impl}, {questions} canonical questions: mean {mean:.4g} ms CPU time ({how}); "
            f"quantile shape of the {big['questions']}-question wall-clock record"
            + ("; extrapolated beyond the measured sizes" if extrapolated else "")
        )
        return RoutingProfile(probs, values, mean, extrapolated, desc)

    def accuracy(self, questions: int, threshold: float) -> RoutingAccuracy:
        """Routing outcome shares at ``threshold`` for a set of ``questions``."""
        sweeps = sorted(self.data.get("threshold_sweep") or [], key=lambda s: s["questions"])
        if not sweeps:
            raise CalibrationError(f"{self.path.name} has no threshold_sweep; re-run capsim calibrate routing")
        below = [s for s in sweeps if int(s["questions"]) <= questions]
        s = below[-1] if below else sweeps[0]
        rows = [t for t in s["by_threshold"] if math.isclose(float(t["threshold"]), threshold, abs_tol=1e-9)]
        if not rows:
            have = ", ".join(f"{t:g}" for t in self.thresholds)
            raise CalibrationError(
                f"routing.threshold={threshold:g} was not measured in {self.path.name} (it has {have}); "
                f"pick one of those or re-run capsim calibrate routing"
            )
        t = rows[0]
        c, w, n = float(t["correct"] or 0), float(t["wrong"] or 0), float(t["none"] or 0)
        total = c + w + n
        sizes = [int(x["questions"]) for x in sweeps]
        return RoutingAccuracy(
            correct=c / total,
            wrong=w / total,
            none=n / total,
            false_route=float(t.get("off_topic_false_route") or 0.0),
            questions_measured=int(s["questions"]),
            threshold=float(threshold),
            extrapolated=not sizes[0] <= questions <= sizes[-1],
        )

    def novel_share(self, key: str = "raw_text") -> float:
        """Share of typed utterances whose text is new (see the module docstring)."""
        ck = self.data.get("cache_keys")
        if not ck or key not in ck:
            raise CalibrationError(f"{self.path.name} has no cache_keys.{key}; re-run capsim calibrate routing")
        q, n, s = int(ck["questions"]), int(ck["utterances"]), float(ck["zipf_s"])
        weights = 1.0 / np.arange(1, q + 1, dtype=float) ** s
        return novel_share_from_cardinality(int(ck[key]["distinct_keys"]), n, weights)


def load_routing_calibration(path: str | Path) -> RoutingCalibration:
    """Read and check a routing calibration file; bad files raise one-line errors."""
    p = Path(path)
    if regular_file_problem(p) == "does not exist":
        raise CalibrationError(
            f"routing.calibration: {p} does not exist; write one with: capsim calibrate routing --out {p}"
        )
    text = read_input_text(p, "routing.calibration:", CalibrationError)  # a FIFO would block, a folder crash
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CalibrationError(f"routing.calibration: {p} is not readable JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise CalibrationError(f"routing.calibration: {p} is not a routing calibration (kind must be {KIND!r})")
    if data.get("version") != VERSION:
        raise CalibrationError(f"routing.calibration: {p} has version {data.get('version')!r}; expected {VERSION}")
    for k in ("records", "fits", "probs", "settings"):
        if k not in data:
            raise CalibrationError(f"routing.calibration: {p} lacks {k!r}; re-run capsim calibrate routing")
    return RoutingCalibration(p, data)


def default_routing_calibration_path() -> Path:
    """The calibration shipped with capsim: ``sim/data/routing_calibration.json``."""
    return data_path("routing_calibration.json")
