"""The contrastive loss: symmetric InfoNCE per pair, combined over a recipe's terms, one temperature."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP clamps the temperature so that logits are at most 100x the cosine similarity."""


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
             positives: torch.Tensor | None = None, *, clamp: bool = True) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss) between row-aligned embeddings ``a`` and ``b``.

    Row i of ``a`` and row i of ``b`` are the positive pair; every other row of the batch is a
    negative. ``logit_scale`` is the log inverse temperature, clamped at log 100 as CLIP does
    unless ``clamp=False`` (the release uses ``logit_scale.exp()`` as it is).
    ``positives`` (B x B bool, diagonal true) marks further pairs that are not negatives, e.g.
    two rows with the same caption string: the target then spreads evenly over them (with the
    identity it is exactly the CLIP loss).
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"info_nce needs aligned rows, got {a.shape[0]} and {b.shape[0]}")
    scale = (logit_scale.clamp(max=MAX_LOGIT_SCALE) if clamp else logit_scale).exp()
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    if positives is None:
        target = torch.arange(a.shape[0], device=a.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    pos = positives.to(logits.device, torch.float32)
    row = -(pos / pos.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
    col = -(pos.T / pos.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1)).sum(1).mean()
    return (row + col) / 2


def same_text(texts: Sequence[str | None], device=None) -> torch.Tensor:
    """B x B bool: rows whose strings are identical (templated captions repeat across scenes)."""
    ids: dict[str | None, int] = {}
    codes = torch.tensor([ids.setdefault(t, len(ids)) for t in texts], device=device)
    return codes[:, None] == codes[None, :]


LOSS_REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def trimodal_loss(
    emb: dict[str, torch.Tensor],
    logit_scale: torch.Tensor,
    terms: Sequence[tuple[str, str]],
    rows: dict[str, torch.Tensor] | None = None,
    positives: dict[str, torch.Tensor] | None = None,
    *,
    reduction: str = "sum",
    weights: dict[tuple[str, str], float] | None = None,
    clamp: bool = True,
    min_rows: int = 2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`info_nce` over ``terms`` with one shared ``logit_scale``, summed or averaged.

    ``reduction``: ``sum`` gives ``sum(w_t * L_t)``, ``mean`` gives ``sum(w_t * L_t) / sum(w_t)``
    over the terms computed in this batch (``weights`` default 1 per term; the release's trimodal
    loss is the mean with weight ``rgb_ir_weight`` on the RGB–IR term). ``emb`` maps a modality
    (``rgb``, ``ir``, ``caption``, ``ir_caption``) to embeddings. A modality present for only some
    rows of the batch (``ir_caption`` outside the IR-aware subset) comes with ``rows[mod]``, the
    batch positions its embeddings belong to; its terms use only those rows. A term with fewer than
    ``min_rows`` rows is skipped: 2 in training (one row has no negatives); the release's validation loss
    takes every batch as it comes (``min_rows=1``: a one-row term is 0, and it counts in the mean). ``positives[mod]`` (batch x batch bool, see
    :func:`same_text`) marks rows that are interchangeable in that modality; a term involving it
    does not push them apart. ``clamp``: cap the temperature at 100 (see :func:`info_nce`).
    Returns the loss and each term's value (for logging).
    """
    if reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"unknown loss reduction {reduction!r}; expected one of {', '.join(LOSS_REDUCTIONS)}")
    rows = rows or {}
    positives = positives or {}
    weights = weights or {}
    total: torch.Tensor | None = None
    weight_sum = 0.0
    parts: dict[str, float] = {}
    for a, b in terms:
        ea, eb = emb.get(a), emb.get(b)
        if ea is None or eb is None:
            continue
        idx = None
        for mod in (a, b):
            if mod in rows:
                idx = rows[mod] if idx is None else idx[torch.isin(idx, rows[mod])]
        if idx is not None:
            ea = ea[_positions(rows.get(a), idx)] if a in rows else ea[idx]
            eb = eb[_positions(rows.get(b), idx)] if b in rows else eb[idx]
        if ea.shape[0] < max(1, min_rows):
            continue
        pos = None
        for mod in (a, b):
            if mod in positives:
                p = positives[mod] if idx is None else positives[mod][idx][:, idx]
                pos = p if pos is None else pos | p
        term = info_nce(ea, eb, logit_scale, pos, clamp=clamp)
        parts[f"{a}-{b}"] = float(term.detach())
        w = float(weights.get((a, b), 1.0))
        weight_sum += w
        total = w * term if total is None else total + w * term
    if total is None:
        raise ValueError(f"no loss term had {max(1, min_rows)} or more rows in this batch (terms {list(terms)})")
    if reduction == "mean":
        total = total / weight_sum
    return total, parts


def _positions(have: torch.Tensor | None, want: torch.Tensor) -> torch.Tensor:
    """Positions in a partial embedding (rows ``have``) of the batch rows ``want``."""
    lookup = {int(r): i for i, r in enumerate(have.tolist())}
    return torch.tensor([lookup[int(r)] for r in want.tolist()], dtype=torch.long, device=want.device)
