"""Reading a worker's row groups from remote storage without waiting on the network.

Over a network (``hf://``, a Hub id, ``s3://``, any fsspec URL; not local files, which stay memory-mapped)
every request costs a round trip. Four things hide it:

* **Footers in one request each, many at once** (:func:`read_footers`): planning reads the last
  ``FOOTER_TAIL`` bytes of every shard with one ranged read, 64 shards at a time, and parses the footer from
  those bytes (a footer larger than the tail is read again through a normal open). The footer bytes travel
  with the plan, so a worker opening a shard asks for nothing but column data.
* **Bounded read-ahead** (:class:`RowGroupPrefetcher`): while a worker decodes one row group, a small thread
  pool fetches the byte ranges of the needed column chunks of its next ``read_ahead`` row groups (adjacent
  chunks merged, cut into ``request_size`` pieces fetched in parallel) into memory; pyarrow then reads the
  row group from those bytes (:class:`PrefetchedFile`, which asks the filesystem for anything it was not
  given). At most ``read_ahead`` row groups are fetched or held ahead of the one being decoded, so memory
  stays flat: ``read_ahead + 1`` row groups' column bytes per worker. Row groups smaller than a batch are
  fetched until a batch's rows are ahead (at most :data:`MAX_SMALL_AHEAD` of them). Before pyarrow inflates
  a page, the row group's page headers are walked from those same bytes
  (:func:`~fusionrs_hf.limits.row_group_too_big`: a footer may lie about what its pages inflate to, the
  headers are what Arrow allocates), so the rule costs no request; ``read_ahead=0`` fetches the row group's
  spans the same way when it is read (one read a span through the filesystem's file, as pyarrow's own).
* **Nothing asked twice**: a Hub shard's ``/resolve/`` URL travels with the plan too, so a worker's fresh
  filesystem does not ask the Hub for the repo or list the shard's folder before its first byte; and a row
  group two workers' slices split is fetched by one and handed to the other (:mod:`~fusionrs_hf.torch.share`).
* **Retries** (:func:`fetch_range`): a range request that fails (5xx, a dropped connection, a short body)
  is tried ``RETRIES`` times with a short backoff (a permanent one, 403 or 404, is not); what still fails
  raises, and the dataset reports it as unreadable rows of that shard
  (:class:`~fusionrs_hf.decode.DecodeError` naming it, or skipped and counted with ``on_error="skip"``).
  A row group is only ever delivered whole, so retries cannot duplicate rows.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..decode import DecodeError
from ..limits import MAX_ROW_GROUP_BYTES, _read_chunks, row_group_too_big  # noqa: F401 - re-exported
from ..parquet_pages import ByteSource, chunk_range
from ..safepath import is_local_fs
from . import share

if TYPE_CHECKING:
    from .plan import Unit

FOOTER_TAIL = 64 * 1024
"""Bytes read from the end of a shard when planning: the footer is parsed from these when it fits."""
FOOTER_THREADS = 64
"""Shards whose footers are read at once from remote storage."""
RETRIES = 6
"""Attempts per range request: 50 ms, doubling, between them (1.55 s in all), so a burst of dropped
connections or 5xx answers on a busy link does not end an epoch."""
BACKOFF_S = 0.05
"""Wait before the second attempt; doubled before each later one."""
DEFAULT_READ_AHEAD = 2
DEFAULT_REQUEST_SIZE = 8 * 1024 * 1024
_MERGE_GAP = 256 * 1024
"""Column chunks closer than this are fetched as one range (the gap is read and dropped)."""


def is_local(fs) -> bool:
    return is_local_fs(fs)


def is_hub(fs) -> bool:
    """Whether ``fs`` is ``huggingface_hub``'s own ``HfFileSystem`` (whose files have Hub URLs)."""
    from huggingface_hub import HfFileSystem

    return isinstance(fs, HfFileSystem)


def hub_url(fs, path: str) -> str:
    """The ``/resolve/`` URL of a file of a Hub repo (``HfFileSystem`` path), asking nothing new of the Hub
    where the filesystem has already resolved the repo (as planning has)."""
    from huggingface_hub import hf_hub_url

    rp = fs.resolve_path(path)
    return hf_hub_url(rp.repo_id, rp.path_in_repo, repo_type=rp.repo_type, revision=rp.revision,
                      endpoint=fs.endpoint)


