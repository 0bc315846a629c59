"""Issue 5: `fusionrs push` (plan by SHA-256, upload only new/changed shards, README last, resumable, safe)."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import shutil
import traceback
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

from fusionrs_hf import push as push_mod
from fusionrs_hf.card import card_configs, render_card, scan_repo, write_card
from fusionrs_hf.card_assets import ASSET_PATHS
from fusionrs_hf.cli import main
from fusionrs_hf.demo import sample_rows
from fusionrs_hf.layout import glob_match, shard_path
from fusionrs_hf.push import CheckFailed, PushError, push_repo
from fusionrs_hf.shards import write_rows

from .conftest import SAMPLE_SHARDS
from .hub_double import HubDouble, InjectedFailure

REPO = "me/fusionrs"
MAX_FILES = 8  # small commits, so that the sample (SAMPLE_SHARDS shards) needs several
CARD_FILES = 1 + len(ASSET_PATHS)  # README.md and the pictures it shows, pushed together


# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture
def push_local(sample_repo, tmp_path) -> Path:
    """A private, writable copy of the session sample repo."""
    return Path(shutil.copytree(sample_repo, tmp_path / "local"))


def _local_shards(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}


def _push(local, double, **kw):
    kw.setdefault("max_files_per_commit", MAX_FILES)
    return push_repo(local, REPO, api=double, hub_fs=double.fs, **kw)


def _materialize(files: dict[str, bytes], out: Path) -> Path:
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out


def _assert_card_matches_tree(files: dict[str, bytes], tmp: Path) -> None:
    """The README on the remote is exactly the card of the shards the remote holds."""
    root = _materialize({k: v for k, v in files.items() if k.endswith(".parquet")}, tmp)
    shards, _ = scan_repo(str(root))
    assets = [a for a in ASSET_PATHS if a in files]
    assert files["README.md"].decode() == render_card(shards, sample=True, repo_id=REPO, assets=assets)


def _assert_no_commit_names_missing_files(double: HubDouble, revision: str = "main") -> None:
    """In every commit of the history, each YAML glob of the README matches at least one file."""
    for commit in double.history(REPO, revision):
        if "README.md" not in commit.files:
            continue
        for cfg, splits in card_configs(commit.files["README.md"].decode()).items():
            for split, pats in splits.items():
                for pat in pats:
                    assert any(glob_match(pat, f) for f in commit.files), (commit.message, cfg, split, pat)


def _add_shard(root: Path, batch: str = "b2", source: str = "RS5M", n: int = 3) -> str:
    """A new batch shard (fresh images, fresh sample ids) plus the re-rendered local card."""
    rows = []
    for src, _split, _group, row in sample_rows(seed=11, counts={"train": n}, size=64):
        if src != source:
            continue
        sid = f"{row['sample_id']}-{batch}"
        rows.append({**row, "sample_id": sid, "ir_caption": None,
                     "joint_group_id": "joint-group:" + hashlib.sha256(sid.encode()).hexdigest()[:24]})
    rel = shard_path(source, "train", "base", 0, batch)
    write_rows(rows, root / rel)
    write_card(root, sample=True, repo_id=str(root))
    return rel


# ----------------------------------------------------------------------------------------- the double


@pytest.mark.parametrize("method", ["__init__", "create_repo", "create_branch", "repo_info", "list_repo_tree",
                                    "get_paths_info", "preupload_lfs_files", "create_commit"])
def test_double_signatures_match_hfapi(method):
    def shape(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(getattr(HubDouble, method)) == shape(getattr(HfApi, method))


def test_push_calls_only_methods_the_double_has():
    """Every ``self.api.X(`` in the push package is a method that both the double and HfApi have."""
    source = "".join(p.read_text() for p in Path(push_mod.__file__).parent.glob("*.py"))
    called = set(re.findall(r"self\.api\.(\w+)\(", source))
    assert {"create_commit", "preupload_lfs_files", "list_repo_tree"} <= called
    assert all(hasattr(HubDouble, m) and hasattr(HfApi, m) for m in called), called
    assert {"path_in_repo", "path_or_fileobj"} <= set(inspect.signature(CommitOperationAdd).parameters)
    assert "path_in_repo" in inspect.signature(CommitOperationDelete).parameters


# ----------------------------------------------------------------------------------------- Hub pushes


def test_first_push_uploads_all_then_repush_uploads_nothing(push_local, tmp_path):
    hub = HubDouble()
    local = _local_shards(push_local)
    res = _push(push_local, hub)
    assert res.ok and len(res.plan.upload) == len(local) == SAMPLE_SHARDS and res.plan.readme == "new"
    assert hub.repos[REPO].private is True  # private by default
    remote = hub.files(REPO)
    assert {k: v for k, v in remote.items() if k.endswith(".parquet")} == local
    assert hub.uploaded_bytes == sum(len(v) for v in local.values())
    # commits of at most MAX_FILES files; README only in the last one, with the last shards
    full = hub.history(REPO)
    history = full[1:]
    assert len(history) == len(res.commits) == -(-(len(local) + CARD_FILES) // MAX_FILES)
    sizes = [len(set(c.files) - set(p.files)) for p, c in zip(full, history, strict=False)]
    assert max(sizes) <= MAX_FILES and sum(sizes) == len(local) + CARD_FILES and sizes[-1] >= 2
    assert ["README.md" in c.files for c in history] == [False] * (len(history) - 1) + [True]
    assert all(a in history[-1].files and a not in history[-2].files for a in ASSET_PATHS)  # with the card
    _assert_no_commit_names_missing_files(hub)
    _assert_card_matches_tree(remote, tmp_path / "m")
    readme = remote["README.md"].decode()
    assert "**Synthetic infrared.**" in readme and f'load_dataset("{REPO}"' in readme

    n_commits, sent = len(hub.history(REPO)), hub.uploaded_bytes
    hub.calls.clear()
    again = _push(push_local, hub)
    assert again.plan.empty and again.plan.upload_bytes == 0 and again.commits == []
    assert len(again.plan.unchanged) == SAMPLE_SHARDS and again.plan.readme == "unchanged"
    assert len(hub.history(REPO)) == n_commits and hub.uploaded_bytes == sent
    assert "create_commit" not in hub.calls and "preupload_lfs_files" not in hub.calls


def test_adding_one_shard_uploads_it_and_the_readme_in_one_commit(push_local, tmp_path):
    hub = HubDouble()
    _push(push_local, hub)
    n_commits, sent = len(hub.history(REPO)), hub.uploaded_bytes
    rel = _add_shard(push_local)
    res = _push(push_local, hub)
    assert [(f.relpath, why) for f, why in res.plan.upload] == [(rel, "new")]
    assert res.plan.readme == "changed" and len(res.commits) == 1
    assert len(hub.history(REPO)) == n_commits + 1
    prev, last = hub.history(REPO)[-2:]
    # the counts figure changes with the counts; the contact sheet shows the same first rows
    assert {p for p in last.files if last.files[p] != prev.files.get(p)} == {rel, "README.md", "assets/counts.png"}
    assert hub.uploaded_bytes - sent == (push_local / rel).stat().st_size  # README goes inline, not LFS
    assert res.plan.rights == [{"source": "RS5M", "rights_code": "rs5m-item-rights-unconfirmed", "rows": 3}]
    _assert_card_matches_tree(hub.files(REPO), tmp_path / "m")


def test_changed_shard_is_reuploaded(push_local):
    hub = HubDouble()
    _push(push_local, hub)
    rel = "data/nwpu/test/base-main-00000.parquet"
    rows = pq.read_table(push_local / rel).to_pylist()
    rows[0]["caption"] = "a fixed caption"
    write_rows(rows, push_local / rel)
    write_card(push_local, sample=True)
    res = _push(push_local, hub)
    assert [(f.relpath, why) for f, why in res.plan.upload] == [(rel, "changed")]
    assert hub.files(REPO)[rel] == (push_local / rel).read_bytes()


@pytest.mark.parametrize("failure", [{"fail_after_uploads": 3}, {"fail_after_uploads": 11},
                                     {"fail_on_commit": 2}, {"fail_on_commit": 4}],
                         ids=["upload3", "upload11", "commit2", "final-commit"])
def test_interrupted_push_resumes_to_the_clean_state(push_local, failure):
    clean = HubDouble()
    _push(push_local, clean)

    hub = HubDouble()
    for k, v in failure.items():
        setattr(hub, k, v)
    with pytest.raises(PushError, match="re-run the same command to resume"):
        _push(push_local, hub)
    assert "README.md" not in hub.files(REPO)  # the card is never committed ahead of its shards
    _assert_no_commit_names_missing_files(hub)
    hub.fail_after_uploads = hub.fail_on_commit = None
    res = _push(push_local, hub)
    assert res.ok
    if failure != {"fail_after_uploads": 3}:  # the complete commits of the first attempt are not redone
        assert res.plan.unchanged
    assert hub.files(REPO) == clean.files(REPO)
    assert hub.uploaded_bytes == clean.uploaded_bytes  # objects sent before the crash are not re-sent
    _assert_no_commit_names_missing_files(hub)
    assert _push(push_local, hub).plan.empty


def test_prune_removes_remote_only_shard_and_without_it_the_shard_stays(push_local, tmp_path):
    hub = HubDouble()
    rel = _add_shard(push_local)
    _push(push_local, hub)
    (push_local / rel).unlink()
    write_card(push_local, sample=True)

    kept = _push(push_local, hub)
    assert kept.plan.keep_remote_only == [rel] and not kept.plan.delete and kept.commits == []
    assert rel in hub.files(REPO) and any("--prune" in w for w in kept.warnings)
    _assert_card_matches_tree(hub.files(REPO), tmp_path / "kept")  # the card still counts the kept shard

    pruned = _push(push_local, hub, prune=True)
    assert pruned.plan.delete == [rel] and pruned.plan.readme == "changed" and len(pruned.commits) == 1
    remote = hub.files(REPO)
    assert rel not in remote and ".gitattributes" in remote  # prune touches only data/ parquet files
    _assert_card_matches_tree(remote, tmp_path / "pruned")
    _assert_no_commit_names_missing_files(hub)


def test_remote_only_shards_are_counted_in_the_new_card(push_local, tmp_path):
    """A user who only has the new batch locally: the remote keeps the rest and the card counts it all."""
    hub = HubDouble()
    _push(push_local, hub)
    only_new = tmp_path / "only_new"
    (only_new / "data").mkdir(parents=True)
    rel = _add_shard(only_new)
    res = _push(only_new, hub)
    assert [f.relpath for f, _ in res.plan.upload] == [rel] and len(res.plan.keep_remote_only) == SAMPLE_SHARDS
    assert len(hub.files(REPO)) == SAMPLE_SHARDS + 1 + 2 + len(ASSET_PATHS)  # + README + .gitattributes + pictures
    _assert_card_matches_tree(hub.files(REPO), tmp_path / "m")


def test_failing_check_blocks_the_push(push_local):
    src = push_local / "data/rs5m/train/base-main-00000.parquet"
    shutil.copy(src, push_local / "data/rs5m/train/base-dup-00000.parquet")  # every sample_id twice
    write_card(push_local, sample=True)
    hub = HubDouble()
    with pytest.raises(CheckFailed) as exc:
        _push(push_local, hub)
    assert not exc.value.report.ok and "--skip-check" in str(exc.value)
    assert hub.calls == [] and not hub.repos  # nothing was even listed

    res = _push(push_local, hub, skip_check=True)  # the explicit override
    assert "data/rs5m/train/base-dup-00000.parquet" in hub.files(REPO) and res.check is None


def test_dry_run_prints_plan_and_rights_and_writes_nothing(push_local, monkeypatch, capsys):
    hub = HubDouble(token="hf_dummy")
    monkeypatch.setattr(push_mod.flow, "make_api", lambda token: hub)
    rc = main(["push", str(push_local), REPO, "--dry-run", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["dry_run"] and not out["plan"]["repo_exists"]
    assert len(out["plan"]["upload"]) == SAMPLE_SHARDS and out["plan"]["readme"] == "new"
    card = render_card(scan_repo(str(push_local))[0], sample=True, repo_id=REPO, assets=ASSET_PATHS).encode()
    pictures = sum((push_local / a).stat().st_size for a in ASSET_PATHS)  # as `fusionrs card` wrote them
    assert out["plan"]["assets"] == {a: "new" for a in ASSET_PATHS}
    assert out["plan"]["upload_bytes"] == sum(len(v) for v in _local_shards(push_local).values()) + len(card) \
        + pictures
    assert not hub.repos and "create_repo" not in hub.calls and "create_commit" not in hub.calls
    want: Counter = Counter()
    for p in (push_local / "data").rglob("*.parquet"):
        t = pq.read_table(p, columns=["source", "rights_code"])
        want.update(zip(t["source"].to_pylist(), t["rights_code"].to_pylist(), strict=True))
    assert {(r["source"], r["rights_code"]): r["rows"] for r in out["plan"]["rights"]} == dict(want)
    assert "terms of the source datasets" in out["terms_warning"]

    rc = main(["push", str(push_local), REPO, "--dry-run"])
    text = capsys.readouterr().out
    assert rc == 0 and "+ data/rs5m/train/base-main-00000.parquet" in text and "dry run: nothing written" in text
    assert "rights summary" in text and "rs5m-item-rights-unconfirmed" in text and "terms of the source" in text


def test_cli_public_branch_and_usage_errors(push_local, monkeypatch, capsys):
    hub = HubDouble(token="hf_dummy")
    monkeypatch.setattr(push_mod.flow, "make_api", lambda token: hub)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert main(["push", str(push_local), REPO]) == 2  # no token, no stored login: told how to log in
    assert "HF_TOKEN" in capsys.readouterr().err and not hub.calls
    monkeypatch.setenv("HF_TOKEN", "hf_dummytoken")
    assert main(["push", str(push_local), REPO, "--public", "--revision", "dev", "--quiet"]) == 0
    assert hub.repos[REPO].private is False
    assert "README.md" in hub.files(REPO, "dev") and "README.md" not in hub.files(REPO, "main")
    assert "done:" in capsys.readouterr().out
    assert main(["push", str(push_local), REPO, "--revision", "dev"]) == 0
    assert "nothing to do" in capsys.readouterr().out

    assert main(["push", str(push_local), "not a repo id"]) == 2
    assert "file:///" in capsys.readouterr().err
    assert main(["push", str(push_local.parent / "missing"), REPO]) == 2
    assert "no data/ directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["push", str(push_local), REPO, "--public", "--private"])


def test_token_never_printed_or_logged(push_local, monkeypatch, capsys, caplog):
    secret = "hf_TESTSECRETabcdef0123456789"
    monkeypatch.setenv("HF_TOKEN", secret)
    made = []

    def fake_api(token):
        hub = HubDouble(token=token)
        hub.http_error_message = (f"401 Client Error: Unauthorized for url {hub.endpoint}/api/repos/create "
                                  f"(Authorization: Bearer {secret})")
        made.append(hub)
        return hub

    monkeypatch.setattr(push_mod.flow, "make_api", fake_api)
    caplog.set_level(logging.DEBUG)
    rc = main(["push", str(push_local), REPO])
    rc_json = main(["push", str(push_local), REPO, "--json"])
    captured = capsys.readouterr()
    assert rc == rc_json == 2  # a refused token: unusable input, not a push to resume
    assert made and made[0].token == secret  # the token was used ...
    assert "401" in captured.err and "Unauthorized" in captured.err
    for text in (captured.out, captured.err, caplog.text):  # ... and never shown
        assert secret not in text and "TESTSECRET" not in text
    assert json.loads(captured.out.splitlines()[-1])["ok"] is False  # after the plan, printed before any upload

    # a failure deep inside a commit, through the Python API, comes back scrubbed, traceback included
    hub = HubDouble(token=secret)

    def leaky_commit(*a, **kw):
        raise InjectedFailure(f"proxy said: token={secret}")

    monkeypatch.setattr(hub, "create_commit", leaky_commit)
    with pytest.raises(PushError) as exc:
        _push(push_local, hub)
    assert "proxy said" in str(exc.value)
    assert secret not in "".join(traceback.format_exception(exc.value))


def test_real_client_error_is_scrubbed(push_local):
    """The stock HfApi failing (tests run offline) surfaces as a one-line PushError without the token."""
    secret = "hf_REALCLIENTSECRET0123456789"
    with pytest.raises(PushError) as exc:
        push_repo(push_local, REPO, api=HfApi(token=secret, endpoint="http://127.0.0.1:9"), skip_check=True)
    assert "me/fusionrs" in str(exc.value)
    assert secret not in "".join(traceback.format_exception(exc.value))


# ----------------------------------------------------------------------------------------- fsspec targets


def _rows(path: str) -> dict[str, list[tuple]]:
    from datasets import load_dataset

    ds = load_dataset(path, "iraware", streaming=True)
    return {split: sorted((r["sample_id"], r["caption"], r["ir_caption"], r["rgb_sha256"], r["ir"].size)
                          for r in d) for split, d in ds.items()}


def test_file_url_push_then_stock_load_dataset(push_local, tmp_path):
    target = tmp_path / "mirror"
    url = f"file://{target}"
    res = push_repo(push_local, url)
    assert res.ok and len(res.plan.upload) == SAMPLE_SHARDS and res.plan.readme == "new"
    assert _local_shards(target) == _local_shards(push_local)
    assert not list(target.rglob("*.fusionrs-tmp"))
    want = _rows(str(push_local))
    assert sum(len(v) for v in want.values()) > 0
    assert _rows(str(target)) == want  # stock datasets reads the pushed copy identically

    mtimes = {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    again = push_repo(push_local, url)
    assert again.plan.empty and again.plan.upload_bytes == 0
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()} == mtimes

    rel = _add_shard(push_local)
    gone = "data/nwpu/test/base-main-00000.parquet"
    (push_local / gone).unlink()
    write_card(push_local, sample=True)
    kept = push_repo(push_local, url)
    assert [f.relpath for f, _ in kept.plan.upload] == [rel] and kept.plan.keep_remote_only == [gone]
    assert (target / gone).exists()
    pruned = push_repo(push_local, url, prune=True)
    assert pruned.plan.delete == [gone] and not pruned.plan.upload
    assert _local_shards(target) == _local_shards(push_local)
    shards, _ = scan_repo(str(target))
    assert (target / "README.md").read_text() == render_card(shards, sample=True, repo_id=url, assets=ASSET_PATHS)


def test_fsspec_resume_rehashes_equal_size_files_without_manifest(push_local, tmp_path):
    """An interrupted copy (no manifest yet) is resumed by content hash, not by trusting names or sizes."""
    target = tmp_path / "mirror"
    (target / "data/rs5m/train").mkdir(parents=True)
    done = "data/rs5m/train/base-main-00000.parquet"
    shutil.copy(push_local / done, target / done)
    partial = "data/rs5m/train/base-main-00001.parquet"
    (target / partial).write_bytes(b"\0" * (push_local / partial).stat().st_size)  # same size, wrong bytes
    (target / (partial + ".fusionrs-tmp")).write_bytes(b"junk")
    res = push_repo(push_local, f"file://{target}")
    assert done in res.plan.unchanged
    assert (partial, "changed") in [(f.relpath, why) for f, why in res.plan.upload]
    assert _local_shards(target) == _local_shards(push_local)
    assert not list(target.rglob("*.fusionrs-tmp"))


def test_a_same_size_rewrite_of_a_pushed_shard_is_found_and_repaired(push_local, tmp_path):
    """The manifest's digest was trusted on size alone: 64 bytes of a pushed shard overwritten in place (same
    size) and push said "nothing to do". An entry now also holds the object's ETag or modification time; a
    changed one is hashed again and the shard sent again."""
    import os

    target = tmp_path / "mirror"
    url = f"file://{target}"
    assert push_repo(push_local, url).ok
    rel = "data/rs5m/train/base-main-00000.parquet"
    data = bytearray((target / rel).read_bytes())
    data[100:164] = bytes(64)
    st = (target / rel).stat()
    (target / rel).write_bytes(bytes(data))
    os.utime(target / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # as a later write leaves it
    again = push_repo(push_local, url)
    assert [(f.relpath, why) for f, why in again.plan.upload] == [(rel, "changed")]
    assert _local_shards(target) == _local_shards(push_local)
    assert push_repo(push_local, url).plan.empty  # and trusted again once push has written it


def test_object_store_url_push(push_local):
    """A non-local fsspec target (memory://, as s3:// would be): files PUT directly, manifest spares re-reads."""
    import fsspec

    url = "memory://fusionrs-push-test"
    fs = fsspec.filesystem("memory")
    try:
        res = push_repo(push_local, url, skip_check=True)
        assert len(res.plan.upload) == SAMPLE_SHARDS
        for rel, data in _local_shards(push_local).items():
            assert fs.cat_file(f"/fusionrs-push-test/{rel}") == data
        manifest = json.loads(fs.cat_file("/fusionrs-push-test/.fusionrs-push.json"))["files"]
        assert len(manifest) == SAMPLE_SHARDS + len(ASSET_PATHS)
        assert not [p for p in fs.find("/fusionrs-push-test") if p.endswith(".fusionrs-tmp")]
        again = push_repo(push_local, url, skip_check=True)
        assert again.plan.empty and len(again.plan.unchanged) == SAMPLE_SHARDS
    finally:
        fs.rm("/fusionrs-push-test", recursive=True)
