"""The scenario schema: pydantic models for every section, ``extra="forbid"``.

A scenario is validated once, at the border, into a frozen :class:`Scenario`;
everything downstream trusts it.  Catalog names for ``llm.model`` and
``llm.gpu`` are resolved here into inline specs, so the resolved scenario
written next to results says exactly which numbers were simulated.

Validation errors become one line naming the dotted key (see
:func:`format_validation_error`), with a "did you mean" for misspelt keys.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    model_validator,
)

from sim import distributions as D
from sim.errors import ConfigError
from sim.files import regular_file_problem
from sim.physics import gpu as gpu_model
from sim.physics import perop
from sim.physics.sharing import check_contention
from sim.physics.steptable import load_table
from sim.registry import INDEXES, ROUTERS
from sim.spec import catalog, links, prices, storage
from sim.spec import trace as trace_file
from sim.spec.catalog import param_counts
from sim.spec.descriptions import FIELD_DESCRIPTIONS
from sim.spec.efficiency import EFFICIENCY_PRESETS, preset_parameters
from sim.spec.engines import ENGINES
from sim.spec.engines import preset as engine_preset
from sim.spec.metrics import METRIC_STAGE, SLA_METRICS, STATS
from sim.spec.reserve import DEFAULT_RESERVE, RESERVE_PRESETS, EngineReserve


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- distributions

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class ConstantSpec(Strict):
    dist: Literal["constant"]
    value: NonNegFloat


class ExponentialSpec(Strict):
    dist: Literal["exponential"]
    mean: PosFloat


#: Largest coefficient of variation of a lognormal or gamma: at 100 a lognormal's sigma is
#: already 3.0 (its P99.9 some 10,000 x its median); 1e300 overflows its parameters.
MAX_CV = 100.0
CV = Annotated[float, Field(ge=0, le=MAX_CV)]


class LognormalSpec(Strict):
    dist: Literal["lognormal"]
    mean: PosFloat
    cv: CV


class GammaSpec(Strict):
    dist: Literal["gamma"]
    mean: PosFloat
    cv: CV


class UniformSpec(Strict):
    dist: Literal["uniform"]
    low: NonNegFloat
    high: NonNegFloat

    @model_validator(mode="after")
    def _order(self) -> UniformSpec:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


#: Most samples an empirical distribution holds: a measured latency sample is hundreds to
#: thousands; a million is a data file, not a scenario value (and takes a minute to parse).
MAX_EMPIRICAL_SAMPLES = 20_000


class EmpiricalSpec(Strict):
    dist: Literal["empirical"]
    samples: Annotated[list[NonNegFloat], Field(min_length=1, max_length=MAX_EMPIRICAL_SAMPLES)]


DIST_NAMES = ("constant", "exponential", "lognormal", "gamma", "uniform", "empirical")


def _number_to_constant(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return {"dist": "constant", "value": v}
    if isinstance(v, dict) and "dist" not in v:
        raise ValueError(f"a distribution needs 'dist: one of {', '.join(DIST_NAMES)}' (or write a plain number)")
    if isinstance(v, dict) and v.get("dist") not in DIST_NAMES:
        raise ValueError(f"unknown dist {v.get('dist')!r}; allowed: {', '.join(DIST_NAMES)}")
    return v


DistSpec = Annotated[
    Union[ConstantSpec, ExponentialSpec, LognormalSpec, GammaSpec, UniformSpec, EmpiricalSpec],
    Field(discriminator="dist"),
    BeforeValidator(_number_to_constant),
]


def build_distribution(spec: Any) -> D.Distribution:
    """Turn a validated distribution spec into a sampling object."""
    if isinstance(spec, ConstantSpec):
        return D.Constant(spec.value)
    if isinstance(spec, ExponentialSpec):
        return D.Exponential(spec.mean)
    if isinstance(spec, LognormalSpec):
        return D.Lognormal(spec.mean, spec.cv)
    if isinstance(spec, GammaSpec):
        return D.Gamma(spec.mean, spec.cv)
    if isinstance(spec, UniformSpec):
        return D.Uniform(spec.low, spec.high)
    if isinstance(spec, EmpiricalSpec):
        return D.Empirical(tuple(spec.samples))
    raise TypeError(f"not a distribution spec: {spec!r}")


# --------------------------------------------------------------------------- sections


class RunConfig(Strict):
    duration_s: PosFloat = 600.0
    warmup_s: Union[NonNegFloat, Literal["auto"]] = 60.0
    replications: Annotated[int, Field(ge=1)] = 5
    seed: Annotated[int, Field(ge=0)] = 1
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    target_precision: Optional[PosFloat] = None
    max_replications: Annotated[int, Field(ge=1)] = 30
    drain_s: Optional[NonNegFloat] = None
    records: Optional[bool] = None
    partitions: Annotated[int, Field(ge=1)] = 1

    @property
    def drain_seconds(self) -> float:
        """How long in-flight requests may finish after arrivals stop: ``drain_s``,
        or by default max(30 s, a quarter of ``duration_s``)."""
        return self.drain_s if self.drain_s is not None else max(30.0, 0.25 * self.duration_s)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if isinstance(self.warmup_s, float) and self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be < duration_s ({self.duration_s})")
        if self.target_precision is not None and self.replications < 2:
            raise ValueError("replications must be >= 2 when target_precision asks for an interval")
        return self


class QueriesConfig(Strict):
    distinct: Annotated[int, Field(ge=1)] = 10_000
    hot_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    hot_keys: Annotated[int, Field(ge=0)] = 0
    zipf_s: NonNegFloat = 1.0

    @model_validator(mode="after")
    def _check(self) -> QueriesConfig:
        if self.hot_keys > self.distinct:
            raise ValueError(f"hot_keys ({self.hot_keys}) must be <= distinct ({self.distinct})")
        if self.hot_fraction > 0 and self.hot_keys == 0:
            raise ValueError("hot_fraction > 0 needs hot_keys >= 1")
        if self.hot_fraction < 1 and self.hot_keys == self.distinct and self.hot_keys > 0:
            raise ValueError("hot_keys == distinct leaves no cold keys for the (1 - hot_fraction) share")
        return self


class ProfileStep(Strict):
    """From ``at_s`` the level moves to ``value``, linearly over ``ramp_s`` (0: a step)."""

    at_s: NonNegFloat
    value: NonNegFloat
    ramp_s: NonNegFloat = 0.0


class ScheduleProfile(Strict):
    """Steps and linear ramps: the level is the first step's value until its ``at_s``."""

    kind: Literal["schedule"]
    steps: Annotated[list[ProfileStep], Field(min_length=1)]

    @model_validator(mode="after")
    def _order(self) -> ScheduleProfile:
        for i, (a, b) in enumerate(zip(self.steps, self.steps[1:]), start=1):
            if b.at_s < a.at_s + a.ramp_s:
                raise ValueError(
                    f"steps[{i}].at_s ({b.at_s:g}) must be >= steps[{i - 1}].at_s + ramp_s ({a.at_s + a.ramp_s:g})"
                )
        return self


class SinusoidProfile(Strict):
    """``mean + amplitude * cos(2 pi (t - peak_at_s) / period_s)``: a daily cycle by default."""

    kind: Literal["sinusoid"]
    mean: PosFloat
    amplitude: NonNegFloat
    period_s: PosFloat = 86_400.0
    peak_at_s: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> SinusoidProfile:
        if self.amplitude > self.mean:
            raise ValueError(
                f"amplitude ({self.amplitude:g}) must be <= mean ({self.mean:g}): the level cannot go below 0"
            )
        return self


LoadProfile = Annotated[Union[ScheduleProfile, SinusoidProfile], Field(discriminator="kind")]


class TraceConfig(Strict):
    """Replay the arrivals of a CSV trace (see :mod:`sim.spec.trace`)."""

    path: str
    format: Literal["auto", "azure", "burstgpt", "capsim"] = "auto"
    time_scale: PosFloat = 1.0


