"""fusionrs_hf.torch over a real HTTP server: read-ahead, footer planning, retries (issue 14).

The sample repo is served by :class:`fusionrs_hf.testing.hub_server.HubServer` on 127.0.0.1 with a per-request
latency, and read with the real ``huggingface_hub`` client (``hf://datasets/...``, ``storage_options`` naming
the endpoint). The same properties as the local loader must hold: every row exactly once per epoch, equal
batch counts per DDP rank, mid-epoch resume without duplicates or gaps; plus the read-ahead bound and retries.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import pytest

from fusionrs_hf.decode import DecodeError
from fusionrs_hf.testing.hub_server import HubServer
from fusionrs_hf.torch import FusionRSIterable, make_dataloader

REPO = "fusionrs/remote-stream"


@pytest.fixture(scope="module")
def hub(sample_repo):
    from huggingface_hub import constants

    files = {str(p.relative_to(sample_repo)): p.read_bytes() for p in sample_repo.rglob("*") if p.is_file()}
    with pytest.MonkeyPatch.context() as mp, HubServer(latency_s=0.02) as server:
        mp.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline; this module talks to the server
        mp.setenv("HF_HUB_DISABLE_XET", "1")
        server.create_repo(REPO, files=files)
        yield server


def _where(kind: str, hub, sample_repo) -> tuple[str, dict]:
    if kind == "local":
        return str(sample_repo), {}
    return f"hf://datasets/{REPO}", {"storage_options": {"endpoint": hub.url}}


def _ids(loader) -> list[str]:
    return [s for b in loader for s in b["sample_id"]]


def _all_ids(sample_repo) -> list[str]:
    return sorted(_ids(make_dataloader(str(sample_repo), batch_size=8)))


def test_remote_epoch_exactly_once_with_read_ahead(hub, sample_repo):
    want = _all_ids(sample_repo)
    url, kw = _where("remote", hub, sample_repo)
    hub.reset_log()
    loader = make_dataloader(url, batch_size=4, num_workers=2, shuffle=True, seed=3, **kw)
    planned = len(hub.requests)
    for epoch in range(2):
        loader.set_epoch(epoch)
        got = _ids(loader)
        assert sorted(got) == want and len(got) == len(set(got))
        if epoch == 0:  # the workers ask the Hub for nothing the plan knows: no repo info, no listing
            assert [r.path for r in hub.requests[planned:] if "/resolve/" not in r.path] == []
    stats = loader.dataset.read_stats()
    # one range request per row group fetched (its column chunks merged), nothing read outside them, no
    # retries; a row group the neighbouring worker had already fetched when this one wanted it is taken
    # from it (``shared``, fusionrs_hf.torch.share) and costs no request: whether it was ready is timing
    assert stats["row_groups"] > 0 and stats["requests"] == stats["row_groups"] - stats["shared"]
    assert stats["retries"] == 0 and stats["fallbacks"] == 0
    assert 1 <= stats["max_in_flight"] <= 2  # the default read_ahead
    ranged = [r for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert ranged and all(r.range and r.status == 206 for r in ranged)  # byte ranges only, never whole files


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_ddp_equal_batch_counts(kind, hub, sample_repo):
    url, kw = _where(kind, hub, sample_repo)
    want = _all_ids(sample_repo)
    per_rank = []
    for rank in range(2):
        loader = make_dataloader(url, batch_size=2, num_workers=2, shuffle=True, seed=1, rank=rank, world_size=2, **kw)
        batches = list(loader)
        assert len(batches) == len(loader)
        per_rank.append(([s for b in batches for s in b["sample_id"]], len(batches)))
    assert per_rank[0][1] == per_rank[1][1]
    a, b = per_rank[0][0], per_rank[1][0]
    assert len(a) == len(b) == len(want) // 2 and not set(a) & set(b) and set(a) | set(b) <= set(want)


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_resume_mid_epoch(kind, hub, sample_repo):
    pytest.importorskip("torchdata")
    url, kw = _where(kind, hub, sample_repo)
    want = _all_ids(sample_repo)
    first = make_dataloader(url, batch_size=2, num_workers=2, shuffle=True, seed=5, stateful=True, **kw)
    it = iter(first)
    seen = [s for _ in range(3) for s in next(it)["sample_id"]]
    state = first.state_dict()
    del it
    again = make_dataloader(url, batch_size=2, num_workers=2, shuffle=True, seed=5, stateful=True, **kw)
    again.load_state_dict(state)
    rest = _ids(again)
    assert sorted(seen + rest) == want and len(seen + rest) == len(set(seen + rest))


@pytest.mark.parametrize("read_ahead", [1, 3])
def test_read_ahead_is_bounded(read_ahead, hub, sample_repo):
    url, kw = _where("remote", hub, sample_repo)
    # small requests: every row group's column bytes are cut into several ranged reads; batches of one row,
    # so every row group holds a batch and the window is read_ahead row groups exactly
    ds = FusionRSIterable(url, batch_size=1, read_ahead=read_ahead, request_size=4096, **kw)
    got = [s for b in ds for s in b["sample_id"]]
    assert sorted(got) == _all_ids(sample_repo)
    stats = ds.read_stats()
    assert stats["row_groups"] >= 4 and stats["requests"] > stats["row_groups"] and stats["fallbacks"] == 0
    assert stats["max_in_flight"] == min(read_ahead, stats["row_groups"] - 1)


def test_row_groups_smaller_than_a_batch_are_fetched_a_batch_ahead(hub, tmp_path):
    """Shards of 1-2 rows, batches of 12, read_ahead=1: one row group ahead would cost a round trip per row or
    two, so the window reaches until a batch's rows are ahead (6 to 12 row groups), never further."""
    from fusionrs_hf.demo import make_sample_repo
    from fusionrs_hf.torch.reader import MAX_SMALL_AHEAD, ReadItem, RowGroupPrefetcher

    root = make_sample_repo(tmp_path / "tiny", counts={"train": 8}, size=32, max_rows=2)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    hub.create_repo("fusionrs/remote-tiny", files=files)
    want = sorted(_ids(make_dataloader(str(root), config="default", batch_size=12)))
    ds = FusionRSIterable("hf://datasets/fusionrs/remote-tiny", "default", batch_size=12, read_ahead=1,
                          storage_options={"endpoint": hub.url})
    assert max(u.num_rows for u in ds.units) == 2 and len(ds.units) >= 14
    got = [s for b in ds for s in b["sample_id"]]
    assert sorted(got) == want and len(got) == len(set(got))
    stats = ds.read_stats()
    assert 6 <= stats["max_in_flight"] <= 12 and stats["fallbacks"] == 0

    # the rule itself: rows ahead reach min_rows, capped at MAX_SMALL_AHEAD row groups; large ones: read_ahead
    items = [ReadItem("p", 1, None, 0, 2)] * 100
    pre = RowGroupPrefetcher(None, items, [], read_ahead=1, min_rows=12)
    assert pre._window_end(0) == 6 and pre._window_end(97) == 99
    assert RowGroupPrefetcher(None, items, [], read_ahead=1, min_rows=1000)._window_end(0) == MAX_SMALL_AHEAD
    big = [ReadItem("p", 1, None, 0, 50)] * 10
    assert RowGroupPrefetcher(None, big, [], read_ahead=2, min_rows=12)._window_end(3) == 5
    assert RowGroupPrefetcher(None, items, [], read_ahead=0, min_rows=12)._window_end(0) == 0  # 0: no read-ahead


