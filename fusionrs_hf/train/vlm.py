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

import inspect
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

IGNORE_INDEX = -100
PAPER_DEFAULTS = {
    "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "epochs": 1, "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.03, "per_device_batch_size": 1, "gradient_accumulation_steps": 8,
    "gradient_checkpointing": True,
}
"""The paper's stated VLM settings (a subset of :data:`PAPER_SETTINGS`)."""
LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Attention and MLP projections of Llama/Qwen-style language models: where the adapters go."""
RELEASE_PROMPTS: dict[str, str] = {
    "ir_caption": ("Describe this infrared-style aerial image in one concise sentence. Report visible scene "
                   "semantics, grayscale intensity, contrast, edges, texture, or structure only. Do not infer "
                   "temperature, heat, material properties, emissivity, or RGB color."),
}
"""Task -> the release's instruction (``build_vlm_caption_manifest.py``, task ``ir_style_caption``),
verbatim; next to the paper's templates in :data:`fusionrs_hf.vlm_data.TEMPLATES`."""
LORA_TARGETS: tuple[str, ...] = ("language-model", "release")
"""``language-model``: explicit names of the LM's projections (the paper); ``release``: the seven
names as peft's ``target_modules`` list (every module so named, the vision MLP of Qwen2.5-VL too)."""
QUANTIZATIONS: tuple[str, ...] = ("none", "nf4")
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


class PresetError(ValueError):
    """A preset name or an option that contradicts a preset's setting (one line)."""
_VISION_PARTS = re.compile(r"(^|\.)(vision_tower|vision_model|visual|vision_encoder|image_encoder|"
                           r"multi_modal_projector|mm_projector|connector)(\.|$)")

TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, like Qwen's, with LLaVA's ``<image>`` placeholder: the tiny model's chat template."""


# --------------------------------------------------------------------------- models


def tiny_vlm(texts: Iterable[str], *, image_size: int = 32, patch_size: int = 8, width: int = 64,
             layers: int = 2, vocab_size: int = 600, seed: int = 0):
    """A small random ``LlavaForConditionalGeneration`` and its processor, built offline.

    The vision tower is a ``CLIPVisionModel``, the language model a ``LlamaModel`` (the same
    ``q/k/v/o`` and ``gate/up/down`` projections as Qwen2.5's), the tokenizer a byte-level BPE
    trained on ``texts`` with ChatML markers and ``<image>`` as special tokens.
    """
    from ..storage import require

    require("transformers", extra="train", what="--model tiny (a small transformers VLM)")
    require("tokenizers", extra="train", what="--model tiny (its BPE tokenizer)")
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as ImageProc
    except ImportError:  # transformers 4.x: the slow processor is the PIL one
        from transformers import CLIPImageProcessor as ImageProc

    from .tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size, model_max_length=1024, add_bos_eos=False,
                                    extra_special_tokens=("<|im_start|>", "<|im_end|>", "<image>"))
    tokenizer.padding_side = "right"
    image_proc = ImageProc(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_proc, tokenizer=tokenizer, chat_template=TINY_CHAT_TEMPLATE,
                               patch_size=patch_size, vision_feature_select_strategy="default", image_token="<image>",
                               num_additional_image_tokens=1)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=width // 2, intermediate_size=width, num_hidden_layers=layers,
                                       num_attention_heads=2, image_size=image_size, patch_size=patch_size),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                                pad_token_id=tokenizer.pad_token_id),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config), processor


def load_vlm(model_id: str, *, dtype: torch.dtype | None = None, **processor_kwargs):
    """A pretrained image-text-to-text model and its processor (e.g. ``Qwen/Qwen2.5-VL-3B-Instruct``).

    ``processor_kwargs`` go to ``AutoProcessor.from_pretrained`` (Qwen's ``min_pixels`` /
    ``max_pixels`` bound the number of image tokens, hence memory).
    """
    from ..storage import check_model, require

    require("transformers", extra="train", what=f"VLM {model_id!r}")
    from transformers import AutoProcessor

    try:
        from transformers import AutoModelForImageTextToText as AutoVLM
    except ImportError:  # older transformers
        from transformers import AutoModelForVision2Seq as AutoVLM
    cached = check_model(model_id, what="VLM")  # a typo or an unreachable Hub fails in seconds
    processor = AutoProcessor.from_pretrained(model_id, local_files_only=cached, **processor_kwargs)
    kw = {"dtype": dtype} if dtype is not None else {}
    model = AutoVLM.from_pretrained(model_id, local_files_only=cached, **kw)
    return model, processor


