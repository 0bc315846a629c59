"""The ``fusionrs build`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from ..captions import (
    CAPTION_POLICIES,
    CHOICES,
    DEFAULT_CAPTION_POLICY,
    DEFAULT_IR_POLICY,
    IR_POLICIES,
    RULES,
    CaptionFileError,
)
from ..index import (
    IndexFormatError,
)
from ..layout import DEFAULT_BATCH
from ..schema import SOURCES
from ..sources import Source
from .dry_run import _print_dry_run, dry_run
from .folder import FOLDER_LAYOUT, folder_to_inputs
from .images import DEFAULT_MAX_PIXELS
from .options import DEFAULT_ROWS_PER_SHARD, NON_JPEG_POLICIES, STATE_DIR, BuildError, BuildOptions
from .orchestrate import build

# CLI

def _parse_kv(values: Iterable[str], flag: str) -> dict[str, str]:
    from ..errors import CliError

    out = {}
    for v in values:
        if "=" not in v:
            raise CliError(f"{flag} {v}: expected SOURCE=DIR (SOURCE one of {', '.join(SOURCES)})")
        k, path = v.split("=", 1)
        out[k] = path
    return out


def _caption_arg(v: str) -> tuple[str | None, str]:
    head, sep, tail = v.partition("=")
    if sep and head in SOURCES:
        return head, tail
    return None, v


def configure_parser(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inputs")
    g.add_argument("--index", help="official index, JSON Lines, optionally gzip (public or internal variant)")
    g.add_argument("--source-root", action="append", default=[], metavar="SOURCE=DIR",
                   help=f"root of your copy of one source ({', '.join(SOURCES)}); repeat per source. "
                        "RGB path = DIR / source_locator")
    g.add_argument("--ir-root", help="folder of DiffV2IR outputs; IR path = DIR / translation.output_key")
    g.add_argument("--captions", nargs="+", action="extend", default=[], metavar="[SOURCE=]FILE",
                   help="caption table (.jsonl/.csv/.parquet keyed by sample_id, source_dataset+source_locator or "
                        "source_dataset+source_record_id; in rc4 source_record_id is the sample_id) "
                        "or native RSICD/RSITMD/NWPU-Captions JSON; prefix SOURCE= to force the native reader")
    g.add_argument("--iraware", action="append", default=[], metavar="FILE",
                   help="IR-aware captions keyed by sample_id (jsonl/csv/parquet; column ir_caption or caption)")
    g.add_argument("--from-folder", metavar="PATH",
                   help="instead of --index: a folder or CSV/JSONL listing of your own images, built as --source. "
                        f"Layout: {FOLDER_LAYOUT}")
    g.add_argument("--source", help="with --from-folder: the source name the rows are filed under")
    g.add_argument("--split", default="train", help="with --from-folder: split for rows without one: train, val (or validation: the same split), "
                        "test (%(default)s)")
    g.add_argument("--rights-code", default=None,
                   help="with --from-folder: rights_code of the rows (default user-supplied for a FusionRS source; "
                        "required for a source of your own)")
    n = p.add_argument_group(
        "a source of your own (--from-folder --source NAME, NAME not a FusionRS source)",
        "Declares NAME in OUT/fusionrs_sources.json: a config of its own, rows in default (and iraware where they "
        "have IR-aware captions), card tables and rights updated; the existing shards are not touched.")
    n.add_argument("--license", help="licence of the source's images and captions (shown in the card)")
    n.add_argument("--ir-kind", choices=("synthetic", "measured"), default="synthetic",
                   help="synthetic = DiffV2IR-style translation; measured = a real infrared sensor (default: %(default)s)")
    n.add_argument("--source-title", help="one-line description of the source for the card")
    n.add_argument("--source-url", help="where the source comes from")
    n.add_argument("--source-citation", help="how to cite the source")
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="repo folder to write (data/ shards, README.md, build_report.json)")
    o.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD,
                   help="planned rows per shard; fixes shard membership from the index alone (%(default)s)")
    o.add_argument("--batch", default=DEFAULT_BATCH, help="batch tag in shard names (%(default)s)")
    o.add_argument("--overwrite", action="store_true",
                   help="delete shards of this batch that the current plan would not write")
    c = p.add_argument_group("captions")
    c.add_argument("--caption-choice", choices=CHOICES, default="first",
                   help="several captions per image: first usable, random (with --seed) or all (all_captions "
                        "list column, caption = first) (%(default)s)")
    c.add_argument("--caption-policy", choices=sorted(CAPTION_POLICIES), default=DEFAULT_CAPTION_POLICY,
                   help="rc4 = the release's rule (one caption, usable when non-empty after normalisation, no "
                        "cleaning, no fallback); paper = the paper's §3.4 cleaning rules + class-name fallback "
                        "(%(default)s)")
    c.add_argument("--iraware-policy", choices=sorted(IR_POLICIES), default=DEFAULT_IR_POLICY,
                   help="rc4 = the release's status decides, captions without one pass the authors' strict-v3 "
                        "filter; strict = rc4 plus our stricter IR claim rules (%(default)s)")
    c.add_argument("--seed", type=int, default=0, help="seed for --caption-choice random")
    c.add_argument("--skip-rule", action="append", default=[], metavar="RULE",
                   help=f"disable a cleaning rule by name: {', '.join(RULES)}")
    i = p.add_argument_group("images")
    i.add_argument("--non-jpeg", choices=NON_JPEG_POLICIES, default="png",
                   help="non-JPEG input: png = keep PNG, convert others losslessly to PNG; keep = store as is; "
                        "jpeg = re-encode (lossy) (%(default)s). JPEG is always stored as is")
    i.add_argument("--jpeg-quality", type=int, default=95, help="quality for --non-jpeg jpeg (%(default)s)")
    i.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="source images with more pixels (width x height, read from the header before any decode) "
                        "are not written: too_many_pixels (%(default)s; the loaders refuse more than this default "
                        "too: raise their max_pixels= as well)")
    i.add_argument("--allow-size-mismatch", action="store_true",
                   help="also write pairs whose IR has neither the RGB's aspect ratio nor DiffV2IR's size for it "
                        "(dropped as aspect_mismatch by default). Pairs of one aspect ratio at two sizes "
                        "(DiffV2IR writes 512 px) and IRs of DiffV2IR's 64-rounded size (1000x700 -> 512x384) "
                        "are always written and counted in the report")
    r = p.add_argument_group("run")
    r.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)),
                   help="worker processes, one shard each at a time (%(default)s)")
    r.add_argument("--on-bad-line", choices=("error", "report"), default="error",
                   help="a bad index line stops the build (error, exit 2) or is listed as dropped (report)")
    r.add_argument("--strict", action="store_true", help="exit 1 if any index record was not written")
    r.add_argument("--json", action="store_true", help="print the build report as one JSON object")
    r.add_argument("--dry-run", action="store_true",
                   help="write nothing: from file metadata only, show per source and split how many records have "
                        "RGB, IR, caption and IR-aware caption, the rows a build would write and which release "
                        "checks could hold (seconds, not hours)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    from ..errors import CliError

    common = dict(
        out=args.out, rows_per_shard=args.rows_per_shard, batch=args.batch, workers=args.workers,
        caption_choice=args.caption_choice, caption_policy=args.caption_policy,
        iraware_policy=args.iraware_policy, seed=args.seed, skip_rules=list(args.skip_rule),
        non_jpeg=args.non_jpeg, jpeg_quality=args.jpeg_quality, max_pixels=args.max_pixels, allow_size_mismatch=args.allow_size_mismatch,
        on_bad_line=args.on_bad_line, overwrite=args.overwrite, progress=not args.quiet,
    )
    captions = [_caption_arg(v) for v in args.captions]
    if args.from_folder:
        if args.index:
            raise CliError("--from-folder and --index are exclusive")
        if not args.source:
            raise CliError(f"--from-folder needs --source (one of {', '.join(SOURCES)}, or a name of your own)")
        new_source = None
        rights = args.rights_code
        if args.source not in SOURCES:
            new_source = Source(args.source, args.source_title or f"{args.source} (this repository's own source)",
                                f"Licence: {args.license}." if args.license else "See the rows' `rights_code`.",
                                rights, args.license, args.source_url, args.source_citation, args.ir_kind)
            common.update(new_source=new_source, report_name=f"build_report.{new_source.dir}.json")
        try:
            probe = BuildOptions(index="", **common)
            reg = probe.registry()  # a bad name, a clash or a missing rights code: one line, nothing written
            declared = reg.get(args.source)
            rights = rights or (declared.rights_code if declared else None) or "user-supplied"
            index, base, ir_base, caps, ira = folder_to_inputs(
                args.from_folder, args.source, Path(args.out) / STATE_DIR / "folder", split=args.split,
                ir_root=args.ir_root, rights_code=rights, known_sources=reg.names,
                ir_kind=declared.ir_kind if declared else "synthetic")
        except BuildError as e:
            raise CliError(str(e)) from None
        return BuildOptions(index=str(index), source_roots={args.source: base}, ir_root=ir_base,
                            captions=[(None, str(caps)), *captions],
                            iraware=[*([str(ira)] if ira else []), *args.iraware], **common)
    if not args.index:
        raise CliError("--index is required (or --from-folder)")
    return BuildOptions(index=args.index, source_roots=_parse_kv(args.source_root, "--source-root"),
                        ir_root=args.ir_root, captions=captions, iraware=list(args.iraware), **common)


def run(args: argparse.Namespace) -> int:
    from ..errors import CliError

    opts = options_from_args(args)
    if args.dry_run:
        try:
            d = dry_run(opts)
        except (BuildError, IndexFormatError, CaptionFileError) as e:
            raise CliError(str(e)) from None
        print(json.dumps(d, ensure_ascii=False)) if args.json else _print_dry_run(d)
        return 0
    try:
        report = build(opts)
    except BuildError as e:
        raise CliError(str(e)) from None
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        _print_summary(report)
    if report["index_records"] and not report["written"]["total"]:
        reasons = ", ".join(f"{k} {v['count']:,}" for k, v in report["dropped"]["by_reason"].items())
        print(f"fusionrs build: 0 of {report['index_records']:,} records written ({reasons}); expected RGB files "
              "at SOURCE_ROOT/source_locator and IR files at IR_ROOT/translation.output_key "
              f"(see {Path(report['out']) / report['options']['report_name']})", file=sys.stderr)
        return 1
    missing = report["dropped"]["total"] - report["dropped"]["expected_by_release"] + report["bad_index_lines"]
    if args.strict and missing:
        print(f"fusionrs build: --strict: {missing} index record(s) not written (see build_report.json)",
              file=sys.stderr)
        return 1
    return 0


def _print_summary(report: dict) -> None:
    w, d, s = report["written"], report["dropped"], report["shards"]
    print(f"index records: {report['index_records']:,}   written: {w['total']:,}   dropped: {d['total']:,}"
          f"   bad lines: {report['bad_index_lines']}")
    print(f"shards: {s['planned']} planned, {s['written']} written, {s['skipped_unchanged']} unchanged (skipped), "
          f"{s['empty']} empty")
    for reason, b in d["by_reason"].items():
        ex = ", ".join(b.get("sample_ids", [])[:3]) or ", ".join(f"line {n}" for n in b.get("lines", [])[:3])
        print(f"  dropped {reason}: {b['count']:,} (e.g. {ex})")
    fired = {k: v["count"] for k, v in report["captions"]["rules"].items() if v["count"]}
    if fired:
        print("caption rules fired: " + ", ".join(f"{k}={v}" for k, v in fired.items()))
    print(f"class-name fallback: {report['captions']['class_name_fallback']['count']:,}")
    print(f"report: {Path(report['out']) / report['options']['report_name']}")
