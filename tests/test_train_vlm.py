"""VLM LoRA trainer: prompt masking, adapter placement, and a few real optimisation steps."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

from PIL import Image  # noqa: E402

from fusionrs_hf.train import vlm  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VLM_COUNTS = {"train": 12, "validation": 2, "test": 1}
"""12 train rows per source -> 4 IR-aware rows each -> 20 B-iraware samples (>= 2 steps x 8)."""
PROMPT = "Describe this infrared remote sensing image in detail."
ANSWER = "An infrared image of a forest, where the tree canopy is bright and textured."


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sample(answer: str = ANSWER, sid: str = "s0") -> dict:
    img = Image.new("RGB", (48, 40), (90, 90, 90))
    return {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
                         {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": [img], "sample_id": sid}


@pytest.fixture(scope="module")
def tiny():
    texts = [PROMPT, ANSWER, "An aerial view of a river landscape with 12 rectangular fields."] * 5
    return vlm.tiny_vlm(texts)


@pytest.fixture(scope="module")
def vlm_repo(tmp_path_factory):
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path_factory.mktemp("vlm") / "repo", counts=VLM_COUNTS, size=64, max_rows=8)


def test_labels_mask_every_prompt_token(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    batch = vlm.VLMCollator(processor)([_sample(), _sample("A forest.", "s1")])
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape and "pixel_values" in batch
    image_id = tok.convert_tokens_to_ids("<image>")
    for i, answer in enumerate((ANSWER, "A forest.")):
        kept = labels[i][labels[i] != vlm.IGNORE_INDEX]
        # exactly the answer and the end-of-turn marker are supervised
        assert tok.decode(kept).strip() == answer + "<|im_end|>"
        first = int((labels[i] != vlm.IGNORE_INDEX).nonzero()[0])
        prompt_text = tok.decode(ids[i, :first])
        assert PROMPT in prompt_text and prompt_text.endswith("<|im_start|>assistant\n")
        # every image token is in the masked prompt, and the prompt is masked entirely
        assert (ids[i] == image_id).sum() > 1
        assert (labels[i][ids[i] == image_id] == vlm.IGNORE_INDEX).all()
        assert (labels[i, :first] == vlm.IGNORE_INDEX).all()
        # padding is not supervised
        assert (labels[i][attn[i] == 0] == vlm.IGNORE_INDEX).all()
    assert (attn[1] == 0).any()  # the shorter answer was padded


def test_images_go_through_the_processor_once_and_both_prefix_paths_agree(tiny, monkeypatch):
    _, processor = tiny
    samples = [_sample(), _sample("A forest.", "s1"), _sample("Bright roofs, dark water.", "s2")]
    collator = vlm.VLMCollator(processor)
    calls = []
    encode = collator._encode
    monkeypatch.setattr(collator, "_encode", lambda texts, images: calls.append(len(texts)) or encode(texts, images))
    fast = collator(samples)
    assert calls == [3]  # one processor call for the whole batch: no per-sample prompt pass
    # the fallback (prompt run through the processor with its images) masks the same tokens
    monkeypatch.setattr(collator, "_prompt_len_from_text", lambda *a: None)
    slow = collator(samples)
    assert calls == [3, 3, 1, 1, 1]
    assert torch.equal(fast["labels"], slow["labels"]) and torch.equal(fast["input_ids"], slow["input_ids"])


def test_template_whose_prompt_is_not_a_prefix_is_rejected(tiny):
    _, processor = tiny
    collator = vlm.VLMCollator(processor)
    original = processor.chat_template
    processor.chat_template = original.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>bot\n{% endif %}")
    try:
        with pytest.raises(ValueError, match="s0.*prefix"):
            collator([_sample()])
    finally:
        processor.chat_template = original
    with pytest.raises(ValueError, match="last message"):
        collator([{"messages": _sample()["messages"][:1], "images": [], "sample_id": "x"}])


def test_lora_goes_on_the_language_model_only(tiny):
    model, _ = tiny
    names = vlm.lora_target_modules(model)
    assert names and all("language_model" in n for n in names)
    assert not any("vision_tower" in n or "projector" in n for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == set(vlm.LORA_PROJECTIONS)


def test_paper_defaults():
    cfg, overrides = vlm.resolve_config(vlm.VLMTrainConfig(data="x"))
    paper, _ = vlm.resolve_config(vlm.VLMTrainConfig(data="x", preset="paper"))
    settings = {k: getattr(cfg, k) for k in vlm.VLM_SETTINGS}
    assert overrides == [] and settings == {k: getattr(paper, k) for k in vlm.VLM_SETTINGS} == vlm.PAPER_SETTINGS
    assert (cfg.lora_targets, cfg.quantization, cfg.prompts, cfg.lora_task_type) == ("language-model", "none", "paper", None)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (32, 64, 0.05)
    assert (cfg.epochs, cfg.lr_scheduler_type, cfg.warmup_ratio) == (1, "cosine", 0.03)
    assert (cfg.per_device_batch_size, cfg.gradient_accumulation_steps, cfg.gradient_checkpointing) == (1, 8, True)
    args = vlm._training_args(cfg, max_steps=10)
    assert args.gradient_accumulation_steps == 8 and args.per_device_train_batch_size == 1
    assert getattr(args, "activation_checkpointing", None) or args.gradient_checkpointing
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "cosine"
    assert args.bf16 == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_stream_counts_setting_samples(vlm_repo):
    n_b = vlm.VLMStream(str(vlm_repo), setting="B-iraware").count()
    n_c = vlm.VLMStream(str(vlm_repo), setting="C-mixed").count()
    assert n_b == 5 * 4 and n_c == 2 * n_b
    first = next(iter(vlm.VLMStream(str(vlm_repo), setting="B-iraware")))
    assert first["messages"][-1]["role"] == "assistant" and isinstance(first["images"][0], Image.Image)


def test_few_steps_change_only_the_adapters(tmp_path):
    from fusionrs_hf.demo import make_sample_repo

    # the paper's layout: IR-aware validation rows to evaluate B-iraware on (rc4, the demo's default, has none)
    paper = make_sample_repo(tmp_path / "paper", counts=VLM_COUNTS, size=64, max_rows=8, layout="paper")
    texts = vlm._texts_for_tokenizer(str(paper), "iraware")
    model, processor = vlm.tiny_vlm(texts)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = vlm.VLMTrainConfig(data=str(paper), steps=2, out=str(tmp_path / "run"), eval_split="validation",
                             eval_limit=2)
    run = vlm.train_vlm(cfg, model=model, processor=processor)
    peft_model, m = run["model"], run["metrics"]
    assert m["steps"] == 2 and m["samples_seen"] == 16
    base = peft_model.base_model.model
    assert getattr(base, "is_activation_checkpointing", None) or base.is_gradient_checkpointing
    assert 0 < m["trainable_params"] < m["total_params"]
    changed_lora, seen = 0, set()
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad
            changed_lora += int(not torch.equal(p, torch.zeros_like(p)) and "lora_B" in name)
            continue
        assert not p.requires_grad, name
        orig = name.removeprefix("base_model.model.").replace(".base_layer", "")
        assert torch.equal(p.detach(), before[orig]), f"base weight {orig} changed"
        seen.add(orig)
    assert seen == set(before)  # every base weight was compared
    assert changed_lora > 0  # lora_B starts at zero: non-zero means the adapters trained
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    assert m["eval_samples"] == 2 and m["eval_answer_loss"] > 0


def test_command_line_prints_one_json_line(vlm_repo, tmp_path):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = _example("train_vlm").main(["--data", str(vlm_repo), "--config", "iraware", "--model", "tiny",
                                         "--steps", "1", "--grad-accum", "2", "--eval-split", "none",
                                         "--out", str(tmp_path / "cli")])
    assert rc == 0
    final = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert final["steps"] == 1 and final["train_loss"] > 0
    saved = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert saved["config"]["lora_r"] == 32 and saved["config"]["setting"] == "B-iraware"


# ------------------------------------------------------------------------ rc4: `iraware` has a train split only


@pytest.fixture(scope="module")
def train_only_repo(tmp_path_factory):
    from .train_only_iraware import make_train_only_iraware_repo

    # 12 train rows per source -> 20 B-iraware train samples; 2 validation rows per source, none IR-aware
    return make_train_only_iraware_repo(tmp_path_factory.mktemp("rc4") / "repo",
                                        counts={"train": 12, "validation": 2, "test": 1}, size=32, max_rows=8)


def _run_example(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _example("train_vlm").main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("setting", "eval_samples"), [("B-iraware", 0), ("C-mixed", 5 * 2)])
def test_iraware_without_validation_evaluates_on_default(train_only_repo, tmp_path, setting, eval_samples):
    from datasets import load_dataset

    assert set(load_dataset(str(train_only_repo), "iraware")) == {"train"}  # what stock datasets sees
    rc, out, err = _run_example(["--data", str(train_only_repo), "--setting", setting, "--model", "tiny",
                                 "--steps", "1", "--grad-accum", "2", "--out", str(tmp_path / "run")])
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("train_vlm")]
    fallback = (f"train_vlm: config 'iraware' has no 'validation' split in {train_only_repo} (rc4 releases "
                "IR-aware captions for train only); evaluating on 'default'/validation")
    none_there = (f"train_vlm: no B-iraware ir_caption eval sample in 'default'/validation of {train_only_repo} "
                  "(no row there has an IR-aware caption); no eval loss")
    assert notes == ([fallback, none_there] if eval_samples == 0 else [fallback])
    assert len(out.strip().splitlines()) == 1  # stdout is the one JSON line; the Trainer's logs go to stderr
    final = json.loads(out.strip().splitlines()[-1])
    assert final["steps"] == 1 and final["train_loss"] > 0  # trained on iraware/train
    logs = [json.loads(line) for line in err.splitlines() if line.startswith('{"step"')]
    assert logs and all("step" in r for r in logs)
    assert final["eval_config"] == "default" and final["eval_split"] == "validation"
    assert final["eval_samples"] == eval_samples  # C-mixed: the A (original caption) sample of each row
    assert ("eval_answer_loss" in final) == (eval_samples > 0)


def test_explicit_eval_config_without_the_split_exits_2(train_only_repo, tmp_path):
    rc, out, err = _run_example(["--data", str(train_only_repo), "--eval-config", "iraware", "--model", "tiny",
                                 "--steps", "1", "--out", str(tmp_path / "run")])
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [f"train_vlm: config 'iraware' has no 'validation' split in "
                                        f"{train_only_repo} (its splits: train; rc4 releases IR-aware captions "
                                        "for train only)"]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ presets, read back from what is built

RELEASE_PROMPT = ("Describe this infrared-style aerial image in one concise sentence. Report visible scene semantics, "
                  "grayscale intensity, contrast, edges, texture, or structure only. Do not infer temperature, heat, "
                  "material properties, emissivity, or RGB color.")


def test_rc4_release_preset_reads_back():
    cfg, overrides = vlm.resolve_config(vlm.VLMTrainConfig(data="x", preset="rc4-release"))
    assert overrides == []
    assert (cfg.quantization, cfg.prompts, cfg.seed, cfg.lr, cfg.epochs) == ("nf4", "release", 42, 2e-4, 1)
    model, _ = vlm.tiny_vlm([PROMPT, ANSWER] * 5)  # a fresh model: peft injects its layers in place
    lc = vlm.lora_config(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                         targets=cfg.lora_targets, task_type=cfg.lora_task_type)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, lc.bias) == (16, 32, 0.05, "none")
    assert getattr(lc.task_type, "value", lc.task_type) == "CAUSAL_LM"
    assert set(lc.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    peft_model = vlm.add_lora(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                              targets=cfg.lora_targets, task_type=cfg.lora_task_type)
    adapted = {n for n, m in peft_model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    assert any("language_model" in n for n in adapted)
    assert any("vision_tower" in n for n in adapted)  # the name list reaches the vision tower too, as in the release
    args = vlm._training_args(cfg, max_steps=10)
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "linear"
    assert getattr(args, "warmup_ratio", 0) == 0 and args.warmup_steps == 0
    assert (args.learning_rate, args.seed, args.data_seed) == (2e-4, 42, 42)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 8)
    q = vlm.quantization_config(torch.bfloat16)
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
        True, "nf4", True, torch.bfloat16)
    assert vlm.RELEASE_PROMPTS["ir_caption"] == RELEASE_PROMPT
    assert vlm.prompt_overrides(cfg) == {"B-iraware": RELEASE_PROMPT}
    # the pixel budget: train_qwen25vl_full.py --max-pixels 401408, no min_pixels
    assert (cfg.max_pixels, cfg.min_pixels) == (401408, None)
    assert vlm.processor_kwargs(cfg) == {"max_pixels": 401408}


RELEASED_PROCESSOR_SIZE = {"longest_edge": 401408, "shortest_edge": 3136}
"""``size`` of ``models/vlm/*/processor_config.json`` in the authors' repository (image and video processor)."""


def _pixel_budget(size) -> dict:
    """``size`` of a Qwen2-VL image processor as {longest_edge, shortest_edge} (older transformers name the
    keys max_pixels / min_pixels)."""
    get = (lambda k: size.get(k)) if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return {"longest_edge": get("longest_edge") or get("max_pixels"),
            "shortest_edge": get("shortest_edge") or get("min_pixels")}


def test_rc4_release_processor_kwargs_give_the_released_processor_size(tmp_path):
    from transformers import AutoProcessor

    # a Qwen2-VL processor folder with the library's defaults, built offline (no download)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}))
    release, _ = vlm.resolve_config(vlm.VLMTrainConfig(data="x", preset="rc4-release"))
    paper, _ = vlm.resolve_config(vlm.VLMTrainConfig(data="x"))
    assert vlm.processor_kwargs(paper) == {}
    got = AutoProcessor.from_pretrained(str(tmp_path), local_files_only=True, **vlm.processor_kwargs(release))
    assert _pixel_budget(got.size) == RELEASED_PROCESSOR_SIZE
    default = AutoProcessor.from_pretrained(str(tmp_path), local_files_only=True)
    assert _pixel_budget(default.size)["longest_edge"] > 401408  # without it, the library's larger budget
    big = Image.new("RGB", (1024, 1024), (90, 90, 90))  # 1,048,576 px: cut to <= 401,408 under the release
    thw = got(images=[big], return_tensors="pt")["image_grid_thw"][0].tolist()
    assert thw[1] * thw[2] * 14 * 14 <= 401408 < int(default(images=[big], return_tensors="pt")["image_grid_thw"][0]
                                                      .prod()) * 14 * 14


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_rc4_release_loads_the_processor_with_the_released_pixel_budget(vlm_repo, tmp_path, monkeypatch, quantization):
    texts = vlm._texts_for_tokenizer(str(vlm_repo), "iraware")
    calls = []

    def fake_load(model_id, **kw):  # stands in for from_pretrained: records what it was given
        calls.append((model_id, {k: v for k, v in kw.items() if k != "dtype"}))
        return vlm.tiny_vlm(texts)

    monkeypatch.setattr(vlm.loop, "load_vlm", fake_load)  # where train_vlm looks them up
    monkeypatch.setattr(vlm.loop, "load_quantized", fake_load)
    monkeypatch.setattr(vlm.loop, "quantization_missing", lambda: [])
    folder = tmp_path / "qwen"  # a local folder: no Hub is asked for it
    folder.mkdir()
    cfg = vlm.VLMTrainConfig(data=str(vlm_repo), preset="rc4-release", model=str(folder), steps=1,
                             gradient_accumulation_steps=1, quantization=quantization, eval_split=None,
                             out=str(tmp_path / "run"))
    run = vlm.train_vlm(cfg)
    assert calls == [(str(folder), {"max_pixels": 401408})]
    assert run["metrics"]["processor_kwargs"] == {"max_pixels": 401408}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["settings"]["max_pixels"] == 401408 and saved["settings"]["min_pixels"] is None
    with pytest.raises(vlm.PresetError, match=re.escape("sets max_pixels = 401408")):
        vlm.resolve_config(vlm.VLMTrainConfig(data="x", preset="rc4-release", max_pixels=1003520))


def test_paper_preset_adapts_the_language_model_only():
    cfg, _ = vlm.resolve_config(vlm.VLMTrainConfig(data="x", preset="paper"))
    model, _ = vlm.tiny_vlm([PROMPT, ANSWER] * 5)
    lc = vlm.lora_config(model, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, targets=cfg.lora_targets)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (32, 64, 0.05)
    assert sorted(lc.target_modules) == sorted(vlm.lora_target_modules(model))
    args = vlm._training_args(cfg, max_steps=10)
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "cosine"
    assert getattr(args, "warmup_ratio", None) == 0.03 or args.warmup_steps == 0.03
    assert vlm.prompt_overrides(cfg) == {}


def test_vlm_bad_preset_combinations():
    bad = [(dict(preset="rc4-release", lora_r=32), "sets lora_r = 16; lora_r = 32 contradicts it"),
           (dict(preset="rc4-release", lr_scheduler_type="cosine"), "sets lr_scheduler_type = 'linear'"),
           (dict(preset="paper", lora_targets="release"), "sets lora_targets = 'language-model'"),
           (dict(preset="rc4-release", task="scene_qa"), "task 'scene_qa' has none"),
           (dict(preset="qlora"), "unknown preset 'qlora'")]
    for kw, message in bad:
        with pytest.raises(vlm.PresetError, match=re.escape(message)):
            vlm.resolve_config(vlm.VLMTrainConfig(data="x", **kw))
    cfg, overrides = vlm.resolve_config(vlm.VLMTrainConfig(data="x", preset="rc4-release", quantization="none",
                                                           gradient_accumulation_steps=2))
    assert cfg.quantization == "none" and overrides == ["gradient_accumulation_steps 2 (preset 8)",
                                                        "quantization 'none' (preset 'nf4')"]


def test_qlora_without_bitsandbytes_or_gpu_is_one_clear_error(vlm_repo, tmp_path):
    missing = vlm.quantization_missing()
    if not missing:
        pytest.skip("bitsandbytes and a GPU are both here")
    cfg = vlm.VLMTrainConfig(data=str(vlm_repo), preset="rc4-release", model="Qwen/Qwen2.5-VL-3B-Instruct",
                             out=str(tmp_path / "run"))
    with pytest.raises(vlm.PresetError, match=re.escape(f"missing here: {', '.join(missing)}")) as e:
        vlm.train_vlm(cfg)
    assert "--quantization none" in str(e.value) and "\n" not in str(e.value)


def test_rc4_release_run_on_tiny_uses_the_released_prompt_and_adapter_config(vlm_repo, tmp_path):
    rc, out, err = _run_example(["--data", str(vlm_repo), "--preset", "rc4-release", "--model", "tiny",
                                 "--steps", "1", "--grad-accum", "2", "--eval-split", "none",
                                 "--out", str(tmp_path / "run")])
    assert rc == 0, err
    notes = [line for line in err.splitlines() if line.startswith("train_vlm")]
    assert notes == ["train_vlm: --preset rc4-release with gradient_accumulation_steps 2 (preset 8)",
                     "train_vlm: 4-bit NF4 base skipped: the model is built in memory, not loaded from a checkpoint "
                     "(the release quantizes its pretrained base)"]
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["task_type"]) == (16, 32, "CAUSAL_LM")
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["settings"]["seed"] == 42 and saved["metrics"]["quantized"] is False
    sample = next(iter(vlm.VLMStream(str(vlm_repo), prompts=vlm.prompt_overrides(vlm.resolve_config(
        vlm.VLMTrainConfig(data=str(vlm_repo), preset="rc4-release"))[0]))))
    assert sample["messages"][0]["content"][1]["text"] == RELEASE_PROMPT
    assert sample["messages"][1]["content"][0]["text"]  # the IR-aware caption answer is kept