def test_no_read_ahead_reads_through_the_filesystem(hub, sample_repo):
    url, kw = _where("remote", hub, sample_repo)
    ds = FusionRSIterable(url, batch_size=4, read_ahead=0, **kw)
    assert sorted(s for b in ds for s in b["sample_id"]) == _all_ids(sample_repo)
    assert ds.read_stats()["row_groups"] == 0
    with pytest.raises(ValueError, match="read_ahead"):
        FusionRSIterable(url, read_ahead=-1, **kw)


def test_planning_reads_each_footer_once_by_range(hub, sample_repo):
    url, kw = _where("remote", hub, sample_repo)
    hub.reset_log()
    ds = FusionRSIterable(url, batch_size=4, **kw)
    shards = {u.shard for u in ds.units}
    reads = [r for r in hub.requests if "/resolve/" in r.path and r.method == "GET"]
    assert len(reads) == len(shards) and all(r.range for r in reads)  # one tail read per shard, nothing else


def test_failed_range_requests_are_retried(hub, sample_repo):
    url, kw = _where("remote", hub, sample_repo)
    want = _all_ids(sample_repo)
    ds = FusionRSIterable(url, batch_size=4, shuffle=True, seed=2, **kw)
    faults = [hub.inject(503, method="GET", path=r"/resolve/.*\.parquet", ranged=True, times=1),
              hub.inject("drop", method="GET", path=r"/resolve/.*\.parquet", ranged=True, times=2, skip=1),
              hub.inject("truncate", method="GET", path=r"/resolve/.*\.parquet", ranged=True, times=2, skip=3)]
    try:
        got = [s for b in ds for s in b["sample_id"]]
    finally:
        hub.clear_faults()
    assert [f.hits for f in faults] == [1, 2, 2]
    assert sorted(got) == want and len(got) == len(set(got)) and ds.skipped == 0


