"""FusionRS rows as chat-style VLM training samples (the paper's instruction templates and settings).

A sample is what transformers chat templates and common VLM fine-tuning scripts (TRL's SFT
trainer, LLaVA-style scripts) take::

    {"messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]},
        {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]}],
     "images": [<PIL.Image: the infrared-style image>],
     "sample_id": "...", "setting": "B-iraware", "task": "ir_caption"}

The trainer applies the processor (``processor.apply_chat_template(messages)`` + images) and masks
the prompt tokens out of the labels; this module only decides *what* is asked and answered.

Supervision settings (the paper's A/B/C)
----------------------------------------
=============  ======================  ======================  =========================================
task           A-original              B-iraware               C-mixed
=============  ======================  ======================  =========================================
ir_caption     ``caption``             ``ir_caption``          both: one A and one B sample per row
object_qa      objects in ``caption``  objects in              both (A and B samples)
                                       ``ir_caption``
scene_qa       ``class_name``          ``class_name``          ``class_name`` (one sample: A = B)
ir_cue_qa      cue clauses of          same                    same (one sample)
               ``ir_caption``
=============  ======================  ======================  =========================================

Where answers come from (documented decisions, since the release ships captions, not QA pairs):

* ``ir_caption`` (the default task): the caption itself, verbatim.
* ``scene_qa``: the scene label is ``class_name`` (NWPU rows carry one), underscores as spaces.
  Rows without a class name have no trustworthy scene label and give no sample.
* ``object_qa``: the land-cover/object nouns of :data:`OBJECT_TERMS` that the caption mentions,
  in order of first mention, comma-separated. A caption naming none gives no sample.
* ``ir_cue_qa``: the clauses of the IR-aware caption that mention an infrared cue
  (:data:`CUE_WORDS`: bright, dark, gray, contrast, texture, outline, ...), joined with "; ".
  Original captions describe RGB appearance, so this task always uses ``ir_caption``; rows without
  one (or without a cue clause) give no sample.

So on the ``iraware`` config (every row has an ``ir_caption``) the ``ir_caption`` task gives
N samples for A, N for B and 2N for C.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from PIL import Image

from .limits import open_image
from .secrets import scrubbing
from .splits import explain_missing
from .torch import FusionRSIterable, loader_for

TEMPLATES: dict[str, str] = {
    "ir_caption": "Describe this infrared remote sensing image in detail.",
    "scene_qa": ("What is the main scene type in this infrared remote sensing image? "
                 "Answer with a concise scene label only."),
    "object_qa": ("What are the main objects or land-cover elements visible in this infrared remote sensing "
                  "image? Answer with a concise comma-separated list."),
    "ir_cue_qa": ("What infrared-specific visual cues can be observed in this image? Mention visible grayscale "
                  "intensity, high contrast, bright structures, low-texture or dark regions, and structural "
                  "outlines if present."),
}
"""Task -> instruction, verbatim from the paper."""

TASKS: tuple[str, ...] = tuple(TEMPLATES)
SETTINGS: tuple[str, ...] = ("A-original", "B-iraware", "C-mixed")

OBJECT_TERMS: tuple[tuple[str, str], ...] = (
    # (label written in the answer, regex matched case-insensitively on word boundaries)
    ("buildings", r"buildings?|houses?|roofs?"),
    ("roads", r"roads?|streets?|highways?"),
    ("river", r"rivers?"),
    ("lake", r"lakes?|ponds?"),
    ("water", r"water"),
    ("sea", r"seas?|ocean|coast(?:line)?"),
    ("beach", r"beach(?:es)?"),
    ("trees", r"trees?|forests?|canopy|woods?"),
    ("vegetation", r"vegetation|grass(?:land)?|meadows?"),
    ("fields", r"fields?|farmlands?|crops?|parcels?"),
    ("bare soil", r"bare soil|bare land|desert|sand"),
    ("bridge", r"bridges?"),
    ("railway", r"railways?|rail(?:road)?s?"),
    ("parking lot", r"parking lots?"),
    ("cars", r"cars?|vehicles?"),
    ("ships", r"ships?|boats?|vessels?"),
    ("airplanes", r"airplanes?|planes?|aircraft"),
    ("runway", r"runways?"),
    ("storage tanks", r"storage tanks?|tanks?"),
    ("playground", r"playgrounds?|courts?|stadiums?"),
    ("mountain", r"mountains?|hills?"),
)
CUE_WORDS: tuple[str, ...] = (
    "bright", "dark", "gray", "grey", "grayscale", "intensit", "contrast", "texture", "outline",
    "structural", "warm", "cool", "thermal", "glow", "shadow",
)
_OBJECT_RES = [(label, re.compile(rf"\b(?:{pat})\b", re.IGNORECASE)) for label, pat in OBJECT_TERMS]
_CUE_RE = re.compile("|".join(CUE_WORDS), re.IGNORECASE)
_CLAUSE_SPLIT = re.compile(r"[.;]\s*|,\s*(?:where\s+)?|\s+where\s+|\s+while\s+")


def object_answer(text: str | None) -> str | None:
    """Comma-separated object/land-cover labels mentioned in ``text`` (first-mention order), or None."""
    if not text:
        return None
    found = []
    for label, rx in _OBJECT_RES:
        m = rx.search(text)
        if m:
            found.append((m.start(), label))
    return ", ".join(label for _, label in sorted(found)) or None


def cue_answer(ir_caption: str | None) -> str | None:
    """The IR-aware caption's clauses that mention an infrared cue, joined with "; ", or None."""
    if not ir_caption:
        return None
    clauses = [c.strip(" .,;") for c in _CLAUSE_SPLIT.split(ir_caption)]
    cues = [c for c in clauses if c and _CUE_RE.search(c)]
    if not cues:
        return None
    text = "; ".join(cues)
    return text[0].upper() + text[1:] + "."


