"""Output analysis: statistics, confidence intervals, warm-up cut, SLA verdicts.

Picture one scenario run as R replications, each producing a time-ordered
array of per-request latencies (milliseconds at the edges, as recorded).  The
report wants, say, the P99 latency with a 95 % confidence interval and a
verdict against an SLA threshold of 800 ms.  This module answers with pure
functions of arrays:

1. :func:`mser5` finds where the warm-up transient ends in a series, so the
   caller can drop it.
2. :func:`stat_value` / :func:`summarize` turn the remaining values of one
   replication into a point statistic (mean, percentiles, max).
3. :func:`t_interval` turns the R per-replication statistics into a Student t
   confidence interval (independent replications); for a single long run
   :func:`batch_means_interval` does the same over contiguous batches.
4. :func:`sla_verdict` compares the interval with the threshold and says
   ``"pass"``, ``"fail"`` or ``"inconclusive"``.

Nothing here draws random numbers, runs a model or writes files.  Inputs are
assumed finite; a NaN inside an array propagates into the statistics computed
from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from sim.spec.metrics import STATS

__all__ = [
    "STATS",
    "Verdict",
    "batch_means_interval",
    "ci_half_width_ratio",
    "mser",
    "mser5",
    "quantile_interval",
    "sla_verdict",
    "stat_value",
    "summarize",
    "t_interval",
    "t_quantile",
]


_PERCENTILES: dict[str, float] = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}

Verdict = Literal["pass", "fail", "inconclusive"]


def _as_1d_float(values: ArrayLike) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        array = array.reshape(-1)
    return array


def _check_stat(stat: str) -> None:
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; allowed: {', '.join(STATS)}")


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def stat_value(values: ArrayLike, stat: str) -> float:
    """One named statistic of ``values``.

    ``"mean"`` is the arithmetic mean ``(1/n) Σ x_i``; ``"max"`` the largest
    value; ``"pXX"`` the XX-th percentile with numpy's default ``"linear"``
    method (type 7 of Hyndman & Fan): with the sorted values ``x_(0..n-1)``,
    position ``h = (n-1)·q/100``, the result is
    ``x_(⌊h⌋) + (h-⌊h⌋)·(x_(⌊h⌋+1) - x_(⌊h⌋))``.

    An empty input gives ``nan``.  Unknown ``stat`` raises :class:`ValueError`.
    """
    _check_stat(stat)
    array = _as_1d_float(values)
    if array.size == 0:
        return math.nan
    if stat == "mean":
        return float(np.mean(array))
    if stat == "max":
        return float(np.max(array))
    return float(np.percentile(array, _PERCENTILES[stat]))


def summarize(values: ArrayLike) -> dict[str, float]:
    """Every statistic in :data:`STATS` of ``values``, keyed by name.

    Percentiles are computed in one sorted pass; the definitions are those of
    :func:`stat_value`.  An empty input gives ``nan`` for every key.
    """
    array = _as_1d_float(values)
    if array.size == 0:
        return {stat: math.nan for stat in STATS}
    qs = np.percentile(array, list(_PERCENTILES.values()))
    out: dict[str, float] = {"mean": float(np.mean(array))}
    out.update({name: float(q) for name, q in zip(_PERCENTILES, qs)})
    out["max"] = float(np.max(array))
    return {stat: out[stat] for stat in STATS}


def t_interval(per_replication: Sequence[float] | ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Student t confidence interval for the mean of independent estimates.

    With ``n`` per-replication statistics ``y_1..y_n`` (one per independent
    replication), sample mean ``ȳ`` and sample standard deviation
    ``s = sqrt(Σ (y_r - ȳ)² / (n-1))``::

        ȳ ± t_{(1+c)/2, n-1} · s / √n

    where ``t_{q, ν}`` is the ``q`` quantile of Student's t with ``ν`` degrees
    of freedom and ``c`` the confidence level.  Returns ``(low, high)``;
    fewer than two values give ``(nan, nan)``.  Identical values give a
    zero-width interval.
    """
    _check_confidence(confidence)
    y = _as_1d_float(per_replication)
    n = y.size
    if n < 2:
        return (math.nan, math.nan)
    centre = float(np.mean(y))
    s = float(np.std(y, ddof=1))
    half_width = t_quantile((1.0 + confidence) / 2.0, n - 1) * s / math.sqrt(n)
    return (centre - half_width, centre + half_width)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta function (modified Lentz;
    Press et al., Numerical Recipes, 3rd ed., §6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _t_sf(t: float, dof: int) -> float:
    """``P(T > t)`` for Student's t with ``dof`` degrees of freedom, ``t >= 0``:
    ``½ I_x(dof/2, 1/2)`` with ``x = dof / (dof + t²)`` and ``1 - x = t² / (dof + t²)``
    (each computed as written: near ``t = 0`` the second is not ``1 - x`` to full precision)."""
    a, b = dof / 2.0, 0.5
    x, y = dof / (dof + t * t), t * t / (dof + t * t)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return 0.5 * front * _betacf(a, b, x) / a
    return 0.5 * (1.0 - front * _betacf(b, a, y) / b)


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom.

    Exact forms for ``dof = 1`` (Cauchy: ``tan(π(p - ½))``) and ``dof = 2``
    (``(2p - 1) / sqrt(2p(1 - p))``); from 1,000 on, the Cornish-Fisher
    expansion in ``z = Φ⁻¹(p)`` to ``dof⁻⁴`` (Abramowitz & Stegun 26.7.5), within
    3e-14 of the quantile; between, Newton's method on ``P(T > t)`` (the
    incomplete beta function) from that expansion, to 1e-12.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if p < 0.5:
        return -t_quantile(1.0 - p, dof)
    if p == 0.5:
        return 0.0
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    z = NormalDist().inv_cdf(p)
    z2 = z * z
    t = z * (
        1.0
        + (z2 + 1.0) / (4.0 * dof)
        + (5.0 * z2**2 + 16.0 * z2 + 3.0) / (96.0 * dof**2)
        + (3.0 * z2**3 + 19.0 * z2**2 + 17.0 * z2 - 15.0) / (384.0 * dof**3)
        + (79.0 * z2**4 + 776.0 * z2**3 + 1482.0 * z2**2 - 1920.0 * z2 - 945.0) / (92160.0 * dof**4)
    )
    if dof >= 1000:
        return t
    density = math.exp(math.lgamma((dof + 1) / 2.0) - math.lgamma(dof / 2.0)) / math.sqrt(dof * math.pi)
    for _ in range(50):
        step = (_t_sf(t, dof) - (1.0 - p)) / (density * (1.0 + t * t / dof) ** (-(dof + 1) / 2.0))
        t += step
        if abs(step) <= 1e-15 * abs(t):
            break
    return t


