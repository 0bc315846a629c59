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
  them and re-plans (persistent workers follow), and ``len(loader)`` gives the new count. A Hub repo
  is read at the commit its revision named at planning (``dataset.commit``): a push mid-epoch
  changes nothing until the next epoch, and a state saved at another commit is refused.

Global shuffle (``shuffle="global"``, :mod:`.mapstyle`)
-------------------------------------------------------
The streaming order above keeps a batch within one or two shards (row groups of a thousand rows and
more, mostly of one source). ``make_dataloader(..., shuffle="global")`` instead reads the split as a
map-style dataset (:class:`FusionRSMapDataset`: ``datasets.load_dataset`` non-streaming, the Arrow cache,
images kept as bytes and decoded by us) through :class:`FusionRSMapDataLoader`, a ``DataLoader`` with
``shuffle=True`` and ``generator=torch.Generator().manual_seed(seed)``: a fresh uniform permutation of
every row each epoch, the authors' training loader (``DistributedSampler(seed=seed)`` under DDP). The
batches have the same keys and formats. ``image_processor=`` (either path) gives a ``transformers`` image
processor's pixels of the fully decoded images instead of ours (the authors' preprocessing).

Any ``datasets.IterableDataset`` of FusionRS rows also works (``FusionRSIterable(source=ds)``):
its image columns are cast to ``Image(decode=False)`` and decoded here, DDP uses
``split_dataset_by_node`` and resume uses the dataset's own ``state_dict``; that generic path
keeps the `datasets` rules for shards and ranks (equal batch counts are not guaranteed).

The parts
---------
* :mod:`.plan`: where the data is (:func:`resolve_repo`) and the work plan (:class:`Unit`,
  :func:`plan_units`, fingerprints, the rank/worker slicing).
* :mod:`.reader`: reading a worker's row groups; over a network, bounded read-ahead of the next
  row groups' byte ranges (``read_ahead``, ``request_size``) with retries; :mod:`.share`: a row
  group two workers' slices split, fetched once.
* :mod:`.slots`: the shared-memory batch slots.
* :mod:`.dataset`: :class:`FusionRSIterable`, its settings and one pass's row order; its parts
  :mod:`.epochs` (the plan across epochs, the Hub commit, re-planning, row and batch counts),
  :mod:`.resume` (``state_dict`` and its checks) and :mod:`.batches` (batch assembly).
* :mod:`.loader`: the DataLoader wrappers, :func:`make_dataloader`, :func:`loader_for`,
  :class:`ProcessorIterable`.
* :mod:`.mapstyle`: the map-style path (:class:`FusionRSMapDataset`, :class:`FusionRSMapDataLoader`,
  :func:`make_map_dataloader`) and the two pixel pipelines (:class:`FastPixels`, :class:`ProcessorPixels`).
"""

from __future__ import annotations

from ..decode import (
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
from ..layout import SPLITS, layout_for
from ..schema import FIELD_NAMES, IMAGE_FIELDS
from ..secrets import SCRUB_FILTER, register_url, scrub, scrubbing
from ..storage import Location, locate, require
from ._common import _MAX_COUNTER_SLOTS, BATCH_KEYS, ON_ERROR, STATE_FORMAT, logger
from .dataset import FusionRSIterable, _image_value
from .loader import (
    SHUFFLES,
    FusionRSDataLoader,
    ProcessorIterable,
    _identity,
    _LoaderMixin,
    _state_epoch,
    _stateful_class,
    collate_rows,
    loader_for,
    make_dataloader,
    normalize_batch,
)
from .mapstyle import (
    MAP_COLUMNS,
    FastPixels,
    FusionRSMapDataLoader,
    FusionRSMapDataset,
    MapCollate,
    ProcessorPixels,
    make_map_dataloader,
)
from .plan import (
    Unit,
    _buffer_order,
    _fingerprint,
    _resolve_rank,
    _slot_pieces,
    agree_on_commit,
    plan_shards,
    plan_units,
    resolve_repo,
    shard_fingerprints,
    split_files,
)
from .reader import (
    DEFAULT_READ_AHEAD,
    DEFAULT_REQUEST_SIZE,
    PrefetchedFile,
    RangeSource,
    ReadStats,
    RowGroupPrefetcher,
    read_footers,
)
from .slots import (
    _RING_MAX,
    _SLOT_KEY,
    _SLOT_TENSOR_KEY,
    _OutputPool,
    _shared_empty,
    _SlotReceiver,
    _SlotRing,
    _SlotTable,
    _storage_uses,
)

__all__ = [
    "CLIP_MEAN", "CLIP_STD", "BATCH_KEYS", "DecodeError", "FusionRSIterable", "FusionRSDataLoader",
    "Unit", "agree_on_commit", "make_dataloader", "normalize_batch", "plan_units", "resolve_repo",
    "SHUFFLES", "FusionRSMapDataset", "FusionRSMapDataLoader", "make_map_dataloader", "MapCollate", "FastPixels",
    "ProcessorPixels", "ProcessorIterable", "MAP_COLUMNS",
]

# Every name the single-module version had stays importable from here.
_COMPAT = (Normalizer, center_crop_resize, decode_rgb, empty_images, image_strides, is_channels_last,
           pil_to_array, _MAX_COUNTER_SLOTS, ON_ERROR, STATE_FORMAT, logger, _image_value, _identity,
           _LoaderMixin, _state_epoch, _stateful_class, collate_rows, loader_for, _fingerprint,
           shard_fingerprints, split_files, _RING_MAX, _SLOT_KEY, _SLOT_TENSOR_KEY, _OutputPool,
           _shared_empty, _SlotReceiver, _SlotRing, _SlotTable, _storage_uses, _buffer_order,
           _resolve_rank, _slot_pieces, SPLITS, layout_for, FIELD_NAMES, IMAGE_FIELDS, SCRUB_FILTER, register_url,
           scrub, scrubbing, Location, locate, require,
           DEFAULT_READ_AHEAD, DEFAULT_REQUEST_SIZE, PrefetchedFile, RangeSource, ReadStats, RowGroupPrefetcher,
           read_footers, plan_shards)
