"""Synthetic source trees for `fusionrs build` (``fusionrs demo --sources DIR``, and the tests' factory):
native-layout copies of all five sources, made up, so a maintainer can run a build end to end before the real
sources are at hand.

Everything is made from `fusionrs_hf.scenes`, so images are real JPEG (and, for RSITMD, real
TIFF) files with texture. The layouts follow the upstream releases closely enough to exercise
the real readers:

- NWPU:      NWPU-RESISC45/<class>/<class>_NNN.jpg + NWPU-Captions ``dataset_nwpu.json`` (per-class lists)
- RSICD:     RSICD_images/<name>.jpg + ``dataset_rsicd.json`` (``images[].filename/sentences[].raw/split``)
- RSITMD:    images/<name>.tif + ``dataset_RSITMD.json`` (same format as RSICD)
- RS5M:      <subset>/<id>.jpg + a CSV caption table keyed by source_dataset + source_locator
- SkyScript: images/<id>.jpg + a JSONL caption table keyed by sample_id

plus an IR folder (``<source>/<sample_id>.png``: DiffV2IR's PNG outputs, at the release's
``translation.output_key``), an IR-aware JSONL file and the index in both record variants (public
gzip, internal plain).

Ids are the release's: ``source_record_id`` is the FusionRS ``sample_id`` itself (the authors'
``build_release_manifest.py`` writes ``"source_record_id": sample_id``), and the IR output key is
``f"{dataset}/{sample_id}.png"``. An upstream id (``laion-000000``, ``airport_001``) appears only in
the image's file name, so in ``source_locator``; that is why the caption tables are keyed the two
ways a user's own table can meet the real index: by ``source_dataset`` + ``source_locator`` (the
image's path in the user's copy of the source) or by ``sample_id``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from fusionrs_hf.scenes import captions, jpeg_bytes, png_bytes, render_scene

SPLIT_PLAN = ("train", "train", "train", "val", "test")
"""Index splits of the records of each source (5 per source, 25 in all)."""

NATIVE_SIZE = {"NWPU": 256, "RSICD": 224, "RSITMD": 256, "RS5M": 256, "SkyScript": 224}
"""RGB side per source, as the upstream datasets ship them; IR is always ``IR_SIZE`` (DiffV2IR writes 512 px)."""
IR_SIZE = 512

RIGHTS = {"NWPU": "nwpu-captions-text-unlicensed", "RS5M": "rs5m-item-rights-unconfirmed",
          "RSICD": "rsicd-redistribution-license-not-located", "RSITMD": "rsitmd-redistribution-license-not-located",
          "SkyScript": "skyscript-naip-public-domain"}
RIGHTS_NOTES = {"NWPU": "CC BY-NC 4.0 upstream; index-only by default", "RS5M": "heterogeneous upstream rights; index-only",
                "RSICD": "no uniform redistribution license located; index-only",
                "RSITMD": "no uniform redistribution license located; index-only",
                "SkyScript": "source-specific Earth Engine terms; index-only"}


@dataclass
class Expect:
    """What the default (rc4) build must write for one record, and what the ``paper``/``strict`` policies do."""

    sample_id: str
    source: str
    split: str  # datasets split name
    rgb_path: Path
    ir_path: Path
    caption: str | None
    caption_origin: str = "source"
    ir_caption: str | None = None
    class_name: str | None = None
    all_captions: list[str] | None = None
    ir_status: str | None = None
    paper_caption: str | None = None
    paper_origin: str = "source"
    strict_ir_caption: str | None = None
    record: dict = field(default_factory=dict)

    @property
    def group(self) -> str:
        return "iraware" if self.ir_caption else "base"


@dataclass
class Fixture:
    root: Path
    roots: dict[str, Path]
    ir_root: Path
    records: list[dict]
    index_public: Path
    index_internal: Path
    caption_files: list[Path]
    iraware: Path
    expect: dict[str, Expect] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    """sample_id -> expected drop reason in the standard (rc4) build."""
    paper_dropped: dict[str, str] = field(default_factory=dict)
    """sample_id -> expected drop reason with ``--caption-policy paper``."""

    def source_root_args(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.roots.items()]


def tiff_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="TIFF")
    return buf.getvalue()


def public_record(sid: str, source: str, rec_id: str, locator: str, split: str, ir_key: str, *,
                  usable: bool = True) -> dict:
    """A line of the public index, exactly as ``fusionrs-public-record-v1.schema.json`` asks."""
    return {
        "schema_version": "fusionrs-public-index-v1", "sample_id": sid, "source_dataset": source,
        "source_record_id": rec_id, "source_locator": locator, "source_rights_code": RIGHTS[source],
        "split": split, "joint_group_id": "joint-group:" + hashlib.sha256(sid.encode()).hexdigest()[:24],
        "phash4_component_id": f"singleton_{sid}",
        "canonical_component_representative": sid, "is_canonical_component_representative": True,
        "is_eval_representative": split != "train", "caption_supervision_available_upstream": usable,
        "vlm_train_identity": split == "train", "prior_reused_protected": False,
        "translation": {"model": "DiffV2IR", "output_key": ir_key, "redistribution": "conditional_on_upstream_rights"},
    }


def internal_record(pub: dict, caption: str | None, class_name: str | None) -> dict:
    """The internal variant of ``pub`` (``fusionrs-record-v1.schema.json``), key computed independently."""
    import re
    import unicodedata

    rec = {k: v for k, v in pub.items()
           if k not in ("vlm_train_identity", "source_rights_code", "caption_supervision_available_upstream")}
    norm = unicodedata.normalize("NFKC", caption or "").casefold().strip()
    norm = re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", norm)).strip()
    rec.update(schema_version="fusionrs-index-v1", class_name=class_name if pub["source_dataset"] == "NWPU" else None,
               caption=caption, caption_usable=bool(norm), vlm_train_used=pub["vlm_train_identity"],
               source_rights_note=RIGHTS_NOTES[pub["source_dataset"]],
               normalized_caption_key=hashlib.sha256(norm.encode()).hexdigest() if norm else None)
    return rec


def iraware_record(sid: str, source: str, split: str, caption: str, status: str, reasons=()) -> dict:
    return {"schema_version": "fusionrs-iraware-caption-v1", "sample_id": sid, "source_dataset": source,
            "split": split, "caption": caption, "status": status, "filter_reasons": list(reasons)}


def write_jsonl(path: Path, rows: list[dict], gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


NWPU_CLASSES = ("airport", "baseball_diamond", "river")
METAL = "Bright metal roofs and concrete lots line the road in the infrared-style image."
"""Accepted by the authors' filter (rc4), rejected by our strict rules (ir_material)."""
WARM = "Warm roofs appear bright in the infrared image."
"""Listed by the release as removed_strict_v2: never used."""


