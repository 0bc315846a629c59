"""Upload a local FusionRS repo folder to a Hub dataset repo (or any fsspec URL), sending only new or
changed shards, with the regenerated README.md in the same commit as the last shards it describes.

What it does, in order:
  1. runs `fusionrs check --fast` on the local folder and refuses a failing repo (--skip-check overrides);
  2. plans: lists the remote files with their SHA-256 (LFS/xet oid, or git blob id for small files) and
     compares them with the local shards; prints the plan (files, bytes) and a rights summary of the rows
     it will upload (per source / rights_code);
  3. uploads new/changed shards in commits of at most 50 files; the last commit also carries README.md
     (configs + dataset_info counts re-rendered from every shard the remote will hold) and, with --prune,
     the deletions, so a reader never sees a card that names missing files.

What is uploaded is a snapshot: right before a file is sent (one commit's files at a time on the Hub, one
file at a time otherwise) it is copied to a private temporary folder (``$FUSIONRS_PUSH_TMPDIR``, else the
system one) while it is hashed, in one read; the upload, the remote verification and the card all use that
copy. The card is rendered last, from the footers of exactly the bytes sent (plus the unchanged shards,
whose counts come from the same read that hashed them, and the remote-only ones kept), so a repo that
changes during the push (a build still writing) never leaves a remote whose card disagrees with its shards;
a file rewritten after the plan is sent as it is then, one that vanished is left out, and both are named in a
warning. A file that vanishes, keeps changing or is not complete parquet while push plans ends the push
before anything is written, with one line naming it (exit 2). After each commit (Hub: size and LFS SHA-256
or git blob id of every path, via ``get_paths_info``) or write (fsspec: size, and the SHA-256 of the bytes
read back) the remote is checked against the snapshot; the fsspec manifest records the digest read back.

Push removes only temporary files it made (``.NAME.PID-RANDOM.fusionrs-tmp`` beside a file it manages,
from a push that is no longer running, or the older ``NAME.fusionrs-tmp``), and says so in one line when it
replaces a destination README.md that fusionrs did not write.

Re-running after an interruption uploads only what is missing and ends in the same remote state; a re-push
of an unchanged repo uploads 0 bytes and makes no commit. Remote files are never deleted without --prune
(and --prune only deletes parquet files under data/). New Hub repos are created private unless --public.
Shards that exist only on the remote are kept, and the card counts them (their parquet footers are read).
The token comes from HF_TOKEN or the stored login (`hf auth login`) and is never printed.

Examples:
  fusionrs push ./my-fusionrs me/fusionrs --dry-run
  fusionrs push ./my-fusionrs me/fusionrs --message "add RS5M batch b2"
  fusionrs push ./my-fusionrs s3://bucket/fusionrs --prune
  fusionrs push ./my-fusionrs file:///data/mirror/fusionrs
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import os
import shutil
import struct
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from . import secrets as _secrets
from .atomic import atomic_open, tmp_target, writer_alive
from .card import CARD_NAME, ShardInfo, render_card, shard_info
from .card_assets import ASSET_PATHS, render_assets
from .errors import CliError
from .layout import DEFAULT_LAYOUT, SHARD_TEMPLATE, ShardName, layout_for, list_shards, parse_shard_path
from .sources import REGISTRY_FILE
from .storage import HubUnreachableError, describe, hub_endpoint, locate

logger = logging.getLogger(__name__)
logger.addFilter(_secrets.SCRUB_FILTER)

MAX_FILES_PER_COMMIT = 50
"""The Hub recommends commits of a few dozen files; a failed commit then costs little to redo."""
UPLOAD_GROUP = 5
"""Files handed to one ``preupload_lfs_files`` call: parallel within a group, progress after each group."""
MANIFEST_NAME = ".fusionrs-push.json"
"""fsspec targets only: SHA-256 of what push wrote, so a re-push need not re-read remote files of equal size."""
TMP_SUFFIX = ".fusionrs-tmp"
SNAPSHOT_ENV = "FUSIONRS_PUSH_TMPDIR"
"""Where the upload snapshot is kept (default: the system temp folder); needs room for one commit's files."""
SAMPLE_MARKER = "This repository is a synthetic sample."
SYNTHETIC_IR_MARKER = "**Synthetic infrared.**"
TERMS_WARNING = (
    "The terms of the source datasets (RS5M, SkyScript, NWPU, RSICD, RSITMD) apply to every uploaded row; "
    "publishing does not grant rights. Make sure you may redistribute these images, and keep the repo "
    "private unless you may. The `ir` images are synthetic (DiffV2IR), as the card states."
)
_CHUNK = 8 * 1024 * 1024
_TAIL = 2 * _CHUNK
"""Bytes kept from the end of a file while it is hashed: its parquet footer is parsed from them."""
_READ_TRIES = 3


