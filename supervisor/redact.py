"""Secrets shown: webhook URLs and bot tokens never reach a log, an error text, a report or a
copy of the job file.

A URL is shown as `scheme://host/…` (the path of an incoming-webhook URL *is* the credential;
Telegram's token sits in the path too). Every secret value a target carries is registered
here when it is loaded, so that text produced by other code (httpx's and httpcore's log lines,
exception messages) can be scrubbed of it before it is logged or stored.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit

REDACTED = "**********"

_lock = threading.Lock()
_secrets: set[str] = set()
_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact_url(url: str) -> str:
    """`https://hooks.slack.com/services/T/B/X` → `https://hooks.slack.com/…`."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    if not parts.scheme or not host:
        return REDACTED
    return f"{parts.scheme}://{host}{port}/…"


def register_secret(value: str) -> None:
    """Remember a secret so that `scrub` removes it from any text."""
    # Short values would scrub innocent text ("1" as a chat id); secrets are never that short.
    if len(value) >= 6:
        with _lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """`text` with every registered secret masked and every URL reduced to scheme://host/…"""
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)


class ScrubFilter(logging.Filter):
    """Rewrites a log record's message with `scrub` (httpx logs every request's full URL at
    INFO: `HTTP Request: POST https://api.telegram.org/bot<token>/sendMessage`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's problem, not ours
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# Logger filters apply only to records logged on that very logger, so every logger of the HTTP
# stack that may print a URL or a header is named.
_HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
)
_installed = False


def install_log_scrubbing() -> None:
    """Attach `ScrubFilter` to the HTTP stack's loggers (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).addFilter(ScrubFilter())
