"""``--from-folder``: a folder or listing of your own images turned into an index and caption files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path, PurePosixPath

from ..index import (
    PUBLIC_SCHEMA,
)
from ..release.schemas import MEASURED_IR_MODEL
from ..safepath import is_inside
from ..schema import SOURCES, joint_group_id_for
from .options import IMAGE_EXTS, BuildError

# --from-folder

def folder_to_inputs(path: str | os.PathLike, source: str, work: Path, *, split: str = "train",
                     ir_root: str | None = None, rights_code: str = "user-supplied",
                     id_prefix: str = "user-",
                     known_sources: tuple[str, ...] = SOURCES, ir_kind: str = "synthetic") -> tuple[Path, str, str, Path, Path | None]:
    """Turn a folder (or CSV/JSONL listing) of your own images into an index + caption files.

    Returns (index path, source root, IR root, captions path, IR-aware path or None); the
    normal build then runs on them, so your rows get the same checks, cleaning and report.

    Folder layout: ``PATH/rgb/**/<name>.<ext>`` (or images directly in PATH), IR images at the same
    relative path under ``PATH/ir/`` (or ``--ir-root``), captions in ``<name>.txt`` next to the RGB
    image (one caption per line) and IR-aware captions in ``<name>.ir.txt``.
    Listing layout (CSV or JSONL): columns ``rgb`` (path relative to the listing), ``ir``, ``caption``,
    optional ``ir_caption``, ``split`` (train/val/test), ``sample_id``, ``class_name``, ``rights_code``.
    """
    if source not in known_sources:
        raise BuildError(f"--source {source}: expected one of {', '.join(known_sources)}, or declare it as a source "
                         "of your own (--rights-code, --license, --ir-kind)")
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
            if not is_inside(rgb_dir, f):
                raise BuildError(f"--from-folder {path}: {f.relative_to(rgb_dir)} is a symlink to "
                                 f"{f.resolve()}, outside the folder; only files inside it are read")
            rel = f.relative_to(rgb_dir).as_posix()
            cap_file, ir_cap_file = f.with_suffix(".txt"), f.with_suffix(".ir.txt")
            caps = _read_text(cap_file, rgb_dir).splitlines() if cap_file.exists() else []
            ir_cap = _read_text(ir_cap_file, rgb_dir).strip() if ir_cap_file.exists() else None
            rows.append({"rgb": rel, "ir": _find_ir(ir_base, rel), "captions": [c for c in caps if c.strip()],
                         "ir_caption": ir_cap, "split": split, "sample_id": None, "class_name": None,
                         "rights_code": rights_code})
    else:
        raise BuildError(f"--from-folder {path}: no such file or directory")
    if not rows:
        raise BuildError(f"--from-folder {path}: no images found; expected {FOLDER_LAYOUT}")

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
                "translation": {"model": MEASURED_IR_MODEL if ir_kind == "measured" else "DiffV2IR",
                                "output_key": r["ir"], "redistribution": "user-supplied"},
            }
            fi.write(json.dumps(rec) + "\n")
            fc.write(json.dumps({"sample_id": sid, "captions": r["captions"], "class_name": r["class_name"]}) + "\n")
            if r["ir_caption"]:
                fa.write(json.dumps({"sample_id": sid, "ir_caption": r["ir_caption"]}) + "\n")
                n_ira += 1
    return index, str(base), str(ir_base), caps_path, (ira_path if n_ira else None)


FOLDER_LAYOUT = ("PATH/rgb/**/NAME.jpg|png|tif (or the images directly in PATH), the IR image at the same "
                 "relative path under PATH/ir/ (or --ir-root), captions in NAME.txt beside the RGB image (one per "
                 "line), an IR-aware caption in NAME.ir.txt; or a CSV/JSONL listing with columns rgb, ir, caption "
                 "[, ir_caption, split, sample_id, class_name, rights_code]")
"""The ``--from-folder`` layout, quoted by ``--help`` and by the error a wrong layout gets."""


def _read_text(path: Path, root: Path) -> str:
    """A caption file as text: inside the folder, valid UTF-8, or a one-line error naming it."""
    if not is_inside(root, path):
        raise BuildError(f"{path}: a symlink outside the folder {root}; only files inside it are read")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BuildError(f"{path}: not valid UTF-8 (byte {e.start}); save the caption file as UTF-8") from None
    except OSError as e:
        raise BuildError(f"{path}: unreadable ({e.strerror or e})") from None


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
