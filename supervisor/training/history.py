"""The training history: an immutable value built from events, read by the stop policy.

`History.add(event)` returns a new history and leaves the old one untouched, so a decision can
be replayed from any snapshot. The per-iteration series would make copying O(n) per event, so it
lives in an append-only `LossSeries` that snapshots share: a snapshot sees only its first `n`
entries, and a writer that is not at the tip (an older snapshot, or a resume that repeats
iterations) copies the prefix before it writes. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field, replace

from supervisor.training.events import (
    Event,
    FatalError,
    GpuError,
    Iteration,
    IterationsRepeated,
    LayerIoU,
    MapResult,
    NanLoss,
    WeightsSaved,
)

# Window (in iterations) for "the avg loss around an evaluation". darknet's avg loss is already
# an EMA over ~10 iterations; 100 iterations spans one save interval and smooths the noisy
# curves in the shared logs (e.g. 25, wild swings) without hiding a real trend.
LOSS_WINDOW = 100


@dataclass(slots=True)
class _Arrays:
    iterations: list[int] = field(default_factory=list)
    avg_loss: list[float] = field(default_factory=list)
    # Prefix sums over finite avg-loss values, so any window mean is O(log n).
    cum: list[float] = field(default_factory=lambda: [0.0])
    cnt: list[int] = field(default_factory=lambda: [0])


@dataclass(frozen=True, slots=True)
class LossSeries:
    """Iteration numbers and avg loss, one entry per iteration, ascending by iteration."""

    _a: _Arrays = field(default_factory=_Arrays)
    n: int = 0

    def append(self, iteration: int, avg_loss: float) -> LossSeries:
        a = self._a
        keep = self.n
        if keep and a.iterations[keep - 1] >= iteration:
            # A resumed launch repeats iterations since its last save: the later value wins.
            keep = bisect_left(a.iterations, iteration, 0, keep)
        if keep != len(a.iterations):
            a = _Arrays(
                a.iterations[:keep], a.avg_loss[:keep], a.cum[: keep + 1], a.cnt[: keep + 1]
            )
        finite = math.isfinite(avg_loss)
        a.iterations.append(iteration)
        a.avg_loss.append(avg_loss)
        a.cum.append(a.cum[-1] + (avg_loss if finite else 0.0))
        a.cnt.append(a.cnt[-1] + (1 if finite else 0))
        return LossSeries(a, keep + 1)

    def __len__(self) -> int:
        return self.n

    @property
    def last_iteration(self) -> int | None:
        return self._a.iterations[self.n - 1] if self.n else None

    def mean(self, first: int, last: int) -> float | None:
        """Mean finite avg loss over iterations in [first, last]; None when there is none."""
        a = self._a
        lo = bisect_left(a.iterations, first, 0, self.n)
        hi = bisect_left(a.iterations, last + 1, 0, self.n)
        count = a.cnt[hi] - a.cnt[lo]
        return (a.cum[hi] - a.cum[lo]) / count if count else None

    def points(self) -> list[tuple[int, float]]:
        a = self._a
        return list(zip(a.iterations[: self.n], a.avg_loss[: self.n], strict=True))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An mAP result placed on the curve, with the training loss around it."""

    iteration: int
    map: float
    valid: bool
    avg_loss: float | None
    result: MapResult