def _hub_get_range(fs, url: str, start: int, end: int) -> bytes:
    """One ranged GET of a Hub file through ``huggingface_hub``'s own session, headers and errors.

    ``HfFileSystemFile`` does the same GET, but a fresh filesystem (each DataLoader worker has one) first
    asks the Hub for the repo and lists the file's folder, two round trips per worker and folder; and its
    retry waits 1 s, doubling, on every 5xx, before :func:`fetch_range`'s own short retry could run. Only
    429 (rate limit) keeps the library's long backoff.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_backoff

    headers = {**build_hf_headers(token=getattr(fs, "token", None)), "range": f"bytes={start}-{end - 1}"}
    r = http_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT, max_retries=2,
                     retry_on_exceptions=(), retry_on_status_codes=(429,))
    hf_raise_for_status(r)
    return r.content


class RangeSource:
    """Ranged reads of one remote file, thread-safe: a Hub file by GETs of its ``url`` (see
    :func:`_hub_get_range`); others through an unbuffered handle's ``_fetch_range`` where the filesystem's
    files have one (http, s3), else ``fs.cat_file(path, start, end)``."""

    def __init__(self, fs, path: str, size: int | None = None, stats=None, url: str | None = None) -> None:
        self.fs, self.path, self.size, self.stats, self.url = fs, path, size, stats, url
        self._handle = None
        self._lock = threading.Lock()

    def _raw(self, start: int, end: int) -> bytes:
        if self.url is not None:
            return _hub_get_range(self.fs, self.url, start, end)
        with self._lock:
            if self._handle is None:
                h = False
                # the size the plan knows spares the handle an info() round trip, where the store takes it
                for kw in ([{"size": self.size}] if self.size is not None else []) + [{}]:
                    try:
                        h = self.fs.open(self.path, "rb", cache_type="none", **kw)
                        break
                    except TypeError:
                        continue
                self._handle = h if h is not False and hasattr(h, "_fetch_range") else False
                if self.size is None and self._handle:
                    self.size = getattr(self._handle, "size", None)
        if self._handle:
            return self._handle._fetch_range(start, end)
        return self.fs.cat_file(self.path, start=start, end=end)

    def fetch(self, start: int, end: int) -> bytes:
        return fetch_range(self._raw, start, end, self.stats)

    def close(self) -> None:
        h, self._handle = self._handle, None
        if h:
            try:
                h.close()
            except Exception:  # noqa: BLE001, S110 - closing an unbuffered read handle: nothing to lose
                pass


def _permanent(e: Exception) -> bool:
    """An answer that asking again will not change: missing, forbidden, a 4xx other than 408/429."""
    if isinstance(e, (FileNotFoundError, PermissionError)):
        return True
    status = getattr(getattr(e, "response", None), "status_code", None)  # huggingface_hub / httpx
    if status is None:
        status = getattr(e, "status", None)  # aiohttp (fsspec's http://)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def fetch_range(raw, start: int, end: int, stats=None, retries: int = RETRIES) -> bytes:
    """``raw(start, end)`` with retries: a failure or a short answer is tried again after a short backoff;
    a permanent one (:func:`_permanent`) raises at once."""
    last: Exception | None = None
    for attempt in range(retries):
        if attempt:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
            if stats is not None:
                stats.add("retries")
        try:
            if stats is not None:
                stats.add("requests")
            data = raw(start, end)
            if len(data) != end - start:
                raise OSError(f"short read: {len(data)} of {end - start} bytes at {start}")
            return bytes(data)
        except Exception as e:  # noqa: BLE001 - 5xx, dropped connection, truncated body: try again
            if _permanent(e):
                raise
            last = e
    raise OSError(f"range {start}-{end} failed {retries} times: {type(last).__name__}: {last}") from last


def _parse_footer(tail: bytes):
    """``(FileMetaData, footer bytes)`` of a parquet file from bytes ending with its footer; None if they do
    not hold it all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(tail) < 8 or tail[-4:] != b"PAR1":
        raise OSError("not a parquet file (no PAR1 magic at its end)")
    n = int.from_bytes(tail[-8:-4], "little")
    if n + 8 > len(tail):
        return None
    raw = tail[-(n + 8):]
    return pq.ParquetFile(pa.BufferReader(raw)).metadata, raw


