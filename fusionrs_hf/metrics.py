"""Cross-modal retrieval metrics for RGB–IR–text embeddings: Recall@K per direction and "Mean R".

Standalone on purpose (numpy only; torch tensors are accepted and converted), so it can score
embeddings from any model, not just the trainers in :mod:`fusionrs_hf.train`.

Definitions (fixed, so numbers are comparable across runs and papers):

- **Similarity** is cosine similarity: every embedding is L2-normalised first.
- **Correct at K**: a query is a hit at K when its *best-ranked relevant* gallery item has rank <= K.
  Several relevant items (e.g. several captions of one image, or several images sharing one caption
  string) count as one hit, never more.
- **Rank and ties**, two rules (``ties=``), which differ only when a wrong item has exactly the score
  of the best right one:

  - ``"pessimistic"`` (ours, the default; alias ``"ours"``): ``rank = 1 + number of irrelevant gallery
    items whose similarity is >= the best relevant item's similarity``. A tie with a wrong item is
    counted against the query, so a collapsed model (all embeddings equal) scores 0 at R@1 instead of
    100; other relevant items never push a query down. The figure does not depend on gallery order.
  - ``"topk"`` (the authors'; alias ``"authors"``): a query is a hit at K when a relevant item is among
    the first K of the gallery sorted by descending similarity, ties kept in gallery order (a stable
    sort: ``np.argsort(-s, kind="stable")``). That is what the authors' scorer
    (``score_retrieval_embeddings.py``: ``argpartition`` + stable ``argsort``) and ``torch.topk`` give
    whenever no tie straddles position K; where one does, theirs picks among the tied items in an
    unspecified order and this rule picks the earlier gallery rows. A collapsed model scores
    ``100 * K / N`` here. Without ties both rules give the same figures.
- **Relevance**: by default query ``i`` and gallery item ``j`` are relevant when they belong to the same
  image: ``image_ids`` name the rows of ``rgb``/``ir`` (default ``0..N-1``, one row per image, the two
  galleries aligned) and ``text_ids`` name the image of each text row (default: the same as
  ``image_ids``, i.e. one caption per image). With several captions per image pass ``text_ids``:
  image→text is a hit when ANY caption of the image is in the top K; text→image is a hit when the
  caption's image is in the top K. ``relevance`` (an images x texts boolean matrix) overrides both,
  e.g. to make identical caption strings interchangeable.
- Figures are **percentages** (0–100). ``mean_r`` is the mean of the twelve R@1/5/10 figures of
  IR→Text, Text→IR, RGB→IR and IR→RGB (the paper's Table 4); ``mean_r_all6`` adds RGB→Text and
  Text→RGB (18 figures). ``chance_r1`` is ``100 / number of images``: the R@1 a random ranking
  expects for text→image and RGB↔IR.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

KS: tuple[int, ...] = (1, 5, 10)
DIRECTIONS: tuple[str, ...] = ("ir2text", "text2ir", "rgb2ir", "ir2rgb", "rgb2text", "text2rgb")
PAPER_DIRECTIONS: tuple[str, ...] = ("ir2text", "text2ir", "rgb2ir", "ir2rgb")
"""The four directions averaged into the paper's "Mean R"."""
TIE_RULES: tuple[str, ...] = ("pessimistic", "topk")
"""``pessimistic``: ties count against the query (ours); ``topk``: stable top-k, ties in gallery order (the authors')."""
TIE_ALIASES: dict[str, str] = {"ours": "pessimistic", "authors": "topk", "theirs": "topk", "stable": "topk"}


def tie_rule(name: str) -> str:
    """The canonical tie rule for ``name`` (one of :data:`TIE_RULES` or an alias in :data:`TIE_ALIASES`)."""
    rule = TIE_ALIASES.get(name, name)
    if rule not in TIE_RULES:
        raise ValueError(f"unknown tie rule {name!r}; expected one of {', '.join(TIE_RULES)} "
                         f"(or {', '.join(TIE_ALIASES)})")
    return rule


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows x dims), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("embeddings contain NaN or inf")
    return arr


