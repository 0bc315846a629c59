"""The dataset card (the repo's README.md): YAML ``configs`` + ``dataset_info`` derived from the shards.

Counts are never typed in: they are read from the parquet footers of the shards that exist,
so the card of the paper release, the rc4 release and a user's own build are each right.
The YAML is produced with the same helpers `datasets` uses to write cards
(``MetadataConfigs`` and ``DatasetInfosDict``), so the stock loader reads what we write.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from .errors import UnusableInputError
from .layout import DEFAULT_LAYOUT, GROUPS, SPLITS, Layout, ShardName, layout_for, list_shards
from .schema import FEATURES, SOURCES, field_docs_markdown

CARD_NAME = "README.md"
SAMPLE_MARKER = "This repository is a synthetic sample."
"""In the card of a synthetic sample (``fusionrs demo``); a re-render keeps the banner while it is there."""
LICENSE_LINK = "README.md#rights"
"""``license_link``: the card's own Rights section (the terms of every source, per row's ``rights_code``)."""
_LOCATION_RE = re.compile(r"<!-- fusionrs:location (\{.*?\}) -->")
_SNIPPET_RE = re.compile(r'load_dataset\(\s*"([^"]+)"')
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
"""The Hub's ``size_categories`` buckets (rows of the whole repo)."""
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

PAPER_COUNTS = {  # the paper's tables; the authors' release rc4 differs (fusionrs_hf.release.known.RC4)
    # source: ((train, validation, test) all rows, (train, validation, test) IR-aware) — the paper's tables
    "RS5M": ((471_729, 8_166, 8_138), (40_934, 369, 8_138)),
    "SkyScript": ((63_134, 1_036, 1_096), (4_916, 0, 1_096)),
    "NWPU": ((30_122, 549, 515), (2_219, 47, 515)),
    "RSICD": ((10_494, 166, 164), (719, 0, 164)),
    "RSITMD": ((4_521, 83, 87), (280, 0, 87)),
}
"""The paper's per-source figures, shown in the card for comparison only; counts always come from the shards."""

# From the release's own CITATION.cff (frozy129/FusionRS: type dataset, version rc4, date-released
# 2026-07-27, its eleven authors in its order); @misc, as the paper's venue is not stated there.
CITATION = r"""@misc{fusionrs2026,
  title        = {FusionRS: A Large-Scale RGB--Infrared Remote Sensing Dataset for Dual-Modal
                  Vision--Language Foundation Models},
  author       = {Han, Jiaju and Zhang, Ben and Sun, Xuemeng and Zhang, Qike and Dong, Yuxian and
                  Lu, Dingyi and Hu, Chengyin and Yang, Luwei and Zhang, Fengyu and Wei, Yiwei and
                  Guo, Jiujiang},
  year         = {2026},
  note         = {Dataset, release rc4 (2026-07-27)},
  howpublished = {\url{https://github.com/frozy129/FusionRS}}
}"""


@dataclass(frozen=True)
class ShardInfo:
    name: ShardName
    num_rows: int
    num_bytes: int
    """Uncompressed size from the parquet footer; what ``dataset_info.num_bytes`` reports."""
    file_bytes: int


class UnreadableShardError(UnusableInputError, ValueError):
    """A shard whose footer cannot be read (truncated, not parquet): unusable input, named, exit 2."""


