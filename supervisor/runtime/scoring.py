"""The supervisor's own evaluations of one job: snapshots queued and scored one at a time.

The runner decides *what* to score (the policy's `Evaluate`, the final and the last weights)
and what a score means (a `MapResult` event, the snapshot's metadata); this queue holds *how*:
one `detector valid` at a time — it shares the job's GPU (or CPU) with the training, and two
at once would double the memory an evaluation takes from it — each with a timeout that learns
from the evaluations before it, and the bookkeeping report.json shows (what is still unscored,
and why).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from supervisor.darknet.cfg import CfgError
from supervisor.darknet.evaluate import EvaluationError
from supervisor.training.events import MapResult

log = structlog.get_logger("trainsup.scoring")

# (iteration, weights, timeout in seconds) → the score of those weights.
Score = Callable[[int, Path, float], Awaitable[MapResult]]

NOT_SCORED_YET = "not scored yet"


class ScoringQueue:
    """Snapshots waiting for their mAP, scored in order, one at a time.

    Parameters:
        score: runs the evaluation of one snapshot (`evaluate_weights` with the job's files).
        on_scored: called with each result, on the event loop.
        on_failed: called with (iteration, error) when an evaluation fails or times out; the
            snapshot stays unscored (never pruned by retention) and the job goes on.
        first_timeout: seconds the first evaluation may take (it may load cuDNN, build the
            network, read every valid image cold).
        timeout_floor: later ones get max(timeout_floor, 5 × the longest so far): a hung
            `detector valid` ends, a slow but working one is not cut.

    Attributes:
        evaluating: iterations claimed for scoring (being copied, queued or running).
        unscored: iteration → why it has no score (`NOT_SCORED_YET` while queued, else the
            error); report.json lists them.
        errors: every evaluation's error, in order.
    """

    def __init__(
        self,
        score: Score,
        on_scored: Callable[[int, MapResult], None],
        on_failed: Callable[[int, str], None],
        *,
        first_timeout: float,
        timeout_floor: float,
    ) -> None:
        self.score = score
        self.on_scored = on_scored
        self.on_failed = on_failed
        self.first_timeout = first_timeout
        self.timeout_floor = timeout_floor
        self.evaluating: set[int] = set()
        self.unscored: dict[int, str] = {}
        self.errors: list[str] = []
        self._seconds: list[float] = []
        self._queue: asyncio.Queue[tuple[int, Path]] = asyncio.Queue()

    def claim(self, iteration: int) -> bool:
        """Mark `iteration` as to be scored; False when it already is."""
        if iteration in self.evaluating:
            return False
        self.evaluating.add(iteration)
        return True

    def release(self, iteration: int) -> None:
        """A claimed snapshot that could not be taken: it may be claimed again."""
        self.evaluating.discard(iteration)

    def put(self, iteration: int, weights: Path) -> None:
        self.unscored[iteration] = NOT_SCORED_YET
        self._queue.put_nowait((iteration, weights))

    def timeout(self) -> float:
        if not self._seconds:
            return self.first_timeout
        return max(self.timeout_floor, 5 * max(self._seconds))

    async def run(self) -> None:
        """Score what is queued, for as long as the job runs (the runner cancels it)."""
        while True:
            it, weights = await self._queue.get()
            started = time.monotonic()
            try:
                result = await self.score(it, weights, self.timeout())
                self._seconds.append(time.monotonic() - started)
                self.unscored.pop(it, None)
                self.on_scored(it, result)
            except (EvaluationError, OSError, CfgError, ValueError) as e:
                self.unscored[it] = str(e)
                self.errors.append(str(e))
                log.warning("evaluation failed", iteration=it, error=str(e))
                self.on_failed(it, str(e))
            finally:
                self._queue.task_done()

    async def join(self, timeout: float) -> bool:
        """Wait until everything queued is scored; False when `timeout` came first."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            return False
        return True
