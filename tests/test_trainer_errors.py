"""How the trainers and ``fusionrs eval`` fail: checkpoints loaded with ``weights_only=True``, one scrubbed line
and the right exit code for unusable input (corrupt JPEG, unreachable store, a shard that is gone) or a bug,
torchrun refused by train_vlm (train_clip runs under it: test_train_ddp.py), resume mismatches said in
``load_state_dict``, one prefix per error line, ``--quiet`` silencing the libraries' bars, and zero-shot top-k
labelled by the k the release's rule really uses."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from fusionrs_hf.train import clip  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
COUNTS = {"train": 8, "validation": 4, "test": 4}


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_errors_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(name: str, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = _example(name).main(argv)
    return rc, out.getvalue(), err.getvalue()


def _fusionrs(*argv: str) -> tuple[int, str, str]:
    from fusionrs_hf import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path_factory.mktemp("errors") / "repo", counts=COUNTS, size=32, max_rows=8)


class _RunsCode:
    """Unpickling it runs ``Path(marker).touch()``: what a hostile checkpoint would do with anything else."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _hostile_checkpoint(folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "fusionrs_clip.json").write_text(json.dumps({"kind": "open_clip", "name": "ViT-B-32",
                                                           "pretrained": None}))
    torch.save({"visual.proj": _RunsCode(marker)}, folder / "open_clip_model.pt")
    return folder


# ------------------------------------------------------------------------ 1. torch.load(weights_only=True)


def test_a_hostile_checkpoint_folder_runs_no_code(repo, tmp_path, monkeypatch):
    """An open_clip checkpoint whose weights file unpickles to code: refused naming the file, nothing run,
    also with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which turns torch's default back to full unpickling)."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "ran"
    ckpt = _hostile_checkpoint(tmp_path / "ckpt", marker)
    # the file really is hostile: a default torch.load under this variable runs it
    with pytest.warns(UserWarning, match="forcing weights_only=False"):
        torch.load(ckpt / "open_clip_model.pt", map_location="cpu")
    assert marker.exists()
    marker.unlink()

    with pytest.raises(clip.CheckpointError, match="open_clip_model.pt: not a plain weights file") as e:
        clip.build_model(str(ckpt))
    assert "\n" not in str(e.value) and "weights_only=False" not in str(e.value)
    assert not marker.exists()
    with pytest.raises(clip.CheckpointError):  # open_clip's --pretrained FILE is looked at the same way first
        clip.open_clip_model("ViT-B-32", str(ckpt / "open_clip_model.pt"))
    assert not marker.exists()

    rc, out, err = _fusionrs("eval", str(repo), "--model", str(ckpt), "--no-cache")
    assert rc == 2 and out == "" and not marker.exists()
    assert err.strip().splitlines() == [f"fusionrs eval: error: {e.value}"]


def test_weights_files_that_cannot_be_used_are_one_line(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(clip.load_weights(good)["w"], torch.ones(2))
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(good.read_bytes()[:40])
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.ones(1)], not_a_dict)
    for path, message in ((truncated, "not a readable torch weights file"), (not_a_dict, "not a state dict"),
                          (tmp_path / "absent.pt", "missing")):
        with pytest.raises(clip.CheckpointError, match=message) as e:
            clip.load_weights(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    broken = tmp_path / "meta"
    broken.mkdir()
    (broken / "fusionrs_clip.json").write_text("{not json")
    with pytest.raises(clip.CheckpointError, match="fusionrs_clip.json: not a readable JSON file"):
        clip.build_model(str(broken))


# ------------------------------------------------------------------------ 2. one line, exit 2 or 1


def _corrupt_train_rgb(repo: Path, out: Path) -> Path:
    """A copy of ``repo`` whose train RGB cells are all a JPEG header and garbage: the first batch meets one,
    whatever the order."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(shutil.copytree(repo, out))
    for shard in sorted((root / "data").glob("*/train/*.parquet")):
        table = pq.read_table(shard)
        rows = table.to_pylist()
        for row in rows:
            row["rgb"] = {"bytes": b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20, "path": row["rgb"]["path"]}
        pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    return root


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_jpeg_is_one_line_exit_2(repo, tmp_path, workers):
    bad = _corrupt_train_rgb(repo, tmp_path / "bad")
    rc, out, err = _run("train_clip", ["--data", str(bad), "--config", "default", "--model", "tiny",
                                       "--image-size", "32", "--steps", "4", "--batch-size", "4",
                                       "--num-workers", str(workers), "--out", str(tmp_path / "run"),
                                       "--device", "cpu", "--log-every", "100"])
    lines = [line for line in err.strip().splitlines() if not line.startswith("{")]  # progress records
    assert rc == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("train_clip: ") and "Traceback" not in err, err
    assert "sample_id='" in lines[0] and "-tra-" in lines[0] and "column='rgb'" in lines[0]
    if workers:
        assert lines[0].endswith("(in DataLoader worker 0)")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", ["train_clip", "train_vlm"])
