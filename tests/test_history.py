"""The immutable training history: the slot-by-slot copy gives what the plain definition of each
attribute says, on real logs' events; snapshots never change; storage stays compact."""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle
import random
from array import array
from pathlib import Path
from typing import Any

import pytest

from supervisor.darknet.logparse import parse_file
from supervisor.runtime.jobpolicy import policy_for
from supervisor.training.events import (
    Event,
    FatalError,
    GpuError,
    Iteration,
    IterationRun,
    IterationsRepeated,
    LayerIoU,
    MapResult,
    NanLoss,
    Tick,
    WeightsSaved,
)
from supervisor.training.history import LOSS_WINDOW, Evaluation, Evaluations, History, Saves, build
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
from supervisor.training.quiet import add_run_deciding
from supervisor.training.schedule import Schedule


def _g(x: float | None) -> float | None:
    """To 10 digits: the history's window means come from prefix sums, the plain ones do not."""
    return None if x is None else float(f"{x:.10g}")


def reference(events: list[Event]) -> dict[str, Any]:
    """Each attribute as its docstring defines it, computed the plain way, apart from History."""
    series: list[tuple[int, float]] = []
    r: dict[str, Any] = {
        "last": None,
        "first_iteration": None,
        "iteration_lines": 0,
        "evaluations": [],
        "best": None,
        "min_avg_loss": None,
        "min_avg_loss_iteration": None,
        "nan_streak": 0,
        "nan_lines": 0,
        "saves": [],
        "gpu_errors": [],
        "fatal_errors": [],
        "repeats": 0,
        "first_time": None,
        "last_time": None,
        "seconds": 0.0,
        "iou": None,
    }

    def around(it: int) -> float | None:
        vals = [a for i, a in series if it - LOSS_WINDOW < i <= it and math.isfinite(a)]
        return sum(vals) / len(vals) if vals else None

    for e in events:
        t = getattr(e, "time", None)
        if t is not None:
            r["first_time"] = t if r["first_time"] is None else r["first_time"]
            r["last_time"] = t
        if isinstance(e, Iteration):
            while series and series[-1][0] >= e.iteration:
                series.pop()  # a resume repeats iterations: the later value wins
            series.append((e.iteration, e.avg_loss))
            r["last"] = e
            if r["first_iteration"] is None:
                r["first_iteration"] = e.iteration
            r["iteration_lines"] += 1
            if math.isfinite(e.avg_loss) and (
                r["min_avg_loss"] is None or e.avg_loss < r["min_avg_loss"]
            ):
                r["min_avg_loss"], r["min_avg_loss_iteration"] = e.avg_loss, e.iteration
            r["nan_streak"] = 0 if math.isfinite(e.avg_loss) else r["nan_streak"] + 1
            r["nan_lines"] += 0 if e.finite else 1
            if e.seconds and e.seconds > 0:
                r["seconds"] += e.seconds
        elif isinstance(e, MapResult):
            it = e.iteration if e.iteration is not None else (r["last"] or Iteration(0, 0, 0, 0))
            it = it if isinstance(it, int) else it.iteration
            valid = e.valid and math.isfinite(e.map) and 0 <= e.map <= 1
            ev = (it, e.map, valid, _g(around(it)))
            r["evaluations"].append(ev)
            if valid and (r["best"] is None or e.map > r["best"][1]):
                r["best"] = ev
        elif isinstance(e, WeightsSaved):
            r["saves"].append(e)
        elif isinstance(e, GpuError):
            r["gpu_errors"].append(e)
        elif isinstance(e, FatalError):
            r["fatal_errors"].append(e)
        elif isinstance(e, LayerIoU):
            r["iou"] = e
        elif isinstance(e, IterationsRepeated):
            r["repeats"] += 1
    r["series"] = series
    return r


def observed(h: History) -> dict[str, Any]:
    def ev(e: Any) -> Any:
        return None if e is None else (e.iteration, e.map, e.valid, _g(e.avg_loss))

    r = {f.name: getattr(h, f.name) for f in dataclasses.fields(h) if f.name not in ("loss",)}
    r["evaluations"] = [ev(e) for e in h.evaluations]
    r["best"] = ev(h.best)
    r["saves"] = list(h.saves)
    r["gpu_errors"] = list(h.gpu_errors)
    r["fatal_errors"] = list(h.fatal_errors)
    r["series"] = h.loss.points()
    return r


