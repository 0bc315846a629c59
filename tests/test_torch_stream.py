"""fusionrs_hf.torch: batches, workers, DDP, resume, shuffle, bad data, generic datasets path."""

from __future__ import annotations

import datetime
import io
import os
import pickle
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from fusionrs_hf.decode import CLIP_MEAN, CLIP_STD, DecodeError
from fusionrs_hf.demo import make_sample_repo, sample_rows
from fusionrs_hf.layout import shard_path
from fusionrs_hf.shards import write_rows
from fusionrs_hf.torch import FusionRSIterable, make_dataloader

SIZE = 32  # model input size in these tests; stored images are 64 px


@pytest.fixture(scope="module")
def stream_repo(tmp_path_factory) -> Path:
    """150 train rows in 10 shards (config default); config nwpu/train = 2 shards, 30 rows."""
    return make_sample_repo(tmp_path_factory.mktemp("stream") / "repo",
                            counts={"train": 30, "validation": 3, "test": 3}, size=64, max_rows=32)


def _rows(repo: Path, pattern: str) -> dict[str, dict]:
    out = {}
    for f in sorted(repo.glob(pattern)):
        for r in pq.read_table(f).to_pylist():
            out[r["sample_id"]] = r
    return out


def _ids(loader) -> list[str]:
    return [sid for batch in loader for sid in batch["sample_id"]]


def _quiet(fn, *a, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "3 workers > 2 suggested" on small CI boxes
        return fn(*a, **kw)


def test_batch_shapes_dtypes_normalization_and_alignment(stream_repo):
    rows = _rows(stream_repo, "data/*/train/*.parquet")
    size = 48  # 64 -> 48: no DCT scaling applies, so this compares the crop/resize/normalize path tightly
    loader = make_dataloader(stream_repo, config="default", split="train", batch_size=16, image_size=size)
    batch = next(iter(loader))
    assert set(batch) == {"rgb", "ir", "caption", "ir_caption", "sample_id", "source"}
    for key in ("rgb", "ir"):
        assert batch[key].shape == (16, 3, size, size)
        assert batch[key].dtype == torch.float32
        # stored (B, H, W, 3): torch's channels_last, the layout the workers normalize fastest
        assert batch[key].is_contiguous(memory_format=torch.channels_last)
    assert all(isinstance(c, str) for c in batch["caption"])
    # reference: independent full PIL decode + resize, CLIP normalization written out by hand
    mean = np.array(CLIP_MEAN, np.float32)[:, None, None]
    std = np.array(CLIP_STD, np.float32)[:, None, None]

    def ref(data: bytes) -> np.ndarray:
        arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR))
        return (arr.transpose(2, 0, 1).astype(np.float32) / 255 - mean) / std

    refs = {sid: (ref(r["rgb"]["bytes"]), ref(r["ir"]["bytes"])) for sid, r in rows.items()}
    for i, sid in enumerate(batch["sample_id"]):
        row = rows[sid]
        assert batch["caption"][i] == row["caption"]
        assert batch["ir_caption"][i] == row["ir_caption"]
        assert batch["source"][i] == row["source"]
        for k, key in enumerate(("rgb", "ir")):
            got = batch[key][i].numpy()
            err_own = np.abs(got - refs[sid][k]).mean()
            assert err_own < 0.06, (sid, key, err_own)  # ~1 grey level after normalization
            # ... and clearly closer to its own image than to any other sample's
            others = [np.abs(got - v[k]).mean() for o, v in refs.items() if o != sid]
            assert err_own < 0.5 * min(others)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_channels_last_false_gives_contiguous_batches_with_the_same_values(stream_repo, num_workers, normalize):
    kw = dict(config="default", split="train", batch_size=8, image_size=SIZE, num_workers=num_workers,
              normalize=normalize)
    layouts = {}
    for cl in (True, False):
        got = {}
        for batch in make_dataloader(stream_repo, channels_last=cl, **kw):
            for key in ("rgb", "ir"):
                x = batch[key]
                assert x.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
                assert x.is_contiguous() is (not cl)
            for i, sid in enumerate(batch["sample_id"]):
                got[sid] = (batch["rgb"][i].clone(), batch["ir"][i].clone())
        layouts[cl] = got
    assert layouts[True].keys() == layouts[False].keys() and layouts[True]
    for sid, (rgb, ir) in layouts[True].items():
        assert torch.equal(rgb, layouts[False][sid][0]) and torch.equal(ir, layouts[False][sid][1]), sid