# --------------------------------------------------------------------------------------------- secrets


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Text safe to show: :func:`fusionrs_hf.secrets.scrub` (the one filter every output path uses)."""
    return _secrets.scrub(text, secrets)


def make_api(token: str | None):
    """The real client (tests swap this for an in-process double)."""
    from huggingface_hub import HfApi

    from . import __version__

    return HfApi(token=token, library_name="fusionrs-hf", library_version=__version__)


# --------------------------------------------------------------------------------------------- data


class PushError(Exception):
    """The push failed; the message is safe to print (no token). Exit code 1."""


class LocalRepoError(PushError):
    """A local file push must upload cannot be read consistently (it vanished, kept changing, or is not a
    complete parquet file). Raised before anything is written; exit code 2."""


class PushHubUnreachable(PushError, HubUnreachableError):
    """The Hub did not answer (or ``HF_HUB_OFFLINE`` is set) before anything was written: both a
    :class:`PushError` and the one error type of every entry point, :class:`~fusionrs_hf.storage.HubUnreachableError`."""

    def __init__(self, message: str, *, repo: str = "", endpoint: str = "", offline: bool = False) -> None:
        HubUnreachableError.__init__(self, message, repo=repo, endpoint=endpoint, offline=offline)


class CheckFailed(PushError):
    """`fusionrs check --fast` found problems in the local repo; nothing was uploaded."""

    def __init__(self, report: Any) -> None:
        self.report = report
        findings = list(getattr(report, "findings", []) or [])
        head = "; ".join(_finding_text(f) for f in findings[:3])
        more = f" (+{len(findings) - 3} more)" if len(findings) > 3 else ""
        super().__init__(
            f"local repo fails `fusionrs check --fast` ({len(findings)} finding(s)): {head}{more}; "
            "fix it, or pass --skip-check to push anyway"
        )


def _finding_text(f: Any) -> str:
    loc = f.location() if hasattr(f, "location") else ""
    msg = getattr(f, "message", str(f))
    return f"{loc}: {msg}" if loc else msg


@dataclass(frozen=True)
class LocalFile:
    relpath: str
    path: Path
    """The bytes push sends: the snapshot copy for an upload, else the repo file that was hashed."""
    size: int
    sha256: str | None
    """SHA-256 of the bytes; None for a planned upload not hashed yet (its snapshot is)."""
    info: ShardInfo | None = None
    """Footer counts of exactly these bytes (what the card says about this shard)."""
    source: Path | None = None
    """The file in the local repo."""
    stat: tuple[int, int, int] | None = None
    """(size, mtime_ns, inode) of ``source`` when it was read; a later difference means it changed."""
    blob_id: str | None = None
    """Git blob id of the bytes, when a remote without SHA-256 needs it."""


@dataclass(frozen=True)
class RemoteFile:
    relpath: str
    size: int
    sha256: str | None = None
    """Content SHA-256 when the remote knows it (Hub LFS/xet oid, fsspec manifest)."""
    blob_id: str | None = None
    """Git blob id (Hub, non-LFS files)."""


@dataclass
class PushPlan:
    """What a push will do; computed before anything is written."""

    target: str
    revision: str | None
    upload: list[tuple[LocalFile, str]] = field(default_factory=list)
    """(file, "new" | "changed")."""
    unchanged: list[str] = field(default_factory=list)
    readme: str = "unchanged"
    """"new" | "changed" | "unchanged"."""
    readme_bytes: bytes = b""
    delete: list[str] = field(default_factory=list)
    keep_remote_only: list[str] = field(default_factory=list)
    rights: list[dict] = field(default_factory=list)
    repo_exists: bool = True
    card_shards: list[ShardInfo] = field(default_factory=list)
    """What the card was rendered from: the footers of the bytes uploaded, unchanged or kept remotely."""
    sender: Any = field(default=None, repr=False)
    """The :class:`_Sender` that snapshots each file right before it is sent."""
    layout: Any = field(default=None, repr=False)
    """The local repo's layout (its own sources, from ``fusionrs_sources.json``)."""
    sources: str = "unchanged"
    """``fusionrs_sources.json``: "new" | "changed" | "unchanged" (absent locally: unchanged)."""
    sources_bytes: bytes = b""
    assets: dict[str, bytes] = field(default_factory=dict)
    """The card's pictures (``assets/...``, :mod:`fusionrs_hf.card_assets`) as the remote will hold them."""
    assets_state: dict[str, str] = field(default_factory=dict)
    """Per picture: "new" | "changed" | "unchanged"."""

    @property
    def assets_to_send(self) -> list[str]:
        return [rel for rel, state in sorted(self.assets_state.items()) if state != "unchanged"]

    @property
    def upload_bytes(self) -> int:
        return (sum(f.size for f, _ in self.upload) + (len(self.readme_bytes) if self.readme != "unchanged" else 0)
                + (len(self.sources_bytes) if self.sources != "unchanged" else 0)
                + sum(len(self.assets[rel]) for rel in self.assets_to_send))

    @property
    def upload_files(self) -> int:
        return (len(self.upload) + (self.readme != "unchanged") + (self.sources != "unchanged")
                + len(self.assets_to_send))

    @property
    def empty(self) -> bool:
        return (not self.upload and self.readme == "unchanged" and not self.delete and self.sources == "unchanged"
                and not self.assets_to_send)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "revision": self.revision,
            "repo_exists": self.repo_exists,
            "upload": [{"path": f.relpath, "bytes": f.size, "reason": why} for f, why in self.upload],
            "readme": self.readme,
            "assets": dict(sorted(self.assets_state.items())),
            "delete": list(self.delete),
            "keep_remote_only": list(self.keep_remote_only),
            "unchanged": len(self.unchanged),
            "upload_files": self.upload_files,
            "upload_bytes": self.upload_bytes,
            "rights": list(self.rights),
        }


@dataclass
class PushResult:
    ok: bool
    plan: PushPlan
    dry_run: bool = False
    check: dict | None = None
    commits: list[str] = field(default_factory=list)
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "ok": self.ok, "dry_run": self.dry_run, "plan": self.plan.to_dict(), "check": self.check,
            "commits": list(self.commits), "uploaded_files": self.uploaded_files,
            "uploaded_bytes": self.uploaded_bytes, "warnings": list(self.warnings), "error": self.error,
            "terms_warning": TERMS_WARNING,
        }


# --------------------------------------------------------------------------------------------- hashing


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob; what the Hub reports as ``blob_id`` for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _file_git_blob_id(path: Path) -> str:
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ino


def _footer_info(name: ShardName, tail: bytes, size: int) -> ShardInfo:
    """Footer counts from the last bytes of a parquet file (the footer is self-contained)."""
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError("no parquet footer (the file does not end in PAR1)")
    (n,) = struct.unpack("<i", tail[-8:-4])
    if n <= 0 or n + 8 > len(tail) or n + 12 > size:
        raise ValueError(f"footer length {n} does not fit the file")
    md = pq.ParquetFile(pa.BufferReader(b"PAR1" + tail[-(n + 8):])).metadata
    nbytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    return ShardInfo(name, md.num_rows, nbytes, size)


