"""64-bit perceptual hash (DCT pHash) and Hamming-radius search, in numpy only.

Why a pHash: FusionRS builds its splits so that images whose pHash differ in at most 4 bits
never land in different splits (a re-encoded or slightly re-scaled copy keeps its low DCT
frequencies, so its hash moves by a few bits at most). ``fusionrs check`` re-tests that rule
on a finished repo, so it needs the same kind of hash and a search that finds every pair
within the radius without comparing all pairs.

The hash is the authors' (``phash64`` of ``code/benchmark/audit_fusionrs_dedup.py`` in the release,
which built the rc4 ``phash4_`` components): the image converted to grayscale (PIL ``convert("L")``)
and Lanczos-resized to 32x32 from its full size, 2-D DCT-II (orthonormal), the 8x8 lowest frequencies,
one bit per coefficient: ``coefficient > median of the 63 coefficients after (0, 0)`` (the DC term is
left out of the median but keeps its bit). Bit 63 is coefficient (0, 0), rows first. A hash of another
recipe (another resize, the median of all 64) moves by a few bits on the same picture, so near-duplicate
findings at radius 4 would not be the pairs the authors grouped. The DCT is a matrix product with a
fixed 32x32 basis (``D @ X @ D.T``), so scipy is not needed; it is computed in float64 where the
authors' ``scipy.fft.dctn`` runs in float32, which can only matter for coefficients within float32
rounding of the median (flat images).

The search (:func:`near_pairs`) uses the pigeonhole principle: cut the 64 bits into
``radius + 1`` bands; two hashes within Hamming distance ``radius`` agree exactly on at least
one band. Candidates are the pairs that share a band value (found by sorting on the band,
vectorised), and each candidate is verified with a popcount.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

HASH_SIZE = 8
"""The 8x8 low-frequency block: 64 bits."""
IMG_SIZE = 32
"""Side of the grayscale image the DCT runs on."""
DEFAULT_RADIUS = 4
"""Hamming distance at or below which two images count as near-duplicates (the FusionRS split rule)."""


@cache
def dct_matrix(n: int = IMG_SIZE) -> np.ndarray:
    """Orthonormal DCT-II basis ``D`` (n x n): ``D @ x`` is the DCT of a column vector ``x``."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0, :] = np.sqrt(1.0 / n)
    return d


def dct2(x: np.ndarray) -> np.ndarray:
    """2-D orthonormal DCT-II of a square array (same as ``scipy.fft.dctn(x, norm="ortho")``)."""
    d = dct_matrix(x.shape[0])
    return d @ x @ d.T


def phash_array(gray: np.ndarray) -> int:
    """pHash of a 32x32 grayscale array (any real dtype) as an unsigned 64-bit int.

    Only the 8 lowest DCT rows/columns are needed, so the product uses the first 8 basis
    rows (``D[:8] @ X @ D[:8].T``): the same numbers as the full DCT's corner, 4x less work.
    """
    if gray.shape != (IMG_SIZE, IMG_SIZE):
        raise ValueError(f"expected a {IMG_SIZE}x{IMG_SIZE} array, got {gray.shape}")
    d8 = dct_matrix(IMG_SIZE)[:HASH_SIZE]
    low = (d8 @ gray.astype(np.float64) @ d8.T).ravel()
    threshold = np.partition(low[1:], 31)[31]  # the median of the 63 after the DC term, as the authors'
    return int.from_bytes(np.packbits(low > threshold).tobytes(), "big")


def gray32(img: Image.Image) -> np.ndarray:
    """The 32x32 grayscale input of the hash, exactly as the authors make it: ``convert("L")`` of the image
    as decoded (full size, its own mode), then a Lanczos resize to 32x32 (a non-square image is squashed)."""
    return np.asarray(img.convert("L").resize((IMG_SIZE, IMG_SIZE), Image.Resampling.LANCZOS), np.float64)


