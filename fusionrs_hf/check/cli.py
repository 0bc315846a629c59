"""``fusionrs check``: its options, the run (exit codes) and the human-readable summary."""

from __future__ import annotations

import argparse
import json

from ..secrets import scrub
from ..terminal import printable
from .findings import KINDS, CheckReport, CheckTargetError
from .images import IR_SPREAD_THRESHOLD
from .repo import check_repo


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="repo folder, fsspec URL (hf://datasets/u/n@rev) or Hub id u/n")
    p.add_argument("--fast", action="store_true", help="columns only: no image decode, no content leakage checks")
    p.add_argument("--revision", help="Hub branch, tag, commit or refs/pr/N (Hub targets only)")
    p.add_argument("--workers", type=int, default=None, help="parallel shard readers (default: CPU count)")
    p.add_argument("--ir-threshold", type=float, default=IR_SPREAD_THRESHOLD,
                   help="largest mean channel spread of an ir image, 0-255 levels (default: %(default)s)")
    p.add_argument("--release", default="auto",
                   help="also run the authors' release checks for this release (rc4 = rc4-20260727); 'auto' "
                        "(default) when the build report names a known release, 'none' to skip")
    p.add_argument("--index", help="with --release: the index file to verify too (SHA-256, rows, blocked fields)")
    p.add_argument("--json", action="store_true", help="print the full report as one JSON object on stdout")
    p.add_argument("--max-print", type=int, default=50, help="findings listed in the human summary (default: 50)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from ..storage import add_storage_option_argument

    add_storage_option_argument(p)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except Exception as e:
        if args.json:  # a script reading stdout gets one JSON object on every path, as from push
            print(json.dumps({"ok": False, "error": printable(scrub(str(e))) or type(e).__name__}))
        raise  # the one stderr line and the exit code, as for every sub-command


def _run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..cli import EXIT_FINDINGS, EXIT_OK, CliError
    from ..storage import parse_storage_options

    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be >= 1")
    if not 0 <= args.ir_threshold <= 255:
        raise CliError(f"--ir-threshold {args.ir_threshold}: a channel spread in levels, 0 to 255")
    if args.index and not Path(args.index).is_file():
        raise CliError(f"--index {args.index}: no such file")
    try:
        options = parse_storage_options(getattr(args, "storage_options", None))
    except ValueError as e:
        raise CliError(str(e)) from None
    try:
        report = check_repo(args.target, fast=args.fast, revision=args.revision, workers=args.workers,
                            progress=not args.quiet, ir_threshold=args.ir_threshold,
                            release=None if args.release == "none" else args.release, index=args.index,
                            storage_options=options)
    except CheckTargetError as e:
        raise CliError(scrub(str(e))) from None
    if args.index and "release" not in report.stats:
        print(f"fusionrs check: warning: --index {args.index} was not read: no release checks ran (name the "
              "release with --release rc4)", file=sys.stderr)
    text = json.dumps(report.to_dict(), indent=2) if args.json else summary(report, max_print=args.max_print)
    print(scrub(text))  # a finding quoting a server's error text must not print a token either
    return EXIT_OK if report.ok else EXIT_FINDINGS


def summary(report: CheckReport, max_print: int = 50) -> str:
    """The human-readable report: totals, counts per kind, then the first findings."""
    st = report.stats
    lines = [f"fusionrs check {report.target} ({report.mode}): {st.get('shards', 0)} shards, "
             f"{st.get('rows', 0)} rows, {st.get('images_decoded', 0)} images decoded, {st.get('seconds', 0)} s"]
    if "release" in st:
        lines.append(f"release checks ({st['release']['release']}):")
        for c in st["release"]["checks"]:
            extra = f" ({c['detail']})" if c["detail"] else ""
            lines.append(f"  {c['status']:<14} {c['check']}: {c['description']}{extra}")
    if report.ok:
        lines.append("OK: no findings")
        return "\n".join(lines)
    for kind, n in report.counts_by_kind().items():
        lines.append(f"  {kind:<28} {n:>6}  {KINDS.get(kind, '')}")
    shown = report.findings[:max(0, max_print)]
    total = sum(report.counts_by_kind().values())  # with those past the per-kind cap, only counted
    lines.append(f"findings (showing {len(shown)} of {total}):")
    lines.extend(printable(f"  [{f.kind}] {f.location()}: {f.message}") for f in shown)  # ids from data: one line
    lines.append(f"FAILED: {total} finding(s)")
    return "\n".join(lines)
