"""Issue 15: retrieval metrics against expected values computed without the code under test.

Every expected figure here is either written by hand for an embedding built so that the answer is known,
or computed by a brute-force reference in this file (plain loops over cosine similarities, the ranking rule
of the module docstring restated) that shares nothing with ``fusionrs_hf.metrics`` (no ``ranks()``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusionrs_hf.metrics import ranks, recall_at_k, retrieval_metrics, tie_rule

PAPER_FOUR = ("ir2text", "text2ir", "rgb2ir", "ir2rgb")  # the paper's Table 4 "Mean R", written out
ALL_SIX = (*PAPER_FOUR, "rgb2text", "text2rgb")


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _brute_recall(queries, gallery, relevant, ks=(1, 5, 10), ties="pessimistic") -> dict[int, float]:
    """R@K in percent, query by query: the best relevant item's rank by the rule, then a hit if <= K."""
    hits = dict.fromkeys(ks, 0)
    for qi, q in enumerate(queries):
        sims = [_cos(q, g) for g in gallery]
        rel = [gj for gj in range(len(gallery)) if relevant[qi][gj]]
        best = max(sims[j] for j in rel)
        if ties == "pessimistic":  # 1 + wrong items scoring at least the best right one
            rank = 1 + sum(1 for j in range(len(gallery)) if j not in rel and sims[j] >= best)
        else:  # stable sort by descending score, position of the first relevant item
            order = sorted(range(len(gallery)), key=lambda j: (-sims[j], j))
            rank = 1 + next(p for p, j in enumerate(order) if j in rel)
        for k in ks:
            hits[k] += rank <= k
    return {k: 100.0 * hits[k] / len(queries) for k in ks}


def _brute_all(rgb, ir, txt, img_rel, txt_rel, ks=(1, 5, 10), ties="pessimistic") -> dict[str, float]:
    """Every direction by brute force. ``img_rel[i][j]``: RGB i and IR j show one image;
    ``txt_rel[i][t]``: text t describes image i."""
    n, m = len(rgb), len(txt)
    t_rel = [[txt_rel[i][t] for i in range(n)] for t in range(m)]
    ir_rel_t = [[img_rel[j][i] for j in range(n)] for i in range(n)]
    pairs = {"ir2text": (ir, txt, txt_rel), "text2ir": (txt, ir, t_rel), "rgb2text": (rgb, txt, txt_rel),
             "text2rgb": (txt, rgb, t_rel), "rgb2ir": (rgb, ir, img_rel), "ir2rgb": (ir, rgb, ir_rel_t)}
    out = {}
    for name, (q, g, rel) in pairs.items():
        for k, v in _brute_recall(q, g, rel, ks, ties).items():
            out[f"{name}_r{k}"] = v
    return out


# ----------------------------------------------------------------------------------------- Mean R by hand


def test_mean_r_by_hand_on_permuted_one_hot_embeddings():
    """12 images; RGB_i = T_i = e_i, and IR_i = e_sigma(i) with sigma fixing exactly 3 of the 12.

    By hand: RGB->text and text->RGB are perfect (100 at every K). A direction involving IR hits at rank 1
    for the 3 fixed points; for the other 9 the right item has similarity 0, tied with 10 wrong items at 0
    and behind one at 1: pessimistic rank 12 > 10, a miss at every K. So the four IR directions are
    25 / 25 / 25 at R@1/5/10, Mean R = 25, and the six-direction mean = (12 * 25 + 6 * 100) / 18 = 50."""
    n = 12
    sigma = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 3]  # 3 fixed points, one 9-cycle
    eye = np.eye(n)
    m = retrieval_metrics(eye, eye[sigma], eye)
    for d in ("rgb2text", "text2rgb"):
        assert [m[f"{d}_r{k}"] for k in (1, 5, 10)] == [100.0, 100.0, 100.0]
    for d in PAPER_FOUR:
        assert [m[f"{d}_r{k}"] for k in (1, 5, 10)] == [25.0, 25.0, 25.0], d
    assert m["mean_r"] == 25.0
    assert m["mean_r_all6"] == 50.0
    assert m["chance_r1"] == 100 / 12 and m["n_images"] == 12.0 and m["n_texts"] == 12.0