class WorkloadConfig(Strict):
    mode: Literal["closed", "open", "trace"] = "closed"
    users: Optional[Annotated[int, Field(ge=1)]] = None
    think_s: Optional[DistSpec] = None
    rate_per_s: Optional[PosFloat] = None
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: Optional[Annotated[float, Field(gt=0, le=MAX_CV)]] = None
    queries: QueriesConfig = QueriesConfig()
    profile: Optional[LoadProfile] = None
    trace: Optional[TraceConfig] = None

    @property
    def time_varying(self) -> bool:
        """Does the load change over time (a profile or a trace)?"""
        return self.profile is not None or self.mode == "trace"

    @model_validator(mode="after")
    def _check(self) -> WorkloadConfig:
        if self.mode == "closed":
            if self.users is None and self.profile is None:
                raise ValueError("mode closed needs users (or a profile of users over time)")
            if self.think_s is None:
                raise ValueError("mode closed needs think_s")
        elif self.mode == "open":
            if self.rate_per_s is None and self.profile is None:
                raise ValueError("mode open needs rate_per_s (or a profile of the rate over time)")
            if self.arrival == "gamma" and self.cv is None:
                raise ValueError("arrival gamma needs cv")
            if self.profile is not None and self.arrival != "poisson":
                raise ValueError("profile: an open rate that changes over time needs arrival poisson")
        else:
            if self.trace is None:
                raise ValueError("mode trace needs trace: {path: ...}")
            if self.profile is not None:
                raise ValueError("profile: a trace already says when requests arrive; drop profile")
        if self.trace is not None and self.mode != "trace":
            raise ValueError("trace: set mode: trace to replay it")
        return self


class RoutingConfig(Strict):
    """Fuzzy routing before the cache: each utterance goes to its nearest canonical question.

    ``impl`` is the edit-distance implementation timed by ``capsim calibrate
    routing`` (``calibration``, default the file shipped in ``sim/data``);
    ``questions`` is the canonical set's size (the workload's keys
    ``0 .. questions-1`` are in it, the rest match none); ``threshold`` the
    normalised distance under which a match is accepted (one the calibration
    swept).  ``variants``: shoppers type spelling variants, so without
    routing a share of requests carry a key never seen before (default: on
    when ``enabled``; set it with ``enabled: false`` for the no-routing
    baseline of a what-if).
    """

    enabled: bool = False
    impl: Literal["numpy_table", "two_row", "rapidfuzz", "rapidfuzz_nocutoff"] = "rapidfuzz"
    questions: Annotated[int, Field(ge=1)] = 400
    threshold: Annotated[float, Field(gt=0, lt=1)] = 0.3
    workers: Annotated[int, Field(ge=1)] = 1
    cpu_cores: Optional[Annotated[int, Field(ge=1)]] = None
    calibration: Optional[str] = None
    variants: Optional[bool] = None

    @property
    def typed_variants(self) -> bool:
        """Do requests carry typed spelling variants (``variants``, default ``enabled``)?"""
        return self.enabled if self.variants is None else self.variants


class CacheConfig(Strict):
    enabled: bool = True
    policy: Literal["lru"] = "lru"
    capacity: Annotated[int, Field(ge=0)] = 1000
    lookup_ms: DistSpec = ConstantSpec(dist="constant", value=1.0)


def _check_wakeup(v: Any) -> Any:
    """``retrieval.wakeup_ms``: a number of ms >= 0, or [idle_ms, extra_ms] points (idle_ms > 0 rising)."""
    want = "a number of ms >= 0, or [idle_ms, extra_ms] points with idle_ms > 0 rising and extra_ms >= 0"

    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if num(v) and v >= 0:
        return float(v)
    if isinstance(v, list) and v and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in v):
        pts = [tuple(p) for p in v]
        if all(num(x) and num(y) and x > 0 and y >= 0 for x, y in pts):
            idle = [x for x, _ in pts]
            if idle == sorted(set(idle)):
                return [(float(x), float(y)) for x, y in pts]
    raise ValueError(f"expected {want}, got {v!r}")


class SchedulerSpec(Strict):
    """``retrieval.scheduler``: the service as an event loop and search threads on one core
    under Linux's EEVDF scheduler (:mod:`sim.engine.sched`) instead of shared work."""

    # the event loop's CPU per request outside the search (half parsing, half answering), ms
    loop_cpu_ms: Annotated[float, Field(ge=0)]
    # a request's time off the service's cores (client and wire), half each way, ms
    off_core_ms: Annotated[float, Field(ge=0)] = 0.0
    # the kernel's base slice: 0.75 ms x (1 + log2 of the CPUs, at most 8); 1.5 ms on 2 CPUs
    slice_ms: Annotated[float, Field(gt=0)] = 1.5
    # the timer tick, 1000 / CONFIG_HZ ms (4 ms at HZ=250)
    tick_ms: Annotated[float, Field(gt=0)] = 4.0


class RetrievalConfig(Strict):
    enabled: bool = True
    index: Literal[INDEXES.names()] = "hnsw"  # type: ignore[valid-type]
    docs: Annotated[int, Field(ge=1)] = 50_000
    dim: Annotated[int, Field(ge=1)] = 768
    top_k: Annotated[int, Field(ge=1)] = 5
    workers: Annotated[int, Field(ge=1)] = 4
    cpu_cores: Optional[Annotated[int, Field(ge=1)]] = None
    service_ms: Optional[DistSpec] = None
    calibration: Optional[str] = None
    ef_search: Optional[Annotated[int, Field(ge=1)]] = None
    nprobe: Optional[Annotated[int, Field(ge=1)]] = None
    overhead_ms: DistSpec = ConstantSpec(dist="constant", value=0.0)
    # How much slower each of m searches runs when m run at once on separate cores, m = 1, 2, ...
    # (sim.physics.sharing); by default from the calibration's 1..K-thread records.
    contention: Optional[list[float]] = None
    # Extra time of the first search after the pool sat idle (a core waking from sleep, cold caches):
    # ms, or [idle_ms, extra_ms] points (linear from 0 at no idle time, between them, flat beyond:
    # a longer sleep, a slower wake-up).
    wakeup_ms: Annotated[Union[float, list[tuple[float, float]]], BeforeValidator(_check_wakeup)] = 0.0
    # How long a finished search's answer waits for the core while another search still holds it
    # (an event loop behind a running search thread); none by default (sim.engine.pool).
    handback_ms: Optional[DistSpec] = None
    # The service's threads scheduled on one core (sim.engine.sched); none: shared work (sim.engine.pool).
    scheduler: Optional[SchedulerSpec] = None

    @model_validator(mode="after")
    def _check(self) -> RetrievalConfig:
        problem = check_contention(self.contention or (), "contention")
        if problem:
            raise ValueError(problem)
        if self.scheduler is not None:
            if self.cpu_cores != 1:
                raise ValueError(
                    f"scheduler: needs cpu_cores: 1, got {self.cpu_cores or 'none (one per worker)'} (one core's"
                    " run queue is modelled;"
                    " per-core queues and their balancing are not)"
                )
            if self.handback_ms is not None:
                raise ValueError("scheduler: not with handback_ms (the scheduled threads make the hand-back)")
        return self

    @property
    def wakeup_s(self) -> float | list[tuple[float, float]]:
        w = self.wakeup_ms
        return w / 1e3 if isinstance(w, (int, float)) else [(x / 1e3, y / 1e3) for x, y in w]


