"""``fusionrs check --release rc4``: the authors' own verification, run on a rebuilt repo.

The checks are those of the release's verifiers (``verify_public_redacted_index.py``,
``verify_dataset_release.py``) and its canonical counts (``CANONICAL_VERSION.json``), moved from
the index to the shards a rebuild wrote: record and split counts, usable train rows, unique
evaluation representatives (none in train) and per source (the query sets of the release's
``results/clip/retrieval/per_source``), the per-source held-out minimum, pHash components, joint groups
and caption keys never crossing splits, rights codes present, the IR-aware subset's counts and statuses,
protected rows in train only (``joint_split_audit.json``), the VLM training flags
(``build_vlm_caption_manifest.py``), pHash component representatives (``build_release_manifest.py``),
the split's own counts (FusionRS-CLIP ``dataset/split_summary.json``: joint groups, rows flagged
``prior_reused_protected``, the protected joint groups forced into train and their rows; the index summary's
``non_singleton_members``), and the index file's digest, row count and absent blocked fields.

Counts over train allow for the release's rows without a usable caption (8 in rc4, all train), which a
faithful rebuild does not write: a count may then be short by at most that many, never above the release's.

A rebuild from a subset of the sources cannot match release-wide counts: such a check is reported
``not_applicable`` with the reason (which sources are missing), and the per-source checks still
run for the sources that are there. Each failed check is a finding in the usual format, named
``release_<check>``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from ..layout import SOURCE_DIRS, SPLIT_TO_INDEX, SPLITS, list_shards
from ..limits import refuse_big_row_groups
from .known import Release, file_sha256

COLUMNS = ("sample_id", "source", "rights_code", "joint_group_id", "phash4_component_id", "is_eval_representative",
           "normalized_caption_key", "ir_caption_status", "canonical_component_representative",
           "is_canonical_component_representative", "vlm_train_identity", "prior_reused_protected", "class_name")

CHECKS: dict[str, str] = {
    "index_identity": "the index file's SHA-256 and row count are the release's",
    "index_blocked_fields": "the index carries none of the release's blocked fields",
    "records": "rows written equal the release's records less its unusable captions",
    "split_counts": "rows per source and split equal the release's",
    "train_usable": "train rows equal the release's usable train captions",
    "eval_representatives": "unique evaluation representatives per split (none in train)",
    "eval_representatives_per_source": "evaluation representatives per source and held-out split (the release's "
                                       "per-source retrieval query sets)",
    "joint_groups": "distinct joint groups in all, and one per evaluation representative in validation and test",
    "heldout_minimum": "every source has the minimum rows in validation and in test",
    "components_within_split": "no pHash component or joint group spans two splits",
    "caption_keys_within_split": "no normalized caption key spans two splits",
    "caption_keys": "distinct normalized caption keys, and keys on several rows, equal the release's (the captions "
                    "are the authors' choice among each source's sentences)",
    "iraware_file": "the IR-aware caption file the build read is the release's (its SHA-256)",
    "rights_codes": "every row has a rights code; counts per code match the release",
    "iraware": "IR-aware rows: train only, the release's status, counts per source",
    "protected_in_train": "rows flagged vlm_train_identity or prior_reused_protected are all train",
    "vlm_identity": "every IR-aware row is flagged vlm_train_identity; flagged rows equal the release's",
    "prior_reused_rows": "rows flagged prior_reused_protected equal the release's",
    "protected_groups": "joint groups with a protected row (forced into train) and their rows equal the release's",
    "non_singleton_members": "rows in a multi-sample pHash component (not singleton_<sample_id>) equal the release's",
    "component_representatives": "each pHash component has one representative: its smallest sample_id",
    "class_names": "class_name only on NWPU rows (the release's record schema)",
}


@dataclass
class ReleaseCheck:
    name: str
    status: str  # "pass" | "fail" | "not_applicable"
    detail: str = ""
    findings: list[tuple[str, dict]] = field(default_factory=list)
    """(message, location fields for a Finding) per violation."""

    def to_dict(self) -> dict:
        return {"check": self.name, "description": CHECKS[self.name], "status": self.status,
                "detail": self.detail, "findings": len(self.findings)}


def _read(fs, root: str):
    shards, _ = list_shards(fs, root)
    rows = []
    for name in shards:
        with fs.open(f"{root}/{name.path}", "rb") as f:
            pf = pq.ParquetFile(f, pre_buffer=False)  # no IO threads outliving the read (see check/joins.py)
            cols = [c for c in COLUMNS if c in pf.schema_arrow.names]
            refuse_big_row_groups(pf.metadata, cols, name.path, f, shard=True)
            t = pf.read(columns=cols, use_threads=False).to_pydict()
        n = len(t["sample_id"])
        for i in range(n):
            rows.append({**{c: t[c][i] if c in t else None for c in COLUMNS},
                         "split": name.split, "group": name.group, "shard": name.path, "row": i})
    return rows


def verify(fs, root: str, release: Release, *, build_report: dict | None = None,
           index_path: str | None = None) -> list[ReleaseCheck]:
    """Run every release check on a repo; see :data:`CHECKS`."""
    rows = _read(fs, root)
    others = sorted({r["source"] for r in rows} - set(release.split_counts))
    rows = [r for r in rows if r["source"] in release.split_counts]  # a repo's own sources are not the release's
    present = sorted({r["source"] for r in rows})
    missing = [s for s in release.sources if s not in present]
    subset = f"built from {', '.join(present) or 'no source'} only (missing {', '.join(missing)})" if missing else ""
    unusable = release.records - sum(release.split_total(s) for s in ("val", "test")) - release.train_usable
    counts: Counter = Counter((r["source"], r["split"]) for r in rows)
    drops = _drops_by_source(build_report)
    out: list[ReleaseCheck] = []

    out.append(_index_identity(release, build_report, index_path))
    out.append(_index_blocked(release, index_path))

    # --- counts
    total = len(rows)
    want_total = release.records - unusable
    if missing:
        out.append(ReleaseCheck("records", "not_applicable", subset))
    else:
        out.append(_equal("records", total, want_total, "rows", {}))
    if others:
        out[-1].detail += f"; not checked: {', '.join(others)} (this repo's own source(s), not part of {release.name})"
    c = ReleaseCheck("split_counts", "pass")
    for src in present:
        for split in SPLITS:
            want = release.expected_rows(src, split)
            got = counts.get((src, split), 0)
            slack = unusable if split == "train" else 0  # the release's unusable rows are all in train
            if not want - slack <= got <= want:
                why = drops.get(src, "")
                c.findings.append((f"{src} {split}: {got:,} rows, release {release.name} has {want:,}"
                                   + (f" ({why})" if why else ""), {"config": SOURCE_DIRS[src], "split": split}))
    out.append(_status(c, f"checked {', '.join(present)}" + (f"; {subset}" if subset else "")))
    if missing:
        out.append(ReleaseCheck("train_usable", "not_applicable", subset))
    else:
        got = sum(v for (s, sp), v in counts.items() if sp == "train")
        out.append(_equal("train_usable", got, release.train_usable, "train rows", {"split": "train"}))

    # --- evaluation representatives
    c = ReleaseCheck("eval_representatives", "pass")
    reps: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["is_eval_representative"]:
            reps[r["split"]].append(r)
    for r in reps.get("train", []):
        c.findings.append(("train row is an evaluation representative", _loc(r)))
    for split in ("validation", "test"):
        seen: dict[str, dict] = {}
        for r in reps.get(split, []):
            key = r["joint_group_id"]
            if key in seen:
                c.findings.append((f"second evaluation representative of joint group {key} "
                                   f"(first: {seen[key]['sample_id']})", _loc(r)))
            seen.setdefault(key, r)
        want = release.eval_representatives.get(SPLIT_TO_INDEX[split], 0)
        if not missing and len(reps.get(split, [])) != want:
            c.findings.append((f"{split}: {len(reps.get(split, [])):,} evaluation representatives, "
                               f"release {release.name} has {want:,}", {"split": split}))
    out.append(_status(c, subset and f"uniqueness checked; counts not applicable: {subset}"))
    out.append(_representatives_per_source(release, present, reps, subset))
    out.append(_joint_groups(release, rows, subset, unusable))

    c = ReleaseCheck("heldout_minimum", "pass")
    for src in present:
        for split in ("validation", "test"):
            got = counts.get((src, split), 0)
            if got < release.heldout_minimum_per_source:
                c.findings.append((f"{src} {split}: {got:,} rows, the release requires at least "
                                   f"{release.heldout_minimum_per_source}", {"config": SOURCE_DIRS[src], "split": split}))
    out.append(_status(c))

    # --- nothing crosses splits
    out.append(_within_split("components_within_split", rows, ("phash4_component_id", "joint_group_id")))
    out.append(_within_split("caption_keys_within_split", rows, ("normalized_caption_key",)))
    out.append(_caption_keys(release, rows, subset))
    out.append(_iraware_file(release, build_report))

    # --- rights
    c = ReleaseCheck("rights_codes", "pass")
    for r in rows:
        if not r["rights_code"]:
            c.findings.append(("no rights_code", _loc(r)))
    if not missing and release.rights_code_counts:
        got_codes = Counter(r["rights_code"] for r in rows)
        short = 0
        for code, want in release.rights_code_counts.items():
            got = got_codes.get(code, 0)
            short += max(0, want - got)
            if got > want:
                c.findings.append((f"rights_code {code}: {got:,} rows, release has {want:,}", {}))
        for code in sorted(set(got_codes) - set(release.rights_code_counts)):
            c.findings.append((f"rights_code {code!r} is not one of the release's", {}))
        if short > unusable:
            c.findings.append((f"{short:,} rows fewer per rights code than the release", {}))
    out.append(_status(c, subset and f"presence checked; counts not applicable: {subset}"))

    # --- IR-aware subset
    c = ReleaseCheck("iraware", "pass")
    ira = [r for r in rows if r["group"] == "iraware"]
    for r in ira:
        if r["split"] != "train":
            c.findings.append(("IR-aware row outside train (the release has IR-aware captions for train only)",
                               _loc(r)))
        if r["ir_caption_status"] != release.iraware_accepted_status:
            c.findings.append((f"ir_caption_status {r['ir_caption_status']!r}, release uses only "
                               f"{release.iraware_accepted_status!r}", _loc(r)))
    per_src = Counter(r["source"] for r in ira)
    for src in present:
        want, got = release.iraware_accepted.get(src, 0), per_src.get(src, 0)
        if got != want:
            c.findings.append((f"{src}: {got:,} IR-aware rows, release {release.name} has {want:,}",
                               {"config": "iraware", "split": "train"}))
    out.append(_status(c))

    # --- protected rows (the release's joint_split_audit: protected_rows_outside_train 0)
    c = ReleaseCheck("protected_in_train", "pass")
    for r in rows:
        if (r["vlm_train_identity"] or r["prior_reused_protected"]) and r["split"] != "train":
            flag = "vlm_train_identity" if r["vlm_train_identity"] else "prior_reused_protected"
            c.findings.append((f"{flag} row outside train (the release forces protected rows into train)", _loc(r)))
    out.append(_status(c))

    c = ReleaseCheck("vlm_identity", "pass")
    for r in ira:
        if not r["vlm_train_identity"]:
            c.findings.append(("IR-aware row not flagged vlm_train_identity (the release's IR-aware captions are "
                               "all VLM training data)", _loc(r)))
    flagged = sum(1 for r in rows if r["vlm_train_identity"])
    detail = f"{flagged:,} flagged rows"
    if missing or not release.vlm_train_identity_rows:
        detail += f"; count not applicable: {subset or 'not stated by the release'}"
    elif not release.vlm_train_identity_rows - unusable <= flagged <= release.vlm_train_identity_rows:
        c.findings.append((f"{flagged:,} rows flagged vlm_train_identity, release {release.name} has "
                           f"{release.vlm_train_identity_rows:,}", {"split": "train"}))
    out.append(_status(c, detail))
    out.append(_prior_reused_rows(release, rows, subset, unusable))
    out.append(_protected_groups(release, rows, subset, unusable))
    out.append(_non_singleton_members(release, rows, subset, unusable))
    out.append(_component_representatives(rows))

    c = ReleaseCheck("class_names", "pass")
    for r in rows:
        if r["class_name"] is not None and r["source"] != "NWPU":
            c.findings.append((f"class_name {r['class_name'][:40]!r} on a {r['source']} row (the release allows one "
                               "for NWPU only)", _loc(r)))
    out.append(_status(c))
    return out


def _representatives_per_source(release: Release, present: list[str], reps: dict[str, list[dict]],
                                subset: str) -> ReleaseCheck:
    """The release's per-source retrieval results (``results/clip/retrieval/per_source/<source>/``) score the
    evaluation representatives of one source: their ``num_samples`` per source and split. Checked for each
    source that is there, also in a build of some sources only."""
    name = "eval_representatives_per_source"
    if not release.eval_representatives_per_source:
        return ReleaseCheck(name, "not_applicable", f"{release.name} states no per-source representative counts")
    c = ReleaseCheck(name, "pass")
    for split in ("validation", "test"):
        got = Counter(r["source"] for r in reps.get(split, []))
        for src in present:
            want = release.representatives(split, src)
            if want is not None and got.get(src, 0) != want:
                c.findings.append((f"{src} {split}: {got.get(src, 0):,} evaluation representatives, release "
                                   f"{release.name} has {want:,} (its per-source retrieval query set)",
                                   {"config": SOURCE_DIRS[src], "split": split}))
    return _status(c, f"checked {', '.join(present)}" + (f"; {subset}" if subset else ""))


def _joint_groups(release: Release, rows: list[dict], subset: str, unusable: int) -> ReleaseCheck:
    """``split_summary.json`` ``grouping.joint_components``: the joint groups (``joint_group_id``) of all records;
    a held-out split has one evaluation representative per joint group (``split_v3.json``
    ``one_representative_per_joint_component``), so its groups are as many as its representatives. An unwritten
    row (an unusable caption, all train) takes away at most its own group."""
    name = "joint_groups"
    if release.joint_components is None:
        return ReleaseCheck(name, "not_applicable", f"{release.name} states no joint-group count")
    if subset:  # one joint group may hold rows of several sources
        return ReleaseCheck(name, "not_applicable", subset)
    by_split: dict[str, set] = defaultdict(set)
    for r in rows:
        if r["joint_group_id"] is not None:
            by_split[r["split"]].add(r["joint_group_id"])
    got = len(set().union(*by_split.values()))
    c = ReleaseCheck(name, "pass")
    if not release.joint_components - unusable <= got <= release.joint_components:
        c.findings.append((f"{got:,} joint groups, release {release.name} has {release.joint_components:,}", {}))
    for split in ("validation", "test"):
        want = release.representatives(split)
        n = len(by_split.get(split, ()))
        if want is not None and n != want:
            c.findings.append((f"{split}: {n:,} joint groups, release {release.name} has {want:,} (one per "
                               "evaluation representative)", {"split": split}))
    return _status(c, f"{got:,} joint groups (" + ", ".join(f"{s} {len(by_split.get(s, ())):,}" for s in SPLITS)
                   + ")")


def _prior_reused_rows(release: Release, rows: list[dict], subset: str, unusable: int) -> ReleaseCheck:
    """``split_summary.json`` ``protected.rows_flagged_prior_reused_protected``."""
    name = "prior_reused_rows"
    flagged = sum(1 for r in rows if r["prior_reused_protected"])
    want = release.prior_reused_protected_rows
    if subset or want is None:
        return ReleaseCheck(name, "not_applicable",
                            f"{flagged:,} flagged rows; count not applicable: {subset or 'not stated by the release'}")
    c = ReleaseCheck(name, "pass", f"{flagged:,} flagged rows")
    if not want - unusable <= flagged <= want:
        c.findings.append((f"{flagged:,} rows flagged prior_reused_protected, release {release.name} has {want:,}",
                           {"split": "train"}))
    return _status(c, c.detail)


def _protected_groups(release: Release, rows: list[dict], subset: str, unusable: int) -> ReleaseCheck:
    """``split_summary.json`` ``protected``: ``clusters_forced_train``, the joint groups with a row flagged
    ``VLM_train_used`` (our ``vlm_train_identity``) or ``prior_reused_protected``, and
    ``rows_in_protected_clusters``, every row of those groups.

    The release's unwritten rows make both counts at most the release's. A group is lost only when its every
    flagged row is unwritten (at most one group per such row); while none is lost, the rows are short by at most
    the unwritten rows. A lost group's other rows cannot be told from the rest of train, so once a group is
    lost the rows are held to the release's count as an upper bound only (the detail says so)."""
    name = "protected_groups"
    want_g, want_r = release.protected_groups, release.protected_group_rows
    if want_g is None or want_r is None:
        return ReleaseCheck(name, "not_applicable", f"{release.name} states no protected-group count")
    if subset:
        return ReleaseCheck(name, "not_applicable", subset)
    protected = {r["joint_group_id"] for r in rows
                 if (r["vlm_train_identity"] or r["prior_reused_protected"]) and r["joint_group_id"] is not None}
    n_rows = sum(1 for r in rows if r["joint_group_id"] in protected)
    c = ReleaseCheck(name, "pass")
    detail = f"{len(protected):,} protected joint groups, {n_rows:,} rows"
    if not want_g - unusable <= len(protected) <= want_g:
        c.findings.append((f"{len(protected):,} joint groups with a protected row, release {release.name} has "
                           f"{want_g:,}", {"split": "train"}))
    if n_rows > want_r or (len(protected) == want_g and n_rows < want_r - unusable):
        c.findings.append((f"{n_rows:,} rows in joint groups with a protected row, release {release.name} has "
                           f"{want_r:,}", {"split": "train"}))
    elif len(protected) < want_g:
        detail += (f"; rows held to at most {want_r:,} only: {want_g - len(protected):,} protected group(s) absent, "
                   "whose other rows cannot be told from the rest of train")
    return _status(c, detail)


