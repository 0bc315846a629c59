"""Measure FusionRS streaming throughput against stock `datasets`, WebDataset, litdata, MosaicML streaming
and the decode limit.

What runs (all in one invocation, same machine, same images):

  ours          fusionrs_hf.torch.make_dataloader: parquet row groups read with pyarrow, JPEG decoded
                at reduced DCT scale, centre crop + resize to --image-size, CLIP-normalized.
  (a) stock     load_dataset(repo, "default", split="train", streaming=True).with_format("torch")
                + .map() doing the same crop/resize/normalize on the decoded tensors.
  (b) wds       the same images as WebDataset tar shards (one tar per parquet shard),
                webdataset.WebDataset(...).decode("pil") + the same crop/resize/normalize.
  (b') wds+ours WebDataset reading raw bytes, decoded with our decoder (shows where the gain comes from).
  (d) litdata   the same JPEG bytes written by litdata's own ``optimize`` (``litdata.Image(bytes=...)``, kept
                as stored, chunks of at most the largest parquet shard's size), read by ``litdata.StreamingDataset`` +
                ``StreamingDataLoader``; litdata decodes the images itself (its documented path,
                ``torchvision.io.decode_image``; where torchvision cannot be imported, e.g. a CPU torch next
                to a CUDA-only torchvision wheel, the same bytes through PIL, as litdata does for EXIF
                JPEGs) + the same crop/resize/normalize in the dataset's ``transform``.
  (e) mosaic    the same JPEG bytes in MosaicML MDS shards (``jpeg`` columns, bytes kept as stored, shards of
                at most the largest parquet shard's size), read by a ``streaming.StreamingDataset`` subclass whose
                ``__getitem__`` runs the same crop/resize/normalize on the decoded PIL images (its documented
                pattern), with ``streaming.StreamingDataLoader``.
  (c) limit     our decode+resize of both images in a tight loop over bytes already in memory,
                2 processes: no reading, batching, normalization or IPC.
  (c') +norm    the same loop, also normalizing into float32 batch memory as ours must: the decode-limit
                target is ours against (c'), the same work minus reading, batching and IPC.
  ours uint8    ours with normalize=False: uint8 batches, for normalizing on the accelerator (against (c)).

Every pipeline uses a torch DataLoader with --workers workers (2) and batch size --batch-size, decodes
both images of every row, and is timed over one full pass from the first batch to the last
(worker start-up excluded, the same for all). Each pass is checked: every pipeline reads exactly the
sample ids ours reads, each once, with images of ours' shape, dtype and normalization (per-sample channel
means on a pixel grid agree with ours within a tolerance that allows for the different decoders).
Peak RSS (the process plus its workers) is measured in a fresh subprocess over one full shuffled pass
with a 1,000-row shuffle buffer.

litdata and MosaicML streaming are optional: when one cannot be imported its row is skipped with a note.
Their own pins conflict with this project's (litdata needs torchvision, whose PyPI wheel replaces a CPU
torch; mosaicml-streaming pins numpy<2.2 and transformers<5 against datasets>=5), so they are installed
without their dependencies, after the ``bench`` extra has brought the ones they import:

  pip install -e ".[bench]" && pip install --no-deps litdata mosaicml-streaming

The benchmark repo (>= 2,000 triplets of 512 px textured JPEGs by default) is generated once with
fusionrs_hf.demo.make_sample_repo into --cache and reused, as are the tar, litdata and MDS copies. The
table is printed and written to BENCHMARKS.md (section bench:stream).

With --remote the repo is also served over real HTTP on 127.0.0.1 by the local Hub-API test server
(fusionrs_hf.testing.hub_server) with --latency-ms per request (40) and a --bandwidth-mbps cap (400), and read
with the real huggingface_hub client, each pass in a fresh process: ours remote and stock `datasets` streaming
remote (time to first batch, from the loader's construction, and peak RSS for each), against ours local; and a
--plan-shards (256) shard repo of tiny shards for plan time and time to first batch. Targets: ours remote >= 0.9x
ours local, >= 3x stock remote, first batch at 256 shards <= 2 s.

Examples:
  fusionrs bench                 # full run (first run also generates ~2,200 triplets, a few minutes)
  fusionrs bench --remote        # the same plus the remote table
  fusionrs bench --quick --json  # a smaller run in about a minute, one JSON object on stdout
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
# ratio (or value) -> target; every key is also a key of the --json result. Targets are minimums except
# for the keys in AT_MOST.
TARGETS = {"vs_stock": 1.5, "vs_webdataset": 1.2, "vs_litdata": 1.2, "vs_mosaic": 1.2,
           "vs_decode_norm_limit": 0.92, "uint8_vs_decode_limit": 0.90, "peak_rss_mb": 1536,
           "remote_vs_local": 0.9, "remote_vs_stock": 3.0, "first_batch_s_remote": 2.0}
AT_MOST = {"peak_rss_mb", "first_batch_s_remote"}
CONFIG, SPLIT = "default", "train"
PEERS = {"litdata": "litdata", "mosaic": "mosaicml-streaming"}  # result key -> PyPI name
# Per-sample channel means of two pipelines' output may differ by this much (CLIP-normalized units, about
# 0.27 of the 0..1 pixel range per unit): ours decodes at reduced DCT scale, the peers at full size, and
# the resize then sees different pixels. A wrong normalization, layout or dtype is off by far more.
FINGERPRINT_TOL = 0.25


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


def _rows_of(shard: Path):
    """The benchmark columns of one parquet shard, row by row (image bytes as stored)."""
    import pyarrow.parquet as pq

    from .torch import BATCH_KEYS

    yield from pq.read_table(shard, columns=list(BATCH_KEYS)).to_pylist()


def _peer_shard_bytes(shards: list[Path]) -> int:
    """Chunk/shard byte limit for the peers' formats: the largest parquet shard (+64 KiB), so no peer gets
    more, smaller files than ours. Both peers split work between DataLoader workers by sample, not by file,
    so the file count does not unbalance the workers."""
    return max(1 << 20, max(p.stat().st_size for p in shards) + (64 << 10))


def _files_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file())


def _fresh_dir(path: Path) -> Path:
    import shutil

    if path.exists():
        shutil.rmtree(path)
    return path


class _LitRows:
    """litdata ``optimize`` fn: one parquet shard in, its rows out, images as ``litdata.Image(bytes=...)``:
    the documented way to store compressed images (kept as given: no quality or format, so no re-encode)."""

    def __call__(self, shard: str):
        import litdata as ld

        for row in _rows_of(Path(shard)):
            yield {"sample_id": row["sample_id"], "source": row["source"], "caption": row["caption"],
                   "ir_caption": row["ir_caption"] or "",
                   "rgb": ld.Image(bytes=row["rgb"]["bytes"]), "ir": ld.Image(bytes=row["ir"]["bytes"])}


def litdata_dir(repo: Path, log=lambda m: None) -> Path:
    """The repo's train rows written by ``litdata.optimize`` (once, then reused)."""
    import multiprocessing as mp

    out, done = repo / "_litdata", repo / "_litdata" / ".complete"
    if done.exists():
        return out
    import litdata as ld

    shards = _shards(repo)
    log(f"writing the litdata copy with litdata.optimize ({len(shards)} inputs)")
    tmp = _fresh_dir(repo / "_litdata.tmp")
    ld.optimize(fn=_LitRows(), inputs=[str(p) for p in shards], output_dir=str(tmp),
                chunk_bytes=_peer_shard_bytes(shards), num_workers=1, verbose=False, reorder_files=False,
                start_method="fork" if "fork" in mp.get_all_start_methods() else None)
    _fresh_dir(out)
    tmp.rename(out)
    done.write_text("ok\n")
    return out