def read_local(local: Path, name: ShardName, copy_to: Path | None = None, *, blob: bool = False) -> LocalFile:
    """Hash one local shard in a single read (optionally copying it to ``copy_to`` on the way), and take its
    footer counts from the same bytes.

    The file's (size, mtime, inode) must be the same before and after the read and equal the bytes read,
    else it is read again (it was being rewritten); after a few tries, or when it vanished or has no
    complete footer, :class:`LocalRepoError` names it.
    """
    rel = name.path
    src = local / rel
    for _ in range(_READ_TRIES):
        h, tail, n = hashlib.sha256(), bytearray(), 0
        try:
            with open(src, "rb") as f:
                st0 = os.fstat(f.fileno())
                g = hashlib.sha1(b"blob %d\0" % st0.st_size) if blob else None
                out = open(copy_to, "wb") if copy_to is not None else None  # noqa: SIM115 - closed below
                try:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        if g is not None:
                            g.update(chunk)
                        if out is not None:
                            out.write(chunk)
                        n += len(chunk)
                        tail += chunk
                        del tail[:-_TAIL]
                finally:
                    if out is not None:
                        out.close()
            st1 = os.stat(src)
        except FileNotFoundError:
            raise LocalRepoError(f"local {rel} disappeared while push was reading it (is something rewriting "
                                 "the repo, a build still running?)") from None
        if n == st0.st_size and _stat_key(st0) == _stat_key(st1):
            break
    else:
        raise LocalRepoError(f"local {rel} kept changing while push read it (is a build still writing it?)")
    try:
        info = _footer_info(name, bytes(tail), n)
    except (ValueError, pa.ArrowException) as e:
        raise LocalRepoError(f"local {rel} is not a complete parquet file ({e})") from None
    return LocalFile(rel, copy_to if copy_to is not None else src, n, h.hexdigest(), info, src, _stat_key(st0),
                     g.hexdigest() if g is not None else None)


class _Snapshot:
    """A private folder with copies of the files being uploaded; removed when the push ends."""

    def __init__(self) -> None:
        self.dir: Path | None = None

    def path_for(self, rel: str) -> Path:
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="fusionrs-push-", dir=os.environ.get(SNAPSHOT_ENV) or None))
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def owns(self, path: Path) -> bool:
        return self.dir is not None and self.dir in path.parents

    def drop(self, path: Path) -> None:
        """Remove one copy early (its bytes are on the remote already)."""
        if self.owns(path):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def rights_summary(files: Iterable[Path]) -> list[dict]:
    """Rows per (source, rights_code) over the given shards; reads only those two columns."""
    counts: Counter[tuple[str, str]] = Counter()
    for path in files:
        t = pq.read_table(path, columns=["source", "rights_code"])
        for src, code in zip(t.column("source").to_pylist(), t.column("rights_code").to_pylist(), strict=True):
            counts[str(src), code if code is not None else "(none)"] += 1
    return [{"source": s, "rights_code": c, "rows": n} for (s, c), n in sorted(counts.items())]


# --------------------------------------------------------------------------------------------- targets


def _is_pushed_path(rel: str) -> bool:
    """Remote paths push manages: README.md, fusionrs_sources.json, the card's pictures (assets/...) and parquet
    files under data/ (never .gitattributes etc.)."""
    return rel in (CARD_NAME, REGISTRY_FILE, *ASSET_PATHS) or (rel.startswith("data/") and rel.endswith(".parquet"))


class _HubTarget:
    """A Hub dataset repo reached through ``HfApi`` (or a double with the same methods)."""

    kind = "hub"

    def __init__(self, repo_id: str, api, revision: str | None, private: bool, hub_fs=None) -> None:
        self.repo_id, self.api, self.revision, self.private = repo_id, api, revision, private
        self._hub_fs = hub_fs
        self.list_revision = revision
        self.parent: str | None = None
        self.warnings: list[str] = []
        self.wrote = False
        """Something was written to the remote (a failure after that is one to resume)."""

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

            self._hub_fs = HfFileSystem(endpoint=getattr(self.api, "endpoint", None), token=getattr(self.api, "token", None))
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

    def remote_bytes(self, rel: str) -> bytes:
        fs, root = self._fs_root()
        with fs.open(f"{root}/{rel}", "rb") as f:
            return f.read()

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

        from . import __version__

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
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            ops: list = []
            snaps: list[LocalFile] = []
            for planned in batch:  # snapshot now (copy + hash, one read): that copy is what gets sent
                f = sender.take(planned)
                if f is None:
                    continue
                op = CommitOperationAdd(path_in_repo=f.relpath, path_or_fileobj=str(f.path))
                if op.upload_info.sha256.hex() != f.sha256:
                    raise PushError(f"the snapshot of {f.relpath} changed on disk before upload; re-run the same command")
                ops.append(op)
                snaps.append(f)
            sent = {f.relpath: (f.size, f.sha256, f.blob_id) for f in snaps}
            for g in range(0, len(ops), UPLOAD_GROUP):
                group = ops[g:g + UPLOAD_GROUP]
                self.api.preupload_lfs_files(self.repo_id, additions=group, repo_type="dataset",
                                             revision=self.revision)
                for op, f in zip(group, snaps[g:g + UPLOAD_GROUP], strict=True):
                    if getattr(op, "_upload_mode", None) == "lfs" and getattr(op, "_is_uploaded", False):
                        sender.snapshot.drop(f.path)  # on the LFS store: the commit only names its digest
                done += len(group)
                bar.update(sum(f.size for f in snaps[g:g + UPLOAD_GROUP]))
                bar.set_description(f"push {done}/{plan.upload_files} files")
            if last:
                if plan.sources != "unchanged":  # the repo's own sources, declared beside the card
                    ops.append(CommitOperationAdd(path_in_repo=REGISTRY_FILE, path_or_fileobj=plan.sources_bytes))
                    sent[REGISTRY_FILE] = (len(plan.sources_bytes), hashlib.sha256(plan.sources_bytes).hexdigest(),
                                           git_blob_id(plan.sources_bytes))
                readme = sender.final_card()  # from what was actually sent
                for rel, data in sender.final_assets().items():  # the card's pictures, with the card
                    ops.append(CommitOperationAdd(path_in_repo=rel, path_or_fileobj=data))
                    sent[rel] = (len(data), hashlib.sha256(data).hexdigest(), git_blob_id(data))
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
            commits.append(getattr(info, "oid", str(info)))
            self._verify(getattr(info, "oid", None), sent)
            logger.info("commit %s: %d file(s)%s", commits[-1], len(ops), " (final, with README.md)" if last else "")
            if last and CARD_NAME in sent:
                done += 1
                bar.update(len(plan.readme_bytes))
                bar.set_description(f"push {done}/{plan.upload_files} files")
        return commits


