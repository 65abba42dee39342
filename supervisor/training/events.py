"""Typed events: what darknet printed (or what the runner observed), as plain immutable values.

The parser (`supervisor.darknet.logparse`) produces these from log lines; the live runner adds
its own (launches, clock ticks, evaluations it computed). The history and the stop policy
consume them. Nothing here does I/O.

Conventions: mAP, AP, precision, recall, F1 and IoU are fractions in [0, 1]. `line` is the
1-based line number in the log the event came from (0 when it did not come from a log line).
`time` is wall-clock seconds since the epoch when the runner knows it; a replayed log has none.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Literal

Flavour = Literal["pjreddie", "alexeyab", "hankai"]
FLAVOURS: tuple[Flavour, ...] = ("pjreddie", "alexeyab", "hankai")


def is_finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


@dataclass(frozen=True, slots=True)
class Iteration:
    """One per-iteration line (facts §1).

    `loss` and `avg_loss` may be NaN or infinite: darknet prints `-nan`/`inf` and the policy's
    divergence rule needs to see them. `seconds`, `images`, `hours_left` are None when the
    flavour's line lacks them (hank-ai prints durations, old AlexeyAB no hours left).
    """

    iteration: int
    loss: float
    avg_loss: float
    rate: float
    seconds: float | None = None
    images: int | None = None
    hours_left: float | None = None
    line: int = 0
    time: float | None = None

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss) and math.isfinite(self.avg_loss)


@dataclass(frozen=True, slots=True)
class ClassAP:
    """One class's line of an mAP evaluation (`class_id = 0, name = helmet, ap = 81.23% …`)."""

    class_id: int
    name: str
    ap: float
    tp: int | None = None
    fp: int | None = None


@dataclass(frozen=True, slots=True)
class MapResult:
    """One completed mAP evaluation, printed by darknet (`-map`) or computed by the supervisor.

    `iteration` is the iteration printed just before the evaluation (None when no iteration
    line preceded it, e.g. a Colab tail that starts inside an evaluation). `valid` is False for
    values no evaluation can produce (NaN, inf, a 283-digit number): such a result is recorded,
    shown, and never chosen as a best.
    """

    iteration: int | None
    map: float
    valid: bool = True
    iou_threshold: float | None = None
    per_class: tuple[ClassAP, ...] = ()
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    average_iou: float | None = None
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    conf_thresh: float | None = None
    source: Literal["darknet", "supervisor"] = "darknet"
    weights: str | None = None
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class LayerIoU:
    """Region/YOLO layer IoU lines of one iteration, aggregated (facts §3).

    `mean_iou` is the count-weighted mean over the layers that saw objects (NaN layers with
    count 0 are left out); None when no layer saw an object in that iteration.
    """

    iteration: int
    mean_iou: float | None
    count: int
    layers: int
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class WeightsSaved:
    """`Saving weights to <path>`: printed *before* the file is written (facts §4)."""

    path: str
    iteration: int | None
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class Resized:
    """`Resizing` followed by a new network input size (random=1)."""

    width: int | None
    height: int | None
    iteration: int | None
    line: int = 0
    time: float | None = None


GpuErrorKind = Literal["out_of_memory", "cuda", "cudnn", "no_device"]


@dataclass(frozen=True, slots=True)
class GpuError:
    """A CUDA/cuDNN failure (facts §6). `kind` says which; out-of-memory is recoverable."""

    kind: GpuErrorKind
    message: str
    iteration: int | None
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class FatalError:
    """A line that means darknet is about to end abnormally (`Couldn't open file`, assert …)."""

    message: str
    iteration: int | None
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class NanLoss:
    """An iteration whose loss or avg loss is NaN/inf: a divergence signal."""

    iteration: int
    loss: float
    avg_loss: float
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class Launch:
    """The supervisor started darknet (one marker line per launch in darknet.log)."""

    number: int
    argv: tuple[str, ...] = ()
    line: int = 0
    time: float | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """The runner's clock: lets time budgets fire while darknet prints nothing."""

    time: float
    line: int = 0


