"""Reviewers' findings, one test per class: FIFOs and oversized files in a build's sources, a ``--from-folder``
listing that is malformed or leads outside PATH, oversized index lines, caption files of the wrong types, a
sources file that is no file of the repo, a loading script that reads outside ``data_dir``, bad environment
variables and row groups that would cost gigabytes in the loader, the push and card CLIs' unusable input.

Each asserts the user-facing outcome: one line naming the file (and row), the exit code, no hang."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrs_hf.build import build
from fusionrs_hf.scenes import jpeg_bytes, render_scene

from .build_fixtures import build_options, make_fixture, write_json, write_jsonl


def _fusionrs(*args: str, timeout: int = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def fx(tmp_path):
    return make_fixture(tmp_path / "src", size=64)


# --------------------------------------------------------------------------- 1. build --from-folder

def _own_folder(folder: Path, n: int = 3) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        sc = render_scene(rng, 64)
        (folder / "rgb" / "a").mkdir(parents=True, exist_ok=True)
        (folder / "ir" / "a").mkdir(parents=True, exist_ok=True)
        (folder / "rgb" / "a" / f"t{i}.jpg").write_bytes(jpeg_bytes(sc.rgb))
        (folder / "ir" / "a" / f"t{i}.jpg").write_bytes(jpeg_bytes(sc.ir))
        (folder / "rgb" / "a" / f"t{i}.txt").write_text(f"A field with {i + 2} large farm buildings and a road.\n")
    return folder


def _from_folder(path, out, *extra, timeout: int = 120) -> subprocess.CompletedProcess:
    return _fusionrs("build", "--from-folder", str(path), "--source", "SkyScript", "--out", str(out), "--quiet",
                     "--workers", "1", *extra, timeout=timeout)


def test_a_symlink_loop_is_one_line_naming_it(tmp_path, sample_repo):
    """``loop.jpg -> loop.jpg`` in an images folder, or ``assets -> assets`` beside a card, ended in a bare
    ``RuntimeError: Symlink loop`` (exit 1); now one line naming the path, exit 2."""
    mine = _own_folder(tmp_path / "mine")
    (mine / "rgb" / "a" / "loop.jpg").symlink_to(mine / "rgb" / "a" / "loop.jpg")
    proc = _from_folder(mine, tmp_path / "out")
    assert proc.returncode == 2 and "loop.jpg: a symlink loop" in _one_line(proc), proc.stderr
    import shutil

    repo = Path(shutil.copytree(sample_repo, tmp_path / "repo"))
    shutil.rmtree(repo / "assets")
    (repo / "assets").symlink_to(repo / "assets")
    proc = _fusionrs("card", str(repo))
    assert proc.returncode == 2 and "assets: a symlink loop" in _one_line(proc), proc.stderr


@pytest.mark.parametrize("link", ["rgb", "ir"])
def test_from_folder_refuses_rgb_or_ir_linked_out_of_path(link, tmp_path):
    mine = _own_folder(tmp_path / "mine")
    outside = tmp_path / "outside"
    (mine / link).rename(outside)
    (mine / link).symlink_to(outside, target_is_directory=True)
    proc = _from_folder(mine, tmp_path / "out")
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert f"{mine / link} is a symlink to {outside}, outside the folder" in line
    assert not (tmp_path / "out").exists()
    (mine / link).unlink()
    (mine / link).symlink_to("other", target_is_directory=True)  # a link that stays inside PATH is fine
    outside.rename(mine / "other")
    assert _from_folder(mine, tmp_path / "out").returncode == 0


@pytest.mark.parametrize("name, content, says", [
    ("list.jsonl", b'{"rgb": "rgb/a/t0.jpg"}\n[1, 2]\n', "list.jsonl line 2: expected a JSON object"),
    ("list.jsonl", b'{"rgb": 5}\n', "list.jsonl line 1: `rgb` is int, expected text"),
    ("list.jsonl", b'{"rgb": "rgb/a/t0.jpg", "caption": {"a": 1}}\n', "list.jsonl line 1: `caption` is dict"),
    ("list.jsonl", b'{"rgb": "rgb/a/t0.jpg", "split": "dev"}\n',
     "list.jsonl line 1: split 'dev': expected one of train, val (or validation), test"),
    ("list.csv", b"rgb,ir,caption\nrgb/a/t0.jpg,ir/a/t0.jpg,A barn \xff\xfe near a road.\n", "list.csv: not valid UTF-8"),
    ("list.csv", b"rgb,ir,caption,split\nrgb/a/t0.jpg,ir/a/t0.jpg,A barn.,train\nrgb/a/t1.jpg,,A barn.,dev\n",
     "list.csv line 3: split 'dev'"),
    ("list.csv", b"rgb,sample_id\nrgb/a/t0.jpg,x\nrgb/a/t1.jpg,x\n",
     "list.csv line 3: duplicate sample_id 'x' (first at "),
    ("list.csv", b"rgb,sample_id\nrgb/a/t0.jpg,bad\tid\n", "list.csv line 2: `sample_id`: must be one line"),
    ("list.csv", b"rgb\n../t0.jpg\n", "list.csv line 2: `rgb`: '..' segment not allowed"),
])
def test_a_bad_listing_is_one_line_naming_the_users_file_and_line(name, content, says, tmp_path):
    mine = _own_folder(tmp_path / "mine")
    listing = mine / name
    listing.write_bytes(content)
    out = tmp_path / "out"
    proc = _from_folder(listing, out)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert says in line and str(listing) in line and "folder_index" not in line
    assert not out.exists()  # refused before any build state is written


def _splits(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    return {r["sample_id"]: p.parent.name for p in (out / "data").rglob("*.parquet")
            for r in pq.read_table(p, columns=["sample_id"]).to_pylist()}


def test_from_folder_accepts_validation_as_well_as_val(tmp_path):
    mine = _own_folder(tmp_path / "mine")
    listing = mine / "list.csv"
    cap = "Two farm buildings near a road."
    listing.write_text(f"rgb,split,sample_id,caption\nrgb/a/t0.jpg,validation,m0,{cap}\nrgb/a/t1.jpg,val,m1,{cap}\n"
                       f"rgb/a/t2.jpg,,m2,{cap}\n")
    proc = _from_folder(listing, tmp_path / "out", "--split", "validation")
    assert proc.returncode == 0, proc.stderr
    assert _splits(tmp_path / "out") == {"m0": "validation", "m1": "validation", "m2": "validation"}
    proc = _from_folder(listing, tmp_path / "out2", "--split", "dev")
    assert proc.returncode == 2 and "--split: split 'dev': expected one of train, val (or validation)" in _one_line(proc)
    assert "val (or validation" in _fusionrs("build", "--help").stdout


def test_from_folder_absolute_paths_inside_path_are_made_relative_outside_refused(tmp_path):
    mine = _own_folder(tmp_path / "mine")
    listing = mine / "list.jsonl"
    listing.write_text(json.dumps({"rgb": str(mine / "rgb/a/t0.jpg"), "ir": str(mine / "ir/a/t0.jpg"),
                                   "sample_id": "abs0", "caption": "Two farm buildings near a road."}) + "\n")
    proc = _from_folder(listing, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert _splits(tmp_path / "out") == {"abs0": "train"}
    (tmp_path / "elsewhere.jpg").write_bytes((mine / "rgb/a/t0.jpg").read_bytes())
    listing.write_text(json.dumps({"rgb": str(tmp_path / "elsewhere.jpg")}) + "\n")
    proc = _from_folder(listing, tmp_path / "out3")
    assert proc.returncode == 2
    line = _one_line(proc)
    assert f"{listing} line 1: `rgb` '{tmp_path / 'elsewhere.jpg'}' is not inside the listing's folder" in line
    assert "paths in a listing are relative to" in line


def test_a_fifo_caption_file_is_refused_not_waited_on(tmp_path):
    mine = _own_folder(tmp_path / "mine")
    cap = mine / "rgb" / "a" / "t1.txt"
    cap.unlink()
    os.mkfifo(cap)
    proc = _from_folder(mine, tmp_path / "out", timeout=60)  # hung before: read_text on the FIFO
    assert proc.returncode == 2
    assert f"{cap}: not a regular file" in _one_line(proc)


# --------------------------------------------------------------------------- 2. FIFOs and huge files in a build

def test_a_fifo_at_an_index_locator_is_dropped_not_read(fx, tmp_path):
    rgb = fx.expect["rsicd-0001"].rgb_path
    rgb.unlink()
    os.mkfifo(rgb)
    report = build(build_options(fx, tmp_path / "out", rows_per_shard=2))  # hung before (read_bytes on a FIFO)
    drops = report["dropped"]["by_reason"]["undecodable_rgb"]
    assert "rsicd-0001" in drops["sample_ids"]
    detail = next(d["detail"] for d in drops["details"] if d["sample_id"] == "rsicd-0001")
    assert str(rgb) in detail and "not a regular file" in detail


def test_a_source_file_over_the_byte_limit_is_dropped_naming_file_and_size(tmp_path):
    from fusionrs_hf.build.images import ImageDrop, load_image, read_source
    from fusionrs_hf.limits import MAX_SOURCE_BYTES

    big = tmp_path / "huge.jpg"
    with open(big, "wb") as fh:  # sparse: no disk, no memory
        fh.truncate(MAX_SOURCE_BYTES + 1)
    with pytest.raises(ImageDrop) as e:
        load_image(big, "rgb")
    assert e.value.reason == "undecodable_rgb"
    assert str(big) in e.value.detail and f"{MAX_SOURCE_BYTES + 1:,} bytes" in e.value.detail
    small = tmp_path / "small.jpg"
    small.write_bytes(b"x" * 100)
    assert read_source(small, "ir", limit=100) == b"x" * 100
    with pytest.raises(ImageDrop, match="small.jpg: 100 bytes, more than the limit 99"):
        read_source(small, "ir", limit=99)


# --------------------------------------------------------------------------- 3. index and caption files

def _build_args(fx, out, index=None, captions=None) -> list[str]:
    args = ["build", "--index", str(index or fx.index_public), "--ir-root", str(fx.ir_root), "--out", str(out),
            "--quiet", "--workers", "1"]
    for a in fx.source_root_args():
        args += ["--source-root", a]
    return [*args, "--captions", *map(str, captions or fx.caption_files)]


def test_a_huge_single_line_gzip_index_is_refused_naming_file_and_line(fx, tmp_path):
    from fusionrs_hf.limits import MAX_LINE_CHARS

    index = tmp_path / "huge.jsonl.gz"
    with gzip.open(index, "wb", compresslevel=1) as fh:  # 16 MiB of one line in ~16 KB of gzip
        fh.write(b"\n" + json.dumps(fx.records[0]).encode() + b"\n")
        fh.write(b'{"sample_id": "' + b"x" * (16 << 20) + b'"}\n')
    proc = _fusionrs(*_build_args(fx, tmp_path / "out", index=index))
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    assert "huge.jsonl.gz line 3" in line and f"{MAX_LINE_CHARS:,} characters" in line


def test_reading_a_long_line_costs_no_memory(tmp_path):
    import tracemalloc

    from fusionrs_hf.index import IndexFormatError, iter_index

    index = tmp_path / "huge.jsonl.gz"
    with gzip.open(index, "wb", compresslevel=1) as fh:
        fh.write(b"x" * (64 << 20))
    tracemalloc.start()
    with pytest.raises(IndexFormatError, match="huge.jsonl.gz line 1: longer than the limit"):
        list(iter_index(index))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, peak  # read whole, the line alone would be 64 MiB (and 1.5 GB in the report)


@pytest.fixture
def no_hang():
    """A read that would block forever fails the test after 20 s instead."""
    import signal

    def hung(*_):
        raise TimeoutError("hung on a read")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", ["index.jsonl", "captions.parquet", "captions.csv", "dataset_rsicd.json",
                                  "iraware.jsonl"])
def test_a_fifo_as_index_or_caption_file_is_refused_not_waited_on(name, tmp_path, no_hang):
    from fusionrs_hf.captions.formats import CaptionFileError, read_caption_file, read_iraware
    from fusionrs_hf.index import IndexFormatError, iter_index

    fifo = tmp_path / name
    os.mkfifo(fifo)
    if name.startswith("index"):
        with pytest.raises(IndexFormatError, match="not a regular file") as e:
            list(iter_index(fifo))
    else:
        with pytest.raises(CaptionFileError, match="not a regular file") as e:
            list(read_iraware(fifo) if name.startswith("iraware") else read_caption_file(fifo))
    assert str(fifo) in str(e.value)


def _rsicd(fx) -> dict:
    return json.loads((fx.roots["RSICD"] / "dataset_rsicd.json").read_text())


@pytest.mark.parametrize("case, says", [
    ("rsicd_raw_int", "dataset_rsicd.json: images[0] ("),
    ("table_class_int", "table.jsonl row 1: `class_name` is int, expected text"),
    ("json_class_int", "table.json item 1: `class_name` is int, expected text"),
    ("deep_json", "deep.json: not valid JSON (nested too deeply)"),
    ("deep_jsonl", "deep.jsonl: entry 1: JSON nested too deeply"),
    ("long_csv", "long.csv line 2: longer than the limit"),
])
def test_caption_files_of_the_wrong_shape_are_one_line_errors(case, says, fx, tmp_path):
    if case == "rsicd_raw_int":
        data = _rsicd(fx)
        data["images"][0]["sentences"][0]["raw"] = 5
        cap = write_json(tmp_path / "dataset_rsicd.json", data)
    elif case == "table_class_int":
        cap = write_jsonl(tmp_path / "table.jsonl", [{"sample_id": "rsicd-0001", "caption": "A port.", "class_name": 7}])
    elif case == "json_class_int":
        cap = write_json(tmp_path / "table.json", [{"sample_id": "rsicd-0001", "caption": "A port.", "class_name": 7}])
    elif case == "deep_json":
        cap = tmp_path / "deep.json"
        cap.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "deep_jsonl":
        cap = tmp_path / "deep.jsonl"
        cap.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    else:
        cap = tmp_path / "long.csv"
        cap.write_text("sample_id,caption\n" + "x" * (2 << 20) + "\n")
    proc = _fusionrs(*_build_args(fx, tmp_path / "out", captions=[*fx.caption_files, cap]))
    assert proc.returncode == 2, proc.stderr
    assert says in _one_line(proc)


# --------------------------------------------------------------------------- 4. fusionrs_sources.json

@pytest.mark.parametrize("what", ["fifo", "outside"])
def test_a_sources_file_that_is_no_file_of_the_repo_is_refused_not_read(what, sample_repo, tmp_path):
    """A FIFO at fusionrs_sources.json hung check --fast, card, push and make_dataloader; a symlink to a file
    outside the repo was read, and push published it. Now: exit 2 / NotAFileError, one line naming it."""
    import shutil

    from fusionrs_hf.safepath import NotAFileError
    from fusionrs_hf.torch import make_dataloader

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    reg = repo / "fusionrs_sources.json"
    if what == "fifo":
        os.mkfifo(reg)
        says = "not a regular file"
    else:
        outside = tmp_path / "private.json"
        outside.write_text(json.dumps({"sources": []}) + "\n")
        reg.symlink_to(outside)
        says = "outside the repo"
    dest = tmp_path / "mirror"
    for cmd in (("check", str(repo), "--fast"), ("card", str(repo)), ("push", str(repo), f"file://{dest}"),
                ("push", str(repo), f"file://{dest}", "--skip-check")):
        proc = _fusionrs(*cmd, timeout=60)
        assert proc.returncode == 2, (cmd, proc.stderr)
        line = _one_line(proc)
        assert says in line and "fusionrs_sources.json" in line, (cmd, line)
    assert not list(dest.rglob("fusionrs_sources.json")) if dest.exists() else True
    with pytest.raises(NotAFileError, match=says):
        next(iter(make_dataloader(str(repo), "nwpu", "train", batch_size=2)))


# --------------------------------------------------------------------------- 5. the loading script

@pytest.mark.parametrize("what", ["outside_shard", "fifo_shard", "linked_folder"])
def test_the_loading_script_reads_only_regular_files_inside_data_dir(what, script, sample_repo, tmp_path):
    """Before, a shard symlinked to an outside parquet was streamed although `fusionrs check` refuses the repo."""
    import shutil

    import pyarrow.parquet as pq

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = sorted((repo / "data" / "nwpu" / "train").glob("*.parquet"))[0]
    if what == "outside_shard":
        outside = tmp_path / "private.parquet"
        pq.write_table(pq.read_table(shard).slice(0, 1), outside)
        shard.unlink()
        shard.symlink_to(outside)
        says = "outside the repo"
    elif what == "fifo_shard":
        shard.unlink()
        os.mkfifo(shard)
        says = "not a regular file"
    else:
        moved = tmp_path / "moved"
        shutil.move(repo / "data" / "nwpu", moved)
        (repo / "data" / "nwpu").symlink_to(moved, target_is_directory=True)
        says = "is a symlink to a folder"
    assert _fusionrs("check", str(repo), "--fast").returncode == 2
    b = script.FusionRS(config_name="nwpu", data_dir=str(repo), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=says) as e:
        list(b.as_streaming_dataset("train"))
    assert "\n" not in str(e.value)


def test_the_loading_script_names_a_missing_data_dir(script, tmp_path):
    b = script.FusionRS(config_name="iraware", data_dir=str(tmp_path / "nope"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match=r"data_dir .*nope: no such folder"):
        b.as_streaming_dataset("train")  # was: "Bad split: train. Available splits: []"
    (tmp_path / "empty").mkdir()
    b = script.FusionRS(config_name="iraware", data_dir=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match=r"empty: not a FusionRS repo folder \(no data/ directory\)"):
        b.as_streaming_dataset("train")
    (tmp_path / "empty" / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty: no shards of config 'iraware'"):
        b.as_streaming_dataset("train")


# --------------------------------------------------------------------------- 6. the torch loader

@pytest.mark.parametrize("var, value", [("WORLD_SIZE", "x"), ("RANK", "two")])
def test_a_bad_rank_variable_is_named(var, value, monkeypatch):
    from fusionrs_hf.errors import UnusableInputError
    from fusionrs_hf.torch.plan import _resolve_rank

    monkeypatch.setenv(var, value)
    with pytest.raises(UnusableInputError, match=f"environment variable {var}='{value}' is not an integer"):
        _resolve_rank(None, None)
    assert _resolve_rank(0, 1) == (0, 1)  # explicit values do not read the environment


def _inflating_shard(repo: Path, tmp_path: Path, column: str = "rgb") -> Path:
    """The first nwpu/train shard rewritten as one zstd row group of ~48 MB uncompressed in a few hundred KB
    (``column``: the image bytes, or a text column, padded)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = sorted((repo / "data" / "nwpu" / "train").glob("*.parquet"))[0]
    t = pq.read_table(shard)
    pad = b"\0" * (12 << 20)
    if column == "rgb":
        vals = [{"bytes": r["bytes"] + pad, "path": r["path"]} for r in t.column("rgb").to_pylist()]
    else:
        vals = [v + pad.decode() for v in t.column(column).to_pylist()]
    field = t.schema.field(column)
    t = t.set_column(t.schema.get_field_index(column), field, pa.array(vals, field.type))
    pq.write_table(t, shard, compression="zstd", row_group_size=len(t))
    assert shard.stat().st_size < 2 << 20
    return shard


