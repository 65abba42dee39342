"""What `attach` (and the daemon's re-adoption) reads back from a job dir before it watches on.

The history is rebuilt from `events.jsonl` up to its last `Checkpoint` record, timestamps
included (the time budget needs them); what the parser produced after that checkpoint is
dropped from the file, because it is read again from `darknet.log` at the checkpoint's offset —
so the file and the history hold every iteration once. The supervisor's own records (its
evaluations, decisions, launches) are all kept; of them, what `memory.tune` tried is read back
into `Restored.tune` (for `JobMemory.restore_tune`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.runtime import launch
from supervisor.runtime.memory_watch import TuneMemory
from supervisor.runtime.records import (
    from_record,
    read_records,
    resume_records,
    rewrite_records,
)
from supervisor.training.events import MapResult
from supervisor.training.history import History
from supervisor.training.policy import Stop


class AdoptError(Exception):
    """The job dir cannot be attached to; the message says why."""


@dataclass
class Restored:
    """A job's state as its events file left it.

    Attributes:
        history: every event up to the checkpoint (and the supervisor's own after it).
        offset: byte offset in darknet.log where reading goes on.
        stop: the stop decided before, if any (it still holds).
        launches: the `Launched` records (number, pid, reason).
        unscored: snapshots whose evaluation failed, by iteration, with the error.
        tune: the subdivisions `memory.tune` tuned to or saw run out of memory, and its tunes.
    """

    history: History = field(default_factory=History)
    offset: int = 0
    stop: Stop | None = None
    launches: list[dict[str, Any]] = field(default_factory=list)
    unscored: dict[int, str] = field(default_factory=dict)
    tune: TuneMemory = field(default_factory=TuneMemory)


def restore(events_path: Path) -> Restored:
    keep = resume_records(events_path)
    if len(keep) != sum(1 for _ in read_records(events_path)):
        rewrite_records(events_path, keep)
    out = Restored()
    for rec in keep:
        kind = rec.get("type")
        if kind == "Checkpoint":
            out.offset = int(rec["offset"])
        elif kind == "Decision" and out.stop is None:
            out.stop = Stop(
                rec["rule"], rec["reason"], rec["iteration"], rec["numbers"], rec["advice"]
            )
        elif kind == "Launched":
            out.launches.append({k: rec.get(k) for k in ("number", "pid", "reason")})
        elif kind == "EvaluationFailed" and rec.get("iteration") is not None:
            out.unscored[int(rec["iteration"])] = str(rec.get("error"))
        out.tune.on_record(rec)
        event = from_record(rec)
        if event is not None:
            out.history = out.history.add(event)
            if isinstance(event, MapResult) and event.iteration is not None:
                out.unscored.pop(event.iteration, None)
    return out


def last_launch(job_dir: Path) -> launch.LaunchHandle:
    """The launch `launch.json` records (pid and start time of its wrapper)."""
    path = job_dir / "launch.json"
    try:
        return launch.LaunchHandle.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as e:
        raise AdoptError(f"{path}: cannot read the launch record ({e})") from None
