"""Shared-memory batch slots: workers write batch after batch into a few reused segments
(:class:`_SlotRing`), the training process hands a slot back once nobody references it
(:class:`_SlotReceiver`, :class:`_SlotTable`); :class:`_OutputPool` does the same for ``num_workers=0``."""

from __future__ import annotations

import math
import sys

import torch

from ..decode import empty_images, image_strides, is_channels_last
from ._common import _MAX_COUNTER_SLOTS


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