def _loader_sending(repo, send_once: bool | None, **kw):
    loader = make_dataloader(repo, **kw)
    if send_once is not None:  # False: every batch carries its tensors, as with pin_memory=True
        loader.dataset.send_slots_once = send_once
    return loader


@pytest.mark.parametrize(("num_workers", "send_once"), [(0, None), (2, True), (2, False)])
def test_held_batches_are_never_overwritten_and_dropped_ones_are_reused(stream_repo, num_workers, send_once):
    """Batch memory is reused: reuse must be invisible to anyone still holding a batch, a view or an array."""
    kw = dict(config="default", split="train", batch_size=8, image_size=SIZE, num_workers=num_workers)
    reference = {}
    for batch in make_dataloader(stream_repo, **kw):
        for i, sid in enumerate(batch["sample_id"]):
            reference[sid] = (batch["rgb"][i].clone(), batch["ir"][i].clone())
    held, views, arrays = [], [], []
    loader = _loader_sending(stream_repo, send_once, **kw)
    for k, batch in enumerate(loader):
        if k % 4 == 0:
            held.append(batch)  # the whole dict
        elif k % 4 == 1:
            views.append((batch["sample_id"][0], batch["ir"][0]))  # a view of one image only
        elif k % 4 == 2:
            arrays.append((batch["sample_id"][-1], batch["rgb"].numpy()[-1]))  # a numpy view only
    for batch in held:
        for i, sid in enumerate(batch["sample_id"]):
            assert torch.equal(batch["rgb"][i], reference[sid][0]), sid
            assert torch.equal(batch["ir"][i], reference[sid][1]), sid
    for sid, v in views:
        assert torch.equal(v, reference[sid][1]), sid
    for sid, a in arrays:
        assert np.array_equal(a, reference[sid][0].numpy()), sid
    # dropped at once: a handful of buffers cycle instead of fresh memory per batch
    loader = _loader_sending(stream_repo, send_once, **kw)
    ptrs = {batch["rgb"].data_ptr() for batch in loader}
    if num_workers == 0:
        assert len(ptrs) <= 4 < len(loader)
    else:
        assert not loader._fusionrs_receiver.slots  # nothing kept mapped once the pass is over
        stats = loader.dataset._slots.stats()
        assert stats["fresh_batches"] == 0, stats
        assert stats["slot_reuses"] >= len(loader) - stats["slots_allocated"] > 0, stats
        assert stats["slots_allocated"] <= num_workers * loader.dataset.ring_size


@pytest.mark.parametrize("num_workers", [0, 2])
def test_uint8_batches_normalized_later_match_float_batches(stream_repo, num_workers):
    """normalize=False ships uint8 crops; normalize_batch (on any device) gives the float batch exactly."""
    from fusionrs_hf.torch import normalize_batch

    kw = dict(config="default", split="train", batch_size=8, image_size=SIZE, num_workers=num_workers)
    floats = {sid: (b["rgb"][i].clone(), b["ir"][i].clone())
              for b in make_dataloader(stream_repo, **kw) for i, sid in enumerate(b["sample_id"])}
    seen = 0
    for batch in make_dataloader(stream_repo, normalize=False, **kw):
        assert batch["rgb"].dtype == batch["ir"].dtype == torch.uint8
        assert batch["rgb"].shape[1:] == (3, SIZE, SIZE)
        batch = normalize_batch(batch)
        for i, sid in enumerate(batch["sample_id"]):
            assert torch.allclose(batch["rgb"][i], floats[sid][0], atol=1e-5), sid
            assert torch.allclose(batch["ir"][i], floats[sid][1], atol=1e-5), sid
            seen += 1
    assert seen == len(floats)


