"""Recipes: which (modality, modality) pairs enter the loss, under the release's names and ours."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PresetError


@dataclass(frozen=True)
class Recipe:
    """Which (modality, modality) pairs enter the loss, and the data config they are meant for."""

    name: str
    terms: tuple[tuple[str, str], ...]
    config: str
    description: str
    release: bool = False
    """One of the authors' CLIP ablation settings (``--loss-setting`` in their trainer)."""


RELEASE_RECIPES: tuple[str, ...] = ("rgb_text", "ir_text", "dual_text", "trimodal")
"""The authors' CLIP loss settings; ``trimodal`` is the released model's."""
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("rgb_text", (("rgb", "caption"),), "default", "the release's rgb_text: RGB–caption", True),
        Recipe("ir_text", (("ir", "caption"),), "default", "the release's ir_text: IR–caption", True),
        Recipe("dual_text", (("rgb", "caption"), ("ir", "caption")), "default",
               "the release's dual_text: RGB–caption, IR–caption", True),
        Recipe("trimodal", (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir")), "default",
               "the release's trimodal: RGB–caption, IR–caption, RGB–IR", True),
        Recipe("580K-only", (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir")), "default",
               "ours, all triplets: RGB–caption, IR–caption, RGB–IR (the trimodal pairs)"),
        Recipe("A-original", (("ir", "caption"),), "iraware", "ours: IR–original caption (a VLM setting in the release)"),
        Recipe("B-iraware", (("ir", "ir_caption"),), "iraware", "ours: IR–IR-aware caption (a VLM setting in the release)"),
        Recipe("C-mixed", (("ir", "caption"), ("ir", "ir_caption"), ("rgb", "caption"), ("rgb", "ir")), "iraware",
               "ours: IR–original, IR–IR-aware, RGB–original, RGB–IR (a VLM setting in the release)"),
    )
}
RECIPE_ALIASES = {"580k": "580K-only", "580k-only": "580K-only", "a": "A-original", "original": "A-original",
                  "b": "B-iraware", "iraware": "B-iraware", "c": "C-mixed", "mixed": "C-mixed",
                  "rgb-text": "rgb_text", "ir-text": "ir_text", "dual-text": "dual_text"}


def get_recipe(name: str) -> Recipe:
    """A recipe by its name (case-insensitive; short aliases ``A``, ``B``, ``C``, ``580k`` work)."""
    key = name if name in RECIPES else RECIPE_ALIASES.get(name.lower())
    if key is None:
        key = next((k for k in RECIPES if k.lower() == name.lower()), None)
    if key is None:
        raise PresetError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")  # a ValueError
    return RECIPES[key]
