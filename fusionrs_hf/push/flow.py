"""One push from start to end (:func:`push_repo`): the target parsed, the check run, the plan made from the
local and remote listings, the snapshot of each file taken right before it is sent (:class:`_Sender`), and the
card rendered last from exactly the bytes sent."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import fsspec
import pyarrow as pa

from .. import secrets as _secrets
from ..card import CARD_NAME, render_card
from ..card_assets import ASSET_PATHS
from ..errors import CliError, UnusableInputError
from ..layout import SHARD_TEMPLATE, ShardName, layout_for, unfinished_build
from ..safepath import check_repo_file
from ..sources import REGISTRY_FILE
from ..storage import hub_endpoint
from .hub import _HubTarget, _is_unreachable, _offline_error, make_api
from .local import (
    _card_assets,
    _footer_only,
    _local_names,
    _Snapshot,
    _stat_key,
    read_local,
    rights_summary,
    sweep_stale_snapshots,
)
from .plan import (
    MAX_FILES_PER_COMMIT,
    SAMPLE_MARKER,
    SYNTHETIC_IR_MARKER,
    CheckFailed,
    LocalFile,
    LocalRepoError,
    Progress,
    PushAuthError,
    PushError,
    PushHubUnreachable,
    PushPlan,
    PushRefused,
    PushResult,
    RemoteFile,
    logger,
    scrub,
)
from .sender import _Sender
from .store import _FsspecTarget


def _is_folder(target: str) -> bool:
    """A destination that names a folder: absolute, ``./`` ``../`` ``~/`` relative, or an existing path (as
    ``check`` reads a path that exists as a folder). ``OWNER/NAME`` that is no local path stays a Hub id."""
    if "://" in target:
        return False
    return (target.startswith(("/", "./", "../", "~/")) or target in (".", "..", "~")
            or os.path.exists(os.path.expanduser(target)))


_USERINFO = re.compile(r"(?i)^[a-z][a-z0-9+.-]*://(?:[^/\s?#@:]*:[^\s@]*|[^/\s?#@]*)@")
"""``scheme://user:password@`` at the start of a URL, as :func:`fusionrs_hf.secrets.register_url` finds it (a
password may hold ``?`` or ``#``)."""


def _refuse_query(target: str) -> None:
    """A destination that is no folder path must carry no ``?`` or ``#``: fsspec takes them for part of the
    object key (``s3://bkt/q1?secret=X`` wrote ``bkt/q1?secret=X/data/...``: the query, often a credential, in
    the name of every object), and a Hub id cannot hold them. Reading a repo allows them in object keys
    (:func:`fusionrs_hf.storage.locate`); a push names where it writes, so here it is refused, in one line that
    shows the URL only up to the query (and never its user:password)."""
    if _is_folder(target):
        return
    m = _USERINFO.match(target)
    head, rest = (target[: target.index("://") + 3] + "***@", target[m.end():]) if m else ("", target)
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return
    raise CliError(f"{head}{rest[:cut]}?...: a push destination takes no query string or fragment ('?', '#'): "
                   "the store would make them part of every object's name; give the URL without them, and "
                   "credentials with --storage-option (or the store's environment variables); nothing was written")


