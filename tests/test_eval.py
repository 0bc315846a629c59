"""`fusionrs eval`: the rc4 protocol against an independent brute force, zero-shot, the cache, and
a tiny CLIP trained a few steps whose final line equals `fusionrs eval` on its checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COUNTS = {"train": 4, "validation": 6, "test": 8}
"""Rows per source and split: 20 train rows (two batches of 8), 30 validation, 40 test."""
DUPLICATES = ("A forest, with a river.", "a forest with a river", "A FOREST WITH A RIVER!", "Farmland near roads.")
"""Captions that several held-out rows share: the first three are one normalised caption, the last is
repeated verbatim."""


# ------------------------------------------------------------------------ an rc4-like repo, built here


def _authors_key(text: str) -> str:
    """The release's normalized_caption_key, written out again (build_release_manifest.py)."""
    t = unicodedata.normalize("NFKC", text).casefold().strip()
    t = re.sub(r"[^\w\s]", " ", t, flags=re.UNICODE)
    t = re.sub(r"\s+", " ", t).strip()
    return hashlib.sha256(t.encode("utf-8")).hexdigest()


def _is_rep(split: str, i: int) -> bool:
    return split != "train" and i % 3 != 2  # every third held-out row is not a representative


def _make_repo(out: Path) -> Path:
    from fusionrs_hf.card import write_card
    from fusionrs_hf.demo import sample_rows
    from fusionrs_hf.shards import ShardSink

    sinks = {}
    for source, split, group, row in sample_rows(0, COUNTS, 32):
        i = int(row["sample_id"][-5:])
        if split != "train" and i % 2 == 0:
            row["caption"] = DUPLICATES[(i // 2) % len(DUPLICATES)]
        row["is_eval_representative"] = _is_rep(split, i)
        row["phash4_component_id"] = f"singleton_{row['sample_id']}"
        row["normalized_caption_key"] = _authors_key(row["caption"])
        key = (source, split, group)
        if key not in sinks:
            sinks[key] = ShardSink(out, source, split, group, max_rows=8)
        sinks[key].add(row)
    for sink in sinks.values():
        sink.close()
    write_card(out, sample=True, repo_id=str(out))
    return out


@pytest.fixture(scope="module")
def rc4_repo(tmp_path_factory):
    return _make_repo(tmp_path_factory.mktemp("eval") / "repo")


def _rows(repo: Path, split: str) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for f in sorted((repo / "data").glob(f"*/{split}/*.parquet")):
        rows.extend(pq.read_table(f, columns=["sample_id", "caption", "class_name", "is_eval_representative"])
                    .to_pylist())
    return rows


def _fusionrs(*argv: str) -> tuple[int, str, str]:
    from fusionrs_hf import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _tie_heavy(rows: list[dict], seed: int) -> dict[str, np.ndarray]:
    """+-1 vectors in 16 dims (every similarity a multiple of 1/16, exactly: many ties). Rows with the
    same caption string get the same text vector, as a real text encoder gives them."""
    rng = np.random.default_rng(seed)
    n = len(rows)
    emb = {m: rng.choice([-1.0, 1.0], size=(n, 16)) for m in ("rgb", "ir", "text")}
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        emb["text"][i] = emb["text"][first.setdefault(r["caption"], i)]
    return emb


def _write(path: Path, sids: list[str], emb: dict[str, np.ndarray], fmt: str, **extra) -> Path:
    if fmt == "npz":
        np.savez(path, sample_id=np.asarray(sids), **emb, **extra)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"sample_id": sids, **{m: [list(v) for v in a] for m, a in emb.items()}}), path)
    return path


# ------------------------------------------------------------------------ the brute force


