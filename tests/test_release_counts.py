"""The release's per-source evaluation, the text key of its CLIP scorer, and the split counts
``check --release`` recounts from a repo's shards.

- Per source: ``results/clip/retrieval/per_source/<source>/`` of FusionRS score the evaluation
  representatives of one source (e.g. 97 RSITMD test rows). All of one source's representatives are
  that protocol (complete, ``authors_format`` names the source); fewer, or several sources but not
  all, are a ``+subset``.
- Text key: ``score_retrieval_embeddings.py`` (``--protocol rc4``) groups texts by
  ``normalized_caption_key``; ``eval_clip_retrieval.py`` (behind the release's result files) by
  ``" ".join(text.lower().split())``. Each is checked against a scorer written out here.
- ``check --release``: joint groups, ``prior_reused_protected`` rows, protected groups and their rows,
  non-singleton pHash members and per-source representatives, on a small repo built here, with the
  slack of the release's unwritten (unusable-caption) rows and no more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from fusionrs_hf.release.known import RC4

SOURCES = ("NWPU", "RS5M", "RSICD", "RSITMD", "SkyScript")


def _authors_key(text: str) -> str:
    """The release's normalized_caption_key (build_release_manifest.py), written out again."""
    t = unicodedata.normalize("NFKC", text).casefold().strip()
    t = re.sub(r"[^\w\s]", " ", t, flags=re.UNICODE)
    t = re.sub(r"\s+", " ", t).strip()
    return hashlib.sha256(t.encode("utf-8")).hexdigest()


def _clip_key(text: str) -> str:
    """eval_clip_retrieval.py's normalized_text_key, written out again."""
    return " ".join(str(text).lower().split())


def _fusionrs(*argv: str) -> tuple[int, str, str]:
    from fusionrs_hf import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------ the release's numbers


def test_the_release_counts_are_the_published_ones():
    """FusionRS results/clip/retrieval/per_source/*/ "num_samples"; FusionRS-CLIP dataset/split_summary.json and
    the internal index's summary. The per-source sets add up to the split's representatives."""
    assert RC4.eval_representatives_per_source == {
        "RS5M": {"val": 7_637, "test": 7_660}, "SkyScript": {"val": 557, "test": 553},
        "NWPU": {"val": 551, "test": 536}, "RSICD": {"val": 700, "test": 707}, "RSITMD": {"val": 93, "test": 97}}
    for split in ("val", "test"):
        assert sum(v[split] for v in RC4.eval_representatives_per_source.values()) == RC4.eval_representatives[split]
    assert (RC4.joint_components, RC4.prior_reused_protected_rows, RC4.protected_groups, RC4.protected_group_rows,
            RC4.non_singleton_members) == (440_623, 54_487, 47_628, 142_322, 84_980)
    assert RC4.representatives("validation", "RSICD") == 700 and RC4.representatives("test") == 9_553
    assert RC4.representatives("train", "NWPU") is None


# ------------------------------------------------------------------------ per-source evaluation


def _records(source: str, split: str, n: int, *, reps: int | None = None, captions=None) -> list[dict]:
    caps = captions or [f"a {source} scene number {i}" for i in range(n)]
    reps = n if reps is None else reps
    return [{"sample_id": f"{source.lower()}-{split[:3]}-{i:05d}", "source": source, "caption": caps[i % len(caps)],
             "is_eval_representative": i < reps, "normalized_caption_key": _authors_key(caps[i % len(caps)])}
            for i in range(n)]


def _embeddings(records: list[dict], seed: int = 0):
    from fusionrs_hf.eval import Embeddings

    rng = np.random.default_rng(seed)
    n = len(records)
    return Embeddings([r["sample_id"] for r in records], *(rng.normal(size=(n, 8)) for _ in range(3)))


def _evaluate(records: list[dict], split: str = "test", **kw):
    from fusionrs_hf.eval import EvalRows, evaluate_embeddings

    rows = EvalRows.from_records(records, repo="r", config="default", split=split)
    return evaluate_embeddings(_embeddings(records), rows, protocol="rc4", ties="topk", zero_shot=False, **kw)


