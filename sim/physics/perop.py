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
  largest proportional to ``m``; for a mixture-of-experts model, everything of its layer but
  attention as aiconfigurator composes it (router, token dispatch, the grouped expert GEMMs whose
  active experts grow with ``m``, shared experts, communication), averaged over its layers;
* ``allreduce(m)``: two all-reduces of ``m * hidden`` BF16 values per layer under tensor
  parallelism (the engine's CUDA-graph kernel);
* ``attention``: decode attention ``max(floor, a + b * kv_tokens + c * seqs)`` plus, when the
  step prefills, prefill attention ``a' + b' * (pairs - kv_tokens) + d' * (new - seqs)`` (the
  query-key pairs beyond one per cached token are the prompt's own, compute-bound work; ``d'``,
  the per-token projections inside an MLA block, is 0 for the dense models' attention kernel);
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

**Mixture-of-experts layouts** of the measured serving runs have entries too (``tools/perop_moe.py``:
aiconfigurator's own composition of the model's operations), used with ``llm.step_cost: perop``.
Under ``auto`` a MoE model stays on the roofline: replayed on the measured MoE runs, the
composition is further from them than the roofline is (``capsim validate``; the kernel a MoE
layer runs depends on launch flags the runs do not record, and the composition inherits that).
"""

from __future__ import annotations

import bisect
import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.files import data_path
from sim.physics.gpu import StepCost, sum_max_linear
from sim.physics.replica_config import ReplicaConfig

FOLDER = "silicon/perop"
#: Why ``step_cost: auto`` keeps a mixture-of-experts model on the roofline.
MOE_AUTO = (
    "a mixture-of-experts model stays on the roofline under step_cost auto (held out on the measured "
    "MoE runs it is closer than the per-operation composition); step_cost perop uses the tables where "
    "they cover the layout"
)


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


def entry_key(model: str, tp: int, dtype: str, ep: int | None = None) -> str:
    """``model|tp<tp>|<dtype>``, and ``|ep<ep>`` for a mixture-of-experts model (``ep``: the GPUs
    its routed experts are spread over, whole; 1 when every expert is split over the replica)."""
    return f"{model}|tp{tp}|{dtype}" + (f"|ep{ep}" if ep is not None else "")


def lookup(
    gpu: str | None, engine: str | None, model: str | None, tp: int, dtype: str, ep: int | None = None
) -> dict[str, Any] | None:
    """The per-operation entry for this GPU, engine, model, tensor parallelism, dtype (and expert
    layout, for a MoE model), or None."""
    if not (gpu and engine and model):
        return None
    doc = _document(gpu)
    if doc is None:
        return None
    eng = doc.get("engines", {}).get(engine)
    if eng is None:
        return None
    e = eng["entries"].get(entry_key(model, tp, dtype, ep))
    if e is None:
        return None
    return {"source": doc["source"], **e, "versions": eng["versions"]}


def coverage(gpu: str | None, engine: str | None, model: str | None, tp: int, dtype: str, ep: int | None = None) -> str:
    """Why no per-operation entry applies ("" when one does), for ``capsim estimate``."""
    if not engine:
        return "no llm.engine set"
    if not gpu or _document(gpu) is None:
        return f"no per-operation tables for GPU {gpu}"
    eng = _document(gpu).get("engines", {}).get(engine)  # type: ignore[union-attr]
    if eng is None:
        return f"no per-operation tables for {engine} on {gpu}"
    if entry_key(str(model), tp, dtype, ep) not in eng["entries"]:
        layout = f", experts over {ep} GPUs," if ep is not None else ""
        return (
            f"no per-operation entry for {model} at tensor_parallel {tp}{layout} in {dtype} (the dense catalog "
            f"models, and the mixture-of-experts layouts of the measured serving runs)"
        )
    return ""


@dataclass(frozen=True)
class PerOpTable:
    """One entry's curves, ready to evaluate (all times in ms)."""

    m: np.ndarray  # token counts
    layer: np.ndarray  # one layer's GEMMs + all-reduces at each m
    lm_head: np.ndarray
    gen: tuple[float, float, float, float]  # floor, a, b (per KV token), c (per sequence)
    ctx: tuple[float, float, float]  # a, b (per pair), d (per prompt token)

    @classmethod
    def from_entry(cls, e: dict[str, Any], fp8_kv: bool = False) -> PerOpTable:
        """The entry's curves; ``fp8_kv``: decode attention over an FP8 KV cache where it was timed
        (else the BF16 one's law, whose bytes per token are twice as many: halved).  A dense entry
        lists its GEMMs and all-reduce; a mixture-of-experts entry its whole ``layer`` curve
        (router, dispatch, expert and shared GEMMs, communication) and a prefill attention with a
        per-token term (MLA's projections)."""
        if "layer" in e:
            layer, head = np.asarray(e["layer"], float), np.asarray(e["lm_head"], float)
        else:
            g = e["gemm"]
            layer = np.asarray(g["qkv"]) + np.asarray(g["o"]) + np.asarray(g["gate_up"]) + np.asarray(g["down"])
            layer = layer + 2.0 * np.asarray(e["allreduce"])
            head = np.asarray(g["lm_head"], float)
        f, a, b, c = e["gen"]
        if fp8_kv:
            f, a, b, c = e["gen_fp8_kv"] if "gen_fp8_kv" in e else (f, a, b / 2.0, c)
        ctx = [float(x) for x in e["ctx"]] + [0.0]
        return cls(
            m=np.asarray(e["m"], float),
            layer=layer,
            lm_head=head,
            gen=(float(f), float(a), float(b), float(c)),
            ctx=(ctx[0], ctx[1], ctx[2]),
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

    def __init__(self, cfg: ReplicaConfig, table: PerOpTable):
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
            more += t.ctx[2] * (new_tokens - seqs)
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
