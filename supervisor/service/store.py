"""The daemon's SQLite store (`<state>/trainsup.db`, WAL): jobs, their state transitions, every
record each runner published, kept weights, and the darknet.log offset of the last checkpoint.

Records arrive through a bus listener that commits each one before returning, and the runner
publishes a decision before it acts on it, so an event is committed before the action it
causes. The job dir's `events.jsonl` stays the runner's own truth: when the daemon re-adopts a
job, the store's copy of its records is replaced by what the runner will resume from (the file
cut at its last checkpoint, `resync_events`), so a record the store took just before a crash is
never held twice.

The schema is versioned by `PRAGMA user_version`; `MIGRATIONS[n]` takes version n to n + 1.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from supervisor.runtime.bus import Record

STATES = ("queued", "starting", "running", "stopping", "finished", "failed", "cancelled")
TERMINAL = frozenset({"finished", "failed", "cancelled"})
ACTIVE = frozenset({"starting", "running", "stopping"})
# Allowed moves (DESIGN "Conventions": queued → starting → running → stopping → end).
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"starting", "cancelled"}),
    "starting": frozenset({"running", "stopping", "finished", "failed", "cancelled", "queued"}),
    "running": frozenset({"stopping", "finished", "failed", "cancelled"}),
    "stopping": frozenset({"finished", "failed", "cancelled"}),
    "finished": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

MIGRATIONS: tuple[str, ...] = (
    # 0 → 1
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        submitted REAL NOT NULL,
        after_id INTEGER REFERENCES jobs(id),
        source TEXT NOT NULL,
        base_dir TEXT NOT NULL,
        spec_text TEXT NOT NULL,
        binary_name TEXT NOT NULL,
        binary_path TEXT NOT NULL,
        gpus TEXT NOT NULL,
        user TEXT,
        device TEXT,
        job_dir TEXT,
        pid INTEGER,
        iteration INTEGER,
        max_iterations INTEGER,
        avg_loss REAL,
        last_map REAL,
        best_iteration INTEGER,
        best_map REAL,
        rate REAL,
        stop_rule TEXT,
        stop_reason TEXT,
        status TEXT,
        cause TEXT,
        log_offset INTEGER NOT NULL DEFAULT 0,
        relaunches INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        started REAL,
        ended REAL
    );
    CREATE INDEX jobs_state ON jobs(state, priority, submitted);
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        time REAL NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        type TEXT NOT NULL,
        time REAL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_job ON events(job_id, id);
    CREATE TABLE kept (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        iteration INTEGER,
        map REAL,
        PRIMARY KEY (job_id, name)
    );
    -- The history: one row per iteration, the later launch's where darknet repeated some
    -- after a resume (DESIGN "Conventions").
    CREATE VIEW iterations AS
        SELECT job_id, json_extract(data, '$.iteration') AS iteration,
               json_extract(data, '$.loss') AS loss,
               json_extract(data, '$.avg_loss') AS avg_loss, time
        FROM events WHERE id IN (
            SELECT MAX(id) FROM events WHERE type = 'Iteration'
            GROUP BY job_id, json_extract(data, '$.iteration'));
    CREATE VIEW evaluations AS
        SELECT job_id, json_extract(data, '$.iteration') AS iteration,
               json_extract(data, '$.map') AS map, json_extract(data, '$.valid') AS valid,
               json_extract(data, '$.source') AS source, time
        FROM events WHERE type = 'MapResult';
    """,
    # 1 → 2: the pre-flight check's report (CheckReport.to_json) from submit, for the runner's
    # diagnosis when the job starts or is re-adopted; no row where the check was off. A table
    # of its own: the queue pass reads whole job rows, a large dataset's report is big.
    """
    CREATE TABLE checks (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
        report TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(Exception):
    pass


class Store:
    """One connection, used from the daemon's event loop thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write below opens its own explicit transaction.
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL loses at most the last commits on power loss, never consistency; the
        # job dir's events.jsonl is what a resync restores from.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.migrate()

    # --- schema ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        v = self.version
        if v > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {v}, newer than this trainsup knows "
                f"({SCHEMA_VERSION}): run the newer trainsup, or restore the store's backup"
            )
        for n in range(v, SCHEMA_VERSION):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _statements(MIGRATIONS[n]):
                    self.db.execute(stmt)
                self.db.execute(f"PRAGMA user_version = {n + 1}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self.checkpoint()
        self.db.close()

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (the periodic job; also on shutdown)."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # --- jobs --------------------------------------------------------------------------------

    def add_job(
        self,
        *,
        name: str,
        priority: int,
        after: int | None,
        source: str,
        base_dir: str,
        spec_text: str,
        binary_name: str,
        binary_path: str,
        gpus: list[int],
        user: str | None,
        reason: str = "submitted",
        check_report: str | None = None,
    ) -> int:
        now = time.time()
        with self._tx():
            cur = self.db.execute(
                "INSERT INTO jobs (name, state, priority, submitted, after_id, source, base_dir,"
                " spec_text, binary_name, binary_path, gpus, user)"
                " VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    priority,
                    now,
                    after,
                    source,
                    base_dir,
                    spec_text,
                    binary_name,
                    binary_path,
                    json.dumps(gpus),
                    user,
                ),
            )
            job_id = int(cur.lastrowid or 0)
            if check_report is not None:
                self.db.execute(
                    "INSERT INTO checks (job_id, report) VALUES (?, ?)", (job_id, check_report)
                )
            self.db.execute(
                "INSERT INTO transitions (job_id, time, from_state, to_state, reason)"
                " VALUES (?, ?, NULL, 'queued', ?)",
                (job_id, now, reason),
            )
        return job_id

    def get(self, job_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row is not None else None

    def jobs(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        if states is None:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        else:
            wanted = list(states)
            marks = ",".join("?" * len(wanted))
            rows = self.db.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY id", wanted
            ).fetchall()
        return [dict(r) for r in rows]

    def queue(self) -> list[dict[str, Any]]:
        """Queued jobs in the order they may start: priority (high first), then submission."""
        rows = self.db.execute(
            "SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority DESC, submitted, id"
        ).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for state, n in self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[state] = int(n)
        return out

    def transition(self, job_id: int, to: str, reason: str = "", **fields: Any) -> None:
        """Move a job to state `to` (checked against TRANSITIONS), setting `fields` with it."""
        with self._tx():
            row = self.db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"no job {job_id}")
            old = row["state"]
            if old == to:
                self._update(job_id, fields)
                return
            if to not in TRANSITIONS[old]:
                raise StoreError(f"job {job_id} is {old}; it cannot become {to}")
            now = time.time()
            if to in TERMINAL:
                fields.setdefault("ended", now)
            self._update(job_id, {"state": to, **fields})
            self.db.execute(
                "INSERT INTO transitions (job_id, time, from_state, to_state, reason)"
                " VALUES (?, ?, ?, ?, ?)",
                (job_id, now, old, to, reason),
            )

    def update(self, job_id: int, **fields: Any) -> None:
        with self._tx():
            self._update(job_id, fields)

    def transitions(self, job_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT time, from_state, to_state, reason FROM transitions WHERE job_id = ?"
            " ORDER BY id",
            (job_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    def check_report(self, job_id: int) -> str | None:
        """The pre-flight report (JSON text) kept at submit; None where no check ran."""
        row = self.db.execute("SELECT report FROM checks WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else str(row["report"])

    def kept(self, job_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT name, path, iteration, map FROM kept WHERE job_id = ? ORDER BY name",
            (job_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    # --- records -----------------------------------------------------------------------------

    def record(self, job_id: int, rec: Record) -> None:
        """Mirror one runner record and what it says about the job, in one transaction."""
        with self._tx():
            self._insert_event(job_id, rec)
            self._apply(job_id, rec)

    def apply(self, job_id: int, rec: Record) -> None:
        """What a record says about the job, without storing the record again."""
        with self._tx():
            self._apply(job_id, rec)

    def resync_events(self, job_id: int, records: list[Record]) -> None:
        """Replace the job's records with `records` (what the runner resumes from)."""
        with self._tx():
            self.db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            for rec in records:
                self._insert_event(job_id, rec)

    def events(
        self, job_id: int, after: int = 0, limit: int = 1000, types: Iterable[str] | None = None
    ) -> list[tuple[int, Record]]:
        sql = "SELECT id, data FROM events WHERE job_id = ? AND id > ?"
        args: list[Any] = [job_id, after]
        if types is not None:
            wanted = list(types)
            sql += f" AND type IN ({','.join('?' * len(wanted))})"
            args += wanted
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        return [(int(i), json.loads(d)) for i, d in self.db.execute(sql, args)]

    def last_event(self, job_id: int, kind: str) -> Record | None:
        """The job's newest record of type `kind` (e.g. its live `Diagnosis`)."""
        row = self.db.execute(
            "SELECT data FROM events WHERE job_id = ? AND type = ? ORDER BY id DESC LIMIT 1",
            (job_id, kind),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def iteration_records(self, job_id: int) -> dict[int, int]:
        """iteration → how many Iteration records the store holds (a resume repeats some; a
        re-adopted darknet none)."""
        rows = self.db.execute(
            "SELECT json_extract(data, '$.iteration'), COUNT(*) FROM events"
            " WHERE job_id = ? AND type = 'Iteration' GROUP BY 1",
            (job_id,),
        ).fetchall()
        return {int(a): int(b) for a, b in rows}

    def history(self, job_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT iteration, loss, avg_loss, time FROM iterations WHERE job_id = ?"
            " ORDER BY iteration",
            (job_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    # --- internals ---------------------------------------------------------------------------

    def _insert_event(self, job_id: int, rec: Record) -> None:
        self.db.execute(
            "INSERT INTO events (job_id, type, time, data) VALUES (?, ?, ?, ?)",
            (job_id, str(rec.get("type")), rec.get("time"), json.dumps(rec, allow_nan=False)),
        )

    def _apply(self, job_id: int, rec: Record) -> None:
        kind = rec.get("type")
        f: dict[str, Any] = {}
        if kind == "JobStarted":
            f["max_iterations"] = rec.get("max_iterations")
        elif kind == "Launched":
            f["pid"] = rec.get("pid")
        elif kind == "Iteration":
            f["iteration"] = rec.get("iteration")
            if rec.get("avg_loss") is not None:
                f["avg_loss"] = rec.get("avg_loss")
        elif kind == "MapResult" and rec.get("valid", True) and rec.get("map") is not None:
            f["last_map"] = rec.get("map")
        elif kind == "NewBest":
            f["best_iteration"], f["best_map"] = rec.get("iteration"), rec.get("map")
        elif kind == "Decision":
            f["stop_rule"], f["stop_reason"] = rec.get("rule"), rec.get("reason")
        elif kind == "Checkpoint":
            f["log_offset"] = int(rec.get("offset") or 0)
        elif kind == "Relaunched":
            self.db.execute("UPDATE jobs SET relaunches = relaunches + 1 WHERE id = ?", (job_id,))
        elif kind == "Finished":
            f["status"], f["cause"] = rec.get("status"), rec.get("cause")
            stop = rec.get("stop")
            if isinstance(stop, dict):
                f["stop_rule"], f["stop_reason"] = stop.get("rule"), stop.get("reason")
            best = rec.get("best")
            if isinstance(best, dict):
                f["best_iteration"], f["best_map"] = best.get("iteration"), best.get("map")
            kept = rec.get("kept")
            if isinstance(kept, dict):
                self.db.execute("DELETE FROM kept WHERE job_id = ?", (job_id,))
                for name, info in kept.items():
                    info = info if isinstance(info, dict) else {"path": info}
                    self.db.execute(
                        "INSERT INTO kept (job_id, name, path, iteration, map)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (job_id, name, str(info.get("path")), info.get("iteration"),
                         info.get("map")),
                    )  # fmt: skip
        self._update(job_id, f)

    def _update(self, job_id: int, fields: dict[str, Any]) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])

    def _tx(self) -> _Tx:
        return _Tx(self.db)


class _Tx:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error); nested use joins the outer one."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.outer:
            return
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (executescript would commit the transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf.strip()
            buf = ""
    if buf.strip():
        yield buf.strip()
