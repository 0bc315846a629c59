"""Issue 16: rebuilding exactly the authors' release (rc4) and verifying it the way they do.

An rc4-shaped fixture (both record variants, an IR-aware file with accepted and removed statuses,
sources at native sizes with 512 px IR) builds to the expected rows; ``check --release rc4`` on it
reports exactly the count findings a scaled-down build must have, none of the structural ones; a
release scaled to the fixture passes every check; a subset build says which checks cannot hold;
``--dry-run`` reports coverage from metadata only; same-aspect pairs stay aligned in the loader.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import get_dataset_split_names
from PIL import Image

from fusionrs_hf import cli
from fusionrs_hf.build import BuildOptions, build, dry_run
from fusionrs_hf.check import check_repo
from fusionrs_hf.release import known
from fusionrs_hf.release.known import RC4, file_sha256, identify_index
from fusionrs_hf.shards import write_rows
from fusionrs_hf.text import caption_key

from .build_fixtures import NATIVE_SIZE, build_options, make_fixture, write_jsonl


def _opts(fx, out, **over) -> BuildOptions:
    return build_options(fx, out, **{"rows_per_shard": 3, **over})


@pytest.fixture(scope="module")
def rc4_fx(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("rc4_src"))


@pytest.fixture(scope="module")
def rc4_built(rc4_fx, tmp_path_factory):
    out = tmp_path_factory.mktemp("rc4_out") / "repo"
    return out, build(_opts(rc4_fx, out))


def _fixture_release(fx) -> known.Release:
    """RC4's rules at the fixture's scale, counted from the fixture's own records (not from our code)."""
    split_counts: dict = {}
    for r in fx.records:
        split_counts.setdefault(r["source_dataset"], Counter())[r["split"]] += 1
    unusable = sum(not r["caption_supervision_available_upstream"] for r in fx.records)
    reps = Counter(r["split"] for r in fx.records if r["is_eval_representative"])
    ira = Counter(e.source for e in fx.expect.values() if e.ir_caption)
    rights = Counter(r["source_rights_code"] for r in fx.records if r["caption_supervision_available_upstream"])
    per_source: dict = {}
    for r in fx.records:
        if r["is_eval_representative"]:
            per_source.setdefault(r["source_dataset"], Counter())[r["split"]] += 1
    protected = {r["joint_group_id"] for r in fx.records if r["vlm_train_identity"] or r["prior_reused_protected"]}
    keys = Counter(caption_key(e.caption) for e in fx.expect.values() if e.caption)  # the captions rc4 writes
    return dataclasses.replace(
        RC4, name="rc4-fixture", index_sha256=file_sha256(fx.index_public), index_rows=len(fx.records),
        split_counts={s: dict(c) for s, c in split_counts.items()},
        train_usable=sum(c["train"] for c in split_counts.values()) - unusable,
        eval_representatives={"train": 0, **reps}, iraware_accepted=dict(ira), heldout_minimum_per_source=1,
        rights_code_counts=dict(rights), vlm_train_identity_rows=sum(r["vlm_train_identity"] for r in fx.records),
        eval_representatives_per_source={s: dict(c) for s, c in per_source.items()},
        joint_components=len({r["joint_group_id"] for r in fx.records}),
        prior_reused_protected_rows=sum(r["prior_reused_protected"] for r in fx.records),
        protected_groups=len(protected),
        protected_group_rows=sum(r["joint_group_id"] in protected for r in fx.records),
        non_singleton_members=sum(not r["phash4_component_id"].startswith("singleton_") for r in fx.records),
        caption_keys=len(keys), caption_shared_keys=sum(n > 1 for n in keys.values()),
        iraware_sha256=file_sha256(fx.iraware))


