"""Issue 15: the trainers' loss and label masking against references written here.

- The tri-modal CLIP loss equals a symmetric InfoNCE written out with plain Python floats (log-sum-exp
  over cosine similarities times exp(logit_scale), capped at 100), summed over the recipe's pairs.
- VLM labels: every prompt token (image tokens included) and every padding token is -100, the literal
  value Hugging Face's cross-entropy ignores, and the rest equals the input ids.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from fusionrs_hf.train import clip  # noqa: E402


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _info_nce(a: list[list[float]], b: list[list[float]], logit_scale: float, clamp: bool = True) -> float:
    """(CE(rows of a vs b) + CE(rows of b vs a)) / 2, target = the same row, by the definition."""
    scale = math.exp(min(logit_scale, math.log(100)) if clamp else logit_scale)
    n = len(a)
    logits = [[scale * _cos(a[i], b[j]) for j in range(n)] for i in range(n)]

    def ce(m):
        return sum(math.log(sum(math.exp(v) for v in row)) - row[i] for i, row in enumerate(m)) / n

    return (ce(logits) + ce([list(col) for col in zip(*logits, strict=True)])) / 2


def _emb(seed: int, n: int = 6, d: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, d, generator=g, dtype=torch.float64) for m in ("rgb", "ir", "caption", "ir_caption")}


@pytest.mark.parametrize("scale", [math.log(1 / 0.07), 2.0, math.log(500.0)])
def test_info_nce_is_the_textbook_symmetric_loss(scale):
    e = _emb(0)
    got = float(clip.info_nce(e["ir"], e["caption"], torch.tensor(scale, dtype=torch.float64)))
    assert got == pytest.approx(_info_nce(e["ir"].tolist(), e["caption"].tolist(), scale), rel=1e-9)
    # unclamped (the release's setting): exp(6.2) = 493 is used as it is
    got = float(clip.info_nce(e["ir"], e["caption"], torch.tensor(scale, dtype=torch.float64), clamp=False))
    assert got == pytest.approx(_info_nce(e["ir"].tolist(), e["caption"].tolist(), scale, clamp=False), rel=1e-9)


def test_trimodal_loss_is_the_sum_of_the_three_pairs():
    e = _emb(1)
    s = 2.5
    total, parts = clip.trimodal_loss(e, torch.tensor(s, dtype=torch.float64), clip.get_recipe("580K-only").terms)
    want = {f"{a}-{b}": _info_nce(e[a].tolist(), e[b].tolist(), s)
            for a, b in (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir"))}
    assert parts == pytest.approx(want, rel=1e-9)
    assert float(total) == pytest.approx(sum(want.values()), rel=1e-9)
    # mean with a weight on RGB-IR: sum(w * L) / sum(w)
    total, _ = clip.trimodal_loss(e, torch.tensor(s, dtype=torch.float64), clip.get_recipe("580K-only").terms,
                                  reduction="mean", weights={("rgb", "ir"): 0.5})
    assert float(total) == pytest.approx((want["rgb-caption"] + want["ir-caption"] + 0.5 * want["rgb-ir"]) / 2.5,
                                         rel=1e-9)


def test_trimodal_loss_on_rows_with_an_ir_caption_only():
    e = _emb(2)
    have = [1, 2, 4]  # batch rows that carry an IR-aware caption
    ir_cap = e["ir_caption"][: len(have)]
    emb = {**e, "ir_caption": ir_cap}
    s = 3.0
    total, parts = clip.trimodal_loss(emb, torch.tensor(s, dtype=torch.float64), clip.get_recipe("C-mixed").terms,
                                      {"ir_caption": torch.tensor(have)})
    ir_rows = [e["ir"][i].tolist() for i in have]
    want = {"ir-caption": _info_nce(e["ir"].tolist(), e["caption"].tolist(), s),
            "ir-ir_caption": _info_nce(ir_rows, ir_cap.tolist(), s),
            "rgb-caption": _info_nce(e["rgb"].tolist(), e["caption"].tolist(), s),
            "rgb-ir": _info_nce(e["rgb"].tolist(), e["ir"].tolist(), s)}
    assert parts == pytest.approx(want, rel=1e-9)
    assert float(total) == pytest.approx(sum(want.values()), rel=1e-9)


def test_identical_captions_share_the_target():
    """Rows 0 and 2 have the same caption: each image's target is spread over both (1/2 each)."""
    e = _emb(3, n=4)
    s = 1.5
    pos = clip.same_text(["a", "b", "a", "c"])
    got = float(clip.info_nce(e["rgb"], e["caption"], torch.tensor(s, dtype=torch.float64), pos))
    scale = math.exp(s)
    a, b = e["rgb"].tolist(), e["caption"].tolist()
    logits = [[scale * _cos(a[i], b[j]) for j in range(4)] for i in range(4)]
    P = pos.tolist()

    def soft_ce(m, p):
        out = 0.0
        for i, row in enumerate(m):
            lse = math.log(sum(math.exp(v) for v in row))
            k = sum(p[i])
            out += sum((lse - row[j]) / k for j in range(4) if p[i][j])
        return out / 4

    cols = [list(c) for c in zip(*logits, strict=True)]
    assert got == pytest.approx((soft_ce(logits, P) + soft_ce(cols, [list(c) for c in zip(*P, strict=True)])) / 2,
                                rel=1e-9)