def mds_dir(repo: Path, log=lambda m: None) -> Path:
    """The repo's train rows as MosaicML MDS shards, ``jpeg`` image columns (once, then reused).

    MDS's ``jpeg`` encoding stores a PIL ``JpegImageFile`` opened from a file as that file's bytes and
    re-encodes anything else, so each image goes through a scratch file: the shards hold the bytes as stored.
    """
    import tempfile

    from PIL import Image

    out, done = repo / "_mds", repo / "_mds" / ".complete"
    if done.exists():
        return out
    sb = import_mosaic()
    from streaming.base.format.mds.encodings import mds_encode

    shards = _shards(repo)
    log(f"writing the MosaicML MDS copy ({len(shards)} parquet shards in)")
    tmp = _fresh_dir(repo / "_mds.tmp")
    columns = {"sample_id": "str", "source": "str", "caption": "str", "ir_caption": "str", "rgb": "jpeg",
               "ir": "jpeg"}
    with tempfile.TemporaryDirectory() as scratch, \
            sb.MDSWriter(out=str(tmp), columns=columns, size_limit=_peer_shard_bytes(shards)) as writer:
        paths = {k: Path(scratch) / f"{k}.jpg" for k in ("rgb", "ir")}
        for shard in shards:
            for row in _rows_of(shard):
                sample = {"sample_id": row["sample_id"], "source": row["source"], "caption": row["caption"],
                          "ir_caption": row["ir_caption"] or ""}
                opened = []
                for k, path in paths.items():
                    data = row[k]["bytes"]
                    path.write_bytes(data)
                    im = Image.open(path)
                    if mds_encode("jpeg", im) != data:  # pragma: no cover - a changed MDS encoding
                        raise RuntimeError("MDS 'jpeg' encoding re-encodes the image; the copy would differ")
                    sample[k] = im
                    opened.append(im)
                writer.write(sample)
                for im in opened:
                    im.close()
    _fresh_dir(out)
    tmp.rename(out)
    done.write_text("ok\n")
    return out


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


