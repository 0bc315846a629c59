"""What `fusionrs push` tells while and after it runs, and what it leaves behind.

- the plan and the rights summary come out (flushed) before the first upload, so a push stopped with Ctrl-C
  has said what it was publishing; without a terminal, one line per commit on stderr; ``--json`` keeps stdout
  one JSON object;
- after an interrupted push, the re-run reports what it sent apart from what the remote already held;
- the snapshot folder of a push killed with SIGKILL is removed by the next push, and nothing else is;
- ``python -m fusionrs_hf.testing.hub_server`` serves from a shell, and push needs no token against it.

Pushes run as real ``fusionrs`` processes with the real ``huggingface_hub`` client, against
:class:`~fusionrs_hf.testing.hub_server.HubServer` on 127.0.0.1 (started and stopped here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusionrs_hf.card_assets import ASSET_PATHS
from fusionrs_hf.push.local import SNAPSHOT_PREFIX, _host_tag, sweep_stale_snapshots
from fusionrs_hf.push.plan import _fmt_bytes
from fusionrs_hf.testing.hub_server import HubServer

from .conftest import SAMPLE_SHARDS
from .hub_double import HubDouble

FILES = SAMPLE_SHARDS + 1 + len(ASSET_PATHS)
"""What a first push of the sample commits: its shards, the card and the card's pictures (28)."""


@pytest.fixture(scope="module")
def hub():
    """A server that needs no token (as `python -m fusionrs_hf.testing.hub_server` runs it)."""
    with HubServer() as server:
        yield server


@pytest.fixture
def env(hub, tmp_path):
    """A user's shell pointed at the server: no HF_TOKEN, no stored login, a snapshot folder of its own."""
    snap = tmp_path / "snap"
    snap.mkdir()
    out = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    out.update(hub.env(), HF_HOME=str(tmp_path / "hf-home"), FUSIONRS_HUB_TIMEOUT="10",
               FUSIONRS_PUSH_TMPDIR=str(snap))
    return out


