"""Why a job was relaunched, and what the live diagnosis found, as a channel reads them.

The Relaunched records are made the way the runner makes them: `classify_end` decides the
relaunch from an end's facts (the memory ladder, the watchdog's words for a hang, a resume, a
tune) and `relaunched_record` lays it out with the fields `JobRunner._relaunch` publishes — the
real runner on the stand-in darknet checks that layout. Diagnosis records come from
`runtime/diagnosis.py` (its record builder, and its watch over a real corpus curve). Every
message goes over the runtime's real bus to a real local HTTP receiver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bench.curves import curve_events, load_curve
from supervisor.notify.listener import attach_notifications
from supervisor.notify.outbox import SqliteOutbox
from supervisor.notify.receiver import Receiver, Recorded, mismatches_with_report
from supervisor.runtime.bus import Bus
from supervisor.runtime.diagnosis import DiagnosisWatch, diagnosis_record
from supervisor.runtime.records import to_record
from supervisor.runtime.watchdog import StallWatchdog
from supervisor.spec import parse_spec
from supervisor.spec.notify import EVENTS, NotifyTarget
from supervisor.training.diagnose import Diagnosis, DiagnosisFacts
from supervisor.training.ending import EndFacts, Relaunch, classify_end
from supervisor.training.events import GpuError, Iteration
from supervisor.training.history import History
from supervisor.training.memory import MemorySetting, OomContext, Phase, fmt_int
from supervisor.training.tune import TuneStep
from tests import test_runner_standin as st
from tests.test_notify_formats import FAST, target
from tests.test_notify_runner import run_notified

pytestmark = pytest.mark.timeout(60)

make_job = st.make_job  # the stand-in job builder (its fixtures are in conftest)

Record = dict[str, Any]


# --- records as the runtime makes them


def history_at(iteration: int) -> History:
    h = History()
    for i in range(iteration - 2, iteration + 1):
        h = h.add(Iteration(i, 1.0, 1.0, 0.001, line=i))
    return h


def oom_end(setting: MemorySetting, at: int = 1200, phase: Phase = "mid_run") -> Relaunch:
    """The runner's decision after darknet ran out of GPU memory at `at`."""
    facts = EndFacts(
        exit={"returncode": 1},
        final_complete=False,
        launch_errors=(GpuError("out_of_memory", "CUDA Error: out of memory", at, line=at),),
        memory=setting,
        oom=OomContext(phase, at),
    )
    d = classify_end(history_at(at), facts)
    assert isinstance(d, Relaunch) and d.kind == "memory", d
    return d


def stall_end(silent_s: float = 1500.0, after: int = 1200) -> Relaunch:
    """The watchdog's words for a hang of `silent_s`, and the relaunch they lead to."""
    dog = StallWatchdog(k=20, floor=600)
    dog.launched()
    for k in range(10):
        dog.on_iteration(100.0 + k, after - 9 + k)
    words = dog.check(109.0 + silent_s, busy=False)
    assert words is not None
    facts = EndFacts(
        exit={"returncode": None, "signal": 15},
        final_complete=False,
        memory=MemorySetting(64, 16, random=False),
        stalled=words,
    )
    d = classify_end(history_at(after), facts)
    assert isinstance(d, Relaunch) and d.kind == "stall", d
    return d


def resume_end(last: int = 1234) -> Relaunch:
    facts = EndFacts(exit=None, final_complete=False, supervisor_was_down=True)
    d = classify_end(history_at(last), facts)
    assert isinstance(d, Relaunch) and d.kind == "resume", d
    return d


def tune_end() -> Relaunch:
    numbers: dict[str, int | float] = {
        "gpu": 0,
        "gpu_used_mib": 10035.2,
        "gpu_total_mib": 24576.0,
        "mini_batch": 4,
        "subdivisions": 16,
        "batch": 64,
    }
    step = TuneStep(8, "GPU 0 has room: …: relaunched with subdivisions=8 for speed", numbers)
    d = classify_end(history_at(2000), EndFacts(exit=None, final_complete=False, tuned=step))
    assert isinstance(d, Relaunch) and d.kind == "tune", d
    return d