def footer_bytes(md) -> bytes:
    """``md`` serialized as a parquet footer (metadata, length, magic), what :func:`parse_footer` reads back."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    md.write_metadata_file(sink)
    data = sink.getvalue().to_pybytes()  # "PAR1" + metadata + length + "PAR1"
    return data[4:]


def parse_footer(data: bytes):
    """The FileMetaData from footer bytes (:func:`read_footers`)."""
    got = _parse_footer(data)
    if got is None:
        raise OSError("incomplete parquet footer")
    return got[0]


class Footer(NamedTuple):
    """What a worker needs to read a remote shard without asking for anything but column bytes."""

    size: int
    raw: bytes
    """The parquet footer (:func:`parse_footer`)."""
    url: str | None = None
    """A Hub file's ``/resolve/`` URL (:func:`hub_url`); None for other stores."""


def read_footers(fs, paths: Sequence[str], sizes: Sequence[int | None] | None = None, threads: int | None = None):
    """``[(metadata | exception, Footer | None)]`` for ``paths``, in order (local files: no Footer).

    Local files: opened one by one (no latency to hide). Remote: one ranged read of the last
    :data:`FOOTER_TAIL` bytes per file, :data:`FOOTER_THREADS` files at once; a footer larger than that
    tail is read through a normal open.
    """
    import pyarrow.parquet as pq

    local, hub = is_local(fs), is_hub(fs)
    sizes = list(sizes) if sizes is not None else [None] * len(paths)

    def one(i: int):
        path, size = paths[i], sizes[i]
        try:
            if local:
                with fs.open(path, "rb") as f:
                    return pq.ParquetFile(f).metadata, None
            if size is None:
                size = fs.info(path)["size"]
            url = hub_url(fs, path) if hub else None
            src = RangeSource(fs, path, size, url=url)
            try:
                got = _parse_footer(src.fetch(max(0, size - FOOTER_TAIL), size))
            finally:
                src.close()
            if got is None:
                with fs.open(path, "rb") as f:
                    md = pq.ParquetFile(f).metadata
                got = md, footer_bytes(md)
            return got[0], Footer(int(size), got[1], url)
        except Exception as e:  # noqa: BLE001 - named by the caller
            return e, None

    n = threads if threads is not None else (1 if local else min(FOOTER_THREADS, max(1, len(paths))))
    if n <= 1:
        return [one(i) for i in range(len(paths))]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(len(paths))))


