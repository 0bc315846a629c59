"""The build-time image rule: every stored image is 8-bit RGB or grayscale, in the orientation DiffV2IR saw.

Readers (``datasets.Image``, PIL, our loader) decode what they are given: a 16-bit PNG stored as is
decodes as ``I;16`` and turns solid white once converted to 8-bit RGB, and a JPEG with an EXIF
orientation is rotated by ``datasets.Image`` and our loader while its IR (written by DiffV2IR from the
stored pixel grid, without EXIF) is not. So the build normalises once, the same way for both images
of a pair:

- A JPEG in an 8-bit mode (L, RGB, YCbCr) is stored byte for byte; only a non-trivial EXIF orientation
  tag is rewritten to 1 in place (no pixel changes), so every reader sees the stored grid.
- Anything else (16-bit or 32-bit samples, float, alpha, palettes, CMYK, 1-bit, TIFF, BMP, WebP) is
  decoded and stored as a lossless 8-bit PNG (``--non-jpeg keep`` stores an 8-bit L/RGB file of any format
  as it is): 16-bit samples keep their high byte, 32-bit integer
  samples are scaled from their own range, float samples are read as 0..1 (or 0..255 when larger),
  alpha is dropped, palettes are expanded, CMYK is converted to RGB. ``--non-jpeg jpeg`` re-encodes
  these as JPEG instead (the one lossy path, only when asked).
- An image of more than ``max_pixels`` pixels (default :data:`DEFAULT_MAX_PIXELS`) is refused from its
  header alone, before any decode (``too_many_pixels``): a 13000² PNG of 164 KB would cost gigabytes
  in every reader.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np

from ..limits import DEFAULT_MAX_PIXELS, MAX_SOURCE_BYTES, ImageRefused, open_image

EIGHT_BIT_MODES = frozenset({"L", "RGB"})


class ImageDrop(Exception):
    """One image cannot be used; ``reason`` is the report's drop reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _orientation_field(data: bytes) -> tuple[int, str] | None:
    """(byte offset, struct endianness) of the EXIF orientation value in a JPEG's APP1, or ``None``."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == 0xDA:  # start of scan: no metadata segment follows
            return None
        seg = pos + 4
        if marker == 0xE1 and data[seg:seg + 6] == b"Exif\x00\x00":
            tiff = seg + 6
            endian = {b"II": "<", b"MM": ">"}.get(data[tiff:tiff + 2])
            if endian is None or tiff + 8 > len(data):
                return None
            ifd = tiff + struct.unpack(endian + "I", data[tiff + 4:tiff + 8])[0]
            if ifd + 2 > len(data):
                return None
            for i in range(struct.unpack(endian + "H", data[ifd:ifd + 2])[0]):
                entry = ifd + 2 + 12 * i
                if entry + 12 > len(data):
                    return None
                tag, typ = struct.unpack(endian + "HH", data[entry:entry + 4])
                if tag == 0x0112 and typ == 3:  # SHORT: the value sits in the first 2 bytes of the field
                    return entry + 8, endian
            return None
        pos += 2 + length
    return None


def reset_orientation(data: bytes) -> tuple[bytes, int]:
    """(JPEG bytes with EXIF orientation 1, the orientation it had); the pixel data is untouched."""
    where = _orientation_field(data)
    if where is None:
        return data, 1
    off, endian = where
    value = struct.unpack(endian + "H", data[off:off + 2])[0]
    if value in (0, 1):
        return data, 1
    return data[:off] + struct.pack(endian + "H", 1) + data[off + 2:], value


def to_8bit(im) -> object:
    """An 8-bit L or RGB PIL image with the pixels of ``im`` (see the module rule)."""
    from PIL import Image

    mode = im.mode
    if mode in EIGHT_BIT_MODES:
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(im, dtype=np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8), "L")
    if mode == "I":
        arr = np.asarray(im, dtype=np.int64)
        hi = int(arr.max()) if arr.size else 0
        shift = max(0, hi.bit_length() - 8)
        return Image.fromarray(np.clip(arr >> shift, 0, 255).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        scale = 255.0 if arr.size and np.nanmax(arr) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8), "L")
    if mode in ("1", "LA", "La"):
        return im.convert("L")
    if mode == "P" and "transparency" in im.info:
        return im.convert("RGBA").convert("RGB")
    return im.convert("RGB")  # RGBA, RGBa, P, CMYK, YCbCr, LAB, HSV, RGBX


@contextlib.contextmanager
def _header_only_guard():
    """PIL's global pixel limit off while a header is read (decoding happens only within our limit)."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def read_source(path: Path, what: str, limit: int | None = None) -> bytes:
    """The bytes of one source image file, or :class:`ImageDrop` naming it: missing, not a regular file (a FIFO
    would block the build forever: opened non-blocking and refused unread) or larger than ``limit`` (default
    :data:`~fusionrs_hf.limits.MAX_SOURCE_BYTES`)."""
    limit = MAX_SOURCE_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageDrop(f"missing_{what}", f"{what} file not found: {path}") from None
    except OSError as e:
        raise ImageDrop(f"undecodable_{what}", f"{what} file unreadable: {path}: {e}") from None
    with os.fdopen(fd, "rb") as fh:
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImageDrop(f"undecodable_{what}", f"{what} file unreadable: {path}: not a regular file "
                                                       "(a FIFO, socket or device); not read")
            if st.st_size > limit:
                raise ImageDrop(f"undecodable_{what}", f"{what} file {path}: {st.st_size:,} bytes, more than the "
                                                       f"limit {limit:,} (MAX_SOURCE_BYTES); not read")
            data = fh.read(limit + 1)
        except OSError as e:
            raise ImageDrop(f"undecodable_{what}", f"{what} file unreadable: {path}: {e}") from None
    if len(data) > limit:
        raise ImageDrop(f"undecodable_{what}", f"{what} file {path}: more than the limit {limit:,} bytes "
                                               "(MAX_SOURCE_BYTES); not read")
    return data


