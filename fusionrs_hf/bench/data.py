"""The benchmark's data: the generated repo, the plan-time repo, and each peer's copy of the same rows in its
own format (WebDataset tars, litdata chunks, MosaicML MDS shards), each made once into the cache."""

from __future__ import annotations

import json
import math
import tarfile
from pathlib import Path

CONFIG, SPLIT = "default", "train"
REMOTE_REPO, PLAN_REPO = "fusionrs-bench/stream", "fusionrs-bench/plan"  # names on the bench's Hub server


def bench_repo(cache: Path, rows: int, size: int, log=lambda m: None) -> Path:
    """The generated benchmark repo (made once, then reused): 5 sources x ceil(rows/5) train triplets."""
    from ..demo import make_sample_repo

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

    from ..layout import config_files, list_shards

    shards, _ = list_shards(fsspec.filesystem("file"), str(repo))
    return [repo / f for f in config_files(CONFIG, SPLIT, [s.path for s in shards])]


def wds_shards(repo: Path, log=lambda m: None) -> list[str]:
    """One tar per parquet shard, same rows in the same order: KEY.rgb.jpg, KEY.ir.jpg, KEY.json."""
    import io

    import pyarrow.parquet as pq

    from ..torch import BATCH_KEYS

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

    from ..torch import BATCH_KEYS

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
    from .peers import import_mosaic

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

def plan_repo(cache: Path, shards: int, log=lambda m: None) -> Path:
    """A repo of at least ``shards`` tiny train shards (2 rows of 32 px each), for the plan-time measurement."""
    from ..demo import make_sample_repo

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

