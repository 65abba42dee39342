"""Reading the curves like an expert: the seed's six training patterns, and advice on failures.

`diagnose(history, facts)` says which of the patterns of `when-to-stop-training.md` a run
shows — good training, overtraining, model not learning, corrupted dataset, low variance,
insufficient data — or, for a live run, that it is too early to say. The answer carries a
confidence, the evidence in numbers, the likely causes and what to do (our words, the seed's
substance). Pure: a function of the history and of what is known beside it (`DiagnosisFacts`:
the cfg's schedule, the split sizes, `trainsup check`'s findings); no I/O, no clock.

How it decides, in this order (each step is one small named rule below):
1. the loss blew up (NaN, or a spike far above its low): corrupted dataset;
2. too little signal — a tiny valid split, too few evaluations, a run too short: insufficient
   data (live: too early);
3. mAP near zero at every evaluation: model not learning;
4. below a high mAP, on a whole run, a loss that stalled after its first descent: corrupted
   dataset (part of the labels cannot be fitted);
5. mAP peaked and stays clearly lower (beyond its own noise) while the loss fell: overtraining;
6. a high best mAP: good training;
7. below that level: a plateau or a loss far lower than the mAP earns is low variance; still
   rising is good so far.
A log without mAP lines gets what its loss alone supports (blow-up, short, still falling,
levelled), and the evidence says so.

The numbers the rules compare against are `Thresholds` (each explained there). Confidence is
a plain scale, not a probability: a base per rule (how directly the seed's sentence is seen —
0.85 for mAP near zero, 0.3 for a loss read alone), raised by the number of evaluations and by
`trainsup check` findings that explain the pattern, lowered by findings that make it suspect.
The loss windows (100 iterations; "settled" at 1/8 of the run, "the end" its last tenth) are
shape, not tuning: they follow darknet's avg loss, an EMA over ~10 iterations.

`gpu_advice(kind)`: what to do about a CUDA/cuDNN failure (facts §6, DESIGN 5), used by the
runner, `analyze` and the notifications.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, get_args

from supervisor.training.events import GpuErrorKind
from supervisor.training.history import Evaluation, History

GPU_ADVICE: dict[GpuErrorKind, str] = {
    "out_of_memory": (
        "the GPU ran out of memory: raise subdivisions in [net] (batch stays, so the training "
        "is the same with a smaller mini-batch), then random=0, then drop -map (let trainsup "
        "evaluate), then a smaller width/height; resume from the newest weights without -clear"
    ),
    "cudnn": (
        "cuDNN failed, most often for lack of memory: try the out-of-memory remedies (raise "
        "subdivisions first); if it persists, check that the cuDNN and CUDA versions match"
    ),
    "no_device": (
        "darknet sees no CUDA device: check nvidia-smi, CUDA_VISIBLE_DEVICES and the driver, "
        "or use a CPU build"
    ),
    "cuda": (
        "a CUDA error ended the run: read the message above it; check the driver and the GPU "
        "(nvidia-smi), and resume from the newest weights"
    ),
}


def gpu_advice(kind: GpuErrorKind) -> str:
    return GPU_ADVICE[kind]


# --- the answer ---------------------------------------------------------------------------------

Pattern = Literal[
    "good",
    "overtraining",
    "not_learning",
    "corrupted",
    "low_variance",
    "insufficient_data",
    "too_early",
]
PATTERNS: tuple[Pattern, ...] = get_args(Pattern)
# The seed's names, as people read them.
PATTERN_TITLES: dict[Pattern, str] = {
    "good": "good training",
    "overtraining": "overtraining",
    "not_learning": "model not learning",
    "corrupted": "corrupted dataset",
    "low_variance": "low variance",
    "insufficient_data": "insufficient data",
    "too_early": "too early to tell",
}


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Which pattern the curves show, how sure, the numbers behind it, causes and advice."""

    pattern: Pattern
    confidence: float  # 0..1
    evidence: tuple[str, ...]
    causes: tuple[str, ...]
    advice: tuple[str, ...]

    def title(self) -> str:
        """Short, for a chart title or a one-line summary: `overtraining (confidence 0.80)`."""
        return f"{PATTERN_TITLES[self.pattern]} (confidence {self.confidence:.2f})"

    def to_json(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "confidence": round(self.confidence, 2),
            "evidence": list(self.evidence),
            "causes": list(self.causes),
            "advice": list(self.advice),
        }

    @classmethod
    def from_json(cls, j: Mapping[str, Any]) -> Diagnosis | None:
        """The diagnosis `to_json` wrote (report.json, a record); None for anything else."""
        pattern = j.get("pattern")
        if pattern not in PATTERNS:
            return None
        return cls(
            pattern,
            float(j.get("confidence") or 0.0),
            tuple(map(str, j.get("evidence") or ())),
            tuple(map(str, j.get("causes") or ())),
            tuple(map(str, j.get("advice") or ())),
        )

    def lines(self) -> list[str]:
        """As the reports print it: `analyze`, the end of `trainsup run`, `trainsup show`."""
        out = [f"diagnosis: {self.title()}"]
        out += [f"  evidence: {e}" for e in self.evidence]
        out += [f"  likely causes: {c}" for c in self.causes]
        out += [f"  what to do: {a}" for a in self.advice]
        return out


