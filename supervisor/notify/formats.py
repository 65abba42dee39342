"""One request per (message, target), in the service's documented payload and within its limits.

Limits (characters; text over a limit is cut with a note, never refused):
    slack       incoming webhook: `text` + `blocks`; a section's text 3 000, a section field
                2 000, 10 fields per section, 50 blocks per message
    discord     execute webhook: `content` 2 000; an embed's title 256, description 4 096,
                25 fields (name 256, value 1 024), footer 2 048, 6 000 over all its text;
                files as multipart (`payload_json` + `files[0]`)
    teams       Workflows "when a Teams webhook request is received": a message with one
                Adaptive Card 1.4 attachment (the Office 365 connectors are retired); the card's
                text is kept under 8 000 so the post stays inside Teams' ~28 KB
    mattermost  incoming webhook: `text` (a post holds 16 383) + `attachments`
    telegram    Bot API sendMessage (text 4 096) or, with a chart, sendPhoto (caption 1 024),
                the token in the URL path
    webhook     JSON: event, id, time, job {name, id}, title, text and the event's numbers;
                `X-Trainsup-Signature: sha256=<hex HMAC-SHA256 of the raw body>` with a secret
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from supervisor import __version__
from supervisor.notify.message import Message
from supervisor.spec.notify import NotifyTarget

USER_AGENT = f"trainsup/{__version__}"
# Discord takes up to 10 MB per file on an unboosted server, Telegram 10 MB per photo.
MAX_UPLOAD = 8 * 1024 * 1024
# The services that get the chart as an upload.
UPLOADS = frozenset({"discord", "telegram"})

SLACK_SECTION = 3000
SLACK_FIELD = 2000
SLACK_FIELDS_PER_SECTION = 10
SLACK_BLOCKS = 50
DISCORD_CONTENT = 2000
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELDS = 25
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_FOOTER = 2048
DISCORD_EMBED_TOTAL = 6000
TEAMS_TEXT = 8000
MATTERMOST_TEXT = 16383
MATTERMOST_ATTACHMENT_TEXT = 8000
TELEGRAM_TEXT = 4096
TELEGRAM_CAPTION = 1024


@dataclass(frozen=True)
class HttpRequest:
    """A POST: a raw JSON body (`content`) or a multipart form (`data` + `files`)."""

    url: str
    content: bytes | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def cut(text: str, limit: int) -> str:
    """`text` within `limit` characters; a cut one ends with a note saying how much is gone."""
    if len(text) <= limit:
        return text
    gone = len(text) - limit
    while True:
        keep = max(limit - len(f"… [{gone} characters cut]"), 0)
        if len(text) - keep <= gone:
            # The count said is the count cut (it can only have fewer digits than `gone`).
            return (text[:keep] + f"… [{len(text) - keep} characters cut]")[:limit]
        gone = len(text) - keep


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _headers(message: Message, json_body: bool = True) -> dict[str, str]:
    h = {"User-Agent": USER_AGENT, "Idempotency-Key": message.id}
    if json_body:
        h["Content-Type"] = "application/json"
    return h


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every PNG


def _chart(message: Message) -> tuple[str, bytes, str] | None:
    """The chart, read now (at each attempt: the outbox keeps its path, not its bytes), when
    it exists, is a whole PNG and is small enough to upload; else None, and the message goes
    as text rather than not at all (a service refuses a broken picture with a 400, which would
    lose the message for good)."""
    if not message.chart:
        return None
    path = Path(message.chart)
    try:
        if path.stat().st_size > MAX_UPLOAD:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    if not (data.startswith(_PNG_SIGNATURE) and data.endswith(_PNG_END)):
        return None
    return (path.name if path.suffix == ".png" else "chart.png", data, "image/png")


def without_chart(message: Message) -> Message:
    """The message as text only (a service refused its upload)."""
    return replace(message, chart=None)


def plain_text(message: Message, limit: int | None = None) -> str:
    """The whole message as plain lines (Telegram, fallbacks); within `limit` characters when
    given, cut before the job's link so that the link survives the cut."""
    lines = [message.title]
    if message.text:
        lines.append(message.text)
    lines += [f"{k}: {v}" for k, v in message.facts]
    text = "\n".join(lines)
    if not message.link:
        return text if limit is None else cut(text, limit)
    if limit is None:
        return f"{text}\n{message.link}"
    return cut(text, max(limit - len(message.link) - 1, 0)) + "\n" + message.link


