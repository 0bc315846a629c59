"""FusionRS triplets into torch training loops: parquet shards -> normalized RGB/IR batches, fast.

One call::

    from fusionrs_hf.torch import make_dataloader
    loader = make_dataloader("fusionrs/fusionrs", config="iraware", split="train", batch_size=64,
                             num_workers=8, image_size=224, shuffle=True, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for batch in loader:   # {"rgb": (B,3,224,224) float (channels-last), "ir": ..., "caption": [...], ...}
            ...

Why not ``load_dataset(..., streaming=True)`` + a DataLoader: stock decoding does a full-size PIL
decode of every image, workers idle when there are fewer shards than workers, and equal work per
DDP rank is not guaranteed. This module reads the parquet shards itself (pyarrow, only the needed
columns, one row group at a time) and decodes the JPEG bytes at reduced DCT scale
(:mod:`fusionrs_hf.decode`).

Work assignment (the rule the code follows)
-------------------------------------------
* The unit of work is a row group of a shard. The epoch's unit order is the sorted shard order,
  or a permutation seeded by ``(seed, epoch)`` when ``shuffle=True``. Concatenated, the units form
  one virtual sequence of the split's ``N`` rows.
* DDP: every rank gets exactly ``N // world_size`` rows: rank ``r`` reads the contiguous range
  ``[r * N//W, (r+1) * N//W)`` of the sequence. The ``N % world_size`` rows at the very end of the
  epoch's order (at most ``world_size - 1``; different rows each epoch when shuffling) are not read
  in that epoch. Ranks are disjoint and their union is the whole split minus those rows.
* Workers: a rank's range is cut into ``num_workers`` contiguous slices whose sizes differ by at
  most one, in the same way on every rank. Slices may start and end inside a row group, so
  workers never idle even with a single shard. Because every rank has the same per-worker row
  counts, every rank yields the same number of batches (``len(loader)``) - no hang at the end of
  an epoch. (``drop_last`` drops each worker's final partial batch.)
* Shuffle: besides the unit permutation, each worker emits its rows through a buffer shuffle of
  ``shuffle_buffer`` rows seeded by ``(seed, epoch, rank, worker)``. Only raw bytes sit in the
  buffer; images are decoded after the shuffle, per batch.
* Batches are made in the dataset (``batch_size`` rows of one worker) and the DataLoader runs
  with ``batch_size=None``: each image is decoded, resized and normalized straight into a
  shared-memory batch tensor, stored channels-last (``channels_last=True``, the default): torch's
  resize writes (H, W, 3) pixels, and normalizing them into (B, H, W, 3) memory runs along
  contiguous rows (measured 54-62 against 118-140 us per 224 px image into NCHW). A worker
  keeps a few such slots (``prefetch_factor + 2``) and writes batch after batch into them,
  sending each slot to the training process once; the loader hands a slot back only when no
  tensor, view or array of the user's references it any more (:class:`_SlotTable`), so a batch
  you keep is never overwritten, it only costs a fresh slot.
  Without workers, batches are made in the training process into pooled tensors, reused on the
  same rule.
* Resume: a worker's state is ``(epoch, rows consumed)``; as the order is a pure function of the
  seed, epoch and slot, a restart skips the consumed rows without reading them (torchdata
  ``StatefulDataLoader``, ``stateful=True``). Resuming needs the same ``num_workers``,
  ``world_size``, ``batch_size``, ``seed``, ``shuffle_buffer`` and split (row count); otherwise
  ``load_state_dict`` (or the first ``next``) raises. A checkpoint taken before a worker has
  delivered its first batch of the epoch records that worker at 0 rows, so it resumes too.
* Bad data: by default a corrupt or missing image raises :class:`~fusionrs_hf.decode.DecodeError`
  naming the sample id, the shard and the row; so does a parquet page or footer that cannot be read
  (shard and first unread row). With ``on_error="skip"`` the row is left out of its batch (that batch
  is smaller, the batch count stays equal across ranks), counted in ``loader.skipped`` (a
  shared-memory counter, summed over workers) and named in a warning at the end of each worker's
  epoch; the unread rows of a corrupt page count the same way, and a shard whose footer cannot be
  read when planning is left out (``skipped_shards``) with a warning.
* Re-planning: the plan remembers each shard's size, mtime, inode, ETag and digest. ``set_epoch``
  (or the start of a pass) looks again; if a shard was rewritten, added or removed it warns naming
  them and re-plans (persistent workers follow), and ``len(loader)`` gives the new count.

Any ``datasets.IterableDataset`` of FusionRS rows also works (``FusionRSIterable(source=ds)``):
its image columns are cast to ``Image(decode=False)`` and decoded here, DDP uses
``split_dataset_by_node`` and resume uses the dataset's own ``state_dict``; that generic path
keeps the `datasets` rules for shards and ranks (equal batch counts are not guaranteed).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .decode import (
    CLIP_MEAN,
    CLIP_STD,
    DecodeError,
    Normalizer,
    center_crop_resize,
    decode_rgb,
    empty_images,
    image_strides,
    is_channels_last,
    pil_to_array,
)
from .layout import SPLITS, layout_for
from .schema import FIELD_NAMES, IMAGE_FIELDS
from .secrets import SCRUB_FILTER, register_url, scrub, scrubbing
from .storage import Location, locate, require

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "BATCH_KEYS", "DecodeError", "FusionRSIterable", "FusionRSDataLoader",
    "Unit", "make_dataloader", "normalize_batch", "plan_units", "resolve_repo",
]

logger = logging.getLogger(__name__)
logger.addFilter(SCRUB_FILTER)

BATCH_KEYS = ("rgb", "ir", "caption", "ir_caption", "sample_id", "source")
ON_ERROR = ("raise", "skip")
STATE_FORMAT = "fusionrs-stream/1"
_MAX_COUNTER_SLOTS = 256


# ---------------------------------------------------------------------------------------------
# Where the data is, and what the units of work are


def resolve_repo(repo_or_path: str | os.PathLike, revision: str | None = None,
                 storage_options: dict | None = None):
    """(fsspec filesystem, root) for a local folder, an fsspec URL or a Hub dataset id.

    See :mod:`fusionrs_hf.storage`: ``storage_options`` go to the store's filesystem, and a Hub repo is
    asked once, quickly (:class:`~fusionrs_hf.storage.HubUnreachableError` when offline or unreachable).
    """
    loc = locate(repo_or_path, revision, storage_options)
    loc.ensure_reachable()
    return loc.fs(), loc.root


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


def shard_fingerprints(fs, root: str, files: Sequence[str]) -> dict[str, tuple]:
    """``{shard: fingerprint}`` from the filesystem's listing info (no file is opened)."""
    return {rel: _fingerprint(fs.info(f"{root}/{rel}")) for rel in files}


