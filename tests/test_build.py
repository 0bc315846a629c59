"""Issue 3: `fusionrs build` from native source trees, index (both variants), IR folder and caption files.

Build -> stock `load_dataset` reads every config -> bytes and captions equal the inputs; every
index record written or listed; missing/corrupt/mismatched inputs reported by sample id; bad
lines by line and field; --strict; crash + re-run gives byte-identical shards; --from-folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Image, get_dataset_config_names, load_dataset

from fusionrs_hf import cli
from fusionrs_hf.build import CRASH_ENV, STATE_DIR, BuildError, BuildOptions, build
from fusionrs_hf.layout import CONFIGS_BY_NAME
from fusionrs_hf.scenes import jpeg_bytes, render_scene
from fusionrs_hf.schema import RELEASE_FIELDS, SOURCES

from .build_fixtures import build_options, decoded, internal_record, make_fixture, write_jsonl

ROWS_PER_SHARD = 2


def _opts(fx, out, **over) -> BuildOptions:
    return build_options(fx, out, **{"rows_per_shard": ROWS_PER_SHARD, **over})


def _cli_args(fx, out) -> list[str]:
    args = ["build", "--index", str(fx.index_public), "--ir-root", str(fx.ir_root), "--out", str(out),
            "--rows-per-shard", str(ROWS_PER_SHARD), "--iraware", str(fx.iraware), "--quiet", "--workers", "1"]
    for a in fx.source_root_args():
        args += ["--source-root", a]
    return args + ["--captions", *map(str, fx.caption_files)]


def _files(root: Path) -> dict[str, bytes]:
    """Every published file; the card names the folder it lives in (its Load snippet), so that path is
    replaced by a placeholder to compare builds made in two folders."""
    out = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
           if p.is_file() and STATE_DIR not in p.parts and p.name != "build_report.json"}
    out["README.md"] = out["README.md"].replace(str(root.resolve()).encode(), b"<repo>")
    return out


@pytest.fixture(scope="module")
def build_fx(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("build_src"))


@pytest.fixture(scope="module")
def built(build_fx, tmp_path_factory):
    """The reference build: 2 worker processes, 2 rows per shard."""
    out = tmp_path_factory.mktemp("build_out") / "repo"
    report = build(_opts(build_fx, out, workers=2))
    return out, report


def _load_raw(out: Path, config: str) -> dict[str, dict]:
    rows = {}
    dd = load_dataset(str(out), config)
    for split, ds in dd.items():
        ds = ds.cast_column("rgb", Image(decode=False)).cast_column("ir", Image(decode=False))
        for r in ds:
            assert r["sample_id"] not in rows
            rows[r["sample_id"]] = {**r, "_split": split}
    return rows


def test_every_config_loads_and_values_equal_inputs(build_fx, built):
    out, report = built
    assert set(get_dataset_config_names(str(out))) == set(CONFIGS_BY_NAME)
    rows = _load_raw(out, "default")
    expected_written = {s for s in build_fx.expect if s not in build_fx.dropped}
    assert set(rows) == expected_written
    for sid, r in rows.items():
        e = build_fx.expect[sid]
        assert r["_split"] == e.split and r["source"] == e.source
        assert r["caption"] == e.caption and r["caption_origin"] == e.caption_origin
        assert r["ir_caption"] == e.ir_caption and r["class_name"] == e.class_name
        assert r["ir_caption_status"] == e.ir_status
        # the release's flags travel with the row, under their official names
        for name in RELEASE_FIELDS:
            want = e.record["translation"]["output_key"] if name == "translation_output_key" else e.record[name]
            assert r[name] == want, (sid, name)
        assert r["normalized_caption_key"] == internal_record(e.record, e.caption, None)["normalized_caption_key"]
        if e.rgb_path.suffix == ".tif":  # TIFF input -> lossless PNG
            assert r["rgb"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
            assert np.array_equal(decoded(r["rgb"]["bytes"]), decoded(e.rgb_path))
        else:  # JPEG bytes stored exactly as in the source tree
            assert r["rgb"]["bytes"] == e.rgb_path.read_bytes()
        assert r["ir"]["bytes"] == e.ir_path.read_bytes()  # JPEG and PNG IR kept as they are
    for cfg in CONFIGS_BY_NAME.values():
        if cfg.name == "default":
            continue
        got = _load_raw(out, cfg.name)
        want = {s for s in expected_written if cfg.includes(build_fx.expect[s].source, build_fx.expect[s].group)}
        assert set(got) == want, cfg.name
        assert all(got[s]["caption"] == rows[s]["caption"] and got[s]["ir"] == rows[s]["ir"] for s in got)


def test_report_accounts_for_every_record(build_fx, built):
    out, report = built
    on_disk = json.loads((out / "build_report.json").read_text())
    assert on_disk == report
    assert report["index_records"] == len(build_fx.records) and report["accounted"] is True
    listed = {s for b in report["dropped"]["by_reason"].values() for s in b["sample_ids"]}
    # the only row not written is the one the release itself marks unusable
    assert listed == set(build_fx.dropped) == {"nwpu-0001"}
    assert report["dropped"]["by_reason"]["no_usable_caption"]["count"] == 1
    assert report["dropped"]["expected_by_release"] == 1
    assert report["written"]["total"] == len(build_fx.records) - 1
    assert report["written"]["by_source_split_group"]["NWPU"]["train"] == {"iraware": 1, "base": 1}
    assert report["written"]["by_source_split_group"]["SkyScript"]["train"] == {"iraware": 2, "base": 1}
    assert all(report["written"]["by_source_split_group"][s][sp]["iraware"] == 0
               for s in SOURCES for sp in ("validation", "test"))  # rc4: IR-aware is train only
    caps = report["captions"]
    assert caps["policy"] == "rc4" and caps["iraware_policy"] == "rc4"
    assert caps["class_name_fallback"]["count"] == 0  # the release has no fallback
    assert all(v["count"] == 0 for v in caps["rules"].values())  # nor the paper's cleaning rules
    assert caps["iraware_status"] == {"accepted_strict_v3": 6, "not_used_removed_strict_v2": 1,
                                      "removed_strict_v2": 1}
    assert caps["iraware_rejected_to_base"] == 0
    # DiffV2IR writes 512 px for 224/256 px sources: kept and recorded, never dropped
    assert report["size_differs_same_aspect"]["count"] == len(build_fx.records) - 1
    assert report["release"]["release"] is None and "not a known release" in report["release"]["note"]
    assert report["release"]["rows"] == len(build_fx.records)
    assert report["rc4_comparison"]["matches"] is False  # a toy index is not rc4, and the report says so


def test_paper_and_strict_policies_are_opt_in(build_fx, tmp_path):
    """The paper's §3.4 cleaning and our stricter IR rules run only when asked, counted either way."""
    out = tmp_path / "paper"
    report = build(_opts(build_fx, out, caption_policy="paper", iraware_policy="strict"))
    assert {s for b in report["dropped"]["by_reason"].values() for s in b["sample_ids"]} == \
        set(build_fx.paper_dropped) == {"rs5m-0004"}
    caps = report["captions"]
    assert caps["class_name_fallback"] == {"count": 2, "examples": ["nwpu-0001", "nwpu-0002"]}
    assert set(caps["rules"]["stock_photo"]["examples"]) == {"nwpu-0002", "rs5m-0004"}
    assert caps["rules"]["ir_material"]["examples"] == ["skyscript-0001"]
    assert caps["iraware_rejected_to_base"] == 1
    rows = _load_raw(out, "default")
    for sid, r in rows.items():
        e = build_fx.expect[sid]
        assert (r["caption"], r["caption_origin"]) == (e.paper_caption, e.paper_origin), sid
        assert r["ir_caption"] == e.strict_ir_caption, sid


