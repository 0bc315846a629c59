"""What a check reports: the finding kinds, :class:`Finding`, :class:`CheckReport` and
:class:`CheckTargetError`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ..layout import SPLITS

MAX_FINDINGS_PER_KIND = 1000
"""Most findings of one kind a report lists (the first in report order); the others are counted, and one
summary finding of that kind says how many were left out. A hostile or broken repo can otherwise make a check
hold one finding per row (a shard of 2,000,000 duplicate rows: gigabytes of findings, and a report nobody can
read); a real problem shows in its first thousand."""

_SPLIT_INDEX = {s: i for i, s in enumerate(SPLITS)}

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


def sort_key(f: Finding) -> tuple:
    """Report order: repo-wide findings first, then by shard, row, kind, config and split."""
    return (f.shard is not None, f.shard or "", -1 if f.row is None else f.row, f.kind, f.config or "",
            _SPLIT_INDEX.get(f.split or "", -1))


def omitted_finding(kind: str, n: int, cap: int = MAX_FINDINGS_PER_KIND) -> Finding:
    """The one finding that stands for ``n`` findings of ``kind`` left out of a report."""
    return Finding(kind, f"{n:,} more {kind} finding(s) not listed: a report lists the first {cap:,} of each kind")


class FindingLog:
    """Findings kept at most ``cap`` (default :data:`MAX_FINDINGS_PER_KIND`) of each kind, the first in report
    order (:func:`sort_key`), the rest only counted (``omitted``): memory stays bounded however many rows are
    wrong. A kind is trimmed once it holds twice the cap, so adding stays cheap; what is kept does not depend on
    the order findings arrive in (shards finish in any order)."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap = MAX_FINDINGS_PER_KIND if cap is None else cap
        self._kept: dict[str, list[Finding]] = {}
        self.omitted: Counter[str] = Counter()

    def add(self, f: Finding) -> None:
        got = self._kept.setdefault(f.kind, [])
        got.append(f)
        if len(got) > 2 * self.cap:
            self._trim(f.kind)

    def extend(self, findings: Iterable[Finding], omitted: dict[str, int] | None = None) -> None:
        """Add ``findings``, and ``omitted`` counts another log left out (a shard's, from a worker)."""
        for f in findings:
            self.add(f)
        self.omitted.update(omitted or {})

    def _trim(self, kind: str) -> None:
        got = sorted(self._kept[kind], key=sort_key)
        self._kept[kind] = got[:self.cap]
        if len(got) > self.cap:
            self.omitted[kind] += len(got) - self.cap

    def kept(self) -> list[Finding]:
        """The findings kept, in report order (no summary findings: a worker's log sends these back)."""
        for kind in list(self._kept):
            self._trim(kind)
        return sorted((f for got in self._kept.values() for f in got), key=sort_key)

    def findings(self) -> list[Finding]:
        """:meth:`kept`, then one :func:`omitted_finding` per kind with findings left out."""
        kept = self.kept()
        return kept + [omitted_finding(k, n, self.cap) for k, n in sorted(self.omitted.items()) if n]


@dataclass
class CheckReport:
    """The result of :func:`check_repo`; ``ok`` is what a CI gate or ``fusionrs push`` looks at.

    ``findings`` lists at most :data:`MAX_FINDINGS_PER_KIND` of each kind plus, for a kind with more, one
    summary finding (repo-wide, no shard) standing for the ``omitted`` ones; ``counts_by_kind`` counts them all."""

    target: str
    mode: str  # "fast" | "full"
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    omitted: dict[str, int] = field(default_factory=dict)
    """Findings of each kind not listed (their summary finding is in ``findings``)."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts_by_kind(self) -> dict[str, int]:
        counts = Counter(f.kind for f in self.findings)
        for kind, n in self.omitted.items():  # the summary finding listed stands for n findings
            counts[kind] += n - 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict:
        return {
            "target": self.target, "mode": self.mode, "ok": self.ok, "stats": self.stats,
            "counts_by_kind": self.counts_by_kind(), "findings": [asdict(f) for f in self.findings],
            "findings_omitted": dict(sorted(self.omitted.items())),
        }


class CheckTargetError(Exception):
    """The target cannot be read at all (no such folder, repo or revision); the CLI exits 2."""
