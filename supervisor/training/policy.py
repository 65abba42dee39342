"""The stop policy: pure functions of a `History` that say continue, evaluate now, or stop.

Each rule is a small immutable object with few parameters (in the manner of Keras'
`EarlyStopping`); its docstring is the piece of `when-to-stop-training.md` it embodies. A rule
looks at the history and either returns a `Stop` carrying its reason in words, the numbers
behind it and the advice to act on, or returns None. `Policy.decide` applies the gates
(nothing but a budget stops before `min_iterations` or the cfg's `burn_in`) and the rules in a
fixed order. No I/O, no clock: time comes from the events.

Defaults are the numbers the shared real curves argue for; `bench/policy.py` replays them and
the README explains each choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from supervisor.training.history import Evaluation, History
from supervisor.training.schedule import Schedule

Number = int | float | None

# Plateau defaults chosen leave-one-family-out on the whole curves (bench/RESULTS.md, "Stop
# policy on whole curves"); None / 0 switches one off. The noise-scaled gain is off: every
# k tried lost 1.5-3.8 points on a held-out curve (log 04, generous-good-s0). The gain scaled
# by the valid split's size (VALID_K) was chosen at 0.3-0.4 in every fold; 0.3 is the lowest.
PATIENCE_SHARE: float | None = 0.15
AFTER_LAST_STEP_SHARE: float | None = 0.1
NOISE_K: float = 0.0
VALID_K: float = 0.3
# Chosen leave-one-family-out once `generous-corrupted-s1` came in (plateau 43.9 % from 1 800,
# then +3.4 points after the first rate step at 3 200): 2.5 and 2 in both folds that see it.
BEFORE_LAST_STEP: float = 2.5
OVERFIT_VALID_K: float = 2.0


def pct(x: float) -> str:
    """mAP fraction as people read it."""
    return f"{x * 100:.1f} %"


def points(x: float) -> str:
    """An mAP difference as people read it."""
    return f"{x * 100:.1f} points"


@dataclass(frozen=True, slots=True)
class Continue:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Evaluate:
    """Score the weights saved at `iteration` (the supervisor's own evaluator)."""

    iteration: int
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the training: which rule, why in words, the numbers behind it, what to do next."""

    rule: str
    reason: str
    iteration: int
    numbers: Mapping[str, Number] = field(default_factory=dict)
    advice: str = ""


Decision = Continue | Evaluate | Stop


class Rule(Protocol):
    name: ClassVar[str]

    def check(self, h: History, s: Schedule) -> Stop | None: ...


# --- budgets (never gated) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IterationBudget:
    """Stop at the iteration budget the job set."""

    name: ClassVar[str] = "max_iterations"
    max_iterations: int

    def check(self, h: History, s: Schedule) -> Stop | None:
        if h.iteration < self.max_iterations:
            return None
        return Stop(
            self.name,
            f"reached the iteration budget ({h.iteration} ≥ max_iterations {self.max_iterations})",
            h.iteration,
            {"iteration": h.iteration, "max_iterations": self.max_iterations},
            "Keep the best weights; if mAP was still rising at the end, raise the budget.",
        )


@dataclass(frozen=True, slots=True)
class TimeBudget:
    """Define a maximum training time budget based on available resources and constraints."""

    name: ClassVar[str] = "max_time"
    max_seconds: float

    def check(self, h: History, s: Schedule) -> Stop | None:
        if h.elapsed < self.max_seconds:
            return None
        return Stop(
            self.name,
            f"reached the time budget ({h.elapsed / 3600:.2f} h of "
            f"{self.max_seconds / 3600:.2f} h)",
            h.iteration,
            {"elapsed_s": round(h.elapsed, 1), "max_time_s": self.max_seconds},
            "If results are good enough, test the best weights on real footage; otherwise "
            "analyze annotations, class variety, model and batch size, or add data.",
        )


# --- rules on the curves ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TargetMap:
    """Stop once validation mAP reaches the target the job asked for."""

    name: ClassVar[str] = "target_map"
    target: float

    def check(self, h: History, s: Schedule) -> Stop | None:
        b = h.best
        if b is None or b.map < self.target:
            return None
        return Stop(
            self.name,
            f"best mAP {pct(b.map)} at iteration {b.iteration} reached the target "
            f"{pct(self.target)}",
            h.iteration,
            {"best_map": b.map, "best_iteration": b.iteration, "target_map": self.target},
            "Validate the best weights on real footage or a golden set before deploying.",
        )


@dataclass(frozen=True, slots=True)
class Plateau:
    """Stop when validation mAP stops improving for a long time (diminishing returns).

    The best mAP must rise by at least the noise-aware delta within the patience, as shown by
    an evaluation at least that many iterations after the last real gain.

    The patience fits the run: `patience_share` of the iterations after burn_in (at least
    `patience_min`, at most `patience`; `patience` alone when max_batches is unknown or the
    share is None), so that it fits a 1 200- and a 50 000-iteration run alike.

    The learning-rate steps the cfg declares shape it, because on a fixed schedule the best mAP
    usually comes after the steps (on the corpus' whole curves, between the first step and
    the end, or right after the last one):
    - before the cfg's last rate drop the patience is `before_last_step` times longer (a
      plateau there is weak evidence), and a step that is not the last restarts the count;
    - once the last drop has had its chance (an evaluation came after it), the patience is
      `after_last_step_share` of the iterations the schedule has left after that drop (at
      least `after_last_step_min`, at most the base patience), counted from the last real
      gain: nothing is left in the schedule that usually brings one. With darknet's recipe
      (last step at 90 %) that is one evaluation; a cfg whose last step comes early, with a
      long run at the low rate after it, keeps the base patience.
    - at the ceiling (the reference within the gain that counts of 100 %) no evaluation can
      show a gain, so the base patience applies with no step restart or doubling.

    The gain that counts is `min_delta` or, when larger, `valid_k` × the sampling σ of an mAP
    measured on the valid split's N objects, √(p(1−p)/N) with p the best mAP (N = TP + FN of
    the latest evaluation that prints them): a 100-object split measures a 45 % mAP to ±5
    points, so a 1-point "gain" there is noise, while 5 000 objects measure it to ±0.7 (the
    default 0.3 asks 1.5 and 0.2 points of them). Or, when larger still, `noise_k` × the
    evaluation noise σ estimated from the curve: from the second differences of the latest
    `noise_window` evaluations (variance 6σ² for white noise on any locally straight curve, so
    a steady rise is not taken for noise), robustly through their median. Off by default
    (`noise_k` 0): on the whole curves every k tried lost points on a held-out curve, because a
    60-image valid set swings as much as a slow climb gains (bench/RESULTS.md).
    """

    name: ClassVar[str] = "plateau"
    patience: int = 2000
    min_delta: float = 0.005
    before_last_step: float = BEFORE_LAST_STEP
    patience_share: float | None = PATIENCE_SHARE
    patience_min: int = 300
    after_last_step_share: float | None = AFTER_LAST_STEP_SHARE
    after_last_step_min: int = 100
    noise_k: float = NOISE_K
    noise_window: int = 10
    valid_k: float = VALID_K

    def base_patience(self, s: Schedule) -> int:
        """The patience for this run's schedule, before the last-step factor."""
        if self.patience_share is None or not s.max_batches:
            return self.patience
        warm = min(s.burn_in, s.max_batches)
        share = round(self.patience_share * (s.max_batches - warm))
        return min(self.patience, max(self.patience_min, share))

    def after_last_step_patience(self, s: Schedule) -> int | None:
        """The patience once the last rate drop has had its chance (None: off)."""
        last_drop = s.last_rate_drop
        if self.after_last_step_share is None or not s.max_batches or last_drop is None:
            return None
        share = round(self.after_last_step_share * max(0, s.max_batches - last_drop))
        return min(self.base_patience(s), max(self.after_last_step_min, share))

    def check(self, h: History, s: Schedule) -> Stop | None:
        delta, sigma, ref, latest = _plateau_state(
            h.evaluations, self.min_delta, self.noise_k, self.noise_window, self.valid_k
        )
        if ref is None or latest is None or h.best is None:
            return None
        last_drop = s.last_rate_drop
        short = self.after_last_step_patience(s)
        # The last drop has had its chance once an evaluation came after it.
        settled = short is not None and last_drop is not None and latest > last_drop
        if settled and delta > self.min_delta:
            # After the last drop the rate is low and the evaluations steady: the noise of
            # the latest evaluations, most of them from before the drop, would hide the small
            # real gains the drop brings.
            delta, sigma, ref, latest = _plateau_state(
                h.evaluations, self.min_delta, 0.0, self.noise_window, self.valid_k
            )
            assert ref is not None and latest is not None
        since = ref.iteration
        # At the ceiling no evaluation can show a gain, so waiting for the steps is pointless.
        ceiling = ref.map + delta > 1.0
        passed: list[int] = []
        if settled:
            assert short is not None
            patience, early = short, False
        elif ceiling:
            patience, early = self.base_patience(s), False
        else:
            passed = [st for st in s.steps if since < st <= h.iteration]
            if passed:
                since = max(passed)
            early = last_drop is not None and h.iteration < last_drop
            base = self.base_patience(s)
            patience = int(base * self.before_last_step) if early else base
        # Evidence, not elapsed iterations: an evaluation must have looked at the end of the
        # patience window (the one due at that iteration may yet show the gain).
        if latest - since < patience:
            return None
        gain = f"{points(delta)}"
        sampled, objects = sampling_sigma([e for e in h.evaluations if e.valid])
        if delta > self.min_delta and delta == self.noise_k * sigma:
            gain += f" ({self.noise_k:g}× the evaluation noise σ {points(sigma)})"
        elif delta > self.min_delta:
            gain += (
                f" ({self.valid_k:g}× the σ {points(sampled)} of an mAP measured on "
                f"{objects} valid objects)"
            )
        why = (
            f"mAP has not gained {gain} over {pct(ref.map)} (iteration {ref.iteration}) for "
            f"{h.iteration - ref.iteration} iterations; best {pct(h.best.map)} at iteration "
            f"{h.best.iteration}"
        )
        if settled:
            why += (
                f"; the learning rate made its last drop at iteration {last_drop} and no "
                f"evaluation since has gained (patience after the last step: {patience})"
            )
        elif ceiling:
            why += (
                f"; mAP is within {points(delta)} of 100 %, so no gain can show, whatever the "
                "learning-rate steps still to come"
            )
        elif passed:
            why += f" (counted from the learning-rate step at {since})"
        if early:
            why += (
                f"; the learning rate still drops at iteration {last_drop}, where the best mAP "
                f"often comes, so this waited {self.before_last_step:g}× the patience"
            )
        return Stop(
            self.name,
            why,
            h.iteration,
            {
                "best_map": h.best.map,
                "best_iteration": h.best.iteration,
                "reference_iteration": ref.iteration,
                # Where the patience window began: the reference, or a step after it.
                "counted_from": since,
                "patience": patience,
                "min_delta": delta,
                "noise_sigma": sigma,
                "last_rate_drop": last_drop,
            },
            "Keep the best weights and validate them on real footage or a golden set. A stable "
            "plateau matters more than the last +1 %; for more, add variety (angles, "
            "backgrounds, lighting), negatives and hard cases rather than iterations.",
        )


