"""Issue 13: an unreachable or offline Hub. Every entry point fails within seconds, with one line naming the
repo and the endpoint; the Python API raises one documented type, ``fusionrs_hf.storage.HubUnreachableError``.

Three Hubs a user can meet: an endpoint that refuses connections, one that accepts and never answers
(``FUSIONRS_HUB_TIMEOUT`` bounds the wait), and ``HF_HUB_OFFLINE=1``. Each client runs in its own process
with the real ``huggingface_hub`` client, as a user's would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = "someone/fusionrs"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def refused() -> str:
    """An endpoint on 127.0.0.1 nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def silent():
    """An endpoint that accepts connections and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def _env(endpoint: str, **extra) -> dict:
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
           "HF_TOKEN": "hf_OfflineTestToken0123456789", "HF_HUB_DISABLE_TELEMETRY": "1", **extra}
    return {k: v for k, v in env.items() if v is not None}


_API = r"""
import json, sys, time, traceback
from fusionrs_hf.storage import HubUnreachableError
repo, local = sys.argv[1], sys.argv[2]

def entry_points():
    import fusionrs_hf
    from fusionrs_hf.check import check_repo
    from fusionrs_hf.eval import evaluate
    from fusionrs_hf.push import push_repo
    from fusionrs_hf.splits import repo_splits
    from fusionrs_hf.torch import FusionRSIterable, make_dataloader
    from fusionrs_hf.vlm_data import make_vlm_dataloader
    return {
        "load": lambda: fusionrs_hf.load("iraware", split="train", streaming=True, repo=repo),
        "make_dataloader": lambda: make_dataloader(repo, num_workers=2),
        "FusionRSIterable": lambda: FusionRSIterable(f"hf://datasets/{repo}@v1", "default", "test"),
        "check_repo": lambda: check_repo(repo, fast=True),
        "push_repo": lambda: push_repo(local, repo, skip_check=True),
        "push_repo dry_run": lambda: push_repo(local, repo, skip_check=True, dry_run=True),
        "evaluate": lambda: evaluate(repo, embeddings=local + "/none.npz"),
        "repo_splits": lambda: repo_splits(repo),
        "make_vlm_dataloader": lambda: make_vlm_dataloader(repo, setting="B-iraware", task="ir_caption"),
    }

out = {}
for name, call in entry_points().items():
    t0 = time.monotonic()
    try:
        call()
        out[name] = {"raised": None}
    except Exception as e:
        out[name] = {"raised": type(e).__name__, "unreachable": isinstance(e, HubUnreachableError),
                     "message": str(e), "endpoint": getattr(e, "endpoint", None), "repo": getattr(e, "repo", None),
                     "trace": traceback.format_exc()[-1500:]}
    out[name]["seconds"] = time.monotonic() - t0