def same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN != NaN; the reprs show every value


LOGS_TRIED = [
    "01_pjreddie-yolov3tiny-buddyzhu-6000.log",
    "04_alexeyab-yolov3tiny-fire-dstaroff.log",
    "48_alexeyab-NaN-realloc-crash-notes-miyakz1192.log",
    "57_alexeyab-yolov4-resume74901-interrupted-sahil.log",
    "66_alexeyab-yolov4-coco-dockerlogs-replayed-jax79sg.log",
]


@pytest.mark.shared_logs
@pytest.mark.parametrize("name", LOGS_TRIED)
def test_history_of_a_real_log_matches_the_plain_definitions(name: str, logs_dir: Path) -> None:
    events = list(parse_file(logs_dir / name))
    h = build(events)
    want, got = reference(events), observed(h)
    for key in want:
        assert same(got[key], want[key]), key
    assert h.iteration == want["last"].iteration
    # Every window mean the policy asks for, at a few points, against the plain sum.
    for it, _ in want["series"][:: max(1, len(want["series"]) // 50)]:
        for first in (it - 99, it - 999, it):
            vals = [a for i, a in want["series"] if first <= i <= it and math.isfinite(a)]
            m = h.loss.mean(first, it)
            assert (m is None) == (not vals)
            if vals:
                assert m == pytest.approx(sum(vals) / len(vals), rel=1e-9)


@pytest.mark.shared_logs
def test_snapshots_stay_as_they_were(logs_dir: Path) -> None:
    events = list(parse_file(logs_dir / "04_alexeyab-yolov3tiny-fire-dstaroff.log"))
    half = len(events) // 2
    snap = build(events[:half])
    before = observed(snap)
    h = snap
    for e in events[half:]:
        h = h.add(e)
    assert same(observed(snap), before)
    assert same(before, reference(events[:half]))
    # An older snapshot written to again forks; the newer one is untouched.
    after = observed(h)
    fork = snap.add(Iteration(10**6, 9.0, 9.0, 0.001)).add(WeightsSaved("x.weights", 10**6))
    assert fork.iteration == 10**6 and fork.saves[-1].path == "x.weights"
    assert same(observed(h), after) and same(observed(snap), before)


def test_add_returns_a_new_history_and_assignment_is_refused() -> None:
    h0 = History()
    h1 = h0.add(Iteration(1, 2.0, 2.0, 0.001, seconds=0.5))
    assert h1 is not h0 and h0.iteration == 0 and h0.iteration_lines == 0
    assert (h1.iteration, h1.iteration_lines, h1.seconds, h1.elapsed) == (1, 1, 0.5, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        h1.iteration_lines = 5  # type: ignore[misc]
    assert h0.add(NanLoss(1, math.nan, math.nan)) is h0  # carried by its Iteration already


def test_wall_clock_comes_from_timed_events() -> None:
    h = build(
        [
            Tick(100.0),
            Iteration(1, 1.0, 1.0, 0.001, seconds=3.0, time=101.0),
            MapResult(1, 0.5, time=105.0),
            WeightsSaved("a.backup", 1, time=107.0),
        ]
    )
    assert (h.first_time, h.last_time, h.elapsed, h.seconds) == (100.0, 107.0, 7.0, 3.0)


def test_loss_series_is_stored_in_compact_arrays() -> None:
    h = build([Iteration(i, 1.0, 1.0 + i, 0.001) for i in range(1, 1001)])
    a = h.loss._a
    assert isinstance(a.iterations, array) and a.iterations.typecode == "i"
    assert isinstance(a.avg_loss, array) and a.avg_loss.typecode == "d"
    assert isinstance(a.cum, array) and a.cnt is None  # all finite: no counts stored
    assert h.loss.point(-1) == (1000, 1001.0) and h.loss.find(500) == 499
    assert h.loss.find(5000) is None


def test_non_finite_losses_and_huge_iteration_numbers() -> None:
    its = [Iteration(1, 1, 4.0, 0.001), Iteration(2, 1, math.nan, 0.001)]
    its += [Iteration(3, 1, 2.0, 0.001), Iteration(2**40, 1, 6.0, 0.001)]
    h = build(its)
    assert h.loss._a.iterations.typecode == "q"  # type: ignore[union-attr]
    h = h.add(Iteration(10**30, 1, 4.0, 0.001))
    assert isinstance(h.loss._a.iterations, list)
    assert h.loss.mean(1, 3) == 3.0  # the NaN is left out of the mean
    assert h.loss.mean(2, 2) is None
    assert h.loss.mean(1, 2**40) == 4.0 and h.loss.mean(1, 10**30) == 4.0
    assert h.loss.last_iteration == 10**30 and h.nan_lines == 1 and h.nan_streak == 0


def test_saves_are_a_shared_sequence_equal_to_the_tuple() -> None:
    s1 = [WeightsSaved(f"b/{i}.weights", i) for i in range(5)]
    h = build(s1)
    assert isinstance(h.saves, Saves) and len(h.saves) == 5
    assert h.saves == tuple(s1) and list(reversed(h.saves)) == s1[::-1]
    assert h.saves[-1] == s1[-1] and h.saves[1:3] == tuple(s1[1:3])
    assert History().saves == () and History().saves != tuple(s1)
    with pytest.raises(IndexError):
        h.saves[5]
    # 31 000 saves (a 3.1 M-iteration pjreddie log) cost one list, not 31 000 growing tuples.
    big = History()
    for i in range(31_000):
        big = big.add(WeightsSaved("b/t.backup", i * 100))
        if i == 10:
            early = big
    assert len(big.saves) == 31_000 and big.saves._cols is early.saves._cols  # shared
    assert len(early.saves) == 11 and list(early.saves)[-1] == WeightsSaved("b/t.backup", 1000)
    assert big.saves[-1] == WeightsSaved("b/t.backup", 3_099_900) and big.saves._paths == [
        "b/t.backup"
    ]
    # In columns: an int and two int64 a save, the times (None, as the parser's) a list of
    # pointers to None: none of the 31 000 objects kept.
    assert [type(c) for c in big.saves._cols] == [array, array, array, list]
    # Odd values (no iteration, a huge line number, no time) go to a list column, kept as they are.
    odd = Saves([WeightsSaved("a", None, 2**70, None), WeightsSaved("b", 3, 4, 5.0)])
    assert list(odd) == [WeightsSaved("a", None, 2**70, None), WeightsSaved("b", 3, 4, 5.0)]
    # A write from an older snapshot copies its prefix; the newer one is untouched.
    fork = early.add(WeightsSaved("c/x.weights", 7))
    assert list(fork.saves)[-2:] == [
        WeightsSaved("b/t.backup", 1000),
        WeightsSaved("c/x.weights", 7),
    ]
    assert len(big.saves) == 31_000 and big.saves._paths == ["b/t.backup"]


def test_evaluations_are_a_shared_sequence_equal_to_the_tuple() -> None:
    h = History()
    for i in range(1, 20_001):
        h = h.add(Iteration(10 * i, 1.0, 1.0, 0.001)).add(MapResult(10 * i, (i % 97) / 100))
        if i == 10:
            early = h
    evals = h.evaluations
    assert isinstance(evals, Evaluations) and len(evals) == 20_000 and evals
    assert [e.iteration for e in evals] == [10 * i for i in range(1, 20_001)]
    assert evals[-1].iteration == 200_000 and evals[0].map == 0.01
    assert [e.iteration for e in reversed(evals)][:2] == [200_000, 199_990]
    assert evals[2:4] == (evals[2], evals[3]) and isinstance(evals[2:4], tuple)
    assert evals == tuple(evals) and evals != tuple(evals)[:-1] and evals[-1] in evals
    with pytest.raises(IndexError):
        evals[20_000]
    assert History().evaluations == () and not History().evaluations
    # One list for every snapshot (not 20 000 growing tuples), items the objects added.
    assert evals._items is early.evaluations._items and early.evaluations[9] is evals[9]
    assert len(early.evaluations) == 10 and list(early.evaluations) == list(evals[:10])
    assert early.best is not None and early.best.iteration == 100
    # A pickle holds the snapshot's own items, not the shared list behind it.
    back = pickle.loads(pickle.dumps(early.evaluations))
    assert back == early.evaluations and len(back._items) == 10
    # Between evaluations the sequence is the same object: the policy's memo holds it by id.
    assert h.add(Iteration(200_001, 1.0, 1.0, 0.001)).evaluations is evals
    # A tuple given to the constructor is taken as it is, and grows as the shared sequence.
    first = Evaluation(5, 0.2, True, None, MapResult(5, 0.2))
    grown = History(evaluations=(first,)).add(MapResult(6, 0.3))
    assert isinstance(grown.evaluations, Evaluations)
    assert [e.iteration for e in grown.evaluations] == [5, 6]


def test_histories_branching_from_one_parent_do_not_see_each_others_evaluations() -> None:
    parent = build([Iteration(i, 1.0, 1.0, 0.001) for i in range(1, 301)])
    for it in (100, 200, 300):
        parent = parent.add(MapResult(it, it / 1000))
    a = parent.add(MapResult(400, 0.5))
    b = parent.add(MapResult(400, 0.9))  # written from the same parent, no longer the tip
    a2 = a.add(MapResult(500, 0.6))
    b2 = b.add(MapResult(500, 0.1)).add(MapResult(600, 0.2))
    c = parent.add(MapResult(700, 0.05))  # a third branch, after both grew
    assert [e.map for e in parent.evaluations] == [0.1, 0.2, 0.3]
    assert [e.map for e in a.evaluations] == [0.1, 0.2, 0.3, 0.5]
    assert [e.map for e in b.evaluations] == [0.1, 0.2, 0.3, 0.9]
    assert [e.map for e in a2.evaluations] == [0.1, 0.2, 0.3, 0.5, 0.6]
    assert [e.map for e in b2.evaluations] == [0.1, 0.2, 0.3, 0.9, 0.1, 0.2]
    assert [e.map for e in c.evaluations] == [0.1, 0.2, 0.3, 0.05]
    assert [e.iteration for e in reversed(b2.evaluations)] == [600, 500, 400, 300, 200, 100]
    assert a2.evaluations[-1].map == 0.6 and a.evaluations[-1].map == 0.5
    assert (a2.best, b2.best, c.best) == (a2.evaluations[4], b.evaluations[3], parent.best)
    assert parent.evaluated(300) and not parent.evaluated(400) and not a.evaluated(600)


def test_history_has_the_fields_its_copy_sets() -> None:
    # `_add_iteration` sets every field by hand: this is the list it sets.
    names = [f.name for f in dataclasses.fields(History)]
    assert len(names) == 18 and names[0] == "loss" and names[-1] == "iou"


# --- bulk folding (`History.add_run`) and deciding only where a rule can stop (`quiet`) --------


def with_runs(events: list[Event]) -> list[Event | IterationRun]:
    """`events` with each stretch of iteration events that an `IterationRun` may hold (finite,
    ascending, nothing in between) given as one, as the parser's bulk reading gives them."""
    out: list[Event | IterationRun] = []
    block: list[Iteration] = []

    def flush() -> None:
        if block:
            kept = list(block)
            out.append(
                IterationRun(
                    [e.iteration for e in kept],
                    [e.avg_loss for e in kept],
                    [repr(e.rate) for e in kept],
                    [e.seconds if e.seconds is not None else 0.0 for e in kept],
                    [str(k) for k in range(len(kept))],
                    kept[0].line,
                    lambda raw, line, kept=kept: kept[int(raw)],  # type: ignore[misc]
                )
            )
            block.clear()

    last: int | None = None
    for e in events:
        plain = (
            type(e) is Iteration
            and e.finite
            and e.seconds is not None
            and e.time is None
            and (last is None or e.iteration > last)
        )
        if plain:
            assert isinstance(e, Iteration)
            block.append(e)
        else:
            flush()
            out.append(e)
        if isinstance(e, Iteration):
            last = e.iteration if last is None else max(last, e.iteration)
        elif isinstance(e, IterationsRepeated):
            last = None  # the history's series decides (add_run falls back on a repeat)
    flush()
    return out


def state(h: History) -> str:
    fields = {f.name: getattr(h, f.name) for f in dataclasses.fields(History) if f.name != "loss"}
    return repr((fields, h.loss.points()))


@pytest.mark.shared_logs
def test_a_run_folded_at_once_is_its_lines_folded_one_by_one(
    logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supervisor.darknet import logparse
    from supervisor.darknet.logparse import LogFile, LogParser

    monkeypatch.setattr(logparse, "_RUN_MIN", 1)  # runs of every length

    rng = random.Random(3)
    for name in (
        "01_pjreddie-yolov3tiny-buddyzhu-6000.log",
        "57_alexeyab-yolov4-resume74901-interrupted-sahil.log",
    ):
        parser = LogParser()
        h = one = History()
        for text in LogFile(logs_dir / name, 64 << 10).chunks():
            for e in parser.feed_runs(text):
                if isinstance(e, IterationRun):
                    # In pieces cut anywhere, as the replay folds it around decision points.
                    cuts = sorted({0, len(e), *(rng.randrange(len(e) + 1) for _ in range(3))})
                    for lo, hi in itertools.pairwise(cuts):
                        h = h.add_run(e, lo, hi)
                    for it in e.events():
                        one = one.add(it)
                else:
                    h, one = h.add(e), one.add(e)
                assert h.loss.n == one.loss.n
        assert state(h) == state(one), name
        assert h.loss.mean(1, h.iteration) == one.loss.mean(1, one.iteration)


def decided(policy: Policy, s: Schedule, events: list[Event | IterationRun]) -> tuple[str, str]:
    """The first stop (and the final history) of a replay, the quiet way where runs come."""
    h = History()
    stop: Stop | None = None
    for e in events:
        if isinstance(e, IterationRun):
            if stop is None:
                h, stop = add_run_deciding(policy, s, h, e)
            else:
                h = h.add_run(e)
            continue
        h = h.add(e)
        if stop is None and isinstance(e, Iteration | MapResult):
            d = policy.decide(h, s)
            if isinstance(d, Stop):
                stop = d
    return repr(stop), state(h)


class NewRule(Diverged):
    """A rule quiet knows nothing of (a subclass counts as one): decided on every entry."""


def policies(s: Schedule) -> list[Policy]:
    late = (s.max_batches or 2000) // 2
    return [
        policy_for(None),
        Policy(),
        Policy(rules=(Diverged(loss_factor=2.0, window=20),)),
        Policy(rules=(NotLearning(after_share=None, after=200, map_below=0.6),)),
        Policy(rules=(Plateau(patience=200, min_delta=0.02),), min_iterations=150),
        Policy(rules=(Overfit(drop=0.01, confirm=2, span=50),), min_iterations=late),
        Policy(rules=(TargetMap(0.3),)),
        Policy(budgets=(IterationBudget(late + 1),), rules=()),
        Policy(budgets=(TimeBudget(600.0),), rules=()),
        Policy(rules=(NewRule(loss_factor=1.5),)),
    ]


def test_deciding_only_where_a_rule_can_stop_finds_the_same_stop_on_every_curve() -> None:
    from bench.curves import curve_events, curve_paths, curve_schedule, load_curve

    stops = 0
    for path in curve_paths():
        curve = load_curve(path)
        s = curve_schedule(curve)
        events = curve_events(curve)
        runs = with_runs(events)
        assert any(isinstance(e, IterationRun) for e in runs)
        for policy in policies(s):
            want = decided(policy, s, list(events))
            assert decided(policy, s, runs) == want, (path.stem, policy)
            stops += want[0] != "None"
    assert stops >= 40  # the rules did stop, at their own lines


@pytest.mark.shared_logs
def test_deciding_only_where_a_rule_can_stop_finds_the_same_stop_on_every_shared_log(
    logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supervisor.darknet import logparse
    from supervisor.darknet.logparse import LogFile, LogParser
    from supervisor.training.schedule import infer_schedule

    monkeypatch.setattr(logparse, "_RUN_MIN", 1)  # as many runs (and decision points) as can be

    stops = 0
    for path in sorted(logs_dir.glob("*.log")):
        parser = LogParser()
        runs: list[Event | IterationRun] = []
        for text in LogFile(path).chunks():
            runs += parser.feed_runs(text)
        runs += parser.close()
        events: list[Event] = []
        for e in runs:
            events.extend(e.events() if isinstance(e, IterationRun) else (e,))
        s = infer_schedule(e for e in events if isinstance(e, Iteration))
        chosen = (
            policies(s)
            if path.name[:2] in {"01", "04", "21", "25", "48", "53"}
            else policies(s)[:1]
        )
        for policy in chosen:
            want = decided(policy, s, list(events))
            assert decided(policy, s, runs) == want, (path.name, policy)
            stops += want[0] != "None"
    assert stops >= 20


def test_window_means_are_the_means_the_extended_series_gives() -> None:
    # `training.quiet` compares these with a rule's threshold: they must be the very floats
    # `LossSeries.mean` gives on each snapshot, gaps and short windows included.
    rng = random.Random(2)
    whole = 0
    for _ in range(400):
        h = History()
        i = 0
        gaps = rng.random() < 0.2
        for _ in range(rng.randint(0, 60)):
            i += 2 if gaps and rng.random() < 0.1 else 1
            h = h.add(Iteration(i, 1.0, rng.uniform(0, 9), 0.1))
        its = range(i + 1, i + 1 + rng.randint(1, 80))
        avgs = [rng.uniform(0, 9) for _ in its]
        w = rng.randint(1, 50)
        a = rng.randrange(len(its))
        span = range(a, rng.randint(a + 1, len(its)))
        snaps, hk = [], h
        for k, it in enumerate(its):
            hk = hk.add(Iteration(it, 1.0, avgs[k], 0.1))
            if k in span:
                snaps.append(hk.loss.mean(it - w + 1, it))
        assert [m for _, m in h.loss.means_extended(its, avgs, w, span)] == snaps
        got = h.loss.window_means(its, avgs, w, span)
        if got is not None:
            whole += 1
            assert got == snaps
    assert whole > 200


@pytest.mark.shared_logs
def test_analyze_in_runs_equals_the_list_replay(
    logs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `analyze` folding runs (their rates into the schedule, their lines into the history,
    # the policy at decision points) gives the report of every event kept in a list.
    from supervisor.darknet import logparse
    from supervisor.darknet.analyze import analyze_log
    from tests.test_analyze import LOGS, kept_in_a_list, report

    monkeypatch.setattr(logparse, "_RUN_MIN", 1)
    rng = random.Random(5)
    dense = tmp_path / "dense.log"
    with dense.open("w") as f:
        avg = 30.0
        for i in range(1, 6001):
            loss = rng.uniform(0.5, 2.0) * (30 if i < 300 else 3 if i < 4000 else 40)
            avg = 0.9 * avg + 0.1 * loss
            rate = 0.001 * min(1.0, i / 400) ** 4 * (0.1 if i >= 3000 else 1)
            f.write(
                f"{i}: {loss:.6f}, {avg:.6f} avg, {rate:.6f} rate, 0.5 seconds, {i * 64} images\n"
            )
            if i % 100 == 0:
                f.write("Saving weights to backup/yolo.backup\n")
    stops = 0
    for path in [dense, *(logs_dir / name for name in LOGS)]:
        policy = policy_for(None)
        got = analyze_log(path, policy)
        want = kept_in_a_list(path, policy)
        assert got.schedule == want.schedule, path.name
        assert repr(got.stop) == repr(want.stop), path.name
        assert repr(report(got)) == repr(report(want)), path.name
        stops += got.stop is not None
    assert stops >= 3


def _descent(n: int, seed: int = 3) -> list[float]:
    """A realistic avg-loss curve: a fast then slow noisy descent, darknet's EMA over it."""
    rng = random.Random(seed)
    avg, out = 30.0, []
    for i in range(1, n + 1):
        avg = 0.9 * avg + 0.1 * (0.5 + 20 * math.exp(-i / 3000)) * rng.uniform(0.6, 1.4)
        out.append(avg)
    return out


def _series(avgs: list[float], nan_at: tuple[int, ...] = ()) -> History:
    h = History()
    for i, v in enumerate(avgs, 1):
        h = h.add(Iteration(i, 1.0, math.nan if i in nan_at else v, 0.001))
    return h


def _exact_mean(avgs: list[float], first: int, last: int) -> float:
    xs = [v for v in avgs[max(first, 1) - 1 : last] if math.isfinite(v)]
    return sum(xs) / len(xs)


def test_loss_series_memory_stays_bounded_past_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.training import history

    cap = 1000
    monkeypatch.setattr(history, "MAX_POINTS", cap)
    avgs = _descent(40_000)
    h = History()
    sizes = []
    for i, v in enumerate(avgs, 1):
        h = h.add(Iteration(i, 1.0, v, 0.001))
        sizes.append(len(h.loss._a.iterations))
    a = h.loss._a
    assert max(sizes) <= cap and 0 < a.m < len(h.loss) == len(a.iterations)  # O(cap), merged
    assert len(a.avg_loss) == len(a.iterations) == len(a.cum) - 1
    assert a.cnt is None and len(a.bcnt) == a.m + 1  # all finite: counts at bucket edges only
    its = list(a.iterations)
    assert its == sorted(set(its)) and its[-1] == 40_000 and h.iteration_lines == 40_000
    # The newest half is untouched: the same points, and window means ending there exact.
    tail = h.loss.points()[a.m :]
    assert len(tail) >= cap // 2 and tail == [(i, avgs[i - 1]) for i, _ in tail]
    assert h.loss.mean(1, 40_000) == pytest.approx(_exact_mean(avgs, 1, 40_000), rel=1e-12)
    # The bulk path (`add_run`) stays under the cap as well, even for a run longer than it.
    evs = [Iteration(i, 1.0, v, 0.001, seconds=1.0) for i, v in enumerate(avgs[:5000], 1)]
    run = IterationRun(
        [e.iteration for e in evs],
        [e.avg_loss for e in evs],
        ["0.001"] * len(evs),
        [1.0] * len(evs),
        [str(k) for k in range(len(evs))],
        1,
        lambda raw, line: evs[int(raw)],
    )
    hb = History().add_run(run)
    assert len(hb.loss._a.iterations) <= cap and hb.loss.last_iteration == 5000


@pytest.mark.parametrize(("n", "tol"), [(5_000, 0.02), (40_000, 0.1)])
def test_merged_means_match_the_exact_ones_within_a_stated_tolerance(
    n: int, tol: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The approximation (history's docstring): the sums are exact at bucket edges, a window
    # end inside a bucket takes its share by linear interpolation. Stated tolerance, on the
    # policy's 100-iteration windows of a realistic noisy curve: 2 % at 5 times the cap
    # (buckets of 16-32 iterations; a 10 M-line log at the default cap has 8-16), 10 % at 40
    # times (buckets of 256); never outside the values of the buckets the window touches.
    from supervisor.training import history

    cap = 1000
    monkeypatch.setattr(history, "MAX_POINTS", cap)
    avgs = _descent(n)
    h = _series(avgs)
    a = h.loss._a
    starts = [a.start, *(e + 1 for e in a.iterations[: a.m])]  # each bucket's first iteration
    worst = 0.0
    for last in range(100, n + 1, 7):
        first = last - 99
        got = h.loss.mean(first, last)
        assert got is not None
        worst = max(worst, abs(got - _exact_mean(avgs, first, last)) / got)
        lo = max(s for s in starts if s <= first) if first >= a.start else 1
        hi = min((e for e in a.iterations[: a.m] if e >= last), default=last)
        assert min(avgs[lo - 1 : hi]) <= got <= max(avgs[lo - 1 : hi])
    assert 0 < worst <= tol
    # Ends on bucket edges: the very float of the unmerged series' prefix sums.
    monkeypatch.setattr(history, "MAX_POINTS", 10**9)
    exact = _series(avgs)
    for k in range(0, a.m - 3, 17):
        first, last = starts[k], a.iterations[k + 3]
        assert h.loss.mean(first, last) == exact.loss.mean(first, last)
    # The quiet path's means (`means_extended`, `window_means`) agree with `mean` there too.
    its, more = range(n + 1, n + 301), _descent(300, seed=4)
    span = range(0, 300)
    ext = [m for _, m in h.loss.means_extended(its, more, 100, span)]
    whole = h.loss.window_means(its, more, 100, span)
    monkeypatch.setattr(history, "MAX_POINTS", cap)
    hk, snaps = h, []
    for it, v in zip(its, more, strict=True):
        hk = hk.add(Iteration(it, 1.0, v, 0.001))
        snaps.append(hk.loss.mean(it - 99, it))
    assert ext == snaps and whole == snaps


def test_below_the_cap_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor.training import history

    avgs = _descent(3000)
    plain = _series(avgs, nan_at=(7, 2500))
    monkeypatch.setattr(history, "MAX_POINTS", 3000)  # exactly at the cap: still exact
    at = _series(avgs, nan_at=(7, 2500))
    assert at.loss._a.m == 0 and repr(at.loss.points()) == repr(plain.loss.points())
    for last in range(1, 3001, 3):
        for w in (1, 50, 100, 1000):
            assert at.loss.mean(last - w + 1, last) == plain.loss.mean(last - w + 1, last)
    assert repr(at) == repr(plain)
    monkeypatch.setattr(history, "MAX_POINTS", 2999)  # one entry more: merged
    over = _series(avgs, nan_at=(7, 2500))
    assert over.loss._a.m > 0 and len(over.loss) < 3000
    # A bucket of NaNs alone has no mean (NaN as a point, None as a window's mean).
    monkeypatch.setattr(history, "MAX_POINTS", 8)
    h = _series([1.0, 2.0, math.nan, math.nan, 5.0, 6.0, 7.0, 8.0, 9.0], nan_at=(3, 4))
    assert h.loss.point(0) == (2, 1.5) and h.loss.point(1)[0] == 4
    assert math.isnan(h.loss.point(1)[1]) and h.loss.mean(3, 4) is None
    assert h.loss.mean(1, 9) == 38.0 / 7 and h.avg_loss_at(9) == 9.0


def test_merged_series_takes_nans_and_resumes_after_merging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from supervisor.training import history

    monkeypatch.setattr(history, "MAX_POINTS", 200)
    avgs = _descent(1000)
    h = _series(avgs)
    assert h.loss._a.m > 0 and h.loss._a.cnt is None
    # A NaN after merging: the counts are materialized from the edges, the means unchanged.
    means = [h.loss.mean(f, f + 99) for f in range(1, 902, 9)]
    hn = h.add(Iteration(1001, 1.0, math.nan, 0.001))
    a = hn.loss._a
    assert a.cnt is not None and not a.finite and len(a.cnt) == len(a.cum)
    assert [hn.loss.mean(f, f + 99) for f in range(1, 902, 9)] == means
    assert hn.loss.mean(1001, 1001) is None and hn.nan_streak == 1
    for i in range(1002, 1400):  # on past the cap again, with the counts stored
        hn = hn.add(Iteration(i, 1.0, 1.0, 0.001))
    assert len(hn.loss) <= 200 and hn.loss.mean(1300, 1399) == 1.0
    assert hn.loss.mean(1, 1399) == pytest.approx(
        _exact_mean([*avgs, math.nan, *[1.0] * 398], 1, 1399)
    )
    # A resume repeats the iterations since its last save (in the unmerged part): later wins.
    hr = h.add(Iteration(950, 1.0, 9.0, 0.001))
    assert hr.loss.last_iteration == 950 and hr.loss.point(-1) == (950, 9.0)
    assert hr.loss.mean(900, 949) == h.loss.mean(900, 949)
    assert h.loss.last_iteration == 1000  # the older snapshot is untouched
