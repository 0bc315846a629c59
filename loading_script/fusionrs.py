"""FusionRS loading script: the same configs and shards as the README YAML, for code that wants a builder.

Two uses:

* datasets >= 4 (no Hub scripts): import this file and use the builder directly::

      from fusionrs import FusionRS              # with loading_script/ on sys.path
      b = FusionRS(config_name="iraware", data_dir="path/to/repo")   # or a hf:// URL
      ds = b.as_streaming_dataset("train")       # or b.download_and_prepare(); b.as_dataset("train")

* datasets < 4: upload it as ``fusionrs.py`` next to the shards; ``load_dataset(repo, "iraware")``
  then runs it (with ``trust_remote_code=True``). It reads the same parquet shards.

The config registry below is generated from ``fusionrs_hf.layout.registry_dict()`` by
``python tools/sync_loading_script.py``; a test fails if the two drift. The script itself only
needs ``datasets`` and ``pyarrow`` so it also works where ``fusionrs_hf`` is not installed.

Images are held to the limits every reader of ``fusionrs_hf`` applies (``fusionrs_hf.limits``, carried in the
registry): a row whose image is not in one of the readable formats, claims more pixels than the limit or is a
progressive JPEG of too many scans is refused naming file and row, before ``datasets`` decodes it; a row group
that inflates past the limit by its page headers (what Arrow allocates, whatever the footer claims), a footer
that understates its pages, or a shard holding more rows than its bytes allow is refused unread, naming the
file; and PIL's openers that hand the bytes to another program (EPS: Ghostscript) are unregistered in the
process, since ``datasets`` decodes with every PIL plugin.

A local ``data_dir`` is read by the rule ``fusionrs check`` applies (``fusionrs_hf.safepath``, restated here
because this file must stand alone): every shard read is a regular file inside ``data_dir`` (a symlink out of
it, or a FIFO, is refused naming it) and no folder under ``data/`` is a symlink; a missing folder is named.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

try:  # xopen follows hf:// and https:// URLs in streaming mode
    from datasets.utils.file_utils import xopen as _xopen
except ImportError:  # pragma: no cover
    _xopen = open

try:  # datasets >= 5 keys tables by (shard, batch); older versions take any hashable key
    from datasets.builder import Key as _Key
except ImportError:  # pragma: no cover - exercised only on old datasets
    _Key = None

# BEGIN REGISTRY (generated: python tools/sync_loading_script.py)
REGISTRY = json.loads(
    r"""
{
    "fields": [
        [
            "sample_id",
            "string"
        ],
        [
            "source",
            "string"
        ],
        [
            "source_record_id",
            "string"
        ],
        [
            "rgb",
            "image"
        ],
        [
            "ir",
            "image"
        ],
        [
            "caption",
            "string"
        ],
        [
            "all_captions",
            "list<string>"
        ],
        [
            "caption_origin",
            "string"
        ],
        [
            "ir_caption",
            "string"
        ],
        [
            "class_name",
            "string"
        ],
        [
            "joint_group_id",
            "string"
        ],
        [
            "rights_code",
            "string"
        ],
        [
            "translation_output_key",
            "string"
        ],
        [
            "phash4_component_id",
            "string"
        ],
        [
            "canonical_component_representative",
            "string"
        ],
        [
            "is_canonical_component_representative",
            "bool"
        ],
        [
            "is_eval_representative",
            "bool"
        ],
        [
            "caption_supervision_available_upstream",
            "bool"
        ],
        [
            "vlm_train_identity",
            "bool"
        ],
        [
            "prior_reused_protected",
            "bool"
        ],
        [
            "normalized_caption_key",
            "string"
        ],
        [
            "ir_caption_status",
            "string"
        ],
        [
            "rgb_sha256",
            "string"
        ],
        [
            "ir_sha256",
            "string"
        ]
    ],
    "limits": {
        "max_pixels": 50000000,
        "max_jpeg_scans": 100,
        "image_formats": [
            "JPEG",
            "PNG",
            "TIFF",
            "WEBP",
            "BMP",
            "GIF"
        ],
        "external_decoders": [
            "EPS"
        ],
        "max_row_group_bytes": 1073741824
    },
    "splits": [
        "train",
        "validation",
        "test"
    ],
    "groups": [
        "iraware",
        "base"
    ],
    "source_dirs": {
        "RS5M": "rs5m",
        "SkyScript": "skyscript",
        "NWPU": "nwpu",
        "RSICD": "rsicd",
        "RSITMD": "rsitmd"
    },
    "configs": [
        {
            "name": "default",
            "description": "Every triplet of every source, both groups (the paper's 600K set; an rc4 rebuild writes 599,992 rows).",
            "sources": null,
            "groups": [
                "iraware",
                "base"
            ],
            "default": true
        },
        {
            "name": "iraware",
            "description": "Only rows that carry an IR-aware caption (`ir_caption` non-null), every source.",
            "sources": null,
            "groups": [
                "iraware"
            ],
            "default": false
        },
        {
            "name": "rs5m",
            "description": "Only rows from RS5M, both groups.",
            "sources": [
                "RS5M"
            ],
            "groups": [
                "iraware",
                "base"
            ],
            "default": false
        },
        {
            "name": "skyscript",
            "description": "Only rows from SkyScript, both groups.",
            "sources": [
                "SkyScript"
            ],
            "groups": [
                "iraware",
                "base"
            ],
            "default": false
        },
        {
            "name": "nwpu",
            "description": "Only rows from NWPU, both groups.",
            "sources": [
                "NWPU"
            ],
            "groups": [
                "iraware",
                "base"
            ],
            "default": false
        },
        {
            "name": "rsicd",
            "description": "Only rows from RSICD, both groups.",
            "sources": [
                "RSICD"
            ],
            "groups": [
                "iraware",
                "base"
            ],
            "default": false
        },
        {
            "name": "rsitmd",
            "description": "Only rows from RSITMD, both groups.",
            "sources": [
                "RSITMD"
            ],
            "groups": [
                "iraware",
                "base"
            ],
            "default": false
        }
    ]
}
"""
)
# END REGISTRY

_CITATION = r"""@misc{fusionrs2026,
  title        = {FusionRS: A Large-Scale RGB--Infrared Remote Sensing Dataset for Dual-Modal
                  Vision--Language Foundation Models},
  author       = {Han, Jiaju and Zhang, Ben and Sun, Xuemeng and Zhang, Qike and Dong, Yuxian and
                  Lu, Dingyi and Hu, Chengyin and Yang, Luwei and Zhang, Fengyu and Wei, Yiwei and
                  Guo, Jiujiang},
  year         = {2026},
  note         = {Dataset, release rc4 (2026-07-27)},
  howpublished = {\url{https://github.com/frozy129/FusionRS}}
}"""
_DESCRIPTION = (
    "FusionRS: RGB remote-sensing images from RS5M, SkyScript, NWPU, RSICD and RSITMD paired with "
    "synthetic infrared-style images (DiffV2IR), source captions and, for a subset, IR-aware captions."
)


def _features() -> datasets.Features:
    """The features of a row, from the registry's field list (name, kind) generated from fusionrs_hf.schema."""
    string = datasets.Value("string")
    kinds = {
        "string": string, "bool": datasets.Value("bool"), "image": datasets.Image(),
        "list<string>": datasets.List(string) if hasattr(datasets, "List") else datasets.Sequence(string),
    }
    return datasets.Features({name: kinds[kind] for name, kind in REGISTRY["fields"]})


def split_patterns(config: dict, split: str) -> list[str]:
    """Glob patterns of one config split; mirrors ``fusionrs_hf.layout.ConfigSpec.patterns``."""
    all_sources = config["sources"] is None  # every source, also a repo's own (fusionrs_sources.json)
    all_groups = set(config["groups"]) == set(REGISTRY["groups"])
    src_globs = ["*"] if all_sources else [REGISTRY["source_dirs"][s] for s in config["sources"]]
    out = []
    for src in src_globs:
        if all_groups:
            out.append(f"data/{src}/{split}/*.parquet")
        else:
            out.extend(f"data/{src}/{split}/{g}-*.parquet" for g in config["groups"])
    return out


LIMITS = REGISTRY["limits"]


def refuse_external_decoders() -> None:
    """``fusionrs_hf.limits.refuse_external_decoders``: PIL's EPS opener (Ghostscript) unregistered, idempotent."""
    from PIL import EpsImagePlugin, Image  # noqa: F401 - imported first, so that init() finds it loaded

    for fmt in LIMITS["external_decoders"]:
        Image.OPEN.pop(fmt, None)
        while fmt in Image.ID:
            Image.ID.remove(fmt)


def _jpeg_scans(b: bytes) -> int:
    """``fusionrs_hf.limits.jpeg_scans`` restated: scans of a progressive JPEG (0 for baseline), its header
    walked segment by segment as libjpeg reads it, so a comment holding FF DA cannot hide the frame header."""
    n = len(b)
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return 0
    i, progressive = 2, False
    while i + 1 < n:
        if b[i] != 0xFF:
            i = b.find(b"\xff", i)
            if i < 0:
                return 0
            continue
        marker = b[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x00:
            i += 2
            continue
        if marker == 0xD8 or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker == 0xD9 or i + 3 >= n:
            return 0
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            progressive = progressive or marker in (0xC2, 0xC6, 0xCA, 0xCE)
        elif marker == 0xDA:
            return b[i:].count(b"\xff\xda") if progressive else 0
        i += 2 + ((b[i + 2] << 8) | b[i + 3])
    return 0


MAX_PAGE_HEADER_BYTES = 64 << 10
"""``fusionrs_hf.parquet_pages.MAX_PAGE_HEADER_BYTES``: the largest parquet page header read."""
MAX_PAGES_PER_CHUNK = 200_000
"""``fusionrs_hf.parquet_pages.MAX_PAGES_PER_CHUNK``: most pages one column chunk may have."""
MIN_BYTES_PER_ROW = 64
"""``fusionrs_hf.limits.MIN_BYTES_PER_ROW``: fewest stored bytes a shard's row may take (two encoded images)."""


class _Short(Exception):
    """A page header runs past the bytes read for it."""


def _page_header(b: bytes) -> tuple[int, int, int, int]:
    """``fusionrs_hf.parquet_pages.parse_page_header`` restated: (type, uncompressed_page_size,
    compressed_page_size, header bytes) of the Thrift compact ``PageHeader`` at the start of ``b``; every other
    field skipped by its type, nesting bounded. Raises ``ValueError`` (malformed) or ``_Short`` (truncated)."""
    n = len(b)

    def varint(i):
        out = shift = 0
        while True:
            if i >= n:
                raise _Short
            c = b[i]
            i += 1
            out |= (c & 0x7F) << shift
            if not c & 0x80:
                return out, i
            shift += 7
            if shift > 63:
                raise ValueError("malformed page header (a varint longer than 10 bytes)")

    def skip(i, t, depth):
        if depth > 16:
            raise ValueError("malformed page header (nested deeper than 16)")
        if t in (1, 2, 3):  # bool (as an element), byte
            if i >= n:
                raise _Short
            return i + 1
        if t in (4, 5, 6):  # i16, i32, i64
            return varint(i)[1]
        if t == 7:  # double
            if i + 8 > n:
                raise _Short
            return i + 8
        if t == 8:  # binary
            k, i = varint(i)
            if i + k > n:
                raise _Short
            return i + k
        if t in (9, 10):  # list, set
            if i >= n:
                raise _Short
            k, et = b[i] >> 4, b[i] & 0x0F
            i += 1
            if k == 15:
                k, i = varint(i)
            if k > n - i:
                raise _Short
            for _ in range(k):
                i = skip(i, et, depth + 1)
            return i
        if t == 11:  # map
            k, i = varint(i)
            if not k:
                return i
            if i >= n:
                raise _Short
            kt, vt = b[i] >> 4, b[i] & 0x0F
            i += 1
            if 2 * k > n - i:
                raise _Short
            for _ in range(k):
                i = skip(skip(i, kt, depth + 1), vt, depth + 1)
            return i
        if t == 12:  # struct
            return fields(i, depth + 1, None)
        raise ValueError(f"malformed page header (unknown Thrift type {t})")

    def fields(i, depth, got):
        last = 0
        while True:
            if i >= n:
                raise _Short
            head = b[i]
            i += 1
            if head == 0:
                return i
            t, delta = head & 0x0F, head >> 4
            if delta:
                last += delta
            else:
                fid, i = varint(i)
                last = (fid >> 1) ^ -(fid & 1)
            if got is not None and last in (1, 2, 3):
                if t != 5:
                    raise ValueError(f"malformed page header (field {last} has Thrift type {t}, not i32)")
                v, i = varint(i)
                v = (v >> 1) ^ -(v & 1)
                if not -(1 << 31) <= v < (1 << 31):
                    raise ValueError(f"malformed page header (field {last} is not an i32)")
                got[last] = v
            elif t not in (1, 2):  # a bool field's value is its type
                i = skip(i, t, depth)

    got: dict = {}
    end = fields(0, 1, got)
    missing = [name for fid, name in ((1, "type"), (2, "uncompressed_page_size"), (3, "compressed_page_size"))
               if fid not in got]
    if missing:
        raise ValueError(f"malformed page header (no {', '.join(missing)})")
    if got[2] < 0 or got[3] < 0:
        raise ValueError(f"page header with a negative size (uncompressed {got[2]:,}, compressed {got[3]:,})")
    return got[1], got[2], got[3], end


def _chunk_pages(f, column, size: int) -> tuple[int, int, int, int]:
    """``fusionrs_hf.parquet_pages.walk_chunk`` restated: (pages, sum of uncompressed_page_size, sum of
    compressed_page_size, header bytes) of one column chunk of the seekable file ``f`` of ``size`` bytes, its
    pages walked header by header (a bounded read each; the page bytes skipped). Arrow allocates what the page
    headers say, whatever the footer claims. Raises ``ValueError`` for a chunk outside the file, a malformed or
    oversized header, a negative size, a page running past the chunk, or too many pages."""
    start = column.data_page_offset
    dpo = column.dictionary_page_offset if column.has_dictionary_page else None
    if dpo is not None and 0 < dpo < start:
        start = dpo
    end = start + column.total_compressed_size
    if start < 0 or end < start:
        raise ValueError(f"column chunk at {start:,} of {end - start:,} bytes: not a range of the file")
    if end > size:
        raise ValueError(f"column chunk {start:,}-{end:,} runs past the end of the file ({size:,} bytes)")
    pos, pages, unc, comp, heads = start, 0, 0, 0, 0
    while pos < end:
        if pages >= MAX_PAGES_PER_CHUNK:
            raise ValueError(f"column chunk of more than {MAX_PAGES_PER_CHUNK:,} pages")
        left = end - pos
        window = min(left, 512)
        while True:
            f.seek(pos)
            try:
                _, u, c, h = _page_header(bytes(f.read(window)))
                break
            except _Short:
                if window >= min(left, MAX_PAGE_HEADER_BYTES):
                    if left > MAX_PAGE_HEADER_BYTES:
                        raise ValueError(f"page header at {pos:,} larger than {MAX_PAGE_HEADER_BYTES:,} "
                                         "bytes") from None
                    raise ValueError(f"page header at {pos:,} runs past the column chunk (ends at {end:,})") from None
                window = min(left, MAX_PAGE_HEADER_BYTES)
        if pos + h + c > end:
            raise ValueError(f"page at {pos:,} ({h + c:,} bytes) runs past the column chunk (ends at {end:,})")
        pages, unc, comp, heads, pos = pages + 1, unc + u, comp + c, heads + h, pos + h + c
    return pages, unc, comp, heads


def row_groups_problem(md, f) -> str | None:
    """Why the shard of footer ``md`` (its file ``f``, seekable) is not read, or None: the rules of
    ``fusionrs_hf.limits.refuse_big_row_groups(..., shard=True)`` restated. More rows than its bytes allow
    (``MIN_BYTES_PER_ROW``), a row group inflating past the limit by its page headers (what Arrow allocates; a
    few KB of zstd can claim GBs), or a footer claiming less than its pages. Nothing is inflated."""
    here = f.tell()
    size = f.seek(0, 2)
    size = f.tell() if size is None else size
    try:
        limit = LIMITS["max_row_group_bytes"]
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            stored = sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
            if rg.num_rows * MIN_BYTES_PER_ROW > stored:
                return (f"row group {i} holds {rg.num_rows:,} rows in {stored:,} stored bytes, fewer than "
                        f"{MIN_BYTES_PER_ROW} a row (a row holds two encoded images); not read")
        if md.num_rows * MIN_BYTES_PER_ROW > size:
            return (f"the file holds {md.num_rows:,} rows in {size:,} bytes, fewer than {MIN_BYTES_PER_ROW} a row "
                    "(a row holds two encoded images); not read")
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            if rg.num_rows == 0:  # Arrow reads nothing of it (pyarrow writes its empty chunks at offset 0)
                continue
            claimed = sum(rg.column(j).total_uncompressed_size for j in range(rg.num_columns))
            real = 0
            if claimed <= limit:
                for j in range(rg.num_columns):
                    c = rg.column(j)
                    try:
                        got = _chunk_pages(f, c, size)[1]
                    except ValueError as e:
                        return f"row group {i} column {c.path_in_schema!r}: {e}; not read"
                    if got > c.total_uncompressed_size:
                        return (f"row group {i} column {c.path_in_schema!r}: its pages inflate to {got:,} bytes but "
                                f"its footer claims {c.total_uncompressed_size:,}; a footer that understates its "
                                "pages is not read")
                    real += got
                    if real > limit:
                        break
            if max(claimed, real) > limit:
                return (f"row group {i} is {max(claimed, real):,} bytes uncompressed, more than the limit "
                        f"{limit:,}; not read")
        return None
    finally:
        f.seek(here)


def image_problem(data) -> str | None:
    """Why ``fusionrs_hf.limits.open_image`` would refuse these image bytes (None: it would open them): the header
    only, no pixel decoded; ``jpeg_scans`` and the pixel rule restated (this file stands alone)."""
    import io
    import warnings

    from PIL import Image

    if data is None:
        return None
    data = bytes(data)
    if data[:3] == b"\xff\xd8\xff":
        scans = _jpeg_scans(data)
        if scans > LIMITS["max_jpeg_scans"]:
            return f"progressive JPEG of {scans:,} scans, more than the limit {LIMITS['max_jpeg_scans']}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=LIMITS["image_formats"]) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        return f"image header says more pixels than PIL's limit {Image.MAX_IMAGE_PIXELS * 2:,}"
    except Exception as e:  # noqa: BLE001 - not an image in a readable format
        return (f"not an image in a readable format ({', '.join(LIMITS['image_formats'])}): "
                f"{type(e).__name__}, {len(data):,} bytes starting {data[:8]!r}")
    if w * h > LIMITS["max_pixels"]:
        return f"image header says {w}x{h} = {w * h:,} pixels, more than the limit {LIMITS['max_pixels']:,}"
    return None


def check_local_shard(local: str, path: str) -> None:
    """A shard of a local repo is read only when it is a regular file inside ``local`` (symlinks resolved), as
    ``fusionrs_hf.safepath.check_repo_file`` has it: else a one-line ``ValueError`` naming it."""
    p = path[len("file://"):] if path.startswith("file://") else path
    if not stat.S_ISREG(os.stat(p).st_mode):
        raise ValueError(f"FusionRS: {p}: not a regular file (a FIFO, socket or device); a repo holds files only")
    base, real = os.path.realpath(local), os.path.realpath(p)
    if not real.startswith(base.rstrip(os.sep) + os.sep):
        raise ValueError(f"FusionRS: {p}: a symlink to {real}, outside the repo {local}; only files inside "
                         "data_dir are read")


class FusionRSConfig(datasets.BuilderConfig):
    def __init__(self, *, sources=(), groups=(), **kwargs):
        super().__init__(**kwargs)
        self.sources = None if sources is None else tuple(sources)
        self.groups = tuple(groups)


class FusionRS(datasets.ArrowBasedBuilder):
    """Reads FusionRS parquet shards (``data/{source}/{split}/{group}-{batch}-{index}.parquet``)."""

    BUILDER_CONFIG_CLASS = FusionRSConfig
    BUILDER_CONFIGS = [
        FusionRSConfig(name=c["name"], description=c["description"], sources=c["sources"], groups=c["groups"],
                       version=datasets.Version("1.0.0"))
        for c in REGISTRY["configs"]
    ]
    DEFAULT_CONFIG_NAME = next(c["name"] for c in REGISTRY["configs"] if c["default"])

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=_DESCRIPTION, features=_features(), citation=_CITATION)

    def _root(self) -> str:
        root = self.config.data_dir or self.base_path
        if not root:
            raise ValueError("FusionRS builder needs data_dir=<repo folder or URL> (or a Hub base path)")
        return str(root)

    def _local_root(self) -> str | None:
        """The folder of a local ``data_dir`` (a path or ``file://`` URL), checked to be a repo folder; ``None``
        for a remote URL."""
        root = self._root()
        local = root[len("file://"):] if root.startswith("file://") else (None if "://" in root else root)
        if local is None:
            return None
        if not os.path.isdir(local):
            why = "not a folder" if os.path.exists(local) else "no such folder"
            raise FileNotFoundError(f"FusionRS data_dir {root}: {why}")
        data = os.path.join(local, "data")
        if not os.path.isdir(data):
            raise FileNotFoundError(f"FusionRS data_dir {root}: not a FusionRS repo folder (no data/ directory)")
        for folder, dirs, files in os.walk(data):
            for f in files:  # a FIFO is left out of a listing without a word: its rows would be missing
                full = os.path.join(folder, f)
                if f.endswith(".parquet") and os.path.exists(full) and not os.path.isfile(full):
                    raise ValueError(f"FusionRS: {full}: not a regular file (a FIFO, socket or device); a repo "
                                     "holds files only")
            for d in dirs:
                full = os.path.join(folder, d)
                if os.path.islink(full):
                    raise ValueError(f"FusionRS data_dir {root}: {full} is a symlink to a folder "
                                     f"({os.path.realpath(full)}); a repo's folders are its own (fusionrs check "
                                     "refuses it too)")
        return local



    def _resolve(self, pattern: str, dl_manager) -> list[str]:
        from datasets.data_files import resolve_pattern

        download_config = getattr(dl_manager, "download_config", None)
        try:
            return sorted(resolve_pattern(pattern, self._root(), download_config=download_config))
        except FileNotFoundError:
            return []  # e.g. a source without IR-aware validation rows: not an error

    def _split_generators(self, dl_manager):
        config = next(c for c in REGISTRY["configs"] if c["name"] == self.config.name)
        local = self._local_root()
        gens = []
        for split in REGISTRY["splits"]:
            files = sorted({f for p in split_patterns(config, split) for f in self._resolve(p, dl_manager)})
            files = [f for f in files if fnmatch.fnmatch(f.rsplit("/", 1)[-1], "*.parquet")]
            if not files:
                continue
            if local is not None:
                for f in files:
                    check_local_shard(local, f)
            gens.append(datasets.SplitGenerator(name=split, gen_kwargs={"files": dl_manager.download(files)}))
        if not gens:
            raise FileNotFoundError(f"FusionRS data_dir {self._root()}: no shards of config {config['name']!r} "
                                    f"(looked for {', '.join(split_patterns(config, '{split}'))})")
        return gens

    def _generate_tables(self, files):
        refuse_external_decoders()
        schema = self.info.features.arrow_schema
        images = [name for name, kind in REGISTRY["fields"] if kind == "image"]
        for file_idx, file in enumerate(files):
            with _xopen(file, "rb") as f:
                pf = pq.ParquetFile(f)
                md = pf.metadata
                why = row_groups_problem(md, f)  # by the page headers, before a page is inflated
                if why:
                    raise ValueError(f"FusionRS: {file}: {why}")
                row = 0
                for batch_idx, batch in enumerate(pf.iter_batches(batch_size=256, columns=schema.names)):
                    table = pa.Table.from_batches([batch]).select(schema.names).cast(schema)
                    for name in images:
                        for j, data in enumerate(table.column(name).combine_chunks().field("bytes").to_pylist()):
                            why = image_problem(data)
                            if why:
                                raise ValueError(f"FusionRS: {file}: row {row + j} "
                                                 f"(sample_id={table.column('sample_id')[j].as_py()!r}) column "
                                                 f"{name!r}: {why}; not decoded")
                    row += table.num_rows
                    key = _Key(file_idx, batch_idx) if _Key is not None else f"{file_idx}_{batch_idx}"
                    yield key, table
