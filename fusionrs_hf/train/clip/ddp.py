"""Several processes (``torchrun``): the process group, the global contrastive batch, and rank 0's decisions.

Under ``torchrun --nproc_per_node W examples/train_clip.py ...`` (torchrun's ``WORLD_SIZE > 1``), or inside a
process group of several processes that the caller initialised, :func:`~fusionrs_hf.train.clip.train_clip`
trains data-parallel. What each part does, and why it is exact:

* The process group: initialised here when it is not (``nccl`` when the device is CUDA, else ``gloo``; the
  rendezvous is torchrun's ``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK`` / ``WORLD_SIZE``, the timeout
  :data:`TIMEOUT`), and destroyed at the end by this module only when it made it. On CUDA the device is
  ``cuda:LOCAL_RANK`` (``--device cuda`` too; an explicit ``cuda:N`` is kept as given).
* Data: :func:`fusionrs_hf.torch.make_dataloader` gives each rank its share by itself (it reads rank and world
  size from the process group): streamed, rank ``r`` reads rows ``[r N/W, (r+1) N/W)`` of the epoch's order
  and every rank yields the same number of batches; ``shuffle="global"`` uses ``DistributedSampler(seed=seed,
  drop_last=True)``, one permutation per epoch dealt to the ranks. ``--batch-size`` is per process: a step
  sees ``W x batch_size`` rows. A Hub repo's loaders read the commit rank 0 sees
  (:func:`fusionrs_hf.torch.agree_on_commit`), and the ranks check that they count the same batches per epoch
  and steps before the first step (a mismatch is an error on every rank, not a hang at an epoch's end).
* The loss sees that global batch: the embeddings of every rank are gathered with their gradients
  (:func:`torch.distributed.nn.functional.all_gather`, rank ``r``'s rows in slot ``r``, as open_clip's
  ``gather_features(..., gather_with_grad=True)``), so every rank computes the loss one process computes on the
  concatenated batch (IR-aware captions present on some rows only, and ``dedupe_captions``' same-caption
  positives, are gathered too). Gradients: the gather's backward sums the ``W`` ranks' (identical) gradients of
  each slot and ``DistributedDataParallel`` averages over ``W``, which is the one-process gradient.
* Rank 0 alone evaluates, saves checkpoints and writes ``train_log.jsonl`` and ``metrics.json`` (and the
  command prints the last line there); every evaluation's result is sent to the other ranks
  (``broadcast_object_list``), which take the same selection decisions with the same code and load the same
  weights (they hold equal weights throughout: DDP keeps them so; the run records a digest of each rank's
  final weights in ``metrics.json``).
* The release's validation loss (``select="release"``) is exact: the batches are the one-process batches
  (dataset order, ``val_batch_size``, the last short one kept), dealt round robin (rank ``r`` takes batches
  ``r, r + W, ...``); each rank computes its batches' losses and all ranks gather them and average them in
  batch order, the same sum in the same order as one process. Splitting the rows instead (each rank its own
  share, losses all-reduced) would make other batches, and a contrastive loss depends on which rows share a
  batch: another number.
* Errors: the checks before training (config, splits, eval rows, model, loaders) run on every rank on the
  same listing and rows, and the ranks then agree (``all_gather_object``): all go on, or all stop, each with its
  own error or, where only another rank failed, :class:`~fusionrs_hf.train.errors.PeerFailedError` with that
  rank's line and exit code. Each training batch is fetched the same way (an error reading one on any rank
  stops every rank), and rank 0's evaluations and saves send their error instead of a result. An error inside
  a training step on one rank only (CUDA out of memory) leaves the others in a collective: torchrun then
  stops them, and the process group's :data:`TIMEOUT` bounds the wait otherwise.

Every collective is reached by every rank in the same order: the control flow that leads to one depends only on
values all ranks share (the step count, the broadcast results, the gathered counts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta

import torch
from torch import nn

TIMEOUT = timedelta(hours=1)
"""The process group's timeout when this module initialises it: the other ranks wait in a collective while rank
0 evaluates and saves (the default NCCL timeout, 10 minutes, can be shorter than a full evaluation)."""

PROG = "train_clip"


class Encoders(nn.Module):
    """The trainable model behind one ``forward`` (what ``DistributedDataParallel`` wraps: DDP prepares its
    gradient reduction in ``forward``, and the adapter's encoders are methods): the stacked RGB+IR pixels through
    the image encoder, each list of strings in ``texts`` through the text encoder."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor, texts: dict[str, list[str]]):
        return self.model.encode_image(pixels), {k: self.model.encode_text(v) for k, v in texts.items()}


class NoLog:
    """What the other ranks write their log records to: nothing."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (0 of 1: one process, every method a no-op or a
    plain call), the training ``device``, and whether this module made the process group (``owned``)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None
    backend: str = ""
    owned: bool = False
    failed_together: bool = False
    """Set when an error was agreed on (every rank raises): the process group can then be closed safely."""
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # -------------------------------------------------------------- errors: agree, and stop together

    def _status(self, exc: BaseException) -> tuple[int, str]:
        from ..errors import error_line, exit_code

        line = error_line(PROG, exc)
        return exit_code(exc), line[len(PROG) + 2:] if line.startswith(f"{PROG}: ") else line

    def _peer(self, rank: int, status: tuple[int, str]) -> BaseException:
        from ..errors import PeerFailedError

        self.failed_together = True
        code, line = status
        return PeerFailedError(f"{PROG}: process {rank} of {self.world} failed, so every process stops: {line}",
                               code=code)

    def agreed(self) -> _Agreed:
        """A ``with`` block that every rank leaves the same way: when it raises on any rank, it raises on every
        rank (its own error, or :class:`PeerFailedError`). No collective may run inside it."""
        return _Agreed(self)

    def together(self, fn):
        """Run ``fn`` on every rank and return every rank's value (a list, by rank); an error on any rank is
        raised on every rank (as :meth:`agreed`)."""
        if not self.active:
            return [fn()]
        own = None
        try:
            mine = ("ok", fn())
        except Exception as exc:  # noqa: BLE001 - sent to the others, then raised here as it is
            own, mine = exc, ("error", self._status(exc))
        got = self.objects(mine)
        if own is not None:
            self.failed_together = True
            raise own
        for r, (kind, value) in enumerate(got):
            if kind == "error":
                raise self._peer(r, value)
        return [value for _, value in got]

    def on_main(self, fn, *, send: bool = True):
        """Run ``fn`` on rank 0 alone and give its value to every rank (``send=False``: rank 0 keeps it, the
        others get None); rank 0's error is raised on every rank."""
        if not self.active:
            return fn()
        box: list = [None]
        own = value = None
        if self.main:
            try:
                value = fn()
                box[0] = ("ok", value if send else None)
            except Exception as exc:  # noqa: BLE001 - sent to the others, then raised here as it is
                own, box[0] = exc, ("error", self._status(exc))
        torch.distributed.broadcast_object_list(box, src=0)
        if own is not None:
            self.failed_together = True
            raise own
        kind, got = box[0]
        if kind == "error":
            raise self._peer(0, got)
        return value if self.main else got

    def same(self, what: str, value) -> None:
        """Raise on every rank unless every rank has the same ``value`` (a count that must match, or the ranks
        would reach different collectives)."""
        if not self.active:
            return
        values = self.objects(value)
        if any(v != values[0] for v in values):
            from ..errors import DistributedRunError

            self.failed_together = True
            raise DistributedRunError(
                f"{PROG}: the {self.world} processes disagree on {what} ({', '.join(map(str, values))}, by rank); "
                "they must read the same data (a Hub repo pushed to while they started?)")

    def batches(self, loader):
        """``loader``'s batches, fetched in step on every rank: when fetching fails on any rank, every rank
        raises; when the loader ends on any rank, it ends on every rank. One process: ``loader`` itself."""
        if not self.active:
            return loader
        return self._batches(loader)

    def _batches(self, loader):
        it = iter(loader)
        while True:
            own, batch, ended = None, None, False
            try:
                batch = next(it)
            except StopIteration:
                ended = True
            except Exception as exc:  # noqa: BLE001 - every rank hears of it first
                own = exc
            flags = torch.tensor([own is not None, ended], dtype=torch.int64, device=self.comm_device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            failed, over = (bool(x) for x in flags.tolist())
            if failed:
                statuses = self.objects(None if own is None else self._status(own))
                self.failed_together = True
                if own is not None:
                    raise own
                r = next(i for i, s in enumerate(statuses) if s is not None)
                raise self._peer(r, statuses[r])
            if over:
                return
            yield batch

    # -------------------------------------------------------------- collectives on data

    def objects(self, obj) -> list:
        """``obj`` of every rank, by rank (``all_gather_object``)."""
        if not self.active:
            return [obj]
        got: list = [None] * self.world
        torch.distributed.all_gather_object(got, obj)
        return got

    def ints(self, *values: int) -> list[tuple[int, ...]]:
        """Small integers of every rank, by rank (one ``all_gather`` of a tensor)."""
        t = torch.tensor(values, dtype=torch.int64, device=self.comm_device)
        if not self.active:
            return [tuple(values)]
        parts = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(parts, t)
        return [tuple(int(x) for x in p.tolist()) for p in parts]

    def rows(self, t: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """The rows of every rank concatenated in rank order (rank ``r`` has ``counts[r]`` rows, padded to the
        largest count for the collective). With gradients when ``t`` needs them: the backward gives each rank the
        sum of every rank's gradient of its rows."""
        if not self.active:
            return t
        most = max(counts)
        if t.shape[0] < most:
            t = torch.cat([t, t.new_zeros((most - t.shape[0], *t.shape[1:]))])
        if t.requires_grad:
            parts = _GatherWithGrad.apply(t, self.rank, self.world).split(most)
        else:
            parts = [torch.empty_like(t) for _ in range(self.world)]
            torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)])

    # -------------------------------------------------------------- model and validation batches

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in ``DistributedDataParallel`` (rank 0's weights are broadcast to the others now)."""
        from torch.nn.parallel import DistributedDataParallel

        cuda = self.device is not None and self.device.type == "cuda"
        return DistributedDataParallel(module, device_ids=[self.device.index] if cuda else None,
                                       output_device=self.device.index if cuda else None)

    def share_batches(self, loader):
        """This rank's batches of an unshuffled map-style ``loader`` (its whole split): the one-process batches
        ``rank, rank + W, ...``, as a loader with the same dataset and collate function, and their indices."""
        from torch.utils.data import DataLoader

        n, size = len(loader.dataset), int(loader.batch_size)
        ids = list(range(self.rank, -(-n // size), self.world))
        batches = [list(range(b * size, min(n, (b + 1) * size))) for b in ids]
        kw = {"num_workers": loader.num_workers}
        if loader.num_workers:
            kw.update(multiprocessing_context=loader.multiprocessing_context, worker_init_fn=loader.worker_init_fn)
        return DataLoader(loader.dataset, batch_sampler=batches, collate_fn=loader.collate_fn, **kw), ids

    def close(self) -> None:
        """Destroy the process group if this module made it."""
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owned = False


class _GatherWithGrad(torch.autograd.Function):
    """Every rank's equal-sized ``t`` concatenated in rank order, with gradients (what open_clip's
    ``gather_features(..., gather_with_grad=True)`` gets from ``torch.distributed.nn.all_gather``): the backward
    sums the gradient of the whole gathered tensor over the ranks (each rank's loss is the same global loss, so
    this is ``W`` times its gradient) and hands each rank the rows of its own slot; DDP's average over ``W``
    then gives the one-process gradient."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        ctx.rank, ctx.rows = rank, t.shape[0]
        parts = [torch.empty_like(t) for _ in range(world)]
        torch.distributed.all_gather(parts, t.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)  # a sum
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows], None, None


class _Agreed:
    def __init__(self, dist: Dist) -> None:
        self.dist = dist

    def __enter__(self) -> _Agreed:
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        d = self.dist
        if not d.active or (exc is not None and not isinstance(exc, Exception)):
            return False  # one process; or Ctrl-C / exit, which torchrun passes to every rank
        statuses = d.objects(None if exc is None else d._status(exc))
        if exc is not None:
            d.failed_together = True
            return False  # this rank's own error, raised as it is
        for r, s in enumerate(statuses):
            if s is not None:
                raise d._peer(r, s)
        return False


def setup(device: str | None) -> Dist:
    """This process's :class:`Dist`: one process (``Dist()``) unless torchrun's ``WORLD_SIZE`` or an initialised
    process group says several; then the device (``cuda:LOCAL_RANK`` on CUDA) and the process group (initialised
    here when it is not: ``nccl`` for CUDA, ``gloo`` otherwise). A group that cannot start, or whose backend
    cannot carry the device's tensors, is a :class:`~fusionrs_hf.train.errors.DistributedRunError` (exit 2)."""
    from ...torch.plan import _env_int
    from ..errors import DistributedRunError

    dist = torch.distributed
    ready = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if ready else _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    if not dist.is_available():
        raise DistributedRunError(f"{PROG}: WORLD_SIZE says {world} processes, but this torch has no "
                                  "torch.distributed; run it in one process")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", _env_int("LOCAL_RANK", _env_int("RANK", 0) % max(1, torch.cuda.device_count())))
        torch.cuda.set_device(dev)
    owned = False
    if not ready:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=TIMEOUT)
        except (ValueError, RuntimeError) as exc:  # no rendezvous (WORLD_SIZE without torchrun), a port in use
            first = next((s.strip() for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
            raise DistributedRunError(
                f"{PROG}: WORLD_SIZE says {world} processes, but the {backend} process group did not start "
                f"({first}); start it with torchrun --nproc_per_node N examples/train_clip.py ...") from None
        owned = True
    backend = str(dist.get_backend())
    if dev.type != "cuda" and backend == "nccl":  # a group the caller made for CUDA, and a CPU run
        raise DistributedRunError(f"{PROG}: the process group's backend 'nccl' cannot carry {dev.type} tensors; "
                                  "initialise it with gloo for a run on the CPU (or train on CUDA)")
    # the small tensors of the collectives (flags, counts, masks): on the GPU for nccl, else on the CPU
    comm = dev if dev.type == "cuda" and "nccl" in backend else torch.device("cpu")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=dev, backend=backend, owned=owned,
                comm_device=comm)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state (names, dtypes, shapes and bytes): equal on every rank of a sound run."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
