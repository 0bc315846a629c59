"""The benchmark's targets, its markdown table, and its section of BENCHMARKS.md (the shared atomic writer
every benchmark tool uses)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .data import CONFIG, SPLIT

SECTION = "stream"
START, END = f"<!-- bench:{SECTION}:start -->", f"<!-- bench:{SECTION}:end -->"
# ratio (or value) -> target; every key is also a key of the --json result. Targets are minimums except
# for the keys in AT_MOST.
TARGETS = {"vs_stock": 1.5, "vs_webdataset": 1.2, "vs_litdata": 1.2, "vs_mosaic": 1.2,
           "vs_decode_norm_limit": 0.92, "uint8_vs_decode_limit": 0.90, "peak_rss_mb": 1536,
           "remote_vs_local": 0.9, "remote_vs_stock": 3.0, "first_batch_s_remote": 2.0}
AT_MOST = {"peak_rss_mb", "first_batch_s_remote"}


def render_remote(res: dict) -> list[str]:
    r, rem = res["results"], res["remote"]
    ours, stock, plan = r["remote_ours"], r["remote_stock"], r["remote_plan"]
    local_first = r["ours"].get("first_batch_s")
    return [
        "",
        f"### Remote: the same repo over HTTP ({rem['latency_ms']:g} ms per request, {rem['bandwidth_mbps']:g} Mbit/s)",
        "",
        "Served by the local Hub-API server (`fusionrs_hf.testing.hub_server`) on 127.0.0.1, read with the real "
        f"`huggingface_hub` client; ours with `read_ahead={rem['read_ahead']}`.",
        "",
        "| pipeline | samples/s | first batch (s) | peak RSS (MB) | ours remote ÷ this | target |",
        "|---|---:|---:|---:|---:|---|",
        f"| **ours, remote** | **{ours['samples_per_s']:.0f}** | {ours['first_batch_s']:.2f} | {ours['peak_rss_mb']:.0f} "
        "| 1.00 | |",
        f"| ours, local | {r['ours']['samples_per_s']:.0f} | "
        f"{'-' if local_first is None else f'{local_first:.2f}'} | - | {_ratio_cell(1 / res['remote_vs_local'])} | "
        + _target_cell(res, "remote_vs_local", f"remote ÷ local = {res['remote_vs_local']:.2f}, ≥ 0.9") + " |",
        f"| stock `datasets` streaming, remote | {stock['samples_per_s']:.0f} | {stock['first_batch_s']:.2f} "
        f"| {stock['peak_rss_mb']:.0f} | {_ratio_cell(res['remote_vs_stock'])} | "
        + _target_cell(res, "remote_vs_stock", "≥ 3") + " |",
        "",
        f"The link: ours remote moved {ours['bytes_served'] / ours['rows_total'] / 1e3:.0f} KB per row, so "
        f"{rem['bandwidth_mbps']:g} Mbit/s carries at most {res['remote_link_rows_per_s']:.0f} rows/s; ours remote "
        f"reached {res['remote_vs_attainable']:.2f} of the lower of that and ours local (what no loader on this "
        "link could beat).",
        "",
        f"Plan at {plan['shards']} shards ({plan['units']} row groups), remote: plan {plan['plan_s']:.2f} s, first "
        f"batch {plan['first_batch_s']:.2f} s ({_target_cell(res, 'first_batch_s_remote', 'target ≤ 2 s')}). "
        f"RSS over the remote pass: first quarter {ours['rss_first_quarter_mb']:.0f} MB, peak {ours['peak_rss_mb']:.0f} "
        f"MB, end {ours['rss_last_mb']:.0f} MB.",
    ]




def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        mem = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "os": platform.platform()}


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("fusionrs-hf", "torch", "datasets", "pyarrow", "pillow", "simplejpeg", "webdataset", "litdata",
                "mosaicml-streaming", "torchvision", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def _ratio_cell(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _target_cell(res: dict, key: str, text: str) -> str:
    met = res.get("targets_met", {}).get(key)
    return text if met is None else f"{text} ({'meets' if met else 'NO'})"


def render_markdown(res: dict) -> str:
    r = res["results"]
    m, v = res["machine"], res["versions"]
    sps = lambda k: f"{r[k]['samples_per_s']:.0f}"  # noqa: E731
    shards = res.get("peer_shards", {})
    decode = res.get("peer_decode", {})
    lines = [
        "## Streaming into torch (`fusionrs bench`)",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM ({m['os']})  ",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "  ",
        f"Data: {res['rows']} triplets ({res['source_size']} px textured JPEGs, q90) in {res['shards']} parquet "
        f"shards, config `{CONFIG}` split `{SPLIT}`; batch {res['batch_size']}, {res['workers']} DataLoader "
        f"workers, both images decoded, output {res['image_size']} px (centre crop, resize, CLIP-normalized).",
        "",
        "| pipeline | samples/s | ours ÷ this | target |",
        "|---|---:|---:|---|",
        f"| **fusionrs_hf.torch.make_dataloader** | **{sps('ours')}** | 1.00 | |",
        f"| ours with `normalize=False` (uint8 batches; normalize on the GPU) | {sps('ours_uint8')} | "
        f"{r['ours']['samples_per_s'] / r['ours_uint8']['samples_per_s']:.2f} | "
        + _target_cell(res, "uint8_vs_decode_limit", f"this ÷ (c) = {_ratio_cell(res['uint8_vs_decode_limit'])}, "
                       "target ≥ 0.90") + " |",
        f"| (a) stock `datasets` streaming + `with_format(\"torch\")` + same resize | {sps('stock')} "
        f"| {_ratio_cell(res['vs_stock'])} | {_target_cell(res, 'vs_stock', '≥ 1.5')} |",
        f"| (b) WebDataset tars, `decode(\"pil\")` + same resize | {sps('webdataset')} "
        f"| {_ratio_cell(res['vs_webdataset'])} | {_target_cell(res, 'vs_webdataset', '≥ 1.2')} |",
        f"| (b') WebDataset tars + our decoder (for reference) | {sps('webdataset_ours')} "
        f"| {_ratio_cell(res['ours_vs_wds_our_decode'])} | |",
    ]
    if "litdata" in r:
        lines.append(
            f"| (d) litdata `StreamingDataset` + `StreamingDataLoader`, its `optimize` chunks ({shards.get('litdata', '?')}), "
            f"decode: {decode.get('litdata', '?')}, same resize | {sps('litdata')} | {_ratio_cell(res['vs_litdata'])} "
            f"| {_target_cell(res, 'vs_litdata', '≥ 1.2')} |")
    if "mosaic" in r:
        lines.append(
            f"| (e) MosaicML streaming `StreamingDataset` + `StreamingDataLoader`, MDS shards ({shards.get('mosaic', '?')}), "
            f"decode: {decode.get('mosaic', '?')}, same resize | {sps('mosaic')} | {_ratio_cell(res['vs_mosaic'])} "
            f"| {_target_cell(res, 'vs_mosaic', '≥ 1.2')} |")
    lines += [
        f"| (c) decode+resize limit, bytes in memory, {res['workers']} processes | {sps('decode_limit')} "
        f"| {_ratio_cell(res['vs_decode_limit'])} | (reference for the uint8 row) |",
        f"| (c') decode+resize+normalize into float32 batch memory, same tight loop | {sps('decode_norm_limit')} "
        f"| {_ratio_cell(res['vs_decode_norm_limit'])} | {_target_cell(res, 'vs_decode_norm_limit', '≥ 0.92')} |",
        "",
    ]
    for name, why in res.get("skipped", {}).items():
        lines += [f"Skipped {'(d) litdata' if name == 'litdata' else '(e) MosaicML streaming'}: {why}.", ""]
    if res.get("rss"):
        s = res["rss"]
        lines += [
            f"Memory, one full shuffled pass (shuffle buffer 1,000 rows), main process + {res['workers']} workers: "
            f"peak RSS **{s['peak_rss_mb']:.0f} MB** (sum of RSS, shared pages counted in every process; PSS "
            f"{s['peak_pss_mb']:.0f} MB); highest in the first quarter of the pass {s['rss_first_quarter_mb']:.0f} MB, "
            f"at the end {s['rss_last_mb']:.0f} MB ({_flatness(s)}). Target < 1,500 MB.",
            "",
        ]
    lines += [
        "Measured: wall time from the first batch to the last of one full pass (worker start-up excluded for every "
        f"pipeline), best of the passes: {res.get('repeat', 3)} interleaved rounds of every pipeline, and "
        f"{res.get('decode_repeat', res.get('repeat', 3))} of ours, ours uint8, (c) and (c') (the decode-limit "
        "ratios' margins are smaller than the run-to-run spread of 3 passes). (a) decodes with `datasets`' own full-size PIL decode; (b) with "
        "webdataset's `decode(\"pil\")`; (d) and (e) read the same JPEG bytes (not re-encoded) from their own "
        "formats, written by their own writers in chunks/shards of at most the largest parquet shard's size, and "
        "decode them full size as the row says; all four then run the same centre-crop/resize/normalize code "
        "as ours. "
        "(c) runs only our decode+resize (no reading, normalization, batching or IPC); (c') adds the float32 "
        "normalization into batch memory, so it is the same work as ours without reading, batching and IPC: "
        "the decode-limit target is ours ÷ (c') ≥ 0.92, and for uint8 batches, which skip the normalization, "
        "`normalize=False` ÷ (c) ≥ 0.90. Every pass is checked: each pipeline reads exactly ours' sample ids, "
        "each once, with images of the same shape, dtype and normalization. Ratios come from one run.",
        "",
        "Targets met: " + ", ".join(f"{k} {'yes' if ok else 'NO'}" for k, ok in res["targets_met"].items()) + ".",
    ]
    if "remote_ours" in r and res.get("remote"):
        lines += render_remote(res)
    if res.get("notes"):
        lines += ["", res["notes"]]
    return "\n".join(lines)


def replace_section(path: Path, start: str, end: str, block: str) -> None:
    """Replace (or append) one marked section (``block`` starts with ``start`` and ends with ``end``) of
    BENCHMARKS.md, atomically; every benchmark tool writes its own section through this."""
    from ..atomic import atomic_write

    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(path, text)


def write_section(path: Path, body: str) -> None:
    """Replace (or append) only this benchmark's marked section of BENCHMARKS.md."""
    replace_section(path, START, END, f"{START}\n{body.rstrip()}\n{END}")


def _default_benchmarks_path() -> Path:
    root = Path(__file__).resolve().parents[2]
    return root / "BENCHMARKS.md" if (root / "pyproject.toml").exists() else Path.cwd() / "BENCHMARKS.md"


def _flatness(s: dict) -> str:
    """What the RSS samples say about growth: the end against the first quarter's highest (within 10%: flat).
    A short (--quick) pass may still be filling its buffers in its first quarter."""
    first, last = s["rss_first_quarter_mb"], s["rss_last_mb"]
    if last <= first * 1.10:
        return "flat: no growth with rows read"
    return f"grew {last / first - 1:.0%} after the first quarter: a short pass may still be filling its buffers"


def targets_met(res: dict) -> dict[str, bool]:
    """``{key: met}`` for every TARGETS key whose value this run has (a skipped row or pass has none)."""
    met = {}
    for key, target in TARGETS.items():
        value = res.get(key)
        if value is not None:
            met[key] = value <= target if key in AT_MOST else value >= target
    return met
