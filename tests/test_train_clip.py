"""Tri-modal CLIP trainer: loss, recipes, model adapters, and a short real training run on the sample."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from fusionrs_hf.metrics import DIRECTIONS, KS  # noqa: E402
from fusionrs_hf.train import clip  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLIP_COUNTS = {"train": 40, "validation": 8, "test": 4}
"""200 train rows, a 40-image validation gallery (chance R@1 = 2.5%)."""
CLIP_STEPS = 150


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def clip_repo(tmp_path_factory):
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path_factory.mktemp("clip") / "repo", counts=CLIP_COUNTS, size=64, max_rows=16)


@pytest.fixture(scope="module")
def clip_run(clip_repo, tmp_path_factory):
    """One short run through the example's command line: (stdout JSON, out folder)."""
    out = tmp_path_factory.mktemp("clip_run")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = _example("train_clip").main([
            "--data", str(clip_repo), "--config", "default", "--model", "tiny", "--steps", str(CLIP_STEPS),
            "--batch-size", "32", "--log-every", "10", "--out", str(out), "--device", "cpu",
        ])
    assert rc == 0
    lines = buf.getvalue().strip().splitlines()
    return json.loads(lines[-1]), out


# ------------------------------------------------------------------------ loss and recipes


def test_info_nce_low_for_aligned_high_for_shuffled():
    torch.manual_seed(0)
    a = torch.randn(16, 8)
    scale = torch.tensor(math.log(100.0))
    aligned = clip.info_nce(a, a.clone(), scale)
    shuffled = clip.info_nce(a, a[torch.randperm(16)], scale)
    assert aligned < 0.1 < shuffled
    # symmetric: swapping the modalities gives the same value
    b = torch.randn(16, 8)
    assert torch.allclose(clip.info_nce(a, b, scale), clip.info_nce(b, a, scale))


def test_info_nce_identical_captions_are_not_negatives():
    torch.manual_seed(0)
    a = torch.randn(4, 8)
    scale = torch.tensor(math.log(100.0))
    plain = clip.info_nce(a, a.clone(), scale)
    assert torch.allclose(clip.info_nce(a, a.clone(), scale, torch.eye(4, dtype=torch.bool)), plain)
    same = clip.same_text(["x", "y", "x", None])
    assert same.tolist() == [[True, False, True, False], [False, True, False, False],
                             [True, False, True, False], [False, False, False, True]]
    # rows 0 and 2 carry the same caption, so their text embeddings are equal. Plain InfoNCE
    # pulls the two copies in different directions (each towards its own image, away from the
    # other's); with the pair declared positive they are interchangeable and get the same gradient.
    grads = []
    for pos in (None, same):
        t = a[[0, 1, 0, 3]].clone().requires_grad_(True)
        clip.info_nce(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), t, scale, pos).backward()
        grads.append(t.grad)
    assert not torch.allclose(grads[0][0], grads[0][2])
    assert torch.allclose(grads[1][0], grads[1][2], atol=1e-6)


def test_trimodal_loss_sums_the_recipe_terms_with_one_temperature():
    torch.manual_seed(0)
    emb = {m: torch.randn(6, 8) for m in ("rgb", "ir", "caption")}
    scale = torch.tensor(2.0, requires_grad=True)
    recipe = clip.get_recipe("580K-only")
    total, parts = clip.trimodal_loss(emb, scale, recipe.terms)
    assert set(parts) == {"rgb-caption", "ir-caption", "rgb-ir"}
    expected = sum(clip.info_nce(emb[a], emb[b], scale) for a, b in recipe.terms)
    assert torch.allclose(total, expected)
    total.backward()
    assert scale.grad is not None and scale.grad != 0


def test_trimodal_loss_uses_only_rows_with_an_ir_caption():
    torch.manual_seed(0)
    emb = {m: torch.randn(6, 8) for m in ("rgb", "ir", "caption")}
    have = torch.tensor([0, 2, 5])
    emb["ir_caption"] = torch.randn(3, 8)
    scale = torch.tensor(2.0)
    total, parts = clip.trimodal_loss(emb, scale, clip.get_recipe("B-iraware").terms, {"ir_caption": have})
    assert torch.allclose(total, clip.info_nce(emb["ir"][have], emb["ir_caption"], scale))
    _, parts = clip.trimodal_loss(emb, scale, clip.get_recipe("C").terms, {"ir_caption": have})
    assert set(parts) == {"ir-caption", "ir-ir_caption", "rgb-caption", "rgb-ir"}
    with pytest.raises(ValueError, match="no loss term"):
        clip.trimodal_loss({"ir": emb["ir"][:1], "caption": emb["caption"][:1]}, scale, [("ir", "caption")])


