"""Every reader opens images through ``fusionrs_hf.limits.open_image``: raster formats PIL decodes itself only
(PostScript would go to Ghostscript), the JPEG scan limit and the pixel limit, in the loader, the VLM reader,
check, the build and the card's contact sheet alike."""

from __future__ import annotations

import io
import logging

import pytest
from PIL import Image, UnidentifiedImageError

from fusionrs_hf.limits import IMAGE_FORMATS, ImageRefused, open_image

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
       b"0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


def _progressive(scans: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 120, 60)).save(buf, format="JPEG", quality=90, progressive=True)
    good = buf.getvalue()
    scan = good[good.rindex(b"\xff\xda"):-2]  # the last scan, repeated before EOI
    return good[:-2] + scan * scans + b"\xff\xd9"


def _png(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_postscript_is_not_an_image_here():
    assert Image.open(io.BytesIO(EPS)).format == "EPS"  # what PIL alone would do: hand it to Ghostscript
    with pytest.raises(UnidentifiedImageError, match="not an image in a readable format"):
        open_image(EPS)
    assert "EPS" not in IMAGE_FORMATS and open_image(_png()).format == "PNG"


def test_every_reader_refuses_postscript_and_scan_bombs():
    from fusionrs_hf.check import inspect_image
    from fusionrs_hf.decode import DecodeError, decode_rgb
    from fusionrs_hf.vlm_data import _ir_image

    bomb = _progressive(150)
    for data, what in ((EPS, "readable format"), (bomb, "scans, more than the limit")):
        with pytest.raises(DecodeError, match=what):
            decode_rgb(data, 32, backend="pil")
        with pytest.raises((ValueError, OSError), match=what):
            inspect_image(data)
        with pytest.raises((ValueError, OSError), match=what):
            _ir_image({"bytes": data})


def test_the_build_drops_them_by_name(tmp_path):
    from fusionrs_hf.build.images import ImageDrop, load_image

    for name, data, reason in (("a.jpg", EPS, "undecodable_rgb"), ("b.jpg", _progressive(150), "too_many_scans")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageDrop) as e:
            load_image(path, "rgb")
        assert e.value.reason == reason and str(path) in e.value.detail


def test_the_contact_sheet_shows_a_bad_image_grey_and_names_it(caplog):
    from fusionrs_hf.card_assets import THUMB, _thumb

    with caplog.at_level(logging.WARNING, logger="fusionrs_hf.card"):
        for data in (EPS, b"garbage", _progressive(150)):
            im = _thumb(data, "rgb of sample_id='x-1' (data/x.parquet)")
            assert im.size == (THUMB, THUMB) and im.getpixel((0, 0)) == (200, 200, 200)
    assert sum("sample_id='x-1' (data/x.parquet) does not decode" in r.getMessage() for r in caplog.records) == 3


def test_pixel_limit_is_judged_from_the_header():
    with pytest.raises(ImageRefused, match="more than the limit 100") as e:
        open_image(_png((20, 20)), max_pixels=100)
    assert e.value.reason == "too_many_pixels"
    assert open_image(_png((20, 20)), max_pixels=None).size == (20, 20)
