"""The job file's `notify:` key: where messages about a job go, and which ones.

```yaml
notify:
  - type: webhook          # slack | discord | teams | mattermost | telegram | webhook
    url: ${HOOK_URL}       # or the URL itself; telegram: token + chat_id instead
    secret: ${HOOK_SECRET} # webhook only: HMAC-SHA256 key for X-Trainsup-Signature
    events: [started, new_best, warning, relaunched, stopped, failed, diagnosis]  # default: all
    new_best_interval: 10m # at most one new_best message per this long; null = every one
```

`${NAME}` is read from the environment when the file is loaded; an unset variable is an error
naming it. URLs, tokens and secrets are held in `Secret` values: their repr, str and JSON
dump (what `redacted_yaml` writes to <job>/job.yaml) never show them — a value that came from
`${NAME}` dumps as `${NAME}`, so the job dir's copy still works where the variable is set.

`supervisor.spec.job` imports this module for its `notify` field, so what this module needs
of `spec.job` (durations) it imports inside the functions that use it. Delivery is
`supervisor/notify/`.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Annotated, Any, Literal, get_args
from urllib.parse import quote, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from supervisor.redact import REDACTED, redact_url, register_secret

EventName = Literal[
    "started", "new_best", "warning", "relaunched", "stopped", "failed", "diagnosis"
]
EVENTS: tuple[EventName, ...] = get_args(EventName)
TargetType = Literal["slack", "discord", "teams", "mattermost", "telegram", "webhook"]
TELEGRAM_API = "https://api.telegram.org"
# A best that improves every evaluation would otherwise post every few minutes all day.
NEW_BEST_INTERVAL = 600.0

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ONE_ENV_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _error(kind: str, message: str) -> PydanticCustomError:
    # Through ctx, so that braces in a message are not read as a template.
    return PydanticCustomError(kind, "{message}", {"message": message})


def expand_env(text: str, environ: Any = None) -> str:
    """`text` with every `${NAME}` replaced by the environment's value; an unset or empty
    variable is an error that names it (never a silently empty URL)."""
    env = os.environ if environ is None else environ

    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        got = env.get(name)
        if got is None:
            raise _error(
                "env_unset",
                f"environment variable {name} is not set (read here as ${{{name}}}): "
                "export it before running trainsup, or write the value itself",
            )
        if not got:
            raise _error("env_empty", f"environment variable {name} is set but empty")
        return str(got)

    return _ENV_RE.sub(value, text)


class Secret:
    """A secret string. `str`, `repr` and a JSON dump show it redacted; only
    `get_secret_value()` gives it. Equal when the values are equal.

    Reading back a job dir's job.yaml (`run --attach`, `notify flush`) meets the redaction
    itself (`https://hooks.slack.com/…`, `**********`): it loads, as a secret that is
    `redacted` — the job stays usable, and whoever would send to it says why it cannot."""

    __slots__ = ("_redacted", "_source", "_value")

    def __init__(self, value: str, source: str | None = None, redacted: bool = False) -> None:
        self._value = value
        # `${NAME}` when the whole value came from one variable: safe to write back out.
        self._source = source
        self._redacted = redacted

    def get_secret_value(self) -> str:
        return self._value

    @property
    def source(self) -> str | None:
        return self._source

    @property
    def redacted(self) -> bool:
        """Read from a redacted copy: the real value is not known here."""
        return self._redacted

    def shown(self) -> str:
        return REDACTED

    def dumped(self) -> str:
        """What a copy of the job file gets: the `${NAME}` it came from, else the redaction."""
        if self._redacted:
            return self._value
        return self._source or self.shown()

    def __str__(self) -> str:
        return self.shown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.shown()!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Secret) and type(other) is type(self) and other._value == self._value
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))

    @classmethod
    def check(cls, value: str) -> None:
        """Refuse a malformed value; the message must not quote it."""
        if not value.strip():
            raise _error("empty_secret", "must not be empty")

    @classmethod
    def _validate(cls, value: Any, info: ValidationInfo) -> Secret:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise _error("string_type", "must be text (put it in quotes)")
        written = value.strip()
        if written == REDACTED or written.endswith("/…"):
            return cls(written, None, redacted=True)
        expanded = expand_env(written)
        cls.check(expanded)
        register_secret(expanded)
        return cls(expanded, written if _ONE_ENV_RE.fullmatch(written) else None)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v, info: v.dumped() if info.mode_is_json() else v, info_arg=True
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "writeOnly": True, "format": "password"}


class SecretUrl(Secret):
    """An http(s) URL whose path or query is a credential; shown as `scheme://host/…`."""

    __slots__ = ()

    def shown(self) -> str:
        return redact_url(self._value)

    @classmethod
    def check(cls, value: str) -> None:
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise _error("url", "is not a URL: write http(s)://host/path") from None
        if parts.scheme not in ("http", "https") or not host:
            raise _error("url", "must be an http:// or https:// URL with a host")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "writeOnly": True, "format": "uri"}


class TelegramToken(Secret):
    """A Bot API token, `<bot id>:<secret>`."""

    __slots__ = ()

    @classmethod
    def check(cls, value: str) -> None:
        if not re.fullmatch(r"\d+:[A-Za-z0-9_-]{20,}", value):
            raise _error(
                "telegram_token",
                "is not a Telegram bot token (digits, a colon, then the secret part, as "
                "@BotFather gives it)",
            )


def _chat_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        value = expand_env(value.strip())
        if not re.fullmatch(r"-?\d+|@[A-Za-z0-9_]{4,}", value):
            raise _error(
                "chat_id", "must be a chat id (a number, negative for groups) or @channelname"
            )
    return value


ChatId = Annotated[str, BeforeValidator(_chat_id)]


def _interval(value: Any, info: ValidationInfo) -> Any:
    from supervisor.spec.job import parse_duration

    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _error("duration", str(exc)) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if (info.context or {}).get("yaml"):
            raise _error("duration", "a bare number has no unit: write e.g. 10m, 1h or 30s")
        seconds = float(value)
    else:
        raise _error("duration", "must be a duration, e.g. 10m, 1h or 30s")
    if seconds <= 0:
        raise _error("duration", "must be longer than 0s (null sends every new best)")
    return seconds


def _format_interval(seconds: float) -> str:
    from supervisor.spec.job import format_duration

    return format_duration(seconds)


Interval = Annotated[
    float,
    BeforeValidator(_interval),
    PlainSerializer(_format_interval, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "examples": ["10m", "1h"]}),
]

_NEEDS_URL = {
    "slack": "the incoming-webhook URL (https://hooks.slack.com/services/…)",
    "discord": "the channel webhook URL (https://discord.com/api/webhooks/…)",
    "teams": "the URL of a Workflows 'When a Teams webhook request is received' flow",
    "mattermost": "the incoming-webhook URL (https://<server>/hooks/…)",
    "webhook": "the URL the JSON is POSTed to",
}


# Marks a field whose value must not be quoted in an error: whoever reports problems in a job
# file (spec/yamlsource.py) can test `field.json_schema_extra` for it.
_SECRET: dict[str, Any] = {"writeOnly": True}


class NotifyTarget(BaseModel):
    """One place messages about the job are sent to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: TargetType = Field(description="the service: its payload format and limits")
    url: SecretUrl | None = Field(
        default=None,
        description="webhook URL, or ${ENV_VAR}; telegram: the Bot API server "
        f"(default {TELEGRAM_API})",
        json_schema_extra=_SECRET,
    )
    token: TelegramToken | None = Field(
        default=None,
        description="telegram only: the bot token, or ${ENV_VAR}",
        json_schema_extra=_SECRET,
    )
    chat_id: ChatId | None = Field(
        default=None, description="telegram only: the chat id or @channelname"
    )
    secret: Secret | None = Field(
        default=None,
        description="webhook only: HMAC-SHA256 key; the body's signature is sent in "
        "X-Trainsup-Signature: sha256=<hex>",
        json_schema_extra=_SECRET,
    )
    events: tuple[EventName, ...] = Field(
        default=EVENTS, description="which messages this target gets; default: all"
    )
    new_best_interval: Interval | None = Field(
        default=NEW_BEST_INTERVAL,
        description="at most one new_best message per this long (the latest best is sent "
        "when it ends); null = every new best",
    )

    @field_validator("events", mode="before")
    @classmethod
    def _events_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[EventName, ...]) -> tuple[EventName, ...]:
        if not value:
            raise _error("no_events", "list at least one event, or remove this target")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _fields_for_type(self) -> NotifyTarget:
        from supervisor.spec.yamlsource import cross_field

        findings: list[tuple[str, str]] = []
        kind = self.type
        if kind == "telegram":
            if self.token is None:
                findings.append(("token", "required for telegram: the bot token (@BotFather)"))
            if self.chat_id is None:
                findings.append(("chat_id", "required for telegram: the chat to post to"))
        else:
            if self.url is None:
                findings.append(("url", f"required for {kind}: {_NEEDS_URL[kind]}"))
            for key in ("token", "chat_id"):
                if getattr(self, key) is not None:
                    findings.append((key, f"only telegram targets have `{key}`"))
        if self.secret is not None and kind != "webhook":
            findings.append(("secret", f"only webhook targets are signed; {kind} has no secret"))
        if findings:
            raise cross_field(findings)
        return self

    # --- what delivery needs

    @property
    def redacted(self) -> bool:
        """Read from a job dir's redacted copy: nothing can be sent to it (`REDACTED_HINT`)."""
        return any(s is not None and s.redacted for s in (self.url, self.token, self.secret))

    @property
    def endpoint(self) -> str:
        """The URL requests go to (telegram: the API server; the method is appended)."""
        if self.type == "telegram":
            base = self.url.get_secret_value() if self.url else TELEGRAM_API
            token = self.token.get_secret_value() if self.token else ""
            return f"{base.rstrip('/')}/bot{token}"
        assert self.url is not None
        return self.url.get_secret_value()

    @property
    def key(self) -> str:
        """A stable id of the target for outbox rows (a digest: it must not be reversible)."""
        parts = [self.type, self.endpoint, str(self.chat_id or "")]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """How the target is named in output: `slack https://hooks.slack.com/…`."""
        if self.type == "telegram":
            return f"telegram {redact_url(self.endpoint)} chat {self.chat_id}"
        return f"{self.type} {redact_url(self.endpoint)}"


