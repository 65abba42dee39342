"""The job's page linked from every format (Slack's link section, Mattermost's `title_link`,
Teams' `Action.OpenUrl`, Discord's embed URL, Telegram's text, the webhook's `link`), the
daemon config's `public_url`, and the chart uploaded with new_best / stopped / failed when
`<job_dir>/chart.png` exists at delivery time — all as a real local HTTP server receives it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from PIL import Image

from supervisor.notify.formats import render
from supervisor.notify.listener import CHART_FILE, attach_notifications
from supervisor.notify.message import JobFacts, new_best
from supervisor.notify.outbox import OUTBOX_FILE
from supervisor.notify.receiver import Receiver, Recorded, Reply
from supervisor.spec import SpecError
from supervisor.spec.notify import job_page
from tests.test_notify_formats import (
    DECISION,
    FAST,
    LONG,
    STARTED,
    TOKEN,
    Bus,
    finished,
    one,
    publish_and_flush,
    target,
)

pytestmark = pytest.mark.timeout(30)

LINK = "https://trainsup.example.org/jobs/12"
BEST = {"type": "NewBest", "iteration": 3400, "map": 0.812, "previous": None}


def chart(job_dir: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A real PNG where the chart listener writes it, and as it does: replaced atomically."""
    path = job_dir / CHART_FILE
    tmp = job_dir / f".{CHART_FILE}.tmp"
    Image.new("RGB", size, (30, 120, 200)).save(tmp, format="PNG")
    tmp.replace(path)
    return path


def by_path(requests: list[Recorded], part: str) -> list[Recorded]:
    return [r for r in requests if part in r.path]


# --- links


async def test_every_format_links_to_the_jobs_page(tmp_path: Path) -> None:
    with Receiver() as rx:
        targets = [
            target("slack", rx.url("/slack/SECRET")),
            target("mattermost", rx.url("/mm/SECRET")),
            target("teams", rx.url("/teams/SECRET")),
            target("discord", rx.url("/discord/SECRET")),
            target("telegram", rx.url("")),
            target("webhook", rx.url("/hook")),
        ]
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, targets, tmp_path, job_name="helmet-v4", link=LINK, config=FAST
        )
        for r in (STARTED, DECISION, finished()):
            bus.publish(dict(r))
        assert await notes.flush(10) == 0
        await notes.aclose()
        got = rx.wait_for(12)
    for kind in ("slack", "mm", "teams", "discord", "sendMessage", "hook"):
        assert len(by_path(got, kind)) == 2, kind
    for slack in by_path(got, "/slack/"):
        blocks = slack.json["blocks"]
        texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
        assert f"<{LINK}|Open helmet-v4>" in texts
        assert len(blocks) <= 50 and blocks[-1]["type"] == "context"
        assert LINK in slack.json["text"]
    for mm in by_path(got, "/mm/"):
        (att,) = mm.json["attachments"]
        assert att["title"] == "helmet-v4" and att["title_link"] == LINK
    for teams in by_path(got, "/teams/"):
        card = teams.json["attachments"][0]["content"]
        assert card["version"] == "1.4"
        assert card["actions"] == [
            {"type": "Action.OpenUrl", "title": "Open helmet-v4", "url": LINK}
        ]
    for discord in by_path(got, "/discord/"):
        assert discord.json["embeds"][0]["url"] == LINK
    for tg in by_path(got, "sendMessage"):
        assert tg.json["text"].endswith("\n" + LINK)
    for hook in by_path(got, "/hook"):
        assert hook.json["link"] == LINK


async def test_without_a_public_url_no_format_has_a_link(tmp_path: Path) -> None:
    with Receiver() as rx:
        targets = [
            target("slack", rx.url("/slack")),
            target("mattermost", rx.url("/mm")),
            target("teams", rx.url("/teams")),
            target("discord", rx.url("/discord")),
            target("webhook", rx.url("/hook")),
        ]
        await publish_and_flush(targets, tmp_path, [STARTED])
        got = rx.wait_for(5)
    bodies = {r.path.split("?")[0]: r.json for r in got}
    assert all("Open helmet-v4" not in json.dumps(b) for b in bodies.values())
    assert "title_link" not in bodies["/mm"]["attachments"][0]
    assert "actions" not in bodies["/teams"]["attachments"][0]["content"]
    assert "url" not in bodies["/discord"]["embeds"][0]
    assert "link" not in bodies["/hook"]


