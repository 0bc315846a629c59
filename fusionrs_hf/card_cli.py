"""Re-render README.md of a local FusionRS repo from the shards it holds: YAML `configs` (globs that
match existing shards only), `dataset_info` (features, num_examples and num_bytes per split and config),
`size_categories`, `source_datasets`, `license_link`, the counts table, rights notice, synthetic-IR
disclaimer and citation, plus two pictures under assets/ that the card shows (a contact sheet of triplets
from every source and a rows-per-source-and-split figure; the same bytes for the same repo).

What the card already says is kept unless an option says otherwise: the synthetic-sample banner, and the
repo its Load snippet reads (--repo-id). Without a card, the snippet reads this folder. The snippet is the
stock `datasets` call that works where the repo lives: the repo id on the Hub, the folder locally, and
`load_dataset("parquet", data_files=..., storage_options=...)` for other stores (s3://, gs://, ...), whose
options come from --storage-option (credentials are never written into the card).

Examples:
  fusionrs card ./my-fusionrs --repo-id me/fusionrs
  fusionrs card ./my-fusionrs --repo-id s3://bucket/fusionrs --storage-option endpoint_url=http://127.0.0.1:9000
  fusionrs card ./fusionrs-demo              # keeps the sample banner and the snippet's repo
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .layout import interrupted_build, unfinished_build


def configure_parser(p: argparse.ArgumentParser) -> None:
    from .storage import add_storage_option_argument

    p.add_argument("repo", help="local repo folder (holds data/...)")
    p.add_argument("--repo-id", default=None,
                   help="where the repo is published, for the Load snippet: a Hub id (me/fusionrs), an fsspec URL "
                        "(s3://bucket/fusionrs) or a folder; default: what the card says, else this folder")
    p.add_argument("--sample", action=argparse.BooleanOptionalAction, default=None,
                   help="mark (or, with --no-sample, unmark) the repo as a synthetic sample; default: as the card says")
    p.add_argument("--no-assets", dest="assets", action="store_false",
                   help="do not write the pictures under assets/ (the card then shows none)")
    add_storage_option_argument(p)


def _require_repo(root: Path) -> None:
    """A card describes shards: refuse (exit 2, one line) a path that is no folder, a folder without any, or one
    whose build has not finished (:func:`~fusionrs_hf.layout.unfinished_build`): a card rendered from half the
    shards is self-consistent, so nothing after it would tell the rest is missing."""
    import fsspec

    from .errors import CliError
    from .layout import list_shards

    if not root.is_dir():
        raise CliError(f"{root}: no such folder" if not root.exists() else
                       f"{root}: not a folder (give the repo folder that holds data/...)")
    if not (root / "data").is_dir():
        raise CliError(f"{root}: not a FusionRS repo folder (no data/ directory){interrupted_build(root)}")
    shards, _ = list_shards(fsspec.filesystem("file"), str(root.resolve()))
    if not shards:
        raise CliError(f"{root}: no shards under data/ (data/<source>/<split>/*.parquet): nothing for a card to "
                       f"describe{interrupted_build(root)}")
    unfinished = unfinished_build(root)
    if unfinished:
        raise CliError(unfinished)


def check_repo_id(value: str) -> str:
    """``--repo-id`` as the Load snippet will name it, or :class:`~fusionrs_hf.errors.CliError` (exit 2, one line):
    a Hub id must be a valid ``OWNER/NAME`` (``huggingface_hub``'s own rule), ``hf://`` URLs likewise; other
    fsspec URLs are taken as they are; a path must be absolute or an existing folder (it is written absolute),
    so the snippet never points at a folder that is nowhere."""
    import os
    import re

    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from .errors import CliError
    from .secrets import scrub

    def bad_id(repo_id: str, why: str) -> CliError:
        return CliError(scrub(f"--repo-id {value!r}: {repo_id!r} is not a Hub dataset id ({why}); give OWNER/NAME, "
                              "an fsspec URL (s3://bucket/prefix) or a folder that exists"))

    def hub_id(repo_id: str) -> str:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as e:
            raise bad_id(repo_id, str(e).splitlines()[0].rstrip(".")) from None
        if repo_id.count("/") != 1:
            raise bad_id(repo_id, "a dataset repo id is OWNER/NAME")
        return repo_id

    if re.match(r"(?i)[a-z][a-z0-9+.-]*://[^/\s?#]*@", value):
        raise CliError(scrub(f"--repo-id {value}: credentials in the URL are not used; pass --storage-option"))
    if value.startswith("hf://"):
        m = re.match(r"^hf://(?:datasets/)?([^@]+?)/*(?:@[^/]+)?\Z", value)
        if not m:
            raise CliError(f"--repo-id {value!r}: a Hub URL is hf://datasets/OWNER/NAME[@revision]")
        hub_id(m[1])
        return value
    if "://" in value and not value.startswith("file://"):
        return value
    path = value[len("file://"):] if value.startswith("file://") else value
    if os.path.isabs(path) or os.path.isdir(path):
        return os.path.abspath(path)
    if value.startswith(("./", "../", "~")) or value in (".", "..") or os.path.exists(path):
        raise CliError(f"--repo-id {value!r}: no such folder here; give the absolute path of the folder the repo "
                       "is published in, a Hub id (OWNER/NAME) or an fsspec URL")
    return hub_id(value)


def run(args: argparse.Namespace) -> int:
    from .card import write_card
    from .errors import CliError
    from .storage import parse_storage_options

    try:
        options = parse_storage_options(args.storage_options)
    except ValueError as e:
        raise CliError(str(e)) from None
    repo_id = None if args.repo_id is None else check_repo_id(args.repo_id)
    _require_repo(Path(args.repo))
    print(write_card(args.repo, sample=args.sample, repo_id=repo_id, storage_options=options,
                     assets=args.assets))
    return 0
