"""The runner against a scripted stand-in darknet (tests/standins/scripted_darknet.py): every way
a training could be lost — an internal error, a hang-up, a slow save, a hung evaluation, odd
batch/subdivisions, a supervisor that was down — in seconds per test, without real training."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from supervisor.darknet.cfg import Cfg
from supervisor.darknet.weights import expected_weights_size, read_weights_header
from supervisor.dataset.demo import write_demo_cfg
from supervisor.runtime import records
from supervisor.runtime.runner import JobResult, JobRunner, Progress, RunnerConfig
from supervisor.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


class Job:
    """One stand-in job: its files, its script, and the runner's results."""

    def __init__(self, tmp: Path, standin: Path, data: Path, stock: Path, **kw: Any) -> None:
        self.tmp = tmp
        self.script_path = tmp / "script.json"
        self.calls = tmp / "calls.log"
        self.script(**kw.pop("script", {}))
        cfg_opts = kw.pop("cfg", {})
        cfg = write_demo_cfg(
            tmp / "c.cfg", source=stock, max_batches=kw.pop("max_batches", 300), steps=(200, 250)
        )
        if cfg_opts:
            c = Cfg.load(cfg)
            for k, v in cfg_opts.items():
                c.set_net(k, v)
            c.save(cfg)
        job: dict[str, Any] = {
            "name": "t",
            "darknet": {
                "binary": str(standin),
                "flavour": "pjreddie",
                "data": str(data),
                "cfg": str(cfg),
                "gpus": [],
            },
            "evaluation": {"every": 100, "source": "supervisor"},
            "stop": {"plateau": False, "overfit": False, "not_learning": False},
        }
        for key, value in kw.items():
            job[key] = value
        self.file = tmp / "job.yaml"
        self.file.write_text(yaml.safe_dump(job))
        self.dir = tmp / "job"

    def script(self, **s: Any) -> None:
        self.script_path.write_text(json.dumps({"log": str(self.calls), **s}))
        os.environ["TRAINSUP_SCRIPT"] = str(self.script_path)

    def runner(self, during: Callable[[JobRunner, Progress], None] | None = None,
               **config: Any) -> JobRunner:  # fmt: skip
        r: JobRunner

        def progress(p: Progress) -> None:
            if during is not None:
                during(r, p)

        config = {"backoff": 0.01, **config}  # relaunch backoff in milliseconds, not 10 s
        cfg = RunnerConfig(poll=0.02, tick=0.2, grace=3.0, checkpoint_every=0.0, **config)
        r = JobRunner(load_spec(self.file), self.dir, cfg, progress)
        return r

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        recs = list(records.read_records(self.dir / "events.jsonl"))
        return [r for r in recs if kind is None or r["type"] == kind]

    def launch_pid(self) -> int:
        return int(json.loads((self.dir / "launch.json").read_text())["pid"])


@pytest.fixture
def make_job(
    tmp_path: Path, standin: Path, tiny_data: Path, stock_cfg: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Job]:
    monkeypatch.setenv("TRAINSUP_SCRIPT", "")
    return lambda **kw: Job(tmp_path, standin, tiny_data, stock_cfg, **kw)


def run(r: JobRunner) -> JobResult:
    return asyncio.run(r.run())


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def full_size(job: Job) -> int:
    size = expected_weights_size(Cfg.load(next(job.dir.glob("*.cfg"))))
    assert size is not None
    return size


# --- 1. darknet is never left unsupervised -----------------------------------------------------


