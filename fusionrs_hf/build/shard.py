"""One shard, in a worker process: load both images of every planned row and write the parquet file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import atomic_write
from ..layout import SHARD_RE, ShardName
from ..pairing import diffv2ir_size, sizes_pair
from ..safepath import NotAFileError, OutsideRootError, check_write_under, resolve_under
from .images import ImageDrop, load_image
from .options import STATE_DIR, BuildError

# one shard (worker)

_Drop = ImageDrop  # one drop type for image and row problems


def _stat(path: Path) -> str:
    try:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "-"


def _safe_join(root: str, rel: str) -> Path:
    """``root / rel`` through the one safe-path rule; a path leaving the root is a per-row drop."""
    try:
        return resolve_under(root, rel)
    except OutsideRootError as e:
        raise _Drop("outside_root", str(e)) from None
    except ValueError as e:
        raise _Drop("bad_locator", f"{rel!r}: {e}") from None


def _stat_under(root: str, rel: str) -> bytes:
    try:
        return _stat(_safe_join(root, rel)).encode()
    except _Drop as d:
        return d.reason.encode()


def shard_fingerprint(entries: list[dict], ctx: dict) -> str:
    """Plan + options + (size, mtime) of every input file: equal fingerprints mean equal shard bytes."""
    h = hashlib.sha256(ctx["options_fp"].encode())
    for e in entries:  # line numbers are left out: they do not change the bytes, so an edit elsewhere rebuilds nothing
        h.update(json.dumps({k: v for k, v in e.items() if k != "line"}, sort_keys=True).encode())
    for e in entries:
        root = ctx["roots"].get(e["source"])
        h.update(_stat_under(root, e["source_locator"]) if root else b"-")
        h.update(_stat_under(ctx["ir_root"], e["ir_key"]) if ctx["ir_root"] else b"-")
    return h.hexdigest()


def build_shard(task: str, rel: str, ctx: dict) -> dict:
    """Build one planned shard (or confirm an existing one); return its result record.

    Runs in a worker process: it holds one shard's image bytes at most.
    """
    from ..shards import write_rows

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

    rows, dropped, written, resized, image_notes = [], [], [], [], []
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
            rgb, rgb_size, rgb_notes = load_image(_safe_join(root, e["source_locator"]), "rgb", ctx["non_jpeg"],
                                                  ctx["jpeg_quality"], ctx["max_pixels"])
            ir, ir_size, ir_notes = load_image(_safe_join(ctx["ir_root"], e["ir_key"]), "ir", ctx["non_jpeg"],
                                               ctx["jpeg_quality"], ctx["max_pixels"])
            for what, notes in (("rgb", rgb_notes), ("ir", ir_notes)):
                for k, v in notes.items():
                    image_notes.append({"sample_id": sid, "image": what, "note": k, "value": v})
            if rgb_size != ir_size:
                if not sizes_pair(rgb_size, ir_size) and not ctx["allow_size_mismatch"]:
                    w, h = diffv2ir_size(rgb_size)
                    raise _Drop("aspect_mismatch", f"rgb is {rgb_size[0]}x{rgb_size[1]}, ir is "
                                                   f"{ir_size[0]}x{ir_size[1]}: neither the rgb's aspect ratio "
                                                   f"nor DiffV2IR's {w}x{h}")
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
    try:  # data/ or a folder below it turned into a symlink out of --out: no shard is written through it
        check_write_under(out, target)
    except NotAFileError as e:
        raise BuildError(str(e)) from None
    if rows:
        file_bytes = write_rows(rows, target, sources=tuple(ctx["sources"])).file_bytes
    elif target.exists():
        target.unlink()  # every row of this shard is now dropped: a stale file must not survive
    m = SHARD_RE.match(rel)
    name = ShardName(ctx["dir_sources"][m["source_dir"]], m["split"], m["group"])
    result = {"shard": rel, "fingerprint": fp, "source": name.source, "split": name.split, "group": name.group,
              "planned": len(entries), "rows": len(rows), "file_bytes": file_bytes, "dropped": dropped,
              "size_differs": resized, "image_notes": image_notes}
    done_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(done_path, json.dumps(result, sort_keys=True))
    return {**result, "skipped": False}