def _is_managed(rel: str) -> bool:
    """Files push writes into an fsspec destination (and may therefore have left a temporary file for)."""
    return rel in (CARD_NAME, MANIFEST_NAME, REGISTRY_FILE, *ASSET_PATHS) or parse_shard_path(rel) is not None


class _FsspecTarget:
    """Any fsspec URL (``file://``, ``s3://``, ``memory://``, ...): same plan, files copied one by one."""

    kind = "fsspec"

    def __init__(self, url: str, revision: str | None = None, storage_options: dict | None = None) -> None:
        if revision:
            raise CliError("--revision applies to Hub repos only, not to fsspec URLs")
        self.url = url
        self.storage_options = dict(storage_options or {})
        loc = locate(url, None, self.storage_options)  # a missing s3fs & co. is one line naming the extra
        self.fs, self.root = loc.fs(), loc.root.rstrip("/")
        self.manifest: dict[str, dict] = {}
        self.stale_tmp: list[str] = []
        self.warnings: list[str] = []
        self.revision = None

    @property
    def label(self) -> str:
        return scrub(self.url)  # printed, and written into the card: never with credentials

    @property
    def card_repo_id(self) -> str:
        return scrub(self.url)

    @property
    def card_location(self):
        """Where the card's Load snippet reads: this store, with its non-secret storage options."""
        return describe(scrub(self.url), self.storage_options)

    @property
    def _local(self) -> bool:
        protos = self.fs.protocol if isinstance(self.fs.protocol, tuple | list) else (self.fs.protocol,)
        return "file" in protos or "local" in protos

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def prepare(self, dry_run: bool) -> bool:
        return self.fs.exists(self.root)

    def create(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

    def _own_tmp(self, rel: str) -> bool:
        """A temporary file an earlier push made and left behind (never anybody else's ``*.fusionrs-tmp``)."""
        folder, _, name = rel.rpartition("/")
        got = tmp_target(name)
        if got is not None:  # .NAME.PID-RANDOM.fusionrs-tmp, as fusionrs_hf.atomic names them
            target = f"{folder}/{got[0]}" if folder else got[0]
            return _is_managed(target) and not (self._local and writer_alive(got[1]))
        # the name older versions of push used: NAME.fusionrs-tmp next to the file it was for
        return name.endswith(TMP_SUFFIX) and _is_managed(rel[: -len(TMP_SUFFIX)])

    def list(self) -> dict[str, RemoteFile]:
        if not self.fs.exists(self.root):
            return {}
        try:
            self.manifest = json.loads(self.fs.cat_file(self._full(MANIFEST_NAME))).get("files", {})
        except (FileNotFoundError, ValueError):
            self.manifest = {}
        out = {}
        for full, info in self.fs.find(self.root, detail=True).items():
            rel = full[len(self.root) + 1:] if full.startswith(self.root + "/") else full
            if rel.endswith(TMP_SUFFIX):
                if self._own_tmp(rel):
                    self.stale_tmp.append(full)
                continue
            if _is_pushed_path(rel):
                size = int(info.get("size") or 0)
                m = self.manifest.get(rel)
                sha = m["sha256"] if m and m.get("size") == size else None
                out[rel] = RemoteFile(rel, size, sha)
        return out

    def _remote_sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(self._full(rel), "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def same(self, local: LocalFile, remote: RemoteFile) -> bool:
        if remote.size != local.size:
            return False
        if remote.sha256:
            return remote.sha256 == local.sha256
        sha = self._remote_sha256(remote.relpath)  # no manifest entry: hash once, remember it
        self.manifest[remote.relpath] = {"sha256": sha, "size": remote.size}
        return sha == local.sha256

    def same_bytes(self, data: bytes, remote: RemoteFile) -> bool:
        return remote.size == len(data) and self.fs.cat_file(self._full(remote.relpath)) == data

    def remote_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._full(rel))

    def remote_shard_info(self, rel: str) -> ShardInfo | None:
        name = getattr(self, "layout", DEFAULT_LAYOUT).parse_shard_path(rel)
        return shard_info(self.fs, self.root, name) if name else None

    def _write(self, rel: str, src: Path | bytes) -> None:
        """Write one file so that its final name never holds partial content."""
        dst = self._full(rel)
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        if self._local:  # temporary sibling + fsync + rename + directory fsync (fusionrs_hf.atomic)
            with atomic_open(self.fs._strip_protocol(dst), "wb") as out:
                if isinstance(src, bytes):
                    out.write(src)
                else:
                    with open(src, "rb") as f:
                        shutil.copyfileobj(f, out, _CHUNK)
        elif isinstance(src, bytes):  # an object PUT is atomic already
            self.fs.pipe_file(dst, src)
        else:
            self.fs.put_file(str(src), dst)

    def _remote_digest(self, rel: str) -> tuple[int, str]:
        """(size, SHA-256) of the file as the destination has it now: from the store's own SHA-256 checksum
        where it reports one, else by reading the file back."""
        info = self.fs.info(self._full(rel))
        size = int(info.get("size") or 0)
        b64 = info.get("ChecksumSHA256") or info.get("checksum_sha256")
        if isinstance(b64, str) and "-" not in b64:  # S3 full-object checksum (not a multipart composite)
            try:
                return size, base64.b64decode(b64).hex()
            except ValueError:
                pass
        return size, self._remote_sha256(rel)

    def _put_verified(self, rel: str, src: Path | bytes, size: int, sha256: str) -> None:
        """Write, read back, record in the manifest what the destination really holds; fail on a difference."""
        self._write(rel, src)
        got_size, got_sha = self._remote_digest(rel)
        if rel != CARD_NAME:
            self.manifest[rel] = {"sha256": got_sha, "size": got_size}
        if (got_size, got_sha) != (size, sha256):
            self._save_manifest()
            raise PushError(f"{self.label}/{rel} reads back as {got_size} bytes, sha256 {got_sha}, but "
                            f"{size} bytes, sha256 {sha256} were written; re-run the same command")

    def _save_manifest(self) -> None:
        data = json.dumps({"version": 1, "files": dict(sorted(self.manifest.items()))}, indent=1).encode()
        self._write(MANIFEST_NAME, data)

    def apply(self, plan: PushPlan, *, message: str | None, max_files: int, bar) -> list[str]:
        for full in self.stale_tmp:  # only leftovers of an earlier push (see _own_tmp)
            self.fs.rm_file(full)
        sender: _Sender = plan.sender
        done = 0
        for planned, _ in plan.upload:
            f = sender.take(planned)  # snapshot now (copy + hash, one read): that copy is what gets sent
            if f is not None:
                self._put_verified(f.relpath, f.path, f.size, f.sha256)
                sender.snapshot.drop(f.path)
            done += 1
            bar.update(planned.size)
            bar.set_description(f"push {done}/{plan.upload_files} files")
            if done % max_files == 0:
                self._save_manifest()
        if plan.sources != "unchanged":
            self._put_verified(REGISTRY_FILE, plan.sources_bytes, len(plan.sources_bytes),
                               hashlib.sha256(plan.sources_bytes).hexdigest())
        readme = sender.final_card()  # from what was actually written
        for rel, data in sender.final_assets().items():  # the card's pictures, before the card that shows them
            self._put_verified(rel, data, len(data), hashlib.sha256(data).hexdigest())
        if readme is not None:  # after every shard it describes, before removing pruned ones
            self._put_verified(CARD_NAME, readme, len(readme), hashlib.sha256(readme).hexdigest())
            bar.update(len(readme))
            bar.set_description(f"push {done + 1}/{plan.upload_files} files")
        for rel in plan.delete:
            self.fs.rm_file(self._full(rel))
            self.manifest.pop(rel, None)
        self._save_manifest()
        return []


def _default_message(plan: PushPlan) -> str:
    parts = []
    if plan.upload:
        parts.append(f"{len(plan.upload)} shard(s), {_fmt_bytes(sum(f.size for f, _ in plan.upload))}")
    if plan.delete:
        parts.append(f"prune {len(plan.delete)} file(s)")
    if plan.readme != "unchanged":
        parts.append("README.md")
    return "fusionrs push: " + ", ".join(parts)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _parse_target(target: str, revision: str | None) -> tuple[str, str | None, bool]:
    """(repo_id or URL, revision, is_hub). ``hf://datasets/owner/name[@rev]`` counts as a Hub repo."""
    if target.startswith("hf://"):
        rest = target[len("hf://"):]
        if not rest.startswith("datasets/"):
            raise CliError(f"{target}: only dataset repos are supported (hf://datasets/OWNER/NAME)")
        rest = rest[len("datasets/"):].rstrip("/")
        if "@" in rest:
            rest, rev = rest.split("@", 1)
            if revision and revision != rev:
                raise CliError(f"{target}: revision @{rev} conflicts with --revision {revision}")
            revision = rev
        target = rest
    elif "://" in target:
        return target, revision, False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(target)
    except HFValidationError:
        raise CliError(
            f"{target!r} is neither a Hub repo id (OWNER/NAME) nor a URL; for a folder use file:///abs/path"
        ) from None
    if target.count("/") != 1:
        raise CliError(f"{target!r}: a Hub dataset repo id is OWNER/NAME")
    return target, revision, True


# --------------------------------------------------------------------------------------------- push


def _local_names(local: Path) -> tuple[list[ShardName], list[str]]:
    """The local repo's shards (names only; their bytes are read once, later) and other parquet files."""
    return list_shards(fsspec.filesystem("file"), str(local.resolve()))


def _run_check(local: Path, progress: bool = False):
    try:
        from .check import CheckTargetError, check_repo
    except ImportError as e:
        raise PushError(f"`fusionrs check` is not available ({e}); pass --skip-check to push unchecked") from None
    try:
        return check_repo(str(local), fast=True, progress=progress)
    except CheckTargetError as e:
        raise CliError(f"{local}: {e}") from None


def push_repo(
    local: str | Path,
    target: str,
    *,
    api=None,
    revision: str | None = None,
    private: bool = True,
    dry_run: bool = False,
    prune: bool = False,
    message: str | None = None,
    skip_check: bool = False,
    progress: bool = False,
    max_files_per_commit: int = MAX_FILES_PER_COMMIT,
    hub_fs=None,
    storage_options: dict | None = None,
    token: str | None = None,
) -> PushResult:
    """Push a local FusionRS repo folder to ``target`` (a Hub ``OWNER/NAME``, ``hf://datasets/...`` or an fsspec URL).

    ``api`` is an ``HfApi`` (or a double with the same methods); by default one is made with ``token``,
    else ``HF_TOKEN`` / the stored login. ``hub_fs`` is the fsspec filesystem used to read footers of
    shards that exist only on the Hub (default ``HfFileSystem``). Raises :class:`CheckFailed` when the
    local repo fails ``check --fast`` (unless ``skip_check``), :class:`PushError` when the push fails
    (message free of tokens), :class:`~fusionrs_hf.errors.CliError` for unusable arguments.
    """
    local = Path(local)
    if not (local / "data").is_dir():
        raise CliError(f"{local}: not a FusionRS repo folder (no data/ directory)")
    if max_files_per_commit < 2:
        raise CliError("max_files_per_commit must be at least 2")
    ref, revision, is_hub = _parse_target(target, revision)
    secrets: list[str | None] = [token]
    _secrets.register_secret(token)
    _secrets.register_url(target)
    _secrets.register_options(storage_options)

    check_dict = None
    if not skip_check:
        report = _run_check(local, progress)
        check_dict = report.to_dict() if hasattr(report, "to_dict") else {"ok": bool(report.ok)}
        if not report.ok:
            raise CheckFailed(report)

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet_client = not progress and not are_progress_bars_disabled()
    if quiet_client:  # --quiet / --json / no terminal: the client's own per-file bars too
        disable_progress_bars()
    tgt = None
    try:
        if is_hub:
            if api is None:
                from huggingface_hub import get_token

                token = token or get_token()
                secrets.append(token)
                _secrets.register_secret(token)
                if token is None and not dry_run:
                    raise CliError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
                api = make_api(token)
            secrets.append(getattr(api, "token", None) if isinstance(getattr(api, "token", None), str) else None)
            tgt = _HubTarget(ref, api, revision, private, hub_fs)
        else:
            tgt = _FsspecTarget(ref, revision, storage_options)
        return _push(local, tgt, dry_run=dry_run, prune=prune, message=message, progress=progress,
                     max_files=max_files_per_commit, check_dict=check_dict)
    except CheckFailed as e:
        e.args = (scrub(str(e), secrets),)
        raise
    except PushHubUnreachable as e:
        raise PushHubUnreachable(scrub(str(e), secrets), repo=e.repo, endpoint=e.endpoint, offline=e.offline) from None
    except (CliError, PushError) as e:
        raise type(e)(scrub(str(e), secrets)) from None
    except Exception as e:  # any client/HTTP error: re-raise with a message that cannot carry the token
        msg = scrub(f"{type(e).__name__}: {e}", secrets)
        where = scrub(target, secrets)
        if isinstance(tgt, _HubTarget) and not tgt.wrote and _is_unreachable(e):
            endpoint = tgt.endpoint
            offline = _offline_error(e)
            why = (f"the Hub is offline here (HF_HUB_OFFLINE is set), so {endpoint} was not contacted" if offline else
                   f"cannot reach the Hub at {endpoint} ({msg.splitlines()[0] if msg else type(e).__name__})")
            raise PushHubUnreachable(f"push to {where}: {why}; nothing was uploaded. Check the network or "
                                     "HF_ENDPOINT, then run the same command again", repo=ref, endpoint=endpoint,
                                     offline=offline) from None
        if dry_run:
            raise PushError(f"push --dry-run for {where} failed: {msg}; nothing was uploaded") from None
        raise PushError(f"push to {where} failed: {msg}; re-run the same command to resume") from None
    finally:
        if quiet_client:
            enable_progress_bars()


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


def _fusionrs_card(text: str) -> bool:
    """Whether a README is a card fusionrs rendered (its title and the synthetic-infrared note)."""
    return SYNTHETIC_IR_MARKER in text and "\n# FusionRS\n" in text


def _push(local: Path, tgt, *, dry_run: bool, prune: bool, message: str | None, progress: bool,
          max_files: int, check_dict: dict | None) -> PushResult:
    snapshot = _Snapshot()
    try:
        return _push_snapshot(local, tgt, snapshot, dry_run=dry_run, prune=prune, message=message,
                              progress=progress, max_files=max_files, check_dict=check_dict)
    finally:
        snapshot.close()


def _card_assets(local: Path, infos: list[ShardInfo], lay) -> dict[str, bytes]:
    """The card's pictures for what the remote will hold: counts of ``infos``, triplets of the local shards."""
    root = str(local.resolve())
    names, _ = _local_names(local)
    return render_assets(fsspec.filesystem("file"), root, infos, lay, names=names)


def _footer_only(local: Path, name: ShardName) -> LocalFile:
    """A planned upload: size and footer counts (the bytes are hashed when they are snapshotted)."""
    src = local / name.path
    try:
        st = os.stat(src)
        md = pq.ParquetFile(str(src)).metadata
    except FileNotFoundError:
        raise LocalRepoError(f"local {name.path} disappeared while push was planning (is a build still "
                             "running?)") from None
    except (OSError, pa.ArrowException) as e:
        raise LocalRepoError(f"local {name.path} is not a readable parquet file ({type(e).__name__}: {e})") from None
    nbytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    return LocalFile(name.path, src, st.st_size, None, ShardInfo(name, md.num_rows, nbytes, st.st_size), src,
                     _stat_key(st))


class _Sender:
    """Takes the snapshot of each planned upload right before it is sent, and renders the final card from
    the footers of exactly the bytes sent (plus the unchanged shards and the remote-only ones kept).

    Snapshots are made one commit (Hub) or one file (fsspec) at a time, so the temporary folder needs room
    for one commit's files, not the whole repo.
    """

    def __init__(self, local: Path, plan: PushPlan, snapshot: _Snapshot, tgt, remote: dict[str, RemoteFile],
                 infos: dict[str, ShardInfo], sample: bool) -> None:
        self.local, self.plan, self.snapshot, self.tgt, self.remote = local, plan, snapshot, tgt, remote
        self.infos = infos  # shard -> footer counts of what the remote will hold
        self.sample = sample
        self.sent: dict[str, LocalFile] = {}
        self.warnings: list[str] = []

    def take(self, planned: LocalFile) -> LocalFile | None:
        """The snapshot of ``planned`` (copied and hashed now); None if the file vanished since planning
        (the card then counts what the remote holds of it, if anything)."""
        name = planned.info.name if planned.info is not None else \
            (self.plan.layout or DEFAULT_LAYOUT).parse_shard_path(planned.relpath)
        r = self.remote.get(planned.relpath)
        try:
            f = read_local(self.local, name, self.snapshot.path_for(planned.relpath), blob=r is not None and not r.sha256)
        except LocalRepoError as e:
            if "disappeared" not in str(e):
                raise LocalRepoError(f"{e}; the push stopped before the card was updated: re-run it when the repo "
                                     "is stable") from None
            self.infos.pop(planned.relpath, None)
            if r is not None:
                info = self.tgt.remote_shard_info(planned.relpath)
                if info is not None:
                    self.infos[planned.relpath] = info
            self.warnings.append(f"local {planned.relpath} disappeared during the push; not uploaded (the card "
                                 "counts what the remote holds)")
            return None
        if planned.stat is not None and f.stat != planned.stat:
            self.warnings.append(f"local {planned.relpath} changed after the plan; uploaded as read when it was sent "
                                 "(the card counts that version)")
        self.infos[f.relpath] = f.info
        self.sent[f.relpath] = f
        return f

    def final_assets(self) -> dict[str, bytes]:
        """The pictures to send with the final card (those that differ from what the remote has); call after
        :meth:`final_card`."""
        assets = getattr(self, "_assets", None)
        if assets is None:
            assets = self.plan.assets
        out = {}
        for rel, data in sorted(assets.items()):
            if self.plan.assets.get(rel) == data and self.plan.assets_state.get(rel) == "unchanged":
                continue
            r = self.remote.get(rel)
            if r is not None and self.tgt.same_bytes(data, r):
                continue
            out[rel] = data
        self.plan.assets = dict(assets)
        return out

    def final_card(self) -> bytes | None:
        """The card of what the remote holds now; None if the remote's card already says exactly that."""
        shards = sorted(self.infos.values(), key=lambda s: s.name)
        self.plan.card_shards = shards
        self._assets = _card_assets(self.local, shards, self.plan.layout or DEFAULT_LAYOUT)
        data = render_card(shards, sample=self.sample, location=self.tgt.card_location,
                           lay=self.plan.layout or DEFAULT_LAYOUT, assets=self._assets).encode("utf-8")
        if data == self.plan.readme_bytes and self.plan.readme == "unchanged":
            return None
        self.plan.readme_bytes = data
        return data


def _plan_files(local: Path, names: list[ShardName], remote: dict[str, RemoteFile], tgt, plan: PushPlan
                ) -> list[LocalFile]:
    """Sort the local shards into unchanged / upload (``plan``); every file read at most once here."""
    files: list[LocalFile] = []
    for name in names:
        r = remote.get(name.path)
        if r is not None:
            try:
                size_now = (local / name.path).stat().st_size
            except FileNotFoundError:
                size_now = -1
            if size_now == r.size:  # may be unchanged: hash it (one read; its footer from the same bytes)
                f = read_local(local, name, blob=not r.sha256)
                files.append(f)
                if tgt.same(f, r):
                    plan.unchanged.append(f.relpath)
                else:
                    plan.upload.append((f, "changed"))
                continue
        f = _footer_only(local, name)  # new, or another size: surely sent; hashed when snapshotted
        files.append(f)
        plan.upload.append((f, "new" if r is None else "changed"))
    return files


def _push_snapshot(local: Path, tgt, snapshot: _Snapshot, *, dry_run: bool, prune: bool, message: str | None,
                   progress: bool, max_files: int, check_dict: dict | None) -> PushResult:
    names, orphans = _local_names(local)
    warnings = list(f"local {o}: not a shard name ({SHARD_TEMPLATE}); not pushed" for o in orphans)
    existed = tgt.prepare(dry_run)
    remote = tgt.list() if existed else {}
    warnings.extend(tgt.warnings)

    plan = PushPlan(target=tgt.label, revision=tgt.revision, repo_exists=existed,
                    layout=layout_for(fsspec.filesystem("file"), str(local.resolve())))
    tgt.layout = plan.layout
    try:
        files = _plan_files(local, names, remote, tgt, plan)
    except LocalRepoError as e:
        raise LocalRepoError(f"{e}; nothing was uploaded, re-run when it is done") from None
    local_paths = {n.path for n in names}
    infos = {f.relpath: f.info for f in files if f.info is not None}
    card_shards = list(infos.values())
    for rel in sorted(set(remote) - local_paths - {CARD_NAME, REGISTRY_FILE, *ASSET_PATHS}):
        if prune:
            plan.delete.append(rel)
            continue
        plan.keep_remote_only.append(rel)
        info = tgt.remote_shard_info(rel)
        if info is None:
            warnings.append(f"remote {rel}: not a shard name; kept (use --prune to delete it)")
        else:
            card_shards.append(info)
            infos[rel] = info
    if plan.keep_remote_only:
        warnings.append(f"{len(plan.keep_remote_only)} remote shard(s) are not in the local repo; kept and counted "
                        "in the card (pass --prune to delete them)")

    local_card = local / CARD_NAME
    sample = local_card.is_file() and SAMPLE_MARKER in local_card.read_text(encoding="utf-8", errors="replace")
    card_shards.sort(key=lambda s: s.name)
    plan.card_shards = card_shards
    plan.assets = _card_assets(local, card_shards, plan.layout)
    for rel, data in plan.assets.items():
        r = remote.get(rel)
        plan.assets_state[rel] = "new" if r is None else ("unchanged" if tgt.same_bytes(data, r) else "changed")
    text = render_card(card_shards, sample=sample, location=tgt.card_location, lay=plan.layout,
                       assets=plan.assets)
    reg = local / REGISTRY_FILE
    if reg.is_file():  # the repo declares sources of its own: the remote needs the same declaration
        plan.sources_bytes = reg.read_bytes()
        r = remote.get(REGISTRY_FILE)
        plan.sources = "new" if r is None else ("unchanged" if tgt.same_bytes(plan.sources_bytes, r) else "changed")
    if SYNTHETIC_IR_MARKER not in text:  # the card must keep telling readers the IR is synthetic
        raise PushError("rendered card lost the synthetic-infrared note; refusing to push")
    plan.readme_bytes = text.encode("utf-8")
    r = remote.get(CARD_NAME)
    plan.readme = "new" if r is None else ("unchanged" if tgt.same_bytes(plan.readme_bytes, r) else "changed")
    if plan.readme == "changed":
        try:
            theirs = tgt.remote_bytes(CARD_NAME).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - unreadable: we cannot tell, so say it
            theirs = ""
        if not _fusionrs_card(theirs):
            where = "the repo history keeps the old one" if getattr(tgt, "kind", "") == "hub" else \
                "its old content is not kept"
            warnings.append(f"{'will replace' if dry_run else 'replacing'} {tgt.label}/{CARD_NAME}, which was not "
                            f"written by fusionrs, with the FusionRS card ({where})")
    try:
        plan.rights = rights_summary(f.path for f, _ in plan.upload)
    except (OSError, pa.ArrowException) as e:
        raise LocalRepoError(f"local repo changed while push was planning ({type(e).__name__}: {e}); nothing was "
                             "uploaded, re-run when it is done") from None
    plan.sender = _Sender(local, plan, snapshot, tgt, remote, infos, sample)

    result = PushResult(ok=True, plan=plan, dry_run=dry_run, check=check_dict, warnings=warnings)
    for w in warnings:
        logger.warning(w)
    logger.info("plan for %s: upload %d file(s), %d B; delete %d; unchanged %d", plan.target,
                plan.upload_files, plan.upload_bytes, len(plan.delete), len(plan.unchanged))
    if dry_run or plan.empty:
        return result

    from tqdm import tqdm

    tgt.create()  # the first write to the remote
    with tqdm(total=plan.upload_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
              desc=f"push 0/{plan.upload_files} files", disable=not progress) as bar:
        result.commits = tgt.apply(plan, message=message, max_files=max_files, bar=bar)
    result.uploaded_files, result.uploaded_bytes = plan.upload_files, plan.upload_bytes
    sender: _Sender = plan.sender
    result.warnings.extend(sender.warnings)
    said = {w.split(" ", 2)[1] for w in sender.warnings}
    for f in [*sender.sent.values(), *(f for f in files if f.relpath in plan.unchanged)]:
        try:  # the remote holds what was read; say so if the repo has moved on since
            now = _stat_key(os.stat(f.source)) if f.source is not None else f.stat
        except FileNotFoundError:
            now = None
        if now != f.stat and f.relpath not in said:
            result.warnings.append(f"local {f.relpath} changed during the push; the remote has the version read "
                                   "before (its card counts that one): re-run push to upload the new one")
    return result


# --------------------------------------------------------------------------------------------- CLI


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("local_repo", metavar="LOCAL_REPO", help="local repo folder (holds data/... and README.md)")
    p.add_argument("target", metavar="REPO_ID",
                   help="Hub dataset repo OWNER/NAME (or hf://datasets/OWNER/NAME), or an fsspec URL "
                        "(file:///abs/path, s3://bucket/prefix, ...)")
    p.add_argument("--revision", help="Hub branch to push to (created from main if missing); default main")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True,
                     help="create a missing Hub repo as private (the default)")
    vis.add_argument("--public", dest="private", action="store_false",
                     help="create a missing Hub repo as public (check the rights summary first)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, bytes, rights) and exit")
    p.add_argument("--prune", action="store_true",
                   help="delete remote parquet files under data/ that the local repo does not have")
    p.add_argument("--message", help="commit message (default: a summary of the change)")
    p.add_argument("--skip-check", action="store_true",
                   help="push even if `fusionrs check --fast` fails on the local repo")
    p.add_argument("--max-files-per-commit", type=int, default=MAX_FILES_PER_COMMIT, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print one JSON object (plan and result) on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from .storage import add_storage_option_argument

    add_storage_option_argument(p)


def _print_text(res: PushResult, out=None) -> None:
    out = out or sys.stdout
    plan = res.plan
    rev = f" (revision {plan.revision})" if plan.revision else ""
    print(f"{'plan' if res.dry_run else 'push'} for {plan.target}{rev}"
          f"{'' if plan.repo_exists else ' (will be created)' if res.dry_run else ''}:", file=out)
    print(f"  upload {len(plan.upload)} shard(s) + README.md {plan.readme}: {plan.upload_files} file(s), "
          f"{_fmt_bytes(plan.upload_bytes)}; unchanged {len(plan.unchanged)}; delete {len(plan.delete)}; "
          f"remote-only kept {len(plan.keep_remote_only)}", file=out)
    if res.dry_run:
        for f, why in plan.upload:
            print(f"  + {f.relpath}  {_fmt_bytes(f.size)}  ({why})", file=out)
        if plan.readme != "unchanged":
            print(f"  + {CARD_NAME}  {_fmt_bytes(len(plan.readme_bytes))}  ({plan.readme}, last commit)", file=out)
        for rel in plan.assets_to_send:
            print(f"  + {rel}  {_fmt_bytes(len(plan.assets[rel]))}  ({plan.assets_state[rel]}, with the card)",
                  file=out)
        for rel in plan.delete:
            print(f"  - {rel}  (prune)", file=out)
    if plan.rights:
        print("rights summary of the rows uploaded (source, rights_code: rows):", file=out)
        for r in plan.rights:
            print(f"  {r['source']:<10} {r['rights_code']:<36} {r['rows']:>10,}", file=out)
    if plan.upload:
        print(f"note: {TERMS_WARNING}", file=out)
    if res.dry_run:
        print("dry run: nothing written", file=out)
    elif plan.empty:
        print("nothing to do: the remote already matches (0 bytes uploaded, no commit)", file=out)
    else:
        how = f" in {len(res.commits)} commit(s)" if res.commits else ""
        print(f"done: {res.uploaded_files} file(s), {_fmt_bytes(res.uploaded_bytes)} uploaded{how}", file=out)


class _DropWarnings(logging.Filter):
    """The CLI prints every warning of the result once, as ``warning: ...``; their log records would repeat them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


def run(args: argparse.Namespace) -> int:
    progress = not args.quiet and not args.json and sys.stderr.isatty()
    drop = _DropWarnings()
    logger.addFilter(drop)
    try:
        return _run(args, progress)
    finally:
        logger.removeFilter(drop)


def _run(args: argparse.Namespace, progress: bool) -> int:
    from .storage import parse_storage_options

    try:
        options = parse_storage_options(getattr(args, "storage_options", None))
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        res = push_repo(args.local_repo, args.target, revision=args.revision, private=args.private,
                        dry_run=args.dry_run, prune=args.prune, message=args.message,
                        skip_check=args.skip_check, progress=progress,
                        max_files_per_commit=args.max_files_per_commit, storage_options=options)
    except CheckFailed as e:
        _fail(args, str(e), check=e.report.to_dict() if hasattr(e.report, "to_dict") else None)
        return 1
    except (LocalRepoError, PushHubUnreachable) as e:  # unusable input / no Hub: nothing written
        _fail(args, str(e))
        return 2
    except PushError as e:
        _fail(args, str(e))
        return 1
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_dict(), default=str))
    else:
        _print_text(res)
    return 0


def _fail(args: argparse.Namespace, msg: str, check: dict | None = None) -> None:
    msg = "; ".join(line.strip() for line in scrub(msg).splitlines() if line.strip())  # one line, no secret
    if args.json:
        print(scrub(json.dumps({"ok": False, "error": msg, "check": check}, default=str)))
    print(f"fusionrs push: error: {msg}", file=sys.stderr)


__all__ = ["push_repo", "PushResult", "PushPlan", "PushError", "PushHubUnreachable", "CheckFailed", "LocalRepoError",
           "scrub",
           "rights_summary", "read_local", "git_blob_id", "MAX_FILES_PER_COMMIT", "TERMS_WARNING"]
