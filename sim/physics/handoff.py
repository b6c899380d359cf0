"""The KV hand-off of a disaggregated deployment: a prompt's KV cache moves from the prefill
replica that computed it to the decode replica that continues the request.

Every GPU of the decode replica receives the KV it will hold (its share of the KV heads, or the
whole latent of an MLA model, :attr:`sim.spec.schema.LLMConfig.kv_bytes_per_token_per_gpu`) over
its own link, all at once, so the hand-off of ``tokens`` tokens takes::

    transfer_s = latency_s + tokens * kv_bytes_per_token_per_gpu / link_bytes_per_s

Llama-3-8B in BF16 (32 layers, 8 KV heads of 128, 2 bytes: 131,072 bytes a token) on one GPU,
a 1,000-token prompt over 400 Gb/s InfiniBand (50 GB/s): 131,072,000 / 5e10 = 2.62 ms.
"""

from __future__ import annotations


def transfer_s(
    tokens: float, kv_bytes_per_token_per_gpu: float, link_bytes_per_s: float, latency_s: float = 0.0
) -> float:
    """Seconds to hand ``tokens`` tokens of KV over: ``latency_s + tokens * bytes / rate``."""
    if link_bytes_per_s <= 0:
        raise ValueError(f"link_bytes_per_s must be positive, got {link_bytes_per_s!r}")
    return latency_s + tokens * kv_bytes_per_token_per_gpu / link_bytes_per_s
