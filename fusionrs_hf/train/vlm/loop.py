"""The training run (build, train with transformers' Trainer, evaluate, save) and its answer-token loss."""

from __future__ import annotations

import inspect
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from .config import PRESETS, VLM_SETTINGS, VLMTrainConfig, processor_kwargs, prompt_overrides, resolve_config
from .data import IGNORE_INDEX, VLMCollator, VLMStream, _texts_for_tokenizer
from .errors import PresetError
from .models import add_lora, load_quantized, load_vlm, quantization_missing, tiny_vlm


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
    from ...storage import check_model, require
    from ..errors import refuse_distributed

    # one process only: under torchrun on CPU every process trained the whole split on its own (the Trainer does
    # not go distributed there) and all wrote the same adapter; a multi-process run is not tested here
    refuse_distributed("train_vlm")
    for mod, why in (("transformers", "the Hugging Face Trainer"), ("peft", "LoRA"), ("accelerate", "the Trainer")):
        require(mod, extra="train", what=f"train_vlm ({why})", load=False)  # present? (imported below)
    from ...splits import repo_splits
    from ...torch import _resolve_rank
    from ...vlm_data import needs_ir_caption

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
            from ..errors import NoTrainingDataError

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
    from ...atomic import atomic_dir

    with atomic_dir(out / "adapter") as tmp:  # adapter weights and processor files whole, or the old ones
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    metrics = {"train_loss": float(result.training_loss), "steps": int(result.global_step),
               "samples_seen": int(result.global_step) * per_step * world, "trainable_params": trainable,
               "total_params": total, "eval_config": eval_config,
               "eval_split": cfg.eval_split if eval_config is not None else None, "eval_samples": len(eval_samples)}
    if eval_samples:
        metrics.update(eval_answer_loss_before=before, eval_answer_loss=answer_loss(model, collator, eval_samples),
                       eval_samples=len(eval_samples))
    metrics.update(preset=cfg.preset, quantized=quantize, processor_kwargs=proc_kw)
    settings = {name: getattr(cfg, name) for name in VLM_SETTINGS}
    from ...atomic import atomic_write
    from ...secrets import scrub
    from ...storage import public_options

    # whole or not at all, and no credential of a repo URL (config.data)
    atomic_write(out / "metrics.json", scrub(json.dumps({"config": {**asdict(cfg), "storage_options": public_options(so)},
                                                        "settings": settings, "overrides": overrides,
                                                        "metrics": metrics}, indent=2)))
    return {"metrics": metrics, "trainer": trainer, "model": model, "processor": processor, "settings": settings,
            "overrides": overrides}
