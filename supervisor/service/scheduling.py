"""Which queued jobs start now, and why each other one waits: the daemon's queue decision,
pure (no store, no processes), so that `Daemon.queue_pass` only gathers its inputs and acts.

The queue is walked in order (priority, then submission). A job that could start at once is
planned to start; later jobs see its slots as taken. A GPU job that waits because a GPU it asks
for is full — held by running jobs, or reserved by an earlier waiting job — reserves one slot on
each GPU it asks for, as batch schedulers do against backfill starvation: without it, a job
asking for GPUs [0, 1] while GPU 1 is busy would lose GPU 0 to every later single-GPU job each
time GPU 0 frees, and could wait for ever. A later job still starts on GPUs no earlier job
reserved; CPU jobs are unaffected. Jobs waiting for something else (an unfinished `--after`
dependency, the memory model's "does not fit", a GPU the daemon does not have) reserve
nothing: their wait is not the GPUs', and holding GPUs idle for them would help no one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Queued:
    job_id: int
    gpus: tuple[int, ...]  # () = a CPU job
    after: int | None = None  # a dependency that has not ended yet; None when there is none


@dataclass(frozen=True)
class Plan:
    start: tuple[tuple[int, tuple[int, ...]], ...]  # (job id, its GPUs), in queue order
    waiting: dict[int, str] = field(default_factory=dict)  # job id → why it waits


def _jobs(ids: Sequence[int]) -> str:
    return f"job {ids[0]}" if len(ids) == 1 else "jobs " + ", ".join(map(str, ids))


def runnable(
    queue: Iterable[Queued],
    in_use: Mapping[int, Sequence[int]],
    cpu_busy: int,
    *,
    gpus: Sequence[int],
    jobs_per_gpu: int,
    cpu_slots: int,
    fits: Callable[[Queued], bool],
) -> Plan:
    """The jobs of `queue` (in its order) that start now, and a reason for each that waits.

    `in_use` maps each GPU to the running jobs that hold it, `cpu_busy` counts running CPU jobs.
    `fits(job)` is the memory model's answer, asked only where the job would share a GPU with a
    running (or just planned) job; True lets it start."""
    holders: dict[int, list[int]] = {g: list(ids) for g, ids in in_use.items()}
    reserved: dict[int, list[int]] = {}
    cpu = cpu_busy
    start: list[tuple[int, tuple[int, ...]]] = []
    waiting: dict[int, str] = {}
    have = ", ".join(map(str, gpus)) or "none"
    for job in queue:
        if job.after is not None:
            waiting[job.job_id] = f"waiting: job {job.after} (--after) has not ended"
            continue
        if not job.gpus:
            if cpu >= cpu_slots:
                waiting[job.job_id] = f"waiting: all {cpu_slots} CPU slot(s) are busy"
                continue
            cpu += 1
            start.append((job.job_id, job.gpus))
            continue
        unknown = [g for g in job.gpus if g not in gpus]
        if unknown:
            # Admission refuses these; a config changed since the submit can leave one queued.
            waiting[job.job_id] = (
                f"waiting: GPU {', '.join(map(str, unknown))} is not one of this daemon's GPUs "
                f"({have}); cancel the job and resubmit it with GPUs the daemon has"
            )
            continue
        full: list[str] = []
        for g in job.gpus:
            held, kept = holders.get(g, []), reserved.get(g, [])
            if len(held) >= jobs_per_gpu:
                full.append(f"GPU {g} is busy ({_jobs(held)})")
            elif len(held) + len(kept) >= jobs_per_gpu:
                full.append(f"GPU {g} is reserved for {_jobs(kept)}, earlier in the queue")
        if full:
            # One slot per GPU asked for: with jobs_per_gpu > 1 the rest stay for later jobs.
            for g in job.gpus:
                reserved.setdefault(g, []).append(job.job_id)
            waiting[job.job_id] = "waiting: " + "; ".join(full)
            continue
        shared = sorted({j for g in job.gpus for j in holders.get(g, [])})
        if shared and not fits(job):
            waiting[job.job_id] = (
                f"waiting: the memory model says it does not fit beside {_jobs(shared)} "
                f"on GPU {', '.join(map(str, job.gpus))} now"
            )
            continue
        for g in job.gpus:
            holders.setdefault(g, []).append(job.job_id)
        start.append((job.job_id, job.gpus))
    return Plan(tuple(start), waiting)
