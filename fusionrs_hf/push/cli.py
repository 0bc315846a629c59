"""``fusionrs push``: its options, its text and ``--json`` output, and its exit codes (0 pushed, 1 failed or
the check found problems, 2 unusable input or no Hub)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..card import CARD_NAME
from ..errors import CliError
from .flow import push_repo
from .plan import (
    MAX_FILES_PER_COMMIT,
    TERMS_WARNING,
    CheckFailed,
    LocalRepoError,
    PushError,
    PushHubUnreachable,
    PushRefused,
    PushResult,
    _fmt_bytes,
    logger,
    scrub,
)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("local_repo", metavar="LOCAL_REPO", help="local repo folder (holds data/... and README.md)")
    p.add_argument("target", metavar="REPO_ID",
                   help="Hub dataset repo OWNER/NAME (or hf://datasets/OWNER/NAME), or an fsspec URL "
                        "(file:///abs/path, s3://bucket/prefix, ...; credentials go in --storage-option, not the URL), "
                        "or a folder path (absolute, ./relative, or an existing folder)")
    p.add_argument("--revision", help="Hub branch to push to (created from main if missing); default main")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--private", dest="private", action="store_true", default=True,
                     help="create a missing Hub repo as private (the default)")
    vis.add_argument("--public", dest="private", action="store_false",
                     help="create a missing Hub repo as public (check the rights summary first)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, bytes, rights) and exit")
    p.add_argument("--prune", action="store_true",
                   help="delete remote parquet files under data/ that the local repo does not have")
    p.add_argument("--message", help="commit message (default: a summary of the change)")
    p.add_argument("--skip-check", action="store_true",
                   help="push even if `fusionrs check --fast` fails on the local repo")
    p.add_argument("--max-files-per-commit", type=int, default=MAX_FILES_PER_COMMIT, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (plan and result) on stdout; the plan is shown as text on stderr "
                        "(unless --quiet)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar or per-commit lines (and, with --json, no plan text on stderr)")
    from ..storage import add_storage_option_argument

    add_storage_option_argument(p)


def _print_plan(res: PushResult, out=None) -> None:
    """The plan and the rights summary: printed (and flushed) before anything is written, so what is about to
    be published is on screen (or in the log) even if the upload is stopped."""
    out = out or sys.stdout
    plan = res.plan
    rev = f" (revision {plan.revision})" if plan.revision else ""
    print(f"{'plan' if res.dry_run else 'push'} for {plan.target}{rev}"
          f"{'' if plan.repo_exists else ' (will be created)'}:", file=out)
    extra = "".join(f" + {n} {what}" for n, what in ((len(plan.assets_to_send), "picture(s)"),
                                                       (int(plan.sources != "unchanged"), "sources file"))
                    if n)
    print(f"  upload {len(plan.upload)} shard(s) + README.md {plan.readme}{extra}: {plan.upload_files} file(s), "
          f"{_fmt_bytes(plan.upload_bytes)}; unchanged {len(plan.unchanged)}; delete {len(plan.delete)}; "
          f"remote-only kept {len(plan.keep_remote_only)}", file=out)
    if res.dry_run:
        for f, why in plan.upload:
            print(f"  + {f.relpath}  {_fmt_bytes(f.size)}  ({why})", file=out)
        if plan.readme != "unchanged":
            print(f"  + {CARD_NAME}  {_fmt_bytes(len(plan.readme_bytes))}  ({plan.readme}, last commit)", file=out)
        for rel in plan.assets_to_send:
            print(f"  + {rel}  {_fmt_bytes(len(plan.assets[rel]))}  ({plan.assets_state[rel]}, with the card)",
                  file=out)
        for rel in plan.delete:
            print(f"  - {rel}  (prune)", file=out)
    if plan.rights:
        print("rights summary of the rows to upload (source, rights_code: rows):", file=out)
        # columns as wide as their longest entry (codes run past 36 characters), so the counts line up
        src_w = max(10, *(len(str(r["source"])) for r in plan.rights))
        code_w = max(36, *(len(str(r["rights_code"])) for r in plan.rights))
        for r in plan.rights:
            print(f"  {str(r['source']):<{src_w}} {str(r['rights_code']):<{code_w}} {r['rows']:>10,}", file=out)
    if plan.upload:
        print(f"note: {TERMS_WARNING}", file=out)
    out.flush()


def _print_outcome(res: PushResult, out=None) -> None:
    """The last line: nothing written, nothing to do, or what the push committed and what it really sent."""
    out = out or sys.stdout
    plan = res.plan
    if res.dry_run:
        print("dry run: nothing written", file=out)
    elif plan.empty:
        print("nothing to do: the remote already matches (0 bytes uploaded, no commit)", file=out)
    elif res.commits:  # the Hub: committed files, of which the remote may have held some already
        t = res.transfer
        line = f"done: {res.uploaded_files} file(s), {_fmt_bytes(res.uploaded_bytes)} committed in " \
               f"{len(res.commits)} commit(s)"
        if t.known:
            line += f"; {'at most ' if t.dedup and t.sent_bytes else ''}{_fmt_bytes(t.sent_bytes)} sent"
            if t.had_files:
                line += (f", {t.had_files} file(s), {_fmt_bytes(t.had_bytes)} already on the remote (from an "
                         "earlier push)")
        print(line, file=out)
    else:  # an fsspec store: every file is written whole
        print(f"done: {res.uploaded_files} file(s), {_fmt_bytes(res.uploaded_bytes)} written", file=out)
    out.flush()


class _DropWarnings(logging.Filter):
    """The CLI prints every warning of the result once, as ``warning: ...``; their log records would repeat them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno != logging.WARNING


