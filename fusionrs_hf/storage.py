"""Where a FusionRS repo lives: one storage layer for every entry point.

A *location* is a local folder, any fsspec URL (``file://``, ``s3://``, ``gs://``, ``memory://`` ...) or a Hub
dataset (``owner/name`` or ``hf://datasets/owner/name[@rev]``). :func:`locate` turns what a user typed, plus
``storage_options`` (fsspec's keyword arguments: ``endpoint_url``, ``key``, ``secret``, ``anon``,
``client_kwargs``...; for the Hub ``token`` and ``endpoint``), into a :class:`Location`, and every public entry
point takes both: :func:`fusionrs_hf.load`, :func:`fusionrs_hf.torch.make_dataloader` /
``FusionRSIterable``, :func:`fusionrs_hf.check.check_repo`, :func:`fusionrs_hf.push.push_repo`, ``fusionrs
eval``; on the command line ``--storage-option KEY=VALUE`` (repeated; see :func:`parse_storage_options`).

Rules the layer keeps:

- Filesystems are opened where they are used: :meth:`Location.fs` opens one per process (and re-opens it in
  a forked child), and a pickled :class:`Location` carries only the URL and options. fsspec's async
  filesystems (s3fs, gcsfs) are not fork-safe once used, so a DataLoader worker never touches the parent's
  instance, under fork, spawn or forkserver alike.
- The call that loads a location with stock ``datasets`` is :meth:`Location.load_call`: the repo id or folder
  for the Hub and local folders, ``load_dataset("parquet", data_files=..., storage_options=...)`` for other
  stores (stock ``datasets`` cannot resolve a repo folder on them). :meth:`Location.load_snippet` writes it as
  code for the card; credentials are never written there.
- The Hub is asked once, quickly, before anything else (:meth:`Location.ensure_reachable`): with
  ``HF_HUB_OFFLINE`` set, or an endpoint that does not answer within ``FUSIONRS_HUB_TIMEOUT`` seconds (default
  5), every entry point raises :class:`HubUnreachableError`, one line naming the repo and the endpoint, instead
  of retrying for tens of seconds.
- A missing optional package is one line naming the extra to install (:class:`MissingExtraError`,
  :func:`require`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from .errors import UnusableInputError
from .secrets import MAX_OPTION_DEPTH

__all__ = [
    "HubUnreachableError", "MissingExtraError", "Location", "locate", "require", "parse_storage_options",
    "hub_endpoint", "check_hub", "check_model", "RepoNotFoundError", "public_options", "describe", "add_storage_option_argument", "PROTOCOL_EXTRAS",
    "HUB_TIMEOUT_ENV",
]

HUB_TIMEOUT_ENV = "FUSIONRS_HUB_TIMEOUT"
"""Seconds to wait for the Hub's first answer before :class:`HubUnreachableError` (default 5)."""
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+\Z")
_HF_URL_RE = re.compile(r"^hf://(?:(datasets|models|spaces)/)?([^/@]+/[^/@]+)(?:@([^/]+))?(/.*)?\Z")
PROTOCOL_EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", ""), "gcs": ("gcsfs", ""),
    "az": ("adlfs", ""), "abfs": ("adlfs", ""), "abfss": ("adlfs", ""),
}
"""fsspec protocol -> (package, extra of fusionrs-hf that installs it; "" when none does)."""


# ---------------------------------------------------------------------------------------------- errors


