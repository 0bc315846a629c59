"""Per-shard work: read one shard batch by batch, check its schema and rows, and send back compact row
records for the joins; and running the shards (inline, threads or processes)."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..layout import ShardName, source_dir
from ..limits import refuse_big_row_groups
from ..pairing import diffv2ir_size, sizes_pair, swapped_pairs
from ..schema import (
    FEATURES,
    FIELD_NAMES,
    IMAGE_FIELDS,
    JOINT_GROUP_RE,
    NON_NULLABLE,
    SHA256_FIELDS,
    SHA256_RE,
)
from ..secrets import scrub
from .findings import Finding, FindingLog
from .images import ImageStats, inspect_image
from .keys import _h64, _sha_parts, caption_key

_FAST_COLUMNS = ("sample_id", "source", "ir_caption", *SHA256_FIELDS.values(), "joint_group_id")
_FULL_COLUMNS = (*_FAST_COLUMNS, "caption", *IMAGE_FIELDS)


@dataclass(frozen=True)
class _Task:
    index: int
    name: ShardName
    fast: bool
    ir_threshold: float

    @property
    def config(self) -> str:
        return source_dir(self.name.source)


@dataclass
class _ShardResult:
    index: int
    info: object | None = None  # card.ShardInfo
    findings: list[Finding] = field(default_factory=list)
    omitted: dict[str, int] = field(default_factory=dict)
    """Findings of each kind left out of ``findings`` (at most MAX_FINDINGS_PER_KIND each are kept)."""
    rows: dict[str, np.ndarray] = field(default_factory=dict)
    rows_read: int = 0
    images: int = 0
    unreadable: bool = False
    pairs: list[tuple[int, str | None, np.ndarray, np.ndarray]] = field(default_factory=list)
    """Full mode: (row, sample_id, rgb edges, ir edges) of each row whose two images decoded."""


_ROW_FIELDS = ("row", "sid", "sid_ok", "gid", "gid_ok", "cap", "cap_ok",
               "rgb_ph", "rgb_ok", "ir_ph", "ir_ok", "rgb_sha0", "rgb_sha1", "ir_sha0", "ir_sha1")
_ROW_DTYPES = {"row": np.int64, "sid_ok": bool, "gid_ok": bool, "cap_ok": bool, "rgb_ok": bool, "ir_ok": bool}


def _schema_problems(schema: pa.Schema) -> list[str]:
    expected = FEATURES.arrow_schema
    out = []
    names = list(schema.names)
    missing = [n for n in FIELD_NAMES if n not in names]
    extra = [n for n in names if n not in FIELD_NAMES]
    if missing:
        out.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        out.append(f"unexpected column(s) {', '.join(extra)}")
    for f in expected:
        if f.name in names and not schema.field(f.name).type.equals(f.type):
            out.append(f"column {f.name!r} has type {schema.field(f.name).type}, expected {f.type}")
    if not missing and not extra and names != list(FIELD_NAMES):
        out.append("column order differs from the schema")
    meta = schema.metadata or {}
    try:
        feats = json.loads(meta[b"huggingface"])["info"]["features"]
        if feats != FEATURES.to_dict():
            out.append("'huggingface' features metadata differs from the schema (images may not decode as Image)")
    except (KeyError, ValueError, TypeError):
        out.append("no readable 'huggingface' features metadata (images would load as plain structs)")
    return out


def _scan_shard(fs, root: str, task: _Task) -> _ShardResult:
    """Read one shard batch by batch; per-row checks here, compact hashes back for the joins."""
    from ..card import shard_info

    res = _ShardResult(task.index)
    name = task.name
    log = FindingLog()  # a shard of a million bad rows holds a thousand findings of a kind, and counts the rest

    def add(kind: str, message: str, row: int | None = None, sid: str | None = None) -> None:
        log.add(Finding(kind, message, task.config, name.split, name.path, row, sid))

    # the row records, one numpy array per batch and field: ~100 bytes a row, where Python lists of ints took
    # several times that (and 2,000,000 rows of a hostile shard gigabytes)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _ROW_FIELDS}
    try:
        res.info = shard_info(fs, root, name)
        with fs.open(f"{root}/{name.path}", "rb") as fh:
            pf = pq.ParquetFile(fh, buffer_size=4 << 20)  # stream pages, not whole column chunks
            for problem in _schema_problems(pf.schema_arrow):
                add("schema_mismatch", problem)
            sch, expected = pf.schema_arrow, FEATURES.arrow_schema
            # a missing or mistyped column is reported above; the row checks skip it
            wanted = [c for c in (_FAST_COLUMNS if task.fast else _FULL_COLUMNS)
                      if c in sch.names and sch.field(c).type.equals(expected.field(c).type)]
            batch_size = 4096 if task.fast else 32
            for batch in _batches(fs, f"{root}/{name.path}", fh, pf, wanted, batch_size, name.path):
                cols: dict[str, list] = {k: [] for k in _ROW_FIELDS}
                try:
                    _check_batch(batch, res, task, add, cols)
                finally:  # the rows checked before a failure still join
                    for k, v in cols.items():
                        parts[k].append(np.asarray(v, dtype=_ROW_DTYPES.get(k, np.uint64)))
        _check_pairs(res, add)
    except Exception as e:  # noqa: BLE001 - a broken file is a finding, not a traceback
        res.unreadable = True
        res.pairs = []
        msg = f"{type(e).__name__}: {e}".strip()
        add("unreadable_shard", f"cannot read parquet after {res.rows_read} rows: {scrub(msg)[:400]}")
    res.rows = {k: np.concatenate(v) if v else np.zeros(0, _ROW_DTYPES.get(k, np.uint64)) for k, v in parts.items()}
    res.findings, res.omitted = log.kept(), dict(log.omitted)
    return res


def _batches(fs, path: str, fh, pf, wanted: list[str], batch_size: int, rel: str) -> Iterator[pa.RecordBatch]:
    """The shard's batches of ``wanted``, each row group held to the limits by its page headers first (none
    inflated before, :func:`~fusionrs_hf.limits.refuse_big_row_groups`).

    Locally the walk reads the file. On a remote store each row group's column chunks are fetched once (one
    ``cat_ranges``) and both the walk and pyarrow read that copy (fsspec's ``parts`` cache): walking through the
    file's read-ahead cache, then reading, moved every byte twice (201 MB for a 102 MB repo). Memory: one row
    group's chunks, as the streaming loader holds."""
    from ..limits import RowGroupTooBig, row_group_too_big, too_many_rows
    from ..safepath import is_local_fs

    md = pf.metadata
    if is_local_fs(fs):
        refuse_big_row_groups(md, wanted, rel, fh, shard=True)  # by its pages, none inflated
        yield from pf.iter_batches(batch_size=batch_size, columns=wanted, use_threads=False)
        return
    size = fs.size(path)
    why = too_many_rows(md, None, size)
    if why:
        raise RowGroupTooBig(f"{rel}: {why}")
    from ..limits import _read_chunks
    from ..parquet_pages import chunk_range

    raw = None
    try:  # an unbuffered handle: a ranged read is one request for those bytes (a read-ahead one reads on)
        raw = fs.open(path, "rb", cache_type="none")
    except (TypeError, ValueError):
        pass
    fetch = raw._fetch_range if raw is not None and hasattr(raw, "_fetch_range") else (
        lambda a, b: fs.cat_file(path, start=a, end=b))
    try:
        for i in range(md.num_row_groups):
            if md.row_group(i).num_rows == 0:
                continue  # nothing to read (pyarrow writes its empty chunks at offset 0)
            spans = _spans(sorted({chunk_range(c) for c in _read_chunks(md, i, wanted)}))
            parts = {(a, b): fetch(a, b) for a, b in spans}
            # strict: a read outside the fetched parts is an error, not zeros
            with fs.open(path, "rb", cache_type="parts", cache_options={"data": parts, "strict": True}) as f:
                why = row_group_too_big(md, i, wanted, source=f, shard=True)
                if why:
                    raise RowGroupTooBig(f"{rel}: {why}")
                # the footer given, no coalesced reads across the gaps between chunks and no buffered reads
                # past a chunk: every read is one of the parts
                one = pq.ParquetFile(f, metadata=md, pre_buffer=False)
                yield from one.iter_batches(batch_size=batch_size, row_groups=[i], columns=wanted,
                                            use_threads=False)
    finally:
        if raw is not None:
            raw.close()


_SPAN_GAP = 64 << 10
"""Column chunks closer than this are fetched in one request (the bytes between them read too)."""


def _spans(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in ranges:
        if out and a - out[-1][1] <= _SPAN_GAP:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _check_pairs(res: _ShardResult, add) -> None:
    """``pair_swapped``: two rows whose IR images belong to each other (see :func:`swapped_pairs`)."""
    if len(res.pairs) < 2:
        return
    rgb = np.stack([p[2] for p in res.pairs])
    ir = np.stack([p[3] for p in res.pairs])
    for i, j, own, better in swapped_pairs(rgb, ir):
        row, sid = res.pairs[i][:2]
        other_row, other_sid = res.pairs[j][:2]
        add("pair_swapped", f"the ir images of this row and row {other_row} (sample_id {other_sid!r}) look swapped: "
            f"this rgb's edges match that row's ir at {better:.2f}, its own at {own:.2f}, and that row's rgb "
            "matches this ir as well (swapped IR files?)", row, sid)
    res.pairs = []  # not sent back from a worker process


def _check_batch(batch: pa.RecordBatch, res: _ShardResult, task: _Task, add, cols: dict[str, list]) -> None:
    name = task.name
    data = {n: batch.column(n) for n in batch.schema.names}
    py = {n: data[n].to_pylist() for n in data if n not in IMAGE_FIELDS}
    n = batch.num_rows
    none = [None] * n  # one stand-in for an absent column, not a fresh list per row
    sids = py.get("sample_id", none)
    shas = {col: py.get(col, none) for col in SHA256_FIELDS.values()}
    gids = py.get("joint_group_id", none)
    captions = py.get("caption", none)
    for col in data:
        if col in NON_NULLABLE and data[col].null_count:
            for i in np.flatnonzero(data[col].is_null().to_numpy(zero_copy_only=False)):
                add("null_in_required", f"column {col!r} is null", res.rows_read + int(i), sids[i])
    images = {}
    if not task.fast:
        for col in IMAGE_FIELDS:
            if col in data:
                arr = data[col]
                images[col] = arr.field("bytes").to_pylist() if pa.types.is_struct(arr.type) else none
    for i in range(n):
        row = res.rows_read + i
        sid = sids[i]
        src = py["source"][i] if "source" in py else name.source
        if src is not None and src != name.source:
            add("wrong_source", f"source is {src!r} but the shard is under {source_dir(name.source)}/", row, sid)
        if "ir_caption" in py:
            irc = py["ir_caption"][i]
            if name.group == "iraware" and (irc is None or not irc.strip()):
                add("iraware_missing_ir_caption", "iraware row has " + ("no ir_caption" if irc is None
                    else "a blank ir_caption"), row, sid)
            elif name.group == "base" and irc is not None:
                add("base_has_ir_caption", "base row has a non-null ir_caption (it belongs in an iraware shard)",
                    row, sid)
        stored = {}
        for col, vals in shas.items():
            val = vals[i]
            if val is not None and not SHA256_RE.match(val):
                add("bad_sha256", f"{col} {val[:80]!r} is not 64 lowercase hex digits", row, sid)
            elif val is not None:
                stored[col] = val
        gid = gids[i]
        if gid is not None and not JOINT_GROUP_RE.match(gid):
            add("bad_joint_group_id", f"joint_group_id {gid[:80]!r} does not match {JOINT_GROUP_RE.pattern}", row, sid)
        rec: dict[str, int | bool] = dict.fromkeys(_ROW_FIELDS, 0)
        rec.update(row=row, sid=_h64(sid) if sid is not None else 0, sid_ok=sid is not None,
                   gid=_h64(gid) if gid else 0, gid_ok=bool(gid))
        stats: dict[str, ImageStats] = {}
        if not task.fast:
            ck = caption_key(captions[i])
            rec.update(cap=ck or 0, cap_ok=ck is not None)
            for col in IMAGE_FIELDS:
                raw = images.get(col, none)[i]
                if not raw:
                    add("undecodable_image", f"{col} has no bytes", row, sid)
                    continue
                sha = hashlib.sha256(raw).hexdigest()
                rec[f"{col}_sha0"], rec[f"{col}_sha1"] = _sha_parts(sha)
                want = stored.get(SHA256_FIELDS[col])
                if want is not None and want != sha:
                    add("sha256_mismatch", f"{col}_sha256 is {want[:12]}... but the bytes hash to {sha[:12]}...",
                        row, sid)
                try:
                    stats[col] = inspect_image(raw)
                except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
                    add("undecodable_image", f"{col} does not decode: {type(e).__name__}: {str(e)[:200]}", row, sid)
                    continue
                res.images += 1
                rec[f"{col}_ph"], rec[f"{col}_ok"] = stats[col].phash, True
        for k, v in rec.items():
            cols[k].append(v)
        if "rgb" in stats and "ir" in stats and not sizes_pair(stats["rgb"].size, stats["ir"].size):
            (w1, h1), (w2, h2) = stats["rgb"].size, stats["ir"].size
            w3, h3 = diffv2ir_size((w1, h1))
            add("aspect_mismatch", f"rgb is {w1}x{h1} but ir is {w2}x{h2}: neither the rgb's aspect ratio nor "
                f"DiffV2IR's {w3}x{h3}", row, sid)
        if "rgb" in stats and "ir" in stats:
            res.pairs.append((row, sid, stats["rgb"].edges, stats["ir"].edges))
        if "ir" in stats and stats["ir"].spread > task.ir_threshold:
            add("ir_not_infrared", f"ir channel spread {stats['ir'].spread:.1f} > {task.ir_threshold:g} "
                "(a colour image, not an infrared-style one)", row, sid)
    res.rows_read += n


def _executor_kind(fast: bool, workers: int, fs) -> str:
    """``inline`` (this process), ``threads`` or ``processes``: the cheapest that parallelizes the work.

    --fast reads small columns (I/O bound: threads suffice and start instantly); full mode decodes
    images (CPU bound: processes). An in-process filesystem (``memory://``) is invisible to other
    processes, so it is read inline.
    """
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    if workers <= 1:
        return "inline"
    if fast:
        return "threads"
    return "inline" if "memory" in protocols else "processes"


def _run_shards(fs, root: str, tasks: list[_Task], kind: str, workers: int,
                progress: bool) -> Iterator[_ShardResult]:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), unit="shard", desc="fusionrs check", disable=None if progress else True,
               file=sys.stderr)
    try:
        if kind == "inline":
            for t in tasks:
                yield _scan_shard(fs, root, t)
                bar.update()
            return
        pool: Executor = ThreadPoolExecutor(workers) if kind == "threads" else ProcessPoolExecutor(workers)
        with pool:
            futures = [pool.submit(_scan_shard, fs, root, t) for t in tasks]
            for fut in as_completed(futures):
                yield fut.result()
                bar.update()
    finally:
        bar.close()
