"""`Stopping` and `Keeper` alone: when darknet's announced save counts as complete, which saves a
stop keeps, how long it waits — on real files in a real `snapshots/` (the runner tests drive the
same machinery with real darknet)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from supervisor.runtime.keeping import Keeper
from supervisor.runtime.scoring import ScoringQueue
from supervisor.runtime.snapshots import SnapshotStore
from supervisor.runtime.stopping import Save, Stopping
from supervisor.training.events import Iteration, MapResult
from supervisor.training.history import History
from supervisor.training.policy import Stop
from tests.helpers import write_weights

BATCH = 64
BODY = 64
SIZE = 20 + BODY  # a complete save of the test network: 64-bit header, then its body


class Job:
    """What a runner gives the two: its records, its history, its store and keeper."""

    def __init__(
        self, root: Path, *, darknet_best: str | None = None, max_time: float | None = None
    ) -> None:
        self.records: list[dict[str, Any]] = []
        self.history = History()
        self.store = SnapshotStore(root / "snapshots", BATCH, 1, SIZE)
        self.scoring = ScoringQueue(
            self._score, lambda it, m: None, lambda it, e: None,
            first_timeout=1.0, timeout_floor=1.0,
        )  # fmt: skip
        self.keeper = Keeper(
            self.store, self.scoring, self.publish, lambda: self.history, cfg_hash="c0ffee"
        )
        self.ips: float | None = None
        self.stopping = Stopping(
            self.publish,
            lambda: self.history,
            lambda: self.store,
            lambda save: self.keeper.keep(save),
            lambda: darknet_best,
            lambda: self.ips,
            save_wait=None,
            grace=1.0,
            max_time=max_time,
            job="test",
        )

    async def _score(self, it: int, weights: Path, timeout_s: float) -> MapResult:
        raise AssertionError("nothing is scored here")

    def publish(self, kind: str, **fields: Any) -> None:
        self.records.append({"type": kind, **fields})

    def kinds(self) -> list[str]:
        return [r["type"] for r in self.records]

    def iterate(self, it: int) -> None:
        # As the runner does: the save is judged before the line joins the history.
        self.stopping.complete(proof="iteration")
        self.history = self.history.add(Iteration(it, 1.0, 1.0, 0.001))


def _stop(at: int, rule: str = "user") -> Stop:
    return Stop(rule, "test", at, {}, "")


def test_a_save_with_full_size_and_its_header_is_complete_before_the_next_line(
    tmp_path: Path,
) -> None:
    job = Job(tmp_path)
    job.iterate(100)
    w = write_weights(tmp_path / "yolo_last.weights", 100 * BATCH, body=BODY - 10)
    job.stopping.announced(Save(w, 100))
    job.stopping.check_pending()
    assert job.stopping.pending is not None  # short: darknet is still writing it
    assert job.stopping.saving()
    write_weights(w, 99 * BATCH, body=BODY)
    job.stopping.check_pending()
    assert job.stopping.pending is not None  # full size, but the previous save's header
    write_weights(w, 100 * BATCH, body=BODY)
    job.stopping.check_pending()
    assert job.stopping.pending is None
    assert job.stopping.last_complete == Save(w, 100)
    assert job.stopping.saving()  # darknet may write the pair's second file: not yet trained on
    job.iterate(101)
    assert not job.stopping.saving()


def test_a_stop_keeps_the_completed_save_and_the_ones_after(tmp_path: Path) -> None:
    async def go() -> Job:
        job = Job(tmp_path)
        job.iterate(100)
        w = write_weights(tmp_path / "yolo_last.weights", 100 * BATCH, body=BODY)
        job.stopping.announced(Save(w, 100))
        job.iterate(101)  # the pair's second save may come after this line
        assert job.stopping.pending is not None
        job.iterate(102)  # darknet trains on: the save was whole
        assert job.stopping.last_complete == Save(w, 100)
        assert job.kinds() == []  # no stop yet: nothing copied
        job.stopping.decide(_stop(101))
        job.stopping.decide(_stop(101, "plateau"))  # the first decision counts
        await job.keeper.wait()
        w2 = write_weights(tmp_path / "yolo_200.weights", 200 * BATCH, body=BODY)
        job.stopping.announced(Save(w2, 200))
        job.stopping.complete(proof="exit")
        await job.keeper.wait()
        return job

    job = asyncio.run(go())
    assert job.kinds() == ["Decision", "SnapshotTaken", "SnapshotTaken"]
    assert job.records[0]["rule"] == "user"
    assert job.stopping.decision is not None and job.stopping.decision.rule == "user"
    assert job.store.iterations() == [100, 200]
    meta = json.loads((tmp_path / "snapshots" / "100.json").read_text())
    assert (meta["iteration"], meta["cfg_hash"], meta["avg_loss"]) == (100, "c0ffee", 1.0)


def test_a_save_of_the_wrong_size_is_never_the_newest_complete_one(tmp_path: Path) -> None:
    job = Job(tmp_path)
    job.iterate(100)
    w = write_weights(tmp_path / "yolo_last.weights", 100 * BATCH, body=BODY - 8)
    job.stopping.announced(Save(w, 100))
    job.stopping.announced(Save(tmp_path / "yolo_best.weights", 100))  # "next save" proof
    assert job.stopping.last_complete is None
    assert job.kinds() == ["SnapshotFailed"]
    assert f"{SIZE - 8} of {SIZE} bytes" in job.records[0]["error"]


def test_darknets_new_best_is_copied_before_a_later_best_overwrites_it(tmp_path: Path) -> None:
    async def go(darknet_best: str | None) -> Job:
        root = tmp_path / ("darknet" if darknet_best else "own")
        job = Job(root, darknet_best=darknet_best)
        job.iterate(100)
        m = MapResult(iteration=100, map=0.5, iou_threshold=0.5)
        job.history = job.history.add(m)
        w = write_weights(root / "yolo_best.weights", 100 * BATCH, body=BODY)
        job.stopping.announced(Save(w, 100))
        job.iterate(101)
        job.iterate(102)
        await job.keeper.wait()
        return job

    assert asyncio.run(go("yolo_best.weights")).store.iterations() == [100]
    # The supervisor scores the job itself: darknet's _best is not its ranking, not copied.
    assert asyncio.run(go(None)).store.iterations() == []


def test_the_save_wait_follows_the_speed_and_a_time_budget(tmp_path: Path) -> None:
    job = Job(tmp_path)
    assert job.stopping.save_wait(_stop(1)) == 600.0  # speed unknown
    job.ips = 1.0
    assert job.stopping.save_wait(_stop(1)) == 150.0  # 150 iterations
    job.ips = 100.0
    assert job.stopping.save_wait(_stop(1)) == 30.0  # never under 30 s
    budgeted = Job(tmp_path / "budget", max_time=1000.0)
    budgeted.ips = 1.0
    assert budgeted.stopping.save_wait(_stop(1, "max_time")) == 50.0  # 5 % of the budget
    assert budgeted.stopping.save_wait(_stop(1)) == 150.0  # another rule: not bound by it
