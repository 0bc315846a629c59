"""Tri-modal CLIP training on FusionRS: one image encoder for RGB and IR, one text encoder.

The loss combines symmetric InfoNCE terms (CLIP's loss) over (modality, modality) pairs, all
terms sharing ONE learnable temperature (the model's ``logit_scale``). A *recipe* picks the pairs
(see :data:`RECIPES`): the authors' ablation settings ``rgb_text``, ``ir_text``, ``dual_text`` and
``trimodal`` (RGB–text, IR–text, RGB–IR), and ours (``580K-only`` = the trimodal pairs, and
``A-original`` / ``B-iraware`` / ``C-mixed``, which in the release are VLM settings, here CLIP
recipes on IR-aware captions). The loss reduction is explicit: ``sum`` of the terms (the paper's
``L = L(rgb,text) + L(ir,text) + L(rgb,ir)``) or their weighted ``mean`` (the release's
``(rgb_text + ir_text + w * rgb_ir) / (2 + w)``).

Settings come in three sets (:data:`PRESETS`, :data:`OURS`), documented in :class:`ClipTrainConfig`:

- no preset: ours (sum, batch 32, lr 2e-3 for ``tiny`` / 1e-5 otherwise, AdamW betas (0.9, 0.98),
  eps 1e-6, weight decay 0.1 on weight matrices only, cosine with 3 % warmup, gradient clipping at
  1.0, temperature clamped at 100, bf16 where CUDA supports it, seed 0, the last weights kept, the
  streaming loader's order (row groups permuted, then a 1,000-row buffer) and our pixels (reduced-scale
  JPEG decode, antialiased bilinear resize: :mod:`fusionrs_hf.decode`));
- ``--preset paper``: the loss as the paper writes it (sum of the three terms, one temperature);
  the paper gives no optimiser settings, so those stay ours;
- ``--preset rc4-release``: the authors' released run (``train_clip_triplet_ablation.py``,
  ``eval_clip_retrieval.py`` and FusionRS-CLIP ``training_config.json``): trimodal mean loss, lr 5e-6,
  500 linear warmup steps then cosine, batch 128, 3 epochs, fp16 autocast with a gradient scaler where a
  GPU is present, AdamW defaults (betas (0.9, 0.999), eps 1e-8) with weight decay 0.1 on every
  parameter, no gradient clipping, unclamped temperature, seed 42, and:

  * order (``shuffle="global"``): the release's ``DataLoader(shuffle=True, drop_last=True,
    generator=torch.Generator().manual_seed(seed))`` over a map-style dataset
    (:mod:`fusionrs_hf.torch.mapstyle`), a fresh uniform permutation of every train row each epoch, so
    in-batch negatives mix sources as in the release; rows whose caption is empty after the authors'
    normalisation are left out, as the release's trainer does (579,992 of rc4's 580,000);
  * pixels (``preprocess="processor"``): the model's own ``CLIPImageProcessor`` with the PIL backend on
    fully decoded PIL images (``convert("RGB")``, shortest edge bicubic, centre crop, rescale, OpenAI
    mean/std), as the release's ``CLIPProcessor``; used for training, every evaluation, and recorded in
    the checkpoint, so ``fusionrs eval`` on it embeds the same way;
  * checkpoint (``select="release"``): after every epoch the validation loss (the same combined loss,
    mean over batches of 128 of every validation row of the data config in dataset order, last batch
    kept); ``best`` = the strictly lowest so far, ``latest`` = the last epoch; then, as
    ``eval_clip_retrieval.py``, the candidates [best, latest] are scored on validation and the strictly
    higher Mean R wins (a tie keeps ``best``). The released model is ``latest`` (epoch 3). The two
    weights are held as CPU copies; ``metrics.json`` records the per-epoch validation losses
    (``selection``, ``val_losses``), both candidates and what was kept (``selected``).

``select`` may also be ``last`` or ``best-val-recall`` (the best validation Mean R over every epoch end
and the last step: not the release's rule).

Under a preset, its settings are fixed: an option that contradicts one is a one-line
:class:`PresetError`, except the run-size and ablation options (``steps``, ``epochs``,
``batch_size``, ``val_batch_size``, ``seed``, ``recipe`` among the authors' four, ``rgb_ir_weight``,
``ir_view``), which are reported as overrides. ``ir_view`` is the authors' IR-view switch for training: ``translated``
(the stored IR image), ``grayscale`` (the RGB image's luma, ITU-R 601, in all three channels) or
``rgb_duplicate`` (the RGB image again); evaluation always uses the stored IR image.

Every evaluation (periodic, checkpoint selection, final) goes through
:func:`fusionrs_hf.eval.evaluate_model` with ``fusionrs eval``'s defaults, so the final line equals
``fusionrs eval DATA --model OUT/checkpoint --config EVAL_CONFIG --split EVAL_SPLIT``.

Three model families plug in through a small adapter (:class:`ClipAdapter`):

- ``tiny``: a real ``transformers`` ``CLIPModel`` (ViT + text transformer) at width 64 with random
  weights and a byte-level BPE trained on the training captions — nothing is downloaded, which is
  what the tests and CI run;
- a ``transformers`` CLIP checkpoint: a Hub id such as ``openai/clip-vit-base-patch32`` (the
  release's base model; or ``hf:ID``), or a local folder written by ``save_pretrained`` (the
  trainer's own checkpoints too);
- an ``open_clip`` model: any ``open_clip.create_model`` name, e.g. ``ViT-B-32``, optionally
  ``ViT-B-32:laion2b_s34b_b79k`` for pretrained weights (needs the ``[train]`` extra).

The trainer is deliberately thin: the data comes from :func:`fusionrs_hf.torch.make_dataloader`
unchanged (streamed, or map-style for the global shuffle), so the same loop works for a local folder or
a Hub repo.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..decode import CLIP_MEAN, CLIP_STD
from ..errors import UnusableInputError
from ..metrics import KS

MAX_LOGIT_SCALE = math.log(100.0)
"""CLIP clamps the temperature so that logits are at most 100x the cosine similarity."""


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Recipe:
    """Which (modality, modality) pairs enter the loss, and the data config they are meant for."""

    name: str
    terms: tuple[tuple[str, str], ...]
    config: str
    description: str
    release: bool = False
    """One of the authors' CLIP ablation settings (``--loss-setting`` in their trainer)."""


RELEASE_RECIPES: tuple[str, ...] = ("rgb_text", "ir_text", "dual_text", "trimodal")
"""The authors' CLIP loss settings; ``trimodal`` is the released model's."""
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("rgb_text", (("rgb", "caption"),), "default", "the release's rgb_text: RGB–caption", True),
        Recipe("ir_text", (("ir", "caption"),), "default", "the release's ir_text: IR–caption", True),
        Recipe("dual_text", (("rgb", "caption"), ("ir", "caption")), "default",
               "the release's dual_text: RGB–caption, IR–caption", True),
        Recipe("trimodal", (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir")), "default",
               "the release's trimodal: RGB–caption, IR–caption, RGB–IR", True),
        Recipe("580K-only", (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir")), "default",
               "ours, all triplets: RGB–caption, IR–caption, RGB–IR (the trimodal pairs)"),
        Recipe("A-original", (("ir", "caption"),), "iraware", "ours: IR–original caption (a VLM setting in the release)"),
        Recipe("B-iraware", (("ir", "ir_caption"),), "iraware", "ours: IR–IR-aware caption (a VLM setting in the release)"),
        Recipe("C-mixed", (("ir", "caption"), ("ir", "ir_caption"), ("rgb", "caption"), ("rgb", "ir")), "iraware",
               "ours: IR–original, IR–IR-aware, RGB–original, RGB–IR (a VLM setting in the release)"),
    )
}
RECIPE_ALIASES = {"580k": "580K-only", "580k-only": "580K-only", "a": "A-original", "original": "A-original",
                  "b": "B-iraware", "iraware": "B-iraware", "c": "C-mixed", "mixed": "C-mixed",
                  "rgb-text": "rgb_text", "ir-text": "ir_text", "dual-text": "dual_text"}


