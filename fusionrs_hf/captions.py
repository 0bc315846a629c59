"""Captions for a rebuild: readers, a disk-backed lookup, the choice policy and the cleaning rules.

The official index carries no captions, so a user brings them: a caption table (JSONL, CSV or
Parquet keyed by ``sample_id`` or by ``source_dataset`` + ``source_record_id``), the native
annotation files of RSICD / RSITMD (``images[].filename``, ``images[].sentences[].raw``) and
NWPU-Captions (per-class lists with ``filename``, ``raw``, ``raw_1`` ...), and the IR-aware
caption file keyed by sample id.

Everything read is put in a small SQLite file next to the build state, so memory stays flat
however many captions there are, and each index record finds its captions by key, trying in
order: its ``sample_id``; its ``(source, source_record_id)``; its ``(source, file name of the
locator)``, which is how native files (keyed by image file name) meet the index.

Cleaning follows §3.4 of the paper plus the IR-aware blocked claims. Every rule is a named
function ``text -> bool`` (True = the caption violates it) in :data:`RULES`, so it can be tested,
counted in the build report and switched off by name (``--skip-rule``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from .index import open_text
from .schema import SOURCES

T = TypeVar("T")

CHOICES = ("first", "random", "all")
"""How one caption is picked when an image has several usable ones:

- ``first``: the first usable caption in file order (the native order of RSICD/RSITMD/NWPU).
- ``random``: one usable caption drawn with ``--seed``; the draw depends only on the seed and the
  sample id, so it does not change with worker count or file order of other images.
