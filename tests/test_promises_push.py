"""Issue 15: `fusionrs push` promises checked on what the Hub double is handed, not on what it stores
(the double deduplicates LFS objects by itself, so "bytes uploaded" cannot show a re-send)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fusionrs_hf import check as check_mod
from fusionrs_hf import push as push_mod
from fusionrs_hf.card import write_card
from fusionrs_hf.cli import main
from fusionrs_hf.demo import make_sample_repo
from fusionrs_hf.push import PushError, push_repo
from fusionrs_hf.shards import rows_to_table, write_table

from .hub_double import HubDouble

REPO = "me/fusionrs"


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    """65 one-row shards (5 sources x (11 train + 1 validation + 1 test)): more than one default commit."""
    return make_sample_repo(tmp_path_factory.mktemp("promise_push") / "many",
                            counts={"train": 11, "validation": 1, "test": 1}, size=16, max_rows=1)


@pytest.fixture(scope="module")
def fifty_shards(tmp_path_factory) -> Path:
    return make_sample_repo(tmp_path_factory.mktemp("promise_push") / "fifty",
                            counts={"train": 8, "validation": 1, "test": 1}, size=16, max_rows=1)


@pytest.fixture
def local(sample_repo, tmp_path) -> Path:
    return Path(shutil.copytree(sample_repo, tmp_path / "local"))


def _shards(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in (root / "data").rglob("*.parquet"))


def _recorder(hub: HubDouble) -> list[list[str]]:
    handed: list[list[str]] = []
    hub.on_preupload = lambda additions: handed.append([op.path_in_repo for op in additions])
    return handed


def _commits(hub: HubDouble) -> list[list[str]]:
    """The files each commit after the repo's initial one adds or changes."""
    out, prev = [], {}
    for c in hub.history(REPO):
        out.append(sorted(p for p, data in c.files.items() if prev.get(p) != data))
        prev = c.files
    return out[1:]


def _check_commits(hub: HubDouble, local: Path) -> list[int]:
    """Every commit holds at most 50 files, as few commits as that allows, README.md (and the card's
    pictures) in the last one together with shards; returns the commit sizes."""
    commits = _commits(hub)
    sizes = [len(c) for c in commits]
    total = sum(sizes)
    assert total == len(_shards(local)) + len([p for p in hub.files(REPO) if not p.endswith(".parquet")]) - 1
    assert max(sizes) == 50 and len(commits) == -(-total // 50), sizes  # the limit is 50, and it is used
    assert "README.md" in commits[-1] and any(p.endswith(".parquet") for p in commits[-1])
    assert all("README.md" not in c for c in commits[:-1])
    assert sorted(p for c in commits for p in c if p.endswith(".parquet")) == _shards(local)
    return sizes


# ----------------------------------------------------------------------------------------- commits of 50


def test_default_is_50_files_a_commit(many_shards):
    assert len(_shards(many_shards)) == 65
    hub = HubDouble()
    res = push_repo(many_shards, REPO, api=hub, hub_fs=hub.fs)  # no max_files_per_commit: the default
    assert res.ok and len(res.commits) == 2
    _check_commits(hub, many_shards)


def test_exactly_50_shards_still_fit_the_limit_with_the_card(fifty_shards):
    assert len(_shards(fifty_shards)) == 50
    hub = HubDouble()
    push_repo(fifty_shards, REPO, api=hub, hub_fs=hub.fs)
    assert len(_check_commits(hub, fifty_shards)) == 2  # 50 shards + README.md (+ pictures) > 50 files


def test_cli_push_default_commit_size(many_shards, monkeypatch, capsys):
    hub = HubDouble(token="hf_dummy")
    monkeypatch.setattr(push_mod.flow, "make_api", lambda token: hub)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    assert main(["push", str(many_shards), REPO, "--quiet"]) == 0
    _check_commits(hub, many_shards)
    assert "in 2 commit(s)" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------- the check is --fast


def test_pre_push_check_is_the_fast_one(local, monkeypatch):
    calls = []
    real = check_mod.check_repo

    def spy(target, **kw):
        calls.append(kw)
        return real(target, **kw)

    monkeypatch.setattr(check_mod, "check_repo", spy)
    # a defect only the full check sees (the same RGB bytes in train and test): the fast check passes it
    train = next(p for p in (local / "data").rglob("*.parquet") if "/train/" in p.as_posix())
    test = next(p for p in (local / "data").rglob("*.parquet") if "/test/" in p.as_posix())
    rows = pq.read_table(test).to_pylist()
    rows[0]["rgb"] = {"bytes": pq.read_table(train).to_pylist()[0]["rgb"]["bytes"], "path": rows[0]["rgb"]["path"]}
    rows[0]["rgb_sha256"] = None
    write_table(rows_to_table(rows), test)
    write_card(local, sample=True)
    assert not real(str(local), workers=1).ok  # the full check would refuse it
    hub = HubDouble()
    res = push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=30)
    assert res.ok and res.check["mode"] == "fast" and res.check["ok"] is True
    assert len(calls) == 1 and calls[0].get("fast") is True
    # --skip-check: no check at all
    calls.clear()
    push_repo(local, REPO, api=HubDouble(), hub_fs=HubDouble().fs, skip_check=True)
    assert calls == []


