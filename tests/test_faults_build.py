"""Issue 18, the builder's side: no input, fault or race silently corrupts a build or reads outside its roots.

One test per class: images that do not map cleanly to 8-bit RGB (16-bit, EXIF orientation, I, F, LA,
P with transparency, CMYK, 16-bit TIFF), symlinks out of a source root or a ``--from-folder``,
concurrent builds, a foreign ``--out``, leftover temp files, a full disk, a killed main process
(orphan workers), decompression bombs, hostile caption text. Each asserts the user-facing outcome:
the error names the item, the exit code, and the output is complete and consistent or untouched.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionrs_hf import cli
from fusionrs_hf.build import CRASH_ENV, STATE_DIR, BuildError, BuildOptions, build
from fusionrs_hf.build.images import load_image, reset_orientation
from fusionrs_hf.scenes import jpeg_bytes, render_scene

from .build_fixtures import build_options, make_fixture, write_jsonl


def _opts(fx, out, **over) -> BuildOptions:
    return build_options(fx, out, **{"rows_per_shard": 2, **over})


def _args(fx, out) -> list[str]:
    args = ["build", "--index", str(fx.index_public), "--ir-root", str(fx.ir_root), "--out", str(out),
            "--rows-per-shard", "2", "--iraware", str(fx.iraware), "--quiet", "--workers", "1"]
    for a in fx.source_root_args():
        args += ["--source-root", a]
    return [*args, "--captions", *map(str, fx.caption_files)]


@pytest.fixture
def fx(tmp_path):
    return make_fixture(tmp_path / "src", size=64)


def _stored(out: Path, sid: str, column: str) -> bytes:
    for p in (out / "data").rglob("*.parquet"):
        t = pq.read_table(p, columns=["sample_id", column]).to_pylist()
        for r in t:
            if r["sample_id"] == sid:
                return r[column]["bytes"]
    raise KeyError(sid)


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=kw.pop("format", "PNG"), **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- 1. images -> 8-bit, one orientation

def _ramp(w=64, h=48) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) * 4 % 256).astype(np.uint8)


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "LA", "P-transparent", "CMYK", "TIFF-16"])
def test_every_mode_becomes_8bit_with_the_same_picture(tmp_path, mode):
    base = _ramp()
    if mode in ("I;16", "TIFF-16"):
        im = Image.fromarray(base.astype(np.uint16) * 257)  # 16-bit samples whose high byte is `base`
        data = _png(im, format="TIFF") if mode == "TIFF-16" else _png(im)
        want = base
    elif mode == "I":
        im = Image.fromarray(base.astype(np.int32) * 256, "I")  # 16 significant bits in a 32-bit mode
        data, want = _png(im, format="TIFF"), base
    elif mode == "F":
        im = Image.fromarray(base.astype(np.float32) / 255.0, "F")
        data, want = _png(im, format="TIFF"), base
    elif mode == "LA":
        data, want = _png(Image.fromarray(np.dstack([base, np.full_like(base, 7)]), "LA")), base
    elif mode == "P-transparent":
        p = Image.fromarray(base).convert("P")
        p.info["transparency"] = 0
        data, want = _png(p), np.asarray(p.convert("RGB").convert("L"))
    else:
        data, want = _png(Image.fromarray(np.dstack([base] * 3)).convert("CMYK"), format="JPEG", quality=100), None
    path = tmp_path / "img"
    path.write_bytes(data)
    stored, size, notes = load_image(path, "ir")
    with Image.open(io.BytesIO(stored)) as out:
        assert out.mode in ("L", "RGB"), out.mode
        got = np.asarray(out.convert("L"), dtype=np.int16)
    assert size == (64, 48) and notes.get("converted_from")
    assert got.mean() < 250  # never the solid white a naive 16-bit -> 8-bit conversion gives
    if want is not None:
        assert np.abs(got - want.astype(np.int16)).max() <= 2, mode
    else:
        assert np.abs(got - base.astype(np.int16)).mean() < 6  # CMYK: same picture after conversion


def _exif_jpeg(arr: np.ndarray, orientation: int) -> bytes:
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def test_exif_orientation_is_reset_so_rgb_and_ir_stay_on_one_grid(fx, tmp_path):
    """An RGB JPEG tagged 'rotate 90' next to its IR (no EXIF): the pair is kept on the stored grid."""
    e = fx.expect["rsicd-0000"]
    raw = np.asarray(Image.open(e.rgb_path).convert("RGB"))[:, :48]  # non-square: 48x64
    e.rgb_path.write_bytes(_exif_jpeg(raw, 6))
    ir = np.asarray(Image.open(e.ir_path).convert("RGB"))[:, :48]
    e.ir_path.write_bytes(jpeg_bytes(ir))
    out = tmp_path / "out"
    report = build(_opts(fx, out))
    assert "rsicd-0000" not in {s for b in report["dropped"]["by_reason"].values() for s in b["sample_ids"]}
    assert report["images"]["exif_orientation_reset"]["count"] == 1
    stored = _stored(out, "rsicd-0000", "rgb")
    assert len(stored) == len(e.rgb_path.read_bytes())  # only the tag's two bytes changed, no re-encode
    with Image.open(io.BytesIO(stored)) as im:
        assert im.getexif().get(0x0112) == 1
    from datasets import Image as HFImage

    decoded = HFImage().decode_example({"bytes": stored, "path": None})  # datasets applies EXIF transposes
    assert decoded.size == (48, 64)  # = the IR's size: both readers see one grid
    assert reset_orientation(stored) == (stored, 1)


# --------------------------------------------------------------------------- 2. nothing outside the roots

def test_symlinks_out_of_a_source_root_are_refused(fx, tmp_path):
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(jpeg_bytes(render_scene(np.random.default_rng(3), 64).rgb))
    a, b = fx.expect["rsicd-0001"].rgb_path, fx.expect["rs5m-0001"].rgb_path
    a.unlink()
    a.symlink_to(secret)  # a file symlink
    outside_dir = tmp_path / "outside_dir"
    outside_dir.mkdir()
    (outside_dir / b.name).write_bytes(secret.read_bytes())
    moved = b.parent.with_name("moved")
    b.parent.rename(moved)
    b.parent.symlink_to(outside_dir, target_is_directory=True)  # a directory symlink
    out = tmp_path / "out"
    report = build(_opts(fx, out))
    assert set(report["dropped"]["by_reason"]["outside_root"]["sample_ids"]) >= {"rsicd-0001", "rs5m-0001"}
    detail = report["dropped"]["by_reason"]["outside_root"]["details"][0]["detail"]
    assert "outside the root" in detail
    blob = b"".join(p.read_bytes() for p in (out / "data").rglob("*.parquet"))
    assert secret.read_bytes() not in blob


def test_from_folder_refuses_symlinks_out_and_bad_utf8(tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "rgb").mkdir(parents=True)
    (folder / "ir").mkdir()
    sc = render_scene(np.random.default_rng(1), 64)
    (folder / "rgb" / "a.jpg").write_bytes(jpeg_bytes(sc.rgb))
    (folder / "ir" / "a.jpg").write_bytes(jpeg_bytes(sc.ir))
    (folder / "rgb" / "a.txt").write_bytes(b"A field with a barn \xff\xfe and a road.\n")
    args = ["build", "--from-folder", str(folder), "--source", "SkyScript", "--out", str(tmp_path / "o"), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "a.txt: not valid UTF-8" in err and len(err.strip().splitlines()) == 1
    (folder / "rgb" / "a.txt").write_text("A field with a barn and a road.\n")
    (tmp_path / "passwd.jpg").write_bytes(jpeg_bytes(sc.rgb))
    (folder / "rgb" / "b.jpg").symlink_to(tmp_path / "passwd.jpg")
    assert cli.main(args) == 2
    assert "b.jpg is a symlink to" in capsys.readouterr().err


# --------------------------------------------------------------------------- 6. races, partial writes, other files

def test_a_second_build_into_the_same_out_fails_at_once(fx, tmp_path):
    out = tmp_path / "out"
    (out / STATE_DIR).mkdir(parents=True)
    with open(out / STATE_DIR / "lock", "a+") as held:  # another build holds the lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *_args(fx, out)], capture_output=True,
                              text=True, timeout=120)
    assert proc.returncode == 2
    assert "another fusionrs build (pid 4242) is writing it" in proc.stderr
    assert not (out / "data").exists()  # it wrote nothing
    assert cli.main(_args(fx, out)) == 0  # the lock is free again


def test_two_builds_at_once_one_wins_cleanly(fx, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fusionrs_hf.cli", *_args(fx, out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes in ([0, 0], [0, 2]), results  # the loser (if they overlapped) says why, in one line
    for code, err in results:
        if code == 2:
            assert "another fusionrs build" in err and "Traceback" not in err
    assert cli.main([*_args(fx, out), "--strict"]) == 0  # and the output is a complete, consistent build


def test_foreign_out_folder_is_left_alone(fx, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "README.md").write_text("my project\n")
    assert cli.main(_args(fx, out)) == 2
    assert "not written by fusionrs build" in capsys.readouterr().err
    assert (out / "README.md").read_text() == "my project\n" and not (out / "data").exists()


def test_leftover_temp_files_of_dead_writers_are_removed(fx, tmp_path):
    out = tmp_path / "out"
    build(_opts(fx, out))
    shard_dir = next((out / "data").rglob("*.parquet")).parent
    dead = shard_dir / ".base-main-00000.parquet.999999-0123456789ab.fusionrs-tmp"
    dead.write_bytes(b"half a shard")
    theirs = shard_dir / "notes.fusionrs-tmp"  # not a name our writer makes: someone else's
    theirs.write_text("keep me")
    build(_opts(fx, out))
    assert not dead.exists() and theirs.read_text() == "keep me"


def test_full_disk_is_a_named_error_and_a_rerun_completes(fx, tmp_path, monkeypatch):
    out, ref = tmp_path / "out", tmp_path / "ref"
    build(_opts(fx, ref))
    import fusionrs_hf.shards as shards

    real, calls = shards.pq.ParquetWriter.write_table, {"n": 0}

    def enospc(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(shards.pq.ParquetWriter, "write_table", enospc)
    with pytest.raises(BuildError, match=r"No space left on device; free space .* re-run the same command"):
        build(_opts(fx, out))
    assert not list(out.rglob("*.fusionrs-tmp"))  # no partial file under any name
    monkeypatch.setattr(shards.pq.ParquetWriter, "write_table", real)
    build(_opts(fx, out))
    files = lambda root: {p.relative_to(root).as_posix(): p.read_bytes()  # noqa: E731
                          for p in (root / "data").rglob("*.parquet")}
    assert files(out) == files(ref)


# --------------------------------------------------------------------------- 11. orphans

def test_pool_workers_exit_when_the_main_process_is_killed(fx, tmp_path):
    psutil = pytest.importorskip("psutil")
    mark = uuid.uuid4().hex
    env = {**os.environ, CRASH_ENV: "1", "FUSIONRS_TEST_MARK": mark}
    args = _args(fx, tmp_path / "out")
    args[args.index("--workers") + 1] = "2"
    proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == 137  # the main process died like a kill -9

    def ours():
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.environ().get("FUSIONRS_TEST_MARK") == mark:
                    found.append(p.pid)
            except (psutil.Error, OSError):
                continue
        return found

    deadline = time.monotonic() + 10
    while ours() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours() == []  # every worker noticed its parent was gone and exited


# --------------------------------------------------------------------------- 12. memory, 8. hostile text

def test_decompression_bomb_is_dropped_from_its_header(fx, tmp_path):
    bomb = Image.new("1", (13_000, 13_000))  # 169 Mpx, a few KB as PNG
    fx.expect["skyscript-0002"].ir_path.write_bytes(_png(bomb))
    assert fx.expect["skyscript-0002"].ir_path.stat().st_size < 200_000
    report = build(_opts(fx, tmp_path / "out"))
    b = report["dropped"]["by_reason"]["too_many_pixels"]
    assert b["sample_ids"] == ["skyscript-0002"] and "13000x13000" in b["details"][0]["detail"]
    report = build(_opts(fx, tmp_path / "small", max_pixels=1000))  # the limit is a setting
    assert report["dropped"]["by_reason"]["too_many_pixels"]["count"] == report["index_records"] - 1


def test_lone_surrogates_and_deep_json_in_inputs_are_named(fx, tmp_path, capsys):
    caps = tmp_path / "caps.jsonl"
    caps.write_text('{"sample_id": "rsicd-0000", "caption": "bad \\ud800 text"}\n', encoding="utf-8")
    args = _args(fx, tmp_path / "out")
    assert cli.main([*args, str(caps)]) == 2
    assert "caps.jsonl entry 1 (rsicd-0000): text with a lone surrogate" in capsys.readouterr().err
    index = tmp_path / "deep.jsonl"
    index.write_text("[" * 200_000 + "\n")
    args[args.index("--index") + 1] = str(index)
    assert cli.main(args) == 2
    assert "deep.jsonl line 1: not valid JSON (nested too deeply)" in capsys.readouterr().err


def test_a_build_that_writes_nothing_exits_1_and_says_what_it_expected(fx, tmp_path, capsys):
    index = write_jsonl(tmp_path / "idx.jsonl", fx.records)
    args = _args(fx, tmp_path / "out")
    args[args.index("--index") + 1] = str(index)
    args[args.index("--ir-root") + 1] = str(tmp_path)  # no IR there
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "0 of 25 records written (missing_ir 24, no_usable_caption 1)" in err
    assert "IR_ROOT/translation.output_key" in err
