"""Issue 15: loader promises checked against brute-force references.

- The epoch's unit order is a permutation seeded by (seed, epoch): it changes between epochs, and so do
  the N % world_size rows DDP leaves out; the rows each rank reads are exactly the contiguous slice of
  the epoch's virtual sequence (the sequence itself read back with world_size=1, no emission shuffle).
- The loader reads a Hub id and an hf:// URL (an hf filesystem stand-in over a local folder).
- ``fusionrs_hf.load``'s repo: argument, else $FUSIONRS_REPO, else "fusionrs/fusionrs".
- ``make_vlm_dataloader`` with the scene_qa, object_qa and ir_cue_qa tasks, answers written by hand.
"""

from __future__ import annotations

import io
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionrs_hf.card import write_card
from fusionrs_hf.demo import make_sample_repo, sample_rows
from fusionrs_hf.layout import shard_path
from fusionrs_hf.shards import write_rows
from fusionrs_hf.torch import FusionRSIterable, make_dataloader


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory) -> Path:
    """35 train rows in 20 shards of at most 2 rows (many units, so orders can differ)."""
    return make_sample_repo(tmp_path_factory.mktemp("promise_stream") / "repo", counts={"train": 7}, size=16,
                            max_rows=2)


def _shard_rows(repo: Path) -> dict[str, list[str]]:
    """shard path -> its sample ids in storage order (one row group per shard here)."""
    out = {}
    for f in sorted((repo / "data").rglob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        assert md.num_row_groups == 1
        out[f.relative_to(repo).as_posix()] = pq.read_table(f, columns=["sample_id"])["sample_id"].to_pylist()
    return out


def _sequence(repo, epoch: int, seed: int = 0, rank: int = 0, world: int = 1) -> list[str]:
    """The rows one rank reads in an epoch, in order (shuffle of the units, no emission shuffle)."""
    ds = FusionRSIterable(repo, "default", "train", batch_size=None, image_size=2, shuffle=True, seed=seed,
                          shuffle_buffer=1, rank=rank, world_size=world)
    ds.set_epoch(epoch)
    return [r["sample_id"] for r in ds]


def _as_units(seq: list[str], shards: dict[str, list[str]]) -> list[str]:
    """Cut a sequence into whole shards (fails if a shard's rows are not contiguous and in order)."""
    first = {rows[0]: name for name, rows in shards.items()}
    out, i = [], 0
    while i < len(seq):
        name = first[seq[i]]
        assert seq[i:i + len(shards[name])] == shards[name], (i, name)
        out.append(name)
        i += len(shards[name])
    return out


def test_unit_order_is_reseeded_every_epoch(small_repo):
    shards = _shard_rows(small_repo)
    orders = {}
    for epoch in range(5):
        seq = _sequence(small_repo, epoch)
        assert sorted(seq) == sorted(s for rows in shards.values() for s in rows)
        orders[epoch] = _as_units(seq, shards)  # a permutation of whole units
        assert sorted(orders[epoch]) == sorted(shards)
    assert len({tuple(o) for o in orders.values()}) == 5  # a new order each epoch (20 units: 20! orders)
    assert _as_units(_sequence(small_repo, 3), shards) == orders[3]  # a pure function of (seed, epoch)
    assert _as_units(_sequence(small_repo, 3, seed=1), shards) != orders[3]  # ... and of the seed
    plain = FusionRSIterable(small_repo, "default", "train", batch_size=None, image_size=2)
    assert _as_units([r["sample_id"] for r in plain], shards) == sorted(shards)  # no shuffle: sorted shards


@pytest.mark.parametrize("world", [3, 4])
def test_ddp_ranks_read_contiguous_slices_and_drop_different_rows_each_epoch(small_repo, world):
    n = sum(len(r) for r in _shard_rows(small_repo).values())
    q, dropped_n = n // world, n % world
    assert dropped_n > 0
    dropped = []
    for epoch in range(4):
        seq = _sequence(small_repo, epoch, seed=7)  # the epoch's virtual sequence (world_size 1)
        union: list[str] = []
        for rank in range(world):
            got = _sequence(small_repo, epoch, seed=7, rank=rank, world=world)
            assert got == seq[rank * q:(rank + 1) * q], (epoch, rank)  # brute force: the rank's slice
            union += got
        assert len(union) == len(set(union)) == world * q
        left_out = set(seq) - set(union)
        assert left_out == set(seq[n - dropped_n:]) and len(left_out) == dropped_n
        dropped.append(frozenset(left_out))
    assert len(set(dropped)) == 4, dropped  # different rows every epoch


def test_ddp_with_workers_and_emission_shuffle_covers_the_same_rows(small_repo):
    """With workers and the buffer shuffle on, each rank still reads exactly its slice's rows."""
    world, n = 3, 35
    seq = _sequence(small_repo, 2, seed=4)
    for rank in range(world):
        loader = make_dataloader(small_repo, config="default", split="train", batch_size=3, image_size=2,
                                 shuffle=True, seed=4, shuffle_buffer=8, rank=rank, world_size=world, num_workers=2)
        loader.set_epoch(2)
        ids = [s for b in loader for s in b["sample_id"]]
        assert sorted(ids) == sorted(seq[rank * (n // world):(rank + 1) * (n // world)])


# ----------------------------------------------------------------------------------------- Hub paths


def _fake_hub(monkeypatch, tmp_path: Path, repo: Path) -> list[tuple]:
    """An ``hf`` fsspec filesystem (registered like huggingface_hub's) whose ``datasets/OWNER/NAME[@REV]``
    folders are links to ``repo``: not a local filesystem, so the loader reads it as it reads the Hub.
    The Hub reachability check is recorded instead of asking a server (tests are offline)."""
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem

    hub = tmp_path / "hub" / "datasets" / "someone"
    hub.mkdir(parents=True)
    for name in ("fusionrs", "fusionrs@v1.0"):
        (hub / name).symlink_to(repo, target_is_directory=True)

    class FakeHfFileSystem(DirFileSystem):
        protocol = ("hf",)

        def __init__(self, *args, **kwargs):
            super().__init__(path=str(tmp_path / "hub"), fs=fsspec.filesystem("file"))

        @classmethod
        def _strip_protocol(cls, path):
            path = path[len("hf://"):] if path.startswith("hf://") else path
            return path.rstrip("/")

    monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, "hf", FakeHfFileSystem)
    asked: list[tuple] = []
    try:
        from fusionrs_hf import storage
    except ImportError:
        return asked
    if hasattr(storage, "check_hub"):
        monkeypatch.setattr(storage, "check_hub", lambda repo_id, **kw: asked.append((repo_id, kw.get("revision"))))
    return asked


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_reads_a_hub_id_and_an_hf_url(small_repo, monkeypatch, num_workers, tmp_path):
    monkeypatch.chdir(tmp_path)  # "someone/fusionrs" is no local folder here
    want = [s for b in make_dataloader(small_repo, config="iraware", split="train", batch_size=4, image_size=8)
            for s in b["sample_id"]]
    assert len(want) == len(set(want)) > 0
    _fake_hub(monkeypatch, tmp_path, small_repo)
    for target, revision in (("someone/fusionrs", None), ("someone/fusionrs", "v1.0"),
                             ("hf://datasets/someone/fusionrs", None), ("hf://datasets/someone/fusionrs@v1.0", None)):
        loader = make_dataloader(target, config="iraware", split="train", batch_size=4, image_size=8,
                                 num_workers=num_workers, revision=revision)
        ds = loader.dataset
        assert "hf" in (ds.fs.protocol if isinstance(ds.fs.protocol, tuple) else (ds.fs.protocol,))
        assert ds.root.rstrip("/") in ("datasets/someone/fusionrs", "datasets/someone/fusionrs@v1.0")
        assert ("@v1.0" in ds.root) == ("v1.0" in target or revision == "v1.0")
        got = [s for b in loader for s in b["sample_id"]]
        assert Counter(got) == Counter(want), target
        if num_workers == 0:
            assert got == want  # the same order as the local folder


# ----------------------------------------------------------------------------------------- fusionrs_hf.load


def test_load_default_repo_env_and_argument(monkeypatch, tmp_path):
    import datasets

    import fusionrs_hf

    monkeypatch.chdir(tmp_path)  # no local folder is called like the repo ids below
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: calls.append((a, kw)) or "ds")
    asked = _fake_hub(monkeypatch, tmp_path, tmp_path)  # the Hub check is recorded, not sent
    monkeypatch.delenv("FUSIONRS_REPO", raising=False)
    assert fusionrs_hf.load("iraware", split="train", streaming=True) == "ds"
    (args, kw) = calls[-1]
    assert args == ("fusionrs/fusionrs", "iraware") and kw["split"] == "train" and kw["streaming"] is True
    assert kw.get("revision") is None
    assert fusionrs_hf.repo_id() == "fusionrs/fusionrs"
    monkeypatch.setenv("FUSIONRS_REPO", "me/mine")
    fusionrs_hf.load(revision="v2", num_proc=2)
    (args, kw) = calls[-1]
    assert args == ("me/mine", "default") and kw["revision"] == "v2" and kw["num_proc"] == 2
    assert kw["split"] is None and kw["streaming"] is False
    fusionrs_hf.load("nwpu", repo="other/repo")
    assert calls[-1][0] == ("other/repo", "nwpu") and fusionrs_hf.repo_id("x/y") == "x/y"
    if asked:  # the repos asked for, in order (where the Hub is checked before loading)
        assert [a[0] for a in asked] == ["fusionrs/fusionrs", "me/mine", "other/repo"]
    monkeypatch.setenv("FUSIONRS_REPO", "")
    assert fusionrs_hf.repo_id() == "fusionrs/fusionrs"  # an empty variable is no repo
    for bad in (dict(config="landsat"), dict(config="default", split="val")):
        with pytest.raises(ValueError):
            fusionrs_hf.load(**bad)
    assert len(calls) == 3


# ----------------------------------------------------------------------------------------- VLM tasks

ROWS = {
    # source: (class_name, caption, ir_caption)
    "NWPU": ("baseball_diamond", "Two roads cross near a river with many buildings.",
             "Bright roofs stand out; a road runs north, the river is a dark band."),
    "RS5M": (None, "A harbour with boats and a bridge.", None),
    "SkyScript": (None, "Farmland fields beside a lake.", "The lake is a dark smooth area. Field parcels look gray."),
}
PROMPTS = {
    "scene_qa": "What is the main scene type in this infrared remote sensing image? Answer with a concise "
                "scene label only.",
    "object_qa": "What are the main objects or land-cover elements visible in this infrared remote sensing "
                 "image? Answer with a concise comma-separated list.",
    "ir_cue_qa": "What infrared-specific visual cues can be observed in this image? Mention visible grayscale "
                 "intensity, high contrast, bright structures, low-texture or dark regions, and structural "
                 "outlines if present.",
}
# by hand: objects in first-mention order; cue clauses joined with "; "
ANSWERS = {
    ("scene_qa", "NWPU", None): "baseball diamond",
    ("object_qa", "NWPU", "A-original"): "roads, river, buildings",
    ("object_qa", "NWPU", "B-iraware"): "buildings, roads, river",
    ("object_qa", "RS5M", "A-original"): "ships, bridge",
    ("object_qa", "SkyScript", "A-original"): "fields, lake",
    ("object_qa", "SkyScript", "B-iraware"): "lake, fields",
    ("ir_cue_qa", "NWPU", None): "Bright roofs stand out; the river is a dark band.",
    ("ir_cue_qa", "SkyScript", None): "The lake is a dark smooth area; Field parcels look gray.",
}


@pytest.fixture(scope="module")
def vlm_task_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("promise_vlm") / "repo"
    for source, split, _, row in sample_rows(counts={"train": 1}, size=32):
        if source not in ROWS:
            continue
        cls, cap, ir_cap = ROWS[source]
        row = {**row, "class_name": cls, "caption": cap, "ir_caption": ir_cap}
        group = "iraware" if ir_cap else "base"
        write_rows([row], root / shard_path(source, split, group, 0))
    write_card(root, sample=True)
    return root


def _expected(task: str, setting: str, config: str) -> list[tuple[str, str, str]]:
    out = []
    for source in ("NWPU", "RS5M", "SkyScript"):
        if config == "iraware" and ROWS[source][2] is None:
            continue
        if task in ("scene_qa", "ir_cue_qa"):
            ans = ANSWERS.get((task, source, None))
            if ans:
                out.append((source, setting, ans))
            continue
        for s in (("A-original", "B-iraware") if setting == "C-mixed" else (setting,)):
            ans = ANSWERS.get((task, source, s))
            if ans:
                out.append((source, s, ans))
    return sorted(out)


@pytest.mark.parametrize("task", ["scene_qa", "object_qa", "ir_cue_qa"])
@pytest.mark.parametrize("config", ["default", "iraware"])
def test_vlm_qa_tasks_answer_as_documented(vlm_task_repo, task, config):
    from fusionrs_hf.vlm_data import make_vlm_dataloader

    ir_pixels = {}
    for f in (vlm_task_repo / "data").rglob("*.parquet"):
        r = pq.read_table(f).to_pylist()[0]
        ir_pixels[r["source"]] = np.asarray(Image.open(io.BytesIO(r["ir"]["bytes"])).convert("RGB"))
    for setting in ("A-original", "B-iraware", "C-mixed"):
        for workers in (0, 2):
            loader = make_vlm_dataloader(vlm_task_repo, config=config, split="train", setting=setting, task=task,
                                         batch_size=2, num_workers=workers)
            samples = [s for batch in loader for s in batch]
            got = []
            for s in samples:
                user, assistant = s["messages"]
                assert user["role"] == "user" and assistant["role"] == "assistant"
                assert user["content"] == [{"type": "image"}, {"type": "text", "text": PROMPTS[task]}]
                source = s["sample_id"].split("-")[0]
                source = {"nwpu": "NWPU", "rs5m": "RS5M", "skyscript": "SkyScript"}[source]
                assert s["task"] == task
                (img,) = s["images"]
                assert img.mode == "RGB" and np.array_equal(np.asarray(img), ir_pixels[source])
                got.append((source, s["setting"], assistant["content"][0]["text"]))
            assert sorted(got) == _expected(task, setting, config), (setting, workers)


def test_vlm_sample_ids_are_the_rows(vlm_task_repo):
    from fusionrs_hf.vlm_data import make_vlm_dataloader

    ids = [s["sample_id"] for b in make_vlm_dataloader(vlm_task_repo, config="default", split="train",
                                                       setting="C-mixed", task="object_qa") for s in b]
    rows = [r for f in (vlm_task_repo / "data").rglob("*.parquet") for r in pq.read_table(f)["sample_id"].to_pylist()]
    # NWPU and SkyScript answer twice (A and B), RS5M once (it has no ir_caption)
    assert Counter(ids) == Counter({r: (1 if r.startswith("rs5m") else 2) for r in rows})


# ----------------------------------------------------------------------------------------- the work plan


def test_plan_units_of_a_split_by_hand(small_repo):
    """Units are the row groups of the split's shards in sorted shard order (read from the footers here)."""
    import fsspec

    from fusionrs_hf.torch import Unit, plan_units

    want = []
    for f in sorted((small_repo / "data").rglob("*.parquet")):
        rel = f.relative_to(small_repo).as_posix()
        if rel.startswith("data/nwpu/train/"):
            md, off = pq.ParquetFile(f).metadata, 0
            for g in range(md.num_row_groups):
                want.append(Unit(rel, g, off, md.row_group(g).num_rows))
                off += md.row_group(g).num_rows
    fs = fsspec.filesystem("file")
    assert plan_units(fs, str(small_repo), "nwpu", "train") == want and len(want) >= 3
    assert plan_units(fs, str(small_repo), "nwpu", "train", files=[want[1].shard]) == [want[1]]


def test_plan_units_offsets_with_several_row_groups(tmp_path):
    import fsspec

    from fusionrs_hf.torch import Unit, plan_units

    rows = [r for s, _, _, r in sample_rows(counts={"train": 5}, size=16) if s == "RSICD"]
    rel = shard_path("RSICD", "train", "base", 0)
    write_rows([{**r, "ir_caption": None} for r in rows], tmp_path / rel, row_group_bytes=1)  # a group per row
    assert plan_units(fsspec.filesystem("file"), str(tmp_path), "rsicd", "train", files=[rel]) == [
        Unit(rel, i, i, 1) for i in range(5)]


def test_slot_pieces_by_hand():
    from fusionrs_hf.torch import Unit, _slot_pieces

    units = [Unit("a", 0, 0, 4), Unit("a", 1, 4, 3), Unit("b", 0, 0, 5)]  # 12 rows
    order = np.array([2, 0, 1])  # virtual sequence: b0[0:5], a0[0:4], a1[0:3]
    assert _slot_pieces(units, order, 0, 12) == [(2, 0, 5), (0, 0, 4), (1, 0, 3)]
    assert _slot_pieces(units, order, 5, 9) == [(0, 0, 4)]  # exactly one unit, starting at its boundary
    assert _slot_pieces(units, order, 3, 7) == [(2, 3, 5), (0, 0, 2)]
    assert _slot_pieces(units, order, 10, 12) == [(1, 1, 3)]
    assert _slot_pieces(units, order, 4, 4) == []
    assert _slot_pieces(units, np.array([0, 1, 2]), 6, 11) == [(1, 2, 3), (2, 0, 4)]


def test_buffer_order_is_a_bounded_shuffle():
    from fusionrs_hf.torch import _buffer_order

    for buffer in (0, 1):  # no buffer: storage order
        assert _buffer_order(50, buffer, np.random.default_rng(0)).tolist() == list(range(50))
    assert _buffer_order(1, 8, np.random.default_rng(0)).tolist() == [0]
    assert {tuple(_buffer_order(2, 8, np.random.default_rng(s)).tolist()) for s in range(12)} == {(0, 1), (1, 0)}
    for n, buffer in ((100, 2), (100, 4), (30, 64)):
        for seed in range(3):
            out = _buffer_order(n, buffer, np.random.default_rng(seed)).tolist()
            assert sorted(out) == list(range(n)) and out != list(range(n))
            size = min(buffer, n)
            # a row can only be emitted once read: at step k rows 0 .. k + size - 1 have been read
            assert all(e <= k + size - 1 for k, e in enumerate(out))
            if n > 2 * size:
                assert out.index(0) < n - size  # the first buffer slot is drawn from like any other


def test_len_with_drop_last_and_single_rows(small_repo):
    for workers, b, drop, want in ((1, 4, False, 9), (1, 4, True, 8), (2, 4, True, 8), (2, 4, False, 9),
                                   (3, 5, True, 7), (3, 5, False, 7)):
        ds = FusionRSIterable(small_repo, "default", "train", batch_size=b, image_size=2, drop_last=drop)
        ds.num_workers_hint = workers
        # 35 rows in whole batches per worker, the short one to one worker: 35, 19+16, 15+10+10
        assert len(ds) == want, (workers, b, drop)
    ds = FusionRSIterable(small_repo, "default", "train", batch_size=None, image_size=2)
    ds.num_workers_hint = 3
    assert len(ds) == 35 and ds.worker_rows(3) == [12, 12, 11]
    loader = make_dataloader(small_repo, config="default", split="train", batch_size=4, image_size=2,
                             drop_last=True, num_workers=2)
    batches = list(loader)
    assert len(batches) == len(loader) == 8 and all(len(b["sample_id"]) == 4 for b in batches)


def test_emission_shuffle_mixes_rows_of_different_units(small_repo):
    shards = _shard_rows(small_repo)
    ds = FusionRSIterable(small_repo, "default", "train", batch_size=None, image_size=2, shuffle=True, seed=0,
                          shuffle_buffer=8)
    got = [r["sample_id"] for r in ds]
    assert sorted(got) == sorted(_sequence(small_repo, 0))
    with pytest.raises((AssertionError, KeyError)):
        _as_units(got, shards)  # rows of one unit are no longer contiguous


def _resume_rest(repo, shuffle: bool, take: int) -> tuple[list[str], list[str]]:
    kw = dict(batch_size=1, image_size=2, shuffle=shuffle, seed=3, shuffle_buffer=6)
    a = FusionRSIterable(repo, "default", "train", **kw)
    it = iter(a)
    seen = [next(it)["sample_id"][0] for _ in range(take)]
    state = a.state_dict()
    b = FusionRSIterable(repo, "default", "train", **kw)
    b.load_state_dict(state)
    return seen, [r["sample_id"][0] for r in b]


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_at_the_start_middle_and_end_of_an_epoch(small_repo, shuffle):
    full = [r["sample_id"][0] for r in FusionRSIterable(small_repo, "default", "train", batch_size=1, image_size=2,
                                                        shuffle=shuffle, seed=3, shuffle_buffer=6)]
    for take in (0, 1, 17, 35):
        seen, rest = _resume_rest(small_repo, shuffle, take)
        assert seen + rest == full, (shuffle, take)  # no duplicates, no gaps, the uninterrupted order


def test_set_epoch_wins_over_the_per_pass_advance(small_repo):
    ds = FusionRSIterable(small_repo, "default", "train", batch_size=None, image_size=2, shuffle=True, seed=9,
                          shuffle_buffer=1)
    first = [r["sample_id"] for r in ds]
    ds.set_epoch(0)
    assert [r["sample_id"] for r in ds] == first  # epoch 0 again, as asked
    ds.set_epoch(4)
    assert [r["sample_id"] for r in ds] == _sequence(small_repo, 4, seed=9) != first


def test_rank_and_world_size_come_from_arguments_then_the_process_group_then_torchrun(monkeypatch):
    import torch.distributed as dist

    from fusionrs_hf.torch import _resolve_rank

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _resolve_rank(None, None) == (0, 1)
    assert _resolve_rank(1, 2) == (1, 2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _resolve_rank(None, None) == (1, 3)  # torchrun's variables
    assert _resolve_rank(2, None) == (2, 3) and _resolve_rank(None, 2) == (1, 2) and _resolve_rank(0, 5) == (0, 5)
    for bad in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="invalid rank"):
            _resolve_rank(*bad)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:  # an initialized process group wins over the variables
        assert _resolve_rank(None, None) == (0, 1) and _resolve_rank(None, 4) == (0, 4)
    finally:
        dist.destroy_process_group()


def test_plan_units_names_a_shard_whose_footer_cannot_be_read(small_repo, tmp_path):
    import shutil

    import fsspec

    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.torch import plan_units

    repo = Path(shutil.copytree(small_repo, tmp_path / "r"))
    files = sorted(p.relative_to(repo).as_posix() for p in (repo / "data/nwpu/train").glob("*.parquet"))
    bad = repo / files[0]
    bad.write_bytes(bad.read_bytes()[:100])
    fs = fsspec.filesystem("file")
    with pytest.raises(DecodeError, match=f"shard={files[0]}: cannot read the parquet footer: "):
        plan_units(fs, str(repo), "nwpu", "train")
    skipped: list = []
    units = plan_units(fs, str(repo), "nwpu", "train", unreadable=skipped)
    assert [u.shard for u in units] == [f for f in files[1:] for _ in range(pq.ParquetFile(repo / f).num_row_groups)]
    assert len(skipped) == 1 and skipped[0][0] == files[0]
    assert skipped[0][1].startswith("cannot read the parquet footer: ArrowInvalid: ")  # the error type is named


def test_many_workers_give_full_batches_and_one_short_one(small_repo):
    """35 rows, batch 8, 4 workers: batches of 8, 8, 8, 8 and one of 3, as a map-style DataLoader gives, where
    slices cut by rows made every worker end on its own short batch (9+9+9+8 rows: 8 batches, 4 short)."""
    loader = make_dataloader(small_repo, config="default", split="train", batch_size=8, image_size=2,
                             num_workers=4, shuffle=True, seed=1)
    sizes = sorted(len(b["sample_id"]) for b in loader)
    assert sizes == [3, 8, 8, 8, 8] and len(loader) == 5
    ids = [s for b in loader for s in b["sample_id"]]
    assert len(ids) == len(set(ids)) == 35
