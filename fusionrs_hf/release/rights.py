"""The release's rights codes, derived where an index carries only a free-text note.

The public index names each record's redistribution rights by code (``source_rights_code``); the
authors' internal variant has a free-text ``source_rights_note`` per source instead. Their redaction
script (``code/dataset/scripts/build_public_redacted_index.py``) makes the code from the source, and
for SkyScript from the two-character sub-source tag in the locator's file name (``..._US_...``). A
build from the internal variant uses the same rule, so its rows carry the codes a build from the
public index carries, and the release's rights counts can be checked on either.
"""

from __future__ import annotations

import re

SOURCE_RIGHTS: dict[str, str] = {
    "RS5M": "rs5m-item-rights-unconfirmed",
    "NWPU": "nwpu-captions-text-unlicensed",
    "RSICD": "rsicd-redistribution-license-not-located",
    "RSITMD": "rsitmd-redistribution-license-not-located",
}
"""Sources with one rights code for every record."""

SKYSCRIPT_RIGHTS: dict[str, str] = {
    "US": "skyscript-naip-public-domain",
    "CH": "skyscript-swissimage-source-reference",
    "DE": "skyscript-brandenburg-dl-de-by-2.0",
    "S2": "skyscript-sentinel-copernicus-notice",
    "FI": "skyscript-finland-nls-cc-by-4.0",
    "ES": "skyscript-pnoa-cc-by-4.0",
    "P3": "skyscript-skysat-rgb-cc-by-4.0",
    "L8": "skyscript-landsat8-public-domain",
    "P5": "skyscript-skysat-multispectral-cc-by-4.0",
    "L9": "skyscript-landsat9-public-domain",
}
"""SkyScript sub-source tag (in the locator's file name) -> rights code."""

SKYSCRIPT_TAG = re.compile(r"_([A-Z0-9]{2})_[^/]*\Z")
"""The sub-source tag: the first ``_XX_`` (two capitals or digits) in the locator's file name, as the authors search it."""


def rights_code(source: str, locator: str) -> str:
    """The release's rights code of a record; ``ValueError`` (saying why) when the rule gives none."""
    if source != "SkyScript":
        try:
            return SOURCE_RIGHTS[source]
        except KeyError:
            raise ValueError(f"no rights code for source {source!r}") from None
    m = SKYSCRIPT_TAG.search(locator)
    if not m:
        raise ValueError(f"cannot tell the SkyScript sub-source of {locator!r} (no _XX_ tag in the file name)")
    if m.group(1) not in SKYSCRIPT_RIGHTS:
        raise ValueError(f"unknown SkyScript sub-source {m.group(1)!r} in {locator!r}; known: "
                         + ", ".join(SKYSCRIPT_RIGHTS))
    return SKYSCRIPT_RIGHTS[m.group(1)]
