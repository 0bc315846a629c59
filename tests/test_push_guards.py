"""What `fusionrs push` refuses, and where it sends what it sends.

- a folder whose `fusionrs build` was killed half-way (its shards each complete, its state saying the rest is
  missing) is refused by push and by `fusionrs card`, with one line; after the build is re-run both work;
- ``--storage-option endpoint=... token=...`` are the Hub push's endpoint and token (as for check and load):
  with two Hub servers, the files land only on the one the option names;
- a kept remote-only shard that shares a sample_id with the local shards (a rebuild that re-sharded) stops
  the push before anything is written; ``--prune`` is the way out;
- a destination URL with ``?`` / ``#`` is refused without showing the query;
- credentials the remote refuses (Hub 401/403, S3 without credentials) are exit 2 and never "resume";
- the rights summary lines up long codes, and the progress bar ends at its total.

Real components throughout: ``fusionrs`` processes with the real ``huggingface_hub`` client against
:class:`~fusionrs_hf.testing.hub_server.HubServer`, a real (killed) ``fusionrs build``, moto's S3 server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fusionrs_hf.card import write_card
from fusionrs_hf.testing.hub_server import HubServer

from .conftest import SAMPLE_SHARDS

TOKEN = "hf_GuardsServerToken0123456789"


def _cli(env, *args, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _error(proc: subprocess.CompletedProcess) -> str:
    """The one error line of a failed command (and nothing else on stderr)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], proc.stderr
    return lines[0]