async def test_a_cut_telegram_caption_keeps_the_link_and_says_what_was_cut(
    tmp_path: Path,
) -> None:
    picture = chart(tmp_path)
    with Receiver() as rx:
        t = target("telegram", rx.url(""))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [t], tmp_path, job_name="helmet-v4", link=LINK, config=FAST
        )
        bus.publish(dict(DECISION))
        bus.publish(finished(LONG))
        assert await notes.flush(10) == 0
        await notes.aclose()
        (photo,) = one(rx)
    assert photo.path == f"/bot{TOKEN}/sendPhoto"
    caption = photo.form["caption"]
    assert len(caption) <= 1024
    assert caption.startswith("■ helmet-v4 stopped: mAP plateau — plateau")
    assert caption.endswith(f"characters cut]\n{LINK}")
    assert photo.files["photo"] == ("chart.png", "image/png", picture.read_bytes())


def test_job_page_is_the_daemon_apis_job_route() -> None:
    from aiohttp.test_utils import make_mocked_request

    from supervisor.service.api import make_app, show

    assert job_page("https://trainsup.example.org", 12) == LINK
    assert job_page("https://example.org/ml/trainsup/", "7") == (
        "https://example.org/ml/trainsup/jobs/7"
    )
    assert job_page(None, 12) is None and job_page("https://x.example", None) is None
    app = make_app(None, None)  # type: ignore[arg-type]  # routing only: no daemon needed
    match = asyncio.run(app.router.resolve(make_mocked_request("GET", "/jobs/12")))
    assert match.handler is show and match["id"] == "12"


def test_public_url_in_the_daemon_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.service.config import DaemonConfig, load_config

    f = tmp_path / "config.yaml"
    monkeypatch.setenv("TRAINSUP_PUBLIC", "https://ml.example.org/trainsup/")
    f.write_text("public_url: ${TRAINSUP_PUBLIC}\n")
    assert load_config(f).public_url == "https://ml.example.org/trainsup"
    assert DaemonConfig().public_url is None
    for bad, why in [
        ("ftp://x.example", "must be an http:// or https:// URL with a host"),
        ("https://bob:hunter22@x.example", "must not hold a user or password"),
        ("https://x.example/?a=1", "must not have a ?query"),
    ]:
        f.write_text(f"public_url: '{bad}'\n")
        with pytest.raises(SpecError) as e:
            load_config(f)
        assert ":1:13: public_url" in str(e.value) and why in str(e.value), str(e.value)


# --- charts


async def test_new_best_and_the_end_upload_the_chart_started_does_not(tmp_path: Path) -> None:
    picture = chart(tmp_path)
    with Receiver() as rx:
        targets = [
            target("discord", rx.url("/discord/SECRET")),
            target("telegram", rx.url("")),
            target("webhook", rx.url("/hook")),
        ]
        notes = await publish_and_flush(targets, tmp_path, [STARTED, BEST, DECISION, finished()])
        rows = notes.outbox.deliveries() if notes.outbox else []
        await notes.aclose()
        got = rx.wait_for(9)
    discord = by_path(got, "/discord/")
    assert [r.headers["content-type"].split(";")[0] for r in discord] == [
        "application/json",
        "multipart/form-data",
        "multipart/form-data",
    ]
    for r in discord[1:]:
        assert set(r.form) == {"payload_json"}
        assert r.files["files[0]"] == ("chart.png", "image/png", picture.read_bytes())
        p = r.json
        assert p["attachments"] == [{"id": 0, "filename": "chart.png"}]
        assert p["embeds"][0]["image"] == {"url": "attachment://chart.png"}
        assert p["allowed_mentions"] == {"parse": []}
    assert discord[1].json["content"] == "★ helmet-v4: new best mAP 81.2 % at 3 400"
    telegram = [r.path.rsplit("/", 1)[-1] for r in got if r.path.startswith("/bot")]
    assert telegram == ["sendMessage", "sendPhoto", "sendPhoto"]
    photos = [r for r in got if r.path.endswith("/sendPhoto")]
    assert all(r.files["photo"][2] == picture.read_bytes() for r in photos)
    assert photos[0].form == {"chat_id": "-100123", "caption": discord[1].json["content"]}
    # The generic webhook is JSON only: no path of this machine in it.
    assert all("chart" not in r.json for r in by_path(got, "/hook"))
    # The outbox keeps the chart's path, never its bytes.
    with_chart = [d.message.chart for d in rows if d.message.event != "started"]
    assert with_chart and set(with_chart) == {str(picture)}
    for f in tmp_path.glob(OUTBOX_FILE + "*"):  # the database and its WAL
        assert b"IEND" not in f.read_bytes(), f


