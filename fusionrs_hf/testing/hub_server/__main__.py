"""``python -m fusionrs_hf.testing.hub_server``: serve until Ctrl-C (see :func:`.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
