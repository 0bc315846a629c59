"""Limits that every writer and reader of FusionRS images applies alike (the build, ``check`` and the loaders),
defined once here so that a build never stores what a loader would refuse. No heavy imports: the CLI's build
path reads this without loading torch."""

from __future__ import annotations

import re

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height) a build stores and a loader decodes: ~7,000² px, far above any FusionRS
source. A header claiming more (a 65,535² JPEG is a few hundred bytes) is refused before any pixel is decoded:
such a file would cost gigabytes in every reader."""


def too_many_pixels(width: int | None, height: int | None, limit: int, pixels: int | None = None) -> str:
    """The one wording of a refused image, for the loader's :class:`~fusionrs_hf.decode.DecodeError` and
    ``check``'s finding alike."""
    n = pixels if pixels is not None else (width or 0) * (height or 0)
    what = f"{width}x{height} = {n:,}" if width and height else f"{n:,}"
    return f"image header says {what} pixels, more than the limit {limit:,}; not decoded"


def bomb_pixels(error: Exception) -> int | None:
    """The pixel count in PIL's ``DecompressionBombError`` (raised at open from twice PIL's own limit; the
    error carries no size of its own)."""
    m = re.search(r"\((\d+) pixels\)", str(error))
    return int(m[1]) if m else None