def batch_means_interval(
    values: ArrayLike,
    stat: str,
    confidence: float = 0.95,
    n_batches: int = 20,
) -> tuple[float, float]:
    """Confidence interval for ``stat`` from one long replication (batch means).

    The time-ordered series (warm-up already removed) of length ``n`` is cut
    into ``k = n_batches`` contiguous batches of ``b = ⌊n/k⌋`` values; the
    ``n - k·b`` leftover values are dropped from the *start* (the end of the
    series is furthest from the warm-up transient).  With ``θ_j`` the
    statistic of batch ``j``, the interval is the t interval over batches::

        θ̄ ± t_{(1+c)/2, k-1} · s_θ / √k,    θ̄ = (1/k) Σ θ_j

    centred on the batch values' mean ``θ̄`` (see :func:`t_interval`).  Batches
    must be long enough to be nearly independent; fewer than 10 values per
    batch gives ``(nan, nan)``.

    For ``"mean"`` ``θ̄`` equals the mean of the kept values.  For percentiles
    (and ``"max"``) the batch statistic is a biased estimator of the
    whole-run statistic, noticeably so for small batches and extreme
    quantiles (a P99 of 100 values is roughly the 2nd-largest value), so the
    interval is centred slightly off the whole-run point estimate; use batches
    that hold well over ``1/(1-q)`` values for the ``q`` percentile.
    """
    _check_stat(stat)
    _check_confidence(confidence)
    if n_batches < 2:
        raise ValueError(f"n_batches must be at least 2, got {n_batches!r}")
    array = _as_1d_float(values)
    batch_size = array.size // n_batches
    if batch_size < 10:
        return (math.nan, math.nan)
    kept = array[array.size - batch_size * n_batches :].reshape(n_batches, batch_size)
    if stat == "mean":
        per_batch = kept.mean(axis=1)
    elif stat == "max":
        per_batch = kept.max(axis=1)
    else:
        per_batch = np.percentile(kept, _PERCENTILES[stat], axis=1)
    return t_interval(per_batch, confidence)


def mser5(series: ArrayLike) -> int:
    """Warm-up truncation point by MSER-5 (White 1997; Hoad, Robinson & Davies 2010).

    The series ``x_1..x_n`` is averaged in non-overlapping batches of 5,
    giving ``k = ⌊n/5⌋`` batch means ``z_1..z_k`` (a trailing partial batch is
    ignored).  For each candidate cut ``d`` (batches deleted) the MSER
    statistic is::

        MSER(d) = 1/(k-d)² · Σ_{j=d+1..k} (z_j - z̄(d))²,
        z̄(d)   = 1/(k-d) · Σ_{j=d+1..k} z_j

    i.e. the squared standard error of the truncated mean.  The chosen cut
    ``d*`` minimises MSER(d) over ``d = 0..⌊(k-1)/2⌋`` (the first half only:
    a minimum further on is the known MSER artefact of a short, lucky tail,
    and Hoad et al. treat it as "no reliable warm-up found").  Returns the
    index into the ORIGINAL series where steady state starts: ``5·d*``; keep
    ``series[5·d*:]``.  Series of fewer than 10 values (two batches) give 0;
    ties go to the smallest ``d``.
    """
    array = _as_1d_float(series)
    k = array.size // 5
    if k < 2:
        return 0
    return 5 * mser(array[: 5 * k].reshape(k, 5).mean(axis=1))


