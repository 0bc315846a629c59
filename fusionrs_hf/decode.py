"""Fast image decode for training: JPEG bytes -> reduced-scale decode -> crop/resize -> normalized tensor.

Why not ``datasets.Image``: its ``decode_example`` always does a full-size PIL decode, and a
512 px JPEG going to a 224 px model spends most of its time on pixels that the resize throws
away. Here:

1. JPEGs are decoded with libjpeg-turbo's DCT scaling (``simplejpeg`` when installed, else PIL
   ``Image.draft``; both at the same 1/2, 1/4 or 1/8 factor, so they give identical pixels), so a
   512 px image going to 224 px is decoded at 256 px. The scale never goes below the requested
   size, so no detail the resize keeps is lost.
2. The centre square (the CLIP "resize shorter side, centre crop" recipe) is resized with torch's
   uint8 antialiased bilinear kernel, which matches PIL's ``BILINEAR`` resize closely and runs
   several times faster than PIL on uint8.
3. Normalization (:class:`Normalizer`) writes each image straight into its float32 batch slot:
   a uint8->float copy and two in-place passes while the image is still in cache. Writing 4
   bytes per value is memory-bound and costs about a tenth of the decode+resize time.

Images keep the channels they are stored with: the infrared-style images of FusionRS are
3-channel JPEGs whose channels are close but not identical, and they are decoded as RGB like the
RGB images (a grayscale file is expanded to 3 equal channels). EXIF orientation is applied only
when the file carries EXIF (the PIL path); FusionRS images carry none.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .limits import (
    DEFAULT_MAX_PIXELS,
    MAX_JPEG_SCANS,
    ImageRefused,
    jpeg_scans,
    open_image,
    too_many_pixels,
    too_many_scans,
)

try:  # optional: ~10-40% faster JPEG decode than PIL, same libjpeg-turbo scaling
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised only where simplejpeg is absent
    _simplejpeg = None

CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP normalization, the default for both modalities."""

_JPEG_SOI = b"\xff\xd8\xff"


class DecodeError(ValueError):
    """An image cell could not be decoded; the message names what is known (sample, shard, column)."""


def has_simplejpeg() -> bool:
    return _simplejpeg is not None


def _is_jpeg(data: bytes | memoryview) -> bool:
    return data[:3] == _JPEG_SOI


def _has_exif(data: bytes | memoryview) -> bool:
    # APP1/Exif sits right after SOI (or after APP0/JFIF): looking at the first KiB is enough.
    return b"Exif\x00\x00" in bytes(data[:1024])