def relaunched_record(d: Relaunch, resumed: int, backoff_s: float = 0.0) -> Record:
    """The record `JobRunner._relaunch` publishes for decision `d` (runtime/runner.py)."""
    reason = d.reason
    if d.kind != "resume":
        reason += (
            f", resuming from iteration {fmt_int(resumed)}"
            if resumed
            else ", starting again from the initial weights (no complete save yet)"
        )
    return {
        "type": "Relaunched",
        "time": time.time(),
        "reason": reason,
        "trigger": d.kind,
        "change": dict(d.cfg_changes),
        "drop_map": d.drop_map,
        "numbers": dict(d.numbers),
        "weights": f"/j/backup/yolo_{resumed}.weights",
        "iteration": resumed,
        "backoff_s": backoff_s,
    }


def diagnosis(pattern: str, iteration: int, previous: str | None) -> Record:
    d = Diagnosis(
        pattern,  # type: ignore[arg-type]
        0.8,
        (f"evidence one for {pattern}", "evidence two"),
        ("a cause",),
        (f"first advice for {pattern}", "second advice"),
    )
    return diagnosis_record(d, iteration, previous)


async def deliver(
    records: list[Record], job_dir: Path, targets: list[NotifyTarget], rx: Receiver
) -> None:
    """Publish `records` on a real bus with notifications attached; wait until delivered."""
    bus = Bus()
    notes = attach_notifications(bus.subscribe, targets, job_dir, job_name="helmet-v4", config=FAST)
    for r in records:
        bus.publish(r)
    assert await notes.flush(10) == 0
    await notes.aclose()


def hook(rx: Receiver, **more: Any) -> list[NotifyTarget]:
    return [target("webhook", rx.url("/hook"), new_best_interval=None, **more)]


# --- relaunched: why, and what changed


async def test_each_relaunch_trigger_says_why_and_what_changed(tmp_path: Path) -> None:
    subdivisions = oom_end(MemorySetting(64, 2, random=False, width=416, height=416))
    random_off = oom_end(MemorySetting(8, 8, random=True, width=416, height=416))
    no_map = oom_end(MemorySetting(64, 2, random=False, map=True), phase="map")
    smaller = oom_end(MemorySetting(8, 8, random=False, width=608, height=608, allow_resize=True))
    records = [
        relaunched_record(subdivisions, 1000, backoff_s=10.0),
        relaunched_record(random_off, 1000),
        relaunched_record(no_map, 1000),
        relaunched_record(smaller, 1000),
        relaunched_record(stall_end(), 1000, backoff_s=0.2),
        relaunched_record(stall_end(), 0),
        relaunched_record(resume_end(), 1200),
        relaunched_record(tune_end(), 2000),
    ]
    with Receiver() as rx:
        await deliver(records, tmp_path, hook(rx), rx)
        got = rx.messages("/hook")
    titles = [m["title"] for m in got]
    assert titles == [
        "↻ helmet-v4: GPU out of memory at iteration 1 200: relaunched with subdivisions 4 (was 2)",
        "↻ helmet-v4: GPU out of memory at iteration 1 200: relaunched with random=0 (no "
        "multi-scale resizing)",
        "↻ helmet-v4: GPU out of memory at iteration 1 200: relaunched without darknet's -map "
        "(trainsup now scores the snapshots itself)",
        "↻ helmet-v4: GPU out of memory at iteration 1 200: relaunched with input size 576×576 "
        "(was 608×608)",
        "↻ helmet-v4: no output for 25 min after iteration 1 200: relaunched from the last "
        "saved weights (iteration 1 000)",
        "↻ helmet-v4: no output for 25 min after iteration 1 200: relaunched from the initial "
        "weights (no complete save yet)",
        "↻ helmet-v4: darknet ended while trainsup was down (last iteration 1 234): resumed "
        "from the last saved weights (iteration 1 200)",
        "↻ helmet-v4: GPU 0 has memory to spare (9.8 of 24 GB used): relaunched with "
        "subdivisions 8 (was 16) for speed",
    ]
    first = got[0]
    # The runner's whole reason is the details; the numbers say the same for a program.
    assert first["text"] == records[0]["reason"]
    assert "mini-batch 16" in first["text"] and "resuming from iteration 1 000" in first["text"]
    assert first["trigger"] == "memory" and first["change"] == {"subdivisions": 4}
    assert first["numbers"]["subdivisions"] == 2 and first["backoff_s"] == 10.0
    assert first["iteration"] == 1000 and first["drop_map"] is False
    assert got[2]["drop_map"] is True and got[2]["change"] == {}
    assert [m["trigger"] for m in got] == [
        "memory", "memory", "memory", "memory", "stall", "stall", "resume", "tune",
    ]  # fmt: skip
    assert "darknet hung: no iteration line for 1500 s" in got[4]["text"]


