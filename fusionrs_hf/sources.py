"""Which sources a repo holds: the five FusionRS sources, plus any source the repo declares itself.

A maintainer can publish RGB–IR pairs of their own (a drone survey, real thermal captures) beside the
FusionRS sources. Such a source is declared once, in the repo's ``fusionrs_sources.json`` (written by
``fusionrs build --from-folder ... --source NAME --rights-code ... --license ...``), and everything that
reads a repo (layout and configs, card, checker, loader, loading script) takes its source list from
:func:`registry_for`, never from a hard-coded tuple. The file lists only the repo's own sources; the
FusionRS five are always there.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

from .schema import SOURCES

REGISTRY_FILE = "fusionrs_sources.json"
IR_KINDS = ("synthetic", "measured")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{1,39}\Z")
"""A source name: a letter, then letters, digits or ``_`` (2-40 characters). Its folder and config
name is the name in lower case, which must not be taken."""
RESERVED_CONFIGS = frozenset({"default", "iraware"})


@dataclass(frozen=True)
class Source:
    name: str
    """As in the index's ``source_dataset`` and the rows' ``source`` column (e.g. ``RS5M``)."""
    title: str
    """Upstream description for the card."""
    terms: str
    """Rights / terms of use, for the card's rights table."""
    rights_code: str | None = None
    """Default ``rights_code`` of the source's rows (own sources must give one)."""
    license: str | None = None
    url: str | None = None
    citation: str | None = None
    ir_kind: str = "synthetic"
    """``synthetic`` (DiffV2IR-style translation) or ``measured`` (a real infrared sensor)."""
    release: str | None = None
    """The FusionRS release the source belongs to (rc4 checks apply to those only); None for own sources."""

    @property
    def dir(self) -> str:
        """Folder under ``data/`` and name of the per-source config."""
        return self.name.lower()  # = fusionrs_hf.layout.source_dir

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


# Terms as the release's rights audit states them (``dataset/licenses/sources.json``, checked 2026-07-27,
# "research_audit_not_legal_advice"): what was and was not located, never more.
FUSIONRS_SOURCES: tuple[Source, ...] = (
    Source("RS5M", "RS5M (image–text pairs filtered from LAION2B-en, COYO-700M, DataComp and RS datasets)",
           "Item-level rights are unconfirmed: the repository's MIT licence covers its software, not the collected "
           "web images or captions; check each item's origin.",
           "rs5m-item-rights-unconfirmed", release="rc4-20260727"),
    Source("SkyScript", "SkyScript (Google Earth Engine imagery: NAIP, Sentinel-2, others; OSM-derived captions)",
           "Image terms depend on the imagery product (e.g. NAIP public domain, SWISSIMAGE and Sentinel-2 with a "
           "source notice, several CC BY 4.0; see `rights_code`); captions derive from OpenStreetMap tags under "
           "ODbL 1.0 (attribution and share-alike).",
           release="rc4-20260727"),
    Source("NWPU", "NWPU-Captions over NWPU-RESISC45 (Google Earth imagery)",
           "Base images CC BY-NC 4.0 (non-commercial, with attribution and change marking); no licence was "
           "located for the NWPU-Captions text.",
           "nwpu-captions-text-unlicensed", release="rc4-20260727"),
    Source("RSICD", "RSICD (Google Earth, Baidu Map, MapABC, Tianditu imagery)",
           "No explicit redistribution or derivative-work licence was located; the upstream README names "
           "third-party imagery sources.", "rsicd-redistribution-license-not-located",
           release="rc4-20260727"),
    Source("RSITMD", "RSITMD (fine-grained RS image–text matching)", "Access and download are permitted; no "
           "explicit redistribution or derivative-work licence was located.",
           "rsitmd-redistribution-license-not-located", release="rc4-20260727"),
)
assert tuple(s.name for s in FUSIONRS_SOURCES) == SOURCES


class SourceError(ValueError):
    """A source declaration that cannot be used; ``str()`` is one line naming the source and the field."""


MAX_OWN_SOURCES = 256
"""A repo's own sources at most (each one a folder under data/ and a config of the card)."""


