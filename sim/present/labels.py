"""How a swept key, a point and a value read in a figure, a table or a sentence.

``workload.users`` reads ``users``; the point ``{"workload.users": 1000,
"retrieval.index": "hnsw"}`` reads ``users=1000, index=hnsw``; the count 1000 reads
``1,000``; the list ``a, b, c`` reads ``a, b and c``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def short(key: str) -> str:
    """The last part of a dotted key: ``workload.users`` -> ``users``."""
    return key.split(".")[-1]


def point_label(params: Mapping[str, Any]) -> str:
    """``users=50, index=hnsw``; ``scenario`` for a point with no swept keys."""
    return ", ".join(f"{short(k)}={v}" for k, v in params.items()) or "scenario"


def value_text(v: Any) -> str:
    """An integer with thousands separators (``1,000``); anything else as ``str``."""
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def and_list(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
