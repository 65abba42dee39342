"""Notifications wired to the real runner as `trainsup run` wires them, on the scripted
stand-in darknet: the started / new best / end messages a receiver gets match report.json."""

from __future__ import annotations

import asyncio
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
            return await runner.run()
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
