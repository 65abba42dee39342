"""`trainsup analyze`: replay a finished (or running) darknet log through the parser and policy.

The same parser, history and policy as the live runner, so what `analyze` says about an old
log is what the supervisor would have done. The one difference: a replay cannot evaluate
weights itself, so a log without darknet's own mAP lines has no mAP evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.darknet.logparse import LogParser
from supervisor.training.diagnose import gpu_advice
from supervisor.training.events import Event, Flavour, Iteration, MapResult
from supervisor.training.history import Evaluation, History
from supervisor.training.policy import Policy, Stop, pct
from supervisor.training.schedule import Schedule, infer_schedule


@dataclass(frozen=True, slots=True)
class Analysis:
    """What a replay found: the final history, the first stop, and what would have been kept."""

    log: str
    flavour: Flavour | None
    history: History
    schedule: Schedule
    stop: Stop | None
    kept: Evaluation | None

    @property
    def iterations_saved(self) -> int | None:
        if self.stop is None or self.history.last is None:
            return None
        return max(0, self.history.iteration - self.stop.iteration)

    def to_json(self) -> dict[str, Any]:
        h = self.history
        return {
            "log": self.log,
            "flavour": self.flavour,
            "iterations": {
                "count": h.iteration_lines,
                "first": h.first_iteration,
                "last": h.iteration if h.last else None,
            },
            "final_avg_loss": _num(h.last.avg_loss) if h.last else None,
            "nan_iterations": h.nan_lines,
            "repeats": h.repeats,
            "schedule": {
                "burn_in": self.schedule.burn_in,
                "steps": list(self.schedule.steps),
                "inferred": self.schedule.inferred,
            },
            "evaluations": [
                {
                    "iteration": e.iteration,
                    "map": _num(e.map),
                    "valid": e.valid,
                    "avg_loss": _num(e.avg_loss),
                    "iou_threshold": e.result.iou_threshold,
                    "precision": e.result.precision,
                    "recall": e.result.recall,
                    "f1": e.result.f1,
                    "average_iou": e.result.average_iou,
                    "per_class": [
                        {"class_id": c.class_id, "name": c.name, "ap": _num(c.ap)}
                        for c in e.result.per_class
                    ],
                }
                for e in h.evaluations
            ],
            "best": _point(h.best),
            "stop": None
            if self.stop is None
            else {
                "iteration": self.stop.iteration,
                "rule": self.stop.rule,
                "reason": self.stop.reason,
                "advice": self.stop.advice,
                "numbers": {k: _num(v) for k, v in self.stop.numbers.items()},
            },
            "kept": _point(self.kept),
            "iterations_saved": self.iterations_saved,
            "gpu_errors": [
                {"kind": g.kind, "line": g.line, "message": g.message, "advice": gpu_advice(g.kind)}
                for g in h.gpu_errors
            ],
            "fatal_errors": [{"line": f.line, "message": f.message} for f in h.fatal_errors],
        }


def _num(x: float | int | None) -> float | int | None:
    """JSON has no NaN/inf: such values become null (their `valid` flag says why)."""
    if x is None or isinstance(x, int):
        return x
    return x if math.isfinite(x) else None


def _point(e: Evaluation | None) -> dict[str, Any] | None:
    return None if e is None else {"iteration": e.iteration, "map": e.map}


def read_events(path: Path, flavour: Flavour | None = None) -> tuple[list[Event], Flavour | None]:
    """All events of a log file, and the flavour the parser settled on."""
    parser = LogParser(flavour)
    events: list[Event] = []
    with path.open("rb") as f:
        for raw in f:
            events.extend(parser.feed(raw.decode("utf-8", errors="replace")))
    events.extend(parser.close())
    return events, parser.flavour


def analyze_log(
    path: Path,
    policy: Policy | None = None,
    schedule: Schedule | None = None,
    flavour: Flavour | None = None,
) -> Analysis:
    """Replay `path`; the policy decides after every iteration line and every evaluation."""
    policy = policy or Policy()
    events, detected = read_events(path, flavour)
    if schedule is None:
        schedule = infer_schedule(e for e in events if isinstance(e, Iteration))
    h = History()
    stop: Stop | None = None
    kept: Evaluation | None = None
    for e in events:
        h = h.add(e)
        if stop is None and isinstance(e, Iteration | MapResult):
            d = policy.decide(h, schedule)
            if isinstance(d, Stop):
                stop, kept = d, h.best
    return Analysis(str(path), detected, h, schedule, stop, kept)


def format_analysis(a: Analysis, rows: int = 20) -> str:
    """The human report: the curve, each evaluation, where the policy stops and what it keeps."""
    h = a.history
    out = [f"log: {a.log}", f"flavour: {a.flavour or 'unknown'}"]
    if h.last is None:
        out.append("no iteration lines: darknet did not train")
    else:
        out.append(
            f"iterations: {h.iteration_lines} lines, {h.first_iteration} → {h.iteration}, "
            f"final avg loss {h.last.avg_loss:.4f}"
        )
        s = a.schedule
        src = "from the printed learning rate" if s.inferred else "from the cfg"
        steps = ",".join(map(str, s.steps)) or "none seen"
        out.append(f"schedule ({src}): burn_in {s.burn_in}, steps {steps}")
        out.append("")
        out.append(f"{'iteration':>10}  {'avg loss':>10}  {'mAP':>8}")
        evals = {e.iteration: e for e in h.evaluations}
        pts = h.loss.points()
        step = max(1, len(pts) // rows)
        shown = {it for k, (it, _) in enumerate(pts) if k % step == 0 or k == len(pts) - 1}
        shown |= set(evals)
        for it, avg in pts:
            if it in shown:
                e = evals.get(it)
                m = "" if e is None else (pct(e.map) if e.valid else "invalid")
                out.append(f"{it:>10}  {avg:>10.4f}  {m:>8}")
    out.append("")
    if h.evaluations:
        out.append(f"mAP evaluations: {len(h.evaluations)}")
    else:
        out.append(
            "mAP evaluations: none (plateau/overfit/not-learning need mAP: train with -map, "
            "or let trainsup evaluate)"
        )
    if h.best:
        out.append(f"best mAP: {pct(h.best.map)} at iteration {h.best.iteration}")
    for g in h.gpu_errors:
        out.append(f"GPU error ({g.kind}) at line {g.line}: {g.message}")
        out.append(f"  advice: {gpu_advice(g.kind)}")
    for f in h.fatal_errors:
        out.append(f"fatal at line {f.line}: {f.message}")
    out.append("")
    if a.stop is None:
        out.append("stop: the policy would not have stopped this run")
    else:
        out.append(f"stop: at iteration {a.stop.iteration} by rule `{a.stop.rule}`")
        out.append(f"  why: {a.stop.reason}")
        out.append(f"  advice: {a.stop.advice}")
        if a.kept:
            out.append(f"  kept: weights of iteration {a.kept.iteration} (mAP {pct(a.kept.map)})")
        saved = a.iterations_saved
        if saved:
            out.append(f"  saved: {saved} iterations of the {h.iteration} this log ran to")
    return "\n".join(out)
