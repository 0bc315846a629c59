"""Rebuild FusionRS shards from the official index, your copies of the five sources, the DiffV2IR
images and the caption files, and write a build report that accounts for every index record.

The authors release an index only. This command joins each index record to your files
(`SOURCE_ROOT / source_locator` for RGB, `IR_ROOT / translation.output_key` for IR), checks that
both decode and are one picture (same aspect ratio, or DiffV2IR's own size for the RGB: fusionrs_hf.pairing), embeds the
bytes as they are (JPEG never re-encoded), attaches the record's caption as the release has it (rc4: no
cleaning, no class-name fallback; --caption-policy paper for the paper's rules) and the accepted IR-aware
caption, and writes the shard layout with its README card.

Example:
  fusionrs build --index fusionrs_public_index_v3_rc4_20260727.jsonl.gz \\
      --source-root NWPU=/data/NWPU-Caption --source-root RSICD=/data/RSICD_unpacked \\
      --source-root RSITMD=/data/RSITMD --source-root RS5M=/data/RS5M_sample_500k_clean --source-root SkyScript=/data/skyscript_extracted \\
      --ir-root /data/workspace/ir \\
      --captions RSICD=/data/RSICD_unpacked/dataset_rsicd.json RSITMD=/data/RSITMD/dataset_RSITMD.json \\
                 /data/NWPU-Captions/dataset_nwpu.json /data/rs5m_captions.parquet \\
                 /data/skyscript_captions.parquet \\
      --iraware iraware_strict_v3_45913.jsonl.gz --out ./fusionrs --workers 8

  fusionrs build --from-folder ./my_tiles --source SkyScript --out ./fusionrs   # your own images

Guarantees:
  * faithful by default: on the official rc4 index the build writes rc4 (caption policy rc4: one
    caption per record, usable when non-empty after the authors' normalisation; IR-aware policy rc4:
    the release's `status` decides, captions without one pass the authors' strict-v3 filter); the
    paper's stricter cleaning is --caption-policy paper, our stricter IR rules --iraware-policy strict;
  * the index file's SHA-256 and row count are matched against the known releases and the report
    says which release this is (or that it is none); --dry-run shows coverage before any work;
  * every index record is either written or listed in OUT/build_report.json with its reason
    (missing_rgb, missing_ir, undecodable_rgb, undecodable_ir, aspect_mismatch, caption_dropped,
    missing_caption, no_usable_caption, no_source_root, ...); --strict makes any dropped row exit 1,
    except no_usable_caption (the release itself has no usable caption for it: 8 train records in rc4);
  * RGB and IR of one aspect ratio at two sizes (DiffV2IR writes 512 px for 224-256 px sources), or an
    IR of exactly DiffV2IR's size for the RGB (sides rounded to multiples of 64, centre-cropped: a
    1000x700 source gives 512x384), are written as they are and counted in the report; any other
    aspect ratio is a defect;
  * a bad index line is an error naming its line number and field (or, with --on-bad-line report,
    a dropped row); locators with '..', absolute paths or drive letters are rejected;
  * shard membership depends only on the index: records of one (source, split, group) are taken in
    index order and shard k holds positions k*N .. k*N+N-1 (N = --rows-per-shard). A dropped row
    leaves its shard one row shorter and moves no other row, so fixing one missing file rewrites
    one shard. Group = iraware when the IR-aware file has an accepted caption for the sample;
  * resumable and deterministic: re-running the same command skips shards whose inputs (plan,
    options, file sizes and times) are unchanged and rewrites the others; the files are identical
    to those of an uninterrupted build. Build state lives in OUT/.fusionrs-build (not data).

Exit codes: 0 built, 1 --strict with dropped rows or a failed build, 2 usage or unreadable input.
"""


# One concern per module: options (what a build is asked to do), plan (index + captions -> shard
# membership), shard (one shard in a worker), images (the build-time image rule), orchestrate,
# report, dry_run, folder (--from-folder) and cli (the command line).
from .cli import configure_parser, options_from_args, run  # noqa: F401
from .dry_run import _could_hold, _is_file, _print_dry_run, dry_run  # noqa: F401
from .folder import _caps, _find_ir, _listing_rows, folder_to_inputs  # noqa: F401
from .images import DEFAULT_MAX_PIXELS, ImageDrop, load_image, reset_orientation, to_8bit  # noqa: F401
from .options import (  # noqa: F401
    BUILDER_VERSION,
    CRASH_ENV,
    DEFAULT_ROWS_PER_SHARD,
    EXAMPLES,
    IMAGE_EXTS,
    NON_JPEG_POLICIES,
    RELEASE_DROPS,
    SOURCE_SPECS,
    STATE_DIR,
    BuildError,
    BuildOptions,
    SourceSpec,
    _check_inputs,
)
from .orchestrate import _run_tasks, _stale_shards, build  # noqa: F401
from .plan import Plan, _class_name, _Examples, _Planned, _Planner, index_identity, make_plan  # noqa: F401
from .report import make_report  # noqa: F401
from .shard import _Drop, _safe_join, _stat, build_shard, shard_fingerprint  # noqa: F401
