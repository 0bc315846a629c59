"""Atomic file writes: a file's final name never holds partial content, even after a crash or a full disk.

The rule, for every file fusionrs publishes (shards, the card, reports, push manifests): write a
temporary file *in the destination's directory* (so the rename cannot cross filesystems), flush and
``fsync`` it, ``os.replace`` it onto the final name, then ``fsync`` the directory so the rename itself
survives a power loss. On any error (``ENOSPC`` included) the temporary file is removed and the
destination is left as it was.

Temporary names are ``.{name}.{unique}.fusionrs-tmp``: hidden, unique per write (two writers never
share one), and recognisable, so a later run can tell its own leftovers (:func:`is_tmp_for`) from
files that merely end in ``.fusionrs-tmp``.

    from fusionrs_hf.atomic import atomic_write, atomic_open
    atomic_write(path, b"bytes")                 # or a str (utf-8), or an iterable of bytes chunks
    with atomic_open(path, "w") as f:            # a file object; renamed into place on success
        f.write("text")
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets as _random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

__all__ = ["TMP_SUFFIX", "atomic_dir", "atomic_open", "atomic_write", "fsync_dir", "is_tmp_for", "tmp_path",
           "tmp_target", "writer_alive"]

TMP_SUFFIX = ".fusionrs-tmp"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<unique>[0-9]+-[0-9a-f]{12})" + re.escape(TMP_SUFFIX) + r"\Z")


def tmp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path``: ``.{name}.{pid}-{random}.fusionrs-tmp``."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}-{_random.token_hex(6)}{TMP_SUFFIX}")


def tmp_target(tmp_name: str) -> tuple[str, int] | None:
    """(name of the file it was made for, pid of its writer) for a :func:`tmp_path` name; else None."""
    m = _TMP_RE.match(tmp_name)
    return (m["name"], int(m["unique"].split("-", 1)[0])) if m else None


def is_tmp_for(tmp_name: str, name: str) -> bool:
    """Whether ``tmp_name`` (a file name, no directory) is a temporary file :func:`tmp_path` made for ``name``."""
    got = tmp_target(tmp_name)
    return got is not None and got[0] == name


def writer_alive(pid: int) -> bool:
    """Whether process ``pid`` (on this host) still runs: its temporary files may still be being written."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def fsync_dir(path: str | os.PathLike) -> None:
    """``fsync`` a directory (the record of a rename or create in it); a no-op where unsupported."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems (and Windows) cannot fsync a directory
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """A file object for ``path``'s temporary sibling; on a clean exit it is fsynced and renamed onto ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding``). The new file gets the mode bits of the file
    it replaces, else the usual ``0o666`` minus the umask. On an exception nothing is renamed, the
    temporary file is removed and the exception propagates.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    dst = Path(path)
    tmp = tmp_path(dst)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(dst).st_mode & 0o7777)  # keep the replaced file's permissions
        f = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding, "newline": newline}))
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        _unlink(tmp)
        raise
    fsync_dir(dst.parent)


def atomic_write(path: str | os.PathLike, data: bytes | bytearray | memoryview | str | Iterable[bytes]) -> Path:
    """Write ``data`` (bytes, a str as UTF-8, or an iterable of byte chunks) to ``path`` atomically."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_open(path, "wb") as f:
        if isinstance(data, bytes | bytearray | memoryview):
            f.write(data)
        else:
            for chunk in data:
                f.write(chunk)
    return Path(path)


def _unlink(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(p)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A folder written whole or not at all (a checkpoint: weights, config, tokenizer files that belong together).

    Yields a fresh temporary folder beside ``path``; when the block ends without an error it takes ``path``'s
    place (an old ``path`` is moved aside first, then removed), else it is removed and ``path`` is as it was.
    A process killed in between leaves either the old folder or the new one at ``path``, and temporary
    folders (``.{name}.{pid}-{random}.fusionrs-tmp``) that a later save of the same folder removes."""
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.iterdir():  # left by a save that was killed (a name, not a glob pattern)
        got = tmp_target(stale.name)
        if got and got[0] == target.name and not writer_alive(got[1]) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_path(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = tmp_path(target) if target.exists() or target.is_symlink() else None
    if old is not None:
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