class ModelSpec(Strict):
    name: Optional[str] = None
    layers: Annotated[int, Field(ge=1)]
    hidden: Annotated[int, Field(ge=1)]
    heads: Annotated[int, Field(ge=1)]
    kv_heads: Annotated[int, Field(ge=1)]
    head_dim: Annotated[int, Field(ge=1)]
    vocab: Annotated[int, Field(ge=1)]
    intermediate: Optional[Annotated[int, Field(ge=1)]] = None
    params: Optional[PosFloat] = None
    tied_embeddings: bool = False
    qkv_bias: bool = False
    # Mixture of experts (0 experts: a dense model); see sim/spec/catalog/models.yaml.
    experts: Annotated[int, Field(ge=0)] = 0
    experts_per_token: Annotated[int, Field(ge=0)] = 0
    shared_experts: Annotated[int, Field(ge=0)] = 0
    expert_intermediate: Optional[Annotated[int, Field(ge=1)]] = None
    dense_layers: Annotated[int, Field(ge=0)] = 0
    # Multi-head latent attention (DeepSeek-V2/V3): set kv_lora_rank and qk_rope_head_dim.
    q_lora_rank: Annotated[int, Field(ge=0)] = 0
    kv_lora_rank: Annotated[int, Field(ge=0)] = 0
    qk_rope_head_dim: Annotated[int, Field(ge=0)] = 0
    qk_nope_head_dim: Annotated[int, Field(ge=0)] = 0
    v_head_dim: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.heads % self.kv_heads:
            raise ValueError(f"kv_heads ({self.kv_heads}) must divide heads ({self.heads})")
        if self.params is None and self.intermediate is None:
            raise ValueError("give params, or intermediate so params can be computed from the shapes")
        if self.experts:
            if not 1 <= self.experts_per_token <= self.experts:
                raise ValueError(
                    f"experts_per_token must be 1 to experts ({self.experts}), got {self.experts_per_token}"
                )
            if self.expert_intermediate is None:
                raise ValueError("a model with experts needs expert_intermediate (one expert's MLP width)")
            if self.dense_layers >= self.layers:
                raise ValueError(f"dense_layers ({self.dense_layers}) must be below layers ({self.layers})")
        elif self.experts_per_token or self.shared_experts or self.dense_layers or self.expert_intermediate:
            raise ValueError("experts_per_token, shared_experts, dense_layers, expert_intermediate need experts > 0")
        if self.kv_lora_rank and not (self.qk_rope_head_dim and self.v_head_dim):
            raise ValueError("kv_lora_rank (latent attention) needs qk_rope_head_dim and v_head_dim")
        return self

    @property
    def moe_layers(self) -> int:
        """Layers with routed experts (0 for a dense model)."""
        return self.layers - self.dense_layers if self.experts else 0

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert in one layer: ``3 * hidden * expert_intermediate``."""
        return 3 * self.hidden * (self.expert_intermediate or 0)

    @property
    def routed_params(self) -> float:
        """Parameters of every routed expert of every MoE layer."""
        return float(self.moe_layers * self.experts * self.expert_params)

    @property
    def active_param_count(self) -> float:
        """Parameters one token uses: all of a dense model's; a MoE model's less the routed
        experts it is not sent to (``param_count - (experts - experts_per_token) * ...``)."""
        return self.param_count - self.moe_layers * (self.experts - self.experts_per_token) * self.expert_params

    @property
    def param_count(self) -> float:
        if self.params is not None:
            return float(self.params)
        assert self.intermediate is not None  # _check requires params or intermediate
        total, _active = param_counts(  # a dense model's count is param_count's
            layers=self.layers,
            hidden=self.hidden,
            heads=self.heads,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            intermediate=self.intermediate,
            vocab=self.vocab,
            tied_embeddings=self.tied_embeddings,
            qkv_bias=self.qkv_bias,
            experts=self.experts,
            experts_per_token=self.experts_per_token,
            shared_experts=self.shared_experts,
            expert_intermediate=self.expert_intermediate or 0,
            dense_layers=self.dense_layers,
            q_lora_rank=self.q_lora_rank,
            kv_lora_rank=self.kv_lora_rank,
            qk_rope_head_dim=self.qk_rope_head_dim,
            qk_nope_head_dim=self.qk_nope_head_dim,
            v_head_dim=self.v_head_dim,
        )
        return float(total)


#: A GPU figure (GB/s, GB, TFLOPS) above 10^9 describes no device; the bound keeps every
#: product of them (bytes, FLOPs per step, KV blocks) a finite number.
GPUFigure = Annotated[float, Field(gt=0, le=1e9)]


class GPUSpec(Strict):
    name: Optional[str] = None
    hbm_bandwidth_gbps: GPUFigure
    memory_gb: GPUFigure
    # What the card exposes to the engine (torch.cuda.mem_get_info's total), GiB; None: memory_gb
    # read as GiB times the median exposed fraction of the catalog's measured cards.
    memory_exposed_gib: Optional[GPUFigure] = None
    peak_tflops: GPUFigure
    fp8_tflops: Optional[GPUFigure] = None
    fp4_tflops: Optional[GPUFigure] = None
    interconnect_gbps: Optional[GPUFigure] = None

    @model_validator(mode="after")
    def _exposed(self) -> GPUSpec:
        x, m = self.memory_exposed_gib, self.memory_gb
        if x is not None and not 0.9 * m <= x <= m:
            raise ValueError(
                f'memory_exposed_gib ({x:g}) must be 90-100 % of memory_gb ({m:g}, read as GiB): an "N GB" card '
                f"exposes a little under N GiB; change both together, or leave memory_exposed_gib out"
            )
        return self


class PromptComposition(Strict):
    """``system_tokens + top_k * doc_tokens + question_tokens``."""

    system_tokens: Annotated[int, Field(ge=0)] = 0
    doc_tokens: DistSpec = ConstantSpec(dist="constant", value=0)
    question_tokens: DistSpec = ConstantSpec(dist="constant", value=0)


def _prompt_kind(v: Any) -> str:
    if isinstance(v, PromptComposition) or (isinstance(v, dict) and "dist" not in v):
        return "composition"
    return "distribution"


PromptSpec = Annotated[
    Union[Annotated[PromptComposition, Tag("composition")], Annotated[DistSpec, Tag("distribution")]],
    Discriminator(_prompt_kind),
]


def _check_reserve(v: Any) -> Any:
    """``llm.engine_reserve``: a preset name or a non-negative number of GiB per GPU."""
    names = ", ".join(RESERVE_PRESETS)
    if isinstance(v, str) and v in RESERVE_PRESETS:
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v and v != float("inf"):
        return float(v)
    raise ValueError(f"expected one of {names} or a number of GiB per GPU >= 0, got {v!r}")


def _catalog_entry(kind: str):
    def convert(v: Any) -> Any:
        if isinstance(v, str):
            entry = catalog.model(v, key="llm.model") if kind == "model" else catalog.gpu(v, key="llm.gpu")
            return {"name": v.lower(), **entry}
        return v

    return convert


def _is_moe(model: Any) -> bool:
    """Whether a scenario's ``llm.model`` (a catalog name or an inline mapping) has routed experts;
    False for anything the model field's own check will refuse."""
    if isinstance(model, dict):
        return bool(model.get("experts"))
    if isinstance(model, str):
        try:
            return bool(catalog.model_entry(model).get("experts"))
        except ConfigError:
            return False
    return False


#: KV blocks of the pool no request holds: vLLM V1 keeps block 0 as its null block
#: (``vllm/v1/core/block_pool.py``, ``BlockPool.__init__``: ``self.null_block =
#: self.free_block_queue.popleft()``); the logged ``num_gpu_blocks`` counts it.
NULL_KV_BLOCKS = 1
#: Engines whose memory fraction is of the memory left after the weights and the reserve
#: (TensorRT-LLM's ``free_gpu_memory_fraction``), not of the whole card.
FREE_FRACTION_ENGINES: tuple[str, ...] = ("trtllm",)


#: Where a replica's engine-start default comes from: vLLM issue #20264 (a pod scaled up with its
#: torch.compile cache kept) logs model loading in 0.90 s and the first answer after 59 s in
#: all; the rest, 58 s, is process start, compilation, CUDA graph capture and the API server.
#: https://github.com/vllm-project/vllm/issues/20264
ENGINE_START_S = 58.0

#: Signals an autoscaler may follow, and whether their target is a share (0 to 1).
AUTOSCALE_SIGNALS = {"queue": False, "kv": True, "utilization": True}


class AutoscaleConfig(Strict):
    """A replica autoscaler (see :mod:`sim.engine.llm.autoscale`): every ``decision_interval_s``
    it reads ``signal`` off the ready replicas and sets the replica count the Kubernetes
    HPA way, between ``min_replicas`` and ``max_replicas``; a new replica serves after its cold
    start (weights read from ``weights_from`` or at ``load_gbps``, plus ``engine_start_s``), at most
    ``max_starting`` at once; a scale-down waits out ``cooldown_s``.  ``llm.replicas`` is the count
    the run starts with."""

    min_replicas: Annotated[int, Field(ge=1)] = 1
    max_replicas: Annotated[int, Field(ge=1)]
    signal: Literal[tuple(AUTOSCALE_SIGNALS)] = "queue"  # type: ignore[valid-type]
    target: PosFloat
    decision_interval_s: PosFloat = 15.0
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.1
    cooldown_s: NonNegFloat = 300.0
    weights_from: Literal[storage.storage_names()] = "ebs-gp3"  # type: ignore[valid-type]
    load_gbps: Optional[Annotated[float, Field(gt=0, le=1e6)]] = None
    engine_start_s: Annotated[float, Field(ge=0, le=86_400)] = ENGINE_START_S
    # Most replicas starting at once (None: no limit); a scale-up beyond it waits for a later decision.
    max_starting: Optional[Annotated[int, Field(ge=1)]] = None

    @model_validator(mode="after")
    def _check(self) -> AutoscaleConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas}); "
                f"raise llm.autoscale.max_replicas or lower llm.autoscale.min_replicas"
            )
        if AUTOSCALE_SIGNALS[self.signal] and self.target > 1:
            raise ValueError(
                f"target {self.target:g} for signal {self.signal} is a share of the replica's "
                f"{'KV blocks' if self.signal == 'kv' else 'batch slots'} in use, above 0 and at most 1 "
                f"(e.g. 0.8); lower llm.autoscale.target"
            )
        return self

    @property
    def load_bytes_per_s(self) -> float:
        """How fast a starting replica reads its weights: ``load_gbps`` x 1e9, else the catalog's
        ``weights_from`` figure."""
        if self.load_gbps is not None:
            return self.load_gbps * 1e9
        return storage.storage(self.weights_from).read_bytes_per_s