@dataclass(frozen=True)
class SourceRegistry:
    """The sources of one repo, in a fixed order: the FusionRS five, then the repo's own."""

    extra: tuple[Source, ...] = ()
    all: tuple[Source, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "all", FUSIONRS_SOURCES + tuple(self.extra))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.all)

    def get(self, name: str) -> Source | None:
        return next((s for s in self.all if s.name == name), None)

    def by_dir(self, d: str) -> Source | None:
        return next((s for s in self.all if s.dir == d), None)

    def with_source(self, src: Source) -> SourceRegistry:
        """This registry plus ``src``, validated (safe name, no clash, rights code, known IR kind)."""
        validate_new(src, self)
        return SourceRegistry((*self.extra, src))

    def to_json(self) -> str:
        return json.dumps({"schema_version": "fusionrs-sources-v1", "sources": [s.to_dict() for s in self.extra]},
                          indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = REGISTRY_FILE) -> SourceRegistry:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise SourceError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
            raise SourceError(f"{where}: expected an object with a `sources` list")
        if len(data["sources"]) > MAX_OWN_SOURCES:
            # each source is a config of the card: thousands are no dataset, and each is validated against the
            # ones before it (a 1 MB file of 16,000 took every command 27 s)
            raise SourceError(f"{where}: {len(data['sources']):,} sources, more than the limit {MAX_OWN_SOURCES}")
        reg = cls()
        for i, item in enumerate(data["sources"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise SourceError(f"{where}: sources[{i}] needs a `name`")
            known = set(Source.__dataclass_fields__)
            extra = set(item) - known
            if extra:
                raise SourceError(f"{where}: sources[{i}] ({item['name']}): unknown field(s) {sorted(extra)}")
            try:
                src = Source(**{k: item[k] for k in item if k in known})
            except TypeError as e:
                raise SourceError(f"{where}: sources[{i}] ({item['name']}): {e}") from None
            try:
                reg = reg.with_source(src)
            except SourceError as e:
                raise SourceError(f"{where}: {e}") from None
        return reg


DEFAULT_REGISTRY = SourceRegistry()


def validate_new(src: Source, reg: SourceRegistry) -> None:
    """Why ``src`` cannot join ``reg`` (one line), or nothing."""
    if not NAME_RE.match(src.name or ""):
        raise SourceError(f"source name {src.name!r}: must match {NAME_RE.pattern} (a safe folder and config name)")
    if len(reg.extra) >= MAX_OWN_SOURCES:  # refused where it would be written, not only where it is read
        raise SourceError(f"source {src.name!r}: the repo has {len(reg.extra)} own sources, the limit")
    if reg.get(src.name) is not None:
        raise SourceError(f"source {src.name!r} already exists in this repo")
    if reg.by_dir(src.dir) is not None or src.dir in RESERVED_CONFIGS:
        raise SourceError(f"source {src.name!r}: its config/folder name {src.dir!r} is already taken")
    if not src.rights_code or not str(src.rights_code).strip():
        raise SourceError(f"source {src.name!r}: a rights code is required (--rights-code): the card states the "
                          "terms of every row")
    if src.ir_kind not in IR_KINDS:
        raise SourceError(f"source {src.name!r}: ir_kind {src.ir_kind!r}; expected one of {', '.join(IR_KINDS)}")


def registry_for(fs, root: str) -> SourceRegistry:
    """The registry of a repo on any fsspec filesystem (the default one when the repo declares none).

    On this machine's filesystem the file is read only when it is a regular file inside ``root``
    (:func:`~fusionrs_hf.safepath.check_repo_file`, as for shards and the card): a FIFO there would hang
    every command that lists the repo, and a symlink to a file outside it would be read and published by
    ``push``; both are :class:`~fusionrs_hf.safepath.NotAFileError` (exit 2), naming the path."""
    from .safepath import check_repo_file, is_local_fs

    path = f"{root.rstrip('/')}/{REGISTRY_FILE}"
    try:
        if not fs.exists(path):
            return DEFAULT_REGISTRY
        if is_local_fs(fs):
            check_repo_file(root, path)
        data = fs.cat_file(path)
    except FileNotFoundError:
        return DEFAULT_REGISTRY
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return SourceRegistry.from_json(text, path)