def _brute(rows: list[dict], emb: dict[str, np.ndarray], ties: str, reps_only: bool = True) -> dict[str, float]:
    """The protocol written out query by query, with no code of the package."""
    idx = sorted((i for i, r in enumerate(rows) if r["is_eval_representative"] or not reps_only),
                 key=lambda i: rows[i]["sample_id"])  # gallery order: sample_id
    key = [_authors_key(rows[i]["caption"]) for i in idx]
    unit = {m: [a[i] / np.linalg.norm(a[i]) for i in idx] for m, a in emb.items()}
    n = len(idx)
    out = {}
    for q, g in (("ir", "text"), ("text", "ir"), ("rgb", "ir"), ("ir", "rgb"), ("rgb", "text"), ("text", "rgb")):
        text_side = "text" in (q, g)
        hits = {1: 0, 5: 0, 10: 0}
        for a in range(n):
            s = [float(np.dot(unit[q][a], unit[g][b])) for b in range(n)]
            rel = [key[a] == key[b] if text_side else a == b for b in range(n)]
            if ties == "topk":  # stable descending sort: ties stay in gallery order
                order = sorted(range(n), key=lambda b: (-s[b], b))
            else:  # pessimistic: among equal scores the wrong items come first
                order = sorted(range(n), key=lambda b: (-s[b], rel[b]))
            first = next(pos for pos, b in enumerate(order) if rel[b]) + 1
            for k in hits:
                hits[k] += first <= k
        name = {"ir": "ir", "rgb": "rgb", "text": "text"}
        for k, h in hits.items():
            out[f"{name[q]}2{name[g]}_r{k}"] = 100.0 * h / n
    out["mean_r"] = float(np.mean([out[f"{d}_r{k}"] for d in ("ir2text", "text2ir", "rgb2ir", "ir2rgb")
                                   for k in (1, 5, 10)]))
    return out


# ------------------------------------------------------------------------ rc4 on precomputed embeddings


