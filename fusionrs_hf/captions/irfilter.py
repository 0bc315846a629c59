"""The authors' IR-aware caption filter (strict v3) and the statuses of the released IR-aware file.

The release lists IR-aware captions as ``fusionrs-iraware-caption-v1`` records with a ``status``:
``accepted_strict_v3`` (45,913 in rc4, all train) is used; ``removed_strict_v2`` and
``removed_strict_v3`` are listed for transparency and never used. A caption without a status (a
user's own IR-aware captions for new shards) goes through the same filter the authors ran last
(``refine_iraware_strict_v3.py``): the patterns below, one name each, in the authors' order.
Our own, stricter claim rules live in :mod:`.rules` and run only under ``--iraware-policy strict``.
"""

from __future__ import annotations

import re

ACCEPTED_STATUSES = frozenset({"accepted_strict_v3"})
REMOVED_STATUSES = frozenset({"removed_strict_v2", "removed_strict_v3"})
STATUSES = ACCEPTED_STATUSES | REMOVED_STATUSES
FILTERED_STATUS = "filtered_strict_v3"
"""``ir_caption_status`` of a caption that came without a status and passed :data:`STRICT_V3`."""

STRICT_V3: dict[str, re.Pattern[str]] = {
    "thermal_signature": re.compile(r"\bthermal signatures?\b", re.I),
    "heat": re.compile(r"\bheat(?:ed|ing)?\b|\bheat signatures?\b", re.I),
    "temperature": re.compile(r"\btemperatures?\b|\bhot(?:ter)?\b|\bcold(?:er)?\b|\bwarm(?!-up\b)(?:er)?\b", re.I),
    "emissivity_radiance": re.compile(r"\bemissiv\w*\b|\bradiance\b", re.I),
    "reflectivity": re.compile(r"\breflectiv\w*\b", re.I),
    "material_property": re.compile(r"\bmaterials?\b|\bmetallic\b|\bconductiv\w*\b|\bsurface propert(?:y|ies)\b",
                                    re.I),
    "rgb_color": re.compile(r"\b(?:red|green|blue|yellow|orange|purple|pink|brown|golden|gold|turquoise)\b", re.I),
}
"""The strict-v3 patterns; a caption matching any is removed (reason = the pattern's name)."""

IRAWARE_RECORD_SCHEMA: dict = {
    # Inferred from build_iraware_release_manifests.py: the release ships no schema file for it.
    "title": "FusionRS IR-aware caption record",
    "type": "object",
    "additionalProperties": False,
    "required": ["schema_version", "sample_id", "source_dataset", "split", "caption", "status", "filter_reasons"],
    "properties": {
        "schema_version": {"const": "fusionrs-iraware-caption-v1"},
        "sample_id": {"type": "string", "minLength": 1},
        "source_dataset": {"enum": ["NWPU", "RS5M", "RSICD", "RSITMD", "SkyScript"]},
        "split": {"enum": ["train", "val", "test"]},
        "caption": {"type": "string"},
        "status": {"enum": sorted(STATUSES)},
        "filter_reasons": {"type": "array"},
    },
}
IRAWARE_SCHEMA = "fusionrs-iraware-caption-v1"


def strict_v3_reasons(text: str) -> list[str]:
    """Names of the strict-v3 patterns ``text`` matches (empty: the caption passes)."""
    return [name for name, pat in STRICT_V3.items() if pat.search(text)]