- ``all``: ``caption`` is the first usable one and ``all_captions`` holds every usable one.
"""

FALLBACK_TEMPLATE = "a remote sensing image of {name}."
"""Class-name fallback caption (paper §3.4), e.g. NWPU ``baseball_diamond`` ->
"a remote sensing image of baseball diamond."; rows using it get ``caption_origin=class_name``."""


# --------------------------------------------------------------------------- cleaning rules

@dataclass(frozen=True)
class Rule:
    """A named cleaning rule. ``check(text)`` is True when the caption must be dropped."""

    name: str
    applies_to: str  # "caption" (source captions, §3.4) or "ir_caption" (IR-aware blocked claims)
    description: str
    check: Callable[[str], bool]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _any_re(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(rf"\b{p}\b" for p in patterns), re.IGNORECASE)


_STOCK = _any_re(r"stock\s+(?:photo|photos|image|images|footage|photography|picture)", "shutterstock",
                 r"getty\s*images", "gettyimages", "alamy", "istock(?:photo)?", "dreamstime", "123rf",
                 "depositphotos", "adobe\\s*stock", r"royalty[\s-]*free", "vectorstock", "pond5", "bigstock")
_COPYRIGHT = re.compile(r"©|\(c\)\s*\d{4}|\bcopyright\b|\ball rights reserved\b|\bwatermark(?:ed)?\b",
                        re.IGNORECASE)
_GOOGLE_EARTH = re.compile(r"\bgoogle\s*(?:earth|maps?)\b|\bimagery\s*©|\bmap data\b", re.IGNORECASE)

MIN_WORDS = 3
MAX_WORDS = 60
MAX_CHARS = 400

_EN_FUNCTION = frozenset(
    "a an the of and with in on at to is are there some many two three near beside next by from its "
    "several few this it".split())
_FOREIGN_FUNCTION = frozenset(
    "der die das und mit von ein eine im auf ist sind le la les des du une et est avec sur dans el los "
    "las del con una por para y en que il della di lo gli"
    .split())
_GENERIC_WORDS = frozenset(
    "aerial view image images photo photograph picture satellite remote sensing top overhead shot scene "
    "map from above earth taken showing shows shown this that here drone bird's eye birds high resolution "
    "area place landscape top-down".split()) | _EN_FUNCTION


def is_stock_photo(text: str) -> bool:
    """Stock-photo artefacts from web-crawled captions (RS5M): agency names, "stock photo", "royalty free"."""
    return bool(_STOCK.search(text))


def is_copyright(text: str) -> bool:
    """Copyright or watermark notices: ``©``, ``(c) 2019``, "copyright", "all rights reserved"."""
    return bool(_COPYRIGHT.search(text))


def is_google_earth(text: str) -> bool:
    """Imagery-provider credits such as "Google Earth" or "map data", which describe no scene content."""
    return bool(_GOOGLE_EARTH.search(text))


def is_non_english(text: str) -> bool:
    """Non-English: letters mostly outside the Latin alphabet, or Latin-script text whose function
    words are foreign (at least two and more than the English ones)."""
    if not text.isascii():  # the script check is slow per character; ASCII text is all Latin anyway
        letters = [c for c in text if c.isalpha()]
        if not letters:
            return False
        latin = sum(1 for c in letters if c.isascii() or "LATIN" in unicodedata.name(c, ""))
        if latin / len(letters) < 0.8:
            return True
    words = _words(text)
    foreign = sum(w in _FOREIGN_FUNCTION for w in words)
    english = sum(w in _EN_FUNCTION for w in words)
    return foreign >= 2 and foreign > english


def is_too_short(text: str) -> bool:
    """Fewer than ``MIN_WORDS`` (3) words: too little to describe a scene."""
    return len(_words(text)) < MIN_WORDS


def is_too_long(text: str) -> bool:
    """More than ``MAX_WORDS`` (60) words or ``MAX_CHARS`` (400) characters (web boilerplate, tag lists)."""
    return len(_words(text)) > MAX_WORDS or len(text) > MAX_CHARS


def is_generic(text: str) -> bool:
    """Generic captions with little scene content ("an aerial view of the area", "satellite image"):
    fewer than two words left after removing image-type words ("aerial", "view", "satellite", ...)
    and function words."""
    content = [w for w in _words(text) if w not in _GENERIC_WORDS and not w.isdigit()]
    return len(content) < 2


_TEMPERATURE = _any_re("temperatures?", "heat", "heated", "heating", "hot", "hotter", "warm", "warmer", "warmth",
                       "cold", "colder", "cool", "cooler", "thermal(?:ly)? (?:emission|signature|radiation)",
                       "degrees?", "celsius", "kelvin", "°c")
_EMISSIVITY = _any_re("emissivity", "emissive", "emits?", "emitting", "emissions?", "radiance", "radiant",
                      "radiometric(?:ally)?", "radiation", "radiates?")
_REFLECTIVITY = _any_re("reflectivity", "reflectance", "reflective", "reflects?", "reflecting", "reflections?",
                        "albedo")
_MATERIAL = _any_re("materials?", "made of", "composed of", "metal", "metallic", "steel", "concrete", "asphalt",
                    "wooden", "plastic", "glass", "moisture", "moist", "surface propert(?:y|ies)")
_RGB_COLOUR = _any_re("red", "reddish", "green", "greenish", "blue", "bluish", "yellow", "yellowish", "orange",
                      "purple", "pink", "brown", "brownish", "violet", "cyan", "magenta", "turquoise",
                      "colou?rful", "colou?red")


def claims_temperature(text: str) -> bool:
    """IR-aware blocked claim: temperature or heat (the IR images are synthetic, not thermal measurements)."""
    return bool(_TEMPERATURE.search(text))


def claims_emissivity(text: str) -> bool:
    """IR-aware blocked claim: emissivity or radiance."""
    return bool(_EMISSIVITY.search(text))


def claims_reflectivity(text: str) -> bool:
    """IR-aware blocked claim: reflectivity / reflectance."""
    return bool(_REFLECTIVITY.search(text))


def claims_material(text: str) -> bool:
    """IR-aware blocked claim: material or surface property ("metal roofs", "made of concrete")."""
    return bool(_MATERIAL.search(text))


def claims_rgb_colour(text: str) -> bool:
    """IR-aware blocked claim: RGB colour words the infrared-style image cannot show (gray, dark and
    bright are allowed)."""
    return bool(_RGB_COLOUR.search(text))


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("stock_photo", "caption", "stock-photo artefacts (agency names, 'stock photo', 'royalty free')",
         is_stock_photo),
    Rule("copyright", "caption", "copyright or watermark notices", is_copyright),
    Rule("google_earth", "caption", "imagery-provider credits such as 'Google Earth'", is_google_earth),
    Rule("non_english", "caption", "not English", is_non_english),
    Rule("too_short", "caption", f"fewer than {MIN_WORDS} words", is_too_short),
    Rule("too_long", "caption", f"more than {MAX_WORDS} words or {MAX_CHARS} characters", is_too_long),
    Rule("generic", "caption", "generic caption with little scene content", is_generic),
    Rule("ir_temperature", "ir_caption", "claims temperature or heat", claims_temperature),
    Rule("ir_emissivity", "ir_caption", "claims emissivity or radiance", claims_emissivity),
    Rule("ir_reflectivity", "ir_caption", "claims reflectivity", claims_reflectivity),
    Rule("ir_material", "ir_caption", "claims a material or surface property", claims_material),
    Rule("ir_rgb_colour", "ir_caption", "names an RGB colour the IR image cannot show", claims_rgb_colour),
)}
"""All cleaning rules by name, in the order they are reported."""


def normalize(text: str) -> str:
    """Whitespace only (strip, collapse runs): cleaning never rewrites words, it keeps or drops."""
    return " ".join(str(text).split())


def violations(text: str, applies_to: str = "caption", skip: Iterable[str] = ()) -> list[str]:
    """Names of the rules (of one kind) that ``text`` violates, in registry order."""
    skip = set(skip)
    return [r.name for r in RULES.values() if r.applies_to == applies_to and r.name not in skip and r.check(text)]


# --------------------------------------------------------------------------- choice + decision

@dataclass
class CaptionDecision:
    """What the build does with one record's captions."""

    caption: str | None
    all_captions: list[str] | None
    origin: str  # "source" | "class_name"
    rejected: dict[str, int] = field(default_factory=dict)
    """rule name -> number of this record's candidate captions it rejected"""
    drop_reason: str | None = None  # "missing_caption" | "caption_dropped" when no caption and no fallback