def lora_target_modules(model, projections: Sequence[str] = LORA_PROJECTIONS) -> list[str]:
    """Full names of the language model's Linear projections (vision tower and projector excluded).

    Explicit names, not a suffix list: Qwen2.5-VL's vision blocks also have ``gate_proj`` /
    ``up_proj`` / ``down_proj`` and LLaVA's CLIP tower has ``q_proj``/``k_proj``/``v_proj``, and
    adapting those is not the paper's setting.
    """
    names = [name for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in projections
             and not _VISION_PARTS.search(name)]
    if not names:
        raise ValueError(f"no language-model Linear layers named {', '.join(projections)} in {type(model).__name__}")
    return names


def lora_config(model, *, r: int = 32, alpha: int = 64, dropout: float = 0.05, targets: str = "language-model",
                target_modules: Sequence[str] | None = None, task_type: str | None = None):
    """The ``peft.LoraConfig`` of a run (see :data:`LORA_TARGETS` for ``targets``)."""
    from peft import LoraConfig

    if targets not in LORA_TARGETS:
        raise ValueError(f"unknown LoRA targets {targets!r}; expected one of {', '.join(LORA_TARGETS)}")
    if target_modules is None:
        target_modules = list(LORA_PROJECTIONS) if targets == "release" else lora_target_modules(model)
    kw = {"task_type": task_type} if task_type else {}
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", target_modules=list(target_modules),
                      **kw)


def add_lora(model, *, r: int = 32, alpha: int = 64, dropout: float = 0.05,
             target_modules: Sequence[str] | None = None, targets: str = "language-model",
             task_type: str | None = None):
    """Wrap ``model`` in a ``peft`` LoRA model; only the adapters are trainable afterwards."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config(model, r=r, alpha=alpha, dropout=dropout, targets=targets,
                                             target_modules=target_modules, task_type=task_type))


def quantization_config(compute_dtype: torch.dtype | None = None):
    """The release's ``BitsAndBytesConfig``: 4-bit NF4, double quantization, bf16 compute (fp16 where
    the GPU has no bf16)."""
    from transformers import BitsAndBytesConfig

    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def quantization_missing() -> list[str]:
    """What 4-bit loading lacks here: ``bitsandbytes`` and/or ``a CUDA GPU`` (empty when it can run)."""
    import importlib.util

    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    return missing


# --------------------------------------------------------------------------- data


class VLMStream(torch.utils.data.IterableDataset):
    """Single chat samples for ``Trainer``, from :class:`fusionrs_hf.vlm_data.VLMIterable`.

    The streaming reader yields lists of samples (one list per row, as a row may give two in
    setting C); this flattens them. Worker split, DDP rank split, shuffle and ``set_epoch`` are
    the reader's own (see :mod:`fusionrs_hf.torch`). Under ``transformers.Trainer``, which splits
    an iterable dataset across processes itself, pass ``rank=0, world_size=1`` (as
    :func:`train_vlm` does) so the split is not made twice.
    """

    def __init__(self, repo: str, *, config: str = "iraware", split: str = "train", setting: str = "B-iraware",
                 task: str = "ir_caption", limit: int | None = None, shuffle: bool = False, seed: int = 0,
                 on_error: str = "raise", prompts: dict[str, str] | None = None, **reader_kw):
        super().__init__()
        from ..vlm_data import VLMIterable

        self.repo, self.config, self.split, self.setting, self.task = repo, config, split, setting, task
        self.limit = limit
        self.storage_options = reader_kw.get("storage_options")
        self.prompts = dict(prompts or {})
        """Sample setting (``A-original``/``B-iraware``/...) -> the instruction replacing the paper's template."""
        self.reader = VLMIterable(repo, config, split, batch_size=1, shuffle=shuffle, seed=seed, on_error=on_error,
                                  setting=setting, task=task, **reader_kw)

    def set_epoch(self, epoch: int) -> None:
        self.reader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        n = 0
        for samples in self.reader:
            for sample in samples:
                prompt = self.prompts.get(sample.get("setting"))
                if prompt is not None:
                    sample = with_prompt(sample, prompt)
                yield sample
                n += 1
                if self.limit is not None and n >= self.limit:
                    return

    def count(self) -> int:
        """Samples per epoch, from a pass over the text columns only (no image is read)."""
        from PIL import Image

        from .. import load
        from ..schema import IMAGE_FIELDS
        from ..vlm_data import vlm_samples

        placeholder = Image.new("RGB", (1, 1))
        ds = load(self.config, split=self.split, streaming=True, repo=self.repo,
                  storage_options=self.storage_options).remove_columns(list(IMAGE_FIELDS))
        n = sum(len(vlm_samples({**row, "ir": placeholder}, self.setting, self.task)) for row in ds)
        n //= self.reader.world_size
        return min(n, self.limit) if self.limit is not None else n


