"""``fusionrs bench``: its options, and one run that measures every pipeline and writes the table."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from .data import _files_under, _shards, _warm_cache, bench_repo, litdata_dir, mds_dir, wds_shards
from .measure import _first_batch_pass, check_same_output, decode_limit, measure_rss, rss_child, time_pass
from .peers import loader_litdata, loader_mosaic, peer_decode, peer_missing
from .pipelines import loader_ours, loader_stock, loader_wds
from .remote import remote_bench, remote_child
from .report import (
    SECTION,
    _default_benchmarks_path,
    machine,
    render_markdown,
    targets_met,
    versions,
    write_section,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=None, help="triplets in the benchmark repo (default 2200; 200 with --quick)")
    p.add_argument("--source-size", type=int, default=512, help="stored image size in px (default 512)")
    p.add_argument("--image-size", type=int, default=224, help="model input size in px (default 224)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for every pipeline (default 2)")
    p.add_argument("--repeat", type=int, default=None, help="passes per pipeline, best kept (default 3; 1 with --quick)")
    p.add_argument("--decode-repeat", type=int, default=None,
                   help="passes of ours, ours uint8, (c) and (c') for the decode-limit ratios, best kept (default 5; "
                        "the ratios' margins are smaller than the run-to-run noise of 3 passes; --repeat with --quick)")
    p.add_argument("--cache", default=os.environ.get("FUSIONRS_BENCH_CACHE",
                                                     str(Path.home() / ".cache" / "fusionrs" / "bench")),
                   help="where the generated repo and tar shards are kept (env FUSIONRS_BENCH_CACHE)")
    p.add_argument("--quick", action="store_true", help="smaller repo and one pass each: under a minute")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS pass")
    p.add_argument("--write", default=None, metavar="PATH",
                   help="BENCHMARKS.md to update (default: the project's, full runs only)")
    p.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    p.add_argument("--check", action="store_true", help="exit 1 when a target ratio is missed")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    p.add_argument("--remote", action="store_true",
                   help="also stream over HTTP: the repo served by the local Hub-API server with --latency-ms and "
                        "--bandwidth-mbps, ours and stock `datasets` read with the real huggingface_hub client, and "
                        "plan time / first batch at --plan-shards shards")
    p.add_argument("--latency-ms", type=float, default=40.0, help="--remote: added per request (default 40)")
    p.add_argument("--bandwidth-mbps", type=float, default=400.0, help="--remote: bandwidth cap (default 400)")
    p.add_argument("--plan-shards", type=int, default=256, help="--remote: shards of the plan-time repo (default 256)")
    p.add_argument("--read-ahead", type=int, default=2, help="--remote: ours' read_ahead (default 2)")
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--remote-child", default=None, help=argparse.SUPPRESS)




def _log(args, msg: str) -> None:
    if not args.quiet:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(args) -> int:
    from ..errors import CliError

    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return 0
    if args.remote_child:
        print(json.dumps(remote_child(args.remote_child, args)))
        return 0
    rows = args.rows or (200 if args.quick else 2200)
    repeat = args.repeat or (1 if args.quick else 3)
    decode_repeat = max(repeat, args.decode_repeat or (repeat if args.quick else 5))
    if rows < 10 or args.workers < 1 or args.batch_size < 1:
        raise CliError("--rows must be >= 10, --workers and --batch-size >= 1")
    if args.remote and (args.latency_ms < 0 or args.bandwidth_mbps <= 0 or args.plan_shards < 1 or args.read_ahead < 0):
        raise CliError("--latency-ms must be >= 0, --bandwidth-mbps > 0, --plan-shards >= 1, --read-ahead >= 0")
    log = lambda m: _log(args, m)  # noqa: E731
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    repo = bench_repo(cache, rows, args.source_size, log)
    tars = wds_shards(repo, log)
    shards = _shards(repo)
    skipped: dict[str, str] = {}
    peer_dirs: dict[str, Path] = {}
    for name, make in (("litdata", litdata_dir), ("mosaic", mds_dir)):
        why = peer_missing(name)
        if why is None:
            peer_dirs[name] = make(repo, log)
        else:
            skipped[name] = why
            log(f"skipping {name}: {why}")
    _warm_cache(list(shards) + tars + [f for d in peer_dirs.values() for f in _files_under(d)])

    import warnings

    for msg in (".*worker processes in total.*", ".*NumPy array is not writable.*", ".*To copy construct from a tensor.*",
                ".*num_canonical_nodes.*", ".*shuffle_block_size.*"):
        warnings.filterwarnings("ignore", message=msg)
    runs = {
        "ours": lambda: _first_batch_pass(lambda: loader_ours(repo, args)),
        "ours_uint8": lambda: time_pass(loader_ours(repo, args, normalize=False)),
        "stock": lambda: time_pass(loader_stock(repo, args)),
        "webdataset": lambda: time_pass(loader_wds(tars, args)),
        "webdataset_ours": lambda: time_pass(loader_wds(tars, args, our_decode=True)),
        "decode_limit": lambda: decode_limit(repo, args),
        "decode_norm_limit": lambda: decode_limit(repo, args, normalize=True),
    }
    if "litdata" in peer_dirs:
        runs["litdata"] = lambda: time_pass(loader_litdata(peer_dirs["litdata"], args))
    if "mosaic" in peer_dirs:
        runs["mosaic"] = lambda: time_pass(loader_mosaic(peer_dirs["mosaic"], args))
    results: dict[str, dict] = {}
    ref: dict | None = None  # ours' first pass: every pass of every pipeline must read what it read
    decode_group = ("ours", "ours_uint8", "decode_limit", "decode_norm_limit")
    for rep in range(decode_repeat):  # interleaved repetitions: drift hits every pipeline alike
        for name, fn in runs.items():
            if rep >= repeat and name not in decode_group:
                continue  # the extra rounds are the decode-limit comparison's, all four of it in each
            r = fn()
            log(f"pass {rep + 1}/{repeat if name not in decode_group else decode_repeat}: {name} "
                f"{r['samples_per_s']:.0f} rows/s")
            if "_ids" in r:
                if ref is None:
                    ref = {k: r[k] for k in ("_ids", "_fp", "shape", "dtype")}
                diff = check_same_output(name, r, ref, "uint8" if name == "ours_uint8" else None)
                r["max_fingerprint_diff"] = round(diff, 4)
                del r["_ids"], r["_fp"]
            if name not in results or r["samples_per_s"] > results[name]["samples_per_s"]:
                results[name] = r
    total_rows = results["ours"]["rows_total"]
    ours = results["ours"]["samples_per_s"]

    def ratio(a: float, b: str) -> float | None:
        return round(a / results[b]["samples_per_s"], 3) if b in results else None

    res = {
        "samples_per_s": round(ours, 1),
        "vs_stock": ratio(ours, "stock"),
        "vs_webdataset": ratio(ours, "webdataset"),
        "vs_litdata": ratio(ours, "litdata"),
        "vs_mosaic": ratio(ours, "mosaic"),
        "vs_decode_limit": ratio(ours, "decode_limit"),
        "vs_decode_norm_limit": ratio(ours, "decode_norm_limit"),
        "uint8_vs_decode_limit": ratio(results["ours_uint8"]["samples_per_s"], "decode_limit"),
        "ours_vs_wds_our_decode": ratio(ours, "webdataset_ours"),
        "peak_rss_mb": None,
        "rows": total_rows, "shards": len(shards), "source_size": args.source_size, "image_size": args.image_size,
        "batch_size": args.batch_size, "workers": args.workers, "repeat": repeat, "decode_repeat": decode_repeat,
        "quick": bool(args.quick),
        "peer_shards": {name: sum(1 for f in _files_under(d) if f.suffix in (".bin", ".mds"))
                        for name, d in peer_dirs.items()},
        "peer_decode": peer_decode(peer_dirs),
        "skipped": skipped,
        "results": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
                    for k, v in results.items()},
        "machine": machine(), "versions": versions(),
        "command": "fusionrs bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if Path(sys.argv[0]).name == "fusionrs" else " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
    }
    if args.remote:
        res.update(remote_bench(repo, cache, args, results, ref, repeat, log))
        res["results"] = {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
                          for k, v in results.items()}
    if not args.no_rss:
        log("peak RSS pass (fresh process, shuffle buffer 1000)")
        res["rss"] = measure_rss(repo, args)
        res["peak_rss_mb"] = round(res["rss"]["peak_rss_mb"], 1)
    res["targets_met"] = targets_met(res)
    met = res["targets_met"]
    md = render_markdown(res)
    if not args.no_write and (args.write or not args.quick):
        path = Path(args.write) if args.write else _default_benchmarks_path()
        write_section(path, md)
        res["written_to"] = str(path)
        log(f"wrote section bench:{SECTION} of {path}")
    if args.json:
        print(json.dumps(res))
    else:
        print(md)
    return 1 if args.check and not all(met.values()) else 0





def main(argv: list[str] | None = None) -> int:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="fusionrs bench", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    return run(p.parse_args(argv))
