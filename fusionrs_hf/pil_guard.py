"""The image limits (:mod:`fusionrs_hf.limits`) on stock ``datasets`` decoding, for :func:`fusionrs_hf.load`.

``fusionrs_hf.load`` hands rows to stock ``datasets``, whose ``Image`` feature decodes with a plain
``PIL.Image.open`` and ``load()``: without this guard a 165 KB progressive JPEG of 2,010 scans costs 22 s a row,
and a PNG header claiming 56 M pixels its full decode, on a path where our own readers refuse both unread.
:func:`install` wraps ``datasets.features.image.Image.decode_example`` (one class attribute, for the process) so
that, before the stock decode runs, the bytes are held to :data:`~fusionrs_hf.limits.MAX_JPEG_SCANS` and the
header to :data:`~fusionrs_hf.limits.DEFAULT_MAX_PIXELS`; an image within them is then decoded by the stock code
itself, so users get the same PIL image, ``Image()`` feature, formats and ``.map`` as before.

Why this hook and not PIL's open registry (``Image.OPEN``): every ``datasets`` image decode goes through
``Image.decode_example`` (map-style rows, streaming, ``with_format("torch"/"numpy")``, ``.map``), whatever the
PIL plugin, and nothing else does. A limit in PIL's registry would hold every other ``Image.open`` of the process
too, our own readers included, whose ``max_pixels`` is the caller's to choose (the map-style torch dataset reads
its rows through ``load`` and decodes them itself, ``max_pixels=None`` lifting the limit), and would miss a
plugin registered after it. Not an ``Image`` subclass either: ``ds.features`` would no longer equal ``Image()``,
and a dataset rebuilt from serialized features gets plain ``Image`` ones back, without the limits.

The guard is this process's, as PIL's EPS change (:func:`~fusionrs_hf.limits.refuse_external_decoders`) is: it
holds for every ``datasets`` image decoded here after ``load`` (and in processes forked from here) until
:func:`uninstall`. A process started with ``spawn`` or ``forkserver`` (a DataLoader worker on macOS, Windows, or
Linux from Python 3.14) imports ``datasets`` afresh: the dataset ``load`` returns carries a mark in its features
(:func:`follow`) that installs the guard wherever it is unpickled, and :func:`install` can be a DataLoader's
``worker_init_fn`` for a dataset that lost it (rebuilt with ``load_from_disk``, say).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

from . import limits

_ORIGINAL = "__fusionrs_original__"
"""Attribute of the installed wrapper: the ``decode_example`` it wraps (what :func:`uninstall` puts back)."""
_NAME_CHARS = 200
"""Most characters of a row's image ``path`` quoted in an error (the name is the data's word, any length)."""
_LOCK = threading.Lock()


class ImageRefusedOnDecode(limits.ImageRefused):
    """An image that stock ``datasets`` was about to decode and that breaks the limits: not decoded at all.

    A :class:`~fusionrs_hf.limits.ImageRefused` (a ``ValueError``) that survives a trip between processes:
    ``reason`` has a default and pickling keeps it, so a DataLoader worker (torch rebuilds the class from the
    message) or ``.map(num_proc=...)`` hands the caller this class, not a ``TypeError`` of its rebuilding."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message, reason)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return type(self), (str(self), self.reason)