def phash(img: Image.Image) -> int:
    """pHash of a PIL image (any mode, any size): the release's ``phash64``."""
    return phash_array(gray32(img))


def hamming(a: int | np.ndarray, b: int | np.ndarray) -> int | np.ndarray:
    """Number of differing bits between 64-bit hashes (scalars or arrays)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    out = np.bitwise_count(x)
    return int(out) if out.ndim == 0 else out.astype(np.int64)


def bands(radius: int = DEFAULT_RADIUS, bits: int = 64) -> list[tuple[int, int]]:
    """``radius + 1`` (shift, width) bands covering ``bits`` bits, widths differing by at most one."""
    n = radius + 1
    widths = [bits // n + (1 if i < bits % n else 0) for i in range(n)]
    out, shift = [], bits
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


_WINDOW = 32
"""Neighbour offsets compared one vectorised step at a time; buckets larger than this go block-wise."""
_BLOCK = (512, 4096)


def _bucket_pairs(ks, hs, gs, order, keys, radius, found_i, found_j) -> None:
    """All pairs within radius inside each bucket of sorted band values ``keys`` (big buckets only)."""
    for key in keys:
        lo, hi = np.searchsorted(ks, key, "left"), np.searchsorted(ks, key, "right")
        for a0 in range(lo, hi, _BLOCK[0]):
            a1 = min(a0 + _BLOCK[0], hi)
            for b0 in range(a0, hi, _BLOCK[1]):
                b1 = min(b0 + _BLOCK[1], hi)
                ok = np.bitwise_count(hs[a0:a1, None] ^ hs[None, b0:b1]) <= radius
                ok &= np.arange(a0, a1)[:, None] < np.arange(b0, b1)[None, :]
                if gs is not None:
                    ok &= gs[a0:a1, None] != gs[None, b0:b1]
                ia, ib = np.nonzero(ok)
                if ia.size:
                    a, b = order[ia + a0], order[ib + b0]
                    found_i.append(np.minimum(a, b))
                    found_j.append(np.maximum(a, b))


def near_pairs(hashes: np.ndarray, radius: int = DEFAULT_RADIUS,
               groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, with ``hamming(hashes[i], hashes[j]) <= radius``.

    ``groups`` (optional int array): only pairs whose groups differ are returned (for the
    checker: pairs across splits). Returns ``(i, j, distance)`` arrays, each pair once.

    Work is the number of pairs that share a band value, not all pairs: per band the hashes
    are sorted by band value and compared with their next, second-next, ... neighbour while
    the band value still matches. Exact duplicates are best collapsed by the caller first
    (a bucket of ``k`` identical hashes costs ``k**2 / 2`` comparisons).
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = h.shape[0]
    g = None if groups is None else np.asarray(groups)
    found_i, found_j = [], []
    for shift, width in bands(radius):
        key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        ks, hs = key[order], h[order]
        gs = None if g is None else g[order]
        active = np.arange(n - 1)
        d = 1
        while active.size:
            if d > _WINDOW:  # only big buckets are left: compare them block-wise instead
                _bucket_pairs(ks, hs, gs, order, np.unique(ks[active]), radius, found_i, found_j)
                break
            active = active[ks[active] == ks[active + d]]
            if not active.size:
                break
            other = active + d
            ok = np.bitwise_count(hs[active] ^ hs[other]) <= radius
            if gs is not None:
                ok &= gs[active] != gs[other]
            if ok.any():
                a, b = order[active[ok]], order[other[ok]]
                found_i.append(np.minimum(a, b))
                found_j.append(np.maximum(a, b))
            d += 1
            active = active[active + d < n]
    if not found_i:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    pairs = np.unique(np.stack([np.concatenate(found_i), np.concatenate(found_j)], axis=1), axis=0)
    i, j = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    return i, j, np.bitwise_count(h[i] ^ h[j]).astype(np.int64)
