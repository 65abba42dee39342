"""Under `trainsup serve` with `public_url` set, every message about a job links to the job's
page, and that page is the daemon API's answer for the job (the scripted stand-in darknet)."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from supervisor.notify.receiver import Receiver
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    Daemon,
    job_yaml,
    make_daemon,
    set_script,
    short_tmp,
    wait_for,
    write_cfg,
)

pytestmark = pytest.mark.timeout(120)
PUBLIC = "https://trainsup.example.org/ml"


def test_daemon_messages_link_to_the_jobs_page(
    make_daemon: Callable[..., Daemon], short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.002)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=200)
    with Receiver() as rx:
        hook = {"type": "webhook", "url": rx.url("/hook"), "new_best_interval": None}
        d = make_daemon(public_url=PUBLIC + "/", notify=[hook]).start()
        job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg))
        assert d.wait_state(job_id, {"finished", "failed"}, timeout=60)["state"] == "finished"
        wait_for(
            lambda: any(m["event"] == "stopped" for m in rx.messages("/hook")),
            timeout=30,
            what="the stopped message",
        )
        got = rx.messages("/hook")
        # The link's path below the public URL, asked of the daemon's API, is this job.
        link = f"{PUBLIC}/jobs/{job_id}"
        page = d.http.get(urlsplit(link).path.removeprefix(urlsplit(PUBLIC).path))
        assert d.term() == 0
    assert page.status_code == 200 and page.json()["id"] == job_id
    events = [m["event"] for m in got]
    assert events[0] == "started" and events[-1] == "stopped", events
    assert {m["link"] for m in got} == {link}, got
