"""The links a disaggregated deployment hands KV caches over, each figure with the page it was read on.

The catalog is ``sim/spec/catalog/links.yaml``: per link kind (InfiniBand NDR and NDR200,
RoCE at 400 Gb/s) the per-port rate as the page printed it, the page and the date it was read.
``nvlink`` carries no figure of its own: both pools share an NVLink domain and the link runs at
the GPUs' ``interconnect_gbps`` (the GPU catalog's sourced figure).  A picture::

    >>> link("infiniband-ndr").bytes_per_s     # 400 Gb/s
    50000000000.0
    >>> link("nvlink").bytes_per_s is None     # the GPUs' own figure
    True

:mod:`sim.engine.llm.disagg` turns it into the hand-off time of a request's KV
(:func:`sim.physics.handoff.transfer_s`); ``llm.disaggregated.link_gbps`` overrides it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sim.files import read_yaml_data

__all__ = ["BYTES_PER_UNIT", "Link", "link", "link_names"]

_FILE = Path(__file__).resolve().parent / "catalog" / "links.yaml"

#: Bytes per second of one quoted unit.
BYTES_PER_UNIT = {"Gb/s": 1e9 / 8}


@dataclass(frozen=True)
class Link:
    """One catalog entry: ``bytes_per_s`` per GPU and direction (None: the GPUs' NVLink) and its source."""

    name: str
    what: str
    bytes_per_s: float | None = None
    quoted: float | None = None
    unit: str | None = None
    source: str | None = None
    read_on: str | None = None

    @property
    def from_quote(self) -> float | None:
        """The rate the quoted figure gives: ``quoted x BYTES_PER_UNIT[unit]``."""
        if self.quoted is None or self.unit is None:
            return None
        return self.quoted * BYTES_PER_UNIT[self.unit]


@functools.cache
def _load() -> dict[str, Link]:
    data = read_yaml_data(_FILE)
    out: dict[str, Link] = {}
    for name, e in data["links"].items():
        out[str(name)] = Link(
            name=str(name),
            what=" ".join(str(e["what"]).split()),
            bytes_per_s=float(e["bytes_per_s"]) if "bytes_per_s" in e else None,
            quoted=float(e["quoted"]) if "quoted" in e else None,
            unit=str(e["unit"]) if "unit" in e else None,
            source=str(e["source"]) if "source" in e else None,
            read_on=str(e["read_on"]) if "read_on" in e else None,
        )
    return out


def link_names() -> tuple[str, ...]:
    """The catalog's link kinds, in file order."""
    return tuple(_load())


def link(name: str) -> Link:
    """The catalog entry ``name`` (KeyError for an unknown one: the schema refuses it first)."""
    return _load()[name]