def get_recipe(name: str) -> Recipe:
    """A recipe by its name (case-insensitive; short aliases ``A``, ``B``, ``C``, ``580k`` work)."""
    key = name if name in RECIPES else RECIPE_ALIASES.get(name.lower())
    if key is None:
        key = next((k for k in RECIPES if k.lower() == name.lower()), None)
    if key is None:
        raise PresetError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")  # a ValueError
    return RECIPES[key]


# --------------------------------------------------------------------------- loss


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


# --------------------------------------------------------------------------- models


def _features(out) -> torch.Tensor:
    """``get_*_features`` returns a tensor in transformers 4 and a pooled output object in 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipAdapter(nn.Module):
    """What the trainer needs from a CLIP-style model, whatever library it comes from.

    ``encode_image`` is used for BOTH RGB and IR (one shared image encoder); ``encode_text``
    takes raw strings and tokenizes them itself; ``logit_scale`` is the single learnable
    temperature; ``image_size``, ``mean`` and ``std`` tell the dataloader how to prepare pixels.
    ``preprocess`` (:data:`PREPROCESSES`) says which pixels the model is trained and evaluated on:
    ``fast`` (ours, :mod:`fusionrs_hf.decode`) or ``processor`` (``image_processor``, a transformers
    image processor with the PIL backend, on fully decoded PIL images: what the authors' CLIP code fed).
    """

    kind = "base"
    image_size: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    preprocess: str = "fast"
    image_processor = None

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def logit_scale(self) -> torch.Tensor:
        raise NotImplementedError

    def save(self, out: str | os.PathLike) -> Path:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class HFClip(ClipAdapter):
    """A ``transformers`` ``CLIPModel`` and its tokenizer (tiny random or a checkpoint)."""

    kind = "transformers"

    def __init__(self, model, tokenizer, *, mean=CLIP_MEAN, std=CLIP_STD, image_processor=None,
                 preprocess: str = "fast"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.preprocess = preprocess
        self.image_size = int(model.config.vision_config.image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.max_length = min(int(getattr(tokenizer, "model_max_length", 77) or 77),
                              int(model.config.text_config.max_position_embeddings))

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tok = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
        return _features(self.model.get_text_features(**tok))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def save(self, out: str | os.PathLike) -> Path:
        out = Path(out)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if self.image_processor is not None:  # preprocessor_config.json: what `processor` pixels are made with
            self.image_processor.save_pretrained(out)
        (out / "fusionrs_clip.json").write_text(json.dumps({"kind": self.kind, "mean": self.mean, "std": self.std,
                                                            "preprocess": self.preprocess}))
        return out


class OpenClip(ClipAdapter):
    """An ``open_clip`` model (``encode_image`` / ``encode_text`` / ``logit_scale`` are its own)."""

    kind = "open_clip"

    def __init__(self, model, tokenizer, name: str, pretrained: str | None = None):
        super().__init__()
        self.model, self.tokenizer, self.name, self.pretrained = model, tokenizer, name, pretrained
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(getattr(model.visual, "image_mean", None) or CLIP_MEAN)
        self.std = tuple(getattr(model.visual, "image_std", None) or CLIP_STD)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    def save(self, out: str | os.PathLike) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), out / "open_clip_model.pt")
        (out / "fusionrs_clip.json").write_text(json.dumps(
            {"kind": self.kind, "name": self.name, "pretrained": self.pretrained}))
        return out


def tiny_clip(texts: Iterable[str], *, image_size: int = 64, patch_size: int = 8, width: int = 64,
              layers: int = 2, heads: int = 2, vocab_size: int = 600, max_length: int = 64,
              seed: int = 0) -> HFClip:
    """A real ``CLIPModel`` (ViT-style image tower + causal text transformer) at small width.

    Random weights (seeded), and a byte-level BPE trained on ``texts`` (the training captions),
    so nothing is downloaded. The text tower pools at the tokenizer's EOS id; that id is set in
    the config so the modern (non-argmax) pooling path is used.
    """
    from ..storage import require

    require("transformers", extra="train", what="--model tiny (a small transformers CLIPModel)")
    require("tokenizers", extra="train", what="--model tiny (its BPE tokenizer)")
    from transformers import CLIPConfig, CLIPModel

    from .tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size, model_max_length=max_length)
    # CLIP's own preprocessing (shortest edge bicubic, centre crop, OpenAI mean/std) at the tiny size
    image_processor = pil_image_processor_class()(size={"shortest_edge": image_size},
                                                  crop_size={"height": image_size, "width": image_size},
                                                  image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    if tokenizer.eos_token_id == 2:  # CLIP's legacy argmax pooling kicks in for eos id 2
        raise RuntimeError("tokenizer EOS id 2 would select CLIP's legacy pooling")
    common = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=heads)
    config = CLIPConfig(
        text_config=dict(common, vocab_size=len(tokenizer), max_position_embeddings=max_length,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(common, image_size=image_size, patch_size=patch_size),
        projection_dim=width,
    )
    torch.manual_seed(seed)
    return HFClip(CLIPModel(config), tokenizer, image_processor=image_processor)


def pil_image_processor_class():
    """transformers' PIL ("slow") ``CLIPImageProcessor``: ``CLIPImageProcessorPil`` in transformers 5,
    ``CLIPImageProcessor`` itself in 4 (where the fast one is a separate class)."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as cls
    except ImportError:  # transformers 4.x
        from transformers import CLIPImageProcessor as cls
    return cls


def load_image_processor(name_or_path: str, *, local_files_only: bool = False):
    """A checkpoint's image processor with the PIL backend, as FusionRS-CLIP's ``modeling.py`` loads it
    (``backend="pil"`` in transformers 5, ``use_fast=False`` in 4): the torchvision ("fast") processors
    resize with other kernels, so their pixels are not the release's."""
    import transformers
    from transformers import AutoImageProcessor

    major = int(transformers.__version__.split(".", 1)[0])
    backend = {"backend": "pil"} if major >= 5 else {"use_fast": False}
    return AutoImageProcessor.from_pretrained(name_or_path, local_files_only=local_files_only, **backend)


PREPROCESSES: tuple[str, ...] = ("fast", "processor")
"""Pixels: ``fast`` (ours: reduced-scale JPEG decode, antialiased bilinear resize; :mod:`fusionrs_hf.decode`)
or ``processor`` (the model's transformers image processor, PIL backend, on fully decoded PIL images: the
authors' ``CLIPProcessor`` preprocessing, bicubic shortest-edge resize and centre crop)."""


def default_preprocess(spec: str) -> str:
    """The pixels a model named by ``spec`` is evaluated with when none is asked for (``fusionrs eval``'s
    ``--preprocess auto``), decided from the spec and its folder alone (the cache key needs it before any
    model is loaded).

    A ``train_clip`` checkpoint: what it recorded (``fusionrs_clip.json``; ``fast`` for checkpoints from
    before the choice was recorded: they were trained and evaluated on it). Any other transformers CLIP
    model, e.g. the released FusionRS-CLIP or ``openai/clip-vit-base-patch32``: ``processor``, its own image
    processor, which is the preprocessing its published numbers were measured with (a folder without a
    ``preprocessor_config.json`` gets ``fast``). open_clip models: ``fast``.
    """
    path = Path(spec)
    if path.is_dir():
        meta = path / "fusionrs_clip.json"
        if meta.is_file():
            info = _read_meta(meta)
            if info.get("kind") == "open_clip":
                return "fast"
            return str(info.get("preprocess", "fast"))
        if (path / "config.json").is_file():
            return "processor" if (path / "preprocessor_config.json").is_file() else "fast"
        return "fast"
    if spec.startswith("hf:") or ("/" in spec and not spec.startswith(("hf-hub:", "open_clip:"))):
        return "processor"
    return "fast"


def hf_clip(name_or_path: str) -> HFClip:
    """A ``transformers`` CLIP checkpoint (Hub id or local folder) with its own tokenizer.

    A Hub id is asked for once first (:func:`fusionrs_hf.storage.check_model`): a typo or an unreachable
    Hub fails in seconds, and a cached model loads from the cache when the Hub is unreachable.
    """
    from ..storage import check_model, require

    require("transformers", extra="train", what=f"CLIP model {name_or_path!r}")
    from transformers import AutoTokenizer, CLIPModel

    cached = check_model(name_or_path, what="CLIP model")
    model = CLIPModel.from_pretrained(name_or_path, local_files_only=cached)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=cached)
    mean, std = CLIP_MEAN, CLIP_STD
    try:
        proc = load_image_processor(name_or_path, local_files_only=cached)
    except Exception:  # noqa: BLE001 - a checkpoint without a processor keeps CLIP's statistics, fast pixels
        proc = None
    meta = Path(name_or_path) / "fusionrs_clip.json"
    if meta.is_file():  # our checkpoint: its own statistics and pixels
        info = _read_meta(meta)
        mean, std = info.get("mean", mean), info.get("std", std)
        preprocess = str(info.get("preprocess", "fast"))
    else:
        if proc is not None:
            mean, std = proc.image_mean, proc.image_std
        preprocess = "processor" if proc is not None else "fast"
    return HFClip(model, tokenizer, mean=mean, std=std, image_processor=proc, preprocess=preprocess)


