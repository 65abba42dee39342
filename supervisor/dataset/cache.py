"""A SQLite cache of per-file facts keyed by (path, size, mtime_ns).

A re-check of an unchanged dataset then stats each file and reads its facts from here instead
of decoding it again. A changed file has a new size or mtime and is inspected again; an entry
is replaced, never trusted, when its key differs. WAL mode and a busy timeout let two checks
share one cache file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

# Bump when the stored facts change shape or meaning: older entries are then dropped.
CACHE_VERSION = "4"
FILE_NAME = "dataset-check.sqlite3"

Table = Literal["images", "labels"]
Key = tuple[int, int]  # size, mtime_ns


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainsup"


class FactCache:
    """Facts per file, stored as JSON text; one table for images and one for label files."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        row = self._db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        if row is None or row[0] != CACHE_VERSION:
            with self._db:
                for table in ("images", "labels"):
                    self._db.execute(f"DROP TABLE IF EXISTS {table}")
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('version', ?)", (CACHE_VERSION,)
                )
        for table in ("images", "labels"):
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, facts TEXT)"
            )
        self._db.commit()

    def get_many(self, table: Table, keys: Mapping[str, Key]) -> dict[str, Any]:
        """Decoded facts of every path whose stored (size, mtime_ns) equals the given one."""
        found: dict[str, Any] = {}
        query = f"SELECT size, mtime_ns, facts FROM {table} WHERE path = ?"
        for path, key in keys.items():
            row = self._db.execute(query, (path,)).fetchone()
            if row is not None and (row[0], row[1]) == key:
                found[path] = json.loads(row[2])
        return found

    def put_many(self, table: Table, rows: Iterable[tuple[str, Key, Any]]) -> None:
        with self._db:
            self._db.executemany(
                f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?)",
                (
                    (path, key[0], key[1], json.dumps(facts, separators=(",", ":")))
                    for path, key, facts in rows
                ),
            )

    def close(self) -> None:
        self._db.close()


def open_cache(cache_dir: Path | None) -> tuple[FactCache | None, str | None]:
    """The cache under `cache_dir` (default: `default_cache_dir()`), or None and why not."""
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    try:
        return FactCache(folder / FILE_NAME), None
    except (OSError, sqlite3.Error) as e:
        return None, f"{folder / FILE_NAME}: {e}"
