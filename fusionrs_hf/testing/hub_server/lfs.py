"""The LFS endpoints of the handler (:class:`_LfsRoutes`): the batch API (``basic`` transfer), the upload of an
object and its verify call."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from .errors import _HubError

if TYPE_CHECKING:
    from .server import HubServer


class _LfsRoutes:
    hub: HubServer

    def _lfs_batch(self, repo_type: str, repo_id: str, body: bytes) -> int:
        hub = self.hub
        self._require_write()
        data = json.loads(body or b"{}")
        with hub._lock:
            hub._get_repo(repo_type, repo_id, True)
            objects = []
            for o in data.get("objects", []):
                oid, size = o["oid"], int(o["size"])
                entry: dict = {"oid": oid, "size": size, "authenticated": True}
                if (repo_type, repo_id, oid) not in hub._lfs:
                    base = f"{hub.url}/lfs/{repo_type}s/{repo_id}"
                    entry["actions"] = {
                        "upload": {"href": f"{base}/objects/{oid}?size={size}", "header": {}},
                        "verify": {"href": f"{base}/verify", "header": {}},
                    }
                objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")
        return 200

    def _lfs_put(self, key: tuple[str, str], oid: str, q: dict, body: bytes) -> int:
        hub = self.hub  # no Authorization here: the href stands for a pre-signed storage URL, as on the Hub
        size = int((q.get("size") or [len(body)])[0])
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, f"uploaded content does not match oid {oid} / size {size} (got {len(body)} bytes)")
        with hub._lock:
            hub._get_repo(*key, True)
            hub._store(body)
            hub._lfs.add((*key, oid))
        return self._send(200, b"", content_type="text/plain")

    def _lfs_verify(self, key: tuple[str, str], body: bytes) -> int:
        hub = self.hub
        data = json.loads(body or b"{}")
        with hub._lock:
            ok = (*key, data.get("oid")) in hub._lfs
        if not ok:
            raise _HubError(404, "object not found")
        return self._json({"success": True})