class HubUnreachableError(ConnectionError):
    """The Hub cannot be reached for a repo: ``HF_HUB_OFFLINE`` is set, or the endpoint did not answer.

    The one error type every Python entry point raises for it (``load``, ``make_dataloader``,
    ``check_repo``, ``push_repo``, eval, the trainers); its message is one line naming the repo and the
    endpoint, and the CLI prints it as such and exits 2. A ``ConnectionError`` (so an ``OSError``).
    """

    def __init__(self, message: str, *, repo: str = "", endpoint: str = "", offline: bool = False) -> None:
        super().__init__(message)
        self.repo, self.endpoint, self.offline = repo, endpoint, offline

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RepoNotFoundError(FileNotFoundError):
    """The Hub answered: no such repo or revision (or it is private and no token with access was given)."""

    def __str__(self) -> str:  # OSError's own __str__ would print the args tuple
        return str(self.args[0]) if self.args else ""


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the ``pip install`` that brings it."""


def require(module: str, *, extra: str | None, what: str, package: str | None = None, load: bool = True):
    """``import module`` or raise :class:`MissingExtraError`: ``WHAT needs PACKAGE: pip install 'fusionrs-hf[EXTRA]'``.

    ``load=False`` only looks whether it is installed (no import; returns None).
    """
    import importlib
    import importlib.util

    try:
        if not load:
            if importlib.util.find_spec(module) is None:
                raise ModuleNotFoundError(f"No module named {module!r}", name=module)
            return None
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name != module and not module.startswith(e.name + "."):
            raise  # the package is there but one of its own imports is missing: not ours to explain
        pkg = package or module.split(".", 1)[0]
        how = f"pip install 'fusionrs-hf[{extra}]' (or pip install {pkg})" if extra else f"pip install {pkg}"
        raise MissingExtraError(f"{what} needs the optional package {pkg!r}, which is not installed: {how}",
                                name=module) from None


# ---------------------------------------------------------------------------------------------- options


def _value(text: str):
    """A CLI value: JSON when it parses as JSON (``true``, ``3``, ``{"region_name": "x"}``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(items: Iterable[str] | None) -> dict[str, Any]:
    """``["endpoint_url=http://h:9000", "client_kwargs.region_name=eu-west-1", "anon=true"]`` -> a dict.

    A dotted key makes a nested dict; a value that parses as JSON (``true``, ``12``, ``{...}``) is that JSON
    value, anything else a string. Raises ``ValueError`` for an item without ``=``.
    """
    out: dict[str, Any] = {}
    for n, item in enumerate(items or (), 1):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            # the item is not shown: a mistyped KEY:VALUE is most often a credential
            raise ValueError(f"--storage-option number {n} ({len(item)} characters, not shown): expected KEY=VALUE "
                             "(e.g. endpoint_url=http://127.0.0.1:9000)")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--storage-option {key!r}: {p!r} is already a value, not a group")
        node[parts[-1]] = _value(raw)
    return out


def add_storage_option_argument(parser) -> None:
    """``--storage-option KEY=VALUE`` (repeated) on an argparse parser; read it with :func:`parse_storage_options`."""
    parser.add_argument(
        "--storage-option", dest="storage_options", action="append", default=[], metavar="KEY=VALUE",
        help="fsspec storage option for the repo's store, repeated (e.g. endpoint_url=http://127.0.0.1:9000, "
             "anon=true, client_kwargs.region_name=eu-west-1; for the Hub: token=..., endpoint=...). Credentials "
             "may also come from the store's usual environment variables")


def storage_options_of(parser, args) -> dict[str, Any]:
    """The ``--storage-option`` values of parsed ``args`` as a dict; a malformed one ends the program the way
    argparse does (``parser.error``: exit 2, one line naming it). For scripts built on argparse."""
    try:
        return parse_storage_options(getattr(args, "storage_options", None))
    except ValueError as exc:
        parser.error(str(exc))
        raise  # not reached: parser.error exits


def _is_secret_key(key: str) -> bool:
    from .secrets import _SECRET_KEYS

    return bool(_SECRET_KEYS.search(str(key)))


def public_options(options: Mapping[str, Any] | None, _depth: int = 0) -> dict[str, Any]:
    """The options that may be written down (a card, a log, ``metrics.json``): only keys known to be
    configuration (:data:`~fusionrs_hf.secrets.PUBLIC_OPTION_KEYS`, e.g. ``endpoint_url``, ``anon``,
    ``client_kwargs.region_name``), and of those only values that hold no credential
    (``http://user:pass@proxy``, a token, a signed URL). A key we do not know is left out: its name is no
    promise about its value, and a reader supplies such options (credentials above all) themselves."""
    from .secrets import PUBLIC_OPTION_KEYS

    out: dict[str, Any] = {}
    for k, v in (options or {}).items():
        if str(k) not in PUBLIC_OPTION_KEYS:
            continue
        if isinstance(v, Mapping):
            if _depth >= MAX_OPTION_DEPTH:
                continue  # deeper than any real option (or a structure that contains itself): not written
            v = public_options(v, _depth + 1)
            if not v:
                continue
        elif _holds_secret(v, _depth):
            continue
        out[k] = v
    return out


def _holds_secret(value: Any, depth: int = 0) -> bool:
    """Whether a value holds a credential: a string that :func:`~fusionrs_hf.secrets.scrub` changes, a mapping
    with a credential-like key or value, a list or tuple with one (header pairs, lists of dicts), at any depth
    (deeper than :data:`~fusionrs_hf.secrets.MAX_OPTION_DEPTH`: taken as holding one, so never written)."""
    from .secrets import scrub

    if depth > MAX_OPTION_DEPTH:
        return True
    if isinstance(value, str):
        return scrub(value) != value
    if isinstance(value, Mapping):
        return any(_is_secret_key(k) or _holds_secret(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_secret(x, depth + 1) for x in value)
    return False


# ---------------------------------------------------------------------------------------------- the Hub


def hub_endpoint(options: Mapping[str, Any] | None = None) -> str:
    """The Hub endpoint in force: ``storage_options["endpoint"]``, else ``HF_ENDPOINT``, else huggingface.co."""
    ep = (options or {}).get("endpoint")
    if ep:
        return str(ep).rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE)


def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(HUB_TIMEOUT_ENV, "5")))
    except ValueError:
        return 5.0


