"""An in-process double of the ``HfApi`` methods `fusionrs push` calls, for tests without network.

It keeps what matters for push semantics: atomic commits (a commit applies all its operations or
none), a git-like history per branch with ``parent_commit`` checks, LFS objects stored by SHA-256
(uploaded once, deduplicated like the Hub's LFS/xet storage, kept even if the commit never
happens), ``list_repo_tree`` returning real ``RepoFile``/``RepoFolder`` objects with ``lfs.sha256``
and git blob ids, and real ``huggingface_hub`` error classes. Method signatures equal the installed
``HfApi``'s (``test_double_signatures_match_hfapi`` asserts it), so the double cannot drift.

Failure injection: ``fail_after_uploads = k`` makes the upload after the k-th one raise;
``fail_on_commit = n`` makes the n-th ``create_commit`` call raise (before applying anything);
``http_error_message`` makes every write raise ``HfHubHTTPError`` with that text; ``on_preupload`` (a
callable taking the list of additions) runs before each ``preupload_lfs_files`` call does anything, e.g. to
change the pusher's local repo mid-push.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import httpx2
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete
from huggingface_hub.errors import (
    BadRequestError,
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import DatasetInfo, RepoFile, RepoFolder, RepoUrl

ENDPOINT = "https://hub-double.invalid"
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"


class InjectedFailure(RuntimeError):
    """Raised by the double's failure injection (a stand-in for a dropped connection)."""


def _response(status: int, url: str, method: str = "GET") -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request(method, url))


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    lfs: frozenset[str]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


