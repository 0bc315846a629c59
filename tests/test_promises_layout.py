"""Issue 15: the layout registry (README "Configs and layout"), every expected path and glob written by hand."""

from __future__ import annotations

import fsspec
import pytest

from fusionrs_hf import layout

ALL_DIRS = ("rs5m", "skyscript", "nwpu", "rsicd", "rsitmd")


def test_the_constants_the_readme_names():
    assert layout.SPLITS == ("train", "validation", "test")
    assert layout.GROUPS == ("iraware", "base")
    assert layout.DEFAULT_BATCH == "main"
    assert layout.DEFAULT_REPO_ID == "fusionrs/fusionrs"
    assert layout.SHARD_TEMPLATE == "data/{source_dir}/{split}/{group}-{batch}-{index:05d}.parquet"
    assert layout.INDEX_SPLITS == {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
    assert layout.SPLIT_TO_INDEX == {"train": "train", "validation": "val", "test": "test"}
    assert layout.SOURCE_DIRS == {"RS5M": "rs5m", "SkyScript": "skyscript", "NWPU": "nwpu", "RSICD": "rsicd",
                                  "RSITMD": "rsitmd"}
    assert layout.DIR_SOURCES == {v: k for k, v in layout.SOURCE_DIRS.items()}
    assert layout.CONFIG_NAMES == ("default", "iraware", *ALL_DIRS)


@pytest.mark.parametrize(("args", "path"), [
    (("RS5M", "train", "base", 0), "data/rs5m/train/base-main-00000.parquet"),
    (("NWPU", "test", "iraware", 12, "b2027"), "data/nwpu/test/iraware-b2027-00012.parquet"),
    (("RSITMD", "validation", "base", 99999, "x_1"), "data/rsitmd/validation/base-x_1-99999.parquet"),
    (("SkyScript", "train", "iraware", 7), "data/skyscript/train/iraware-main-00007.parquet"),
])
def test_shard_path_by_hand(args, path):
    assert layout.shard_path(*args) == path
    name = layout.parse_shard_path(path)
    source, split, group, index = args[:4]
    batch = args[4] if len(args) > 4 else "main"
    assert (name.source, name.split, name.group, name.batch, name.index, name.path) == (
        source, split, group, batch, index, path)
    assert name.relpath == path


@pytest.mark.parametrize("kw", [dict(source="Landsat"), dict(split="val"), dict(group="all"), dict(batch="a-b"),
                                dict(batch="Main"), dict(batch=""), dict(index=-1), dict(index=100000)])
def test_shard_path_rejects_each_bad_part(kw):
    args = dict(source="RS5M", split="train", group="base", index=0, batch="main") | kw
    with pytest.raises(ValueError):
        layout.shard_path(**args)


@pytest.mark.parametrize("path", [
    "data/rs5m/val/base-main-00000.parquet",          # the index's split name, not the datasets one
    "data/landsat/train/base-main-00000.parquet",     # unknown source
    "data/rs5m/train/all-main-00000.parquet",         # unknown group
    "data/rs5m/train/base-main-0000.parquet",         # four digits
    "data/rs5m/train/base-main-000000.parquet",       # six digits
    "data/rs5m/train/base-Main-00000.parquet",        # upper-case batch
    "data/rs5m/train/base-main-00000.parquet.tmp",
    "x/data/rs5m/train/base-main-00000.parquet",
    "data/rs5m/train/sub/base-main-00000.parquet",
])
def test_parse_rejects_what_is_not_a_shard(path):
    assert layout.parse_shard_path(path) is None


def test_parse_accepts_backslashes_and_orders_names():
    name = layout.parse_shard_path("data\\rsicd\\test\\base-main-00003.parquet")
    assert (name.source, name.split, name.group, name.index) == ("RSICD", "test", "base", 3)
    a = layout.ShardName("NWPU", "train", "base", "main", 2)
    b = layout.ShardName("NWPU", "train", "base", "main", 10)
    c = layout.ShardName("NWPU", "train", "iraware", "main", 0)
    assert sorted([c, b, a]) == [a, b, c]
    assert layout.ShardName("NWPU", "train", "base", path="x") == layout.ShardName("NWPU", "train", "base", path="y")


def test_config_patterns_by_hand():
    get = layout.get_config
    assert get("default").patterns("train") == ["data/*/train/*.parquet"]
    assert get("iraware").patterns("test") == ["data/*/test/iraware-*.parquet"]
    assert get("rsicd").patterns("validation") == ["data/rsicd/validation/*.parquet"]
    assert get("default").default is True and not any(c.default for c in layout.CONFIGS[1:])
    assert get(get("nwpu")) is get("nwpu")
    assert get("nwpu").sources == ("NWPU",) and get("default").sources is None
    assert get("iraware").groups == ("iraware",) and get("default").groups == ("iraware", "base")
    assert get("iraware").includes("RS5M", "iraware") and not get("iraware").includes("RS5M", "base")
    assert get("rs5m").includes("RS5M", "base") and not get("rs5m").includes("NWPU", "base")
    assert get("default").includes("NWPU", "base")
    with pytest.raises(ValueError, match="unknown config 'landsat'"):
        get("landsat")


FILES = [
    "data/rs5m/train/iraware-main-00000.parquet",
    "data/rs5m/train/base-main-00000.parquet",
    "data/rs5m/train/base-b2-00000.parquet",
    "data/nwpu/train/base-main-00000.parquet",
    "data/nwpu/test/iraware-main-00000.parquet",
    "data/rsicd/validation/base-main-00001.parquet",
    "data/rsicd/validation/base-main-00000.parquet",
    "data/rs5m/train/x/base-main-00000.parquet",  # a sub-folder: in no config
]


def test_config_files_by_hand():
    cf = layout.config_files
    assert cf("default", "train", FILES) == [
        "data/nwpu/train/base-main-00000.parquet", "data/rs5m/train/base-b2-00000.parquet",
        "data/rs5m/train/base-main-00000.parquet", "data/rs5m/train/iraware-main-00000.parquet"]
    assert cf("iraware", "train", FILES) == ["data/rs5m/train/iraware-main-00000.parquet"]
    assert cf("iraware", "test", FILES) == ["data/nwpu/test/iraware-main-00000.parquet"]
    assert cf("rsicd", "validation", FILES) == ["data/rsicd/validation/base-main-00000.parquet",
                                                "data/rsicd/validation/base-main-00001.parquet"]
    assert cf("rs5m", "test", FILES) == []
    assert cf(layout.get_config("nwpu"), "train", FILES) == ["data/nwpu/train/base-main-00000.parquet"]


def test_data_files_name_only_patterns_that_match():
    assert layout.data_files("default", FILES) == {
        "train": ["data/*/train/*.parquet"], "validation": ["data/*/validation/*.parquet"],
        "test": ["data/*/test/*.parquet"]}
    assert layout.data_files("iraware", FILES) == {"train": ["data/*/train/iraware-*.parquet"],
                                                   "test": ["data/*/test/iraware-*.parquet"]}
    assert layout.data_files("rsicd", FILES) == {"validation": ["data/rsicd/validation/*.parquet"]}
    assert layout.data_files("skyscript", FILES) == {}
    assert layout.data_files("nwpu", iter(FILES)) == {"train": ["data/nwpu/train/*.parquet"],
                                                      "test": ["data/nwpu/test/*.parquet"]}


def test_glob_match_by_hand():
    g = layout.glob_match
    assert g("data/*/train/*.parquet", "data/rs5m/train/base-main-00000.parquet")
    assert not g("data/*/train/*.parquet", "data/rs5m/train/x/base-main-00000.parquet")
    assert not g("data/*/train/*.parquet", "data/rs5m/test/base-main-00000.parquet")
    assert g("data/rs5m/train/iraware-*.parquet", "data/rs5m/train/iraware-b2-00001.parquet")
    assert not g("data/rs5m/train/iraware-*.parquet", "data/rs5m/train/base-b2-00001.parquet")
    assert not g("data/*/train/*.parquet", "DATA/rs5m/train/base-main-00000.parquet")  # case-sensitive


def test_list_shards_separates_shards_from_other_parquet_files(tmp_path):
    for rel in (*FILES, "data/extra.parquet", "data/rs5m/train/notes.txt", "README.md"):
        p = tmp_path / "repo" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    fs = fsspec.filesystem("file")
    for root in (str(tmp_path / "repo"), str(tmp_path / "repo") + "/"):
        shards, orphans = layout.list_shards(fs, root)
        assert [s.path for s in shards] == sorted(f for f in FILES if "/x/" not in f) == [
            "data/nwpu/test/iraware-main-00000.parquet", "data/nwpu/train/base-main-00000.parquet",
            "data/rs5m/train/base-b2-00000.parquet", "data/rs5m/train/base-main-00000.parquet",
            "data/rs5m/train/iraware-main-00000.parquet", "data/rsicd/validation/base-main-00000.parquet",
            "data/rsicd/validation/base-main-00001.parquet"]
        assert [(s.source, s.split, s.group, s.batch, s.index) for s in shards][:2] == [
            ("NWPU", "test", "iraware", "main", 0), ("NWPU", "train", "base", "main", 0)]
        assert orphans == ["data/extra.parquet", "data/rs5m/train/x/base-main-00000.parquet"]
    assert layout.list_shards(fs, str(tmp_path / "nothing")) == ([], [])
    mem = fsspec.filesystem("memory")
    try:
        mem.pipe_file("/lsrepo/data/rsitmd/test/base-main-00000.parquet", b"x")
        shards, orphans = layout.list_shards(mem, "/lsrepo")
        assert [s.path for s in shards] == ["data/rsitmd/test/base-main-00000.parquet"] and orphans == []
    finally:
        mem.rm("/lsrepo", recursive=True)


def test_registry_dict_is_what_the_loading_script_embeds():
    d = layout.registry_dict()
    assert d["splits"] == ["train", "validation", "test"] and d["groups"] == ["iraware", "base"]
    assert d["source_dirs"] == layout.SOURCE_DIRS
    assert [c["name"] for c in d["configs"]] == list(layout.CONFIG_NAMES)
    by = {c["name"]: c for c in d["configs"]}
    assert by["default"]["default"] is True and by["default"]["sources"] is None
    assert by["iraware"]["groups"] == ["iraware"] and by["nwpu"]["sources"] == ["NWPU"]
    assert [f[0] for f in d["fields"]][:4] == ["sample_id", "source", "source_record_id", "rgb"]


def _check_default_configs(lay: layout.Layout) -> None:
    """What the README's config table says, for any layout of the five FusionRS sources."""
    assert lay.sources == ("RS5M", "SkyScript", "NWPU", "RSICD", "RSITMD")
    assert lay.source_dirs == layout.SOURCE_DIRS and lay.dir_sources == layout.DIR_SOURCES
    assert lay.config_names == ("default", "iraware", *ALL_DIRS)
    assert [c.name for c in lay.configs] == list(lay.config_names) == list(lay.configs_by_name)
    d, ira = lay.get_config("default"), lay.get_config("iraware")
    assert (d.sources, d.groups, d.default) == (None, ("iraware", "base"), True)
    assert (ira.sources, ira.groups, ira.default) == (None, ("iraware",), False)
    assert d.description == "Every triplet of every source, both groups (the paper's 600K set; an rc4 rebuild writes 599,992 rows)."
    assert ira.description == "Only rows that carry an IR-aware caption (`ir_caption` non-null), every source."
    for s, dirname in zip(lay.sources, ALL_DIRS, strict=True):
        c = lay.get_config(dirname)
        assert (c.sources, c.groups, c.dirs, c.default) == ((s,), ("iraware", "base"), (dirname,), False)
        assert c.description == f"Only rows from {s}, both groups."
        assert c.patterns("train") == [f"data/{dirname}/train/*.parquet"]
    assert lay.shard_path("RSICD", "test", "base", 4) == "data/rsicd/test/base-main-00004.parquet"
    assert lay.parse_shard_path("data/rsicd/test/base-main-00004.parquet").source == "RSICD"


def test_the_module_layout_and_a_fresh_one_follow_the_readme():
    _check_default_configs(layout.DEFAULT_LAYOUT)
    _check_default_configs(layout.Layout())
    from fusionrs_hf.sources import DEFAULT_REGISTRY

    assert layout.Layout().registry is DEFAULT_REGISTRY and layout.DEFAULT_LAYOUT.registry is DEFAULT_REGISTRY
    assert layout.source_dir("SkyScript") == "skyscript" and layout.source_dir("NEW_src") == "new_src"


def test_list_shards_roots_and_listing_shapes():
    mem = fsspec.filesystem("memory")
    try:
        mem.pipe_file("/lsr2/data/rs5m/train/base-main-00000.parquet", b"x")
        mem.pipe_file("/lsrX/data/rs5m/train/base-main-00000.parquet", b"x")
        for root in ("/lsr2", "/lsr2/", "/lsr2//", "/lsrX"):
            shards, orphans = layout.list_shards(mem, root)
            assert [s.path for s in shards] == ["data/rs5m/train/base-main-00000.parquet"], root
    finally:
        mem.rm("/lsr2", recursive=True)
        mem.rm("/lsrX", recursive=True)

    class Listing:
        """A filesystem whose listing drops the root's leading slash (as some object stores do)."""

        protocol = ("stub",)

        def __init__(self, found):
            self.found = found

        def find(self, path, withdirs=False):
            if self.found is None:
                raise FileNotFoundError(path)
            return self.found

        def exists(self, path):
            return False

    stub = Listing(["bucket/repo/data/nwpu/test/base-main-00001.parquet", "bucket/repo/data/nwpu/x.parquet"])
    shards, orphans = layout.list_shards(stub, "/bucket/repo")
    assert [s.path for s in shards] == ["data/nwpu/test/base-main-00001.parquet"]
    assert orphans == ["data/nwpu/x.parquet"]
    assert layout.list_shards(Listing(None), "/bucket/repo") == ([], [])
    # the root's name again inside the shard path ("t/" in "test/"): cut at its first place only
    shards, orphans = layout.list_shards(Listing(["t/data/nwpu/test/base-main-00001.parquet"]), "/t")
    assert [s.path for s in shards] == ["data/nwpu/test/base-main-00001.parquet"] and orphans == []
    # a listed path outside the root is kept whole (an orphan), not cut
    shards, orphans = layout.list_shards(Listing(["elsewhere/x.parquet"]), "/bucket/repo")
    assert shards == [] and orphans == ["elsewhere/x.parquet"]


def test_a_repo_that_declares_its_own_source(tmp_path):
    import json

    root = tmp_path / "own"
    for rel in ("data/drone/train/base-main-00000.parquet", "data/rs5m/test/base-main-00000.parquet"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    fs = fsspec.filesystem("file")
    assert layout.layout_for(fs, str(root)) is layout.DEFAULT_LAYOUT
    shards, orphans = layout.list_shards(fs, str(root))
    assert [s.path for s in shards] == ["data/rs5m/test/base-main-00000.parquet"]
    assert orphans == ["data/drone/train/base-main-00000.parquet"]  # an undeclared source is not a shard
    (root / "fusionrs_sources.json").write_text(json.dumps({"schema_version": "fusionrs-sources-v1", "sources": [
        {"name": "Drone", "title": "Our drone survey", "terms": "ours", "rights_code": "own-cc-by"}]}))
    lay = layout.layout_for(fs, str(root))
    assert lay is not layout.DEFAULT_LAYOUT and lay.sources[-1] == "Drone"
    assert lay.get_config("drone").patterns("train") == ["data/drone/train/*.parquet"]
    assert lay.config_names == ("default", "iraware", *ALL_DIRS, "drone")
    shards, orphans = layout.list_shards(fs, str(root))
    assert [(s.source, s.path) for s in shards] == [("Drone", "data/drone/train/base-main-00000.parquet"),
                                                    ("RS5M", "data/rs5m/test/base-main-00000.parquet")]
    assert orphans == []
    assert layout.parse_shard_path("data/drone/train/base-main-00000.parquet") is None  # the default layout


def test_a_repo_root_with_glob_characters_is_a_name_not_a_pattern(sample_repo, tmp_path):
    """The listing globbed ``{root}/data/**/*.parquet``: a root like ``runs[1]`` matched nothing (or, on a
    store, other prefixes)."""
    import shutil

    import fsspec

    from fusionrs_hf.layout import list_shards

    root = tmp_path / "runs[1]" / "repo*"
    shutil.copytree(sample_repo, root)
    fs = fsspec.filesystem("file")
    got, orphans = list_shards(fs, str(root))
    want, _ = list_shards(fs, str(sample_repo))
    assert [s.path for s in got] == [s.path for s in want] and got and not orphans
