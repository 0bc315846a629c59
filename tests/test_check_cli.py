"""``fusionrs check`` as scripts call it: exit codes, one line on stderr, and ``--json`` on stdout on every path.

Found by a maintainer on a clean clone: ``--index`` naming no file exited 1 (a bare FileNotFoundError) with
``--release`` and was ignored without it; ``--ir-threshold -1`` made every row a finding; ``--json`` printed
nothing on stdout when the target was unusable; a README without its YAML header gave one finding per
config and split instead of one ``bad_card``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "check", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("extra,want", [
    (["--release", "rc4", "--index", "/nope/index.jsonl"], "--index /nope/index.jsonl: no such file"),
    (["--index", "/nope/index.jsonl"], "--index /nope/index.jsonl: no such file"),
    (["--ir-threshold", "-1"], "--ir-threshold -1.0: a channel spread in levels, 0 to 255"),
])
def test_unusable_options_exit_2_with_one_line_and_json_on_stdout(sample_repo, extra, want):
    for json_flag in ([], ["--json"]):
        proc = _check(str(sample_repo), "--fast", "--quiet", *extra, *json_flag)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().splitlines() == [f"fusionrs check: error: {want}"]
        if json_flag:
            assert json.loads(proc.stdout) == {"ok": False, "error": want}
        else:
            assert proc.stdout == ""


def test_an_unusable_target_still_gives_json(tmp_path):
    proc = _check(str(tmp_path / "missing"), "--json", "--quiet")
    assert proc.returncode == 2
    got = json.loads(proc.stdout)
    assert got["ok"] is False and "missing" in got["error"]


def test_an_index_no_release_check_reads_is_said(sample_repo, tmp_path):
    index = tmp_path / "index.jsonl"
    index.write_text("{}\n")
    proc = _check(str(sample_repo), "--fast", "--quiet", "--release", "none", "--index", str(index))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"--index {index} was not read: no release checks ran" in proc.stderr


def test_a_card_without_its_yaml_header_is_one_bad_card_finding(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    card = (repo / "README.md").read_text()
    (repo / "README.md").write_text(card.split("\n", 1)[1])  # the first '---' lost
    proc = _check(str(repo), "--fast", "--quiet", "--json")
    assert proc.returncode == 1
    kinds = [f["kind"] for f in json.loads(proc.stdout)["findings"]]
    assert kinds == ["bad_card"], kinds
