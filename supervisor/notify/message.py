"""A message about a job, as every service's format sees it, and how bus records become one.

The text is written once here; `formats` only lays it out per service. A message is stored in
the outbox as JSON (`to_json`), so a process that delivers it later (`trainsup notify flush`,
the daemon after a restart) sends exactly what the first one would have — with the same `id`,
the idempotency key a receiver uses to drop a repeat.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from supervisor.notify.reasons import diagnosis_words, is_news, relaunch_words
from supervisor.spec.notify import EventName

ICONS: dict[str, str] = {
    "started": "▶",
    "new_best": "★",
    "warning": "⚠",
    "relaunched": "↻",
    "diagnosis": "⚕",
    "stopped": "■",
    "failed": "✖",
    "test": "✔",
}
# Colour of the side bar (Discord, Mattermost) and the card's accent (Teams): good, neutral,
# attention, bad.
COLORS: dict[str, str] = {
    "started": "#3b82f6",
    "new_best": "#22c55e",
    "warning": "#f59e0b",
    "relaunched": "#f59e0b",
    "diagnosis": "#f59e0b",
    "stopped": "#6b7280",
    "failed": "#ef4444",
    "test": "#3b82f6",
}
TEST_EVENT = "test"

# Plain words for a stop rule in a channel (README "The stop policy").
RULE_WORDS = {
    "plateau": "mAP plateau",
    "overfit": "overfitting",
    "not_learning": "not learning",
    "diverged": "loss diverged",
    "target_map": "target mAP reached",
    "max_iterations": "iteration budget reached",
    "max_time": "time budget reached",
    "user": "stopped by the user",
}


@dataclass(frozen=True)
class Message:
    """One notification.

    `title` is the one line a phone shows ("★ helmet-v4: new best mAP 81.2 % at 3 400");
    `text` the details (reason, advice), possibly empty; `facts` short (name, value) pairs;
    `numbers` the machine-readable fields the generic webhook sends; `chart` a PNG path to
    upload where the service takes files; `link` the job's page when one is public.
    """

    id: str
    event: str  # an EventName, or "test"
    job: dict[str, str]
    time: float
    title: str
    text: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)
    chart: str | None = None
    link: str | None = None

    @property
    def icon(self) -> str:
        return ICONS.get(self.event, "•")

    @property
    def color(self) -> str:
        return COLORS.get(self.event, "#6b7280")

    @property
    def iso_time(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).isoformat().replace("+00:00", "Z")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["facts"] = [list(f) for f in self.facts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            id=str(data["id"]),
            event=str(data["event"]),
            job=dict(data["job"]),
            time=float(data["time"]),
            title=str(data["title"]),
            text=str(data.get("text", "")),
            facts=tuple((str(k), str(v)) for k, v in data.get("facts", [])),
            numbers=dict(data.get("numbers", {})),
            chart=data.get("chart"),
            link=data.get("link"),
        )


def new_id() -> str:
    return uuid.uuid4().hex


# --- number formats as people read them


def count(n: object) -> str:
    """`3400` → `3 400` (the project's thousands separator)."""
    if isinstance(n, bool) or not isinstance(n, int | float):
        return str(n)
    return f"{n:,.0f}".replace(",", " ")


def pct(x: object) -> str:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return "?"
    return f"{x * 100:.1f} %"


def duration(seconds: object) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "?"
    from supervisor.spec.job import format_duration

    return format_duration(float(seconds))


def _get(d: object, key: str) -> Any:
    return d.get(key) if isinstance(d, dict) else None


# --- records → messages


@dataclass
class JobFacts:
    """What the listener has learnt about the job from earlier records."""

    name: str
    id: str | None = None
    link: str | None = None
    best: dict[str, Any] | None = None  # {iteration, map} from NewBest
    decision: dict[str, Any] | None = None  # the last Decision record
    max_iterations: int | None = None

    @property
    def job(self) -> dict[str, str]:
        return {"name": self.name, **({"id": self.id} if self.id else {})}


def _make(
    job: JobFacts,
    event: str,
    record: dict[str, Any],
    title: str,
    text: str = "",
    facts: list[tuple[str, str]] | None = None,
    numbers: dict[str, Any] | None = None,
) -> Message:
    t = record.get("time")
    chart = record.get("chart")
    return Message(
        id=new_id(),
        event=event,
        job=job.job,
        time=float(t) if isinstance(t, int | float) else time.time(),
        title=f"{ICONS.get(event, '•')} {title}",
        text=text,
        facts=tuple(facts or ()),
        numbers=numbers or {},
        chart=str(chart) if chart else None,
        link=job.link,
    )


def _cfg_name(argv: object) -> str | None:
    if isinstance(argv, list):
        for arg in argv:
            if isinstance(arg, str) and arg.endswith(".cfg"):
                return arg.rsplit("/", 1)[-1][: -len(".cfg")]
    return None


def _on_what(gpus: object) -> str:
    if isinstance(gpus, list):
        if not gpus:
            return "on the CPU"
        ids = ", ".join(str(g) for g in gpus)
        return f"on GPU {ids}" if len(gpus) == 1 else f"on GPUs {ids}"
    return ""


def started(job: JobFacts, r: dict[str, Any]) -> Message:
    cfg = _cfg_name(r.get("argv")) or _cfg_name([r.get("cfg")])  # argv is null on --attach
    max_it, max_time = r.get("max_iterations"), r.get("max_time_s")
    details = [
        d
        for d in (
            cfg,
            f"{count(max_it)} it max" if isinstance(max_it, int) else None,
            f"budget {duration(max_time)}" if isinstance(max_time, int | float) else None,
        )
        if d
    ]
    verb = "supervised again (attached)" if r.get("attach") else "started"
    where = _on_what(r.get("gpus"))
    title = f"{job.name} {verb}" + (f" {where}" if where else "")
    title += f" ({', '.join(details)})" if details else ""
    facts = [("Flavour", str(r["flavour"]))] if r.get("flavour") else []
    numbers = {
        k: r.get(k) for k in ("flavour", "max_iterations", "max_time_s", "gpus", "attach")
    } | {"cfg": cfg}
    return _make(job, "started", r, title, facts=facts, numbers=numbers)


def new_best(job: JobFacts, r: dict[str, Any]) -> Message:
    it, m, prev = r.get("iteration"), r.get("map"), r.get("previous")
    title = f"{job.name}: new best mAP {pct(m)} at {count(it)}"
    text = ""
    if isinstance(prev, dict) and prev.get("map") is not None:
        text = f"previous best {pct(prev['map'])} at {count(prev.get('iteration'))}"
    elif isinstance(prev, int | float) and not isinstance(prev, bool):
        text = f"previous best {pct(prev)}"
    numbers = {"iteration": it, "map": m, "previous": prev}
    return _make(job, "new_best", r, title, text, numbers=numbers)


def warning(job: JobFacts, r: dict[str, Any]) -> Message:
    # The policy words a warning as a predicate of the job: "may be overfitting: …".
    message = str(r.get("message") or r.get("rule") or "warning")
    nums = r.get("numbers") if isinstance(r.get("numbers"), dict) else {}
    numbers = {"rule": r.get("rule"), "message": message, "numbers": nums}
    if r.get("iteration") is not None:
        numbers["iteration"] = r.get("iteration")
    return _make(job, "warning", r, f"{job.name} {message}", numbers=numbers)


def relaunched(job: JobFacts, r: dict[str, Any]) -> Message:
    w = relaunch_words(r)
    return _make(job, "relaunched", r, f"{job.name}: {w.head}", w.text, list(w.facts), w.numbers)


def diagnosis(job: JobFacts, r: dict[str, Any]) -> Message | None:
    w = diagnosis_words(r)
    if w is None:
        return None
    return _make(job, "diagnosis", r, f"{job.name}: {w.head}", w.text, list(w.facts), w.numbers)


def _best_facts(job: JobFacts, r: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    best: dict[str, Any] | None = r["best"] if isinstance(r.get("best"), dict) else job.best
    kept: dict[str, Any] = r["kept"] if isinstance(r.get("kept"), dict) else {}
    path = _get(kept.get("best"), "path")
    if best is None and kept.get("best"):
        best = {"iteration": _get(kept["best"], "iteration"), "map": _get(kept["best"], "map")}
    if best is None or best.get("map") is None:
        return best, None
    line = f"Best {pct(best.get('map'))} at {count(best.get('iteration'))}"
    return best, line + (f" → {path}" if path else "")


def finished(job: JobFacts, r: dict[str, Any]) -> Message:
    status = str(r.get("status") or "finished")
    stop: dict[str, Any] | None = r["stop"] if isinstance(r.get("stop"), dict) else job.decision
    kept: dict[str, Any] = r["kept"] if isinstance(r.get("kept"), dict) else {}
    best, best_line = _best_facts(job, r)
    cause = r.get("cause")
    failed_ = status in ("failed", "killed")
    event: EventName = "failed" if failed_ else "stopped"
    rule = _get(stop, "rule")
    reason = _get(stop, "reason")
    parts: list[str] = []
    if failed_:
        verb = "was killed" if status == "killed" else "failed"
        head = f"{job.name} {verb}: {cause or status}"
    elif stop is not None and status != "finished":
        head = f"{job.name} stopped: {RULE_WORDS.get(str(rule), str(rule))}"
        if reason:
            head += f" — {reason}"
    else:
        head = f"{job.name} {status}" + (f": {cause}" if cause else "")
    if best_line:
        parts.append(best_line + ".")
    used = r.get("budget_used")
    if isinstance(used, int | float) and not isinstance(used, bool) and 0 <= used < 0.995:
        parts.append(f"{round((1 - used) * 100):.0f} % of the budget unused.")
    # A Finished record's `stop` may come without the advice; the Decision before it has it.
    advice = _get(stop, "advice") or _get(job.decision, "advice")
    text = " ".join(parts)
    if advice:
        text += ("\n" if text else "") + f"Advice: {advice}"
    if failed_ and reason:
        text = f"The stop rule `{rule}` had asked to stop: {reason}\n" + text
    facts: list[tuple[str, str]] = [("Status", status)]
    if _get(stop, "iteration") is not None:
        facts.append(("Stopped at", count(_get(stop, "iteration"))))
    for role, k in kept.items():
        if isinstance(k, dict):
            m = f", mAP {pct(k['map'])}" if k.get("map") is not None else ""
            facts.append(
                (f"Kept {role}", f"{k.get('path')} (iteration {count(k.get('iteration'))}{m})")
            )
    numbers: dict[str, Any] = {
        "status": status,
        "cause": cause,
        "rule": rule,
        "reason": reason,
        "iteration": _get(stop, "iteration"),
        "advice": advice,
        "best": best,
        "kept": kept,
        "budget_used": used,
    }
    return _make(job, event, r, head, text.strip(), facts, numbers)


def probe_message(job: JobFacts) -> Message:
    record: dict[str, Any] = {"time": time.time()}
    return _make(
        job,
        TEST_EVENT,
        record,
        f"{job.name}: test message from trainsup",
        "If you read this, this target receives trainsup's notifications.",
        numbers={"message": "test"},
    )


def event_of(record: dict[str, Any]) -> EventName | None:
    """The notification event a record makes, if any."""
    kind = record.get("type")
    if kind == "JobStarted":
        return "started"
    if kind == "NewBest":
        return "new_best"
    if kind == "Warning":
        return "warning"
    if kind == "Relaunched":
        return "relaunched"
    if kind == "Diagnosis":
        # Only a problem is news: a move to good, or the early "too early", is not sent.
        return "diagnosis" if is_news(record) else None
    if kind == "Finished":
        return "failed" if record.get("status") in ("failed", "killed") else "stopped"
    return None


COMPOSERS: dict[str, Callable[[JobFacts, dict[str, Any]], Message | None]] = {
    "JobStarted": started,
    "NewBest": new_best,
    "Warning": warning,
    "Relaunched": relaunched,
    "Diagnosis": diagnosis,
    "Finished": finished,
}


def compose(job: JobFacts, record: dict[str, Any]) -> Message | None:
    composer = COMPOSERS.get(cast(str, record.get("type")))
    return composer(job, record) if composer else None
