"""Issue 3: the official index record schema (both variants), gzip reading, line/field errors, traversal."""

from __future__ import annotations

import copy
import gzip
import json

import pytest

from fusionrs_hf.index import (
    INTERNAL_SCHEMA,
    RC4_SPLIT_COUNTS,
    BadLine,
    IndexFormatError,
    check_relpath,
    iter_index,
    parse_record,
    read_index,
)

from .build_fixtures import internal_record, public_record, write_jsonl


def _pub(sid="rsicd-0001", **over):
    rec = public_record(sid, "RSICD", "1", "RSICD_images/airport_1.jpg", "val", f"rsicd/{sid}.jpg")
    rec.update(over)
    return rec


def test_public_and_internal_variants_parse():
    pub = parse_record(_pub())
    assert pub.split == "validation" and pub.index_split == "val"
    assert pub.translation.output_key == "rsicd/rsicd-0001.jpg" and pub.translation.model == "DiffV2IR"
    assert pub.flags["vlm_train_identity"] is False and pub.caption is None
    internal = parse_record(internal_record(_pub(), "many planes parked at the airport", None))
    assert internal.schema_version == INTERNAL_SCHEMA
    assert internal.caption == "many planes parked at the airport" and internal.caption_usable is True
    assert "vlm_train_used" in internal.flags and len(internal.normalized_caption_key) == 64


def test_rc4_counts_total_600k():
    assert sum(sum(v.values()) for v in RC4_SPLIT_COUNTS.values()) == 600_000


@pytest.mark.parametrize("locator", ["../secret.jpg", "a/../../b.jpg", "/etc/passwd", "C:/x.jpg", "a\\..\\b.jpg",
                                     "\\\\server\\share.jpg", "http://x/y.jpg", ""])
def test_traversal_locators_rejected(locator):
    with pytest.raises(IndexFormatError, match=r"line 7: field 'source_locator'"):
        parse_record(_pub(source_locator=locator), "index.jsonl", 7)
    with pytest.raises(ValueError):
        check_relpath(locator)


def test_safe_relpaths_normalised():
    assert check_relpath("./a//b/c.jpg") == "a/b/c.jpg"
    assert check_relpath("dir\\x.jpg") == "dir/x.jpg"
    assert check_relpath("a..b/c.jpg") == "a..b/c.jpg"  # '..' inside a name is not a segment


@pytest.mark.parametrize("field, value, message", [
    ("split", "dev", "unknown split"),
    ("source_dataset", "UCM", "unknown source"),
    ("joint_group_id", "joint-group:xyz", "does not match"),
    ("is_eval_representative", "yes", "true or false"),
    ("sample_id", "", "must not be empty"),
    ("schema_version", "v0", "unknown value"),
    ("source_rights_code", None, "must not be null"),
])
def test_bad_field_named(field, value, message):
    with pytest.raises(IndexFormatError, match=rf"idx line 3: field '{field}': .*{message}"):
        parse_record(_pub(**{field: value}), "idx", 3)


def test_missing_fields_and_translation():
    rec = _pub()
    del rec["vlm_train_identity"]
    with pytest.raises(IndexFormatError, match="field 'vlm_train_identity': missing"):
        parse_record(rec)
    rec = _pub()
    rec["translation"] = {"model": "DiffV2IR", "output_key": "../ir.jpg"}
    with pytest.raises(IndexFormatError, match="field 'translation.output_key'"):
        parse_record(rec)
    rec = internal_record(_pub(), "x", None)
    rec["normalized_caption_key"] = "ABC"
    with pytest.raises(IndexFormatError, match="normalized_caption_key"):
        parse_record(rec)


def test_gzip_stream_and_bad_line_numbers(tmp_path):
    recs = [_pub(f"rsicd-{i:04d}") for i in range(5)]
    path = write_jsonl(tmp_path / "i.jsonl.gz", recs, gz=True)
    assert [r.sample_id for r in read_index(path)] == [f"rsicd-{i:04d}" for i in range(5)]
    # gzip is detected from the bytes, not the name
    plain_named = tmp_path / "i.jsonl"
    plain_named.write_bytes(path.read_bytes())
    assert len(read_index(plain_named)) == 5

    bad = copy.deepcopy(recs)
    bad[3]["split"] = "dev"
    lines = [json.dumps(r) for r in bad]
    lines.insert(1, "")  # blank lines are skipped but still counted
    lines.insert(2, "{not json")
    p = tmp_path / "bad.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join(lines) + "\n")
    with pytest.raises(IndexFormatError, match=r"bad.jsonl.gz line 3: not valid JSON"):
        read_index(p)
    items = list(iter_index(p, on_error="yield"))
    bads = [b for b in items if isinstance(b, BadLine)]
    assert [b.line for b in bads] == [3, 6]
    assert bads[1].error.field == "split"
    assert sum(not isinstance(b, BadLine) for b in items) == 4


def test_truncated_gzip_and_bad_encoding_named(tmp_path):
    recs = [_pub(f"rsicd-{i:04d}") for i in range(200)]
    full = write_jsonl(tmp_path / "full.jsonl.gz", recs, gz=True).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(IndexFormatError, match=r"cut.jsonl.gz: unreadable after line \d+"):
        read_index(cut)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(recs[0]).encode() + b"\n\xff\xfe broken\n")
    with pytest.raises(IndexFormatError, match=r"latin.jsonl: unreadable after line [01] \(UnicodeDecodeError"):
        read_index(latin)
