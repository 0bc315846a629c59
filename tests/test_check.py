"""`fusionrs check`: a clean generated repo passes; each planted defect is named (kind + sample_id), exit 1."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from fusionrs_hf import check as check_mod
from fusionrs_hf.card import write_card
from fusionrs_hf.check import (
    IR_SPREAD_THRESHOLD,
    CheckTargetError,
    check_repo,
    inspect_image,
    normalize_caption,
    resolve_target,
)
from fusionrs_hf.cli import main as cli_main
from fusionrs_hf.demo import make_sample_repo
from fusionrs_hf.phash import bands, dct2, hamming, near_pairs, phash
from fusionrs_hf.scenes import jpeg_bytes, render_scene
from fusionrs_hf.shards import rows_to_table, write_table

COUNTS = {"train": 6, "validation": 3, "test": 3}


# ----------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def check_clean_repo(tmp_path_factory) -> Path:
    """The clean generated repo every defect test starts from (read-only; tests copy it)."""
    return make_sample_repo(tmp_path_factory.mktemp("check") / "clean", counts=COUNTS, size=64)


@pytest.fixture
def repo(check_clean_repo, tmp_path) -> Path:
    return Path(shutil.copytree(check_clean_repo, tmp_path / "repo"))


def _shards(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


def _locate(root: Path, split: str, group: str | None = None, source: str = "rs5m") -> tuple[Path, int, dict]:
    """First row of a shard of (source, split[, group]): (shard path, row index, row dict)."""
    for p in _shards(root):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(f"data/{source}/{split}/") and (group is None or p.name.startswith(group + "-")):
            return p, 0, pq.read_table(p).to_pylist()[0]
    raise AssertionError(f"no shard for {source}/{split}/{group}")


def _edit(path: Path, row: int, **changes) -> None:
    """Rewrite one shard with one row changed, then re-render the card (so only the planted defect
    remains: new bytes change the card's num_bytes). An image change recomputes its SHA-256 column."""
    rows = pq.read_table(path).to_pylist()
    for key, val in changes.items():
        if key in ("rgb", "ir"):
            rows[row][key] = {"bytes": val, "path": rows[row][key]["path"]}
            rows[row][f"{key}_sha256"] = None
        else:
            rows[row][key] = val
    _write(rows, path)


def _write(rows: list[dict], path: Path) -> None:
    write_table(rows_to_table(rows, where=str(path)), path)
    root = next(p for p in path.parents if (p / "README.md").exists())
    write_card(root, sample=True, repo_id=str(root))


def _find(report, kind: str, sample_id: str | None = None) -> list:
    return [f for f in report.findings if f.kind == kind and (sample_id is None or f.sample_id == sample_id)]


def _kinds(report) -> set[str]:
    return {f.kind for f in report.findings}


def _rewrite_card(root: Path, mutate) -> None:
    text = (root / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    data = yaml.safe_load(header)
    mutate(data)
    (root / "README.md").write_text("---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n" + body,
                                    encoding="utf-8")


# ----------------------------------------------------------------------------------------- clean repo


def test_clean_repo_passes_full_and_fast(check_clean_repo):
    full = check_repo(str(check_clean_repo), workers=1)
    assert full.ok, [f"{f.kind} {f.location()} {f.message}" for f in full.findings]
    assert full.mode == "full" and full.stats["rows"] == 5 * sum(COUNTS.values())
    assert full.stats["images_decoded"] == 2 * full.stats["rows"]
    fast = check_repo(str(check_clean_repo), fast=True, workers=2)
    assert fast.ok and fast.mode == "fast" and fast.stats["images_decoded"] == 0
    assert fast.stats["rows"] == full.stats["rows"]
    d = full.to_dict()
    assert d["ok"] is True and d["findings"] == [] and d["stats"]["shards"] == len(_shards(check_clean_repo))


def test_process_pool_gives_same_result(check_clean_repo, tmp_path):
    repo = Path(shutil.copytree(check_clean_repo, tmp_path / "r"))
    train, _, trow = _locate(repo, "train", "iraware")
    test, _, _ = _locate(repo, "test")
    _edit(test, 1, rgb=trow["rgb"]["bytes"])
    inline = check_repo(str(repo), workers=1)
    pooled = check_repo(str(repo), workers=2)
    assert pooled.stats["executor"] == "processes"
    assert [f.__dict__ for f in pooled.findings] == [f.__dict__ for f in inline.findings]
    assert _find(pooled, "leak_identical_bytes")


# ----------------------------------------------------------------------------------------- planted defects


def test_truncated_jpeg(repo):
    path, row, r = _locate(repo, "train", "base")
    _edit(path, row, rgb=r["rgb"]["bytes"][: len(r["rgb"]["bytes"]) // 2])
    rep = check_repo(str(repo), workers=1)
    hits = _find(rep, "undecodable_image", r["sample_id"])
    assert hits and "rgb" in hits[0].message and hits[0].row == row
    assert hits[0].shard == path.relative_to(repo).as_posix() and hits[0].split == "train"
    assert _kinds(rep) == {"undecodable_image"}


def test_ir_of_another_aspect_ratio(repo):
    path, row, r = _locate(repo, "validation")
    ir = Image.open(io.BytesIO(r["ir"]["bytes"])).resize((48, 40))
    _edit(path, row, ir=jpeg_bytes(np.asarray(ir), 90))
    rep = check_repo(str(repo), workers=1)
    hits = _find(rep, "aspect_mismatch", r["sample_id"])
    assert hits and "64x64" in hits[0].message and "48x40" in hits[0].message
    assert _kinds(rep) == {"aspect_mismatch"}
    # one picture at two sizes (a 64 px source, its 128 px DiffV2IR output) is a valid pair
    _edit(path, row, ir=jpeg_bytes(np.asarray(ir.resize((128, 128))), 90))
    assert check_repo(str(repo), workers=1).ok


def test_ir_of_diffv2ir_size_for_a_non_square_rgb(repo):
    """DiffV2IR rounds both sides to multiples of 64 and centre-crops: a 100x70 RGB becomes a 512x384 IR
    (aspect 1.33 against 1.43). The release keeps such pairs; any other size of another aspect is a defect."""
    from fusionrs_hf.pairing import diffv2ir_size, same_aspect

    assert diffv2ir_size((100, 70)) == (512, 384) and not same_aspect((100, 70), (512, 384))
    assert diffv2ir_size((256, 256)) == (512, 512) and diffv2ir_size((1920, 1080)) == (512, 320)
    path, row, r = _locate(repo, "validation")
    rgb = Image.open(io.BytesIO(r["rgb"]["bytes"])).resize((100, 70))
    ir = Image.open(io.BytesIO(r["ir"]["bytes"]))
    _edit(path, row, rgb=jpeg_bytes(np.asarray(rgb), 90), ir=jpeg_bytes(np.asarray(ir.resize((512, 384))), 90))
    assert check_repo(str(repo), workers=1).ok
    _edit(path, row, ir=jpeg_bytes(np.asarray(ir.resize((512, 448))), 90))
    rep = check_repo(str(repo), workers=1)
    hits = _find(rep, "aspect_mismatch", r["sample_id"])
    assert hits and "512x448" in hits[0].message and "DiffV2IR's 512x384" in hits[0].message


def test_colourful_image_in_ir_column(repo):
    path, row, r = _locate(repo, "test", source="nwpu")
    other = render_scene(np.random.default_rng(123), 64, "farmland").rgb
    _edit(path, row, ir=jpeg_bytes(other, 90))
    rep = check_repo(str(repo), workers=1)
    assert _find(rep, "ir_not_infrared", r["sample_id"])
    assert _kinds(rep) == {"ir_not_infrared"}


def test_same_rgb_bytes_in_train_and_test(repo):
    _, _, trow = _locate(repo, "train", "base", source="skyscript")
    path, row, r = _locate(repo, "test", source="rsicd")
    _edit(path, row, rgb=trow["rgb"]["bytes"])
    rep = check_repo(str(repo), workers=1)
    hits = _find(rep, "leak_identical_bytes", r["sample_id"])
    assert len(hits) == 1 and hits[0].split == "test" and trow["sample_id"] in hits[0].message
    assert not _find(rep, "leak_near_duplicate")  # reported once, as the stronger kind
    assert _kinds(rep) == {"leak_identical_bytes"}


def test_near_duplicate_reencoded_in_validation_and_train(repo):
    _, _, trow = _locate(repo, "train", "iraware", source="rsitmd")
    path, row, r = _locate(repo, "validation", source="rsitmd")
    arr = np.asarray(Image.open(io.BytesIO(trow["rgb"]["bytes"])).convert("RGB"))
    reencoded = jpeg_bytes(arr, 55)
    assert reencoded != trow["rgb"]["bytes"]
    _edit(path, row, rgb=reencoded)
    rep = check_repo(str(repo), workers=1)
    hits = _find(rep, "leak_near_duplicate", r["sample_id"])
    assert len(hits) == 1 and hits[0].split == "validation" and trow["sample_id"] in hits[0].message
    assert "rgb" in hits[0].message
    assert _kinds(rep) == {"leak_near_duplicate"}


def test_same_caption_modulo_case_and_punctuation(repo):
    _, _, trow = _locate(repo, "train", "base", source="nwpu")
    path, row, r = _locate(repo, "test", source="rs5m")
    variant = "  " + trow["caption"].upper().replace(" ", " ,  ").rstrip(".") + "!!"
    assert variant != trow["caption"]
    _edit(path, row, caption=variant)
    rep = check_repo(str(repo), workers=1)
    hits = _find(rep, "leak_caption", r["sample_id"])
    assert len(hits) == 1 and trow["sample_id"] in hits[0].message
    assert _kinds(rep) == {"leak_caption"}


def test_duplicate_sample_id(repo):
    _, _, trow = _locate(repo, "train", "base", source="rs5m")
    path, row, r = _locate(repo, "test", source="skyscript")
    _edit(path, row, sample_id=trow["sample_id"])
    for fast in (True, False):
        rep = check_repo(str(repo), fast=fast, workers=1)
        hits = _find(rep, "duplicate_sample_id", trow["sample_id"])
        assert len(hits) == 1 and hits[0].shard == path.relative_to(repo).as_posix(), rep.findings
        assert _kinds(rep) == {"duplicate_sample_id"}


def test_shard_missing_from_the_card(repo):
    # The card's rsicd config loses its validation entry: those shards are then in no split of it.
    def drop(data):
        cfg = next(c for c in data["configs"] if c["config_name"] == "rsicd")
        cfg["data_files"] = [d for d in cfg["data_files"] if d["split"] != "validation"]

    _rewrite_card(repo, drop)
    want = sorted(p.relative_to(repo).as_posix() for p in (repo / "data/rsicd/validation").glob("*.parquet"))
    rep = check_repo(str(repo), fast=True, workers=1)
    assert sorted(f.shard for f in _find(rep, "orphan_shard")) == want and want
    assert {(f.config, f.split) for f in rep.findings} == {("rsicd", "validation")}
    assert _kinds(rep) == {"orphan_shard"}


def test_shard_added_after_the_card_was_written(repo):
    # A well-named new shard falls under the card's globs, but dataset_info does not count it.
    _, _, r = _locate(repo, "train", "iraware", source="rsicd")
    scene = render_scene(np.random.default_rng(7), 64)
    new = dict(r, sample_id="rsicd-tra-99999", caption="A brand new caption.", ir_caption="An IR caption.",
               joint_group_id="joint-group:" + "ab" * 12, rgb=jpeg_bytes(scene.rgb, 80), ir=jpeg_bytes(scene.ir, 80),
               rgb_sha256=None, ir_sha256=None)
    write_table(rows_to_table([new]), repo / "data/rsicd/train/iraware-new-00000.parquet")
    rep = check_repo(str(repo), workers=1)
    assert {(f.config, f.split) for f in _find(rep, "count_mismatch")} == {
        ("default", "train"), ("iraware", "train"), ("rsicd", "train")}
    assert _kinds(rep) == {"count_mismatch", "bytes_mismatch"}


def test_non_shard_parquet_is_orphan(repo):
    path, _, _ = _locate(repo, "train")
    shutil.copy(path, repo / "data" / "rs5m" / "extra.parquet")
    rep = check_repo(str(repo), fast=True, workers=1)
    assert [f.shard for f in _find(rep, "orphan_shard")] == ["data/rs5m/extra.parquet"]


def test_card_counts_off_by_one(repo):
    def bump(data):
        info = next(i for i in data["dataset_info"] if i["config_name"] == "iraware")
        split = next(s for s in info["splits"] if s["name"] == "train")  # rc4: its only split
        split["num_examples"] += 1

    _rewrite_card(repo, bump)
    rep = check_repo(str(repo), fast=True, workers=1)
    hits = _find(rep, "count_mismatch")
    assert [(f.config, f.split) for f in hits] == [("iraware", "train")]
    assert _kinds(rep) == {"count_mismatch"}


def test_card_bytes_and_missing_pattern(repo):
    def edit(data):
        info = next(i for i in data["dataset_info"] if i["config_name"] == "rs5m")
        info["splits"][0]["num_bytes"] -= 7
        cfg = next(c for c in data["configs"] if c["config_name"] == "nwpu")
        cfg["data_files"][0]["path"] = "data/nwpu/train/typo-*.parquet"

    _rewrite_card(repo, edit)
    rep = check_repo(str(repo), fast=True, workers=1)
    assert [(f.config, f.split) for f in _find(rep, "bytes_mismatch")] == [("rs5m", "train")]
    assert [(f.config, f.split) for f in _find(rep, "missing_file")] == [("nwpu", "train")]
    assert {f.config for f in _find(rep, "orphan_shard")} == {"nwpu"}


def test_iraware_row_without_ir_caption_and_base_with_one(repo):
    ira, irow, r1 = _locate(repo, "train", "iraware", source="skyscript")
    base, brow, r2 = _locate(repo, "train", "base", source="rsitmd")
    _edit(ira, irow, ir_caption=None)
    _edit(base, brow, ir_caption="An infrared image of a forest.")
    rep = check_repo(str(repo), fast=True, workers=1)
    assert _find(rep, "iraware_missing_ir_caption", r1["sample_id"])
    assert _find(rep, "base_has_ir_caption", r2["sample_id"])
    assert _kinds(rep) == {"iraware_missing_ir_caption", "base_has_ir_caption"}


def test_bad_sha_and_joint_group_spanning_splits(repo):
    _, _, trow = _locate(repo, "train", source="nwpu")
    path, row, r = _locate(repo, "test", source="nwpu")
    rows = pq.read_table(path).to_pylist()
    rows[row]["joint_group_id"] = trow["joint_group_id"]
    rows[row]["ir_sha256"] = "XYZ"
    rows[row + 1]["rgb_sha256"] = "0" * 64
    _write(rows, path)
    fast = check_repo(str(repo), fast=True, workers=1)
    assert _find(fast, "joint_group_spans_splits", r["sample_id"])
    assert _find(fast, "bad_sha256", r["sample_id"])
    assert _kinds(fast) == {"joint_group_spans_splits", "bad_sha256"}  # fast cannot see a wrong (well-formed) hash
    full = check_repo(str(repo), workers=1)
    assert _find(full, "sha256_mismatch", rows[row + 1]["sample_id"])


def test_truncated_parquet_is_a_finding_not_a_traceback(repo, capsys):
    path, _, _ = _locate(repo, "train", "base", source="rsicd")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    rel = path.relative_to(repo).as_posix()
    for fast in (True, False):
        rep = check_repo(str(repo), fast=fast, workers=1)
        hits = _find(rep, "unreadable_shard")
        assert [f.shard for f in hits] == [rel] and "cannot read parquet" in hits[0].message
        assert _kinds(rep) == {"unreadable_shard"}  # counts of the configs holding it are not guessed
    assert cli_main(["check", str(repo), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "unreadable_shard" in out and rel in out and "Traceback" not in out + err


def test_schema_mismatch(repo):
    path, _, _ = _locate(repo, "test", source="rsitmd")
    t = pq.read_table(path)
    pq.write_table(t.drop_columns(["rights_code"]), path)
    rep = check_repo(str(repo), fast=True, workers=1)
    hits = _find(rep, "schema_mismatch")
    assert hits and all(f.shard == path.relative_to(repo).as_posix() for f in hits)
    assert any("rights_code" in f.message for f in hits)
    t = pq.read_table(path)  # a mistyped column: reported, and the other columns are still checked
    pq.write_table(t.set_column(t.schema.get_field_index("ir_caption"), "ir_caption",
                                pa.array([7] * t.num_rows)), path)
    rep = check_repo(str(repo), workers=1)
    assert any("'ir_caption' has type int64" in f.message for f in _find(rep, "schema_mismatch"))
    assert not _find(rep, "unreadable_shard") and rep.stats["images_decoded"] == 2 * rep.stats["rows"]


# ----------------------------------------------------------------------------------------- targets and CLI


def test_cli_exit_codes_and_json(check_clean_repo, repo, capsys, tmp_path):
    assert cli_main(["check", str(check_clean_repo), "--quiet"]) == 0
    assert "OK: no findings" in capsys.readouterr().out
    assert cli_main(["check", str(check_clean_repo), "--fast", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is True and rep["mode"] == "fast"

    path, row, r = _locate(repo, "train", "iraware")
    _edit(path, row, ir_caption=" ")
    assert cli_main(["check", str(repo), "--json", "--workers", "1"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] is False and rep["counts_by_kind"] == {"iraware_missing_ir_caption": 1}
    f = rep["findings"][0]
    assert (f["sample_id"], f["config"], f["split"], f["row"]) == (r["sample_id"], "rs5m", "train", row)

    assert cli_main(["check", str(tmp_path / "nope")]) == 2
    assert "error" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["check", str(tmp_path / "empty")]) == 2
    assert cli_main(["check", str(check_clean_repo), "--revision", "main"]) == 2
    assert cli_main(["check", str(check_clean_repo), "--workers", "0"]) == 2


def test_file_url_and_memory_filesystem_targets(check_clean_repo):
    rep = check_repo(f"file://{check_clean_repo}", workers=2)
    assert rep.ok and rep.stats["rows"] == 60
    mem = fsspec.filesystem("memory")
    try:
        mem.put(str(check_clean_repo), "/ckrepo", recursive=True)
        p = next(p for p in mem.find("/ckrepo/data") if "/rs5m/test/" in p)
        with mem.open(p, "rb") as fh:
            t = pq.read_table(fh)
        buf = io.BytesIO()
        pq.write_table(t.set_column(0, "sample_id", pa.array(t.column("sample_id").to_pylist()[:1] * t.num_rows)), buf)
        mem.pipe_file(p, buf.getvalue())
        rep = check_repo("memory://ckrepo", workers=2)
        assert rep.stats["executor"] == "inline" and rep.stats["rows"] == 60  # other processes cannot see it
        dups = _find(rep, "duplicate_sample_id")
        assert len(dups) == 2 and {f.shard for f in dups} == {p.removeprefix("/ckrepo/")}
    finally:
        mem.rm("/ckrepo", recursive=True)


def test_hub_target_resolution():
    assert resolve_target("user/fusionrs") == "hf://datasets/user/fusionrs"
    assert resolve_target("user/fusionrs", "v1.0") == "hf://datasets/user/fusionrs@v1.0"
    assert resolve_target("user/fusionrs", "refs/pr/3") == "hf://datasets/user/fusionrs@refs%2Fpr%2F3"
    assert resolve_target("hf://datasets/user/fusionrs", "dev") == "hf://datasets/user/fusionrs@dev"
    assert resolve_target("hf://datasets/u/n/sub", "dev") == "hf://datasets/u/n@dev/sub"
    assert resolve_target("hf://datasets/u/n@main") == "hf://datasets/u/n@main"
    with pytest.raises(CheckTargetError):
        resolve_target("hf://datasets/u/n@main", "dev")
    with pytest.raises(CheckTargetError):
        resolve_target("./some/local/dir/that/is/not/a/hub/id", "dev")


def test_hub_url_reads_through_hffilesystem(monkeypatch, check_clean_repo):
    """The hf:// path shape: the storage layer's hf filesystem -> resolve_path().unresolve() root -> list/read,
    offline (the Hub's quick reachability question is recorded instead of asked)."""
    from fsspec.implementations.local import LocalFileSystem

    from fusionrs_hf import storage

    class FakeResolved:
        def __init__(self, path):
            self.path = path

        def unresolve(self):
            return str(check_clean_repo) if self.path.startswith("datasets/") else self.path

    class FakeHfFs(LocalFileSystem):
        protocol = ("hf",)

        def resolve_path(self, path):
            return FakeResolved(path)

    seen = {}

    def fake_open_fs(protocol, options):
        seen["protocol"], seen["options"] = protocol, dict(options)
        return FakeHfFs()

    monkeypatch.setattr(storage, "_open_fs", fake_open_fs)
    monkeypatch.setattr(storage, "check_hub", lambda repo_id, **kw: seen.update(asked=(repo_id, kw.get("revision"))))
    rep = check_repo("someone/fusionrs", revision="v2", fast=True, workers=2, storage_options={"token": "x"})
    assert seen["protocol"] == "hf" and seen["options"] == {"token": "x"}
    assert seen["asked"] == ("someone/fusionrs", "v2")
    assert rep.ok and rep.target == "hf://datasets/someone/fusionrs@v2" and rep.stats["rows"] == 60


# ----------------------------------------------------------------------------------------- pieces


def test_dct_matches_the_definition():
    x = np.random.default_rng(0).random((32, 32))
    n = 32
    c = np.array([[math.cos(math.pi * (2 * i + 1) * k / (2 * n)) for i in range(n)] for k in range(n)])
    scale = np.full(n, math.sqrt(2 / n))
    scale[0] = math.sqrt(1 / n)
    ref = (scale[:, None] * c) @ x @ (scale[:, None] * c).T
    assert np.allclose(dct2(x), ref)
    assert np.allclose(np.sum(dct2(x) ** 2), np.sum(x**2))  # orthonormal


def test_phash_is_robust_to_reencoding_and_separates_scenes():
    rng = np.random.default_rng(3)
    scenes = [render_scene(rng, 128) for _ in range(12)]
    hashes = [phash(Image.open(io.BytesIO(jpeg_bytes(s.rgb, 90)))) for s in scenes]
    again = [phash(Image.open(io.BytesIO(jpeg_bytes(s.rgb, 50)))) for s in scenes]
    assert all(hamming(a, b) <= 4 for a, b in zip(hashes, again, strict=True))
    assert all(hamming(hashes[i], hashes[j]) > 4 for i in range(12) for j in range(i + 1, 12))
    assert all(0 <= h < 2**64 for h in hashes)


def test_near_pairs_equals_brute_force():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    flips = [np.uint64(1) << np.uint64(int(b)) for b in rng.integers(0, 64, 600)]
    near = base[:150].copy()
    for k in range(150):  # 0..6 random bit flips of an existing hash
        for f in flips[4 * k: 4 * k + int(rng.integers(0, 7)) % 5 + (k % 3)]:
            near[k] ^= f
    cluster = rng.integers(0, 2**9, 120, dtype=np.uint64)  # one band bucket larger than the window
    h = np.concatenate([base, near, base[:5], cluster])
    groups = rng.integers(0, 3, h.size)
    i, j, d = near_pairs(h, 4, groups)
    got = set(zip(i.tolist(), j.tolist(), strict=True))
    want = {(a, b) for a in range(h.size) for b in range(a + 1, h.size)
            if groups[a] != groups[b] and hamming(h[a], h[b]) <= 4}
    assert got == want and len(want) > 20
    assert all(hamming(h[a], h[b]) == dd for a, b, dd in zip(i, j, d, strict=True))
    assert sum(w for _, w in bands(4)) == 64 and len(bands(4)) == 5


def test_normalize_caption():
    assert normalize_caption("  An AERIAL view, of a Forest!! ") == "an aerial view of a forest"
    assert normalize_caption("river,road") == normalize_caption("River, road.")
    assert normalize_caption("ﬁelds\u00a0near\ttown") == "fields near town"  # NFKC ligature, nbsp
    assert normalize_caption("Straße") == normalize_caption("STRASSE")  # casefold
    assert normalize_caption("«quoted» — text…") == "quoted text"
    assert check_mod.caption_key("...") is None and check_mod.caption_key("a") is not None


def test_ir_threshold_separates_generated_ir_from_rgb():
    rng = np.random.default_rng(11)
    ir, rgb = [], []
    for size in (64, 256):
        for _ in range(12):
            s = render_scene(rng, size)
            ir.append(inspect_image(jpeg_bytes(s.ir, 90)).spread)
            rgb.append(inspect_image(jpeg_bytes(s.rgb, 90)).spread)
    assert max(ir) < IR_SPREAD_THRESHOLD / 2 and min(rgb) > IR_SPREAD_THRESHOLD * 1.5
    gray = Image.fromarray(np.full((40, 30), 128, np.uint8), "L")
    buf = io.BytesIO()
    gray.save(buf, format="PNG")
    st = inspect_image(buf.getvalue())
    assert st.size == (30, 40) and st.spread == 0.0


def test_two_ir_images_that_changed_places_are_found_by_their_edges(tmp_path):
    """Same sizes, same aspect, infrared-style images and matching SHA-256: only the structure tells that rows
    i and j hold each other's IR. Both rows are named, each with the other; the clean repo has no finding."""
    from fusionrs_hf.check import inspect_image
    from fusionrs_hf.shards import rows_to_table, write_table

    repo = make_sample_repo(tmp_path / "repo", counts={"train": 8, "validation": 2, "test": 2}, size=512, max_rows=8)
    assert not [f for f in check_repo(str(repo)).findings if f.kind == "pair_swapped"]
    shard = sorted((repo / "data" / "rs5m" / "train").glob("*.parquet"))[0]
    rows = pq.read_table(shard).to_pylist()
    edges = [(inspect_image(r["rgb"]["bytes"]).edges, inspect_image(r["ir"]["bytes"]).edges) for r in rows]
    own = [float(a @ b) for a, b in edges]
    i, j = sorted(range(len(rows)), key=lambda k: -own[k])[:2]  # two rows with clear structure
    rows[i]["ir"], rows[j]["ir"] = rows[j]["ir"], rows[i]["ir"]
    rows[i]["ir_sha256"], rows[j]["ir_sha256"] = rows[j]["ir_sha256"], rows[i]["ir_sha256"]
    write_table(rows_to_table(rows), shard)
    write_card(repo)
    rep = check_repo(str(repo))
    assert {f.kind for f in rep.findings} == {"pair_swapped"}, [f.message for f in rep.findings]
    found = {f.row: f for f in rep.findings}
    assert set(found) == {i, j}
    assert f"row {j} (sample_id {rows[j]['sample_id']!r})" in found[i].message
    assert found[j].sample_id == rows[j]["sample_id"]


def test_edge_signatures_correlate_a_scene_with_its_infrared_rendering_only():
    from fusionrs_hf.pairing import edge_signature, swapped_pairs

    rng = np.random.default_rng(0)
    scenes = [render_scene(rng, 64) for _ in range(6)]
    rgb = np.stack([edge_signature(s.rgb) for s in scenes])
    ir = np.stack([edge_signature(s.ir) for s in scenes])  # the scene's own infrared-style rendering
    assert np.allclose(np.linalg.norm(rgb, axis=1), 1, atol=1e-5)
    sim = rgb @ ir.T
    assert (np.diag(sim) > 0.3).all() and (sim.argmax(axis=1) == np.arange(6)).all()
    assert swapped_pairs(rgb, ir) == []
    k = sorted(range(6), key=lambda a: -sim[a, a])[:2]  # two scenes with clear structure trade their IR
    perm = list(range(6))
    perm[k[0]], perm[k[1]] = k[1], k[0]
    assert {(a, b) for a, b, *_ in swapped_pairs(rgb, ir[perm])} == {(k[0], k[1]), (k[1], k[0])}
    flat = np.zeros((64, 64, 3), np.uint8)  # no edges at all: a zero signature matches nothing
    assert not edge_signature(flat).any()
