"""Tri-modal CLIP trainer: loss, recipes, model adapters, and a short real training run on the sample."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import re
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
    # the authors' ablation settings
    assert clip.get_recipe("rgb_text").terms == (("rgb", "caption"),)
    assert clip.get_recipe("ir_text").terms == (("ir", "caption"),)
    assert clip.get_recipe("dual_text").terms == (("rgb", "caption"), ("ir", "caption"))
    assert clip.get_recipe("trimodal").terms == clip.get_recipe("580K-only").terms
    assert [n for n, r in clip.RECIPES.items() if r.release] == list(clip.RELEASE_RECIPES)


def test_loss_reduction_mean_is_the_releases_weighted_average():
    torch.manual_seed(0)
    emb = {m: torch.randn(6, 8) for m in ("rgb", "ir", "caption")}
    scale = torch.tensor(5.0)  # above log(100): clamped unless clamp=False
    terms = clip.get_recipe("trimodal").terms
    t = {pair: clip.info_nce(emb[pair[0]], emb[pair[1]], scale, clamp=False) for pair in terms}
    mean, _ = clip.trimodal_loss(emb, scale, terms, reduction="mean", clamp=False)
    assert torch.allclose(mean, sum(t.values()) / 3)
    w = 0.5
    weighted, _ = clip.trimodal_loss(emb, scale, terms, reduction="mean", weights={("rgb", "ir"): w}, clamp=False)
    rgb_text, ir_text, rgb_ir = t.values()
    assert torch.allclose(weighted, (rgb_text + ir_text + w * rgb_ir) / (2 + w))
    summed, _ = clip.trimodal_loss(emb, scale, terms, reduction="sum", clamp=False)
    assert torch.allclose(summed, rgb_text + ir_text + rgb_ir)
    clamped, _ = clip.trimodal_loss(emb, scale, terms, reduction="sum")
    assert not torch.allclose(clamped, summed)  # ours caps the temperature at 100
    with pytest.raises(ValueError, match="loss reduction"):
        clip.trimodal_loss(emb, scale, terms, reduction="max")


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
    # what the run did, beside what it was asked: --steps (not the config's 1 epoch) bounded the passes
    ran = saved["ran"]
    assert ran["device"] == "cpu" and ran["precision"] == "fp32" and ran["loss_scaling"] is False
    assert ran["epochs"] == pytest.approx(CLIP_STEPS / ran["batches_per_epoch"], abs=1e-4) and ran["epochs"] > 1


def test_checkpoint_reloads_as_a_transformers_clip(clip_run, clip_repo):
    _, out = clip_run
    ckpt = out / "checkpoint"
    assert (ckpt / "config.json").is_file() and (ckpt / "fusionrs_clip.json").is_file()
    reloaded = clip.build_model(str(ckpt))
    assert isinstance(reloaded, clip.HFClip) and reloaded.image_size == 64
    from fusionrs_hf.eval import evaluate_model

    res = evaluate_model(reloaded, str(clip_repo), config="default", split="test")
    assert res.protocol == "all-rows"  # the demo sample carries no release flags
    assert res.metrics["n_images"] == 20 and "mean_r" in res.metrics


def test_eval_on_ir_aware_captions_keeps_only_rows_that_have_one(clip_run, tmp_path):
    _, out = clip_run
    from fusionrs_hf.demo import make_sample_repo
    from fusionrs_hf.eval import embed_model

    # IR-aware validation rows exist only in the paper's layout (rc4, the demo's default, has none): the same
    # rows as clip_repo, grouped as in the paper
    paper = make_sample_repo(tmp_path / "paper", counts=CLIP_COUNTS, size=64, max_rows=16, layout="paper")
    model = clip.build_model(str(out / "checkpoint"))
    e = embed_model(model, str(paper), "default", "validation", text_field="ir_caption", batch_size=16)
    # validation IR-aware rows: RS5M and NWPU only, every other row (see fusionrs_hf.demo)
    assert len(e.sample_id) == 2 * (CLIP_COUNTS["validation"] // 2)
    assert all(s.startswith(("rs5m", "nwpu")) for s in e.sample_id)


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


# ------------------------------------------------------------------------ presets, read back from what is built


def _training(preset, model, total=1000, **kw):
    cfg, overrides = clip.resolve_config(clip.ClipTrainConfig(data="x", preset=preset, **kw))
    lr = cfg.lr if cfg.lr is not None else clip.default_lr("tiny")
    return cfg, overrides, clip.Training(cfg, model, total, lr=lr, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def tiny32():
    return clip.tiny_clip(["an aerial view of a forest", "a river landscape with fields"] * 10, image_size=32)


def _batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return {"rgb": torch.randn(n, 3, size, size, generator=g), "ir": torch.randn(n, 3, size, size, generator=g),
            "caption": ["an aerial view of a forest", "a river landscape", "fields", "a forest"][:n],
            "ir_caption": [None] * n}


def test_rc4_release_preset_sets_the_released_run(tiny32):
    cfg, overrides, tr = _training("rc4-release", tiny32, total=13593)
    assert overrides == []
    assert (cfg.recipe, cfg.loss_reduction, cfg.rgb_ir_weight) == ("trimodal", "mean", 1.0)
    assert (cfg.batch_size, cfg.epochs, cfg.seed, cfg.select, cfg.precision) == (128, 3, 42, "release", "fp16")
    assert cfg.ir_view == "translated" and cfg.dedupe_captions is False
    # the release's loader order and pixels, and its validation batch
    assert (cfg.shuffle, cfg.preprocess, cfg.val_batch_size) == ("global", "processor", 128)
    # optimizer: AdamW defaults, decay 0.1 on every parameter, lr 5e-6
    opt = tr.optimizer
    assert type(opt) is torch.optim.AdamW and len(opt.param_groups) == 1
    g = opt.param_groups[0]
    assert len(g["params"]) == len(list(tiny32.parameters()))
    assert (g["initial_lr"], g["weight_decay"], g["betas"], g["eps"]) == (5e-6, 0.1, (0.9, 0.999), 1e-8)
    # schedule: the release's lr_lambda, 500 warmup steps then cosine to zero at the last step
    f = tr.scheduler.lr_lambdas[0]
    assert f(0) == 1e-8 and f(250) == 0.5 and f(500) == 1.0
    assert f(500 + (13593 - 500) // 2) == pytest.approx(0.5, abs=1e-3) and f(13593) == pytest.approx(0.0, abs=1e-12)
    # no clipping, unclamped temperature, fp16 + scaler only where a GPU is
    assert tr.grad_clip is None and tr.clamp_temperature is False
    assert tr.scaler.is_enabled() == torch.cuda.is_available() and tr.amp_dtype is None  # CPU here: fp32
    emb = {m: torch.randn(6, tiny32.model.config.projection_dim) for m in ("rgb", "ir", "caption")}
    with torch.no_grad():
        tiny32.logit_scale.fill_(5.0)
        loss, _ = tr.loss(emb)
        want = sum(clip.info_nce(emb[a], emb[b], tiny32.logit_scale, clamp=False)
                   for a, b in clip.get_recipe("trimodal").terms) / 3
    assert torch.allclose(loss, want)


def test_ours_and_paper_presets(tiny32):
    cfg, _, tr = _training(None, tiny32)
    assert {k: getattr(cfg, k) for k in clip.SETTINGS} == clip.OURS
    decay, no_decay = tr.optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in no_decay["params"])
    assert (decay["betas"], decay["eps"], decay["initial_lr"]) == ((0.9, 0.98), 1e-6, 2e-3)
    f = tr.scheduler.lr_lambdas[0]
    assert f(0) == pytest.approx(1 / 30) and f(29) == 1.0  # 3 % of 1000 steps, (step + 1) / 30
    assert tr.grad_clip == 1.0 and tr.clamp_temperature is True
    paper, _, tp = _training("paper", tiny32)
    assert (paper.recipe, paper.loss_reduction, paper.rgb_ir_weight) == ("trimodal", "sum", 1.0)
    assert {k: getattr(paper, k) for k in clip.SETTINGS if k not in ("recipe",)} == {
        k: v for k, v in clip.OURS.items() if k != "recipe"}  # the paper states nothing else
    emb = {m: torch.randn(5, tiny32.model.config.projection_dim) for m in ("rgb", "ir", "caption")}
    with torch.no_grad():
        tiny32.logit_scale.fill_(2.0)
        loss, parts = tp.loss(emb)
    assert loss.item() == pytest.approx(sum(parts.values()), rel=1e-5)


def test_a_training_step_clips_and_clamps_only_where_the_settings_say(tiny32, monkeypatch):
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, norm: calls.append(norm) or real(params, norm))
    for preset, clipped, clamped in ((None, [1.0], True), ("rc4-release", [], False)):
        calls.clear()
        _, _, tr = _training(preset, tiny32, total=10)
        with torch.no_grad():
            tiny32.logit_scale.fill_(5.0)
        tr.step(_batch())
        assert calls == clipped
        scale = float(tiny32.logit_scale.detach())
        assert (scale == pytest.approx(math.log(100.0))) == clamped, (preset, scale)


def test_ir_view_switch():
    torch.manual_seed(0)
    rgb, ir = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mean, std = clip.CLIP_MEAN, clip.CLIP_STD
    assert clip.ir_view_transform(rgb, ir, "translated", mean, std) is ir
    assert clip.ir_view_transform(rgb, ir, "rgb_duplicate", mean, std) is rgb
    gray = clip.ir_view_transform(rgb, ir, "grayscale", mean, std)
    pix = gray * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(pix[:, 0], pix[:, 1], atol=1e-6) and torch.allclose(pix[:, 1], pix[:, 2], atol=1e-6)
    src = rgb * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    luma = 0.299 * src[:, 0] + 0.587 * src[:, 1] + 0.114 * src[:, 2]
    assert torch.allclose(pix[:, 0], luma, atol=1e-6)


def test_preset_overrides_and_bad_combinations():
    cfg, overrides = clip.resolve_config(clip.ClipTrainConfig(data="x", preset="rc4-release", batch_size=8,
                                                              recipe="ir_text", ir_view="grayscale"))
    assert (cfg.batch_size, cfg.recipe, cfg.ir_view, cfg.lr) == (8, "ir_text", "grayscale", 5e-6)
    assert overrides == ["recipe 'ir_text' (preset 'trimodal')", "batch_size 8 (preset 128)",
                         "ir_view 'grayscale' (preset 'translated')"]
    same, none = clip.resolve_config(clip.ClipTrainConfig(data="x", preset="rc4-release", lr=5e-6))
    assert none == [] and same.lr == 5e-6  # repeating a preset value is fine
    bad = [
        (dict(preset="rc4-release", lr=1e-3), "sets lr = 5e-06; lr = 0.001 contradicts it"),
        (dict(preset="rc4-release", loss_reduction="sum"), "sets loss_reduction = 'mean'"),
        (dict(preset="paper", loss_reduction="mean"), "sets loss_reduction = 'sum'"),
        (dict(preset="rc4-release", grad_clip=1.0), "sets grad_clip = 0.0"),
        (dict(preset="rc4-release", recipe="B-iraware"), "recipe 'B-iraware' is ours"),
        (dict(preset="fast"), "unknown preset 'fast'"),
        (dict(warmup_ratio=0.1, warmup_steps=10), "not both"),
        (dict(ir_view="thermal"), "ir_view must be one of"),
    ]
    for kw, message in bad:
        with pytest.raises(clip.PresetError, match=re.escape(message)) as e:
            clip.resolve_config(clip.ClipTrainConfig(data="x", **kw))
        assert "\n" not in str(e.value)


def test_bad_preset_option_is_one_line_exit_2(tmp_path):
    rc, out, err = _run_example(["--data", str(tmp_path), "--preset", "rc4-release", "--lr", "0.001",
                                 "--out", str(tmp_path / "run")])
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == ["train_clip: --preset rc4-release sets lr = 5e-06; lr = 0.001 contradicts it "
                                        "(drop --preset to choose every setting yourself)"]
    assert not (tmp_path / "run").exists()


def test_rc4_eval_protocol_on_rows_without_flags_fails_before_training(clip_repo, tmp_path):
    rc, out, err = _run_example(["--data", str(clip_repo), "--config", "default", "--eval-protocol", "rc4",
                                 "--model", "tiny", "--image-size", "32", "--steps", "1", "--out",
                                 str(tmp_path / "run"), "--device", "cpu"])
    assert rc == 2 and out == "" and "is_eval_representative" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
