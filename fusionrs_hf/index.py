"""The official FusionRS index: record validation against the published schemas, and a streaming reader.

The authors publish FusionRS as an index only (no image bytes, no captions, no per-image hashes),
so the index is the contract between their release and a user's rebuild. Every line is checked
here, once, against the JSON schema of its variant (:mod:`fusionrs_hf.release.schemas`: required
fields, types, enums, patterns, no extra fields), and a bad line is reported with its file, line
number and field, because a silent skip or a silently accepted foreign field would make a rebuild
differ from the release without anyone noticing.

Two record variants exist, chosen by ``schema_version``:

- ``fusionrs-public-index-v1`` (the release): ids, locators, ``source_rights_code``, split,
  grouping and evaluation flags, ``caption_supervision_available_upstream``, ``vlm_train_identity``
  and the DiffV2IR ``translation`` block.
- ``fusionrs-index-v1`` (the authors' internal variant): ``source_rights_note`` instead of the
  rights code, plus ``class_name``, ``caption``, ``caption_usable``, ``normalized_caption_key`` and
  ``vlm_train_used``. Its records get what the authors' redaction derives for the public index: the
  rights code (:mod:`fusionrs_hf.release.rights`) and ``caption_supervision_available_upstream``
  (= ``caption_usable``).

On top of the schema, two safety rules of ours: locators (and IR keys) must be relative paths that
stay below their root (no absolute path, drive, URL, NUL or ``..`` with either separator), and ids
must be one line of at most 512 characters without lone surrogates (they name files and messages).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .layout import INDEX_SPLITS, SPLIT_TO_INDEX
from .limits import MAX_JSON_CHARS, MAX_LINE_CHARS
from .pairing import DIFFV2IR_RESOLUTION
from .release.jsonschema import first_error
from .release.known import RC4
from .release.rights import rights_code
from .release.schemas import (
    INTERNAL_SCHEMA,
    PUBLIC_SCHEMA,
    RECORD_SCHEMAS,
    RIGHTS_FIELD,
    VLM_FIELD,
    schema_for,
)

SCHEMA_VERSIONS = tuple(RECORD_SCHEMAS)
INDEX_SPLIT_NAMES = tuple(SPLIT_TO_INDEX.values())

RC4_SPLIT_COUNTS: dict[str, dict[str, int]] = RC4.split_counts
"""Rows per source and index split of the official rc4 split (600,000 in all); used to tell a
user whose index does not look like rc4, never to reject one."""

DIFFV2IR_SETTINGS = {
    "model": "DiffV2IR", "resolution": DIFFV2IR_RESOLUTION, "steps": 20, "cfg_text": 7.5, "cfg_image": 1.5,
    "cfg_seg": 1.5, "seed": 1234, "sampler": "Euler ancestral",
    "entrypoint": "infer_codex_dataset.py",
    "entrypoint_sha256": "fe22a8076f53c700c4be3163316e8c537dc7ecd580e01d66075dbcc90bf4d4f2",
    "config": "configs/generate.yaml",
    "config_sha256": "c590f6d949825ca44aff3ee88c3d7639a703e9f4207ddd03eaa82469b9512e3c",
    "checkpoint": "after_phase_2.ckpt",
    "checkpoint_sha256": "177d039996054c8a513c84296f7b255656817b7f296e60d8a605874ca9621a80",
    "input_text": "the release's reconstruct.py writes each record's caption as `text` into translation_metadata.jsonl "
                  "(empty from the public index, which has no captions)",
}
"""The authors' translation settings (``dataset/configs/diffv2ir_generation.json``: the settings, and the
SHA-256 of the entrypoint, its config and the checkpoint, which identify the translator a user runs);
recorded in the build report for users who generate IR images."""

_DRIVE = re.compile(r"^[A-Za-z]:")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

FLAG_FIELDS = ("is_canonical_component_representative", "is_eval_representative",
               "caption_supervision_available_upstream", "vlm_train_identity", "prior_reused_protected")
"""Boolean release flags carried into every row (the internal variant's ``vlm_train_used`` lands in
``vlm_train_identity``, its ``caption_usable`` in ``caption_supervision_available_upstream``)."""


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
    if _SURROGATE.search(value):
        raise ValueError("contains a lone surrogate (not valid Unicode)")
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
    redistribution: str | None = None


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
    flags: dict[str, bool | None] = field(default_factory=dict)
    """:data:`FLAG_FIELDS` -> value (``None`` where the variant has no such field)."""
    class_name: str | None = None
    caption: str | None = None
    caption_usable: bool | None = None
    normalized_caption_key: str | None = None
    line: int = 0

    @property
    def index_split(self) -> str:
        return SPLIT_TO_INDEX[self.split]

    def release_fields(self) -> dict:
        """The release's per-record facts that travel into the row (see ``schema.RELEASE_FIELDS``)."""
        return {
            "phash4_component_id": self.phash4_component_id,
            "canonical_component_representative": self.canonical_component_representative,
            **{f: self.flags.get(f) for f in FLAG_FIELDS},
            "translation_output_key": self.translation.output_key,
        }

    def to_json(self) -> dict:
        """A compact JSON-able dict (the build plan stores records in this form)."""
        return {
            "sample_id": self.sample_id, "source": self.source, "source_record_id": self.source_record_id,
            "source_locator": self.source_locator, "rights_code": self.rights_code, "split": self.split,
            "joint_group_id": self.joint_group_id, "ir_key": self.translation.output_key,
            "class_name": self.class_name, "line": self.line, "release": self.release_fields(),
        }


