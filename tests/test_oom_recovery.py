"""Out of memory is a setting, not a failure; a hung darknet is relaunched (issue 12, the runner
side). The scripted stand-in darknet (tests/standins/scripted_darknet.py) trains on a simulated
GPU (`TRAINSUP_SIM_GPU`, tests/standins/gpu_need.py): it needs `gpu_need.need_mib(cfg…)` MiB —
nonlinear in mini-batch and input size, noisy, more while -map evaluates — and prints its
flavour's out-of-memory lines when that exceeds the device's free memory. Each test sizes the
device between two needs, so that exactly the expected ladder steps are taken."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from supervisor.darknet.cfg import Cfg
from supervisor.dataset.demo import write_demo_cfg
from supervisor.runtime import records
from supervisor.runtime.runner import JobResult, JobRunner, Progress, RunnerConfig
from supervisor.runtime.watchdog import LaunchState, StallWatchdog
from supervisor.spec import SpecError, load_spec, parse_spec
from supervisor.training.backoff import Backoff
from supervisor.training.ending import EndFacts, Relaunch, classify_end
from supervisor.training.events import FatalError, Iteration, MapResult, Resized
from supervisor.training.history import History
from supervisor.training.memory import (
    GpuUse,
    MemorySetting,
    OomContext,
    next_memory_step,
    next_subdivisions,
)
from tests.standins import gpu_need

pytestmark = pytest.mark.timeout(120)

OTHER_MIB = 300.0  # another process's use of the simulated GPU


class Job:
    """One stand-in job on a simulated GPU: files, script, device, and what the runner did."""

    def __init__(
        self,
        tmp: Path,
        standin: Path,
        data: Path,
        stock: Path,
        *,
        script: dict[str, Any],
        flavour: str = "alexeyab",
        cfg: dict[str, Any] | None = None,
        random: bool = False,
        max_batches: int = 300,
        **job: Any,
    ) -> None:
        self.tmp = tmp
        self.calls = tmp / "calls.log"
        self.gpu_dir = tmp / "gpu"
        path = write_demo_cfg(
            tmp / "c.cfg", source=stock, max_batches=max_batches, steps=(200, 250)
        )
        c = Cfg.load(path)
        for k, v in {"width": 416, "height": 416, **(cfg or {})}.items():
            c.set_net(k, v)
        c.set_random(1 if random else 0)
        c.save(path)
        self.cfg = c
        self.script_path = tmp / "script.json"
        self.script_path.write_text(
            json.dumps({"log": str(self.calls), "flavour": flavour, **script})
        )
        spec: dict[str, Any] = {
            "name": "t",
            "darknet": {
                "binary": str(standin),
                "flavour": flavour,
                "data": str(data),
                "cfg": str(path),
                "gpus": [0],
            },
            "evaluation": {"every": 100, "source": "supervisor"},
            "stop": {"plateau": False, "overfit": False, "not_learning": False},
            **job,
        }
        self.file = tmp / "job.yaml"
        self.file.write_text(yaml.safe_dump(spec))
        self.dir = tmp / "job"

    def need(self, **setting: Any) -> float:
        return gpu_need.need_mib(self.cfg, **setting)

    def device(self, free_mib: float) -> None:
        """A simulated GPU with `free_mib` free for darknet."""
        dev = gpu_need.sim_device(0, 12, other_used_mib=OTHER_MIB)
        dev["total_mib"] = OTHER_MIB + free_mib
        gpu_need.write_devices(self.gpu_dir, [dev])

    def config(self, **config: Any) -> RunnerConfig:
        os.environ["TRAINSUP_SCRIPT"] = str(self.script_path)
        os.environ[gpu_need.SIM_ENV] = str(self.gpu_dir)
        knobs: dict[str, Any] = {"poll": 0.02, "tick": 0.2, "grace": 3.0, "checkpoint_every": 0.0}
        return RunnerConfig(**(knobs | {"backoff": 0.01, "gpu_every": 0.05, **config}))

    def runner(
        self, on_progress: Callable[[JobRunner, Progress], None] | None = None, **config: Any
    ) -> JobRunner:
        r: JobRunner

        def progress(p: Progress) -> None:
            if on_progress is not None:
                on_progress(r, p)

        r = JobRunner(load_spec(self.file), self.dir, self.config(**config), progress)
        return r

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        recs = list(records.read_records(self.dir / "events.jsonl"))
        return [r for r in recs if kind is None or r["type"] == kind]

    def starts(self) -> list[int]:
        """The iteration each launch resumed from, as the stand-in saw it."""
        lines = self.calls.read_text().splitlines()
        return [int(c.split()[1]) for c in lines if c.startswith("train")]

    def launch_argvs(self) -> list[list[str]]:
        return [list(e["argv"]) for e in self.events("Launch")]


@pytest.fixture
def make_job(
    tmp_path: Path,
    standin: Path,
    tiny_data: Path,
    stock_cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., Job]:
    monkeypatch.setenv("TRAINSUP_SCRIPT", "")
    monkeypatch.setenv(gpu_need.SIM_ENV, "")
    # The memory model's file (memory_store.user_path) in the test's own state dir.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def make(sub: str = "", **kw: Any) -> Job:
        where = tmp_path / sub if sub else tmp_path
        where.mkdir(exist_ok=True)
        return Job(where, standin, tiny_data, stock_cfg, **kw)

    return make


def run(r: JobRunner) -> JobResult:
    return asyncio.run(r.run())


def between(low: float, high: float) -> float:
    assert low < high, (low, high)  # the test's premise: the smaller setting needs less
    return (low + high) / 2


def every_iteration_once(r: JobRunner, last: int) -> None:
    its = [i for i, _ in r.history.loss.points()]
    assert its == list(range(1, last + 1))


# --- out of memory at start -------------------------------------------------------------------


@pytest.mark.parametrize("words", ["cuda", "cudnn_alloc", "cudnn_algo"])
def test_out_of_memory_at_start_climbs_subdivisions_until_it_fits(
    make_job: Callable[..., Job], words: str
) -> None:
    # batch 8: mini-batch 8 and 4 do not fit, 2 does. cuDNN's allocation failure and its "no
    # FWD algo found" are memory errors too (facts §6).
    job = make_job(script={"iteration_s": 0.002, "oom_words": words})
    job.device(between(job.need(mini_batch=2), job.need(mini_batch=4)))
    runner = job.runner()
    result = run(runner)
    r = result.report
    assert result.status == "finished", r["cause"]
    relaunched = job.events("Relaunched")
    assert [e["change"] for e in relaunched] == [{"subdivisions": 2}, {"subdivisions": 4}]
    first = relaunched[0]["reason"]
    assert first.startswith("out of memory at start, before the first iteration")
    assert "(mini-batch 8 at 416×416" in first and "batch still 8, mini-batch 4" in first
    assert "starting again from the initial weights" in first  # nothing was saved yet
    assert all(e["trigger"] == "memory" for e in relaunched)
    assert job.starts() == [0, 0, 0]
    cfg = Cfg.load(next(job.dir.glob("*.cfg")))
    assert (cfg.batch, cfg.subdivisions) == (8, 4)  # batch never changes
    every_iteration_once(runner, 300)
    # report.json lists the launches, each with what ended it and how the next one started.
    launches = r["launches"]
    assert len(launches) == 3
    assert [x.get("ended_by", {}).get("change") for x in launches] == [
        {"subdivisions": 2}, {"subdivisions": 4}, None,
    ]  # fmt: skip
    on_disk = json.loads((job.dir / "report.json").read_text())
    assert on_disk["launches"][0]["ended_by"]["trigger"] == "memory"


# --- mid-run: after a resize, during -map -----------------------------------------------------


def test_out_of_memory_after_a_resize_turns_random_off_first(
    make_job: Callable[..., Job],
) -> None:
    # random=1: the stand-in resizes to 608×608 after iteration 150. The cfg's 416×416 fits,
    # 608×608 does not: random=0 is the step (a smaller mini-batch would have been slower).
    job = make_job(script={"iteration_s": 0.002, "resizes": [[150, 608]]}, random=True)
    job.device(between(job.need(), job.need(width=608, height=608)))
    runner = job.runner()
    result = run(runner)
    assert result.status == "finished", result.report["cause"]
    relaunched = job.events("Relaunched")
    assert [e["change"] for e in relaunched] == [{"random": 0}]
    reason = relaunched[0]["reason"]
    assert reason.startswith("out of memory at iteration 150, right after resizing to 608×608")
    assert "(mini-batch 8 at 608×608" in reason
    assert (
        reason.endswith("resuming from iteration 100") or "resuming from iteration 100;" in reason
    )
    assert job.starts() == [0, 100]  # no -clear: the count goes on from the newest save
    assert [(e["width"], e["height"]) for e in job.events("Resized")] == [(608, 608)]
    every_iteration_once(runner, 300)
    assert result.report["iterations"]["repeated"]  # 101…150 ran twice, kept once


def test_out_of_memory_during_map_drops_map_and_the_supervisor_evaluates(
    make_job: Callable[..., Job],
) -> None:
    # darknet's -map builds a second network: training fits, training + evaluation does not.
    job = make_job(
        script={"iteration_s": 0.002, "map_every": 150},
        evaluation={"every": 100, "source": "auto"},
    )
    job.device(between(job.need(), job.need(map_on=True)))
    runner = job.runner()
    result = run(runner)
    assert result.status == "finished", result.report["cause"]
    relaunched = job.events("Relaunched")
    assert len(relaunched) == 1 and relaunched[0]["drop_map"] is True
    assert relaunched[0]["change"] == {}  # the cfg is untouched
    assert relaunched[0]["reason"].startswith(
        "out of memory during darknet's -map evaluation at iteration 150"
    )
    argvs = job.launch_argvs()
    assert "-map" in argvs[0] and "-map" not in argvs[1]
    sources = {e["source"] for e in job.events("MapResult")}
    assert sources == {"supervisor"}  # darknet never got to print its mAP
    assert result.report["evaluation_source"] == "supervisor"
    assert job.starts() == [0, 100]
    every_iteration_once(runner, 300)


def test_a_dropped_map_stays_dropped_when_attach_resumes_the_job(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(
        script={"iteration_s": 0.004, "map_every": 150},
        evaluation={"every": 100, "source": "auto"},
        max_batches=500,
    )
    job.device(between(job.need(), job.need(map_on=True)))

    def detach_late(r: JobRunner, p: Progress) -> None:
        if p.iteration >= 330:
            r.request_detach()

    assert run(job.runner(detach_late)).status == "detached"
    pid = int(json.loads((job.dir / "launch.json").read_text())["pid"])
    os.killpg(pid, signal.SIGKILL)  # darknet dies while no supervisor watches
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and psutil.pid_exists(pid):
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    result = run(JobRunner.for_job_dir(job.dir, job.config()))
    assert result.status == "finished", result.report["cause"]
    argvs = job.launch_argvs()
    assert len(argvs) == 3 and "-map" in argvs[0]
    assert "-map" not in argvs[1] and "-map" not in argvs[2]  # not back after the restart
    assert [e["trigger"] for e in job.events("Relaunched")] == ["memory", "resume"]
    assert {e["source"] for e in job.events("MapResult")} == {"supervisor"}


def test_pjreddie_out_of_memory_whose_message_was_lost_still_climbs(
    make_job: Callable[..., Job],
) -> None:
    # pjreddie printf()s the CUDA error and abort()s: unflushed, only stderr's assertion is
    # left (facts §6). It is taken for out of memory, and the ladder says so.
    job = make_job(
        script={"iteration_s": 0.002, "lose_stdout": True}, flavour="pjreddie", max_batches=200
    )
    job.device(between(job.need(mini_batch=4), job.need(mini_batch=8)))
    result = run(job.runner())
    assert result.status == "finished", result.report["cause"]
    assert [e["change"] for e in job.events("Relaunched")] == [{"subdivisions": 2}]
    assert not any("CUDA Error" in e["message"] for e in job.events("GpuError"))


def test_the_ladder_gives_up_with_a_report_when_no_step_is_left(
    make_job: Callable[..., Job],
) -> None:
    # Nothing fits (not even mini-batch 1); batch 4 leaves two subdivisions steps.
    job = make_job(script={"iteration_s": 0.002}, cfg={"batch": 4}, max_batches=200)
    job.device(job.need(mini_batch=1) / 2)
    result = run(job.runner())
    r = result.report
    assert result.status == "failed"
    assert [e["change"] for e in job.events("Relaunched")] == [
        {"subdivisions": 2}, {"subdivisions": 4},
    ]  # fmt: skip
    assert "the ladder has no step left" in r["cause"]
    assert "memory.allow_resize is off" in r["cause"] and "raise subdivisions" in r["cause"]


def test_hankai_out_of_memory_box_climbs_the_ladder(make_job: Callable[..., Job]) -> None:
    # hank-ai's words come in its fatal-error box, then abort() (facts §6). Nothing fits.
    job = make_job(script={}, flavour="hankai", cfg={"batch": 4}, max_batches=200)
    job.device(job.need(mini_batch=1) / 2)
    result = run(job.runner())
    assert result.status == "failed"
    assert [e["change"] for e in job.events("Relaunched")] == [
        {"subdivisions": 2}, {"subdivisions": 4},
    ]  # fmt: skip
    assert "-nocolour" in job.launch_argvs()[0]  # it ran as hank-ai
    assert "the ladder has no step left" in result.report["cause"]


def test_the_relaunch_budget_ends_the_ladder(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.002}, memory={"max_relaunches": 1}, max_batches=200)
    job.device(job.need(mini_batch=1) / 2)
    result = run(job.runner())
    assert result.status == "failed"
    assert len(job.events("Relaunched")) == 1
    assert "after 1 relaunches (memory.max_relaunches = 1)" in result.report["cause"]


# --- a hang -----------------------------------------------------------------------------------


def test_a_hang_is_killed_and_relaunched_from_the_newest_weights(
    make_job: Callable[..., Job],
) -> None:
    # Each launch loads for 0.8 s before its first iteration: longer than the 0.4 s floor,
    # which must not count (darknet builds its network first). Then it hangs once after 150.
    job = make_job(
        flavour="pjreddie",
        script={
            "iteration_s": 0.002,
            "startup_s": 0.8,
            "hang_at": 150,
            "hang_marker": "",
        },
    )
    script = json.loads(job.script_path.read_text())
    script["hang_marker"] = str(job.tmp / "hung")
    job.script_path.write_text(json.dumps(script))
    job.device(job.need(map_on=True) * 2)
    runner = job.runner(stall_floor=0.4, stall_k=20.0, backoff=0.2)
    result = run(runner)
    assert result.status == "finished", result.report["cause"]
    stalled = job.events("Stalled")
    assert len(stalled) == 1 and stalled[0]["iteration"] == 150
    assert "no iteration line for" in stalled[0]["reason"]
    relaunched = job.events("Relaunched")
    assert [e["trigger"] for e in relaunched] == ["stall"]
    assert relaunched[0]["reason"].startswith("darknet hung: no iteration line for")
    assert "resuming from iteration 100" in relaunched[0]["reason"]
    assert relaunched[0]["backoff_s"] == 0.2 and "after 200 ms" in relaunched[0]["reason"]
    # The silence as numbers too (a chat message says "no output for …" from them).
    numbers = relaunched[0]["numbers"]
    assert numbers["silent_s"] >= 0.4 and numbers["since_launch"] is False
    launched = job.events("Launched")
    assert launched[1]["time"] - relaunched[0]["time"] >= 0.2  # the backoff was waited out
    assert job.starts() == [0, 100]
    every_iteration_once(runner, 300)


def test_a_stop_during_the_backoff_ends_the_job_without_relaunching(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(script={"iteration_s": 0.002}, max_batches=200)
    job.device(job.need(mini_batch=1) / 2)
    runner = job.runner(backoff=30.0)

    def on_record(rec: dict[str, Any]) -> None:
        if rec["type"] == "Relaunched":  # stop while it waits its 30 s
            asyncio.get_running_loop().call_soon(runner.request_stop, "stopped by the test")

    runner.bus.subscribe(on_record)
    started = time.monotonic()
    result = run(runner)
    assert time.monotonic() - started < 20
    assert result.status == "stopped" and result.report["cause"] == "stopped by the test"
    assert len(job.events("Relaunched")) == 1 and len(job.events("Launched")) == 1
    assert job.events("Relaunched")[0]["backoff_s"] == 30.0


def test_a_long_map_evaluation_is_not_a_hang(make_job: Callable[..., Job]) -> None:
    job = make_job(
        script={"iteration_s": 0.002, "map_every": 100, "map_s": 1.0},
        evaluation={"every": 100, "source": "auto"},
        max_batches=200,
    )
    job.device(job.need(map_on=True) * 2)
    result = run(job.runner(stall_floor=0.4))
    assert result.status == "finished", result.report["cause"]
    assert not job.events("Stalled") and not job.events("Relaunched")
    assert len([e for e in job.events("MapResult") if e["source"] == "darknet"]) == 2


def test_a_crash_loop_the_same_hang_twice_ends_the_job(make_job: Callable[..., Job]) -> None:
    job = make_job(flavour="pjreddie", script={"iteration_s": 0.002, "hang_at": 150})
    job.device(job.need() * 2)
    result = run(job.runner(stall_floor=0.3, backoff=0.05))
    r = result.report
    assert result.status == "failed"
    assert len(job.events("Stalled")) == 2 and len(job.events("Relaunched")) == 1
    assert "the second time after iteration 150" in r["cause"] and "dmesg" in r["cause"]
    assert r["kept"]["last"]["iteration"] == 100  # the newest complete save is kept


# --- the pure pieces --------------------------------------------------------------------------


def test_memory_keys_defaults_and_clear_errors() -> None:
    base = "name: a\ndarknet: {data: a.data, cfg: a.cfg}\n"
    m = parse_spec(base, "job.yaml", Path("/j")).memory
    assert (m.max_relaunches, m.allow_resize, m.tune, m.headroom) == (6, False, False, 0.1)
    with pytest.raises(SpecError) as info:
        parse_spec(base + "memory: {headroom: 10, max_relaunch: 3}\n", "job.yaml", Path("/j"))
    text = str(info.value)
    assert "memory.headroom = 10" in text and "write 0.1 for 10 %" in text
    assert "did you mean `max_relaunches`" in text


def test_subdivisions_keep_the_images_per_iteration() -> None:
    assert next_subdivisions(64, 8) == 16
    assert next_subdivisions(64, 64) is None
    assert next_subdivisions(24, 8) == 24  # 16 does not divide 24: the next that does
    assert next_subdivisions(6, 4) is None  # 6 // 4 × 4 = 4 images: no larger value keeps 4


def test_the_first_step_depends_on_when_memory_ran_out() -> None:
    s = MemorySetting(64, 16, random=True, map=True, width=608, height=608, allow_resize=True)
    mid = next_memory_step(s, OomContext("mid_run", 29843))
    assert mid is not None and mid.changes == {"subdivisions": 32}
    at_map = next_memory_step(s, OomContext("map", 1000))
    assert at_map is not None and at_map.drop_map and not at_map.changes
    bigger = next_memory_step(s, OomContext("resize", 500, (896, 896)))
    assert bigger is not None and bigger.changes == {"random": 0}
    smaller = next_memory_step(s, OomContext("resize", 500, (416, 416)))
    assert smaller is not None and smaller.changes == {"subdivisions": 32}
    last = MemorySetting(64, 64, random=False, map=False, width=608, height=608, allow_resize=True)
    step = next_memory_step(last, OomContext("mid_run", 1))
    assert step is not None and step.changes == {"width": 576, "height": 576}
    assert "10% fewer pixels" in step.words and "small objects" in step.words
    assert next_memory_step(MemorySetting(64, 64, False, width=608, height=608)) is None


def test_the_reason_reads_like_the_story() -> None:
    h = History()
    for i in (29842, 29843):
        h = h.add(Iteration(i, 1.0, 1.0, 0.001, line=i))
    facts = EndFacts(
        exit={"returncode": 1},
        final_complete=False,
        launch_errors=(),
        launch_fatal=(FatalError("darknet: ./src/cuda.c:36: check_error: Assertion", 29843),),
        memory=MemorySetting(64, 8, random=True, width=608, height=608),
        oom=OomContext("mid_run", 29843, gpu=GpuUse(0, 11.7 * 1024, 12.0 * 1024)),
    )
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch)
    assert d.reason == (
        "out of memory at iteration 29 843 (mini-batch 8 at 608×608 on GPU 0, 11.7/12.0 GB "
        "used): relaunched with subdivisions=16 (batch still 64, mini-batch 4)"
    )
    assert d.numbers["gpu_used_mib"] == 11.7 * 1024


def test_backoff_doubles_per_quick_failure_and_resets_after_a_long_run() -> None:
    b = Backoff(first=10, cap=300, reset=600)
    assert [b.delay(n) for n in range(0, 8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert b.failures_in_a_row(3, ran_s=5) == 4
    assert b.failures_in_a_row(3, ran_s=3600) == 1
    assert "after 20 s" in b.words(2) and "at most 5 min" in b.words(2)


def test_the_watchdog_waits_for_the_first_iteration_and_for_evaluations() -> None:
    w = StallWatchdog(k=10, floor=5)
    w.launched()
    assert w.check(1000.0, busy=False) is None  # not armed before the first iteration
    for k in range(10):
        w.on_iteration(100.0 + k, k + 1)  # 1 s per iteration: limit max(10 s, 5 s)
    assert w.limit() == 10
    assert w.check(105.0, busy=False) is None
    assert w.check(150.0, busy=True) is None  # an evaluation: the clock restarts after it
    assert w.check(155.0, busy=False) is None
    why = w.check(161.0, busy=False)
    assert why is not None and "after iteration 10" in why and "limit 10 s" in why, why


def phase(st: LaunchState) -> str:
    return st.phase  # read afresh each time (mypy would narrow the property)


def test_launch_state_tells_start_resize_map_and_mid_run() -> None:
    st = LaunchState()
    assert phase(st) == "start"
    st.on_event(Resized(896, 896, None), evaluating=False)
    assert st.oom_context(0).size == (896, 896) and phase(st) == "resize"
    st.on_event(Iteration(1, 1.0, 1.0, 0.001), evaluating=False)
    assert phase(st) == "mid_run"
    st.on_event(Iteration(2, 1.0, 1.0, 0.001), evaluating=True)
    assert phase(st) == "map"
    st.on_event(MapResult(2, 0.5), evaluating=False)
    assert phase(st) == "mid_run"


# --- the memory model: the next job starts where the last one fitted --------------------------


def test_the_next_job_with_the_same_cfg_and_gpu_starts_at_the_right_subdivisions(
    make_job: Callable[..., Job], tmp_path: Path
) -> None:
    first = make_job("one", script={"iteration_s": 0.002})
    free = between(first.need(mini_batch=2), first.need(mini_batch=4))
    first.device(free)
    r1 = run(first.runner())
    assert r1.status == "finished", r1.report["cause"]
    assert [e["change"] for e in first.events("Relaunched")] == [
        {"subdivisions": 2}, {"subdivisions": 4},
    ]  # fmt: skip
    words = [e["reason"] for e in first.events("Relaunched")]
    assert any("on GPU 0, " in w and "GB used" in w for w in words)
    peaks = [x.get("gpu_peak_mib") for x in r1.report["launches"]]
    assert peaks[-1] == pytest.approx(first.need(mini_batch=2), abs=0.2)  # the stand-in's use
    assert first.events("GpuSample")  # the sampler's readings are in the events
    model = json.loads((tmp_path / "state" / "trainsup" / "memory.json").read_text())
    assert model  # what it learnt is on disk for the next job

    second = make_job("two", script={"iteration_s": 0.002})
    second.device(free)
    r2 = run(second.runner())
    assert r2.status == "finished", r2.report["cause"]
    assert not second.events("Relaunched")  # no out of memory this time
    pick = second.events("MemoryPick")
    assert len(pick) == 1 and (pick[0]["previous"], pick[0]["subdivisions"]) == (1, 4)
    assert "starting at subdivisions=4" in pick[0]["reason"]
    assert pick[0]["reason"].startswith("the memory model ")  # and what it saw, in words
    assert "0.3 GB at mini-batch 2 (416×416) on Simulated 12 GB" in pick[0]["reason"]
    cfg = Cfg.load(next(second.dir.glob("*.cfg")))
    assert (cfg.batch, cfg.subdivisions) == (8, 4)
    assert second.starts() == [0]


def test_a_launch_silent_past_the_startup_limit_is_a_hang(make_job: Callable[..., Job]) -> None:
    """darknet stuck before its first iteration (GPU initialisation, a data mount) is hung
    too: killed, relaunched, and the same hang at the same place twice ends the job."""
    job = make_job(flavour="pjreddie", script={"iteration_s": 0.002, "startup_s": 30})
    job.device(job.need() * 2)
    result = run(job.runner(stall_floor=0.3, stall_startup=0.8, backoff=0.05))
    stalled = job.events("Stalled")
    assert len(stalled) == 2 and all("since the launch" in e["reason"] for e in stalled)
    relaunched = job.events("Relaunched")
    assert [e["trigger"] for e in relaunched] == ["stall"]
    assert relaunched[0]["numbers"]["since_launch"] is True
    assert relaunched[0]["numbers"]["silent_s"] >= 0.8
    assert result.status == "failed" and "the second time" in result.report["cause"]


def test_a_slow_start_within_the_startup_limit_is_not_a_hang(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(flavour="pjreddie", script={"iteration_s": 0.002, "startup_s": 0.8})
    job.device(job.need() * 2)
    result = run(job.runner(stall_floor=0.3, stall_startup=5.0))
    assert result.status == "finished", result.report["cause"]
    assert not job.events("Stalled")


# --- memory.tune: a GPU with room lowers subdivisions mid-run ---------------------------------

BIG_MIB = 24 * 1024.0  # far more than any mini-batch of the demo cfg needs


def test_tune_on_a_big_gpu_lowers_subdivisions_mid_run_and_finishes(
    make_job: Callable[..., Job],
) -> None:
    # batch 8, subdivisions 4 (mini-batch 2): room for mini-batch 4, then 8 — two tunes at most.
    job = make_job(
        script={"iteration_s": 0.005},
        cfg={"subdivisions": 4},
        max_batches=600,
        memory={"tune": True},
    )
    job.device(BIG_MIB)
    runner = job.runner()
    result = run(runner)
    assert result.status == "finished", result.report["cause"]
    relaunched = job.events("Relaunched")
    assert [e["trigger"] for e in relaunched] == ["tune", "tune"]
    assert [e["change"] for e in relaunched] == [{"subdivisions": 2}, {"subdivisions": 1}]
    first = relaunched[0]["reason"]
    assert first.startswith("GPU 0 has room: ") and "used at mini-batch 2" in first
    assert "the model predicts " in first and "at mini-batch 4" in first
    assert "relaunched with subdivisions=2 (batch still 8) for speed" in first
    assert relaunched[0]["backoff_s"] == 0.0  # nobody's failure
    # Each relaunch resumed from a complete save (no -clear): the count goes on.
    starts = job.starts()
    assert len(starts) == 3 and starts[0] == 0
    assert all(s % 100 == 0 and s > p for p, s in itertools.pairwise(starts))
    assert [e["iteration"] for e in relaunched] == starts[1:]
    assert not any("-clear" in argv for argv in job.launch_argvs())
    every_iteration_once(runner, 600)
    # Ended right after a complete save: only the iterations darknet ran past it are redone.
    redone = result.report["iterations"]["lines"] - 600
    print(f"iterations redone by 2 tunes: {redone}")
    assert 0 <= redone <= 2 * 25
    cfg = Cfg.load(next(job.dir.glob("*.cfg")))
    assert (cfg.batch, cfg.subdivisions) == (8, 1)


def test_tune_off_never_relaunches_for_room(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.005}, cfg={"subdivisions": 4}, max_batches=300)
    job.device(BIG_MIB)
    result = run(job.runner())
    assert result.status == "finished", result.report["cause"]
    assert not job.events("Relaunched") and not job.events("TuneDecided")
    assert Cfg.load(next(job.dir.glob("*.cfg"))).subdivisions == 4


def test_an_out_of_memory_after_a_tune_climbs_back_and_tune_never_retries(
    make_job: Callable[..., Job],
) -> None:
    # Mini-batch 8 runs out of memory at iteration 250 (past the model's prediction, as a
    # fragmenting allocator can): the ladder goes back to subdivisions=2, and tune leaves it.
    job = make_job(
        script={"iteration_s": 0.005, "oom_at": 250, "oom_mini_batch_over": 4},
        cfg={"subdivisions": 2},
        max_batches=600,
        memory={"tune": True},
    )
    job.device(BIG_MIB)
    runner = job.runner()
    result = run(runner)
    assert result.status == "finished", result.report["cause"]
    relaunched = job.events("Relaunched")
    assert [e["trigger"] for e in relaunched] == ["tune", "memory"]
    assert [e["change"] for e in relaunched] == [{"subdivisions": 1}, {"subdivisions": 2}]
    assert relaunched[1]["reason"].startswith("out of memory at iteration 250")
    assert len(job.events("TuneDecided")) == 1  # never again, with room to spare
    assert runner.memory is not None and runner.memory.tried == {1}  # out of memory there
    every_iteration_once(runner, 600)
    assert Cfg.load(next(job.dir.glob("*.cfg"))).subdivisions == 2


def test_the_tune_decision_and_its_guards() -> None:
    from supervisor.training.memory_model import KeyFacts, MemoryModel
    from supervisor.training.tune import GpuRoom, TuneFacts, decide_tune, tune_target

    assert [tune_target(64, s) for s in (16, 2, 1)] == [8, 1, None]
    assert tune_target(6, 3) == 1  # 6 ÷ 2 = 3 images: halving keeps the 6 per iteration
    key = KeyFacts("Simulated 24 GB", "fp", 416, 416, False)
    room = GpuRoom(0, 24576.0, 5222.4, 4922.4)  # 300 MiB of another process
    f = TuneFacts(64, 16, False, False, "mid_run", 50, 30.0, 10.0, 4922.4, [room])
    step = decide_tune(MemoryModel(), key, f)
    assert step is not None and step.subdivisions == 8
    assert step.reason.startswith("GPU 0 has room: 5.1 of 24 GB used at mini-batch 4; the model")
    assert step.reason.endswith("relaunched with subdivisions=8 (batch still 64) for speed")
    assert step.numbers["predicted_mib"] > 2 * 4922.4 * 0.99  # scaled up from the measured peak
    same = dataclasses.replace
    for no in (
        same(f, phase="resize"),
        same(f, phase="map"),
        same(f, random=True),
        same(f, map_on=True),  # darknet's -map: its second network may be missed by the peak
        same(f, iterations=1),
        same(f, ran_s=5.0),  # under two sampling intervals
        same(f, tried=frozenset({8})),  # tuned to (or out of memory at) 8 before
        same(f, tunes=2),
        same(f, relaunches=6),
        same(f, gpus=[GpuRoom(0, 10240.0, 5222.4, 4922.4)]),  # ~10 GB > 90 % of 10 GB
        same(f, subdivisions=1, batch=64),
    ):
        assert decide_tune(MemoryModel(), key, no) is None, no
