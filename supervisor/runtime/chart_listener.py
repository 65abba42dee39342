"""`chart.png` in the job dir, redrawn as the run goes; and the chart of any job dir or log.

`ChartListener` is a bus listener (`runtime/bus.py`). Inside the bus's publish it only notes
what the chart needs beyond the runner's history (`ChartFacts`: the per-iteration loss and
layer IoU, the printed rates, relaunches, the stop, the kept weights) and, after an evaluation
or at the end, asks its worker thread for a redraw. The worker coalesces requests (a burst of
them is one drawing), draws with matplotlib's Agg canvas off the event loop and replaces
`chart.png` atomically (temp file + rename); a failure to draw is logged and the training goes
on. Drawing takes ~0.5 s of CPU: done in the publisher it would stall the log reading.

The same `ChartFacts` read back from `events.jsonl` give `chart_of_job_dir` (what
`trainsup chart JOB_DIR` draws), and `chart_of_log` draws a darknet log with the replay of
`trainsup analyze` (its stop point and kept weights).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from supervisor.atomicio import write_bytes_atomic
from supervisor.report.chart import ChartData, Envelope, Kept, chart_data, render
from supervisor.runtime.bus import Record
from supervisor.runtime.records import from_record, read_records
from supervisor.training.events import Event, Iteration, IterationsRepeated, Launch, LayerIoU
from supervisor.training.history import History
from supervisor.training.policy import Policy, Stop
from supervisor.training.schedule import Schedule, infer_schedule

log = structlog.get_logger("trainsup.chart")

CHART_FILE = "chart.png"
# Requests closer together than this are one drawing: an evaluation, the NewBest after it and
# a stop decision come within milliseconds. It also lets the runner fold the MapResult into its
# history (the bus publishes a record before the runner adds its event).
COALESCE_S = 0.3
# How long `close` waits for the last drawing at the end of a run.
FINAL_DRAW_TIMEOUT_S = 30.0

HistoryGetter = Callable[[], History]
# (history, schedule, live) → the chart's title; None keeps the default title.
TitleOf = Callable[[History, Schedule, bool], str | None]


class ChartFacts:
    """What a chart needs beyond the history, gathered from a job's records or events.

    With `build_history` it also folds the parser's events into its own `history` (for a job
    dir read back from `events.jsonl`); the live listener takes the runner's history instead.
    Not thread-safe: `ChartListener` guards it with its lock.
    """

    def __init__(self, *, build_history: bool = False) -> None:
        self.loss = Envelope()
        self.layer_iou = Envelope()
        # Only the first and last iteration of each run of one printed rate: that is all
        # `infer_schedule` looks at, and a 3 M-iteration log has a few dozen runs.
        self._rates: list[tuple[int, float]] = []
        self._run_len = 0
        self.relaunches: list[int] = []
        # A relaunch says so up to three times (the runner's Relaunched record, the wrapper's
        # launch marker, the parser's repeat of iterations): one mark for the lot.
        self._since_mark = 2  # iteration lines since the last relaunch mark
        self.stop: Stop | None = None
        self.kept: list[Kept] = []
        self.max_batches: int | None = None
        self.last_iteration = 0
        self.finished = False  # a Finished record came: the diagnosis is no longer live
        self.history: History | None = History() if build_history else None

    def add(self, rec: Record) -> None:
        """One record of the bus or of `events.jsonl`."""
        kind = rec.get("type")
        if kind == "Iteration" and self.history is None:
            # The live listener's hot path (one per iteration line): three fields, no event.
            it, loss, rate = rec.get("iteration"), rec.get("loss"), rec.get("rate")
            if isinstance(it, int):
                self._since_mark += 1
                self.last_iteration = it
                self.loss.add(it, loss if isinstance(loss, float | int) else math.nan)
                if isinstance(rate, float | int):
                    self._add_rate(it, rate)
            return
        if kind == "Decision" and self.stop is None:
            # A malformed record draws no stop marker rather than no chart.
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.stop = Stop(
                    str(rec["rule"]), str(rec["reason"]), int(rec["iteration"]),
                    rec.get("numbers") or {}, str(rec.get("advice") or ""),
                )  # fmt: skip
        elif kind == "Relaunched":
            it = rec.get("iteration")
            self._mark(it if isinstance(it, int) else self.last_iteration)
        elif kind == "Finished":
            self.kept = kept_of(rec.get("kept"))
            self.finished = True
        elif kind == "JobStarted":
            self.finished = False  # an `--attach` of a job that had ended goes on
            if isinstance(rec.get("max_iterations"), int):
                self.max_batches = rec["max_iterations"]
        ev = from_record(rec)
        if ev is not None:
            self.add_event(ev)

    def add_event(self, ev: Event) -> None:
        """One parser event (a live record's, or a log's in `chart_of_log`)."""
        if self.history is not None:
            self.history = self.history.add(ev)
        if isinstance(ev, Iteration):
            self._since_mark += 1
            self.last_iteration = ev.iteration
            self.loss.add(ev.iteration, ev.loss)
            self._add_rate(ev.iteration, ev.rate)
        elif isinstance(ev, LayerIoU):
            if ev.mean_iou is not None and math.isfinite(ev.mean_iou):
                self.layer_iou.add(ev.iteration, ev.mean_iou)
        elif isinstance(ev, IterationsRepeated):
            # A resume (in a user's log there are no launch markers): where counting restarted.
            self._mark(ev.to_iteration)
        elif isinstance(ev, Launch) and ev.number > 1:
            self._mark(self.last_iteration)

    def _mark(self, iteration: int) -> None:
        if self._since_mark > 1:
            self.relaunches.append(iteration)
        self._since_mark = 0

    def _add_rate(self, iteration: int, rate: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            return
        rates = self._rates
        if rates and rates[-1][1] == rate:
            self._run_len += 1
            if self._run_len > 2:
                rates[-1] = (iteration, rate)
                return
        else:
            self._run_len = 1
        rates.append((iteration, rate))

    def schedule(self, known: Schedule | None = None) -> Schedule:
        """The cfg's schedule when known, else the one the printed rates show."""
        if known is not None:
            return known
        s = infer_schedule(Iteration(i, 0.0, 0.0, r) for i, r in self._rates)
        return Schedule(s.burn_in, s.steps, s.scales, self.max_batches, inferred=True)

    def data(
        self,
        history: History,
        *,
        schedule: Schedule | None = None,
        stop: Stop | None = None,
        kept: list[Kept] | None = None,
        title: str | None = None,
    ) -> ChartData:
        return chart_data(
            history,
            schedule=self.schedule(schedule),
            stop=stop if stop is not None else self.stop,
            kept=kept if kept is not None else self.kept,
            relaunches=self.relaunches,
            loss_bands=self.loss.bands(),
            layer_iou=self.layer_iou.means() if len(self.layer_iou) else None,
            title=title,
        )


