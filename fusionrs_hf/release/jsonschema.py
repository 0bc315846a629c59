"""A small JSON Schema (draft 2020-12) validator for the keywords the authors' record schemas use.

The release's schemas are the contract for index lines, so a line is checked against the schema
itself rather than against rules re-typed by hand: a new record variant is one more schema dict.
Only the keywords the published schemas use are implemented (``type``, ``const``, ``enum``,
``minLength``, ``pattern``, ``not``, ``anyOf``, ``allOf``, ``if``/``then``, ``required``,
``properties``, ``additionalProperties``); an unknown keyword in a schema is a programming error,
raised at once, so a schema is never silently half-checked. ``jsonschema`` itself is not a
dependency: an index has 600,000 lines and this walk is several times faster for these shapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache

_TYPES = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}
_KNOWN = {"$schema", "$id", "title", "description", "type", "const", "enum", "minLength", "pattern", "not",
          "anyOf", "allOf", "if", "then", "required", "properties", "additionalProperties"}


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _tname(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(v), type(v).__name__)


def _short(v: object) -> str:
    text = "null" if v is None else str(v).lower() if isinstance(v, bool) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def errors(schema: dict, value: object, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(field path, message)`` for every violation, in schema order (a dotted path, ``""`` = root)."""
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            yield path, f"must be {' or '.join(types)}, got {_tname(value)}"
            return  # the other keywords would only repeat the type error
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        yield path, f"must be {_short(schema['const'])}, got {_short(value)}"
        return
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        yield path, f"must be one of {', '.join(map(str, schema['enum']))}, got {_short(value)}"
        return
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield path, "must not be empty" if schema["minLength"] == 1 else f"shorter than {schema['minLength']}"
        if "pattern" in schema and not _compiled(schema["pattern"]).search(value):
            yield path, f"{_short(value)} does not match {schema['pattern']}"
    if isinstance(value, dict):
        yield from _object_errors(schema, value, path)
    if "not" in schema and not any(True for _ in errors(schema["not"], value, path)):
        yield path, f"{_short(value)} is not allowed here ({_describe(schema['not'])})"
    if "anyOf" in schema and all(any(True for _ in errors(s, value, path)) for s in schema["anyOf"]):
        yield path, f"{_short(value)} matches none of the allowed forms"
    for sub in schema.get("allOf", ()):
        yield from errors(sub, value, path)
    if "if" in schema and not any(True for _ in errors(schema["if"], value, path)) and "then" in schema:
        yield from errors(schema["then"], value, path)


def _object_errors(schema: dict, value: dict, path: str) -> Iterator[tuple[str, str]]:
    props = schema.get("properties", {})
    for name in schema.get("required", ()):
        if name not in value:
            yield _join(path, name), "missing"
    for name, sub in props.items():
        if name in value:
            yield from errors(sub, value[name], _join(path, name))
    if schema.get("additionalProperties") is False:
        for name in value:
            if name not in props:
                yield _join(path, str(name)), "not allowed by the record schema (additionalProperties: false)"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(schema: dict) -> str:
    """A short human form of a ``not`` clause, e.g. the locator rule."""
    forms = schema.get("anyOf", [schema])
    pats = [f["pattern"] for f in forms if "pattern" in f]
    return "must not match " + " or ".join(pats) if pats else "forbidden form"


def first_error(schema: dict, value: object) -> tuple[str, str] | None:
    """The first violation, or ``None``: what an index reader reports for one line."""
    return next(errors(schema, value), None)
