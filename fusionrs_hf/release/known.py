"""The authors' known releases: what each index file is, and the counts its official checks expect.

Numbers are the release's own (``dataset/CANONICAL_VERSION.json``, the index summary, the IR-aware
summary, ``dataset/configs/split_v3.json`` and the per-source retrieval results of rc4-20260727, and
FusionRS-CLIP's ``dataset/split_summary.json``), never the paper's: the paper reports
an earlier state (e.g. IR-aware 49,068 / 416 / 10,000; rc4 has 45,913 accepted captions, all train).
A build identifies its index by SHA-256 and row count; ``fusionrs check --release`` compares a built
repo with these counts. A new release is one more :class:`Release` in :data:`RELEASES`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace

from ..layout import SPLIT_TO_INDEX


@dataclass(frozen=True)
class Release:
    name: str
    index_file: str
    index_sha256: str
    index_rows: int
    split_counts: dict[str, dict[str, int]]
    """source -> index split (``train``/``val``/``test``) -> records."""
    train_usable: int
    """Train records with a usable caption (the rest have an empty caption after normalisation)."""
    eval_representatives: dict[str, int]
    """Index split -> unique evaluation representatives (``is_eval_representative``)."""
    iraware_accepted: dict[str, int]
    """source -> accepted IR-aware captions (all in train)."""
    eval_representatives_per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    """source -> index split (``val``/``test``) -> evaluation representatives of that source: the query set of
    the release's per-source retrieval results (empty: not stated)."""
    iraware_removed: dict[str, dict[str, int]] = field(default_factory=dict)
    """status -> source -> removed IR-aware captions (listed in the release, never used)."""
    iraware_accepted_status: str = "accepted_strict_v3"
    heldout_minimum_per_source: int = 500
    rights_code_counts: dict[str, int] = field(default_factory=dict)
    vlm_train_identity_rows: int = 0
    """Rows flagged ``vlm_train_identity`` (the internal ``vlm_train_used``; 0: not stated). All are train,
    and every accepted IR-aware caption is one of them."""
    blocked_fields: tuple[str, ...] = ()
    """Fields a public index line must not carry (rights-cleared release)."""
    joint_components: int | None = None
    """Joint groups (RGB pHash, IR pHash and caption components merged) over all records: distinct
    ``joint_group_id`` (None: not stated)."""
    prior_reused_protected_rows: int | None = None
    """Rows flagged ``prior_reused_protected`` (None: not stated)."""
    protected_groups: int | None = None
    """Joint groups with at least one row flagged ``vlm_train_identity`` or ``prior_reused_protected``, all forced
    into train (None: not stated)."""
    protected_group_rows: int | None = None
    """All rows of those groups, flagged or not (None: not stated)."""
    non_singleton_members: int | None = None
    """Rows in a pHash component of the cluster files, i.e. whose ``phash4_component_id`` is not
    ``singleton_<sample_id>`` (None: not stated)."""
    caption_keys: int | None = None
    """Distinct ``normalized_caption_key`` values over the records with a usable caption (None: not stated).
    The public index carries no caption, so this count and :attr:`caption_shared_keys` are what tells a rebuild
    whether its captions (the caption files, the choice among a source's sentences) are the authors'."""
    caption_shared_keys: int | None = None
    """Of those, the keys that more than one record has (None: not stated)."""
    iraware_file: str | None = None
    iraware_sha256: str | None = None
    """The release's IR-aware caption file and its SHA-256: the only caption strings the release ships."""

    @property
    def records(self) -> int:
        return sum(sum(v.values()) for v in self.split_counts.values())

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self.split_counts)

    def split_total(self, index_split: str) -> int:
        return sum(v.get(index_split, 0) for v in self.split_counts.values())

    def representatives(self, split: str, source: str | None = None) -> int | None:
        """Evaluation representatives of a ``datasets`` or index split, of one ``source`` or of all; None where
        the release states no count (a source's count it does not publish, an unknown split)."""
        index_split = SPLIT_TO_INDEX.get(split, split)
        if source is None:
            return self.eval_representatives.get(index_split)
        return self.eval_representatives_per_source.get(source, {}).get(index_split)

    def expected_rows(self, source: str, split: str) -> int:
        """Rows a faithful rebuild writes for one source and `datasets` split (before any missing files)."""
        return self.split_counts.get(source, {}).get(SPLIT_TO_INDEX[split], 0)


