"""Embeddings for the protocol: from a model (through the streaming loader, cached) or from a file.

A model is anything :func:`fusionrs_hf.train.clip.build_model` resolves: a ``transformers`` CLIP
Hub id or folder (``openai/clip-vit-base-patch32``, a ``save_pretrained`` folder, a
``train_clip`` checkpoint folder), an ``open_clip`` name (``ViT-B-32:laion2b_s34b_b79k``, needs
the ``[train]`` extra) or a saved open_clip folder. RGB and IR go through the model's one image
encoder, texts through its text encoder, batched by :func:`fusionrs_hf.torch.make_dataloader`
(workers, the model's image size and pixel statistics), rows in the loader's order.

Pixels (``preprocess``, :data:`PREPROCESS_CHOICES`): ``processor`` runs the model's own transformers image
processor (PIL backend) on fully decoded PIL images, the way the authors embedded with ``CLIPProcessor``
(shortest edge bicubic, centre crop, OpenAI mean/std), so a released model's published numbers are
reproduced with its own preprocessing; ``fast`` is ours (:mod:`fusionrs_hf.decode`: reduced-scale JPEG
decode, antialiased bilinear resize). ``auto`` (the default) is the model's own choice
(:func:`fusionrs_hf.train.clip.default_preprocess`): a ``train_clip`` checkpoint what it was trained and
evaluated with (recorded in its ``fusionrs_clip.json``; ``fast`` for checkpoints from before), any other
transformers CLIP model (FusionRS-CLIP, ``openai/clip-vit-base-patch32``) ``processor`` (fidelity to its
published numbers), open_clip models ``fast``. The choice is part of the cache key and of ``meta``.

Embedding files (for models we do not know) are ``.npz`` or ``.parquet`` with ``sample_id`` (one
row per sample) and any two or three of ``rgb``, ``ir``, ``text`` (rows x dims; parquet: list
columns). An ``.npz`` may add ``class_names`` with ``class_text_rgb`` / ``class_text_ir`` (or one
``class_text`` for both): one embedding per class for zero-shot classification. This is the
format of the authors' ``score_retrieval_embeddings.py`` (``sample_id``, ``rgb``, ``ir``,
``text``), so the same file feeds both scorers; ``--save-embeddings`` writes it.

The cache (``$FUSIONRS_CACHE``/eval, default ``~/.cache/fusionrs/eval``) holds one ``.npz`` per
(model, data, config, split, text field, precision, device type, batch size, row limit, class set,
pixels).
A model folder is identified by its files' names, sizes and modification times, the data by its
shards' names, sizes and modification times (or the Hub's blob ids); a Hub or open_clip model
name by the name alone, so pass ``--no-cache`` after a model of that name changed.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..limits import refuse_big_row_groups
from .protocol import ProtocolError
from .zeroshot import TEMPLATES, class_embeddings

DEFAULT_BATCH_SIZE = 64
"""Images (and texts) per forward pass, in ``fusionrs eval`` and in ``train_clip``'s evaluation alike."""
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
"""``auto``: fp16 autocast on CUDA (the authors' evaluation default), fp32 elsewhere."""
CACHE_FORMAT = "fusionrs-eval-embeddings/1"
PREPROCESS_CHOICES: tuple[str, ...] = ("auto", "processor", "fast")
"""``fusionrs eval --preprocess``: the model's own choice, its transformers image processor, or ours."""

_PREPROCESS: contextvars.ContextVar[str] = contextvars.ContextVar("fusionrs_eval_preprocess", default="auto")


@contextlib.contextmanager
def preprocessing(choice: str) -> Iterator[None]:
    """Within the block, models named by a spec (:func:`cached_model_embeddings`, hence
    :func:`fusionrs_hf.eval.evaluate`) are embedded with pixels ``choice`` unless a call names its own: how
    ``fusionrs eval --preprocess`` reaches the embedding without another parameter on every layer between."""
    check_preprocess(choice)
    token = _PREPROCESS.set(choice)
    try:
        yield
    finally:
        _PREPROCESS.reset(token)


