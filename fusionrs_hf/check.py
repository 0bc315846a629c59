"""Verify a FusionRS repo before training on it or publishing it: pairing, counts and split leakage.

TARGET is a local repo folder, an fsspec URL (``file://``, ``hf://datasets/user/name@rev``, ``s3://``
...) or a Hub dataset id (``user/name``, read through ``hf://`` with --revision).

Two depths:

  --fast   columns only, no image decode: every shard's schema equals the registry's; no
           duplicate sample_id; the files named by the card's YAML exist and every data file is
           in the configs the registry puts it in; per config/split counts and bytes equal the
           card's dataset_info; iraware rows have an ir_caption and base rows none; stored
           SHA-256 values are well-formed; no joint_group_id spans two splits.
  (full)   all of the above, plus: every rgb and ir image decodes; RGB and IR are one picture
           (one aspect ratio, or DiffV2IR's size for the RGB); IR looks infrared-style (channel
           spread below --ir-threshold); stored SHA-256 equal the bytes; no leakage across splits by identical image bytes, by near-duplicate images
           (64-bit pHash within Hamming distance 4, RGB and IR separately) or by identical
           normalized captions (NFKC, casefold, punctuation removed, whitespace collapsed).

Exit code 0: no findings; 1: findings (each names config/split/shard/row/sample_id);
2: usage error or unreadable target. Shards are checked in parallel (--workers processes in
full mode, threads in --fast mode); memory stays flat apart from compact per-row hash tables
(~100 bytes a row) needed for the cross-split joins.

Finding kinds (stable strings, also in the --json report):
  missing_card, bad_card          README.md absent / its YAML unreadable
  card_config_mismatch            card config unknown to the registry, or selecting a file the
                                  registry puts in another config/split
  missing_file                    a card data_files pattern that matches no file
  card_outside_repo               a card data_files pattern reaching outside data/ (absolute, `..`)
  orphan_shard                    a parquet file no card config includes where the registry says
  count_mismatch, bytes_mismatch  card dataset_info num_examples / num_bytes differ from the shards
  unreadable_shard                a parquet file that cannot be read (truncated, corrupt)
  schema_mismatch                 columns, types, order or HF features metadata differ from the schema
  null_in_required, wrong_source  a null in a non-nullable column / `source` not the shard's source
  duplicate_sample_id             a sample_id used more than once (anywhere in the repo)
  iraware_missing_ir_caption      an iraware row with a null or blank ir_caption
  base_has_ir_caption             a base row with a non-null ir_caption
  bad_sha256, bad_joint_group_id  malformed rgb_sha256/ir_sha256 / joint_group_id
  joint_group_spans_splits        rows of one joint_group_id in two splits
  undecodable_image               full: rgb or ir bytes missing or not decodable
  aspect_mismatch                 full: the ir has neither the rgb's aspect ratio nor DiffV2IR's size for
                                  it (a 256 px source and its 512 px output, or a 1000x700 source and
                                  its 64-rounded 512x384 output, are valid pairs)
  ir_not_infrared                 full: the ir image is colourful (channel spread > threshold)
  pair_swapped                    full: two rows of a shard whose ir images look swapped (each rgb's
                                  edges match the other row's ir far better than its own)
  sha256_mismatch                 full: stored SHA-256 differs from the bytes
  leak_identical_bytes            full: the same image bytes in two splits
  leak_near_duplicate             full: pHash within distance 4 across splits (rgb-rgb, ir-ir)
  leak_caption                    full: the same normalized caption in two splits

For a leak the row in the later split (train < validation < test) is reported and the message
names the earlier row. Rows are 0-based positions inside the shard file.

Examples:
  fusionrs check ./fusionrs-demo
  fusionrs check ./fusionrs-demo --fast --json > report.json
  fusionrs check user/fusionrs --revision v1.0 --workers 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .layout import (
    SHARD_TEMPLATE,
    SPLITS,
    Layout,
    ShardName,
    glob_match,
    interrupted_build,
    layout_for,
    source_dir,
)
from .limits import DEFAULT_MAX_PIXELS, MAX_CARD_BYTES, open_image, refuse_big_row_groups
from .pairing import diffv2ir_size, edge_signature, sizes_pair, swapped_pairs
from .phash import DEFAULT_RADIUS, near_pairs, phash
from .safepath import NotAFileError, check_repo_file, is_local_fs
from .schema import (
    FEATURES,
    FIELD_NAMES,
    IMAGE_FIELDS,
    JOINT_GROUP_RE,
    NON_NULLABLE,
    SHA256_FIELDS,
    SHA256_RE,
)
from .secrets import register_url, scrub, scrubbing
from .text import normalize_caption

IR_SPREAD_THRESHOLD = 16.0
"""Largest mean channel spread (0-255 levels) an ``ir`` image may have.

