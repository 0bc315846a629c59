"""A small Hugging Face Hub API server on 127.0.0.1, for tests and benchmarks with the real client.

Point the real ``huggingface_hub`` client (and so ``datasets``, ``HfFileSystem``, ``fusionrs push``) at it
with ``HF_ENDPOINT=server.url`` (or ``HfApi(endpoint=server.url)``). It speaks exactly the endpoints those
clients use, the way the Hub answers them:

=================================================  ===============================================================
``POST /api/repos/create``                          create a repo (409 when it exists); an initial commit holds
                                                    ``.gitattributes``, as on the Hub
``GET /api/{type}s/{id}[/revision/{rev}]``          repo info (``sha``, ``private``, ``siblings``; ``?blobs=1``)
``GET /api/{type}s/{id}/tree/{rev}[/{path}]``       listing, ``recursive``/``expand`` (``lastCommit``), paginated
                                                    by ``Link: <...cursor=N>; rel="next"`` (1000 / 50 per page)
``POST /api/{type}s/{id}/paths-info/{rev}``         form ``paths`` (repeated), ``expand``
``GET|HEAD /{datasets/}{id}/resolve/{rev}/{path}``  file bytes; ``Range: bytes=a-b`` answered 206 with
                                                    ``Content-Range``; ``ETag``, ``X-Repo-Commit``, ``X-Linked-Etag``
                                                    / ``X-Linked-Size`` for LFS files
``POST /api/{type}s/{id}/preupload/{rev}``          upload mode per file (``lfs`` by ``.gitattributes`` pattern or
                                                    size >= ``lfs_threshold``, else ``regular``) and the remote oid
``POST /{datasets/}{id}.git/info/lfs/objects/batch`` LFS batch API, ``basic`` transfer: an upload (+ verify) action
                                                    per object not stored yet, none for a stored one
``PUT /lfs/{type}s/{id}/objects/{sha256}``          the LFS upload (size and SHA-256 checked; objects are kept per repo)
``POST /api/{type}s/{id}/commit/{rev}``             ndjson commit: ``header`` (``parentCommit`` checked: 412 when
                                                    the branch moved), ``file``, ``lfsFile``, ``deletedFile``,
                                                    ``deletedFolder``; atomic
``POST /api/{type}s/{id}/branch/{name}``            create a branch; ``GET .../refs``, ``GET .../commits/{rev}``
``POST /api/validate-yaml``, ``GET /api/whoami-v2`` what the client asks before a README commit / to identify
=================================================  ===============================================================

Errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) and
``X-Error-Message`` headers, so the client raises its own error classes. Xet is not offered (no
``xetHash``, LFS ``basic`` transfer only); a client with ``hf_xet`` installed uploads through xet unless
``HF_HUB_DISABLE_XET=1`` is set, so set it.

Knobs for benchmarks and fault tests (attributes, changeable while it runs):

- ``latency_s``: added before every answer (one round trip's worth of delay per request).
- ``bandwidth_bps``: a cap, shared by all connections, on response body bytes per second.
- :meth:`HubServer.inject`: make matching requests fail with an HTTP status, a dropped connection
  (``"drop"``: closed before any answer) or a truncated body (``"truncate"``: headers and half the body,
  then closed); match by method, path regex and whether the request has a ``Range`` header, for the
  first ``times`` matches after ``skip``.

Every request is recorded in :attr:`HubServer.requests` (method, path, status, range, bytes, seconds) once
its answer is sent (a client that has its answer may look a moment before the record lands). Listens on
127.0.0.1 only, on a free port; use it as a context manager or ``start()`` / ``stop()``.

From a shell (repos live in memory and are gone when it stops)::

    python -m fusionrs_hf.testing.hub_server [--port N] [--latency-ms X] [--bandwidth-mbps Y]

prints the ``export ...`` lines that point a client at it and serves until Ctrl-C. It needs no token, and
``fusionrs push`` sends none to a loopback endpoint unless one is set (HF_TOKEN or a stored login).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import fnmatch
import hashlib
import json
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["HubServer", "Fault", "RequestRecord", "GITATTRIBUTES", "LFS_THRESHOLD", "git_blob_id"]

LFS_THRESHOLD = 10 * 1024 * 1024
"""Files at least this large are LFS whatever their name (the Hub's rule)."""
GITATTRIBUTES = (
    b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"
    b"*.arrow filter=lfs diff=lfs merge=lfs -text\n"
    b"*.png filter=lfs diff=lfs merge=lfs -text\n"
    b"*.jpg filter=lfs diff=lfs merge=lfs -text\n"
    b"*.jpeg filter=lfs diff=lfs merge=lfs -text\n"
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
)
"""What the Hub's initial commit puts in ``.gitattributes`` (the part that matters here)."""
_PAGE = 1000
_PAGE_EXPAND = 50
_BW_SLACK_S = 0.002
_CHUNK = 64 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class _Entry:
    size: int
    oid: str
    """Git blob id: of the content, or of the LFS pointer for an LFS file (as the Hub reports it)."""
    sha256: str
    """SHA-256 of the content (the blob store key; the LFS oid when ``lfs``)."""
    lfs: bool
    last_commit: tuple[str, str, str]
    """(oid, title, date) of the commit that last wrote this path."""


@dataclass
class _Commit:
    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, _Entry]


