"""Caption policies: which source caption a row gets, and which IR-aware caption makes it ``iraware``.

A policy is a small object in a registry, chosen by name on the command line, so a new policy is
one class and one registry line. Defaults reproduce the authors' release:

- caption policy ``rc4`` (default): one caption per record, usable when it is non-empty after the
  authors' normalisation (:func:`fusionrs_hf.text.normalize_caption`); no cleaning rules and no
  class-name fallback (a record the release marks unusable, 8 train records in rc4, is not written).
  With the internal index variant the index's own caption is used.
- caption policy ``paper``: the paper's §3.4 cleaning rules (:mod:`.rules`) and the class-name
  fallback ("a remote sensing image of <class>.") for rows left without a caption.
- IR-aware policy ``rc4`` (default): a record's ``status`` decides (``accepted_strict_v3`` in,
  ``removed_*`` out); a caption without a status goes through the authors' strict-v3 filter.
- IR-aware policy ``strict``: ``rc4`` plus our stricter blocked-claim rules (``ir_*`` in :mod:`.rules`).

Every rejection is reported by name (rule or status) with example sample ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..text import normalize_caption
from .irfilter import ACCEPTED_STATUSES, FILTERED_STATUS, REMOVED_STATUSES
from .rules import normalize, violations

CHOICES = ("first", "random", "all")
"""How one caption is picked when an image has several usable ones:

- ``first``: the first usable caption in file order (the native order of RSICD/RSITMD/NWPU).
- ``random``: one usable caption drawn with ``--seed``; the draw depends only on the seed and the
  sample id, so it does not change with worker count or file order of other images.
- ``all``: ``caption`` is the first usable one and ``all_captions`` holds every usable one.
"""

FALLBACK_TEMPLATE = "a remote sensing image of {name}."
"""Class-name fallback caption (paper §3.4), e.g. NWPU ``baseball_diamond`` ->
"a remote sensing image of baseball diamond."; rows using it get ``caption_origin=class_name``."""


@dataclass
class CaptionDecision:
    """What the build does with one record's captions."""

    caption: str | None
    all_captions: list[str] | None
    origin: str  # "source" | "class_name"
    rejected: dict[str, int] = field(default_factory=dict)
    """rule name -> number of this record's candidate captions it rejected"""
    drop_reason: str | None = None
    """``missing_caption`` (no caption found), ``caption_dropped`` (all rejected by rules) or
    ``no_usable_caption`` (the release itself marks the record's caption unusable)."""


def pick(usable: list[str], choice: str, seed: int, sample_id: str) -> tuple[str, list[str] | None]:
    """Apply the caption-choice policy (see :data:`CHOICES`) to a non-empty list of usable captions."""
    if choice == "first":
        return usable[0], None
    if choice == "random":
        h = int.from_bytes(hashlib.sha256(f"{seed}\x1f{sample_id}".encode()).digest()[:8], "big")
        return usable[h % len(usable)], None
    if choice == "all":
        return usable[0], list(usable)
    raise ValueError(f"unknown caption choice {choice!r}; expected one of {CHOICES}")


def fallback_caption(class_name: str) -> str:
    return FALLBACK_TEMPLATE.format(name=class_name.replace("_", " ").strip())


@dataclass(frozen=True)
class CaptionPolicy:
    """Cleans candidates with ``rule_kind`` rules (or none) and may fall back to the class name."""

    name: str
    description: str
    rule_kind: str | None = None
    class_name_fallback: bool = False

    def decide(self, sample_id: str, candidates: list[str], *, class_name: str | None = None,
               choice: str = "first", seed: int = 0, skip_rules: Iterable[str] = (),
               release_usable: bool | None = None) -> CaptionDecision:
        """Pick the caption of one record, or say why it has none.

        ``release_usable`` is the index's own verdict (internal ``caption_usable``, public
        ``caption_supervision_available_upstream``); ``False`` means the release has no usable
        caption for the record, so a faithful rebuild writes none whatever the caption files hold.
        """
        if release_usable is False and self.rule_kind is None:
            return CaptionDecision(None, None, "source", drop_reason="no_usable_caption")
        rejected: dict[str, int] = {}
        usable: list[str] = []
        for cand in candidates:
            # rc4: the string exactly as given, as the release stores it (``"caption": caption or None``,
            # ``released_caption_strings_are_frozen``); cleaning policies also tidy whitespace
            text = normalize(cand) if self.rule_kind else str(cand)
            if not normalize_caption(text):
                continue  # empty after the authors' normalisation: not a caption
            bad = violations(text, self.rule_kind, skip_rules) if self.rule_kind else []
            for name in bad:
                rejected[name] = rejected.get(name, 0) + 1
            if not bad and text not in usable:
                usable.append(text)
        if usable:
            cap, all_caps = pick(usable, choice, seed, sample_id)
            return CaptionDecision(cap, all_caps, "source", rejected)
        if class_name and self.class_name_fallback:
            cap = fallback_caption(class_name)
            return CaptionDecision(cap, [cap] if choice == "all" else None, "class_name", rejected)
        return CaptionDecision(None, None, "source", rejected,
                               drop_reason="caption_dropped" if rejected else "missing_caption")


