"""Caption file formats: caption tables, the native RSICD / RSITMD / NWPU-Captions files, IR-aware files.

The official index carries no captions, so a user brings them: a caption table (JSONL, CSV or
Parquet keyed by ``sample_id``, by ``source_dataset`` + ``source_locator`` (the image's path in the
source copy, as the index gives it; how captions kept by upstream file meet the index) or by
``source_dataset`` + ``source_record_id``; the release's ``source_record_id`` is the FusionRS id
itself, ``build_release_manifest.py`` writes ``"source_record_id": sample_id``), the native
annotation files of RSICD / RSITMD (``images[].filename``, ``images[].sentences[].raw``) and
NWPU-Captions (per-class lists with ``filename``, ``raw``, ``raw_1`` ...), and the IR-aware
caption file keyed by sample id (the release's ``fusionrs-iraware-caption-v1`` records, with
``status`` and ``filter_reasons``, or a plain table of a user's own IR-aware captions).

A new source with its own annotation format adds one reader to :data:`NATIVE_READERS`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

from ..index import NotRegularFileError, TextLimitError, open_regular, open_text
from ..limits import RowGroupTooBig, refuse_big_row_groups
from ..schema import SOURCES

T = TypeVar("T")


@dataclass(frozen=True)
class CaptionEntry:
    """Captions read for one key. ``key`` is ("sid", id) | ("rec", source, record_id) | ("file", source, name)."""

    key: tuple[str, ...]
    captions: tuple[str, ...]
    class_name: str | None = None


class CaptionFileError(ValueError):
    """A caption file that cannot be read; the message names the file and, where known, the row."""


_TEXT_COLS = ("caption", "captions", "raw", "text", "sentence")
_IR_COLS = ("ir_caption", "iraware_caption", "caption", "text")


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None]
    s = str(value)
    if s.startswith("[") and s.endswith("]"):
        try:
            v = json.loads(s)
            if isinstance(v, list):
                return [str(x) for x in v if x is not None]
        except json.JSONDecodeError:
            pass
    return [s]


def _table_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a JSONL(.gz) / CSV / Parquet table as dicts, with a 1-based row (line) number."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        n = 0
        with open_regular(path) as fh:  # a FIFO named x.parquet is refused, not waited on
            pf = pq.ParquetFile(fh)
            try:
                refuse_big_row_groups(pf.metadata, None, str(path), fh)
            except RowGroupTooBig as e:
                raise CaptionFileError(str(e)) from None
            for batch in pf.iter_batches(batch_size=4096):
                for row in batch.to_pylist():
                    n += 1
                    yield n, row
    elif name.endswith((".csv", ".csv.gz", ".tsv")):
        with open_text(path) as fh:
            reader = csv.DictReader(fh, delimiter="\t" if name.endswith(".tsv") else ",")
            for n, row in enumerate(reader, 2):
                yield n, row
    else:
        with open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CaptionFileError(f"{path.name} line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise CaptionFileError(f"{path.name} line {n}: expected a JSON object")
                yield n, row


def _row_key(path: Path, n: int, row: dict) -> tuple[str, ...]:
    sid = row.get("sample_id")
    if sid not in (None, ""):
        return ("sid", str(sid))
    src = row.get("source_dataset") or row.get("source")
    rec, loc = row.get("source_record_id"), row.get("source_locator")
    if src not in (None, "") and (rec not in (None, "") or loc not in (None, "")):
        if src not in SOURCES:
            raise CaptionFileError(f"{path.name} row {n}: unknown source {src!r}; expected one of {SOURCES}")
        if loc not in (None, ""):
            return ("file", str(src), str(loc).replace("\\", "/").lstrip("/"))
        return ("rec", str(src), str(rec))
    raise CaptionFileError(f"{path.name} row {n}: needs `sample_id`, or `source_dataset` and `source_locator` "
                           "or `source_record_id`")


def read_caption_table(path: str | os.PathLike) -> Iterator[CaptionEntry]:
    """A caption table: one row per caption (or a list in ``captions``), keyed by sample id or source record."""
    path = Path(path)
    for n, row in _table_rows(path):
        key = _row_key(path, n, row)
        col = next((c for c in _TEXT_COLS if c in row), None)
        if col is None:
            raise CaptionFileError(f"{path.name} row {n}: no caption column (one of {', '.join(_TEXT_COLS)})")
        yield CaptionEntry(key, tuple(_as_list(row[col])), _class_name(path, f"row {n}", row))


def _class_name(path: Path, where: str, row: dict) -> str | None:
    cls = row.get("class_name") or None
    if cls is not None and not isinstance(cls, str):
        raise CaptionFileError(f"{path.name} {where}: `class_name` is {type(cls).__name__}, expected text")
    return cls


@dataclass(frozen=True)
class IRAwareEntry:
    """One IR-aware caption. ``status``/``source``/``split`` are set for release records only."""

    sample_id: str
    caption: str
    status: str | None = None
    source: str | None = None
    split: str | None = None
    row: int = 0
    file: str = ""


def read_iraware(path: str | os.PathLike) -> Iterator[IRAwareEntry]:
    """The IR-aware caption file: the release's ``fusionrs-iraware-caption-v1`` records (validated
    against their shape: a bad record names file, row and field) or a plain table of a user's own
    captions (JSONL, CSV or Parquet with ``sample_id`` and ``ir_caption`` / ``caption`` / ``text``)."""
    path = Path(path)
    yield from _named_errors(path, _iraware_pairs(path))


def _iraware_pairs(path: Path) -> Iterator[IRAwareEntry]:
    from ..release.jsonschema import first_error
    from .irfilter import IRAWARE_RECORD_SCHEMA, IRAWARE_SCHEMA

    for n, row in _table_rows(path):
        if "schema_version" in row or "status" in row:
            if row.get("schema_version") != IRAWARE_SCHEMA:
                raise CaptionFileError(f"{path.name} row {n}: field 'schema_version': expected "
                                       f"{IRAWARE_SCHEMA!r} for a record with a status, got {row.get('schema_version')!r}")
            err = first_error(IRAWARE_RECORD_SCHEMA, row)
            if err is not None:
                raise CaptionFileError(f"{path.name} row {n}: field {err[0]!r}: {err[1]}")
            yield IRAwareEntry(row["sample_id"], row["caption"], row["status"], row["source_dataset"],
                               row["split"], n, path.name)
            continue
        sid = row.get("sample_id")
        if sid in (None, ""):
            raise CaptionFileError(f"{path.name} row {n}: missing `sample_id`")
        col = next((c for c in _IR_COLS if row.get(c) not in (None, "")), None)
        if col is None:
            raise CaptionFileError(f"{path.name} row {n} (sample_id={sid!r}): no IR-aware caption "
                                   f"(one of {', '.join(_IR_COLS)})")
        yield IRAwareEntry(str(sid), str(row[col]), row=n, file=path.name)


def read_karpathy_json(path: str | os.PathLike, source: str) -> Iterator[CaptionEntry]:
    """RSICD / RSITMD native annotations: ``{"images": [{"filename", "sentences": [{"raw"}], "split"}]}``."""
    path = Path(path)
    data = _load_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise CaptionFileError(f"{path.name}: expected an object with an `images` list ({source} format)")
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not img.get("filename"):
            raise CaptionFileError(f"{path.name}: images[{i}] has no `filename`")
        sents = [s.get("raw") for s in img.get("sentences") or [] if isinstance(s, dict) and s.get("raw")]
        for raw in sents:
            if not isinstance(raw, str):
                raise CaptionFileError(f"{path.name}: images[{i}] ({_safe(str(img['filename']))}): a sentence's "
                                       f"`raw` is {type(raw).__name__}, expected text")
        yield CaptionEntry(("file", source, PurePosixPath(str(img["filename"])).name), tuple(sents))


_RAW_KEY = re.compile(r"^raw(?:_(\d+))?\Z")


def read_nwpu_captions(path: str | os.PathLike) -> Iterator[CaptionEntry]:
    """NWPU-Captions native file: ``{class: [{"filename", "raw", "raw_1", ... "raw_4"}]}``.

    The class key also gives the row's ``class_name`` (used for the class-name fallback).
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise CaptionFileError(f"{path.name}: expected an object of class -> list (NWPU-Captions format)")
    for cls, items in data.items():
        if not isinstance(items, list):
            raise CaptionFileError(f"{path.name}: class {cls!r} is not a list")
        for i, it in enumerate(items):
            if not isinstance(it, dict) or not it.get("filename"):
                raise CaptionFileError(f"{path.name}: {cls}[{i}] has no `filename`")
            raws = sorted(((int(m[1] or 0), v) for k, v in it.items() if (m := _RAW_KEY.match(k)) and v),
                          key=lambda kv: kv[0])
            yield CaptionEntry(("file", "NWPU", PurePosixPath(str(it["filename"])).name),
                               tuple(str(v) for _, v in raws), str(cls))