class UnknownLocationError(UnusableInputError, ValueError):
    """A repo argument that is no existing folder, URL or Hub id (one line, exit 2 in every command)."""


COMMIT_RE = re.compile(r"[0-9a-f]{40}")
"""A Hub commit id. A revision that is one never moves; a repo info whose ``sha`` is not one names no commit
(nothing is pinned to it: it would be put into paths and URLs)."""

_REACHED: dict[tuple, str | None] = {}
"""(endpoint, type, repo, revision) -> the commit the revision named when the Hub was last asked."""


def check_hub(repo_id: str, *, repo_type: str = "dataset", revision: str | None = None,
              options: Mapping[str, Any] | None = None, what: str | None = None,
              fresh: bool = False) -> str | None:
    """Ask the Hub once for ``repo_id`` (its info), within ``FUSIONRS_HUB_TIMEOUT`` seconds; returns the
    commit (``sha``) that ``revision`` (default: the main branch) names.

    Raises :class:`HubUnreachableError` when ``HF_HUB_OFFLINE`` is set or the endpoint does not answer (or
    answers 5xx); ``FileNotFoundError`` (one line) when the repo or revision does not exist or is private
    without a token. A success is remembered for the process (later calls cost nothing) unless ``fresh``:
    then the Hub is asked again, for where a branch points now.
    """
    import httpx2 as httpx  # what huggingface_hub 2.x speaks HTTP with

    from .secrets import register_options, scrub

    register_options(options)  # its token, and credentials in an endpoint URL, are scrubbed from what we say
    endpoint = hub_endpoint(options)
    label = what or f"{repo_type} repo {repo_id}" + (f"@{revision}" if revision else "")
    label, shown = scrub(label), scrub(endpoint)  # every message below names only these
    key = (endpoint, repo_type, repo_id, revision)
    if key in _REACHED and not fresh:
        return _REACHED[key]
    if _offline():
        raise HubUnreachableError(
            f"{label}: the Hub is offline here (HF_HUB_OFFLINE is set), so {shown} was not contacted; unset "
            "HF_HUB_OFFLINE, or use a local copy (a folder)", repo=repo_id, endpoint=shown, offline=True)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = (options or {}).get("token")
    api = HfApi(endpoint=endpoint, token=token if token is not None else None)
    t = _timeout()
    try:
        info = api.repo_info(repo_id, repo_type=repo_type, revision=revision,
                             timeout=httpx.Timeout(t, connect=min(t, 3.0)))
    except RevisionNotFoundError:
        raise RepoNotFoundError(f"{label}: no revision {revision!r} on {shown}") from None
    except GatedRepoError:
        raise PermissionError(f"{label}: gated on {shown}; accept its terms on the Hub and log in") from None
    except RepositoryNotFoundError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        raise RepoNotFoundError(f"{label}: not found on {shown} (HTTP {status}; or private, and no token with "
                                "access was given: set HF_TOKEN or run `hf auth login`)") from None
    except HfHubHTTPError as e:
        # the server's own words are left out: a proxy or server may echo the request's token in them
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None and (status >= 500 or status == 429):
            why = "rate limited (HTTP 429)" if status == 429 else f"answered HTTP {status}"
            raise HubUnreachableError(f"{label}: {shown} {why}; try again later",
                                      repo=repo_id, endpoint=shown) from None
        if status == 404:
            raise RepoNotFoundError(f"{label}: not found on {shown} (HTTP 404)") from None
        if status in (401, 403):
            raise PermissionError(f"{label}: {shown} answered HTTP {status} (a token without access to it? set "
                                  "HF_TOKEN or run `hf auth login`)") from None
        raise RuntimeError(f"{label}: {shown} answered HTTP {status}") from None
    except (httpx.TransportError, OSError) as e:
        why = type(e).__name__ + (f": {e}" if str(e) else "")
        raise HubUnreachableError(
            scrub(f"{label}: cannot reach the Hub at {shown} within {t:g} s ({why.splitlines()[0]}); check "
                  f"the network or HF_ENDPOINT, set {HUB_TIMEOUT_ENV} to wait longer, or use a local copy"),
            repo=repo_id, endpoint=shown) from None
    sha = getattr(info, "sha", None)
    _REACHED[key] = sha if isinstance(sha, str) and COMMIT_RE.fullmatch(sha) else None
    return _REACHED[key]


