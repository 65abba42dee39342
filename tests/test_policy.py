"""Stop policy over synthetic histories: every rule fires when it must and stays quiet otherwise."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from supervisor.training.events import Event, Iteration, MapResult, Tick, WeightsSaved
from supervisor.training.history import History, build
from supervisor.training.policy import (
    Continue,
    Diverged,
    Evaluate,
    IterationBudget,
    NotLearning,
    Overfit,
    Plateau,
    Policy,
    Stop,
    TargetMap,
    TimeBudget,
)
from supervisor.training.schedule import Schedule, infer_schedule


def run(
    n: int,
    loss: Callable[[int], float],
    maps: dict[int, float] | None = None,
    *,
    start: int = 1,
    rate: Callable[[int], float] = lambda i: 0.001,
) -> list[Event]:
    events: list[Event] = []
    for i in range(start, n + 1):
        events.append(Iteration(i, loss(i), loss(i), rate(i), seconds=1.0))
        if maps and i in maps:
            events.append(MapResult(i, maps[i]))
    return events


def first_stop(
    policy: Policy, events: list[Event], schedule: Schedule | None = None
) -> Stop | None:
    s = schedule or Schedule()
    h = History()
    for e in events:
        h = h.add(e)
        d = policy.decide(h, s)
        if isinstance(d, Stop):
            return d
    return None


def falling(i: int) -> float:
    return 5.0 / (1 + i / 200)


def only(*rules: object, **kw: object) -> Policy:
    return Policy(rules=tuple(rules), **kw)  # type: ignore[arg-type]


# --- plateau -------------------------------------------------------------------------------------


def test_plateau_fires_patience_after_the_last_real_improvement() -> None:
    maps = {i: min(0.6, i / 5000) for i in range(100, 8001, 100)}  # rises to 0.6 at 3000, flat
    stop = first_stop(only(Plateau(patience=2000, min_delta=0.005)), run(8000, falling, maps))
    assert stop is not None and stop.rule == "plateau"
    # 0.6 is reached at 3000; the last +0.005 step before it is at 2975→3000, so stop at 5000.
    assert stop.iteration == 5000
    assert stop.numbers["best_iteration"] == 3000
    assert "has not gained 0.5 points over 60.0 % (iteration 3000)" in stop.reason


def test_plateau_ignores_gains_smaller_than_min_delta() -> None:
    # Creeps up by 0.001 per evaluation: a new best each time, never a real improvement.
    maps = {i: 0.5 + 0.001 * (i // 100 - 10) for i in range(1000, 6001, 100)}
    stop = first_stop(only(Plateau(patience=1000, min_delta=0.02)), run(6000, falling, maps))
    assert stop is not None
    # +0.01 per 1000 iterations is below min_delta 0.02 within the patience: the reference
    # stays at 1000 and the rule fires 1000 iterations later, though the best kept creeping.
    assert stop.numbers["reference_iteration"] == 1000
    assert stop.iteration == 2000
    # The stop comes with the evaluation at 2000, which the decision has seen.
    assert stop.numbers["best_iteration"] == 2000


def test_plateau_does_not_fire_while_map_keeps_improving() -> None:
    maps = {i: i / 10000 for i in range(100, 9001, 100)}
    assert (
        first_stop(only(Plateau(patience=500, min_delta=0.005)), run(9000, falling, maps)) is None
    )


def test_plateau_before_the_last_step_says_so() -> None:
    maps = {i: 0.5 for i in range(1000, 20001, 100)}
    sched = Schedule(steps=(16000, 18000), scales=(0.1, 0.1))
    stop = first_stop(only(Plateau(patience=2000)), run(20000, falling, maps), sched)
    assert stop is not None
    # 2.5× the patience before the last step (the default `before_last_step`).
    assert stop.iteration == 1000 + int(2000 * Plateau().before_last_step) == 6000
    assert "learning rate still drops at iteration 18000" in stop.reason
    assert "waited 2.5× the patience" in stop.reason


def test_a_learning_rate_step_restarts_the_plateau_count() -> None:
    maps = {i: 0.5 for i in range(1000, 8001, 100)}
    sched = Schedule(steps=(2500,), scales=(0.1,))
    stop = first_stop(only(Plateau(patience=2000)), run(8000, falling, maps), sched)
    assert stop is not None and stop.iteration == 4500
    assert "counted from the learning-rate step at 2500" in stop.reason


def test_plateau_waits_for_the_evaluation_that_ends_its_window() -> None:
    # Evaluations every 500; patience 200: iterations 1200..1499 prove nothing yet.
    flat = {1000: 0.5, 1500: 0.5}
    stop = first_stop(only(Plateau(patience=200)), run(2000, falling, flat))
    assert stop is not None and stop.iteration == 1500
    # The evaluation at the end of the window shows the gain: no stop (the demo's case).
    gain = {500: 0.77, 600: 0.774, 700: 0.792}
    assert first_stop(only(Plateau(patience=200, min_delta=0.01)), run(700, falling, gain)) is None


def test_plateau_needs_an_evaluation() -> None:
    assert first_stop(only(Plateau(patience=10)), run(5000, falling)) is None


# --- overfit -------------------------------------------------------------------------------------


def peak_then_drop(i: int) -> float:
    return 0.8 if i == 3000 else (0.6 + i / 15000 if i < 3000 else 0.7)


def test_overfit_fires_when_map_falls_while_loss_falls() -> None:
    maps = {i: peak_then_drop(i) for i in range(500, 6001, 500)}
    stop = first_stop(only(Overfit(drop=0.05, confirm=3)), run(6000, falling, maps))
    assert stop is not None and stop.rule == "overfit"
    assert stop.iteration == 4500  # evaluations 3500, 4000, 4500 all 10 points below 0.8
    assert stop.numbers["best_iteration"] == 3000
    loss_now, loss_best = stop.numbers["loss_now"], stop.numbers["loss_at_best"]
    assert isinstance(loss_now, float) and isinstance(loss_best, float) and loss_now < loss_best


def test_overfit_does_not_fire_when_loss_rises_too() -> None:
    maps = {i: peak_then_drop(i) for i in range(500, 6001, 500)}
    rising_after_peak = lambda i: 2.0 if i < 3000 else 2.0 + i / 1000  # noqa: E731
    assert first_stop(only(Overfit()), run(6000, rising_after_peak, maps)) is None


def test_overfit_needs_confirm_evaluations_in_a_row() -> None:
    # Two low evaluations, then a recovery within the drop: never three in a row.
    series = [0.6, 0.7, 0.8, 0.7, 0.7, 0.78, 0.7, 0.7, 0.79]
    maps = {500 * (k + 1): m for k, m in enumerate(series)}
    assert first_stop(only(Overfit(drop=0.05, confirm=3)), run(4500, falling, maps)) is None


def test_overfit_ignores_small_dips() -> None:
    maps = {i: (0.8 if i == 3000 else 0.77) for i in range(500, 8001, 500)}
    assert first_stop(only(Overfit(drop=0.05, confirm=2)), run(8000, falling, maps)) is None


# --- not learning --------------------------------------------------------------------------------


def test_not_learning_fires_when_map_stays_near_zero_and_loss_is_flat() -> None:
    maps = {i: 0.01 for i in range(1000, 5001, 1000)}
    stop = first_stop(
        only(NotLearning(after=2000, map_below=0.05, window=500)),
        run(5000, lambda i: 3.0 + 0.1 * math.sin(i), maps),
    )
    assert stop is not None and stop.rule == "not_learning"
    assert stop.iteration == 2000
    assert ".names order" in stop.advice


def test_not_learning_waits_while_the_loss_is_in_its_first_descent() -> None:
    # Halving every ~280 iterations: the network has not learnt yet, zero mAP proves nothing.
    def descent(i: int) -> float:
        return 20.0 * math.exp(-i / 400) + 0.3

    maps = {i: 0.0 for i in range(100, 5001, 100)}
    events = run(5000, descent, maps)
    stop = first_stop(only(NotLearning(after=2000)), events)
    # ... but once the fall slows (the loss is then ~1 % of its start), mAP 0 is the verdict.
    # (at 2000 it is still falling 54 % per half-window, at 2471 under 35 %)
    assert stop is not None and 2400 < stop.iteration < 2600
    assert stop.numbers["loss_recent"] > stop.numbers["loss_before"] * (1 - 0.35)  # type: ignore[operator]


def test_not_learning_fires_on_a_slow_fall_with_map_near_zero() -> None:
    # A slow fall (5 → 0.5 over 5 000 iterations) with mAP at zero: the loss fits labels the
    # validation set contradicts (a class-id mismatch does exactly this).
    maps = {i: 0.0 for i in range(1000, 5001, 1000)}
    stop = first_stop(only(NotLearning(after=2000)), run(5000, falling, maps))
    assert stop is not None and stop.iteration == 2000


def test_not_learning_does_not_fire_when_map_is_above_the_floor() -> None:
    maps = {i: 0.3 for i in range(1000, 5001, 1000)}
    assert first_stop(only(NotLearning(after=2000)), run(5000, lambda i: 3.0, maps)) is None


def test_not_learning_needs_mAP_evidence() -> None:
    assert first_stop(only(NotLearning(after=100)), run(5000, lambda i: 3.0)) is None


# --- diverged ------------------------------------------------------------------------------------


def test_diverged_on_nan_loss() -> None:
    events = run(600, lambda i: math.nan if i > 500 else falling(i))
    stop = first_stop(only(Diverged(nan_lines=3)), events)
    assert stop is not None and stop.rule == "diverged" and stop.iteration == 503


def test_a_single_nan_line_is_not_divergence() -> None:
    events = run(600, lambda i: math.nan if i == 300 else falling(i))
    assert first_stop(only(Diverged(nan_lines=3)), events) is None


def test_diverged_when_loss_explodes_above_its_minimum() -> None:
    events = run(2000, lambda i: falling(i) if i < 1000 else 100.0)
    stop = first_stop(only(Diverged(loss_factor=10, window=100)), events)
    assert stop is not None and stop.rule == "diverged"
    assert 1000 < stop.iteration < 1100
    assert "its minimum" in stop.reason


def test_noisy_but_bounded_loss_is_not_divergence() -> None:
    events = run(3000, lambda i: 2.0 + 1.5 * math.sin(i / 7))
    assert first_stop(only(Diverged()), events) is None


# --- target, budgets, gates ----------------------------------------------------------------------


def test_target_map_stops_at_the_first_evaluation_reaching_it() -> None:
    maps = {i: i / 5000 for i in range(500, 5001, 500)}
    stop = first_stop(only(TargetMap(0.7)), run(5000, falling, maps))
    assert stop is not None and stop.rule == "target_map" and stop.iteration == 3500


def test_iteration_budget() -> None:
    stop = first_stop(Policy(budgets=(IterationBudget(1234),), rules=()), run(5000, falling))
    assert stop is not None and stop.rule == "max_iterations" and stop.iteration == 1234


def test_time_budget_uses_event_time_when_present() -> None:
    events: list[Event] = []
    for i in range(1, 100):
        events.append(Iteration(i, 1.0, 1.0, 0.001, seconds=0.1, time=1000.0 + 10 * i))
    stop = first_stop(Policy(budgets=(TimeBudget(300),), rules=()), events)
    assert stop is not None and stop.rule == "max_time"
    assert stop.iteration == 31  # 1010 → 1310


def test_time_budget_falls_back_to_darknet_seconds() -> None:
    stop = first_stop(Policy(budgets=(TimeBudget(50),), rules=()), run(100, falling))
    assert stop is not None and stop.iteration == 50


def test_time_budget_fires_on_a_tick_while_darknet_is_silent() -> None:
    h = build([Iteration(1, 1.0, 1.0, 0.001, time=0.0), Tick(time=3601.0)])
    d = Policy(budgets=(TimeBudget(3600),), rules=()).decide(h, Schedule())
    assert isinstance(d, Stop) and d.rule == "max_time"


def test_nothing_but_budgets_stops_before_min_iterations() -> None:
    events = run(600, lambda i: math.nan)
    assert first_stop(only(Diverged(), min_iterations=1000), events) is None
    stop = first_stop(
        Policy(budgets=(IterationBudget(500),), rules=(Diverged(),), min_iterations=1000), events
    )
    assert stop is not None and stop.rule == "max_iterations"


def test_nothing_stops_before_burn_in() -> None:
    maps = {100: 0.9}
    events = run(2000, falling, maps)
    assert first_stop(only(TargetMap(0.5)), events, Schedule(burn_in=1000)).iteration == 1000  # type: ignore[union-attr]


# --- evaluation requests -------------------------------------------------------------------------


def test_evaluate_after_a_selected_save_until_it_is_scored() -> None:
    p = Policy(rules=(), evaluate_every=200)
    s = Schedule(burn_in=100)
    h = build([Iteration(100, 1, 1, 0.001), WeightsSaved("x/a.backup", 100)])
    assert isinstance(p.decide(h, s), Continue)  # 100 is not a multiple of 200
    h = build([Iteration(200, 1, 1, 0.001), WeightsSaved("x/a.backup", 200)])
    d = p.decide(h, s)
    assert isinstance(d, Evaluate) and d.iteration == 200
    h = h.add(MapResult(200, 0.3, source="supervisor"))
    assert isinstance(p.decide(h, s), Continue)


def test_no_evaluation_requests_when_darknet_evaluates() -> None:
    h = build([Iteration(200, 1, 1, 0.001), WeightsSaved("x/a.backup", 200)])
    assert isinstance(Policy(rules=()).decide(h, Schedule()), Continue)


# --- history ------------------------------------------------------------------------------------


def test_history_snapshots_are_immutable_and_resumes_keep_the_later_values() -> None:
    h1 = build(run(300, lambda i: 2.0))
    h2 = h1
    for e in run(400, lambda i: 1.0, start=201):  # a resume repeats 201..300
        h2 = h2.add(e)
    assert len(h1.loss) == 300 and h1.loss.mean(201, 300) == 2.0
    assert len(h2.loss) == 400 and h2.loss.mean(201, 300) == 1.0
    assert h2.loss.mean(1, 200) == 2.0
    # Writing from an older snapshot must not disturb the newer one.
    h1b = h1.add(Iteration(301, 7.0, 7.0, 0.001))
    assert h1b.loss.mean(301, 301) == 7.0 and h2.loss.mean(301, 301) == 1.0


def test_invalid_map_is_recorded_but_never_best() -> None:
    h = build(
        [
            Iteration(100, 1, 1, 0.001),
            MapResult(100, 0.4),
            Iteration(200, 1, 1, 0.001),
            MapResult(200, float("inf"), valid=False),
            MapResult(200, 1e283, valid=True),
        ]
    )
    assert len(h.evaluations) == 3
    assert h.best is not None and h.best.map == 0.4


def test_best_map_ties_keep_the_first() -> None:
    h = build(
        [
            Iteration(100, 1, 1, 0.001),
            MapResult(100, 0.5),
            Iteration(200, 1, 1, 0.001),
            MapResult(200, 0.5),
        ]
    )
    assert h.best is not None and h.best.iteration == 100


@pytest.mark.parametrize(
    ("rates", "burn_in", "steps"),
    [
        ([0.0001 * min(i, 100) / 100 for i in range(1, 300)], 100, ()),
        ([0.001] * 100 + [0.0001] * 100 + [0.00001] * 100, 0, (101, 201)),
        ([0.001] * 100 + [0.0001] + [0.001] * 100, 0, ()),  # a one-line glitch is no step
    ],
)
def test_infer_schedule_from_printed_rates(
    rates: list[float], burn_in: int, steps: tuple[int, ...]
) -> None:
    its = [Iteration(i + 1, 1.0, 1.0, r) for i, r in enumerate(rates)]
    s = infer_schedule(its)
    assert s.burn_in == burn_in and s.steps == steps


def test_the_first_descent_from_scratch_is_not_divergence() -> None:
    # The run: burn_in 50, avg loss 24 until iteration 40, then down to 1.2 by 70.
    # The last-100-iteration mean at 72 is ~13× the minimum, yet the loss never rose.
    def descent(i: int) -> float:
        return 24.0 if i <= 40 else max(1.2, 24.0 * (1.2 / 24.0) ** ((i - 40) / 30))

    events = run(400, lambda i: descent(i) + 0.05 * math.sin(i))
    assert first_stop(only(Diverged()), events, Schedule(burn_in=50)) is None


def test_a_single_spike_is_not_a_sustained_blow_up() -> None:
    events = run(1000, lambda i: 20.0 if 600 <= i < 640 else falling(i))
    assert first_stop(only(Diverged(loss_factor=10, window=100)), events) is None


def test_not_learning_is_judged_at_a_share_of_a_short_run() -> None:
    maps = {i: 0.01 for i in range(100, 1501, 100)}
    events = run(1500, lambda i: 3.0 + 0.1 * math.sin(i), maps)
    stop = first_stop(only(NotLearning()), events, Schedule(max_batches=1500))
    assert stop is not None and stop.rule == "not_learning"
    assert stop.iteration == 375  # 25 % of max_batches, long before the absolute 2000
    assert "25% of max_batches 1500" in stop.reason


def test_not_learning_share_is_floored_and_capped() -> None:
    rule = NotLearning(after=2000, after_share=0.25, after_min=300)
    assert rule.judged_from(Schedule(max_batches=400)) == 300
    assert rule.judged_from(Schedule(max_batches=50000)) == 2000
    assert rule.judged_from(Schedule()) == 2000  # max_batches unknown (a replayed log)
    assert NotLearning(after=5000, after_share=None).judged_from(Schedule(max_batches=6000)) == 5000


def test_a_job_file_that_sets_after_alone_keeps_its_meaning() -> None:
    from supervisor.runtime.jobpolicy import rules_for
    from supervisor.spec import StopSpec

    def not_learning(stop: dict[str, object]) -> NotLearning:
        (rule,) = [r for r in rules_for(StopSpec.model_validate(stop)) if r.name == "not_learning"]
        assert isinstance(rule, NotLearning)
        return rule

    short = Schedule(max_batches=1500)
    # Written before after_share existed: 5000 meant iteration 5000 on any run.
    assert not_learning({"not_learning": {"after": 5000}}).judged_from(short) == 5000
    assert not_learning({}).judged_from(short) == 375
    both = not_learning({"not_learning": {"after": 5000, "after_share": 0.5}})
    assert both.judged_from(short) == 750
    assert not_learning({"not_learning": {"min_loss_drop": 0.1}}).min_loss_drop == 0.1


def test_plateau_patience_share_fits_the_run() -> None:
    p = Plateau(patience=2000, patience_share=0.15, patience_min=300)
    assert p.base_patience(Schedule(burn_in=50, max_batches=4050)) == 600
    assert p.base_patience(Schedule(burn_in=0, max_batches=1000)) == 300  # the floor
    assert p.base_patience(Schedule(max_batches=50000)) == 2000  # the cap
    assert Plateau().base_patience(Schedule(max_batches=4000)) == 600  # on by default
    assert Plateau().base_patience(Schedule()) == 2000  # max_batches unknown: absolute
    assert Plateau(patience_share=None).base_patience(Schedule(max_batches=4000)) == 2000
    maps = {i: 0.5 for i in range(100, 4001, 100)}
    stop = first_stop(only(p), run(4000, falling, maps), Schedule(max_batches=4000))
    assert stop is not None and stop.iteration == 100 + 600  # no step in the cfg: no doubling


def test_overfit_span_share_fits_the_run_when_asked() -> None:
    o = Overfit(span=500, span_share=0.1, span_min=300)
    assert o.run_span(Schedule(burn_in=50, max_batches=4050)) == 400
    assert o.run_span(Schedule(max_batches=1200)) == 300  # the floor
    assert o.run_span(Schedule(max_batches=50000)) == 500  # the cap
    assert o.run_span(Schedule()) == 500  # max_batches unknown
    assert Overfit().run_span(Schedule(max_batches=1200)) == 500  # off by default
    # Peak at 1 000, then 3 evaluations 10 points below over 300 iterations, loss falling.
    maps = {i: 0.6 for i in range(100, 1001, 100)} | {1100: 0.5, 1200: 0.5, 1300: 0.5, 1400: 0.5}
    events = run(1400, falling, maps)
    stop = first_stop(only(o), events, Schedule(max_batches=1400))
    assert stop is not None and stop.rule == "overfit" and stop.iteration == 1400
    assert stop.numbers["span"] == 300
    assert first_stop(only(Overfit()), events, Schedule(max_batches=1400)) is None


def test_evaluation_noise_sees_the_scatter_not_the_trend() -> None:
    import random

    from supervisor.training.policy import evaluation_noise

    # A steady rise of 2 points per evaluation plus white noise of σ = 1 point: the second
    # differences cancel the rise; the estimate is near 1 point, not near the 2-point steps.
    rnd = random.Random(0)
    rising = [0.3 + 0.02 * i + rnd.gauss(0, 0.01) for i in range(30)]
    assert 0.006 < evaluation_noise(rising) < 0.015
    assert evaluation_noise([0.3 + 0.02 * i for i in range(10)]) < 1e-9  # no scatter
    assert evaluation_noise([0.5, 0.6, 0.4]) == 0.0  # too few to tell


def test_plateau_noise_k_raises_the_gain_that_counts() -> None:
    # Evaluations that swing ±1 point from one to the next, over a creep of 0.6 points every
    # 500 iterations: each creep clears the plain 0.5-point min_delta and restarts its count,
    # so the plain rule never stops; one σ of the swing (≈ 2.4 points by the second
    # differences) does not count them, and the plateau is called after the patience.
    maps = {
        i: 0.5 + 0.006 * (i // 500) + (0.01 if (i // 100) % 2 else -0.01)
        for i in range(100, 6001, 100)
    }
    events = run(6000, falling, maps)
    assert first_stop(only(Plateau(patience=600, patience_share=None)), events) is None
    noisy = first_stop(only(Plateau(patience=600, patience_share=None, noise_k=1.0)), events)
    assert noisy is not None and noisy.iteration == 700
    assert 0.02 < noisy.numbers["min_delta"] < 0.03  # type: ignore[operator]
    assert "the evaluation noise σ" in noisy.reason
