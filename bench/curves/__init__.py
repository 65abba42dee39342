"""The curve corpus: whole real darknet trainings as JSON (README.md here), and their replay.

`python -m bench.curves` generates them (hours of CPU, never in CI); `load_curve` and
`curve_events` turn one back into the events the live runner saw, for the policy tests and
`bench/policy.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from supervisor.training.events import ClassAP, Event, Iteration, MapResult
from supervisor.training.schedule import Schedule

CURVES = Path(__file__).resolve().parent


def load_curve(name_or_path: str | Path) -> dict[str, Any]:
    p = Path(name_or_path)
    if not p.suffix:
        p = CURVES / f"{p}.json"
    data: dict[str, Any] = json.loads(p.read_text())
    return data


def curve_paths(folder: Path = CURVES) -> list[Path]:
    return sorted(folder.glob("*.json"))


def curve_schedule(curve: dict[str, Any]) -> Schedule:
    s = curve["schedule"]
    return Schedule(
        burn_in=s["burn_in"],
        steps=tuple(s["steps"]),
        scales=tuple(s["scales"]),
        max_batches=s["max_batches"],
    )


def curve_events(curve: dict[str, Any]) -> list[Event]:
    """Iteration lines in order, each evaluation right after the line of its iteration (live,
    it arrives a few iterations later: the policy decides on it no earlier than here)."""
    it = curve["iterations"]
    evals = {e["iteration"]: e for e in curve["evaluations"]}
    out: list[Event] = []
    for i, loss, avg, rate, sec in zip(
        it["iteration"], it["loss"], it["avg_loss"], it["rate"], it["seconds"], strict=True
    ):
        out.append(Iteration(i, loss, avg, rate, seconds=sec))
        e = evals.get(i)
        if e is not None:
            out.append(
                MapResult(
                    i,
                    e["map"],
                    e.get("valid", True),
                    iou_threshold=e.get("iou_threshold"),
                    per_class=tuple(
                        ClassAP(p["class_id"], p["name"], p["ap"]) for p in e["per_class"]
                    ),
                    average_iou=e.get("average_iou"),
                    precision=e.get("precision"),
                    recall=e.get("recall"),
                    f1=e.get("f1"),
                    tp=e.get("tp"),
                    fp=e.get("fp"),
                    fn=e.get("fn"),
                    source="supervisor",
                )
            )
    return out