class HubDouble:
    """Stand-in for ``huggingface_hub.HfApi`` (dataset repos only)."""

    def __init__(self, endpoint: str | None = None, token: str | bool | None = None, library_name: str | None = None,
                 library_version: str | None = None, user_agent: dict | str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.endpoint = endpoint or ENDPOINT
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.uploads = 0
        self.uploaded_bytes = 0
        self.calls: list[str] = []
        self.fail_after_uploads: int | None = None
        self.fail_on_commit: int | None = None
        self.http_error_message: str | None = None
        self.on_preupload = None
        self._commit_calls = 0

    # ------------------------------------------------------------------ helpers for tests

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.branches[revision]].files)

    def history(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """Commits of a branch, oldest first."""
        repo = self.repos[repo_id]
        out, oid = [], repo.branches[revision]
        while oid is not None:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return out[::-1]

    @property
    def fs(self) -> DoubleHfFileSystem:
        return DoubleHfFileSystem(self)

    # ------------------------------------------------------------------ internals

    def _repo(self, repo_id: str, repo_type: str | None) -> Repo:
        if repo_type != "dataset":
            raise ValueError(f"double supports dataset repos only, got repo_type={repo_type!r}")
        if repo_id not in self.repos:
            raise RepositoryNotFoundError(f"404 Client Error. Repository Not Found for url: "
                                          f"{self.endpoint}/api/datasets/{repo_id}",
                                          response=_response(404, f"{self.endpoint}/api/datasets/{repo_id}"))
        return self.repos[repo_id]

    def _head(self, repo: Repo, revision: str | None) -> Commit:
        rev = revision or "main"
        if rev in repo.branches:
            return repo.commits[repo.branches[rev]]
        if rev in repo.commits:
            return repo.commits[rev]
        raise RevisionNotFoundError(f"404 Client Error. Revision Not Found for url: {self.endpoint}/api/datasets/"
                                    f"{repo.repo_id}/revision/{rev}",
                                    response=_response(404, f"{self.endpoint}/api/datasets/{repo.repo_id}"))

    def _maybe_http_error(self, url: str) -> None:
        if self.http_error_message is not None:
            raise HfHubHTTPError(self.http_error_message, response=_response(401, url, "POST"))

    def _new_commit(self, repo: Repo, parent: str | None, message: str, files: dict[str, bytes],
                    lfs: frozenset[str]) -> Commit:
        h = hashlib.sha1(f"{parent}\n{message}\n{len(repo.commits)}".encode())
        for p in sorted(files):
            h.update(p.encode() + b"\0" + hashlib.sha256(files[p]).digest())
        c = Commit(h.hexdigest(), parent, message, files, lfs)
        repo.commits[c.oid] = c
        return c

    @staticmethod
    def _is_lfs(path: str, size: int) -> bool:
        return path.endswith(".parquet") or size >= LFS_THRESHOLD

    # ------------------------------------------------------------------ HfApi methods

    def create_repo(self, repo_id, *, token=None, private=None, visibility=None, repo_type=None, exist_ok=False,
                    resource_group_id=None, region=None, space_sdk=None, space_hardware=None,
                    space_sleep_time=None, space_secrets=None, space_variables=None, space_volumes=None,
                    space_template=None):
        self.calls.append("create_repo")
        self._maybe_http_error(f"{self.endpoint}/api/repos/create")
        if repo_type != "dataset":
            raise ValueError("double supports dataset repos only")
        if repo_id in self.repos:
            if not exist_ok:
                raise HfHubHTTPError("409 Conflict: You already created this dataset repo",
                                     response=_response(409, f"{self.endpoint}/api/repos/create", "POST"))
        else:
            is_private = bool(private) if private is not None else visibility == "private"
            repo = Repo(repo_id, is_private)
            c = self._new_commit(repo, None, "initial commit", {".gitattributes": GITATTRIBUTES}, frozenset())
            repo.branches["main"] = c.oid
            self.repos[repo_id] = repo
        return RepoUrl(f"{self.endpoint}/datasets/{repo_id}", endpoint=self.endpoint)

    def create_branch(self, repo_id, *, branch, revision=None, token=None, repo_type=None, exist_ok=False):
        self.calls.append("create_branch")
        repo = self._repo(repo_id, repo_type)
        if branch in repo.branches:
            if not exist_ok:
                raise HfHubHTTPError("409 Conflict: branch exists",
                                     response=_response(409, f"{self.endpoint}/api/branch", "POST"))
            return
        repo.branches[branch] = self._head(repo, revision).oid

    def repo_info(self, repo_id, *, revision=None, repo_type=None, timeout=None, files_metadata=False, expand=None,
                  token=None):
        self.calls.append("repo_info")
        repo = self._repo(repo_id, repo_type)
        head = self._head(repo, revision)
        return DatasetInfo(id=repo_id, sha=head.oid, private=repo.private)

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, expand=False, revision=None,
                       repo_type=None, token=None):
        self.calls.append("list_repo_tree")
        repo = self._repo(repo_id, repo_type)
        head = self._head(repo, revision)
        prefix = (path_in_repo.strip("/") + "/") if path_in_repo else ""
        folders: set[str] = set()
        out: list[RepoFile | RepoFolder] = []
        for path in sorted(head.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            if not recursive and "/" in rest:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            for parent in PurePosixPath(rest).parents:
                if str(parent) != ".":
                    folders.add(prefix + str(parent))
            data = head.files[path]
            if path in head.lfs:
                sha = hashlib.sha256(data).hexdigest()
                out.append(RepoFile(path=path, size=len(data), oid=git_blob_id(lfs_pointer(sha, len(data))),
                                    lfs={"size": len(data), "oid": sha, "pointerSize": 134}))
            else:
                out.append(RepoFile(path=path, size=len(data), oid=git_blob_id(data)))
        folders_out = [RepoFolder(path=f, oid=hashlib.sha1(f.encode()).hexdigest()) for f in sorted(folders)]
        return iter(folders_out + out)

    def get_paths_info(self, repo_id, paths, *, expand=False, revision=None, repo_type=None, token=None):
        self.calls.append("get_paths_info")
        wanted = {p.strip("/") for p in ([paths] if isinstance(paths, str) else paths)}
        found = [e for e in self.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type=repo_type)
                 if e.path in wanted]
        self.calls.pop()  # the listing above is ours, not the caller's
        return found

    def preupload_lfs_files(self, repo_id, additions, *, token=None, repo_type=None, revision=None, create_pr=None,
                            num_threads=5, free_memory=True, gitignore_content=None):
        self.calls.append("preupload_lfs_files")
        if self.on_preupload is not None:
            self.on_preupload(list(additions))
        self._maybe_http_error(f"{self.endpoint}/api/datasets/{repo_id}/preupload/{revision or 'main'}")
        repo = self._repo(repo_id, repo_type)
        self._head(repo, revision)
        for op in additions:
            if op._is_uploaded:
                continue
            if op._upload_mode is None:
                op._upload_mode = "lfs" if self._is_lfs(op.path_in_repo, op.upload_info.size) else "regular"
            if op._upload_mode != "lfs":
                continue
            sha = op.upload_info.sha256.hex()
            if sha not in self.blobs:  # the LFS/xet store keeps objects by content: sent once
                if self.fail_after_uploads is not None and self.uploads >= self.fail_after_uploads:
                    raise InjectedFailure(f"connection dropped while uploading {op.path_in_repo}")
                with op.as_file() as f:
                    data = f.read()
                assert hashlib.sha256(data).hexdigest() == sha
                self.blobs[sha] = data
                self.uploads += 1
                self.uploaded_bytes += len(data)
            op._is_uploaded = True
            if free_memory:
                op.path_or_fileobj = b""

    def create_commit(self, repo_id, operations, *, commit_message, commit_description=None, token=None,
                      repo_type=None, revision=None, create_pr=None, num_threads=5, parent_commit=None,
                      run_as_future=False, _hot_reload=None):
        self.calls.append("create_commit")
        if run_as_future or create_pr:
            raise NotImplementedError("double: run_as_future/create_pr not supported")
        if not commit_message:
            raise ValueError("`commit_message` can't be empty, please pass a value.")
        url = f"{self.endpoint}/api/datasets/{repo_id}/commit/{revision or 'main'}"
        self._maybe_http_error(url)
        self._commit_calls += 1
        if self.fail_on_commit is not None and self._commit_calls >= self.fail_on_commit:
            raise InjectedFailure(f"connection dropped during commit #{self._commit_calls}")
        repo = self._repo(repo_id, repo_type)
        rev = revision or "main"
        if rev not in repo.branches:
            self._head(repo, rev)  # raises RevisionNotFoundError
            raise BadRequestError("commits go to branches", response=_response(400, url, "POST"))
        head = repo.commits[repo.branches[rev]]
        if parent_commit is not None and parent_commit != head.oid:
            raise HfHubHTTPError("412 Precondition Failed: A commit has happened since. Please refresh and try "
                                 "again.", response=_response(412, url, "POST"))
        operations = list(operations)
        adds = [op for op in operations if isinstance(op, CommitOperationAdd)]
        for op in adds:
            if op._is_committed:
                raise ValueError(f"CommitOperationAdd {op} has already being committed and cannot be reused.")
        self.preupload_lfs_files(repo_id, additions=adds, repo_type=repo_type, revision=revision,
                                 free_memory=False)
        # Build the whole new tree first: a commit applies entirely or not at all.
        files, lfs = dict(head.files), set(head.lfs)
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                if op._upload_mode == "lfs":
                    data = self.blobs[op.upload_info.sha256.hex()]
                    lfs.add(op.path_in_repo)
                else:
                    with op.as_file() as f:
                        data = f.read()
                    lfs.discard(op.path_in_repo)
                if op.path_in_repo == "README.md":
                    _validate_card(data, url)
                files[op.path_in_repo] = data
            elif isinstance(op, CommitOperationDelete):
                path = op.path_in_repo.rstrip("/")
                gone = [p for p in files if p == path or p.startswith(path + "/")]
                if not gone:
                    raise EntryNotFoundError(f"404 Client Error: {path} not found in {repo_id}@{rev}",
                                             response=_response(404, url, "POST"))
                for p in gone:
                    del files[p]
                    lfs.discard(p)
            else:
                raise NotImplementedError(f"double: {type(op).__name__} not supported")
        if files == head.files:  # the Hub skips empty commits and returns the head
            c = head
        else:
            c = self._new_commit(repo, head.oid, commit_message, files, frozenset(lfs))
            repo.branches[rev] = c.oid
        for op in adds:
            op._is_committed = True
        return CommitInfo(commit_url=f"{self.endpoint}/datasets/{repo_id}/commit/{c.oid}",
                          commit_message=commit_message, commit_description=commit_description or "", oid=c.oid,
                          _endpoint=self.endpoint)