def open_clip_model(name: str, pretrained: str | None = None) -> OpenClip:
    """An ``open_clip`` model by ``create_model`` name; ``pretrained`` is an open_clip tag or file."""
    from ..storage import MissingExtraError

    if pretrained and Path(pretrained).is_file():
        # open_clip's own loader may call torch.load without weights_only (older releases, which we allow, do):
        # a local file is opened here first with weights_only=True, so one that would run code never reaches it
        _safe_load(Path(pretrained), torchscript_ok=True)

    try:
        import open_clip
    except ModuleNotFoundError as exc:
        import difflib

        near = difflib.get_close_matches(name, ["tiny"], n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? Else " if near else ""
        raise MissingExtraError(
            f"model {name!r} is not 'tiny', a folder or a Hub id (OWNER/NAME), so it is read as an open_clip model "
            f"name: {hint}that needs open_clip, which is not installed: pip install 'fusionrs-hf[clip]' (and a "
            "torchvision built for your torch, see README: Install)", name="open_clip") from exc
    except Exception as exc:  # torchvision failing to import beside this torch
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MissingExtraError(
            f"model {name!r} needs open_clip, which fails to import ({msg}): install a torchvision built for "
            "your torch (see README: Install)", name="open_clip") from exc
    model = open_clip.create_model(name, pretrained=pretrained)
    return OpenClip(model, open_clip.get_tokenizer(name), name, pretrained)


class CheckpointError(UnusableInputError, ValueError):
    """A checkpoint file that cannot be used: not plain weights (``torch.load(weights_only=True)`` refuses it),
    truncated or unreadable, or its ``fusionrs_clip.json`` is not valid. The message names the file; exit 2."""


def load_weights(path: str | os.PathLike) -> dict:
    """A state dict from ``path`` with ``torch.load(weights_only=True)``: tensors and plain containers only.

    Why explicit: before torch 2.6 (the project allows 2.4) ``torch.load`` unpickles anything by default, and
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns the later default off again; a checkpoint folder handed to
    ``fusionrs eval --model DIR`` could then run code. An explicit ``weights_only=True`` holds under both. A file
    the restricted unpickler refuses, a truncated or foreign file, or one that holds no state dict raises
    :class:`CheckpointError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a saved open_clip checkpoint keeps its weights there)")
    state = _safe_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _safe_load(path: Path, *, torchscript_ok: bool = False):
    """``torch.load(path, weights_only=True)`` on the CPU, its refusals as one :class:`CheckpointError` line.

    torch's own refusal message advises re-running with ``weights_only=False``: not repeated here (that is
    what would run the file's code). ``torchscript_ok``: a TorchScript archive (which ``weights_only`` does not
    take) is let through as None, for loaders that open it with ``torch.jit.load``.
    """
    import pickle
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "looks like a TorchScript archive": judged below
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file would run code when loaded
        lines = str(exc).strip().splitlines()
        hint = next((line.strip() for line in lines if "GLOBAL" in line or "Unsupported" in line), "")
        hint = hint.split(" Please use", 1)[0].rstrip(".")  # not torch's advice on allowing the global
        raise CheckpointError(f"{path}: not a plain weights file: torch.load(weights_only=True) refused it"
                              f"{f' ({hint})' if hint else ''}, and it is not loaded any other way") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        text = str(exc).strip()
        if torchscript_ok and "TorchScript" in text:
            return None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable torch weights file ({first[:200]})") from None


def _read_meta(meta: Path) -> dict:
    """A checkpoint's ``fusionrs_clip.json`` as a dict (a broken one is a :class:`CheckpointError` naming it)."""
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{meta}: not a readable JSON file ({why})") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{meta}: a JSON {type(info).__name__}, not an object")
    return info