def with_prompt(sample: dict, prompt: str) -> dict:
    """``sample`` with the text of its user turn replaced by ``prompt`` (images and answer kept)."""
    messages = []
    for m in sample["messages"]:
        if m["role"] == "user":
            content = [{**c, "text": prompt} if c.get("type") == "text" else c for c in m["content"]]
            m = {**m, "content": content}
        messages.append(m)
    return {**sample, "messages": messages}


def vlm_dataset(repo: str, **kwargs) -> VLMStream:
    """Shorthand for :class:`VLMStream`."""
    return VLMStream(repo, **kwargs)


class VLMCollator:
    """Samples -> padded model inputs with ``labels`` that supervise only the assistant's answer.

    For each sample the chat template is applied twice: to the whole conversation, and to the
    conversation without its final assistant turn plus the generation prompt. The second must be a
    token prefix of the first (a template for which it is not is rejected), and its length is the
    number of leading tokens whose labels are ``-100``. Padding (right side) is ``-100`` as well.

    The images go through the processor once, with the whole conversations. The prompt's length
    in the processed ids is found from the text alone: tokenized before image expansion, the
    prompt is a prefix of the conversation, and the processor's expansion of the image
    placeholders (all in the prompt) adds ``len(processed) - len(text ids)`` tokens to that
    prefix. That is checked: the processed ids after the prefix must equal the conversation's
    text ids after the prompt, token for token, so exactly the answer is supervised and every
    image token is masked. Where a processor's text handling does not allow the check, the prompt
    is run through the processor (images included) as a fallback.
    """

    def __init__(self, processor, *, max_length: int | None = None):
        self.processor = processor
        self.max_length = max_length
        tok = getattr(processor, "tokenizer", processor)
        tok.padding_side = "right"
        self.tokenizer = tok

    def _texts(self, sample: dict) -> tuple[str, str]:
        msgs = sample["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise ValueError(f"sample {sample.get('sample_id')}: the last message must be the assistant's answer")
        full = self.processor.apply_chat_template(msgs, tokenize=False)
        prompt = self.processor.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        return full, prompt

    def _encode(self, texts: list[str], images: list) -> dict:
        kw = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(images):
            kw["images"] = images
        return self.processor(**kw)

    def _prompt_len_from_text(self, ids: list[int], full_text_ids: list[int], prompt_text_ids: list[int]) -> int | None:
        """Masked prefix length in the processed ``ids`` (no padding), or None if the check fails."""
        k = len(prompt_text_ids)
        if k >= len(full_text_ids) or full_text_ids[:k] != prompt_text_ids:
            return None
        n = k + len(ids) - len(full_text_ids)  # image placeholders expanded inside the prompt
        if n < k or ids[n:] != full_text_ids[k:]:
            return None
        return n

    def _prompt_len_processed(self, prompt: str, imgs: list, ids: list[int]) -> int | None:
        p_ids = self._encode([prompt], [imgs])["input_ids"][0].tolist()
        n = len(p_ids)
        return n if n < len(ids) and ids[:n] == p_ids else None

    def __call__(self, samples: list[dict]) -> dict:
        fulls, prompts, images = [], [], []
        for s in samples:
            full, prompt = self._texts(s)
            fulls.append(full)
            prompts.append(prompt)
            images.append([im.convert("RGB") if getattr(im, "mode", "RGB") != "RGB" else im
                           for im in s.get("images") or []])  # the reader's images are RGB already: no copy
        batch = self._encode(fulls, images)
        ids = batch["input_ids"]
        labels = ids.clone()
        labels[batch["attention_mask"] == 0] = IGNORE_INDEX
        text_ids = self.tokenizer(fulls + prompts)["input_ids"]
        lengths = batch["attention_mask"].sum(1).tolist()
        for i, (prompt, imgs, s) in enumerate(zip(prompts, images, samples, strict=True)):
            row = ids[i, : int(lengths[i])].tolist()
            n = self._prompt_len_from_text(row, text_ids[i], text_ids[len(samples) + i])
            if n is None:
                n = self._prompt_len_processed(prompt, imgs, row)
            if n is None:
                raise ValueError(
                    f"sample {s.get('sample_id')}: the chat template's prompt is not a token prefix of the "
                    "full conversation, so the prompt cannot be masked"
                )
            labels[i, :n] = IGNORE_INDEX
        batch["labels"] = labels
        if self.max_length is not None and ids.shape[1] > self.max_length:
            raise ValueError(f"batch of {ids.shape[1]} tokens exceeds max_length {self.max_length}")
        return dict(batch)


# --------------------------------------------------------------------------- train


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


def _logs_to_stderr(trainer) -> None:
    """The Trainer's log records as JSON lines on stderr, as ``train_clip`` writes its own: with its progress bar
    off, transformers' ``PrinterCallback`` prints them to stdout as Python dicts, and stdout is kept for the one
    final JSON line (``| jq`` and line-by-line JSON readers take it)."""
    import json

    from transformers import PrinterCallback, TrainerCallback

    class _JsonLogs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                print(json.dumps({"step": state.global_step, **logs}, default=str), file=sys.stderr, flush=True)

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_JsonLogs())


