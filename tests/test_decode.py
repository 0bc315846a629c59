"""fusionrs_hf.decode: reduced-scale JPEG decode, crop/resize, normalization, errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fusionrs_hf import decode as dec
from fusionrs_hf.decode import (
    CLIP_MEAN,
    CLIP_STD,
    DecodeError,
    Normalizer,
    center_crop_resize,
    decode_resize,
    decode_rgb,
    denormalize,
    empty_images,
    is_channels_last,
    jpeg_scale,
)
from fusionrs_hf.scenes import jpeg_bytes, render_scene


@pytest.fixture(scope="module")
def scene256():
    return render_scene(np.random.default_rng(3), 256)


def _enc(arr: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


BACKENDS = ["pil"] + (["simplejpeg"] if dec.has_simplejpeg() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("target", "expected"), [(224, 256), (128, 128), (100, 128), (60, 64), (20, 32)])
def test_reduced_scale_never_below_target(scene256, backend, target, expected):
    arr = decode_rgb(jpeg_bytes(scene256.rgb), target, backend=backend)
    assert arr.shape == (expected, expected, 3) and arr.dtype == np.uint8
    assert min(arr.shape[:2]) >= target


def test_backends_give_identical_pixels(scene256):
    if not dec.has_simplejpeg():
        pytest.skip("simplejpeg not installed")
    data = jpeg_bytes(scene256.ir)
    for target in (None, 64, 120, 200):
        a = decode_rgb(data, target, backend="pil")
        b = decode_rgb(data, target, backend="simplejpeg")
        assert a.shape == b.shape and np.array_equal(a, b)


def test_jpeg_scale_matches_pil_draft():
    assert [jpeg_scale(512, 512, s) for s in (600, 512, 256, 224, 128, 64, 10)] == [1, 1, 2, 2, 4, 8, 8]
    assert jpeg_scale(512, 300, 128) == 2  # the shorter side decides


def test_decode_resize_close_to_full_pil(scene256):
    data = jpeg_bytes(scene256.rgb, 95)
    got = decode_resize(data, 96)
    assert got.shape == (3, 96, 96) and got.dtype == torch.uint8
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((96, 96), Image.BILINEAR))
    diff = np.abs(got.permute(1, 2, 0).numpy().astype(int) - ref.astype(int))
    assert diff.mean() < 4  # reduced-scale decode + resize vs full decode + resize: a few grey levels
    # and the resize itself is PIL's bilinear to the pixel when no DCT scaling applies
    full = decode_rgb(data, None)
    exact = center_crop_resize(full, 200).permute(1, 2, 0).numpy()
    ref200 = np.asarray(Image.fromarray(full).resize((200, 200), Image.BILINEAR))
    assert np.abs(exact.astype(int) - ref200.astype(int)).max() <= 1


def test_center_crop_of_non_square():
    arr = np.zeros((60, 120, 3), np.uint8)
    arr[:, :30] = 255  # left quarter white: cropped away
    arr[:, 90:] = 255  # right quarter white: cropped away
    arr[:, 30:90] = 80
    out = center_crop_resize(arr, 30)
    assert out.shape == (3, 30, 30)
    assert int(out.max()) == 80 and int(out.min()) == 80


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("shape", [(64, 64), (40, 52), (80, 48)])
def test_resize_into_a_batch_row_writes_that_row_only(shape, channels_last):
    """``out=`` (uint8 batches are resized straight into their row): the same pixels as without it, in the
    row given whatever the batch layout, its neighbours untouched, no new storage."""
    from fusionrs_hf.decode import image_strides

    arr = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    batch = torch.empty_strided((3, 3, 40, 40), image_strides((3, 3, 40, 40), channels_last), dtype=torch.uint8)
    batch.fill_(7)
    got = center_crop_resize(arr, 40, out=batch[1])
    assert got.data_ptr() == batch[1].data_ptr() and torch.equal(batch[1], center_crop_resize(arr, 40))
    assert bool((batch[0] == 7).all()) and bool((batch[2] == 7).all())


@pytest.mark.parametrize("shape", [(64, 64), (48, 80), (80, 48)])
def test_resize_output_is_channels_last_and_matches_the_nchw_kernel(shape):
    """The resize must see a true channels-last batch (batch stride included): that takes torch's
    vectorised uint8 kernel and hands Normalizer (H, W, 3) memory. Values match the plain NCHW
    kernel to within rounding."""
    arr = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    out = center_crop_resize(arr, 40)
    assert out.shape == (3, 40, 40) and out.stride() == (1, 120, 3)
    side = min(shape)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    nchw = torch.from_numpy(arr[top:top + side, left:left + side]).permute(2, 0, 1).contiguous()[None].float()
    ref = torch.nn.functional.interpolate(nchw, size=(40, 40), mode="bilinear", antialias=True,
                                          align_corners=False)[0].round().clamp(0, 255)
    assert (out.float() - ref).abs().max() <= 1


def test_grayscale_and_png_inputs(scene256):
    gray = _enc(scene256.ir[..., 0])  # an L-mode JPEG
    arr = decode_rgb(gray, 64)
    assert arr.shape[2] == 3 and np.array_equal(arr[..., 0], arr[..., 1])
    png = _enc(scene256.rgb, "PNG")
    assert np.array_equal(decode_rgb(png, 64), scene256.rgb)  # lossless, not scaled (not a JPEG)
    # 3-channel IR keeps its slightly different channels
    ir = decode_rgb(jpeg_bytes(scene256.ir), None)
    assert not np.array_equal(ir[..., 0], ir[..., 1])


@pytest.mark.parametrize("bad", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_bad_bytes_raise_decode_error(bad):
    with pytest.raises(DecodeError):
        decode_resize(bad, 32)


def test_truncated_jpeg_raises(scene256):
    data = jpeg_bytes(scene256.rgb)
    with pytest.raises(DecodeError):
        decode_resize(data[:500], 64)


def test_normalizer_round_trip_and_validation():
    u8 = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    x = Normalizer()(u8)
    assert x.dtype == torch.float32
    m = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    s = torch.tensor(CLIP_STD).view(3, 1, 1)
    assert torch.allclose(x, (u8.float() / 255 - m) / s, atol=1e-5)
    assert torch.allclose(denormalize(x), u8.float() / 255, atol=1e-5)
    out = torch.empty(2, 3, 8, 8)
    Normalizer((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(u8, out[1])
    assert torch.allclose(out[1], u8.float() / 127.5 - 1, atol=1e-5)
    with pytest.raises(ValueError):
        Normalizer(std=(1, 0, 1))
    with pytest.raises(ValueError):
        Normalizer(mean=(0.5,))


@pytest.mark.parametrize("threads", [1, 2])  # 1: torch kernels (workers); 2: the numpy branch
@pytest.mark.parametrize("src_layout", ["hwc", "chw"])
def test_normalizer_into_channels_last_slots_matches_contiguous(threads, src_layout):
    """The channels-last fast path (tiled row scale) gives the per-channel formula exactly."""
    h, w = 6, 10  # not square: catches a row tiled with the wrong width
    hwc = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8)
    u8 = hwc.permute(2, 0, 1) if src_layout == "hwc" else hwc.permute(2, 0, 1).contiguous()
    norm = Normalizer((0.1, 0.5, 0.9), (0.2, 0.3, 0.4))
    ref = (u8.float() / 255 - torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1)) / torch.tensor([0.2, 0.3, 0.4]).view(3, 1, 1)
    slot = empty_images((4, 3, h, w))
    assert is_channels_last(slot) and is_channels_last(slot[2]) and not slot.is_contiguous()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        norm(u8, slot[2])
    finally:
        torch.set_num_threads(old)
    assert torch.allclose(slot[2], ref, atol=1e-5)
    assert slot[2].stride() == (1, w * 3, 3)  # written in place, layout kept


def _claims(width: int, height: int) -> bytes:
    """A real 16 px JPEG whose frame header (SOF0) claims ``width`` x ``height``: a few hundred bytes."""
    import io as _io
    import struct

    from PIL import Image

    buf = _io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 60)).save(buf, format="JPEG", quality=90)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("backend", ["auto", "pil"])
def test_an_image_claiming_too_many_pixels_is_refused_before_decoding(backend):
    """A header of 60,000 x 60,000 (3.6 G pixels) in a ~700-byte file: refused from the header, by the same
    limit a build applies, on both decoders; under the limit the same trick decodes (or fails) normally."""
    from fusionrs_hf.decode import DecodeError, decode_rgb
    from fusionrs_hf.limits import DEFAULT_MAX_PIXELS

    bomb = _claims(60_000, 60_000)
    assert len(bomb) < 2_000
    if backend == "auto" and not dec.has_simplejpeg():
        pytest.skip("simplejpeg not installed")
    with pytest.raises(DecodeError, match=r"says (60000x60000 = )?3,600,000,000 pixels, more than the limit 50,000,000"):
        decode_rgb(bomb, 224, backend=backend)
    assert decode_rgb(_claims(16, 16), 16, backend=backend).shape == (16, 16, 3)
    with pytest.raises(DecodeError, match="16x16 = 256 pixels, more than the limit 100"):
        decode_rgb(_claims(16, 16), 16, backend=backend, max_pixels=100)
    assert DEFAULT_MAX_PIXELS == 50_000_000


def test_check_reports_an_image_claiming_too_many_pixels():
    from fusionrs_hf.check import inspect_image

    with pytest.raises(ValueError, match="3,600,000,000 pixels, more than the limit 50,000,000; not decoded"):
        inspect_image(_claims(60_000, 60_000))


def test_the_loader_names_the_sample_whose_image_claims_too_many_pixels(tmp_path):
    """A shard row whose rgb header claims 60,000² px: the loader raises naming sample, shard and column, or
    with on_error="skip" leaves the row out and counts it; max_pixels=None lifts the limit (then the decoder
    itself fails on the fake body, still a named DecodeError)."""
    import pyarrow.parquet as pq

    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.demo import make_sample_repo
    from fusionrs_hf.torch import make_dataloader

    repo = make_sample_repo(tmp_path / "repo", counts={"train": 4}, size=32, max_rows=20)
    shard = sorted((repo / "data").rglob("*/train/*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["rgb"] = {"bytes": _claims(60_000, 60_000), "path": rows[0]["rgb"]["path"]}
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    sid = rows[0]["sample_id"]
    config = "default"
    with pytest.raises(DecodeError, match=rf"sample_id='{sid}' shard=.*column='rgb': image header says .*more than the limit"):
        [b for b in make_dataloader(str(repo), config=config, batch_size=4)]
    loader = make_dataloader(str(repo), config=config, batch_size=4, on_error="skip")
    with pytest.warns(RuntimeWarning, match=sid):
        got = [s for b in loader for s in b["sample_id"]]
    assert sid not in got and loader.skipped == 1
    with pytest.raises(DecodeError, match=f"sample_id='{sid}'"):
        [b for b in make_dataloader(str(repo), config=config, batch_size=4, max_pixels=None)]


def test_a_progressive_jpeg_of_too_many_scans_is_refused_unread():
    """A progressive JPEG with 150 scans (each would refine every pixel again: minutes for a few KB) is refused
    by the loader's decoder and by check; an ordinary progressive JPEG (about 10 scans) decodes as before."""
    import io as _io

    from PIL import Image

    from fusionrs_hf.check import inspect_image
    from fusionrs_hf.decode import DecodeError, decode_rgb
    from fusionrs_hf.limits import MAX_JPEG_SCANS, jpeg_scans

    buf = _io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 60)).save(buf, format="JPEG", quality=90, progressive=True)
    good = buf.getvalue()
    assert 1 < jpeg_scans(good) <= 12 and jpeg_scans(_claims(16, 16)) == 0  # baseline: one pass, not counted
    assert decode_rgb(good, 64).shape == (64, 64, 3)
    scan = good[good.rindex(b"\xff\xda"):-2]  # the last scan, repeated before EOI
    bomb = good[:-2] + scan * 150 + b"\xff\xd9"
    assert jpeg_scans(bomb) > MAX_JPEG_SCANS
    for backend in ("auto", "pil"):
        with pytest.raises(DecodeError, match=r"progressive JPEG of 1\d\d scans, more than the limit 100"):
            decode_rgb(bomb, 64, backend=backend)
    with pytest.raises(ValueError, match="scans, more than the limit 100"):
        inspect_image(bomb)
