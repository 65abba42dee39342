"""Completed saves copied into `snapshots/`, each with the metadata retention and the report read.

The runner and `Stopping` decide *which* saves to keep (the one a stop waits for, darknet's new
`_best`, one the policy wants scored, the last and final weights); the `Keeper` copies them, a
245 MB copy in a task of its own so the job's loop goes on reading darknet.log, and writes what
is known of each: its iteration, the cfg's hash, the average loss there, its mAP once scored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Coroutine
from typing import Any

from supervisor.atomicio import json_safe
from supervisor.runtime.scoring import ScoringQueue
from supervisor.runtime.snapshots import SnapshotError, SnapshotStore
from supervisor.runtime.stopping import Publish, Save
from supervisor.training.events import MapResult
from supervisor.training.history import Evaluation, History


def evaluation_at(history: History, iteration: int) -> Evaluation | None:
    """The latest valid evaluation of the weights of `iteration`, if any."""
    for e in reversed(history.evaluations):
        if e.iteration == iteration and e.valid:
            return e
    return None


class Keeper:
    """Takes completed saves as snapshots of their iteration.

    Parameters:
        store: the job's `snapshots/`.
        scoring: where a snapshot to be scored is queued (its claim released if the copy fails).
        publish: where `SnapshotTaken` and `SnapshotFailed` records go.
        history: the job's history now (the runner replaces it on every event).
        cfg_hash: the job's cfg hash, in every snapshot's metadata.
    """

    def __init__(
        self,
        store: SnapshotStore,
        scoring: ScoringQueue,
        publish: Publish,
        history: Callable[[], History],
        *,
        cfg_hash: str,
    ) -> None:
        self.store = store
        self._scoring = scoring
        self._publish = publish
        self._history = history
        self._cfg_hash = cfg_hash
        self._tasks: set[asyncio.Task[None]] = set()

    def keep(self, save: Save, *, score: bool = False) -> None:
        """`take` in a task of its own; `wait` waits for them."""
        self._spawn(self.take(save, score=score))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self, timeout: float | None = None) -> None:
        """Until the copies under way are done (or `timeout` seconds passed)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def take(self, save: Save, *, score: bool = False) -> None:
        """Copy a completed save to snapshots/ (and queue it for scoring)."""
        new = not self.store.has(save.iteration)
        try:
            dest = await self.store.take(save.path, save.iteration)
        except SnapshotError as e:
            self._publish("SnapshotFailed", iteration=save.iteration, error=str(e))
            self._scoring.release(save.iteration)
            return
        if new:
            self._publish("SnapshotTaken", iteration=save.iteration, path=dest)
        self.write_meta(save.iteration, evaluation_at(self._history(), save.iteration))
        if score:
            self._scoring.put(save.iteration, dest)

    def write_meta(self, it: int, ev: Evaluation | None, m: MapResult | None = None) -> None:
        history = self._history()
        avg = history.avg_loss_at(it)
        meta: dict[str, Any] = {
            "iteration": it,
            "cfg_hash": self._cfg_hash,
            "time": time.time(),
            "avg_loss": avg,
        }
        m = m or (ev.result if ev else None)
        if m is not None:
            meta.update(
                map=m.map,
                valid=m.valid,
                iou_threshold=m.iou_threshold,
                per_class=[dataclasses.asdict(c) for c in m.per_class],
                average_iou=m.average_iou,
                precision=m.precision,
                recall=m.recall,
            )
        self.store.update_meta(it, json_safe(meta))
