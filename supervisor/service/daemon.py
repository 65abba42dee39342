"""`trainsup serve`: the queue, the devices, one runner task per running job, re-adoption.

One asyncio loop holds everything: the API server, APScheduler 3's AsyncIOScheduler for the
periodic work (queue and spool pass, store checkpoint, systemd status and watchdog), and one
task per running job that awaits `JobRunner.run()`. The store mirrors each runner's records
through a bus listener (DESIGN "Decisions" 9); state transitions follow from the records.

At start every job the store says is running is re-adopted with `JobRunner.for_job_dir` (same
pid and start time: followed from the checkpointed offset; darknet gone: resumed from the
newest complete weights, or recorded as finished). READY=1 goes to systemd only after that.

SIGTERM: stop accepting, then leave the trainings running (`on_shutdown: leave`: each runner
detaches; the next start re-adopts them) or stop them after their next save (`stop`), flush the
store, exit 0. A second SIGTERM while stopping stops them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from supervisor.darknet.cfg import Cfg, CfgError
from supervisor.dataset.check import CheckReport
from supervisor.notify.listener import NOTIFY_FLUSH_S, Notifications, attach_notifications
from supervisor.notify.outbox import job_dir_summary
from supervisor.runtime.chart_listener import attach_chart
from supervisor.runtime.gpu import NoGpu, gpu_backend
from supervisor.runtime.memory_store import MemoryStore, pick_for
from supervisor.runtime.preflight import evaluation_source
from supervisor.runtime.records import resume_records
from supervisor.runtime.runner import JobRunner, JobSetupError, Progress, RunnerConfig
from supervisor.service.admission import Refused, admit
from supervisor.service.config import DaemonConfig
from supervisor.service.scheduling import Queued, runnable
from supervisor.service.sdnotify import SdNotify
from supervisor.service.store import ACTIVE, TERMINAL, Store, StoreError
from supervisor.spec import SpecError, parse_spec
from supervisor.spec.notify import NotifyTarget, job_page

log = structlog.get_logger("trainsup.daemon")

# How the runner's end status maps onto DESIGN's job states ("detached" leaves it running).
END_STATE = {
    "finished": "finished",
    "stopped": "finished",
    "failed": "failed",
    "killed": "failed",
    "cancelled": "cancelled",
}


def _in_loop(fn: Callable[[], None]) -> Callable[[], Coroutine[Any, Any, None]]:
    async def job() -> None:
        fn()

    job.__name__ = getattr(fn, "__name__", "job")
    return job


class AlreadyRunning(Exception):
    pass


def _lock_state_dir(state_dir: Path) -> Any:
    """One daemon per state dir: two would start each queued job twice."""
    import fcntl

    f = (state_dir / "trainsup.lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        other = f.read().strip() or "?"
        f.close()
        raise AlreadyRunning(
            f"another trainsup serve (pid {other}) uses the state dir {state_dir}"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class NotFound(Exception):
    pass


class Conflict(Exception):
    """The request does not fit the job's state; the message says what would."""


def detect_gpus() -> list[int]:
    """GPU indices the GPU backend reports (NVML, or the simulated GPU of TRAINSUP_SIM_GPU);
    none (and a log line saying why) where there is no NVIDIA GPU."""
    backend = gpu_backend()
    if isinstance(backend, NoGpu):
        log.info("no GPU found: CPU jobs only", reason=backend.reason)
        return []
    return [d.index for d in backend.devices()]


