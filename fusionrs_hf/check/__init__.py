"""Verify a FusionRS repo before training on it or publishing it: pairing, counts and split leakage.

TARGET is a local repo folder, an fsspec URL (``file://``, ``hf://datasets/user/name@rev``, ``s3://``
...) or a Hub dataset id (``user/name``, read through ``hf://`` with --revision).

Two depths:

  --fast   columns only, no image decode: every shard's schema equals the registry's; no
           duplicate sample_id; the files named by the card's YAML exist and every data file is
           in the configs the registry puts it in; per config/split counts and bytes equal the
           card's dataset_info; iraware rows have an ir_caption and base rows none; stored
           SHA-256 values are well-formed; no joint_group_id spans two splits.
  (full)   all of the above, plus: every rgb and ir image decodes; RGB and IR are one picture
           (one aspect ratio, or DiffV2IR's size for the RGB); IR looks infrared-style (channel
           spread below --ir-threshold); stored SHA-256 equal the bytes; no leakage across splits by identical image bytes, by near-duplicate images
           (64-bit pHash within Hamming distance 4, RGB and IR separately) or by identical
           normalized captions (NFKC, casefold, punctuation removed, whitespace collapsed).

Exit code 0: no findings; 1: findings (each names config/split/shard/row/sample_id);
2: usage error or unreadable target. Shards are checked in parallel (--workers processes in
full mode, threads in --fast mode); memory stays flat apart from compact per-row hash tables
(~100 bytes a row) needed for the cross-split joins.

Finding kinds (stable strings, also in the --json report):
  missing_card, bad_card          README.md absent / its YAML unreadable
  card_config_mismatch            card config unknown to the registry, or selecting a file the
                                  registry puts in another config/split
  missing_file                    a card data_files pattern that matches no file
  card_outside_repo               a card data_files pattern reaching outside data/ (absolute, `..`)
  orphan_shard                    a parquet file no card config includes where the registry says
  count_mismatch, bytes_mismatch  card dataset_info num_examples / num_bytes differ from the shards
  unreadable_shard                a parquet file that cannot be read (truncated, corrupt)
  schema_mismatch                 columns, types, order or HF features metadata differ from the schema
  null_in_required, wrong_source  a null in a non-nullable column / `source` not the shard's source
  duplicate_sample_id             a sample_id used more than once (anywhere in the repo)
  iraware_missing_ir_caption      an iraware row with a null or blank ir_caption
  base_has_ir_caption             a base row with a non-null ir_caption
  bad_sha256, bad_joint_group_id  malformed rgb_sha256/ir_sha256 / joint_group_id
  joint_group_spans_splits        rows of one joint_group_id in two splits
  undecodable_image               full: rgb or ir bytes missing or not decodable
  aspect_mismatch                 full: the ir has neither the rgb's aspect ratio nor DiffV2IR's size for
                                  it (a 256 px source and its 512 px output, or a 1000x700 source and
                                  its 64-rounded 512x384 output, are valid pairs)
  ir_not_infrared                 full: the ir image is colourful (channel spread > threshold)
  pair_swapped                    full: two rows of a shard whose ir images look swapped (each rgb's
                                  edges match the other row's ir far better than its own)
  sha256_mismatch                 full: stored SHA-256 differs from the bytes
  leak_identical_bytes            full: the same image bytes in two splits
  leak_near_duplicate             full: pHash within distance 4 across splits (rgb-rgb, ir-ir)
  leak_caption                    full: the same normalized caption in two splits

For a leak the row in the later split (train < validation < test) is reported and the message
names the earlier row. Rows are 0-based positions inside the shard file. At most 1,000 findings
of a kind are listed (one more says how many were left out); the counts per kind are complete.

Examples:
  fusionrs check ./fusionrs-demo
  fusionrs check ./fusionrs-demo --fast --json > report.json
  fusionrs check user/fusionrs --revision v1.0 --workers 8
"""

from __future__ import annotations

# The parts (this docstring is `fusionrs check --help`), each importing only parts listed before it: .findings (the
# finding kinds, Finding, CheckReport, CheckTargetError), .keys (the 64-bit row keys the joins compare), .images
# (one decode: size, channel spread, pHash), .target (what TARGET names; opening it), .shards (one shard's schema and
# row checks, and running the shards), .card (the card against the files), .joins (cross-row joins: duplicates,
# leaks across splits), .repo (check_repo over a whole repo, the release checks), .cli (options, run, summary).
from ..phash import phash
from ..text import normalize_caption
from .cli import configure_parser, run, summary
from .findings import KINDS, CheckReport, CheckTargetError, Finding
from .images import IR_SPREAD_THRESHOLD, STAT_SIZE, ImageStats, inspect_image
from .joins import PHASH_RADIUS
from .keys import caption_key
from .repo import check_repo
from .target import resolve_target

__all__ = ["check_repo", "CheckReport", "Finding", "CheckTargetError", "KINDS", "resolve_target", "caption_key",
           "ImageStats", "inspect_image", "IR_SPREAD_THRESHOLD", "STAT_SIZE", "PHASH_RADIUS", "configure_parser",
           "run", "summary"]

# Also importable from here, as from the single-module version. To replace one in a test, patch the module that
# looks it up (``phash``: ``fusionrs_hf.check.images``); patching this package changes nothing.
_COMPAT = (phash, normalize_caption)