def test_rc4_fixture_builds_the_expected_rows_and_strict_accepts_release_drops(rc4_fx, rc4_built, tmp_path):
    out, report = rc4_built
    assert get_dataset_split_names(str(out), "iraware") == ["train"]  # rc4: IR-aware captions are train only
    assert set(get_dataset_split_names(str(out), "default")) == {"train", "validation", "test"}
    assert report["written"]["total"] == len(rc4_fx.records) - len(rc4_fx.dropped)
    # sources at native sizes with 512 px IR: every pair kept and recorded, none dropped for size
    assert report["size_differs_same_aspect"]["count"] == report["written"]["total"]
    assert {tuple(x["rgb"]) for x in report["size_differs_same_aspect"]["examples"]} <= \
        {(n, n) for n in NATIVE_SIZE.values()}
    # --strict does not fail on the rows the release itself has no usable caption for
    args = ["build", "--index", str(rc4_fx.index_public), "--ir-root", str(rc4_fx.ir_root), "--out",
            str(tmp_path / "strict"), "--rows-per-shard", "3", "--iraware", str(rc4_fx.iraware), "--quiet",
            "--workers", "1", "--strict", "--captions", *map(str, rc4_fx.caption_files)]
    for a in rc4_fx.source_root_args():
        args += ["--source-root", a]
    assert cli.main(args) == 0


def _kinds(report) -> Counter:
    return Counter(f.kind for f in report.findings)


def test_check_release_rc4_reports_exactly_the_count_findings(rc4_fx, rc4_built):
    out, _ = rc4_built
    rep = check_repo(str(out), fast=True, release="rc4", index=str(rc4_fx.index_public))
    n_src = len(NATIVE_SIZE)
    # expected from the fixture's shape: 5 sources x 3 splits all below rc4's counts, 2 held-out splits
    # per source below 500, IR-aware per source, one eval count per held-out split and one per source and
    # held-out split, digest + rows, joint groups in all and per held-out split, and one each for the
    # split summary's protected counts (no prior_reused row; groups short, so rows held to an upper bound
    # only) and the index summary's non-singleton members (none)
    assert _kinds(rep) == Counter({
        "release_split_counts": 3 * n_src, "release_heldout_minimum": 2 * n_src, "release_iraware": n_src,
        "release_eval_representatives": 2, "release_index_identity": 2, "release_records": 1,
        "release_train_usable": 1, "release_rights_codes": 1, "release_vlm_identity": 1,
        "release_eval_representatives_per_source": 2 * n_src, "release_joint_groups": 3,
        "release_prior_reused_rows": 1, "release_protected_groups": 1, "release_non_singleton_members": 1,
        "release_caption_keys": 1, "release_iraware_file": 1,
    })
    checks = {c["check"]: c["status"] for c in rep.stats["release"]["checks"]}
    assert checks["components_within_split"] == checks["caption_keys_within_split"] == "pass"
    assert checks["index_blocked_fields"] == "pass"
    msgs = [f.message for f in rep.findings if f.kind == "release_records"]
    assert msgs == [f"{len(rc4_fx.records) - 1:,} rows, the release has 599,992"]
    msgs = [f.message for f in rep.findings if f.kind == "release_caption_keys"]
    assert len(msgs) == 1 and "release rc4-20260727 has 477,966 and 29,158" in msgs[0]
    msgs = [f.message for f in rep.findings if f.kind == "release_iraware_file"]
    assert msgs == ["the build read no copy of rc4-20260727's iraware_strict_v3_45913.jsonl.gz (sha256 "
                    "6017e681db7ed9fba75791e10569248c5d05c0c9a937cba8a86fbf0d5acb54a3; a decompressed or edited copy "
                    "has another): its IR-aware captions are not the release's"]