def check_preprocess(choice: str) -> str:
    if choice not in PREPROCESS_CHOICES:
        raise ProtocolError(f"unknown preprocess {choice!r}; expected one of {', '.join(PREPROCESS_CHOICES)}")
    return choice


def resolve_preprocess(spec: str, choice: str | None = None) -> str:
    """``processor`` or ``fast`` for the model named by ``spec`` (``choice`` None: the :func:`preprocessing`
    block's, else ``auto``; ``auto``: :func:`fusionrs_hf.train.clip.default_preprocess`)."""
    choice = check_preprocess(choice if choice is not None else _PREPROCESS.get())
    if choice != "auto":
        return choice
    from ..train.clip import default_preprocess

    return default_preprocess(spec)


@dataclass
class Embeddings:
    """Per-sample vectors (rows aligned with ``sample_id``) and optional class-prompt vectors."""

    sample_id: list[str]
    rgb: np.ndarray | None = None
    ir: np.ndarray | None = None
    text: np.ndarray | None = None
    class_names: list[str] | None = None
    class_text: dict[str, np.ndarray] = field(default_factory=dict)
    """Modality (``rgb``/``ir``) -> (classes x dims), one prompt-averaged embedding per class."""
    meta: dict = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray | None]:
        return {"rgb": self.rgb, "ir": self.ir, "text": self.text}

    def save(self, path: str | os.PathLike, *, normalise: bool = True) -> Path:
        """Write an ``.npz``: float32 rows, L2-normalised (the authors' scorer reads that as is) unless
        ``normalise=False`` (the cache keeps the model's float32 output exactly, so a cache hit scores
        bit for bit like a fresh pass)."""
        prep = _unit if normalise else (lambda a: np.asarray(a))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, np.ndarray] = {"sample_id": np.asarray(self.sample_id, dtype=str)}
        for name, arr in self.arrays().items():
            if arr is not None:
                data[name] = prep(arr).astype(np.float32)
        if self.class_names is not None:
            data["class_names"] = np.asarray(self.class_names, dtype=str)
            for mod, arr in self.class_text.items():
                data[f"class_text_{mod}"] = prep(arr).astype(np.float32)
        data["meta"] = np.asarray(json.dumps(self.meta, sort_keys=True))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **data)
        os.replace(tmp, path)
        return path


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


NPZ_MAX_RATIO = 50
"""An ``.npz`` member may inflate to at most this many times its stored size (past 64 MiB): float vectors
deflate by a few percent (``np.savez_compressed``) and ``np.savez`` stores them as they are, so anything far
beyond is a zip bomb, which ``np.load`` would inflate into memory whole."""


def _refuse_inflating_members(path: Path) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except zipfile.BadZipFile as e:
        raise ProtocolError(f"{path}: not an .npz file ({e})") from None
    for m in members:
        if m.file_size > max(64 << 20, NPZ_MAX_RATIO * m.compress_size):
            raise ProtocolError(f"{path}: member {m.filename!r} inflates {m.compress_size:,} stored bytes to "
                                f"{m.file_size:,} (more than {NPZ_MAX_RATIO}x); not read")
    with zipfile.ZipFile(path) as zf:
        for m in members:
            _check_member_header(zf, m, path)


def _check_member_header(zf, member, path: Path) -> None:
    """An array's ``.npy`` header, read before the array: numeric (or text ids) only, never objects, and no
    larger than the bytes the member holds (``np.load`` allocates what the header claims, terabytes if it
    says so, before it finds the data missing)."""
    if not member.filename.endswith(".npy"):
        return
    name = member.filename[:-4]
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        shape, _fortran, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                                  else np.lib.format.read_array_header_2_0(fh))
    if dtype.hasobject:
        raise ProtocolError(f"{path}: array {name!r} holds Python objects (dtype {dtype}); embeddings are numbers "
                            "and sample ids text, and objects would need pickle, which is never loaded")
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize if shape else dtype.itemsize
    if need > member.file_size:
        raise ProtocolError(f"{path}: array {name!r} claims shape {tuple(shape)} ({need:,} bytes) but its member "
                            f"holds {member.file_size:,}; not read")


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read an embedding file (``.npz`` or ``.parquet``; see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"embeddings file {path} does not exist")
    import pyarrow as pa

    try:
        emb = _read_embeddings(path)
    except ProtocolError:
        raise
    except (ValueError, TypeError, KeyError, OSError, EOFError, MemoryError, RecursionError, NotImplementedError,
            pa.ArrowException) as e:
        # numpy's and pyarrow's own errors (ArrowInvalid is a ValueError; a truncated .npy an EOFError): the
        # file's one line, exit 2, never a traceback of theirs
        raise ProtocolError(f"{path}: not a readable embedding file ({type(e).__name__}: {str(e)[:200]})") from None
    for m, a in [*emb.arrays().items(), *emb.class_text.items()]:
        if a is not None and not np.issubdtype(a.dtype, np.number):
            raise ProtocolError(f"{path}: {m!r} vectors are {a.dtype}, not numbers")
    return emb


