"""Pushing to a Hub dataset repo through ``HfApi`` (:class:`_HubTarget`): the listing with LFS digests, commits
of at most ``MAX_FILES_PER_COMMIT`` files with the card in the last, verification after each commit, and telling
an unreachable Hub from an HTTP answer."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from ..card import CARD_NAME, ShardInfo, shard_info
from ..card_assets import ASSET_PATHS
from ..layout import DEFAULT_LAYOUT
from ..sources import REGISTRY_FILE
from ..storage import describe, hub_endpoint
from .local import _file_git_blob_id, git_blob_id
from .plan import (
    UPLOAD_GROUP,
    LocalFile,
    PushError,
    PushPlan,
    RemoteFile,
    Transfer,
    _default_message,
    logger,
    transfer_text,
)
from .sender import _Sender


def make_api(token: str | bool | None, endpoint: str | None = None):
    """The real client, for ``endpoint`` (None: ``HF_ENDPOINT``, else huggingface.co) with ``token``. Every call
    push makes to the Hub goes through it or takes its ``endpoint`` and ``token`` (the LFS batch probe, the
    footers read through ``HfFileSystem``), so what ``--storage-option endpoint=/token=`` name is where the
    files go and what is sent. (Tests swap this for an in-process double.)"""
    from huggingface_hub import HfApi

    from .. import __version__

    return HfApi(endpoint=endpoint, token=token, library_name="fusionrs-hf", library_version=__version__)


def read_sample_ids(fs, path: str) -> list[str]:
    """The ``sample_id`` column of one shard on ``fs``: its footer and that column's pages only (none for a
    file without that column: it holds no FusionRS rows to compare)."""
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        if "sample_id" not in pf.schema_arrow.names:
            return []
        return [s for s in pf.read(columns=["sample_id"]).column(0).to_pylist() if s is not None]


def _is_pushed_path(rel: str) -> bool:
    """Remote paths push manages: README.md, fusionrs_sources.json, the card's pictures (assets/...) and parquet
    files under data/ (never .gitattributes etc.)."""
    return rel in (CARD_NAME, REGISTRY_FILE, *ASSET_PATHS) or (rel.startswith("data/") and rel.endswith(".parquet"))


class _HubTarget:
    """A Hub dataset repo reached through ``HfApi`` (or a double with the same methods)."""

    kind = "hub"

    def __init__(self, repo_id: str, api, revision: str | None, private: bool, hub_fs=None,
                 fs_options: dict | None = None) -> None:
        self.repo_id, self.api, self.revision, self.private = repo_id, api, revision, private
        self._hub_fs = hub_fs
        self._fs_options = {k: v for k, v in (fs_options or {}).items() if k not in ("endpoint", "token")}
        """Other ``--storage-option`` values, for ``HfFileSystem`` (as ``check`` and ``load`` pass them)."""
        self.list_revision = revision
        self.parent: str | None = None
        self.warnings: list[str] = []
        self.wrote = False
        """Something was written to the remote (a failure after that is one to resume)."""
        self.committed = False
        """A commit of files went in (a created repo or branch alone holds none of ours)."""
        self.transfer = Transfer()
        """What the commits carried: sent, already in the repo's LFS store, or unknown (:meth:`_stored`)."""

    @property
    def label(self) -> str:
        return f"hf://datasets/{self.repo_id}" + (f"@{self.revision}" if self.revision else "")

    @property
    def card_repo_id(self) -> str:
        return self.repo_id

    @property
    def card_location(self):
        """Where the card's Load snippet reads: this Hub repo."""
        return describe(self.repo_id)

    @property
    def endpoint(self) -> str:
        ep = getattr(self.api, "endpoint", None)
        return ep.rstrip("/") if isinstance(ep, str) else hub_endpoint()

    def _info(self, revision: str | None):
        return self.api.repo_info(self.repo_id, repo_type="dataset", revision=revision)

    def prepare(self, dry_run: bool) -> bool:
        """Find the repo and branch and remember the head to commit on; True if the repo exists.

        Nothing is created here (:meth:`create` does, right before the first upload), so a push that
        fails while planning leaves the remote untouched.
        """
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        self._create: str | None = None
        try:
            info = self._info(self.revision)
        except RevisionNotFoundError:
            if dry_run:
                self.warnings.append(f"branch {self.revision!r} does not exist; it will be created from main")
            self.list_revision = None  # the branch will start from main: plan against main
            info = self._info(None)
            self._create = "branch"
        except RepositoryNotFoundError:
            self._create = "repo"
            return False
        if getattr(info, "private", None) is not None and bool(info.private) != self.private:
            self.warnings.append(
                f"{self.repo_id} exists and is {'private' if info.private else 'public'}; push does not change "
                "the visibility of an existing repo (use the repo settings on the Hub)"
            )
        self.parent = getattr(info, "sha", None)
        return True

    def create(self) -> None:
        """Create the repo and/or branch :meth:`prepare` found missing."""
        self.wrote = True
        if self._create == "repo":
            self.api.create_repo(self.repo_id, repo_type="dataset", private=self.private, exist_ok=True)
            logger.info("created %s repo %s", "private" if self.private else "public", self.repo_id)
        if self._create and self.revision:
            self.api.create_branch(self.repo_id, branch=self.revision, repo_type="dataset", exist_ok=True)
        if self._create:
            self.parent = getattr(self._info(self.revision), "sha", None)
            self.list_revision = self.revision
        self._create = None

    def list(self) -> dict[str, RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        out = {}
        for e in self.api.list_repo_tree(self.repo_id, recursive=True, repo_type="dataset",
                                         revision=self.list_revision):
            if isinstance(e, RepoFile) and _is_pushed_path(e.path):
                sha = e.lfs.sha256 if e.lfs is not None else None
                out[e.path] = RemoteFile(e.path, int(e.size), sha, e.blob_id)
        return out

    def same(self, local: LocalFile, remote: RemoteFile) -> bool:
        if remote.sha256:
            return remote.sha256 == local.sha256
        if remote.size != local.size:
            return False
        return remote.blob_id == (local.blob_id or _file_git_blob_id(local.path))

    def same_bytes(self, data: bytes, remote: RemoteFile) -> bool:
        if remote.sha256:
            return remote.sha256 == hashlib.sha256(data).hexdigest()
        return remote.blob_id == git_blob_id(data)

    def _fs_root(self):
        if self._hub_fs is None:
            from huggingface_hub import HfFileSystem

            # the client's endpoint and token, never HF_ENDPOINT / the stored login behind its back
            self._hub_fs = HfFileSystem(**self._fs_options, endpoint=getattr(self.api, "endpoint", None),
                                        token=getattr(self.api, "token", None))
        root = f"datasets/{self.repo_id}"
        if self.list_revision:
            root += "@" + quote(self.list_revision, safe="")
        return self._hub_fs, root

    def remote_shard_info(self, rel: str) -> ShardInfo | None:
        name = getattr(self, "layout", DEFAULT_LAYOUT).parse_shard_path(rel)
        if name is None:
            return None
        fs, root = self._fs_root()
        return shard_info(fs, root, name)

    def remote_sample_ids(self, rel: str) -> list[str]:
        fs, root = self._fs_root()
        return read_sample_ids(fs, f"{root}/{rel}")

    def remote_bytes(self, rel: str) -> bytes:
        fs, root = self._fs_root()
        with fs.open(f"{root}/{rel}", "rb") as f:
            return f.read()

    def _stored(self, ops: list) -> dict[str, bool]:
        """Path -> whether the repo's LFS store already holds that file's object, asked before it is uploaded.

        huggingface_hub marks every LFS addition uploaded after ``preupload_lfs_files``, also the ones the
        server said it had (an interrupted push's objects), and keeps that answer to itself; the Git LFS
        batch API (``huggingface_hub.lfs.post_lfs_batch_info``, the request the client makes) answers it:
        an object without upload actions is stored already. One request per 100 files. Paths missing from the
        answer (an API double, a batch error) count as unknown, and the report says "committed" for them.
        """
        from huggingface_hub import HfApi

        if not ops or not isinstance(self.api, HfApi):
            return {}
        from huggingface_hub.lfs import post_lfs_batch_info

        token = self.api.token if isinstance(self.api.token, str) else None
        out: dict[str, bool] = {}
        for i in range(0, len(ops), 100):
            chunk = ops[i:i + 100]
            try:
                actions, _errors, _ = post_lfs_batch_info(
                    upload_infos=[op.upload_info for op in chunk], token=token, repo_type="dataset",
                    repo_id=self.repo_id, revision=quote(self.revision, safe="") if self.revision else None,
                    endpoint=self.api.endpoint, headers=getattr(self.api, "headers", None) or None)
            except Exception as e:  # noqa: BLE001 - only the report depends on it; the upload itself will tell
                logger.debug("LFS batch probe for %s failed (%s); reporting committed bytes", self.repo_id,
                             type(e).__name__)
                continue
            have = {a.get("oid"): a.get("actions") is None for a in actions}
            for op in chunk:
                got = have.get(op.upload_info.sha256.hex())
                if got is not None:
                    out[op.path_in_repo] = got
        return out

    def _tally(self, ops: list, stored: dict[str, bool]) -> Transfer:
        """Count one commit's additions: inline (regular) files are sent in the commit itself; LFS ones were
        sent unless :meth:`_stored` said the store had them, unknown where it could not tell."""
        from huggingface_hub import CommitOperationAdd

        t = Transfer(dedup=self._xet())
        for op in ops:
            if not isinstance(op, CommitOperationAdd):
                continue
            # the mode the server chose (set by preupload; huggingface_hub has no public accessor for it)
            regular = getattr(op, "_upload_mode", None) == "regular"
            t.add(op.upload_info.size, True if regular else (None if op.path_in_repo not in stored
                                                               else not stored[op.path_in_repo]))
        return t

    def _xet(self) -> bool:
        """Whether the real client uploads through xet here (chunk dedup: what it sends can be less)."""
        from huggingface_hub import HfApi, constants

        if not isinstance(self.api, HfApi) or constants.HF_HUB_DISABLE_XET:
            return False
        import importlib.util

        return importlib.util.find_spec("hf_xet") is not None

    def _verify(self, commit: str | None, sent: dict[str, tuple[int, str, str | None]]) -> None:
        """The remote at ``commit`` holds exactly what was sent: size, and LFS SHA-256 (or git blob id)."""
        if not sent or not hasattr(self.api, "get_paths_info"):
            return
        got = {}
        paths = sorted(sent)
        for i in range(0, len(paths), 100):
            for e in self.api.get_paths_info(self.repo_id, paths[i:i + 100], repo_type="dataset",
                                             revision=commit or self.revision):
                got[e.path] = e
        for rel in paths:
            size, sha, blob = sent[rel]
            e = got.get(rel)
            if e is None or not hasattr(e, "size"):
                raise PushError(f"remote {rel} is missing after commit {commit}; re-run the same command")
            lfs = getattr(e, "lfs", None)
            have_sha = getattr(lfs, "sha256", None) if lfs is not None else None
            if int(e.size) != size or (have_sha is not None and have_sha != sha) \
                    or (have_sha is None and blob is not None and getattr(e, "blob_id", blob) != blob):
                raise PushError(f"remote {rel} after commit {commit} is not what was sent ({int(e.size)} bytes, "
                                f"sha256 {have_sha or '?'}; sent {size} bytes, sha256 {sha}); re-run the same command")

    def apply(self, plan: PushPlan, *, message: str | None, max_files: int, bar) -> list[str]:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        from .. import __version__

        files = [f for f, _ in plan.upload]
        sender: _Sender = plan.sender
        batches = [files[i:i + max_files] for i in range(0, len(files), max_files)] or [[]]
        # README.md (and the repo's sources file and the card's pictures) ride with the last shard(s); keep that
        # final commit within max_files too.
        reserve = 1 + (plan.sources != "unchanged") + len(plan.assets_to_send)
        k = max(1, max_files - reserve)
        if (plan.readme != "unchanged" or files) and len(batches[-1]) + reserve > max_files and k < len(batches[-1]):
            batches[-1], tail = batches[-1][:-k], batches[-1][-k:]
            batches.append(tail)
        base = message or _default_message(plan)
        commits: list[str] = []
        done = 0
        # what the last commit carries besides shards, as planned (the bar's total was made of these numbers)
        tail_files = plan.upload_files - len(files)
        tail_bytes = plan.upload_bytes - sum(f.size for f in files)
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            ops: list = []
            snaps: list[LocalFile] = []
            for planned in batch:  # snapshot now (copy + hash, one read): that copy is what gets sent
                f = sender.take(planned)
                if f is None:  # vanished: handled (named in a warning), so the bar moves past it
                    done += 1
                    bar.update(planned.size)
                    continue
                op = CommitOperationAdd(path_in_repo=f.relpath, path_or_fileobj=str(f.path))
                if op.upload_info.sha256.hex() != f.sha256:
                    raise PushError(f"the snapshot of {f.relpath} changed on disk before upload; re-run the same command")
                ops.append(op)
                snaps.append(f)
            sent = {f.relpath: (f.size, f.sha256, f.blob_id) for f in snaps}
            stored = self._stored(ops)  # before the upload: afterwards the store holds them all
            # through xet the LFS batch answer is not known to say what the store holds: a wrong "stored" there
            # would commit a pointer the Hub refuses on every re-run, so xet pushes offer every file as before
            trust_store = not self._xet()
            todo = []
            for op, f in zip(ops, snaps, strict=True):
                if trust_store and stored.get(op.path_in_repo) and op.upload_info.size:
                    _mark_on_store(op)  # an interrupted push's object: the commit only names its digest
                    sender.snapshot.drop(f.path)
                    done += 1
                    bar.update(f.size)
                else:
                    todo.append((op, f))
            for g in range(0, len(todo), UPLOAD_GROUP):
                group = todo[g:g + UPLOAD_GROUP]
                self.api.preupload_lfs_files(self.repo_id, additions=[op for op, _ in group], repo_type="dataset",
                                             revision=self.revision)
                for op, f in group:
                    if getattr(op, "_upload_mode", None) == "lfs" and getattr(op, "_is_uploaded", False):
                        sender.snapshot.drop(f.path)  # on the LFS store: the commit only names its digest
                done += len(group)
                bar.update(sum(f.size for _, f in group))
                bar.set_description(f"push {done}/{plan.upload_files} files")
            bar.set_description(f"push {done}/{plan.upload_files} files")
            if last:
                if plan.sources != "unchanged":  # the repo's own sources, declared beside the card
                    ops.append(CommitOperationAdd(path_in_repo=REGISTRY_FILE, path_or_fileobj=plan.sources_bytes))
                    sent[REGISTRY_FILE] = (len(plan.sources_bytes), hashlib.sha256(plan.sources_bytes).hexdigest(),
                                           git_blob_id(plan.sources_bytes))
                readme = sender.final_card()  # from what was actually sent
                pictures = []
                for rel, data in sender.final_assets().items():  # the card's pictures, with the card
                    pictures.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data))
                    sent[rel] = (len(data), hashlib.sha256(data).hexdigest(), git_blob_id(data))
                ops.extend(pictures)
                stored.update(self._stored(pictures))  # LFS by name; the card and sources file go inline
                if readme is not None:
                    ops.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=readme))
                    sent[CARD_NAME] = (len(readme), hashlib.sha256(readme).hexdigest(), git_blob_id(readme))
                ops.extend(CommitOperationDelete(path_in_repo=p) for p in plan.delete)
            if not ops:  # every file of this batch vanished (and, if last, nothing else to commit)
                continue
            self.wrote = True
            title = base if len(batches) == 1 else f"{base} [{i + 1}/{len(batches)}]"
            info = self.api.create_commit(
                self.repo_id, operations=ops, commit_message=title,
                commit_description=f"Pushed with fusionrs-hf {__version__} (`fusionrs push`).",
                repo_type="dataset", revision=self.revision, parent_commit=self.parent,
            )
            self.parent = getattr(info, "oid", None) or self.parent
            self.committed = True
            commits.append(getattr(info, "oid", str(info)))
            self._verify(getattr(info, "oid", None), sent)
            logger.info("commit %s: %d file(s)%s", commits[-1], len(ops), " (final, with README.md)" if last else "")
            t = self._tally(ops, stored)
            for k in ("sent_files", "sent_bytes", "had_files", "had_bytes", "unknown_files", "unknown_bytes"):
                setattr(self.transfer, k, getattr(self.transfer, k) + getattr(t, k))
            self.transfer.dedup = t.dedup
            gone = sum(1 for op in ops if isinstance(op, CommitOperationDelete))
            bar.line(f"commit {len(commits)}/{len(batches)} {str(commits[-1])[:10]}: {transfer_text(t)}"
                     + (f", {gone} deleted" if gone else "") + (" (with README.md)" if CARD_NAME in sent else ""))
            if last:  # the sources file, the pictures and the card rode in this commit: they count too
                done += tail_files
                bar.update(tail_bytes)
                bar.set_description(f"push {done}/{plan.upload_files} files")
        return commits


def _mark_on_store(op) -> None:
    """Commit ``op`` as a pointer to an object the repo's LFS store already holds (:meth:`_HubTarget._stored`
    said so, by its SHA-256 and size), without offering it to ``preupload_lfs_files`` again.

    These are the fields ``preupload_lfs_files`` itself sets on an addition it has uploaded (huggingface_hub
    has no public way to say "this one is on the store"); ``create_commit`` then names it as an ``lfsFile``
    and the server refuses the commit if the object were missing, so a wrong answer cannot commit a gap."""
    op._upload_mode = "lfs"
    op._should_ignore = False
    op._is_uploaded = True


def _is_unreachable(e: BaseException) -> bool:
    """A transport failure (no answer, refused, DNS, timeout) or offline mode, not an HTTP answer."""
    import httpx2

    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, httpx2.TransportError | ConnectionError | TimeoutError):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _offline_error(e: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OfflineModeIsEnabled):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False
