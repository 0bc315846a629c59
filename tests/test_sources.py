"""Issue 17: a repo's own source beside the FusionRS ones, without editing our code.

An rc4-shaped repo plus one added source (``--from-folder --source DroneSurvey --rights-code ...
--ir-kind measured``): stock ``load_dataset`` sees the new config and the grown ``default``, the old
shards are byte-identical, ``check`` is clean, a re-push uploads only the new files, the card labels
the new source's IR as measured, the release checks skip it and say so, and the loader's exactly-once
and DDP rules hold across old and new sources. Bad names, clashes and a missing rights code are
one-line errors and write nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import get_dataset_config_names, load_dataset

from fusionrs_hf import cli
from fusionrs_hf.build import BuildOptions, build
from fusionrs_hf.check import check_repo
from fusionrs_hf.push import push_repo
from fusionrs_hf.scenes import jpeg_bytes, render_scene
from fusionrs_hf.sources import REGISTRY_FILE
from fusionrs_hf.torch import FusionRSIterable

from .build_fixtures import make_fixture

NEW = "DroneSurvey"


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory):
    fx = make_fixture(tmp_path_factory.mktemp("own_src"), size=64)
    out = tmp_path_factory.mktemp("own_out") / "repo"
    build(BuildOptions(index=str(fx.index_public), out=str(out), source_roots={k: str(v) for k, v in fx.roots.items()},
                       ir_root=str(fx.ir_root), captions=[(None, str(p)) for p in fx.caption_files],
                       iraware=[str(fx.iraware)], rows_per_shard=2, workers=1, progress=False))
    return out


def _folder(root: Path) -> Path:
    """Own images: 3 train, 1 validation, 1 test (a listing with splits), one IR-aware caption."""
    rng = np.random.default_rng(7)
    rows = ["rgb,ir,caption,ir_caption,split,sample_id"]
    for i, split in enumerate(["train", "train", "train", "val", "test"]):
        sc = render_scene(rng, 64)
        for kind, arr in (("rgb", sc.rgb), ("ir", sc.ir)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            (root / kind / f"d{i}.jpg").write_bytes(jpeg_bytes(arr))
        ira = "Bright roofs line the dark road." if i == 0 else ""
        rows.append(f"rgb/d{i}.jpg,ir/d{i}.jpg,A drone view of {i + 3} sheds beside survey field {i}.,{ira},{split},"
                    f"drone-{i}")
    listing = root / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    return listing


def _shards(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}


def _add(repo: Path, listing: Path, *extra: str) -> int:
    return cli.main(["build", "--from-folder", str(listing), "--source", NEW, "--out", str(repo), "--quiet",
                     "--workers", "1", "--rights-code", "drone-survey-cc-by-4.0", "--license", "CC-BY-4.0",
                     "--ir-kind", "measured", *extra])


@pytest.fixture(scope="module")
def grown(base_repo, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grown")
    repo = Path(shutil.copytree(base_repo, tmp / "repo"))
    dest = tmp / "remote"
    first = push_repo(repo, f"file://{dest}", skip_check=True)
    assert first.ok, first.error
    before = _shards(repo)
    assert _add(repo, _folder(tmp / "mine")) == 0
    return repo, dest, before


def test_new_config_and_grown_default_with_old_shards_untouched(grown):
    repo, _, before = grown
    after = _shards(repo)
    assert {k: after[k] for k in before} == before  # nothing renamed or rewritten
    new = sorted(set(after) - set(before))
    assert new and all(k.startswith("data/dronesurvey/") for k in new)
    assert json.loads((repo / REGISTRY_FILE).read_text())["sources"][0]["name"] == NEW
    assert "dronesurvey" in get_dataset_config_names(str(repo))
    own = load_dataset(str(repo), "dronesurvey")
    assert {s: sorted(ds["sample_id"]) for s, ds in own.items()} == {
        "train": ["drone-0", "drone-1", "drone-2"], "validation": ["drone-3"], "test": ["drone-4"]}
    default = load_dataset(str(repo), "default", split="train")
    assert {"drone-0", "nwpu-0000"} <= set(default["sample_id"])
    assert set(load_dataset(str(repo), "iraware", split="train")["sample_id"]) >= {"drone-0"}
    row = next(r for r in own["train"] if r["sample_id"] == "drone-0")
    assert row["source"] == NEW and row["rights_code"] == "drone-survey-cc-by-4.0"
    assert row["ir_caption"] == "Bright roofs line the dark road."
    assert row["ir_caption_status"] == "filtered_strict_v3"  # no status in a user's file: the authors' filter ran


def test_card_labels_the_measured_source_and_release_checks_skip_it(grown):
    repo, _, _ = grown
    card = (repo / "README.md").read_text()
    assert "**DroneSurvey** (config `dronesurvey`, rights code `drone-survey-cc-by-4.0`, CC-BY-4.0, measured IR)" in card
    assert "(not of DroneSurvey, whose IR is measured by a sensor)" in card
    assert "| DroneSurvey |" in card and "| measured |" in card
    rep = check_repo(str(repo), workers=1)
    assert rep.ok, [(f.kind, f.message) for f in rep.findings]
    rel = check_repo(str(repo), fast=True, release="rc4")
    records = next(c for c in rel.stats["release"]["checks"] if c["check"] == "records")
    assert "not checked: DroneSurvey" in records["detail"]
    assert not any(f.config == "dronesurvey" for f in rel.findings)


def test_re_push_uploads_only_the_new_files(grown):
    repo, dest, before = grown
    res = push_repo(repo, f"file://{dest}", skip_check=True)
    assert res.ok, res.error
    sent = {u["path"] for u in res.plan.to_dict()["upload"]}
    assert sent == set(_shards(repo)) - set(before)
    assert (dest / REGISTRY_FILE).read_bytes() == (repo / REGISTRY_FILE).read_bytes()
    remote_card = (dest / "README.md").read_text()
    assert "**DroneSurvey** (config `dronesurvey`" in remote_card and "config_name: dronesurvey" in remote_card
    assert check_repo(f"file://{dest}", fast=True).ok  # the remote's card counts what the remote holds
    again = push_repo(repo, f"file://{dest}", skip_check=True)
    assert again.plan.empty and again.uploaded_files == 0


def test_loader_reads_every_row_once_across_old_and_new_sources(grown):
    repo, _, _ = grown
    want = set(load_dataset(str(repo), "default", split="train")["sample_id"])
    got: list[str] = []
    for rank in range(2):
        ds = FusionRSIterable(str(repo), "default", "train", batch_size=None, image_size=16, rank=rank, world_size=2)
        got += [r["sample_id"] for r in ds]
    assert len(got) == len(set(got)) == len(want) // 2 * 2 and set(got) <= want  # DDP: N // 2 rows per rank
    own = [r["sample_id"] for r in FusionRSIterable(str(repo), "dronesurvey", "train", batch_size=None,
                                                      image_size=16)]
    assert sorted(own) == ["drone-0", "drone-1", "drone-2"]


@pytest.mark.parametrize("name, extra, message", [
    ("bad name!", (), "must match"),
    ("nwpu", (), "already taken"),  # a config name of a FusionRS source
    ("Default", (), "already taken"),
    (NEW, ("--rights-code", ""), "a rights code is required"),
])
def test_bad_name_clash_or_missing_rights_is_one_line_and_writes_nothing(base_repo, tmp_path, capsys, name, extra,
                                                                         message):
    repo = Path(shutil.copytree(base_repo, tmp_path / "repo"))
    listing = _folder(tmp_path / "mine")
    before = {p.relative_to(repo).as_posix(): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    args = ["build", "--from-folder", str(listing), "--source", name, "--out", str(repo), "--quiet",
            "--rights-code", "x-rights", *extra]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    after = {p.relative_to(repo).as_posix(): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert after == before


def test_missing_rights_code_for_a_new_source(base_repo, tmp_path, capsys):
    repo = Path(shutil.copytree(base_repo, tmp_path / "repo"))
    args = ["build", "--from-folder", str(_folder(tmp_path / "mine")), "--source", NEW, "--out", str(repo), "--quiet"]
    assert cli.main(args) == 2
    assert "a rights code is required (--rights-code)" in capsys.readouterr().err
    assert not (repo / REGISTRY_FILE).exists()


def test_a_registry_of_more_sources_than_the_limit_is_one_error():
    """Each source is validated against those before it: a 1 MB fusionrs_sources.json of 16,000 sources made
    every command (they all read it) take 27 s. More than MAX_OWN_SOURCES is refused before any is read."""
    from fusionrs_hf.sources import MAX_OWN_SOURCES, SourceError, SourceRegistry

    def doc(n):
        return json.dumps({"schema_version": "fusionrs-sources-v1", "sources": [
            {"name": f"Own{i}", "title": "t", "terms": "t", "rights_code": "own-data"} for i in range(n)]})

    full = SourceRegistry.from_json(doc(MAX_OWN_SOURCES))
    assert len(full.extra) == MAX_OWN_SOURCES
    from fusionrs_hf.sources import Source

    with pytest.raises(SourceError, match="256 own sources, the limit"):  # refused where it would be written
        full.with_source(Source("OneMore", "t", "t", rights_code="own-data"))
    with pytest.raises(SourceError, match=f"16,000 sources, more than the limit {MAX_OWN_SOURCES}"):
        SourceRegistry.from_json(doc(16_000))