# --- Slack


def _slack_escape(text: str) -> str:
    # mrkdwn reads <…> as links and mentions (<!channel>); & starts an entity.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack(target: NotifyTarget, message: Message) -> HttpRequest:
    head = f"*{_slack_escape(message.title)}*"
    body = _slack_escape(message.text)
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": cut(head + ("\n" + body if body else ""), SLACK_SECTION),
            },
        }
    ]
    facts = [
        {"type": "mrkdwn", "text": cut(f"*{_slack_escape(k)}*\n{_slack_escape(v)}", SLACK_FIELD)}
        for k, v in message.facts
    ]
    for i in range(0, len(facts), SLACK_FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": facts[i : i + SLACK_FIELDS_PER_SECTION]})
    if message.link:
        link = f"<{message.link}|Open {_slack_escape(message.job['name'])}>"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    context = f"trainsup · {_slack_escape(message.job['name'])} · {message.iso_time}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    if len(blocks) > SLACK_BLOCKS:
        more = len(blocks) - SLACK_BLOCKS + 1
        note = {"type": "mrkdwn", "text": f"… {more} more blocks left out"}
        blocks = [*blocks[: SLACK_BLOCKS - 1], {"type": "context", "elements": [note]}]
    # `text` is what notifications and screen readers show when blocks are present.
    payload = {"text": cut(_slack_escape(plain_text(message)), SLACK_SECTION), "blocks": blocks}
    return HttpRequest(target.endpoint, _json(payload), headers=_headers(message))


# --- Discord


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def discord(target: NotifyTarget, message: Message) -> HttpRequest:
    title = cut(message.job["name"], DISCORD_TITLE)
    description = cut(message.text, DISCORD_DESCRIPTION)
    footer = "trainsup"
    fields: list[dict[str, Any]] = []
    used = len(title) + len(footer) + len(description)
    left_out = 0
    for k, v in message.facts:
        name, value = cut(k, DISCORD_FIELD_NAME), cut(v, DISCORD_FIELD_VALUE)
        if (
            len(fields) < DISCORD_FIELDS
            and used + len(name) + len(value) <= DISCORD_EMBED_TOTAL - 40
        ):
            fields.append({"name": name, "value": value, "inline": len(value) <= 40})
            used += len(name) + len(value)
        else:
            left_out += 1
    if left_out:
        footer += f" · {left_out} fields left out"
    embed: dict[str, Any] = {
        "title": title,
        "color": int(message.color.lstrip("#"), 16),
        "timestamp": message.iso_time,
        "footer": {"text": footer},
    }
    if description:
        embed["description"] = description
    if fields:
        embed["fields"] = fields
    if message.link:
        embed["url"] = message.link
    payload: dict[str, Any] = {
        "content": cut(message.title, DISCORD_CONTENT),
        "embeds": [embed],
        # A job called `@everyone` must not ping a whole server.
        "allowed_mentions": {"parse": []},
    }
    # wait=true: Discord answers after the message exists, so a 2xx means delivered.
    url = _with_query(target.endpoint, wait="true")
    chart = _chart(message)
    if chart is None:
        return HttpRequest(url, _json(payload), headers=_headers(message))
    payload["attachments"] = [{"id": 0, "filename": chart[0]}]
    embed["image"] = {"url": f"attachment://{chart[0]}"}
    return HttpRequest(
        url,
        data={"payload_json": json.dumps(payload, ensure_ascii=False)},
        files={"files[0]": chart},
        headers=_headers(message, json_body=False),
    )


# --- Microsoft Teams (Workflows)

_TEAMS_COLORS = {
    "new_best": "Good",
    "warning": "Warning",
    "relaunched": "Warning",
    "diagnosis": "Warning",
    "failed": "Attention",
    "started": "Accent",
}


def teams(target: NotifyTarget, message: Message) -> HttpRequest:
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": cut(message.title, TEAMS_TEXT),
            "weight": "Bolder",
            "size": "Medium",
            "color": _TEAMS_COLORS.get(message.event, "Default"),
            "wrap": True,
        }
    ]
    if message.text:
        body.append({"type": "TextBlock", "text": cut(message.text, TEAMS_TEXT), "wrap": True})
    if message.facts:
        facts = [{"title": k, "value": cut(v, 1000)} for k, v in message.facts]
        body.append({"type": "FactSet", "facts": facts})
    body.append(
        {
            "type": "TextBlock",
            "text": f"trainsup · {message.iso_time}",
            "isSubtle": True,
            "size": "Small",
            "wrap": True,
        }
    )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if message.link:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": f"Open {message.job['name']}", "url": message.link}
        ]
    payload = {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }
    return HttpRequest(target.endpoint, _json(payload), headers=_headers(message))


