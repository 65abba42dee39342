"""Stopping policies on whole curves: trainsup's policy and the classic baselines, scored alike.

Used by `bench/policy.py whole`. A curve is a whole training (iteration 1 to the end) with mAP
evaluations: the corpus in bench/curves/ and the shared logs that cover a whole run. Every
policy keeps only weights that exist at its stop, i.e. evaluated saves at or before it.

- saved = 1 − stop / last iteration (the share of the run not trained);
- regret = best mAP of the whole curve − mAP of the kept weights, in points.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.curves import curve_events, curve_paths, curve_schedule, load_curve
from supervisor.training.events import Event, Iteration, MapResult
from supervisor.training.history import History
from supervisor.training.policy import Policy, Stop
from supervisor.training.schedule import Schedule

# Shared logs that hold a whole run with mAP lines (from iteration 1, or nearly: 53 starts
# where its Colab output does but covers 4 000 iterations to max_batches).
WHOLE_LOGS = (
    "04_alexeyab-yolov3tiny-fire-dstaroff.log",
    "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log",
)


@dataclass(frozen=True)
class Curve:
    name: str
    family: str  # recipe | generous | log
    label: str
    events: list[Event]
    schedule: Schedule
    evals: list[tuple[int, float, float | None]]  # (iteration, mAP, avg loss around it)
    last: int
    first: int
    iterations_per_epoch: float | None  # train images / batch; None when unknown (logs)

    @property
    def best(self) -> float:
        return max(m for _, m, _ in self.evals)


def _evals_of(events: list[Event]) -> tuple[list[tuple[int, float, float | None]], int, int]:
    h = History()
    for e in events:
        h = h.add(e)
    evals = [(e.iteration, e.map, e.avg_loss) for e in h.evaluations if e.valid]
    return evals, h.iteration, h.first_iteration or 0


def corpus_curve(path: Path) -> Curve:
    c = load_curve(path)
    events = curve_events(c)
    evals, last, first = _evals_of(events)
    r = c["recipe"]
    ipe = r["train_images"] / c["schedule"]["batch"]
    return Curve(c["name"], c["family"], c.get("label", "?"), events, curve_schedule(c),
                 evals, last, first, ipe)  # fmt: skip


def log_curve(path: Path) -> Curve:
    """A shared log through analyze's replay, as the same kind of curve."""
    from supervisor.darknet.analyze import analyze_log

    a = analyze_log(path, Policy(rules=()))
    h = a.history
    evals_at = {e.iteration: e for e in h.evaluations}
    events: list[Event] = []
    for it, avg in h.loss.points():
        events.append(Iteration(it, avg, avg, 0.0))
        e = evals_at.get(it)
        if e is not None:
            events.append(dataclasses.replace(e.result, iteration=it, map=e.map, valid=e.valid))
    evals, last, first = _evals_of(events)
    # Both logs trained to their max_batches (53: 4 000; 04: 10 000, a few lines past it), a
    # cfg setting the log does not print: the last iteration stands for it.
    schedule = dataclasses.replace(a.schedule, max_batches=a.schedule.max_batches or last)
    return Curve(path.stem[:2] + "-log", "log", "log", events, schedule, evals, last, first,
                 None)  # fmt: skip


def load_all(corpus: Path, logs: Path | None) -> list[Curve]:
    curves = [corpus_curve(p) for p in curve_paths(corpus)]
    if logs is not None:
        curves += [log_curve(logs / n) for n in WHOLE_LOGS if (logs / n).exists()]
    return [c for c in curves if c.evals]


# --- the policies -------------------------------------------------------------------------------

Outcome = tuple[int, float]  # (stop iteration, mAP of the kept weights)
Baseline = Callable[[Curve], Outcome]


def _best_upto(c: Curve, stop: int) -> float:
    return max((m for it, m, _ in c.evals if it <= stop), default=0.0)


def trainsup(policy: Policy) -> Baseline:
    def run(c: Curve) -> Outcome:
        h = History()
        for e in c.events:
            h = h.add(e)
            if isinstance(e, Iteration | MapResult):
                d = policy.decide(h, c.schedule)
                if isinstance(d, Stop):
                    # The live runner stops at the next save; the retention keeps the best
                    # evaluated weights, which are those known at the decision.
                    return d.iteration, _best_upto(c, d.iteration)
        return c.last, c.best

    return run


def run_to_end_final(c: Curve) -> Outcome:
    return c.last, c.evals[-1][1]


def alexeyab_best_n000(c: Curve) -> Outcome:
    """AlexeyAB's README: after training, pick the best of the `_N000.weights` (and
    `_final`) by mAP."""
    picks = [m for it, m, _ in c.evals if it % 1000 == 0 or it == c.last]
    return c.last, max(picks) if picks else c.evals[-1][1]


def oracle(c: Curve) -> Outcome:
    it, m, _ = max(c.evals, key=lambda e: (e[1], -e[0]))
    return it, m


def keras_patience(k: int, noise: bool = False) -> Baseline:
    """Keras EarlyStopping(patience=k evaluations, restore_best_weights=True); min_delta 0,
    or (`noise`) one σ of the evaluation noise estimated from the evaluations so far."""

    def run(c: Curve) -> Outcome:
        best_m, wait = -math.inf, 0
        for i, (it, m, _) in enumerate(c.evals):
            delta = noise_sigma([x for _, x, _ in c.evals[: i + 1]]) if noise else 0.0
            if m > best_m + delta:
                best_m, wait = m, 0
            else:
                wait += 1
                if wait >= k:
                    return it, _best_upto(c, it)
        return c.last, c.best

    return run


