"""Issue 15: `fusionrs check` promises that no other test pins.

- IR leaks: a train IR image copied (or re-encoded) into a test row is a finding, separately from RGB.
- The IR spread threshold is 16 levels (README: "mean channel spread <= 16 levels"): planted IR images of
  spread 19 / 16 / 13, computed by hand from the pixels written, are flagged / kept / kept.
- The pHash radius is 4: hashes moved by exactly 4 bits are a leak, by 5 (or 6) bits are not. Real pixel
  edits can only move a DCT pHash by an even number of bits (both hashes have 32 ones: the median rule),
  so distance 5 is planted by flipping hash bits deliberately; distances 2, 4 and 6 by moving DCT
  coefficients of a hand-built image (the distance computed with a reference pHash written here).
- `fusionrs check` as a real process exits 1 on leak findings (and 0 on the clean repo).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionrs_hf import check as check_mod
from fusionrs_hf.card import write_card
from fusionrs_hf.check import check_repo
from fusionrs_hf.check import images as check_images
from fusionrs_hf.demo import make_sample_repo
from fusionrs_hf.scenes import jpeg_bytes
from fusionrs_hf.shards import rows_to_table, write_table

COUNTS = {"train": 4, "validation": 2, "test": 2}


@pytest.fixture(scope="module")
def promise_clean(tmp_path_factory) -> Path:
    return make_sample_repo(tmp_path_factory.mktemp("promise_check") / "clean", counts=COUNTS, size=64)


@pytest.fixture
def repo(promise_clean, tmp_path) -> Path:
    return Path(shutil.copytree(promise_clean, tmp_path / "repo"))


def _shards(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


def _locate(root: Path, split: str, source: str, group: str | None = None) -> tuple[Path, dict]:
    for p in _shards(root):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(f"data/{source}/{split}/") and (group is None or p.name.startswith(group + "-")):
            return p, pq.read_table(p).to_pylist()[0]
    raise AssertionError(f"no shard for {source}/{split}/{group}")


def _edit(path: Path, **changes) -> None:
    """Rewrite row 0 of a shard (recomputing the SHA-256 of a changed image) and re-render the card."""
    rows = pq.read_table(path).to_pylist()
    for key, val in changes.items():
        if key in ("rgb", "ir"):
            rows[0][key] = {"bytes": val, "path": rows[0][key]["path"]}
            rows[0][f"{key}_sha256"] = None
        else:
            rows[0][key] = val
    write_table(rows_to_table(rows, where=str(path)), path)
    root = next(p for p in path.parents if (p / "README.md").exists())
    write_card(root, sample=True, repo_id=str(root))


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _kinds(report) -> dict[str, int]:
    return report.counts_by_kind()


# ----------------------------------------------------------------------------------------- IR leaks


def test_train_ir_bytes_copied_into_a_test_row_are_a_leak(repo):
    _, train = _locate(repo, "train", "skyscript", "base")
    path, test = _locate(repo, "test", "rsicd")
    _edit(path, ir=train["ir"]["bytes"])
    rep = check_repo(str(repo), workers=1)
    assert _kinds(rep) == {"leak_identical_bytes": 1}
    (f,) = rep.findings
    assert (f.sample_id, f.split, f.config, f.row) == (test["sample_id"], "test", "rsicd", 0)
    assert f.message.startswith("ir bytes") and train["sample_id"] in f.message and "train" in f.message


def test_train_ir_reencoded_into_a_validation_row_is_a_near_duplicate(repo):
    _, train = _locate(repo, "train", "nwpu", "iraware")
    path, val = _locate(repo, "validation", "rsitmd")
    again = jpeg_bytes(_pixels(train["ir"]["bytes"]), 60)
    assert again != train["ir"]["bytes"]
    _edit(path, ir=again)
    rep = check_repo(str(repo), workers=1)
    assert _kinds(rep) == {"leak_near_duplicate": 1}
    (f,) = rep.findings
    assert (f.sample_id, f.split) == (val["sample_id"], "validation")
    assert f.message.startswith("ir is a near-duplicate") and train["sample_id"] in f.message


def test_an_rgb_reused_as_another_splits_ir_is_a_leak(repo):
    """Identical bytes are compared across both image columns: a train RGB stored as a test IR leaks too."""
    _, train = _locate(repo, "train", "rs5m", "base")
    path, test = _locate(repo, "test", "nwpu")
    _edit(path, ir=train["rgb"]["bytes"])
    rep = check_repo(str(repo), workers=1)
    hits = [f for f in rep.findings if f.kind == "leak_identical_bytes"]
    assert [(f.sample_id, f.message.split(" of ")[0]) for f in hits] == [
        (test["sample_id"], "ir bytes are identical to the rgb")]
    # the colourful RGB in the IR column is also not infrared-style: both are reported
    assert set(_kinds(rep)) == {"leak_identical_bytes", "ir_not_infrared"}


# ----------------------------------------------------------------------------------------- IR spread 16


def _ir_with_spread(ir_jpeg: bytes, spread: int) -> tuple[bytes, float]:
    """The row's IR as gray levels 30..200 with R raised by ``spread``: every pixel's max-min is ``spread``."""
    g = _pixels(ir_jpeg).astype(np.int64).mean(axis=2)
    g = 30 + np.round((g - g.min()) / max(1.0, float(np.ptp(g))) * 170)
    arr = np.stack([g + spread, g, g], axis=2)
    assert arr.max() <= 255 and arr.min() >= 0  # no clipping: the spread is exact
    by_hand = float(np.mean(arr.max(axis=2) - arr.min(axis=2)))
    return _png(arr), by_hand


@pytest.mark.parametrize(("spread", "flagged"), [(19, True), (17, True), (16, False), (13, False), (0, False)])
def test_ir_spread_threshold_is_16_levels(repo, spread, flagged):
    path, row = _locate(repo, "validation", "skyscript")
    data, by_hand = _ir_with_spread(row["ir"]["bytes"], spread)
    assert by_hand == spread
    _edit(path, ir=data)
    rep = check_repo(str(repo), workers=1)
    assert rep.stats["ir_threshold"] == 16.0
    if flagged:
        assert _kinds(rep) == {"ir_not_infrared": 1}
        (f,) = rep.findings
        assert f.sample_id == row["sample_id"] and f"spread {spread}.0 > 16" in f.message
    else:
        assert rep.ok, [(f.kind, f.message) for f in rep.findings]


def test_ir_threshold_option_moves_the_line(repo):
    path, row = _locate(repo, "test", "rs5m")
    data, _ = _ir_with_spread(row["ir"]["bytes"], 13)
    _edit(path, ir=data)
    assert check_repo(str(repo), workers=1).ok
    assert _kinds(check_repo(str(repo), workers=1, ir_threshold=12.5)) == {"ir_not_infrared": 1}


# ----------------------------------------------------------------------------------------- pHash radius 4


def _popcount(x: int) -> int:
    return bin(x).count("1")


def _wrap_phash(monkeypatch, target: np.ndarray, mask: int) -> None:
    """check's pHash, except that the image whose pixels equal ``target`` gets its hash XOR ``mask``."""
    real = check_images.phash

    def fake(img):
        h = real(img)
        a = np.asarray(img.convert("RGB"))
        return h ^ mask if a.shape == target.shape and np.array_equal(a, target) else h

    monkeypatch.setattr(check_images, "phash", fake)