def build_model(name: str, *, texts: Iterable[str] | None = None, image_size: int = 64,
                pretrained: str | None = None, seed: int = 0) -> ClipAdapter:
    """Resolve a ``--model`` string to an adapter.

    ``tiny`` -> :func:`tiny_clip` (needs ``texts`` to train its tokenizer); ``hf:ID``, a Hub id
    with a slash, or a local folder with ``config.json`` -> :func:`hf_clip`; a folder holding a
    saved open_clip checkpoint -> that model; ``open_clip:NAME``, ``hf-hub:...`` or any other
    name -> :func:`open_clip_model` (``NAME:TAG`` picks pretrained weights).
    """
    if name == "tiny":
        if texts is None:
            raise ValueError("model 'tiny' trains its tokenizer on captions: pass texts=")
        return tiny_clip(texts, image_size=image_size, seed=seed)
    path = Path(name)
    if path.is_dir():
        meta = path / "fusionrs_clip.json"
        info = _read_meta(meta) if meta.is_file() else {}
        if info.get("kind") == "open_clip":
            if not isinstance(info.get("name"), str):
                raise CheckpointError(f"{meta}: an open_clip checkpoint's fusionrs_clip.json names no model ('name')")
            weights = path / "open_clip_model.pt"
            state = load_weights(weights)  # before the model is built: a bad file fails in a second
            adapter = open_clip_model(info["name"], None)
            try:
                adapter.model.load_state_dict(state)
            except RuntimeError as exc:  # other keys or shapes: not this model's weights
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(f"{weights}: not weights of open_clip model {info['name']!r} ({first})") from None
            adapter.pretrained = info.get("pretrained")
            return adapter
        if (path / "config.json").is_file():
            return hf_clip(str(path))
        hint = next((f"; did you mean {path / sub}?" for sub in ("checkpoint", "last_checkpoint")
                     if (path / sub / "fusionrs_clip.json").is_file() or (path / sub / "config.json").is_file()), "")
        raise NotAModelError(f"{name}: a folder, but neither a transformers CLIP checkpoint nor a saved open_clip "
                             f"one{hint}")
    if name.startswith("hf:"):
        return hf_clip(name[3:])
    if name.startswith("open_clip:"):
        name = name[len("open_clip:"):]
    elif "/" in name and not name.startswith("hf-hub:"):
        return hf_clip(name)
    if pretrained is None and ":" in name and not name.startswith("hf-hub:"):
        name, pretrained = name.split(":", 1)
    return open_clip_model(name, pretrained)


# --------------------------------------------------------------------------- data


def make_loader(repo: str, config: str, split: str, *, batch_size: int, image_size: int, mean, std,
                shuffle: bool | str = False, seed: int = 0, num_workers: int = 0, drop_last: bool = False,
                storage_options: dict | None = None, image_processor=None, map_style: bool = False,
                usable_captions_only: bool = False):
    """:func:`fusionrs_hf.torch.make_dataloader` with the model's pixel statistics: streamed
    (``shuffle`` True/False), or map-style (``shuffle="global"``: the release's global permutation per epoch;
    ``map_style=True`` unshuffled), with the model's image processor's pixels when ``image_processor`` is given."""
    from ..splits import explain_missing
    from ..torch import make_dataloader

    extra = {"usable_captions_only": True} if usable_captions_only else {}
    try:
        return make_dataloader(repo, config=config, split=split, batch_size=batch_size, num_workers=num_workers,
                               image_size=image_size, shuffle=shuffle, seed=seed, mean=tuple(mean), std=tuple(std),
                               drop_last=drop_last, storage_options=storage_options, image_processor=image_processor,
                               map_style=map_style, **extra)
    except FileNotFoundError as exc:  # say which splits the config does have
        better = (explain_missing(repo, config, split, storage_options=storage_options)
                  if isinstance(repo, (str, os.PathLike)) else None)
        if better is None:
            raise
        raise better from exc


def read_captions(repo: str, config: str, split: str = "train", limit: int = 50_000,
                  storage_options: dict | None = None) -> list[str]:
    """Captions and IR-aware captions of a split (no image decode), to train a local tokenizer."""
    from .. import load

    ds = load(config, split=split, streaming=True, repo=repo, storage_options=storage_options
              ).select_columns(["caption", "ir_caption"])
    out: list[str] = []
    for row in ds:
        out.extend(t for t in (row["caption"], row["ir_caption"]) if t)
        if len(out) >= limit:
            break
    if not out:
        from .errors import NoTrainingDataError

        raise NoTrainingDataError(f"{repo}: config {config!r} split {split!r} has no captions to train a tokenizer on")
    return out


# --------------------------------------------------------------------------- settings and presets


IR_VIEWS: tuple[str, ...] = ("translated", "grayscale", "rgb_duplicate")
PRECISIONS: tuple[str, ...] = ("auto", "fp16", "bf16", "fp32")
"""Training autocast: ``auto`` is bf16 where CUDA supports it (ours); ``fp16`` adds a gradient scaler.
Every choice is plain fp32 on a CPU (as the release's trainer, which autocasts on CUDA only)."""
SCHEDULES: tuple[str, ...] = ("cosine", "release-cosine")
SELECTIONS: tuple[str, ...] = ("last", "best-val-recall", "release")
"""Which weights end up in ``OUT/checkpoint``: ``last``; ``best-val-recall`` (the best validation Mean R over
every epoch end and the last step); ``release`` (the authors': validation loss after every epoch, ``best`` =
the strictly lowest so far, ``latest`` = the last epoch; then the higher validation Mean R of [best, latest],
ties keeping ``best``)."""
SHUFFLE_MODES: tuple[str, ...] = ("stream", "global")
"""Training order: ``stream`` (ours: the streaming reader's row-group permutation + 1,000-row buffer) or
``global`` (the release's: a uniform permutation of every row each epoch, map-style; rows without a usable
caption left out, as the release's trainer does)."""
DECAY_ON: tuple[str, ...] = ("matrices", "all")

OURS: dict[str, object] = {
    "recipe": "580K-only", "loss_reduction": "sum", "rgb_ir_weight": 1.0, "epochs": 1, "batch_size": 32,
    "lr": None, "weight_decay": 0.1, "weight_decay_on": "matrices", "adam_betas": (0.9, 0.98), "adam_eps": 1e-6,
    "schedule": "cosine", "warmup_ratio": 0.03, "warmup_steps": None, "grad_clip": 1.0, "clamp_temperature": True,
    "precision": "auto", "seed": 0, "select": "last", "ir_view": "translated", "dedupe_captions": False,
    "shuffle": "stream", "preprocess": "fast", "val_batch_size": None,
}
"""The settings without a preset (what this package chose; ``lr`` None = 2e-3 for ``tiny``, 1e-5 otherwise)."""
SETTINGS: tuple[str, ...] = tuple(OURS)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    settings: dict
    """What the preset fixes (the rest stays :data:`OURS`)."""
    free: frozenset = frozenset()
    """Fixed settings a user may still change (reported as overrides); any other change is an error."""


RUN_SIZE = frozenset({"steps", "epochs", "batch_size", "seed", "val_batch_size"})
ABLATIONS = frozenset({"recipe", "rgb_ir_weight", "ir_view"})
PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "paper", "the paper's loss: L = L(rgb,text) + L(ir,text) + L(rgb,ir), one shared temperature "
                 "(the paper states no optimiser settings: those are ours)",
        {"recipe": "trimodal", "loss_reduction": "sum", "rgb_ir_weight": 1.0},
        frozenset(RUN_SIZE | ABLATIONS)),
    "rc4-release": Preset(
        "rc4-release", "the authors' released run (train_clip_triplet_ablation.py, FusionRS-CLIP training_config.json)",
        {"recipe": "trimodal", "loss_reduction": "mean", "rgb_ir_weight": 1.0, "epochs": 3, "batch_size": 128,
         "lr": 5e-6, "weight_decay": 0.1, "weight_decay_on": "all", "adam_betas": (0.9, 0.999), "adam_eps": 1e-8,
         "schedule": "release-cosine", "warmup_ratio": None, "warmup_steps": 500, "grad_clip": 0.0,
         "clamp_temperature": False, "precision": "fp16", "seed": 42, "select": "release",
         "ir_view": "translated", "dedupe_captions": False, "shuffle": "global", "preprocess": "processor",
         "val_batch_size": 128},
        frozenset(RUN_SIZE | ABLATIONS)),
}


