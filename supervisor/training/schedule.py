"""The run's shape from the cfg: warm-up, learning-rate steps, length.

A live job reads it from the cfg. A replayed log may come without its cfg: `infer_schedule`
then reconstructs it from the learning rate darknet prints on every iteration line (it rises
during burn_in and falls at each step), which is config, not outcome, so using it is fair.
"""

from __future__ import annotations

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
    return Schedule(burn_in=burn_in, steps=tuple(steps), scales=tuple(scales), inferred=True)