@pytest.mark.parametrize("column", ["rgb", "ir"])
@pytest.mark.parametrize(("bits", "leak"), [(0, True), (3, True), (4, True), (5, False), (6, False)])
def test_phash_radius_is_4_bits(repo, monkeypatch, column, bits, leak):
    """A lossless copy of a train image (one pixel one level off) in a test row, its hash moved by exactly
    ``bits`` bits."""
    _, train = _locate(repo, "train", "rsicd", "base")
    path, test = _locate(repo, "test", "skyscript")
    arr = _pixels(train[column]["bytes"]).copy()
    arr[0, 0, :] = arr[0, 0, :] ^ 1  # one pixel one level off: its own image, the same real pHash
    assert check_mod.phash(Image.fromarray(arr)) == check_mod.phash(Image.open(io.BytesIO(train[column]["bytes"])))
    _edit(path, **{column: _png(arr)})  # other bytes: not an identical-bytes leak
    mask = sum(1 << b for b in (0, 9, 21, 33, 47, 58)[:bits])
    assert _popcount(mask) == bits
    _wrap_phash(monkeypatch, arr, mask)
    rep = check_repo(str(repo), workers=1)  # inline: the wrapped hash is the one used
    if leak:
        assert _kinds(rep) == {"leak_near_duplicate": 1}
        (f,) = rep.findings
        assert f.sample_id == test["sample_id"] and f.message.startswith(f"{column} is a near-duplicate")
        assert f"Hamming distance {bits} <= 4" in f.message
    else:
        assert rep.ok, [(f.kind, f.message) for f in rep.findings]


