"""Synthetic GPU step times for the calibration tests: known parameters, multiplicative noise."""

from __future__ import annotations

import numpy as np

from sim.calibrate.gpu import predict_ms, step_work
from sim.spec.schema import LLMConfig


def synthetic_measurements(
    cfg: LLMConfig,
    bw_efficiency: float,
    mfu: float,
    step_overhead_ms: float,
    rng: np.random.Generator,
    n: int = 200,
    noise_cv: float = 0.02,
) -> dict[str, np.ndarray]:
    """SYNTHETIC steps from known parameters with multiplicative noise (never a measurement).

    Three quarters decode steps (batch 1..256, 200..4,000 tokens each), one
    quarter single-sequence prefills of 64..4,096 tokens.
    """
    n_dec = (3 * n) // 4
    batch = np.concatenate([rng.integers(1, 257, n_dec), np.ones(n - n_dec, dtype=int)]).astype(float)
    per_seq = rng.integers(200, 4001, n).astype(float)
    prompt = rng.integers(64, 4097, n - n_dec).astype(float)
    new = np.concatenate([batch[:n_dec], prompt])
    context = np.concatenate([batch[:n_dec] * per_seq[:n_dec], prompt])
    work = step_work(cfg, batch, context, new)
    clean = predict_ms(work, bw_efficiency, mfu, step_overhead_ms)
    noisy = clean * np.exp(rng.normal(0.0, noise_cv, n))
    return {"batch_size": batch, "context_tokens": context, "new_tokens": new, "step_ms": noisy}
