"""Checkpoint folders are written whole or not at all (``fusionrs_hf.atomic.atomic_dir``).

A save interrupted after the weights were written left new weights beside the old ``fusionrs_clip.json`` (and
the VLM's adapter beside an old processor): a resumed or evaluated run then mixed two checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fusionrs_hf.atomic import TMP_SUFFIX, atomic_dir


def _tree(p):
    return {q.relative_to(p).as_posix(): q.read_bytes() for q in sorted(p.rglob("*")) if q.is_file()}


def test_an_interrupted_save_leaves_the_old_folder_whole(tmp_path):
    out = tmp_path / "checkpoint"
    with atomic_dir(out) as d:
        (d / "weights.bin").write_bytes(b"old weights")
        (d / "config.json").write_text("old")
    before = _tree(out)
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "weights.bin").write_bytes(b"new weights")
        raise RuntimeError("killed while writing the config")
    assert _tree(out) == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint"]
    with atomic_dir(out) as d:
        (d / "weights.bin").write_bytes(b"new weights")
    assert _tree(out) == {"weights.bin": b"new weights"}  # the new folder whole, nothing of the old left in it
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_a_killed_save_leaves_old_or_new_and_the_next_save_sweeps_its_folder(tmp_path):
    out = tmp_path / "checkpoint"
    with atomic_dir(out) as d:
        (d / "a").write_text("old")
    code = ("import os, sys; from fusionrs_hf.atomic import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as d:\n"
            "    open(os.path.join(d, 'a'), 'w').write('new')\n"
            "    os._exit(9)\n")  # killed mid-save: no cleanup runs
    assert subprocess.run([sys.executable, "-c", code, str(out)], timeout=60).returncode == 9
    assert _tree(out) == {"a": b"old"}
    left = [p for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)]
    assert len(left) == 1
    with atomic_dir(out) as d:
        (d / "a").write_text("newer")
    assert _tree(out) == {"a": b"newer"} and not any(p.name.endswith(TMP_SUFFIX) for p in tmp_path.iterdir())


def test_a_clip_checkpoint_save_that_fails_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from fusionrs_hf.train import clip

    model = clip.tiny_clip(["a small caption", "another caption"], image_size=32, seed=0)
    out = tmp_path / "checkpoint"
    model.save(out)
    before = _tree(out)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(model.tokenizer, "save_pretrained", broken)  # after the weights, before the tokenizer
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        model.save(out)
    assert _tree(out) == before  # the previous weights, config and tokenizer, not new weights beside old files
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]
    assert clip.build_model(str(out)) is not None
