"""The dataset: :class:`FusionRSIterable`, a torch ``IterableDataset`` of FusionRS batches
(plan, epochs, resume, row order, batch assembly). Reading row groups is in :mod:`.reader`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..decode import (
    CLIP_MEAN,
    CLIP_STD,
    DecodeError,
    Normalizer,
    center_crop_resize,
    decode_rgb,
    pil_to_array,
)
from ..schema import FIELD_NAMES, IMAGE_FIELDS
from ..secrets import register_url, scrub, scrubbing
from ..storage import Location, locate
from ._common import _MAX_COUNTER_SLOTS, ON_ERROR, STATE_FORMAT, logger
from .plan import (
    Unit,
    _buffer_order,
    _resolve_rank,
    _slot_pieces,
    plan_shards,
    shard_fingerprints,
    split_files,
)
from .reader import DEFAULT_READ_AHEAD, DEFAULT_REQUEST_SIZE, Footer, ReadStats, RowGroupReading
from .share import make_share_dir
from .slots import _SLOT_KEY, _SLOT_TENSOR_KEY, _OutputPool, _shared_empty, _SlotRing, _SlotTable


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


class FusionRSIterable(RowGroupReading, IterableDataset):
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
        read_ahead: int = DEFAULT_READ_AHEAD,
        request_size: int = DEFAULT_REQUEST_SIZE,
    ) -> None:
        super().__init__()
        if int(read_ahead) < 0:
            raise ValueError(f"read_ahead must be >= 0, got {read_ahead}")
        if int(request_size) < 1:
            raise ValueError(f"request_size must be >= 1, got {request_size}")
        self.read_ahead, self.request_size = int(read_ahead), int(request_size)
        """Remote shards: row groups fetched ahead per worker, and the largest single range request
        (see :mod:`fusionrs_hf.torch.reader`); local shards are memory-mapped and ignore both."""
        self._footers: dict[str, Footer] = {}
        """Remote shards: ``{shard: Footer}`` from planning, so workers need not ask again."""
        self._read_stats = torch.zeros((_MAX_COUNTER_SLOTS, len(ReadStats.FIELDS)), dtype=torch.int64).share_memory_()
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
        """Where the shards are read; its filesystem is opened in each process that reads (fork-safe). A Hub
        repo is read at one commit (:meth:`_pin`), the one its revision named at planning."""
        self._ref: Location | None = None
        """Where the user said the shards are (a Hub revision as given, e.g. a branch)."""
        self._commit: str | None = None
        self._commit_shared = torch.zeros(64, dtype=torch.uint8).share_memory_()
        """The Hub commit the plan was made at, for persistent workers that re-plan (empty elsewhere)."""
        if source is None:
            if isinstance(repo_or_path, str):
                register_url(repo_or_path)
            with scrubbing():  # a server echoing the token in its error must not put it in this exception
                self._ref = self._loc = locate(repo_or_path, revision, storage_options)
                self.root = self._loc.root
                # The Hub: asked once, quickly (a clear error when offline or unreachable), and afresh, for the
                # commit its revision names now (an earlier dataset of this process may have seen an older one)
                self._pin(self._loc.commit())
                self.units, self._fingerprints = self._plan()
        else:
            self.root, self.units = None, []
        self._share_dir = make_share_dir(self) if self._footers else None
        """Remote shards: where a worker leaves a row group its neighbour also reads (:mod:`.share`)."""
        # Plan generation, shared with the workers: a persistent worker re-plans when it changed.
        self._plan_gen = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._my_plan_gen = 0
        self._plan_fresh = True
        """Planned (or re-planned) since the last pass started: the next pass need not look again."""
        self._passes_read = torch.zeros(1, dtype=torch.int64).share_memory_()
        """Passes begun anywhere, workers included (a plain ``DataLoader`` runs every pass in its workers)."""
        self._planned_at = 0
        """``_passes_read`` when the plan was made: ``set_epoch`` re-plans once any pass has run since."""
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
    def commit(self) -> str | None:
        """The Hub commit this epoch's plan reads (None off the Hub). Every request names it, so a push to
        the branch mid-epoch changes nothing until the next epoch re-plans (:meth:`refresh_plan`)."""
        return self._commit

    def _pin(self, sha: str | None) -> None:
        """Read the Hub repo at commit ``sha`` from now on (persistent workers learn it from shared memory
        when they re-plan); nothing for other stores or when the Hub named no commit."""
        if not sha or self._ref is None or self._ref.kind != "hub":
            return
        self._loc = self._ref.at_commit(sha)
        self.root, self._commit = self._loc.root, sha
        raw = sha.encode()[: self._commit_shared.numel()]
        self._commit_shared.zero_()
        self._commit_shared[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)

    def _shared_commit(self) -> str | None:
        raw = bytes(self._commit_shared.tolist()).rstrip(b"\0")
        return raw.decode() if raw else None

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Reseed the shuffle for a new epoch (call before iterating, as with ``DistributedSampler``).

        Also looks at the shards again (:meth:`refresh_plan`): a shard rewritten, added or removed since
        the plan is re-planned now, so ``len(loader)`` is already right for this epoch; unless no pass ran
        since the plan was made (``set_epoch(0)`` right after construction asks the store nothing new).
        """
        self._epoch[0] = int(epoch)
        self._epoch_explicit = True
        if int(self._passes_read[0]) != self._planned_at or not self._plan_fresh:
            self.refresh_plan()
        self._planned_at = int(self._passes_read[0])
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
        return self._plan_files(files, fingerprints), fingerprints

    def _plan_files(self, files: Sequence[str], fingerprints: dict[str, tuple] | None = None) -> list[Unit]:
        """Units of ``files``; with ``on_error="skip"`` a shard with an unreadable footer is left out, named
        in a warning and in :attr:`skipped_shards`. Keeps remote footers for the workers (``_footers``)."""
        bad: list[tuple[str, str]] | None = [] if self.on_error == "skip" else None
        sizes = {rel: fp[0] for rel, fp in (fingerprints or {}).items() if isinstance(fp[0], int)}
        units, self._footers = plan_shards(self.fs, self.root, files, unreadable=bad, sizes=sizes)
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
            pinned = self.commit
            if pinned is not None:  # a Hub repo: one question says whether anything changed at all
                now = self._ref.commit()
                if not now or now == pinned:
                    return False
                self._pin(now)
            if hasattr(self.fs, "invalidate_cache"):
                self.fs.invalidate_cache()  # a cached listing would hide the change (hf://, s3://)
            files = split_files(self.fs, self.root, self.config, self.split)
            fingerprints = shard_fingerprints(self.fs, self.root, files)
            if fingerprints == self._fingerprints:
                if pinned is not None:  # a commit that left the split's shards alone: its footers, its URLs
                    self.units = self._plan_files(files, fingerprints)
                    self._plan_gen += 1
                    self._my_plan_gen = int(self._plan_gen[0])
                return False
            units = self._plan_files(files, fingerprints)
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

    def read_stats(self) -> dict[str, int]:
        """Remote reading so far, all workers: range ``requests``, ``retries``, ``row_groups`` read, and
        ``max_in_flight``, the most row groups one worker had fetched ahead at once (<= ``read_ahead``, or
        as many as a batch's rows need where row groups are smaller than a batch)."""
        t = self._read_stats
        out = {name: int(t[:, i].sum()) for i, name in enumerate(ReadStats.FIELDS)}
        out["max_in_flight"] = int(t[:, ReadStats.FIELDS.index("max_in_flight")].max())
        return out

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
        if self.commit is not None:
            state["commit"] = self.commit
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
        self._check_commit(state.get("commit"))
        self._resume = dict(state)
        self._epoch[0] = int(state["epoch"])
        self._epoch_explicit = True

    def _check_commit(self, saved: str | None) -> None:
        """A state saved reading another commit of the Hub repo would skip rows of other data: refuse it."""
        now = self.commit
        if saved is not None and now is not None and saved != now:
            raise ValueError(
                f"cannot resume: the state was saved reading {self._ref.label} at commit {saved}, and its revision "
                f"names {now} now; resume with revision={saved!r} to read the same data")

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
        self._passes_read += 1  # shared memory: seen by set_epoch in the training process
        if not in_worker:
            if self._pass_begun:
                self._pass_begun = False
            else:
                self._begin_pass()
        if self.source is None:
            if not in_worker:
                self._refresh_for_pass()
            elif int(self._plan_gen[0]) != self._my_plan_gen:  # a persistent worker after a re-plan
                self._pin(self._shared_commit())  # at the commit the training process re-planned at
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
        logger.debug("skipping %s", scrub(msg))

    def _decode(self, value, rec: dict, column: str, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """The image cropped and resized (uint8 3xSxS; written into ``out`` when given), or None if it failed."""
        try:
            if isinstance(value, bytes | memoryview) and len(value):  # the fast path's cells
                return center_crop_resize(decode_rgb(value, self.image_size, backend=self.decode_backend),
                                          self.image_size, out)
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
            return center_crop_resize(arr, self.image_size, out)
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
            j = len(kept)
            # uint8 batches: resized straight into row j (a failed row leaves it to the next one)
            a = self._decode(rec.get("rgb"), rec, "rgb", None if self.normalize else rgb[j])
            if a is None:
                continue
            b = self._decode(rec.get("ir"), rec, "ir", None if self.normalize else ir[j])
            if b is None:
                continue
            if self.normalize:
                self.normalizer(a, rgb[j])
                self.normalizer(b, ir[j])
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
