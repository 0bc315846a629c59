"""The build report: every index record accounted for (written, or not written and why)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..captions import (
    RULES,
)
from ..index import (
    DIFFV2IR_SETTINGS,
)
from ..layout import GROUPS, SPLITS
from ..release.known import RELEASES, file_sha256
from ..schema import SOURCES
from .options import BUILDER_VERSION, EXAMPLES, RELEASE_DROPS, BuildOptions
from .plan import Plan


def make_report(opts: BuildOptions, plan: Plan, results: list[dict]) -> dict:
    """The machine-readable account of a build: what was written and what was not, and why."""
    written: dict[str, dict[str, dict[str, int]]] = {s: {sp: dict.fromkeys(GROUPS, 0) for sp in SPLITS}
                                                     for s in opts.registry().names}
    by_reason: dict[str, dict] = {}
    for r in results:
        written[r["source"]][r["split"]][r["group"]] += r["rows"]
        for d in r["dropped"]:
            b = by_reason.setdefault(d["reason"], {"count": 0, "sample_ids": [], "details": []})
            b["count"] += 1
            b["sample_ids"].append(d["sample_id"])
            if len(b["details"]) < 20:
                b["details"].append(d)
    if plan.bad_lines:
        by_reason["bad_index_line"] = {"count": len(plan.bad_lines), "lines": [b["line"] for b in plan.bad_lines],
                                       "sample_ids": [b["sample_id"] for b in plan.bad_lines if "sample_id" in b],
                                       "details": plan.bad_lines[:20]}
    for b in by_reason.values():
        b["sample_ids"].sort()
    n_written = sum(r["rows"] for r in results)
    n_dropped = sum(b["count"] for k, b in by_reason.items() if k != "bad_index_line")
    n_expected = sum(b["count"] for k, b in by_reason.items() if k in RELEASE_DROPS)
    resized = [d for r in results for d in r.get("size_differs", [])]
    notes = [d for r in results for d in r.get("image_notes", [])]
    by_note: dict[str, dict] = {}
    for d in notes:
        b = by_note.setdefault(d["note"], {"count": 0, "examples": []})
        b["count"] += 1
        if len(b["examples"]) < EXAMPLES:
            b["examples"].append(d)
    rules = {
        name: {"applies_to": rule.applies_to, "description": rule.description,
               "enabled": name not in opts.skip_rules,
               "count": plan.rules.count.get(name, 0), "examples": plan.rules.examples.get(name, [])}
        for name, rule in RULES.items()
    }
    rel = RELEASES.get(plan.identity.get("release") or "") or RELEASES["rc4-20260727"]
    rc4 = {s: {sp: {"index": plan.index_counts.get(s, {}).get(sp, 0), "rc4": n} for sp, n in c.items()}
           for s, c in rel.split_counts.items()}
    return {
        "tool": "fusionrs build", "version": __version__, "builder_version": BUILDER_VERSION,
        "index": str(opts.index), "out": str(opts.out),
        "options": {k: v for k, v in asdict(opts).items() if k not in ("progress",)},
        "diffv2ir_reference": DIFFV2IR_SETTINGS,
        "index_records": plan.records,
        "bad_index_lines": len(plan.bad_lines),
        "written": {"total": n_written, "by_source_split_group": written},
        "dropped": {"total": n_dropped, "expected_by_release": n_expected,
                    "by_reason": dict(sorted(by_reason.items()))},
        "release": {**plan.identity, "sources_built": sorted(s for s in opts.source_roots if s in SOURCES),
                    "own_sources": sorted(s.name for s in opts.registry().extra)},
        "size_differs_same_aspect": {"count": len(resized), "examples": resized[:EXAMPLES]},
        "images": {"max_pixels": opts.max_pixels, **dict(sorted(by_note.items()))},
        "accounted": n_written + n_dropped == plan.records,
        "captions": {
            **plan.caption_counts,
            "choice": opts.caption_choice,
            "policy": opts.caption_policy,
            "iraware_policy": opts.iraware_policy,
            "iraware_files": [{"name": Path(f).name, "sha256": file_sha256(f)} for f in opts.iraware],
            "iraware_status": dict(sorted(plan.iraware_status.items())),
            "release_unusable": {"count": plan.release_unusable.count.get("no_usable_caption", 0),
                                 "examples": plan.release_unusable.examples.get("no_usable_caption", [])},
            "class_name_fallback": {"count": plan.fallback.count.get("class_name", 0),
                                    "examples": plan.fallback.examples.get("class_name", [])},
            "iraware_rejected_to_base": plan.iraware_rejected_to_base,
            "iraware_not_in_index": {"count": plan.iraware_unmatched[0], "examples": plan.iraware_unmatched[1]},
            "rules": rules,
        },
        "shards": {
            "planned": len(results), "written": sum(not r["skipped"] and r["rows"] > 0 for r in results),
            "skipped_unchanged": sum(r["skipped"] for r in results),
            "empty": sum(r["rows"] == 0 for r in results), "rows_per_shard": opts.rows_per_shard,
            "batch": opts.batch,
        },
        "rc4_comparison": {"matches": all(v["index"] == v["rc4"] for c in rc4.values() for v in c.values()),
                           "counts": rc4},
    }