def test_recipes_match_the_paper():
    assert clip.get_recipe("580K-only").terms == (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir"))
    assert clip.get_recipe("A").terms == (("ir", "caption"),)
    assert clip.get_recipe("b-iraware").terms == (("ir", "ir_caption"),)
    assert set(clip.get_recipe("C-mixed").terms) == {("ir", "caption"), ("ir", "ir_caption"), ("rgb", "caption"),
                                                     ("rgb", "ir")}
    with pytest.raises(ValueError, match="unknown recipe"):
        clip.get_recipe("D")


# ------------------------------------------------------------------------ models


def test_tiny_is_a_real_clip_model_with_eos_pooling():
    from transformers import CLIPModel

    texts = ["an aerial view of a forest", "a river landscape with fields"] * 10
    m = clip.tiny_clip(texts, image_size=32, patch_size=8)
    assert isinstance(m.model, CLIPModel)
    assert m.model.vision_model.encoder.layers[0].self_attn is not None
    eos = m.tokenizer.eos_token_id
    assert eos != 2 and m.model.config.text_config.eos_token_id == eos
    ids = m.tokenizer(["a forest"])["input_ids"][0]
    assert ids[0] == m.tokenizer.bos_token_id and ids[-1] == eos
    # padding after EOS must not change the text embedding (pooling is at the EOS token)
    with torch.no_grad():
        short = m.encode_text(["a forest"])
        padded = m.encode_text(["a forest", "a river landscape with fields and a forest"])[:1]
    assert torch.allclose(short, padded, atol=1e-5)
    # one image encoder for both modalities
    x = torch.randn(2, 3, 32, 32)
    assert m.encode_image(x).shape == (2, m.model.config.projection_dim)


def test_open_clip_missing_gives_a_clear_error():
    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed here")
    with pytest.raises(ImportError, match="open_clip"):
        clip.build_model("ViT-B-32")


def test_open_clip_adapter():
    open_clip = pytest.importorskip("open_clip")
    m = clip.build_model("ViT-B-32")
    assert isinstance(m, clip.OpenClip) and m.image_size == 224
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        img = m.encode_image(x)
        txt = m.encode_text(["an infrared image of a river", "a forest"])
    assert img.shape == txt.shape
    assert m.logit_scale is m.model.logit_scale
    assert open_clip is not None


# ------------------------------------------------------------------------ training run


def test_short_run_learns_rgb_ir_far_above_chance(clip_run):
    final, out = clip_run
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < 0.75 * losses[0], losses
    assert final["chance_r1"] == pytest.approx(100 / (5 * CLIP_COUNTS["validation"]))
    # the reported figure: RGB->IR R@1 on the 40-image validation gallery vs 2.5% chance
    # (measured 20-27.5% over runs; R@5 55-65% vs 12.5% chance)
    chance = final["chance_r1"]
    assert final["rgb2ir_r1"] >= 4 * chance, final
    assert final["rgb2ir_r5"] >= 3 * 5 * chance, final
    assert final["ir2rgb_r5"] >= 2 * 5 * chance, final


def test_final_line_has_every_direction_and_the_means(clip_run):
    final, out = clip_run
    for d in DIRECTIONS:
        for k in KS:
            assert 0 <= final[f"{d}_r{k}"] <= 100
    paper = [final[f"{d}_r{k}"] for d in ("ir2text", "text2ir", "rgb2ir", "ir2rgb") for k in KS]
    assert final["mean_r"] == pytest.approx(sum(paper) / 12, abs=1e-3)
    assert "mean_r_all6" in final
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["recipe"] == "580K-only" and saved["steps"] == CLIP_STEPS and saved["lr"] == 2e-3


def test_checkpoint_reloads_as_a_transformers_clip(clip_run, clip_repo):
    _, out = clip_run
    ckpt = out / "checkpoint"
    assert (ckpt / "config.json").is_file() and (ckpt / "fusionrs_clip.json").is_file()
    reloaded = clip.build_model(str(ckpt))
    assert isinstance(reloaded, clip.HFClip) and reloaded.image_size == 64
    loader = clip.make_loader(str(clip_repo), "default", "test", batch_size=20, image_size=64,
                              mean=reloaded.mean, std=reloaded.std)
    m = clip.evaluate(reloaded, loader)
    assert m["n_images"] == 20 and "mean_r" in m


def test_eval_on_ir_aware_captions_keeps_only_rows_that_have_one(clip_run, clip_repo):
    _, out = clip_run
    model = clip.build_model(str(out / "checkpoint"))
    loader = clip.make_loader(str(clip_repo), "default", "validation", batch_size=16, image_size=64,
                              mean=model.mean, std=model.std)
    e = clip.embed(model, loader, text_field="ir_caption")
    # validation IR-aware rows: RS5M and NWPU only, every other row (see fusionrs_hf.demo)
    assert len(e["sample_ids"]) == 2 * (CLIP_COUNTS["validation"] // 2)
    assert all(s.startswith(("rs5m", "nwpu")) for s in e["sample_ids"])


def test_missing_eval_split_fails_before_training(tmp_path):
    from fusionrs_hf.demo import make_sample_repo

    repo = make_sample_repo(tmp_path / "repo", counts={"train": 4}, size=32, max_rows=8)  # no validation shards
    model = clip.tiny_clip(["a small caption", "another caption"], image_size=32, seed=0)
    cfg = clip.ClipTrainConfig(data=str(repo), config="default", steps=1000, batch_size=4, image_size=32,
                               out=str(tmp_path / "run"), device="cpu")
    with pytest.raises(FileNotFoundError, match="validation"):
        clip.train_clip(cfg, model=model, log_fn=lambda rec: None)
    assert not (tmp_path / "run").exists()  # failed while planning: no step ran, nothing was written


# ------------------------------------------------------------------------ rc4: `iraware` has a train split only


@pytest.fixture(scope="module")
def train_only_repo(tmp_path_factory):
    from .train_only_iraware import make_train_only_iraware_repo

    # 12 train rows per source -> 4 IR-aware each: 20 iraware/train rows; 20 default/validation rows
    return make_train_only_iraware_repo(tmp_path_factory.mktemp("rc4") / "repo",
                                        counts={"train": 12, "validation": 4, "test": 1}, size=32, max_rows=8)


def _run_example(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _example("train_clip").main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("recipe", ["B-iraware", "C-mixed"])
def test_iraware_recipe_without_validation_evaluates_on_default(train_only_repo, tmp_path, recipe):
    from datasets import load_dataset

    assert set(load_dataset(str(train_only_repo), "iraware")) == {"train"}  # what stock datasets sees
    rc, out, err = _run_example([
        "--data", str(train_only_repo), "--recipe", recipe, "--model", "tiny", "--image-size", "32", "--steps", "3",
        "--batch-size", "8", "--log-every", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("train_clip")]
    assert notes == [f"train_clip: config 'iraware' has no 'validation' split in {train_only_repo} (rc4 releases "
                     "IR-aware captions for train only); evaluating on 'default'/validation"]
    final = json.loads(out.strip().splitlines()[-1])
    assert final["eval_config"] == "default" and final["eval_split"] == "validation"
    assert final["n_images"] == 5 * 4  # the default/validation gallery
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["data_config"] == "iraware" and saved["eval_config"] == "default" and saved["steps"] == 3


def test_explicit_eval_config_without_the_split_exits_2(train_only_repo, tmp_path):
    rc, out, err = _run_example([
        "--data", str(train_only_repo), "--recipe", "B", "--eval-config", "iraware", "--eval-split", "test",
        "--model", "tiny", "--image-size", "32", "--steps", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [f"train_clip: config 'iraware' has no 'test' split in {train_only_repo} "
                                        "(its splits: train; rc4 releases IR-aware captions for train only)"]
    assert not (tmp_path / "run").exists()  # nothing was built or trained


def test_ir_caption_eval_without_ir_captions_fails_before_training(train_only_repo, tmp_path):
    from fusionrs_hf.splits import MissingSplitError

    cfg = clip.ClipTrainConfig(data=str(train_only_repo), recipe="B-iraware", eval_text="ir_caption", steps=1,
                               batch_size=8, image_size=32, out=str(tmp_path / "run"), device="cpu")
    with pytest.raises(MissingSplitError, match=r"no row of 'default'/validation in .* has one "
                                                r"\(config 'iraware' has: train\)"):
        clip.train_clip(cfg, model=clip.tiny_clip(["a caption", "another"], image_size=32), log_fn=lambda r: None)
    assert not (tmp_path / "run").exists()