def check_model(model_id: str, *, what: str = "model") -> bool:
    """Before ``from_pretrained(model_id)``: True when it must load from the local cache only.

    A local folder: False, nothing asked. Otherwise the Hub is asked once (:func:`check_hub`, seconds at
    most): an unknown id is :class:`RepoNotFoundError` (a typo fails at once instead of after retries); an
    unreachable or offline Hub is :class:`HubUnreachableError`, unless the model is in the local cache, in
    which case True (load with ``local_files_only=True``).
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if os.path.isdir(model_id):
        return False
    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise RepoNotFoundError(f"{what} {model_id!r} is neither a local folder nor a Hub model id (owner/name)"
                                ) from None
    try:
        check_hub(model_id, repo_type="model", what=f"{what} {model_id}")
        return False
    except HubUnreachableError:
        if _cached_model(model_id):
            return True
        raise


def _cached_model(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        got = try_to_load_from_cache(model_id, "config.json")
        return isinstance(got, str)
    except Exception:  # noqa: BLE001 - no cache: not cached
        return False


# ---------------------------------------------------------------------------------------------- locations


@dataclass(eq=False)
class Location:
    """A repo's place: ``kind`` is ``"local"``, ``"hub"`` or ``"fsspec"``.

    ``url`` is what to show and to write into a card (local: the absolute folder; Hub: ``hf://datasets/id``
    [``@rev``]; fsspec: the URL, credentials removed), ``root`` the repo root on :meth:`fs`.
    """

    kind: str
    url: str
    root: str
    protocol: str
    storage_options: dict = field(default_factory=dict, repr=False)  # credentials, often: never in a repr
    repo_id: str | None = None
    revision: str | None = None
    _fs: Any = field(default=None, repr=False)
    _pid: int | None = field(default=None, repr=False)

    # -- the filesystem, one per process ------------------------------------------------------

    def fs(self):
        """This process's fsspec filesystem for the location (opened on first use, again after a fork)."""
        if self._fs is None or self._pid != os.getpid():
            self._fs = _open_fs(self.protocol, self.storage_options)
            self._pid = os.getpid()
        return self._fs

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fs"] = state["_pid"] = None  # a copy in another process opens its own
        return state

    def __setstate__(self, state: dict) -> None:
        from .secrets import register_options

        self.__dict__.update(state)
        # a spawn-started worker is a new process: what the parent registered as secret is registered again,
        # so the worker's own error messages are scrubbed of them too
        register_options(self.storage_options)

    @property
    def label(self) -> str:
        from .secrets import scrub

        return scrub(self.url)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def ensure_reachable(self) -> str | None:
        """For a Hub location: :func:`check_hub` (fast failure when offline or unreachable), and the commit
        its revision names; else nothing (None)."""
        if self.kind == "hub" and self.repo_id:
            return check_hub(self.repo_id, revision=self.revision, options=self.storage_options)
        return None

    def commit(self) -> str | None:
        """The commit a Hub location's revision names now (the Hub is asked again); None elsewhere."""
        if self.kind != "hub" or not self.repo_id:
            return None
        return check_hub(self.repo_id, revision=self.revision, options=self.storage_options, fresh=True)

    def at_commit(self, sha: str) -> Location:
        """This Hub location read at commit ``sha``: paths (and ``/resolve/`` URLs made from them) name the
        commit, so a push to the branch while files are read cannot mix two versions of the repo. ``url``
        (what is shown) stays the revision asked for."""
        if self.kind != "hub" or not self.repo_id:
            raise ValueError(f"{self.label}: only a Hub location has commits")
        head = f"datasets/{self.repo_id}" + (f"@{quote(self.revision, safe='')}" if self.revision else "")
        sub = self.root[len(head):] if self.root.startswith(head) else ""
        return Location("hub", self.url, f"datasets/{self.repo_id}@{sha}{sub}", self.protocol,
                        dict(self.storage_options), self.repo_id, sha)

    # -- loading with stock datasets ----------------------------------------------------------

    def load_call(self, config: str, split: str | None = None, files: Iterable[str] | None = None,
                  lay=None) -> tuple[tuple, dict]:
        """``(args, kwargs)`` for ``datasets.load_dataset`` that load ``config`` from here.

        The Hub: the repo itself (its card's ``configs``). A local folder or another store: the ``parquet``
        builder over the config's shards, each one named (not the card's patterns, and not globs): the shards
        a listing of the repo found (``files``, repo-relative, default: the listing), so what is read is what
        ``fusionrs check`` checks. A card's ``data_files`` may name absolute paths, ``..`` or a symlinked
        shard, and a glob also matches an orphan file under ``data/``; followed as they stand, either would
        read outside the repo or past the checks. The card's ``dataset_info`` is not consulted either, so a
        card older than its shards does not stop the load (``fusionrs check`` reports it).
        """
        if self.kind == "hub":
            kw: dict = {}
            if self.revision:
                kw["revision"] = self.revision
            if self.storage_options.get("token") is not None:
                kw["token"] = self.storage_options["token"]
            return (self.repo_id, config), kw
        data_files = self.shard_files(config, files, lay)
        if not data_files:
            from .errors import UnknownConfigError

            raise UnknownConfigError(f"config {config!r} has no shards in {self.label}")
        if split is not None and split not in data_files:
            from .splits import MissingSplitError

            raise MissingSplitError(f"config {config!r} has no {split!r} split in {self.label} (its splits: "
                                    f"{', '.join(data_files) or 'none'})", repo=self.label, config=config,
                                    split=split, available=tuple(data_files))
        if split is not None:  # only that split's shards: datasets would prepare (and read) every split given
            data_files = {split: data_files[split]}
        kw = {"data_files": data_files}
        if self.storage_options:
            kw["storage_options"] = dict(self.storage_options)
        return ("parquet",), kw

    def shard_files(self, config: str, files: Iterable[str] | None = None, lay=None) -> dict[str, list[str]]:
        """``{split: [shard path or URL, ...]}`` of a config here: each listed shard by name (see :meth:`load_call`)."""
        from .layout import SPLITS

        lay, files = self._listing(files, lay)
        base = self.root.rstrip("/") if self.kind == "local" else self.url.rstrip("/")
        out = {sp: [f"{base}/{p}" for p in lay.config_files(config, sp, files)] for sp in SPLITS}
        return {sp: v for sp, v in out.items() if v}

    def data_files(self, config: str, files: Iterable[str] | None = None, lay=None) -> dict[str, list[str]]:
        """``{split: [URL glob, ...]}`` of a config on this store (only patterns that match shards)."""
        lay, files = self._listing(files, lay)
        base = self.url.rstrip("/")
        return {sp: [f"{base}/{p}" for p in pats] for sp, pats in lay.data_files(config, files).items()}

    def _listing(self, files: Iterable[str] | None, lay) -> tuple:
        """The layout and the repo-relative shard paths that :meth:`shard_files` and :meth:`data_files` work from:
        as given (then nothing on the store is read), else from a listing (local: regular files inside the repo
        only, see :meth:`fusionrs_hf.layout.Layout.list_shards`)."""
        from .layout import DEFAULT_LAYOUT, layout_for

        if lay is None:
            lay = layout_for(self.fs(), self.root) if files is None else DEFAULT_LAYOUT
        if files is None:
            shards, _ = lay.list_shards(self.fs(), self.root)
            files = [s.path for s in shards]
        return lay, list(files)

    def load_snippet(self, config: str = "iraware", split: str = "train", *, files: Iterable[str] | None = None,
                     lay=None) -> str:
        """Python code (for the card) that loads ``config``/``split`` from here with stock ``datasets``."""
        head = "from datasets import load_dataset\n"
        if self.kind in ("hub", "local"):
            target = self.repo_id if self.kind == "hub" else self.root
            rev = f", revision={self.revision!r}" if self.kind == "hub" and self.revision else ""
            return head + f"ds = load_dataset({_q(target)}, {_q(config)}, split={_q(split)}, streaming=True{rev})\n"
        df = self.data_files(config, files, lay)
        df = {split: df[split]} if split in df else df
        lines = [head, "ds = load_dataset(\n", '    "parquet",\n',
                 f"    data_files={_py(df)},\n", f"    split={_q(split)},\n", "    streaming=True,\n"]
        opts = public_options(self.storage_options)
        if opts:
            lines.append(f"    storage_options={_py(opts)},\n")
        lines.append(")\n")
        if opts != dict(self.storage_options):
            lines.insert(1, "# credentials: from the store's environment variables or config files "
                            "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), or add them to storage_options\n")
        elif self.protocol in PROTOCOL_EXTRAS:
            lines.insert(1, "# credentials come from the store's environment variables or config files "
                            "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)\n")
        return "".join(lines)

    def to_card(self) -> dict:
        """What a card records about where its repo lives (no credentials)."""
        out: dict = {"kind": self.kind, "url": self.label}
        opts = public_options(self.storage_options)
        if opts:
            out["storage_options"] = opts
        return out