def kept_of(kept: Any) -> list[Kept]:
    """report.json's / the Finished record's `kept` ({role: {path, iteration, map}})."""
    out: list[Kept] = []
    if not isinstance(kept, dict):
        return out
    for role, k in kept.items():
        if isinstance(k, dict) and isinstance(k.get("iteration"), int):
            m = k.get("map")
            out.append(
                Kept(str(role), k["iteration"], float(m) if isinstance(m, int | float) else None)
            )
    return out


def diagnosis_title(history: History, schedule: Schedule, live: bool) -> str | None:
    """The diagnosis' title for the chart (`training/diagnose.py`, another part of issue 11,
    looked up by name so that the chart works with or without it). `live`: the run goes on,
    so the diagnosis may say `too_early`."""
    from supervisor.training import diagnose as module

    diagnose = getattr(module, "diagnose", None)
    if diagnose is None:
        return None
    try:
        facts_cls = getattr(module, "DiagnosisFacts", None)
        facts = None
        if facts_cls is not None:
            facts = facts_cls(max_batches=schedule.max_batches, burn_in=schedule.burn_in or None)
        return str(diagnose(history, facts, live=live).title())
    except Exception as e:  # a diagnosis bug must not cost the chart
        log.warning("no diagnosis for the chart", error=f"{type(e).__name__}: {e}")
        return None


