"""`fusionrs bench` runs end to end and reports what the issue asks for (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fusionrs_hf import bench

TINY = ["--quick", "--json", "--quiet", "--source-size", "64", "--image-size", "32", "--batch-size", "8",
        "--no-write"]
RATIOS = ("samples_per_s", "vs_stock", "vs_webdataset", "vs_decode_limit", "vs_decode_norm_limit",
          "uint8_vs_decode_limit")


def _bench(args, env=None):
    cmd = [sys.executable, "-m", "fusionrs_hf.cli", "bench", *TINY, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return json.loads(out.stdout), out.stderr


def test_bench_json_keys_and_row_checks(tmp_path):
    res, _ = _bench(["--rows", "24", "--cache", str(tmp_path / "cache")])
    for key in (*RATIOS, "peak_rss_mb"):
        assert isinstance(res[key], float) and res[key] > 0, key
    # every pipeline read every training row exactly once, with ours' image shape, dtype and normalization
    # (the bench raises otherwise; here the evidence it recorded)
    assert res["rows"] >= 24 and res["rss"]["rows"] == res["rows"]
    r = res["results"]
    for name, row in r.items():
        if name.startswith("decode"):
            assert row["samples_per_s"] > 0, name
            continue
        assert row["rows_total"] == row["unique"] == res["rows"], name
        assert row["shape"] == [3, 32, 32], name
        assert row["dtype"] == ("uint8" if name == "ours_uint8" else "float32"), name
        assert 0 <= row["max_fingerprint_diff"] <= bench.FINGERPRINT_TOL, name
    expected = {"vs_stock", "vs_webdataset", "vs_decode_norm_limit", "uint8_vs_decode_limit", "peak_rss_mb"}
    for peer, key in (("litdata", "vs_litdata"), ("mosaic", "vs_mosaic")):
        assert key in res, key  # always a key: a number, or null when the row was skipped
        if bench.peer_missing(peer) is None:  # installed here: the row ran and read what ours read
            assert isinstance(res[key], float) and res[key] > 0, key
            assert peer in r and res["peer_shards"][peer] >= 1 and peer not in res["skipped"]
            expected.add(key)
        else:
            assert res[key] is None and peer not in r and bench.PEERS[peer] in res["skipped"][peer]
    assert set(res["targets_met"]) == expected
    md = bench.render_markdown(res)
    assert "(c')" in md and "≥ 0.92" in md and "target ≥ 0.90" in md


def test_missing_peers_skip_their_rows_with_a_note(tmp_path):
    # packages that shadow the installed peers and fail to import, as a missing package does
    for name in ("litdata", "streaming"):
        (tmp_path / "shadow" / name).mkdir(parents=True)
        (tmp_path / "shadow" / name / "__init__.py").write_text(f"raise ImportError('No module named {name!r}')\n")
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"))
    res, err = _bench(["--rows", "10", "--no-rss", "--cache", str(tmp_path / "cache")], env=env)
    assert res["vs_litdata"] is None and res["vs_mosaic"] is None
    assert set(res["skipped"]) == {"litdata", "mosaic"}
    for peer, why in res["skipped"].items():
        assert "\n" not in why and bench.PEERS[peer] in why and "`bench` extra" in why
    assert isinstance(res["vs_webdataset"], float)
    assert "vs_litdata" not in res["targets_met"] and "vs_mosaic" not in res["targets_met"]
    md = bench.render_markdown(res)
    assert "Skipped (d) litdata: litdata cannot be imported" in md and "Skipped (e) MosaicML" in md


def test_targets_met_only_for_values_present():
    met = bench.targets_met({"vs_stock": 2.0, "vs_litdata": None, "vs_mosaic": 1.1, "peak_rss_mb": 1600.0})
    assert met == {"vs_stock": True, "vs_mosaic": False, "peak_rss_mb": False}


def test_bench_remote_smoke(tmp_path):
    """--remote with tiny settings: every remote pass reads ours' rows exactly once; the keys are reported."""
    res, _ = _bench(["--rows", "10", "--no-rss", "--remote", "--latency-ms", "2", "--bandwidth-mbps", "800",
                     "--plan-shards", "12", "--cache", str(tmp_path / "cache")])
    for key in ("remote_samples_per_s", "remote_vs_local", "remote_vs_stock", "first_batch_s_remote",
                "plan_s_remote", "samples_per_s", "vs_stock"):
        assert isinstance(res[key], float) and res[key] > 0, key
    r = res["results"]
    for name in ("remote_ours", "remote_stock"):
        assert r[name]["rows_total"] == r[name]["unique"] == res["rows"], name
        assert 0 <= r[name]["max_fingerprint_diff"] <= bench.FINGERPRINT_TOL, name
        assert r[name]["first_batch_s"] > 0 and r[name]["peak_rss_mb"] > 0, name
    assert r["remote_ours"]["read_stats"]["row_groups"] >= 1 and r["remote_ours"]["read_stats"]["retries"] == 0
    # the link ceiling: bytes that crossed it per row, at the cap; ours is judged against the lower of it and local
    import pyarrow.parquet as pq

    images = sum(pq.read_table(f, columns=["rgb", "ir"]).nbytes
                 for f in (tmp_path / "cache").rglob("data/*/train/*.parquet"))
    ours_bytes = r["remote_ours"]["bytes_served"]
    assert images * 0.9 <= ours_bytes
    assert res["remote_link_rows_per_s"] == pytest.approx(800e6 / 8 / (ours_bytes / res["rows"]), rel=1e-3)
    assert res["remote_vs_attainable"] >= res["remote_vs_local"]
    assert r["remote_plan"]["shards"] >= 12 and res["remote"]["latency_ms"] == 2
    assert {"remote_vs_local", "remote_vs_stock", "first_batch_s_remote"} <= set(res["targets_met"])
    md = bench.render_markdown(res)
    assert "### Remote" in md and "stock `datasets` streaming, remote" in md and "Plan at" in md


