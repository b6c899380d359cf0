"""A running vLLM server's scheduler and KV settings, read from its own start-up log and
``/metrics``, and the capsim ``llm`` keys that stand for them.

vLLM prints what it resolved at start-up (``vllm/v1/core/sched/scheduler.py``,
``vllm/v1/core/kv_cache_utils.py``, ``vllm/v1/engine/core.py``; version 0.32.0)::

    non-default args: {..., 'max_num_batched_tokens': 256, 'max_num_seqs': 4, ...}
    Chunked prefill is enabled with max_num_batched_tokens=256.
    Initializing a V1 LLM engine (v0.32.0) with config: ..., enable_prefix_caching=True, ...
    CPU KV cache size: 262,144 tokens, Maximum concurrency for 2,048 tokens per request: 128.00x

and exports its cache configuration as the labels of one Prometheus sample,
``vllm:cache_config_info{block_size="128",num_gpu_blocks="2048",kv_cache_memory_bytes="1073741824",...} 1.0``
(``vllm/v1/metrics/loggers.py``).  :func:`server_config` joins the two and checks that they
agree (the KV tokens are the blocks times the block size).

:func:`llm_keys` turns that into capsim's ``llm`` section with the ``vllm`` engine preset: the
running-sequence limit, the token budget, the block size, chunked prefill and prefix caching as
the server runs them, and the KV pool as the server sizes it.  vLLM's CPU backend does not size
its KV cache from a memory fraction: it takes ``VLLM_CPU_KVCACHE_SPACE`` GiB (or
``--kv-cache-memory-bytes``) as the pool (``vllm/platforms/cpu.py``, ``vllm/v1/worker/cpu_worker.py``),
so the keys give capsim a "card" of the weights plus that pool, used whole
(``gpu_memory_utilization`` 1, no engine reserve): ``exposed - weights = pool``, and
capsim's block count is ``floor(pool / (kv_bytes_per_token * block_size))``, vLLM's own
``available_memory // page_size_bytes // layers`` for one attention group.
"""

from __future__ import annotations

import re
from typing import Any

from sim.errors import CapsimError
from sim.spec.scenario import apply_overrides, load_scenario

