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


def refuse_worker_options(num_workers: int, kw: dict) -> None:
    """What torch's DataLoader refuses without workers, refused by every loader here alike (dropped without a
    word, it hid a mistake): ``persistent_workers=True`` and a ``prefetch_factor``."""
    if num_workers:
        return
    if kw.get("persistent_workers"):
        raise ValueError("persistent_workers=True needs num_workers > 0 (there are no workers to keep)")
    if kw.get("prefetch_factor") is not None:
        raise ValueError("prefetch_factor needs num_workers > 0 (without workers nothing is prefetched); "
                         "leave it out, or set num_workers")
