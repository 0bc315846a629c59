"""Issue 2: the builder script reads the same shards, with the same configs, as the README YAML path."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from datasets import Image, get_dataset_split_names, load_dataset

from fusionrs_hf import layout
from fusionrs_hf.schema import FEATURES, SOURCES

SCRIPT = Path(__file__).resolve().parents[1] / "loading_script" / "fusionrs.py"


def _key(r):
    return (r["sample_id"], r["caption"], r["ir_caption"], r["rgb"]["bytes"], r["ir"]["bytes"])


def test_embedded_registry_is_the_layout_registry(script):
    assert script.REGISTRY == layout.registry_dict()
    assert script._features() == FEATURES
    for cfg in script.REGISTRY["configs"]:
        for split in layout.SPLITS:
            assert script.split_patterns(cfg, split) == layout.get_config(cfg["name"]).patterns(split)
    block = re.search(r'r"""\n(.*?)\n"""', SCRIPT.read_text(), re.S)[1]
    assert json.loads(block) == layout.registry_dict()


def test_builder_configs_match_registry(script):
    assert [c.name for c in script.FusionRS.BUILDER_CONFIGS] == list(layout.CONFIG_NAMES)
    assert script.FusionRS.DEFAULT_CONFIG_NAME == "default"


@pytest.mark.parametrize("cfg", sorted(layout.CONFIG_NAMES))
def test_builder_yields_same_rows_as_yaml_path(script, sample_repo, cfg, tmp_path):
    builder = script.FusionRS(config_name=cfg, data_dir=str(sample_repo), cache_dir=str(tmp_path))
    splits = get_dataset_split_names(str(sample_repo), cfg)  # rc4: `iraware` has train only
    assert list(builder.as_streaming_dataset()) == splits, cfg
    for split in splits:
        via_script = builder.as_streaming_dataset(split)
        via_script = via_script.cast_column("rgb", Image(decode=False)).cast_column("ir", Image(decode=False))
        via_yaml = load_dataset(str(sample_repo), cfg, split=split)
        via_yaml = via_yaml.cast_column("rgb", Image(decode=False)).cast_column("ir", Image(decode=False))
        assert sorted(map(_key, via_script)) == sorted(map(_key, via_yaml)), (cfg, split)


def test_builder_prepares_non_streaming_too(script, sample_repo, tmp_path):
    builder = script.FusionRS(config_name="iraware", data_dir=str(sample_repo), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    assert set(builder.info.splits) == {"train"}  # rc4: no empty validation / test split is prepared
    ds = builder.as_dataset("train")
    assert set(ds["source"]) == set(SOURCES)
    assert len(ds) == len(load_dataset(str(sample_repo), "iraware", split="train")) and all(ds["ir_caption"])
