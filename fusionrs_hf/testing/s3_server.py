"""A real S3 API on 127.0.0.1: moto's server (``moto[server]``) in a thread, with every request counted.

``s3fs``/``boto3`` talk to it over HTTP exactly as to AWS (``endpoint_url=server.url``, any key and
secret), so the tests see what a user with an S3-compatible store sees: listings, ranged GETs, PUTs. The
request log (:attr:`S3Server.requests`, :meth:`S3Server.count`) tells how many objects were written, e.g.
that a re-push of an unchanged repo sends none. Needs ``moto[server]`` (the ``[test]`` extra).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["S3Server", "S3Request"]


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str
    query: str
    status: int


class S3Server:
    """``with S3Server() as s3: s3.storage_options`` -> options for s3fs / ``storage_options=``."""

    key = "testing-access-key"
    secret = "testing-secret-key"

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.requests: list[S3Request] = []

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the server is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options for this server (credentials included: for the test's own calls)."""
        return {"endpoint_url": self.url, "key": self.key, "secret": self.secret}

    def env(self) -> dict[str, str]:
        """Environment variables by which boto-based clients (s3fs) find this server's credentials."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> S3Server:
        if self._server is not None:
            return self
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        log, lock = self.requests, self._lock

        def counting(environ, start_response):
            seen = {}

            def sr(status, headers, exc_info=None):
                seen["status"] = int(status.split(" ", 1)[0])
                return start_response(status, headers, exc_info)

            out = app(environ, sr)
            with lock:
                log.append(S3Request(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""),
                                     environ.get("QUERY_STRING", ""), seen.get("status", 0)))
            return out

        class _Quiet(MotoRequestHandler):
            def log_request(self, *a, **k) -> None:
                pass

        self._server = make_server("127.0.0.1", self._port, counting, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fusionrs-s3-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method)
                       and (path_prefix is None or r.path.startswith(path_prefix)))

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.key, aws_secret_access_key=self.secret,
                     region_name="us-east-1").create_bucket(Bucket=name)
