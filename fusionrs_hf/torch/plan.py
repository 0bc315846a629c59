"""Where the data is and the work plan: the repo's filesystem, the split's shards and their row groups
(:class:`Unit`), shard fingerprints (to notice rewrites), and how an epoch's rows are cut into rank and
worker slices (``_slot_pieces``, ``_buffer_order``, ``_resolve_rank``). See :mod:`fusionrs_hf.torch`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..decode import DecodeError
from ..errors import UnusableInputError
from ..layout import SPLITS, layout_for
from ..limits import too_many_rows
from ..storage import locate
from .reader import FOOTER_THREADS, Footer, is_local, read_footers


def resolve_repo(repo_or_path: str | os.PathLike, revision: str | None = None,
                 storage_options: dict | None = None):
    """(fsspec filesystem, root) for a local folder, an fsspec URL or a Hub dataset id.

    See :mod:`fusionrs_hf.storage`: ``storage_options`` go to the store's filesystem, and a Hub repo is
    asked once, quickly (:class:`~fusionrs_hf.storage.HubUnreachableError` when offline or unreachable).
    """
    from ..secrets import register_url, scrubbing

    if isinstance(repo_or_path, str):
        register_url(repo_or_path)
    with scrubbing():  # a server echoing the token in its error must not put it in this exception
        loc = locate(repo_or_path, revision, storage_options)
        loc.ensure_reachable()
        return loc.fs(), loc.root


def agree_on_commit(repo_or_path: str | os.PathLike, revision: str | None = None,
                    storage_options: dict | None = None) -> str | None:
    """The commit a Hub repo's ``revision`` (default: main) names, the same on every DDP rank: rank 0 asks the
    Hub and sends its answer to the others (``torch.distributed.broadcast_object_list``; call it on every rank
    of the initialized process group). None for local folders and other stores.

    Why: each rank's loader pins the commit its revision names when it is made, so a push landing between two
    ranks' loaders would give them different shards, and then different batch counts (a hang at the end of
    the epoch). Pass the answer as ``revision=`` on every rank; the job then reads that commit throughout.
    """
    from ..secrets import register_url, scrub, scrubbing

    dist = torch.distributed
    shared = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if isinstance(repo_or_path, str):
        register_url(repo_or_path)
    answer: list = [None]
    if not shared or dist.get_rank() == 0:
        try:
            with scrubbing():
                answer[0] = ("commit", locate(repo_or_path, revision, storage_options).commit())
        except Exception as e:  # noqa: BLE001 - sent to every rank, so that none waits for an answer forever
            if not shared:
                raise
            answer[0] = ("error", scrub(f"{type(e).__name__}: {e}"))
    if shared:
        dist.broadcast_object_list(answer, src=0)
    kind, value = answer[0]
    if kind == "error":
        raise RuntimeError(f"agree_on_commit: rank 0 could not ask the Hub: {value}")
    return value


@dataclass(frozen=True)
class Unit:
    """One row group of one shard: the unit of work."""

    shard: str
    """Repo-relative shard path (as in the card's ``data_files``)."""
    row_group: int
    row_offset: int
    """Index of the row group's first row within the shard (for error messages)."""
    num_rows: int


def split_files(fs, root: str, config: str, split: str) -> list[str]:
    """The repo-relative shard paths of a config's split, sorted."""
    lay = layout_for(fs, root)  # the repo's own sources have configs too
    lay.get_config(config)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    shards, _ = lay.list_shards(fs, root)
    files = lay.config_files(config, split, [s.path for s in shards])
    if not files:
        raise FileNotFoundError(f"no shards for config {config!r} split {split!r} under {root}")
    return files


def _fingerprint(info: dict) -> tuple:
    """What tells a rewritten file from the one planned: size, mtime, ETag, git blob id, LFS SHA-256."""
    lfs = info.get("lfs")
    lfs_sha = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
    mtime = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    return (info.get("size"), str(mtime) if mtime is not None else None, info.get("ino"),
            info.get("ETag") or info.get("etag"), info.get("blob_id"), lfs_sha)


def _listed_infos(fs, paths: Sequence[str]) -> list[dict | None]:
    """Each path's entry in the filesystem's listing cache (hf://, s3://, http after a glob), or None.

    Read from the cache itself (some filesystems' ``info()`` ignores it: fsspec's HTTP one sends a HEAD),
    one name index per folder, so a folder of thousands of shards costs one pass over its entries."""
    cache = getattr(fs, "dircache", None)
    if not cache:
        return [None] * len(paths)
    index: dict[str, dict[str, dict]] = {}
    out: list[dict | None] = []
    try:
        for path in paths:
            name = fs._strip_protocol(path)
            parent = fs._parent(name)
            if parent not in index:
                index[parent] = {fs._strip_protocol(e["name"]): e for e in cache.get(parent) or ()
                                 if isinstance(e, dict) and "name" in e}
            out.append(index[parent].get(name))
    except Exception:  # noqa: BLE001 - a filesystem without these helpers: ask it
        return [None] * len(paths)
    return out


def shard_fingerprints(fs, root: str, files: Sequence[str]) -> dict[str, tuple]:
    """``{shard: fingerprint}`` from the filesystem's listing (no file is opened; remote: many at once)."""
    def one(rel: str) -> tuple:
        return _fingerprint(fs.info(f"{root}/{rel}"))

    if is_local(fs) or len(files) <= 1:
        return {rel: one(rel) for rel in files}
    cached = _listed_infos(fs, [f"{root}/{rel}" for rel in files])
    if all(cached):  # the listing just made has them all: no request, no thread pool
        return {rel: _fingerprint(info) for rel, info in zip(files, cached, strict=True)}
    with ThreadPoolExecutor(min(FOOTER_THREADS, len(files))) as pool:
        return dict(zip(files, pool.map(one, files), strict=True))


def plan_units(fs, root: str, config: str, split: str, files: Sequence[str] | None = None,
               unreadable: list[tuple[str, str]] | None = None) -> list[Unit]:
    """The split's row groups, in sorted shard order, from the parquet footers only.

    A shard whose footer cannot be read raises :class:`DecodeError` naming it; with ``unreadable`` (a
    list) it is appended there as ``(shard, reason)`` instead and contributes no rows. Remote footers are
    read with one ranged read each, many at once (:func:`~fusionrs_hf.torch.reader.read_footers`).
    """
    if files is None:
        files = split_files(fs, root, config, split)
    return plan_shards(fs, root, files, unreadable)[0]


def _local_size(fs, path: str) -> int | None:
    try:
        return int(fs.size(path))
    except (OSError, TypeError, ValueError):
        return None


def plan_shards(fs, root: str, files: Sequence[str], unreadable: list[tuple[str, str]] | None = None,
                sizes: dict[str, int] | None = None) -> tuple[list[Unit], dict[str, Footer]]:
    """:func:`plan_units` for ``files``, and for remote shards ``{shard: Footer}``, which the workers'
    readers take instead of asking for the footer (or, on the Hub, the file's URL) again."""
    got = read_footers(fs, [f"{root}/{rel}" for rel in files],
                       [(sizes or {}).get(rel) for rel in files])
    units: list[Unit] = []
    footers: dict[str, Footer] = {}
    for rel, (md, footer) in zip(files, got, strict=True):
        if isinstance(md, Exception):  # truncated footer, not parquet, unreadable: name the shard
            reason = f"cannot read the parquet footer: {type(md).__name__}: {md}"
        else:
            # more rows than the shard's bytes allow: refused at planning, so that a skipping loader does not
            # walk (and list) two million hostile rows one by one
            size = footer.size if footer is not None else (sizes or {}).get(rel)
            reason = too_many_rows(md, None, size if size is not None else _local_size(fs, f"{root}/{rel}"))
        if reason is not None:
            if unreadable is None:
                raise DecodeError(f"shard={rel}: {reason}") from None
            unreadable.append((rel, reason))
            continue
        offset = 0
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            if n:
                units.append(Unit(rel, i, offset, n))
            offset += n
        if footer is not None:
            footers[rel] = footer
    return units, footers


def _slot_pieces(units: Sequence[Unit], order: np.ndarray, start: int, stop: int) -> list[tuple[int, int, int]]:
    """The (unit index, first row, end row) pieces covering positions [start, stop) of the sequence."""
    sizes = np.array([units[i].num_rows for i in order], dtype=np.int64)
    ends = np.cumsum(sizes)
    pieces = []
    i = int(np.searchsorted(ends, start, side="right"))
    pos = start
    while pos < stop:
        first = pos - (int(ends[i]) - int(sizes[i]))
        take = min(int(sizes[i]) - first, stop - pos)
        pieces.append((int(order[i]), first, first + take))
        pos += take
        i += 1
    return pieces


def _buffer_order(n: int, buffer: int, rng: np.random.Generator) -> np.ndarray:
    """Emission order of a buffer shuffle over positions 0..n-1 (what a streaming shuffle buffer does).

    Computed on integers up front so the order is known before any data is read: rows then only
    wait in memory until their turn (at most ``buffer`` of them), and a resumed run can skip
    exactly the rows already emitted.
    """
    if buffer <= 1 or n <= 1:
        return np.arange(n, dtype=np.int64)
    size = min(buffer, n)
    buf = list(range(size))
    out = np.empty(n, dtype=np.int64)
    picks = rng.integers(0, size, n - size).tolist()
    k = 0
    for nxt, j in zip(range(size, n), picks, strict=True):
        out[k] = buf[j]
        buf[j] = nxt
        k += 1
    out[k:] = rng.permutation(buf)
    return out


class RankEnvError(UnusableInputError, ValueError):
    """``RANK`` / ``WORLD_SIZE`` set to something that is not an integer; ``str()`` names the variable."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise RankEnvError(f"environment variable {name}={value[:40]!r} is not an integer (torchrun sets RANK and "
                           "WORLD_SIZE; fix or unset it, or pass rank= and world_size=)") from None


def _resolve_world(world_size: int | None) -> int:
    """``world_size`` if given, else the initialized process group's, else torchrun's ``WORLD_SIZE``, else 1:
    what a batch count needs (no rank: a Lightning-launched process knows its world size before its rank)."""
    if world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return int(torch.distributed.get_world_size())
        world_size = _env_int("WORLD_SIZE", 1)
    if world_size < 1:
        raise ValueError(f"invalid world_size {world_size}")
    return int(world_size)


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else the initialized process group, else torchrun's env vars, else (0, 1)."""
    if world_size is not None and world_size < 1:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    world_size = _resolve_world(world_size)
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
        elif world_size > 1 and _env_int("RANK", -1) < 0:
            raise RankEnvError(
                f"WORLD_SIZE={world_size} is set but nothing says which rank this process is (no RANK, no "
                "initialized process group): read before the process group exists, every process would read "
                "rank 0's rows. Iterate after init_process_group (Lightning's DDP launcher: pass the loader to "
                "Trainer.fit, or make it in train_dataloader()), set RANK, or pass rank= and world_size=")
        else:
            rank = _env_int("RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)
