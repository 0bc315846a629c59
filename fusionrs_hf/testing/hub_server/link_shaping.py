"""The link a :class:`~.server.HubServer` pretends to be: the shared bandwidth cap on response bodies and the
injected faults (:class:`Fault`). The added latency is ``latency_s``, slept by the handler before each answer."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

_BW_SLACK_S = 0.002


@dataclass
class Fault:
    """A rule that makes matching requests fail (see :meth:`HubServer.inject`)."""

    action: int | str
    """An HTTP status (e.g. 503), ``"drop"`` (close without answering) or ``"truncate"`` (half the body)."""
    method: str | None = None
    path: str | None = None
    """Regex searched in the request path (percent-decoded), e.g. ``r"/resolve/.*\\.parquet$"``."""
    ranged: bool | None = None
    """True: only requests with a ``Range`` header; False: only without; None: both."""
    times: int | None = 1
    """How many matching requests fail (None: every one)."""
    skip: int = 0
    """Matching requests let through before the first failure."""
    seen: int = 0
    hits: int = 0

    def matches(self, method: str, path: str, ranged: bool) -> bool:
        if self.method is not None and self.method.upper() != method:
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        return self.ranged is None or self.ranged == ranged


class _LinkShaping:
    """Fault rules and the bandwidth schedule of a :class:`~.server.HubServer` (mixed in; state made there)."""

    bandwidth_bps: float | None
    faults: list[Fault]
    _lock: threading.RLock
    _bw_lock: threading.Lock
    _bw_next: float

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, action: int | str = 503, *, method: str | None = None, path: str | None = None,
               ranged: bool | None = None, times: int | None = 1, skip: int = 0) -> Fault:
        """Make matching requests fail; returns the rule (its ``hits`` count the failures so far)."""
        if not (isinstance(action, int) or action in ("drop", "truncate")):
            raise ValueError(f"action must be an HTTP status, 'drop' or 'truncate', not {action!r}")
        f = Fault(action, method, path, ranged, times, skip)
        with self._lock:
            self.faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def _fault_for(self, method: str, path: str, ranged: bool) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if not f.matches(method, path, ranged):
                    continue
                f.seen += 1
                if f.seen <= f.skip or (f.times is not None and f.hits >= f.times):
                    continue
                f.hits += 1
                return f
        return None

    # -- bandwidth -----------------------------------------------------------------------------------

    def _take_bandwidth(self, n: int) -> None:
        bps = self.bandwidth_bps
        if not bps:
            return
        with self._bw_lock:
            start = max(time.monotonic(), self._bw_next)
            self._bw_next = start + n / float(bps)
            wake = self._bw_next
        # The schedule (_bw_next) is exact, so the long-run rate is the cap; sleeping only once a chunk is 2 ms
        # ahead of it spares a thread wake-up (and its timer overshoot) per 64 KiB at high rates.
        delay = wake - time.monotonic()
        if delay > _BW_SLACK_S:
            time.sleep(delay)