def test_relaunch_facts_say_where_it_resumes_and_the_wait() -> None:
    from supervisor.notify.message import JobFacts, compose

    def facts(rec: Record) -> dict[str, str]:
        m = compose(JobFacts("j"), rec)
        assert m is not None
        return dict(m.facts)

    assert facts(relaunched_record(stall_end(), 1000, backoff_s=0.2)) == {
        "Resumes from": "iteration 1 000",
        "Relaunch in": "0.2 s",
    }
    assert facts(relaunched_record(stall_end(), 0)) == {"Resumes from": "the initial weights"}
    assert facts(relaunched_record(oom_end(MemorySetting(64, 2, False)), 900, 1800.0)) == {
        "Resumes from": "iteration 900",
        "Relaunch in": "30 min",
    }


def test_a_hang_before_the_first_iteration_is_said_so() -> None:
    from supervisor.notify.message import JobFacts, compose

    dog = StallWatchdog(startup=600)
    dog.launched()
    assert dog.check(0.0, busy=False) is None  # the startup clock starts at the first check
    words = dog.check(700.0, busy=False)
    assert words is not None and "since the launch" in words
    facts = EndFacts(exit={"returncode": None}, final_complete=False, stalled=words)
    d = classify_end(history_at(1000), facts)
    assert isinstance(d, Relaunch)
    m = compose(JobFacts("j"), relaunched_record(d, 1000))
    assert m is not None
    assert m.title == (
        "↻ j: no output for 12 min after the launch: relaunched from the last saved weights "
        "(iteration 1 000)"
    )


def test_a_record_without_trigger_reads_as_before() -> None:
    from supervisor.notify.message import JobFacts, compose

    old = {"type": "Relaunched", "reason": "out of memory", "iteration": 29843, "time": 1.0}
    m = compose(JobFacts("j"), old | {"change": {"subdivisions": 16}})
    assert (
        m is not None
        and m.title == "↻ j: out of memory at 29 843 — relaunched with subdivisions=16"
    )
    m = compose(JobFacts("j"), {"type": "Relaunched", "trigger": "other", "time": 1.0})
    assert m is not None and m.title == "↻ j: relaunched"
    assert "trigger" not in m.numbers  # the fields of an unknown trigger are not guessed


def test_the_runners_out_of_memory_relaunches_reach_the_channel(
    make_job: Callable[..., Any],
) -> None:
    """The real runner on the stand-in darknet, out of memory at 150 while a mini-batch holds
    more than 2 images: batch 8 / subdivisions 1 → 2 → 4, each told with what it was."""
    with Receiver() as rx:
        job = make_job(
            script={"iteration_s": 0.002, "oom_at": 150, "oom_mini_batch_over": 2},
            max_batches=300,
            notify=[{"type": "webhook", "url": rx.url("/e2e"), "new_best_interval": None}],
        )
        result = run_notified(job)
        every = rx.messages("/e2e")
    assert result.status == "finished", result.report["cause"]
    assert mismatches_with_report(every, result.report) == []  # triggers as report.json's
    got = [m for m in every if m["event"] == "relaunched"]
    assert [m["title"] for m in got] == [
        "↻ t: GPU out of memory at iteration 150: relaunched with subdivisions 2 (was 1)",
        "↻ t: GPU out of memory at iteration 150: relaunched with subdivisions 4 (was 2)",
    ]
    published = job.events("Relaunched")
    assert [m["text"] for m in got] == [e["reason"] for e in published]
    # The layout `relaunched_record` copies is the one the runner publishes.
    assert set(published[0]) == set(relaunched_record(resume_end(), 0))


# --- diagnosis: when the live pattern becomes a problem


