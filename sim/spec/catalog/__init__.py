"""GPU and model specs as data files, each figure with its public source.

The catalog is two YAML files that ship inside the package:

* ``gpus.yaml``: per accelerator, the memory bandwidth (``hbm_bandwidth_gbps``,
  GB/s), the memory size (``memory_gb``), the dense BF16/FP16 tensor throughput
  (``peak_tflops``, without sparsity) and the GPU-to-GPU bandwidth per direction
  (``interconnect_gbps``).
* ``models.yaml``: per decoder-only transformer, its shapes (``layers``,
  ``hidden``, ``heads``, ``kv_heads``, ``head_dim``, ``intermediate``,
  ``vocab``), ``params``, ``tied_embeddings`` and ``qkv_bias``; for a
  mixture-of-experts model also ``experts``, ``experts_per_token``,
  ``shared_experts``, ``expert_intermediate``, ``dense_layers`` and
  ``active_params``; for multi-head latent attention ``q_lora_rank``,
  ``kv_lora_rank``, ``qk_rope_head_dim``, ``qk_nope_head_dim``, ``v_head_dim``.

GPUs may carry ``fp8_tflops`` and ``fp4_tflops`` (dense tensor throughput at
those precisions) where a figure was read.

Every entry also carries ``sources`` (a URL per figure), a ``display_name`` and
often a ``note``.  :func:`gpu` and :func:`model` hand back only the numeric and
boolean fields, the ones a formula can use; :func:`gpu_entry` and
:func:`model_entry` hand back the whole entry, sources included.

A picture::

    >>> gpu("H100-SXM")["hbm_bandwidth_gbps"]
    3350
    >>> model("llama-3-8b")["kv_heads"]
    8

Names are case-insensitive.  An unknown name raises
:class:`sim.errors.ConfigError` with a one-line message that names the scenario
key, a suggestion and the known names.  This module is pure data access: no
validation beyond "is it a mapping"; ``sim.spec.schema`` validates.
"""

from __future__ import annotations

import copy
import difflib
import functools
import re
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.files import read_yaml_data

__all__ = [
    "exposed_fraction",
    "gpu",
    "gpu_entry",
    "gpu_names",
    "model",
    "model_entry",
    "model_names",
    "param_count",
    "param_counts",
]

_HERE = Path(__file__).resolve().parent


@functools.cache
def _load(filename: str) -> dict[str, dict[str, Any]]:
    """Read one catalog file once; keys lower-cased."""
    data = read_yaml_data(_HERE / filename)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{filename}: expected a mapping of name -> entry")
    return {str(name).lower(): entry for name, entry in data.items()}


def _gpus() -> dict[str, dict[str, Any]]:
    return _load("gpus.yaml")


def _models() -> dict[str, dict[str, Any]]:
    return _load("models.yaml")