def _read_embeddings(path: Path) -> Embeddings:
    if path.suffix == ".npz":
        _refuse_inflating_members(path)
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "sample_id" not in keys:
                raise ProtocolError(f"{path}: no 'sample_id' array (has {', '.join(sorted(keys))})")
            sids = [str(s) for s in z["sample_id"].tolist()]
            arrs = {m: np.asarray(z[m]) for m in ("rgb", "ir", "text") if m in keys}
            classes = [str(c) for c in z["class_names"].tolist()] if "class_names" in keys else None
            ctext = {m: np.asarray(z[f"class_text_{m}"]) for m in ("rgb", "ir") if f"class_text_{m}" in keys}
            if "class_text" in keys:
                for m in ("rgb", "ir"):
                    ctext.setdefault(m, np.asarray(z["class_text"]))
            meta = json.loads(str(z["meta"])) if "meta" in keys else {}
            if not isinstance(meta, dict):
                raise ProtocolError(f"{path}: 'meta' is not a JSON object")
    elif path.suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        with open(path, "rb") as f:
            pf = pq.ParquetFile(f, pre_buffer=False)
            names = pf.schema_arrow.names
            if "sample_id" not in names:
                raise ProtocolError(f"{path}: no 'sample_id' column (has {', '.join(names)})")
            wanted = [c for c in ("sample_id", "rgb", "ir", "text") if c in names]
            refuse_big_row_groups(pf.metadata, wanted, str(path), f)
            t = pf.read(columns=wanted, use_threads=False)
        sids = [str(s) for s in t.column("sample_id").to_pylist()]
        arrs = {m: _list_column(t.column(m), path, m) for m in ("rgb", "ir", "text") if m in t.column_names}
        classes, ctext, meta = None, {}, {}
    else:
        raise ProtocolError(f"{path}: embeddings must be a .npz or .parquet file")
    if len(arrs) < 2:
        raise ProtocolError(f"{path}: needs at least two of rgb, ir, text (has {', '.join(arrs) or 'none'})")
    for m, a in arrs.items():
        if a.ndim != 2 or a.shape[0] != len(sids):
            raise ProtocolError(f"{path}: {m!r} must be (rows x dims) with {len(sids)} rows, got {a.shape}")
    if classes is not None:
        for m, a in ctext.items():
            if a.ndim != 2 or a.shape[0] != len(classes):
                raise ProtocolError(f"{path}: class_text_{m} must have one row per class ({len(classes)}), got {a.shape}")
    return Embeddings(sids, arrs.get("rgb"), arrs.get("ir"), arrs.get("text"), classes, ctext,
                      {**meta, "file": str(path)})


def _list_column(col, path: Path, name: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if col.null_count:
        raise ProtocolError(f"{path}: column {name!r} has null rows")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ProtocolError(f"{path}: column {name!r} has rows of different lengths")
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64)
    return flat.reshape(len(col), int(lengths[0]) if len(lengths) else 0)


# --------------------------------------------------------------------------- models


