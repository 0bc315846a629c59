"""The DataLoader wrappers: :func:`make_dataloader`, :func:`loader_for`, the loaders' epoch and slot
handling (:class:`FusionRSDataLoader`, the stateful one), :func:`collate_rows`, :func:`normalize_batch`;
:class:`ProcessorIterable` (the streaming reader with a ``transformers`` image processor's pixels)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from ..decode import CLIP_MEAN, CLIP_STD, Normalizer
from ..schema import IMAGE_FIELDS
from ..storage import require
from ._common import STATE_FORMAT, refuse_worker_options
from .dataset import FusionRSIterable
from .mapstyle import ProcessorPixels, make_map_dataloader, pixel_batch
from .slots import _SlotReceiver

SHUFFLES: tuple = (False, True, "stream", "global")
"""``make_dataloader``'s ``shuffle``: False; True or ``"stream"`` (the streaming reader's row-group
permutation + ``shuffle_buffer``); ``"global"`` (a map-style dataset and one uniform permutation of every
row per epoch, the release's loader: :mod:`fusionrs_hf.torch.mapstyle`)."""


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
        if not self.num_workers and hasattr(ds, "_epoch_explicit"):
            # a stateful loader without workers restores the dataset's state in this process while making the
            # iterator (torchdata), which marks the epoch as set again: it is this pass's, and the next pass
            # must still advance
            ds._epoch_explicit = False
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
    """A plain ``DataLoader`` over a :class:`FusionRSIterable` with ``set_epoch`` and ``skipped``.

    It has no ``state_dict`` (frameworks take a loader that has one for resumable: Lightning would call it
    at every checkpoint); asking for one says where the resumable loader is.
    """

    def __getattr__(self, name: str):
        if name in ("state_dict", "load_state_dict"):
            raise AttributeError(f"{type(self).__name__} has no {name}: it does not save its position; make it "
                                 "with make_dataloader(..., stateful=True) (torchdata's StatefulDataLoader) to "
                                 "resume mid-epoch")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _stateful_class():
    require("torchdata", extra="train", what="make_dataloader(..., stateful=True) (resumable loading)")
    from torchdata.stateful_dataloader import StatefulDataLoader

    class FusionRSStatefulDataLoader(_LoaderMixin, StatefulDataLoader):
        """torchdata ``StatefulDataLoader`` (``state_dict``/``load_state_dict``) with ``set_epoch``."""

        def __init__(self, *args, **kwargs) -> None:
            import warnings

            with warnings.catch_warnings():  # torchdata's own call of the deprecated torch.set_vital
                warnings.filterwarnings("ignore", message=".*set_vital.*")
                super().__init__(*args, **kwargs)

        def load_state_dict(self, state_dict) -> None:
            # torchdata would only assert, and only once iterating: say it here, with both numbers
            saved = _find_key(state_dict, "_num_workers")
            if saved is not None and saved != self.num_workers:
                raise ValueError(f"cannot resume: the state was saved with num_workers={saved}, this loader has "
                                 f"num_workers={self.num_workers}; resume with the same number of workers")
            # here, before any worker starts, every check the dataset makes (batch size, seed, config/split, a
            # Hub commit that moved on, ...) and the slot's (world size, rank, workers), on each worker's state:
            # torchdata restores them inside the workers, where a mismatch is a traceback at the first batch
            for ds_state in _dataset_states(state_dict):
                self.dataset.check_state(ds_state, who="this loader", num_workers=self.num_workers)
            epoch = _state_value(state_dict, "epoch")
            if _find_key(state_dict, "_iterator_finished") is True:
                # saved once its epoch was read to the end (Lightning's end-of-epoch checkpoint): the next pass
                # is the next epoch from its start, as it would have been without the restart; restoring the
                # finished position would replay the epoch (workers) or read nothing (no workers)
                self.dataset._epoch_explicit = True
                if epoch is not None:
                    self.dataset._epoch[0] = int(epoch) + 1
                return
            super().load_state_dict(state_dict)
            # the restored state says the epoch: the next pass resumes it instead of advancing
            self.dataset._epoch_explicit = True
            if epoch is not None:
                self.dataset._epoch[0] = int(epoch)

    return FusionRSStatefulDataLoader


def _state_value(state, key: str):
    """``key`` of the first dataset state (ours) inside a (loader) state dict, if it can be found."""
    if isinstance(state, dict):
        if state.get("format") == STATE_FORMAT:
            return state.get(key)
        for v in state.values():
            got = _state_value(v, key)
            if got is not None:
                return got
    elif isinstance(state, list | tuple):
        for v in state:
            got = _state_value(v, key)
            if got is not None:
                return got
    return None


def _dataset_states(state) -> list[dict]:
    """Every dataset state (ours) inside a (loader) state dict: one per worker, or the one of a loader without."""
    if isinstance(state, dict):
        if state.get("format") == STATE_FORMAT:
            return [state]
        return [s for v in state.values() for s in _dataset_states(v)]
    if isinstance(state, list | tuple):
        return [s for v in state for s in _dataset_states(v)]
    return []


def _find_key(state, key: str, depth: int = 4):
    """The first value of ``key`` in a nested (loader) state dict, looking ``depth`` levels deep."""
    if not isinstance(state, dict) or depth < 0:
        return None
    if key in state:
        return state[key]
    for v in state.values():
        got = _find_key(v, key, depth - 1)
        if got is not None:
            return got
    return None


def _state_epoch(state) -> int | None:
    """The epoch a (loader) state dict records for our dataset, if it can be found."""
    got = _state_value(state, "epoch")
    return int(got) if got is not None else None


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


class ProcessorIterable(FusionRSIterable):
    """The streaming reader (same plan, work split, shuffle and resume) with a ``transformers`` image
    processor's pixels: each image fully decoded with PIL and the batch run through ``image_processor``
    (:class:`~fusionrs_hf.torch.mapstyle.ProcessorPixels`), the way the authors' CLIP code prepared images.
    Batches are built in the dataset as plain tensors (no reused slots)."""

    def __init__(self, *args, image_processor, **kw) -> None:
        if kw.get("normalize") is False:
            raise ValueError("normalize=False gives uint8 crops of our decode; an image_processor normalizes itself")
        super().__init__(*args, **kw)
        self.pixels = ProcessorPixels(image_processor, channels_last=self.channels_last, max_pixels=self.max_pixels)

    def _make_batch(self, rows: list[dict]) -> dict:
        batch = pixel_batch(rows, self.pixels, self._fail)
        if self.tokenizer is not None:
            self._tokenize(batch)
        return batch


def make_dataloader(
    repo_or_path,
    config: str = "iraware",
    split: str = "train",
    batch_size: int = 32,
    num_workers: int = 0,
    image_size: int = 224,
    shuffle: bool | str = False,
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
    image_processor=None,
    map_style: bool = False,
    usable_captions_only: bool = False,
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
    Remote shards (``hf://``, a Hub id, any fsspec URL): ``read_ahead`` (default 2) row groups are
    fetched in the background by each worker while it decodes the current one (0: read synchronously;
    row groups smaller than a batch: as many as a batch needs, up to 32), in range requests of at most
    ``request_size`` bytes (default 8 MiB), retried on failure (not a 403 or 404); local
    shards are memory-mapped and ignore both (see :mod:`fusionrs_hf.torch.reader`).
    Other keyword arguments: ``revision``, ``decode_backend``, ``normalize``, ``channels_last``, ``max_pixels``
    (dataset) and ``pin_memory``, ``prefetch_factor``, ``persistent_workers``,
    ``multiprocessing_context``, ``timeout`` (loader).

    ``shuffle`` (:data:`SHUFFLES`): False; True (= ``"stream"``): the streaming reader's order, row groups
    permuted and then a ``shuffle_buffer``-row buffer, so a batch holds rows of one or two shards;
    ``"global"``: the release's loader, a map-style dataset (``datasets.load_dataset``, the Arrow cache) and
    a ``DataLoader`` with ``shuffle=True`` and ``generator=torch.Generator().manual_seed(seed)``: every epoch
    a fresh uniform permutation of all rows (``DistributedSampler(seed=seed)`` when ``world_size > 1``);
    see :mod:`fusionrs_hf.torch.mapstyle`. ``map_style=True`` takes the map-style path without shuffling
    when ``shuffle`` is False (the release's validation loader: dataset order, ``drop_last=False``). The
    map-style path ignores ``shuffle_buffer``, ``read_ahead``, ``request_size`` and refuses ``stateful`` and
    ``persistent_workers``. ``usable_captions_only`` (map-style only): leave out rows whose caption is empty
    after the authors' normalisation, as the release's trainer does.
    ``image_processor``: a ``transformers`` image processor (the model's own, loaded with its PIL backend);
    ``rgb``/``ir`` are then its ``pixel_values`` of the fully decoded images (the authors' preprocessing:
    for CLIP, shortest edge resized bicubic, centre crop, rescale, normalize), on either path; ``image_size``,
    ``mean``, ``std`` do not apply and ``normalize=False`` is refused.
    """
    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {', '.join(map(repr, SHUFFLES))}, got {shuffle!r}")
    if map_style and shuffle in (True, "stream"):
        raise ValueError(f"shuffle={shuffle!r} is the streaming reader's order; the map-style path shuffles "
                         "globally (shuffle='global') or not at all (shuffle=False)")
    if shuffle == "global" or map_style:
        if stateful:
            raise ValueError("stateful=True is for the streaming reader; the map-style path (shuffle='global' or "
                             "map_style=True) has no resumable state")
        if hasattr(repo_or_path, "set_epoch") and hasattr(repo_or_path, "features"):
            raise ValueError("shuffle='global' needs random access: pass a repo or a datasets.Dataset, not an "
                             "IterableDataset")
        for k in ("read_ahead", "request_size"):
            kw.pop(k, None)
        return make_map_dataloader(repo_or_path, config, split, batch_size=batch_size, num_workers=num_workers,
                                   image_size=image_size, shuffle=bool(shuffle), seed=seed, tokenizer=tokenizer,
                                   on_error=on_error, mean=mean, std=std, rank=rank, world_size=world_size,
                                   drop_last=drop_last, image_processor=image_processor,
                                   usable_captions_only=usable_captions_only, **kw)
    if usable_captions_only:
        raise ValueError("usable_captions_only needs the map-style path (shuffle='global' or map_style=True)")
    shuffle = bool(shuffle)
    ds_keys = {"revision", "decode_backend", "normalize", "channels_last", "storage_options", "read_ahead",
               "request_size", "max_pixels"}
    ds_kw = {k: kw.pop(k) for k in list(kw) if k in ds_keys}
    common = dict(batch_size=batch_size, image_size=image_size, shuffle=shuffle, seed=seed,
                  shuffle_buffer=shuffle_buffer, tokenizer=tokenizer, on_error=on_error, mean=mean, std=std,
                  rank=rank, world_size=world_size, drop_last=drop_last, **ds_kw)
    cls = FusionRSIterable
    if image_processor is not None:
        cls, common = ProcessorIterable, {**common, "image_processor": image_processor}
    if hasattr(repo_or_path, "set_epoch") and hasattr(repo_or_path, "features"):  # a datasets.IterableDataset
        dataset = cls(source=repo_or_path, **common)
    else:
        dataset = cls(repo_or_path, config, split, **common)
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
    refuse_worker_options(num_workers, kw)
    if num_workers == 0:
        kw.pop("prefetch_factor", None)
        kw.pop("persistent_workers", None)
    else:
        kw.setdefault("prefetch_factor", 2)
    return cls(dataset, batch_size=None, num_workers=num_workers, collate_fn=_identity, **kw)
