"""Supervise one training job: launch darknet, read its log, decide, evaluate, stop, keep weights.

One asyncio task per job, one loop: tail `darknet.log` → parser → events → immutable history →
pure policy → decisions, carried out here. Everything the loop sees or decides is published on
the job's bus as a record (`runtime/bus.py`); `events.jsonl`, the progress line, notifications
and (later) the daemon's store listen. The pieces it ties together are tested alone: the
stop and darknet's saves (`stopping.py`), the copies of saves (`keeping.py`), the snapshot
store (`snapshots.py`), the end classification (`training/ending.py`, pure), the report
(`report/report.py`).

What never gets lost (DESIGN "Decisions" 1 and 4):
- darknet always has a supervisor or was left on purpose: an internal error becomes a graceful
  stop with its reason, cancellation a TERM of darknet's group; `--detach` leaves it running,
  and `attach` picks it up again (same pid and start time, from the checkpointed log offset)
  or resumes it from the newest complete weights.
- a stop waits until no save is in progress; a save is complete when the file has the
  network's size and its header the iteration it was saved at.
- an evaluation runs in its own session with a timeout; a snapshot it has not scored is kept.
- the job ends with its report whatever its evaluator did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from supervisor.atomicio import json_safe, write_json_atomic, write_text_atomic
from supervisor.darknet.cfg import Cfg, CfgError, cfg_hash
from supervisor.darknet.command import ArgvError, train_argv, weights_names
from supervisor.darknet.evaluate import evaluate_weights
from supervisor.darknet.jobfiles import existing_job_files, prepare_job_files
from supervisor.darknet.logparse import LogParser
from supervisor.darknet.weights import (
    expected_weights_size,
    newest_weights,
    weights_complete,
)
from supervisor.dataset.check import CheckReport
from supervisor.report.report import build_report, write_report
from supervisor.runtime import launch
from supervisor.runtime.adopt import AdoptError, last_launch, restore
from supervisor.runtime.binary import BinaryError, verify_binary
from supervisor.runtime.bus import Bus, Record
from supervisor.runtime.diagnosis import DiagnosisWatch, diagnosis_facts
from supervisor.runtime.jobpolicy import policy_for, schedule_of
from supervisor.runtime.keeping import Keeper, evaluation_at
from supervisor.runtime.memory_watch import JobMemory, TuneMemory
from supervisor.runtime.preflight import evaluation_source
from supervisor.runtime.progress import Progress, format_progress
from supervisor.runtime.records import EventsFile, to_record
from supervisor.runtime.scoring import ScoringQueue
from supervisor.runtime.snapshots import SnapshotStore
from supervisor.runtime.stopping import Save, Stopping
from supervisor.runtime.tail import LogTail, read_lines_until
from supervisor.runtime.watchdog import (
    STALL_FLOOR_S,
    STALL_K,
    STALL_STARTUP_S,
    LaunchState,
    StallWatchdog,
)
from supervisor.spec import JobSpec, load_spec, redacted_yaml
from supervisor.training.backoff import CAP_S, FIRST_S, RESET_S, Backoff
from supervisor.training.ending import (
    End,
    EndFacts,
    Relaunch,
    Status,
    classify_end,
    launch_oom,
)
from supervisor.training.events import (
    Event,
    FatalError,
    Flavour,
    GpuError,
    Iteration,
    Launch,
    MapResult,
    Tick,
    WeightsSaved,
)
from supervisor.training.history import History
from supervisor.training.memory import GpuUse, MemorySetting, OomContext, fmt_int
from supervisor.training.policy import Evaluate, Policy, Stop
from supervisor.training.retention import Snapshot, plan_retention
from supervisor.training.schedule import Schedule
from supervisor.training.tune import TuneStep

log = structlog.get_logger("trainsup.runner")

__all__ = [
    "JobResult",
    "JobRunner",
    "JobSetupError",
    "Progress",
    "RunnerConfig",
    "Status",
    "format_progress",
]


class JobSetupError(Exception):
    """The job cannot start (bad files, binary, arguments); the message says what to fix."""


@dataclass
class RunnerConfig:
    """Knobs of the runner itself (not of the training).

    Attributes:
        poll: seconds between looks at darknet.log.
        tick: seconds between clock ticks fed to the policy (time budgets).
        grace: seconds between TERM and KILL when stopping.
        save_wait: longest wait, in seconds, for the next save after a stop was decided;
            None = the time darknet takes for 150 iterations, within [30 s, 600 s] — and for a
            time-budget stop at most 5 % of the budget (the report says how long it ran over).
        checkpoint_every: seconds between checkpoints of the log offset in events.jsonl (what
            `attach` resumes from; lines after the last one are read again).
        first_eval_timeout: seconds the first evaluation may take; later ones get
            max(eval_timeout_floor, 5 × the longest so far).
        eval_timeout_floor: see above.
        end_eval_wait: longest wait, in seconds, for pending evaluations once darknet ended.
        max_relaunches: overrides the job's `memory.max_relaunches` (None: the job's).
        stall_k, stall_floor: darknet is hung when no iteration line came for
            max(stall_k × the median seconds per iteration, stall_floor seconds)
            (`runtime/watchdog.py`); then it is killed and relaunched.
        stall_startup: the same before a launch's first iteration line, in seconds.
        backoff, backoff_cap, backoff_reset: seconds before a relaunch after a failure,
            doubling per quick failure in a row up to the cap; a launch that ran
            `backoff_reset` seconds starts the count over (`training/backoff.py`).
        gpu_every: seconds between GPU samples (`runtime/gpu_sampler.py`).
        memory_store: the memory model's file; None = the user's
            (`$XDG_STATE_HOME/trainsup/memory.json`; the daemon passes its state dir's).
        binary_override: run this binary whatever the spec says (tests, `trainsup demo`).
    """

    poll: float = 0.2
    tick: float = 1.0
    grace: float = 10.0
    save_wait: float | None = None
    checkpoint_every: float = 2.0
    first_eval_timeout: float = 1800.0
    eval_timeout_floor: float = 120.0
    end_eval_wait: float = 3600.0
    max_relaunches: int | None = None
    stall_k: float = STALL_K
    stall_floor: float = STALL_FLOOR_S
    stall_startup: float = STALL_STARTUP_S
    backoff: float = FIRST_S
    backoff_cap: float = CAP_S
    backoff_reset: float = RESET_S
    gpu_every: float = 10.0
    memory_store: Path | None = None
    binary_override: str | None = None


@dataclass
class JobResult:
    status: Status
    job_dir: Path
    report: dict[str, Any] = field(default_factory=dict)


class JobRunner:
    """Runs one job in `job_dir` (laid out as DESIGN "The job dir" says).

    Attributes:
        spec: the validated job.
        job_dir: where everything of the job lives.
        config: the runner's own knobs.
        on_progress: called after every iteration line and evaluation with a `Progress`.
        attach: the job dir exists from an earlier run: adopt its darknet if it still runs,
            else resume it from the newest complete weights (or record that it finished).
        bus: where every record goes; subscribe listeners before `run()`.
        check: the pre-flight `trainsup check` report of the job's dataset, when one ran: its
            split sizes and findings weigh in the diagnosis (set before `run()`).
    """

    def __init__(
        self,
        spec: JobSpec,
        job_dir: Path,
        config: RunnerConfig | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        attach: bool = False,
    ) -> None:
        self.spec = spec
        self.job_dir = job_dir.absolute()
        self.config = config or RunnerConfig()
        self.on_progress = on_progress
        self.attach = attach
        self.bus = Bus()
        self.history = History()
        self._detach = False
        self._degraded = False
        self.scoring = ScoringQueue(
            self._score,
            self._on_scored,
            self._on_score_failed,
            first_timeout=self.config.first_eval_timeout,
            timeout_floor=self.config.eval_timeout_floor,
        )
        self._internal_errors: list[str] = []
        self._launches: list[dict[str, Any]] = []
        self._rate: list[tuple[float, int]] = []  # (time, iteration) for it/s
        self._last_checkpoint = 0.0
        self._unwatched_end = False
        # The stop decided and darknet's saves; built before the job dir is read (a stop may be
        # asked for at once), it asks for the snapshot store and the keeper only once saves come.
        self.stopping = Stopping(
            self._publish,
            lambda: self.history,
            lambda: self.snapshots,
            lambda save: self.keeper.keep(save),
            lambda: None if self.own_eval else self.names.best,
            self._iterations_per_s,
            save_wait=self.config.save_wait,
            grace=self.config.grace,
            max_time=spec.budget.max_time,
            job=spec.name,
        )
        self._held: list[tuple[str, dict[str, Any]]] = []
        self._prepared = False
        self.check: CheckReport | None = None
        self._launch_line = 0  # the parser line of the current launch's marker
        self._failures: list[str] = []
        # What the current launch is doing (start, resize, -map, mid-run), whether it hung,
        # and the relaunch backoff: small modules of their own, fed from here.
        self.launch_state = LaunchState()
        self.watchdog = StallWatchdog(
            self.config.stall_k, self.config.stall_floor, self.config.stall_startup
        )
        self._backoff = Backoff(
            self.config.backoff, self.config.backoff_cap, self.config.backoff_reset
        )
        self._failures_in_a_row = 0
        self._launched_at = time.monotonic()
        self._read_at = time.monotonic()
        self._stalled: str | None = None
        self._oom: OomContext | None = None
        self.memory: JobMemory | None = None  # GPU sampling and the memory model (GPU jobs)
        # What `memory.tune` tried under an earlier supervisor of this job (--attach).
        self._restored_tune: TuneMemory | None = None
        # memory.tune: a decided step waits for darknet's next complete save (`_check_tune`).
        self._tune: tuple[TuneStep, int, float] | None = None  # step, at iteration, when
        self._tuning = False  # darknet was terminated for it: the launch ends in a tune

    @classmethod
    def for_job_dir(
        cls,
        job_dir: Path,
        config: RunnerConfig | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        spec: JobSpec | None = None,
    ) -> JobRunner:
        """A runner that attaches to an existing job dir, with the spec recorded in it — or
        `spec` (the daemon's own copy, whose secrets `job.yaml` has redacted)."""
        spec_file = job_dir / "job.yaml"
        if spec is None:
            if not spec_file.is_file():
                raise JobSetupError(f"{job_dir} has no job.yaml: not a trainsup job dir")
            spec = load_spec(spec_file)
        return cls(spec, job_dir, config, on_progress, attach=True)

    # --- public controls ---------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Graceful stop: end after the next completed save (nothing is lost)."""
        self.stopping.decide(Stop("user", reason, self.history.iteration, {}, ""))

    def request_kill(self) -> None:
        """Stop now, without waiting for a save (the newest completed save is still kept)."""
        self.stopping.kill()

    @property
    def stop_decision(self) -> Stop | None:
        """The stop decided (the first one counts), None while training goes on."""
        return self.stopping.decision

    def request_detach(self) -> None:
        """Stop supervising and leave darknet running (`attach` continues later)."""
        self._detach = True

    # --- setup --------------------------------------------------------------------------------

    def _resolve(self) -> None:
        """What can be refused without touching the disk is refused first."""
        spec = self.spec
        where = f"{spec.name}: darknet.binary"
        try:
            # Proven darknet before it gets any job argument; a written flavour must match.
            probe = verify_binary(
                self.config.binary_override or spec.darknet.binary, spec.darknet.flavour
            )
        except BinaryError as e:
            raise JobSetupError(f"{where}: {e}") from None
        self.binary, self.cuda = probe.path, probe.cuda
        self.flavour: Flavour = probe.flavour
        self.own_eval = evaluation_source(spec, self.flavour) == "supervisor"
        if not self.own_eval and spec.evaluation.iou_threshold != 0.5:
            # darknet's training-time -map scores at IoU 0.5 (facts §2); the job asked for
            # another threshold, which only the supervisor's own evaluation honours.
            raise JobSetupError(
                f"evaluation.iou_threshold is {spec.evaluation.iou_threshold}, but darknet's "
                "-map measures at 0.5: set evaluation.source: supervisor to score at "
                f"{spec.evaluation.iou_threshold}, or use iou_threshold: 0.5"
            )

    def _prepare(self) -> None:
        spec = self.spec
        self._resolve()
        if (self.job_dir / "events.jsonl").exists():
            raise JobSetupError(
                f"{self.job_dir} holds an earlier run (events.jsonl): continue it with "
                f"`trainsup run --attach {self.job_dir}`, or choose another --workdir"
            )
        try:
            self.files = prepare_job_files(self.job_dir, spec.darknet.data, spec.darknet.cfg)
        except (CfgError, FileExistsError) as e:
            raise JobSetupError(str(e)) from None
        # Written after the job dir is known to be new: never over an earlier job's record.
        write_text_atomic(self.job_dir / "job.yaml", redacted_yaml(spec))
        self._load_cfg()

    def _load_cfg(self) -> None:
        spec = self.spec
        try:
            self.cfg = Cfg.load(self.files.cfg)
            self.schedule: Schedule = schedule_of(self.cfg)
            self.images_per_iteration = self.cfg.mini_batch * self.cfg.subdivisions
        except CfgError as e:
            raise JobSetupError(str(e)) from None
        self.cfg_hash = cfg_hash(self.files.cfg.read_text())
        if not self.own_eval and self.files.valid is None:
            raise JobSetupError(
                f"{spec.darknet.data}: darknet's -map needs valid= in the .data file "
                "(facts §2: it exits with an error otherwise); add valid=, or set "
                "evaluation.source: supervisor"
            )
        self.policy: Policy = policy_for(
            spec, evaluate_every=spec.evaluation.every if self.own_eval else None
        )
        self.names = weights_names(self.flavour, self.files.base)
        self.snapshots = SnapshotStore(
            self.job_dir / "snapshots",
            self.cfg.batch,
            self.cfg.subdivisions,
            expected_weights_size(self.cfg),
        )
        self.keeper = Keeper(
            self.snapshots,
            self.scoring,
            self._publish,
            lambda: self.history,
            cfg_hash=self.cfg_hash,
        )
        (self.job_dir / "kept").mkdir(exist_ok=True)

    def _argv(self, weights: Path | None, *, resume: bool = False) -> list[str]:
        try:
            return train_argv(
                self.binary,
                self.flavour,
                self.files.data,
                self.files.cfg,
                weights,
                gpus=self.spec.darknet.gpus,
                map=not self.own_eval,
                extra_args=self.spec.darknet.extra_args,
                cuda=self.cuda,
                resume=resume,  # never -clear from the run's own saves: the count goes on
            )
        except ArgvError as e:
            raise JobSetupError(f"{self.spec.name}: {e}") from None

    # --- main loop ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check the job and lay out (or, attaching, read) its job dir; JobSetupError says
        what to fix. `run()` calls it when the caller did not: listeners that keep files in
        the job dir (the notification outbox) subscribe after it, so a refused job dir gets
        nothing of theirs."""
        if self._prepared:
            return
        if self.attach:
            self._resolve()
            try:
                self.files = existing_job_files(self.job_dir, self.spec.darknet.cfg)
            except (OSError, CfgError) as e:
                raise JobSetupError(str(e)) from None
            self._load_cfg()
        else:
            self._prepare()
            self.argv = self._argv(self.spec.darknet.weights)
        self._prepared = True

    async def run(self) -> JobResult:
        self.prepare()
        logfile = self.job_dir / "darknet.log"
        self.tail = LogTail(logfile, offset=logfile.stat().st_size if logfile.exists() else 0)
        self.parser = LogParser(self.flavour)
        adopted = self._restore() if self.attach else None
        self._events = EventsFile(self.job_dir / "events.jsonl")
        self.bus.subscribe(self._events, essential=True)
        # The seed's pattern, re-read after each evaluation (`_on_event`, after its NewBest, so
        # that a channel reads the best before what the curve looks like); a `Diagnosis`
        # record when it moves.
        self._diagnosis = DiagnosisWatch(
            lambda: self.history, diagnosis_facts(self.schedule, self.check)
        )
        for kind, fields in self._held:
            self._publish(kind, **fields)
        try:
            return await self._supervise(adopted)
        finally:
            self._events.close()

    async def _supervise(self, adopted: launch.LaunchHandle | None) -> JobResult:
        self._publish(
            "JobStarted",
            job=self.spec.name,
            flavour=self.flavour,
            argv=self.argv if adopted is None and not self.attach else None,
            max_iterations=self.spec.budget.max_iterations or self.schedule.max_batches,
            max_time_s=self.spec.budget.max_time,
            gpus=list(self.spec.darknet.gpus),
            attach=self.attach,
        )
        handle: launch.LaunchHandle
        proc: Any = None
        self._watch_memory()
        if adopted is not None:
            handle = adopted
        elif self.attach:
            handle = self._handle_of_last_launch()
        else:
            self._pick_subdivisions()
            handle, proc = self._launch(self.spec.darknet.weights, "start")
        evaluator = asyncio.create_task(self.scoring.run())
        try:
            end = await self._until_end(handle, proc)
        except asyncio.CancelledError:
            await launch.terminate(handle, self.config.grace)
            evaluator.cancel()
            if self.memory is not None:
                await self.memory.stop()
            raise
        if self.memory is not None:
            await self.memory.stop()
        # darknet is gone: complete what it saved, score what is due, then keep and report.
        await self._after_darknet(end)
        await self._drain_evaluations()
        evaluator.cancel()
        return self._finish(end)

    def _watch_memory(self) -> None:
        """GPU jobs: start the sampler and listen to its samples (`runtime/memory_watch.py`)."""
        m = self.spec.memory
        self.memory = JobMemory.for_job(
            self.spec.darknet.gpus,
            self.flavour,
            self.bus.publish,
            lambda: int(self._launches[-1]["pid"]) if self._launches else None,
            lambda: len(self._launches),
            store_path=self.config.memory_store,
            headroom=m.headroom,
            tune=m.tune,
            every_s=self.config.gpu_every,
        )
        if self.memory is not None:
            if self._restored_tune is not None:
                self.memory.restore_tune(self._restored_tune.tried, self._restored_tune.tunes)
            self.bus.subscribe(self.memory)
            self.memory.start()

    def _pick_subdivisions(self) -> None:
        """Before the first launch: the memory model's subdivisions for this cfg on this GPU
        (what earlier jobs taught it), with its reason as an event."""
        if self.memory is None:
            return
        pick = self.memory.pick(self.cfg, map_on=not self.own_eval)
        if pick is None:
            return
        before = self.cfg.subdivisions
        if pick.subdivisions != before:
            self.cfg.apply({"subdivisions": pick.subdivisions})
            self.cfg.save(self.files.cfg, darknet_form=True)
            self.snapshots.subdivisions = self.cfg.subdivisions
        self._publish(
            "MemoryPick",
            subdivisions=pick.subdivisions,
            previous=before,
            reason=pick.reason,
            predicted_mib=pick.predicted_mib,
            fits=pick.fits,
        )

    async def _until_end(self, handle: launch.LaunchHandle, proc: Any) -> End:
        """Watch launches until the job ends; relaunch where `classify_end` says so."""
        while True:
            try:
                await self._watch(handle, proc)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._on_internal_error(e, handle):
                    continue
                await launch.terminate(handle, self.config.grace)
                self.stopping.terminated = True
                await self._drain_log(handle, proc)
            if self._detach and not self.stopping.terminated:
                self._checkpoint(force=True)
                return End("detached", "the supervisor detached; darknet keeps training alone")
            facts = self._end_facts(handle)
            if self.memory is not None:
                oom = facts.oom if launch_oom(facts) is not None else None
                ran = self.launch_state.iterations > 0
                self.memory.ended(handle.number, oom, ran=ran)
            decision = classify_end(self.history, facts)
            if isinstance(decision, End):
                return decision
            relaunched = await self._relaunch(decision)
            if relaunched is None:  # stopped while waiting out the backoff
                stop = self.stop_decision
                return End("stopped", stop.reason if stop else "stopped at once by the user")
            handle, proc = relaunched

    def _on_internal_error(self, e: Exception, handle: launch.LaunchHandle) -> bool:
        """An error of the supervisor itself: stop gracefully (True: keep watching), or, when
        it happens again while stopping, stop now (False)."""
        where = f"{type(e).__name__}: {e}"
        self._internal_errors.append(where)
        log.error("internal error", job=self.spec.name, error=where, exc_info=e)
        first = not self._degraded
        self._degraded = True
        # The events file may be what failed (a full disk): it no longer stops the job.
        self.bus.demote(self._events)
        self._publish("InternalError", error=where, pid=handle.pid)
        if first:
            self.stopping.decide(
                Stop(
                    "internal_error",
                    f"the supervisor failed ({where}); darknet was stopped after its next save",
                    self.history.iteration,
                    {},
                    "see the supervisor's log for the details; resume with "
                    f"`trainsup run --attach {self.job_dir}`",
                )
            )
            return True
        return False

    async def _watch(self, handle: launch.LaunchHandle, proc: Any) -> None:
        """Follow one launch until darknet is gone, detached from, or signalled and gone."""
        next_tick = time.monotonic()
        while True:
            self._read_log()
            self.stopping.check_pending()
            if _gone(handle, proc):
                await self._drain_log(handle, proc)
                return
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.config.tick
                self._on_event(Tick(time.time()))
            await self.stopping.act(handle)
            if self._detach and not self.stopping.terminated:
                return
            await self._check_stall(handle)
            await self._check_tune(handle)
            await asyncio.sleep(self.config.poll)

    async def _check_stall(self, handle: launch.LaunchHandle) -> None:
        """A hung darknet (no iteration line for too long) is killed; `classify_end` then
        relaunches it. Not while a stop is under way: that has its own bounded wait."""
        if self._stalled is not None or self.stopping.terminated:
            return
        if self.stop_decision is not None or self.stopping.kill_now:
            return
        why = self.watchdog.check(time.monotonic(), busy=self.parser.evaluating)
        if why is None:
            return
        self._stalled = why
        log.warning("darknet hung", job=self.spec.name, pid=handle.pid, why=why)
        self._publish("Stalled", iteration=self.history.iteration, reason=why, pid=handle.pid)
        await launch.terminate(handle, self.config.grace)

    async def _check_tune(self, handle: launch.LaunchHandle) -> None:
        """memory.tune: when `JobMemory.tune_step` finds room for a lower subdivisions, wait for
        darknet's next complete save (as a stop does: nothing is lost), then end the launch;
        `classify_end` relaunches it from that save. A stop or a hang comes first; a save that
        does not come within the stop's save wait drops the step (training goes on as it is)."""
        if self.memory is None or self.stopping.terminated or self._tuning or self._stalled:
            return
        if self.stop_decision is not None or self.stopping.kill_now:
            return
        if self._tune is None:
            step = self.memory.tune_step(
                self.cfg,
                len(self._launches),
                phase="map" if self.parser.evaluating else self.launch_state.phase,
                iterations=self.launch_state.iterations,
                ran_s=time.monotonic() - self._launched_at,
                random=any(d.random for d in self.cfg.detection_layers()),
                relaunches=max(0, len(self._launches) - 1),
                max_relaunches=self._max_relaunches(),
            )
            if step is not None:
                self._tune = (step, self.history.iteration, time.monotonic())
                self._publish(
                    "TuneDecided", iteration=self.history.iteration, **dataclasses.asdict(step)
                )
            return
        _, at, since = self._tune
        save = self.stopping.last_complete
        if save is not None and save.iteration > at and not self.stopping.saving():
            self._tuning = True
            await launch.terminate(handle, self.config.grace)
        elif time.monotonic() - since > self.stopping.save_wait(None):
            self._tune = None  # no save came: keep training as it is (the value stays tried)

    def _max_relaunches(self) -> int:
        if self.config.max_relaunches is not None:
            return self.config.max_relaunches
        return self.spec.memory.max_relaunches

    async def _drain_log(self, handle: launch.LaunchHandle, proc: Any) -> None:
        if proc is not None:
            await asyncio.to_thread(proc.wait)
        else:
            await launch.wait_gone(handle, 30.0)
        self._read_log()
        rest = self.tail.rest()
        for ev in [*(self.parser.feed(rest) if rest else []), *self.parser.close()]:
            self._on_event(ev)
        self._checkpoint(force=True)

    def _read_log(self) -> None:
        self._read_at = time.monotonic()  # one time per read: lines arrive in bursts
        lines = self.tail.read_lines()
        while lines:
            for line in lines:
                for ev in self.parser.feed_line(line):
                    self._on_event(ev)
            lines = self.tail.read_lines() if len(lines) > 1000 else []
        self._checkpoint()

    def _checkpoint(self, *, force: bool = False) -> None:
        """Record how far darknet.log was read; `attach` re-reads what comes after."""
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self.config.checkpoint_every:
            return
        self._last_checkpoint = now
        self._publish("Checkpoint", offset=self.tail.offset)

    # --- launches: the one place darknet is started -------------------------------------------

    def _launch(
        self, weights: Path | None, reason: str, *, resume: bool = False
    ) -> tuple[launch.LaunchHandle, Any]:
        number = len(self._launches) + 1
        argv = self._argv(weights, resume=resume)
        self.argv = argv
        handle, proc = launch.start(
            argv,
            number=number,
            log=self.job_dir / "darknet.log",
            exit_path=self.job_dir / "exit.json",
            cwd=self.files.run,
        )
        write_json_atomic(self.job_dir / "launch.json", handle.to_json())
        self._launched_at = time.monotonic()
        self._stalled = None
        self._oom = None
        self._tune, self._tuning = None, False
        # Before its marker line is read: the old launch's last iteration must not count.
        self.launch_state.launched()
        self.watchdog.launched()
        self._launches.append(
            {"number": number, "pid": handle.pid, "reason": reason, "weights": weights}
        )
        if self.memory is not None:
            self.memory.launched(number, self.cfg, map_on=not self.own_eval)
        # The wrapper's marker line in darknet.log becomes the Launch event (with its time).
        log.info("launched", job=self.spec.name, pid=handle.pid, number=number)
        self._publish("Launched", number=number, pid=handle.pid, reason=reason, weights=weights)
        return handle, proc

    async def _relaunch(self, decision: Relaunch) -> tuple[launch.LaunchHandle, Any] | None:
        """Resume from the newest complete weights (never `-clear`: the count continues),
        after the backoff; None when a stop was asked for meanwhile."""
        if decision.failure is not None:
            self._failures.append(decision.failure)
        if decision.cfg_changes:
            # The job's own cfg copy: the next launch (and a later --attach) reads it.
            self.cfg.apply(dict(decision.cfg_changes))
            self.cfg.save(self.files.cfg, darknet_form=True)
            self.snapshots.subdivisions = self.cfg.subdivisions
        if decision.drop_map:
            self._evaluate_ourselves()
        newest = newest_weights(
            self.files.backup,
            self.flavour,
            self.files.base,
            self.cfg.batch,
            self.cfg.subdivisions,
            expected_size=self.snapshots.expected_size,
        )
        weights = newest.path if newest else self.spec.darknet.weights
        resumed = newest.iteration if newest else 0
        delay = 0.0
        reason = decision.reason
        if decision.kind in ("memory", "stall"):
            # A resume after the supervisor was down, a tune: nobody's failure, no backoff.
            ran = time.monotonic() - self._launched_at
            self._failures_in_a_row = self._backoff.failures_in_a_row(self._failures_in_a_row, ran)
            delay = self._backoff.delay(self._failures_in_a_row)
        if decision.kind != "resume":
            reason += (
                f", resuming from iteration {fmt_int(resumed)}"
                if newest
                else ", starting again from the initial weights (no complete save yet)"
            )
            if delay > 0:
                reason += f"; {self._backoff.words(self._failures_in_a_row)}"
        self._publish(
            "Relaunched",
            reason=reason,
            trigger=decision.kind,
            change=dict(decision.cfg_changes),
            drop_map=decision.drop_map,
            numbers=dict(decision.numbers),
            weights=weights,
            iteration=resumed,
            backoff_s=delay,
        )
        if self._launches:
            self._launches[-1]["ended_by"] = {
                "trigger": decision.kind,
                "reason": reason,
                "change": dict(decision.cfg_changes),
                "drop_map": decision.drop_map,
                "backoff_s": delay,
                "resumed_from": resumed,
            }
        if not await self._wait_backoff(delay):
            return None
        self._unwatched_end = False
        self.stopping.drop_pending()
        return self._launch(weights, reason, resume=newest is not None)

    async def _wait_backoff(self, delay: float) -> bool:
        """Sleep `delay` seconds; False when a stop came meanwhile (nothing runs to stop)."""
        end = time.monotonic() + delay
        while time.monotonic() < end:
            if self.stop_decision is not None or self.stopping.kill_now:
                return False
            await asyncio.sleep(min(self.config.poll, max(0.0, end - time.monotonic())))
        return self.stop_decision is None and not self.stopping.kill_now

    def _evaluate_ourselves(self) -> None:
        """From now on the supervisor scores snapshots (`detector valid`) instead of darknet's
        -map, which costs a second network's GPU memory in the training process."""
        self.own_eval = True
        self.policy = policy_for(self.spec, evaluate_every=self.spec.evaluation.every)

    def _end_facts(self, handle: launch.LaunchHandle) -> EndFacts:
        final = self.files.backup / self.names.final
        return EndFacts(
            exit=launch.read_exit(self.job_dir / "exit.json", handle.number),
            final_complete=weights_complete(final, self.snapshots.expected_size),
            terminated=self.stopping.terminated,
            stop_reason=self.stop_decision.reason if self.stop_decision else None,
            max_batches=self.schedule.max_batches,
            supervisor_was_down=self._unwatched_end,
            launch_errors=tuple(e for e in self.history.gpu_errors if e.line > self._launch_line),
            launch_fatal=tuple(e for e in self.history.fatal_errors if e.line > self._launch_line),
            memory=MemorySetting(
                self.cfg.batch,
                self.cfg.subdivisions,
                any(d.random for d in self.cfg.detection_layers()),
                map=not self.own_eval,
                width=self.cfg.width,
                height=self.cfg.height,
                allow_resize=self.spec.memory.allow_resize,
            ),
            relaunches=max(0, len(self._launches) - 1),
            max_relaunches=self._max_relaunches(),
            earlier_failures=tuple(self._failures),
            oom=self._oom,
            stalled=self._stalled,
            stalled_s=self.watchdog.silence[0] if self._stalled and self.watchdog.silence else None,
            stalled_since_launch=bool(
                self._stalled and self.watchdog.silence and self.watchdog.silence[1]
            ),
            tuned=self._tune[0] if self._tuning and self._tune else None,
        )

    # --- attach -------------------------------------------------------------------------------

    def _restore(self) -> launch.LaunchHandle | None:
        """Take the state the events file left (`adopt.restore`), put the parser and the tail
        at its checkpoint, and find darknet. None: it no longer runs."""
        r = restore(self.job_dir / "events.jsonl")
        self.history, self._launches, self.scoring.unscored = r.history, r.launches, r.unscored
        self._restored_tune = r.tune
        if r.stop is not None:
            self.stopping.restored(r.stop)
        # The parser's own state (flavour evidence, a half-read mAP block, line numbers) is
        # rebuilt by reading the log up to the checkpoint again, its events discarded — but for
        # where the last launch began (its errors alone decide how it ended, not an earlier
        # launch's out of memory) and what that launch was doing (start, resize, -map).
        for text in read_lines_until(self.tail.path, r.offset):
            for ev in self.parser.feed_line(text):
                if isinstance(ev, Launch):
                    self._launch_line = ev.line
                    self.launch_state.launched()
                self.launch_state.on_event(ev, evaluating=self.parser.evaluating)
        self.tail.offset = r.offset
        handle = self._handle_of_last_launch()
        self.argv = list(handle.argv)
        if not self.own_eval and "-map" not in self.argv:
            self._evaluate_ourselves()  # the memory ladder dropped -map before the restart
        # Published once the events file is open again (restore may have rewritten it).
        if handle.alive:
            self._held.append(("Attached", {"pid": handle.pid, "offset": r.offset}))
            return handle
        self._unwatched_end = True
        self._held.append(("Attached", {"pid": None, "offset": r.offset, "gone": True}))
        return None

    def _handle_of_last_launch(self) -> launch.LaunchHandle:
        try:
            return last_launch(self.job_dir)
        except AdoptError as e:
            raise JobSetupError(str(e)) from None

    # --- events and decisions -----------------------------------------------------------------

    def _publish(self, kind: str, **fields: Any) -> None:
        rec: Record = json_safe({"type": kind, "time": time.time(), **fields})
        self.bus.publish(rec)

    def _on_event(self, ev: Event) -> None:
        if getattr(ev, "time", None) is None:
            ev = dataclasses.replace(ev, time=time.time())
        if isinstance(ev, Launch):
            self._launch_line = ev.line
            self.launch_state.launched()
            self.watchdog.launched()
        self.launch_state.on_event(ev, evaluating=self.parser.evaluating)
        if isinstance(ev, GpuError | FatalError) and self._oom is None:
            # When it happened (start, resize, -map, mid-run) chooses the ladder's first step.
            it = ev.iteration if ev.iteration is not None else self.history.iteration
            self._oom = self.launch_state.oom_context(it, self._gpu_use())
        if isinstance(ev, Iteration):
            self.watchdog.on_iteration(self._read_at, ev.iteration)
            self.stopping.complete(proof="iteration")
            self._rate.append((time.monotonic(), ev.iteration))
            self._rate = self._rate[-200:]
        if not isinstance(ev, Tick):
            self.bus.publish(to_record(ev))
        best_before = self.history.best
        self.history = self.history.add(ev)
        if isinstance(ev, MapResult) and self.history.best is not best_before:
            b = self.history.best
            assert b is not None
            self._publish(
                "NewBest",
                iteration=b.iteration,
                map=b.map,
                previous=None
                if best_before is None
                else {"iteration": best_before.iteration, "map": best_before.map},
            )
        if isinstance(ev, MapResult):
            diagnosed = self._diagnosis.check(self.history)
            if diagnosed is not None:
                self.bus.publish(diagnosed)
        if isinstance(ev, WeightsSaved):
            it = ev.iteration if ev.iteration is not None else self.history.iteration
            self.stopping.announced(Save(self._weights_path(ev.path), it))
        if isinstance(ev, Iteration | MapResult | Tick):
            self._decide()
        if isinstance(ev, Iteration | MapResult):
            self._progress()

    def _gpu_use(self) -> GpuUse | None:
        """The job's GPU as last sampled, for the words of an out-of-memory relaunch."""
        return self.memory.gpu_use() if self.memory is not None else None

    def _weights_path(self, printed: str) -> Path:
        p = Path(printed)
        return p if p.is_absolute() else self.files.run / p

    def _decide(self) -> None:
        d = self.policy.decide(self.history, self.schedule)
        if isinstance(d, Stop):
            self.stopping.decide(d)
        elif isinstance(d, Evaluate) and d.iteration not in self.scoring.evaluating:
            save = self.stopping.last_complete
            if save is not None and save.iteration == d.iteration:
                self.scoring.claim(d.iteration)
                self.keeper.keep(save, score=True)

    # --- evaluation ---------------------------------------------------------------------------

    async def _score(self, it: int, weights: Path, timeout_s: float) -> MapResult:
        gpus = self.spec.darknet.gpus
        res = await evaluate_weights(
            self.binary,
            self.files.data,
            self.files.cfg,
            weights,
            iou_threshold=self.spec.evaluation.iou_threshold,
            work_dir=self.job_dir / "results",
            flavour=self.flavour,
            timeout_s=timeout_s,
            # On the job's own GPU (or its CPU), never GPU 0 by default.
            gpu=gpus[0] if gpus else None,
            cpu=not gpus,
        )
        return res.to_map_result(iteration=it, weights=str(weights), time=time.time())

    def _on_scored(self, it: int, m: MapResult) -> None:
        self._on_event(m)
        self.keeper.write_meta(it, evaluation_at(self.history, it) or None, m)

    def _on_score_failed(self, it: int, error: str) -> None:
        self._publish("EvaluationFailed", iteration=it, error=error)

    async def _drain_evaluations(self) -> None:
        """Wait for queued snapshots and scores, bounded: the job ends with its report."""
        await self.keeper.wait(self.config.end_eval_wait)
        if not await self.scoring.join(self.config.end_eval_wait):
            self._publish("EvaluationFailed", iteration=None, error="evaluations still running")

    # --- the end ------------------------------------------------------------------------------

    async def _after_darknet(self, end: End) -> None:
        self.stopping.complete(proof="exit")
        last = self.stopping.last_complete
        if last is not None and end.status != "detached":
            # The newest complete save is the `last` weights, whatever ended the run.
            self.keeper.keep(last)
        if end.status == "finished":
            final = self.files.backup / self.names.final
            it = self.schedule.max_batches or self.history.iteration
            score = self.own_eval and not self.history.evaluated(it) and self.scoring.claim(it)
            await self.keeper.take(Save(final, it), score=score)
        await self.keeper.wait()
        self._evaluate_last()

    def _evaluate_last(self) -> None:
        """Score the newest snapshot too, so the kept `last` weights carry their mAP."""
        if not self.own_eval:
            return
        its = self.snapshots.iterations()
        if not its:
            return
        it = max(its)
        if not self.history.evaluated(it) and self.scoring.claim(it):
            self.scoring.put(it, self.snapshots.path(it))

    def _finish(self, end: End) -> JobResult:
        kept: dict[str, Any] = {}
        unscored: list[dict[str, Any]] = []
        if end.status != "detached":
            snaps = []
            for it in self.snapshots.iterations():
                ev = evaluation_at(self.history, it)
                if ev is not None:
                    snaps.append(Snapshot(it, ev.map, ev.valid))
                else:
                    snaps.append(Snapshot(it, unscored=it in self.scoring.unscored))
            r = self.spec.retain
            plan = plan_retention(snaps, best=r.best, last=r.last, top_k=r.top_k)
            try:
                kept = self.snapshots.apply(plan, self.job_dir / "kept")
            except OSError as e:
                self._internal_errors.append(f"keeping weights failed: {e}")
            unscored = [
                {"iteration": it, "path": str(self.snapshots.path(it)), "error": why}
                for it, why in sorted(self.scoring.unscored.items())
                if self.snapshots.has(it)
            ]
        for entry in self._launches:
            number = entry.get("number")
            if isinstance(number, int):
                entry["exit"] = launch.read_exit(self.job_dir / "exit.json", number)
                if self.memory is not None and number in self.memory.peaks:
                    entry["gpu_peak_mib"] = round(self.memory.peaks[number], 1)
        report = build_report(
            job=self.spec.name,
            end=end,
            history=self.history,
            flavour=self.flavour,
            argv=self.argv,
            own_evaluation=self.own_eval,
            stop=self.stop_decision if end.status == "stopped" else None,
            stop_end=self.stopping.end,
            kept=kept,
            unscored=unscored,
            launches=self._launches,
            evaluation_errors=self.scoring.errors,
            internal_errors=self._internal_errors,
            diagnosis_facts=self._diagnosis.facts,
        )
        try:
            write_report(self.job_dir / "report.json", report)
        except OSError as e:
            log.error("cannot write report.json", job=self.spec.name, error=str(e))
        self._publish(
            "Finished",
            status=end.status,
            cause=end.cause,
            stop=report["stop"],
            best=report["best"],
            kept=kept,
        )
        return JobResult(end.status, self.job_dir, report)

    # --- progress -----------------------------------------------------------------------------

    def _iterations_per_s(self) -> float | None:
        if len(self._rate) < 2:
            return None
        (t0, i0), (t1, i1) = self._rate[0], self._rate[-1]
        return (i1 - i0) / (t1 - t0) if t1 > t0 and i1 > i0 else None

    def _progress(self) -> None:
        if self.on_progress is None:
            return
        h = self.history
        cap = self.spec.budget.max_iterations or self.schedule.max_batches
        ips = self._iterations_per_s()
        left = [(cap - h.iteration) / ips] if cap and ips else []
        if self.spec.budget.max_time:
            left.append(max(0.0, self.spec.budget.max_time - h.elapsed))
        every = self.spec.evaluation.every if self.own_eval else None
        last = h.evaluations[-1] if h.evaluations else None
        self.on_progress(
            Progress(
                iteration=h.iteration,
                max_iterations=cap,
                avg_loss=h.last.avg_loss if h.last else None,
                last_map=last.map if last and last.valid else None,
                best_map=h.best.map if h.best else None,
                best_iteration=h.best.iteration if h.best else None,
                iterations_per_s=ips,
                budget_left_s=min(left) if left else None,
                next_evaluation=(h.iteration // every + 1) * every if every else None,
                stopping=self.stop_decision.rule if self.stop_decision else None,
            )
        )


def _gone(handle: launch.LaunchHandle, proc: Any) -> bool:
    if proc is not None:
        return bool(proc.poll() is not None)
    return not handle.alive
