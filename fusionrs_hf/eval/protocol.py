"""Which rows are scored, what counts as a positive, and the scores: the evaluation protocols.

Two protocols (``--protocol``), both scored by :func:`fusionrs_hf.metrics.retrieval_metrics`:

- ``rc4`` (``fusionrs-rc4-retrieval-v1``, the authors' ``score_retrieval_embeddings.py`` and
  ``benchmark/protocol/PROTOCOL.md``): only the split's **evaluation representatives**
  (``is_eval_representative``: 9,538 validation and 9,553 test rows in rc4, one per joint
  component) are queries and gallery. Every representative contributes its RGB image, its IR image
  and its own text, so the text gallery holds one entry per representative. Image–text positives
  are the texts (or images) with the **same normalised caption key** (``normalized_caption_key``:
  SHA-256 of the caption under the release's NFKC / casefold / punctuation-to-space / whitespace
  normalisation, :func:`fusionrs_hf.text.caption_key`); RGB–IR positives are the two views of one
  ``sample_id``. A representative without a usable caption is an error, as in the authors' scorer.
- ``all-rows``: every row of the split, same positive rules (the key is computed from the text where
  a row carries none, e.g. a repo built without an official index). Rows without the chosen text
  field (``ir_caption`` outside the IR-aware subset) are left out.

Per source: the release also scores the representatives of one source alone
(``results/clip/retrieval/per_source/<source>/``: e.g. 707 RSICD test representatives). A selection whose
scored representatives are all of one release source (a per-source config such as ``rsicd``, or a repo
of one source) is that per-source set, expected to hold the release's count for the source; scoring all
of them is complete, fewer a subset.

Text key (``text_key``, ``--text-key``), what makes two texts one positive group: ``caption`` (the
default, ``score_retrieval_embeddings.py``: the ``normalized_caption_key`` above) or ``lowercase``
(``eval_clip_retrieval.py``'s ``normalized_text_key``, ``" ".join(text.lower().split())``: lower-cased,
whitespace collapsed, punctuation and Unicode forms kept), the key behind the release's
``results/clip/retrieval`` figures ("text_retrieval_protocol": "normalized-caption multi-positive"),
per-source ones included.

``auto`` (the default) is ``rc4`` when the split's rows carry the release flags (an rc4 build: the
flag is non-null) and ``all-rows`` otherwise. The gallery is in ``sample_id`` order, whatever order
the repo or an embedding file has, so the ``topk`` tie rule (which depends on gallery order) gives
the same figures for the same embeddings however they were stored.

Figures: the paper's Table 4 directions (IR→Text, Text→IR, RGB→IR, IR→RGB; R@1/5/10) and
``mean_r``, their mean (the authors' ``overall_mean``); ``text_mean`` (IR↔Text) and ``pair_mean``
(RGB↔IR) as the authors report them; plus RGB→Text and Text→RGB and ``mean_r_all6`` (not in the
release's scorer, which has no RGB↔Text direction).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..layout import SPLIT_TO_INDEX
from ..limits import refuse_big_row_groups
from ..metrics import DIRECTIONS, KS, PAPER_DIRECTIONS, retrieval_metrics, tie_rule
from ..release.known import RC4
from ..secrets import scrub
from ..text import caption_key

PROTOCOL_CHOICES: tuple[str, ...] = ("auto", "rc4", "all-rows")
TEXT_FIELDS: tuple[str, ...] = ("caption", "ir_caption")
TEXT_KEYS: dict[str, str] = {
    "caption": "normalized_caption_key",
    "lowercase": "lowercase whitespace-collapsed text (eval_clip_retrieval.py normalized_text_key)",
}
"""``text_key`` -> what the image–text positives share. ``caption``: the release's ``normalized_caption_key``
(``score_retrieval_embeddings.py``, ``--protocol rc4`` by default); ``lowercase``: ``eval_clip_retrieval.py``'s."""
TEXT_KEY_SUFFIX: dict[str, str] = {"caption": "", "lowercase": "+lowercase-key"}
"""Appended to the protocol id in ``authors_format``: only the ``caption`` key is the id's own positive rule."""
ROW_COLUMNS: tuple[str, ...] = ("sample_id", "source", "caption", "ir_caption", "class_name",
                                "is_eval_representative", "normalized_caption_key")
