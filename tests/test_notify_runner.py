"""Notifications wired to the real runner as `trainsup run` wires them, on the scripted
stand-in darknet: the started / new best / end messages a receiver gets match report.json."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from supervisor.notify.listener import attach_notifications
from supervisor.notify.receiver import Receiver, mismatches_with_report
from supervisor.runtime.runner import JobResult
from tests import test_runner_standin as st
from tests.test_notify_formats import FAST

pytestmark = pytest.mark.timeout(120)

# The stand-in job builder, used here as it is there (its own fixtures are in conftest).
make_job = st.make_job


def run_notified(job: Any) -> JobResult:
    async def go() -> JobResult:
        runner = job.runner()
        notes = attach_notifications(
            runner.bus.subscribe,
            runner.spec.notify,
            runner.job_dir,
            job_name=runner.spec.name,
            config=FAST,
        )
        try:
            result: JobResult = await runner.run()
            return result
        finally:
            assert await notes.flush(10) == 0
            await notes.aclose()

    return asyncio.run(go())


def test_a_training_tells_the_receiver_what_report_json_says(
    make_job: Callable[..., Any],
) -> None:
    with Receiver() as rx:
        job = make_job(
            script={"iteration_s": 0.002, "quality": [[100, 0.3], [200, 0.9], [300, 0.6]]},
            max_batches=300,
            notify=[{"type": "webhook", "url": rx.url("/e2e"), "new_best_interval": None}],
        )
        result = run_notified(job)
        got = rx.messages("/e2e")
    r = result.report
    assert result.status == "finished"
    # The stand-in's valid split holds 16 objects: the first evaluation's diagnosis is
    # insufficient data, told once (after that evaluation's new best: the runner diagnoses
    # once the evaluation is in its history and its best is said), as report.json ends with it.
    assert [m["event"] for m in got] == ["started", "new_best", "diagnosis", "new_best", "stopped"]
    assert got[2]["pattern"] == r["diagnosis"]["pattern"] == "insufficient_data"
    assert mismatches_with_report(got, r) == []
    assert [m["iteration"] for m in got if m["event"] == "new_best"] == [100, 200]
    end = got[-1]
    assert end["title"].startswith("■ t finished")
    assert (
        f"Best {r['best']['map'] * 100:.1f} % at 200 → {r['kept']['best']['path']}." in end["text"]
    )
    assert (job.dir / "outbox.sqlite").exists()


def test_a_job_without_targets_leaves_no_outbox(make_job: Callable[..., Any]) -> None:
    job = make_job(script={"iteration_s": 0.001}, max_batches=100)
    assert run_notified(job).status == "finished"
    assert not (job.dir / "outbox.sqlite").exists()


def test_discord_gets_the_chart_the_chart_listener_draws(make_job: Callable[..., Any]) -> None:
    # As `trainsup run` wires them: the chart listener, then notifications with it; each upload
    # waits for the drawing its record asked for (the listener draws in a thread, after a
    # pause): without the wait the first new best finds no chart at all and goes as text.
    from dataclasses import replace

    from supervisor.notify.formats import _PNG_SIGNATURE
    from supervisor.runtime.chart_listener import attach_chart

    with Receiver() as rx:
        job = make_job(
            script={"iteration_s": 0.01, "quality": [[100, 0.3], [200, 0.9], [300, 0.6]]},
            max_batches=300,
            notify=[{"type": "discord", "url": rx.url("/d"), "new_best_interval": None}],
        )

        async def go() -> JobResult:
            runner = job.runner()
            runner.prepare()
            chart = attach_chart(runner.bus.subscribe, runner.job_dir, lambda: runner.history)
            notes = attach_notifications(
                runner.bus.subscribe,
                runner.spec.notify,
                runner.job_dir,
                job_name=runner.spec.name,
                config=replace(FAST, chart_wait=30),
                chart=chart,
            )
            try:
                result: JobResult = await runner.run()
                return result
            finally:
                await asyncio.to_thread(chart.close)
                assert await notes.flush(60) == 0
                await notes.aclose()

        assert asyncio.run(go()).status == "finished"
        got = rx.requests
    kinds = [json.loads(r.form["payload_json"])["content"][:1] if r.files else "j" for r in got]
    # Started as JSON, the rest with the chart: the first new best, the diagnosis it brought
    # (insufficient data), the second new best, the end.
    assert kinds == ["j", "★", "⚕", "★", "■"], kinds
    images = [r.files["files[0]"][2] for r in got[1:]]
    assert all(i.startswith(_PNG_SIGNATURE) for i in images)
    final = (job.dir / "chart.png").read_bytes()
    # The stopped message shows the final chart (drawn after the Finished record). (Which
    # drawing a new best shows depends on the pace: the wait ends when the drawer is idle,
    # and the stand-in's evaluations come faster than drawings on a loaded machine.)
    assert images[-1] == final


def test_trainsup_run_uploads_its_chart_to_telegram(make_job: Callable[..., Any]) -> None:
    # The command as users run it: its chart listener and its notifications wired together.
    from supervisor.notify.formats import _PNG_SIGNATURE
    from tests.test_notify_formats import TOKEN

    with Receiver() as rx:
        tg = {"type": "telegram", "url": rx.url(""), "token": TOKEN, "chat_id": -100123}
        job = make_job(
            script={"iteration_s": 0.005, "quality": [[100, 0.3], [200, 0.9]]},
            max_batches=200,
            notify=[tg | {"new_best_interval": None}],
        )
        p = st.trainsup("run", str(job.file), "--workdir", str(job.dir), "--preflight", "off")
        out, _ = p.communicate(timeout=90)
        assert p.returncode == 0, out
        got = list(rx.requests)
    assert [r.path.rsplit("/", 1)[-1] for r in got] == [
        "sendMessage",  # started: no chart
        "sendPhoto",  # the first new best
        "sendPhoto",  # the diagnosis it brought
        "sendPhoto",
        "sendPhoto",  # finished
    ], [(r.path, r.form) for r in got]
    assert all(r.files["photo"][2].startswith(_PNG_SIGNATURE) for r in got[1:])
    assert got[-1].files["photo"][2] == (job.dir / "chart.png").read_bytes()
    assert got[-1].form["caption"].startswith("■ t finished")
    secret = TOKEN.split(":")[1].encode()
    assert secret not in out.encode()  # not in the command's output or logs
    kept = [f for f in job.dir.rglob("*") if f.is_file() and f.suffix != ".weights"]
    assert {f.name for f in kept} >= {"report.json", "job.yaml", "outbox.sqlite"}
    for f in kept:  # nor in the job dir: report, job.yaml copy, events, outbox, darknet's log
        assert secret not in f.read_bytes(), f