def test_permanent_failure_names_the_shard(hub, sample_repo):
    url, kw = _where("remote", hub, sample_repo)
    ds = FusionRSIterable(url, batch_size=4, **kw)
    skipping = FusionRSIterable(url, batch_size=4, on_error="skip", **kw)
    victim = ds.units[0].shard  # planned; from now on every range request for it is refused
    hub.inject(403, method="GET", path=re.escape(victim), ranged=True, times=None)
    try:
        with pytest.raises(DecodeError, match=re.escape(f"shard={victim}")):
            list(ds)
        assert ds.read_stats()["retries"] == 0  # a 403 is final: reported at once, not asked again
        with pytest.warns(RuntimeWarning, match="skipped"):
            got = [s for b in skipping for s in b["sample_id"]]
    finally:
        hub.clear_faults()
    lost = sum(u.num_rows for u in ds.units if u.shard == victim)
    assert skipping.skipped == lost and len(got) == len(set(got)) == len(_all_ids(sample_repo)) - lost


def test_read_ahead_bound_with_large_row_groups_and_workers(hub, tmp_path):
    """read_ahead=1, row groups of ~24 rows of 128 px pairs over a capped link, 2 workers: no worker ever has
    more than one row group fetched ahead (the counter lives in shared memory, so the workers' peaks are seen)."""
    from fusionrs_hf.demo import make_sample_repo

    root = make_sample_repo(tmp_path / "big", counts={"train": 30}, size=128, max_rows=24)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    hub.create_repo("fusionrs/remote-big", files=files)
    want = sorted(_ids(make_dataloader(str(root), config="default", batch_size=8)))
    hub.bandwidth_bps = 20e6
    try:
        loader = make_dataloader("hf://datasets/fusionrs/remote-big", config="default", batch_size=8, num_workers=2,
                                 read_ahead=1, request_size=64 * 1024, storage_options={"endpoint": hub.url})
        got = _ids(loader)
    finally:
        hub.bandwidth_bps = None
    assert sorted(got) == want and len(got) == len(set(got))
    stats = loader.dataset.read_stats()
    assert stats["max_in_flight"] == 1 and stats["fallbacks"] == 0
    assert stats["requests"] > stats["row_groups"] >= 4  # each row group cut into 64 KiB requests


def test_prefetched_pieces_serve_views_inside_and_joins_across():
    """A row group's pieces stay as fetched: a read inside one is a view (no copy), one across adjacent pieces
    is joined, and one that reaches a gap or outside is not served (pyarrow then asks the store)."""
    from fusionrs_hf.torch.reader import _Fetched

    data = bytearray(b"abcde")
    f = _Fetched([(15, b"fgh"), (10, data), (30, b"xyz")])
    inside = f.get(11, 3)
    assert bytes(inside) == b"bcd" and isinstance(inside, memoryview) and inside.obj is data
    assert bytes(f.get(12, 5)) == b"cdefg" and bytes(f.get(10, 8)) == b"abcdefgh" and bytes(f.get(31, 2)) == b"yz"
    assert f.get(10, 9) is None and f.get(16, 5) is None and f.get(5, 2) is None and f.get(19, 1) is None


def test_fingerprints_come_from_the_listing_without_a_request(hub, sample_repo):
    """After planning's listing, every shard's fingerprint (size, ETag, blob id, LFS digest) is read from the
    listing cache itself: the same values info() gives, and no request to the server."""
    from fusionrs_hf.torch.plan import _fingerprint, shard_fingerprints, split_files

    url, kw = _where("remote", hub, sample_repo)
    ds = FusionRSIterable(url, batch_size=4, **kw)
    files = split_files(ds.fs, ds.root, ds.config, ds.split)
    before = len(hub.requests)
    got = shard_fingerprints(ds.fs, ds.root, files)
    assert len(hub.requests) == before and len(got) == len(files) > 1
    assert got == {rel: _fingerprint(ds.fs.info(f"{ds.root}/{rel}")) for rel in files}
    assert all(fp[0] and (fp[4] or fp[5]) for fp in got.values())  # a size and a git/LFS id for each


def test_what_is_final_is_not_asked_again():
    """403/404-like failures are final on every client (huggingface_hub's response.status_code, aiohttp's
    status, s3fs's PermissionError/FileNotFoundError); 5xx, 408, 429 and dropped connections are retried."""
    from fusionrs_hf.torch.reader import _permanent, fetch_range

    class Resp:
        def __init__(self, code):
            self.status_code = code

    class HubErr(Exception):
        def __init__(self, code):
            self.response = Resp(code)

    class AioErr(Exception):
        def __init__(self, code):
            self.status = code

    assert all(_permanent(e) for e in (HubErr(403), HubErr(404), AioErr(403), PermissionError(), FileNotFoundError()))
    assert not any(_permanent(e) for e in (HubErr(503), AioErr(500), AioErr(429), HubErr(408), ConnectionError()))
    calls = []

    def raw(a, b):
        calls.append(a)
        raise AioErr(403)

    with pytest.raises(AioErr):
        fetch_range(raw, 0, 10)
    assert calls == [0]


