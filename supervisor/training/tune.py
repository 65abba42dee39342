"""`memory.tune` mid-run: a launch with plenty of GPU memory left lowers subdivisions. Pure.

A smaller `subdivisions` (a larger mini-batch, `batch` unchanged) trains the same schedule with
fewer, fuller GPU passes per iteration: faster where the memory allows. Before the first launch
the memory model only knows what earlier jobs showed (`memory_model.pick_subdivisions`); once a
launch has trained a little, its measured peak is the best evidence there is. When that peak at
mini-batch m, scaled by the model to the next smaller subdivisions (mini-batch ≈ 2m), fits under
(1 − headroom) × the GPU's total minus what other processes use, the runner relaunches from
darknet's next complete save with that value (`ending.classify_end` → `Relaunch(kind="tune")`).

Guards, each against a way tuning could cost more than it gains:
- not before `MIN_SAMPLES` sampler intervals and `MIN_ITERATIONS` iteration lines of the launch
  (the first iteration allocates cuDNN's workspace: before it the peak says little);
- never during a resize or darknet's `-map` (the peak then is not the steady training one);
  not with `random=1` (the next resize may be to 1.4× the size the peak was measured at), nor
  while darknet evaluates with `-map` at all (its second network is allocated only at each
  evaluation, which a sampler every few seconds may miss: a peak without it would predict
  too little, and the ladder's answer to an out-of-memory in `-map` is to drop `-map`);
- each value once (`tried`: values tuned to before, and values that ran out of memory — after
  an out-of-memory the ladder climbs back and tune never tries that value again), at most
  `MAX_TUNES` per job, and only while `memory.max_relaunches` has a relaunch left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from supervisor.training.memory import Phase
from supervisor.training.memory_model import KeyFacts, MemoryModel, gb, peak

MAX_TUNES = 2
MIN_ITERATIONS = 5
MIN_SAMPLES = 2


@dataclass(frozen=True, slots=True)
class GpuRoom:
    """One of the job's GPUs as last sampled in this launch."""

    index: int
    total_mib: float
    used_mib: float  # the whole device
    process_mib: float  # darknet's own share of it

    @property
    def others_mib(self) -> float:
        return max(0.0, self.used_mib - self.process_mib)


@dataclass(frozen=True, slots=True)
class TuneFacts:
    """What the decision needs of the current launch.

    Attributes:
        peak_mib: the launch's measured peak process memory (None: not sampled yet).
        gpus: each GPU of the job, sampled in this launch (each holds a whole network).
        ran_s, sample_every_s: seconds since the launch, and between GPU samples.
        iterations: iteration lines of this launch; phase: start, resize, -map or mid-run.
        tried: subdivisions values tuned to before, or that ran out of memory.
        tunes: tune relaunches so far; relaunches / max_relaunches: all relaunches, and the limit.
    """

    batch: int
    subdivisions: int
    random: bool
    map_on: bool
    phase: Phase
    iterations: int
    ran_s: float
    sample_every_s: float
    peak_mib: float | None
    gpus: Sequence[GpuRoom]
    headroom: float = 0.1
    tried: frozenset[int] = frozenset()
    tunes: int = 0
    relaunches: int = 0
    max_relaunches: int = 6


@dataclass(frozen=True, slots=True)
class TuneStep:
    """Relaunch with `subdivisions`, for `reason`; `numbers` are the figures behind it."""

    subdivisions: int
    reason: str
    numbers: dict[str, int | float]


def tune_target(batch: int, subdivisions: int) -> int | None:
    """The subdivisions below `subdivisions`: ÷2 where that keeps the images per iteration
    ((batch ÷ s) × s, as the ladder's `next_subdivisions` keeps it), else the nearest smaller
    value that does; None at 1 or where none does."""
    per_iteration = (batch // max(1, subdivisions)) * subdivisions
    keep = [d for d in range(1, subdivisions) if (batch // d) * d == per_iteration]
    if not keep:
        return None
    halved = [d for d in keep if 2 * d <= subdivisions]
    return halved[-1] if halved else keep[-1]


def ready(f: TuneFacts) -> bool:
    """The launch has trained long enough, steadily, for its peak to mean something."""
    return (
        not f.random
        and not f.map_on
        and f.phase == "mid_run"
        and f.iterations >= MIN_ITERATIONS
        and f.ran_s >= MIN_SAMPLES * f.sample_every_s
        and f.peak_mib is not None
        and f.peak_mib > 0
        and bool(f.gpus)
    )


def decide_tune(model: MemoryModel, key: KeyFacts, f: TuneFacts) -> TuneStep | None:
    """A lower subdivisions the model predicts fits on every GPU of the job, or None.

    `model` is what the store knows; the launch's measured peak at its mini-batch is added to it
    here, so the prediction scales from this very run. `key` is the launch's key (its size and
    -map), the mini-batch aside."""
    if f.tunes >= MAX_TUNES or f.relaunches >= f.max_relaunches or not ready(f):
        return None
    target = tune_target(f.batch, f.subdivisions)
    if target is None or target in f.tried:
        return None
    assert f.peak_mib is not None  # ready() checked it
    m, m2 = f.batch // f.subdivisions, f.batch // target
    total = min(g.total_mib for g in f.gpus)
    model = model.observe(peak(key.key(m), f.peak_mib, total_mib=total))
    pred = model.predict(key.key(m2))
    if pred is None or pred.lower_bound:
        return None  # only a predicted value, never a bound, lowers subdivisions
    # The GPU with the least room for darknet decides (each holds a whole copy of the network).
    g = min(f.gpus, key=lambda r: (1 - f.headroom) * r.total_mib - r.others_mib)
    limit = (1 - f.headroom) * g.total_mib - g.others_mib
    if pred.mib > limit:
        return None
    reason = (
        f"GPU {g.index} has room: {gb(g.used_mib)[:-3]} of {g.total_mib / 1024:.0f} GB used at "
        f"mini-batch {m}; the model predicts {gb(pred.mib)} at mini-batch {m2} (under "
        f"{100 * (1 - f.headroom):.0f} % of the GPU less {gb(g.others_mib)} of other "
        f"processes): relaunched with subdivisions={target} (batch still {f.batch}) for speed"
    )
    numbers: dict[str, int | float] = {
        "gpu": g.index,
        "gpu_used_mib": round(g.used_mib, 1),
        "gpu_total_mib": round(g.total_mib, 1),
        "peak_mib": round(f.peak_mib, 1),
        "mini_batch": m,
        "predicted_mib": round(pred.mib, 1),
        "limit_mib": round(limit, 1),
        "subdivisions": f.subdivisions,
        "batch": f.batch,
    }
    return TuneStep(target, reason, numbers)
