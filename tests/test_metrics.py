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
