"""VLM models: the tiny offline LLaVA, pretrained and 4-bit loading, and where the LoRA adapters go."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch

LORA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Attention and MLP projections of Llama/Qwen-style language models: where the adapters go."""
LORA_TARGETS: tuple[str, ...] = ("language-model", "release")
"""``language-model``: explicit names of the LM's projections (the paper); ``release``: the seven
names as peft's ``target_modules`` list (every module so named, the vision MLP of Qwen2.5-VL too)."""
QUANTIZATIONS: tuple[str, ...] = ("none", "nf4")

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


def tiny_vlm(texts: Iterable[str], *, image_size: int = 32, patch_size: int = 8, width: int = 64,
             layers: int = 2, vocab_size: int = 600, seed: int = 0):
    """A small random ``LlavaForConditionalGeneration`` and its processor, built offline.

    The vision tower is a ``CLIPVisionModel``, the language model a ``LlamaModel`` (the same
    ``q/k/v/o`` and ``gate/up/down`` projections as Qwen2.5's), the tokenizer a byte-level BPE
    trained on ``texts`` with ChatML markers and ``<image>`` as special tokens.
    """
    from ...storage import require

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

    from ..tokenizer import train_bpe_tokenizer

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
    from ...storage import check_model, require

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
