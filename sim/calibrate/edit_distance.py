"""Levenshtein distance, three ways, and the fuzzy router built on it.

Levenshtein distance with unit costs: the fewest single-character inserts,
deletes and substitutions turning ``a`` into ``b``.  With ``D[i][j]`` the
distance between the prefixes ``a[:i]`` and ``b[:j]``:

    D[i][0] = i,   D[0][j] = j
    D[i][j] = min( D[i-1][j]   + 1,                      # delete a[i-1]
                   D[i][j-1]   + 1,                      # insert b[j-1]
                   D[i-1][j-1] + (a[i-1] != b[j-1]) )    # match / substitute

and the answer is ``D[m][n]`` (``m = len(a)``, ``n = len(b)``).  Filling the
table costs ``m*n`` cell updates, so routing an utterance ``u`` against
canonical questions ``q_1..q_N`` costs about ``len(u) * sum_k len(q_k)``
cells -- the regressor of the scaling law in ``calibrate_routing.py``.

Implementations:

* :func:`numpy_table` -- the article's approach: a full ``(m+1) x (n+1)``
  numpy integer table filled by a Python double loop (every cell is numpy
  scalar indexing, so it is the slowest of the three).
* :func:`two_row` -- the same recurrence in pure Python keeping only the
  previous and current row (``O(min(m, n))`` memory).
* :func:`rapidfuzz_distance` -- ``rapidfuzz.distance.Levenshtein.distance``
  (C++, bit-parallel; imported lazily).  The router uses it two ways:
  ``rapidfuzz`` passes the threshold as ``score_cutoff`` (candidates whose
  length difference alone exceeds it are skipped, the rest may stop early);
  ``rapidfuzz_nocutoff`` scores every question in full and applies the
  threshold afterwards -- same answers, and the calibration times both.

:func:`route` maps an utterance to its nearest canonical question.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sim.calibrate.utterances import normalize

IMPLS: tuple[str, ...] = ("rapidfuzz", "rapidfuzz_nocutoff", "two_row", "numpy_table")

#: Default routing threshold: normalised distance ``d / max(len(u), len(q))``.
DEFAULT_THRESHOLD = 0.3


def numpy_table(a: str, b: str) -> int:
    """Levenshtein distance by the full DP table (the article's version).

    Allocates ``D = np.zeros((m+1, n+1))``, sets ``D[i,0] = i``,
    ``D[0,j] = j`` and fills every cell with
    ``D[i,j] = min(D[i-1,j] + 1, D[i,j-1] + 1, D[i-1,j-1] + (a[i-1] != b[j-1]))``
    in a Python double loop.  Returns ``D[m,n]``.  Time ``O(m*n)``, memory
    ``O(m*n)``.
    """
    m, n = len(a), len(b)
    D = np.zeros((m + 1, n + 1), dtype=np.int64)
    D[:, 0] = np.arange(m + 1)
    D[0, :] = np.arange(n + 1)
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            D[i, j] = min(D[i - 1, j] + 1, D[i, j - 1] + 1, D[i - 1, j - 1] + cost)
    return int(D[m, n])


def two_row(a: str, b: str) -> int:
    """Levenshtein distance in pure Python with two rows of the DP table.

    Same recurrence as :func:`numpy_table`; ``prev`` holds row ``i-1`` and
    ``cur`` row ``i``: ``cur[j] = min(prev[j] + 1, cur[j-1] + 1,
    prev[j-1] + (a[i-1] != b[j-1]))``.  The shorter string indexes the
    columns, so memory is ``O(min(m, n))``; time ``O(m*n)``.
    """
    if len(a) < len(b):
        a, b = b, a
    n = len(b)
    if n == 0:
        return len(a)
    prev = list(range(n + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * n
        for j, cb in enumerate(b, 1):
            d = prev[j - 1] + (ca != cb)
            x = prev[j] + 1
            if x < d:
                d = x
            x = cur[j - 1] + 1
            if x < d:
                d = x
            cur[j] = d
        prev = cur
    return prev[n]


def rapidfuzz_distance(a: str, b: str, score_cutoff: int | None = None) -> int:
    """Levenshtein distance by ``rapidfuzz.distance.Levenshtein.distance``.

    With ``score_cutoff=k`` rapidfuzz may stop early and returns ``k + 1``
    for any distance above ``k`` (exact below or at ``k``).
    """
    from rapidfuzz.distance import Levenshtein  # lazy: the pure versions need no compiled package

    return int(Levenshtein.distance(a, b, score_cutoff=score_cutoff))


DISTANCES: dict[str, Callable[[str, str], int]] = {
    "numpy_table": numpy_table,
    "two_row": two_row,
    "rapidfuzz": rapidfuzz_distance,
}


def allowed_distance(threshold: float | int, len_u: int, len_q: int) -> float:
    """Largest accepted distance between texts of lengths ``len_u``, ``len_q``.

    * ``threshold`` a ``float`` in ``[0, 1]``: ``threshold * max(len_u, len_q)``
      -- i.e. accept when the normalised distance
      ``d / max(len(u), len(q)) <= threshold`` (rapidfuzz's
      ``Levenshtein.normalized_distance``; 0 when both are empty).
    * ``threshold`` an ``int`` ``>= 0``: that many edits, whatever the lengths.
    """
    if isinstance(threshold, bool):
        raise TypeError("threshold must be a float fraction or an int number of edits, not bool")
    if isinstance(threshold, int):
        return float(threshold)
    return float(threshold) * max(len_u, len_q)


def _check_threshold(threshold: float | int) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError("threshold must be a float fraction or an int number of edits")
    if isinstance(threshold, int):
        if threshold < 0:
            raise ValueError(f"an absolute threshold must be >= 0 edits, got {threshold}")
    elif not 0.0 <= threshold <= 1.0:
        raise ValueError(f"a fractional threshold must be in [0, 1], got {threshold}")


def route(
    utterance: str,
    canonical: Sequence[str],
    impl: str = "rapidfuzz",
    threshold: float | int = DEFAULT_THRESHOLD,
) -> tuple[int, int]:
    """Nearest canonical question to ``utterance``: ``(index, distance)``, or
    ``(-1, d)`` when none is within the threshold.

    ``u = normalize(utterance, placeholder="")`` (lowercase, no punctuation,
    order numbers removed -- see :func:`utterances.normalize`); the
    ``canonical`` questions must already be normalised (they are compared
    as given).

    Threshold (the choice made here):

    * ``float`` in ``[0, 1]`` (default 0.3): relative.  The score of question
      ``q`` is the normalised distance ``s(q) = d(u, q) / max(len(u), len(q))``;
      the router picks ``argmin_q s(q)`` (first index on ties) and accepts it
      when ``s <= threshold``.  Relative because the questions run from 15 to
      60 characters: 3 edits are a lot for ``track my order``, little for a
      55-character question.  Using ``max(len(u), len(q))`` rather than
      ``len(q)`` alone makes the cutoff the same fraction for every candidate,
      so one ``score_cutoff`` in ``rapidfuzz.process.extractOne`` gives
      exactly the same answer as the full scan; it is also symmetric and never
      exceeds 1.
    * ``int`` ``>= 0``: absolute.  Picks ``argmin_q d(u, q)`` and accepts it
      when ``d <= threshold``.

    ``impl``: ``"rapidfuzz"`` calls ``process.extractOne`` with the scorer
    ``Levenshtein.normalized_distance`` (or ``.distance``) and
    ``score_cutoff=threshold`` (compiled, prunes by length and cutoff);
    ``"rapidfuzz_nocutoff"`` calls it without ``score_cutoff`` (every question
    scored in full) and accepts the best when it is within the threshold;
    ``"two_row"`` and ``"numpy_table"`` compute the full distance to every
    question (no pruning -- the naive scan the article times).  The returned
    distance is the Levenshtein distance to the chosen question; when nothing
    is accepted the answer is ``(-1, -1)`` from every impl (the pruned
    rapidfuzz scan does not know the nearest distance; :func:`nearest` does).
    """
    _check_threshold(threshold)
    u = normalize(utterance, placeholder="")
    if impl in ("rapidfuzz", "rapidfuzz_nocutoff"):
        return _route_rapidfuzz(u, canonical, impl == "rapidfuzz", threshold)
    try:
        dist = DISTANCES[impl]
    except KeyError:
        raise ValueError(f"impl {impl!r} is not one of {', '.join(IMPLS)}") from None
    return _route_scan(u, canonical, dist, threshold)


def _route_rapidfuzz(u: str, canonical: Sequence[str], cutoff: bool, threshold: float | int) -> tuple[int, int]:
    """:func:`route` by ``rapidfuzz.process.extractOne``, pruning with ``score_cutoff`` when ``cutoff``."""
    from rapidfuzz import process  # deferred: compiled package, only for this implementation
    from rapidfuzz.distance import Levenshtein

    if not canonical:
        return -1, -1
    absolute = isinstance(threshold, int)
    scorer = Levenshtein.distance if absolute else Levenshtein.normalized_distance
    if cutoff:
        hit = process.extractOne(u, canonical, scorer=scorer, score_cutoff=threshold)  # type: ignore[arg-type]  # stubs
    else:
        hit = process.extractOne(u, canonical, scorer=scorer)
        if hit is not None and hit[1] > threshold:
            hit = None
    if hit is None:
        return -1, -1
    idx = int(hit[2])
    d = int(hit[1]) if absolute else int(Levenshtein.distance(u, canonical[idx]))
    return idx, d


def _route_scan(
    u: str, canonical: Sequence[str], dist: Callable[[str, str], int], threshold: float | int
) -> tuple[int, int]:
    """:func:`route` by the full distance to every question (no pruning)."""
    absolute = isinstance(threshold, int)
    best_i, best_d, best_s = -1, -1, float("inf")
    lu = len(u)
    for i, q in enumerate(canonical):
        d = dist(u, q)
        if absolute:
            s = float(d)
        else:
            m = max(lu, len(q))
            s = d / m if m else 0.0
        if s < best_s:
            best_i, best_d, best_s = i, d, s
    if best_i >= 0 and best_s <= float(threshold):
        return best_i, best_d
    return -1, -1


def nearest(utterance: str, canonical: Sequence[str]) -> tuple[int, int, float]:
    """``(index, distance, normalised distance)`` of the nearest canonical
    question with no threshold (rapidfuzz ``extractOne`` without cutoff,
    normalised-distance scorer).  Lets one evaluate many thresholds from a
    single scan: routed to ``index`` iff ``normalised <= threshold``."""
    from rapidfuzz import process  # deferred: compiled package, only for this implementation
    from rapidfuzz.distance import Levenshtein

    u = normalize(utterance, placeholder="")
    hit = process.extractOne(u, canonical, scorer=Levenshtein.normalized_distance)
    if hit is None:
        return -1, -1, float("inf")
    idx = int(hit[2])
    return idx, int(Levenshtein.distance(u, canonical[idx])), float(hit[1])