@dataclass(frozen=True, slots=True)
class History:
    """Everything the policy may look at, as of one moment of a training.

    Attributes:
        loss: avg loss per iteration (the later launch's value where iterations repeat).
        last: the latest iteration line (None before the first).
        evaluations: every mAP evaluation in order, invalid ones included (never a best).
        best: the best valid evaluation; on ties the earliest wins.
        min_avg_loss / min_avg_loss_iteration: the lowest finite avg loss so far.
        nan_streak: consecutive iteration lines with a non-finite avg loss.
        saves: every `Saving weights to` line.
        gpu_errors / fatal_errors: what darknet reported before dying.
        repeats: how many times iteration numbers went backwards.
        first_time / last_time: wall clock of the first and latest timed event.
        seconds: sum of darknet's per-iteration seconds (the clock of a replayed log).
        iou: the latest aggregated region/yolo IoU.
    """

    loss: LossSeries = field(default_factory=LossSeries)
    last: Iteration | None = None
    first_iteration: int | None = None
    iteration_lines: int = 0
    evaluations: tuple[Evaluation, ...] = ()
    best: Evaluation | None = None
    min_avg_loss: float | None = None
    min_avg_loss_iteration: int | None = None
    nan_streak: int = 0
    nan_lines: int = 0
    saves: tuple[WeightsSaved, ...] = ()
    gpu_errors: tuple[GpuError, ...] = ()
    fatal_errors: tuple[FatalError, ...] = ()
    repeats: int = 0
    first_time: float | None = None
    last_time: float | None = None
    seconds: float = 0.0
    iou: LayerIoU | None = None

    @property
    def iteration(self) -> int:
        """The latest iteration darknet reported (0 before the first line)."""
        return self.last.iteration if self.last else 0

    @property
    def elapsed(self) -> float:
        """Training time so far: wall clock when events carry it, else darknet's own seconds."""
        if self.first_time is not None and self.last_time is not None:
            return self.last_time - self.first_time
        return self.seconds

    def loss_around(self, iteration: int, window: int = LOSS_WINDOW) -> float | None:
        """Mean avg loss over the `window` iterations up to `iteration`."""
        return self.loss.mean(iteration - window + 1, iteration)

    def evaluated(self, iteration: int) -> bool:
        return any(e.iteration == iteration for e in self.evaluations)

    def add(self, event: Event) -> History:
        t = getattr(event, "time", None)
        h = self
        if t is not None:
            h = replace(h, first_time=t if h.first_time is None else h.first_time, last_time=t)
        match event:
            case Iteration():
                return h._add_iteration(event)
            case MapResult():
                return h._add_evaluation(event)
            case WeightsSaved():
                return replace(h, saves=(*h.saves, event))
            case GpuError():
                return replace(h, gpu_errors=(*h.gpu_errors, event))
            case FatalError():
                return replace(h, fatal_errors=(*h.fatal_errors, event))
            case LayerIoU():
                return replace(h, iou=event)
            case IterationsRepeated():
                return replace(h, repeats=h.repeats + 1)
            case NanLoss():
                return h  # the Iteration event that comes with it carries the NaN already
            case _:
                return h

    def _add_iteration(self, it: Iteration) -> History:
        finite_avg = math.isfinite(it.avg_loss)
        new_min = finite_avg and (self.min_avg_loss is None or it.avg_loss < self.min_avg_loss)
        return replace(
            self,
            loss=self.loss.append(it.iteration, it.avg_loss),
            last=it,
            first_iteration=it.iteration if self.first_iteration is None else self.first_iteration,
            iteration_lines=self.iteration_lines + 1,
            min_avg_loss=it.avg_loss if new_min else self.min_avg_loss,
            min_avg_loss_iteration=it.iteration if new_min else self.min_avg_loss_iteration,
            nan_streak=0 if finite_avg else self.nan_streak + 1,
            nan_lines=self.nan_lines + (0 if it.finite else 1),
            seconds=self.seconds + (it.seconds if it.seconds and it.seconds > 0 else 0.0),
        )

    def _add_evaluation(self, m: MapResult) -> History:
        iteration = m.iteration if m.iteration is not None else self.iteration
        valid = m.valid and math.isfinite(m.map) and 0.0 <= m.map <= 1.0
        ev = Evaluation(iteration, m.map, valid, self.loss_around(iteration), m)
        better = valid and (self.best is None or m.map > self.best.map)
        return replace(
            self,
            evaluations=(*self.evaluations, ev),
            best=ev if better else self.best,
        )


def build(events: list[Event] | tuple[Event, ...]) -> History:
    h = History()
    for e in events:
        h = h.add(e)
    return h
