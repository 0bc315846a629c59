"""Issue 13: the Hub path over real HTTP, with the real ``huggingface_hub`` client.

A Hub-API server (:class:`fusionrs_hf.testing.hub_server.HubServer`) runs on 127.0.0.1 for this module;
every client runs in its own process with ``HF_ENDPOINT`` pointed at it, as a user's would
(``HF_HUB_DISABLE_XET=1``: the server offers LFS, not xet). Push, re-push, an interrupted push and its
resume, ``fusionrs check``, stock ``load_dataset(..., streaming=True)``, the card's Load snippet as
written and ``make_dataloader`` with workers all go through it. (Failure injection at the level of single
client methods stays with the in-process double, tests/test_push.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fusionrs_hf.card_assets import ASSET_PATHS
from fusionrs_hf.testing.hub_server import HubServer

from .conftest import SAMPLE_SHARDS

TOKEN = "hf_HubServerTestToken0123456789"
REPO = "tester/fusionrs"


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def client_env(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf-client")
    return {**os.environ, **hub.env(), "HF_HOME": str(home / "home"),
            "HF_DATASETS_CACHE": str(home / "datasets"), "FUSIONRS_HUB_TIMEOUT": "10"}


def _cli(env, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _local_files(root: Path) -> dict[str, bytes]:
    out = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}
    out.update({rel: (root / rel).read_bytes() for rel in ASSET_PATHS})
    return out


def _ids(repo: Path, pattern: str) -> list[str]:
    return sorted(sid for p in sorted(repo.glob(pattern))
                  for sid in pq.read_table(p, columns=["sample_id"]).column(0).to_pylist())


@pytest.fixture(scope="module")
def pushed(hub, client_env, sample_repo):
    """The session sample repo, pushed once with the CLI (commits of at most 10 files)."""
    res = _cli(client_env, "push", str(sample_repo), REPO, "--quiet", "--json", "--max-files-per-commit", "10")
    assert res.returncode == 0, res.stderr[-2000:]
    assert TOKEN not in res.stdout + res.stderr
    return json.loads(res.stdout)


def test_push_over_http_then_repush_sends_nothing(hub, client_env, sample_repo, pushed):
    remote = hub.files(REPO)
    local = _local_files(sample_repo)
    assert {k: v for k, v in remote.items() if k in local} == local and "README.md" in remote
    assert pushed["uploaded_files"] == len(local) + 1 and len(pushed["commits"]) == 3  # 25 shards + 3, by 10
    assert hub.history(REPO)[0].startswith("fusionrs push") and hub.history(REPO)[0].endswith("[3/3]")
    assert hub.lfs_objects(REPO) == len(local)  # shards and pictures went to LFS; the card went inline
    assert hub.count("POST", r"^/api/validate-yaml$") >= 1 and hub.count("PUT", r"^/lfs/") == len(local)
    assert f'load_dataset("{REPO}", "iraware"' in remote["README.md"].decode()

    hub.reset_log()
    again = _cli(client_env, "push", str(sample_repo), REPO, "--quiet")
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    writes = [r for r in hub.requests if r.method in ("PUT", "DELETE")
              or (r.method == "POST" and not r.path.endswith("/paths-info/main"))]
    assert writes == [] and hub.count("GET", r"/tree/") >= 1  # it listed the remote, and wrote nothing


def test_interrupted_push_resumes_over_http(hub, client_env, sample_repo):
    repo = "tester/resume"
    # a dropped connection on an LFS upload is retried by the client; a failed commit stops the push
    dropped = hub.inject("drop", method="PUT", path=r"^/lfs/datasets/tester/resume/objects/", skip=4, times=1)
    failed = hub.inject(500, method="POST", path=rf"^/api/datasets/{repo}/commit/", skip=1, times=1)
    first = _cli(client_env, "push", str(sample_repo), repo, "--quiet", "--max-files-per-commit", "10")
    assert first.returncode == 1 and dropped.hits == 1 and failed.hits == 1
    errors = [line for line in first.stderr.splitlines() if ": error: " in line]  # (the client logs its retry)
    assert len(errors) == 1 and "re-run the same command to resume" in errors[0], first.stderr
    assert TOKEN not in first.stderr
    after_crash = hub.files(repo)
    assert "README.md" not in after_crash and 0 < sum(k.endswith(".parquet") for k in after_crash) < SAMPLE_SHARDS
    stored = hub.lfs_objects(repo)  # what reached the LFS store before the crash is not sent again

    hub.clear_faults()
    hub.reset_log()
    second = _cli(client_env, "push", str(sample_repo), repo, "--quiet", "--json", "--max-files-per-commit", "10")
    assert second.returncode == 0, second.stderr[-2000:]
    local = _local_files(sample_repo)
    assert hub.count("PUT", r"^/lfs/") == len(local) - stored
    assert json.loads(second.stdout)["plan"]["unchanged"] == sum(k.endswith(".parquet") for k in after_crash)
    assert {k: v for k, v in hub.files(repo).items() if k in local} == local
    assert hub.files(repo)["README.md"] == hub.files(REPO)["README.md"].replace(REPO.encode(), repo.encode())
    third = _cli(client_env, "push", str(sample_repo), repo, "--quiet")
    assert third.returncode == 0 and "nothing to do" in third.stdout


def test_check_over_http(client_env, pushed):
    fast = _cli(client_env, "check", REPO, "--fast", "--quiet")
    assert fast.returncode == 0 and "OK: no findings" in fast.stdout, fast.stdout + fast.stderr
    full = _cli(client_env, "check", f"hf://datasets/{REPO}", "--quiet", "--workers", "2", "--json")
    assert full.returncode == 0, full.stdout[-2000:] + full.stderr[-2000:]
    report = json.loads(full.stdout)
    assert report["ok"] and report["stats"]["images_decoded"] == 2 * report["stats"]["rows"] > 0


def test_a_full_check_over_http_moves_the_shards_bytes_about_once(hub, client_env, tmp_path):
    """The page-header walk read each remote shard through fsspec's read-ahead cache, then pyarrow read it
    again (twice the bytes: 201 MB for a 102 MB repo), and HfFileSystem's cat_ranges read each range to the end
    of the file. Each row group's chunks are now fetched once, in one request; only the footers are read
    besides (pyarrow's 64 KB tail, twice)."""
    from fusionrs_hf.demo import make_sample_repo

    # shards larger than the read-ahead block (fsspec's 5 MB; 32 KB here), where reading twice showed
    repo = make_sample_repo(tmp_path / "big", counts={"train": 12}, size=256, max_rows=12)
    shards = sorted((repo / "data" / "nwpu").rglob("*.parquet"))  # one source's shards are enough
    block = 32 << 10
    assert min(p.stat().st_size for p in shards) > 2 * block
    hub.create_repo("tester/bytes-once", files={str(p.relative_to(repo)): p.read_bytes() for p in shards})
    hub.reset_log()
    full = _cli(client_env, "check", "hf://datasets/tester/bytes-once", "--quiet", "--workers", "1", "--json",
                "--storage-option", f"block_size={block}")
    rows = sum(pq.read_metadata(p).num_rows for p in shards)
    assert full.returncode == 1 and json.loads(full.stdout)["stats"]["rows"] == rows, full.stderr[-2000:]  # no card
    with hub._lock:
        got = [r for r in hub.requests if "/resolve/" in r.path and r.path.endswith(".parquet")]
    served = sum(r.bytes_out for r in got)
    shard_bytes = sum(p.stat().st_size for p in shards)
    footers = 2 * sum(min(64 << 10, p.stat().st_size) for p in shards)
    assert shard_bytes <= served <= shard_bytes + footers, (served, shard_bytes, footers)
    assert len(got) <= 3 * len(shards)  # two footer reads and one request a row group


_STREAM = r"""
import json, re, sys
from datasets import load_dataset
from huggingface_hub import hf_hub_download
from fusionrs_hf.torch import make_dataloader

repo = sys.argv[1]
out = {}
ds = load_dataset(repo, "iraware", split="train", streaming=True)
rows = list(ds)
out["stock"] = sorted(r["sample_id"] for r in rows)
out["decoded"] = rows[0]["rgb"].size[0] > 0 and rows[0]["ir"].mode == "RGB"
card = open(hf_hub_download(repo, "README.md", repo_type="dataset")).read()
code = re.search(r"```python\n(.*?)```", card.split("## Load", 1)[1], re.S)[1]
ns = {}
exec(code, ns)  # the card's Load snippet, as written
out["snippet"] = ns["row"]["sample_id"]
loader = make_dataloader(repo, config="default", split="train", batch_size=4, image_size=16, num_workers=2)
out["loader"] = [s for b in loader for s in b["sample_id"]]
print(json.dumps(out))
"""


def test_stock_streaming_the_card_snippet_and_make_dataloader(hub, client_env, pushed, sample_repo):
    hub.reset_log()
    res = subprocess.run([sys.executable, "-c", _STREAM, REPO], capture_output=True, text=True, timeout=300,
                         env=client_env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    iraware = _ids(sample_repo, "data/*/train/iraware-*.parquet")
    assert out["stock"] == iraware and out["decoded"] and out["snippet"] in iraware
    assert sorted(out["loader"]) == _ids(sample_repo, "data/*/train/*.parquet")
    assert len(out["loader"]) == len(set(out["loader"]))
    ranged = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path and r.range]
    assert ranged and all(r.status == 206 for r in ranged)  # parquet read by byte ranges, not whole files
    assert hub.count("GET", r"/tree/") >= 1 and not [r for r in hub.requests if r.status == 500]


def test_server_knobs_latency_bandwidth_and_faults(hub, pushed, monkeypatch):
    """The settings the remote-streaming benchmark uses: per-request latency, a bandwidth cap, injected 503s."""
    import time

    from huggingface_hub import HfFileSystem, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline; this one talks to the server

    fs = HfFileSystem(endpoint=hub.url, token=TOKEN, skip_instance_cache=True)
    path = f"datasets/{REPO}/data/nwpu/train/base-main-00000.parquet"
    size = fs.size(path)
    hub.latency_s, hub.bandwidth_bps = 0.2, 200_000
    try:
        t0 = time.monotonic()
        with fs.open(path, "rb", block_size=0) as f:
            data = f.read()
        took = time.monotonic() - t0
    finally:
        hub.latency_s, hub.bandwidth_bps = 0.0, None
    assert len(data) == size and took >= 0.2 + size / 200_000 * 0.8
    fault = hub.inject(503, method="GET", path=r"/resolve/", ranged=True, times=1)
    with fs.open(path, "rb", block_size=4096, cache_type="none") as f:
        f.seek(size - 100)
        tail = f.read(100)  # the client retries the 503 once
    assert tail == data[-100:] and fault.hits == 1
    hub.clear_faults()
