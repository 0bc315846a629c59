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

Several processes (``torchrun --nproc_per_node W examples/train_clip.py ...``): data-parallel with
``DistributedDataParallel`` (:mod:`.ddp`); ``batch_size`` is per process and the loss sees the global batch of
``W * batch_size`` rows (embeddings gathered with gradients, the one-process loss and gradient on the
concatenated batch); rank 0 alone evaluates, selects, saves and writes the logs, the other ranks take the same
decisions from its broadcast results; the release's validation loss is the one-process value.

The trainer is deliberately thin: the data comes from :func:`fusionrs_hf.torch.make_dataloader`
unchanged (streamed, or map-style for the global shuffle), so the same loop works for a local folder or
a Hub repo.
"""

from __future__ import annotations

from ...decode import CLIP_MEAN, CLIP_STD
from ...errors import UnusableInputError
from ...metrics import KS
from .config import (
    ABLATIONS,
    DECAY_ON,
    IR_VIEWS,
    OURS,
    PRECISIONS,
    PRESETS,
    RUN_SIZE,
    SCHEDULES,
    SELECTIONS,
    SETTINGS,
    SHUFFLE_MODES,
    ClipTrainConfig,
    Preset,
    resolve_config,
)
from .data import (
    make_loader,
    read_captions,
)
from .errors import (
    CheckpointError,
    NotAModelError,
    PresetError,
)
from .loop import (
    final_line,
    train_clip,
)
from .loss import (
    LOSS_REDUCTIONS,
    MAX_LOGIT_SCALE,
    info_nce,
    same_text,
    trimodal_loss,
)
from .models import (
    PREPROCESSES,
    ClipAdapter,
    HFClip,
    OpenClip,
    build_model,
    default_preprocess,
    hf_clip,
    load_image_processor,
    load_weights,
    open_clip_model,
    pil_image_processor_class,
    tiny_clip,
)
from .optim import (
    Training,
    cosine_with_warmup,
    default_lr,
    ir_view_transform,
    release_schedule,
)
from .recipes import (
    RECIPE_ALIASES,
    RECIPES,
    RELEASE_RECIPES,
    Recipe,
    get_recipe,
)

__all__ = [
    "MAX_LOGIT_SCALE",
    "Recipe",
    "RELEASE_RECIPES",
    "RECIPES",
    "RECIPE_ALIASES",
    "get_recipe",
    "info_nce",
    "same_text",
    "LOSS_REDUCTIONS",
    "trimodal_loss",
    "ClipAdapter",
    "HFClip",
    "OpenClip",
    "tiny_clip",
    "pil_image_processor_class",
    "load_image_processor",
    "PREPROCESSES",
    "default_preprocess",
    "hf_clip",
    "open_clip_model",
    "CheckpointError",
    "load_weights",
    "build_model",
    "make_loader",
    "read_captions",
    "IR_VIEWS",
    "PRECISIONS",
    "SCHEDULES",
    "SELECTIONS",
    "SHUFFLE_MODES",
    "DECAY_ON",
    "OURS",
    "SETTINGS",
    "Preset",
    "RUN_SIZE",
    "ABLATIONS",
    "PRESETS",
    "NotAModelError",
    "PresetError",
    "ClipTrainConfig",
    "resolve_config",
    "cosine_with_warmup",
    "release_schedule",
    "ir_view_transform",
    "Training",
    "default_lr",
    "train_clip",
    "final_line",
    "CLIP_MEAN",
    "CLIP_STD",
    "KS",
    "UnusableInputError",
]
