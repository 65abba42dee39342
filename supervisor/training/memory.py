"""Out of memory is a setting, not a failure (DESIGN "Decisions" 5): the recovery ladder. Pure.

Each step is a relaunch from the newest complete weights without `-clear`, so the iteration
count goes on: first `subdivisions` ×2 keeping `batch` (the same effective batch and learning
schedule with half the images per GPU pass, facts §4: changing `batch` would rescale the
iteration counter), up to `subdivisions = batch`; then `random=0` (no multi-scale resizing,
whose 608×608 passes are what runs out of memory mid-run). Dropping `-map` and a smaller input,
the next steps of the design, and the memory model that picks `subdivisions` before the first
launch, are not built yet: after the steps here the run fails with the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.training.events import GpuError


@dataclass(frozen=True, slots=True)
class MemorySetting:
    """What the ladder may change, as the job's cfg copy holds it now."""

    batch: int
    subdivisions: int
    random: bool


@dataclass(frozen=True, slots=True)
class MemoryStep:
    changes: dict[str, int]
    words: str  # what was changed, for the reason: "subdivisions=16 (batch still 64)"


def memory_error(errors: tuple[GpuError, ...]) -> GpuError | None:
    """The launch's first error that means "not enough GPU memory": darknet's out of memory,
    and cuDNN's failures, which are allocation failures in practice (facts §6)."""
    return next((e for e in errors if e.kind in ("out_of_memory", "cudnn")), None)


def next_memory_step(s: MemorySetting) -> MemoryStep | None:
    """The next rung of the ladder, or None when none is left."""
    if s.subdivisions * 2 <= s.batch:
        sub = s.subdivisions * 2
        return MemoryStep(
            {"subdivisions": sub},
            f"subdivisions={sub} (batch still {s.batch}: mini-batch {s.batch // sub} images)",
        )
    if s.random:
        return MemoryStep({"random": 0}, "random=0 (no multi-scale resizing)")
    return None
