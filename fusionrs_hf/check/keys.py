"""The compact 64-bit keys the per-row records hold for the cross-row joins (sample_id, joint_group_id,
normalized caption, SHA-256)."""

from __future__ import annotations

import hashlib

from ..text import normalize_caption


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def caption_key(text: str | None) -> int | None:
    """64-bit hash of the normalized caption; None for a missing or empty caption."""
    if not text:
        return None
    norm = normalize_caption(text)
    return _h64(norm) if norm else None


def _sha_parts(hexdigest: str) -> tuple[int, int]:
    raw = bytes.fromhex(hexdigest[:32])
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:], "little")
