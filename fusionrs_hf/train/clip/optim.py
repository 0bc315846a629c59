"""Optimisation of one run: parameter groups, lr schedules, the IR view, and the Training step."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .config import IR_VIEWS, ClipTrainConfig
from .ddp import Dist, Encoders
from .loss import MAX_LOGIT_SCALE, same_text, trimodal_loss
from .models import ClipAdapter
from .recipes import get_recipe


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

    ``dist`` (a :class:`~fusionrs_hf.train.clip.ddp.Dist` of several processes; call on every rank): the
    model is wrapped in ``DistributedDataParallel`` (``ddp``) and :meth:`step` computes the loss of the global
    batch (:meth:`global_forward`); :meth:`val_loss` takes the batch indices of this rank's share.
    """

    def __init__(self, cfg: ClipTrainConfig, model: ClipAdapter, total_steps: int, *, lr: float,
                 device: torch.device | None = None, dist: Dist | None = None):
        self.cfg, self.model, self.total_steps, self.lr = cfg, model, int(total_steps), float(lr)
        self.dist = dist if dist is not None and dist.active else None
        # rank 0's weights go to every rank here (a collective: every rank builds its Training at the same point)
        self.ddp = self.dist.wrap(Encoders(model)) if self.dist is not None else None
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

    def global_forward(self, batch: dict, *, min_rows: int = 2) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`forward` on the global batch of a multi-process run (every rank at once): this rank's
        embeddings go through the DDP-wrapped model, every rank's are gathered with gradients in rank order,
        and the loss is what one process computes on the concatenated batch (the same rows with an IR-aware
        caption, the same same-caption positives). A rank without an IR-aware caption in its batch encodes an
        empty placeholder so that its text encoder takes part in the backward as on the other ranks (its rows
        enter the loss with no row; its gradient is zero)."""
        d, model, cfg, device = self.dist, self.model, self.cfg, self.device
        rgb, ir = batch["rgb"].to(device, non_blocking=True), batch["ir"].to(device, non_blocking=True)
        ir = ir_view_transform(rgb, ir, cfg.ir_view, model.mean, model.std)
        needed = {m for t in self.recipe.terms for m in t}
        ir_texts = list(batch["ir_caption"]) if "ir_caption" in needed else []
        have = [i for i, t in enumerate(ir_texts) if t]
        counts = d.ints(len(rgb), len(have))
        sizes, haves = [c[0] for c in counts], [c[1] for c in counts]
        texts: dict[str, list[str]] = {}
        if "caption" in needed:
            texts["caption"] = list(batch["caption"])
        with_ir = "ir_caption" in needed and sum(haves) >= max(1, min_rows)  # as one process: the global count
        if with_ir:
            texts["ir_caption"] = [ir_texts[i] for i in have] or [""]
        img, txt = self.ddp(torch.cat([rgb, ir]), texts)
        local = {"rgb": img[: len(rgb)], "ir": img[len(rgb):]}
        if "caption" in txt:
            local["caption"] = txt["caption"]
        emb = {k: d.rows(v.float(), sizes) for k, v in local.items() if k in needed}
        rows, positives = {}, {}
        if with_ir:
            emb["ir_caption"] = d.rows(txt["ir_caption"][: len(have)].float(), haves)
            mask = torch.zeros(len(rgb), dtype=torch.int64, device=d.comm_device)
            mask[have] = 1
            rows["ir_caption"] = d.rows(mask, sizes).nonzero().flatten().to(device)
        if cfg.dedupe_captions:
            every = d.objects((list(batch["caption"]) if "caption" in needed else [], ir_texts))
            if "caption" in needed:
                positives["caption"] = same_text([t for c, _ in every for t in c], device)
            if "ir_caption" in needed:
                positives["ir_caption"] = same_text([t for _, c in every for t in c], device)
        return self.loss(emb, rows, positives, min_rows=min_rows)

    def val_loss(self, loader: Iterable[dict], *, batch_ids: Sequence[int] | None = None) -> dict:
        """The release's validation loss: the same combined loss on every batch of ``loader`` (eval mode,
        no gradients, the training autocast), averaged over batches, each batch's value counting once
        (a short last batch too; a one-row term is 0, as the release computes it). Returns ``loss``,
        ``components`` (each term's mean over the batches that had it) and ``batches``.

        Several processes (call on every rank): ``loader`` holds this rank's share of the one-process batches
        and ``batch_ids`` their indices (:meth:`~fusionrs_hf.train.clip.ddp.Dist.share_batches`); every rank's
        per-batch values are gathered and averaged in batch order, so the result is the one-process one and the
        same on every rank."""
        def run() -> list[tuple[int, float, dict[str, float]]]:
            was = self.model.training
            self.model.eval()
            done: list[tuple[int, float, dict[str, float]]] = []
            try:
                with torch.inference_mode(), self.autocast():
                    for j, batch in enumerate(loader):
                        if not batch["sample_id"]:
                            continue  # every row of the batch was skipped for an unreadable image
                        loss, parts = self.forward(batch, min_rows=1)
                        done.append((j if batch_ids is None else batch_ids[j], float(loss),
                                     {k: float(v) for k, v in parts.items()}))
            finally:
                self.model.train(was)
            return done

        if self.dist is None:
            done = run()
        else:
            done = sorted((r for share in self.dist.together(run) for r in share), key=lambda r: r[0])
        losses: list[float] = []
        parts_seen: dict[str, list[float]] = {}
        for _, loss, parts in done:
            losses.append(loss)
            for k, v in parts.items():
                parts_seen.setdefault(k, []).append(v)
        if not losses:
            raise ValueError("the validation-loss pass got no batch")
        return {"loss": sum(losses) / len(losses), "batches": len(losses),
                "components": {k: sum(v) / len(v) for k, v in parts_seen.items()}}

    def step(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """One optimizer step on a loader batch; returns the loss and its terms."""
        model = self.model
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, parts = self.forward(batch) if self.ddp is None else self.global_forward(batch)
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