# ---- peers: litdata and MosaicML streaming (optional imports) ----


def peer_missing(name: str) -> str | None:
    """None when peer ``name`` ("litdata" or "mosaic") can be used, else a one-line reason naming the install."""
    try:
        import_litdata() if name == "litdata" else import_mosaic()
    except Exception as e:  # noqa: BLE001 - any import failure means: skip the row, say why
        pkg = PEERS[name]
        why = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return (f"{pkg} cannot be imported ({why}); install the `bench` extra, then "
                f"`pip install --no-deps {pkg}` (see `fusionrs bench --help`)")
    return None


def import_litdata():
    os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")  # no PyPI request from a benchmark
    import litdata

    return litdata


def import_mosaic():
    """``streaming.base`` (StreamingDataset, StreamingDataLoader, MDSWriter) of mosaicml-streaming.

    The package's ``__init__`` also imports its ready-made vision datasets, which need torchvision; the
    MDS reader and writer do not. Where that import fails (a CPU torch, whose matching torchvision wheel on
    PyPI is a CUDA build), ``streaming.base`` is loaded under a bare ``streaming`` package instead.
    """
    import importlib
    import importlib.util
    import types

    try:
        return importlib.import_module("streaming.base")
    except ImportError as e:
        spec = importlib.util.find_spec("streaming")
        if spec is None or not spec.submodule_search_locations or "torchvision" not in str(e):
            raise
    for k in [k for k in sys.modules if k == "streaming" or k.startswith("streaming.")]:
        del sys.modules[k]
    pkg = types.ModuleType("streaming")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__spec__, pkg.__file__ = spec, spec.origin
    sys.modules["streaming"] = pkg
    try:
        return importlib.import_module("streaming.base")
    except BaseException:
        for k in [k for k in sys.modules if k == "streaming" or k.startswith("streaming.")]:
            del sys.modules[k]
        raise


def torchvision_decode_ok() -> bool:
    """Whether ``torchvision.io.decode_image`` works here (litdata's own image decode)."""
    global _TV_OK
    if _TV_OK is None:
        try:
            import io

            import numpy as np
            import torch
            from PIL import Image
            from torchvision.io import ImageReadMode, decode_image

            buf = io.BytesIO()
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="JPEG")
            out = decode_image(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), mode=ImageReadMode.RGB)
            _TV_OK = tuple(out.shape) == (3, 8, 8)
        except Exception:  # noqa: BLE001 - a broken torchvision raises RuntimeError, not ImportError
            _TV_OK = False
    return _TV_OK


