"""Orchestration: plan, build shards in worker processes, write the report and the card."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from .. import safepath
from ..captions import (
    CaptionFileError,
)
from ..index import (
    IndexFormatError,
)
from ..layout import REPORT_NAME, list_shards
from .options import CRASH_ENV, STATE_DIR, BuildError, BuildOptions, _check_inputs
from .plan import Plan, drop_previous_plan, make_plan, restore_previous_plan
from .report import make_report
from .shard import build_shard

# orchestration

def _stale_shards(out: Path, batch: str, planned: set[str], sources: set[str]) -> list[str]:
    """Shards of this batch and of the sources this build covers that its plan would not write
    (shards of other sources, e.g. the FusionRS ones beside a repo's own, are never touched)."""
    import fsspec

    fs = fsspec.filesystem("file")
    shards, _ = list_shards(fs, str(out.resolve()))
    return [s.path for s in shards if s.batch == batch and s.source in sources and s.path not in planned]


def build(opts: BuildOptions, *, on_shard_done: Callable[[dict], None] | None = None) -> dict:
    """Run a build and return the report (also written to ``OUT/build_report.json``).

    Raises :class:`BuildError` for unusable input (bad index line, unreadable caption file,
    stale shards of another plan without ``overwrite``).
    """
    _check_inputs(opts)
    safepath.forget()
    out = Path(opts.out)
    _refuse_foreign_out(out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_DIR
    try:  # a state folder or data/ that is a symlink out of --out: nothing of the build goes there
        for sub in (state, out / "data"):
            if os.path.islink(sub):
                raise safepath.NotAFileError(f"{sub}: a symlink to {os.path.realpath(sub)}; a build writes its "
                                             f"shards and state inside --out {out} only")
    except safepath.NotAFileError as e:
        raise BuildError(str(e)) from None
    state.mkdir(exist_ok=True)
    with _build_lock(state):
        return _build_locked(opts, out, state, on_shard_done)


def _build_locked(opts: BuildOptions, out: Path, state: Path, on_shard_done) -> dict:
    _remove_own_temp_files(out)
    registry = opts.registry()
    if registry.extra and registry != _current_registry(out):  # declare a new source before any of its shards
        from ..atomic import atomic_write
        from ..sources import REGISTRY_FILE

        atomic_write(out / REGISTRY_FILE, registry.to_json())
    try:
        plan = make_plan(opts, state)
    except (IndexFormatError, CaptionFileError) as e:
        restore_previous_plan(state)  # the folder is as the last build left it (push and card read its plan)
        raise BuildError(str(e)) from None
    except OSError as e:
        restore_previous_plan(state)
        raise BuildError(f"{state}: cannot write the build plan ({e.strerror or e})") from None

    stale = _stale_shards(out, opts.batch, set(plan.shard_paths), set(plan.index_counts) | set(opts.source_roots))
    if stale:
        if not opts.overwrite:
            restore_previous_plan(state)
            raise BuildError(
                f"{out} has {len(stale)} shard(s) of batch {opts.batch!r} that this build would not write "
                f"(e.g. {stale[0]}; a different index or --rows-per-shard?); pass --overwrite to delete them, "
                "or use another --out or --batch")
        for rel in stale:
            (out / rel).unlink()
            (state / "done" / (rel + ".json")).unlink(missing_ok=True)
    drop_previous_plan(state)

    ctx = {"out": str(out), "roots": dict(opts.source_roots), "ir_root": opts.ir_root,
           "sources": list(registry.names), "dir_sources": {s.dir: s.name for s in registry.all},
           "non_jpeg": opts.non_jpeg, "jpeg_quality": opts.jpeg_quality,
           "allow_size_mismatch": opts.allow_size_mismatch, "max_pixels": opts.max_pixels, "options_fp": opts.fingerprint()}
    results = _run_tasks(plan, ctx, opts, on_shard_done)

    from ..atomic import atomic_write
    from ..card import write_card

    text = json.dumps(make_report(opts, plan, results), indent=2, ensure_ascii=False)
    report = json.loads(text)  # the returned report is exactly what the file holds
    try:
        atomic_write(out / opts.report_name, text + "\n")
        write_card(out)  # after the report: the card names the release the report identified
    except OSError as e:
        raise BuildError(f"{out}: cannot write {REPORT_NAME} / README.md ({e.strerror or e}); "
                         "the shards are complete: re-run the same command to finish") from None
    return report


def _current_registry(out: Path):
    import fsspec

    from ..sources import registry_for

    return registry_for(fsspec.filesystem("file"), str(out.resolve()))


def _refuse_foreign_out(out: Path) -> None:
    """Never overwrite someone else's README.md or build_report.json: ``--out`` must be empty or ours."""
    if not out.is_dir() or (out / STATE_DIR).is_dir():
        return
    theirs = [n for n in ("README.md", REPORT_NAME, "data") if (out / n).exists()]
    if theirs:
        raise BuildError(f"--out {out}: holds {', '.join(theirs)} not written by fusionrs build (no {STATE_DIR}/); "
                         "use an empty or new folder")


@contextlib.contextmanager
def _build_lock(state: Path):
    """One build per output folder at a time: a second one fails at once, naming the first one's pid."""
    import fcntl

    path = state / "lock"
    fh = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise BuildError(f"--out {state.parent}: another fusionrs build (pid {pid}) is writing it; "
                             "wait for it or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock, also when the process dies


def _remove_own_temp_files(out: Path) -> None:
    """Temp files a killed write of ours left in the repo: only names our writer makes, only of dead writers."""
    from ..atomic import TMP_SUFFIX, tmp_target, writer_alive

    for p in out.rglob(f"*{TMP_SUFFIX}"):
        got = tmp_target(p.name)
        if got and not writer_alive(got[1]) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)


def _exit_with_parent(parent: int) -> None:
    """Pool-worker initializer: exit when the build's main process is gone (kill -9, OOM killer).

    A worker blocked reading its task pipe never sees EOF (it holds a write end itself), so without
    this it would live on forever holding its memory.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="fusionrs-parent-watch", daemon=True).start()


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
            with ProcessPoolExecutor(max_workers=opts.workers, initializer=_exit_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                futs = {pool.submit(build_shard, task, rel, ctx): rel for task, rel in jobs}
                try:
                    for fut in as_completed(futs):
                        try:
                            done(fut.result())
                        except BrokenProcessPool:
                            raise BuildError(f"a build worker died while writing {futs[fut]} (killed, or out of "
                                             "memory?); re-run the same command to resume") from None
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    except OSError as e:
        where = getattr(e, "filename", None) or "a shard"
        raise BuildError(f"cannot write {where}: {e.strerror or e}; free space or fix the folder, then re-run the "
                         "same command to resume") from None
    finally:
        bar.close()
    return sorted(results, key=lambda r: r["shard"])
