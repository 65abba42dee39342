"""The run's shape from the cfg: warm-up, learning-rate steps, length.

A live job reads it from the cfg. A replayed log may come without its cfg: `infer_schedule`
then reconstructs it from the learning rate darknet prints on every iteration line (it rises
during burn_in and falls at each step), which is config, not outcome, so using it is fair;
max_batches, which no iteration line shows, comes from AlexeyAB's status line when the log holds
one (`<it>/<max>: loss=…`, `PrintedMaxBatches`), else is assumed only where the steps sit at
darknet's recipe (80 % and 90 % of it); `max_batches_from` says which. A cfg beats both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.training.events import Iteration


@dataclass(frozen=True, slots=True)
class Schedule:
    """[net] burn_in, steps, scales and max_batches of a run."""

    burn_in: int = 0
    steps: tuple[int, ...] = ()
    scales: tuple[float, ...] = ()
    max_batches: int | None = None
    inferred: bool = False
    # Where max_batches came from when no cfg said it, in words for the output ("" = the cfg,
    # or unknown when max_batches is None): an assumption must be shown, never silent.
    max_batches_from: str = ""

    @property
    def last_rate_drop(self) -> int | None:
        """The last step that lowers the learning rate (a scale below 1, or no scale given)."""
        drops = [s for i, s in enumerate(self.steps) if i >= len(self.scales) or self.scales[i] < 1]
        return max(drops) if drops else None


def infer_schedule(iterations: Iterable[Iteration]) -> Schedule:
    """Burn-in and steps as the printed learning rate shows them.

    burn_in: the first iteration at which the printed rate reaches its peak (only when the log shows
    the rate rising to it). Steps: iterations where the rate falls to at most 0.5× the previous
    line's rate and stays there (a one-line glitch is not a step).
    """
    rates: list[tuple[int, float]] = [
        (it.iteration, it.rate) for it in iterations if math.isfinite(it.rate) and it.rate > 0
    ]
    if not rates:
        return Schedule(inferred=True)
    peak = max(r for _, r in rates)
    burn_in = 0
    if rates[0][1] < peak:
        # Printed rates have 6 decimals, so the end of a power-4 warm-up may print the peak a
        # few iterations early; that is close enough to gate the rules.
        burn_in = next(i for i, r in rates if r >= peak)
    steps: list[int] = []
    scales: list[float] = []
    for k in range(1, len(rates)):
        (_, prev), (i, r) = rates[k - 1], rates[k]
        after = rates[k + 1][1] if k + 1 < len(rates) else r
        if r <= prev * 0.5 and after <= prev * 0.5 and i > burn_in:
            steps.append(i)
            scales.append(round(r / prev, 4))
    last = rates[-1][0]
    max_batches = recipe_max_batches(tuple(steps), last)
    return Schedule(
        burn_in=burn_in,
        steps=tuple(steps),
        scales=tuple(scales),
        max_batches=max_batches,
        inferred=True,
        max_batches_from=(
            f"assumed from the steps {steps[0]},{steps[1]} at 80 %/90 % of it (darknet's recipe)"
            if max_batches is not None
            else ""
        ),
    )


def recipe_max_batches(steps: tuple[int, ...], last_iteration: int) -> int | None:
    """max_batches when two steps sit where darknet's recipe puts them, 80 % and 90 % of it
    (AlexeyAB's README; most of the shared logs); None otherwise — one step, other ratios, or a
    log that ran past the value (then it was not the recipe).

    The rules that judge a share of the run (plateau patience, not_learning) need max_batches,
    which no log line of pjreddie's prints; a replay without the cfg assumes this one and
    says so.
    """
    if len(steps) != 2:
        return None
    first, second = steps
    guess = round(second / 0.9)
    # The printed rate may show a step an iteration late; 1 % of the run covers that.
    if abs(first - 0.8 * guess) > max(2.0, 0.01 * guess) or guess < last_iteration:
        return None
    return guess


# The start of `max_batches_from` for a value darknet printed itself (`format_analysis` tells it
# from an assumption by it).
STATUS_LINE_SOURCE = "printed by darknet's status line"


@dataclass(frozen=True, slots=True)
class PrintedMaxBatches:
    """max_batches as AlexeyAB's status line printed it (`<it>/<max>: loss=…`, facts §1).

    `iteration`/`max_batches`: the latest status line's; `values`: each max the log printed, in
    the order it first came (more than one: a run resumed with another cfg).
    """

    iteration: int
    max_batches: int
    values: tuple[int, ...] = ()

    @property
    def source(self) -> str:
        """What `max_batches_from` says of it."""
        said = f"{STATUS_LINE_SOURCE} ({self.iteration}/{self.max_batches})"
        if len(self.values) < 2:
            return said
        # The latest is the cfg the run ended with: a resume with another max_batches goes on
        # to the new one.
        return (
            f"{said}, the latest of the values it printed"
            f" ({', '.join(map(str, self.values))}): a resume with another cfg?"
        )


def with_printed_max_batches(s: Schedule, printed: PrintedMaxBatches | None) -> Schedule:
    """The inferred schedule `s` with the max_batches darknet printed, when it printed one:
    what darknet says beats the 80 %/90 % assumption (only a cfg beats it, and a schedule
    from a cfg is never passed here)."""
    if printed is None:
        return s
    return dataclasses.replace(s, max_batches=printed.max_batches, max_batches_from=printed.source)