# `trainsup check` finding codes (supervisor/dataset/findings.py) that bear on a pattern. Names
# only: `training/` imports nothing of `dataset/`.
DUPLICATE_CODES = ("split_overlap_path", "split_overlap_content", "near_duplicate_across_splits")
CLASS_CODES = (
    "label_class_out_of_range",
    "names_count_mismatch",
    "cfg_classes_mismatch",
    "cfg_filters_mismatch",
    "class_missing_in_train",
)
BROKEN_DATA_CODES = (
    "image_corrupt",
    "jpeg_truncated",
    "image_empty",
    "image_missing",
    "label_missing",
    "label_columns",
    "label_class_not_integer",
    "label_not_a_number",
    "label_not_normalized",
    "label_negative",
    "box_too_small",
    "box_outside_image",
)
SMALL_VALID_CODES = ("valid_too_small", "valid_class_too_few", "data_valid_missing")


@dataclass(frozen=True, slots=True)
class DiagnosisFacts:
    """What is known beside the history; every field may be unknown (None / empty).

    Attributes:
        max_batches / burn_in: the cfg's [net] values (a replayed log without its cfg has none).
        valid_images / train_images: the sizes of the splits (from the .data lists).
        findings: `trainsup check` finding code → how many, when the check ran on the job.
    """

    max_batches: int | None = None
    burn_in: int | None = None
    valid_images: int | None = None
    train_images: int | None = None
    findings: Mapping[str, int] = field(default_factory=dict)

    def count(self, codes: Sequence[str]) -> int:
        return sum(self.findings.get(c, 0) for c in codes)