class ChartListener:
    """Redraws `<job_dir>/chart.png` after each evaluation and at the end (module docstring).

    `history` returns the runner's current history (an immutable value: reading it from the
    worker thread is safe). `draw` turns chart data into image bytes (tests pass a slow or a
    failing one). `seed`: an events file of the job's earlier records (an `--attach`, a
    re-adopted job), read by the worker before anything else — records published meanwhile
    wait in a backlog, so nothing of it is read in the publisher. `drawn` counts the charts
    written, `failures` the drawings that failed.
    """

    def __init__(
        self,
        job_dir: Path,
        history: HistoryGetter,
        *,
        schedule: Schedule | None = None,
        title: TitleOf | None = diagnosis_title,
        draw: Callable[[ChartData], bytes] = render,
        coalesce_s: float = COALESCE_S,
        name: str = CHART_FILE,
        seed: Path | None = None,
    ) -> None:
        self.path = job_dir / name
        self._history = history
        self._schedule = schedule
        self._title = title
        self._draw = draw
        self._coalesce = coalesce_s
        self.facts = ChartFacts()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending = False
        self._busy = False
        self._closed = False
        self._want_eval: int | None = None  # the evaluation the next drawing must show
        self._thread: threading.Thread | None = None
        self._seed = seed
        self._backlog: list[Record] | None = [] if seed is not None else None
        self.drawn = 0
        self.failures = 0
        if seed is not None:
            with self._lock:
                self._busy = True  # `flush` waits for the seeding too
                self._start()

    def __call__(self, record: Record) -> None:
        kind = record.get("type")
        with self._lock:
            if self._backlog is not None:
                self._backlog.append(record)  # the worker is still reading the seed
            else:
                self.facts.add(record)
            if kind == "MapResult":
                it = record.get("iteration")
                self._want_eval = it if isinstance(it, int) else None
                self._request()
            elif kind == "Finished":
                self._request()

    def request(self) -> None:
        """Ask for a redraw (the worker starts on the first one)."""
        with self._lock:
            self._request()

    def _request(self) -> None:
        if self._closed:
            return
        self._pending = True
        self._start()
        self._wake.notify()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="trainsup-chart", daemon=True)
            self._thread.start()

    def _read_seed(self) -> None:
        try:
            if self._seed is not None:
                # Only this thread touches `facts` while the backlog exists.
                for rec in read_records(self._seed):
                    self.facts.add(rec)
        except Exception as e:  # an unreadable events file costs the early curve, no more
            log.warning("chart: earlier records not read", path=str(self._seed), error=str(e))
        with self._lock:
            for rec in self._backlog or ():
                self.facts.add(rec)
            self._backlog = None
            self._busy = False
            self._wake.notify_all()

    def _work(self) -> None:
        if self._backlog is not None:
            self._read_seed()
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return  # closed with nothing left to draw
            if not self._closed:
                time.sleep(self._coalesce)  # let the burst finish: one drawing for all of it
            with self._lock:
                self._pending = False
                self._busy = True
                want = self._want_eval
            try:
                self._draw_once(want)
            finally:
                with self._lock:
                    self._busy = False
                    self._wake.notify_all()

    def _draw_once(self, want: int | None) -> None:
        try:
            h = self._history()
            # The record came before the runner added its event: wait for that, briefly.
            for _ in range(20):
                if want is None or any(e.iteration == want for e in h.evaluations):
                    break
                time.sleep(0.05)
                h = self._history()
            with self._lock:
                schedule = self.facts.schedule(self._schedule)
                live = not self.facts.finished
            title = self._title(h, schedule, live) if self._title is not None else None
            with self._lock:
                data = self.facts.data(h, schedule=schedule, title=title)
            write_bytes_atomic(self.path, self._draw(data))
            self.path.chmod(0o644)  # as `write_chart`: readable by the web page
            self.drawn += 1
        except Exception as e:  # a chart must never stop a training
            self.failures += 1
            log.warning("chart not drawn", path=str(self.path), error=f"{type(e).__name__}: {e}")

    def flush(self, timeout: float = FINAL_DRAW_TIMEOUT_S) -> bool:
        """Wait until no drawing is pending or running; False if `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
        return True

    def close(self, timeout: float = FINAL_DRAW_TIMEOUT_S) -> bool:
        """Draw what is pending (at once, no coalescing wait), then end the worker."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        done = self.flush(timeout)
        if self._thread is not None:
            self._thread.join(max(0.0, timeout) if done else 0.1)
        return done