# A reference pHash written from the definition (the release's phash64, as fusionrs_hf.phash documents it):
# 32x32 grayscale, orthonormal DCT-II, the 8x8 lowest frequencies, one bit per coefficient > the median
# of the 63 after the DC term.

def _dct_basis(n: int = 32) -> np.ndarray:
    c = np.array([[math.cos(math.pi * (2 * i + 1) * k / (2 * n)) for i in range(n)] for k in range(n)])
    scale = np.full(n, math.sqrt(2 / n))
    scale[0] = math.sqrt(1 / n)
    return scale[:, None] * c


def _ref_bits(gray32: np.ndarray) -> np.ndarray:
    d = _dct_basis()
    low = (d @ gray32 @ d.T)[:8, :8].ravel()
    return low > np.median(low[1:])


def _coefficient_image(coeffs: np.ndarray) -> np.ndarray:
    """The 32x32 image whose 8x8 low DCT block is ``coeffs`` (all higher frequencies zero)."""
    d = _dct_basis()
    full = np.zeros((32, 32))
    full[:8, :8] = coeffs.reshape(8, 8)
    return d.T @ full @ d


def _stored(gray32: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A 32x32 gray PNG (the hash's own input size: its resize then changes nothing) and the uint8 array
    it holds."""
    g = np.clip(np.round(gray32), 0, 255).astype(np.uint8)
    return _png(np.stack([g] * 3, axis=2)), g.astype(np.float64)


def test_phash_radius_with_hand_built_pixels(repo):
    """Coefficient values 6k (k = -31..31) plus the DC term: bits are known. Swapping the values of one
    coefficient above and one below the median flips exactly 2 bits; 1 or 2 swaps = distance 2 or 4 (a
    leak), 3 swaps = distance 6 (not one)."""
    rng = np.random.default_rng(0)
    values = rng.permutation(np.arange(-31, 32) * 6.0)
    base = np.concatenate([[128.0 * 32], values])  # DC first: row-major (0, 0)
    above = iter([i for i in range(1, 64) if base[i] > 3])
    below = iter([i for i in range(1, 64) if base[i] < 0])
    variants = {}
    for swaps in (1, 2, 3):  # disjoint swaps: the variants are >= 6 bits from each other
        c = base.copy()
        for _ in range(swaps):
            a, b = next(above), next(below)
            c[a], c[b] = c[b], c[a]
        variants[swaps] = c
    base_png, base_px = _stored(_coefficient_image(base))
    ref = _ref_bits(base_px)
    assert ref.sum() == 32
    planted = {}
    for swaps, c in variants.items():
        png, px = _stored(_coefficient_image(c))
        planted[swaps] = png
        assert int((_ref_bits(px) != ref).sum()) == 2 * swaps  # the reference agrees with the design
    _, trow = _locate(repo, "train", "rs5m", "base")
    tpath = next(p for p in _shards(repo) if p.relative_to(repo).as_posix().startswith("data/rs5m/train/base-"))
    _edit(tpath, ir=base_png)
    targets = {swaps: _locate(repo, split, src) for swaps, (split, src) in
               {1: ("validation", "nwpu"), 2: ("test", "nwpu"), 3: ("test", "rsitmd")}.items()}
    for swaps, (path, _) in targets.items():
        _edit(path, ir=planted[swaps])
    rep = check_repo(str(repo), workers=1)
    near = {f.sample_id: f.message for f in rep.findings if f.kind == "leak_near_duplicate"}
    assert set(near) == {targets[1][1]["sample_id"], targets[2][1]["sample_id"]}, rep.findings
    assert "Hamming distance 2 <= 4" in near[targets[1][1]["sample_id"]]
    assert "Hamming distance 4 <= 4" in near[targets[2][1]["sample_id"]]
    assert all(trow["sample_id"] in m for m in near.values())


# ----------------------------------------------------------------------------------------- real process


@pytest.fixture(scope="module")
def leaky(promise_clean, tmp_path_factory) -> Path:
    """One leak of each kind: identical RGB bytes, a near-duplicate IR, an identical caption."""
    root = Path(shutil.copytree(promise_clean, tmp_path_factory.mktemp("promise_leaky") / "repo"))
    _, a = _locate(root, "train", "rs5m", "base")
    _, b = _locate(root, "train", "nwpu", "iraware")
    _, c = _locate(root, "train", "rsicd", "base")
    _edit(_locate(root, "test", "skyscript")[0], rgb=a["rgb"]["bytes"])
    _edit(_locate(root, "validation", "rsitmd")[0], ir=jpeg_bytes(_pixels(b["ir"]["bytes"]), 60))
    _edit(_locate(root, "test", "rs5m")[0], caption=c["caption"].upper())
    return root


def _check_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "check", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONFAULTHANDLER": "1"})


def test_check_process_exits_1_on_leaks_and_0_when_clean(leaky, promise_clean):
    want = {"leak_caption": 1, "leak_identical_bytes": 1, "leak_near_duplicate": 1}
    for workers in ("2", "2"):  # process pool: where the abort (exit 134) used to happen
        p = _check_process(str(leaky), "--workers", workers, "--quiet", "--json")
        assert p.returncode == 1, (p.returncode, p.stderr[-500:])
        assert json.loads(p.stdout)["counts_by_kind"] == want
        assert "Traceback" not in p.stderr and "terminate called" not in p.stderr
    p = _check_process(str(leaky), "--quiet", "--workers", "1")
    assert p.returncode == 1 and "FAILED: 3 finding(s)" in p.stdout
    p = _check_process(str(promise_clean), "--quiet", "--workers", "2")
    assert p.returncode == 0 and "OK: no findings" in p.stdout


# ----------------------------------------------------------------------------------------- statistics and CLI


def test_spread_of_a_larger_image_is_taken_on_its_box_reduction(tmp_path):
    """README: the spread is measured on the image reduced to 64x64 with a box filter. A 128 px PNG of
    colour noise: its 2x2 block means (numpy, here) give the spread; another filter would not."""
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, size=(128, 128, 3)).astype(np.uint8)
    boxed = arr.reshape(64, 2, 64, 2, 3).astype(np.float64).mean(axis=(1, 3))
    ref = float(np.mean(np.round(boxed).max(axis=2) - np.round(boxed).min(axis=2)))
    st = check_mod.inspect_image(_png(arr))
    assert st.size == (128, 128) and abs(st.spread - ref) < 0.6, (st.spread, ref)


def test_the_phash_of_a_large_jpeg_is_the_releases():
    """The release's phash64 (audit_fusionrs_dedup.py): the full decode, convert("L"), a Lanczos resize to
    32x32, the DCT's 8x8 corner, bits above the median of the 63 AC terms. Written here from that
    definition; a reduced-scale decode (libjpeg's 1/8) gives another hash, so the test can tell them apart.
    The spread is measured on the full decode box-reduced to 64 px. The IR column is hashed the same way (the
    release's split groups infrared-style images by pHash64 within radius 4 too, split_v3.json)."""
    from fusionrs_hf.scenes import render_scene

    def release_phash(im):
        gray = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
        d = _dct_basis()
        values = (d @ gray @ d.T)[:8, :8].reshape(-1)
        bits = values > float(np.median(values[1:]))
        return int("".join("1" if b else "0" for b in bits), 2)

    hashes = {}
    for seed in range(8):
        data = jpeg_bytes(render_scene(np.random.default_rng(seed), 512).rgb, 90)
        with Image.open(io.BytesIO(data)) as im:
            want = release_phash(im)
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (64, 64))
            hashes[seed] = (want, release_phash(im))
        st = check_mod.inspect_image(data)
        assert st.phash == want, seed
        full = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").reduce(8))  # 8x8 box means: 64 px
        assert st.size == (512, 512) and st.spread == float(np.mean(full.max(axis=2) - full.min(axis=2)))
    assert any(a != b for a, b in hashes.values())  # a reduced decode would have hashed differently
    # the median leaves the DC term out: it matters where the DC is not above the ACs' median, e.g. one
    # bright corner pixels on black (DC the smallest of the 64: the median of all 64 moves a bit)
    dot = np.zeros((32, 32, 3), np.uint8)
    dot[0, 0] = dot[1, 0] = 255
    assert check_mod.inspect_image(_png(dot)).phash == release_phash(Image.fromarray(dot))


def test_check_hashes_both_columns_the_releases_way(tmp_path, monkeypatch):
    """The release's split groups RGB and infrared-style images alike by pHash64 within radius 4
    (split_v3.json ``joint_grouping``): the full check hashes every RGB and every IR image on its full decode
    (the release's recipe), never on a reduction, which moves the hash by a few bits."""
    sizes = []
    real = check_images.phash

    def spy(im):
        sizes.append(im.size)
        return real(im)

    repo = make_sample_repo(tmp_path / "r", counts={"train": 2, "validation": 1, "test": 1}, size=160)
    monkeypatch.setattr(check_images, "phash", spy)
    rep = check_repo(str(repo), workers=1)
    full = _image_sizes(repo)
    assert min(min(wh) for wh in full) > check_mod.STAT_SIZE  # larger than the spread's reduction
    assert rep.ok and sorted(sizes) == sorted(full), (sorted(set(sizes)), sorted(set(full)))


def _image_sizes(repo: Path) -> list[tuple[int, int]]:
    out = []
    for p in sorted((repo / "data").rglob("*.parquet")):
        t = pq.read_table(p, columns=["rgb", "ir"])
        for col in ("rgb", "ir"):
            for b in t.column(col).combine_chunks().field("bytes").to_pylist():
                with Image.open(io.BytesIO(b)) as im:
                    out.append(im.size)
    return out


def test_cli_release_checks_and_max_print(leaky, capsys):
    from fusionrs_hf.cli import main as cli_main

    assert cli_main(["check", str(leaky), "--quiet", "--workers", "1", "--max-print", "1"]) == 1
    out = capsys.readouterr().out
    assert "findings (showing 1 of 3):" in out and out.count("  [leak_") == 1
    cli_main(["check", str(leaky), "--quiet", "--workers", "1", "--fast", "--json", "--release", "rc4"])
    rep = json.loads(capsys.readouterr().out)
    assert rep["stats"]["release"]["release"].startswith("rc4")  # --release runs the authors' checks
    cli_main(["check", str(leaky), "--quiet", "--workers", "1", "--fast", "--json", "--release", "none"])
    assert "release" not in json.loads(capsys.readouterr().out)["stats"]


def _rewrite_raw(path: Path, table) -> None:
    """Write a table as is (no validation: the defects below are what rows_to_table refuses to write)."""
    pq.write_table(table, path)
    root = next(p for p in path.parents if (p / "README.md").exists())
    write_card(root, sample=True, repo_id=str(root))


def _only(rep, kind: str):
    hits = [f for f in rep.findings if f.kind == kind]
    assert len(hits) == 1, rep.findings
    return hits[0]


def test_row_level_findings_name_row_and_sample(repo):
    import pyarrow as pa

    path, _ = _locate(repo, "train", "rs5m", "base")
    t = pq.read_table(path)
    assert t.num_rows >= 2
    sids = t["sample_id"].to_pylist()
    cap = t["caption"].to_pylist()
    cap[1] = None
    src = t["source"].to_pylist()
    src[0] = "NWPU"
    gid = t["joint_group_id"].to_pylist()
    gid[1] = "joint-group:not-hex"
    rgb = t["rgb"].to_pylist()
    rgb[0] = {"bytes": b"", "path": rgb[0]["path"]}
    sha = t["ir_sha256"].to_pylist()
    sha[1] = "0" * 64
    for name, vals in (("caption", cap), ("source", src), ("joint_group_id", gid), ("rgb", rgb), ("ir_sha256", sha)):
        t = t.set_column(t.schema.get_field_index(name), t.schema.field(name), pa.array(vals, t.schema.field(name).type))
    _rewrite_raw(path, t)
    rep = check_repo(str(repo), workers=1)
    f = _only(rep, "null_in_required")
    assert (f.row, f.sample_id, f.message) == (1, sids[1], "column 'caption' is null")
    f = _only(rep, "wrong_source")
    assert (f.row, f.sample_id) == (0, sids[0]) and f.message == "source is 'NWPU' but the shard is under rs5m/"
    f = _only(rep, "bad_joint_group_id")
    assert (f.row, f.sample_id) == (1, sids[1]) and f.message.startswith("joint_group_id 'joint-group:not-hex'")
    f = _only(rep, "undecodable_image")
    assert (f.row, f.sample_id, f.message) == (0, sids[0], "rgb has no bytes")
    f = _only(rep, "sha256_mismatch")
    assert (f.row, f.sample_id) == (1, sids[1]) and f.message.startswith("ir_sha256 is 000000000000...")
    assert (f.config, f.split, f.shard) == ("rs5m", "train", path.relative_to(repo).as_posix())


def test_blank_ir_caption_and_column_order_messages(repo):
    path, row = _locate(repo, "train", "nwpu", "iraware")
    _edit(path, ir_caption="   ")
    f = _only(check_repo(str(repo), fast=True, workers=1), "iraware_missing_ir_caption")
    assert f.message == "iraware row has a blank ir_caption" and f.sample_id == row["sample_id"]
    t = pq.read_table(path)
    names = t.column_names
    _rewrite_raw(path, t.select([names[1], names[0], *names[2:]]))
    msgs = [f.message for f in check_repo(str(repo), fast=True, workers=1).findings if f.kind == "schema_mismatch"]
    assert "column order differs from the schema" in msgs


@pytest.mark.parametrize("column", ["ir_sha256", "caption"])
def test_a_missing_column_is_reported_and_the_rest_still_checked(repo, column):
    path, _ = _locate(repo, "test", "skyscript")
    t = pq.read_table(path)
    _rewrite_raw(path, t.drop_columns([column]))
    for fast in (True, False):
        rep = check_repo(str(repo), fast=fast, workers=1)
        assert {f.kind for f in rep.findings} == {"schema_mismatch"}, rep.findings
        assert any(f"missing column(s) {column}" in f.message for f in rep.findings)
        assert rep.stats["images_decoded"] == (0 if fast else 2 * rep.stats["rows"])


def _card_edit(root: Path, mutate) -> None:
    import yaml

    text = (root / "README.md").read_text(encoding="utf-8")
    _, header, body = text.split("---\n", 2)
    data = yaml.safe_load(header)
    mutate(data)
    (root / "README.md").write_text("---\n" + yaml.safe_dump(data, sort_keys=False) + "---\n" + body, encoding="utf-8")


def _info(data, config):
    return next(i for i in data["dataset_info"] if i["config_name"] == config)


def _cfg(data, config):
    return next(c for c in data["configs"] if c["config_name"] == config)


def test_card_findings_in_detail(repo):
    def edit(data):
        _info(data, "rs5m")["splits"] = [s for s in _info(data, "rs5m")["splits"] if s["name"] != "test"]
        _info(data, "nwpu")["splits"].append({"name": "extra", "num_examples": 3, "num_bytes": 10})
        rsicd = _cfg(data, "rsicd")
        rsicd["data_files"].append({"split": "train", "path": "data/nwpu/train/*.parquet"})
        data["configs"].append({"config_name": "foo", "data_files": [{"split": "train",
                                                                      "path": "data/rs5m/train/*.parquet"}]})
        data["dataset_info"].append({**_info(data, "rs5m"), "config_name": "foo"})
        data["dataset_info"].append({**_info(data, "rs5m"), "config_name": "bar"})

    _card_edit(repo, edit)
    rep = check_repo(str(repo), fast=True, workers=1)
    by = {}
    for f in rep.findings:
        by.setdefault(f.kind, []).append(f)
    missing = [f for f in by["count_mismatch"] if f.config == "rs5m" and f.split == "test"]
    assert len(missing) == 1 and missing[0].message.startswith("card has no dataset_info split for ")
    foreign = [f for f in by["card_config_mismatch"] if f.config == "rsicd"]
    assert foreign and all(f.shard and f.shard.startswith("data/nwpu/train/") for f in foreign)
    assert all("selects a shard the registry puts elsewhere" in f.message for f in foreign)
    unknown = sorted((f.config, f.message) for f in by["card_config_mismatch"] if f.config in ("foo", "bar"))
    assert unknown == [("bar", "card dataset_info config 'bar' is not in the registry"),
                       ("foo", "card config 'foo' is not in the registry")]  # foo once, not twice


def test_card_split_without_shards_and_stale_card(repo):
    # the nwpu config's validation split is counted on the card but its shards are gone
    for p in (repo / "data/nwpu/validation").glob("*.parquet"):
        p.unlink()
    rep = check_repo(str(repo), fast=True, workers=1)
    gone = [f for f in rep.findings if f.kind == "count_mismatch" and f.config == "nwpu"]
    assert [(f.split, f.message) for f in gone] == [("validation", gone[0].message)]
    assert gone[0].message.startswith("card says ") and gone[0].message.endswith("rows; no shard has any")
    orphan = [f for f in rep.findings if f.kind == "missing_file" and f.config == "nwpu"]
    assert orphan and orphan[0].split == "validation"


def test_card_orphan_message_missing_and_bad_card(repo):
    def drop(data):
        cfg = _cfg(data, "rsitmd")
        cfg["data_files"] = [d for d in cfg["data_files"] if d["split"] != "test"]

    _card_edit(repo, drop)
    f = next(f for f in check_repo(str(repo), fast=True, workers=1).findings if f.kind == "orphan_shard")
    assert f.message.endswith("does not include this shard (re-render the card: fusionrs card)") and f.shard
    (repo / "README.md").write_text("---\nconfigs: [unclosed\n---\n# x\n", encoding="utf-8")
    f = _only(check_repo(str(repo), fast=True, workers=1), "bad_card")
    assert f.message.startswith("cannot read the card's YAML header: ")
    (repo / "README.md").unlink()
    f = _only(check_repo(str(repo), fast=True, workers=1), "missing_card")
    assert f.message == "README.md not found: configs and dataset_info cannot be checked"


def test_cross_row_messages_and_stats(repo):
    _, trow = _locate(repo, "train", "rs5m", "base")
    path, vrow = _locate(repo, "validation", "nwpu")
    tpath = next(p for p in _shards(repo) if p.relative_to(repo).as_posix().startswith("data/rs5m/train/base-"))
    _edit(path, sample_id=trow["sample_id"], joint_group_id=trow["joint_group_id"])
    rep = check_repo(str(repo), fast=True, workers=3)
    assert rep.stats["workers"] == 3
    f = _only(rep, "duplicate_sample_id")
    places = {tpath.relative_to(repo).as_posix(): "train", path.relative_to(repo).as_posix(): "validation"}
    (other,) = set(places) - {f.shard}  # reported on one row, naming the other
    assert f.message == f"sample_id also used by the row in {places[other]} at {other}#0"
    f = _only(rep, "joint_group_spans_splits")
    assert f.message == f"joint_group_id also used in train by sample_id={trow['sample_id']}"
    import os as _os

    assert check_repo(str(repo), fast=True).stats["workers"] == max(1, _os.cpu_count() or 1)


def test_missing_images_in_two_splits_are_not_a_leak(repo):
    for split, src in (("train", "rs5m"), ("test", "rsicd")):
        path, _ = _locate(repo, split, src)
        t = pq.read_table(path)
        import pyarrow as pa

        rgb = t["rgb"].to_pylist()
        rgb[0] = {"bytes": b"", "path": rgb[0]["path"]}
        t = t.set_column(t.schema.get_field_index("rgb"), t.schema.field("rgb"), pa.array(rgb, t.schema.field("rgb").type))
        _rewrite_raw(path, t)
    rep = check_repo(str(repo), workers=1)
    assert {f.kind for f in rep.findings} == {"undecodable_image"} and len(rep.findings) == 2


def test_leak_messages_name_the_earlier_row(leaky):
    _, c = _locate(leaky, "train", "rsicd", "base")
    _, a = _locate(leaky, "train", "rs5m", "base")
    rep = check_repo(str(leaky), workers=1)
    assert _only(rep, "leak_caption").message == (
        f"caption equals (after normalization) the caption of train sample_id={c['sample_id']}")
    assert _only(rep, "leak_identical_bytes").message == (
        f"rgb bytes are identical to the rgb of train sample_id={a['sample_id']}")
