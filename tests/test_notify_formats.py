"""Each service's payload as a real local HTTP server receives it: field names, the documented
limits, multipart for uploads, the generic webhook's fields and its HMAC signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from supervisor.notify.delivery import DeliveryConfig
from supervisor.notify.listener import Notifications, attach_notifications
from supervisor.notify.receiver import Receiver, Recorded
from supervisor.spec.notify import NotifyTarget

pytestmark = pytest.mark.timeout(30)

FAST = DeliveryConfig(backoff_base=0.05, backoff_cap=0.2, timeout=5, connect_timeout=2)
TOKEN = "123456789:AAE_secret-token-part-0123456789abcdef"
LONG = "plateau " * 2000  # 16 000 characters: over every service's limit


def target(kind: str, url: str, **more: Any) -> NotifyTarget:
    data: dict[str, Any] = {"type": kind, **more}
    if kind == "telegram":
        data.setdefault("token", TOKEN)
        data.setdefault("chat_id", -100123)
        data["url"] = url
    else:
        data["url"] = url
    return NotifyTarget.model_validate(data)


class Bus:
    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def subscribe(self, listener: Any) -> None:
        self.listeners.append(listener)

    def publish(self, record: dict[str, Any]) -> None:
        record.setdefault("time", time.time())
        for listener in self.listeners:
            listener(record)


async def publish_and_flush(
    targets: list[NotifyTarget],
    job_dir: Path,
    records: list[dict[str, Any]],
    timeout: float = 10,
    config: DeliveryConfig = FAST,
) -> Notifications:
    bus = Bus()
    notes = attach_notifications(
        bus.subscribe, targets, job_dir, job_name="helmet-v4", config=config
    )
    for r in records:
        bus.publish(dict(r))
    left = await notes.flush(timeout)
    assert left == 0
    return notes


def png(path: Path) -> Path:
    """A real 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00\xff\x00\x00")
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    )
    return path


STARTED = {
    "type": "JobStarted",
    "job": "helmet-v4",
    "flavour": "alexeyab",
    "argv": ["darknet", "detector", "train", "/j/job.data", "/j/yolov4-tiny.cfg"],
    "max_iterations": 6000,
    "max_time_s": 43200.0,
    "gpus": [1],
    "attach": False,
}
DECISION = {
    "type": "Decision",
    "decision": "stop",
    "rule": "plateau",
    "reason": "mAP has not gained 0.5 points for 2 000 iterations",
    "iteration": 5400,
    "advice": "keep best",
    "numbers": {},
}


def finished(reason: str = "") -> dict[str, Any]:
    return {
        "type": "Finished",
        "status": "stopped",
        "cause": "stopped by the plateau rule",
        "stop": {"rule": "plateau", "reason": reason or DECISION["reason"], "iteration": 5400},
        "best": {"iteration": 3400, "map": 0.812},
        "kept": {
            "best": {"path": "/j/kept/best.weights", "iteration": 3400, "map": 0.812},
            "last": {"path": "/j/kept/last.weights", "iteration": 5400, "map": 0.80},
        },
        "budget_used": 0.59,
    }


def one(rx: Receiver, n: int = 1) -> list[Recorded]:
    got = rx.wait_for(n)
    assert len(got) == n, [r.path for r in got]
    return got


async def test_slack_text_and_blocks_within_limits(tmp_path: Path) -> None:
    with Receiver() as rx:
        t = target("slack", rx.url("/services/T0/B0/SECRET"))
        await publish_and_flush([t], tmp_path, [STARTED, DECISION, finished(LONG)])
        started, stopped = one(rx, 2)
    s = started.json
    assert s["text"].startswith(
        "▶ helmet-v4 started on GPU 1 (yolov4-tiny, 6 000 it max, budget 12h)"
    )
    assert started.headers["content-type"] == "application/json"
    body = stopped.json
    assert set(body) == {"text", "blocks"}
    blocks = body["blocks"]
    assert 1 <= len(blocks) <= 50
    assert all(b["type"] in {"section", "context"} for b in blocks)
    first = blocks[0]["text"]
    assert first["type"] == "mrkdwn" and len(first["text"]) <= 3000
    assert first["text"].startswith("*■ helmet-v4 stopped: mAP plateau — plateau plateau")
    assert first["text"].endswith("characters cut]")  # cut with a note, not refused
    assert len(body["text"]) <= 3000
    fields = [f for b in blocks if "fields" in b for f in b["fields"]]
    assert all(len(f["text"]) <= 2000 and f["type"] == "mrkdwn" for f in fields)
    assert all(len(b.get("fields", [])) <= 10 for b in blocks)
    assert any("/j/kept/best.weights" in f["text"] for f in fields)
    assert blocks[-1]["type"] == "context"