class PoolConfig(Strict):
    """One pool of a disaggregated deployment (``llm.disaggregated.prefill`` / ``.decode``): its
    replicas and the keys of the ``llm`` block it sets for itself; a key it leaves out is the
    ``llm`` block's."""

    replicas: Annotated[int, Field(ge=1)] = 1
    gpu: Annotated[Optional[GPUSpec], BeforeValidator(_catalog_entry("gpu"))] = None
    tensor_parallel: Optional[Annotated[int, Field(ge=1)]] = None
    expert_parallel: Optional[Annotated[int, Field(ge=1)]] = None
    max_batch: Optional[Annotated[int, Field(ge=1)]] = None
    max_batched_tokens: Optional[Annotated[int, Field(ge=1)]] = None

    def overrides(self) -> dict[str, Any]:
        """The ``llm`` keys this pool sets (``replicas`` included)."""
        return {k: getattr(self, k) for k in type(self).model_fields if getattr(self, k) is not None}


class DisaggConfig(Strict):
    """Prefill and decode on separate pools (see :mod:`sim.engine.llm.disagg`): a request is
    prefilled on a ``prefill`` replica, its KV handed over ``link`` (per GPU, per direction;
    ``link_gbps`` overrides the catalog, ``latency_us`` is added to each hand-off), then decoded on
    a ``decode`` replica."""

    prefill: PoolConfig
    decode: PoolConfig
    link: Literal[links.link_names()] = "infiniband-ndr"  # type: ignore[valid-type]
    link_gbps: Optional[Annotated[float, Field(gt=0, le=1e6)]] = None
    latency_us: Annotated[float, Field(ge=0, le=1e7)] = 0.0


