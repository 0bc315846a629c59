"""``python -m fusionrs_hf.bench``: the benchmark's own entry, used for its fresh-process passes."""

import sys

from .cli import main

sys.exit(main())