def test_an_unreachable_store_is_one_line_exit_2(tmp_path, name):
    if name == "train_vlm":
        pytest.importorskip("peft")
    url = f"http://127.0.0.1:{_closed_port()}"
    rc, out, err = _run(name, ["--data", url, "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "run")])
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: ") and "Traceback" not in err, err
    assert "127.0.0.1" in lines[0]


def test_a_shard_that_is_gone_is_one_line_exit_2(repo, tmp_path, monkeypatch):
    """A shard the listing names but the store no longer has (a 404 on the Hub): exit 2 for train_clip and for
    `fusionrs eval`, one line naming it."""
    from fusionrs_hf import splits

    listed = splits.RepoSplits.files
    ghost = "data/nwpu/validation/base-main-09999.parquet"
    monkeypatch.setattr(splits.RepoSplits, "files", lambda self, c, s: listed(self, c, s) + [ghost])
    rc, out, err = _run("train_clip", ["--data", str(repo), "--config", "default", "--model", "tiny",
                                       "--steps", "1", "--out", str(tmp_path / "run"), "--device", "cpu"])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "FileNotFoundError" in lines[0] and ghost in lines[0], err
    rc, out, err = _fusionrs("eval", str(repo), "--embeddings", str(tmp_path / "e.npz"), "--split", "validation")
    lines = err.strip().splitlines()
    assert rc == 2 and lines == [lines[0]] and lines[0].startswith("fusionrs eval: error: FileNotFoundError")
    assert ghost in lines[0]


@pytest.mark.parametrize("name", ["train_clip", "train_vlm"])
def test_a_bug_is_one_scrubbed_line_exit_1_and_a_traceback_on_request(repo, tmp_path, monkeypatch, name):
    token = "hf_" + "Q" * 34
    mod = _example(name)

    def boom(cfg):
        raise RuntimeError(f"a bug talking to https://user:{token}@example.org\nsecond line")

    monkeypatch.setattr(mod, name, boom)
    argv = ["--data", str(repo), "--out", str(tmp_path / "run")]
    for traceback_env in (None, "1"):
        if traceback_env:
            monkeypatch.setenv("FUSIONRS_TRACEBACK", traceback_env)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = mod.main(argv)
        text = err.getvalue()
        assert rc == 1 and token not in text, text
        first = text.splitlines()[0]
        assert first.startswith(f"{name}: unexpected RuntimeError: a bug talking to https://")
        assert "second line" in first and "FUSIONRS_TRACEBACK=1" in first
        assert ("Traceback" in text) == bool(traceback_env)


def test_worker_errors_torch_could_not_rebuild_are_judged_by_their_name():
    """torch re-raises a worker's error as RuntimeError when its type cannot be rebuilt from the message
    (aiohttp's take two arguments): the line names the worker's error, and a connection error stays exit 2."""
    from fusionrs_hf.train.errors import error_line, exit_code

    def caught(name: str, qualname: str, message: str) -> RuntimeError:
        return RuntimeError(f"Caught {name} in DataLoader worker process 1.\nOriginal Traceback (most recent call "
                            f"last):\n  File \"w.py\", line 3, in f\n    g()\n{qualname}: {message}")

    conn = caught("ClientConnectorError", "aiohttp.client_exceptions.ClientConnectorError", "Cannot connect to h:1")
    assert exit_code(conn) == 2
    assert error_line("train_clip", conn) == "train_clip: ClientConnectorError: Cannot connect to h:1 (in DataLoader worker 1)"
    bug = caught("ZeroDivisionError", "ZeroDivisionError", "division by zero")
    assert exit_code(bug) == 1
    assert error_line("train_clip", bug).startswith("train_clip: unexpected ZeroDivisionError: division by zero (in")


def test_an_unknown_recipe_is_one_line_exit_2(repo, tmp_path):
    rc, out, err = _run("train_clip", ["--data", str(repo), "--recipe", "nosuch", "--out", str(tmp_path / "run")])
    assert rc == 2 and err.strip().splitlines() == [
        "train_clip: unknown recipe 'nosuch'; expected one of " + ", ".join(clip.RECIPES)]


# ------------------------------------------------------------------------ 3. torchrun


@pytest.mark.parametrize("name", ["train_vlm"])  # train_clip runs under torchrun: tests/test_train_ddp.py
def test_torchrun_is_refused_before_anything_is_read(repo, tmp_path, monkeypatch, name):
    """Under torchrun each VLM process would train its own model on its share of the rows (and score part of
    the split): refused in one line that says how to use make_dataloader under DDP, exit 2, nothing written."""
    if name == "train_vlm":
        pytest.importorskip("peft")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rc, out, err = _run(name, ["--data", str(repo), "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "run")])
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"{name}: WORLD_SIZE (torchrun) says 2 processes") and "make_dataloader" in lines[0]
    assert "DistributedDataParallel" in lines[0]
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")
    from fusionrs_hf.train.errors import refuse_distributed

    refuse_distributed(name)  # one process: nothing to refuse


# ------------------------------------------------------------------------ 4. resume mismatches


@pytest.mark.parametrize("workers", [0, 2])
def test_every_resume_mismatch_is_refused_in_load_state_dict(repo, workers):
    from fusionrs_hf.torch import make_dataloader

    kw = dict(config="default", split="train", batch_size=4, num_workers=workers, image_size=8, shuffle=True,
              seed=1, stateful=True)
    first = make_dataloader(repo, **kw)
    it = iter(first)
    seen = next(it)["sample_id"]
    state = pickle.loads(pickle.dumps(first.state_dict()))
    del it, first
    cases = [
        (dict(batch_size=8), "saved with batch_size=4, this loader has batch_size=8; resume with the same batch_size"),
        (dict(seed=2), "saved with seed=1, this loader has seed=2"),
        (dict(shuffle=False), "saved with shuffle=True, this loader has shuffle=False"),
        (dict(shuffle_buffer=7), "saved with shuffle_buffer=1000, this loader has shuffle_buffer=7"),
        (dict(config="iraware"), "saved reading default/train; this loader reads iraware/train"),
        (dict(rank=0, world_size=2), "saved with world_size=1, this loader has world_size=2"),
    ]
    for change, message in cases:
        other = make_dataloader(repo, **{**kw, **change})
        with pytest.raises(ValueError) as e:
            other.load_state_dict(state)  # here, not at the first batch inside a worker
        assert message in str(e.value) and "\n" not in str(e.value), (change, str(e.value))
    if workers == 0:  # a 0-worker state in a loader with workers: the slot count differs
        other = make_dataloader(repo, **{**kw, "num_workers": 2})
        with pytest.raises(ValueError, match="saved with num_workers=0 or 1, this loader has num_workers=2"):
            other.load_state_dict(state)
    same = make_dataloader(repo, **kw)
    same.load_state_dict(state)
    rest = [s for batch in same for s in batch["sample_id"]]
    assert not set(seen) & set(rest) and len(seen) + len(rest) == 5 * COUNTS["train"]


# ------------------------------------------------------------------------ 5, 6. fusionrs eval's lines and bars


def test_a_missing_split_has_the_command_prefix_once(tmp_path):
    from fusionrs_hf.demo import make_sample_repo

    only_train = make_sample_repo(tmp_path / "repo", counts={"train": 2}, size=32, max_rows=8)
    rc, out, err = _fusionrs("eval", str(only_train), "--embeddings", str(tmp_path / "e.npz"), "--config", "iraware")
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [f"fusionrs eval: error: config 'iraware' has no 'test' split in "
                                        f"{only_train} (its splits: train)"]


def test_quiet_silences_the_libraries_progress_bars(repo, tmp_path):
    from transformers.utils import logging as hf_logging

    ckpt = clip.tiny_clip(["a river near farmland", "a dense forest", "an industrial area"], image_size=32).save(
        tmp_path / "ckpt")
    assert hf_logging.is_progress_bar_enabled()
    base = ["eval", str(repo), "--model", str(ckpt), "--split", "validation", "--no-cache", "--json"]
    rc, out, loud = _fusionrs(*base)
    assert rc == 0 and "Loading weights" in loud  # what --quiet is to hide
    rc, out, quiet = _fusionrs(*base, "--quiet")
    assert rc == 0 and json.loads(out)["n_scored"] > 0
    assert "Loading weights" not in quiet and "it/s" not in quiet, quiet
    assert hf_logging.is_progress_bar_enabled()  # given back as it was


# ------------------------------------------------------------------------ 7. zero-shot top-k names


def _zero_shot(n_classes: int, n_images: int = 12, seed: int = 0) -> dict:
    from fusionrs_hf.eval.zeroshot import zero_shot

    rng = np.random.default_rng(seed)
    classes = [f"class_{i}" for i in range(n_classes)]
    image_class = [classes[i % n_classes] for i in range(n_images)]
    images = {m: rng.normal(size=(n_images, 8)) for m in ("rgb", "ir")}
    class_emb = {m: rng.normal(size=(n_classes, 8)) for m in ("rgb", "ir")}
    return zero_shot(classes, image_class, images, class_emb)


def test_zero_shot_top5_with_three_classes_is_labelled_top3():
    """The release's k = min(5, classes) keeps its figure under `top5`, but with 3 classes it is a top-3 and
    100% by construction: the table shows top-3, `ks` says 3, and a note says it is not the paper's Top-5."""
    from fusionrs_hf.eval.protocol import EvalResult

    zs = _zero_shot(3)
    assert zs["ks"] == [1, 3] and zs["authors_ks"] == [1, 5]
    for mod in ("rgb", "ir"):
        v = zs["modalities"][mod]
        assert v["top3"] == v["top5"] == 100.0 and v["top1"] < 100.0
    assert "not comparable with the paper's Top-5" in zs["note"]
    table = EvalResult("all-rows", "pessimistic", "r", "default", "test", "caption", 12, 12, 12, {},
                       zs).table()
    assert "top-3" in table and "top-5" not in table

    many = _zero_shot(8, n_images=40)
    assert many["ks"] == [1, 5] and "note" not in many
    assert set(many["modalities"]["ir"]) == {"top1", "top5", "mean_per_class_top1"}
    assert many["modalities"]["ir"]["top5"] < 100.0  # 5 of 8 classes: not 100% by construction
