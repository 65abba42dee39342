"""The bus listener that queues notifications, and `attach_notifications`, the one call a
command (`trainsup run`, later the daemon per job) makes to get them.

Records → events: JobStarted → started; NewBest → new_best (rate-limited per target: at most
one per `new_best_interval`, the latest held best sent when the interval ends); Warning →
warning; Relaunched → relaunched (why and what changed: `reasons.py`); Diagnosis → diagnosis
when the live pattern becomes a problem, once per pattern per job; Finished → stopped (status
stopped/finished/cancelled) or failed (failed/killed). new_best, diagnosis, stopped and failed
name `<job_dir>/chart.png`, uploaded where the service takes files if it exists when the
message is sent. A Decision record is
remembered for the stopped message that follows it; the latest NewBest too, so that a
Finished record without `best` still says it.

The listener runs inside the bus's publish, synchronously: it composes the message, writes the
outbox rows (one small SQLite transaction) and wakes the delivery tasks. Nothing it does waits
on the network, and an error in it is logged and swallowed — the bus would otherwise drop the
listener, and one odd record must not silence the rest of the job.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import structlog

from supervisor.notify.delivery import ChartSource, Deliverer, DeliveryConfig
from supervisor.notify.message import JobFacts, Message, compose, event_of
from supervisor.notify.outbox import OUTBOX_FILE, Outbox, SqliteOutbox, delivery_failures, summary
from supervisor.redact import scrub
from supervisor.spec.notify import REDACTED_HINT, NotifyTarget

log = structlog.get_logger("trainsup.notify")

Record = dict[str, Any]
# `trainsup run` waits this long for pending messages before it exits (issue 13).
NOTIFY_FLUSH_S = 60.0
_STOPPED_STATUSES = ("stopped", "finished", "cancelled")
# The job's training chart, kept fresh by the report's chart listener (written atomically at
# each evaluation and at the end); uploaded with new_best, stopped and failed messages.
CHART_FILE = "chart.png"


class NotifyListener:
    """Turns one job's records into outbox rows. `on_added` is called after rows were added
    (it wakes the delivery tasks)."""

    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        outbox: Outbox,
        on_added: Callable[[], None],
        *,
        job_name: str,
        job_id: str | None = None,
        job_dir: Path | None = None,
        link: str | None = None,
    ) -> None:
        self.targets = list({t.key: t for t in targets}.values())
        self.outbox = outbox
        self.on_added = on_added
        self.job = JobFacts(job_name, job_id, link)
        self.job_dir = job_dir
        self._last_best: dict[str, float] = {}  # target key → record time of the last sent
        self._held: dict[str, Record] = {}  # target key → the newest best not sent yet
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._diagnosed: set[str] | None = None  # the patterns already told, read lazily
        self.finished = False

    def __call__(self, record: Record) -> None:
        try:
            self._handle(record)
        except Exception as e:  # see the module docstring: never let the bus drop us
            log.warning(
                "notification not queued",
                record=record.get("type"),
                error=scrub(f"{type(e).__name__}: {e}"),
            )

    # --- records

    def _handle(self, record: Record) -> None:
        kind = record.get("type")
        if kind == "JobStarted" and isinstance(record.get("job"), str):
            self.job.name = record["job"]
        if kind == "JobStarted" and isinstance(record.get("max_iterations"), int):
            self.job.max_iterations = record["max_iterations"]
        if kind == "Decision":
            self.job.decision = record
            return
        if kind == "NewBest":
            self.job.best = {"iteration": record.get("iteration"), "map": record.get("map")}
            self._new_best(self._with_chart(record))
            return
        event = event_of(record)
        if event is None:
            return
        if event == "diagnosis":
            if not self._first_of_pattern(str(record.get("pattern"))):
                return
            record = self._with_chart(record)
        if kind == "Finished":
            # The stopped/failed message carries the best: a held new_best would only repeat
            # it, after it.
            self._drop_held()
            self.finished = True
            record = self._with_chart(record)
        else:
            # A held best happened before this record: send it first, so order holds.
            self._release_all()
        message = compose(self.job, record)
        if message is not None:
            self._add(message, [t for t in self.targets if event in t.events])

    def _first_of_pattern(self, pattern: str) -> bool:
        """Whether `pattern` is news for this job: not told before, in this process or in an
        earlier one whose messages the job dir's outbox holds (`run --attach`, a restarted
        daemon: its diagnosis watch starts afresh and publishes the standing verdict again).
        A pattern that comes back after the diagnosis moved away is not told twice either."""
        if self._diagnosed is None:
            self._diagnosed = {
                str(d.message.numbers.get("pattern"))
                for d in self.outbox.deliveries()
                if d.message.event == "diagnosis"
            }
        if pattern in self._diagnosed:
            return False
        self._diagnosed.add(pattern)
        return True

    def _with_chart(self, record: Record) -> Record:
        """`record` naming the job dir's chart: the path, not the picture, goes into the
        outbox. Whether it exists is asked when the message is sent (`formats._chart`), so
        a chart written after this record — the chart listener may come after this one on
        the bus — still goes, and a message delivered after the chart is gone goes as text."""
        if record.get("chart") or self.job_dir is None:
            return record
        return {**record, "chart": str(self.job_dir / CHART_FILE)}

    def _add(self, message: Message, targets: Sequence[NotifyTarget]) -> None:
        if not targets:
            return
        self.outbox.add(message, [(t.key, t.label) for t in targets])
        self.on_added()

    # --- new_best rate limit

    def _new_best(self, record: Record) -> None:
        t = record.get("time")
        now = float(t) if isinstance(t, int | float) else time.time()
        send: list[NotifyTarget] = []
        for target in self.targets:
            if "new_best" not in target.events:
                continue
            key, every = target.key, target.new_best_interval
            last = self._last_best.get(key)
            if every is None or last is None or now - last >= every:
                send.append(target)
                self._last_best[key] = now
                self._held.pop(key, None)
                timer = self._timers.pop(key, None)
                if timer is not None:
                    timer.cancel()
            else:
                self._held[key] = record
                if key not in self._timers:
                    self._schedule(key, last + every - now)
        message = compose(self.job, record)
        if message is not None:
            self._add(message, send)

    def _schedule(self, key: str, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous replay): the held best goes with the next record
        self._timers[key] = loop.call_later(max(delay, 0.0), self._release, key)

    def _release(self, key: str) -> None:
        self._timers.pop(key, None)
        record = self._held.pop(key, None)
        if record is None or self.finished:
            return
        target = next(t for t in self.targets if t.key == key)
        every = target.new_best_interval or 0.0
        self._last_best[key] = self._last_best.get(key, 0.0) + every
        try:
            message = compose(self.job, record)
            if message is not None:
                self._add(message, [target])
        except Exception as e:
            log.warning("notification not queued", record="NewBest", error=scrub(str(e)))

    def _release_all(self) -> None:
        for key in list(self._held):
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            self._release(key)

    def _drop_held(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._held.clear()

    def close(self) -> None:
        self._drop_held()


class Notifications:
    """A job's notifications: the listener on its bus, its outbox and the delivery tasks.
    Without targets it does nothing (and creates no outbox)."""

    def __init__(
        self,
        listener: NotifyListener | None = None,
        outbox: Outbox | None = None,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.listener, self.outbox, self.deliverer = listener, outbox, deliverer

    async def flush(self, timeout: float = NOTIFY_FLUSH_S) -> int:
        """Wait at most `timeout` s for every queued message to be delivered or refused; the
        number left pending (they stay in the outbox: `trainsup notify flush JOB_DIR`)."""
        if self.deliverer is None:
            return 0
        return await self.deliverer.flush(timeout)

    def pending(self) -> int:
        return self.deliverer.pending() if self.deliverer is not None else 0

    def failures(self) -> list[dict[str, Any]]:
        """Messages refused for good (status, the receiver's words), for report.json."""
        return delivery_failures(self.outbox) if self.outbox is not None else []

    def summary(self) -> dict[str, Any] | None:
        """`{"sent", "pending", "failed": [...]}` for report.json; None without targets."""
        return summary(self.outbox) if self.outbox is not None else None

    async def aclose(self) -> None:
        """Stop the delivery tasks and close the outbox; pending rows stay in it."""
        if self.listener is not None:
            self.listener.close()
        if self.deliverer is not None:
            await self.deliverer.aclose()
        if self.outbox is not None:
            self.outbox.close()
        self.listener = self.deliverer = self.outbox = None


def attach_notifications(
    subscribe: Callable[[Callable[[Record], None]], None],
    targets: Sequence[NotifyTarget],
    job_dir: Path,
    *,
    job_name: str | None = None,
    job_id: str | None = None,
    link: str | None = None,
    config: DeliveryConfig | None = None,
    client: httpx.AsyncClient | None = None,
    chart: ChartSource | None = None,
) -> Notifications:
    """Subscribe a notification listener for one job and start delivering.

    Call it inside the running event loop, before the runner publishes its first record:
    `subscribe` is the bus's `subscribe`, `targets` the job's `spec.notify`. The outbox is
    `<job_dir>/outbox.sqlite`; rows a previous process left there for these targets are
    delivered too. `link` is the job's public page, when there is one. `chart` is the
    job's chart drawer (`attach_chart`'s listener), when this process draws `chart.png`: an
    upload waits for the drawing its record asked for (`DeliveryConfig.chart_wait`).
    """
    for t in targets:
        if t.redacted:
            # `run --attach` reads the job dir's copy: say why this target stays silent.
            log.warning("notification target skipped", target=t.label, why=REDACTED_HINT)
    targets = [t for t in targets if not t.redacted]
    if not targets:
        return Notifications()
    outbox = SqliteOutbox(job_dir / OUTBOX_FILE)
    deliverer = Deliverer(outbox, targets, config, client, chart=chart)
    deliverer.start()
    listener = NotifyListener(
        targets,
        outbox,
        deliverer.wake,
        job_name=job_name or job_dir.name,
        job_id=job_id,
        job_dir=job_dir,
        link=link,
    )
    subscribe(listener)
    return Notifications(listener, outbox, deliverer)