def test_a_revision_is_read_as_it_was(hub, sample_repo):
    """A shard deleted in a later commit: the loader at the first commit (revision= or @sha in the URL, two
    workers) reads every row of that commit, through /resolve/ URLs of that commit; main reads the rest."""
    import pyarrow.parquet as pq

    files = {str(p.relative_to(sample_repo)): p.read_bytes() for p in sample_repo.rglob("*") if p.is_file()}
    repo = "fusionrs/remote-rev"
    hub.create_repo(repo, files=files)
    first = hub._repos["dataset", repo].branches["main"]
    victim = sorted(p for p in files if p.startswith("data/") and "/train/" in p and p.endswith(".parquet"))[0]
    with hub._lock:
        hub._apply(hub._repos["dataset", repo], "main", "drop a shard", "", None, [("deletedFile", victim)])
    assert hub._repos["dataset", repo].branches["main"] != first
    want = _default_ids(sample_repo)
    opts = {"config": "default", "storage_options": {"endpoint": hub.url}}
    hub.reset_log()
    for loader in (make_dataloader(f"hf://datasets/{repo}", revision=first, batch_size=4, num_workers=2, **opts),
                   make_dataloader(f"hf://datasets/{repo}@{first}", batch_size=4, num_workers=2, **opts)):
        got = _ids(loader)
        assert sorted(got) == want and len(got) == len(set(got))
    ranged = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert ranged and all(f"/resolve/{first}/" in p for p in ranged)
    gone = set(pq.read_table(sample_repo / victim, columns=["sample_id"]).column(0).to_pylist())
    now = _ids(make_dataloader(f"hf://datasets/{repo}", batch_size=4, num_workers=2, **opts))
    assert gone <= set(want) and sorted(now) == sorted(set(want) - gone)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_row_group_two_workers_share_is_fetched_once(hub, tmp_path, shuffle):
    """Two workers whose slices meet inside a row group, in a real DataLoader: every row still comes exactly
    once over two epochs, a shared row group is never served twice, and nothing is left behind."""
    from fusionrs_hf.demo import make_sample_repo

    root = make_sample_repo(tmp_path / "share", counts={"train": 20}, size=64, max_rows=50)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    repo = f"fusionrs/remote-share-{shuffle}"
    hub.create_repo(repo, files=files)
    want = sorted(_ids(make_dataloader(str(root), config="default", batch_size=8)))
    loader = make_dataloader(f"hf://datasets/{repo}", config="default", batch_size=8, num_workers=2,
                             shuffle=shuffle, seed=4, storage_options={"endpoint": hub.url})
    ds = loader.dataset
    assert ds._share_dir and len(ds.units) >= 2
    for epoch in range(2):
        loader.set_epoch(epoch)
        got = _ids(loader)
        assert sorted(got) == want and len(got) == len(set(got))
    stats = ds.read_stats()
    # per epoch every unit is read once, and a unit the two slices split is read by both workers; whether the
    # second reader finds it left depends on timing (nobody waits), so here only: never more than the splits
    split = stats["row_groups"] - 2 * len(ds.units)
    assert 0 <= stats["shared"] <= split <= 2
    import os

    assert os.listdir(ds._share_dir) == []  # what was left was taken (or, if fetched twice, not left)
    import gc

    folder = ds._share_dir
    del ds, loader
    gc.collect()
    assert not os.path.exists(folder)  # the dataset's private folder goes with it


