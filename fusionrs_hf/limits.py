"""Limits that every writer and reader of FusionRS images applies alike (the build, ``check`` and the loaders),
defined once here so that a build never stores what a loader would refuse. No heavy imports: the CLI's build
path reads this without loading torch."""

from __future__ import annotations

import re

from .errors import UnusableInputError

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image (width x height) a build stores and a loader decodes: ~7,000² px, far above any FusionRS
source. A header claiming more (a 65,535² JPEG is a few hundred bytes) is refused before any pixel is decoded:
such a file would cost gigabytes in every reader."""

MAX_JPEG_SCANS = 100
"""Most scans a progressive JPEG may have (a standard one has about 10). Each scan refines every pixel again,
so a few KB of repeated scans in an ordinary-sized file cost minutes of decoding; more are refused unread."""

MAX_CARD_BYTES = 4 << 20
"""Largest README.md (a dataset card) that is parsed: the full FusionRS card is well under 100 KB, and every
reader of a card (``check``, ``card``) would otherwise spend minutes on a few megabytes of patterns."""

MAX_CARD_PATTERNS = 4096
"""Most ``data_files`` patterns a card may list over all its configs and splits (ours: a few per split)."""

_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
"""Frame header markers (SOF0-SOF15 less DHT C4, JPG C8 and DAC CC)."""
_PROGRESSIVE = frozenset((0xC2, 0xC6, 0xCA, 0xCE))
"""Frame headers of the progressive JPEG processes (SOF2, SOF6, SOF10, SOF14)."""


def jpeg_scans(data: bytes | memoryview) -> int:
    """Start-of-scan markers of a progressive JPEG (0 for a baseline one, which is decoded in one pass).

    The header is walked segment by segment, by each segment's length, up to the first scan, as libjpeg
    reads it (bytes between segments are skipped to the next 0xFF, as libjpeg skips them with a warning): a
    comment or APP segment whose payload holds the bytes FF DA or FF C2 cannot pass for a scan or a frame
    header. From the first scan on, every FF DA is counted; entropy-coded data stuffs every 0xFF, so each is
    a real marker (one inside a later segment's payload only counts against the file). A few us for an
    ordinary file: a handful of segments, then (baseline) no search at all."""
    b = data if isinstance(data, bytes) else memoryview(data).cast("B")  # no copy of an Arrow cell
    n = len(b)
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return 0
    i, progressive = 2, False
    while i + 1 < n:
        if b[i] != 0xFF:  # not at a marker: libjpeg skips to the next one
            b = b if isinstance(b, bytes) else bytes(b)  # rare: a copy is fine here
            i = b.find(b"\xff", i)
            if i < 0:
                return 0
            continue
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x00:  # FF 00 outside entropy-coded data: libjpeg and PIL skip it as extra bytes
            i += 2
            continue
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # no length field
            i += 2
            continue
        if marker == 0xD9 or i + 3 >= n:  # the image ended before any scan
            return 0
        if marker in _SOF:
            progressive = progressive or marker in _PROGRESSIVE
        elif marker == 0xDA:
            return bytes(b[i:]).count(b"\xff\xda") if progressive else 0
        i += 2 + ((b[i + 2] << 8) | b[i + 3])
    return 0


def too_many_scans(scans: int) -> str:
    return f"progressive JPEG of {scans:,} scans, more than the limit {MAX_JPEG_SCANS}; not decoded"


def too_many_pixels(width: int | None, height: int | None, limit: int, pixels: int | None = None) -> str:
    """The one wording of a refused image, for the loader's :class:`~fusionrs_hf.decode.DecodeError` and
    ``check``'s finding alike."""
    n = pixels if pixels is not None else (width or 0) * (height or 0)
    what = f"{width}x{height} = {n:,}" if width and height else f"{n:,}"
    return f"image header says {what} pixels, more than the limit {limit:,}; not decoded"


def bomb_pixels(error: Exception) -> int | None:
    """The pixel count in PIL's ``DecompressionBombError`` (raised at open from twice PIL's own limit; the
    error carries no size of its own)."""
    m = re.search(r"\((\d+) pixels\)", str(error))
    return int(m[1]) if m else None


IMAGE_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "BMP", "GIF")
"""The only formats any reader here opens (PIL ``formats=``). Raster formats PIL decodes itself: without the
list PIL tries every plugin it has, and its EPS plugin hands the bytes to Ghostscript, i.e. runs PostScript
from the data. FusionRS sources are JPEG and TIFF, DiffV2IR writes PNG; JPEG includes MPO (PIL opens a JPEG
with more frames as one)."""


EXTERNAL_DECODERS = ("EPS",)
"""PIL formats whose plugin hands the bytes to another program when an image is loaded (``EpsImagePlugin``:
Ghostscript, which runs the PostScript it is given)."""


