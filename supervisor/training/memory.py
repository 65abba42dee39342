"""Out of memory is a setting, not a failure (DESIGN "Decisions" 5): the recovery ladder. Pure.

Each step is a relaunch from the newest complete weights without `-clear`, so the iteration
count goes on. The rungs, in their usual order:

1. `subdivisions` ×2 keeping `batch`: the same effective batch and learning schedule with half
   the images per GPU pass (facts §4: changing `batch` would rescale the iteration counter), up
   to `subdivisions = batch`. Only values that keep the images per iteration
   ((batch ÷ subdivisions) × subdivisions) are taken, or the weights' `seen` would map to
   another iteration.
2. `random=0`: no multi-scale resizing, whose largest sizes (1.4× the cfg's in AlexeyAB, up to
   608×608 in pjreddie) are what runs out of memory mid-run.
3. drop `-map`: darknet's in-training evaluation builds a second network on the GPU (facts §2);
   the supervisor then evaluates snapshots itself with `detector valid`.
4. width/height −32 (multiples of 32 kept), only with `memory.allow_resize`: it changes what the
   network sees, so it is never done unasked.

*When* the memory ran out chooses the first rung (`Phase`): during darknet's `-map` evaluation
dropping `-map` comes first (training itself fitted); right after a `random=1` resize to a size
above the cfg's, `random=0` comes first (the cfg's own size fitted). After the last rung the
job fails with a report that says what was tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from supervisor.training.events import FatalError, GpuError

Phase = Literal["start", "resize", "map", "mid_run"]
StepKind = Literal["subdivisions", "random", "map", "size"]

# YOLO's deepest layers see the input at 1/32 of its size: below 128 px that is a 4×4 grid,
# too coarse to be worth training — the ladder gives up instead.
MIN_SIDE = 128
SIDE_STEP = 32  # darknet needs width/height in multiples of 32 (facts §7)

_ORDER: dict[str, tuple[StepKind, ...]] = {
    "default": ("subdivisions", "random", "map", "size"),
    "map": ("map", "subdivisions", "random", "size"),
    "resize": ("random", "subdivisions", "map", "size"),
}


@dataclass(frozen=True, slots=True)
class MemorySetting:
    """What the ladder may change, as the job's cfg copy and argv hold it now.

    Attributes:
        map: darknet evaluates with `-map` in this launch.
        width, height: the cfg's input size (0 = unknown: no resize step).
        allow_resize: `memory.allow_resize` of the job.
    """

    batch: int
    subdivisions: int
    random: bool
    map: bool = False
    width: int = 0
    height: int = 0
    allow_resize: bool = False

    @property
    def mini_batch(self) -> int:
        return self.batch // max(1, self.subdivisions)

    def key(self) -> str:
        """The setting in one string, for the crash-loop guard's failure keys."""
        return (
            f"batch={self.batch} subdivisions={self.subdivisions} random={int(self.random)} "
            f"map={int(self.map)} size={self.width}x{self.height}"
        )


@dataclass(frozen=True, slots=True)
class GpuUse:
    """The GPU's memory when darknet ran out of it (from the sampler), for the reason."""

    index: int
    used_mib: float
    total_mib: float


@dataclass(frozen=True, slots=True)
class OomContext:
    """When and where the memory ran out.

    Attributes:
        phase: before the launch's first iteration, right after a resize, inside darknet's
            `-map` evaluation, or mid-run.
        iteration: the last iteration darknet printed before the error.
        size: the input size at that moment (a resize's new size), None = the cfg's.
        gpu: the GPU's use then, None without a sampler (CPU, no NVML).
    """

    phase: Phase
    iteration: int
    size: tuple[int, int] | None = None
    gpu: GpuUse | None = None


@dataclass(frozen=True, slots=True)
class MemoryStep:
    """One rung: what changes, and in words for the reason."""

    kind: StepKind
    changes: dict[str, int] = field(default_factory=dict)  # cfg options to patch
    words: str = ""  # "subdivisions=16 (batch still 64, mini-batch 4)"
    drop_map: bool = False  # relaunch without -map (the supervisor evaluates)


def memory_error(errors: tuple[GpuError, ...]) -> GpuError | None:
    """The launch's first error that means "not enough GPU memory": darknet's out of memory,
    and cuDNN's failures, which are allocation failures in practice (facts §6; the parser
    already files `CUDNN_STATUS_ALLOC_FAILED` and "no FWD algo found" as out of memory)."""
    return next((e for e in errors if e.kind in ("out_of_memory", "cudnn")), None)


