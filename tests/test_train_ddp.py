"""``train_clip`` under DDP: two CPU processes (gloo) train one model on the global batch.

(a) a two-process run of ``examples/train_clip.py`` (as torchrun starts it): exit 0, one checkpoint, one
metrics.json, one final line, equal weights on both ranks (each rank's digest, recorded by rank 0), the
checkpoint holding those weights, and the release's validation loss equal to the one-process value;
(b) the gathered loss of 2 processes equals one process's loss on the concatenated batch, with the same
gradients and the same step; (c) an input error exits 2 on every rank with one line, whichever rank has it.

Nothing here listens beyond 127.0.0.1: the process groups rendezvous through a file (torchrun's own store
would listen on every interface), and gloo's sockets stay on the loopback device.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():  # pragma: no cover - every torch wheel we use has it
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from fusionrs_hf.train.clip.models import ClipAdapter  # noqa: E402

from .ddp_launch import ROOT, TIMEOUT_S, ddp_env, run_ranks  # noqa: E402

# ------------------------------------------------------------------------ (a) a two-process run


def _two_processes(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """``examples/train_clip.py`` as two processes of one gloo group, as torchrun would start them, but meeting
    through a file (:data:`_DRIVER`). Returns both processes' output together (rank 0 first)."""
    store = f"file://{tmp_path}/store"
    got = run_ranks(lambda r: [sys.executable, "-c", _DRIVER, store, str(r), *args],
                    env=lambda r: ddp_env(LOCAL_RANK=str(r)))
    return subprocess.CompletedProcess(args, max(rc for rc, _, _ in got), "".join(o for _, o, _ in got),
                                       "".join(e for _, _, e in got))


@pytest.fixture(scope="module")
def torchrun_run(sample_repo, tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    base = tmp_path_factory.mktemp("ddp")
    out = base / "run"
    proc = _two_processes(["--data", str(sample_repo), "--model", "tiny", "--image-size", "32", "--batch-size", "4",
                           "--epochs", "2", "--select", "release", "--val-batch-size", "3", "--eval-every", "4",
                           "--log-every", "1", "--device", "cpu", "--out", str(out)], base)
    return proc, out


def test_torchrun_trains_one_model_and_rank_0_alone_writes(torchrun_run):
    proc, out = torchrun_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    finals = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(finals) == 1, proc.stdout  # rank 0's line only
    final = json.loads(finals[0])
    assert final["eval_config"] == "default" and final["n_images"] == 20  # the whole validation split, scored once
    assert sorted(p.name for p in out.iterdir()) in (["checkpoint", "metrics.json", "train_log.jsonl"],
                                                   ["checkpoint", "last_checkpoint", "metrics.json", "train_log.jsonl"])
    notes = [line for line in proc.stderr.splitlines() if line.startswith("train_clip:")]
    assert notes == ["train_clip: 2 processes (gloo, cpu): global batch 2 x 4 = 8 rows per step (--batch-size is "
                     "per process)"]

    metrics = json.loads((out / "metrics.json").read_text())
    dist = metrics["distributed"]
    assert dist["world_size"] == 2 and dist["global_batch_size"] == 8 and dist["batch_size_per_process"] == 4
    digests = dist["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] and dist["weights_equal"]  # one model, not two
    # 5 sources x 9 train rows = 45 -> 22 per rank -> 5 batches of 4 per rank and epoch (equal on both ranks)
    assert metrics["steps"] == 10 and [v["epoch"] for v in metrics["val_losses"]] == [1, 2]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 11))  # written once, by rank 0
    assert [r["step"] for r in log if "eval" in r] == [4, 8, 10]
    assert final == {**log[-1]["eval"], "preset": None, "eval_config": "default", "eval_split": "validation"}

    from fusionrs_hf.train.clip import build_model
    from fusionrs_hf.train.clip.ddp import weights_digest

    assert weights_digest(build_model(str(out / "checkpoint"))) == digests[0]  # rank 0 saved what both hold


