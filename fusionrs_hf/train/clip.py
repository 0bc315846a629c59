"""Tri-modal CLIP training on FusionRS: one image encoder for RGB and IR, one text encoder.

The loss is the paper's ``L = L(rgb, text) + L(ir, text) + L(rgb, ir)``, each term the symmetric
InfoNCE of CLIP, all terms sharing ONE learnable temperature (the model's ``logit_scale``). A
*recipe* picks which pairs enter the sum (see :data:`RECIPES`), so the paper's data settings are
one flag apart. Three model families plug in through a small adapter (:class:`ClipAdapter`):

- ``tiny``: a real ``transformers`` ``CLIPModel`` (ViT + text transformer) at width 64 with random
  weights and a byte-level BPE trained on the training captions — nothing is downloaded, which is
  what the tests and CI run;
- a ``transformers`` CLIP checkpoint: a Hub id such as ``openai/clip-vit-base-patch32`` (or
  ``hf:ID``), or a local folder written by ``save_pretrained`` (the trainer's own checkpoints too);
- an ``open_clip`` model: any ``open_clip.create_model`` name, e.g. ``ViT-B-32``, optionally
  ``ViT-B-32:laion2b_s34b_b79k`` for pretrained weights (needs the ``[train]`` extra).

The trainer is deliberately thin: the data comes from :func:`fusionrs_hf.torch.make_dataloader`
unchanged, so the same loop works for a local folder or a Hub repo, streamed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..decode import CLIP_MEAN, CLIP_STD
from ..metrics import KS, retrieval_metrics

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


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("580K-only", (("rgb", "caption"), ("ir", "caption"), ("rgb", "ir")), "default",
               "all triplets: RGB–caption, IR–caption, RGB–IR"),
        Recipe("A-original", (("ir", "caption"),), "iraware", "IR–original caption"),
        Recipe("B-iraware", (("ir", "ir_caption"),), "iraware", "IR–IR-aware caption"),
        Recipe("C-mixed", (("ir", "caption"), ("ir", "ir_caption"), ("rgb", "caption"), ("rgb", "ir")), "iraware",
               "IR–original, IR–IR-aware, RGB–original, RGB–IR"),
    )
}
RECIPE_ALIASES = {"580k": "580K-only", "580k-only": "580K-only", "a": "A-original", "original": "A-original",
                  "b": "B-iraware", "iraware": "B-iraware", "c": "C-mixed", "mixed": "C-mixed"}


def get_recipe(name: str) -> Recipe:
    """A recipe by its name (case-insensitive; short aliases ``A``, ``B``, ``C``, ``580k`` work)."""
    key = name if name in RECIPES else RECIPE_ALIASES.get(name.lower())
    if key is None:
        key = next((k for k in RECIPES if k.lower() == name.lower()), None)
    if key is None:
        raise ValueError(f"unknown recipe {name!r}; expected one of {', '.join(RECIPES)}")
    return RECIPES[key]


# --------------------------------------------------------------------------- loss


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor,
             positives: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP loss) between row-aligned embeddings ``a`` and ``b``.

    Row i of ``a`` and row i of ``b`` are the positive pair; every other row of the batch is a
    negative. ``logit_scale`` is the log inverse temperature (clamped at log 100, as CLIP does).
    ``positives`` (B x B bool, diagonal true) marks further pairs that are not negatives, e.g.
    two rows with the same caption string: the target then spreads evenly over them (with the
    identity it is exactly the CLIP loss).
    """
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"info_nce needs aligned rows, got {a.shape[0]} and {b.shape[0]}")
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
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


def trimodal_loss(
    emb: dict[str, torch.Tensor],
    logit_scale: torch.Tensor,
    terms: Sequence[tuple[str, str]],
    rows: dict[str, torch.Tensor] | None = None,
    positives: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of :func:`info_nce` over ``terms`` with one shared ``logit_scale``.

    ``emb`` maps a modality (``rgb``, ``ir``, ``caption``, ``ir_caption``) to embeddings. A
    modality present for only some rows of the batch (``ir_caption`` outside the IR-aware subset)
    comes with ``rows[mod]``, the batch positions its embeddings belong to; its terms use only
    those rows. A term with fewer than two rows (no negatives) is skipped. ``positives[mod]``
    (batch x batch bool, see :func:`same_text`) marks rows that are interchangeable in that
    modality; a term involving it does not push them apart. Returns the total and each term's
    value (for logging).
    """
    rows = rows or {}
    positives = positives or {}
    total: torch.Tensor | None = None
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
        if ea.shape[0] < 2:
            continue
        pos = None
        for mod in (a, b):
            if mod in positives:
                p = positives[mod] if idx is None else positives[mod][idx][:, idx]
                pos = p if pos is None else pos | p
        term = info_nce(ea, eb, logit_scale, pos)
        parts[f"{a}-{b}"] = float(term.detach())
        total = term if total is None else total + term
    if total is None:
        raise ValueError(f"no loss term had two or more rows in this batch (terms {list(terms)})")
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
    """

    kind = "base"
    image_size: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

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

    def __init__(self, model, tokenizer, *, mean=CLIP_MEAN, std=CLIP_STD):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
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
        (out / "fusionrs_clip.json").write_text(json.dumps({"kind": self.kind, "mean": self.mean, "std": self.std}))
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
    from transformers import CLIPConfig, CLIPModel

    from .tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, vocab_size=vocab_size, model_max_length=max_length)
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
    return HFClip(CLIPModel(config), tokenizer)


