"""Paged-KV bookkeeping: a decoding batch's blocks in closed form, and the free blocks that
still hold cached KV, in the order vLLM evicts them."""

from __future__ import annotations

from collections import deque


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
        r = x % B
        return self.V + self.n * (x // B) + (sum(self.hist[B - r :]) if r else 0)

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


class _Run:
    """``n`` cached free blocks of one owner, side by side in the free queue."""

    __slots__ = ("n", "owner")

    def __init__(self, owner: object, n: int):
        self.owner = owner
        self.n = n


class CachedFree:
    """Free blocks that still hold cached KV, counted in the order vLLM evicts them.

    vLLM V1's free block queue (``vllm/v1/core/block_pool.py``, ``BlockPool.free_blocks``)
    puts a freed block without a hash (a request's partial last block) at its front and a full,
    hashed block at its back; a request's blocks are freed last block first
    (``SingleTypeKVCacheManager.free``), so its first block is the last of them to go;
    ``BlockPool.get_new_blocks`` takes blocks from the front, evicting the cached ones it takes.
    The queue is therefore the uncached free blocks, then the cached ones from the least to the
    most recently freed, and a block a request needs costs an uncached free block while there
    is one, else the cached block freed longest ago (the last block of its request first).
    Cached free blocks count as free (``get_num_free_blocks``) until evicted; a request that
    finds its prefix among them takes them back (``BlockPool.touch``).

    Only counts are kept: runs of blocks by owner, oldest first.  An owner is who can hit the
    run again (a preempted request, the shared system prompt); runs nobody can hit are merged.
    With free blocks ``5`` and runs ``a: 2, b: 3`` (5 cached), taking 3 blocks leaves 2 free:
    ``evict_to(2)`` evicts all of ``a`` and 1 of ``b``, which keeps its first 2 blocks.
    """

    __slots__ = ("blocks", "by_owner", "runs")

    def __init__(self) -> None:
        self.runs: deque[_Run] = deque()
        self.by_owner: dict[object, _Run] = {}
        self.blocks = 0

    def push(self, owner: object, n: int) -> None:
        """``n`` full blocks of ``owner`` (None: nobody) freed now: the most recently freed."""
        if n <= 0:
            return
        self.blocks += n
        if owner is None and self.runs and self.runs[-1].owner is None:
            self.runs[-1].n += n
            return
        run = _Run(owner, n)
        self.runs.append(run)
        if owner is not None:
            self.disown(owner)
            self.by_owner[owner] = run

    def held_by(self, owner: object) -> int:
        """Cached blocks of ``owner`` not yet evicted (its leading blocks)."""
        run = self.by_owner.get(owner)
        return run.n if run is not None else 0

    def take(self, owner: object) -> int:
        """``owner``'s run leaves the free queue (its blocks are in use again): its blocks."""
        run = self.by_owner.pop(owner, None)
        if run is None:
            return 0
        self.runs.remove(run)
        self.blocks -= run.n
        return run.n

    def disown(self, owner: object) -> None:
        """``owner`` can no longer hit its run; the blocks stay where they are in the queue."""
        run = self.by_owner.pop(owner, None)
        if run is not None:
            run.owner = None

    def evict_to(self, free: int) -> None:
        """Evict, oldest run first, until at most ``free`` (the free blocks left) are cached."""
        over = self.blocks - free
        while over > 0:
            run = self.runs[0]
            k = min(over, run.n)
            run.n -= k
            self.blocks -= k
            over -= k
            if run.n == 0:
                self.runs.popleft()
                if run.owner is not None:
                    del self.by_owner[run.owner]
