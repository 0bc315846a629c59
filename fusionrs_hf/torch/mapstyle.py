"""Map-style FusionRS: rows by index, for a global shuffle (the release's loader) and processor pixels.

Why a second path beside the streaming one (:mod:`.dataset`): the streaming loader permutes whole parquet
row groups (~100 MB, a thousand rows or more each) and then a ``shuffle_buffer`` of rows, so a batch of 128
comes from one or two shards, nearly always of one source; its in-batch negatives are not the ones a uniform
shuffle gives. The authors trained FusionRS-CLIP with ``DataLoader(dataset, batch_size=128, shuffle=True,
drop_last=True, generator=torch.Generator().manual_seed(seed))`` over a map-style dataset: a fresh global
permutation of every row each epoch. This module gives exactly that:

* :class:`FusionRSMapDataset`: one config/split of a repo through ``datasets.load_dataset`` (not
  streaming: the Arrow cache, random access by index; :func:`fusionrs_hf.load`, so local folders, the Hub
  and fsspec stores all work). The image columns are cast to ``datasets.Image(decode=False)``: ``datasets``
  hands over the stored bytes and the collate function decodes them, so that decoding is ours to choose.
  The first use of a split prepares the Arrow cache of the whole config (``datasets`` prepares every split
  of it), which costs the config's size on disk once.
* :class:`FusionRSMapDataLoader`: a plain ``DataLoader`` built as the release builds it (``shuffle=True``
  and a generator seeded once with ``seed``, so epoch ``e``'s order is the ``e``-th permutation that
  generator gives, as in the release's loop), with ``set_epoch`` (epoch ``e``'s order whatever ran before:
  the generator is replayed when a pass was cut short or another epoch is asked for) and ``skipped``. With
  ``world_size > 1`` it uses ``DistributedSampler(shuffle=True, seed=seed)`` with ``set_epoch`` instead
  (each rank a disjoint share of one permutation per epoch; the release ran on one GPU, so there is no
  release order to match there).
* The batch format is the streaming loader's: ``rgb``, ``ir`` (float32 (B, 3, S, S), channels-last by
  default), ``caption``, ``ir_caption``, ``sample_id``, ``source`` (lists), token ids with ``tokenizer=``.
* Pixels (:class:`FastPixels`, :class:`ProcessorPixels`): ours (:mod:`fusionrs_hf.decode`: reduced-scale
  JPEG decode, centre crop, antialiased bilinear resize, normalize; the same values as the streaming loader)
  or a ``transformers`` image processor run on fully decoded PIL images, which is what the authors' trainer
  and evaluator did (``CLIPProcessor``: ``convert("RGB")``, shortest edge to 224 bicubic, centre crop 224,
  rescale 1/255, OpenAI mean/std). Only the processor itself gives its pixels bit for bit, so it is run
  as it is, not reimplemented.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..decode import (
    CLIP_MEAN,
    CLIP_STD,
    DecodeError,
    Normalizer,
    center_crop_resize,
    decode_rgb,
    empty_images,
)
from ..limits import DEFAULT_MAX_PIXELS, ImageRefused, RowGroupTooBig, open_image
from ..schema import IMAGE_FIELDS
from ._common import ON_ERROR, logger, refuse_worker_options
from .batches import BatchAssembly, _image_value
from .plan import _resolve_rank, _resolve_world

__all__ = ["FusionRSMapDataset", "FusionRSMapDataLoader", "MapCollate", "FastPixels", "ProcessorPixels",
           "make_map_dataloader", "MAP_COLUMNS"]

MAP_COLUMNS: tuple[str, ...] = ("sample_id", "source", "rgb", "ir", "caption", "ir_caption")
"""The columns a map-style row carries (the batch keys); the others are not read."""


# --------------------------------------------------------------------------- pixels


class FastPixels:
    """Our decode (:mod:`fusionrs_hf.decode`): the streaming loader's pixels, from a map-style row.

    ``decode`` gives a uint8 (3, S, S) centre crop resized with torch's antialiased bilinear kernel from a
    reduced-DCT-scale JPEG decode; ``stack`` normalizes with ``mean``/``std`` into one float32 batch
    (``normalize=False``: uint8), channels-last unless ``channels_last=False``.
    """

    def __init__(self, image_size: int = 224, *, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 normalize: bool = True, channels_last: bool = True, decode_backend: str = "auto",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.image_size, self.normalize, self.channels_last = int(image_size), bool(normalize), bool(channels_last)
        self.decode_backend, self.max_pixels = decode_backend, max_pixels
        self.normalizer = Normalizer(mean, std)

    def decode(self, value) -> torch.Tensor:
        data = _image_value(value, "image")
        if data is None:
            raise DecodeError("missing image")
        if hasattr(data, "convert"):  # a PIL image (a dataset that decodes)
            return center_crop_resize(np.asarray(_pil_rgb(data)), self.image_size)
        return center_crop_resize(decode_rgb(data, self.image_size, backend=self.decode_backend,
                                             max_pixels=self.max_pixels), self.image_size)

    def stack(self, images: list[torch.Tensor]) -> torch.Tensor:
        s = self.image_size
        out = empty_images((len(images), 3, s, s), torch.float32 if self.normalize else torch.uint8,
                           channels_last=self.channels_last)
        for j, img in enumerate(images):
            if self.normalize:
                self.normalizer(img, out[j])
            else:
                out[j].copy_(img)
        return out


class ProcessorPixels:
    """A ``transformers`` image processor on fully decoded PIL images: the authors' pixels.

    ``decode`` opens the stored bytes with PIL (:func:`fusionrs_hf.limits.open_image`: the same format list
    and size limits as every reader here) and converts them to RGB, decoding every pixel (as the release's
    ``Image.open(path).convert("RGB")``; no EXIF rotation, as there); ``stack`` runs
    ``image_processor(images=..., return_tensors="pt")["pixel_values"]`` over the batch. Pass the model's own
    processor loaded with the PIL backend (``use_fast=False`` in transformers 4, ``backend="pil"`` in 5), as
    FusionRS-CLIP's ``modeling.py`` does: the torchvision ("fast") processors resize differently.
    """

    def __init__(self, image_processor, *, channels_last: bool = True,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        if image_processor is None or not callable(image_processor):
            raise ValueError("ProcessorPixels needs a callable image processor (e.g. a CLIPImageProcessor)")
        self.image_processor, self.channels_last, self.max_pixels = image_processor, bool(channels_last), max_pixels

    def decode(self, value):
        data = _image_value(value, "image")
        if data is None:
            raise DecodeError("missing image")
        if hasattr(data, "convert"):
            return _pil_rgb(data)
        try:
            im = open_image(data if isinstance(data, bytes) else bytes(data), self.max_pixels)
            return im.convert("RGB")  # loads every pixel, then closes nothing the caller holds
        except ImageRefused as e:
            raise DecodeError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
            raise DecodeError(f"cannot decode image ({len(data)} bytes): {type(e).__name__}: {e}") from e

    def stack(self, images: list) -> torch.Tensor:
        if not images:
            crop = getattr(self.image_processor, "crop_size", None) or {}
            h, w = (crop.get("height", 0), crop.get("width", 0)) if isinstance(crop, dict) else (0, 0)
            return torch.empty((0, 3, int(h or 0), int(w or 0)), dtype=torch.float32)
        out = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        out = torch.as_tensor(out, dtype=torch.float32)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out.contiguous()


def _pil_rgb(im):
    return im if im.mode == "RGB" else im.convert("RGB")


# --------------------------------------------------------------------------- dataset


class FusionRSMapDataset(Dataset):
    """One config/split of a FusionRS repo by index: ``{sample_id, source, rgb, ir, caption, ir_caption}``.

    ``rgb``/``ir`` are the stored image bytes (decoded later, by the collate function). ``dataset``: an
    already loaded ``datasets.Dataset`` of FusionRS rows instead of ``repo_or_path`` (its order is kept).
    ``usable_captions_only``: leave out rows whose caption is empty after the authors' normalisation
    (:func:`fusionrs_hf.text.caption_key` is None), as the release's trainer does (``read_jsonl`` keeps rows
    with a caption: 579,992 of rc4's 580,000 train rows); the kept rows keep their order, and index ``i``
    is the ``i``-th kept row.
    """

    def __init__(self, repo_or_path: str | os.PathLike | None = None, config: str = "iraware", split: str = "train",
                 *, dataset=None, revision: str | None = None, storage_options: dict | None = None,
                 usable_captions_only: bool = False) -> None:
        import datasets

        if (repo_or_path is None) == (dataset is None):
            raise ValueError("give exactly one of repo_or_path or dataset")
        if dataset is None:
            from .. import load

            try:  # load() judges a local repo's footers before datasets prepares its Arrow cache
                dataset = load(config, split, streaming=False, repo=str(repo_or_path), revision=revision,
                               storage_options=storage_options)
            except RowGroupTooBig as e:
                raise DecodeError(str(e)) from None
        missing = [c for c in MAP_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"not FusionRS rows: columns {', '.join(missing)} missing (has "
                             f"{', '.join(dataset.column_names)})")
        ds = dataset.select_columns(list(MAP_COLUMNS))
        for col in IMAGE_FIELDS:  # the bytes as stored; decoding is the collate function's
            ds = ds.cast_column(col, datasets.Image(decode=False))
        self.data = ds
        self.config, self.split = config, split
        self.positions: list[int] | None = None
        """Dataset positions of the kept rows (None: every row), for ``usable_captions_only``."""
        if usable_captions_only:
            from ..text import caption_key

            captions = ds.select_columns(["caption"]).with_format("arrow")[:]["caption"].to_pylist()
            keep = [i for i, c in enumerate(captions) if caption_key(c) is not None]
            if len(keep) < len(captions):
                self.positions = keep
        self.dropped = len(ds) - len(self)
        """Rows left out for an unusable caption."""

    def __len__(self) -> int:
        return len(self.data) if self.positions is None else len(self.positions)

    def _pos(self, i: int) -> int:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} rows")
        i %= len(self)
        return i if self.positions is None else self.positions[i]

    def __getitem__(self, i: int) -> dict:
        return _row(self.data[self._pos(i)])

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """A batch's rows in one Arrow ``take`` (torch's fetcher calls this when it exists)."""
        cols = self.data[[self._pos(i) for i in indices]]
        return [_row({k: cols[k][j] for k in MAP_COLUMNS}) for j in range(len(indices))]

    @property
    def sample_ids(self) -> list[str]:
        """Every row's ``sample_id`` in index order (no image is read)."""
        ids = self.data.select_columns(["sample_id"]).with_format("arrow")[:]["sample_id"].to_pylist()
        return ids if self.positions is None else [ids[p] for p in self.positions]


