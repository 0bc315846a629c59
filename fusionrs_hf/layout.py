"""Where shards live and which shards make up which config: the single registry.

The card (YAML ``configs``), the loading script, the builder, the checker and the pusher all
derive their paths from this module. A shard path is::

    data/{source_dir}/{split}/{group}-{batch}-{index:05d}.parquet

- ``group`` is ``iraware`` (rows with an IR-aware caption) or ``base`` (the rest), so the
  ``iraware`` config is a glob over existing shards, never a copy.
- ``batch`` names one build (``main`` by default). A later batch for one source (new RS5M
  rows, a regenerated IR set) writes ``{group}-{newbatch}-00000.parquet`` next to the old
  files: nothing is renamed and every glob keeps matching. There is no ``-of-NNNNN`` total
  in the name for the same reason.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import UnknownConfigError
from .schema import SOURCES
from .sources import DEFAULT_REGISTRY, SourceRegistry, registry_for

SPLITS: tuple[str, ...] = ("train", "validation", "test")
INDEX_SPLITS: dict[str, str] = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
"""Split names as written in the official index, mapped to the `datasets` names."""
SPLIT_TO_INDEX: dict[str, str] = {"train": "train", "validation": "val", "test": "test"}
"""The reverse: how the official index spells each `datasets` split."""
GROUPS: tuple[str, ...] = ("iraware", "base")
DEFAULT_BATCH = "main"
REPORT_NAME = "build_report.json"
"""The build report at a repo's root: what was written and why the rest was not, and which release."""
_REPORT_SHAPE: dict = {
    "release": {"release": (str, type(None)), "sha256": str, "rows": int, "note": (str, type(None)),
                "sources_built": list},
    "captions": {"policy": (str, type(None)), "iraware_policy": (str, type(None))},
    "rc4_comparison": {"counts": {"*": {"*": {"index": int}}}},
    "written": {"by_source_split_group": {"*": {"*": {"*": int}}}},
}
"""The parts of a build report that the card and ``check --release`` read, and their types (``"*"``: any key)."""


def parse_build_report(raw: bytes | str) -> dict | None:
    """A repo's build report, or None when it is not one we can use (not JSON, nested too deeply, not an
    object, or a part the card or the release checks read of another type): treated as absent, as an unreadable
    one is, never a crash naming a Python type. The report is data of the repo, not of this process."""
    import json

    try:
        obj = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) and _shaped(obj, _REPORT_SHAPE) else None


def _shaped(value, shape) -> bool:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return False
        if "*" in shape:
            return all(_shaped(v, shape["*"]) for v in value.values())
        return all(k not in value or _shaped(value[k], sub) for k, sub in shape.items())
    if shape is int or shape == (int,):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, shape)


BUILD_STATE_DIR = ".fusionrs-build"
"""Where ``fusionrs build`` keeps the state that lets an interrupted build resume (inside its ``--out``)."""


def interrupted_build(root) -> str:
    """The note a local repo folder without shards gets when a ``fusionrs build`` into it stopped before writing
    any (its state folder is there, and resumable): ``"; a fusionrs build ... resume it"``, else ``""``."""
    from pathlib import Path

    state = Path(root) / BUILD_STATE_DIR
    if not state.is_dir():
        return ""
    return (f"; a fusionrs build into it was interrupted ({state} holds its state): re-run the same "
            "`fusionrs build` command to resume it")


def build_progress(root) -> tuple[int, int] | None:
    """(planned, done) shards of the last ``fusionrs build`` that planned into ``root``, from its state folder:
    one ``plan/<path with / as __>.jsonl`` per planned shard (written before any shard), one
    ``done/<path>.json`` per finished one (written after it). None when there is no plan to go by (no state
    folder, or a build that never got to planning): then the folder's shards say all there is.

    Only names are read, never a shard, so it costs one directory listing per folder of the state."""
    from pathlib import Path

    state = Path(root) / BUILD_STATE_DIR
    plan_dir, done_dir = state / "plan", state / "done"
    if state.is_symlink() or not plan_dir.is_dir() or plan_dir.is_symlink():
        return None
    planned = {p.name[: -len(".jsonl")] for p in plan_dir.iterdir() if p.name.endswith(".jsonl")}
    done = 0
    if planned and done_dir.is_dir() and not done_dir.is_symlink():
        for p in done_dir.rglob("*.json"):
            rel = p.relative_to(done_dir).as_posix()[: -len(".json")]
            done += rel.replace("/", "__") in planned
    return len(planned), done


