"""Render a FusionRS repo's README.md (the dataset card) from its shards.

    python dataset_card/render.py REPO [--repo-id ID] [--sample]
    python dataset_card/render.py --example      # refresh dataset_card/example/README.md from the demo sample
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from fusionrs_hf.card import write_card
from fusionrs_hf.demo import make_sample_repo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo", nargs="?")
    p.add_argument("--repo-id", default="<user>/fusionrs")
    p.add_argument("--sample", action="store_true")
    p.add_argument("--example", action="store_true")
    a = p.parse_args(argv)
    if a.example:
        with tempfile.TemporaryDirectory() as tmp:
            repo = make_sample_repo(Path(tmp) / "fusionrs-demo", repo_id="./fusionrs-demo")
            dest = Path(__file__).parent / "example" / "README.md"
            dest.parent.mkdir(exist_ok=True)
            shutil.copy(repo / "README.md", dest)
            print(dest)
        return 0
    if not a.repo:
        p.error("REPO is required unless --example")
    print(write_card(a.repo, sample=a.sample, repo_id=a.repo_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
