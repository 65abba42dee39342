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
    assert [m["event"] for m in got] == ["started", "new_best", "new_best", "stopped"]
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
    # As `trainsup run` wires them: the chart listener first, then notifications; each upload
    # waits for the chart drawn after its record (the listener draws in a thread, after a pause).
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
    assert kinds == ["j", "★", "★", "■"], kinds  # started as JSON, the rest with the chart
    images = [r.files["files[0]"][2] for r in got[1:]]
    assert all(i.startswith(_PNG_SIGNATURE) for i in images)
    final = (job.dir / "chart.png").read_bytes()
    assert images[-1] == final  # the stopped message shows the final chart
    assert images[0] != final  # the first best's chart is the one drawn at its evaluation