def test_share_files_are_whole_or_absent_and_never_stale(tmp_path, monkeypatch):
    """The hand-over itself: a take finds what was published, once; a take that comes first marks it, so the
    late publish leaves nothing; a torn file or one for another row group is not served; another epoch's
    leftovers go at the next publish; a folder that is not private, or the switch, turns it off."""
    from fusionrs_hf.torch import share

    pieces, ident = [(4, b"abcd"), (100, b"xyz")], b"data/x.parquet|0|f00d"
    a = share.share_path(str(tmp_path), 0, 0, 0, 1)
    assert share.publish(a, ident, pieces) and [(s, bytes(d)) for s, d in share.take(a, ident)] == pieces
    assert not os.listdir(tmp_path)
    assert share.take(a, ident) is None  # taken once; this second look leaves a marker ...
    assert not share.publish(a, ident, pieces) and not os.listdir(tmp_path)  # ... so nothing is left for nobody
    b = share.share_path(str(tmp_path), 0, 0, 0, 2)
    assert share.publish(b, ident, pieces) and share.take(b, b"data/y.parquet|0|f00d") is None  # not its bytes
    assert share.publish(b, ident, pieces)
    with open(b, "r+b") as f:
        f.truncate(30)
    assert share.take(b, ident) is None and not os.listdir(tmp_path)
    stale = share.share_path(str(tmp_path), 0, 0, 0, 3)
    assert share.publish(stale, ident, pieces)
    fresh = share.share_path(str(tmp_path), 1, 0, 0, 3)
    assert share.publish(fresh, ident, pieces) and os.listdir(tmp_path) == [os.path.basename(fresh)]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    assert share.usable(str(private))
    private.chmod(0o755)
    assert not share.usable(str(private)) and not share.usable(str(tmp_path / "gone"))
    private.chmod(0o700)
    monkeypatch.setenv(share.ENV, "0")
    assert not share.usable(str(private)) and share.make_share_dir(object()) is None


def test_the_worker_ending_in_a_row_group_takes_it_from_the_one_starting_there(hub, tmp_path, monkeypatch):
    """The same two slices read one after the other (worker 1, then worker 0, as if in their processes): the
    row group they split is fetched by worker 1 only, and worker 0 takes its bytes: no request for it."""
    from fusionrs_hf.demo import make_sample_repo
    from fusionrs_hf.torch.plan import _slot_pieces

    root = make_sample_repo(tmp_path / "share2", counts={"train": 20}, size=64, max_rows=50)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    hub.create_repo("fusionrs/remote-share-seq", files=files)
    want = sorted(_ids(make_dataloader(str(root), config="default", batch_size=8)))
    ds = FusionRSIterable("hf://datasets/fusionrs/remote-share-seq", "default", batch_size=8,
                          storage_options={"endpoint": hub.url})
    n = sum(u.num_rows for u in ds.units)
    boundary = _slot_pieces(ds.units, np.arange(len(ds.units)), ds.worker_rows(2)[0], n)[0]  # worker 1's start
    assert boundary[1] > 0  # worker 1's slice starts inside a unit: the two slices split it
    split_shard = ds.units[boundary[0]].shard
    got, requests = [], {}
    for worker in (1, 0):
        monkeypatch.setattr(ds, "_context", lambda w=worker: (w, 2, True))
        before = len(hub.requests)
        got += [s for b in ds for s in b["sample_id"]]
        requests[worker] = [r.path for r in hub.requests[before:]]
    assert sorted(got) == want and len(got) == len(set(got))
    assert any(p.endswith(split_shard) for p in requests[1])  # fetched by the worker that starts in it
    assert not any(p.endswith(split_shard) for p in requests[0])  # taken, not fetched, by the other
    assert ds.read_stats()["shared"] == 1 and os.listdir(ds._share_dir) == []


def test_three_slices_in_one_row_group_hand_it_down_the_line(hub, tmp_path, monkeypatch):
    """Three workers whose slices all lie in one big row group (run last to first, as if in their processes):
    it is fetched once, by the last worker; the middle one takes it and leaves it for the first. The rank's
    edges never publish or take (their neighbours are other processes)."""
    import pyarrow.parquet as pq

    from fusionrs_hf.demo import make_sample_repo

    root = make_sample_repo(tmp_path / "one", counts={"train": 30}, size=32, max_rows=100)
    for p in root.glob("data/*/train/*.parquet"):  # one row group per shard: read them whole
        pq.write_table(pq.read_table(p), p, row_group_size=1000)
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    hub.create_repo("fusionrs/remote-one", files=files)
    ds = FusionRSIterable("hf://datasets/fusionrs/remote-one", "nwpu", batch_size=4,
                          storage_options={"endpoint": hub.url})
    big = max(ds.units, key=lambda u: u.num_rows)
    ds.units = [big]  # this test's plan: the one big row group
    want = sorted(pq.read_table(root / big.shard, columns=["sample_id"]).column(0).to_pylist())
    assert len(want) >= 9
    got, asked = [], {}
    for worker in (2, 1, 0):
        monkeypatch.setattr(ds, "_context", lambda w=worker: (w, 3, True))
        before = len(hub.requests)
        got += [s for b in ds for s in b["sample_id"]]
        asked[worker] = [r.path for r in hub.requests[before:] if r.path.endswith(big.shard)]
    assert sorted(got) == want and len(got) == len(set(got))
    assert asked[2] and not asked[1] and not asked[0]
    assert ds.read_stats()["shared"] == 2 and os.listdir(ds._share_dir) == []