def _row(r: dict) -> dict:
    out = {k: r[k] for k in MAP_COLUMNS}
    for col in IMAGE_FIELDS:
        v = out[col]
        out[col] = v.get("bytes") if isinstance(v, dict) else v
    return out


# --------------------------------------------------------------------------- collate


class MapCollate:
    """``collate_fn`` of the map-style loader: decode each row's images with ``pixels`` and batch them.

    A row whose image cannot be decoded raises :class:`~fusionrs_hf.decode.DecodeError` naming its
    ``sample_id`` and column, or with ``on_error="skip"`` is left out of its batch and counted in
    ``skipped`` (shared memory, so workers' skips add up).
    """

    def __init__(self, pixels: FastPixels | ProcessorPixels, *, tokenizer: Callable | None = None,
                 on_error: str = "raise") -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.pixels, self.tokenizer, self.on_error = pixels, tokenizer, on_error
        self.skipped = torch.zeros((), dtype=torch.int64).share_memory_()

    def __call__(self, rows: Sequence[dict]) -> dict:
        batch = pixel_batch(rows, self.pixels, self._fail)
        if self.tokenizer is not None:
            BatchAssembly._tokenize(self, batch)  # the streaming loader's rule (it reads only self.tokenizer)
        return batch

    def _fail(self, rec: dict, col: str, err: Exception) -> None:
        msg = f"sample_id={rec.get('sample_id')!r} column={col!r}: {err}"
        if self.on_error == "raise":
            raise DecodeError(msg) from err
        self.skipped += 1
        logger.warning("skipping %s", msg)