def hf_clip(name_or_path: str) -> HFClip:
    """A ``transformers`` CLIP checkpoint (Hub id or local folder) with its own tokenizer."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    mean, std = CLIP_MEAN, CLIP_STD
    meta = Path(name_or_path) / "fusionrs_clip.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        mean, std = info.get("mean", mean), info.get("std", std)
    else:
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(name_or_path)
            mean, std = proc.image_mean, proc.image_std
        except Exception:  # noqa: BLE001 - a checkpoint without a processor keeps CLIP's statistics
            pass
    return HFClip(model, tokenizer, mean=mean, std=std)


def open_clip_model(name: str, pretrained: str | None = None) -> OpenClip:
    """An ``open_clip`` model by ``create_model`` name; ``pretrained`` is an open_clip tag or file."""
    try:
        import open_clip
    except Exception as exc:  # ImportError, or torchvision failing to import beside this torch
        raise ImportError(
            f"model {name!r} needs open_clip (pip install 'fusionrs-hf[train]'; open_clip needs a torchvision "
            f"that matches your torch): {exc}"
        ) from exc
    model = open_clip.create_model(name, pretrained=pretrained)
    return OpenClip(model, open_clip.get_tokenizer(name), name, pretrained)


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
        info = json.loads(meta.read_text()) if meta.is_file() else {}
        if info.get("kind") == "open_clip":
            adapter = open_clip_model(info["name"], None)
            adapter.model.load_state_dict(torch.load(path / "open_clip_model.pt", map_location="cpu"))
            adapter.pretrained = info.get("pretrained")
            return adapter
        if (path / "config.json").is_file():
            return hf_clip(str(path))
        raise ValueError(f"{name}: a folder, but neither a transformers CLIP checkpoint nor a saved open_clip one")
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
                shuffle: bool = False, seed: int = 0, num_workers: int = 0, drop_last: bool = False):
    """The streaming dataloader of :mod:`fusionrs_hf.torch`, with the model's pixel statistics."""
    from ..splits import explain_missing
    from ..torch import make_dataloader

    try:
        return make_dataloader(repo, config=config, split=split, batch_size=batch_size, num_workers=num_workers,
                               image_size=image_size, shuffle=shuffle, seed=seed, mean=tuple(mean), std=tuple(std),
                               drop_last=drop_last)
    except FileNotFoundError as exc:  # say which splits the config does have
        better = explain_missing(repo, config, split) if isinstance(repo, (str, os.PathLike)) else None
        if better is None:
            raise
        raise better from exc


def read_captions(repo: str, config: str, split: str = "train", limit: int = 50_000) -> list[str]:
    """Captions and IR-aware captions of a split (no image decode), to train a local tokenizer."""
    from .. import load

    ds = load(config, split=split, streaming=True, repo=repo).select_columns(["caption", "ir_caption"])
    out: list[str] = []
    for row in ds:
        out.extend(t for t in (row["caption"], row["ir_caption"]) if t)
        if len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{repo}: config {config!r} split {split!r} has no captions to train a tokenizer on")
    return out


# --------------------------------------------------------------------------- eval


@torch.no_grad()
def embed(model: ClipAdapter, loader, *, text_field: str = "caption", limit: int | None = None,
          amp_dtype: torch.dtype | None = None) -> dict:
    """Embed every row of ``loader``: RGB and IR with the shared image encoder, text with the other.

    ``text_field`` ``ir_caption`` keeps only rows that have an IR-aware caption.
    """
    was_training = model.training
    model.eval()
    rgb, ir, text, captions, ids = [], [], [], [], []
    device = model.device
    seen = 0
    for batch in loader:
        keep = [i for i, t in enumerate(batch[text_field]) if t]
        if not keep:
            continue
        if limit is not None:
            keep = keep[: max(0, limit - seen)]
        idx = torch.tensor(keep, dtype=torch.long)
        caps = [batch[text_field][i] for i in keep]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            rgb.append(model.encode_image(batch["rgb"][idx].to(device)).float().cpu())
            ir.append(model.encode_image(batch["ir"][idx].to(device)).float().cpu())
            text.append(model.encode_text(caps).float().cpu())
        captions.extend(caps)
        ids.extend(batch["sample_id"][i] for i in keep)
        seen += len(keep)
        if limit is not None and seen >= limit:
            break
    model.train(was_training)
    if not ids:
        raise ValueError(f"no rows with a {text_field!r} to evaluate on")
    return {"rgb": torch.cat(rgb), "ir": torch.cat(ir), "text": torch.cat(text), "captions": captions,
            "sample_ids": ids}