# The evaluations change only when one arrives, but the rule is asked after every iteration
# line: walking them each time cost 56 µs per line at 1 000 evaluations (bench/RESULTS.md).
# History keeps the same tuple object until the next evaluation, so the answer is remembered
# by identity (the tuple is held, so its id cannot be reused while remembered).
_PlateauState = tuple[float, float, Evaluation | None, int | None]
_MEMO: dict[tuple[int, float, float, int, float], tuple[Sequence[Evaluation], _PlateauState]] = {}


def _plateau_state(
    evals: Sequence[Evaluation],
    min_delta: float,
    noise_k: float,
    noise_window: int,
    valid_k: float = 0.0,
) -> _PlateauState:
    """The gain that counts, the noise σ, the plateau reference and the latest valid
    evaluation's iteration."""
    key = (id(evals), min_delta, noise_k, noise_window, valid_k)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is evals:
        return hit[1]
    valid = [e for e in evals if e.valid]
    sigma = evaluation_noise([e.map for e in valid[-noise_window:]]) if noise_k else 0.0
    delta = max(min_delta, noise_k * sigma)
    if valid_k and valid:
        delta = max(delta, valid_k * sampling_sigma(valid)[0])
    ref = _plateau_reference(valid, delta)
    latest = valid[-1].iteration if valid else None
    if len(_MEMO) >= 64:
        _MEMO.clear()
    state = (delta, sigma, ref, latest)
    _MEMO[key] = (evals, state)
    return state


