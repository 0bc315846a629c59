"""Issue 13: the card. Hub metadata (size_categories, source_datasets, license_link), a Load snippet that
works where the repo lives (run as written), re-rendering that keeps what the card says, and the pictures
beside it (deterministic, linked, one row per source)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusionrs_hf.card import card_says, render_card, scan_repo, size_category, write_card
from fusionrs_hf.card_assets import ASSET_PATHS, CONTACT_SHEET, COUNTS_FIGURE, ROWS_PER_SOURCE, THUMB
from fusionrs_hf.cli import main
from fusionrs_hf.schema import SOURCES


@pytest.fixture
def repo(sample_repo, tmp_path) -> Path:
    """A copy of the sample, its card re-rendered where it now is."""
    root = Path(shutil.copytree(sample_repo, tmp_path / "repo"))
    write_card(root)
    return root


def _yaml(root: Path) -> dict:
    return yaml.safe_load((root / "README.md").read_text().split("---\n")[1])


def _snippet(root: Path) -> str:
    return re.search(r"```python\n(.*?)```", (root / "README.md").read_text().split("## Load", 1)[1], re.S)[1]


def test_hub_metadata(repo):
    meta = _yaml(repo)
    assert meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == [f"extended|{s}" for s in SOURCES]
    assert meta["license"] == "other" and meta["license_link"] == "README.md#rights"
    assert "## Rights" in (repo / "README.md").read_text()
    assert [size_category(n) for n in (0, 999, 1_000, 600_000, 1_200_000)] == \
        ["n<1K", "n<1K", "1K<n<10K", "100K<n<1M", "1M<n<10M"]


def test_local_snippet_works_from_any_folder(repo, tmp_path, monkeypatch):
    code = _snippet(repo)
    assert f'load_dataset("{repo}", "iraware"' in code  # the absolute folder, not a relative path
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - the card's snippet as written
    assert ns["row"]["ir_caption"] and ns["row"]["rgb"].size[0] > 0


def test_rerender_keeps_banner_and_repo_id(repo, tmp_path):
    write_card(repo, repo_id="me/fusionrs")
    text = (repo / "README.md").read_text()
    assert "This repository is a synthetic sample." in text and 'load_dataset("me/fusionrs", "iraware"' in text
    write_card(repo)  # no options: what the card says stays
    assert (repo / "README.md").read_text() == text
    assert main(["card", str(repo)]) == 0
    assert (repo / "README.md").read_text() == text
    assert main(["card", str(repo), "--no-sample"]) == 0
    assert "synthetic sample." not in (repo / "README.md").read_text()
    assert 'load_dataset("me/fusionrs"' in (repo / "README.md").read_text()
    # an S3 location with its endpoint (never its credentials), kept on the next re-render too
    assert main(["card", str(repo), "--repo-id", "s3://bucket/fusionrs", "--storage-option",
                 "endpoint_url=http://127.0.0.1:9000", "--storage-option", "secret=TOPSECRETVALUE"]) == 0
    main(["card", str(repo)])
    text = (repo / "README.md").read_text()
    assert "TOPSECRETVALUE" not in text and card_says(text)["location"] == {
        "url": "s3://bucket/fusionrs", "storage_options": {"endpoint_url": "http://127.0.0.1:9000"}}
    code = _snippet(repo)
    assert '"parquet"' in code and '"s3://bucket/fusionrs/data/*/train/iraware-*.parquet"' in code
    compile(code, "<card>", "exec")
    # a card written before the location was recorded: its snippet's repo is kept
    old = re.sub(r"<!-- fusionrs:location .*? -->\n", "", text).replace(code, 'from datasets import load_dataset\n'
                                                                         'ds = load_dataset("me/older", "iraware")\n')
    (repo / "README.md").write_text(old)
    write_card(repo)
    assert 'load_dataset("me/older", "iraware"' in (repo / "README.md").read_text()


def test_pictures_are_deterministic_linked_and_show_every_source(repo, tmp_path):
    from PIL import Image

    text = (repo / "README.md").read_text()
    assert all(f"]({rel})" in text for rel in ASSET_PATHS)
    first = {rel: (repo / rel).read_bytes() for rel in ASSET_PATHS}
    other = Path(shutil.copytree(repo, tmp_path / "elsewhere"))
    shutil.rmtree(other / "assets")
    write_card(other)
    write_card(repo)
    assert {rel: (other / rel).read_bytes() for rel in ASSET_PATHS} == first  # same repo, same bytes
    assert {rel: (repo / rel).read_bytes() for rel in ASSET_PATHS} == first  # and again
    sheet = Image.open(io.BytesIO(first[CONTACT_SHEET]))
    assert sheet.format == "PNG" and sheet.height >= len(SOURCES) * ROWS_PER_SOURCE * THUMB
    assert Image.open(io.BytesIO(first[COUNTS_FIGURE])).format == "PNG"
    # fewer rows: a different counts figure; the card still counts what is there
    victim = sorted((repo / "data/rsitmd/test").glob("*.parquet"))[0]
    victim.unlink()
    write_card(repo)
    assert (repo / COUNTS_FIGURE).read_bytes() != first[COUNTS_FIGURE]
    shards, _ = scan_repo(str(repo))
    assert (repo / "README.md").read_text() == render_card(
        shards, sample=True, repo_id=str(repo), assets=ASSET_PATHS)


def test_card_cli_help_names_the_options():
    res = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "card", "--help"], capture_output=True,
                         text=True, timeout=60, env={**os.environ})
    assert res.returncode == 0
    for word in ("--repo-id", "--sample", "--no-sample", "--storage-option", "assets/", "keep"):
        assert word in res.stdout, word


def test_citation_is_the_releases_everywhere():
    """README, the card and the standalone loading script cite the release as its CITATION.cff does (its
    eleven authors in order, version rc4, 2026-07-27), with one text."""
    import re
    from pathlib import Path

    from fusionrs_hf.card import CITATION

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    script = (root / "loading_script" / "fusionrs.py").read_text()
    assert f"```bibtex\n{CITATION}\n```" in readme
    assert f'_CITATION = r"""{CITATION}"""' in script
    authors = re.split(r"\s+and\s+", re.search(r"author\s*=\s*\{(.*?)\},\n", CITATION, re.S)[1])
    assert [a.split(",")[0].strip() for a in authors] == [
        "Han", "Zhang", "Sun", "Zhang", "Dong", "Lu", "Hu", "Yang", "Zhang", "Wei", "Guo"]
    assert "rc4 (2026-07-27)" in CITATION


def test_no_credential_option_reaches_the_card_whatever_its_key(repo, capsys):
    """Only storage options known to be configuration are written into the card (the location comment and the
    Load snippet); ``connection_string`` (an Azure account key) or ``passphrase`` were written verbatim before,
    their names matching no credential word."""
    from fusionrs_hf.cli import main

    conn = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AZUREKEY0123456789abcdef=="
    assert main(["card", str(repo), "--repo-id", "abfs://container/fusionrs", "--no-assets",
                 "--storage-option", f"connection_string={conn}", "--storage-option", "passphrase=SSHkeyPASS42",
                 "--storage-option", "account_name=acct", "--storage-option", "blob_extra=ZZSECRETZZ12345"]) == 0
    card = (repo / "README.md").read_text()
    out = capsys.readouterr()
    for secret in ("AZUREKEY0123456789", "SSHkeyPASS42", "ZZSECRETZZ12345"):  # the last under a key named nothing
        assert secret not in card and secret not in out.out + out.err
    assert '"account_name": "acct"' in card and "abfs://container/fusionrs/data/" in card


@pytest.mark.parametrize("report", ['[1]', '{"release": "x"}', "[" * 100_000 + "]" * 100_000,
                                    '{"release": {"release": "rc4-20260727", "rows": "many", "sha256": "ab"}}',
                                    '{"written": {"by_source_split_group": {"NWPU": {"train": {"base": "7"}}}}}'])
def test_a_malformed_build_report_is_taken_as_absent(repo, report):
    """The build report is the repo's data: one of another shape (a list, a string where an object belongs, a
    deeply nested one, rows that are text) crashed `fusionrs card` and `check` with AttributeError,
    RecursionError or a format error; it is now treated as absent, as an unreadable one is."""
    import subprocess
    import sys

    (repo / "build_report.json").write_text(report)
    for args in (["card", str(repo), "--no-assets"], ["check", str(repo), "--fast", "--quiet"]):
        proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (args, proc.stderr[-800:])  # 1: a bug
    assert "No build report in this repo" in (repo / "README.md").read_text()


def test_a_card_past_the_limits_is_one_finding_and_quick(repo):
    """A README of 300,000 data_files patterns made `check --fast` match each against every shard (3.5 min on
    the demo); a card past the limits (bytes, patterns) is one `bad_card` finding, before any matching."""
    import time

    from fusionrs_hf.check import check_repo
    from fusionrs_hf.limits import MAX_CARD_BYTES, MAX_CARD_PATTERNS

    card = (repo / "README.md").read_text()
    many = "".join(f"    - data/x{i}/*.parquet\n" for i in range(MAX_CARD_PATTERNS + 10))
    head, rest = card.split("configs:\n", 1)
    huge = "configs:\n- config_name: huge\n  data_files:\n  - split: train\n    path:\n" + many
    (repo / "README.md").write_text(head + huge + rest)  # the repo's own configs follow the huge one
    t0 = time.perf_counter()
    found = [f for f in check_repo(str(repo), fast=True).findings if f.kind == "bad_card"]
    assert len(found) == 1 and f"more than {MAX_CARD_PATTERNS:,} data_files patterns" in found[0].message
    assert time.perf_counter() - t0 < 30
    (repo / "README.md").write_text(card + "\n" + "x" * MAX_CARD_BYTES)
    found = [f for f in check_repo(str(repo), fast=True).findings if f.kind == "bad_card"]
    assert len(found) == 1 and "larger than the limit" in found[0].message


def test_a_card_yaml_that_aliases_blow_up_is_one_bad_card_finding(repo):
    """Aliases share one node: a 200 KB card of 20,000 aliases to one 400-entry split list took 77 s in
    `check --fast` (every walk of the header visits each alias in full). A header that expands past
    MAX_CARD_NODES values is refused; a few aliases, as PyYAML writes shared objects, are read as before."""
    from fusionrs_hf.card import MAX_CARD_NODES, read_card_yaml
    from fusionrs_hf.check import check_repo

    card = (repo / "README.md").read_text()
    head, rest = card.split("configs:\n", 1)
    splits = "".join(f"  - {{name: s{i}, num_bytes: 1, num_examples: 1}}\n" for i in range(40))
    n = MAX_CARD_NODES // 40  # each alias stands for 40 entries of 7 values
    (repo / "README.md").write_text(head + "x_shared: &big\n" + splits + "x_many:\n" + "- *big\n" * n
                                    + "configs:\n" + rest)
    found = [f for f in check_repo(str(repo), fast=True).findings if f.kind == "bad_card"]
    assert len(found) == 1 and f"expands to more than {MAX_CARD_NODES:,} values" in found[0].message
    with pytest.raises(ValueError, match="aliases repeating a part of it"):
        read_card_yaml((repo / "README.md").read_text())
    few = head + "x_shared: &big\n" + splits + "x_many:\n" + "- *big\n" * 3 + "configs:\n" + rest
    assert len(read_card_yaml(few)["x_many"]) == 3 and read_card_yaml(card)["configs"]


def test_card_on_a_truncated_shard_is_one_line_naming_it(repo):
    """It exited 1 with pyarrow's bare "Parquet magic bytes not found", no file named."""
    import subprocess
    import sys

    shard = sorted((repo / "data").rglob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:500])
    proc = subprocess.run([sys.executable, "-m", "fusionrs_hf.cli", "card", str(repo)], capture_output=True, text=True,
                          timeout=120)
    rel = shard.relative_to(repo).as_posix()
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"fusionrs card: error: shard {rel}: not a readable parquet file (ArrowInvalid: Parquet magic bytes not "
        "found in footer. Either the file is corrupted or this is not a parquet file.)"]