def test_torchrun_release_validation_loss_is_the_one_process_value(torchrun_run, sample_repo):
    """Each rank computed its share of the one-process validation batches (7 batches of 3 rows: 4 on rank 0,
    3 on rank 1); gathered and averaged in order they give the loss one process computes on those weights."""
    from fusionrs_hf.train.clip import ClipTrainConfig, Training, build_model, make_loader, resolve_config

    proc, out = torchrun_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    latest = out / ("checkpoint" if metrics["selected"]["checkpoint"] == "latest"
                    or metrics["selected"]["step"] == metrics["steps"] else "last_checkpoint")
    model = build_model(str(latest))
    cfg, _ = resolve_config(ClipTrainConfig(data=str(sample_repo), select="release", val_batch_size=3, batch_size=4,
                                            device="cpu"))
    loader = make_loader(str(sample_repo), "default", "validation", batch_size=3, image_size=model.image_size,
                         mean=model.mean, std=model.std, shuffle=False, map_style=True, drop_last=False,
                         usable_captions_only=True)
    one = Training(cfg, model, 1, lr=1e-3, device=torch.device("cpu")).val_loss(loader)
    last = metrics["selection"][-2] if "candidates" in metrics["selection"][-1] else metrics["selection"][-1]
    assert one["batches"] == last["val_batches"] == 7
    assert one["loss"] == pytest.approx(metrics["val_losses"][-1]["val_loss"], rel=1e-6, abs=1e-7)
    assert one["components"] == pytest.approx(last["val_components"], rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------------ (b) the gathered loss


class _Stub(ClipAdapter):
    """A small CLIP-like adapter (a linear image encoder, a byte EmbeddingBag text encoder): fast to spawn."""

    kind = "stub"
    image_size = 8

    def __init__(self) -> None:
        super().__init__()
        self.image = torch.nn.Linear(3 * 8 * 8, 16)
        self.text = torch.nn.EmbeddingBag(256, 16, mode="mean")
        self.scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))

    def encode_image(self, pixels):
        return self.image(pixels.flatten(1))

    def encode_text(self, texts):
        ids = [torch.tensor(list(t.encode()) or [0]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.text(torch.cat(ids), offsets)

    @property
    def logit_scale(self):
        return self.scale


def _global_batch(rows: int) -> dict:
    g = torch.Generator().manual_seed(7)
    captions = ["a field", "a road", "a field", "a river", "a town", "a road", "a bridge", "a port"][:rows]
    # rank 0's half has two IR-aware captions, rank 1's none (its text encoder runs on a placeholder); "a road"
    # is on both ranks (a same-caption positive across them)
    ir = ["warm roofs", None, "a cool lake", "", None, None, "", None][:rows]
    return {"rgb": torch.randn(rows, 3, 8, 8, generator=g), "ir": torch.randn(rows, 3, 8, 8, generator=g),
            "caption": captions, "ir_caption": ir, "sample_id": [f"s{i}" for i in range(rows)]}


def _half(batch: dict, rank: int, per: int) -> dict:
    return {k: v[rank * per:(rank + 1) * per] for k, v in batch.items()}


def _gather_worker(rank: int, world: int, folder: str) -> None:
    from fusionrs_hf.train.clip import ClipTrainConfig, Training, resolve_config
    from fusionrs_hf.train.clip.ddp import setup

    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        cfg, _ = resolve_config(ClipTrainConfig(data="unused", recipe="C-mixed", dedupe_captions=True, batch_size=4,
                                                steps=1, grad_clip=0.0, device="cpu"))
        torch.manual_seed(0)
        model = _Stub()
        reference = copy.deepcopy(model)
        d = setup("cpu")  # the initialised group: this rank of two
        assert (d.rank, d.world, d.owned) == (rank, world, False)
        batch = _global_batch(4 * world)
        training = Training(cfg, model, 1, lr=1e-2, device=torch.device("cpu"), dist=d)
        loss, parts = training.step(_half(batch, rank, 4))
        got = {"loss": float(loss.detach()), "parts": parts, "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
               "params": {n: p.detach().clone() for n, p in model.named_parameters()}}
        if rank == 0:  # one process on the concatenated batch
            one = Training(cfg, reference, 1, lr=1e-2, device=torch.device("cpu"))
            loss1, parts1 = one.step(batch)
            got["one"] = {"loss": float(loss1.detach()), "parts": parts1,
                          "grads": {n: p.grad.clone() for n, p in reference.named_parameters()},
                          "params": {n: p.detach().clone() for n, p in reference.named_parameters()}}
        got["errors"] = _errors_on_one_rank(d)
        torch.save(got, f"{folder}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _errors_on_one_rank(d) -> dict:
    """What each rank raises when rank 0's evaluation fails, and when rank 1 cannot read its second batch."""
    from fusionrs_hf.decode import DecodeError
    from fusionrs_hf.train.errors import exit_code

    def failing_eval():
        raise DecodeError("sample_id=s3 shard=x.parquet row=3: not a JPEG")

    def loader():
        yield {"n": 1}
        if d.rank == 1:
            raise DecodeError("sample_id=s9 shard=y.parquet row=1: truncated")
        yield {"n": 2}

    got = {}
    for case, run in (("eval", lambda: d.on_main(failing_eval)), ("batches", lambda: list(d.batches(loader())))):
        try:
            run()
            got[case] = None
        except Exception as exc:  # noqa: BLE001 - what the rank would exit with
            got[case] = (type(exc).__name__, exit_code(exc), str(exc))
    got["after"] = d.ints(d.rank)  # the group still works: every rank left each case in step
    return got


def test_gathered_loss_and_gradients_equal_one_process_on_the_concatenated_batch(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    for name, value in ddp_env().items():
        if name in ("GLOO_SOCKET_IFNAME", "OMP_NUM_THREADS"):
            monkeypatch.setenv(name, value)
    procs = mp.spawn(_gather_worker, args=(2, str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not procs.join(timeout=1):  # a child's error is raised here
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail(f"the two processes did not finish in {TIMEOUT_S} s")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    one = r0["one"]
    assert set(one["parts"]) == {"ir-caption", "ir-ir_caption", "rgb-caption", "rgb-ir"}  # every kind of term
    for r in (r0, r1):
        assert r["loss"] == pytest.approx(one["loss"], rel=1e-6)
        assert r["parts"] == pytest.approx(one["parts"], rel=1e-6)
        for name, g in one["grads"].items():
            torch.testing.assert_close(r["grads"][name], g, rtol=1e-5, atol=1e-5, msg=name)
            torch.testing.assert_close(r["params"][name], one["params"][name], rtol=1e-5, atol=1e-5, msg=name)
    assert one["grads"]["text.weight"].abs().sum() > 0 and one["grads"]["scale"] != 0

    # an error on one rank stops both, with that rank's exit code (2: unusable input) and message
    e0, e1 = r0["errors"], r1["errors"]
    assert e0["eval"] == ("DecodeError", 2, "sample_id=s3 shard=x.parquet row=3: not a JPEG")
    assert e1["eval"] == ("PeerFailedError", 2, "train_clip: process 0 of 2 failed, so every process stops: "
                                                "sample_id=s3 shard=x.parquet row=3: not a JPEG")
    assert e1["batches"] == ("DecodeError", 2, "sample_id=s9 shard=y.parquet row=1: truncated")
    assert e0["batches"] == ("PeerFailedError", 2, "train_clip: process 1 of 2 failed, so every process stops: "
                                                   "sample_id=s9 shard=y.parquet row=1: truncated")
    assert e0["after"] == e1["after"] == [(0,), (1,)]


# ------------------------------------------------------------------------ (c) input errors stop every rank


_DRIVER = """
import runpy, sys, torch.distributed as d
d.init_process_group('gloo', init_method=sys.argv[1], rank=int(sys.argv[2]), world_size=2)
sys.argv = ['examples/train_clip.py'] + sys.argv[3:]
try:
    runpy.run_path('examples/train_clip.py', run_name='__main__')
finally:  # the caller made the group, the caller ends it (train_clip leaves a group it did not make alone)
    d.destroy_process_group()
"""
"""A process of a group its caller initialised (the path besides torchrun's): the rendezvous is a file."""


@pytest.fixture(scope="module")
def no_train_repo(tmp_path_factory):
    from fusionrs_hf.demo import make_sample_repo

    return make_sample_repo(tmp_path_factory.mktemp("notrain") / "repo", counts={"validation": 2, "test": 2},
                            size=32, max_rows=8)


@pytest.mark.parametrize("who", ["both", "rank 1"])
def test_an_input_error_exits_2_on_every_rank_with_one_line(who, no_train_repo, sample_repo, tmp_path):
    pytest.importorskip("transformers")
    store = f"file://{tmp_path}/store"
    data = [str(no_train_repo) if who == "both" or r == 1 else str(sample_repo) for r in (0, 1)]
    got = run_ranks(lambda r: [sys.executable, "-c", _DRIVER, store, str(r), "--data", data[r], "--model", "tiny",
                               "--image-size", "32", "--batch-size", "4", "--steps", "2", "--device", "cpu",
                               "--out", str(tmp_path / "run")])
    missing = (f"train_clip: config 'default' has no 'train' split in {no_train_repo} (its splits: validation, "
               "test)")
    lines = [err.strip().splitlines() for _, _, err in got]
    assert [rc for rc, _, _ in got] == [2, 2], lines
    assert [out for _, out, _ in got] == ["", ""]
    assert lines[1] == [missing]
    assert lines[0] == ([missing] if who == "both" else
                        [f"train_clip: process 1 of 2 failed, so every process stops: {missing[len('train_clip: '):]}"])
    assert not (tmp_path / "run").exists()


def test_world_size_without_a_rendezvous_is_one_line_exit_2(sample_repo, tmp_path, monkeypatch, capsys):
    """WORLD_SIZE set by hand, not by torchrun: the process group cannot start; one line, exit 2."""
    import importlib.util

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    spec = importlib.util.spec_from_file_location("example_ddp_train_clip", ROOT / "examples" / "train_clip.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--data", str(sample_repo), "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("train_clip: WORLD_SIZE says 2 processes, but the gloo process group did not start ("
                             ) and "torchrun --nproc_per_node" in err[0]
    assert not torch.distributed.is_initialized() and not (tmp_path / "run").exists()
