"""The trainer's data: loaders with the model's pixels, and captions to train a local tokenizer on."""

from __future__ import annotations

import os


def make_loader(repo: str, config: str, split: str, *, batch_size: int, image_size: int, mean, std,
                shuffle: bool | str = False, seed: int = 0, num_workers: int = 0, drop_last: bool = False,
                storage_options: dict | None = None, image_processor=None, map_style: bool = False,
                usable_captions_only: bool = False, rank: int | None = None, world_size: int | None = None,
                revision: str | None = None):
    """:func:`fusionrs_hf.torch.make_dataloader` with the model's pixel statistics: streamed
    (``shuffle`` True/False), or map-style (``shuffle="global"``: the release's global permutation per epoch;
    ``map_style=True`` unshuffled), with the model's image processor's pixels when ``image_processor`` is given.
    ``rank`` / ``world_size``: None (each rank its share, from the process group or torchrun's variables), or
    ``0`` / ``1`` for the whole split in a multi-process run. ``revision``: a Hub commit to read (None: the
    loader pins the one ``main`` names when it is made)."""
    from ...splits import explain_missing
    from ...torch import make_dataloader

    extra = {"usable_captions_only": True} if usable_captions_only else {}
    if revision is not None:
        extra["revision"] = revision
    try:
        return make_dataloader(repo, config=config, split=split, batch_size=batch_size, num_workers=num_workers,
                               image_size=image_size, shuffle=shuffle, seed=seed, mean=tuple(mean), std=tuple(std),
                               drop_last=drop_last, storage_options=storage_options, image_processor=image_processor,
                               map_style=map_style, rank=rank, world_size=world_size, **extra)
    except FileNotFoundError as exc:  # say which splits the config does have
        better = (explain_missing(repo, config, split, storage_options=storage_options)
                  if isinstance(repo, (str, os.PathLike)) else None)
        if better is None:
            raise
        raise better from exc


def read_captions(repo: str, config: str, split: str = "train", limit: int = 50_000,
                  storage_options: dict | None = None) -> list[str]:
    """Captions and IR-aware captions of a split (no image decode), to train a local tokenizer."""
    from ... import load

    ds = load(config, split=split, streaming=True, repo=repo, storage_options=storage_options
              ).select_columns(["caption", "ir_caption"])
    out: list[str] = []
    for row in ds:
        out.extend(t for t in (row["caption"], row["ir_caption"]) if t)
        if len(out) >= limit:
            break
    if not out:
        from ..errors import NoTrainingDataError

        raise NoTrainingDataError(f"{repo}: config {config!r} split {split!r} has no captions to train a tokenizer on")
    return out
