"""HTTP to the stack under test, bounded in time and checked: what verify sends and reads.

Every request to a target goes through a :class:`DeadlineConnection`: the whole answer
must arrive within the connection's timeout (not each read: a server that drips one
byte every half second would otherwise hold a request for ever) and before the
deadline of the whole run (:class:`RunDeadline`).  A request that fails is an
:class:`EndpointError` naming the endpoint; an answer that is not what the API says is
a :class:`TargetError` naming the endpoint and the field.
"""

from __future__ import annotations

import contextlib
import heapq
import http.client
import math
import socket
import threading
import time
from typing import Any
from urllib.parse import urlparse

from sim.errors import CapsimError


class EndpointError(RuntimeError):
    """A request to the target failed: refused, timed out, cut off, an HTTP error status, a
    reply that is not HTTP.  The message names the endpoint.  The live load records it as
    the request's failure; outside the load (the probes) it is a one-line error about the
    target (:func:`sim.verify.run.verify`)."""


class TargetError(CapsimError):
    """The target answered, but not what its API says (binary garbage, a field that is not a
    finite number >= 0, more tokens than asked): one line naming the endpoint and the field.
    No verdict is drawn from such answers."""


class RunDeadline:
    """The latest moment (``time.monotonic``) any request of this verify may still run."""

    at = float("inf")

    @classmethod
    def left_s(cls) -> float:
        return cls.at - time.monotonic()


class _Watchdog(threading.Thread):
    """One thread that shuts the socket of every request still running at its deadline, so a
    server that answers one byte every half second (each read within the socket timeout)
    is cut off at the deadline of the whole request, not waited on for ever."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="capsim-verify-watchdog")
        self.cv = threading.Condition()
        self.heap: list[tuple[float, int, DeadlineConnection]] = []
        self.seq = 0

    def arm(self, at: float, conn: DeadlineConnection) -> int:
        with self.cv:
            self.seq += 1
            heapq.heappush(self.heap, (at, self.seq, conn))
            self.cv.notify()
            return self.seq

    def run(self) -> None:
        while True:
            with self.cv:
                while not self.heap:
                    self.cv.wait()
                at, seq, conn = self.heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self.cv.wait(wait)
                    continue
                heapq.heappop(self.heap)
            conn.expire(seq)


_watchdog_lock = threading.Lock()
_watchdog: _Watchdog | None = None


def _the_watchdog() -> _Watchdog:
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or not _watchdog.is_alive():
            _watchdog = _Watchdog()
            _watchdog.start()
        return _watchdog


class DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose every request must be answered whole within ``timeout`` s
    (and before :class:`RunDeadline`): :meth:`request` arms the watchdog, :meth:`done`
    disarms it once the answer is read.  ``expired`` says the watchdog cut it off."""

    def __init__(self, url: str, host: str, port: int | None, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.url = url
        self.limit_s = timeout
        self._armed = 0
        self._budget = timeout
        self.expired = False

    def request(self, *args: Any, **kwargs: Any) -> None:
        left = RunDeadline.left_s()
        if left <= 0:
            raise EndpointError(f"{self.endpoint(str(args[1]) if len(args) > 1 else '')}: verify ran past its deadline")
        self.expired = False
        self._budget = budget = min(self.limit_s, left)
        self._armed = _the_watchdog().arm(time.monotonic() + budget, self)
        super().request(*args, **kwargs)

    def done(self) -> None:
        self._armed = 0

    def expire(self, seq: int) -> None:
        if seq != self._armed:
            return  # answered (or re-armed for a later request) in time
        self.expired = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def failure(self, what: str, e: BaseException, kind: str | None = None) -> EndpointError:
        """``e`` (raised while ``what`` ran) as an :class:`EndpointError` naming the endpoint."""
        if self.expired or isinstance(e, TimeoutError):
            why = f"no whole answer within {self._budget:.3g} s" + (" (cut off)" if self.expired else "")
        elif isinstance(e, http.client.HTTPException):
            why = f"not an HTTP answer ({type(e).__name__}: {str(e)[:80]})"
        else:
            why = f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        return EndpointError(f"{self.endpoint(what, kind)}: {what}: {why}")

    def endpoint(self, what: str, kind: str | None = None) -> str:
        """``retrieval endpoint URL`` or ``llm endpoint URL``: who ``what`` asked."""
        return f"{kind or ('retrieval' if '/search' in what else 'llm')} endpoint {self.url}"

    def finish(self, what: str) -> None:
        """The answer to ``what`` is read: disarm the watchdog; an :class:`EndpointError` if it
        had cut the answer off (a shut socket reads as a short answer, not as an error)."""
        self._armed = 0
        if self.expired:
            raise self.failure(what, TimeoutError())


def connection(url: str, timeout_s: float) -> DeadlineConnection:
    u = urlparse(url)
    return DeadlineConnection(url, u.hostname or "127.0.0.1", u.port, timeout_s)


def finite_number(v: Any, where: str, integer: bool = False, most: float = float("inf")) -> float:
    """``v`` if it is a finite number in [0, most] (an integer when asked), else a :class:`TargetError`."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= most
    if ok and integer and v != int(v):
        ok = False
    if not ok:
        limit = "" if math.isinf(most) else f" and <= {most:g}"
        kind = "an integer" if integer else "a finite number"
        raise TargetError(f"{where}: {v!r} is not {kind} >= 0{limit}")
    return float(v)
