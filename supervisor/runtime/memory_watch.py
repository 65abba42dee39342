"""A job's GPU memory, for the runner: the sampler, the memory model before the first launch, and
what each launch taught the model. Kept out of the runner's loop (DESIGN "Decisions" 9).

- `GpuSampler` (`runtime/gpu_sampler.py`) runs beside the runner and publishes `GpuSample`
  records; this module listens to them for each launch's peak (into `report.json`).
- Before the first launch the model (`training/memory_model.py`, kept by
  `runtime/memory_store.py`) picks `subdivisions` for the job's GPU as it is now
  (`pick_for`): a cfg that ran out of memory on this GPU model before starts where it fitted,
  and says why.
- After each launch it is told what happened: the launch's peak, when it ran without running
  out of memory; or an out-of-memory with the free memory at the launch's start (a lower
  bound of the need). Saved at once, so a crash of the supervisor keeps what was learnt.
- With `memory.tune`, while a launch trains (`tune_step`): its sampled peak and the GPU's
  room, for the pure decision whether a lower subdivisions fits (`training/tune.py`); which
  values were tuned to or ran out of memory, so none is tried twice. That set outlives the
  supervisor: a tune is the runner's `TuneDecided` record, an out-of-memory a `TuneTried`
  record published here, both in `events.jsonl`; `adopt.restore` reads them back
  (`TuneMemory`) and `restore_tune` takes them, so a supervisor that attaches again neither
  retries a value nor tunes past `MAX_TUNES`.

Nothing here may stop a training: a GPU that cannot be read, a model file that cannot be
written, is a warning in the log and the job goes on as without a model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from supervisor.darknet.cfg import Cfg
from supervisor.runtime.bus import Record
from supervisor.runtime.gpu import GpuBackend, NoGpu, gpu_backend
from supervisor.runtime.gpu_sampler import GpuSampler
from supervisor.runtime.memory_store import MemoryStore, launch_facts, pick_for
from supervisor.training.memory import GpuUse, OomContext, Phase
from supervisor.training.memory_model import KeyFacts, Pick, oom, peak
from supervisor.training.tune import GpuRoom, TuneFacts, TuneStep, decide_tune, ready

log = structlog.get_logger("trainsup.memory")

# The record of a value `memory.tune` must never tune to again, other than a tune itself (the
# runner's `TuneDecided`): {subdivisions, why: "out_of_memory", launch}.
TUNE_TRIED = "TuneTried"


@dataclass(slots=True)
class TuneMemory:
    """What `memory.tune` remembers of a job, rebuilt from its records (`adopt.restore`).

    Attributes:
        tried: subdivisions values tuned to, or that ran out of memory.
        tunes: tune decisions so far (each counts towards `MAX_TUNES`, taken or not).
    """

    tried: set[int] = field(default_factory=set)
    tunes: int = 0

    def on_record(self, rec: Record) -> None:
        kind = rec.get("type")
        if kind not in ("TuneDecided", TUNE_TRIED):
            return
        s = rec.get("subdivisions")
        if isinstance(s, int) and not isinstance(s, bool):
            self.tried.add(s)
        if kind == "TuneDecided":
            self.tunes += 1


@dataclass(frozen=True, slots=True)
class _Launched:
    number: int
    facts: KeyFacts
    mini_batch: int
    subdivisions: int
    free_mib: float | None
    total_mib: float | None


class JobMemory:
    """One job's GPU memory; `for_job` gives None for a CPU job or where no GPU can be read."""

    def __init__(
        self,
        backend: GpuBackend,
        store: MemoryStore,
        gpus: Sequence[int],
        flavour: str,
        publish: Callable[[Record], None],
        pid_getter: Callable[[], int | None],
        launch_getter: Callable[[], int],
        *,
        headroom: float = 0.1,
        tune: bool = False,
        every_s: float = 10.0,
    ) -> None:
        self.backend, self.store, self.publish = backend, store, publish
        self.gpus, self.flavour = list(gpus), flavour
        self.headroom, self.tune = headroom, tune
        # peak_step 0: every new peak is published, so the records hold each launch's exact
        # peak (to the sampling) for report.json and the model.
        self.sampler = GpuSampler(
            backend,
            publish,
            pid_getter,
            self.gpus,
            every_s,
            launch_getter=launch_getter,
            peak_step_mib=0.0,
        )
        self.peaks: dict[int, float] = {}  # launch number → its peak MiB on one GPU
        self._current: _Launched | None = None
        self.every_s = every_s
        # memory.tune: values tuned to or that ran out of memory (never tuned to again).
        self.tried: set[int] = set()
        self.tunes = 0
        self._tune_checked = 0.0

    @classmethod
    def for_job(
        cls,
        gpus: Sequence[int],
        flavour: str,
        publish: Callable[[Record], None],
        pid_getter: Callable[[], int | None],
        launch_getter: Callable[[], int],
        *,
        store_path: Path | None = None,
        headroom: float = 0.1,
        tune: bool = False,
        every_s: float = 10.0,
    ) -> JobMemory | None:
        if not gpus:
            return None
        backend = gpu_backend()
        if isinstance(backend, NoGpu):
            log.info("no GPU memory monitoring", reason=backend.reason)
            return None
        return cls(
            backend,
            MemoryStore(store_path),
            gpus,
            flavour,
            publish,
            pid_getter,
            launch_getter,
            headroom=headroom,
            tune=tune,
            every_s=every_s,
        )

    # -- the bus listener: each launch's peak ------------------------------------------------
    def __call__(self, record: Record, /) -> None:
        if record.get("type") != "GpuSample":
            return
        n = int(record.get("launch") or 0)
        for v in (record.get("process_mib"), record.get("peak_mib")):
            if isinstance(v, int | float):
                self.peaks[n] = max(self.peaks.get(n, 0.0), float(v))

    def start(self) -> None:
        self.sampler.start()

    async def stop(self) -> None:
        await self.sampler.stop()

    def gpu_use(self) -> GpuUse | None:
        """The job's first GPU as last read (the words of an out-of-memory relaunch)."""
        rec = self.sampler.latest(self.gpus[0])
        if rec is None or rec.get("used_mib") is None or rec.get("total_mib") is None:
            return None
        return GpuUse(int(rec["gpu"]), float(rec["used_mib"]), float(rec["total_mib"]))

    # -- the model -----------------------------------------------------------------------------
    def pick(self, cfg: Cfg, *, map_on: bool) -> Pick | None:
        """The model's subdivisions for `cfg` on the job's GPUs now; None when it cannot tell."""
        try:
            return pick_for(
                self.store.load(),
                self.backend,
                cfg,
                self.gpus,
                map_on=map_on,
                flavour=self.flavour,
                headroom=self.headroom,
                tune=self.tune,
            )
        except Exception as e:  # a model is advice: never a reason not to train
            log.warning("memory model not consulted", error=str(e))
            return None

    def launched(self, number: int, cfg: Cfg, *, map_on: bool) -> None:
        """A launch starts: the key it trains at, and the free memory it starts with."""
        try:
            devices = [d for d in self.backend.devices() if d.index in self.gpus]
        except Exception as e:
            log.warning("GPU not read at launch", error=str(e))
            devices = []
        if not devices:
            self._current = None
            return
        tightest = min(devices, key=lambda d: d.free_mib if d.free_mib is not None else 1e18)
        facts = launch_facts(cfg, tightest.name, map_on=map_on, flavour=self.flavour)
        self._current = _Launched(
            number, facts, cfg.mini_batch, cfg.subdivisions, tightest.free_mib, tightest.total_mib
        )

    def ended(self, number: int, out_of_memory: OomContext | None, *, ran: bool) -> None:
        """Tell the model what launch `number` showed: out of memory (with the free memory at
        its start), or — when it ran (printed iterations) — its peak."""
        cur = self._current
        if cur is None or cur.number != number:
            return
        self._current = None
        facts = cur.facts
        if out_of_memory is not None and out_of_memory.size is not None:
            w, h = out_of_memory.size
            facts = KeyFacts(
                facts.gpu_model,
                facts.fingerprint,
                max(facts.width, w),
                max(facts.height, h),
                facts.map_on,
            )
        key = facts.key(cur.mini_batch)
        if out_of_memory is not None:
            self.tried.add(cur.subdivisions)  # the ladder climbs back; tune never returns here
            if self.tune:  # in events.jsonl, for a supervisor that attaches later
                self.publish(
                    {
                        "type": TUNE_TRIED,
                        "time": time.time(),
                        "subdivisions": cur.subdivisions,
                        "why": "out_of_memory",
                        "launch": number,
                    }
                )
            if cur.free_mib is None:
                return
            entry = oom(key, cur.free_mib, total_mib=cur.total_mib)
        else:
            mib = self.peaks.get(number)
            if not ran or not mib:
                return
            entry = peak(key, mib, total_mib=cur.total_mib)
        try:
            self.store.observe(entry)
        except OSError as e:
            log.warning("memory model not saved", path=str(self.store.path), error=str(e))

    # -- memory.tune ---------------------------------------------------------------------------
    def restore_tune(self, tried: Iterable[int], tunes: int) -> None:
        """Take what an earlier supervisor of this job tried (`adopt.Restored.tune`), on
        `--attach`: those values are never tuned to again, and its tunes count."""
        self.tried.update(tried)
        self.tunes = max(self.tunes, tunes)

    def tune_step(
        self,
        cfg: Cfg,
        number: int,
        *,
        phase: Phase,
        iterations: int,
        ran_s: float,
        random: bool,
        relaunches: int,
        max_relaunches: int,
    ) -> TuneStep | None:
        """Whether launch `number` should be relaunched with a lower subdivisions for speed
        (`training/tune.py` decides); asked by the runner while it watches, answered at most
        once per sampling interval. A decided step counts: its value is never tried again."""
        cur = self._current
        if not self.tune or cur is None or cur.number != number:
            return None
        now = time.monotonic()
        if now - self._tune_checked < self.every_s:
            return None
        self._tune_checked = now
        rooms = []
        for g in self.gpus:
            rec = self.sampler.latest(g)
            if rec is None or rec.get("launch") != number:
                return None  # not sampled in this launch yet
            total, used, mine = rec.get("total_mib"), rec.get("used_mib"), rec.get("process_mib")
            if total is None or used is None or mine is None:
                return None  # NVML cannot see darknet's own use: no basis to tune on
            rooms.append(GpuRoom(g, float(total), float(used), float(mine)))
        facts = TuneFacts(
            cfg.batch,
            cfg.subdivisions,
            random,
            cur.facts.map_on,
            phase,
            iterations,
            ran_s,
            self.every_s,
            self.peaks.get(number),
            rooms,
            self.headroom,
            frozenset(self.tried),
            self.tunes,
            relaunches,
            max_relaunches,
        )
        if not ready(facts):
            return None
        try:
            model = self.store.load()
        except Exception as e:  # a model is advice: never a reason to stop training
            log.warning("memory model not consulted for tune", error=str(e))
            return None
        step = decide_tune(model, cur.facts, facts)
        if step is not None:
            self.tried.add(step.subdivisions)
            self.tunes += 1
        return step
