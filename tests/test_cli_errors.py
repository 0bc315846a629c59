"""Unusable input to `fusionrs card` and `fusionrs check`: one line naming the path, exit 2, nothing written
(real subprocesses, as a script would run them)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _fusionrs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("case, says", [
    ("missing", "no such folder"),
    ("file", "not a folder"),
    ("no_data", "not a FusionRS repo folder (no data/ directory)"),
    ("no_shards", "no shards under data/"),
])
def test_card_refuses_what_is_not_a_repo(case, says, tmp_path):
    target = tmp_path / "repo"
    if case == "file":
        target.write_text("not a folder\n")
    elif case == "no_data":
        target.mkdir()
    elif case == "no_shards":
        (target / "data" / "nwpu" / "train").mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = _fusionrs("card", str(target))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and str(target) in lines[0]
    assert "fusionrs-tmp" not in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no README, no temporary file left


def test_check_refuses_a_card_without_shards_and_a_typo(tmp_path):
    (tmp_path / "README.md").write_text("---\nconfigs: []\n---\n# FusionRS\n")
    proc = _fusionrs("check", str(tmp_path))
    assert proc.returncode == 2 and "a README.md but no data/**/*.parquet shards" in proc.stderr
    proc = _fusionrs("check", str(tmp_path / "fusionrs-dmeo"))
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("fusionrs-dmeo: no such folder, and not an fsspec URL or a Hub dataset id "
                                        "(OWNER/NAME)")
    assert "ValueError" not in proc.stderr


def test_eval_names_an_unknown_config_in_one_line(sample_repo):
    proc = _fusionrs("eval", str(sample_repo), "--model", "tiny", "--config", "nosuch")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("fusionrs eval: error: unknown config 'nosuch'; expected one of default, iraware, "
                                   "rs5m, skyscript, nwpu, rsicd, rsitmd")


def test_a_typo_of_tiny_is_pointed_out():
    import importlib.util

    from fusionrs_hf.storage import MissingExtraError
    from fusionrs_hf.train.clip import build_model

    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed: 'tyny' is then asked of open_clip")
    with pytest.raises(MissingExtraError, match=r"model 'tyny' is not 'tiny', a folder or a Hub id .*did you mean 'tiny'\?"):
        build_model("tyny")


@pytest.mark.parametrize("what", ["fifo_shard", "fifo_card", "shard_outside"])
def test_a_repo_entry_that_is_no_file_of_its_own_is_refused_not_read(what, sample_repo, tmp_path):
    """A FIFO named like a shard (or README.md) would hang every reader on open; a shard that is a symlink to a
    file outside the repo would be read (and published) although the user never named it. Both: exit 2, one
    line naming the path, at once."""
    import os
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = sorted((repo / "data").rglob("*.parquet"))[0]
    if what == "fifo_shard":
        shard.unlink()
        os.mkfifo(shard)
    elif what == "fifo_card":
        (repo / "README.md").unlink()
        os.mkfifo(repo / "README.md")
    else:
        outside = tmp_path / "elsewhere.parquet"
        shutil.move(shard, outside)
        shard.symlink_to(outside)
    commands = [("check", str(repo), "--fast"), ("card", str(repo))]
    for cmd in commands:
        proc = _fusionrs(*cmd)
        assert proc.returncode == 2, (cmd, proc.stderr)
        line = proc.stderr.strip().splitlines()
        assert len(line) == 1 and ("not a regular file" in line[0] or "outside the repo" in line[0]), line


def test_writes_never_follow_a_folder_symlink_out_of_the_root(sample_repo, tmp_path):
    """card with assets/ a symlink to another folder, push to a folder whose data/ is one: exit 2, one line,
    and nothing appears in the folder the link points to."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(repo / "assets", ignore_errors=True)
    (repo / "assets").symlink_to(elsewhere, target_is_directory=True)
    proc = _fusionrs("card", str(repo))
    assert proc.returncode == 2 and "outside" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    (repo / "assets").unlink()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "data").symlink_to(elsewhere, target_is_directory=True)
    proc = _fusionrs("push", str(repo), f"file://{dest}", "--skip-check")
    assert proc.returncode == 2, proc.stderr
    assert "outside" in proc.stderr and "Traceback" not in proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_folder_that_a_listing_would_skip_is_named_not_left_out(sample_repo, tmp_path):
    """A symlinked source folder (listings do not enter it) would vanish from card and check without a word:
    exit 2, one line naming it. (An unreadable folder takes the same path; as root, permissions do not bind.)"""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    src = sorted(p for p in (repo / "data").iterdir() if p.is_dir())[0]
    moved = tmp_path / "kept-elsewhere" / src.name
    moved.parent.mkdir()
    shutil.move(src, moved)
    src.symlink_to(moved, target_is_directory=True)
    for cmd in (("check", str(repo), "--fast"), ("card", str(repo))):
        proc = _fusionrs(*cmd)
        assert proc.returncode == 2, (cmd, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "a symlink to a folder" in lines[0] and src.name in lines[0]


def test_a_build_report_that_is_a_fifo_or_leads_outside_is_refused_not_read(tmp_path):
    """check and card read build_report.json: a FIFO there would hang them, a symlink to an outside file would
    put that file's figures in the card. Both are exit 2, naming it."""
    import os

    from fusionrs_hf.demo import make_sample_repo

    repo = make_sample_repo(tmp_path / "r")
    report = repo / "build_report.json"
    if report.exists():
        report.unlink()
    os.mkfifo(report)
    for args in (["check", str(repo), "--fast", "--quiet"], ["card", str(repo)]):
        out = _fusionrs(*args)
        assert out.returncode == 2 and "build_report.json" in out.stderr and "not a regular file" in out.stderr, (
            args, out.stderr)
    report.unlink()
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    report.symlink_to(outside)
    out = _fusionrs("card", str(repo))
    assert out.returncode == 2 and "outside the repo" in out.stderr, out.stderr


@pytest.mark.parametrize("script", ["train_clip.py", "train_vlm.py"])
@pytest.mark.parametrize("case", ["no_repo", "config"])
def test_the_example_trainers_say_unusable_input_in_one_line(script, case, tmp_path):
    """A mistyped --data or --config is exit 2 and one line, as in the fusionrs commands (no traceback)."""
    from pathlib import Path

    from fusionrs_hf.demo import make_sample_repo

    repo = str(tmp_path / "nope") if case == "no_repo" else str(make_sample_repo(tmp_path / "r"))
    args = ["--data", repo, "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "out")]
    if case == "config":
        args += ["--config", "IRAWARE"]
    script_path = Path(__file__).resolve().parents[1] / "examples" / script
    out = subprocess.run([sys.executable, str(script_path), *args], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr[-2000:]
    assert ("nope" in lines[0]) if case == "no_repo" else ("IRAWARE" in lines[0]), lines


def test_eval_of_a_run_folder_points_at_its_checkpoint(tmp_path):
    """`fusionrs eval --model RUN` where RUN is a trainer's --out folder: exit 2, naming RUN/checkpoint."""
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "config.json").write_text("{}")
    from fusionrs_hf.demo import make_sample_repo

    repo = make_sample_repo(tmp_path / "r")
    out = _fusionrs("eval", str(repo), "--model", str(run), "--split", "test")
    assert out.returncode == 2 and f"did you mean {run / 'checkpoint'}?" in out.stderr, out.stderr[-1500:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("extra, says", [
    (["--preset", "rc4-release", "--config", "nwpu"], "fewer train rows than one batch of 128"),
    (["--batch-size", "1"], "batch_size must be >= 2"),
    (["--steps", "0"], "steps must be >= 1"),
])
def test_train_clip_refuses_a_run_that_cannot_train(extra, says, tmp_path):
    from pathlib import Path

    from fusionrs_hf.demo import make_sample_repo

    repo = str(make_sample_repo(tmp_path / "r"))
    script = Path(__file__).resolve().parents[1] / "examples" / "train_clip.py"
    out = subprocess.run([sys.executable, str(script), "--data", repo, "--model", "tiny", "--out",
                          str(tmp_path / "out"), *extra], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr[-1500:]
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize("cmd", [["check"], ["eval", "--model", "tiny"]])
def test_credentials_in_an_object_store_url_are_unusable_input(cmd):
    """s3://KEY:SECRET@bucket is refused by every command in one line, exit 2, naming the fix, never the secret."""
    out = _fusionrs(cmd[0], "s3://AKIAEXAMPLE:SeCrEt9876@bucket/fusionrs", *cmd[1:])
    assert out.returncode == 2, out.stderr
    assert "takes no credentials in the URL" in out.stderr and "--storage-option" in out.stderr
    assert "SeCrEt9876" not in out.stderr + out.stdout and "Traceback" not in out.stderr
