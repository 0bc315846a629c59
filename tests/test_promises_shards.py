"""Issue 15: the shard writer's promises (README: "Shards embed image bytes as given (a JPEG is never
re-encoded), carry the HF features in the parquet schema metadata, use row groups of at most ~100 MB, the
page index and content-defined chunking"), read back from the parquet files and the writer's arguments."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fusionrs_hf import shards as shards_mod
from fusionrs_hf.demo import sample_rows
from fusionrs_hf.layout import shard_path
from fusionrs_hf.schema import FIELD_NAMES, SchemaError
from fusionrs_hf.shards import ShardSink, image_bytes, rows_to_table, write_rows, write_table

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [r for s, _, _, r in sample_rows(counts={"train": 2}, size=32) if s in ("RS5M", "NWPU")]


def _big_row(template: dict, i: int, rgb_bytes: int, ir_bytes: int) -> dict:
    """A row whose image cells are ``rgb_bytes`` + ``ir_bytes`` long (a JPEG header, then filler)."""
    head = b"\xff\xd8\xff\xe0"
    return {**template, "sample_id": f"big-{i}", "rgb": head + bytes([i]) * (rgb_bytes - 4),
            "ir": head + bytes([i + 1]) * (ir_bytes - 4), "rgb_sha256": None, "ir_sha256": None,
            "joint_group_id": "joint-group:" + hashlib.sha256(f"big-{i}".encode()).hexdigest()[:24]}


def test_row_groups_hold_at_most_about_100_mb_by_default(rows, tmp_path):
    """3 rows of 34 MiB of image bytes: two fit in ~100 MB, the third starts a new row group."""
    assert shards_mod.DEFAULT_ROW_GROUP_BYTES == 100 * MIB
    big = [_big_row(rows[0], i, 17 * MIB, 17 * MIB) for i in range(3)]
    out = tmp_path / shard_path("RS5M", "train", "base", 0)
    write_rows(big, out)
    md = pq.ParquetFile(out).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [2, 1]
    back = pq.read_table(out)
    assert back["rgb"].to_pylist()[2]["bytes"] == big[2]["rgb"]


@pytest.mark.parametrize(("limit", "groups"), [
    # rows of 300 + 40 image bytes; the writer counts 512 bytes per row for the other columns:
    (1000, [1, 1, 1]),     # 852 + 340 > 1000: every row starts a group
    (1192, [2, 1]),        # 852 + 340 = 1192 fits exactly; 1704 + 340 does not
    (1191, [1, 1, 1]),
    (2044, [3]),           # 1704 + 340 = 2044 fits exactly
    (10, [1, 1, 1]),       # a row larger than the limit still gets a group of its own
])
def test_row_group_limit_is_an_argument(rows, tmp_path, limit, groups):
    data = [_big_row(rows[0], i, 300, 40) for i in range(3)]
    _check_groups(data, tmp_path, limit, groups)


@pytest.mark.parametrize(("n", "ir", "limit", "groups"), [
    (4, 40, 1192, [2, 2]),     # a new group starts from 0 bytes: the second pair fits exactly too
    (4, 40, 1191, [1, 1, 1, 1]),
    (3, 0, 1112, [2, 1]),      # an empty IR cell counts 0 bytes: 812 + 300 = 1112
])
def test_row_group_boundaries(rows, tmp_path, n, ir, limit, groups):
    data = [_big_row(rows[0], i, 300, max(ir, 4)) for i in range(n)]
    if ir == 0:
        for r in data:
            r["ir"] = b""
    _check_groups(data, tmp_path, limit, groups)


def _check_groups(data, tmp_path, limit, groups):
    out = tmp_path / "x.parquet"
    write_rows(data, out, row_group_bytes=limit)
    md = pq.ParquetFile(out).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == groups
    assert [r["sample_id"] for r in pq.read_table(out).to_pylist()] == [r["sample_id"] for r in data]


def test_writer_uses_content_defined_chunking_and_the_page_index(rows, tmp_path, monkeypatch):
    seen = []
    real = pq.ParquetWriter

    class Spy(real):
        def __init__(self, where, schema, **kwargs):
            seen.append(kwargs)
            super().__init__(where, schema, **kwargs)

    monkeypatch.setattr(shards_mod.pq, "ParquetWriter", Spy)
    write_rows(rows, tmp_path / "a.parquet")
    (kw,) = seen
    # the defaults `datasets` uses for Hub uploads (its config.DEFAULT_CDC_OPTIONS), written out here
    assert kw["use_content_defined_chunking"] == {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024,
                                                  "norm_level": 0}
    assert kw["write_page_index"] is True
    write_rows(rows, tmp_path / "b.parquet", content_defined_chunking=False)
    assert "use_content_defined_chunking" not in seen[1] and seen[1]["write_page_index"] is True


def test_page_index_and_features_are_in_the_file(rows, tmp_path):
    out = tmp_path / "c.parquet"
    write_rows(rows, out)
    pf = pq.ParquetFile(out)
    rg = pf.metadata.row_group(0)
    cols = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
    assert all(c.has_offset_index for c in cols.values())  # the page index is written
    assert cols["rgb.bytes"].compression == "UNCOMPRESSED" and cols["caption"].compression == "SNAPPY"
    feats = json.loads(pf.schema_arrow.metadata[b"huggingface"])["info"]["features"]
    assert feats["rgb"] == {"_type": "Image"} and feats["ir"] == {"_type": "Image"}
    assert pf.schema_arrow.names == list(FIELD_NAMES)


def test_bytes_are_stored_as_given_and_hashed(rows, tmp_path):
    out = tmp_path / "d.parquet"
    write_rows(rows, out)
    back = pq.read_table(out).to_pylist()
    for r, b in zip(rows, back, strict=True):
        assert b["rgb"]["bytes"] == image_bytes(r["rgb"]) and b["ir"]["bytes"] == image_bytes(r["ir"])
        assert b["rgb_sha256"] == hashlib.sha256(b["rgb"]["bytes"]).hexdigest()
        assert b["ir_sha256"] == hashlib.sha256(b["ir"]["bytes"]).hexdigest()
        assert b["rgb"]["path"] == f"{r['sample_id']}.rgb.jpg" and b["ir"]["path"] == f"{r['sample_id']}.ir.jpg"


def test_image_cells_bytes_dicts_paths_and_extensions(rows, tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 10
    tif = b"II*\x00" + b"0" * 10
    (tmp_path / "img.bin").write_bytes(tif)
    assert image_bytes(memoryview(b"abc")) == b"abc" and image_bytes(bytearray(b"ab")) == b"ab"
    assert image_bytes({"bytes": b"xy", "path": "ignored"}) == b"xy"
    assert image_bytes({"bytes": None, "path": str(tmp_path / "img.bin")}) == tif
    assert image_bytes(tmp_path / "img.bin") == tif and image_bytes(str(tmp_path / "img.bin")) == tif
    with pytest.raises(SchemaError, match="where: image value of type int"):
        image_bytes(5, where="where")
    with pytest.raises(SchemaError) as e:
        image_bytes(5)
    assert str(e.value) == ": image value of type int is not bytes, a dict or a path"
    assert rows_to_table([{**rows[0], "rgb": b"MM\x00*" + b"0" * 8}]).column("rgb").to_pylist()[0]["path"].endswith(
        ".rgb.tif")  # big-endian TIFF
    t = rows_to_table([{**rows[0], "rgb": png, "ir": {"path": str(tmp_path / "img.bin")}, "rgb_sha256": None,
                        "ir_sha256": None}, {**rows[1], "rgb": b"GIF89a", "rgb_sha256": None}])
    cells = t.column("rgb").to_pylist()
    assert [c["path"].rsplit(".", 1)[1] for c in cells] == ["png", "bin"]
    assert t.column("ir").to_pylist()[0] == {"bytes": tif, "path": f"{rows[0]['sample_id']}.ir.tif"}
    # a given SHA-256 is kept as given (the checker compares it with the bytes)
    t2 = rows_to_table([{**rows[0], "rgb_sha256": "a" * 64}])
    assert t2.column("rgb_sha256").to_pylist() == ["a" * 64]
    # a missing optional column is null; caption_origin defaults to "source"
    minimal = {k: v for k, v in rows[0].items() if k not in ("caption_origin", "class_name")}
    t3 = rows_to_table([minimal])
    assert t3.column("caption_origin").to_pylist() == ["source"] and t3.column("class_name").to_pylist() == [None]


def test_schema_errors_name_the_sample(rows):
    with pytest.raises(SchemaError, match=r"here: sample_id='.*': unexpected column\(s\) \['extra'\]"):
        rows_to_table([{**rows[0], "extra": 1}], where="here")
    with pytest.raises(SchemaError, match=r"sample_id='.*': missing column 'ir'"):
        rows_to_table([{**rows[0], "ir": None}])
    with pytest.raises(SchemaError, match=r"^rows: sample_id="):
        rows_to_table([{**rows[0], "extra": 1}])
    with pytest.raises(SchemaError, match=r"^rows: "):
        rows_to_table([{**rows[0], "caption": 7}])
    with pytest.raises(SchemaError, match=r"^rows: column 'caption' is null at row 0"):
        rows_to_table([{**rows[0], "caption": None}])
    with pytest.raises(SchemaError, match=r"^there: sample_id='.*' column 'ir': image value of type float"):
        rows_to_table([{**rows[0], "ir": 1.5}], where="there")
    with pytest.raises(SchemaError, match="row 0"):
        rows_to_table([{k: v for k, v in rows[0].items() if k not in ("sample_id", "rgb")}])
    with pytest.raises(SchemaError):
        rows_to_table([{**rows[0], "caption": 7}])


def test_sink_rolls_by_rows_and_by_bytes(rows, tmp_path):
    root = tmp_path / "sink"
    with ShardSink(root, "NWPU", "test", "iraware", batch="b1", start_index=3, max_rows=2) as sink:
        for i in range(5):
            sink.add({**rows[0], "sample_id": f"s{i}"})
    assert [Path(s.path).relative_to(root).as_posix() for s in sink.written] == [
        f"data/nwpu/test/iraware-b1-0000{i}.parquet" for i in (3, 4, 5)]
    assert [s.num_rows for s in sink.written] == [2, 2, 1]
    assert all(s.file_bytes == Path(s.path).stat().st_size and s.num_bytes > 0 for s in sink.written)
    n = len(image_bytes(rows[0]["rgb"])) + len(image_bytes(rows[0]["ir"]))
    sink2 = ShardSink(root, "RS5M", "train", "base", target_bytes=2 * n)
    for i in range(5):
        sink2.add({**rows[0], "sample_id": f"t{i}"})
    assert [s.num_rows for s in sink2.written] == [2, 2]  # rolled at 2 rows' worth of image bytes
    assert [s.num_rows for s in sink2.close()] == [2, 2, 1]
    assert sink2.close() == sink2.written and len(sink2.written) == 3  # closing twice writes nothing more
    with pytest.raises(RuntimeError):
        with ShardSink(root, "RSICD", "train", "base", max_rows=10) as sink3:
            sink3.add({**rows[0], "sample_id": "u0"})
            raise RuntimeError("boom")
    assert not (root / "data/rsicd").exists()  # an exception inside the block writes no shard


def test_write_table_validates_orders_and_is_atomic(rows, tmp_path):
    t = rows_to_table(rows)
    shuffled = t.select(list(reversed(t.column_names)))
    out = tmp_path / "sub" / "e.parquet"
    stats = write_table(shuffled, out)
    assert pq.ParquetFile(out).schema_arrow.names == list(FIELD_NAMES)
    assert stats.num_rows == len(rows) and stats.num_bytes == t.nbytes and stats.file_bytes == out.stat().st_size
    assert [p.name for p in out.parent.iterdir()] == ["e.parquet"]  # no temporary file left
    with pytest.raises(SchemaError):
        write_table(t.drop_columns(["caption"]), tmp_path / "f.parquet")
    assert not (tmp_path / "f.parquet").exists()


def test_sink_counts_path_cells_by_file_size_and_bytes_cells_by_length(rows, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(image_bytes(rows[0]["rgb"]) + b"\0" * 5000)
    small = image_bytes(rows[0]["ir"])
    n_big = big.stat().st_size
    root = tmp_path / "s"
    # path cells (a dict with only a path, or a plain path) count their file's size
    sink = ShardSink(root, "NWPU", "train", "base", target_bytes=2 * (n_big + len(small)))
    sink.add({**rows[0], "sample_id": "p0", "rgb": {"path": str(big)}, "ir": small})
    sink.add({**rows[0], "sample_id": "p1", "rgb": str(big), "ir": small})
    assert [s.num_rows for s in sink.written] == [2]
    # a dict holding bytes counts the bytes, whatever its path says
    sink2 = ShardSink(root, "RS5M", "train", "base", target_bytes=n_big)
    sink2.add({**rows[0], "sample_id": "q0", "rgb": {"bytes": small, "path": str(big)}, "ir": small})
    assert sink2.written == []
    assert pq.read_table(sink.written[0].path)["rgb"].to_pylist()[0]["bytes"] == big.read_bytes()


def test_sink_byte_target_boundaries_and_options(rows, tmp_path):
    n = len(image_bytes(rows[0]["rgb"])) + len(image_bytes(rows[0]["ir"]))
    sink = ShardSink(tmp_path / "t", "RSICD", "validation", "base", target_bytes=2 * n + 1, row_group_bytes=10)
    for i in range(7):
        sink.add({**rows[0], "sample_id": f"r{i}"})
    written = sink.close()
    assert [s.num_rows for s in written] == [3, 3, 1]  # rolls once the bytes reach the target, from 0 each time
    assert [Path(s.path).name for s in written] == [f"base-main-0000{i}.parquet" for i in range(3)]
    assert all(pq.ParquetFile(s.path).metadata.num_row_groups == s.num_rows for s in written)  # one row a group


def test_a_repos_own_sources_are_accepted_when_named(rows, tmp_path):
    own = {**rows[0], "source": "Drone", "sample_id": "drone-1"}
    with pytest.raises(SchemaError, match="unknown value"):
        rows_to_table([own])
    with pytest.raises(SchemaError, match=r"x\.parquet: column 'source' has unknown value"):
        write_rows([own], tmp_path / "x.parquet")
    srcs = ("RS5M", "SkyScript", "NWPU", "RSICD", "RSITMD", "Drone")
    assert rows_to_table([own], sources=srcs).column("source").to_pylist() == ["Drone"]
    write_rows([own], tmp_path / "y.parquet", sources=srcs)
    assert pq.read_table(tmp_path / "y.parquet")["source"].to_pylist() == ["Drone"]
    t = rows_to_table([own], sources=srcs)
    with pytest.raises(SchemaError, match=r"z\.parquet: column 'source'"):
        write_table(t, tmp_path / "z.parquet")
    write_table(t, tmp_path / "z.parquet", sources=srcs)
