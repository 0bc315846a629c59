"""``fusionrs bench --remote``: the same repo over real HTTP from the local Hub-API test server, with latency
and a bandwidth cap, each pass in a fresh process reading with the real ``huggingface_hub`` client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .data import CONFIG, PLAN_REPO, REMOTE_REPO, SPLIT, _repo_files, plan_repo
from .measure import _RssSampler, _torch, check_same_output, time_pass
from .pipelines import _StockMap


def remote_child(pipeline: str, args) -> dict:
    """Run in a fresh process whose ``HF_ENDPOINT`` names the bench's Hub server: one pass of ``pipeline``
    (``ours``, ``stock`` or ``plan``), timed from the loader's construction to the first batch and over the
    pass, with the real ``huggingface_hub`` client."""
    import warnings

    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    # Imports first, for every pipeline alike: first batch counts from the loader's construction, as in the
    # local passes (run in a process that has imported everything already).
    import huggingface_hub.hf_api  # noqa: F401 - what both pipelines' first Hub request imports
    from datasets import load_dataset
    from torch.utils.data import DataLoader

    from ..torch import BATCH_KEYS, FusionRSIterable, make_dataloader

    if pipeline == "plan":
        t0 = time.perf_counter()
        ds = FusionRSIterable(f"hf://datasets/{PLAN_REPO}", CONFIG, SPLIT, batch_size=args.batch_size,
                              image_size=args.image_size)
        plan_s = time.perf_counter() - t0
        loader = _loader_for(ds, args)
        first = next(iter(loader))
        return {"plan_s": plan_s, "first_batch_s": time.perf_counter() - t0, "rows": len(first["sample_id"]),
                "shards": len({u.shard for u in ds.units}), "units": len(ds.units)}
    t0 = time.perf_counter()
    if pipeline == "ours":
        loader = make_dataloader(f"hf://datasets/{REMOTE_REPO}", config=CONFIG, split=SPLIT,
                                 batch_size=args.batch_size, num_workers=args.workers, image_size=args.image_size,
                                 seed=0, read_ahead=args.read_ahead)
    else:
        ds = load_dataset(REMOTE_REPO, CONFIG, split=SPLIT, streaming=True)
        ds = ds.select_columns(list(BATCH_KEYS)).with_format("torch").map(_StockMap(args.image_size))
        loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    build_s = time.perf_counter() - t0
    with _RssSampler() as rss:
        r = time_pass(loader)
    r["first_batch_s"] = build_s + r["startup_s"]
    r.update(rss.summary())
    r["_fp"] = r["_fp"].tolist()
    if pipeline == "ours":
        r["read_stats"] = loader.dataset.read_stats()
    return r


def _loader_for(ds, args):
    from ..torch import loader_for

    return loader_for(ds, num_workers=args.workers)


def _run_remote_child(server, pipeline: str, args, home: Path) -> dict:
    cmd = [sys.executable, "-m", "fusionrs_hf.bench", "--remote-child", pipeline, "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--image-size", str(args.image_size), "--read-ahead", str(args.read_ahead)]
    env = {**os.environ, **server.env(), "HF_HOME": str(home / pipeline), "HF_DATASETS_CACHE": str(home / "ds")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"remote pass {pipeline} failed: {out.stderr.strip()[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if "_fp" in r:
        r["_fp"] = _torch().tensor(r["_fp"])
    return r


def remote_bench(repo: Path, cache: Path, args, results: dict, ref: dict, repeat: int, log) -> dict:
    """Ours and stock `datasets` streaming over HTTP from the local Hub-API server with ``--latency-ms`` per
    request and a ``--bandwidth-mbps`` cap, plus plan time and first batch at ``--plan-shards`` shards.
    Adds ``remote_ours``/``remote_stock`` to ``results``; returns the ``--json`` keys."""
    import tempfile

    from ..testing.hub_server import HubServer

    plan_root = plan_repo(cache, args.plan_shards, log)
    latency, bps = args.latency_ms / 1000.0, args.bandwidth_mbps * 1e6 / 8
    with tempfile.TemporaryDirectory(prefix="fusionrs-bench-remote-") as tmp, HubServer() as server:
        server.create_repo(REMOTE_REPO, files=_repo_files(repo))
        server.create_repo(PLAN_REPO, files=_repo_files(plan_root))
        server.latency_s, server.bandwidth_bps = latency, bps
        home = Path(tmp)
        for rep in range(repeat):
            for name, pipeline in (("remote_ours", "ours"), ("remote_stock", "stock")):
                log(f"remote pass {rep + 1}/{repeat}: {pipeline} ({args.latency_ms:g} ms, {args.bandwidth_mbps:g} Mbit/s)")
                before = len(server.requests)
                r = _run_remote_child(server, pipeline, args, home)
                # what crossed the link: the ceiling a capped link puts on rows/s, whatever the loader does
                r["bytes_served"] = sum(q.bytes_out for q in server.requests[before:])
                r["link_rows_per_s"] = round(bps / (r["bytes_served"] / r["rows_total"]), 1)
                r["max_fingerprint_diff"] = round(check_same_output(name, r, ref), 4)
                del r["_ids"], r["_fp"]
                if name not in results or r["samples_per_s"] > results[name]["samples_per_s"]:
                    results[name] = r
        log(f"remote plan: {args.plan_shards} shards")
        plans = [_run_remote_child(server, "plan", args, home) for _ in range(repeat)]
        plan = min(plans, key=lambda p: p["first_batch_s"])
        requests = len(server.requests)
    results["remote_plan"] = plan
    ours, stock = results["remote_ours"]["samples_per_s"], results["remote_stock"]["samples_per_s"]
    local, link = results["ours"]["samples_per_s"], results["remote_ours"]["link_rows_per_s"]
    return {
        "remote_samples_per_s": round(ours, 1),
        "remote_vs_local": round(ours / local, 3),
        "remote_link_rows_per_s": link,
        "remote_vs_attainable": round(ours / min(local, link), 3),
        "remote_vs_stock": round(ours / stock, 3),
        "first_batch_s_remote": round(plan["first_batch_s"], 3),
        "plan_s_remote": round(plan["plan_s"], 3),
        "first_batch_s_remote_full": round(results["remote_ours"]["first_batch_s"], 3),
        "first_batch_s_stock_remote": round(results["remote_stock"]["first_batch_s"], 3),
        "peak_rss_mb_remote": results["remote_ours"]["peak_rss_mb"],
        "remote": {"latency_ms": args.latency_ms, "bandwidth_mbps": args.bandwidth_mbps, "read_ahead": args.read_ahead,
                   "plan_shards": plan["shards"], "server_requests": requests},
    }