def lost_memory_error(fatal: tuple[FatalError, ...]) -> GpuError | None:
    """pjreddie prints a CUDA error with printf (stdout) and then `assert(0)`s: where stdout was
    not flushed the message dies with the process and only stderr's `cuda.c:…: check_error:
    Assertion` remains (facts §6). Out of memory is by far its most common cause, so such an
    assertion, with no GPU message beside it, is taken for one — and said so."""
    for e in fatal:
        if "check_error: Assertion" in e.message and "cuda" in e.message:
            return GpuError(
                "out_of_memory",
                f"{e.message} (darknet's CUDA message was lost with its stdout: taken for out "
                "of memory, its usual cause)",
                e.iteration,
                e.line,
                e.time,
            )
    return None


def order_for(s: MemorySetting, ctx: OomContext | None) -> tuple[StepKind, ...]:
    """The rungs in the order this failure calls for."""
    if ctx is None:
        return _ORDER["default"]
    if ctx.phase == "map" and s.map:
        return _ORDER["map"]
    if ctx.phase == "resize" and s.random and ctx.size is not None and s.width and s.height:
        w, h = ctx.size
        if w * h > s.width * s.height:
            return _ORDER["resize"]
    return _ORDER["default"]


def next_memory_step(s: MemorySetting, ctx: OomContext | None = None) -> MemoryStep | None:
    """The next rung of the ladder for this failure, or None when none is left."""
    for kind in order_for(s, ctx):
        step = _step(kind, s, ctx)
        if step is not None:
            return step
    return None


def _step(kind: StepKind, s: MemorySetting, ctx: OomContext | None) -> MemoryStep | None:
    if kind == "subdivisions":
        sub = next_subdivisions(s.batch, s.subdivisions)
        if sub is None:
            return None
        return MemoryStep(
            kind,
            {"subdivisions": sub},
            f"subdivisions={sub} (batch still {s.batch}, mini-batch {s.batch // sub})",
        )
    if kind == "random":
        if not s.random:
            return None
        reached = ""
        if ctx is not None and ctx.phase == "resize" and ctx.size is not None:
            reached = f", which had just resized to {ctx.size[0]}×{ctx.size[1]}"
        return MemoryStep(
            kind,
            {"random": 0},
            f"random=0 (no multi-scale resizing{reached}; training stays at {s.width}×{s.height})",
        )
    if kind == "map":
        if not s.map:
            return None
        return MemoryStep(
            kind,
            words="no -map (darknet's evaluation builds a second network on the GPU; the "
            "supervisor now scores snapshots itself with detector valid)",
            drop_map=True,
        )
    if not s.allow_resize or not s.width or not s.height:
        return None
    w, h = _smaller(s.width), _smaller(s.height)
    if w < MIN_SIDE or h < MIN_SIDE:
        return None
    fewer = 1 - (w * h) / (s.width * s.height)
    return MemoryStep(
        "size",
        {"width": w, "height": h},
        f"width={w}, height={h} (input {s.width}×{s.height} → {w}×{h}: {fewer:.0%} fewer "
        "pixels per image; small objects get harder to detect, and mAP is measured at the "
        "new size)",
    )


def _smaller(side: int) -> int:
    """The next multiple of 32 below `side`."""
    return (side - 1) // SIDE_STEP * SIDE_STEP


def next_subdivisions(batch: int, subdivisions: int) -> int | None:
    """The subdivisions after `subdivisions`: ×2 where that keeps the images per iteration,
    else the nearest larger value that does (at most `batch`); None at the top."""
    per_iteration = (batch // max(1, subdivisions)) * subdivisions
    fits = [d for d in range(subdivisions + 1, batch + 1) if (batch // d) * d == per_iteration]
    if not fits:
        return None
    doubled = [d for d in fits if d >= 2 * subdivisions]
    return doubled[0] if doubled else fits[-1]


def ladder_left(s: MemorySetting) -> str:
    """What the ladder has done and what it may not do, for the report of a job it gave up on."""
    done = [
        f"subdivisions={s.subdivisions} (no larger value keeps batch {s.batch})"
        if next_subdivisions(s.batch, s.subdivisions) is None
        else f"subdivisions={s.subdivisions}",
        "random=0" if not s.random else "random=1",
        "no -map" if not s.map else "-map on",
    ]
    if not s.allow_resize:
        done.append(f"{s.width}×{s.height} (memory.allow_resize is off)")
    else:
        done.append(f"{s.width}×{s.height}")
    return ", ".join(done)


def fmt_int(n: int) -> str:
    """29843 → "29 843": the way the reasons write iterations."""
    return f"{n:,}".replace(",", " ")