@dataclass
class _Repo:
    repo_id: str
    repo_type: str
    private: bool
    created: str
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)


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


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _Drop(Exception):
    """Close the connection without an answer (an injected fault)."""


class HubServer:
    """A Hub-API server on ``127.0.0.1:port`` (see the module docstring)."""

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

    # -- faults and the request log ------------------------------------------------------------

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

    # -- state, for tests ----------------------------------------------------------------------

    def create_repo(self, repo_id: str, *, repo_type: str = "dataset", private: bool = False,
                    files: dict[str, bytes] | None = None) -> None:
        """Create a repo directly (as if the client had), optionally with a first commit of ``files``."""
        with self._lock:
            self._create(repo_type, repo_id, private)
            if files:
                ops = [("file", p, data) for p, data in files.items()]
                self._apply(self._repos[repo_type, repo_id], "main", "seed", "", None, ops)

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> dict[str, bytes]:
        """``{path: bytes}`` of a revision."""
        with self._lock:
            c = self._commit(self._get_repo(repo_type, repo_id), revision)
            return {p: self._blobs[e.sha256] for p, e in c.files.items()}

    def history(self, repo_id: str, revision: str = "main", repo_type: str = "dataset") -> list[str]:
        """Commit titles, newest first."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            c: _Commit | None = self._commit(repo, revision)
            out = []
            while c is not None:
                out.append(c.title)
                c = repo.commits.get(c.parent) if c.parent else None
            return out

    def lfs_objects(self, repo_id: str, repo_type: str = "dataset") -> int:
        """LFS objects stored for a repo."""
        with self._lock:
            return sum(1 for t, r, _ in self._lfs if (t, r) == (repo_type, repo_id))

    # -- internals -------------------------------------------------------------------------------

    def _oid(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((*parts, str(self._counter), str(time.time_ns()))).encode()).hexdigest()

    def _create(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        key = (repo_type, repo_id)
        if key in self._repos:
            raise _HubError(409, "You already created this dataset repo" if repo_type == "dataset"
                            else "You already created this repo")
        repo = _Repo(repo_id, repo_type, private, _now())
        self._repos[key] = repo
        self._apply(repo, None, "initial commit", "", None, [("file", ".gitattributes", GITATTRIBUTES)])
        return repo

    def _get_repo(self, repo_type: str, repo_id: str, authorized: bool = True) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not authorized):
            raise _HubError(404, "Repository Not Found", "RepoNotFound")
        return repo

    def _commit(self, repo: _Repo, revision: str | None) -> _Commit:
        rev = revision or "main"
        oid = repo.branches.get(rev) or repo.tags.get(rev) or (rev if rev in repo.commits else None)
        if oid is None:
            raise _HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return repo.commits[oid]

    def _store(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self._blobs.setdefault(sha, data)
        return sha

    def _is_lfs_path(self, files: dict[str, _Entry], path: str, size: int) -> bool:
        if size >= self.lfs_threshold:
            return True
        ga = files.get(".gitattributes")
        if ga is None:
            return False
        name = path.rsplit("/", 1)[-1]
        for line in self._blobs[ga.sha256].decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:] and (
                    fnmatch.fnmatchcase(name, parts[0]) or fnmatch.fnmatchcase(path, parts[0])):
                return True
        return False

    def _apply(self, repo: _Repo, branch: str | None, title: str, description: str, parent: str | None,
               ops: list[tuple]) -> _Commit:
        """Apply ``ops`` atomically on ``branch`` (None: the first commit of ``main``)."""
        head = self._commit(repo, branch) if branch is not None else None
        if parent is not None and head is not None and parent != head.oid:
            raise _HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files) if head is not None else {}
        date = _now()
        oid = self._oid(repo.repo_id, title)
        stamp = (oid, title, date)
        for op in ops:
            kind, path = op[0], op[1]
            if kind == "file":
                data = op[2]
                sha = self._store(data)
                lfs = self._is_lfs_path(files, path, len(data)) and path != ".gitattributes"
                blob = git_blob_id(_lfs_pointer(sha, len(data))) if lfs else git_blob_id(data)
                if lfs:
                    self._lfs.add((repo.repo_type, repo.repo_id, sha))
                old = files.get(path)
                files[path] = old if old is not None and old.sha256 == sha else _Entry(len(data), blob, sha, lfs, stamp)
            elif kind == "lfsFile":
                sha, size = op[2], op[3]
                if (repo.repo_type, repo.repo_id, sha) not in self._lfs:
                    raise _HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                         f"does not exist. For instance: {path}")
                size = len(self._blobs[sha]) if size is None else int(size)
                old = files.get(path)
                files[path] = old if old is not None and old.sha256 == sha else \
                    _Entry(size, git_blob_id(_lfs_pointer(sha, size)), sha, True, stamp)
            elif kind == "deletedFile":
                if path not in files:
                    raise _HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif kind == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                gone = [p for p in files if p.startswith(prefix)]
                if not gone:
                    raise _HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
        commit = _Commit(oid, head.oid if head is not None else None, title, description, date, files)
        repo.commits[oid] = commit
        repo.branches[branch or "main"] = oid
        return commit

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


# ------------------------------------------------------------------------------------------------ JSON shapes


def _file_json(path: str, e: _Entry, expand: bool) -> dict:
    out: dict = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
    if e.lfs:
        out["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(_lfs_pointer(e.sha256, e.size))}
    if expand:
        out["lastCommit"] = {"id": e.last_commit[0], "title": e.last_commit[1], "date": e.last_commit[2]}
        out["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                     "pickleImportScan": None}
    return out


def _folder_json(path: str, files: dict[str, _Entry], expand: bool) -> dict:
    prefix = path + "/"
    inside = sorted((p, e.oid) for p, e in files.items() if p.startswith(prefix))
    out: dict = {"type": "directory", "oid": hashlib.sha1(repr(inside).encode()).hexdigest(), "size": 0, "path": path}
    if expand:
        latest = max((files[p].last_commit for p, _ in inside), key=lambda c: c[2], default=None)
        if latest is not None:
            out["lastCommit"] = {"id": latest[0], "title": latest[1], "date": latest[2]}
    return out


def _tree(files: dict[str, _Entry], path: str, recursive: bool) -> list[tuple[str, str]]:
    """(kind, path) entries under ``path`` ('' = root): direct children, or every descendant."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    out: dict[str, str] = {}
    for p in files:
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):].split("/")
        if recursive:
            for i in range(1, len(rest)):
                out.setdefault(prefix + "/".join(rest[:i]), "directory")
            out[p] = "file"
        else:
            out[prefix + rest[0]] = "file" if len(rest) == 1 else "directory"
    # folders first, then files, each sorted (as the Hub lists a tree)
    return sorted(((k, p) for p, k in out.items()), key=lambda t: (t[0] != "directory", t[1]))


