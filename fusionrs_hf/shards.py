"""Parquet shard writing: image bytes embedded as given, typed, sized for images.

The parquet options follow what `datasets` itself writes for image datasets (its
``get_parquet_column_options``: image columns uncompressed, PLAIN, no dictionary; other
columns snappy), plus the page index and content-defined chunking so the Hub can dedupe
re-uploads of appended shards and the Dataset Viewer can scan row groups.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets import config as ds_config
from datasets.arrow_writer import get_parquet_column_options

from .atomic import atomic_open
from .layout import DEFAULT_BATCH, shard_path
from .schema import (
    FEATURES,
    FIELD_NAMES,
    IMAGE_FIELDS,
    SHA256_FIELDS,
    SOURCES,
    SchemaError,
    arrow_schema,
    validate_table,
)

DEFAULT_ROW_GROUP_BYTES = 100 * 1024 * 1024
"""Row groups of at most ~100 MB, the Hub's recommendation for image parquet (Viewer page-index scans)."""
DEFAULT_TARGET_SHARD_BYTES = 500 * 1024 * 1024
"""Same default shard size as `datasets` (``config.MAX_SHARD_SIZE``)."""


_DERIVED = frozenset(IMAGE_FIELDS) | frozenset(SHA256_FIELDS.values())
"""Columns :func:`rows_to_table` fills from the image cells rather than copying from the row."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_bytes(value: object, *, where: str = "") -> bytes:
    """Bytes of an image cell given as bytes, ``{"bytes": ...}`` or a path. Never re-encodes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path"):
            return Path(value["path"]).read_bytes()
    if isinstance(value, str | os.PathLike):
        return Path(value).read_bytes()
    raise SchemaError(f"{where}: image value of type {type(value).__name__} is not bytes, a dict or a path")


def _image_size(value: object) -> int:
    """Byte size of an image cell without reading a file given by path (it is read once, at write time)."""
    if isinstance(value, Mapping) and value.get("bytes") is None and value.get("path"):
        return os.path.getsize(value["path"])
    if isinstance(value, str | os.PathLike):
        return os.path.getsize(value)
    return len(image_bytes(value))