def column_ranges(md, row_group: int, columns: Sequence[str]) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of the column chunks of ``row_group`` that ``columns`` read (one rule for
    where a chunk's bytes are, walked and fetched alike: :func:`~fusionrs_hf.parquet_pages.chunk_range`)."""
    return [chunk_range(c) for c in _read_chunks(md, row_group, columns)]


def plan_requests(ranges: Sequence[tuple[int, int]], request_size: int) -> list[tuple[int, int]]:
    """Merged spans of ``ranges`` (gaps under 256 KiB bridged), each cut into pieces of at most ``request_size``."""
    spans: list[list[int]] = []
    for a, b in sorted(ranges):
        if spans and a - spans[-1][1] <= _MERGE_GAP:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    out = []
    for a, b in spans:
        step = max(1, int(request_size))
        out.extend((s, min(s + step, b)) for s in range(a, b, step))
    return out


class ReadStats:
    """Counters of one reader (a worker), optionally mirrored into a shared-memory row (and then counting on
    from what it holds): range ``requests``, ``retries``, ``row_groups`` taken, ``fallbacks`` (reads pyarrow made
    outside the prefetched ranges), the peak ``max_in_flight`` of row groups fetched ahead, not yet taken, and
    row groups ``shared``: taken from the neighbouring worker instead of fetched (:mod:`~fusionrs_hf.torch.share`)."""

    FIELDS = ("requests", "retries", "max_in_flight", "row_groups", "fallbacks", "shared")

    def __init__(self, shared_row=None) -> None:
        self.values = dict.fromkeys(self.FIELDS, 0)
        if shared_row is not None:
            self.values.update({name: int(shared_row[i]) for i, name in enumerate(self.FIELDS)})
        self.in_flight = 0
        self._row = shared_row
        self._lock = threading.Lock()

    def add(self, name: str, k: int = 1) -> None:
        with self._lock:
            self.values[name] += k
            self._mirror(name)

    def _mirror(self, name: str) -> None:
        if self._row is not None:
            self._row[self.FIELDS.index(name)] = self.values[name]

    def flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            if self.in_flight > self.values["max_in_flight"]:
                self.values["max_in_flight"] = self.in_flight
                self._mirror("max_in_flight")


class _Fetched:
    """The prefetched pieces of one row group, ``[(start, bytes)]``, kept as fetched: a read inside one piece
    is a view of it, and only a read across pieces is copied (joining every piece first doubled a row
    group's memory while it was assembled, and copied all of it)."""

    def __init__(self, pieces: list[tuple[int, bytes]]) -> None:
        pieces = sorted(pieces, key=lambda p: p[0])
        self.starts = [a for a, _ in pieces]
        self.pieces = [memoryview(d) for _, d in pieces]

    def raw_pieces(self) -> list[tuple[int, memoryview]]:
        return list(zip(self.starts, self.pieces, strict=True))

    def get(self, pos: int, n: int) -> memoryview | None:
        i = bisect.bisect_right(self.starts, pos) - 1
        if i < 0 or pos - self.starts[i] > len(self.pieces[i]):
            return None
        off = pos - self.starts[i]
        if off + n <= len(self.pieces[i]):
            return self.pieces[i][off:off + n]
        out = bytearray(self.pieces[i][off:])
        j = i + 1
        while len(out) < n:  # on across adjacent pieces; a gap means it was not prefetched
            if j >= len(self.pieces) or self.starts[j] != pos + len(out):
                return None
            out += self.pieces[j][: n - len(out)]
            j += 1
        return memoryview(out)


class PrefetchedFile(io.RawIOBase):
    """A read-only file for pyarrow: reads covered by prefetched spans are served from memory, others go
    to the filesystem (with retries)."""

    def __init__(self, source: RangeSource | FileSource, size: int) -> None:
        super().__init__()
        self.source, self._size, self._pos = source, int(size), 0
        self.current: _Fetched | None = None
        self.closing: FileSource | None = None
        """A source this file owns (closed with it): the filesystem's file of ``read_ahead=0``."""

    def close(self) -> None:
        self.current = None
        if self.closing is not None:
            self.closing, closing = None, self.closing
            closing.close()
        super().close()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else self._size + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes | memoryview:
        pos = self._pos
        if n is None or n < 0:
            n = self._size - pos
        n = max(0, min(n, self._size - pos))
        if not n:
            return b""
        data = self.current.get(pos, n) if self.current is not None else None
        if data is None:
            if self.source.stats is not None:
                self.source.stats.add("fallbacks")
            data = self.source.fetch(pos, pos + n)
        self._pos = pos + len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)


class FileSource:
    """What a :class:`PrefetchedFile` reads from an open file of the filesystem (``read_ahead=0``): positioned
    reads through the file's own cache, as pyarrow's reads through it were, with its ``size``."""

    stats = None

    def __init__(self, f) -> None:
        size = getattr(f, "size", None)
        if size is None:  # a file object without fsspec's size (memory://)
            size = f.seek(0, 2)
            f.seek(0)
        self.f, self.size = f, int(size)
        self._lock = threading.Lock()

    def fetch(self, start: int, end: int) -> bytes:
        with self._lock:
            self.f.seek(start)
            data = self.f.read(end - start)
        if len(data) != end - start:
            raise OSError(f"short read: {len(data)} of {end - start} bytes at {start}")
        return data

    def close(self) -> None:
        self.f.close()


