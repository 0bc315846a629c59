"""The authors' record schemas (``dataset/schemas/`` of the release), as data.

Transcribed from ``fusionrs-public-record-v1.schema.json`` and ``fusionrs-record-v1.schema.json``
of release rc4-20260727 (both ``additionalProperties: false``, every field required). A record
variant is one entry of :data:`RECORD_SCHEMAS`, keyed by its ``schema_version`` constant; the
index reader picks the schema by that field and validates the whole line against it.
"""

from __future__ import annotations

import copy
import functools

SOURCE_ENUM = ["NWPU", "RS5M", "RSICD", "RSITMD", "SkyScript"]
SPLIT_ENUM = ["train", "val", "test"]

_RELATIVE_PATH = {
    "type": "string",
    "minLength": 1,
    # no absolute path, no Windows drive, no ".." segment: a locator can never leave its root
    "not": {"anyOf": [{"pattern": r"^(?:/|[A-Za-z]:\\)"}, {"pattern": r"(?:^|/)\.\.(?:/|$)"}]},
}
_STR = {"type": "string", "minLength": 1}
_BOOL = {"type": "boolean"}
_GROUP = {"type": "string", "pattern": r"^joint-group:[0-9a-f]{24}$"}

PUBLIC_SCHEMA = "fusionrs-public-index-v1"
INTERNAL_SCHEMA = "fusionrs-index-v1"

_SHARED: dict = {
    # the properties both variants have, with the same definition in both published files
    "sample_id": _STR,
    "source_dataset": {"enum": SOURCE_ENUM},
    "source_record_id": _STR,
    "source_locator": _RELATIVE_PATH,
    "split": {"enum": SPLIT_ENUM},
    "joint_group_id": _GROUP,
    "phash4_component_id": _STR,
    "canonical_component_representative": _STR,
    "is_canonical_component_representative": _BOOL,
    "is_eval_representative": _BOOL,
    "prior_reused_protected": _BOOL,
}


def _translation(output_key: dict, redistribution: dict) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["model", "output_key", "redistribution"],
        "properties": {"model": {"const": "DiffV2IR"}, "output_key": output_key, "redistribution": redistribution},
    }


PUBLIC_RECORD: dict = {
    "title": "FusionRS public redacted index record",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version", "sample_id", "source_dataset", "source_record_id", "source_locator",
        "source_rights_code", "split", "joint_group_id", "phash4_component_id",
        "canonical_component_representative", "is_canonical_component_representative",
        "is_eval_representative", "caption_supervision_available_upstream", "vlm_train_identity",
        "prior_reused_protected", "translation",
    ],
    "properties": {
        "schema_version": {"const": PUBLIC_SCHEMA},
        **_SHARED,
        "source_rights_code": _STR,
        "caption_supervision_available_upstream": _BOOL,
        "vlm_train_identity": _BOOL,
        # the public schema leaves output_key a plain non-empty string; our reader adds the path rule
        "translation": _translation(_STR, _STR),
    },
}

INTERNAL_RECORD: dict = {
    "title": "FusionRS index record",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version", "sample_id", "source_dataset", "source_record_id", "source_locator",
        "source_rights_note", "split", "class_name", "caption", "caption_usable", "normalized_caption_key",
        "joint_group_id", "phash4_component_id", "canonical_component_representative",
        "is_canonical_component_representative", "is_eval_representative", "vlm_train_used",
        "prior_reused_protected", "translation",
    ],
    "properties": {
        "schema_version": {"const": INTERNAL_SCHEMA},
        **_SHARED,
        "source_rights_note": _STR,
        "class_name": {"type": ["string", "null"]},
        "caption": {"type": ["string", "null"]},
        "caption_usable": _BOOL,
        "normalized_caption_key": {"type": ["string", "null"], "pattern": r"^[0-9a-f]{64}$"},
        "vlm_train_used": _BOOL,
        "translation": _translation(_RELATIVE_PATH, {"const": "conditional_on_upstream_rights"}),
    },
    "allOf": [
        # only NWPU records carry a scene class
        {"if": {"properties": {"source_dataset": {"not": {"const": "NWPU"}}}},
         "then": {"properties": {"class_name": {"const": None}}}},
    ],
}

RECORD_SCHEMAS: dict[str, dict] = {PUBLIC_SCHEMA: PUBLIC_RECORD, INTERNAL_SCHEMA: INTERNAL_RECORD}
"""``schema_version`` -> the schema a line of that variant must satisfy."""

RIGHTS_FIELD: dict[str, str] = {PUBLIC_SCHEMA: "source_rights_code", INTERNAL_SCHEMA: "source_rights_note"}
VLM_FIELD: dict[str, str] = {PUBLIC_SCHEMA: "vlm_train_identity", INTERNAL_SCHEMA: "vlm_train_used"}
"""Fields the two variants spell differently; both land in one shard column."""


MEASURED_IR_MODEL = "measured"
"""``translation.model`` of a repo's own source whose IR comes from a real sensor (not in the release)."""


@functools.cache
def schema_for(version: str, sources: tuple[str, ...] | None = None) -> dict:
    """The record schema of ``version``, with the source enum grown by a repo's own sources.

    Only index lines that ``fusionrs build --from-folder`` writes for a repo's own source use the grown
    form; the release's five sources and everything else are checked exactly as published.
    """
    base = RECORD_SCHEMAS[version]
    extra = [x for x in (sources or ()) if x not in SOURCE_ENUM]
    if not extra:
        return base
    out = copy.deepcopy(base)
    out["properties"]["source_dataset"] = {"enum": [*SOURCE_ENUM, *extra]}
    out["properties"]["translation"]["properties"]["model"] = {"enum": ["DiffV2IR", MEASURED_IR_MODEL]}
    return out