def test_internal_variant_and_all_captions(build_fx, tmp_path):
    """Internal index carries its own captions; --caption-choice all fills all_captions."""
    out = tmp_path / "internal"
    report = build(_opts(build_fx, out, index=str(build_fx.index_internal), captions=[]))
    assert report["dropped"]["by_reason"]["no_usable_caption"]["sample_ids"] == ["nwpu-0001"]
    rows = _load_raw(out, "default")
    assert set(rows) == set(build_fx.expect) - {"nwpu-0001"}
    assert all(rows[s]["caption"] == build_fx.expect[s].caption for s in rows)
    assert rows["nwpu-0000"]["class_name"] == "airport" and rows["rsicd-0000"]["class_name"] is None

    out2 = tmp_path / "all"
    build(_opts(build_fx, out2, caption_choice="all"))
    rows = _load_raw(out2, "rsicd")
    for sid, r in rows.items():
        assert r["all_captions"] == build_fx.expect[sid].all_captions and len(r["all_captions"]) == 2


def test_missing_mismatched_corrupt_reported_and_strict(build_fx, tmp_path, capsys):
    fx = make_fixture(tmp_path / "src")
    (fx.expect["rsicd-0000"].rgb_path).unlink()
    (fx.expect["rsicd-0001"].ir_path).unlink()
    small = render_scene(np.random.default_rng(5), 64)
    fx.expect["rsitmd-0001"].ir_path.write_bytes(jpeg_bytes(small.ir[:, :48]))  # 48x64: another aspect ratio
    good = fx.expect["skyscript-0001"].rgb_path.read_bytes()
    fx.expect["skyscript-0001"].rgb_path.write_bytes(good[: len(good) // 3])
    fx.expect["nwpu-0003"].ir_path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    report = build(_opts(fx, tmp_path / "out"))
    by = report["dropped"]["by_reason"]
    assert by["missing_rgb"]["sample_ids"] == ["rsicd-0000"]
    assert by["missing_ir"]["sample_ids"] == ["rsicd-0001"]
    assert by["aspect_mismatch"]["sample_ids"] == ["rsitmd-0001"]
    assert "48x64" in by["aspect_mismatch"]["details"][0]["detail"]
    assert by["undecodable_rgb"]["sample_ids"] == ["skyscript-0001"]
    assert by["undecodable_ir"]["sample_ids"] == ["nwpu-0003"]
    assert report["accounted"] and report["dropped"]["total"] == 6  # 5 defects + the release's unusable row
    assert len(_load_raw(tmp_path / "out", "default")) == len(fx.records) - 6

    # --strict: same inputs, exit 1 and a pointer to the report; without it exit 0
    args = _cli_args(fx, tmp_path / "out")
    assert cli.main(args) == 0
    assert cli.main([*args, "--strict"]) == 1
    assert "--strict" in capsys.readouterr().err
    assert cli.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dropped"]["total"] == 6


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(split="dev"), "split"),
    (lambda r: r.update(source_locator="../../etc/passwd"), "source_locator"),
    (lambda r: r["translation"].update(output_key="/abs/ir.jpg"), "translation.output_key"),
])
def test_bad_index_line_is_an_error_naming_line_and_field(build_fx, tmp_path, capsys, mutate, field):
    recs = json.loads(json.dumps(build_fx.records))
    mutate(recs[6])
    index = write_jsonl(tmp_path / "idx.jsonl", recs)
    with pytest.raises(BuildError, match=rf"idx.jsonl line 7: field '{field}'"):
        build(_opts(build_fx, tmp_path / "out", index=str(index)))
    assert not list((tmp_path / "out").glob("data/**/*.parquet"))  # nothing written

    args = _cli_args(build_fx, tmp_path / "out")
    args[args.index("--index") + 1] = str(index)
    assert cli.main(args) == 2
    assert f"line 7: field '{field}'" in capsys.readouterr().err

    # --on-bad-line report: the line is listed and everything else is built; --strict fails
    assert cli.main([*args, "--on-bad-line", "report", "--strict"]) == 1
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["dropped"]["by_reason"]["bad_index_line"]["lines"] == [7]
    assert report["written"]["total"] == len(recs) - 2  # the bad line and the release's unusable row


