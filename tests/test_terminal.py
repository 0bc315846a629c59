"""Text from a repo (sample ids, file names) printed by the CLI cannot forge or erase report lines.

A ``sample_id`` holding ``"\\n  OK: no findings\\n"`` and an ANSI colour sequence, and a shard file name holding
an escape, were printed as they are by ``fusionrs check``: each finding now stays one line, escapes written out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from fusionrs_hf.terminal import printable

FORGED = "nwpu-x\n  OK: no findings\n\x1b[31mFORGED LINE\x1b[0m\u202e"


def test_printable_escapes_what_a_terminal_acts_on():
    assert printable("a\tb c") == "a\tb c"  # tab and plain text as they are
    assert printable(FORGED) == "nwpu-x\\x0a  OK: no findings\\x0a\\x1b[31mFORGED LINE\\x1b[0m\\u202e"
    assert printable("caf\u00e9 \u6d77") == "caf\u00e9 \u6d77"  # letters of any script are not controls


def test_check_prints_each_finding_on_one_line_with_data_escaped(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shard = sorted((repo / "data").rglob("*.parquet"))[0]
    t = pq.read_table(shard)
    ids = t.column("sample_id").to_pylist()
    ids[1] = ids[2] = FORGED  # a duplicate: its finding names the sample id
    t = t.set_column(t.schema.get_field_index("sample_id"), t.schema.field("sample_id"), pa.array(ids))
    pq.write_table(t, shard)
    (shard.parent / "x\x1b[2K.parquet").write_bytes(shard.read_bytes())  # an orphan whose name erases a line
    proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "check", str(repo), "--fast"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "\x1b" not in proc.stdout and "\u202e" not in proc.stdout
    assert "OK: no findings" not in proc.stdout.splitlines()  # no forged line of its own
    finding_lines = [line for line in proc.stdout.splitlines() if line.startswith("  [")]
    assert any("nwpu-x\\x0a  OK: no findings\\x0a\\x1b[31mFORGED LINE" in line for line in finding_lines)
    assert any("x\\x1b[2K.parquet" in line for line in finding_lines)


def test_a_file_name_that_is_not_utf8_is_escaped_too():
    """surrogateescape turns byte 0x9B (an 8-bit CSI) into '\\udc9b': a UTF-8 stdout refused it (the report
    lost) or wrote the raw byte. It is written as the byte's escape."""
    assert printable("evil\udc9b31mX.parquet") == "evil\\x9b31mX.parquet"
    assert printable("\ud800") == "\\ud800"
    printable("evil\udc9b").encode("utf-8")  # and the result can be printed
