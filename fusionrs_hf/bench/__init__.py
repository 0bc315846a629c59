"""Measure FusionRS streaming throughput against stock `datasets`, WebDataset, litdata, MosaicML streaming
and the decode limit.

What runs (all in one invocation, same machine, same images):

  ours          fusionrs_hf.torch.make_dataloader: parquet row groups read with pyarrow, JPEG decoded
                at reduced DCT scale, centre crop + resize to --image-size, CLIP-normalized.
  (a) stock     load_dataset(repo, "default", split="train", streaming=True).with_format("torch")
                + .map() doing the same crop/resize/normalize on the decoded tensors.
  (b) wds       the same images as WebDataset tar shards (one tar per parquet shard),
                webdataset.WebDataset(...).decode("pil") + the same crop/resize/normalize.
  (b') wds+ours WebDataset reading raw bytes, decoded with our decoder (shows where the gain comes from).
  (d) litdata   the same JPEG bytes written by litdata's own ``optimize`` (``litdata.Image(bytes=...)``, kept
                as stored, chunks of at most the largest parquet shard's size), read by ``litdata.StreamingDataset`` +
                ``StreamingDataLoader``; litdata decodes the images itself (its documented path,
                ``torchvision.io.decode_image``; where torchvision cannot be imported, e.g. a CPU torch next
                to a CUDA-only torchvision wheel, the same bytes through PIL, as litdata does for EXIF
                JPEGs) + the same crop/resize/normalize in the dataset's ``transform``.
  (e) mosaic    the same JPEG bytes in MosaicML MDS shards (``jpeg`` columns, bytes kept as stored, shards of
                at most the largest parquet shard's size), read by a ``streaming.StreamingDataset`` subclass whose
                ``__getitem__`` runs the same crop/resize/normalize on the decoded PIL images (its documented
                pattern), with ``streaming.StreamingDataLoader``.
  (c) limit     our decode+resize of both images in a tight loop over bytes already in memory,
                2 processes: no reading, batching, normalization or IPC.
  (c') +norm    the same loop, also normalizing into float32 batch memory as ours must: the decode-limit
                target is ours against (c'), the same work minus reading, batching and IPC.
  ours uint8    ours with normalize=False: uint8 batches, for normalizing on the accelerator (against (c)).

Every pipeline uses a torch DataLoader with --workers workers (2) and batch size --batch-size, decodes
both images of every row, and is timed over one full pass from the first batch to the last
(worker start-up excluded, the same for all). Each pass is checked: every pipeline reads exactly the
sample ids ours reads, each once, with images of ours' shape, dtype and normalization (per-sample channel
means on a pixel grid agree with ours within a tolerance that allows for the different decoders).
Peak RSS (the process plus its workers) is measured in a fresh subprocess over one full shuffled pass
with a 1,000-row shuffle buffer.

litdata and MosaicML streaming are optional: when one cannot be imported its row is skipped with a note.
Their own pins conflict with this project's (litdata needs torchvision, whose PyPI wheel replaces a CPU
torch; mosaicml-streaming pins numpy<2.2 and transformers<5 against datasets>=5), so they are installed
without their dependencies, after the ``bench`` extra has brought the ones they import:

  pip install -e ".[bench]" && pip install --no-deps litdata mosaicml-streaming

The benchmark repo (>= 2,000 triplets of 512 px textured JPEGs by default) is generated once with
fusionrs_hf.demo.make_sample_repo into --cache and reused, as are the tar, litdata and MDS copies. The
table is printed and written to BENCHMARKS.md (section bench:stream).

With --remote the repo is also served over real HTTP on 127.0.0.1 by the local Hub-API test server
(fusionrs_hf.testing.hub_server) with --latency-ms per request (40) and a --bandwidth-mbps cap (400), and read
with the real huggingface_hub client, each pass in a fresh process: ours remote and stock `datasets` streaming
remote (time to first batch, from the loader's construction, and peak RSS for each), against ours local; and a
--plan-shards (256) shard repo of tiny shards for plan time and time to first batch. Targets: ours remote >= 0.9x
ours local, >= 3x stock remote, first batch at 256 shards <= 2 s.

Examples:
  fusionrs bench                 # full run (first run also generates ~2,200 triplets, a few minutes)
  fusionrs bench --remote        # the same plus the remote table
  fusionrs bench --quick --json  # a smaller run in about a minute, one JSON object on stdout
"""

from __future__ import annotations

from .cli import configure_parser, main, run
from .data import CONFIG, SPLIT, bench_repo, litdata_dir, mds_dir, plan_repo, wds_shards
from .measure import FINGERPRINT_TOL, check_same_output, decode_limit, measure_rss, rss_child, time_pass
from .peers import (
    PEERS,
    import_litdata,
    import_mosaic,
    loader_litdata,
    loader_mosaic,
    peer_decode,
    peer_missing,
    torchvision_decode_ok,
)
from .pipelines import loader_ours, loader_stock, loader_wds
from .remote import remote_bench, remote_child
from .report import (
    AT_MOST,
    SECTION,
    TARGETS,
    machine,
    render_markdown,
    render_remote,
    replace_section,
    targets_met,
    versions,
    write_section,
)

__all__ = [
    "AT_MOST", "CONFIG", "FINGERPRINT_TOL", "PEERS", "SECTION", "SPLIT", "TARGETS", "bench_repo",
    "check_same_output", "configure_parser", "decode_limit", "import_litdata", "import_mosaic", "litdata_dir",
    "loader_litdata", "loader_mosaic", "loader_ours", "loader_stock", "loader_wds", "machine", "main", "mds_dir",
    "measure_rss", "peer_decode", "peer_missing", "plan_repo", "remote_bench", "remote_child", "render_markdown",
    "render_remote", "replace_section", "rss_child", "run", "targets_met", "time_pass", "torchvision_decode_ok",
    "versions", "wds_shards", "write_section",
]
