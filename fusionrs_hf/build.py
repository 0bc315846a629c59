"""Rebuild FusionRS shards from the official index, your copies of the five sources, the DiffV2IR
images and the caption files, and write a build report that accounts for every index record.

The authors release an index only. This command joins each index record to your files
(`SOURCE_ROOT / source_locator` for RGB, `IR_ROOT / translation.output_key` for IR), checks that
both decode and have the same size, embeds the bytes as they are (JPEG never re-encoded),
attaches the cleaned caption (or the class-name fallback) and the IR-aware caption, and writes
the shard layout with its README card.

Example:
  fusionrs build --index fusionrs_index_rc4.jsonl.gz \\
      --source-root NWPU=/data/NWPU-RESISC45 --source-root RSICD=/data/RSICD \\
      --source-root RSITMD=/data/RSITMD --source-root RS5M=/data/rs5m --source-root SkyScript=/data/skyscript \\
      --ir-root /data/diffv2ir_out \\
      --captions RSICD=/data/RSICD/dataset_rsicd.json RSITMD=/data/RSITMD/dataset_RSITMD.json \\
                 /data/NWPU-Captions/dataset_nwpu.json /data/rs5m_captions.parquet \\
      --iraware /data/fusionrs_iraware_strict_v3.jsonl --out ./fusionrs --workers 8

  fusionrs build --from-folder ./my_tiles --source SkyScript --out ./fusionrs   # your own images

Guarantees:
  * faithful by default: on the official rc4 index the build writes rc4 (caption policy rc4: one
    caption per record, usable when non-empty after the authors' normalisation; IR-aware policy rc4:
    the release's `status` decides, captions without one pass the authors' strict-v3 filter); the
    paper's stricter cleaning is --caption-policy paper, our stricter IR rules --iraware-policy strict;
  * the index file's SHA-256 and row count are matched against the known releases and the report
    says which release this is (or that it is none); --dry-run shows coverage before any work;
  * every index record is either written or listed in OUT/build_report.json with its reason
    (missing_rgb, missing_ir, undecodable_rgb, undecodable_ir, aspect_mismatch, caption_dropped,
    missing_caption, no_usable_caption, no_source_root, ...); --strict makes any dropped row exit 1,
    except no_usable_caption (the release itself has no usable caption for it: 8 train records in rc4);
  * RGB and IR of one aspect ratio at two sizes (DiffV2IR writes 512 px for 224-256 px sources) are
    written as they are and counted in the report; a different aspect ratio is a defect;
  * a bad index line is an error naming its line number and field (or, with --on-bad-line report,
    a dropped row); locators with '..', absolute paths or drive letters are rejected;
  * shard membership depends only on the index: records of one (source, split, group) are taken in
    index order and shard k holds positions k*N .. k*N+N-1 (N = --rows-per-shard). A dropped row
    leaves its shard one row shorter and moves no other row, so fixing one missing file rewrites
    one shard. Group = iraware when the IR-aware file has an accepted caption for the sample;
  * resumable and deterministic: re-running the same command skips shards whose inputs (plan,
    options, file sizes and times) are unchanged and rewrites the others; the files are identical
    to those of an uninterrupted build. Build state lives in OUT/.fusionrs-build (not data).

Exit codes: 0 built, 1 --strict with dropped rows or a failed build, 2 usage or unreadable input.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from . import __version__
from .captions import (
    CAPTION_POLICIES,
    CHOICES,
    DEFAULT_CAPTION_POLICY,
    DEFAULT_IR_POLICY,
    IR_POLICIES,
    RULES,
    CaptionFileError,
    CaptionStore,
    read_caption_file,
    read_iraware,
)
from .index import (
    DIFFV2IR_SETTINGS,
    PUBLIC_SCHEMA,
    BadLine,
    IndexFormatError,
    IndexRecord,
    check_relpath,
    iter_index,
)
from .layout import DEFAULT_BATCH, GROUPS, REPORT_NAME, SPLITS, list_shards, parse_shard_path, shard_path
from .pairing import same_aspect
from .release.known import RELEASES, file_sha256, identify_index
from .schema import SOURCES, joint_group_id_for
from .text import caption_key

BUILDER_VERSION = "2"
"""Bumped when the bytes a build writes for the same inputs change; part of every shard fingerprint."""
STATE_DIR = ".fusionrs-build"
DEFAULT_ROWS_PER_SHARD = 1000
RELEASE_DROPS = frozenset({"no_usable_caption"})
"""Drop reasons the release itself implies (it marks the record's caption unusable): a faithful
rebuild does not write these rows, so ``--strict`` does not count them."""
EXAMPLES = 10
"""Example sample ids kept per cleaning rule in the report."""
CRASH_ENV = "FUSIONRS_BUILD_CRASH_AFTER"
"""Testing aid: hard-exit the build (like a kill -9) after this many shards were written."""
NON_JPEG_POLICIES = ("png", "keep", "jpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


# --------------------------------------------------------------------------- source registry

@dataclass(frozen=True)
class SourceSpec:
    """Per-source build behaviour. A new source registers here (plus `schema.SOURCES` and the card's
    upstream table); native caption formats register in `captions.NATIVE_READERS`."""

    name: str
    class_name_from_locator: bool = False
    """NWPU-RESISC45 stores images as ``<class>/<class>_001.jpg``: the folder is the scene class."""


SOURCE_SPECS: dict[str, SourceSpec] = {s.name: s for s in (
    SourceSpec("RS5M"), SourceSpec("SkyScript"), SourceSpec("NWPU", class_name_from_locator=True),
    SourceSpec("RSICD"), SourceSpec("RSITMD"),
)}
assert set(SOURCE_SPECS) == set(SOURCES), "SOURCE_SPECS must cover schema.SOURCES"


# --------------------------------------------------------------------------- options + errors

class BuildError(Exception):
    """Unreadable or invalid input (exit code 2); the message names the file, line or field."""


@dataclass
class BuildOptions:
    index: str
    out: str
    source_roots: dict[str, str] = field(default_factory=dict)
    ir_root: str | None = None
    captions: list[tuple[str | None, str]] = field(default_factory=list)
    """(forced source or None, path) per caption file."""
    iraware: list[str] = field(default_factory=list)
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD
    batch: str = DEFAULT_BATCH
    workers: int = 1
    caption_choice: str = "first"
    caption_policy: str = DEFAULT_CAPTION_POLICY
    iraware_policy: str = DEFAULT_IR_POLICY
    seed: int = 0
    skip_rules: list[str] = field(default_factory=list)
    non_jpeg: str = "png"
    jpeg_quality: int = 95
    allow_size_mismatch: bool = False
    """Also write pairs whose RGB and IR aspect ratios differ (same aspect, other size, is always kept)."""
    on_bad_line: str = "error"
    overwrite: bool = False
    progress: bool = True

    def fingerprint(self) -> str:
        """What, besides the plan and the files, changes the bytes of a shard."""
        parts = [BUILDER_VERSION, self.batch, self.non_jpeg, str(self.jpeg_quality), str(self.allow_size_mismatch)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


# --------------------------------------------------------------------------- planning

class _Examples:
    """Counts with a few example sample ids, for the report."""

    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, key: str, sample_id: str, n: int = 1) -> None:
        self.count[key] += n
        ex = self.examples[key]
        if len(ex) < EXAMPLES and sample_id not in ex:
            ex.append(sample_id)


@dataclass
class Plan:
    tasks: list[Path]
    shard_paths: list[str]
    records: int
    bad_lines: list[dict]
    rules: _Examples
    fallback: _Examples
    iraware_rejected_to_base: int
    index_counts: dict[str, dict[str, int]]
    iraware_unmatched: tuple[int, list[str]]
    caption_counts: dict[str, int]
    identity: dict = field(default_factory=dict)
    release_unusable: _Examples = field(default_factory=_Examples)
    iraware_status: dict[str, int] = field(default_factory=dict)


def _class_name(rec: IndexRecord, hint: str | None) -> str | None:
    if rec.class_name:
        return rec.class_name
    if rec.schema_version != PUBLIC_SCHEMA:
        return None  # the internal index states class_name itself (null outside NWPU)
    if hint:
        return hint
    spec = SOURCE_SPECS[rec.source]
    if spec.class_name_from_locator:
        parent = PurePosixPath(rec.source_locator).parent.name
        return parent or None
    return None


@dataclass
class _Planned:
    """One index record resolved against the caption files: what a worker (or --dry-run) needs."""

    rec: IndexRecord
    entry: dict
    group: str


class _Planner:
    """Streams the index once and resolves each record's captions under the chosen policies.

    Shared by the build (which writes plan files) and ``--dry-run`` (which only counts), so the two
    can never disagree on what a build would write.
    """

    def __init__(self, opts: BuildOptions, state: Path) -> None:
        self.opts = opts
        self.store = CaptionStore(state / "captions.sqlite")
        self.policy = CAPTION_POLICIES[opts.caption_policy]
        self.ir_policy = IR_POLICIES[opts.iraware_policy]
        self.rules, self.fallback, self.release_unusable = _Examples(), _Examples(), _Examples()
        self.bad_lines: list[dict] = []
        self.index_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.iraware_status: dict[str, int] = defaultdict(int)
        self.to_base = self.records = 0

    def load(self) -> None:
        for source, path in self.opts.captions:
            self.store.add(read_caption_file(path, source))
        for path in self.opts.iraware:
            self.store.add_iraware(read_iraware(path))
        self.store.finish()
        self.store.db.execute("CREATE TABLE seen(sid TEXT PRIMARY KEY, line INTEGER)")

    def __iter__(self):
        opts, store = self.opts, self.store
        on_error = "raise" if opts.on_bad_line == "error" else "yield"
        where = Path(opts.index).name
        for item in iter_index(opts.index, on_error=on_error):
            if isinstance(item, BadLine):
                self.bad_lines.append({"line": item.line, "field": item.error.field, "error": str(item.error)})
                continue
            rec = item
            if not store.db.execute("INSERT OR IGNORE INTO seen(sid, line) VALUES (?, ?)",
                                    (rec.sample_id, rec.line)).rowcount:
                prev = store.db.execute("SELECT line FROM seen WHERE sid=?", (rec.sample_id,)).fetchone()
                err = IndexFormatError(where, rec.line, "sample_id",
                                       f"duplicate sample_id {rec.sample_id!r} (first on line {prev[0]})")
                if on_error == "raise":
                    raise err
                self.bad_lines.append({"line": rec.line, "field": "sample_id", "error": str(err),
                                       "sample_id": rec.sample_id})
                continue
            self.records += 1
            self.index_counts[rec.source][rec.index_split] += 1
            yield self._resolve(rec)

    def _resolve(self, rec: IndexRecord) -> _Planned:
        opts = self.opts
        if rec.caption is not None:
            caps, hint = [rec.caption], None  # the internal variant carries the release's own caption
        else:
            caps, hint = self.store.lookup(rec.sample_id, rec.source, rec.source_record_id, rec.source_locator)
        usable = rec.caption_usable if rec.caption_usable is not None else \
            rec.flags.get("caption_supervision_available_upstream")
        cls = _class_name(rec, hint)
        dec = self.policy.decide(rec.sample_id, caps, class_name=cls, choice=opts.caption_choice, seed=opts.seed,
                                 skip_rules=opts.skip_rules, release_usable=usable)
        for name, n in dec.rejected.items():
            self.rules.add(name, rec.sample_id, n)
        if dec.origin == "class_name":
            self.fallback.add("class_name", rec.sample_id)
        if dec.drop_reason == "no_usable_caption":
            self.release_unusable.add("no_usable_caption", rec.sample_id)
        ira = self.store.iraware(rec.sample_id)
        ir_text = ir_status = None
        if ira is not None:
            if ira.status is not None and (ira.source, ira.split) != (rec.source, rec.index_split):
                raise BuildError(f"{ira.file} row {ira.row}: sample_id {rec.sample_id!r} is "
                                 f"{ira.source}/{ira.split} there but {rec.source}/{rec.index_split} in the index "
                                 f"(line {rec.line})")
            ir_text, ir_status, ir_bad = self.ir_policy.decide(ira.caption, ira.status, opts.skip_rules)
            self.iraware_status[ira.status or "no_status"] += 1
            for name in ir_bad:
                if name.startswith("status_"):
                    self.iraware_status[f"not_used_{name[7:]}"] += 1
                else:
                    self.rules.add(name, rec.sample_id)
            self.to_base += bool(ir_bad) and not ir_bad[0].startswith("status_")
        group = "iraware" if ir_text else "base"
        entry = {
            **rec.to_json(), "class_name": cls,
            "caption": dec.caption, "all_captions": dec.all_captions, "caption_origin": dec.origin,
            "normalized_caption_key": caption_key(dec.caption) if dec.caption else None,
            "ir_caption": ir_text, "ir_caption_status": ir_status, "drop": dec.drop_reason,
        }
        return _Planned(rec, entry, group)

    def unmatched_iraware(self) -> tuple[int, list[str]]:
        rows = self.store.db.execute(
            "SELECT sid FROM ira WHERE sid NOT IN (SELECT sid FROM seen) ORDER BY sid").fetchall()
        return len(rows), [r[0] for r in rows[:EXAMPLES]]

    def close(self) -> None:
        self.store.close()


def index_identity(path: str | os.PathLike, rows: int) -> dict:
    """Digest, rows and the known release the index file is (or a note that it is none)."""
    return identify_index(file_sha256(path), rows).to_dict()


def make_plan(opts: BuildOptions, state: Path) -> Plan:
    """Read captions into the store, stream the index once and write one plan file per shard.

    A plan file lists the shard's records in index order with their resolved captions; it is
    all a worker needs, and its bytes are the shard's membership fingerprint.
    """
    plan_dir = state / "plan"
    if plan_dir.exists():
        shutil.rmtree(plan_dir)
    plan_dir.mkdir(parents=True)
    planner = _Planner(opts, state)
    try:
        planner.load()
        writers: dict[tuple[str, str, str], list] = {}  # key -> [shard index, rows in it, handle]
        tasks: list[Path] = []
        shard_paths: list[str] = []
        try:
            for item in planner:
                rec = item.rec
                key = (rec.source, rec.split, item.group)
                w = writers.get(key)
                if w is None or w[1] >= opts.rows_per_shard:
                    if w is not None:
                        w[2].close()
                    idx = 0 if w is None else w[0] + 1
                    rel = shard_path(rec.source, rec.split, item.group, idx, opts.batch)
                    task = plan_dir / (rel.replace("/", "__") + ".jsonl")
                    w = writers[key] = [idx, 0, open(task, "w", encoding="utf-8")]
                    tasks.append(task)
                    shard_paths.append(rel)
                w[2].write(json.dumps(item.entry, sort_keys=True, ensure_ascii=False) + "\n")
                w[1] += 1
        finally:
            for w in writers.values():
                w[2].close()
        planner.store.db.commit()
        return Plan(tasks, shard_paths, planner.records, planner.bad_lines, planner.rules, planner.fallback,
                    planner.to_base, {s: dict(v) for s, v in planner.index_counts.items()},
                    planner.unmatched_iraware(), dict(planner.store.counts),
                    identity=index_identity(opts.index, planner.records + len(planner.bad_lines)),
                    release_unusable=planner.release_unusable, iraware_status=dict(planner.iraware_status))
    finally:
        planner.close()


# --------------------------------------------------------------------------- one shard (worker)

class _Drop(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


def load_image(path: Path, what: str, non_jpeg: str = "png", jpeg_quality: int = 95) -> tuple[bytes, tuple[int, int]]:
    """Read and fully decode one image; return the bytes to store and the pixel size.

    JPEG bytes are returned as they are. Other formats follow ``non_jpeg``: ``png`` keeps PNG
    and converts the rest losslessly to PNG, ``keep`` stores any format as is, ``jpeg``
    re-encodes non-JPEG input (the only lossy path, and only when asked).
    """
    from PIL import Image

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise _Drop(f"missing_{what}", f"{what} file not found: {path}") from None
    except OSError as e:
        raise _Drop(f"undecodable_{what}", f"{what} file unreadable: {path}: {e}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt, size, mode = im.format, im.size, im.mode
            if fmt == "JPEG" or non_jpeg == "keep" or (non_jpeg == "png" and fmt == "PNG"):
                return data, size
            buf = io.BytesIO()
            if non_jpeg == "png":
                if mode not in _PNG_MODES:
                    raise _Drop(f"undecodable_{what}", f"{what} {path}: mode {mode} has no lossless PNG form; "
                                                       "use --non-jpeg keep")
                im.save(buf, format="PNG")
            else:
                im.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
            return buf.getvalue(), size
    except _Drop:
        raise
    except Exception as e:  # noqa: BLE001 - any decoder failure is a per-row finding
        raise _Drop(f"undecodable_{what}", f"{what} {path}: cannot decode ({type(e).__name__}: {e})") from None


def _stat(path: Path) -> str:
    try:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "-"


def _safe_join(root: str, rel: str) -> Path:
    return Path(root) / check_relpath(rel)


def shard_fingerprint(entries: list[dict], ctx: dict) -> str:
    """Plan + options + (size, mtime) of every input file: equal fingerprints mean equal shard bytes."""
    h = hashlib.sha256(ctx["options_fp"].encode())
    for e in entries:  # line numbers are left out: they do not change the bytes, so an edit elsewhere rebuilds nothing
        h.update(json.dumps({k: v for k, v in e.items() if k != "line"}, sort_keys=True).encode())
    for e in entries:
        root = ctx["roots"].get(e["source"])
        h.update(_stat(_safe_join(root, e["source_locator"])).encode() if root else b"-")
        h.update(_stat(_safe_join(ctx["ir_root"], e["ir_key"])).encode() if ctx["ir_root"] else b"-")
    return h.hexdigest()


def build_shard(task: str, rel: str, ctx: dict) -> dict:
    """Build one planned shard (or confirm an existing one); return its result record.

    Runs in a worker process: it holds one shard's image bytes at most.
    """
    from .shards import write_rows

    out = Path(ctx["out"])
    plan_bytes = Path(task).read_bytes()
    entries = [json.loads(line) for line in plan_bytes.decode("utf-8").splitlines()]
    fp = shard_fingerprint(entries, ctx)
    done_path = out / STATE_DIR / "done" / (rel + ".json")
    target = out / rel
    if done_path.exists():
        try:
            done = json.loads(done_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            done = {}
        exists_ok = (target.exists() and target.stat().st_size == done.get("file_bytes")) if done.get("rows") \
            else not target.exists()
        if done.get("fingerprint") == fp and exists_ok:
            lines = {e["sample_id"]: e.get("line") for e in entries}
            for d in done.get("dropped", []):
                d["line"] = lines.get(d["sample_id"])
            return {**done, "skipped": True}

    rows, dropped, written, resized = [], [], [], []
    for e in entries:
        sid = e["sample_id"]
        try:
            if e.get("drop"):
                raise _Drop(e["drop"], "no usable caption and no class name for the fallback")
            root = ctx["roots"].get(e["source"])
            if not root:
                raise _Drop("no_source_root", f"no --source-root given for {e['source']}")
            if not ctx["ir_root"]:
                raise _Drop("missing_ir", "no --ir-root given")
            rgb, rgb_size = load_image(_safe_join(root, e["source_locator"]), "rgb", ctx["non_jpeg"],
                                       ctx["jpeg_quality"])
            ir, ir_size = load_image(_safe_join(ctx["ir_root"], e["ir_key"]), "ir", ctx["non_jpeg"],
                                     ctx["jpeg_quality"])
            if rgb_size != ir_size:
                if not same_aspect(rgb_size, ir_size) and not ctx["allow_size_mismatch"]:
                    raise _Drop("aspect_mismatch", f"rgb is {rgb_size[0]}x{rgb_size[1]}, ir is "
                                                   f"{ir_size[0]}x{ir_size[1]}: different aspect ratios")
                resized.append({"sample_id": sid, "rgb": list(rgb_size), "ir": list(ir_size)})
        except _Drop as d:
            dropped.append({"sample_id": sid, "reason": d.reason, "detail": d.detail, "line": e.get("line")})
            continue
        rows.append({
            "sample_id": sid, "source": e["source"], "source_record_id": e["source_record_id"],
            "rgb": rgb, "ir": ir, "caption": e["caption"], "all_captions": e["all_captions"],
            "caption_origin": e["caption_origin"], "ir_caption": e["ir_caption"], "class_name": e["class_name"],
            "joint_group_id": e["joint_group_id"], "rights_code": e["rights_code"],
            "normalized_caption_key": e.get("normalized_caption_key"),
            "ir_caption_status": e.get("ir_caption_status"), **(e.get("release") or {}),
        })
        written.append(sid)
    file_bytes = 0
    if rows:
        file_bytes = write_rows(rows, target).file_bytes
    elif target.exists():
        target.unlink()  # every row of this shard is now dropped: a stale file must not survive
    name = parse_shard_path(rel)
    result = {"shard": rel, "fingerprint": fp, "source": name.source, "split": name.split, "group": name.group,
              "planned": len(entries), "rows": len(rows), "file_bytes": file_bytes, "dropped": dropped,
              "size_differs": resized}
    done_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = done_path.with_name(done_path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, sort_keys=True), encoding="utf-8")
    os.replace(tmp, done_path)
    return {**result, "skipped": False}


# --------------------------------------------------------------------------- --dry-run

def dry_run(opts: BuildOptions) -> dict:
    """What a build would write, from file metadata only (no image is opened): per source and split,
    how many index records have their RGB, IR, caption and IR-aware caption, how many rows would be
    written, and which release checks could then hold. Nothing is written under ``--out``."""
    import tempfile

    from .release.known import RC4

    _check_inputs(opts)
    cov: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    with tempfile.TemporaryDirectory(prefix="fusionrs-dry-") as tmp:
        planner = _Planner(opts, Path(tmp))
        try:
            planner.load()
            for item in planner:
                rec, e = item.rec, item.entry
                c = cov[rec.source][rec.split]
                c["records"] += 1
                root = opts.source_roots.get(rec.source)
                rgb = bool(root) and _is_file(root, rec.source_locator)
                ir = bool(opts.ir_root) and _is_file(opts.ir_root, rec.translation.output_key)
                cap = e["caption"] is not None
                c["rgb"] += rgb
                c["ir"] += ir
                c["caption"] += cap
                c["iraware"] += item.group == "iraware"
                ok = rgb and ir and cap
                c["would_write"] += ok
                c["would_write_iraware"] += ok and item.group == "iraware"
                c["would_write_eval_representatives"] += ok and bool(e["release"]["is_eval_representative"])
                if e["drop"] == "no_usable_caption":
                    c["release_unusable"] += 1
            identity = index_identity(opts.index, planner.records + len(planner.bad_lines))
            bad = len(planner.bad_lines)
        finally:
            planner.close()
    coverage = {s: {sp: dict(v) for sp, v in per.items()} for s, per in sorted(cov.items())}
    rel = RELEASES.get(identity.get("release") or "") or RC4
    return {"tool": "fusionrs build --dry-run", "index": str(opts.index), "release": identity,
            "bad_index_lines": bad, "coverage": coverage,
            "would_write": sum(v["would_write"] for per in coverage.values() for v in per.values()),
            "release_checks": _could_hold(rel, coverage)}


def _is_file(root: str, rel: str) -> bool:
    try:
        return _safe_join(root, rel).is_file()
    except (OSError, ValueError):
        return False


def _could_hold(rel, coverage: dict) -> dict[str, str]:
    """Per release check, whether the rows a build would write can satisfy it, and if not, why."""
    from .layout import SPLIT_TO_INDEX

    def n(src, split, key="would_write"):
        return coverage.get(src, {}).get(split, {}).get(key, 0)

    missing = [s for s in rel.sources if not any(n(s, sp, "rgb") for sp in SPLITS)]
    out: dict[str, str] = {}
    short = [f"{s} {sp} {n(s, sp):,}/{rel.expected_rows(s, sp):,}" for s in rel.sources for sp in SPLITS
             if n(s, sp) < rel.expected_rows(s, sp) - (rel.records - rel.split_total('val') - rel.split_total('test')
                                                         - rel.train_usable if sp == "train" else 0)]
    out["split_counts"] = "can hold" if not short else "cannot hold: " + ", ".join(short[:6]) + \
        (f" (+{len(short) - 6} more)" if len(short) > 6 else "")
    total = sum(n(s, sp) for s in rel.sources for sp in SPLITS)
    want = rel.train_usable + rel.split_total("val") + rel.split_total("test")
    out["records"] = "can hold" if total == want else f"cannot hold: {total:,} rows would be written, release {want:,}"
    if missing:
        out["records"] += f" (no files found for {', '.join(missing)})"
    reps = {sp: sum(n(s, sp, "would_write_eval_representatives") for s in rel.sources) for sp in SPLITS}
    wrong = [f"{sp} {reps[sp]:,}/{rel.eval_representatives.get(SPLIT_TO_INDEX[sp], 0):,}" for sp in SPLITS
             if reps[sp] != rel.eval_representatives.get(SPLIT_TO_INDEX[sp], 0)]
    out["eval_representatives"] = "can hold" if not wrong else "cannot hold: " + ", ".join(wrong)
    low = [f"{s} {sp} {n(s, sp):,}" for s in rel.sources for sp in ("validation", "test")
           if n(s, sp) < rel.heldout_minimum_per_source]
    out["heldout_minimum"] = "can hold" if not low else "cannot hold: " + ", ".join(low)
    ira = {s: n(s, "train", "would_write_iraware") for s in rel.sources}
    bad_ira = [f"{s} {ira[s]:,}/{rel.iraware_accepted.get(s, 0):,}" for s in rel.sources
               if ira[s] != rel.iraware_accepted.get(s, 0)]
    out["iraware"] = "can hold" if not bad_ira else "cannot hold: " + ", ".join(bad_ira)
    return out


def _print_dry_run(d: dict) -> None:
    r = d["release"]
    print(f"index: {d['index']}  ({r['rows']:,} rows; {r['note']})")
    print(f"{'source':<10} {'split':<10} {'records':>9} {'rgb':>9} {'ir':>9} {'caption':>9} {'iraware':>8} "
          f"{'write':>9}")
    for src, per in d["coverage"].items():
        for split in SPLITS:
            c = per.get(split)
            if c:
                print(f"{src:<10} {split:<10} {c['records']:>9,} {c['rgb']:>9,} {c['ir']:>9,} {c['caption']:>9,} "
                      f"{c['iraware']:>8,} {c['would_write']:>9,}")
    print(f"rows a build would write: {d['would_write']:,}")
    for name, verdict in d["release_checks"].items():
        print(f"  release check {name}: {verdict}")


# --------------------------------------------------------------------------- orchestration

def _stale_shards(out: Path, batch: str, planned: set[str]) -> list[str]:
    import fsspec

    fs = fsspec.filesystem("file")
    shards, _ = list_shards(fs, str(out.resolve()))
    return [s.path for s in shards if s.batch == batch and s.path not in planned]


def build(opts: BuildOptions, *, on_shard_done: Callable[[dict], None] | None = None) -> dict:
    """Run a build and return the report (also written to ``OUT/build_report.json``).

    Raises :class:`BuildError` for unusable input (bad index line, unreadable caption file,
    stale shards of another plan without ``overwrite``).
    """
    _check_inputs(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_DIR
    state.mkdir(exist_ok=True)
    try:
        plan = make_plan(opts, state)
    except (IndexFormatError, CaptionFileError) as e:
        raise BuildError(str(e)) from None

    stale = _stale_shards(out, opts.batch, set(plan.shard_paths))
    if stale:
        if not opts.overwrite:
            raise BuildError(
                f"{out} has {len(stale)} shard(s) of batch {opts.batch!r} that this build would not write "
                f"(e.g. {stale[0]}; a different index or --rows-per-shard?); pass --overwrite to delete them, "
                "or use another --out or --batch")
        for rel in stale:
            (out / rel).unlink()
            (state / "done" / (rel + ".json")).unlink(missing_ok=True)

    ctx = {"out": str(out), "roots": dict(opts.source_roots), "ir_root": opts.ir_root,
           "non_jpeg": opts.non_jpeg, "jpeg_quality": opts.jpeg_quality,
           "allow_size_mismatch": opts.allow_size_mismatch, "options_fp": opts.fingerprint()}
    results = _run_tasks(plan, ctx, opts, on_shard_done)

    from .atomic import atomic_write
    from .card import write_card

    text = json.dumps(make_report(opts, plan, results), indent=2, ensure_ascii=False)
    report = json.loads(text)  # the returned report is exactly what the file holds
    atomic_write(out / REPORT_NAME, text + "\n")
    write_card(out)  # after the report: the card names the release the report identified
    return report


def _run_tasks(plan: Plan, ctx: dict, opts: BuildOptions, on_shard_done) -> list[dict]:
    from tqdm.auto import tqdm

    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    built = 0
    results: list[dict] = []
    bar = tqdm(total=len(plan.tasks), unit="shard", desc="fusionrs build", file=sys.stderr,
               disable=not opts.progress or not sys.stderr.isatty())

    def done(res: dict) -> None:
        nonlocal built
        results.append(res)
        bar.update(1)
        built += not res["skipped"]
        if on_shard_done:
            on_shard_done(res)
        if crash_after and built >= crash_after:
            os._exit(137)

    jobs = list(zip((str(t) for t in plan.tasks), plan.shard_paths, strict=True))
    try:
        if opts.workers <= 1 or len(jobs) <= 1:
            for task, rel in jobs:
                done(build_shard(task, rel, ctx))
        else:
            with ProcessPoolExecutor(max_workers=opts.workers) as pool:
                futs = [pool.submit(build_shard, task, rel, ctx) for task, rel in jobs]
                try:
                    for fut in as_completed(futs):
                        done(fut.result())
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return sorted(results, key=lambda r: r["shard"])


def make_report(opts: BuildOptions, plan: Plan, results: list[dict]) -> dict:
    """The machine-readable account of a build: what was written and what was not, and why."""
    written: dict[str, dict[str, dict[str, int]]] = {s: {sp: dict.fromkeys(GROUPS, 0) for sp in SPLITS}
                                                     for s in SOURCES}
    by_reason: dict[str, dict] = {}
    for r in results:
        written[r["source"]][r["split"]][r["group"]] += r["rows"]
        for d in r["dropped"]:
            b = by_reason.setdefault(d["reason"], {"count": 0, "sample_ids": [], "details": []})
            b["count"] += 1
            b["sample_ids"].append(d["sample_id"])
            if len(b["details"]) < 20:
                b["details"].append(d)
    if plan.bad_lines:
        by_reason["bad_index_line"] = {"count": len(plan.bad_lines), "lines": [b["line"] for b in plan.bad_lines],
                                       "sample_ids": [b["sample_id"] for b in plan.bad_lines if "sample_id" in b],
                                       "details": plan.bad_lines[:20]}
    for b in by_reason.values():
        b["sample_ids"].sort()
    n_written = sum(r["rows"] for r in results)
    n_dropped = sum(b["count"] for k, b in by_reason.items() if k != "bad_index_line")
    n_expected = sum(b["count"] for k, b in by_reason.items() if k in RELEASE_DROPS)
    resized = [d for r in results for d in r.get("size_differs", [])]
    rules = {
        name: {"applies_to": rule.applies_to, "description": rule.description,
               "enabled": name not in opts.skip_rules,
               "count": plan.rules.count.get(name, 0), "examples": plan.rules.examples.get(name, [])}
        for name, rule in RULES.items()
    }
    rel = RELEASES.get(plan.identity.get("release") or "") or RELEASES["rc4-20260727"]
    rc4 = {s: {sp: {"index": plan.index_counts.get(s, {}).get(sp, 0), "rc4": n} for sp, n in c.items()}
           for s, c in rel.split_counts.items()}
    return {
        "tool": "fusionrs build", "version": __version__, "builder_version": BUILDER_VERSION,
        "index": str(opts.index), "out": str(opts.out),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("progress",)},
        "diffv2ir_reference": DIFFV2IR_SETTINGS,
        "index_records": plan.records,
        "bad_index_lines": len(plan.bad_lines),
        "written": {"total": n_written, "by_source_split_group": written},
        "dropped": {"total": n_dropped, "expected_by_release": n_expected,
                    "by_reason": dict(sorted(by_reason.items()))},
        "release": {**plan.identity, "sources_built": sorted(s for s in opts.source_roots if s in SOURCES)},
        "size_differs_same_aspect": {"count": len(resized), "examples": resized[:EXAMPLES]},
        "accounted": n_written + n_dropped == plan.records,
        "captions": {
            **plan.caption_counts,
            "choice": opts.caption_choice,
            "policy": opts.caption_policy,
            "iraware_policy": opts.iraware_policy,
            "iraware_status": dict(sorted(plan.iraware_status.items())),
            "release_unusable": {"count": plan.release_unusable.count.get("no_usable_caption", 0),
                                 "examples": plan.release_unusable.examples.get("no_usable_caption", [])},
            "class_name_fallback": {"count": plan.fallback.count.get("class_name", 0),
                                    "examples": plan.fallback.examples.get("class_name", [])},
            "iraware_rejected_to_base": plan.iraware_rejected_to_base,
            "iraware_not_in_index": {"count": plan.iraware_unmatched[0], "examples": plan.iraware_unmatched[1]},
            "rules": rules,
        },
        "shards": {
            "planned": len(results), "written": sum(not r["skipped"] and r["rows"] > 0 for r in results),
            "skipped_unchanged": sum(r["skipped"] for r in results),
            "empty": sum(r["rows"] == 0 for r in results), "rows_per_shard": opts.rows_per_shard,
            "batch": opts.batch,
        },
        "rc4_comparison": {"matches": all(v["index"] == v["rc4"] for c in rc4.values() for v in c.values()),
                           "counts": rc4},
    }


def _check_inputs(opts: BuildOptions) -> None:
    if not Path(opts.index).is_file():
        raise BuildError(f"index {opts.index}: no such file")
    for src, root in opts.source_roots.items():
        if src not in SOURCES:
            raise BuildError(f"--source-root {src}=...: unknown source; expected one of {', '.join(SOURCES)}")
        if not Path(root).is_dir():
            raise BuildError(f"--source-root {src}={root}: not a directory")
    if opts.ir_root and not Path(opts.ir_root).is_dir():
        raise BuildError(f"--ir-root {opts.ir_root}: not a directory")
    for _, path in opts.captions:
        if not Path(path).is_file():
            raise BuildError(f"--captions {path}: no such file")
    for path in opts.iraware:
        if not Path(path).is_file():
            raise BuildError(f"--iraware {path}: no such file")
    unknown = set(opts.skip_rules) - set(RULES)
    if unknown:
        raise BuildError(f"--skip-rule {sorted(unknown)[0]}: unknown rule; known: {', '.join(RULES)}")
    if opts.caption_policy not in CAPTION_POLICIES:
        raise BuildError(f"--caption-policy {opts.caption_policy}: expected one of {', '.join(CAPTION_POLICIES)}")
    if opts.iraware_policy not in IR_POLICIES:
        raise BuildError(f"--iraware-policy {opts.iraware_policy}: expected one of {', '.join(IR_POLICIES)}")
    if opts.caption_choice not in CHOICES:
        raise BuildError(f"--caption-choice {opts.caption_choice}: expected one of {', '.join(CHOICES)}")
    if opts.rows_per_shard < 1:
        raise BuildError("--rows-per-shard must be at least 1")


# --------------------------------------------------------------------------- --from-folder

def folder_to_inputs(path: str | os.PathLike, source: str, work: Path, *, split: str = "train",
                     ir_root: str | None = None, rights_code: str = "user-supplied",
                     id_prefix: str = "user-") -> tuple[Path, str, str, Path, Path | None]:
    """Turn a folder (or CSV/JSONL listing) of your own images into an index + caption files.

    Returns (index path, source root, IR root, captions path, IR-aware path or None); the
    normal build then runs on them, so your rows get the same checks, cleaning and report.

    Folder layout: ``PATH/rgb/**/<name>.<ext>`` (or images directly in PATH), IR images at the same
    relative path under ``PATH/ir/`` (or ``--ir-root``), captions in ``<name>.txt`` next to the RGB
    image (one caption per line) and IR-aware captions in ``<name>.ir.txt``.
    Listing layout (CSV or JSONL): columns ``rgb`` (path relative to the listing), ``ir``, ``caption``,
    optional ``ir_caption``, ``split`` (train/val/test), ``sample_id``, ``class_name``, ``rights_code``.
    """
    if source not in SOURCE_SPECS:
        raise BuildError(f"--source {source}: expected one of {', '.join(SOURCE_SPECS)} "
                         "(a new source registers in schema.SOURCES and build.SOURCE_SPECS)")
    p = Path(path)
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if p.is_file():
        base = p.parent
        listing = _listing_rows(p)
        for n, r in enumerate(listing, 1):
            if not r.get("rgb"):
                raise BuildError(f"{p.name} row {n}: missing `rgb`")
            rows.append({"rgb": r["rgb"], "ir": r.get("ir") or r["rgb"], "captions": _caps(r.get("caption")),
                         "ir_caption": r.get("ir_caption") or None, "split": r.get("split") or split,
                         "sample_id": r.get("sample_id"), "class_name": r.get("class_name") or None,
                         "rights_code": r.get("rights_code") or rights_code})
        ir_base = Path(ir_root) if ir_root else base
    elif p.is_dir():
        rgb_dir = p / "rgb" if (p / "rgb").is_dir() else p
        base = rgb_dir
        ir_base = Path(ir_root) if ir_root else p / "ir"
        for f in sorted(rgb_dir.rglob("*")):
            if f.suffix.lower() not in IMAGE_EXTS or not f.is_file() or (ir_base in f.parents):
                continue
            rel = f.relative_to(rgb_dir).as_posix()
            cap_file, ir_cap_file = f.with_suffix(".txt"), f.with_suffix(".ir.txt")
            caps = cap_file.read_text(encoding="utf-8").splitlines() if cap_file.exists() else []
            ir_cap = ir_cap_file.read_text(encoding="utf-8").strip() if ir_cap_file.exists() else None
            rows.append({"rgb": rel, "ir": _find_ir(ir_base, rel), "captions": [c for c in caps if c.strip()],
                         "ir_caption": ir_cap, "split": split, "sample_id": None, "class_name": None,
                         "rights_code": rights_code})
    else:
        raise BuildError(f"--from-folder {path}: no such file or directory")
    if not rows:
        raise BuildError(f"--from-folder {path}: no images found")

    index, caps_path, ira_path = work / "folder_index.jsonl", work / "folder_captions.jsonl", work / "folder_iraware.jsonl"
    n_ira = 0
    with open(index, "w", encoding="utf-8") as fi, open(caps_path, "w", encoding="utf-8") as fc, \
            open(ira_path, "w", encoding="utf-8") as fa:
        for r in rows:
            sid = r["sample_id"] or f"{id_prefix}{source.lower()}-{PurePosixPath(r['rgb']).with_suffix('').as_posix().replace('/', '-')}"
            rec = {
                "schema_version": PUBLIC_SCHEMA, "sample_id": sid, "source_dataset": source,
                "source_record_id": r["rgb"], "source_locator": r["rgb"], "source_rights_code": r["rights_code"],
                "split": r["split"], "joint_group_id": joint_group_id_for(sid),
                # a valid public-schema line: each own row is its own pHash component and representative
                "phash4_component_id": f"singleton_{sid}", "canonical_component_representative": sid,
                "is_canonical_component_representative": True, "is_eval_representative": r["split"] != "train",
                "caption_supervision_available_upstream": bool(r["captions"]), "vlm_train_identity": False,
                "prior_reused_protected": False,
                "translation": {"model": "DiffV2IR", "output_key": r["ir"], "redistribution": "user-supplied"},
            }
            fi.write(json.dumps(rec) + "\n")
            fc.write(json.dumps({"sample_id": sid, "captions": r["captions"], "class_name": r["class_name"]}) + "\n")
            if r["ir_caption"]:
                fa.write(json.dumps({"sample_id": sid, "ir_caption": r["ir_caption"]}) + "\n")
                n_ira += 1
    return index, str(base), str(ir_base), caps_path, (ira_path if n_ira else None)


def _caps(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if str(value).strip() else []


def _find_ir(ir_base: Path, rel: str) -> str:
    if (ir_base / rel).exists():
        return rel
    stem = PurePosixPath(rel).with_suffix("")
    for ext in IMAGE_EXTS:
        if (ir_base / f"{stem}{ext}").exists():
            return f"{stem}{ext}"
    return rel  # reported as missing_ir by the build


def _listing_rows(p: Path) -> list[dict]:
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    out = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BuildError(f"{p.name} line {n}: not valid JSON ({e.msg})") from None
    return out


# --------------------------------------------------------------------------- CLI

def _parse_kv(values: Iterable[str], flag: str) -> dict[str, str]:
    from .cli import CliError

    out = {}
    for v in values:
        if "=" not in v:
            raise CliError(f"{flag} {v}: expected SOURCE=DIR (SOURCE one of {', '.join(SOURCES)})")
        k, path = v.split("=", 1)
        out[k] = path
    return out


def _caption_arg(v: str) -> tuple[str | None, str]:
    head, sep, tail = v.partition("=")
    if sep and head in SOURCES:
        return head, tail
    return None, v


def configure_parser(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument("--index", help="official index, JSON Lines, optionally gzip (public or internal variant)")
    g.add_argument("--source-root", action="append", default=[], metavar="SOURCE=DIR",
                   help=f"root of your copy of one source ({', '.join(SOURCES)}); repeat per source. "
                        "RGB path = DIR / source_locator")
    g.add_argument("--ir-root", help="folder of DiffV2IR outputs; IR path = DIR / translation.output_key")
    g.add_argument("--captions", nargs="+", action="extend", default=[], metavar="[SOURCE=]FILE",
                   help="caption table (.jsonl/.csv/.parquet keyed by sample_id or source_dataset+source_record_id) "
                        "or native RSICD/RSITMD/NWPU-Captions JSON; prefix SOURCE= to force the native reader")
    g.add_argument("--iraware", action="append", default=[], metavar="FILE",
                   help="IR-aware captions keyed by sample_id (jsonl/csv/parquet; column ir_caption or caption)")
    g.add_argument("--from-folder", metavar="PATH",
                   help="instead of --index: a folder (rgb/, ir/, <name>.txt captions) or CSV/JSONL listing "
                        "of your own images; rows are built as --source")
    g.add_argument("--source", help="with --from-folder: the source name the rows are filed under")
    g.add_argument("--split", default="train", help="with --from-folder: split for rows without one (%(default)s)")
    g.add_argument("--rights-code", default="user-supplied", help="with --from-folder: rights_code of the rows")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="repo folder to write (data/ shards, README.md, build_report.json)")
    o.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD,
                   help="planned rows per shard; fixes shard membership from the index alone (%(default)s)")
    o.add_argument("--batch", default=DEFAULT_BATCH, help="batch tag in shard names (%(default)s)")
    o.add_argument("--overwrite", action="store_true",
                   help="delete shards of this batch that the current plan would not write")
    c = p.add_argument_group("captions")
    c.add_argument("--caption-choice", choices=CHOICES, default="first",
                   help="several captions per image: first usable, random (with --seed) or all (all_captions "
                        "list column, caption = first) (%(default)s)")
    c.add_argument("--caption-policy", choices=sorted(CAPTION_POLICIES), default=DEFAULT_CAPTION_POLICY,
                   help="rc4 = the release's rule (one caption, usable when non-empty after normalisation, no "
                        "cleaning, no fallback); paper = the paper's §3.4 cleaning rules + class-name fallback "
                        "(%(default)s)")
    c.add_argument("--iraware-policy", choices=sorted(IR_POLICIES), default=DEFAULT_IR_POLICY,
                   help="rc4 = the release's status decides, captions without one pass the authors' strict-v3 "
                        "filter; strict = rc4 plus our stricter IR claim rules (%(default)s)")
    c.add_argument("--seed", type=int, default=0, help="seed for --caption-choice random")
    c.add_argument("--skip-rule", action="append", default=[], metavar="RULE",
                   help=f"disable a cleaning rule by name: {', '.join(RULES)}")
    i = p.add_argument_group("images")
    i.add_argument("--non-jpeg", choices=NON_JPEG_POLICIES, default="png",
                   help="non-JPEG input: png = keep PNG, convert others losslessly to PNG; keep = store as is; "
                        "jpeg = re-encode (lossy) (%(default)s). JPEG is always stored as is")
    i.add_argument("--jpeg-quality", type=int, default=95, help="quality for --non-jpeg jpeg (%(default)s)")
    i.add_argument("--allow-size-mismatch", action="store_true",
                   help="also write pairs whose RGB and IR aspect ratios differ (dropped as aspect_mismatch by "
                        "default). Pairs of one aspect ratio at two sizes (DiffV2IR writes 512 px) are always "
                        "written and counted in the report")
    r = p.add_argument_group("run")
    r.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)),
                   help="worker processes, one shard each at a time (%(default)s)")
    r.add_argument("--on-bad-line", choices=("error", "report"), default="error",
                   help="a bad index line stops the build (error, exit 2) or is listed as dropped (report)")
    r.add_argument("--strict", action="store_true", help="exit 1 if any index record was not written")
    r.add_argument("--json", action="store_true", help="print the build report as one JSON object")
    r.add_argument("--dry-run", action="store_true",
                   help="write nothing: from file metadata only, show per source and split how many records have "
                        "RGB, IR, caption and IR-aware caption, the rows a build would write and which release "
                        "checks could hold (seconds, not hours)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    from .cli import CliError

    common = dict(
        out=args.out, rows_per_shard=args.rows_per_shard, batch=args.batch, workers=args.workers,
        caption_choice=args.caption_choice, caption_policy=args.caption_policy,
        iraware_policy=args.iraware_policy, seed=args.seed, skip_rules=list(args.skip_rule),
        non_jpeg=args.non_jpeg, jpeg_quality=args.jpeg_quality, allow_size_mismatch=args.allow_size_mismatch,
        on_bad_line=args.on_bad_line, overwrite=args.overwrite, progress=not args.quiet,
    )
    captions = [_caption_arg(v) for v in args.captions]
    if args.from_folder:
        if args.index:
            raise CliError("--from-folder and --index are exclusive")
        if not args.source:
            raise CliError(f"--from-folder needs --source (one of {', '.join(SOURCES)})")
        try:
            index, base, ir_base, caps, ira = folder_to_inputs(
                args.from_folder, args.source, Path(args.out) / STATE_DIR / "folder", split=args.split,
                ir_root=args.ir_root, rights_code=args.rights_code)
        except BuildError as e:
            raise CliError(str(e)) from None
        return BuildOptions(index=str(index), source_roots={args.source: base}, ir_root=ir_base,
                            captions=[(None, str(caps)), *captions],
                            iraware=[*([str(ira)] if ira else []), *args.iraware], **common)
    if not args.index:
        raise CliError("--index is required (or --from-folder)")
    return BuildOptions(index=args.index, source_roots=_parse_kv(args.source_root, "--source-root"),
                        ir_root=args.ir_root, captions=captions, iraware=list(args.iraware), **common)


def run(args: argparse.Namespace) -> int:
    from .cli import CliError

    opts = options_from_args(args)
    if args.dry_run:
        try:
            d = dry_run(opts)
        except (BuildError, IndexFormatError, CaptionFileError) as e:
            raise CliError(str(e)) from None
        print(json.dumps(d, ensure_ascii=False)) if args.json else _print_dry_run(d)
        return 0
    try:
        report = build(opts)
    except BuildError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_summary(report)
    missing = report["dropped"]["total"] - report["dropped"]["expected_by_release"] + report["bad_index_lines"]
    if args.strict and missing:
        print(f"fusionrs build: --strict: {missing} index record(s) not written (see build_report.json)",
              file=sys.stderr)
        return 1
    return 0


def _print_summary(report: dict) -> None:
    w, d, s = report["written"], report["dropped"], report["shards"]
    print(f"index records: {report['index_records']:,}   written: {w['total']:,}   dropped: {d['total']:,}"
          f"   bad lines: {report['bad_index_lines']}")
    print(f"shards: {s['planned']} planned, {s['written']} written, {s['skipped_unchanged']} unchanged (skipped), "
          f"{s['empty']} empty")
    for reason, b in d["by_reason"].items():
        ex = ", ".join(b.get("sample_ids", [])[:3]) or ", ".join(f"line {n}" for n in b.get("lines", [])[:3])
        print(f"  dropped {reason}: {b['count']:,} (e.g. {ex})")
    fired = {k: v["count"] for k, v in report["captions"]["rules"].items() if v["count"]}
    if fired:
        print("caption rules fired: " + ", ".join(f"{k}={v}" for k, v in fired.items()))
    print(f"class-name fallback: {report['captions']['class_name_fallback']['count']:,}")
    print(f"report: {Path(report['out']) / REPORT_NAME}")
