"""Two CPU processes of one gloo group, for the tests that run real DDP (train_clip, Lightning).

The ranks meet through a file: torchrun's rendezvous store (and Lightning's, which is torch's TCPStore) listens
on every interface, and a test's servers listen on 127.0.0.1 only. gloo's own connections stay on the loopback
device. A run that hangs fails its test after :data:`TIMEOUT_S` instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 150


def ddp_env(**extra: str) -> dict[str, str]:
    """This process's environment without any rank a launcher set, one thread a process, the repo importable."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    env.pop("FUSIONRS_TRACEBACK", None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return {**env, **extra}


def run_ranks(argv: Callable[[int], list[str]], env: Callable[[int], dict[str, str]] = lambda r: ddp_env(),
              timeout: float = TIMEOUT_S) -> list[tuple[int, str, str]]:
    """Start ``argv(r)`` for ranks 0 and 1 together (cwd: the repo root); (returncode, stdout, stderr) each."""
    procs = [subprocess.Popen(argv(r), cwd=ROOT, env=env(r), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    try:
        got = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, got, strict=True)]