# --- thresholds: every number of the diagnosis, in one place ------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The numbers the rules compare against; mAP values are fractions.

    Attributes:
        min_valid_objects: fewer objects in the valid split (TP + FN of an evaluation, which
            darknet and trainsup's evaluator print) make mAP a coin: one detection more or less
            moves it by 2 points or more (the shared logs with 3–54 objects jump 10–40 points
            between evaluations; those with 100+ move 1–3).
        min_valid_images: the same when only the split's image count is known (facts).
        min_evaluations: fewer valid evaluations are no trend: overtraining needs a peak and
            evaluations after it, a plateau a before and an after.
        too_early_share: live, nothing but a blow-up or a tiny valid split is claimed before
            this share of the iterations after burn_in (when max_batches is known): early mAP is
            near zero in every run.
        no_map_min_iterations: without mAP, a log shorter than this shows only the first
            descent of the loss, nothing to read a pattern from.
        whole_run_start: a history that starts at or before this iteration shows the run's
            start, so the loss can be compared with where it settled after its first descent.
        not_learning_map: a best mAP below this at every evaluation is "near zero" (the seed's
            "mAP stays near zero"; the swapped-ids corpus runs stay at 0–3.4 %).
        overtraining_drop: the median of the evaluations after the best must be this far below
            it, and `overtraining_noise` times the evaluations' own spread (the median change
            between consecutive ones after the best) — log 04's 48 % peak is 3.9 points above
            the rest, but its evaluations swing 3.5 points from one to the next.
        overtraining_after: evaluations after the best needed to call its drop lasting.
        overtraining_loss_fall: the loss around the latest evaluation is at least this much
            (relative) lower than around the best: the seed's "while loss keeps going down".
        good_map: a best mAP at or above this is the seed's "stable high plateau" (the shared
            runs their authors kept sit at 83–99 %; the stalled ones at 25–67 %).
        plateau_gain: below `good_map`, the evaluations of the last third of the evaluated span
            (their median) must beat the best before them by this much, else mAP has levelled.
        spike_factor: a 100-iteration mean of avg loss this many times the lowest one before
            it (after the first descent) is a loss spike; the real logs' worst is 2× (a resume).
        nan_share: this share of non-finite iteration lines (or 3 in a row) is a blow-up.
        loss_stall: (whole runs) the avg loss fell less than this share from where it settled
            after its first descent (at 1/8 of the run) to the end: it stalled, as it does when
            part of the labels cannot be fitted (corpus `corrupted`: 26–43 %; the clean runs,
            good and not learning, 68–73 %; the real log 04 40 %, labelled low variance).
        fit_fall: (whole runs) the avg loss fell more than this share from there while mAP
            stays below `good_map`: the training set is learnt by heart and the valid set gains
            little (corpus `low_variance`: 82–88 %; good runs 68–73 %).
        loss_only_fall: without mAP, the latest quarter's loss at least this much lower than the
            quarter before it is "still falling".

    `bench/diagnose.py` tunes `loss_stall` and `fit_fall` leave-one-seed-out on the curve
    corpus and prints the ranges that score best; the defaults sit between the corpus's
    classes (the gaps above), inside those ranges.
    """

    min_valid_objects: int = 60
    min_valid_images: int = 20
    min_evaluations: int = 4
    too_early_share: float = 0.25
    no_map_min_iterations: int = 1000
    whole_run_start: int = 100
    not_learning_map: float = 0.05
    overtraining_drop: float = 0.03
    overtraining_noise: float = 2.0
    overtraining_after: int = 3
    overtraining_loss_fall: float = 0.03
    good_map: float = 0.70
    plateau_gain: float = 0.02
    spike_factor: float = 3.0
    nan_share: float = 0.01
    loss_stall: float = 0.45
    fit_fall: float = 0.77
    loss_only_fall: float = 0.05


THRESHOLDS = Thresholds()


# --- features of the history --------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{x * 100:.1f} %"


def pts(x: float) -> str:
    return f"{x * 100:.1f} pts"


def it_(n: int) -> str:
    """An iteration number as people read it: 3 400."""
    return f"{n:,}".replace(",", " ")


@dataclass(frozen=True, slots=True)
class Features:
    """What the rules look at, computed once per diagnosis."""

    h: History
    facts: DiagnosisFacts
    t: Thresholds
    live: bool
    evals: tuple[Evaluation, ...]  # the valid ones, in order
    valid_objects: int | None
    whole_run: bool

    @property
    def best(self) -> Evaluation | None:
        return self.h.best

    def loss_mean(self, first: int, last: int) -> float | None:
        return self.h.loss.mean(first, last)

    def settled_loss(self) -> tuple[int, float] | None:
        """The avg loss where the run settled after its first descent: around 1/8 of the run
        (after burn_in when known), as (iteration, mean over 100 iterations)."""
        h = self.h
        first = h.first_iteration
        if first is None:
            return None
        # 1/8 of the run, not of the history so far: early in a live run 1/8 of the history
        # is still inside the first descent.
        end = max(h.iteration, self.facts.max_batches or 0)
        at = max(first + (end - first) // 8, self.facts.burn_in or 0)
        m = self.loss_mean(at - 50, at + 50)
        return None if m is None else (at, m)

    def end_loss(self) -> tuple[int, float] | None:
        """The avg loss at the end: mean over the last tenth of the run (at least 100)."""
        h = self.h
        first = h.first_iteration
        if first is None:
            return None
        width = max(100, (h.iteration - first) // 10)
        m = self.loss_mean(h.iteration - width + 1, h.iteration)
        return None if m is None else (h.iteration, m)

    def loss_fall(self) -> tuple[float, tuple[int, float], tuple[int, float]] | None:
        """Relative fall of the avg loss from where it settled to the end (whole runs); None
        before half of max_batches (when known): a fall over part of the run is not the run's."""
        mb = self.facts.max_batches
        if mb and self.h.iteration < mb // 2:
            return None
        a, b = self.settled_loss(), self.end_loss()
        if a is None or b is None or a[1] <= 0 or b[0] - a[0] < 200:
            return None
        return 1 - b[1] / a[1], a, b

    def late_gain(self) -> tuple[float, float, float] | None:
        """(gain, median of the last third's evaluations, best before them)."""
        ev = self.evals
        if len(ev) < 2:
            return None
        cut = ev[-1].iteration - (ev[-1].iteration - ev[0].iteration) / 3
        late = [e.map for e in ev if e.iteration >= cut]
        early = [e.map for e in ev if e.iteration < cut]
        # A median of two is one noisy pair: early in a live run it called a climb a plateau.
        if len(late) < 3 or len(early) < 2:
            return None
        med = statistics.median(late)
        return med - max(early), med, max(early)

    def judged_from(self) -> int | None:
        """Live: the iteration before which only blow-ups and tiny splits are claimed."""
        mb = self.facts.max_batches
        if not mb:
            return None
        warm = min(self.facts.burn_in or 0, mb)
        return warm + round(self.t.too_early_share * (mb - warm))


def _features(h: History, facts: DiagnosisFacts, t: Thresholds, live: bool) -> Features:
    # By iteration: a resumed run's repeated stretch can put an evaluation after a later one.
    evals = tuple(sorted((e for e in h.evaluations if e.valid), key=lambda e: e.iteration))
    objects: int | None = None
    for e in reversed(evals):
        r = e.result
        if r.tp is not None and r.fn is not None:
            objects = r.tp + r.fn  # every ground-truth box is either found or missed
            break
    first = h.first_iteration
    whole = first is not None and first <= t.whole_run_start
    return Features(h, facts, t, live, evals, objects, whole)


