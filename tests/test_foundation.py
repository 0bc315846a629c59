"""Issue 2: FusionRS on stock `datasets` — configs, splits, card sizes, groups, bytes, appends, writer errors."""

from __future__ import annotations

import io
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import (
    Image,
    get_dataset_config_names,
    get_dataset_split_names,
    load_dataset,
)
from PIL import Image as PILImage

from fusionrs_hf import layout
from fusionrs_hf.card import card_configs, card_split_sizes, scan_repo, write_card
from fusionrs_hf.demo import make_sample_repo, sample_rows
from fusionrs_hf.schema import FEATURES, FIELD_NAMES, SOURCES, SchemaError
from fusionrs_hf.shards import rows_to_table, write_rows, write_table

from .conftest import SMALL_COUNTS

CONFIGS = {"default", "iraware", "rs5m", "skyscript", "nwpu", "rsicd", "rsitmd"}


def _raw(ds):
    """Rows with images left as stored bytes, for exact comparisons."""
    return ds.cast_column("rgb", Image(decode=False)).cast_column("ir", Image(decode=False))


def _card(repo):
    return (repo / "README.md").read_text()


def test_exactly_seven_configs_with_the_rc4_splits(sample_repo):
    assert set(get_dataset_config_names(str(sample_repo))) == CONFIGS
    for cfg in CONFIGS - {"iraware"}:
        assert get_dataset_split_names(str(sample_repo), cfg) == ["train", "validation", "test"], cfg
    assert get_dataset_split_names(str(sample_repo), "iraware") == ["train"]  # rc4: IR-aware captions for train only


def test_split_sizes_equal_card_dataset_info(sample_repo):
    sizes = card_split_sizes(_card(sample_repo))
    assert set(sizes) == CONFIGS
    n_src = len(SOURCES)
    assert sizes["default"]["train"]["num_examples"] == SMALL_COUNTS["train"] * n_src
    for cfg in CONFIGS:
        dsd = load_dataset(str(sample_repo), cfg)
        assert {k: len(v) for k, v in dsd.items()} == {k: v["num_examples"] for k, v in sizes[cfg].items()}, cfg


@pytest.mark.parametrize("cfg", ["iraware", "nwpu"])
def test_streaming_and_non_streaming_give_same_rows(sample_repo, cfg):
    splits = get_dataset_split_names(str(sample_repo), cfg)
    assert splits == (["train"] if cfg == "iraware" else list(layout.SPLITS))
    for split in splits:
        eager = _raw(load_dataset(str(sample_repo), cfg, split=split))
        stream = _raw(load_dataset(str(sample_repo), cfg, split=split, streaming=True))
        assert list(stream) == list(eager)


def test_groups_and_ir_caption_nullness(sample_repo):
    ira = load_dataset(str(sample_repo), "iraware")
    ira_ids = set()
    for split, ds in ira.items():
        assert len(ds) > 0
        for r in ds.remove_columns(["rgb", "ir"]):
            assert isinstance(r["ir_caption"], str) and r["ir_caption"].strip(), (split, r["sample_id"])
            ira_ids.add(r["sample_id"])
    default = load_dataset(str(sample_repo), "default").remove_columns(["rgb", "ir"])
    n_base = 0
    for ds in default.values():
        for r in ds:
            if r["sample_id"] not in ira_ids:
                assert r["ir_caption"] is None, r["sample_id"]
                n_base += 1
    assert n_base > 0
    # and on the file level: the group in the shard name agrees with the column
    for shard in scan_repo(str(sample_repo))[0]:
        col = pq.read_table(sample_repo / shard.name.path, columns=["ir_caption"]).column("ir_caption")
        if shard.name.group == "iraware":
            assert col.null_count == 0
        else:
            assert col.null_count == len(col)


def test_iraware_validation_holds_only_sources_that_have_rows(tmp_path):
    # the paper's layout (rc4 has no IR-aware validation rows at all): IR-aware validation rows of some sources
    repo = make_sample_repo(tmp_path / "paper", counts=SMALL_COUNTS, size=32, layout="paper")
    assert get_dataset_split_names(str(repo), "iraware") == ["train", "validation", "test"]
    val = load_dataset(str(repo), "iraware", split="validation").remove_columns(["rgb", "ir"])
    assert set(val["source"]) == {"RS5M", "NWPU"}  # SkyScript, RSICD, RSITMD have none (as in the paper)
    # the per-source configs of those sources still have a validation split (from base shards)
    for cfg in ("skyscript", "rsicd", "rsitmd"):
        assert len(load_dataset(str(repo), cfg, split="validation")) == SMALL_COUNTS["validation"]