def _non_singleton_members(release: Release, rows: list[dict], subset: str, unusable: int) -> ReleaseCheck:
    """The index summary's ``non_singleton_members``: ``build_release_manifest.py`` counts the sample ids of the
    RGB and IR near-cluster files, each given a ``phash4_<hash>`` component id, every other row
    ``singleton_<sample_id>``. The cluster files are the split's (``split_summary.json`` ``near_clusters``,
    ``joint_split_audit.json`` ``image_cluster_files``), whose builder refuses a member absent from its manifest
    (``build_fusionrs_balanced_group_split.py``), so every counted sample id is a record."""
    name = "non_singleton_members"
    want = release.non_singleton_members
    ids = [r["phash4_component_id"] for r in rows]
    if want is None:
        return ReleaseCheck(name, "not_applicable", f"{release.name} states no non-singleton count")
    if all(v is None for v in ids):
        return ReleaseCheck(name, "not_applicable", "the shards carry no phash4_component_id")
    got = sum(1 for v in ids if v is not None and not str(v).startswith("singleton_"))
    if subset:
        return ReleaseCheck(name, "not_applicable", f"{got:,} rows; count not applicable: {subset}")
    c = ReleaseCheck(name, "pass", f"{got:,} rows in multi-sample pHash components")
    if not want - unusable <= got <= want:
        c.findings.append((f"{got:,} rows in a multi-sample pHash component, release {release.name} has {want:,}",
                           {}))
    return _status(c, c.detail)