def unfinished_build(root) -> str | None:
    """The one-line refusal for a folder whose last ``fusionrs build`` has not finished, else None.

    The one rule of every command that publishes or describes a local repo (``fusionrs push``, ``fusionrs
    card``): a build killed half-way (or still running) leaves shards that are each complete, so every check of
    the shards and any card rendered from them is self-consistent, and only the build's own state tells that
    half the dataset is missing. A build is finished when every shard its plan lists has its done record
    (a shard whose rows were all dropped has one too, and no file). Why not the build report: a new-source build
    writes a report of another name, and a folder copied without its report is still complete."""
    progress = build_progress(root)
    if progress is None:
        return None
    planned, done = progress
    if done >= planned:
        return None
    return (f"{root}: a fusionrs build was interrupted here (or is still running): {BUILD_STATE_DIR} lists "
            f"{planned} shards, {done} are done; re-run the build first (the same `fusionrs build` command "
            "resumes it)")


DEFAULT_REPO_ID = "fusionrs/fusionrs"
"""Hub id used by :func:`fusionrs_hf.load` unless ``FUSIONRS_REPO`` or ``repo=`` says otherwise."""

def source_dir(source: str) -> str:
    """The folder (and per-source config name) of a source: its name in lower case, for every source."""
    return source.lower()


SOURCE_DIRS: dict[str, str] = {s: source_dir(s) for s in SOURCES}
DIR_SOURCES: dict[str, str] = {v: k for k, v in SOURCE_DIRS.items()}

BATCH_RE = re.compile(r"^[a-z0-9_]+\Z")
SHARD_TEMPLATE = "data/{source_dir}/{split}/{group}-{batch}-{index:05d}.parquet"
"""The shard naming rule; :func:`shard_path` formats it and messages quote it."""
SHARD_RE = re.compile(
    rf"^data/(?P<source_dir>[a-z0-9_]+)/(?P<split>{'|'.join(SPLITS)})/"
    rf"(?P<group>{'|'.join(GROUPS)})-(?P<batch>[a-z0-9_]+)-(?P<index>\d{{5}})\.parquet\Z"
)
"""The parser of :data:`SHARD_TEMPLATE`; split and group alternatives come from :data:`SPLITS` / :data:`GROUPS`."""


@dataclass(frozen=True)
class ConfigSpec:
    """One `datasets` config: which sources and groups its splits glob over.

    ``sources=None`` means every source of the repo (``default``, ``iraware``): its globs use ``*``,
    so a source added later is in them without a change to the card's patterns.
    """

    name: str
    description: str
    sources: tuple[str, ...] | None
    groups: tuple[str, ...] = GROUPS
    default: bool = False
    dirs: tuple[str, ...] = ()
    """Folders of ``sources`` (set by the layout that made the config)."""

    def patterns(self, split: str) -> list[str]:
        """Glob patterns (relative to the repo root) for one split of this config."""
        group_glob = "*" if set(self.groups) == set(GROUPS) else None
        src_globs = ["*"] if self.sources is None else list(self.dirs)
        out = []
        for src in src_globs:
            if group_glob:
                out.append(f"data/{src}/{split}/*.parquet")
            else:
                out.extend(f"data/{src}/{split}/{g}-*.parquet" for g in self.groups)
        return out

    def includes(self, source: str, group: str) -> bool:
        return (self.sources is None or source in self.sources) and group in self.groups


@dataclass(frozen=True, order=True)
class ShardName:
    """A parsed shard path."""

    source: str
    split: str
    group: str
    batch: str = DEFAULT_BATCH
    index: int = 0
    path: str = field(default="", compare=False)

    @property
    def relpath(self) -> str:
        return shard_path(self.source, self.split, self.group, self.index, self.batch)


