"""CLIP models behind one adapter (tiny, transformers, open_clip), their pixels, and checkpoint loading."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ...decode import CLIP_MEAN, CLIP_STD
from .errors import CheckpointError, NotAModelError


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
        """Write the checkpoint folder whole or not at all: a run killed while saving left new weights beside the
        old ``fusionrs_clip.json``; now ``out`` holds the previous checkpoint or the new one."""
        from ...atomic import atomic_dir

        with atomic_dir(out) as tmp:
            self._write(tmp)
        return Path(out)

    def _write(self, out: Path) -> None:
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

    def _write(self, out: Path) -> None:
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        if self.image_processor is not None:  # preprocessor_config.json: what `processor` pixels are made with
            self.image_processor.save_pretrained(out)
        (out / "fusionrs_clip.json").write_text(json.dumps({"kind": self.kind, "mean": self.mean, "std": self.std,
                                                            "preprocess": self.preprocess}))


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

    def _write(self, out: Path) -> None:
        torch.save(self.model.state_dict(), out / "open_clip_model.pt")
        (out / "fusionrs_clip.json").write_text(json.dumps(
            {"kind": self.kind, "name": self.name, "pretrained": self.pretrained}))


def tiny_clip(texts: Iterable[str], *, image_size: int = 64, patch_size: int = 8, width: int = 64,
              layers: int = 2, heads: int = 2, vocab_size: int = 600, max_length: int = 64,
              seed: int = 0) -> HFClip:
    """A real ``CLIPModel`` (ViT-style image tower + causal text transformer) at small width.

    Random weights (seeded), and a byte-level BPE trained on ``texts`` (the training captions),
    so nothing is downloaded. The text tower pools at the tokenizer's EOS id; that id is set in
    the config so the modern (non-argmax) pooling path is used.
    """
    from ...storage import require

    require("transformers", extra="train", what="--model tiny (a small transformers CLIPModel)")
    require("tokenizers", extra="train", what="--model tiny (its BPE tokenizer)")
    from transformers import CLIPConfig, CLIPModel

    from ..tokenizer import train_bpe_tokenizer

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
    from ...storage import check_model, require

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
    from ...storage import MissingExtraError

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
