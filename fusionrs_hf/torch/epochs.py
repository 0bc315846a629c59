"""The plan across epochs (a mixin of :class:`~fusionrs_hf.torch.dataset.FusionRSIterable`): the Hub commit a
plan reads, the epoch counter and when it advances, re-planning when shards changed, and the rows and batches an
epoch has on each rank. How one epoch's rows are cut into slices is in :mod:`.plan`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from ..secrets import scrub, scrubbing
from ..storage import COMMIT_RE
from ._common import logger
from .plan import Unit, plan_shards, shard_fingerprints, split_files
from .reader import hub_url


class EpochPlanning:
    """Which shards (and, on the Hub, which commit) each epoch reads, and how many rows and batches it has."""

    @property
    def commit(self) -> str | None:
        """The Hub commit this epoch's plan reads (None off the Hub). Every request names it, so a push to
        the branch mid-epoch changes nothing until the next epoch re-plans (:meth:`refresh_plan`)."""
        return self._commit

    def _pin(self, sha: str | None) -> None:
        """In the training process: read the Hub repo at commit ``sha`` from now on, and publish it for
        persistent workers (they read it when they re-plan); nothing off the Hub or without a commit."""
        if not sha or self._ref is None or self._ref.kind != "hub":
            return
        self._use_commit(sha)
        raw = sha.encode()[: self._commit_shared.numel()].ljust(self._commit_shared.numel(), b"\0")
        # one write of the whole field, before the plan generation that tells workers to look is bumped
        self._commit_shared.copy_(torch.frombuffer(bytearray(raw), dtype=torch.uint8))

    def _use_commit(self, sha: str) -> None:
        """Read at commit ``sha`` in this process only (a worker: the commit the training process published)."""
        self._loc = self._ref.at_commit(sha)
        self.root, self._commit = self._loc.root, sha

    def _shared_commit(self) -> str | None:
        raw = bytes(self._commit_shared.tolist()).rstrip(b"\0")
        return raw.decode() if raw else None

    def _moved_commit(self) -> str | None:
        """The commit the Hub revision names now, if it moved since the plan (one repo-info request); None when
        it did not, cannot (a revision given as a commit), must not (DDP), or the Hub did not answer (warned:
        the planned commit is read again).

        Under DDP (``world_size > 1``) the commit planned at the start is kept for the whole run: each rank
        asks on its own, so a push (or one rank's failed request) between the ranks' questions would put them
        on different shards and different batch counts, and the job would hang at the end of the epoch.
        A run that must follow the branch makes its loaders anew, with :func:`~fusionrs_hf.torch.agree_on_commit`.
        """
        pinned = self.commit
        if pinned is None or self.world_size > 1 or COMMIT_RE.fullmatch(self._ref.revision or ""):
            return None
        try:
            now = self._ref.commit()
        except Exception as e:  # noqa: BLE001 - no answer, 429, 5xx, 401/403: the planned commit is still there
            msg = scrub(f"fusionrs: could not ask whether {self._ref.label} moved on ({type(e).__name__}: {e}); "
                        f"this epoch reads commit {pinned} again")
            logger.warning(msg)
            warnings.warn(msg, RuntimeWarning, stacklevel=4)
            return None
        return now if now and now != pinned else None

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
        self._pin_rank()  # before this pass's workers take their copy
        if self._passes and not self._epoch_explicit:
            self._epoch[0] = self.epoch + 1
        self._passes += 1
        self._epoch_explicit = False

    def _plan(self) -> tuple[list[Unit], dict[str, tuple]]:
        files = split_files(self.fs, self.root, self.config, self.split)
        fingerprints = shard_fingerprints(self.fs, self.root, files)
        return self._plan_files(files, fingerprints), fingerprints

    def _plan_files(self, files: Sequence[str], fingerprints: dict[str, tuple] | None = None,
                    where: tuple | None = None) -> list[Unit]:
        """Units of ``files`` (on ``where``: (fs, root), default the dataset's); with ``on_error="skip"`` a
        shard with an unreadable footer is left out, named in a warning and in :attr:`skipped_shards`. Keeps
        remote footers for the workers (``_footers``)."""
        fs, root = where or (self.fs, self.root)
        bad: list[tuple[str, str]] | None = [] if self.on_error == "skip" else None
        sizes = {rel: fp[0] for rel, fp in (fingerprints or {}).items() if isinstance(fp[0], int)}
        units, self._footers = plan_shards(fs, root, files, unreadable=bad, sizes=sizes)
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
            moved = self._moved_commit()  # a Hub repo: one question says whether anything changed at all
            if moved is None and self.commit is not None:
                return False
            # Planned at the new commit first, switched to only once that plan is whole: a failure here (raised)
            # leaves the dataset at its old commit and plan, and the next epoch asks again.
            loc = self._ref.at_commit(moved) if moved else self._loc
            fs, root = loc.fs(), loc.root
            if hasattr(fs, "invalidate_cache"):
                fs.invalidate_cache()  # a cached listing would hide the change (hf://, s3://)
            files = split_files(fs, root, self.config, self.split)
            fingerprints = shard_fingerprints(fs, root, files)
            if fingerprints == self._fingerprints:
                # A commit that left this split's shards alone: the same plan, read at the new commit from the next
                # pass's workers on. Persistent workers keep the old commit's URLs (the same bytes; the plan
                # generation is not bumped, so they re-read no footer) until the shards themselves change.
                if moved:
                    self._footers = {rel: f._replace(url=hub_url(fs, f"{root}/{rel}")) if f.url else f
                                     for rel, f in self._footers.items()}
                    self._pin(moved)
                return False
            units = self._plan_files(files, fingerprints, (fs, root))
            if moved:
                self._pin(moved)
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
    def num_rows(self) -> int:
        """Rows this rank reads per epoch (fast path): ``N // world_size``."""
        if self.source is not None:
            raise TypeError("num_rows is unknown for a generic datasets source")
        return sum(u.num_rows for u in self.units) // self.world_size

    def worker_rows(self, num_workers: int) -> list[int]:
        """Rows per worker slice on this (and every) rank, the one rule the slicing and ``len`` share.

        Slices hold whole batches, and the rows that do not fill one go to a single worker: a rank's epoch
        then has at most one short batch, as a map-style ``DataLoader`` gives. Cut evenly by rows, every
        worker would end on its own short batch (8 workers: 8 of them, each of a few rows, which changes
        the in-batch negatives a contrastive loss sees). The one with the short batch is the first worker
        without an extra whole batch, so batch counts per worker differ by at most one.
        """
        k, n, b = max(1, num_workers), self.num_rows, self.batch_size
        if not b or b <= 1:
            q, rem = divmod(n, k)
            return [q + (w < rem) for w in range(k)]
        full, tail = divmod(n, b)
        q, rem = divmod(full, k)
        rows = [(q + (w < rem)) * b for w in range(k)]
        rows[rem % k] += tail
        return rows

    def __len__(self) -> int:
        """Batches per epoch on this rank (identical on every rank); rows when ``batch_size`` is None."""
        rows = self.worker_rows(self.num_workers_hint)
        if self.batch_size is None:
            return sum(rows)
        b = self.batch_size
        return sum((n // b) if self.drop_last else -(-n // b) for n in rows)