def test_a_row_group_that_inflates_past_the_limit_is_refused_from_its_footer(sample_repo, tmp_path, monkeypatch):
    import shutil

    import pyarrow.parquet as pq

    from fusionrs_hf import limits
    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.torch import make_dataloader

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = _inflating_shard(repo, tmp_path)
    size = pq.ParquetFile(shard).metadata.row_group(0).total_byte_size
    monkeypatch.setattr(limits, "MAX_ROW_GROUP_BYTES", 32 << 20)  # the default (1 GiB) scaled to the test's shard
    with pytest.raises(DecodeError) as e:
        list(make_dataloader(str(repo), "nwpu", "train", batch_size=2, on_error="raise"))
    msg = str(e.value)
    assert f"shard=data/nwpu/train/{shard.name}" in msg and "row group 0 is" in msg
    assert "more than the limit 33,554,432 (MAX_ROW_GROUP_BYTES)" in msg and size > 32 << 20
    with pytest.raises(DecodeError, match=f"shard=data/nwpu/train/{shard.name}: row group 0 is"):
        make_dataloader(str(repo), "nwpu", "train", batch_size=2, shuffle="global")  # before datasets' cache
    import fusionrs_hf

    with pytest.raises(limits.RowGroupTooBig, match=f"shard=data/nwpu/train/{shard.name}: row group 0 is"):
        fusionrs_hf.load("nwpu", "train", repo=str(repo))  # the same rule for a stock non-streaming load
    monkeypatch.setattr(limits, "MAX_ROW_GROUP_BYTES", 1 << 30)
    assert sum(len(b["sample_id"]) for b in make_dataloader(str(repo), "nwpu", "train", batch_size=2)) > 0