_TV_OK: bool | None = None


class _PilImageLitSerializer:
    """litdata's ``image`` deserializer with PIL instead of torchvision (litdata's own PIL branch, used where
    torchvision cannot be imported). Returns the HxWx3 uint8 array, one transpose short of litdata's CHW."""

    def serialize(self, item):  # pragma: no cover - reading only
        raise NotImplementedError

    def deserialize(self, data: bytes):
        import io

        import numpy as np
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def can_serialize(self, item) -> bool:  # pragma: no cover - reading only
        return False

    def setup(self, metadata) -> None:
        pass


class _LitMap(_Prep):
    """litdata ``transform``: litdata's decoded images -> the same crop/resize/normalize as ours."""

    def __call__(self, ex: dict) -> dict:
        ex["rgb"] = self.image(ex["rgb"])
        ex["ir"] = self.image(ex["ir"])
        return ex


def loader_litdata(d: Path, args):
    ld = import_litdata()

    serializers = None if torchvision_decode_ok() else {"image": _PilImageLitSerializer()}
    ds = ld.StreamingDataset(str(d), shuffle=False, serializers=serializers, transform=_LitMap(args.image_size))
    return ld.StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


_MOSAIC_CLASS = None


def _mosaic_class():
    """A ``streaming.StreamingDataset`` subclass whose ``__getitem__`` transforms, as its docs and vision
    datasets do (made on first use: the base class is an optional import)."""
    global _MOSAIC_CLASS
    if _MOSAIC_CLASS is None:
        sb = import_mosaic()

        class MosaicFusionRS(sb.StreamingDataset):
            def __init__(self, *, image_size: int, **kw) -> None:
                super().__init__(**kw)
                self.prep = _StockMap(image_size)

            def __getitem__(self, idx: int) -> dict:
                return self.prep(super().__getitem__(idx))

        MosaicFusionRS.__qualname__ = MosaicFusionRS.__name__ = "MosaicFusionRS"
        _MOSAIC_CLASS = MosaicFusionRS
    return _MOSAIC_CLASS


_MOSAIC_DATASETS: dict = {}


def loader_mosaic(d: Path, args):
    sb = import_mosaic()
    key = (str(d), args.batch_size, args.image_size)
    ds = _MOSAIC_DATASETS.get(key)
    if ds is None:  # one dataset per directory and process (it holds shared memory keyed by the directory)
        ds = _MOSAIC_DATASETS[key] = _mosaic_class()(local=str(d), remote=None, shuffle=False,
                                                     batch_size=args.batch_size, image_size=args.image_size)
    return sb.StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


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
    from .storage import require

    wds = require("webdataset", extra="bench", what="fusionrs bench (the webdataset comparison)")
    from torch.utils.data import DataLoader

    ds = wds.WebDataset(tars, shardshuffle=False, empty_check=False)
    ds = ds.map(_WdsOursMap(args.image_size)) if our_decode else ds.decode("pil").map(_WdsMap(args.image_size))
    return DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)


_FP_NORM = None


def _fingerprint(images):
    """Per-sample channel means over a pixel grid (every 16th row and column), CLIP-normalized: (B, 3).

    Cheap (a few hundred values per image), so it runs inside the timed loop of every pipeline alike; uint8
    batches are normalized here first, so every pipeline's fingerprints compare with ours."""
    global _FP_NORM
    grid = images[:, :, ::16, ::16]
    if grid.dtype == _torch().uint8:
        if _FP_NORM is None:
            from .decode import Normalizer

            _FP_NORM = Normalizer()
        grid = _FP_NORM.on_device(grid)
    return grid.float().mean(dim=(2, 3))


def _torch():
    import torch

    return torch