def _resize(arr: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(arr).resize((side, side), Image.BILINEAR))


def make_fixture(root: Path, size: int | None = None, seed: int = 0) -> Fixture:
    """An rc4-shaped test release: all five sources in native layout and native sizes, 512 px IR,
    caption files, both index variants and an IR-aware file with accepted and removed statuses.

    ``size`` forces one side for RGB and IR alike (faster, for tests that only need a build).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    roots = {s: root / "src" / s for s in ("NWPU", "RSICD", "RSITMD", "RS5M", "SkyScript")}
    ir_root = root / "ir"
    records: list[dict] = []
    expect: dict[str, Expect] = {}
    dropped: dict[str, str] = {}
    paper_dropped: dict[str, str] = {}
    nwpu_json: dict[str, list] = {c: [] for c in NWPU_CLASSES}
    karpathy = {"RSICD": {"images": [], "dataset": "rsicd"}, "RSITMD": {"images": [], "dataset": "rsitmd"}}
    rs5m_rows: list[dict] = []
    sky_rows: list[dict] = []
    iraware_rows: list[dict] = []
    internal_caps: dict[str, str | None] = {}

    for source, sroot in roots.items():
        for i, split in enumerate(SPLIT_PLAN):
            ir_side = size or IR_SIZE
            scene = render_scene(rng, ir_side)
            rgb_arr = scene.rgb if size else _resize(scene.rgb, NATIVE_SIZE[source])
            cap, ir_cap = captions(scene, rng)
            sid = f"{source.lower()}-{i:04d}"
            cap = f"{cap.rstrip('.')} in tile {sid}."  # the release never has one caption key in two splits
            cls = None
            usable_upstream = True
            all_caps = [cap, f"There are {i + 2} buildings near a road in this {scene.scene_class} scene."]
            if source == "NWPU":
                cls = NWPU_CLASSES[i % len(NWPU_CLASSES)]
                locator = f"NWPU-RESISC45/{cls}/{cls}_{i + 1:03d}.jpg"
                data = jpeg_bytes(rgb_arr)
                entry = {"filename": f"{cls}_{i + 1:03d}.jpg", "split": split, "imgid": i}
                if i == 1:  # no caption at all: the release marks it unusable (one of rc4's 8)
                    all_caps, usable_upstream = [], False
                elif i == 2:  # only captions the paper's rules reject: rc4 keeps the first
                    all_caps = ["Stock photo of an airport, royalty free", "airport"]
                if all_caps:
                    entry.update({("raw" if j == 0 else f"raw_{j}"): c for j, c in enumerate(all_caps)})
                    nwpu_json[cls].append(entry)
            elif source in ("RSICD", "RSITMD"):
                name = f"{scene.scene_class}_{i + 1}"
                if source == "RSICD":
                    locator, data = f"RSICD_images/{name}.jpg", jpeg_bytes(rgb_arr)
                else:
                    locator, data = f"images/{name}.tif", tiff_bytes(rgb_arr)
                fname = Path(locator).name
                karpathy[source]["images"].append({
                    "filename": fname, "imgid": i, "split": split,
                    "sentences": [{"raw": c, "tokens": c.lower().split(), "imgid": i, "sentid": 5 * i + j}
                                  for j, c in enumerate(all_caps)]})
            elif source == "RS5M":
                # the upstream (LAION) id lives in the file name only; the user's table knows the image by it
                locator, data = f"rs5m_part0/laion-{i:06d}.jpg", jpeg_bytes(rgb_arr)
                if i == 4:  # only a stock-photo caption and no class name: rc4 keeps it, paper drops the row
                    all_caps = ["Aerial stock photo of a city, Shutterstock royalty free image"]
                for c in all_caps:
                    rs5m_rows.append({"source_dataset": "RS5M", "source_locator": locator, "caption": c})
            else:
                # a NAIP tile: the _US_ tag in the file name gives its rights code
                locator, data = f"images/sky_US_{i:05d}.jpg", jpeg_bytes(rgb_arr)
                sky_rows.append({"sample_id": sid, "captions": all_caps})

            rgb_path = sroot / locator
            rgb_path.parent.mkdir(parents=True, exist_ok=True)
            rgb_path.write_bytes(data)
            ir_key = f"{source}/{sid}.png"  # the release's output key; DiffV2IR writes PNG
            ir_path = ir_root / ir_key
            ir_path.parent.mkdir(parents=True, exist_ok=True)
            ir_path.write_bytes(png_bytes(scene.ir))

            pub = public_record(sid, source, sid, locator, split, ir_key, usable=usable_upstream)  # record id = sid
            records.append(pub)
            rc4_cap = all_caps[0] if all_caps else None
            paper_usable = [c for c in all_caps if not c.startswith(("Stock", "Aerial stock")) and c != "airport"]
            paper_cap, paper_origin = (paper_usable[0] if paper_usable else None), "source"
            if paper_cap is None and cls:
                paper_cap, paper_origin = f"a remote sensing image of {cls.replace('_', ' ')}.", "class_name"
            internal_caps[sid] = rc4_cap
            ir_caption = strict_ir = status = None
            if split == "train" and i == 0:
                ir_caption = strict_ir = ir_cap
                status = "accepted_strict_v3"
                iraware_rows.append(iraware_record(sid, source, split, ir_cap, status))
            if i == 1 and source == "SkyScript":
                ir_caption, status = METAL, "accepted_strict_v3"
                iraware_rows.append(iraware_record(sid, source, split, METAL, status))
            if i == 2 and source == "RS5M":
                iraware_rows.append(iraware_record(sid, source, split, WARM, "removed_strict_v2", ["temperature"]))
            expect[sid] = Expect(sid, source, {"val": "validation"}.get(split, split), rgb_path, ir_path, rc4_cap,
                                 "source", ir_caption, cls, all_caps or None, status, paper_cap, paper_origin,
                                 strict_ir, pub)
            if rc4_cap is None:
                dropped[sid] = "no_usable_caption"
            if paper_cap is None:
                paper_dropped[sid] = "caption_dropped"

    native_nwpu = write_json(roots["NWPU"] / "dataset_nwpu.json", nwpu_json)
    rsicd = write_json(roots["RSICD"] / "dataset_rsicd.json", karpathy["RSICD"])
    rsitmd = write_json(roots["RSITMD"] / "dataset_RSITMD.json", karpathy["RSITMD"])
    rs5m_csv = root / "rs5m_captions.csv"
    with open(rs5m_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["source_dataset", "source_locator", "caption"])
        w.writeheader()
        w.writerows(rs5m_rows)
    sky = write_jsonl(root / "skyscript_captions.jsonl", sky_rows)
    iraware = write_jsonl(root / "iraware_strict_v3.jsonl.gz", iraware_rows, gz=True)
    index_public = write_jsonl(root / "index_public.jsonl.gz", records, gz=True)
    index_internal = write_jsonl(
        root / "index_internal.jsonl",
        [internal_record(r, internal_caps[r["sample_id"]], expect[r["sample_id"]].class_name) for r in records])
    return Fixture(root, roots, ir_root, records, index_public, index_internal,
                   [native_nwpu, rsicd, rsitmd, rs5m_csv, sky], iraware, expect, dropped, paper_dropped)


def build_options(fx: Fixture, out: Path, **over):
    """``BuildOptions`` for a fixture: every source root, the IR folder, caption and IR-aware files, 1 worker."""
    from fusionrs_hf.build import BuildOptions

    kw = dict(index=str(fx.index_public), out=str(out), source_roots={k: str(v) for k, v in fx.roots.items()},
              ir_root=str(fx.ir_root), captions=[(None, str(p)) for p in fx.caption_files],
              iraware=[str(fx.iraware)], rows_per_shard=2, workers=1, progress=False)
    kw.update(over)
    return BuildOptions(**kw)


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    return path


def decoded(data_or_path) -> np.ndarray:
    """Pixels of an image file or bytes (to compare a TIFF input with its lossless PNG)."""
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"))