def _pin_repo(hub, sample_repo, name: str) -> tuple[str, dict, str, set]:
    """A fresh Hub repo of the sample repo: (url, loader kwargs, the train shard a later push deletes, its ids)."""
    import pyarrow.parquet as pq

    files = {str(p.relative_to(sample_repo)): p.read_bytes() for p in sample_repo.rglob("*") if p.is_file()}
    hub.create_repo(name, files=files)
    victim = sorted(p for p in files if p.startswith("data/") and "/train/" in p and p.endswith(".parquet"))[-1]
    gone = set(pq.read_table(sample_repo / victim, columns=["sample_id"]).column(0).to_pylist())
    return f"hf://datasets/{name}", {"config": "default", "storage_options": {"endpoint": hub.url}}, victim, gone


def _default_ids(sample_repo) -> list[str]:
    """Every sample id of config ``default``, read locally: what a remote epoch must deliver."""
    return sorted(_ids(make_dataloader(str(sample_repo), config="default", batch_size=8)))


def _push_delete(hub, name: str, path: str) -> str:
    with hub._lock:
        hub._apply(hub._repos["dataset", name], "main", "drop a shard", "", None, [("deletedFile", path)])
    return hub._repos["dataset", name].branches["main"]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_push_mid_epoch_does_not_mix_two_commits(workers, hub, sample_repo):
    """The plan pins the commit main named: a push after the first batch (the last shard deleted) leaves
    the epoch reading every row of the planned commit; the next epoch re-plans at the new commit."""
    name = f"fusionrs/remote-pin-{workers}"
    url, kw, victim, gone = _pin_repo(hub, sample_repo, name)
    want = _default_ids(sample_repo)
    loader = make_dataloader(url, batch_size=4, num_workers=workers, **kw)
    first = loader.dataset.commit
    assert first == hub._repos["dataset", name].branches["main"]
    it = iter(loader)
    got = list(next(it)["sample_id"])
    newer = _push_delete(hub, name, victim)
    got += [s for b in it for s in b["sample_id"]]
    assert sorted(got) == want  # all of the planned commit, the deleted shard included
    with pytest.warns(RuntimeWarning, match=r"changed since they were planned \(removed: "):
        loader.set_epoch(1)
    assert loader.dataset.commit == newer
    assert sorted(_ids(loader)) == sorted(set(want) - gone)


def test_persistent_workers_re_plan_at_the_new_commit(hub, sample_repo):
    name = "fusionrs/remote-pin-persistent"
    url, kw, victim, gone = _pin_repo(hub, sample_repo, name)
    want = _default_ids(sample_repo)
    loader = make_dataloader(url, batch_size=4, num_workers=2, persistent_workers=True, **kw)
    assert sorted(_ids(loader)) == want
    _push_delete(hub, name, victim)
    with pytest.warns(RuntimeWarning, match="removed: "):
        loader.set_epoch(1)
    got = _ids(loader)  # the same worker processes: they read the commit the training process re-planned at
    assert sorted(got) == sorted(set(want) - gone) and len(got) == loader.dataset.num_rows


def test_an_unchanged_repo_costs_one_question_per_epoch(hub, sample_repo):
    """Between epochs, one repo-info request tells that main still names the planned commit: no listing."""
    url, kw, _, _ = _pin_repo(hub, sample_repo, "fusionrs/remote-pin-quiet")
    loader = make_dataloader(url, batch_size=4, num_workers=0, **kw)
    _ids(loader)
    before = len(hub.requests)
    loader.set_epoch(1)
    asked = [r.path for r in hub.requests[before:]]
    assert len(asked) == 1 and "/api/datasets/fusionrs/remote-pin-quiet" in asked[0]


def test_resume_refuses_a_state_of_another_commit(hub, sample_repo):
    """A state saved at commit A, the branch moved on to B: resuming there would skip rows of other data, so
    it is refused naming A; with revision=A the epoch finishes exactly once."""
    pytest.importorskip("torchdata")
    name = "fusionrs/remote-pin-resume"
    url, kw, victim, _ = _pin_repo(hub, sample_repo, name)
    want = _default_ids(sample_repo)
    first = make_dataloader(url, batch_size=2, num_workers=2, shuffle=True, seed=5, stateful=True, **kw)
    sha = first.dataset.commit
    it = iter(first)
    seen = [s for _ in range(3) for s in next(it)["sample_id"]]
    state = first.state_dict()
    del it
    _push_delete(hub, name, victim)
    moved = make_dataloader(url, batch_size=2, num_workers=2, shuffle=True, seed=5, stateful=True, **kw)
    with pytest.raises(ValueError, match=f"revision='{sha}'"):
        moved.load_state_dict(state)
    again = make_dataloader(url, revision=sha, batch_size=2, num_workers=2, shuffle=True, seed=5, stateful=True, **kw)
    again.load_state_dict(state)
    rest = _ids(again)
    assert sorted(seen + rest) == want and len(seen + rest) == len(set(seen + rest))


