"""Streaming benchmark: a thin wrapper around ``fusionrs bench`` (see the fusionrs_hf/bench/ package).

Ours against stock ``datasets`` streaming, WebDataset, litdata, MosaicML streaming and the decode limits
(c)/(c'), all in one run. The litdata and MosaicML rows need those packages, installed without their own
dependencies (their pins conflict with this project's): ``pip install -e ".[bench]"`` and then
``pip install --no-deps litdata mosaicml-streaming``; without them the rows are skipped with a note.

    python tools/bench_stream.py            # full run, updates BENCHMARKS.md
    python tools/bench_stream.py --quick --json
"""

import sys

from fusionrs_hf.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