def mser(batch_means: ArrayLike) -> int:
    """The MSER cut over batch means ``z_1..z_k`` (see :func:`mser5`): the number of
    batches ``d*`` to delete, minimising ``MSER(d)`` over ``d = 0..⌊(k-1)/2⌋``; ties go to
    the smallest ``d``.  Fewer than two batches give 0."""
    z = _as_1d_float(batch_means)
    k = z.size
    if k < 2:
        return 0
    z = z - z.mean()  # centre to limit cancellation in the sums of squares
    # Tail sums over j = d..k-1 (0-based) for every d at once.
    tail_sum = np.cumsum(z[::-1])[::-1]
    tail_sumsq = np.cumsum((z * z)[::-1])[::-1]
    remaining = np.arange(k, 0, -1, dtype=float)  # k - d
    sse = np.maximum(tail_sumsq - tail_sum * tail_sum / remaining, 0.0)
    score = sse / (remaining * remaining)
    last_d = (k - 1) // 2
    return int(np.argmin(score[: last_d + 1]))


def sla_verdict(value: float, low: float, high: float, threshold: float) -> Verdict:
    """Verdict of an upper-bound SLA (the metric must be ≤ ``threshold``).

    With a confidence interval ``[low, high]`` for the metric:

    * ``"pass"`` when ``high ≤ threshold`` (the whole interval meets the SLA),
    * ``"fail"`` when ``low > threshold`` (the whole interval misses it),
    * ``"inconclusive"`` otherwise (the interval straddles the threshold).

    When no interval is available (``low`` or ``high`` is NaN: too few values
    to estimate the statistic's uncertainty) the data cannot support either
    verdict, whatever the point ``value`` says: ``"inconclusive"``.
    """
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if high <= threshold:
        return "pass"
    if low > threshold:
        return "fail"
    return "inconclusive"


def combine_verdicts(verdicts: list[str]) -> str:
    """One verdict over several SLAs (or windows): ``fail`` if any fails, else ``inconclusive``
    if any is, else ``pass``; ``none`` when there is nothing to judge."""
    if not verdicts:
        return "none"
    if "fail" in verdicts:
        return "fail"
    return "inconclusive" if "inconclusive" in verdicts else "pass"


def ci_half_width_ratio(low: float, high: float, value: float) -> float:
    """Relative precision of an interval: ``((high - low) / 2) / |value|``.

    NaN bounds give ``nan``.  For ``value == 0`` the ratio is ``0.0`` when
    the interval has zero width and ``inf`` otherwise.
    """
    half_width = (high - low) / 2.0
    if math.isnan(half_width) or math.isnan(value):
        return math.nan
    if value == 0.0:
        return 0.0 if half_width == 0.0 else math.inf
    return half_width / abs(value)


def quantile_interval(values: ArrayLike, q: float, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval for the ``q`` quantile of one sample.

    With the sample sorted, ``x_(1) <= .. <= x_(n)``, the number of values below
    the true quantile is Binomial(n, q); with ``l`` its ``(1-c)/2`` quantile and
    ``u`` its ``(1+c)/2`` quantile plus one, ``[x_(l), x_(u)]`` holds the true
    quantile with probability at least ``c`` (for n = 20, q = 0.5: ``x_(6)..x_(15)``,
    the textbook sign-test interval for a median).  A rank beyond the sample
    is unbounded: ``-inf`` / ``inf``.  It treats the values as independent;
    positively correlated ones (requests of one closed loop) make the true
    interval wider, never narrower.
    """
    _check_confidence(confidence)
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    x = np.sort(_as_1d_float(values))
    n = x.size
    if n == 0:
        return (-math.inf, math.inf)
    from scipy.stats import binom  # deferred: scipy.stats loads slowly and only verify needs it

    lo_rank = int(binom.ppf((1.0 - confidence) / 2.0, n, q))
    hi_rank = int(binom.ppf((1.0 + confidence) / 2.0, n, q)) + 1
    lo = float(x[lo_rank - 1]) if lo_rank >= 1 else -math.inf
    hi = float(x[hi_rank - 1]) if hi_rank <= n else math.inf
    return (lo, hi)
