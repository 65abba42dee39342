"""`trainsup notify flush` and `trainsup notify test` as a user runs them (real processes),
including the delivery of what a killed process left in a job dir's outbox."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.notify.outbox import OUTBOX_FILE, SqliteOutbox
from supervisor.notify.receiver import Receiver, Reply
from supervisor.spec import parse_spec, redacted_yaml
from tests.test_notify_delivery import free_port

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
HEAD = "name: helmet-v4\ndarknet: {data: obj.data, cfg: yolo.cfg}\n"

# A run that queues four messages for a receiver that is down, then dies by SIGKILL.
CRASHING_RUN = """
import asyncio, os, signal, sys, time
from pathlib import Path
from supervisor.notify.delivery import DeliveryConfig
from supervisor.notify.listener import attach_notifications
from supervisor.spec import load_spec

job_dir = Path(sys.argv[1])
spec = load_spec(job_dir / "job.yaml")
listeners = []

async def main():
    notes = attach_notifications(listeners.append, spec.notify, job_dir, job_name=spec.name,
                                 config=DeliveryConfig(backoff_base=0.05, backoff_cap=0.1))
    for n in range(4):
        listeners[0]({"type": "Warning", "message": f"warning {n}", "rule": "t",
                      "numbers": {"n": n}, "time": time.time()})
    await asyncio.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def notify_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from supervisor.notify.cli import notify; notify()", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=50,
    )


def test_flush_delivers_what_a_killed_run_left(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook/SecretPathPart"
    env = {"HOOK_URL": url}
    job_dir = tmp_path / "helmet-v4-1"
    job_dir.mkdir()
    spec_text = HEAD + "notify:\n  - {type: webhook, url: '${HOOK_URL}'}\n"
    os.environ["HOOK_URL"] = url
    try:
        (job_dir / "job.yaml").write_text(redacted_yaml(parse_spec(spec_text)))
    finally:
        del os.environ["HOOK_URL"]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN, str(job_dir)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    box = SqliteOutbox(job_dir / OUTBOX_FILE)
    left = box.deliveries()
    box.close()
    assert [d.state for d in left] == ["pending"] * 4
    assert left[0].attempts >= 1  # it did try, against the receiver that was down

    with Receiver(port=port) as rx:
        p = notify_cli("flush", str(job_dir), "--timeout", "10", env=env)
        got = list(rx.requests)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 pending" in p.stdout and "delivered 4" in p.stdout
    assert [r.json["numbers"]["n"] for r in got] == [0, 1, 2, 3]
    # The ids the dead process gave the messages: a receiver can tell a repeat.
    assert [r.json["id"] for r in got] == [d.message.id for d in left]
    assert "SecretPathPart" not in p.stdout + p.stderr

    again = notify_cli("flush", str(job_dir), env=env)
    assert again.returncode == 0 and "0 pending" in again.stdout


def test_flush_needs_the_original_job_file_for_literal_urls(tmp_path: Path) -> None:
    port = free_port()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        HEAD + f"notify:\n  - {{type: slack, url: 'http://127.0.0.1:{port}/s/T/B/Sec'}}\n"
    )
    spec = parse_spec(job_file.read_text())
    job_dir = tmp_path / "run"
    job_dir.mkdir()
    (job_dir / "job.yaml").write_text(redacted_yaml(spec))
    from supervisor.notify.message import JobFacts, warning

    box = SqliteOutbox(job_dir / OUTBOX_FILE)
    (t,) = spec.notify
    box.add(
        warning(JobFacts("helmet-v4"), {"type": "Warning", "message": "m", "time": 1.0}),
        [(t.key, t.label)],
    )
    box.close()

    refused = notify_cli("flush", str(job_dir))
    assert refused.returncode == 1
    assert "is redacted in the job dir's job.yaml: pass the original job file" in refused.stderr
    assert "skipped  1 for slack http://127.0.0.1:" in refused.stdout

    with Receiver(port=port) as rx:
        p = notify_cli("flush", str(job_dir), "--job", str(job_file))
        assert p.returncode == 0, p.stdout + p.stderr
        assert "delivered 1" in p.stdout
        assert [r.path for r in rx.requests] == ["/s/T/B/Sec"]


def test_flush_without_an_outbox(tmp_path: Path) -> None:
    p = notify_cli("flush", str(tmp_path))
    assert p.returncode == 0 and "nothing to deliver" in p.stdout


def test_notify_test_prints_each_targets_outcome(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.plan("/gone/SecretA", Reply(404, body=b"no_service"))
        dead = free_port()
        job = tmp_path / "job.yaml"
        job.write_text(
            HEAD
            + "notify:\n"
            + f"  - {{type: webhook, url: '{rx.url('/ok/SecretB')}', secret: hmacsecret}}\n"
            + f"  - {{type: slack, url: '{rx.url('/gone/SecretA')}'}}\n"
            + f"  - {{type: discord, url: 'http://127.0.0.1:{dead}/SecretC'}}\n"
        )
        p = notify_cli("test", str(job), "--timeout", "3")
        got = list(rx.requests)
    out = p.stdout
    assert p.returncode == 1, out + p.stderr
    lines = out.strip().splitlines()
    assert lines[0].startswith("ok   webhook http://127.0.0.1:") and lines[0].endswith(": 200 OK")
    assert lines[1].startswith("FAIL slack") and "404 Not Found: no_service" in lines[1]
    assert lines[2].startswith("FAIL discord") and "connection failed" in lines[2]
    for secret in ("SecretA", "SecretB", "SecretC", "hmacsecret"):
        assert secret not in out + p.stderr
    # The targets are tried side by side: find each request by its path, not its order.
    by_path = {r.path: r for r in got}
    body = by_path["/ok/SecretB"].json
    assert body["event"] == "test" and body["job"] == {"name": "helmet-v4"}
    assert json.loads(by_path["/gone/SecretA"].body)["text"].startswith("✔ helmet-v4: test message")


def test_notify_test_without_targets(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(HEAD)
    p = notify_cli("test", str(job))
    assert p.returncode == 1 and "no `notify:` targets" in p.stderr


def test_notify_test_config_sends_to_the_daemons_targets(tmp_path: Path) -> None:
    with Receiver() as rx:
        config = tmp_path / "config.yaml"
        config.write_text(
            f"state_dir: {tmp_path / 'state'}\n"
            f"notify:\n  - {{type: webhook, url: '{rx.url('/all/Secret1')}'}}\n"
        )
        p = notify_cli("test", "--config", str(config), "--timeout", "5")
        got = list(rx.requests)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("ok   webhook http://127.0.0.1:") and "Secret1" not in p.stdout
    assert [r.path for r in got] == ["/all/Secret1"] and got[0].json["event"] == "test"
    both = notify_cli("test", str(config), "--config", str(config))
    assert both.returncode == 2 and "a job file, or --config" in both.stderr
