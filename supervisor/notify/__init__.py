"""Chat notifications: Slack, Discord, Teams, Mattermost, Telegram and signed JSON webhooks.

A listener on the runner's record bus turns records into messages, writes one outbox row per
(message, target) and returns; one delivery task per target sends them in order, retrying until
each is delivered or refused for good. Modules:

    message   a message as the services' formats see it, composed from bus records
    formats   one payload per service, within its documented limits
    outbox    the durable queue (SQLite in the job dir)
    delivery  sending with retries, backoff, Retry-After
    listener  the bus listener and `attach_notifications`, the one call `run` makes
    cli       `trainsup notify test|flush`

The job file's `notify:` targets are models of the job file, in `supervisor/spec/notify.py`;
what a secret looks like when shown, and the scrubbing of log records and error texts, is
`supervisor/redact.py`, which every layer may use. Nothing below imports this package.
"""