# --- the rules ------------------------------------------------------------------------------------


class Rule(Protocol):
    name: ClassVar[str]

    def check(self, f: Features) -> Diagnosis | None: ...


SEED_CHECK = "run `trainsup check` on the job's .data file"


@dataclass(frozen=True, slots=True)
class LossBlowUp:
    """Corrupted dataset: unstable loss spikes and erratic mAP.

    Here: NaN/inf in the avg loss (3 lines in a row, or `nan_share` of them), or a
    100-iteration mean of the avg loss `spike_factor` times the lowest one before it.
    """

    name: ClassVar[str] = "loss_blow_up"

    def check(self, f: Features) -> Diagnosis | None:
        h, t = f.h, f.t
        evidence: list[str] = []
        lines = max(1, h.iteration_lines)
        if h.nan_streak >= 3 or (h.nan_lines and h.nan_lines / lines >= t.nan_share):
            evidence.append(
                f"avg loss was NaN/inf on {h.nan_lines} of {h.iteration_lines} iteration lines"
                + (f" ({h.nan_streak} in a row at the end)" if h.nan_streak else "")
            )
        spike = _spike(h, t.spike_factor)
        if spike is not None:
            at, peak, low, low_at = spike
            evidence.append(
                f"avg loss jumped to {peak:.3g} around {it_(at)}, {peak / low:.1f}× its low of "
                f"{low:.3g} at {it_(low_at)}"
            )
        if not evidence:
            return None
        conf = 0.8 if len(evidence) == 2 else 0.65
        broken = f.facts.count(BROKEN_DATA_CODES)
        if broken:
            evidence.append(f"`trainsup check` found {broken} broken images or labels")
            conf = min(0.95, conf + 0.15)
        return Diagnosis(
            "corrupted",
            conf,
            tuple(evidence),
            (
                "corrupted image files or invalid labels (out-of-range or non-normalized boxes)",
                "mixed sources or resolutions, images that contain objects but have empty labels",
                "a learning rate too high for the batch (a blow-up without bad data)",
            ),
            (
                f"{SEED_CHECK}; remove corrupted images and fix the label format",
                "re-export a clean set; if the data is clean, lower the learning rate or "
                "lengthen burn_in and resume from the best weights",
            ),
        )


def _spike(h: History, factor: float) -> tuple[int, float, float, int] | None:
    """The worst 100-iteration mean of avg loss against the lowest mean before it, past the
    first descent (the first quarter of the run), when it is `factor` times above it."""
    first = h.first_iteration
    if first is None or h.iteration - first < 800:
        return None
    start = first + (h.iteration - first) // 4
    low: tuple[float, int] | None = None
    worst: tuple[int, float, float, int] | None = None
    for a in range(start, h.iteration - 99, 50):
        m = h.loss.mean(a, a + 99)
        if m is None:
            continue
        if (
            low is not None
            and m >= factor * low[0]
            and (worst is None or m / low[0] > worst[1] / worst[2])
        ):
            worst = (a + 99, m, low[0], low[1])
        if low is None or m < low[0]:
            low = (m, a + 99)
    return worst


_INSUFFICIENT_CAUSES = (
    "too few images, or a validation split too small to measure mAP",
    "a run too short to show its trend",
)
_INSUFFICIENT_ADVICE = (
    "train longer (darknet's rule: max_batches = classes × 2 000, at least 6 000)",
    "add data; make the validation split larger (hundreds of objects) and of real variety",
)
# When the valid split is what is too small, enlarging it comes first: a longer run measured on
# it is no better measured.
_SMALL_SPLIT_ADVICE = (_INSUFFICIENT_ADVICE[1], _INSUFFICIENT_ADVICE[0])


