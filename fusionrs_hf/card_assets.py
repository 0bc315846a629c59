"""The pictures next to the card: ``assets/contact_sheet.png`` and ``assets/counts.png``.

- The contact sheet shows triplets from every source (RGB | IR | caption and IR-aware caption), the first
  rows of each source's first shard (train and IR-aware shards first), so a reader sees what a row is
  before reading a word of the card.
- The counts figure shows rows per source and split (one panel per split, each on its own scale, the
  IR-aware part darker), the same numbers as the card's counts table.

Both are drawn with Pillow alone (its built-in font) and saved without metadata, so the same repo always
gives the same bytes: ``fusionrs card`` writes them beside README.md and ``fusionrs push`` sends them with
it (and sends nothing when they did not change).
"""

from __future__ import annotations

import io
import textwrap
from collections import defaultdict
from collections.abc import Sequence

from .layout import DEFAULT_LAYOUT, GROUPS, SPLITS, Layout, ShardName
from .limits import open_image, refuse_big_row_groups

__all__ = ["ASSET_DIR", "CONTACT_SHEET", "COUNTS_FIGURE", "ASSET_PATHS", "contact_sheet_png", "counts_png",
           "render_assets"]

ASSET_DIR = "assets"
CONTACT_SHEET = f"{ASSET_DIR}/contact_sheet.png"
COUNTS_FIGURE = f"{ASSET_DIR}/counts.png"
ASSET_PATHS = (CONTACT_SHEET, COUNTS_FIGURE)
ROWS_PER_SOURCE = 2
THUMB = 80
_TEXT_W = 440
_PAD = 8
_SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}
_GROUP_ORDER = {g: i for i, g in enumerate(GROUPS)}


def _font(size: int = 11):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False, compress_level=9)
    return buf.getvalue()


_SHOWN = 400
"""Characters of a caption the contact sheet can show (3 lines of 72), with room for the wrap's word breaks."""