def _component_representatives(rows: list[dict]) -> ReleaseCheck:
    """The release's ``build_release_manifest.py``: a component's representative is the first of its sorted
    members, every member names it, and only it is ``is_canonical_component_representative``; a row outside
    any component is ``singleton_<sample_id>``, its own representative. A rebuild may miss members (an
    unusable caption, a missing file), so an absent representative is only held to sort first."""
    c = ReleaseCheck("component_representatives", "pass")
    if all(r["canonical_component_representative"] is None for r in rows):
        return ReleaseCheck(c.name, "not_applicable", "the shards carry no canonical_component_representative")
    by_cid: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["phash4_component_id"] is not None:
            by_cid[r["phash4_component_id"]].append(r)
    for cid, members in by_cid.items():
        reps = {r["canonical_component_representative"] for r in members}
        if len(reps) != 1:
            c.findings.append((f"phash4 component {cid}: {len(reps)} different representatives "
                               f"({', '.join(sorted(map(str, reps))[:3])})", _loc(members[0])))
            continue
        rep = reps.pop()
        first = min(r["sample_id"] for r in members)
        if cid.startswith("singleton_") and (len(members) != 1 or cid != f"singleton_{rep}" or rep != first):
            c.findings.append((f"singleton component {cid}: representative {rep!r}, members "
                               f"{', '.join(sorted(r['sample_id'] for r in members)[:3])}", _loc(members[0])))
        elif rep is None or rep > first:
            c.findings.append((f"phash4 component {cid}: representative {rep!r} is not its smallest sample_id "
                               f"({first})", _loc(members[0])))
        for r in members:
            if r["is_canonical_component_representative"] is not None and \
                    bool(r["is_canonical_component_representative"]) != (r["sample_id"] == rep):
                c.findings.append((f"is_canonical_component_representative is {r['is_canonical_component_representative']} "
                                   f"but the component's representative is {rep!r}", _loc(r)))
    return _status(c, f"{len(by_cid):,} components")


