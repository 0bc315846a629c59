"""What makes an RGB image and an IR image one pair: the one rule the builder and the checker share.

DiffV2IR writes 512 px outputs whatever the source size (NWPU 256 px, RSICD 224 px, ...), so a pair
of one picture at two sizes is normal and kept; the loader's centre crop and resize map both images
onto the same grid. Only a different aspect ratio means the two files do not show the same scene
framing, and that is a defect (``aspect_mismatch``).
"""

from __future__ import annotations

ASPECT_TOLERANCE = 0.01
"""Largest relative aspect-ratio difference of one picture at two sizes (rounding of odd sizes)."""


def same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when sizes ``a`` and ``b`` (width, height) have the same aspect ratio within the tolerance."""
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) <= ASPECT_TOLERANCE * max(ra, rb)
