"""Delivery against a real local HTTP server: a receiver that is down and comes back, a
response lost after the receiver accepted, 429 Retry-After, 5xx, a 404 that is final, a dead
target beside a live one, the new_best rate limit, and no secret in any log."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from supervisor.notify.delivery import DeliveryConfig, backoff
from supervisor.notify.listener import attach_notifications
from supervisor.notify.outbox import OUTBOX_FILE, SqliteOutbox
from supervisor.notify.receiver import Receiver, Reply
from tests.test_notify_formats import FAST, STARTED, TOKEN, Bus, target

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def best(it: int, m: float, t: float | None = None) -> dict[str, Any]:
    return {
        "type": "NewBest",
        "iteration": it,
        "map": m,
        "previous": None,
        "time": t or time.time(),
    }


def warning(n: int) -> dict[str, Any]:
    return {
        "type": "Warning",
        "message": f"warning number {n}",
        "rule": "test",
        "numbers": {"n": n},
    }


async def test_receiver_down_then_up_gets_every_message_in_order(tmp_path: Path) -> None:
    port = free_port()
    rx = Receiver(port=port)
    bus = Bus()
    notes = attach_notifications(
        bus.subscribe, [target("webhook", rx.url("/h"))], tmp_path, job_name="j", config=FAST
    )
    for n in range(6):
        bus.publish(warning(n))
    await asyncio.sleep(0.6)  # several refused connections and backoffs
    assert notes.pending() == 6
    rows = SqliteOutbox(tmp_path / OUTBOX_FILE).deliveries()
    assert rows[0].attempts >= 2 and "connection failed" in (rows[0].error or "")
    with rx.start():
        assert await notes.flush(10) == 0
        got = rx.wait_for(6)
    assert [r.json["numbers"]["n"] for r in got] == list(range(6))
    assert notes.summary() == {"sent": 6, "pending": 0, "failed": []}
    await notes.aclose()


async def test_lost_response_is_retried_with_the_same_id(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.plan("/h", "drop", "drop")
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("webhook", rx.url("/h"))], tmp_path, config=FAST
        )
        bus.publish(warning(1))
        bus.publish(warning(2))
        assert await notes.flush(10) == 0
        got = rx.wait_for(4)
        await notes.aclose()
    assert [r.answered for r in got] == [None, None, 200, 200]
    first, retry1, retry2, second = got
    assert first.json["id"] == retry1.json["id"] == retry2.json["id"]
    assert first.body == retry2.body  # byte for byte: the signature would match too
    assert first.headers["idempotency-key"] == retry2.headers["idempotency-key"]
    assert second.json["numbers"]["n"] == 2 and second.json["id"] != first.json["id"]


async def test_429_retry_after_is_respected(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.plan("/h", Reply(429, {"Retry-After": "1"}))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("webhook", rx.url("/h"))], tmp_path, config=FAST
        )
        bus.publish(warning(1))
        assert await notes.flush(10) == 0
        limited, accepted = rx.wait_for(2)
        await notes.aclose()
    assert limited.answered == 429 and accepted.answered == 200
    # FAST's backoff is ≤ 0.2 s: only Retry-After explains a wait of a second.
    assert accepted.time - limited.time >= 1.0


async def test_telegram_retry_after_in_the_body(tmp_path: Path) -> None:
    with Receiver() as rx:
        body = b'{"ok":false,"error_code":429,"parameters":{"retry_after":1}}'
        rx.plan(f"/bot{TOKEN}/sendMessage", Reply(429, body=body))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("telegram", rx.url(""))], tmp_path, config=FAST
        )
        bus.publish(warning(1))
        assert await notes.flush(10) == 0
        limited, accepted = rx.wait_for(2)
        await notes.aclose()
    assert accepted.time - limited.time >= 1.0


async def test_5xx_is_retried_with_backoff(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.plan("/h", 500, 502, 503)
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("webhook", rx.url("/h"))], tmp_path, config=FAST
        )
        bus.publish(warning(1))
        assert await notes.flush(10) == 0
        got = rx.wait_for(4)
        await notes.aclose()
    assert [r.answered for r in got] == [500, 502, 503, 200]
    assert len({r.json["id"] for r in got}) == 1


async def test_404_is_final_and_reported(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.plan("/h", Reply(404, body=b"no_service"))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("slack", rx.url("/h"))], tmp_path, config=FAST
        )
        bus.publish(warning(1))
        bus.publish(warning(2))  # the next message still goes
        assert await notes.flush(10) == 0
        await asyncio.sleep(0.3)  # a retry would have come by now
        got = list(rx.requests)
        failures = notes.failures()
        await notes.aclose()
    assert [r.answered for r in got] == [404, 200]
    (f,) = failures
    assert f["status"] == 404 and f["event"] == "warning" and f["attempts"] == 1
    assert "no_service" in f["error"] and f["target"].startswith("slack http://127.0.0.1:")
    assert "/h" not in f["target"]
    from supervisor.notify.outbox import job_dir_summary

    assert job_dir_summary(tmp_path) == {"sent": 1, "pending": 0, "failed": failures}


async def test_a_dead_target_slows_neither_the_publisher_nor_the_others(tmp_path: Path) -> None:
    # A receiver that accepts connections and never answers: each attempt waits its timeout.
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    dead_url = f"http://127.0.0.1:{hang.getsockname()[1]}/dead"
    slow = DeliveryConfig(backoff_base=5, backoff_cap=5, timeout=5, connect_timeout=5)
    try:
        with Receiver() as rx:
            bus = Bus()
            live = target("webhook", rx.url("/live"))
            notes = attach_notifications(
                bus.subscribe, [target("webhook", dead_url), live], tmp_path, config=slow
            )
            assert notes.outbox is not None
            t0 = time.monotonic()
            for n in range(20):
                bus.publish(warning(n))
            publish_s = time.monotonic() - t0
            got = await asyncio.to_thread(rx.wait_for, 20, 5.0)
            live_s = time.monotonic() - t0
            for _ in range(100):  # the last answer is being marked
                if notes.outbox.pending(live.key) == 0:
                    break
                await asyncio.sleep(0.02)
            assert notes.pending() == 20  # all of the dead target's, none of the live one's
            assert await notes.flush(0.1) == 20
            await notes.aclose()
    finally:
        hang.close()
    assert publish_s < 0.5, publish_s  # 20 records: outbox rows only, no network
    assert live_s < 3, live_s  # the dead target's 5 s timeout did not hold the live one
    assert [r.json["numbers"]["n"] for r in got] == list(range(20))


async def test_new_best_rate_limited_latest_sent_when_the_interval_ends(tmp_path: Path) -> None:
    with Receiver() as rx:
        bus = Bus()
        limited = target("webhook", rx.url("/limited"), new_best_interval="1s")
        every = target("webhook", rx.url("/every"), new_best_interval=None)
        notes = attach_notifications(bus.subscribe, [limited, every], tmp_path, config=FAST)
        now = time.time()
        bus.publish(best(100, 0.30, now))
        bus.publish(best(200, 0.40, now + 0.1))
        bus.publish(best(300, 0.50, now + 0.2))
        await asyncio.sleep(0.3)
        early = [r.json["iteration"] for r in rx.requests if r.path == "/limited"]
        await asyncio.sleep(1.0)
        assert await notes.flush(5) == 0
        await notes.aclose()
    assert early == [100]
    lim = [r for r in rx.requests if r.path == "/limited"]
    assert [r.json["iteration"] for r in lim] == [100, 300]  # 200 was superseded
    assert lim[1].time - lim[0].time >= 0.7
    assert [r.json["iteration"] for r in rx.requests if r.path == "/every"] == [100, 200, 300]


async def test_held_best_goes_before_a_later_message_and_not_after_the_end(tmp_path: Path) -> None:
    with Receiver() as rx:
        bus = Bus()
        t = target("webhook", rx.url("/h"), new_best_interval="1h")
        notes = attach_notifications(bus.subscribe, [t], tmp_path, config=FAST)
        bus.publish(best(100, 0.3))
        bus.publish(best(200, 0.4))  # held
        bus.publish(warning(1))  # the held best first, then the warning: order kept
        bus.publish(best(300, 0.5))  # held, then dropped: the stopped message says it
        bus.publish({"type": "Finished", "status": "stopped", "cause": "budget"})
        assert await notes.flush(5) == 0
        await notes.aclose()
    events = [(r.json["event"], r.json.get("iteration")) for r in rx.requests]
    assert events == [
        ("new_best", 100),
        ("new_best", 200),
        ("warning", None),
        ("stopped", None),
    ]
    assert rx.requests[-1].json["best"] == {"iteration": 300, "map": 0.5}


async def test_a_listener_error_does_not_raise_into_the_bus(tmp_path: Path) -> None:
    with Receiver() as rx, structlog.testing.capture_logs() as logs:
        bus = Bus()
        notes = attach_notifications(bus.subscribe, [target("webhook", rx.url("/h"))], tmp_path)
        assert notes.outbox is not None
        notes.outbox.close()  # every insert now fails
        bus.publish(warning(1))  # logged, not raised: the bus would drop the listener
        await notes.aclose()
    (entry,) = [e for e in logs if e["event"] == "notification not queued"]
    assert entry["record"] == "Warning" and "ProgrammingError" in entry["error"]


def test_backoff_grows_is_capped_and_jittered() -> None:
    import random

    cfg = DeliveryConfig(backoff_base=1, backoff_cap=60)
    rng = random.Random(1)
    waits = [backoff(n, cfg, rng) for n in range(12)]
    assert all(0.5 * min(60, 2**n) <= w <= min(60, 2**n) for n, w in enumerate(waits))
    assert max(waits) <= 60
    assert len({round(backoff(3, cfg, rng), 6) for _ in range(20)}) > 1  # jitter


async def test_no_secret_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret_path = "/services/T0AAAA/B0BBBB/SlackSecretPart"
    hook_secret = "hmac-secret-value-xyz"
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs, Receiver() as rx:
        rx.plan(secret_path, 503, Reply(404, body=b"gone"))
        rx.plan(f"/bot{TOKEN}/sendMessage", 500)
        dead = f"http://127.0.0.1:{free_port()}/dead/DeadSecretPart"
        targets = [
            target("slack", rx.url(secret_path)),
            target("telegram", rx.url("")),
            target("webhook", rx.url("/w/WebhookSecretPart"), secret=hook_secret),
            target("discord", dead),
        ]
        bus = Bus()
        notes = attach_notifications(bus.subscribe, targets, tmp_path, config=FAST)
        bus.publish(dict(STARTED))
        # Until Slack's 503 was retried and its 404 refused (seconds on a loaded machine); the
        # dead Discord target keeps retrying, so a single flush would wait its whole timeout.
        for _ in range(100):
            await notes.flush(0.2)
            if notes.failures():
                break
        failures = notes.failures()
        await notes.aclose()
    text = "\n".join([*(str(e) for e in logs), caplog.text, str(failures)])
    assert "notification refused" in text and "notification retry" in text
    assert "HTTP Request: POST" in caplog.text  # httpx did log its requests, scrubbed
    for secret in (
        "SlackSecretPart",
        TOKEN,
        TOKEN.split(":")[1],
        hook_secret,
        "WebhookSecretPart",
        "DeadSecretPart",
    ):
        assert secret not in text, secret
    assert "http://127.0.0.1:" in text  # the host stays, for diagnosis


@pytest.mark.parametrize(
    ("status", "retried", "error"),
    [
        (408, True, None),
        (503, True, None),
        (400, False, "400 Bad Request"),
        (401, False, "401 Unauthorized"),
        (403, False, "403 Forbidden"),
        (410, False, "410 Gone"),
        (301, False, "redirect not followed"),
    ],
)
async def test_which_statuses_are_retried(
    tmp_path: Path, status: int, retried: bool, error: str | None
) -> None:
    with Receiver() as rx:
        rx.plan("/h", Reply(status, {"Location": "http://elsewhere.example/"}))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("webhook", rx.url("/h"))], tmp_path, config=FAST
        )
        bus.publish(warning(1))
        assert await notes.flush(5) == 0
        await asyncio.sleep(0.25 if not retried else 0)  # a retry would have come by now
        answered = [r.answered for r in rx.requests]
        failures = notes.failures()
        await notes.aclose()
    if retried:
        assert answered == [status, 200] and failures == []
    else:
        assert answered == [status]
        (f,) = failures
        assert f["status"] == status and error in f["error"]