# --- Mattermost


def mattermost(target: NotifyTarget, message: Message) -> HttpRequest:
    attachment: dict[str, Any] = {
        "fallback": cut(plain_text(message), MATTERMOST_ATTACHMENT_TEXT),
        "color": message.color,
        "title": message.job["name"],
        "footer": "trainsup",
        "ts": int(message.time),
    }
    if message.text:
        attachment["text"] = cut(message.text, MATTERMOST_ATTACHMENT_TEXT)
    if message.facts:
        attachment["fields"] = [
            {"short": len(v) <= 40, "title": k, "value": cut(v, 2000)} for k, v in message.facts
        ]
    if message.link:
        attachment["title_link"] = message.link
    payload = {"text": cut(message.title, MATTERMOST_TEXT), "attachments": [attachment]}
    return HttpRequest(target.endpoint, _json(payload), headers=_headers(message))


# --- Telegram


def telegram(target: NotifyTarget, message: Message) -> HttpRequest:
    # Plain text, no parse_mode: a job name or a reason with `_` or `*` cannot break it.
    chat = str(target.chat_id)
    chart = _chart(message)
    if chart is None:
        payload = {
            "chat_id": chat,
            "text": plain_text(message, TELEGRAM_TEXT),
            "link_preview_options": {"is_disabled": True},
        }
        return HttpRequest(
            f"{target.endpoint}/sendMessage", _json(payload), headers=_headers(message)
        )
    return HttpRequest(
        f"{target.endpoint}/sendPhoto",
        # A caption holds 1 024 characters: a longer text is cut with a note (the picture
        # and the one message stay one delivery, retried as one).
        data={"chat_id": chat, "caption": plain_text(message, TELEGRAM_CAPTION)},
        files={"photo": chart},
        headers=_headers(message, json_body=False),
    )


# --- generic signed webhook


def webhook_payload(message: Message) -> dict[str, Any]:
    payload: dict[str, Any] = dict(message.numbers)
    payload.update(
        {
            "event": message.event,
            "id": message.id,
            "time": message.iso_time,
            "job": message.job,
            "title": message.title,
            "text": message.text,
        }
    )
    # No `chart`: a path on this machine means nothing to a receiver elsewhere, and the body
    # must be the same bytes on every retry (its signature too), whenever the chart appears.
    if message.link:
        payload["link"] = message.link
    return payload


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook(target: NotifyTarget, message: Message) -> HttpRequest:
    body = _json(webhook_payload(message))
    headers = _headers(message) | {"X-Trainsup-Event": message.event}
    if target.secret is not None:
        headers["X-Trainsup-Signature"] = sign(target.secret.get_secret_value(), body)
    return HttpRequest(target.endpoint, body, headers=headers)


RENDERERS: dict[str, Callable[[NotifyTarget, Message], HttpRequest]] = {
    "slack": slack,
    "discord": discord,
    "teams": teams,
    "mattermost": mattermost,
    "telegram": telegram,
    "webhook": webhook,
}


def render(target: NotifyTarget, message: Message) -> HttpRequest:
    return RENDERERS[target.type](target, message)
