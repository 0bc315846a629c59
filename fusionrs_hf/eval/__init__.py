"""``fusionrs eval``: the paper's retrieval table (and NWPU zero-shot) by the authors' protocol.

Evaluate any image–text model on a FusionRS split::

    from fusionrs_hf.eval import evaluate
    res = evaluate("./fusionrs", model="runs/clip/checkpoint", split="test")     # or model="openai/clip-vit-base-patch32"
    res = evaluate("./fusionrs", embeddings="my_model_test.npz", split="test")   # vectors from a model we do not know
    print(res.table()); res.to_dict(); res.line()

- :mod:`.protocol`: which rows are scored and what is a positive (``rc4``: evaluation
  representatives, of the split or of one source, normalised-caption-key positives or, with
  ``text_key="lowercase"``, ``eval_clip_retrieval.py``'s; ``all-rows``), the scores, the result and
  its Table 4 layout.
- :mod:`.embed`: embeddings from a model through :func:`fusionrs_hf.torch.make_dataloader`, the
  cache, and embedding files (``.npz``/``.parquet``).
- :mod:`.zeroshot`: class-name-prompt scene classification for RGB and IR.
- :mod:`.cli`: the ``fusionrs eval`` sub-command.

Ties (``ties=``): ``pessimistic`` (ours, default: a wrong item tied with the best right one counts
against the query) or ``topk`` (the authors': stable top-k, ties in gallery order); see
:mod:`fusionrs_hf.metrics`. ``train_clip`` evaluates through :func:`evaluate_model` with the same
defaults, so its final line equals ``fusionrs eval`` on its checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .embed import (
    DEFAULT_BATCH_SIZE,
    PRECISIONS,
    Embeddings,
    cached_model_embeddings,
    embed_model,
    load_embeddings,
)
from .protocol import (
    PROTOCOL_CHOICES,
    PROTOCOLS,
    TEXT_FIELDS,
    TEXT_KEY_SUFFIX,
    TEXT_KEYS,
    EvalResult,
    EvalRows,
    ProtocolError,
    Selection,
    align,
    check_text_key,
    check_ties,
    rc4_representatives,
    read_eval_rows,
    score,
    select,
)
from .zeroshot import zero_shot as _zero_shot

__all__ = [
    "evaluate", "evaluate_embeddings", "evaluate_model", "EvalResult", "EvalRows", "Embeddings", "ProtocolError",
    "Selection", "read_eval_rows", "select", "score", "load_embeddings", "embed_model", "PROTOCOLS",
    "PROTOCOL_CHOICES", "TEXT_FIELDS", "TEXT_KEYS", "PRECISIONS", "DEFAULT_BATCH_SIZE", "check_ties",
    "check_text_key",
]


def evaluate_embeddings(emb: Embeddings, rows: EvalRows, *, protocol: str = "auto", ties: str = "pessimistic",
                        text_field: str = "caption", zero_shot: bool = True, limited: bool = False,
                        source: dict | None = None, text_key: str = "caption") -> EvalResult:
    """Score ``emb`` on ``rows`` under ``protocol`` (see :mod:`.protocol`).

    ``limited``: the embeddings cover only part of the split on purpose (a row limit), so the
    scored rows are those of the protocol that have an embedding; otherwise every scored row must
    have one. ``text_key``: what makes texts one positive group (:data:`.protocol.TEXT_KEYS`).
    """
    ties = check_ties(ties)
    sel = select(rows, protocol, text_field, text_key)
    notes: list[str] = []
    if limited:
        have = set(emb.sample_id)
        sel = _subset(sel, have)
        notes.append(f"limited: scored the {len(sel):,} protocol rows among the first embedded rows")
    if sel.n_without_text:
        notes.append(f"{sel.n_without_text:,} rows without {'an' if text_field[:1] in 'aeiou' else 'a'} {text_field} were left out")
    if sel.n_other_sources:
        notes.append(f"{sel.n_other_sources:,} evaluation rows of the repo's own sources were left out (protocol "
                     "rc4 scores the release's representatives; --protocol all-rows or their own config scores them)")
    expected, per_source = _expected(sel, rows.split, notes)
    aligned = align(sel, emb.sample_id, emb.arrays())
    metrics = score(sel, aligned, ties=ties)
    zs = None
    if zero_shot:
        zs = _zero_shot_for(sel, emb, aligned, ties, notes)
    return EvalResult(sel.protocol, ties, rows.repo, rows.config, rows.split, text_field, sel.n_rows, len(sel),
                      sel.n_keys, metrics, zs, dict(source or {}), notes, expected, per_source, sel.text_key)


def _expected(sel: Selection, split: str, notes: list[str]) -> tuple[int | None, str | None]:
    """``rc4``: how many representatives the release has for what was scored, and the one source scored (its
    per-source protocol) or None (the whole split); a note when the scored rows are not all of them."""
    if sel.protocol != "rc4":
        return None, None
    src = sel.single_source
    expected = rc4_representatives(split, src) if src else rc4_representatives(split)
    if expected is None:
        return None, src
    pid = PROTOCOLS["rc4"].id + TEXT_KEY_SUFFIX[sel.text_key]
    if src and len(sel) == expected:
        note = (f"scored the release's {expected:,} {src} {split} evaluation representatives: its per-source "
                f"protocol (results/clip/retrieval/per_source/{src}); authors_format names the source")
        if sel.text_key == "caption":
            note += ("; the release's per-source figures come from eval_clip_retrieval.py, whose text positives are "
                     "lower-cased captions (--text-key lowercase)")
        notes.append(note)
    elif src:
        notes.append(f"scored {len(sel):,} of the release's {expected:,} {src} {split} evaluation representatives: "
                     f"not the release's per-source query set (a partial rebuild or a row limit), so authors_format "
                     f"names the protocol {pid}+subset")
    elif len(sel) != expected:
        notes.append(f"scored {len(sel):,} of the release's {expected:,} {split} evaluation representatives: "
                     f"not the authors' query set (some of the release's sources, a partial rebuild or a row limit), "
                     f"so authors_format names the protocol {pid}+subset")
    return expected, src


def _subset(sel: Selection, keep: set[str]) -> Selection:
    idx = [i for i, s in enumerate(sel.sample_id) if s in keep]
    if not idx:
        raise ProtocolError("none of the embedded rows is scored by the protocol (raise the row limit)")
    pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
    return Selection(sel.protocol, sel.text_field, pick(sel.sample_id), pick(sel.key), pick(sel.text),
                     pick(sel.class_name), pick(sel.source), sel.n_rows, sel.n_without_text, sel.split_classes,
                     sel.n_other_sources, sel.text_key)


def _zero_shot_for(sel: Selection, emb: Embeddings, aligned: dict, ties: str, notes: list[str]) -> dict | None:
    rows = [i for i, c in enumerate(sel.class_name) if c]
    if not rows:
        return None
    if not emb.class_names or not emb.class_text:
        notes.append("zero-shot classification skipped: the embeddings carry no class-prompt vectors "
                     "(class_names + class_text_rgb/class_text_ir in an .npz)")
        return None
    images = {m: aligned[m][rows] for m in ("rgb", "ir") if m in aligned}
    return _zero_shot(emb.class_names, [sel.class_name[i] for i in rows], images, emb.class_text, ties=ties)


def evaluate_model(model, repo: str | os.PathLike, *, config: str = "default", split: str = "test",
                   protocol: str = "auto", ties: str = "pessimistic", text_field: str = "caption",
                   zero_shot: bool = True, batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int = 0,
                   precision: str = "auto", limit: int | None = None, revision: str | None = None,
                   progress: bool = False, rows: EvalRows | None = None,
                   storage_options: dict | None = None, text_key: str = "caption") -> EvalResult:
    """Embed ``config``/``split`` with an in-memory CLIP adapter (:class:`fusionrs_hf.train.clip.ClipAdapter`)
    and score it: what ``train_clip`` calls for every evaluation. No cache (the weights change)."""
    rows = rows if rows is not None else read_eval_rows(repo, config, split, revision=revision,
                                                        storage_options=storage_options)
    check_ties(ties)
    check_text_key(text_key)
    classes = select(rows, protocol, text_field).split_classes if zero_shot else None
    emb = embed_model(model, repo, config, split, text_field=text_field, classes=classes, batch_size=batch_size,
                      num_workers=num_workers, precision=precision, limit=limit, revision=revision,
                      progress=progress, storage_options=storage_options)
    return evaluate_embeddings(emb, rows, protocol=protocol, ties=ties, text_field=text_field, zero_shot=zero_shot,
                               limited=limit is not None, source={"model": type(model).__name__, **emb.meta},
                               text_key=text_key)


def evaluate(repo: str | os.PathLike, *, model: str | None = None, embeddings: str | os.PathLike | Embeddings | None = None,
             config: str = "default", split: str = "test", protocol: str = "auto", ties: str = "pessimistic",
             text_field: str = "caption", zero_shot: bool = True, batch_size: int = DEFAULT_BATCH_SIZE,
             num_workers: int = 0, precision: str = "auto", device: str | None = None,
             cache_dir: str | os.PathLike | None | bool = None, limit: int | None = None,
             revision: str | None = None, pretrained: str | None = None, progress: bool = False,
             save_embeddings: str | os.PathLike | None = None, classes: Sequence[str] | None = None,
             storage_options: dict | None = None, preprocess: str | None = None,
             text_key: str = "caption") -> EvalResult:
    """Evaluate a model (a name or folder, see :mod:`.embed`) or precomputed ``embeddings`` on a split.

    Exactly one of ``model`` and ``embeddings``. ``cache_dir``: None for the default cache, False to
    embed afresh and write nothing. ``save_embeddings``: also write the vectors as an ``.npz`` (the
    authors' format). ``classes``: the zero-shot label set (default: every class name in the split).
    ``storage_options``: for the repo's store (:mod:`fusionrs_hf.storage`). ``preprocess``: the model's pixels,
    ``auto`` / ``processor`` / ``fast`` (:func:`fusionrs_hf.eval.embed.resolve_preprocess`; None: ``auto``, or
    the enclosing :func:`~fusionrs_hf.eval.embed.preprocessing` block's). ``text_key``: ``caption`` (the
    release's ``normalized_caption_key``, ``score_retrieval_embeddings.py``) or ``lowercase``
    (``eval_clip_retrieval.py``'s lower-cased, whitespace-collapsed caption) as what positives share.
    """
    if (model is None) == (embeddings is None):
        raise ProtocolError("give exactly one of a model and an embeddings file")
    check_ties(ties)
    rows = read_eval_rows(repo, config, split, revision=revision, storage_options=storage_options)
    sel = select(rows, protocol, text_field, text_key)  # a protocol that cannot apply fails before any embedding
    if embeddings is not None:
        emb = embeddings if isinstance(embeddings, Embeddings) else load_embeddings(embeddings)
        source = {"embeddings": str(emb.meta.get("file", "in memory"))}
    else:
        wanted = list(classes) if classes is not None else (sel.split_classes if zero_shot else None)
        emb = cached_model_embeddings(model, repo, config, split, text_field=text_field, classes=wanted,
                                      batch_size=batch_size, num_workers=num_workers, precision=precision,
                                      device=device, limit=limit, revision=revision, pretrained=pretrained,
                                      cache_dir=cache_dir, progress=progress, storage_options=storage_options,
                                      preprocess=preprocess)
        source = {"model": str(model), **{k: v for k, v in emb.meta.items() if k != "model"}}
    if save_embeddings is not None:
        emb.save(save_embeddings)
        source["saved_embeddings"] = str(save_embeddings)
    return evaluate_embeddings(emb, rows, protocol=protocol, ties=ties, text_field=text_field, zero_shot=zero_shot,
                               limited=limit is not None and embeddings is None, source=source, text_key=text_key)
