"""A stop decision carried out gracefully: darknet ends after a save is complete, never in one.

darknet prints `Saving weights to …` before it writes the file (facts §4), rewrites `_last` /
`.backup` every 100 iterations and saves in pairs, so "the newest weights" is a file that may be
half-written at any moment. `Stopping` follows each announced save until it is proven complete
(the file has the network's size and its header the iteration; or darknet moved on: its next
iteration line, its next save, its exit), has every completed save taken as a snapshot once a
stop is decided, and terminates darknet when the save that the stop waits for is kept, or when
the bounded wait for it is over (the report says which). The runner feeds it its events and
polls, and reads its state; the copying itself is the `Keeper`'s (`runtime/keeping.py`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from supervisor.darknet.weights import WeightsError, read_weights_header
from supervisor.runtime import launch
from supervisor.runtime.snapshots import SnapshotStore
from supervisor.training.history import History
from supervisor.training.policy import Stop

# The runner's logger: these lines are the job loop's, as they were before this module existed.
log = structlog.get_logger("trainsup.runner")


class Publish(Protocol):
    """The runner's `_publish`: one record of `kind` with `fields` on the job's bus."""

    def __call__(self, kind: str, **fields: Any) -> None: ...


@dataclass(slots=True)
class Save:
    """A save darknet announced: the file it writes and the iteration it saves."""

    path: Path
    iteration: int


class Stopping:
    """The job's stop decision, darknet's saves, and when to terminate darknet for the stop.

    Parameters:
        publish: where `Decision`, `SnapshotFailed` and `Terminated` records go.
        history: the job's history now (the runner replaces it on every event).
        store: the job's `snapshots/` (there once the job dir is read; asked for only then):
            the size a complete save has, and whether a save was taken.
        keep: takes a completed save as a snapshot, in a task of its own (`Keeper.keep`).
        darknet_best: the file name of darknet's `_best` weights while darknet's -map scores
            the job (it is copied before a later best overwrites it), else None.
        iterations_per_s: darknet's speed now, None while unknown (it sizes the save wait).
        save_wait: `RunnerConfig.save_wait`: the longest wait for a save after the decision;
            None = 150 iterations' time within [30 s, 600 s], for a time budget at most 5 %.
        grace: seconds between TERM and KILL.
        max_time: the job's time budget in seconds (None: none); a stop for it reports the
            overrun.
        job: the job's name, for the log.

    Attributes:
        decision: the stop decided (the first one counts), None while training goes on.
        kill_now: stop without waiting for a save (the newest complete one is still kept).
        terminated: darknet was signalled to end on purpose (for the stop, or by the runner
            after a second internal error): its end is not a failure to relaunch.
        end: what report.json says of how the stop went (waited, newest save, overrun).
        pending: the save announced and not yet proven complete.
        last_complete: the newest save proven complete.
    """

    def __init__(
        self,
        publish: Publish,
        history: Callable[[], History],
        store: Callable[[], SnapshotStore],
        keep: Callable[[Save], None],
        darknet_best: Callable[[], str | None],
        iterations_per_s: Callable[[], float | None],
        *,
        save_wait: float | None,
        grace: float,
        max_time: float | None,
        job: str,
    ) -> None:
        self._publish = publish
        self._history = history
        self._store = store
        self._keep = keep
        self._darknet_best = darknet_best
        self._iterations_per_s = iterations_per_s
        self._save_wait = save_wait
        self._grace = grace
        self._max_time = max_time
        self._job = job
        self.decision: Stop | None = None
        self._requested_at: float | None = None
        self.kill_now = False
        self.terminated = False
        self.end: dict[str, Any] = {}
        self.pending: Save | None = None
        self.last_complete: Save | None = None

    # --- the decision -------------------------------------------------------------------------

    def decide(self, d: Stop) -> None:
        if self.decision is not None:
            return
        self.decision = d
        self._requested_at = time.monotonic()
        self._publish("Decision", decision="stop", **dataclasses.asdict(d))
        log.info("stopping", job=self._job, rule=d.rule, reason=d.reason)
        if self.last_complete is not None and self.pending is None:
            # A stop decided right after a completed save keeps that save.
            self._keep(self.last_complete)

    def restored(self, d: Stop) -> None:
        """A stop the events file recorded before a restart: its save wait starts again."""
        self.decision, self._requested_at = d, time.monotonic()

    def kill(self) -> None:
        self.kill_now = True

    # --- darknet's saves ----------------------------------------------------------------------

    def announced(self, save: Save) -> None:
        """A `Saving weights` line: darknet writes one file at a time, so the previous file is
        complete (AlexeyAB saves _best and then _last after one iteration)."""
        self.complete(proof="next save")
        self.pending = save

    def drop_pending(self) -> None:
        """A new launch: the ended one's announced save is never proven; the relaunch resumed
        from the newest complete weights on disk."""
        self.pending = None

    def check_pending(self) -> None:
        """A save whose file already has the network's size and the iteration in its header is
        complete without waiting for darknet's next line."""
        save = self.pending
        if save is None:
            return
        store = self._store()
        size = store.expected_size
        if size is None:
            return
        try:
            if save.path.stat().st_size != size:
                return
            header = read_weights_header(save.path)
            # The store's batch and subdivisions: the runner keeps them the cfg's.
            if header.iteration(store.batch, store.subdivisions) != save.iteration:
                return  # still the previous save's content: darknet has not reopened it yet
        except (OSError, WeightsError, ValueError):
            return
        self.complete(proof="size")

    def complete(self, proof: str) -> None:
        """darknet printed `Saving weights` before writing (facts §4); the file is complete when
        it has the network's size, or darknet moved on (`proof`: its next iteration line, its
        next save, its exit)."""
        save = self.pending
        if save is None:
            return
        if proof == "iteration" and self._history().iteration <= save.iteration:
            return
        self.pending = None
        store = self._store()
        try:
            size = save.path.stat().st_size
        except OSError:
            return
        if store.expected_size is None and proof != "exit":
            # No layer model for this cfg: darknet moving on proves this save was whole.
            store.expected_size = size
        elif store.expected_size is not None and size != store.expected_size:
            self._publish(
                "SnapshotFailed",
                iteration=save.iteration,
                error=f"{save.path.name} has {size} of {store.expected_size} bytes",
            )
            return
        self.last_complete = save
        if self.decision is not None and not self.terminated:
            self._keep(save)
        best = self._history().best
        darknet_best = self._darknet_best()
        if (
            darknet_best is not None
            and save.path.name == darknet_best
            and best is not None
            and best.iteration == save.iteration
        ):
            # darknet's -map found a new best and wrote _best.weights: copy it now, before a
            # later best overwrites it, so retention can keep (and rank) it.
            self._keep(save)

    def saving(self) -> bool:
        """darknet saves in pairs (pjreddie `.backup` then `_N`; AlexeyAB `_best` or `_N` then
        `_last`), and the second `Saving weights` line may not have been read yet when the
        first file is complete: only an iteration line after the save proves darknet is done
        saving and training again, with the next save ~100 iterations away."""
        save = self.last_complete
        return self.pending is not None or (
            save is not None and self._history().iteration <= save.iteration
        )

    def save_wait(self, stop: Stop | None) -> float:
        """The longest wait, in seconds, for a save after `stop` (None: not for a stop)."""
        if self._save_wait is not None:
            return self._save_wait
        ips = self._iterations_per_s()
        wait = min(600.0, max(30.0, 150 / ips)) if ips else 600.0
        budget = self._max_time
        if stop is not None and stop.rule == "max_time" and budget:
            # A time budget is a promise about GPU time: overrun it by at most 5 %.
            wait = min(wait, max(30.0, 0.05 * budget))
        return wait

    # --- the end of the launch ----------------------------------------------------------------

    async def act(self, handle: launch.LaunchHandle) -> None:
        """Terminate darknet once the stop's save is kept and no save is in progress, at once
        for a kill, or when the save wait is over."""
        if self.terminated or (self.decision is None and not self.kill_now):
            return
        stop = self.decision
        save = self.last_complete
        saved = (
            stop is not None
            and save is not None
            and save.iteration >= stop.iteration
            and self._store().has(save.iteration)
        )
        in_progress = self.saving()
        waited = time.monotonic() - (self._requested_at or time.monotonic())
        limit = self.save_wait(stop)
        if not (self.kill_now or (saved and not in_progress) or waited > limit):
            return
        if not self.kill_now and not saved:
            self.end["no_save_after_s"] = round(limit)
        self.terminated = True
        how = await launch.terminate(handle, 0.0 if self.kill_now else self._grace)
        kept = self.last_complete.iteration if self.last_complete else None
        history = self._history()  # after the wait: evaluations may have come meanwhile
        self.end.update(
            stopped_after_iteration=history.iteration,
            waited_s=round(waited, 1),
            newest_save=kept,
        )
        budget = self._max_time
        if stop is not None and stop.rule == "max_time" and budget:
            self.end["over_budget_s"] = round(max(0.0, history.elapsed - budget), 1)
        self._publish("Terminated", how=how, waited_s=round(waited, 1), after_save=saved)
