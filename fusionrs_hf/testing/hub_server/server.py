"""The server's lifecycle: :class:`HubServer` (state, ``start`` / ``stop``, ``url``, ``env()``) and the
threading HTTP server it runs."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

from .handler import _Handler
from .link_shaping import Fault, _LinkShaping
from .request_log import RequestRecord, _RequestLog
from .store import LFS_THRESHOLD, _Repo, _RepoStore


class HubServer(_RepoStore, _LinkShaping, _RequestLog):
    """A Hub-API server on ``127.0.0.1:port`` (see the :mod:`fusionrs_hf.testing.hub_server` docstring)."""

    def __init__(self, *, latency_s: float = 0.0, bandwidth_bps: float | None = None, token: str | None = None,
                 lfs_threshold: int = LFS_THRESHOLD, user: str = "fusionrs-tester", port: int = 0) -> None:
        self.latency_s = float(latency_s)
        self.bandwidth_bps = bandwidth_bps
        self.token = token
        """When set, writes (and reads of private repos) need ``Authorization: Bearer <token>``."""
        self.lfs_threshold = lfs_threshold
        self.user = user
        self._port = port
        self._lock = threading.RLock()
        self._bw_lock = threading.Lock()
        self._bw_next = 0.0
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        """SHA-256 -> content: regular files and LFS objects alike."""
        self._lfs: set[tuple[str, str, str]] = set()
        """(repo type, repo id, SHA-256) of the LFS objects uploaded, per repo as on the Hub (an LFS file may
        only be committed once its object is in the repo's store)."""
        self._counter = 0
        self.faults: list[Fault] = []
        self.requests: list[RequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> HubServer:
        if self._httpd is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        httpd = _QuietServer(("127.0.0.1", self._port), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fusionrs-hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment for a process whose real client should talk to this server."""
        out = {"HF_ENDPOINT": self.url, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
               "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_UPDATE_DOWNLOAD_COUNTS": "0"}
        if self.token:
            out["HF_TOKEN"] = self.token
        return out


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 overflows when a loader opens dozens of connections at once: the
    # kernel drops the extra SYNs and each client waits a 1 s retransmit, which no real Hub would cost.
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (or a dropped connection we injected) is not worth a traceback