def _q(text: str) -> str:
    return json.dumps(text)


def _py(obj) -> str:
    """A dict/list of str/num/bool as Python source (JSON with Python's True/False/None)."""
    text = json.dumps(obj)
    return re.sub(r'("(?:[^"\\]|\\.)*")|\btrue\b|\bfalse\b|\bnull\b',
                  lambda m: m[1] or {"true": "True", "false": "False", "null": "None"}[m[0]], text)


def _open_fs(protocol: str, options: Mapping[str, Any]):
    import fsspec

    if protocol in PROTOCOL_EXTRAS:
        pkg, extra = PROTOCOL_EXTRAS[protocol]
        require(pkg, extra=extra or None, what=f"reading {protocol}:// URLs")
    options = dict(options)
    if protocol != "hf":
        # stock load_dataset(..., storage_options=opts) adds its own "hf" entry to the caller's dict; handed on
        # to s3fs it failed as "AioSession.__init__() got an unexpected keyword argument 'hf'"
        options.pop("hf", None)
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as e:  # fsspec's own "Install s3fs to access S3" and friends
        raise MissingExtraError(f"{protocol}:// URLs need an fsspec implementation that is not installed: {e}") from None


NO_URL_CREDENTIALS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})
"""Object stores whose URLs carry no ``user:password@``: there it can only be a mistake (and a leak). (Azure's
``container@account`` has no ``:`` before the ``@``, and is a URL of its own.)"""