class LLMConfig(Strict):
    enabled: bool = True
    model: Annotated[ModelSpec, BeforeValidator(_catalog_entry("model"))] = "article-8l"  # type: ignore[assignment]
    gpu: Annotated[GPUSpec, BeforeValidator(_catalog_entry("gpu"))] = "h100-sxm"  # type: ignore[assignment]
    replicas: Annotated[int, Field(ge=1)] = 1
    router: Literal[ROUTERS.names()] = "least_outstanding"  # type: ignore[valid-type]
    max_batch: Annotated[int, Field(ge=1)] = 256
    dtype_bytes: PosFloat = 2.0
    kv_dtype_bytes: PosFloat = 2.0
    # Tensor-core precision of the matmuls: fp8 / fp4 use the GPU's fp8_tflops / fp4_tflops
    # (weights and activations in that format, as FP8 and NVFP4 engines run them);
    # weight-only quantisation still computes in bf16.
    compute_dtype: Literal["bf16", "fp8", "fp4"] = "bf16"
    # A named weight format; sets dtype_bytes (bf16 2, fp8 1, fp4 0.5625 with NVFP4's block
    # scales) and keeps the activations the GPUs exchange in bf16.
    weights_dtype: Optional[Literal["bf16", "fp8", "fp4"]] = None
    # GPUs of a replica the routed experts are spread over, whole experts each (MoE models);
    # None: tensor_parallel. 1: every expert split over the replica like a dense MLP.
    expert_parallel: Optional[Annotated[int, Field(ge=1)]] = None
    # Step-cost parameters: by default fitted to published measurements (sim/data/published/,
    # sim.spec.efficiency); "published-slow" / "published-fast" are the band's ends, "custom"
    # takes only what is set here (unset ones fall back to the values below).
    efficiency: Literal[EFFICIENCY_PRESETS] = "published"  # type: ignore[valid-type]
    # A serving-engine preset (sim.spec.engines): scheduler defaults and step costs fitted to its
    # measured serving runs, filling the keys the scenario leaves unset.
    engine: Optional[Literal[ENGINES]] = None  # type: ignore[valid-type]
    engine_version: Optional[str] = None
    bw_efficiency: Annotated[float, Field(gt=0, le=1)] = 0.8
    mfu: Annotated[float, Field(gt=0, le=1)] = 0.5
    step_overhead_ms: NonNegFloat = 1.0
    step_overhead_per_seq_ms: NonNegFloat = 0.0
    allreduce_latency_us: NonNegFloat = 0.0
    # A measured step-time table (CSV path) replaces the roofline's step times; see sim.physics.steptable.
    step_table: Optional[str] = None
    # How a step is costed without a step_table: "auto" sums kernels timed in isolation
    # (sim.physics.perop) where the engine, GPU, dense model, tensor parallelism and dtype are covered
    # and falls back to the roofline elsewhere (a MoE model included); "perop" requires the tables
    # (a MoE layout's too); "roofline" never uses them.
    step_cost: Literal["auto", "perop", "roofline"] = "auto"
    # What the per-operation sum leaves out (scheduling, sampling, launch gaps), per step and per
    # sequence in it; the engine preset fills its fitted values.
    perop_overhead_ms: NonNegFloat = 0.0
    perop_overhead_per_seq_ms: NonNegFloat = 0.0
    perop_prefill_scale: Annotated[float, Field(gt=0, le=4)] = 1.0
    # A request's time in the engine outside its GPU steps (API server, tokenisation, handing the
    # first token back), before it joins a replica's queue; the engine preset fills its fitted value.
    frontend_ms: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    tensor_parallel: Annotated[int, Field(ge=1)] = 1
    # What the engine keeps per GPU outside the KV pool: a preset (sim.spec.reserve) or GiB per GPU.
    engine_reserve: Annotated[Union[str, float], BeforeValidator(_check_reserve)] = DEFAULT_RESERVE
    kv_block_tokens: Annotated[int, Field(ge=1)] = 16
    max_batched_tokens: Annotated[int, Field(ge=1)] = 8192
    chunked_prefill: bool = True
    # What gpu_memory_utilization is a share of: the whole card ("card": vLLM, SGLang) or the memory
    # the weights and the reserve leave free ("free": TensorRT-LLM's free_gpu_memory_fraction).
    # None: "free" under engine trtllm, else "card".
    memory_fraction_of: Optional[Literal["card", "free"]] = None
    # Without chunked prefill: whole prompts beside the decodes in one step ("mixed": vLLM V1,
    # TensorRT-LLM) or prefill steps in place of decode steps ("separate": SGLang without
    # enable_mixed_chunk).  None: "separate" under engine sglang or no engine, else "mixed".
    prefill_steps: Optional[Literal["mixed", "separate"]] = None
    prefix_caching: Optional[bool] = None  # None: on when prompt_tokens has system_tokens
    prompt_tokens: PromptSpec = 1000  # type: ignore[assignment]
    output_tokens: DistSpec = 100  # type: ignore[assignment]
    # A replica autoscaler (None: a static fleet of `replicas`).
    autoscale: Optional[AutoscaleConfig] = None
    # Separate prefill and decode pools (None: every replica prefills and decodes).
    disaggregated: Optional[DisaggConfig] = None

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
    _pools: Optional[tuple[LLMConfig, LLMConfig]] = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _efficiency_preset(cls, data: Any) -> Any:
        """Fill the step-cost parameters the scenario does not set from the ``efficiency`` preset."""
        if not isinstance(data, dict):
            return data
        preset = data.get("efficiency", "published")
        base: dict[str, Any] = {}
        if preset in EFFICIENCY_PRESETS and preset != "custom":  # an unknown name: the field's own check
            base = preset_parameters(preset)
        engine = data.get("engine")
        if isinstance(engine, str) and engine in ENGINES:  # an unknown engine: the field's own check
            # the engine's roofline fit saw dense models only: a MoE model keeps the efficiency preset's
            # roofline, with the engine's per-operation overheads where its tables cover the replica
            named = "efficiency" in data
            moe = _is_moe(data.get("model"))
            base.update(engine_preset(engine, with_step_cost=not named and not moe, with_perop=not named))
        return {**base, **data}

    @model_validator(mode="before")
    @classmethod
    def _weights_dtype(cls, data: Any) -> Any:
        """``weights_dtype`` names ``dtype_bytes``; both set must agree."""
        if not isinstance(data, dict) or data.get("weights_dtype") not in gpu_model.WEIGHT_DTYPE_BYTES:
            return data  # unset, or an unknown name the field's own check reports
        name = data["weights_dtype"]
        nbytes = gpu_model.WEIGHT_DTYPE_BYTES[name]
        given = data.get("dtype_bytes")
        if given is not None and given != nbytes:
            raise ValueError(
                f"weights_dtype {name} is {nbytes:g} bytes per weight but dtype_bytes is {given!r}; set one of them"
            )
        return {**data, "dtype_bytes": nbytes}

    @property
    def activation_bytes(self) -> float:
        """Bytes of one activation element the GPUs exchange: bf16 (2) when ``weights_dtype`` names
        the weight format; ``dtype_bytes`` when only that is given (it then sizes both)."""
        return gpu_model.ACTIVATION_BYTES if self.weights_dtype is not None else self.dtype_bytes

    @property
    def peak_tflops(self) -> float:
        """Dense tensor TFLOPS at ``compute_dtype``: the GPU's fp4_tflops, fp8_tflops or peak_tflops (bf16)."""
        g = self.gpu
        if self.compute_dtype == "fp4" and g.fp4_tflops:
            return g.fp4_tflops
        if self.compute_dtype == "fp8" and g.fp8_tflops:
            return g.fp8_tflops
        return g.peak_tflops

    @property
    def expert_parallel_size(self) -> int:
        """GPUs the routed experts are spread over: ``expert_parallel``, by default ``tensor_parallel``
        for a MoE model; 1 for a dense one."""
        if not self.model.experts:
            return 1
        return self.expert_parallel if self.expert_parallel is not None else self.tensor_parallel

    @property
    def weights_bytes(self) -> float:
        """Bytes of the whole model's weights (all ``tensor_parallel`` GPUs together)."""
        return gpu_model.weights_bytes(self.model.param_count, self.dtype_bytes)

    @property
    def kv_bytes_per_token(self) -> float:
        """KV bytes of one token for the whole model (all GPUs together)."""
        m = self.model
        if m.kv_lora_rank:
            return gpu_model.mla_kv_bytes_per_token(m.layers, m.kv_lora_rank, m.qk_rope_head_dim, self.kv_dtype_bytes)
        return gpu_model.kv_bytes_per_token(m.layers, m.kv_heads, m.head_dim, self.kv_dtype_bytes)

    @property
    def kv_bytes_per_token_per_gpu(self) -> float:
        """KV bytes of one token on each GPU of the replica (KV heads split, or replicated when tp > kv_heads)."""
        m = self.model
        if m.kv_lora_rank:  # the latent is not split by heads: every GPU holds all of it
            return gpu_model.mla_kv_bytes_per_token(m.layers, m.kv_lora_rank, m.qk_rope_head_dim, self.kv_dtype_bytes)
        return gpu_model.kv_bytes_per_token_per_gpu(
            m.layers, m.kv_heads, m.head_dim, self.kv_dtype_bytes, self.tensor_parallel
        )

    @property
    def memory_exposed_bytes(self) -> float:
        """Memory one GPU exposes to the engine, bytes: ``memory_exposed_gib``, or ``memory_gb``
        read as GiB times the catalog's median exposed fraction (an "80 GB" card is 80 GiB of
        DRAM, of which the driver keeps about 1 %)."""
        g = self.gpu
        if g.memory_exposed_gib is not None:
            return g.memory_exposed_gib * gpu_model.GIB
        return g.memory_gb * gpu_model.GIB * catalog.exposed_fraction()

    @property
    def reserve_preset(self) -> EngineReserve | None:
        """The engine-reserve preset, or None when ``engine_reserve`` is a number of GiB."""
        r = self.engine_reserve
        return RESERVE_PRESETS[r] if isinstance(r, str) else None

    @property
    def reserve_terms_bytes(self) -> dict[str, float]:
        """Each term of the engine's per-GPU reserve, bytes (``{"user": ...}`` for a number)."""
        p = self.reserve_preset
        if p is None:
            return {"user": float(self.engine_reserve) * gpu_model.GIB}
        m = self.model
        intermediate = m.intermediate if m.intermediate is not None else 4 * m.hidden
        forward = gpu_model.profile_activation_bytes(
            self.max_batched_tokens, m.hidden, intermediate, self.activation_bytes, p.tokens_factor
        )
        sampler = p.vocab_factor * 4.0 * m.vocab * self.max_batch
        return {
            "activation": max(forward, sampler),
            "non_torch": p.non_torch_gib * gpu_model.GIB,
            "nccl": p.nccl_gib * gpu_model.GIB if self.tensor_parallel > 1 else 0.0,
            "cuda_graphs": p.cuda_graph_gib * gpu_model.GIB,
        }

    @property
    def reserve_bytes(self) -> float:
        """What the engine keeps per GPU outside the KV pool, beside the weights."""
        t = self.reserve_terms_bytes
        if "user" in t:
            return t["user"]
        return gpu_model.engine_reserve_bytes(
            t["activation"], t["non_torch"], t["nccl"], self.tensor_parallel, t["cuda_graphs"]
        )

    @property
    def kv_budget_bytes(self) -> float:
        """KV pool of each GPU: exposed memory * gpu_memory_utilization - weights / tp - engine
        reserve (vLLM, SGLang); with ``memory_fraction_of: free`` (engine trtllm's default) the
        fraction is of the memory the weights and the reserve leave (TensorRT-LLM's
        ``free_gpu_memory_fraction``)."""
        pool = gpu_model.kv_pool_bytes_of_free if self.fraction_of_free else gpu_model.kv_pool_bytes
        return pool(
            self.memory_exposed_bytes,
            self.gpu_memory_utilization,
            self.weights_bytes / self.tensor_parallel,
            self.reserve_bytes,
        )

    @property
    def perop_dtype(self) -> str:
        """The GEMM dtype the per-operation tables are keyed by (``fp8`` or ``bf16``)."""
        return perop.dtype_key(self.weights_dtype, self.compute_dtype)

    @property
    def perop_entry(self) -> dict[str, Any] | None:
        """The per-operation tables the step cost uses, or None (roofline or a step table)."""
        if self.step_cost == "roofline" or self.step_table is not None:
            return None
        if self.step_cost == "auto" and self.model.experts:  # MoE tables: opt-in (see sim.physics.perop)
            return None
        return perop.lookup(
            self.gpu.name, self.engine, self.model.name, self.tensor_parallel, self.perop_dtype, self.perop_ep
        )

    @property
    def perop_ep(self) -> int | None:
        """The expert layout the per-operation tables are keyed by: the GPUs a MoE model's routed
        experts are spread over (None for a dense model)."""
        return self.expert_parallel_size if self.model.experts else None

    @property
    def kv_blocks(self) -> int:
        """KV-cache blocks of ``kv_block_tokens`` tokens one replica holds."""
        return gpu_model.kv_blocks(self.kv_budget_bytes, self.kv_bytes_per_token_per_gpu, self.kv_block_tokens)

    @property
    def kv_blocks_usable(self) -> int:
        """Blocks requests can hold: ``kv_blocks`` less the ``NULL_KV_BLOCKS`` the engine keeps
        as a placeholder (vLLM V1's ``BlockPool.__init__`` takes block 0 of the pool as its
        ``null_block``, which no request is given; ``BlockPool.get_usage`` divides by
        ``num_gpu_blocks - 1``)."""
        return self.kv_blocks - NULL_KV_BLOCKS

    @property
    def kv_tokens(self) -> int:
        """Tokens one replica's KV pool holds (``kv_blocks * kv_block_tokens``), as vLLM logs them."""
        return self.kv_blocks * self.kv_block_tokens

    @property
    def fraction_of_free(self) -> bool:
        """Whether ``gpu_memory_utilization`` is a share of the memory left after the weights and
        the reserve (``memory_fraction_of``; by default under the engines that size it so)."""
        if self.memory_fraction_of is not None:
            return self.memory_fraction_of == "free"
        return self.engine in FREE_FRACTION_ENGINES

    @property
    def scheduler(self) -> str:
        """The replica's step planner (:data:`sim.registry.SCHEDULERS`)."""
        if self.chunked_prefill:
            return "chunked"
        steps = self.prefill_steps or ("mixed" if self.engine in ("vllm", "trtllm") else "separate")
        return "mixed_whole" if steps == "mixed" else "whole"

    @property
    def prefix_caching_enabled(self) -> bool:
        """``prefix_caching``, or by default: on when the prompt is a composition with system_tokens."""
        if self.prefix_caching is not None:
            return self.prefix_caching
        return isinstance(self.prompt_tokens, PromptComposition) and self.prompt_tokens.system_tokens > 0

    @property
    def prefix_tokens(self) -> int:
        """Tokens of the shared system prompt held once per replica: its *full* blocks (0 when off)."""
        if not self.prefix_caching_enabled or not isinstance(self.prompt_tokens, PromptComposition):
            return 0
        b = self.kv_block_tokens
        return (self.prompt_tokens.system_tokens // b) * b

    @model_validator(mode="after")
    def _fits(self) -> LLMConfig:
        if not self.enabled:
            return self
        tp = self.tensor_parallel
        if self.compute_dtype == "fp8" and self.gpu.fp8_tflops is None:
            raise ValueError(
                f"compute_dtype fp8 needs llm.gpu.fp8_tflops; {self.gpu.name or 'this GPU'} has none in the "
                f"catalog (set it inline, or compute_dtype bf16)"
            )
        if self.compute_dtype == "fp4" and self.gpu.fp4_tflops is None:
            raise ValueError(
                f"compute_dtype fp4 needs llm.gpu.fp4_tflops; {self.gpu.name or 'this GPU'} has none in the "
                f"catalog (FP4 tensor cores: b200, b300, gb200, gb300; set it inline, or compute_dtype fp8 / bf16)"
            )
        self._check_parallel()
        if self.step_table is not None:
            problem = regular_file_problem(Path(self.step_table).expanduser())
            if problem is not None:  # before opening: a FIFO would block; a folder is not "missing"
                raise ValueError(f"step_table: file {self.step_table!r} {problem}")
            try:
                load_table(self.step_table)
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"step_table: file {self.step_table!r}: not UTF-8 text (byte {e.start}); is it a binary file?"
                ) from None
            except ConfigError as e:
                raise ValueError(str(e).replace("llm.step_table: ", "step_table: ", 1)) from None
        if self.step_cost == "perop" and self.step_table is None and self.perop_entry is None:
            why = perop.coverage(self.gpu.name, self.engine, self.model.name, tp, self.perop_dtype, self.perop_ep)
            raise ValueError(f"step_cost perop: {why}; use step_cost auto (roofline where uncovered) or roofline")
        if self.kv_blocks_usable < 1:
            raise ValueError(self._no_kv_room())
        a = self.autoscale
        if a is not None and not a.min_replicas <= self.replicas <= a.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) is the fleet the run starts with and must lie between "
                f"llm.autoscale.min_replicas ({a.min_replicas}) and max_replicas ({a.max_replicas}); "
                f"change llm.replicas"
            )
        if self.max_batched_tokens < self.max_batch:
            raise ValueError(
                f"max_batched_tokens ({self.max_batched_tokens}) must be >= max_batch "
                f"({self.max_batch}) so every running sequence can decode in one step; "
                f"raise llm.max_batched_tokens"
            )
        if self.disaggregated is not None:
            self._check_disaggregated()
        return self

    def _no_kv_room(self) -> str:
        """Why the weights and the engine reserve leave no KV block, with the figures."""
        gib, tp = gpu_model.GIB, self.tensor_parallel
        exposed = self.memory_exposed_bytes / gib
        if self.fraction_of_free:  # the fraction is of what is left: the card is the limit
            usable, how = exposed, f"{exposed:.2f} GiB exposed"
        else:
            usable = exposed * self.gpu_memory_utilization
            how = f"{exposed:.2f} GiB exposed x gpu_memory_utilization {self.gpu_memory_utilization:g}"
        per_gpu = self.weights_bytes / tp / gib
        what = "do not fit" if per_gpu >= usable else "leave no room for one KV block"
        return (
            f"model weights ({per_gpu:.1f} GiB per GPU at dtype_bytes {self.dtype_bytes:g} over "
            f"llm.tensor_parallel {tp}) and the engine reserve ({self.reserve_bytes / gib:.2f} GiB, "
            f"llm.engine_reserve {self.engine_reserve}) {what} in {self.gpu.name or 'the GPU'}'s "
            f"{usable:.1f} GiB ({how}); raise llm.tensor_parallel, use a bigger GPU or lower dtype_bytes"
        )

    def _check_parallel(self) -> None:
        """Tensor and expert parallelism the model and GPU allow."""
        tp, m = self.tensor_parallel, self.model
        if self.expert_parallel is not None:
            ep = self.expert_parallel
            if not m.experts and ep > 1:
                raise ValueError(f"expert_parallel {ep}: the model has no experts; leave llm.expert_parallel out")
            if tp % ep:
                raise ValueError(f"expert_parallel ({ep}) must divide tensor_parallel ({tp}); set llm.expert_parallel")
        if m.experts and m.experts % self.expert_parallel_size:
            raise ValueError(
                f"expert_parallel ({self.expert_parallel_size}) must divide the model's experts ({m.experts}); "
                f"set llm.expert_parallel"
            )
        if tp > 1 and self.gpu.interconnect_gbps is None:
            raise ValueError(f"tensor_parallel {tp} needs llm.gpu.interconnect_gbps (GPU-to-GPU GB/s)")
        if m.heads % tp:
            raise ValueError(
                f"tensor_parallel ({tp}) must divide the model's heads ({m.heads}); "
                f"set llm.tensor_parallel to a divisor of {m.heads}"
            )
        if m.kv_heads % tp and tp % m.kv_heads:
            raise ValueError(
                f"tensor_parallel ({tp}) and kv_heads ({m.kv_heads}) must divide one another; "
                f"change llm.tensor_parallel"
            )

    def _check_disaggregated(self) -> None:
        if self.autoscale is not None:
            raise ValueError(
                "llm.autoscale and llm.disaggregated: the autoscaler scales one pool of replicas; leave one of them out"
            )
        if self.replicas != 1:
            raise ValueError(
                f"llm.replicas ({self.replicas}) with llm.disaggregated: each pool has its own count; "
                "set llm.disaggregated.prefill.replicas and llm.disaggregated.decode.replicas instead"
            )
        self._pools = (self._pool_config("prefill"), self._pool_config("decode"))
        self.link_bytes_per_s  # noqa: B018 - nvlink without the GPUs' figure is refused here

    def _pool_config(self, name: str) -> LLMConfig:
        d = self.disaggregated
        assert d is not None
        spec: PoolConfig = getattr(d, name)
        data = {k: getattr(self, k) for k in type(self).model_fields if k not in ("disaggregated", "autoscale")}
        data.update(spec.overrides())
        if name == "decode":  # the prompt's KV arrives whole: a decode replica never computes a prefix
            data["prefix_caching"] = False
        if spec.tensor_parallel is not None and spec.expert_parallel is None and self.expert_parallel is not None:
            data["expert_parallel"] = None  # the pool's own layout: experts spread over its GPUs
        try:
            return LLMConfig.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            msg = str(err["msg"]).removeprefix("Value error, ")
            where = ".".join(str(x) for x in err["loc"])
            pool_keys = "|".join(PoolConfig.model_fields)
            msg = re.sub(rf"\bllm\.({pool_keys})\b", rf"llm.disaggregated.{name}.\1", msg)
            raise ValueError(f"disaggregated.{name}{'.' + where if where else ''}: {msg}") from None

    def pool(self, name: str) -> LLMConfig:
        """The ``llm`` block one pool of a disaggregated deployment runs: ``prefill`` or ``decode``
        (the pool's keys over this block's; a decode pool has no prefix caching)."""
        if self._pools is None:
            raise ValueError("llm.disaggregated is not set")
        return self._pools[0 if name == "prefill" else 1]

    @property
    def link_bytes_per_s(self) -> float:
        """Per-GPU rate of the KV hand-off link: ``link_gbps`` x 1e9, the catalog's figure, or for
        ``nvlink`` the slower of the two pools' GPUs' ``interconnect_gbps``."""
        d = self.disaggregated
        if d is None:
            raise ValueError("llm.disaggregated is not set")
        if d.link_gbps is not None:
            return d.link_gbps * 1e9
        entry = links.link(d.link)
        if entry.bytes_per_s is not None:
            return entry.bytes_per_s
        rates = [self.pool(n).gpu.interconnect_gbps for n in ("prefill", "decode")]
        if any(r is None for r in rates):
            raise ValueError("llm.disaggregated.link nvlink needs both pools' gpu.interconnect_gbps; set link_gbps")
        return min(float(r) for r in rates if r is not None) * 1e9