def test_slots_after_an_abandoned_pass_with_persistent_workers(stream_repo):
    """A pass broken off mid-way leaves slots taken; the next pass (new slot generation) is still exact."""
    kw = dict(config="default", split="train", batch_size=8, image_size=SIZE, num_workers=2)
    reference = {sid: b["rgb"][i].clone() for b in make_dataloader(stream_repo, **kw)
                 for i, sid in enumerate(b["sample_id"])}
    loader = make_dataloader(stream_repo, persistent_workers=True, **kw)
    kept = []
    for k, batch in enumerate(loader):
        kept.append(batch)
        if k == 2:
            break
    for _ in range(2):
        seen = Counter()
        for batch in loader:
            for i, sid in enumerate(batch["sample_id"]):
                assert torch.equal(batch["rgb"][i], reference[sid]), sid
                seen[sid] += 1
        assert seen == Counter(reference.keys())
    for batch in kept:  # batches from the abandoned pass were not overwritten by later passes
        for i, sid in enumerate(batch["sample_id"]):
            assert torch.equal(batch["rgb"][i], reference[sid]), sid


def test_torch_path_does_not_import_datasets():
    """Workers fork from the training process: `datasets` (and pandas) would cost each one ~70 MB."""
    import subprocess
    import sys

    code = ("import sys, fusionrs_hf.torch, fusionrs_hf.decode; "
            "print(sorted(m for m in ('datasets', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_custom_normalization_and_ir_channels_kept(stream_repo):
    loader = make_dataloader(stream_repo, config="iraware", split="train", batch_size=8, image_size=SIZE,
                             mean=(0, 0, 0), std=(1, 1, 1))
    batch = next(iter(loader))
    for key in ("rgb", "ir"):
        assert 0.0 <= float(batch[key].min()) and float(batch[key].max()) <= 1.0
        assert float(batch[key].max()) > 0.3
    ir = batch["ir"]
    # stored IR JPEGs have 3 near-equal but not identical channels: not collapsed to gray
    assert float((ir[:, 0] - ir[:, 1]).abs().max()) > 1 / 255
    assert all(c is not None for c in batch["ir_caption"])  # the iraware config


def test_tokenizer_gives_token_ids(stream_repo):
    def tok(texts):
        return {"input_ids": [[len(t), 1, 2] for t in texts], "attention_mask": [[1, 1, 1] for _ in texts]}

    loader = make_dataloader(stream_repo, config="default", split="train", batch_size=8, image_size=SIZE,
                             tokenizer=tok)
    batch = next(iter(loader))
    assert batch["caption"].dtype == torch.long and batch["caption"].shape == (8, 3)
    assert batch["caption_attention_mask"].shape == (8, 3)
    assert batch["has_ir_caption"].dtype == torch.bool
    no_ir = (~batch["has_ir_caption"]).nonzero().flatten().tolist()
    assert no_ir and all(int(batch["ir_caption"][i, 0]) == 0 for i in no_ir)


@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_row_once_per_epoch_two_shards(stream_repo, num_workers, shuffle):
    files = sorted(stream_repo.glob("data/nwpu/train/*.parquet"))
    assert len(files) == 2
    expected = set(_rows(stream_repo, "data/nwpu/train/*.parquet"))
    loader = make_dataloader(stream_repo, config="nwpu", split="train", batch_size=4, num_workers=num_workers,
                             image_size=SIZE, shuffle=shuffle, seed=1, shuffle_buffer=8)
    batches = _quiet(lambda: list(loader))
    ids = [s for b in batches for s in b["sample_id"]]
    assert Counter(ids) == Counter(expected)
    assert len(batches) == len(loader)


def test_more_workers_than_shards_all_work(stream_repo):
    """3 workers over 2 shards: every worker gets rows (split inside row groups), none idles."""
    ds = FusionRSIterable(stream_repo, "nwpu", "train", batch_size=None, image_size=SIZE)
    ds = pickle.loads(pickle.dumps(ds))  # picklable, as spawn-started workers need
    assert ds.worker_rows(3) == [10, 10, 10]
    loader = _quiet(lambda: torch.utils.data.DataLoader(ds, batch_size=None, num_workers=3))
    got = _quiet(lambda: [r["sample_id"] for r in loader])
    assert len(got) == 30 and len(set(got)) == 30


def test_single_rows_batched_by_a_plain_dataloader_match_our_batches(stream_repo):
    """batch_size=None rows (channels-last views) batched in 2 workers by collate_rows."""
    from fusionrs_hf.torch import collate_rows

    ours = {sid: (b["rgb"][i].clone(), b["ir"][i].clone())
            for b in make_dataloader(stream_repo, config="nwpu", split="train", batch_size=8, image_size=SIZE)
            for i, sid in enumerate(b["sample_id"])}
    ds = FusionRSIterable(stream_repo, "nwpu", "train", batch_size=None, image_size=SIZE)
    seen = nones = 0
    for b in torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_rows):
        n = len(b["sample_id"])
        assert b["rgb"].shape == b["ir"].shape == (n, 3, SIZE, SIZE) and b["rgb"].dtype == torch.float32
        assert len(b["ir_caption"]) == n
        nones += b["ir_caption"].count(None)  # nwpu rows outside the IR-aware subset
        for i, sid in enumerate(b["sample_id"]):
            assert torch.equal(b["rgb"][i], ours[sid][0]) and torch.equal(b["ir"][i], ours[sid][1]), sid
            seen += 1
    assert seen == len(ours) == 30 and nones > 0


