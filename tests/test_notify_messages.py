"""The words of each message, composed from bus records as the runner publishes them, with
fields missing as they may be; and the listener on the runtime's real bus."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.notify.listener import attach_notifications
from supervisor.notify.message import JobFacts, compose, finished, started
from supervisor.notify.receiver import Receiver, webhook_section
from supervisor.runtime.bus import Bus
from supervisor.spec import parse_spec
from tests.test_notify_formats import FAST, STARTED, target

pytestmark = pytest.mark.timeout(30)


def title(record: dict[str, Any], job: JobFacts | None = None) -> str:
    m = compose(job or JobFacts("helmet-v4"), {"time": 1.0, **record})
    assert m is not None
    return m.title


def test_started_wording() -> None:
    assert title(STARTED) == "▶ helmet-v4 started on GPU 1 (yolov4-tiny, 6 000 it max, budget 12h)"
    cpu = STARTED | {"gpus": [], "max_time_s": None}
    assert title(cpu) == "▶ helmet-v4 started on the CPU (yolov4-tiny, 6 000 it max)"
    attach = STARTED | {"gpus": [0, 1], "argv": None, "attach": True, "max_iterations": None}
    assert title(attach) == "▶ helmet-v4 supervised again (attached) on GPUs 0, 1 (budget 12h)"
    assert title({"type": "JobStarted"}) == "▶ helmet-v4 started"


def test_stop_and_failure_wording() -> None:
    job = JobFacts("j")
    job.best = {"iteration": 900, "map": 0.5}
    plain = finished(
        job, {"type": "Finished", "status": "finished", "cause": "reached max_batches"}
    )
    assert plain.title == "■ j finished: reached max_batches"
    assert plain.event == "stopped"
    assert plain.text == "Best 50.0 % at 900."  # from the NewBest seen before
    killed = finished(
        JobFacts("j"), {"type": "Finished", "status": "killed", "cause": "no exit record"}
    )
    assert (killed.event, killed.title) == ("failed", "✖ j was killed: no exit record")
    bare = finished(JobFacts("j"), {"type": "Finished"})
    assert bare.title == "■ j finished" and bare.text == ""
    used_all = finished(
        JobFacts("j"), {"type": "Finished", "status": "stopped", "budget_used": 1.0}
    )
    assert "unused" not in used_all.text


def test_stop_takes_rule_and_advice_from_the_decision() -> None:
    job = JobFacts("j")
    job.decision = {"rule": "overfit", "reason": "mAP fell", "iteration": 700, "advice": "add data"}
    m = finished(job, {"type": "Finished", "status": "stopped", "cause": "c", "budget_used": 0.25})
    assert m.title == "■ j stopped: overfitting — mAP fell"
    assert m.text == "75 % of the budget unused.\nAdvice: add data"
    assert ("Stopped at", "700") in m.facts
    assert m.numbers["rule"] == "overfit" and m.numbers["iteration"] == 700


def test_started_numbers_for_the_webhook() -> None:
    m = started(JobFacts("j"), STARTED | {"time": 5.0})
    assert m.numbers == {
        "flavour": "alexeyab",
        "max_iterations": 6000,
        "max_time_s": 43200.0,
        "gpus": [1],
        "attach": False,
        "cfg": "yolov4-tiny",
    }
    assert m.time == 5.0 and m.iso_time == "1970-01-01T00:00:05Z"


def test_records_that_make_no_message() -> None:
    for kind in ("Iteration", "MapResult", "Decision", "WeightsSaved", "Launch", None):
        assert compose(JobFacts("j"), {"type": kind, "time": 1.0}) is None


async def test_on_the_runtime_bus_a_bad_record_does_not_silence_the_rest(tmp_path: Path) -> None:
    with Receiver() as rx:
        bus = Bus()
        spec = parse_spec(
            "name: j\ndarknet: {data: a.data, cfg: b.cfg}\n" + webhook_section(rx.url("/e2e"))
        )
        notes = attach_notifications(bus.subscribe, spec.notify, tmp_path, config=FAST)
        bus.publish(STARTED | {"job": "helmet-v5", "time": time.time()})
        bus.publish({"type": "NewBest", "iteration": "x", "map": None, "time": "later"})
        bus.publish({"type": "Finished", "status": "stopped", "kept": "odd", "time": time.time()})
        assert await notes.flush(5) == 0
        await notes.aclose()
    got = rx.messages("/e2e")
    assert [m["event"] for m in got] == ["started", "new_best", "stopped"]
    assert all(m["job"] == {"name": "helmet-v5"} for m in got)  # the name JobStarted gave
    assert bus._listeners  # still subscribed


def test_no_targets_no_outbox(tmp_path: Path) -> None:
    subscribed: list[Any] = []
    notes = attach_notifications(subscribed.append, [], tmp_path)
    assert subscribed == [] and notes.summary() is None and notes.failures() == []
    assert not (tmp_path / "outbox.sqlite").exists()


def test_same_target_twice_is_one_target(tmp_path: Path) -> None:
    from supervisor.notify.listener import NotifyListener
    from supervisor.notify.outbox import SqliteOutbox

    t = target("webhook", "http://127.0.0.1:9/h")
    box = SqliteOutbox(tmp_path / "o.sqlite")
    listener = NotifyListener([t, t], box, lambda: None, job_name="j")
    listener({"type": "Warning", "message": "m", "time": 1.0})
    assert len(box.deliveries()) == 1
    box.close()


async def test_end_to_end_helper_checks_messages_against_the_report(tmp_path: Path) -> None:
    from supervisor.notify.receiver import mismatches_with_report

    report = {
        "status": "stopped",
        "stop": {"rule": "plateau", "reason": "r", "iteration": 800, "advice": "a"},
        "evaluations": [
            {"iteration": 300, "map": 0.4, "valid": True},
            {"iteration": 500, "map": 0.6, "valid": True},
            {"iteration": 700, "map": 0.5, "valid": True},
        ],
        "best": {"iteration": 500, "map": 0.6},
        "kept": {"best": {"path": "/j/kept/best.weights", "iteration": 500, "map": 0.6}},
    }
    records = [
        STARTED,
        {"type": "NewBest", "iteration": 300, "map": 0.4, "previous": None},
        {"type": "NewBest", "iteration": 500, "map": 0.6, "previous": None},
        {"type": "Decision", **report["stop"]},
        {
            "type": "Finished",
            "status": "stopped",
            "cause": "c",
            "stop": report["stop"],
            "best": report["best"],
            "kept": report["kept"],
        },
    ]
    with Receiver() as rx:
        bus = Bus()
        spec = parse_spec("name: j\ndarknet: {data: a, cfg: b}\n" + webhook_section(rx.url("/e")))
        notes = attach_notifications(bus.subscribe, spec.notify, tmp_path, config=FAST)
        for r in records:
            bus.publish({"time": time.time(), **r})
        assert await notes.flush(5) == 0
        await notes.aclose()
        got = rx.messages("/e")
    assert mismatches_with_report(got, report) == []
    wrong = {**report, "best": {"iteration": 700, "map": 0.5}}
    assert mismatches_with_report(got, wrong) == [
        "stopped.best = {'iteration': 500, 'map': 0.6}, report.json: {'iteration': 700, 'map': 0.5}"
    ]
    assert "is no evaluation" in mismatches_with_report(got, {**report, "evaluations": []})[0]


def test_redacted_targets_are_skipped_with_a_warning(tmp_path: Path) -> None:
    import structlog

    from supervisor.spec import redacted_yaml

    original = parse_spec(
        "name: j\ndarknet: {data: a, cfg: b}\n"
        "notify: [{type: slack, url: 'https://hooks.slack.com/services/T/B/SecretX'}]\n"
    )
    copy = parse_spec(redacted_yaml(original))  # what `run --attach` loads
    subscribed: list[Any] = []
    with structlog.testing.capture_logs() as logs:
        notes = attach_notifications(subscribed.append, copy.notify, tmp_path)
    assert subscribed == [] and notes.summary() is None
    (entry,) = logs
    assert entry["event"] == "notification target skipped"
    assert entry["target"] == "slack https://hooks.slack.com/…" and "${ENV_VAR}" in entry["why"]
