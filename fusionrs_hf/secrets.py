"""One filter for every text we show: tokens and credentials out of messages, logs and exceptions.

What is removed (replaced by ``***``):

* the values of known secrets - ``HF_TOKEN`` / ``HUGGING_FACE_HUB_TOKEN``, the stored Hugging Face login
  (``$HF_HOME/token`` and ``$HF_HOME/stored_tokens``), and anything passed to :func:`register_secret`
  (tokens given to ``push_repo``, passwords found in target URLs, credential-like ``storage_options``) -
  literally and in any percent-encoded form (``%2F``/``%2f``, partly encoded, double-encoded ``%252F``),
  as a server echoing a request URL back would write them;
* anything that looks like a Hugging Face token (``hf_...``, also with ``_`` encoded as ``%5F``),
  ``Bearer``/``Basic`` authorization values, credential query parameters (``?token=``, ``&password=``,
  ``X-Amz-Signature=`` ...);
* credentials inside URLs: ``scheme://user:password@host`` becomes ``scheme://***@host`` (also when the
  URL itself is percent-encoded).

Users: :func:`scrub` (text), :func:`scrub_exception` / :func:`scrubbing` (exceptions of the Python API:
same type, scrubbed message, no chained original that still holds the secret), :class:`ScrubFilter`
(logging), ``fusionrs_hf.cli.main`` (every error line of every sub-command).
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable, Iterator
from urllib.parse import unquote

__all__ = ["MASK", "ScrubFilter", "ScrubbedError", "install_log_filter", "known_secrets", "register_options",
           "register_secret", "register_url", "scrub", "scrub_exception", "scrubbing"]

MASK = "***"
_MIN_SECRET = 4
"""Shorter values are not treated as secrets (masking every "ab" would garble messages)."""
_ENV_TOKENS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_API_TOKEN")

_registered: set[str] = set()
_lock = threading.Lock()

_HF_TOKEN_RE = re.compile(r"\b(hf|api_org)(?:_|%5[fF]|%255[fF])[A-Za-z0-9]{20,}")
"""A Hugging Face token (``hf_`` + 34 letters and digits; 20 at least, so ``hf_transfer`` is left alone)."""
_AUTH_RE = re.compile(r"\b((?i:bearer)(?:\s|%20|\+)+(?=[^\s,;'\"&)\]}]{6,})|"
                      r"Basic(?:\s|%20|\+)+(?=[A-Za-z0-9+/]{8,})(?=[A-Za-z0-9+/]*[A-Z0-9+/]))[^\s,;'\"&)\]}]+")
"""``Bearer <6+ chars>`` and ``Basic <base64>`` (8+ characters with a capital, digit or ``+/``, so "Basic
preprocessing" and "the bearer of" are prose, not credentials)."""
_QUERY_RE = re.compile(
    r"(?i)((?:[?&;]|%3F|%26)(?:access_token|token|api_key|apikey|api-key|password|passwd|secret|client_secret|"
    r"signature|sig|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|sas|sv|"
    r"accountkey|sharedaccesskey|sharedaccesssignature|passphrase)(?:=|%3D))"
    r"[^&\s'\"#<>;,)]+")
_URL_CRED_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)(?:[^/\s'\"<>?#@:]*:[^\s'\"<>@]*|[^/\s'\"<>?#@]*)@")
"""``scheme://userinfo@``: a user without ``/``, and a password that may hold ``/`` (AWS secret keys do) and,
unencoded, ``?`` or ``#`` (a URL with ``host:port/path?x=a@b`` is masked too: more than needed, never less)."""
_URL_CRED_ENC_RE = re.compile(r"(?i)(%3A%2F%2F|%253A%252F%252F)(?:(?!%2F|%40|%252F|%2540)[^/\s'\"<>?#])+(%40|%2540)")
_SECRET_KEYS = re.compile(r"(?i)token|secret|pass|credential|auth|key|sig|cookie|session|conn|sas|private|cert|bearer")
"""Option keys whose values are secrets (``passphrase``, ``connection_string``, ``account_key``, ...): they are
registered, so no message shows them. What may be *written down* is the allowlist below."""

PUBLIC_OPTION_KEYS = frozenset((
    "endpoint_url", "endpoint", "anon", "region_name", "region", "client_kwargs", "config_kwargs", "use_ssl",
    "requester_pays", "default_block_size", "default_fill_cache", "default_cache_type", "version_aware",
    "cache_regions", "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_concurrency",
    "project", "account_name", "use_emulator", "timeout", "block_size", "revision", "s3", "addressing_style",
    "signature_version", "retries", "max_attempts", "mode", "consistency", "requests_timeout", "location",
    "default_location", "protocol", "connect_timeout", "read_timeout", "asynchronous", "loop", "fixed_upload_size",
    "account_host", "verify", "encoded", "use_fabric_endpoint", "client_options",
))
"""fsspec ``storage_options`` keys (at any depth) that are configuration, not credentials: the only ones a card,
a log or ``metrics.json`` writes down (their values still pass :func:`scrub`). Any other key is left out, its
name being no promise about its value (``connection_string`` holds an account key, ``passphrase`` a password,
and ``headers`` whatever a server takes as a credential: ``X-JFrog-Art-Api``). Their values are never registered
as secrets (``signature_version="s3v4"`` is configuration, though its name holds "sig")."""

PUBLIC_HEADER_NAMES = frozenset(("accept", "accept-encoding", "accept-language", "accept-charset", "user-agent",
                                 "content-type", "content-language", "cache-control", "pragma", "connection", "range",
                                 "referer", "origin", "x-requested-with", "if-match", "if-none-match",
                                 "if-modified-since", "if-unmodified-since", "if-range", "x-amz-request-payer",
                                 "x-goog-user-project", "x-client", "x-client-name", "x-client-version"))
"""HTTP headers that carry no credential: the value of any other header in ``headers`` is a secret, whatever
the header is called."""


# --------------------------------------------------------------------------------------------- secrets


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (in this process), wherever it appears."""
    if isinstance(value, str) and len(value) >= _MIN_SECRET:
        with _lock:
            _registered.add(value)


def register_url(url: str | None) -> None:
    """Register the credentials of a URL (``scheme://user:password@host/...``): the password and user:password."""
    if not isinstance(url, str) or "://" not in url:
        return
    m = re.match(r"(?i)[a-z][a-z0-9+.-]*://([^/\s?#@:]*:[^\s@]*|[^/\s?#@]*)@", url)
    if not m:
        return
    userinfo = m[1]
    register_secret(userinfo)
    register_secret(unquote(userinfo))
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        register_secret(password)
        register_secret(unquote(password))


MAX_OPTION_DEPTH = 16
"""Nesting of storage options looked into (deeper, or a structure that contains itself, is not followed)."""


def register_options(options: dict | None, _depth: int = 0) -> None:
    """Register credential-like values of fsspec ``storage_options`` (keys naming token/secret/password/key)."""
    if not isinstance(options, dict) or _depth > MAX_OPTION_DEPTH:
        return
    for key, value in options.items():
        if str(key).lower() == "headers" and isinstance(value, dict):
            for name, v in value.items():
                _register_value(v, str(name).lower() not in PUBLIC_HEADER_NAMES, _depth + 2)
            continue
        secret = bool(_SECRET_KEYS.search(str(key))) and str(key) not in PUBLIC_OPTION_KEYS
        _register_value(value, secret or str(key).lower() == "headers", _depth + 1)


def _register_value(value, secret_key: bool, depth: int = 0) -> None:
    """A value under a credential-like key is a secret, at any depth of lists and tuples (header pairs)."""
    if depth > MAX_OPTION_DEPTH:
        return
    if isinstance(value, dict):
        register_options(value, depth)
    elif isinstance(value, list | tuple):
        for item in value:
            _register_value(item, secret_key, depth + 1)
    elif isinstance(value, str):
        if secret_key:
            register_secret(value)
        register_url(value)  # a password inside a URL value (a proxy, an endpoint) under any key


def _hf_home() -> str:
    home = os.environ.get("HF_HOME")
    if home:
        return os.path.expanduser(home)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "huggingface")


_stored_cache: dict[tuple, list[str]] = {}


def _stored_tokens() -> list[str]:
    """The stored login and every token of ``stored_tokens``, read again only when either file changes (every
    log record is scrubbed: two file reads each would cost more than the record); never raises."""
    path = os.environ.get("HF_TOKEN_PATH") or os.path.join(_hf_home(), "token")
    stored = os.environ.get("HF_STORED_TOKENS_PATH") or os.path.join(_hf_home(), "stored_tokens")
    key = (path, stored, *(_stamp(p) for p in (path, stored)))
    got = _stored_cache.get(key)
    if got is None:
        got = _read_stored_tokens(path, stored)
        _stored_cache.clear()
        _stored_cache[key] = got
    return got


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _read_stored_tokens(path: str, stored: str) -> list[str]:
    out: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            out.append(f.read().strip())
    except OSError:
        pass
    try:
        cp = configparser.ConfigParser()
        cp.read(stored, encoding="utf-8")
        out.extend(cp[s].get("hf_token", "").strip() for s in cp.sections())
    except (OSError, configparser.Error, UnicodeDecodeError):
        pass
    return out


def known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """Every value :func:`scrub` masks literally, longest first (so a secret containing another goes first)."""
    values = {os.environ.get(k) for k in _ENV_TOKENS}
    values.update(_stored_tokens())
    with _lock:
        values.update(_registered)
    values.update(extra)
    return sorted({v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET}, key=lambda v: (-len(v), v))


def _char_pattern(ch: str) -> str:
    """``ch`` literally or percent-encoded (any hex case, once or twice), byte by byte."""
    enc = "".join(f"(?:%|%25){b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    alts = [re.escape(ch), enc]
    if ch == " ":
        alts.append(r"\+")
    return "(?:" + "|".join(alts) + ")"


@functools.lru_cache(maxsize=32)
def _secrets_re(values: tuple[str, ...]) -> re.Pattern | None:
    if not values:
        return None
    # IGNORECASE for the hex digits of %XX; a secret that differs only in letter case is masked too
    return re.compile("|".join("".join(_char_pattern(c) for c in v) for v in values), re.IGNORECASE)


# --------------------------------------------------------------------------------------------- text


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` without secrets: known values (literal or percent-encoded), token-like strings, URL credentials."""
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text
    pattern = _secrets_re(tuple(known_secrets(secrets)))
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _URL_CRED_RE.sub(r"\1" + MASK + "@", text)
    text = _URL_CRED_ENC_RE.sub(r"\1" + MASK + r"\2", text)
    text = _HF_TOKEN_RE.sub(r"\1_" + MASK, text)
    text = _AUTH_RE.sub(r"\1" + MASK, text)
    return _QUERY_RE.sub(r"\1" + MASK, text)


# --------------------------------------------------------------------------------------------- exceptions


class ScrubbedError(RuntimeError):
    """Stands in for an exception whose type cannot be rebuilt from a message; names the original type."""


def _chain_text(e: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(type(e), e, e.__traceback__))
    except Exception:  # noqa: BLE001 - a broken __str__: judge by what we can get
        return repr(e)


def scrub_exception(e: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """``e`` itself when neither it nor its chain shows a secret; else a copy with a scrubbed message.

    The copy has ``e``'s type where ``type(e)(message)`` works (else :class:`ScrubbedError` naming the
    type), ``e``'s traceback (frames name code, not values) and no chained exceptions (they may carry
    the secret, e.g. an HTTP error's response). Attributes of ``e`` are not copied for the same reason.
    """
    secrets = tuple(secrets)
    if scrub(_chain_text(e), secrets) == _chain_text(e):
        return e
    try:
        text = str(e)
    except Exception:  # noqa: BLE001
        text = repr(e)
    msg = scrub(text, secrets)
    new: BaseException
    try:
        new = type(e)(msg)
        if str(new) != msg:
            raise TypeError("message not kept")
    except Exception:  # noqa: BLE001 - constructors with other signatures
        new = ScrubbedError(f"{type(e).__name__}: {msg}")
    new.__cause__ = None
    new.__suppress_context__ = True
    return new.with_traceback(e.__traceback__)


@contextlib.contextmanager
def scrubbing(secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Re-raise any exception from the block through :func:`scrub_exception` (``raise ... from None``)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:
        new = scrub_exception(e, secrets)
        if new is e:
            raise
        raise new from None


# --------------------------------------------------------------------------------------------- logging


class ScrubFilter(logging.Filter):
    """A logging filter: the formatted message, exception text and stack of every record, scrubbed."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub in place, touching only what holds a secret: a record without one keeps its ``msg``
        (a template, or a dict for structured logging), its ``args`` and its unformatted traceback."""
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: the raw text, without the args (logging's own
            # error report would print them, secrets and all)
            record.msg, record.args = scrub(str(record.msg)), None
            msg = None
        if msg is not None:
            clean = scrub(msg)
            if clean != msg:
                record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            text = self._formatter.formatException(record.exc_info)
            if scrub(text) != text:
                record.exc_text = text  # formatted here only because it must be scrubbed
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


SCRUB_FILTER = ScrubFilter()


def install_log_filter(*loggers: logging.Logger | logging.Handler) -> None:
    """Add the filter to these loggers/handlers (idempotent); with none: the root handlers and lastResort."""
    targets = list(loggers) or [*logging.getLogger().handlers, logging.lastResort]
    for t in targets:
        if t is not None and SCRUB_FILTER not in t.filters:
            t.addFilter(SCRUB_FILTER)


def install_record_factory() -> None:
    """Scrub every log record of the process when it is made, whoever logs it (idempotent).

    Why a record factory and not only :class:`ScrubFilter`: a filter runs where it is attached, and the
    libraries under us log through their own loggers and handlers (``fsspec.http`` writes request URLs,
    credentials and all, at DEBUG; ``huggingface_hub`` has its own handler under ``HF_DEBUG``), where a
    user's ``logging.basicConfig(level=DEBUG)`` prints them. The factory runs for every record that is
    actually emitted, and only for those, so a disabled level costs nothing. Installed on import of
    :mod:`fusionrs_hf` (it chains whatever factory was there before).
    """
    old = logging.getLogRecordFactory()
    if getattr(old, "_fusionrs_scrub", False):
        return

    def factory(*args, **kwargs):
        record = old(*args, **kwargs)
        SCRUB_FILTER.filter(record)
        return record

    factory._fusionrs_scrub = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


install_record_factory()