def test_shuffle_epochs_differ_and_seed_reproducible(stream_repo):
    kw = dict(config="default", split="train", batch_size=10, image_size=8, shuffle=True, shuffle_buffer=50)
    a = make_dataloader(stream_repo, seed=7, **kw)
    e0 = _ids(a)
    a.set_epoch(1)
    e1 = _ids(a)
    assert sorted(e0) == sorted(e1) and e0 != e1
    b = make_dataloader(stream_repo, seed=7, **kw)
    assert _ids(b) == e0
    b.set_epoch(1)
    assert _ids(b) == e1
    assert _ids(make_dataloader(stream_repo, seed=8, **kw)) != e0
    plain = _ids(make_dataloader(stream_repo, **{**kw, "shuffle": False}))
    assert plain != e0 and sorted(plain) == sorted(e0)


def test_set_epoch_reaches_persistent_workers(stream_repo):
    loader = make_dataloader(stream_repo, config="default", split="train", batch_size=10, image_size=8,
                             shuffle=True, seed=3, num_workers=2, persistent_workers=True)
    e0 = _ids(loader)
    loader.set_epoch(1)
    e1 = _ids(loader)
    assert sorted(e0) == sorted(e1) and e0 != e1


def test_resume_mid_epoch_with_workers(stream_repo):
    kw = dict(config="default", split="train", batch_size=4, num_workers=2, image_size=8, shuffle=True, seed=5,
              shuffle_buffer=16, stateful=True)
    first = make_dataloader(stream_repo, **kw)
    first.set_epoch(3)
    seen = []
    for step, batch in enumerate(first):
        seen += batch["sample_id"]
        if step == 6:  # stop after step k
            state = first.state_dict()
            break
    del first
    state = pickle.loads(pickle.dumps(state))  # as if written to disk by a checkpoint
    second = make_dataloader(stream_repo, **kw)
    second.load_state_dict(state)
    rest = _ids(second)
    assert len(seen) == 28
    union = Counter(seen + rest)
    assert set(union) == set(_rows(stream_repo, "data/*/train/*.parquet"))
    assert max(union.values()) == 1  # no duplicates, no gaps
    # and exactly the order an uninterrupted epoch 3 has
    ref = make_dataloader(stream_repo, **kw)
    ref.set_epoch(3)
    assert _ids(ref) == seen + rest


