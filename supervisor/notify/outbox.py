"""The outbox: every message to every target, kept until delivered or refused for good.

`Outbox` is what delivery needs; `SqliteOutbox` keeps it in a SQLite file — `<job_dir>/
outbox.sqlite` for `trainsup run`; the daemon's store can implement the same protocol over its
own database. One row per (message, target): a message delivered to Slack but not yet to the
webhook is pending for the webhook only. Rows of one target are sent in `seq` order (the
order the listener added them), so a target sees a job's messages in the order they happened.

Durability: WAL with synchronous=NORMAL — a committed row survives the process being killed
(the case that matters: a crash, SIGKILL, the end of a Slurm allocation); the last rows may be
lost on a power cut, like the events file, which is not fsynced either.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from supervisor.notify.message import Message

OUTBOX_FILE = "outbox.sqlite"

PENDING, SENT, FAILED = "pending", "sent", "failed"


@dataclass(frozen=True)
class Delivery:
    """One (message, target) row."""

    seq: int
    message: Message
    target: str  # NotifyTarget.key
    label: str  # NotifyTarget.label: redacted, safe to show
    state: str
    attempts: int
    status: int | None  # the last HTTP status, if a response came
    error: str | None  # the last error, scrubbed of secrets


class Outbox(Protocol):
    def add(self, message: Message, targets: Sequence[tuple[str, str]]) -> None:
        """Queue `message` for each (target key, label), atomically."""

    def next_pending(self, target: str) -> Delivery | None:
        """The oldest row of `target` not yet delivered or refused."""

    def retry_later(self, seq: int, status: int | None, error: str, next_at: float) -> None:
        """An attempt failed in a way worth retrying."""

    def delivered(self, seq: int, status: int) -> None: ...

    def failed(self, seq: int, status: int | None, error: str) -> None:
        """Refused for good (a 4xx other than 408/429): recorded, not retried."""

    def pending(self, target: str | None = None) -> int: ...

    def deliveries(self, state: str | None = None) -> list[Delivery]: ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    event TEXT NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL REFERENCES messages(id),
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    status INTEGER,
    error TEXT,
    updated REAL NOT NULL,
    UNIQUE (message_id, target)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (target, state, seq);
"""


class SqliteOutbox:
    """`Outbox` in one SQLite file, created with the first row (a job that never sends a
    message gets no file). Used from one thread (the event loop's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._closed:
                raise sqlite3.ProgrammingError("the outbox is closed")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # `trainsup notify flush` may open the file while a run still holds it.
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._conn = db
        return self._conn

    def _empty(self) -> bool:
        """Nothing was ever queued here: reading needs no file."""
        return self._conn is None and not self._closed and not self.path.exists()

    def add(self, message: Message, targets: Sequence[tuple[str, str]]) -> None:
        if not targets:
            return
        now = time.time()
        body = json.dumps(message.to_json(), ensure_ascii=False)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR IGNORE INTO messages (id, job, event, created, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    message.id,
                    message.job.get("id") or message.job["name"],
                    message.event,
                    now,
                    body,
                ),
            )
            self._db.executemany(
                "INSERT OR IGNORE INTO deliveries (message_id, target, label, updated) "
                "VALUES (?, ?, ?, ?)",
                [(message.id, key, label, now) for key, label in targets],
            )

    def _rows(self, where: str, args: tuple[Any, ...], limit: int = -1) -> list[Delivery]:
        if self._empty():
            return []
        cur = self._db.execute(
            "SELECT d.seq, m.body, d.target, d.label, d.state, d.attempts, d.status, d.error "
            f"FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE {where} "
            "ORDER BY d.seq LIMIT ?",
            (*args, limit),
        )
        return [
            Delivery(seq, Message.from_json(json.loads(body)), t, label, st, n, status, error)
            for seq, body, t, label, st, n, status, error in cur.fetchall()
        ]

    def next_pending(self, target: str) -> Delivery | None:
        rows = self._rows("d.target = ? AND d.state = 'pending'", (target,), limit=1)
        return rows[0] if rows else None

    def _update(
        self, seq: int, state: str, status: int | None, error: str | None, **more: Any
    ) -> None:
        sets = ", ".join(f"{k} = ?" for k in more)
        self._db.execute(
            "UPDATE deliveries SET state = ?, status = ?, error = ?, attempts = attempts + 1, "
            f"updated = ?{', ' + sets if sets else ''} WHERE seq = ?",
            (state, status, error, time.time(), *more.values(), seq),
        )

    def retry_later(self, seq: int, status: int | None, error: str, next_at: float) -> None:
        self._update(seq, PENDING, status, error, next_at=next_at)

    def delivered(self, seq: int, status: int) -> None:
        self._update(seq, SENT, status, None)

    def failed(self, seq: int, status: int | None, error: str) -> None:
        self._update(seq, FAILED, status, error)

    def pending(self, target: str | None = None) -> int:
        if self._empty():
            return 0
        if target is None:
            row = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE state = 'pending' AND target = ?",
                (target,),
            )
        return int(row.fetchone()[0])

    def deliveries(self, state: str | None = None) -> list[Delivery]:
        if state is None:
            return self._rows("1 = 1", ())
        return self._rows("d.state = ?", (state,))

    def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def delivery_failures(outbox: Outbox) -> list[dict[str, Any]]:
    """The messages refused for good, as report.json shows them."""
    return [
        {
            "event": d.message.event,
            "message_id": d.message.id,
            "target": d.label,
            "status": d.status,
            "error": d.error,
            "attempts": d.attempts,
        }
        for d in outbox.deliveries(FAILED)
    ]


def summary(outbox: Outbox) -> dict[str, Any]:
    """`{"sent": n, "pending": n, "failed": [...]}` for report.json."""
    rows = outbox.deliveries()
    return {
        "sent": sum(1 for d in rows if d.state == SENT),
        "pending": sum(1 for d in rows if d.state == PENDING),
        "failed": delivery_failures(outbox),
    }


def job_dir_summary(job_dir: Path) -> dict[str, Any] | None:
    """`summary` of a job dir's outbox; None when the job has none (no `notify:` targets)."""
    path = job_dir / OUTBOX_FILE
    if not path.exists():
        return None
    box = SqliteOutbox(path)
    try:
        return summary(box)
    finally:
        box.close()
