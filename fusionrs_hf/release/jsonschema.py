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
from collections.abc import Callable, Iterator
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
    return re.compile(ecma_anchors(pattern))


def ecma_anchors(pattern: str) -> str:
    """A JSON-Schema (ECMA-262) ``pattern`` for Python's ``re``: each ``$`` anchor becomes ``\\Z``.

    In ECMA-262 ``$`` matches only at the very end of the string; Python's also matches before a final
    newline, so ``"joint-group:...\\n"`` would pass ``^joint-group:[0-9a-f]{24}$``. Escaped ``\\$`` and
    ``$`` inside a character class are literal and left as they are."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "]":  # "[]...]": a leading "]" is literal
                out.append("[]")
                i += 2
                continue
        elif c == "$":
            c = "\\Z"
        out.append(c)
        i += 1
    return "".join(out)


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
    """The first violation, or ``None``: what an index reader reports for one line.

    A compiled yes/no check runs first (an index line is valid almost always, and 600,000 of them
    must take seconds); only an invalid value is walked again by :func:`errors` for the message.
    """
    if _compiled_check(id(schema), schema)(value):
        return None
    return next(errors(schema, value), None)


_CHECKS: dict[int, tuple[dict, Callable[[object], bool]]] = {}


def _compiled_check(key: int, schema: dict) -> Callable[[object], bool]:
    hit = _CHECKS.get(key)
    if hit is None or hit[0] is not schema:
        hit = _CHECKS[key] = (schema, compile_check(schema))
    return hit[1]


def compile_check(schema: dict) -> Callable[[object], bool]:
    """A predicate equal to ``not any(errors(schema, v))`` for the supported keywords, built once."""
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"schema keyword(s) not supported: {sorted(unknown)}")
    leaf = _leaf(schema)
    if leaf is not None:
        return leaf
    tests: list[Callable[[object], bool]] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        preds = [_TYPES[t] for t in types]
        tests.append(lambda v, preds=preds: any(p(v) for p in preds))
    if "const" in schema:
        c = schema["const"]
        tests.append(lambda v, c=c: v == c and type(v) is type(c))
    if "enum" in schema:
        allowed = {(type(e), e) for e in schema["enum"]}
        tests.append(lambda v, allowed=allowed: (type(v), v) in allowed if _hashable(v) else False)
    if "minLength" in schema:
        n = schema["minLength"]
        tests.append(lambda v, n=n: not isinstance(v, str) or len(v) >= n)
    if "pattern" in schema:
        rx = _compiled(schema["pattern"])
        tests.append(lambda v, rx=rx: not isinstance(v, str) or rx.search(v) is not None)
    if "properties" in schema or "required" in schema or "additionalProperties" in schema:
        props = {k: compile_check(sub) for k, sub in schema.get("properties", {}).items()}
        required = frozenset(schema.get("required", ()))
        closed = schema.get("additionalProperties") is False
        allowed = frozenset(props)

        def obj(v, props=props, required=required, closed=closed, allowed=allowed) -> bool:
            if not isinstance(v, dict):
                return True
            if not required.issubset(v.keys()) or (closed and not allowed.issuperset(v.keys())):
                return False
            for k, chk in props.items():
                if k in v and not chk(v[k]):
                    return False
            return True

        tests.append(obj)
    if "not" in schema:
        inner = compile_check(schema["not"])
        tests.append(lambda v, inner=inner: not inner(v))
    if "anyOf" in schema:
        subs = [compile_check(s) for s in schema["anyOf"]]
        tests.append(lambda v, subs=subs: any(s(v) for s in subs))
    for sub in schema.get("allOf", ()):
        tests.append(compile_check(sub))
    if "if" in schema and "then" in schema:
        cond, then = compile_check(schema["if"]), compile_check(schema["then"])
        tests.append(lambda v, cond=cond, then=then: not cond(v) or then(v))
    return lambda v, tests=tuple(tests): all(t(v) for t in tests)


def _leaf(schema: dict) -> Callable[[object], bool] | None:
    """Fast predicates for the leaf shapes the record schemas use most (a string, a boolean, a constant)."""
    keys = set(schema) - {"title", "description", "$schema", "$id"}
    if keys == {"type"} and schema["type"] == "boolean":
        return lambda v: v is True or v is False
    if keys == {"type", "minLength"} and schema["type"] == "string":
        n = schema["minLength"]
        return lambda v, n=n: type(v) is str and len(v) >= n
    if keys == {"type", "pattern"} and schema["type"] == "string":
        rx = _compiled(schema["pattern"])
        return lambda v, rx=rx: type(v) is str and rx.search(v) is not None
    if keys == {"const"} and isinstance(schema["const"], str):
        c = schema["const"]
        return lambda v, c=c: type(v) is str and v == c
    if keys == {"enum"} and all(isinstance(e, str) for e in schema["enum"]):
        allowed = frozenset(schema["enum"])
        return lambda v, allowed=allowed: type(v) is str and v in allowed
    return None


def _hashable(v: object) -> bool:
    return isinstance(v, str | int | float | bool) or v is None