@dataclass(frozen=True, slots=True)
class IterationsRepeated:
    """Iteration numbers went backwards (a resume repeats iterations since the last save, or
    a replayed log); the history keeps the later value per iteration (DESIGN "Conventions")."""

    from_iteration: int
    to_iteration: int
    line: int = 0
    time: float | None = None


Event = (
    Iteration
    | MapResult
    | LayerIoU
    | WeightsSaved
    | Resized
    | GpuError
    | FatalError
    | NanLoss
    | Launch
    | Tick
    | IterationsRepeated
)


@dataclass(frozen=True, slots=True, eq=False)
class IterationRun:
    """Consecutive plain iteration lines in columns: a bulk form of their `Iteration` events.

    A replay of a big log spends most of its time on these lines (issue 14: 3.1 M of them in
    200 MB), so the parser's bulk reading (`LogParser.feed_runs`) gives a stretch of them as
    columns instead of one object per line, and `History.add_run` folds it in one step.
    Invariants (the parser guarantees them, `History.add_run` relies on them): iteration
    numbers strictly increase; loss and avg loss are finite; each line gives exactly one
    `Iteration` event and no other (no NaN, no region IoU, no backwards jump). `saves[j]` is a
    `Saving weights to` line read after entry `saves_at[j] - 1` and before entry `saves_at[j]`
    (pjreddie saves every 100 iterations: a run holds them rather than ending at each); entry
    `k` is line `first_line + k` plus the saves before it. Only what a replay reads on every
    line is converted: the avg loss and the seconds; the rate stays text (`rate_runs`), and
    `iteration_at(k)` reads the whole event from the line's text with `read` (the parser's own
    reading of it).
    """

    iterations: Sequence[int]
    avg_loss: list[float]  # lists, not arrays: `min`, slices and sums box no float
    rates: Sequence[str]
    seconds: list[float]
    lines: Sequence[str]
    first_line: int
    read: Callable[[str, int], Iteration]
    saves_at: Sequence[int] = ()  # ascending, each in 1 … len - 1
    saves: Sequence[WeightsSaved] = ()

    def __len__(self) -> int:
        return len(self.iterations)

    def iteration_at(self, k: int) -> Iteration:
        """The event of entry `k` (negative counts from the end), as the parser gives it."""
        if k < 0:
            k += len(self.iterations)
        return self.read(self.lines[k], self.first_line + k + bisect_right(self.saves_at, k))

    def saves_in(self, start: int, stop: int) -> Sequence[WeightsSaved]:
        """The saves read with entries `start`…`stop - 1`: those before each of them."""
        at = self.saves_at
        if not at:
            return ()
        return self.saves[bisect_left(at, start) : bisect_left(at, stop)]

    def events(self, start: int = 0, stop: int | None = None) -> Iterator[Iteration | WeightsSaved]:
        """The events of entries `start` to `stop` (exclusive) in the order the lines gave
        them: each entry's `Iteration`, after the saves read before it."""
        at, saves = self.saves_at, self.saves
        j = bisect_left(at, start)
        for k in range(start, len(self) if stop is None else stop):
            while j < len(at) and at[j] == k:
                yield saves[j]
                j += 1
            yield self.iteration_at(k)

    def rate_runs(self) -> Iterator[tuple[int, int, float]]:
        """(first entry, last entry, rate) of each stretch of entries printing one rate.

        Grouped by the printed text, so that only one number per stretch is converted; two
        texts of one value (`-0.000000`, `0.000000`) give two stretches of equal rates.
        """
        rates = self.rates
        n = len(rates)
        if n and rates.count(rates[0]) == n:  # one rate all along: the usual case, no groupby
            yield 0, n - 1, float(rates[0])
            return
        k = 0
        for text, same in groupby(rates):
            size = len(list(same))
            yield k, k + size - 1, float(text)
            k += size


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What a parser learnt about the log as a whole (flavour guess and counts)."""

    flavour: Flavour | None
    lines: int = 0
    counts: dict[str, int] = field(default_factory=dict)
