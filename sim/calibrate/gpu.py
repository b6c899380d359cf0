"""Fit the GPU roofline's efficiencies to steps that really ran.

Input: a CSV with one row per forward step measured on a real server (for
example from vLLM's step timing), columns

* ``batch_size``      sequences in the step,
* ``context_tokens``  KV tokens the step reads (all sequences together),
* ``new_tokens``      tokens it processes (decode: one per sequence; prefill: the chunk),
* ``step_ms``         its wall time.

Given the model and GPU (from a scenario, or ``--model``/``--gpu``), each
row's bytes and FLOPs per GPU follow from :mod:`sim.physics.gpu`::

    bytes = weights / tp + kv_bytes_per_token_per_gpu * context_tokens
    flops = (2 * params * new_tokens + 4 * layers * heads * head_dim * pairs) / tp

with ``pairs`` the attention pairs of ``batch_size`` equal sequences, each
with ``q = new / batch`` new tokens and ``c = context / batch`` context:
``batch * (q c - q (q - 1) / 2)`` (decode: ``context``; one prefill of
``n``: ``n (n + 1) / 2``).  The model of a step is::

    step_ms = 1e3 * (max(bytes / (bw * bw_efficiency), flops / (peak * mfu)) + all-reduce) + step_overhead_ms

and ``bw_efficiency``, ``mfu`` (both in (0, 1]) and ``step_overhead_ms``
(>= 0) are fitted by bounded least squares on the milliseconds
(:func:`scipy.optimize.least_squares`, several starts, best kept).  A
parameter only the other regime sees is not identified (``mfu`` without
compute-bound rows, ``bw_efficiency`` without memory-bound ones): the fit
says so.

The result is a scenario fragment ``{llm: {bw_efficiency, mfu,
step_overhead_ms}}`` to ``extends:`` or merge into a scenario.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml
from scipy.optimize import least_squares

from sim.errors import CalibrationError
from sim.files import atomic_write_text, regular_file_problem
from sim.physics import gpu as gm
from sim.physics.gpu import StepCost
from sim.spec.scenario import load_scenario
from sim.spec.schema import LLMConfig

COLUMNS = ("batch_size", "context_tokens", "new_tokens", "step_ms")
# A forward step takes more than 10 us (a CUDA kernel launch alone is ~5 us) and less than a minute
# (a 128k-token prefill of a 70B model on one GPU is seconds); outside that a row is not a step in ms.
STEP_MS_RANGE = (0.01, 60_000.0)
MAX_REL_ERROR = 10.0  # a fit off by more than 1,000% on some step does not describe these steps


# --------------------------------------------------------------------------- measurements


#: Most tokens (or sequences) one step's row may count: a thousand times the longest
#: context windows served; beyond it the fit's products of counts lose all precision.
MAX_TOKENS = 1e9


def read_measurements(path: str | Path) -> dict[str, np.ndarray]:
    """The four columns as float arrays; bad input raises :class:`CalibrationError` with one line."""
    path = Path(path)
    problem = regular_file_problem(path)
    if problem is not None and problem != "does not exist":
        raise CalibrationError(f"{path}: {problem}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise CalibrationError(f"{path}: not UTF-8 text (byte {e.start}); is it a binary file?") from None
    except OSError as e:
        raise CalibrationError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    return parse_measurements(text, str(path))


def parse_measurements(text: str, name: str = "measurements") -> dict[str, np.ndarray]:
    """The four columns of a step-time CSV (``#`` lines and blank lines skipped) as float arrays;
    bad input raises :class:`CalibrationError` with one line naming the row and the column."""
    rows = _csv_rows(text, name)
    header = [h.strip() for h in rows[0]]
    idx = _column_index(header, name)
    data: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise CalibrationError(
                f"{name}: row {lineno}: {len(row)} fields but the header names {len(header)}; extra fields are not read"
            )
        for c in COLUMNS:
            i = idx[c]
            data[c].append(_cell(name, lineno, c, row[i].strip() if i < len(row) else ""))
        _check_step(name, lineno, *(data[c][-1] for c in ("batch_size", "context_tokens", "new_tokens")))
    _check_enough(name, data)
    return {c: np.asarray(v, dtype=float) for c, v in data.items()}


def _csv_rows(text: str, name: str) -> list[list[str]]:
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [r for r in reader if any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    except csv.Error as e:  # a field past the csv module's limit, a NUL byte, an open quote
        raise CalibrationError(f"{name}: line {reader.line_num}: not a CSV row ({e})") from None
    if not rows:
        raise CalibrationError(f"{name}: empty; need a header {','.join(COLUMNS)} and one row per step")
    return rows


def _column_index(header: list[str], name: str) -> dict[str, int]:
    """Where each of :data:`COLUMNS` sits in the header (each once, none missing)."""
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CalibrationError(f"{name}: column {dup[0]!r} appears more than once in the header; give each column once")
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise CalibrationError(
            f"{name}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(need {', '.join(COLUMNS)}; found {', '.join(header) or 'none'})"
        )
    return {c: header.index(c) for c in COLUMNS}


def _cell(name: str, lineno: int, c: str, raw: str) -> float:
    """One cell of column ``c``: a finite number in the column's range (counts whole)."""
    try:
        v = float(raw)
    except ValueError:
        raise CalibrationError(f"{name}: row {lineno}: {c} {raw!r} is not a number") from None
    if not math.isfinite(v):
        raise CalibrationError(f"{name}: row {lineno}: {c} {raw!r} is not a finite number")
    if c == "context_tokens" and v < 0:
        raise CalibrationError(f"{name}: row {lineno}: context_tokens must be >= 0, got {raw}")
    if c != "context_tokens" and v <= 0:
        raise CalibrationError(f"{name}: row {lineno}: {c} must be > 0, got {raw}")
    if c == "step_ms" and not STEP_MS_RANGE[0] <= v <= STEP_MS_RANGE[1]:
        raise CalibrationError(
            f"{name}: row {lineno}: step_ms {raw} is not a forward step's time "
            f"(expected {STEP_MS_RANGE[0]:g} to {STEP_MS_RANGE[1]:g} ms; is the column in ms?)"
        )
    if c in ("batch_size", "new_tokens", "context_tokens") and v > MAX_TOKENS:
        raise CalibrationError(
            f"{name}: row {lineno}: {c} {raw} is more than {MAX_TOKENS:.0e}; no step holds that many tokens"
        )
    if c in ("batch_size", "new_tokens", "context_tokens") and not v.is_integer():
        raise CalibrationError(f"{name}: row {lineno}: {c} {raw!r} must be a whole number")
    return v


def _check_step(name: str, lineno: int, b: float, ctx: float, new: float) -> None:
    """A step's counts agree: a token per sequence at least, the context holding the new tokens."""
    if new < b:
        raise CalibrationError(
            f"{name}: row {lineno}: new_tokens {new:g} < batch_size {b:g}; every sequence in a step adds a token"
        )
    if ctx < new:
        raise CalibrationError(
            f"{name}: row {lineno}: context_tokens {ctx:g} < new_tokens {new:g}; the context includes the new tokens"
        )


def _check_enough(name: str, data: dict[str, list[float]]) -> None:
    """At least 3 rows, and 3 different steps: the fit has 3 parameters."""
    n = len(data["step_ms"])
    if n < 3:
        raise CalibrationError(
            f"{name}: {n} row{'s' if n != 1 else ''}; need at least 3 steps to fit "
            f"3 parameters (more, and both decode and prefill steps, are better)"
        )
    distinct = len(set(zip(data["batch_size"], data["context_tokens"], data["new_tokens"])))
    if distinct < 3:
        raise CalibrationError(
            f"{name}: only {distinct} distinct (batch_size, context_tokens, new_tokens) step"
            f"{'s' if distinct != 1 else ''}; 3 parameters need at least 3 different steps to be identified"
        )


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class StepWork:
    """Per-GPU bytes, FLOPs and all-reduce seconds of each measured step, and the roofline's
    two terms at full efficiency (the simulator's :meth:`StepCost.terms`, fp8 peak included)."""

    bytes: np.ndarray
    flops: np.ndarray
    comm_s: np.ndarray
    mem_s: np.ndarray
    comp_s: np.ndarray

    def memory_bound(self, bw_efficiency: float, mfu: float) -> np.ndarray:
        """Which steps the memory term dominates at these efficiencies."""
        return np.asarray(self.mem_s / bw_efficiency >= self.comp_s / mfu)


def step_work(cfg: LLMConfig, batch: np.ndarray, context: np.ndarray, new: np.ndarray) -> StepWork:
    """Per-GPU bytes, FLOPs and all-reduce time of each step, from the simulator's :class:`StepCost`.

    ``batch`` equal sequences each process ``q = new / batch`` new tokens on a
    context of ``c = context / batch`` tokens (the new ones included), so
    the attention pairs are ``batch * attention_pairs(q, c - q)``.
    """
    batch, context, new = (np.asarray(a, dtype=float) for a in (batch, context, new))
    q, c = new / batch, context / batch
    cost = StepCost(cfg, bw_efficiency=1.0, mfu=1.0)
    pairs = batch * gm.attention_pairs(q, c - q)
    flops, n_bytes = cost.work(new, context, pairs)
    mem_s, comp_s = cost.terms(new, context, pairs)
    ones = np.ones_like(new)
    return StepWork(
        np.asarray(n_bytes, dtype=float) * ones,
        np.asarray(flops, dtype=float),
        np.asarray(cost.comm_per_token_s * new, dtype=float),
        np.asarray(mem_s, dtype=float) * ones,
        np.asarray(comp_s, dtype=float),
    )


def predict_ms(work: StepWork, bw_efficiency: float, mfu: float, step_overhead_ms: float) -> np.ndarray:
    """Modelled step times in ms: the simulator's roofline, ``max(memory, compute) + all-reduce``."""
    return 1e3 * (np.maximum(work.mem_s / bw_efficiency, work.comp_s / mfu) + work.comm_s) + step_overhead_ms


@dataclass
class GPUFit:
    bw_efficiency: float
    mfu: float
    step_overhead_ms: float
    rows: int
    rmse_ms: float
    max_rel_error: float
    memory_bound_rows: int
    compute_bound_rows: int
    stderr: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def fragment(self) -> dict[str, Any]:
        return {
            "llm": {
                # Measured on your engine: these three replace the published-data defaults,
                # and the terms this fit does not have (per-sequence, all-reduce latency) are 0.
                "efficiency": "custom",
                "bw_efficiency": round(self.bw_efficiency, 4),
                "mfu": round(self.mfu, 4),
                "step_overhead_ms": round(self.step_overhead_ms, 4),
            }
        }


LOWER = (1e-3, 1e-3, 0.0)
MIN_REGIME_ROWS = 3  # fewer steps than this on one side of the ridge leave its parameter unidentified
UPPER = (1.0, 1.0, np.inf)


def _best_of_starts(residuals: Callable[[np.ndarray], np.ndarray], ovh0: float) -> Any:
    """Bounded least squares from nine starts (bw_efficiency x mfu, the overhead at ``ovh0``): the
    result of least cost."""
    best = None
    for e0 in (0.3, 0.6, 0.9):
        for m0 in (0.2, 0.5, 0.8):
            res = least_squares(
                residuals,
                x0=[e0, m0, ovh0],
                bounds=(LOWER, UPPER),
                x_scale=[0.1, 0.1, 1.0],
                method="trf",
                xtol=1e-12,
                ftol=1e-12,
                gtol=1e-12,
                max_nfev=2000,
            )
            if best is None or res.cost < best.cost:
                best = res
    assert best is not None  # the loop above always runs
    return best


def _stderr(best: Any, n: int) -> dict[str, float | None]:
    """Standard errors from the Jacobian at the optimum: cov = s^2 (J'J)^-1, s^2 = RSS / (n - 3);
    none with three steps or fewer."""
    stderr: dict[str, float | None] = {k: None for k in ("bw_efficiency", "mfu", "step_overhead_ms")}
    if n > 3:
        jac = np.asarray(best.jac, dtype=float)
        s2 = float(np.sum(best.fun**2)) / (n - 3)
        cov = np.linalg.pinv(jac.T @ jac) * s2
        stderr = {k: float(math.sqrt(max(cov[i, i], 0.0))) for i, k in enumerate(stderr)}
    return stderr


def fit_gpu(cfg: LLMConfig, data: dict[str, np.ndarray]) -> GPUFit:
    """Bounded least squares of the roofline on the measured ms (best of several starts)."""

    work = step_work(cfg, data["batch_size"], data["context_tokens"], data["new_tokens"])
    y = data["step_ms"]

    def residuals(theta: np.ndarray) -> np.ndarray:
        return predict_ms(work, theta[0], theta[1], theta[2]) - y

    best = _best_of_starts(residuals, float(max(0.0, np.min(y) * 0.1)))
    e, mfu, ovh = (float(v) for v in best.x)
    pred = predict_ms(work, e, mfu, ovh)
    mem = work.memory_bound(e, mfu)
    notes = []
    if (~mem).sum() < MIN_REGIME_ROWS:
        notes.append(f"only {int((~mem).sum())} compute-bound steps: mfu is not identified (add prefill steps)")
    if mem.sum() < MIN_REGIME_ROWS:
        notes.append(f"only {int(mem.sum())} memory-bound steps: bw_efficiency is not identified (add decode steps)")
    stderr = _stderr(best, len(y))
    lo_hit = [k for k, v, lo in (("bw_efficiency", e, LOWER[0]), ("mfu", mfu, LOWER[1])) if v <= lo * 1.01]
    if lo_hit and not any(k in n for n in notes for k in lo_hit):
        raise CalibrationError(
            f"{lo_hit[0]} fitted to its lower bound {LOWER[0]:g}: these steps are ~1000x slower than the roofline "
            f"of {cfg.gpu.name or 'this GPU'}; check that step_ms is in milliseconds and --gpu / --model"
        )
    if ovh >= float(np.min(y)):
        raise CalibrationError(
            f"step_overhead_ms fitted to {ovh:.4g} ms, not below the smallest measured step {float(np.min(y)):.4g} ms: "
            "the roofline does not explain these steps (check --gpu / --model and the units)"
        )
    max_rel = float(np.max(np.abs(pred - y) / y))
    if max_rel > MAX_REL_ERROR:
        raise CalibrationError(
            f"the fitted roofline is off by {max_rel:.0%} on some step: the model does not describe these steps "
            "(check --gpu / --model and that step_ms is in milliseconds)"
        )
    return GPUFit(
        bw_efficiency=e,
        mfu=mfu,
        step_overhead_ms=ovh,
        rows=len(y),
        rmse_ms=float(np.sqrt(np.mean((pred - y) ** 2))),
        max_rel_error=float(np.max(np.abs(pred - y) / y)),
        memory_bound_rows=int(mem.sum()),
        compute_bound_rows=int((~mem).sum()),
        stderr=stderr,
        notes=notes,
    )


def to_csv(data: dict[str, np.ndarray]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for i in range(len(data["step_ms"])):
        w.writerow(
            [
                int(data["batch_size"][i]),
                int(data["context_tokens"][i]),
                int(data["new_tokens"][i]),
                f"{data['step_ms'][i]:.6f}",
            ]
        )
    return out.getvalue()


# --------------------------------------------------------------------------- command


def scenario_llm(
    scenario: Optional[Path], overrides: dict, model: Optional[str], gpu: Optional[str], dtype_bytes: Optional[float]
) -> LLMConfig:
    over = dict(overrides)
    if scenario is None:
        base: dict[str, Any] = {
            "workload": {"mode": "open", "rate_per_s": 1.0},
            "llm": {
                "model": model or "article-8l",
                "gpu": gpu or "h100-sxm",
                "dtype_bytes": 2.0 if dtype_bytes is None else dtype_bytes,
            },
        }
        return load_scenario(base, over).llm
    for key, val in (("llm.model", model), ("llm.gpu", gpu), ("llm.dtype_bytes", dtype_bytes)):
        if val is not None:
            over.setdefault(key, val)
    return load_scenario(scenario, over).llm


def write_fragment(fit: GPUFit, cfg: LLMConfig, measurements: Path, out: Path) -> None:
    """The fitted ``llm:`` fragment as commented YAML, written atomically."""
    head = (
        f"# capsim calibrate gpu: fitted from {Path(measurements).name} ({fit.rows} steps)\n"
        f"# model {cfg.model.name or 'inline'}, GPU {cfg.gpu.name or 'inline'}, "
        f"tensor_parallel {cfg.tensor_parallel}, dtype_bytes {cfg.dtype_bytes:g}, "
        f"kv_dtype_bytes {cfg.kv_dtype_bytes:g}\n"
        f"# fit: RMSE {fit.rmse_ms:.4g} ms, max relative error {fit.max_rel_error:.2%}\n"
    )
    atomic_write_text(out, head + yaml.safe_dump(fit.fragment(), sort_keys=False))
