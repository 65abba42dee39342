"""History with many evaluations: the shared `Evaluations` sequence against the old tuple copy.

    .venv/bin/python bench/history_evals.py [--evaluations 100000] [--every 10]

Replays `--evaluations` mAP results, one after each `--every` iteration lines (a log evaluated
every 10 iterations for a million iterations by default), through `History.add` twice in the
same run: as it is, and with the old `_add_evaluation` (kept below as the baseline), which
copied the whole evaluations tuple on each evaluation. Prints the time spent adding the
evaluations and the whole replay for each, and the ratios; checks that both give the same
evaluations and best.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.training import history  # noqa: E402
from supervisor.training.events import Event, Iteration, MapResult  # noqa: E402
from supervisor.training.history import Evaluation, History  # noqa: E402


def old_add_evaluation(self: History, m: MapResult) -> History:
    """`History._add_evaluation` before the shared sequence: a new tuple per evaluation."""
    iteration = m.iteration if m.iteration is not None else self.iteration
    valid = m.valid and math.isfinite(m.map) and 0.0 <= m.map <= 1.0
    ev = Evaluation(iteration, m.map, valid, self.loss_around(iteration), m)
    better = valid and (self.best is None or m.map > self.best.map)
    h = self._copy()
    history._SET["evaluations"](h, (*self.evaluations, ev))
    history._SET["best"](h, ev if better else self.best)
    return h


def events(evaluations: int, every: int) -> list[Event]:
    out: list[Event] = []
    for k in range(1, evaluations + 1):
        for i in range((k - 1) * every + 1, k * every + 1):
            out.append(Iteration(i, 2.0, 2.0 - i / (evaluations * every), 0.001))
        out.append(MapResult(k * every, 0.5 + 0.4 * math.sin(k / 50)))
    return out


def replay(evs: list[Event], *, old: bool) -> tuple[History, float, float]:
    """The history, the seconds in evaluation adds, and the seconds of the whole replay."""
    h = History(evaluations=()) if old else History()  # (the old field's default: a tuple)
    in_evals = 0.0
    clock = time.perf_counter
    start = clock()
    for e in evs:
        if type(e) is MapResult:
            t = clock()
            h = old_add_evaluation(h, e) if old else h.add(e)
            in_evals += clock() - t
        else:
            h = h.add(e)
    return h, in_evals, clock() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--evaluations", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=10, help="iteration lines per evaluation")
    args = ap.parse_args()
    evs = events(args.evaluations, args.every)
    new_h, new_e, new_t = replay(evs, old=False)
    old_h, old_e, old_t = replay(evs, old=True)
    assert tuple(new_h.evaluations) == old_h.evaluations and new_h.best == old_h.best
    lines = args.evaluations * args.every
    print(f"{args.evaluations} evaluations, one every {args.every} of {lines} iteration lines")
    n = args.evaluations
    print(
        f"  evaluation adds: shared {new_e:.3f} s ({1e6 * new_e / n:.2f} µs each), "
        f"old tuple copy {old_e:.3f} s ({1e6 * old_e / n:.2f} µs each): "
        f"old / shared = {old_e / new_e:.1f}"
    )
    print(
        f"  whole replay:    shared {new_t:.3f} s, old tuple copy {old_t:.3f} s: "
        f"old / shared = {old_t / new_t:.2f}"
    )


if __name__ == "__main__":
    main()