def _push_readme(hub, name: str) -> str:
    with hub._lock:
        hub._apply(hub._repos["dataset", name], "main", "edit the card", "", None,
                   [("file", "README.md", b"---\nconfigs: []\n---\n# edited\n")])
    return hub._repos["dataset", name].branches["main"]


def test_a_failed_re_plan_keeps_the_old_commit_and_is_asked_again(hub, sample_repo, monkeypatch):
    """The listing at the new commit fails once: set_epoch raises, the dataset still reads its planned commit
    (nothing half-switched), and the next set_epoch re-plans at the new commit."""
    import fusionrs_hf.torch.epochs as epochs

    name = "fusionrs/remote-pin-retry"
    url, kw, victim, gone = _pin_repo(hub, sample_repo, name)
    want = _default_ids(sample_repo)
    loader = make_dataloader(url, batch_size=4, num_workers=2, **kw)
    first = loader.dataset.commit
    assert sorted(_ids(loader)) == want
    newer = _push_delete(hub, name, victim)
    real = epochs.split_files
    calls = []

    def fail_once(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the listing failed")
        return real(*a, **k)

    monkeypatch.setattr(epochs, "split_files", fail_once)
    with pytest.raises(OSError, match="the listing failed"):
        loader.set_epoch(1)
    assert loader.dataset.commit == first and f"@{first}" in loader.dataset.root
    with pytest.warns(RuntimeWarning, match="removed: "):
        loader.set_epoch(1)
    assert loader.dataset.commit == newer
    assert sorted(_ids(loader)) == sorted(set(want) - gone)


@pytest.mark.parametrize("persistent", [False, True])
def test_a_push_that_leaves_the_split_alone_re_reads_no_footer(persistent, hub, sample_repo):
    """A README-only commit: the next epoch reads the same plan at the new commit, without a warning, a footer
    read or a re-plan in the workers; a state saved before it still resumes (the same shards)."""
    name = f"fusionrs/remote-pin-readme-{int(persistent)}"
    url, kw, _, _ = _pin_repo(hub, sample_repo, name)
    want = _default_ids(sample_repo)
    loader = make_dataloader(url, batch_size=4, num_workers=2, persistent_workers=persistent, **kw)
    state = loader.dataset.state_dict()
    assert sorted(_ids(loader)) == want
    newer = _push_readme(hub, name)
    before = len(hub.requests)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.set_epoch(1)
    assert loader.dataset.commit == newer
    assert not [r for r in hub.requests[before:] if r.range]  # no footer read again
    before = len(hub.requests)
    assert sorted(_ids(loader)) == want
    ranged = [r.path for r in hub.requests[before:] if r.range]
    assert ranged and all("/resolve/" in p for p in ranged)
    if not persistent:  # fresh workers read at the new commit; persistent ones keep the old (same bytes)
        assert all(f"/resolve/{newer}/" in p for p in ranged)
    assert not [r for r in hub.requests[before:] if "/tree/" in r.path]  # no worker re-listed
    again = FusionRSIterable(url, batch_size=4, **kw)
    again.load_state_dict(state)  # saved at the old commit: same shards, so it resumes


def test_a_hub_that_does_not_answer_between_epochs_reads_the_planned_commit_again(hub, sample_repo):
    name = "fusionrs/remote-pin-blip"
    url, kw, _, _ = _pin_repo(hub, sample_repo, name)
    want = _default_ids(sample_repo)
    loader = make_dataloader(url, batch_size=4, num_workers=0, **kw)
    first = loader.dataset.commit
    assert sorted(_ids(loader)) == want
    hub.inject(503, method="GET", path=rf"^/api/datasets/{name}(/revision/[^/]+)?$", times=None)
    try:
        with pytest.warns(RuntimeWarning, match=rf"could not ask whether .*{name}.* moved on.*reads commit {first}"):
            loader.set_epoch(1)
    finally:
        hub.clear_faults()
    assert loader.dataset.commit == first and sorted(_ids(loader)) == want


def test_a_revision_that_is_a_commit_is_not_asked_about_between_epochs(hub, sample_repo):
    name = "fusionrs/remote-pin-sha"
    url, kw, _, _ = _pin_repo(hub, sample_repo, name)
    sha = hub._repos["dataset", name].branches["main"]
    loader = make_dataloader(f"{url}@{sha}", batch_size=4, num_workers=0, **kw)
    assert loader.dataset.commit == sha
    _ids(loader)
    before = len(hub.requests)
    loader.set_epoch(1)
    assert len(hub.requests) == before


def _agree_worker(rank: int, store: str, endpoint: str, url: str, out: str) -> None:
    import json

    import torch.distributed as dist
    from huggingface_hub import constants

    from fusionrs_hf.torch import agree_on_commit

    constants.HF_HUB_OFFLINE = False
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's own connections: loopback only
    # a file store: no port to pick (a port picked free can be taken before the store listens on it)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        try:
            sha = agree_on_commit(url, storage_options={"endpoint": endpoint})
        except RuntimeError as e:
            sha = str(e)
        with open(f"{out}.{rank}", "w") as f:
            json.dump(sha, f)
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_on_the_commit_rank_0_saw(hub, sample_repo, tmp_path):
    """Two real gloo processes: only rank 0 asks the Hub, and both get its commit, so every rank's loader
    (revision=that commit) reads the same shards whatever is pushed meanwhile."""
    import json

    import torch.multiprocessing as mp

    name = "fusionrs/remote-pin-ddp"
    url, kw, _, _ = _pin_repo(hub, sample_repo, name)
    sha = hub._repos["dataset", name].branches["main"]
    before = hub.count("GET", rf"^/api/datasets/{name}")
    mp.spawn(_agree_worker, args=(str(tmp_path / "store1"), hub.url, url, str(tmp_path / "sha")), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"sha.{r}").read_text()) for r in range(2)]
    assert got == [sha, sha]
    assert hub.count("GET", rf"^/api/datasets/{name}") - before == 1  # rank 0 alone asked
    from fusionrs_hf.torch import agree_on_commit

    assert agree_on_commit(str(sample_repo)) is None  # not the Hub: nothing to agree on
    # rank 0 cannot ask (no such repo): every rank gets the error instead of waiting for an answer
    mp.spawn(_agree_worker, args=(str(tmp_path / "store2"), hub.url, "hf://datasets/fusionrs/no-such-repo",
                                  str(tmp_path / "bad")), nprocs=2, join=True)
    for r in range(2):
        assert "rank 0 could not ask the Hub" in json.loads((tmp_path / f"bad.{r}").read_text())


