"""Mid-epoch resume (a mixin of :class:`~fusionrs_hf.torch.dataset.FusionRSIterable`): the state one copy of the
dataset saves, and the checks that refuse a state that would skip rows of other data."""

from __future__ import annotations

import hashlib

from ._common import STATE_FORMAT

WORKER_SLICES = "whole-batches"
"""How a rank's rows are cut into worker slices (:meth:`~fusionrs_hf.torch.epochs.EpochPlanning.worker_rows`);
a state's position is only meaningful under the rule it was saved with."""

_RESUME_HINTS = {
    "seed": "resume with the same seed (the row order depends on it)",
    "shuffle": "resume with the same shuffle (the row order depends on it)",
    "shuffle_buffer": "resume with the same shuffle_buffer (the row order depends on it)",
    "batch_size": "resume with the same batch_size (the saved position counts rows of whole batches per worker)",
    "split_rows": "the split holds other rows now; resume on the data the state was saved from",
    "world_size": "resume with the same number of processes (world_size), each rank loading the state it saved",
    "rank": "each rank must load the state that rank saved",
    "num_workers": "resume with the same number of workers",
}
"""What to do about each mismatch :meth:`Resumable.check_state` finds (one line with the two values)."""


class Resumable:
    """``state_dict`` / ``load_state_dict`` of one copy of the dataset (a worker's, or the training process's)."""

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
            "shuffle_buffer": self.shuffle_buffer, "split_rows": self._split_rows(), "worker_slices": WORKER_SLICES,
        }
        if self.source is None:
            state["data"] = self._data_digest()
            state["config"], state["split"] = self.config, self.split
        if self.commit is not None:
            state["commit"] = self.commit
        if self._generic_ds is not None:
            state["generic"] = self._generic_ds.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.check_state(state)
        self._resume = dict(state)
        self._epoch[0] = int(state["epoch"])
        self._epoch_explicit = True

    def check_state(self, state: dict, *, who: str = "this dataset", num_workers: int | None = None) -> None:
        """Refuse, as one ``ValueError`` line naming both values, a state that would name other rows here.

        The row order is a pure function of what the state records (config/split, seed, shuffle, batch size,
        shuffle buffer, the split's rows, the shards' digest, the worker-slice rule), so any difference would
        silently skip the wrong rows. :meth:`load_state_dict` calls it; the stateful loader calls it too, with
        ``num_workers`` (its own) and ``who="this loader"``, for every worker's state before any worker starts:
        there it also checks the slot (rank, world_size, workers), which a dataset alone learns only once it
        iterates, and a mismatch is one line instead of a worker's traceback.
        (``shuffle_buffer``, ``split_rows`` and ``config``/``split`` are absent from states of older versions.)
        """
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a FusionRS stream state (format {STATE_FORMAT!r} expected)")
        if self.source is None and "config" in state and (state["config"], state.get("split")) != (
                self.config, self.split):
            raise ValueError(f"cannot resume: the state was saved reading {state['config']}/{state.get('split')}; "
                             f"{who} reads {self.config}/{self.split}")
        if state.get("worker_slices") != WORKER_SLICES and int(state.get("num_workers") or 1) > 1:
            raise ValueError("cannot resume: the state was saved by an older fusionrs-hf, which cut worker slices "
                             "by rows (now by whole batches); its position would name other rows")
        if state.get("commit") and self.commit and state["commit"] != self.commit:
            # a Hub branch that moved on: the refusal that names the commit reading the saved data comes first
            # (its other row count would otherwise be the first difference seen)
            self._check_data(state.get("data"), state.get("commit"))
        mine: dict[str, object] = {"seed": self.seed, "shuffle": self.shuffle, "batch_size": self.batch_size,
                                   "shuffle_buffer": self.shuffle_buffer, "split_rows": self._split_rows()}
        if num_workers is not None:  # the loader's view: the slot this state was saved in
            mine.update(world_size=self.world_size, rank=self.rank, num_workers=max(1, int(num_workers)))
        for key, value in mine.items():
            if key in state and state[key] != value:
                saved, have = repr(state[key]), repr(value)
                if key == "num_workers":  # a loader without workers reads in one slot, as one with a worker
                    saved, have = ("0 or 1" if state[key] == 1 else str(state[key])), str(num_workers)
                raise ValueError(f"cannot resume: the state was saved with {key}={saved}, {who} has {key}={have}; "
                                 f"{_RESUME_HINTS[key]}")
        self._check_data(state.get("data"), state.get("commit"))

    def _data_digest(self) -> str:
        """What the split's shards hold, as far as the store can tell without reading them: each shard's path,
        size and content id (LFS SHA-256 or git blob id on the Hub, ETag on object stores). Not mtimes or
        inodes: a copy of the same files elsewhere resumes."""
        fps = self._fingerprints
        cached = getattr(self, "_digest_of", None)
        if cached is not None and cached[0] is fps:  # once per plan: a stateful loader asks every batch
            return cached[1]
        h = hashlib.sha256()
        for rel, fp in sorted(fps.items()):
            size, _mtime, _ino, etag, blob, lfs = fp
            h.update(f"{rel}\0{size}\0{lfs or blob or etag or ''}\n".encode())
        self._digest_of = (fps, h.hexdigest()[:32])
        return self._digest_of[1]

    def _check_data(self, saved: str | None, saved_commit: str | None = None) -> None:
        """A state saved over other shards would skip rows of other data: refuse it, naming the commit that
        reads the saved data where the Hub has one. (States of older versions carry no digest: not checked.)"""
        if saved is None or self.source is not None or saved == self._data_digest():
            return
        where = self._ref.label if self._ref is not None else "the repo"
        if saved_commit and self.commit and saved_commit != self.commit:
            raise ValueError(
                f"cannot resume: the state was saved reading {where} at commit {saved_commit}; this dataset reads "
                f"commit {self.commit}, whose shards differ. Resume at the saved commit: revision={saved_commit!r} "
                f"(or hf://datasets/{self._ref.repo_id}@{saved_commit})")
        raise ValueError(f"cannot resume: the shards of {self.config}/{self.split} in {where} changed since the state "
                         "was saved (their sizes or content ids differ); resume on the data it was saved from")

    def _split_rows(self) -> int | None:
        """Rows of the whole split (fast path): a resumed state must describe the same data."""
        return sum(u.num_rows for u in self.units) if self.source is None else None

