"""Tri-modal CLIP (RGB–IR–text) on FusionRS: the paper's retrieval track, in one command.

    python examples/train_clip.py --data ./fusionrs --preset rc4-release --model openai/clip-vit-base-patch32
    python examples/train_clip.py --data fusionrs/fusionrs --config iraware --model ViT-B-32:openai --steps 2000
    python examples/train_clip.py --data ./sample --model tiny --steps 200          # offline, CPU, seconds
    torchrun --nproc_per_node 8 examples/train_clip.py --data ./fusionrs --preset rc4-release \\
        --batch-size 16 --model openai/clip-vit-base-patch32          # 8 GPUs: global batch 8 x 16 = 128

One image encoder serves RGB and IR; the loss combines symmetric InfoNCE terms (one learnable
temperature) over the pairs of --recipe: the authors' ablations rgb_text, ir_text, dual_text,
trimodal, or ours (580K-only = the trimodal pairs; A-original, B-iraware, C-mixed on IR-aware
captions, which in the release are VLM settings), summed or averaged (--loss-reduction).

Settings: without --preset, ours (sum of the terms, batch 32, lr 2e-3 for tiny / 1e-5 otherwise,
AdamW (0.9, 0.98) eps 1e-6, decay 0.1 on weight matrices, cosine with 3 % warmup, clipping at 1.0,
temperature clamped at 100, bf16 on a capable GPU, seed 0, last weights kept, the streaming loader's
order and our fast pixels).
--preset paper: the paper's loss (sum of RGB–text, IR–text and RGB–IR; the paper states no
optimiser settings, those stay ours). --preset rc4-release: the authors' released run (mean of the
three terms, lr 5e-6, 500 warmup steps then cosine, batch 128, 3 epochs, fp16 + gradient scaler on
a GPU, AdamW defaults with decay 0.1 on every parameter, no clipping, unclamped temperature, seed
42; --shuffle global: a uniform permutation of every train row each epoch, the release's
DataLoader(shuffle=True, generator seeded 42) over a map-style dataset, rows without a usable
caption left out; --preprocess processor: the model's CLIPImageProcessor (PIL backend) on fully
decoded images, for training and every evaluation, recorded in the checkpoint; --select release:
validation loss after every epoch (batch --val-batch-size 128, every validation row), best = lowest,
latest = last epoch, then the higher validation Mean R of [best, latest], a tie keeping best).
Under a preset, --steps, --epochs, --batch-size, --val-batch-size, --seed, --recipe (the authors'
four), --rgb-ir-weight and --ir-view may still be changed (stderr says so); any other option that
contradicts the preset is one error line, exit 2.
--ir-view (translated, grayscale, rgb_duplicate) is the authors' IR-view ablation for training.

--model is ``tiny`` (random small CLIPModel, local tokenizer), a transformers CLIP id or folder
(``openai/clip-vit-base-patch32``, the release's base), or an open_clip name (``ViT-B-32``,
``ViT-B-32:laion2b_s34b_b79k``; needs ``pip install 'fusionrs-hf[clip]'``).

Evaluation goes through ``fusionrs eval``'s code with its defaults (--eval-protocol auto: rc4 on
rows with release flags, else all-rows; --eval-ties pessimistic), so the last stdout line, one
JSON object with Recall@1/5/10 per direction, ``mean_r`` (the paper's Mean R over IR↔Text and
RGB↔IR), ``text_mean``, ``pair_mean``, ``mean_r_all6``, ``chance_r1``, the protocol and tie rule,
equals ``fusionrs eval DATA --model OUT/checkpoint --config EVAL_CONFIG --split EVAL_SPLIT``.
Progress goes to stderr (one JSON record per logged step; also --out/train_log.jsonl). The
checkpoint is written to --out/checkpoint (with --select best-val-recall or release the selected
one; when that is not the last weights, those also go to --out/last_checkpoint); metrics.json
records the selection (per-epoch validation losses, the candidates and what was kept).

Several processes: under torchrun (WORLD_SIZE > 1) the run is data-parallel (DistributedDataParallel; nccl
on CUDA with cuda:LOCAL_RANK, gloo on the CPU). Each process reads its share of the train rows and
--batch-size is PER PROCESS: the contrastive loss sees the global batch of world size x --batch-size rows
(every process's embeddings gathered with their gradients), as one process with that batch would. The
authors' run used batch 128 in one process, so --preset rc4-release on 8 GPUs matches it with
--batch-size 16. Rank 0 alone evaluates, selects, saves, writes train_log.jsonl and metrics.json (its
"distributed" record: world size, batch sizes, each process's weights digest) and prints the last line;
--select release's validation loss is the one-process value (its batches are shared out, not its rows). An
unusable input found before training, or a training batch that cannot be read, is one error line and exit 2
on every process.

Missing splits: the evaluation config is --eval-config, else the data config (--config or the
recipe's). An implied config without --eval-split (the rc4 release ships IR-aware captions for
train only, so ``iraware`` has no validation or test) is evaluated on ``default`` of the same
split instead, with one line on stderr; the final line's ``eval_config`` / ``eval_split`` say what
was used. A split that --eval-config (or the data config, for train) does not have is one error
line on stderr naming the repo, config, split and the splits it has; exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from fusionrs_hf.eval import PRECISIONS as EVAL_PRECISIONS
from fusionrs_hf.layout import CONFIG_NAMES, SPLITS
from fusionrs_hf.storage import add_storage_option_argument, storage_options_of
from fusionrs_hf.train.clip import (
    DECAY_ON,
    IR_VIEWS,
    LOSS_REDUCTIONS,
    PRECISIONS,
    PREPROCESSES,
    PRESETS,
    RECIPES,
    SCHEDULES,
    SELECTIONS,
    SHUFFLE_MODES,
    ClipTrainConfig,
    train_clip,
)
from fusionrs_hf.train.errors import run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="FusionRS repo: a Hub dataset id, hf:// or any fsspec URL (s3://..., with --storage-option), or a local folder")
    p.add_argument("--preset", default=None, choices=tuple(PRESETS), help="paper | rc4-release (default: ours)")
    p.add_argument("--config", default=None, help="data config (default: the recipe's: default or iraware)")
    p.add_argument("--recipe", default=None, help=f"loss pairs: {', '.join(RECIPES)} (or A, B, C); default "
                                                  "580K-only, or trimodal under a preset")
    p.add_argument("--loss-reduction", default=None, choices=LOSS_REDUCTIONS, help="sum (ours, the paper) or mean (the release)")
    p.add_argument("--rgb-ir-weight", type=float, default=None, help="weight of the RGB–IR term (default 1)")
    p.add_argument("--ir-view", default=None, choices=IR_VIEWS, help="second visual view for training (default translated)")
    p.add_argument("--model", default="tiny", help="tiny | transformers CLIP id/folder | open_clip name[:pretrained]")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag or file")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs over the train split)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None,
                   help="rows per step and per process (under torchrun the loss sees world size x this; default 32, "
                        "the rc4-release preset's 128)")
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 for tiny (from scratch), 1e-5 for pretrained models")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--weight-decay-on", default=None, choices=DECAY_ON, help="matrices (ours) or all parameters (the release)")
    p.add_argument("--adam-betas", type=float, nargs=2, default=None, metavar=("B1", "B2"))
    p.add_argument("--adam-eps", type=float, default=None)
    p.add_argument("--schedule", default=None, choices=SCHEDULES)
    p.add_argument("--warmup-ratio", type=float, default=None)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--grad-clip", type=float, default=None, help="max gradient norm; 0 for none")
    p.add_argument("--clamp-temperature", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--precision", default=None, choices=PRECISIONS)
    p.add_argument("--select", default=None, choices=SELECTIONS,
                   help="last weights (ours), best validation Mean R over epoch ends, or release (lowest validation "
                        "loss vs last epoch, the higher validation Mean R of the two; the rc4-release preset's)")
    p.add_argument("--val-batch-size", type=int, default=None,
                   help="batch of --select release's validation-loss pass (default: --batch-size; the release 128)")
    p.add_argument("--shuffle", default=None, choices=SHUFFLE_MODES,
                   help="stream (ours: row groups + 1,000-row buffer) or global (a uniform permutation of all rows "
                        "each epoch, map-style: the rc4-release preset's)")
    p.add_argument("--preprocess", default=None, choices=PREPROCESSES,
                   help="fast (ours: reduced-scale decode, bilinear) or processor (the model's CLIPImageProcessor on "
                        "PIL images: the rc4-release preset's; transformers models only)")
    p.add_argument("--dedupe-captions", default=None, action=argparse.BooleanOptionalAction,
                   help="rows of a batch with the same caption string are not each other's negatives")
    p.add_argument("--image-size", type=int, default=64, help="tiny model only; checkpoints use their own size")
    p.add_argument("--eval-split", default="validation", choices=[s for s in SPLITS if s != "train"])
    p.add_argument("--eval-config", default=None, choices=CONFIG_NAMES,
                   help="config to evaluate on (default: the data config, or 'default' when that lacks --eval-split)")
    p.add_argument("--eval-text", default="caption", choices=("caption", "ir_caption"))
    p.add_argument("--eval-protocol", default="auto", choices=("auto", "rc4", "all-rows"))
    p.add_argument("--eval-ties", default="pessimistic", choices=("pessimistic", "topk"))
    p.add_argument("--eval-batch-size", type=int, default=None, help="default: fusionrs eval's")
    p.add_argument("--eval-precision", default="auto", choices=EVAL_PRECISIONS)
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N rows only")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=0)
    add_storage_option_argument(p)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", default="runs/clip", help="folder for the checkpoint, train_log.jsonl, metrics.json")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    options = storage_options_of(p, a)  # a bad one: exit 2, one line naming it
    cfg = ClipTrainConfig(
        data=a.data, preset=a.preset, config=a.config, recipe=a.recipe, model=a.model, pretrained=a.pretrained,
        out=a.out, steps=a.steps, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
        weight_decay_on=a.weight_decay_on, adam_betas=tuple(a.adam_betas) if a.adam_betas else None,
        adam_eps=a.adam_eps, schedule=a.schedule, warmup_ratio=a.warmup_ratio, warmup_steps=a.warmup_steps,
        loss_reduction=a.loss_reduction, rgb_ir_weight=a.rgb_ir_weight, ir_view=a.ir_view, grad_clip=a.grad_clip,
        clamp_temperature=a.clamp_temperature, precision=a.precision, seed=a.seed, select=a.select,
        val_batch_size=a.val_batch_size, shuffle=a.shuffle, preprocess=a.preprocess,
        dedupe_captions=a.dedupe_captions, image_size=a.image_size, eval_split=a.eval_split,
        eval_config=a.eval_config, eval_text=a.eval_text, eval_protocol=a.eval_protocol, eval_ties=a.eval_ties,
        eval_batch_size=a.eval_batch_size, eval_precision=a.eval_precision, eval_limit=a.eval_limit,
        eval_every=a.eval_every, log_every=a.log_every, num_workers=a.num_workers, device=a.device, storage_options=options,
    )

    def body() -> int:
        run = train_clip(cfg)
        if run.get("rank", 0) == 0:  # under torchrun, one line for the run: rank 0's
            line = {**run["line"], "preset": a.preset, "eval_config": run["eval_config"],
                    "eval_split": run["eval_split"]}
            print(json.dumps(line), flush=True)
        return 0

    # every error is one scrubbed line: exit 2 for unusable input ("train_clip: config ... has no ... split in
    # REPO (its splits: ...)", a bad preset option, an unreachable Hub or store, a shard that is gone, an image
    # that does not decode, a missing extra, a process group that does not start), exit 1 for anything else
    # (FUSIONRS_TRACEBACK=1: where); under torchrun every process exits with the same code
    return run_main("train_clip", body)


if __name__ == "__main__":
    sys.exit(main())