def test_another_caption_choice_or_iraware_file_fails_the_release_checks(rc4_fx, tmp_path, monkeypatch):
    """The index has no caption: a rebuild that picks another of a source's sentences, or reads an edited
    IR-aware file, passed every release check. The release's caption-key counts and the IR-aware file's
    digest (in the build report) now tell."""
    mini = _fixture_release(rc4_fx)
    monkeypatch.setitem(known.RELEASES, mini.name, mini)
    assert sum(len(set(e.all_captions or [])) > 1 for e in rc4_fx.expect.values()) >= 3  # choices that differ
    out = tmp_path / "last"
    build(_opts(rc4_fx, out, caption_choice="random"))
    edited = tmp_path / "iraware.jsonl"  # the same records, decompressed: other bytes
    edited.write_bytes(gzip.decompress(rc4_fx.iraware.read_bytes()))
    build(_opts(rc4_fx, tmp_path / "edited", iraware=[str(edited)]))
    got = {}
    for name in ("last", "edited"):
        rep = check_repo(str(tmp_path / name), fast=True, release="rc4-fixture")
        got[name] = {c["check"]: c["status"] for c in rep.stats["release"]["checks"]}
        assert {k for k, v in got[name].items() if v == "fail"} == {"last": {"caption_keys"},
                                                                   "edited": {"iraware_file"}}[name], name


def test_a_release_at_the_fixture_scale_passes_every_check_and_auto_detects(rc4_fx, tmp_path, monkeypatch):
    mini = _fixture_release(rc4_fx)
    monkeypatch.setitem(known.RELEASES, mini.name, mini)
    assert identify_index(file_sha256(rc4_fx.index_public), len(rc4_fx.records)).release == mini.name
    out = tmp_path / "mini"
    report = build(_opts(rc4_fx, out))
    assert report["release"]["release"] == "rc4-fixture"
    rep = check_repo(str(out), fast=True, release="auto", index=str(rc4_fx.index_public))
    assert rep.ok, [(f.kind, f.message) for f in rep.findings]
    assert {c["status"] for c in rep.stats["release"]["checks"]} == {"pass"}
    # one defect of each structural kind is found, located by sample id
    bad_key = next(r for r in _rows(out) if r["split"] == "test")
    train_key = next(r for r in _rows(out) if r["split"] == "train")["normalized_caption_key"]
    _rewrite(out, bad_key["shard"], bad_key["row"], normalized_caption_key=train_key)
    rep = check_repo(str(out), fast=True, release="rc4-fixture")
    assert "release_caption_keys_within_split" in _kinds(rep)
    assert any(f.sample_id == bad_key["sample_id"] for f in rep.findings)


