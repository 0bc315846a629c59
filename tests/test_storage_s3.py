"""Issue 13: a repo on S3, against a real S3 API (moto's server on 127.0.0.1, started once for this module).

push, re-push with zero PUTs, check, ``fusionrs_hf.load``, the card's Load snippet run as written, and
``make_dataloader`` with 2 workers under fork, spawn and forkserver, all through ``storage_options`` / the CLI's
``--storage-option``; credentials come from the environment, as a user's would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from fusionrs_hf.testing.s3_server import S3Server  # noqa: E402

from .conftest import SAMPLE_SHARDS  # noqa: E402

BUCKET = "fusionrs-bucket"


@pytest.fixture(scope="module")
def s3():
    mp = pytest.MonkeyPatch()
    with S3Server() as server:
        for k, v in server.env().items():  # credentials as a user has them: in the environment
            mp.setenv(k, v)
        server.create_bucket(BUCKET)
        yield server
    mp.undo()


@pytest.fixture(scope="module")
def pushed(s3, sample_repo):
    """The session sample repo pushed once to s3://BUCKET/repo (endpoint only in storage_options)."""
    from fusionrs_hf.push import push_repo

    url = f"s3://{BUCKET}/repo"
    res = push_repo(sample_repo, url, storage_options={"endpoint_url": s3.url})
    assert res.ok and len(res.plan.upload) == SAMPLE_SHARDS
    return url


def _opts(s3) -> dict:
    return {"endpoint_url": s3.url}


def _ids(repo: Path, pattern: str) -> list[str]:
    return sorted(sid for p in sorted(repo.glob(pattern))
                  for sid in pq.read_table(p, columns=["sample_id"]).column(0).to_pylist())


def test_repush_of_an_unchanged_repo_sends_no_put(s3, pushed, sample_repo):
    from fusionrs_hf.push import push_repo

    s3.reset_log()
    again = push_repo(sample_repo, pushed, storage_options=_opts(s3))
    assert again.plan.empty and again.uploaded_files == 0
    methods = Counter(r.method for r in s3.requests)
    assert methods["PUT"] == 0 and methods["POST"] == 0 and methods["DELETE"] == 0, methods
    assert s3.count() > 0  # it did look (listing, manifest)


def test_cli_push_with_storage_option_then_nothing_to_do(s3, sample_repo, tmp_path):
    env = {**os.environ, **s3.env()}
    url = f"s3://{BUCKET}/cli"
    cmd = [sys.executable, "-m", "fusionrs_hf.cli", "push", str(sample_repo), url, "--quiet", "--skip-check",
           "--storage-option", f"endpoint_url={s3.url}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    puts = s3.count("PUT", f"/{BUCKET}/cli/")
    assert puts >= SAMPLE_SHARDS + 1  # every shard and the card
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0 and "nothing to do" in second.stdout, second.stdout + second.stderr
    assert s3.count("PUT", f"/{BUCKET}/cli/") == puts
    assert s3.secret not in first.stdout + first.stderr + second.stdout + second.stderr


def test_check_over_s3_python_and_cli(s3, pushed):
    from fusionrs_hf.check import check_repo

    fast = check_repo(pushed, fast=True, storage_options=_opts(s3))
    full = check_repo(pushed, storage_options=_opts(s3), workers=2)
    assert fast.ok and full.ok, (fast.findings[:3], full.findings[:3])
    assert full.stats["images_decoded"] == 2 * full.stats["rows"] > 0
    cli = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "check", pushed, "--fast", "--quiet",
                          "--storage-option", f"endpoint_url={s3.url}"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, **s3.env()})
    assert cli.returncode == 0 and "OK: no findings" in cli.stdout, cli.stdout + cli.stderr


def test_fusionrs_load_reads_the_s3_repo(s3, pushed, sample_repo):
    import fusionrs_hf

    ds = fusionrs_hf.load("iraware", split="train", streaming=True, repo=pushed, storage_options=_opts(s3))
    rows = list(ds)
    assert sorted(r["sample_id"] for r in rows) == _ids(sample_repo, "data/*/train/iraware-*.parquet")
    assert rows[0]["rgb"].size[0] > 0 and rows[0]["ir_caption"]  # images decode, IR captions are there
    every = fusionrs_hf.load("nwpu", streaming=True, repo=pushed, storage_options=_opts(s3))
    assert set(every) == {"train", "validation", "test"}