@dataclass(frozen=True, slots=True)
class TooLittleSignal:
    """Insufficient data: too few points / too short run (noisy early metrics).

    You don't have enough signal yet to trust the trend: a valid split of fewer than
    `min_valid_objects` objects (or `min_valid_images` images), fewer than `min_evaluations`
    valid evaluations, or a check that found the split too small. Live, a run before
    `too_early_share` of its iterations, or without enough evaluations yet, is `too_early`.
    """

    name: ClassVar[str] = "too_little_signal"

    def check(self, f: Features) -> Diagnosis | None:
        t, facts = f.t, f.facts
        evidence: list[str] = []
        if f.valid_objects is not None and f.valid_objects < t.min_valid_objects:
            evidence.append(
                f"the valid split holds {f.valid_objects} objects (fewer than "
                f"{t.min_valid_objects}): one detection more or less moves mAP by about "
                f"{100 / max(1, f.valid_objects):.0f} points"
            )
        elif facts.valid_images is not None and facts.valid_images < t.min_valid_images:
            evidence.append(
                f"the valid split has {facts.valid_images} images (fewer than {t.min_valid_images})"
            )
        small = facts.count(SMALL_VALID_CODES)
        if small and not evidence:
            evidence.append("`trainsup check` found the validation split too small")
        if evidence:
            spread = _spread(f.evals)
            if spread is not None and len(f.evals) >= 3:
                evidence.append(
                    f"consecutive evaluations differ by {pts(spread)} (median) over "
                    f"{len(f.evals)} evaluations"
                )
            return Diagnosis(
                "insufficient_data", 0.8, tuple(evidence), _INSUFFICIENT_CAUSES,
                _SMALL_SPLIT_ADVICE,
            )  # fmt: skip
        judged = f.judged_from()
        if f.live and judged is not None and f.h.iteration < judged:
            return _too_early(
                f"iteration {it_(f.h.iteration)} of {it_(facts.max_batches or 0)}: nothing "
                f"but a blow-up is claimed before {it_(judged)} ({t.too_early_share:.0%} of "
                "the run after burn_in)",
                f,
            )
        n = len(f.evals)
        if n == 0:
            return None  # the loss-only rule reads a log without mAP
        if n < t.min_evaluations:
            what = (
                f"{n} valid evaluation{'s' if n > 1 else ''} {'so far' if f.live else 'in all'} ("
                + ", ".join(f"{pct(e.map)} at {it_(e.iteration)}" for e in f.evals)
                + f"): a trend needs at least {t.min_evaluations}"
            )
            if f.live:
                return _too_early(what, f)
            return Diagnosis(
                "insufficient_data", 0.6, (what,), _INSUFFICIENT_CAUSES, _INSUFFICIENT_ADVICE
            )
        return None


def _too_early(why: str, f: Features) -> Diagnosis:
    ev = [why]
    if f.best is not None:
        ev.append(f"best mAP so far {pct(f.best.map)} at {it_(f.best.iteration)}")
    return Diagnosis(
        "too_early",
        1.0,
        tuple(ev),
        (),
        ("let it train: the diagnosis updates at each evaluation",),
    )


def _spread(evals: Sequence[Evaluation]) -> float | None:
    """Median absolute change between consecutive evaluations."""
    if len(evals) < 2:
        return None
    return statistics.median(abs(b.map - a.map) for a, b in itertools.pairwise(evals))


@dataclass(frozen=True, slots=True)
class NearZeroMap:
    """Model not learning: loss stays high/flat, mAP stays near zero.

    Every valid evaluation is below `not_learning_map`. The loss need not be flat: the
    corpus's swapped-class-ids runs fall as a good run's does while mAP stays at 0–3 %,
    because the net learns the labels the valid set contradicts.
    """

    name: ClassVar[str] = "near_zero_map"

    def check(self, f: Features) -> Diagnosis | None:
        b = f.best
        if b is None or b.map >= f.t.not_learning_map:
            return None
        ev = [
            f"mAP stayed below {pct(f.t.not_learning_map)} at all {len(f.evals)} evaluations "
            f"(best {pct(b.map)} at {it_(b.iteration)}, latest {pct(f.evals[-1].map)} at "
            f"{it_(f.evals[-1].iteration)})"
        ]
        fall = f.loss_fall()
        if fall is not None:
            share, (a_it, a), (_, z) = fall
            ev.append(
                f"avg loss went from {a:.3g} ({it_(a_it)}) to {z:.3g} at the end"
                + (": it learns something the valid labels contradict" if share > 0.3 else "")
            )
        conf = 0.85
        wrong = f.facts.count(CLASS_CODES)
        if wrong:
            ev.append(
                f"`trainsup check` found {wrong} class problems (class id ≥ classes, "
                "classes/filters/names mismatch): that explains it"
            )
            conf = 0.95
        return Diagnosis(
            "not_learning",
            conf,
            tuple(ev),
            (
                "wrong labels or classes: label class ids that do not match the .names order",
                "a broken annotation format, or an incorrect cfg (classes=, filters=)",
            ),
            (
                "verify the .names order against the label ids; spot-check 20–50 label files "
                "(YOLO: class x_center y_center width height, normalized)",
                f"confirm classes= and filters=(classes+5)×3 in the cfg; {SEED_CHECK}",
            ),
        )


