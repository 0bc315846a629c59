"""Issue 15: `fusionrs build` options end to end (the CLI, on native-layout source trees from
tests/build_fixtures.py), and `fusionrs card REPO` as a real process.

Expected values come from the fixture's inputs (its captions, its image files) and from PIL encoding
those pixels itself, never from the builder.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from fusionrs_hf import cli

from .build_fixtures import decoded, make_fixture

SIZE = 64


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("promise_build") / "src", size=SIZE)


def _args(fx, out, *extra: str) -> list[str]:
    args = ["build", "--index", str(fx.index_public), "--ir-root", str(fx.ir_root), "--out", str(out),
            "--rows-per-shard", "3", "--iraware", str(fx.iraware), "--quiet", "--workers", "1"]
    for a in fx.source_root_args():
        args += ["--source-root", a]
    return [*args, *extra, "--captions", *map(str, fx.caption_files)]


def _build(fx, out, *extra: str, rc: int = 0) -> dict:
    assert cli.main(_args(fx, out, *extra)) == rc
    return json.loads((out / "build_report.json").read_text())


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for f in sorted((out / "data").rglob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            r["_shard"] = f.relative_to(out).as_posix()
            rows[r["sample_id"]] = r
    return rows


# ----------------------------------------------------------------------------------------- --skip-rule


def test_skip_rule_under_the_paper_policy(fx, tmp_path):
    plain = _build(fx, tmp_path / "paper", "--caption-policy", "paper")
    rows = _rows(tmp_path / "paper")
    # the fixture's nwpu-0002 has only captions the paper rejects: class-name fallback; rs5m-0004 only a
    # stock-photo caption and no class: dropped
    assert (rows["nwpu-0002"]["caption"], rows["nwpu-0002"]["caption_origin"]) == (
        "a remote sensing image of river.", "class_name")  # its class is `river` (NWPU_CLASSES[2])
    assert "rs5m-0004" not in rows
    assert plain["captions"]["rules"]["stock_photo"]["enabled"] is True
    assert plain["captions"]["rules"]["stock_photo"]["count"] == 2

    skipped = _build(fx, tmp_path / "skip", "--caption-policy", "paper", "--skip-rule", "stock_photo")
    rows = _rows(tmp_path / "skip")
    assert (rows["nwpu-0002"]["caption"], rows["nwpu-0002"]["caption_origin"]) == (
        "Stock photo of an airport, royalty free", "source")
    assert rows["rs5m-0004"]["caption"] == "Aerial stock photo of a city, Shutterstock royalty free image"
    rule = skipped["captions"]["rules"]["stock_photo"]
    assert (rule["enabled"], rule["count"]) == (False, 0)
    assert skipped["written"]["total"] == plain["written"]["total"] + 1

    # an IR-aware rule, skipped under the strict IR policy: the metal-roof caption stays
    _build(fx, tmp_path / "strict", "--iraware-policy", "strict")
    strict = _rows(tmp_path / "strict")
    assert strict["skyscript-0001"]["ir_caption"] is None and "/base-" in strict["skyscript-0001"]["_shard"]
    _build(fx, tmp_path / "strict2", "--iraware-policy", "strict", "--skip-rule", "ir_material")
    kept = _rows(tmp_path / "strict2")["skyscript-0001"]
    assert kept["ir_caption"] == fx.expect["skyscript-0001"].ir_caption and "/iraware-" in kept["_shard"]


def test_unknown_rule_is_a_usage_error(fx, tmp_path, capsys):
    assert cli.main(_args(fx, tmp_path / "x", "--skip-rule", "no_such_rule")) == 2
    assert "no_such_rule" in capsys.readouterr().err
    assert not (tmp_path / "x" / "data").exists()


# ----------------------------------------------------------------------------------------- --seed


@pytest.mark.parametrize("policy", ["rc4", "paper"])
def test_random_caption_choice_follows_the_seed(fx, tmp_path, policy):
    picks = {}
    for seed in ("1", "2"):
        _build(fx, tmp_path / f"s{seed}", "--caption-policy", policy, "--caption-choice", "random", "--seed", seed)
        picks[seed] = {s: r["caption"] for s, r in _rows(tmp_path / f"s{seed}").items()
                       if r["caption_origin"] == "source"}
    several = [s for s, e in fx.expect.items() if e.all_captions and len(e.all_captions) == 2 and s in picks["1"]]
    assert len(several) >= 15
    for seed, got in picks.items():
        for sid in several:
            assert got[sid] in fx.expect[sid].all_captions, (seed, sid)
        assert any(got[s] != fx.expect[s].all_captions[0] for s in several)  # not always the first
    assert any(picks["1"][s] != picks["2"][s] for s in several)  # the seed changes the draw
    # the draw depends on the seed and the sample only: other workers and shard sizes, same captions
    args = _args(fx, tmp_path / "again", "--caption-policy", policy, "--caption-choice", "random", "--seed", "1")
    args[args.index("--workers") + 1] = "2"
    args[args.index("--rows-per-shard") + 1] = "1"
    assert cli.main(args) == 0
    again = {s: r["caption"] for s, r in _rows(tmp_path / "again").items() if r["caption_origin"] == "source"}
    assert again == picks["1"]


def test_first_choice_ignores_the_seed(fx, tmp_path):
    _build(fx, tmp_path / "a", "--seed", "5")
    rows = _rows(tmp_path / "a")
    assert {s: r["caption"] for s, r in rows.items()} == {s: e.caption for s, e in fx.expect.items() if e.caption}


# ----------------------------------------------------------------------------------------- images


def _tiff_rows(fx) -> list[str]:
    return [s for s, e in fx.expect.items() if e.rgb_path.suffix == ".tif"]


def _png_ir_rows(fx) -> list[str]:
    return [s for s, e in fx.expect.items() if e.ir_path.suffix == ".png"]


def _jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_non_jpeg_default_png_is_lossless_and_jpeg_is_untouched(fx, tmp_path):
    _build(fx, tmp_path / "png")
    rows = _rows(tmp_path / "png")
    tifs, pngs = _tiff_rows(fx), _png_ir_rows(fx)
    assert len(tifs) == 5 and set(pngs) == set(fx.expect)  # every IR is DiffV2IR's PNG, at the release's key
    for sid in tifs:
        data = rows[sid]["rgb"]["bytes"]
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert np.array_equal(decoded(data), decoded(fx.expect[sid].rgb_path))
    assert rows["skyscript-0000"]["ir"]["bytes"] == fx.expect["skyscript-0000"].ir_path.read_bytes()
    for sid, r in rows.items():
        e = fx.expect[sid]
        if e.rgb_path.suffix == ".jpg":
            assert r["rgb"]["bytes"] == e.rgb_path.read_bytes()
        assert r["ir"]["bytes"] == e.ir_path.read_bytes()  # an 8-bit PNG is stored as it is


@pytest.mark.parametrize("quality", [None, 40, 80])
def test_non_jpeg_jpeg_encodes_at_the_given_quality(fx, tmp_path, quality):
    extra = ["--non-jpeg", "jpeg"] + ([] if quality is None else ["--jpeg-quality", str(quality)])
    _build(fx, tmp_path / "jpeg", *extra)
    rows = _rows(tmp_path / "jpeg")
    q = 95 if quality is None else quality  # the documented default
    for sid in _tiff_rows(fx):
        assert rows[sid]["rgb"]["bytes"] == _jpeg(decoded(fx.expect[sid].rgb_path), q), sid
    ir = rows["skyscript-0000"]["ir"]["bytes"]
    assert ir == _jpeg(decoded(fx.expect["skyscript-0000"].ir_path), q)
    for sid, r in rows.items():  # JPEG input is never re-encoded
        if fx.expect[sid].rgb_path.suffix == ".jpg":
            assert r["rgb"]["bytes"] == fx.expect[sid].rgb_path.read_bytes()


def test_non_jpeg_keep_keeps_a_png(fx, tmp_path):
    _build(fx, tmp_path / "keep", "--non-jpeg", "keep")
    rows = _rows(tmp_path / "keep")
    assert rows["skyscript-0000"]["ir"]["bytes"] == fx.expect["skyscript-0000"].ir_path.read_bytes()
    for sid in _tiff_rows(fx):  # whatever the container, the pixels are the source's
        assert np.array_equal(decoded(rows[sid]["rgb"]["bytes"]), decoded(fx.expect[sid].rgb_path))


def test_non_jpeg_keep_stores_a_tiff_as_is(fx, tmp_path):
    _build(fx, tmp_path / "keep", "--non-jpeg", "keep")
    rows = _rows(tmp_path / "keep")
    sid = _tiff_rows(fx)[0]
    assert rows[sid]["rgb"]["bytes"] == fx.expect[sid].rgb_path.read_bytes()


@pytest.fixture(scope="module")
def mismatched(fx, tmp_path_factory):
    """The fixture with one IR of another aspect ratio (64x48) and one of the same aspect at 2x (128x128)."""
    root = tmp_path_factory.mktemp("promise_mismatch")
    ir_root = Path(shutil.copytree(fx.ir_root, root / "ir"))
    other = fx.expect["rsicd-0001"].ir_path.relative_to(fx.ir_root)
    same = fx.expect["nwpu-0003"].ir_path.relative_to(fx.ir_root)
    arr = decoded(ir_root / other)
    Image.fromarray(arr).resize((64, 48)).save(ir_root / other, format="JPEG", quality=90)
    Image.fromarray(decoded(ir_root / same)).resize((128, 128)).save(ir_root / same, format="JPEG", quality=90)
    return ir_root, (ir_root / other).read_bytes(), (ir_root / same).read_bytes()


def test_allow_size_mismatch(fx, tmp_path, mismatched):
    ir_root, other_bytes, same_bytes = mismatched
    args = _args(fx, tmp_path / "strict")
    args[args.index("--ir-root") + 1] = str(ir_root)
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "strict" / "build_report.json").read_text())
    rows = _rows(tmp_path / "strict")
    assert report["dropped"]["by_reason"]["aspect_mismatch"]["sample_ids"] == ["rsicd-0001"]
    assert "rsicd-0001" not in rows
    assert rows["nwpu-0003"]["ir"]["bytes"] == same_bytes  # one picture at two sizes: always written
    assert report["size_differs_same_aspect"]["count"] == 1
    assert cli.main([*args, "--strict"]) == 1  # a drop the release does not imply

    args[args.index("--out") + 1] = str(tmp_path / "allowed")
    assert cli.main([*args, "--allow-size-mismatch", "--strict"]) == 0
    report = json.loads((tmp_path / "allowed" / "build_report.json").read_text())
    rows = _rows(tmp_path / "allowed")
    assert "aspect_mismatch" not in report["dropped"]["by_reason"]
    assert rows["rsicd-0001"]["ir"]["bytes"] == other_bytes and rows["nwpu-0003"]["ir"]["bytes"] == same_bytes
    assert Image.open(io.BytesIO(rows["rsicd-0001"]["ir"]["bytes"])).size == (64, 48)


# ----------------------------------------------------------------------------------------- fusionrs card


def _process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                          timeout=120)


def _card_yaml(root: Path) -> dict:
    text = (root / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_card_command_rerenders_the_card_from_the_shards(fx, tmp_path):
    out = tmp_path / "repo"
    _build(fx, out)
    # remove a shard and copy another under a new batch name: the card is now stale
    gone = sorted((out / "data/rsicd").rglob("*.parquet"))[0]
    gone.unlink()
    src = sorted((out / "data/rs5m/train").glob("base-*.parquet"))[0]
    copy = src.with_name("base-b2-00000.parquet")
    rows = pq.read_table(src).to_pylist()
    for r in rows:  # new ids and groups, so the copy is a clean new batch
        r["sample_id"] += "-b2"
        r["joint_group_id"] = r["joint_group_id"][:-4] + "b2b2"
    from fusionrs_hf.shards import write_rows

    write_rows(rows, copy)
    assert _process("check", str(out), "--fast", "--quiet").returncode == 1
    p = _process("card", str(out), "--repo-id", "me/fusionrs")
    assert p.returncode == 0, p.stderr
    assert _process("check", str(out), "--fast", "--quiet").returncode == 0
    card = _card_yaml(out)
    # brute force: count the rows of every config split from the parquet files themselves
    counts: Counter = Counter()
    for f in (out / "data").rglob("*.parquet"):
        source_dir, split = f.relative_to(out / "data").parts[:2]
        n = pq.ParquetFile(f).metadata.num_rows
        counts["default", split] += n
        counts[source_dir, split] += n
        if f.name.startswith("iraware-"):
            counts["iraware", split] += n
    got = {(c["config_name"], s["name"]): s["num_examples"] for c in card["dataset_info"] for s in c["splits"]}
    assert got == {k: v for k, v in counts.items() if v}
    names = [c["config_name"] for c in card["configs"]]
    assert names[0] == "default" and set(names) == {"default", "iraware", "rs5m", "skyscript", "nwpu", "rsicd",
                                                    "rsitmd"}
    assert "me/fusionrs" in (out / "README.md").read_text(encoding="utf-8")
    assert _process("card", str(tmp_path / "nothing")).returncode != 0
