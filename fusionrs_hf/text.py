"""Caption text forms shared by the checker and the sample generator.

``fusionrs check`` calls two captions the same (a ``leak_caption`` across splits) when their
:func:`normalize_caption` forms are equal; anything that must keep captions apart across splits
(the embedded sample in :mod:`fusionrs_hf.demo`) uses this same function, so the two can never
disagree on what "the same caption" means.
"""

from __future__ import annotations

import unicodedata


class _PunctToSpace(dict):
    """``str.translate`` table mapping every Unicode punctuation character (category P*) to a space.

    Filled lazily per character seen, so no table over all of Unicode is built up front.
    """

    def __missing__(self, ch: int) -> int:
        val = 32 if unicodedata.category(chr(ch)).startswith("P") else ch
        self[ch] = val
        return val


_PUNCT = _PunctToSpace()


def normalize_caption(text: str) -> str:
    """The caption form used for leakage: NFKC, casefold, punctuation -> space, whitespace collapsed.

    Punctuation becomes a space (not nothing) so "river,road" and "river, road" agree.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().translate(_PUNCT).split())