def evaluate(model: ClipAdapter, loader, *, text_field: str = "caption", limit: int | None = None,
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Retrieval metrics (:func:`fusionrs_hf.metrics.retrieval_metrics`) on one eval split.

    Identical caption strings are one gallery entry, relevant to every image they describe (a
    templated caption shared by two scenes is not a wrong answer for either of them).
    """
    e = embed(model, loader, text_field=text_field, limit=limit, amp_dtype=amp_dtype)
    unique: dict[str, int] = {}
    first: list[int] = []
    for i, c in enumerate(e["captions"]):
        if c not in unique:
            unique[c] = len(unique)
            first.append(i)
    text_rows = e["text"][torch.tensor(first, dtype=torch.long)]
    relevance = torch.zeros(len(e["captions"]), len(unique), dtype=torch.bool)
    for i, c in enumerate(e["captions"]):
        relevance[i, unique[c]] = True
    return retrieval_metrics(e["rgb"], e["ir"], text_rows, relevance=relevance)


# --------------------------------------------------------------------------- train


@dataclass
class ClipTrainConfig:
    """Everything one run needs; the command line maps onto it one flag per field."""

    data: str
    config: str | None = None
    recipe: str = "580K-only"
    model: str = "tiny"
    pretrained: str | None = None
    out: str = "runs/clip"
    steps: int | None = None
    epochs: int = 1
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.1
    warmup_ratio: float = 0.03
    image_size: int = 64
    dedupe_captions: bool = False
    eval_split: str = "validation"
    eval_config: str | None = None
    """None: the training config, or ``default`` when that lacks ``eval_split`` (see :mod:`fusionrs_hf.splits`)."""
    eval_text: str = "caption"
    eval_limit: int | None = None
    eval_every: int = 0
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    device: str | None = None
    bf16: bool | None = None


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def cosine_with_warmup(optimizer, total_steps: int, warmup_ratio: float):
    """Linear warmup over ``warmup_ratio`` of the steps, then cosine decay to zero."""
    warmup = max(1, int(round(warmup_ratio * total_steps))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_clip(cfg: ClipTrainConfig, *, model: ClipAdapter | None = None,
               log_fn: Callable[[dict], None] | None = None) -> dict:
    """Train, evaluate on ``cfg.eval_split`` and save a checkpoint under ``cfg.out``.

    Returns ``{"metrics": ..., "history": [...], "checkpoint": path, "eval_config": ..., ...}``;
    the history holds one record per logged step (``step``, ``loss``, each term, ``logit_scale``,
    ``lr``).

    Missing splits (checked from the shard listing before anything is built or trained): the
    data config must have a train split. Evaluation runs on ``cfg.eval_config`` when given (it
    must have ``eval_split``); otherwise on the data config, or, when that has no ``eval_split``
    (rc4's ``iraware`` is train only), on ``default`` of the same split, said in one stderr line
    and returned as ``eval_config``. Any other miss raises
    :class:`fusionrs_hf.splits.MissingSplitError`, as does ``eval_text="ir_caption"`` on an eval
    split without IR-aware captions.
    """
    from ..splits import MissingSplitError, repo_splits

    recipe = get_recipe(cfg.recipe)
    config = cfg.config or recipe.config
    listing = repo_splits(cfg.data)
    listing.require(config, "train", who="train_clip")
    eval_config = listing.eval_config(cfg.eval_config or config, cfg.eval_split, explicit=cfg.eval_config is not None,
                                      who="train_clip")
    if cfg.eval_text == "ir_caption" and not listing.has_ir_captions(eval_config, cfg.eval_split):
        raise MissingSplitError(
            f"train_clip: eval_text 'ir_caption' needs IR-aware captions, but no row of {eval_config!r}/"
            f"{cfg.eval_split} in {cfg.data} has one (config 'iraware' has: {', '.join(listing.splits('iraware')) or 'no split'})",
            repo=cfg.data, config=eval_config, split=cfg.eval_split, available=listing.splits("iraware"))
    torch.manual_seed(cfg.seed)
    if model is None:
        texts = read_captions(cfg.data, config) if cfg.model == "tiny" else None
        model = build_model(cfg.model, texts=texts, image_size=cfg.image_size, pretrained=cfg.pretrained,
                            seed=cfg.seed)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device).train()
    bf16 = cfg.bf16 if cfg.bf16 is not None else (device.type == "cuda" and torch.cuda.is_bf16_supported())
    amp_dtype = torch.bfloat16 if bf16 else None
    lr = cfg.lr if cfg.lr is not None else (2e-3 if cfg.model == "tiny" else 1e-5)

    train_loader = make_loader(cfg.data, config, "train", batch_size=cfg.batch_size, image_size=model.image_size,
                               mean=model.mean, std=model.std, shuffle=True, seed=cfg.seed,
                               num_workers=cfg.num_workers, drop_last=True)
    # Planned before training (a config without that split fails now, not after the run) and
    # reused by every evaluation: unshuffled, so each pass sees the same rows.
    eval_loader = make_loader(cfg.data, eval_config, cfg.eval_split, batch_size=cfg.batch_size,
                              image_size=model.image_size, mean=model.mean, std=model.std,
                              num_workers=cfg.num_workers)

    total = cfg.steps if cfg.steps is not None else max(1, cfg.epochs * len(train_loader))
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = cosine_with_warmup(optimizer, total, cfg.warmup_ratio)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    log_path = out / "train_log.jsonl"
    log_file = log_path.open("w")
    emit = log_fn or (lambda rec: print(json.dumps(rec), file=sys.stderr))

    step, epoch, t0 = 0, 0, time.time()
    while step < total:
        got_batch = False
        train_loader.set_epoch(epoch)
        for batch in train_loader:
            got_batch = True
            rgb, ir = batch["rgb"].to(device, non_blocking=True), batch["ir"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                # one image encoder for both modalities: a single forward over the stacked batch
                img = model.encode_image(torch.cat([rgb, ir]))
                emb = {"rgb": img[: len(rgb)], "ir": img[len(rgb):]}
                rows, positives = {}, {}
                needed = {m for t in recipe.terms for m in t}
                if "caption" in needed:
                    emb["caption"] = model.encode_text(batch["caption"])
                    if cfg.dedupe_captions:
                        positives["caption"] = same_text(batch["caption"], device)
                if "ir_caption" in needed:
                    if cfg.dedupe_captions:
                        positives["ir_caption"] = same_text(batch["ir_caption"], device)
                    have = [i for i, t in enumerate(batch["ir_caption"]) if t]
                    if len(have) >= 2:
                        emb["ir_caption"] = model.encode_text([batch["ir_caption"][i] for i in have])
                        rows["ir_caption"] = torch.tensor(have, dtype=torch.long, device=device)
                loss, parts = trimodal_loss({k: v.float() for k, v in emb.items()}, model.logit_scale,
                                            recipe.terms, rows, positives)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            step += 1
            if step == 1 or step % max(1, cfg.log_every) == 0 or step == total:
                rec = {"step": step, "epoch": epoch, "loss": float(loss.detach()), **parts,
                       "logit_scale": float(model.logit_scale.detach().exp()), "lr": scheduler.get_last_lr()[0],
                       "elapsed_s": round(time.time() - t0, 2)}
                history.append(rec)
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                emit(rec)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                rec = {"step": step, "eval": evaluate(model, eval_loader, text_field=cfg.eval_text,
                                                      limit=cfg.eval_limit, amp_dtype=amp_dtype)}
                log_file.write(json.dumps(rec) + "\n")
                emit(rec)
            if step >= total:
                break
        if not got_batch:
            raise ValueError(f"{cfg.data}: config {config!r} train split gave no full batch of {cfg.batch_size}")
        epoch += 1

    metrics = evaluate(model, eval_loader, text_field=cfg.eval_text, limit=cfg.eval_limit, amp_dtype=amp_dtype)
    log_file.write(json.dumps({"step": step, "eval": metrics}) + "\n")
    log_file.close()
    ckpt = model.save(out / "checkpoint")
    run = {"config": asdict(cfg), "recipe": recipe.name, "data_config": config, "eval_config": eval_config,
           "eval_split": cfg.eval_split, "lr": lr, "steps": step, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(run, indent=2))
    return {"metrics": metrics, "history": history, "checkpoint": str(ckpt), "recipe": recipe.name,
            "data_config": config, "eval_config": eval_config, "eval_split": cfg.eval_split, "steps": step,
            "model": model}


def final_line(metrics: dict[str, float], ks: Sequence[int] = KS) -> dict[str, float]:
    """The one-line JSON summary the command line prints: R@K per direction, means, chance."""
    keep = [k for k in metrics if k.endswith(tuple(f"_r{x}" for x in ks))]
    keep += [k for k in ("mean_r", "mean_r_all6", "chance_r1", "n_images", "n_texts") if k in metrics]
    return {k: round(float(metrics[k]), 4) for k in keep}