print(json.dumps(out))
"""


def _api(env: dict, local: Path) -> dict:
    res = subprocess.run([sys.executable, "-c", _API, REPO, str(local)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _assert_all_unreachable(out: dict, endpoint: str, limit_s: float, must: str = "") -> None:
    for name, got in out.items():
        assert got["raised"] and got["unreachable"], (name, got)
        msg = got["message"]
        assert "\n" not in msg and REPO in msg and endpoint in msg, (name, msg)
        assert must in msg, (name, msg)
        assert "resume" not in msg, (name, msg)  # nothing was written: nothing to resume
        assert got["seconds"] < limit_s, (name, got["seconds"])


def test_refused_endpoint_every_python_entry_point(refused, sample_repo):
    out = _api(_env(refused), sample_repo)
    _assert_all_unreachable(out, refused, 5.0, must="cannot reach")
    assert out["push_repo"]["raised"] == "PushHubUnreachable"  # also a PushError, for existing handlers
    assert out["check_repo"]["endpoint"] == refused and out["load"]["repo"] == REPO


def test_offline_mode_every_python_entry_point(sample_repo):
    out = _api(_env("http://127.0.0.1:9", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"), sample_repo)
    _assert_all_unreachable(out, "http://127.0.0.1:9", 5.0, must="HF_HUB_OFFLINE")


def test_silent_endpoint_times_out(silent):
    code = ("import sys, time\nfrom fusionrs_hf.storage import HubUnreachableError\n"
            "from fusionrs_hf.torch import make_dataloader\n"
            "t = time.monotonic()\ntry:\n    make_dataloader(sys.argv[1])\nexcept HubUnreachableError as e:\n"
            "    print(round(time.monotonic() - t, 2), e)\n")
    res = subprocess.run([sys.executable, "-c", code, REPO], capture_output=True, text=True, timeout=120,
                         env=_env(silent, FUSIONRS_HUB_TIMEOUT="1"))
    assert res.returncode == 0 and res.stdout, res.stderr[-2000:]
    seconds, msg = res.stdout.split(" ", 1)
    assert float(seconds) < 4 and REPO in msg and silent in msg and "within 1 s" in msg, res.stdout


def _one_error_line(res: subprocess.CompletedProcess, *must: str) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert all(m in lines[0] for m in must), lines[0]
    return lines[0]


@pytest.mark.parametrize("mode", ["refused", "offline"])
def test_cli_entry_points_one_line_exit_2(mode, refused, sample_repo):
    endpoint = refused if mode == "refused" else "http://127.0.0.1:9"
    env = _env(endpoint, **({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"} if mode == "offline" else {}))
    runs = {
        "check": ["check", REPO, "--fast", "--quiet"],
        "push": ["push", str(sample_repo), REPO, "--quiet", "--skip-check"],
        "push --dry-run": ["push", str(sample_repo), REPO, "--dry-run", "--skip-check"],
        "eval": ["eval", REPO, "--embeddings", str(sample_repo / "none.npz"), "--quiet"],
    }
    for name, args in runs.items():
        res = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                             timeout=120, env=env)
        assert res.returncode == 2, (name, res.returncode, res.stderr[-1500:])
        line = _one_error_line(res, REPO, endpoint)
        assert "resume" not in line, (name, line)


def test_example_trainers_fail_fast_on_an_unreachable_hub(refused, sample_repo):
    env = _env(refused)
    clip = subprocess.run([sys.executable, str(ROOT / "examples/train_clip.py"), "--data", REPO, "--model", "tiny",
                           "--steps", "1"], capture_output=True, text=True, timeout=180, env=env)
    assert clip.returncode == 2, clip.stderr[-2000:]
    _one_error_line(clip, REPO, refused)
    # a model id on the unreachable Hub (the data is local): seconds, not minutes of retries
    vlm = subprocess.run([sys.executable, str(ROOT / "examples/train_vlm.py"), "--data", str(sample_repo),
                          "--model", "someone/no-such-vlm", "--steps", "1", "--eval-split", "none"],
                         capture_output=True, text=True, timeout=180, env=env)
    assert vlm.returncode == 2, vlm.stderr[-2000:]
    _one_error_line(vlm, "someone/no-such-vlm", refused)


def test_a_mistyped_model_fails_at_once_on_a_reachable_hub(sample_repo):
    """``--model tyny``: the Hub answers that there is no such model; one line, exit 2."""
    from fusionrs_hf.testing.hub_server import HubServer

    with HubServer() as hub:
        url = hub.url
        vlm = subprocess.run([sys.executable, str(ROOT / "examples/train_vlm.py"), "--data", str(sample_repo),
                              "--model", "tyny", "--steps", "1", "--eval-split", "none"],
                             capture_output=True, text=True, timeout=180, env=_env(url))
        asked = hub.count("GET", r"^/api/models/tyny")
    assert vlm.returncode == 2, vlm.stderr[-2000:]
    _one_error_line(vlm, "tyny", "not found", url)
    assert asked == 1  # one question, no retries