def _check_sla(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    for metric, stats in v.items():
        if metric not in SLA_METRICS:
            close = difflib.get_close_matches(str(metric), SLA_METRICS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown SLA metric {metric!r}{hint}; allowed: {', '.join(SLA_METRICS)}")
        if not isinstance(stats, dict):
            raise ValueError(f"{metric}: expected a mapping statistic -> threshold, e.g. {{p95: 800}}")
        for stat in stats:
            if stat not in STATS:
                raise ValueError(f"{metric}: unknown statistic {stat!r}; allowed: {', '.join(STATS)}")
    return v


SLAConfig = Annotated[dict[str, dict[str, PosFloat]], BeforeValidator(_check_sla)]


#: Most windows a run is cut into (``run.duration_s / timeline.window_s``): each window is a
#: row per replication and metric; more than this is finer than any SLA is judged.
MAX_WINDOWS = 10_000


class TimelineConfig(Strict):
    """Results over time (see :mod:`sim.analysis.timeline`).

    ``window_s``: width of the windows statistics are taken in (by arrival
    time).  ``sla``: thresholds that must hold in *every* window of
    ``sla_window_s`` (default ``window_s``), e.g. ``{e2e_ms: {p95: 800}}``.
    ``enabled`` defaults to on when the load changes over time.
    """

    enabled: Optional[bool] = None
    window_s: PosFloat = 30.0
    sla_window_s: Optional[PosFloat] = None
    sla: SLAConfig = {}


class CostConfig(Strict):
    """Prices in USD per hour (see :mod:`sim.analysis.dollars`): every replica's GPUs and every retrieval
    worker.  A price left out comes from the catalog (:mod:`sim.spec.prices`): ``gpu_per_hour`` the
    on-demand price of ``llm.gpu``, ``cpu_core_per_hour`` that of one vCPU; ``cpu_worker_per_hour``,
    when given, prices a retrieval worker whatever its cores."""

    gpu_per_hour: Optional[NonNegFloat] = None
    cpu_core_per_hour: Optional[NonNegFloat] = None
    cpu_worker_per_hour: Optional[NonNegFloat] = None


class Expectation(Strict):
    """What the scenario's author expects at some sweep points (see :mod:`sim.testing`).

    ``params`` selects the points whose swept values match (a subset of the
    swept keys; ``{}`` is every point); ``verdict`` is what every SLA there
    should come out as.  Points that no expectation names are not asserted.
    """

    params: dict[str, Any] = {}
    verdict: Literal["pass", "fail"] = "pass"


def _upper_bound(spec: Any) -> float | None:
    """The largest value a bounded distribution can draw (None when unbounded)."""
    if isinstance(spec, ConstantSpec):
        return spec.value
    if isinstance(spec, UniformSpec):
        return spec.high
    if isinstance(spec, EmpiricalSpec):
        return max(spec.samples)
    return None


class Scenario(Strict):
    name: str = "scenario"
    description: Optional[str] = None
    run: RunConfig = RunConfig()
    workload: WorkloadConfig
    routing: RoutingConfig = RoutingConfig()
    cache: CacheConfig = CacheConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    llm: LLMConfig = LLMConfig()
    sla: SLAConfig = {}
    timeline: TimelineConfig = TimelineConfig()
    cost: Optional[CostConfig] = None
    sweep: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    # The deployment space `capsim plan` searches (sim.run.plan): dotted key -> values to consider.
    plan: dict[str, Annotated[list[Any], Field(min_length=1)]] = {}
    expect: list[Expectation] = []

    @property
    def timeline_on(self) -> bool:
        """Are results over time computed (``timeline.enabled``, default: the load varies or
        ``timeline.sla`` is set)?"""
        t = self.timeline
        return t.enabled if t.enabled is not None else (self.workload.time_varying or bool(t.sla))

    def _check_longest_request_fits(self) -> None:
        """With bounded token distributions, the longest request must fit one replica's KV
        memory alone (the engine checks unbounded ones when such a request shows up)."""
        llm = self.llm
        if not llm.enabled:
            return
        p = llm.prompt_tokens
        if isinstance(p, PromptComposition):
            top_k = self.retrieval.top_k if self.retrieval.enabled else 0
            doc, question = _upper_bound(p.doc_tokens), _upper_bound(p.question_tokens)
            prompt = None if doc is None or question is None else p.system_tokens + top_k * doc + question
        else:
            prompt = _upper_bound(p)
        output = _upper_bound(llm.output_tokens)
        if prompt is None or output is None:
            return
        why = gpu_model.kv_misfit(
            round(prompt),
            round(output),
            llm.prefix_tokens,
            llm.prefix_tokens,
            llm.kv_blocks_usable,
            llm.kv_block_tokens,
            longest=True,
        )
        if why is not None:
            raise ValueError(why)

    def _takes_time(self) -> bool:
        """Can a request take any simulated time at all?"""
        if self.llm.enabled:
            return True
        if self.cache.enabled and build_distribution(self.cache.lookup_ms).mean > 0:
            return True
        if self.routing.enabled:
            return True
        r = self.retrieval
        return r.enabled and (
            r.service_ms is None
            or build_distribution(r.service_ms).mean > 0
            or build_distribution(r.overhead_ms).mean > 0
        )

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        c = self.cost
        llm = self.llm
        names = [llm.gpu.name]
        if llm.enabled and llm.disaggregated is not None:
            names = [llm.pool("prefill").gpu.name, llm.pool("decode").gpu.name]
        unpriced = [n for n in names if not prices.gpu_price(n)]
        if c is not None and c.gpu_per_hour is None and llm.enabled and unpriced:
            raise ValueError(
                f"cost.gpu_per_hour: the price catalog has no price for GPU {unpriced[0] or '(unnamed)'!r} "
                f"(priced: {', '.join(prices.priced_gpus())}); give cost.gpu_per_hour in USD"
            )
        for metric in [*self.sla, *self.timeline.sla]:
            stage = METRIC_STAGE.get(metric)
            if stage and not getattr(self, stage).enabled:
                raise ValueError(
                    f"sla.{metric}: the {stage} stage is disabled ({stage}.enabled: false), "
                    f"so no request measures {metric}"
                )
        for key in ("window_s", "sla_window_s"):
            width = getattr(self.timeline, key)
            if self.timeline_on and width is not None and self.run.duration_s / width > MAX_WINDOWS:
                raise ValueError(
                    f"timeline.{key}: {width:g} s cuts the {self.run.duration_s:g} s run into "
                    f"{self.run.duration_s / width:,.3g} windows, more than {MAX_WINDOWS:,}; "
                    f"give {key} >= {self.run.duration_s / MAX_WINDOWS:.3g}"
                )
        w = self.workload
        if w.time_varying and self.run.warmup_s == "auto":
            raise ValueError(
                "run.warmup_s: auto (MSER-5) assumes the run settles to a steady state, which a load that "
                "changes over time does not; give a fixed warmup_s (0 to keep every request)"
            )
        if self.llm.enabled and self.llm.autoscale is not None and self.run.warmup_s == "auto":
            raise ValueError(
                "run.warmup_s: auto (MSER-5) cuts each replication at its own point, but an autoscaled "
                "fleet is costed over the whole window; give a fixed warmup_s with llm.autoscale"
            )
        if w.mode == "trace":
            assert w.trace is not None  # WorkloadConfig requires it in trace mode
            trace_file.load_trace(w.trace.path, w.trace.format, w.trace.time_scale)
        if w.mode == "closed" and build_distribution(w.think_s).mean == 0 and not self._takes_time():
            raise ValueError(
                "workload.think_s: zero think time and no stage that takes time: "
                "users would ask forever at t = 0; give think_s a positive mean"
            )
        self._check_longest_request_fits()
        if self.expect and not self.sla and not self.timeline.sla:
            raise ValueError("expect: needs an sla (or timeline.sla) section to judge the points against")
        for i, e in enumerate(self.expect):
            unknown = [k for k in e.params if k not in self.sweep]
            if self.sweep and unknown:
                raise ValueError(
                    f"expect[{i}].params: {unknown[0]!r} is not a swept key (swept: {', '.join(self.sweep)})"
                )
        return self


# --------------------------------------------------------------------------- errors


def model_of(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation may hold (through Optional/Union/Annotated)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return model_of(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            out += model_of(arg)
        return out
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the model at ``loc`` (a pydantic error location)."""
    models: list[type[BaseModel]] = [Scenario]
    for part in loc:
        if isinstance(part, str) and part in DIST_NAMES:  # a union tag selects one member
            models = [
                m
                for m in models
                if m.model_fields.get("dist") is not None and part in typing.get_args(m.model_fields["dist"].annotation)
            ] or models
            continue
        if part in ("composition", "distribution"):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            if isinstance(part, str) and part in m.model_fields:
                nxt += model_of(m.model_fields[part].annotation)
        models = nxt
    names: list[str] = []
    for m in models:
        names += [n for n in m.model_fields if n not in names]
    return names


_TAGS = set(DIST_NAMES) | {"composition", "distribution"}


def _dotted(loc: tuple) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p in _TAGS or p.startswith("function-")))]
    return ".".join(parts)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line for the first error: ``dotted.key: what is wrong (what is allowed)``."""
    e = err.errors()[0]
    loc = tuple(e["loc"])
    key = _dotted(loc)
    if prefix:
        key = f"{prefix}.{key}" if key else prefix
    kind = e["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(tuple(loc[:-1]))
        bad = str(loc[-1])
        close = difflib.get_close_matches(bad, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        msg = f"unknown key ({hint}allowed: {', '.join(allowed)})"
    elif kind == "missing":
        msg = "is required"
    elif kind == "literal_error":
        msg = f"{e['msg'][0].lower()}{e['msg'][1:]}, got {e.get('input')!r}"
    elif kind in ("value_error", "assertion_error"):
        msg = str(e["msg"]).removeprefix("Value error, ")
    else:
        m = str(e["msg"])
        msg = f"{m[0].lower()}{m[1:]}"
        if "input" in e and not isinstance(e["input"], (dict, list)):
            msg += f", got {e['input']!r}"
    extra = len(err.errors()) - 1
    tail = f" (and {extra} more error{'s' if extra > 1 else ''})" if extra else ""
    return f"{key}: {msg}{tail}" if key else f"{msg}{tail}"


def validate_scenario(data: dict) -> Scenario:
    """Validate a raw mapping; bad input raises :class:`ConfigError` with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"a scenario must be a mapping of sections, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def json_schema() -> dict:
    """The JSON Schema of a scenario *file*, as editors should check it.

    Pydantic's schema describes the validated model; a file may also write a
    distribution as a plain number, a catalog name for ``llm.model`` /
    ``llm.gpu``, and ``extends:``.  Those are added here, SLA metric and
    statistic names are enumerated, every key gets its line from
    :mod:`sim.spec.descriptions`, and descriptions lose their Sphinx markup.
    ``tests/test_schema.py`` validates every shipped scenario against it.
    """
    schema = Scenario.model_json_schema()
    _accept_plain_numbers(schema)
    _catalog_names(schema)
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "a base scenario file (relative to this one) whose keys this file overrides",
    }
    # A file that extends another takes the sections it leaves out from its base.
    required = schema.pop("required", [])
    if required:
        schema["if"] = {"required": ["extends"]}
        schema["else"] = {"required": required}
    schema["properties"]["sla"] = {
        "type": "object",
        "description": "metric -> {statistic: threshold in ms}, e.g. e2e_ms: {p95: 800}",
        "propertyNames": {"enum": list(SLA_METRICS)},
        "additionalProperties": {
            "type": "object",
            "propertyNames": {"enum": list(STATS)},
            "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
        },
        "default": {},
    }
    for model, fields in FIELD_DESCRIPTIONS.items():
        props = (schema if model == "Scenario" else schema["$defs"].get(model, {})).get("properties", {})
        for key, text in fields.items():
            if key in props:
                props[key].setdefault("description", text)
    _plain_descriptions(schema)
    _derived_files(schema)
    return schema


def _catalog_names(schema: dict) -> None:
    """``llm.model``, ``llm.gpu`` and a pool's ``gpu`` may be catalog names, and
    ``llm.engine_reserve`` a preset name."""
    llm = schema["$defs"]["LLMConfig"]["properties"]
    for key, names, ref in (("model", catalog.model_names(), "ModelSpec"), ("gpu", catalog.gpu_names(), "GPUSpec")):
        llm[key] = {
            "anyOf": [
                {"type": "string", "enum": names, "description": f"a catalog {key} (capsim estimate lists them)"},
                {"$ref": f"#/$defs/{ref}"},
            ],
            "default": LLMConfig.model_fields[key].default,
        }
    schema["$defs"]["PoolConfig"]["properties"]["gpu"] = {
        "anyOf": [
            {"type": "string", "enum": catalog.gpu_names(), "description": "a catalog gpu"},
            {"$ref": "#/$defs/GPUSpec"},
            {"type": "null"},
        ],
        "default": None,
    }
    llm["engine_reserve"] = {
        "anyOf": [
            {"type": "string", "enum": list(RESERVE_PRESETS), "description": "an engine-version preset"},
            {"type": "number", "minimum": 0, "description": "GiB per GPU the engine keeps outside the KV pool"},
        ],
        "default": DEFAULT_RESERVE,
        "description": "what the engine keeps per GPU outside the KV pool (activation, non-torch, NCCL)",
    }


DERIVED = "Derived"  # prefix of the $defs a file that extends another is checked against


def _derived_files(schema: dict) -> None:
    """A file with ``extends:`` is deep-merged over its base: any key may be null (it removes the
    base's key) and a section may give part of what it needs (the rest comes from the base).

    Every $def gets a ``Derived`` twin whose keys also take null and require nothing (its unions
    become ``anyOf``: a partial distribution may match more than one kind).  The top-level keys
    point at the twins, and a file without ``extends`` must also meet the strict sections in
    ``else``: an editor checks a plain file as strictly as before and marks no derived file red.
    """
    strict_props = copy.deepcopy(schema["properties"])

    def derived(node: Any) -> Any:
        text = json.dumps(node).replace('"#/$defs/', f'"#/$defs/{DERIVED}')
        return _loosen(json.loads(text))

    schema["$defs"].update({f"{DERIVED}{name}": derived(d) for name, d in list(schema["$defs"].items())})
    schema["properties"] = derived({"properties": schema["properties"]})["properties"]
    schema.setdefault("else", {})["properties"] = {k: v for k, v in strict_props.items() if k != "extends"}


def _loosen(node: Any) -> Any:
    """Nullable properties, nothing required, ``oneOf`` as ``anyOf`` (see :func:`_derived_files`)."""
    if isinstance(node, list):
        return [_loosen(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        ("anyOf" if k == "oneOf" else k): _loosen(v) for k, v in node.items() if k not in ("required", "discriminator")
    }
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            k: {"anyOf": [v, {"type": "null"}], **({"description": v["description"]} if "description" in v else {})}
            for k, v in out["properties"].items()
        }
    return out


def _is_distribution(node: Any) -> bool:
    mapping = node.get("discriminator", {}).get("mapping", {}) if isinstance(node, dict) else {}
    return set(mapping) == set(DIST_NAMES)


def _accept_plain_numbers(node: Any) -> None:
    """Wherever a distribution is expected, a plain number (a constant) is allowed too."""
    if isinstance(node, list):
        for item in node:
            _accept_plain_numbers(item)
    elif isinstance(node, dict):
        for key, value in list(node.items()):
            if _is_distribution(value):
                node[key] = {"anyOf": [{"type": "number", "minimum": 0}, value]}
            elif isinstance(value, list) and any(_is_distribution(v) for v in value):
                node[key] = [
                    {"anyOf": [{"type": "number", "minimum": 0}, v]} if _is_distribution(v) else v for v in value
                ]
            else:
                _accept_plain_numbers(value)


def _plain_descriptions(node: Any) -> None:
    """``x`` and :role:`x` become x: an editor shows descriptions as plain text."""
    if isinstance(node, list):
        for item in node:
            _plain_descriptions(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                value = re.sub(r":\w+:`([^`]*)`", r"\1", value)
                node[key] = " ".join(re.sub(r"``([^`]*)``", r"\1", value).split())
            else:
                _plain_descriptions(value)
