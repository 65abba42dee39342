"""The progress line of a running job: what it shows and its words.

The runner fills a `Progress` after every iteration line and evaluation; `trainsup run` prints
it, the daemon's `show` reads the same fields. It names the budget's end and the next
evaluation, never an ETA of the run: the policy usually stops a run before its budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.training.policy import pct


@dataclass(frozen=True, slots=True)
class Progress:
    """One update for a progress line."""

    iteration: int
    max_iterations: int | None
    avg_loss: float | None
    last_map: float | None
    best_map: float | None
    best_iteration: int | None
    iterations_per_s: float | None
    budget_left_s: float | None  # until max_iterations or max_time, whichever comes first
    next_evaluation: int | None  # the iteration of the next scheduled evaluation
    stopping: str | None


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def format_progress(p: Progress) -> str:
    it = f"{p.iteration}" + (f"/{p.max_iterations}" if p.max_iterations else "")
    parts = [f"it {it}"]
    if p.avg_loss is not None:
        parts.append(f"avg loss {p.avg_loss:.3f}")
    if p.last_map is not None:
        parts.append(f"mAP {pct(p.last_map)}")
    if p.best_map is not None:
        parts.append(f"best {pct(p.best_map)}@{p.best_iteration}")
    if p.iterations_per_s:
        parts.append(f"{p.iterations_per_s:.2f} it/s")
        if p.next_evaluation is not None:
            wait = (p.next_evaluation - p.iteration) / p.iterations_per_s
            parts.append(f"next eval at {p.next_evaluation} in {_duration(wait)}")
    if p.budget_left_s is not None:
        # Not an ETA of the run: the policy usually stops it before its budget is spent.
        parts.append(f"budget ends in {_duration(p.budget_left_s)}")
    if p.stopping:
        parts.append(f"stopping ({p.stopping}) after the next save")
    return " · ".join(parts)
