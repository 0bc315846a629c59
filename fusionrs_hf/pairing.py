"""What makes an RGB image and an IR image one pair: the one rule the builder and the checker share.

DiffV2IR does not keep the source size. Its inference (``infer.py`` of the DiffV2IR repository; the
release runs it at ``resolution`` 512, ``dataset/configs/diffv2ir_generation.json``) scales the
longer side to about the resolution, rounds both sides to multiples of 64 and centre-crops the
picture to that size (``ImageOps.fit``). So an NWPU 256 px source gives a 512 px IR image, and a
1000x700 RS5M source a 512x384 one: one picture, the same centre, a slightly different framing.
The release keeps every such pair, and the loader's centre crop of the shorter side maps both
images onto the same grid. A pair is therefore consistent when the IR image has the RGB image's
aspect ratio, or exactly the size DiffV2IR makes from the RGB size (:func:`diffv2ir_size`);
anything else means the two files are not one scene (``aspect_mismatch``).
"""

from __future__ import annotations

import math

ASPECT_TOLERANCE = 0.01
"""Largest relative aspect-ratio difference of one picture at two sizes (rounding of odd sizes)."""

DIFFV2IR_RESOLUTION = 512
"""``settings.resolution`` of the release's DiffV2IR run (``dataset/configs/diffv2ir_generation.json``)."""


def same_aspect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when sizes ``a`` and ``b`` (width, height) have the same aspect ratio within the tolerance."""
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) <= ASPECT_TOLERANCE * max(ra, rb)


def diffv2ir_size(rgb: tuple[int, int], resolution: int = DIFFV2IR_RESOLUTION) -> tuple[int, int]:
    """The (width, height) DiffV2IR's inference gives for an RGB image of size ``rgb``.

    Its rule, step by step: the factor that brings the longer side to ``resolution``, raised so the
    shorter side becomes the next multiple of 64, then both sides scaled and floored to multiples of 64.
    """
    width, height = rgb
    factor = resolution / max(width, height)
    factor = math.ceil(min(width, height) * factor / 64) * 64 / min(width, height)
    return int((width * factor) // 64) * 64, int((height * factor) // 64) * 64


def sizes_pair(rgb: tuple[int, int], ir: tuple[int, int]) -> bool:
    """True when an IR image of size ``ir`` can be the translation of an RGB image of size ``rgb``."""
    return same_aspect(rgb, ir) or tuple(ir) == diffv2ir_size(rgb)
