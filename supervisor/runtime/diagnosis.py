"""The live diagnosis: a `Diagnosis` record on the bus whenever the pattern changes.

The runner publishes every `MapResult` record (bus.py); after each one, `DiagnosisWatch`
diagnoses the runner's history (`training/diagnose.py`, live: too early until the evidence is
there) and, when the pattern moves from the last one it published (steadied: see the class),
returns a record

    Diagnosis   {pattern, confidence, evidence, causes, advice, iteration, previous}

which the runner (or the watch itself, given `publish`) puts on the bus, so the events file,
the notifier and the chart see the diagnosis move from `too_early` to its pattern.

`diagnosis_facts(schedule, check_report)` gives the facts (the cfg's max_batches and burn_in;
the split sizes and the findings of the pre-flight check, when it ran). Wiring, either way:
- as a listener: `bus.subscribe(DiagnosisWatch(lambda: runner.history, facts,
  publish=bus.publish))` — the runner publishes a MapResult record *before* it adds the event
  to its history, so the watch folds the record's evaluation into the history it diagnoses
  when the history does not hold it yet;
- called by the runner after `history.add(MapResult)`: `rec = watch.check(history)`, then
  publish `rec` when it is not None.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from supervisor.atomicio import json_safe
from supervisor.runtime.bus import Record
from supervisor.runtime.records import from_record
from supervisor.training.diagnose import Diagnosis, DiagnosisFacts, diagnose
from supervisor.training.events import MapResult
from supervisor.training.history import History
from supervisor.training.schedule import Schedule

if TYPE_CHECKING:
    from supervisor.dataset.check import CheckReport

RECORD_TYPE = "Diagnosis"


def diagnosis_facts(schedule: Schedule, check: CheckReport | None = None) -> DiagnosisFacts:
    """What the runner knows beside the history: the cfg's schedule and, when the pre-flight
    `trainsup check` ran on the job, the split sizes and its findings by code."""
    facts = DiagnosisFacts(max_batches=schedule.max_batches, burn_in=schedule.burn_in or None)
    if check is None:
        return facts
    sizes = {s.name: s.images for s in check.summary.splits}
    return DiagnosisFacts(
        max_batches=facts.max_batches,
        burn_in=facts.burn_in,
        valid_images=sizes.get("valid"),
        train_images=sizes.get("train"),
        findings=dict(Counter(f.code for f in check.findings)),
    )


def diagnosis_record(d: Diagnosis, iteration: int, previous: str | None) -> Record:
    rec: Record = json_safe(
        {
            "type": RECORD_TYPE,
            "time": time.time(),
            **d.to_json(),
            "iteration": iteration,
            "previous": previous,
        }
    )
    return rec


class DiagnosisWatch:
    """Diagnoses after each evaluation; yields a record only when the published pattern moves.

    `history_getter` returns the runner's current history; `facts` what is known beside it
    (the cfg's max_batches and burn_in, the split sizes, `trainsup check`'s findings).
    `publish`, when given, receives each record (`__call__`, the bus listener, uses it).

    Each diagnosis is of one snapshot, and a noisy curve can move between two readings from
    one evaluation to the next (the corpus's generous 12-image run: low variance, too early,
    once overtraining, 7 changes in 40 evaluations). What is published is steadier, so that a
    chat channel hears a change once: the first verdict after `too_early` at once; any other
    change only after `confirm` diagnoses in a row agree on it (a corrupted dataset at once: a
    blow-up does not wait); never a return to `too_early` — evidence seen is not unseen, the
    last verdict stands until another is confirmed. `last` is the latest diagnosis, published
    or not; `published` the latest published one.
    """

    def __init__(
        self,
        history_getter: Callable[[], History],
        facts: DiagnosisFacts | None = None,
        *,
        publish: Callable[[Record], None] | None = None,
        live: bool = True,
        confirm: int = 2,
    ) -> None:
        self.history_getter = history_getter
        self.facts = facts
        self.publish = publish
        self.live = live
        self.confirm = confirm
        self.last: Diagnosis | None = None
        self.published: Diagnosis | None = None
        self._streak = 0  # consecutive diagnoses of `last.pattern`

    def check(self, history: History) -> Record | None:
        """Diagnose `history`; a record when the published pattern moves (class docstring)."""
        d = diagnose(history, self.facts, live=self.live)
        same = self.last is not None and self.last.pattern == d.pattern
        self._streak = self._streak + 1 if same else 1
        self.last = d
        shown = self.published
        if shown is not None and (d.pattern == shown.pattern or d.pattern == "too_early"):
            return None
        at_once = shown is None or shown.pattern == "too_early" or d.pattern == "corrupted"
        if not at_once and self._streak < self.confirm:
            return None
        self.published = d
        return diagnosis_record(d, history.iteration, shown.pattern if shown else None)

    def on_record(self, record: Record) -> Record | None:
        """A bus record in; a `Diagnosis` record out after a MapResult that changed the pattern."""
        if record.get("type") != "MapResult":
            return None
        h = self.history_getter()
        event = from_record(record)
        if isinstance(event, MapResult) and not _holds(h, event):
            h = h.add(event)
        return self.check(h)

    def __call__(self, record: Record, /) -> None:
        out = self.on_record(record)
        if out is not None and self.publish is not None:
            self.publish(out)


def _holds(h: History, event: MapResult) -> bool:
    """Whether the history's latest evaluation is this one (the runner added it already). The
    runner stamps each event with its time before publishing, so time and line identify it."""
    if not h.evaluations:
        return False
    last = h.evaluations[-1].result
    return (last.iteration, last.line, last.source, last.time) == (
        event.iteration,
        event.line,
        event.source,
        event.time,
    )
