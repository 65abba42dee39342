"""Why a job was relaunched, and what the live diagnosis found, in the words a channel reads.

The runner's `Relaunched` record carries its own reason, complete but long ("out of memory at
iteration 1 200 (mini-batch 8 at 608×608 on GPU 0, 11.7/12.0 GB used): relaunched with
subdivisions=4 (batch still 64, mini-batch 2), resuming from iteration 1 000; …"): fine for a
report, too much for the line a phone shows. Here the record's fields — `trigger` (resume,
memory, stall, tune: `training/ending.py`'s `Relaunch.kind`), `change`, `drop_map`, `numbers`
(the figures before the change), `iteration` (where it resumes) — become a short head line,
and the runner's reason goes below it as the details.

A `Diagnosis` record (`runtime/diagnosis.py`) becomes its pattern's title, evidence and first
advice. Only a problem is news: `good` and `too_early` are never sent (`QUIET_PATTERNS`).

Pure: records in, words out; `message` wraps them into messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supervisor.training.diagnose import PATTERN_TITLES, Diagnosis

# The diagnoses that are no news for a channel: training as it should, or not enough seen yet.
QUIET_PATTERNS = frozenset({"good", "too_early"})
_TITLES: dict[str, str] = {str(k): v for k, v in PATTERN_TITLES.items()}
# The watchdog's words for a hang (runtime/watchdog.py): "no iteration line for 1500 s after
# iteration 1 200 (…)" or "no iteration line in the 700 s since the launch (…)". Read only
# while the record does not carry the silence as a number (`numbers.silent_s`).
_SILENCE = re.compile(r"no iteration line (for|in the) ([0-9]+(?:\.[0-9]+)?) s")


@dataclass(frozen=True)
class Words:
    """A message's words before they become a `Message`: the head line (after the job's name),
    the details, short facts and the webhook's numbers."""

    head: str
    text: str = ""
    facts: tuple[tuple[str, str], ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)


def _num(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x)


def _int(x: object) -> int | None:
    v = _num(x)
    return int(v) if v is not None and v == int(v) else None


def count(n: object) -> str:
    """`1200` → `1 200` (the project's thousands separator)."""
    v = _num(n)
    return str(n) if v is None else f"{v:,.0f}".replace(",", " ")


def span(seconds: float) -> str:
    """A silence or a wait as people say it: `0.2 s`, `45 s`, `25 min`, `2.5 h`."""
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def _mapping(x: object) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


# --- relaunched


def _changed(change: Mapping[str, Any], before: Mapping[str, Any]) -> list[str]:
    """ "subdivisions 4 (was 2)", "random=0 (no multi-scale resizing)", "input 576×576"."""
    out: list[str] = []
    rest = dict(change)
    if "subdivisions" in rest:
        new, old = rest.pop("subdivisions"), _int(before.get("subdivisions"))
        out.append(f"subdivisions {new}" + (f" (was {old})" if old not in (None, new) else ""))
    if "random" in rest:
        new = rest.pop("random")
        out.append("random=0 (no multi-scale resizing)" if new == 0 else f"random={new}")
    if "width" in rest or "height" in rest:
        w, h = rest.pop("width", before.get("width")), rest.pop("height", before.get("height"))
        ow, oh = _int(before.get("width")), _int(before.get("height"))
        was = f" (was {ow}×{oh})" if ow and oh and (ow, oh) != (w, h) else ""
        out.append(f"input size {w}×{h}{was}")
    out += [f"{k}={v}" for k, v in rest.items()]
    return out


def _what_changed(r: Mapping[str, Any]) -> str:
    """ "with subdivisions 4 (was 2)", "without -map (…)", or "" when nothing changed."""
    parts = _changed(_mapping(r.get("change")), _mapping(r.get("numbers")))
    said = [f"with {', '.join(parts)}"] if parts else []
    if r.get("drop_map") is True:
        said.append("without darknet's -map (trainsup now scores the snapshots itself)")
    return " and ".join(said)


def _from_where(r: Mapping[str, Any]) -> str:
    resumed = _int(r.get("iteration"))
    if resumed == 0:
        return "from the initial weights (no complete save yet)"
    at = f" (iteration {count(resumed)})" if resumed is not None else ""
    return f"from the last saved weights{at}"


def _memory(r: Mapping[str, Any]) -> str:
    at = _int(_mapping(r.get("numbers")).get("iteration"))
    head = "GPU out of memory" + (f" at iteration {count(at)}" if at is not None else "")
    what = _what_changed(r)
    return f"{head}: relaunched {what}" if what else f"{head}: relaunched {_from_where(r)}"