def test_all_of_one_sources_representatives_are_the_release_per_source_protocol():
    recs = _records("RSITMD", "test", 100, reps=97)  # 3 rows that are not representatives
    res = _evaluate(recs)
    assert res.per_source == "RSITMD" and res.n_expected == 97 and res.complete is True
    theirs = res.authors_format()
    assert theirs["protocol"] == "fusionrs-rc4-retrieval-v1" and theirs["source"] == "RSITMD"
    assert theirs["num_representatives"] == theirs["num_representatives_expected"] == 97
    assert any("per-source protocol (results/clip/retrieval/per_source/RSITMD)" in n for n in res.notes)
    assert any("--text-key lowercase" in n for n in res.notes)  # the release's per-source figures' key
    assert not any("+subset" in n for n in res.notes)
    d = res.to_dict()
    assert d["per_source"] == "RSITMD" and d["complete"] is True and "RSITMD evaluation representatives" in res.table()

    # what the numbers compare with, and how this run's rules differ from the published figures' scorer
    assert d["compare_with"] == {
        "target": "FusionRS results/clip/retrieval/per_source/RSITMD/test_580k_only_baseline.json (the release's "
                  "per-source test figures)",
        "caveats": ["text positives by normalized_caption_key: the per-source figures' scorer, eval_clip_retrieval.py, "
                    "uses lower-cased captions (--text-key lowercase)"]}
    assert "compare with: FusionRS results/clip/retrieval/per_source/RSITMD/" in res.table()

    val = _evaluate(_records("RSITMD", "validation", 93), split="validation")
    assert val.complete is True and val.authors_format()["split"] == "val" and val.n_expected == 93
    assert val.comparison()["target"].endswith("RSITMD/val_checkpoint_selection.json (the release's per-source val "
                                               "figures)")


def test_part_of_one_source_or_several_sources_stay_a_subset():
    part = _evaluate(_records("RSITMD", "test", 100, reps=96))
    assert part.complete is False and part.n_expected == 97
    theirs = part.authors_format()
    assert theirs["protocol"] == "fusionrs-rc4-retrieval-v1+subset" and theirs["source"] == "RSITMD"
    assert any("scored 96 of the release's 97 RSITMD test evaluation representatives" in n for n in part.notes)
    assert part.comparison()["target"] is None and "compare with: no published figures" in part.table()

    two = _evaluate(_records("RSITMD", "test", 97) + _records("NWPU", "test", 536))
    assert two.per_source is None and two.n_expected == 9_553 and two.complete is False
    theirs = two.authors_format()
    assert theirs["protocol"] == "fusionrs-rc4-retrieval-v1+subset" and "source" not in theirs
    assert any("scored 633 of the release's 9,553 test evaluation representatives" in n for n in two.notes)

    # a source the release does not have is left out by rc4: what is scored is still RSITMD's whole set
    own = _records("RSITMD", "test", 97) + [dict(_records("MyOwn", "test", 1)[0])]
    res = _evaluate(own)
    assert res.per_source == "RSITMD" and res.complete is True