@pytest.mark.parametrize("fmt", ["npz", "parquet"])
def test_rc4_on_embeddings_equals_the_brute_force(rc4_repo, tmp_path, fmt):
    rows = _rows(rc4_repo, "test")
    reps = [r for r in rows if r["is_eval_representative"]]
    assert 0 < len(reps) < len(rows)  # non-representative rows are there
    assert len({_authors_key(r["caption"]) for r in reps}) < len(reps)  # and caption keys shared by several
    emb = _tie_heavy(rows, seed=1)
    # the file holds every row of the split, in another order, plus a row the repo does not have
    order = np.random.default_rng(2).permutation(len(rows))
    sids = [rows[i]["sample_id"] for i in order] + ["not-in-the-repo"]
    stored = {m: np.concatenate([a[order], np.ones((1, 16))]) for m, a in emb.items()}
    path = _write(tmp_path / f"emb.{fmt}", sids, stored, fmt)
    figures = {}
    for ties in ("pessimistic", "topk"):
        rc, out, err = _fusionrs("eval", str(rc4_repo), "--embeddings", str(path), "--ties", ties, "--json")
        assert rc == 0, err
        res = json.loads(out)
        assert res["protocol"]["name"] == "rc4" and res["protocol"]["id"] == "fusionrs-rc4-retrieval-v1"
        assert res["ties"] == ties and res["split"] == "test" and res["n_scored"] == len(reps)
        assert res["n_rows"] == len(rows)
        want = _brute(rows, emb, ties)
        for key, value in want.items():
            assert res["metrics"][key] == pytest.approx(value, abs=1e-9), (ties, key)
        assert set(res["directions"]) == {"ir2text", "text2ir", "rgb2ir", "ir2rgb", "rgb2text", "text2rgb"}
        theirs = res["authors_format"]  # the same figures under the authors' scorer's names
        assert theirs["num_representatives"] == len(reps) and theirs["overall_mean"] == res["metrics"]["mean_r"]
        assert theirs["directions"]["ir_to_text"]["R@5"] == res["metrics"]["ir2text_r5"]
        assert theirs["split"] == "test" and theirs["embeddings_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        figures[ties] = res["metrics"]
    # the data has ties that matter: the two rules give different figures (and neither counts the
    # non-representatives: the brute force above has them out)
    assert any(figures["pessimistic"][k] != figures["topk"][k] for k in figures["topk"] if k.endswith(("r1", "r5")))


def test_table_names_the_protocol_and_the_paper_layout(rc4_repo, tmp_path):
    rows = _rows(rc4_repo, "test")
    path = _write(tmp_path / "e.npz", [r["sample_id"] for r in rows], _tie_heavy(rows, 3), "npz")
    rc, out, err = _fusionrs("eval", str(rc4_repo), "--embeddings", str(path))
    assert rc == 0, err
    lines = out.splitlines()
    assert "protocol rc4 (fusionrs-rc4-retrieval-v1)" in lines[1] and "ties: pessimistic" in lines[1]
    # a subset of the release's representatives: nothing published compares with it, and the table says so
    assert any(line.startswith("compare with: no published figures; not all of the release's") for line in lines)
    assert not any("Table 4" in line for line in lines)
    head = next(line for line in lines if line.startswith("Retrieval"))
    assert [d for d in ("IR→Text", "Text→IR", "RGB→IR", "IR→RGB") if d in head] == ["IR→Text", "Text→IR", "RGB→IR",
                                                                                   "IR→RGB"]
    assert any("Mean R" in line for line in lines) and any(line.startswith("RGB<->Text") for line in lines)


def test_all_rows_protocol_and_auto_without_release_flags(rc4_repo, sample_repo, tmp_path):
    rows = _rows(rc4_repo, "test")
    emb = _tie_heavy(rows, seed=4)
    path = _write(tmp_path / "e.npz", [r["sample_id"] for r in rows], emb, "npz")
    rc, out, err = _fusionrs("eval", str(rc4_repo), "--embeddings", str(path), "--protocol", "all-rows", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["protocol"]["name"] == "all-rows" and res["n_scored"] == len(rows)
    want = _brute(rows, emb, "pessimistic", reps_only=False)
    for key, value in want.items():
        assert res["metrics"][key] == pytest.approx(value, abs=1e-9), key
    # a repo without release flags (the demo sample): auto is all-rows, rc4 is a one-line usage error
    demo = _rows(sample_repo, "validation")
    assert all(r["is_eval_representative"] is None for r in demo)
    path = _write(tmp_path / "d.npz", [r["sample_id"] for r in demo], _tie_heavy(demo, 5), "npz")
    rc, out, err = _fusionrs("eval", str(sample_repo), "--embeddings", str(path), "--split", "validation", "--json")
    assert rc == 0, err
    assert json.loads(out)["protocol"]["name"] == "all-rows"
    rc, out, err = _fusionrs("eval", str(sample_repo), "--embeddings", str(path), "--split", "validation",
                             "--protocol", "rc4")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "is_eval_representative" in err and "all-rows" in err


def test_missing_embedding_or_train_split_is_a_usage_error(rc4_repo, tmp_path):
    rows = _rows(rc4_repo, "test")
    keep = [r for r in rows if r["sample_id"] != next(x for x in rows if x["is_eval_representative"])["sample_id"]]
    path = _write(tmp_path / "e.npz", [r["sample_id"] for r in keep], _tie_heavy(keep, 6), "npz")
    rc, out, err = _fusionrs("eval", str(rc4_repo), "--embeddings", str(path))
    assert rc == 2 and "1 of the" in err and "have no embedding" in err and len(err.strip().splitlines()) == 1
    rc, out, err = _fusionrs("eval", str(rc4_repo), "--embeddings", str(path), "--split", "train")
    assert rc == 2 and "no evaluation representative" in err


def test_zero_shot_on_embeddings_equals_the_brute_force(rc4_repo, tmp_path):
    rows = _rows(rc4_repo, "test")
    emb = _tie_heavy(rows, seed=7)
    classes = sorted({r["class_name"] for r in rows if r["class_name"]})
    assert len(classes) >= 2
    rng = np.random.default_rng(8)
    ctext = {m: rng.choice([-1.0, 1.0], size=(len(classes), 16)) for m in ("rgb", "ir")}
    path = _write(tmp_path / "e.npz", [r["sample_id"] for r in rows], emb, "npz", class_names=np.asarray(classes),
                  class_text_rgb=ctext["rgb"], class_text_ir=ctext["ir"])
    rc, out, err = _fusionrs("eval", str(rc4_repo), "--embeddings", str(path), "--ties", "topk", "--json")
    assert rc == 0, err
    zs = json.loads(out)["zero_shot"]
    scored = [i for i, r in enumerate(rows) if r["is_eval_representative"] and r["class_name"]]
    assert zs["n_images"] == len(scored) and zs["n_classes"] == len(classes)
    for m in ("rgb", "ir"):
        hits = {1: 0, 5: 0}
        for i in scored:
            v = emb[m][i] / np.linalg.norm(emb[m][i])
            s = [float(np.dot(v, c / np.linalg.norm(c))) for c in ctext[m]]
            order = sorted(range(len(classes)), key=lambda c: (-s[c], c))
            truth = classes.index(rows[i]["class_name"])
            for k in hits:
                hits[k] += truth in order[:k]
        assert zs["modalities"][m]["top1"] == pytest.approx(100 * hits[1] / len(scored))
        assert zs["modalities"][m]["top5"] == pytest.approx(100 * hits[5] / len(scored))


# ------------------------------------------------------------------------ a tiny CLIP end to end


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("preset", [None, "rc4-release"])
def test_trainer_final_line_equals_fusionrs_eval_on_its_checkpoint(rc4_repo, tmp_path, monkeypatch, preset):
    out_dir = tmp_path / "run"
    argv = ["--data", str(rc4_repo), "--config", "default", "--model", "tiny", "--image-size", "32",
            "--batch-size", "8", "--log-every", "1", "--out", str(out_dir), "--device", "cpu"]
    argv += ["--preset", "rc4-release", "--epochs", "2"] if preset else ["--steps", "3"]
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        rc = _example("train_clip").main(argv)
    assert rc == 0, err.getvalue()
    final = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert final["protocol"] == "rc4" and final["ties"] == "pessimistic" and final["preset"] == preset
    assert final["n_scored"] == sum(r["is_eval_representative"] for r in _rows(rc4_repo, "validation"))
    saved = json.loads((out_dir / "metrics.json").read_text())
    if preset:
        assert saved["steps"] == 4 and [s["epoch"] for s in saved["selection"]] == [1, 2]
        assert saved["overrides"] == ["epochs 2 (preset 3)", "batch_size 8 (preset 128)"]
        assert "zeroshot_ir_top1" in final  # validation NWPU rows carry class names

    cache = tmp_path / "cache"
    rc, out, errs = _fusionrs("eval", str(rc4_repo), "--model", str(out_dir / "checkpoint"), "--config", "default",
                              "--split", "validation", "--json", "--cache-dir", str(cache), "--quiet")
    assert rc == 0, errs
    res = json.loads(out)
    line = {k: v for k, v in final.items() if k not in ("preset", "eval_config", "eval_split")}
    got = {k: round(v, 4) for k, v in res["metrics"].items()}
    for mod, zs in (res["zero_shot"] or {}).get("modalities", {}).items():
        got.update({f"zeroshot_{mod}_{k}": round(v, 4) for k, v in zs.items() if k.startswith("top")})
    got.update(protocol=res["protocol"]["name"], ties=res["ties"], n_scored=res["n_scored"])
    assert {k: got[k] for k in line} == line
    assert res["source"]["cache"] == "written"

    # a second run reads the cache and does not load the model at all
    from fusionrs_hf.eval import embed

    monkeypatch.setattr(embed, "load_model", lambda *a, **k: pytest.fail("cache hit expected"))
    rc, out2, errs = _fusionrs("eval", str(rc4_repo), "--model", str(out_dir / "checkpoint"), "--config", "default",
                               "--split", "validation", "--json", "--cache-dir", str(cache), "--quiet")
    assert rc == 0, errs
    again = json.loads(out2)
    assert again["source"]["cache"] == "hit" and again["metrics"] == res["metrics"]
    assert again["zero_shot"] == res["zero_shot"]


def test_eval_is_registered_and_rejects_the_tiny_model(rc4_repo):
    from fusionrs_hf import cli

    assert cli.COMMANDS["eval"][0] == "fusionrs_hf.eval.cli"
    rc, out, err = _fusionrs("eval", str(rc4_repo), "--model", "tiny")
    assert rc == 2 and "random model" in err


def test_authors_format_names_validation_val(rc4_repo, tmp_path):
    """The authors' scorer takes --split val, not validation."""
    from fusionrs_hf.eval.protocol import EvalResult, read_eval_rows

    rows = read_eval_rows(str(rc4_repo), "default", "validation")
    assert rows.repo == str(rc4_repo)
    res = EvalResult("rc4", "topk", rows.repo, "default", "validation", "caption", 0, 0, 0, {})
    assert res.authors_format()["split"] == "val"


def test_a_subset_of_the_release_representatives_does_not_claim_the_authors_protocol(rc4_repo, tmp_path, monkeypatch):
    """Scoring fewer representatives than the release has (here: a small repo) is named a subset in the
    authors' format and in a note; exactly the release's count keeps their protocol id. The tie rule travels
    with the figures."""
    import fusionrs_hf.eval as ev
    from fusionrs_hf.eval.protocol import read_eval_rows

    rows = _rows(rc4_repo, "test")
    n_reps = sum(1 for r in rows if r["is_eval_representative"])
    path = _write(tmp_path / "e.npz", [r["sample_id"] for r in rows], _tie_heavy(rows, 5), "npz")
    eval_rows = read_eval_rows(str(rc4_repo), "default", "test")
    res = ev.evaluate(str(rc4_repo), embeddings=str(path), split="test", ties="topk", cache_dir=False)
    theirs = res.authors_format()
    assert theirs["protocol"] == "fusionrs-rc4-retrieval-v1+subset" and res.complete is False
    assert theirs["num_representatives"] == n_reps and theirs["num_representatives_expected"] == 9_553
    assert theirs["ties"] == "topk"
    assert any(f"scored {n_reps:,} of the release's 9,553 test evaluation representatives" in n for n in res.notes)
    monkeypatch.setattr(ev, "rc4_representatives", lambda split: n_reps)
    full = ev.evaluate_embeddings(ev.load_embeddings(str(path)), eval_rows, ties="topk")
    assert full.complete is True and full.authors_format()["protocol"] == "fusionrs-rc4-retrieval-v1"
    assert not any("not the authors' query set" in n for n in full.notes)
    assert full.metrics == res.metrics


def test_rc4_leaves_out_the_repos_own_sources(rc4_repo):
    """Evaluation rows of a repo's own source (build --from-folder marks its held-out rows) are not the
    release's representatives: rc4 scores without them and says so."""
    from fusionrs_hf.eval.protocol import read_eval_rows, select

    rows = read_eval_rows(str(rc4_repo), "default", "test")
    base = select(rows, "rc4")
    first = rows["sample_id"].index(base.sample_id[0])
    rows.columns["source"] = list(rows["source"])
    rows.columns["source"][first] = "MyOwn"
    sel = select(rows, "rc4")
    assert sel.n_other_sources == 1 and base.sample_id[0] not in sel.sample_id and len(sel) == len(base) - 1


def test_the_final_line_leaves_out_a_top_k_that_is_100_by_construction():
    """Three classes: a top-3 is 100% whatever the model; the line scripts parse no longer carries it (the
    table and metrics.json still show it, with the note)."""
    from fusionrs_hf.eval.protocol import EvalResult

    zs = {"n_images": 9, "n_classes": 3, "ks": [1, 3], "note": "top3 here, 100% by construction",
          "modalities": {"rgb": {"top1": 44.4, "top3": 100.0, "mean_per_class_top1": 44.4},
                         "ir": {"top1": 33.3, "top3": 100.0, "mean_per_class_top1": 33.3}}}
    res = EvalResult("all-rows", "pessimistic", "r", "default", "validation", "caption", 9, 9, 9,
                     {"ir2text_r1": 10.0}, zero_shot=zs)
    line = res.line()
    assert line["zeroshot_rgb_top1"] == 44.4 and line["zeroshot_ir_top1"] == 33.3
    assert "zeroshot_rgb_top3" not in line and "zeroshot_ir_top3" not in line
    assert "100.00" in res.table() and "by construction" in res.table()