def pick(usable: list[str], choice: str, seed: int, sample_id: str) -> tuple[str, list[str] | None]:
    """Apply the caption-choice policy (see :data:`CHOICES`) to a non-empty list of usable captions."""
    if choice == "first":
        return usable[0], None
    if choice == "random":
        h = int.from_bytes(hashlib.sha256(f"{seed}\x1f{sample_id}".encode()).digest()[:8], "big")
        return usable[h % len(usable)], None
    if choice == "all":
        return usable[0], list(usable)
    raise ValueError(f"unknown caption choice {choice!r}; expected one of {CHOICES}")


def fallback_caption(class_name: str) -> str:
    return FALLBACK_TEMPLATE.format(name=class_name.replace("_", " ").strip())


def decide(sample_id: str, candidates: list[str], *, class_name: str | None = None, choice: str = "first",
           seed: int = 0, skip_rules: Iterable[str] = ()) -> CaptionDecision:
    """Clean the candidates, pick one, or fall back to the class name, or say why the row is dropped."""
    rejected: dict[str, int] = {}
    usable: list[str] = []
    for cand in candidates:
        text = normalize(cand)
        if not text:
            continue
        bad = violations(text, "caption", skip_rules)
        for name in bad:
            rejected[name] = rejected.get(name, 0) + 1
        if not bad and text not in usable:
            usable.append(text)
    if usable:
        cap, all_caps = pick(usable, choice, seed, sample_id)
        return CaptionDecision(cap, all_caps, "source", rejected)
    if class_name:
        cap = fallback_caption(class_name)
        return CaptionDecision(cap, [cap] if choice == "all" else None, "class_name", rejected)
    return CaptionDecision(None, None, "source", rejected,
                           drop_reason="caption_dropped" if candidates else "missing_caption")


def decide_ir(text: str | None, skip_rules: Iterable[str] = ()) -> tuple[str | None, list[str]]:
    """(accepted IR-aware caption or None, violated rule names). A rejected one moves the row to ``base``."""
    if text is None:
        return None, []
    t = normalize(text)
    if not t:
        return None, []
    bad = violations(t, "ir_caption", skip_rules)
    return (None if bad else t), bad


# --------------------------------------------------------------------------- readers

