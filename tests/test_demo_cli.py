"""Issue 2: the embedded sample (`fusionrs demo`) and the CLI surface."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fusionrs_hf.cli import COMMANDS, main
from fusionrs_hf.demo import make_sample_repo
from fusionrs_hf.scenes import SCENE_CLASSES, captions, render_scene


def test_demo_writes_complete_sample_and_streams_it(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "demo", "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    counts = res["counts"]
    assert set(counts) == {"default", "iraware", "rs5m", "skyscript", "nwpu", "rsicd", "rsitmd"}
    assert sum(counts["default"].values()) >= 300
    assert all(set(v) == {"train", "validation", "test"} for c, v in counts.items() if c != "iraware")
    assert set(counts["iraware"]) == {"train"}  # as rc4: IR-aware captions for train only
    assert res["triplet"]["ir_caption"]
    assert (out / "assets" / "contact_sheet.png").stat().st_size > 10_000 and res["contact_sheet"].endswith(
        "assets/contact_sheet.png")
    assert not (out / "contact_sheet.png").exists()  # one sheet, the card's
    assert "synthetic sample" in (out / "README.md").read_text()
    # a second run into a non-empty folder is refused (exit 2), not silently mixed
    again = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "demo", "--out", str(out)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--overwrite" in again.stderr


@pytest.mark.parametrize("counts", [{"rs5m": 3}, {"train": -1}, {"train": 0}])
def test_counts_that_name_no_split_or_give_no_rows_are_refused(tmp_path, counts):
    """Keys are splits: a source name as a key wrote nothing and then failed writing the card (FileNotFoundError
    for a temporary file), as did counts that give no rows."""
    with pytest.raises(ValueError, match="counts"):
        make_sample_repo(tmp_path / "r", counts=counts, size=32)
    assert not (tmp_path / "r").exists()


def test_sample_is_deterministic_for_a_seed(tmp_path):
    a = make_sample_repo(tmp_path / "a", seed=5, counts={"train": 2, "test": 1}, size=32)
    b = make_sample_repo(tmp_path / "b", seed=5, counts={"train": 2, "test": 1}, size=32)
    c = make_sample_repo(tmp_path / "c", seed=6, counts={"train": 2, "test": 1}, size=32)
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


@pytest.mark.parametrize("cls", sorted(SCENE_CLASSES))
def test_captions_follow_the_scene(cls):
    import numpy as np

    rng = np.random.default_rng(0)
    scene = render_scene(rng, 64, cls)
    cap, ir_cap = captions(scene, rng)
    if scene.counts.get("rivers"):
        assert "river" in cap and "river" in ir_cap
    if scene.counts.get("buildings"):
        assert "buildings" in cap and "roof" in ir_cap
    if scene.counts.get("roads"):
        assert "road" in cap and "road" in ir_cap
    assert "infrared" in ir_cap
    # IR rendering is near-gray (channels close), RGB is not
    spread_ir = (scene.ir.max(-1).astype(int) - scene.ir.min(-1)).mean()
    spread_rgb = (scene.rgb.max(-1).astype(int) - scene.rgb.min(-1)).mean()
    assert spread_ir < 12 < spread_rgb


def test_every_command_has_teaching_help(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert f"fusionrs {name}" in out and len(out) > 200, name


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2


def test_demo_sources_build_end_to_end_with_the_printed_command(tmp_path):
    """A maintainer's dry run: `fusionrs demo --sources` writes what `fusionrs build` reads and the command for
    it; that command (a real process) builds a repo that `fusionrs check` passes."""
    cli = [sys.executable, "-m", "fusionrs_hf.cli"]
    proc = subprocess.run([*cli, "demo", "--sources", str(tmp_path / "src"), "--json"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    argv = res["build_argv"]
    assert argv[:2] == ["fusionrs", "build"] and argv[argv.index("--out") + 1] == str(tmp_path / "src-built")
    built = subprocess.run([*cli, *argv[1:], "--quiet"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    report = json.loads((tmp_path / "src-built" / "build_report.json").read_text())
    assert report["written"]["total"] == res["records"] - sum(
        b["count"] for b in report["dropped"]["by_reason"].values())
    check = subprocess.run([*cli, "check", str(tmp_path / "src-built")], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_sample_and_source_trees_follow_the_release_formats(tmp_path):
    """rc4's formats, from the authors' scripts: ``source_record_id`` is the sample id and the IR output key
    ``{dataset}/{sample_id}.png`` (build_release_manifest.py), the rights codes are the redaction's
    (build_public_redacted_index.py), IR-aware rows are train only; caption tables meet the index by
    ``source_dataset`` + ``source_locator`` or by ``sample_id``, never by an upstream id."""
    import csv

    from fusionrs_hf.demo import sample_rows
    from fusionrs_hf.release.rights import rights_code
    from fusionrs_hf.testing.sources import make_fixture

    rows = list(sample_rows(0, {"train": 3, "validation": 2, "test": 2}, 16))
    assert all(r["source_record_id"] == r["sample_id"] for *_, r in rows)
    assert {(s, r["rights_code"]) for s, *_, r in rows} == {
        (s, rights_code(s, "images/x_US_1.jpg")) for s in {s for s, *_ in rows}}  # SkyScript rows: NAIP tiles
    assert {g for _, split, g, _ in rows if split != "train"} == {"base"}
    assert {g for _, split, g, _ in rows if split == "train"} == {"base", "iraware"}

    fx = make_fixture(tmp_path, size=16)
    by_locator = {(r["source_dataset"], r["source_locator"]): r for r in fx.records}
    for r in fx.records:
        key = r["translation"]["output_key"]
        assert r["source_record_id"] == r["sample_id"] and key == f"{r['source_dataset']}/{r['sample_id']}.png"
        assert (fx.ir_root / key).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert r["source_rights_code"] == rights_code(r["source_dataset"], r["source_locator"])
    table = next(p for p in fx.caption_files if p.suffix == ".csv")
    with open(table, newline="", encoding="utf-8") as f:
        keys = {(row["source_dataset"], row["source_locator"]) for row in csv.DictReader(f)}
    assert keys and keys <= set(by_locator)
    sky = next(p for p in fx.caption_files if p.name.endswith(".jsonl"))
    assert {json.loads(line)["sample_id"] for line in sky.read_text().splitlines()} <= {
        r["sample_id"] for r in fx.records}


def test_the_sample_can_store_ir_as_diffv2ir_does(tmp_path):
    """``ir_format="png"``: the IR column holds PNG, what DiffV2IR writes and a faithful rebuild keeps (the
    benchmark of its cost reads such a repo); the RGB stays JPEG, and the images are the same scenes."""
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    from fusionrs_hf.demo import make_sample_repo

    counts = {"train": 2}
    jp = make_sample_repo(tmp_path / "jpeg", counts=counts, size=64)
    pn = make_sample_repo(tmp_path / "png", counts=counts, size=64, ir_format="png")
    a = pq.read_table(sorted((jp / "data").rglob("*.parquet"))[0]).to_pylist()[0]
    b = pq.read_table(sorted((pn / "data").rglob("*.parquet"))[0]).to_pylist()[0]
    assert b["ir"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n" and b["rgb"]["bytes"] == a["rgb"]["bytes"]
    ir_j, ir_p = (np.asarray(Image.open(io.BytesIO(r["ir"]["bytes"])), dtype=np.float64) for r in (a, b))
    assert np.abs(ir_j - ir_p).mean() < 3  # the same scene, JPEG's loss aside
    with pytest.raises(ValueError, match="ir_format"):
        make_sample_repo(tmp_path / "bad", counts=counts, size=64, ir_format="webp")