"""What the protocol reads from the shards (no image column)."""
DIRECTION_NAMES: dict[str, str] = {"ir2text": "IR→Text", "text2ir": "Text→IR", "rgb2ir": "RGB→IR",
                                   "ir2rgb": "IR→RGB", "rgb2text": "RGB→Text", "text2rgb": "Text→RGB"}
AUTHORS_DIRECTIONS: dict[str, str] = {"ir2text": "ir_to_text", "text2ir": "text_to_ir", "rgb2ir": "rgb_to_ir",
                                      "ir2rgb": "ir_to_rgb"}
"""Our direction keys -> the names in the authors' scorer output."""


class ProtocolError(ValueError):
    """The protocol cannot be applied to these rows or embeddings (one line, names what is missing)."""


@dataclass(frozen=True)
class Protocol:
    name: str
    id: str
    rows: str
    image_text: str
    paired_view: str

    def to_dict(self) -> dict:
        return {"name": self.name, "id": self.id, "rows": self.rows,
                "positive_definitions": {"image_text": self.image_text, "paired_view": self.paired_view}}


PROTOCOLS: dict[str, Protocol] = {
    "rc4": Protocol("rc4", "fusionrs-rc4-retrieval-v1", "evaluation representatives (is_eval_representative)",
                    "normalized_caption_key multi-positive", "sample_id exact pair"),
    "all-rows": Protocol("all-rows", "fusionrs-hf-all-rows-v1", "every row of the split",
                         "normalized_caption_key multi-positive (computed from the text where the row has none)",
                         "sample_id exact pair"),
}


def lowercase_key(text: str | None) -> str | None:
    """``eval_clip_retrieval.py``'s ``normalized_text_key``: ``" ".join(str(text).lower().split())``; ``None``
    when nothing is left (that script drops a sample whose caption is empty)."""
    key = " ".join(str(text or "").lower().split())
    return key or None


def image_text_positives(protocol: str, text_key: str = "caption") -> str:
    """The image–text positive rule of ``protocol`` with ``text_key``, in words."""
    if text_key == "caption":
        return PROTOCOLS[protocol].image_text
    return f"{TEXT_KEYS[text_key]} multi-positive"


def check_text_key(name: str) -> str:
    if name not in TEXT_KEYS:
        raise ProtocolError(f"unknown text key {name!r}; expected one of {', '.join(TEXT_KEYS)}")
    return name


# --------------------------------------------------------------------------- rows


@dataclass
class EvalRows:
    """The text columns of one config split (what the protocol needs; no image is read)."""

    repo: str
    config: str
    split: str
    columns: dict[str, list] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.columns.get("sample_id", []))
        for name in ROW_COLUMNS:
            col = self.columns.setdefault(name, [None] * n)
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} values for {n} rows")

    def __len__(self) -> int:
        return len(self.columns["sample_id"])

    def __getitem__(self, name: str) -> list:
        return self.columns[name]

    @property
    def has_release_flags(self) -> bool:
        """Whether any row carries ``is_eval_representative`` (rows from an official index do)."""
        return any(v is not None for v in self.columns["is_eval_representative"])

    @classmethod
    def from_records(cls, records: Iterable[Mapping], *, repo: str = "", config: str = "", split: str = "") -> EvalRows:
        """From row dicts (any extra keys ignored; missing ones are null)."""
        cols: dict[str, list] = {name: [] for name in ROW_COLUMNS}
        for r in records:
            for name in ROW_COLUMNS:
                cols[name].append(r.get(name))
        return cls(repo, config, split, cols)


