"""The vocabulary of a push: its limits and names, its errors (each with its exit code), what it will do
(:class:`PushPlan`) and what it did (:class:`PushResult`), and the one logger every part of push logs to."""

from __future__ import annotations

import logging
from collections.abc import Iterable
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
