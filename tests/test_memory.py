"""The out-of-memory ladder and the crash-loop guard, as pure decisions."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import pytest

from supervisor.darknet.cfg import Cfg
from supervisor.dataset.demo import write_demo_cfg
from supervisor.runtime.adopt import restore
from supervisor.runtime.bus import Bus
from supervisor.runtime.gpu import GpuDevice
from supervisor.runtime.memory_store import MemoryStore
from supervisor.runtime.memory_watch import TUNE_TRIED, JobMemory
from supervisor.runtime.records import EventsFile, read_records
from supervisor.training.ending import End, EndFacts, Relaunch, classify_end
from supervisor.training.events import GpuError, Iteration
from supervisor.training.history import History
from supervisor.training.memory import MemorySetting, OomContext, next_memory_step
from supervisor.training.tune import MAX_TUNES, TuneStep
from tests.standins import gpu_need
from tests.test_oom_recovery import BIG_MIB, Job, run


def test_the_ladder_doubles_subdivisions_keeping_batch_then_drops_random() -> None:
    s = MemorySetting(batch=64, subdivisions=16, random=True)
    step = next_memory_step(s)
    assert step is not None and step.changes == {"subdivisions": 32}
    assert step.words == "subdivisions=32 (batch still 64, mini-batch 2)"
    last = next_memory_step(MemorySetting(64, 64, True))
    assert last is not None and last.changes == {"random": 0}
    assert next_memory_step(MemorySetting(64, 64, False)) is None


def history_with_oom(at: int) -> tuple[History, GpuError]:
    h = History()
    for i in range(1, at + 1):
        h = h.add(Iteration(i, 1.0, 1.0, 0.001, line=i))
    oom = GpuError("out_of_memory", "CUDA Error: out of memory", at, line=at + 1)
    return h.add(oom), oom


def test_an_oom_is_a_relaunch_until_the_same_failure_repeats() -> None:
    h, oom = history_with_oom(29843)
    setting = MemorySetting(64, 8, True)
    facts = EndFacts({"returncode": 1}, False, launch_errors=(oom,), memory=setting)
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch) and d.cfg_changes == {"subdivisions": 16}
    assert d.reason.startswith("out of memory at iteration 29 843 (mini-batch 8)")
    # The same failure, at the same place, with the same setting: no relaunch ends otherwise.
    again = EndFacts(
        {"returncode": 1}, False, launch_errors=(oom,), memory=setting,
        earlier_failures=(d.failure or "",),
    )  # fmt: skip
    end = classify_end(h, again)
    assert isinstance(end, End) and end.status == "failed"
    # Nor beyond the relaunch budget.
    spent = EndFacts({"returncode": 1}, False, launch_errors=(oom,), memory=setting, relaunches=6)
    assert isinstance(classify_end(h, spent), End)


def test_an_earlier_launchs_oom_does_not_count() -> None:
    h, _ = history_with_oom(100)
    facts = EndFacts({"returncode": 1}, False, launch_errors=(), memory=MemorySetting(8, 1, False))
    end = classify_end(h, facts)
    assert isinstance(end, End) and end.status == "failed"


def test_resume_after_down_is_guarded_against_a_loop() -> None:
    h = History().add(Iteration(500, 1.0, 1.0, 0.001, line=1))
    facts = EndFacts(None, False, supervisor_was_down=True)
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch) and d.failure == "ended unwatched at 500"
    facts = EndFacts(None, False, supervisor_was_down=True, earlier_failures=(d.failure,))
    end = classify_end(h, facts)
    assert isinstance(end, End) and end.status == "killed"


def test_resume_after_down_ignores_an_earlier_launchs_errors() -> None:
    # Launch 1 ran out of memory and was relaunched; launch 2 was killed while nobody watched.
    h, _ = history_with_oom(150)
    h = h.add(Iteration(300, 1.0, 1.0, 0.001, line=400))
    facts = EndFacts(None, False, supervisor_was_down=True, memory=MemorySetting(8, 2, False))
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch) and d.kind == "resume" and not d.cfg_changes


# --- memory.tune's tried set outlives the supervisor (`--attach`) -----------------------------


class RoomyGpu:
    """A stand-in for the GPU (the one part not run for real): 80 GB, darknet using 1 GB."""

    def devices(self) -> list[GpuDevice]:
        return [GpuDevice(0, None, "Simulated 80 GB", 81920.0, 1324.0, 80596.0, 90.0, None, None)]

    def process_memory(self, pid: int) -> dict[int, float]:
        return {0: 1024.0}


def tune_job(
    tmp: Path, stock_cfg: Path, bus: Bus, store: str = "memory.json"
) -> tuple[JobMemory, Cfg]:
    path = write_demo_cfg(tmp / "c.cfg", source=stock_cfg, max_batches=1000, steps=(800, 900))
    cfg = Cfg.load(path)
    for k, v in {"batch": 64, "subdivisions": 16, "width": 416, "height": 416}.items():
        cfg.set_net(k, v)
    cfg.set_random(0)
    mem = JobMemory(
        RoomyGpu(),
        MemoryStore(tmp / store),
        [0],
        "alexeyab",
        bus.publish,
        os.getpid,
        lambda: 1,  # (each JobMemory of these tests samples one launch, number 1)
        tune=True,
        every_s=0.01,
    )
    bus.subscribe(mem)
    return mem, cfg


def ask_tune(mem: JobMemory, cfg: Cfg) -> TuneStep | None:
    """Whether launch 1, at `cfg`, sampled once, would be tuned."""
    mem.launched(1, cfg, map_on=False)
    mem.sampler.sample_once()
    mem._tune_checked = 0.0  # (asked at most once per sampling interval)
    return mem.tune_step(
        cfg,
        1,
        phase="mid_run",
        iterations=200,
        ran_s=60.0,
        random=False,
        relaunches=0,
        max_relaunches=6,
    )


def test_what_tune_tried_is_read_back_from_the_events_file(tmp_path: Path, stock_cfg: Path) -> None:
    events = tmp_path / "events.jsonl"
    bus = Bus()
    sink = EventsFile(events)
    bus.subscribe(sink, essential=True)
    mem, cfg = tune_job(tmp_path, stock_cfg, bus)
    # Launch 1 at subdivisions=16 has room: tune to 8 (the runner records the decision).
    step = ask_tune(mem, cfg)
    assert step is not None and step.subdivisions == 8
    bus.publish({"type": "TuneDecided", "time": 1.0, "iteration": 300, **asdict(step)})
    mem.ended(1, None, ran=True)
    bus.publish({"type": "Checkpoint", "time": 2.0, "offset": 0})
    # Launch 2 at 8 runs out of memory (the ladder climbs back to 16): 8 is never tuned to again.
    cfg.set_net("subdivisions", 8)
    mem.launched(1, cfg, map_on=False)
    mem.ended(1, OomContext("mid_run", 350), ran=True)
    sink.close()
    tried = [r for r in read_records(events) if r["type"] == TUNE_TRIED]
    assert [(r["subdivisions"], r["why"]) for r in tried] == [(8, "out_of_memory")]
    assert (mem.tried, mem.tunes) == ({8}, 1)

    # A supervisor that attaches again reads both back (the out-of-memory after the
    # checkpoint too: it is the supervisor's own record, kept by `restore`).
    r = restore(events)
    assert (r.tune.tried, r.tune.tunes) == ({8}, 1)
    cfg.set_net("subdivisions", 16)
    # (Each with a memory model of its own that never saw the out-of-memory, which would
    # forbid 8 by itself: here only the tried set can.)
    again, _ = tune_job(tmp_path, stock_cfg, Bus(), "again.json")
    again.restore_tune(r.tune.tried, r.tune.tunes)
    assert ask_tune(again, cfg) is None  # 8 ran out of memory: tune leaves 16 as it is
    # Without what was restored the same launch would tune to 8 again.
    fresh, _ = tune_job(tmp_path, stock_cfg, Bus(), "fresh.json")
    fresh_step = ask_tune(fresh, cfg)
    assert fresh_step is not None and fresh_step.subdivisions == 8
    # The tunes count as well: two tunes before the restart, none after it.
    capped, _ = tune_job(tmp_path, stock_cfg, Bus(), "capped.json")
    capped.restore_tune((), MAX_TUNES)
    assert ask_tune(capped, cfg) is None


def test_restore_counts_each_tune_record_and_ignores_what_is_not_one(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    sink = EventsFile(events)
    for rec in [
        {"type": "TuneDecided", "time": 1.0, "iteration": 100, "subdivisions": 8},
        {"type": "Checkpoint", "time": 2.0, "offset": 0},
        {"type": "TuneDecided", "time": 3.0, "iteration": 200, "subdivisions": 4},
        {"type": TUNE_TRIED, "time": 4.0, "subdivisions": 2, "why": "out_of_memory"},
        {"type": TUNE_TRIED, "time": 5.0, "subdivisions": "2", "why": "hand-edited"},
        {"type": "Relaunched", "time": 6.0, "subdivisions": 1},
    ]:
        sink(rec)
    sink.close()
    r = restore(events)
    assert (r.tune.tried, r.tune.tunes) == ({8, 4, 2}, 2)
    assert (restore(tmp_path / "none.jsonl").tune.tried, restore(events).tune.tunes) == (set(), 2)


def _tune_job(
    tmp_path: Path,
    standin: Path,
    tiny_data: Path,
    stock_cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
    iteration_s: float,
    max_batches: int,
) -> Job:
    """The stand-in on a big simulated GPU with `memory.tune`: tune 2 → 1 early, an out of
    memory at 250 (a mini-batch over 4 images), the ladder back to 2."""
    monkeypatch.setenv("TRAINSUP_SCRIPT", "")
    monkeypatch.setenv(gpu_need.SIM_ENV, "")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    job = Job(
        tmp_path,
        standin,
        tiny_data,
        stock_cfg,
        script={"iteration_s": iteration_s, "oom_at": 250, "oom_mini_batch_over": 4},
        cfg={"subdivisions": 2},
        max_batches=max_batches,
        memory={"tune": True},
    )
    job.device(BIG_MIB)
    return job


def test_a_real_runs_tune_and_out_of_memory_are_restored_as_its_supervisor_held_them(
    tmp_path: Path,
    standin: Path,
    tiny_data: Path,
    stock_cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The runner and the stand-in darknet for real (the GPU simulated): tune 2 → 1, an out of
    # memory at 1, the ladder back to 2. What `restore` reads from the events file they wrote
    # is what the supervisor held when it ended.
    job = _tune_job(tmp_path, standin, tiny_data, stock_cfg, monkeypatch, 0.005, 600)
    runner = job.runner()
    result = run(runner)
    assert result.status == "finished", result.report["cause"]
    assert [e["trigger"] for e in job.events("Relaunched")] == ["tune", "memory"]
    assert [e["subdivisions"] for e in job.events(TUNE_TRIED)] == [1]
    r = restore(job.dir / "events.jsonl")
    assert runner.memory is not None
    assert (r.tune.tried, r.tune.tunes) == (runner.memory.tried, runner.memory.tunes) == ({1}, 1)


def test_attach_restores_what_tune_tried_into_the_new_supervisors_memory(
    tmp_path: Path,
    standin: Path,
    tiny_data: Path,
    stock_cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same real run as above, but its supervisor detaches after the tune and the out of
    # memory, and another takes it over (`run --attach`): the subdivisions that ran out of
    # memory and the tune it spent are the new supervisor's too, so it never tunes to 1 again.
    from supervisor.runtime.progress import Progress
    from supervisor.runtime.runner import JobRunner

    job = _tune_job(tmp_path, standin, tiny_data, stock_cfg, monkeypatch, 0.01, 900)

    def detach_after_the_ladder(r: JobRunner, p: Progress) -> None:
        if p.iteration >= 450 and r.memory is not None and r.memory.tried:
            r.request_detach()

    first = job.runner(detach_after_the_ladder)
    assert run(first).status == "detached"
    assert first.memory is not None and (first.memory.tried, first.memory.tunes) == ({1}, 1)
    second = JobRunner.for_job_dir(job.dir, job.config())
    result = run(second)
    assert result.status == "finished", result.report["cause"]
    assert second.memory is not None
    assert (second.memory.tried, second.memory.tunes) == ({1}, 1)
    assert [e["trigger"] for e in job.events("Relaunched")] == ["tune", "memory"]
