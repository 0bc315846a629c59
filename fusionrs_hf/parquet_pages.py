"""The page headers of a parquet column chunk, read without pyarrow: what Arrow will allocate, not what the
footer says.

A parquet footer states each column chunk's ``total_uncompressed_size``, but Arrow never reads it back: it
allocates what each *page header* says (``uncompressed_page_size``) and inflates into that. A hostile shard can
therefore rewrite its footer to claim a few KB for a page that inflates to gigabytes, and a footer-only rule
(:func:`fusionrs_hf.limits.row_group_too_big` before) passes it. This module walks a chunk's pages from its
first page on (header, then ``compressed_page_size`` bytes skipped) and sums their sizes, so the rule can be
held to the truth and the footer compared with it.

The headers are Thrift compact protocol (``PageHeader``: field 1 ``type``, 2 ``uncompressed_page_size``, 3
``compressed_page_size``, all i32; every other field, struct, list, map or binary is skipped generically). The
walk is strict, since everything it reads is hostile until proven otherwise: a header that does not parse,
one larger than :data:`MAX_PAGE_HEADER_BYTES`, a negative size, a page running past its chunk or the file,
or more than :data:`MAX_PAGES_PER_CHUNK` pages is a :class:`PageHeaderError`. Each page costs one bounded
read (:data:`FIRST_WINDOW` bytes; a larger header is read again, up to the cap) and a few microseconds of
parsing; nothing else of the chunk is read. No dependency beyond the standard library: the loading script
carries a copy of this walk (``_chunk_pages``), held to agree with it by ``tests/test_parquet_pages.py``.
"""

from __future__ import annotations

import mmap
from typing import NamedTuple

from .errors import UnusableInputError

MAX_PAGE_HEADER_BYTES = 64 << 10
"""Largest page header read (64 KiB). Arrow's own headers are tens of bytes; with page statistics (min and max
values, which Arrow truncates to 4 KiB each) a few KB. A larger one is refused rather than read further."""

FIRST_WINDOW = 512
"""Bytes read for a page header first: enough for any header without large statistics, so one small read per
page is the rule (a larger header costs a second read, up to :data:`MAX_PAGE_HEADER_BYTES`)."""

MAX_PAGES_PER_CHUNK = 200_000
"""Most pages one column chunk may have. Arrow starts a page every 1 MiB or 20,000 rows, so a 1 GiB chunk
(:data:`fusionrs_hf.limits.MAX_ROW_GROUP_BYTES`) of small values has about a thousand; a chunk of a million
empty pages would only cost seconds of walking, and is refused instead."""

_MAX_DEPTH = 16
"""Deepest nesting of structs and containers skipped in a header (a ``PageHeader``'s own is 3: header, data
page header, statistics): a header nesting deeper is hostile, and recursion must stay bounded."""

# Thrift compact protocol type ids
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)


class PageHeaderError(UnusableInputError, ValueError):
    """A column chunk whose pages cannot be walked (a malformed or oversized header, a page running past the
    chunk): unusable input, named by the caller as a row group that is not read (exit 2 in every command)."""


class _Truncated(Exception):
    """The header runs past the bytes read for it (read more, or refuse it)."""


class PageHeader(NamedTuple):
    type: int
    """0 data page, 1 index page, 2 dictionary page, 3 data page v2."""
    uncompressed: int
    """``uncompressed_page_size``: the bytes Arrow allocates to inflate the page into."""
    compressed: int
    """``compressed_page_size``: the bytes that follow the header."""
    size: int
    """Bytes of the header itself."""


class ChunkPages(NamedTuple):
    """What a column chunk's page headers say, summed over all its pages (dictionary, data and index)."""

    pages: int
    uncompressed: int
    """Sum of ``uncompressed_page_size``: what Arrow allocates for the chunk's pages."""
    compressed: int
    """Sum of ``compressed_page_size``."""
    header_bytes: int
    """Bytes of the page headers (the footer's sizes count them too: an honest Arrow footer's
    ``total_uncompressed_size`` is ``uncompressed + header_bytes``)."""