def _silence(r: Mapping[str, Any]) -> tuple[float, bool] | None:
    """How long darknet was silent, and whether since the launch (no iteration yet)."""
    numbers = _mapping(r.get("numbers"))
    s = _num(numbers.get("silent_s"))
    if s is not None:
        return s, numbers.get("since_launch") is True
    m = _SILENCE.search(str(r.get("reason") or ""))
    if m is None:
        return None
    return float(m.group(2)), m.group(1) == "in the"


def _stall(r: Mapping[str, Any]) -> str:
    silence = _silence(r)
    after = _int(_mapping(r.get("numbers")).get("iteration"))
    if silence is None:
        head = "darknet hung"
    elif silence[1]:
        head = f"no output for {span(silence[0])} after the launch"
    else:
        head = f"no output for {span(silence[0])}"
    if after and (silence is None or not silence[1]):
        head += f" after iteration {count(after)}"
    return f"{head}: relaunched {_from_where(r)}"


def _tune(r: Mapping[str, Any]) -> str:
    numbers = _mapping(r.get("numbers"))
    gpu, used = numbers.get("gpu"), _num(numbers.get("gpu_used_mib"))
    total = _num(numbers.get("gpu_total_mib"))
    room = "the GPU has memory to spare"
    if gpu is not None:
        room = f"GPU {gpu} has memory to spare"
        if used is not None and total:
            room += f" ({used / 1024:.1f} of {total / 1024:.0f} GB used)"
    what = _what_changed(r) or "with fewer subdivisions"
    return f"{room}: relaunched {what} for speed"


def _resume(r: Mapping[str, Any]) -> str:
    last = _int(_mapping(r.get("numbers")).get("iteration"))
    head = "darknet ended while trainsup was down"
    if last is not None:
        head += f" (last iteration {count(last)})"
    return f"{head}: resumed {_from_where(r)}"


_TRIGGERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "memory": _memory,
    "stall": _stall,
    "tune": _tune,
    "resume": _resume,
}


def _legacy(r: Mapping[str, Any]) -> str:
    """A record without a known `trigger` (written before triggers, or by another writer):
    its reason, where it resumed and its change, as it always read."""
    at = f" at {count(r.get('iteration'))}" if r.get("iteration") is not None else ""
    change = r.get("change")
    ch = ", ".join(f"{k}={v}" for k, v in change.items()) if isinstance(change, dict) else ""
    if not ch and change and not isinstance(change, dict):
        ch = str(change)
    with_ = f" with {ch}" if ch else ""
    reason = r.get("reason")
    return f"{reason}{at} — relaunched{with_}" if reason else f"relaunched{at}{with_}"


def relaunch_words(r: Mapping[str, Any]) -> Words:
    trigger = r.get("trigger")
    words = _TRIGGERS.get(trigger) if isinstance(trigger, str) else None
    numbers: dict[str, Any] = {
        "reason": r.get("reason"),
        "iteration": r.get("iteration"),
        "change": r.get("change"),
    }
    if words is None:
        return Words(_legacy(r), numbers=numbers)
    numbers |= {
        "trigger": trigger,
        "drop_map": r.get("drop_map") is True,
        "numbers": dict(_mapping(r.get("numbers"))),
        "backoff_s": r.get("backoff_s"),
    }
    facts: list[tuple[str, str]] = []
    resumed = _int(r.get("iteration"))
    if resumed is not None:
        facts.append(
            ("Resumes from", f"iteration {count(resumed)}" if resumed else "the initial weights")
        )
    wait = _num(r.get("backoff_s"))
    if wait:
        # The runner waits this long after the record, before the new launch (the backoff).
        facts.append(("Relaunch in", span(wait)))
    # The runner's full reason (GPU use, the mini-batch, the backoff) is the details.
    return Words(words(r), str(r.get("reason") or ""), tuple(facts), numbers)


# --- diagnosis


def is_news(record: Mapping[str, Any]) -> bool:
    """A `Diagnosis` record a channel should hear of: a known pattern that is a problem."""
    pattern = record.get("pattern")
    return isinstance(pattern, str) and pattern in _TITLES and pattern not in QUIET_PATTERNS


def diagnosis_words(r: Mapping[str, Any]) -> Words | None:
    d = Diagnosis.from_json(r)
    if d is None:
        return None
    at = _int(r.get("iteration"))
    head = f"diagnosis at {count(at)}: {d.title()}" if at is not None else d.title()
    lines: list[str] = []
    if d.evidence:
        lines.append("Evidence:")
        lines += [f"• {e}" for e in d.evidence]
    if d.advice:
        lines.append(f"What to do: {d.advice[0]}")
    previous = r.get("previous")
    facts: tuple[tuple[str, str], ...] = ()
    if isinstance(previous, str) and previous in _TITLES:
        facts = (("Before", _TITLES[previous]),)
    numbers = d.to_json() | {"iteration": r.get("iteration"), "previous": previous}
    return Words(head, "\n".join(lines), facts, numbers)
