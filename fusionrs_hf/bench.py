"""Measure FusionRS streaming throughput against stock `datasets`, WebDataset and the decode limit.

What runs (all in one invocation, same machine, same images):

  ours          fusionrs_hf.torch.make_dataloader: parquet row groups read with pyarrow, JPEG decoded
                at reduced DCT scale, centre crop + resize to --image-size, CLIP-normalized.
  (a) stock     load_dataset(repo, "default", split="train", streaming=True).with_format("torch")
                + .map() doing the same crop/resize/normalize on the decoded tensors.
  (b) wds       the same images as WebDataset tar shards (one tar per parquet shard),
                webdataset.WebDataset(...).decode("pil") + the same crop/resize/normalize.
  (b') wds+ours WebDataset reading raw bytes, decoded with our decoder (shows where the gain comes from).
  (c) limit     our decode+resize of both images in a tight loop over bytes already in memory,
                2 processes: no reading, batching, normalization or IPC.
  ours uint8    ours with normalize=False: uint8 batches, for normalizing on the accelerator.
  (c') +norm    the same loop, also normalizing into float32 batch memory as ours must: for
                reference, it splits our distance to (c) into normalization and the rest.

Every pipeline uses a torch DataLoader with --workers workers (2) and batch size --batch-size, decodes
both images of every row, and is timed over one full pass from the first batch to the last
(worker start-up excluded, the same for all). Peak RSS (the process plus its workers) is measured in a
fresh subprocess over one full shuffled pass with a 1,000-row shuffle buffer.

The benchmark repo (>= 2,000 triplets of 512 px textured JPEGs by default) is generated once with
fusionrs_hf.demo.make_sample_repo into --cache and reused. The table is printed and written to
BENCHMARKS.md (section bench:stream).

Examples:
  fusionrs bench                 # full run (first run also generates ~2,200 triplets, a few minutes)
  fusionrs bench --quick --json  # a smaller run in under a minute, one JSON object on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

SECTION = "stream"
START, END = f"<!-- bench:{SECTION}:start -->", f"<!-- bench:{SECTION}:end -->"
TARGETS = {"vs_stock": 1.5, "vs_webdataset": 1.2, "vs_decode_limit": 0.85, "peak_rss_mb": 1536}
CONFIG, SPLIT = "default", "train"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=None, help="triplets in the benchmark repo (default 2200; 200 with --quick)")
    p.add_argument("--source-size", type=int, default=512, help="stored image size in px (default 512)")
    p.add_argument("--image-size", type=int, default=224, help="model input size in px (default 224)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for every pipeline (default 2)")
    p.add_argument("--repeat", type=int, default=None, help="passes per pipeline, best kept (default 3; 1 with --quick)")
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
    p.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)


# ---------------------------------------------------------------------------------------------
# data preparation


def _log(args, msg: str) -> None:
    if not args.quiet:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


def bench_repo(cache: Path, rows: int, size: int, log=lambda m: None) -> Path:
    """The generated benchmark repo (made once, then reused): 5 sources x ceil(rows/5) train triplets."""
    from .demo import make_sample_repo

    per_source = math.ceil(rows / 5)
    out = cache / f"repo-{per_source * 5}x{size}"
    if (out / ".complete").exists():
        return out
    log(f"generating {per_source * 5} triplets at {size} px into {out} (once; reused later)")
    # <= 250 rows per shard: several shards per source, ~20 MB each at 512 px, one row group each
    max_rows = 250 if per_source >= 250 else max(20, per_source // 2)
    make_sample_repo(out, counts={"train": per_source}, size=size, max_rows=max_rows)
    (out / ".complete").write_text("ok\n")
    return out


def _shards(repo: Path) -> list[Path]:
    import fsspec

    from .layout import config_files, list_shards

    shards, _ = list_shards(fsspec.filesystem("file"), str(repo))
    return [repo / f for f in config_files(CONFIG, SPLIT, [s.path for s in shards])]


def wds_shards(repo: Path, log=lambda m: None) -> list[str]:
    """One tar per parquet shard, same rows in the same order: KEY.rgb.jpg, KEY.ir.jpg, KEY.json."""
    import io

    import pyarrow.parquet as pq

    from .torch import BATCH_KEYS

    out_dir = repo / "_wds"
    done = out_dir / ".complete"
    shards = _shards(repo)
    tars = [out_dir / (p.relative_to(repo / "data").as_posix().replace("/", "__")[: -len(".parquet")] + ".tar")
            for p in shards]
    if done.exists():
        return [str(t) for t in tars]
    log(f"writing {len(tars)} WebDataset tar shards")
    out_dir.mkdir(exist_ok=True)
    for src, tar in zip(shards, tars, strict=True):
        table = pq.read_table(src, columns=list(BATCH_KEYS))
        with tarfile.open(tar, "w") as tf:
            for row in table.to_pylist():
                key = row["sample_id"]
                meta = {k: row[k] for k in ("sample_id", "source", "caption", "ir_caption")}
                for name, data in ((f"{key}.rgb.jpg", row["rgb"]["bytes"]), (f"{key}.ir.jpg", row["ir"]["bytes"]),
                                   (f"{key}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(data), 0
                    tf.addfile(info, io.BytesIO(data))
    done.write_text("ok\n")
    return [str(t) for t in tars]


def _warm_cache(paths) -> None:
    """Read every file once so no pipeline pays for a cold page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 22):
                pass


