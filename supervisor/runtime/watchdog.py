"""What the current launch of darknet is doing — starting, just resized, evaluating, training —
and whether it has hung.

Two small pieces the runner feeds with every event (and the parser's `evaluating` flag), kept
out of the runner's loop (DESIGN "Decisions" 9):

- `LaunchState` answers *when* an out-of-memory error came (`OomContext`): before the launch's
  first iteration, right after a `Resizing` (random=1), inside darknet's `-map` block, or
  mid-run; the memory ladder picks its first step by it (`training/memory.py`).
- `StallWatchdog`: darknet sometimes stops printing without exiting (a known CUDA failure: a
  kernel that never returns, a driver reset). No new iteration line for max(k × the median
  seconds per iteration, floor) means hung. Before the launch's first iteration darknet builds
  the network and loads weights (and pjreddie's block-buffered stdout holds its first ~50
  iterations): only a much longer silence, `startup`, means hung there. It waits while an mAP
  evaluation runs (`-map` takes as long as the valid set needs); the clock restarts after.

No I/O and no clock of their own: times come in as arguments (monotonic seconds).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass

from supervisor.training.events import Event, Iteration, MapResult, Resized
from supervisor.training.memory import GpuUse, OomContext, Phase, fmt_int

# Defaults of RunnerConfig: a healthy darknet prints an iteration every few seconds even on
# large inputs; 20 × the median tolerates slow passes (a resize, a save, a busy disk), and the
# 5 min floor covers what the median cannot see (the first iterations after a resize).
STALL_K = 20.0
STALL_FLOOR_S = 300.0
# Before the first iteration line: a big network on a slow GPU (10 s per iteration) shows its
# first pjreddie burst after ~50 iterations; half an hour is far beyond any healthy start.
STALL_STARTUP_S = 1800.0


class LaunchState:
    """The current launch's phase, from its events."""

    def __init__(self) -> None:
        self.launched()

    def launched(self) -> None:
        self.iterations = 0
        self.resized_to: tuple[int, int] | None = None  # a resize since the last iteration
        self.evaluating = False

    def on_event(self, ev: Event, *, evaluating: bool) -> None:
        self.evaluating = evaluating
        if isinstance(ev, Iteration):
            self.iterations += 1
            self.resized_to = None
        elif isinstance(ev, Resized) and ev.width and ev.height:
            self.resized_to = (ev.width, ev.height)
        elif isinstance(ev, MapResult):
            self.evaluating = False

    @property
    def phase(self) -> Phase:
        # The most specific first: the -map block and a resize can both come before the
        # launch's first iteration (AlexeyAB resizes to its largest size at start).
        if self.evaluating:
            return "map"
        if self.resized_to is not None:
            return "resize"
        if self.iterations == 0:
            return "start"
        return "mid_run"

    def oom_context(self, iteration: int, gpu: GpuUse | None = None) -> OomContext:
        phase = self.phase
        size = self.resized_to if phase == "resize" else None
        return OomContext(phase, iteration, size, gpu)


@dataclass
class StallWatchdog:
    """Is darknet hung? See the module docstring.

    Attributes:
        k: the limit in multiples of the median seconds per iteration.
        floor: the limit is never below this many seconds.
        startup: the limit before the launch's first iteration line, in seconds.
    """

    k: float = STALL_K
    floor: float = STALL_FLOOR_S
    startup: float = STALL_STARTUP_S

    def __post_init__(self) -> None:
        # Seconds per iteration between reads (lines arrive in bursts: a burst's iterations
        # share one read time, so per-read differences are what measures darknet's pace).
        self._per_iteration: deque[float] = deque(maxlen=200)
        self._last: tuple[float, int] | None = None
        self._started: float | None = None  # the first check of this launch, before iterations
        # The hang `check` last put in words, as numbers: seconds silent, and whether no
        # iteration line came since the launch (for records: a message says it its own way).
        self.silence: tuple[float, bool] | None = None

    def launched(self) -> None:
        """A new launch: only the startup limit until it prints its first iteration."""
        self._last = None
        self._started = None

    def on_iteration(self, now: float, iteration: int) -> None:
        if self._last is not None:
            t, i = self._last
            if iteration > i and now > t:
                self._per_iteration.append((now - t) / (iteration - i))
            elif now <= t and iteration > i:
                self._last = (t, iteration)  # the same burst: keep the burst's first time
                return
        self._last = (now, iteration)

    def limit(self) -> float:
        if not self._per_iteration:
            return self.floor
        return max(self.k * statistics.median(self._per_iteration), self.floor)

    def check(self, now: float, *, busy: bool) -> str | None:
        """Words for the hang, or None. `busy`: darknet is evaluating (or the runner waits for
        another reason): the silence does not count, the clock restarts when it ends."""
        if self._last is None:
            return self._check_startup(now, busy=busy)
        t, i = self._last
        if busy:
            self._last = (now, i)
            return None
        silent = now - t
        limit = self.limit()
        if silent <= limit:
            return None
        self.silence = (silent, False)
        median = statistics.median(self._per_iteration) if self._per_iteration else None
        pace = f"{self.k:g} × the median {median:.3g} s per iteration" if median else "no pace yet"
        return (
            f"no iteration line for {_s(silent)} after iteration {fmt_int(i)} (limit "
            f"{_s(limit)}: the larger of {pace} and {self.floor:g} s)"
        )

    def _check_startup(self, now: float, *, busy: bool) -> str | None:
        if self._started is None or busy:
            self._started = now
            return None
        silent = now - self._started
        if silent <= self.startup:
            return None
        self.silence = (silent, True)
        return (
            f"no iteration line in the {_s(silent)} since the launch (the startup limit is "
            f"{self.startup:g} s: darknet may be stuck initialising the GPU or loading data)"
        )


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
