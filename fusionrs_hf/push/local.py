"""The local side of a push: hashing a shard in one read (copied to the snapshot on the way, footer counts
from the same bytes), the snapshot folder, the local shard list, and the rights summary of what is sent."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..card import ShardInfo
from ..card_assets import render_assets
from ..layout import ShardName, list_shards
from .plan import _CHUNK, _READ_TRIES, _TAIL, SNAPSHOT_ENV, LocalFile, LocalRepoError


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