@dataclass(frozen=True)
class IRPolicy:
    """Accepts IR-aware captions by their release status, else by the authors' filter (+ our rules)."""

    name: str
    description: str
    extra_rules: bool = False

    def decide(self, text: str | None, status: str | None = None,
               skip_rules: Iterable[str] = ()) -> tuple[str | None, str | None, list[str]]:
        """(accepted caption or None, its ``ir_caption_status``, names of what rejected it)."""
        if text is None:
            return None, None, []
        # rc4: stripped only, as the release's IR-aware files hold them (``build_iraware_release_manifests``);
        # ``strict`` also tidies whitespace, as the cleaning caption policies do. Rules read tidied text.
        t = normalize(text) if self.extra_rules else str(text).strip()
        if not t:
            return None, None, []
        skip = set(skip_rules)
        if status in REMOVED_STATUSES:
            return None, None, [f"status_{status}"]
        if status is not None and status not in ACCEPTED_STATUSES:
            return None, None, [f"status_{status}"]
        flat = normalize(t)
        # the authors' strict-v3 filter searched the caption as it is (refine_iraware_strict_v3.py), so a
        # phrase split by two spaces or a line break is not theirs to reject; our own rules read tidied text
        bad = [] if status in ACCEPTED_STATUSES else violations(str(text), "ir_filter", skip)
        if self.extra_rules:
            bad += violations(flat, "ir_caption", skip)
        if bad:
            return None, None, bad
        return t, status or FILTERED_STATUS, []


CAPTION_POLICIES: dict[str, CaptionPolicy] = {p.name: p for p in (
    CaptionPolicy("rc4", "the release's rule: one caption per record, usable when non-empty after normalisation"),
    CaptionPolicy("paper", "the paper's §3.4 cleaning rules and the class-name fallback", rule_kind="caption",
                  class_name_fallback=True),
)}
IR_POLICIES: dict[str, IRPolicy] = {p.name: p for p in (
    IRPolicy("rc4", "release status decides; captions without a status pass the authors' strict-v3 filter"),
    IRPolicy("strict", "rc4 plus our stricter IR blocked-claim rules (ir_temperature, ir_material, ...)",
             extra_rules=True),
)}
DEFAULT_CAPTION_POLICY = "rc4"
DEFAULT_IR_POLICY = "rc4"


def decide(sample_id: str, candidates: list[str], *, class_name: str | None = None, choice: str = "first",
           seed: int = 0, skip_rules: Iterable[str] = (), policy: str = "paper",
           release_usable: bool | None = None) -> CaptionDecision:
    """Shorthand for ``CAPTION_POLICIES[policy].decide(...)`` (the paper policy keeps old callers' meaning)."""
    return CAPTION_POLICIES[policy].decide(sample_id, candidates, class_name=class_name, choice=choice, seed=seed,
                                           skip_rules=skip_rules, release_usable=release_usable)


def decide_ir(text: str | None, skip_rules: Iterable[str] = (), *, status: str | None = None,
              policy: str = "strict") -> tuple[str | None, list[str]]:
    """(accepted IR-aware caption or None, what rejected it); a rejected one moves the row to ``base``."""
    cap, _, bad = IR_POLICIES[policy].decide(text, status, skip_rules)
    return cap, bad
