"""Write the embedded synthetic sample (all sources, splits and groups; real JPEG bytes), laid out as a build
of release rc4 is (IR-aware rows in train only, so `iraware` has a train split alone), load it back through
stock `datasets.load_dataset(path, "iraware", streaming=True)`, print counts per config and split and one
decoded triplet, and name the card's contact sheet PNG (RGB | IR | caption | IR caption).

With --sources DIR it writes what `fusionrs build` reads instead, all made up: native-layout trees of the five
sources (NWPU-RESISC45 class folders, RSICD/RSITMD images with their Karpathy-style JSON, an RS5M CSV caption
table keyed by source_dataset + source_locator and a SkyScript JSONL one keyed by sample_id), a DiffV2IR output
folder (a PNG at each record's translation.output_key, `<source>/<sample_id>.png`), an IR-aware file and an
index (public variant, gzipped; source_record_id = sample_id, as in rc4), and prints the build command for
them: a maintainer's dry run before the real sources are at hand.

Example:
  fusionrs demo --out ./fusionrs-demo
  python -c "from datasets import load_dataset; print(next(iter(load_dataset('./fusionrs-demo', 'iraware', split='train', streaming=True))))"
  fusionrs demo --sources ./demo-sources      # then run the printed `fusionrs build ...`
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
    p.add_argument("--sources", metavar="DIR", default=None,
                   help="write synthetic source trees, IR folder, caption files and index for `fusionrs build` to "
                        "DIR (instead of a finished repo), and print the build command for them")


def build_command(fx, out: str) -> list[str]:
    """The `fusionrs build` argv that rebuilds a :func:`fusionrs_hf.testing.sources.make_fixture` tree."""
    argv = ["fusionrs", "build", "--index", str(fx.index_public)]
    for src, root in fx.roots.items():
        argv += ["--source-root", f"{src}={root}"]
    argv += ["--ir-root", str(fx.ir_root), "--captions", *map(str, fx.caption_files), "--iraware", str(fx.iraware),
             "--out", out]
    return argv


def _sources(args: argparse.Namespace) -> int:
    import shlex

    from .cli import CliError
    from .testing.sources import make_fixture

    root = Path(args.sources)
    if root.exists() and any(root.iterdir()):
        if not args.overwrite:
            raise CliError(f"{root} exists and is not empty; pass --overwrite or another --sources")
        shutil.rmtree(root)
    fx = make_fixture(root.resolve(), seed=args.seed)
    argv = build_command(fx, str(root.resolve().parent / f"{root.name}-built"))
    if args.json:
        print(json.dumps({"sources": str(root.resolve()), "records": len(fx.records), "build_argv": argv}, indent=2))
        return 0
    print(f"synthetic sources for `fusionrs build` written to {root.resolve()} ({len(fx.records)} index records, "
          f"{len(fx.roots)} sources; some records have no usable caption or a missing file on purpose, so the "
          "build report has something to report)\n")
    print("build them with:\n  " + " ".join(shlex.quote(a) for a in argv))
    return 0


def run(args: argparse.Namespace) -> int:
    from .cli import CliError
    from .demo import run_demo

    if args.sources:
        return _sources(args)
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
        print(f"{cfg:<10} " + " ".join(f"{splits.get(s, '-'):>10}" for s in ("train", "validation", "test")))
    if set(res["counts"].get("iraware", {})) == {"train"}:
        print("(- : no such split; as in release rc4, IR-aware captions are in train only)")
    t = res["triplet"]
    print(f"\nfirst iraware/train triplet (streamed): {t['sample_id']} [{t['source']}]")
    print(f"  rgb: {t['rgb']}   ir: {t['ir']}")
    print(f"  caption:    {t['caption']}\n  ir_caption: {t['ir_caption']}")
    print(f"\ncontact sheet: {res['contact_sheet']}")
    return 0