def scene_answer(class_name: str | None) -> str | None:
    """The scene label from ``class_name`` (underscores as spaces), or None."""
    label = (class_name or "").replace("_", " ").strip()
    return label or None


def _answers(row: Mapping, setting: str, task: str) -> list[tuple[str, str]]:
    """(setting label of the sample, answer) pairs for one row."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")
    if task not in TEMPLATES:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    cap, ir_cap = row.get("caption"), row.get("ir_caption")
    if task in ("ir_caption", "object_qa"):
        derive = (lambda t: t or None) if task == "ir_caption" else object_answer
        a = ("A-original", derive(cap))
        b = ("B-iraware", derive(ir_cap))
        picked = {"A-original": [a], "B-iraware": [b], "C-mixed": [a, b]}[setting]
        return [(s, ans) for s, ans in picked if ans]
    ans = scene_answer(row.get("class_name")) if task == "scene_qa" else cue_answer(ir_cap)
    return [(setting, ans)] if ans else []


def needs_ir_caption(setting: str, task: str) -> bool:
    """Whether every sample of ``setting``/``task`` answers from ``ir_caption`` (rows without one give none)."""
    _answers({}, setting, task)  # validates both names
    return task == "ir_cue_qa" or (setting == "B-iraware" and task in ("ir_caption", "object_qa"))


def _ir_image(value) -> Image.Image:
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    if isinstance(value, Mapping):
        value = value.get("bytes")
    if not value:
        raise ValueError("missing IR image")
    im = open_image(value)  # the loaders' formats and limits (JPEG scans, pixels), before any decoding
    im.load()  # decode now, inside the reader's error handling (the bytes may be corrupt)
    return im if im.mode == "RGB" else im.convert("RGB")  # keeps the stored 3 channels, no copy


def vlm_samples(row: Mapping, setting: str, task: str = "ir_caption") -> list[dict]:
    """Chat samples for one FusionRS row: 0, 1 or 2 of them (see the module table).

    ``row["ir"]`` may be a PIL image (stock ``datasets`` decoding), bytes or ``{"bytes": ...}``.
    The IR image is decoded once and shared by the samples of the row.
    """
    answers = _answers(row, setting, task)
    if not answers:
        return []
    image = _ir_image(row.get("ir"))
    prompt = TEMPLATES[task]
    return [
        {
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ],
            "images": [image],
            "sample_id": row.get("sample_id"),
            "setting": label,
            "task": task,
        }
        for label, answer in answers
    ]


class VLMCollator:
    """``collate_fn`` for a DataLoader over FusionRS rows: a list of rows -> a flat list of chat samples."""

    def __init__(self, setting: str = "B-iraware", task: str = "ir_caption") -> None:
        _answers({}, setting, task)  # validates both names
        self.setting, self.task = setting, task

    def __call__(self, rows: Iterable[Mapping]) -> list[dict]:
        return [s for row in rows for s in vlm_samples(row, self.setting, self.task)]


class VLMIterable(FusionRSIterable):
    """The fast shard reader (same work split, DDP rule, shuffle and resume) emitting chat samples.

    Only the IR image is read and decoded; ``batch_size`` counts source rows, so a batch holds
    up to ``2 * batch_size`` samples in setting C.
    """

    columns = ("sample_id", "source", "ir.bytes", "caption", "ir_caption", "class_name")

    def __init__(self, repo_or_path=None, config: str = "iraware", split: str = "train", *,
                 setting: str = "B-iraware", task: str = "ir_caption", **kw) -> None:
        collator = VLMCollator(setting, task)  # bad names fail before the repo is listed
        with scrubbing():  # the repo's URL may carry credentials: no error message shows them
            try:
                super().__init__(repo_or_path, config, split, **kw)
            except FileNotFoundError as exc:
                # the planner found no shard: if the config lacks the split, say which splits it has
                better = explain_missing(repo_or_path, config, split, revision=kw.get("revision"))
                if better is None:
                    raise
                raise better from exc
        self.collator = collator

    def _make_batch(self, rows: list[dict]) -> list[dict]:
        out = []
        for rec in rows:
            try:
                out.extend(vlm_samples(rec, self.collator.setting, self.collator.task))
            except Exception as e:  # noqa: BLE001 - PIL raises many types for bad bytes
                self._fail(rec, "ir", e)
        return out

    def _unbatch(self, batch):
        return batch


def make_vlm_dataloader(
    repo_or_path,
    config: str = "iraware",
    split: str = "train",
    setting: str = "B-iraware",
    task: str = "ir_caption",
    batch_size: int = 8,
    num_workers: int = 0,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 1000,
    on_error: str = "raise",
    rank: int | None = None,
    world_size: int | None = None,
    drop_last: bool = False,
    stateful: bool = False,
    **kw,
):
    """A DataLoader yielding lists of chat samples (see :func:`vlm_samples`) from a FusionRS repo.

    Same reader as :func:`fusionrs_hf.torch.make_dataloader` (workers, DDP equal batches, shuffle,
    ``set_epoch``, resume, ``on_error``). Extra keyword arguments go to the DataLoader, except
    ``revision`` and ``storage_options`` (for the repo's store, see :mod:`fusionrs_hf.storage`).

    A ``config`` without ``split`` (rc4's ``iraware`` has train only) raises
    :class:`fusionrs_hf.splits.MissingSplitError`, a ``ValueError`` (and ``FileNotFoundError``)
    naming the repo, config, split and the splits the config has; there is no fallback here (the
    caller named the config). :func:`fusionrs_hf.splits.available_splits` tells in advance.
    """
    ds_kw = {k: kw.pop(k) for k in ("revision", "storage_options") if k in kw}
    dataset = VLMIterable(repo_or_path, config, split, batch_size=batch_size, shuffle=shuffle, seed=seed,
                  shuffle_buffer=shuffle_buffer, on_error=on_error, rank=rank, world_size=world_size,
                  drop_last=drop_last, setting=setting, task=task, **ds_kw)
    return loader_for(dataset, num_workers=num_workers, stateful=stateful, **kw)
