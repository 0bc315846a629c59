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
from fusionrs_hf.release.schemas import RECORD_SCHEMAS

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
    assert pub.flags["caption_supervision_available_upstream"] is True
    assert pub.rights_code == "rsicd-redistribution-license-not-located"
    internal = parse_record(internal_record(_pub(), "many planes parked at the airport", None))
    assert internal.schema_version == INTERNAL_SCHEMA
    assert internal.caption == "many planes parked at the airport" and internal.caption_usable is True
    # the internal spellings land in the same places as the public ones
    assert internal.flags["vlm_train_identity"] is False and len(internal.normalized_caption_key) == 64
    # what the authors' redaction derives (build_public_redacted_index.py): the code, the upstream flag
    assert internal.rights_code == "rsicd-redistribution-license-not-located"
    assert internal.flags["caption_supervision_available_upstream"] is True
    unusable = parse_record(internal_record(_pub(), " ... ", None))
    assert unusable.flags["caption_supervision_available_upstream"] is False


def test_internal_skyscript_rights_come_from_the_locator_tag():
    from fusionrs_hf.index import IndexFormatError
    from fusionrs_hf.release.rights import SKYSCRIPT_RIGHTS

    for tag, code in SKYSCRIPT_RIGHTS.items():
        pub = public_record("sky-1", "SkyScript", "1", f"images3/a1b2_{tag}_2019_x.jpg", "train", "SkyScript/sky-1.png")
        assert parse_record(internal_record(pub, "a road", None)).rights_code == code
    pub = public_record("sky-1", "SkyScript", "1", "images3/a_12_2019.jpg", "train", "SkyScript/sky-1.png")
    with pytest.raises(IndexFormatError, match="source_locator.*SkyScript sub-source"):
        parse_record(internal_record(pub, "a road", None))
    pub = public_record("sky-1", "SkyScript", "1", "images3/a_ZZ_2019.jpg", "train", "SkyScript/sky-1.png")
    with pytest.raises(IndexFormatError, match="unknown SkyScript sub-source 'ZZ'"):
        parse_record(internal_record(pub, "a road", None))


def test_the_internal_index_is_a_known_release():
    from fusionrs_hf.release.known import RC4, get_release, identify_index

    rel = get_release("rc4-internal")
    assert rel.split_counts == RC4.split_counts and rel.blocked_fields == ()
    ident = identify_index(rel.index_sha256, 600_000)
    assert ident.release == "rc4-20260726-internal"


def test_rc4_counts_total_600k():
    assert sum(sum(v.values()) for v in RC4_SPLIT_COUNTS.values()) == 600_000


# --------------------------------------------------------------------------- generated from the schemas

def _value_for(name: str, spec: dict, variant: int = 0):
    """A valid value for one property, built from its schema (enum/const/type/pattern), not from our code."""
    if "const" in spec:
        return spec["const"]
    if "enum" in spec:
        return spec["enum"][variant % len(spec["enum"])]
    types = spec.get("type") if isinstance(spec.get("type"), list) else [spec.get("type")]
    if "boolean" in types:
        return bool(variant % 2)
    if spec.get("pattern") == r"^[0-9a-f]{64}$":
        return "ab" * 32
    if spec.get("pattern") == r"^joint-group:[0-9a-f]{24}$":
        return "joint-group:" + "0123456789abcdef01234567"
    if name == "class_name":
        return "airport"
    return f"{name}-value/x{variant}.jpg"


def _from_schema(schema: dict, variant: int = 0, top: bool = True) -> dict:
    rec = {}
    for name, spec in schema["properties"].items():
        rec[name] = _from_schema(spec, variant, False) if spec.get("type") == "object" \
            else _value_for(name, spec, variant)
    if top:
        rec["source_dataset"] = "NWPU"  # the one source that may carry a class_name
    return rec


@pytest.mark.parametrize("version", sorted(RECORD_SCHEMAS))
def test_records_generated_from_each_schema_are_accepted(version):
    schema = RECORD_SCHEMAS[version]
    assert set(schema["required"]) == set(schema["properties"])  # rc4 schemas: every field is required
    enums = {n: s["enum"] for n, s in schema["properties"].items() if "enum" in s}
    for variant in range(max(len(v) for v in enums.values())):
        rec = _from_schema(schema, variant)
        for name, values in enums.items():
            rec[name] = values[variant % len(values)]
        if rec["source_dataset"] != "NWPU" and "class_name" in rec:
            rec["class_name"] = None
        if rec["source_dataset"] == "SkyScript":  # its rights code comes from the tag in the file name
            rec["source_locator"] = f"images/x_US_{variant}.jpg"
        got = parse_record(rec, "gen.jsonl", variant + 1)
        assert got.source == rec["source_dataset"] and got.index_split == rec["split"]
    # nullable fields: null is accepted where the schema's type allows it
    for name, spec in schema["properties"].items():
        if isinstance(spec.get("type"), list) and "null" in spec["type"]:
            parse_record({**_from_schema(schema), name: None})


