"""One decode of an image: its size, infrared-style channel spread, pHash and edge signature."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..limits import DEFAULT_MAX_PIXELS, open_image
from ..pairing import edge_signature
from ..phash import phash

IR_SPREAD_THRESHOLD = 16.0
"""Largest mean channel spread (0-255 levels) an ``ir`` image may have.

The statistic is ``mean over pixels of (max(R, G, B) - min(R, G, B))`` on the image reduced to
64x64 (box filter; JPEGs are decoded at reduced scale first). DiffV2IR output is gray-looking
RGB with small per-channel differences; on ``fusionrs_hf.scenes`` output IR images measure
0-7 and RGB images 34-75, so 16 separates them with margin on both sides.
"""
STAT_SIZE = 64
"""Side of the reduced image the channel spread is measured on (the pHash makes its own 32 px input)."""


@dataclass(frozen=True)
class ImageStats:
    size: tuple[int, int]
    spread: float
    phash: int
    edges: np.ndarray | None = None
    """:func:`~fusionrs_hf.pairing.edge_signature` of the image (its structure, for ``pair_swapped``)."""


def inspect_image(data: bytes) -> ImageStats:
    """Decode once and derive size, channel spread and pHash from that one decode.

    The decode is a full one, not libjpeg's reduced-scale one, and the pHash is the authors' own
    (:mod:`fusionrs_hf.phash`), which resizes the full image: a hash of a reduced decode moves by a few bits,
    enough to flag pairs at radius 4 that the release did not group. Both columns: the release's split
    (``dataset/configs/split_v3.json``, ``joint_grouping``) groups RGB images and infrared-style images alike
    by pHash64 within Hamming distance 4. Raises on undecodable bytes.
    """
    from PIL import Image

    im = open_image(data, DEFAULT_MAX_PIXELS)  # what no build stores and no loader decodes is refused unread
    with im:
        size = im.size
        im.load()
        ph = phash(im)
        rgb = im if im.mode == "RGB" else im.convert("RGB")
        k = min(size) // STAT_SIZE
        if k > 1:  # box-average by an integer factor first: a fraction of the cost of a BOX resize
            rgb = rgb.reduce(k)
        if rgb.size != (STAT_SIZE, STAT_SIZE):
            rgb = rgb.resize((STAT_SIZE, STAT_SIZE), Image.Resampling.BOX)
    a = np.asarray(rgb)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    spread = float(np.mean(np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)))
    return ImageStats(size, spread, ph, edge_signature(a))