async def test_a_problem_is_told_once_per_pattern_and_good_never(tmp_path: Path) -> None:
    records = [
        diagnosis("too_early", 300, None),
        diagnosis("overtraining", 2000, "too_early"),
        diagnosis("good", 2400, "overtraining"),
        diagnosis("overtraining", 3000, "good"),
        diagnosis("corrupted", 3400, "overtraining"),
    ]
    with Receiver() as rx:
        await deliver(records, tmp_path, hook(rx), rx)
        got = rx.messages("/hook")
    assert [(m["event"], m["pattern"]) for m in got] == [
        ("diagnosis", "overtraining"),
        ("diagnosis", "corrupted"),
    ]
    ot = got[0]
    assert ot["title"] == "⚕ helmet-v4: diagnosis at 2 000: overtraining (confidence 0.80)"
    assert ot["text"] == (
        "Evidence:\n• evidence one for overtraining\n• evidence two\n"
        "What to do: first advice for overtraining"
    )
    assert "second advice" not in ot["text"]  # the first advice only; all in the numbers
    assert ot["advice"] == ["first advice for overtraining", "second advice"]
    assert ot["previous"] == "too_early" and ot["iteration"] == 2000 and ot["confidence"] == 0.8


async def test_a_restarted_supervisor_does_not_tell_a_pattern_again(tmp_path: Path) -> None:
    """`run --attach` or a restarted daemon: a fresh watch publishes the standing verdict
    again; the job dir's outbox remembers it was told."""
    with Receiver() as rx:
        await deliver([diagnosis("overtraining", 2000, "too_early")], tmp_path, hook(rx), rx)
        await deliver(
            [diagnosis("overtraining", 2100, None), diagnosis("low_variance", 2600, "x")],
            tmp_path,
            hook(rx),
            rx,
        )
        got = rx.messages("/hook")
    assert [m["pattern"] for m in got] == ["overtraining", "low_variance"]


async def test_the_live_watch_over_a_real_curve_tells_its_verdict_once(tmp_path: Path) -> None:
    """The corpus's corrupted run replayed through `DiagnosisWatch` on the same bus as the
    notifications: too early (not told), then corrupted, told once with its evidence."""
    c = load_curve("recipe-corrupted-s0")
    s = c["schedule"]
    bus = Bus()
    box = [History()]
    watch = DiagnosisWatch(
        lambda: box[0],
        DiagnosisFacts(max_batches=s["max_batches"], burn_in=s["burn_in"]),
        publish=bus.publish,
    )
    bus.subscribe(watch)
    with Receiver() as rx:
        notes = attach_notifications(
            bus.subscribe, hook(rx), tmp_path, job_name="helmet-v4", config=FAST
        )
        for e in curve_events(c):
            bus.publish(to_record(e))
            box[0] = box[0].add(e)
        assert await notes.flush(10) == 0
        await notes.aclose()
        got = rx.messages("/hook")
    assert watch.published is not None and watch.published.pattern == "corrupted"
    (m,) = got
    assert m["event"] == "diagnosis" and m["pattern"] == "corrupted"
    assert m["title"].startswith("⚕ helmet-v4: diagnosis at ")
    assert "corrupted dataset (confidence" in m["title"]
    assert m["evidence"] == list(watch.published.evidence)
    assert m["text"].endswith(f"What to do: {watch.published.advice[0]}")


async def test_diagnosis_is_an_event_a_target_chooses(tmp_path: Path) -> None:
    spec = parse_spec(
        "name: j\ndarknet: {data: a.data, cfg: b.cfg}\n"
        "notify:\n"
        "  - {type: webhook, url: 'http://127.0.0.1:9/a'}\n"
        "  - {type: webhook, url: 'http://127.0.0.1:9/b', events: [diagnosis]}\n"
        "  - {type: webhook, url: 'http://127.0.0.1:9/c', events: [stopped, failed]}\n"
    )
    every, only, ends = spec.notify
    assert "diagnosis" in every.events and every.events == EVENTS  # the default: all events
    assert only.events == ("diagnosis",) and "diagnosis" not in ends.events
    with Receiver() as rx:
        targets = [
            target("webhook", rx.url("/only"), events=["diagnosis"]),
            target("webhook", rx.url("/ends"), events=["stopped", "failed"]),
        ]
        records = [
            relaunched_record(stall_end(), 1000),
            diagnosis("not_learning", 1500, "too_early"),
        ]
        await deliver(records, tmp_path, targets, rx)
        assert [m["pattern"] for m in rx.messages("/only")] == ["not_learning"]
        assert rx.messages("/ends") == []