def refuse_external_decoders(worker_id: int | None = None) -> None:
    """Unregister PIL's openers of :data:`EXTERNAL_DECODERS` in this process (idempotent).

    Our own readers open images through :func:`open_image`, which names the formats it takes. Stock
    ``datasets`` decodes an ``Image`` feature with plain ``PIL.Image.open``, which tries every plugin PIL has:
    rows from ``fusionrs_hf.load`` or the loading script would run Ghostscript on EPS bytes stored as an image.
    Called by both before they hand out a dataset. The plugin module stays imported, so ``Image.init()`` does
    not register it again; an application that wants EPS can ``Image.register_open`` it back.

    The change is this process's: a DataLoader worker started with ``spawn`` or ``forkserver`` (macOS, Windows,
    Linux from Python 3.14) imports PIL afresh, so pass this function as ``worker_init_fn`` (it takes the
    worker id DataLoader hands it)."""
    from PIL import EpsImagePlugin, Image  # noqa: F401 - imported first, so that init() finds it loaded

    for fmt in EXTERNAL_DECODERS:
        Image.OPEN.pop(fmt, None)
        while fmt in Image.ID:
            Image.ID.remove(fmt)


class ImageRefused(ValueError):
    """Bytes that are not decoded at all: too many JPEG scans or too many pixels. Its message is the one
    wording every reader reports; ``reason`` is the build report's name for it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def open_image(data: bytes | memoryview, max_pixels: int | None = DEFAULT_MAX_PIXELS):
    """``PIL.Image.open`` as every reader here must call it: the JPEG scan limit first (nothing decoded),
    only :data:`IMAGE_FORMATS`, and at most ``max_pixels`` pixels by the header (``None``: no limit; PIL's own
    bomb error is mapped to the same wording). The image is opened lazily, as ``Image.open`` does; raises
    :class:`ImageRefused` for the limits and PIL's own errors for data that is not an image."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    if bytes(data[:3]) == b"\xff\xd8\xff":  # a JPEG's start-of-image marker
        scans = jpeg_scans(data)
        if scans > MAX_JPEG_SCANS:
            raise ImageRefused(too_many_scans(scans), "too_many_scans")
    try:
        with warnings.catch_warnings():  # PIL warns from 89 M pixels; the limit below refuses from max_pixels
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageRefused(too_many_pixels(None, None, max_pixels or Image.MAX_IMAGE_PIXELS, bomb_pixels(e)),
                           "too_many_pixels") from None
    except UnidentifiedImageError:
        raise UnidentifiedImageError(f"not an image in a readable format ({', '.join(IMAGE_FORMATS)}): "
                                     f"{len(data):,} bytes starting {bytes(data[:8])!r}") from None
    w, h = im.size
    if max_pixels is not None and w * h > max_pixels:
        im.close()
        raise ImageRefused(too_many_pixels(w, h, max_pixels), "too_many_pixels")
    return im


MAX_SOURCE_BYTES = 1 << 30
"""Largest source image file (1 GiB) a build reads: a FusionRS source is a few MB at most, so a larger file is
dropped with its name and size instead of being read whole (an unnamed ``MemoryError``)."""

MAX_LINE_CHARS = 1 << 20
"""Longest line (1 Mi characters) any JSONL/CSV reader here takes from an index, a caption table or a listing: a
record is about 1 KB, so a longer line is refused naming file and line instead of being read whole (a 1.5 GB
single-line gzip would be an unnamed ``MemoryError``)."""

MAX_JSON_CHARS = 256 << 20
"""Largest whole-document JSON file (256 Mi characters) a reader loads (the native RSICD / RSITMD / NWPU-Captions
caption files are tens of MB); a larger one is refused naming the file."""

MAX_ROW_GROUP_BYTES = 1 << 30
"""Largest row group (1 GiB of the columns read, uncompressed) a loader reads: about ten times the row-group
target of a build (``fusionrs_hf.shards.DEFAULT_ROW_GROUP_BYTES``, 100 MB), so an ordinary row group with a few
big images passes; a 735 KB shard whose zstd row group inflates to 1.8 GB is refused, naming shard and row group,
before anything is decompressed. The footer's sizes are the writer's word, and Arrow never reads them back: it
allocates what each page header says. So every reader that holds the file (:func:`refuse_big_row_groups` with
``source``) judges the row group by its page headers (:mod:`fusionrs_hf.parquet_pages`), and refuses a footer
that claims less than its pages (a 65 KB shard whose footer calls a 1.2 GB page 40 KB)."""

MIN_BYTES_PER_ROW = 64
"""Fewest stored bytes a shard's row may take: a FusionRS row holds two encoded images (hundreds of bytes even at
8 px) and two SHA-256 digests (64 bytes of entropy), so no real shard comes near it (the test repos' 8-64 px
rows take over a kilobyte). Without it a 200 KB shard of 2,000,000 identical rows passes every size rule
honestly, and then costs gigabytes in per-row work; a shard holding more rows than its bytes allow is refused
from its footer, naming it. Caption tables and embedding files are not shards and are not held to it."""


def _read_chunks(md, row_group: int, columns):
    """The column chunks (footer metadata) of ``row_group`` that ``columns`` read (None: every column)."""
    rg = md.row_group(row_group)
    for i in range(rg.num_columns):
        c = rg.column(i)
        path = c.path_in_schema
        if columns is None or any(path == col or path.startswith(col + ".") or col.startswith(path + ".")
                                  for col in columns):
            yield c