class Layout:
    """Paths and configs of one repo, from its source registry (:mod:`fusionrs_hf.sources`).

    The module-level functions are this class for the default registry (the five FusionRS
    sources); :func:`layout_for` gives the layout of a repo that declares sources of its own.
    """

    def __init__(self, registry: SourceRegistry = DEFAULT_REGISTRY) -> None:
        self.registry = registry
        self.sources: tuple[str, ...] = registry.names
        self.source_dirs: dict[str, str] = {s.name: s.dir for s in registry.all}
        self.dir_sources: dict[str, str] = {v: k for k, v in self.source_dirs.items()}
        self.configs: tuple[ConfigSpec, ...] = (
            ConfigSpec("default", "Every triplet of every source, both groups (the paper's 600K set; an rc4 rebuild writes 599,992 rows).", None,
                       default=True),
            ConfigSpec("iraware", "Only rows that carry an IR-aware caption (`ir_caption` non-null), every source.",
                       None, ("iraware",)),
            *(ConfigSpec(d, f"Only rows from {s}, both groups.", (s,), dirs=(d,)) for s, d in self.source_dirs.items()),
        )
        self.configs_by_name: dict[str, ConfigSpec] = {c.name: c for c in self.configs}
        self.config_names: tuple[str, ...] = tuple(self.configs_by_name)

    def get_config(self, name: str | ConfigSpec) -> ConfigSpec:
        if isinstance(name, ConfigSpec):
            return name
        try:
            return self.configs_by_name[name]
        except KeyError:
            raise UnknownConfigError(f"unknown config {name!r}; expected one of {', '.join(self.config_names)}") from None

    def shard_path(self, source: str, split: str, group: str, index: int, batch: str = DEFAULT_BATCH) -> str:
        """The repo-relative path of a shard; the one place the naming rule is written."""
        if source not in self.source_dirs:
            raise ValueError(f"unknown source {source!r}; expected one of {self.sources}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r}; expected one of {GROUPS}")
        if not BATCH_RE.match(batch):
            raise ValueError(f"batch tag {batch!r} must match {BATCH_RE.pattern}")
        if not 0 <= index <= 99999:
            raise ValueError(f"shard index {index} out of range 0..99999")
        return SHARD_TEMPLATE.format(source_dir=self.source_dirs[source], split=split, group=group, batch=batch,
                                     index=index)

    def parse_shard_path(self, relpath: str) -> ShardName | None:
        """Parse a repo-relative path; ``None`` if it is not a well-formed shard path of a known source."""
        m = SHARD_RE.match(relpath.replace("\\", "/"))
        if not m or m["source_dir"] not in self.dir_sources:
            return None
        return ShardName(self.dir_sources[m["source_dir"]], m["split"], m["group"], m["batch"], int(m["index"]),
                         relpath)

    def config_files(self, config: ConfigSpec | str, split: str, files: Iterable[str]) -> list[str]:
        """The shards (from a repo listing) that belong to one config split, sorted."""
        pats = self.get_config(config).patterns(split)
        return sorted(f for f in files if any(glob_match(p, f) for p in pats))

    def data_files(self, config: ConfigSpec | str, files: Iterable[str]) -> dict[str, list[str]]:
        """YAML ``data_files`` for a config: per split, only patterns that match at least one file.

        A pattern that matches nothing makes `datasets` fail ("Unable to find ..."), so a source
        without, say, IR-aware validation rows simply contributes no pattern; a split with no
        files at all is left out of the config instead of breaking it.
        """
        spec = self.get_config(config)
        files = list(files)
        out: dict[str, list[str]] = {}
        for split in SPLITS:
            pats = [p for p in spec.patterns(split) if any(glob_match(p, f) for f in files)]
            if pats:
                out[split] = pats
        return out

    def list_shards(self, fs, root: str) -> tuple[list[ShardName], list[str]]:
        """List a repo's shards through fsspec: (well-formed shards, other parquet files under data/)."""
        root = root.rstrip("/")
        from .safepath import check_repo_file, check_tree, is_local_fs

        local = is_local_fs(fs)
        if local:  # an unreadable or symlinked folder would be left out of the listing without a word
            check_tree(root)
        try:  # find, not glob: a root holding [, ] or * is a name, not a pattern (x[1] listed nothing)
            found = [p for p in fs.find(f"{root}/data", withdirs=True) if p.endswith(".parquet")]
        except FileNotFoundError:
            found = []
        shards, orphans = [], []
        for full in sorted(found):
            if local:  # a FIFO would hang its reader; a symlink out of the repo would read outside it
                check_repo_file(root, full)
            rel = full[len(root) + 1:] if full.startswith(root + "/") else full.split(root.lstrip("/") + "/", 1)[-1]
            parsed = self.parse_shard_path(rel)
            (shards.append(parsed) if parsed else orphans.append(rel))
        return sorted(shards), orphans