async def test_a_held_best_goes_before_a_diagnosis_and_ids_stay_unique(tmp_path: Path) -> None:
    """The new_best rate limit holds a second best; a diagnosis that is news releases it
    first (order holds), one that is not news leaves it held. Every row has its own id."""
    best = [
        {"type": "NewBest", "iteration": 1000, "map": 0.5, "time": time.time()},
        {"type": "NewBest", "iteration": 1100, "map": 0.6, "time": time.time()},
    ]
    with Receiver() as rx:
        t = [target("webhook", rx.url("/h"), new_best_interval="10m")]
        quiet = [*best, diagnosis("good", 1100, "too_early")]
        await deliver(quiet, tmp_path / "a", t, rx)
        assert [m.get("iteration") for m in rx.messages("/h")] == [1000]
        told = [*best, diagnosis("overtraining", 1100, "good")]
        await deliver(told, tmp_path / "b", t, rx)
        got = rx.messages("/h")[1:]
    assert [(m["event"], m["iteration"]) for m in got] == [
        ("new_best", 1000),
        ("new_best", 1100),
        ("diagnosis", 1100),
    ]
    box = SqliteOutbox(tmp_path / "b" / "outbox.sqlite")
    ids = [d.message.id for d in box.deliveries()]
    box.close()
    assert len(ids) == 3 and len(set(ids)) == 3
    assert [m["id"] for m in got] == ids


# --- every service lays them out


def titled(req: Recorded, kind: str) -> str:
    """The message's head line as each service's payload carries it."""
    body = req.json
    if kind == "teams":
        return str(body["attachments"][0]["content"]["body"][0]["text"])
    if kind in ("discord",):
        return str(body["content"])
    if kind == "webhook":
        return str(body["title"])
    return str(body["text"]).split("\n", 1)[0]  # slack, mattermost, telegram


async def test_every_service_renders_relaunch_and_diagnosis_messages(tmp_path: Path) -> None:
    kinds = ("slack", "discord", "teams", "mattermost", "telegram", "webhook")
    records = [
        relaunched_record(oom_end(MemorySetting(64, 2, random=False)), 1000),
        relaunched_record(stall_end(), 1000),
        diagnosis("overtraining", 2000, "too_early"),
    ]
    with Receiver() as rx:
        targets = [target(k, rx.url(f"/{k}")) for k in kinds]
        await deliver(records, tmp_path, targets, rx)
        requests = list(rx.requests)
    assert all(r.answered == 200 for r in requests)
    for kind in kinds:
        mine = [r for r in requests if r.path.startswith(f"/{kind}")]
        assert len(mine) == 3, (kind, [r.path for r in requests])
        heads = [titled(r, kind) for r in mine]
        assert heads[0].endswith("relaunched with subdivisions 4 (was 2)"), (kind, heads)
        assert heads[1].startswith("↻ helmet-v4: no output for 25 min"), (kind, heads)
        assert heads[2] == "⚕ helmet-v4: diagnosis at 2 000: overtraining (confidence 0.80)"
    tg = [r for r in requests if r.path.startswith("/telegram")]
    assert all(r.path.endswith("/sendMessage") for r in tg)  # no chart in the job dir: text
    assert "What to do: first advice for overtraining" in tg[2].json["text"]
    teams = next(r for r in requests if r.path == "/teams" and "⚕" in titled(r, "teams"))
    assert teams.json["attachments"][0]["content"]["body"][0]["color"] == "Warning"
    hooks = [r for r in requests if r.path == "/webhook"]
    assert [r.headers["x-trainsup-event"] for r in hooks] == [
        "relaunched", "relaunched", "diagnosis",
    ]  # fmt: skip


def test_the_end_to_end_check_sees_diagnosis_and_relaunch_mismatches() -> None:
    start = {"event": "started", "id": "a"}
    end = {"event": "stopped", "id": "z", "status": "stopped"}
    told = [
        {"event": "diagnosis", "id": "b", "pattern": "overtraining"},
        {"event": "diagnosis", "id": "c", "pattern": "overtraining"},
        {"event": "diagnosis", "id": "d", "pattern": "good"},
        {"event": "relaunched", "id": "e", "trigger": "stall"},
    ]
    report = {"status": "stopped", "launches": [{"ended_by": {"trigger": "memory"}}, {}]}
    got = mismatches_with_report([start, *told, end], report)
    assert got == [
        "diagnosis messages not one per problem pattern: ['overtraining', 'overtraining', 'good']",
        "relaunched triggers ['stall'], report.json's launches: ['memory']",
    ]
    fine = [start, told[0], {**told[3], "trigger": "memory"}, end]
    assert mismatches_with_report(fine, report) == []