def _load_json(path: Path):
    """A whole JSON caption file: at most ``MAX_JSON_CHARS``, nested as deep as Python parses; else a
    :class:`CaptionFileError` naming it."""
    try:
        with open_text(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise CaptionFileError(f"{path.name}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise CaptionFileError(f"{path.name}: not valid JSON (nested too deeply)") from None
    except (TextLimitError, NotRegularFileError) as e:
        raise _opening_error(path, e) from None


def _opening_error(path: Path, e: TextLimitError | NotRegularFileError) -> CaptionFileError:
    """The shared opener's refusals (a line or file over its cap, a FIFO or device) as a caption file error."""
    if isinstance(e, NotRegularFileError):
        return CaptionFileError(f"{path}: {e.strerror}")
    return CaptionFileError(str(e))


NATIVE_READERS: dict[str, Callable[[Path], Iterator[CaptionEntry]]] = {
    "RSICD": lambda p: read_karpathy_json(p, "RSICD"),
    "RSITMD": lambda p: read_karpathy_json(p, "RSITMD"),
    "NWPU": read_nwpu_captions,
}
"""Native caption formats by source. A new source with its own annotation format adds a reader here."""


def detect_format(path: str | os.PathLike, source: str | None = None) -> str:
    """``"table"`` or a source name whose native reader applies, from the name and (for .json) content."""
    p = Path(path)
    name = p.name.lower()
    if source:
        if source not in NATIVE_READERS:
            raise CaptionFileError(f"{p.name}: no native caption reader for {source!r}; "
                                   f"known: {', '.join(NATIVE_READERS)} (or give a caption table)")
        return source
    if not (name.endswith(".json") or name.endswith(".json.gz")):
        return "table"
    data = _load_json(p)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        tag = str(data.get("dataset", "")).lower()
        for src in ("RSITMD", "RSICD"):
            if src.lower() in tag or src.lower() in name:
                return src
        raise CaptionFileError(f"{p.name}: RSICD/RSITMD-style file but the source is unclear; "
                               f"pass it as RSICD={path} or RSITMD={path}")
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return "NWPU"
    if isinstance(data, list):
        return "table-json"
    raise CaptionFileError(f"{p.name}: unrecognised caption file (not a table, RSICD/RSITMD or NWPU-Captions)")


_READ_ERRORS = (OSError, EOFError, ValueError, csv.Error, zlib.error)
"""What a reader raises on a corrupt file: bad UTF-8, truncated gzip, a non-parquet ``.parquet``
(pyarrow's errors subclass these), a malformed CSV."""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_text(path: Path, n: int, item: object) -> None:
    """Every string an entry carries must be valid Unicode (a JSON ``"\\ud800"`` is not): it ends up in
    SQLite and parquet, which would fail far from here with no file or row named."""
    if isinstance(item, CaptionEntry):
        texts = [*item.captions, *item.key, item.class_name or ""]
        who = "/".join(map(str, item.key[1:]))
    else:
        texts = [item.sample_id, item.caption]
        who = item.sample_id
    row = f"row {item.row}" if getattr(item, "row", 0) else f"entry {n}"
    for t in texts:
        if not isinstance(t, str):  # a reader's own checks name the field; this is the last line of defence
            raise CaptionFileError(f"{path.name} {row} ({_safe(str(who))}): {type(t).__name__} value {_safe(str(t))[:40]}"
                                   " where text is expected")
        if _SURROGATE.search(t):
            raise CaptionFileError(f"{path.name} {row} ({_safe(who)}): text with a lone surrogate "
                                   "(not valid Unicode)")


def _safe(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")


def _named_errors(path: Path, items: Iterable[T]) -> Iterator[T]:
    """Pass ``items`` through; turn a read error into a :class:`CaptionFileError` naming the file.

    The readers stream, so a corrupt byte far into a file surfaces mid-iteration; without this it
    would be a bare ``UnicodeDecodeError`` / ``ArrowInvalid`` traceback out of ``fusionrs build``.
    """
    n = 0
    try:
        for item in items:
            n += 1
            _check_text(path, n, item)
            yield item
    except CaptionFileError:
        raise
    except RecursionError:
        raise CaptionFileError(f"{path.name}: entry {n + 1}: JSON nested too deeply") from None
    except (TextLimitError, NotRegularFileError) as e:
        raise _opening_error(path, e) from None
    except _READ_ERRORS as e:
        raise CaptionFileError(f"{path.name}: unreadable after {n} entries ({type(e).__name__}: {e})") from None


def read_caption_file(path: str | os.PathLike, source: str | None = None) -> Iterator[CaptionEntry]:
    """Entries of any supported caption file (format detected, or forced by ``source``)."""
    p = Path(path)
    try:
        fmt = detect_format(path, source)
    except CaptionFileError:
        raise
    except RecursionError:
        raise CaptionFileError(f"{p.name}: not valid JSON (nested too deeply)") from None
    except _READ_ERRORS as e:
        raise CaptionFileError(f"{p.name}: unreadable ({type(e).__name__}: {e})") from None
    if fmt == "table":
        return _named_errors(p, read_caption_table(path))
    if fmt == "table-json":
        return _named_errors(p, _json_array_table(p))
    return _named_errors(p, NATIVE_READERS[fmt](p))


def _json_array_table(path: Path) -> Iterator[CaptionEntry]:
    for n, row in enumerate(_load_json(path), 1):
        if not isinstance(row, dict):
            raise CaptionFileError(f"{path.name} item {n}: expected an object")
        key = _row_key(path, n, row)
        col = next((c for c in _TEXT_COLS if c in row), None)
        if col is None:
            raise CaptionFileError(f"{path.name} item {n}: no caption column")
        yield CaptionEntry(key, tuple(_as_list(row[col])), _class_name(path, f"item {n}", row))

