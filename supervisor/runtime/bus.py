"""What one job's runner publishes, and the small interface its listeners implement.

The runner is one loop (DESIGN "Decisions" 9): it publishes every event and decision as a
record, the same JSON object it appends to `events.jsonl`, and the rest listens — the events
file, the progress line, chat notifications, later the daemon's store and metrics. A record is
a plain dict: `{"type": <record type>, "time": <unix seconds>, ...fields}`, JSON-safe (no NaN,
paths as strings), so a listener in another process (the daemon mirroring a job dir) reads the
same thing from `events.jsonl` as a listener in this one gets from the bus.

Record types:
    JobStarted      {job, flavour, argv, max_iterations, max_time_s, gpus, attach} once per
                    runner start (also after `--attach`)
    Launch          a darknet launch began (from the wrapper's marker line): {number, argv}
    Iteration       one iteration line: {iteration, loss, avg_loss, rate, seconds, images, …}
    MapResult       an evaluation: {iteration, map, valid, per_class, source, …}
    NewBest         {iteration, map, previous}: the best valid mAP improved
    WeightsSaved    darknet printed `Saving weights to …`: {path, iteration}
    SnapshotTaken   a completed save was copied to snapshots/: {iteration, path, size}
    SnapshotFailed  {iteration, error}
    EvaluationFailed {iteration, error}
    Decision        {decision: "stop", rule, reason, iteration, advice, numbers}
    Terminated      darknet's group was signalled: {how: term|kill, waited_s, after_save, …}
    Attached        `--attach`: {pid, offset} (still running) or {resumed_from, iteration}
    InternalError   {error, where}: the supervisor failed; a graceful stop follows
    Finished        {status, cause}: the job ended; report.json is written
    GpuSample       {gpu, name, used_mib, total_mib, process_mib, util, temp, power, launch,
                    peak_mib}: GPU memory on a schedule (`runtime/gpu_sampler.py`)
    Diagnosis       the live diagnosis changed (`runtime/diagnosis.py`)
    TuneTried       {subdivisions, why, launch}: a value `memory.tune` never tunes to again
    GpuError, FatalError, NanLoss, Resized, LayerIoU, IterationsRepeated: parser events as
                    their dataclasses in `training/events.py`
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

Record = dict[str, Any]

log = structlog.get_logger("trainsup.bus")


class Listener(Protocol):
    """Receives every record, synchronously, in order. It must not block: slow work (HTTP,
    disk beyond an append) goes to a queue of its own."""

    def __call__(self, record: Record, /) -> None: ...


class Bus:
    """Fans records out to listeners.

    An *essential* listener's failure propagates to the publisher (the events file: a record
    that cannot be written must stop the job gracefully, not vanish); any other listener's
    failure is logged once and that listener is dropped, so a broken notifier never stops a
    training.
    """

    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, bool]] = []

    def subscribe(self, listener: Listener, *, essential: bool = False) -> None:
        self._listeners.append((listener, essential))

    def publish(self, record: Record) -> None:
        for listener, essential in list(self._listeners):
            if essential:
                listener(record)
                continue
            try:
                listener(record)
            except Exception as e:  # a listener's bug must not end the training
                log.warning("listener dropped", listener=repr(listener), error=str(e))
                self._listeners.remove((listener, essential))

    def demote(self, listener: Listener) -> None:
        """Make an essential listener optional (after its failure stopped the job once, the
        graceful stop that follows must not fail on it again)."""
        self._listeners = [(x, False if x is listener else e) for x, e in self._listeners]