async def test_a_chart_written_after_the_record_goes_with_the_retry(tmp_path: Path) -> None:
    with Receiver() as rx:
        rx.plan("/discord?wait=true", Reply(503, {"Retry-After": "1"}))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("discord", rx.url("/discord"))], tmp_path, config=FAST
        )
        bus.publish(dict(BEST))  # no chart yet
        first = (await asyncio.to_thread(rx.wait_for, 1))[0]
        picture = chart(tmp_path)
        assert await notes.flush(10) == 0
        await notes.aclose()
        first, second = one(rx, 2)
    assert first.headers["content-type"] == "application/json" and first.answered == 503
    assert second.headers["content-type"].startswith("multipart/form-data")
    assert second.files["files[0]"][2] == picture.read_bytes()


async def test_a_chart_gone_by_the_retry_leaves_a_text_message(tmp_path: Path) -> None:
    picture = chart(tmp_path)
    with Receiver() as rx:
        rx.plan(f"/bot{TOKEN}/sendPhoto", Reply(429, {"Retry-After": "1"}))
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("telegram", rx.url(""))], tmp_path, config=FAST
        )
        bus.publish(dict(BEST))
        await asyncio.to_thread(rx.wait_for, 1)
        picture.unlink()
        assert await notes.flush(10) == 0
        assert notes.failures() == []
        await notes.aclose()
        first, second = one(rx, 2)
    assert first.path.endswith("/sendPhoto") and first.answered == 429
    assert second.path.endswith("/sendMessage") and second.answered == 200
    assert second.json["text"].endswith(": new best mAP 81.2 % at 3 400")


async def test_a_refused_upload_is_sent_as_text_and_no_secret_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chart(tmp_path)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs, Receiver() as rx:
        refused = Reply(400, body=b'{"ok":false,"description":"IMAGE_PROCESS_FAILED"}')
        rx.plan(f"/bot{TOKEN}/sendPhoto", refused)
        rx.plan("/api/webhooks/1/DiscordSecretPart?wait=true", 500, 413)
        targets = [
            target("telegram", rx.url("")),
            target("discord", rx.url("/api/webhooks/1/DiscordSecretPart")),
        ]
        notes = await publish_and_flush(targets, tmp_path, [BEST])
        failures = notes.failures()
        await notes.aclose()
        got = rx.wait_for(5)
    assert failures == []
    tg = [(r.path.rsplit("/", 1)[-1], r.answered) for r in got if r.path.startswith("/bot")]
    assert tg == [("sendPhoto", 400), ("sendMessage", 200)]
    dc = [(r.headers["content-type"].split(";")[0], r.answered) for r in by_path(got, "/api/")]
    assert dc == [
        ("multipart/form-data", 500),  # retried as it was
        ("multipart/form-data", 413),  # the picture refused: the words go at once
        ("application/json", 200),
    ]
    assert "image" not in by_path(got, "/api/")[-1].json["embeds"][0]
    text = "\n".join([*(str(e) for e in logs), caplog.text])
    assert "notification chart refused, sent as text" in text
    assert "HTTP Request: POST" in caplog.text
    for secret in (TOKEN, TOKEN.split(":")[1], "DiscordSecretPart"):
        assert secret not in text, secret


