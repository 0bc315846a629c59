"""The official FusionRS index: record schema, validation and a streaming reader.

The authors publish FusionRS as an index only (no image bytes, no captions), so the index is
the contract between their release and a user's rebuild. Every line is checked here, once,
against the record schema, and a bad line is reported with its line number and field, because
a silent skip would make a rebuild differ from the release without anyone noticing.

Two record variants exist and both are accepted:

- ``fusionrs-public-index-v1`` (the release): ids, locators, rights, split, grouping flags,
  ``vlm_train_identity`` and the DiffV2IR ``translation`` block.
- ``fusionrs-index-v1`` (the authors' internal variant): the same plus ``class_name``,
  ``caption``, ``caption_usable``, ``normalized_caption_key`` and ``vlm_train_used`` instead of
  ``vlm_train_identity``.

Unknown extra fields are ignored (forward compatibility); missing or mistyped known fields
are errors. Locators are relative paths below a user-given root: an absolute path, a drive
letter, a backslash-separated ``..`` or a ``..`` segment is rejected, so no index line can make
the builder read outside the roots it was given.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .layout import INDEX_SPLITS, SPLIT_TO_INDEX
from .schema import JOINT_GROUP_RE, SHA256_RE, SOURCES

PUBLIC_SCHEMA = "fusionrs-public-index-v1"
INTERNAL_SCHEMA = "fusionrs-index-v1"
SCHEMA_VERSIONS = (PUBLIC_SCHEMA, INTERNAL_SCHEMA)
INDEX_SPLIT_NAMES = tuple(SPLIT_TO_INDEX.values())

RC4_SPLIT_COUNTS: dict[str, dict[str, int]] = {
    "NWPU": {"train": 30_094, "val": 556, "test": 536},
    "RS5M": {"train": 472_682, "val": 7_670, "test": 7_681},
    "RSICD": {"train": 9_383, "val": 716, "test": 725},
    "RSITMD": {"train": 3_691, "val": 500, "test": 500},
    "SkyScript": {"train": 64_150, "val": 558, "test": 558},
}
"""Rows per source and index split of the official rc4 split (600,000 in all); used to tell a
user whose index does not look like rc4, never to reject one."""

DIFFV2IR_SETTINGS = {"model": "DiffV2IR", "size": 512, "steps": 20, "seed": 1234,
                     "checkpoint": "after_phase_2.ckpt"}
"""The authors' translation settings; recorded in the build report for users who generate IR images."""

_DRIVE = re.compile(r"^[A-Za-z]:")

_COMMON_BOOLS = ("is_canonical_component_representative", "is_eval_representative",
                 "caption_supervision_available_upstream", "prior_reused_protected")


class IndexFormatError(ValueError):
    """An index line that does not match the record schema. ``str()`` names file, line and field."""

    def __init__(self, where: str, line: int | None, field_name: str | None, message: str) -> None:
        self.where, self.line, self.field, self.message = where, line, field_name, message
        loc = f"{where} line {line}" if line is not None else where
        fld = f": field {field_name!r}" if field_name else ""
        super().__init__(f"{loc}{fld}: {message}")


