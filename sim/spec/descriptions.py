"""One plain-text line per scenario key, for the JSON Schema ``capsim schema`` prints.

An editor that checks a scenario against the schema shows these when the cursor is on a
key; they say what the key means, its unit and what its default does.  The documentation's
scenario reference (docs/reference/scenario.md) is generated from them.  ``tests/test_schema.py`` requires one for
every key of every section, so a new key without a line fails there.
"""

from __future__ import annotations

# The five step-cost keys: a preset other than custom fits them unless the file sets them.
_PRESET = " (default: the llm.efficiency preset's fitted value; custom: the schema default)"

FIELD_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "Scenario": {
        "name": "the scenario's name, shown in tables and reports",
        "description": "free text about the scenario",
        "run": "run length, warm-up, replications, seed and confidence of the intervals",
        "workload": "who asks: closed-loop users, open arrivals or a replayed trace",
        "routing": "fuzzy routing of typed questions to canonical ones, before the cache",
        "cache": "the result cache in front of retrieval",
        "retrieval": "the vector search stage: index, corpus, workers and where its times come from",
        "llm": "the LLM stage: model, GPU, replicas, batching and step costs",
        "timeline": "results per time window (for loads that change over time)",
        "cost": "prices in USD per hour; summaries gain cost per hour and per 1,000 answers",
        "sweep": "dotted key -> list of values; every combination is a point",
        "plan": "dotted key -> list of values: the deployments capsim plan searches for the cheapest that passes",
        "expect": "which sweep points are meant to pass or fail (tests hold the scenario to it)",
    },
    "RunConfig": {
        "duration_s": "simulated seconds of arrivals per replication",
        "warmup_s": "seconds cut from the start (requests that arrived before it are dropped), or auto (MSER-5)",
        "replications": "independent runs per point; intervals are taken over them",
        "seed": "base seed of every random stream",
        "confidence": "confidence level of the intervals, e.g. 0.95",
        "target_precision": "add replications until every SLA statistic's half-width is within this share of it",
        "max_replications": "the most replications target_precision may add up to",
        "drain_s": "seconds in-flight requests may finish after arrivals stop (default max(30, duration/4))",
        "records": "keep one record per request (records.parquet, Result.records): true or false; default "
        "only when writing a folder (--out); summaries come from fixed-size histograms either way",
        "partitions": "run each replication as this many independent cells side by side, each with an equal share "
        "of the shoppers, replicas, workers and cache (random or round_robin router); 1: one process",
    },
    "WorkloadConfig": {
        "mode": "closed: users who think and ask again; open: arrivals at a rate; trace: replay a file",
        "users": "concurrent users (closed mode)",
        "think_s": "seconds a user waits between an answer and the next question (closed mode), a distribution",
        "rate_per_s": "arrivals per second (open mode)",
        "arrival": "open mode's inter-arrival times: poisson, or gamma with cv",
        "cv": "coefficient of variation of gamma inter-arrival times",
        "queries": "how question keys are drawn: distinct keys, a hot set and a Zipf tail",
        "profile": "a load that changes over time: a schedule of steps and ramps, or a sinusoid",
        "trace": "the trace file to replay (mode trace)",
    },
    "QueriesConfig": {
        "distinct": "number of distinct question keys",
        "hot_fraction": "share of requests that ask one of the hot keys",
        "hot_keys": "number of hot keys",
        "zipf_s": "Zipf exponent of the other keys' popularity",
    },
    "ProfileStep": {
        "at_s": "time the change starts, s",
        "value": "the level (users or arrivals per second) it moves to",
        "ramp_s": "seconds over which it moves linearly (0: a step)",
    },
    "ScheduleProfile": {
        "kind": "the profile: schedule",
        "steps": "the steps, in time order",
    },
    "SinusoidProfile": {
        "kind": "the profile: sinusoid",
        "mean": "the mean level (users or arrivals per second)",
        "amplitude": "how far the level swings above and below the mean",
        "period_s": "period of the cycle, s (a day by default)",
        "peak_at_s": "time of the first peak, s",
    },
    "TraceConfig": {
        "path": "CSV trace file (relative to the scenario)",
        "format": "auto (from the header), azure, burstgpt or capsim",
        "time_scale": "multiply the trace's inter-arrival times by this (0.5: twice the load)",
    },
    "RoutingConfig": {
        "enabled": "route each question to its nearest canonical question before the cache",
        "impl": "edit-distance implementation timed by capsim calibrate routing",
        "questions": "size of the canonical question set",
        "threshold": "normalised edit distance under which a match is accepted",
        "workers": "routing workers",
        "cpu_cores": "cores the routing workers share (default: one each)",
        "calibration": "routing calibration file (default: the shipped one)",
        "variants": "shoppers type spelling variants (default: on when routing is enabled)",
    },
    "CacheConfig": {
        "enabled": "look every question up in the result cache first; a hit skips retrieval",
        "policy": "eviction policy",
        "capacity": "entries the cache holds",
        "lookup_ms": "time of one lookup, ms, a distribution",
    },
    "RetrievalConfig": {
        "enabled": "search a vector index for the top_k documents",
        "index": "index kind whose measured search times are used",
        "docs": "documents in the index",
        "dim": "embedding dimension",
        "top_k": "documents retrieved per question",
        "workers": "concurrent search workers",
        "cpu_cores": "cores the workers share (default: one per worker)",
        "service_ms": "search time, ms, a distribution; overrides the calibration",
        "calibration": "retrieval calibration file from capsim calibrate retrieval (default: the shipped one)",
        "ef_search": "HNSW ef at search time (one the calibration measured)",
        "nprobe": "IVF lists probed per search (one the calibration measured)",
        "overhead_ms": "time outside the search itself, ms, a distribution",
        "contention": "how much slower each of 1, 2, ... concurrent searches runs (default: from the calibration)",
        "wakeup_ms": "extra time of the first search after the pool sat idle: ms, or [idle_ms, extra_ms] points",
        "handback_ms": "how long a finished search's answer waits for the core while another search still runs"
        " on it (a distribution, ms; none by default)",
        "scheduler": "model the service as an event loop and search threads on one core under Linux's scheduler"
        " (loop_cpu_ms, off_core_ms, slice_ms, tick_ms); default: shared work",
    },
    "SchedulerSpec": {
        "loop_cpu_ms": "the event loop's CPU per request outside the search, ms (half parse, half answer)",
        "off_core_ms": "a request's time off the service's cores (client and wire), ms, half each way",
        "slice_ms": "the kernel's base slice, ms: 0.75 x (1 + log2 CPUs, at most 8); 1.5 on 2 CPUs",
        "tick_ms": "the timer tick, ms: 1000 / CONFIG_HZ (4 at HZ=250)",
    },
    "LLMConfig": {
        "enabled": "generate the answer on GPU replicas",
        "model": "a catalog model name or an inline shape",
        "gpu": "a catalog GPU name or inline figures",
        "replicas": "model replicas (each tensor_parallel GPUs)",
        "router": "how requests are spread over replicas",
        "max_batch": "most sequences in one decode batch",
        "dtype_bytes": "bytes per weight (2: bf16)",
        "kv_dtype_bytes": "bytes per KV-cache element (2: bf16)",
        "compute_dtype": "matmul precision: bf16, fp8 (uses the GPU's fp8_tflops) or fp4 (NVFP4, the GPU's fp4_tflops)",
        "weights_dtype": "named weight format: bf16, fp8 or fp4 (NVFP4, 0.5625 bytes with its block scales);"
        " sets dtype_bytes",
        "expert_parallel": "GPUs of a replica the routed experts are spread over, whole experts each"
        " (MoE models; default tensor_parallel, 1: experts split like a dense MLP)",
        "efficiency": "step-cost parameters: fitted to published measurements (central, slow or fast end), or custom",
        "engine": "serving engine preset (vllm, trtllm, sglang): its scheduler defaults and step costs fitted "
        "to its measured serving runs; unset keys only",
        "engine_version": "the engine's version, for the record: a version without measured runs keeps the "
        "engine's fit and the estimate says so",
        "bw_efficiency": "share of HBM bandwidth a decode step achieves" + _PRESET,
        "mfu": "share of peak FLOP/s a compute-bound step achieves" + _PRESET,
        "step_overhead_ms": "fixed time per engine step, ms" + _PRESET,
        "step_overhead_per_seq_ms": "extra time per sequence in a step, ms" + _PRESET,
        "allreduce_latency_us": "latency of one tensor-parallel all-reduce, us" + _PRESET,
        "step_table": "a measured step-time CSV that replaces the roofline step cost",
        "step_cost": "auto: kernels timed alone where the engine's tables cover the replica, else the roofline; "
        "perop: require the tables; roofline: never use them",
        "perop_overhead_ms": "per-step time the kernels timed alone leave out (engine preset: fitted)",
        "perop_overhead_per_seq_ms": "per-sequence time the kernels timed alone leave out (engine preset: fitted)",
        "perop_prefill_scale": "factor on a step's prefill kernels (they overlap when served; engine preset: fitted)",
        "frontend_ms": "per-request time in the engine outside its GPU steps (API server, tokenisation), ms, "
        "before the request joins a replica's queue (engine preset: fitted)",
        "gpu_memory_utilization": "share of the GPU's exposed memory the engine may use (vLLM's setting), "
        "or of the memory the weights and the reserve leave (memory_fraction_of: free)",
        "memory_fraction_of": "what gpu_memory_utilization is a share of: card (vLLM, SGLang) or free, the memory "
        "left after the weights and the reserve (TensorRT-LLM's free_gpu_memory_fraction); default by engine",
        "tensor_parallel": "GPUs per replica",
        "kv_block_tokens": "tokens per paged KV block",
        "max_batched_tokens": "most tokens (prefill and decode) in one step",
        "chunked_prefill": "split long prompts over steps so decodes keep running",
        "prefill_steps": "without chunked prefill: whole prompts beside the decodes (mixed: vLLM V1, "
        "TensorRT-LLM) or prefill steps in place of decode steps (separate: SGLang); default by engine",
        "prefix_caching": "reuse the KV of a shared system prompt (default: on with system_tokens)",
        "prompt_tokens": "prompt length in tokens: a distribution, or system + top_k x doc + question",
        "output_tokens": "answer length in tokens, a distribution",
        "autoscale": "a replica autoscaler: the replica count follows a signal between min and max (none: static)",
        "disaggregated": "separate prefill and decode pools with the KV handed over a link (none: every "
        "replica prefills and decodes)",
    },
    "DisaggConfig": {
        "prefill": "the pool that prefills prompts: replicas and the llm keys it sets for itself",
        "decode": "the pool that decodes: replicas and the llm keys it sets for itself",
        "link": "the link a prompt's KV is handed over, per GPU (sim/spec/catalog/links.yaml; nvlink: "
        "the GPUs' interconnect_gbps)",
        "link_gbps": "per-GPU rate of the hand-off link, GB/s (overrides link)",
        "latency_us": "fixed time added to every hand-off, microseconds (connection set-up, block lookup)",
    },
    "PoolConfig": {
        "replicas": "replicas in this pool",
        "gpu": "this pool's GPU (default: llm.gpu)",
        "tensor_parallel": "GPUs per replica of this pool (default: llm.tensor_parallel)",
        "expert_parallel": "GPUs a MoE model's experts are spread over in this pool (default: its tensor_parallel)",
        "max_batch": "most running sequences per replica of this pool (default: llm.max_batch)",
        "max_batched_tokens": "most tokens in one step of this pool (default: llm.max_batched_tokens)",
    },
    "AutoscaleConfig": {
        "min_replicas": "fewest replicas the autoscaler keeps",
        "max_replicas": "most replicas the autoscaler starts",
        "signal": "what it follows: queue (waiting requests per replica), kv (share of KV blocks in use)"
        " or utilization (share of batch slots running)",
        "target": "the signal's value per replica it aims at (kv and utilization: a share, 0 to 1)",
        "decision_interval_s": "seconds between two decisions (the Kubernetes HPA's default sync period: 15)",
        "tolerance": "no change while signal / target is within this of 1 (the HPA's default: 0.1)",
        "cooldown_s": "a scale-down takes the largest count recommended over this many seconds"
        " (the HPA's default scale-down stabilisation window: 300)",
        "weights_from": "storage a new replica reads its weights from (sim/spec/catalog/storage.yaml)",
        "load_gbps": "weight-loading rate of a new replica, GB/s (overrides weights_from)",
        "max_starting": "most replicas starting at once (none: no limit); the rest of a scale-up waits for "
        "a later decision, as when the cluster admits one new GPU node at a time",
        "engine_start_s": "seconds from a replica's start to serving, besides loading its weights"
        " (default 58: a vLLM pod scaled up with its compile cache kept, sim.spec.schema.ENGINE_START_S)",
    },
    "ModelSpec": {
        "name": "the model's name",
        "layers": "transformer layers",
        "hidden": "hidden size",
        "heads": "attention heads",
        "kv_heads": "key-value heads (grouped-query attention)",
        "head_dim": "dimension of one attention head",
        "vocab": "vocabulary size",
        "intermediate": "MLP intermediate size (params are computed from the shapes)",
        "params": "parameter count (instead of computing it from the shapes)",
        "tied_embeddings": "input and output embeddings share weights",
        "qkv_bias": "the attention projections have biases",
        "experts": "routed experts per MoE layer (0: a dense model)",
        "experts_per_token": "routed experts each token is sent to",
        "shared_experts": "experts every token uses, beside the routed ones",
        "expert_intermediate": "inner width of one expert's gated MLP",
        "dense_layers": "first layers with a dense MLP of width intermediate instead of experts",
        "q_lora_rank": "latent attention: rank of the query compression (0: none)",
        "kv_lora_rank": "latent attention: width of the cached KV latent (0: standard attention)",
        "qk_rope_head_dim": "latent attention: rotary key width, cached beside the latent",
        "qk_nope_head_dim": "latent attention: per-head query/key width without rotary embedding",
        "v_head_dim": "latent attention: per-head value width",
    },
    "GPUSpec": {
        "name": "the GPU's name",
        "hbm_bandwidth_gbps": "memory bandwidth, GB/s",
        "memory_gb": "the datasheet's memory, GB (read as GiB of DRAM)",
        "memory_exposed_gib": "what the card exposes to the engine, GiB (default: from the catalog's measured cards)",
        "peak_tflops": "dense BF16 peak, TFLOP/s",
        "fp4_tflops": "dense FP4 (NVFP4) tensor peak, TFLOP/s (for compute_dtype fp4)",
        "fp8_tflops": "dense FP8 peak, TFLOP/s",
        "interconnect_gbps": "GPU-to-GPU bandwidth per direction, GB/s",
    },
    "PromptComposition": {
        "system_tokens": "tokens of the system prompt shared by every request",
        "doc_tokens": "tokens per retrieved document, a distribution",
        "question_tokens": "tokens of the question, a distribution",
    },
    "TimelineConfig": {
        "enabled": "compute results per window (default: on when the load changes over time or timeline.sla is set)",
        "window_s": "width of the windows, s (by arrival time)",
        "sla_window_s": "width of the windows timeline.sla is judged in, s (default window_s)",
        "sla": "metric -> {statistic: threshold in ms} that must hold in every window",
    },
    "CostConfig": {
        "gpu_per_hour": "USD per GPU per hour (default: the price catalog's on-demand price of llm.gpu)",
        "cpu_core_per_hour": "USD per CPU core (vCPU) per hour (default: the price catalog's)",
        "cpu_worker_per_hour": "USD per retrieval worker-hour, whatever its cores (default: cores x cpu_core_per_hour)",
    },
    "Expectation": {
        "params": "swept key -> value selecting the points ({} is every point)",
        "verdict": "what every SLA at those points should come out as",
    },
    "ConstantSpec": {"dist": "the distribution: constant", "value": "the value"},
    "ExponentialSpec": {"dist": "the distribution: exponential", "mean": "the mean"},
    "LognormalSpec": {
        "dist": "the distribution: lognormal",
        "mean": "the mean",
        "cv": "coefficient of variation (sd / mean)",
    },
    "GammaSpec": {"dist": "the distribution: gamma", "mean": "the mean", "cv": "coefficient of variation (sd / mean)"},
    "UniformSpec": {"dist": "the distribution: uniform", "low": "smallest value", "high": "largest value"},
    "EmpiricalSpec": {"dist": "the distribution: empirical", "samples": "values drawn from with equal probability"},
}