def _rows(out: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for p in sorted((out / "data").rglob("*.parquet")):
        t = pq.read_table(p).to_pylist()
        rel = p.relative_to(out).as_posix()
        rows += [{**r, "shard": rel, "row": i, "split": rel.split("/")[2]} for i, r in enumerate(t)]
    return rows


def _rewrite(out: Path, shard: str, row: int, **changes) -> None:
    import pyarrow.parquet as pq

    rows = pq.read_table(out / shard).to_pylist()
    rows[row].update(changes)
    write_rows(rows, out / shard)


def test_subset_build_says_which_release_checks_cannot_hold(rc4_fx, tmp_path):
    keep = {"NWPU", "RSICD"}
    index = write_jsonl(tmp_path / "subset.jsonl", [r for r in rc4_fx.records if r["source_dataset"] in keep])
    out = tmp_path / "subset"
    build(_opts(rc4_fx, out, index=str(index), source_roots={k: str(v) for k, v in rc4_fx.roots.items() if k in keep}))
    rep = check_repo(str(out), fast=True, release="rc4")
    checks = {c["check"]: c for c in rep.stats["release"]["checks"]}
    for name in ("records", "train_usable"):
        assert checks[name]["status"] == "not_applicable"
        assert "missing RS5M, SkyScript, RSITMD" in checks[name]["detail"]
    split_findings = [f for f in rep.findings if f.kind == "release_split_counts"]
    assert {f.config for f in split_findings} == {"nwpu", "rsicd"}  # per-source checks still run
    assert "your index has 5 NWPU records" in next(f.message for f in split_findings if f.config == "nwpu")


def test_dry_run_reports_coverage_from_metadata_and_writes_nothing(rc4_fx, tmp_path):
    rc4_fx.expect["rsicd-0003"].rgb_path.rename(rc4_fx.expect["rsicd-0003"].rgb_path.with_suffix(".bak"))
    try:
        out = tmp_path / "dry"
        d = dry_run(_opts(rc4_fx, out))
    finally:
        rc4_fx.expect["rsicd-0003"].rgb_path.with_suffix(".bak").rename(rc4_fx.expect["rsicd-0003"].rgb_path)
    assert not out.exists()
    cov = d["coverage"]
    assert cov["RSICD"]["validation"] == {"records": 1, "rgb": 0, "ir": 1, "caption": 1, "iraware": 0,
                                          "would_write": 0, "would_write_iraware": 0,
                                          "would_write_eval_representatives": 0}
    assert cov["NWPU"]["train"]["caption"] == 2 and cov["NWPU"]["train"]["release_unusable"] == 1
    assert cov["SkyScript"]["train"]["iraware"] == 2
    assert d["would_write"] == len(rc4_fx.records) - len(rc4_fx.dropped) - 1
    assert d["release_checks"]["records"].startswith("cannot hold")
    proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "build", "--dry-run", "--json", "--index",
                           str(rc4_fx.index_public), "--out", str(out), "--ir-root", str(rc4_fx.ir_root),
                           "--captions", *map(str, rc4_fx.caption_files), "--iraware", str(rc4_fx.iraware),
                           *[a for s in rc4_fx.source_root_args() for a in ("--source-root", s)]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["would_write"] == len(rc4_fx.records) - len(rc4_fx.dropped)


def test_iraware_record_disagreeing_with_the_index_is_named(rc4_fx, tmp_path):
    from fusionrs_hf.build import BuildError

    from .build_fixtures import iraware_record

    bad = write_jsonl(tmp_path / "ira.jsonl", [iraware_record("nwpu-0000", "NWPU", "val", "Roofs.",
                                                              "accepted_strict_v3")])
    with pytest.raises(BuildError, match=r"ira.jsonl row 1: sample_id 'nwpu-0000' is NWPU/val there but NWPU/train"):
        build(_opts(rc4_fx, tmp_path / "o", iraware=[str(bad)]))


@pytest.mark.parametrize("rgb_size, ir_size", [((64, 64), (128, 128)), ((96, 64), (192, 128))])
def test_same_aspect_pairs_stay_aligned_in_the_loader(tmp_path, rgb_size, ir_size):
    """A 256 px source and its 512 px DiffV2IR output: the loader's crop/resize maps both to one grid."""
    from fusionrs_hf.layout import shard_path
    from fusionrs_hf.torch import make_dataloader

    rng = np.random.default_rng(0)
    base = (rng.random((8, 12, 3)) * 255).astype(np.uint8)
    big = Image.fromarray(base).resize(ir_size, Image.BICUBIC)  # one picture, two sizes
    small = big.resize(rgb_size, Image.BICUBIC)

    def jpg(im):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=98)
        return buf.getvalue()

    rows = [{"sample_id": f"s{i}", "source": "NWPU", "rgb": jpg(small), "ir": jpg(big), "caption": "a scene",
             "caption_origin": "source"} for i in range(2)]
    write_rows(rows, tmp_path / shard_path("NWPU", "train", "base", 0))
    (batch,) = list(make_dataloader(str(tmp_path), config="default", split="train", batch_size=2, image_size=32,
                                    normalize=False))
    diff = (batch["rgb"].float() - batch["ir"].float()).abs().mean().item()
    assert diff < 6.0, diff  # misaligned crops of this texture differ by ~40 levels
    shifted = batch["ir"].float().roll(4, dims=-1)
    assert (batch["rgb"].float() - shifted).abs().mean().item() > 3 * diff


def test_readme_field_table_is_the_schema():
    """README's field table is exactly the one the schema writes (and the card embeds)."""
    from fusionrs_hf.schema import field_docs_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert field_docs_markdown() in readme
    assert "45,913" in readme and "49,068 / 416 / 10,000" in readme  # both numbers, each labelled