def test_the_cards_load_snippet_works_as_written(s3, pushed, sample_repo):
    """The Load section of the card push wrote is executed as it stands (credentials from the env)."""
    import fsspec

    card = fsspec.filesystem("s3", **s3.storage_options).cat_file(f"{BUCKET}/repo/README.md").decode()
    assert s3.secret not in card and s3.key not in card  # credentials are never written down
    code = re.search(r"```python\n(.*?)```", card.split("## Load", 1)[1], re.S)[1]
    assert '"parquet"' in code and "storage_options" in code and s3.url in code
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - the snippet as a user copies it
    assert ns["row"]["sample_id"] in _ids(sample_repo, "data/*/train/iraware-*.parquet")
    assert ns["row"]["rgb"].size[0] > 0 and ns["row"]["ir_caption"]
    # and the pictures the card shows were pushed beside it
    links = re.findall(r"\]\((assets/[^)]+)\)", card)
    fs = fsspec.filesystem("s3", **s3.storage_options)
    assert links and all(fs.exists(f"{BUCKET}/repo/{rel}") for rel in links)
    assert all(fs.cat_file(f"{BUCKET}/repo/{rel}") == (sample_repo / rel).read_bytes() for rel in links)


@pytest.mark.parametrize("context", ["fork", "spawn", "forkserver"])
def test_make_dataloader_two_workers(s3, pushed, sample_repo, context):
    from fusionrs_hf.torch import make_dataloader

    loader = make_dataloader(pushed, config="default", split="train", batch_size=4, image_size=16, num_workers=2,
                             multiprocessing_context=context, storage_options=_opts(s3))
    # used in this process first (planning listed the store and read footers): workers must not reuse it
    assert loader.dataset.fs.protocol[0] in ("s3", "s3a")
    got = [sid for batch in loader for sid in batch["sample_id"]]
    assert sorted(got) == _ids(sample_repo, "data/*/train/*.parquet") and len(got) == len(set(got))


def test_example_trainer_reads_the_s3_repo_and_writes_no_secret(s3, pushed, tmp_path):
    """examples/train_clip.py with --storage-option (endpoint and credentials): it trains and evaluates on the
    S3 repo, and metrics.json records the endpoint but neither key nor secret."""
    import contextlib
    import importlib.util
    import io
    import json

    spec = importlib.util.spec_from_file_location("example_train_clip",
                                                  Path(__file__).parents[1] / "examples" / "train_clip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = mod.main(["--data", pushed, "--config", "default", "--model", "tiny", "--image-size", "32", "--steps", "2",
                       "--batch-size", "4", "--out", str(tmp_path / "run"), "--device", "cpu",
                       "--storage-option", f"endpoint_url={s3.url}", "--storage-option", f"key={s3.key}",
                       "--storage-option", f"secret={s3.secret}"])
    assert rc == 0, err.getvalue()
    assert json.loads(out.getvalue().strip().splitlines()[-1])["n_images"] > 0
    saved = (tmp_path / "run" / "metrics.json").read_text()
    assert json.loads(saved)["config"]["storage_options"] == {"endpoint_url": s3.url}
    assert s3.secret not in saved and s3.key not in saved


def test_the_eval_cache_key_sees_an_s3_shard_rewritten_at_the_same_size(s3, pushed):
    """s3fs names its facts ETag and LastModified: the embedding cache's key must change when a shard's bytes do,
    even at the same size (it kept only lowercase keys, so an S3 repo's key held the size alone)."""
    import fsspec

    from fusionrs_hf.eval.embed import data_fingerprint

    before = data_fingerprint(pushed, "rsicd", "test", storage_options=_opts(s3))
    shard = before["shards"][0][0]
    fs = fsspec.filesystem("s3", endpoint_url=s3.url)
    path = f"{BUCKET}/repo/{shard}"
    data = fs.cat_file(path)
    assert '"etag"' in before["shards"][0][1]
    fs.pipe_file(path, data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])  # one byte flipped, same size
    try:
        fs.invalidate_cache()
        after = data_fingerprint(pushed, "rsicd", "test", storage_options=_opts(s3))
        assert after["shards"][0][0] == shard and after != before
    finally:
        fs.pipe_file(path, data)


def test_options_a_stock_load_dataset_call_added_to_still_open_the_store(s3, pushed, sample_repo):
    """The card's snippet passes ``storage_options=opts`` to stock ``load_dataset``, which adds an ``"hf"`` entry to
    that very dict; handed on to ``make_dataloader`` it reached s3fs and failed ("unexpected keyword argument
    'hf'"). A non-Hub store now ignores it."""
    from datasets import load_dataset

    from fusionrs_hf.torch import make_dataloader

    opts = _opts(s3)
    next(iter(load_dataset("parquet", data_files={"train": f"{pushed}/data/*/train/*.parquet"}, split="train",
                           streaming=True, storage_options=opts)))
    assert "hf" in opts  # what stock datasets does to a caller's dict (if it stops, this test has no case left)
    loader = make_dataloader(pushed, config="default", split="train", batch_size=4, image_size=16,
                             storage_options=opts)
    got = [sid for batch in loader for sid in batch["sample_id"]]
    assert sorted(got) == _ids(sample_repo, "data/*/train/*.parquet")
