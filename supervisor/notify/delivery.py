"""Sending the outbox: one task per target, in order, until each row is delivered or refused.

At-least-once: a row is marked sent only after a 2xx, so a response lost after the receiver
accepted (the connection cut) is sent again — with the same message `id`, which the generic
webhook carries in its body and every request in `Idempotency-Key`, so that a receiver can
drop the repeat (the chat services have no such key: there a repeat shows twice).

Retries: a connection error, a timeout, a 408, a 429 or a 5xx is retried after an exponential
backoff with jitter (`backoff`), or after exactly what `Retry-After` (or Telegram's
`parameters.retry_after`) asks; any other 4xx (and a 3xx: a moved webhook is not followed with
its body) is permanent: the row is marked failed with its status and the receiver's words, and
the next row goes. A 400 or 413 to a request that uploads the chart is taken as a refusal of
the picture: the message is sent again at once as text only. A message that uploads the chart
first waits (at most `chart_wait`) for the drawing its record asked for, when the process
draws the chart (`ChartSource`).

A target's rows wait for its head row (order per target), but each target has its own task, so
a dead or slow target delays nobody else, and the runner only ever writes a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx
import structlog

from supervisor.notify.formats import UPLOADS, HttpRequest, render, without_chart
from supervisor.notify.message import Message
from supervisor.notify.outbox import Outbox
from supervisor.redact import install_log_scrubbing, scrub
from supervisor.spec.notify import NotifyTarget

log = structlog.get_logger("trainsup.notify")
# Answers to an upload that mean "not this file" (Telegram's 400 IMAGE_PROCESS_FAILED or
# PHOTO_INVALID_DIMENSIONS, Discord's 400 for a bad attachment, 413 for a too large one).
UPLOAD_REFUSED = (400, 413)


@dataclass(frozen=True)
class DeliveryConfig:
    """Retry and timeout knobs (seconds). The defaults suit a chat service; tests shrink them."""

    backoff_base: float = 2.0  # the first retry waits about this long
    backoff_cap: float = 300.0  # no backoff is longer
    max_retry_after: float = 3600.0  # a Retry-After beyond this is taken as this
    connect_timeout: float = 10.0
    timeout: float = 30.0  # reading the answer; chat webhooks answer in well under a second
    # How long after its record a message that uploads the chart waits for the drawing that
    # record asked for: the chart listener redraws in a worker thread (a coalescing pause,
    # then ~0.5 s of drawing, more on a busy machine), and without the wait a new best would
    # go out with the chart of the evaluation before it. Past it, the chart as it is.
    chart_wait: float = 10.0


class ChartSource(Protocol):
    """What delivery needs of the process's chart drawer (runtime/chart_listener.py's
    `ChartListener`): `flush` blocks until no drawing is pending or running, at most
    `timeout` s. A record that asks for a drawing has asked by the time its message is sent
    (both listeners run inside the same publish), so after `flush` the file shows it."""

    def flush(self, timeout: float = ...) -> bool: ...


def backoff(attempts: int, config: DeliveryConfig, rng: random.Random | None = None) -> float:
    """The wait before retry number `attempts + 1`: base·2ⁿ capped, times a random factor in
    [0.5, 1] so that many jobs retrying one service do not hit it in lockstep."""
    r = rng or random
    return float(
        min(config.backoff_cap, config.backoff_base * 2 ** min(attempts, 30)) * r.uniform(0.5, 1)
    )


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to. `error` is scrubbed of secrets."""

    ok: bool
    permanent: bool
    status: int | None = None
    reason: str = ""
    error: str | None = None
    retry_after: float | None = None

    def describe(self) -> str:
        head = f"{self.status} {self.reason}".strip() if self.status is not None else ""
        if self.error:
            return f"{head}: {self.error}" if head else self.error
        return head


def retry_after(response: httpx.Response, cap: float) -> float | None:
    """Seconds the receiver asks to wait: `Retry-After` as seconds or an HTTP date, else
    Telegram's `parameters.retry_after` in the JSON body."""
    value = response.headers.get("retry-after")
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = None
    if seconds is None:
        try:
            body = response.json()
        except ValueError:
            body = None
        params = body.get("parameters") if isinstance(body, dict) else None
        got = params.get("retry_after") if isinstance(params, dict) else None
        if isinstance(got, int | float) and not isinstance(got, bool):
            seconds = float(got)
    if seconds is None:
        return None
    return min(max(seconds, 0.0), cap)


def _body_excerpt(response: httpx.Response) -> str | None:
    try:
        text = response.text.strip()
    except Exception:  # an undecodable body says nothing useful
        return None
    return scrub(text[:300]) if text else None


async def send(client: httpx.AsyncClient, request: HttpRequest, config: DeliveryConfig) -> Outcome:
    """One attempt; never raises for anything the network or the receiver does."""
    kwargs: dict[str, Any] = {"headers": request.headers}
    if request.content is not None:
        kwargs["content"] = request.content
    if request.data is not None:
        kwargs["data"] = request.data
    if request.files is not None:
        kwargs["files"] = request.files
    try:
        response = await client.post(request.url, **kwargs)
    except httpx.TimeoutException as e:
        return Outcome(False, False, error=f"timed out ({type(e).__name__})")
    except httpx.TransportError as e:
        # str(e) of a transport error is the OS's words (`[Errno 111] Connection refused`),
        # scrubbed all the same in case a library puts the URL in.
        why = scrub(str(e)) or type(e).__name__
        return Outcome(False, False, error=f"connection failed: {why}")
    except Exception as e:  # InvalidURL, a header httpx refuses: retrying cannot help
        return Outcome(False, True, error=f"request not sent: {type(e).__name__}: {scrub(str(e))}")
    status, reason = response.status_code, response.reason_phrase
    if 200 <= status < 300:
        return Outcome(True, False, status, reason)
    excerpt = _body_excerpt(response)
    if status == 429 or status == 408 or status >= 500:
        wait = retry_after(response, config.max_retry_after) if status in (429, 503) else None
        return Outcome(False, False, status, reason, excerpt, wait)
    if 300 <= status < 400:
        return Outcome(
            False, True, status, reason, "redirect not followed: has the webhook URL moved?"
        )
    return Outcome(False, True, status, reason, excerpt)


