"""Settings: the paper's and the release's (presets), VLMTrainConfig, and resolving a config against them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import PresetError
from .models import LORA_TARGETS, QUANTIZATIONS

PAPER_DEFAULTS = {
    "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "epochs": 1, "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.03, "per_device_batch_size": 1, "gradient_accumulation_steps": 8,
    "gradient_checkpointing": True,
}
"""The paper's stated VLM settings (a subset of :data:`PAPER_SETTINGS`)."""
RELEASE_PROMPTS: dict[str, str] = {
    "ir_caption": ("Describe this infrared-style aerial image in one concise sentence. Report visible scene "
                   "semantics, grayscale intensity, contrast, edges, texture, or structure only. Do not infer "
                   "temperature, heat, material properties, emissivity, or RGB color."),
}
"""Task -> the release's instruction (``build_vlm_caption_manifest.py``, task ``ir_style_caption``),
verbatim; next to the paper's templates in :data:`fusionrs_hf.vlm_data.TEMPLATES`."""
PROMPT_SETS: tuple[str, ...] = ("paper", "release")

VLM_SETTINGS: tuple[str, ...] = (
    "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "lora_task_type", "lr", "lr_scheduler_type",
    "warmup_ratio", "epochs", "per_device_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
    "quantization", "prompts", "fp16_fallback", "seed", "max_pixels", "min_pixels",
)
PAPER_SETTINGS: dict[str, object] = {
    "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "lora_targets": "language-model", "lora_task_type": None,
    "lr": 2e-4, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03, "epochs": 1, "per_device_batch_size": 1,
    "gradient_accumulation_steps": 8, "gradient_checkpointing": True, "quantization": "none", "prompts": "paper",
    "fp16_fallback": False, "seed": 0, "max_pixels": None, "min_pixels": None,
}
"""``paper``: the paper's text (lr 2e-4 and seed 0 are ours: the paper gives none)."""
RELEASE_SETTINGS: dict[str, object] = {
    "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "lora_targets": "release", "lora_task_type": "CAUSAL_LM",
    "lr": 2e-4, "lr_scheduler_type": "linear", "warmup_ratio": 0.0, "epochs": 1, "per_device_batch_size": 1,
    "gradient_accumulation_steps": 8, "gradient_checkpointing": True, "quantization": "nf4", "prompts": "release",
    "fp16_fallback": True, "seed": 42, "max_pixels": 401408, "min_pixels": None,
}
"""``rc4-release``: ``train_qwen25vl_full.py`` and the released ``adapter_config.json`` /
``processor_config.json``. ``max_pixels`` 401408 is the trainer's ``--max-pixels`` default, passed to
``AutoProcessor.from_pretrained``; it sets no ``min_pixels`` (None: the processor's own)."""
PRESETS: dict[str, dict[str, object]] = {"paper": PAPER_SETTINGS, "rc4-release": RELEASE_SETTINGS}
PRESET_FREE = frozenset({"epochs", "seed", "per_device_batch_size", "gradient_accumulation_steps", "quantization"})
"""Preset settings a user may still change (reported as overrides)."""


@dataclass
class VLMTrainConfig:
    """One run. The training settings (:data:`VLM_SETTINGS`) default to None: the preset's, else the
    paper's (:data:`PAPER_SETTINGS`); :func:`resolve_config` fills them in."""

    data: str
    preset: str | None = None
    """None or ``paper`` (the paper's settings) or ``rc4-release`` (see the module docstring)."""
    config: str = "iraware"
    setting: str = "B-iraware"
    task: str = "ir_caption"
    model: str = "tiny"
    out: str = "runs/vlm"
    steps: int | None = None  # optimizer steps; None = --epochs over the data
    epochs: float | None = None
    lr: float | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    lora_targets: str | None = None
    lora_task_type: str | None = None
    lr_scheduler_type: str | None = None
    warmup_ratio: float | None = None
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    gradient_checkpointing: bool | None = None
    quantization: str | None = None
    """``none`` or ``nf4`` (4-bit base, QLoRA; needs bitsandbytes and CUDA)."""
    prompts: str | None = None
    """``paper`` (the paper's templates) or ``release`` (:data:`RELEASE_PROMPTS`)."""
    fp16_fallback: bool | None = None
    """fp16 mixed precision on a CUDA GPU without bf16 (the release); else fp32 there."""
    max_pixels: int | None = None
    """Largest image (pixels) the processor keeps, given to ``AutoProcessor.from_pretrained`` (Qwen2-VL
    style processors: ``size.longest_edge``); None: the processor's default (the paper's setting). The
    release: 401408."""
    min_pixels: int | None = None
    """Smallest image (pixels), likewise (``size.shortest_edge``); None: the processor's default."""
    seed: int | None = None
    bf16: bool | None = None  # None = when CUDA supports it
    limit: int | None = None
    eval_split: str | None = "validation"  # None: no before/after eval loss
    eval_config: str | None = None
    """None: ``config``, or ``default`` when that lacks ``eval_split`` (see :mod:`fusionrs_hf.splits`)."""
    eval_limit: int | None = 32
    logging_steps: int = 1
    num_workers: int = 0
    storage_options: dict | None = None
    """fsspec options for the data's store (see :class:`~fusionrs_hf.train.clip.ClipTrainConfig`); credentials
    are left out of ``metrics.json``."""


