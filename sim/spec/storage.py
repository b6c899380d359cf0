"""Where a starting replica reads its model weights from, each figure with the page it was read on.

The catalog is ``sim/spec/catalog/storage.yaml``: per storage kind (a cloud disk at its
default and its largest provisioned throughput, local NVMe drives of two PCIe
generations), the sequential read rate as the page printed it, its unit, the page and the
date it was read.  A picture::

    >>> storage("ebs-gp3").read_bytes_per_s      # 125 MiB/s
    131072000.0
    >>> storage("nvme-gen5").read_bytes_per_s    # 13,000 MB/s
    13000000000.0

:mod:`sim.engine.llm.autoscale` turns it into the weight-loading part of a replica's
cold start (``llm.autoscale.weights_from``; ``llm.autoscale.load_gbps`` overrides it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from sim.files import read_yaml_data
from sim.spec.quote import Quote, quote_fields

__all__ = ["BYTES_PER_UNIT", "Storage", "storage", "storage_names"]

_FILE = Path(__file__).resolve().parent / "catalog" / "storage.yaml"

#: Bytes per second of one quoted unit.
BYTES_PER_UNIT = {"MiB/s": 2.0**20, "MB/s": 1e6}


@dataclass(frozen=True, kw_only=True)
class Storage(Quote):
    """One catalog entry: ``read_bytes_per_s`` and where the figure was read."""

    name: str
    read_bytes_per_s: float
    what: str

    @property
    def from_quote(self) -> float:
        """The rate the quoted figure gives: ``quoted x BYTES_PER_UNIT[unit]``."""
        return self.quoted * BYTES_PER_UNIT[self.unit]


@functools.cache
def _load() -> dict[str, Storage]:
    data = read_yaml_data(_FILE)
    return {
        str(name): Storage(
            name=str(name), read_bytes_per_s=float(e["read_bytes_per_s"]), what=str(e["what"]), **quote_fields(e)
        )
        for name, e in data["storage"].items()
    }


def storage_names() -> tuple[str, ...]:
    """The catalog's storage kinds, in file order."""
    return tuple(_load())


def storage(name: str) -> Storage:
    """The catalog entry ``name`` (KeyError for an unknown one: the schema refuses it first)."""
    return _load()[name]