def _parse_target(target: str, revision: str | None) -> tuple[str, str | None, bool]:
    """(repo_id or URL, revision, is_hub). ``hf://datasets/owner/name[@rev]`` counts as a Hub repo; a folder
    path (absolute, ``./relative`` or existing) is a folder (``file://``), as it is for ``check``."""
    if _is_folder(target):
        if revision:
            raise CliError(f"{target}: --revision applies to Hub repos, not to a folder")
        target = "file://" + os.path.abspath(os.path.expanduser(target))
    if target.startswith("hf://"):
        rest = target[len("hf://"):]
        if not rest.startswith("datasets/"):
            raise CliError(f"{target}: only dataset repos are supported (hf://datasets/OWNER/NAME)")
        rest = rest[len("datasets/"):].rstrip("/")
        if "@" in rest:
            rest, rev = rest.split("@", 1)
            if revision and revision != rev:
                raise CliError(f"{target}: revision @{rev} conflicts with --revision {revision}")
            revision = rev
        target = rest
    elif "://" in target:
        return target, revision, False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(target)
    except HFValidationError:
        raise CliError(
            f"{target!r} is neither a Hub repo id (OWNER/NAME) nor a URL; for a folder give its absolute path "
            "(or file:///abs/path)"
        ) from None
    if target.count("/") != 1:
        raise CliError(f"{target!r}: a Hub dataset repo id is OWNER/NAME")
    return target, revision, True


CARD_FINDING_KINDS = frozenset({"missing_card", "bad_card", "card_config_mismatch", "missing_file",
                                "count_mismatch", "bytes_mismatch"})
"""``fusionrs check`` findings about the local README.md against the shards."""


def _about_the_card(f) -> bool:
    """Whether a check finding compares the local card with the shards. Push publishes a card rendered from the
    shards (never the local README.md), so such a finding cannot reach the remote: a stale card (a shard
    deleted for ``--prune``) does not stop a push. A parquet file outside the naming rule still does."""
    kind = getattr(f, "kind", None)
    return kind in CARD_FINDING_KINDS or (kind == "orphan_shard" and getattr(f, "config", None) is not None)


_URL_CREDENTIALS = re.compile(r"(?i)^[a-z][a-z0-9+.-]*://[^/\s?#]*@")
"""``scheme://user:password@...``: credentials in a target URL."""


def _run_check(local: Path, progress: bool = False):
    try:
        from ..check import CheckTargetError, check_repo
    except ImportError as e:
        raise PushError(f"`fusionrs check` is not available ({e}); pass --skip-check to push unchecked") from None
    try:
        return check_repo(str(local), fast=True, progress=progress)
    except CheckTargetError as e:
        raise CliError(f"{local}: {e}") from None


