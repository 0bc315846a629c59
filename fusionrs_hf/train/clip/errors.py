"""The CLIP trainer's exceptions: each a one-line message about an unusable input or setting."""

from __future__ import annotations

from ...errors import UnusableInputError


class NotAModelError(UnusableInputError, ValueError):
    """A model folder that holds no model (exit 2 in the CLI); e.g. a run's ``--out`` folder, not its checkpoint."""


class PresetError(ValueError):
    """A preset name or an option that contradicts a preset's fixed setting (one line)."""


class CheckpointError(UnusableInputError, ValueError):
    """A checkpoint file that cannot be used: not plain weights (``torch.load(weights_only=True)`` refuses it),
    truncated or unreadable, or its ``fusionrs_clip.json`` is not valid. The message names the file; exit 2."""