def _caption_keys(release: Release, rows: list[dict], subset: str) -> ReleaseCheck:
    """``split_summary.json`` ``grouping``: ``caption_unique_keys`` and ``caption_duplicate_keys`` over the
    ``caption_rows`` (every usable caption, all of which a faithful rebuild writes). The index has no caption
    and no key: these counts are the release's only word on which caption each record has, so a rebuild whose
    caption files or ``--caption-choice`` differ from the authors' passes every other check and fails this."""
    name = "caption_keys"
    if release.caption_keys is None or release.caption_shared_keys is None:
        return ReleaseCheck(name, "not_applicable", f"{release.name} states no caption-key counts")
    per_key = Counter(r["normalized_caption_key"] for r in rows if r["normalized_caption_key"])
    shared = sum(1 for n in per_key.values() if n > 1)
    by_source: dict[str, set] = defaultdict(set)
    for r in rows:
        if r["normalized_caption_key"]:
            by_source[r["source"]].add(r["normalized_caption_key"])
    detail = (f"{len(per_key):,} distinct keys, {shared:,} on several rows (per source: "
              + ", ".join(f"{s} {len(k):,}" for s, k in sorted(by_source.items())) + ")")
    if subset:
        return ReleaseCheck(name, "not_applicable", f"{detail}; counts not applicable: {subset}")
    c = ReleaseCheck(name, "pass", detail)
    if (len(per_key), shared) != (release.caption_keys, release.caption_shared_keys):
        c.findings.append((f"{len(per_key):,} distinct normalized caption keys, {shared:,} of them on several rows; "
                           f"release {release.name} has {release.caption_keys:,} and {release.caption_shared_keys:,}: "
                           "the captions are not the release's (other caption files, or another --caption-choice "
                           "among a source's sentences)", {}))
    return _status(c, detail)