def plan_units(fs, root: str, config: str, split: str, files: Sequence[str] | None = None,
               unreadable: list[tuple[str, str]] | None = None) -> list[Unit]:
    """The split's row groups, in sorted shard order, from the parquet footers only.

    A shard whose footer cannot be read raises :class:`DecodeError` naming it; with ``unreadable`` (a
    list) it is appended there as ``(shard, reason)`` instead and contributes no rows.
    """
    import pyarrow.parquet as pq

    if files is None:
        files = split_files(fs, root, config, split)

    def footer(rel: str) -> list[Unit]:
        try:
            with fs.open(f"{root}/{rel}", "rb") as f:
                md = pq.ParquetFile(f).metadata
        except Exception as e:  # noqa: BLE001 - truncated footer, not parquet, unreadable: name the shard
            reason = f"cannot read the parquet footer: {type(e).__name__}: {e}"
            if unreadable is None:
                raise DecodeError(f"shard={rel}: {reason}") from None
            unreadable.append((rel, reason))
            return []
        out, offset = [], 0
        for i in range(md.num_row_groups):
            n = md.row_group(i).num_rows
            if n:
                out.append(Unit(rel, i, offset, n))
            offset += n
        return out

    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    with ThreadPoolExecutor(1 if local else 16) as pool:
        return [u for units in pool.map(footer, files) for u in units]


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


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Explicit values, else the initialized process group, else torchrun's env vars, else (0, 1)."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            r, w = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            r, w = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        rank = r if rank is None else rank
        world_size = w if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)


def _shared_empty(shape: tuple[int, ...], dtype: torch.dtype, in_worker: bool,
                  channels_last: bool = False) -> torch.Tensor:
    """An image tensor (..., 3, H, W) whose storage is already in shared memory inside a DataLoader worker.

    Sending it to the main process then passes a handle instead of copying it into shared
    memory first (the same trick as ``default_collate``). Sizes and strides travel with the
    handle, so a channels-last tensor arrives channels-last.
    """
    if not in_worker:
        return empty_images(shape, dtype, channels_last=channels_last)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return proto.set_(storage, 0, shape, image_strides(shape, channels_last))


def _storage_uses(t: torch.Tensor) -> int:
    """Tensors (views included) sharing ``t``'s storage, plus 1 for the temporary storage object.

    A numpy array from ``.numpy()`` holds the tensor itself, so callers also check the tensor's
    Python reference count.
    """
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


_SLOT_KEY = "_fusionrs_slot"
"""Private batch key: ``(worker, generation, slot, rows)`` of the slot a batch was written into."""
_SLOT_TENSOR_KEY = "_fusionrs_slot_tensor"
"""Private batch key: the whole slot tensor, sent with the first batch written into the slot."""
_RING_MAX = 16


class _SlotTable:
    """Which of the workers' batch slots may be written again: shared memory, one row per worker.

    Why slots at all: a fresh shared-memory segment per batch costs a page fault per 4 KiB on first
    write (a 32-row float batch of 224 px pairs is 38 MB: ~9,400 faults), more than normalizing
    the pixels. So each worker keeps a few segments and writes batch after batch into them. A slot
    may only be rewritten once nobody in the training process can see it any more, and only the
    loader there can tell: it hands the slot back (``owner = +generation``) when no tensor, view
    or array of the user's still references the slot's storage.

    ``owner[w, k]``: ``+g`` - slot ``k`` of worker ``w``'s generation-``g`` ring is free; anything
    else - in use (``-g``) or of another generation. ``gen[w]``: worker ``w``'s current ring
    generation, bumped each time a worker starts a pass (a new process, or a new epoch of a
    persistent one), so a late hand-back for an old ring can never free a slot of the new one.
    """

    def __init__(self) -> None:
        self.owner = torch.zeros((_MAX_COUNTER_SLOTS, _RING_MAX), dtype=torch.int64).share_memory_()
        self.gen = torch.zeros(_MAX_COUNTER_SLOTS, dtype=torch.int64).share_memory_()
        self.counts = torch.zeros((_MAX_COUNTER_SLOTS, 3), dtype=torch.int64).share_memory_()
        """Per worker: slots allocated, batches written into a reused slot, batches in fresh memory."""

    def stats(self) -> dict[str, int]:
        allocated, reused, fresh = (int(x) for x in self.counts.sum(0))
        return {"slots_allocated": allocated, "slot_reuses": reused, "fresh_batches": fresh}

    def release(self, token: tuple[int, int, int]) -> None:
        worker, gen, k = token
        if int(self.gen[worker]) == gen:  # an older ring is never written again: nothing to free
            self.owner[worker, k] = gen


class _SlotReceiver:
    """The training-process side of the slots: puts batch tensors back together, hands slots back.

    Sending a tensor through the DataLoader's queue passes its shared-memory file descriptor over
    a socket and maps it again in this process, batch after batch; measured, that costs 5-7% of
    throughput on 2 cores. So a worker sends each slot's tensor once, with the first batch written
    into it, and later batches carry only ``(worker, generation, slot, rows)``; ``rgb``/``ir`` are
    views of the slot made here. With ``pin_memory`` the DataLoader's pin thread must see the
    tensors, so then every batch carries them (``send_slots_once=False``) and the pinned copy frees
    the slot at once.
    """

    def __init__(self, table: _SlotTable) -> None:
        self.table = table
        self.slots: dict[tuple[int, int], tuple[int, torch.Tensor]] = {}
        self.handouts: list[tuple[tuple[int, int, int], torch.Tensor | None]] = []

    def receive(self, batch):
        token = batch.pop(_SLOT_KEY, None) if isinstance(batch, dict) else None
        if token is None:
            return batch
        worker, gen, k, rows = token
        slot = batch.pop(_SLOT_TENSOR_KEY, None)
        if slot is not None:
            for key in [key for key, (g, _) in self.slots.items() if key[0] == worker and g != gen]:
                del self.slots[key]  # the worker started a new pass: its old slots are never sent again
            self.slots[(worker, k)] = (gen, slot)
        if batch.get("rgb") is not None:  # tensors sent with the batch (pin_memory)
            rgb = batch["rgb"]
            if isinstance(rgb, torch.Tensor) and rgb.is_shared():  # not pinned after all (no CUDA)
                self.handouts.append(((worker, gen, k), rgb))
            else:
                self.table.release((worker, gen, k))
            return batch
        have = self.slots.get((worker, k))
        if have is None or have[0] != gen:
            raise RuntimeError(f"fusionrs: batch from slot {k} of worker {worker} (pass {gen}) arrived "
                               "before the slot itself; was a batch dropped on the way?")
        batch["rgb"], batch["ir"] = have[1][0, :rows], have[1][1, :rows]
        self.handouts.append(((worker, gen, k), None))
        return batch

    def end_pass(self) -> None:
        """Forget this pass's slots: its workers never write them again (a new pass makes new ones).

        Without this the training process would keep every worker's slots mapped between epochs
        and after training (``num_workers * (prefetch_factor + 2)`` batches); batches the user
        still holds keep their own slot alive.
        """
        self.slots.clear()
        self.handouts.clear()

    def release_unused(self, keep: int = 64) -> None:
        """Hand back every slot no tensor, view or array outside this object references any more."""
        handouts, i = self.handouts, 0
        while i < len(handouts):
            (worker, gen, k), t = handouts[i]
            if t is None:
                have = self.slots.get((worker, k))
                if have is None or have[0] != gen:  # a finished pass's slot: never reused, forget it
                    handouts.pop(i)
                    continue
                # references to the slot's storage: the slot tensor kept here and the temporary
                # storage object; every view handed out (rgb, ir, slices, numpy arrays) adds one
                free = _storage_uses(have[1]) == 2
                del have
            else:
                # `t`: the list's tuple, the local name and getrefcount's argument; its storage: `t`
                # and the temporary storage object
                free = sys.getrefcount(t) == 3 and _storage_uses(t) == 2
            del t
            if free:
                self.table.release(handouts.pop(i)[0])
            else:
                i += 1
        del handouts[:-keep]  # kept for long by the user: those slots stay taken for this pass