def test_extra_rounds_are_the_decode_comparisons_only(tmp_path):
    """--decode-repeat adds interleaved rounds of ours, ours uint8, (c) and (c') and of nothing else."""
    cmd = [sys.executable, "-m", "fusionrs_hf.cli", "bench", *[a for a in TINY if a != "--quiet"], "--rows", "12",
           "--no-rss", "--repeat", "1", "--decode-repeat", "2", "--cache", str(tmp_path / "cache")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    assert res["repeat"] == 1 and res["decode_repeat"] == 2
    second = {line.split(": ", 1)[1].split(" ", 1)[0] for line in out.stderr.splitlines() if "pass 2/2: " in line}
    assert second == {"ours", "ours_uint8", "decode_limit", "decode_norm_limit"}, out.stderr[-2000:]
    assert "pass 1/1: stock" in out.stderr


def test_fingerprints_compare_uint8_with_float_and_catch_a_wrong_normalization():
    """The in-loop check: a uint8 pipeline matches ours' float batches of the same pixels, channels-last or
    not; the same pixels scaled to 0..1 but not CLIP-normalized, or another image, do not."""
    import torch

    from fusionrs_hf.decode import Normalizer, empty_images

    g = torch.Generator().manual_seed(0)
    pixels = [torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=g) for _ in range(3)]
    norm = Normalizer()

    def batches(kind):
        for k, u8 in enumerate(pixels):
            ids = [f"s{k}-{j}" for j in range(len(u8))]
            if kind == "u8":
                rgb, ir = u8, u8.flip(-1)
            else:
                rgb, ir = empty_images(u8.shape), empty_images(u8.shape)  # channels-last, like ours
                for j in range(len(u8)):
                    norm(u8[j], rgb[j])
                    norm(u8[j].flip(-1), ir[j])
                if kind == "unnormalized":
                    rgb, ir = u8.float() / 255, u8.flip(-1).float() / 255
                if kind == "swapped":
                    rgb, ir = ir, rgb
            yield {"sample_id": ids, "rgb": rgb, "ir": ir}

    ref = bench.time_pass(batches("ours"))
    assert ref["rows_total"] == 12 and ref["_fp"].shape == (12, 6)
    same = bench.time_pass(batches("u8"))
    assert bench.check_same_output("u8", same, ref, expect_dtype="uint8") < 1e-4
    for wrong in ("unnormalized", "swapped"):
        with pytest.raises(RuntimeError, match="images differ from ours"):
            bench.check_same_output(wrong, bench.time_pass(batches(wrong)), ref)