def test_per_source_configs_partition_default(sample_repo):
    default = load_dataset(str(sample_repo), "default").remove_columns(["rgb", "ir"])
    for split in layout.SPLITS:
        all_ids = default[split]["sample_id"]
        assert len(all_ids) == len(set(all_ids)), "duplicate sample_id in default"
        union: list[str] = []
        for src in SOURCES:
            ds = load_dataset(str(sample_repo), layout.SOURCE_DIRS[src], split=split).remove_columns(["rgb", "ir"])
            assert set(ds["source"]) == {src}
            union += ds["sample_id"]
        assert sorted(union) == sorted(all_ids)


def test_images_decode_to_stored_size_and_bytes_are_the_inputs(sample_repo):
    inputs = {row["sample_id"]: row for *_, row in sample_rows(0, SMALL_COUNTS, 64)}
    ds = load_dataset(str(sample_repo), "default", split="train", streaming=True)
    n = 0
    for r in ds:
        assert isinstance(r["rgb"], PILImage.Image) and isinstance(r["ir"], PILImage.Image)
        assert r["rgb"].size == r["ir"].size == (64, 64)
        assert r["ir"].mode == "RGB"
        n += 1
    assert n == SMALL_COUNTS["train"] * len(SOURCES)
    for r in _raw(load_dataset(str(sample_repo), "default", split="test")):
        src = inputs[r["sample_id"]]
        assert r["rgb"]["bytes"] == src["rgb"]["bytes"]
        assert r["ir"]["bytes"] == src["ir"]["bytes"]
        assert r["caption"] == src["caption"]


def test_shard_files_carry_hf_features_and_image_friendly_parquet_options(sample_repo):
    shard = scan_repo(str(sample_repo))[0][0]
    pf = pq.ParquetFile(sample_repo / shard.name.path)
    meta = json.loads(pf.schema_arrow.metadata[b"huggingface"])
    assert meta["info"]["features"]["rgb"]["_type"] == "Image"
    col_names = [pf.metadata.row_group(0).column(i).path_in_schema for i in range(pf.metadata.num_columns)]
    rgb_bytes = pf.metadata.row_group(0).column(col_names.index("rgb.bytes"))
    assert rgb_bytes.compression == "UNCOMPRESSED"
    caption = pf.metadata.row_group(0).column(col_names.index("caption"))
    assert caption.compression == "SNAPPY"
    assert rgb_bytes.has_offset_index  # page index written


def test_row_groups_respect_byte_budget(tmp_path):
    rows = [row for *_, row in sample_rows(1, {"train": 12}, 64)][:12]
    size = sum(len(r["rgb"]["bytes"]) + len(r["ir"]["bytes"]) for r in rows[:3])
    write_rows(rows, tmp_path / "x.parquet", row_group_bytes=size)
    md = pq.ParquetFile(tmp_path / "x.parquet").metadata
    assert md.num_rows == 12 and md.num_row_groups >= 4


def test_writer_names_missing_and_mistyped_columns(tmp_path):
    rows = [row for *_, row in sample_rows(2, {"train": 2}, 32)][:2]
    table = rows_to_table(rows)
    with pytest.raises(SchemaError, match="'caption'"):
        write_table(table.drop_columns(["caption"]), tmp_path / "a.parquet")
    bad = table.set_column(FIELD_NAMES.index("caption"), "caption", pa.array([1, 2], pa.int64()))
    with pytest.raises(SchemaError, match="'caption'.*int64"):
        write_table(bad, tmp_path / "b.parquet")
    with pytest.raises(SchemaError, match="sample_id='rs5m-tra-00000'.*'ir'"):
        rows_to_table([{**rows[0], "ir": None}])
    with pytest.raises(SchemaError, match="unexpected column"):
        rows_to_table([{**rows[0], "extra": 1}])
    with pytest.raises(SchemaError, match="'source'"):
        rows_to_table([{**rows[0], "source": "Landsat"}])
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*tmp*"))


def test_non_jpeg_bytes_stored_as_given(tmp_path):
    row = next(r for *_, r in sample_rows(3, {"train": 1}, 32))
    buf = io.BytesIO()
    PILImage.new("RGB", (32, 32), (10, 20, 30)).save(buf, format="PNG")
    row = {**row, "ir": {"bytes": buf.getvalue()}}
    write_rows([row], tmp_path / "p.parquet")
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.column("ir")[0]["bytes"].as_py() == buf.getvalue()
    assert t.column("ir")[0]["path"].as_py().endswith(".png")