@dataclass(frozen=True)
class CaptionEntry:
    """Captions read for one key. ``key`` is ("sid", id) | ("rec", source, record_id) | ("file", source, name)."""

    key: tuple[str, ...]
    captions: tuple[str, ...]
    class_name: str | None = None


class CaptionFileError(ValueError):
    """A caption file that cannot be read; the message names the file and, where known, the row."""


_TEXT_COLS = ("caption", "captions", "raw", "text", "sentence")
_IR_COLS = ("ir_caption", "iraware_caption", "caption", "text")


def _as_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None]
    s = str(value)
    if s.startswith("[") and s.endswith("]"):
        try:
            v = json.loads(s)
            if isinstance(v, list):
                return [str(x) for x in v if x is not None]
        except json.JSONDecodeError:
            pass
    return [s]


def _table_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a JSONL(.gz) / CSV / Parquet table as dicts, with a 1-based row (line) number."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    elif name.endswith((".csv", ".csv.gz", ".tsv")):
        with open_text(path) as fh:
            reader = csv.DictReader(fh, delimiter="\t" if name.endswith(".tsv") else ",")
            for n, row in enumerate(reader, 2):
                yield n, row
    else:
        with open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CaptionFileError(f"{path.name} line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise CaptionFileError(f"{path.name} line {n}: expected a JSON object")
                yield n, row


def _row_key(path: Path, n: int, row: dict) -> tuple[str, ...]:
    sid = row.get("sample_id")
    if sid not in (None, ""):
        return ("sid", str(sid))
    src = row.get("source_dataset") or row.get("source")
    rec = row.get("source_record_id")
    if src not in (None, "") and rec not in (None, ""):
        if src not in SOURCES:
            raise CaptionFileError(f"{path.name} row {n}: unknown source {src!r}; expected one of {SOURCES}")
        return ("rec", str(src), str(rec))
    raise CaptionFileError(f"{path.name} row {n}: needs `sample_id`, or `source_dataset` and `source_record_id`")


def read_caption_table(path: str | os.PathLike) -> Iterator[CaptionEntry]:
    """A caption table: one row per caption (or a list in ``captions``), keyed by sample id or source record."""
    path = Path(path)
    for n, row in _table_rows(path):
        key = _row_key(path, n, row)
        col = next((c for c in _TEXT_COLS if c in row), None)
        if col is None:
            raise CaptionFileError(f"{path.name} row {n}: no caption column (one of {', '.join(_TEXT_COLS)})")
        cls = row.get("class_name") or None
        yield CaptionEntry(key, tuple(_as_list(row[col])), cls)


def read_iraware(path: str | os.PathLike) -> Iterator[tuple[str, str]]:
    """The IR-aware caption file: ``(sample_id, ir_caption)`` pairs (JSONL, CSV or Parquet)."""
    path = Path(path)
    yield from _named_errors(path, _iraware_pairs(path))


def _iraware_pairs(path: Path) -> Iterator[tuple[str, str]]:
    for n, row in _table_rows(path):
        sid = row.get("sample_id")
        if sid in (None, ""):
            raise CaptionFileError(f"{path.name} row {n}: missing `sample_id`")
        col = next((c for c in _IR_COLS if row.get(c) not in (None, "")), None)
        if col is None:
            raise CaptionFileError(f"{path.name} row {n} (sample_id={sid!r}): no IR-aware caption "
                                   f"(one of {', '.join(_IR_COLS)})")
        yield str(sid), str(row[col])


def read_karpathy_json(path: str | os.PathLike, source: str) -> Iterator[CaptionEntry]:
    """RSICD / RSITMD native annotations: ``{"images": [{"filename", "sentences": [{"raw"}], "split"}]}``."""
    path = Path(path)
    data = _load_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise CaptionFileError(f"{path.name}: expected an object with an `images` list ({source} format)")
    for i, img in enumerate(images):
        if not isinstance(img, dict) or not img.get("filename"):
            raise CaptionFileError(f"{path.name}: images[{i}] has no `filename`")
        sents = [s.get("raw") for s in img.get("sentences") or [] if isinstance(s, dict) and s.get("raw")]
        yield CaptionEntry(("file", source, PurePosixPath(str(img["filename"])).name), tuple(sents))


_RAW_KEY = re.compile(r"^raw(?:_(\d+))?$")


def read_nwpu_captions(path: str | os.PathLike) -> Iterator[CaptionEntry]:
    """NWPU-Captions native file: ``{class: [{"filename", "raw", "raw_1", ... "raw_4"}]}``.

    The class key also gives the row's ``class_name`` (used for the class-name fallback).
    """
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise CaptionFileError(f"{path.name}: expected an object of class -> list (NWPU-Captions format)")
    for cls, items in data.items():
        if not isinstance(items, list):
            raise CaptionFileError(f"{path.name}: class {cls!r} is not a list")
        for i, it in enumerate(items):
            if not isinstance(it, dict) or not it.get("filename"):
                raise CaptionFileError(f"{path.name}: {cls}[{i}] has no `filename`")
            raws = sorted(((int(m[1] or 0), v) for k, v in it.items() if (m := _RAW_KEY.match(k)) and v),
                          key=lambda kv: kv[0])
            yield CaptionEntry(("file", "NWPU", PurePosixPath(str(it["filename"])).name),
                               tuple(str(v) for _, v in raws), str(cls))


def _load_json(path: Path):
    try:
        with open_text(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise CaptionFileError(f"{path.name}: not valid JSON ({e.msg} at line {e.lineno})") from None


NATIVE_READERS: dict[str, Callable[[Path], Iterator[CaptionEntry]]] = {
    "RSICD": lambda p: read_karpathy_json(p, "RSICD"),
    "RSITMD": lambda p: read_karpathy_json(p, "RSITMD"),
    "NWPU": read_nwpu_captions,
}
"""Native caption formats by source. A new source with its own annotation format adds a reader here."""


def detect_format(path: str | os.PathLike, source: str | None = None) -> str:
    """``"table"`` or a source name whose native reader applies, from the name and (for .json) content."""
    p = Path(path)
    name = p.name.lower()
    if source:
        if source not in NATIVE_READERS:
            raise CaptionFileError(f"{p.name}: no native caption reader for {source!r}; "
                                   f"known: {', '.join(NATIVE_READERS)} (or give a caption table)")
        return source
    if not (name.endswith(".json") or name.endswith(".json.gz")):
        return "table"
    data = _load_json(p)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        tag = str(data.get("dataset", "")).lower()
        for src in ("RSITMD", "RSICD"):
            if src.lower() in tag or src.lower() in name:
                return src
        raise CaptionFileError(f"{p.name}: RSICD/RSITMD-style file but the source is unclear; "
                               f"pass it as RSICD={path} or RSITMD={path}")
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        return "NWPU"
    if isinstance(data, list):
        return "table-json"
    raise CaptionFileError(f"{p.name}: unrecognised caption file (not a table, RSICD/RSITMD or NWPU-Captions)")


_READ_ERRORS = (OSError, EOFError, ValueError, csv.Error, zlib.error)
"""What a reader raises on a corrupt file: bad UTF-8, truncated gzip, a non-parquet ``.parquet``
(pyarrow's errors subclass these), a malformed CSV."""


def _named_errors(path: Path, items: Iterable[T]) -> Iterator[T]:
    """Pass ``items`` through; turn a read error into a :class:`CaptionFileError` naming the file.

    The readers stream, so a corrupt byte far into a file surfaces mid-iteration; without this it
    would be a bare ``UnicodeDecodeError`` / ``ArrowInvalid`` traceback out of ``fusionrs build``.
    """
    n = 0
    try:
        for item in items:
            n += 1
            yield item
    except CaptionFileError:
        raise
    except _READ_ERRORS as e:
        raise CaptionFileError(f"{path.name}: unreadable after {n} entries ({type(e).__name__}: {e})") from None


def read_caption_file(path: str | os.PathLike, source: str | None = None) -> Iterator[CaptionEntry]:
    """Entries of any supported caption file (format detected, or forced by ``source``)."""
    p = Path(path)
    try:
        fmt = detect_format(path, source)
    except CaptionFileError:
        raise
    except _READ_ERRORS as e:
        raise CaptionFileError(f"{p.name}: unreadable ({type(e).__name__}: {e})") from None
    if fmt == "table":
        return _named_errors(p, read_caption_table(path))
    if fmt == "table-json":
        return _named_errors(p, _json_array_table(p))
    return _named_errors(p, NATIVE_READERS[fmt](p))


def _json_array_table(path: Path) -> Iterator[CaptionEntry]:
    for n, row in enumerate(_load_json(path), 1):
        if not isinstance(row, dict):
            raise CaptionFileError(f"{path.name} item {n}: expected an object")
        key = _row_key(path, n, row)
        col = next((c for c in _TEXT_COLS if c in row), None)
        if col is None:
            raise CaptionFileError(f"{path.name} item {n}: no caption column")
        yield CaptionEntry(key, tuple(_as_list(row[col])), row.get("class_name") or None)


# --------------------------------------------------------------------------- disk-backed lookup

def _k(key: tuple[str, ...]) -> str:
    return "\x1f".join(key)


class CaptionStore:
    """Captions and IR-aware captions on disk (SQLite), looked up per index record.

    Built once per run from the caption files (a fresh file each time, so a changed caption
    file is always picked up); memory use does not grow with the number of captions.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-journal", "-wal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE cap(pos INTEGER PRIMARY KEY, k TEXT NOT NULL, text TEXT NOT NULL);"
            "CREATE TABLE cls(k TEXT PRIMARY KEY, name TEXT NOT NULL);"
            "CREATE TABLE ira(sid TEXT PRIMARY KEY, text TEXT NOT NULL);"
        )
        self.counts = {"caption_entries": 0, "captions": 0, "iraware": 0, "iraware_duplicates": 0}

    def add(self, entries: Iterable[CaptionEntry]) -> int:
        n = 0
        with self.db:
            for e in entries:
                k = _k(e.key)
                self.db.executemany("INSERT INTO cap(k, text) VALUES (?, ?)", [(k, c) for c in e.captions])
                if e.class_name:
                    self.db.execute("INSERT OR IGNORE INTO cls(k, name) VALUES (?, ?)", (k, e.class_name))
                n += 1
                self.counts["captions"] += len(e.captions)
        self.counts["caption_entries"] += n
        return n

    def add_iraware(self, pairs: Iterable[tuple[str, str]]) -> int:
        """First caption per sample id wins; later duplicates are counted, not silently merged."""
        n = 0
        with self.db:
            for sid, text in pairs:
                cur = self.db.execute("INSERT OR IGNORE INTO ira(sid, text) VALUES (?, ?)", (sid, text))
                if cur.rowcount:
                    n += 1
                else:
                    self.counts["iraware_duplicates"] += 1
        self.counts["iraware"] += n
        return n

    def finish(self) -> None:
        """Index the lookup column once everything is loaded (much faster than indexing on insert)."""
        self.db.execute("CREATE INDEX IF NOT EXISTS cap_k ON cap(k)")
        self.db.commit()

    @staticmethod
    def record_keys(sample_id: str, source: str, record_id: str, locator: str) -> list[tuple[str, ...]]:
        name = PurePosixPath(locator).name
        return [("sid", sample_id), ("rec", source, record_id), ("file", source, name), ("file", source, locator)]

    def lookup(self, sample_id: str, source: str, record_id: str, locator: str) -> tuple[list[str], str | None]:
        """(captions of the first key kind that has any, class name hint or None)."""
        keys = [_k(k) for k in self.record_keys(sample_id, source, record_id, locator)]
        marks = ",".join("?" * len(keys))
        by_key: dict[str, list[str]] = {}
        for k, text in self.db.execute(f"SELECT k, text FROM cap WHERE k IN ({marks}) ORDER BY pos", keys):
            by_key.setdefault(k, []).append(text)
        caps = next((by_key[k] for k in keys if k in by_key), [])
        classes = dict(self.db.execute(f"SELECT k, name FROM cls WHERE k IN ({marks})", keys).fetchall())
        cls = next((classes[k] for k in keys if k in classes), None)
        return caps, cls

    def iraware(self, sample_id: str) -> str | None:
        row = self.db.execute("SELECT text FROM ira WHERE sid=?", (sample_id,)).fetchone()
        return row[0] if row else None

    def close(self) -> None:
        self.db.close()
