"""The entry point: :func:`check_repo` over a whole repo (shards, card, joins), and the release checks."""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict

import numpy as np

from ..layout import SPLITS, ShardName, interrupted_build, layout_for, source_dir
from ..limits import MAX_CARD_BYTES
from ..safepath import NotAFileError, check_repo_file, is_local_fs
from ..secrets import scrub, scrubbing
from .card import _card_findings
from .findings import CheckReport, CheckTargetError, Finding, FindingLog, sort_key
from .images import IR_SPREAD_THRESHOLD
from .joins import PHASH_RADIUS, _joins, _resolve_sample_ids
from .shards import _ROW_DTYPES, _ROW_FIELDS, _executor_kind, _run_shards, _Task
from .target import _open_target

_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}


def check_repo(target: str, *, fast: bool = False, revision: str | None = None, workers: int | None = None,
               progress: bool = False, ir_threshold: float = IR_SPREAD_THRESHOLD, release: str | None = None,
               index: str | None = None, storage_options: dict | None = None) -> CheckReport:
    """Check a FusionRS repo (local folder, fsspec URL or Hub id) and return every finding.

    ``release`` (e.g. ``"rc4"``) also runs the authors' release checks (:mod:`fusionrs_hf.release.verify`);
    ``"auto"`` runs them when the repo's build report names a known release. ``index`` is the index
    file to verify as well (digest, rows, blocked fields).

    ``storage_options`` go to the target's fsspec filesystem (``endpoint_url``, ``key``, ``secret``, ...;
    for the Hub ``token``/``endpoint``), see :mod:`fusionrs_hf.storage`.

    Raises :class:`CheckTargetError` only when the target cannot be read at all, and
    :class:`~fusionrs_hf.storage.HubUnreachableError` when it is on a Hub that is offline
    (``HF_HUB_OFFLINE``) or does not answer; everything wrong inside a readable repo (including a
    corrupt shard) is a :class:`Finding`. No message,
    finding or exception names a token or the credentials of a URL (:mod:`fusionrs_hf.secrets`).
    """
    with scrubbing():
        return _check_repo(target, fast=fast, revision=revision, workers=workers, progress=progress,
                           ir_threshold=ir_threshold, release=release, index=index, storage_options=storage_options)