def read_eval_rows(repo: str | os.PathLike, config: str = "default", split: str = "test", *,
                   revision: str | None = None, storage_options: dict | None = None) -> EvalRows:
    """The protocol's columns of ``config``/``split`` (local folder, fsspec URL or Hub id).

    A missing split is :class:`fusionrs_hf.splits.MissingSplitError` (naming the splits there are);
    shards written before a column existed give nulls for it.
    """
    import pyarrow.parquet as pq

    from ..splits import repo_splits
    from ..torch import resolve_repo

    listing = repo_splits(repo, revision=revision, storage_options=storage_options)
    listing.require(config, split)  # the CLI adds its own "fusionrs eval:" prefix
    fs, root = resolve_repo(repo, revision, storage_options)
    cols: dict[str, list] = {name: [] for name in ROW_COLUMNS}
    for rel in listing.files(config, split):
        with fs.open(f"{root}/{rel}", "rb") as f:
            pf = pq.ParquetFile(f, pre_buffer=False)  # no IO threads outliving the read
            have = [c for c in ROW_COLUMNS if c in pf.schema_arrow.names]
            refuse_big_row_groups(pf.metadata, have, rel, f, shard=True)
            t = pf.read(columns=have, use_threads=False).to_pydict()
        n = len(t["sample_id"])
        for name in ROW_COLUMNS:
            cols[name].extend(t[name] if name in t else [None] * n)
    return EvalRows(scrub(os.fspath(repo)), config, split, cols)  # the repo is shown and written: no credentials


def resolve_protocol(name: str, rows: EvalRows) -> str:
    """``auto`` -> ``rc4`` when the rows carry release flags, else ``all-rows``; other names checked."""
    if name not in PROTOCOL_CHOICES:
        raise ProtocolError(f"unknown protocol {name!r}; expected one of {', '.join(PROTOCOL_CHOICES)}")
    if name == "auto":
        return "rc4" if rows.has_release_flags else "all-rows"
    if name == "rc4" and not rows.has_release_flags:
        raise ProtocolError(
            f"protocol rc4 scores evaluation representatives, but no row of {rows.config!r}/{rows.split} in "
            f"{rows.repo or 'these rows'} carries is_eval_representative (not built from an official index?); "
            "use --protocol all-rows")
    return name


# --------------------------------------------------------------------------- selection


@dataclass
class Selection:
    """The scored rows, in gallery order (sorted by ``sample_id``), with their positive keys."""

    protocol: str
    text_field: str
    sample_id: list[str]
    key: list[str]
    text: list[str]
    class_name: list[str | None]
    source: list[str | None]
    n_rows: int
    """Rows in the split (scored or not)."""
    n_without_text: int = 0
    """``all-rows``: rows left out because they have no ``text_field``."""
    split_classes: list[str] = field(default_factory=list)
    """Sorted class names of every row of the split (the zero-shot label set)."""
    n_other_sources: int = 0
    """``rc4``: representatives of a repo's own sources, left out (the protocol is the release's rows)."""
    text_key: str = "caption"
    """What the positive keys are (:data:`TEXT_KEYS`)."""

    def __len__(self) -> int:
        return len(self.sample_id)

    @property
    def single_source(self) -> str | None:
        """The one release source of every scored row under ``rc4`` (the release's per-source query set, or
        part of it), else None (several sources, or another protocol)."""
        if self.protocol != "rc4":
            return None
        found = set(self.source)
        if len(found) != 1:
            return None
        (src,) = found
        return src if src in RC4.sources else None

    @property
    def n_keys(self) -> int:
        return len(set(self.key))