def test_an_internal_error_is_a_graceful_stop(
    make_job: Callable[..., Job], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(script={"iteration_s": 0.01}, max_batches=2000)
    written = [0]
    real = records.EventsFile.__call__

    def disk_full(self: records.EventsFile, rec: dict[str, Any]) -> None:
        written[0] += 1
        if rec["type"] == "Iteration" and rec["iteration"] >= 150:
            raise OSError(28, "No space left on device")
        real(self, rec)

    monkeypatch.setattr(records.EventsFile, "__call__", disk_full)
    result = run(job.runner())
    r = result.report
    assert result.status == "stopped", r["cause"]
    assert r["stop"]["rule"] == "internal_error"
    assert "No space left on device" in r["stop"]["reason"]
    assert r["internal_errors"] and "OSError" in r["internal_errors"][0]
    # darknet was stopped, after a complete save that is kept.
    assert not alive(job.launch_pid())
    assert r["iterations"]["last"] < 2000
    last = Path(r["kept"]["last"]["path"])
    assert last.stat().st_size == full_size(job)
    assert r["kept"]["last"]["iteration"] >= 150


def test_cancelling_the_runner_terminates_darknet(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.01}, max_batches=5000)

    async def go() -> None:
        r = job.runner()
        task = asyncio.create_task(r.run())
        while not (job.dir / "launch.json").exists():
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert not alive(job.launch_pid())