_BUDGET = re.compile(r"max_num_batched_tokens=(\d+)")
_NON_DEFAULT_SEQS = re.compile(r"non-default args: .*'max_num_seqs': (\d+)")
_KV_TOKENS = re.compile(r"(?:CPU|GPU) KV cache size: ([\d,]+) tokens")
_ENGINE = re.compile(r"Initializing a V1 LLM engine \(v([^)]+)\) with config: (.*)")
_FLAG = re.compile(r"\b(enable_prefix_caching|enable_chunked_prefill)=(True|False)\b")
_DTYPE = re.compile(r"\bdtype=torch\.(\w+)")
_KV_DTYPE = re.compile(r"\bkv_cache_dtype=(\w+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')

#: Bytes of one element per torch dtype the CPU backend runs.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def read_startup_log(text: str) -> dict[str, Any]:
    """The scheduler and KV settings a vLLM server printed at start-up (the keys it printed)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if m := _NON_DEFAULT_SEQS.search(line):
            out["max_num_seqs"] = int(m.group(1))
        if "Chunked prefill is enabled" in line and (m := _BUDGET.search(line)):
            out["max_num_batched_tokens"] = int(m.group(1))
        if m := _KV_TOKENS.search(line):
            out["kv_cache_tokens"] = int(m.group(1).replace(",", ""))
        if m := _ENGINE.search(line):
            out["version"] = m.group(1)
            config = m.group(2)
            for name, value in _FLAG.findall(config):
                out[name] = value == "True"
            if d := _DTYPE.search(config):
                out["dtype"] = d.group(1)
            if k := _KV_DTYPE.search(config):
                out["kv_cache_dtype"] = k.group(1)
    return out


def read_cache_config(metrics_text: str) -> dict[str, Any]:
    """The labels of ``vllm:cache_config_info`` on a ``/metrics`` page (empty when absent)."""
    for line in metrics_text.splitlines():
        if line.startswith("vllm:cache_config_info{"):
            return dict(_LABEL.findall(line.split("{", 1)[1].rsplit("}", 1)[0]))
    return {}


#: What :func:`server_config` needs from the log, and the server option that sets each.
NEEDED_FROM_LOG = {
    "max_num_seqs": "--max-num-seqs (pass it: vLLM logs only the arguments it was given)",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "kv_cache_tokens": "the KV cache size line",
    "enable_prefix_caching": "the engine's config line",
    "enable_chunked_prefill": "the engine's config line",
    "dtype": "the engine's config line",
}


def server_config(log_text: str, metrics_text: str) -> dict[str, Any]:
    """The server's settings from both sources; a CapsimError naming what is missing or where
    the two disagree."""
    got = read_startup_log(log_text)
    missing = [f"{k} ({why})" for k, why in NEEDED_FROM_LOG.items() if k not in got]
    if missing:
        raise CapsimError(f"vLLM start-up log: no {', '.join(missing)}")
    cache = read_cache_config(metrics_text)
    for key in ("block_size", "num_gpu_blocks", "kv_cache_memory_bytes"):
        if not cache.get(key, "").isdigit():
            raise CapsimError(f"vLLM /metrics: vllm:cache_config_info has no {key}")
    cfg = {
        **got,
        "block_size": int(cache["block_size"]),
        "num_gpu_blocks": int(cache["num_gpu_blocks"]),
        "kv_cache_memory_bytes": int(cache["kv_cache_memory_bytes"]),
    }
    if cfg["num_gpu_blocks"] * cfg["block_size"] != cfg["kv_cache_tokens"]:
        raise CapsimError(
            f"vLLM: the log's KV cache size ({cfg['kv_cache_tokens']} tokens) is not /metrics' "
            f"{cfg['num_gpu_blocks']} blocks x {cfg['block_size']} tokens"
        )
    if cfg.get("kv_cache_dtype", "auto") not in ("auto", cfg["dtype"]):
        raise CapsimError(f"vLLM: kv_cache_dtype {cfg['kv_cache_dtype']} (only auto, the model's dtype, is read)")
    if cfg["dtype"] not in DTYPE_BYTES:
        raise CapsimError(f"vLLM: dtype {cfg['dtype']} (one of {', '.join(DTYPE_BYTES)} is read)")
    return cfg


def llm_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    """capsim's ``llm`` keys for the server :func:`server_config` read, with the ``vllm`` engine
    preset (its scheduler as the server runs it; the KV memory: :func:`gpu_memory`)."""
    nbytes = float(DTYPE_BYTES[cfg["dtype"]])
    return {
        "engine": "vllm",
        "engine_version": cfg.get("version"),
        "max_batch": cfg["max_num_seqs"],
        "max_batched_tokens": cfg["max_num_batched_tokens"],
        "chunked_prefill": cfg["enable_chunked_prefill"],
        "prefix_caching": cfg["enable_prefix_caching"],
        "kv_block_tokens": cfg["block_size"],
        "dtype_bytes": nbytes,
        "kv_dtype_bytes": nbytes,
        "gpu_memory_utilization": 1.0,
        "engine_reserve": "none",
    }


def gpu_memory(cfg: dict[str, Any], weights_bytes: float) -> dict[str, float]:
    """``llm.gpu`` memory keys whose exposed memory less the weights is the server's KV pool.
    ``weights_bytes``: capsim's own count of the model's weights at the server's dtype
    (``LLMConfig.weights_bytes``).

    1 GiB of pool and 77,145,088 bytes of weights: (1,073,741,824 + 77,145,088) / 2^30 =
    1.071847 GiB (exact: scaling by a power of two loses no bits, so exposed less weights
    is the pool to the byte)."""
    gib = (cfg["kv_cache_memory_bytes"] + weights_bytes) / 2**30
    return {"memory_gb": gib, "memory_exposed_gib": gib}


def scenario_for(base: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a scenario mapping with an inline ``llm.gpu``) with the server's settings written
    into its ``llm`` section."""
    data = apply_overrides(base, {f"llm.{k}": v for k, v in llm_keys(cfg).items()})
    big = {"llm.gpu.memory_gb": 1e3, "llm.gpu.memory_exposed_gib": 1e3}  # any card the weights fit
    weights = load_scenario(apply_overrides(data, big)).llm.weights_bytes  # at the server's dtype
    return apply_overrides(data, {f"llm.gpu.{k}": v for k, v in gpu_memory(cfg, weights).items()})
