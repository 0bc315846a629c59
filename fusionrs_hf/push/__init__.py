"""Upload a local FusionRS repo folder to a Hub dataset repo (or any fsspec URL), sending only new or
changed shards, with the regenerated README.md in the same commit as the last shards it describes.

What it does, in order:
  1. runs `fusionrs check --fast` on the local folder and refuses a failing repo (--skip-check overrides);
  2. plans: lists the remote files with their SHA-256 (LFS/xet oid, or git blob id for small files) and
     compares them with the local shards; prints the plan (files, bytes) and a rights summary of the rows
     it will upload (per source / rights_code), flushed before anything is written (with --json: on stderr,
     and in the JSON object at the end; --quiet --json: only the JSON);
  3. uploads new/changed shards in commits of at most 50 files; the last commit also carries README.md
     (configs + dataset_info counts re-rendered from every shard the remote will hold) and, with --prune,
     the deletions, so a reader never sees a card that names missing files. On a terminal a progress bar
     shows it; otherwise (a log, CI) stderr gets one line per commit (``push: commit 2/3 ...``).

The last line says what the commits hold and what was really sent: ``done: 25 file(s), 8.2 MB committed in
1 commit(s); 1.3 MB sent, 21 file(s), 6.9 MB already on the remote (from an earlier push)`` (a re-run after an
interruption finds the LFS objects the failed run uploaded). To a folder or fsspec URL: ``... written``. Which objects the Hub already holds is asked with the Git LFS batch
API before uploading; where that cannot be asked it says only "committed". With xet uploads (hf_xet
installed, HF_HUB_DISABLE_XET unset) what is sent can be less still (chunk dedup): "at most". ``--json``
carries ``sent_files``/``sent_bytes``/``already_remote_files``/``already_remote_bytes`` (null: unknown);
``uploaded_files``/``uploaded_bytes`` count what was committed.

What is uploaded is a snapshot: right before a file is sent (one commit's files at a time on the Hub, one
file at a time otherwise) it is copied to a private temporary folder (``$FUSIONRS_PUSH_TMPDIR``, else the
system one) while it is hashed, in one read; the upload, the remote verification and the card all use that
copy. The card is rendered last, from the footers of exactly the bytes sent (plus the unchanged shards,
whose counts come from the same read that hashed them, and the remote-only ones kept), so a repo that
changes during the push (a build still writing) never leaves a remote whose card disagrees with its shards;
a file rewritten after the plan is sent as it is then, one that vanished is left out, and both are named in a
warning. A file that vanishes, keeps changing or is not complete parquet while push plans ends the push
before anything is written, with one line naming it (exit 2). After each commit (Hub: size and LFS SHA-256
or git blob id of every path, via ``get_paths_info``) or write (fsspec: size, and the SHA-256 of the bytes
read back) the remote is checked against the snapshot; the fsspec manifest records the digest read back.

The snapshot folder is ``fusionrs-push-PID-HOST-RANDOM``; one left by a push that was killed (SIGKILL, OOM)
is removed by the next push once that process is gone (same host and user, never a link or anything not
named so; older versions' ``fusionrs-push-RANDOM`` folders are left alone).

Push removes only temporary files it made (``.NAME.PID-RANDOM.fusionrs-tmp`` beside a file it manages,
from a push that is no longer running, or the older ``NAME.fusionrs-tmp``), and says so in one line when it
replaces a destination README.md that fusionrs did not write.

Re-running after an interruption uploads only what is missing and ends in the same remote state; a re-push
of an unchanged repo uploads 0 bytes and makes no commit. Remote files are never deleted without --prune
(and --prune only deletes parquet files under data/). New Hub repos are created private unless --public.
Shards that exist only on the remote are kept, and the card counts them (their parquet footers are read);
one that holds a sample_id a local shard holds too (a rebuild that re-sharded) stops the push before anything
is written (exit 2: --prune removes the remote-only shards). A folder whose `fusionrs build` was interrupted
or is still running (its .fusionrs-build lists shards that are not done) is refused (exit 2), whatever the
check says: re-run the build first. A destination URL with '?' or '#' is refused (exit 2).
The Hub endpoint is --storage-option endpoint=..., else HF_ENDPOINT; the token is --storage-option token=...,
else HF_TOKEN or the stored login (`hf auth login`), and is never printed. Against an endpoint on this
machine (127.0.0.1, localhost: e.g. `python -m fusionrs_hf.testing.hub_server`) none is required: the server
answers. A token the Hub refuses (HTTP 401/403) or a store without usable credentials is exit 2, one line
saying where credentials come from.

Examples:
  fusionrs push ./my-fusionrs me/fusionrs --dry-run
  fusionrs push ./my-fusionrs me/fusionrs --message "add RS5M batch b2"
  fusionrs push ./my-fusionrs s3://bucket/fusionrs --prune
  fusionrs push ./my-fusionrs file:///data/mirror/fusionrs
"""

from __future__ import annotations

# The parts (this docstring is `fusionrs push --help`): .plan (limits, errors, the plan and the result), .local
# (hashing, the snapshot folder), .sender (each file's snapshot right before it is sent, the final card), .hub and
# .store (the two kinds of target), .flow (one push, start to end), .cli (options, output, exit codes).
from .cli import configure_parser, run
from .flow import _parse_target, push_repo
from .hub import _HubTarget, _is_pushed_path, make_api
from .local import file_sha256, git_blob_id, read_local, rights_summary
from .plan import (
    MANIFEST_NAME,
    MAX_FILES_PER_COMMIT,
    SNAPSHOT_ENV,
    TERMS_WARNING,
    TMP_SUFFIX,
    UPLOAD_GROUP,
    CheckFailed,
    LocalFile,
    LocalRepoError,
    PushError,
    PushHubUnreachable,
    PushPlan,
    PushResult,
    RemoteFile,
    scrub,
)
from .store import _FsspecTarget

__all__ = ["push_repo", "PushResult", "PushPlan", "PushError", "PushHubUnreachable", "CheckFailed", "LocalRepoError",
           "scrub", "rights_summary", "read_local", "git_blob_id", "MAX_FILES_PER_COMMIT", "TERMS_WARNING",
           "configure_parser", "run"]

# Also importable from here, as from the single-module version. To replace one in a test, patch the module that
# calls it (``make_api`` and ``_local_names``: ``fusionrs_hf.push.flow``); patching this package changes nothing.
_COMPAT = (_HubTarget, _FsspecTarget, _is_pushed_path, _parse_target, make_api, file_sha256, LocalFile, RemoteFile,
           MANIFEST_NAME, SNAPSHOT_ENV, TMP_SUFFIX, UPLOAD_GROUP)