def time_pass(loader) -> dict:
    """One full pass: rows/s from the first batch to the last (start-up excluded), plus what the checks need:
    the sample ids read, the image shape and dtype, and per-sample fingerprints (see :func:`_fingerprint`)."""
    t_start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t0 = time.perf_counter()
    n, ids = 0, list(first["sample_id"])
    fps = [_fingerprint(first["rgb"]), _fingerprint(first["ir"])]
    shape, dtype = tuple(first["rgb"].shape[1:]), first["rgb"].dtype
    for batch in it:
        n += len(batch["sample_id"])
        ids += batch["sample_id"]
        fps.append(_fingerprint(batch["rgb"]))
        fps.append(_fingerprint(batch["ir"]))
        assert batch["ir"].dtype == batch["rgb"].dtype
    t1 = time.perf_counter()
    torch = _torch()
    fp = torch.cat([torch.cat(fps[0::2]), torch.cat(fps[1::2])], dim=1)  # (rows, 6): rgb and ir means
    return {"rows": n, "rows_total": len(ids), "unique": len(set(ids)), "seconds": t1 - t0,
            "startup_s": t0 - t_start, "samples_per_s": n / (t1 - t0) if t1 > t0 else float("nan"),
            "shape": shape, "dtype": str(dtype).replace("torch.", ""),
            "_ids": ids, "_fp": fp}


def _first_batch_pass(make) -> dict:
    """:func:`time_pass` of ``make()``, plus ``first_batch_s``: from the loader's construction (planning
    included) to its first batch."""
    t0 = time.perf_counter()
    loader = make()
    build_s = time.perf_counter() - t0
    r = time_pass(loader)
    r["first_batch_s"] = build_s + r["startup_s"]
    return r


def check_same_output(name: str, r: dict, ref: dict, expect_dtype: str | None = None) -> float:
    """Raise unless pipeline ``r`` read exactly ``ref``'s sample ids, each once, with ``ref``'s image shape,
    ``expect_dtype`` (default: ``ref``'s) and per-sample fingerprints within FINGERPRINT_TOL. Returns the
    largest fingerprint difference."""
    ids, ref_ids = r["_ids"], ref["_ids"]
    if len(ids) != len(set(ids)):
        raise RuntimeError(f"{name}: {len(ids)} rows but {len(set(ids))} unique sample ids")
    if set(ids) != set(ref_ids):
        missing, extra = set(ref_ids) - set(ids), set(ids) - set(ref_ids)
        raise RuntimeError(f"{name}: read {len(ids)} rows, ours {len(ref_ids)}; missing {sorted(missing)[:3]}, "
                           f"not in ours {sorted(extra)[:3]}")
    if tuple(r["shape"]) != tuple(ref["shape"]) or r["dtype"] != (expect_dtype or ref["dtype"]):
        raise RuntimeError(f"{name}: images {tuple(r['shape'])} {r['dtype']}, expected {tuple(ref['shape'])} "
                           f"{expect_dtype or ref['dtype']}")
    pos = {sid: i for i, sid in enumerate(ref_ids)}
    order = _torch().tensor([pos[sid] for sid in ids])
    diff = float((r["_fp"] - ref["_fp"][order]).abs().max())
    if not diff <= FINGERPRINT_TOL:
        raise RuntimeError(f"{name}: images differ from ours (per-sample channel mean off by {diff:.3f} "
                           f"normalized units, tolerance {FINGERPRINT_TOL}): wrong decode or normalization?")
    return diff


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
    from .storage import require

    psutil = require("psutil", extra="bench", what="fusionrs bench (memory sampling)")

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
# remote: the same repo over HTTP (fusionrs bench --remote)

REMOTE_REPO, PLAN_REPO = "fusionrs-bench/stream", "fusionrs-bench/plan"


