"""Tri-modal CLIP (RGB–IR–text) on FusionRS: the paper's retrieval track, in one command.

    python examples/train_clip.py --data fusionrs/fusionrs --config iraware --model ViT-B-32:openai --steps 2000
    python examples/train_clip.py --data ./sample --model tiny --steps 200          # offline, CPU, seconds

One image encoder serves RGB and IR; the loss is L(rgb,text) + L(ir,text) + L(rgb,ir) (symmetric
InfoNCE, one learnable temperature), with the pairs chosen by --recipe (580K-only, A-original,
B-iraware, C-mixed). --model is ``tiny`` (random small CLIPModel, local tokenizer), a transformers
CLIP id or folder (``openai/clip-vit-base-patch32``), or an open_clip name (``ViT-B-32``,
``ViT-B-32:laion2b_s34b_b79k``; needs ``pip install 'fusionrs-hf[train]'``).

Progress goes to stderr (one JSON record per logged step; also --out/train_log.jsonl); the last
stdout line is one JSON object with the eval split's Recall@1/5/10 per direction, ``mean_r`` (the
paper's Mean R over IR↔Text and RGB↔IR), ``mean_r_all6`` and ``chance_r1`` (100 / gallery size).
The checkpoint is written to --out/checkpoint (reload it with ``--model OUT/checkpoint``).

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

from fusionrs_hf.layout import CONFIG_NAMES, SPLITS
from fusionrs_hf.splits import MissingSplitError
from fusionrs_hf.train.clip import RECIPES, ClipTrainConfig, final_line, train_clip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="FusionRS repo: Hub dataset id or local folder")
    p.add_argument("--config", default=None, help="data config (default: the recipe's: default or iraware)")
    p.add_argument("--recipe", default="580K-only", help=f"loss pairs: {', '.join(RECIPES)} (or A, B, C)")
    p.add_argument("--model", default="tiny", help="tiny | transformers CLIP id/folder | open_clip name[:pretrained]")
    p.add_argument("--pretrained", default=None, help="open_clip pretrained tag or file")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: --epochs over the train split)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="default 2e-3 for tiny (from scratch), 1e-5 for pretrained models")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup-ratio", type=float, default=0.03)
    p.add_argument("--dedupe-captions", action="store_true",
                   help="rows of a batch with the same caption string are not each other's negatives")
    p.add_argument("--image-size", type=int, default=64, help="tiny model only; checkpoints use their own size")
    p.add_argument("--eval-split", default="validation", choices=[s for s in SPLITS if s != "train"])
    p.add_argument("--eval-config", default=None, choices=CONFIG_NAMES,
                   help="config to evaluate on (default: the data config, or 'default' when that lacks --eval-split)")
    p.add_argument("--eval-text", default="caption", choices=("caption", "ir_caption"))
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N rows only")
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--out", default="runs/clip", help="folder for the checkpoint, train_log.jsonl, metrics.json")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cfg = ClipTrainConfig(
        data=a.data, config=a.config, recipe=a.recipe, model=a.model, pretrained=a.pretrained, out=a.out,
        steps=a.steps, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
        warmup_ratio=a.warmup_ratio, dedupe_captions=a.dedupe_captions, image_size=a.image_size,
        eval_split=a.eval_split, eval_config=a.eval_config, eval_text=a.eval_text, eval_limit=a.eval_limit,
        eval_every=a.eval_every, log_every=a.log_every, num_workers=a.num_workers, seed=a.seed, device=a.device,
    )
    try:
        run = train_clip(cfg)
    except MissingSplitError as exc:
        print(exc, file=sys.stderr)  # one line: "train_clip: config ... has no ... split in REPO (its splits: ...)"
        return 2
    line = {**final_line(run["metrics"]), "eval_config": run["eval_config"], "eval_split": run["eval_split"]}
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