def _sampling_sigma_of(evals: Sequence[Evaluation]) -> tuple[float, int]:
    """`sampling_sigma` of the valid ones among `evals`, remembered by identity as
    `_plateau_state` is (the sequence object only changes when an evaluation arrives)."""
    hit = _SIGMA_MEMO.get(id(evals))
    if hit is not None and hit[0] is evals:
        return hit[1]
    got = sampling_sigma([e for e in evals if e.valid])
    if len(_SIGMA_MEMO) >= 64:
        _SIGMA_MEMO.clear()
    _SIGMA_MEMO[id(evals)] = (evals, got)
    return got


_SIGMA_MEMO: dict[int, tuple[Sequence[Evaluation], tuple[float, int]]] = {}


def sampling_sigma(valid: Sequence[Evaluation]) -> tuple[float, int]:
    """σ of an mAP measured on the valid split's N objects, as a proportion's: √(p(1−p)/N), p the
    best mAP so far, N = TP + FN of the latest evaluation that prints them (every ground-truth
    box is found or missed); and N. (0, 0) when no evaluation says N."""
    n = next(
        (e.result.tp + e.result.fn for e in reversed(valid)
         if e.result.tp is not None and e.result.fn is not None),
        0,
    )  # fmt: skip
    if n <= 0:
        return 0.0, 0
    p = min(1.0, max(e.map for e in valid))
    return math.sqrt(p * (1.0 - p) / n), n


