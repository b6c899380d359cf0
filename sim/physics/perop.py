"""Step costs built from kernels timed in isolation: the per-operation model.

Where the GPU, the serving engine, the model and its tensor parallelism are covered by
aiconfigurator's per-operation database (NVIDIA, Apache-2.0; extracted for capsim's catalog
models by ``tools/perop.py`` into ``sim/data/silicon/perop/<gpu>.json``), a step is the sum of
the kernels it runs, each read from what that engine's kernel measured on that GPU::

    step = layers * (gemm(seqs) + allreduce(seqs) + attention
                     + prefill_scale * (gemm(new) - gemm(seqs) + prompt attention))
           + lm_head(seqs) + overhead + overhead_per_seq * seqs

* ``gemm(m)``: the layer's four projections (QKV, output, gate/up, down; one GPU's shard) for a
  step of ``m`` tokens, linear in ``m`` between the token counts they were timed at, beyond the
  largest proportional to ``m``;
* ``allreduce(m)``: two all-reduces of ``m * hidden`` BF16 values per layer under tensor
  parallelism (the engine's CUDA-graph kernel);
* ``attention``: decode attention ``max(floor, a + b * kv_tokens + c * seqs)`` plus, when the
  step prefills, prefill attention ``a' + b' * (pairs - kv_tokens)`` (the query-key pairs beyond
  one per cached token are the prompt's own, compute-bound work);
* ``lm_head(seqs)``: the vocabulary projection, one row per sequence that samples;
* ``overhead`` and ``overhead_per_seq``: what the kernels do not include (scheduling, sampling,
  launch gaps, small elementwise kernels), the engine's fitted constants
  (``llm.perop_overhead_ms``, ``llm.perop_overhead_per_seq_ms``);
* a step that prefills adds its prompt tokens' share, ``gemm(new) - gemm(seqs)`` and the prompts'
  own attention pairs, times ``llm.perop_prefill_scale`` (fitted per engine: kernels timed one
  at a time overstate a serving step's prefill, whose kernels overlap and fuse).

A decode epoch (a fixed batch whose context grows by ``batch`` each step) keeps a closed form:
everything but the decode attention is constant, and that is the larger of a constant and a
line in the step index (:func:`sim.physics.gpu.sum_max_linear`).

The tables say nothing about which bound a step hits, so, as a measured step table, no step is
counted memory-bound.
"""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.files import data_path
from sim.physics.gpu import StepCost, sum_max_linear

if TYPE_CHECKING:  # annotations only: physics sits below the scenario schema
    from sim.spec.schema import LLMConfig

FOLDER = "silicon/perop"


@functools.lru_cache(maxsize=16)
def _document(gpu: str) -> dict[str, Any] | None:
    p = data_path(f"{FOLDER}/{gpu}.json")
    if not p.is_file():
        return None
    doc: dict[str, Any] = json.loads(p.read_text())
    return doc


def dtype_key(weights_dtype: str | None, compute_dtype: str) -> str:
    """The GEMM dtype the tables are keyed by: ``fp4`` for FP4 compute (NVFP4 on Blackwell),
    ``fp8`` for FP8 weights or compute, else ``bf16`` (FP4 weights computing in BF16 included:
    a weight-only kernel the tables do not time)."""
    if compute_dtype == "fp4":
        return "fp4"
    if weights_dtype == "fp4":
        return "bf16-weight-only-fp4"
    return "fp8" if "fp8" in (weights_dtype, compute_dtype) else "bf16"


def entry_key(model: str, tp: int, dtype: str) -> str:
    return f"{model}|tp{tp}|{dtype}"


def lookup(gpu: str | None, engine: str | None, model: str | None, tp: int, dtype: str) -> dict[str, Any] | None:
    """The per-operation entry for this GPU, engine, model, tensor parallelism and dtype, or None."""
    if not (gpu and engine and model):
        return None
    doc = _document(gpu)
    if doc is None:
        return None
    eng = doc.get("engines", {}).get(engine)
    if eng is None:
        return None
    e = eng["entries"].get(entry_key(model, tp, dtype))
    if e is None:
        return None
    return {**e, "versions": eng["versions"], "source": doc["source"]}


def coverage(gpu: str | None, engine: str | None, model: str | None, tp: int, dtype: str) -> str:
    """Why no per-operation entry applies ("" when one does), for ``capsim estimate``."""
    if not engine:
        return "no llm.engine set"
    if not gpu or _document(gpu) is None:
        return f"no per-operation tables for GPU {gpu}"
    eng = _document(gpu).get("engines", {}).get(engine)  # type: ignore[union-attr]
    if eng is None:
        return f"no per-operation tables for {engine} on {gpu}"
    if entry_key(str(model), tp, dtype) not in eng["entries"]:
        return f"no per-operation entry for {model} at tensor_parallel {tp} in {dtype} (dense catalog models only)"
    return ""