def load_image(path: Path, what: str, non_jpeg: str = "png", jpeg_quality: int = 95,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[bytes, tuple[int, int], dict]:
    """Read one image, apply the rule; return (bytes to store, (width, height), notes for the report)."""
    from PIL import Image

    data = read_source(path, what)
    notes: dict = {}
    try:
        with warnings.catch_warnings():
            # our own limit, judged below from the header, replaces PIL's bomb guard (it would stop at
            # open with a message naming no size, and warn below twice its limit)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _header_only_guard(), open_image(data, None) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise ImageDrop("too_many_pixels", f"{what} {path}: {w}x{h} = {w * h:,} pixels, more than "
                                                       f"the limit {max_pixels:,} (--max-pixels)")
                im.load()
                fmt, mode = im.format, im.mode
                if fmt == "JPEG" and mode in ("L", "RGB"):
                    data, orientation = reset_orientation(data)
                    if orientation != 1:
                        notes["exif_orientation_reset"] = orientation
                    return data, (w, h), notes
                if fmt == "JPEG" and mode == "CMYK" and non_jpeg != "jpeg":
                    notes["converted_from"] = mode
                norm = to_8bit(im)
                if norm.mode != mode or fmt != "PNG":
                    notes["converted_from"] = f"{fmt} {mode}"
                if norm is im and (non_jpeg == "keep" or (fmt == "PNG" and non_jpeg == "png")):
                    return data, (w, h), {}  # already 8-bit L/RGB: stored as it is (keep: in any format)
                buf = io.BytesIO()
                if non_jpeg == "jpeg":
                    norm.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
                else:
                    norm.save(buf, format="PNG")
                return buf.getvalue(), (w, h), notes
    except ImageDrop:
        raise
    except ImageRefused as e:
        raise ImageDrop(e.reason, f"{what} {path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a per-row finding
        if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
            raise ImageDrop("too_many_pixels", f"{what} {path}: {e}") from None
        raise ImageDrop(f"undecodable_{what}", f"{what} {path}: cannot decode ({type(e).__name__}: {e})") from None
