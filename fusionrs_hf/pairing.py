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

Sizes cannot tell two IR files that changed places. Their edges can: :func:`edge_signature` is an image's
structure, and :func:`swapped_pairs` finds two rows whose RGB and IR edges match across the rows far better
than within them (``pair_swapped`` in ``fusionrs check``).
"""

from __future__ import annotations

import math

import numpy as np

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


EDGE_SIZE = 32
"""Side of the edge map a pair's structure is compared on (gradients taken on the 64 px reduction)."""
SWAP_GAIN = 0.8
"""How much two rows' edge correlations must rise when their IR images trade places (see :func:`swapped_pairs`).
On the synthetic sample (512 px, 950 rows in shards of up to 100) no clean pair of rows gained more than 0.65,
and a real swap gained 1.16 at the median (95% of swaps more than 0.40): the threshold trades the swaps of
low-structure scenes for no false finding on a faithful rebuild."""
SWAP_MIN = 0.3
"""...and each of the two traded correlations must reach this: each RGB clearly shows the other row's IR scene."""


def edge_signature(rgb64: np.ndarray) -> np.ndarray:
    """The image's structure: gradient magnitude of its grey levels (64 px), 2x2-pooled to 32x32, centred and
    scaled to unit norm (float32, 1,024 values). Magnitudes, not signed gradients or intensities: DiffV2IR's
    infrared-style rendering may invert brightness (hot roads, cool water), but keeps where the edges are, so
    the dot product of two signatures is the correlation of two scenes' edges: ~0.3-0.6 for a pair, ~0 for
    two scenes."""
    g = rgb64[..., 0].astype(np.float32)  # channel sums: numpy's mean over a last axis of 3 costs 4x more
    g += rgb64[..., 1]
    g += rgb64[..., 2]
    gx, gy = np.zeros_like(g), np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1] = g[2:] - g[:-2]
    mag = np.hypot(gx, gy)
    if mag.shape == (2 * EDGE_SIZE, 2 * EDGE_SIZE):  # 2x2 sums by slicing (a reshape-mean is 4x slower)
        mag = mag[0::2, 0::2] + mag[1::2, 0::2] + mag[0::2, 1::2] + mag[1::2, 1::2]
    else:
        n = mag.shape[0] // EDGE_SIZE
        mag = mag[: n * EDGE_SIZE, : n * EDGE_SIZE].reshape(EDGE_SIZE, n, EDGE_SIZE, n).sum(axis=(1, 3))
    mag = mag.ravel()
    mag -= mag.mean()
    norm = float(np.linalg.norm(mag))
    return (mag / norm if norm > 1e-6 else np.zeros_like(mag)).astype(np.float32)


def swapped_pairs(rgb: np.ndarray, ir: np.ndarray, block: int = 1024) -> list[tuple[int, int, float, float]]:
    """Pairs of rows whose IR images belong to each other: ``(row, other, own, traded)`` for both rows of each.

    ``rgb``, ``ir``: (n, 1024) :func:`edge_signature` rows of one shard, aligned; ``S[i, j] = rgb[i] . ir[j]``.
    Rows i and j are reported when trading their IR images would raise the two correlations by
    :data:`SWAP_GAIN` (``S[i, j] + S[j, i] - S[i, i] - S[j, j]``) and each traded one is at least :data:`SWAP_MIN`.
    Both rows must gain: one RGB matching another row's IR better than its own alone is common (near-duplicate
    scenes, a textureless pair: water, sand) and is not a defect. What this finds is two IR files that changed
    places (swapped names in the IR folder); a longer cycle (an off-by-one over many rows) or the IR of a scene
    that is in no row of the shard is not found. Cost: one (n, n) product per shard, in blocks."""
    out: list[tuple[int, int, float, float]] = []
    n = len(rgb)
    if n < 2:
        return out
    own = np.einsum("ij,ij->i", rgb, ir)
    seen: set[tuple[int, int]] = set()
    for start in range(0, n, block):
        stop = min(start + block, n)
        idx = np.arange(start, stop)
        # einsum, not `@`: BLAS would start its own threads in every check worker process, and their spinning
        # took a quarter of the full check's time on 2 cores (a (1000, 1000) product here is ~0.15 s)
        sim = np.einsum("ik,jk->ij", rgb[start:stop], ir)  # S[i, :] for the block's rows i
        simt = np.einsum("ik,jk->ij", ir[start:stop], rgb)  # S[:, i]
        gain = sim + simt - own[idx, None] - own[None, :]
        gain[idx - start, idx] = -np.inf
        ok = (gain >= SWAP_GAIN) & (sim >= SWAP_MIN) & (simt >= SWAP_MIN)
        for a, j in zip(*np.nonzero(ok), strict=True):
            i = int(idx[a])
            pair = (min(i, int(j)), max(i, int(j)))
            if pair in seen:
                continue
            seen.add(pair)
            out.append((i, int(j), float(own[i]), float(sim[a, j])))
            out.append((int(j), i, float(own[j]), float(simt[a, j])))
    return out
