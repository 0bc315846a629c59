"""Build options, the per-source registry, limits and the errors a build raises (exit 2)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..captions import (
    CAPTION_POLICIES,
    CHOICES,
    DEFAULT_CAPTION_POLICY,
    DEFAULT_IR_POLICY,
    IR_POLICIES,
    RULES,
)
from ..layout import BUILD_STATE_DIR, DEFAULT_BATCH, REPORT_NAME
from ..schema import SOURCES
from ..sources import DEFAULT_REGISTRY, Source, SourceError, SourceRegistry, registry_for
from .images import DEFAULT_MAX_PIXELS

BUILDER_VERSION = "3"
"""Bumped when the bytes a build writes for the same inputs change; part of every shard fingerprint."""
STATE_DIR = BUILD_STATE_DIR
DEFAULT_ROWS_PER_SHARD = 1000
RELEASE_DROPS = frozenset({"no_usable_caption"})
"""Drop reasons the release itself implies (it marks the record's caption unusable): a faithful
rebuild does not write these rows, so ``--strict`` does not count them."""
EXAMPLES = 10
"""Example sample ids kept per cleaning rule in the report."""
CRASH_ENV = "FUSIONRS_BUILD_CRASH_AFTER"
"""Testing aid: hard-exit the build (like a kill -9) after this many shards were written."""
NON_JPEG_POLICIES = ("png", "keep", "jpeg")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


# source registry

@dataclass(frozen=True)
class SourceSpec:
    """Per-source build behaviour of the FusionRS sources (a repo's own sources, declared in
    ``fusionrs_sources.json``, get the defaults); native caption formats register in `captions.NATIVE_READERS`."""

    name: str
    class_name_from_locator: bool = False
    """NWPU-RESISC45 stores images as ``<class>/<class>_001.jpg``: the folder is the scene class."""
    class_names: bool = True
    """Whether a row may carry a ``class_name`` at all (from its locator or a caption table's column). The
    release's record schema allows one for NWPU only (``class_name`` must be null for every other source); a
    repo's own source may name classes."""


SOURCE_SPECS: dict[str, SourceSpec] = {s.name: s for s in (
    SourceSpec("RS5M", class_names=False), SourceSpec("SkyScript", class_names=False),
    SourceSpec("NWPU", class_name_from_locator=True),
    SourceSpec("RSICD", class_names=False), SourceSpec("RSITMD", class_names=False),
)}
assert set(SOURCE_SPECS) == set(SOURCES), "SOURCE_SPECS must cover schema.SOURCES"


# options + errors

class BuildError(Exception):
    """Unreadable or invalid input (exit code 2); the message names the file, line or field."""


@dataclass
class BuildOptions:
    index: str
    out: str
    source_roots: dict[str, str] = field(default_factory=dict)
    ir_root: str | None = None
    captions: list[tuple[str | None, str]] = field(default_factory=list)
    """(forced source or None, path) per caption file."""
    iraware: list[str] = field(default_factory=list)
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD
    batch: str = DEFAULT_BATCH
    workers: int = 1
    caption_choice: str = "first"
    caption_policy: str = DEFAULT_CAPTION_POLICY
    iraware_policy: str = DEFAULT_IR_POLICY
    seed: int = 0
    skip_rules: list[str] = field(default_factory=list)
    non_jpeg: str = "png"
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Source images above this many pixels are not written (``too_many_pixels``), judged from the header."""
    allow_size_mismatch: bool = False
    """Also write pairs whose IR is not one picture with the RGB (``fusionrs_hf.pairing``), else dropped."""
    on_bad_line: str = "error"
    overwrite: bool = False
    progress: bool = True
    new_source: Source | None = None
    """A source of the repo's own that this build declares (``--from-folder --source NAME``); it is written to
    ``OUT/fusionrs_sources.json`` before any shard."""
    report_name: str = REPORT_NAME

    def registry(self) -> SourceRegistry:
        """The sources this build may write: OUT's registry, plus :attr:`new_source` if it is new."""
        import fsspec

        out = Path(self.out)
        try:
            reg = registry_for(fsspec.filesystem("file"), str(out.resolve())) if out.is_dir() else DEFAULT_REGISTRY
        except SourceError as e:
            raise BuildError(str(e)) from None
        if self.new_source is not None and reg.get(self.new_source.name) is None:
            try:
                reg = reg.with_source(self.new_source)
            except SourceError as e:
                raise BuildError(str(e)) from None
        return reg

    def fingerprint(self) -> str:
        """What, besides the plan and the files, changes the bytes of a shard."""
        parts = [BUILDER_VERSION, self.batch, self.non_jpeg, str(self.jpeg_quality), str(self.allow_size_mismatch),
                 str(self.max_pixels)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()



def spec_of(source: str) -> SourceSpec:
    """Build behaviour of a source (a repo's own sources get the defaults)."""
    return SOURCE_SPECS.get(source) or SourceSpec(source)


def _missing(path) -> str:
    """Why ``path`` is no file to read: missing, or there but not a regular file (a FIFO would hang)."""
    return "not a regular file (a folder, FIFO, socket or device)" if Path(path).exists() else "no such file"


def _no_records(index: str) -> bool:
    """Whether the index holds no line at all but blank ones (read up to its first record only). An index the
    reader cannot read is not "empty": the planner names its file and line."""
    from ..index import open_text

    try:
        with open_text(index) as fh:
            return not any(line.strip() for line in fh)
    except Exception:  # noqa: BLE001 - unreadable: reported, with its line, where the records are read
        return False


def _check_inputs(opts: BuildOptions) -> None:
    if not Path(opts.index).is_file():
        raise BuildError(f"index {opts.index}: {_missing(opts.index)}")
    if _no_records(opts.index):
        raise BuildError(f"index {opts.index}: no records (the file is empty or blank); nothing to build")
    names = opts.registry().names
    for src, root in opts.source_roots.items():
        if src not in names:
            raise BuildError(f"--source-root {src}=...: unknown source; expected one of {', '.join(names)}")
        if not Path(root).is_dir():
            raise BuildError(f"--source-root {src}={root}: not a directory")
    if opts.ir_root and not Path(opts.ir_root).is_dir():
        raise BuildError(f"--ir-root {opts.ir_root}: not a directory")
    for _, path in opts.captions:
        if not Path(path).is_file():
            raise BuildError(f"--captions {path}: {_missing(path)}")
    for path in opts.iraware:
        if not Path(path).is_file():
            raise BuildError(f"--iraware {path}: {_missing(path)}")
    unknown = set(opts.skip_rules) - set(RULES)
    if unknown:
        raise BuildError(f"--skip-rule {sorted(unknown)[0]}: unknown rule; known: {', '.join(RULES)}")
    if opts.caption_policy not in CAPTION_POLICIES:
        raise BuildError(f"--caption-policy {opts.caption_policy}: expected one of {', '.join(CAPTION_POLICIES)}")
    if opts.iraware_policy not in IR_POLICIES:
        raise BuildError(f"--iraware-policy {opts.iraware_policy}: expected one of {', '.join(IR_POLICIES)}")
    if opts.caption_choice not in CHOICES:
        raise BuildError(f"--caption-choice {opts.caption_choice}: expected one of {', '.join(CHOICES)}")
    if opts.rows_per_shard < 1:
        raise BuildError("--rows-per-shard must be at least 1")
    if opts.workers < 1:
        raise BuildError(f"--workers {opts.workers}: must be at least 1")
    from ..layout import BATCH_RE

    if not BATCH_RE.match(opts.batch):
        raise BuildError(f"--batch {opts.batch!r}: a batch tag must match {BATCH_RE.pattern} (it is part of every "
                         "shard's file name)")
    if Path(opts.out).exists() and not Path(opts.out).is_dir():
        raise BuildError(f"--out {opts.out}: a file, not a folder")