def test_resume_rejects_other_layout(stream_repo):
    kw = dict(batch_size=4, image_size=8, shuffle=True, seed=2)
    a = FusionRSIterable(stream_repo, "default", "train", rank=0, world_size=2, **kw)
    it = iter(a)
    next(it)
    state = a.state_dict()
    assert state["consumed"] == 4 and state["world_size"] == 2
    b = FusionRSIterable(stream_repo, "default", "train", rank=0, world_size=1, **kw)
    b.load_state_dict(state)
    with pytest.raises(ValueError, match="same world_size and num_workers"):
        next(iter(b))
    c = FusionRSIterable(stream_repo, "default", "train", rank=0, world_size=2, **{**kw, "seed": 3})
    with pytest.raises(ValueError, match="seed"):
        c.load_state_dict(state)
    # the emission order also depends on the shuffle buffer and on the split's rows
    e = FusionRSIterable(stream_repo, "default", "train", rank=0, world_size=2, **{**kw, "shuffle_buffer": 7})
    with pytest.raises(ValueError, match="shuffle_buffer"):
        e.load_state_dict(state)
    f = FusionRSIterable(stream_repo, "iraware", "train", rank=0, world_size=2, **kw)
    with pytest.raises(ValueError, match="saved reading default/train; this dataset reads iraware/train"):
        f.load_state_dict(state)
    with pytest.raises(ValueError, match="split_rows"):  # a state of an older version, without config/split
        f.load_state_dict({k: v for k, v in state.items() if k not in ("config", "split")})
    d = FusionRSIterable(stream_repo, "default", "train", rank=0, world_size=2, **kw)
    d.load_state_dict(state)
    assert [s for batch in d for s in batch["sample_id"]] == [s for batch in it for s in batch["sample_id"]]


# --- DDP (gloo, 2 CPU processes) ----------------------------------------------------------------


def _ddp_worker(rank: int, world: int, repo: str, out_dir: str) -> None:
    import torch.distributed as dist

    # the rendezvous is a file: env:// would start a TCP store listening on every interface
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        loader = make_dataloader(repo, config="default", split="train", batch_size=4, num_workers=2,
                                 image_size=8, shuffle=True, seed=11,  # rank/world from the process group
                                 # inside mp.spawn the default start method is spawn: forking the 2
                                 # loader workers avoids re-importing torch in each (~10 s on 2 cores)
                                 multiprocessing_context="fork")
        loader.set_epoch(1)
        ids, steps = [], 0
        for batch in loader:
            ids += batch["sample_id"]
            steps += 1
            t = torch.ones(1)
            dist.all_reduce(t)  # a collective per step, like DDP's gradient sync: unequal counts would hang
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump({"ids": ids, "steps": steps, "len": len(loader)}, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_gloo_two_ranks_disjoint_complete_equal_batches(tmp_path_factory):
    # 53 rows (odd): the rule drops N % world = 1 row per epoch so both ranks read 26
    repo = make_sample_repo(tmp_path_factory.mktemp("ddp") / "repo", counts={"train": 11}, size=32, max_rows=3)
    repo = _drop_rows(repo, 2)
    all_ids = set(_rows(repo, "data/*/train/*.parquet"))
    assert len(all_ids) == 53
    out = tmp_path_factory.mktemp("ddp_out")
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(repo), str(out)), nprocs=2, join=True)
    r0, r1 = (pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in (0, 1))
    assert not set(r0["ids"]) & set(r1["ids"])  # disjoint
    assert len(r0["ids"]) == len(r1["ids"]) == 26
    union = set(r0["ids"]) | set(r1["ids"])
    assert union <= all_ids and len(all_ids - union) == 53 % 2  # complete up to the documented remainder
    assert r0["steps"] == r1["steps"] == r0["len"] == r1["len"]