def rows_to_table(rows: Iterable[Mapping], *, where: str = "rows", sources: tuple[str, ...] = SOURCES) -> pa.Table:
    """Encode row dicts into a schema-exact Arrow table.

    Images are stored as ``{"bytes", "path"}`` structs with the caller's bytes untouched;
    ``path`` keeps only a file name (an extension hint for decoders, never a local path).
    Missing SHA-256 columns are computed from those bytes. A missing or extra column is an
    error naming the column and the sample.
    """
    cols: dict[str, list] = {n: [] for n in FIELD_NAMES}
    for i, row in enumerate(rows):
        sid = row.get("sample_id", f"row {i}")
        extra = set(row) - set(FIELD_NAMES)
        if extra:
            raise SchemaError(f"{where}: sample_id={sid!r}: unexpected column(s) {sorted(extra)}")
        for name in IMAGE_FIELDS:
            if row.get(name) is None:
                raise SchemaError(f"{where}: sample_id={sid!r}: missing column {name!r}")
            data = image_bytes(row[name], where=f"{where}: sample_id={sid!r} column {name!r}")
            cols[name].append({"bytes": data, "path": f"{sid}.{name}.{_ext(data)}"})
            sha_col = SHA256_FIELDS[name]
            sha = row.get(sha_col) or sha256_hex(data)
            cols[sha_col].append(sha)
        for name in FIELD_NAMES:
            if name in _DERIVED:
                continue
            cols[name].append(row.get(name, "source" if name == "caption_origin" else None))
    try:
        table = pa.Table.from_pydict(cols, schema=FEATURES.arrow_schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SchemaError(f"{where}: {e}") from e
    validate_table(table, where, sources)
    return table


def _ext(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tif"
    return "bin"


@dataclass
class ShardStats:
    path: str
    num_rows: int
    num_bytes: int
    """Uncompressed Arrow size, as `datasets` reports ``num_bytes`` in ``dataset_info``."""
    file_bytes: int


def _row_group_slices(table: pa.Table, max_bytes: int) -> list[tuple[int, int]]:
    """Cut a table into consecutive row ranges of at most ``max_bytes`` (at least one row each)."""
    sizes = [0] * table.num_rows
    for name in IMAGE_FIELDS:
        col = table.column(name).combine_chunks().field("bytes")
        lens = pc.binary_length(col).to_pylist()
        sizes = [a + (b or 0) for a, b in zip(sizes, lens, strict=True)]
    out, start, acc = [], 0, 0
    for i, s in enumerate(sizes):
        if i > start and acc + s > max_bytes:
            out.append((start, i - start))
            start, acc = i, 0
        acc += s + 512
    if table.num_rows:
        out.append((start, table.num_rows - start))
    return out


def write_table(
    table: pa.Table,
    path: str | os.PathLike,
    *,
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    content_defined_chunking: bool = True,
    sources: tuple[str, ...] = SOURCES,
) -> ShardStats:
    """Write one validated table as a parquet shard, atomically (temp file + fsync + rename).

    A crash never leaves a half-written file under the final name, so a re-run of a build
    can trust every existing shard file to be complete.
    """
    path = Path(path)
    validate_table(table, str(path), sources)
    table = table.select(list(FIELD_NAMES)).cast(arrow_schema())
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = get_parquet_column_options(FEATURES, table.schema)
    kwargs: dict = {"write_page_index": True, **opts}
    if content_defined_chunking:
        kwargs["use_content_defined_chunking"] = dict(ds_config.DEFAULT_CDC_OPTIONS)
    with atomic_open(path, "wb") as f:  # temp file + fsync + rename: never a partial file under the name
        with pq.ParquetWriter(f, table.schema, **kwargs) as writer:
            for start, length in _row_group_slices(table, row_group_bytes):
                writer.write_table(table.slice(start, length), row_group_size=length)
    return ShardStats(str(path), table.num_rows, table.nbytes, path.stat().st_size)


def write_rows(rows: Iterable[Mapping], path: str | os.PathLike, **kwargs) -> ShardStats:
    """Encode rows (see :func:`rows_to_table`) and write them as one shard."""
    sources = kwargs.get("sources", SOURCES)
    return write_table(rows_to_table(rows, where=str(path), sources=sources), path, **kwargs)


class ShardSink:
    """Append rows for one (source, split, group); rolls to a new shard at a target size.

    For builds that must be resumable, prefer a fixed ``max_rows`` so that shard membership
    depends only on the input order; ``target_bytes`` is the convenience for ad-hoc writing.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        source: str,
        split: str,
        group: str,
        *,
        batch: str = DEFAULT_BATCH,
        start_index: int = 0,
        max_rows: int | None = None,
        target_bytes: int = DEFAULT_TARGET_SHARD_BYTES,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    ) -> None:
        self.root, self.source, self.split, self.group, self.batch = Path(root), source, split, group, batch
        self.index, self.max_rows, self.target_bytes = start_index, max_rows, target_bytes
        self.row_group_bytes = row_group_bytes
        self._rows: list[Mapping] = []
        self._bytes = 0
        self.written: list[ShardStats] = []

    def add(self, row: Mapping) -> None:
        self._rows.append(row)
        self._bytes += sum(_image_size(row[n]) for n in IMAGE_FIELDS if row.get(n) is not None)
        if (self.max_rows and len(self._rows) >= self.max_rows) or self._bytes >= self.target_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rel = shard_path(self.source, self.split, self.group, self.index, self.batch)
        self.written.append(write_rows(self._rows, self.root / rel, row_group_bytes=self.row_group_bytes))
        self.index += 1
        self._rows, self._bytes = [], 0

    def close(self) -> list[ShardStats]:
        self.flush()
        return self.written

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
