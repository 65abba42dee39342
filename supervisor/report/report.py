"""`report.json`: the summary of one job, built from the history and what the runner kept.

Pure apart from `write_report`: the runner gathers the facts, this module decides their shape,
so the daemon's `show` and the tests read one format. `avg_loss` is darknet's printed avg loss
at an iteration; `loss_mean_100` is the mean of it over the 100 iterations up to there (what
the policy compares), never the same name for both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from supervisor.atomicio import json_safe, write_json_atomic
from supervisor.training.diagnose import DiagnosisFacts, diagnose
from supervisor.training.ending import End, errors
from supervisor.training.history import History
from supervisor.training.policy import Stop


def stop_json(d: Stop | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "rule": d.rule,
        "reason": d.reason,
        "iteration": d.iteration,
        "advice": d.advice,
        "numbers": dict(d.numbers),
    }


def build_report(
    *,
    job: str,
    end: End,
    history: History,
    flavour: str,
    argv: Sequence[str],
    own_evaluation: bool,
    stop: Stop | None,
    stop_end: Mapping[str, Any] | None,
    kept: Mapping[str, Any],
    unscored: Sequence[Mapping[str, Any]],
    launches: Sequence[Mapping[str, Any]],
    evaluation_errors: Sequence[str],
    internal_errors: Sequence[str],
    diagnosis_facts: DiagnosisFacts | None = None,
) -> dict[str, Any]:
    """The report's fields (README "The job dir" documents them).

    `diagnosis` is the seed's pattern the history shows (training/diagnose.py), read as a
    finished run's unless darknet still trains (detached); `diagnosis_facts` adds what the
    runner knows beside the history (max_batches, split sizes, `trainsup check` findings).
    """
    h = history
    stop_part = stop_json(stop)
    if stop_part is not None and stop_end:
        stop_part.update(stop_end)
    report: dict[str, Any] = {
        "job": job,
        "status": end.status,
        "cause": end.cause,
        "flavour": flavour,
        "argv": list(argv),
        "evaluation_source": "supervisor" if own_evaluation else "darknet",
        "stop": stop_part,
        "iterations": {
            "first": h.first_iteration,
            "last": h.iteration,
            "lines": h.iteration_lines,
            "repeated": h.repeats,
        },
        "final_avg_loss": _finite(h.last.avg_loss) if h.last else None,
        "elapsed_s": round(h.elapsed, 1),
        "evaluations": [
            {
                "iteration": e.iteration,
                "map": _finite(e.map),
                "valid": e.valid,
                "avg_loss": h.avg_loss_at(e.iteration),
                "loss_mean_100": e.avg_loss,
            }
            for e in h.evaluations
        ],
        "best": None if h.best is None else {"iteration": h.best.iteration, "map": h.best.map},
        "kept": dict(kept),
        "unscored": list(unscored),
        "launches": list(launches),
        "exit": launches[-1].get("exit") if launches else None,
        "evaluation_errors": list(evaluation_errors),
        "internal_errors": list(internal_errors),
        "errors": [{"line": e.line, "message": e.message} for e in errors(h)],
        "diagnosis": diagnose(h, diagnosis_facts, live=end.status == "detached").to_json(),
    }
    out: dict[str, Any] = json_safe(report)
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    write_json_atomic(path, dict(report))


def add_to_report(path: Path, fields: Mapping[str, Any]) -> None:
    """Merge `fields` into an existing report.json (what is learnt after the job ended, such
    as the notifications' delivery); nothing when there is no report."""
    import json

    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    report.update(json_safe(dict(fields)))
    write_json_atomic(path, report)
