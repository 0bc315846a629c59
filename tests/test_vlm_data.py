"""fusionrs_hf.vlm_data: instruction templates, A/B/C settings, chat `messages` samples."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from fusionrs_hf.demo import make_sample_repo
from fusionrs_hf.vlm_data import (
    SETTINGS,
    TEMPLATES,
    VLMCollator,
    cue_answer,
    make_vlm_dataloader,
    object_answer,
    vlm_samples,
)

PAPER = {
    "ir_caption": "Describe this infrared remote sensing image in detail.",
    "scene_qa": "What is the main scene type in this infrared remote sensing image? Answer with a concise "
                "scene label only.",
    "object_qa": "What are the main objects or land-cover elements visible in this infrared remote sensing "
                 "image? Answer with a concise comma-separated list.",
    "ir_cue_qa": "What infrared-specific visual cues can be observed in this image? Mention visible grayscale "
                 "intensity, high contrast, bright structures, low-texture or dark regions, and structural "
                 "outlines if present.",
}


@pytest.fixture(scope="module")
def vlm_repo(tmp_path_factory) -> Path:
    return make_sample_repo(tmp_path_factory.mktemp("vlm") / "repo", counts={"train": 12}, size=48, max_rows=5)


def _table_rows(repo: Path, pattern: str) -> list[dict]:
    return [r for f in sorted(repo.glob(pattern)) for r in pq.read_table(f).to_pylist()]


def test_templates_verbatim():
    assert TEMPLATES == PAPER
    assert SETTINGS == ("A-original", "B-iraware", "C-mixed")


@pytest.mark.parametrize(("config", "pattern"), [("iraware", "data/*/train/iraware-*.parquet"),
                                                 ("default", "data/*/train/*.parquet")])
def test_settings_row_counts(vlm_repo, config, pattern):
    rows = _table_rows(vlm_repo, pattern)
    n_all = len(rows)
    n_ir = sum(r["ir_caption"] is not None for r in rows)
    expected = {"A-original": n_all, "B-iraware": n_ir, "C-mixed": n_all + n_ir}
    if config == "iraware":
        assert n_ir == n_all and expected["C-mixed"] == 2 * n_all  # "twice the rows"
    for setting in SETTINGS:
        loader = make_vlm_dataloader(vlm_repo, config=config, split="train", setting=setting, batch_size=4,
                                     num_workers=2, shuffle=True)
        samples = [s for batch in loader for s in batch]
        assert len(samples) == expected[setting], setting
        assert all(s["task"] == "ir_caption" for s in samples)


def test_sample_structure_and_answers(vlm_repo):
    rows = {r["sample_id"]: r for r in _table_rows(vlm_repo, "data/*/train/iraware-*.parquet")}
    loader = make_vlm_dataloader(vlm_repo, config="iraware", split="train", setting="C-mixed", batch_size=3)
    batch = next(iter(loader))
    assert len(batch) == 6
    for s in batch:
        assert set(s) == {"messages", "images", "sample_id", "setting", "task"}
        user, assistant = s["messages"]
        assert user == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PAPER["ir_caption"]}]}
        assert assistant["role"] == "assistant" and assistant["content"][0]["type"] == "text"
        row = rows[s["sample_id"]]
        want = row["caption"] if s["setting"] == "A-original" else row["ir_caption"]
        assert assistant["content"][0]["text"] == want
        (img,) = s["images"]
        assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (48, 48)
        # the image is the IR image, not the RGB one
        import io
        ir = Image.open(io.BytesIO(row["ir"]["bytes"])).convert("RGB")
        assert img.tobytes() == ir.tobytes()
    assert [s["setting"] for s in batch[:2]] == ["A-original", "B-iraware"]


def test_qa_tasks_answers_and_skips():
    nwpu = {"sample_id": "n1", "ir": Image.new("RGB", (8, 8)), "class_name": "dense_residential",
            "caption": "Many buildings and roads with some trees.",
            "ir_caption": "An infrared image of a residential area, where building roofs appear as bright blocks, "
                          "roads form straight gray lines."}
    other = {**nwpu, "sample_id": "o1", "class_name": None, "ir_caption": None}
    for setting in SETTINGS:
        (s,) = vlm_samples(nwpu, setting, "scene_qa")
        assert s["messages"][1]["content"][0]["text"] == "dense residential"
        assert s["messages"][0]["content"][1]["text"] == PAPER["scene_qa"]
        assert vlm_samples(other, setting, "scene_qa") == []  # no class name -> no trustworthy label
        assert vlm_samples(other, setting, "ir_cue_qa") == []  # no IR-aware caption
    cue = vlm_samples(nwpu, "B-iraware", "ir_cue_qa")[0]["messages"][1]["content"][0]["text"]
    assert cue == "Building roofs appear as bright blocks; roads form straight gray lines."
    a, b = vlm_samples(nwpu, "C-mixed", "object_qa")
    assert a["messages"][1]["content"][0]["text"] == "buildings, roads, trees"
    assert b["messages"][1]["content"][0]["text"] == "buildings, roads"
    assert [s["setting"] for s in vlm_samples(other, "C-mixed", "ir_caption")] == ["A-original"]


def test_answer_helpers():
    assert object_answer("A river next to farmland and a bridge.") == "river, fields, bridge"
    assert object_answer("Nothing to see.") is None
    assert cue_answer("An infrared image of a forest, where the tree canopy is bright and textured.") == \
        "The tree canopy is bright and textured."
    assert cue_answer("An infrared image of a forest.") is None


def test_collator_on_stock_datasets_rows(vlm_repo):
    from datasets import load_dataset

    ds = load_dataset(str(vlm_repo), "iraware", split="train", streaming=True)
    rows = list(ds.take(4))
    out = VLMCollator("C-mixed")(rows)
    assert len(out) == 8 and all(isinstance(s["images"][0], Image.Image) for s in out)


def test_bad_names():
    with pytest.raises(ValueError, match="setting"):
        VLMCollator("D-other")
    with pytest.raises(ValueError, match="task"):
        vlm_samples({"caption": "x"}, "A-original", "vqa")


# ------------------------------------------------------------------------ a config without some splits (rc4)


@pytest.fixture(scope="module")
def train_only_repo(tmp_path_factory) -> Path:
    from .train_only_iraware import make_train_only_iraware_repo

    return make_train_only_iraware_repo(tmp_path_factory.mktemp("rc4") / "repo",
                                        counts={"train": 6, "validation": 2, "test": 1}, size=32, max_rows=4)


def test_stock_datasets_and_the_helper_agree_iraware_is_train_only(train_only_repo):
    from datasets import load_dataset

    from fusionrs_hf.splits import available_splits, repo_splits

    assert set(load_dataset(str(train_only_repo), "iraware")) == {"train"}
    assert set(load_dataset(str(train_only_repo), "default")) == {"train", "validation", "test"}
    assert available_splits(train_only_repo, "iraware") == ("train",)
    listing = repo_splits(f"file://{train_only_repo}")  # an fsspec URL lists the same shards
    assert listing.splits("default") == ("train", "validation", "test") and listing.splits("iraware") == ("train",)
    assert listing.has_ir_captions("default", "train") and not listing.has_ir_captions("default", "validation")


def test_fallback_rule(train_only_repo):
    import io

    from fusionrs_hf.splits import MissingSplitError, RepoSplits, repo_splits

    listing = repo_splits(train_only_repo)
    err = io.StringIO()
    assert listing.eval_config("iraware", "train", who="t", stream=err) == "iraware" and not err.getvalue()
    assert listing.eval_config("iraware", "test", who="t", stream=err) == "default"
    assert err.getvalue() == (f"t: config 'iraware' has no 'test' split in {train_only_repo} (rc4 releases IR-aware "
                              "captions for train only); evaluating on 'default'/test\n")
    # a config the user named has no fallback
    with pytest.raises(MissingSplitError, match=r"^t: config 'iraware' has no 'test' split in .* "
                                                r"\(its splits: train; rc4 releases"):
        listing.eval_config("iraware", "test", explicit=True, who="t")
    # nor does 'default' itself, nor a fallback that lacks the split too
    no_test = RepoSplits(listing.repo, tuple(s for s in listing.shards if s.split != "test"))
    with pytest.raises(MissingSplitError, match=r"'default' has no 'test' split .* \(its splits: train, validation\)$"):
        no_test.eval_config("default", "test")
    with pytest.raises(MissingSplitError, match=r"and neither has the fallback 'default' "
                                                r"\(its splits: train, validation\)$") as caught:
        no_test.eval_config("iraware", "test")
    assert isinstance(caught.value, FileNotFoundError) and caught.value.available == ("train",)
    with pytest.raises(MissingSplitError, match="'iraware' has no 'validation' split"):
        listing.require("iraware", "validation")


def test_make_vlm_dataloader_on_a_missing_split_names_the_splits_there_are(train_only_repo):
    with pytest.raises(ValueError, match=rf"config 'iraware' has no 'validation' split in {train_only_repo} "
                                         r"\(its splits: train\)"):
        make_vlm_dataloader(train_only_repo, config="iraware", split="validation")
    # training data is all there: every IR-aware train row gives one B-iraware sample
    samples = [s for b in make_vlm_dataloader(train_only_repo, config="iraware", split="train") for s in b]
    assert len(samples) == 5 * 2 and all(s["setting"] == "B-iraware" for s in samples)