def _violations(schema: dict):
    """One record per kind of violation the schema defines: (record, field named in the error)."""
    base = _from_schema(schema)
    for name in schema["required"]:
        yield {k: v for k, v in base.items() if k != name}, name, "missing"
    yield {**base, "unexpected_field": 1}, "unexpected_field", "not allowed"
    yield {**base, "translation": {**base["translation"], "extra": "x"}}, "translation.extra", "not allowed"
    for name, spec in schema["properties"].items():
        if "enum" in spec:
            yield {**base, name: "NOT-" + str(spec["enum"][0])}, name, "must be one of"
        if "const" in spec and name != "schema_version":
            yield {**base, name: "other"}, name, "must be"
        if spec.get("type") == "boolean":
            yield {**base, name: "yes"}, name, "must be boolean"
        if spec.get("type") == "string":
            yield {**base, name: None}, name, "must be string, got null"
            yield {**base, name: 7}, name, "must be string, got number"
            if spec.get("minLength"):
                yield {**base, name: ""}, name, "must not be empty"
        if "pattern" in spec:
            yield {**base, name: "NOT-HEX"}, name, "does not match"
    yield {**base, "translation": {**base["translation"], "model": "pix2pix"}}, "translation.model", "DiffV2IR"
    yield {**base, "source_locator": "../../etc/passwd"}, "source_locator", "not allowed"
    yield {**base, "source_dataset": "RSICD", "class_name": "airport"} if "class_name" in base else \
        ({**base, "sample_id": None}), ("class_name" if "class_name" in base else "sample_id"), "must be"


@pytest.mark.parametrize("version", sorted(RECORD_SCHEMAS))
def test_each_schema_violation_names_file_line_and_field(version, tmp_path):
    cases = list(_violations(RECORD_SCHEMAS[version]))
    assert len(cases) > 30
    for rec, field_name, message in cases:
        with pytest.raises(IndexFormatError) as ei:
            parse_record(rec, "idx.jsonl", 9)
        assert str(ei.value).startswith(f"idx.jsonl line 9: field '{field_name}'"), (field_name, str(ei.value))
        assert message in str(ei.value), (field_name, str(ei.value))
    # a public index must not carry the internal variant's caption (a blocked field)
    pub = _pub()
    pub["caption"] = "a leaked caption"
    with pytest.raises(IndexFormatError, match="field 'caption': not allowed"):
        parse_record(pub, "idx.jsonl", 2)


@pytest.mark.parametrize("line, message", [
    ("[" * 200_000, "nested too deeply"),
    ('{"sample_id": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"schema_version": "fusionrs-public-index-v1", "sample_id": "\\ud800"}', "field"),
])
def test_hostile_lines_are_named_errors(tmp_path, line, message):
    p = tmp_path / "hostile.jsonl"
    p.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(IndexFormatError, match=rf"hostile.jsonl line 1: .*{message}"):
        read_index(p)


def test_lone_surrogate_id_rejected():
    with pytest.raises(IndexFormatError, match="field 'sample_id': .*valid Unicode"):
        parse_record(_pub(sample_id="bad\ud800id"), "i", 1)


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
    # not UTF-8 on line 4: the decoder reads ahead and failed "after line 0"; the line is found again, also in gzip
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in recs[:3]) + b'{"caption": "caf\xe9"}\n'
    for name, data in (("latin.jsonl", lines), ("latin.jsonl.gz", gzip.compress(lines))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(IndexFormatError) as e:
            read_index(tmp_path / name)
        assert f"{name} line 4: " in str(e.value) and "not UTF-8 (byte 0xe9 at column 17)" in str(e.value), str(e.value)


def test_corrupt_deflate_data_is_named_too(tmp_path):
    """Flipped bytes inside the gzip stream raise zlib.error (not OSError): it ended as a bare "Error -3 while
    decompressing data" with exit 1; now it is the index file's one line, as a truncated file is."""
    recs = [_pub(f"rsicd-{i:04d}") for i in range(200)]
    raw = bytearray(write_jsonl(tmp_path / "full.jsonl.gz", recs, gz=True).read_bytes())
    for i in range(40, len(raw) - 40, 7):
        raw[i] ^= 0x5A
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"bad.jsonl.gz: unreadable after line \d+ \((error|BadGzipFile)"):
        read_index(bad)
