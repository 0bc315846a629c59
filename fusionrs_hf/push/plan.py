"""The vocabulary of a push: its limits and names, its errors (each with its exit code), what it will do
(:class:`PushPlan`) and what it did (:class:`PushResult`), and the one logger every part of push logs to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import secrets as _secrets
from ..card import ShardInfo
from ..storage import HubUnreachableError

logger = logging.getLogger("fusionrs_hf.push")
"""One logger for every part of push (the CLI filters its warnings; secrets are scrubbed from all records)."""
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


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Text safe to show: :func:`fusionrs_hf.secrets.scrub` (the one filter every output path uses)."""
    return _secrets.scrub(text, secrets)


class PushError(Exception):
    """The push failed; the message is safe to print (no token). Exit code 1."""


class LocalRepoError(PushError):
    """A local file push must upload cannot be read consistently (it vanished, kept changing, or is not a
    complete parquet file). Raised before anything is written; exit code 2."""


class PushRefused(PushError):
    """The push cannot be done as asked, whatever is re-run: unusable input (exit code 2), never "re-run to
    resume". A destination URL with a query string, a remote-only shard that would duplicate local rows,
    credentials the remote refuses (:class:`PushAuthError`). The message says whether anything was written."""


class PushAuthError(PushRefused):
    """The remote refused the credentials (HTTP 401/403 from the Hub, no or wrong credentials for a store):
    exit code 2 with a hint on where credentials come from. Re-running changes nothing until they are fixed."""


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
class Transfer:
    """What a push's writes cost on the wire, as far as the target can tell.

    A re-run after an interruption commits files whose bytes the remote already holds (a Hub LFS store
    keeps objects uploaded before the failed commit), so "committed" and "sent" differ; this keeps them
    apart instead of calling everything committed "uploaded". ``unknown_*`` counts files committed
    without a way to tell whether their bytes travelled (an API double, or a Hub that did not answer the
    LFS batch question).
    """

    sent_files: int = 0
    sent_bytes: int = 0
    had_files: int = 0
    """Files whose bytes the remote already held (only their digest was committed)."""
    had_bytes: int = 0
    unknown_files: int = 0
    unknown_bytes: int = 0
    dedup: bool = False
    """The client uploads through xet, which skips chunks the store has: ``sent_bytes`` is an upper bound."""

    def add(self, size: int, sent: bool | None) -> None:
        """Count one committed file: sent (True), already on the remote (False), or unknown (None)."""
        if sent is None:
            self.unknown_files, self.unknown_bytes = self.unknown_files + 1, self.unknown_bytes + size
        elif sent:
            self.sent_files, self.sent_bytes = self.sent_files + 1, self.sent_bytes + size
        else:
            self.had_files, self.had_bytes = self.had_files + 1, self.had_bytes + size

    @property
    def known(self) -> bool:
        return self.unknown_files == 0


@dataclass
class PushResult:
    ok: bool
    plan: PushPlan
    dry_run: bool = False
    check: dict | None = None
    commits: list[str] = field(default_factory=list)
    uploaded_files: int = 0
    """Files the push wrote to the remote (committed on the Hub), whether or not their bytes had to travel."""
    uploaded_bytes: int = 0
    """Their size; :attr:`transfer` says how much of it was sent and how much the remote already held."""
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    transfer: Transfer = field(default_factory=Transfer)
    removed_snapshots: list[str] = field(default_factory=list)
    """Snapshot folders of earlier pushes that no longer run, removed when this one started."""

    def to_dict(self) -> dict:
        t = self.transfer
        return {
            "ok": self.ok, "dry_run": self.dry_run, "plan": self.plan.to_dict(), "check": self.check,
            "commits": list(self.commits), "uploaded_files": self.uploaded_files,
            "uploaded_bytes": self.uploaded_bytes,
            # null where the target cannot tell what travelled (see Transfer)
            "sent_files": t.sent_files if t.known else None, "sent_bytes": t.sent_bytes if t.known else None,
            "already_remote_files": t.had_files if t.known else None,
            "already_remote_bytes": t.had_bytes if t.known else None,
            "sent_bytes_upper_bound": t.dedup,
            "removed_snapshots": list(self.removed_snapshots),
            "warnings": list(self.warnings), "error": self.error,
            "terms_warning": TERMS_WARNING,
        }


class Progress:
    """Where a push reports progress while it writes: the tqdm bar (a terminal), and/or one line per commit
    (``say``; used when there is no terminal, so a log or a CI job still shows the push moving)."""

    def __init__(self, bar, say: Callable[[str], None] | None = None) -> None:
        self.bar, self.say = bar, say

    def update(self, n: int) -> None:
        self.bar.update(n)

    def set_description(self, text: str) -> None:
        self.bar.set_description(text)

    def line(self, text: str) -> None:
        if self.say is not None:
            self.say(text)

    def finish(self, total: int, files: int) -> None:
        """End the bar at its total once every planned file was handled. Files whose bytes a target does not
        count one by one (a vanished shard, a card re-rendered to another size) would otherwise leave a
        finished push short of 100%."""
        n = getattr(self.bar, "n", None)
        if isinstance(n, int | float) and n < total:
            self.bar.update(total - n)
        self.bar.set_description(f"push {files}/{files} files")


def transfer_text(t: Transfer, done: str = "committed") -> str:
    """``4 file(s), 1.2 MB sent, 21 file(s), 6.9 MB already on the remote`` -- or, where nothing tells what
    travelled, only the total with the ``done`` word ("committed"), never "uploaded"."""
    total_files, total = t.sent_files + t.had_files + t.unknown_files, t.sent_bytes + t.had_bytes + t.unknown_bytes
    if not t.known:
        return f"{total_files} file(s), {_fmt_bytes(total)} {done}"
    sent = f"{'at most ' if t.dedup and t.sent_bytes else ''}{_fmt_bytes(t.sent_bytes)} sent"
    if not t.had_files:
        return f"{total_files} file(s), {sent}"
    return (f"{total_files} file(s) {done}: {t.sent_files} file(s), {sent}; {t.had_files} file(s), "
            f"{_fmt_bytes(t.had_bytes)} already on the remote")


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
