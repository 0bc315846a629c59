"""Issue 18: faults, races and hostile input end in a named error, never in silent corruption or a leak.

One test per class of the issue that this file covers (check exit codes, secrets, push snapshots, other
people's files, resume, stale plans, corrupt shards in the loader). Every test uses the real components:
the ``fusionrs`` CLI as a real subprocess where the exit code matters, the in-process Hub double for Hub
failures, a real HTTP server that echoes the token in its error bodies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pyarrow.parquet as pq
import pytest

from fusionrs_hf.card import write_card
from fusionrs_hf.demo import make_sample_repo
from fusionrs_hf.shards import rows_to_table, write_table

TINY = {"train": 1, "validation": 0, "test": 1}


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """``fusionrs ARGS`` as a real child process (stdout/stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "fusionrs_hf", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, **kw)


def _run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    p = _cli(*args, env=env)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _shards(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A clean, tiny repo (5 sources, train + test, one row per shard). Read-only: tests copy it."""
    return make_sample_repo(tmp_path_factory.mktemp("faults") / "tiny", counts=TINY, size=32)


@pytest.fixture(scope="session")
def leak_repo(tiny_repo, tmp_path_factory) -> Path:
    """``tiny_repo`` with a test row whose RGB bytes equal a train row's: one leak_identical_bytes finding."""
    root = Path(shutil.copytree(tiny_repo, tmp_path_factory.mktemp("faults") / "leak"))
    train = next(p for p in _shards(root) if "/train/" in p.as_posix())
    test = next(p for p in _shards(root) if "/test/" in p.as_posix())
    leaked = pq.read_table(train).to_pylist()[0]["rgb"]["bytes"]
    rows = pq.read_table(test).to_pylist()
    rows[0]["rgb"] = {"bytes": leaked, "path": rows[0]["rgb"]["path"]}
    rows[0]["rgb_sha256"] = None
    write_table(rows_to_table(rows, where=str(test)), test)
    write_card(root, sample=True, repo_id=str(root))
    return root


# ----------------------------------------------------------------------------------------- 9: exit codes


def test_check_with_findings_exits_1_every_time(leak_repo):
    """Item 9. The abort ("terminate called without an active exception", exit 134) came from an Arrow
    IO thread releasing a pre-buffered Python read after the interpreter began finalizing; 50 real runs,
    two at a time, must all exit 1 with the finding and no abort."""
    codes, aborts = [], []
    args = ("check", str(leak_repo), "--workers", "2", "--quiet")
    running = [_cli(*args) for _ in range(2)]
    started = 2
    while running:  # two at a time, a new run as soon as one ends
        p = running.pop(0)
        out, err = p.communicate(timeout=120)
        codes.append(p.returncode)
        if p.returncode != 1 or "terminate called" in err or "leak_identical_bytes" not in out:
            aborts.append((p.returncode, err[-300:]))
        if started < 50:
            running.append(_cli(*args))
            started += 1
    assert codes == [1] * 50, aborts[:3]


# ----------------------------------------------------------------------------------------- 5: resume


@pytest.fixture(scope="session")
def stream_repo(tmp_path_factory) -> Path:
    """20 train rows (4 per source, several shards) for the loader tests. Read-only."""
    return make_sample_repo(tmp_path_factory.mktemp("faults") / "stream", counts={"train": 4}, size=16, max_rows=3)


def _ids(loader) -> list[str]:
    return [sid for batch in loader for sid in batch["sample_id"]]


def test_resume_from_every_step_before_and_after_all_workers_delivered(stream_repo):
    """Item 5. A checkpoint taken at step k (0 <= k <= 2 x num_workers), including before some worker
    has delivered its first batch, resumes to exactly the rest of the epoch: no duplicates, no gaps,
    the uninterrupted order."""
    import pickle

    from fusionrs_hf.torch import make_dataloader

    workers = 2
    kw = dict(config="default", split="train", batch_size=3, num_workers=workers, image_size=8, shuffle=True,
              seed=4, shuffle_buffer=5, stateful=True)
    ref = make_dataloader(stream_repo, **kw)
    ref.set_epoch(1)
    want = _ids(ref)
    assert len(want) == 20
    for k in range(2 * workers + 1):
        first = make_dataloader(stream_repo, **kw)
        first.set_epoch(1)
        seen: list[str] = []
        it = iter(first)
        for _ in range(k):
            seen += next(it)["sample_id"]
        state = pickle.loads(pickle.dumps(first.state_dict()))  # as a checkpoint file would
        del it, first
        second = make_dataloader(stream_repo, **kw)
        second.load_state_dict(state)
        rest = _ids(second)
        assert seen + rest == want, f"resume from step {k}"
    # persistent workers: a checkpoint at the start of the next epoch, before a worker delivered
    loader = make_dataloader(stream_repo, **kw, persistent_workers=True)
    loader.set_epoch(0)
    _ids(loader)
    loader.set_epoch(1)
    it = iter(loader)
    seen = next(it)["sample_id"]
    state = loader.state_dict()
    del it, loader
    second = make_dataloader(stream_repo, **kw)
    second.load_state_dict(state)
    assert seen + _ids(second) == want


# ----------------------------------------------------------------------------------------- 4: secrets

SECRET = "hf_EchoedSecret0123456789/x+y"
URL_PASSWORD = "pw-Sekret-42"


def _leaks(text: str) -> list[str]:
    """The forms of the secrets that must never be shown, found in ``text``."""
    forms = {SECRET, quote(SECRET, safe=""), quote(SECRET, safe="").lower(), quote_plus(SECRET),
             quote(quote(SECRET, safe=""), safe=""), "EchoedSecret", URL_PASSWORD}
    return sorted(f for f in forms if f in text)


class _EchoHandler(BaseHTTPRequestHandler):
    """Every request fails, and the error repeats the caller's token in every way a server might."""

    def _fail(self) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.split(" ", 1)[-1]
        body = json.dumps({"error": f"bad credentials {auth!r}; token={token}; url-encoded {quote(token, safe='')}; "
                                    f"retry at {self.path}?access_token={quote(token)}"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Message", f"invalid token {token}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_PUT = _fail

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


_API_SCRIPT = """
import sys, traceback
from fusionrs_hf.check import check_repo
from fusionrs_hf.torch import make_dataloader
for name, call in (("check", lambda: check_repo("me/fusionrs", fast=True)),
                   ("loader", lambda: make_dataloader("me/fusionrs", num_workers=0))):
    try:
        call()
    except Exception as e:
        print(f"{name} raised {type(e).__name__}: {e}")
        traceback.print_exc()
    else:
        print(f"{name} did not raise")
"""


def test_no_secret_in_any_output_when_the_server_echoes_it(echo_server, tiny_repo, tmp_path, monkeypatch):
    """Item 4. A server that echoes the token (raw, URL-encoded, in a header) and credentials in URLs:
    nothing of them reaches stdout, stderr or an exception text, from the CLI or the Python API."""
    hub = {"HF_ENDPOINT": echo_server, "HF_HUB_OFFLINE": "0", "HF_TOKEN": SECRET, "HF_HUB_DISABLE_TELEMETRY": "1"}
    # the stored login instead of HF_TOKEN
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text(SECRET)
    stored = {**hub, "HF_TOKEN": "", "HF_HOME": str(home)}
    local = shutil.copytree(tiny_repo, tmp_path / "local")
    creds = f"memory://bob:{URL_PASSWORD}@bucket/fusionrs"
    runs = [
        (_run("check", "me/fusionrs", "--quiet", env=hub), 2),
        (_run("check", "me/fusionrs", "--fast", "--json", env=stored), 2),
        (_run("push", str(local), "me/fusionrs", "--quiet", env=hub), 2),  # a refused token: unusable input
        (_run("check", creds, "--quiet"), 2),
        (_run("push", str(local), creds, "--quiet", "--skip-check"), 2),  # refused: no credentials in a URL
    ]
    for res, code in runs:
        shown = res.stdout + res.stderr
        assert res.returncode == code, (res.args, shown[-500:])
        assert not _leaks(shown), (res.args, _leaks(shown), shown[-500:])
        assert "Traceback" not in res.stderr
        if code:
            errors = [line for line in res.stderr.splitlines() if ": error: " in line]
            assert len(errors) == 1 and res.stderr.strip() == errors[0], res.stderr  # one line
    assert "401" in runs[0][0].stderr and "me/fusionrs" in runs[0][0].stderr  # still says what failed
    assert "memory://***@bucket" in runs[3][0].stderr and "memory://***@bucket" in runs[4][0].stderr

    api = _run_python(_API_SCRIPT, env=hub)
    assert "check raised CheckTargetError" in api.stdout and "loader raised" in api.stdout, api.stdout + api.stderr
    assert not _leaks(api.stdout + api.stderr), api.stdout + api.stderr

    # the Python push API with the real client, in this process
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline; this one talks to the echo server
    from fusionrs_hf.push import PushError, push_repo

    with pytest.raises(PushError) as exc:
        push_repo(local, "me/fusionrs", api=HfApi(token=SECRET, endpoint=echo_server), skip_check=True)
    text = "".join(traceback.format_exception(exc.value))
    assert "401" in text and not _leaks(text), text


def _run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


# ----------------------------------------------------------------------------------------- 3: push snapshots


def _local_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in _shards(root)}


def _mutate_repo(root: Path) -> None:
    """What a build still running does to the repo: one shard rewritten with twice the rows (replaced by a
    rename), one removed, one added, the card re-rendered."""
    from fusionrs_hf.demo import sample_rows
    from fusionrs_hf.layout import shard_path
    from fusionrs_hf.shards import write_rows

    shards = _shards(root)
    grown, gone = shards[-1], shards[-2]
    rows = pq.read_table(grown).to_pylist()
    rows += [{**r, "sample_id": r["sample_id"] + "-again"} for r in rows]
    tmp = grown.with_name("rewrite.tmp")
    write_table(rows_to_table(rows, where=str(grown)), tmp)
    os.replace(tmp, grown)
    gone.unlink()
    new = [row for src, _, _, row in sample_rows(seed=9, counts={"train": 2}, size=32) if src == "NWPU"]
    write_rows([{**r, "sample_id": r["sample_id"] + "-b9", "ir_caption": None} for r in new],
               root / shard_path("NWPU", "train", "base", 0, "b9"))
    write_card(root, sample=True, repo_id=str(root))


def _sent_view(local: Path, planned: dict[str, bytes]) -> dict[str, bytes]:
    """The planned shards as they are now (rewritten ones new, removed ones absent)."""
    return {rel: (local / rel).read_bytes() for rel in planned if (local / rel).exists()}


def _materialize(files: dict[str, bytes], out: Path) -> Path:
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out


def _remote_ok(root: Path) -> None:
    """The remote, checked the way a user would: `fusionrs check --fast` passes (card counts = shards)."""
    from fusionrs_hf.check import check_repo

    rep = check_repo(str(root), fast=True, workers=1)
    assert rep.ok, [(f.kind, f.location(), f.message) for f in rep.findings]


def test_push_uploads_a_snapshot_while_the_repo_changes(tiny_repo, tmp_path, monkeypatch):
    """Item 3. The local repo changes in the middle of a push (after planning, between commits / files):
    the remote ends complete and consistent - each file exactly as snapshotted when it was sent, a card
    counting those bytes, each file verified on the remote, the fsspec manifest holding the digests the
    remote files really have. A file that vanishes while push plans: exit 2, one line naming it, remote
    untouched."""
    import hashlib

    from fusionrs_hf import push as push_mod
    from fusionrs_hf.cli import main
    from fusionrs_hf.push import push_repo

    from .hub_double import HubDouble

    # --- Hub (the in-process double), four files a commit: several commits
    local = Path(shutil.copytree(tiny_repo, tmp_path / "local"))
    before = _local_bytes(local)
    hub = HubDouble()
    fired = []

    def change_once(additions):
        if not fired:
            fired.append(True)
            _mutate_repo(local)

    hub.on_preupload = change_once
    res = push_repo(local, "me/fusionrs", api=hub, hub_fs=hub.fs, max_files_per_commit=4)
    assert fired and len(hub.history("me/fusionrs")) > 3 and "get_paths_info" in hub.calls
    remote = hub.files("me/fusionrs")
    # each file as it was when it was sent: the rewritten one new, the removed one absent, the added one
    # not planned (next push), the others as before; and a card that counts exactly that
    assert {k: v for k, v in remote.items() if k.endswith(".parquet")} == _sent_view(local, before)
    _remote_ok(_materialize(remote, tmp_path / "hub-remote"))
    assert any("changed after the plan" in w for w in res.warnings)
    assert any("disappeared during the push" in w for w in res.warnings)
    again = push_repo(local, "me/fusionrs", api=hub, hub_fs=hub.fs, max_files_per_commit=4, prune=True)
    assert again.ok and {k for k in hub.files("me/fusionrs") if k.endswith(".parquet")} == set(_local_bytes(local))
    _remote_ok(_materialize(hub.files("me/fusionrs"), tmp_path / "hub-remote-2"))

    # --- fsspec (file://): the repo changes between two file writes
    local = Path(shutil.copytree(tiny_repo, tmp_path / "local2"))
    before = _local_bytes(local)
    target = tmp_path / "mirror"
    real_write = push_mod._FsspecTarget._write
    writes = []

    def write_and_change(self, rel, src):
        writes.append(rel)
        if len(writes) == 3:
            _mutate_repo(local)
        return real_write(self, rel, src)

    monkeypatch.setattr(push_mod._FsspecTarget, "_write", write_and_change)
    push_repo(local, f"file://{target}")
    monkeypatch.undo()
    assert _local_bytes(target) == _sent_view(local, before)
    _remote_ok(target)
    manifest = json.loads((target / ".fusionrs-push.json").read_text())["files"]
    assert manifest and all(m["sha256"] == hashlib.sha256((target / rel).read_bytes()).hexdigest()
                            for rel, m in manifest.items())

    # --- a store that silently keeps other bytes than it was sent: named, and the manifest says what it holds
    real_put = push_mod._FsspecTarget._write

    def lossy_write(self, rel, src):
        real_put(self, rel, src)
        if rel.endswith(".parquet") and "lossy" not in writes:
            writes.append("lossy")
            full = Path(self._full(rel))
            full.write_bytes(full.read_bytes()[:-1] + b"X")

    lossy = tmp_path / "lossy"
    monkeypatch.setattr(push_mod._FsspecTarget, "_write", lossy_write)
    with pytest.raises(push_mod.PushError, match=r"reads back as .* were written") as exc:
        push_repo(local, f"file://{lossy}")
    monkeypatch.undo()
    bad = next(p for p in _shards(lossy))
    assert bad.relative_to(lossy).as_posix() in str(exc.value)
    manifest = json.loads((lossy / ".fusionrs-push.json").read_text())["files"]
    assert manifest[bad.relative_to(lossy).as_posix()]["sha256"] == hashlib.sha256(bad.read_bytes()).hexdigest()
    assert not (lossy / "README.md").exists()  # no card for a remote that does not hold what it describes
    push_repo(local, f"file://{lossy}")  # the re-run repairs it
    _remote_ok(lossy)

    # --- a shard vanishes between listing and reading: exit 2, one line naming it, nothing written
    local = Path(shutil.copytree(tiny_repo, tmp_path / "local3"))
    victim = _shards(local)[3].relative_to(local).as_posix()
    real_names = push_mod.flow._local_names

    def names_then_delete(root):
        out = real_names(root)
        (local / victim).unlink()
        return out

    monkeypatch.setattr(push_mod.flow, "_local_names", names_then_delete)
    hub = HubDouble(token="hf_dummy")
    monkeypatch.setattr(push_mod.flow, "make_api", lambda token: hub)
    monkeypatch.setenv("HF_TOKEN", "hf_dummytoken")
    untouched = tmp_path / "untouched"
    for dest in ("me/fusionrs", f"file://{untouched}"):
        import io
        from contextlib import redirect_stderr

        err = io.StringIO()
        with redirect_stderr(err):
            rc = main(["push", str(local), dest, "--quiet", "--skip-check"])
        lines = err.getvalue().strip().splitlines()
        assert rc == 2 and len(lines) == 1 and victim in lines[0] and "disappeared" in lines[0], lines
        shutil.copy(tiny_repo / victim, local / victim)
    assert not hub.repos and "preupload_lfs_files" not in hub.calls and not untouched.exists()


# ----------------------------------------------------------------------------------------- 7: other people's files


def test_push_leaves_other_peoples_files_and_says_when_it_replaces_a_readme(tiny_repo, tmp_path):
    """Item 7 (push). Only push's own leftovers are removed (not any ``*.fusionrs-tmp``, not a temporary
    file of a push still running); replacing a README.md that fusionrs did not write is said in one line."""
    from fusionrs_hf.atomic import tmp_path as atomic_tmp
    from fusionrs_hf.push import push_repo

    from .hub_double import HubDouble

    local = Path(shutil.copytree(tiny_repo, tmp_path / "local"))
    dest = tmp_path / "dest"
    first, second = (p.relative_to(local).as_posix() for p in _shards(local)[:2])
    (dest / "notes").mkdir(parents=True)
    (dest / Path(first).parent).mkdir(parents=True)
    (dest / "README.md").write_text("# Our mirror\n\nHand-written notes.\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        def tmp_of(rel: str, pid: int) -> Path:
            name = atomic_tmp(dest / rel).name.split(".")
            name[-2] = f"{pid}-{name[-2].split('-', 1)[1]}"
            return dest / Path(rel).parent / ".".join(name)

        theirs = [dest / "notes/draft.fusionrs-tmp", dest / "data/scratch.fusionrs-tmp",
                  dest / "data/.notes.txt.1-0123456789ab.fusionrs-tmp", tmp_of(first, live.pid)]
        ours = [tmp_of(first, dead.pid), dest / (second + ".fusionrs-tmp")]
        for p in theirs + ours:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"partial")
        res = _run("push", str(local), f"file://{dest}", "--quiet")
        assert res.returncode == 0, res.stderr
        assert all(p.exists() for p in theirs), [p for p in theirs if not p.exists()]
        assert not any(p.exists() for p in ours)
        warned = [line for line in res.stderr.splitlines() if "README.md" in line]
        assert len(warned) == 1 and "not written by fusionrs" in warned[0], res.stderr
        assert "# FusionRS" in (dest / "README.md").read_text()
        again = _run("push", str(local), f"file://{dest}", "--quiet")
        assert again.returncode == 0 and "README.md" not in again.stderr  # ours now: nothing to say
    finally:
        live.kill()
        live.wait()

    # Hub: the same line (the old README stays in the repo history)
    hub = HubDouble()
    hub.create_repo("me/fusionrs", repo_type="dataset", private=True)
    from huggingface_hub import CommitOperationAdd

    hub.create_commit("me/fusionrs", [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=b"# Mine\n")],
                      commit_message="their card", repo_type="dataset")
    res = push_repo(local, "me/fusionrs", api=hub, hub_fs=hub.fs)
    warned = [w for w in res.warnings if "README.md" in w]
    assert len(warned) == 1 and "not written by fusionrs" in warned[0] and "history" in warned[0]
    assert not [w for w in push_repo(local, "me/fusionrs", api=hub, hub_fs=hub.fs).warnings if "README" in w]


# ----------------------------------------------------------------------------------------- 10: stale plans


def _train_ids(root: Path) -> list[str]:
    return sorted(sid for p in sorted(root.glob("data/*/train/*.parquet"))
                  for sid in pq.read_table(p, columns=["sample_id"]).column("sample_id").to_pylist())


def _rewrite_with_more_rows(path: Path, tag: str) -> None:
    rows = pq.read_table(path).to_pylist()
    rows += [{**r, "sample_id": f"{r['sample_id']}-{tag}"} for r in rows]
    tmp = path.with_name(path.name + ".tmp")
    write_table(rows_to_table(rows, where=str(path)), tmp)
    os.replace(tmp, path)


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, False), (2, True)])
def test_shard_rewritten_between_epochs_is_replanned(stream_repo, tmp_path, workers, persistent):
    """Item 10. A shard rewritten (and one removed) between epochs: the next epoch warns, re-plans,
    reads every row of the new files exactly once, and ``len(loader)`` is the new batch count."""
    from fusionrs_hf.torch import make_dataloader

    root = Path(shutil.copytree(stream_repo, tmp_path / "repo"))
    loader = make_dataloader(root, config="default", split="train", batch_size=4, num_workers=workers,
                             image_size=8, persistent_workers=persistent)

    def batches(n_rows: int) -> int:
        return -(-n_rows // 4)  # whole batches per worker: at most one short batch per epoch

    assert sorted(_ids(loader)) == _train_ids(root) and len(loader) == batches(20)
    shards = sorted(root.glob("data/*/train/*.parquet"))
    gone = set(pq.read_table(shards[-1], columns=["sample_id"]).column(0).to_pylist())
    _rewrite_with_more_rows(shards[0], "e1")
    shards[-1].unlink()
    with pytest.warns(RuntimeWarning, match=r"changed since they were planned \(rewritten: .*removed: "):
        loader.set_epoch(1)
    want = _train_ids(root)
    assert any(w.endswith("-e1") for w in want) and not gone & set(want)
    assert len(loader) == batches(len(want))
    got = _ids(loader)
    assert sorted(got) == want and len(got) == len(set(got))
    # without set_epoch: the next pass looks again by itself
    _rewrite_with_more_rows(shards[1], "e2")
    with pytest.warns(RuntimeWarning, match="rewritten"):
        got = _ids(loader)
    assert sorted(got) == _train_ids(root) and len(loader) == batches(len(got))


def test_set_epoch_replans_after_a_pass_in_a_plain_dataloader(stream_repo, tmp_path):
    """A plain torch DataLoader with workers runs every pass in its workers; set_epoch right after planning asks
    the store nothing, but once a pass has run, a shard rewritten since is still noticed and re-planned."""
    from torch.utils.data import DataLoader

    from fusionrs_hf.torch import FusionRSIterable

    root = Path(shutil.copytree(stream_repo, tmp_path / "repo"))
    ds = FusionRSIterable(root, "default", "train", batch_size=None, image_size=8)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    ds.set_epoch(0)  # nothing ran since planning
    assert sorted(b["sample_id"] for b in loader) == _train_ids(root)
    _rewrite_with_more_rows(sorted(root.glob("data/*/train/*.parquet"))[0], "e1")
    with pytest.warns(RuntimeWarning, match="rewritten"):
        ds.set_epoch(1)
    got = [b["sample_id"] for b in loader]
    assert sorted(got) == _train_ids(root) and len(got) == len(set(got)) > 20


# ----------------------------------------------------------------------------------------- 8: corrupt shards in the loader


def _corrupt_page(path: Path, column: str = "caption") -> None:
    """Overwrite the header of a data page of ``column`` in row group 0."""
    rg = pq.ParquetFile(path).metadata.row_group(0)
    off = next(rg.column(i).data_page_offset for i in range(rg.num_columns) if rg.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    data[off:off + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))


def test_corrupt_page_or_truncated_footer_is_named_or_skipped(stream_repo, tmp_path):
    """Item 8 (loader). A corrupt data page, and a footer truncated after (and before) planning: the
    error names shard and row; with on_error="skip" those rows are skipped and counted, every other row
    is delivered, and nothing raises."""
    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.torch import make_dataloader

    root = Path(shutil.copytree(stream_repo, tmp_path / "repo"))
    shards = sorted(root.glob("data/*/train/*.parquet"))
    paged, cut = shards[1], shards[4]
    rel_paged, rel_cut = (p.relative_to(root).as_posix() for p in (paged, cut))
    n_paged, n_cut = (pq.ParquetFile(p).metadata.num_rows for p in (paged, cut))
    kw = dict(config="default", split="train", batch_size=4, image_size=8)
    raising = make_dataloader(root, **kw)
    skipping = make_dataloader(root, **kw, on_error="skip", num_workers=2)
    _corrupt_page(paged)
    cut.write_bytes(cut.read_bytes()[:-40])  # after planning: found when the shard is opened

    # the page walk (limits) finds a broken page header before Arrow reads the page; broken page data, Arrow
    with pytest.raises(DecodeError, match=rf"shard={rel_paged} row=0: (cannot read row group 0: OSError|row group 0 "
                                          r"column '\w+': malformed page header)"):
        _ids(raising)
    got = _ids(skipping)  # in two workers: the count comes back through shared memory
    assert skipping.skipped == n_paged + n_cut
    assert len(got) == 20 - n_paged - n_cut and len(set(got)) == len(got)

    # a truncated footer found when planning
    with pytest.raises(DecodeError, match=rf"shard={rel_cut}: cannot read the parquet footer"):
        make_dataloader(root, **kw)
    with pytest.warns(RuntimeWarning, match=rf"skipping 1 unreadable shard.*{rel_cut}"):
        planned = make_dataloader(root, **kw, on_error="skip")
    assert planned.dataset.skipped_shards == [rel_cut]
    with pytest.warns(RuntimeWarning, match="unreadable data"):
        assert len(_ids(planned)) == 20 - n_paged - n_cut
    assert planned.skipped == n_paged


# ----------------------------------------------------------------------------------------- 6 (helper): atomic writes


def test_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    """The helper push (and the build) write published files with: on ENOSPC (injected at the fsync, where a
    full disk surfaces for buffered data) the destination keeps its old content and no temporary file is left."""
    import errno

    from fusionrs_hf import atomic

    dst = tmp_path / "README.md"
    dst.write_text("old card\n")
    dst.chmod(0o640)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        atomic.atomic_write(dst, "new card\n" * 1000)
    assert dst.read_text() == "old card\n" and sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
    monkeypatch.undo()
    atomic.atomic_write(dst, b"new card\n")
    assert dst.read_text() == "new card\n" and (dst.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
    tmp = atomic.tmp_path(dst)
    assert atomic.is_tmp_for(tmp.name, "README.md") and atomic.tmp_target(tmp.name) == ("README.md", os.getpid())
    assert not atomic.is_tmp_for("README.md.fusionrs-tmp", "README.md")
