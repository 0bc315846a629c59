"""What TARGET names (local folder, fsspec URL, Hub id with a revision) and opening it as a filesystem."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

from ..secrets import register_url, scrub
from .findings import CheckTargetError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+\Z")
_HF_REPO_URL = re.compile(r"^(hf://(?:datasets|spaces|models)/[^/@]+/[^/@]+)(/.*)?\Z")


def resolve_target(target: str, revision: str | None = None) -> str:
    """The URL or local path to read: a Hub id that is not a local folder becomes ``hf://datasets/{id}``.

    ``revision`` (branch, tag, commit, ``refs/pr/N``) is only meaningful for Hub targets.
    """
    if not target:
        raise CheckTargetError("empty target")
    rev = f"@{quote(revision, safe='')}" if revision else ""
    if "://" in target:
        if not revision:
            return target
        m = _HF_REPO_URL.match(target)
        if not m:
            raise CheckTargetError(f"--revision applies to hf:// repo URLs without '@', not to {target!r}")
        return m[1] + rev + (m[2] or "")
    if os.path.exists(target) or not _HUB_ID.match(target):
        if revision:
            raise CheckTargetError(f"--revision applies to Hub targets; {target!r} is a local path")
        return target
    return f"hf://datasets/{target}{rev}"


def _open_target(target: str, revision: str | None, storage_options: dict | None = None):
    from ..storage import HubUnreachableError, MissingExtraError, locate

    register_url(target)
    url = resolve_target(target, revision)
    try:
        loc = locate(url, None, storage_options)
        loc.ensure_reachable()  # the Hub: one quick question first (HubUnreachableError when offline)
        fs, root = loc.fs(), loc.root
        if hasattr(fs, "resolve_path"):  # HfFileSystem: canonical "datasets/u/n@rev" as its listings spell it
            root = fs.resolve_path(root).unresolve()
        root = root.rstrip("/")
        isdir = fs.isdir(root)
    except (HubUnreachableError, MissingExtraError):
        raise
    except ValueError as e:  # locate's own one-line answer (e.g. no such folder, and not a URL or Hub id)
        if "://" not in target and not os.path.exists(target):
            raise CheckTargetError(scrub(f"{target}: no such folder, and not an fsspec URL or a Hub dataset id "
                                         "(OWNER/NAME)")) from None
        raise CheckTargetError(scrub(f"cannot read {url}: {e}")) from None
    except Exception as e:  # noqa: BLE001 - any failure to reach the target is one clear line
        raise CheckTargetError(scrub(f"cannot read {url}: {type(e).__name__}: {e}")) from None
    if not isdir:
        raise CheckTargetError(scrub(f"{url} is not a folder or repo"))
    return fs, root, url
