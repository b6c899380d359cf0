"""Paged-KV bookkeeping of a decoding batch in closed form."""

from __future__ import annotations


class DecodeBlocks:
    """Blocks held by a set of decoding sequences, as a function of the decode clock.

    Every decoding sequence ``i`` holds ``t_i(x) = e_i + x`` private tokens
    when the decode clock (decode steps run so far) reads ``x``, so together
    they hold::

        G(x) = sum_i ceil((e_i + x) / B)

    blocks.  Writing ``w_i = e_i + B - 1 = B v_i + u_i`` (``0 <= u_i < B``) and
    ``x = B m + r``, each term is ``v_i + m + [u_i >= B - r]``, so::

        G(x) = V + n m + #{i : u_i >= B - r}      (V = sum v_i)

    which needs only ``V``, ``n`` and a histogram of the ``u_i``: O(1) to add
    or remove a sequence, O(B) to evaluate, and :meth:`max_clock` finds the
    last clock at which ``G`` still fits a budget in O(B), so an epoch can end
    at the step where the batch would run out of blocks.
    """

    __slots__ = ("B", "V", "hist", "n")

    def __init__(self, block_tokens: int):
        self.B = block_tokens
        self.n = 0
        self.V = 0
        self.hist = [0] * block_tokens

    def add(self, w: int) -> None:
        v, u = divmod(w, self.B)
        self.n += 1
        self.V += v
        self.hist[u] += 1

    def remove(self, w: int) -> None:
        v, u = divmod(w, self.B)
        self.n -= 1
        self.V -= v
        self.hist[u] -= 1

    def blocks(self, x: int) -> int:
        """G(x): blocks the decoders hold at decode clock ``x``."""
        B = self.B
        m, r = divmod(x, B)
        return self.V + self.n * m + (sum(self.hist[B - r :]) if r else 0)

    def max_clock(self, cap: int) -> int:
        """The largest clock ``x`` with ``G(x) <= cap`` (needs ``n >= 1``)."""
        B, hist = self.B, self.hist
        m0, slack = divmod(cap - self.V, self.n)  # G(B m0) <= cap < G(B (m0 + 1)); slack in [0, n)
        r, c = 0, 0
        while r + 1 < B:
            c += hist[B - r - 1]
            if c > slack:
                break
            r += 1
        return B * m0 + r