def test_the_per_source_config_scores_as_the_release_per_source_set_on_the_command_line(tmp_path):
    from fusionrs_hf.card import write_card
    from fusionrs_hf.demo import sample_rows
    from fusionrs_hf.shards import ShardSink

    out = tmp_path / "repo"
    sinks: dict = {}
    sids = []
    for source, split, group, row in sample_rows(0, {"test": 99}, 32):
        i = int(row["sample_id"][-5:])
        row["is_eval_representative"] = source == "RSITMD" and i < 97 or source != "RSITMD" and i < 2
        row["phash4_component_id"] = f"singleton_{row['sample_id']}"
        row["normalized_caption_key"] = _authors_key(row["caption"])
        if source == "RSITMD":
            sids.append(row["sample_id"])
        sinks.setdefault((source, split, group), ShardSink(out, source, split, group, max_rows=64)).add(row)
    for sink in sinks.values():
        sink.close()
    write_card(out, sample=True, repo_id=str(out))
    rng = np.random.default_rng(1)
    emb = tmp_path / "rsitmd.npz"
    np.savez(emb, sample_id=np.asarray(sids), **{m: rng.normal(size=(len(sids), 8)) for m in ("rgb", "ir", "text")})
    rc, stdout, err = _fusionrs("eval", str(out), "--config", "rsitmd", "--split", "test", "--embeddings", str(emb),
                                "--ties", "topk", "--text-key", "lowercase", "--no-zero-shot", "--json")
    assert rc == 0, err
    res = json.loads(stdout)
    assert res["per_source"] == "RSITMD" and res["complete"] is True and res["text_key"] == "lowercase"
    theirs = res["authors_format"]
    assert theirs["protocol"] == "fusionrs-rc4-retrieval-v1+lowercase-key" and theirs["source"] == "RSITMD"
    assert theirs["num_representatives"] == 97
    assert "eval_clip_retrieval.py" in theirs["positive_definitions"]["image_text"]

    with pytest.raises(SystemExit) as e:  # argparse: a key that is not one of the choices
        _fusionrs("eval", str(out), "--config", "rsitmd", "--embeddings", str(emb), "--text-key", "exact")
    assert e.value.code == 2


# ------------------------------------------------------------------------ the text key


CAPTIONS = ("A forest, with a river.", "a forest with a river", "A FOREST  with a river", "Farmland near roads.",
            "farmland near roads", "Ein Fluß im Wald", "EIN FLUSS IM WALD", "Bare rock.")
"""Under normalized_caption_key the first three are one text, the next two another, the two German ones a
third; lower-casing with whitespace collapsed joins only the second and third."""


def _clip_scorer(records: list[dict], emb, key) -> dict[str, float]:
    """eval_clip_retrieval.py's multi-positive recall, written out (no ties: continuous random vectors):
    the query's positives are the gallery items with its key; paired views by position."""
    order = sorted(range(len(records)), key=lambda i: records[i]["sample_id"])
    keys = [key(records[i]["caption"]) for i in order]
    unit = {}
    for m in ("rgb", "ir", "text"):
        a = np.asarray(getattr(emb, m))[order]
        unit[m] = a / np.linalg.norm(a, axis=1, keepdims=True)
    out = {}
    for q, g, text_side in (("ir", "text", True), ("text", "ir", True), ("rgb", "ir", False), ("ir", "rgb", False)):
        top = np.argsort(-(unit[q] @ unit[g].T), axis=1, kind="stable")[:, :10]
        for k in (1, 5, 10):
            hits = [any((keys[a] == keys[b]) if text_side else a == b for b in top[a, :k]) for a in range(len(keys))]
            out[f"{q}2{g}_r{k}"] = 100.0 * sum(hits) / len(keys)
    return out


def test_lowercase_key_is_eval_clip_retrievals_and_caption_key_stays_the_default():
    from fusionrs_hf.eval import select
    from fusionrs_hf.eval.protocol import EvalRows

    recs = _records("NWPU", "test", 40, captions=CAPTIONS)
    rows = EvalRows.from_records(recs, split="test")
    assert select(rows, "rc4").n_keys == 4 and select(rows, "rc4", text_key="lowercase").n_keys == 7
    emb = _embeddings(recs)
    for key_name, key in (("caption", _authors_key), ("lowercase", _clip_key)):
        res = _evaluate(recs, text_key=key_name)
        want = _clip_scorer(recs, emb, key)
        assert {k: res.metrics[k] for k in want} == pytest.approx(want), key_name
    default = _evaluate(recs)
    assert default.metrics == _evaluate(recs, text_key="caption").metrics  # rc4 stays score_retrieval_embeddings.py
    assert default.metrics != _evaluate(recs, text_key="lowercase").metrics
    assert default.authors_format()["positive_definitions"]["image_text"] == "normalized_caption_key multi-positive"
    low = _evaluate(recs, text_key="lowercase")
    assert low.authors_format()["protocol"] == "fusionrs-rc4-retrieval-v1+lowercase-key+subset"
    assert low.line()["text_key"] == "lowercase" and "text_key" not in default.line()
    assert "eval_clip_retrieval.py" in low.table()