def _varint(b: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    n = len(b)
    while True:
        if i >= n:
            raise _Truncated
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        if not c & 0x80:
            return out, i
        shift += 7
        if shift > 63:
            raise PageHeaderError("malformed page header (a varint longer than 10 bytes)")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _skip(b: bytes, i: int, t: int, depth: int) -> int:
    """Position after a value of compact type ``t`` at ``b[i:]`` (the value itself is not kept)."""
    if depth > _MAX_DEPTH:
        raise PageHeaderError(f"malformed page header (nested deeper than {_MAX_DEPTH})")
    if t in (_TRUE, _FALSE, _BYTE):  # a bool as a list element is one byte, as a field none (not called)
        if i >= len(b):
            raise _Truncated
        return i + 1
    if t in (_I16, _I32, _I64):
        return _varint(b, i)[1]
    if t == _DOUBLE:
        if i + 8 > len(b):
            raise _Truncated
        return i + 8
    if t == _BINARY:
        n, i = _varint(b, i)
        if i + n > len(b):
            raise _Truncated
        return i + n
    if t in (_LIST, _SET):
        if i >= len(b):
            raise _Truncated
        head = b[i]
        i += 1
        n, et = head >> 4, head & 0x0F
        if n == 15:
            n, i = _varint(b, i)
        if n > len(b) - i:  # every element takes a byte at least: a count past the window is truncation
            raise _Truncated
        for _ in range(n):
            i = _skip(b, i, et, depth + 1)
        return i
    if t == _MAP:
        n, i = _varint(b, i)
        if not n:
            return i
        if i >= len(b):
            raise _Truncated
        kt, vt = b[i] >> 4, b[i] & 0x0F
        i += 1
        if 2 * n > len(b) - i:
            raise _Truncated
        for _ in range(n):
            i = _skip(b, _skip(b, i, kt, depth + 1), vt, depth + 1)
        return i
    if t == _STRUCT:
        return _skip_struct(b, i, depth + 1)
    raise PageHeaderError(f"malformed page header (unknown Thrift type {t})")


def _skip_struct(b: bytes, i: int, depth: int) -> int:
    last = 0
    while True:
        if i >= len(b):
            raise _Truncated
        head = b[i]
        i += 1
        if head == _STOP:
            return i
        t, delta = head & 0x0F, head >> 4
        if delta:
            last += delta
        else:
            fid, i = _varint(b, i)
            last = _zigzag(fid)
        if t not in (_TRUE, _FALSE):  # a bool field's value is its type
            i = _skip(b, i, t, depth)


def parse_page_header(data: bytes | bytearray | memoryview) -> PageHeader:
    """The :class:`PageHeader` at the start of ``data`` (raises :class:`PageHeaderError` if it is malformed or
    missing a required field, ``_Truncated`` if it runs past ``data``)."""
    b = bytes(data)
    i, last = 0, 0
    got: dict[int, int] = {}
    while True:
        if i >= len(b):
            raise _Truncated
        head = b[i]
        i += 1
        if head == _STOP:
            break
        t, delta = head & 0x0F, head >> 4
        if delta:
            last += delta
        else:
            fid, i = _varint(b, i)
            last = _zigzag(fid)
        if last in (1, 2, 3):
            if t != _I32:
                raise PageHeaderError(f"malformed page header (field {last} has Thrift type {t}, not i32)")
            v, i = _varint(b, i)
            v = _zigzag(v)
            if not -(1 << 31) <= v < (1 << 31):
                raise PageHeaderError(f"malformed page header (field {last} is not an i32)")
            got[last] = v
        elif t not in (_TRUE, _FALSE):
            i = _skip(b, i, t, 1)
    missing = [name for fid, name in ((1, "type"), (2, "uncompressed_page_size"), (3, "compressed_page_size"))
               if fid not in got]
    if missing:
        raise PageHeaderError(f"malformed page header (no {', '.join(missing)})")
    if got[2] < 0 or got[3] < 0:
        raise PageHeaderError(f"page header with a negative size (uncompressed {got[2]:,}, compressed {got[3]:,})")
    return PageHeader(got[1], got[2], got[3], i)


class ByteSource:
    """Positioned reads of a parquet file: bytes in memory (``bytes``, ``bytearray``, ``memoryview``, an
    ``mmap``), read as views, or a seekable binary file object, read at positions and left where it was (a
    caller's pyarrow reads through the same handle).

    A file object is asked for its size once (``seek(0, 2)``), so a chunk claiming bytes past the end is
    refused before anything is read."""

    def __init__(self, source) -> None:
        if isinstance(source, ByteSource):
            self._buf, self._file, self.size, self._home = source._buf, source._file, source.size, source._home
            return
        self._home = 0
        if isinstance(source, (bytes, bytearray, memoryview, mmap.mmap)):
            self._buf = memoryview(source).cast("B") if not isinstance(source, bytes) else source
            self._file = None
            self.size = len(self._buf)
        else:
            self._buf, self._file = None, source
            self._home = source.tell()
            end = source.seek(0, 2)
            self.size = end if end is not None else source.tell()  # some file objects' seek returns nothing
            source.seek(self._home)

    def read(self, pos: int, n: int):
        if self._buf is not None:
            return self._buf[pos:pos + n]
        self._file.seek(pos)
        out = self._file.read(n)
        return out if out is not None else b""

    def restore(self) -> None:
        """Put a file object back where it was found."""
        if self._file is not None:
            self._file.seek(self._home)


def chunk_range(column) -> tuple[int, int]:
    """``(start, end)`` of a column chunk's bytes (pyarrow ``ColumnChunkMetaData``), as Arrow computes it: from
    the dictionary page when there is one before the first data page, ``total_compressed_size`` long."""
    start = column.data_page_offset
    dpo = column.dictionary_page_offset if column.has_dictionary_page else None
    if dpo is not None and 0 < dpo < start:
        start = dpo
    return start, start + column.total_compressed_size


def walk_chunk(source, column) -> ChunkPages:
    """The page headers of one column chunk (``md.row_group(i).column(j)``), summed; ``source``: the file's
    bytes or a seekable binary file object (or a :class:`ByteSource` of either).

    Pages are walked from the chunk's first byte (:func:`chunk_range`), header by header, each page's
    compressed bytes skipped unread, until the chunk's ``total_compressed_size`` is used up exactly. Raises
    :class:`PageHeaderError` for a chunk outside the file, a malformed or oversized header, a negative size, a
    page running past the chunk, or more than :data:`MAX_PAGES_PER_CHUNK` pages."""
    src = source if isinstance(source, ByteSource) else ByteSource(source)
    start, end = chunk_range(column)
    if start < 0 or end < start:
        raise PageHeaderError(f"column chunk at {start:,} of {end - start:,} bytes: not a range of the file")
    if end > src.size:
        raise PageHeaderError(f"column chunk {start:,}-{end:,} runs past the end of the file ({src.size:,} bytes)")
    try:
        return _walk(src, start, end)
    finally:
        src.restore()


def _walk(src: ByteSource, start: int, end: int) -> ChunkPages:
    pos = start
    pages = uncompressed = compressed = headers = 0
    while pos < end:
        if pages >= MAX_PAGES_PER_CHUNK:
            raise PageHeaderError(f"column chunk of more than {MAX_PAGES_PER_CHUNK:,} pages")
        left = end - pos
        window = min(left, FIRST_WINDOW)
        while True:
            try:
                h = parse_page_header(src.read(pos, window))
                break
            except _Truncated:
                if window >= min(left, MAX_PAGE_HEADER_BYTES):
                    if left > MAX_PAGE_HEADER_BYTES:
                        raise PageHeaderError(f"page header at {pos:,} larger than {MAX_PAGE_HEADER_BYTES:,} "
                                              "bytes") from None
                    raise PageHeaderError(f"page header at {pos:,} runs past the column chunk "
                                          f"(ends at {end:,})") from None
                window = min(left, MAX_PAGE_HEADER_BYTES)
        nxt = pos + h.size + h.compressed
        if nxt > end:
            raise PageHeaderError(f"page at {pos:,} ({h.size + h.compressed:,} bytes) runs past the column chunk "
                                  f"(ends at {end:,})")
        pages += 1
        uncompressed += h.uncompressed
        compressed += h.compressed
        headers += h.size
        pos = nxt
    return ChunkPages(pages, uncompressed, compressed, headers)


def chunk_uncompressed_size(source, column) -> int:
    """What Arrow allocates for a column chunk's pages: the sum of their headers' ``uncompressed_page_size``."""
    return walk_chunk(source, column).uncompressed
