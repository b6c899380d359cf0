"""Least outstanding requests (waiting + running); ties go to the lowest index.

The router keeps its own view of every replica's load in a tournament tree
(a binary heap laid out in a list): leaf ``i`` holds ``(outstanding, i)`` of
replica ``i``, every inner node the smaller of its two children, so the root
is the replica a scan of all of them would pick, lowest index first on a tie.
A replica reports each change (a request joins or finishes) through its
``on_outstanding`` hook; the tree updates the leaf and the ``log2(n)`` nodes
above it.  A pick reads the root: the cost of routing does not grow with the
number of replicas (a scan over 78 replicas per request does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EMPTY = (float("inf"), -1)  # the padding leaves past the last replica never win


class _AtLeaf:
    """A replica's hook that reports to leaf ``leaf`` of the tree, not to its own index."""

    __slots__ = ("leaf", "update")

    def __init__(self, update: Any, leaf: int):
        self.update, self.leaf = update, leaf

    def __call__(self, _index: int, outstanding: int) -> None:
        self.update(self.leaf, outstanding)


class LeastOutstanding:
    def __init__(self, replicas: list[Any], rng: np.random.Generator):
        self.replicas = replicas
        size = 1
        while size < len(replicas):
            size *= 2
        self._size = size
        tree: list[tuple[float, int]] = [_EMPTY] * (2 * size)
        for i, r in enumerate(replicas):
            tree[size + i] = (r.outstanding(), i)
        for node in range(size - 1, 0, -1):
            tree[node] = min(tree[2 * node], tree[2 * node + 1])
        self._tree = tree
        for i, r in enumerate(replicas):
            # A replica reports under its own index; over an autoscaler's subset, leaf i is the
            # i-th replica of the list, whatever its index.
            r.on_outstanding = self.update if getattr(r, "index", i) == i else _AtLeaf(self.update, i)

    def update(self, index: int, outstanding: int) -> None:
        """Replica ``index`` now has ``outstanding`` requests."""
        tree = self._tree
        node = self._size + index
        tree[node] = (outstanding, index)
        node >>= 1
        while node:
            a, b = tree[2 * node], tree[2 * node + 1]
            best = a if a <= b else b
            if tree[node] == best:
                break  # nothing above changes
            tree[node] = best
            node >>= 1

    def pick(self) -> Any:
        return self.replicas[self._tree[1][1]]
