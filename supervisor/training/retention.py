"""Which snapshots to keep: the best by mAP, the last, and optionally the top k. Pure.

Snapshots are copies of saved weights (`snapshots/<iteration>.weights`); the runner applies the
plan to files. A snapshot without a valid mAP can be kept as `last` but never as best or top-k.
A snapshot whose evaluation was due but never produced a score (it failed, timed out, or the
run ended first) is `unscored`: it may be the best, so it is never pruned; the report lists it
so that `trainsup evaluate` can score it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Snapshot:
    iteration: int
    map: float | None = None
    valid: bool = False
    unscored: bool = False


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """best/last/top name snapshots to keep; `prune` lists the iterations no role keeps."""

    best: Snapshot | None
    last: Snapshot | None
    top: tuple[Snapshot, ...]
    prune: tuple[int, ...]

    @property
    def kept(self) -> set[int]:
        keep = {s.iteration for s in self.top}
        for s in (self.best, self.last):
            if s is not None:
                keep.add(s.iteration)
        return keep


def plan_retention(
    snapshots: list[Snapshot], *, best: bool = True, last: bool = True, top_k: int = 0
) -> RetentionPlan:
    """Rank valid snapshots by mAP (ties: the earlier iteration wins, as for the best mAP)."""
    ranked = sorted(
        (s for s in snapshots if s.valid and s.map is not None),
        key=lambda s: (-(s.map or 0.0), s.iteration),
    )
    best_s = ranked[0] if best and ranked else None
    last_s = max(snapshots, key=lambda s: s.iteration) if last and snapshots else None
    top = tuple(ranked[:top_k])
    plan = RetentionPlan(best_s, last_s, top, ())
    keep = plan.kept
    keep |= {s.iteration for s in snapshots if s.unscored}
    prune = tuple(sorted({s.iteration for s in snapshots} - keep))
    return RetentionPlan(best_s, last_s, top, prune)
