"""The embedded sample: a small, complete FusionRS-format repo made from procedural scenes.

It has the layout a build of the authors' release rc4-20260727 has: all five sources, all three
splits, both groups, the release's rights codes, ``source_record_id`` equal to ``sample_id``, and
IR-aware rows in train only (rc4 publishes IR-aware captions for train only), so the ``iraware``
config has a train split and nothing else, while ``default`` and the per-source configs have
train, validation and test.

``layout="paper"`` (:data:`LAYOUTS`) groups the same rows as the paper did instead, for code that
needs IR-aware evaluation rows: IR-aware validation rows for RS5M and NWPU only (none for SkyScript,
RSICD and RSITMD) and an IR-aware test split that is the whole test split. Only the grouping
differs; images and captions are the same for a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .captions.irfilter import FILTERED_STATUS
from .card import write_card
from .layout import SPLITS
from .scenes import captions, jpeg_bytes, png_bytes, render_scene
from .schema import SOURCES, joint_group_id_for
from .shards import ShardSink
from .text import normalize_caption

DEFAULT_COUNTS = {"train": 44, "validation": 8, "test": 10}
"""Rows per source and split: 5 x 62 = 310 triplets."""
IRAWARE_VALIDATION_SOURCES = ("RS5M", "NWPU")
"""Sources with IR-aware validation rows in the ``paper`` layout (``rc4`` has none anywhere but train)."""
RIGHTS = {
    "RS5M": "rs5m-item-rights-unconfirmed", "SkyScript": "skyscript-naip-public-domain",
    "NWPU": "nwpu-captions-text-unlicensed", "RSICD": "rsicd-redistribution-license-not-located",
    "RSITMD": "rsitmd-redistribution-license-not-located",
}
"""The release's ``source_rights_code`` per source (the authors' ``build_public_redacted_index.py``, as
:mod:`fusionrs_hf.release.rights` has them); the sample's SkyScript rows count as NAIP (``_US_``) tiles."""


LAYOUTS = ("rc4", "paper")
"""Where the sample's IR-aware rows are: ``rc4`` (the release: train only) or ``paper`` (the paper's layout:
also part of validation and the whole of test)."""


