"""Planning: stream the index once, resolve captions under the policies, fix shard membership."""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..captions import (
    CAPTION_POLICIES,
    IR_POLICIES,
    CaptionStore,
    read_caption_file,
    read_iraware,
)
from ..index import (
    PUBLIC_SCHEMA,
    BadLine,
    IndexFormatError,
    IndexRecord,
    iter_index,
)
from ..layout import Layout
from ..release.known import file_sha256, identify_index
from ..text import caption_key
from .options import EXAMPLES, BuildError, BuildOptions, spec_of

# planning

class _Examples:
    """Counts with a few example sample ids, for the report."""

    def __init__(self) -> None:
        self.count: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def add(self, key: str, sample_id: str, n: int = 1) -> None:
        self.count[key] += n
        ex = self.examples[key]
        if len(ex) < EXAMPLES and sample_id not in ex:
            ex.append(sample_id)


@dataclass
class Plan:
    tasks: list[Path]
    shard_paths: list[str]
    records: int
    bad_lines: list[dict]
    rules: _Examples
    fallback: _Examples
    iraware_rejected_to_base: int
    index_counts: dict[str, dict[str, int]]
    iraware_unmatched: tuple[int, list[str]]
    caption_counts: dict[str, int]
    identity: dict = field(default_factory=dict)
    release_unusable: _Examples = field(default_factory=_Examples)
    iraware_status: dict[str, int] = field(default_factory=dict)


def _class_name(rec: IndexRecord, hint: str | None) -> str | None:
    if rec.class_name:
        return rec.class_name
    if rec.schema_version != PUBLIC_SCHEMA:
        return None  # the internal index states class_name itself (null outside NWPU)
    spec = spec_of(rec.source)
    if not spec.class_names:  # e.g. an RSICD caption table's class column: the release has none there
        return None
    if hint:
        return hint
    if spec.class_name_from_locator:
        parent = PurePosixPath(rec.source_locator).parent.name
        return parent or None
    return None


@dataclass
class _Planned:
    """One index record resolved against the caption files: what a worker (or --dry-run) needs."""

    rec: IndexRecord
    entry: dict
    group: str


class _Planner:
    """Streams the index once and resolves each record's captions under the chosen policies.

    Shared by the build (which writes plan files) and ``--dry-run`` (which only counts), so the two
    can never disagree on what a build would write.
    """

    def __init__(self, opts: BuildOptions, state: Path) -> None:
        self.opts = opts
        self.registry = opts.registry()
        self.layout = Layout(self.registry)
        self.store = CaptionStore(state / "captions.sqlite")
        self.policy = CAPTION_POLICIES[opts.caption_policy]
        self.ir_policy = IR_POLICIES[opts.iraware_policy]
        self.rules, self.fallback, self.release_unusable = _Examples(), _Examples(), _Examples()
        self.bad_lines: list[dict] = []
        self.index_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.iraware_status: dict[str, int] = defaultdict(int)
        self.to_base = self.records = 0

    def load(self) -> None:
        for source, path in self.opts.captions:
            self.store.add(read_caption_file(path, source))
        for path in self.opts.iraware:
            self.store.add_iraware(read_iraware(path))
        self.store.finish()
        self.store.db.execute("CREATE TABLE seen(sid TEXT PRIMARY KEY, line INTEGER)")

    def __iter__(self):
        opts, store = self.opts, self.store
        on_error = "raise" if opts.on_bad_line == "error" else "yield"
        where = Path(opts.index).name
        for item in iter_index(opts.index, on_error=on_error, sources=self.registry.names):
            if isinstance(item, BadLine):
                self.bad_lines.append({"line": item.line, "field": item.error.field, "error": str(item.error)})
                continue
            rec = item
            if not store.db.execute("INSERT OR IGNORE INTO seen(sid, line) VALUES (?, ?)",
                                    (rec.sample_id, rec.line)).rowcount:
                prev = store.db.execute("SELECT line FROM seen WHERE sid=?", (rec.sample_id,)).fetchone()
                err = IndexFormatError(where, rec.line, "sample_id",
                                       f"duplicate sample_id {rec.sample_id!r} (first on line {prev[0]})")
                if on_error == "raise":
                    raise err
                self.bad_lines.append({"line": rec.line, "field": "sample_id", "error": str(err),
                                       "sample_id": rec.sample_id})
                continue
            self.records += 1
            self.index_counts[rec.source][rec.index_split] += 1
            yield self._resolve(rec)

    def _resolve(self, rec: IndexRecord) -> _Planned:
        opts = self.opts
        if rec.caption is not None:
            caps, hint = [rec.caption], None  # the internal variant carries the release's own caption
        else:
            caps, hint = self.store.lookup(rec.sample_id, rec.source, rec.source_record_id, rec.source_locator)
        usable = rec.caption_usable if rec.caption_usable is not None else \
            rec.flags.get("caption_supervision_available_upstream")
        cls = _class_name(rec, hint)
        dec = self.policy.decide(rec.sample_id, caps, class_name=cls, choice=opts.caption_choice, seed=opts.seed,
                                 skip_rules=opts.skip_rules, release_usable=usable)
        for name, n in dec.rejected.items():
            self.rules.add(name, rec.sample_id, n)
        if dec.origin == "class_name":
            self.fallback.add("class_name", rec.sample_id)
        if dec.drop_reason == "no_usable_caption":
            self.release_unusable.add("no_usable_caption", rec.sample_id)
        ira = self.store.iraware(rec.sample_id)
        ir_text = ir_status = None
        if ira is not None:
            if ira.status is not None and (ira.source, ira.split) != (rec.source, rec.index_split):
                raise BuildError(f"{ira.file} row {ira.row}: sample_id {rec.sample_id!r} is "
                                 f"{ira.source}/{ira.split} there but {rec.source}/{rec.index_split} in the index "
                                 f"(line {rec.line})")
            ir_text, ir_status, ir_bad = self.ir_policy.decide(ira.caption, ira.status, opts.skip_rules)
            self.iraware_status[ira.status or "no_status"] += 1
            for name in ir_bad:
                if name.startswith("status_"):
                    self.iraware_status[f"not_used_{name[7:]}"] += 1
                else:
                    self.rules.add(name, rec.sample_id)
            self.to_base += bool(ir_bad) and not ir_bad[0].startswith("status_")
        group = "iraware" if ir_text else "base"
        entry = {
            **rec.to_json(), "class_name": cls,
            "caption": dec.caption, "all_captions": dec.all_captions, "caption_origin": dec.origin,
            "normalized_caption_key": caption_key(dec.caption) if dec.caption else None,
            "ir_caption": ir_text, "ir_caption_status": ir_status, "drop": dec.drop_reason,
        }
        return _Planned(rec, entry, group)

    def unmatched_iraware(self) -> tuple[int, list[str]]:
        rows = self.store.db.execute(
            "SELECT sid FROM ira WHERE sid NOT IN (SELECT sid FROM seen) ORDER BY sid").fetchall()
        return len(rows), [r[0] for r in rows[:EXAMPLES]]

    def close(self) -> None:
        self.store.close()


