"""Issue 13: the one storage layer (locations, storage_options, per-process filesystems, the load call) and
the installs (extras that never pull a torch; a missing optional package is one line naming its extra)."""

from __future__ import annotations

import base64
import json
import pickle
import re
import sys
import tomllib
from pathlib import Path

import pytest

from fusionrs_hf.storage import (
    HubUnreachableError,
    Location,
    MissingExtraError,
    describe,
    locate,
    parse_storage_options,
    public_options,
    require,
)

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- locations


def test_locate_every_kind(sample_repo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = locate(sample_repo)
    assert (local.kind, local.root, local.protocol) == ("local", str(sample_repo), "file")
    assert locate(f"file://{sample_repo}").root == str(sample_repo)
    assert locate(f"file://{tmp_path}/not-yet").kind == "local"  # an explicit file:// target may not exist yet
    hub = locate("owner/name", "refs/pr/3", {"token": "hf_x"})
    assert (hub.kind, hub.repo_id, hub.revision, hub.root) == ("hub", "owner/name", "refs/pr/3",
                                                               "datasets/owner/name@refs%2Fpr%2F3")
    assert locate("hf://datasets/owner/name@refs%2Fpr%2F3").revision == "refs/pr/3"
    mem = locate("memory://bucket/x", storage_options={"skip_instance_cache": True})
    assert (mem.kind, mem.protocol, mem.storage_options) == ("fsspec", "memory", {"skip_instance_cache": True})
    for bad in ("not a repo", "a/b/c/d"):
        with pytest.raises(ValueError, match="no such folder, and not an fsspec URL or a Hub dataset id"):
            locate(bad)
    with pytest.raises(ValueError, match="revision"):
        locate("memory://bucket/x", "v1")
    with pytest.raises(ValueError, match="only dataset repos"):
        locate("hf://models/owner/name")


def test_filesystem_is_opened_per_process_and_never_pickled():
    import os

    loc = locate("memory://bucket/pickled")
    fs = loc.fs()
    assert loc.fs() is fs
    copy = pickle.loads(pickle.dumps(loc))
    assert copy._fs is None and copy.url == loc.url  # a worker opens its own
    loc._pid = os.getpid() + 1  # as seen from a forked child: the parent's instance is not reused
    assert loc._pid != os.getpid() and loc.fs() is not None and loc._pid == os.getpid()


def test_storage_options_from_the_command_line():
    got = parse_storage_options(["endpoint_url=http://127.0.0.1:9000", "anon=true", "client_kwargs.region_name=eu",
                                 "max_concurrency=4", "key=AKIA=="])
    assert got == {"endpoint_url": "http://127.0.0.1:9000", "anon": True, "client_kwargs": {"region_name": "eu"},
                   "max_concurrency": 4, "key": "AKIA=="}
    for bad in (["novalue"], ["=x"], ["a=1", "a.b=2"]):
        with pytest.raises(ValueError):
            parse_storage_options(bad)
    assert public_options({"endpoint_url": "u", "key": "k", "secret": "s", "client_kwargs": {"aws_session_token": "t"},
                           "token": "hf_x"}) == {"endpoint_url": "u"}
    # a credential inside a value is left out whatever the key says (proxies, endpoints, cookies)
    assert public_options({"endpoint_url": "http://u:PW99@h:9000", "anon": False,
                           "config_kwargs": {"proxies": {"https": "http://proxyuser:PROXYPASS77@10.0.0.1:3128"},
                                             "retries": {"max_attempts": 3}},
                           "headers": {"Cookie": "sid=abc", "Accept": "x"}}) == {
        "anon": False, "config_kwargs": {"retries": {"max_attempts": 3}}}
    # only keys known to be configuration are written: a key's name is no promise about its value
    assert public_options({"headers_list": [("X-Api", "http://u:pw77@h")], "cfg": [{"password": "hunter22"}],
                           "ok": [("a", "b")], "connection_string": "AccountName=a;AccountKey=AZK==",
                           "passphrase": "SSHkeyPASS42", "config_kwargs": {"signature_version": "s3v4"},
                           "blob_extra": "ZZSECRETZZ12345"}) == {"config_kwargs": {"signature_version": "s3v4"}}
    # what readers need is kept: a sovereign-cloud host, a self-signed endpoint; HTTP headers never (a server
    # may take any header as its credential: X-JFrog-Art-Api names none)
    kept = {"account_host": "acct.blob.core.usgovcloudapi.net", "client_kwargs": {"verify": False}, "encoded": True}
    assert public_options({**kept, "headers": {"Accept": "x", "Authorization": "Bearer abcdefgh12"}}) == kept
    assert public_options({"headers": {"X-JFrog-Art-Api": "AKCp8jQ8secretvalue"}}) == {}
    from fusionrs_hf.secrets import register_options as _reg
    from fusionrs_hf.secrets import scrub as _scrub

    _reg({"config_kwargs": {"signature_version": "s3v4"}})  # configuration, though its name holds "sig"
    assert _scrub("signing with s3v4") == "signing with s3v4"
    from fusionrs_hf.secrets import register_options, scrub

    register_options({"cfg": [{"password": "hunter22"}], "pairs": [("X-Token", "tok-98765")]})
    assert "hunter22" not in scrub("x hunter22 y")


def test_every_entry_point_takes_storage_options_and_the_cli_option():
    import inspect

    import fusionrs_hf
    from fusionrs_hf.check import check_repo
    from fusionrs_hf.cli import build_parser
    from fusionrs_hf.eval import evaluate
    from fusionrs_hf.push import push_repo
    from fusionrs_hf.torch import FusionRSIterable, make_dataloader

    for fn in (fusionrs_hf.load, check_repo, push_repo, evaluate, FusionRSIterable.__init__):
        assert "storage_options" in inspect.signature(fn).parameters, fn
    assert "storage_options" in inspect.getsource(make_dataloader)
    for cmd in ("check", "push", "eval", "card"):
        args = build_parser(cmd).parse_args([cmd, "x", *(["y"] if cmd == "push" else []),
                                             *(["--embeddings", "e.npz"] if cmd == "eval" else []),
                                             "--storage-option", "anon=true", "--storage-option", "a.b=1"])
        assert parse_storage_options(args.storage_options) == {"anon": True, "a": {"b": 1}}, cmd


def test_load_call_is_the_one_that_works_where_the_repo_lives(sample_repo):
    files = ["data/rs5m/train/iraware-main-00000.parquet", "data/nwpu/test/base-main-00000.parquet"]
    args, kw = locate(sample_repo).load_call("iraware")  # a folder: its listed shards, each by name
    listed = sorted(p.relative_to(sample_repo).as_posix() for p in (sample_repo / "data").glob("*/*/iraware-*.parquet"))
    assert args == ("parquet",) and sorted(f for v in kw["data_files"].values() for f in v) == \
        [f"{sample_repo}/{p}" for p in listed]
    assert locate("o/n", "v2").load_call("nwpu") == (("o/n", "nwpu"), {"revision": "v2"})
    args, kw = describe("s3://b/x", {"endpoint_url": "http://h", "secret": "S"}).load_call("iraware", files=files)
    assert args == ("parquet",) and kw["data_files"] == {"train": ["s3://b/x/data/rs5m/train/iraware-main-00000.parquet"]}
    assert kw["storage_options"] == {"endpoint_url": "http://h", "secret": "S"}  # used, not written down
    snippet = describe("s3://b/x", {"endpoint_url": "http://h", "secret": "S"}).load_snippet(files=files)
    assert "S" not in re.findall(r'"([^"]*)"', snippet) and '"endpoint_url": "http://h"' in snippet
    compile(snippet, "<card>", "exec")
    assert 'load_dataset("o/n", "iraware", split="train", streaming=True)' in describe("o/n").load_snippet()


def test_load_of_an_fsspec_repo_goes_through_the_parquet_builder(sample_repo):
    """memory:// is as remote as s3:// to `datasets`: a bare URL cannot be opened as a repo folder."""
    import fsspec

    import fusionrs_hf

    fs = fsspec.filesystem("memory")
    for p in sorted(sample_repo.rglob("*")):
        if p.is_file():
            fs.pipe_file(f"/mem-load/{p.relative_to(sample_repo).as_posix()}", p.read_bytes())
    try:
        ds = fusionrs_hf.load("rsicd", split="test", streaming=True, repo="memory://mem-load")
        assert [r["source"] for r in ds] == ["RSICD"] * 4
        with pytest.raises(ValueError, match="unknown split"):
            fusionrs_hf.load("rsicd", split="val", repo="memory://mem-load")
    finally:
        fs.rm("/mem-load", recursive=True)


def test_hub_unreachable_error_is_one_documented_type():
    from fusionrs_hf.push import PushError, PushHubUnreachable

    e = PushHubUnreachable("push to o/n: cannot reach", repo="o/n", endpoint="http://h")
    assert isinstance(e, HubUnreachableError) and isinstance(e, PushError) and isinstance(e, ConnectionError)
    assert (e.repo, e.endpoint, str(e)) == ("o/n", "http://h", "push to o/n: cannot reach")
    assert issubclass(HubUnreachableError, OSError)


# ----------------------------------------------------------------------------------------- installs


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_no_extra_pulls_a_torch_and_open_clip_is_its_own_extra():
    """`pip install -e ".[train]"` must keep the installed torch: no extra names torch/torchvision, and
    open_clip (which pulls the newest torchvision, pinning another torch) lives only in `[clip]`."""
    def name(req: str) -> str:
        return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")

    extras = _extras()
    for extra, reqs in extras.items():
        names = {name(r) for r in reqs}
        assert not names & {"torch", "torchvision", "torchaudio"}, extra
        if extra != "clip":
            assert "open-clip-torch" not in names, extra
    assert {name(r) for r in extras["clip"]} == {"open-clip-torch"}
    assert {"transformers", "peft", "torchdata"} <= {name(r) for r in extras["train"]}
    assert {"s3fs", "moto", "lightning"} <= {name(r) for r in extras["test"]}
    assert {name(r) for r in extras["s3"]} == {"s3fs"}


def test_readme_install_says_how_to_get_a_matching_torchvision():
    text = (ROOT / "README.md").read_text()
    install = text.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "[clip]" in install and "torchvision" in install and "--index-url" in install
    assert "pip install torch==2.13.0" in install


@pytest.mark.parametrize("module,extra,call", [
    ("torchdata", "train", "stateful"),
    ("s3fs", "s3", "s3"),
    ("open_clip", "clip", "open_clip"),
    ("transformers", "train", "tiny"),
    ("webdataset", "bench", "bench"),
])
def test_a_missing_optional_package_is_one_line_naming_its_extra(module, extra, call, sample_repo, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: `import module` fails
    with pytest.raises(MissingExtraError) as exc:
        if call == "stateful":
            from fusionrs_hf.torch import make_dataloader

            make_dataloader(sample_repo, config="default", split="test", stateful=True)
        elif call == "s3":
            locate("s3://bucket/fusionrs")
        elif call == "open_clip":
            from fusionrs_hf.train.clip import build_model

            build_model("ViT-B-32:openai")
        elif call == "tiny":
            from fusionrs_hf.train.clip import build_model

            build_model("tiny", texts=["a caption"])
        else:
            from fusionrs_hf.bench import loader_wds

            loader_wds([], None)
    msg = str(exc.value)
    assert "\n" not in msg and f"fusionrs-hf[{extra}]" in msg, msg


def test_require_reports_only_the_missing_package_itself():
    with pytest.raises(MissingExtraError, match=r"pip install 'fusionrs-hf\[s3\]'"):
        require("no_such_package_fusionrs", extra="s3", what="x")
    assert require("json", extra=None, what="x").dumps({}) == "{}"
    assert require("json", extra=None, what="x", load=False) is None
    assert isinstance(Location("local", "/x", "/x", "file"), Location)


def test_url_credentials_rule_and_scrubbing_edge_cases():
    """Azure's container@account is a URL of its own; an AWS secret may hold '/'; a self-containing or very
    deep option is never followed forever; an empty nested dict is no secret."""
    from fusionrs_hf.secrets import scrub
    from fusionrs_hf.storage import UnknownLocationError, _url_credentials, locate

    assert not _url_credentials("container@account.dfs.core.windows.net/data")
    assert not _url_credentials("bucket/a:b@c/x") and not _url_credentials("bucket/x")
    assert _url_credentials("AKIAEXAMPLE:wJal/K7MD/bPxR@bucket/x")
    with pytest.raises(UnknownLocationError, match="takes no credentials"):
        locate("s3://AKIAEXAMPLE:wJal/K7MD/bPxR@bucket/x")
    assert scrub("s3://AKIAEXAMPLE:wJal/K7MD/bPxR@bucket/x") == "s3://***@bucket/x"
    assert scrub("https://host/path:x@y") == "https://host/path:x@y"
    assert scrub("Authorization: Basic dXNlcjpwYXNz.") == "Authorization: Basic ***"
    assert scrub("auth=Basic%20dXNlcjpwYXNzd29yZA%3D%3D&x=1").startswith("auth=Basic%20***")
    loop: list = []
    loop.append(loop)
    assert public_options({"a": loop, "client_kwargs": {"a": loop, "region_name": "eu"}, "timeout": 1}) == {
        "client_kwargs": {"region_name": "eu"}, "timeout": 1}
    from fusionrs_hf.secrets import register_options

    register_options({"a": loop})  # returns; nothing to register


def test_http_credentials_leave_the_url_for_a_header():
    """Every URL made from a location is written down by someone (datasets' download records for its Arrow
    cache, the card, logs): user:password in an http(s) URL becomes an Authorization header in the options."""
    from fusionrs_hf.secrets import scrub
    from fusionrs_hf.storage import UnknownLocationError

    loc = locate("http://alice:s3cret%2FPW@127.0.0.1:8765/repo")
    assert loc.url == "http://127.0.0.1:8765/repo" and "s3cret" not in loc.label
    auth = loc.storage_options["headers"]["Authorization"]
    assert base64.b64decode(auth.split()[1]).decode() == "alice:s3cret/PW"
    assert auth.split()[1] not in scrub(f"sent {auth}")
    assert all("s3cret" not in f for v in loc.shard_files("iraware", files=["data/rs5m/train/iraware-main-00000.parquet"]).values() for f in v)
    mine = locate("https://bob:pw@host/x", storage_options={"headers": {"Authorization": "Bearer T", "X-A": "1"}})
    assert mine.url == "https://host/x" and mine.storage_options["headers"] == {"Authorization": "Bearer T", "X-A": "1"}
    # a query or fragment is refused (a repo root is a folder; the URL is written into cards and caches), so an
    # '@' after '?' or '#' never sends a header anywhere; a password holding a raw '?' is masked in the error
    for url in ("http://host?next=a@evil.example/x", "http://host#a@evil.example",
                "https://example.com/repo?token=SECRETTOKEN123", "https://h/r#access_token=SECRETfrag123",
                "https://h/r?private_token=SECRETq456", "https://alice:Sup3r?Secret@127.0.0.1:9/repo"):
        for how in (locate, describe):
            with pytest.raises(UnknownLocationError, match=r"takes no query string or fragment") as got:
                how(url)
            # the refusal shows the URL up to its query only, and never a user:password
            assert not any(w in str(got.value) for w in ("SECRET", "Sup3r", "next=", "#a@")), str(got.value)
    # where '?', '#' and '@' are plain path characters, nothing is refused
    for url in ("hdfs://namenode:8020/data/fusionrs@rc4", "sftp://host:2222/srv/fusionrs@v2", "s3://bucket/data#1",
                "gs://bucket/run?1", "abfs://container@account.dfs.core.windows.net/fusionrs"):
        assert describe(url).url == url
    for url in ("ftp://alice:PW_ftp_9876@host/repo", "sftp://u:PW_sftp_9876@h/r", "s3://AK:SECRET99@bucket/x",
                "hdfs://u:pw_hdfs_9876@nn:8020/x"):
        for how in (locate, describe):  # a card written from Python as well as a read
            with pytest.raises(UnknownLocationError, match=r"takes no credentials in the URL") as got:
                how(url)
            assert "9876" not in str(got.value) and "SECRET99" not in str(got.value)
    raw = locate("http://alice:p@ss-word-12@[::1]:81/r")  # a raw '@' in the password, an IPv6 host
    assert raw.url == "http://[::1]:81/r"
    assert base64.b64decode(raw.storage_options["headers"]["Authorization"].split()[1]) == b"alice:p@ss-word-12"
    assert "ss-word-12" not in scrub("http://alice:p@ss-word-12@[::1]:81/r and p@ss-word-12")
    card = describe("https://carol:hunter2hunter2@mirror.example/fusionrs")  # what a card is written from
    snippet = card.load_snippet(files=["data/rs5m/train/iraware-main-00000.parquet"])
    assert "hunter2" not in snippet and "https://mirror.example/fusionrs/data" in snippet
    assert "hunter2" not in json.dumps(card.to_card())


def test_load_call_names_only_the_asked_split_and_a_config_without_shards_in_one_line(sample_repo, tmp_path):
    """datasets prepares every split it is given (a non-streaming load of train read test too), and a config with
    no shards at all would be its raw "Empty 'data_files'"."""
    import shutil

    from fusionrs_hf.errors import UnknownConfigError

    _, kw = locate(sample_repo).load_call("rsicd", "train")
    assert set(kw["data_files"]) == {"train"} and all("/train/" in f for f in kw["data_files"]["train"])
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    shutil.rmtree(repo / "data" / "rsicd")
    with pytest.raises(UnknownConfigError, match=r"config 'rsicd' has no shards in"):
        locate(repo).load_call("rsicd")


def test_header_values_are_secrets_never_written_and_never_in_a_repr(tmp_path):
    """A server may take any header as its credential (``X-JFrog-Art-Api`` names none): it was written into the
    card by ``public_options`` and shown by ``repr(Location)``. Header values are now secrets (but a few headers
    known to carry none), ``headers`` is never written down, and a Location's repr leaves its options out."""
    import subprocess

    from fusionrs_hf.secrets import register_options, scrub

    key = "AKCp8jQ8ZZheaderSECRET42"
    register_options({"headers": {"X-JFrog-Art-Api": key, "Accept": "application/x-parquet"}})
    assert key not in scrub(f"GET failed, headers {{'X-JFrog-Art-Api': '{key}'}}")
    assert scrub("Accept: application/x-parquet") == "Accept: application/x-parquet"
    register_options({"headers": {"Referer": "https://hub.example.org", "X-Client": "fusionrs-hf"}})
    assert scrub("cannot reach https://hub.example.org as fusionrs-hf") == (
        "cannot reach https://hub.example.org as fusionrs-hf")  # headers that name no credential stay readable
    loc = locate("https://artifacts.example/fusionrs", storage_options={"headers": {"X-Other": "ZZotherSECRET77"}})
    assert "ZZotherSECRET77" not in repr(loc) and "ZZotherSECRET77" not in scrub("echo ZZotherSECRET77")
    assert public_options(loc.storage_options) == {}

    # a spawn-started worker unpickles the Location in a new process: its secrets are registered there too
    code = ("import pickle, sys; from fusionrs_hf.secrets import scrub; loc = pickle.loads(sys.stdin.buffer.read()); "
            "print(scrub('worker saw ZZotherSECRET77'))")
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(loc), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    assert out.stdout.decode().strip() == "worker saw ***"

    # a mistyped option (KEY:VALUE) is not echoed: it is most often the credential itself
    with pytest.raises(ValueError) as e:
        parse_storage_options(["endpoint_url=http://h:9000", "secret:wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLE"])
    assert "wJalr" not in str(e.value) and "number 2" in str(e.value)