def _validate_card(data: bytes, url: str) -> None:
    """What the Hub's YAML validation does for us: the card's front matter must parse."""
    import yaml

    text = data.decode("utf-8")
    if text.startswith("---\n"):
        try:
            yaml.safe_load(text.split("\n---\n", 1)[0][4:])
        except yaml.YAMLError as e:
            raise BadRequestError(f"400: invalid README.md metadata: {e}", response=_response(400, url, "POST")) \
                from None


class DoubleHfFileSystem:
    """The two ``HfFileSystem`` calls push makes to read remote parquet footers (``open``, ``size``)."""

    def __init__(self, hub: HubDouble) -> None:
        self.hub = hub

    def _resolve(self, path: str) -> bytes:
        from urllib.parse import unquote

        assert path.startswith("datasets/"), path
        owner, rest = path[len("datasets/"):].split("/", 1)
        name, rel = rest.split("/", 1)
        rev = "main"
        if "@" in name:
            name, rev = name.split("@", 1)
            rev = unquote(rev)
        try:
            return self.hub.files(f"{owner}/{name}", rev)[rel]
        except KeyError:
            raise FileNotFoundError(path) from None

    def open(self, path: str, mode: str = "rb"):
        import io

        assert mode == "rb"
        return io.BytesIO(self._resolve(path))

    def size(self, path: str) -> int:
        return len(self._resolve(path))