def plan_repo(cache: Path, shards: int, log=lambda m: None) -> Path:
    """A repo of at least ``shards`` tiny train shards (2 rows of 32 px each), for the plan-time measurement."""
    from .demo import make_sample_repo

    per_source = math.ceil(shards * 2 / 5) + 2
    out = cache / f"plan-{shards}"
    if (out / ".complete").exists():
        return out
    log(f"generating a {shards}-shard repo into {out} (once; reused later)")
    make_sample_repo(out, counts={"train": per_source}, size=32, max_rows=2)
    (out / ".complete").write_text("ok\n")
    return out


def _repo_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".complete"}


class _RssSampler:
    """Peak RSS of this process and its children, sampled every 0.1 s while active (psutil)."""

    def __init__(self) -> None:
        from .storage import require

        self.psutil = require("psutil", extra="bench", what="fusionrs bench (memory sampling)")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = self.psutil.Process()
        while not self._stop.is_set():
            rss = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                    pass
            self.samples.append(rss / 2**20)
            self._stop.wait(0.1)

    def __enter__(self) -> _RssSampler:
        self._th.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._th.join()

    def summary(self) -> dict:
        s = self.samples or [0.0]
        return {"peak_rss_mb": round(max(s), 1), "rss_first_quarter_mb": round(max(s[: max(1, len(s) // 4)]), 1),
                "rss_last_mb": round(s[-1], 1)}


def remote_child(pipeline: str, args) -> dict:
    """Run in a fresh process whose ``HF_ENDPOINT`` names the bench's Hub server: one pass of ``pipeline``
    (``ours``, ``stock`` or ``plan``), timed from the loader's construction to the first batch and over the
    pass, with the real ``huggingface_hub`` client."""
    import warnings

    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    if pipeline == "plan":
        from .torch import FusionRSIterable

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
        from .torch import make_dataloader

        loader = make_dataloader(f"hf://datasets/{REMOTE_REPO}", config=CONFIG, split=SPLIT,
                                 batch_size=args.batch_size, num_workers=args.workers, image_size=args.image_size,
                                 seed=0, read_ahead=args.read_ahead)
    else:
        from datasets import load_dataset
        from torch.utils.data import DataLoader

        from .torch import BATCH_KEYS

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
    from .torch import loader_for

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

    from .testing.hub_server import HubServer

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
                r = _run_remote_child(server, pipeline, args, home)
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
    return {
        "remote_samples_per_s": round(ours, 1),
        "remote_vs_local": round(ours / results["ours"]["samples_per_s"], 3),
        "remote_vs_stock": round(ours / stock, 3),
        "first_batch_s_remote": round(plan["first_batch_s"], 3),
        "plan_s_remote": round(plan["plan_s"], 3),
        "first_batch_s_remote_full": round(results["remote_ours"]["first_batch_s"], 3),
        "first_batch_s_stock_remote": round(results["remote_stock"]["first_batch_s"], 3),
        "peak_rss_mb_remote": results["remote_ours"]["peak_rss_mb"],
        "remote": {"latency_ms": args.latency_ms, "bandwidth_mbps": args.bandwidth_mbps, "read_ahead": args.read_ahead,
                   "plan_shards": plan["shards"], "server_requests": requests},
    }


def render_remote(res: dict) -> list[str]:
    r, rem = res["results"], res["remote"]
    ours, stock, plan = r["remote_ours"], r["remote_stock"], r["remote_plan"]
    local_first = r["ours"].get("first_batch_s")
    return [
        "",
        f"### Remote: the same repo over HTTP ({rem['latency_ms']:g} ms per request, {rem['bandwidth_mbps']:g} Mbit/s)",
        "",
        "Served by the local Hub-API server (`fusionrs_hf.testing.hub_server`) on 127.0.0.1, read with the real "
        f"`huggingface_hub` client; ours with `read_ahead={rem['read_ahead']}`.",
        "",
        "| pipeline | samples/s | first batch (s) | peak RSS (MB) | ours remote ÷ this | target |",
        "|---|---:|---:|---:|---:|---|",
        f"| **ours, remote** | **{ours['samples_per_s']:.0f}** | {ours['first_batch_s']:.2f} | {ours['peak_rss_mb']:.0f} "
        "| 1.00 | |",
        f"| ours, local | {r['ours']['samples_per_s']:.0f} | "
        f"{'-' if local_first is None else f'{local_first:.2f}'} | - | {_ratio_cell(1 / res['remote_vs_local'])} | "
        + _target_cell(res, "remote_vs_local", f"remote ÷ local = {res['remote_vs_local']:.2f}, ≥ 0.9") + " |",
        f"| stock `datasets` streaming, remote | {stock['samples_per_s']:.0f} | {stock['first_batch_s']:.2f} "
        f"| {stock['peak_rss_mb']:.0f} | {_ratio_cell(res['remote_vs_stock'])} | "
        + _target_cell(res, "remote_vs_stock", "≥ 3") + " |",
        "",
        f"Plan at {plan['shards']} shards ({plan['units']} row groups), remote: plan {plan['plan_s']:.2f} s, first "
        f"batch {plan['first_batch_s']:.2f} s ({_target_cell(res, 'first_batch_s_remote', 'target ≤ 2 s')}). "
        f"RSS over the remote pass: first quarter {ours['rss_first_quarter_mb']:.0f} MB, peak {ours['peak_rss_mb']:.0f} "
        f"MB, end {ours['rss_last_mb']:.0f} MB.",
    ]


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
    for pkg in ("fusionrs-hf", "torch", "datasets", "pyarrow", "pillow", "simplejpeg", "webdataset", "litdata",
                "mosaicml-streaming", "torchvision", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def _ratio_cell(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _target_cell(res: dict, key: str, text: str) -> str:
    met = res.get("targets_met", {}).get(key)
    return text if met is None else f"{text} ({'meets' if met else 'NO'})"


def render_markdown(res: dict) -> str:
    r = res["results"]
    m, v = res["machine"], res["versions"]
    sps = lambda k: f"{r[k]['samples_per_s']:.0f}"  # noqa: E731
    shards = res.get("peer_shards", {})
    decode = res.get("peer_decode", {})
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
        f"| **fusionrs_hf.torch.make_dataloader** | **{sps('ours')}** | 1.00 | |",
        f"| ours with `normalize=False` (uint8 batches; normalize on the GPU) | {sps('ours_uint8')} | "
        f"{r['ours']['samples_per_s'] / r['ours_uint8']['samples_per_s']:.2f} | "
        + _target_cell(res, "uint8_vs_decode_limit", f"this ÷ (c) = {_ratio_cell(res['uint8_vs_decode_limit'])}, "
                       "target ≥ 0.90") + " |",
        f"| (a) stock `datasets` streaming + `with_format(\"torch\")` + same resize | {sps('stock')} "
        f"| {_ratio_cell(res['vs_stock'])} | {_target_cell(res, 'vs_stock', '≥ 1.5')} |",
        f"| (b) WebDataset tars, `decode(\"pil\")` + same resize | {sps('webdataset')} "
        f"| {_ratio_cell(res['vs_webdataset'])} | {_target_cell(res, 'vs_webdataset', '≥ 1.2')} |",
        f"| (b') WebDataset tars + our decoder (for reference) | {sps('webdataset_ours')} "
        f"| {_ratio_cell(res['ours_vs_wds_our_decode'])} | |",
    ]
    if "litdata" in r:
        lines.append(
            f"| (d) litdata `StreamingDataset` + `StreamingDataLoader`, its `optimize` chunks ({shards.get('litdata', '?')}), "
            f"decode: {decode.get('litdata', '?')}, same resize | {sps('litdata')} | {_ratio_cell(res['vs_litdata'])} "
            f"| {_target_cell(res, 'vs_litdata', '≥ 1.2')} |")
    if "mosaic" in r:
        lines.append(
            f"| (e) MosaicML streaming `StreamingDataset` + `StreamingDataLoader`, MDS shards ({shards.get('mosaic', '?')}), "
            f"decode: {decode.get('mosaic', '?')}, same resize | {sps('mosaic')} | {_ratio_cell(res['vs_mosaic'])} "
            f"| {_target_cell(res, 'vs_mosaic', '≥ 1.2')} |")
    lines += [
        f"| (c) decode+resize limit, bytes in memory, {res['workers']} processes | {sps('decode_limit')} "
        f"| {_ratio_cell(res['vs_decode_limit'])} | (reference for the uint8 row) |",
        f"| (c') decode+resize+normalize into float32 batch memory, same tight loop | {sps('decode_norm_limit')} "
        f"| {_ratio_cell(res['vs_decode_norm_limit'])} | {_target_cell(res, 'vs_decode_norm_limit', '≥ 0.92')} |",
        "",
    ]
    for name, why in res.get("skipped", {}).items():
        lines += [f"Skipped {'(d) litdata' if name == 'litdata' else '(e) MosaicML streaming'}: {why}.", ""]
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
        "webdataset's `decode(\"pil\")`; (d) and (e) read the same JPEG bytes (not re-encoded) from their own "
        "formats, written by their own writers in chunks/shards of at most the largest parquet shard's size, and "
        "decode them full size as the row says; all four then run the same centre-crop/resize/normalize code "
        "as ours. "
        "(c) runs only our decode+resize (no reading, normalization, batching or IPC); (c') adds the float32 "
        "normalization into batch memory, so it is the same work as ours without reading, batching and IPC: "
        "the decode-limit target is ours ÷ (c') ≥ 0.92, and for uint8 batches, which skip the normalization, "
        "`normalize=False` ÷ (c) ≥ 0.90. Every pass is checked: each pipeline reads exactly ours' sample ids, "
        "each once, with images of the same shape, dtype and normalization. Ratios come from one run.",
        "",
        "Targets met: " + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in res["targets_met"].items()) + ".",
    ]
    if "remote_ours" in r and res.get("remote"):
        lines += render_remote(res)
    if res.get("notes"):
        lines += ["", res["notes"]]
    return "\n".join(lines)


def replace_section(path: Path, start: str, end: str, block: str) -> None:
    """Replace (or append) one marked section (``block`` starts with ``start`` and ends with ``end``) of
    BENCHMARKS.md, atomically; every benchmark tool writes its own section through this."""
    from .atomic import atomic_write

    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(path, text)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) only this benchmark's marked section of BENCHMARKS.md."""
    replace_section(path, START, END, f"{START}\n{body.rstrip()}\n{END}")


def _default_benchmarks_path() -> Path:
    root = Path(__file__).resolve().parents[1]
    return root / "BENCHMARKS.md" if (root / "pyproject.toml").exists() else Path.cwd() / "BENCHMARKS.md"


def targets_met(res: dict) -> dict[str, bool]:
    """``{key: met}`` for every TARGETS key whose value this run has (a skipped row or pass has none)."""
    met = {}
    for key, target in TARGETS.items():
        value = res.get(key)
        if value is not None:
            met[key] = value <= target if key in AT_MOST else value >= target
    return met


def peer_decode(peer_dirs: dict) -> dict[str, str]:
    out = {}
    if "litdata" in peer_dirs:
        out["litdata"] = ("torchvision.io.decode_image (litdata's image serializer)" if torchvision_decode_ok()
                          else "PIL, full size (torchvision cannot be imported here)")
    if "mosaic" in peer_dirs:
        out["mosaic"] = "PIL, full size (MDS `jpeg` column)"
    return out


def run(args) -> int:
    from .cli import CliError

    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return 0
    if args.remote_child:
        print(json.dumps(remote_child(args.remote_child, args)))
        return 0
    rows = args.rows or (200 if args.quick else 2200)
    repeat = args.repeat or (1 if args.quick else 3)
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
    for rep in range(repeat):  # interleaved repetitions: drift hits every pipeline alike
        for name, fn in runs.items():
            log(f"pass {rep + 1}/{repeat}: {name}")
            r = fn()
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
        "batch_size": args.batch_size, "workers": args.workers, "repeat": repeat, "quick": bool(args.quick),
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
    p = argparse.ArgumentParser(prog="fusionrs bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
