"""Text that came from data (a sample id, a file name, a server's error body), made safe to show on a terminal.

A repo is other people's data: a ``sample_id`` holding a newline forged a line of ``fusionrs check``'s report
("OK: no findings"), and an ANSI escape could erase the real ones. :func:`printable` escapes what a terminal
would act on, so each finding stays one line and reads as what it is. Used where such text is printed: the
CLI's error line, the check summary, the loader's warnings. ``--json`` output needs nothing: JSON escapes them.
"""

from __future__ import annotations

import re

_ACTIVE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")
"""C0 controls but tab, DEL, C1 controls (ESC and CSI start terminal sequences), line and paragraph separators,
the bidirectional marks and overrides that reorder what a line shows, and lone surrogates: a file name that is
not UTF-8 arrives as ``\\udcXX`` (surrogateescape), which a UTF-8 stdout refuses or writes as the raw byte
(0x9B: an 8-bit CSI)."""


def _escape(m: re.Match) -> str:
    c = ord(m[0])
    if 0xDC80 <= c <= 0xDCFF:  # surrogateescape's stand-in for the undecodable byte c - 0xDC00
        return f"\\x{c - 0xDC00:02x}"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` with every control, separator and bidi character written as an escape (``\\n`` -> ``\\x0a``)."""
    return _ACTIVE.sub(_escape, text)
