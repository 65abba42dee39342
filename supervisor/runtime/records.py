"""Records (the bus's dicts, the lines of `events.jsonl`) to and from the parser's events.

Writing: an event becomes `{"type": <class name>, **fields}`, JSON-safe. Reading back (for
`--attach` and the daemon's re-adoption) turns the same dict into the same event, so a history
rebuilt from `events.jsonl` equals the one the runner had — timestamps included, which the
time budget needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from supervisor.atomicio import json_safe, write_text_atomic
from supervisor.runtime.bus import Record
from supervisor.training import events as ev
from supervisor.training.events import Event

# Every parser event type, by the name its records carry.
EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        ev.Iteration, ev.MapResult, ev.LayerIoU, ev.WeightsSaved, ev.Resized, ev.GpuError,
        ev.FatalError, ev.NanLoss, ev.Launch, ev.IterationsRepeated,
    )
}  # fmt: skip


def to_record(event: Event) -> Record:
    rec: Record = json_safe({"type": type(event).__name__, **dataclasses.asdict(event)})
    return rec


def from_record(rec: Record) -> Event | None:
    """The parser event a record holds, or None for the runner's own record types."""
    cls = EVENT_TYPES.get(str(rec.get("type")))
    if cls is None:
        return None
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in rec.items() if k in names}
    for k, v in kw.items():
        if isinstance(v, list):
            kw[k] = tuple(v)
        elif v is None and k in ("loss", "avg_loss", "map"):
            kw[k] = math.nan  # written as null: JSON has no NaN
    if cls is ev.MapResult:
        kw["per_class"] = tuple(ev.ClassAP(**c) for c in kw.get("per_class", ()))
    event: Event = cls(**kw)
    return event


def is_parsed(rec: Record) -> bool:
    """A record the log parser produced (re-read from darknet.log after a restart), as
    opposed to the supervisor's own evaluations and decisions."""
    return rec.get("type") in EVENT_TYPES and rec.get("source") != "supervisor"


def read_records(path: Path) -> Iterator[Record]:
    """The records of an events file; a last line cut by a crash is skipped."""
    try:
        f = path.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec


def resume_records(path: Path) -> list[Record]:
    """The records an attaching runner keeps of an events file: everything up to its last
    `Checkpoint`, and after it only what the parser did not make (that is read again from
    darknet.log at the checkpoint's offset)."""
    recs = list(read_records(path))
    cut = max((i for i, r in enumerate(recs) if r.get("type") == "Checkpoint"), default=-1)
    return [r for i, r in enumerate(recs) if i <= cut or not is_parsed(r)]


def rewrite_records(path: Path, records: list[Record]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


class EventsFile:
    """The essential listener: appends every record to `events.jsonl` and flushes it, so a
    crash loses at most the line being written. A failure to write raises (the runner turns
    it into a graceful stop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f: IO[str] = path.open("a", encoding="utf-8")

    def __call__(self, record: Record) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def fsync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        # A full disk fails the final flush too; the records before it are on disk.
        with contextlib.suppress(OSError):
            self._f.close()