def run(args: argparse.Namespace) -> int:
    bars = not args.quiet and not args.json and sys.stderr.isatty()
    drop = _DropWarnings()
    logger.addFilter(drop)
    try:
        return _run(args, bars)
    finally:
        logger.removeFilter(drop)


def _say(line: str) -> None:
    print(f"push: {line}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace, progress: bool) -> int:
    from ..storage import parse_storage_options

    try:
        options = parse_storage_options(getattr(args, "storage_options", None))
    except ValueError as e:
        raise CliError(str(e)) from None
    shown = 0  # warnings printed with the plan

    def on_plan(res: PushResult) -> None:
        # Text: the plan on stdout. --json: stdout keeps its one JSON object (which holds the plan too), so the
        # plan is text on stderr. --quiet --json: nothing before the JSON.
        nonlocal shown
        for d in res.removed_snapshots:
            print(f"note: removed {d}, the snapshot folder of a push that no longer runs", file=sys.stderr)
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        shown = len(res.warnings)
        sys.stderr.flush()
        if not args.json:
            _print_plan(res)
        elif not args.quiet:
            _print_plan(res, sys.stderr)

    try:
        res = push_repo(args.local_repo, args.target, revision=args.revision, private=args.private,
                        dry_run=args.dry_run, prune=args.prune, message=args.message,
                        skip_check=args.skip_check, progress=progress,
                        max_files_per_commit=args.max_files_per_commit, storage_options=options,
                        on_plan=on_plan, say=None if progress or args.quiet else _say)
    except CheckFailed as e:
        _fail(args, str(e), check=e.report.to_dict() if hasattr(e.report, "to_dict") else None)
        return 1
    except (LocalRepoError, PushHubUnreachable, PushRefused) as e:  # unusable input / no Hub / refused credentials
        _fail(args, str(e))
        return 2
    except PushError as e:
        _fail(args, str(e))
        return 1
    for w in res.warnings[shown:]:
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(res.to_dict(), default=str))
    else:
        _print_outcome(res)
    return 0


def _fail(args: argparse.Namespace, msg: str, check: dict | None = None) -> None:
    msg = "; ".join(line.strip() for line in scrub(msg).splitlines() if line.strip())  # one line, no secret
    if args.json:
        print(scrub(json.dumps({"ok": False, "error": msg, "check": check}, default=str)))
    print(f"fusionrs push: error: {msg}", file=sys.stderr)
