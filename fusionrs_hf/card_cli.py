"""Re-render README.md of a local FusionRS repo from the shards it holds: YAML `configs` (globs that
match existing shards only), `dataset_info` (features, num_examples and num_bytes per split and config),
the counts table, rights notice, synthetic-IR disclaimer and citation.

Example:
  fusionrs card ./my-fusionrs --repo-id me/fusionrs
"""

from __future__ import annotations

import argparse


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", help="local repo folder (holds data/...)")
    p.add_argument("--repo-id", default="<user>/fusionrs", help="Hub id shown in the card's snippets")
    p.add_argument("--sample", action="store_true", help="mark the repo as a synthetic sample")


def run(args: argparse.Namespace) -> int:
    from .card import write_card

    print(write_card(args.repo, sample=args.sample, repo_id=args.repo_id))
    return 0