def select(rows: EvalRows, protocol: str = "auto", text_field: str = "caption",
           text_key: str = "caption") -> Selection:
    """Apply ``protocol`` to ``rows``: which rows are scored, and each one's positive key (``text_key``)."""
    if text_field not in TEXT_FIELDS:
        raise ProtocolError(f"unknown text field {text_field!r}; expected one of {', '.join(TEXT_FIELDS)}")
    check_text_key(text_key)
    protocol = resolve_protocol(protocol, rows)
    sids = rows["sample_id"]
    seen: set[str] = set()
    for s in sids:
        if s in seen:
            raise ProtocolError(f"sample_id {s!r} appears twice in {rows.config!r}/{rows.split}")
        seen.add(s)
    picked: list[tuple[str, str, str, str | None, str | None]] = []
    missing_text = other_sources = 0
    for i, sid in enumerate(sids):
        if protocol == "rc4" and not rows["is_eval_representative"][i]:
            continue
        if protocol == "rc4" and rows["source"][i] not in RC4.sources:  # a repo's own source (build --from-folder)
            other_sources += 1
            continue
        text = rows[text_field][i]
        if text_key == "lowercase":
            key = lowercase_key(text)
        elif text_field == "caption":
            key = rows["normalized_caption_key"][i] or caption_key(text)
        else:
            key = caption_key(text)
        if not key:
            if protocol == "rc4":
                raise ProtocolError(f"evaluation representative {sid!r} has no usable {text_field} "
                                    f"(no {'text' if text_key == 'lowercase' else 'normalized caption key'})")
            missing_text += 1
            continue
        picked.append((sid, key, text, rows["class_name"][i], rows["source"][i]))
    if not picked:
        what = "evaluation representative" if protocol == "rc4" else f"row with {'an' if text_field[:1] in 'aeiou' else 'a'} {text_field}"
        raise ProtocolError(f"no {what} in {rows.config!r}/{rows.split} of {rows.repo or 'these rows'}")
    picked.sort(key=lambda p: p[0])
    classes = sorted({c for c in rows["class_name"] if c})
    return Selection(protocol, text_field, [p[0] for p in picked], [p[1] for p in picked], [p[2] for p in picked],
                     [p[3] for p in picked], [p[4] for p in picked], len(rows), missing_text, classes, other_sources,
                     text_key)


def rc4_representatives(split: str, source: str | None = None) -> int | None:
    """The release's evaluation representatives of a split (9,538 validation, 9,553 test), or of one ``source``
    in it (its per-source query set: e.g. RSICD 700 / 707); None for train or a source it does not count."""
    return RC4.representatives(split, source) or None


def align(selection: Selection, sample_ids: Sequence[str], arrays: Mapping[str, np.ndarray | None],
          *, where: str = "embeddings") -> dict[str, np.ndarray]:
    """Rows of ``arrays`` (aligned with ``sample_ids``) reordered to the selection; extras dropped.

    Every selected sample must be there, ids must be unique, and every vector finite and non-zero
    (the authors' scorer rejects the same). Returns float64 arrays, L2-normalised.
    """
    index: dict[str, int] = {}
    for i, s in enumerate(sample_ids):
        if s in index:
            raise ProtocolError(f"{where}: sample_id {s!r} appears twice")
        index[s] = i
    absent = [s for s in selection.sample_id if s not in index]
    if absent:
        raise ProtocolError(f"{where}: {len(absent)} of the {len(selection)} scored samples have no embedding "
                            f"(first: {', '.join(map(repr, absent[:3]))})")
    order = np.fromiter((index[s] for s in selection.sample_id), dtype=np.int64, count=len(selection))
    out: dict[str, np.ndarray] = {}
    dims = set()
    for name, arr in arrays.items():
        if arr is None:
            continue
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] != len(sample_ids):
            raise ProtocolError(f"{where}: {name!r} must be (rows x dims) with one row per sample_id "
                                f"({len(sample_ids)}), got shape {a.shape}")
        a = a[order]
        if not np.isfinite(a).all():
            raise ProtocolError(f"{where}: {name!r} has NaN or inf for a scored sample")
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        if (norms == 0).any():
            bad = selection.sample_id[int(np.flatnonzero(norms[:, 0] == 0)[0])]
            raise ProtocolError(f"{where}: {name!r} is a zero vector for sample {bad!r}")
        out[name] = a / norms
        dims.add(a.shape[1])
    if len(dims) > 1:
        raise ProtocolError(f"{where}: embedding widths differ: {sorted(dims)}")
    if len(out) < 2:
        raise ProtocolError(f"{where}: needs at least two of rgb, ir, text (has {', '.join(out) or 'none'})")
    return out