@dataclass(frozen=True, slots=True)
class StalledLoss:
    """Corrupted dataset: unstable loss spikes and erratic mAP.

    Here the loss side of it, on a whole run below `good_map`: after its first descent the avg
    loss fell less than `loss_stall` to the end — part of the labels cannot be fitted (random
    or wrong boxes, objects left unlabelled), which also makes the evaluations swing. Tried
    before `PeakThenDrop`: with a loss that does not keep improving, a peak and a drop are the
    swings, not memorization (the corpus's generous corrupted run peaks at 46.5 % on one
    evaluation between 31.9 and 40.6 %).
    """

    name: ClassVar[str] = "stalled_loss"

    def check(self, f: Features) -> Diagnosis | None:
        b, t = f.best, f.t
        if b is None or b.map >= t.good_map or not f.whole_run:
            return None
        fall = f.loss_fall()
        if fall is None or fall[0] >= t.loss_stall:
            return None
        share, (a_it, a), (_, z) = fall
        ev = [
            f"avg loss stalled: {a:.3g} at {it_(a_it)} after the first descent, {z:.3g} at "
            f"the end ({share:.0%} lower; below {t.loss_stall:.0%})",
            f"while mAP reaches only {pct(b.map)} (best, at {it_(b.iteration)})",
        ]
        spread = _spread(f.evals)
        if spread is not None:
            ev.append(f"consecutive evaluations differ by {pts(spread)} (median)")
        conf = 0.6
        broken = f.facts.count(BROKEN_DATA_CODES)
        if broken:
            ev.append(f"`trainsup check` found {broken} broken images or labels")
            conf = 0.85
        return Diagnosis(
            "corrupted",
            conf,
            tuple(ev),
            (
                "invalid or random labels the net cannot fit, images whose objects are not "
                "labelled (empty-but-contains-objects)",
                "corrupted image files, mixed sources or resolutions",
            ),
            (
                f"{SEED_CHECK}; spot-check labels against their images",
                "remove corrupted data, fix the label format, re-export a clean set",
            ),
        )


@dataclass(frozen=True, slots=True)
class PeakThenDrop:
    """Overtraining: loss keeps improving, but mAP peaks (even very high) and then degrades.

    The peak is the best pair of consecutive evaluations (their mean): a lone high evaluation
    among level ones is a swing, not a peak (the corpus's generous low-variance run: 25.2 %
    once, between 21.7 and 17.6, and ~22 % before and after; a lone evaluation more than
    2 × `overtraining_drop` above the rest still makes a peak). At least `overtraining_after`
    evaluations after the pair; their median is at least `overtraining_drop` below the pair's
    mean and `overtraining_noise` times their own spread; the avg loss around the latest is
    `overtraining_loss_fall` lower than around the peak.
    """

    name: ClassVar[str] = "peak_then_drop"

    def check(self, f: Features) -> Diagnosis | None:
        t, ev_ = f.t, f.evals
        if len(ev_) < 2:
            return None
        # The peak held over two consecutive evaluations (their mean; the earliest on ties):
        # a lone high evaluation among level ones is a swing, not a peak.
        k = max(range(len(ev_) - 1), key=lambda i: (ev_[i].map + ev_[i + 1].map, -i))
        b = max(ev_[k], ev_[k + 1], key=lambda e: e.map)
        held = (ev_[k].map + ev_[k + 1].map) / 2
        after = list(ev_[k + 2 :])
        if len(after) < t.overtraining_after:
            return None
        med = statistics.median(e.map for e in after)
        drop = held - med
        spread = _spread(after) or 0.0
        if drop < t.overtraining_drop or drop < t.overtraining_noise * spread:
            return None
        then, now = b.avg_loss, after[-1].avg_loss
        if then is None or now is None or now > then * (1 - t.overtraining_loss_fall):
            return None
        last = after[-1]
        ev = [
            f"mAP peaked at {pct(b.map)} at {it_(b.iteration)} and is {pts(b.map - last.map)} "
            f"lower at {it_(last.iteration)} while avg loss fell from {then:.3g} to {now:.3g}",
            f"the {len(after)} evaluations after the peak ({pct(held)} with its neighbour) have "
            f"a median of {pct(med)}, {drop / spread:.1f}× their own spread ({pts(spread)}) "
            "below it"
            if spread
            else f"the {len(after)} evaluations after the peak ({pct(held)} with its "
            f"neighbour) have a median of {pct(med)}",
        ]
        conf = min(
            0.9, 0.5 + 0.1 * len(after) / 2 + (0.1 if drop >= 2 * t.overtraining_drop else 0)
        )
        dup = f.facts.count(DUPLICATE_CODES)
        if dup:
            ev.append(f"`trainsup check` found {dup} duplicates between train and valid")
            conf = min(0.95, conf + 0.1)
        if f.facts.train_images is not None and f.facts.train_images < 100:
            ev.append(f"only {f.facts.train_images} training images")
        return Diagnosis(
            "overtraining",
            conf,
            tuple(ev),
            (
                "not enough variety in the training set (it is being memorized)",
                "a validation split too small, or duplicates and near-duplicates across splits",
            ),
            (
                f"stop and keep the best weights (iteration {it_(b.iteration)}, {pct(b.map)})",
                "add variety (new days, lighting, backgrounds) and negatives; enlarge the "
                "validation split; remove duplicates between train and valid "
                "(`trainsup check` finds them)",
            ),
        )