# ------------------------------------------------------------------------------------------------ handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 overflows when a loader opens dozens of connections at once: the
    # kernel drops the extra SYNs and each client waits a 1 s retransmit, which no real Hub would cost.
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up (or a dropped connection we injected) is not worth a traceback


class _Handler(BaseHTTPRequestHandler):
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
        hub = self.hub
        if segs[:1] == ["api"]:
            return self._api(method, segs[1:], q, body)
        if segs[:1] == ["lfs"] and len(segs) >= 5 and segs[1] in ("models", "datasets", "spaces"):
            key = (segs[1][:-1], f"{segs[2]}/{segs[3]}")
            if segs[4] == "objects" and len(segs) == 6 and method == "PUT":
                return self._lfs_put(key, segs[5], q, body)
            if segs[4] == "verify" and method == "POST":
                data = json.loads(body or b"{}")
                with hub._lock:
                    ok = (*key, data.get("oid")) in hub._lfs
                if not ok:
                    raise _HubError(404, "object not found")
                return self._json({"success": True})
        repo_type = "model"
        if segs[:1] in (["datasets"], ["spaces"]):
            repo_type, segs = segs[0][:-1], segs[1:]
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"] and segs[5:] == ["batch"]:
            return self._lfs_batch(repo_type, f"{segs[0]}/{segs[1][:-4]}", body)
        if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), method == "HEAD")
        raise _HubError(404, f"no route for {method} {unquote(raw_path)}")

    def _api(self, method: str, segs: list[str], q: dict, body: bytes) -> int:
        hub = self.hub
        if segs == ["whoami-v2"]:
            if self.hub.token and not self._authorized():
                raise _HubError(401, "Invalid user token")
            return self._json({"type": "user", "id": "0", "name": hub.user, "fullname": hub.user, "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})
        if segs == ["validate-yaml"] and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if segs == ["repos", "create"] and method == "POST":
            self._require_write()
            data = json.loads(body or b"{}")
            name, org = data.get("name"), data.get("organization") or hub.user
            repo_type = data.get("type") or "model"
            private = data.get("private", data.get("visibility") == "private")
            repo_id = f"{org}/{name}"
            with hub._lock:
                hub._create(repo_type, repo_id, bool(private))
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self._json({"url": f"{hub.url}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})
        if len(segs) == 2 and segs[0] in ("models", "datasets", "spaces"):  # a one-part id ("gpt2", "tyny")
            raise _HubError(404, "Repository Not Found", "RepoNotFound")
        if len(segs) < 3 or segs[0] not in ("models", "datasets", "spaces"):
            raise _HubError(404, f"no route for /api/{'/'.join(segs)}")
        repo_type, repo_id, rest = segs[0][:-1], f"{segs[1]}/{segs[2]}", segs[3:]
        auth = self._authorized()
        with hub._lock:  # the answer is made under the lock and sent after it (sending may be throttled)
            reply = self._api_repo(method, repo_type, repo_id, rest, q, body, auth)
        if reply is None:
            raise _HubError(404, f"no route for {method} /api/{'/'.join(segs)}")
        return self._json(*reply)

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], q: dict, body: bytes,
                  auth: bool):
        """(JSON, status, headers) of a repo endpoint, or None when there is no such endpoint."""
        hub = self.hub
        repo = hub._get_repo(repo_type, repo_id, auth)
        if not rest or rest[0] == "revision":
            if method != "GET":
                raise _HubError(405, "method not allowed")
            commit = hub._commit(repo, rest[1] if len(rest) > 1 else None)
            return self._info(repo, commit, blobs=_flag(q, "blobs")), 200, None
        what, args = rest[0], rest[1:]
        if what == "tree" and method == "GET" and args:
            return self._tree(repo, args[0], "/".join(args[1:]), q)
        if what == "paths-info" and method == "POST" and args:
            return self._paths_info(repo, args[0], body)
        if what == "preupload" and method == "POST" and args:
            self._require_write()
            return self._preupload(repo, args[0], body)
        if what == "commit" and method == "POST" and args:
            self._require_write()
            return self._commit_post(repo, args[0], body)
        if what == "branch" and args:
            self._require_write()
            return self._branch(repo, method, args[0], body)
        if what == "refs" and method == "GET":
            return ({"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o}
                                            for b, o in sorted(repo.branches.items())],
                               "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o}
                                        for t, o in sorted(repo.tags.items())], "converts": []}), 200, None
        if what == "commits" and method == "GET" and args:
            c: _Commit | None = hub._commit(repo, args[0])
            out = []
            while c is not None:
                out.append({"id": c.oid, "title": c.title, "message": c.description, "date": c.date,
                            "authors": [{"user": hub.user}]})
                c = repo.commits.get(c.parent) if c.parent else None
            return out, 200, None
        return None

    # -- endpoints -------------------------------------------------------------------------------

    def _info(self, repo: _Repo, commit: _Commit, *, blobs: bool) -> dict:
        siblings = []
        for p, e in sorted(commit.files.items()):
            s: dict = {"rfilename": p}
            if blobs:
                s.update(size=e.size, blobId=e.oid)
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": len(_lfs_pointer(e.sha256, e.size))}
            siblings.append(s)
        author = repo.repo_id.split("/", 1)[0]
        return {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "author": author,
                "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created, "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.files.values())}

    def _tree(self, repo: _Repo, rev: str, path: str, q: dict) -> int:
        commit = self.hub._commit(repo, rev)
        files = commit.files
        path = path.strip("/")
        if path and path in files:
            raise _HubError(404, f"{path} is a file, not a directory", "EntryNotFound")
        if path and not any(p.startswith(path + "/") for p in files):
            raise _HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        expand = _flag(q, "expand")
        entries = _tree(files, path, _flag(q, "recursive"))
        page = _PAGE_EXPAND if expand else _PAGE
        start = int((q.get("cursor") or ["0"])[0] or 0)
        chunk = entries[start:start + page]
        out = [_file_json(p, files[p], expand) if k == "file" else _folder_json(p, files, expand) for k, p in chunk]
        headers = {}
        if start + page < len(entries):
            base = f"{self.hub.url}/api/{repo.repo_type}s/{repo.repo_id}/tree/{quote(rev, safe='')}"
            if path:
                base += "/" + quote(path, safe="")
            params = "&".join(f"{k}={quote(v[0])}" for k, v in sorted(q.items()) if k != "cursor")
            headers["Link"] = f'<{base}?{params}&cursor={start + page}>; rel="next"'
        return out, 200, headers

    def _paths_info(self, repo: _Repo, rev: str, body: bytes) -> int:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            data = json.loads(body or b"{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand") or ["False"])[0].lower() in ("1", "true")
        files = self.hub._commit(repo, rev).files
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(_file_json(p, files[p], expand))
            elif p == "" or any(f.startswith(p + "/") for f in files):
                out.append(_folder_json(p, files, expand))
        return out, 200, None

    def _preupload(self, repo: _Repo, rev: str, body: bytes) -> int:
        data = json.loads(body or b"{}")
        files = self.hub._commit(repo, rev).files
        out = []
        for f in data.get("files", []):
            path, size = f["path"], int(f.get("size") or 0)
            lfs = self.hub._is_lfs_path(files, path, size)
            old = files.get(path)
            remote_oid = None
            if old is not None:
                remote_oid = old.sha256 if old.lfs else old.oid
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": remote_oid})
        return {"files": out, "commitOid": self.hub._commit(repo, rev).oid}, 200, None

    def _commit_post(self, repo: _Repo, rev: str, body: bytes) -> int:
        header: dict = {}
        ops: list[tuple] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                ops.append(("file", value["path"], data))
            elif key == "lfsFile":
                ops.append(("lfsFile", value["path"], value["oid"], value.get("size")))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, value["path"]))
            else:
                raise _HubError(400, f"unknown commit operation {key!r}")
        if not header:
            raise _HubError(400, "the commit payload has no header")
        commit = self.hub._apply(repo, rev, header.get("summary") or "commit", header.get("description") or "",
                                 header.get("parentCommit"), ops)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return ({"success": True, "commitOid": commit.oid, "commitMessage": commit.title,
                 "commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{commit.oid}",
                 "hookOutput": "", "pullRequestUrl": None}, 200, None)

    def _branch(self, repo: _Repo, method: str, name: str, body: bytes) -> int:
        if method == "DELETE":
            if name not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            del repo.branches[name]
            return {}, 200, None
        if method != "POST":
            raise _HubError(405, "method not allowed")
        if name in repo.branches:
            raise _HubError(409, f"Reference already exists: refs/heads/{name}")
        data = json.loads(body or b"{}")
        start = self.hub._commit(repo, data.get("startingPoint"))
        repo.branches[name] = start.oid
        return {}, 200, None

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