# --------------------------------------------------------------------------- scoring


def relevance(selection: Selection) -> np.ndarray:
    """images x texts bool: the same normalised caption key (the protocol's image–text positives)."""
    codes: dict[str, int] = {}
    k = np.fromiter((codes.setdefault(x, len(codes)) for x in selection.key), dtype=np.int64, count=len(selection))
    return k[:, None] == k[None, :]


def score(selection: Selection, emb: Mapping[str, np.ndarray], *, ties: str = "pessimistic",
          ks: Sequence[int] = KS) -> dict[str, float]:
    """Flat figures (``{direction}_r{k}``, ``mean_r``, ``text_mean``, ``pair_mean``, ``mean_r_all6``, ...)."""
    m = retrieval_metrics(emb.get("rgb"), emb.get("ir"), emb.get("text"), image_ids=selection.sample_id,
                          relevance=relevance(selection) if "text" in emb else None, ks=ks, ties=ties)
    for name, dirs in (("text_mean", ("ir2text", "text2ir")), ("pair_mean", ("rgb2ir", "ir2rgb"))):
        keys = [f"{d}_r{k}" for d in dirs for k in ks]
        if all(k in m for k in keys):
            m[name] = float(np.mean([m[k] for k in keys]))
    return m


# --------------------------------------------------------------------------- result

LINE_EXTRA = ("mean_r", "text_mean", "pair_mean", "mean_r_all6", "chance_r1", "n_images", "n_texts")


