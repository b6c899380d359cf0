"""Fuzzy routing: from the question a shopper means to the key the cache sees.

Picture: a shopper who means "where is my order" types "wher is my ordr
#48291??".  Without routing the cache is keyed on that text, which no one
typed before, so it misses.  With routing, a CPU worker finds the nearest
canonical question by edit distance and the cache sees *its* key.

The model (numbers from a routing calibration, :mod:`sim.physics.routing`):

* **Typed variants** -- with probability ``novel_share`` an utterance's text
  is new (a typo, an order number, stray punctuation: its raw key is a fresh
  negative number no later request shares); otherwise it is the question's
  clean text, whose raw key is the question's key.
* **Routing outcome** -- for a question in the canonical set (keys
  ``0 .. questions-1``): routed to it with probability ``correct`` (cache key
  = the question), to a uniformly drawn other canonical question with
  ``wrong``, else not routed (raw key kept).  A question outside the set is
  routed somewhere with ``false_route``, else keeps its raw key.

The hit rate is not a parameter: it emerges from the LRU over these keys.
"""

from __future__ import annotations

import itertools
import math
from typing import TypedDict

import numpy as np

from sim import distributions as D
from sim.errors import CalibrationError
from sim.physics.routing import (
    RoutingAccuracy,
    RoutingProfile,
    default_routing_calibration_path,
    load_routing_calibration,
)
from sim.spec.schema import Scenario

#: ``routing_outcome`` codes in the records.
OFF, ROUTED, KEPT_RAW, WRONG = -1, 0, 1, 2


class RoutingShares(TypedDict):
    """:class:`RoutingAccuracy` as the summary writes it."""

    correct: float
    wrong: float
    none: float
    false_route: float
    measured_at_questions: int


class RoutingInfo(TypedDict, total=False):
    """The routing stage in the summary: where its figures came from (always), and with the
    stage on its configuration, service time and accuracy."""

    source: str
    novel_share: float
    variants: bool
    impl: str
    questions: int
    threshold: float
    workers: int
    mean_service_ms: float
    p95_service_ms: float
    extrapolated: bool
    description: str
    accuracy: RoutingShares


def routing_setup(scn: Scenario) -> tuple[D.Distribution | None, float, RoutingAccuracy | None, RoutingInfo]:
    """What the routing section asks for, from its calibration.

    Returns the service time of one routing call in **seconds** (None when the
    stage is off), the novel-variant share (0 when variants are off), the
    routing accuracy (None when off) and a description for the summary.
    """
    r = scn.routing
    if not r.enabled and not r.typed_variants:
        return None, 0.0, None, {}
    path = r.calibration or str(default_routing_calibration_path())
    cal = load_routing_calibration(path)
    probs = cal.data.get("probs")
    if not isinstance(probs, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in probs):
        raise CalibrationError(
            f"routing.calibration: {path}: probs must be a list of numbers in [0, 1]; re-run capsim calibrate routing"
        )
    try:
        novel = cal.novel_share() if r.typed_variants else 0.0
        prof = cal.profile(r.impl, r.questions) if r.enabled else None
        acc = cal.accuracy(r.questions, r.threshold) if r.enabled else None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, StopIteration, ZeroDivisionError) as e:
        what = f"lacks {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise CalibrationError(
            f"routing.calibration: {path}: not a routing calibration capsim can read ({what}); "
            "re-run capsim calibrate routing"
        ) from None
    _check_profile(path, novel, prof, acc)
    info: RoutingInfo = {"source": path, "novel_share": novel, "variants": r.typed_variants}
    if prof is None or acc is None:
        return None, novel, None, info
    info.update(
        {
            "impl": r.impl,
            "questions": r.questions,
            "threshold": r.threshold,
            "workers": r.workers,
            "mean_service_ms": prof.mean_ms,
            "p95_service_ms": float(np.interp(0.95, prof.probs, prof.values_ms)),
            "extrapolated": prof.extrapolated,
            "description": prof.description,
            "accuracy": {
                "correct": acc.correct,
                "wrong": acc.wrong,
                "none": acc.none,
                "false_route": acc.false_route,
                "measured_at_questions": acc.questions_measured,
            },
        }
    )
    return D.Scaled(D.Quantile(prof.probs, prof.values_ms), 1e-3), novel, acc, info


def _check_profile(path: str, novel: float, prof: RoutingProfile | None, acc: RoutingAccuracy | None) -> None:
    """What the calibration says must be times and shares: finite times >= 0 at ascending
    probabilities in [0, 1], shares in [0, 1].  Else one line naming the file."""

    def bad(what: str) -> CalibrationError:
        return CalibrationError(f"routing.calibration: {path}: {what}; re-run capsim calibrate routing")

    if not (math.isfinite(novel) and 0 <= novel <= 1):
        raise bad(f"the novel-variant share {novel!r} is not in [0, 1]")
    if prof is not None:
        p, v = np.asarray(prof.probs, dtype=float), np.asarray(prof.values_ms, dtype=float)
        if len(p) < 2 or len(p) != len(v):
            raise bad(f"{len(p)} probabilities for {len(v)} per-record times; need as many, at least 2")
        if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all() and (np.diff(p) >= 0).all()):
            raise bad("probs must be ascending numbers in [0, 1]")
        if not (np.isfinite(v).all() and (v >= 0).all() and math.isfinite(prof.mean_ms) and prof.mean_ms > 0):
            raise bad(f"per-record times must be finite and >= 0 ms (mean {prof.mean_ms:g} ms)")
    if acc is not None:
        for name in ("correct", "wrong", "none", "false_route"):
            x = getattr(acc, name)
            if not (math.isfinite(x) and 0 <= x <= 1):
                raise bad(f"routing_accuracy {name} = {x!r} is not a share in [0, 1]")


class Utterances:
    """Turns a question key into ``(cache key, routing outcome)`` with one generator.

    ``novel_ids`` hands out the fresh negative keys of never-seen texts; the
    model shares one among all users so no two typed texts collide.
    """

    __slots__ = ("_acc", "_ids", "_novel", "_questions", "_u")

    def __init__(
        self,
        novel_share: float,
        accuracy: RoutingAccuracy | None,
        questions: int,
        rng: np.random.Generator,
        novel_ids: itertools.count[int],
    ):
        self._novel = novel_share
        self._acc = accuracy
        self._questions = questions
        self._ids = novel_ids
        self._u = D.Sampler(D.Uniform(0.0, 1.0), rng, 256)

    def __call__(self, question: int) -> tuple[int, int]:
        raw = next(self._ids) if self._novel > 0 and self._u() < self._novel else question
        acc = self._acc
        if acc is None:
            return raw, OFF
        u = self._u()
        n = self._questions
        if question < n:
            if u < acc.correct:
                return question, ROUTED
            if u < acc.correct + acc.wrong and n > 1:
                other = min(int(self._u() * (n - 1)), n - 2)
                return (other if other < question else other + 1), WRONG
            return raw, KEPT_RAW
        if u < acc.false_route:
            return min(int(self._u() * n), n - 1), WRONG
        return raw, KEPT_RAW
