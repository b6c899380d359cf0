"""The target file of ``capsim verify`` and ``capsim calibrate llm``: where the real stack listens.

::

    llm:
      url: http://127.0.0.1:18080        # OpenAI-compatible server (streaming /v1/completions)
      parallel: 4                         # the server's slots = capsim llm.max_batch
      n_batch: 2048                       # tokens per step = capsim llm.max_batched_tokens
      ctx_size: 8192                      # the server's -c: calibrate llm benchmarks with the same KV size
      cores: [1]                          # cores the server is pinned to (taskset)
      batched_bench: ~/.cache/capsim/llama-0.3.36/bin/llama-batched-bench   # calibrate llm
      model_path: ~/.cache/capsim/models/capsim-llama-124m-f16.gguf
      threads: 1
      model: capsim                       # the name the server serves (vLLM: --served-model-name)
    retrieval:                            # optional (or llm: absent, for a retrieval-only scenario)
      url: http://127.0.0.1:18090         # POST /search {"query_id": i, "k": k}
      workers: 1
      cores: [0]

Only loopback addresses are accepted: verify never sends load off the machine.  The
server's own clock (llama-server's streamed timings, vLLM's /metrics, or none) is learnt
from its first answer: :mod:`sim.verify.server_clock`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from sim.errors import ConfigError
from sim.files import read_input_text
from sim.spec.scenario import load_yaml_text

LOOPBACK = ("127.0.0.1", "localhost")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _loopback_url(v: str) -> str:
    u = urlparse(v)
    if u.scheme != "http" or u.hostname not in LOOPBACK or u.port is None:
        raise ValueError(f"{v!r}: must be http://127.0.0.1:PORT (verify only loads this machine)")
    return v.rstrip("/")


class LLMTarget(_Strict):
    url: str
    parallel: Annotated[int, Field(ge=1)] = 1
    n_batch: Annotated[int, Field(ge=1)] = 2048
    ctx_size: Annotated[int, Field(ge=0)] = 0  # the server's -c; calibration runs with the same KV size
    cores: list[int] = []
    batched_bench: Optional[str] = None
    model_path: Optional[str] = None
    threads: Annotated[int, Field(ge=1)] = 1
    model: str = "capsim"
    # How the server reports its own time (sim.verify.server_clock): learnt from its first answer.
    _clock: Optional[str] = PrivateAttr(default=None)

    _url = field_validator("url")(classmethod(lambda cls, v: _loopback_url(v)))


class RetrievalTarget(_Strict):
    url: str
    workers: Annotated[int, Field(ge=1)] = 1
    cores: list[int] = []

    _url = field_validator("url")(classmethod(lambda cls, v: _loopback_url(v)))


class Target(_Strict):
    llm: Optional[LLMTarget] = None  # absent: a retrieval-only target (the scenario has llm.enabled: false)
    retrieval: Optional[RetrievalTarget] = None

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.llm is None and self.retrieval is None:
            raise ValueError("needs an llm: or a retrieval: section (or both)")
        return self

    def llm_endpoint(self) -> LLMTarget:
        """The LLM endpoint; a one-line error where the target has none."""
        if self.llm is None:
            raise ConfigError("--target: has no llm: section, and this needs the LLM endpoint")
        return self.llm

    @property
    def host(self) -> str:
        return "127.0.0.1"


def load_target(path: str | Path) -> Target:
    """Read and check a target file; anything wrong is one ConfigError line naming the key."""
    p = Path(path)
    # a folder, FIFO (it would block), device or binary file is named as such, and the YAML is
    # read as strictly as a scenario's (no duplicate keys, bounded nesting)
    data = load_yaml_text(read_input_text(p, "--target: file", ConfigError), f"--target {p.name}")
    if not isinstance(data, dict):
        raise ConfigError(f"--target {p.name}: must be a mapping with an llm: and/or a retrieval: section")
    try:
        return Target(**data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"--target {p.name}: {key}: {err['msg'].removeprefix('Value error, ')}") from None
