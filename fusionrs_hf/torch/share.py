"""Row groups two workers both read, fetched once: the worker that reads one first leaves its bytes for the other.

An epoch's rows are cut into one contiguous slice per DataLoader worker (:mod:`fusionrs_hf.torch.plan`), so
where two slices meet, the row group there is needed by both: by the later worker at the start of its slice
and by the earlier one at the end of its slice. Over a network each would fetch all of its column bytes (a
row group cannot be read in part), one row group per worker boundary and epoch: on a small repo, or a
bandwidth-bound link, a tenth of all traffic.

So the worker that starts its slice inside a row group *publishes* the bytes it fetched into a private
folder the dataset made in the training process (``mkdtemp``: mode 0700, removed with the dataset), and the
worker that ends its slice there *takes* them, if they are there, instead of fetching them again. Nobody
waits: a take that finds nothing (the other worker is behind, or resumed past it) fetches as before. Files
are written under a temporary name and renamed, so a take sees a whole row group or none, and are deleted
once taken. Names carry the epoch, plan generation, rank and unit, so a file never answers for another
epoch's or plan's row group.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import weakref

_MAGIC = b"FRSRG1\n"
_PIECE = struct.Struct("<QQ")  # start offset in the shard, length


def make_share_dir(owner) -> str:
    """A private folder for ``owner``'s (a dataset's) shared row groups, removed when ``owner`` is collected
    or the process exits, and only by the process that made it (forked workers inherit the finalizer)."""
    path = tempfile.mkdtemp(prefix="fusionrs-rowgroups-")
    weakref.finalize(owner, _remove, path, os.getpid())
    return path


def _remove(path: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(path, ignore_errors=True)


def share_path(folder: str, epoch: int, plan_gen: int, rank: int, unit: int) -> str:
    return os.path.join(folder, f"e{epoch}-g{plan_gen}-r{rank}-u{unit}.rg")


def _marker(path: str) -> str:
    return path + ".fetched"


def publish(path: str, pieces: list[tuple[int, bytes]]) -> bool:
    """Write a row group's fetched pieces to ``path`` (atomically) for the neighbour, unless it has fetched
    them itself already (its marker); files of other epochs or plans in the folder are removed. False if
    nothing was left."""
    folder, name = os.path.split(path)
    current = name.rsplit("-r", 1)[0] + "-r"  # "e{epoch}-g{plan}-r"
    for other in _listdir(folder):  # an epoch cut short leaves what nobody took: not for ever
        if not other.startswith(current):
            _unlink(os.path.join(folder, other))
    if os.path.exists(_marker(path)):
        _unlink(_marker(path))
        return False
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC + struct.pack("<I", len(pieces)))
            for start, data in pieces:
                f.write(_PIECE.pack(start, len(data)))
                f.write(data)
        os.replace(tmp, path)
    except OSError:  # a full or vanished temp folder: the other worker fetches for itself
        _unlink(tmp)
        return False
    if os.path.exists(_marker(path)):  # the neighbour looked while this was written, and fetched it itself
        _unlink(path)
        _unlink(_marker(path))
        return False
    return True


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


def take(path: str) -> list[tuple[int, bytes]] | None:
    """The pieces published at ``path``, removing the file; None if there is none (or it is not whole), and
    then a marker tells the neighbour not to leave them: this worker fetches them itself."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        try:
            open(_marker(path), "wb").close()
        except OSError:
            pass
        return None
    _unlink(path)
    if not data.startswith(_MAGIC):
        return None
    pos = len(_MAGIC)
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4
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