def _flag(q: dict, name: str) -> bool:
    v = (q.get(name) or ["false"])[0].lower()
    return v in ("1", "true", "yes")


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


# ------------------------------------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fusionrs_hf.testing.hub_server",
        description="Serve the Hugging Face Hub API on 127.0.0.1 (repos in memory, gone when it stops) for trying "
                    "`fusionrs push`, `fusionrs check`, datasets streaming and benchmarks without the real Hub. "
                    "Prints the environment to export, then serves until Ctrl-C.")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="X",
                   help="delay added before every answer, in milliseconds (default 0)")
    p.add_argument("--bandwidth-mbps", type=float, default=None, metavar="Y",
                   help="cap on the bytes the server sends (downloads; uploads are not capped), in megabits per "
                        "second, shared by all connections (default: no cap)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a :class:`HubServer` from a shell until Ctrl-C (or SIGTERM); exit 0 when stopped, 2 on bad options."""
    args = _parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        print(f"hub_server: error: --port {args.port} is not a port (0-65535)", file=sys.stderr)
        return 2
    if args.latency_ms < 0 or (args.bandwidth_mbps is not None and args.bandwidth_mbps <= 0):
        print("hub_server: error: --latency-ms must be >= 0 and --bandwidth-mbps > 0", file=sys.stderr)
        return 2
    bps = args.bandwidth_mbps * 1e6 / 8 if args.bandwidth_mbps else None
    server = HubServer(latency_s=args.latency_ms / 1000, bandwidth_bps=bps, port=args.port)
    try:
        server.start()
    except OSError as e:
        print(f"hub_server: error: cannot listen on 127.0.0.1:{args.port} ({e.strerror or e})", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    env = server.env()
    knobs = [f"latency {args.latency_ms:g} ms" if args.latency_ms else "no added latency",
             f"downloads capped at {args.bandwidth_mbps:g} Mbps" if bps else "no bandwidth cap"]
    print(f"# Hub API on {server.url} ({', '.join(knobs)}); no token needed. Repos are kept in memory until "
          "it stops.", flush=True)
    print("# In another shell, export these (HF_HUB_DISABLE_XET=1: the server offers LFS uploads, not xet):",
          flush=True)
    for k, v in env.items():
        print(f"export {k}={v}", flush=True)
    print("# Serving; press Ctrl-C to stop.", file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("# stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