# ---------------------------------------------------------------------------------------------
# pipelines (module level so that spawn-started workers could pickle them)


class _Prep:
    """The shared post-decode step: HWC uint8 -> centre crop + resize -> normalized float (3,S,S)."""

    def __init__(self, size: int) -> None:
        from .decode import Normalizer

        self.size, self.norm = size, Normalizer()

    def image(self, img):
        import numpy as np
        import torch

        from .decode import center_crop_resize, pil_to_array

        if isinstance(img, torch.Tensor):  # datasets' torch format gives CHW uint8
            arr = img.permute(1, 2, 0) if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3) else img
        elif isinstance(img, np.ndarray):
            arr = img
        else:
            arr = pil_to_array(img)
        return self.norm(center_crop_resize(arr, self.size))


class _StockMap(_Prep):
    def __call__(self, ex: dict) -> dict:
        ex["rgb"] = self.image(ex["rgb"])
        ex["ir"] = self.image(ex["ir"])
        ex["ir_caption"] = ex["ir_caption"] or ""  # default_collate cannot batch None
        return ex


class _WdsMap(_Prep):
    def __call__(self, ex: dict) -> dict:
        meta = ex["json"]
        return {"rgb": self.image(ex["rgb.jpg"]), "ir": self.image(ex["ir.jpg"]), "caption": meta["caption"],
                "ir_caption": meta["ir_caption"] or "", "sample_id": meta["sample_id"], "source": meta["source"]}


class _WdsOursMap(_WdsMap):
    def image(self, img):
        from .decode import decode_resize

        if isinstance(img, bytes):
            return self.norm(decode_resize(img, self.size))
        return super().image(img)

    def __call__(self, ex: dict) -> dict:
        ex = dict(ex)
        ex["json"] = json.loads(ex["json"])
        return super().__call__(ex)


def loader_ours(repo: Path, args, shuffle: bool = False, normalize: bool = True):
    from .torch import make_dataloader

    return make_dataloader(repo, config=CONFIG, split=SPLIT, batch_size=args.batch_size, num_workers=args.workers,
                           image_size=args.image_size, shuffle=shuffle, seed=0, shuffle_buffer=1000,
                           normalize=normalize)


def loader_stock(repo: Path, args):
    from datasets import load_dataset
    from torch.utils.data import DataLoader

    from .torch import BATCH_KEYS

    ds = load_dataset(str(repo), CONFIG, split=SPLIT, streaming=True)
    ds = ds.select_columns(list(BATCH_KEYS))
    ds = ds.with_format("torch").map(_StockMap(args.image_size))
    return DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


def loader_wds(tars: list[str], args, our_decode: bool = False):
    import webdataset as wds
    from torch.utils.data import DataLoader

    ds = wds.WebDataset(tars, shardshuffle=False, empty_check=False)
    ds = ds.map(_WdsOursMap(args.image_size)) if our_decode else ds.decode("pil").map(_WdsMap(args.image_size))
    return DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


