"""A catalog figure as a public page printed it: the number, its unit, the page and the date it
was read (and the date the page gives itself, when it gives one).

A catalog entry (:class:`sim.spec.storage.Storage`, :class:`sim.spec.prices.Price`) is a
:class:`Quote` plus the figure capsim uses, converted from the quote by the entry's own
``from_quote``; the catalog tests hold the two equal.  A picture: a disk page prints "125 MiB/s",
so ``quoted`` is 125 and ``unit`` "MiB/s", and the entry's rate is 125 x 2^20 bytes per second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Quote", "quote_fields"]


@dataclass(frozen=True, kw_only=True)
class Quote:
    """Where a catalog figure was read: ``quoted`` in ``unit`` on page ``source`` on ``read_on``."""

    quoted: float
    unit: str
    source: str
    read_on: str
    page_date: str | None = None


def quote_fields(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`Quote` fields of one catalog file entry, typed."""
    return {
        "quoted": float(entry["quoted"]),
        "unit": str(entry["unit"]),
        "source": str(entry["source"]),
        "read_on": str(entry["read_on"]),
        "page_date": str(entry["page_date"]) if entry.get("page_date") else None,
    }