REDACTED_HINT = (
    "its URL, token or secret is redacted in the job dir's job.yaml: pass the original job "
    "file, or write them as ${ENV_VAR} so that the job dir's copy keeps working"
)


def _no_targets(value: Any) -> Any:
    return () if value is None else value


NotifyTargets = Annotated[tuple[NotifyTarget, ...], BeforeValidator(_no_targets)]


# --- the job's page, linked from Slack, Mattermost, Teams (and shown by the others)

# The daemon API's route of one job (`GET /jobs/{id}`, supervisor/service/api.py).
JOB_PAGE_PATH = "/jobs/{id}"


def _public_url(value: Any) -> Any:
    if not isinstance(value, str):
        raise _error("url", "must be a URL, e.g. https://trainsup.example.org")
    value = expand_env(value.strip())
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise _error("url", "is not a URL: write http(s)://host[/prefix]") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _error("url", "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        # The link is posted into chat channels for anyone there to read.
        raise _error("url", "must not hold a user or password: it is posted in chat messages")
    if parts.query or parts.fragment:
        raise _error("url", "must not have a ?query or #fragment: the job's path is appended")
    return value.rstrip("/")


PublicUrl = Annotated[
    str,
    BeforeValidator(_public_url),
    WithJsonSchema(
        {"type": "string", "format": "uri", "examples": ["https://trainsup.example.org"]}
    ),
]


def job_page(public_url: str | None, job_id: object) -> str | None:
    """The job's page under `public_url` (the address of the daemon's API, usually a reverse
    proxy in front of it): `https://trainsup.example.org/jobs/12`; None when there is no
    public URL or no job id (`trainsup run` has neither: it serves no page)."""
    if not public_url or job_id is None:
        return None
    return public_url.rstrip("/") + JOB_PAGE_PATH.format(id=quote(str(job_id), safe=""))