def _normalise(arr: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    return arr / np.maximum(norms, 1e-12)


def ranks(sim: np.ndarray, relevant: np.ndarray, *, ties: str = "pessimistic", chunk: int = 1024) -> np.ndarray:
    """Rank (1-based) of the best relevant gallery item for each query row, under the tie rule ``ties``.

    ``sim`` and ``relevant`` are (queries x gallery). ``pessimistic``: 1 + irrelevant items scoring
    >= the best relevant one. ``topk``: the position of the first relevant item in a stable
    descending sort, i.e. 1 + items scoring above the best relevant score + items tied with it that
    come before the first relevant item holding it. A query with no relevant item gets rank ``inf``
    (it can never be a hit); callers normally reject that case before.
    """
    rule = tie_rule(ties)
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if sim.shape != relevant.shape:
        raise ValueError(f"similarity {sim.shape} and relevance {relevant.shape} shapes differ")
    out = np.empty(sim.shape[0], dtype=np.float64)
    cols = np.arange(sim.shape[1])
    for start in range(0, sim.shape[0], chunk):
        s, r = sim[start:start + chunk], relevant[start:start + chunk]
        best = np.where(r, s, -np.inf).max(axis=1, keepdims=True)
        if rule == "pessimistic":
            rank = 1 + ((~r) & (s >= best)).sum(axis=1)
        else:
            tied = s == best
            first = np.argmax(tied & r, axis=1)  # the earliest relevant item at the best relevant score
            rank = 1 + (s > best).sum(axis=1) + (tied & (cols[None, :] < first[:, None])).sum(axis=1)
        out[start:start + chunk] = rank
        out[start:start + chunk][~r.any(axis=1)] = np.inf
    return out


def recall_at_k(sim, relevant, ks: Sequence[int] = KS, *, ties: str = "pessimistic") -> dict[int, float]:
    """Recall@K in percent for a (queries x gallery) similarity matrix and boolean relevance."""
    r = ranks(_as_sim(sim), relevant, ties=ties)
    return {k: float(100.0 * np.mean(r <= k)) for k in ks}


def _as_sim(sim) -> np.ndarray:
    if hasattr(sim, "detach"):
        sim = sim.detach().float().cpu().numpy()
    return np.asarray(sim, dtype=np.float64)


def _ids(ids: Sequence[Hashable] | None, n: int, what: str) -> list:
    if ids is None:
        return list(range(n))
    ids = list(ids)
    if len(ids) != n:
        raise ValueError(f"{what} has {len(ids)} entries for {n} embedding rows")
    return ids


def _same_ids(rows: Sequence[Hashable], cols: Sequence[Hashable]) -> np.ndarray:
    """rows x cols bool: ``rows[i] == cols[j]``, via integer codes (no Python loop over all pairs)."""
    codes: dict[Hashable, int] = {}
    r = np.fromiter((codes.setdefault(x, len(codes)) for x in rows), dtype=np.int64, count=len(rows))
    c = np.fromiter((codes.get(x, -1) for x in cols), dtype=np.int64, count=len(cols))
    return r[:, None] == c[None, :]


def retrieval_metrics(
    rgb=None,
    ir=None,
    text=None,
    *,
    image_ids: Sequence[Hashable] | None = None,
    text_ids: Sequence[Hashable] | None = None,
    relevance=None,
    ks: Sequence[int] = KS,
    ties: str = "pessimistic",
) -> dict[str, float]:
    """Recall@K (percent) for every direction between the modalities given, plus the means.

    ``rgb`` and ``ir`` are (N x D) embeddings of the same N images (row i of one is row i of
    the other); ``text`` is (M x D). Any of the three may be None: directions that need it are
    left out (and so are the means that need them). Keys: ``{direction}_r{k}`` for the
    directions in :data:`DIRECTIONS`, ``mean_r``, ``mean_r_all6``, ``chance_r1``, ``n_images``,
    ``n_texts``. ``ties`` is the tie rule (:data:`TIE_RULES`). See the module docstring for ties and
    several captions per image.
    """
    ties = tie_rule(ties)
    emb = {name: _normalise(_as_array(x)) for name, x in (("rgb", rgb), ("ir", ir), ("text", text)) if x is not None}
    if len(emb) < 2:
        raise ValueError("retrieval_metrics needs at least two of rgb, ir, text")
    if "rgb" in emb and "ir" in emb and emb["rgb"].shape[0] != emb["ir"].shape[0]:
        raise ValueError(f"rgb has {emb['rgb'].shape[0]} rows but ir has {emb['ir'].shape[0]}; they must be aligned")
    dims = {x.shape[1] for x in emb.values()}
    if len(dims) != 1:
        raise ValueError(f"embedding widths differ: {sorted(dims)}")
    n_img = (emb.get("rgb") if "rgb" in emb else emb["ir"]).shape[0] if ("rgb" in emb or "ir" in emb) else 0
    out: dict[str, float] = {}

    if "text" in emb and n_img:
        n_txt = emb["text"].shape[0]
        if relevance is not None:
            rel = np.asarray(relevance.detach().cpu().numpy() if hasattr(relevance, "detach") else relevance, bool)
            if rel.shape != (n_img, n_txt):
                raise ValueError(f"relevance must be images x texts = {(n_img, n_txt)}, got {rel.shape}")
        else:
            img_ids = _ids(image_ids, n_img, "image_ids")
            txt_ids = _ids(text_ids, n_txt, "text_ids") if text_ids is not None else None
            if txt_ids is None:
                if n_txt != n_img:
                    raise ValueError(f"{n_txt} texts for {n_img} images: pass text_ids naming each text's image")
                txt_ids = img_ids
            rel = _same_ids(img_ids, txt_ids)
        if not rel.any(axis=0).all():
            bad = int(np.flatnonzero(~rel.any(axis=0))[0])
            raise ValueError(f"text row {bad} has no matching image")
        if not rel.any(axis=1).all():
            bad = int(np.flatnonzero(~rel.any(axis=1))[0])
            raise ValueError(f"image row {bad} has no matching text")
        for mod in ("ir", "rgb"):
            if mod in emb:
                sim = emb[mod] @ emb["text"].T
                for k, v in recall_at_k(sim, rel, ks, ties=ties).items():
                    out[f"{mod}2text_r{k}"] = v
                for k, v in recall_at_k(sim.T, rel.T, ks, ties=ties).items():
                    out[f"text2{mod}_r{k}"] = v
        out["n_texts"] = float(n_txt)
    if "rgb" in emb and "ir" in emb:
        img_ids = _ids(image_ids, n_img, "image_ids")
        rel = _same_ids(img_ids, img_ids)
        sim = emb["rgb"] @ emb["ir"].T
        for k, v in recall_at_k(sim, rel, ks, ties=ties).items():
            out[f"rgb2ir_r{k}"] = v
        for k, v in recall_at_k(sim.T, rel.T, ks, ties=ties).items():
            out[f"ir2rgb_r{k}"] = v

    for name, dirs in (("mean_r", PAPER_DIRECTIONS), ("mean_r_all6", DIRECTIONS)):
        keys = [f"{d}_r{k}" for d in dirs for k in ks]
        if all(k in out for k in keys):
            out[name] = float(np.mean([out[k] for k in keys]))
    if n_img:
        out["n_images"] = float(n_img)
        out["chance_r1"] = 100.0 / n_img
    return out