def index_identity(path: str | os.PathLike, rows: int) -> dict:
    """Digest, rows and the known release the index file is (or a note that it is none)."""
    return identify_index(file_sha256(path), rows).to_dict()


PREVIOUS_PLAN = "plan.prev"
"""The last build's plan, kept while a new one is made: a build refused after planning (stale shards without
--overwrite, a bad index line) puts it back, so a finished folder still reads as finished to push and card."""


def restore_previous_plan(state: Path) -> None:
    """Put the previous plan back in place of one the build will not run."""
    plan_dir, prev = state / "plan", state / PREVIOUS_PLAN
    if prev.is_dir():
        if plan_dir.exists():
            shutil.rmtree(plan_dir)
        prev.rename(plan_dir)


def drop_previous_plan(state: Path) -> None:
    shutil.rmtree(state / PREVIOUS_PLAN, ignore_errors=True)


def make_plan(opts: BuildOptions, state: Path) -> Plan:
    """Read captions into the store, stream the index once and write one plan file per shard.

    A plan file lists the shard's records in index order with their resolved captions; it is
    all a worker needs, and its bytes are the shard's membership fingerprint.
    """
    plan_dir, prev = state / "plan", state / PREVIOUS_PLAN
    if prev.exists():
        shutil.rmtree(prev)
    if plan_dir.exists():  # kept until the new plan is accepted (see restore_previous_plan)
        plan_dir.rename(prev)
    plan_dir.mkdir(parents=True)
    planner = _Planner(opts, state)
    try:
        planner.load()
        writers: dict[tuple[str, str, str], list] = {}  # key -> [shard index, rows in it, handle]
        tasks: list[Path] = []
        shard_paths: list[str] = []
        try:
            for item in planner:
                rec = item.rec
                key = (rec.source, rec.split, item.group)
                w = writers.get(key)
                if w is None or w[1] >= opts.rows_per_shard:
                    if w is not None:
                        w[2].close()
                    idx = 0 if w is None else w[0] + 1
                    rel = planner.layout.shard_path(rec.source, rec.split, item.group, idx, opts.batch)
                    task = plan_dir / (rel.replace("/", "__") + ".jsonl")
                    w = writers[key] = [idx, 0, open(task, "w", encoding="utf-8")]
                    tasks.append(task)
                    shard_paths.append(rel)
                w[2].write(json.dumps(item.entry, sort_keys=True, ensure_ascii=False) + "\n")
                w[1] += 1
        finally:
            for w in writers.values():
                w[2].close()
        planner.store.db.commit()
        return Plan(tasks, shard_paths, planner.records, planner.bad_lines, planner.rules, planner.fallback,
                    planner.to_base, {s: dict(v) for s, v in planner.index_counts.items()},
                    planner.unmatched_iraware(), dict(planner.store.counts),
                    identity=index_identity(opts.index, planner.records + len(planner.bad_lines)),
                    release_unusable=planner.release_unusable, iraware_status=dict(planner.iraware_status))
    finally:
        planner.close()