def _natural(name: str) -> list[Any]:
    """Sort key that orders digits by value: a10g < a100-40gb, l4 < l40s."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]


def _sorted(names: Any) -> list[str]:
    return sorted(names, key=_natural)


def gpu_names() -> list[str]:
    """Names of every GPU in the catalog, in natural order (a10g, a100-40gb, ...)."""
    return _sorted(_gpus())


def model_names() -> list[str]:
    """Names of every model in the catalog, in natural order."""
    return _sorted(_models())


def _suggest(name: str, known: list[str]) -> str | None:
    """Best guess at what ``name`` meant, or None.

    Names that start with what was typed win ('h100' -> 'h100-sxm', not
    'h200'); among them, and otherwise, the closest by difflib ratio.
    """

    def ratio(candidate: str) -> float:
        return difflib.SequenceMatcher(None, name, candidate).ratio()

    prefixed = [k for k in known if k.startswith(name)] if name else []
    if prefixed:
        return max(prefixed, key=lambda k: (ratio(k), -known.index(k)))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


def _lookup(table: dict[str, dict[str, Any]], name: str, key: str, what: str) -> dict[str, Any]:
    if not isinstance(name, str):
        raise ConfigError(f"{key}: expected a {what} name (a string), got {name!r}")
    wanted = name.strip().lower()
    if wanted in table:
        return table[wanted]
    known = _sorted(table)
    guess = _suggest(wanted, known)
    hint = f"did you mean '{guess}'? " if guess else ""
    raise ConfigError(f"{key}: unknown {what} '{name}' ({hint}known: {', '.join(known)})")


def _numeric(entry: dict[str, Any]) -> dict[str, Any]:
    """The numeric and boolean fields of an entry (no sources, names or notes)."""
    return {k: v for k, v in entry.items() if isinstance(v, (bool, int, float))}


def gpu(name: str, key: str = "llm.gpu") -> dict[str, Any]:
    """Numeric fields of one GPU: hbm_bandwidth_gbps, memory_gb, peak_tflops, interconnect_gbps.

    Returns a fresh dict; an unknown name raises ConfigError naming ``key``.
    """
    return _numeric(_lookup(_gpus(), name, key, "GPU"))


def model(name: str, key: str = "llm.model") -> dict[str, Any]:
    """Numeric/bool fields of one model: the shapes, params, tied_embeddings, qkv_bias.

    Returns a fresh dict; an unknown name raises ConfigError naming ``key``.
    """
    return _numeric(_lookup(_models(), name, key, "model"))


@functools.cache
def exposed_fraction() -> float:
    """Median of ``memory_exposed_gib / memory_gb`` over the catalog GPUs that give both.

    What an "N GB" card exposes to a process, as a fraction of N GiB; used for
    GPUs whose exposed memory was not read (H100 79.19 / 80, A100 79.25 / 80,
    A100-40GB 39.38 / 40: median 0.9899).
    """
    ratios = sorted(
        float(e["memory_exposed_gib"]) / float(e["memory_gb"]) for e in _gpus().values() if "memory_exposed_gib" in e
    )
    n = len(ratios)
    return ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2.0


def gpu_entry(name: str, key: str = "llm.gpu") -> dict[str, Any]:
    """The whole catalog entry of one GPU (a deep copy), sources and note included."""
    return copy.deepcopy(_lookup(_gpus(), name, key, "GPU"))


def model_entry(name: str, key: str = "llm.model") -> dict[str, Any]:
    """The whole catalog entry of one model (a deep copy), sources and note included."""
    return copy.deepcopy(_lookup(_models(), name, key, "model"))


def param_count(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    vocab: int,
    tied_embeddings: bool,
    qkv_bias: bool = False,
) -> int:
    """Total parameters of a Llama-style decoder (gated MLP, RMSNorm, no other biases).

    Per layer:

    * attention q and o projections: ``2 * hidden * heads * head_dim``
    * attention k and v projections: ``2 * hidden * kv_heads * head_dim``
    * gated MLP (gate, up, down):    ``3 * hidden * intermediate``
    * two RMSNorm weight vectors:    ``2 * hidden``
    * if ``qkv_bias`` (Qwen2):       ``heads * head_dim + 2 * kv_heads * head_dim``

    Plus, once:

    * token embeddings:              ``vocab * hidden``
    * lm_head, unless tied:          ``vocab * hidden``
    * final RMSNorm:                 ``hidden``

    So ``params = layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden``.
    Llama-3-8B (32, 4096, 32, 8, 128, 14336, 128256, untied) gives 8,030,261,248.
    """
    per_layer = (
        2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim + 3 * hidden * intermediate + 2 * hidden
    )
    if qkv_bias:
        per_layer += heads * head_dim + 2 * kv_heads * head_dim
    embeddings = vocab * hidden * (1 if tied_embeddings else 2)
    return layers * per_layer + embeddings + hidden


def param_counts(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    vocab: int,
    tied_embeddings: bool,
    qkv_bias: bool = False,
    experts: int = 0,
    experts_per_token: int = 0,
    shared_experts: int = 0,
    expert_intermediate: int = 0,
    dense_layers: int = 0,
    q_lora_rank: int = 0,
    kv_lora_rank: int = 0,
    qk_rope_head_dim: int = 0,
    qk_nope_head_dim: int = 0,
    v_head_dim: int = 0,
) -> tuple[int, int]:
    """(total, active per token) parameters of a decoder, mixture-of-experts and MLA included.

    Attention per layer is :func:`param_count`'s, or with ``kv_lora_rank`` (multi-head
    latent attention, DeepSeek-V2/V3), ``r = qk_rope_head_dim``, ``n = qk_nope_head_dim``,
    ``v = v_head_dim``:

    * queries: ``hidden * q_lora_rank + q_lora_rank + q_lora_rank * heads * (n + r)``
      (``hidden * heads * (n + r)`` without ``q_lora_rank``)
    * latent KV: ``hidden * (kv_lora_rank + r) + kv_lora_rank + kv_lora_rank * heads * (n + v)``
    * output: ``heads * v * hidden``

    MLP per layer: ``3 * hidden * intermediate`` for the first ``dense_layers`` layers (all of
    them for a dense model); every other layer holds ``experts`` routed and ``shared_experts``
    shared experts of ``3 * hidden * expert_intermediate`` each plus a router
    (``hidden * experts``).  Active per token counts ``experts_per_token`` routed experts
    instead of all of them.  Embeddings, lm_head (unless tied), two RMSNorms per layer and
    the final norm as in :func:`param_count`.  Small terms some models add (per-head q/k
    norms, expert and output biases, attention sinks, router biases) are left out; they are
    well under 0.1 % of every catalog model.  A dense model gives ``param_count``'s figure twice.
    """
    if kv_lora_rank:
        nr = qk_nope_head_dim + qk_rope_head_dim
        q = hidden * q_lora_rank + q_lora_rank + q_lora_rank * heads * nr if q_lora_rank else hidden * heads * nr
        kv = hidden * (kv_lora_rank + qk_rope_head_dim) + kv_lora_rank
        kv += kv_lora_rank * heads * (qk_nope_head_dim + v_head_dim)
        attention = q + kv + heads * v_head_dim * hidden
    else:
        attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
        if qkv_bias:
            attention += heads * head_dim + 2 * kv_heads * head_dim
    once = vocab * hidden * (1 if tied_embeddings else 2) + hidden
    per_layer = attention + 2 * hidden
    if not experts:
        total = layers * (per_layer + 3 * hidden * intermediate) + once
        return total, total
    expert = 3 * hidden * expert_intermediate
    moe_layers = layers - dense_layers
    common = layers * per_layer + dense_layers * 3 * hidden * intermediate + once
    common += moe_layers * (shared_experts * expert + hidden * experts)
    return common + moe_layers * experts * expert, common + moe_layers * experts_per_token * expert