_LOW_VARIANCE_CAUSES = (
    "a repetitive dataset: the same background, angle or light in most images",
    "missing negatives and missing edge cases",
)
_LOW_VARIANCE_ADVICE = (
    "add variety (angles, backgrounds, lighting) and negatives; capture hard cases on purpose",
    "more iterations will not help much: the model has taken what the data offers",
)


def _good(f: Features, why: Sequence[str], conf: float) -> Diagnosis:
    ev = list(why)
    advice = [
        "stop when mAP plateaus; validate the best weights on real footage or a golden set",
        "deploy the best weights",
    ]
    dup = f.facts.count(DUPLICATE_CODES)
    b = f.best
    if dup:
        ev.append(
            f"but `trainsup check` found {dup} duplicates between train and valid: a great mAP "
            "may be partly memorized pictures"
        )
        conf *= 0.6
        advice.insert(0, "remove the duplicates between train and valid and re-measure")
    elif b is not None and b.map >= 0.95 and (f.valid_objects or 10**9) < 300:
        ev.append(
            f"a very high mAP on a small valid split ({f.valid_objects} objects) is a common "
            "overfitting trap"
        )
        conf *= 0.8
    return Diagnosis(
        "good",
        conf,
        tuple(ev),
        ("consistent labels and enough variety",),
        tuple(advice),
    )


@dataclass(frozen=True, slots=True)
class HighLevel:
    """Good training: steady learning and a stable high plateau.

    The best mAP is at least `good_map` (what remains after the rules above).
    """

    name: ClassVar[str] = "high_level"

    def check(self, f: Features) -> Diagnosis | None:
        b = f.best
        if b is None or b.map < f.t.good_map:
            return None
        g = f.late_gain()
        ev = [f"best mAP {pct(b.map)} at {it_(b.iteration)} over {len(f.evals)} evaluations"]
        if g is not None:
            gain, med, before = g
            ev.append(
                f"still rising: the last third's median {pct(med)} is {pts(gain)} above the "
                f"best before it"
                if gain >= f.t.plateau_gain
                else f"a plateau: the last third's median {pct(med)} is not "
                f"{pts(f.t.plateau_gain)} above the best before it ({pct(before)})"
            )
        ev.append(_loss_words(f))
        conf = min(0.9, 0.55 + 0.05 * len(f.evals) + (b.map - f.t.good_map))
        return _good(f, ev, conf)


@dataclass(frozen=True, slots=True)
class LowLevel:
    """Low variance: loss plateaus and mAP barely improves (below `good_map`).

    The last third's median gains less than `plateau_gain` over the best before it, or
    (whole runs) the loss fell more than `fit_fall` while mAP stayed low (the train set learnt
    by heart). Otherwise mAP is still rising: good so far for a finished run, too early for a
    live one — or, with too few evaluations in the last third to tell, insufficient data. (A
    stalled loss below this level is `StalledLoss`'s, tried before.)
    """

    name: ClassVar[str] = "low_level"

    def check(self, f: Features) -> Diagnosis | None:
        b, t = f.best, f.t
        if b is None:
            return None
        g = f.late_gain()
        fall = f.loss_fall() if f.whole_run else None
        level = f"best mAP {pct(b.map)} at {it_(b.iteration)} (below {pct(t.good_map)})"
        plateau = g is not None and g[0] < t.plateau_gain
        if plateau:
            assert g is not None
            _, med, before = g
            ev = [
                f"mAP levelled: the last third's median {pct(med)} is not "
                f"{pts(t.plateau_gain)} above the best before it ({pct(before)})",
                level,
                _loss_words(f),
            ]
            return Diagnosis(
                "low_variance", min(0.85, 0.5 + 0.04 * len(f.evals)), tuple(ev),
                _LOW_VARIANCE_CAUSES, _LOW_VARIANCE_ADVICE,
            )  # fmt: skip
        if fall is not None and fall[0] >= t.fit_fall:
            share, (a_it, a), (_, z) = fall
            ev = [
                f"avg loss fell {share:.0%} after the first descent ({a:.3g} at {it_(a_it)} → "
                f"{z:.3g}) while mAP reached only {pct(b.map)}: the training images are learnt "
                "far better than the valid set is",
                level,
            ]
            if f.facts.train_images is not None and f.facts.train_images < 100:
                ev.append(f"only {f.facts.train_images} training images")
            return Diagnosis(
                "low_variance", 0.6, tuple(ev), _LOW_VARIANCE_CAUSES, _LOW_VARIANCE_ADVICE
            )
        if g is None:
            # Too few evaluations in the last third to tell a plateau from a climb.
            why = (
                f"{level}, over {len(f.evals)} evaluations: too few in the last third of them "
                "to tell a plateau from a climb"
            )
            if f.live:
                return _too_early(why, f)
            return Diagnosis(
                "insufficient_data", 0.5, (why, _loss_words(f)), _INSUFFICIENT_CAUSES,
                _INSUFFICIENT_ADVICE,
            )  # fmt: skip
        if f.live:
            # Still climbing below the high level: where it levels decides between good and
            # low variance, and a live run has not shown that yet.
            return _too_early(
                f"mAP is still rising at {pct(b.map)}: the level it reaches decides", f
            )
        ev = [
            level,
            f"still rising: the last third's median {pct(g[1])} is {pts(g[0])} above the best "
            "before it — it may gain more with a longer run",
            _loss_words(f),
        ]
        return _good(f, ev, 0.45)