def test_mean_r_is_the_mean_of_the_four_paper_directions_by_brute_force():
    """Graded similarities: every direction has its own figures; Mean R is their mean over IR->text,
    text->IR, RGB->IR and IR->RGB only (the brute-force figures averaged here, not the code's)."""
    rng = np.random.default_rng(5)
    n = 24
    base = rng.normal(size=(n, 6))
    rgb = base + 0.9 * rng.normal(size=(n, 6))
    ir = base + 1.3 * rng.normal(size=(n, 6))
    txt = base + 0.6 * rng.normal(size=(n, 6))
    eye = [[i == j for j in range(n)] for i in range(n)]
    want = _brute_all(rgb.tolist(), ir.tolist(), txt.tolist(), eye, eye)
    m = retrieval_metrics(rgb, ir, txt)
    for key, v in want.items():
        assert m[key] == pytest.approx(v, abs=1e-9), key
    four = [want[f"{d}_r{k}"] for d in PAPER_FOUR for k in (1, 5, 10)]
    six = [want[f"{d}_r{k}"] for d in ALL_SIX for k in (1, 5, 10)]
    assert len(set(four)) > 4  # the directions really differ, so a wrong subset would show
    assert m["mean_r"] == pytest.approx(sum(four) / 12)
    assert m["mean_r_all6"] == pytest.approx(sum(six) / 18)
    assert m["mean_r"] != pytest.approx(m["mean_r_all6"])
    # without text only RGB<->IR is defined: no Mean R at all (it needs its four directions)
    m2 = retrieval_metrics(rgb, ir, None)
    assert "mean_r" not in m2 and "mean_r_all6" not in m2
    assert m2["rgb2ir_r1"] == pytest.approx(want["rgb2ir_r1"]) and "n_texts" not in m2
    # without RGB: IR<->text only, no mean either
    m3 = retrieval_metrics(None, ir, txt)
    assert set(m3) == {f"{d}_r{k}" for d in ("ir2text", "text2ir") for k in (1, 5, 10)} | {
        "n_texts", "n_images", "chance_r1"}
    assert m3["text2ir_r5"] == pytest.approx(want["text2ir_r5"])