def evaluation_noise(maps: list[float]) -> float:
    """σ of the evaluation noise from the second differences of consecutive mAPs (white noise
    gives them variance 6σ²; a straight trend cancels out); their median resists the jumps of
    a rise. 0 with fewer than 4 evaluations (3 second differences)."""
    d2 = [abs(maps[i + 1] - 2 * maps[i] + maps[i - 1]) for i in range(1, len(maps) - 1)]
    if len(d2) < 3:
        return 0.0
    d2.sort()
    n = len(d2)
    median = d2[n // 2] if n % 2 else (d2[n // 2 - 1] + d2[n // 2]) / 2
    return median / (0.6745 * math.sqrt(6))


def _plateau_reference(valid: list[Evaluation], min_delta: float) -> Evaluation | None:
    """The evaluation that last raised the best mAP by at least `min_delta`."""
    ref: Evaluation | None = None
    for e in valid:
        if ref is None or e.map >= ref.map + min_delta:
            ref = e
    return ref


@dataclass(frozen=True, slots=True)
class Overfit:
    """Stop when mAP falls while loss keeps falling: the classic sign of overfitting.

    The latest evaluations are all at least `drop` below the best mAP — `confirm` of them in
    a row, spanning at least `span` iterations, so that a noisy dip of frequent evaluations is
    not taken for a trend — and the avg loss around the latest one is at least `loss_fall`
    (relative) lower than around the best one: a flat loss with a noisy mAP is noise, not
    memorization.

    The drop that counts is `drop` or, when larger, `valid_k` × the sampling σ of an mAP on the
    valid split's N objects, √(p(1−p)/N) (as the plateau's gain; N = TP + FN of the latest
    evaluation that prints them): on 101 objects a 44 % mAP is measured to ±4.9 points, and
    the corpus's noisiest run (`generous-corrupted-s1`, half its train boxes random) swung from
    43.9 % to 29–37 % for six evaluations while its loss crept down, then gained 3.4 points
    above that best after the first rate step. A fixed 5 points called that overfitting.

    With `span_share` the span fits the run: that share of the iterations after burn_in (at
    least `span_min`, at most `span`; `span` alone when max_batches is unknown). Off by
    default: no whole curve of the corpus overfits, so nothing measured argues for a share
    yet (bench/RESULTS.md); the floor of 300 would keep three evaluations every 100 from
    counting (log 19's dip of three recovers).
    """

    name: ClassVar[str] = "overfit"
    drop: float = 0.05
    confirm: int = 3
    span: int = 500
    loss_fall: float = 0.03
    span_share: float | None = None
    span_min: int = 300
    valid_k: float = OVERFIT_VALID_K

    def run_span(self, s: Schedule) -> int:
        """The span the evaluations below the best must cover, for this run's schedule."""
        if self.span_share is None or not s.max_batches:
            return self.span
        warm = min(s.burn_in, s.max_batches)
        share = round(self.span_share * (s.max_batches - warm))
        return min(self.span, max(self.span_min, share))

    def check(self, h: History, s: Schedule) -> Stop | None:
        b = h.best
        if b is None:
            return None
        drop, sampled, objects = self.drop, 0.0, 0
        if self.valid_k:
            sampled, objects = _sampling_sigma_of(h.evaluations)
            drop = max(drop, self.valid_k * sampled)
        run: list[Evaluation] = []
        for e in reversed(h.evaluations):
            if not e.valid:
                continue
            if e.iteration <= b.iteration or b.map - e.map < drop:
                break
            run.append(e)
        run.reverse()
        span = self.run_span(s)
        if len(run) < self.confirm or run[-1].iteration - run[0].iteration < span:
            return None
        now, then = run[-1].avg_loss, b.avg_loss
        if now is None or then is None or now > then * (1 - self.loss_fall):
            return None
        shown = ", ".join(pct(e.map) for e in run[-5:])
        by = ""
        if drop > self.drop:
            by = (
                f", each more than {points(drop)} below it ({self.valid_k:g}× the σ "
                f"{points(sampled)} of an mAP measured on {objects} valid objects)"
            )
        return Stop(
            self.name,
            f"mAP fell from its best {pct(b.map)} (iteration {b.iteration}) to {shown} over "
            f"the last {len(run)} evaluations ({run[0].iteration}–{run[-1].iteration}){by} "
            f"while avg loss kept falling ({then:.3f} → {now:.3f})",
            h.iteration,
            {
                "best_map": b.map,
                "best_iteration": b.iteration,
                "latest_map": run[-1].map,
                "evaluations_below": len(run),
                "drop": drop,
                "span": span,
                "loss_at_best": then,
                "loss_now": now,
            },
            "The model is memorizing the training set: keep the best weights. Add variety "
            "(new days, lighting, backgrounds) and negatives, enlarge the validation split, "
            "remove duplicates and near-duplicates between train and valid.",
        )


@dataclass(frozen=True, slots=True)
class NotLearning:
    """Model not learning: loss stays high/flat, mAP stays near zero.

    Judged after a share of the run, not after a fixed count, so that a dead 1 500-iteration
    run is stopped at a fraction of its budget as surely as a 50 000-iteration one: from
    `after_share` of the iterations after burn_in (burn_in + share × (max_batches − burn_in);
    at least `after_min`, at most `after`; `after` alone when max_batches is unknown or
    `after_share` is None). Counted after burn_in because mAP is near zero while the rate is
    still warming up: the real fire-detector run (shared log 04, burn_in 1 000) scores 2.8 %
    at 1 000 and 2.0 % at 1 100, then 10 % at 1 200 and 48 % later. Then it fires when
    the best mAP is below `map_below` and the avg loss is not falling well: the mean of the
    latest half of the last `window` iterations (at most the judging point) is not
    `min_loss_drop` (relative) lower than the mean of the half before it.

    "Falling well" is the first descent of a run (a fall of 70–100 % from one half-window to
    the next on every whole curve measured), not the slow fall after it (7–30 %): a run whose
    loss keeps falling that slowly while its mAP stays near zero is fitting labels that the
    validation set contradicts (class ids against `.names`) — the real swapped-ids run of the
    corpus falls 22–24 % per 150 iterations at 0–2.5 % mAP — and waiting does not save it.
    Without any evaluation there is no mAP evidence and the rule does not fire.
    """

    name: ClassVar[str] = "not_learning"
    after: int = 2000
    map_below: float = 0.05
    window: int = 1000
    min_loss_drop: float = 0.35
    after_share: float | None = 0.25
    after_min: int = 300

    def judged_from(self, s: Schedule) -> int:
        """The iteration from which the rule may fire, for this run's schedule."""
        if self.after_share is None or not s.max_batches:
            return self.after
        warm = min(s.burn_in, s.max_batches)
        share = warm + round(self.after_share * (s.max_batches - warm))
        return min(self.after, max(self.after_min, share))

    def check(self, h: History, s: Schedule) -> Stop | None:
        start = self.judged_from(s)
        # `best` is the best valid evaluation: None means no mAP evidence yet.
        if h.iteration < start or h.best is None:
            return None
        best = h.best.map
        if best >= self.map_below:
            return None
        it = h.iteration
        window = min(self.window, start)
        half = window // 2
        recent = h.loss.mean(it - half + 1, it)
        before = h.loss.mean(it - 2 * half + 1, it - half)
        if recent is None or before is None or recent < before * (1 - self.min_loss_drop):
            return None
        when = f"after {it} iterations"
        if s.max_batches:
            when += f" ({it / s.max_batches:.0%} of max_batches {s.max_batches})"
        return Stop(
            self.name,
            f"{when} the best mAP is {pct(best)} (below {pct(self.map_below)}) and avg loss "
            f"is not falling well ({before:.3f} → {recent:.3f} over the last {2 * half} "
            f"iterations, less than {self.min_loss_drop:.0%} lower)",
            it,
            {
                "best_map": best,
                "map_below": self.map_below,
                "loss_before": before,
                "loss_recent": recent,
                "judged_from": start,
                "max_batches": s.max_batches,
            },
            "Check the data before training longer: .names order against label class ids, "
            "spot-check label files (YOLO format: class x_center y_center width height, "
            "normalized), confirm classes/filters in the cfg, and run `trainsup check`.",
        )


@dataclass(frozen=True, slots=True)
class Diverged:
    """Training blew up: the loss is NaN/inf, or far above the lowest it reached.

    NaN: `nan_lines` consecutive iteration lines with a non-finite avg loss (darknet's avg is
    an EMA, so once NaN it stays NaN). Blow-up: the avg loss *rose* to more than `loss_factor`
    times a minimum it had reached *before* the last `window` iterations, and stayed there:
    the mean of the window and the mean of its latest half are both above that bound. The
    first descent of a run from scratch (24 → 1.2 in 70 iterations) is never a blow-up: its
    minimum is always its latest value, inside the window, however high the window's mean.
    """

    name: ClassVar[str] = "diverged"
    loss_factor: float = 10.0
    nan: bool = True
    nan_lines: int = 3
    window: int = 100

    def check(self, h: History, s: Schedule) -> Stop | None:
        advice = (
            "Lower the learning rate or lengthen burn_in, check for corrupted images and "
            "invalid labels (`trainsup check`), and resume from the best weights."
        )
        if self.nan and h.nan_streak >= self.nan_lines:
            return Stop(
                self.name,
                f"avg loss is NaN/inf for {h.nan_streak} iterations in a row",
                h.iteration,
                {"nan_streak": h.nan_streak},
                advice,
            )
        low, low_at = h.min_avg_loss, h.min_avg_loss_iteration
        it = h.iteration
        start = it - self.window + 1
        # The run's lowest loss lies before the window: every loss since is higher, so the
        # loss has risen from it. A minimum inside the window means the loss is still falling.
        if low is None or low_at is None or low <= 0 or low_at >= start:
            return None
        bound = self.loss_factor * low
        recent = h.loss.mean(start, it)
        latest = h.loss.mean(it - self.window // 2 + 1, it)
        if recent is None or latest is None or recent <= bound or latest <= bound:
            return None
        return Stop(
            self.name,
            f"avg loss rose to {recent:.3f} over the last {self.window} iterations, "
            f"{recent / low:.0f}× its minimum {low:.3f} (iteration {low_at}), and stays there "
            f"({latest:.3f} over the latest {self.window // 2})",
            it,
            {
                "loss_recent": recent,
                "loss_latest": latest,
                "loss_min": low,
                "loss_min_iteration": low_at,
                "loss_factor": self.loss_factor,
            },
            advice,
        )


# --- the policy ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """The rules of one job.

    Attributes:
        budgets: rules that always apply (iteration and time budgets).
        rules: rules on the curves, tried in order; gated by `min_iterations` and burn_in.
        min_iterations: nothing but a budget stops before this iteration.
        evaluate_every: when the supervisor evaluates itself, score the saves at multiples of
            this; None when darknet's own `-map` output is used.
    """

    budgets: tuple[Rule, ...] = ()
    rules: tuple[Rule, ...] = (Diverged(), Overfit(), Plateau(), NotLearning())
    min_iterations: int = 0
    evaluate_every: int | None = None

    def decide(self, h: History, s: Schedule) -> Decision:
        for rule in self.budgets:
            stop = rule.check(h, s)
            if stop is not None:
                return stop
        gate = max(self.min_iterations, s.burn_in)
        if h.iteration >= gate:
            for rule in self.rules:
                stop = rule.check(h, s)
                if stop is not None:
                    return stop
        due = self.due_evaluation(h, s)
        if due is not None:
            return Evaluate(due, f"weights saved at iteration {due} (every {self.evaluate_every})")
        if h.iteration < gate:
            return Continue(f"before iteration {gate} (min_iterations / burn_in) nothing stops")
        return Continue()

    def due_evaluation(self, h: History, s: Schedule) -> int | None:
        """The newest save the supervisor should score, if it has not been scored yet."""
        if self.evaluate_every is None:
            return None
        for save in reversed(h.saves):
            it = save.iteration
            if it is None or it < s.burn_in or it % self.evaluate_every:
                continue
            return None if h.evaluated(it) else it
        return None


__all__ = [
    "Continue",
    "Decision",
    "Diverged",
    "Evaluate",
    "IterationBudget",
    "NotLearning",
    "Overfit",
    "Plateau",
    "Policy",
    "Rule",
    "Schedule",
    "Stop",
    "TargetMap",
    "TimeBudget",
]
