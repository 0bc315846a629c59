"""Streaming benchmark: a thin wrapper around ``fusionrs bench`` (see fusionrs_hf/bench.py).

    python tools/bench_stream.py            # full run, updates BENCHMARKS.md
    python tools/bench_stream.py --quick --json
"""

import sys

from fusionrs_hf.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
