"""LoRA instruction tuning of a vision-language model on FusionRS infrared images.

The paper's second track: a VLM (Qwen2.5-VL in the paper) learns to describe IR images, with LoRA
adapters. Two setting sets (``preset=``, :data:`PRESETS`); without a preset the paper's are used:

- ``paper`` (the default; :data:`PAPER_DEFAULTS`): what the paper's text says. LoRA rank 32,
  alpha 64, dropout 0.05 on the language model's attention and MLP projections only; one epoch;
  cosine schedule with warmup ratio 0.03; bf16 where the GPU supports it; per-device batch 1,
  gradient accumulation 8, gradient checkpointing; the paper's instruction templates
  (:data:`fusionrs_hf.vlm_data.TEMPLATES`); an unquantized base. lr 2e-4 and seed 0 are ours (the
  paper gives none).
- ``rc4-release`` (:data:`RELEASE_SETTINGS`): what the released adapters were trained with
  (``train_qwen25vl_full.py`` and the adapters' ``adapter_config.json``). QLoRA: the base loaded in
  4-bit NF4 with double quantization (compute dtype bf16, else fp16) and prepared with
  ``prepare_model_for_kbit_training``; LoRA rank 16, alpha 32, dropout 0.05, bias none, task
  ``CAUSAL_LM``, ``target_modules`` the seven projection names as peft matches them, i.e. on every
  module of those names, so on Qwen2.5-VL the vision blocks' MLP (``gate/up/down_proj``) is adapted
  too; ``transformers``' default linear schedule without warmup; lr 2e-4, seed 42, batch 1 x
  accumulation 8, one epoch, bf16 (fp16 where bf16 is unsupported); the released caption prompt
  (:data:`RELEASE_PROMPTS`); the processor loaded with ``max_pixels=401408`` (the release's
  ``--max-pixels`` default, its ``processor_config.json`` ``size.longest_edge``; no ``min_pixels``, so
  the processor's own 56 x 56 = 3,136, the released ``shortest_edge``): at most 401,408 pixels per image,
  i.e. 512 image tokens of 28 x 28 px, where Qwen2.5-VL's default allows 1,003,520. 4-bit loading needs ``bitsandbytes`` and a CUDA GPU: without them a
  pretrained base is a one-line error unless ``quantization="none"`` is asked for; the tiny model
  (built in memory) is never quantized, which is said on stderr. The release publishes a prompt
  for IR-aware captions only (task ``ir_caption``); other tasks are an error under this preset, and
  the original-caption samples of settings A and C keep the paper's template (said on stderr).

Under a preset, an option that contradicts one of its settings is a :class:`PresetError` (one
line), except ``steps``, ``epochs``, ``seed``, ``per_device_batch_size``,
``gradient_accumulation_steps`` and ``quantization``, which are reported as overrides.

The pieces, each usable on its own:

- :func:`vlm_dataset` streams ``{messages, images}`` samples made by
  :func:`fusionrs_hf.vlm_data.vlm_samples` from a FusionRS repo (no download of whole splits);
- :class:`VLMCollator` turns samples into model inputs with the model's own processor and chat
  template, and sets ``labels`` to ``-100`` on every prompt token (system and user turns, image
  placeholder tokens included) and on padding, so only the assistant's answer is supervised;
- :func:`add_lora` attaches ``peft`` LoRA adapters (the paper: to the language model's attention
  and MLP projections, never to the vision tower; the release: by projection name, anywhere);
- :func:`train_vlm` runs ``transformers.Trainer``.

Any ``transformers`` image-text-to-text model id works (``Qwen/Qwen2.5-VL-3B-Instruct``, LLaVA,
Idefics3/SmolVLM); ``tiny`` builds a small random LLaVA (CLIP vision tower + Llama) with a
locally trained tokenizer, which is what runs offline in tests and CI.
"""

from __future__ import annotations

from .config import (
    PAPER_DEFAULTS,
    PAPER_SETTINGS,
    PRESET_FREE,
    PRESETS,
    PROMPT_SETS,
    RELEASE_PROMPTS,
    RELEASE_SETTINGS,
    VLM_SETTINGS,
    VLMTrainConfig,
    processor_kwargs,
    prompt_overrides,
    resolve_config,
)
from .data import (
    IGNORE_INDEX,
    VLMCollator,
    VLMStream,
    vlm_dataset,
    with_prompt,
)
from .data import _texts_for_tokenizer as _texts_for_tokenizer  # private, used by the tests
from .errors import (
    PresetError,
)
from .loop import _training_args as _training_args  # private, used by the tests
from .loop import (
    answer_loss,
    train_vlm,
)
from .models import (
    LORA_PROJECTIONS,
    LORA_TARGETS,
    QUANTIZATIONS,
    TINY_CHAT_TEMPLATE,
    add_lora,
    load_quantized,
    load_vlm,
    lora_config,
    lora_target_modules,
    quantization_config,
    quantization_missing,
    tiny_vlm,
)

__all__ = [
    "IGNORE_INDEX",
    "PAPER_DEFAULTS",
    "LORA_PROJECTIONS",
    "RELEASE_PROMPTS",
    "LORA_TARGETS",
    "QUANTIZATIONS",
    "PROMPT_SETS",
    "VLM_SETTINGS",
    "PAPER_SETTINGS",
    "RELEASE_SETTINGS",
    "PRESETS",
    "PRESET_FREE",
    "PresetError",
    "TINY_CHAT_TEMPLATE",
    "tiny_vlm",
    "load_vlm",
    "lora_target_modules",
    "lora_config",
    "add_lora",
    "quantization_config",
    "quantization_missing",
    "VLMStream",
    "with_prompt",
    "vlm_dataset",
    "VLMCollator",
    "VLMTrainConfig",
    "resolve_config",
    "processor_kwargs",
    "prompt_overrides",
    "load_quantized",
    "answer_loss",
    "train_vlm",
]
