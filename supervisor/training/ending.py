"""How a launch of darknet ended, and what to do about it: finish, or relaunch. Pure.

darknet's exit status proves little on its own (facts §5): pjreddie exits 0 when it cannot open
a label file or the backup dir, and Debian's build sometimes segfaults after writing
`_final.weights`. So the end is read from what the job dir shows — the wrapper's exit record,
whether a complete `_final` exists, what darknet printed — as plain facts gathered by the
runner, and classified here. A relaunch (resume after the supervisor was down, a step of the
out-of-memory ladder, the recovery of a hung darknet, a `memory.tune` step after the
supervisor ended a launch at a complete save) is a decision this module returns and the
runner carries out in one place; the crash-loop guard and the relaunch budget end a job whose
relaunches would not end differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.training.diagnose import gpu_advice
from supervisor.training.events import FatalError, GpuError
from supervisor.training.history import History
from supervisor.training.memory import (
    MemorySetting,
    OomContext,
    fmt_int,
    ladder_left,
    lost_memory_error,
    memory_error,
    next_memory_step,
)
from supervisor.training.tune import TuneStep

Status = Literal["finished", "stopped", "failed", "killed", "cancelled", "detached"]
RelaunchKind = Literal["resume", "memory", "stall", "tune"]

HANG_ADVICE = (
    "a darknet that stops printing without exiting is most often a CUDA driver or GPU fault: "
    "look for Xid errors in `dmesg`, check `nvidia-smi` (temperature, other processes) and "
    "the driver version, then resume with `trainsup run --attach`"
)


@dataclass(frozen=True, slots=True)
class EndFacts:
    """What the runner saw when darknet was gone (or when it stopped watching).

    Attributes:
        exit: the wrapper's exit record of this launch (`exit.json`), None when there is none.
        final_complete: `<base>_final.weights` exists with the network's full size.
        terminated: the supervisor signalled darknet (a stop it decided or was asked for).
        stop_reason: the reason of that stop, if it was a decided one.
        max_batches: the cfg's, for the words of a finished run.
        supervisor_was_down: the launch ended while no supervisor watched it (`--attach` or a
            restarted daemon found it gone), so no one had decided to stop it.
        detached: the supervisor let go on purpose (`--detach-on-hangup`); darknet still runs.
        launch_errors: the GPU errors darknet printed in this launch (not earlier ones).
        launch_fatal: the fatal errors of this launch (pjreddie's lost CUDA message).
        memory: the cfg's memory settings now; None where the ladder must not act.
        relaunches: how many relaunches the job has had; max_relaunches: its limit.
        earlier_failures: what each earlier relaunched launch ended of, as `Relaunch.failure`
            keys, for the crash-loop guard: the same failure in the same place with the same
            settings twice stops the job — no relaunch would end differently.
        oom: when and where the memory ran out (the runner's reading of the log around the
            error: start, resize, -map, mid-run); None = mid-run at the last iteration.
        stalled: the watchdog killed this launch as hung, in words ("no iteration line for
            312 s after iteration 150 …"); None = it did not.
        stalled_s, stalled_since_launch: the same silence in seconds, and whether no iteration
            line had come since the launch (None: not known).
        tuned: the supervisor ended this launch after a complete save for `memory.tune`
            (`training/tune.py`): relaunch with its lower subdivisions.
    """

    exit: Mapping[str, Any] | None
    final_complete: bool
    terminated: bool = False
    stop_reason: str | None = None
    max_batches: int | None = None
    supervisor_was_down: bool = False
    detached: bool = False
    launch_errors: tuple[GpuError, ...] = ()
    launch_fatal: tuple[FatalError, ...] = ()
    memory: MemorySetting | None = None
    relaunches: int = 0
    max_relaunches: int = 6
    earlier_failures: tuple[str, ...] = ()
    oom: OomContext | None = None
    stalled: str | None = None
    stalled_s: float | None = None
    stalled_since_launch: bool = False
    tuned: TuneStep | None = None


@dataclass(frozen=True, slots=True)
class End:
    status: Status
    cause: str


@dataclass(frozen=True, slots=True)
class Relaunch:
    """Start darknet again from the newest complete weights (never with `-clear`).

    Attributes:
        reason: in words, for the events and the report.
        cfg_changes: `[net]`/layer options to patch before the relaunch (none for a resume).
        numbers: the figures behind the reason.
        failure: what ended the launch, where, with what settings (the crash-loop guard).
        kind: why: a resume (nobody's failure: no backoff), a memory step, a stall, a tune
            (more memory than needed: no backoff either).
        drop_map: relaunch without `-map`; the supervisor evaluates from now on.
    """

    reason: str
    cfg_changes: Mapping[str, int | float | str] = field(default_factory=dict)
    numbers: Mapping[str, int | float] = field(default_factory=dict)
    failure: str | None = None
    kind: RelaunchKind = "resume"
    drop_map: bool = False


def errors(h: History) -> list[GpuError | FatalError]:
    """What darknet reported before it died, in log order."""
    return sorted([*h.gpu_errors, *h.fatal_errors], key=lambda e: e.line)


def classify_end(h: History, facts: EndFacts) -> End | Relaunch:
    """Finished, stopped, failed, killed — or resume, when it ended unwatched and unfinished."""
    if facts.detached:
        return End("detached", "the supervisor detached; darknet keeps training on its own")
    if facts.terminated:
        return End("stopped", facts.stop_reason or "stopped at once by the user")
    if facts.final_complete:
        # Debian's pjreddie sometimes segfaults while freeing memory after writing _final:
        # a complete _final file is the proof of a finished run, not the exit status.
        rc = facts.exit.get("returncode") if facts.exit else 0
        crashed = "" if rc == 0 else f" (then ended with {_how(facts.exit)}, after saving)"
        return End("finished", f"darknet reached max_batches ({facts.max_batches}){crashed}")
    if facts.tuned is not None:
        # The supervisor ended it after a complete save, for speed: nothing failed.
        t = facts.tuned
        return Relaunch(
            t.reason, cfg_changes={"subdivisions": t.subdivisions}, numbers=t.numbers, kind="tune"
        )
    problems = [f"line {e.line}: {e.message}" for e in errors(h)]
    if facts.exit is not None and facts.exit.get("error"):
        return End("failed", f"darknet could not start: {facts.exit['error']}")
    unwatched = f"ended unwatched at {h.iteration}"
    said = facts.launch_errors or facts.launch_fatal  # this launch's words, not earlier ones
    if facts.supervisor_was_down and not said and unwatched not in facts.earlier_failures:
        # Nobody decided this end and darknet said nothing about why: a reboot, an OOM killer,
        # a `kill` — the training itself was fine, so it goes on from its newest save.
        how = _how(facts.exit) if facts.exit else "no exit record: killed with its wrapper"
        return Relaunch(
            "training ended while the supervisor was down "
            f"({how}, last iteration {h.iteration}): resumed from the newest complete weights",
            numbers={"iteration": h.iteration},
            failure=unwatched,
        )
    oom = launch_oom(facts)
    if oom is not None and facts.memory is not None:
        return _memory_relaunch(h, facts, oom)
    if facts.stalled is not None:
        return _stall_relaunch(h, facts)
    if facts.exit is None:
        return End("killed", "darknet and its wrapper were killed (no exit record)")
    if h.gpu_errors:
        problems.append("advice: " + gpu_advice(h.gpu_errors[0].kind))
    if facts.exit.get("returncode") == 0:
        why = "; ".join(problems) or "no final weights were written"
        # pjreddie's file_error() exits 0 (facts §5): exit status alone proves nothing.
        return End("failed", f"darknet exited 0 without finishing: {why}")
    detail = ": " + "; ".join(problems) if problems else ""
    return End("failed", f"darknet failed ({_how(facts.exit)}){detail}")


def launch_oom(facts: EndFacts) -> GpuError | None:
    """The launch's memory error: darknet's words, or pjreddie's assertion whose words were
    lost (`memory.lost_memory_error`); None when it did not run out of memory."""
    oom = memory_error(facts.launch_errors)
    if oom is None and not facts.launch_errors:
        oom = lost_memory_error(facts.launch_fatal)
    return oom


def _memory_relaunch(h: History, facts: EndFacts, oom: GpuError) -> End | Relaunch:
    """The next step of the memory ladder — or the end, with what was tried, when the job is
    out of steps or relaunches, or the same failure came in the same place with the same
    setting before (a loop no relaunch will break)."""
    m = facts.memory
    assert m is not None
    where = oom.iteration if oom.iteration is not None else h.iteration
    ctx = facts.oom or OomContext("mid_run", where)
    what = f"out of memory {_when(ctx)} ({_circumstances(m, ctx)})"
    advice = "advice: " + gpu_advice(oom.kind)
    key = f"out of memory {ctx.phase} at {ctx.iteration} with {m.key()}"
    if key in facts.earlier_failures:
        return End(
            "failed",
            f"{what}, again with the same setting: a relaunch would end the same way; {advice}",
        )
    if facts.relaunches >= facts.max_relaunches:
        return End(
            "failed",
            f"{what} after {facts.relaunches} relaunches (memory.max_relaunches = "
            f"{facts.max_relaunches}); {advice}",
        )
    step = next_memory_step(m, ctx)
    if step is None:
        return End(
            "failed", f"{what}, and the ladder has no step left ({ladder_left(m)}); {advice}"
        )
    numbers: dict[str, int | float] = {
        "iteration": ctx.iteration,
        "mini_batch": m.mini_batch,
        "batch": m.batch,
        "subdivisions": m.subdivisions,
        # The rest of the setting before the step, so that a message can say what it was.
        "random": int(m.random),
        "map": int(m.map),
    }
    if m.width and m.height:
        numbers.update(width=m.width, height=m.height)
    if ctx.gpu is not None:
        numbers.update(
            gpu=ctx.gpu.index, gpu_used_mib=ctx.gpu.used_mib, gpu_total_mib=ctx.gpu.total_mib
        )
    return Relaunch(
        f"{what}: relaunched with {step.words}",
        cfg_changes=step.changes,
        numbers=numbers,
        failure=key,
        kind="memory",
        drop_map=step.drop_map,
    )


def _when(ctx: OomContext) -> str:
    at = fmt_int(ctx.iteration)
    if ctx.phase == "start":
        return f"at start, before the first iteration (resuming after iteration {at})"
    if ctx.phase == "resize" and ctx.size is not None:
        return f"at iteration {at}, right after resizing to {ctx.size[0]}×{ctx.size[1]}"
    if ctx.phase == "map":
        return f"during darknet's -map evaluation at iteration {at}"
    return f"at iteration {at}"


def _circumstances(m: MemorySetting, ctx: OomContext) -> str:
    """ "mini-batch 8 at 608×608 on GPU 0, 11.7/12.0 GB used" """
    w, h = ctx.size or (m.width, m.height)
    words = f"mini-batch {m.mini_batch}" + (f" at {w}×{h}" if w and h else "")
    if ctx.gpu is not None:
        g = ctx.gpu
        words += f" on GPU {g.index}, {g.used_mib / 1024:.1f}/{g.total_mib / 1024:.1f} GB used"
    return words


def _stall_relaunch(h: History, facts: EndFacts) -> End | Relaunch:
    """A hung darknet was killed: relaunch it from its newest save — unless it hung at the
    same place with the same setting before, or the relaunches are spent."""
    setting = facts.memory.key() if facts.memory is not None else ""
    key = f"hung after {h.iteration} with {setting}"
    what = f"darknet hung: {facts.stalled}"
    if key in facts.earlier_failures:
        return End(
            "failed",
            f"{what}, the second time after iteration {fmt_int(h.iteration)}: a relaunch "
            f"would hang the same way; advice: {HANG_ADVICE}",
        )
    if facts.relaunches >= facts.max_relaunches:
        return End(
            "failed",
            f"{what}, after {facts.relaunches} relaunches (memory.max_relaunches = "
            f"{facts.max_relaunches}); advice: {HANG_ADVICE}",
        )
    numbers: dict[str, int | float] = {"iteration": h.iteration}
    if facts.stalled_s is not None:
        numbers.update(silent_s=round(facts.stalled_s, 1), since_launch=facts.stalled_since_launch)
    return Relaunch(
        f"{what}: killed and relaunched from the newest complete weights",
        numbers=numbers,
        failure=key,
        kind="stall",
    )


def _how(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "unknown exit"
    rc, sig = entry.get("returncode"), entry.get("signal")
    return f"exit status {rc}" if rc is not None else f"signal {sig}"
