"""The job file's `notify:` key: every target type, ${ENV_VAR} expansion, errors located and
free of secrets, and secrets absent from job.yaml copies and reprs."""

from __future__ import annotations

import pytest

from supervisor.spec import SpecError, json_schema, parse_spec, redacted_yaml
from supervisor.spec.notify import NotifyTarget, Secret, SecretUrl

HEAD = "name: helmet-v4\ndarknet: {data: obj.data, cfg: yolo.cfg}\n"
SLACK_URL = "https://hooks.slack.com/services/T0AAAA/B0BBBB/SlackSecretPart"
TOKEN = "123456789:AAE_secret-token-part-0123456789abcdef"
ALL = f"""notify:
  - type: slack
    url: {SLACK_URL}
  - type: discord
    url: https://discord.com/api/webhooks/1/DiscordSecretPart
    events: [stopped, failed]
  - type: teams
    url: https://prod.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?sig=TeamsSig
  - type: mattermost
    url: https://chat.example/hooks/MattermostSecretPart
  - type: telegram
    token: "{TOKEN}"
    chat_id: -1001234
  - type: webhook
    url: http://hooks.example/trainsup/WebhookSecretPart
    secret: hmac-secret-value
    new_best_interval: 30m
"""
SECRETS = [
    "SlackSecretPart",
    "DiscordSecretPart",
    "TeamsSig",
    "MattermostSecretPart",
    TOKEN.split(":")[1],
    "WebhookSecretPart",
    "hmac-secret-value",
]


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as e:
        parse_spec(HEAD + text)
    return [str(p) for p in e.value.problems]


def test_every_target_type_loads() -> None:
    spec = parse_spec(HEAD + ALL)
    kinds = [t.type for t in spec.notify]
    assert kinds == ["slack", "discord", "teams", "mattermost", "telegram", "webhook"]
    slack, discord, _, _, telegram, webhook = spec.notify
    assert slack.endpoint == SLACK_URL
    assert slack.events == (
        "started", "new_best", "warning", "relaunched", "stopped", "failed", "diagnosis",
    )  # fmt: skip
    assert discord.events == ("stopped", "failed")
    assert telegram.endpoint == f"https://api.telegram.org/bot{TOKEN}"
    assert telegram.chat_id == "-1001234"
    assert webhook.secret is not None and webhook.secret.get_secret_value() == "hmac-secret-value"
    assert webhook.new_best_interval == 1800 and slack.new_best_interval == 600
    assert parse_spec(HEAD).notify == ()
    assert parse_spec(HEAD + "notify:\n").notify == ()


def test_secrets_absent_from_redacted_yaml_and_reprs() -> None:
    spec = parse_spec(HEAD + ALL)
    copy = redacted_yaml(spec)
    shown = [repr(spec), str(spec), copy, *(t.label for t in spec.notify)]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, (secret, text)
    assert "url: https://hooks.slack.com/…" in copy
    assert "secret: '**********'" in copy
    assert spec.notify[0].label == "slack https://hooks.slack.com/…"


def test_env_vars_expand_at_load_and_stay_references_in_the_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOOK_URL", "http://hooks.example/trainsup/EnvSecretPart")
    monkeypatch.setenv("HOOK_SECRET", "env-hmac-secret")
    monkeypatch.setenv("TG_TOKEN", TOKEN)
    monkeypatch.setenv("TG_CHAT", "42")
    text = HEAD + (
        "notify:\n"
        "  - {type: webhook, url: '${HOOK_URL}', secret: '${HOOK_SECRET}'}\n"
        "  - {type: telegram, token: '${TG_TOKEN}', chat_id: '${TG_CHAT}'}\n"
    )
    spec = parse_spec(text)
    hook, tg = spec.notify
    assert hook.endpoint == "http://hooks.example/trainsup/EnvSecretPart"
    assert tg.chat_id == "42" and TOKEN in tg.endpoint
    copy = redacted_yaml(spec)
    assert "url: ${HOOK_URL}" in copy and "secret: ${HOOK_SECRET}" in copy
    assert "EnvSecretPart" not in copy and "env-hmac-secret" not in copy
    # The job dir's copy reads back to the same targets while the variables are set.
    assert parse_spec(copy).notify == spec.notify