def check_image_bytes(data: bytes | bytearray | memoryview, name: str | None = None) -> None:
    """Raise :class:`ImageRefusedOnDecode` if ``data`` breaks the limits; nothing is decoded.

    The JPEG scan count first (it needs the bytes, not PIL), then the pixel count from the header PIL reads at
    open, with the plugins stock ``datasets`` opens it with, so the size judged is the size it would decode.
    Bytes PIL cannot open are let through: the stock decode then raises its own error, as it did before the
    guard. The limits are read from :mod:`fusionrs_hf.limits` at each call. ``name``: the row's image path
    (FusionRS rows: ``<sample_id>.<column>.<ext>``), quoted in the message so that it names the row."""
    from PIL import Image

    where = f"image {str(name)[:_NAME_CHARS]!r}: " if name else "image: "
    if bytes(data[:3]) == b"\xff\xd8\xff":  # a JPEG's start-of-image marker
        scans = limits.jpeg_scans(data)
        if scans > limits.MAX_JPEG_SCANS:
            raise ImageRefusedOnDecode(where + limits.too_many_scans(scans), "too_many_scans")
    limit = limits.DEFAULT_MAX_PIXELS
    if limit is None:  # the pixel limit lifted: PIL's own (if any) holds, as in the stock decode
        return
    try:
        # no warnings filter here: it is the process's, not this thread's (PIL's own warning, from 89 M pixels,
        # comes only where the limit was raised past it, and the stock decode would give it too)
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:  # over twice PIL's own limit: refused at open
        raise ImageRefusedOnDecode(where + limits.too_many_pixels(None, None, limit, limits.bomb_pixels(e)),
                                   "too_many_pixels") from None
    except Exception:  # noqa: BLE001 - not an image PIL opens: the stock decode's own error says so
        return
    with im:
        w, h = im.size
    if w * h > limit:
        raise ImageRefusedOnDecode(where + limits.too_many_pixels(w, h, limit), "too_many_pixels")


def _read_path(path: str, token_per_repo_id: dict | None) -> bytes:
    """The bytes stock ``decode_example`` reads for a row with a remote ``path`` and no bytes (its own code:
    ``xopen`` with the token of the repo the URL names), read once here so that what is judged is what is
    decoded."""
    from datasets import config
    from datasets.download.download_config import DownloadConfig
    from datasets.utils.file_utils import xopen
    from datasets.utils.py_utils import string_to_dict

    source_url = path.split("::")[-1]
    pattern = config.HUB_DATASETS_URL if source_url.startswith(config.HF_ENDPOINT) else config.HUB_DATASETS_HFFS_URL
    fields = string_to_dict(source_url, pattern)
    token = (token_per_repo_id or {}).get(fields["repo_id"]) if fields is not None else None
    with xopen(path, "rb", download_config=DownloadConfig(token=token)) as f:
        return f.read()


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (``Image.decode_example``) with :func:`check_image_bytes` first."""

    def decode_example(self: Any, value: Any, token_per_repo_id: dict | None = None) -> Any:
        # the features of a dataset load() returned (marked, see follow()), or every one where install() was a
        # worker's init: another dataset of the process decodes as stock datasets does, its limits its own
        ours = _everywhere or getattr(self, _ATTR, None) is _FOLLOWS
        if ours and self.decode and isinstance(value, dict):  # anything else: the stock code passes it or raises
            data, path = value.get("bytes"), value.get("path")
            if data is None and path is not None:
                from datasets.utils.file_utils import is_local_path

                if is_local_path(path):
                    with open(path, "rb") as f:  # stock code opens the path itself: its image keeps `filename`
                        check_image_bytes(f.read(), path)
                else:  # stock code reads the URL into memory and opens that: hand it the bytes read once
                    data = _read_path(path, token_per_repo_id)
                    value = {**value, "bytes": data}
            if data is not None:
                check_image_bytes(data, path)
        return original(self, value, token_per_repo_id=token_per_repo_id)

    decode_example.__doc__ = original.__doc__
    decode_example.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(decode_example, _ORIGINAL, original)
    return decode_example


class _Follows:
    """Rides on the features of a dataset :func:`fusionrs_hf.load` returned (:func:`follow`), so that the guard
    follows the dataset into every process it is pickled to: unpickled, it installs the guard there first.

    A DataLoader worker started with ``spawn`` or ``forkserver`` (macOS, Windows, Linux from Python 3.14)
    receives the dataset pickled and imports ``datasets`` afresh, without the guard of the process that loaded
    it: without this, such a worker decoded the 2,010-scan row for 26 s. Copies (``ds.features`` is one; every
    derived dataset, ``.map``, ``.select``, ``.shuffle``, ``with_format``, deep-copies its features) keep this
    very object and install nothing."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _revived, ()

    def __copy__(self) -> _Follows:
        return self

    def __deepcopy__(self, memo: dict) -> _Follows:
        return self

    def __repr__(self) -> str:
        return "<fusionrs_hf.pil_guard: installed wherever this is unpickled>"


