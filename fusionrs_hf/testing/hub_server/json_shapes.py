"""The JSON the Hub answers for a file or a folder (tree listings, paths-info) and the listing order."""

from __future__ import annotations

import hashlib

from .store import _Entry, _lfs_pointer


def _file_json(path: str, e: _Entry, expand: bool) -> dict:
    out: dict = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
    if e.lfs:
        out["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": len(_lfs_pointer(e.sha256, e.size))}
    if expand:
        out["lastCommit"] = {"id": e.last_commit[0], "title": e.last_commit[1], "date": e.last_commit[2]}
        out["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False},
                                     "pickleImportScan": None}
    return out


def _folder_json(path: str, files: dict[str, _Entry], expand: bool) -> dict:
    prefix = path + "/"
    inside = sorted((p, e.oid) for p, e in files.items() if p.startswith(prefix))
    out: dict = {"type": "directory", "oid": hashlib.sha1(repr(inside).encode()).hexdigest(), "size": 0, "path": path}
    if expand:
        latest = max((files[p].last_commit for p, _ in inside), key=lambda c: c[2], default=None)
        if latest is not None:
            out["lastCommit"] = {"id": latest[0], "title": latest[1], "date": latest[2]}
    return out


def _tree(files: dict[str, _Entry], path: str, recursive: bool) -> list[tuple[str, str]]:
    """(kind, path) entries under ``path`` ('' = root): direct children, or every descendant."""
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    out: dict[str, str] = {}
    for p in files:
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):].split("/")
        if recursive:
            for i in range(1, len(rest)):
                out.setdefault(prefix + "/".join(rest[:i]), "directory")
            out[p] = "file"
        else:
            out[prefix + rest[0]] = "file" if len(rest) == 1 else "directory"
    # folders first, then files, each sorted (as the Hub lists a tree)
    return sorted(((k, p) for p, k in out.items()), key=lambda t: (t[0] != "directory", t[1]))