@dataclass(frozen=True)
class PerOpTable:
    """One entry's curves, ready to evaluate (all times in ms)."""

    m: np.ndarray  # token counts
    layer: np.ndarray  # one layer's GEMMs + all-reduces at each m
    lm_head: np.ndarray
    gen: tuple[float, float, float, float]  # floor, a, b (per KV token), c (per sequence)
    ctx: tuple[float, float]  # a, b (per pair)

    @classmethod
    def from_entry(cls, e: dict[str, Any], fp8_kv: bool = False) -> PerOpTable:
        """The entry's curves; ``fp8_kv``: decode attention over an FP8 KV cache where it was timed
        (else the BF16 one's law, whose bytes per token are twice as many: halved)."""
        g = e["gemm"]
        layer = np.asarray(g["qkv"]) + np.asarray(g["o"]) + np.asarray(g["gate_up"]) + np.asarray(g["down"])
        layer = layer + 2.0 * np.asarray(e["allreduce"])
        f, a, b, c = e["gen"]
        if fp8_kv:
            f, a, b, c = e["gen_fp8_kv"] if "gen_fp8_kv" in e else (f, a, b / 2.0, c)
        return cls(
            m=np.asarray(e["m"], float),
            layer=layer,
            lm_head=np.asarray(g["lm_head"], float),
            gen=(float(f), float(a), float(b), float(c)),
            ctx=(float(e["ctx"][0]), float(e["ctx"][1])),
        )

    def curve(self, ys: np.ndarray, m: float) -> float:
        """Linear between the timed token counts; flat below the first, proportional above the last."""
        xs = self._knots
        top = xs[-1]
        if m > top:
            return float(ys[-1]) * m / top
        if m <= xs[0]:
            return float(ys[0])
        i = bisect.bisect_left(xs, m)
        x0, x1 = xs[i - 1], xs[i]
        y0, y1 = float(ys[i - 1]), float(ys[i])
        return y0 + (y1 - y0) * (m - x0) / (x1 - x0)

    @functools.cached_property
    def _knots(self) -> list[float]:
        return [float(x) for x in self.m]


class PerOpCost(StepCost):
    """:class:`StepCost` whose step times are sums of per-operation timings (FLOPs and bytes,
    for the estimate's figures, still from the model)."""

    def __init__(self, cfg: LLMConfig, table: PerOpTable):
        super().__init__(cfg)
        self.table = table
        self.layers = cfg.model.layers
        self.fixed_ms = cfg.perop_overhead_ms
        self.per_seq_ms = cfg.perop_overhead_per_seq_ms
        self.prefill_scale = cfg.perop_prefill_scale

    def time_ms(self, new_tokens: float, ctx_tokens: float, attn_pairs: float, seqs: float) -> float:
        t, L = self.table, self.layers
        floor, a, b, c = t.gen
        step = t.curve(t.layer, seqs) + max(floor, a + b * ctx_tokens + c * seqs)
        extra = attn_pairs - ctx_tokens
        if new_tokens > seqs:  # the step prefills: the prompt tokens' GEMM work and their own pairs
            more = t.curve(t.layer, new_tokens) - t.curve(t.layer, seqs) + t.ctx[0] + t.ctx[1] * max(extra, 0.0)
            step += self.prefill_scale * more
        return L * step + t.curve(t.lm_head, seqs) + self.fixed_ms + self.per_seq_ms * seqs

    def time(
        self, new_tokens: float, ctx_tokens: float, attn_pairs: float, seqs: float = 1.0, decode_seqs: float = 0.0
    ) -> float:
        return self.time_ms(new_tokens, ctx_tokens, attn_pairs, seqs) / 1e3

    def times(
        self, new_tokens: np.ndarray, ctx_tokens: np.ndarray, attn_pairs: np.ndarray, seqs: float | np.ndarray = 1.0
    ) -> np.ndarray:
        n, x, p = (np.asarray(v, float) for v in (new_tokens, ctx_tokens, attn_pairs))
        s = np.broadcast_to(np.asarray(seqs, float), n.shape)
        out = [self.time_ms(*args) for args in zip(n.ravel(), x.ravel(), p.ravel(), s.ravel())]
        return np.asarray(out).reshape(n.shape) / 1e3

    def decode_time(self, batch: int, ctx_tokens: float) -> float:
        return self.time(batch, ctx_tokens, ctx_tokens, batch)

    def memory_bound(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> bool:
        return False

    def decode_lines(self, batch: int, ctx0: float) -> tuple[float, float, float, float, float]:
        """Step j of a decode epoch: ``max(a + b j, floor) * layers + const`` (seconds), where the
        line is the decode attention at context ``ctx0 + batch * j``."""
        t, L = self.table, self.layers
        floor, a, b, c = t.gen
        const = L * t.curve(t.layer, batch) + t.curve(t.lm_head, batch) + self.fixed_ms + self.per_seq_ms * batch
        return (
            L * (a + b * ctx0 + c * batch) / 1e3,
            L * b * batch / 1e3,
            L * floor / 1e3,
            0.0,
            const / 1e3,
        )

    def epoch_time(self, lines: tuple[float, float, float, float, float], k: int) -> float:  # type: ignore[override]
        a_m, b_m, a_c, b_c, const = lines
        return sum_max_linear(a_m, b_m, a_c, b_c, k) + const * k

    def memory_bound_steps(self, lines: tuple[float, float, float, float, float], k: int) -> int:  # type: ignore[override]
        return 0