def trainsup(*args: str, **kw: Any) -> subprocess.Popen[str]:
    exe = Path(sys.executable).parent / "trainsup"
    return subprocess.Popen(
        [str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def wait_for(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def iterations_seen(job: Job) -> int:
    its = [r["iteration"] for r in job.events("Iteration")]
    return max(its, default=0)


def test_sighup_stops_gracefully(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.01}, max_batches=5000)
    p = trainsup("run", str(job.file), "--workdir", str(job.dir), "--preflight", "off")
    wait_for(lambda: (job.dir / "events.jsonl").exists() and iterations_seen(job) > 120)
    p.send_signal(signal.SIGHUP)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    report = json.loads((job.dir / "report.json").read_text())
    assert report["status"] == "stopped"
    assert "hung up" in report["stop"]["reason"]
    assert not alive(job.launch_pid())
    assert report["kept"]["last"]["iteration"] % 100 == 0
    # The words say where the rule fired and where darknet's save came, which differ.
    saved = report["stop"]["newest_save"]
    assert (
        f"user at iteration {report['stop']['iteration']} → stopped after darknet's save at {saved}"
        in out
    )


def test_detach_on_hangup_then_attach_to_the_running_darknet(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.004}, max_batches=1500)
    p = trainsup(
        "run", str(job.file), "--workdir", str(job.dir), "--preflight", "off",
        "--detach-on-hangup",
    )  # fmt: skip
    wait_for(lambda: (job.dir / "events.jsonl").exists() and iterations_seen(job) > 150)
    p.send_signal(signal.SIGHUP)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 3, out
    pid = job.launch_pid()
    assert alive(pid), "detached: darknet must keep training"
    assert "--attach" in out
    time.sleep(0.5)  # darknet prints on, unread
    again = trainsup("run", "--attach", str(job.dir))
    out, _ = again.communicate(timeout=90)
    assert again.returncode == 0, out
    report = json.loads((job.dir / "report.json").read_text())
    assert report["status"] == "finished", report["cause"]
    assert job.launch_pid() == pid  # the same darknet, no second launch
    assert len(job.events("Launched")) == 1
    its = [r["iteration"] for r in job.events("Iteration")]
    assert its == list(range(1, 1501)), "every iteration once, none lost"
    assert report["iterations"]["lines"] == 1500


def test_attach_resumes_a_training_that_died_while_no_one_watched(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(script={"iteration_s": 0.004}, max_batches=600)

    def detach_late(r: JobRunner, p: Progress) -> None:
        if p.iteration >= 330:
            r.request_detach()

    first = run(job.runner(detach_late))
    assert first.status == "detached"
    pid = job.launch_pid()
    os.killpg(pid, signal.SIGKILL)  # the training dies while no supervisor watches
    wait_for(lambda: not alive(pid))
    r = JobRunner.for_job_dir(job.dir, RunnerConfig(poll=0.02, checkpoint_every=0.0))
    result = run(r)
    assert result.status == "finished", result.report["cause"]
    relaunch = job.events("Relaunched")
    assert len(relaunch) == 1 and "supervisor was down" in relaunch[0]["reason"]
    assert relaunch[0]["iteration"] == 300  # the newest complete save
    calls = job.calls.read_text().split("\n")
    assert [c.split()[1] for c in calls if c.startswith("train")] == ["0", "300"]
    # The count went on from 300: darknet repeated 301..33x, the history keeps each once.
    assert result.report["iterations"]["last"] == 600
    assert result.report["iterations"]["repeated"] == 1
    assert len(result.report["launches"]) == 2


def test_attach_to_a_finished_job_records_it_as_finished(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.001}, max_batches=200)

    def detach(r: JobRunner, p: Progress) -> None:
        if p.iteration >= 20:
            r.request_detach()

    assert run(job.runner(detach)).status == "detached"
    wait_for(lambda: not alive(job.launch_pid()))
    result = run(JobRunner.for_job_dir(job.dir, RunnerConfig(poll=0.02)))
    assert result.status == "finished"
    assert not job.events("Relaunched")
    assert result.report["kept"]["last"]["iteration"] == 200


# --- 2. a graceful stop never cuts a save short -------------------------------------------------


def test_a_stop_waits_for_the_second_file_of_a_save(make_job: Callable[..., Job]) -> None:
    # pjreddie writes <base>.backup, then <base>_200.weights: both slowly here. A stop decided
    # at 150 must not TERM darknet while the second file is being written.
    job = make_job(script={"iteration_s": 0.005, "save_s": 1.0}, max_batches=2000)

    def stop_at_150(r: JobRunner, p: Progress) -> None:
        if p.iteration >= 150:
            r.request_stop("test")

    result = run(job.runner(stop_at_150))
    assert result.status == "stopped"
    size = full_size(job)
    for name in ("c.backup", "c_200.weights"):
        f = job.dir / "backup" / name
        assert f.stat().st_size == size, f"{name} was cut short"
    last = result.report["kept"]["last"]
    assert last["iteration"] == 200 and Path(last["path"]).stat().st_size == size


def test_a_short_file_is_never_a_snapshot_or_a_resume_point(make_job: Callable[..., Job]) -> None:
    from supervisor.darknet.weights import newest_weights

    job = make_job(script={"iteration_s": 0.002}, max_batches=300)
    result = run(job.runner())
    assert result.status == "finished"
    size = full_size(job)
    backup = job.dir / "backup"
    # A save cut at 1 020 bytes with a good header of a later iteration.
    (backup / "c_400.weights").write_bytes(struct.pack("<iiiQ", 0, 2, 0, 400 * 8) + b"\0" * 1000)
    newest = newest_weights(backup, "pjreddie", "c", 8, 1, expected_size=size)
    assert newest is not None and newest.iteration == 300


# --- 3. evaluation cannot hang the job, and its loss costs no weights -------------------------


def test_a_hung_evaluation_times_out_and_its_snapshot_is_kept(
    make_job: Callable[..., Job],
) -> None:
    job = make_job(script={"iteration_s": 0.002, "valid_hang": True}, max_batches=200)
    result = run(job.runner(first_eval_timeout=1.5))
    r = result.report
    assert result.status == "finished"
    failed = job.events("EvaluationFailed")
    assert failed and "longer than 1.5 s" in failed[0]["error"]
    unscored = {u["iteration"] for u in r["unscored"]}
    assert 100 in unscored, r["unscored"]
    assert (job.dir / "snapshots" / "100.weights").exists()  # it may be the best: kept
    assert r["best"] is None
    # No `valid` process is left behind.
    assert not [p for p in psutil.process_iter(["cmdline"])
                if "valid" in (p.info["cmdline"] or []) and str(job.dir) in " ".join(
                    p.info["cmdline"] or [])]  # fmt: skip


def test_evaluation_runs_in_its_own_session(make_job: Callable[..., Job]) -> None:
    # A Ctrl-C goes to the terminal's foreground process group: the evaluation must not be in
    # it (it would die half-way), so it runs in a session of its own.
    job = make_job(script={"iteration_s": 0.002, "valid_s": 0.5}, max_batches=100)
    seen: list[int] = []

    def look(r: JobRunner, p: Progress) -> None:
        for proc in psutil.Process().children(recursive=True):
            try:
                if "valid" in proc.cmdline():
                    seen.append(os.getsid(proc.pid))
            except psutil.Error:
                pass

    result = run(job.runner(look))
    assert result.status == "finished"
    assert result.report["best"] is not None
    if seen:
        assert os.getsid(0) not in seen


def test_the_scores_reach_the_kept_weights(make_job: Callable[..., Job]) -> None:
    job = make_job(
        script={"iteration_s": 0.002, "quality": [[100, 0.3], [200, 0.9], [300, 0.6]]},
        max_batches=300,
    )
    result = run(job.runner())
    r = result.report
    assert result.status == "finished"
    assert [e["iteration"] for e in r["evaluations"]] == [100, 200, 300]
    assert r["best"]["iteration"] == 200 == r["kept"]["best"]["iteration"]
    assert r["kept"]["last"]["iteration"] == 300 and r["unscored"] == []
    # The job trains on the CPU (gpus: []), and so does its evaluation.
    valids = [c for c in job.calls.read_text().splitlines() if c.startswith("valid")]
    assert valids and all(c.endswith("-nogpu") for c in valids)
    meta = json.loads((job.dir / "kept" / "best.json").read_text())
    assert meta["map"] == r["best"]["map"] and meta["role"] == "best"
    assert {e["type"] for e in job.events()} >= {"JobStarted", "NewBest", "Finished"}


# --- 4. iterations from headers when batch is not a multiple of subdivisions ------------------


def test_batch_64_subdivisions_24_snapshots_are_accepted(make_job: Callable[..., Job]) -> None:
    job = make_job(
        script={"iteration_s": 0.002}, max_batches=200, cfg={"batch": 64, "subdivisions": 24}
    )
    result = run(job.runner())
    r = result.report
    assert result.status == "finished"
    assert not job.events("SnapshotFailed")
    assert r["kept"]["best"]["iteration"] in (100, 200)
    header = read_weights_header(Path(r["kept"]["last"]["path"]))
    assert header.seen == 200 * 48


# --- the rest ----------------------------------------------------------------------------------


def test_an_earlier_job_dir_is_refused_and_left_as_it_was(make_job: Callable[..., Job]) -> None:
    from supervisor.runtime.runner import JobSetupError

    job = make_job(script={"iteration_s": 0.001}, max_batches=100)
    assert run(job.runner()).status == "finished"
    before = (job.dir / "job.yaml").read_text()
    with pytest.raises(JobSetupError, match="--attach"):
        run(job.runner())
    assert (job.dir / "job.yaml").read_text() == before


def test_a_time_budget_overrun_is_capped_and_reported(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.03}, max_batches=3000, budget={"max_time": "2s"})
    result = run(job.runner())
    r = result.report
    assert result.status == "stopped" and r["stop"]["rule"] == "max_time"
    # It stopped after darknet's next save, and says how long past the budget that was.
    assert r["kept"]["last"]["iteration"] == 100
    assert r["stop"]["over_budget_s"] > 0
    assert r["stop"]["stopped_after_iteration"] >= 100


