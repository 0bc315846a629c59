"""What a check reports: the finding kinds, :class:`Finding`, :class:`CheckReport` and
:class:`CheckTargetError`."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

KINDS: dict[str, str] = {
    "missing_card": "README.md (the dataset card) is missing",
    "bad_card": "the card's YAML header cannot be read",
    "card_config_mismatch": "a card config unknown to the registry, or selecting a file the registry puts elsewhere",
    "missing_file": "a card data_files pattern matches no file",
    "card_outside_repo": "a card data_files pattern reaching outside the repo's data/ (absolute, `..`, a URL)",
    "orphan_shard": "a data file that the card does not include where the registry says it belongs",
    "count_mismatch": "card dataset_info num_examples differs from the shards",
    "bytes_mismatch": "card dataset_info num_bytes differs from the shards",
    "unreadable_shard": "a parquet file that cannot be read",
    "schema_mismatch": "a shard's schema differs from fusionrs_hf.schema",
    "null_in_required": "a null in a non-nullable column",
    "wrong_source": "the row's source differs from the shard path's source",
    "duplicate_sample_id": "a sample_id used more than once",
    "iraware_missing_ir_caption": "an iraware row without an ir_caption",
    "base_has_ir_caption": "a base row with an ir_caption",
    "bad_sha256": "a malformed rgb_sha256 / ir_sha256 value",
    "bad_joint_group_id": "a malformed joint_group_id",
    "joint_group_spans_splits": "one joint_group_id in two splits",
    "undecodable_image": "image bytes missing or not decodable",
    "aspect_mismatch": "ir has neither the rgb's aspect ratio nor DiffV2IR's size for it (fusionrs_hf.pairing)",
    "ir_not_infrared": "the ir image is colourful (channel spread above the threshold)",
    "pair_swapped": "two rows' ir images look swapped (each row's rgb edges match the other's ir far better)",
    "sha256_mismatch": "stored SHA-256 differs from the image bytes",
    "leak_identical_bytes": "the same image bytes in two splits",
    "leak_near_duplicate": "near-duplicate images (pHash) in two splits",
    "leak_caption": "the same normalized caption in two splits",
}


@dataclass
class Finding:
    """One problem, located as precisely as the check allows (None where it does not apply)."""

    kind: str
    message: str
    config: str | None = None
    split: str | None = None
    shard: str | None = None
    row: int | None = None
    sample_id: str | None = None

    def location(self) -> str:
        parts = []
        if self.config or self.split:
            parts.append("/".join(p for p in (self.config, self.split) if p))
        if self.shard:
            parts.append(self.shard + (f"#{self.row}" if self.row is not None else ""))
        if self.sample_id is not None:
            parts.append(f"sample_id={self.sample_id}")
        return " ".join(parts) or "repo"


@dataclass
class CheckReport:
    """The result of :func:`check_repo`; ``ok`` is what a CI gate or ``fusionrs push`` looks at."""

    target: str
    mode: str  # "fast" | "full"
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(f.kind for f in self.findings).items()))

    def to_dict(self) -> dict:
        return {
            "target": self.target, "mode": self.mode, "ok": self.ok, "stats": self.stats,
            "counts_by_kind": self.counts_by_kind(), "findings": [asdict(f) for f in self.findings],
        }


class CheckTargetError(Exception):
    """The target cannot be read at all (no such folder, repo or revision); the CLI exits 2."""