def time_pass(loader) -> dict:
    """One full pass: rows/s from the first batch to the last (start-up excluded), plus checks."""
    t_start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t0 = time.perf_counter()
    n, ids = 0, set(first["sample_id"])
    shape = tuple(first["rgb"].shape[1:])
    for batch in it:
        n += len(batch["sample_id"])
        ids.update(batch["sample_id"])
        assert batch["ir"].dtype == batch["rgb"].dtype
    t1 = time.perf_counter()
    return {"rows": n, "rows_total": n + len(first["sample_id"]), "unique": len(ids), "seconds": t1 - t0,
            "startup_s": t0 - t_start, "samples_per_s": n / (t1 - t0) if t1 > t0 else float("nan"),
            "shape": shape}


def _decode_worker(args_tuple) -> tuple[int, float]:
    payload, size, barrier_time, normalize, batch = args_tuple

    from .decode import Normalizer, decode_resize, empty_images

    # (c'): batch-sized float32 buffers, 4 of them in turn, in the loader's default (channels-last)
    # layout, like the slots our workers write into
    norm = Normalizer() if normalize else None
    ring = [empty_images((2, batch, 3, size, size)).zero_() for _ in range(4)] if normalize else []
    while time.time() < barrier_time:  # start both processes together
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i, (rgb, ir) in enumerate(payload):
        a, b = decode_resize(rgb, size), decode_resize(ir, size)
        if norm is not None:
            slot, j = ring[(i // batch) % 4], i % batch
            norm(a, slot[0, j])
            norm(b, slot[1, j])
    return len(payload), time.perf_counter() - t0


def decode_limit(repo: Path, args, normalize: bool = False) -> dict:
    """(c): our decode+resize of both images, bytes in memory, ``workers`` processes, no pipeline.

    ``normalize=True`` gives (c'), which also normalizes into float32 batch memory.
    """
    import multiprocessing as mp

    import pyarrow.parquet as pq

    from .schema import IMAGE_FIELDS

    pairs = []
    for p in _shards(repo):
        t = pq.read_table(p, columns=list(IMAGE_FIELDS))
        pairs += list(zip(t.column("rgb").combine_chunks().field("bytes").to_pylist(),
                          t.column("ir").combine_chunks().field("bytes").to_pylist(), strict=True))
    k = max(1, args.workers)
    parts = [pairs[i::k] for i in range(k)]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(k, initializer=_init_torch_threads) as pool:
        pool.map(_noop, range(k))  # processes up and torch imported before the clock starts
        start_at = time.time() + 0.5
        res = pool.map(_decode_worker, [(part, args.image_size, start_at, normalize, args.batch_size)
                                        for part in parts])
    rows = sum(r for r, _ in res)
    wall = max(s for _, s in res)
    return {"rows": rows, "seconds": wall, "samples_per_s": rows / wall}


def _init_torch_threads() -> None:
    import torch

    torch.set_num_threads(1)  # as in DataLoader workers


def _noop(_):
    import fusionrs_hf.decode  # noqa: F401

    return 0


# ---------------------------------------------------------------------------------------------
# memory


def rss_child(repo: str, args) -> dict:
    """Run in a fresh process: one full shuffled pass, sampling RSS/PSS of this process + workers."""
    import psutil

    proc = psutil.Process()
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = pss = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    mi = p.memory_full_info()
                    rss += mi.rss
                    pss += getattr(mi, "pss", mi.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            samples.append((time.perf_counter(), rss / 2**20, pss / 2**20))
            stop.wait(0.1)

    loader = loader_ours(Path(repo), args, shuffle=True)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    n = 0
    marks = []
    for batch in loader:
        n += len(batch["sample_id"])
        float(batch["rgb"].sum() + batch["ir"].sum())  # read every pixel, as a training step would
        if samples:
            marks.append((n, samples[-1][1]))
    stop.set()
    th.join()
    rss = [s[1] for s in samples]
    pss = [s[2] for s in samples]
    quarter = [m[1] for m in marks if m[0] <= n / 4] or rss[:1]
    return {"rows": n, "peak_rss_mb": max(rss), "peak_pss_mb": max(pss), "rss_first_quarter_mb": max(quarter),
            "rss_last_mb": rss[-1], "shuffle_buffer": 1000}


def measure_rss(repo: Path, args) -> dict:
    cmd = [sys.executable, "-m", "fusionrs_hf.bench", "--rss-child", str(repo), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--image-size", str(args.image_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"RSS pass failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# report


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        mem = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": platform.platform()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("fusionrs-hf", "torch", "datasets", "pyarrow", "pillow", "simplejpeg", "webdataset", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def render_markdown(res: dict) -> str:
    r = res["results"]
    m, v = res["machine"], res["versions"]
    lines = [
        "## Streaming into torch (`fusionrs bench`)",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM ({m['os']})  ",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "  ",
        f"Data: {res['rows']} triplets ({res['source_size']} px textured JPEGs, q90) in {res['shards']} parquet "
        f"shards, config `{CONFIG}` split `{SPLIT}`; batch {res['batch_size']}, {res['workers']} DataLoader "
        f"workers, both images decoded, output {res['image_size']} px (centre crop, resize, CLIP-normalized).",
        "",
        "| pipeline | samples/s | ours ÷ this | target |",
        "|---|---:|---:|---|",
        f"| **fusionrs_hf.torch.make_dataloader** | **{r['ours']['samples_per_s']:.0f}** | 1.00 | |",
        f"| ours with `normalize=False` (uint8 batches; normalize on the GPU), for reference | "
        f"{r['ours_uint8']['samples_per_s']:.0f} | {r['ours']['samples_per_s'] / r['ours_uint8']['samples_per_s']:.2f} "
        f"| (÷ c: {res['uint8_vs_decode_limit']:.2f}) |",
        f"| (a) stock `datasets` streaming + `with_format(\"torch\")` + same resize | {r['stock']['samples_per_s']:.0f} "
        f"| {res['vs_stock']:.2f} | ≥ 1.5 |",
        f"| (b) WebDataset tars, `decode(\"pil\")` + same resize | {r['webdataset']['samples_per_s']:.0f} "
        f"| {res['vs_webdataset']:.2f} | ≥ 1.2 |",
        f"| (b') WebDataset tars + our decoder (for reference) | {r['webdataset_ours']['samples_per_s']:.0f} "
        f"| {res['ours_vs_wds_our_decode']:.2f} | |",
        f"| (c) decode+resize limit, bytes in memory, {res['workers']} processes | "
        f"{r['decode_limit']['samples_per_s']:.0f} | {res['vs_decode_limit']:.2f} | ≥ 0.85 (of c) |",
        f"| (c') (c) + normalization into float32 batch memory (for reference) | "
        f"{r['decode_norm_limit']['samples_per_s']:.0f} | {res['vs_decode_norm_limit']:.2f} | |",
        "",
    ]
    if res.get("rss"):
        s = res["rss"]
        lines += [
            f"Memory, one full shuffled pass (shuffle buffer 1,000 rows), main process + {res['workers']} workers: "
            f"peak RSS **{s['peak_rss_mb']:.0f} MB** (sum of RSS, shared pages counted in every process; PSS "
            f"{s['peak_pss_mb']:.0f} MB); highest in the first quarter of the pass {s['rss_first_quarter_mb']:.0f} MB, "
            f"at the end {s['rss_last_mb']:.0f} MB (flat: no growth with rows read). Target < 1,500 MB.",
            "",
        ]
    lines += [
        "Measured: wall time from the first batch to the last of one full pass (worker start-up excluded for every "
        "pipeline), best of the passes. (a) decodes with `datasets`' own full-size PIL decode; (b) with "
        "webdataset's `decode(\"pil\")`; both then run the same centre-crop/resize/normalize code as ours. "
        "(c) runs only our decode+resize (no reading, normalization, batching or IPC); (c') adds the float32 "
        "normalization every pipeline here must do, so (c')/(c) is the share normalization alone costs and "
        "ours/(c') what reading, batching and IPC cost. Ratios come from one run.",
        "",
        "Targets met: " + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in res["targets_met"].items()) + ".",
    ]
    if res.get("notes"):
        lines += ["", res["notes"]]
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) only this benchmark's marked section of BENCHMARKS.md."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        pre, rest = text.split(START, 1)
        _, post = rest.split(END, 1)
        text = pre + block + post
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def _default_benchmarks_path() -> Path:
    root = Path(__file__).resolve().parents[1]
    return root / "BENCHMARKS.md" if (root / "pyproject.toml").exists() else Path.cwd() / "BENCHMARKS.md"


def run(args) -> int:
    from .cli import CliError

    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return 0
    rows = args.rows or (200 if args.quick else 2200)
    repeat = args.repeat or (1 if args.quick else 3)
    if rows < 10 or args.workers < 1 or args.batch_size < 1:
        raise CliError("--rows must be >= 10, --workers and --batch-size >= 1")
    log = lambda m: _log(args, m)  # noqa: E731
    cache = Path(args.cache).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    repo = bench_repo(cache, rows, args.source_size, log)
    tars = wds_shards(repo, log)
    shards = _shards(repo)
    _warm_cache(list(shards) + tars)

    import warnings

    for msg in (".*worker processes in total.*", ".*NumPy array is not writable.*", ".*To copy construct from a tensor.*"):
        warnings.filterwarnings("ignore", message=msg)
    runs = {
        "ours": lambda: time_pass(loader_ours(repo, args)),
        "ours_uint8": lambda: time_pass(loader_ours(repo, args, normalize=False)),
        "stock": lambda: time_pass(loader_stock(repo, args)),
        "webdataset": lambda: time_pass(loader_wds(tars, args)),
        "webdataset_ours": lambda: time_pass(loader_wds(tars, args, our_decode=True)),
        "decode_limit": lambda: decode_limit(repo, args),
        "decode_norm_limit": lambda: decode_limit(repo, args, normalize=True),
    }
    results: dict[str, dict] = {}
    for rep in range(repeat):  # interleaved repetitions: drift hits every pipeline alike
        for name, fn in runs.items():
            log(f"pass {rep + 1}/{repeat}: {name}")
            r = fn()
            if not name.startswith("decode") and r["rows_total"] != r["unique"]:
                raise RuntimeError(f"{name}: {r['rows_total']} rows but {r['unique']} unique sample ids")
            if name not in results or r["samples_per_s"] > results[name]["samples_per_s"]:
                results[name] = r
    total_rows = results["ours"]["rows_total"]
    for name in ("ours_uint8", "stock", "webdataset", "webdataset_ours"):
        if results[name]["rows_total"] != total_rows:
            raise RuntimeError(f"{name} read {results[name]['rows_total']} rows, ours {total_rows}")
    ours = results["ours"]["samples_per_s"]
    res = {
        "samples_per_s": round(ours, 1),
        "vs_stock": round(ours / results["stock"]["samples_per_s"], 3),
        "vs_webdataset": round(ours / results["webdataset"]["samples_per_s"], 3),
        "vs_decode_limit": round(ours / results["decode_limit"]["samples_per_s"], 3),
        "vs_decode_norm_limit": round(ours / results["decode_norm_limit"]["samples_per_s"], 3),
        "uint8_vs_decode_limit": round(results["ours_uint8"]["samples_per_s"] / results["decode_limit"]["samples_per_s"], 3),
        "ours_vs_wds_our_decode": round(ours / results["webdataset_ours"]["samples_per_s"], 3),
        "peak_rss_mb": None,
        "rows": total_rows, "shards": len(shards), "source_size": args.source_size, "image_size": args.image_size,
        "batch_size": args.batch_size, "workers": args.workers, "repeat": repeat, "quick": bool(args.quick),
        "results": {k: {kk: (list(vv) if isinstance(vv, tuple) else vv) for kk, vv in v.items()}
                    for k, v in results.items()},
        "machine": machine(), "versions": versions(),
        "command": "fusionrs bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if Path(sys.argv[0]).name == "fusionrs" else " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
    }
    if not args.no_rss:
        log("peak RSS pass (fresh process, shuffle buffer 1000)")
        res["rss"] = measure_rss(repo, args)
        res["peak_rss_mb"] = round(res["rss"]["peak_rss_mb"], 1)
    met = {
        "vs_stock": res["vs_stock"] >= TARGETS["vs_stock"],
        "vs_webdataset": res["vs_webdataset"] >= TARGETS["vs_webdataset"],
        "vs_decode_limit": res["vs_decode_limit"] >= TARGETS["vs_decode_limit"],
    }
    if res["peak_rss_mb"] is not None:
        met["peak_rss_mb"] = res["peak_rss_mb"] < TARGETS["peak_rss_mb"]
    res["targets_met"] = met
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
    p = argparse.ArgumentParser(prog="fusionrs bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