def test_card_says_which_release_and_which_numbers(rc4_built):
    out, _ = rc4_built
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "not a known release" in card and "Caption policy `rc4`" in card
    assert "| RS5M | 472,682 / 38,411 | 7,670 / 0 | 7,681 / 0 |" in card  # rc4's table, train-only IR-aware
    assert "49,068 / 416 / 10,000" in card


def test_anchored_patterns_refuse_a_trailing_newline():
    """ECMA-262's ``$`` (the release's JSON schemas) and our own anchored rules match only at the very end:
    Python's ``$`` would also accept a value ending in a newline."""
    from fusionrs_hf.layout import BATCH_RE
    from fusionrs_hf.release.jsonschema import ecma_anchors, errors
    from fusionrs_hf.schema import JOINT_GROUP_RE, SHA256_RE
    from fusionrs_hf.sources import NAME_RE
    from fusionrs_hf.storage import _HUB_ID_RE

    gid = "joint-group:" + "0a" * 12
    assert JOINT_GROUP_RE.match(gid) and not JOINT_GROUP_RE.match(gid + "\n")
    for rule, ok in ((SHA256_RE, "0" * 64), (NAME_RE, "MyOwn"), (BATCH_RE, "b0"), (_HUB_ID_RE, "me/fusionrs")):
        assert rule.match(ok) and not rule.match(ok + "\n"), rule.pattern
    schema = {"type": "string", "pattern": "^joint-group:[0-9a-f]{24}$"}
    assert not list(errors(schema, gid)) and list(errors(schema, gid + "\n"))
    assert ecma_anchors(r"^a\$[$]$") == r"^a\$[$]\Z"


def test_protected_rows_vlm_flags_class_names_and_component_representatives_are_checked(rc4_fx, tmp_path, monkeypatch):
    """The release's audits: protected rows are all train, every IR-aware row is VLM training data, and a
    pHash component's representative is its smallest member, the only one flagged canonical; class_name is
    NWPU's only."""
    mini = _fixture_release(rc4_fx)
    monkeypatch.setitem(known.RELEASES, mini.name, mini)
    out = tmp_path / "mini"
    build(_opts(rc4_fx, out))
    rows = _rows(out)
    held = next(r for r in rows if r["split"] == "test")
    ira = next(r for r in rows if "/iraware-" in r["shard"])
    a, b = sorted((r for r in rows if r["split"] == "train" and "/base-" in r["shard"]),
                  key=lambda r: r["sample_id"])[:2]
    _rewrite(out, held["shard"], held["row"], prior_reused_protected=True)
    rsicd = next(r for r in rows if r["sample_id"].startswith("rsicd-") and r["shard"] != held["shard"])
    _rewrite(out, rsicd["shard"], rsicd["row"], class_name="airport")
    _rewrite(out, ira["shard"], ira["row"], vlm_train_identity=False)
    cid = "phash4_" + "0" * 24
    for r in (a, b):  # one component, represented by its larger member
        _rewrite(out, r["shard"], r["row"], phash4_component_id=cid, canonical_component_representative=b["sample_id"],
                 is_canonical_component_representative=r is b)
    rep = check_repo(str(out), fast=True, release="rc4-fixture")
    found = {(f.kind, f.sample_id) for f in rep.findings}
    assert ("release_protected_in_train", held["sample_id"]) in found
    assert ("release_vlm_identity", ira["sample_id"]) in found
    assert ("release_class_names", rsicd["sample_id"]) in found
    assert any(k == "release_component_representatives" for k, _ in found)
    # and the split summary's counts see the same edits: one more prior_reused_protected row, two rows in a
    # multi-sample pHash component (the protected groups are unchanged: one gained, one lost its flag)
    assert ("release_prior_reused_rows", None) in found and ("release_non_singleton_members", None) in found
    # (and no other release check: the rewritten shards' digests no longer match the card, which is not one)
    assert {k for k, _ in found if k.startswith("release_")} == {
        "release_protected_in_train", "release_vlm_identity", "release_component_representatives",
        "release_class_names", "release_prior_reused_rows", "release_non_singleton_members"}, found
