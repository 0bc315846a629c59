"""The request handler: HTTP plumbing (body reading, the injected latency and faults, sending under the
bandwidth cap, error answers, auth) and the top-level routes; the endpoints are in its mixins."""

from __future__ import annotations

import json
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from .api_routes import _ApiRoutes
from .errors import _Drop, _HubError
from .lfs import _LfsRoutes
from .request_log import RequestRecord
from .resolve import _ResolveRoute

if TYPE_CHECKING:
    from .server import HubServer

_CHUNK = 64 * 1024


class _Handler(_ApiRoutes, _LfsRoutes, _ResolveRoute, BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "fusionrs-hub-server/1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, the body waits for the client's
    # delayed ACK of the headers (~40 ms on Linux), a hidden latency on every request on top of latency_s.
    disable_nagle_algorithm = True

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's signature
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # -- plumbing ----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";", 1)[0] or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _serve(self, method: str) -> None:
        t0 = time.monotonic()
        hub = self.hub
        split = urlsplit(self.path)
        raw_path, query = split.path, split.query
        shown = unquote(raw_path)
        rng = self.headers.get("Range")
        body = b""
        self._bytes_out = 0
        status: int | str = 0
        try:
            body = self._read_body()
            if hub.latency_s:
                time.sleep(hub.latency_s)
            fault = hub._fault_for(method, shown, rng is not None)
            if fault is not None and fault.action == "drop":
                raise _Drop()
            self._truncate = fault is not None and fault.action == "truncate"
            if fault is not None and isinstance(fault.action, int):
                raise _HubError(fault.action, f"injected failure ({fault.action})")
            status = self._route(method, raw_path, parse_qs(query, keep_blank_values=True), body)
        except _Drop:
            status = "drop"
            self._drop()
        except _HubError as e:
            status = e.status
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            status = "client-gone"
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - a bug here must answer 500, not hang the client
            status = 500
            try:
                self._error(_HubError(500, f"internal error: {type(e).__name__}: {e}"))
            except OSError:
                self.close_connection = True
        hub._record(RequestRecord(method, shown, query, status, rng, len(body), self._bytes_out,
                                  time.monotonic() - t0))

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(self, status: int, data: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if head or not data or self.command == "HEAD":
            return status
        if getattr(self, "_truncate", False):
            data = data[: max(1, len(data) // 2)]
            self.wfile.write(data)
            self.wfile.flush()
            self._bytes_out += len(data)
            self._drop()
            return status
        hub = self.hub
        for i in range(0, len(data), _CHUNK):
            part = data[i:i + _CHUNK]
            hub._take_bandwidth(len(part))
            self.wfile.write(part)
            self._bytes_out += len(part)
        return status

    def _json(self, obj, status: int = 200, headers: dict[str, str] | None = None) -> int:
        return self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, e: _HubError) -> None:
        headers = {"X-Error-Message": e.message.replace("\n", " ")[:500]}
        if e.code:
            headers["X-Error-Code"] = e.code
        self._truncate = False
        self._send(e.status, json.dumps({"error": e.message}).encode(), headers)

    def _authorized(self) -> bool:
        tok = self.hub.token
        return tok is None or self.headers.get("Authorization", "") == f"Bearer {tok}"

    def _require_write(self) -> None:
        if not self._authorized():
            raise _HubError(401, "Invalid credentials in Authorization header")

    # -- routing -------------------------------------------------------------------------------

    def _route(self, method: str, raw_path: str, q: dict, body: bytes) -> int:
        segs = [unquote(s) for s in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        if segs[:1] == ["api"]:
            return self._api(method, segs[1:], q, body)
        if segs[:1] == ["lfs"] and len(segs) >= 5 and segs[1] in ("models", "datasets", "spaces"):
            key = (segs[1][:-1], f"{segs[2]}/{segs[3]}")
            if segs[4] == "objects" and len(segs) == 6 and method == "PUT":
                return self._lfs_put(key, segs[5], q, body)
            if segs[4] == "verify" and method == "POST":
                return self._lfs_verify(key, body)
        repo_type = "model"
        if segs[:1] in (["datasets"], ["spaces"]):
            repo_type, segs = segs[0][:-1], segs[1:]
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"] and segs[5:] == ["batch"]:
            return self._lfs_batch(repo_type, f"{segs[0]}/{segs[1][:-4]}", body)
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), method == "HEAD")
        raise _HubError(404, f"no route for {method} {unquote(raw_path)}")
