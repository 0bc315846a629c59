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

Layout: :mod:`.server` (:class:`HubServer`: start, stop, ``env()``), :mod:`.store` (repos, commits, blobs),
:mod:`.link_shaping` (bandwidth cap, injected faults), :mod:`.request_log`, :mod:`.handler` (the HTTP plumbing
and the top-level routes) with its endpoint mixins :mod:`.api_routes` (``/api/...``), :mod:`.lfs` and
:mod:`.resolve` (file downloads), :mod:`.json_shapes` (file / folder JSON), :mod:`.errors` and :mod:`.cli`
(``main``, run by ``__main__``).

From a shell (repos live in memory and are gone when it stops)::

    python -m fusionrs_hf.testing.hub_server [--port N] [--latency-ms X] [--bandwidth-mbps Y]

prints the ``export ...`` lines that point a client at it and serves until Ctrl-C. It needs no token, and
``fusionrs push`` sends none to a loopback endpoint unless one is set (HF_TOKEN or a stored login).
"""

from .cli import main as main
from .link_shaping import Fault
from .request_log import RequestRecord
from .server import HubServer
from .store import GITATTRIBUTES, LFS_THRESHOLD, git_blob_id

__all__ = ["HubServer", "Fault", "RequestRecord", "GITATTRIBUTES", "LFS_THRESHOLD", "git_blob_id"]