def _refuse_url_parts(text: str) -> None:
    """Refuse what a repo URL cannot carry safely, in one line that shows the URL only up to its query:

    * ``user:password@`` outside http(s) (where it becomes a header): object stores would read it as part of
      the bucket name; other stores (hdfs, sftp, ...) would carry it into every shard URL we and ``datasets``
      write down. Looked for in the URL's host part only (``hdfs://nn:8020/data@rc4`` is a path);
    * a query string or fragment on an http(s) URL (``?token=...``): a repo root is a folder, shard paths go
      after it, and the URL is written into cards and caches. (In object-store keys ``?`` and ``#`` are plain
      characters.)

    Credentials belong in ``--storage-option`` or the store's environment variables."""
    from urllib.parse import urlsplit

    from .secrets import scrub

    protocol, rest = text.split("://", 1)
    proto = protocol.lower()
    shown = rest
    if _url_credentials(rest):  # user:password before the host (a raw '?' or '#' may sit inside the password)
        shown = "***@" + rest.rsplit("@", 1)[1]
    cut = min((i for i in (shown.find("?"), shown.find("#")) if i >= 0), default=-1)
    shown = f"{protocol}://" + (shown if cut < 0 else shown[:cut] + "?...")
    if proto in NO_URL_CREDENTIALS:
        creds = _url_credentials(rest)
    elif proto in ("http", "https"):
        creds = False
    else:
        try:
            creds = "@" in urlsplit(text).netloc
        except ValueError:
            creds = "@" in rest.split("/", 1)[0]
    if creds:
        why = "the store would read them as part of the bucket name" if proto in NO_URL_CREDENTIALS \
            else "they would be written into every shard URL"
        raise UnknownLocationError(scrub(
            f"{shown}: {protocol}:// takes no credentials in the URL ({why}); pass them with --storage-option "
            "(key=..., secret=...) or the store's environment variables, and give the URL without them"))
    if proto in ("http", "https") and ("?" in rest or "#" in rest):
        raise UnknownLocationError(scrub(
            f"a repo URL takes no query string or fragment ('?', '#'), got {shown} (it names the repo's folder, "
            "and shard paths go after it); pass credentials with --storage-option or the store's environment "
            "variables"))


