"""How a launch of darknet ended, and what to do about it: finish, or relaunch. Pure.

darknet's exit status proves little on its own (facts §5): pjreddie exits 0 when it cannot open
a label file or the backup dir, and Debian's build sometimes segfaults after writing
`_final.weights`. So the end is read from what the job dir shows — the wrapper's exit record,
whether a complete `_final` exists, what darknet printed — as plain facts gathered by the
runner, and classified here. A relaunch (resume after the supervisor was down; later OOM and
stall recovery) is a decision this module returns and the runner carries out in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from supervisor.training.diagnose import gpu_advice
from supervisor.training.events import FatalError, GpuError
from supervisor.training.history import History
from supervisor.training.memory import MemorySetting, memory_error, next_memory_step

Status = Literal["finished", "stopped", "failed", "killed", "cancelled", "detached"]


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
        memory: the cfg's memory settings now; None where the ladder must not act.
        relaunches: how many relaunches the job has had; max_relaunches: its limit.
        earlier_failures: what each earlier relaunched launch ended of, as `Relaunch.failure`
            keys, for the crash-loop guard: the same failure in the same place with the same
            settings twice stops the job — no relaunch would end differently.
    """

    exit: Mapping[str, Any] | None
    final_complete: bool
    terminated: bool = False
    stop_reason: str | None = None
    max_batches: int | None = None
    supervisor_was_down: bool = False
    detached: bool = False
    launch_errors: tuple[GpuError, ...] = ()
    memory: MemorySetting | None = None
    relaunches: int = 0
    max_relaunches: int = 6
    earlier_failures: tuple[str, ...] = ()


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
    """

    reason: str
    cfg_changes: Mapping[str, int | float | str] = field(default_factory=dict)
    numbers: Mapping[str, int | float] = field(default_factory=dict)
    failure: str | None = None  # what ended the launch, where, with what settings (the guard)


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
    problems = [f"line {e.line}: {e.message}" for e in errors(h)]
    if facts.exit is not None and facts.exit.get("error"):
        return End("failed", f"darknet could not start: {facts.exit['error']}")
    unwatched = f"ended unwatched at {h.iteration}"
    if facts.supervisor_was_down and not problems and unwatched not in facts.earlier_failures:
        # Nobody decided this end and darknet said nothing about why: a reboot, an OOM killer,
        # a `kill` — the training itself was fine, so it goes on from its newest save.
        how = _how(facts.exit) if facts.exit else "no exit record: killed with its wrapper"
        return Relaunch(
            "training ended while the supervisor was down "
            f"({how}, last iteration {h.iteration}): resumed from the newest complete weights",
            numbers={"iteration": h.iteration},
            failure=unwatched,
        )
    oom = memory_error(facts.launch_errors)
    if oom is not None and facts.memory is not None:
        relaunch = _memory_relaunch(h, facts, oom)
        if relaunch is not None:
            return relaunch
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


def _memory_relaunch(h: History, facts: EndFacts, oom: GpuError) -> Relaunch | None:
    """The next step of the memory ladder, unless the job is out of steps or relaunches, or
    the same failure came at the same iteration before (a loop no setting will break)."""
    assert facts.memory is not None
    where = oom.iteration if oom.iteration is not None else h.iteration
    key = f"out of memory at {where} with {facts.memory}"
    if key in facts.earlier_failures:
        return None
    if facts.relaunches >= facts.max_relaunches:
        return None
    step = next_memory_step(facts.memory)
    if step is None:
        return None
    m = facts.memory
    return Relaunch(
        f"out of memory at iteration {where} (mini-batch {m.batch // m.subdivisions}): "
        f"relaunched with {step.words}",
        cfg_changes=step.changes,
        numbers={"iteration": where, "mini_batch": m.batch // m.subdivisions},
        failure=key,
    )


def _how(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "unknown exit"
    rc, sig = entry.get("returncode"), entry.get("signal")
    return f"exit status {rc}" if rc is not None else f"signal {sig}"
