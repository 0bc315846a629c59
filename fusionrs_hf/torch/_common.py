"""Shared by the parts of :mod:`fusionrs_hf.torch`: its logger and constants."""

from __future__ import annotations

import logging

from ..secrets import SCRUB_FILTER

logger = logging.getLogger("fusionrs_hf.torch")
logger.addFilter(SCRUB_FILTER)

BATCH_KEYS = ("rgb", "ir", "caption", "ir_caption", "sample_id", "source")
ON_ERROR = ("raise", "skip")
STATE_FORMAT = "fusionrs-stream/1"
_MAX_COUNTER_SLOTS = 256
