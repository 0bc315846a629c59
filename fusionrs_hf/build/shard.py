"""One shard, in a worker process: load both images of every planned row and write the parquet file."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from ..index import (
    check_relpath,
)
from ..layout import parse_shard_path
from ..pairing import same_aspect
from .options import STATE_DIR

# one shard (worker)

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