class NotAModelError(UnusableInputError, ValueError):
    """A model folder that holds no model (exit 2 in the CLI); e.g. a run's ``--out`` folder, not its checkpoint."""


class PresetError(ValueError):
    """A preset name or an option that contradicts a preset's fixed setting (one line)."""


@dataclass
class ClipTrainConfig:
    """Everything one run needs; the command line maps onto it one flag per field.

    The training settings (:data:`SETTINGS`) default to None, meaning "the preset's, else ours"
    (:data:`OURS`); :func:`resolve_config` fills them in, and :func:`train_clip` records the
    resolved values (and any override of a preset) in ``metrics.json``.
    """

    data: str
    preset: str | None = None
    """None (ours), ``paper`` or ``rc4-release`` (see :data:`PRESETS`)."""
    config: str | None = None
    recipe: str | None = None
    model: str = "tiny"
    pretrained: str | None = None
    out: str = "runs/clip"
    steps: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    weight_decay_on: str | None = None
    """``matrices`` (ours: weights of dim >= 2 only) or ``all`` (the release: AdamW over every parameter)."""
    adam_betas: tuple[float, float] | None = None
    adam_eps: float | None = None
    schedule: str | None = None
    """``cosine`` (ours: linear warmup (step+1)/W, then cosine) or ``release-cosine`` (the release's
    LambdaLR: ``max(1e-8, step/W)``, then cosine over the remaining steps)."""
    warmup_ratio: float | None = None
    warmup_steps: int | None = None
    loss_reduction: str | None = None
    rgb_ir_weight: float | None = None
    ir_view: str | None = None
    grad_clip: float | None = None
    """Max gradient norm; 0 for none."""
    clamp_temperature: bool | None = None
    precision: str | None = None
    seed: int | None = None
    select: str | None = None
    """``last``, ``best-val-recall`` (Mean R on validation at every epoch end and at the last step) or
    ``release`` (see :data:`SELECTIONS`)."""
    dedupe_captions: bool | None = None
    shuffle: str | None = None
    """``stream`` (ours) or ``global`` (the release's; see :data:`SHUFFLE_MODES`)."""
    preprocess: str | None = None
    """``fast`` (ours) or ``processor`` (the model's image processor on PIL images; see :data:`PREPROCESSES`);
    used for training, every evaluation, and recorded in the checkpoint for ``fusionrs eval``."""
    val_batch_size: int | None = None
    """Batch size of the validation-loss pass of ``select="release"`` (None: ``batch_size``; the release: 128)."""
    image_size: int = 64
    eval_split: str = "validation"
    eval_config: str | None = None
    """None: the training config, or ``default`` when that lacks ``eval_split`` (see :mod:`fusionrs_hf.splits`)."""
    eval_text: str = "caption"
    eval_protocol: str = "auto"
    eval_ties: str = "pessimistic"
    eval_batch_size: int | None = None
    """None: ``fusionrs eval``'s default (so the final line equals ``fusionrs eval`` on the checkpoint)."""
    eval_precision: str = "auto"
    eval_limit: int | None = None
    eval_every: int = 0
    log_every: int = 10
    num_workers: int = 0
    device: str | None = None
    storage_options: dict | None = None
    """fsspec options for the data's store (``endpoint_url``, ``key``, ...; the Hub: ``token``, ``endpoint``).
    Credentials are left out of ``metrics.json`` (:func:`fusionrs_hf.storage.public_options`)."""


def resolve_config(cfg: ClipTrainConfig) -> tuple[ClipTrainConfig, list[str]]:
    """``cfg`` with every training setting filled in (preset, else ours), and the overrides made.

    Raises :class:`PresetError` for an unknown preset, an option that contradicts a fixed setting
    of the preset, a recipe of ours under a preset, or both warmup forms given.
    """
    preset = None
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise PresetError(f"train_clip: unknown preset {cfg.preset!r}; expected one of {', '.join(PRESETS)}")
        preset = PRESETS[cfg.preset]
    if cfg.warmup_ratio is not None and cfg.warmup_steps is not None:
        raise PresetError("train_clip: give --warmup-ratio or --warmup-steps, not both")
    values = dict(OURS)
    if preset:
        values.update(preset.settings)
    overrides: list[str] = []
    for name in SETTINGS:
        given = getattr(cfg, name)
        if given is None:
            continue
        if isinstance(given, list):
            given = tuple(given)
        if name == "recipe":
            given = get_recipe(given).name
        if preset and name in preset.settings and given != preset.settings[name]:
            if name not in preset.free:
                raise PresetError(
                    f"train_clip: --preset {preset.name} sets {name} = {_show(preset.settings[name])}; "
                    f"{name} = {_show(given)} contradicts it (drop --preset to choose every setting yourself)")
            overrides.append(f"{name} {_show(given)} (preset {_show(preset.settings[name])})")
        values[name] = given
    if cfg.warmup_steps is not None:
        values["warmup_ratio"] = None
    elif cfg.warmup_ratio is not None:
        values["warmup_steps"] = None
    recipe = get_recipe(values["recipe"])
    if preset and not recipe.release:
        raise PresetError(f"train_clip: recipe {recipe.name!r} is ours (in the release A/B/C are VLM settings); "
                          f"under --preset {preset.name} use one of {', '.join(RELEASE_RECIPES)}")
    for name, allowed in (("loss_reduction", LOSS_REDUCTIONS), ("ir_view", IR_VIEWS), ("precision", PRECISIONS),
                          ("schedule", SCHEDULES), ("select", SELECTIONS), ("weight_decay_on", DECAY_ON),
                          ("shuffle", SHUFFLE_MODES), ("preprocess", PREPROCESSES)):
        if values[name] not in allowed:
            raise PresetError(f"train_clip: {name} must be one of {', '.join(allowed)}, got {values[name]!r}")
    if values["batch_size"] is not None and values["batch_size"] < 2:
        raise PresetError(f"train_clip: batch_size must be >= 2 (a contrastive loss compares a row with the "
                          f"others of its batch), got {values['batch_size']}")
    for name in ("steps", "epochs"):
        v = values.get(name, getattr(cfg, name, None))
        if v is not None and v < 1:
            raise PresetError(f"train_clip: {name} must be >= 1, got {v}")
    if values["val_batch_size"] is not None and values["val_batch_size"] < 1:
        raise PresetError(f"train_clip: val_batch_size must be >= 1, got {values['val_batch_size']}")
    if values["rgb_ir_weight"] < 0:
        raise PresetError(f"train_clip: rgb_ir_weight must be non-negative, got {values['rgb_ir_weight']}")
    return replace(cfg, **values), overrides


def _show(v) -> str:
    return repr(list(v)) if isinstance(v, tuple) else repr(v)