def attach_chart(
    subscribe: Callable[..., None],
    job_dir: Path,
    history: HistoryGetter,
    *,
    schedule: Schedule | None = None,
    title: TitleOf | None = diagnosis_title,
) -> ChartListener:
    """Subscribe a `ChartListener` for `job_dir` (`subscribe` is the bus's) and return it:
    call its `close()` once the runner returned, so the final chart is on disk.

    A job dir with an events file (an `--attach`, a re-adopted daemon job) seeds the listener's
    loss curve from it, in the worker thread; the records the runner publishes again after its
    checkpoint replace theirs (a repeated iteration drops what followed it)."""
    events = job_dir / "events.jsonl"
    listener = ChartListener(
        job_dir, history, schedule=schedule, title=title, seed=events if events.exists() else None
    )
    subscribe(listener)
    return listener


# --- the chart of a finished (or running) job dir, or of a log -----------------------------------


def chart_of_job_dir(job_dir: Path, *, title: TitleOf | None = diagnosis_title) -> ChartData:
    """What `trainsup chart JOB_DIR` draws: the history from `events.jsonl` (read only, the job
    may be running), the stop and kept weights from `report.json` when the job has ended."""
    facts = ChartFacts(build_history=True)
    for rec in read_records(job_dir / "events.jsonl"):
        facts.add(rec)
    assert facts.history is not None
    stop: Stop | None = None
    kept: list[Kept] | None = None
    try:
        report = json.loads((job_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = None
    if isinstance(report, dict):
        s = report.get("stop")
        if isinstance(s, dict) and isinstance(s.get("iteration"), int):
            stop = Stop(str(s.get("rule")), str(s.get("reason", "")), s["iteration"])
        kept = kept_of(report.get("kept")) or None
    h = facts.history
    s = facts.schedule()
    name = title(h, s, not facts.finished) if title else None
    return facts.data(h, schedule=s, stop=stop, kept=kept, title=name)


class NothingToChart(Exception):
    """The file holds nothing a chart could show (not a darknet log); the message says so."""


def chart_of_log(
    path: Path,
    policy: Policy | None = None,
    schedule: Schedule | None = None,
    *,
    title: TitleOf | None = diagnosis_title,
) -> ChartData:
    """What `trainsup chart LOG` draws: `analyze_log`'s replay (history, stop, kept), plus
    the per-iteration loss, layer IoU and resumes from one more pass of the parser.

    Raises `NothingToChart` for a file without an iteration line or an evaluation."""
    from supervisor.darknet.analyze import analyze_log
    from supervisor.darknet.logparse import LogFile, LogParser

    a = analyze_log(path, policy, schedule)
    if a.history.last is None and not a.history.evaluations:
        raise NothingToChart(a.not_a_log or f"{path}: no iteration line: darknet did not train")
    facts = ChartFacts()
    parser = LogParser(a.flavour)
    for text in LogFile(path).chunks():
        for ev in parser.feed(text):
            facts.add_event(ev)
    for ev in parser.close():
        facts.add_event(ev)
    kept = [] if a.kept is None else [Kept("best", a.kept.iteration, a.kept.map)]
    h = a.history
    name = title(h, a.schedule, False) if title else None
    return facts.data(h, schedule=a.schedule, stop=a.stop, kept=kept, title=name)