def push_repo(
    local: str | Path,
    target: str,
    *,
    api=None,
    revision: str | None = None,
    private: bool = True,
    dry_run: bool = False,
    prune: bool = False,
    message: str | None = None,
    skip_check: bool = False,
    progress: bool = False,
    max_files_per_commit: int = MAX_FILES_PER_COMMIT,
    hub_fs=None,
    storage_options: dict | None = None,
    token: str | None = None,
    on_plan: Callable[[PushResult], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> PushResult:
    """Push a local FusionRS repo folder to ``target`` (a Hub ``OWNER/NAME``, ``hf://datasets/...`` or an fsspec URL).

    ``api`` is an ``HfApi`` (or a double with the same methods); by default one is made with ``token``,
    else ``HF_TOKEN`` / the stored login. ``hub_fs`` is the fsspec filesystem used to read footers of
    shards that exist only on the Hub (default ``HfFileSystem``). Raises :class:`CheckFailed` when the
    local repo fails ``check --fast`` (unless ``skip_check``), :class:`PushError` when the push fails
    (message free of tokens), :class:`~fusionrs_hf.errors.CliError` for unusable arguments.

    ``on_plan`` is called with the result-to-be (its plan, rights summary and planning warnings) once the
    plan is made and before anything is written, so a caller can show what is about to be uploaded (and a
    push stopped mid-upload has said it). ``say`` gets one line per commit (fsspec: per
    ``max_files_per_commit`` files) while writing: the progress report where there is no terminal for a bar.
    """
    local = Path(local)
    if not (local / "data").is_dir():
        from ..layout import interrupted_build

        raise CliError(f"{local}: not a FusionRS repo folder (no data/ directory){interrupted_build(local)}")
    unfinished = unfinished_build(local)  # half a build passes every check of its shards: its state says so
    if unfinished:
        raise CliError(unfinished)
    if max_files_per_commit < 2:
        raise CliError("max_files_per_commit must be at least 2")
    secrets: list[str | None] = [token]
    _secrets.register_secret(token)
    _secrets.register_url(target)
    _secrets.register_options(storage_options)
    _refuse_query(target)
    ref, revision, is_hub = _parse_target(target, revision)

    check_dict = None
    card_notes: list[str] = []
    if not skip_check:
        report = _run_check(local, progress)
        stale = [f for f in getattr(report, "findings", None) or [] if _about_the_card(f)]
        if stale and dataclasses.is_dataclass(report):
            report = dataclasses.replace(report, findings=[f for f in report.findings if not _about_the_card(f)])
            card_notes.append(f"local {CARD_NAME} does not match the shards ({len(stale)} check finding(s), e.g. "
                              f"{stale[0].kind}); the card pushed is rendered from the shards (run `fusionrs card "
                              f"{local}` to update the local one)")
        check_dict = report.to_dict() if hasattr(report, "to_dict") else {"ok": bool(report.ok)}
        if card_notes:
            check_dict["card_findings_superseded"] = len(stale)
        if not report.ok:
            raise CheckFailed(report)

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet_client = not progress and not are_progress_bars_disabled()
    if quiet_client:  # --quiet / --json / no terminal: the client's own per-file bars too
        disable_progress_bars()
    tgt = None
    tokenless = False
    try:
        if is_hub:
            if api is None:
                endpoint, token = _hub_client_options(token, storage_options)
                secrets.append(token if isinstance(token, str) else None)
                _secrets.register_secret(token if isinstance(token, str) else None)
                if token is None and not dry_run and not _loopback(endpoint):
                    raise CliError("no Hugging Face token: set HF_TOKEN, run `hf auth login` or pass "
                                   "--storage-option token=...")
                tokenless = token is None or token is False
                # HfApi's own default endpoint is HF_ENDPOINT: named only when the option gives another (test
                # doubles stand in for make_api(token))
                api = make_api(token, endpoint) if (storage_options or {}).get("endpoint") else make_api(token)
            secrets.append(getattr(api, "token", None) if isinstance(getattr(api, "token", None), str) else None)
            tgt = _HubTarget(ref, api, revision, private, hub_fs, fs_options=storage_options)
        else:
            tgt = _FsspecTarget(ref, revision, storage_options)
        for note in card_notes:
            logger.warning(note)
        result = _push(local, tgt, dry_run=dry_run, prune=prune, message=message, progress=progress,
                       max_files=max_files_per_commit, check_dict=check_dict, notes=card_notes,
                       on_plan=on_plan, say=say)
        return result
    except CheckFailed as e:
        e.args = (scrub(str(e), secrets),)
        raise
    except PushHubUnreachable as e:
        raise PushHubUnreachable(scrub(str(e), secrets), repo=e.repo, endpoint=e.endpoint, offline=e.offline) from None
    except (CliError, PushError) as e:
        raise type(e)(scrub(str(e), secrets)) from None
    except UnusableInputError as e:  # e.g. a destination folder that is a symlink out of it: nothing written there
        raise CliError(scrub(str(e), secrets)) from None
    except Exception as e:  # any client/HTTP error: re-raise with a message that cannot carry the token
        msg = scrub(f"{type(e).__name__}: {e}", secrets)
        where = scrub(target, secrets)
        if isinstance(tgt, _FsspecTarget) and not tgt.wrote and _URL_CREDENTIALS.match(target):
            # s3://key:secret@bucket: the store took the credentials for part of the bucket name and failed
            # before anything was written: unusable input, said without them
            first = msg.splitlines()[0] if msg else type(e).__name__
            raise CliError(f"{where}: the store cannot be used with credentials in the URL ({first}); pass them "
                           "with --storage-option (key=..., secret=...) or the store's environment variables, "
                           "and give the URL without them; nothing was written") from None
        if isinstance(tgt, _HubTarget) and not tgt.wrote and _is_unreachable(e):
            endpoint = tgt.endpoint
            offline = _offline_error(e)
            why = (f"the Hub is offline here (HF_HUB_OFFLINE is set), so {endpoint} was not contacted" if offline else
                   f"cannot reach the Hub at {endpoint} ({msg.splitlines()[0] if msg else type(e).__name__})")
            raise PushHubUnreachable(f"push to {where}: {why}; nothing was uploaded. Check the network or the "
                                     "endpoint (--storage-option endpoint=..., else HF_ENDPOINT), then run the "
                                     "same command again", repo=ref, endpoint=endpoint,
                                     offline=offline) from None
        refused = _auth_refusal(e, tgt, where, tokenless, dry_run, msg)
        if refused is not None:
            raise PushAuthError(scrub(refused, secrets)) from None
        if dry_run:
            raise PushError(f"push --dry-run for {where} failed: {msg}; nothing was uploaded") from None
        raise PushError(f"push to {where} failed: {msg}; re-run the same command to resume") from None
    finally:
        if quiet_client:
            enable_progress_bars()


def _hub_client_options(token: str | bool | None, storage_options: dict | None) -> tuple[str, str | bool | None]:
    """(endpoint, token) of the Hub client a push makes: the same rule as every read (``check``,
    :func:`fusionrs_hf.load`, ``make_dataloader``, through :func:`fusionrs_hf.storage.locate`): the endpoint is
    ``--storage-option endpoint=...``, else ``HF_ENDPOINT`` (:func:`~fusionrs_hf.storage.hub_endpoint`); the
    token is ``token=`` of the Python call, else ``--storage-option token=...`` (``token=false``: send none),
    else ``HF_TOKEN`` / the stored login. Why one rule: a push that took the endpoint option for reads only
    would upload a private dataset to whatever ``HF_ENDPOINT`` names (huggingface.co by default)."""
    opts = storage_options or {}
    endpoint = hub_endpoint(opts)
    if token is None and "token" in opts:
        token = opts["token"]
    if token is None or token is True:
        from huggingface_hub import get_token

        token = get_token()
    return endpoint, token


_CREDENTIAL_ERRORS = frozenset({"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                                "NoAuthTokenError", "ClientAuthenticationError", "DefaultCredentialsError",
                                "RefreshError"})
"""Class names of the errors object-store clients raise when they have no usable credentials (botocore,
azure, google-auth): named, not imported, since each store's client is an optional extra."""


def _auth_refusal(e: BaseException, tgt, where: str, tokenless: bool, dry_run: bool, msg: str) -> str | None:
    """The one-line message when ``e`` means the remote refused (or could not be given) credentials, else None.

    Such a push is unusable input (exit 2): re-running it as it is fails the same way, so it must not be told
    to "resume". The hint says where credentials come from for this kind of remote; the Hub's own words
    (``msg``, or the server message of the error: "no rights to create a dataset under ...") are kept, and
    pass the secret filter with the rest."""
    hub = isinstance(tgt, _HubTarget)
    some = tgt is not None and not dry_run and (tgt.committed if hub else tgt.transfer.sent_files > 0)
    nothing = (f"what was {'committed' if hub else 'written'} before stays; fix that, then run the same command"
               if some else f"nothing was {'uploaded' if hub else 'written'}")
    if hub:
        status = _http_status(e)
        if status not in (401, 403):
            return None
        repo = tgt.repo_id
        if status == 401:
            why = ("no token was sent: set HF_TOKEN, run `hf auth login` or pass --storage-option token=..."
                   if tokenless else "the token was refused: check HF_TOKEN, the stored login (`hf auth login`) "
                                     "or --storage-option token=...")
        else:
            why = (f"the token may not write to {repo} (a read-only token, or a repo of another owner or "
                   "organization): use a token with write access to it")
        said, seen = None, e
        while seen is not None and said is None:
            said = getattr(seen, "server_message", None) or None
            seen = seen.__cause__ or seen.__context__
        said = (str(said).strip() or None) if said else None
        said = said or (msg.splitlines() or [""])[0]
        return (f"push to {where}: {tgt.endpoint} answered HTTP {status} ({why}){f'; it said: {said}' if said else ''}"
                f"; {nothing}")
    chain, seen = [], e
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    hit = next((x for x in chain if isinstance(x, PermissionError)
                or any(c.__name__ in _CREDENTIAL_ERRORS for c in type(x).__mro__)), None)
    if hit is None:
        return None
    first = (scrub(f"{type(hit).__name__}: {hit}").splitlines() or [type(hit).__name__])[0]
    if getattr(tgt, "_local", False):
        return f"push to {where}: cannot write there ({first}): check the folder's permissions; {nothing}"
    return (f"push to {where}: the store refused access or has no credentials ({first}): give them with "
            "--storage-option (e.g. key=..., secret=...) or the store's environment variables (e.g. "
            f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), and make sure they may write there; {nothing}")


def _loopback(endpoint: str) -> bool:
    """Whether the Hub endpoint is on this machine (a local Hub-API server such as
    ``python -m fusionrs_hf.testing.hub_server``). Such a server may take writes without a token, so push lets
    it answer instead of demanding one up front; a server that wants one says 401 and push repeats the hint."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(endpoint).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_status(e: BaseException) -> int | None:
    """The HTTP status of a client error (or of one it wraps), if it carries a response."""
    seen = 0
    while e is not None and seen < 8:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return status
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _fusionrs_card(text: str) -> bool:
    """Whether a README is a card fusionrs rendered (its title and the synthetic-infrared note)."""
    return SYNTHETIC_IR_MARKER in text and "\n# FusionRS\n" in text


def _push(local: Path, tgt, *, dry_run: bool, prune: bool, message: str | None, progress: bool,
          max_files: int, check_dict: dict | None, notes: list[str] = (), on_plan=None, say=None) -> PushResult:
    removed = [] if dry_run else sweep_stale_snapshots()  # what killed pushes left behind (never a live one's)
    for d in removed:
        logger.info("removed %s, the snapshot folder of a push that no longer runs", d)
    snapshot = _Snapshot()
    try:
        return _push_snapshot(local, tgt, snapshot, dry_run=dry_run, prune=prune, message=message,
                              progress=progress, max_files=max_files, check_dict=check_dict, notes=list(notes),
                              removed=removed, on_plan=on_plan, say=say)
    finally:
        snapshot.close()


def _refuse_duplicate_rows(local: Path, names: list[ShardName], kept: list[str], tgt, n_kept: int) -> None:
    """Refuse (:class:`PushRefused`, before anything is written) a push whose kept remote-only shards hold a
    sample_id that a local shard holds too: the remote would then hold that row twice, and fail ``fusionrs
    check`` (duplicate_sample_id) under a card that counts both. It happens after a rebuild that re-sharded
    (``--rows-per-shard``, ``--overwrite``): the old shard names are gone locally, their rows are not.

    Only when remote-only shards are kept (a push usually has none, and costs nothing here): the sample_id
    column of each local shard (a local read), then that column alone of each kept shard, stopping at the
    first shared id."""
    if not kept or not names:
        return
    from .hub import read_sample_ids

    fs = fsspec.filesystem("file")
    owner: dict[str, str] = {}
    for name in names:
        try:
            ids = read_sample_ids(fs, str(local / name.path))
        except FileNotFoundError:
            raise LocalRepoError(f"local {name.path} disappeared while push was planning (is a build still "
                                 "running?); nothing was uploaded, re-run when it is done") from None
        except (OSError, pa.ArrowException) as e:
            raise LocalRepoError(f"local {name.path}: cannot read its sample_id column ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0] if str(e) else ''}); nothing was uploaded") from None
        for sid in ids:
            owner.setdefault(sid, name.path)
    for rel in kept:
        sid = next((x for x in tgt.remote_sample_ids(rel) if x in owner), None)
        if sid is not None:
            raise PushRefused(
                f"remote {rel} (not in the local repo, so push would keep it) holds sample_id {sid!r}, which local "
                f"{owner[sid]} holds too: the remote would have that row twice; pass --prune to remove the "
                f"{n_kept} remote-only shard(s), or bring {rel} back into the local repo; nothing was uploaded")


def _plan_files(local: Path, names: list[ShardName], remote: dict[str, RemoteFile], tgt, plan: PushPlan
                ) -> list[LocalFile]:
    """Sort the local shards into unchanged / upload (``plan``); every file read at most once here."""
    files: list[LocalFile] = []
    for name in names:
        r = remote.get(name.path)
        if r is not None:
            try:
                size_now = (local / name.path).stat().st_size
            except FileNotFoundError:
                size_now = -1
            if size_now == r.size:  # may be unchanged: hash it (one read; its footer from the same bytes)
                f = read_local(local, name, blob=not r.sha256)
                files.append(f)
                if tgt.same(f, r):
                    plan.unchanged.append(f.relpath)
                else:
                    plan.upload.append((f, "changed"))
                continue
        f = _footer_only(local, name)  # new, or another size: surely sent; hashed when snapshotted
        files.append(f)
        plan.upload.append((f, "new" if r is None else "changed"))
    return files


def _push_snapshot(local: Path, tgt, snapshot: _Snapshot, *, dry_run: bool, prune: bool, message: str | None,
                   progress: bool, max_files: int, check_dict: dict | None, notes: list[str], removed: list[str],
                   on_plan, say) -> PushResult:
    names, orphans = _local_names(local)
    warnings = [*notes, *(f"local {o}: not a shard name ({SHARD_TEMPLATE}); not pushed" for o in orphans)]
    existed = tgt.prepare(dry_run)
    remote = tgt.list() if existed else {}
    warnings.extend(tgt.warnings)

    plan = PushPlan(target=tgt.label, revision=tgt.revision, repo_exists=existed,
                    layout=layout_for(fsspec.filesystem("file"), str(local.resolve())))
    tgt.layout = plan.layout
    try:
        files = _plan_files(local, names, remote, tgt, plan)
    except LocalRepoError as e:
        raise LocalRepoError(f"{e}; nothing was uploaded, re-run when it is done") from None
    local_paths = {n.path for n in names}
    infos = {f.relpath: f.info for f in files if f.info is not None}
    card_shards = list(infos.values())
    for rel in sorted(set(remote) - local_paths - {CARD_NAME, REGISTRY_FILE, *ASSET_PATHS}):
        if prune:
            plan.delete.append(rel)
            continue
        plan.keep_remote_only.append(rel)
        info = tgt.remote_shard_info(rel)
        if info is None:
            warnings.append(f"remote {rel}: not a shard name; kept (use --prune to delete it)")
        else:
            card_shards.append(info)
            infos[rel] = info
    if plan.keep_remote_only:
        _refuse_duplicate_rows(local, names, [r for r in plan.keep_remote_only if r in infos], tgt,
                               len(plan.keep_remote_only))
        warnings.append(f"{len(plan.keep_remote_only)} remote shard(s) are not in the local repo; kept and counted "
                        "in the card (pass --prune to delete them)")

    local_card = local / CARD_NAME
    sample = local_card.is_file() and SAMPLE_MARKER in local_card.read_text(encoding="utf-8", errors="replace")
    card_shards.sort(key=lambda s: s.name)
    plan.card_shards = card_shards
    plan.assets = _card_assets(local, card_shards, plan.layout)
    for rel, data in plan.assets.items():
        r = remote.get(rel)
        plan.assets_state[rel] = "new" if r is None else ("unchanged" if tgt.same_bytes(data, r) else "changed")
    text = render_card(card_shards, sample=sample, location=tgt.card_location, lay=plan.layout,
                       assets=plan.assets)
    reg = local / REGISTRY_FILE
    if reg.exists():  # the repo declares sources of its own: the remote needs the same declaration
        check_repo_file(local, reg)  # a regular file inside the repo, never a FIFO or a link out of it
        plan.sources_bytes = reg.read_bytes()
        r = remote.get(REGISTRY_FILE)
        plan.sources = "new" if r is None else ("unchanged" if tgt.same_bytes(plan.sources_bytes, r) else "changed")
    if SYNTHETIC_IR_MARKER not in text:  # the card must keep telling readers the IR is synthetic
        raise PushError("rendered card lost the synthetic-infrared note; refusing to push")
    plan.readme_bytes = text.encode("utf-8")
    r = remote.get(CARD_NAME)
    plan.readme = "new" if r is None else ("unchanged" if tgt.same_bytes(plan.readme_bytes, r) else "changed")
    if plan.readme == "changed":
        try:
            theirs = tgt.remote_bytes(CARD_NAME).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - unreadable: we cannot tell, so say it
            theirs = ""
        if not _fusionrs_card(theirs):
            where = "the repo history keeps the old one" if getattr(tgt, "kind", "") == "hub" else \
                "its old content is not kept"
            warnings.append(f"{'will replace' if dry_run else 'replacing'} {tgt.label}/{CARD_NAME}, which was not "
                            f"written by fusionrs, with the FusionRS card ({where})")
    try:
        plan.rights = rights_summary(f.path for f, _ in plan.upload)
    except (OSError, pa.ArrowException) as e:
        raise LocalRepoError(f"local repo changed while push was planning ({type(e).__name__}: {e}); nothing was "
                             "uploaded, re-run when it is done") from None
    plan.sender = _Sender(local, plan, snapshot, tgt, remote, infos, sample)

    result = PushResult(ok=True, plan=plan, dry_run=dry_run, check=check_dict, warnings=warnings,
                        removed_snapshots=removed)
    for w in warnings[len(notes):]:  # the card notes were logged already
        logger.warning(w)
    logger.info("plan for %s: upload %d file(s), %d B; delete %d; unchanged %d", plan.target,
                plan.upload_files, plan.upload_bytes, len(plan.delete), len(plan.unchanged))
    if on_plan is not None:  # before anything is written: what is about to be uploaded, and its rights
        on_plan(result)
    if dry_run or plan.empty:
        return result

    from tqdm import tqdm

    tgt.create()  # the first write to the remote
    with tqdm(total=plan.upload_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
              desc=f"push 0/{plan.upload_files} files", disable=not progress) as bar:
        shown = Progress(bar, say)
        result.commits = tgt.apply(plan, message=message, max_files=max_files, bar=shown)
        shown.finish(plan.upload_bytes, plan.upload_files)  # every planned file was handled: the bar ends full
    result.uploaded_files, result.uploaded_bytes = plan.upload_files, plan.upload_bytes
    result.transfer = tgt.transfer
    sender: _Sender = plan.sender
    result.warnings.extend(sender.warnings)
    said = {w.split(" ", 2)[1] for w in sender.warnings}
    for f in [*sender.sent.values(), *(f for f in files if f.relpath in plan.unchanged)]:
        try:  # the remote holds what was read; say so if the repo has moved on since
            now = _stat_key(os.stat(f.source)) if f.source is not None else f.stat
        except FileNotFoundError:
            now = None
        if now != f.stat and f.relpath not in said:
            result.warnings.append(f"local {f.relpath} changed during the push; the remote has the version read "
                                   "before (its card counts that one): re-run push to upload the new one")
    return result