def too_many_rows(md, row_group: int | None = None, file_size: int | None = None) -> str | None:
    """Why a shard's footer ``md`` holds more rows than its bytes allow (:data:`MIN_BYTES_PER_ROW`), or ``None``:
    ``row_group`` (None: every one) by its column chunks' stored sizes, and the whole file by ``file_size``
    when it is known (the footer's sizes are the writer's word; the file's size is not)."""
    groups = range(md.num_row_groups) if row_group is None else (row_group,)
    for i in groups:
        rg = md.row_group(i)
        stored = sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
        if rg.num_rows * MIN_BYTES_PER_ROW > stored:
            return (f"row group {i} holds {rg.num_rows:,} rows in {stored:,} stored bytes, fewer than "
                    f"{MIN_BYTES_PER_ROW} a row (MIN_BYTES_PER_ROW: a row holds two encoded images); not read")
    if file_size is not None and md.num_rows * MIN_BYTES_PER_ROW > file_size:
        return (f"the file holds {md.num_rows:,} rows in {file_size:,} bytes, fewer than {MIN_BYTES_PER_ROW} a "
                "row (MIN_BYTES_PER_ROW: a row holds two encoded images); not read")
    return None


def row_group_too_big(md, row_group: int, columns=None, limit: int | None = None, source=None,
                      shard: bool = False) -> str | None:
    """Why ``row_group`` of a parquet footer ``md`` is not read, or ``None``: the columns read (None: all)
    inflate past ``limit`` (default :data:`MAX_ROW_GROUP_BYTES`).

    Without ``source`` the footer's uncompressed sizes are taken at their word. With it (the file: its bytes,
    or a seekable binary file object, or a :class:`~fusionrs_hf.parquet_pages.ByteSource`), each column chunk's
    page headers are walked (:func:`~fusionrs_hf.parquet_pages.walk_chunk`, a bounded read per page, nothing
    inflated): the row group is held to the limit by what Arrow will allocate, and a chunk whose footer
    claims less than its pages, or whose pages cannot be walked, is refused naming the column. ``shard``: the
    file is a FusionRS shard, also held to :data:`MIN_BYTES_PER_ROW` (:func:`too_many_rows`)."""
    limit = MAX_ROW_GROUP_BYTES if limit is None else limit
    src = None
    if source is not None:
        from .parquet_pages import ByteSource

        src = source if isinstance(source, ByteSource) else ByteSource(source)
    if shard:
        why = too_many_rows(md, row_group, src.size if src is not None else None)
        if why:
            return why
    if md.row_group(row_group).num_rows == 0:
        return None  # Arrow reads nothing of it; pyarrow writes its empty chunks at offset 0, no page to walk
    chunks = list(_read_chunks(md, row_group, columns))
    claimed = sum(c.total_uncompressed_size for c in chunks)
    packed = sum(c.total_compressed_size for c in chunks)
    size = claimed
    if claimed <= limit and src is not None:
        from .parquet_pages import PageHeaderError, walk_chunk

        pages = 0
        for c in chunks:
            try:
                got = walk_chunk(src, c).uncompressed
            except PageHeaderError as e:
                return f"row group {row_group} column {c.path_in_schema!r}: {e}; not read"
            if got > c.total_uncompressed_size:
                return (f"row group {row_group} column {c.path_in_schema!r}: its pages inflate to {got:,} bytes "
                        f"but its footer claims {c.total_uncompressed_size:,}; a footer that understates its pages "
                        "is not read")
            pages += got
            if pages > limit:  # no need to walk the rest
                break
        size = max(claimed, pages)
    if size <= limit:
        return None
    return (f"row group {row_group} is {size:,} bytes uncompressed ({packed:,} stored), more than the limit "
            f"{limit:,} (MAX_ROW_GROUP_BYTES); not read")


class RowGroupTooBig(UnusableInputError, ValueError):
    """A parquet file with a row group that is not read: it inflates past :data:`MAX_ROW_GROUP_BYTES`, its
    footer understates its pages, its pages cannot be walked, or (a shard) it holds more rows than its bytes
    allow. One line, named: unusable input, exit 2 in every command."""


def refuse_big_row_groups(md, columns=None, where: str = "parquet file", source=None, *, shard: bool = False) -> None:
    """:func:`row_group_too_big` for every row group of a footer, raised as :class:`RowGroupTooBig` naming
    ``where``: what each reader of a shard, caption table or embedding file calls before it reads a row.
    ``source`` (the file, as the reader opened it) holds the row groups to their page headers, not the
    footer's word; ``shard``: a FusionRS shard, held to :data:`MIN_BYTES_PER_ROW` too."""
    src = None
    if source is not None:
        from .parquet_pages import ByteSource

        src = ByteSource(source)
    if shard:
        why = too_many_rows(md, None, src.size if src is not None else None)
        if why:
            raise RowGroupTooBig(f"{where}: {why}")
    for i in range(md.num_row_groups):
        why = row_group_too_big(md, i, columns, source=src)
        if why:
            raise RowGroupTooBig(f"{where}: {why}")
