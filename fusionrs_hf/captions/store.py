"""A disk-backed caption lookup (SQLite), so memory stays flat however many captions there are.

Each index record finds its captions by key, trying in order: its ``sample_id``; its
``(source, source_record_id)``; its ``(source, file name of the locator)``, which is how native
files (keyed by image file name) meet the index.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .formats import CaptionEntry, IRAwareEntry


def _k(key: tuple[str, ...]) -> str:
    return "\x1f".join(key)


class CaptionStore:
    """Captions and IR-aware captions on disk (SQLite), looked up per index record.

    Built once per run from the caption files (a fresh file each time, so a changed caption
    file is always picked up); memory use does not grow with the number of captions.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-journal", "-wal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE cap(pos INTEGER PRIMARY KEY, k TEXT NOT NULL, text TEXT NOT NULL);"
            "CREATE TABLE cls(k TEXT PRIMARY KEY, name TEXT NOT NULL);"
            "CREATE TABLE ira(sid TEXT PRIMARY KEY, text TEXT NOT NULL, status TEXT, src TEXT, split TEXT, "
            "file TEXT, row INTEGER);"
        )
        self.counts = {"caption_entries": 0, "captions": 0, "iraware": 0, "iraware_duplicates": 0}

    def add(self, entries: Iterable[CaptionEntry]) -> int:
        n = 0
        with self.db:
            for e in entries:
                k = _k(e.key)
                self.db.executemany("INSERT INTO cap(k, text) VALUES (?, ?)", [(k, c) for c in e.captions])
                if e.class_name:
                    self.db.execute("INSERT OR IGNORE INTO cls(k, name) VALUES (?, ?)", (k, e.class_name))
                n += 1
                self.counts["captions"] += len(e.captions)
        self.counts["caption_entries"] += n
        return n

    def add_iraware(self, entries: Iterable[IRAwareEntry]) -> int:
        """First caption per sample id wins; later duplicates are counted, not silently merged."""
        n = 0
        with self.db:
            for e in entries:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO ira(sid, text, status, src, split, file, row) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.sample_id, e.caption, e.status, e.source, e.split, e.file, e.row))
                if cur.rowcount:
                    n += 1
                else:
                    self.counts["iraware_duplicates"] += 1
        self.counts["iraware"] += n
        return n

    def finish(self) -> None:
        """Index the lookup column once everything is loaded (much faster than indexing on insert)."""
        self.db.execute("CREATE INDEX IF NOT EXISTS cap_k ON cap(k)")
        self.db.commit()

    @staticmethod
    def record_keys(sample_id: str, source: str, record_id: str, locator: str) -> list[tuple[str, ...]]:
        name = PurePosixPath(locator).name
        return [("sid", sample_id), ("rec", source, record_id), ("file", source, name), ("file", source, locator)]

    def lookup(self, sample_id: str, source: str, record_id: str, locator: str) -> tuple[list[str], str | None]:
        """(captions of the first key kind that has any, class name hint or None)."""
        keys = [_k(k) for k in self.record_keys(sample_id, source, record_id, locator)]
        marks = ",".join("?" * len(keys))
        by_key: dict[str, list[str]] = {}
        for k, text in self.db.execute(f"SELECT k, text FROM cap WHERE k IN ({marks}) ORDER BY pos", keys):
            by_key.setdefault(k, []).append(text)
        caps = next((by_key[k] for k in keys if k in by_key), [])
        classes = dict(self.db.execute(f"SELECT k, name FROM cls WHERE k IN ({marks})", keys).fetchall())
        cls = next((classes[k] for k in keys if k in classes), None)
        return caps, cls

    def iraware(self, sample_id: str) -> IRAwareEntry | None:
        row = self.db.execute("SELECT text, status, src, split, file, row FROM ira WHERE sid=?",
                              (sample_id,)).fetchone()
        if row is None:
            return None
        return IRAwareEntry(sample_id, row[0], row[1], row[2], row[3], row[5] or 0, row[4] or "")

    def close(self) -> None:
        self.db.close()

