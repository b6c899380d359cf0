"""Queueing formulas that the simulator is checked against.

Two pictures:

* **Open system** (requests arrive at rate λ whatever happens): one stage
  with ``c`` identical servers, Poisson arrivals and exponential service of
  rate μ is an M/M/c queue.  :func:`erlang_c` gives the chance an arrival
  waits, :func:`mmc` the mean and quantiles of wait and response time.
* **Closed system** (``N`` users, each thinks ``Z`` seconds, sends a request,
  waits for the answer, thinks again): the stages form a closed queueing
  network with a delay station.  :func:`mva` solves it exactly by Mean Value
  Analysis; :func:`closed_throughput_bound` and
  :func:`closed_saturation_users` are the asymptotic bounds.

All functions are pure and deterministic; rates are per second, times in
seconds.  Unstable or meaningless input raises :class:`ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MMCResult",
    "MVAResult",
    "closed_response_lower_bound_s",
    "closed_saturation_users",
    "closed_throughput_bound",
    "erlang_b",
    "erlang_c",
    "mmc",
    "mva",
    "saturation_rate_per_s",
    "utilization",
]


# --------------------------------------------------------------------------
# Open systems
# --------------------------------------------------------------------------


def _check_servers(c: int, name: str = "c") -> None:
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
        raise ValueError(f"{name} must be an integer ≥ 1, got {c!r}")


def erlang_b(c: int, offered_load: float) -> float:
    """Erlang B blocking probability of an M/M/c/c loss system.

    ``a = λ/μ`` is the offered load in Erlangs.  Computed by the stable
    recursion (no factorials, no overflow)::

        B(0, a) = 1,   B(k, a) = a·B(k-1, a) / (k + a·B(k-1, a))
    """
    _check_servers(c)
    if not offered_load >= 0.0 or math.isinf(offered_load):
        raise ValueError(f"offered_load must be finite and ≥ 0, got {offered_load!r}")
    b = 1.0
    for k in range(1, int(c) + 1):
        b = offered_load * b / (k + offered_load * b)
    return b


def erlang_c(c: int, offered_load: float) -> float:
    """Erlang C: probability that an arrival to an M/M/c queue has to wait.

    ``a = λ/μ`` is the offered load in Erlangs and must satisfy ``0 ≤ a < c``
    (utilisation ``ρ = a/c < 1``).  From the Erlang B value ``B = B(c, a)``
    (see :func:`erlang_b`)::

        C(c, a) = c·B / (c - a·(1 - B))

    which equals the textbook ``(a^c/c!)·c/(c-a) / (Σ_{k<c} a^k/k! + (a^c/c!)·c/(c-a))``
    without its overflow.  ``C(1, a) = a``.
    """
    _check_servers(c)
    if not 0.0 <= offered_load < c:
        raise ValueError(f"offered_load must satisfy 0 ≤ a < c = {c}, got {offered_load!r} (unstable)")
    b = erlang_b(c, offered_load)
    return c * b / (c - offered_load * (1.0 - b))


def utilization(arrival_rate_per_s: float, mean_service_s: float, servers: int = 1) -> float:
    """Per-server utilisation of an open station: ``ρ = λ·E[S] / c``."""
    _check_servers(servers, "servers")
    if arrival_rate_per_s < 0.0 or mean_service_s < 0.0:
        raise ValueError("arrival_rate_per_s and mean_service_s must be ≥ 0")
    return arrival_rate_per_s * mean_service_s / servers


def saturation_rate_per_s(mean_service_s: float, servers: int = 1) -> float:
    """Arrival rate at which an open station saturates: ``λ_max = c / E[S]``.

    Zero service time gives ``inf``.
    """
    _check_servers(servers, "servers")
    if mean_service_s < 0.0:
        raise ValueError(f"mean_service_s must be ≥ 0, got {mean_service_s!r}")
    if mean_service_s == 0.0:
        return math.inf
    return servers / mean_service_s


def _check_probability(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"quantile level p must satisfy 0 ≤ p < 1, got {p!r}")


@dataclass(frozen=True)
class MMCResult:
    """Steady-state M/M/c measures (FCFS, infinite queue).

    With ``a = λ/μ``, ``ρ = a/c``, ``C = erlang_c(c, a)`` and ``θ = cμ - λ``:

    * ``p_wait = C``
    * ``mean_wait_s = W_q = C / θ``
    * ``mean_response_s = W = W_q + 1/μ``
    * ``mean_queue_length = L_q = λ·W_q`` (waiting, not in service)
    * ``mean_in_system = L = λ·W`` (Little's law)
    """

    servers: int
    arrival_rate_per_s: float
    service_rate_per_s: float
    utilization: float
    p_wait: float
    mean_wait_s: float
    mean_response_s: float
    mean_queue_length: float
    mean_in_system: float

    @property
    def _theta_per_s(self) -> float:
        return self.servers * self.service_rate_per_s - self.arrival_rate_per_s

    def wait_quantile_s(self, p: float) -> float:
        """``p`` quantile of the waiting time in queue.

        The wait is 0 with probability ``1 - C`` and otherwise Exp(θ), so::

            q_p = 0                              if p ≤ 1 - C
            q_p = -ln((1 - p) / C) / (cμ - λ)    otherwise
        """
        _check_probability(p)
        if p <= 1.0 - self.p_wait:
            return 0.0
        return -math.log((1.0 - p) / self.p_wait) / self._theta_per_s

    def response_survival(self, t_s: float) -> float:
        """``P(T > t)`` for the response time ``T = W_q + S``, ``S ~ Exp(μ)``.

        Conditioning on waiting, with ``δ = θ - μ``::

            P(T > t) = (1 - C)·e^{-μt} + C·P(E_θ + E_μ > t)
            P(E_θ + E_μ > t) = e^{-μt} + μ·e^{-min(μ,θ)t}·(1 - e^{-|δ|t}) / |δ|

        (the hypoexponential tail written so that ``δ → 0`` is stable; at
        ``δ = 0`` the last factor is ``t``).  For ``c = 1`` this reduces to
        ``e^{-(μ-λ)t}``.
        """
        if t_s <= 0.0:
            return 1.0
        mu = self.service_rate_per_s
        theta = self._theta_per_s
        delta = abs(theta - mu)
        exp_mu = math.exp(-mu * t_s)
        if delta * t_s == 0.0:
            spread = t_s
        else:
            spread = -math.expm1(-delta * t_s) / delta
        waited_tail = exp_mu + mu * math.exp(-min(mu, theta) * t_s) * spread
        return (1.0 - self.p_wait) * exp_mu + self.p_wait * waited_tail

    def response_quantile_s(self, p: float) -> float:
        """``p`` quantile of the response time (wait + service).

        For ``c = 1`` the response time is Exp(μ - λ), so
        ``q_p = -ln(1 - p) / (μ - λ)`` exactly.  For ``c > 1`` the quantile
        solves ``P(T > q) = 1 - p`` (see :meth:`response_survival`) by
        Brent's method on a bracket that is doubled until it holds the root.
        """
        _check_probability(p)
        if p == 0.0:
            return 0.0
        if self.servers == 1:
            return -math.log1p(-p) / self._theta_per_s
        target = 1.0 - p
        slowest_rate = min(self.service_rate_per_s, self._theta_per_s)
        high = (-math.log(target) + 1.0) / slowest_rate
        while self.response_survival(high) > target:
            high *= 2.0
        from scipy.optimize import brentq  # deferred: scipy.optimize is slow to import

        root = brentq(
            lambda t: self.response_survival(t) - target,
            0.0,
            high,
            xtol=1e-14 * high,
            rtol=4 * np.finfo(float).eps,
        )
        return float(root)


def mmc(c: int, arrival_rate_per_s: float, service_rate_per_s: float) -> MMCResult:
    """Solve an M/M/c queue: ``c`` servers, Poisson(λ) arrivals, Exp(μ) service.

    ``ρ = λ/(cμ)`` must be < 1, else :class:`ValueError`.  See
    :class:`MMCResult` for the formulas (Erlang C, ``W_q = C/(cμ - λ)``,
    ``W = W_q + 1/μ``, Little's law).
    """
    _check_servers(c)
    if not service_rate_per_s > 0.0 or math.isinf(service_rate_per_s):
        raise ValueError(f"service_rate_per_s must be finite and > 0, got {service_rate_per_s!r}")
    if not arrival_rate_per_s >= 0.0:
        raise ValueError(f"arrival_rate_per_s must be ≥ 0, got {arrival_rate_per_s!r}")
    offered = arrival_rate_per_s / service_rate_per_s
    rho = offered / c
    if rho >= 1.0:
        raise ValueError(f"unstable M/M/{c} queue: utilisation ρ = λ/(cμ) = {rho:.6g} ≥ 1")
    p_wait = erlang_c(c, offered)
    mean_wait_s = p_wait / (c * service_rate_per_s - arrival_rate_per_s)
    mean_response_s = mean_wait_s + 1.0 / service_rate_per_s
    return MMCResult(
        servers=int(c),
        arrival_rate_per_s=float(arrival_rate_per_s),
        service_rate_per_s=float(service_rate_per_s),
        utilization=rho,
        p_wait=p_wait,
        mean_wait_s=mean_wait_s,
        mean_response_s=mean_response_s,
        mean_queue_length=arrival_rate_per_s * mean_wait_s,
        mean_in_system=arrival_rate_per_s * mean_response_s,
    )


# --------------------------------------------------------------------------
# Closed systems
# --------------------------------------------------------------------------


def _closed_inputs(
    think_s: float, demands_s: Sequence[float], servers: Sequence[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    if not think_s >= 0.0 or math.isinf(think_s):
        raise ValueError(f"think_s must be finite and ≥ 0, got {think_s!r}")
    demands = np.asarray(demands_s, dtype=float).reshape(-1)
    if demands.size == 0:
        raise ValueError("demands_s must name at least one station")
    if not np.all(np.isfinite(demands)) or np.any(demands < 0.0):
        raise ValueError("demands_s must be finite and ≥ 0")
    if servers is None:
        m = np.ones(demands.size, dtype=int)
    else:
        if len(servers) != demands.size:
            raise ValueError(f"servers has {len(servers)} entries but demands_s has {demands.size}")
        for s in servers:
            _check_servers(s, "servers[i]")
        m = np.asarray(servers, dtype=int)
    if think_s == 0.0 and not np.any(demands > 0.0):
        raise ValueError("a closed network needs think_s > 0 or some demand > 0")
    return demands, m


def closed_throughput_bound(
    users: int, think_s: float, demands_s: Sequence[float], servers: Sequence[int] | None = None
) -> float:
    """Asymptotic upper bound on closed-system throughput (Denning & Buzen)::

        X(N) ≤ min( N / (Z + ΣD_i),  1 / D_max )

    with ``D_max = max_i D_i / m_i`` when station ``i`` has ``m_i`` servers
    (``m_i = 1`` by default, the textbook form).
    """
    demands, m = _closed_inputs(think_s, demands_s, servers)
    if users < 0:
        raise ValueError(f"users must be ≥ 0, got {users!r}")
    d_max = float(np.max(demands / m))
    light = users / (think_s + float(demands.sum()))
    return light if d_max == 0.0 else min(light, 1.0 / d_max)


def closed_saturation_users(think_s: float, demands_s: Sequence[float], servers: Sequence[int] | None = None) -> float:
    """Kleinrock's saturation population ``N* = (Z + ΣD_i) / D_max``.

    Where the two asymptotes of :func:`closed_throughput_bound` cross: below
    ``N*`` users barely queue, above it each extra user adds ``D_max`` to the
    response time.  ``D_max = max_i D_i / m_i``; all-zero demands give ``inf``.
    """
    demands, m = _closed_inputs(think_s, demands_s, servers)
    d_max = float(np.max(demands / m))
    if d_max == 0.0:
        return math.inf
    return (think_s + float(demands.sum())) / d_max


def closed_response_lower_bound_s(
    users: int, think_s: float, demands_s: Sequence[float], servers: Sequence[int] | None = None
) -> float:
    """Asymptotic lower bound on closed-system response time::

    R(N) ≥ max( ΣD_i,  N·D_max - Z )
    """
    demands, m = _closed_inputs(think_s, demands_s, servers)
    d_max = float(np.max(demands / m))
    return max(float(demands.sum()), users * d_max - think_s)


@dataclass(frozen=True, eq=False)
class MVAResult:
    """Solution of a closed network by exact MVA, at population ``users``.

    Scalars are for ``N = users``; the ``*_by_n`` arrays hold every population
    ``n = 1..N`` (row ``n - 1`` is population ``n``; ``populations`` holds the
    ``n`` values), per-station arrays have one column per station.

    * ``throughput_per_s``: system throughput ``X(N)`` (requests/s)
    * ``response_s``: ``R(N) = Σ_i R_i(N)``, excluding think time
    * ``station_response_s``: residence time ``R_i(N)`` per station
    * ``utilization``: per-server utilisation ``U_i = X(N)·D_i / m_i``
    * ``queue_length``: ``Q_i(N) = X(N)·R_i(N)``, customers at station ``i``
      including those in service
    """

    users: int
    think_s: float
    demands_s: tuple[float, ...]
    servers: tuple[int, ...]
    throughput_per_s: float
    response_s: float
    station_response_s: tuple[float, ...]
    utilization: tuple[float, ...]
    queue_length: tuple[float, ...]
    populations: np.ndarray
    throughput_per_s_by_n: np.ndarray
    response_s_by_n: np.ndarray
    station_response_s_by_n: np.ndarray
    utilization_by_n: np.ndarray
    queue_length_by_n: np.ndarray


def _mva_throughput(users: int, think_s: float, demands: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact MVA; returns ``X(n)`` (shape N) and ``R_i(n)`` (shape N×K)."""
    k = demands.size
    x_by_n = np.empty(users)
    r_by_n = np.empty((users, k))
    if k == 0:
        # Only the delay station: X(n) = n / Z (an empty complement with Z = 0
        # is handled by the caller).
        x_by_n[:] = np.arange(1, users + 1) / think_s
        return x_by_n, r_by_n

    multi = [i for i in range(k) if m[i] > 1]
    # For each multi-server station: throughput of the network without it,
    # X_{-i}(n), to update its idle probability as a product (stable):
    #   p_i(0|n) = p_i(0|n-1) · X(n) / X_{-i}(n)
    complement_x: dict[int, np.ndarray | None] = {}
    for i in multi:
        keep = np.arange(k) != i
        if think_s == 0.0 and not np.any(demands[keep] > 0.0):
            complement_x[i] = None  # everyone ends up at station i: p_i(0|n≥1) = 0
        else:
            complement_x[i] = _mva_throughput(users, think_s, demands[keep], m[keep])[0]
    # marginal[i][j] = p_i(j | n-1) for j = 0..m_i-2 (only these enter R_i)
    marginal = {i: np.zeros(m[i] - 1) for i in multi}
    for i in multi:
        marginal[i][0] = 1.0  # population 0: station empty

    q = np.zeros(k)
    for n in range(1, users + 1):
        r = demands * (1.0 + q)
        for i in multi:
            mi = int(m[i])
            weights = np.arange(mi - 1, 0, -1, dtype=float)  # (m-1-j) for j = 0..m-2
            r[i] = demands[i] / mi * (1.0 + q[i] + float(weights @ marginal[i]))
        x = n / (think_s + float(r.sum()))
        q = x * r
        x_by_n[n - 1] = x
        r_by_n[n - 1] = r
        for i in multi:
            mi = int(m[i])
            previous = marginal[i]
            current = np.empty_like(previous)
            cx = complement_x[i]
            current[0] = 0.0 if cx is None else previous[0] * x / cx[n - 1]
            # p_i(j|n) = X(n)·D_i/α_i(j) · p_i(j-1|n-1), α_i(j) = min(j, m_i) = j here
            j = np.arange(1, mi - 1)
            current[1:] = x * demands[i] / j * previous[:-1]
            marginal[i] = current
    return x_by_n, r_by_n


def mva(
    users: int,
    think_s: float,
    demands_s: Sequence[float],
    servers: Sequence[int] | None = None,
) -> MVAResult:
    """Exact Mean Value Analysis of a closed network with a think (delay) station.

    ``N = users`` customers circulate between a delay station with mean think
    time ``Z = think_s`` and ``K`` FCFS queueing stations with service demands
    ``D_i`` (visits × mean service time, seconds).  Product form holds
    (exponential FCFS service, any think-time distribution).  For single-server
    stations, with ``Q_i(0) = 0`` and ``n = 1..N``::

        R_i(n) = D_i · (1 + Q_i(n-1))
        X(n)   = n / (Z + Σ_i R_i(n))
        Q_i(n) = X(n) · R_i(n)

    A station with ``m_i = servers[i] > 1`` identical servers is solved
    EXACTLY as a load-dependent station (service rate ``min(j, m_i)/D_i`` with
    ``j`` present), not by an approximation::

        R_i(n) = D_i/m_i · (1 + Q_i(n-1) + Σ_{j=0}^{m_i-2} (m_i-1-j)·p_i(j|n-1))
        p_i(j|n) = X(n)·D_i/j · p_i(j-1|n-1)                  (1 ≤ j ≤ m_i-2)
        p_i(0|n) = p_i(0|n-1) · X(n) / X_{-i}(n)

    where ``X_{-i}`` is the throughput of the same network without station
    ``i`` (solved recursively).  The last line replaces the usual
    ``p_i(0|n) = 1 - Σ_{j≥1} p_i(j|n)``, which is numerically unstable near
    saturation; the cost is one extra MVA per multi-server station (2^M
    solves for M multi-server stations, fine for a handful of stages).

    Cost O(N·K) for single-server networks.  Raises :class:`ValueError` for
    ``users < 1``, negative demands, or ``Z = 0`` with all demands zero.
    """
    if isinstance(users, bool) or not isinstance(users, (int, np.integer)) or users < 1:
        raise ValueError(f"users must be an integer ≥ 1, got {users!r}")
    demands, m = _closed_inputs(think_s, demands_s, servers)
    users = int(users)
    x_by_n, r_by_n = _mva_throughput(users, float(think_s), demands, m)
    q_by_n = x_by_n[:, None] * r_by_n
    u_by_n = x_by_n[:, None] * demands[None, :] / m[None, :]
    return MVAResult(
        users=users,
        think_s=float(think_s),
        demands_s=tuple(float(d) for d in demands),
        servers=tuple(int(s) for s in m),
        throughput_per_s=float(x_by_n[-1]),
        response_s=float(r_by_n[-1].sum()),
        station_response_s=tuple(float(v) for v in r_by_n[-1]),
        utilization=tuple(float(v) for v in u_by_n[-1]),
        queue_length=tuple(float(v) for v in q_by_n[-1]),
        populations=np.arange(1, users + 1),
        throughput_per_s_by_n=x_by_n,
        response_s_by_n=r_by_n.sum(axis=1),
        station_response_s_by_n=r_by_n,
        utilization_by_n=u_by_n,
        queue_length_by_n=q_by_n,
    )
