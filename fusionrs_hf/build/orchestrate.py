"""Orchestration: plan, build shards in worker processes, write the report and the card."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..captions import (
    CaptionFileError,
)
from ..index import (
    IndexFormatError,
)
from ..layout import REPORT_NAME, list_shards
from .options import CRASH_ENV, STATE_DIR, BuildError, BuildOptions, _check_inputs
from .plan import Plan, make_plan
from .report import make_report
from .shard import build_shard

# orchestration

def _stale_shards(out: Path, batch: str, planned: set[str]) -> list[str]:
    import fsspec

    fs = fsspec.filesystem("file")
    shards, _ = list_shards(fs, str(out.resolve()))
    return [s.path for s in shards if s.batch == batch and s.path not in planned]


def build(opts: BuildOptions, *, on_shard_done: Callable[[dict], None] | None = None) -> dict:
    """Run a build and return the report (also written to ``OUT/build_report.json``).

    Raises :class:`BuildError` for unusable input (bad index line, unreadable caption file,
    stale shards of another plan without ``overwrite``).
    """
    _check_inputs(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_DIR
    state.mkdir(exist_ok=True)
    try:
        plan = make_plan(opts, state)
    except (IndexFormatError, CaptionFileError) as e:
        raise BuildError(str(e)) from None

    stale = _stale_shards(out, opts.batch, set(plan.shard_paths))
    if stale:
        if not opts.overwrite:
            raise BuildError(
                f"{out} has {len(stale)} shard(s) of batch {opts.batch!r} that this build would not write "
                f"(e.g. {stale[0]}; a different index or --rows-per-shard?); pass --overwrite to delete them, "
                "or use another --out or --batch")
        for rel in stale:
            (out / rel).unlink()
            (state / "done" / (rel + ".json")).unlink(missing_ok=True)

    ctx = {"out": str(out), "roots": dict(opts.source_roots), "ir_root": opts.ir_root,
           "non_jpeg": opts.non_jpeg, "jpeg_quality": opts.jpeg_quality,
           "allow_size_mismatch": opts.allow_size_mismatch, "options_fp": opts.fingerprint()}
    results = _run_tasks(plan, ctx, opts, on_shard_done)

    from ..atomic import atomic_write
    from ..card import write_card

    text = json.dumps(make_report(opts, plan, results), indent=2, ensure_ascii=False)
    report = json.loads(text)  # the returned report is exactly what the file holds
    atomic_write(out / REPORT_NAME, text + "\n")
    write_card(out)  # after the report: the card names the release the report identified
    return report


def _run_tasks(plan: Plan, ctx: dict, opts: BuildOptions, on_shard_done) -> list[dict]:
    from tqdm.auto import tqdm

    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)
    built = 0
    results: list[dict] = []
    bar = tqdm(total=len(plan.tasks), unit="shard", desc="fusionrs build", file=sys.stderr,
               disable=not opts.progress or not sys.stderr.isatty())

    def done(res: dict) -> None:
        nonlocal built
        results.append(res)
        bar.update(1)
        built += not res["skipped"]
        if on_shard_done:
            on_shard_done(res)
        if crash_after and built >= crash_after:
            os._exit(137)

    jobs = list(zip((str(t) for t in plan.tasks), plan.shard_paths, strict=True))
    try:
        if opts.workers <= 1 or len(jobs) <= 1:
            for task, rel in jobs:
                done(build_shard(task, rel, ctx))
        else:
            with ProcessPoolExecutor(max_workers=opts.workers) as pool:
                futs = [pool.submit(build_shard, task, rel, ctx) for task, rel in jobs]
                try:
                    for fut in as_completed(futs):
                        done(fut.result())
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return sorted(results, key=lambda r: r["shard"])