def _clean_env(tmp_path: Path, **extra) -> dict:
    """A user's shell without a token or a stored login."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), FUSIONRS_HUB_TIMEOUT="10",
               FUSIONRS_PUSH_TMPDIR=str(tmp_path), **extra)
    return env


@pytest.fixture
def local(sample_repo, tmp_path) -> Path:
    return Path(shutil.copytree(sample_repo, tmp_path / "local"))


# ----------------------------------------------------------------------------- 1. an interrupted build


@pytest.fixture(scope="module")
def build_src(tmp_path_factory):
    from fusionrs_hf.testing.sources import make_fixture

    return make_fixture(tmp_path_factory.mktemp("guard_src"), size=64)


def _build_cmd(fx, out: Path) -> list[str]:
    args = ["build", "--index", str(fx.index_public), "--ir-root", str(fx.ir_root), "--out", str(out),
            "--rows-per-shard", "1", "--iraware", str(fx.iraware), "--quiet", "--workers", "1"]
    for a in fx.source_root_args():
        args += ["--source-root", a]
    return [*args, "--captions", *map(str, fx.caption_files)]


def test_an_interrupted_build_is_neither_pushed_nor_carded_until_it_is_finished(build_src, tmp_path):
    from fusionrs_hf.build import CRASH_ENV, STATE_DIR

    out = tmp_path / "bpart"
    env = _clean_env(tmp_path)
    killed = _cli({**env, CRASH_ENV: "5"}, *_build_cmd(build_src, out))
    assert killed.returncode == 137, killed.stderr  # hard-killed after 5 shards, as by kill -9
    planned = len(list((out / STATE_DIR / "plan").glob("*.jsonl")))
    assert planned > 5 and list(out.glob("data/*/*/*.parquet")) and not (out / "README.md").exists()

    mirror = tmp_path / "mirror"
    want = (f"{out}: a fusionrs build was interrupted here (or is still running): {STATE_DIR} lists {planned} "
            f"shards, 5 are done; re-run the build first")
    for args in (("push", str(out), f"file://{mirror}", "--quiet"),
                 ("push", str(out), f"file://{mirror}", "--quiet", "--skip-check"),
                 ("push", str(out), "me/half", "--dry-run"),
                 ("card", str(out))):
        proc = _cli(env, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert want in _error(proc) and proc.stdout == "", args
    assert not mirror.exists() and not (out / "README.md").exists()  # nothing written anywhere

    from fusionrs_hf.errors import CliError
    from fusionrs_hf.push import push_repo

    from .hub_double import HubDouble

    hub = HubDouble()
    with pytest.raises(CliError, match=re.escape(want)):
        push_repo(out, "me/half", api=hub, hub_fs=hub.fs)
    assert hub.calls == []  # the Hub is not even asked

    resumed = _cli(env, *_build_cmd(build_src, out))  # the build finished: both work, state folder and all
    assert resumed.returncode == 0, resumed.stderr
    assert (out / STATE_DIR).is_dir()
    assert _cli(env, "card", str(out)).returncode == 0
    pushed = _cli(env, "push", str(out), f"file://{mirror}", "--quiet")
    assert pushed.returncode == 0, pushed.stderr
    assert sorted(p.relative_to(mirror).as_posix() for p in mirror.glob("data/*/*/*.parquet")) == \
        sorted(p.relative_to(out).as_posix() for p in out.glob("data/*/*/*.parquet"))


# ----------------------------------------------------------------------------- 2. endpoint= and token=


def test_endpoint_and_token_options_decide_where_the_hub_push_goes(sample_repo, tmp_path):
    """HF_ENDPOINT names one server, ``endpoint=`` another (which wants a token, given only as ``token=``):
    every request, the listing, LFS uploads, commits and the footer reads of kept remote-only shards, goes
    to the one the option names."""
    with HubServer() as env_hub, HubServer(token=TOKEN) as named:
        env = _clean_env(tmp_path, **{k: v for k, v in env_hub.env().items() if k != "HF_TOKEN"})
        opts = ["--storage-option", f"endpoint={named.url}", "--storage-option", f"token={TOKEN}"]
        first = _cli(env, "push", str(sample_repo), "me/elsewhere", "--quiet", *opts)
        assert first.returncode == 0, first.stderr[-2000:]
        remote = named.files("me/elsewhere")
        assert sum(k.endswith(".parquet") for k in remote) == SAMPLE_SHARDS and "README.md" in remote
        assert named.count("PUT", r"^/lfs/") > 0 and TOKEN not in first.stdout + first.stderr

        fewer = Path(shutil.copytree(sample_repo, tmp_path / "fewer"))
        gone = sorted(fewer.glob("data/nwpu/train/base-*.parquet"))[-1]
        gone.unlink()  # a remote-only shard: its footer and sample ids are read from the named server
        write_card(fewer, sample=True)
        second = _cli(env, "push", str(fewer), "me/elsewhere", *opts)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "remote-only kept 1" in second.stdout and "1 remote shard(s) are not in the local repo" in second.stderr
        assert env_hub.requests == []  # HF_ENDPOINT's server was never asked anything

        no_token = _cli(env, "push", str(sample_repo), "me/other", "--quiet", "--storage-option",
                        f"endpoint={named.url}")
        assert no_token.returncode == 2 and "401" in _error(no_token) and "no token was sent" in _error(no_token)
        unreachable = _cli(env, "push", str(sample_repo), "me/other", "--quiet", "--storage-option",
                           "endpoint=http://127.0.0.1:1")
        assert unreachable.returncode == 2 and "http://127.0.0.1:1" in _error(unreachable)
        assert env_hub.requests == []


# ----------------------------------------------------------------------------- 3. duplicate sample ids


def _reshard(root: Path, folder: str = "data/nwpu/train") -> tuple[str, str]:
    """Merge the base shards of one split into ``-00000`` (a rebuild with more rows a shard): the remote's
    other shard names are gone locally, their rows are not. Returns (a shard now remote-only, one of its ids)."""
    shards = sorted((root / folder).glob("base-*.parquet"))
    assert len(shards) >= 2
    first_of_last = pq.read_table(shards[-1], columns=["sample_id"]).column(0)[0].as_py()
    table = pa.concat_tables([pq.read_table(p) for p in shards])
    for p in shards:
        p.unlink()
    pq.write_table(table, shards[0])
    write_card(root, sample=True)
    return shards[-1].relative_to(root).as_posix(), first_of_last


def test_a_kept_remote_shard_that_duplicates_local_rows_stops_the_push(local, tmp_path):
    with HubServer() as hub:
        env = _clean_env(tmp_path, **hub.env())
        assert _cli(env, "push", str(local), "me/dup", "--quiet").returncode == 0
        before = hub.files("me/dup")
        kept, sid = _reshard(local)
        refused = _cli(env, "push", str(local), "me/dup")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        line = _error(refused)
        assert f"remote {kept}" in line and f"sample_id {sid!r}" in line and "--prune" in line, line
        assert "nothing was uploaded" in line and "resume" not in line
        assert hub.files("me/dup") == before  # nothing written

        dry = _cli(env, "push", str(local), "me/dup", "--dry-run")
        assert dry.returncode == 2 and f"remote {kept}" in _error(dry)  # a dry run says so too
        pruned = _cli(env, "push", str(local), "me/dup", "--prune", "--quiet")
        assert pruned.returncode == 0, pruned.stderr
        check = _cli(env, "check", "hf://datasets/me/dup", "--fast", "--quiet")
        assert check.returncode == 0, check.stdout + check.stderr


def test_duplicate_guard_on_a_store_and_its_cost(local, tmp_path, monkeypatch):
    """The same on an fsspec destination (Python API); and a push without remote-only shards (the usual one)
    reads no sample_id column at all."""
    from fusionrs_hf.push import PushError, push_repo
    from fusionrs_hf.push import hub as push_hub
    from fusionrs_hf.push import store as push_store

    reads: list[str] = []
    real = getattr(push_hub, "read_sample_ids", None)

    def counting(fs, path):
        reads.append(path)
        return real(fs, path)

    monkeypatch.setattr(push_hub, "read_sample_ids", counting, raising=False)  # the local side, and the Hub's
    monkeypatch.setattr(push_store, "read_sample_ids", counting, raising=False)  # a store's
    dest = f"file://{tmp_path / 'store'}"
    push_repo(local, dest)
    assert push_repo(local, dest).plan.empty and reads == []  # re-push, no remote-only shard: nothing read

    store = tmp_path / "store"
    before = {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}
    kept, sid = _reshard(local)
    with pytest.raises(PushError, match=re.escape(f"remote {kept} ")) as exc:
        push_repo(local, dest)
    assert f"sample_id {sid!r}" in str(exc.value) and "--prune" in str(exc.value)
    assert {p: p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()} == before  # nothing written
    assert len(reads) == 1 + len(list((local / "data").rglob("*.parquet")))  # every local shard, the kept one
    res = push_repo(local, dest, prune=True)
    assert res.plan.delete == [kept]


# ----------------------------------------------------------------------------- 4. '?' and '#' in a destination


def test_a_destination_with_a_query_or_fragment_is_refused_without_showing_it(local, tmp_path):
    env = _clean_env(tmp_path)
    for dest, shown in ((f"file://{tmp_path}/q1?secret=QSecret12345", f"file://{tmp_path}/q1?..."),
                        ("memory://bkt/q1#QSecret12345", "memory://bkt/q1?..."),
                        ("hf://datasets/me/x?token=QSecret12345", "hf://datasets/me/x?..."),
                        ("s3://user:pa?QSecret12345@bkt/x?more", "s3://***@bkt/x?...")):
        proc = _cli(env, "push", str(local), dest, "--skip-check")
        assert proc.returncode == 2, (dest, proc.stdout, proc.stderr)
        line = _error(proc)
        assert line.startswith(f"fusionrs push: error: {shown}: a push destination takes no query string"), line
        assert "QSecret12345" not in proc.stdout + proc.stderr and "pa" not in line.split("***@")[0][-3:]
    assert not list(tmp_path.glob("q1*"))


def test_an_s3_destination_with_a_query_writes_no_object(local, tmp_path):
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    from fusionrs_hf.testing.s3_server import S3Server

    with S3Server() as s3:
        s3.create_bucket("bkt")
        s3.reset_log()
        env = _clean_env(tmp_path, **s3.env())
        proc = _cli(env, "push", str(local), "s3://bkt/q1?secret=QSecret12345", "--quiet",
                    "--storage-option", f"endpoint_url={s3.url}")
        assert proc.returncode == 2 and "s3://bkt/q1?...: a push destination" in _error(proc)
        assert "QSecret12345" not in proc.stderr and s3.count("PUT") == 0

        # 5. no credentials at all: exit 2, the hint, no "resume" (as check says 2)
        bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        bare.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
                    AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_DEFAULT_REGION="us-east-1")
        nocred = _cli(bare, "push", str(local), "s3://bkt/r", "--quiet", "--storage-option",
                      f"endpoint_url={s3.url}")
        assert nocred.returncode == 2, nocred.stderr
        line = _error(nocred)
        assert "credentials" in line and "--storage-option" in line and "resume" not in line, line
        assert s3.count("PUT") == 0


# ----------------------------------------------------------------------------- 5. refused credentials


def test_a_refused_token_is_unusable_input_not_a_push_to_resume(sample_repo, tmp_path):
    with HubServer(token=TOKEN) as hub:
        env = _clean_env(tmp_path, **{k: v for k, v in hub.env().items() if k != "HF_TOKEN"})
        wrong = _cli({**env, "HF_TOKEN": "hf_WrongToken000000000000"}, "push", str(sample_repo), "me/locked",
                     "--quiet")
        assert wrong.returncode == 2, wrong.stderr
        line = _error(wrong)
        assert "401" in line and "token was refused" in line and "resume" not in line, line
        assert "nothing was uploaded" in line and "hf_WrongToken" not in wrong.stderr
        none = _cli(env, "push", str(sample_repo), "me/locked", "--quiet")
        assert none.returncode == 2 and "no token was sent" in _error(none) and "resume" not in _error(none)


def test_a_403_names_write_access(local, tmp_path):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from fusionrs_hf.push import PushError, push_repo

    from .hub_double import HubDouble

    hub = HubDouble(token="hf_readonlytoken")

    def forbidden(*a, **k):
        url = "https://hub.example/api/datasets/me/x/commit/main"
        resp = httpx2.Response(403, request=httpx2.Request("POST", url))
        raise HfHubHTTPError("403 Forbidden", response=resp)

    hub.create_commit = forbidden
    with pytest.raises(PushError) as exc:
        push_repo(local, "me/x", api=hub, hub_fs=hub.fs)
    msg = str(exc.value)
    assert type(exc.value).__name__ == "PushAuthError", msg  # the CLI's exit 2
    assert "HTTP 403" in msg and "write access" in msg and "resume" not in msg, msg


# ----------------------------------------------------------------------------- 5. rights column, progress bar


def test_rights_summary_lines_up_long_codes(capsys):
    from fusionrs_hf.push.cli import _print_plan
    from fusionrs_hf.push.plan import PushPlan, PushResult

    plan = PushPlan(target="file:///x", revision=None)
    plan.rights = [{"source": "RSICD", "rights_code": "rsicd-redistribution-license-not-located", "rows": 17},
                   {"source": "NWPU", "rights_code": "nwpu", "rows": 1234567},
                   {"source": "RSITMD", "rights_code": "x" * 60, "rows": 3}]
    _print_plan(PushResult(ok=True, plan=plan, dry_run=True))
    out = capsys.readouterr().out.split("rights summary of the rows to upload", 1)[1]
    rows = [line for line in out.splitlines() if line.startswith("  ") and line[-1].isdigit()]
    assert len(rows) == 3 and len({len(r) for r in rows}) == 1, rows  # the counts end in one column
    assert len({r.index(code) for r, code in zip(rows, ("rsicd", "nwpu", "xxx"), strict=True)}) == 1


@pytest.mark.parametrize("dest", ["hub", "folder"])
def test_the_progress_bar_ends_at_its_total(local, tmp_path, capsys, dest):
    from fusionrs_hf.push import push_repo

    from .hub_double import HubDouble

    hub = HubDouble()
    if dest == "hub":
        res = push_repo(local, "me/bar", api=hub, hub_fs=hub.fs, progress=True, max_files_per_commit=10)
    else:
        res = push_repo(local, f"file://{tmp_path / 'bar'}", progress=True, max_files_per_commit=10)
    n = res.plan.upload_files
    assert n == SAMPLE_SHARDS + 1 + len(res.plan.assets)  # shards, the card, its pictures
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"push {n}/{n} files" in last and "100%" in last, last
