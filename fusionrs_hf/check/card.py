"""The card against the files: its configs and data_files patterns, and its dataset_info counts and bytes."""

from __future__ import annotations

from ..layout import SHARD_TEMPLATE, SPLITS, Layout, ShardName, glob_match
from .findings import Finding


def _outside_data(pattern: str) -> bool:
    """Whether a card's data_files pattern can match anything but a path under the repo's ``data/``."""
    p = str(pattern).replace("\\", "/")
    return "://" in p or p.startswith("/") or p[1:3] == ":/" or ".." in p.split("/") or not p.startswith("data/")


def _card_findings(lay: Layout, card_text: str | None, shards: list[ShardName], orphans: list[str],
                   infos: list, unreadable: set[str], card_problem: str | None = None) -> list[Finding]:
    from ..card import card_configs, card_split_sizes, expected_stats

    out: list[Finding] = []
    for rel in orphans:
        out.append(Finding("orphan_shard", f"parquet file outside the shard naming rule {SHARD_TEMPLATE}; "
                           "no registry config includes it", shard=rel))
    if card_text is None:
        out.append(Finding("missing_card", "README.md not found: configs and dataset_info cannot be checked"))
        return out
    if card_problem:
        out.append(Finding("bad_card", card_problem))
        return out
    from ..card import has_front_matter

    if not has_front_matter(card_text):  # one finding, not one per config and split the card then "lacks"
        out.append(Finding("bad_card", "README.md has no YAML header (a first line '---', the header, a line "
                           "'---'): configs and dataset_info cannot be checked; re-render it with fusionrs card"))
        return out
    try:
        cfgs = card_configs(card_text)
        sizes = card_split_sizes(card_text)
    except Exception as e:  # noqa: BLE001 - any YAML/shape problem
        out.append(Finding("bad_card", f"cannot read the card's YAML header: {type(e).__name__}: {e}"))
        return out
    paths = [s.path for s in shards]
    all_files = paths + list(orphans)
    for cfg_name, splits in cfgs.items():
        if cfg_name not in lay.configs_by_name:
            out.append(Finding("card_config_mismatch", f"card config {cfg_name!r} is not in the registry",
                               config=cfg_name))
        for split, pats in splits.items():
            for pat in pats:
                if _outside_data(pat):  # stock load_dataset(folder) would read there
                    out.append(Finding("card_outside_repo", f"data_files pattern {pat!r} reaches outside the repo's "
                                       "data/ folder; a card names shards under data/ only (re-render it: fusionrs "
                                       "card)", config=cfg_name, split=split))
                elif not any(glob_match(pat, f) for f in all_files):
                    out.append(Finding("missing_file", f"data_files pattern {pat!r} matches no file "
                                       "(datasets fails with 'Unable to find')", config=cfg_name, split=split))
    for cfg in lay.configs:
        card_splits = cfgs.get(cfg.name, {})
        for split in SPLITS:
            want = set(lay.config_files(cfg, split, paths))
            pats = card_splits.get(split, [])
            got = {f for f in all_files if any(glob_match(p, f) for p in pats)}
            for rel in sorted(want - got):
                out.append(Finding("orphan_shard", f"the card's config {cfg.name!r} split {split!r} does not "
                                   "include this shard (re-render the card: fusionrs card)",
                                   config=cfg.name, split=split, shard=rel))
            for rel in sorted(got - want - set(orphans)):
                out.append(Finding("card_config_mismatch", f"the card's config {cfg.name!r} split {split!r} "
                                   "selects a shard the registry puts elsewhere", config=cfg.name, split=split,
                                   shard=rel))
    exp = expected_stats(infos, lay)
    for cfg in lay.configs:
        card_sz, shard_sz = sizes.get(cfg.name, {}), exp.get(cfg.name, {})
        for split in SPLITS:
            if split not in card_sz and split not in shard_sz:
                continue
            if any(f in unreadable for f in lay.config_files(cfg, split, paths)):
                continue  # reported as unreadable_shard; its rows cannot be counted
            c, s = card_sz.get(split), shard_sz.get(split)
            if c is None:
                out.append(Finding("count_mismatch", f"card has no dataset_info split for {s['num_examples']} rows "
                                   "in the shards", config=cfg.name, split=split))
            elif s is None:
                out.append(Finding("count_mismatch", f"card says {c['num_examples']} rows; no shard has any",
                                   config=cfg.name, split=split))
            else:
                if c["num_examples"] != s["num_examples"]:
                    out.append(Finding("count_mismatch", f"card says num_examples={c['num_examples']}, "
                                       f"shards have {s['num_examples']}", config=cfg.name, split=split))
                if c["num_bytes"] != s["num_bytes"]:
                    out.append(Finding("bytes_mismatch", f"card says num_bytes={c['num_bytes']}, "
                                       f"shard footers say {s['num_bytes']}", config=cfg.name, split=split))
    for cfg_name in sizes:
        if cfg_name not in lay.configs_by_name and cfg_name not in cfgs:
            out.append(Finding("card_config_mismatch", f"card dataset_info config {cfg_name!r} is not in the registry",
                               config=cfg_name))
    return out
