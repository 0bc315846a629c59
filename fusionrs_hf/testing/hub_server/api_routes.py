"""The ``/api/...`` routes of the handler (:class:`_ApiRoutes`, mixed into :class:`~.handler._Handler`): whoami,
repo creation, repo info, tree, paths-info, preupload, commit, branches, refs and commits."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

from .errors import _HubError
from .json_shapes import _file_json, _folder_json, _tree
from .store import _Commit, _lfs_pointer, _Repo

if TYPE_CHECKING:
    from .server import HubServer

_Answer = tuple  # (JSON body, HTTP status, extra headers or None): what a route hands back to the handler
_PAGE = 1000
_PAGE_EXPAND = 50


class _ApiRoutes:
    hub: HubServer

    def _api(self, method: str, segs: list[str], q: dict, body: bytes) -> int:
        hub = self.hub
        if segs == ["whoami-v2"]:
            if self.hub.token and not self._authorized():
                raise _HubError(401, "Invalid user token")
            return self._json({"type": "user", "id": "0", "name": hub.user, "fullname": hub.user, "orgs": [],
                               "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})
        if segs == ["validate-yaml"] and method == "POST":
            return self._json({"errors": [], "warnings": []})
        if segs == ["repos", "create"] and method == "POST":
            self._require_write()
            data = json.loads(body or b"{}")
            name, org = data.get("name"), data.get("organization") or hub.user
            repo_type = data.get("type") or "model"
            private = data.get("private", data.get("visibility") == "private")
            repo_id = f"{org}/{name}"
            with hub._lock:
                hub._create(repo_type, repo_id, bool(private))
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self._json({"url": f"{hub.url}/{prefix}{repo_id}", "name": repo_id, "id": repo_id})
        if len(segs) == 2 and segs[0] in ("models", "datasets", "spaces"):  # a one-part id ("gpt2", "tyny")
            raise _HubError(404, "Repository Not Found", "RepoNotFound")
        if len(segs) < 3 or segs[0] not in ("models", "datasets", "spaces"):
            raise _HubError(404, f"no route for /api/{'/'.join(segs)}")
        repo_type, repo_id, rest = segs[0][:-1], f"{segs[1]}/{segs[2]}", segs[3:]
        auth = self._authorized()
        with hub._lock:  # the answer is made under the lock and sent after it (sending may be throttled)
            reply = self._api_repo(method, repo_type, repo_id, rest, q, body, auth)
        if reply is None:
            raise _HubError(404, f"no route for {method} /api/{'/'.join(segs)}")
        return self._json(*reply)

    def _api_repo(self, method: str, repo_type: str, repo_id: str, rest: list[str], q: dict, body: bytes,
                  auth: bool):
        """(JSON, status, headers) of a repo endpoint, or None when there is no such endpoint."""
        hub = self.hub
        repo = hub._get_repo(repo_type, repo_id, auth)
        if not rest or rest[0] == "revision":
            if method != "GET":
                raise _HubError(405, "method not allowed")
            commit = hub._commit(repo, rest[1] if len(rest) > 1 else None)
            return self._info(repo, commit, blobs=_flag(q, "blobs")), 200, None
        what, args = rest[0], rest[1:]
        if what == "tree" and method == "GET" and args:
            return self._tree(repo, args[0], "/".join(args[1:]), q)
        if what == "paths-info" and method == "POST" and args:
            return self._paths_info(repo, args[0], body)
        if what == "preupload" and method == "POST" and args:
            self._require_write()
            return self._preupload(repo, args[0], body)
        if what == "commit" and method == "POST" and args:
            self._require_write()
            return self._commit_post(repo, args[0], body)
        if what == "branch" and args:
            self._require_write()
            return self._branch(repo, method, args[0], body)
        if what == "refs" and method == "GET":
            return ({"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o}
                                            for b, o in sorted(repo.branches.items())],
                               "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o}
                                        for t, o in sorted(repo.tags.items())], "converts": []}), 200, None
        if what == "commits" and method == "GET" and args:
            c: _Commit | None = hub._commit(repo, args[0])
            out = []
            while c is not None:
                out.append({"id": c.oid, "title": c.title, "message": c.description, "date": c.date,
                            "authors": [{"user": hub.user}]})
                c = repo.commits.get(c.parent) if c.parent else None
            return out, 200, None
        return None

    # -- endpoints -------------------------------------------------------------------------------

    def _info(self, repo: _Repo, commit: _Commit, *, blobs: bool) -> dict:
        siblings = []
        for p, e in sorted(commit.files.items()):
            s: dict = {"rfilename": p}
            if blobs:
                s.update(size=e.size, blobId=e.oid)
                if e.lfs:
                    s["lfs"] = {"sha256": e.sha256, "size": e.size, "pointerSize": len(_lfs_pointer(e.sha256, e.size))}
            siblings.append(s)
        author = repo.repo_id.split("/", 1)[0]
        return {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id, "author": author,
                "sha": commit.oid, "lastModified": commit.date, "createdAt": repo.created, "private": repo.private,
                "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "usedStorage": sum(e.size for e in commit.files.values())}

    def _tree(self, repo: _Repo, rev: str, path: str, q: dict) -> _Answer:
        commit = self.hub._commit(repo, rev)
        files = commit.files
        path = path.strip("/")
        if path and path in files:
            raise _HubError(404, f"{path} is a file, not a directory", "EntryNotFound")
        if path and not any(p.startswith(path + "/") for p in files):
            raise _HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        expand = _flag(q, "expand")
        entries = _tree(files, path, _flag(q, "recursive"))
        page = _PAGE_EXPAND if expand else _PAGE
        start = int((q.get("cursor") or ["0"])[0] or 0)
        chunk = entries[start:start + page]
        out = [_file_json(p, files[p], expand) if k == "file" else _folder_json(p, files, expand) for k, p in chunk]
        headers = {}
        if start + page < len(entries):
            base = f"{self.hub.url}/api/{repo.repo_type}s/{repo.repo_id}/tree/{quote(rev, safe='')}"
            if path:
                base += "/" + quote(path, safe="")
            params = "&".join(f"{k}={quote(v[0])}" for k, v in sorted(q.items()) if k != "cursor")
            headers["Link"] = f'<{base}?{params}&cursor={start + page}>; rel="next"'
        return out, 200, headers

    def _paths_info(self, repo: _Repo, rev: str, body: bytes) -> _Answer:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            data = json.loads(body or b"{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            paths, expand = form.get("paths", []), (form.get("expand") or ["False"])[0].lower() in ("1", "true")
        files = self.hub._commit(repo, rev).files
        out = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                out.append(_file_json(p, files[p], expand))
            elif p == "" or any(f.startswith(p + "/") for f in files):
                out.append(_folder_json(p, files, expand))
        return out, 200, None

    def _preupload(self, repo: _Repo, rev: str, body: bytes) -> _Answer:
        data = json.loads(body or b"{}")
        files = self.hub._commit(repo, rev).files
        out = []
        for f in data.get("files", []):
            path, size = f["path"], int(f.get("size") or 0)
            lfs = self.hub._is_lfs_path(files, path, size)
            old = files.get(path)
            remote_oid = None
            if old is not None:
                remote_oid = old.sha256 if old.lfs else old.oid
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": remote_oid})
        return {"files": out, "commitOid": self.hub._commit(repo, rev).oid}, 200, None

    def _commit_post(self, repo: _Repo, rev: str, body: bytes) -> _Answer:
        header: dict = {}
        ops: list[tuple] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                content = value.get("content", "")
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                ops.append(("file", value["path"], data))
            elif key == "lfsFile":
                ops.append(("lfsFile", value["path"], value["oid"], value.get("size")))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, value["path"]))
            else:
                raise _HubError(400, f"unknown commit operation {key!r}")
        if not header:
            raise _HubError(400, "the commit payload has no header")
        commit = self.hub._apply(repo, rev, header.get("summary") or "commit", header.get("description") or "",
                                 header.get("parentCommit"), ops)
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return ({"success": True, "commitOid": commit.oid, "commitMessage": commit.title,
                 "commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{commit.oid}",
                 "hookOutput": "", "pullRequestUrl": None}, 200, None)

    def _branch(self, repo: _Repo, method: str, name: str, body: bytes) -> _Answer:
        if method == "DELETE":
            if name not in repo.branches:
                raise _HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            del repo.branches[name]
            return {}, 200, None
        if method != "POST":
            raise _HubError(405, "method not allowed")
        if name in repo.branches:
            raise _HubError(409, f"Reference already exists: refs/heads/{name}")
        data = json.loads(body or b"{}")
        start = self.hub._commit(repo, data.get("startingPoint"))
        repo.branches[name] = start.oid
        return {}, 200, None


def _flag(q: dict, name: str) -> bool:
    v = (q.get(name) or ["false"])[0].lower()
    return v in ("1", "true", "yes")