def _training_args(cfg: VLMTrainConfig, max_steps: int):
    from transformers import TrainingArguments

    if any(getattr(cfg, name) is None for name in VLM_SETTINGS):
        cfg, _ = resolve_config(cfg)
    cuda = torch.cuda.is_available()
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(cuda and torch.cuda.is_bf16_supported())
    fp16 = bool(cfg.fp16_fallback and cuda and not bf16)
    params = inspect.signature(TrainingArguments).parameters
    warm = ({"warmup_ratio": cfg.warmup_ratio} if "warmup_ratio" in params
            else {"warmup_steps": cfg.warmup_ratio})  # transformers 5: a float < 1 is a ratio
    ckpt = "activation_checkpointing" if "activation_checkpointing" in params else "gradient_checkpointing"
    # non-reentrant checkpointing: gradients reach the adapters although the frozen inputs need none
    warm[ckpt] = cfg.gradient_checkpointing
    warm[f"{ckpt}_kwargs"] = {"use_reentrant": False} if cfg.gradient_checkpointing else None
    return TrainingArguments(
        output_dir=cfg.out, max_steps=max_steps, num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler_type, per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, bf16=bf16, fp16=fp16,
        logging_steps=cfg.logging_steps, save_strategy="no", report_to="none",
        remove_unused_columns=False, dataloader_num_workers=cfg.num_workers, seed=cfg.seed, data_seed=cfg.seed,
        dataloader_pin_memory=cuda, disable_tqdm=True, **warm,
    )