class ReadItem(NamedTuple):
    """One row group a worker will read, with what fetching it needs."""

    path: str
    size: int
    metadata: object
    """The shard's ``FileMetaData`` (from the plan's footer)."""
    row_group: int
    rows: int
    """Rows of it this pass reads."""
    url: str | None = None
    take_from: str | None = None
    """Where the next worker leaves this row group's bytes for this one (:mod:`~fusionrs_hf.torch.share`)."""
    publish_to: str | None = None
    """Where this worker leaves them for the worker before it."""
    ident: bytes = b""
    """What a shared file must say it holds: shard, row group, footer digest."""


MAX_SMALL_AHEAD = 32
"""Row groups smaller than a batch: at most this many fetched ahead to fill one (see RowGroupPrefetcher)."""


class RowGroupPrefetcher:
    """Bounded read-ahead over one worker's row groups, in the order they will be read.

    :meth:`take` ``(i)`` returns item ``i``'s fetched spans (waiting for them, or fetching them now) and
    starts fetching items ``i+1 .. i+read_ahead`` that are not started yet, so the next row groups arrive
    while item ``i`` is decoded. Items already taken are forgotten: at most ``read_ahead`` row groups are in
    flight (fetching or fetched, not taken). Row groups smaller than a batch (``min_rows``) would each cost a
    round trip per few rows, so the window then reaches further, until ``min_rows`` rows are ahead, by at
    most :data:`MAX_SMALL_AHEAD` row groups: memory stays bounded by the larger of ``read_ahead`` row groups
    and one batch's rows.
    """

    def __init__(self, fs, items: Sequence[ReadItem], columns: Sequence[str], read_ahead: int = DEFAULT_READ_AHEAD,
                 request_size: int = DEFAULT_REQUEST_SIZE, stats: ReadStats | None = None, min_rows: int = 0) -> None:
        self.fs, self.items, self.columns = fs, list(items), list(columns)
        self.read_ahead, self.request_size = max(0, int(read_ahead)), int(request_size)
        self.min_rows = max(0, int(min_rows)) if self.read_ahead else 0
        self.stats = stats or ReadStats()
        self._sources: dict[str, RangeSource] = {}
        self._futures: dict[int, Future] = {}
        small = any(it.rows < self.min_rows for it in self.items)
        self._pool = ThreadPoolExecutor(16 if small else max(2, min(16, 2 * self.read_ahead + 2)),
                                        thread_name_prefix="fusionrs-readahead")
        self._next = 0
        """The first item not started yet."""

    def source(self, path: str, size: int, url: str | None = None) -> RangeSource:
        src = self._sources.get(path)
        if src is None:
            src = self._sources[path] = RangeSource(self.fs, path, size, self.stats, url=url)
        return src

    def _fetch(self, i: int) -> Future:
        """Start fetching item ``i``'s byte ranges (in ``request_size`` pieces, in parallel); a row group the
        neighbouring worker already fetched is taken from it instead, one it will need is left for it."""
        it = self.items[i]
        got = share.take(it.take_from, it.ident) if it.take_from else None
        if got is not None:
            self.stats.add("shared")
            out: Future = Future()
            out.set_result(_Fetched(got))
        else:
            out = self._fetch_ranges(it)
        if it.publish_to:
            out.add_done_callback(lambda f: share.publish(it.publish_to, it.ident, f.result().raw_pieces())
                                  if not f.cancelled() and f.exception() is None else None)
        return out

    def _fetch_ranges(self, it: ReadItem) -> Future:
        src = self.source(it.path, it.size, it.url)
        reqs = plan_requests(column_ranges(it.metadata, it.row_group, self.columns), self.request_size)
        parts = [(a, self._pool.submit(src.fetch, a, b)) for a, b in reqs]
        out: Future = Future()
        pending = [len(parts)]
        lock = threading.Lock()

        def done(_f):
            with lock:
                pending[0] -= 1
                last = pending[0] == 0
            if not last or out.cancelled():  # cancelled: the reader closed or dropped it, nobody waits
                return
            try:
                result = _Fetched([(a, f.result()) for a, f in parts])
            except Exception as e:  # noqa: BLE001 - handed to whoever takes the row group
                result = e
            try:
                out.set_exception(result) if isinstance(result, Exception) else out.set_result(result)
            except InvalidStateError:  # cancelled in the meantime
                pass
        if not parts:
            out.set_result(_Fetched([]))
        # dropped or closed: the pieces not started yet are not fetched at all
        out.add_done_callback(lambda f: [p.cancel() for _, p in parts] if f.cancelled() else None)
        for _, f in parts:
            f.add_done_callback(done)
        return out

    def _window_end(self, i: int) -> int:
        """The last item to have started once item ``i`` is taken: ``read_ahead`` further, or as far as
        ``min_rows`` rows need (at most MAX_SMALL_AHEAD items)."""
        end = i + self.read_ahead
        if self.min_rows:
            rows = sum(it.rows for it in self.items[i + 1:end + 1])
            while rows < self.min_rows and end < len(self.items) - 1 and end - i < MAX_SMALL_AHEAD:
                end += 1
                rows += self.items[end].rows
        return end

    def _top_up(self, upto: int) -> None:
        while self._next <= min(upto, len(self.items) - 1):
            i = self._next
            self._next += 1
            self._futures[i] = self._fetch(i)
            self.stats.flight(+1)

    def take(self, i: int) -> _Fetched:
        fut = self._futures.pop(i, None)
        if fut is not None:
            self.stats.flight(-1)
        else:  # not fetched ahead (the first of a pass): its pieces now, in parallel
            self._next = max(self._next, i + 1)
            fut = self._fetch(i)
        self.stats.add("row_groups")
        if not fut.done() and self._nbytes(i) >= self.request_size:
            # A large row group the reader waits for gets the link to itself: read-ahead started now would
            # share the bandwidth and delay it (on a capped link, the first batch by the whole window).
            try:
                return fut.result()
            finally:
                self._top_up(self._window_end(i))
        self._top_up(self._window_end(i))
        return fut.result()

    def _nbytes(self, i: int) -> int:
        it = self.items[i]
        return sum(b - a for a, b in column_ranges(it.metadata, it.row_group, self.columns))

    def drop(self, i: int) -> None:
        """Item ``i`` will not be read (its shard could not be opened): forget its fetch."""
        fut = self._futures.pop(i, None)
        if fut is not None:
            fut.cancel()
            self.stats.flight(-1)

    def close(self) -> None:
        for f in self._futures.values():
            f.cancel()
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for src in self._sources.values():
            src.close()
        self._sources.clear()


