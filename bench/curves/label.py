"""A first guess at what a curve shows, in the seed's six patterns, with one sentence why.

Only a proposal: a person looks at the curve and confirms it (`label_by: reviewed` in the
JSON). The thresholds are plain readings of the seed's captions, not tuned on anything.
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def propose_label(curve: dict[str, Any]) -> tuple[str, str]:
    evals = [e for e in curve["evaluations"] if e.get("valid", True)]
    avg = curve["iterations"]["avg_loss"]
    its = curve["iterations"]["iteration"]
    if not evals or not avg:
        return "insufficient", "no evaluation or no iteration line: nothing to read a trend from"
    maps = [e["map"] for e in evals]
    best_i = max(range(len(maps)), key=lambda i: maps[i])
    best, final = maps[best_i], maps[-1]
    n = len(avg)
    q = max(1, n // 10)
    loss_start = statistics.fmean(avg[:q])
    loss_end = statistics.fmean(avg[-q:])
    at_best = avg[min(n - 1, its.index(evals[best_i]["iteration"]))] if its else loss_end
    tail = maps[len(maps) // 2 :]
    steps = [abs(b - a) for a, b in itertools.pairwise(tail)]
    jitter = statistics.fmean(steps) if steps else 0.0
    valid_images = curve.get("recipe", {}).get("valid_images", 0)
    if best < 0.05:
        return "not_learning", (
            f"best mAP {_pct(best)} over {len(maps)} evaluations while avg loss went "
            f"{loss_start:.2f} → {loss_end:.2f}"
        )
    if (valid_images and valid_images < 10) or len(maps) < 6:
        return "insufficient", (
            f"{len(maps)} evaluations on {valid_images} valid images: consecutive mAPs differ "
            f"by {_pct(jitter)} on average, too noisy to trust the trend (best {_pct(best)})"
        )
    if best - final >= 0.08 and loss_end < at_best * 0.95:
        return "overtraining", (
            f"mAP peaked at {_pct(best)} (iteration {evals[best_i]['iteration']}) and ended at "
            f"{_pct(final)} while avg loss kept falling ({at_best:.2f} → {loss_end:.2f})"
        )
    if jitter >= 0.06:
        return "corrupted", (
            f"erratic mAP: consecutive evaluations in the second half differ by {_pct(jitter)} "
            f"on average (best {_pct(best)}, final {_pct(final)})"
        )
    if best < 0.4:
        return "low_variance", (
            f"mAP barely improves: best {_pct(best)}, final {_pct(final)}, while avg loss "
            f"flattens at {loss_end:.2f}"
        )
    return "good", (
        f"steady rise to a stable plateau: best {_pct(best)} at iteration "
        f"{evals[best_i]['iteration']}, final {_pct(final)}, second-half jitter {_pct(jitter)}"
    )