def test_every_reader_of_a_shard_judges_its_row_groups_by_the_footer(sample_repo, tmp_path, monkeypatch):
    """check, eval's rows, the card's contact sheet, `check --release` and a caption table: each refuses the
    inflating row group by name before it inflates anything (only the streaming loader did)."""
    import shutil

    from fusionrs_hf import limits
    from fusionrs_hf.captions import CaptionFileError
    from fusionrs_hf.captions.formats import read_caption_table
    from fusionrs_hf.check import check_repo
    from fusionrs_hf.eval.protocol import read_eval_rows
    from fusionrs_hf.release.known import RC4
    from fusionrs_hf.release.verify import verify

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = _inflating_shard(repo, tmp_path)
    rel = f"data/nwpu/train/{shard.name}"
    monkeypatch.setattr(limits, "MAX_ROW_GROUP_BYTES", 32 << 20)
    rep = check_repo(str(repo), fast=False)
    bad = [f for f in rep.findings if f.kind == "unreadable_shard"]
    assert [f.shard for f in bad] == [rel] and "row group 0 is" in bad[0].message
    assert not [f for f in check_repo(str(repo), fast=True).findings if f.kind == "unreadable_shard"]  # no rgb read
    shard = _inflating_shard(repo, tmp_path, "sample_id")  # a column every one of them reads
    from fusionrs_hf.errors import UnusableInputError

    with pytest.raises(limits.RowGroupTooBig, match=f"{rel}: row group 0 is") as e:
        read_eval_rows(str(repo), "nwpu", "train")
    assert isinstance(e.value, UnusableInputError)  # exit 2 in every command
    import fsspec

    with pytest.raises(limits.RowGroupTooBig, match=f"{rel}: row group 0 is"):
        verify(fsspec.filesystem("file"), str(repo), RC4)
    table = tmp_path / "captions.parquet"
    pq.write_table(pq.read_table(shard).select(["sample_id", "rgb"]), table, compression="zstd")
    with pytest.raises(CaptionFileError, match="row group 0 is"):
        list(read_caption_table(table))