def test_slack_escapes_mrkdwn_control_characters(tmp_path: Path) -> None:
    from supervisor.notify.formats import slack
    from supervisor.notify.message import JobFacts, warning

    m = warning(JobFacts("a<b>&c"), {"type": "Warning", "message": "<!channel> look", "time": 1.0})
    body = json.loads(slack(target("slack", "https://hooks.slack.com/x/y"), m).content or b"")
    text = body["blocks"][0]["text"]["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "a&lt;b&gt;&amp;c" in text
    assert "<!channel>" not in body["text"]  # the notification text is mrkdwn too


async def test_discord_embed_limits_and_chart_upload(tmp_path: Path) -> None:
    chart = png(tmp_path / "chart.png")
    with Receiver() as rx:
        t = target("discord", rx.url("/api/webhooks/1/SECRET"))
        many = {
            f"top{i}": {"path": "/x/" + "p" * 900, "iteration": i, "map": 0.5} for i in range(30)
        }
        rec = finished(LONG) | {"kept": many, "chart": str(chart)}
        await publish_and_flush([t], tmp_path, [STARTED, DECISION | {"advice": LONG}, rec])
        started, stopped = one(rx, 2)
    assert started.path == "/api/webhooks/1/SECRET?wait=true"
    s = started.json
    assert len(s["content"]) <= 2000 and s["allowed_mentions"] == {"parse": []}
    # The stopped message carries the chart: multipart with payload_json and files[0].
    assert stopped.headers["content-type"].startswith("multipart/form-data")
    assert set(stopped.form) == {"payload_json"}
    name, ctype, data = stopped.files["files[0]"]
    assert (name, ctype, data) == ("chart.png", "image/png", chart.read_bytes())
    p = stopped.json
    assert p["attachments"] == [{"id": 0, "filename": "chart.png"}]
    embed = p["embeds"][0]
    assert embed["image"] == {"url": "attachment://chart.png"}
    assert len(p["content"]) <= 2000
    assert len(embed["title"]) <= 256 and len(embed["description"]) <= 4096
    assert embed["description"].endswith("characters cut]")
    assert len(embed["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in embed["fields"])
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= 6000
    assert "fields left out" in embed["footer"]["text"]
    assert isinstance(embed["color"], int) and embed["timestamp"].endswith("Z")


async def test_teams_adaptive_card_1_4(tmp_path: Path) -> None:
    with Receiver() as rx:
        t = target("teams", rx.url("/workflows/SECRET"))
        await publish_and_flush([t], tmp_path, [DECISION, finished()])
        (rec,) = one(rx)
    body = rec.json
    assert body["type"] == "message"
    (att,) = body["attachments"]
    assert att["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert att["contentUrl"] is None
    card = att["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    kinds = [b["type"] for b in card["body"]]
    assert kinds[0] == "TextBlock" and "FactSet" in kinds
    assert card["body"][0]["text"].startswith("■ helmet-v4 stopped: mAP plateau")
    assert "Best 81.2 % at 3 400 → /j/kept/best.weights." in card["body"][1]["text"]
    assert "41 % of the budget unused." in card["body"][1]["text"]
    facts = next(b for b in card["body"] if b["type"] == "FactSet")["facts"]
    assert all(set(f) == {"title", "value"} for f in facts)


async def test_mattermost_text_and_attachments(tmp_path: Path) -> None:
    with Receiver() as rx:
        t = target("mattermost", rx.url("/hooks/SECRET"))
        await publish_and_flush(
            [t],
            tmp_path,
            [
                {
                    "type": "NewBest",
                    "iteration": 3400,
                    "map": 0.812,
                    "previous": {"iteration": 3000, "map": 0.79},
                }
            ],
        )
        (rec,) = one(rx)
    body = rec.json
    assert body["text"] == "★ helmet-v4: new best mAP 81.2 % at 3 400"
    (att,) = body["attachments"]
    assert {"fallback", "color", "title", "text"} <= set(att)
    assert att["color"].startswith("#") and att["text"] == "previous best 79.0 % at 3 000"


async def test_telegram_send_message_and_send_photo(tmp_path: Path) -> None:
    chart = png(tmp_path / "chart.png")
    with Receiver() as rx:
        t = target("telegram", rx.url(""))
        rec_long = {"type": "Warning", "message": "may be overfitting: " + LONG, "rule": "overfit"}
        await publish_and_flush(
            [t], tmp_path, [rec_long, DECISION, finished() | {"chart": str(chart)}]
        )
        warn, photo = one(rx, 2)
    assert warn.path == f"/bot{TOKEN}/sendMessage"
    body = warn.json
    assert body["chat_id"] == "-100123"
    assert len(body["text"]) <= 4096 and body["text"].endswith("characters cut]")
    assert body["text"].startswith("⚠ helmet-v4 may be overfitting: plateau")
    assert photo.path == f"/bot{TOKEN}/sendPhoto"
    assert photo.form["chat_id"] == "-100123"
    assert len(photo.form["caption"]) <= 1024
    assert photo.files["photo"] == ("chart.png", "image/png", chart.read_bytes())


async def test_webhook_fields_and_signature(tmp_path: Path) -> None:
    secret = "hmac-key-for-the-test"
    with Receiver() as rx:
        t = target("webhook", rx.url("/trainsup"), secret=secret)
        relaunch = {
            "type": "Relaunched",
            "reason": "out of memory",
            "iteration": 29843,
            "change": {"subdivisions": 16},
        }
        await publish_and_flush([t], tmp_path, [STARTED, relaunch, DECISION, finished()])
        started, relaunched, stopped = one(rx, 3)
    for rec in (started, relaunched, stopped):
        expected = "sha256=" + hmac.new(secret.encode(), rec.body, hashlib.sha256).hexdigest()
        assert rec.headers["x-trainsup-signature"] == expected
        assert rec.headers["idempotency-key"] == rec.json["id"]
    assert (
        relaunched.json["title"]
        == "↻ helmet-v4: out of memory at 29 843 — relaunched with subdivisions=16"
    )
    body = stopped.json
    assert body["event"] == "stopped"
    assert body["job"] == {"name": "helmet-v4"}
    assert len(body["id"]) == 32
    assert body["time"].endswith("Z")
    assert body["rule"] == "plateau" and body["reason"] == DECISION["reason"]
    assert body["best"] == {"iteration": 3400, "map": 0.812}
    assert body["kept"]["best"] == {"path": "/j/kept/best.weights", "iteration": 3400, "map": 0.812}
    assert body["budget_used"] == 0.59
    assert started.json["event"] == "started" and started.json["max_iterations"] == 6000
    assert relaunched.json["change"] == {"subdivisions": 16}


async def test_webhook_without_secret_is_unsigned(tmp_path: Path) -> None:
    with Receiver() as rx:
        await publish_and_flush([target("webhook", rx.url("/h"))], tmp_path, [STARTED])
        (rec,) = one(rx)
    assert "x-trainsup-signature" not in rec.headers


async def test_failed_and_events_filter(tmp_path: Path) -> None:
    with Receiver() as rx:
        only_end = target("webhook", rx.url("/end"), events=["stopped", "failed"])
        rec = {"type": "Finished", "status": "failed", "cause": "darknet failed (signal 11)"}
        await publish_and_flush(
            [only_end], tmp_path, [STARTED, {"type": "NewBest", "iteration": 100, "map": 0.1}, rec]
        )
        (got,) = one(rx)
    assert got.json["event"] == "failed"
    assert got.json["title"] == "✖ helmet-v4 failed: darknet failed (signal 11)"
    # The best seen earlier is still reported, though that target did not get new_best.
    assert got.json["best"] == {"iteration": 100, "map": 0.1}


def test_cut_keeps_the_limit_and_says_so() -> None:
    from supervisor.notify.formats import cut

    for n, limit in [(5000, 3000), (100_000, 4096), (1000, 999), (10, 10)]:
        text = "x" * n
        out = cut(text, limit)
        assert len(out) <= limit
        if n > limit:
            kept = out.index("…")
            assert out.endswith(f"[{n - kept} characters cut]")
        else:
            assert out == text