class _SlotRing:
    """A worker's reusable batch slots for one pass; see :class:`_SlotTable`."""

    def __init__(self, table: _SlotTable, worker: int, size: int) -> None:
        self.table, self.worker = table, worker
        self.size = min(size, _RING_MAX) if worker < _MAX_COUNTER_SLOTS else 0
        self.slots: list[torch.Tensor] = []
        self.gen = 0
        if self.size:
            table.gen[worker] += 1
            self.gen = int(table.gen[worker])
            table.owner[worker] = self.gen  # no slot of this generation exists yet: all free

    def take(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, channels_last: bool = False,
             ) -> tuple[torch.Tensor, tuple[int, int, int], bool] | None:
        """A free slot of ``shape``, marked in use, its token and whether it is new; else None.

        Slots are allocated on first need, up to ``size``.
        """
        if not self.size:
            return None
        owner = self.table.owner[self.worker]
        counts = self.table.counts[self.worker]
        for k, buf in enumerate(self.slots):
            if (tuple(buf.shape) == shape and buf.dtype == dtype and is_channels_last(buf) == channels_last
                    and int(owner[k]) == self.gen):
                owner[k] = -self.gen
                counts[1] += 1
                return buf, (self.worker, self.gen, k), False
        if len(self.slots) < self.size:
            k = len(self.slots)
            self.slots.append(_shared_empty(shape, dtype, True, channels_last))
            owner[k] = -self.gen
            counts[0] += 1
            return self.slots[k], (self.worker, self.gen, k), True
        counts[2] += 1
        return None


def _image_value(value, where: str):
    """bytes | {"bytes": ...} | PIL image -> bytes or PIL image; None means missing."""
    if value is None:
        return None
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is None and value.get("path"):
            raise DecodeError(f"{where}: image given only as a path {value['path']!r}; embed the bytes")
        return data
    return value


# ---------------------------------------------------------------------------------------------
# The dataset


