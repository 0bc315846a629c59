"""Caption cleaning rules: each a named predicate ``text -> bool`` (True = the caption violates it).

Two families, both opt-in under the default (rc4) policy:

- ``caption`` rules follow §3.4 of the paper (stock-photo artefacts, copyright, provider credits,
  non-English, too short/long, generic). The paper's cleaning is stricter than what the rc4 release
  applied, so these run only under ``--caption-policy paper``.
- ``ir_caption`` rules are our own blocked-claim checks for IR-aware captions (stricter than the
  authors' filter, see :mod:`.irfilter`); they run only under ``--iraware-policy strict``.

Rules are listed in :data:`RULES` so they can be tested, counted in the build report and switched
off by name (``--skip-rule``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .irfilter import STRICT_V3


@dataclass(frozen=True)
class Rule:
    """A named cleaning rule. ``check(text)`` is True when the caption must be dropped."""

    name: str
    applies_to: str  # "caption" (§3.4), "ir_caption" (our IR claims) or "ir_filter" (the authors' v3 filter)
    description: str
    check: Callable[[str], bool]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _any_re(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(rf"\b{p}\b" for p in patterns), re.IGNORECASE)


_STOCK = _any_re(r"stock\s+(?:photo|photos|image|images|footage|photography|picture)", "shutterstock",
                 r"getty\s*images", "gettyimages", "alamy", "istock(?:photo)?", "dreamstime", "123rf",
                 "depositphotos", "adobe\\s*stock", r"royalty[\s-]*free", "vectorstock", "pond5", "bigstock")
_COPYRIGHT = re.compile(r"©|\(c\)\s*\d{4}|\bcopyright\b|\ball rights reserved\b|\bwatermark(?:ed)?\b",
                        re.IGNORECASE)
_GOOGLE_EARTH = re.compile(r"\bgoogle\s*(?:earth|maps?)\b|\bimagery\s*©|\bmap data\b", re.IGNORECASE)

MIN_WORDS = 3
MAX_WORDS = 60
MAX_CHARS = 400

_EN_FUNCTION = frozenset(
    "a an the of and with in on at to is are there some many two three near beside next by from its "
    "several few this it".split())
_FOREIGN_FUNCTION = frozenset(
    "der die das und mit von ein eine im auf ist sind le la les des du une et est avec sur dans el los "
    "las del con una por para y en que il della di lo gli"
    .split())
_GENERIC_WORDS = frozenset(
    "aerial view image images photo photograph picture satellite remote sensing top overhead shot scene "
    "map from above earth taken showing shows shown this that here drone bird's eye birds high resolution "
    "area place landscape top-down".split()) | _EN_FUNCTION


def is_stock_photo(text: str) -> bool:
    """Stock-photo artefacts from web-crawled captions (RS5M): agency names, "stock photo", "royalty free"."""
    return bool(_STOCK.search(text))


def is_copyright(text: str) -> bool:
    """Copyright or watermark notices: ``©``, ``(c) 2019``, "copyright", "all rights reserved"."""
    return bool(_COPYRIGHT.search(text))


def is_google_earth(text: str) -> bool:
    """Imagery-provider credits such as "Google Earth" or "map data", which describe no scene content."""
    return bool(_GOOGLE_EARTH.search(text))


def is_non_english(text: str) -> bool:
    """Non-English: letters mostly outside the Latin alphabet, or Latin-script text whose function
    words are foreign (at least two and more than the English ones)."""
    if not text.isascii():  # the script check is slow per character; ASCII text is all Latin anyway
        letters = [c for c in text if c.isalpha()]
        if not letters:
            return False
        latin = sum(1 for c in letters if c.isascii() or "LATIN" in unicodedata.name(c, ""))
        if latin / len(letters) < 0.8:
            return True
    words = _words(text)
    foreign = sum(w in _FOREIGN_FUNCTION for w in words)
    english = sum(w in _EN_FUNCTION for w in words)
    return foreign >= 2 and foreign > english


def is_too_short(text: str) -> bool:
    """Fewer than ``MIN_WORDS`` (3) words: too little to describe a scene."""
    return len(_words(text)) < MIN_WORDS


def is_too_long(text: str) -> bool:
    """More than ``MAX_WORDS`` (60) words or ``MAX_CHARS`` (400) characters (web boilerplate, tag lists)."""
    return len(_words(text)) > MAX_WORDS or len(text) > MAX_CHARS


def is_generic(text: str) -> bool:
    """Generic captions with little scene content ("an aerial view of the area", "satellite image"):
    fewer than two words left after removing image-type words ("aerial", "view", "satellite", ...)
    and function words."""
    content = [w for w in _words(text) if w not in _GENERIC_WORDS and not w.isdigit()]
    return len(content) < 2


_TEMPERATURE = _any_re("temperatures?", "heat", "heated", "heating", "hot", "hotter", "warm", "warmer", "warmth",
                       "cold", "colder", "cool", "cooler", "thermal(?:ly)? (?:emission|signature|radiation)",
                       "degrees?", "celsius", "kelvin")
_TEMPERATURE = re.compile(_TEMPERATURE.pattern + r"|°\s*[cfk]\b", re.IGNORECASE)  # "25 °C", "25°C": no \b before °
_EMISSIVITY = _any_re("emissivity", "emissive", "emits?", "emitting", "emissions?", "radiance", "radiant",
                      "radiometric(?:ally)?", "radiation", "radiates?")
_REFLECTIVITY = _any_re("reflectivity", "reflectance", "reflective", "reflects?", "reflecting", "reflections?",
                        "albedo")
_MATERIAL = _any_re("materials?", "made of", "composed of", "metal", "metallic", "steel", "concrete", "asphalt",
                    "wooden", "plastic", "glass", "moisture", "moist", "surface propert(?:y|ies)")
_RGB_COLOUR = _any_re("red", "reddish", "green", "greenish", "blue", "bluish", "yellow", "yellowish", "orange",
                      "purple", "pink", "brown", "brownish", "violet", "cyan", "magenta", "turquoise",
                      "colou?rful", "colou?red")


def claims_temperature(text: str) -> bool:
    """IR-aware blocked claim: temperature or heat (the IR images are synthetic, not thermal measurements)."""
    return bool(_TEMPERATURE.search(text))


def claims_emissivity(text: str) -> bool:
    """IR-aware blocked claim: emissivity or radiance."""
    return bool(_EMISSIVITY.search(text))


def claims_reflectivity(text: str) -> bool:
    """IR-aware blocked claim: reflectivity / reflectance."""
    return bool(_REFLECTIVITY.search(text))


def claims_material(text: str) -> bool:
    """IR-aware blocked claim: material or surface property ("metal roofs", "made of concrete")."""
    return bool(_MATERIAL.search(text))


def claims_rgb_colour(text: str) -> bool:
    """IR-aware blocked claim: RGB colour words the infrared-style image cannot show (gray, dark and
    bright are allowed)."""
    return bool(_RGB_COLOUR.search(text))


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("stock_photo", "caption", "stock-photo artefacts (agency names, 'stock photo', 'royalty free')",
         is_stock_photo),
    Rule("copyright", "caption", "copyright or watermark notices", is_copyright),
    Rule("google_earth", "caption", "imagery-provider credits such as 'Google Earth'", is_google_earth),
    Rule("non_english", "caption", "not English", is_non_english),
    Rule("too_short", "caption", f"fewer than {MIN_WORDS} words", is_too_short),
    Rule("too_long", "caption", f"more than {MAX_WORDS} words or {MAX_CHARS} characters", is_too_long),
    Rule("generic", "caption", "generic caption with little scene content", is_generic),
    Rule("ir_temperature", "ir_caption", "claims temperature or heat", claims_temperature),
    Rule("ir_emissivity", "ir_caption", "claims emissivity or radiance", claims_emissivity),
    Rule("ir_reflectivity", "ir_caption", "claims reflectivity", claims_reflectivity),
    Rule("ir_material", "ir_caption", "claims a material or surface property", claims_material),
    Rule("ir_rgb_colour", "ir_caption", "names an RGB colour the IR image cannot show", claims_rgb_colour),
    *(Rule(f"ir_v3_{name}", "ir_filter", f"the authors' strict-v3 IR filter: {name.replace('_', ' ')}",
           lambda t, pat=pat: bool(pat.search(t))) for name, pat in STRICT_V3.items()),
)}
"""All cleaning rules by name, in the order they are reported. Kinds: ``caption`` (paper §3.4),
``ir_caption`` (our stricter IR claims) and ``ir_filter`` (the authors' strict-v3 filter, applied to
IR-aware captions that come without a release status)."""


def normalize(text: str) -> str:
    """Whitespace only (strip, collapse runs): cleaning never rewrites words, it keeps or drops."""
    return " ".join(str(text).split())


def violations(text: str, applies_to: str = "caption", skip: Iterable[str] = ()) -> list[str]:
    """Names of the rules (of one kind) that ``text`` violates, in registry order."""
    skip = set(skip)
    return [r.name for r in RULES.values() if r.applies_to == applies_to and r.name not in skip and r.check(text)]