def load_model(spec: str, *, pretrained: str | None = None, preprocess: str | None = None):
    """A CLIP adapter for ``spec`` (see the module docstring); ``tiny`` is rejected (random weights).

    ``preprocess`` (``processor`` / ``fast``, or None to keep the model's own) is set on the adapter; a
    model without an image processor cannot have ``processor`` (:class:`ProtocolError`)."""
    if spec == "tiny":
        raise ProtocolError("model 'tiny' is a random model built for training; evaluate a checkpoint folder "
                            "(train_clip writes OUT/checkpoint) or a pretrained model")
    from ..train.clip import build_model

    model = build_model(spec, pretrained=pretrained)
    if preprocess is not None:
        model.preprocess = preprocess
    _image_processor(model, spec)
    return model


def _image_processor(model, what: str = "the model"):
    """The image processor ``model.preprocess`` asks for (None for ``fast``); raises if it has none."""
    mode = getattr(model, "preprocess", "fast")
    if mode not in ("processor", "fast"):
        raise ProtocolError(f"unknown preprocess {mode!r} on {what}; expected processor or fast")
    if mode == "fast":
        return None
    proc = getattr(model, "image_processor", None)
    if proc is None:
        raise ProtocolError(f"{what}: preprocess 'processor' needs a transformers image processor "
                            "(preprocessor_config.json), which this model does not have; use --preprocess fast")
    return proc


def autocast_dtype(precision: str, device_type: str):
    """The autocast dtype for ``precision`` on ``device_type`` (None: plain fp32)."""
    import torch

    if precision not in PRECISIONS:
        raise ProtocolError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.float16 if device_type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def embed_model(model, repo: str | os.PathLike, config: str, split: str, *, text_field: str = "caption",
                classes: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int = 0,
                precision: str = "auto", limit: int | None = None, revision: str | None = None,
                progress: bool = False, storage_options: dict | None = None) -> Embeddings:
    """Embed every row of ``config``/``split`` that has ``text_field`` (the first ``limit`` of them).

    ``classes``: also embed the zero-shot prompts of these class names (both modalities' templates).
    Pixels: ``model.preprocess`` (``processor``: its ``image_processor`` on PIL images; ``fast``: ours).
    The model is put in eval mode for the pass and back afterwards.
    """
    import torch

    from ..torch import make_dataloader

    device = model.device
    amp = autocast_dtype(precision, device.type)
    image_processor = _image_processor(model)
    loader = make_dataloader(repo, config=config, split=split, batch_size=batch_size, num_workers=num_workers,
                             image_size=model.image_size, mean=tuple(model.mean), std=tuple(model.std),
                             revision=revision, storage_options=storage_options, image_processor=image_processor,
                             rank=0, world_size=1)  # the whole split, also when called inside a DDP job
    was_training = model.training
    model.eval()
    rgb, ir, text, ids = [], [], [], []
    seen = 0
    bar = _progress(progress, total=_len(loader), desc=f"embedding {config}/{split}")
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            for batch in loader:
                bar.update(1)
                keep = [i for i, t in enumerate(batch[text_field]) if t]
                if limit is not None:
                    keep = keep[: max(0, limit - seen)]
                if not keep:
                    if limit is not None and seen >= limit:
                        break
                    continue
                idx = torch.tensor(keep, dtype=torch.long)
                rgb.append(model.encode_image(batch["rgb"][idx].to(device)).float().cpu().numpy())
                ir.append(model.encode_image(batch["ir"][idx].to(device)).float().cpu().numpy())
                text.append(model.encode_text([batch[text_field][i] for i in keep]).float().cpu().numpy())
                ids.extend(batch["sample_id"][i] for i in keep)
                seen += len(keep)
                if limit is not None and seen >= limit:
                    break
            class_text = {}
            if classes:
                def encode(prompts: list[str]) -> np.ndarray:
                    return np.concatenate([model.encode_text(prompts[i:i + batch_size]).float().cpu().numpy()
                                           for i in range(0, len(prompts), batch_size)])

                # float32, as stored in the cache: a cache hit then scores exactly like this pass
                class_text = {m: class_embeddings(encode, classes, TEMPLATES[m]).astype(np.float32)
                              for m in ("rgb", "ir")}
    finally:
        bar.close()
        model.train(was_training)
    if not ids:
        raise ProtocolError(f"no row of {config!r}/{split} has a {text_field!r} to evaluate on")
    return Embeddings(ids, np.concatenate(rgb), np.concatenate(ir), np.concatenate(text),
                      list(classes) if classes else None, class_text,
                      {"precision": precision, "autocast": str(amp).replace("torch.", "") if amp else "fp32",
                       "device": device.type, "batch_size": batch_size, "text_field": text_field,
                       "preprocess": "processor" if image_processor is not None else "fast"})