def noise_sigma(maps: list[float]) -> float:
    """One σ of the evaluation noise, from the spread of consecutive evaluations (their
    differences have variance 2σ² where the curve is flat; the median resists trends and
    jumps). Online: only the evaluations so far."""
    d = [abs(b - a) for a, b in itertools.pairwise(maps)]
    if len(d) < 3:
        return 0.0
    return statistics.median(d) / (0.6745 * math.sqrt(2))


def _strips(c: Curve, k: int = 5) -> list[int]:
    """Indices of evaluations that end a strip of k evaluations."""
    return list(range(k - 1, len(c.evals), k))


def prechelt_gl(alpha: float) -> Baseline:
    """GL(t) = 100 (E(t) / E_opt(t) − 1), E = 1 − mAP; stop when GL > alpha."""

    def run(c: Curve) -> Outcome:
        e_opt = math.inf
        for it, m, _ in c.evals:
            e = 1 - m
            e_opt = min(e_opt, e)
            if e_opt > 0 and 100 * (e / e_opt - 1) > alpha:
                return it, _best_upto(c, it)
        return c.last, c.best

    return run


def _progress(c: Curve, i: int, k: int = 5) -> float | None:
    """P_k(t) = 1000 (Σ L / (k min L) − 1) over the strip of k evaluations ending at i, L the
    avg loss around each (the training error)."""
    losses = [c.evals[j][2] for j in range(i - k + 1, i + 1)]
    if any(x is None or x <= 0 for x in losses):
        return None
    ls = [x for x in losses if x is not None]
    return 1000 * (sum(ls) / (k * min(ls)) - 1)


def prechelt_pq(alpha: float) -> Baseline:
    """PQ: stop at the end of a strip when GL(t) / P_5(t) > alpha."""

    def run(c: Curve) -> Outcome:
        for i in _strips(c):
            it, m, _ = c.evals[i]
            e_opt = min(1 - x for _, x, _ in c.evals[: i + 1])
            gl = 100 * ((1 - m) / e_opt - 1) if e_opt > 0 else 0.0
            p = _progress(c, i)
            if p is not None and p > 0 and gl / p > alpha:
                return it, _best_upto(c, it)
        return c.last, c.best

    return run


def prechelt_up(s: int) -> Baseline:
    """UP_s: stop when E rose at the end of s successive strips of 5 evaluations."""

    def run(c: Curve) -> Outcome:
        ends = _strips(c)
        ups = 0
        for a, b in itertools.pairwise(ends):
            ups = ups + 1 if c.evals[b][1] < c.evals[a][1] else 0
            if ups >= s:
                it = c.evals[b][0]
                return it, _best_upto(c, it)
        return c.last, c.best

    return run


def ultralytics_patience(epochs: int = 100) -> Baseline:
    """Ultralytics' default: stop after `epochs` epochs without a better fitness (here mAP),
    an epoch being train images / batch iterations. Unknown epoch size (logs): runs to the end."""

    def run(c: Curve) -> Outcome:
        if c.iterations_per_epoch is None:
            return c.last, c.best
        patience = epochs * c.iterations_per_epoch
        best_it, best_m = None, -math.inf
        for it, m, _ in c.evals:
            if m > best_m:
                best_it, best_m = it, m
            elif best_it is not None and it - best_it >= patience:
                return it, _best_upto(c, it)
        return c.last, c.best

    return run


def baselines(policy: Policy) -> dict[str, Baseline]:
    out: dict[str, Baseline] = {
        "trainsup defaults": trainsup(policy),
        "run to end, final": run_to_end_final,
        "AlexeyAB best _N000": alexeyab_best_n000,
    }
    for k in (2, 3, 5, 10):
        out[f"Keras patience {k}"] = keras_patience(k)
        out[f"Keras patience {k}, δ=σ"] = keras_patience(k, noise=True)
    for a in (1, 2, 3, 5):
        out[f"Prechelt GL{a}"] = prechelt_gl(a)
    for q in (0.5, 1.0, 2.0):
        out[f"Prechelt PQ{q:g}"] = prechelt_pq(q)
    for s in (2, 3, 4):
        out[f"Prechelt UP{s}"] = prechelt_up(s)
    out["Ultralytics patience 100"] = ultralytics_patience(100)
    out["oracle"] = oracle
    return out


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    curve: str
    family: str
    stop: int
    kept: float
    regret: float  # points
    saved: float  # share


def score(b: Baseline, c: Curve) -> Score:
    stop, kept = b(c)
    stop = min(stop, c.last)
    span = c.last - c.first
    saved = (c.last - stop) / span if span > 0 else 0.0
    return Score(c.name, c.family, stop, kept, (c.best - kept) * 100, saved)


def summary(scores: list[Score]) -> dict[str, Any]:
    r = sorted(s.regret for s in scores)
    n = len(r)
    p90 = r[min(n - 1, math.ceil(0.9 * n) - 1)] if n else math.nan
    return {
        "n": n,
        "saved": statistics.fmean(s.saved for s in scores) if n else math.nan,
        "mean": statistics.fmean(r) if n else math.nan,
        "median": statistics.median(r) if n else math.nan,
        "p90": p90,
        "max": r[-1] if n else math.nan,
        "over1": sum(x > 1 for x in r) / n if n else math.nan,
    }


def replace_rule(policy: Policy, name: str, **changes: Any) -> Policy:
    rules = tuple(dataclasses.replace(r, **changes) if r.name == name else r for r in policy.rules)  # type: ignore[type-var]
    return dataclasses.replace(policy, rules=rules)
