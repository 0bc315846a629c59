"""Retrieval metrics on hand-made embeddings whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from fusionrs_hf.metrics import DIRECTIONS, KS, PAPER_DIRECTIONS, ranks, recall_at_k, retrieval_metrics


def _onehot(n: int, perm=None) -> np.ndarray:
    eye = np.eye(n)
    return eye if perm is None else eye[perm]


def test_identity_embeddings_score_100_everywhere():
    n = 12
    e = _onehot(n)
    m = retrieval_metrics(e, e.copy(), e.copy())
    for d in DIRECTIONS:
        for k in KS:
            assert m[f"{d}_r{k}"] == 100.0
    assert m["mean_r"] == 100.0 and m["mean_r_all6"] == 100.0
    assert m["chance_r1"] == pytest.approx(100 / n)
    assert m["n_images"] == n and m["n_texts"] == n


def test_known_permutation_gives_known_recalls():
    # 20 images; the IR embeddings of images 0..4 are rotated (IR of image i looks like image i+1),
    # so RGB->IR is wrong at rank 1 for exactly those 5 queries and right for the other 15.
    n = 20
    rgb = _onehot(n)
    perm = list(range(n))
    perm[0:5] = [1, 2, 3, 4, 0]
    ir = _onehot(n, perm)
    m = retrieval_metrics(rgb, ir, None)
    assert m["rgb2ir_r1"] == pytest.approx(75.0)
    assert m["ir2rgb_r1"] == pytest.approx(75.0)
    # one-hot: the right item has similarity 0, tied with every other wrong item -> pessimistic rank n
    assert m["rgb2ir_r5"] == pytest.approx(75.0) and m["rgb2ir_r10"] == pytest.approx(75.0)
    assert "ir2text_r1" not in m and "mean_r" not in m  # no text: directions and means left out


def test_ranks_with_graded_similarity():
    # query i's true item sits at rank r_i by construction
    sim = np.array([[0.9, 0.8, 0.7, 0.1],   # true item 0 -> rank 1
                    [0.9, 0.8, 0.7, 0.1],   # true item 2 -> rank 3
                    [0.5, 0.4, 0.3, 0.2]])  # true item 3 -> rank 4
    rel = np.zeros_like(sim, dtype=bool)
    rel[0, 0] = rel[1, 2] = rel[2, 3] = True
    assert ranks(sim, rel).tolist() == [1, 3, 4]
    r = recall_at_k(sim, rel, ks=(1, 3, 4))
    assert r == {1: pytest.approx(100 / 3), 3: pytest.approx(200 / 3), 4: 100.0}


def test_ties_are_pessimistic():
    sim = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 0.1]])
    rel = np.eye(2, 3, dtype=bool)
    assert ranks(sim, rel).tolist() == [3, 2]
    # a collapsed model (all embeddings equal) gets 0 at R@1, not 100
    same = np.ones((8, 4))
    m = retrieval_metrics(same, same, same)
    assert m["rgb2ir_r1"] == 0.0 and m["ir2text_r1"] == 0.0
    assert m["rgb2ir_r10"] == 100.0  # gallery of 8 <= 10


def test_several_captions_per_image():
    # 3 images, 2 captions each; caption 2j is image j's exact embedding, caption 2j+1 is mostly
    # the NEXT image (0.5 e_j + e_j+1). Image->text: hit if ANY caption is top-1 -> always.
    # Text->image: only the exact captions hit at R@1.
    imgs = _onehot(3)
    texts = np.stack([v for j in range(3) for v in (imgs[j], 0.5 * imgs[j] + imgs[(j + 1) % 3])])
    text_ids = [0, 0, 1, 1, 2, 2]
    m = retrieval_metrics(imgs, imgs, texts, text_ids=text_ids)
    assert m["ir2text_r1"] == 100.0 and m["rgb2text_r1"] == 100.0
    assert m["text2ir_r1"] == pytest.approx(50.0) and m["text2ir_r5"] == 100.0
    assert m["n_texts"] == 6 and m["chance_r1"] == pytest.approx(100 / 3)
    # the same through an explicit relevance matrix
    rel = np.zeros((3, 6), bool)
    for t, i in enumerate(text_ids):
        rel[i, t] = True
    assert retrieval_metrics(imgs, imgs, texts, relevance=rel) == m


def test_mean_r_is_the_four_paper_directions():
    rng = np.random.default_rng(0)
    rgb, ir, txt = rng.normal(size=(3, 30, 8))
    m = retrieval_metrics(rgb, ir, txt)
    four = [m[f"{d}_r{k}"] for d in PAPER_DIRECTIONS for k in KS]
    six = [m[f"{d}_r{k}"] for d in DIRECTIONS for k in KS]
    assert m["mean_r"] == pytest.approx(np.mean(four))
    assert m["mean_r_all6"] == pytest.approx(np.mean(six))
    assert len(four) == 12


def test_torch_tensors_and_errors():
    torch = pytest.importorskip("torch")
    e = torch.eye(5)
    assert retrieval_metrics(e, e, e)["mean_r"] == 100.0
    with pytest.raises(ValueError, match="aligned"):
        retrieval_metrics(np.eye(4), np.eye(5), None)
    with pytest.raises(ValueError, match="text_ids"):
        retrieval_metrics(np.eye(4), np.eye(4), np.eye(4)[:3])
    with pytest.raises(ValueError, match="at least two"):
        retrieval_metrics(np.eye(4))
    with pytest.raises(ValueError, match="no matching image"):
        retrieval_metrics(np.eye(3), np.eye(3), np.eye(3), text_ids=[0, 1, 7])


def test_string_ids_match_an_explicit_relevance_matrix():
    # sample-id strings (what the trainers pass), two images sharing one id, ids given per text
    rng = np.random.default_rng(3)
    rgb, ir = rng.normal(size=(2, 5, 6))
    txt = rng.normal(size=(7, 6))
    image_ids = ["s0", "s1", "s1", "s2", "s3"]
    text_ids = ["s3", "s0", "s1", "s2", "s2", "s0", "s3"]
    m = retrieval_metrics(rgb, ir, txt, image_ids=image_ids, text_ids=text_ids)
    rel = np.array([[a == b for b in text_ids] for a in image_ids])
    ref = retrieval_metrics(rgb, ir, txt, relevance=rel)
    text_keys = [k for k in ref if "text" in k]  # RGB<->IR follows image_ids, not `relevance`
    assert len(text_keys) == 4 * len(KS) + 1
    for key in text_keys:
        assert m[key] == pytest.approx(ref[key]), key
    # RGB<->IR treats the two "s1" images as interchangeable: row 1 may retrieve row 2
    same = np.array([[a == b for b in image_ids] for a in image_ids])
    sim = (rgb / np.linalg.norm(rgb, axis=1, keepdims=True)) @ (ir / np.linalg.norm(ir, axis=1, keepdims=True)).T
    assert m["rgb2ir_r1"] == pytest.approx(recall_at_k(sim, same, (1,))[1])


# ------------------------------------------------------------------------ tie rules


def _stable_topk_rank(sim: np.ndarray, rel: np.ndarray) -> list[int]:
    """Position of the first relevant item in a stable descending sort, query by query."""
    out = []
    for s, r in zip(sim, rel, strict=True):
        order = sorted(range(len(s)), key=lambda j: (-s[j], j))
        out.append(next(p for p, j in enumerate(order) if r[j]) + 1)
    return out


def test_topk_rule_is_a_stable_sort_and_pessimistic_counts_ties_against():
    rng = np.random.default_rng(0)
    sim = rng.integers(0, 4, size=(40, 30)).astype(float)  # 4 score values: ties everywhere
    rel = rng.random((40, 30)) < 0.15
    rel[np.arange(40), rng.integers(0, 30, 40)] = True
    assert ranks(sim, rel, ties="topk").tolist() == _stable_topk_rank(sim, rel)
    pess = [1 + sum(1 for j in range(30) if not r[j] and s[j] >= max(s[r])) for s, r in zip(sim, rel, strict=True)]
    assert ranks(sim, rel).tolist() == pess
    assert (ranks(sim, rel, ties="topk") <= ranks(sim, rel)).all()
    # a collapsed model: 0 at R@1 under ours, K/N under the stable top-k (the first K gallery rows hit)
    same = np.ones((10, 4))
    assert retrieval_metrics(same, same, same)["rgb2ir_r1"] == 0.0
    m = retrieval_metrics(same, same, same, ties="topk")
    assert m["rgb2ir_r1"] == pytest.approx(10.0) and m["ir2text_r5"] == pytest.approx(50.0)
    assert recall_at_k(sim, rel, ties="authors") == recall_at_k(sim, rel, ties="topk")
    with pytest.raises(ValueError, match="unknown tie rule"):
        ranks(sim, rel, ties="random")


def _authors_recall(q: np.ndarray, t: np.ndarray, qkeys, tkeys, ks=(1, 5, 10)) -> dict[int, float]:
    """score_retrieval_embeddings.py's recall_at_k, restated: argpartition, then a stable sort of the top."""
    max_k = min(max(ks), len(t))
    scores = q @ t.T
    top = np.argpartition(-scores, kth=max_k - 1, axis=1)[:, :max_k]
    top_scores = np.take_along_axis(scores, top, axis=1)
    top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
    tkeys = np.asarray(tkeys)
    hit = tkeys[top] == np.asarray(qkeys)[:, None]
    return {k: 100.0 * float(hit[:, : min(k, max_k)].any(axis=1).sum()) / len(q) for k in ks}


@pytest.mark.parametrize("seed", range(3))
def test_both_rules_equal_the_authors_scorer_without_ties(seed):
    rng = np.random.default_rng(seed)
    n = 300
    rgb, ir, txt = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(3, n, 16)))
    keys = rng.integers(0, 220, n)  # duplicate caption keys: several positives per query
    rel = keys[:, None] == keys[None, :]
    for ties in ("pessimistic", "topk"):
        m = retrieval_metrics(rgb, ir, txt, image_ids=list(range(n)), relevance=rel, ties=ties)
        ids = np.arange(n)
        for name, (q, t, qk, tk) in {"ir2text": (ir, txt, keys, keys), "text2ir": (txt, ir, keys, keys),
                                     "rgb2ir": (rgb, ir, ids, ids), "ir2rgb": (ir, rgb, ids, ids)}.items():
            for k, v in _authors_recall(q, t, qk, tk).items():
                assert m[f"{name}_r{k}"] == pytest.approx(v, abs=1e-9), (ties, name, k)