def _url_credentials(rest: str) -> bool:
    """``KEY:SECRET@`` at the start of what follows ``scheme://``: a ``:`` in the first path part, before the first
    ``@`` (the secret itself may hold ``/``, as AWS secret keys do; bucket names hold neither ``:`` nor ``@``)."""
    at, colon = rest.find("@"), rest.find(":")
    return 0 <= colon < at and "/" not in rest[:colon]


def _userinfo_to_header(url: str, opts: dict) -> tuple[str, dict]:
    """``http(s)://user:password@host/...`` -> the URL without them, and an ``Authorization: Basic`` header in the
    storage options (fsspec's HTTP filesystem sends ``headers`` with every request).

    Why: every URL made from a location's URL is written down by someone: ``datasets`` keeps each file it
    downloads for its Arrow cache under a JSON record of the URL (the map-style loader, ``load(streaming=False)``),
    and the card and logs show it. Moved into a header, the password lives only in the options, which are
    registered as secrets and never written (see :mod:`fusionrs_hf.secrets`); the server sees the same request.
    """
    import base64
    from urllib.parse import urlsplit, urlunsplit

    from .secrets import register_secret

    parts = urlsplit(url)  # the host ends at '/', '?' or '#': an '@' after it is no userinfo
    if "@" not in parts.netloc:
        return url, opts
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    user, password = unquote(user), unquote(password)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    register_secret(token)
    if password:  # a raw '@' in the password would otherwise cut register_url's mask short; a user name is no secret
        for secret in (password, f"{user}:{password}", userinfo):
            register_secret(secret)
    headers = dict(opts.get("headers") or {})
    if not any(k.lower() == "authorization" for k in headers):
        headers["Authorization"] = f"Basic {token}"
    return urlunsplit(parts._replace(netloc=host)), {**opts, "headers": headers}