# ----------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("failure", [{"fail_on_commit": 2}, {"fail_on_commit": 3}])
def test_files_of_completed_commits_are_not_handed_again(local, failure):
    hub = HubDouble()
    for k, v in failure.items():
        setattr(hub, k, v)
    handed = _recorder(hub)
    with pytest.raises(PushError):
        push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=8)
    committed = {p for p in hub.files(REPO) if p.endswith(".parquet")}
    assert committed and len(committed) < 27
    hub.fail_on_commit = None
    handed.clear()
    res = push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=8)
    assert res.ok and set(res.plan.unchanged) == committed
    again = {p for batch in handed for p in batch if p.endswith(".parquet")}
    assert not again & committed  # what the remote already holds is not sent again
    assert again == set(_shards(local)) - committed


# An interrupted push's uploaded objects are not offered again on the re-run: over real HTTP, with the real
# client (which asks the LFS store), in tests/test_push_reporting.py
# (test_objects_uploaded_before_a_crash_are_not_offered_again).


# ----------------------------------------------------------------------------------------- targets, rights


def test_target_parsing_by_hand():
    from fusionrs_hf.errors import CliError
    from fusionrs_hf.push import _parse_target

    assert _parse_target("me/fusionrs", None) == ("me/fusionrs", None, True)
    assert _parse_target("hf://datasets/me/fusionrs/", None) == ("me/fusionrs", None, True)
    assert _parse_target("hf://datasets/me/fusionrs@dev", None) == ("me/fusionrs", "dev", True)
    assert _parse_target("hf://datasets/me/fusionrs@feat@2", "feat@2") == ("me/fusionrs", "feat@2", True)
    assert _parse_target("s3://bucket/x", "v1") == ("s3://bucket/x", "v1", False)
    assert _parse_target("/data/mirror/../fusionrs", None) == ("file:///data/fusionrs", None, False)  # a folder
    for bad in ("hf://models/me/x", "me", "a/b/c", "hf://datasets/me/fusionrs@dev"):
        with pytest.raises(CliError):
            _parse_target(bad, "main" if bad.endswith("@dev") else None)


def test_rights_summary_counts_rows_without_a_code(local):
    from fusionrs_hf.push import rights_summary

    path = sorted((local / "data").rglob("*.parquet"))[0]
    rows = pq.read_table(path).to_pylist()
    rows[0]["rights_code"] = None
    write_table(rows_to_table(rows), path)
    got = {(r["source"], r["rights_code"]): r["rows"] for r in rights_summary([path])}
    assert got[(rows[0]["source"], "(none)")] == 1 and sum(got.values()) == len(rows)


def test_an_existing_public_repo_stays_public_and_push_says_so(local):
    hub = HubDouble()
    hub.create_repo(REPO, repo_type="dataset", private=False)
    res = push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=30)
    assert res.ok and hub.repos[REPO].private is False
    assert any(w.startswith(f"{REPO} exists and is public; push does not change the visibility") for w in res.warnings)


def test_prune_deletes_every_remote_only_shard_and_message_names_the_commits(local):
    hub = HubDouble()
    push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=30, message="first upload")
    assert [c.message for c in hub.history(REPO)][1:] == ["first upload"]
    gone = _shards(local)[:3]
    for rel in gone:
        (local / rel).unlink()
    write_card(local, sample=True)
    res = push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=30, prune=True, message="prune")
    assert sorted(res.plan.delete) == gone and not set(gone) & set(hub.files(REPO))
    assert hub.history(REPO)[-1].message == "prune"