def test_string_ids_against_an_explicit_relevance_matrix_by_brute_force():
    """Image ids with a repeat and texts naming their image by id: each text direction equals the brute
    force over the relevance matrix written out below (not derived from the ids by the code)."""
    rng = np.random.default_rng(3)
    rgb, ir = rng.normal(size=(2, 5, 6))
    txt = rng.normal(size=(7, 6))
    image_ids = ["s0", "s1", "s1", "s2", "s3"]
    text_ids = ["s3", "s0", "s1", "s2", "s2", "s0", "s3"]
    # images x texts: image i is relevant to text t when they name one sample id
    rel = [[0, 1, 0, 0, 0, 1, 0],   # s0
           [0, 0, 1, 0, 0, 0, 0],   # s1
           [0, 0, 1, 0, 0, 0, 0],   # s1
           [0, 0, 0, 1, 1, 0, 0],   # s2
           [1, 0, 0, 0, 0, 0, 1]]   # s3
    # RGB i and IR j: the same sample id (the two s1 images are interchangeable)
    img = [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    want = _brute_all(rgb.tolist(), ir.tolist(), txt.tolist(), img, rel)
    m = retrieval_metrics(rgb, ir, txt, image_ids=image_ids, text_ids=text_ids)
    for key, v in want.items():
        assert m[key] == pytest.approx(v, abs=1e-9), key
    assert m["n_texts"] == 7.0 and m["n_images"] == 5.0 and m["chance_r1"] == 20.0
    # the same figures from the matrix itself (relevance= overrides the ids for text directions)
    m2 = retrieval_metrics(rgb, ir, txt, image_ids=image_ids, relevance=np.array(rel, bool))
    assert {k: m2[k] for k in want} == pytest.approx(want)


@pytest.mark.parametrize("ties", ["pessimistic", "topk"])
def test_both_tie_rules_against_brute_force_with_many_ties(ties):
    rng = np.random.default_rng(11)
    n = 15
    # few distinct directions: many exact ties between different images
    pool = rng.normal(size=(4, 3))
    rgb = pool[rng.integers(0, 4, n)]
    ir = pool[rng.integers(0, 4, n)]
    txt = pool[rng.integers(0, 4, n)]
    eye = [[i == j for j in range(n)] for i in range(n)]
    want = _brute_all(rgb.tolist(), ir.tolist(), txt.tolist(), eye, eye, ties=ties)
    m = retrieval_metrics(rgb, ir, txt, ties=ties)
    for key, v in want.items():
        assert m[key] == pytest.approx(v, abs=1e-9), (ties, key)


# ----------------------------------------------------------------------------------------- ranks, K, inputs


def test_ranks_by_hand_in_chunks_and_without_a_relevant_item():
    sim = np.array([[0.9, 0.5, 0.5, 0.1],
                    [0.2, 0.3, 0.4, 0.5],
                    [0.7, 0.7, 0.7, 0.7],
                    [0.1, 0.2, 0.3, 0.4]])
    rel = np.array([[0, 1, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    # row 0: right 0.5, wrong >= 0.5: 0.9 and the tied 0.5 -> pessimistic 3; stable sort: 0.9, 0.5(j1) -> 2
    # row 1: best right 0.5 (j3), nothing wrong above -> 1 under both rules
    # row 2: all tied: pessimistic 1 + 3 = 4; stable sort: j0, j1, j2 -> 3
    # row 3: no relevant item: inf
    for chunk in (1, 2, 3, 1024):
        assert ranks(sim, rel, chunk=chunk).tolist() == [3, 1, 4, math.inf]
        assert ranks(sim, rel, ties="topk", chunk=chunk).tolist() == [2, 1, 3, math.inf]
    assert recall_at_k(sim[:3], rel[:3], ks=(1, 2, 3, 4)) == {1: pytest.approx(100 / 3), 2: pytest.approx(100 / 3),
                                                              3: pytest.approx(200 / 3), 4: 100.0}
    assert recall_at_k(sim[:3], rel[:3], ks=(2,), ties="authors") == {2: pytest.approx(200 / 3)}
    with pytest.raises(ValueError, match="shapes differ"):
        ranks(sim, rel[:, :3])


def test_custom_ks_and_torch_inputs():
    torch = pytest.importorskip("torch")
    n = 12
    sigma = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 3]
    eye = np.eye(n)
    m = retrieval_metrics(torch.tensor(eye), torch.tensor(eye[sigma]), torch.tensor(eye), ks=(1, 12))
    # rank 12 for the 9 moved images: a hit at K = 12
    assert m["ir2text_r1"] == 25.0 and m["ir2text_r12"] == 100.0 and "ir2text_r5" not in m
    assert m["mean_r"] == pytest.approx((25 + 100) / 2)
    sim = torch.tensor([[0.2, 0.9], [0.8, 0.1]], dtype=torch.float64)
    assert recall_at_k(sim, np.eye(2, dtype=bool), ks=(1, 2)) == {1: 0.0, 2: 100.0}
    rel = torch.tensor([[True, False], [False, True]])
    e = np.eye(2)
    assert retrieval_metrics(e, e, e, relevance=rel)["ir2text_r1"] == 100.0


def test_unnormalised_embeddings_use_cosine_similarity():
    """Scaling a row changes dot products but not cosine similarities: the figures do not move."""
    rng = np.random.default_rng(2)
    rgb, ir, txt = rng.normal(size=(3, 20, 5))
    scale = rng.uniform(0.01, 100, size=(20, 1))
    assert retrieval_metrics(rgb * scale, ir, txt / scale) == retrieval_metrics(rgb, ir, txt)
    zero = np.zeros((3, 4))
    zero[1:, :] = np.eye(4)[:2]
    m = retrieval_metrics(zero, zero, zero)  # a zero row stays finite (no division by zero)
    assert all(np.isfinite(v) for v in m.values())


def test_input_errors_name_the_problem():
    e = np.eye(4)
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.ones(4), e, None)
    with pytest.raises(ValueError, match="NaN or inf"):
        retrieval_metrics(np.full((4, 4), np.nan), e, None)
    with pytest.raises(ValueError, match="NaN or inf"):
        retrieval_metrics(e, e, np.full((4, 4), np.inf))
    with pytest.raises(ValueError, match="widths differ"):
        retrieval_metrics(e, e, np.eye(4, 3))
    with pytest.raises(ValueError, match="image_ids has 3 entries for 4"):
        retrieval_metrics(e, e, e, image_ids=[0, 1, 2])
    with pytest.raises(ValueError, match="text_ids has 5 entries for 4"):
        retrieval_metrics(e, e, e, text_ids=[0, 1, 2, 3, 3])
    with pytest.raises(ValueError, match=r"relevance must be images x texts = \(4, 4\)"):
        retrieval_metrics(e, e, e, relevance=np.ones((4, 3), bool))
    with pytest.raises(ValueError, match="image row 3 has no matching text"):
        retrieval_metrics(e, e, e[:3], text_ids=[0, 1, 2])
    with pytest.raises(ValueError, match="text row 2 has no matching image"):
        retrieval_metrics(e, e, e, text_ids=[0, 1, 9, 3])
    with pytest.raises(ValueError, match="unknown tie rule 'best'"):
        retrieval_metrics(e, e, e, ties="best")
    assert [tie_rule(x) for x in ("ours", "authors", "theirs", "stable", "topk", "pessimistic")] == [
        "pessimistic", "topk", "topk", "topk", "topk", "pessimistic"]


# ----------------------------------------------------------------------------------------- input kinds


def test_only_rgb_and_text():
    """RGB + text (no IR): RGB<->text figures, by hand, and nothing about IR."""
    n = 12
    eye = np.eye(n)
    txt = eye[[1, 0, *range(2, n)]]  # texts 0 and 1 swapped: 10 of 12 right at rank 1, the 2 others rank 12
    m = retrieval_metrics(eye, None, txt)
    assert set(m) == {f"{d}_r{k}" for d in ("rgb2text", "text2rgb") for k in (1, 5, 10)} | {
        "n_texts", "n_images", "chance_r1"}
    assert [m[f"rgb2text_r{k}"] for k in (1, 5, 10)] == [pytest.approx(1000 / 12)] * 3
    assert [m[f"text2rgb_r{k}"] for k in (1, 5, 10)] == [pytest.approx(1000 / 12)] * 3
    assert m["n_images"] == 12.0 and m["chance_r1"] == 100 / 12


def test_tensors_that_require_grad_and_bfloat16_are_accepted():
    torch = pytest.importorskip("torch")
    n = 12
    sigma = [0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 3]
    eye = torch.eye(n)
    rgb = eye.clone().requires_grad_(True)
    ir = eye[sigma].clone().to(torch.bfloat16)
    txt = (eye * 2).requires_grad_(True)
    m = retrieval_metrics(rgb, ir, txt)
    assert m["mean_r"] == 25.0 and m["rgb2text_r1"] == 100.0
    sim = (eye @ eye.T).requires_grad_(True)
    assert recall_at_k(sim, np.eye(n, dtype=bool), ks=(1,)) == {1: 100.0}
    soft = torch.eye(n).requires_grad_(True)  # a 0/1 relevance matrix that came out of a graph
    assert retrieval_metrics(rgb, ir, txt, relevance=soft)["text2rgb_r1"] == 100.0


def test_float32_embeddings_are_scored_in_float64():
    """Two gallery items 2e-10 apart in cosine: distinct in float64, tied in float32. The query's right
    item is the closer one, so it is rank 1 only if the similarities are computed in float64."""
    rgb = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    txt = np.array([[1.0, 0.0, 0.0], [1.0, 2e-5, 0.0]], np.float32)
    rel = np.array([[True, False], [False, True]])
    m = retrieval_metrics(rgb, None, txt, relevance=rel)
    # query 0: right text 0 (cos 1), wrong text 1 (cos 1 - 2e-10): rank 1. query 1 (e3) is orthogonal to
    # both: its right text ties with the wrong one -> rank 2
    assert m["rgb2text_r1"] == 50.0


def test_integer_relevance_and_more_queries_than_gallery_items():
    sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    rel01 = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0]])  # 0/1 integers, not booleans
    # by hand: ranks 1, 1, 2, 2, and 2 for the tie (pessimistic)
    for chunk in (1, 2, 3, 1024):
        assert ranks(sim, rel01, chunk=chunk).tolist() == [1, 1, 2, 2, 2]
    big = np.tile(sim, (300, 1))  # 1500 queries, 2 gallery items: more than one default chunk
    assert ranks(big, np.tile(rel01, (300, 1))).tolist() == [1, 1, 2, 2, 2] * 300


def test_id_errors_name_the_right_argument():
    e = np.eye(4)
    with pytest.raises(ValueError, match="image_ids has 3 entries for 4"):
        retrieval_metrics(e, e, None, image_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="text row 4 has no matching image"):
        retrieval_metrics(e, e, np.eye(5, 4), text_ids=[0, 1, 2, 3, 9])


def test_relevance_counts_are_truthy_like_booleans():
    """A relevance given as counts (e.g. how many captions two rows share) means relevant where non-zero."""
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])  # right items score 0.1 and 0.2: rank 3 each
    counts = np.array([[0, 2, 0], [3, 0, 0]])
    assert ranks(sim, counts).tolist() == ranks(sim, counts > 0).tolist() == [3, 3]
    assert ranks(sim, counts, ties="topk").tolist() == [3, 3]