def _loss_words(f: Features) -> str:
    h = f.h
    first = h.first_iteration
    if first is None or h.last is None:
        return "no iteration lines"
    a = f.loss_mean(first, first + 99)
    z = f.end_loss()
    if a is None or z is None:
        return "avg loss not finite"
    return f"avg loss {a:.3g} at {it_(first)} → {z[1]:.3g} at {it_(h.iteration)}"


@dataclass(frozen=True, slots=True)
class LossOnly:
    """A log without mAP: what its loss alone supports (the evidence says so).

    Shorter than `no_map_min_iterations` (or live before `too_early_share`): insufficient data
    (too early). A loss still falling by `loss_only_fall` from one quarter of the run to the
    next: good so far. A levelled loss: insufficient data — without mAP a plateau cannot be
    told from low variance or a good end.
    """

    name: ClassVar[str] = "loss_only"

    def check(self, f: Features) -> Diagnosis | None:
        h, t = f.h, f.t
        if f.evals:
            return None
        none = (
            f"no valid mAP among {len(h.evaluations)} evaluations"
            if h.evaluations
            else "no mAP evaluation"
        )
        note = f"{none}: this reads the loss alone (train with -map, or let trainsup evaluate)"
        first = h.first_iteration
        if first is None or h.last is None:
            why = "no iteration lines: nothing to read a pattern from"
            if f.live:
                return _too_early(why, f)
            return Diagnosis(
                "insufficient_data", 0.9, (why,), ("the run did not start",),
                ("read the log for the error that ended it",),
            )  # fmt: skip
        span = h.iteration - first
        if span < t.no_map_min_iterations:
            why = (
                f"the loss covers iterations {it_(first)}–{it_(h.iteration)} (fewer than "
                f"{it_(t.no_map_min_iterations)}): only the first descent of the loss"
            )
            if f.live:
                return _too_early(why, f)
            return Diagnosis(
                "insufficient_data", 0.7, (why, note), _INSUFFICIENT_CAUSES, _INSUFFICIENT_ADVICE
            )
        q = span // 4
        prev = f.loss_mean(h.iteration - 2 * q + 1, h.iteration - q)
        last = f.loss_mean(h.iteration - q + 1, h.iteration)
        if prev is None or last is None or prev <= 0:
            return None
        fall = 1 - last / prev
        words = (
            f"avg loss {prev:.3g} over {it_(h.iteration - 2 * q + 1)}–{it_(h.iteration - q)} → "
            f"{last:.3g} over the last quarter ({fall:.0%} lower)"
        )
        if fall >= t.loss_only_fall:
            return _good(f, (words + ": still learning", note), 0.3)
        return Diagnosis(
            "insufficient_data",
            0.4,
            (words + ": levelled — without mAP a plateau cannot be told from low variance", note),
            ("no validation mAP during training",),
            (
                "evaluate the saved weights (`trainsup evaluate`) or train with -map to read "
                "the pattern",
            ),
        )


RULES: tuple[Rule, ...] = (
    LossBlowUp(),
    TooLittleSignal(),
    LossOnly(),
    NearZeroMap(),
    StalledLoss(),
    PeakThenDrop(),
    HighLevel(),
    LowLevel(),
)


def diagnose(
    h: History,
    facts: DiagnosisFacts | None = None,
    *,
    live: bool = False,
    thresholds: Thresholds = THRESHOLDS,
) -> Diagnosis:
    """The pattern the history shows (module docstring for the order of the rules).

    `live`: the run is still going, so too little evidence is `too_early`, not a verdict.
    """
    f = _features(h, facts or DiagnosisFacts(), thresholds, live)
    for rule in RULES:
        d = rule.check(f)
        if d is not None:
            return d
    # Unreachable with the rules above (LowLevel answers whenever there is a best mAP, and
    # LossOnly when there is none), kept so that the function always answers.
    return Diagnosis("insufficient_data", 0.3, ("nothing to read",), (), ())


__all__ = [
    "PATTERNS",
    "RULES",
    "THRESHOLDS",
    "Diagnosis",
    "DiagnosisFacts",
    "Pattern",
    "Thresholds",
    "diagnose",
    "gpu_advice",
]
