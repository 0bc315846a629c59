"""Parquet page headers, read to hold every reader to what Arrow allocates (fusionrs_hf.parquet_pages).

The security review's two bombs, scaled down: a shard whose footer understates a page (a 50 MB cell of zeros
the footer calls a few KB; ``MAX_ROW_GROUP_BYTES`` lowered to 10 MB in place of 1 GiB) and a shard of 200,000
identical rows in a few KB. Each reader refuses them with one line naming the shard, before it inflates a page.
The page walk itself is held to pyarrow's honest footers over codecs, dictionaries, page versions and many
pages, and the loading script's copy of it to the package's, on real and hostile files.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrs_hf import limits, parquet_pages
from fusionrs_hf.errors import UnusableInputError
from fusionrs_hf.parquet_pages import PageHeaderError, parse_page_header, walk_chunk

SCRIPT = Path(__file__).resolve().parents[1] / "loading_script" / "fusionrs.py"
BOMB = 50 << 20
"""The hostile cell: 50 MB of zeros (the review's was 1.2 GB), a few KB stored."""
LIMIT = 10 << 20
"""MAX_ROW_GROUP_BYTES in these tests (1 GiB in the library), so the bomb is past it and cheap to make."""


# --------------------------------------------------------------------------- a Thrift compact codec (tests only)

STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        c = b[i]
        i += 1
        out |= (c & 0x7F) << shift
        if not c & 0x80:
            return out, i
        shift += 7


def _read_value(b: bytes, i: int, t: int):
    if t in (TRUE, FALSE):  # a list element
        return b[i] == 1, i + 1
    if t == BYTE:
        return struct.unpack_from("b", b, i)[0], i + 1
    if t in (I16, I32, I64):
        v, i = _uvarint(b, i)
        return (v >> 1) ^ -(v & 1), i
    if t == DOUBLE:
        return struct.unpack_from("<d", b, i)[0], i + 8
    if t == BINARY:
        n, i = _uvarint(b, i)
        return bytes(b[i:i + n]), i + n
    if t in (LIST, SET):
        n, et = b[i] >> 4, b[i] & 0x0F
        i += 1
        if n == 15:
            n, i = _uvarint(b, i)
        items = []
        for _ in range(n):
            v, i = _read_value(b, i, et)
            items.append(v)
        return (et, items), i
    if t == MAP:
        n, i = _uvarint(b, i)
        if not n:
            return (0, 0, []), i
        kt, vt = b[i] >> 4, b[i] & 0x0F
        i += 1
        items = []
        for _ in range(n):
            k, i = _read_value(b, i, kt)
            v, i = _read_value(b, i, vt)
            items.append((k, v))
        return (kt, vt, items), i
    if t == STRUCT:
        return read_struct(b, i)
    raise ValueError(t)


def read_struct(b: bytes, i: int = 0) -> tuple[list, int]:
    """A struct as ``[[field id, type, value], ...]`` (a bool field: type TRUE, value True/False)."""
    fields, last = [], 0
    while True:
        head = b[i]
        i += 1
        if head == STOP:
            return fields, i
        t, d = head & 0x0F, head >> 4
        if d:
            last += d
        else:
            v, i = _uvarint(b, i)
            last = (v >> 1) ^ -(v & 1)
        if t in (TRUE, FALSE):
            fields.append([last, TRUE, t == TRUE])
        else:
            v, i = _read_value(b, i, t)
            fields.append([last, t, v])


def _w_uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _w_zigzag(n: int) -> bytes:
    return _w_uvarint((n << 1) ^ (n >> 63))


def _write_value(t: int, v) -> bytes:
    if t in (TRUE, FALSE):
        return bytes([1 if v else 2])
    if t == BYTE:
        return struct.pack("b", v)
    if t in (I16, I32, I64):
        return _w_zigzag(v)
    if t == DOUBLE:
        return struct.pack("<d", v)
    if t == BINARY:
        return _w_uvarint(len(v)) + v
    if t in (LIST, SET):
        et, items = v
        head = bytes([(len(items) << 4) | et]) if len(items) < 15 else bytes([0xF0 | et]) + _w_uvarint(len(items))
        return head + b"".join(_write_value(et, x) for x in items)
    if t == MAP:
        kt, vt, items = v
        if not items:
            return b"\0"
        return _w_uvarint(len(items)) + bytes([(kt << 4) | vt]) + b"".join(
            _write_value(kt, k) + _write_value(vt, x) for k, x in items)
    if t == STRUCT:
        return write_struct(v)
    raise ValueError(t)


def write_struct(fields: list, long_ids: bool = False) -> bytes:
    """The inverse of :func:`read_struct`; ``long_ids``: every field id in the long form (no deltas)."""
    out, last = bytearray(), 0
    for fid, t, v in fields:
        wt = (TRUE if v else FALSE) if t == TRUE else t
        d = fid - last
        if 0 < d <= 15 and not long_ids:
            out.append((d << 4) | wt)
        else:
            out.append(wt)
            out += _w_zigzag(fid)
        last = fid
        if t != TRUE:
            out += _write_value(t, v)
    out.append(STOP)
    return bytes(out)


def _field(fields: list, fid: int) -> list:
    return next(f for f in fields if f[0] == fid)


def rewrite_footer(path: Path, edit) -> None:
    """Parse a parquet file's footer (FileMetaData), let ``edit(fields)`` change it, write it back."""
    data = path.read_bytes()
    n = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - n:-8]
    fields, end = read_struct(footer)
    assert end == n and write_struct(fields) == footer  # the codec round-trips pyarrow's footer
    edit(fields)
    new = write_struct(fields)
    path.write_bytes(data[:-8 - n] + new + len(new).to_bytes(4, "little") + b"PAR1")