def is_iraware(source: str, split: str, i: int, layout: str = "rc4") -> bool:
    """The sample's IR-aware membership rule (deterministic in the row position and the layout)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    if split == "train":
        return i % 3 == 0
    if layout == "rc4":
        return False
    if split == "test":
        return True
    return source in IRAWARE_VALIDATION_SOURCES and i % 2 == 0


def sample_rows(seed: int = 0, counts: dict[str, int] | None = None, size: int = 256, quality: int = 90,
                layout: str = "rc4", ir_format: str = "jpeg"):
    """Yield ``(source, split, group, row)`` for the sample, deterministically for a seed.

    ``ir_format``: ``jpeg`` (the default, small and fast) or ``png``, the format DiffV2IR writes and a faithful
    rebuild therefore stores (lossless, several times the bytes and the decode time: see BENCHMARKS.md)."""
    if ir_format not in ("jpeg", "png"):
        raise ValueError(f"ir_format must be 'jpeg' or 'png', got {ir_format!r}")
    encode_ir = (lambda a: jpeg_bytes(a, quality)) if ir_format == "jpeg" else png_bytes
    counts = counts or DEFAULT_COUNTS
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown or any(not isinstance(n, int) or n < 0 for n in counts.values()):
        raise ValueError(f"counts maps a split ({', '.join(SPLITS)}) to a number of rows >= 0 per source, got "
                         f"{counts!r}")
    first_split: dict[str, str] = {}
    for s_idx, source in enumerate(SOURCES):
        for sp_idx, split in enumerate(SPLITS):
            rng = np.random.default_rng([seed, s_idx, sp_idx])
            for i in range(counts.get(split, 0)):
                scene = render_scene(rng, size)
                cap, ir_cap = captions(scene, rng)
                sid = f"{source.lower()}-{split[:3]}-{i:05d}"
                cap = _split_unique_caption(cap, split, sid, first_split)
                group = "iraware" if is_iraware(source, split, i, layout) else "base"
                row = {
                    "sample_id": sid,
                    "source": source,
                    "source_record_id": sid,  # rc4: the record id is the sample id
                    "rgb": {"bytes": jpeg_bytes(scene.rgb, quality)},
                    "ir": {"bytes": encode_ir(scene.ir)},
                    "caption": cap,
                    "all_captions": None,
                    "caption_origin": "source",
                    "ir_caption": ir_cap if group == "iraware" else None,
                    # as a build gives a caption of a file without statuses that passes the authors' filter
                    "ir_caption_status": FILTERED_STATUS if group == "iraware" else None,
                    "class_name": scene.scene_class if source == "NWPU" else None,
                    "joint_group_id": joint_group_id_for(sid),
                    "rights_code": RIGHTS[source],
                }
                yield source, split, group, row


def _split_unique_caption(cap: str, split: str, sid: str, first_split: dict[str, str]) -> str:
    """Keep FusionRS's split rule on the sample: one caption text never appears in two splits.

    Template captions repeat; the real split keeps repeats in one split, and ``fusionrs check``
    reports any that cross. A repeat in a later split gets the (unique) sample id appended, which
    leaves the rng stream, and so every image, unchanged. Captions are compared in the checker's
    normalized form (:func:`fusionrs_hf.text.normalize_caption`), so "Farmland, river." and
    "farmland river" count as one text here exactly as they do in ``leak_caption``.
    """
    if first_split.setdefault(normalize_caption(cap), split) == split:
        return cap
    cap = f"{cap.rstrip('.')} (tile {sid})."
    first_split.setdefault(normalize_caption(cap), split)
    return cap


def make_sample_repo(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    counts: dict[str, int] | None = None,
    size: int = 256,
    quality: int = 90,
    max_rows: int = 32,
    batch: str = "main",
    repo_id: str | None = None,
    layout: str = "rc4",
    ir_format: str = "jpeg",
) -> Path:
    """Write the sample repo (shards + card) to ``out`` and return its path.

    ``max_rows`` is small on purpose: it gives several shards per split, which the worker and
    DDP tests need. ``layout``: ``rc4`` (IR-aware rows in train only, as the release) or ``paper``.
    """
    out = Path(out)
    sinks: dict[tuple[str, str, str], ShardSink] = {}
    for source, split, group, row in sample_rows(seed, counts, size, quality, layout, ir_format):
        key = (source, split, group)
        if key not in sinks:
            sinks[key] = ShardSink(out, source, split, group, batch=batch, max_rows=max_rows)
        sinks[key].add(row)
    if not sinks:
        raise ValueError(f"counts={counts!r} give no rows: nothing to write to {out}")
    for sink in sinks.values():
        sink.close()
    write_card(out, sample=True, repo_id=repo_id or str(out.resolve()))
    return out


def run_demo(out: str | os.PathLike, *, seed: int = 0, show: int = 4) -> dict:
    """Write the sample, load it with the stock client: counts, one triplet and the card's contact sheet."""
    from datasets import get_dataset_config_names, load_dataset, load_dataset_builder

    out = Path(out)
    make_sample_repo(out, seed=seed)
    counts: dict[str, dict[str, int]] = {}
    for cfg in get_dataset_config_names(str(out)):
        info = load_dataset_builder(str(out), cfg).info
        counts[cfg] = {name: s.num_examples for name, s in (info.splits or {}).items()}
    ds = load_dataset(str(out), "iraware", split="train", streaming=True)
    rows = [r for _, r in zip(range(show), ds, strict=False)]
    from .card_assets import CONTACT_SHEET

    sheet = out / CONTACT_SHEET  # the card's own (one sheet, not a second copy in the repo's root)
    first = rows[0]
    return {
        "repo": str(out),
        "counts": counts,
        "triplet": {
            "sample_id": first["sample_id"], "source": first["source"],
            "rgb": f"{first['rgb'].mode} {first['rgb'].size}", "ir": f"{first['ir'].mode} {first['ir'].size}",
            "caption": first["caption"], "ir_caption": first["ir_caption"],
        },
        "contact_sheet": str(sheet),
    }
