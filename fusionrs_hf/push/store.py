"""Pushing to any fsspec URL (:class:`_FsspecTarget`): atomic writes (temporary name, then rename), the
manifest of SHA-256 digests read back, and removing only the temporary files a dead push left."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

from ..atomic import atomic_open, tmp_target, writer_alive
from ..card import CARD_NAME, ShardInfo, shard_info
from ..card_assets import ASSET_PATHS
from ..errors import CliError
from ..layout import DEFAULT_LAYOUT, parse_shard_path
from ..safepath import check_write_under
from ..sources import REGISTRY_FILE
from ..storage import describe, locate
from .hub import _is_pushed_path, read_sample_ids
from .plan import (
    _CHUNK,
    MANIFEST_NAME,
    TMP_SUFFIX,
    LocalFile,
    PushError,
    PushPlan,
    RemoteFile,
    Transfer,
    _fmt_bytes,
    scrub,
)
from .sender import _Sender


def _is_managed(rel: str) -> bool:
    """Files push writes into an fsspec destination (and may therefore have left a temporary file for)."""
    return rel in (CARD_NAME, MANIFEST_NAME, REGISTRY_FILE, *ASSET_PATHS) or parse_shard_path(rel) is not None



def _stamp(info: dict) -> str | None:
    """What changes when an object is rewritten, as the store reports it: its ETag (S3, GCS, Azure), else its
    modification time (a local folder, most others); None where the store gives neither."""
    for key in ("ETag", "etag", "md5Hash", "content_md5"):
        if info.get(key):
            return f"{key}:{info[key]}"
    for key in ("mtime", "LastModified", "last_modified", "updated", "modified"):
        if info.get(key) is not None:
            return f"{key}:{info[key]}"
    return None

class _FsspecTarget:
    """Any fsspec URL (``file://``, ``s3://``, ``memory://``, ...): same plan, files copied one by one."""

    kind = "fsspec"

    def __init__(self, url: str, revision: str | None = None, storage_options: dict | None = None) -> None:
        if revision:
            raise CliError("--revision applies to Hub repos only, not to fsspec URLs")
        self.url = url
        self.storage_options = dict(storage_options or {})
        loc = locate(url, None, self.storage_options)  # a missing s3fs & co. is one line naming the extra
        self.fs, self.root = loc.fs(), loc.root.rstrip("/")
        self.manifest: dict[str, dict] = {}
        self.stale_tmp: list[str] = []
        self.warnings: list[str] = []
        self.revision = None
        self.wrote = False
        """Whether anything was written to the store yet (:meth:`create` is the first write)."""
        self.transfer = Transfer()
        """Every file push writes here is sent whole (a store has no object dedup push could rely on)."""

    @property
    def label(self) -> str:
        return scrub(self.url)  # printed, and written into the card: never with credentials

    @property
    def card_repo_id(self) -> str:
        return scrub(self.url)

    @property
    def card_location(self):
        """Where the card's Load snippet reads: this store, with its non-secret storage options."""
        return describe(scrub(self.url), self.storage_options)

    @property
    def _local(self) -> bool:
        protos = self.fs.protocol if isinstance(self.fs.protocol, tuple | list) else (self.fs.protocol,)
        return "file" in protos or "local" in protos

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def prepare(self, dry_run: bool) -> bool:
        return self.fs.exists(self.root)

    def create(self) -> None:
        self.wrote = True
        self.fs.makedirs(self.root, exist_ok=True)

    def _own_tmp(self, rel: str) -> bool:
        """A temporary file an earlier push made and left behind (never anybody else's ``*.fusionrs-tmp``)."""
        folder, _, name = rel.rpartition("/")
        got = tmp_target(name)
        if got is not None:  # .NAME.PID-RANDOM.fusionrs-tmp, as fusionrs_hf.atomic names them
            target = f"{folder}/{got[0]}" if folder else got[0]
            return _is_managed(target) and not (self._local and writer_alive(got[1]))
        # the name older versions of push used: NAME.fusionrs-tmp next to the file it was for
        return name.endswith(TMP_SUFFIX) and _is_managed(rel[: -len(TMP_SUFFIX)])

    def list(self) -> dict[str, RemoteFile]:
        if not self.fs.exists(self.root):
            return {}
        try:
            self.manifest = json.loads(self.fs.cat_file(self._full(MANIFEST_NAME))).get("files", {})
        except (FileNotFoundError, ValueError):
            self.manifest = {}
        out = {}
        for full, info in self.fs.find(self.root, detail=True).items():
            rel = full[len(self.root) + 1:] if full.startswith(self.root + "/") else full
            if rel.endswith(TMP_SUFFIX):
                if self._own_tmp(rel):
                    self.stale_tmp.append(full)
                continue
            if _is_pushed_path(rel):
                size = int(info.get("size") or 0)
                m = self.manifest.get(rel)
                # the manifest's digest holds while the object is the one push wrote: same size, and the same
                # ETag / modification time where the store reports one (a same-size rewrite by anyone else is
                # then hashed again, not taken at the manifest's word)
                ok = isinstance(m, dict) and m.get("size") == size and m.get("stamp", _stamp(info)) == _stamp(info)
                out[rel] = RemoteFile(rel, size, m["sha256"] if ok and isinstance(m.get("sha256"), str) else None)
        return out

    def _remote_sha256(self, rel: str) -> str:
        h = hashlib.sha256()
        with self.fs.open(self._full(rel), "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def same(self, local: LocalFile, remote: RemoteFile) -> bool:
        if remote.size != local.size:
            return False
        if remote.sha256:
            return remote.sha256 == local.sha256
        stamp = _stamp(self.fs.info(self._full(remote.relpath)))  # before the read: a rewrite during it shows
        sha = self._remote_sha256(remote.relpath)  # no manifest entry: hash once, remember it
        self.manifest[remote.relpath] = {"sha256": sha, "size": remote.size, "stamp": stamp}
        return sha == local.sha256

    def same_bytes(self, data: bytes, remote: RemoteFile) -> bool:
        return remote.size == len(data) and self.fs.cat_file(self._full(remote.relpath)) == data

    def remote_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._full(rel))

    def remote_shard_info(self, rel: str) -> ShardInfo | None:
        name = getattr(self, "layout", DEFAULT_LAYOUT).parse_shard_path(rel)
        return shard_info(self.fs, self.root, name) if name else None

    def remote_sample_ids(self, rel: str) -> list[str]:
        return read_sample_ids(self.fs, self._full(rel))

    def _write(self, rel: str, src: Path | bytes) -> None:
        """Write one file so that its final name never holds partial content."""
        dst = self._full(rel)
        if self._local:  # a folder of the destination that is a symlink to elsewhere: refused before writing
            check_write_under(self.fs._strip_protocol(self.root), self.fs._strip_protocol(dst))
        self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        if self._local:  # temporary sibling + fsync + rename + directory fsync (fusionrs_hf.atomic)
            with atomic_open(self.fs._strip_protocol(dst), "wb") as out:
                if isinstance(src, bytes):
                    out.write(src)
                else:
                    with open(src, "rb") as f:
                        shutil.copyfileobj(f, out, _CHUNK)
        elif isinstance(src, bytes):  # an object PUT is atomic already
            self.fs.pipe_file(dst, src)
        else:
            self.fs.put_file(str(src), dst)

    def _remote_digest(self, rel: str) -> tuple[int, str, str | None]:
        """(size, SHA-256, stamp) of the file as the destination has it now: the digest from the store's own
        SHA-256 checksum where it reports one, else by reading the file back; :func:`_stamp` of its info."""
        info = self.fs.info(self._full(rel))
        size = int(info.get("size") or 0)
        b64 = info.get("ChecksumSHA256") or info.get("checksum_sha256")
        if isinstance(b64, str) and "-" not in b64:  # S3 full-object checksum (not a multipart composite)
            try:
                return size, base64.b64decode(b64).hex(), _stamp(info)
            except ValueError:
                pass
        return size, self._remote_sha256(rel), _stamp(info)

    def _put_verified(self, rel: str, src: Path | bytes, size: int, sha256: str) -> None:
        """Write, read back, record in the manifest what the destination really holds; fail on a difference."""
        self._write(rel, src)
        if rel != MANIFEST_NAME:
            self.transfer.add(size, True)
        got_size, got_sha, stamp = self._remote_digest(rel)
        if rel != CARD_NAME:
            self.manifest[rel] = {"sha256": got_sha, "size": got_size, "stamp": stamp}
        if (got_size, got_sha) != (size, sha256):
            self._save_manifest()
            raise PushError(f"{self.label}/{rel} reads back as {got_size} bytes, sha256 {got_sha}, but "
                            f"{size} bytes, sha256 {sha256} were written; re-run the same command")

    def _save_manifest(self) -> None:
        data = json.dumps({"version": 1, "files": dict(sorted(self.manifest.items()))}, indent=1).encode()
        self._write(MANIFEST_NAME, data)

    def apply(self, plan: PushPlan, *, message: str | None, max_files: int, bar) -> list[str]:
        for full in self.stale_tmp:  # only leftovers of an earlier push (see _own_tmp)
            self.fs.rm_file(full)
        sender: _Sender = plan.sender
        done = 0
        for planned, _ in plan.upload:
            f = sender.take(planned)  # snapshot now (copy + hash, one read): that copy is what gets sent
            if f is not None:
                self._put_verified(f.relpath, f.path, f.size, f.sha256)
                sender.snapshot.drop(f.path)
            done += 1
            bar.update(planned.size)
            bar.set_description(f"push {done}/{plan.upload_files} files")
            if done % max_files == 0:
                self._save_manifest()
                bar.line(f"wrote {done}/{plan.upload_files} file(s), {_fmt_bytes(self.transfer.sent_bytes)}")
        if plan.sources != "unchanged":
            self._put_verified(REGISTRY_FILE, plan.sources_bytes, len(plan.sources_bytes),
                               hashlib.sha256(plan.sources_bytes).hexdigest())
            done += 1
            bar.update(len(plan.sources_bytes))
        planned_assets = {rel: len(plan.assets[rel]) for rel in plan.assets_to_send}  # what the bar's total counts
        planned_card = len(plan.readme_bytes) if plan.readme != "unchanged" else 0
        readme = sender.final_card()  # from what was actually written
        for rel, data in sender.final_assets().items():  # the card's pictures, before the card that shows them
            self._put_verified(rel, data, len(data), hashlib.sha256(data).hexdigest())
            if rel in planned_assets:
                done += 1
                bar.update(planned_assets.pop(rel))
        if readme is not None:  # after every shard it describes, before removing pruned ones
            self._put_verified(CARD_NAME, readme, len(readme), hashlib.sha256(readme).hexdigest())
            if planned_card:  # (a card re-rendered after a shard vanished was not among the planned files)
                done += 1
                bar.update(planned_card)
        bar.set_description(f"push {done}/{plan.upload_files} files")
        for rel in plan.delete:
            self.fs.rm_file(self._full(rel))
            self.manifest.pop(rel, None)
        self._save_manifest()
        t = self.transfer
        bar.line(f"wrote {t.sent_files} file(s), {_fmt_bytes(t.sent_bytes)}"
                 + (f"; deleted {len(plan.delete)}" if plan.delete else "") + (" (with README.md)" if readme else ""))
        return []