def test_a_crash_keeps_the_newest_complete_save(make_job: Callable[..., Job]) -> None:
    job = make_job(script={"iteration_s": 0.002, "crash_at": 250}, max_batches=1000)
    result = run(job.runner())
    r = result.report
    assert result.status == "failed"
    assert "SIGABRT" in r["cause"]
    assert r["kept"]["last"]["iteration"] == 200


# --- out of memory: a setting, not a failure ---------------------------------------------------


def test_out_of_memory_raises_subdivisions_and_the_count_goes_on(
    make_job: Callable[..., Job],
) -> None:
    # The stand-in runs out of memory at iteration 150 while a mini-batch holds more than 2
    # images: batch 8 / subdivisions 1 → 2 → 4 gets it through, resuming from the save at 100.
    job = make_job(
        script={"iteration_s": 0.002, "oom_at": 150, "oom_mini_batch_over": 2}, max_batches=300
    )
    result = run(job.runner())
    r = result.report
    assert result.status == "finished", r["cause"]
    relaunched = job.events("Relaunched")
    assert [e["change"] for e in relaunched] == [{"subdivisions": 2}, {"subdivisions": 4}]
    assert relaunched[0]["reason"].startswith("out of memory at iteration 150 (mini-batch 8 at")
    assert ", resuming from iteration 100" in relaunched[0]["reason"]
    assert "subdivisions=2 (batch still 8" in relaunched[0]["reason"]
    assert all(e["iteration"] == 100 for e in relaunched)  # from the newest complete save
    starts = [c.split()[1] for c in job.calls.read_text().splitlines() if c.startswith("train")]
    assert starts == ["0", "100", "100"]
    cfg = Cfg.load(next(job.dir.glob("*.cfg")))
    assert (cfg.batch, cfg.subdivisions) == (8, 4)  # the job's copy keeps the setting
    assert r["iterations"]["last"] == 300 and len(r["launches"]) == 3