def test_an_unknown_text_key_or_a_blank_representative_is_a_protocol_error():
    from fusionrs_hf.eval import ProtocolError, select
    from fusionrs_hf.eval.protocol import EvalRows

    recs = _records("NWPU", "test", 3)
    with pytest.raises(ProtocolError, match="unknown text key 'exact'"):
        select(EvalRows.from_records(recs, split="test"), "rc4", text_key="exact")
    recs[1]["caption"] = "  \t "
    with pytest.raises(ProtocolError, match="has no usable caption"):
        select(EvalRows.from_records(recs, split="test"), "rc4", text_key="lowercase")


# ------------------------------------------------------------------------ check --release: the split's counts


COUNTS = {"train": 6, "validation": 3, "test": 3}


def _split_repo(out: Path, *, sources=SOURCES, merge_test: bool = False) -> Path:
    """Per source: train t0+t1 one joint group (t0 VLM-flagged), t2 prior_reused_protected, t3 both flags,
    t4+t5 one pHash component; validation v0+v1 one group (v0 its representative), v2 alone; test three
    groups, three representatives. ``merge_test``: test row 1 joins row 0's group and is no representative."""
    from fusionrs_hf.demo import sample_rows
    from fusionrs_hf.schema import joint_group_id_for
    from fusionrs_hf.shards import ShardSink

    sinks: dict = {}
    for source, split, group, row in sample_rows(0, COUNTS, 32):
        if source not in sources:
            continue
        i, sid = int(row["sample_id"][-5:]), row["sample_id"]
        first = sid[:-5] + "00000"  # row 0 of this source and split
        joins = i == 1 and (split != "test" or merge_test)  # row 1 in row 0's joint group
        comp = f"phash4_{source.lower()}" if split == "train" and i >= 4 else f"singleton_{sid}"
        row.update(
            joint_group_id=joint_group_id_for(first if joins else sid),
            is_eval_representative=split != "train" and not joins,
            phash4_component_id=comp, canonical_component_representative=sid[:-5] + "00004" if comp.startswith("phash4_")
            else sid, is_canonical_component_representative=not comp.startswith("phash4_") or i == 4,
            vlm_train_identity=split == "train" and i in (0, 3), prior_reused_protected=split == "train" and i in (2, 3),
            normalized_caption_key=_authors_key(row["caption"]))
        sinks.setdefault((source, split, group), ShardSink(out, source, split, group, max_rows=4)).add(row)
    for sink in sinks.values():
        sink.close()
    return out


@pytest.fixture(scope="module")
def split_repo(tmp_path_factory):
    return _split_repo(tmp_path_factory.mktemp("counts") / "repo")


def _release(**over):
    """RC4's rules at the repo's scale, with one unwritten train record (an unusable caption) in NWPU."""
    per = {s: {"train": 6 + (s == "NWPU"), "val": 3, "test": 3} for s in SOURCES}
    kw = dict(name="counts-mini", split_counts=per, train_usable=30, eval_representatives={"train": 0, "val": 10,
              "test": 15}, eval_representatives_per_source={s: {"val": 2, "test": 3} for s in SOURCES},
              joint_components=50, prior_reused_protected_rows=10, protected_groups=15, protected_group_rows=20,
              non_singleton_members=10)
    kw.update(over)
    return dataclasses.replace(RC4, **kw)


def _checks(repo: Path, release) -> dict:
    import fsspec

    from fusionrs_hf.release.verify import verify

    return {c.name: c for c in verify(fsspec.filesystem("file"), str(repo), release)}