_FOLLOWS = _Follows()
_ATTR = "_fusionrs_image_guard"
"""Attribute of a marked feature object: not a dataclass field, so equality, ``repr`` and ``to_dict`` ignore it."""
_lifted = False
"""Whether :func:`uninstall` lifted the guard in this process: then an unpickled dataset does not put it back."""
_everywhere = False
"""Whether every ``Image`` decode of the process is guarded (``install`` as a DataLoader's ``worker_init_fn``), not
only those of the datasets :func:`fusionrs_hf.load` returned."""


def _revived() -> _Follows:
    if not _lifted:
        install()
    return _FOLLOWS


def follow(ds: Any) -> Any:
    """Mark ``ds`` (a Dataset, an IterableDataset or a dict of them, as ``load`` returns) so that any process
    it is unpickled in installs the guard before it decodes a row (see :class:`_Follows`); returns ``ds``.

    Every feature object is marked, not only the ``Image`` ones, so that the mark survives a dataset whose image
    columns were cast to new ``Image`` features. A dataset rebuilt from its serialized features
    (``load_from_disk``, a ``to_parquet`` file) carries no mark: give its DataLoader
    ``worker_init_fn=install``."""

    def mark(feature: Any) -> None:
        if isinstance(feature, dict):
            for f in feature.values():
                mark(f)
        elif isinstance(feature, list | tuple):
            for f in feature:
                mark(f)
        else:
            try:
                setattr(feature, _ATTR, _FOLLOWS)
            except (AttributeError, TypeError):  # a feature type without a __dict__: the others carry it
                pass
            if getattr(feature, "feature", None) is not None:  # List, Sequence, LargeList
                mark(feature.feature)

    for part in ds.values() if isinstance(ds, dict) else [ds]:
        info = getattr(part, "info", None)
        if info is not None and info.features is not None:
            mark(info.features)
    return ds


def install(worker_id: int | None = None, *, every_dataset: bool | None = None) -> None:
    """Hold the images stock ``datasets`` decodes for the datasets :func:`fusionrs_hf.load` returned (their
    features carry :func:`follow`'s mark) to the limits, and unregister PIL's EPS opener
    (:func:`~fusionrs_hf.limits.refuse_external_decoders`); other datasets of the process decode as stock does.
    Idempotent (a second call wraps nothing again) and thread-safe; :func:`fusionrs_hf.load` calls it before it
    hands out a dataset. As a DataLoader's ``worker_init_fn`` (it takes the worker id; ``every_dataset``
    defaults to True then) it guards every decode of that worker: the dataset it serves may have lost its mark
    (``load_from_disk``, a ``flatten_indices`` copy), and a worker started with ``spawn`` or ``forkserver``
    imports ``datasets`` afresh."""
    global _lifted, _everywhere

    from datasets.features.image import Image

    limits.refuse_external_decoders()
    with _LOCK:
        _lifted = False
        if every_dataset if every_dataset is not None else worker_id is not None:
            _everywhere = True  # a worker's init: the dataset it serves may have lost its mark (load_from_disk)
        current = Image.__dict__["decode_example"]
        if not hasattr(current, _ORIGINAL):
            Image.decode_example = _guarded(current)


def uninstall() -> None:
    """Put stock ``decode_example`` back (EPS stays unregistered: ``Image.register_open`` restores it).
    For an application that wants ``datasets`` to decode images past the limits, and for tests."""
    global _lifted, _everywhere

    from datasets.features.image import Image

    with _LOCK:
        _lifted, _everywhere = True, False
        current = Image.__dict__["decode_example"]
        if hasattr(current, _ORIGINAL):
            Image.decode_example = getattr(current, _ORIGINAL)


def installed() -> bool:
    """Whether stock ``datasets`` decoding is guarded in this process."""
    from datasets.features.image import Image

    return hasattr(Image.__dict__["decode_example"], _ORIGINAL)