def check_relpath(value: object, field_name: str = "path") -> str:
    """Return ``value`` as a safe relative POSIX path or raise ``ValueError`` saying why.

    Rejects what could escape a root: absolute paths (``/x``, ``\\x``), drive letters (``C:``),
    URLs and any ``..`` segment, with either separator.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty relative path")
    if "\x00" in value:
        raise ValueError("NUL character not allowed")
    if value.startswith(("/", "\\")):
        raise ValueError(f"absolute path not allowed: {value!r}")
    if _DRIVE.match(value) or "://" in value:
        raise ValueError(f"drive letter or URL not allowed: {value!r}")
    parts = re.split(r"[\\/]", value)
    if any(p == ".." for p in parts):
        raise ValueError(f"'..' segment not allowed: {value!r}")
    return "/".join(p for p in parts if p not in ("", "."))


@dataclass(frozen=True)
class Translation:
    model: str
    output_key: str
    redistribution: str | bool | None = None


@dataclass(frozen=True)
class IndexRecord:
    """One validated index line. ``split`` is the `datasets` split name (``val`` -> ``validation``)."""

    sample_id: str
    source: str
    source_record_id: str
    source_locator: str
    rights_code: str
    split: str
    joint_group_id: str
    translation: Translation
    schema_version: str = PUBLIC_SCHEMA
    phash4_component_id: str | None = None
    canonical_component_representative: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    class_name: str | None = None
    caption: str | None = None
    caption_usable: bool | None = None
    normalized_caption_key: str | None = None
    line: int = 0

    @property
    def index_split(self) -> str:
        return SPLIT_TO_INDEX[self.split]

    def to_json(self) -> dict:
        """A compact JSON-able dict (the build plan stores records in this form)."""
        return {
            "sample_id": self.sample_id, "source": self.source, "source_record_id": self.source_record_id,
            "source_locator": self.source_locator, "rights_code": self.rights_code, "split": self.split,
            "joint_group_id": self.joint_group_id, "ir_key": self.translation.output_key,
            "class_name": self.class_name, "line": self.line,
        }


def _req(obj: dict, name: str, types: type | tuple[type, ...], where: str, line: int, *,
         nullable: bool = False, nonempty: bool = True):
    if name not in obj:
        raise IndexFormatError(where, line, name, "missing")
    v = obj[name]
    if v is None:
        if nullable:
            return None
        raise IndexFormatError(where, line, name, "must not be null")
    if types is bool:
        if not isinstance(v, bool):
            raise IndexFormatError(where, line, name, f"must be true or false, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, types):
        want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise IndexFormatError(where, line, name, f"must be {want}, got {type(v).__name__}")
    if nonempty and isinstance(v, str) and not v.strip():
        raise IndexFormatError(where, line, name, "must not be empty")
    return v


def parse_record(obj: object, where: str = "index", line: int = 0) -> IndexRecord:
    """Validate one decoded JSON line against the record schema (either variant)."""
    if not isinstance(obj, dict):
        raise IndexFormatError(where, line, None, f"a record must be a JSON object, got {type(obj).__name__}")
    version = _req(obj, "schema_version", str, where, line)
    if version not in SCHEMA_VERSIONS:
        raise IndexFormatError(where, line, "schema_version",
                               f"unknown value {version!r}; expected one of {', '.join(SCHEMA_VERSIONS)}")
    sid = _req(obj, "sample_id", str, where, line)
    if len(sid) > 512 or any(c in sid for c in "\n\r\t\x00"):
        raise IndexFormatError(where, line, "sample_id", "must be one line of at most 512 characters")
    source = _req(obj, "source_dataset", str, where, line)
    if source not in SOURCES:
        raise IndexFormatError(where, line, "source_dataset", f"unknown source {source!r}; expected one of {SOURCES}")
    rec_id = _req(obj, "source_record_id", (str, int), where, line)
    try:
        locator = check_relpath(obj.get("source_locator"), "source_locator")
    except ValueError as e:
        if "source_locator" not in obj:
            raise IndexFormatError(where, line, "source_locator", "missing") from None
        raise IndexFormatError(where, line, "source_locator", str(e)) from None
    rights = _req(obj, "source_rights_code", str, where, line)
    split = _req(obj, "split", str, where, line)
    if split not in INDEX_SPLITS:
        raise IndexFormatError(where, line, "split", f"unknown split {split!r}; expected one of {INDEX_SPLIT_NAMES}")
    group = _req(obj, "joint_group_id", str, where, line)
    if not JOINT_GROUP_RE.match(group):
        raise IndexFormatError(where, line, "joint_group_id", f"{group!r} does not match {JOINT_GROUP_RE.pattern}")
    phash = _req(obj, "phash4_component_id", (str, int), where, line, nullable=True)
    canon = _req(obj, "canonical_component_representative", (str, int), where, line, nullable=True)
    flags = {b: _req(obj, b, bool, where, line) for b in _COMMON_BOOLS}
    trans = _req(obj, "translation", dict, where, line, nonempty=False)
    t_model = _req(trans, "model", str, where, line) if "model" in trans else None
    if t_model is None:
        raise IndexFormatError(where, line, "translation.model", "missing")
    if "output_key" not in trans:
        raise IndexFormatError(where, line, "translation.output_key", "missing")
    try:
        out_key = check_relpath(trans["output_key"], "translation.output_key")
    except ValueError as e:
        raise IndexFormatError(where, line, "translation.output_key", str(e)) from None
    redis = trans.get("redistribution")
    if redis is not None and not isinstance(redis, str | bool):
        raise IndexFormatError(where, line, "translation.redistribution", "must be a string, a boolean or null")

    class_name = caption = norm_key = None
    usable = None
    if version == PUBLIC_SCHEMA:
        flags["vlm_train_identity"] = _req(obj, "vlm_train_identity", bool, where, line)
    else:
        flags["vlm_train_used"] = _req(obj, "vlm_train_used", bool, where, line)
        class_name = _req(obj, "class_name", str, where, line, nullable=True)
        caption = _req(obj, "caption", str, where, line, nullable=True, nonempty=False)
        usable = _req(obj, "caption_usable", bool, where, line)
        norm_key = _req(obj, "normalized_caption_key", str, where, line, nullable=True)
        if norm_key is not None and not SHA256_RE.match(norm_key):
            raise IndexFormatError(where, line, "normalized_caption_key", "must be 64 lowercase hex digits")
    return IndexRecord(
        sample_id=sid, source=source, source_record_id=str(rec_id), source_locator=locator,
        rights_code=rights, split=INDEX_SPLITS[split], joint_group_id=group,
        translation=Translation(t_model, out_key, redis), schema_version=version,
        phash4_component_id=None if phash is None else str(phash),
        canonical_component_representative=None if canon is None else str(canon),
        flags=flags, class_name=class_name, caption=caption, caption_usable=usable,
        normalized_caption_key=norm_key, line=line,
    )


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a text file that may be gzip-compressed (detected from its magic bytes, not its name)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


@dataclass
class BadLine:
    line: int
    error: IndexFormatError


def iter_index(path: str | os.PathLike, *, on_error: str = "raise") -> Iterator[IndexRecord | BadLine]:
    """Stream validated records of a JSONL(.gz) index, one at a time (memory does not grow with size).

    ``on_error="raise"`` raises :class:`IndexFormatError` at the first bad line; ``"yield"``
    yields a :class:`BadLine` for it and goes on, for builds that list bad lines as dropped.
    Blank lines are skipped. Duplicate sample ids are the caller's check (it needs state).
    """
    where = Path(path).name
    try:
        fh = open_text(path)
    except OSError as e:
        raise IndexFormatError(str(path), None, None, f"cannot read: {e.strerror or e}") from None
    n = 0
    with fh:
        try:
            for n, text in enumerate(fh, 1):
                if not text.strip():
                    continue
                try:
                    try:
                        obj = json.loads(text)
                    except json.JSONDecodeError as e:
                        raise IndexFormatError(where, n, None,
                                               f"not valid JSON ({e.msg} at column {e.colno})") from None
                    yield parse_record(obj, where, n)
                except IndexFormatError as e:
                    if on_error == "raise":
                        raise
                    yield BadLine(n, e)
        except (UnicodeDecodeError, EOFError, OSError) as e:  # not UTF-8, truncated gzip: the rest is unreadable
            # the decoder reads ahead, so the exact line is unknown: name the last good one
            raise IndexFormatError(where, None, None,
                                   f"unreadable after line {n} ({type(e).__name__}: {e})") from None


def read_index(path: str | os.PathLike) -> list[IndexRecord]:
    """All records of a (small) index; for big ones iterate :func:`iter_index` instead."""
    return [r for r in iter_index(path) if isinstance(r, IndexRecord)]
