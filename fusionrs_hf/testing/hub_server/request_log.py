"""The request log of a :class:`~.server.HubServer`: one :class:`RequestRecord` per answered request."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    status: int | str
    range: str | None
    bytes_in: int
    bytes_out: int
    seconds: float


class _RequestLog:
    """``requests`` and the methods that read and write it (mixed into :class:`~.server.HubServer`)."""

    requests: list[RequestRecord]
    _lock: threading.RLock

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """Requests recorded so far with this method and a path matching the regex ``path``."""
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method.upper())
                       and (path is None or re.search(path, r.path)))

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)