def shard_info(fs, root: str, name: ShardName) -> ShardInfo:
    """Counts from a shard's footer only (no data pages read)."""
    path = f"{root.rstrip('/')}/{name.path}"
    with fs.open(path, "rb") as f:
        try:
            md = pq.ParquetFile(f).metadata
        except (pa.ArrowException, OSError) as e:  # ArrowInvalid: "Parquet magic bytes not found", no file named
            raise UnreadableShardError(f"shard {name.path}: not a readable parquet file ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
        size = fs.size(path)
    nbytes = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
    return ShardInfo(name, md.num_rows, nbytes, size)


def scan_repo(root: str | os.PathLike, fs=None) -> tuple[list[ShardInfo], list[str]]:
    """Footer stats of every shard in a repo folder (local, or any fsspec URL), plus orphan parquet files."""
    if fs is None:
        fs, root = fsspec.core.url_to_fs(str(root))
    shards, orphans = list_shards(fs, str(root))
    return [shard_info(fs, str(root), s) for s in shards], orphans


def expected_stats(shards: list[ShardInfo], lay: Layout = DEFAULT_LAYOUT) -> dict[str, dict[str, dict[str, int]]]:
    """``{config: {split: {"num_examples", "num_bytes", "download_size"}}}`` for configs with data."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for cfg in lay.configs:
        splits = {}
        for split in SPLITS:
            sel = [s for s in shards if s.name.split == split and cfg.includes(s.name.source, s.name.group)]
            if sel:
                splits[split] = {
                    "num_examples": sum(s.num_rows for s in sel),
                    "num_bytes": sum(s.num_bytes for s in sel),
                    "download_size": sum(s.file_bytes for s in sel),
                }
        out[cfg.name] = splits
    return out


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` value for a repo of ``rows`` rows."""
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1B"


def source_datasets(lay: Layout = DEFAULT_LAYOUT, shards: list[ShardInfo] | None = None) -> list[str]:
    """``source_datasets``: ``extended|NAME`` for each FusionRS source the repo holds rows of (all five when it
    holds none yet), plus ``original`` when it has sources of its own."""
    have = {s.name.source for s in shards or []}
    names = [s.name for s in lay.registry.all if s.name in SOURCES and (not have or s.name in have)]
    out = [f"extended|{n}" for n in names]
    if any(s.name not in SOURCES for s in lay.registry.all) and (not have or have - set(SOURCES)):
        out.append("original")
    return out


def card_data(shards: list[ShardInfo], lay: Layout = DEFAULT_LAYOUT) -> DatasetCardData:
    """The YAML header: configs with per-split globs, dataset_info with features and sizes, and the Hub's
    ``size_categories``, ``source_datasets`` and ``license_link``."""
    files = [s.name.path for s in shards]
    stats = expected_stats(shards, lay)
    meta: dict[str, dict] = {}
    infos: dict[str, DatasetInfo] = {}
    for cfg in lay.configs:
        df = lay.data_files(cfg, files)
        if not df:
            continue
        entry: dict = {"data_files": [{"split": sp, "path": pats if len(pats) > 1 else pats[0]}
                                      for sp, pats in df.items()]}
        if cfg.default:
            entry["default"] = True
        meta[cfg.name] = entry
        st = stats[cfg.name]
        infos[cfg.name] = DatasetInfo(
            description="",
            features=FEATURES,
            config_name=cfg.name,
            splits=SplitDict({sp: SplitInfo(sp, num_bytes=v["num_bytes"], num_examples=v["num_examples"])
                              for sp, v in st.items()}),
            download_size=sum(v["download_size"] for v in st.values()),
            dataset_size=sum(v["num_bytes"] for v in st.values()),
        )
    data = DatasetCardData(
        license="other",
        license_name="fusionrs-index-and-upstream-terms",
        license_link=LICENSE_LINK,
        size_categories=[size_category(sum(s.num_rows for s in shards))],
        source_datasets=source_datasets(lay, shards),
        task_categories=["zero-shot-image-classification", "image-to-text", "image-text-to-text"],
        language=["en"],
        tags=["remote-sensing", "infrared", "synthetic-infrared", "multimodal", "clip"],
        pretty_name="FusionRS",
    )
    MetadataConfigs(meta).to_dataset_card_data(data)
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def counts_table(shards: list[ShardInfo], lay: Layout = DEFAULT_LAYOUT) -> str:
    """Markdown table: rows per source x split x subset (all / IR-aware)."""
    n: dict[tuple[str, str, str], int] = defaultdict(int)
    for s in shards:
        n[s.name.source, s.name.split, s.name.group] += s.num_rows
    head = "| source | " + " | ".join(f"{sp} (all / IR-aware)" for sp in SPLITS) + " | total |"
    lines = [head, "|---" * (len(SPLITS) + 2) + "|"]
    present = [s for s in lay.sources if s in SOURCES or any(x.name.source == s for x in shards)]
    for src in (*present, None):
        srcs = tuple(present) if src is None else (src,)
        cells, total = [], 0
        for sp in SPLITS:
            tot = sum(n[s, sp, g] for s in srcs for g in GROUPS)
            ira = sum(n[s, sp, "iraware"] for s in srcs)
            total += tot
            cells.append(f"{tot:,} / {ira:,}")
        label = "**total**" if src is None else src
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {total:,} |")
    return "\n".join(lines)


def rc4_table() -> str:
    """The authors' release rc4-20260727: records per source and split, and accepted IR-aware captions (train only)."""
    from .layout import SPLIT_TO_INDEX
    from .release.known import RC4

    lines = ["| source | " + " | ".join(f"{sp} (all / IR-aware)" for sp in SPLITS) + " |", "|---" * 4 + "|"]
    for src in SOURCES:
        cells = [f"{RC4.expected_rows(src, sp):,} / {RC4.iraware_accepted[src] if sp == 'train' else 0:,}"
                 for sp in SPLITS]
        lines.append(f"| {src} | " + " | ".join(cells) + " |")
    tot = [f"{RC4.split_total(SPLIT_TO_INDEX[sp]):,} / {sum(RC4.iraware_accepted.values()) if sp == 'train' else 0:,}"
           for sp in SPLITS]
    lines.append("| **total** | " + " | ".join(tot) + " |")
    return "\n".join(lines)


def release_note(report: dict | None) -> str:
    """What the build report says this repo was built from: the release, or an unknown index."""
    from .release.known import RC4

    rel = (report or {}).get("release") or {}
    if not rel:
        return "No build report in this repo: the index it was built from is not recorded."
    name = rel.get("release")
    if name:
        text = (f"Built from **{name}** (index SHA-256 `{rel.get('sha256', '?')}`, {rel.get('rows', 0):,} records; "
                f"{rel.get('note', '')}).")
    else:  # the note says it is no known release, and what it may be
        note = rel.get("note") or "not a known release"
        note = note if note.startswith("not a known release") else f"not a known release ({note})"
        text = f"Built from an index that is **{note}**; SHA-256 `{rel.get('sha256', '?')}`, {rel.get('rows', 0):,} records."
    caps = (report or {}).get("captions", {})
    if caps.get("policy"):
        text += (f" Caption policy `{caps['policy']}`, IR-aware policy `{caps.get('iraware_policy')}`"
                 + (" (the release's own rules)." if caps["policy"] == "rc4" == caps.get("iraware_policy")
                    else f" (not {RC4.name}'s defaults)."))
    srcs = rel.get("sources_built")
    if srcs is not None and set(srcs) != set(SOURCES):
        text += f" Sources built: {', '.join(srcs) or 'none'} (the release has {', '.join(SOURCES)})."
    return text


def paper_table() -> str:
    lines = ["| source | " + " | ".join(f"{sp} (all / IR-aware)" for sp in SPLITS) + " |", "|---" * 4 + "|"]
    for src, (alls, iras) in PAPER_COUNTS.items():
        lines.append(f"| {src} | " + " | ".join(f"{a:,} / {b:,}" for a, b in zip(alls, iras, strict=True)) + " |")
    tot = [sum(v[k][i] for v in PAPER_COUNTS.values()) for k in (0, 1) for i in range(3)]
    lines.append("| **total** | " + " | ".join(f"{tot[i]:,} / {tot[i + 3]:,}" for i in range(3)) + " |")
    return "\n".join(lines)


def _configs_md(lay: Layout) -> str:
    return "\n".join(f"- `{c.name}`{' (default)' if c.default else ''}: {c.description}" for c in lay.configs)


def _load_section(location, shards: list[ShardInfo], lay: Layout) -> str:
    """The card's Load section: the stock ``datasets`` call that works where the repo lives, recorded."""
    import json

    files = [s.name.path for s in shards]
    config = "iraware" if "train" in lay.data_files("iraware", files) else "default"
    code = location.load_snippet(config, "train", files=files, lay=lay)
    where = {"local": "this folder", "hub": "the Hub", "fsspec": f"`{location.protocol}://`"}[location.kind]
    extra = ""
    if location.kind == "fsspec":
        extra = ("\nStock `datasets` cannot open a repo folder on this store by its URL, so the call above names "
                 "the config's shards (`data_files`) and passes the store's `storage_options`. The same options "
                 "work for `fusionrs_hf.load(config, repo=URL, storage_options=...)`, "
                 "`fusionrs_hf.torch.make_dataloader(URL, storage_options=...)` and "
                 "`fusionrs check URL --storage-option KEY=VALUE`.\n")
    return (f"<!-- fusionrs:location {json.dumps(location.to_card(), sort_keys=True)} -->\n"
            f"Stock `datasets` 5.x, reading the repo where it lives ({where}):\n\n"
            f"```python\n{code}row = next(iter(ds))   # row[\"rgb\"], row[\"ir\"]: PIL images; "
            f"row[\"caption\"], row[\"ir_caption\"]: str\n```\n{extra}")


def _preview_section(assets) -> str:
    from .card_assets import CONTACT_SHEET, COUNTS_FIGURE

    assets = set(assets or ())
    parts = []
    if CONTACT_SHEET in assets:
        parts.append(f"![Triplets from every source: RGB, infrared-style image, caption and IR-aware caption]"
                     f"({CONTACT_SHEET})")
    if COUNTS_FIGURE in assets:
        parts.append(f"![Rows per source and split]({COUNTS_FIGURE})")
    return ("## Preview\n\n" + "\n\n".join(parts) + "\n\n") if parts else ""


def render_card(shards: list[ShardInfo], *, sample: bool = False, repo_id: str = "<user>/fusionrs",
                report: dict | None = None, lay: Layout = DEFAULT_LAYOUT, location=None, assets=()) -> str:
    """The full README.md text of a FusionRS repo.

    ``location`` (a :class:`fusionrs_hf.storage.Location`; default: from ``repo_id``, a Hub id, URL or
    folder) decides the Load snippet: the call that works where the repo lives. ``assets``: the repo-relative
    pictures beside the card (:mod:`fusionrs_hf.card_assets`) to show in its Preview section.
    """
    from .storage import describe

    if location is None:
        location = describe(repo_id)
    sample_note = (
        "> **This repository is a synthetic sample.** Every image was generated procedurally by "
        "`fusionrs demo` (aerial-like scenes, infrared-style counterparts, template captions). It has "
        "the FusionRS format and none of its content.\n\n" if sample else ""
    )
    rights = "\n".join(f"| {s.name} | {s.title} | {s.terms}"
                       + (f" Licence: {s.license}." if s.license and s.license not in s.terms else "")
                       + f" | {'synthetic (DiffV2IR-style)' if s.ir_kind == 'synthetic' else 'measured'} |"
                       for s in lay.registry.all)
    own = [s for s in lay.registry.extra]
    measured = [s.name for s in lay.registry.all if s.ir_kind == "measured"]
    own_note = "" if not own else (
        "\n\nThis repository also holds source(s) of its own, beside the FusionRS ones: "
        + "; ".join(f"**{s.name}** (config `{s.dir}`, rights code `{s.rights_code}`"
                    + (f", {s.license}" if s.license else "") + (f", {s.url}" if s.url else "")
                    + f", {s.ir_kind} IR)" for s in own)
        + ". The release checks (`fusionrs check --release rc4`) apply to the FusionRS sources only.")
    ir_scope = ("The `ir` images of every source" if not measured else
                "The `ir` images of " + ", ".join(s.name for s in lay.registry.all if s.ir_kind == "synthetic")
                + f" (not of {', '.join(measured)}, whose IR is measured by a sensor)")
    body = f"""
# FusionRS

{sample_note}FusionRS pairs RGB remote-sensing images from five public sources (RS5M, SkyScript, NWPU,
RSICD, RSITMD) with **infrared-style** images translated by DiffV2IR, the source caption, and, for a
subset, an IR-aware caption written for what the infrared-style image shows.{own_note}

> **Synthetic infrared.** {ir_scope} are generated by an image-to-image diffusion model
> (DiffV2IR: 512 px, 20 steps, seed 1234). They look like infrared imagery but are not thermal or
> radiometric measurements: no temperature, emissivity or material property can be read from them.
> Do not use them where real infrared observations are required.

## Load

{_load_section(location, shards, lay)}
## Configs

{_configs_md(lay)}

Every config has the splits `train`, `validation` and `test` where it has rows. Shards live at
`data/{{source}}/{{split}}/{{group}}-{{batch}}-{{index}}.parquet` with group `iraware` or `base`.

## Counts (from the shards in this repo)

{counts_table(shards, lay)}

{_preview_section(assets)}
## Which numbers are which

The authors publish a rights-cleared **index** (release `rc4-20260727`): ids, locators, splits, joint
groups, evaluation and training flags and the DiffV2IR output key of each record. It holds no image
bytes, no source captions and no per-image hashes (the IR-aware captions come as a manifest of their own
with the FusionRS-CLIP model release); users rebuild the triplets from their own copies of the sources. {release_note(report)}

The release rc4-20260727 (600,000 records; 579,992 train rows with a usable caption; 9,538 / 9,553
evaluation representatives in validation / test; IR-aware captions for train only):

{rc4_table()}

The paper's figures, for comparison only (an earlier state; e.g. IR-aware 49,068 / 416 / 10,000):

{paper_table()}

## Fields

{field_docs_markdown()}

## Rights

The FusionRS authors publish a rights-cleared index only; image bytes come from each user's own copy of
the sources, whose terms apply to every row of this repository. This card grants no rights.

| source | upstream | terms | infrared |
|---|---|---|---|
{rights}

## Citation

```bibtex
{CITATION}
```
"""
    return f"---\n{card_data(shards, lay).to_yaml()}\n---\n{body}"


def card_says(text: str | None) -> dict:
    """What an existing card already says that a re-render keeps: ``sample`` (its banner) and ``location``
    (``{"url", "storage_options"}`` from its Load section), each only when the card says it."""
    import json

    out: dict = {}
    if not text:
        return out
    if SAMPLE_MARKER in text:
        out["sample"] = True
    m = _LOCATION_RE.search(text)
    if m:
        try:
            loc = json.loads(m[1])
            if isinstance(loc, dict) and isinstance(loc.get("url"), str):
                out["location"] = {"url": loc["url"], "storage_options": loc.get("storage_options") or {}}
        except ValueError:
            pass
    else:  # a card written before the location was recorded: its snippet's first argument
        m = _SNIPPET_RE.search(text.split("## Load", 1)[-1])
        if m and m[1] != "parquet" and ("://" in m[1] or m[1].startswith("/") or
                                       re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", m[1])):
            out["location"] = {"url": m[1], "storage_options": {}}
    return out


def write_card(root: str | os.PathLike, *, sample: bool | None = None, repo_id: str | None = None,
               storage_options: dict | None = None, assets: bool = True) -> Path:
    """Scan a local repo folder and (re)write its README.md, and the pictures under ``assets/``.

    ``sample`` / ``repo_id`` None keep what the existing card says (its synthetic-sample banner, the Hub repo
    or store URL its Load snippet reads); otherwise the snippet reads this folder (where it is now). ``repo_id`` may be a Hub id, an
    fsspec URL (with ``storage_options``, credentials never written) or a path.
    """

    from .atomic import atomic_write
    from .card_assets import render_assets
    from .layout import REPORT_NAME, parse_build_report
    from .safepath import check_repo_file, check_write_under
    from .storage import describe

    root = Path(root)
    path = root / CARD_NAME
    check_repo_file(root, path)  # a FIFO would hang the read; a symlink out of the repo is not ours to read
    old = card_says(_head(path) if path.is_file() else None)
    if sample is None:
        sample = bool(old.get("sample"))
    location = describe(str(root.resolve()))  # a local card reads the folder it is in (also after a move)
    if repo_id is not None:
        location = describe(repo_id, storage_options)
    elif "location" in old:  # a Hub id or store URL the card names is kept; a local path is where it is now
        said = describe(old["location"]["url"], old["location"]["storage_options"])
        if said.kind != "local":
            location = said
    fs = fsspec.filesystem("file")
    shards, _ = scan_repo(str(root.resolve()), fs)
    lay = layout_for(fs, str(root.resolve()))
    report = None
    rp = root / REPORT_NAME
    check_repo_file(root, rp)  # its figures go into the card: only the repo's own regular file
    if rp.is_file():
        try:
            report = parse_build_report(rp.read_bytes())
        except OSError:
            report = None
    pictures = render_assets(fs, str(root.resolve()), shards, lay) if assets else {}
    for rel, data in pictures.items():
        target = root / rel
        check_write_under(root, target)  # assets/ a symlink to elsewhere: refused, nothing written
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != data:
            atomic_write(target, data)
    atomic_write(path, render_card(shards, sample=sample, report=report, lay=lay, location=location,
                                   assets=pictures))
    return path


def has_front_matter(text: str) -> bool:
    """Whether a card starts with a YAML header (``---`` lines around it), as the Hub and ``datasets`` read it."""
    return bool(_FRONT_MATTER.match(text))


@functools.lru_cache(maxsize=8)
def _parse_front_matter(text: str) -> dict:
    m = _FRONT_MATTER.match(text)
    if not m:
        return {}
    data = yaml.load(m[1], Loader=_YAML_LOADER)  # safe loader: a card never constructs objects
    if not isinstance(data, dict):
        raise ValueError("the card's YAML header is not a mapping")
    _refuse_expansion(data)
    return data


MAX_CARD_NODES = 200_000
"""Values a card's YAML header may expand to, aliases followed (a 600K-row repo's card has a few thousand)."""


def _refuse_expansion(data) -> None:
    """Refuse a header that aliases expand past :data:`MAX_CARD_NODES` values: aliases share one node, so a
    200 KB card of 20,000 aliases to one 400-entry list made every walk of it (split sizes, configs) take 77 s.
    An alias or two, as PyYAML writes a shared object, is fine. Counts at most the limit, so it is quick."""
    left, stack = MAX_CARD_NODES, [data]
    while stack:
        node = stack.pop()
        left -= 1
        if left < 0:
            raise ValueError(f"the card's YAML header expands to more than {MAX_CARD_NODES:,} values (aliases "
                             "repeating a part of it)")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def read_card_yaml(text: str) -> dict:
    """The YAML header of a card as a dict (``configs``, ``dataset_info``, ...).

    Parsed with libyaml's safe loader when present and cached: a 600K-row card has a large
    ``dataset_info`` and `check --fast` reads it several times; pure-Python YAML dominated it.
    Same result as ``huggingface_hub.DatasetCard(text).data.to_dict()`` for our cards.
    """
    return copy.deepcopy(_parse_front_matter(text))


def _head(path: Path) -> str:
    """The first :data:`~fusionrs_hf.limits.MAX_CARD_BYTES` of a card (what a re-render keeps is at its top)."""
    from .limits import MAX_CARD_BYTES

    with open(path, "rb") as f:
        return f.read(MAX_CARD_BYTES).decode("utf-8", errors="replace")


def card_configs(text: str) -> dict[str, dict[str, list[str]]]:
    """``{config: {split: [patterns]}}`` from a card's YAML; ValueError past the limits of
    :mod:`fusionrs_hf.limits` (bytes, patterns), before matching any pattern against any file."""
    from .limits import MAX_CARD_BYTES, MAX_CARD_PATTERNS

    if len(text) > MAX_CARD_BYTES:
        raise ValueError(f"the card is {len(text):,} characters, more than the limit {MAX_CARD_BYTES:,}")
    out: dict[str, dict[str, list[str]]] = {}
    n = 0
    for c in read_card_yaml(text).get("configs", []) or []:
        splits: dict[str, list[str]] = {}
        for df in c.get("data_files", []):
            p = df["path"]
            splits[df["split"]] = [p] if isinstance(p, str) else list(p)
            n += len(splits[df["split"]])
        if n > MAX_CARD_PATTERNS:
            raise ValueError(f"the card lists more than {MAX_CARD_PATTERNS:,} data_files patterns")
        out[c["config_name"]] = splits
    return out


def card_split_sizes(text: str) -> dict[str, dict[str, dict[str, int]]]:
    """``{config: {split: {"num_examples", "num_bytes"}}}`` from a card's ``dataset_info``."""
    info = read_card_yaml(text).get("dataset_info", []) or []
    if isinstance(info, dict):
        info = [info]
    return {
        i.get("config_name", "default"): {
            s["name"]: {"num_examples": s["num_examples"], "num_bytes": s["num_bytes"]} for s in i.get("splits", [])
        }
        for i in info
    }
