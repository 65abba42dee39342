"""The daemon's queue against backfill starvation: a job waiting only for busy GPUs reserves
them, so later jobs cannot take them first; jobs on other GPUs, and CPU jobs, still start at
once. The decision alone (`scheduling.runnable`), then a real `trainsup serve` with the
scripted stand-in darknet and two (three) GPUs given in its config."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from supervisor.service.scheduling import Plan, Queued, runnable
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    Daemon,
    job_yaml,
    make_daemon,
    set_script,
    short_tmp,
    wait_for,
    write_cfg,
)

MakeDaemon = Callable[..., Daemon]


def plan(
    queue: list[Queued],
    in_use: dict[int, list[int]],
    *,
    gpus: tuple[int, ...] = (0, 1),
    jobs_per_gpu: int = 1,
    cpu_busy: int = 0,
    cpu_slots: int = 1,
    fits: Callable[[Queued], bool] = lambda job: True,
) -> Plan:
    return runnable(queue, in_use, cpu_busy, gpus=gpus, jobs_per_gpu=jobs_per_gpu,
                    cpu_slots=cpu_slots, fits=fits)  # fmt: skip


def started(p: Plan) -> list[int]:
    return [job_id for job_id, _ in p.start]


# --- the decision ----------------------------------------------------------------------------


def test_a_two_gpu_job_waiting_for_a_busy_gpu_keeps_the_free_one_from_a_later_job() -> None:
    a, b, c = 1, 2, 3  # a runs on GPU 1; b asks [0, 1]; c asks [0], after b
    queue = [Queued(b, (0, 1)), Queued(c, (0,))]
    p = plan(queue, {1: [a]})
    assert started(p) == [], "GPU 0 is free, but b reserved it"
    assert p.waiting[b] == "waiting: GPU 1 is busy (job 1)"
    assert p.waiting[c] == "waiting: GPU 0 is reserved for job 2, earlier in the queue"
    # a ended: b starts on both; c waits for b now, not for a reservation.
    p = plan(queue, {})
    assert p.start == ((b, (0, 1)),)
    assert p.waiting == {c: "waiting: GPU 0 is busy (job 2)"}
    p = plan([Queued(c, (0,))], {})
    assert p.start == ((c, (0,)),), "b ended: c starts"


def test_jobs_on_gpus_nobody_earlier_asked_for_and_cpu_jobs_start_at_once() -> None:
    a, b, d, cpu = 1, 2, 4, 5
    queue = [Queued(b, (0, 1)), Queued(d, (2,)), Queued(cpu, ())]
    p = plan(queue, {1: [a]}, gpus=(0, 1, 2))
    assert p.start == ((d, (2,)), (cpu, ()))
    assert set(p.waiting) == {b}
    # The CPU slots count CPU jobs only: a full one still holds a CPU job back.
    p = plan(queue, {1: [a]}, gpus=(0, 1, 2), cpu_busy=1)
    assert started(p) == [d] and p.waiting[cpu] == "waiting: all 1 CPU slot(s) are busy"


def test_a_job_planned_in_the_same_pass_takes_its_gpu_from_the_next() -> None:
    p = plan([Queued(1, (0,)), Queued(2, (0,)), Queued(3, (1,))], {})
    assert started(p) == [1, 3]
    assert p.waiting == {2: "waiting: GPU 0 is busy (job 1)"}


def test_a_waiting_job_behind_a_reservation_reserves_too() -> None:
    # c waits behind b's reservation of GPU 0 and reserves GPU 2 for itself: a later job on
    # GPU 2 would otherwise starve c as b was starved.
    a, b, c, e = 1, 2, 3, 5
    p = plan([Queued(b, (0, 1)), Queued(c, (0, 2)), Queued(e, (2,))], {1: [a]}, gpus=(0, 1, 2))
    assert started(p) == []
    assert p.waiting[e] == "waiting: GPU 2 is reserved for job 3, earlier in the queue"


def test_with_jobs_per_gpu_2_a_reservation_takes_one_slot_per_gpu() -> None:
    # GPU 0 holds one job, GPU 1 two: b [0, 1] waits for GPU 1 and takes GPU 0's second slot.
    b, c = 10, 11
    asked: list[int] = []

    def fits(job: Queued) -> bool:
        asked.append(job.job_id)
        return True

    queue = [Queued(b, (0, 1)), Queued(c, (0,))]
    p = plan(queue, {0: [5], 1: [6, 7]}, jobs_per_gpu=2, fits=fits)
    assert started(p) == []
    assert p.waiting[b] == "waiting: GPU 1 is busy (jobs 6, 7)"
    assert p.waiting[c] == "waiting: GPU 0 is reserved for job 10, earlier in the queue"
    assert asked == [], "a job that waits for slots is not asked about memory"
    # Without b, c shares GPU 0 once the memory model agrees.
    p = plan([Queued(c, (0,))], {0: [5], 1: [6, 7]}, jobs_per_gpu=2, fits=fits)
    assert started(p) == [c] and asked == [c]
    # GPU 0 idle: b's reservation leaves its other slot to c (no one else to ask about memory).
    asked.clear()
    p = plan(queue, {1: [6, 7]}, jobs_per_gpu=2, fits=fits)
    assert p.start == ((c, (0,)),) and asked == []


def test_waiting_for_a_dependency_memory_or_a_missing_gpu_reserves_nothing() -> None:
    a, b, c = 1, 2, 3
    # b waits for its --after job: c takes GPU 0.
    p = plan([Queued(b, (0, 1), after=9), Queued(c, (0,))], {1: [a]})
    assert started(p) == [c] and p.waiting[b] == "waiting: job 9 (--after) has not ended"
    # b would share GPU 0 but does not fit there: it reserves nothing, c (which fits) starts.
    p = plan(
        [Queued(b, (0,)), Queued(c, (0,))],
        {0: [a]},
        jobs_per_gpu=2,
        fits=lambda job: job.job_id == c,
    )
    assert started(p) == [c]
    assert p.waiting[b] == (
        "waiting: the memory model says it does not fit beside job 1 on GPU 0 now"
    )
    # b asks for a GPU the daemon no longer has: it would hold GPU 0 for ever.
    p = plan([Queued(b, (0, 3)), Queued(c, (0,))], {})
    assert started(p) == [c]
    assert "GPU 3 is not one of this daemon's GPUs (0, 1)" in p.waiting[b]
    assert "resubmit" in p.waiting[b]


# --- a real daemon ---------------------------------------------------------------------------


def _gpu_job(folder: Path, data: Path, cfg: Path, name: str, gpus: list[int]) -> Path:
    job = job_yaml(folder, data, cfg, name=name, file=f"{name}.yaml")
    spec = yaml.safe_load(job.read_text())
    spec["darknet"]["gpus"] = gpus
    job.write_text(yaml.safe_dump(spec))
    return job


@pytest.mark.timeout(180)
def test_the_daemon_starts_a_two_gpu_job_before_a_later_one_gpu_job(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.004)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=200)
    long_cfg = write_cfg(short_tmp / "long.cfg", stock_cfg, max_batches=100000)
    d = make_daemon(gpus=[0, 1, 2], cpu_slots=1).start()
    a = d.submit(_gpu_job(short_tmp, tiny_data, long_cfg, "a", [1]))
    d.wait_state(a, {"running"})
    b = d.submit(_gpu_job(short_tmp, tiny_data, cfg, "b", [0, 1]))
    c = d.submit(_gpu_job(short_tmp, tiny_data, cfg, "c", [0]))
    other = d.submit(_gpu_job(short_tmp, tiny_data, long_cfg, "other", [2]))
    cpu = d.submit(job_yaml(short_tmp, tiny_data, cfg, name="cpu", file="cpu.yaml"))
    # Nobody earlier asked for GPU 2 or the CPU: those start at once, beside the waiting b.
    d.wait_state(other, {"running"})
    d.wait_state(cpu, {"starting", "running", "stopping", "finished"})
    # Each submit woke a queue pass; GPU 0 is free all along, but b reserved it.
    assert d.job(c)["state"] == "queued", d.job(c)
    assert d.job(b)["state"] == "queued" and d.job(a)["state"] == "running"
    # `show` says why, as the log does.
    assert d.job(c)["waiting"] == f"waiting: GPU 0 is reserved for job {b}, earlier in the queue"
    assert d.job(b)["waiting"] == f"waiting: GPU 1 is busy (job {a})"
    assert d.job(a)["waiting"] is None
    said = [json.loads(line) for line in d.log_text().splitlines() if line.startswith("{")]
    why = [e for e in said if e.get("job_id") == c and e["event"].startswith("waiting: ")]
    # Once, though several passes ran since: the log says a reason when it changes.
    assert [e["event"] for e in why] == [
        f"waiting: GPU 0 is reserved for job {b}, earlier in the queue"
    ], why
    d.cli("stop", str(a), "--now")
    d.cli("stop", str(other), "--now")
    for job_id in (a, b, c, other, cpu):
        assert d.wait_state(job_id, {"finished", "failed"}, timeout=90)["state"] == "finished"
    jobs = {i: d.job(i) for i in (a, b, c, other)}
    assert jobs[b]["device"] == ["gpu", [0, 1]] and jobs[c]["device"] == ["gpu", [0]]
    assert jobs[other]["started"] < jobs[a]["ended"], "GPU 2's job did not wait for a"
    assert jobs[b]["started"] >= jobs[a]["ended"]
    assert jobs[c]["started"] >= jobs[b]["ended"], "c, on b's GPU 0, only after b"
    assert d.term() == 0