class Deliverer:
    """Delivers an outbox to its targets: one task per target, started by `start()` (in a
    running loop); `flush()` waits for the rows to be settled, `aclose()` stops."""

    def __init__(
        self,
        outbox: Outbox,
        targets: Sequence[NotifyTarget],
        config: DeliveryConfig | None = None,
        client: httpx.AsyncClient | None = None,
        rng: random.Random | None = None,
        chart: ChartSource | None = None,
    ) -> None:
        install_log_scrubbing()
        self.chart = chart
        self.outbox = outbox
        self.config = config or DeliveryConfig()
        self.targets = {t.key: t for t in targets}  # the same target twice is one target
        self._own_client = client is None
        timeout = httpx.Timeout(self.config.timeout, connect=self.config.connect_timeout)
        self.client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._rng = rng or random.Random()
        self._wake = {key: asyncio.Event() for key in self.targets}
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._tasks:
            return
        for key, target in self.targets.items():
            task = asyncio.get_running_loop().create_task(
                self._worker(target), name=f"notify {target.label}"
            )
            self._tasks.append(task)
            self._wake[key].set()

    def wake(self) -> None:
        """New rows were added."""
        for event in self._wake.values():
            event.set()

    def _settled(self) -> None:
        self._progress.set()

    async def _worker(self, target: NotifyTarget) -> None:
        while True:
            try:
                await self._step(target)
            except Exception as e:  # the outbox file failing: keep the task, try again later
                log.warning(
                    "notification delivery error",
                    target=target.label,
                    error=scrub(f"{type(e).__name__}: {e}"),
                )
                await asyncio.sleep(max(self.config.backoff_base, 1.0))

    async def _step(self, target: NotifyTarget) -> None:
        """Settle the target's head row, or wait for one."""
        key, wake = target.key, self._wake[target.key]
        row = self.outbox.next_pending(key)
        if row is None:
            self._settled()
            wake.clear()
            await wake.wait()
            return
        if row.message.chart and target.type in UPLOADS and self.chart is not None:
            await self._fresh_chart(self.chart, row.message)
        try:
            request = render(target, row.message)
        except Exception as e:  # a message that cannot be laid out will never be sent
            error = scrub(f"cannot build the request: {type(e).__name__}: {e}")
            self.outbox.failed(row.seq, None, error)
            log.warning("notification failed", target=target.label, error=error)
            self._settled()
            return
        outcome = await send(self.client, request, self.config)
        if request.files and outcome.permanent and outcome.status in UPLOAD_REFUSED:
            # The service refused the picture (too large for it, unreadable), not the words:
            # they go at once as text, and the chart is left out of this message.
            log.info(
                "notification chart refused, sent as text",
                target=target.label,
                message_id=row.message.id,
                status=outcome.status,
            )
            request = render(target, without_chart(row.message))
            outcome = await send(self.client, request, self.config)
        fields = {
            "target": target.label,
            "kind": row.message.event,
            "message_id": row.message.id,
            "status": outcome.status,
        }
        if outcome.ok:
            self.outbox.delivered(row.seq, outcome.status or 0)
            log.debug("notification sent", **fields)
        elif outcome.permanent:
            self.outbox.failed(row.seq, outcome.status, outcome.describe())
            log.warning("notification refused", **fields, error=outcome.describe())
        else:
            wait = outcome.retry_after
            if wait is None:
                wait = backoff(row.attempts, self.config, self._rng)
            self.outbox.retry_later(row.seq, outcome.status, outcome.describe(), time.time() + wait)
            log.info(
                "notification retry",
                **fields,
                error=outcome.describe(),
                attempt=row.attempts + 1,
                wait_s=round(wait, 2),
            )
            self._settled()
            await asyncio.sleep(wait)
        self._settled()

    async def _fresh_chart(self, chart: ChartSource, message: Message) -> None:
        """Wait for the drawings pending now (the one the message's record asked for among
        them), at most until `chart_wait` after the record: a message sent late (a retry, after
        a restart) does not wait."""
        left = message.time + self.config.chart_wait - time.time()
        if left > 0:
            # A thread: the drawer's flush waits on a threading.Condition.
            await asyncio.to_thread(chart.flush, left)

    def pending(self) -> int:
        """Rows not yet settled for the targets this deliverer serves."""
        return sum(self.outbox.pending(key) for key in self.targets)

    async def flush(self, timeout: float) -> int:
        """Wait until every row of these targets is delivered or refused, at most `timeout`
        seconds; the number still pending (left in the outbox for a later flush)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = self.pending()
            remaining = deadline - loop.time()
            if left == 0 or remaining <= 0:
                return left
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._own_client:
            await self.client.aclose()
