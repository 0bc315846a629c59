"""LoRA instruction tuning of a vision-language model on FusionRS IR images (the paper's VLM track).

    # GPU, the paper's settings:
    python examples/train_vlm.py --data fusionrs/fusionrs --config iraware --setting B-iraware \
        --model Qwen/Qwen2.5-VL-3B-Instruct
    python examples/train_vlm.py --data ./fusionrs --preset rc4-release --model Qwen/Qwen2.5-VL-7B-Instruct
    python examples/train_vlm.py --data ./sample --model tiny --steps 4      # offline, CPU, seconds

Settings (--preset): paper (the default) is what the paper's text says: LoRA rank 32, alpha 64,
dropout 0.05 on the language model's attention and MLP projections; one epoch; cosine schedule;
warmup ratio 0.03; bf16 where the GPU supports it; per-device batch 1; gradient accumulation 8;
gradient checkpointing; the paper's instruction templates (lr 2e-4 and seed 0 are ours).
rc4-release is what the released adapters were trained with: QLoRA (4-bit NF4 base, double
quantization; needs bitsandbytes and a CUDA GPU, else one error line unless --quantization none),
LoRA rank 16, alpha 32, dropout 0.05, task CAUSAL_LM, on every module named q/k/v/o/gate/up/down_proj
(the vision MLP of Qwen2.5-VL included), linear schedule without warmup, lr 2e-4, seed 42, the
release's caption prompt (task ir_caption only), and the processor loaded with max_pixels=401408 (the
release's --max-pixels default; its processor_config.json longest_edge) and its own min_pixels. Under a preset, --steps, --epochs, --seed,
--batch-size, --grad-accum and --quantization may still be changed (stderr says so); another
option that contradicts the preset is one error line, exit 2.

--setting picks the supervision (A-original: original captions, B-iraware: IR-aware captions,
C-mixed: both) and --task the instruction (ir_caption, object_qa, scene_qa, ir_cue_qa). Prompt
tokens (the user turn and its image tokens) are masked out of the labels: only the answer is learned.

The last stdout line is one JSON object: train loss, steps, parameter counts and the answer-token
loss on --eval-split before and after training, and ``eval_config`` / ``eval_split`` (what that
loss was measured on). The LoRA adapter and processor go to --out/adapter.

Missing splits: the evaluation config is --eval-config, else --config. When --config has no
--eval-split (the rc4 release ships IR-aware captions for train only, so ``iraware`` has no
validation or test), ``default`` of the same split is used instead, with one line on stderr.
Rows there carry no IR-aware caption, so B-iraware then has no eval sample: stderr says so and
``eval_samples`` is 0 (A-original and C-mixed still get an eval loss on the original captions).
A split that --eval-config (or --config, for train) does not have is one error line on stderr
naming the repo, config, split and the splits it has; exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from fusionrs_hf.layout import CONFIG_NAMES, SPLITS
from fusionrs_hf.storage import add_storage_option_argument, storage_options_of
from fusionrs_hf.train.errors import run_main
from fusionrs_hf.train.vlm import (
    LORA_TARGETS,
    PRESETS,
    PROMPT_SETS,
    QUANTIZATIONS,
    VLMTrainConfig,
    train_vlm,
)
from fusionrs_hf.vlm_data import SETTINGS, TASKS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="FusionRS repo: a Hub dataset id, hf:// or any fsspec URL (s3://..., with --storage-option), or a local folder")
    p.add_argument("--preset", default=None, choices=tuple(PRESETS), help="paper (the default) | rc4-release")
    p.add_argument("--config", default="iraware", help="data config (default iraware)")
    p.add_argument("--setting", default="B-iraware", choices=SETTINGS)
    p.add_argument("--task", default="ir_caption", choices=TASKS)
    p.add_argument("--model", default="tiny", help="tiny | a transformers image-text-to-text model id or folder")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs over the data)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lr", type=float, default=None, help="default 2e-4 (both presets)")
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--lora-alpha", type=int, default=None)
    p.add_argument("--lora-dropout", type=float, default=None)
    p.add_argument("--lora-targets", default=None, choices=LORA_TARGETS)
    p.add_argument("--scheduler", dest="lr_scheduler_type", default=None, help="cosine (paper) | linear (release) | ...")
    p.add_argument("--warmup-ratio", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per device")
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--quantization", default=None, choices=QUANTIZATIONS, help="nf4: 4-bit base (QLoRA)")
    p.add_argument("--prompts", default=None, choices=PROMPT_SETS, help="paper templates or the release's prompt")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="processor's largest image in pixels (Qwen-style processors; default: the processor's, "
                        "rc4-release 401408)")
    p.add_argument("--min-pixels", type=int, default=None, help="processor's smallest image in pixels (default: its own)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--limit", type=int, default=None, help="train on the first N samples only")
    p.add_argument("--eval-split", default="validation", type=str.lower, choices=(*SPLITS, "none"),
                   help="'none' to skip the before/after eval loss")
    p.add_argument("--eval-config", default=None, choices=CONFIG_NAMES,
                   help="config to evaluate on (default: --config, or 'default' when that lacks --eval-split)")
    p.add_argument("--eval-limit", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    add_storage_option_argument(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default="runs/vlm", help="folder for the adapter and metrics.json")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    options = storage_options_of(p, a)  # a bad one: exit 2, one line naming it
    cfg = VLMTrainConfig(
        data=a.data, preset=a.preset, config=a.config, setting=a.setting, task=a.task, model=a.model, out=a.out,
        steps=a.steps, epochs=a.epochs, lr=a.lr, lora_r=a.lora_r, lora_alpha=a.lora_alpha,
        lora_dropout=a.lora_dropout, lora_targets=a.lora_targets, lr_scheduler_type=a.lr_scheduler_type,
        warmup_ratio=a.warmup_ratio, per_device_batch_size=a.batch_size, gradient_accumulation_steps=a.grad_accum,
        gradient_checkpointing=False if a.no_gradient_checkpointing else None, quantization=a.quantization,
        prompts=a.prompts, max_pixels=a.max_pixels, min_pixels=a.min_pixels, bf16={"auto": None, "on": True, "off": False}[a.bf16], limit=a.limit,
        eval_split=None if a.eval_split == "none" else a.eval_split, eval_config=a.eval_config,
        eval_limit=a.eval_limit, num_workers=a.num_workers, seed=a.seed, storage_options=options,
    )

    def body() -> int:
        run = train_vlm(cfg)
        print(json.dumps(run["metrics"]), flush=True)
        return 0

    # every error is one scrubbed line: exit 2 for unusable input ("train_vlm: config ... has no ... split in
    # REPO (its splits: ...)", a bad preset option, an unreachable Hub or store, a shard that is gone, an image
    # that does not decode, a missing extra, torchrun), exit 1 for anything else (FUSIONRS_TRACEBACK=1: where)
    return run_main("train_vlm", body)


if __name__ == "__main__":
    sys.exit(main())