def test_appending_a_batch_needs_no_renaming(tmp_path, sample_repo):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*.parquet"))
    yaml_before = card_configs(_card(repo))
    extra = [dict(r, sample_id=f"new-{i}") for i, (*_, r) in enumerate(sample_rows(9, {"train": 3}, 64))
             if r["source"] == "RS5M"][:3]
    path = repo / layout.shard_path("RS5M", "train", "base", 0, batch="b2026")
    write_rows(extra, path)
    write_card(repo)
    after = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*.parquet"))
    assert set(before) < set(after) and len(after) == len(before) + 1
    assert card_configs(_card(repo)) == yaml_before  # the globs already cover the new batch
    ids = load_dataset(str(repo), "rs5m", split="train").remove_columns(["rgb", "ir"])["sample_id"]
    assert {"new-0", "new-1", "new-2"} <= set(ids)
    assert card_split_sizes(_card(repo))["rs5m"]["train"]["num_examples"] == SMALL_COUNTS["train"] + 3


def test_a_split_without_any_rows_is_left_out_not_broken(tmp_path):
    repo = make_sample_repo(tmp_path / "r", counts={"train": 2, "test": 1}, size=32)
    assert get_dataset_split_names(str(repo), "default") == ["train", "test"]
    assert get_dataset_split_names(str(repo), "iraware") == ["train"]  # rc4: no IR-aware test rows either
    assert "validation" not in card_configs(_card(repo))["default"]
    assert len(load_dataset(str(repo), "default", split="test")) == len(SOURCES)


def test_shard_paths_round_trip_and_reject_bad_parts():
    p = layout.shard_path("SkyScript", "validation", "iraware", 7, batch="rc4")
    assert p == "data/skyscript/validation/iraware-rc4-00007.parquet"
    parsed = layout.parse_shard_path(p)
    assert (parsed.source, parsed.split, parsed.group, parsed.batch, parsed.index) == (
        "SkyScript", "validation", "iraware", "rc4", 7)
    assert layout.parse_shard_path("data/skyscript/val/iraware-rc4-00007.parquet") is None
    assert layout.parse_shard_path("data/../x/train/base-main-00000.parquet") is None
    for bad in (dict(source="Landsat"), dict(split="val"), dict(group="all"), dict(batch="a-b")):
        kw = dict(source="RS5M", split="train", group="base", index=0, batch="main") | bad
        with pytest.raises(ValueError):
            layout.shard_path(**kw)


def test_every_split_group_and_source_round_trips_through_the_parser():
    """SHARD_RE is built from SPLITS / GROUPS: every name shard_path can write, parse_shard_path reads."""
    for source in SOURCES:
        for split in layout.SPLITS:
            for group in layout.GROUPS:
                p = layout.shard_path(source, split, group, 3, batch="b_2")
                assert layout.parse_shard_path(p) == layout.ShardName(source, split, group, "b_2", 3)


def test_demo_keeps_captions_split_unique_in_the_checkers_normal_form():
    from fusionrs_hf.check import normalize_caption as check_norm
    from fusionrs_hf.demo import _split_unique_caption
    from fusionrs_hf.text import normalize_caption

    assert check_norm is normalize_caption  # one definition, still importable from check
    seen: dict[str, str] = {}
    assert _split_unique_caption("Farmland, near a river.", "train", "a", seen) == "Farmland, near a river."
    # equal to the train caption once punctuation and case are normalized: must not reach validation as is
    later = _split_unique_caption("farmland near a river", "validation", "b", seen)
    assert normalize_caption(later) != normalize_caption("Farmland, near a river.") and "(tile b)" in later


def test_glob_match_does_not_cross_directories():
    assert layout.glob_match("data/*/train/*.parquet", "data/rs5m/train/base-main-00000.parquet")
    assert not layout.glob_match("data/*/train/*.parquet", "data/rs5m/x/train/base-main-00000.parquet")
    assert layout.config_files("iraware", "train", ["data/rs5m/train/base-main-00000.parquet"]) == []


def test_features_are_the_schema_everywhere(sample_repo):
    ds = load_dataset(str(sample_repo), "iraware", split="train", streaming=True)
    assert ds.features == FEATURES


def test_load_helper_uses_env_repo(sample_repo, monkeypatch):
    import fusionrs_hf

    monkeypatch.setenv("FUSIONRS_REPO", str(sample_repo))
    ds = fusionrs_hf.load("rsitmd", split="test", streaming=True)
    assert {r["source"] for r in ds} == {"RSITMD"}
    with pytest.raises(ValueError, match="unknown FusionRS config"):
        fusionrs_hf.load("landsat")
