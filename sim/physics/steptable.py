"""A measured step-time table: the alternative to the roofline's three parameters.

Where a device does not follow ``max(bytes / bw, flops / peak)`` (llama.cpp
on one CPU core switches from a memory-bound matrix-vector kernel at batch 1
to a compute-bound tiled kernel at batch 2 and more: decode steps of 10.3,
27.4, 30.4, 41.7 ms at batch 1, 2, 4, 8), the step time is read from
measurements instead.  A table is a CSV with the columns::

    batch_size, context_tokens, new_tokens, step_ms

``context_tokens`` is the KV tokens the step reads, all sequences together
(the convention of :mod:`sim.calibrate.gpu` and ``capsim calibrate llm``).

* **Decode rows** (``new_tokens == batch_size``: one token per sequence) give
  ``decode(b, ctx)``.  For each measured batch size ``b`` the step time is
  piecewise linear in ``ctx`` through that batch's points: flat below the
  first point, continued with the last segment's slope (never negative) above
  the last.  Between two measured batch sizes it is linear in the batch
  (so over batch and context together it is bilinear between measured
  points); above the largest measured batch ``B`` each sequence costs what it
  cost there, ``decode(b, ctx) = b / B * decode(B, ctx * B / b)`` (continuing
  the last two batches' line could fall to zero, as it did for a table with
  batches 1-4 asked about batch 128); below the smallest it is flat.
* **Prefill rows** (``new_tokens > batch_size``) give a linear law fitted by
  least squares, ``step_ms = a + b * new_tokens + c * attention_pairs``,
  used for every step that prefills (with chunked prefill, the decode tokens
  riding along count as new tokens).  A coefficient the fit makes negative is
  dropped and the rest refitted.

A decode epoch of ``k`` steps with a fixed batch ``n`` reads ``ctx0 + n j``
tokens at step ``j``: each batch's curve is piecewise linear in the context,
so the epoch's time is a sum of arithmetic series, one per segment, exact
(:meth:`StepTable.epoch_time`), as fast as the roofline's closed form.

The table says nothing about which bound a step hits, so it counts no step as
memory-bound.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import statistics
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from sim.errors import ConfigError
from sim.files import atomic_write_text
from sim.physics.gpu import StepCost, attention_pairs, sum_linear
from sim.physics.perop import PerOpCost, PerOpTable
from sim.physics.replica_config import ReplicaConfig

COLUMNS = ("batch_size", "context_tokens", "new_tokens", "step_ms")
#: Optional column: how many of a prefill row's sequences were decoding, one token each (a mixed step).
MIXED = "decode_seqs"


class Curve:
    """A piecewise-linear function of context: flat below the first knot, last slope (>= 0) above the last."""

    def __init__(self, xs: list[float], ys: list[float]):
        self.xs = xs
        self.ys = ys
        if len(xs) == 1:
            self.tail = 0.0
        else:
            self.tail = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))

    def segments(self) -> list[tuple[float, float, float, float]]:
        """(lo, hi, value at 0, slope) of each piece, covering the whole line."""
        xs, ys = self.xs, self.ys
        out = [(-math.inf, xs[0], ys[0], 0.0)]
        for i in range(len(xs) - 1):
            s = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
            out.append((xs[i], xs[i + 1], ys[i] - s * xs[i], s))
        out.append((xs[-1], math.inf, ys[-1] - self.tail * xs[-1], self.tail))
        return out

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1] + self.tail * (x - xs[-1])
        return float(np.interp(x, xs, ys))

    def sum_over(self, ctx0: float, step: float, k: int) -> float:
        """``sum(self(ctx0 + step * j) for j in range(k))`` in closed form (``step > 0``)."""
        total = 0.0
        for lo, hi, a, s in self._pieces:
            j0 = 0 if lo == -math.inf else max(0, math.ceil((lo - ctx0) / step))
            j1 = k if hi == math.inf else min(k, math.ceil((hi - ctx0) / step))
            if j1 > j0:
                total += sum_linear(a + s * ctx0, s * step, j0, j1)
        return total

    @functools.cached_property
    def _pieces(self) -> list[tuple[float, float, float, float]]:
        return self.segments()


def _fit_prefill(
    new: np.ndarray, pairs: np.ndarray, dec: np.ndarray, ms: np.ndarray
) -> tuple[float, float, float, float]:
    """Least squares ``ms = a + b new + c pairs + d dec`` with every coefficient >= 0 (negative ones dropped)."""
    cols = [np.ones_like(new), new, pairs, dec]
    keep = [0, 1, 2, 3] if dec.any() else [0, 1, 2]  # no mixed rows: nothing to fit d on
    while keep:
        coef = np.linalg.lstsq(np.column_stack([cols[i] for i in keep]), ms, rcond=None)[0]
        if (coef >= 0).all():
            out = [0.0, 0.0, 0.0, 0.0]
            for i, c in zip(keep, coef):
                out[i] = float(c)
            return out[0], out[1], out[2], out[3]
        keep = [i for i, c in zip(keep, coef) if c >= 0]
    return float(np.mean(ms)), 0.0, 0.0, 0.0


def read_rows(path: str | Path, key: str = "llm.step_table") -> np.ndarray:
    """The table's rows as an ``(n, 5)`` array, :data:`COLUMNS` then ``decode_seqs`` (0 where the
    file has no such column); bad file -> ConfigError naming ``key``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: file {str(path)!r} does not exist")
    lines = [ln for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ConfigError(f"{key}: {p.name} lacks column(s) {', '.join(missing)}; needs {', '.join(COLUMNS)}")
    rows = []
    for i, r in enumerate(reader, start=2):
        try:
            vals = [float(r[c]) for c in COLUMNS] + [float(r.get(MIXED) or 0)]
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {p.name} line {i}: not numbers: {r}") from None
        if not all(math.isfinite(v) for v in vals) or min(vals[0], vals[2], vals[3]) <= 0 or vals[1] < 0:
            raise ConfigError(f"{key}: {p.name} line {i}: batch_size, new_tokens, step_ms must be > 0, context >= 0")
        if not (0 <= vals[4] < vals[0] and vals[4] == int(vals[4])):
            raise ConfigError(f"{key}: {p.name} line {i}: {MIXED} must be a whole number below batch_size")
        rows.append(vals)
    if not rows:
        raise ConfigError(f"{key}: {p.name} has no rows")
    return np.asarray(rows, dtype=float)


class TableModel:
    """The decode curves and the prefill law of one table (no scenario needed)."""

    def __init__(self, rows: np.ndarray, key: str = "llm.step_table"):
        if rows.shape[1] == 4:
            rows = np.column_stack([rows, np.zeros(len(rows))])
        b, ctx, new, ms, mixed = rows.T
        dec = (new == b) & (mixed == 0)
        if not dec.any():
            raise ConfigError(f"{key}: needs decode rows (new_tokens == batch_size)")
        if (~dec).sum() < 1:
            raise ConfigError(f"{key}: needs prefill rows (new_tokens > batch_size)")
        self.batches: list[float] = sorted(set(b[dec].tolist()))
        self.curves: list[Curve] = []
        for bb in self.batches:
            sel = dec & (b == bb)
            pts: dict[float, list[float]] = {}
            for x, y in zip(ctx[sel], ms[sel]):
                pts.setdefault(float(x), []).append(float(y))
            xs = sorted(pts)
            self.curves.append(Curve(xs, [float(np.mean(pts[x])) for x in xs]))
        pre = ~dec
        k = mixed[pre]  # decoding sequences riding along (mixed rows; 0 for a prefill of b prompts)
        nb = b[pre] - k  # sequences prefilling
        pnew = new[pre] - k  # their tokens
        # prompts of a prefill-only row may follow cached tokens (past); in a mixed row they start
        # from empty and the rest of the context is the decoders', one attention pair per token
        past: Any = np.where(k > 0, 0.0, (ctx[pre] - new[pre]) / b[pre])
        pairs = nb * attention_pairs(pnew / nb, np.maximum(past, 0.0)) + np.where(k > 0, ctx[pre] - pnew, 0.0)
        self.prefill = _fit_prefill(new[pre], pairs, k, ms[pre])

    def weights(self, batch: float) -> list[tuple[int, float]]:
        """(curve index, weight) pairs whose weighted sum is the step at ``batch``."""
        bs = self.batches
        if len(bs) == 1 or batch <= bs[0]:
            return [(0, 1.0)]
        i = min(int(np.searchsorted(bs, batch, side="right")) - 1, len(bs) - 2)
        w = (batch - bs[i]) / (bs[i + 1] - bs[i])
        return [(i, 1.0 - w), (i + 1, w)]

    def decode_ms(self, batch: float, ctx: float) -> float:
        top = self.batches[-1]
        if batch > top:  # beyond the table: each sequence costs what it cost at the largest batch
            return batch / top * self.decode_ms(top, ctx * top / batch)
        return max(0.0, sum(w * self.curves[i](ctx) for i, w in self.weights(batch)))

    def prefill_ms(self, new: float, pairs: float, decode_seqs: float = 0.0) -> float:
        a, b, c, d = self.prefill
        return a + b * new + c * pairs + d * decode_seqs

    def epoch_ms(self, batch: int, ctx0: float, k: int) -> float:
        """Sum of ``k`` decode steps at ``batch``, contexts ``ctx0, ctx0 + batch, ...``."""
        if k <= 0:
            return 0.0
        top = self.batches[-1]
        if batch > top:  # as decode_ms: the largest batch's per-sequence cost, scaled
            return batch / top * self.epoch_ms(int(top), ctx0 * top / batch, k)
        return max(0.0, sum(w * self.curves[i].sum_over(ctx0, batch, k) for i, w in self.weights(batch)))


# --------------------------------------------------------------------------- writing a table


class BenchRow(TypedDict):
    """One row of a batched benchmark (llama-batched-bench, or the server profile of
    :mod:`sim.verify.step_profile`): ``b`` sequences of ``pp`` prompt tokens prefilled in one
    step taking ``t_pp_s``, then ``tg`` decode steps at batch ``b`` taking ``t_tg_s`` together."""

    pp: int
    tg: int
    b: int
    t_pp_s: float
    t_tg_s: float


#: A step table's row: ``(batch_size, context_tokens, new_tokens, step_ms)``, and ``decode_seqs``
#: after them on a mixed step.
StepRow = tuple[int, int, int, float] | tuple[int, int, int, float, int]


def median_rows(runs: list[list[BenchRow]]) -> list[BenchRow]:
    """One row per (pp, tg, b) with the median of its times over repeated runs (order of the first run).

    Two runs timing a prefill at 0.2 s and 0.4 s plus a third at 0.3 s give 0.3 s.
    """
    keys: dict[tuple[int, int, int], list[BenchRow]] = {}
    for run in runs:
        for r in run:
            keys.setdefault((r["pp"], r["tg"], r["b"]), []).append(r)
    out = []
    for (pp, tg, b), rs in keys.items():
        out.append(
            BenchRow(
                pp=pp,
                tg=tg,
                b=b,
                t_pp_s=float(statistics.median(r["t_pp_s"] for r in rs)),
                t_tg_s=float(statistics.median(r["t_tg_s"] for r in rs)),
            )
        )
    return out


def step_rows(rows: list[BenchRow]) -> list[StepRow]:
    """(batch_size, context_tokens, new_tokens, step_ms) rows: a prefill and a decode row per result row."""
    out: list[StepRow] = []
    for r in rows:
        b, pp, tg = r["b"], r["pp"], r["tg"]
        if pp > 0 and r["t_pp_s"] > 0:
            out.append((b, b * pp, b * pp, 1e3 * r["t_pp_s"]))
        if tg > 0 and r["t_tg_s"] > 0:
            out.append((b, round(b * (pp + (tg + 1) / 2)), b, 1e3 * r["t_tg_s"] / tg))
    return out


def write_table(steps: list[StepRow], path: Path, source: str) -> None:
    """Rows ``(batch_size, context_tokens, new_tokens, step_ms[, decode_seqs])``; a ``decode_seqs``
    column is written when any row has one (a mixed step)."""
    mixed = any(len(r) > 4 for r in steps)
    lines = [f"# {source}", ",".join(COLUMNS + ((MIXED,) if mixed else ()))]
    for r in steps:
        b, c, n, ms = r[:4]
        lines.append(f"{b},{c},{n},{ms:.3f}" + (f",{r[4] if len(r) > 4 else 0}" if mixed else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


def scaled_table(src: str | Path, dst: Path, prefill_factor: float, decode_factor: float, source: str) -> None:
    """A copy of the table at ``src`` with every decode row's ``step_ms`` times ``decode_factor``
    and every other row's (prefill and mixed) times ``prefill_factor``: the same engine on a host
    that has sped up or slowed down since the table was measured (a 10.0 ms decode row and a
    300.0 ms prefill row, scaled by 1.1 and 0.9, become 11.0 and 270.0 ms)."""
    rows = read_rows(src)
    b, _ctx, new, _ms, mixed = rows.T
    dec = (new == b) & (mixed == 0)
    rows[:, 3] *= np.where(dec, decode_factor, prefill_factor)
    has_mixed = bool((mixed > 0).any())
    steps: list[StepRow] = [
        (int(r[0]), int(r[1]), int(r[2]), float(r[3]), int(r[4]))
        if has_mixed
        else (int(r[0]), int(r[1]), int(r[2]), float(r[3]))
        for r in rows.tolist()
    ]
    write_table(steps, dst, source)


@functools.lru_cache(maxsize=32)
def _load(path: str, mtime_ns: int) -> TableModel:
    return TableModel(read_rows(path))


def load_table(path: str | Path) -> TableModel:
    """Read and build a table once per file version."""
    p = str(Path(path).expanduser())
    try:
        mtime = os.stat(p).st_mtime_ns
    except OSError:
        raise ConfigError(f"llm.step_table: file {str(path)!r} does not exist") from None
    return _load(p, mtime)


class StepTable(StepCost):
    """:class:`StepCost` with step times from a measured table (FLOPs and bytes still from the model)."""

    def __init__(self, cfg: ReplicaConfig, table: TableModel):
        super().__init__(cfg)
        self.table = table

    def time(
        self, new_tokens: float, ctx_tokens: float, attn_pairs: float, seqs: float = 1.0, decode_seqs: float = 0.0
    ) -> float:
        # measured: per-sequence costs included, and what decoders riding along a prefill add
        return self.table.prefill_ms(new_tokens, attn_pairs, decode_seqs) / 1e3

    def times(
        self, new_tokens: np.ndarray, ctx_tokens: np.ndarray, attn_pairs: np.ndarray, seqs: float | np.ndarray = 1.0
    ) -> np.ndarray:
        a, b, c, _d = self.table.prefill
        return (a + b * np.asarray(new_tokens, float) + c * np.asarray(attn_pairs, float)) / 1e3

    def decode_time(self, batch: int, ctx_tokens: float) -> float:
        return self.table.decode_ms(batch, ctx_tokens) / 1e3

    def memory_bound(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> bool:
        return False

    def decode_lines(self, batch: int, ctx0: float) -> tuple[float, float, float, float, float]:
        return (float(batch), float(ctx0), 0.0, 0.0, 0.0)

    def epoch_time(self, lines: tuple[float, float, float, float, float], k: int) -> float:  # type: ignore[override]
        return self.table.epoch_ms(int(lines[0]), lines[1], k) / 1e3

    def memory_bound_steps(self, lines: tuple[float, float, float, float, float], k: int) -> int:  # type: ignore[override]
        return 0


def step_cost(cfg: ReplicaConfig) -> StepCost:
    """The replica's step-cost model: the measured table when ``llm.step_table`` is set, else the
    per-operation sum where its tables cover the replica (:mod:`sim.physics.perop`), else the roofline."""
    if cfg.step_table:
        return StepTable(cfg, load_table(cfg.step_table))
    entry = cfg.perop_entry
    if entry is not None:
        return PerOpCost(cfg, PerOpTable.from_entry(entry, fp8_kv=cfg.kv_dtype_bytes <= 1.0))
    return StepCost(cfg)
