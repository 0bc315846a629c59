"""The Hub's state: repos, their branches and commits, and the blob store (regular files and LFS objects),
kept in memory; :class:`_RepoStore` is mixed into :class:`~.server.HubServer`, whose ``__init__`` makes the
state."""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import threading
import time
from dataclasses import dataclass, field

from .errors import _HubError

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


class _RepoStore:
    """Repos and commits of a :class:`~.server.HubServer`; the ``_`` methods expect ``_lock`` held."""

    lfs_threshold: int
    _lock: threading.RLock
    _repos: dict[tuple[str, str], _Repo]
    _blobs: dict[str, bytes]
    _lfs: set[tuple[str, str, str]]
    _counter: int

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