@pytest.mark.parametrize(
    "content",
    [b"", b"not a png at all", None],  # empty, garbage, a PNG cut short mid-write
)
def test_a_broken_or_missing_chart_is_not_uploaded(tmp_path: Path, content: bytes | None) -> None:
    path = chart(tmp_path)
    path.write_bytes(path.read_bytes()[:-20] if content is None else content)
    message = new_best(JobFacts("helmet-v4"), {**BEST, "time": 1.0, "chart": str(path)})
    for kind, url in (("discord", "https://discord.example/api/webhooks/1/x"), ("telegram", "")):
        t = target(kind, url or "https://api.telegram.example")
        request = render(t, message)
        assert request.files is None and request.content is not None
        body: dict[str, Any] = json.loads(request.content)
        assert "image" not in json.dumps(body)
    path.unlink()
    assert render(target("telegram", "https://api.telegram.example"), message).files is None


class Drawer:
    """A chart drawer as delivery sees it (`ChartSource`): `flush` blocks until `done`."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.flushes = 0

    def flush(self, timeout: float = 30.0) -> bool:
        self.flushes += 1
        return self.done.wait(timeout)


async def test_an_upload_waits_for_the_drawing_its_record_asked_for(tmp_path: Path) -> None:
    chart(tmp_path, size=(8, 8))  # the previous evaluation's chart
    drawer = Drawer()
    with Receiver() as rx:
        bus = Bus()
        targets = [target("discord", rx.url("/d")), target("slack", rx.url("/slack"))]
        notes = attach_notifications(
            bus.subscribe, targets, tmp_path, config=replace(FAST, chart_wait=20), chart=drawer
        )
        bus.publish(dict(BEST))
        await asyncio.to_thread(rx.wait_for, 1)
        await asyncio.sleep(0.3)
        # Slack takes no file and went at once; Discord waits for the drawing.
        assert [r.path for r in rx.requests] == ["/slack"]
        fresh = chart(tmp_path, size=(64, 48))
        drawer.done.set()
        assert await notes.flush(10) == 0
        await notes.aclose()
        got = one(rx, 2)
    upload = got[1].files["files[0]"][2]
    assert upload == fresh.read_bytes()
    with Image.open(io.BytesIO(upload)) as img:
        assert img.size == (64, 48)
    assert drawer.flushes == 1


async def test_the_wait_for_a_drawing_ends_at_chart_wait(tmp_path: Path) -> None:
    old = chart(tmp_path)
    drawer = Drawer()  # never done: a drawing that hangs
    with Receiver() as rx:
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe,
            [target("telegram", rx.url(""))],
            tmp_path,
            config=replace(FAST, chart_wait=1.0),
            chart=drawer,
        )
        t0 = time.time()
        bus.publish(dict(BEST))
        assert await notes.flush(10) == 0
        await notes.aclose()
        (photo,) = one(rx)
    assert 0.9 <= photo.time - t0 < 5  # waited chart_wait, then sent the chart there is
    assert photo.files["photo"][2] == old.read_bytes()
    drawer.done.set()


async def test_a_late_message_does_not_wait_for_a_drawing(tmp_path: Path) -> None:
    # Delivered after a restart, long after its record: nothing to wait for.
    chart(tmp_path)
    drawer = Drawer()
    with Receiver() as rx:
        bus = Bus()
        notes = attach_notifications(
            bus.subscribe, [target("telegram", rx.url(""))], tmp_path, config=FAST, chart=drawer
        )
        bus.publish({**BEST, "time": time.time() - 3600})
        assert await notes.flush(5) == 0
        await notes.aclose()
        (photo,) = one(rx)
    assert photo.path.endswith("/sendPhoto") and drawer.flushes == 0
