"""Batch assembly (a mixin of :class:`~fusionrs_hf.torch.dataset.FusionRSIterable`): rows cut into batches,
images decoded and resized (and normalized) straight into the batch tensors, which in a worker are reused
shared-memory slots (:mod:`.slots`); bad rows raise or are skipped and counted; captions tokenized."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..decode import DecodeError, center_crop_resize, decode_rgb, pil_to_array
from ..secrets import scrub
from ._common import _MAX_COUNTER_SLOTS, logger
from .slots import _SLOT_KEY, _SLOT_TENSOR_KEY, _shared_empty


def prepare_tokenizer(tokenizer: Callable | None) -> Callable | None:
    """The callable a batch's captions go through, checked once here, in the process that makes the dataset.

    A transformers tokenizer (it has ``pad`` and ``model_max_length``) called on a list returns lists of
    different lengths, which no tensor holds: it is called padded to the batch's longest caption, truncated
    to its ``model_max_length``, as PyTorch tensors. Any other callable is taken as it is, and must return a
    tensor, a (B, L) nested list, or a mapping with ``input_ids`` (and ``attention_mask``) of those; one whose
    output for two captions of different lengths is ragged is refused now in one line, not in a worker."""
    if tokenizer is None:
        return None
    if not callable(tokenizer):
        raise TypeError(f"tokenizer must be callable (list of str -> token ids), got {type(tokenizer).__name__}")
    if hasattr(tokenizer, "pad") and hasattr(tokenizer, "model_max_length") and not isinstance(
            tokenizer, functools.partial):
        tokenizer = functools.partial(tokenizer, padding="longest", truncation=True, return_tensors="pt")
    probe = tokenizer(["a", "a river beside two roads and a bridge"])
    ids = probe["input_ids"] if hasattr(probe, "keys") and "input_ids" in probe else probe
    try:
        t = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids)
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"tokenizer= returned token ids that do not form one tensor for a batch ({e}); pass a "
                         "callable that pads, e.g. functools.partial(tok, padding=True, truncation=True, "
                         "return_tensors='pt')") from None
    if t.ndim != 2 or t.shape[0] != 2:
        raise ValueError(f"tokenizer= returned shape {tuple(t.shape)} for 2 captions; expected (2, L) token ids")
    return tokenizer


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


class BatchAssembly:
    """Rows -> batches: decode, resize and normalize into the batch tensors; failures named or counted."""

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
                return center_crop_resize(decode_rgb(value, self.image_size, backend=self.decode_backend,
                                                     max_pixels=self.max_pixels),
                                          self.image_size, out)
            value = _image_value(value, f"sample_id={rec.get('sample_id')!r}")
            if value is None:
                raise DecodeError("missing image")
            if isinstance(value, bytes | bytearray | memoryview):
                arr = decode_rgb(value, self.image_size, backend=self.decode_backend, max_pixels=self.max_pixels)
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