RC4 = Release(
    name="rc4-20260727",
    index_file="fusionrs_public_index_v3_rc4_20260727.jsonl.gz",
    index_sha256="b595b3885c9a1f45f065056d6fcd22ae57eda57ae017132e906cf301af687f34",
    index_rows=600_000,
    split_counts={
        "RS5M": {"train": 472_682, "val": 7_670, "test": 7_681},
        "SkyScript": {"train": 64_150, "val": 558, "test": 558},
        "NWPU": {"train": 30_094, "val": 556, "test": 536},
        "RSICD": {"train": 9_383, "val": 716, "test": 725},
        "RSITMD": {"train": 3_691, "val": 500, "test": 500},
    },
    train_usable=579_992,
    eval_representatives={"train": 0, "val": 9_538, "test": 9_553},
    # FusionRS results/clip/retrieval/per_source/<source>/{val_checkpoint_selection,test_580k_only_baseline}.json
    # "num_samples" (each "dropped_samples": 0); they add up to the split totals above
    eval_representatives_per_source={
        "RS5M": {"val": 7_637, "test": 7_660}, "SkyScript": {"val": 557, "test": 553},
        "NWPU": {"val": 551, "test": 536}, "RSICD": {"val": 700, "test": 707}, "RSITMD": {"val": 93, "test": 97},
    },
    iraware_accepted={"RS5M": 38_411, "SkyScript": 4_593, "NWPU": 2_014, "RSICD": 642, "RSITMD": 253},
    iraware_removed={
        "removed_strict_v2": {"RS5M": 2_131, "SkyScript": 265, "NWPU": 173, "RSICD": 68, "RSITMD": 22},
        "removed_strict_v3": {"RS5M": 38, "SkyScript": 1, "NWPU": 3, "RSICD": 1, "RSITMD": 1},
    },
    rights_code_counts={
        "nwpu-captions-text-unlicensed": 31_186, "rs5m-item-rights-unconfirmed": 488_033,
        "rsicd-redistribution-license-not-located": 10_824, "rsitmd-redistribution-license-not-located": 4_691,
        "skyscript-brandenburg-dl-de-by-2.0": 9_332, "skyscript-finland-nls-cc-by-4.0": 2_703,
        "skyscript-landsat8-public-domain": 575, "skyscript-landsat9-public-domain": 118,
        "skyscript-naip-public-domain": 24_938, "skyscript-pnoa-cc-by-4.0": 1_280,
        "skyscript-sentinel-copernicus-notice": 6_950, "skyscript-skysat-multispectral-cc-by-4.0": 172,
        "skyscript-skysat-rgb-cc-by-4.0": 653, "skyscript-swissimage-source-reference": 18_545,
    },
    # FusionRS-CLIP dataset/split_summary.json "rows_flagged_VLM_train_used"; FusionRS
    # dataset/configs/caption_filtering.json "traceable_accepted_train" (45,913 + 2,659 + 44) agrees
    vlm_train_identity_rows=48_616,
    blocked_fields=("caption", "class_name", "image_bytes", "ir_path", "normalized_caption_key", "rgb_path"),
    # FusionRS-CLIP dataset/split_summary.json: "grouping"."joint_components" (= "clusters"."total"), and
    # "protected": "rows_flagged_prior_reused_protected", "clusters_forced_train", "rows_in_protected_clusters"
    joint_components=440_623,
    prior_reused_protected_rows=54_487,
    protected_groups=47_628,
    protected_group_rows=142_322,
    # FusionRS-CLIP dataset/fusionrs_dataset_index_v3_rc4_20260726.jsonl.gz.summary.json "non_singleton_members":
    # len(components) in build_release_manifest.py, the sample ids of the RGB and IR near-cluster files
    non_singleton_members=84_980,
    # FusionRS-CLIP dataset/split_summary.json "grouping": "caption_rows" 599,992 (the usable captions),
    # "caption_unique_keys" (distinct keys: the reading its "caption_unions" 108,693 allows, at most rows - keys =
    # 122,026 unions), "caption_duplicate_keys"
    caption_keys=477_966,
    caption_shared_keys=29_158,
    # FusionRS-CLIP SHA256SUMS and dataset/iraware_summary.json
    iraware_file="iraware_strict_v3_45913.jsonl.gz",
    iraware_sha256="6017e681db7ed9fba75791e10569248c5d05c0c9a937cba8a86fbf0d5acb54a3",
)

RC4_INTERNAL = replace(
    RC4,
    name="rc4-20260726-internal",
    index_file="fusionrs_dataset_index_v3_rc4_20260726.jsonl.gz",
    index_sha256="dbcf507527d3639945af4ecab5f3dde7d8681890ddaae75ff6ff06567c658fd5",
    blocked_fields=(),
)
"""The internal variant of the same split, with captions (``fusionrs-index-v1``), as FusionRS-CLIP lists it
(``SHA256SUMS``; its summary: 600,000 rows, the same split counts, 19,091 = 9,538 + 9,553 evaluation
representatives). The public index is its redaction, so every count is rc4's; it carries captions, so it
has no blocked fields. Its rights notes become rc4's codes at read time (:mod:`.rights`)."""

RELEASES: dict[str, Release] = {RC4.name: RC4, RC4_INTERNAL.name: RC4_INTERNAL}
ALIASES: dict[str, str] = {"rc4": RC4.name, "rc4-internal": RC4_INTERNAL.name}
"""Short names accepted by ``--release``."""


def get_release(name: str) -> Release:
    try:
        return RELEASES[ALIASES.get(name, name)]
    except KeyError:
        known = ", ".join([*ALIASES, *RELEASES])
        raise ValueError(f"unknown release {name!r}; known: {known}") from None


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class IndexIdentity:
    """What a build says about its index: its digest and rows, and the release it is (or ``None``)."""

    sha256: str
    rows: int
    release: str | None
    note: str

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, "rows": self.rows, "release": self.release, "note": self.note}


def identify_index(sha256: str, rows: int) -> IndexIdentity:
    """Match an index file's digest and row count against the known releases."""
    for rel in RELEASES.values():
        if sha256 == rel.index_sha256:
            if rows != rel.index_rows:
                return IndexIdentity(sha256, rows, None,
                                     f"digest of {rel.name} but {rows:,} rows, expected {rel.index_rows:,}")
            return IndexIdentity(sha256, rows, rel.name, f"the official {rel.name} index ({rel.index_file})")
    return IndexIdentity(sha256, rows, None,
                         "not a known release: a subset, an edited copy or one's own index (its digest is none of "
                         + ", ".join(f"{r.name}'s {r.index_sha256[:12]}…" for r in RELEASES.values()) + ")")
