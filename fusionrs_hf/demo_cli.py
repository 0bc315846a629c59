"""Write the embedded synthetic sample (all sources, splits and groups; real JPEG bytes), load it back
through stock `datasets.load_dataset(path, "iraware", streaming=True)`, print counts per config and
split and one decoded triplet, and save a contact sheet PNG (RGB | IR | caption | IR caption).

Example:
  fusionrs demo --out ./fusionrs-demo
  python -c "from datasets import load_dataset; print(next(iter(load_dataset('./fusionrs-demo', 'iraware', split='train', streaming=True))))"
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="fusionrs-demo", help="folder to write the sample repo to (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the sample is identical for a given seed")
    p.add_argument("--overwrite", action="store_true", help="remove OUT first if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the human summary")


def run(args: argparse.Namespace) -> int:
    from .cli import CliError
    from .demo import run_demo

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise CliError(f"{out} exists and is not empty; pass --overwrite or another --out")
        shutil.rmtree(out)
    res = run_demo(out, seed=args.seed)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"FusionRS synthetic sample written to {res['repo']}\n")
    print(f"{'config':<10} " + " ".join(f"{s:>10}" for s in ("train", "validation", "test")))
    for cfg, splits in res["counts"].items():
        print(f"{cfg:<10} " + " ".join(f"{splits.get(s, 0):>10}" for s in ("train", "validation", "test")))
    t = res["triplet"]
    print(f"\nfirst iraware/train triplet (streamed): {t['sample_id']} [{t['source']}]")
    print(f"  rgb: {t['rgb']}   ir: {t['ir']}")
    print(f"  caption:    {t['caption']}\n  ir_caption: {t['ir_caption']}")
    print(f"\ncontact sheet: {res['contact_sheet']}")
    return 0