def _id(obj: dict, name: str, where: str, line: int) -> str:
    v = obj[name]
    if len(v) > 512 or any(c in v for c in "\n\r\t\x00") or _SURROGATE.search(v):
        raise IndexFormatError(where, line, name, "must be one line of at most 512 characters of valid Unicode")
    return v


def _safe_path(obj: dict, name: str, where: str, line: int, label: str) -> str:
    try:
        return check_relpath(obj[name], label)
    except ValueError as e:
        raise IndexFormatError(where, line, label, str(e)) from None


def parse_record(obj: object, where: str = "index", line: int = 0,
                 sources: tuple[str, ...] | None = None) -> IndexRecord:
    """Validate one decoded JSON line against the schema of its variant and return the record.

    ``sources``: the repo's sources when it declares its own (they join the ``source_dataset`` enum).
    """
    if not isinstance(obj, dict):
        raise IndexFormatError(where, line, None, f"a record must be a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version")
    if version not in RECORD_SCHEMAS:
        if "schema_version" not in obj:
            raise IndexFormatError(where, line, "schema_version", "missing")
        raise IndexFormatError(where, line, "schema_version",
                               f"unknown value {version!r}; expected one of {', '.join(SCHEMA_VERSIONS)}")
    err = first_error(schema_for(version, sources), obj)
    if err is not None:
        raise IndexFormatError(where, line, err[0] or None, err[1])
    sid = _id(obj, "sample_id", where, line)
    rec_id = _id(obj, "source_record_id", where, line)
    rights_field = RIGHTS_FIELD[version]
    rights = _id(obj, rights_field, where, line)
    locator = _safe_path(obj, "source_locator", where, line, "source_locator")
    out_key = _safe_path(obj["translation"], "output_key", where, line, "translation.output_key")
    flags = {f: obj.get(f) for f in FLAG_FIELDS if f != "vlm_train_identity"}
    flags["vlm_train_identity"] = obj[VLM_FIELD[version]]
    internal = version == INTERNAL_SCHEMA
    if internal:
        # what the authors' redaction derives for the public index (build_public_redacted_index.py):
        # the rights code from source and locator, the upstream-caption flag from caption_usable
        try:
            rights = rights_code(obj["source_dataset"], locator)
        except ValueError as e:
            raise IndexFormatError(where, line, "source_locator", f"{e}: the rights code cannot be derived") from None
        flags["caption_supervision_available_upstream"] = obj.get("caption_usable")
    return IndexRecord(
        sample_id=sid, source=obj["source_dataset"], source_record_id=rec_id, source_locator=locator,
        rights_code=rights, split=INDEX_SPLITS[obj["split"]], joint_group_id=obj["joint_group_id"],
        translation=Translation(obj["translation"]["model"], out_key, obj["translation"]["redistribution"]),
        schema_version=version, phash4_component_id=obj["phash4_component_id"],
        canonical_component_representative=obj["canonical_component_representative"],
        flags=flags, class_name=obj.get("class_name") if internal else None,
        caption=obj.get("caption") if internal else None,
        caption_usable=obj.get("caption_usable") if internal else None,
        normalized_caption_key=obj.get("normalized_caption_key") if internal else None, line=line,
    )


class NotRegularFileError(OSError):
    """A path to be read is a FIFO, socket, device or folder: opening a FIFO for reading blocks until a writer
    comes (forever), so it is refused unread. ``strerror`` says why, ``filename`` names it."""


class TextLimitError(ValueError):
    """A line (or a whole JSON document) longer than the readers' limit; ``str()`` names file and line."""

    def __init__(self, name: str, line: int | None, reason: str) -> None:
        self.name, self.line, self.reason = name, line, reason
        super().__init__(f"{name} line {line}: {reason}" if line is not None else f"{name}: {reason}")


