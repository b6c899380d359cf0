"""Where the design has variants, each variant is one module named here.

A :class:`Registry` maps a name (what a scenario or a flag writes) to
````"module:attribute"`` (or a whole module)``; the object is imported only when asked for.  This
is the one registration line of a variant: the schema validates names
against :meth:`Registry.names` without importing anything, and the layer
that owns the variants loads them with :meth:`Registry.load`.  So the
schema (low) never imports the engine (high), and adding a router is one
new file plus one line below.
"""

from __future__ import annotations

import importlib
from typing import Any


class Registry:
    """Names of one kind of variant, each resolved lazily to its implementation."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def load(self, name: str) -> Any:
        """The implementation registered under ``name``."""
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}")
        module, _, attr = self._entries[name].partition(":")
        mod = importlib.import_module(module)
        return getattr(mod, attr) if attr else mod


#: Retrieval index kinds: build, search, knobs, scaling law (:mod:`sim.indexes`).
INDEXES = Registry(
    "retrieval index",
    {
        "hnsw": "sim.indexes.hnsw:HNSW",
        "linear_numpy": "sim.indexes.linear_numpy:LinearNumpy",
        "linear_python": "sim.indexes.linear_python:LinearPython",
        "ivf": "sim.indexes.ivf:IVF",
        "flat_faiss": "sim.indexes.flat_faiss:FlatFaiss",
    },
)

#: How a request picks an LLM replica (:mod:`sim.engine.llm.routers`).
ROUTERS = Registry(
    "router",
    {
        "least_outstanding": "sim.engine.llm.routers.least_outstanding:LeastOutstanding",
        "round_robin": "sim.engine.llm.routers.round_robin:RoundRobin",
        "random": "sim.engine.llm.routers.random:Random",
    },
)

#: How a replica fills a step (:mod:`sim.engine.llm.schedulers`).
SCHEDULERS = Registry(
    "batching scheduler",
    {
        "chunked": "sim.engine.llm.schedulers.chunked",
        "whole": "sim.engine.llm.schedulers.whole",
        "mixed_whole": "sim.engine.llm.schedulers.mixed_whole",
    },
)