def locate(repo_or_path, revision: str | None = None, storage_options: Mapping[str, Any] | None = None) -> Location:
    """The :class:`Location` of a local folder, an fsspec URL or a Hub dataset id (see the module docstring)."""
    if isinstance(repo_or_path, Location):
        return repo_or_path
    from .secrets import register_options, register_url

    opts = dict(storage_options or {})
    register_options(opts)
    text = os.fspath(repo_or_path)
    register_url(text)
    explicit_local = text.startswith("file://")
    if explicit_local:
        text = text[len("file://"):]
        if not text.startswith("/"):
            raise ValueError(f"file:// URLs need an absolute path (file:///abs/path), got {repo_or_path!r}")
    if "://" not in text and (explicit_local or os.path.isdir(text) or os.path.exists(text)):
        if revision:
            raise ValueError(f"revision applies to Hub repos; {text!r} is a local path")
        root = os.path.abspath(text)
        return Location("local", root, root, "file", {})
    m = _HF_URL_RE.match(text)
    if m:
        kind = m[1] or "datasets"
        if kind != "datasets":
            raise ValueError(f"{text}: only dataset repos hold FusionRS data (hf://datasets/OWNER/NAME)")
        rev_in_url = unquote(m[3]) if m[3] else None
        if rev_in_url and revision and rev_in_url != revision:
            raise ValueError(f"{text}: revision @{rev_in_url} conflicts with revision={revision!r}")
        return _hub(m[2], revision or rev_in_url, opts, sub=(m[4] or "").strip("/"))
    if "://" in text:
        if revision:
            raise ValueError(f"revision applies to Hub repos, not to {text!r}")
        protocol = text.split("://", 1)[0]
        _refuse_url_parts(text)
        if protocol.lower() in ("http", "https"):
            text, opts = _userinfo_to_header(text, opts)
        if protocol in PROTOCOL_EXTRAS:
            pkg, extra = PROTOCOL_EXTRAS[protocol]
            require(pkg, extra=extra or None, what=f"reading {protocol}:// URLs")
        import fsspec

        try:
            cls = fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as e:
            raise MissingExtraError(f"{protocol}:// URLs need an fsspec implementation: {e}") from None
        root = cls._strip_protocol(text)
        root = root.rstrip("/") if isinstance(root, str) else root
        if protocol in ("file", "local"):
            return Location("local", root, root, "file", {})
        return Location("fsspec", text.rstrip("/"), root, protocol, opts)
    if _HUB_ID_RE.match(text) and ".." not in text:
        return _hub(text, revision, opts)
    raise UnknownLocationError(f"{text!r}: no such folder, and not an fsspec URL or a Hub dataset id (OWNER/NAME)")


def describe(target: str, storage_options: Mapping[str, Any] | None = None, revision: str | None = None) -> Location:
    """A :class:`Location` for a card, from a repo id, URL or path, without touching any store.

    Like :func:`locate`, except that a local path need not exist yet and no filesystem class is loaded.
    """
    text = os.fspath(target)
    opts = dict(storage_options or {})
    m = _HF_URL_RE.match(text)
    if m:
        return _hub(m[2], revision or (unquote(m[3]) if m[3] else None), opts)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        protocol = text.split("://", 1)[0]
        _refuse_url_parts(text)  # as locate() does: a card never shows what a URL must not carry
        if protocol.lower() in ("http", "https"):  # a card's snippet never shows user:password
            text, opts = _userinfo_to_header(text, opts)
        rest = text.split("://", 1)[1]
        return Location("fsspec", text.rstrip("/"), rest.rstrip("/"), protocol, opts)
    if _HUB_ID_RE.match(text) and ".." not in text and not os.path.exists(text):
        return _hub(text, revision, opts)
    root = os.path.abspath(text)
    return Location("local", root, root, "file", {})


def _hub(repo_id: str, revision: str | None, opts: dict, sub: str = "") -> Location:
    root = f"datasets/{repo_id}" + (f"@{quote(revision, safe='')}" if revision else "")
    if sub:
        root += "/" + sub
    url = "hf://" + root
    return Location("hub", url, root, "hf", opts, repo_id, revision)