def test_corrupt_caption_file_is_a_usage_error(build_fx, tmp_path, capsys):
    bad = tmp_path / "caps.parquet"
    bad.write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(BuildError, match=r"caps.parquet: unreadable"):
        build(_opts(build_fx, tmp_path / "out", captions=[(None, str(bad))]))
    args = _cli_args(build_fx, tmp_path / "out")
    assert cli.main([*args, str(bad)]) == 2  # appended to --captions
    assert "caps.parquet: unreadable" in capsys.readouterr().err


def test_duplicate_sample_id_rejected(build_fx, tmp_path):
    recs = [*build_fx.records, build_fx.records[0]]
    index = write_jsonl(tmp_path / "dup.jsonl", recs)
    with pytest.raises(BuildError, match=rf"line {len(recs)}: field 'sample_id': duplicate .* \(first on line 1\)"):
        build(_opts(build_fx, tmp_path / "out", index=str(index)))


def test_killed_build_resumes_to_identical_bytes(build_fx, built, tmp_path):
    """A build hard-killed after 3 shards, then re-run, equals the uninterrupted 2-worker build."""
    ref, ref_report = built
    out = tmp_path / "crash"
    env = {**os.environ, CRASH_ENV: "3"}
    cmd = [sys.executable, "-m", "fusionrs_hf.cli", *_cli_args(build_fx, out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr
    partial = list(out.glob("data/**/*.parquet"))
    assert 0 < len(partial) < ref_report["shards"]["written"]
    assert not list(out.glob("data/**/.*tmp*"))  # no half-written files under any name

    env.pop(CRASH_ENV)
    proc = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["shards"]["skipped_unchanged"] == 3
    assert _files(out) == _files(ref)  # shards and card byte-identical


def test_resume_after_exception_and_incremental_rebuild(build_fx, built, tmp_path):
    ref, _ = built
    out = tmp_path / "resume"
    seen: list[str] = []

    def boom(res):
        seen.append(res["shard"])
        if len(seen) == 4:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        build(_opts(build_fx, out), on_shard_done=boom)
    report = build(_opts(build_fx, out))
    assert report["shards"]["skipped_unchanged"] == 4
    assert _files(out) == _files(ref)

    # nothing changed: everything skipped, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("data/**/*.parquet")}
    report = build(_opts(build_fx, out))
    assert report["shards"]["skipped_unchanged"] == report["shards"]["planned"]
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.glob("data/**/*.parquet")}

    # a fixed file rewrites only its shard (membership stays index-defined)
    fx = make_fixture(tmp_path / "src2")
    fx.expect["rsicd-0001"].ir_path.unlink()
    out2 = tmp_path / "fix"
    first = build(_opts(fx, out2))
    assert first["dropped"]["by_reason"]["missing_ir"]["sample_ids"] == ["rsicd-0001"]
    fx.expect["rsicd-0001"].ir_path.write_bytes(build_fx.expect["rsicd-0001"].ir_path.read_bytes())
    second = build(_opts(fx, out2))
    assert second["shards"]["written"] == 1 and "missing_ir" not in second["dropped"]["by_reason"]


def test_changed_plan_needs_overwrite(build_fx, built, tmp_path):
    """Shards of this batch that a new plan would not write are never silently left behind."""
    ref, _ = built
    out = tmp_path / "replan"
    shutil.copytree(ref, out)
    index = write_jsonl(tmp_path / "no_rsicd.jsonl", [r for r in build_fx.records if r["source_dataset"] != "RSICD"])
    from fusionrs_hf.layout import unfinished_build

    assert unfinished_build(out) is None
    with pytest.raises(BuildError, match=r"data/rsicd/.*--overwrite"):  # and shards of new names planned
        build(_opts(build_fx, out, index=str(index), rows_per_shard=1))
    # refused before it wrote anything: the folder is still the finished build push and card take (the new
    # plan, of fewer shards than are done, was put back; push and card refused the folder as interrupted)
    assert unfinished_build(out) is None and not (out / ".fusionrs-build" / "plan.prev").exists()
    report = build(_opts(build_fx, out, index=str(index), overwrite=True))
    assert report["shards"]["skipped_unchanged"] == report["shards"]["planned"]  # the rest is untouched
    assert not list(out.glob("data/rsicd/**/*.parquet"))
    assert "rsicd" not in get_dataset_config_names(str(out))
    assert set(_load_raw(out, "default")) == {s for s in _load_raw(ref, "default") if not s.startswith("rsicd")}


def test_from_folder_and_listing(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "mine"
    caps = {}
    for i in range(3):
        sc = render_scene(rng, 64)
        (folder / "rgb" / "a").mkdir(parents=True, exist_ok=True)
        (folder / "ir" / "a").mkdir(parents=True, exist_ok=True)
        (folder / "rgb" / "a" / f"t{i}.jpg").write_bytes(jpeg_bytes(sc.rgb))
        (folder / "ir" / "a" / f"t{i}.jpg").write_bytes(jpeg_bytes(sc.ir))
        caps[f"user-skyscript-a-t{i}"] = f"A field with {i + 2} large farm buildings and a road."
        (folder / "rgb" / "a" / f"t{i}.txt").write_text(caps[f"user-skyscript-a-t{i}"] + "\n")
    (folder / "rgb" / "a" / "t0.ir.txt").write_text("Farm buildings appear as bright blocks.")
    out = tmp_path / "out"
    args = ["build", "--from-folder", str(folder), "--source", "SkyScript", "--out", str(out), "--quiet",
            "--rows-per-shard", "2", "--workers", "1"]
    assert cli.main(args) == 0
    rows = _load_raw(out, "skyscript")
    assert {s: r["caption"] for s, r in rows.items()} == caps
    assert rows["user-skyscript-a-t0"]["ir_caption"] == "Farm buildings appear as bright blocks."
    assert rows["user-skyscript-a-t0"]["rgb"]["bytes"] == (folder / "rgb" / "a" / "t0.jpg").read_bytes()
    assert set(_load_raw(out, "iraware")) == {"user-skyscript-a-t0"}

    listing = folder / "list.csv"
    listing.write_text("rgb,ir,caption,split,sample_id\n"
                       "rgb/a/t1.jpg,ir/a/t1.jpg,Two buildings near a road in farmland.,test,mine-1\n"
                       "rgb/a/t2.jpg,ir/a/missing.jpg,Three buildings near a road in farmland.,val,mine-2\n")
    out2 = tmp_path / "out2"
    assert cli.main(["build", "--from-folder", str(listing), "--source", "RS5M", "--out", str(out2), "--quiet",
                     "--workers", "1", "--strict"]) == 1
    report = json.loads((out2 / "build_report.json").read_text())
    assert report["dropped"]["by_reason"]["missing_ir"]["sample_ids"] == ["mine-2"]
    assert list(_load_raw(out2, "rs5m")) == ["mine-1"]
    assert cli.main(["build", "--from-folder", str(folder), "--out", str(out2)]) == 2  # --source required


def test_class_name_hints_only_where_the_release_allows_a_class():
    """The release's record schema: ``class_name`` is null unless the source is NWPU. A caption table's class
    column is taken for NWPU (and a repo's own sources), never for RSICD, RS5M, SkyScript or RSITMD."""
    from fusionrs_hf.build.plan import _class_name
    from fusionrs_hf.index import IndexRecord, Translation

    def rec(source, locator):
        return IndexRecord(sample_id="x", source=source, source_record_id="x", source_locator=locator,
                           rights_code="r", split="train", joint_group_id="joint-group:" + "0" * 24,
                           translation=Translation("DiffV2IR", f"{source}/x.png"))

    assert _class_name(rec("RSICD", "airport_1.jpg"), "airport") is None
    assert _class_name(rec("RS5M", "a/b.jpg"), "beach") is None
    assert _class_name(rec("NWPU", "airport/airport_001.jpg"), None) == "airport"
    assert _class_name(rec("NWPU", "airport/airport_001.jpg"), "harbor") == "harbor"
    assert _class_name(rec("MyOwn", "a/b.jpg"), "field") == "field"


@pytest.mark.parametrize("link", ["data", "state", "below"])
def test_a_build_never_writes_through_a_symlink_out_of_out(build_fx, tmp_path, link):
    """``OUT/data``, ``OUT/.fusionrs-build`` or a folder below data/ being a symlink to another folder made the
    build write its shards (or its plan, caption store and lock) there; it is refused in one line, and nothing
    lands outside."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out.mkdir()
    (out / STATE_DIR).mkdir()
    if link == "data":
        (out / "data").symlink_to(elsewhere)
    elif link == "state":
        (out / STATE_DIR).rmdir()
        (out / STATE_DIR).symlink_to(elsewhere)
    else:
        (out / "data").mkdir()
        (out / "data" / "nwpu").symlink_to(elsewhere)
    from fusionrs_hf.safepath import NotAFileError

    with pytest.raises((BuildError, NotAFileError), match=r"symlink"):  # both: one line, exit 2
        build(_opts(build_fx, out, workers=1))
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("case", ["out_is_a_file", "batch", "workers", "empty_index"])
def test_unusable_build_options_are_one_line_exit_2_and_write_nothing(build_fx, tmp_path, capsys, case):
    """Each exited 1 with a bare FileExistsError / ValueError, or (an empty index) 0 with an empty out folder."""
    out = tmp_path / "out"
    args = _cli_args(build_fx, out)
    if case == "out_is_a_file":
        out.write_text("x")
        want = "a file, not a folder"
    elif case == "batch":
        args += ["--batch", "../x"]
        want = "--batch '../x': a batch tag must match"
    elif case == "workers":
        args += ["--workers", "0"]
        want = "--workers 0: must be at least 1"
    else:
        empty = tmp_path / "empty.jsonl"
        empty.write_text("\n\n")
        args[args.index("--index") + 1] = str(empty)
        want = "no records"
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and want in err[0], err
    assert not out.is_dir()  # nothing written