def test_unset_env_var_is_an_error_naming_it() -> None:
    (p,) = problems("notify:\n  - type: webhook\n    url: ${TRAINSUP_TEST_UNSET_VAR}\n")
    assert ":5:10: notify[0].url" in p
    assert "environment variable TRAINSUP_TEST_UNSET_VAR is not set" in p


def test_a_redacted_copy_loads_with_its_targets_marked_redacted() -> None:
    # `run --attach` reads the job dir's copy: it must load; its targets cannot send.
    original = parse_spec(HEAD + ALL)
    copy = parse_spec(redacted_yaml(original))
    assert [t.redacted for t in copy.notify] == [True] * 6
    assert not any(t.redacted for t in original.notify)
    assert [t.label for t in copy.notify] == [t.label for t in original.notify]
    assert redacted_yaml(copy) == redacted_yaml(original)  # a copy of the copy is the same
    assert copy.notify[0].endpoint == "https://hooks.slack.com/…"


@pytest.mark.parametrize(
    ("text", "where", "expected"),
    [
        ("  - type: slack\n", "notify[0]", "required for slack: the incoming-webhook URL"),
        (
            "  - {type: telegram, chat_id: 1}\n",
            "notify[0].token",
            "required for telegram",
        ),
        (
            "  - {type: slack, url: 'https://h.example/x', token: '" + TOKEN + "'}\n",
            "notify[0]",
            "only telegram targets have `token`",
        ),
        (
            "  - {type: discord, url: 'https://h.example/x', secret: abcdefgh}\n",
            "notify[0].secret",
            "only webhook targets are signed",
        ),
        ("  - {type: webhook, url: 'ftp://h.example/x'}\n", "notify[0].url", "http:// or https://"),
        (
            "  - {type: webhook, url: 'https://h/x', events: [stoped]}\n",
            "notify[0].events[0]",
            "must be one of",
        ),
        (
            "  - {type: webhook, url: 'https://h/x', events: []}\n",
            "notify[0].events",
            "at least one event",
        ),
        (
            "  - {type: webhook, url: 'https://h/x', new_best_interval: 600}\n",
            "notify[0].new_best_interval",
            "a bare number has no unit",
        ),
        ("  - {type: sms, url: 'https://h/x'}\n", "notify[0].type", "must be one of"),
        (
            "  - {type: telegram, token: 'nope', chat_id: 1}\n",
            "notify[0].token",
            "not a Telegram bot token",
        ),
        (
            "  - {type: telegram, token: '" + TOKEN + "', chat_id: 'x y'}\n",
            "notify[0].chat_id",
            "chat id",
        ),
    ],
)
def test_errors_are_located_and_clear(text: str, where: str, expected: str) -> None:
    found = problems("notify:\n" + text)
    assert any(where in p and expected in p for p in found), found


def test_error_messages_do_not_quote_a_secret() -> None:
    # The messages the notify models write never quote the value (the YAML layer may show
    # what was written: see the report).
    with pytest.raises(ValueError) as e:
        NotifyTarget.model_validate({"type": "webhook", "url": "ftp://h.example/SecretPart"})
    assert "SecretPart" not in e.value.errors()[0]["msg"]


def test_secret_type() -> None:
    s = SecretUrl("https://hooks.slack.com/services/X/Y/Z")
    assert str(s) == "https://hooks.slack.com/…" and "services" not in repr(s)
    assert s == SecretUrl("https://hooks.slack.com/services/X/Y/Z") != Secret("x")
    assert s.get_secret_value().endswith("/Z")


def test_json_schema_has_notify_and_marks_secrets_write_only() -> None:
    schema = json_schema()
    assert "notify" in schema["properties"]
    target = schema["$defs"]["NotifyTarget"]["properties"]
    url = next(a for a in target["url"]["anyOf"] if a.get("type") == "string")
    assert url["writeOnly"] is True