def pixel_batch(rows: Sequence[dict], pixels: FastPixels | ProcessorPixels, fail: Callable) -> dict:
    """Rows -> a batch whose ``rgb``/``ir`` are ``pixels``' (one image decoded at a time, a column stacked), and
    the text fields as lists; the one batching rule of the map-style collate and of
    :class:`~fusionrs_hf.torch.loader.ProcessorIterable`. ``fail(rec, column, error)`` is told of a row that
    cannot be used (it raises, or the row is left out)."""
    images: dict[str, list] = {c: [] for c in IMAGE_FIELDS}
    kept: list[dict] = []
    for rec in rows:
        if rec.get("_error") is not None:  # a row whose parquet data could not be read (the streaming reader)
            fail(rec, "parquet", rec["_error"])
            continue
        got = {}
        for col in IMAGE_FIELDS:
            try:
                got[col] = pixels.decode(rec.get(col))
            except DecodeError as e:
                fail(rec, col, e)
                break
        else:
            for col in IMAGE_FIELDS:
                images[col].append(got[col])
            kept.append(rec)
    batch = {col: pixels.stack(images[col]) for col in IMAGE_FIELDS}
    for key in ("caption", "ir_caption", "sample_id", "source"):
        batch[key] = [r.get(key) for r in kept]
    return batch


# --------------------------------------------------------------------------- loader


