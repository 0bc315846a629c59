"""Which splits each config of a FusionRS repo actually has, and what a consumer does when one is missing.

A config's split exists when at least one shard matches its globs (:func:`fusionrs_hf.layout.config_files`
over :func:`fusionrs_hf.layout.list_shards`); the card leaves such a split out of ``configs``
for the same reason, so stock ``datasets`` sees the same set. Real releases do miss splits: in
rc4 (2026-07-27) every accepted IR-aware caption is in train, so ``iraware`` has ONLY a train
split, while ``default`` has train, validation and test.

The rule every consumer (``train_clip``, ``train_vlm``, :mod:`fusionrs_hf.vlm_data`) follows:

- The config a run trains on must have a train split: otherwise :class:`MissingSplitError`.
- The evaluation config is *implied* (the training config, e.g. the recipe's ``iraware``) unless
  the user names one. An implied config that lacks the evaluation split falls back to
  :data:`FALLBACK_CONFIG` (``default``) for the SAME split, with one line on stderr saying so;
  the config actually used is returned (and reported by the trainers as ``eval_config``).
- A config the user named explicitly that lacks the split, or a fallback that lacks it too, is a
  :class:`MissingSplitError` (one line naming the repo, config, split and the splits that exist).
- Readers (:func:`fusionrs_hf.vlm_data.make_vlm_dataloader`, :func:`fusionrs_hf.train.clip.make_loader`)
  take the config as named: no fallback, the same :class:`MissingSplitError`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TextIO

from .errors import UnusableInputError
from .layout import DEFAULT_LAYOUT, SPLITS, Layout, ShardName, layout_for

FALLBACK_CONFIG = "default"
"""Where an implied evaluation config without the split evaluates instead (every row of every source)."""

RC4_IRAWARE = "rc4 releases IR-aware captions for train only"
"""Said with every ``iraware`` miss: why that config commonly lacks validation and test."""


class MissingSplitError(UnusableInputError, FileNotFoundError, ValueError):
    """A config has no shards for a split. Both a ``FileNotFoundError`` (what the shard planner
    raises) and a ``ValueError`` (a bad argument), so either ``except`` catches it."""

    def __init__(self, message: str, *, repo: str = "", config: str = "", split: str = "",
                 available: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.repo, self.config, self.split, self.available = repo, config, split, tuple(available)

    def __str__(self) -> str:  # OSError's own __str__ would print the args tuple
        return str(self.args[0]) if self.args else ""


def _have(available: tuple[str, ...]) -> str:
    return f"its splits: {', '.join(available)}" if available else "it has no shards at all"


@dataclass(frozen=True)
class RepoSplits:
    """One listing of a repo's shards, asked per config (a Hub repo is listed once, not per question)."""

    repo: str
    """The repo as the user gave it (used in messages)."""
    shards: tuple[ShardName, ...]
    layout: Layout = DEFAULT_LAYOUT
    """The repo's layout (its own sources have configs too)."""

    def files(self, config: str, split: str) -> list[str]:
        """Repo-relative shards of one config split, sorted."""
        return self.layout.config_files(config, split, [s.path for s in self.shards])

    def splits(self, config: str) -> tuple[str, ...]:
        """The splits of ``config`` that have at least one shard, in :data:`SPLITS` order."""
        self.layout.get_config(config)
        return tuple(sp for sp in SPLITS if self.files(config, sp))

    def has(self, config: str, split: str) -> bool:
        return split in self.splits(config)

    def has_ir_captions(self, config: str, split: str) -> bool:
        """Whether any row of the config split carries an ``ir_caption`` (i.e. an ``iraware``-group shard)."""
        want = set(self.files(config, split))
        return any(s.group == "iraware" and s.path in want for s in self.shards)

    def missing(self, config: str, split: str, *, who: str = "", why: str = "", tail: str = "") -> MissingSplitError:
        """The error for a config split that does not exist (not raised: the caller raises it).

        One line: ``WHO: config 'C' has no 'S' split in REPO (its splits: ...[; WHY])[TAIL]``.
        """
        available = self.splits(config)
        prefix = f"{who}: " if who else ""
        why = f"; {why}" if why else ""
        return MissingSplitError(
            f"{prefix}config {config!r} has no {split!r} split in {self.repo} ({_have(available)}{why}){tail}",
            repo=self.repo, config=config, split=split, available=available)

    def require(self, config: str, split: str, *, who: str = "") -> None:
        """Raise :class:`MissingSplitError` unless ``config`` has ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not self.has(config, split):
            raise self.missing(config, split, who=who)

    def eval_config(self, config: str, split: str, *, explicit: bool = False, who: str = "",
                    fallback: str = FALLBACK_CONFIG, stream: TextIO | None = None) -> str:
        """The config to evaluate ``split`` on: ``config`` itself, or ``fallback`` (see the module rule).

        ``explicit``: the user named ``config`` for evaluation, so there is no fallback. The
        fallback prints one line to ``stream`` (stderr by default).
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if self.has(config, split):
            return config
        why = RC4_IRAWARE if config == "iraware" else ""
        if explicit or config == fallback:
            raise self.missing(config, split, who=who, why=why)
        if not self.has(fallback, split):
            raise self.missing(config, split, who=who, why=why,
                               tail=f", and neither has the fallback {fallback!r} ({_have(self.splits(fallback))})")
        prefix = f"{who}: " if who else ""
        print(f"{prefix}config {config!r} has no {split!r} split in {self.repo}{f' ({why})' if why else ''}; "
              f"evaluating on {fallback!r}/{split}", file=stream or sys.stderr, flush=True)
        return fallback


def repo_splits(repo: str | os.PathLike, *, revision: str | None = None,
                storage_options: dict | None = None) -> RepoSplits:
    """List ``repo`` (local folder, fsspec URL or Hub dataset id, as :func:`fusionrs_hf.torch.resolve_repo`;
    ``storage_options`` for its store, see :mod:`fusionrs_hf.storage`)."""
    from .secrets import scrubbing
    from .torch import resolve_repo

    with scrubbing():  # a store's error may echo a credential
        fs, root = resolve_repo(repo, revision, storage_options)
        lay = layout_for(fs, root)
        shards, _ = lay.list_shards(fs, root)
    return RepoSplits(os.fspath(repo), tuple(shards), lay)


def available_splits(repo: str | os.PathLike, config: str, *, revision: str | None = None,
                     storage_options: dict | None = None) -> tuple[str, ...]:
    """The splits ``config`` has in ``repo``, e.g. ``("train",)`` for ``iraware`` in rc4."""
    return repo_splits(repo, revision=revision, storage_options=storage_options).splits(config)


def explain_missing(repo, config: str, split: str, *, revision: str | None = None,
                    who: str = "", storage_options: dict | None = None) -> MissingSplitError | None:
    """After the shard planner's ``FileNotFoundError``: the clearer error if the split really is missing."""
    from .storage import HubUnreachableError

    try:
        listing = repo_splits(repo, revision=revision, storage_options=storage_options)
        return None if listing.has(config, split) else listing.missing(config, split, who=who)
    except HubUnreachableError:
        raise  # (a ConnectionError, so an OSError: not one to swallow)
    except (OSError, ValueError):  # the repo itself cannot be listed: keep the planner's error
        return None
