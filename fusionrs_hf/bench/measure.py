"""What a pass measures and checks: rows/s, time to first batch, the same sample ids and images as ours, the
decode limits (c) and (c'), and peak RSS in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from .data import _shards
from .pipelines import loader_ours

# Per-sample channel means of two pipelines' output may differ by this much (CLIP-normalized units, about
# 0.27 of the 0..1 pixel range per unit): ours decodes at reduced DCT scale, the peers at full size, and
# the resize then sees different pixels. A wrong normalization, layout or dtype is off by far more.
FINGERPRINT_TOL = 0.25


_FP_NORM = None


def _grid(images):
    """The pixels a fingerprint looks at: every 16th row and column of each image, copied.

    The only check work done inside a timed loop: one small strided copy per batch (about 19k values at
    224 px, below torch's threading grain, so no OpenMP pool wakes). Normalizing and averaging there
    measured 0.5 ms a batch in the training process, and with torch's threads spinning on a 2-core machine
    it took 3-5% of ours' rows/s from the workers: the check's cost, charged to the pipeline it checks.
    The copy is needed because a uint8 batch's memory is a reused slot."""
    return images[:, :, ::16, ::16].clone()


def _fingerprint(grid):
    """Per-sample channel means of a :func:`_grid`, CLIP-normalized: (B, 3). uint8 grids are normalized
    first, so every pipeline's fingerprints compare with ours. Computed after the clock stops."""
    global _FP_NORM
    if grid.dtype == _torch().uint8:
        if _FP_NORM is None:
            from ..decode import Normalizer

            _FP_NORM = Normalizer()
        grid = _FP_NORM.on_device(grid)
    return grid.float().mean(dim=(2, 3))


def _torch():
    import torch

    return torch


def time_pass(loader) -> dict:
    """One full pass: rows/s from the first batch to the last (start-up excluded), plus what the checks need:
    the sample ids read, the image shape and dtype, and per-sample fingerprints (see :func:`_fingerprint`,
    computed from the :func:`_grid` copies once the pass is timed)."""
    t_start = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t0 = time.perf_counter()
    n, ids = 0, list(first["sample_id"])
    grids = [_grid(first["rgb"]), _grid(first["ir"])]
    shape, dtype = tuple(first["rgb"].shape[1:]), first["rgb"].dtype
    for batch in it:
        n += len(batch["sample_id"])
        ids += batch["sample_id"]
        grids.append(_grid(batch["rgb"]))
        grids.append(_grid(batch["ir"]))
        assert batch["ir"].dtype == batch["rgb"].dtype
    t1 = time.perf_counter()
    torch = _torch()
    fps = [_fingerprint(g) for g in grids]
    fp = torch.cat([torch.cat(fps[0::2]), torch.cat(fps[1::2])], dim=1)  # (rows, 6): rgb and ir means
    return {"rows": n, "rows_total": len(ids), "unique": len(set(ids)), "seconds": t1 - t0,
            "startup_s": t0 - t_start, "samples_per_s": n / (t1 - t0) if t1 > t0 else float("nan"),
            "shape": shape, "dtype": str(dtype).replace("torch.", ""),
            "_ids": ids, "_fp": fp}


def _first_batch_pass(make) -> dict:
    """:func:`time_pass` of ``make()``, plus ``first_batch_s``: from the loader's construction (planning
    included) to its first batch."""
    t0 = time.perf_counter()
    loader = make()
    build_s = time.perf_counter() - t0
    r = time_pass(loader)
    r["first_batch_s"] = build_s + r["startup_s"]
    return r


def check_same_output(name: str, r: dict, ref: dict, expect_dtype: str | None = None) -> float:
    """Raise unless pipeline ``r`` read exactly ``ref``'s sample ids, each once, with ``ref``'s image shape,
    ``expect_dtype`` (default: ``ref``'s) and per-sample fingerprints within FINGERPRINT_TOL. Returns the
    largest fingerprint difference."""
    ids, ref_ids = r["_ids"], ref["_ids"]
    if len(ids) != len(set(ids)):
        raise RuntimeError(f"{name}: {len(ids)} rows but {len(set(ids))} unique sample ids")
    if set(ids) != set(ref_ids):
        missing, extra = set(ref_ids) - set(ids), set(ids) - set(ref_ids)
        raise RuntimeError(f"{name}: read {len(ids)} rows, ours {len(ref_ids)}; missing {sorted(missing)[:3]}, "
                           f"not in ours {sorted(extra)[:3]}")
    if tuple(r["shape"]) != tuple(ref["shape"]) or r["dtype"] != (expect_dtype or ref["dtype"]):
        raise RuntimeError(f"{name}: images {tuple(r['shape'])} {r['dtype']}, expected {tuple(ref['shape'])} "
                           f"{expect_dtype or ref['dtype']}")
    pos = {sid: i for i, sid in enumerate(ref_ids)}
    order = _torch().tensor([pos[sid] for sid in ids])
    diff = float((r["_fp"] - ref["_fp"][order]).abs().max())
    if not diff <= FINGERPRINT_TOL:
        raise RuntimeError(f"{name}: images differ from ours (per-sample channel mean off by {diff:.3f} "
                           f"normalized units, tolerance {FINGERPRINT_TOL}): wrong decode or normalization?")
    return diff


def _decode_worker(args_tuple) -> tuple[int, float]:
    payload, size, barrier_time, normalize, batch = args_tuple

    from ..decode import Normalizer, decode_resize, empty_images

    # (c'): batch-sized float32 buffers, 4 of them in turn, in the loader's default (channels-last)
    # layout, like the slots our workers write into
    norm = Normalizer() if normalize else None
    ring = [empty_images((2, batch, 3, size, size)).zero_() for _ in range(4)] if normalize else []
    while time.time() < barrier_time:  # start both processes together
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i, (rgb, ir) in enumerate(payload):
        a, b = decode_resize(rgb, size), decode_resize(ir, size)
        if norm is not None:
            slot, j = ring[(i // batch) % 4], i % batch
            norm(a, slot[0, j])
            norm(b, slot[1, j])
    return len(payload), time.perf_counter() - t0


def decode_limit(repo: Path, args, normalize: bool = False) -> dict:
    """(c): our decode+resize of both images, bytes in memory, ``workers`` processes, no pipeline.

    ``normalize=True`` gives (c'), which also normalizes into float32 batch memory.
    """
    import multiprocessing as mp

    import pyarrow.parquet as pq

    from ..schema import IMAGE_FIELDS

    pairs = []
    for p in _shards(repo):
        t = pq.read_table(p, columns=list(IMAGE_FIELDS))
        pairs += list(zip(t.column("rgb").combine_chunks().field("bytes").to_pylist(),
                          t.column("ir").combine_chunks().field("bytes").to_pylist(), strict=True))
    k = max(1, args.workers)
    parts = [pairs[i::k] for i in range(k)]
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(k, initializer=_init_torch_threads) as pool:
        pool.map(_noop, range(k))  # processes up and torch imported before the clock starts
        start_at = time.time() + 0.5
        res = pool.map(_decode_worker, [(part, args.image_size, start_at, normalize, args.batch_size)
                                        for part in parts])
    rows = sum(r for r, _ in res)
    wall = max(s for _, s in res)
    return {"rows": rows, "seconds": wall, "samples_per_s": rows / wall}


def _init_torch_threads() -> None:
    import torch

    torch.set_num_threads(1)  # as in DataLoader workers


def _noop(_):
    import fusionrs_hf.decode  # noqa: F401

    return 0




def rss_child(repo: str, args) -> dict:
    """Run in a fresh process: one full shuffled pass, sampling RSS/PSS of this process + workers."""
    from ..storage import require

    psutil = require("psutil", extra="bench", what="fusionrs bench (memory sampling)")

    proc = psutil.Process()
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = pss = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    mi = p.memory_full_info()
                    rss += mi.rss
                    pss += getattr(mi, "pss", mi.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            samples.append((time.perf_counter(), rss / 2**20, pss / 2**20))
            stop.wait(0.1)

    loader = loader_ours(Path(repo), args, shuffle=True)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    n = 0
    marks = []
    for batch in loader:
        n += len(batch["sample_id"])
        float(batch["rgb"].sum() + batch["ir"].sum())  # read every pixel, as a training step would
        if samples:
            marks.append((n, samples[-1][1]))
    stop.set()
    th.join()
    rss = [s[1] for s in samples]
    pss = [s[2] for s in samples]
    quarter = [m[1] for m in marks if m[0] <= n / 4] or rss[:1]
    return {"rows": n, "peak_rss_mb": max(rss), "peak_pss_mb": max(pss), "rss_first_quarter_mb": max(quarter),
            "rss_last_mb": rss[-1], "shuffle_buffer": 1000}


def measure_rss(repo: Path, args) -> dict:
    cmd = [sys.executable, "-m", "fusionrs_hf.bench", "--rss-child", str(repo), "--batch-size", str(args.batch_size),
           "--workers", str(args.workers), "--image-size", str(args.image_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"RSS pass failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])



class _RssSampler:
    """Peak RSS of this process and its children, sampled every 0.1 s while active (psutil)."""

    def __init__(self) -> None:
        from ..storage import require

        self.psutil = require("psutil", extra="bench", what="fusionrs bench (memory sampling)")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        proc = self.psutil.Process()
        while not self._stop.is_set():
            rss = 0.0
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except (self.psutil.NoSuchProcess, self.psutil.AccessDenied):
                    pass
            self.samples.append(rss / 2**20)
            self._stop.wait(0.1)

    def __enter__(self) -> _RssSampler:
        self._th.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._th.join()

    def summary(self) -> dict:
        s = self.samples or [0.0]
        return {"peak_rss_mb": round(max(s), 1), "rss_first_quarter_mb": round(max(s[: max(1, len(s) // 4)]), 1),
                "rss_last_mb": round(s[-1], 1)}

