"""The one definition of a FusionRS row.

Every shard, the card's ``dataset_info``, the loading script, the checker and the torch
streaming code read the column set from here, so a field is added or renamed in one place.
The order of ``FIELDS`` is the column order in every shard.

Field types are written as short kind strings and turned into ``datasets`` features on first use
(:data:`FEATURES`, ``Field.feature``): the torch streaming path needs only the names, and not
importing ``datasets`` (and pandas with it) keeps every DataLoader worker ~70 MB lighter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache

import pyarrow as pa

SOURCES: tuple[str, ...] = ("RS5M", "SkyScript", "NWPU", "RSICD", "RSITMD")
"""The five upstream datasets, spelled as in the paper and the official index."""

SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
JOINT_GROUP_RE = re.compile(r"^joint-group:[0-9a-f]{24}\Z")


def joint_group_id_for(key: str) -> str:
    """A ``joint_group_id`` (matching :data:`JOINT_GROUP_RE`) for a row the official index does not group.

    Rows built from a user's own folder and the embedded sample get one group per key (their
    sample id), derived here so every producer spells the id the same way.
    """
    return "joint-group:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


KINDS: tuple[str, ...] = ("string", "bool", "image", "list<string>")
"""Field kinds: a ``datasets`` ``Value("string")``, a ``Value("bool")``, an ``Image()`` and a
``List(Value("string"))``."""


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    """One of :data:`KINDS`; also the type name shown in the field table."""
    nullable: bool
    doc: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")

    @property
    def feature(self):
        """The ``datasets`` feature of this field."""
        return _feature(self.kind)


@cache
def _feature(kind: str):
    from datasets import Image, List, Value

    if kind == "image":
        return Image()
    if kind == "list<string>":
        return List(Value("string"))
    return Value(kind)  # "string" / "bool"


FIELDS: tuple[Field, ...] = (
    Field("sample_id", "string", False,
          "Stable FusionRS id from the official index; unique across all splits and sources."),
    Field("source", "string", False,
          "Upstream dataset: one of RS5M, SkyScript, NWPU, RSICD, RSITMD."),
    Field("source_record_id", "string", True,
          "The index's `source_record_id`. In rc4 it is the FusionRS `sample_id` itself (the authors' "
          "manifest builder writes it so), not an upstream id: the image in the source copy is found by the "
          "index's `source_locator`."),
    Field("rgb", "image", False,
          "The source RGB image, bytes exactly as in the source dataset (JPEGs are never re-encoded). It may "
          "be smaller than `ir` (e.g. 256 px vs DiffV2IR's 512 px); `ir` has its aspect ratio, or the size "
          "DiffV2IR makes of it (sides rounded to multiples of 64, centre-cropped)."),
    Field("ir", "image", False,
          "Infrared-style image translated from `rgb` by DiffV2IR. Synthetic: not a thermal measurement. "
          "Stored as the translator wrote it: DiffV2IR's 8-bit RGB-mode PNG (the index's "
          "`translation.output_key`, `<source>/<sample_id>.png`; a JPEG is kept as it is), its channels "
          "gray-looking but not forced identical."),
    Field("caption", "string", False,
          "The source caption under the build's caption policy: `rc4` (default) keeps it as the release has it "
          "(usable when non-empty after normalisation); `paper` applies the paper's §3.4 cleaning and may use "
          "the class-name fallback (see `caption_origin`)."),
    Field("all_captions", "list<string>", True,
          "Every usable source caption of the image when the build kept them all; null otherwise."),
    Field("caption_origin", "string", False,
          "Where `caption` comes from: `source` (an upstream caption) or `class_name` (fallback)."),
    Field("ir_caption", "string", True,
          "IR-aware caption describing what the infrared-style image shows; null outside the IR-aware subset."),
    Field("class_name", "string", True,
          "Scene class for NWPU-RESISC45 / NWPU-Captions rows (e.g. `airport`); null for the other FusionRS "
          "sources, as in the release's record schema (a repo's own source may name classes)."),
    Field("joint_group_id", "string", True,
          "Split-construction group (`joint-group:` + 24 hex). Rows of one group never span two splits."),
    Field("rights_code", "string", True,
          "Redistribution-rights code of the source item, e.g. `skyscript-naip-public-domain` "
          "(the index's `source_rights_code`; for the internal variant, derived from source and locator as "
          "the authors' redaction does)."),
    Field("translation_output_key", "string", True,
          "The index's `translation.output_key`: where the DiffV2IR output of this row lives below the IR root."),
    Field("phash4_component_id", "string", True,
          "Release flag: the RGB/IR pHash (radius 4) component of the row (`singleton_<sample_id>` when alone)."),
    Field("canonical_component_representative", "string", True,
          "Release flag: the sample id that represents this row's component."),
    Field("is_canonical_component_representative", "bool", True,
          "Release flag: this row is its component's canonical representative."),
    Field("is_eval_representative", "bool", True,
          "Release flag: this row is scored by the rc4 evaluation protocol (one per joint component in "
          "validation/test; never in train)."),
    Field("caption_supervision_available_upstream", "bool", True,
          "Release flag (public index): the source provides caption supervision for this record."),
    Field("vlm_train_identity", "bool", True,
          "Release flag: the row was used to train the authors' VLM (internal variant: `vlm_train_used`); "
          "such rows are forced into train."),
    Field("prior_reused_protected", "bool", True,
          "Release flag: protected from reuse in evaluation (forced into train)."),
    Field("normalized_caption_key", "string", True,
          "SHA-256 of the caption under the authors' normalisation; equal keys are the same caption "
          "for leakage checks and are positives for each other in the rc4 retrieval protocol."),
    Field("ir_caption_status", "string", True,
          "Status of the IR-aware caption in its file (e.g. `accepted_strict_v3`), or `filtered_strict_v3` for "
          "a caption of a file without statuses that passed the authors' strict-v3 filter; null when `ir_caption` "
          "is null."),
    Field("rgb_sha256", "string", False, "SHA-256 (hex) of the stored `rgb` bytes."),
    Field("ir_sha256", "string", False, "SHA-256 (hex) of the stored `ir` bytes."),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
IMAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind == "image")
NON_NULLABLE: frozenset[str] = frozenset(f.name for f in FIELDS if not f.nullable)
SHA256_FIELDS: dict[str, str] = {name: f"{name}_sha256" for name in IMAGE_FIELDS}
"""Image column -> the column holding the SHA-256 of its bytes (``rgb`` -> ``rgb_sha256``)."""
assert set(SHA256_FIELDS.values()) <= set(FIELD_NAMES), "every image field needs its *_sha256 field"
CAPTION_ORIGINS = ("source", "class_name")
RELEASE_FIELDS: tuple[str, ...] = (
    "translation_output_key", "phash4_component_id", "canonical_component_representative",
    "is_canonical_component_representative", "is_eval_representative", "caption_supervision_available_upstream",
    "vlm_train_identity", "prior_reused_protected",
)
"""Per-record facts of the official index copied into every row as they are (null for rows that do
not come from an official index)."""
assert set(RELEASE_FIELDS) <= set(FIELD_NAMES)


@cache
def features():
    """The ``datasets.Features`` of a FusionRS row (also importable as ``FEATURES``)."""
    from datasets import Features

    return Features({f.name: f.feature for f in FIELDS})


def __getattr__(name: str):
    # ``FEATURES`` is built on first access (PEP 562), so importing this module stays datasets-free.
    if name == "FEATURES":
        return features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def arrow_schema() -> pa.Schema:
    """The Arrow schema of a shard, with the `huggingface` metadata key that makes images decode as Image."""
    import json

    feats = features()
    schema = feats.arrow_schema
    meta = {"huggingface": json.dumps({"info": {"features": feats.to_dict()}})}
    return schema.with_metadata(meta)


class SchemaError(ValueError):
    """A table or row does not match the FusionRS schema; the message names the column (and row)."""


def validate_table(table: pa.Table, where: str = "table", sources: tuple[str, ...] = SOURCES) -> None:
    """Reject a table whose columns are missing, extra or mistyped, naming the column.

    Types are compared on the storage level, ignoring field metadata, because that is what
    a parquet reader will see.
    """
    expected = features().arrow_schema
    names = set(table.schema.names)
    for field in expected:
        if field.name not in names:
            raise SchemaError(f"{where}: missing column {field.name!r}")
        got = table.schema.field(field.name).type
        if not got.equals(field.type):
            raise SchemaError(f"{where}: column {field.name!r} has type {got}, expected {field.type}")
    extra = sorted(names - set(FIELD_NAMES))
    if extra:
        raise SchemaError(f"{where}: unexpected column(s) {', '.join(map(repr, extra))}")
    for name in NON_NULLABLE:
        col = table.column(name)
        if col.null_count:
            idx = col.is_null().to_pylist().index(True)
            raise SchemaError(f"{where}: column {name!r} is null at row {idx} ({_sid(table, idx)})")
    srcs = set(table.column("source").to_pylist()) - set(sources)
    if srcs:
        raise SchemaError(f"{where}: column 'source' has unknown value(s) {sorted(srcs)}; expected one of {sources} "
                          "(a repo's own sources are declared in fusionrs_sources.json)")


def _sid(table: pa.Table, idx: int) -> str:
    try:
        return f"sample_id={table.column('sample_id')[idx].as_py()!r}"
    except Exception:  # noqa: BLE001 - only used to decorate an error message
        return "sample_id unknown"


def field_docs_markdown() -> str:
    """A Markdown table of the fields, used by the card and the README."""
    lines = ["| field | type | nullable | meaning |", "|---|---|---|---|"]
    for f in FIELDS:
        kind = "Image" if f.kind == "image" else f.kind
        lines.append(f"| `{f.name}` | {kind} | {'yes' if f.nullable else 'no'} | {f.doc} |")
    return "\n".join(lines)