def test_ddp_ranks_keep_the_commit_they_started_at(hub, sample_repo):
    """world_size > 1: no rank asks between epochs, so a push (or one rank's failed question) cannot put the
    ranks on different shards; both ranks keep reading the planned commit, with equal batch counts."""
    name = "fusionrs/remote-pin-ddp-epochs"
    url, kw, victim, _ = _pin_repo(hub, sample_repo, name)
    loaders = [make_dataloader(url, batch_size=2, num_workers=0, rank=r, world_size=2, **kw) for r in range(2)]
    first = loaders[0].dataset.commit
    _push_delete(hub, name, victim)
    before = len(hub.requests)
    counts = []
    for loader in loaders:
        loader.set_epoch(1)
        assert loader.dataset.commit == first
        counts.append(len(list(loader)))
    assert counts[0] == counts[1] == len(loaders[0])
    assert not [r for r in hub.requests[before:] if "/resolve/" not in r.path]  # nothing asked, only bytes read


@pytest.mark.parametrize("status, kind", [(503, "HubUnreachableError"), (429, "HubUnreachableError"),
                                          (403, "PermissionError"), (401, "PermissionError")])
def test_hub_errors_name_no_credential(status, kind, hub, sample_repo):
    """The repo-info question answered with an error: one line naming repo, endpoint and status; neither the
    token nor a password in the endpoint URL appears (the server's own words are left out: they may echo it)."""
    from fusionrs_hf import storage

    name = f"fusionrs/remote-secret-{status}"
    url, _, _, _ = _pin_repo(hub, sample_repo, name)
    host = hub.url.split("://", 1)[1]
    opts = {"endpoint": f"http://alice:pw-s3cret-77@{host}", "token": "hf_tokSECRETtokSECRET1234"}
    hub.inject(status, method="GET", path=rf"^/api/datasets/{name}", times=None)
    try:
        with pytest.raises(Exception) as exc:
            storage.check_hub(name, options=opts, fresh=True)
        with pytest.raises(Exception) as exc2:
            make_dataloader(url, config="default", batch_size=4, storage_options=opts)
    finally:
        hub.clear_faults()
    for e in (exc.value, exc2.value):
        text = str(e)
        assert "pw-s3cret-77" not in text and "tokSECRET" not in text, text
        assert f"HTTP {status}" in text and name in text
    assert type(exc.value).__name__ == kind