def test_a_repo_with_its_own_source_pushes_its_declaration(local):
    import hashlib
    import json

    from fusionrs_hf.layout import shard_path
    from fusionrs_hf.shards import write_rows

    decl = {"schema_version": "fusionrs-sources-v1", "sources": [
        {"name": "Drone", "title": "Our drone survey", "terms": "ours", "rights_code": "own-cc-by"}]}
    (local / "fusionrs_sources.json").write_text(json.dumps(decl))
    row = pq.read_table(sorted((local / "data").rglob("base-*.parquet"))[0]).to_pylist()[0]
    sid = "drone-1"
    write_rows([{**row, "source": "Drone", "sample_id": sid, "ir_caption": None, "rights_code": "own-cc-by",
                 "joint_group_id": "joint-group:" + hashlib.sha256(sid.encode()).hexdigest()[:24]}],
               local / shard_path("RS5M", "train", "base", 0).replace("rs5m", "drone"),
               sources=("RS5M", "SkyScript", "NWPU", "RSICD", "RSITMD", "Drone"))
    write_card(local, sample=True)
    hub = HubDouble()
    res = push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=40)
    assert res.ok and hub.files(REPO)["fusionrs_sources.json"] == (local / "fusionrs_sources.json").read_bytes()
    assert "data/drone/train/base-main-00000.parquet" in hub.files(REPO)
    assert push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=40).plan.empty


class _ReadmeUnreadable:
    """The Hub double's file system, except that the remote README.md cannot be read."""

    def __init__(self, fs):
        self.fs = fs

    def open(self, path, mode="rb"):
        if path.endswith("/README.md"):
            raise OSError("read failed")
        return self.fs.open(path, mode)

    def size(self, path):
        return self.fs.size(path)


@pytest.mark.parametrize("readable", [True, False])
def test_replacing_someone_elses_readme_is_announced(local, readable):
    from huggingface_hub import CommitOperationAdd

    hub = HubDouble()
    hub.create_repo(REPO, repo_type="dataset", private=True)
    hub.create_commit(REPO, [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=b"# Mine\n")],
                      commit_message="theirs", repo_type="dataset")
    fs = hub.fs if readable else _ReadmeUnreadable(hub.fs)
    res = push_repo(local, REPO, api=hub, hub_fs=fs, max_files_per_commit=30)
    said = [w for w in res.warnings if "README.md" in w]
    assert len(said) == 1 and "which was not written by fusionrs" in said[0]
    assert said[0].endswith("(the repo history keeps the old one)")


def test_snapshot_copies_take_room_for_one_commit(local, tmp_path, monkeypatch):
    tmp = tmp_path / "snap"
    tmp.mkdir()
    monkeypatch.setenv("FUSIONRS_PUSH_TMPDIR", str(tmp))
    hub = HubDouble()
    seen = []
    hub.on_preupload = lambda additions: seen.append(sum(1 for p in tmp.rglob("*") if p.is_file()))
    push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=6)
    assert len(seen) >= 5 and max(seen) <= 6, seen  # copies of one commit at a time, never the whole repo


def test_files_changed_during_the_push_are_named(local):
    hub = HubDouble()
    push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=30)
    shards = _shards(local)
    up, later, still = shards[0], shards[-1], shards[5]
    for rel in (up, later):  # two shards to upload again, in two commits
        rows = pq.read_table(local / rel).to_pylist()
        rows[0]["caption"] = "a new caption"
        write_table(rows_to_table(rows), local / rel)
    write_card(local, sample=True)
    touched = []

    def change(additions):
        if not touched:  # during the first commit: one upload-to-be and one unchanged shard change on disk
            for rel in (later, still):
                rows = pq.read_table(local / rel).to_pylist()
                rows[0]["caption"] = "changed while pushing"
                write_table(rows_to_table(rows), local / rel)
                touched.append(rel)

    hub.on_preupload = change
    res = push_repo(local, REPO, api=hub, hub_fs=hub.fs, max_files_per_commit=2, skip_check=True)
    assert res.ok and touched
    assert any(w.startswith(f"local {later} changed after the plan") for w in res.warnings)
    assert any(w.startswith(f"local {still} changed during the push") for w in res.warnings)
