"""The one rule for reading a user's files: a path given relative to a root must stay inside that root.

Index locators, IR keys and ``--from-folder`` entries are joined to a root the user named. The
relative part is checked lexically first (:func:`fusionrs_hf.index.check_relpath`: no absolute
path, drive, URL or ``..``), then the joined path is resolved with every symlink followed and must
still lie below the resolved root: a symlink (to a file or a directory) that leads outside is refused
with a named reason, so no input can make a build embed ``/etc/passwd`` into a shard. Symlinks that
stay inside the root are fine (source trees often use them).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import UnusableInputError


class OutsideRootError(ValueError):
    """``path`` resolves outside ``root`` (through a symlink); ``str()`` names both."""


@functools.lru_cache(maxsize=65536)
def _real(path: str) -> str:
    """``realpath`` of a directory, cached: an index names 600,000 files in a few thousand folders."""
    return os.path.realpath(path)


def forget() -> None:
    """Drop cached folder resolutions (a new build may see a changed tree)."""
    _real.cache_clear()


def resolve_under(root: str | os.PathLike, rel: str) -> Path:
    """``root / rel`` with symlinks resolved, or :class:`OutsideRootError` if that leaves ``root``.

    A path that does not exist resolves as far as it exists (so "missing" stays a missing file, not
    an escape); ``ValueError`` from the lexical check names what is wrong with ``rel``. Folder
    resolutions are cached for the life of the process (a build's inputs do not move under it).
    """
    from .index import check_relpath

    base = _real(os.fspath(root))
    joined = os.path.join(base, check_relpath(rel))
    parent, name = os.path.split(joined)
    target = os.path.join(_real(parent), name)
    if os.path.islink(target):
        target = os.path.realpath(target)
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        raise OutsideRootError(f"{rel!r} resolves to {target}, outside the root {base} (symlink)")
    return Path(target)


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root``: for walking a user's folder.

    A symlink loop on either path is :class:`NotAFileError` naming it (``Path.resolve`` raises a bare
    ``RuntimeError`` for one)."""
    try:
        base, target = Path(root).resolve(), Path(path).resolve()
    except (RuntimeError, OSError) as e:
        where = path if _loops(path) else root
        raise NotAFileError(f"{os.fspath(where)}: a symlink loop ({e}); it leads nowhere") from None
    return target == base or base in target.parents


def _loops(path: str | os.PathLike) -> bool:
    try:
        Path(path).resolve()
    except (RuntimeError, OSError):
        return True
    return False


def is_local_fs(fs) -> bool:
    """Whether an fsspec filesystem is this machine's own (where the rules below apply)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


class NotAFileError(UnusableInputError, ValueError):
    """A path that must be a file's is a FIFO, socket or device (reading one could block forever), or leads
    outside the repo's root through a symlink. ``str()`` names it; every command reports it with exit 2."""


def check_repo_file(root: str | os.PathLike, path: str | os.PathLike) -> None:
    """A local repo's file (a shard, its card) is read only when it is a regular file inside ``root``.

    Why: a FIFO named ``x.parquet`` (a tarball can carry one) would hang every reader on open, and a
    symlink leading out of the repo would make ``check`` or ``push`` read (and publish) a file the user never
    named. Symlinks that stay inside the root are fine."""
    import stat

    p = os.fspath(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return  # gone: the caller's own error names it
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
        raise NotAFileError(f"{p}: not a regular file ({what}); a repo holds files only")
    if not is_inside(root, p):
        raise NotAFileError(f"{p}: a symlink to {os.path.realpath(p)}, outside the repo {os.fspath(root)}")


def check_write_under(root: str | os.PathLike, path: str | os.PathLike) -> None:
    """Before writing ``path`` below ``root``: its folder, symlinks resolved, must still lie inside ``root``.

    Why: ``root/assets`` or ``dest/data`` being a symlink to another folder would make a card or a push
    write files where the user never asked (the file itself is replaced by a rename, never followed)."""
    parent = os.path.dirname(os.fspath(path))
    if not is_inside(root, parent):
        raise NotAFileError(f"{parent}: leads to {os.path.realpath(parent)}, outside {os.fspath(root)} (a symlink); "
                            "nothing is written there")


def check_tree(root: str | os.PathLike, sub: str = "data") -> None:
    """Every folder below ``root/sub`` can be listed, and none is a symlink: else :class:`NotAFileError`.

    Why: a listing skips a folder it may not read, and does not enter a symlinked one, without a word; a card
    or check would then describe a repo with a split or a source silently missing."""
    top = os.path.join(os.fspath(root), sub)
    if os.path.islink(top):
        raise NotAFileError(f"{top}: a symlink to a folder ({os.path.realpath(top)}); a repo's {sub}/ must be a "
                            "folder of its own (copy it or bind-mount it instead)")
    if not os.path.isdir(top):
        return

    def fail(e: OSError) -> None:
        raise NotAFileError(f"{e.filename}: cannot be listed ({e.strerror}); a repo's folders must be readable")

    for folder, dirs, _files in os.walk(top, onerror=fail):
        for d in dirs:
            full = os.path.join(folder, d)
            if os.path.islink(full):
                raise NotAFileError(f"{full}: a symlink to a folder ({os.path.realpath(full)}), which listings do "
                                    "not enter: its shards would be left out; copy it or bind-mount it instead")
