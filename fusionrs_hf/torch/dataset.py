"""The dataset: :class:`FusionRSIterable`, a torch ``IterableDataset`` of FusionRS batches: its settings and
state, and one pass's row order (rank and worker slices, the shuffle buffer, a resumed pass's skip). Its other
parts are mixins, one file each: the plan across epochs (:mod:`.epochs`), resume (:mod:`.resume`), batch
assembly (:mod:`.batches`) and reading row groups (:mod:`.reader`)."""

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
    Normalizer,
)
from ..limits import DEFAULT_MAX_PIXELS
from ..schema import FIELD_NAMES, IMAGE_FIELDS
from ..secrets import register_url, scrub, scrubbing
from ..storage import Location, locate
from ..terminal import printable
from ._common import _MAX_COUNTER_SLOTS, ON_ERROR, logger
from .batches import BatchAssembly, _image_value, prepare_tokenizer
from .epochs import EpochPlanning
from .plan import (
    RankEnvError,
    _buffer_order,
    _resolve_rank,
    _resolve_world,
    _slot_pieces,
)
from .reader import DEFAULT_READ_AHEAD, DEFAULT_REQUEST_SIZE, Footer, ReadStats, RowGroupReading
from .resume import Resumable
from .share import make_share_dir
from .slots import _OutputPool, _SlotRing, _SlotTable

__all__ = ["FusionRSIterable", "_image_value"]


class FusionRSIterable(EpochPlanning, Resumable, BatchAssembly, RowGroupReading, IterableDataset):
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
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        self.max_pixels = max_pixels
        """An image whose header claims more pixels is bad data, not decoded (:mod:`fusionrs_hf.limits`; the
        build's ``--max-pixels`` default). None: no limit."""
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
        self.tokenizer, self.on_error, self.drop_last = prepare_tokenizer(tokenizer), on_error, bool(drop_last)
        self.normalizer = Normalizer(mean, std)
        self.decode_backend = decode_backend
        self.normalize = bool(normalize)
        """False: ``rgb``/``ir`` stay uint8 (crop + resize only), for :func:`normalize_batch` on the GPU."""
        self.channels_last = bool(channels_last)
        """``rgb``/``ir`` (B, 3, H, W) stored as (B, H, W, 3), torch's ``channels_last`` (see make_dataloader)."""
        self._rank_args = (rank, world_size)
        if rank is not None and world_size is not None:
            _resolve_rank(rank, world_size)  # explicit values: refused now if they cannot be
        self._rank_pinned: tuple[int, int] | None = None
        """(rank, world size) of this dataset's passes, fixed when the first pass begins (see :attr:`rank`)."""
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
        self._slot: tuple = (None, None, 0, 1)
        """(rank, world size, worker, workers) of the pass running in this process (set when it starts)."""
        self._generic_ds = None

    # -- public bookkeeping ------------------------------------------------------------------

    @property
    def rank(self) -> int:
        """This process's rank: ``rank=`` if given, else the initialized process group's, else torchrun's
        ``RANK``, else 0; read when it is first needed, not when the dataset is made, so a loader made before
        the process group (Lightning's own DDP launcher starts it inside ``Trainer.fit``) still reads its own
        share. Fixed for good once a pass begins."""
        return (self._rank_pinned or _resolve_rank(*self._rank_args))[0]

    @property
    def world_size(self) -> int:
        """The number of ranks, read as :attr:`rank` is (but without needing the rank: ``len()`` of a loader
        in a Lightning-launched process, whose ``RANK`` comes with its process group, works early)."""
        return self._rank_pinned[1] if self._rank_pinned else _resolve_world(self._rank_args[1])

    def _pin_rank(self) -> None:
        if self._rank_pinned is None:
            self._rank_pinned = _resolve_rank(*self._rank_args)

    def __getstate__(self) -> dict:
        """A copy for a worker (spawn, forkserver) is made in this process: it takes the rank from here, where
        the process group or torchrun's variables say it, not from a worker that has neither (it would read
        rank 0's rows). Not pinned when nothing can say it yet (a copy made before the process group)."""
        if self._rank_pinned is None:
            try:
                self._pin_rank()
            except RankEnvError:
                pass
        return self.__dict__.copy()

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
                sha = self._shared_commit()  # the commit the training process re-planned at (only read here)
                if sha and sha != self._commit:
                    self._use_commit(sha)
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
                msg = printable(scrub(f"fusionrs: worker {worker} of rank {self.rank} skipped "
                                      f"{len(self._skipped_ids)} row(s) with unreadable data in epoch {self.epoch}: "
                                      f"{ids}"))
                logger.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def _fast_rows(self, resume: dict | None) -> tuple[Iterator[dict], int]:
        worker, nworkers = self._slot[2], self._slot[3]
        epoch = self.epoch
        n_units = len(self.units)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n_units) if self.shuffle
                 else np.arange(n_units))
        per_rank = sum(u.num_rows for u in self.units) // self.world_size
        sizes = self.worker_rows(nworkers)  # whole batches per worker (EpochPlanning.worker_rows)
        start = self.rank * per_rank + sum(sizes[:worker])
        n = sizes[worker]
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