def _check_repo(target: str, *, fast: bool, revision: str | None, workers: int | None, progress: bool,
                ir_threshold: float, release: str | None, index: str | None,
                storage_options: dict | None = None) -> CheckReport:
    t0 = time.perf_counter()
    fs, root, url = _open_target(target, revision, storage_options)
    try:
        lay = layout_for(fs, root)
        shards, orphans = lay.list_shards(fs, root)
        card_path = f"{root}/README.md"
        if fs.exists(card_path) and is_local_fs(fs):
            check_repo_file(root, card_path)  # a FIFO would hang the read
        card_text = card_problem = None
        if fs.exists(card_path):  # read no more than a card may be
            with fs.open(card_path, "rb") as fh:
                raw = fh.read(MAX_CARD_BYTES + 1)
            card_text = raw.decode("utf-8", errors="replace")
            if len(raw) > MAX_CARD_BYTES:
                card_problem = f"README.md is larger than the limit of {MAX_CARD_BYTES:,} bytes for a card; not parsed"
    except NotAFileError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckTargetError(scrub(f"cannot list {url}: {type(e).__name__}: {e}")) from None
    if not shards and not orphans:  # a card alone describes nothing: "0 rows, no findings" would mislead
        what = "a README.md but" if card_text is not None else "no README.md and"
        note = interrupted_build(root) if is_local_fs(fs) else ""
        raise CheckTargetError(scrub(f"{url} is not a FusionRS repo: {what} no data/**/*.parquet shards{note}"))
    workers = max(1, workers or os.cpu_count() or 1)
    tasks = [_Task(i, s, fast, ir_threshold) for i, s in enumerate(shards)]

    log = FindingLog()  # at most MAX_FINDINGS_PER_KIND of each kind held, the rest counted
    infos: list = [None] * len(shards)
    per_shard: list[dict[str, np.ndarray] | None] = [None] * len(shards)
    unreadable: set[str] = set()
    rows_read = images = 0
    kind = _executor_kind(fast, workers, fs)
    for res in _run_shards(fs, root, tasks, kind, workers, progress):
        log.extend(res.findings, res.omitted)
        infos[res.index] = res.info
        per_shard[res.index] = res.rows
        rows_read += res.rows_read
        images += res.images
        if res.unreadable:
            unreadable.add(shards[res.index].path)
    log.extend(_card_findings(lay, card_text, shards, orphans,
                              [i for i, s in zip(infos, shards, strict=True)
                               if i is not None and s.path not in unreadable], unreadable, card_problem))

    rows = _concat_rows(per_shard, shards)
    left_out: Counter[str] = Counter()
    pending = _joins(rows, fast, left_out) if rows["split"].size else []
    log.omitted.update(left_out)
    wanted: dict[int, set[int]] = defaultdict(set)
    for p in pending:
        for i in (p.idx, p.other):
            wanted[int(rows["shard"][i])].add(int(rows["row"][i]))
    sids = _resolve_sample_ids(fs, root, shards, wanted)
    for p in pending:
        s_i, r_i = int(rows["shard"][p.idx]), int(rows["row"][p.idx])
        s_o, r_o = int(rows["shard"][p.other]), int(rows["row"][p.other])
        name, other = shards[s_i], shards[s_o]
        msg = p.text.format(other_sid=sids.get((s_o, r_o)), other_split=other.split,
                            other_where=f"{other.path}#{r_o}")
        log.add(Finding(p.kind, msg, source_dir(name.source), name.split, name.path, r_i, sids.get((s_i, r_i))))

    release_checks = _release_checks(fs, root, release, index, log)
    findings = log.findings()
    findings.sort(key=_sort_key)
    report = CheckReport(scrub(url), "fast" if fast else "full", findings,
                         omitted={k: n for k, n in sorted(log.omitted.items()) if n})
    counts = report.counts_by_kind()
    report.stats = {
        "shards": len(shards), "unreadable_shards": len(unreadable), "other_parquet_files": len(orphans),
        "rows": rows_read, "images_decoded": images, "workers": workers,
        "executor": kind,
        "ir_threshold": ir_threshold, "phash_radius": PHASH_RADIUS,
        "seconds": round(time.perf_counter() - t0, 3), "findings": sum(counts.values()),
        "findings_by_kind": counts,
    }
    if release_checks is not None:
        report.stats["release"] = release_checks
    return report


def _release_checks(fs, root: str, release: str | None, index: str | None, findings: FindingLog) -> dict | None:
    """Run the release checks when asked (or, with ``"auto"``, when the build report names the release)."""
    from ..layout import REPORT_NAME, parse_build_report
    from ..release.known import get_release
    from ..release.verify import verify

    report = None
    path = f"{root}/{REPORT_NAME}"
    try:
        if fs.exists(path):
            if is_local_fs(fs):
                check_repo_file(root, path)  # a FIFO would hang the read, a symlink read outside the repo
            report = parse_build_report(fs.cat_file(path))
    except NotAFileError:
        raise
    except OSError:
        report = None
    if release == "auto":
        release = (report or {}).get("release", {}).get("release")
    if not release:
        return None
    try:
        rel = get_release(release)
    except ValueError as e:
        raise CheckTargetError(str(e)) from None
    checks = verify(fs, root, rel, build_report=report, index_path=index)
    for c in checks:
        for msg, loc in c.findings:
            findings.add(Finding(f"release_{c.name}", msg, **loc))
    return {"release": rel.name, "checks": [c.to_dict() for c in checks]}


def _concat_rows(per_shard: list[dict[str, np.ndarray] | None], shards: list[ShardName]) -> dict[str, np.ndarray]:
    """One table of compact row records over all shards, plus the shard index and split of each row."""
    parts = [(i, r) for i, r in enumerate(per_shard) if r is not None and r["row"].size]
    out = {k: (np.concatenate([r[k] for _, r in parts]) if parts else np.zeros(0, _ROW_DTYPES.get(k, np.uint64)))
           for k in _ROW_FIELDS}
    out["shard"] = np.concatenate([np.full(r["row"].size, i, np.int64) for i, r in parts]) if parts \
        else np.zeros(0, np.int64)
    out["split"] = np.concatenate([np.full(r["row"].size, _SPLIT_INDEX[shards[i].split], np.int8)
                                   for i, r in parts]) if parts else np.zeros(0, np.int8)
    return out


_sort_key = sort_key  # the report order, defined with the findings (FindingLog keeps the first of each kind)