def jpeg_scale(width: int, height: int, min_size: int) -> int:
    """The JPEG downscale denominator (1, 2, 4 or 8) PIL's ``draft`` picks for a ``min_size`` square request.

    libjpeg-turbo can also scale by M/8 (7/8, 6/8, ...); both backends are held to the
    power-of-two factors so that simplejpeg and PIL give the same pixels.
    """
    s = min(width // min_size, height // min_size) if min_size > 0 else 1
    return 8 if s >= 8 else 4 if s >= 4 else 2 if s >= 2 else 1


def _check_pixels(w: int, h: int, max_pixels: int | None) -> None:
    if max_pixels is not None and w * h > max_pixels:
        raise DecodeError(too_many_pixels(w, h, max_pixels))


def decode_rgb(data: bytes | bytearray | memoryview, min_size: int | None = None, *,
               backend: str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to a uint8 HxWx3 array, at the smallest JPEG scale whose sides are >= ``min_size``.

    ``data`` may be any bytes-like object (a view into an Arrow buffer is decoded without a copy).
    ``backend``: "auto" (simplejpeg for plain JPEGs when installed, else PIL), "pil" or "simplejpeg".
    Raises :class:`DecodeError` for empty, truncated or unknown data, and for an image whose header claims
    more than ``max_pixels`` pixels (None: no limit).
    """
    if not isinstance(data, bytes):
        data = memoryview(data).cast("B")
    if not len(data):
        raise DecodeError("empty image bytes")
    if _is_jpeg(data):
        scans = jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise DecodeError(too_many_scans(scans))
    use_sj = backend == "simplejpeg" or (
        backend == "auto" and _simplejpeg is not None and _is_jpeg(data) and not _has_exif(data))
    if use_sj:
        if _simplejpeg is None:
            raise DecodeError("backend 'simplejpeg' requested but simplejpeg is not installed")
        try:
            kw = {}
            if min_size or max_pixels is not None:
                h, w = _simplejpeg.decode_jpeg_header(data)[:2]
                _check_pixels(w, h, max_pixels)
                if min_size:
                    k = jpeg_scale(w, h, min_size)
                    kw = {"min_height": -(-h // k), "min_width": -(-w // k)}
            return _simplejpeg.decode_jpeg(data, colorspace="RGB", **kw)
        except DecodeError:
            raise
        except Exception:  # noqa: BLE001 - CMYK/progressive oddities: let PIL try before giving up
            if backend == "simplejpeg":
                raise
    try:
        im = open_image(data, max_pixels)  # only raster formats PIL decodes itself; pixel limit from the header
        if min_size and im.format in ("JPEG", "MPO"):  # MPO: a JPEG with more frames (and EXIF), same DCT
            im.draft("RGB", (min_size, min_size))  # DCT scaling; never below the request
        if _has_exif(data):
            im = ImageOps.exif_transpose(im)
        if im.mode != "RGB":
            im = im.convert("RGB")
        arr = np.asarray(im)
    except DecodeError:
        raise
    except ImageRefused as e:
        raise DecodeError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
        raise DecodeError(f"cannot decode image ({len(data)} bytes): {type(e).__name__}: {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DecodeError(f"decoded image has shape {arr.shape}, expected HxWx3")
    return arr


def _resize_into(t: torch.Tensor, size: int, out: torch.Tensor) -> None:
    """The antialiased resize of 1x3xHxW ``t`` written straight into ``out`` (3xSxS), sparing the result's
    allocation and its copy (~10 us of ~100 per 512 -> 224 px image); ``interpolate`` + copy where the
    ``out=`` overload of the kernel is missing."""
    global _AA_OUT
    if _AA_OUT:
        try:
            torch.ops.aten._upsample_bilinear2d_aa.out(t, [size, size], False, None, None, out=out.unsqueeze(0))
            return
        except (AttributeError, RuntimeError, TypeError):
            _AA_OUT = False
    out.copy_(F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0])


_AA_OUT = True


def center_crop_resize(arr: np.ndarray | torch.Tensor, size: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 HxWx3 -> uint8 3xSxS: centre square crop, then antialiased bilinear resize (CLIP recipe).

    The result is stored channels-last (strides (1, 3S, 3)), as torch's resize kernel writes it; with
    ``out`` (uint8 3xSxS, e.g. a row of a batch) it is written there and ``out`` returned.
    """
    readonly = isinstance(arr, np.ndarray) and not arr.flags.writeable
    t = arr
    if isinstance(arr, np.ndarray):
        # PIL hands out read-only buffers; we only read them here (a copy is made below when needed),
        # so torch's "non-writable array" warning does not apply. Only those take the (slow, ~0.15 ms)
        # warnings context: simplejpeg's arrays are writable.
        with warnings.catch_warnings() if readonly else contextlib.nullcontext():
            if readonly:
                warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.ascontiguousarray(arr))
    h, w = int(t.shape[0]), int(t.shape[1])
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    # 1x3xSxS view of the HWC pixels: channels-last strides, the batch stride included
    t = t[top:top + side, left:left + side].unsqueeze(0).permute(0, 3, 1, 2)
    if out is not None:
        if side == size:
            out.copy_(t[0])
        else:
            _resize_into(t, size, out)
        return out
    if side == size:
        return t[0].clone() if readonly else t[0]
    # Channels-last uint8 input takes torch's vectorised uint8 antialias kernel and gives
    # channels-last output, which Normalizer writes into channels-last batches fastest. The
    # batch stride matters: a permute-then-unsqueeze view (batch stride 3) is not recognised as
    # channels-last, and took the generic kernel (measured 183 vs 109 us at 256 -> 224 px).
    out = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out[0]


def decode_resize(data: bytes, size: int, *, backend: str = "auto") -> torch.Tensor:
    """Bytes -> uint8 tensor (3, size, size). The unit of work the benchmark's decode limit times."""
    return center_crop_resize(decode_rgb(data, size, backend=backend), size)


def pil_to_array(img: Image.Image) -> np.ndarray:
    """A PIL image (as yielded by stock ``datasets`` decoding) as uint8 HxWx3."""
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether image tensor ``t`` (..., 3, H, W) is stored as (..., H, W, 3), torch's ``channels_last``.

    Works for any number of leading dimensions (``torch.Tensor.is_contiguous(memory_format=...)``
    only takes 4-D tensors).
    """
    st, shape = t.stride(), t.shape  # two calls: Normalizer asks this once per image
    if len(st) < 3:
        return False
    c, h, w = shape[-3:]
    return st[-3] == 1 and st[-1] == c and st[-2] == c * w and (len(st) == 3 or st[-4] == c * h * w)


def image_strides(shape: Sequence[int], channels_last: bool = True) -> tuple[int, ...]:
    """Strides of a dense image tensor of logical shape (..., 3, H, W), stored (..., H, W, 3) if ``channels_last``."""
    *lead, c, h, w = (int(x) for x in shape)
    inner = (1, w * c, c) if channels_last else (h * w, w, 1)
    strides: list[int] = []
    step = c * h * w
    for n in reversed(lead):
        strides.insert(0, step)
        step *= n
    return (*strides, *inner)


def empty_images(shape: Sequence[int], dtype: torch.dtype = torch.float32, *,
                 channels_last: bool = True) -> torch.Tensor:
    """An uninitialised image tensor of logical shape (..., 3, H, W), stored channels-last if asked.

    Made with ``empty_strided``, not as a permuted view: a view keeps its base tensor alive, which
    would count as a second user of the storage in the reuse checks of ``fusionrs_hf.torch``.
    """
    shape = tuple(int(x) for x in shape)
    return torch.empty_strided(shape, image_strides(shape, channels_last), dtype=dtype)


class Normalizer:
    """uint8 (3,S,S) -> float32 ``(x/255 - mean) / std`` written into a preallocated batch slot.

    Folded into x * 1/(255 std) + (-mean/std): a uint8->float copy and two in-place passes, which
    measures ~3x faster than a mixed-dtype ``addcmul`` here.
    """

    def __init__(self, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values each, got {list(mean)} and {list(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0, got {list(std)}")
        m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.mean, self.std = tuple(float(x) for x in mean), tuple(float(x) for x in std)
        self._scale = 1.0 / (255.0 * s)
        self._bias = -m / s
        self._scale_np, self._bias_np = self._scale.numpy(), self._bias.numpy()
        self._rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, img_u8: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is None:
            out = torch.empty(img_u8.shape, dtype=torch.float32)
        if out.dim() == 3 and is_channels_last(out):  # one image stored (H, W, 3): see _hwc_into
            return self._hwc_into(img_u8, out)
        if torch.get_num_threads() == 1:  # DataLoader workers: torch's kernels are the fastest
            return out.copy_(img_u8).mul_(self._scale).add_(self._bias)
        # Elsewhere torch would split this small op over its OpenMP pool, whose spinning threads
        # starve the loader workers on small machines (measured 100x slower on 2 busy cores);
        # numpy is single-threaded.
        self.numpy_into(img_u8.numpy(), out.numpy())
        return out

    def _hwc_into(self, img_u8: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out`` stored as (H, W, 3): each of its H rows is W*3 floats in a row, so the scale and
        bias become one tiled row of W*3 values and every pass is a plain vectorised loop. With
        the channel as the innermost, size-3 dimension (the per-channel (3,1,1) broadcast) torch
        measures 5x slower, and writing channel planes (NCHW) from HWC pixels 2x slower."""
        _, h, w = out.shape
        rows_sb = self._rows.get(w)
        if rows_sb is None:
            rows_sb = self._rows[w] = (self._scale.view(3).repeat(w), self._bias.view(3).repeat(w))
        srow, brow = rows_sb
        hwc = out.permute(1, 2, 0)
        rows = hwc.view(h, w * 3)
        if torch.get_num_threads() == 1:
            hwc.copy_(img_u8.permute(1, 2, 0))
            rows.mul_(srow).add_(brow)
        else:  # single-threaded numpy, for the reason given in __call__
            r = rows.numpy()
            hwc.numpy()[...] = img_u8.permute(1, 2, 0).numpy()
            r *= srow.numpy()
            r += brow.numpy()
        return out

    def on_device(self, img_u8: torch.Tensor) -> torch.Tensor:
        """uint8 images (..., 3, H, W) on any device -> a new normalized float32 tensor there (e.g. on the GPU)."""
        dev = img_u8.device
        return img_u8.float().mul_(self._scale.to(dev)).add_(self._bias.to(dev))

    def numpy_into(self, x_u8: np.ndarray, out: np.ndarray) -> None:
        """``out[...] = x * 1/(255 std) - mean/std`` for (..., 3, H, W) arrays, single-threaded."""
        # cast-assign then two in-place passes: ~30% faster than np.multiply(x_u8, scale, out=out),
        # whose mixed-dtype loop re-casts per element; same float32 arithmetic, same result.
        out[...] = x_u8
        out *= self._scale_np
        out += self._bias_np

    def __getstate__(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["mean"], state["std"])


def normalize(img_u8: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
              std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Convenience: one uint8 (..., 3, S, S) tensor -> normalized float32."""
    return Normalizer(mean, std)(img_u8)


def denormalize(x: torch.Tensor, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD) -> torch.Tensor:
    """Inverse of :func:`normalize`, to [0, 1] floats (for viewing and tests)."""
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return x * s + m