class _Count(Dataset):
    """``range(n)`` as a dataset that returns nothing: drives a throwaway loader to replay a generator."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> None:
        return None

    def __getitems__(self, indices) -> list:
        return [None] * len(indices)


def _nothing(batch) -> None:
    return None


class FusionRSMapDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`FusionRSMapDataset`, made the way the release made its loader.

    One process: ``DataLoader(dataset, shuffle=shuffle, drop_last=drop_last, generator=Generator().manual_seed
    (seed))``, so the sequence of epoch orders is the release's (every pass draws the worker base seed and
    the next permutation from that one generator, as torch's ``DataLoader`` does). ``set_epoch(e)`` (or just
    iterating: each pass is the next epoch) gives epoch ``e``'s order whatever ran before: when the generator
    is not where epoch ``e`` starts (a pass broken off, another epoch asked for) it is replayed from the seed
    with an identical loader over ``range(n)`` that reads nothing (a randperm per epoch). Several processes
    (``world_size > 1``): ``DistributedSampler(shuffle=shuffle, seed=seed, drop_last=True)`` (each rank
    ``N // world_size`` rows, no row on two ranks) and its ``set_epoch``; a framework that re-makes the loader
    with a ``DistributedSampler`` of its own (Lightning's ``use_distributed_sampler``) gets this one, with that
    sampler's world size and rank. ``persistent_workers`` is refused: torch then draws no new base seed per pass, so the
    orders would leave the release's sequence.
    """

    def __init__(self, dataset: Dataset, *, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None,
                 collate_fn: Callable | None = None, num_workers: int = 0, **kw) -> None:
        if kw.get("persistent_workers"):
            raise ValueError("persistent_workers=True is not supported by the map-style loader (it would change "
                             "the sequence of epoch orders); leave it off")
        kw.pop("persistent_workers", None)
        refuse_worker_options(num_workers, kw)
        if num_workers == 0:
            kw.pop("prefetch_factor", None)
        sampler = kw.pop("sampler", None)
        if type(sampler) in (DistributedSampler, _LateRankSampler):
            # a framework re-made this loader with a DistributedSampler of its own (Lightning's
            # use_distributed_sampler, when the loader was made before the process group): keep its world
            # and rank, and this loader's seed and drop_last=True, so a rank's share is the one
            # make_dataloader(world_size=..., rank=...) gives (its default pads with repeated rows)
            world_size, shuffle = sampler.num_replicas, sampler.shuffle
            rank = sampler._rank_arg if isinstance(sampler, _LateRankSampler) else sampler.rank
        elif sampler is not None:
            kw["sampler"] = sampler  # the caller's own sampler, as DataLoader takes it
        world_size = _resolve_world(world_size)
        # a generator of its own in every case: the worker base seed never comes from torch's global RNG; one
        # passed in (a framework re-making the loader passes the old one) is re-seeded, as the orders are seed's
        generator = kw.pop("generator", None) or torch.Generator()
        generator.manual_seed(int(seed))
        if kw.get("batch_sampler") is not None:
            # a framework's own batches (Lightning's predict re-makes the loader with a wrapper of the batch
            # sampler it had, ours inside): taken as they are, with this loader's generator and collate
            super().__init__(dataset, generator=generator, collate_fn=collate_fn, num_workers=num_workers, **kw)
        elif world_size > 1:
            # drop_last=True on the sampler whatever the batches' drop_last: every rank gets N // world_size
            # rows of one permutation, none twice (its default pads the last share with repeated rows), as
            # the streaming loader gives; the rank is read when a pass begins (see _LateRankSampler)
            sampler = _LateRankSampler(dataset, rank, world_size, shuffle=shuffle, seed=int(seed))
            super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                             generator=generator, collate_fn=collate_fn, num_workers=num_workers, **kw)
        else:
            super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                             generator=generator, collate_fn=collate_fn, num_workers=num_workers, **kw)
        self.seed, self.shuffle, self.world_size = int(seed), bool(shuffle), world_size
        self._rank_arg = rank
        self._next_epoch = 0
        """The epoch the next pass is (set_epoch sets it; each pass started advances it)."""
        self._generator_at: int | None = 0
        """The epoch whose order the generator gives next; None when a pass was cut short."""

    @property
    def rank(self) -> int:
        """This process's rank (read as the streaming loader reads it: when first needed, from ``rank=``, the
        process group or torchrun's ``RANK``)."""
        return self.sampler.rank if isinstance(self.sampler, _LateRankSampler) else _resolve_rank(
            self._rank_arg, self.world_size)[0]

    @property
    def epoch(self) -> int:
        """The epoch the next pass will be."""
        return self._next_epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (its order depends only on ``seed`` and ``epoch``)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._next_epoch = int(epoch)

    def __iter__(self):
        epoch = self._next_epoch
        self._next_epoch = epoch + 1
        if self.world_size > 1:
            sampler = getattr(self.batch_sampler, "sampler", self.sampler)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        elif self.shuffle and self._generator_at != epoch:
            self._replay(epoch)
        self._generator_at = None
        yield from super().__iter__()
        self._generator_at = epoch + 1  # the pass ran to its end: the generator is where epoch + 1 starts

    def _replay(self, epoch: int) -> None:
        """Put the generator where the release's loader has it after ``epoch`` full passes."""
        probe_gen = torch.Generator()
        probe_gen.manual_seed(self.seed)
        probe = DataLoader(_Count(len(self.dataset)), batch_size=self.batch_size, shuffle=self.shuffle,
                           drop_last=self.drop_last, generator=probe_gen, collate_fn=_nothing)
        for _ in range(epoch):
            for _ in probe:
                pass
        self.generator.set_state(probe_gen.get_state())
        self._generator_at = epoch

    @property
    def skipped(self) -> int:
        """Rows left out of their batch for an unreadable image (``on_error="skip"``), all workers."""
        return int(getattr(self.collate_fn, "skipped", 0))