@dataclass
class EvalResult:
    """One evaluation: what was scored, how, and the figures."""

    protocol: str
    ties: str
    repo: str
    config: str
    split: str
    text_field: str
    n_rows: int
    n_scored: int
    n_keys: int
    metrics: dict[str, float]
    zero_shot: dict | None = None
    source: dict = field(default_factory=dict)
    """What was embedded: ``{"model": ...}`` or ``{"embeddings": path}`` (and cache facts)."""
    notes: list[str] = field(default_factory=list)
    n_expected: int | None = None
    """``rc4``: the release's representatives of the split (of ``per_source`` when set); scoring fewer is not
    the authors' query set."""
    per_source: str | None = None
    """``rc4`` on the representatives of one release source: the source (the release's per-source protocol,
    ``results/clip/retrieval/per_source/<source>``); None: the whole split."""
    text_key: str = "caption"
    """What the image–text positives share (:data:`TEXT_KEYS`)."""

    @property
    def complete(self) -> bool | None:
        """Whether an ``rc4`` result scored exactly the release's representatives, of the split or of its one
        source (None: other protocols)."""
        return None if self.protocol != "rc4" else self.n_scored == self.n_expected

    def comparison(self) -> dict:
        """What published figures these numbers compare with (``target``; None: none), and how this run's rules
        differ from the scorer that made them (``caveats``). Only the release's own query sets have published
        figures: the paper's Table 4 came from an earlier split state (README, "What to compare with")."""
        if self.protocol != "rc4":
            return {"target": None, "caveats": [f"protocol {self.protocol}: the release publishes no figures for "
                                                "it; --protocol rc4 on an rc4 rebuild scores its query sets"]}
        if not self.complete:
            return {"target": None, "caveats": ["not all of the release's evaluation representatives were scored "
                                                "(+subset): no published figures are for this set"]}
        caveats = []
        if self.per_source:
            stem = "test_580k_only_baseline" if self.split == "test" else "val_checkpoint_selection"
            target = (f"FusionRS results/clip/retrieval/per_source/{self.per_source}/{stem}.json (the release's "
                      f"per-source {SPLIT_TO_INDEX.get(self.split, self.split)} figures)")
            if self.text_key != "lowercase":
                caveats.append("text positives by normalized_caption_key: the per-source figures' scorer, "
                               "eval_clip_retrieval.py, uses lower-cased captions (--text-key lowercase)")
        elif self.split == "test":
            target = ("FusionRS-CLIP dataset/eval_summary.json (the released checkpoint on the rc4 test split: R@1 "
                      "per direction and Mean R)")
        else:
            return {"target": None, "caveats": ["the release publishes validation figures per source only "
                                                "(--config <source>)"]}
        if self.ties != "topk":
            caveats.append(f"ties {self.ties}: the release's scorers rank ties in index order (--ties topk)")
        return {"target": target, "caveats": caveats}

    def positive_definitions(self) -> dict:
        return {"image_text": image_text_positives(self.protocol, self.text_key),
                "paired_view": PROTOCOLS[self.protocol].paired_view}

    def line(self, ks: Sequence[int] = KS) -> dict:
        """The one-line summary (rounded to 4 decimals) that ``train_clip`` prints last."""
        out: dict = {k: round(float(v), 4) for k, v in self.metrics.items()
                     if k.endswith(tuple(f"_r{x}" for x in ks)) or k in LINE_EXTRA}
        n_classes = (self.zero_shot or {}).get("n_classes") or 0
        for mod, zs in (self.zero_shot or {}).get("modalities", {}).items():
            for k, v in zs.items():
                # a top-k over k classes or fewer is 100% by construction: no figure for a script to read
                if k.startswith("top") and k[3:].isdigit() and int(k[3:]) < n_classes:
                    out[f"zeroshot_{mod}_{k}"] = round(float(v), 4)
        out.update(protocol=self.protocol, ties=self.ties, n_scored=self.n_scored)
        if self.text_key != "caption":
            out["text_key"] = self.text_key
        if self.per_source:
            out["per_source"] = self.per_source
        return out

    def directions(self, ks: Sequence[int] = KS) -> dict[str, dict[str, float]]:
        return {d: {f"R@{k}": self.metrics[f"{d}_r{k}"] for k in ks} for d in DIRECTIONS
                if all(f"{d}_r{k}" in self.metrics for k in ks)}

    def authors_format(self) -> dict:
        """The figures under the key names of the authors' ``score_retrieval_embeddings.py`` output."""
        dirs = self.directions()
        # the index's split names (``val``, not ``validation``), as the authors' --split takes them
        # a subset of the release's representatives (a partial rebuild, some of its sources, a row limit) is
        # not what the authors' scorer scores, whose protocol id must not be claimed for it; all of one source's
        # is the release's per-source set (results/clip/retrieval/per_source/<source>), named by its source; and
        # another text key than normalized_caption_key is not the id's positive rule
        pid = PROTOCOLS[self.protocol].id + TEXT_KEY_SUFFIX[self.text_key]
        pid += ("" if self.complete is not False else "+subset")
        out = {"protocol": pid, "split": SPLIT_TO_INDEX.get(self.split, self.split),
               **({"source": self.per_source} if self.per_source else {}),
               "num_representatives": self.n_scored, "num_representatives_expected": self.n_expected,
               "ties": self.ties,
               "positive_definitions": self.positive_definitions(),
               "directions": {AUTHORS_DIRECTIONS[d]: v for d, v in dirs.items() if d in AUTHORS_DIRECTIONS}}
        for ours, theirs in (("text_mean", "text_mean"), ("pair_mean", "pair_mean"), ("mean_r", "overall_mean")):
            if ours in self.metrics:
                out[theirs] = self.metrics[ours]
        emb = self.source.get("embeddings")
        if emb and os.path.isfile(emb):  # the authors' scorer names the bundle it scored by its digest
            from ..release.known import file_sha256

            out["embeddings_sha256"] = file_sha256(emb)
        return out

    def to_dict(self) -> dict:
        protocol = PROTOCOLS[self.protocol].to_dict()
        protocol["positive_definitions"] = self.positive_definitions()
        return {
            "protocol": protocol, "ties": self.ties, "repo": self.repo,
            "config": self.config, "split": self.split, "text_field": self.text_field, "text_key": self.text_key,
            "n_rows": self.n_rows, "per_source": self.per_source,
            "n_scored": self.n_scored, "n_expected": self.n_expected, "complete": self.complete,
            "n_caption_keys": self.n_keys, "directions": self.directions(),
            "metrics": dict(self.metrics), "zero_shot": self.zero_shot, "authors_format": self.authors_format(),
            "compare_with": self.comparison(), "source": self.source, "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self, ks: Sequence[int] = KS) -> str:
        """The paper's Table 4 layout (four directions, R@1/5/10, Mean R), then RGB↔Text and zero-shot."""
        p = PROTOCOLS[self.protocol]
        what = self.source.get("model") or self.source.get("embeddings") or "embeddings"
        scored = "evaluation representatives" if self.protocol == "rc4" else "rows"
        if self.per_source:
            scored = f"{self.per_source} {scored}"  # the release's per-source set, or part of it (see the notes)
        lines = [
            f"FusionRS retrieval: {self.config}/{self.split} of {self.repo}",
            f"protocol {self.protocol} ({p.id}): {p.rows}; image-text positives: "
            f"{image_text_positives(self.protocol, self.text_key)}; RGB-IR positives: {p.paired_view}; ties: {self.ties}",
            f"scored {self.n_scored:,} {scored} of {self.n_rows:,} rows; text: {self.text_field} "
            f"({self.n_keys:,} distinct caption keys); {what}",
            "",
        ]
        cmp = self.comparison()
        lines.insert(-1, "compare with: " + (cmp["target"] or "no published figures") + "".join(
            f"; {c}" for c in cmp["caveats"]))
        lines += _block("Retrieval", [d for d in PAPER_DIRECTIONS], self.metrics, ks, "Mean R", "mean_r")
        rest = [d for d in DIRECTIONS if d not in PAPER_DIRECTIONS]
        if all(f"{d}_r{k}" in self.metrics for d in rest for k in ks):
            lines.append("")
            lines += _block("RGB<->Text", rest, self.metrics, ks, "Mean R (6 dir.)", "mean_r_all6")
        if self.zero_shot:
            zs = self.zero_shot
            lines += ["", f"Zero-shot scene classification: {zs['n_images']:,} images with a class name, "
                          f"{zs['n_classes']} classes (class-name prompts)"]
            ks_zs = [k for k in zs["ks"]]
            lines.append(f"{'':<8}" + "".join(f"{f'top-{k}':>9}" for k in ks_zs) + f"{'mean per-class top-1':>23}")
            for mod, v in zs["modalities"].items():
                lines.append(f"{mod.upper():<8}" + "".join(f"{v[f'top{k}']:>9.2f}" for k in ks_zs)
                             + f"{v['mean_per_class_top1']:>23.2f}")
            if zs.get("note"):
                lines.append(f"note: {zs['note']}")
        for note in self.notes:
            lines.append(f"note: {note}")
        return "\n".join(lines)


def _block(title: str, dirs: Sequence[str], m: Mapping[str, float], ks: Sequence[int], mean_label: str,
           mean_key: str) -> list[str]:
    have = [d for d in dirs if all(f"{d}_r{k}" in m for k in ks)]
    if not have:
        return [f"{title}: not available (needs the modalities of {', '.join(DIRECTION_NAMES[d] for d in dirs)})"]
    w = 8 * len(ks)
    head = f"{title:<12}" + "".join(f"{DIRECTION_NAMES[d]:<{w}}" for d in have)
    sub = f"{'':<12}" + "".join("".join(f"{f'R@{k}':<8}" for k in ks) for _ in have) + (
        mean_label if mean_key in m else "")
    row = f"{'':<12}" + "".join("".join(f"{m[f'{d}_r{k}']:<8.2f}" for k in ks) for d in have) + (
        f"{m[mean_key]:.2f}" if mean_key in m else "")
    return [head, sub, row]


def check_ties(name: str) -> str:
    """The canonical tie rule (``pessimistic`` / ``topk``), as a :class:`ProtocolError` when unknown."""
    try:
        return tie_rule(name)
    except ValueError as e:
        raise ProtocolError(str(e)) from None