def resolve_config(cfg: VLMTrainConfig) -> tuple[VLMTrainConfig, list[str]]:
    """``cfg`` with every setting filled in, and the overrides of the preset that were made.

    :class:`PresetError` for an unknown preset, an option contradicting a preset setting that is
    not in :data:`PRESET_FREE`, or a task without a released prompt under ``rc4-release``.
    """
    if cfg.preset is not None and cfg.preset not in PRESETS:
        raise PresetError(f"train_vlm: unknown preset {cfg.preset!r}; expected one of {', '.join(PRESETS)}")
    fixed = PRESETS[cfg.preset] if cfg.preset else {}
    values = {**PAPER_SETTINGS, **fixed}
    overrides: list[str] = []
    for name in VLM_SETTINGS:
        given = getattr(cfg, name)
        if given is None:
            continue
        if fixed and name in fixed and given != fixed[name]:
            if name not in PRESET_FREE:
                raise PresetError(f"train_vlm: --preset {cfg.preset} sets {name} = {fixed[name]!r}; {name} = "
                                  f"{given!r} contradicts it (drop --preset to choose every setting yourself)")
            overrides.append(f"{name} {given!r} (preset {fixed[name]!r})")
        values[name] = given
    for name, allowed in (("lora_targets", LORA_TARGETS), ("quantization", QUANTIZATIONS), ("prompts", PROMPT_SETS)):
        if values[name] not in allowed:
            raise PresetError(f"train_vlm: {name} must be one of {', '.join(allowed)}, got {values[name]!r}")
    for name in ("max_pixels", "min_pixels"):
        if values[name] is not None and int(values[name]) < 1:
            raise PresetError(f"train_vlm: {name} must be >= 1, got {values[name]!r}")
    if values["prompts"] == "release" and cfg.task not in RELEASE_PROMPTS:
        raise PresetError(f"train_vlm: the release publishes a prompt for task {', '.join(RELEASE_PROMPTS)} only; "
                          f"task {cfg.task!r} has none (use the paper's templates: prompts 'paper' or no preset)")
    return replace(cfg, **values), overrides


def processor_kwargs(cfg: VLMTrainConfig) -> dict[str, int]:
    """What :func:`train_vlm` passes to ``AutoProcessor.from_pretrained`` (``max_pixels`` / ``min_pixels``
    where set): under ``rc4-release`` ``{"max_pixels": 401408}``, the release's own call
    (``AutoProcessor.from_pretrained(model, trust_remote_code=True, max_pixels=args.max_pixels)``), which the
    released ``processor_config.json`` records as ``size = {longest_edge: 401408, shortest_edge: 3136}``.
    A model built in memory (``tiny``) has its processor already; these then do not apply."""
    if any(getattr(cfg, name) is None for name in ("prompts", "lora_r")):  # not resolved yet
        cfg, _ = resolve_config(cfg)
    return {name: int(getattr(cfg, name)) for name in ("max_pixels", "min_pixels") if getattr(cfg, name) is not None}


def prompt_overrides(cfg: VLMTrainConfig) -> dict[str, str]:
    """Sample setting -> instruction, for :class:`VLMStream` (empty with the paper's templates).

    The release's prompt is an IR-aware caption instruction, so it replaces the template of the
    IR-aware (``B-iraware``) samples; original-caption samples keep the paper's template.
    """
    if cfg.prompts != "release":
        return {}
    return {"B-iraware": RELEASE_PROMPTS[cfg.task]}
