"""Row groups two workers both read, fetched once: the worker that reads one first leaves its bytes for the other.

An epoch's rows are cut into one contiguous slice per DataLoader worker (:mod:`fusionrs_hf.torch.plan`), so
where two slices meet, the row group there is needed by both: by the later worker at the start of its slice
and by the earlier one at the end of its slice. Over a network each would fetch all of its column bytes (a
row group cannot be read in part), one row group per worker boundary and epoch: on a small repo, or a
bandwidth-bound link, a tenth of all traffic.

So the worker whose slice starts inside a row group *publishes* the bytes it fetched, for the boundary
between it and the worker before it, into a private folder the dataset made in the training process
(``mkdtemp``: mode 0700, removed with the dataset); the worker whose slice ends there *takes* them instead of
fetching again. The rules:

* **Nobody waits.** A take that finds nothing fetches as before. It leaves a marker first, so a publish
  that comes later (or at the same moment) leaves nothing behind.
* **Whole or absent.** Files are written under a temporary name and renamed, and are deleted once taken.
* **Never another row group's bytes.** A file's name carries epoch, plan generation, rank and boundary, and
  its header the shard, row group and a digest of the shard's footer; a take that does not match is not served.
* **Never for ever.** Another epoch's or plan's leftovers go at the next publish; the folder goes with the
  dataset (and is used only while it is still this user's private folder).

``FUSIONRS_SHARE_ROW_GROUPS=0`` turns the hand-over off (every worker fetches what it reads).
"""

from __future__ import annotations

import os
import shutil
import stat
import struct
import tempfile
import weakref

ENV = "FUSIONRS_SHARE_ROW_GROUPS"
_MAGIC = b"FRSRG2\n"
_PIECE = struct.Struct("<QQ")  # start offset in the shard, length


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def make_share_dir(owner) -> str | None:
    """A private folder for ``owner``'s (a dataset's) shared row groups, removed when ``owner`` is collected
    or the process exits, and only by the process that made it (forked workers inherit the finalizer)."""
    if not enabled():
        return None
    path = tempfile.mkdtemp(prefix="fusionrs-rowgroups-")
    weakref.finalize(owner, _remove, path, os.getpid())
    return path


def _remove(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def usable(folder: str | None) -> bool:
    """Whether ``folder`` is still a private folder of this user (not a symlink, nobody else may enter)."""
    if not folder or not enabled():
        return False
    try:
        st = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def share_path(folder: str, epoch: int, plan_gen: int, rank: int, boundary: int) -> str:
    """The file for the row group at the boundary between worker ``boundary - 1`` and worker ``boundary``."""
    return os.path.join(folder, f"e{epoch}-g{plan_gen}-r{rank}-b{boundary}.rg")


def _marker(path: str) -> str:
    return path + ".fetched"


def publish(path: str, ident: bytes, pieces: list[tuple[int, bytes]]) -> bool:
    """Leave a row group's fetched pieces at ``path`` for the neighbour, unless it has fetched them itself
    (its marker). Files of other epochs or plans in the folder are removed. False if nothing was left."""
    folder, name = os.path.split(path)
    current = name.rsplit("-r", 1)[0] + "-r"  # "e{epoch}-g{plan}-r": "e1-" never matches "e10-"
    for other in _listdir(folder):
        if not other.startswith(current):
            _unlink(os.path.join(folder, other))
    if os.path.exists(_marker(path)):
        _unlink(_marker(path))
        return False
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC + struct.pack("<II", len(ident), len(pieces)) + ident)
            for start, data in pieces:
                f.write(_PIECE.pack(start, len(data)))
                f.write(data)
        os.replace(tmp, path)
    except OSError:  # a full or vanished folder: the neighbour fetches for itself
        _unlink(tmp)
        return False
    if os.path.exists(_marker(path)):  # the neighbour looked meanwhile and fetches it itself
        _unlink(path)
        _unlink(_marker(path))
        return False
    return True


def take(path: str, ident: bytes) -> list[tuple[int, bytes]] | None:
    """The pieces left at ``path`` for row group ``ident``, removing the file; None if there are none (or
    they are not whole, or for another row group). The marker goes first, so a publish racing this one
    either is taken here or leaves nothing."""
    try:
        try:
            os.close(os.open(_marker(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None  # the marker stays: a later publish leaves nothing
        _unlink(path)
        _unlink(_marker(path))
        return _parse(data, ident)
    except Exception:  # noqa: BLE001 - never a reason to fail a read: fetch instead
        return None


def _parse(data: bytes, ident: bytes) -> list[tuple[int, bytes]] | None:
    head = len(_MAGIC) + 8
    if len(data) < head or not data.startswith(_MAGIC):
        return None
    n_ident, n = struct.unpack_from("<II", data, len(_MAGIC))
    if data[head:head + n_ident] != ident:
        return None
    pos = head + n_ident
    view = memoryview(data)
    out = []
    for _ in range(n):
        if pos + _PIECE.size > len(data):
            return None
        start, length = _PIECE.unpack_from(data, pos)
        pos += _PIECE.size
        if pos + length > len(data):
            return None
        out.append((start, view[pos:pos + length]))
        pos += length
    return out if pos == len(data) else None


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _unlink(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