def _push(env, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "push", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _start(env, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fusionrs_hf.cli", "push", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait(cond, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _puts(hub: HubServer, repo: str) -> list:
    return [r for r in hub.requests if r.method == "PUT" and r.path.startswith(f"/lfs/datasets/{repo}/")]


# ----------------------------------------------------------------------------- 1. the plan comes first


def test_plan_and_rights_are_out_before_the_upload_and_ctrl_c_keeps_them(hub, env, sample_repo):
    repo = "me/interrupted"
    hub.latency_s = 0.2  # slow enough to stop it mid-upload
    try:
        proc = _start(env, str(sample_repo), repo, "--max-files-per-commit", "10")
        try:
            _wait(lambda: _puts(hub, repo), "the first LFS upload")
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        hub.latency_s = 0.0
    assert proc.returncode == 130, err[-2000:]
    assert "README.md" not in hub.files(repo)  # it really was stopped before the end
    lines = out.splitlines()
    assert lines[0] == f"push for hf://datasets/{repo} (will be created):", out
    assert "rights summary of the rows to upload" in out and "rs5m-item-rights-unconfirmed" in out
    assert "note: The terms of the source datasets" in out and "done:" not in out
    assert "interrupted; re-run the same command to resume" in err


def test_without_a_terminal_each_commit_is_a_line_and_json_stays_one_object(hub, env, sample_repo):
    text = _push(env, str(sample_repo), "me/lines", "--max-files-per-commit", "10")
    assert text.returncode == 0, text.stderr[-2000:]
    commits = [line for line in text.stderr.splitlines() if line.startswith("push: commit ")]
    assert [c.split(" ")[2] for c in commits] == ["1/3", "2/3", "3/3"], text.stderr
    sizes = [int(m[1]) for c in commits if (m := re.search(r": ([0-9]+) file\(s\), [0-9.]+ KB sent", c))]
    assert sizes == [10, 10, FILES - 20], commits
    assert commits[-1].endswith("(with README.md)")
    m = re.fullmatch(rf"done: {FILES} file\(s\), (\S+ \S+) committed in 3 commit\(s\); (\S+ \S+) sent",
                     text.stdout.splitlines()[-1])
    assert m and m[1] == m[2], text.stdout  # a first push sends everything it commits

    js = _push(env, str(sample_repo), "me/json", "--json", "--max-files-per-commit", "10")
    assert js.returncode == 0, js.stderr[-2000:]
    res = json.loads(js.stdout)  # stdout is the one JSON object, nothing else
    assert res["ok"] and len(res["commits"]) == 3 and res["uploaded_files"] == FILES
    assert res["sent_files"] == FILES and res["sent_bytes"] == res["uploaded_bytes"]  # a first push sends it all
    assert res["already_remote_files"] == 0 and res["already_remote_bytes"] == 0
    assert "push for hf://datasets/me/json (will be created):" in js.stderr  # the plan, for the person watching
    assert "rights summary of the rows to upload" in js.stderr
    assert sum(line.startswith("push: commit ") for line in js.stderr.splitlines()) == 3

    quiet = _push(env, str(sample_repo), "me/json", "--json", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and json.loads(quiet.stdout)["plan"]["upload"] == []


# ----------------------------------------------------------------------------- 2. sent vs already there


def test_resume_reports_bytes_sent_apart_from_objects_the_remote_had(hub, env, sample_repo):
    repo = "me/resume"
    failed = hub.inject(500, method="POST", path=rf"^/api/datasets/{repo}/commit/", skip=1, times=1)
    first = _push(env, str(sample_repo), repo, "--max-files-per-commit", "10")
    hub.clear_faults()
    assert first.returncode == 1 and failed.hits == 1, first.stderr[-2000:]
    before = hub.files(repo)  # what the first commit holds
    committed = sum(p.endswith(".parquet") for p in before)
    orphans = hub.lfs_objects(repo) - committed  # uploaded for the failed commit, never committed
    assert committed == 10 and orphans == 10

    hub.reset_log()
    second = _push(env, str(sample_repo), repo, "--max-files-per-commit", "10")
    assert second.returncode == 0, second.stderr[-2000:]
    remote = hub.files(repo)
    total = sum(len(v) for p, v in remote.items() if p not in before)  # 15 shards, 2 pictures, the card
    sent = sum(r.bytes_in for r in _puts(hub, repo)) + len(remote["README.md"])  # LFS bodies + the inline card
    assert len(_puts(hub, repo)) == SAMPLE_SHARDS - committed + len(ASSET_PATHS) - orphans  # only missing objects
    assert second.stdout.splitlines()[-1] == (
        f"done: {FILES - committed} file(s), {_fmt_bytes(total)} committed in 2 commit(s); {_fmt_bytes(sent)} sent, "
        f"{orphans} file(s), {_fmt_bytes(total - sent)} already on the remote (from an earlier push)")
    lines = [line for line in second.stderr.splitlines() if line.startswith("push: commit ")]
    assert len(lines) == 2 and "already on the remote" in lines[0], second.stderr  # the re-sent batch


@pytest.mark.parametrize("xet", [False, True])
def test_objects_uploaded_before_a_crash_are_not_offered_again(hub, sample_repo, tmp_path, monkeypatch, xet):
    """The re-run asks the LFS store which objects it holds and commits those as pointers: they are not
    handed to ``preupload_lfs_files`` (no upload-mode request, no second batch request, no PUT). In process,
    to see exactly what the real client is handed."""
    from huggingface_hub import HfApi, HfFileSystem, constants

    from fusionrs_hf.push import PushError, push_repo

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the server offers LFS, not xet
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline; this one talks to the server
    monkeypatch.setenv("FUSIONRS_PUSH_TMPDIR", str(tmp_path))
    repo = f"me/offered-{int(xet)}"
    offered: list[str] = []
    real = HfApi.preupload_lfs_files

    def spy(self, repo_id, additions, **kw):
        additions = list(additions)
        offered.extend(op.path_in_repo for op in additions if not op._is_uploaded)
        return real(self, repo_id, additions=additions, **kw)

    monkeypatch.setattr(HfApi, "preupload_lfs_files", spy)
    if xet:  # where the client would upload through xet, the LFS store's answer is not trusted: offered as before
        from fusionrs_hf.push.hub import _HubTarget

        monkeypatch.setattr(_HubTarget, "_xet", lambda self: True)

    def push():
        return push_repo(sample_repo, repo, api=HfApi(endpoint=hub.url), max_files_per_commit=10,
                         hub_fs=HfFileSystem(endpoint=hub.url, skip_instance_cache=True))

    failed = hub.inject(500, method="POST", path=rf"^/api/datasets/{repo}/commit/", skip=1, times=1)
    with pytest.raises(PushError) as crash:
        push()
    hub.clear_faults()
    assert failed.hits == 1, crash.value
    committed = {p for p in hub.files(repo) if p.endswith(".parquet")}
    first = list(offered)
    orphans = set(first[10:20])  # the second commit's files: uploaded, never committed
    assert len(committed) == 10 and hub.lfs_objects(repo) == 20 and not orphans & committed

    offered.clear()
    hub.reset_log()
    res = push()
    assert res.ok and set(res.plan.unchanged) == committed
    if xet:
        assert orphans <= set(offered) and res.ok
        return
    assert not orphans & set(offered), sorted(orphans & set(offered))
    shards = {p for p in offered if p.endswith(".parquet")}
    every = {p.relative_to(sample_repo).as_posix() for p in (sample_repo / "data").rglob("*.parquet")}
    assert shards == every - committed - orphans and len(shards) == SAMPLE_SHARDS - 20
    assert len(_puts(hub, repo)) == len(shards) + 2  # the five missing shards and the card's two pictures
    remote = hub.files(repo)
    assert all(remote[p] == (sample_repo / p).read_bytes() for p in orphans)  # committed, and the bytes right


def test_a_double_that_cannot_tell_is_reported_as_committed(sample_repo, tmp_path, monkeypatch, capsys):
    from fusionrs_hf import push as push_mod
    from fusionrs_hf.cli import main

    local = Path(shutil.copytree(sample_repo, tmp_path / "local"))
    api = HubDouble(token="hf_dummy")
    monkeypatch.setattr(push_mod.flow, "make_api", lambda token: api)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    assert main(["push", str(local), "me/double", "--quiet"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(rf"done: {FILES} file\(s\), [0-9.]+ MB committed in 1 commit\(s\)", last), last  # no "sent"


# ----------------------------------------------------------------------------- 3. stale snapshot folders


def test_a_killed_push_leaves_a_snapshot_that_the_next_push_removes_and_nothing_else(hub, env, sample_repo,
                                                                                     tmp_path):
    snap = Path(env["FUSIONRS_PUSH_TMPDIR"])
    repo = "me/killed"
    hub.latency_s = 0.2
    try:
        proc = _start(env, str(sample_repo), repo, "--max-files-per-commit", "10")
        try:
            _wait(lambda: any(p.name.startswith(SNAPSHOT_PREFIX) for p in snap.iterdir()), "the snapshot folder")
        finally:
            proc.kill()  # SIGKILL: no cleanup runs
            proc.communicate(timeout=30)
    finally:
        hub.latency_s = 0.0
    (left,) = list(snap.iterdir())
    assert left.name == f"{SNAPSHOT_PREFIX}{proc.pid}-{_host_tag()}-{left.name[-8:]}"
    dead = proc.pid
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not push's")
    decoys = {
        "old": snap / f"{SNAPSHOT_PREFIX}abcd1234",  # an older version's name: no pid to check
        "live": snap / f"{SNAPSHOT_PREFIX}{os.getpid()}-{_host_tag()}-live0000",  # its push (this test) runs
        "host": snap / f"{SNAPSHOT_PREFIX}{dead}-00000000-other000",  # made on another machine
        "open": snap / f"{SNAPSHOT_PREFIX}{dead}-{_host_tag()}-open0000",  # readable by others: not mkdtemp's
    }
    for d in decoys.values():
        d.mkdir(mode=0o700)
        (d / "f").write_text("x")
    decoys["open"].chmod(0o755)
    link = snap / f"{SNAPSHOT_PREFIX}{dead}-{_host_tag()}-link0000"
    link.symlink_to(outside, target_is_directory=True)
    plain = snap / f"{SNAPSHOT_PREFIX}{dead}-{_host_tag()}-file0000"
    plain.write_text("a file, not a folder")

    again = _push(env, str(sample_repo), repo, "--max-files-per-commit", "10")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not left.exists()
    assert f"note: removed {left}, the snapshot folder of a push that no longer runs" in again.stderr
    assert all((d / "f").read_text() == "x" for d in decoys.values())
    assert link.is_symlink() and (outside / "keep.txt").read_text() == "not push's"
    assert plain.read_text() == "a file, not a folder"
    assert sorted(p.name for p in snap.iterdir()) == sorted([*(d.name for d in decoys.values()), link.name,
                                                             plain.name])  # and its own folder is gone too


def test_sweep_leaves_a_running_pushs_folder(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = tmp_path / f"{SNAPSHOT_PREFIX}{child.pid}-{_host_tag()}-abcdefgh"
        mine.mkdir(mode=0o700)
        assert sweep_stale_snapshots(tmp_path) == [] and mine.is_dir()
    finally:
        child.kill()
        child.wait()
    assert sweep_stale_snapshots(tmp_path) == [str(mine)] and not mine.exists()


# ----------------------------------------------------------------------------- 4. the server from a shell


def test_hub_server_command_line_and_a_push_without_token(tmp_path, sample_repo):
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    server = subprocess.Popen([sys.executable, "-m", "fusionrs_hf.testing.hub_server", "--latency-ms", "100",
                               "--bandwidth-mbps", "0.8"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=base)
    try:
        exports = {}
        while "HF_UPDATE_DOWNLOAD_COUNTS" not in exports:
            line = server.stdout.readline()
            assert line, server.stderr.read()
            if line.startswith("export "):
                k, v = line[len("export "):].strip().split("=", 1)
                exports[k] = v
        assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+", exports["HF_ENDPOINT"])
        assert exports["HF_HUB_DISABLE_XET"] == "1" and exports["HF_HUB_OFFLINE"] == "0"
        assert "HF_TOKEN" not in exports  # it needs none, and push asks for none on a loopback endpoint
        env = {**base, **exports, "HF_HOME": str(tmp_path / "hf-home"), "FUSIONRS_HUB_TIMEOUT": "10"}
        t0 = time.monotonic()
        res = _push(env, str(sample_repo), "me/demo", "--quiet", "--json")
        assert res.returncode == 0, res.stderr[-2000:]
        assert json.loads(res.stdout)["uploaded_files"] == FILES and time.monotonic() - t0 > 1.0  # 100 ms a request
        import urllib.request

        url = f"{exports['HF_ENDPOINT']}/datasets/me/demo/resolve/main/README.md"
        t0 = time.monotonic()
        with urllib.request.urlopen(url, timeout=30) as r:
            card = r.read()
        took = time.monotonic() - t0
        assert b"# FusionRS" in card and took >= 0.1 + len(card) / 100_000 * 0.8  # latency + 0.8 Mbps cap
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
        assert "stopped" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()
        server.stderr.close()


def test_hub_server_refuses_a_bad_port():
    res = subprocess.run([sys.executable, "-m", "fusionrs_hf.testing.hub_server", "--port", "70000"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stdout == "" and "--port 70000" in res.stderr


def test_a_server_that_wants_a_token_says_so_in_one_line(tmp_path, sample_repo):
    with HubServer(token="hf_ServerOnlyToken000") as server:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update({k: v for k, v in server.env().items() if k != "HF_TOKEN"},
                   HF_HOME=str(tmp_path / "hf-home"), FUSIONRS_HUB_TIMEOUT="10")
        res = _push(env, str(sample_repo), "me/locked", "--quiet")
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert res.returncode == 2 and len(errors) == 1, res.stderr  # unusable input: re-running changes nothing
    assert "401" in errors[0] and "no token was sent: set HF_TOKEN" in errors[0] and "resume" not in errors[0]


def test_only_loopback_endpoints_go_without_a_token():
    from fusionrs_hf.push.flow import _loopback

    for ep in ("http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", "http://127.3.2.1"):
        assert _loopback(ep), ep
    for ep in ("https://huggingface.co", "http://10.0.0.1:80", "http://localhost.example.com", "http://[::2]"):
        assert not _loopback(ep), ep