NEW = ("eval_representatives_per_source", "joint_groups", "prior_reused_rows", "protected_groups",
       "non_singleton_members")


def test_the_split_counts_pass_when_they_are_the_releases(split_repo):
    checks = _checks(split_repo, _release())
    assert {n: checks[n].status for n in NEW} == dict.fromkeys(NEW, "pass"), {n: checks[n].findings for n in NEW}
    assert checks["joint_groups"].detail == "50 joint groups (train 25, validation 10, test 15)"
    assert checks["protected_groups"].detail == "15 protected joint groups, 20 rows"
    assert checks["eval_representatives"].status == "pass"


@pytest.mark.parametrize("field, in_slack, beyond", [
    ("joint_components", 51, 52), ("prior_reused_protected_rows", 11, 12), ("non_singleton_members", 11, 12)])
def test_a_count_may_be_short_by_the_unwritten_rows_only(split_repo, field, in_slack, beyond):
    name = {"joint_components": "joint_groups", "prior_reused_protected_rows": "prior_reused_rows",
            "non_singleton_members": "non_singleton_members"}[field]
    assert _checks(split_repo, _release(**{field: in_slack}))[name].status == "pass"  # the unwritten row was one
    for want in (beyond, 9):  # short by more than the unwritten rows, or more than the release
        c = _checks(split_repo, _release(**{field: want}))[name]
        assert c.status == "fail" and f"release counts-mini has {want:,}" in c.findings[0][0]


def test_protected_groups_and_their_rows(split_repo):
    ok = lambda **kw: _checks(split_repo, _release(**kw))["protected_groups"]  # noqa: E731
    assert ok(protected_group_rows=21).status == "pass"  # the unwritten row was in a protected group
    c = ok(protected_group_rows=22)  # every group there: 2 rows short is more than the unwritten row
    assert c.status == "fail" and "20 rows in joint groups with a protected row" in c.findings[0][0]
    # the unwritten row was the one flagged row of a group: that group is gone, its other row is in train
    # unflagged, so the rows can only be held to the release's count from above
    c = ok(protected_groups=16, protected_group_rows=22)
    assert c.status == "pass" and "rows held to at most 22 only: 1 protected group(s) absent" in c.detail
    assert ok(protected_groups=16, protected_group_rows=19).status == "fail"  # more rows than the release
    assert ok(protected_groups=17, protected_group_rows=24).status == "fail"  # two groups gone, one unwritten row


def test_per_source_representatives_are_located_and_checked_in_a_subset_build(split_repo, tmp_path):
    per = {s: {"val": 2, "test": 3} for s in SOURCES}
    per["RSICD"] = {"val": 2, "test": 4}
    c = _checks(split_repo, _release(eval_representatives_per_source=per))["eval_representatives_per_source"]
    assert c.status == "fail" and len(c.findings) == 1
    msg, loc = c.findings[0]
    assert msg.startswith("RSICD test: 3 evaluation representatives") and loc == {"config": "rsicd", "split": "test"}

    sub = _split_repo(tmp_path / "sub", sources=("NWPU", "RSICD"))
    checks = _checks(sub, _release())
    assert checks["eval_representatives_per_source"].status == "pass"
    assert "checked NWPU, RSICD" in checks["eval_representatives_per_source"].detail
    for name in ("joint_groups", "prior_reused_rows", "protected_groups", "non_singleton_members"):
        assert checks[name].status == "not_applicable" and "missing RS5M, RSITMD, SkyScript" in checks[name].detail


def test_a_held_out_joint_group_without_its_own_representative_is_found(tmp_path):
    repo = _split_repo(tmp_path / "merged", merge_test=True)
    c = _checks(repo, _release(joint_components=45, eval_representatives={"train": 0, "val": 10, "test": 15}))
    c = c["joint_groups"]
    assert c.status == "fail"
    assert [f[0] for f in c.findings] == ["test: 10 joint groups, release counts-mini has 15 (one per evaluation "
                                          "representative)"]