def test_an_npz_zip_bomb_is_refused_before_numpy_inflates_it(tmp_path):
    import zipfile

    from fusionrs_hf.eval import ProtocolError, load_embeddings

    path = tmp_path / "emb.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("rgb.npy", "w", force_zip64=True) as f:  # 96 MiB of zeros in ~100 KB
            for _ in range(96):
                f.write(b"\0" * (1 << 20))
        zf.writestr("sample_id.npy", b"")
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ProtocolError, match=r"member 'rgb.npy' inflates .* \(more than 50x\); not read"):
        load_embeddings(path)


def _bad_embedding_files(tmp_path) -> dict:
    import io
    import zipfile

    import pyarrow as pa

    ids = np.array(["a", "b"])
    vec = np.ones((2, 4), np.float32)
    out = {}

    def npz(name, **arrays):
        p = tmp_path / f"{name}.npz"
        np.savez(p, **arrays)
        out[name] = p

    npz("objects", sample_id=ids, rgb=np.array([{"x": 1}, None], dtype=object), ir=vec)
    npz("strings", sample_id=ids, rgb=np.array([["1", "2"], ["3", "4"]]), ir=vec)
    npz("bad_meta", sample_id=ids, rgb=vec, ir=vec, meta=np.asarray("{not json"))
    npz("list_meta", sample_id=ids, rgb=vec, ir=vec, meta=np.asarray("[1, 2]"))
    npz("deep_meta", sample_id=ids, rgb=vec, ir=vec, meta=np.asarray("[" * 100_000 + "]" * 100_000))
    trunc = tmp_path / "truncated.npz"  # a member whose data stops short of its header's shape
    buf = io.BytesIO()
    np.save(buf, np.ones((1000, 64), np.float32))
    with zipfile.ZipFile(trunc, "w") as zf:
        zf.writestr("sample_id.npy", _npy(ids))
        zf.writestr("rgb.npy", buf.getvalue()[:5000])
        zf.writestr("ir.npy", _npy(vec))
    out["truncated"] = trunc
    huge = tmp_path / "huge.npz"  # a header claiming 2**40 float32 rows in a few hundred bytes
    header = _npy(vec)
    claim = header.replace(b"(2, 4)", b"(1099511627776, 4)")
    with zipfile.ZipFile(huge, "w") as zf:
        zf.writestr("sample_id.npy", _npy(ids))
        zf.writestr("rgb.npy", claim)
        zf.writestr("ir.npy", header)
    out["huge_header"] = huge
    scalar = tmp_path / "scalar.parquet"
    pq.write_table(pa.table({"sample_id": ["a", "b"], "rgb": [1.0, 2.0], "ir": [[1.0], [2.0]]}), scalar)
    out["scalar_column"] = scalar
    text = tmp_path / "text.parquet"
    pq.write_table(pa.table({"sample_id": ["a", "b"], "rgb": [["x"], ["y"]], "ir": [[1.0], [2.0]]}), text)
    out["string_column"] = text
    notpq = tmp_path / "junk.parquet"
    notpq.write_bytes(b"PAR1 this is not parquet")
    out["not_parquet"] = notpq
    return out


