"""Settings: ours, the presets (paper, rc4-release), ClipTrainConfig, and resolving a config against them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import PresetError
from .loss import LOSS_REDUCTIONS
from .models import PREPROCESSES
from .recipes import RELEASE_RECIPES, get_recipe

IR_VIEWS: tuple[str, ...] = ("translated", "grayscale", "rgb_duplicate")
PRECISIONS: tuple[str, ...] = ("auto", "fp16", "bf16", "fp32")
"""Training autocast: ``auto`` is bf16 where CUDA supports it (ours); ``fp16`` adds a gradient scaler.
Every choice is plain fp32 on a CPU (as the release's trainer, which autocasts on CUDA only)."""
SCHEDULES: tuple[str, ...] = ("cosine", "release-cosine")
SELECTIONS: tuple[str, ...] = ("last", "best-val-recall", "release")
"""Which weights end up in ``OUT/checkpoint``: ``last``; ``best-val-recall`` (the best validation Mean R over
every epoch end and the last step); ``release`` (the authors': validation loss after every epoch, ``best`` =
the strictly lowest so far, ``latest`` = the last epoch; then the higher validation Mean R of [best, latest],
ties keeping ``best``)."""
SHUFFLE_MODES: tuple[str, ...] = ("stream", "global")
"""Training order: ``stream`` (ours: the streaming reader's row-group permutation + 1,000-row buffer) or
``global`` (the release's: a uniform permutation of every row each epoch, map-style; rows without a usable
caption left out, as the release's trainer does)."""
DECAY_ON: tuple[str, ...] = ("matrices", "all")

OURS: dict[str, object] = {
    "recipe": "580K-only", "loss_reduction": "sum", "rgb_ir_weight": 1.0, "epochs": 1, "batch_size": 32,
    "lr": None, "weight_decay": 0.1, "weight_decay_on": "matrices", "adam_betas": (0.9, 0.98), "adam_eps": 1e-6,
    "schedule": "cosine", "warmup_ratio": 0.03, "warmup_steps": None, "grad_clip": 1.0, "clamp_temperature": True,
    "precision": "auto", "seed": 0, "select": "last", "ir_view": "translated", "dedupe_captions": False,
    "shuffle": "stream", "preprocess": "fast", "val_batch_size": None,
}
"""The settings without a preset (what this package chose; ``lr`` None = 2e-3 for ``tiny``, 1e-5 otherwise)."""
SETTINGS: tuple[str, ...] = tuple(OURS)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict
    """What the preset fixes (the rest stays :data:`OURS`)."""
    free: frozenset = frozenset()
    """Fixed settings a user may still change (reported as overrides); any other change is an error."""


RUN_SIZE = frozenset({"steps", "epochs", "batch_size", "seed", "val_batch_size"})
ABLATIONS = frozenset({"recipe", "rgb_ir_weight", "ir_view"})
PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper", "the paper's loss: L = L(rgb,text) + L(ir,text) + L(rgb,ir), one shared temperature "
                 "(the paper states no optimiser settings: those are ours)",
        {"recipe": "trimodal", "loss_reduction": "sum", "rgb_ir_weight": 1.0},
        frozenset(RUN_SIZE | ABLATIONS)),
    # batch_size 128 is the authors' GLOBAL batch: their train_clip_triplet_ablation.py (frozy129/FusionRS,
    # code/clip/) is one process on one device (no process group, no DDP), and FusionRS-CLIP's
    # training_config.json ("release": "FusionRS-CLIP-v1.0.0-rc4"; the later v1.0.0 one says 579,993 rows, 7
    # filtered) records batch_size 128, 579,992 rows used, 3 epochs and optimizer_steps 13,593 =
    # 3 x floor(579,992 / 128): 128 rows per optimizer step. Ours is per process: under torchrun with W
    # processes, --batch-size 128 / W gives the release's 128 rows per step (the row order then differs: see
    # fusionrs_hf.torch.mapstyle).
    "rc4-release": Preset(
        "rc4-release", "the authors' released run (train_clip_triplet_ablation.py, FusionRS-CLIP training_config.json)",
        {"recipe": "trimodal", "loss_reduction": "mean", "rgb_ir_weight": 1.0, "epochs": 3, "batch_size": 128,
         "lr": 5e-6, "weight_decay": 0.1, "weight_decay_on": "all", "adam_betas": (0.9, 0.999), "adam_eps": 1e-8,
         "schedule": "release-cosine", "warmup_ratio": None, "warmup_steps": 500, "grad_clip": 0.0,
         "clamp_temperature": False, "precision": "fp16", "seed": 42, "select": "release",
         "ir_view": "translated", "dedupe_captions": False, "shuffle": "global", "preprocess": "processor",
         "val_batch_size": 128},
        frozenset(RUN_SIZE | ABLATIONS)),
}