DEFAULT_LAYOUT = Layout()
CONFIGS: tuple[ConfigSpec, ...] = DEFAULT_LAYOUT.configs
CONFIG_NAMES: tuple[str, ...] = DEFAULT_LAYOUT.config_names
CONFIGS_BY_NAME: dict[str, ConfigSpec] = DEFAULT_LAYOUT.configs_by_name


def layout_for(fs, root: str) -> Layout:
    """The layout of a repo: the default one, plus the sources its ``fusionrs_sources.json`` declares."""
    reg = registry_for(fs, root)
    return DEFAULT_LAYOUT if reg is DEFAULT_REGISTRY else Layout(reg)


def get_config(name: str | ConfigSpec) -> ConfigSpec:
    return DEFAULT_LAYOUT.get_config(name)


def shard_path(source: str, split: str, group: str, index: int, batch: str = DEFAULT_BATCH) -> str:
    """The repo-relative path of a shard of a FusionRS source (see :meth:`Layout.shard_path`)."""
    return DEFAULT_LAYOUT.shard_path(source, split, group, index, batch)


def parse_shard_path(relpath: str) -> ShardName | None:
    """Parse a repo-relative path of a FusionRS source; ``None`` if it is not a well-formed shard path."""
    return DEFAULT_LAYOUT.parse_shard_path(relpath)

def glob_match(pattern: str, relpath: str) -> bool:
    """Segment-wise glob match (``*`` never crosses ``/``), as the Hub and fsspec resolve YAML globs."""
    p, r = _segment_regexes(pattern), relpath.split("/")
    return len(p) == len(r) and all(rx.match(a) for rx, a in zip(p, r, strict=True))


@functools.lru_cache(maxsize=8192)
def _segment_regexes(pattern: str) -> tuple:
    """A pattern's segments, each compiled once (fnmatch's own cache is per segment and recompiles past 32k)."""
    return tuple(re.compile(fnmatch.translate(seg)) for seg in pattern.split("/"))


def config_files(config: ConfigSpec | str, split: str, files: Iterable[str]) -> list[str]:
    """The shards (from a repo listing) that belong to one config split, sorted."""
    return DEFAULT_LAYOUT.config_files(config, split, files)


def data_files(config: ConfigSpec | str, files: Iterable[str]) -> dict[str, list[str]]:
    """YAML ``data_files`` for a config (see :meth:`Layout.data_files`)."""
    return DEFAULT_LAYOUT.data_files(config, files)


def list_shards(fs, root: str) -> tuple[list[ShardName], list[str]]:
    """List a repo's shards through fsspec: (well-formed shards, other parquet files under data/).

    ``fs`` is any fsspec filesystem (local, ``hf://``, ``s3://``); ``root`` the repo root on it. The
    repo's own sources (``fusionrs_sources.json``) are read, so their shards are shards, not orphans.
    """
    return layout_for(fs, root).list_shards(fs, root)


def registry_dict() -> dict:
    """A JSON-able copy of the registry, embedded in the loading script (a test keeps them equal)."""
    from . import limits
    from .schema import FIELDS

    return {
        "fields": [[f.name, f.kind] for f in FIELDS],
        # what every reader refuses (fusionrs_hf.limits), so the loading script refuses it too
        "limits": {"max_pixels": limits.DEFAULT_MAX_PIXELS, "max_jpeg_scans": limits.MAX_JPEG_SCANS,
                   "image_formats": list(limits.IMAGE_FORMATS), "external_decoders": list(limits.EXTERNAL_DECODERS),
                   "max_row_group_bytes": limits.MAX_ROW_GROUP_BYTES},
        "splits": list(SPLITS),
        "groups": list(GROUPS),
        "source_dirs": dict(SOURCE_DIRS),
        "configs": [
            {"name": c.name, "description": c.description, "sources": None if c.sources is None else list(c.sources),
             "groups": list(c.groups), "default": c.default}
            for c in CONFIGS
        ],
    }