def _npy(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["objects", "strings", "bad_meta", "list_meta", "deep_meta", "truncated",
                                  "huge_header", "scalar_column", "string_column", "not_parquet"])
def test_a_bad_embedding_file_is_one_line_naming_it(kind, tmp_path):
    """Object or text arrays, a truncated member, a header claiming terabytes, meta that is not a JSON object,
    scalar or text parquet columns, a file that is not parquet: each ended as numpy's or pyarrow's own error
    (exit 1, often without the file name, a header's claim allocated first); now one ProtocolError naming the
    file, which `fusionrs eval` reports with exit 2."""
    from fusionrs_hf.eval import ProtocolError, load_embeddings

    path = _bad_embedding_files(tmp_path)[kind]
    with pytest.raises(ProtocolError) as got:
        load_embeddings(path)
    assert str(path) in str(got.value) and "\n" not in str(got.value)
    if kind in ("huge_header", "objects"):  # refused from the header, before numpy allocates or unpickles
        assert "claims shape" in str(got.value) or "Python objects" in str(got.value)


# --------------------------------------------------------------------------- 7. push

def test_the_documented_prune_flow_pushes_with_the_card_push_renders(sample_repo, tmp_path):
    """Delete a shard locally, push --prune: the local card is stale, but push publishes a card rendered from
    the shards, so the pre-push check does not hold that against it (it exited 1 and said --skip-check)."""
    import shutil

    repo, dest = tmp_path / "repo", tmp_path / "mirror"
    shutil.copytree(sample_repo, repo)
    assert _fusionrs("push", str(repo), f"file://{dest}", "--quiet").returncode == 0
    gone = sorted((repo / "data" / "nwpu" / "train").glob("*.parquet"))[0]
    gone.unlink()
    proc = _fusionrs("push", str(repo), f"file://{dest}", "--prune", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "README.md does not match the shards" in proc.stderr and "fusionrs card" in proc.stderr
    assert not (dest / gone.relative_to(repo)).exists()
    assert _fusionrs("check", str(dest), "--fast").returncode == 0  # the published card fits the shards
    (repo / "data" / "nwpu" / "train" / "stray.parquet").write_bytes(gone.parent.joinpath(
        sorted(p.name for p in gone.parent.glob("*.parquet"))[0]).read_bytes())
    proc = _fusionrs("push", str(repo), f"file://{dest}", "--quiet")  # what is not about the card still counts
    assert proc.returncode == 1 and "stray.parquet" in proc.stderr


def test_a_push_url_with_credentials_is_unusable_input_and_scrubbed(sample_repo):
    proc = _fusionrs("push", str(sample_repo), "s3://AKIAEXAMPLEKEY:very-secret-value@bucket/x", "--skip-check")
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc)
    # the one rule of fusionrs_hf.storage.locate (every command), before anything is written
    assert "takes no credentials in the URL" in line and "--storage-option" in line
    assert "very-secret-value" not in proc.stderr + proc.stdout and "AKIAEXAMPLEKEY" not in proc.stderr


