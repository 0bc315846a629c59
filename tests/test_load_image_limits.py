"""`fusionrs_hf.load` hands rows to stock `datasets`, whose `Image` feature decodes with plain PIL: without a guard
a 165 KB progressive JPEG of 2,010 scans took 22 s a row, where every reader of ours refuses it unread. Here a
row's image breaks the limits (`fusionrs_hf.limits`) and the dataset `load` returns refuses to decode it, map-style,
streamed, formatted, mapped and in a DataLoader worker, naming the row; every other row decodes as before."""

from __future__ import annotations

import io
import pickle
import re
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

import fusionrs_hf
from fusionrs_hf import limits

COUNTS = {"train": 2, "validation": 1, "test": 1}
CONFIG = "default"
"""Every source's train rows: 10 rows in 10 shards (per source one IR-aware and one base shard)."""


def _progressive(scans: int) -> bytes:
    """A 64² progressive JPEG whose last scan is repeated: a few KB, ``scans`` scans (PIL alone writes ~10)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 60)).save(buf, format="JPEG", quality=90, progressive=True)
    good = buf.getvalue()
    scan = good[good.rindex(b"\xff\xda"):-2]
    return good[:-2] + scan * scans + b"\xff\xd9"


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _stock_decoding():
    """Each test starts with stock `datasets` decoding, so that it is `load` that installs the guard, and leaves
    the guard as it found it (any earlier `load` in this process installed it for the process)."""
    try:
        from fusionrs_hf import pil_guard
    except ImportError:  # the code before the guard: the tests below fail on what `load` returns
        yield
        return
    was = pil_guard.installed()
    pil_guard.uninstall()
    yield
    (pil_guard.install if was else pil_guard.uninstall)()


def _repo_with(tmp_path: Path, data: bytes) -> tuple[Path, str, dict[str, dict[str, bytes]]]:
    """A sample repo whose first train shard of NWPU holds ``data`` as its row's ``rgb`` (the schema and the
    other columns as written); the bomb's sample_id, and every row's image bytes by sample_id."""
    from fusionrs_hf.demo import make_sample_repo
    from fusionrs_hf.shards import write_rows

    repo = make_sample_repo(tmp_path / "repo", counts=COUNTS, size=32)
    shard = sorted((repo / "data" / "nwpu" / "train").glob("*.parquet"))[0]
    rows = pq.read_table(shard).to_pylist()
    rows[0]["rgb"], rows[0]["rgb_sha256"] = {"bytes": data, "path": None}, None
    write_rows(rows, shard)
    stored = {}
    for f in (repo / "data").rglob("train/*.parquet"):
        for r in pq.read_table(f, columns=["sample_id", "rgb", "ir"]).to_pylist():
            stored[r["sample_id"]] = {"rgb": r["rgb"]["bytes"], "ir": r["ir"]["bytes"]}
    return repo, rows[0]["sample_id"], stored


def _assert_as_stock(row: dict, stored: dict[str, dict[str, bytes]]) -> None:
    """Both images of ``row`` are what PIL makes of the stored bytes: same class, format, mode, size, pixels."""
    for col in ("rgb", "ir"):
        want = Image.open(io.BytesIO(stored[row["sample_id"]][col]))
        want.load()
        got = row[col]
        assert type(got) is type(want) and got.format == want.format, (row["sample_id"], col)
        assert (got.mode, got.size, got.tobytes()) == (want.mode, want.size, want.tobytes()), (row["sample_id"], col)


def _refuses(ds, sid: str, stored: dict, message: str) -> None:
    """``ds`` (as `load` returned it) refuses the bomb row ``sid`` quickly, everywhere a row is decoded, naming
    it; every other row decodes as stock `datasets` decodes it."""
    from datasets import Dataset
    from datasets import Image as ImageFeature

    from fusionrs_hf.pil_guard import ImageRefusedOnDecode

    name = re.escape(f"image '{sid}.rgb.")
    assert ds.features["rgb"] == ImageFeature() and ds.features["ir"] == ImageFeature()
    if isinstance(ds, Dataset):  # map-style
        bomb = list(ds["sample_id"]).index(sid)
        t = time.monotonic()
        for view in (ds, ds.with_format("numpy"), ds.with_format("torch")):
            with pytest.raises(ImageRefusedOnDecode, match=name + ".*" + message):
                view[bomb]
        with pytest.raises(ImageRefusedOnDecode, match=message):
            ds.select([bomb]).map(lambda r: {"width": r["rgb"].width})
        assert time.monotonic() - t < 10  # refused from the header: no decode of the scans or pixels
        good = [i for i in range(len(ds)) if i != bomb]
        for i in good:
            _assert_as_stock(ds[i], stored)
        assert ds.with_format("numpy")[good[0]]["rgb"].shape == (32, 32, 3)
        assert ds.select(good).map(lambda r: {"width": r["rgb"].width})["width"] == [32] * len(good)
    else:  # streamed: the rows before the bomb, the refusal, then (skipped, undecoded) the rows after it
        seen = []
        with pytest.raises(ImageRefusedOnDecode, match=name + ".*" + message):
            for row in ds:
                seen.append(row)
        rest = list(ds.skip(len(seen) + 1))
        assert len(seen) + 1 + len(rest) == len(stored) and sid not in {r["sample_id"] for r in seen + rest}
        for row in seen + rest:
            _assert_as_stock(row, stored)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_load_refuses_a_progressive_jpeg_of_too_many_scans(tmp_path, streaming):
    bomb = _progressive(150)
    assert limits.jpeg_scans(bomb) > limits.MAX_JPEG_SCANS and len(bomb) < 20_000
    repo, sid, stored = _repo_with(tmp_path, bomb)
    ds = fusionrs_hf.load(CONFIG, "train", streaming=streaming, repo=str(repo))
    _refuses(ds, sid, stored, r"progressive JPEG of 1\d\d scans, more than the limit 100; not decoded")


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_load_refuses_an_image_whose_header_claims_too_many_pixels(tmp_path, streaming):
    """8000x7000 = 56 M pixels (a 54 KB PNG), past the 50 M limit: refused from the header."""
    repo, sid, stored = _repo_with(tmp_path, _png((8000, 7000), "L"))
    ds = fusionrs_hf.load(CONFIG, "train", streaming=streaming, repo=str(repo))
    _refuses(ds, sid, stored, "image header says 8000x7000 = 56,000,000 pixels, more than the limit 50,000,000")


def test_the_pixel_limit_is_read_when_an_image_is_decoded(tmp_path, monkeypatch):
    """The guard holds images to `limits.DEFAULT_MAX_PIXELS` as it is when the row is decoded (here lowered so
    that a 128x100 PNG is past it and the 32x32 rows are not)."""
    monkeypatch.setattr(limits, "DEFAULT_MAX_PIXELS", 10_000)
    repo, sid, stored = _repo_with(tmp_path, _png((128, 100)))
    ds = fusionrs_hf.load(CONFIG, "train", repo=str(repo))
    _refuses(ds, sid, stored, "image header says 128x100 = 12,800 pixels, more than the limit 10,000")


def test_a_dataloader_worker_refuses_the_row_with_the_same_error(tmp_path):
    """A forked worker inherits the guard; the error reaches the caller as the same class (torch rebuilds it
    from the message), and survives pickling (``.map(num_proc=...)``) with its reason."""
    import torch

    from fusionrs_hf.pil_guard import ImageRefusedOnDecode

    repo, sid, _ = _repo_with(tmp_path, _progressive(150))
    ds = fusionrs_hf.load(CONFIG, "train", repo=str(repo))
    bomb = list(ds["sample_id"]).index(sid)
    loader = torch.utils.data.DataLoader(ds.select([bomb]), batch_size=None, num_workers=1,
                                         multiprocessing_context="fork")
    with pytest.raises(ImageRefusedOnDecode, match="scans, more than the limit 100"):
        list(loader)
    e = pickle.loads(pickle.dumps(ImageRefusedOnDecode("image 'x': why", "too_many_scans")))
    assert type(e) is ImageRefusedOnDecode and str(e) == "image 'x': why" and e.reason == "too_many_scans"
    assert isinstance(e, limits.ImageRefused) and isinstance(e, ValueError)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
def test_a_spawned_dataloader_worker_gets_the_guard_from_the_dataset(tmp_path, streaming):
    """A worker started with ``spawn`` imports `datasets` afresh: the dataset `load` returned (here derived from
    it, as a user's would be) brings the guard along in its features, with no ``worker_init_fn``. Without it
    the worker decoded the row (the 4096², 2,010-scan JPEG the review found: 26 s in such a worker)."""
    import torch

    from fusionrs_hf.pil_guard import ImageRefusedOnDecode

    repo, sid, stored = _repo_with(tmp_path, _progressive(150))
    ds = fusionrs_hf.load(CONFIG, "train", streaming=streaming, repo=str(repo))
    ds = ds.select_columns(["sample_id", "rgb", "ir"]).with_format(None)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    with pytest.raises(ImageRefusedOnDecode, match=rf"image '{sid}\.rgb\.jpg': progressive JPEG of 1\d\d scans"):
        for row in loader:
            assert row["sample_id"] != sid
            _assert_as_stock(row, stored)


def test_the_guard_is_installed_once_restorable_and_a_worker_init_fn():
    """`install` is idempotent (one wrapper over stock decoding), takes the worker id a DataLoader passes (a
    ``spawn``-started worker imports `datasets` afresh, without the guard), unregisters EPS as `load` always
    did, and `uninstall` puts stock decoding back; PIL's registry is left to the conftest fixture to restore."""
    from datasets.features.image import Image as ImageFeature

    from fusionrs_hf import pil_guard

    stock = ImageFeature.__dict__["decode_example"]
    assert not pil_guard.installed()
    pil_guard.install(0)
    pil_guard.install()
    guarded = ImageFeature.__dict__["decode_example"]
    assert pil_guard.installed() and guarded is not stock and guarded.__wrapped__ is stock
    assert "EPS" not in Image.OPEN and "EPS" not in Image.ID
    ok = ImageFeature().decode_example({"bytes": _png((4, 4)), "path": None})
    assert ok.size == (4, 4) and ok.format == "PNG"
    with pytest.raises(pil_guard.ImageRefusedOnDecode, match=r"^image: progressive JPEG of 1\d\d scans"):
        ImageFeature().decode_example({"bytes": _progressive(150), "path": None})
    pil_guard.uninstall()
    pil_guard.uninstall()
    assert ImageFeature.__dict__["decode_example"] is stock and not pil_guard.installed()
    from datasets import Dataset, Features

    ds = pil_guard.follow(Dataset.from_dict({"im": [_png((4, 4))]}, features=Features({"im": ImageFeature()})))
    assert ds.features["im"] == ImageFeature() and repr(ds.features["im"]) == repr(ImageFeature())
    assert pickle.loads(pickle.dumps(ds))[0]["im"].size == (4, 4)
    assert not pil_guard.installed()  # a mark unpickled after `uninstall` does not put the guard back


def test_a_row_given_by_path_is_judged_by_the_file_it_names(tmp_path):
    """A row with no bytes and a local path: the file is judged before stock decoding opens it by name (so the
    image keeps its `filename`, as before)."""
    from datasets.features.image import Image as ImageFeature

    from fusionrs_hf import pil_guard

    pil_guard.install(every_dataset=True)  # a feature without load()'s mark: guarded as in a worker's init
    bomb, good = tmp_path / "bomb.jpg", tmp_path / "good.png"
    bomb.write_bytes(_progressive(150))
    good.write_bytes(_png((8, 6)))
    with pytest.raises(pil_guard.ImageRefusedOnDecode, match=re.escape(f"image {str(bomb)!r}: progressive JPEG")):
        ImageFeature().decode_example({"bytes": None, "path": str(bomb)})
    im = ImageFeature().decode_example({"bytes": None, "path": str(good)})
    assert im.size == (8, 6) and im.filename == str(good)


def test_our_own_loaders_keep_their_max_pixels(tmp_path, monkeypatch):
    """The guard holds stock `datasets` decoding only: the map-style torch loader reads its rows through `load`
    and decodes the bytes itself, to the ``max_pixels`` its caller chose (here: no limit), as before."""
    from fusionrs_hf.pil_guard import ImageRefusedOnDecode
    from fusionrs_hf.torch import make_map_dataloader

    monkeypatch.setattr(limits, "DEFAULT_MAX_PIXELS", 10_000)
    repo, sid, _ = _repo_with(tmp_path, _png((128, 100)))
    loader = make_map_dataloader(str(repo), CONFIG, "train", batch_size=4, shuffle=False, image_size=32,
                                 max_pixels=None)
    assert sid in [s for batch in loader for s in batch["sample_id"]]
    ds = fusionrs_hf.load(CONFIG, "train", repo=str(repo))  # stock decoding of the same row: the limit holds
    with pytest.raises(ImageRefusedOnDecode, match="128x100 = 12,800 pixels, more than the limit 10,000"):
        ds[list(ds["sample_id"]).index(sid)]


def test_another_dataset_of_the_process_decodes_as_stock_datasets_does(tmp_path, monkeypatch):
    """The guard held every `datasets` image decode of the process once `load` had run: an 8000x8000 tile of an
    unrelated dataset was refused at 50 M pixels. Only the datasets `load` returned (their features carry the
    mark) are held to the limits now; a lifted limit (None) is no error either."""
    import datasets

    from fusionrs_hf.pil_guard import ImageRefusedOnDecode

    monkeypatch.setattr(limits, "DEFAULT_MAX_PIXELS", 10_000)
    repo, sid, _ = _repo_with(tmp_path, _png((128, 100)))
    ours = fusionrs_hf.load(CONFIG, "train", repo=str(repo))
    with pytest.raises(ImageRefusedOnDecode):
        ours[list(ours["sample_id"]).index(sid)]
    other = datasets.Dataset.from_dict({"im": [{"bytes": _png((128, 100)), "path": None}]},
                                       features=datasets.Features({"im": datasets.Image()}))
    assert other[0]["im"].size == (128, 100)  # not ours: stock decoding, stock limits
    monkeypatch.setattr(limits, "DEFAULT_MAX_PIXELS", None)
    assert ours[list(ours["sample_id"]).index(sid)]["rgb"].size == (128, 100)