# ----------------------------------------------------------------------------------------- VLM labels


@pytest.fixture(scope="module")
def tiny_vlm():
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from fusionrs_hf.train import vlm

    texts = ["Describe this infrared remote sensing image in detail.",
             "Bright roofs line a dark road.", "A forest."] * 4
    return vlm, vlm.tiny_vlm(texts)


def _sample(answer: str):
    from PIL import Image

    return {"messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text",
                          "text": "Describe this infrared remote sensing image in detail."}]},
                         {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": [Image.new("RGB", (40, 32), (100, 100, 100))], "sample_id": answer[:5]}


def test_vlm_labels_are_minus_100_on_the_prompt_and_the_ids_on_the_answer(tiny_vlm):
    vlm, (_, processor) = tiny_vlm
    tok = processor.tokenizer
    answers = ["Bright roofs line a dark road.", "A forest."]
    batch = vlm.VLMCollator(processor)([_sample(a) for a in answers])
    ids, labels, attn = batch["input_ids"], batch["labels"], batch["attention_mask"]
    image_id = tok.convert_tokens_to_ids("<image>")
    for i, answer in enumerate(answers):
        row, lab = ids[i].tolist(), labels[i].tolist()
        # the supervised part, found independently: the answer's tokens as the tokenizer writes them
        ans_ids = tok(answer, add_special_tokens=False)["input_ids"]
        start = next(k for k in range(len(row)) if row[k:k + len(ans_ids)] == ans_ids)
        n = int(attn[i].sum())
        assert all(v == -100 for v in lab[:start])  # the whole prompt, images included
        assert all(lab[k] == row[k] for k in range(start, n))  # the answer and its end-of-turn tokens
        assert all(v == -100 for v in lab[n:])  # padding
        assert image_id in row[:start] and all(lab[k] == -100 for k in range(len(row)) if row[k] == image_id)
        assert set(lab) - {-100} <= set(row[start:n])
        assert tok.decode(row[start:n]).startswith(answer)
    # -100 is what the loss ignores: the mean loss over the labels equals the loss over the answer tokens
    logits = torch.randn(*ids.shape, len(tok), generator=torch.Generator().manual_seed(0))
    ce = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
    keep = labels.view(-1) != -100
    manual = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1])[keep], labels.view(-1)[keep])
    assert torch.allclose(ce, manual)
    assert vlm.IGNORE_INDEX == -100