def open_regular(path: str | os.PathLike):
    """``open(path, "rb")`` for a regular file only, else :class:`NotRegularFileError`: the one way the readers of a
    user's index, caption and listing files open them. Opened non-blocking, so a FIFO is seen (``fstat``) and
    refused instead of hanging the open."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(0, "not a regular file (a folder, FIFO, socket or device); not read",
                                      os.fspath(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _LimitedText(io.TextIOWrapper):
    """UTF-8 text whose lines (iteration, ``readline()``) and whole reads (``read()``) are bounded: a line over
    :data:`MAX_LINE_CHARS` or a document over :data:`MAX_JSON_CHARS` is :class:`TextLimitError`, read no further."""

    def setup(self, name: str, raw, max_line: int, max_read: int) -> _LimitedText:
        self._name, self._raw, self._max_line, self._max_read, self._lines = name, raw, max_line, max_read, 0
        return self

    def readline(self, size: int | None = -1) -> str:
        if size is not None and size >= 0:
            return super().readline(size)
        line = super().readline(self._max_line + 1)
        if line:
            self._lines += 1
        if len(line) > self._max_line and not line.endswith("\n"):
            raise TextLimitError(self._name, self._lines, f"longer than the limit of {self._max_line:,} characters "
                                                          "per line (MAX_LINE_CHARS); not read")
        return line

    def __next__(self) -> str:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __iter__(self) -> _LimitedText:
        return self

    def read(self, size: int | None = -1) -> str:
        if size is not None and size >= 0:
            return super().read(size)
        text = super().read(self._max_read + 1)
        if len(text) > self._max_read:
            raise TextLimitError(self._name, None, f"more than {self._max_read:,} characters (MAX_JSON_CHARS); "
                                                   "not read")
        return text

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def open_text(path: str | os.PathLike, *, max_line: int | None = None,
              max_read: int | None = None) -> io.TextIOBase:
    """Open a text file that may be gzip-compressed (detected from its magic bytes, not its name).

    Only a regular file is opened (:func:`open_regular`); lines are at most ``max_line`` characters (default
    :data:`MAX_LINE_CHARS`) and a whole ``read()`` at most ``max_read`` (default :data:`MAX_JSON_CHARS`), else
    :class:`TextLimitError` naming the file and line: a 1.5 GB single-line gzip costs no memory."""
    raw = open_regular(path)
    try:
        magic = raw.read(2)
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
        text = _LimitedText(stream, encoding="utf-8")
    except BaseException:
        raw.close()
        raise
    return text.setup(Path(path).name, raw, MAX_LINE_CHARS if max_line is None else max_line,
                      MAX_JSON_CHARS if max_read is None else max_read)


@dataclass
class BadLine:
    line: int
    error: IndexFormatError


def iter_index(path: str | os.PathLike, *, on_error: str = "raise",
               sources: tuple[str, ...] | None = None) -> Iterator[IndexRecord | BadLine]:
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
                    except RecursionError:
                        raise IndexFormatError(where, n, None, "not valid JSON (nested too deeply)") from None
                    except ValueError as e:  # e.g. an integer literal over Python's 4,300-digit limit
                        raise IndexFormatError(where, n, None, f"not valid JSON ({e})") from None
                    yield parse_record(obj, where, n, sources)
                except IndexFormatError as e:
                    if on_error == "raise":
                        raise
                    yield BadLine(n, e)
        except TextLimitError as e:  # the line is not read at all: nothing after it can be found
            raise IndexFormatError(where, e.line, None, e.reason) from None
        except UnicodeDecodeError as e:
            # the decoder reads ahead, so the line it failed in is found again, reading bytes line by line
            bad = _first_undecodable_line(path)
            if bad is not None:
                raise IndexFormatError(where, bad[0], None, f"not UTF-8 (byte 0x{bad[1]:02x} at column "
                                                            f"{bad[2]})") from None
            raise IndexFormatError(where, None, None, f"unreadable after line {n} (UnicodeDecodeError: {e})") from None
        except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip
            raise IndexFormatError(where, None, None,
                                   f"unreadable after line {n} ({type(e).__name__}: {e})") from None


def _first_undecodable_line(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """(line, byte, 1-based column) of the first line that is not UTF-8, or None (another failure)."""
    try:
        raw = open_regular(path)
        with raw:
            magic = raw.read(2)
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw, mode="rb") if magic == b"\x1f\x8b" else raw
            n = 0
            while line := stream.readline(4 * MAX_LINE_CHARS + 1):  # UTF-8: 4 bytes a character at most
                n += 1
                if len(line) > 4 * MAX_LINE_CHARS:
                    return None  # a line past the limit is refused by the text reader before its bytes matter
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    return n, line[e.start], e.start + 1
    except (OSError, EOFError, zlib.error):
        return None
    return None


def read_index(path: str | os.PathLike) -> list[IndexRecord]:
    """All records of a (small) index; for big ones iterate :func:`iter_index` instead."""
    return [r for r in iter_index(path) if isinstance(r, IndexRecord)]