def understate(fields: list) -> None:
    """The review's forgery: every column chunk's total_uncompressed_size := its total_compressed_size (the
    row group's total_byte_size summed to match), so the footer rule sees only the stored bytes."""
    for rg in _field(fields, 4)[2][1]:  # FileMetaData.row_groups
        total = 0
        for cc in _field(rg, 1)[2][1]:  # RowGroup.columns
            md = _field(cc, 3)[2]  # ColumnChunk.meta_data
            _field(md, 6)[2] = _field(md, 7)[2]  # total_uncompressed_size := total_compressed_size
            total += _field(md, 7)[2]
        _field(rg, 2)[2] = total  # RowGroup.total_byte_size


# --------------------------------------------------------------------------- honest files: the walk is the footer


def _table(n: int = 3000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    blobs = [rng.bytes(int(rng.integers(1, 900))) if i % 11 else None for i in range(n)]
    return pa.table({
        "i": pa.array(np.arange(n)),
        "tag": pa.array([f"tag{i % 5}" for i in range(n)]),  # dictionary-encoded
        "blob": pa.array(blobs, pa.binary()),  # nulls, distinct values (a dictionary that falls back to plain)
        "img": pa.array([{"bytes": b"\xff\xd8" + bytes(i % 300), "path": None} for i in range(n)],
                        pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "tags": pa.array([["a", "b"][: i % 3] for i in range(n)], pa.list_(pa.string())),
        "x": pa.array(rng.random(n)),
    })


WRITES = [
    dict(compression="zstd"),
    dict(compression="snappy", use_dictionary=False),
    dict(compression="none"),
    dict(compression="zstd", data_page_size=512, write_batch_size=16),  # hundreds of pages a chunk
    dict(compression="snappy", data_page_version="2.0", data_page_size=2048, write_batch_size=32),
    dict(compression="gzip", write_statistics=False, row_group_size=250),
]


def _write(table: pa.Table, **kw) -> bytes:
    kw.setdefault("row_group_size", 1000)
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def _chunks(data: bytes):
    md = pq.read_metadata(io.BytesIO(data))
    for r in range(md.num_row_groups):
        for c in range(md.num_columns):
            yield md.row_group(r).column(c)


@pytest.mark.parametrize("kw", WRITES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_page_walk_equals_pyarrows_honest_footer(kw, tmp_path, script):
    data = _write(_table(), **kw)
    path = tmp_path / "t.parquet"
    path.write_bytes(data)
    pages = dictionaries = 0
    with open(path, "rb") as fh:
        fh.seek(123)
        for col in _chunks(data):
            got = walk_chunk(data, col)
            # pyarrow's footer counts the page headers too: its sizes are the pages' plus their headers'
            assert got.uncompressed + got.header_bytes == col.total_uncompressed_size, col.path_in_schema
            assert got.compressed + got.header_bytes == col.total_compressed_size, col.path_in_schema
            assert walk_chunk(fh, col) == got == walk_chunk(memoryview(data), col) == walk_chunk(bytearray(data), col)
            assert fh.tell() == 123  # a caller's handle is left where it was
            assert script._chunk_pages(io.BytesIO(data), col, len(data)) == tuple(got)
            assert parquet_pages.chunk_uncompressed_size(data, col) == got.uncompressed
            pages += got.pages
            dictionaries += col.has_dictionary_page
    assert pages >= 6 * 3
    if kw.get("data_page_size") == 512:
        assert pages > 300  # many pages a chunk, walked one by one
    if kw.get("use_dictionary", True):
        assert dictionaries  # dictionary pages are walked (and summed) too
    md = pq.read_metadata(io.BytesIO(data))
    assert limits.row_group_too_big(md, 0, source=data, shard=True) is None  # honest and far above 64 B a row
    with open(path, "rb") as fh:
        limits.refuse_big_row_groups(md, None, "t.parquet", fh, shard=True)
        assert script.row_groups_problem(md, fh) is None


def test_the_test_repos_rows_are_far_above_the_row_limit(sample_repo, tmp_path):
    """MIN_BYTES_PER_ROW (64) is no threat to real rows: the smallest the demo writes (8 px) take over 1 KB."""
    from fusionrs_hf.demo import make_sample_repo

    tiny = make_sample_repo(tmp_path / "tiny", counts={"train": 16, "validation": 4, "test": 4}, size=8, max_rows=16,
                            ir_format="png")
    for repo in (sample_repo, tiny):
        for f in repo.rglob("*.parquet"):
            md = pq.read_metadata(f)
            assert f.stat().st_size > 10 * limits.MIN_BYTES_PER_ROW * md.num_rows, f
            for i in range(md.num_row_groups):
                rg = md.row_group(i)
                stored = sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
                assert stored > 10 * limits.MIN_BYTES_PER_ROW * rg.num_rows, f
            with open(f, "rb") as fh:
                limits.refuse_big_row_groups(md, None, str(f), fh, shard=True)


# --------------------------------------------------------------------------- page headers, byte by byte


def _header(*fields, long_ids: bool = False) -> bytes:
    return write_struct(list(fields), long_ids=long_ids)


def test_a_page_header_is_read_by_its_fields_whatever_else_it_holds():
    stats = [[1, BINARY, b"max" * 10], [2, BINARY, b"min"], [3, I64, 7], [5, BINARY, b"m"], [7, TRUE, True]]
    data_page = [[1, I32, 100], [2, I32, 0], [3, I32, 0], [4, I32, 0], [5, STRUCT, stats]]
    h = _header([1, I32, 0], [2, I32, 123_456], [3, I32, 789], [4, I32, -5], [5, STRUCT, data_page],
                [9, LIST, (I64, list(range(40)))], [10, MAP, (BINARY, LIST, [(b"k", (TRUE, [True, False]))])],
                [11, DOUBLE, 1.5], [12, SET, (STRUCT, [[[1, BYTE, -3]], []])], [13, MAP, (0, 0, [])],
                [300, BINARY, b"x" * 200], [14, TRUE, False], [15, I16, -2])
    got = parse_page_header(h + b"page bytes")
    assert (got.type, got.uncompressed, got.compressed, got.size) == (0, 123_456, 789, len(h))
    long = _header([1, I32, 2], [2, I32, 5], [3, I32, 6], long_ids=True)  # field ids without deltas
    assert parse_page_header(long) == (2, 5, 6, len(long))


@pytest.mark.parametrize("case", ["negative", "missing", "wrong_type", "deep", "unknown_type", "truncated",
                                  "huge_list", "long_varint", "not_i32"])
def test_malformed_page_headers_are_refused(case, script):
    deep: list = [[1, I32, 1]]
    for _ in range(40):
        deep = [[1, STRUCT, deep]]
    h = {
        "negative": _header([1, I32, 0], [2, I32, -1], [3, I32, 4]),
        "missing": _header([1, I32, 0], [3, I32, 4]),
        "wrong_type": _header([1, I32, 0], [2, I64, 10], [3, I32, 4]),
        "deep": _header([1, I32, 0], [2, I32, 1], [3, I32, 1], [5, STRUCT, deep]),
        "unknown_type": _header([1, I32, 0], [2, I32, 1], [3, I32, 1])[:-1] + bytes([0x1E, 0]),  # type 14
        "truncated": _header([1, I32, 0], [2, I32, 1], [3, I32, 1], [4, BINARY, b"x" * 50])[:-20],
        "huge_list": _header([1, I32, 0], [2, I32, 1], [3, I32, 1])[:-1] + bytes([0x19, 0xF5]) + _w_uvarint(1 << 40),
        "long_varint": bytes([0x15]) + b"\xff" * 12 + b"\x00",
        "not_i32": _header([1, I32, 0], [2, I32, 1 << 40], [3, I32, 4]),
    }[case]
    err = parquet_pages._Truncated if case in ("truncated", "huge_list") else PageHeaderError
    with pytest.raises(err):
        parse_page_header(h)
    with pytest.raises(script._Short if err is parquet_pages._Truncated else ValueError):
        script._page_header(h)


def _one_chunk(data: bytes, column: str = "blob"):
    md = pq.read_metadata(io.BytesIO(data))
    return next(md.row_group(0).column(j) for j in range(md.num_columns)
                if md.row_group(0).column(j).path_in_schema == column)


def _hostile_files() -> dict[str, tuple[bytes, object]]:
    """(file bytes, column chunk metadata) that no walk may accept, each of a different kind."""
    data = _write(_table(600), compression="zstd", use_dictionary=False)
    col = _one_chunk(data)
    start = col.data_page_offset
    out = {}
    out["garbage_header"] = (data[:start] + b"\x0b" * 40 + data[start + 40:], col)  # bytes that are no header
    out["truncated_file"] = (data[: start + 100], col)  # the chunk runs past the end of the file
    first = parse_page_header(data[start:start + (64 << 10)])
    bigger = _header([1, I32, 0], [2, I32, first.uncompressed], [3, I32, first.compressed + 10 ** 6])
    out["page_past_chunk"] = (data[:start] + bigger + data[start + first.size:], col)
    huge = _header([1, I32, 0], [2, I32, 1], [3, I32, 1], [4, BINARY, b"s" * (70 << 10)])
    out["huge_header"] = (data[:start] + huge + data[start:], col)  # chunk bytes shift, the header is read first
    negative = _header([1, I32, 0], [2, I32, -100], [3, I32, first.compressed])
    out["negative_size"] = (data[:start] + negative + data[start + first.size:], col)
    return out


@pytest.mark.parametrize("kind", ["garbage_header", "truncated_file", "page_past_chunk", "huge_header",
                                  "negative_size"])
def test_hostile_chunks_are_refused_alike_by_the_package_and_the_loading_script(kind, script):
    data, col = _hostile_files()[kind]
    with pytest.raises(PageHeaderError) as e:
        walk_chunk(data, col)
    assert isinstance(e.value, UnusableInputError) and isinstance(e.value, ValueError)
    with pytest.raises(ValueError):
        script._chunk_pages(io.BytesIO(data), col, len(data))
    if kind == "huge_header":
        assert "larger than 65,536 bytes" in str(e.value)


def test_too_many_pages_are_refused(monkeypatch, script):
    data = _write(_table(), compression="none", data_page_size=64, write_batch_size=4)
    col = _one_chunk(data, "i")
    pages = walk_chunk(data, col).pages
    assert pages > 50
    monkeypatch.setattr(parquet_pages, "MAX_PAGES_PER_CHUNK", pages - 1)
    monkeypatch.setattr(script, "MAX_PAGES_PER_CHUNK", pages - 1)
    with pytest.raises(PageHeaderError, match="more than"):
        walk_chunk(data, col)
    with pytest.raises(ValueError, match="more than"):
        script._chunk_pages(io.BytesIO(data), col, len(data))
    md = pq.read_metadata(io.BytesIO(data))
    why = limits.row_group_too_big(md, 0, ["i"], source=data)
    assert why.startswith("row group 0 column 'i': column chunk of more than") and "\n" not in why


def test_the_loading_script_restates_the_package_constants(script):
    assert script.MAX_PAGE_HEADER_BYTES == parquet_pages.MAX_PAGE_HEADER_BYTES
    assert script.MAX_PAGES_PER_CHUNK == parquet_pages.MAX_PAGES_PER_CHUNK
    assert script.MIN_BYTES_PER_ROW == limits.MIN_BYTES_PER_ROW
    assert script.LIMITS["max_row_group_bytes"] == limits.MAX_ROW_GROUP_BYTES


# --------------------------------------------------------------------------- the review's bombs, scaled down


def _small_repo(tmp_path: Path) -> Path:
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path / "repo", counts={"train": 8}, size=16, max_rows=4)


def _nwpu_shard(repo: Path) -> Path:
    return sorted((repo / "data" / "nwpu" / "train").glob("*.parquet"))[0]


def footer_lie(repo: Path, n: int = BOMB) -> Path:
    """The review's f2: one rgb cell of ``n`` zero bytes (a few KB of zstd), the footer rewritten to claim each
    chunk inflates to its stored size."""
    shard = _nwpu_shard(repo)
    t = pq.read_table(shard)
    rgb = t.column("rgb").to_pylist()
    rgb[0] = {"bytes": bytes(n), "path": rgb[0]["path"]}
    i = t.schema.get_field_index("rgb")
    t = t.set_column(i, t.schema.field(i), pa.array(rgb, t.schema.field(i).type))
    del rgb
    pq.write_table(t, shard, compression="zstd")
    del t
    rewrite_footer(shard, understate)
    md = pq.read_metadata(shard)
    assert shard.stat().st_size < 200_000 and md.row_group(0).total_byte_size < LIMIT
    assert limits.row_group_too_big(md, 0, limit=LIMIT) is None  # the footer rule alone passes it
    return shard


def rows_bomb(repo: Path, n: int = 200_000) -> Path:
    """The review's f10: ``n`` copies of one row (1-byte images) in a few KB: honest sizes, far under the limit."""
    shard = _nwpu_shard(repo)
    t = pq.read_table(shard).slice(0, 1)
    cols = []
    for name in t.schema.names:
        v = t.column(name)[0]
        if name in ("rgb", "ir"):
            v = pa.scalar({"bytes": b"\xff", "path": None}, type=t.schema.field(name).type)
        cols.append(pa.repeat(v, n) if v.is_valid else pa.nulls(n, t.schema.field(name).type))
    pq.write_table(pa.Table.from_arrays(cols, schema=t.schema), shard, compression="zstd", row_group_size=1 << 20)
    md = pq.read_metadata(shard)
    assert md.num_rows == n and shard.stat().st_size < 64 * n // 10
    assert limits.row_group_too_big(md, 0) is None  # honest sizes, far under the limit
    return shard


def _limit(monkeypatch, script=None) -> None:
    monkeypatch.setattr(limits, "MAX_ROW_GROUP_BYTES", LIMIT)
    if script is not None:
        monkeypatch.setitem(script.LIMITS, "max_row_group_bytes", LIMIT)


def _check_line(repo: Path, capsys, *args: str) -> str:
    from fusionrs_hf.cli import main

    assert main(["check", str(repo), "--quiet", "--workers", "1", "--release", "none", *args]) == 1
    out = capsys.readouterr().out
    return next(line for line in out.splitlines() if line.lstrip().startswith("[unreadable_shard]"))


def test_a_footer_that_understates_its_pages_is_refused_by_every_reader(tmp_path, monkeypatch, capsys, script):
    import fusionrs_hf
    from fusionrs_hf.check import check_repo
    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.torch import make_dataloader

    repo = _small_repo(tmp_path)
    shard = footer_lie(repo)
    rel = shard.relative_to(repo).as_posix()
    _limit(monkeypatch, script)
    why = "column 'rgb.bytes': its pages inflate to"

    bad = [f for f in check_repo(str(repo), workers=1).findings if f.kind == "unreadable_shard"]
    assert [f.shard for f in bad] == [rel] and why in bad[0].message and "footer claims" in bad[0].message
    line = _check_line(repo, capsys)
    assert rel in line and why in line
    # --fast reads no rgb: the lie is not in what it reads
    assert not [f for f in check_repo(str(repo), fast=True, workers=1).findings if f.kind == "unreadable_shard"]

    with pytest.raises(DecodeError) as e:
        list(make_dataloader(str(repo), "nwpu", "train", batch_size=2, on_error="raise"))
    assert f"shard={rel}" in str(e.value) and why in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DecodeError, match=f"shard={rel}: row group 0 {why}"):
        make_dataloader(str(repo), "nwpu", "train", batch_size=2, shuffle="global")  # map-style: load()
    with pytest.raises(limits.RowGroupTooBig, match=f"shard={rel}: row group 0 {why}"):
        fusionrs_hf.load("nwpu", "train", repo=str(repo))

    _the_script_refuses(script, repo, tmp_path, shard, why)


def _the_script_refuses(script, repo, tmp_path, shard, why: str) -> None:
    """The loading script's builder refuses ``shard`` in one line naming it and saying ``why``."""
    builder = script.FusionRS(config_name="nwpu", data_dir=str(repo), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError) as e:
        list(builder.as_streaming_dataset("train"))
    assert str(shard) in str(e.value) and why in str(e.value) and "\n" not in str(e.value)


def test_the_footer_lie_is_refused_without_inflating_the_bomb(tmp_path):
    """In a fresh interpreter (Arrow's peak allocation is the process's): check, the loader and the loading
    script refuse the shard, and Arrow never allocated anything near the 50 MB page."""
    repo = _small_repo(tmp_path)
    footer_lie(repo)
    code = textwrap.dedent(f"""
        import importlib.util, json, sys
        import pyarrow as pa
        from fusionrs_hf import limits
        limits.MAX_ROW_GROUP_BYTES = {LIMIT}
        from fusionrs_hf.check import check_repo
        from fusionrs_hf.torch import make_dataloader
        repo = {str(repo)!r}
        out = {{}}
        out["check"] = [f.message for f in check_repo(repo, workers=1).findings if f.kind == "unreadable_shard"]
        try:
            list(make_dataloader(repo, "nwpu", "train", batch_size=2, on_error="raise"))
        except Exception as e:
            out["loader"] = str(e)
        spec = importlib.util.spec_from_file_location("fusionrs_loading_script", {str(SCRIPT)!r})
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        mod.LIMITS["max_row_group_bytes"] = {LIMIT}
        try:
            list(mod.FusionRS(config_name="nwpu", data_dir=repo, cache_dir={str(tmp_path / "c")!r})
                 .as_streaming_dataset("train"))
        except ValueError as e:
            out["script"] = str(e)
        out["arrow_peak"] = pa.default_memory_pool().max_memory()
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(got["check"]) == 1 and "its pages inflate to" in got["check"][0]
    assert "its pages inflate to" in got.get("loader", "") and "its pages inflate to" in got.get("script", "")
    assert got["arrow_peak"] < BOMB // 4, got["arrow_peak"]  # nothing near the page was allocated


def test_a_shard_of_more_rows_than_its_bytes_allow_is_refused(tmp_path, monkeypatch, capsys, script):
    import fusionrs_hf
    from fusionrs_hf.check import check_repo
    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.torch import make_dataloader

    repo = _small_repo(tmp_path)
    shard = rows_bomb(repo)
    rel = shard.relative_to(repo).as_posix()
    why = "row group 0 holds 200,000 rows in"

    rep = check_repo(str(repo), fast=True, workers=1)
    bad = [f for f in rep.findings if f.kind == "unreadable_shard"]
    assert [f.shard for f in bad] == [rel] and why in bad[0].message and "MIN_BYTES_PER_ROW" in bad[0].message
    assert rep.stats["rows"] < 1000  # none of its rows was read
    line = _check_line(repo, capsys, "--fast")
    assert rel in line and why in line

    with pytest.raises(DecodeError) as e:
        list(make_dataloader(str(repo), "nwpu", "train", batch_size=2, on_error="raise"))
    assert f"shard={rel}" in str(e.value) and why in str(e.value) and "\n" not in str(e.value)
    # refused when the epoch is planned: a skipping loader leaves the shard out whole, walking none of its rows
    with pytest.warns(RuntimeWarning, match=f"skipping 1 unreadable shard.*{rel}"):
        skipping = make_dataloader(str(repo), "nwpu", "train", batch_size=2, on_error="skip")
    assert skipping.dataset.skipped_shards == [rel]
    got = [s for b in skipping for s in b["sample_id"]]
    assert got and skipping.skipped == 0 and len(got) < 1000
    with pytest.raises(limits.RowGroupTooBig, match=f"shard={rel}: {why}"):
        fusionrs_hf.load("nwpu", "train", repo=str(repo))

    _the_script_refuses(script, repo, tmp_path, shard, why)

    # the whole file is held to it too, by its real size: a footer claiming bigger chunks does not help
    md = pq.read_metadata(shard)
    assert limits.too_many_rows(md, None, shard.stat().st_size).startswith(why)
    rewrite_footer(shard, _claim_bigger_chunks)
    md = pq.read_metadata(shard)
    assert limits.too_many_rows(md) is None  # the footer's stored sizes now allow the rows...
    assert limits.too_many_rows(md, None, shard.stat().st_size).startswith("the file holds 200,000 rows in")
    with open(shard, "rb") as fh, pytest.raises(limits.RowGroupTooBig, match=f"{rel}: the file holds 200,000 rows"):
        limits.refuse_big_row_groups(md, ["sample_id"], rel, fh, shard=True)  # ...its size does not


def _claim_bigger_chunks(fields: list) -> None:
    """A footer claiming its (unread) columns store 64 MB each."""
    for rg in _field(fields, 4)[2][1]:
        for cc in _field(rg, 1)[2][1]:
            md = _field(cc, 3)[2]
            if _field(md, 3)[2][1] != [b"sample_id"]:  # ColumnMetaData.path_in_schema
                _field(md, 7)[2] = 64 << 20


def test_findings_of_one_kind_are_capped_with_a_summary(tmp_path, monkeypatch):
    """1,200 rows sharing one sample_id (real-sized rows, honest): the report lists the first 50 duplicates
    (the cap lowered from 1,000) and one finding counting the rest; counts_by_kind still counts them all."""
    from fusionrs_hf.check import check_repo, findings

    repo = _small_repo(tmp_path)
    shard = _nwpu_shard(repo)
    t = pq.read_table(shard).slice(0, 1)
    n = 1200
    t = pa.concat_tables([t] * n)
    rng = np.random.default_rng(0)
    for name in ("rgb", "ir"):  # distinct bytes: a row takes hundreds of bytes, as a real one does
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.array([{"bytes": rng.bytes(200), "path": None} for _ in range(n)],
                                                          t.schema.field(i).type))
    pq.write_table(t, shard, compression="zstd")
    monkeypatch.setattr(findings, "MAX_FINDINGS_PER_KIND", 50)
    rep = check_repo(str(repo), fast=True, workers=2)
    dups = [f for f in rep.findings if f.kind == "duplicate_sample_id"]
    assert len(dups) == 51 and rep.counts_by_kind()["duplicate_sample_id"] == n - 1
    (summary,) = [f for f in dups if f.shard is None]
    assert summary.message.startswith(f"{n - 1 - 50:,} more duplicate_sample_id finding(s) not listed")
    assert rep.omitted == {"duplicate_sample_id": n - 1 - 50}
    d = rep.to_dict()
    assert d["counts_by_kind"]["duplicate_sample_id"] == n - 1 and d["findings_omitted"] == rep.omitted
    assert rep.stats["findings"] == sum(rep.counts_by_kind().values())
    again = check_repo(str(repo), fast=True, workers=1)  # the same rows kept, whatever the order shards finish in
    assert [f.__dict__ for f in again.findings] == [f.__dict__ for f in rep.findings]
    from fusionrs_hf.check.cli import summary

    text = summary(rep, max_print=3)  # the summary's totals are the true counts, not the listed ones
    assert f"FAILED: {rep.stats['findings']} finding(s)" in text and f"of {rep.stats['findings']}):" in text


def test_the_remote_reader_walks_the_pages_from_the_bytes_it_fetched(tmp_path, monkeypatch):
    """Over HTTP the page headers are read from the row group's bytes fetched for pyarrow: the bomb is refused,
    and no request is made outside the planned ranges (no fallbacks)."""
    from huggingface_hub import constants

    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.testing.hub_server import HubServer
    from fusionrs_hf.torch import FusionRSIterable

    repo = _small_repo(tmp_path)
    shard = footer_lie(repo)
    rel = shard.relative_to(repo).as_posix()
    files = {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    _limit(monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with HubServer() as server:
        server.create_repo("fusionrs/bomb", files=files)
        ds = FusionRSIterable("hf://datasets/fusionrs/bomb", "nwpu", "train", batch_size=2, on_error="skip",
                              storage_options={"endpoint": server.url})
        bomb_rows = pq.read_metadata(shard).num_rows
        with pytest.warns(RuntimeWarning, match=f"skipped {bomb_rows} row"):
            rows = [r for b in ds for r in b["sample_id"]]
        stats = ds.read_stats()
        assert stats["fallbacks"] == 0 and stats["requests"] == stats["row_groups"] - stats["shared"]
        assert ds.skipped == bomb_rows  # the bomb's rows, counted as unreadable
        assert len(rows) == sum(pq.read_metadata(p).num_rows for p in (repo / "data/nwpu/train").glob("*.parquet")
                                if p != shard)
        for read_ahead in (2, 0):  # 0: the row group's spans fetched when it is read, the walk from them too
            strict = FusionRSIterable("hf://datasets/fusionrs/bomb", "nwpu", "train", batch_size=2, on_error="raise",
                                      read_ahead=read_ahead, storage_options={"endpoint": server.url})
            with pytest.raises(DecodeError, match=f"shard={rel} row=0: row group 0 column 'rgb.bytes': its pages"):
                list(strict)


def test_a_zero_row_row_group_is_no_reason_to_refuse_a_file(tmp_path, script):
    """pyarrow writes an empty row group's chunks at offset 0 (its dictionary page at 4): walked from byte 0,
    'PAR1' parsed as a page header refused ordinary files (an empty batch written by a ParquetWriter loop,
    ``DataFrame().to_parquet()``). Arrow reads nothing of such a row group, and neither does the walk."""
    rng = np.random.default_rng(0)
    t = pa.table({"sample_id": pa.array(["a", "b", "c"]), "caption": pa.array(["x y", "y z", "z w"]),
                  "rgb": pa.array([rng.bytes(300) for _ in range(3)])})  # a row's bytes, as a shard's are
    path = tmp_path / "empty_group.parquet"
    with pq.ParquetWriter(path, t.schema) as w:
        w.write_table(t)
        w.write_table(t.slice(0, 0))  # an empty batch, as a filtering loop writes one
        w.write_table(t)
    md = pq.read_metadata(path)
    assert md.num_row_groups == 3 and md.row_group(1).num_rows == 0
    with open(path, "rb") as fh:
        limits.refuse_big_row_groups(md, None, str(path), fh)  # no error
        assert script.row_groups_problem(md, fh) is None
    empty = tmp_path / "empty.parquet"
    pq.write_table(t.slice(0, 0), empty)
    with open(empty, "rb") as fh:
        limits.refuse_big_row_groups(pq.read_metadata(empty), None, str(empty), fh)
