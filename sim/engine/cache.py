"""The result cache: a real LRU over query keys.

The hit rate is not a parameter: it emerges from the capacity (entries) and
the popularity of the keys that the workload generates.  A key is inserted
when retrieval for it completes; inserting into a full cache evicts the least
recently used key.  A hit refreshes the key's recency.
"""

from __future__ import annotations

from collections import OrderedDict


class LRUCache:
    __slots__ = ("_d", "capacity")

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._d: OrderedDict[int, None] = OrderedDict()

    def lookup(self, key: int) -> bool:
        """True on a hit (and mark the key most recently used)."""
        d = self._d
        if key in d:
            d.move_to_end(key)
            return True
        return False

    def insert(self, key: int) -> None:
        if self.capacity <= 0:
            return
        d = self._d
        if key in d:
            d.move_to_end(key)
            return
        d[key] = None
        if len(d) > self.capacity:
            d.popitem(last=False)

    def __contains__(self, key: int) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)
