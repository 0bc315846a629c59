"""FusionRS on Hugging Face `datasets`: RGB–infrared–text remote-sensing triplets.

``fusionrs_hf.load("iraware", split="train", streaming=True)`` is the short way in; everything
else (schema, layout, card, build, check, push, torch streaming, trainers) lives in one module each.
"""

from __future__ import annotations

import os

from .layout import CONFIG_NAMES, DEFAULT_REPO_ID, SPLITS
from .schema import FIELD_NAMES, SOURCES

__version__ = "0.1.0"
__all__ = ["load", "repo_id", "FEATURES", "FIELD_NAMES", "SOURCES", "SPLITS", "CONFIG_NAMES", "__version__"]


def __getattr__(name: str):
    # FEATURES needs `datasets`; built on first access so `import fusionrs_hf.torch` stays light.
    if name == "FEATURES":
        from .schema import features

        return features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def repo_id(repo: str | None = None) -> str:
    """The repo to read: the argument, else ``$FUSIONRS_REPO``, else :data:`layout.DEFAULT_REPO_ID`."""
    return repo or os.environ.get("FUSIONRS_REPO") or DEFAULT_REPO_ID


def load(config: str = "default", split: str | None = None, *, streaming: bool = False,
         repo: str | None = None, revision: str | None = None, **kwargs):
    """``datasets.load_dataset`` on a FusionRS repo (a Hub id or a local folder), config checked first.

    Returns what ``load_dataset`` returns: a (Iterable)DatasetDict when ``split`` is None,
    else one (Iterable)Dataset. Extra keyword arguments go to ``load_dataset`` unchanged.
    """
    from datasets import load_dataset

    if config not in CONFIG_NAMES:
        raise ValueError(f"unknown FusionRS config {config!r}; expected one of {', '.join(CONFIG_NAMES)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return load_dataset(repo_id(repo), config, split=split, streaming=streaming, revision=revision, **kwargs)
