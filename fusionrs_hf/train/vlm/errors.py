"""The VLM trainer's exceptions: a one-line message about an unusable setting."""

from __future__ import annotations


class PresetError(ValueError):
    """A preset name or an option that contradicts a preset's setting (one line)."""