def load_quantized(model_id: str, **processor_kwargs):
    """The release's QLoRA base: ``model_id`` in 4-bit NF4, prepared for k-bit training (CUDA only)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoProcessor

    try:
        from transformers import AutoModelForImageTextToText as AutoVLM
    except ImportError:  # older transformers
        from transformers import AutoModelForVision2Seq as AutoVLM
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    processor = AutoProcessor.from_pretrained(model_id, **processor_kwargs)
    model = AutoVLM.from_pretrained(model_id, quantization_config=quantization_config(dtype), device_map="auto",
                                    dtype=dtype)
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model.enable_input_require_grads()
    return model, processor


def _texts_for_tokenizer(repo: str, config: str, storage_options: dict | None = None) -> list[str]:
    from ..vlm_data import TEMPLATES
    from .clip import read_captions

    return [*read_captions(repo, config, storage_options=storage_options), *TEMPLATES.values()]


@torch.no_grad()
def answer_loss(model, collator: VLMCollator, samples: Iterable[dict]) -> float:
    """Mean per-token loss on the answers of ``samples`` (the eval figure the trainer reports)."""
    was = model.training
    model.eval()
    total, tokens = 0.0, 0
    device = next(model.parameters()).device
    for s in samples:
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in collator([s]).items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(model(**batch).loss) * n
        tokens += n
    model.train(was)
    return total / max(1, tokens)


def train_vlm(cfg: VLMTrainConfig, *, model=None, processor=None) -> dict:
    """LoRA-tune ``cfg.model`` on the streamed instruction data; save the adapter to ``cfg.out``.

    Returns ``{"metrics": {...}, "trainer": Trainer, "model": PeftModel}``; metrics hold the
    final train loss, steps, trainable/total parameter counts, ``eval_config`` / ``eval_split``
    (what was evaluated on; None without ``eval_split``) and, with eval samples, the answer-token
    loss before and after training.

    Missing splits (checked from the shard listing before anything is built): ``cfg.config``
    must have a train split. Evaluation runs on ``cfg.eval_config`` when given (it must have
    ``eval_split``); otherwise on ``cfg.config``, or, when that has no ``eval_split`` (rc4's
    ``iraware`` is train only), on ``default`` of the same split, said in one stderr line.
    Other misses raise :class:`fusionrs_hf.splits.MissingSplitError`. An eval split that gives no
    sample for the setting/task (``default`` rows without an IR-aware caption give no B-iraware
    answer) is reported on stderr and leaves ``eval_samples`` 0, with no eval loss.

    One process: in one of several (torchrun's ``WORLD_SIZE > 1``) it raises
    :class:`fusionrs_hf.train.errors.DistributedRunError` before anything is read.
    """
    from ..storage import check_model, require
    from .errors import refuse_distributed

    # one process only: under torchrun on CPU every process trained the whole split on its own (the Trainer does
    # not go distributed there) and all wrote the same adapter; a multi-process run is not tested here
    refuse_distributed("train_vlm")
    for mod, why in (("transformers", "the Hugging Face Trainer"), ("peft", "LoRA"), ("accelerate", "the Trainer")):
        require(mod, extra="train", what=f"train_vlm ({why})", load=False)  # present? (imported below)
    from ..splits import repo_splits
    from ..torch import _resolve_rank
    from ..vlm_data import needs_ir_caption

    cfg, overrides = resolve_config(cfg)
    quantize = cfg.quantization == "nf4"
    if quantize and model is None and cfg.model != "tiny":
        missing = quantization_missing()
        if missing:
            raise PresetError(f"train_vlm: quantization 'nf4' (the release's 4-bit QLoRA base) needs bitsandbytes and "
                              f"a CUDA GPU; missing here: {', '.join(missing)} (pass --quantization none to train an "
                              "unquantized base, which is not the release's setting)")
    so = cfg.storage_options
    listing = repo_splits(cfg.data, storage_options=so)  # an unreachable Hub fails here, in seconds
    listing.require(cfg.config, "train", who="train_vlm")
    if model is None and cfg.model != "tiny":
        check_model(cfg.model, what="VLM")  # a typo or an unreachable Hub: seconds, before the heavy imports
    from transformers import Trainer

    eval_config = None
    if cfg.eval_split:
        eval_config = listing.eval_config(cfg.eval_config or cfg.config, cfg.eval_split,
                                          explicit=cfg.eval_config is not None, who="train_vlm")
    notices = []
    if overrides:
        notices.append(f"--preset {cfg.preset} with {'; '.join(overrides)}")
    if quantize and (model is not None or cfg.model == "tiny"):
        notices.append("4-bit NF4 base skipped: the model is built in memory, not loaded from a checkpoint "
                       "(the release quantizes its pretrained base)")
        quantize = False
    prompts = prompt_overrides(cfg)
    if prompts and cfg.setting != "B-iraware":
        notices.append(f"the release publishes only the IR-aware caption prompt: {cfg.setting}'s original-caption "
                       "samples keep the paper's template")
    for note in notices:
        print(f"train_vlm: {note}", file=sys.stderr, flush=True)
    torch.manual_seed(cfg.seed)
    proc_kw = None  # what from_pretrained got (None: the processor came built, these do not apply)
    if model is None:
        if cfg.model == "tiny":
            model, processor = tiny_vlm(_texts_for_tokenizer(cfg.data, cfg.config, so), seed=cfg.seed)
            preset = PRESETS.get(cfg.preset or "", {})
            asked = [k for k, v in processor_kwargs(cfg).items() if preset.get(k) != v]
            if asked:  # the tiny model's processor is built, not loaded: nothing to pass them to
                print(f"train_vlm: {', '.join(asked)} do not apply to --model tiny (its processor is built "
                      "here, with no pixel budget)", file=sys.stderr, flush=True)
        elif quantize:
            proc_kw = processor_kwargs(cfg)
            model, processor = load_quantized(cfg.model, **proc_kw)
        else:
            bf16 = cfg.bf16 if cfg.bf16 is not None else bool(torch.cuda.is_available()
                                                                and torch.cuda.is_bf16_supported())
            proc_kw = processor_kwargs(cfg)
            model, processor = load_vlm(cfg.model, dtype=torch.bfloat16 if bf16 else None, **proc_kw)
    if processor is None:
        raise ValueError("pass the processor that goes with the model")
    collator = VLMCollator(processor)
    # Trainer (accelerate) splits an IterableDataset across processes itself: rank 0 dispatches
    # batches, or every process takes its share of the same stream. So every process reads the
    # whole split (rank=0, world_size=1); a rank split here too would train on 1/world of it.
    # The eval samples are then the same on every process, and so are the reported losses.
    whole = {"rank": 0, "world_size": 1, "storage_options": so}
    world = _resolve_rank(None, None)[1]
    train_ds = VLMStream(cfg.data, config=cfg.config, split="train", setting=cfg.setting, task=cfg.task,
                         limit=cfg.limit, shuffle=True, seed=cfg.seed, prompts=prompts, **whole)
    per_step = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    if cfg.steps is not None:
        max_steps = cfg.steps
    else:
        n = train_ds.count()
        if n == 0:
            from .errors import NoTrainingDataError

            raise NoTrainingDataError(f"{cfg.data}: config {cfg.config!r} gives no {cfg.setting} samples to train on")
        max_steps = max(1, math.ceil(cfg.epochs * n / (per_step * world)))  # one step = per_step x world samples
    eval_samples: list[dict] = []
    if eval_config is not None:
        # rows without an ir_caption give no sample here: don't stream a whole split to learn that
        if not (needs_ir_caption(cfg.setting, cfg.task) and not listing.has_ir_captions(eval_config, cfg.eval_split)):
            eval_samples = list(VLMStream(cfg.data, config=eval_config, split=cfg.eval_split, setting=cfg.setting,
                                          task=cfg.task, limit=cfg.eval_limit, prompts=prompts, **whole))
        if not eval_samples:
            why = "an IR-aware caption" if needs_ir_caption(cfg.setting, cfg.task) else "the answer it needs"
            print(f"train_vlm: no {cfg.setting} {cfg.task} eval sample in {eval_config!r}/{cfg.eval_split} of "
                  f"{cfg.data} (no row there has {why}); no eval loss", file=sys.stderr, flush=True)
    before = answer_loss(model, collator, eval_samples) if eval_samples else None

    model = add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets,
                     task_type=cfg.lora_task_type)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    trainer = Trainer(model=model, args=_training_args(cfg, max_steps), train_dataset=train_ds,
                      data_collator=collator)
    _logs_to_stderr(trainer)
    result = trainer.train()
    out = Path(cfg.out)
    model.save_pretrained(out / "adapter")
    processor.save_pretrained(out / "adapter")
    metrics = {"train_loss": float(result.training_loss), "steps": int(result.global_step),
               "samples_seen": int(result.global_step) * per_step * world, "trainable_params": trainable,
               "total_params": total, "eval_config": eval_config,
               "eval_split": cfg.eval_split if eval_config is not None else None, "eval_samples": len(eval_samples)}
    if eval_samples:
        metrics.update(eval_answer_loss_before=before, eval_answer_loss=answer_loss(model, collator, eval_samples),
                       eval_samples=len(eval_samples))
    metrics.update(preset=cfg.preset, quantized=quantize, processor_kwargs=proc_kw)
    settings = {name: getattr(cfg, name) for name in VLM_SETTINGS}
    from ..atomic import atomic_write
    from ..secrets import scrub
    from ..storage import public_options

    # whole or not at all, and no credential of a repo URL (config.data)
    atomic_write(out / "metrics.json", scrub(json.dumps({"config": {**asdict(cfg), "storage_options": public_options(so)},
                                                        "settings": settings, "overrides": overrides,
                                                        "metrics": metrics}, indent=2)))
    return {"metrics": metrics, "trainer": trainer, "model": model, "processor": processor, "settings": settings,
            "overrides": overrides}
