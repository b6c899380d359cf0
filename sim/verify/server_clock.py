"""The LLM server's own clock: how long an isolated request's prompt and decode took *inside*
the server, which the probes hold against the client's clock (the difference is the HTTP,
tokenisation and streaming overhead of a call) and against the step table.

Servers report it in one of two ways, and some not at all (:func:`learn_clock` settles which
from the target's first answer and keeps it on the target; :func:`server_clock` reads it):

* ``"timings"``: llama-server streams a ``timings`` object in its last chunk
  (``prompt_n``, ``prompt_ms``, ``predicted_per_token_ms``), per request, under any load.
* ``"metrics"``: vLLM keeps request histograms on ``GET /metrics`` (Prometheus text;
  ``vllm/v1/metrics/loggers.py``, with the intervals defined in
  ``vllm/v1/metrics/stats.py``): ``vllm:request_prefill_time_seconds`` runs from the
  request's first scheduling to its first token on the engine core's clock, and
  ``vllm:request_decode_time_seconds`` from the first token to the last.  One isolated
  request's own figures are the change of the histograms' ``_sum`` and ``_count`` across
  it (:func:`metrics_timings`); several sent together give their mean.  Under load the
  change mixes requests, so live rows never use it.
* ``"none"``: neither.  The probes then time the prompt on the client (first token less
  send), so the call's overhead stays inside the prefill times they measure, and verify
  says so.
"""

from __future__ import annotations

import http.client
import math
import time
from collections.abc import Mapping
from typing import Any

from sim.spec.target import LLMTarget
from sim.verify.wire import EndpointError, connection

#: vLLM's request histograms read from ``/metrics``: what each summed sample is called here.
VLLM_SAMPLES = {
    "vllm:request_prefill_time_seconds_sum": "prefill_s",
    "vllm:request_prefill_time_seconds_count": "requests",
    "vllm:request_decode_time_seconds_sum": "decode_s",
    "vllm:request_prompt_tokens_sum": "prompt_tokens",
    "vllm:request_generation_tokens_sum": "generation_tokens",
}


def parse_metrics(text: str, samples: Mapping[str, str] | None = None) -> dict[str, float]:
    """The ``samples`` (sample name -> key; default :data:`VLLM_SAMPLES`) in a Prometheus text
    exposition, each summed over its label sets (one per engine and model); comments, buckets
    and other samples are skipped."""
    wanted = VLLM_SAMPLES if samples is None else samples
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        key = wanted.get(name)
        if key is None:
            continue
        try:
            value = float(line.rsplit("}", 1)[-1].split()[0])
        except (IndexError, ValueError):
            continue
        if math.isfinite(value):
            out[key] = out.get(key, 0.0) + value
    return out


#: Most bytes of a /metrics page read (vLLM's is tens of kilobytes).
MAX_METRICS_BYTES = 1 << 22


def metrics_snapshot(url: str, timeout_s: float = 5.0) -> dict[str, float] | None:
    """``GET /metrics``: the summed vLLM request histograms, or None where the server keeps none
    (llama-server without ``--metrics`` answers 501)."""
    conn = connection(url, timeout_s)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        body = r.read(MAX_METRICS_BYTES)
        if r.status != 200:
            return None
    except (OSError, http.client.HTTPException, EndpointError):
        return None
    finally:
        conn.done()
        conn.close()
    got = parse_metrics(body.decode("utf-8", "replace"))
    return got if "requests" in got and "prefill_s" in got else None


def metrics_timings(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The requests finished between two snapshots, as llama-server's ``timings`` keys: their
    mean prompt tokens, prefill ms and decode ms per token (a request's first token comes from
    its prefill, so it decodes ``generation - 1``).  Empty when none finished.

    Two requests finished, prefill sums 1.25 -> 1.31 s, decode 4.0 -> 4.5 s, prompt tokens
    300 -> 500, generated 40 -> 62: ``prompt_n`` 100, ``prompt_ms`` 30, 20 decoded tokens at
    25 ms each."""
    n = after.get("requests", 0.0) - before.get("requests", 0.0)
    if n < 1:
        return {}
    out = {
        "prompt_n": round((after.get("prompt_tokens", 0.0) - before.get("prompt_tokens", 0.0)) / n),
        "prompt_ms": (after["prefill_s"] - before["prefill_s"]) / n * 1e3,
    }
    decoded = after.get("generation_tokens", 0.0) - before.get("generation_tokens", 0.0) - n
    if decoded > 0 and "decode_s" in after:
        out["predicted_per_token_ms"] = (after["decode_s"] - before.get("decode_s", 0.0)) / decoded * 1e3
    return out


def metrics_after(url: str, before: dict[str, float], requests: int, wait_s: float = 2.0) -> dict[str, float]:
    """A snapshot once ``requests`` more have been counted since ``before`` (the server records a
    finished request around the time its last chunk leaves; polled for up to ``wait_s``)."""
    end = time.perf_counter() + wait_s
    while True:
        got = metrics_snapshot(url)
        if got is not None and got.get("requests", 0.0) - before.get("requests", 0.0) >= requests:
            return got
        if time.perf_counter() > end:
            return got or before
        time.sleep(0.01)


def bracket(llm: LLMTarget) -> dict[str, float] | None:
    """The snapshot that opens an isolated request's bracket, where the server's clock is its
    ``/metrics`` (else None: nothing to bracket)."""
    return metrics_snapshot(llm.url) if llm._clock == "metrics" else None


def own_timings(llm: LLMTarget, before: dict[str, float], requests: int, exact: bool = False) -> dict[str, float]:
    """Close the bracket opened by :func:`bracket` once ``requests`` more have finished: their
    :func:`metrics_timings`.  With ``exact``, empty unless exactly that many finished (a mixed
    step's prompt must be the only one)."""
    after = metrics_after(llm.url, before, requests)
    if exact and after.get("requests", 0.0) - before.get("requests", 0.0) != requests:
        return {}
    return metrics_timings(before, after)


def server_clock(llm: LLMTarget) -> str | None:
    """The clock found for this target so far (None before its first answer)."""
    return llm._clock


def learn_clock(llm: LLMTarget, stream_timings: dict) -> str:
    """Settle the target's clock from an answer: ``"timings"`` when it streamed them, else
    ``"metrics"`` when ``/metrics`` has vLLM's request histograms, else ``"none"``."""
    if llm._clock is None:
        if stream_timings:
            llm._clock = "timings"
        else:
            llm._clock = "metrics" if metrics_snapshot(llm.url) is not None else "none"
    return llm._clock


def request_path(overhead_ms: float) -> dict[str, Any]:
    """Overrides that put the server's own measured request path (HTTP, tokenising, streaming:
    first token less the server's prefill time) in front of the LLM stage, in place of an engine
    preset's fitted ``llm.frontend_ms``, which stands for the engines of the measured serving runs,
    not for the server under test."""
    return {"cache.lookup_ms": {"dist": "constant", "value": max(0.0, overhead_ms)}, "llm.frontend_ms": 0.0}
