"""File downloads (``/{datasets/}{id}/resolve/{rev}/{path}``): :class:`_ResolveRoute` and ``Range`` parsing."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import _HubError

if TYPE_CHECKING:
    from .server import HubServer


class _ResolveRoute:
    hub: HubServer

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str, head: bool) -> int:
        hub = self.hub
        with hub._lock:
            repo = hub._get_repo(repo_type, repo_id, self._authorized())
            commit = hub._commit(repo, rev)
            e = commit.files.get(path)
            if e is None:
                raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
            data = hub._blobs[e.sha256]
        etag = f'"{e.sha256 if e.lfs else e.oid}"'
        headers = {"ETag": etag, "X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if e.lfs:
            headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(e.size)})
        rng = self.headers.get("Range")
        if rng:
            span = _parse_range(rng, len(data))
            if span is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                self._truncate = False
                self._send(416, b"", headers)
                return 416
            a, b = span
            headers["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
            return self._send(206, data[a:b + 1], headers, "application/octet-stream", head)
        return self._send(200, data, headers, "application/octet-stream", head)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> inclusive (first, last); None if unsatisfiable."""
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m[1] and not m[2]):
        return None
    if not m[1]:
        n = int(m[2])
        if n == 0:
            return None
        return max(0, size - n), size - 1
    a = int(m[1])
    b = min(int(m[2]), size - 1) if m[2] else size - 1
    if a >= size or b < a:
        return None
    return a, b
