"""`fusionrs bench` runs end to end and reports what the issue asks for (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_keys_and_row_checks(tmp_path):
    cmd = [sys.executable, "-m", "fusionrs_hf.cli", "bench", "--quick", "--json", "--quiet", "--rows", "24",
           "--source-size", "64", "--image-size", "32", "--batch-size", "8", "--cache", str(tmp_path / "cache"),
           "--no-write"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout)
    for key in ("samples_per_s", "vs_stock", "vs_webdataset", "vs_decode_limit", "vs_decode_norm_limit",
                "uint8_vs_decode_limit",
                "peak_rss_mb"):
        assert isinstance(res[key], float) and res[key] > 0, key
    # every pipeline read every training row exactly once (the bench checks ids and counts itself)
    assert res["rows"] >= 24 and res["rss"]["rows"] == res["rows"]
    assert set(res["targets_met"]) == {"vs_stock", "vs_webdataset", "vs_decode_limit", "peak_rss_mb"}