def _len(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, **kw):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(unit="batch", file=sys.stderr, leave=False, **kw)


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    base = os.environ.get("FUSIONRS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fusionrs")
    return Path(base) / "eval"


def model_fingerprint(spec: str, pretrained: str | None = None) -> dict:
    """What identifies a model for the cache (see the module docstring)."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"folder": str(path.resolve()),
                "files": [[p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    return {"name": spec, "pretrained": pretrained}


def data_fingerprint(repo: str | os.PathLike, config: str, split: str, revision: str | None = None,
                     storage_options: dict | None = None) -> dict:
    """The shards of ``config``/``split`` with their sizes and modification facts."""
    from ..splits import repo_splits
    from ..torch import resolve_repo

    fs, root = resolve_repo(repo, revision, storage_options)
    shards = []
    for rel in repo_splits(repo, revision=revision, storage_options=storage_options).files(config, split):
        info = {k.lower(): v for k, v in fs.info(f"{root}/{rel}").items()}  # s3fs says ETag, LastModified
        keep = {k: info[k] for k in ("size", "mtime", "last_modified", "lastmodified", "etag", "blob_id", "sha256",
                                     "lfs") if k in info}
        shards.append([rel, json.dumps(keep, sort_keys=True, default=str)])
    return {"repo": str(root), "revision": revision, "shards": shards}


def cache_key(**parts) -> str:
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def cached_model_embeddings(spec: str, repo: str | os.PathLike, config: str, split: str, *,
                            text_field: str = "caption", classes: Sequence[str] | None = None,
                            batch_size: int = DEFAULT_BATCH_SIZE, num_workers: int = 0, precision: str = "auto",
                            device: str | None = None, limit: int | None = None, revision: str | None = None,
                            pretrained: str | None = None, cache_dir: str | os.PathLike | None | bool = None,
                            progress: bool = False, storage_options: dict | None = None,
                            preprocess: str | None = None) -> Embeddings:
    """:func:`embed_model` for a model named by ``spec``, through the cache.

    ``cache_dir``: None for :func:`default_cache_dir`, False for no cache. On a hit the model is
    not loaded at all; ``meta["cache"]`` says ``hit``, ``written`` or ``off``. ``preprocess``
    (:data:`PREPROCESS_CHOICES`; None: the :func:`preprocessing` block's, else ``auto``): the pixels, see the
    module docstring.
    """
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast_dtype(precision, dev.type)  # a bad name fails before anything is read
    pixels = resolve_preprocess(spec, preprocess)
    path = None
    if cache_dir is not False:
        key = cache_key(model=model_fingerprint(spec, pretrained),
                        data=data_fingerprint(repo, config, split, revision, storage_options),
                        config=config, split=split, text_field=text_field, classes=sorted(classes or []),
                        batch_size=batch_size, precision=precision, device=dev.type, limit=limit,
                        preprocess=pixels)
        path = Path(cache_dir or default_cache_dir()) / f"{key}.npz"
        if path.is_file():
            emb = load_embeddings(path)
            emb.meta.update(cache="hit", cache_file=str(path))
            return emb
    model = load_model(spec, pretrained=pretrained, preprocess=pixels).to(dev)
    emb = embed_model(model, repo, config, split, text_field=text_field, classes=classes, batch_size=batch_size,
                      num_workers=num_workers, precision=precision, limit=limit, revision=revision,
                      progress=progress, storage_options=storage_options)
    emb.meta["model"] = spec
    if path is not None:
        emb.save(path, normalise=False)
        emb.meta.update(cache="written", cache_file=str(path))
    else:
        emb.meta["cache"] = "off"
    return emb
