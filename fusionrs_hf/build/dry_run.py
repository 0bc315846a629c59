"""``fusionrs build --dry-run``: coverage and the rows a build would write, from file metadata only."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .. import safepath
from ..layout import SPLITS
from ..release.known import RELEASES
from .options import BuildOptions, _check_inputs
from .plan import _Planner, index_identity
from .shard import _Drop, _safe_join

# --dry-run

def dry_run(opts: BuildOptions) -> dict:
    """What a build would write, from file metadata only (no image is opened): per source and split,
    how many index records have their RGB, IR, caption and IR-aware caption, how many rows would be
    written, and which release checks could then hold. Nothing is written under ``--out``."""
    import tempfile

    from ..release.known import RC4

    _check_inputs(opts)
    safepath.forget()
    cov: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    with tempfile.TemporaryDirectory(prefix="fusionrs-dry-") as tmp:
        planner = _Planner(opts, Path(tmp))
        try:
            planner.load()
            for item in planner:
                rec, e = item.rec, item.entry
                c = cov[rec.source][rec.split]
                c["records"] += 1
                root = opts.source_roots.get(rec.source)
                rgb = bool(root) and _is_file(root, rec.source_locator)
                ir = bool(opts.ir_root) and _is_file(opts.ir_root, rec.translation.output_key)
                cap = e["caption"] is not None
                c["rgb"] += rgb
                c["ir"] += ir
                c["caption"] += cap
                c["iraware"] += item.group == "iraware"
                ok = rgb and ir and cap
                c["would_write"] += ok
                c["would_write_iraware"] += ok and item.group == "iraware"
                c["would_write_eval_representatives"] += ok and bool(e["release"]["is_eval_representative"])
                if e["drop"] == "no_usable_caption":
                    c["release_unusable"] += 1
            identity = index_identity(opts.index, planner.records + len(planner.bad_lines))
            bad = len(planner.bad_lines)
        finally:
            planner.close()
    coverage = {s: {sp: dict(v) for sp, v in per.items()} for s, per in sorted(cov.items())}
    rel = RELEASES.get(identity.get("release") or "") or RC4
    return {"tool": "fusionrs build --dry-run", "index": str(opts.index), "release": identity,
            "bad_index_lines": bad, "coverage": coverage,
            "would_write": sum(v["would_write"] for per in coverage.values() for v in per.values()),
            "release_checks": _could_hold(rel, coverage), "release_checks_against": rel.name}


def _is_file(root: str, rel: str) -> bool:
    try:
        return _safe_join(root, rel).is_file()
    except (OSError, ValueError, _Drop):
        return False


def _could_hold(rel, coverage: dict) -> dict[str, str]:
    """Per release check, whether the rows a build would write can satisfy it, and if not, why."""
    from ..layout import SPLIT_TO_INDEX

    def n(src, split, key="would_write"):
        return coverage.get(src, {}).get(split, {}).get(key, 0)

    missing = [s for s in rel.sources if not any(n(s, sp, "rgb") for sp in SPLITS)]
    out: dict[str, str] = {}
    short = [f"{s} {sp} {n(s, sp):,}/{rel.expected_rows(s, sp):,}" for s in rel.sources for sp in SPLITS
             if n(s, sp) < rel.expected_rows(s, sp) - (rel.records - rel.split_total('val') - rel.split_total('test')
                                                         - rel.train_usable if sp == "train" else 0)]
    out["split_counts"] = "can hold" if not short else "cannot hold: " + ", ".join(short[:6]) + \
        (f" (+{len(short) - 6} more)" if len(short) > 6 else "")
    total = sum(n(s, sp) for s in rel.sources for sp in SPLITS)
    want = rel.train_usable + rel.split_total("val") + rel.split_total("test")
    out["records"] = "can hold" if total == want else f"cannot hold: {total:,} rows would be written, release {want:,}"
    if missing:
        out["records"] += f" (no files found for {', '.join(missing)})"
    reps = {sp: sum(n(s, sp, "would_write_eval_representatives") for s in rel.sources) for sp in SPLITS}
    wrong = [f"{sp} {reps[sp]:,}/{rel.eval_representatives.get(SPLIT_TO_INDEX[sp], 0):,}" for sp in SPLITS
             if reps[sp] != rel.eval_representatives.get(SPLIT_TO_INDEX[sp], 0)]
    out["eval_representatives"] = "can hold" if not wrong else "cannot hold: " + ", ".join(wrong)
    low = [f"{s} {sp} {n(s, sp):,}" for s in rel.sources for sp in ("validation", "test")
           if n(s, sp) < rel.heldout_minimum_per_source]
    out["heldout_minimum"] = "can hold" if not low else "cannot hold: " + ", ".join(low)
    ira = {s: n(s, "train", "would_write_iraware") for s in rel.sources}
    bad_ira = [f"{s} {ira[s]:,}/{rel.iraware_accepted.get(s, 0):,}" for s in rel.sources
               if ira[s] != rel.iraware_accepted.get(s, 0)]
    out["iraware"] = "can hold" if not bad_ira else "cannot hold: " + ", ".join(bad_ira)
    return out


def _print_dry_run(d: dict) -> None:
    r = d["release"]
    print(f"index: {d['index']}  ({r['rows']:,} rows; {r['note']})")
    print(f"{'source':<10} {'split':<10} {'records':>9} {'rgb':>9} {'ir':>9} {'caption':>9} {'iraware':>8} "
          f"{'write':>9}")
    for src, per in d["coverage"].items():
        for split in SPLITS:
            c = per.get(split)
            if c:
                print(f"{src:<10} {split:<10} {c['records']:>9,} {c['rgb']:>9,} {c['ir']:>9,} {c['caption']:>9,} "
                      f"{c['iraware']:>8,} {c['would_write']:>9,}")
    print(f"rows a build would write: {d['would_write']:,}")
    if not r.get("release"):  # an index of one's own: the release's counts say what it is not, nothing more
        print(f"release checks: not applicable (the index is not a known release; `fusionrs check --release "
              f"{d['release_checks_against']}` would compare it with {d['release_checks_against']}'s counts)")
        return
    for name, verdict in d["release_checks"].items():
        print(f"  release check {name}: {verdict}")