@dataclass
class Running:
    job_id: int
    runner: JobRunner
    device: list[int]  # GPU indices; [] = a CPU slot
    task: asyncio.Task[None] | None = None
    progress: Progress | None = None
    launched: bool = False
    stop_requested: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Daemon:
    def __init__(self, config: DaemonConfig, notify: SdNotify | None = None) -> None:
        self.config = config
        self.notify = notify or SdNotify()
        self.state_dir = config.state().absolute()
        self.jobs_dir = self.state_dir / "jobs"
        self.inbox = self.state_dir / "inbox"
        self.store: Store
        self.running: dict[int, Running] = {}
        self.waiting: dict[int, str] = {}  # queued job id → why it waits (the last pass's)
        self._deliveries: set[asyncio.Task[None]] = set()
        self.accepting = False
        self.ready = False
        self.gpus: list[int] = []
        self._stop = asyncio.Event()
        self._signals = 0
        self._wake = asyncio.Event()
        self.scheduler: AsyncIOScheduler | None = None
        self.started = time.time()
        self.api_runner: Any = None

    # --- life cycle --------------------------------------------------------------------------

    async def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        from supervisor.service import api, spool

        for d in (self.state_dir, self.jobs_dir, self.inbox):
            d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            # Job dirs hold datasets' paths and weights: not for every user of the machine.
            os.chmod(self.state_dir, 0o750)
        self._lock = _lock_state_dir(self.state_dir)
        self.store = Store(self.state_dir / "trainsup.db")
        self.gpus = self._gpus()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        await self.readopt()
        self.redeliver()
        self.api_runner = await api.start(self)
        self.spool = spool.Spool(self.state_dir, self.submit)
        self.accepting = True
        self.scheduler = AsyncIOScheduler(event_loop=loop)
        opts: dict[str, Any] = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
        self.scheduler.add_job(self.queue_pass, "interval", seconds=self.config.queue_every,
                               id="queue", **opts)  # fmt: skip
        self.scheduler.add_job(self.spool.scan, "interval", seconds=self.config.queue_every,
                               id="spool", **opts)  # fmt: skip
        # Every job is a coroutine: APScheduler runs plain functions in a worker thread, where
        # the store (one SQLite connection) must not be used and a watchdog ping would prove
        # nothing about the loop.
        self.scheduler.add_job(_in_loop(self.store.checkpoint), "interval", seconds=60,
                               id="checkpoint", **opts)  # fmt: skip
        self.scheduler.add_job(_in_loop(self._status), "interval", seconds=5, id="status", **opts)
        stall_every = min(30.0, max(0.5, self.config.stall_after / 4))
        self.scheduler.add_job(_in_loop(self.stall_check), "interval", seconds=stall_every,
                               id="stall", **opts)  # fmt: skip
        if self.notify.watchdog_s:
            # From the loop itself: a blocked loop sends nothing, and systemd restarts us.
            self.scheduler.add_job(_in_loop(self.notify.watchdog), "interval",
                                   seconds=max(self.notify.watchdog_s / 3, 0.05),
                                   id="watchdog", **opts)  # fmt: skip
        self.scheduler.start()
        self.ready = True
        self.notify.ready(self._status_text())
        log.info("ready", state_dir=str(self.state_dir), gpus=self.gpus,
                 cpu_slots=self.config.cpu_slots, adopted=len(self.running))  # fmt: skip
        if on_ready is not None:
            on_ready()
        await self.spool.scan()
        await self.queue_pass()
        waker = asyncio.create_task(self._wake_loop())
        await self._stop.wait()
        waker.cancel()
        await self.shutdown()
        return 0

    def _gpus(self) -> list[int]:
        if self.config.gpus == "auto":
            return detect_gpus()
        return list(self.config.gpus)

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("shutting down", signal=signal.Signals(sig).name,
                     on_shutdown=self.config.on_shutdown)  # fmt: skip
            self._stop.set()
        else:
            log.info("second signal: stopping the trainings now")
            for r in self.running.values():
                r.runner.request_kill()

    async def shutdown(self) -> None:
        self.accepting = False
        self.notify.stopping("shutting down")
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for r in list(self.running.values()):
            if self.config.on_shutdown == "stop":
                r.stop_requested = True
                r.runner.request_stop("the supervisor service is shutting down (on_shutdown: stop)")
            else:
                r.runner.request_detach()
        tasks = [r.task for r in self.running.values() if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self._deliveries):
            task.cancel()  # pending messages stay in the outboxes for the next start
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self.api_runner is not None:
            await self.api_runner.cleanup()
        self.store.close()
        self.notify.close()
        log.info("stopped")

    async def _wake_loop(self) -> None:
        # Submissions and job ends start the next job at once, not at the next interval.
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.queue_pass()

    def wake(self) -> None:
        self._wake.set()

    def _status_text(self) -> str:
        c = self.store.counts()
        active = c["starting"] + c["running"] + c["stopping"]
        return f"{active} running, {c['queued']} queued"

    def _status(self) -> None:
        self.notify.status(self._status_text())

    # --- re-adoption -------------------------------------------------------------------------

    async def readopt(self) -> None:
        for row in self.store.jobs(ACTIVE):
            job_id = row["id"]
            job_dir = Path(row["job_dir"]) if row["job_dir"] else None
            with structlog.contextvars.bound_contextvars(job_id=job_id):
                if job_dir is None or not (job_dir / "launch.json").exists():
                    self._unlaunched(row, job_dir)
                    continue
                kept = resume_records(job_dir / "events.jsonl")
                if (
                    kept
                    and kept[-1].get("type") == "Finished"
                    and kept[-1].get("status") != "detached"  # left running on purpose
                ):
                    # The runner had finished (report written) when the daemon went down.
                    self.store.resync_events(job_id, kept)
                    self.store.apply(job_id, kept[-1])
                    status = str(kept[-1].get("status"))
                    self._end(job_id, END_STATE.get(status, "failed"), f"runner ended: {status}")
                    continue
                try:
                    # The store's spec, not the job dir's redacted copy: notification targets
                    # keep their secrets.
                    spec = parse_spec(row["spec_text"], row["source"], Path(row["base_dir"]))
                    runner = JobRunner.for_job_dir(job_dir, self._runner_config(row), spec=spec)
                    runner.check = self._check_report(job_id)
                except (JobSetupError, SpecError) as e:
                    self.store.transition(job_id, "failed", "cannot re-adopt", error=str(e))
                    continue
                self.store.resync_events(job_id, kept)
                log.info("re-adopting", job_dir=str(job_dir))
                self._spawn(job_id, runner, json.loads(row["device"] or "[]"), launched=True)

    def _unlaunched(self, row: dict[str, Any], job_dir: Path | None) -> None:
        """The daemon ended between `starting` and darknet's launch record."""
        job_id = row["id"]
        logfile = job_dir / "darknet.log" if job_dir is not None else None
        if logfile is not None and logfile.exists() and logfile.stat().st_size > 0:
            # darknet was started but its launch record is missing: never a second darknet.
            self.store.transition(
                job_id,
                "failed",
                "launch record missing",
                error=f"{job_dir}: darknet was started but launch.json is missing; look for a "
                "stray darknet process, then `trainsup retry`",
            )
            return
        if job_dir is not None and job_dir.exists():
            job_dir.rename(job_dir.with_name(f"{job_dir.name}.unstarted-{int(time.time())}"))
        self.store.transition(job_id, "queued", "the supervisor stopped before darknet started",
                              device=None, job_dir=None)  # fmt: skip

    # --- the queue ---------------------------------------------------------------------------

    def _holders(self) -> tuple[int, dict[int, list[int]]]:
        """CPU jobs running, and which running jobs hold each GPU."""
        cpu = sum(1 for r in self.running.values() if not r.device)
        gpus: dict[int, list[int]] = {}
        for r in self.running.values():
            for g in r.device:
                gpus.setdefault(g, []).append(r.job_id)
        return cpu, gpus

    def _pending_after(self, row: dict[str, Any]) -> int | None:
        """The job's `--after` dependency while it has not ended (a removed one never holds)."""
        after = row["after_id"]
        if after is None:
            return None
        dep = self.store.get(after)
        return after if dep is not None and dep["state"] not in TERMINAL else None

    async def queue_pass(self) -> None:
        if not self.accepting:
            return
        rows = {row["id"]: row for row in self.store.queue()}
        queue = [
            Queued(job_id, tuple(json.loads(row["gpus"])), self._pending_after(row))
            for job_id, row in rows.items()
        ]
        cpu, holders = self._holders()
        plan = runnable(
            queue,
            holders,
            cpu,
            gpus=self.gpus,
            jobs_per_gpu=self.config.jobs_per_gpu,
            cpu_slots=self.config.cpu_slots,
            fits=lambda job: self._memory_fits(rows[job.job_id], list(job.gpus)),
        )
        for job_id, reason in plan.waiting.items():
            # Once per change, so info is quiet enough (the pass runs every few seconds) and an
            # operator sees why a job waits: the service's log filters out debug.
            if self.waiting.get(job_id) != reason:
                log.info(reason, job_id=job_id)
        self.waiting = plan.waiting
        for job_id, device in plan.start:
            self._start(rows[job_id], list(device))

    def _memory_fits(self, row: dict[str, Any], want: list[int]) -> bool:
        """Whether the memory model, asked with the GPUs' free memory now, does not predict
        that the job runs out of memory there even at subdivisions = batch. Asked only where
        another job holds one of the GPUs (`jobs_per_gpu` > 1): an idle GPU always gets its
        job, whose out-of-memory ladder takes over. An unreadable spec or cfg fits (the start
        reports it)."""
        try:
            spec = parse_spec(row["spec_text"], row["source"], Path(row["base_dir"]))
            flavour = spec.darknet.flavour if spec.darknet.flavour != "auto" else "pjreddie"
            pick = pick_for(
                MemoryStore.in_state_dir(self.state_dir).load(),
                gpu_backend(),
                Cfg.load(spec.darknet.cfg),
                want,
                map_on=evaluation_source(spec, flavour) == "darknet",
                flavour=flavour,
                headroom=spec.memory.headroom,
            )
        except (SpecError, CfgError, OSError):
            return True
        if pick is None or pick.fits is not False:
            return True
        log.debug("waiting for GPU memory", job_id=row["id"], reason=pick.reason)
        return False

    def _start(self, row: dict[str, Any], device: list[int]) -> None:
        job_id = row["id"]
        job_dir = self.jobs_dir / str(job_id)
        with structlog.contextvars.bound_contextvars(job_id=job_id):
            try:
                spec = parse_spec(row["spec_text"], row["source"], Path(row["base_dir"]))
            except SpecError as e:
                self.store.transition(job_id, "starting", "start")
                self.store.transition(job_id, "failed", "invalid spec", error=str(e))
                return
            self.store.transition(job_id, "starting", "resources free",
                                  device=json.dumps(device), job_dir=str(job_dir),
                                  started=time.time())  # fmt: skip
            runner = JobRunner(spec, job_dir, self._runner_config(row), attach=False)
            runner.check = self._check_report(job_id)  # as `trainsup run` passes its pre-flight's
            log.info("starting", name=row["name"], device=device or "cpu")
            self._spawn(job_id, runner, device, launched=False)

    def _check_report(self, job_id: int) -> CheckReport | None:
        """The pre-flight report kept at submit, for the runner's diagnosis (the split sizes and
        findings `trainsup run` gives its runner); None where the check was off or the kept
        copy cannot be read (the diagnosis then goes without it, and the log says why)."""
        text = self.store.check_report(job_id)
        if text is None:
            return None
        try:
            return CheckReport.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("the kept pre-flight report cannot be read; diagnosing without it",
                        error=f"{type(e).__name__}: {e}")  # fmt: skip
            return None

    def _runner_config(self, row: dict[str, Any]) -> RunnerConfig:
        k = self.config.runner
        binary = self.config.binaries.get(row["binary_name"])
        # The config's path for the name now; the one recorded at submit if it was removed.
        path = str(binary.path) if binary is not None else row["binary_path"]
        return RunnerConfig(
            poll=k.poll,
            tick=k.tick,
            grace=k.grace,
            checkpoint_every=k.checkpoint_every,
            binary_override=path,
            # One memory model for the daemon: what its jobs learn is what `_memory_fits` reads.
            memory_store=MemoryStore.in_state_dir(self.state_dir).path,
        )

    def _spawn(self, job_id: int, runner: JobRunner, device: list[int], *, launched: bool) -> None:
        r = Running(job_id, runner, device, launched=launched)

        def progress(p: Progress) -> None:
            r.progress = p

        runner.on_progress = progress
        runner.bus.subscribe(lambda rec: self._on_record(r, rec))
        self.running[job_id] = r
        r.task = asyncio.create_task(self._supervise(r), name=f"job-{job_id}")

    def _on_record(self, r: Running, rec: dict[str, Any]) -> None:
        # Committed before the runner goes on to act (the bus calls listeners synchronously).
        job_id = r.job_id
        self.store.record(job_id, rec)
        kind = rec.get("type")
        if kind not in ("Launched", "Decision"):
            return
        state = (self.store.get(job_id) or {}).get("state")
        if kind == "Launched" and state == "starting":
            self.store.transition(job_id, "running", "darknet launched")
        elif kind == "Decision" and state in ("starting", "running"):
            self.store.transition(job_id, "stopping", str(rec.get("reason", "stop decided")))

    async def _supervise(self, r: Running) -> None:
        job_id = r.job_id
        structlog.contextvars.bind_contextvars(job_id=job_id)
        notes: Notifications | None = None
        try:
            r.runner.prepare()  # the outbox goes into a job dir the runner accepted
            # chart.png after each evaluation and at the end, drawn off the event loop (as
            # `trainsup run` does); Discord and Telegram messages upload it.
            chart = attach_chart(
                r.runner.bus.subscribe,
                r.runner.job_dir,
                lambda: r.runner.history,
                schedule=r.runner.schedule,
            )
            notes = attach_notifications(
                r.runner.bus.subscribe,
                self._targets(r.runner.spec.notify),
                r.runner.job_dir,
                job_name=r.runner.spec.name,
                job_id=str(job_id),
                link=job_page(self.config.public_url, job_id),
                chart=chart,
            )
            try:
                result = await r.runner.run()
            finally:
                # The final chart before the job shows as ended (and before its messages).
                await asyncio.to_thread(chart.close)
        except JobSetupError as e:
            self._end(job_id, "failed", "could not start", error=str(e))
        except Exception as e:
            log.exception("runner failed", error=str(e))
            self._end(job_id, "failed", "internal error", error=f"{type(e).__name__}: {e}")
        else:
            if result.status == "detached":
                log.info("left running", pid=(self.store.get(job_id) or {}).get("pid"))
            else:
                state = END_STATE.get(result.status, "failed")
                self._end(job_id, state, f"runner ended: {result.status}")
        finally:
            if notes is not None:
                self._deliver_rest(notes)
            self.running.pop(job_id, None)
            self.wake()

    def _targets(self, job_targets: tuple[NotifyTarget, ...]) -> tuple[NotifyTarget, ...]:
        """The job's own targets, then the config's for every job (each once)."""
        seen = {t.key for t in job_targets}
        return (*job_targets, *(t for t in self.config.notify if t.key not in seen))

    def _deliver_rest(self, notes: Notifications) -> None:
        """Go on delivering a job's messages in the background after its end; what is still
        pending at shutdown stays in its outbox and is sent after the next start."""

        async def flush() -> None:
            try:
                await notes.flush(NOTIFY_FLUSH_S)
            finally:
                await notes.aclose()

        task = asyncio.create_task(flush())
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def redeliver(self) -> None:
        """Messages an earlier daemon left undelivered in ended jobs' outboxes (re-adopted
        jobs deliver theirs from their own listener)."""
        for row in self.store.jobs(TERMINAL):
            job_dir = Path(row["job_dir"]) if row["job_dir"] else None
            summary = job_dir_summary(job_dir) if job_dir is not None else None
            if job_dir is None or not summary or not summary.get("pending"):
                continue
            try:
                spec = parse_spec(row["spec_text"], row["source"], Path(row["base_dir"]))
            except SpecError:
                continue
            notes = attach_notifications(
                lambda _listener: None, self._targets(spec.notify), job_dir, job_id=str(row["id"])
            )
            self._deliver_rest(notes)

    def _end(self, job_id: int, state: str, reason: str, **fields: Any) -> None:
        try:
            self.store.transition(job_id, state, reason, **fields)
        except StoreError as e:
            log.error("state transition refused", error=str(e))

    # --- requests (API and spool) --------------------------------------------------------------

    async def submit(
        self,
        text: str,
        source: str,
        base_dir: Path,
        *,
        priority: int = 0,
        after: int | None = None,
        user: str | None = None,
    ) -> int:
        if not self.accepting:
            raise Conflict("the daemon is shutting down and accepts no new jobs")
        if after is not None and self.store.get(after) is None:
            raise Refused([f"--after {after}: there is no job {after}"])
        admitted = await asyncio.to_thread(admit, self.config, text, source, base_dir, self.gpus)
        job_id = self.store.add_job(
            name=admitted.spec.name,
            priority=priority,
            after=after,
            source=source,
            base_dir=str(base_dir),
            spec_text=admitted.spec_text,
            binary_name=admitted.binary_name,
            binary_path=admitted.binary_path,
            gpus=admitted.gpus,
            user=user,
            check_report=None if admitted.check is None else json.dumps(admitted.check.to_json()),
        )
        log.info("submitted", job_id=job_id, name=admitted.spec.name, priority=priority,
                 after=after, user=user)  # fmt: skip
        self.wake()
        return job_id

    def _row(self, job_id: int) -> dict[str, Any]:
        row = self.store.get(job_id)
        if row is None:
            raise NotFound(f"no job {job_id}")
        return row

    def stop(self, job_id: int, *, now: bool = False) -> str:
        row = self._row(job_id)
        state = row["state"]
        if state == "queued":
            self.store.transition(job_id, "cancelled", "stopped while queued")
            return "cancelled (it was queued)"
        r = self.running.get(job_id)
        if state in TERMINAL or r is None:
            raise Conflict(f"job {job_id} is {state}: nothing to stop")
        r.stop_requested = True
        if now:
            r.runner.request_kill()
            return "stopping now (the newest complete save is kept)"
        r.runner.request_stop("stopped by the user (trainsup stop)")
        return "stopping after the next complete save"

    def cancel(self, job_id: int) -> str:
        row = self._row(job_id)
        if row["state"] != "queued":
            raise Conflict(
                f"job {job_id} is {row['state']}: only a queued job can be cancelled; "
                "stop a running one with `trainsup stop`"
            )
        self.store.transition(job_id, "cancelled", "cancelled by the user")
        return "cancelled"

    async def retry(self, job_id: int) -> int:
        row = self._row(job_id)
        if row["state"] not in TERMINAL:
            raise Conflict(f"job {job_id} is {row['state']}: retry a job once it has ended")
        return await self.submit(row["spec_text"], row["source"], Path(row["base_dir"]),
                                 priority=row["priority"], user=row["user"])  # fmt: skip

    def view(self, job_id: int) -> dict[str, Any]:
        return self._view(self._row(job_id))

    def views(self) -> list[dict[str, Any]]:
        return [self._view(row) for row in self.store.jobs()]

    def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        job_id = row["id"]
        r = self.running.get(job_id)
        p = r.progress if r is not None else None
        device = json.loads(row["device"]) if row["device"] else None
        best = (
            {"iteration": row["best_iteration"], "map": row["best_map"]}
            if row["best_map"] is not None
            else None
        )
        stop = (
            {"rule": row["stop_rule"], "reason": row["stop_reason"]} if row["stop_rule"] else None
        )
        return {
            "id": job_id,
            "name": row["name"],
            "state": row["state"],
            "priority": row["priority"],
            "after": row["after_id"],
            "user": row["user"],
            "binary": row["binary_name"],
            "device": None if device is None else (["gpu", device] if device else "cpu"),
            "submitted": row["submitted"],
            "started": row["started"],
            "ended": row["ended"],
            "pid": row["pid"],
            "iteration": row["iteration"],
            "max_iterations": row["max_iterations"],
            "avg_loss": row["avg_loss"],
            "last_map": row["last_map"],
            "best": best,
            "iterations_per_s": p.iterations_per_s if p else None,
            "budget_left_s": p.budget_left_s if p else None,
            "next_evaluation": p.next_evaluation if p else None,
            "stop": stop,
            "status": row["status"],
            "cause": row["cause"],
            "error": row["error"],
            "relaunches": row["relaunches"],
            "kept": self.store.kept(job_id),
            "job_dir": row["job_dir"],
            "diagnosis": self._diagnosis(job_id),
            # Why a queued job has not started, as the last queue pass said (None otherwise).
            "waiting": self.waiting.get(job_id) if row["state"] == "queued" else None,
        }

    def _diagnosis(self, job_id: int) -> dict[str, Any] | None:
        """The job's latest published diagnosis (live while it runs; the runner's final one
        is in its report.json), in report.json's shape."""
        rec = self.store.last_event(job_id, "Diagnosis")
        if rec is None:
            return None
        return {k: rec.get(k) for k in ("pattern", "confidence", "evidence", "causes", "advice")}

    def output_age(self, row: dict[str, Any]) -> float | None:
        """Seconds since the job's darknet.log last grew; None before it exists."""
        if not row["job_dir"]:
            return None
        try:
            return max(0.0, time.time() - (Path(row["job_dir"]) / "darknet.log").stat().st_mtime)
        except OSError:
            return None

    def stall_check(self) -> None:
        """Say once per job when darknet has printed nothing for `stall_after` seconds (a
        hang the runner cannot see: darknet alive, silent). Acting on it is the runner's."""
        for row in self.store.jobs(("running",)):
            age = self.output_age(row)
            r = self.running.get(row["id"])
            if r is None or age is None:
                continue
            if age >= self.config.stall_after and not r.extra.get("stalled"):
                r.extra["stalled"] = True
                log.warning("no output from darknet", job_id=row["id"], seconds=round(age))
            elif age < self.config.stall_after:
                r.extra.pop("stalled", None)

    def log_path(self, job_id: int) -> Path | None:
        row = self._row(job_id)
        return Path(row["job_dir"]) / "darknet.log" if row["job_dir"] else None


async def serve(config: DaemonConfig) -> int:
    daemon = Daemon(config)
    with contextlib.suppress(asyncio.CancelledError):
        return await daemon.serve()
    return 0