def _iraware_file(release: Release, report: dict | None) -> ReleaseCheck:
    name = "iraware_file"
    if release.iraware_sha256 is None:
        return ReleaseCheck(name, "not_applicable", f"{release.name} states no IR-aware caption file")
    files = ((report or {}).get("captions") or {}).get("iraware_files")
    if not isinstance(files, list) or not files:
        return ReleaseCheck(name, "not_applicable", "no IR-aware caption file in the build report")
    c = ReleaseCheck(name, "pass", ", ".join(f"{f.get('name')}: sha256 {str(f.get('sha256'))[:12]}…" for f in files
                                            if isinstance(f, dict)))
    if not any(isinstance(f, dict) and f.get("sha256") == release.iraware_sha256 for f in files):
        c.findings.append((f"the build read no copy of {release.name}'s {release.iraware_file} (sha256 "
                           f"{release.iraware_sha256}; a decompressed or edited copy has another): its IR-aware captions are "
                           "not the release's", {}))
    return _status(c, c.detail)


def _drops_by_source(report: dict | None) -> dict[str, str]:
    """Per source, how many records the user's index had and how many the build wrote: the reason a
    count check fails is then either a smaller index or rows the build report lists as not written."""
    if not report:
        return {}
    idx = report.get("rc4_comparison", {}).get("counts", {})
    written = report.get("written", {}).get("by_source_split_group", {})
    out = {}
    for src, per in idx.items():
        n_idx = sum(v.get("index", 0) for v in per.values())
        n_written = sum(sum(g.values()) for g in written.get(src, {}).values())
        out[src] = f"your index has {n_idx:,} {src} records, the build wrote {n_written:,}; see build_report.json"
    return out