@dataclass
class ClipTrainConfig:
    """Everything one run needs; the command line maps onto it one flag per field.

    The training settings (:data:`SETTINGS`) default to None, meaning "the preset's, else ours"
    (:data:`OURS`); :func:`resolve_config` fills them in, and :func:`train_clip` records the
    resolved values (and any override of a preset) in ``metrics.json``.
    """

    data: str
    preset: str | None = None
    """None (ours), ``paper`` or ``rc4-release`` (see :data:`PRESETS`)."""
    config: str | None = None
    recipe: str | None = None
    model: str = "tiny"
    pretrained: str | None = None
    out: str = "runs/clip"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    """Rows per optimizer step PER PROCESS: under torchrun with W processes the loss sees the global batch of
    ``W * batch_size`` rows (see :mod:`fusionrs_hf.train.clip.ddp`). The release's 128 was one process's."""
    lr: float | None = None
    weight_decay: float | None = None
    weight_decay_on: str | None = None
    """``matrices`` (ours: weights of dim >= 2 only) or ``all`` (the release: AdamW over every parameter)."""
    adam_betas: tuple[float, float] | None = None
    adam_eps: float | None = None
    schedule: str | None = None
    """``cosine`` (ours: linear warmup (step+1)/W, then cosine) or ``release-cosine`` (the release's
    LambdaLR: ``max(1e-8, step/W)``, then cosine over the remaining steps)."""
    warmup_ratio: float | None = None
    warmup_steps: int | None = None
    loss_reduction: str | None = None
    rgb_ir_weight: float | None = None
    ir_view: str | None = None
    grad_clip: float | None = None
    """Max gradient norm; 0 for none."""
    clamp_temperature: bool | None = None
    precision: str | None = None
    seed: int | None = None
    select: str | None = None
    """``last``, ``best-val-recall`` (Mean R on validation at every epoch end and at the last step) or
    ``release`` (see :data:`SELECTIONS`)."""
    dedupe_captions: bool | None = None
    shuffle: str | None = None
    """``stream`` (ours) or ``global`` (the release's; see :data:`SHUFFLE_MODES`)."""
    preprocess: str | None = None
    """``fast`` (ours) or ``processor`` (the model's image processor on PIL images; see :data:`PREPROCESSES`);
    used for training, every evaluation, and recorded in the checkpoint for ``fusionrs eval``."""
    val_batch_size: int | None = None
    """Batch size of the validation-loss pass of ``select="release"`` (None: ``batch_size``; the release: 128).
    Not per process: several processes share out these batches, so the validation loss is the one-process one."""
    image_size: int = 64
    eval_split: str = "validation"
    eval_config: str | None = None
    """None: the training config, or ``default`` when that lacks ``eval_split`` (see :mod:`fusionrs_hf.splits`)."""
    eval_text: str = "caption"
    eval_protocol: str = "auto"
    eval_ties: str = "pessimistic"
    eval_batch_size: int | None = None
    """None: ``fusionrs eval``'s default (so the final line equals ``fusionrs eval`` on the checkpoint)."""
    eval_precision: str = "auto"
    eval_limit: int | None = None
    eval_every: int = 0
    log_every: int = 10
    num_workers: int = 0
    device: str | None = None
    storage_options: dict | None = None
    """fsspec options for the data's store (``endpoint_url``, ``key``, ...; the Hub: ``token``, ``endpoint``).
    Credentials are left out of ``metrics.json`` (:func:`fusionrs_hf.storage.public_options`)."""


def resolve_config(cfg: ClipTrainConfig) -> tuple[ClipTrainConfig, list[str]]:
    """``cfg`` with every training setting filled in (preset, else ours), and the overrides made.

    Raises :class:`PresetError` for an unknown preset, an option that contradicts a fixed setting
    of the preset, a recipe of ours under a preset, or both warmup forms given.
    """
    preset = None
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise PresetError(f"train_clip: unknown preset {cfg.preset!r}; expected one of {', '.join(PRESETS)}")
        preset = PRESETS[cfg.preset]
    if cfg.warmup_ratio is not None and cfg.warmup_steps is not None:
        raise PresetError("train_clip: give --warmup-ratio or --warmup-steps, not both")
    values = dict(OURS)
    if preset:
        values.update(preset.settings)
    overrides: list[str] = []
    for name in SETTINGS:
        given = getattr(cfg, name)
        if given is None:
            continue
        if isinstance(given, list):
            given = tuple(given)
        if name == "recipe":
            given = get_recipe(given).name
        if preset and name in preset.settings and given != preset.settings[name]:
            if name not in preset.free:
                raise PresetError(
                    f"train_clip: --preset {preset.name} sets {name} = {_show(preset.settings[name])}; "
                    f"{name} = {_show(given)} contradicts it (drop --preset to choose every setting yourself)")
            overrides.append(f"{name} {_show(given)} (preset {_show(preset.settings[name])})")
        values[name] = given
    if cfg.warmup_steps is not None:
        values["warmup_ratio"] = None
    elif cfg.warmup_ratio is not None:
        values["warmup_steps"] = None
    recipe = get_recipe(values["recipe"])
    if preset and not recipe.release:
        raise PresetError(f"train_clip: recipe {recipe.name!r} is ours (in the release A/B/C are VLM settings); "
                          f"under --preset {preset.name} use one of {', '.join(RELEASE_RECIPES)}")
    for name, allowed in (("loss_reduction", LOSS_REDUCTIONS), ("ir_view", IR_VIEWS), ("precision", PRECISIONS),
                          ("schedule", SCHEDULES), ("select", SELECTIONS), ("weight_decay_on", DECAY_ON),
                          ("shuffle", SHUFFLE_MODES), ("preprocess", PREPROCESSES)):
        if values[name] not in allowed:
            raise PresetError(f"train_clip: {name} must be one of {', '.join(allowed)}, got {values[name]!r}")
    if values["batch_size"] is not None and values["batch_size"] < 2:
        raise PresetError(f"train_clip: batch_size must be >= 2 (a contrastive loss compares a row with the "
                          f"others of its batch), got {values['batch_size']}")
    for name in ("steps", "epochs"):
        v = values.get(name, getattr(cfg, name, None))
        if v is not None and v < 1:
            raise PresetError(f"train_clip: {name} must be >= 1, got {v}")
    if values["val_batch_size"] is not None and values["val_batch_size"] < 1:
        raise PresetError(f"train_clip: val_batch_size must be >= 1, got {values['val_batch_size']}")
    if values["rgb_ir_weight"] < 0:
        raise PresetError(f"train_clip: rgb_ir_weight must be non-negative, got {values['rgb_ir_weight']}")
    return replace(cfg, **values), overrides


def _show(v) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)
