"""Chat notifications: Slack, Discord, Teams, Mattermost, Telegram and signed JSON webhooks.

A listener on the runner's record bus turns records into messages, writes one outbox row per
(message, target) and returns; one delivery task per target sends them in order, retrying until
each is delivered or refused for good. Modules:

    spec      the job file's `notify:` targets (secrets redacted, ${ENV_VAR} expanded)
    redact    what a secret looks like when shown; scrubbing of log records and error texts
    message   a message as the services' formats see it, composed from bus records
    formats   one payload per service, within its documented limits
    outbox    the durable queue (SQLite in the job dir)
    delivery  sending with retries, backoff, Retry-After
    listener  the bus listener and `attach_notifications`, the one call `run` makes
    cli       `trainsup notify test|flush`

This package imports nothing at import time on purpose: `supervisor.spec.job` imports
`notify.spec`, which must not pull httpx (or `supervisor.spec` itself) in with it.
"""
