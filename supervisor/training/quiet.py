"""Where in a stretch of plain iteration lines the stop policy can stop: the rest is quiet.

A replay asks `Policy.decide` after every iteration line, the live runner's way; on a big log
that is millions of calls that all answer "continue" (issue 14: the rules were a fifth of a
replay). Between two evaluations most rules read nothing that changes from line to line, so
`decision_points` names the entries of an `IterationRun` at which some rule *could* stop, and a
replay decides at those only. The answer is the same stop at the same line: at every other
entry each rule returns None, for the reason given per rule below, and `decide` returns a `Stop`
only from a rule. What each rule reads (training/policy.py), while the lines of a run add no
evaluation, save or error and every loss in them is finite:

- `TargetMap`, `Overfit`: only the evaluations (and the iteration, for the message): their
  answer is the same on every entry, so the first entry past the gate stands for all.
- `Plateau`: the evaluations, and the iteration only through the schedule's steps passed and
  whether the last rate drop is still ahead: its answer changes only where the iteration
  reaches a step or the last drop.
- `NotLearning`: needs a best mAP below `map_below`; the best does not change within a run,
  so with no such best it cannot stop; with one it reads the loss of every line (decide on all).
- `Diverged`: its NaN streak is 0 on finite lines; its blow-up needs the mean avg loss of the
  last `window` iterations above `loss_factor` × the minimum; the minimum only falls within a
  run, so if no avg loss in any of those windows exceeds `loss_factor` × the run's final
  minimum, no mean does either.
- `IterationBudget`: where the iteration reaches the budget. `TimeBudget`: elapsed time is
  constant (wall clock) or grows with darknet's seconds; decide on all entries when it could
  be reached within the run.

A rule or a policy of a type not named here (a subclass, a new rule) makes every entry a
decision point: new rules are safe by default, only slower. `tests/test_history.py` replays
every shared log and every whole curve both ways and requires the same stop.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress

from supervisor.training.events import IterationRun
from supervisor.training.history import Evaluation, History
from supervisor.training.policy import (
    Diverged,
    IterationBudget,
    NotLearning,
    Overfit,
    Plateau,
    Policy,
    Stop,
    TargetMap,
    TimeBudget,
)
from supervisor.training.schedule import Schedule


@dataclass(frozen=True, slots=True)
class DecisionPoints:
    """Entries of a run to decide at: each of `points` (ascending), then every entry from
    `every_from` on (None: none)."""

    points: tuple[int, ...]
    every_from: int | None = None
    # The schedule's breakpoints and the stretches between them (`bisect_right(breaks, it)`)
    # already seen quiet for these evaluations: a decision that continues adds its own.
    breaks: tuple[int, ...] = ()
    settled: set[int] = field(default_factory=set)


# Per (policy, schedule, evaluations), the stretches between breakpoints (burn_in, the steps,
# the last rate drop) in which a decision continued. `TargetMap`, `Overfit` and `Plateau` read
# nothing else, so each answers None all over such a stretch until an evaluation arrives; the
# history keeps the same evaluations tuple until then, so it is the key (held, by identity, as
# in policy.py's memo). Without it every run of lines between two saves would be decided on.
_SETTLED: dict[tuple[int, int, int], tuple[Policy, Schedule, Sequence[Evaluation], set[int]]] = {}


def _settled(policy: Policy, s: Schedule, evals: Sequence[Evaluation]) -> set[int]:
    key = (id(policy), id(s), id(evals))
    hit = _SETTLED.get(key)
    if hit is not None and hit[0] is policy and hit[1] is s and hit[2] is evals:
        return hit[3]
    if len(_SETTLED) >= 64:
        _SETTLED.clear()
    found: set[int] = set()
    _SETTLED[key] = (policy, s, evals, found)
    return found


def decision_points(policy: Policy, s: Schedule, h: History, run: IterationRun) -> DecisionPoints:
    """Where `policy.decide(h + run[:k + 1], s)` may return a `Stop` (module docstring)."""
    n = len(run)
    every = DecisionPoints((), 0)
    if type(policy) is not Policy:
        return every
    its = run.iterations
    points: set[int] = set()
    dense = n  # every entry from here on

    def reach(iteration: int) -> int:
        """The first entry at or past `iteration` (n when none is)."""
        return bisect_left(its, iteration)

    for budget in policy.budgets:
        if type(budget) is IterationBudget:
            points.add(reach(budget.max_iterations))
        elif type(budget) is TimeBudget:
            if h.first_time is not None and h.last_time is not None:
                if h.elapsed >= budget.max_seconds:
                    points.add(0)  # wall clock: the same on every entry
            else:
                total = h.seconds  # summed as `History.add_run` sums them: the same float
                for x in run.seconds:
                    if x > 0:
                        total += x
                if total >= budget.max_seconds:
                    dense = 0  # reached within the run: find the line by deciding on each
        else:
            return every
    opens = max(policy.min_iterations, s.burn_in)
    gate = reach(opens)
    drop = s.last_rate_drop
    breaks = tuple(sorted({opens, *s.steps, *(() if drop is None else (drop,))}))
    settled = _settled(policy, s, h.evaluations)
    if gate < n:
        for rule in policy.rules:
            kind = type(rule)
            if kind is TargetMap or kind is Overfit or kind is Plateau:
                # Constant between breakpoints: the first entry of each stretch not yet settled.
                for k in (gate, *(reach(at) for at in breaks)):
                    if gate <= k < n and bisect_right(breaks, its[k]) not in settled:
                        points.add(k)
            elif kind is NotLearning:
                assert isinstance(rule, NotLearning)
                if h.best is not None and h.best.map < rule.map_below:
                    dense = min(dense, max(gate, reach(rule.judged_from(s))))
            elif kind is Diverged:
                assert isinstance(rule, Diverged)
                found = _diverged_points(rule, h, run, gate)
                if found is None:
                    dense = min(dense, gate)
                else:
                    points.update(found)
            else:
                return every
    return DecisionPoints(
        tuple(sorted(k for k in points if k < dense)),
        dense if dense < n else None,
        breaks,
        settled,
    )


def _diverged_points(rule: Diverged, h: History, run: IterationRun, gate: int) -> list[int] | None:
    """The entries from `gate` on where `rule` may stop; None: any of them."""
    if rule.nan and rule.nan_lines <= 0:
        return None  # a streak of 0 is enough
    low = min(run.avg_loss)
    if h.min_avg_loss is not None and h.min_avg_loss < low:
        low = h.min_avg_loss
    if low <= 0 or rule.loss_factor < 0 or rule.window <= 0:
        return None  # the bound would not only fall within the run (or no window: edge cases)
    bound = rule.loss_factor * low  # at most the bound of any entry
    # Every window the rule reads on entries gate… starts at or after this iteration: the avg
    # losses from there, the history's and the run's, bound every mean it can take.
    its = run.iterations
    first = its[gate] - rule.window + 1
    loss = h.loss
    k = loss.index_from(first)
    before = loss.max_from(k) if k < len(loss) else -math.inf
    if before <= bound and max(run.avg_loss[bisect_left(its, first) :]) <= bound:
        return []
    # Some loss is above it (a first descent, a spike): only windows that hold such a loss can
    # have a mean above it. A window holds at most `window` entries, so a block of entries
    # with a high loss touches windows of that block and the next one only; for those entries,
    # the window means themselves, the very floats the rule computes, say where the rule's
    # first test can pass.
    w = rule.window
    block = max(w, 256)
    avgs = run.avg_loss
    n = len(avgs)
    spans: list[range] = []
    last = loss.last_iteration
    if last is not None and not before <= bound:  # windows that reach back into the history
        spans.append(range(gate, bisect_left(its, last + w)))
    for b in range(0, n, block):
        if max(avgs[b : b + block]) > bound:
            spans.append(range(max(gate, b), min(n, b + 2 * block)))
    found: list[int] = []
    for span in _merged(spans):
        whole = loss.window_means(its, avgs, w, span)
        if whole is not None:  # at once, where the windows are whole and gap-free
            found += compress(span, map(bound.__lt__, whole))
        else:
            means = loss.means_extended(its, avgs, w, span)
            found += (j for j, m in means if m is not None and not m <= bound)
    return found


def _merged(spans: list[range]) -> list[range]:
    """Overlapping or touching ranges joined, ascending."""
    out: list[range] = []
    for r in sorted(spans, key=lambda r: r.start):
        if not r:
            continue
        if out and r.start <= out[-1].stop:
            out[-1] = range(out[-1].start, max(out[-1].stop, r.stop))
        else:
            out.append(r)
    return out


def add_run_deciding(
    policy: Policy, s: Schedule, h: History, run: IterationRun
) -> tuple[History, Stop | None]:
    """`h` with `run` added, and the first `Stop` that `policy.decide` gives on the way when
    asked after each entry (it is asked at the decision points only: the same stop).

    The history the stop was decided on differs from the one returned only by lines of the
    run, which change no evaluation: its `best` is the returned history's.
    """
    dp = decision_points(policy, s, h, run)
    done = 0
    for k in dp.points:
        h = h.add_run(run, done, k + 1)
        done = k + 1
        d = policy.decide(h, s)
        if isinstance(d, Stop):
            return h.add_run(run, done), d
        dp.settled.add(bisect_right(dp.breaks, run.iterations[k]))
    if dp.every_from is not None:
        h = h.add_run(run, done, dp.every_from)
        for k in range(max(done, dp.every_from), len(run)):
            for e in run.events(k, k + 1):  # the saves before entry k, then its `Iteration`
                h = h.add(e)
            d = policy.decide(h, s)
            if isinstance(d, Stop):
                return h.add_run(run, k + 1), d
        return h, None
    return h.add_run(run, done), None