class _LateRankSampler(DistributedSampler):
    """``DistributedSampler`` (``drop_last=True``) whose rank is read when a pass begins, not when the loader is
    made: a loader made before the process group (Lightning's own DDP launcher starts it inside
    ``Trainer.fit``) still reads its own share. ``len()`` needs only the world size."""

    def __init__(self, dataset, rank: int | None, world_size: int, *, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=world_size, rank=0, shuffle=shuffle, seed=seed, drop_last=True)
        self._rank_arg = rank
        self._pinned: int | None = None if rank is None else _resolve_rank(rank, world_size)[0]

    @property
    def rank(self) -> int:
        if self._pinned is None:
            self._pinned = _resolve_rank(self._rank_arg, self.num_replicas)[0]
        return self._pinned

    @rank.setter
    def rank(self, value: int) -> None:  # DistributedSampler.__init__ assigns it: the placeholder is ignored
        pass


def make_map_dataloader(
    repo_or_path,
    config: str = "iraware",
    split: str = "train",
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    image_size: int = 224,
    shuffle: bool = True,
    seed: int = 0,
    tokenizer: Callable | None = None,
    on_error: str = "raise",
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    image_processor=None,
    usable_captions_only: bool = False,
    revision: str | None = None,
    storage_options: dict | None = None,
    normalize: bool = True,
    channels_last: bool = True,
    decode_backend: str = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    **loader_kw,
) -> FusionRSMapDataLoader:
    """The map-style loader (:func:`fusionrs_hf.torch.make_dataloader` with ``shuffle="global"`` or
    ``map_style=True`` comes here). ``repo_or_path`` may also be a ``datasets.Dataset`` of FusionRS rows.

    ``image_processor``: the pixels are that processor's on fully decoded PIL images
    (:class:`ProcessorPixels`; ``image_size``, ``mean``, ``std`` and ``normalize`` then do not apply, the
    processor has its own); otherwise ours (:class:`FastPixels`, the streaming loader's values). Other
    keyword arguments go to the ``DataLoader`` (``pin_memory``, ``prefetch_factor``,
    ``multiprocessing_context``, ``timeout``).
    """
    if batch_size is None or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if image_processor is not None:
        if not normalize:
            raise ValueError("normalize=False gives uint8 crops of our decode; an image_processor normalizes itself")
        pixels: FastPixels | ProcessorPixels = ProcessorPixels(image_processor, channels_last=channels_last,
                                                               max_pixels=max_pixels)
    else:
        pixels = FastPixels(image_size, mean=mean, std=std, normalize=normalize, channels_last=channels_last,
                            decode_backend=decode_backend, max_pixels=max_pixels)
    collate = MapCollate(pixels, tokenizer=tokenizer, on_error=on_error)  # a bad on_error fails before reading
    if hasattr(repo_or_path, "column_names") and hasattr(repo_or_path, "__getitem__"):  # a datasets.Dataset
        dataset = FusionRSMapDataset(dataset=repo_or_path, config=config, split=split,
                                     usable_captions_only=usable_captions_only)
    else:
        dataset = FusionRSMapDataset(repo_or_path, config, split, revision=revision, storage_options=storage_options,
                                     usable_captions_only=usable_captions_only)
    return FusionRSMapDataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, seed=seed, drop_last=drop_last,
                                 rank=rank, world_size=world_size, collate_fn=collate, num_workers=num_workers,
                                 **loader_kw)
