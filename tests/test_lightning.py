"""Issue 13: the epoch advances on each new pass unless ``set_epoch`` was called, so frameworks that never call
it (Lightning) reshuffle every epoch; and a Lightning run resumes mid-epoch from a checkpoint exactly.

The first tests hold the loop contract itself (what any framework relies on); the Lightning tests drive a
real ``lightning.Trainer`` (CPU, 2 loader workers, torchdata's ``StatefulDataLoader`` for the resume).
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from fusionrs_hf.torch import FusionRSIterable, make_dataloader

KW = dict(config="default", split="train", batch_size=4, image_size=8, shuffle=True, seed=3, shuffle_buffer=8)


def _ids(loader) -> list[str]:
    return [s for b in loader for s in b["sample_id"]]


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, False), (2, True)])
def test_each_pass_is_a_new_epoch_unless_set_epoch_says_otherwise(sample_repo, workers, persistent):
    loader = make_dataloader(sample_repo, num_workers=workers, persistent_workers=persistent, **KW)
    passes = [_ids(loader) for _ in range(3)]
    assert len({tuple(p) for p in passes}) == 3 and all(sorted(p) == sorted(passes[0]) for p in passes)
    assert loader.dataset.epoch == 2
    ref = make_dataloader(sample_repo, num_workers=workers, **KW)
    for epoch, got in enumerate(passes):  # pass k is exactly epoch k
        ref.set_epoch(epoch)
        assert _ids(ref) == got
    loader.set_epoch(0)  # an explicit epoch wins, for that pass; the one after it advances from there
    assert _ids(loader) == passes[0] and _ids(loader) == passes[1]
    loader.set_epoch(1)
    loader.set_epoch(1)  # called twice: still epoch 1
    assert _ids(loader) == passes[1]


def test_a_plain_dataset_iterated_in_the_training_process_advances_too(sample_repo):
    ds = FusionRSIterable(sample_repo, **KW)
    first, second = ([s for b in ds for s in b["sample_id"]] for _ in range(2))
    assert first != second and sorted(first) == sorted(second) and ds.epoch == 1


def test_resume_keeps_the_saved_epoch_then_advances(sample_repo):
    import pickle

    kw = {**KW, "num_workers": 2, "stateful": True}
    ref = make_dataloader(sample_repo, **kw)
    epochs = [_ids(ref) for _ in range(3)]
    first = make_dataloader(sample_repo, **kw)
    _ids(first)  # epoch 0
    it = iter(first)  # epoch 1, broken off after 3 batches
    seen = [s for _ in range(3) for s in next(it)["sample_id"]]
    state = pickle.loads(pickle.dumps(first.state_dict()))
    del it, first
    second = make_dataloader(sample_repo, **kw)
    second.load_state_dict(state)
    assert seen + _ids(second) == epochs[1]  # the rest of epoch 1, not a new epoch
    assert _ids(second) == epochs[2]  # and the next pass is epoch 2


try:
    import lightning
except ImportError:  # the loop-contract tests above still run
    lightning = None
needs_lightning = pytest.mark.skipif(lightning is None, reason="lightning is not installed (the [test] extra)")


def _recorder():
    class Recorder(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: dict[int, list[str]] = {}

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).extend(batch["sample_id"])
            return (self.w * batch["rgb"].float().mean()).sum() + self.w.pow(2).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Recorder()


def _trainer(**kw):
    return lightning.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, **kw)


@pytest.fixture(scope="module")
def three_epochs(sample_repo):
    """One uninterrupted Lightning run of 3 epochs (2 workers, stateful loader)."""
    model = _recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(max_epochs=3, enable_checkpointing=False).fit(
            model, train_dataloaders=make_dataloader(sample_repo, num_workers=2, stateful=True, **KW))
    return model.seen


@needs_lightning
def test_lightning_three_epochs_three_orders(three_epochs, sample_repo):
    assert sorted(three_epochs) == [0, 1, 2]
    orders = [tuple(three_epochs[e]) for e in range(3)]
    assert len(set(orders)) == 3 and len({tuple(sorted(o)) for o in orders}) == 1  # same rows, new order
    ref = make_dataloader(sample_repo, num_workers=2, **KW)
    for epoch in range(3):  # Lightning's epoch k is the loader's epoch k
        ref.set_epoch(epoch)
        assert tuple(_ids(ref)) == orders[epoch]


@needs_lightning
def test_lightning_resumes_mid_epoch_from_a_checkpoint(three_epochs, sample_repo, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    per_epoch = len(make_dataloader(sample_repo, num_workers=2, **KW))
    stop = per_epoch + 3  # three batches into the second epoch
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=stop, save_top_k=-1)
    interrupted = _recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(max_epochs=3, max_steps=stop, callbacks=[ckpt]).fit(
            interrupted, train_dataloaders=make_dataloader(sample_repo, num_workers=2, stateful=True, **KW))
        path = next(tmp_path.glob(f"*step={stop}.ckpt"))
        resumed = _recorder()
        _trainer(max_epochs=3, enable_checkpointing=False).fit(
            resumed, train_dataloaders=make_dataloader(sample_repo, num_workers=2, stateful=True, **KW),
            ckpt_path=str(path))
    assert interrupted.seen[0] == three_epochs[0] and len(interrupted.seen[1]) == 3 * KW["batch_size"]
    assert sorted(resumed.seen) == [1, 2]
    assert interrupted.seen[1] + resumed.seen[1] == three_epochs[1]  # no duplicate, no gap, the same order
    assert resumed.seen[2] == three_epochs[2]


@needs_lightning
def test_lightning_checkpoints_with_the_plain_loader(sample_repo, tmp_path):
    """The default (not stateful) loader under a Trainer that saves checkpoints: Lightning takes a loader with
    a ``state_dict`` for resumable and calls it at every save, so the plain loader must have none."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    loader = make_dataloader(sample_repo, num_workers=0, **KW)
    assert not hasattr(loader, "state_dict")
    with pytest.raises(AttributeError, match="stateful=True"):
        loader.state_dict()
    model = _recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(max_epochs=1, callbacks=[ModelCheckpoint(dirpath=tmp_path)]).fit(model, train_dataloaders=loader)
    assert list(tmp_path.glob("*.ckpt")) and sorted(model.seen) == [0]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_a_state_saved_at_the_end_of_an_epoch_resumes_at_the_next_one(sample_repo, workers):
    """Lightning's default checkpoint is taken when an epoch ends. Restoring it replayed that epoch (with
    workers) or gave an empty pass (without); the next pass is the next epoch, from its start, exactly the
    order of an uninterrupted run."""
    import pickle

    kw = {**KW, "num_workers": workers, "stateful": True}
    ref = make_dataloader(sample_repo, **kw)
    epochs = [_ids(ref) for _ in range(3)]
    first = make_dataloader(sample_repo, **kw)
    assert _ids(first) == epochs[0]
    state = pickle.loads(pickle.dumps(first.state_dict()))
    second = make_dataloader(sample_repo, **kw)
    second.load_state_dict(state)
    assert _ids(second) == epochs[1] and _ids(second) == epochs[2]


