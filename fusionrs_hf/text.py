"""Caption text forms: the authors' normalisation, shared by the builder, the checker and the sample.

``fusionrs check`` calls two captions the same (a ``leak_caption`` across splits) when their
:func:`normalize_caption` forms are equal, the rc4 evaluation protocol counts texts with equal
:func:`caption_key` as positives, and the build writes that key into every row. All of them use
this one function, which is the release's own rule (``build_release_manifest.py``): NFKC, casefold,
every character that is neither a word character nor white space becomes a space, white space
collapsed. So ``"An Airport!"`` and ``"an airport"`` are one caption; ``_`` and digits are kept.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_NON_WORD = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def normalize_caption(text: str) -> str:
    """The authors' caption form: NFKC, casefold, non-word non-space -> space, whitespace collapsed."""
    t = unicodedata.normalize("NFKC", str(text or "")).casefold().strip()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", t)).strip()


def caption_key(text: str | None) -> str | None:
    """``normalized_caption_key`` of the release: SHA-256 hex of :func:`normalize_caption`, or ``None``
    when nothing is left (the release then calls the caption unusable)."""
    norm = normalize_caption(text or "")
    if not norm:
        return None
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()