class FusionRSIterable(IterableDataset):
    """A torch ``IterableDataset`` yielding FusionRS batches (or VLM samples in a subclass).

    Give either ``repo_or_path`` (+ ``config``, ``split``): the fast path, shards read directly;
    or ``source``: any ``datasets.IterableDataset`` of FusionRS rows (generic path). With
    ``batch_size=None`` it yields single rows (tensors without the batch dimension) for users who
    batch in their own DataLoader (``collate_fn=``:func:`collate_rows`); :func:`make_dataloader`
    uses dataset-side batches.
    """

    columns: tuple[str, ...] = ("sample_id", "source", "rgb.bytes", "ir.bytes", "caption", "ir_caption")

    def __init__(
        self,
        repo_or_path: str | os.PathLike | None = None,
        config: str = "iraware",
        split: str = "train",
        *,
        source=None,
        batch_size: int | None = 32,
        image_size: int = 224,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        tokenizer: Callable | None = None,
        on_error: str = "raise",
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        revision: str | None = None,
        decode_backend: str = "auto",
        normalize: bool = True,
        channels_last: bool = True,
        storage_options: dict | None = None,
    ) -> None:
        super().__init__()
        if (repo_or_path is None) == (source is None):
            raise ValueError("give exactly one of repo_or_path or source")
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        unknown = [c for c in self.columns if c.split(".", 1)[0] not in FIELD_NAMES]
        if unknown:  # a subclass's column list must name schema fields (fusionrs_hf.schema)
            raise ValueError(f"{type(self).__name__}.columns: not FusionRS fields: {unknown}")
        self.batch_size, self.image_size = batch_size, int(image_size)
        self.shuffle, self.seed, self.shuffle_buffer = bool(shuffle), int(seed), int(shuffle_buffer)
        self.tokenizer, self.on_error, self.drop_last = tokenizer, on_error, bool(drop_last)
        self.normalizer = Normalizer(mean, std)
        self.decode_backend = decode_backend
        self.normalize = bool(normalize)
        """False: ``rgb``/``ir`` stay uint8 (crop + resize only), for :func:`normalize_batch` on the GPU."""
        self.channels_last = bool(channels_last)
        """``rgb``/``ir`` (B, 3, H, W) stored as (B, H, W, 3), torch's ``channels_last`` (see make_dataloader)."""
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.config, self.split = config, split
        self.source = source
        self.num_workers_hint = 0
        """Set by :func:`make_dataloader`; used by ``__len__`` to count batches exactly."""
        self.ring_size = 0
        """Shared-memory batch slots a worker may reuse (0: a fresh segment per batch).

        Set by :func:`loader_for` to ``prefetch_factor + 2``, because only its loaders hand slots
        back (see :class:`_SlotRing`); a plain ``DataLoader`` over this dataset gets fresh memory."""
        self.send_slots_once = False
        """Send each slot tensor once and later only its token (see :class:`_SlotReceiver`)."""
        self._fingerprints: dict[str, tuple] = {}
        self.skipped_shards: list[str] = []
        """Shards left out of the plan because their footer could not be read (``on_error="skip"``)."""
        self._loc: Location | None = None
        """Where the shards are; its filesystem is opened in each process that reads (fork-safe)."""
        if source is None:
            if isinstance(repo_or_path, str):
                register_url(repo_or_path)
            with scrubbing():  # a server echoing the token in its error must not put it in this exception
                self._loc = locate(repo_or_path, revision, storage_options)
                self._loc.ensure_reachable()
                self.root = self._loc.root
                self.units, self._fingerprints = self._plan()
        else:
            self.root, self.units = None, []
        # Plan generation, shared with the workers: a persistent worker re-plans when it changed.
        self._plan_gen = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._my_plan_gen = 0
        self._plan_fresh = True
        """Planned (or re-planned) since the last pass started: the next pass need not look again."""
        # Shared memory so set_epoch() reaches persistent workers and worker skip counts reach us.
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._passes = 0
        """Passes begun in the training process (see :meth:`_begin_pass`)."""
        self._epoch_explicit = False
        self._pass_begun = False
        """Set by the loader when it began the pass here (``num_workers=0``): ``__iter__`` must not again."""
        self._skipped = torch.zeros(_MAX_COUNTER_SLOTS, dtype=torch.int64).share_memory_()
        self._slots = _SlotTable()
        self._pool = _OutputPool()
        self._ring: _SlotRing | None = None
        self._resume: dict | None = None
        self._consumed = 0
        self._pass_epoch: int | None = None
        """Epoch of the pass ``_consumed`` counts in this process (None: no pass started here yet)."""
        self._slot = (self.rank, self.world_size, 0, 1)
        self._generic_ds = None

    # -- public bookkeeping ------------------------------------------------------------------

    @property
    def fs(self):
        """This process's filesystem for the shards (None for a ``source=`` dataset).

        Opened on first use in each process: a DataLoader worker (fork, spawn or forkserver) never uses
        the training process's instance, which fsspec's async filesystems (s3fs) do not allow after a fork.
        """
        return self._loc.fs() if self._loc is not None else None

    @property
    def location(self) -> Location | None:
        return self._loc

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle for a new epoch (call before iterating, as with ``DistributedSampler``).

        Also looks at the shards again (:meth:`refresh_plan`): a shard rewritten, added or removed since
        the plan is re-planned now, so ``len(loader)`` is already right for this epoch.
        """
        self._epoch[0] = int(epoch)
        self._epoch_explicit = True
        self.refresh_plan()
        self._plan_fresh = True

    def _begin_pass(self) -> None:
        """A new pass starts (in the training process): the epoch advances by one unless :meth:`set_epoch`
        (or ``load_state_dict``) was called since the last pass began; the first pass keeps its epoch.

        So a loop that never calls ``set_epoch`` (Lightning's, a plain ``for epoch ...: for batch in
        loader``) still gets a new shuffle order each epoch, as litdata and webdataset do; an explicit
        ``set_epoch`` always wins. The epoch lives in shared memory, so (persistent) workers follow.
        """
        if self._passes and not self._epoch_explicit:
            self._epoch[0] = self.epoch + 1
        self._passes += 1
        self._epoch_explicit = False

    # -- the plan ----------------------------------------------------------------------------

    def _plan(self) -> tuple[list[Unit], dict[str, tuple]]:
        files = split_files(self.fs, self.root, self.config, self.split)
        fingerprints = shard_fingerprints(self.fs, self.root, files)
        return self._plan_files(files), fingerprints

    def _plan_files(self, files: Sequence[str]) -> list[Unit]:
        """Units of ``files``; with ``on_error="skip"`` a shard with an unreadable footer is left out, named
        in a warning and in :attr:`skipped_shards`."""
        bad: list[tuple[str, str]] | None = [] if self.on_error == "skip" else None
        units = plan_units(self.fs, self.root, self.config, self.split, files, unreadable=bad)
        self.skipped_shards = [rel for rel, _ in bad or []]
        if bad:
            msg = scrub(f"fusionrs: skipping {len(bad)} unreadable shard(s) of {self.config}/{self.split} "
                        "(on_error='skip'): " + "; ".join(f"{rel}: {why}" for rel, why in bad[:5]))
            logger.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
        return units

    def refresh_plan(self) -> bool:
        """Re-plan if any shard of the split was rewritten (size, mtime, ETag or digest differ), added or
        removed since the plan; warn naming them. True if the plan changed. (Fast path only.)

        Called at the start of every epoch (``set_epoch``, or the first batch of a pass without it), in
        the training process: the workers of the next pass get the new plan (persistent ones re-plan
        themselves). A shard rewritten *during* an epoch is detected when it is opened (its row groups no
        longer match the plan) and reported as unreadable rows of that shard.
        """
        if self.source is not None:
            return False
        with scrubbing():
            if hasattr(self.fs, "invalidate_cache"):
                self.fs.invalidate_cache()  # a cached listing would hide the change (hf://, s3://)
            files = split_files(self.fs, self.root, self.config, self.split)
            fingerprints = shard_fingerprints(self.fs, self.root, files)
            if fingerprints == self._fingerprints:
                return False
            units = self._plan_files(files)
        old, new = set(self._fingerprints), set(fingerprints)
        rewritten = sorted(f for f in old & new if self._fingerprints[f] != fingerprints[f])
        parts = [f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
                 for what, names in (("rewritten", rewritten), ("added", sorted(new - old)),
                                     ("removed", sorted(old - new))) if names]
        rows_before = sum(u.num_rows for u in self.units)
        self.units, self._fingerprints = units, fingerprints
        self._plan_gen += 1
        self._my_plan_gen = int(self._plan_gen[0])
        msg = scrub(f"fusionrs: the shards of {self.config}/{self.split} changed since they were planned "
                    f"({'; '.join(parts)}); re-planned: {sum(u.num_rows for u in units)} rows (were {rows_before})")
        logger.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return True

    def _refresh_for_pass(self) -> bool:
        """Once per pass: re-plan unless that was just done (``set_epoch`` or the loader did it)."""
        if self._plan_fresh:
            self._plan_fresh = False
            return False
        return self.refresh_plan()

    @property
    def skipped(self) -> int:
        """Rows skipped for bad images so far (``on_error="skip"``), summed over all workers."""
        return int(self._skipped.sum())

    @property
    def num_rows(self) -> int:
        """Rows this rank reads per epoch (fast path): ``N // world_size``."""
        if self.source is not None:
            raise TypeError("num_rows is unknown for a generic datasets source")
        return sum(u.num_rows for u in self.units) // self.world_size

    def worker_rows(self, num_workers: int) -> list[int]:
        """Rows per worker slice on this (and every) rank."""
        q, rem = divmod(self.num_rows, max(1, num_workers))
        return [q + (w < rem) for w in range(max(1, num_workers))]

    def __len__(self) -> int:
        """Batches per epoch on this rank (identical on every rank); rows when ``batch_size`` is None."""
        rows = self.worker_rows(self.num_workers_hint)
        if self.batch_size is None:
            return sum(rows)
        b = self.batch_size
        return sum((n // b) if self.drop_last else -(-n // b) for n in rows)

    # -- resume ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Where this copy of the dataset is: ``(epoch, rows consumed)`` of its slot.

        Also right before this copy has delivered anything (a worker whose first batch has not arrived
        when the checkpoint is taken, or the first batch of a new epoch): the slot is the one this copy
        runs in (from the worker info, not from a pass that has not started) and 0 rows are consumed.
        """
        worker, nworkers, _ = self._context()
        rank, world = self.rank, self.world_size
        consumed = int(self._consumed)
        if self._pass_epoch is None or self._pass_epoch != self.epoch:
            consumed = 0  # nothing of the current epoch has been read here yet
        state = {
            "format": STATE_FORMAT, "epoch": self.epoch, "consumed": consumed,
            "rank": rank, "world_size": world, "worker": worker, "num_workers": nworkers,
            "seed": self.seed, "shuffle": self.shuffle, "batch_size": self.batch_size,
            "shuffle_buffer": self.shuffle_buffer, "split_rows": self._split_rows(),
        }
        if self._generic_ds is not None:
            state["generic"] = self._generic_ds.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a FusionRS stream state (format {STATE_FORMAT!r} expected)")
        # The row order is a pure function of these: any difference would skip the wrong rows.
        # (shuffle_buffer and split_rows are absent from states saved by older versions.)
        mine = {"seed": self.seed, "shuffle": self.shuffle, "batch_size": self.batch_size,
                "shuffle_buffer": self.shuffle_buffer, "split_rows": self._split_rows()}
        for key, value in mine.items():
            if key in state and state[key] != value:
                raise ValueError(f"cannot resume: state has {key}={state[key]!r}, this dataset {value!r}")
        self._resume = dict(state)
        self._epoch[0] = int(state["epoch"])
        self._epoch_explicit = True

    def _split_rows(self) -> int | None:
        """Rows of the whole split (fast path): a resumed state must describe the same data."""
        return sum(u.num_rows for u in self.units) if self.source is None else None

    # -- iteration ---------------------------------------------------------------------------

    def _context(self) -> tuple[int, int, bool]:
        info = get_worker_info()
        if info is None:
            return 0, 1, False
        return info.id, info.num_workers, True

    def __iter__(self) -> Iterator:
        # In a worker, an exception travels to the training process as its formatted text: scrub it here.
        with scrubbing():
            yield from self._iter()

    def _iter(self) -> Iterator:
        worker, nworkers, in_worker = self._context()
        if not in_worker:
            if self._pass_begun:
                self._pass_begun = False
            else:
                self._begin_pass()
        if self.source is None:
            if not in_worker:
                self._refresh_for_pass()
            elif int(self._plan_gen[0]) != self._my_plan_gen:  # a persistent worker after a re-plan
                self.units, self._fingerprints = self._plan()
                self._my_plan_gen = int(self._plan_gen[0])
        self._slot = (self.rank, self.world_size, worker, nworkers)
        self._in_worker = in_worker
        self._skipped_ids: list[str] = []
        self._ring = (_SlotRing(self._slots, worker, self.ring_size)
                      if in_worker and self.ring_size and self.batch_size else None)
        resume, self._resume = self._resume, None
        if resume is not None:
            have = (resume["rank"], resume["world_size"], resume["worker"], resume["num_workers"])
            if have != self._slot:
                raise ValueError(
                    f"cannot resume: state was saved by rank/world/worker/num_workers={have}, "
                    f"this iterator is {self._slot}; resume with the same world_size and num_workers")
            self._epoch[0] = int(resume["epoch"])
        if self.source is not None:
            rows = self._generic_rows(resume)
            consumed0 = 0
        else:
            rows, consumed0 = self._fast_rows(resume)
        try:
            yield from self._batches(rows, consumed0)
        finally:
            if self._skipped_ids:
                ids = ", ".join(self._skipped_ids[:10]) + (" ..." if len(self._skipped_ids) > 10 else "")
                msg = scrub(f"fusionrs: worker {worker} of rank {self.rank} skipped {len(self._skipped_ids)} "
                            f"row(s) with unreadable data in epoch {self.epoch}: {ids}")
                logger.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def _batches(self, rows: Iterator[dict], consumed0: int) -> Iterator:
        self._consumed = consumed0
        self._pass_epoch = self.epoch
        if self.batch_size is None:
            for rec in rows:
                self._consumed += 1
                out = self._make_batch([rec])
                yield self._unbatch(out)
            return
        b = self.batch_size
        chunk: list[dict] = []
        for rec in rows:
            chunk.append(rec)
            if len(chunk) == b:
                self._consumed += b
                yield self._make_batch(chunk)
                chunk = []
        if chunk and not self.drop_last:
            self._consumed += len(chunk)
            yield self._make_batch(chunk)

    def _unbatch(self, batch: dict):
        return {k: (v[0] if len(v) else None) for k, v in batch.items()}

    def _fast_rows(self, resume: dict | None) -> tuple[Iterator[dict], int]:
        worker, nworkers = self._slot[2], self._slot[3]
        epoch = self.epoch
        n_units = len(self.units)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n_units) if self.shuffle
                 else np.arange(n_units))
        per_rank = sum(u.num_rows for u in self.units) // self.world_size
        q, rem = divmod(per_rank, nworkers)
        start = self.rank * per_rank + worker * q + min(worker, rem)
        n = q + (worker < rem)
        pieces = _slot_pieces(self.units, order, start, start + n)
        emit = (_buffer_order(n, self.shuffle_buffer, np.random.default_rng([self.seed, epoch, self.rank, worker]))
                if self.shuffle else np.arange(n, dtype=np.int64))
        consumed = 0
        if resume is not None:
            consumed = int(resume["consumed"])
            if not 0 <= consumed <= n:
                raise ValueError(f"cannot resume: state says {consumed} rows consumed of a {n}-row slice")
        return self._emit(pieces, emit, consumed), consumed

    def _emit(self, pieces, emit: np.ndarray, consumed: int) -> Iterator[dict]:
        n = len(emit)
        if consumed >= n:
            return
        if consumed == 0 and not self.shuffle:  # storage order, nothing to skip: rows as read
            for _, rec in self._read(pieces, 0):
                yield rec
            return
        done = np.zeros(n, dtype=bool)
        done[emit[:consumed]] = True
        first_needed = int(emit[consumed:].min())
        reader = self._read(pieces, first_needed)
        pending: dict[int, dict] = {}
        for k in range(consumed, n):
            pos = int(emit[k])
            while pos not in pending:
                p, rec = next(reader)
                if not done[p]:
                    pending[p] = rec
            yield pending.pop(pos)

    def _read(self, pieces, first_pos: int) -> Iterator[tuple[int, dict]]:
        """Rows of the slice in storage order as (position, raw record), from position ``first_pos`` on."""
        import pyarrow.parquet as pq

        if self._in_worker:
            try:
                import fsspec.asyn

                fsspec.asyn.reset_lock()  # a forked worker must not reuse the parent's event loop lock
            except (ImportError, AttributeError):
                pass
            import pyarrow as pa

            # A DataLoader worker only reads here: plain malloc hands each freed record batch back
            # instead of Arrow's default allocator keeping it cached: 30-50 MB less per worker.
            pa.set_memory_pool(pa.system_memory_pool())
        cols = list(self.columns)
        # Without a shuffle buffer a row is decoded right after it is read, so its image bytes can
        # stay views into Arrow's buffer (one copy less). Rows waiting in a shuffle buffer get their
        # own bytes: a view would keep its whole 64-row Arrow batch alive for as long as any row
        # of it waits, several times the buffer's size.
        zero_copy = not self.shuffle or self.shuffle_buffer <= 1
        local = self.fs is not None and "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        pos = 0
        open_name, pf, handle, open_error = None, None, None, None
        try:
            for unit_idx, first, end in pieces:
                unit = self.units[unit_idx]
                if pos + (end - first) <= first_pos:
                    pos += end - first
                    continue
                if unit.shard != open_name:
                    if handle is not None:
                        handle.close()
                    handle, pf, open_error = None, None, None
                    path = f"{self.root}/{unit.shard}"
                    try:
                        if local:  # memory-mapped: pages are read from the page cache without a copy
                            pf = pq.ParquetFile(path, memory_map=True)
                        else:
                            handle = self.fs.open(path, "rb")
                            pf = pq.ParquetFile(handle)
                    except Exception as e:  # noqa: BLE001 - truncated footer, not parquet, gone: named below
                        open_error = f"cannot open the parquet file: {type(e).__name__}: {e}"
                    open_name = unit.shard
                error = open_error
                if error is None:
                    md = pf.metadata
                    if unit.row_group >= md.num_row_groups or md.row_group(unit.row_group).num_rows != unit.num_rows:
                        error = ("the shard changed since this epoch was planned (its row groups differ from the "
                                 "plan); the next epoch re-plans")
                done = 0  # rows of this piece delivered
                if error is None:
                    try:
                        for pos_rec in self._read_piece(pf, unit, first, end, cols, zero_copy, pos):
                            yield pos_rec
                            done += 1
                    except Exception as e:  # noqa: BLE001 - a corrupt page: name the shard and row
                        error = f"cannot read row group {unit.row_group}: {type(e).__name__}: {e}"
                pos += done
                if error is not None:
                    row = unit.row_offset + first + done
                    where = f"shard={unit.shard} row={row}"
                    if self.on_error == "raise":
                        raise DecodeError(f"{where}: {error}")
                    # skip mode: the unread rows of this piece become rows that fail (counted, named)
                    for r in range(first + done, end):
                        yield pos, {"sample_id": None, "_shard": unit.shard, "_row": unit.row_offset + r,
                                    "_error": error}
                        pos += 1
        finally:
            if handle is not None:
                handle.close()

    def _read_piece(self, pf, unit: Unit, first: int, end: int, cols: list[str], zero_copy: bool,
                    pos: int) -> Iterator[tuple[int, dict]]:
        """Rows ``first..end-1`` of one row group as (position, raw record)."""
        row = 0  # row index within the row group
        # 64-row record batches (~5 MB of image bytes): malloc reuses such blocks where
        # 256-row ones were mapped afresh each time; reading measured 0.03-0.05 ms per row
        # against 0.06-0.09.
        for rb in pf.iter_batches(batch_size=64, row_groups=[unit.row_group], columns=cols, use_threads=False):
            m = rb.num_rows
            if row + m <= first:
                row += m
                continue
            lo, hi = max(first - row, 0), min(end - row, m)
            # slice first: only this slot's rows are copied out of Arrow (image bytes included)
            part = rb.slice(lo, hi - lo) if (lo, hi) != (0, m) else rb
            data = {name: self._column(part, name, zero_copy) for name in part.schema.names}
            for j in range(hi - lo):
                rec = {name: vals[j] for name, vals in data.items()}
                rec["_shard"] = unit.shard
                rec["_row"] = unit.row_offset + row + lo + j
                yield pos, rec
                pos += 1
            row += m
            if row >= end:
                break

    @staticmethod
    def _column(rb, name: str, zero_copy: bool = False) -> list:
        import pyarrow as pa

        col = rb.column(name)
        if hasattr(col.type, "num_fields") and col.type.num_fields:  # struct<bytes> from "rgb.bytes"
            col = col.field("bytes")
        if zero_copy and pa.types.is_binary(col.type) and len(col) and not col.null_count:
            _, offsets, data = col.buffers()
            off = np.frombuffer(offsets, dtype=np.int32)[col.offset: col.offset + len(col) + 1].tolist()
            view = memoryview(data).cast("B")  # keeps the Arrow buffer alive as long as a row's view
            return [view[a:b] for a, b in zip(off[:-1], off[1:], strict=True)]
        return col.to_pylist()

    def _generic_rows(self, resume: dict | None) -> Iterator[dict]:
        from datasets import Image
        from datasets.distributed import split_dataset_by_node

        ds = self.source
        feats = getattr(ds, "features", None) or {}
        for col in IMAGE_FIELDS:
            feat = feats.get(col)
            if isinstance(feat, Image) and feat.decode:
                ds = ds.cast_column(col, Image(decode=False))
        if self.world_size > 1:
            ds = split_dataset_by_node(ds, rank=self.rank, world_size=self.world_size)
        if self.shuffle:
            # max_buffer_input_shards=1: the 5.x default interleaves shards and collapses
            # num_shards (huggingface/datasets #8669), which starves workers and ranks.
            ds = ds.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer, max_buffer_input_shards=1)
        ds.set_epoch(self.epoch)
        if resume is not None and resume.get("generic") is not None:
            ds.load_state_dict(resume["generic"])
        self._generic_ds = ds
        for i, row in enumerate(ds):
            rec = dict(row)
            rec["_shard"] = "datasets source"
            rec["_row"] = i
            yield rec

    # -- batch assembly ----------------------------------------------------------------------

    def _fail(self, rec: dict, column: str, err: Exception | str) -> None:
        sid = rec.get("sample_id")
        msg = f"sample_id={sid!r} shard={rec.get('_shard')} row={rec.get('_row')} column={column!r}: {err}"
        if self.on_error == "raise":
            raise DecodeError(msg) from (err if isinstance(err, Exception) else None)
        self._skipped_ids.append(str(sid) if sid is not None else f"{rec.get('_shard')}#{rec.get('_row')}")
        worker = self._slot[2]
        self._skipped[(worker + 1) % _MAX_COUNTER_SLOTS] += 1
        logger.debug("skipping %s", msg)

    def _decode(self, value, rec: dict, column: str) -> torch.Tensor | None:
        try:
            if isinstance(value, bytes | memoryview) and len(value):  # the fast path's cells
                return center_crop_resize(decode_rgb(value, self.image_size, backend=self.decode_backend),
                                          self.image_size)
            value = _image_value(value, f"sample_id={rec.get('sample_id')!r}")
            if value is None:
                raise DecodeError("missing image")
            if isinstance(value, bytes | bytearray | memoryview):
                arr = decode_rgb(value, self.image_size, backend=self.decode_backend)
            elif hasattr(value, "convert"):  # a PIL image from a decoding datasets source
                arr = pil_to_array(value)
            elif isinstance(value, np.ndarray | torch.Tensor):
                arr = value
            else:
                raise DecodeError(f"unsupported image value of type {type(value).__name__}")
            return center_crop_resize(arr, self.image_size)
        except DecodeError as e:
            self._fail(rec, column, e)
            return None

    def _make_batch(self, rows: list[dict]) -> dict:
        s = self.image_size
        n = len(rows)
        rgb, ir, token, first = self._batch_tensors(n, s)
        kept: list[dict] = []
        for rec in rows:
            if rec.get("_error") is not None:  # a row whose parquet data could not be read (see _read)
                self._fail(rec, "parquet", rec["_error"])
                continue
            a = self._decode(rec.get("rgb"), rec, "rgb")
            if a is None:
                continue
            b = self._decode(rec.get("ir"), rec, "ir")
            if b is None:
                continue
            j = len(kept)
            if self.normalize:
                self.normalizer(a, rgb[j])
                self.normalizer(b, ir[j])
            else:
                rgb[j].copy_(a)
                ir[j].copy_(b)
            kept.append(rec)
        if len(kept) < n:
            rgb, ir = rgb[: len(kept)], ir[: len(kept)]
        batch = {
            "rgb": rgb,
            "ir": ir,
            "caption": [r.get("caption") for r in kept],
            "ir_caption": [r.get("ir_caption") for r in kept],
            "sample_id": [r.get("sample_id") for r in kept],
            "source": [r.get("source") for r in kept],
        }
        if self.tokenizer is not None:
            self._tokenize(batch)
        if token is not None:
            batch[_SLOT_KEY] = (*token, len(kept))
            if self.send_slots_once:
                batch["rgb"] = batch["ir"] = None  # views of the slot, made by the loader
                if first:
                    batch[_SLOT_TENSOR_KEY] = self._ring.slots[token[2]]
        return batch

    def _batch_tensors(self, n: int, s: int) -> tuple[torch.Tensor, torch.Tensor, tuple | None, bool]:
        """``rgb`` and ``ir`` batch tensors to decode into (float32; uint8 with ``normalize=False``), and
        the slot token and whether the slot is new, if it is a reused one.

        In a worker: a reused shared-memory slot when the ring has a free one, else a fresh segment
        (sending a tensor whose storage is already shared passes a handle, not a copy). In the main
        process (``num_workers=0``): pooled heap tensors.
        """
        dtype = torch.float32 if self.normalize else torch.uint8
        cl = self.channels_last
        if self._ring is not None:
            got = self._ring.take((2, self.batch_size, 3, s, s), dtype, cl)
            if got is not None:
                buf, token, first = got
                return buf[0, :n], buf[1, :n], token, first
        if self._in_worker:
            buf = _shared_empty((2, n, 3, s, s), dtype, True, cl)
            return buf[0], buf[1], None, False
        shape = torch.Size((n, 3, s, s))
        return self._pool.empty(shape, dtype, cl), self._pool.empty(shape, dtype, cl), None, False

    def _tokenize(self, batch: dict) -> None:
        """Replace caption strings by token ids; ``ir_caption`` None becomes "" with ``has_ir_caption`` False."""
        batch["has_ir_caption"] = torch.tensor([c is not None for c in batch["ir_caption"]], dtype=torch.bool)
        for key in ("caption", "ir_caption"):
            out = self.tokenizer([c or "" for c in batch[key]])
            if isinstance(out, torch.Tensor):
                batch[key] = out
                continue
            if hasattr(out, "keys") and "input_ids" in out:
                ids = out["input_ids"]
                batch[key] = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids)
                if "attention_mask" in out:
                    mask = out["attention_mask"]
                    batch[f"{key}_attention_mask"] = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
                continue
            batch[key] = torch.as_tensor(out)


# ---------------------------------------------------------------------------------------------
# The loader


class _OutputPool:
    """Batch tensors made in the training process (``num_workers=0``), reused once nobody holds them.

    A fresh 19 MB tensor per image key per batch costs more in page faults (the allocator returns
    such blocks to the kernel and takes them back zeroed) than the normalization that fills it:
    measured 0.75 s of system time per 2,200-row pass, against 0.2 s with reuse. A tensor is only
    reused when the pool holds the sole reference to it and to its storage: no batch dict, view,
    numpy array or other tensor of the user's still sees it, and it was never moved to shared memory
    (``share_memory_`` or a send to another process), so reuse cannot change data anyone can read.
    (``pin_memory`` copies a batch on its way out, so the pooled tensor is free again at once.)
    """

    def __init__(self, capacity: int = 6) -> None:
        self._items: list[torch.Tensor] = []
        self.capacity = capacity

    def empty(self, shape: torch.Size, dtype: torch.dtype = torch.float32,
              channels_last: bool = False) -> torch.Tensor:
        items = self._items
        for i in range(len(items)):
            # references while checking: the list's and getrefcount's argument (2); storage: the
            # tensor's and the temporary storage object's (2)
            if (items[i].shape == shape and items[i].dtype == dtype and sys.getrefcount(items[i]) == 2
                    and _storage_uses(items[i]) == 2
                    and is_channels_last(items[i]) == channels_last
                    and not items[i].is_shared()):
                t = items.pop(i)
                items.append(t)  # most recently handed out last
                return t
        t = empty_images(shape, dtype, channels_last=channels_last)
        items.append(t)
        if len(items) > self.capacity:
            del items[0]  # the oldest: still held by the user, or not reused for a while
        return t

    def __getstate__(self) -> dict:
        return {"capacity": self.capacity}  # a copy in a worker starts empty (never ships tensors)

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["capacity"])


def normalize_batch(batch: dict, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> dict:
    """uint8 ``rgb``/``ir`` of a ``normalize=False`` batch -> float32 ``(x/255 - mean)/std``, on their device.

    Meant for after ``.to("cuda")``: the GPU normalizes in microseconds what costs the loader's
    workers about a tenth of their time on the CPU. Returns the batch, updated in place.
    """
    norm = Normalizer(mean, std)
    for key in IMAGE_FIELDS:
        x = batch.get(key)
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
            batch[key] = norm.on_device(x)
    return batch


class _LoaderMixin:
    def __iter__(self):
        ds = self.dataset
        if hasattr(ds, "_begin_pass"):
            ds._begin_pass()  # the epoch advances here (before the workers of this pass read it)
            ds._pass_begun = not self.num_workers
        if hasattr(ds, "_refresh_for_pass"):
            # before the workers of this pass take their copy of the plan
            if ds._refresh_for_pass():
                self._fix_len()
            if not self.num_workers:
                ds._plan_fresh = True  # the pass runs here: it need not look a second time
        it = super().__iter__()
        table = getattr(ds, "_slots", None)
        if table is None or not getattr(ds, "ring_size", 0):
            yield from it
            return
        # One receiver per loader; it forgets a pass's slots when the pass ends (``end_pass``).
        receiver = self.__dict__.get("_fusionrs_receiver")
        if receiver is None:
            receiver = self.__dict__["_fusionrs_receiver"] = _SlotReceiver(table)
        try:
            while True:
                # Hand slots back before asking for the next batch: receiving it sends its worker the
                # next request, and a worker that was waiting would otherwise find no free slot yet.
                receiver.release_unused()
                try:
                    batch = next(it)
                except StopIteration:
                    return
                yield receiver.receive(batch)
                batch = None  # drop our reference, so the slot can be reused once the user drops theirs
        finally:
            receiver.end_pass()

    def set_epoch(self, epoch: int) -> None:
        """Forward to the dataset: call before each epoch for a new shuffle order (and a fresh plan)."""
        self.dataset.set_epoch(epoch)
        self._fix_len()

    def _fix_len(self) -> None:
        """torch remembers the last ``len(loader)`` to warn when a pass yields more; after a re-plan that
        number is the old plan's."""
        if getattr(self, "_IterableDataset_len_called", None) is not None:
            self._IterableDataset_len_called = len(self.dataset)

    @property
    def skipped(self) -> int:
        """Rows skipped for unreadable images so far (``on_error="skip"``), all workers."""
        return self.dataset.skipped


class FusionRSDataLoader(_LoaderMixin, DataLoader):
    """A plain ``DataLoader`` over a :class:`FusionRSIterable` with ``set_epoch`` and ``skipped``."""


def _stateful_class():
    require("torchdata", extra="train", what="make_dataloader(..., stateful=True) (resumable loading)")
    from torchdata.stateful_dataloader import StatefulDataLoader

    class FusionRSStatefulDataLoader(_LoaderMixin, StatefulDataLoader):
        """torchdata ``StatefulDataLoader`` (``state_dict``/``load_state_dict``) with ``set_epoch``."""

        def load_state_dict(self, state_dict) -> None:
            super().load_state_dict(state_dict)
            # the restored state says the epoch: the next pass resumes it instead of advancing
            self.dataset._epoch_explicit = True
            epoch = _state_epoch(state_dict)
            if epoch is not None:
                self.dataset._epoch[0] = epoch

    return FusionRSStatefulDataLoader


def _state_epoch(state) -> int | None:
    """The epoch a (loader) state dict records for our dataset, if it can be found."""
    if isinstance(state, dict):
        if state.get("format") == STATE_FORMAT and "epoch" in state:
            return int(state["epoch"])
        for v in state.values():
            got = _state_epoch(v)
            if got is not None:
                return got
    elif isinstance(state, list | tuple):
        for v in state:
            got = _state_epoch(v)
            if got is not None:
                return got
    return None


def _identity(batch):
    return batch


def collate_rows(rows: Sequence[dict]) -> dict:
    """``collate_fn`` for single rows (``FusionRSIterable(batch_size=None)``) in your own DataLoader.

    Tensors are stacked by torch's ``default_collate`` (into shared memory inside a worker); every
    other field stays a list. Plain ``default_collate`` cannot take the rows as they are: a row
    outside the IR-aware subset has ``ir_caption`` None, which it rejects.
    """
    from torch.utils.data import default_collate

    if not rows:
        return {}
    return {key: default_collate([r[key] for r in rows]) if isinstance(rows[0][key], torch.Tensor)
            else [r[key] for r in rows] for key in rows[0]}


def make_dataloader(
    repo_or_path,
    config: str = "iraware",
    split: str = "train",
    batch_size: int = 32,
    num_workers: int = 0,
    image_size: int = 224,
    shuffle: bool = False,
    seed: int = 0,
    tokenizer: Callable | None = None,
    on_error: str = "raise",
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    shuffle_buffer: int = 1000,
    stateful: bool = False,
    **kw,
) -> DataLoader:
    """A DataLoader of FusionRS batches: ``{"rgb", "ir", "caption", "ir_caption", "sample_id", "source"}``.

    ``repo_or_path``: a local repo folder, an fsspec URL (``hf://datasets/owner/name``, ``s3://...``),
    a Hub dataset id, or a ``datasets.IterableDataset`` of FusionRS rows (generic path; ``config``
    and ``split`` are then ignored). ``rgb``/``ir`` are float32 ``(B, 3, image_size, image_size)``
    (shorter side resized, centre crop, normalized with ``mean``/``std``); captions are lists of
    strings, or token ids when ``tokenizer`` (a callable on a list of strings returning a tensor or a
    dict with ``input_ids``) is given. ``rank``/``world_size`` default to the process group or
    torchrun's env vars. ``stateful=True`` returns a torchdata ``StatefulDataLoader`` for resume.
    ``rgb``/``ir`` are stored channels-last (``torch.channels_last``: shape (B, 3, H, W), memory
    (B, H, W, 3), as FFCV's ``ToTorchImage`` gives); ``channels_last=False`` gives NCHW-contiguous
    tensors with the same values, for code that calls ``.view`` on them.
    ``normalize=False`` keeps ``rgb``/``ir`` uint8 (cropped and resized, 4x less memory traffic and
    host-to-device copy); normalize them on the GPU with :func:`normalize_batch`.
    ``storage_options``: fsspec options for the repo's store (``endpoint_url``, ``key``, ``secret``, ...;
    for the Hub ``token``/``endpoint``); the filesystem is opened inside each worker, so every start
    method (fork, spawn, forkserver: ``multiprocessing_context=``) works with every store.
    Each new pass over the loader advances the epoch (a new shuffle order) unless ``set_epoch`` was
    called since the last one, so loops that never call it (Lightning's) still reshuffle.
    Other keyword arguments: ``revision``, ``decode_backend``, ``normalize``, ``channels_last``
    (dataset) and ``pin_memory``, ``prefetch_factor``, ``persistent_workers``,
    ``multiprocessing_context``, ``timeout`` (loader).
    """
    ds_keys = {"revision", "decode_backend", "normalize", "channels_last", "storage_options"}
    ds_kw = {k: kw.pop(k) for k in list(kw) if k in ds_keys}
    common = dict(batch_size=batch_size, image_size=image_size, shuffle=shuffle, seed=seed,
                  shuffle_buffer=shuffle_buffer, tokenizer=tokenizer, on_error=on_error, mean=mean, std=std,
                  rank=rank, world_size=world_size, drop_last=drop_last, **ds_kw)
    if hasattr(repo_or_path, "set_epoch") and hasattr(repo_or_path, "features"):  # a datasets.IterableDataset
        dataset = FusionRSIterable(source=repo_or_path, **common)
    else:
        dataset = FusionRSIterable(repo_or_path, config, split, **common)
    return loader_for(dataset, num_workers=num_workers, stateful=stateful, **kw)


def loader_for(dataset: FusionRSIterable, *, num_workers: int = 0, stateful: bool = False, **kw) -> DataLoader:
    """Wrap a :class:`FusionRSIterable` (or subclass) in the right DataLoader (dataset-side batching)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    dataset.num_workers_hint = num_workers
    if num_workers and type(dataset)._make_batch is FusionRSIterable._make_batch:
        # a slot per batch a worker can have in flight (prefetch_factor), the one the user is
        # working on, and one for a user who keeps the previous batch a little longer
        dataset.ring_size = (kw.get("prefetch_factor") or 2) + 2
        dataset.send_slots_once = not kw.get("pin_memory", False)
    cls = _stateful_class() if stateful else FusionRSDataLoader
    if num_workers == 0:
        kw.pop("prefetch_factor", None)
        kw.pop("persistent_workers", None)
    else:
        kw.setdefault("prefetch_factor", 2)
    return cls(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity, **kw)