def _late_group_worker(rank: int, world: int, repo: str, out_dir: str) -> None:
    """As Lightning's own DDP launcher runs a script: the loader is made first (WORLD_SIZE set, RANK not: the
    launcher sets LOCAL_RANK), the process group comes later, inside ``Trainer.fit``."""
    import torch.distributed as dist

    os.environ.pop("RANK", None)
    os.environ.update(WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    loader = make_dataloader(repo, config="default", split="train", batch_size=4, num_workers=2, image_size=8,
                             shuffle=True, seed=11, multiprocessing_context="fork")
    early_len = len(loader)  # a batch count needs the world size only, which the launcher's WORLD_SIZE says
    try:
        _ = loader.dataset.rank
        early = "no error"
    except ValueError as e:  # before the group exists nothing says which rank this is: refused, not rank 0
        early = str(e)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        ids, steps = [], 0
        for batch in loader:
            ids += batch["sample_id"]
            steps += 1
            t = torch.ones(1)
            dist.all_reduce(t)
        # a DataLoader of the user's own over the dataset, spawn-started workers (macOS's default, forkserver is
        # Linux's from Python 3.14): the copy each worker gets carries this process's rank
        from torch.utils.data import DataLoader

        from fusionrs_hf.torch import FusionRSIterable

        own = DataLoader(FusionRSIterable(repo, "default", "train", batch_size=4, image_size=8, shuffle=False),
                         batch_size=None, num_workers=1, multiprocessing_context="spawn")
        own_ids = [s for b in own for s in b["sample_id"]]
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump({"ids": ids, "steps": steps, "len": len(loader), "early": early, "early_len": early_len,
                         "own": own_ids}, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_a_loader_made_before_the_process_group_reads_its_own_share(tmp_path_factory):
    """Before, the rank was read when the loader was made: every process of a Lightning-launched job read rank
    0's rows (duplicates, and a rank with fewer batches hung the job). Now it is read when the pass begins."""
    repo = make_sample_repo(tmp_path_factory.mktemp("ddp_late") / "repo", counts={"train": 11}, size=32, max_rows=3)
    all_ids = set(_rows(repo, "data/*/train/*.parquet"))
    out = tmp_path_factory.mktemp("ddp_late_out")
    torch.multiprocessing.spawn(_late_group_worker, args=(2, str(repo), str(out)), nprocs=2, join=True)
    r0, r1 = (pickle.loads((out / f"rank{r}.pkl").read_bytes()) for r in (0, 1))
    assert not set(r0["ids"]) & set(r1["ids"]) and r0["steps"] == r1["steps"] == r0["len"] == r1["len"]
    assert len(set(r0["ids"]) | set(r1["ids"])) == len(all_ids) - len(all_ids) % 2
    assert all("WORLD_SIZE=2 is set but nothing says which rank" in r["early"] for r in (r0, r1)), r0["early"]
    assert r0["early_len"] == r0["len"]
    assert r0["own"] and not set(r0["own"]) & set(r1["own"])  # spawned workers: each rank its own share
    assert len(set(r0["own"]) | set(r1["own"])) == len(all_ids) - len(all_ids) % 2


def _drop_rows(repo: Path, n: int) -> Path:
    """Remove the last n rows of one shard so the split has an odd row count."""
    f = sorted(repo.glob("data/rs5m/train/base-*.parquet"))[0]
    t = pq.read_table(f)
    from fusionrs_hf.shards import write_table

    write_table(t.slice(0, t.num_rows - n), f)
    return repo


def test_equal_batches_rule_without_processes(stream_repo):
    """The rule for many world sizes / worker counts: equal lengths, disjoint ranks."""
    for world in (2, 3, 4, 7):
        for workers in (1, 2, 3):
            lens, seen = set(), []
            for rank in range(world):
                ds = FusionRSIterable(stream_repo, "default", "train", batch_size=4, image_size=4, rank=rank,
                                      world_size=world, shuffle=True)
                ds.num_workers_hint = workers
                lens.add(len(ds))
                rows = ds.worker_rows(workers)
                nb = [-(-r // 4) for r in rows]  # batches per worker: whole ones, at most one short in all
                assert sum(rows) == 150 // world and max(nb) - min(nb) <= 1
                assert sum(r % 4 != 0 for r in rows) <= 1 and len(ds) == -(-(150 // world) // 4)
                seen += _ids(torch.utils.data.DataLoader(ds, batch_size=None))
            assert len(lens) == 1
            assert len(seen) == len(set(seen)) == 150 - 150 % world


# --- bad data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corrupt_repo(tmp_path_factory) -> tuple[Path, str, str]:
    root = tmp_path_factory.mktemp("corrupt") / "repo"
    rows = [r for src, split, _, r in sample_rows(counts={"train": 12}, size=32) if src == "RS5M"]
    bad = rows[5]
    data = bad["rgb"]["bytes"]
    bad["rgb"] = {"bytes": data[:600] + b"\x00" * 50}  # truncated scan: a real-world corrupt JPEG
    rel = shard_path("RS5M", "train", "base", 0)
    write_rows(rows, root / rel)
    return root, bad["sample_id"], rel


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_jpeg_raises_naming_sample_and_shard(corrupt_repo, num_workers):
    root, sid, rel = corrupt_repo
    loader = make_dataloader(root, config="rs5m", split="train", batch_size=4, num_workers=num_workers,
                             image_size=SIZE)
    with pytest.raises(DecodeError) as exc:
        list(loader)
    assert sid in str(exc.value) and rel in str(exc.value) and "rgb" in str(exc.value)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_jpeg_skip_counts_and_yields_rest(corrupt_repo, num_workers):
    root, sid, _ = corrupt_repo
    loader = make_dataloader(root, config="rs5m", split="train", batch_size=4, num_workers=num_workers,
                             image_size=SIZE, on_error="skip")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        batches = list(loader)
    ids = [s for b in batches for s in b["sample_id"]]
    assert len(ids) == 11 and sid not in ids
    assert loader.skipped == 1
    assert len(batches) == len(loader) == 3  # 12 rows in whole batches of 4 (one smaller by the skipped row)
    assert all(b["rgb"].shape[0] == len(b["sample_id"]) for b in batches)


# --- generic path: any datasets.IterableDataset ---------------------------------------------------


@pytest.mark.parametrize("decode", [True, False])
def test_datasets_iterable_source(stream_repo, decode):
    from datasets import Image as HFImage
    from datasets import load_dataset

    ds = load_dataset(str(stream_repo), "default", split="train", streaming=True)
    if not decode:
        ds = ds.cast_column("rgb", HFImage(decode=False)).cast_column("ir", HFImage(decode=False))
    loader = make_dataloader(ds, batch_size=16, num_workers=2, image_size=SIZE, shuffle=True, seed=0)
    batches = list(loader)
    ids = [s for b in batches for s in b["sample_id"]]
    assert Counter(ids) == Counter(list(_rows(stream_repo, "data/*/train/*.parquet")))
    assert batches[0]["rgb"].shape[1:] == (3, SIZE, SIZE)
    # same pixels as the fast path for the same sample (bit-identical when the bytes are decoded here;
    # within a grey level or so when datasets decoded full-size PIL images first)
    fast = next(iter(make_dataloader(stream_repo, config="default", split="train", batch_size=200,
                                     image_size=SIZE)))
    where = {s: i for i, s in enumerate(fast["sample_id"])}
    for b in batches[:2]:
        for j, sid in enumerate(b["sample_id"]):
            diff = float((b["rgb"][j] - fast["rgb"][where[sid]]).abs().max())
            assert diff < 1e-5 if not decode else float((b["rgb"][j] - fast["rgb"][where[sid]]).abs().mean()) < 0.2


def test_bad_arguments(stream_repo):
    with pytest.raises(ValueError, match="on_error"):
        make_dataloader(stream_repo, on_error="ignore")
    with pytest.raises(ValueError, match="split"):
        make_dataloader(stream_repo, split="dev")
    with pytest.raises(ValueError, match="config"):
        make_dataloader(stream_repo, config="nope")
    with pytest.raises(ValueError, match="rank"):
        make_dataloader(stream_repo, rank=2, world_size=2)
    with pytest.raises(ValueError):
        make_dataloader("../etc/passwd")


def test_resume_mistakes_are_named(stream_repo):
    """A state saved with other num_workers, or asked of a loader made without stateful=True: one clear error
    each, before any worker starts (torchdata would only assert, mid-iteration)."""
    import warnings

    kw = dict(batch_size=4, image_size=8, shuffle=True, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torchdata's set_vital deprecation warning stays out of users' logs
        a = make_dataloader(stream_repo, "default", "train", num_workers=2, stateful=True, **kw)
    it = iter(a)
    next(it)
    state = a.state_dict()
    b = make_dataloader(stream_repo, "default", "train", num_workers=1, stateful=True, **kw)
    with pytest.raises(ValueError, match="saved with num_workers=2, this loader has num_workers=1"):
        b.load_state_dict(state)
    plain = make_dataloader(stream_repo, "default", "train", num_workers=0, **kw)
    with pytest.raises(AttributeError, match="stateful=True"):
        plain.state_dict()
    del it


def test_a_state_of_the_old_slicing_is_refused(stream_repo):
    ds = FusionRSIterable(stream_repo, "default", "train", batch_size=4, image_size=8)
    state = ds.state_dict()
    assert state["worker_slices"] == "whole-batches"
    old = {k: v for k, v in state.items() if k != "worker_slices"}
    FusionRSIterable(stream_repo, "default", "train", batch_size=4, image_size=8).load_state_dict(old)  # 1 worker
    with pytest.raises(ValueError, match="older fusionrs-hf, which cut worker slices by rows"):
        FusionRSIterable(stream_repo, "default", "train", batch_size=4, image_size=8).load_state_dict(
            {**old, "num_workers": 2})


@pytest.mark.parametrize("num_workers", [0, 2])
def test_after_a_resumed_pass_the_next_pass_is_the_next_epoch(stream_repo, num_workers):
    """Resume mid-epoch 0, finish it, then one more pass: that pass is epoch 1 (with 0 workers torchdata restores
    the state in this process, which once kept the loader on epoch 0 for good)."""
    kw = dict(batch_size=4, image_size=8, shuffle=True, seed=5, num_workers=num_workers, stateful=True)
    a = make_dataloader(stream_repo, "default", "train", **kw)
    it = iter(a)
    first = [s for _ in range(2) for s in next(it)["sample_id"]]
    state = a.state_dict()
    del it
    b = make_dataloader(stream_repo, "default", "train", **kw)
    b.load_state_dict(state)
    rest = _ids(b)
    ref = make_dataloader(stream_repo, "default", "train", **{**kw, "stateful": False})
    ref.set_epoch(0)
    assert first + rest == _ids(ref)
    ref.set_epoch(1)
    assert _ids(b) == _ids(ref)  # the pass after the resumed one is epoch 1


def test_worker_options_without_workers_are_refused_as_torch_does(stream_repo):
    """persistent_workers=True or a prefetch_factor with num_workers=0 were dropped without a word; torch's own
    DataLoader refuses both, and so do we (a configuration mistake should show)."""
    base = dict(config="default", split="train", batch_size=4, image_size=8, num_workers=0)
    with pytest.raises(ValueError, match="persistent_workers=True needs num_workers > 0"):
        make_dataloader(stream_repo, persistent_workers=True, **base)
    with pytest.raises(ValueError, match="prefetch_factor needs num_workers > 0"):
        make_dataloader(stream_repo, prefetch_factor=4, **base)
    assert len(list(make_dataloader(stream_repo, persistent_workers=False, **base))) > 0


def test_a_transformers_tokenizer_is_padded_and_a_ragged_callable_is_one_line(stream_repo):
    """A transformers tokenizer passed as is (built here from a word-level vocabulary: nothing downloaded)
    returned ragged lists, which failed in a worker with a shape error; it is now called padded and
    truncated. A plain callable whose output is ragged is refused when the loader is made, in one line."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", model_max_length=16)
    for workers in (0, 2):
        loader = make_dataloader(stream_repo, config="default", split="train", batch_size=8, image_size=SIZE,
                                 tokenizer=tok, num_workers=workers)
        batch = next(iter(loader))
        ids, mask = batch["caption"], batch["caption_attention_mask"]
        assert ids.dtype == torch.long and ids.shape[0] == 8 and 1 < ids.shape[1] <= 16 and mask.shape == ids.shape
        assert bool((mask.sum(1) < ids.shape[1]).any())  # padded to the longest caption of the batch
    with pytest.raises(ValueError, match=r"tokenizer= returned token ids that do not form one tensor"):
        make_dataloader(stream_repo, config="default", split="train", batch_size=8, image_size=SIZE,
                        tokenizer=lambda texts: [t.split() and [1] * len(t.split()) for t in texts])
