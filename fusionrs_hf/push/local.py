"""The local side of a push: hashing a shard in one read (copied to the snapshot on the way, footer counts
from the same bytes), the snapshot folder, the local shard list, and the rights summary of what is sent."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import writer_alive
from ..card import ShardInfo
from ..card_assets import render_assets
from ..layout import ShardName, list_shards
from ..limits import refuse_big_row_groups
from .plan import _CHUNK, _READ_TRIES, _TAIL, SNAPSHOT_ENV, LocalFile, LocalRepoError, logger


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


SNAPSHOT_PREFIX = "fusionrs-push-"
"""Snapshot folders are ``fusionrs-push-{pid}-{host}-{random}``: the pid of the push that made it, 8 hex digits
of its host name (a shared ``$FUSIONRS_PUSH_TMPDIR`` seen from two machines) and ``mkdtemp``'s 8 characters."""


_SNAPSHOT_RE = re.compile(re.escape(SNAPSHOT_PREFIX) + r"(?P<pid>[0-9]{1,10})-(?P<host>[0-9a-f]{8})-[a-z0-9_]{8}\Z")


def _snapshot_parent() -> Path:
    return Path(os.environ.get(SNAPSHOT_ENV) or tempfile.gettempdir())


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


class _Snapshot:
    """A private folder with copies of the files being uploaded; removed when the push ends.

    A push killed hard (SIGKILL, OOM, a lost machine) cannot remove it, so its name carries the pid and host
    of its push: a later push removes it once that process is gone (:func:`sweep_stale_snapshots`).
    """

    def __init__(self, parent: Path | None = None) -> None:
        self.dir: Path | None = None
        self.parent = parent

    def path_for(self, rel: str) -> Path:
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{SNAPSHOT_PREFIX}{os.getpid()}-{_host_tag()}-",
                                             dir=self.parent or _snapshot_parent()))
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


def _stale(d: Path, pid: int, host: str) -> bool:
    """Whether ``d`` (named like a snapshot folder of ``pid`` on ``host``) was left by a push that is gone.

    Anything that could be someone else's is left alone: a link (never followed), anything but a folder, a
    folder of another user or one others may read (``mkdtemp`` makes them 0700), one made on another host
    (its process cannot be seen from here), or one whose pid runs.
    """
    if pid <= 0 or host != _host_tag():
        return False
    try:
        st = d.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o077:
        return False
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        return False
    return not writer_alive(pid)


def sweep_stale_snapshots(parent: Path | None = None) -> list[str]:
    """Remove the snapshot folders of pushes that were killed before they could (see :class:`_Snapshot`);
    returns the folders removed. Only folders directly in ``parent`` (default ``$FUSIONRS_PUSH_TMPDIR``, else
    the system temp folder) named exactly as :class:`_Snapshot` names them and passing :func:`_stale` are
    touched; the unnamed-pid folders of older versions (``fusionrs-push-XXXXXXXX``) are never removed."""
    parent = parent or _snapshot_parent()
    removed: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for e in entries:
        m = _SNAPSHOT_RE.match(e.name)
        if m is None or e.is_symlink():
            continue
        d = Path(e.path)
        if not _stale(d, int(m["pid"]), m["host"]):
            continue
        try:  # rmtree refuses a link and never follows the links inside (it removes the links themselves)
            shutil.rmtree(d)
        except OSError as err:
            logger.warning("could not remove %s, a stale push snapshot (%s)", d, type(err).__name__)
            continue
        removed.append(str(d))
    return removed


def rights_summary(files: Iterable[Path]) -> list[dict]:
    """Rows per (source, rights_code) over the given shards; reads only those two columns."""
    counts: Counter[tuple[str, str]] = Counter()
    for path in files:
        with open(path, "rb") as f:  # not read_table: the footer is judged first (a few KB can claim GBs)
            pf = pq.ParquetFile(f, pre_buffer=False)
            refuse_big_row_groups(pf.metadata, ["source", "rights_code"], str(path), f, shard=True)
            t = pf.read(columns=["source", "rights_code"], use_threads=False)
        for src, code in zip(t.column("source").to_pylist(), t.column("rights_code").to_pylist(), strict=True):
            counts[str(src), code if code is not None else "(none)"] += 1
    return [{"source": s, "rights_code": c, "rows": n} for (s, c), n in sorted(counts.items())]


def _local_names(local: Path) -> tuple[list[ShardName], list[str]]:
    """The local repo's shards (names only; their bytes are read once, later) and other parquet files."""
    return list_shards(fsspec.filesystem("file"), str(local.resolve()))


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