def _first_rows(fs, root: str, name: ShardName, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    cols = ["sample_id", "source", "rgb", "ir", "caption", "ir_caption"]
    with fs.open(f"{root.rstrip('/')}/{name.path}", "rb") as f:
        pf = pq.ParquetFile(f, pre_buffer=False)
        refuse_big_row_groups(pf.metadata, cols, name.path, f, shard=True)
        for batch in pf.iter_batches(batch_size=n, columns=cols, use_threads=False):
            out = batch.to_pylist()[:n]
            for r in out:
                r["_shard"] = name.path
            return out
    return []


def _thumb(data: bytes | None, where: str = ""):
    """A thumbnail; a grey square (and a warning naming ``where``) for bytes that do not decode: an
    unreadable image is ``check``'s finding to report, and no reason for the card to fail."""
    from PIL import Image

    if not data:
        return Image.new("RGB", (THUMB, THUMB), (200, 200, 200))
    try:
        return _decoded_thumb(data)
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad data
        import logging

        logging.getLogger("fusionrs_hf.card").warning("contact sheet: %s does not decode (%s: %s); shown grey",
                                                      where, type(e).__name__, str(e)[:200])
        return Image.new("RGB", (THUMB, THUMB), (200, 200, 200))


def _decoded_thumb(data: bytes):
    from PIL import Image, ImageOps

    with open_image(data) as im:  # the readers' formats and limits: a thumbnail is no reason to run more
        im.draft("RGB", (THUMB, THUMB))
        return ImageOps.fit(im.convert("RGB"), (THUMB, THUMB), Image.Resampling.BICUBIC)


def contact_sheet_png(fs, root: str, shards: Sequence[ShardName], lay: Layout = DEFAULT_LAYOUT) -> bytes | None:
    """The contact sheet of a repo (``fs``/``root``: where its shards are); None when it has no shards."""
    from PIL import Image, ImageDraw

    first: dict[str, ShardName] = {}
    for s in sorted(shards, key=lambda s: (_SPLIT_ORDER[s.split], _GROUP_ORDER[s.group], s.batch, s.index)):
        first.setdefault(s.source, s)
    sources = [src for src in lay.sources if src in first]
    sources += sorted(src for src in first if src not in sources)
    rows: list[dict] = []
    for src in sources:
        try:
            rows.extend(_first_rows(fs, root, first[src], ROWS_PER_SOURCE))
        except Exception:  # noqa: BLE001 - an unreadable shard is `check`'s business; the sheet skips it
            continue
    if not rows:
        return None
    font, bold = _font(11), _font(12)
    line_h = 14
    row_h = THUMB + _PAD
    head_h = 28
    width = 2 * THUMB + 4 * _PAD + _TEXT_W
    sheet = Image.new("RGB", (width, head_h + len(rows) * row_h + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, 8), "FusionRS triplets, every source: RGB | IR (synthetic) | caption / IR-aware caption",
              fill=(20, 20, 20), font=bold)
    for i, row in enumerate(rows):
        y = head_h + i * row_h
        where = f"sample_id={row.get('sample_id')!r} ({row.get('_shard')})"
        sheet.paste(_thumb((row.get("rgb") or {}).get("bytes"), f"rgb of {where}"), (_PAD, y))
        sheet.paste(_thumb((row.get("ir") or {}).get("bytes"), f"ir of {where}"), (2 * _PAD + THUMB, y))
        x = 3 * _PAD + 2 * THUMB
        draw.text((x, y), f"{row.get('source')}  {row.get('sample_id')}", fill=(0, 70, 140), font=bold)
        ir = row.get("ir_caption")
        # at most 3 lines of 72 are shown: wrap only what they can hold (wrapping a 50 Mi-word caption whole took
        # GBs and tens of seconds)
        lines = [(t, (40, 40, 40)) for t in textwrap.wrap(str(row.get("caption") or "")[:_SHOWN], 72)[:2]]
        lines += [(t, (110, 60, 0)) for t in (textwrap.wrap(f"IR: {str(ir)[:_SHOWN]}", 72)[:3] if ir
                                               else ["IR: (no IR-aware caption)"])]
        for j, (text, colour) in enumerate(lines[:5]):
            draw.text((x, y + 16 + j * line_h), text, fill=colour, font=font)
    return _png(sheet)


def counts_png(shards, lay: Layout = DEFAULT_LAYOUT) -> bytes | None:
    """Rows per source and split (``shards``: :class:`~fusionrs_hf.card.ShardInfo`); None without shards."""
    from PIL import Image, ImageDraw

    n: dict[tuple[str, str, str], int] = defaultdict(int)
    for s in shards:
        n[s.name.source, s.name.split, s.name.group] += s.num_rows
    if not n:
        return None
    present = {src for src, _, _ in n}
    sources = [src for src in lay.sources if src in present] + sorted(present - set(lay.sources))
    font, bold = _font(11), _font(12)
    label_w, panel_w, bar_h, gap = 90, 210, 14, 8
    top = 44
    width = label_w + len(SPLITS) * (panel_w + gap) + _PAD
    height = top + len(sources) * (bar_h + gap) + 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((_PAD, 6), "Rows per source and split (darker: with an IR-aware caption)", fill=(20, 20, 20),
              font=bold)
    for k, split in enumerate(SPLITS):
        x0 = label_w + k * (panel_w + gap)
        total = sum(n[src, split, g] for src in sources for g in GROUPS)
        draw.text((x0, 24), f"{split} ({total:,})", fill=(20, 20, 20), font=bold)
        top_n = max([sum(n[src, split, g] for g in GROUPS) for src in sources] + [1])
        usable = panel_w - 60
        for i, src in enumerate(sources):
            y = top + i * (bar_h + gap)
            alls = sum(n[src, split, g] for g in GROUPS)
            ira = n[src, split, "iraware"]
            w_all = round(usable * alls / top_n)
            w_ira = round(usable * ira / top_n)
            draw.rectangle((x0, y, x0 + usable, y + bar_h), fill=(242, 242, 242))
            if w_all:
                draw.rectangle((x0, y, x0 + w_all, y + bar_h), fill=(140, 180, 220))
            if w_ira:
                draw.rectangle((x0, y, x0 + w_ira, y + bar_h), fill=(40, 90, 160))
            draw.text((x0 + usable + 4, y + 1), f"{alls:,}", fill=(20, 20, 20), font=font)
    for i, src in enumerate(sources):
        draw.text((_PAD, top + i * (bar_h + gap) + 1), src, fill=(20, 20, 20), font=font)
    draw.text((_PAD, height - 20), "The same numbers as the card's counts table, read from the parquet footers.",
              fill=(90, 90, 90), font=font)
    return _png(img)


def render_assets(fs, root: str, infos, lay: Layout = DEFAULT_LAYOUT,
                  names: Sequence[ShardName] | None = None) -> dict[str, bytes]:
    """``{relpath: png bytes}`` for a repo: the counts figure of ``infos`` (ShardInfo of every shard the
    card counts) and the contact sheet of ``names`` (default: the shards of ``infos``) read from ``fs``."""
    out: dict[str, bytes] = {}
    sheet = contact_sheet_png(fs, root, list(names) if names is not None else [i.name for i in infos], lay)
    if sheet is not None:
        out[CONTACT_SHEET] = sheet
    counts = counts_png(infos, lay)
    if counts is not None:
        out[COUNTS_FIGURE] = counts
    return out