def _index_identity(release: Release, report: dict | None, index_path: str | None) -> ReleaseCheck:
    if index_path:
        sha = file_sha256(index_path)
        from ..index import open_text

        with open_text(index_path) as fh:
            n = sum(1 for line in fh if line.strip())
        where = index_path
    elif report and report.get("release", {}).get("sha256"):
        sha, n, where = report["release"]["sha256"], report["release"]["rows"], "the build report"
    else:
        return ReleaseCheck("index_identity", "not_applicable", "no --index given and no build report in the repo")
    c = ReleaseCheck("index_identity", "pass", f"{where}: sha256 {sha[:12]}…, {n:,} rows")
    if sha != release.index_sha256:
        c.findings.append((f"index sha256 {sha} is not {release.name}'s {release.index_sha256} ({where})", {}))
    if n != release.index_rows:
        c.findings.append((f"index has {n:,} rows, {release.name} has {release.index_rows:,} ({where})", {}))
    return _status(c, c.detail)


def _index_blocked(release: Release, index_path: str | None) -> ReleaseCheck:
    if not index_path:
        return ReleaseCheck("index_blocked_fields", "not_applicable",
                            "needs --index (the build validated every line against the record schema)")
    from ..index import open_text

    c = ReleaseCheck("index_blocked_fields", "pass")
    with open_text(index_path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("schema_version") != "fusionrs-public-index-v1":
                continue  # the internal variant carries captions by design
            bad = sorted(set(rec) & set(release.blocked_fields))
            if bad:
                c.findings.append((f"{index_path} line {n}: blocked field(s) {', '.join(bad)} present", {}))
                if len(c.findings) >= 20:
                    break
    return _status(c)


def _within_split(name: str, rows: list[dict], keys: tuple[str, ...]) -> ReleaseCheck:
    c = ReleaseCheck(name, "pass")
    order = {s: i for i, s in enumerate(SPLITS)}
    ordered = sorted(rows, key=lambda r: order[r["split"]])  # report the row in the later split, as check does
    for key in keys:
        first: dict[str, dict] = {}
        for r in ordered:
            v = r[key]
            if v is None:
                continue
            f = first.setdefault(v, r)
            if f["split"] != r["split"]:
                c.findings.append((f"{key} {v} is in {f['split']} ({f['sample_id']}) and {r['split']}", _loc(r)))
    return _status(c)


def _equal(name: str, got: int, want: int, what: str, loc: dict) -> ReleaseCheck:
    c = ReleaseCheck(name, "pass", f"{got:,} {what}")
    if got != want:
        c.findings.append((f"{got:,} {what}, the release has {want:,}", loc))
    return _status(c, c.detail)


def _status(c: ReleaseCheck, detail: str = "") -> ReleaseCheck:
    c.status = "fail" if c.findings else "pass"
    c.detail = detail or c.detail
    return c


def _loc(r: dict) -> dict:
    return {"config": SOURCE_DIRS.get(r["source"]), "split": r["split"], "shard": r["shard"], "row": r["row"],
            "sample_id": r["sample_id"]}