The statistic is ``mean over pixels of (max(R, G, B) - min(R, G, B))`` on the image reduced to
64x64 (box filter; JPEGs are decoded at reduced scale first). DiffV2IR output is gray-looking
RGB with small per-channel differences; on ``fusionrs_hf.scenes`` output IR images measure
0-7 and RGB images 34-75, so 16 separates them with margin on both sides.
"""
STAT_SIZE = 64
"""Side of the reduced image the channel spread is measured on (the pHash makes its own 32 px input)."""
PHASH_RADIUS = DEFAULT_RADIUS

KINDS: dict[str, str] = {
    "missing_card": "README.md (the dataset card) is missing",
    "bad_card": "the card's YAML header cannot be read",
    "card_config_mismatch": "a card config unknown to the registry, or selecting a file the registry puts elsewhere",
    "missing_file": "a card data_files pattern matches no file",
    "card_outside_repo": "a card data_files pattern reaching outside the repo's data/ (absolute, `..`, a URL)",
    "orphan_shard": "a data file that the card does not include where the registry says it belongs",
    "count_mismatch": "card dataset_info num_examples differs from the shards",
    "bytes_mismatch": "card dataset_info num_bytes differs from the shards",
    "unreadable_shard": "a parquet file that cannot be read",
    "schema_mismatch": "a shard's schema differs from fusionrs_hf.schema",
    "null_in_required": "a null in a non-nullable column",
    "wrong_source": "the row's source differs from the shard path's source",
    "duplicate_sample_id": "a sample_id used more than once",
    "iraware_missing_ir_caption": "an iraware row without an ir_caption",
    "base_has_ir_caption": "a base row with an ir_caption",
    "bad_sha256": "a malformed rgb_sha256 / ir_sha256 value",
    "bad_joint_group_id": "a malformed joint_group_id",
    "joint_group_spans_splits": "one joint_group_id in two splits",
    "undecodable_image": "image bytes missing or not decodable",
    "aspect_mismatch": "ir has neither the rgb's aspect ratio nor DiffV2IR's size for it (fusionrs_hf.pairing)",
    "ir_not_infrared": "the ir image is colourful (channel spread above the threshold)",
    "pair_swapped": "two rows' ir images look swapped (each row's rgb edges match the other's ir far better)",
    "sha256_mismatch": "stored SHA-256 differs from the image bytes",
    "leak_identical_bytes": "the same image bytes in two splits",
    "leak_near_duplicate": "near-duplicate images (pHash) in two splits",
    "leak_caption": "the same normalized caption in two splits",
}

_FAST_COLUMNS = ("sample_id", "source", "ir_caption", *SHA256_FIELDS.values(), "joint_group_id")
_FULL_COLUMNS = (*_FAST_COLUMNS, "caption", *IMAGE_FIELDS)
_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}


# --------------------------------------------------------------------------- public types

@dataclass
class Finding:
    """One problem, located as precisely as the check allows (None where it does not apply)."""

    kind: str
    message: str
    config: str | None = None
    split: str | None = None
    shard: str | None = None
    row: int | None = None
    sample_id: str | None = None

    def location(self) -> str:
        parts = []
        if self.config or self.split:
            parts.append("/".join(p for p in (self.config, self.split) if p))
        if self.shard:
            parts.append(self.shard + (f"#{self.row}" if self.row is not None else ""))
        if self.sample_id is not None:
            parts.append(f"sample_id={self.sample_id}")
        return " ".join(parts) or "repo"


@dataclass
class CheckReport:
    """The result of :func:`check_repo`; ``ok`` is what a CI gate or ``fusionrs push`` looks at."""

    target: str
    mode: str  # "fast" | "full"
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))

    def to_dict(self) -> dict:
        return {
            "target": self.target, "mode": self.mode, "ok": self.ok, "stats": self.stats,
            "counts_by_kind": self.counts_by_kind(), "findings": [asdict(f) for f in self.findings],
        }


class CheckTargetError(Exception):
    """The target cannot be read at all (no such folder, repo or revision); the CLI exits 2."""


# --------------------------------------------------------------------------- small helpers

def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def caption_key(text: str | None) -> int | None:
    """64-bit hash of the normalized caption; None for a missing or empty caption."""
    if not text:
        return None
    norm = normalize_caption(text)
    return _h64(norm) if norm else None


@dataclass(frozen=True)
class ImageStats:
    size: tuple[int, int]
    spread: float
    phash: int
    edges: np.ndarray | None = None
    """:func:`~fusionrs_hf.pairing.edge_signature` of the image (its structure, for ``pair_swapped``)."""


def inspect_image(data: bytes) -> ImageStats:
    """Decode once and derive size, channel spread and pHash from that one decode.

    The decode is a full one, not libjpeg's reduced-scale one, and the pHash is the authors' own
    (:mod:`fusionrs_hf.phash`), which resizes the full image: a hash of a reduced decode moves by a few bits,
    enough to flag pairs at radius 4 that the release did not group. Both columns: the release's split
    (``dataset/configs/split_v3.json``, ``joint_grouping``) groups RGB images and infrared-style images alike
    by pHash64 within Hamming distance 4. Raises on undecodable bytes.
    """
    from PIL import Image

    im = open_image(data, DEFAULT_MAX_PIXELS)  # what no build stores and no loader decodes is refused unread
    with im:
        size = im.size
        im.load()
        ph = phash(im)
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        k = min(size) // STAT_SIZE
        if k > 1:  # box-average by an integer factor first: a fraction of the cost of a BOX resize
            rgb = rgb.reduce(k)
        if rgb.size != (STAT_SIZE, STAT_SIZE):
            rgb = rgb.resize((STAT_SIZE, STAT_SIZE), Image.Resampling.BOX)
    a = np.asarray(rgb)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    spread = float(np.mean(np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)))
    return ImageStats(size, spread, ph, edge_signature(a))


def _sha_parts(hexdigest: str) -> tuple[int, int]:
    raw = bytes.fromhex(hexdigest[:32])
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")


# --------------------------------------------------------------------------- target

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+\Z")
_HF_REPO_URL = re.compile(r"^(hf://(?:datasets|spaces|models)/[^/@]+/[^/@]+)(/.*)?\Z")


def resolve_target(target: str, revision: str | None = None) -> str:
    """The URL or local path to read: a Hub id that is not a local folder becomes ``hf://datasets/{id}``.

    ``revision`` (branch, tag, commit, ``refs/pr/N``) is only meaningful for Hub targets.
    """
    if not target:
        raise CheckTargetError("empty target")
    rev = f"@{quote(revision, safe='')}" if revision else ""
    if "://" in target:
        if not revision:
            return target
        m = _HF_REPO_URL.match(target)
        if not m:
            raise CheckTargetError(f"--revision applies to hf:// repo URLs without '@', not to {target!r}")
        return m[1] + rev + (m[2] or "")
    if os.path.exists(target) or not _HUB_ID.match(target):
        if revision:
            raise CheckTargetError(f"--revision applies to Hub targets; {target!r} is a local path")
        return target
    return f"hf://datasets/{target}{rev}"


def _open_target(target: str, revision: str | None, storage_options: dict | None = None):
    from .storage import HubUnreachableError, MissingExtraError, locate

    register_url(target)
    url = resolve_target(target, revision)
    try:
        loc = locate(url, None, storage_options)
        loc.ensure_reachable()  # the Hub: one quick question first (HubUnreachableError when offline)
        fs, root = loc.fs(), loc.root
        if hasattr(fs, "resolve_path"):  # HfFileSystem: canonical "datasets/u/n@rev" as its listings spell it
            root = fs.resolve_path(root).unresolve()
        root = root.rstrip("/")
        isdir = fs.isdir(root)
    except (HubUnreachableError, MissingExtraError):
        raise
    except ValueError as e:  # locate's own one-line answer (e.g. no such folder, and not a URL or Hub id)
        if "://" not in target and not os.path.exists(target):
            raise CheckTargetError(scrub(f"{target}: no such folder, and not an fsspec URL or a Hub dataset id "
                                         "(OWNER/NAME)")) from None
        raise CheckTargetError(scrub(f"cannot read {url}: {e}")) from None
    except Exception as e:  # noqa: BLE001 - any failure to reach the target is one clear line
        raise CheckTargetError(scrub(f"cannot read {url}: {type(e).__name__}: {e}")) from None
    if not isdir:
        raise CheckTargetError(scrub(f"{url} is not a folder or repo"))
    return fs, root, url


# --------------------------------------------------------------------------- per-shard work

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
    from .card import shard_info

    res = _ShardResult(task.index)
    name = task.name

    def add(kind: str, message: str, row: int | None = None, sid: str | None = None) -> None:
        res.findings.append(Finding(kind, message, task.config, name.split, name.path, row, sid))

    cols: dict[str, list] = {k: [] for k in _ROW_FIELDS}
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
            refuse_big_row_groups(pf.metadata, wanted, name.path)  # before a page is inflated
            batch_size = 4096 if task.fast else 32
            for batch in pf.iter_batches(batch_size=batch_size, columns=wanted, use_threads=False):
                _check_batch(batch, res, task, add, cols)
        _check_pairs(res, add)
    except Exception as e:  # noqa: BLE001 - a broken file is a finding, not a traceback
        res.unreadable = True
        res.pairs = []
        msg = f"{type(e).__name__}: {e}".strip()
        add("unreadable_shard", f"cannot read parquet after {res.rows_read} rows: {scrub(msg)[:400]}")
    res.rows = {k: np.asarray(v, dtype=_ROW_DTYPES.get(k, np.uint64)) for k, v in cols.items()}
    return res


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


# --------------------------------------------------------------------------- running shards

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


# --------------------------------------------------------------------------- card vs files

def _outside_data(pattern: str) -> bool:
    """Whether a card's data_files pattern can match anything but a path under the repo's ``data/``."""
    p = str(pattern).replace("\\", "/")
    return "://" in p or p.startswith("/") or p[1:3] == ":/" or ".." in p.split("/") or not p.startswith("data/")


def _card_findings(lay: Layout, card_text: str | None, shards: list[ShardName], orphans: list[str],
                   infos: list, unreadable: set[str], card_problem: str | None = None) -> list[Finding]:
    from .card import card_configs, card_split_sizes, expected_stats

    out: list[Finding] = []
    for rel in orphans:
        out.append(Finding("orphan_shard", f"parquet file outside the shard naming rule {SHARD_TEMPLATE}; "
                           "no registry config includes it", shard=rel))
    if card_text is None:
        out.append(Finding("missing_card", "README.md not found: configs and dataset_info cannot be checked"))
        return out
    if card_problem:
        out.append(Finding("bad_card", card_problem))
        return out
    try:
        cfgs = card_configs(card_text)
        sizes = card_split_sizes(card_text)
    except Exception as e:  # noqa: BLE001 - any YAML/shape problem
        out.append(Finding("bad_card", f"cannot read the card's YAML header: {type(e).__name__}: {e}"))
        return out
    paths = [s.path for s in shards]
    all_files = paths + list(orphans)
    for cfg_name, splits in cfgs.items():
        if cfg_name not in lay.configs_by_name:
            out.append(Finding("card_config_mismatch", f"card config {cfg_name!r} is not in the registry",
                               config=cfg_name))
        for split, pats in splits.items():
            for pat in pats:
                if _outside_data(pat):  # stock load_dataset(folder) would read there
                    out.append(Finding("card_outside_repo", f"data_files pattern {pat!r} reaches outside the repo's "
                                       "data/ folder; a card names shards under data/ only (re-render it: fusionrs "
                                       "card)", config=cfg_name, split=split))
                elif not any(glob_match(pat, f) for f in all_files):
                    out.append(Finding("missing_file", f"data_files pattern {pat!r} matches no file "
                                       "(datasets fails with 'Unable to find')", config=cfg_name, split=split))
    for cfg in lay.configs:
        card_splits = cfgs.get(cfg.name, {})
        for split in SPLITS:
            want = set(lay.config_files(cfg, split, paths))
            pats = card_splits.get(split, [])
            got = {f for f in all_files if any(glob_match(p, f) for p in pats)}
            for rel in sorted(want - got):
                out.append(Finding("orphan_shard", f"the card's config {cfg.name!r} split {split!r} does not "
                                   "include this shard (re-render the card: fusionrs card)",
                                   config=cfg.name, split=split, shard=rel))
            for rel in sorted(got - want - set(orphans)):
                out.append(Finding("card_config_mismatch", f"the card's config {cfg.name!r} split {split!r} "
                                   "selects a shard the registry puts elsewhere", config=cfg.name, split=split,
                                   shard=rel))
    exp = expected_stats(infos, lay)
    for cfg in lay.configs:
        card_sz, shard_sz = sizes.get(cfg.name, {}), exp.get(cfg.name, {})
        for split in SPLITS:
            if split not in card_sz and split not in shard_sz:
                continue
            if any(f in unreadable for f in lay.config_files(cfg, split, paths)):
                continue  # reported as unreadable_shard; its rows cannot be counted
            c, s = card_sz.get(split), shard_sz.get(split)
            if c is None:
                out.append(Finding("count_mismatch", f"card has no dataset_info split for {s['num_examples']} rows "
                                   "in the shards", config=cfg.name, split=split))
            elif s is None:
                out.append(Finding("count_mismatch", f"card says {c['num_examples']} rows; no shard has any",
                                   config=cfg.name, split=split))
            else:
                if c["num_examples"] != s["num_examples"]:
                    out.append(Finding("count_mismatch", f"card says num_examples={c['num_examples']}, "
                                       f"shards have {s['num_examples']}", config=cfg.name, split=split))
                if c["num_bytes"] != s["num_bytes"]:
                    out.append(Finding("bytes_mismatch", f"card says num_bytes={c['num_bytes']}, "
                                       f"shard footers say {s['num_bytes']}", config=cfg.name, split=split))
    for cfg_name in sizes:
        if cfg_name not in lay.configs_by_name and cfg_name not in cfgs:
            out.append(Finding("card_config_mismatch", f"card dataset_info config {cfg_name!r} is not in the registry",
                               config=cfg_name))
    return out


# --------------------------------------------------------------------------- cross-row joins

@dataclass
class _Pending:
    """A finding on row ``idx`` (into the concatenated row table) that names row ``other``."""

    kind: str
    idx: int
    other: int
    text: str  # formatted with other_sid, other_split


def _runs(keys: list[np.ndarray], split: np.ndarray, *, cross_split: bool) -> Iterator[np.ndarray]:
    """Index arrays of rows sharing all ``keys``: runs spanning >1 split, or any run of >1 row."""
    n = split.shape[0]
    if n < 2:
        return
    order = np.lexsort(tuple(reversed(keys)))
    change = np.zeros(n, bool)
    change[0] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    if cross_split:
        sp = split[order]
        sel = np.minimum.reduceat(sp, starts) != np.maximum.reduceat(sp, starts)
    else:
        sel = (ends - starts) > 1
    for s, e in zip(starts[sel], ends[sel], strict=True):
        yield np.sort(order[s:e])


def _earliest_first(idx: np.ndarray, split: np.ndarray) -> tuple[int, np.ndarray]:
    """(representative row in the earliest split, rows in later splits)."""
    sp = split[idx]
    first = int(idx[np.flatnonzero(sp == sp.min())[0]])
    return first, idx[sp != sp.min()]


def _joins(rows: dict[str, np.ndarray], fast: bool) -> list[_Pending]:
    split = rows["split"]
    out: list[_Pending] = []
    ok = np.flatnonzero(rows["sid_ok"])
    for run in _runs([rows["sid"][ok]], split[ok], cross_split=False):
        idx = ok[run]
        for j in idx[1:]:
            out.append(_Pending("duplicate_sample_id", int(j), int(idx[0]),
                                "sample_id also used by the row in {other_split} at {other_where}"))
    ok = np.flatnonzero(rows["gid_ok"])
    for run in _runs([rows["gid"][ok]], split[ok], cross_split=True):
        first, later = _earliest_first(ok[run], split)
        out.extend(_Pending("joint_group_spans_splits", int(j), first,
                            "joint_group_id also used in {other_split} by sample_id={other_sid}") for j in later)
    if fast:
        return out
    ok = np.flatnonzero(rows["cap_ok"])
    for run in _runs([rows["cap"][ok]], split[ok], cross_split=True):
        first, later = _earliest_first(ok[run], split)
        out.extend(_Pending("leak_caption", int(j), first,
                            "caption equals (after normalization) the caption of {other_split} "
                            "sample_id={other_sid}") for j in later)
    # identical bytes over both image columns (an rgb reused as another row's ir leaks too)
    n = split.shape[0]
    col_of = np.repeat(np.arange(len(IMAGE_FIELDS)), n)
    row_of = np.tile(np.arange(n), len(IMAGE_FIELDS))
    okc = np.concatenate([(rows[f"{c}_sha0"] != 0) | (rows[f"{c}_sha1"] != 0) for c in IMAGE_FIELDS])
    s0 = np.concatenate([rows[f"{c}_sha0"] for c in IMAGE_FIELDS])
    s1 = np.concatenate([rows[f"{c}_sha1"] for c in IMAGE_FIELDS])
    sel = np.flatnonzero(okc)
    flagged: set[tuple[int, int]] = set()
    for run in _runs([s0[sel], s1[sel]], np.tile(split, len(IMAGE_FIELDS))[sel], cross_split=True):
        ent = sel[run]
        esp = split[row_of[ent]]
        first = ent[np.flatnonzero(esp == esp.min())[0]]
        for e in ent[esp != esp.min()]:
            flagged.add((int(row_of[e]), int(col_of[e])))
            out.append(_Pending("leak_identical_bytes", int(row_of[e]), int(row_of[first]),
                                f"{IMAGE_FIELDS[col_of[e]]} bytes are identical to the "
                                f"{IMAGE_FIELDS[col_of[first]]} of {{other_split}} sample_id={{other_sid}}"))
    for c_i, col in enumerate(IMAGE_FIELDS):
        ok = np.flatnonzero(rows[f"{col}_ok"])
        if ok.size < 2:
            continue
        combos, inverse = np.unique(np.stack([rows[f"{col}_ph"][ok], split[ok].astype(np.uint64)], axis=1),
                                    axis=0, return_inverse=True)
        inverse = inverse.ravel()
        ci, cj, dist = near_pairs(combos[:, 0], PHASH_RADIUS, groups=combos[:, 1])
        if not ci.size:
            continue
        # per later-split combo, its closest earlier-split combo (vectorised: pairs can be many)
        first_is_early = combos[ci, 1] < combos[cj, 1]
        early, late = np.where(first_is_early, ci, cj), np.where(first_is_early, cj, ci)
        order = np.lexsort((early, dist, late))
        late_s = late[order]
        keep = order[np.unique(late_s, return_index=True)[1]]
        best = np.full(len(combos), -1, np.int64)
        best[late[keep]] = keep
        first_pos = np.unique(inverse, return_index=True)[1]  # first row of each combo
        for pos in np.flatnonzero(best[inverse] >= 0):
            r = int(ok[pos])
            if (r, c_i) in flagged:
                continue
            k = best[inverse[pos]]
            out.append(_Pending("leak_near_duplicate", r, int(ok[first_pos[early[k]]]),
                                f"{col} is a near-duplicate (pHash Hamming distance {dist[k]} <= {PHASH_RADIUS}) "
                                f"of the {col} of {{other_split}} sample_id={{other_sid}}"))
    return out


def _resolve_sample_ids(fs, root: str, names: list[ShardName], wanted: dict[int, set[int]]) -> dict:
    """Read only the sample_id column of the shards that have findings to report."""
    out: dict[tuple[int, int], str | None] = {}
    for sidx, rws in wanted.items():
        try:
            with fs.open(f"{root}/{names[sidx].path}", "rb") as fh:
                # Not pq.read_table: on a Python file object it pre-buffers through Arrow's IO threads,
                # whose futures hold Python buffers that an IO thread may release after this block (and
                # after the interpreter started finalizing: it then dies taking the GIL, and the process
                # aborts with "terminate called without an active exception", exit 134). A ParquetFile
                # read without pre-buffering or threads finishes every read before it returns.
                pf = pq.ParquetFile(fh, pre_buffer=False)
                refuse_big_row_groups(pf.metadata, ["sample_id"], names[sidx].path)
                col = pf.read(columns=["sample_id"], use_threads=False).column("sample_id")
            for r in rws:
                out[sidx, r] = col[r].as_py() if r < len(col) else None
        except Exception:  # noqa: BLE001 - the shard is reported unreadable already
            pass
    return out


# --------------------------------------------------------------------------- entry points

def check_repo(target: str, *, fast: bool = False, revision: str | None = None, workers: int | None = None,
               progress: bool = False, ir_threshold: float = IR_SPREAD_THRESHOLD, release: str | None = None,
               index: str | None = None, storage_options: dict | None = None) -> CheckReport:
    """Check a FusionRS repo (local folder, fsspec URL or Hub id) and return every finding.

    ``release`` (e.g. ``"rc4"``) also runs the authors' release checks (:mod:`fusionrs_hf.release.verify`);
    ``"auto"`` runs them when the repo's build report names a known release. ``index`` is the index
    file to verify as well (digest, rows, blocked fields).

    ``storage_options`` go to the target's fsspec filesystem (``endpoint_url``, ``key``, ``secret``, ...;
    for the Hub ``token``/``endpoint``), see :mod:`fusionrs_hf.storage`.

    Raises :class:`CheckTargetError` only when the target cannot be read at all, and
    :class:`~fusionrs_hf.storage.HubUnreachableError` when it is on a Hub that is offline
    (``HF_HUB_OFFLINE``) or does not answer; everything wrong inside a readable repo (including a
    corrupt shard) is a :class:`Finding`. No message,
    finding or exception names a token or the credentials of a URL (:mod:`fusionrs_hf.secrets`).
    """
    with scrubbing():
        return _check_repo(target, fast=fast, revision=revision, workers=workers, progress=progress,
                           ir_threshold=ir_threshold, release=release, index=index, storage_options=storage_options)


def _check_repo(target: str, *, fast: bool, revision: str | None, workers: int | None, progress: bool,
                ir_threshold: float, release: str | None, index: str | None,
                storage_options: dict | None = None) -> CheckReport:
    t0 = time.perf_counter()
    fs, root, url = _open_target(target, revision, storage_options)
    try:
        lay = layout_for(fs, root)
        shards, orphans = lay.list_shards(fs, root)
        card_path = f"{root}/README.md"
        if fs.exists(card_path) and is_local_fs(fs):
            check_repo_file(root, card_path)  # a FIFO would hang the read
        card_text = card_problem = None
        if fs.exists(card_path):  # read no more than a card may be
            with fs.open(card_path, "rb") as fh:
                raw = fh.read(MAX_CARD_BYTES + 1)
            card_text = raw.decode("utf-8", errors="replace")
            if len(raw) > MAX_CARD_BYTES:
                card_problem = f"README.md is larger than the limit of {MAX_CARD_BYTES:,} bytes for a card; not parsed"
    except NotAFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckTargetError(scrub(f"cannot list {url}: {type(e).__name__}: {e}")) from None
    if not shards and not orphans:  # a card alone describes nothing: "0 rows, no findings" would mislead
        what = "a README.md but" if card_text is not None else "no README.md and"
        note = interrupted_build(root) if is_local_fs(fs) else ""
        raise CheckTargetError(scrub(f"{url} is not a FusionRS repo: {what} no data/**/*.parquet shards{note}"))
    workers = max(1, workers or os.cpu_count() or 1)
    tasks = [_Task(i, s, fast, ir_threshold) for i, s in enumerate(shards)]

    findings: list[Finding] = []
    infos: list = [None] * len(shards)
    per_shard: list[dict[str, np.ndarray] | None] = [None] * len(shards)
    unreadable: set[str] = set()
    rows_read = images = 0
    kind = _executor_kind(fast, workers, fs)
    for res in _run_shards(fs, root, tasks, kind, workers, progress):
        findings.extend(res.findings)
        infos[res.index] = res.info
        per_shard[res.index] = res.rows
        rows_read += res.rows_read
        images += res.images
        if res.unreadable:
            unreadable.add(shards[res.index].path)
    findings.extend(_card_findings(lay, card_text, shards, orphans,
                                   [i for i, s in zip(infos, shards, strict=True)
                                    if i is not None and s.path not in unreadable], unreadable, card_problem))

    rows = _concat_rows(per_shard, shards)
    pending = _joins(rows, fast) if rows["split"].size else []
    wanted: dict[int, set[int]] = defaultdict(set)
    for p in pending:
        for i in (p.idx, p.other):
            wanted[int(rows["shard"][i])].add(int(rows["row"][i]))
    sids = _resolve_sample_ids(fs, root, shards, wanted)
    for p in pending:
        s_i, r_i = int(rows["shard"][p.idx]), int(rows["row"][p.idx])
        s_o, r_o = int(rows["shard"][p.other]), int(rows["row"][p.other])
        name, other = shards[s_i], shards[s_o]
        msg = p.text.format(other_sid=sids.get((s_o, r_o)), other_split=other.split,
                            other_where=f"{other.path}#{r_o}")
        findings.append(Finding(p.kind, msg, source_dir(name.source), name.split, name.path, r_i,
                                sids.get((s_i, r_i))))

    release_checks = _release_checks(fs, root, release, index, findings)
    findings.sort(key=_sort_key)
    report = CheckReport(scrub(url), "fast" if fast else "full", findings)
    report.stats = {
        "shards": len(shards), "unreadable_shards": len(unreadable), "other_parquet_files": len(orphans),
        "rows": rows_read, "images_decoded": images, "workers": workers,
        "executor": kind,
        "ir_threshold": ir_threshold, "phash_radius": PHASH_RADIUS,
        "seconds": round(time.perf_counter() - t0, 3), "findings": len(findings),
        "findings_by_kind": report.counts_by_kind(),
    }
    if release_checks is not None:
        report.stats["release"] = release_checks
    return report


def _release_checks(fs, root: str, release: str | None, index: str | None, findings: list) -> dict | None:
    """Run the release checks when asked (or, with ``"auto"``, when the build report names the release)."""
    from .layout import REPORT_NAME, parse_build_report
    from .release.known import get_release
    from .release.verify import verify

    report = None
    path = f"{root}/{REPORT_NAME}"
    try:
        if fs.exists(path):
            if is_local_fs(fs):
                check_repo_file(root, path)  # a FIFO would hang the read, a symlink read outside the repo
            report = parse_build_report(fs.cat_file(path))
    except NotAFileError:
        raise
    except OSError:
        report = None
    if release == "auto":
        release = (report or {}).get("release", {}).get("release")
    if not release:
        return None
    try:
        rel = get_release(release)
    except ValueError as e:
        raise CheckTargetError(str(e)) from None
    checks = verify(fs, root, rel, build_report=report, index_path=index)
    for c in checks:
        for msg, loc in c.findings:
            findings.append(Finding(f"release_{c.name}", msg, **loc))
    return {"release": rel.name, "checks": [c.to_dict() for c in checks]}


def _concat_rows(per_shard: list[dict[str, np.ndarray] | None], shards: list[ShardName]) -> dict[str, np.ndarray]:
    """One table of compact row records over all shards, plus the shard index and split of each row."""
    parts = [(i, r) for i, r in enumerate(per_shard) if r is not None and r["row"].size]
    out = {k: (np.concatenate([r[k] for _, r in parts]) if parts else np.zeros(0, _ROW_DTYPES.get(k, np.uint64)))
           for k in _ROW_FIELDS}
    out["shard"] = np.concatenate([np.full(r["row"].size, i, np.int64) for i, r in parts]) if parts \
        else np.zeros(0, np.int64)
    out["split"] = np.concatenate([np.full(r["row"].size, _SPLIT_INDEX[shards[i].split], np.int8)
                                   for i, r in parts]) if parts else np.zeros(0, np.int8)
    return out


def _sort_key(f: Finding) -> tuple:
    return (f.shard is not None, f.shard or "", -1 if f.row is None else f.row, f.kind, f.config or "",
            _SPLIT_INDEX.get(f.split or "", -1))


# --------------------------------------------------------------------------- CLI

def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="repo folder, fsspec URL (hf://datasets/u/n@rev) or Hub id u/n")
    p.add_argument("--fast", action="store_true", help="columns only: no image decode, no content leakage checks")
    p.add_argument("--revision", help="Hub branch, tag, commit or refs/pr/N (Hub targets only)")
    p.add_argument("--workers", type=int, default=None, help="parallel shard readers (default: CPU count)")
    p.add_argument("--ir-threshold", type=float, default=IR_SPREAD_THRESHOLD,
                   help="largest mean channel spread of an ir image, 0-255 levels (default: %(default)s)")
    p.add_argument("--release", default="auto",
                   help="also run the authors' release checks for this release (rc4 = rc4-20260727); 'auto' "
                        "(default) when the build report names a known release, 'none' to skip")
    p.add_argument("--index", help="with --release: the index file to verify too (SHA-256, rows, blocked fields)")
    p.add_argument("--json", action="store_true", help="print the full report as one JSON object on stdout")
    p.add_argument("--max-print", type=int, default=50, help="findings listed in the human summary (default: 50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from .storage import add_storage_option_argument

    add_storage_option_argument(p)


def run(args: argparse.Namespace) -> int:
    from .cli import EXIT_FINDINGS, EXIT_OK, CliError
    from .storage import parse_storage_options

    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be >= 1")
    try:
        options = parse_storage_options(getattr(args, "storage_options", None))
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        report = check_repo(args.target, fast=args.fast, revision=args.revision, workers=args.workers,
                            progress=not args.quiet, ir_threshold=args.ir_threshold,
                            release=None if args.release == "none" else args.release, index=args.index,
                            storage_options=options)
    except CheckTargetError as e:
        raise CliError(scrub(str(e))) from None
    text = json.dumps(report.to_dict(), indent=2) if args.json else summary(report, max_print=args.max_print)
    print(scrub(text))  # a finding quoting a server's error text must not print a token either
    return EXIT_OK if report.ok else EXIT_FINDINGS


def summary(report: CheckReport, max_print: int = 50) -> str:
    """The human-readable report: totals, counts per kind, then the first findings."""
    st = report.stats
    lines = [f"fusionrs check {report.target} ({report.mode}): {st.get('shards', 0)} shards, "
             f"{st.get('rows', 0)} rows, {st.get('images_decoded', 0)} images decoded, {st.get('seconds', 0)} s"]
    if "release" in st:
        lines.append(f"release checks ({st['release']['release']}):")
        for c in st["release"]["checks"]:
            extra = f" ({c['detail']})" if c["detail"] else ""
            lines.append(f"  {c['status']:<14} {c['check']}: {c['description']}{extra}")
    if report.ok:
        lines.append("OK: no findings")
        return "\n".join(lines)
    for kind, n in report.counts_by_kind().items():
        lines.append(f"  {kind:<28} {n:>6}  {KINDS.get(kind, '')}")
    shown = report.findings[:max(0, max_print)]
    lines.append(f"findings (showing {len(shown)} of {len(report.findings)}):")
    lines.extend(f"  [{f.kind}] {f.location()}: {f.message}" for f in shown)
    lines.append(f"FAILED: {len(report.findings)} finding(s)")
    return "\n".join(lines)
