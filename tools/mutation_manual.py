"""Hand-written mutants: the breaks issue 15 found with every test green, plus module-level constants that
mutmut 3 does not mutate. Each must make its tests fail (called by ``tools/mutation.sh manual``).

    python tools/mutation_manual.py WORKDIR [NAME_PART]   # WORKDIR: a snapshot of the repo; NAME_PART: only those

Each mutant replaces one exact piece of source text; if the text is no longer in the file (the code was
rewritten), the mutant is reported ``stale`` instead of being run. Results: WORKDIR/manual.md (+ .json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

# name, file, old text, new text, tests (pytest node ids or files, -k allowed as "file::-k expr")
MUTANTS: list[tuple[str, str, str, str, list[str]]] = [
    ("check: IR near-duplicates off", "fusionrs_hf/check/joins.py",
     "for c_i, col in enumerate(IMAGE_FIELDS):", "for c_i, col in enumerate(IMAGE_FIELDS[:1]):",
     ["tests/test_promises_check.py", "tests/test_check.py"]),
    ("check: IR identical bytes off", "fusionrs_hf/check/joins.py",
     'okc = np.concatenate([(rows[f"{c}_sha0"] != 0) | (rows[f"{c}_sha1"] != 0) for c in IMAGE_FIELDS])',
     'okc = np.concatenate([((rows[f"{c}_sha0"] != 0) | (rows[f"{c}_sha1"] != 0)) & (c == "rgb") '
     'for c in IMAGE_FIELDS])',
     ["tests/test_promises_check.py", "tests/test_check.py"]),
    ("check: IR spread threshold 16 -> 22", "fusionrs_hf/check/images.py",
     "IR_SPREAD_THRESHOLD = 16.0", "IR_SPREAD_THRESHOLD = 22.0", ["tests/test_promises_check.py"]),
    ("check: IR spread threshold 16 -> 14", "fusionrs_hf/check/images.py",
     "IR_SPREAD_THRESHOLD = 16.0", "IR_SPREAD_THRESHOLD = 14.0", ["tests/test_promises_check.py"]),
    ("check: spread > threshold -> >=", "fusionrs_hf/check/shards.py",
     'stats["ir"].spread > task.ir_threshold', 'stats["ir"].spread >= task.ir_threshold',
     ["tests/test_promises_check.py"]),
    ("check: pHash radius 4 -> 5", "fusionrs_hf/check/joins.py",
     "PHASH_RADIUS = DEFAULT_RADIUS", "PHASH_RADIUS = 5", ["tests/test_promises_check.py"]),
    ("check: pHash radius 4 -> 3", "fusionrs_hf/check/joins.py",
     "PHASH_RADIUS = DEFAULT_RADIUS", "PHASH_RADIUS = 3", ["tests/test_promises_check.py"]),
    ("phash: median of all 64 coefficients, not the release's 63", "fusionrs_hf/phash.py",
     "threshold = np.partition(low[1:], 31)[31]", "threshold = np.median(low)",
     ["tests/test_promises_check.py::-k releases"]),
    ("check: images hashed on the reduced decode", "fusionrs_hf/check/images.py",
     "ph = phash(im)", "ph = phash(im.reduce(max(1, min(size) // STAT_SIZE)))",
     ["tests/test_promises_check.py::-k releases or both_columns"]),
    ("pairing: DiffV2IR's own size refused", "fusionrs_hf/pairing.py",
     "return same_aspect(rgb, ir) or tuple(ir) == diffv2ir_size(rgb)", "return same_aspect(rgb, ir)",
     ["tests/test_check.py::-k diffv2ir"]),
    ("captions: rc4 rewrites whitespace", "fusionrs_hf/captions/policies.py",
     "text = normalize(cand) if self.rule_kind else str(cand)", "text = normalize(cand)",
     ["tests/test_captions.py", "tests/test_promises_captions.py"]),
    ("phash: default radius 4 -> 5", "fusionrs_hf/phash.py",
     "DEFAULT_RADIUS = 4", "DEFAULT_RADIUS = 5", ["tests/test_promises_check.py"]),
    ("loader: shard order seeded by the seed alone", "fusionrs_hf/torch/dataset.py",
     "np.random.default_rng([self.seed, epoch]).permutation(n_units)",
     "np.random.default_rng(self.seed).permutation(n_units)", ["tests/test_promises_stream.py"]),
    ("build: --skip-rule ignored", "fusionrs_hf/build/plan.py",
     "skip_rules=opts.skip_rules, release_usable=usable", "skip_rules=(), release_usable=usable",
     ["tests/test_promises_build.py"]),
    ("build: --seed ignored", "fusionrs_hf/build/plan.py",
     "seed=opts.seed,", "seed=0,", ["tests/test_promises_build.py"]),
    ("build: --jpeg-quality ignored", "fusionrs_hf/build/images.py",
     'save(buf, format="JPEG", quality=jpeg_quality)', 'save(buf, format="JPEG", quality=95)',
     ["tests/test_promises_build.py"]),
    ("build: --non-jpeg jpeg ignored", "fusionrs_hf/build/images.py",
     'if non_jpeg == "jpeg":\n', 'if False:\n', ["tests/test_promises_build.py"]),
    ("build: --allow-size-mismatch ignored", "fusionrs_hf/build/shard.py",
     'and not ctx["allow_size_mismatch"]', "and True", ["tests/test_promises_build.py"]),
    ("card: `fusionrs card` writes nothing", "fusionrs_hf/card_cli.py",
     "print(write_card(", "print((lambda *a, **k: '')(", ["tests/test_promises_build.py::-k card"]),
    ("shards: content-defined chunking off by default", "fusionrs_hf/shards.py",
     "content_defined_chunking: bool = True", "content_defined_chunking: bool = False",
     ["tests/test_promises_shards.py"]),
    ("shards: row groups of 200 MB", "fusionrs_hf/shards.py",
     "DEFAULT_ROW_GROUP_BYTES = 100 * 1024 * 1024", "DEFAULT_ROW_GROUP_BYTES = 200 * 1024 * 1024",
     ["tests/test_promises_shards.py"]),
    ("shards: row groups of 40 MB", "fusionrs_hf/shards.py",
     "DEFAULT_ROW_GROUP_BYTES = 100 * 1024 * 1024", "DEFAULT_ROW_GROUP_BYTES = 40 * 1024 * 1024",
     ["tests/test_promises_shards.py"]),
    ("push: 100 files a commit", "fusionrs_hf/push/plan.py",
     "MAX_FILES_PER_COMMIT = 50", "MAX_FILES_PER_COMMIT = 100", ["tests/test_promises_push.py"]),
    ("push: 49 files a commit", "fusionrs_hf/push/plan.py",
     "MAX_FILES_PER_COMMIT = 50", "MAX_FILES_PER_COMMIT = 49", ["tests/test_promises_push.py"]),
    ("push: full check before pushing", "fusionrs_hf/push/flow.py",
     "check_repo(str(local), fast=True", "check_repo(str(local), fast=False", ["tests/test_promises_push.py"]),
    ("load: another default repo", "fusionrs_hf/layout.py",
     'DEFAULT_REPO_ID = "fusionrs/fusionrs"', 'DEFAULT_REPO_ID = "fusionrs/fusion-rs"',
     ["tests/test_promises_stream.py::-k load", "tests/test_promises_layout.py"]),
    ("load: $FUSIONRS_REPO ignored", "fusionrs_hf/__init__.py",
     'os.environ.get("FUSIONRS_REPO")', 'os.environ.get("FUSIONRS_REPO_ID")', ["tests/test_promises_stream.py::-k load"]),
    ("vlm: scene label keeps underscores", "fusionrs_hf/vlm_data.py",
     'label = (class_name or "").replace("_", " ").strip()', 'label = (class_name or "").strip()',
     ["tests/test_promises_stream.py::-k vlm"]),
    ("vlm: object answers in list order, not mention order", "fusionrs_hf/vlm_data.py",
     'return ", ".join(label for _, label in sorted(found)) or None',
     'return ", ".join(label for _, label in found) or None', ["tests/test_promises_stream.py::-k vlm"]),
    ("vlm: cue clauses joined with ', '", "fusionrs_hf/vlm_data.py",
     'text = "; ".join(cues)', 'text = ", ".join(cues)', ["tests/test_promises_stream.py::-k vlm"]),
    ("vlm trainer: ignore index -1", "fusionrs_hf/train/vlm/data.py",
     "IGNORE_INDEX = -100", "IGNORE_INDEX = -1", ["tests/test_promises_train.py"]),
    ("clip: InfoNCE one direction only", "fusionrs_hf/train/clip/loss.py",
     "return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2",
     "return F.cross_entropy(logits, target)", ["tests/test_promises_train.py"]),
    ("clip: temperature cap 100 -> 50", "fusionrs_hf/train/clip/loss.py",
     "MAX_LOGIT_SCALE = math.log(100.0)", "MAX_LOGIT_SCALE = math.log(50.0)", ["tests/test_promises_train.py"]),
    ("metrics: Mean R over all six directions", "fusionrs_hf/metrics.py",
     '("mean_r", PAPER_DIRECTIONS)', '("mean_r", DIRECTIONS)', ["tests/test_promises_metrics.py"]),
    ("pairing: pair_swapped never fires", "fusionrs_hf/pairing.py",
     "SWAP_GAIN = 0.8\n", "SWAP_GAIN = 99.0\n", ["tests/test_check.py::-k changed_places"]),
    ("jsonschema: ECMA $ read as Python's $", "fusionrs_hf/release/jsonschema.py",
     r'c = "\\Z"', 'c = "$"', ["tests/test_release.py::-k trailing_newline"]),
    ("build: an RSICD caption table's class column kept", "fusionrs_hf/build/options.py",
     'SourceSpec("RSICD", class_names=False)', 'SourceSpec("RSICD")', ["tests/test_build.py::-k class_name_hints"]),
    ("eval: a subset keeps the authors' protocol id", "fusionrs_hf/eval/protocol.py",
     '("" if self.complete is not False else "+subset")', '""', ["tests/test_eval.py::-k subset"]),
    ("limits: PIL's EPS opener left registered", "fusionrs_hf/limits.py",
     "        Image.OPEN.pop(fmt, None)\n", "        pass\n", ["tests/test_hardening.py::-k eps"]),
    ("limits: row groups never judged by the footer", "fusionrs_hf/limits.py",
     "    if size <= limit:\n        return None", "    if True:\n        return None",
     ["tests/test_hardening.py::-k row_group"]),
    ("limits: JPEG header walked byte by byte, not by segment length", "fusionrs_hf/limits.py",
     "        i += 2 + ((b[i + 2] << 8) | b[i + 3])\n    return 0", "        i += 2\n    return 0",
     ["tests/test_hardening.py::-k scan"]),
    ("secrets: storage options written by denylist only", "fusionrs_hf/storage.py",
     "        if str(k) not in PUBLIC_OPTION_KEYS:", "        if _is_secret_key(k):",
     ["tests/test_card.py::-k credential", "tests/test_storage.py"]),
    ("torch: WORLD_SIZE without a rank read as rank 0", "fusionrs_hf/torch/plan.py",
     'elif world_size > 1 and _env_int("RANK", -1) < 0:', "elif False:",
     ["tests/test_torch_stream.py::-k before_the_process_group"]),
    ("torch: an end-of-epoch state restored as it is", "fusionrs_hf/torch/loader.py",
     'if _find_key(state_dict, "_iterator_finished") is True:', "if False:",
     ["tests/test_lightning.py::-k end_of_an_epoch"]),
    ("eval: .npy header claims not checked", "fusionrs_hf/eval/embed.py",
     "    if need > member.file_size:", "    if False:", ["tests/test_hardening.py::-k bad_embedding"]),
    ("card: no pattern limit", "fusionrs_hf/card.py",
     "        if n > MAX_CARD_PATTERNS:", "        if False:", ["tests/test_card.py::-k past_the_limits"]),
    ("metrics: ties counted for the query", "fusionrs_hf/metrics.py",
     "rank = 1 + ((~r) & (s >= best)).sum(axis=1)", "rank = 1 + ((~r) & (s > best)).sum(axis=1)",
     ["tests/test_promises_metrics.py"]),
    ("limits: a footer that understates its pages read", "fusionrs_hf/limits.py",
     "            if got > c.total_uncompressed_size:", "            if False:",
     ["tests/test_parquet_pages.py::-k understates"]),
    ("limits: rows not held to the shard's bytes", "fusionrs_hf/limits.py",
     "MIN_BYTES_PER_ROW = 64", "MIN_BYTES_PER_ROW = 0", ["tests/test_parquet_pages.py::-k more_rows"]),
    ("pil_guard: JPEG scans not counted on datasets' decode", "fusionrs_hf/pil_guard.py",
     "        if scans > limits.MAX_JPEG_SCANS:", "        if False:", ["tests/test_load_image_limits.py"]),
    ("secrets: header values not secrets", "fusionrs_hf/secrets.py",
     "_register_value(v, str(name).lower() not in PUBLIC_HEADER_NAMES, _depth + 2)",
     "_register_value(v, False, _depth + 2)", ["tests/test_storage.py::-k header_values"]),
    ("terminal: newlines from data printed as they are", "fusionrs_hf/terminal.py",
     '_ACTIVE = re.compile("[\\x00-\\x08\\x0a-\\x1f', '_ACTIVE = re.compile("[\\x00-\\x08\\x0b-\\x1f',
     ["tests/test_terminal.py"]),
    ("card: alias expansion not bounded", "fusionrs_hf/card.py",
     "    _refuse_expansion(data)\n    return data", "    return data", ["tests/test_card.py::-k alias"]),
    ("release: caption-key counts not compared", "fusionrs_hf/release/verify.py",
     "    if (len(per_key), shared) != (release.caption_keys, release.caption_shared_keys):", "    if False:",
     ["tests/test_release.py::-k caption_choice"]),
    ("captions: strict-v3 filter on whitespace-collapsed text", "fusionrs_hf/captions/policies.py",
     'violations(str(text), "ir_filter", skip)', 'violations(flat, "ir_filter", skip)',
     ["tests/test_promises_captions.py::-k authors_did"]),
    ("torch: Lightning's own DistributedSampler kept", "fusionrs_hf/torch/mapstyle.py",
     "        if type(sampler) in (DistributedSampler, _LateRankSampler):", "        if False:",
     ["tests/test_lightning.py::-k ddp"]),
    ("push: an unfinished build pushed", "fusionrs_hf/push/flow.py",
     "    if unfinished:\n        raise CliError(unfinished)", "    if False:\n        raise CliError(unfinished)",
     ["tests/test_push_guards.py::-k interrupted_build"]),
    ("push: the manifest trusted on size alone", "fusionrs_hf/push/store.py",
     'm.get("stamp", _stamp(info)) == _stamp(info)', "True", ["tests/test_push.py::-k same_size_rewrite"]),
]


def _pytest_args(tests: list[str]) -> list[str]:
    args = []
    for t in tests:
        if "::-k " in t:
            path, expr = t.split("::-k ", 1)
            args += [path, "-k", expr]
        else:
            args.append(t)
    return args


def main(workdir: str, only: str | None = None) -> int:
    """Run every mutant (or those whose name holds ``only``) in ``workdir``, a snapshot of the repo."""
    root = Path(workdir)
    results = []
    for name, rel, old, new, tests in MUTANTS:
        if only and only not in name:
            continue
        path = root / rel
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if text.count(old) != 1:
            results.append({"mutant": name, "file": rel, "status": "stale", "seconds": 0,
                            "detail": f"the text to replace occurs {text.count(old)} times"})
            print(f"stale     {name}", flush=True)
            continue
        t0 = time.time()
        path.write_text(text.replace(old, new), encoding="utf-8")
        try:
            p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                *_pytest_args(tests)], cwd=root, capture_output=True, text=True, timeout=600)
        finally:
            path.write_text(text, encoding="utf-8")
        last = (p.stdout.strip().splitlines() or [""])[-1]
        failed = [ln.split(" ", 1)[1].split(" - ")[0] for ln in p.stdout.splitlines() if ln.startswith("FAILED ")]
        status = "killed" if p.returncode == 1 else ("survived" if p.returncode == 0 else f"error rc={p.returncode}")
        results.append({"mutant": name, "file": rel, "status": status, "seconds": round(time.time() - t0, 1),
                        "detail": (failed[0] if failed else last)})
        print(f"{status:<9} {name}  ({results[-1]['detail']})", flush=True)
    (root / "manual.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    lines = ["| mutant | file | result | first failing test |", "|---|---|---|---|"]
    lines += [f"| {r['mutant']} | `{r['file']}` | {r['status']} | `{r['detail']}` |" for r in results]
    (root / "manual.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    bad = [r for r in results if r["status"] != "killed"]
    print(f"manual: {len(results)} mutants, killed {len(results) - len(bad)}, other {len(bad)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
