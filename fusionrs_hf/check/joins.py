"""Cross-row joins over the row records of every shard: duplicate sample_ids, joint groups spanning
splits, and leaks across splits (identical bytes, near-duplicate pHash, identical captions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from ..layout import ShardName
from ..limits import refuse_big_row_groups
from ..phash import DEFAULT_RADIUS, near_pairs
from ..schema import IMAGE_FIELDS
from . import findings as _findings

PHASH_RADIUS = DEFAULT_RADIUS


@dataclass
class _Pending:
    """A finding on row ``idx`` (into the concatenated row table) that names row ``other``."""

    kind: str
    idx: int
    other: int
    text: str  # formatted with other_sid, other_split


def _runs(keys: list[np.ndarray], split: np.ndarray, *, cross_split: bool) -> Iterator[np.ndarray]:
    """Index arrays of rows sharing all ``keys``: runs spanning >1 split, or any run of >1 row."""
    n = split.shape[0]
    if n < 2:
        return
    order = np.lexsort(tuple(reversed(keys)))
    change = np.zeros(n, bool)
    change[0] = True
    for k in keys:
        ks = k[order]
        change[1:] |= ks[1:] != ks[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    if cross_split:
        sp = split[order]
        sel = np.minimum.reduceat(sp, starts) != np.maximum.reduceat(sp, starts)
    else:
        sel = (ends - starts) > 1
    for s, e in zip(starts[sel], ends[sel], strict=True):
        yield np.sort(order[s:e])


def _earliest_first(idx: np.ndarray, split: np.ndarray) -> tuple[int, np.ndarray]:
    """(representative row in the earliest split, rows in later splits)."""
    sp = split[idx]
    first = int(idx[np.flatnonzero(sp == sp.min())[0]])
    return first, idx[sp != sp.min()]


class _Budget:
    """At most ``cap`` pending findings of each kind (:data:`~.findings.MAX_FINDINGS_PER_KIND`), the rest only
    counted into ``omitted``: 2,000,000 copies of one sample_id are one run here, and must not become
    2,000,000 objects (check_repo lists the first of each kind and one summary finding for the rest)."""

    def __init__(self, omitted: Counter | None, cap: int | None) -> None:
        self.cap = _findings.MAX_FINDINGS_PER_KIND if cap is None else cap
        self.omitted = omitted if omitted is not None else Counter()
        self.used: Counter[str] = Counter()

    def take(self, kind: str, idx: np.ndarray) -> np.ndarray:
        room = max(0, self.cap - self.used[kind])
        got = idx[:room]
        self.used[kind] += len(got)
        if len(idx) > len(got):
            self.omitted[kind] += len(idx) - len(got)
        return got


def _joins(rows: dict[str, np.ndarray], fast: bool, omitted: Counter | None = None,
           cap: int | None = None) -> list[_Pending]:
    """The cross-row findings, at most ``cap`` of each kind; how many more of each there were is added to
    ``omitted``."""
    split = rows["split"]
    out: list[_Pending] = []
    budget = _Budget(omitted, cap)
    ok = np.flatnonzero(rows["sid_ok"])
    for run in _runs([rows["sid"][ok]], split[ok], cross_split=False):
        idx = ok[run]
        for j in budget.take("duplicate_sample_id", idx[1:]):
            out.append(_Pending("duplicate_sample_id", int(j), int(idx[0]),
                                "sample_id also used by the row in {other_split} at {other_where}"))
    ok = np.flatnonzero(rows["gid_ok"])
    for run in _runs([rows["gid"][ok]], split[ok], cross_split=True):
        first, later = _earliest_first(ok[run], split)
        out.extend(_Pending("joint_group_spans_splits", int(j), first,
                            "joint_group_id also used in {other_split} by sample_id={other_sid}")
                   for j in budget.take("joint_group_spans_splits", later))
    if fast:
        return out
    ok = np.flatnonzero(rows["cap_ok"])
    for run in _runs([rows["cap"][ok]], split[ok], cross_split=True):
        first, later = _earliest_first(ok[run], split)
        out.extend(_Pending("leak_caption", int(j), first,
                            "caption equals (after normalization) the caption of {other_split} "
                            "sample_id={other_sid}") for j in budget.take("leak_caption", later))
    # identical bytes over both image columns (an rgb reused as another row's ir leaks too)
    n = split.shape[0]
    col_of = np.repeat(np.arange(len(IMAGE_FIELDS)), n)
    row_of = np.tile(np.arange(n), len(IMAGE_FIELDS))
    okc = np.concatenate([(rows[f"{c}_sha0"] != 0) | (rows[f"{c}_sha1"] != 0) for c in IMAGE_FIELDS])
    s0 = np.concatenate([rows[f"{c}_sha0"] for c in IMAGE_FIELDS])
    s1 = np.concatenate([rows[f"{c}_sha1"] for c in IMAGE_FIELDS])
    sel = np.flatnonzero(okc)
    flagged = np.zeros((len(IMAGE_FIELDS), n), bool)  # (column, row) already a leak by identical bytes
    for run in _runs([s0[sel], s1[sel]], np.tile(split, len(IMAGE_FIELDS))[sel], cross_split=True):
        ent = sel[run]
        esp = split[row_of[ent]]
        first = ent[np.flatnonzero(esp == esp.min())[0]]
        later = ent[esp != esp.min()]
        flagged[col_of[later], row_of[later]] = True
        for e in budget.take("leak_identical_bytes", later):
            out.append(_Pending("leak_identical_bytes", int(row_of[e]), int(row_of[first]),
                                f"{IMAGE_FIELDS[col_of[e]]} bytes are identical to the "
                                f"{IMAGE_FIELDS[col_of[first]]} of {{other_split}} sample_id={{other_sid}}"))
    for c_i, col in enumerate(IMAGE_FIELDS):
        ok = np.flatnonzero(rows[f"{col}_ok"])
        if ok.size < 2:
            continue
        combos, inverse = np.unique(np.stack([rows[f"{col}_ph"][ok], split[ok].astype(np.uint64)], axis=1),
                                    axis=0, return_inverse=True)
        inverse = inverse.ravel()
        ci, cj, dist = near_pairs(combos[:, 0], PHASH_RADIUS, groups=combos[:, 1])
        if not ci.size:
            continue
        # per later-split combo, its closest earlier-split combo (vectorised: pairs can be many)
        first_is_early = combos[ci, 1] < combos[cj, 1]
        early, late = np.where(first_is_early, ci, cj), np.where(first_is_early, cj, ci)
        order = np.lexsort((early, dist, late))
        late_s = late[order]
        keep = order[np.unique(late_s, return_index=True)[1]]
        best = np.full(len(combos), -1, np.int64)
        best[late[keep]] = keep
        first_pos = np.unique(inverse, return_index=True)[1]  # first row of each combo
        hits = np.flatnonzero(best[inverse] >= 0)
        hits = hits[~flagged[c_i, ok[hits]]]
        for pos in budget.take("leak_near_duplicate", hits):
            r = int(ok[pos])
            k = best[inverse[pos]]
            out.append(_Pending("leak_near_duplicate", r, int(ok[first_pos[early[k]]]),
                                f"{col} is a near-duplicate (pHash Hamming distance {dist[k]} <= {PHASH_RADIUS}) "
                                f"of the {col} of {{other_split}} sample_id={{other_sid}}"))
    return out


def _resolve_sample_ids(fs, root: str, names: list[ShardName], wanted: dict[int, set[int]]) -> dict:
    """Read only the sample_id column of the shards that have findings to report."""
    out: dict[tuple[int, int], str | None] = {}
    for sidx, rws in wanted.items():
        try:
            with fs.open(f"{root}/{names[sidx].path}", "rb") as fh:
                # Not pq.read_table: on a Python file object it pre-buffers through Arrow's IO threads,
                # whose futures hold Python buffers that an IO thread may release after this block (and
                # after the interpreter started finalizing: it then dies taking the GIL, and the process
                # aborts with "terminate called without an active exception", exit 134). A ParquetFile
                # read without pre-buffering or threads finishes every read before it returns.
                pf = pq.ParquetFile(fh, pre_buffer=False)
                refuse_big_row_groups(pf.metadata, ["sample_id"], names[sidx].path, fh, shard=True)
                col = pf.read(columns=["sample_id"], use_threads=False).column("sample_id")
            for r in rws:
                out[sidx, r] = col[r].as_py() if r < len(col) else None
        except Exception:  # noqa: BLE001 - the shard is reported unreadable already
            pass
    return out