_DDP_DRIVER = """
import json, sys, warnings
import lightning, torch
from fusionrs_hf.torch import make_dataloader

repo, store, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = json.loads(sys.argv[4])
loaders = {"global": make_dataloader(repo, shuffle="global", **kw),  # both made before the process group
           "stream": make_dataloader(repo, shuffle=True, num_workers=2, shuffle_buffer=8, **kw)}
torch.distributed.init_process_group("gloo", init_method=store, rank=rank, world_size=2)


class Recorder(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(batch["sample_id"])
        return (self.w * batch["rgb"].float().mean()).sum() + self.w.pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


seen = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for name, loader in loaders.items():
        model = Recorder()
        lightning.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                          enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                          num_sanity_val_steps=0).fit(model, train_dataloaders=loader)
        seen[name] = model.seen
print(json.dumps(seen))
"""
"""Lightning's ``strategy="ddp"`` in a group its caller made (``LOCAL_RANK`` set: Lightning launches nothing and
keeps the group), the loaders made before it, as a script that builds them at the top does."""


@needs_lightning
def test_lightning_ddp_gives_each_rank_its_own_share_of_every_epoch(sample_repo, tmp_path):
    """Two processes under ``Trainer(strategy="ddp", devices=2)``. The map-style loader (``shuffle="global"``)
    was re-made by Lightning with its own ``DistributedSampler`` and failed ("multiple values for keyword
    argument 'generator'"); it now keeps that sampler's world and rank with its own seed, so each rank reads
    what ``make_dataloader(world_size=2, rank=r)`` gives. The streaming loader reads its rank when a pass
    begins. Either way: each row once per epoch on one rank, a new order each epoch."""
    import json

    from .ddp_launch import ddp_env, run_ranks

    kw = dict(config="default", split="train", batch_size=4, image_size=8, seed=3)
    store = f"file://{tmp_path}/store"
    got = run_ranks(lambda r: [sys.executable, "-c", _DDP_DRIVER, str(sample_repo), store, str(r), json.dumps(kw)],
                    env=lambda r: ddp_env(LOCAL_RANK=str(r)))
    assert [rc for rc, _, _ in got] == [0, 0], [err[-3000:] for _, _, err in got]
    seen = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in got]
    for name, make in (("global", dict(shuffle="global")),
                       ("stream", dict(shuffle=True, num_workers=2, shuffle_buffer=8))):
        epochs = [[seen[r][name][str(e)] for r in (0, 1)] for e in (0, 1)]
        n = len(_ids(make_dataloader(sample_repo, **make, **kw)))  # rows in one pass of one process
        for e, (a, b) in enumerate(epochs):
            assert not set(a) & set(b) and len(a) == len(b) == n // 2, (name, e)
            for r, ids in enumerate((a, b)):
                ref = make_dataloader(sample_repo, world_size=2, rank=r, **make, **kw)
                ref.set_epoch(e)
                assert _ids(ref) == ids, (name, e, r)
        assert epochs[0][0] != epochs[1][0]


def test_a_batch_sampler_a_framework_passes_is_taken_as_it_is(sample_repo):
    """Lightning's predict re-makes the loader with a wrapper of the batch sampler it had: with a world size
    given, our own sampler was passed beside it ("batch_sampler option is mutually exclusive")."""
    from torch.utils.data import BatchSampler

    from fusionrs_hf.torch.mapstyle import FusionRSMapDataLoader

    ref = make_dataloader(sample_repo, world_size=2, rank=1, **{**KW, "shuffle": "global"})
    want = _ids(ref)
    remade = FusionRSMapDataLoader(ref.dataset, batch_sampler=BatchSampler(ref.sampler, 3, False), world_size=2,
                                   rank=1, seed=KW["seed"], collate_fn=ref.collate_fn)
    got = [s for b in remade for s in b["sample_id"]]
    assert got == want and [len(b["sample_id"]) for b in remade][:1] == [3]
