"""Measured serving runs (aiconfigurator's ``silicon_sample.csv``) and which of them capsim represents.

``sim/data/silicon/silicon_sample.csv`` is NVIDIA aiconfigurator 0.12.0's file of end-to-end
serving runs (Apache-2.0; ``README.md`` there says where it comes from).  Each row is one
configuration measured with aiperf at a fixed concurrency: engine (``backend``) and version,
model, GPU system, precision, input / output lengths (``isl`` / ``osl``), tensor parallelism,
aggregated or disaggregated serving, and the measured mean TTFT and TPOT in milliseconds.

:func:`load_rows` reads every row into a :class:`SiliconRow` and says, per row, whether capsim
can replay it as a scenario (``reasons`` empty) or why not, every reason that applies, in this
order:

* a disaggregated row (``mode`` disagg) is checked pool by pool: ``prefill:`` or ``decode:``
  before a layout reason says which pool capsim cannot build (its columns ``prefill_*`` and
  ``decode_*``: workers, tensor / pipeline / attention-data / expert parallelism, batch per
  worker); a row whose pools both fit is replayed as ``llm.disaggregated``
  (:func:`representable_disaggregated`); ``disaggregated: worker counts not recorded`` where the
  file leaves ``prefill_num_workers`` / ``decode_num_workers`` empty;
* ``attention not modelled (...)``: Qwen3.5-397B-A17B (linear-attention layers) and GLM-5
  (DeepSeek sparse attention);
* ``model not in the catalog``: a model capsim has no shapes for;
* ``GPU ... not in the catalog``;
* ``INT4 weight-only``: a precision capsim does not compute in;
* ``attention data parallel`` / ``pipeline parallel`` / ``tensor parallel over more than 8
  GPUs`` / ``experts split over both tensor and expert parallel groups``: layouts beyond one
  tensor-parallel replica of at most 8 GPUs whose experts are either split over all of them
  (``llm.expert_parallel: 1``) or spread whole over all of them (``expert_parallel = tp``).

The concurrency is the ``silicon_concurrency=`` the row's ``silicon_data_source`` records; the
rows that do not record it give it as ``batch_size`` (``concurrency_stated`` False), and a
disaggregated row as ``decode_batch_size x decode_num_workers`` (every decode worker full).
Precision: ``fp8`` (GEMM modes ``fp8`` and ``fp8_block``) is FP8 weights computing at the GPU's
FP8 peak; ``fp4`` (NVFP4) is FP4 weights computing at the FP4 peak on Blackwell and weight-only
(BF16 compute) on Hopper; rows with no precision and no GEMM quantisation mode name a BF16
checkpoint and are read as BF16.  The file does not give the KV-cache dtype: it is taken as FP8
for FP8 and FP4 checkpoints (as NVIDIA's quantised checkpoints configure it) and 16-bit for BF16
ones (:attr:`SiliconRow.kv_dtype_bytes`).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sim.errors import ConfigError
from sim.files import data_path

#: The pinned aiconfigurator release the file was copied from.
AICONFIGURATOR_VERSION = "0.12.0"

#: Dense models of the file with their catalog entry (Llama-3.1 keeps Llama-3's shapes;
#: nvidia/...-FP8 and -NVFP4 are quantised checkpoints of the same shapes).
DENSE_MODELS: dict[str, str] = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3-8b",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3-8b",
    "meta-llama/Llama-3.1-70B": "llama-3-70b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "nvidia/Qwen3-32B-NVFP4": "qwen3-32b",
}
#: Mixture-of-experts models of the file with their catalog entry (DeepSeek-V3.1 keeps V3's shapes;
#: nvidia/...-NVFP4 are quantised checkpoints of the same shapes).
MOE_MODELS: dict[str, str] = {
    "deepseek-ai/DeepSeek-R1": "deepseek-r1",
    "deepseek-ai/DeepSeek-V3": "deepseek-v3",
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-r1",
    "nvidia/DeepSeek-V3.1-NVFP4": "deepseek-v3",
    "openai/gpt-oss-120b": "gpt-oss-120b",
    "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b",
    "moonshotai/Kimi-K2.5": "kimi-k2.5",
    "MiniMaxAI/MiniMax-M2.5": "minimax-m2.5",
}
#: Models of the file whose attention capsim does not model, and why.
UNMODELLED: dict[str, str] = {
    "Qwen/Qwen3.5-397B-A17B": "linear-attention (Gated DeltaNet) layers",
    "zhipuai/GLM-5": "DeepSeek sparse attention",
}
#: The file's GPU systems and their catalog entries.
GPUS: dict[str, str] = {
    "h100_sxm": "h100-sxm",
    "h200_sxm": "h200",
    "b200_sxm": "b200",
    "gb200": "gb200",
    "b300_sxm": "b300",
    "gb300": "gb300",
}
#: Systems with FP4 tensor cores (NVFP4 weights compute in FP4 there; elsewhere they are weight-only).
FP4_SYSTEMS: tuple[str, ...] = ("b200_sxm", "gb200", "b300_sxm", "gb300")
#: The most GPUs of one tensor-parallel replica capsim models (one NVLink node of 8).
MAX_TP = 8
ENGINES: tuple[str, ...] = ("vllm", "trtllm", "sglang")

_CONCURRENCY = re.compile(r"silicon_concurrency=(\d+)")


@dataclass(frozen=True)
class SiliconRow:
    """One measured run and what capsim needs to replay it."""

    id: str
    engine: str
    engine_version: str  # "" where the file does not say
    model_path: str
    system: str
    precision: str  # fp8, bf16, fp4, int4 ("bf16" where the file leaves it empty: see the module)
    mode: str  # agg or disagg
    isl: int
    osl: int
    concurrency: int
    concurrency_stated: bool
    tensor_parallel: int
    measured_ttft_ms: float
    measured_tpot_ms: float
    model: str | None  # catalog name, None when capsim has none
    gpu: str | None
    reasons: tuple[str, ...]
    expert_parallel: int = 1  # llm.expert_parallel of a MoE model's row (1 for a dense model)
    batch_size: int = 0  # the engine's batch limit as the file records it (0 where it does not)
    # a disaggregated row's pools (0 for an aggregated row): workers, tensor parallelism, the expert
    # layout (as expert_parallel) and the batch per worker the file records; tensor_parallel and
    # expert_parallel above are the decode pool's
    prefill_workers: int = 0
    prefill_tp: int = 0
    prefill_expert_parallel: int = 1
    prefill_batch: int = 0
    decode_workers: int = 0
    decode_batch: int = 0

    @property
    def representable(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str:
        """The first reason capsim cannot replay the row ("" when it can)."""
        return self.reasons[0] if self.reasons else ""

    @property
    def disaggregated(self) -> bool:
        return self.mode != "agg"

    @property
    def moe(self) -> bool:
        return self.model_path in MOE_MODELS

    @property
    def weights_dtype(self) -> str:
        """``llm.weights_dtype``: bf16, fp8 or fp4 (NVFP4 / MXFP4 checkpoints)."""
        return self.precision if self.precision in ("fp8", "fp4") else "bf16"

    @property
    def dtype_bytes(self) -> float:
        return {"fp8": 1.0, "fp4": 0.5625}.get(self.precision, 2.0)

    @property
    def kv_dtype_bytes(self) -> float:
        """1 (an FP8 KV cache) for FP8 and FP4 checkpoints, 2 for BF16 ones: NVIDIA's quantised
        checkpoints of these models name ``kv_cache_quant_algo: FP8`` in their
        ``hf_quant_config.json`` (nvidia/Llama-3.1-70B-Instruct-FP8, nvidia/MiniMax-M2.5-NVFP4,
        https://huggingface.co/nvidia/Llama-3.1-70B-Instruct-FP8/blob/main/hf_quant_config.json),
        and the file does not say otherwise."""
        return 1.0 if self.precision in ("fp8", "fp4") else 2.0

    @property
    def compute_dtype(self) -> str:
        """FP8 weights compute in FP8; FP4 ones in FP4 where the GPU has FP4 tensor cores, else in
        BF16 (weight-only, as gpt-oss's MXFP4 experts run on Hopper)."""
        if self.precision == "fp4":
            return "fp4" if self.system in FP4_SYSTEMS else "bf16"
        return "fp8" if self.precision == "fp8" else "bf16"


def _int(text: str) -> int:
    return int(float(text)) if text.strip() else 0


def _precision(r: dict[str, str]) -> str:
    p, gemm = r["precision"].strip(), r["gemm_quant_mode"].strip()
    if p:
        return p
    if gemm in ("fp8", "fp8_block"):
        return "fp8"
    if gemm.startswith("nvfp4"):
        return "fp4"
    return gemm or "bf16"


def _expert_parallel(r: dict[str, str], pool: str = "") -> int | None:
    """The row's ``llm.expert_parallel`` (1: every expert split over the replica; ``tp``: whole
    experts spread over it), or None for a layout capsim does not model; ``pool`` "prefill_" or
    "decode_" reads a disaggregated row's pool."""
    tp, moe_tp = _int(r[f"{pool}tp_size"]), max(_int(r[f"{pool}moe_tp_size"]), 1)
    ep = max(_int(r[f"{pool}moe_ep_size"]), 1)
    if ep == 1 and moe_tp in (1, tp):
        return 1
    if moe_tp == 1 and ep == tp:
        return ep
    return None


def _reasons(r: dict[str, str], precision: str) -> tuple[str, ...]:
    """Why capsim cannot replay row ``r`` (none: it can), in a fixed order: the serving mode, the
    model, the GPU, the precision, the parallel layout, the engine."""
    out: list[str] = []
    agg = r["mode"] == "agg"
    model = r["model_path"]
    if model in UNMODELLED:
        out.append(f"attention not modelled ({model}: {UNMODELLED[model]})")
    elif model not in DENSE_MODELS and model not in MOE_MODELS:
        out.append(f"model not in the catalog ({model})")
    system = r["system"]
    if system not in GPUS:
        out.append(f"GPU {system} not in the catalog")
    if precision == "int4":
        out.append("INT4 weight-only")
    elif precision not in ("fp8", "bf16", "fp4"):
        out.append(f"precision {precision}")
    if not agg and not (_int(r["prefill_num_workers"]) and _int(r["decode_num_workers"])):
        out.append("disaggregated: worker counts not recorded")
    for pool in ("",) if agg else ("prefill_", "decode_"):
        out += _layout_reasons(r, pool)
    if r["backend"] not in ENGINES:
        out.append(f"engine {r['backend']}")
    return tuple(out)


def _layout_reasons(r: dict[str, str], pool: str) -> list[str]:
    """Why capsim cannot build the replica of ``pool`` ("" for an aggregated row, "prefill_" or
    "decode_"), named ``prefill: ...`` / ``decode: ...`` for a disaggregated row's pool."""
    out: list[str] = []
    model = r["model_path"]
    if _int(r[f"{pool}attention_dp_size"]) > 1:
        out.append("attention data parallel")
    if _int(r[f"{pool}pp_size"]) > 1:
        out.append("pipeline parallel")
    if _int(r[f"{pool}tp_size"]) > MAX_TP:
        out.append(f"tensor parallel over more than {MAX_TP} GPUs")
    elif model in MOE_MODELS and _expert_parallel(r, pool) is None:
        out.append("experts split over both tensor and expert parallel groups")
    if _int(r[f"{pool}moe_ep_size"]) > 1 and model in DENSE_MODELS:
        out.append("expert parallel")
    return [f"{pool.rstrip('_')}: {x}" for x in out] if pool else out


def silicon_path() -> Path:
    return data_path("silicon/silicon_sample.csv")


def load_rows(path: str | Path | None = None) -> list[SiliconRow]:
    """Every row of the file, in file order, with the reasons capsim cannot replay it."""
    p = Path(path) if path else silicon_path()
    rows: list[SiliconRow] = []
    with open(p, newline="") as fh:
        for i, r in enumerate(csv.DictReader(fh), start=2):
            try:
                precision = _precision(r)
                m = _CONCURRENCY.search(r["silicon_data_source"])
                agg = r["mode"] == "agg"
                if m:
                    conc = int(m.group(1))
                elif agg:
                    conc = _int(r["batch_size"])
                else:
                    conc = _int(r["decode_batch_size"]) * max(_int(r["decode_num_workers"]), 1)
                moe = r["model_path"] in MOE_MODELS
                pools: dict[str, int] = {}
                if not agg:
                    pools = {
                        "prefill_workers": _int(r["prefill_num_workers"]),
                        "prefill_tp": _int(r["prefill_tp_size"]),
                        "prefill_expert_parallel": (_expert_parallel(r, "prefill_") or 1) if moe else 1,
                        "prefill_batch": _int(r["prefill_batch_size"]),
                        "decode_workers": _int(r["decode_num_workers"]),
                        "decode_batch": _int(r["decode_batch_size"]),
                    }
                rows.append(
                    SiliconRow(
                        id=r["id"],
                        engine=r["backend"],
                        engine_version=r["backend_version"].strip(),
                        model_path=r["model_path"],
                        system=r["system"],
                        precision=precision,
                        mode=r["mode"],
                        isl=int(r["isl"]),
                        osl=int(r["osl"]),
                        concurrency=conc,
                        concurrency_stated=m is not None,
                        tensor_parallel=_int(r["tp_size"]) if agg else _int(r["decode_tp_size"]),
                        measured_ttft_ms=float(r["silicon_ttft_ms"]),
                        measured_tpot_ms=float(r["silicon_tpot_ms"]),
                        model=DENSE_MODELS.get(r["model_path"]) or MOE_MODELS.get(r["model_path"]),
                        gpu=GPUS.get(r["system"]),
                        reasons=_reasons(r, precision),
                        expert_parallel=(_expert_parallel(r, "" if agg else "decode_") or 1) if moe else 1,
                        batch_size=_int(r["batch_size"] if agg else r["decode_batch_size"]),
                        **pools,
                    )
                )
            except (KeyError, ValueError) as e:
                raise ConfigError(f"silicon data: {p.name} line {i}: {e}") from None
    return rows


def representable(rows: list[SiliconRow] | None = None) -> list[SiliconRow]:
    """The aggregated rows capsim can replay (the engine presets are fitted to these)."""
    return [r for r in (load_rows() if rows is None else rows) if r.representable and not r.disaggregated]


def representable_disaggregated(rows: list[SiliconRow] | None = None) -> list[SiliconRow]:
    """The disaggregated rows capsim can replay as ``llm.disaggregated``."""
    return [r for r in (load_rows() if rows is None else rows) if r.representable and r.disaggregated]


def reason_counts(rows: list[SiliconRow]) -> dict[str, int]:
    """Rows by their first reason ("representable" for the aggregated rows capsim replays,
    "representable (disaggregated)" for the disaggregated ones), most first.

    Reasons that carry a name (a model, a GPU) are counted by their kind: ``attention not
    modelled``, ``model not in the catalog``, ``GPU``; a disaggregated pool's layout reason keeps
    its pool (``decode: attention data parallel``).
    """

    def kind(row: SiliconRow) -> str:
        reason = row.reason
        if not reason:
            return "representable (disaggregated)" if row.disaggregated else "representable"
        for kind_ in ("attention not modelled", "model not in the catalog", "GPU "):
            if reason.startswith(kind_):
                return kind_.strip()
        return reason

    return dict(Counter(kind(r) for r in rows).most_common())