class RowGroupReading:
    """The dataset's reading of its slice: row groups in storage order, as raw records (a mixin of
    :class:`~fusionrs_hf.torch.dataset.FusionRSIterable`). Local shards are memory-mapped; remote ones are
    read through :class:`RowGroupPrefetcher` (``read_ahead`` > 0) from the footers the plan holds."""

    def _read(self, pieces, first_pos: int) -> Iterator[tuple[int, dict]]:
        """Rows of the slice in storage order as (position, raw record), from position ``first_pos`` on."""
        import pyarrow.parquet as pq

        if self._in_worker:
            try:
                import fsspec.asyn

                fsspec.asyn.reset_lock()  # a forked worker must not reuse the parent's event loop lock
            except (ImportError, AttributeError):
                pass
            import pyarrow as pa

            # A DataLoader worker only reads here: plain malloc hands each freed record batch back
            # instead of Arrow's default allocator keeping it cached: 30-50 MB less per worker.
            pa.set_memory_pool(pa.system_memory_pool())
        cols = list(self.columns)
        # Without a shuffle buffer a row is decoded right after it is read, so its image bytes can
        # stay views into Arrow's buffer (one copy less). Rows waiting in a shuffle buffer get their
        # own bytes: a view would keep its whole 64-row Arrow batch alive for as long as any row
        # of it waits, several times the buffer's size.
        zero_copy = not self.shuffle or self.shuffle_buffer <= 1
        local = self.fs is not None and is_local(self.fs)
        pre = None if local else self._prefetcher(pieces, first_pos, cols)
        pos = 0
        open_name, pf, handle, open_error = None, None, None, None
        # The shard's bytes as the page-header walk reads them (limits.row_group_too_big): a local file through a
        # handle of its own (a small read a page), a remote one from the bytes already fetched for pyarrow.
        pages, local_fh = None, None
        item = -1  # index of the piece among the prefetcher's items
        try:
            for unit_idx, first, end in pieces:
                unit = self.units[unit_idx]
                if pos + (end - first) <= first_pos:
                    pos += end - first
                    continue
                item += 1
                if unit.shard != open_name:
                    for h in (handle, local_fh):
                        if h is not None:
                            h.close()
                    handle, pf, open_error, pages, local_fh = None, None, None, None, None
                    path = f"{self.root}/{unit.shard}"
                    try:
                        if local:  # memory-mapped: pages are read from the page cache without a copy
                            pf = pq.ParquetFile(path, memory_map=True)
                            local_fh = self.fs.open(path, "rb")
                            pages = ByteSource(local_fh)
                        elif pre is not None:  # the plan's footer, column bytes fetched ahead
                            it = pre.items[item]
                            handle = PrefetchedFile(pre.source(path, it.size, it.url), it.size)
                            pf = pq.ParquetFile(handle, metadata=it.metadata)
                            # the walk reads the row group's fetched bytes (handle.current): no request of its own
                            pages = ByteSource(handle)
                        else:  # read_ahead=0: each row group's column bytes fetched when it is read (below)
                            raw = FileSource(self.fs.open(path, "rb"))
                            handle = PrefetchedFile(raw, raw.size)
                            handle.closing = raw
                            pf = pq.ParquetFile(handle)
                            pages = ByteSource(handle)
                    except Exception as e:  # noqa: BLE001 - truncated footer, not parquet, gone: named below
                        open_error = f"cannot open the parquet file: {type(e).__name__}: {e}"
                    open_name = unit.shard
                error = open_error
                if error is not None and pre is not None:
                    pre.drop(item)
                if error is None and pre is not None:
                    try:
                        handle.current = None
                        handle.current = pre.take(item)
                    except Exception as e:  # noqa: BLE001 - the range requests failed after retries
                        error = f"cannot read row group {unit.row_group}: {type(e).__name__}: {e}"
                if error is None:
                    md = pf.metadata
                    if unit.row_group >= md.num_row_groups or md.row_group(unit.row_group).num_rows != unit.num_rows:
                        error = ("the shard changed since this epoch was planned (its row groups differ from the "
                                 "plan); the next epoch re-plans")
                    else:  # a few KB of zstd can claim GBs, and a footer can lie: judged by the page headers
                        try:  # (and the shard's rows by its bytes), before anything is inflated
                            if pre is None and not local:
                                # read_ahead=0: the bytes pyarrow is about to read, one read a span (uncut, as
                                # pyarrow's own): the walk reads them from memory, and pyarrow does not read again
                                handle.current = None
                                spans = plan_requests(column_ranges(md, unit.row_group, cols), 1 << 62)
                                handle.current = _Fetched([(a, handle.source.fetch(a, b)) for a, b in spans])
                            error = row_group_too_big(md, unit.row_group, cols, source=pages, shard=True)
                        except Exception as e:  # noqa: BLE001 - a read of the row group or a page header failed
                            error = f"cannot read row group {unit.row_group}: {type(e).__name__}: {e}"
                done = 0  # rows of this piece delivered
                if error is None:
                    try:
                        for pos_rec in self._read_piece(pf, unit, first, end, cols, zero_copy, pos):
                            yield pos_rec
                            done += 1
                    except Exception as e:  # noqa: BLE001 - a corrupt page: name the shard and row
                        error = f"cannot read row group {unit.row_group}: {type(e).__name__}: {e}"
                pos += done
                if error is not None:
                    row = unit.row_offset + first + done
                    where = f"shard={unit.shard} row={row}"
                    if self.on_error == "raise":
                        raise DecodeError(f"{where}: {error}")
                    # skip mode: the unread rows of this piece become rows that fail (counted, named)
                    for r in range(first + done, end):
                        yield pos, {"sample_id": None, "_shard": unit.shard, "_row": unit.row_offset + r,
                                    "_error": error}
                        pos += 1
        finally:
            for h in (handle, local_fh):
                if h is not None:
                    h.close()
            if pre is not None:
                pre.close()

    def _prefetcher(self, pieces, first_pos: int, cols: list[str]) -> RowGroupPrefetcher | None:
        """Read-ahead over the row groups this pass reads (remote shards whose footer the plan holds)."""
        footers = getattr(self, "_footers", None) or {}
        if self.read_ahead <= 0 or not footers:
            return None
        parsed: dict[str, object] = {}
        digests: dict[str, str] = {}
        items, pos = [], 0
        folder = getattr(self, "_share_dir", None)
        folder = folder if share.usable(folder) else None
        _, _, worker, nworkers = self._slot
        gen = getattr(self, "_my_plan_gen", 0)
        last = len(pieces) - 1
        for k, (unit_idx, first, end) in enumerate(pieces):
            unit = self.units[unit_idx]
            if pos + (end - first) <= first_pos:
                pos += end - first
                continue
            pos += end - first
            got = footers.get(unit.shard)
            if got is None:
                return None
            if unit.shard not in parsed:
                parsed[unit.shard] = parse_footer(got.raw)
            # a row group this slice shares with a neighbouring worker of this rank: the slice that starts
            # inside it fetches it and leaves it, the one that ends inside it takes it (fusionrs_hf.torch.share)
            take_from = publish_to = None
            ident = b""
            if folder:
                if k == last and end < unit.num_rows and worker + 1 < nworkers:
                    take_from = share.share_path(folder, self.epoch, gen, self.rank, worker + 1)
                if k == 0 and first > 0 and worker > 0:
                    publish_to = share.share_path(folder, self.epoch, gen, self.rank, worker)
                if take_from or publish_to:
                    if unit.shard not in digests:
                        digests[unit.shard] = hashlib.sha256(got.raw).hexdigest()
                    ident = f"{unit.shard}|{unit.row_group}|{digests[unit.shard]}".encode()
            items.append(ReadItem(f"{self.root}/{unit.shard}", got.size, parsed[unit.shard], unit.row_group,
                                  end - first, got.url, take_from, publish_to, ident))
        stats = ReadStats(self._read_stats[self._slot[2] % len(self._read_stats)]
                          if getattr(self, "_read_stats", None) is not None else None)
        return RowGroupPrefetcher(self.fs, items, cols, self.read_ahead, self.request_size, stats,
                                  min_rows=self.batch_size or 0)

    def _read_piece(self, pf, unit: Unit, first: int, end: int, cols: list[str], zero_copy: bool,
                    pos: int) -> Iterator[tuple[int, dict]]:
        """Rows ``first..end-1`` of one row group as (position, raw record)."""
        row = 0  # row index within the row group
        # 64-row record batches (~5 MB of image bytes): malloc reuses such blocks where
        # 256-row ones were mapped afresh each time; reading measured 0.03-0.05 ms per row
        # against 0.06-0.09.
        for rb in pf.iter_batches(batch_size=64, row_groups=[unit.row_group], columns=cols, use_threads=False):
            m = rb.num_rows
            if row + m <= first:
                row += m
                continue
            lo, hi = max(first - row, 0), min(end - row, m)
            # slice first: only this slot's rows are copied out of Arrow (image bytes included)
            part = rb.slice(lo, hi - lo) if (lo, hi) != (0, m) else rb
            data = {name: self._column(part, name, zero_copy) for name in part.schema.names}
            for j in range(hi - lo):
                rec = {name: vals[j] for name, vals in data.items()}
                rec["_shard"] = unit.shard
                rec["_row"] = unit.row_offset + row + lo + j
                yield pos, rec
                pos += 1
            row += m
            if row >= end:
                break

    @staticmethod
    def _column(rb, name: str, zero_copy: bool = False) -> list:
        import pyarrow as pa

        col = rb.column(name)
        if hasattr(col.type, "num_fields") and col.type.num_fields:  # struct<bytes> from "rgb.bytes"
            col = col.field("bytes")
        if zero_copy and pa.types.is_binary(col.type) and len(col) and not col.null_count:
            _, offsets, data = col.buffers()
            off = np.frombuffer(offsets, dtype=np.int32)[col.offset: col.offset + len(col) + 1].tolist()
            view = memoryview(data).cast("B")  # keeps the Arrow buffer alive as long as a row's view
            return [view[a:b] for a, b in zip(off[:-1], off[1:], strict=True)]
        return col.to_pylist()

