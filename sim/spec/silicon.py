"""Measured serving runs (aiconfigurator's ``silicon_sample.csv``) and which of them capsim represents.

``sim/data/silicon/silicon_sample.csv`` is NVIDIA aiconfigurator 0.12.0's file of end-to-end
serving runs (Apache-2.0; ``README.md`` there says where it comes from).  Each row is one
configuration measured with aiperf at a fixed concurrency: engine (``backend``) and version,
model, GPU system, precision, input / output lengths (``isl`` / ``osl``), tensor parallelism,
aggregated or disaggregated serving, and the measured mean TTFT and TPOT in milliseconds.

:func:`load_rows` reads every row into a :class:`SiliconRow` and says, per row, whether capsim
can replay it as a scenario (``reasons`` empty) or why not, every reason that applies, in this
order:

* ``disaggregated prefill/decode``: capsim runs prefill and decode on the same replica;
* ``MoE model (...)``: mixture-of-experts models (DeepSeek-V3/R1, gpt-oss, Qwen3-235B-A22B,
  Qwen3.5-397B-A17B, Kimi-K2.5, MiniMax-M2.5, GLM-5) have no step cost in capsim;
* ``model not in the catalog``: a dense model capsim has no shapes for;
* ``<gpu> (Blackwell) not in the GPU catalog``: B300, GB300 (B200 and GB200 are catalogued);
* ``FP4 weights`` / ``INT4 weight-only``: precisions capsim does not compute in;
* ``attention data parallel`` / ``pipeline parallel`` / ``expert parallel``: layouts beyond one
  tensor-parallel replica.

The concurrency is the ``silicon_concurrency=`` the row's ``silicon_data_source`` records; the
rows that do not record it give it as ``batch_size`` (``concurrency_stated`` False).
Precision: ``fp8`` (GEMM modes ``fp8`` and ``fp8_block``) is FP8 weights computing at the GPU's
FP8 peak; rows with no precision and no GEMM quantisation mode name a BF16 checkpoint and are read
as BF16.  The file does not give the KV-cache dtype; it is taken as 16-bit.
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
#: Mixture-of-experts models of the file (each config.json on Hugging Face names its experts:
#: n_routed_experts / num_local_experts / num_experts).
MOE_MODELS: tuple[str, ...] = (
    "deepseek-ai/DeepSeek-R1",
    "deepseek-ai/DeepSeek-V3",
    "nvidia/DeepSeek-R1-NVFP4",
    "nvidia/DeepSeek-V3.1-NVFP4",
    "openai/gpt-oss-120b",
    "Qwen/Qwen3-235B-A22B-FP8",
    "Qwen/Qwen3.5-397B-A17B",
    "moonshotai/Kimi-K2.5",
    "MiniMaxAI/MiniMax-M2.5",
    "zhipuai/GLM-5",
)
#: The file's GPU systems that the catalog holds.
GPUS: dict[str, str] = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200", "gb200": "gb200"}
#: Blackwell systems the catalog does not hold (no sourced figures read for them).
BLACKWELL: tuple[str, ...] = ("b300_sxm", "gb300")
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

    @property
    def representable(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str:
        """The first reason capsim cannot replay the row ("" when it can)."""
        return self.reasons[0] if self.reasons else ""

    @property
    def dtype_bytes(self) -> float:
        return 1.0 if self.precision == "fp8" else 2.0

    @property
    def compute_dtype(self) -> str:
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


def _reasons(r: dict[str, str], precision: str) -> tuple[str, ...]:
    out: list[str] = []
    if r["mode"] != "agg":
        out.append("disaggregated prefill/decode")
    model = r["model_path"]
    if model in MOE_MODELS:
        out.append(f"MoE model ({model})")
    elif model not in DENSE_MODELS:
        out.append(f"model not in the catalog ({model})")
    system = r["system"]
    if system in BLACKWELL:
        out.append(f"{system} (Blackwell) not in the GPU catalog")
    elif system not in GPUS:
        out.append(f"GPU {system} not in the catalog")
    if precision == "fp4":
        out.append("FP4 weights")
    elif precision == "int4":
        out.append("INT4 weight-only")
    elif precision not in ("fp8", "bf16"):
        out.append(f"precision {precision}")
    if r["mode"] == "agg":
        if _int(r["attention_dp_size"]) > 1:
            out.append("attention data parallel")
        if _int(r["pp_size"]) > 1:
            out.append("pipeline parallel")
        if _int(r["moe_ep_size"]) > 1 and model not in MOE_MODELS:
            out.append("expert parallel")
    if r["backend"] not in ENGINES:
        out.append(f"engine {r['backend']}")
    return tuple(out)


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
                conc = int(m.group(1)) if m else _int(r["batch_size"] if agg else r["decode_batch_size"])
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
                        model=DENSE_MODELS.get(r["model_path"]),
                        gpu=GPUS.get(r["system"]),
                        reasons=_reasons(r, precision),
                    )
                )
            except (KeyError, ValueError) as e:
                raise ConfigError(f"silicon data: {p.name} line {i}: {e}") from None
    return rows


def representable(rows: list[SiliconRow] | None = None) -> list[SiliconRow]:
    """The rows capsim can replay."""
    return [r for r in (load_rows() if rows is None else rows) if r.representable]


def reason_counts(rows: list[SiliconRow]) -> dict[str, int]:
    """Rows by their first reason ("representable" for the rows capsim replays), most first.

    Reasons that carry a name (a model, a GPU) are counted by their kind: ``MoE model``,
    ``Blackwell GPU``, ``model not in the catalog``.
    """

    def kind(reason: str) -> str:
        if not reason:
            return "representable"
        if reason.startswith("MoE model"):
            return "MoE model"
        if "(Blackwell)" in reason:
            return "Blackwell GPU"
        if reason.startswith("model not in the catalog"):
            return "model not in the catalog"
        return reason

    return dict(Counter(kind(r.reason) for r in rows).most_common())
