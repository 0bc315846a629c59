"""Time ``fusionrs build --dry-run`` on an rc4-sized index (600,000 records, rc4's split counts).

Writes a synthetic public index with rc4's per-source split counts and an IR-aware file with 45,913
accepted records, points the build at empty source and IR roots (every file missing: the stat path
of a user who has none of the files yet) and prints the wall time of the dry run. Usage:

    python tools/bench_dry_run.py [--rows 600000] [--no-write]

and writes the ``bench:dry_run`` section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fusionrs_hf.build import BuildOptions, dry_run
from fusionrs_hf.release.known import RC4


def write_index(root: Path, scale: float) -> tuple[Path, Path]:
    index, ira = root / "index.jsonl.gz", root / "iraware.jsonl.gz"
    n_ira = dict(RC4.iraware_accepted)
    with gzip.open(index, "wt", encoding="utf-8") as fi, gzip.open(ira, "wt", encoding="utf-8") as fa:
        for src, per in RC4.split_counts.items():
            for split, n in per.items():
                for i in range(int(n * scale)):
                    sid = f"{src}_{split}_{i}"
                    h = hashlib.sha256(sid.encode()).hexdigest()
                    fi.write(json.dumps({
                        "schema_version": "fusionrs-public-index-v1", "sample_id": sid, "source_dataset": src,
                        "source_record_id": sid, "source_locator": f"images/{sid}.jpg",
                        "source_rights_code": "rs5m-item-rights-unconfirmed", "split": split,
                        "joint_group_id": f"joint-group:{h[:24]}", "phash4_component_id": f"singleton_{sid}",
                        "canonical_component_representative": sid, "is_canonical_component_representative": True,
                        "is_eval_representative": split != "train", "caption_supervision_available_upstream": True,
                        "vlm_train_identity": False, "prior_reused_protected": False,
                        "translation": {"model": "DiffV2IR", "output_key": f"{src}/{sid}.png",
                                        "redistribution": "conditional_on_upstream_rights"}}) + "\n")
                    if split == "train" and n_ira[src] > 0:
                        n_ira[src] -= 1
                        fa.write(json.dumps({"schema_version": "fusionrs-iraware-caption-v1", "sample_id": sid,
                                             "source_dataset": src, "split": "train", "caption": "Bright roofs.",
                                             "status": "accepted_strict_v3", "filter_reasons": []}) + "\n")
    return index, ira


START, END = "<!-- bench:dry_run:start -->", "<!-- bench:dry_run:end -->"


def section(res: dict, rows_arg: int) -> str:
    import platform

    return f"""{START}
## `fusionrs build --dry-run` on an rc4-sized index

Command: `python tools/bench_dry_run.py --rows {rows_arg}`
Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores ({platform.platform()})

A synthetic public index with rc4's per-source split counts ({res['records']:,} records, every line validated
against the published schema) and an IR-aware file of accepted records; empty source and IR roots, so every
RGB and IR file is one failed stat (a user who has none of the files yet).

| records | dry run (s) | records/s |
|---:|---:|---:|
| {res['records']:,} | {res['dry_run_s']} | {res['records_per_s']:,} |
{END}"""


def write_section(path: Path, text: str) -> None:
    from fusionrs_hf.bench import replace_section

    replace_section(path, START, END, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=RC4.index_rows)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "BENCHMARKS.md",
                    help="BENCHMARKS.md to update (only the bench:dry_run section)")
    ap.add_argument("--no-write", action="store_true", help="print the result, do not write BENCHMARKS.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        index, ira = write_index(root, args.rows / RC4.index_rows)
        t1 = time.perf_counter()
        (root / "src").mkdir()
        (root / "ir").mkdir()
        opts = BuildOptions(index=str(index), out=str(root / "out"), iraware=[str(ira)], ir_root=str(root / "ir"),
                            source_roots={s: str(root / "src") for s in RC4.sources}, progress=False)
        d = dry_run(opts)
        t2 = time.perf_counter()
    records = sum(c["records"] for per in d["coverage"].values() for c in per.values())
    res = {"records": records, "write_index_s": round(t1 - t0, 1), "dry_run_s": round(t2 - t1, 1),
           "records_per_s": round(records / (t2 - t1))}
    print(json.dumps(res))
    if not args.no_write:
        write_section(args.out, section(res, args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