def _param_groups(model: nn.Module, weight_decay: float, on: str = "matrices"):
    params = [p for p in model.parameters() if p.requires_grad]
    if on == "all":  # the release: AdamW(model.parameters(), weight_decay=...)
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_with_warmup(optimizer, total_steps: int, warmup_ratio: float | None = None, *,
                       warmup_steps: int | None = None):
    """Ours: linear warmup ``(step + 1) / W`` over ``warmup_ratio`` of the steps (or ``warmup_steps``),
    then cosine decay to zero."""
    if warmup_steps is not None:
        warmup = int(warmup_steps)
    else:
        warmup = max(1, int(round(warmup_ratio * total_steps))) if warmup_ratio else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def release_schedule(optimizer, total_steps: int, warmup_steps: int):
    """The release's ``lr_lambda``: ``max(1e-8, step / W)`` for ``step < W``, then
    ``0.5 * (1 + cos(pi * (step - W) / max(1, total - W)))``."""

    def lr_lambda(step: int) -> float:
        if step < warmup_steps:
            return max(1e-8, step / max(1, warmup_steps))
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def ir_view_transform(rgb: torch.Tensor, ir: torch.Tensor, view: str, mean: Sequence[float],
                      std: Sequence[float]) -> torch.Tensor:
    """The second visual view: the stored IR (``translated``), the RGB luma (``grayscale``) or the RGB again.

    ``grayscale`` undoes the pixel normalisation, takes ITU-R 601 luma (PIL's ``convert("L")``
    weights, without its rounding to 8 bits) into all three channels and normalises again. The release's
    ablation converts the decoded image before its processor resizes it; the resize is linear and luma a
    per-pixel weighted sum, so the two orders differ only by that 8-bit rounding (at most half a grey
    level) and by the resize's clipping to 0..255.
    """
    if view == "translated":
        return ir
    if view == "rgb_duplicate":
        return rgb
    if view != "grayscale":
        raise ValueError(f"unknown ir_view {view!r}; expected one of {', '.join(IR_VIEWS)}")
    m = torch.tensor(mean, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    pix = rgb * sd + m
    luma = (0.299 * pix[:, 0:1] + 0.587 * pix[:, 1:2] + 0.114 * pix[:, 2:3]).expand_as(pix)
    return (luma - m) / sd


class Training:
    """The optimisation objects of one run, built from a resolved config (what the presets set).

    ``optimizer``, ``scheduler``, ``scaler`` (a ``torch.amp.GradScaler``, enabled for fp16 on
    CUDA), ``amp_dtype``, ``grad_clip`` (None: no clipping), ``clamp_temperature``, and
    :meth:`loss` / :meth:`step` / :meth:`val_loss`.
    """

    def __init__(self, cfg: ClipTrainConfig, model: ClipAdapter, total_steps: int, *, lr: float,
                 device: torch.device | None = None):
        self.cfg, self.model, self.total_steps, self.lr = cfg, model, int(total_steps), float(lr)
        self.recipe = get_recipe(cfg.recipe)
        self.device = device or model.device
        self.optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay, cfg.weight_decay_on), lr=lr,
                                           betas=tuple(cfg.adam_betas), eps=cfg.adam_eps)
        if cfg.schedule == "release-cosine":
            self.scheduler = release_schedule(self.optimizer, self.total_steps, int(cfg.warmup_steps or 0))
        else:
            self.scheduler = cosine_with_warmup(self.optimizer, self.total_steps, cfg.warmup_ratio,
                                                warmup_steps=cfg.warmup_steps)
        cuda = self.device.type == "cuda"
        if not cuda or cfg.precision == "fp32":
            self.amp_dtype = None
        elif cfg.precision == "fp16":
            self.amp_dtype = torch.float16
        elif cfg.precision == "bf16":
            self.amp_dtype = torch.bfloat16
        else:  # auto (ours)
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cuda and cfg.precision == "fp16")
        self.grad_clip = float(cfg.grad_clip) if cfg.grad_clip else None
        self.clamp_temperature = bool(cfg.clamp_temperature)
        self.weights = {("rgb", "ir"): float(cfg.rgb_ir_weight)}

    def loss(self, emb: dict[str, torch.Tensor], rows=None, positives=None, *, min_rows: int = 2):
        return trimodal_loss(emb, self.model.logit_scale, self.recipe.terms, rows, positives,
                             reduction=self.cfg.loss_reduction, weights=self.weights, clamp=self.clamp_temperature,
                             min_rows=min_rows)

    def autocast(self):
        """The training autocast (also the release's for its validation pass)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def forward(self, batch: dict, *, min_rows: int = 2) -> tuple[torch.Tensor, dict[str, float]]:
        """The recipe's loss on a loader batch (call inside :meth:`autocast`; no gradient step)."""
        model, cfg, device = self.model, self.cfg, self.device
        rgb, ir = batch["rgb"].to(device, non_blocking=True), batch["ir"].to(device, non_blocking=True)
        ir = ir_view_transform(rgb, ir, cfg.ir_view, model.mean, model.std)
        # one image encoder for both modalities: a single forward over the stacked batch
        img = model.encode_image(torch.cat([rgb, ir]))
        emb = {"rgb": img[: len(rgb)], "ir": img[len(rgb):]}
        rows, positives = {}, {}
        needed = {m for t in self.recipe.terms for m in t}
        if "caption" in needed:
            emb["caption"] = model.encode_text(batch["caption"])
            if cfg.dedupe_captions:
                positives["caption"] = same_text(batch["caption"], device)
        if "ir_caption" in needed:
            if cfg.dedupe_captions:
                positives["ir_caption"] = same_text(batch["ir_caption"], device)
            have = [i for i, t in enumerate(batch["ir_caption"]) if t]
            if len(have) >= max(1, min_rows):
                emb["ir_caption"] = model.encode_text([batch["ir_caption"][i] for i in have])
                rows["ir_caption"] = torch.tensor(have, dtype=torch.long, device=device)
        return self.loss({k: v.float() for k, v in emb.items()}, rows, positives, min_rows=min_rows)

    def val_loss(self, loader: Iterable[dict]) -> dict:
        """The release's validation loss: the same combined loss on every batch of ``loader`` (eval mode,
        no gradients, the training autocast), averaged over batches, each batch's value counting once
        (a short last batch too; a one-row term is 0, as the release computes it). Returns ``loss``,
        ``components`` (each term's mean over the batches that had it) and ``batches``."""
        was = self.model.training
        self.model.eval()
        losses: list[float] = []
        parts_seen: dict[str, list[float]] = {}
        try:
            with torch.inference_mode(), self.autocast():
                for batch in loader:
                    if not batch["sample_id"]:
                        continue  # every row of the batch was skipped for an unreadable image
                    loss, parts = self.forward(batch, min_rows=1)
                    losses.append(float(loss))
                    for k, v in parts.items():
                        parts_seen.setdefault(k, []).append(float(v))
        finally:
            self.model.train(was)
        if not losses:
            raise ValueError("the validation-loss pass got no batch")
        return {"loss": sum(losses) / len(losses), "batches": len(losses),
                "components": {k: sum(v) / len(v) for k, v in parts_seen.items()}}

    def step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimizer step on a loader batch; returns the loss and its terms."""
        model = self.model
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, parts = self.forward(batch)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.clamp_temperature:
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        return loss, parts


def default_lr(model: str) -> float:
    """Ours when no lr is set: 2e-3 for ``tiny`` (trained from scratch), 1e-5 for pretrained models."""
    return 2e-3 if model == "tiny" else 1e-5


# --------------------------------------------------------------------------- train


def train_clip(cfg: ClipTrainConfig, *, model: ClipAdapter | None = None,
               log_fn: Callable[[dict], None] | None = None) -> dict:
    """Train, evaluate on ``cfg.eval_split`` and save a checkpoint under ``cfg.out``.

    Returns ``{"metrics": ..., "result": EvalResult, "line": ..., "history": [...], "checkpoint":
    path, "eval_config": ..., "settings": ..., "overrides": [...], "selection": [...], "selected": {...},
    "candidates": [...], ...}``; the history holds one record per logged step (``step``, ``loss``, each
    term, ``logit_scale``, ``lr``). ``line`` is :meth:`fusionrs_hf.eval.EvalResult.line` of the final
    evaluation. ``selection`` holds one record per checkpoint-selection point (``best-val-recall``: the
    validation Mean R; ``release``: the validation loss and its terms), ``selected`` what was kept
    (``release``: ``checkpoint`` ``best`` or ``latest``, its epoch, step, validation loss and Mean R) and
    ``candidates`` (``release``) the two weights compared by validation Mean R.

    One process: in one of several (torchrun's ``WORLD_SIZE > 1``, an initialised process group) it raises
    :class:`fusionrs_hf.train.errors.DistributedRunError` before anything is read (no DDP here: each process
    would train its own model on its share of the rows and score part of the split).

    Settings: :func:`resolve_config` (a bad preset/option combination raises :class:`PresetError`
    before anything is read). Missing splits (checked from the shard listing before anything is
    built or trained): the data config must have a train split. Evaluation runs on
    ``cfg.eval_config`` when given (it must have ``eval_split``); otherwise on the data config, or,
    when that has no ``eval_split`` (rc4's ``iraware`` is train only), on ``default`` of the same
    split, said in one stderr line and returned as ``eval_config``. ``select="best-val-recall"`` and
    ``select="release"`` need a validation split the same way (``release`` also for its validation
    loss, over every validation row of the data config with a usable caption, not only the evaluation
    representatives). An evaluation protocol the rows cannot follow (``rc4`` on rows without release
    flags) raises :class:`fusionrs_hf.eval.ProtocolError` before training. ``preprocess="processor"``
    with a model that has no transformers image processor (open_clip) raises :class:`PresetError` before
    training. Any other miss raises :class:`fusionrs_hf.splits.MissingSplitError`, as does
    ``eval_text="ir_caption"`` on an eval split without IR-aware captions.
    """
    from ..eval import DEFAULT_BATCH_SIZE, check_ties, evaluate_model, read_eval_rows, select
    from ..splits import MissingSplitError, repo_splits
    from ..storage import public_options
    from .errors import refuse_distributed

    refuse_distributed("train_clip")  # one process only: under torchrun each would train its own model
    cfg, overrides = resolve_config(cfg)
    recipe = get_recipe(cfg.recipe)
    config = cfg.config or recipe.config
    so = cfg.storage_options
    listing = repo_splits(cfg.data, storage_options=so)
    listing.require(config, "train", who="train_clip")
    eval_config = listing.eval_config(cfg.eval_config or config, cfg.eval_split, explicit=cfg.eval_config is not None,
                                      who="train_clip")
    select_config = val_config = None
    if cfg.select in ("best-val-recall", "release"):
        select_config = (eval_config if cfg.eval_split == "validation" else
                         listing.eval_config(cfg.eval_config or config, "validation",
                                             explicit=cfg.eval_config is not None, who="train_clip"))
    if cfg.select == "release":  # the release's validation loss: the training data's own validation rows
        val_config = config if listing.has(config, "validation") else select_config
    if cfg.eval_text == "ir_caption" and not listing.has_ir_captions(eval_config, cfg.eval_split):
        raise MissingSplitError(
            f"train_clip: eval_text 'ir_caption' needs IR-aware captions, but no row of {eval_config!r}/"
            f"{cfg.eval_split} in {cfg.data} has one (config 'iraware' has: {', '.join(listing.splits('iraware')) or 'no split'})",
            repo=cfg.data, config=eval_config, split=cfg.eval_split, available=listing.splits("iraware"))
    # the eval rows are read before anything is built (a protocol they cannot follow fails now)
    eval_rows = read_eval_rows(cfg.data, eval_config, cfg.eval_split, storage_options=so)
    select_rows = None
    if select_config is not None:
        select_rows = (eval_rows if (select_config, "validation") == (eval_config, cfg.eval_split)
                       else read_eval_rows(cfg.data, select_config, "validation", storage_options=so))
    check_ties(cfg.eval_ties)
    for rows in (eval_rows, select_rows):  # a protocol these rows cannot follow fails now, not after training
        if rows is not None:
            select(rows, cfg.eval_protocol, cfg.eval_text)
    if overrides:
        print(f"train_clip: --preset {cfg.preset} with {'; '.join(overrides)}", file=sys.stderr, flush=True)
    torch.manual_seed(cfg.seed)
    if model is None:
        texts = read_captions(cfg.data, config, storage_options=so) if cfg.model == "tiny" else None
        model = build_model(cfg.model, texts=texts, image_size=cfg.image_size, pretrained=cfg.pretrained,
                            seed=cfg.seed)
    image_processor = None
    if cfg.preprocess == "processor":
        image_processor = getattr(model, "image_processor", None)
        if image_processor is None:
            raise PresetError(f"train_clip: preprocess 'processor' (the release's CLIPProcessor pixels) needs a "
                              f"transformers CLIP model with an image processor; {cfg.model!r} ({model.kind}) has "
                              "none (choose a transformers CLIP model, or drop --preset for our pixels)")
    model.preprocess = cfg.preprocess  # every evaluation below and the saved checkpoint use these pixels
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg.model)

    global_order = cfg.shuffle == "global"
    pixels = dict(image_size=model.image_size, mean=model.mean, std=model.std, image_processor=image_processor,
                  num_workers=cfg.num_workers, storage_options=so)
    train_loader = make_loader(cfg.data, config, "train", batch_size=cfg.batch_size,
                               shuffle="global" if global_order else True, seed=cfg.seed, drop_last=True,
                               usable_captions_only=global_order, **pixels)
    if len(train_loader) == 0:  # drop_last, as the release: a split smaller than one batch trains nothing
        from ..secrets import scrub

        raise PresetError(scrub(f"train_clip: config {config!r} of {cfg.data} has fewer train rows than one "
                                f"batch of {cfg.batch_size} per process (whole batches only, as the release; with "
                                "several processes each reads its share); lower --batch-size"))
    val_loader = None
    if val_config is not None:  # the release's val_loader: dataset order, batch 128, drop_last False
        val_loader = make_loader(cfg.data, val_config, "validation", batch_size=cfg.val_batch_size or cfg.batch_size,
                                 shuffle=False, map_style=True, seed=cfg.seed, drop_last=False,
                                 usable_captions_only=True, **pixels)
    eval_kw = dict(protocol=cfg.eval_protocol, ties=cfg.eval_ties, text_field=cfg.eval_text,
                   batch_size=cfg.eval_batch_size or DEFAULT_BATCH_SIZE, num_workers=cfg.num_workers,
                   precision=cfg.eval_precision, limit=cfg.eval_limit, storage_options=so)

    def run_eval(rows, conf: str, split: str, ties: str | None = None):
        return evaluate_model(model, cfg.data, config=conf, split=split, rows=rows,
                              **{**eval_kw, **({"ties": ties} if ties else {})})

    # the release's selection scores with torch.topk (eval_clip_retrieval.py): ties in gallery order
    select_ties = "topk" if cfg.select == "release" else None

    total = cfg.steps if cfg.steps is not None else max(1, cfg.epochs * len(train_loader))
    training = Training(cfg, model, total, lr=lr, device=device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    selection: list[dict] = []
    candidates: list[dict] = []
    best: dict = {}
    log_path = out / "train_log.jsonl"
    log_file = log_path.open("w")
    emit = log_fn or (lambda rec: print(json.dumps(rec), file=sys.stderr))

    def cpu_state() -> dict:
        # a copy off the accelerator: at most two (best and latest) are held at once, in host memory
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def note(rec: dict) -> None:
        selection.append(rec)
        log_file.write(json.dumps({"step": step, "select": rec}) + "\n")
        emit({"step": step, "select": rec})

    def consider(epoch_done: int) -> None:
        """best-val-recall: Mean R on validation; the first best (strictly greater) wins."""
        res = run_eval(select_rows, select_config, "validation")
        note({"step": step, "epoch": epoch_done, "select_mean_r": res.metrics["mean_r"]})
        if not best or res.metrics["mean_r"] > best["mean_r"]:
            best.update(mean_r=res.metrics["mean_r"], step=step, epoch=epoch_done, result=res, state=cpu_state())

    def validate(epoch_done: int) -> None:
        """release: the validation loss after an epoch; ``best`` is the strictly lowest so far (the
        release saves latest.pt every epoch and best.pt when ``val_loss < best``)."""
        v = training.val_loss(val_loader)
        note({"step": step, "epoch": epoch_done, "val_loss": v["loss"], "val_components": v["components"],
              "val_batches": v["batches"]})
        if not best or v["loss"] < best["val_loss"]:
            best.update(val_loss=v["loss"], step=step, epoch=epoch_done, state=cpu_state())

    epoch_end = {"best-val-recall": consider, "release": validate}.get(cfg.select)
    step, epoch, t0 = 0, 0, time.time()
    while step < total:
        got_batch = False
        train_loader.set_epoch(epoch)
        for batch in train_loader:
            got_batch = True
            loss, parts = training.step(batch)
            step += 1
            if step == 1 or step % max(1, cfg.log_every) == 0 or step == total:
                rec = {"step": step, "epoch": epoch, "loss": float(loss.detach()), **parts,
                       "logit_scale": float(model.logit_scale.detach().exp()),
                       "lr": training.scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 2)}
                history.append(rec)
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                emit(rec)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                rec = {"step": step, "eval": run_eval(eval_rows, eval_config, cfg.eval_split).line()}
                log_file.write(json.dumps(rec) + "\n")
                emit(rec)
            if step >= total:
                break
        else:
            if got_batch and epoch_end is not None and step < total:
                epoch_end(epoch + 1)  # an epoch ended before the last step
        if not got_batch:
            from .errors import NoTrainingDataError

            raise NoTrainingDataError(f"{cfg.data}: config {config!r} train split gave no full batch of "
                                      f"{cfg.batch_size}")
        epoch += 1

    result = None
    selected = {"step": step, "epoch": epoch}
    if cfg.select == "best-val-recall":
        consider(epoch)
        selected = {"step": best["step"], "epoch": best["epoch"], "select_mean_r": best["mean_r"]}
        if best["step"] != step:
            model.save(out / "last_checkpoint")
            model.load_state_dict(best["state"])
        if (select_config, "validation") == (eval_config, cfg.eval_split):
            result = best["result"]  # the same weights, rows and code: no second pass
    elif cfg.select == "release":
        validate(epoch)
        latest = {"name": "latest", "step": step, "epoch": epoch, "val_loss": selection[-1]["val_loss"]}
        first = {"name": "best", "step": best["step"], "epoch": best["epoch"], "val_loss": best["val_loss"]}
        if best["step"] == step:  # best is latest: one set of weights, one evaluation (a tie keeps best)
            res_best = res_latest = run_eval(select_rows, select_config, "validation", select_ties)
            winner = "best"
        else:  # eval_clip_retrieval.py: candidates [best, latest], a strictly higher Mean R replaces best
            res_latest = run_eval(select_rows, select_config, "validation", select_ties)
            latest_state = cpu_state()
            model.load_state_dict(best["state"])
            res_best = run_eval(select_rows, select_config, "validation", select_ties)
            winner = "latest" if res_latest.metrics["mean_r"] > res_best.metrics["mean_r"] else "best"
            model.load_state_dict(latest_state)
            if winner == "best":
                model.save(out / "last_checkpoint")
                model.load_state_dict(best["state"])
            del latest_state
        candidates = [{**first, "mean_r": res_best.metrics["mean_r"]}, {**latest, "mean_r": res_latest.metrics["mean_r"]}]
        chosen = candidates[0] if winner == "best" else candidates[1]
        selected = {"checkpoint": winner, "step": chosen["step"], "epoch": chosen["epoch"],
                    "val_loss": chosen["val_loss"], "select_mean_r": chosen["mean_r"]}
        selected["select_ties"] = select_ties
        rec = {"step": step, "candidates": candidates, "selected": winner, "ties": select_ties}
        log_file.write(json.dumps({"step": step, "select": rec}) + "\n")
        emit({"step": step, "select": rec})
        if (select_config, "validation") == (eval_config, cfg.eval_split) and cfg.eval_ties == select_ties:
            result = res_best if winner == "best" else res_latest  # the same weights, rows, code and ties
    best.pop("state", None)
    if result is None:
        result = run_eval(eval_rows, eval_config, cfg.eval_split)
    line = result.line()
    log_file.write(json.dumps({"step": step, "eval": line}) + "\n")
    log_file.close()
    ckpt = model.save(out / "checkpoint")
    settings = {name: getattr(cfg, name) for name in SETTINGS}
    val_losses = [{"epoch": r["epoch"], "step": r["step"], "val_loss": r["val_loss"]} for r in selection
                  if "val_loss" in r]
    run = {"config": {**asdict(cfg), "storage_options": public_options(so)}, "preset": cfg.preset, "settings": settings, "overrides": overrides,
           "recipe": recipe.name, "data_config": config, "eval_config": eval_config, "eval_split": cfg.eval_split,
           "lr": lr, "steps": step, "selected": selected, "selection": selection, "candidates": candidates,
           "val_losses": val_losses, "metrics": result.metrics, "line": line, "eval": result.to_dict()}
    from ..atomic import atomic_write
    from ..secrets import scrub

    # whole or not at all, and no credential of a repo URL (config.data, eval.repo)
    atomic_write(out / "metrics.json", scrub(json.dumps(run, indent=2, default=str)))
    return {"metrics": result.metrics, "result": result, "line": line, "history": history, "checkpoint": str(ckpt),
            "recipe": recipe.name, "data_config": config, "eval_config": eval_config, "eval_split": cfg.eval_split,
            "steps": step, "settings": settings, "overrides": overrides, "selection": selection,
            "selected": selected, "candidates": candidates, "val_losses": val_losses, "model": model,
            "training": training}


def final_line(metrics, ks: Sequence[int] = KS) -> dict[str, float]:
    """The one-line JSON summary the command line prints (an ``EvalResult``'s :meth:`line`, or the
    R@K, means and counts of a flat metrics dict)."""
    if hasattr(metrics, "line"):
        return metrics.line(ks)
    keep = [k for k in metrics if k.endswith(tuple(f"_r{x}" for x in ks))]
    keep += [k for k in ("mean_r", "text_mean", "pair_mean", "mean_r_all6", "chance_r1", "n_images", "n_texts")
             if k in metrics]
    return {k: round(float(metrics[k]), 4) for k in keep}
