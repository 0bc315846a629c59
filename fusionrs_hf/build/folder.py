"""``--from-folder``: a folder or listing of your own images turned into an index and caption files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path, PurePosixPath

from ..index import (
    PUBLIC_SCHEMA,
    IndexFormatError,
    NotRegularFileError,
    TextLimitError,
    check_relpath,
    open_text,
    parse_record,
)
from ..limits import MAX_LINE_CHARS
from ..release.schemas import MEASURED_IR_MODEL
from ..safepath import is_inside
from ..schema import SOURCES, joint_group_id_for
from .options import IMAGE_EXTS, BuildError

# --from-folder

SPLIT_SPELLINGS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
"""A ``--from-folder`` split (``--split`` or a listing's ``split`` column) -> the index's split: both ``val``
(the index's word) and ``validation`` (the `datasets` split every other command uses) are accepted."""

_TEXT_COLUMNS = ("rgb", "ir", "ir_caption", "split", "sample_id", "class_name", "rights_code")
_INDEX_FIELD_COLUMN = {"source_locator": "rgb", "source_record_id": "rgb", "translation.output_key": "ir",
                       "source_rights_code": "rights_code", "split": "split", "sample_id": "sample_id"}
"""Which of the user's columns an index field of a ``--from-folder`` row comes from (for error messages)."""


def _index_split(value: str, where: str) -> str:
    try:
        return SPLIT_SPELLINGS[value]
    except KeyError:
        raise BuildError(f"{where}: split {value!r}: expected one of train, val (or validation), test") from None


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
    Listing layout (CSV or JSONL): columns ``rgb`` (path relative to the listing's folder, or an absolute path
    inside it), ``ir``, ``caption``, optional ``ir_caption``, ``split`` (train, val or validation, test),
    ``sample_id``, ``class_name``, ``rights_code``.

    Every row is validated here, against the index schema too, so a bad one is named by the user's file and
    line (never by the internal ``folder_index.jsonl``), and nothing is written before all rows are good.
    ``PATH/rgb`` and ``PATH/ir`` may not lead out of PATH (a symlink): only what lies inside PATH is read.
    """
    if source not in known_sources:
        raise BuildError(f"--source {source}: expected one of {', '.join(known_sources)}, or declare it as a source "
                         "of your own (--rights-code, --license, --ir-kind)")
    default_split = _index_split(split, "--split")
    p = Path(path)
    rows: list[dict] = []
    if p.is_file():
        base = p.parent
        ir_base = Path(ir_root) if ir_root else base
        for line, r in _listing_rows(p):
            rows.append(_listing_row(r, f"{p} line {line}", base, ir_base, bool(ir_root), default_split,
                                     rights_code))
    elif p.is_dir():
        rgb_dir = _inside(p, "rgb") if (p / "rgb").is_dir() else p
        base = rgb_dir
        ir_base = Path(ir_root) if ir_root else _inside(p, "ir")
        for f in sorted(rgb_dir.rglob("*")):
            if f.suffix.lower() not in IMAGE_EXTS or f.is_dir() or (ir_base in f.parents):
                continue  # a FIFO or socket named like an image stays in: the build drops it, named
            if not is_inside(rgb_dir, f):
                raise BuildError(f"--from-folder {path}: {f.relative_to(rgb_dir)} is a symlink to "
                                 f"{f.resolve()}, outside the folder; only files inside it are read")
            rel = f.relative_to(rgb_dir).as_posix()
            cap_file, ir_cap_file = f.with_suffix(".txt"), f.with_suffix(".ir.txt")
            caps = _read_text(cap_file, rgb_dir).splitlines() if cap_file.exists() else []
            ir_cap = _read_text(ir_cap_file, rgb_dir).strip() if ir_cap_file.exists() else None
            rows.append({"rgb": rel, "ir": _find_ir(ir_base, rel), "captions": [c for c in caps if c.strip()],
                         "ir_caption": ir_cap, "split": default_split, "sample_id": None, "class_name": None,
                         "rights_code": rights_code, "where": str(f)})
    elif p.exists():
        raise BuildError(f"--from-folder {path}: not a file or folder (a FIFO, socket or device)")
    else:
        raise BuildError(f"--from-folder {path}: no such file or directory")
    if not rows:
        raise BuildError(f"--from-folder {path}: no images found; expected {FOLDER_LAYOUT}")

    records, seen = [], {}
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
        try:
            parse_record(rec, r["where"], None, known_sources)  # what the build would refuse, named here
        except IndexFormatError as e:
            col = _INDEX_FIELD_COLUMN.get(e.field or "", e.field)
            raise BuildError(f"{r['where']}: " + (f"`{col}`: " if col else "") + e.message) from None
        if sid in seen:
            raise BuildError(f"{r['where']}: duplicate sample_id {sid!r} (first at {seen[sid]})")
        seen[sid] = r["where"]
        records.append((rec, r))

    work.mkdir(parents=True, exist_ok=True)  # only now: a refused listing leaves no build state behind
    index, caps_path, ira_path = work / "folder_index.jsonl", work / "folder_captions.jsonl", work / "folder_iraware.jsonl"
    n_ira = 0
    with open(index, "w", encoding="utf-8") as fi, open(caps_path, "w", encoding="utf-8") as fc, \
            open(ira_path, "w", encoding="utf-8") as fa:
        for rec, r in records:
            sid = rec["sample_id"]
            fi.write(json.dumps(rec) + "\n")
            fc.write(json.dumps({"sample_id": sid, "captions": r["captions"], "class_name": r["class_name"]}) + "\n")
            if r["ir_caption"]:
                fa.write(json.dumps({"sample_id": sid, "ir_caption": r["ir_caption"]}) + "\n")
                n_ira += 1
    return index, str(base), str(ir_base), caps_path, (ira_path if n_ira else None)


def _inside(folder: Path, name: str) -> Path:
    """``folder/name`` (``rgb``, ``ir``), refused when it is a symlink leading out of ``folder``."""
    sub = folder / name
    if sub.exists() and not is_inside(folder, sub):
        raise BuildError(f"--from-folder {folder}: {sub} is a symlink to {os.path.realpath(sub)}, outside the "
                         "folder; only files inside it are read")
    return sub


def _listing_row(r: dict, where: str, base: Path, ir_base: Path, ir_given: bool, default_split: str,
                 rights_code: str) -> dict:
    """One listing row, checked: text columns are text, paths relative to their root, the split spelled right."""
    for col in _TEXT_COLUMNS:
        v = r.get(col)
        if v is not None and not isinstance(v, str):
            raise BuildError(f"{where}: `{col}` is {type(v).__name__}, expected text")
    cap = r.get("caption")
    if not (cap is None or isinstance(cap, str) or (isinstance(cap, list) and all(isinstance(c, str) for c in cap))):
        raise BuildError(f"{where}: `caption` is {type(cap).__name__}, expected text or a list of texts")
    if not r.get("rgb"):
        raise BuildError(f"{where}: missing `rgb`")
    rgb = _relative(r["rgb"], base, where, "rgb", f"the listing's folder {base}")
    ir = _relative(r.get("ir") or r["rgb"], ir_base, where, "ir",
                   f"--ir-root {ir_base}" if ir_given else f"the listing's folder {ir_base}")
    split = _index_split(r["split"], where) if r.get("split") else default_split
    return {"rgb": rgb, "ir": ir, "captions": _caps(cap), "ir_caption": r.get("ir_caption") or None,
            "split": split, "sample_id": r.get("sample_id") or None, "class_name": r.get("class_name") or None,
            "rights_code": r.get("rights_code") or rights_code, "where": where}


def _relative(value: str, root: Path, where: str, col: str, root_name: str) -> str:
    """A listing's path as a path relative to ``root``: an absolute one that lies inside ``root`` is made
    relative; anything else absolute (or with ``..``, a drive, a URL) is refused naming the row."""
    if os.path.isabs(value):
        for r, v in ((os.path.abspath(root), os.path.normpath(value)),
                     (os.path.realpath(root), os.path.join(os.path.realpath(os.path.dirname(value)),
                                                           os.path.basename(value)))):
            if v.startswith(r.rstrip(os.sep) + os.sep):
                value = Path(os.path.relpath(v, r)).as_posix()
                break
        else:
            raise BuildError(f"{where}: `{col}` {value!r} is not inside {root_name}; paths in a listing are "
                             f"relative to {root_name} (or absolute paths inside it)")
    try:
        return check_relpath(value, col)
    except ValueError as e:
        raise BuildError(f"{where}: `{col}`: {e}; paths in a listing are relative to {root_name}") from None


FOLDER_LAYOUT = ("PATH/rgb/**/NAME.jpg|png|tif (or the images directly in PATH), the IR image at the same "
                 "relative path under PATH/ir/ (or --ir-root), captions in NAME.txt beside the RGB image (one per "
                 "line), an IR-aware caption in NAME.ir.txt; or a CSV/JSONL listing with columns rgb, ir, caption "
                 "[, ir_caption, split, sample_id, class_name, rights_code]: paths relative to the listing's folder "
                 "(or absolute inside it), split train, val (or validation) or test")
"""The ``--from-folder`` layout, quoted by ``--help`` and by the error a wrong layout gets."""


def _read_text(path: Path, root: Path) -> str:
    """A caption file as text: inside the folder, a regular file (a FIFO would hang the build), valid UTF-8, at
    most :data:`~fusionrs_hf.limits.MAX_LINE_CHARS` characters, or a one-line error naming it."""
    if not is_inside(root, path):
        raise BuildError(f"{path}: a symlink outside the folder {root}; only files inside it are read")
    try:
        with open_text(path, max_read=MAX_LINE_CHARS) as fh:
            return fh.read()
    except UnicodeDecodeError as e:
        raise BuildError(f"{path}: not valid UTF-8 (byte {e.start}); save the caption file as UTF-8") from None
    except NotRegularFileError:
        raise BuildError(f"{path}: not a regular file (a FIFO, socket or device); a caption file must be a file, "
                         "not read") from None
    except TextLimitError as e:
        raise BuildError(f"{path}: {e.reason}") from None
    except (OSError, EOFError) as e:
        raise BuildError(f"{path}: unreadable ({getattr(e, 'strerror', None) or e})") from None


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


def _listing_rows(p: Path) -> list[tuple[int, dict]]:
    """(line, row) of a CSV or JSONL listing; a file that cannot be read as one is a one-line error naming
    it and the line."""
    out: list[tuple[int, dict]] = []
    n, reader = 0, None
    try:
        with open_text(p) as fh:
            if p.suffix.lower() == ".csv":
                reader = csv.DictReader(fh)
                for row in reader:
                    n = reader.line_num
                    if None in row:
                        raise BuildError(f"{p} line {n}: {len(row[None])} more field(s) than the header has columns")
                    out.append((n, row))
                return out
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BuildError(f"{p} line {n}: not valid JSON ({e.msg})") from None
                except RecursionError:
                    raise BuildError(f"{p} line {n}: not valid JSON (nested too deeply)") from None
                except ValueError as e:
                    raise BuildError(f"{p} line {n}: not valid JSON ({e})") from None
                if not isinstance(row, dict):
                    raise BuildError(f"{p} line {n}: expected a JSON object with columns rgb, ir, caption ..., "
                                     f"got {type(row).__name__}")
                out.append((n, row))
    except TextLimitError as e:
        raise BuildError(f"{p} line {e.line}: {e.reason}") from None
    except UnicodeDecodeError as e:
        raise BuildError(f"{p}: not valid UTF-8 after line {n} (byte {e.start} of a read); save the listing as "
                         "UTF-8") from None
    except csv.Error as e:
        raise BuildError(f"{p} line {reader.line_num if reader else n + 1}: not a readable CSV row ({e})") from None
    except NotRegularFileError:
        raise BuildError(f"{p}: not a regular file (a FIFO, socket or device); not read") from None
    except (OSError, EOFError) as e:
        raise BuildError(f"{p}: unreadable ({getattr(e, 'strerror', None) or e})") from None
    return out