def test_a_relative_destination_folder_is_a_folder(sample_repo, tmp_path):
    proc = _fusionrs("push", str(sample_repo), "./rel-mirror", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rel-mirror" / "README.md").is_file()
    assert list((tmp_path / "rel-mirror" / "data").rglob("*.parquet"))


# --------------------------------------------------------------------------- 8. card --repo-id

@pytest.mark.parametrize("repo_id, says", [
    ("bad id!", "'bad id!' is not a Hub dataset id"),
    ("./relative", "'./relative': no such folder here"),
    ("a/b/c", "'a/b/c' is not a Hub dataset id"),
    ("hf://datasets/bad id", "'bad id' is not a Hub dataset id"),
    ("s3://key:pw-secret@bucket/x", "credentials in the URL are not used"),
])
def test_card_refuses_a_repo_id_the_load_snippet_could_not_use(repo_id, says, sample_repo, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    before = (repo / "README.md").read_bytes()
    proc = _fusionrs("card", str(repo), "--repo-id", repo_id, "--no-assets", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert says in _one_line(proc) and "pw-secret" not in proc.stderr
    assert (repo / "README.md").read_bytes() == before  # nothing written


def test_card_accepts_hub_ids_urls_and_folders(sample_repo, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    for repo_id, snippet in (("me/fusionrs", 'load_dataset("me/fusionrs"'),
                             ("hf://datasets/me/fusionrs@v1", "revision='v1'"),
                             (".", f'load_dataset("{tmp_path}"')):
        proc = _fusionrs("card", str(repo), "--repo-id", repo_id, "--no-assets", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert snippet in (repo / "README.md").read_text(), repo_id


def test_a_folder_of_an_interrupted_build_says_so(tmp_path):
    """OUT/.fusionrs-build (a build's resumable state) but no shards yet: card and push say a build was
    interrupted there and that re-running it resumes it, instead of only "not a FusionRS repo"."""
    from fusionrs_hf.build import STATE_DIR

    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    for cmd in (("card", str(out)), ("push", str(out), f"file://{tmp_path / 'mirror'}"),
                ("check", str(out), "--quiet")):
        proc = _fusionrs(*cmd)
        assert proc.returncode == 2, proc.stderr
        line = _one_line(proc)
        assert f"a fusionrs build into it was interrupted ({out / STATE_DIR} holds its state)" in line
        assert "re-run the same `fusionrs build` command to resume it" in line
    (out / "data").mkdir()
    assert "resume it" in _one_line(_fusionrs("card", str(out)))
    assert (out / STATE_DIR).is_dir()  # resumable state is never deleted


# --------------------------------------------------------------------------- 6. stock-decoding paths


_EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke showpage\n"


def _with_image(repo: Path, shard: Path, data: bytes) -> str:
    """Put ``data`` into the first row's ``rgb`` of ``shard`` (a copy of a real row otherwise); its sample_id."""
    from fusionrs_hf.shards import rows_to_table, write_table

    rows = pq.read_table(shard).to_pylist()
    rows[0]["rgb"] = {"bytes": data, "path": None}
    write_table(rows_to_table(rows), shard)
    return rows[0]["sample_id"]


def test_stock_decoding_never_hands_eps_to_ghostscript(script, sample_repo, tmp_path):
    """`fusionrs_hf.load` and the loading script hand rows to stock `datasets`, which decodes with every PIL
    plugin: EPS bytes stored as an image would go to Ghostscript. Both unregister that opener first, and the
    loading script refuses the row, naming it."""
    import io
    import shutil

    from PIL import Image

    import fusionrs_hf

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = sorted((repo / "data" / "nwpu" / "train").glob("*.parquet"))[0]
    sid = _with_image(repo, shard, _EPS)
    ds = fusionrs_hf.load("nwpu", "train", streaming=True, repo=str(repo))
    assert "EPS" not in Image.OPEN and "EPS" not in Image.ID
    with pytest.raises(Exception, match="cannot identify image file"):
        Image.open(io.BytesIO(_EPS))
    with pytest.raises(Exception) as e:  # the row cannot be decoded; nothing ran
        for _ in ds:
            pass
    assert "Ghostscript" not in str(e.value)
    Image.register_open("EPS", __import__("PIL.EpsImagePlugin").EpsImagePlugin.EpsImageFile)
    from fusionrs_hf.limits import refuse_external_decoders

    refuse_external_decoders(0)  # as a DataLoader worker_init_fn (a spawned worker imports PIL afresh)
    assert "EPS" not in Image.OPEN
    b = script.FusionRS(config_name="nwpu", data_dir=str(repo), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"{shard.name}: row 0 \(sample_id={sid!r}\) column 'rgb': not an image"):
        list(b.as_streaming_dataset("train"))


def test_the_loading_script_refuses_images_past_the_limits_by_their_header(script, sample_repo, tmp_path):
    import io
    import shutil

    from PIL import Image

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = sorted((repo / "data" / "rsicd" / "train").glob("*.parquet"))[0]
    buf = io.BytesIO()
    Image.new("L", (8000, 7000)).save(buf, format="PNG")  # 56 M pixels: a few KB of PNG
    sid = _with_image(repo, shard, buf.getvalue())
    b = script.FusionRS(config_name="rsicd", data_dir=str(repo), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=rf"sample_id={sid!r}\) column 'rgb': image header says 8000x7000"):
        list(b.as_streaming_dataset("train"))


def test_load_reads_the_listed_shards_not_the_cards_patterns(sample_repo, tmp_path):
    """A card's data_files may point outside the repo (absolute, ``..``) and a shard may be a symlink out of it;
    `fusionrs_hf.load` on a local folder reads the shards a checked listing names, so neither is followed, and a
    card older than its shards does not stop the load."""
    import shutil

    import fusionrs_hf

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    outside = tmp_path / "outside"
    outside.mkdir()
    shard = sorted((repo / "data" / "rsicd" / "train").glob("*.parquet"))[0]
    t = pq.read_table(shard)
    pq.write_table(t.set_column(0, "sample_id", pa.array([f"SECRET-{i}" for i in range(len(t))])),
                   outside / "x.parquet")
    card = (repo / "README.md").read_text()
    assert "data/rsicd/train/" in card
    (repo / "README.md").write_text(card.replace("data/rsicd/train/", "../outside/").replace(
        "data/rsitmd/train/", str(outside) + "/"))
    from fusionrs_hf.check import check_repo

    outside_pats = [f for f in check_repo(str(repo), fast=True).findings if f.kind == "card_outside_repo"]
    assert {f.message.split("'")[1] for f in outside_pats} >= {"../outside/*.parquet", f"{outside}/*.parquet"}
    ds = fusionrs_hf.load("default", "train", streaming=True, repo=str(repo))
    ids = [r["sample_id"] for r in ds]
    assert ids and not [i for i in ids if i.startswith("SECRET")]
    assert ds.info.splits["train"].num_examples == len(ids)  # sizes from the shards, as the card would give them
    assert len(ids) == sum(pq.read_metadata(p).num_rows for p in (repo / "data").glob("*/train/*.parquet"))
    shard.unlink()
    shard.symlink_to(outside / "x.parquet")
    with pytest.raises(Exception, match="outside the repo"):
        fusionrs_hf.load("rsicd", "train", streaming=True, repo=str(repo))


def _progressive(size: int = 64) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (90, 120, 60)).save(buf, format="JPEG", quality=90, progressive=True)
    return buf.getvalue()


def _hidden_scan_bombs() -> dict[str, bytes]:
    """Progressive JPEGs of 160 scans whose header hides the frame: a comment or APP segment holding the bytes
    FF DA (a scan marker to a byte search) before SOF2, garbage between segments (libjpeg skips it), fill
    bytes before a marker."""
    good = _progressive()
    scan = good[good.rindex(b"\xff\xda"):-2]
    body = good[2:-2] + scan * 150 + b"\xff\xd9"
    com = b"\xff\xfe\x00\x06\xff\xda\xff\xda"
    app = b"\xff\xe1\x00\x08\xff\xda\xff\xc0\x00\x00"
    app0 = 2 + int.from_bytes(body[2:4], "big")  # the JFIF segment: garbage after it, which libjpeg skips
    return {"comment": b"\xff\xd8" + com + body, "app": b"\xff\xd8" + app + body,
            "garbage": b"\xff\xd8" + body[:app0] + b"\x00garbage\x01" + body[app0:], "fill": b"\xff\xd8\xff\xff\xff" + body[1:],
            "plain": b"\xff\xd8" + body,
            # FF 00 LL LL before the frame: skipped by libjpeg as two extra bytes, not a segment of LLLL bytes
            "ff00": b"\xff\xd8" + body[:app0] + b"\xff\x00" + (len(body) - app0 - 2).to_bytes(2, "big")[:2]
                    + body[app0:]}


@pytest.mark.parametrize("kind", ["comment", "app", "garbage", "fill", "plain", "ff00"])
def test_a_scan_bomb_cannot_hide_its_frame_header(kind, script):
    """Before, the scan limit looked for a progressive frame header only before the first FF DA bytes, so a
    comment holding them made a 2,000-scan file pass as baseline (20 s to decode 165 KB). The header is now
    walked by segment lengths, as libjpeg reads it; the loading script's restated copy agrees."""
    from fusionrs_hf.check import inspect_image
    from fusionrs_hf.decode import DecodeError, decode_rgb
    from fusionrs_hf.limits import MAX_JPEG_SCANS, jpeg_scans

    bomb = _hidden_scan_bombs()[kind]
    assert jpeg_scans(bomb) > MAX_JPEG_SCANS and jpeg_scans(memoryview(bomb)) == jpeg_scans(bomb)
    for backend in ("auto", "pil"):
        with pytest.raises(DecodeError, match="scans, more than the limit 100"):
            decode_rgb(bomb, 64, backend=backend)
    with pytest.raises(ValueError, match="scans, more than the limit 100"):
        inspect_image(bomb)
    assert "scans, more than the limit 100" in script.image_problem(bomb)


def test_scan_counts_agree_between_the_library_and_the_loading_script(script):
    """One rule, two copies (the loading script stands alone): the same count on ordinary, progressive,
    truncated and odd files."""
    import io

    from PIL import Image

    from fusionrs_hf.limits import jpeg_scans

    good = _progressive()
    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="JPEG", exif=b"Exif\x00\x00" + b"\xff\xda" * 600)  # long APP1
    samples = [good, good[:40], good[:-200], buf.getvalue(), b"", b"\xff\xd8", b"\xff\xd8\xff\xc2\x00",
               b"\xff\xd8" + b"\x00" * 50, *_hidden_scan_bombs().values()]
    for data in samples:
        assert script._jpeg_scans(data) == jpeg_scans(data), data[:16]
    assert jpeg_scans(buf.getvalue()) == 0  # baseline, whatever its EXIF holds
    assert 1 < jpeg_scans(good) <= 12
