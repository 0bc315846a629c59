"""A small repo laid out like the authors' rc4 release: the ``iraware`` config has ONLY a train split.

Rows are the embedded sample's (:func:`fusionrs_hf.demo.sample_rows`). Train keeps both groups
(IR-aware rows with their ``ir_caption``); every validation and test row goes to the ``base``
group without an IR-aware caption, as rc4 accepted IR-aware captions for train only. So
``default`` has train, validation and test, and ``iraware`` has train alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from fusionrs_hf.card import write_card
from fusionrs_hf.demo import sample_rows
from fusionrs_hf.shards import ShardSink


def make_train_only_iraware_repo(out: str | os.PathLike, *, counts: dict[str, int], size: int = 64,
                                 max_rows: int = 8, seed: int = 0) -> Path:
    out = Path(out)
    sinks: dict[tuple[str, str, str], ShardSink] = {}
    for source, split, group, row in sample_rows(seed, counts, size):
        if split != "train":
            group, row = "base", {**row, "ir_caption": None}
        key = (source, split, group)
        if key not in sinks:
            sinks[key] = ShardSink(out, source, split, group, max_rows=max_rows)
        sinks[key].add(row)
    for sink in sinks.values():
        sink.close()
    write_card(out, sample=True, repo_id=str(out))
    return out