def test_out_of_memory_with_no_step_left_fails_with_the_advice(
    make_job: Callable[..., Job],
) -> None:
    # Out of memory whatever the mini-batch: subdivisions up to batch (8), then the ladder ends.
    job = make_job(script={"iteration_s": 0.002, "oom_at": 120}, max_batches=300)
    result = run(job.runner())
    r = result.report
    assert result.status == "failed"
    assert [e["change"] for e in job.events("Relaunched")] == [
        {"subdivisions": 2}, {"subdivisions": 4}, {"subdivisions": 8},
    ]  # fmt: skip
    assert "out of memory" in r["cause"] and "raise subdivisions" in r["cause"]
    assert r["kept"]["last"]["iteration"] == 100


def test_the_live_diagnosis_moves_from_too_early_and_reaches_the_report(
    make_job: Callable[..., Job],
) -> None:
    """The runner diagnoses after each evaluation (a `Diagnosis` record when the pattern moves,
    never before the evidence is there) and report.json holds the final reading, with the
    pre-flight check's split sizes weighed in."""
    from supervisor.runtime.preflight import check_job

    quality = [[100 * k, min(0.9, 0.1 * k)] for k in range(1, 13)]
    job = make_job(script={"iteration_s": 0.002, "quality": quality}, max_batches=1200)
    r = job.runner()
    r.check = check_job(r.spec)
    result = run(r)
    moves = job.events("Diagnosis")
    assert moves, "no Diagnosis record in events.jsonl"
    assert moves[0]["previous"] in (None, "too_early") and moves[0]["iteration"] >= 100
    assert all(m["pattern"] != "too_early" for m in moves[1:]), "evidence seen is not unseen"
    final = result.report["diagnosis"]
    assert final["pattern"] == moves[-1]["pattern"]
    assert final["evidence"] and final["advice"]
    # The tiny set's 16 valid objects: too few to trust a 4-point swing.
    assert final["pattern"] == "insufficient_data"
    facts = r._diagnosis.facts
    assert facts is not None and facts.max_batches == 1200
    assert r.check is not None
    sizes = {split.name: split.images for split in r.check.summary.splits}
    assert facts.valid_images == sizes["valid"] and facts.train_images == sizes["train"] > 0
