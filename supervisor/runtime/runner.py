"""Supervise one training job: launch darknet, read its log, decide, evaluate, stop, keep weights.

One asyncio task per job. The loop tails `darknet.log`, turns lines into events (the parser),
folds them into the immutable history and asks the pure policy what to do. The runner only
carries the decisions out: it copies completed saves into `snapshots/`, scores them with the
supervisor's own evaluator when darknet prints no mAP, stops darknet gracefully after the next
completed save (DESIGN "Decisions" 4), and finally applies the retention plan and writes
`report.json`. Every event and decision goes to `events.jsonl`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from supervisor.darknet.cfg import Cfg, cfg_hash
from supervisor.darknet.command import ArgvError, train_argv, weights_names
from supervisor.darknet.evaluate import EvaluationError, evaluate_weights
from supervisor.darknet.jobfiles import prepare_job_files
from supervisor.darknet.logparse import LogParser
from supervisor.darknet.weights import read_weights_header, weights_complete
from supervisor.runtime import launch
from supervisor.runtime.binary import BinaryError, detect_flavour, resolve_binary
from supervisor.runtime.jobpolicy import policy_for, schedule_of
from supervisor.runtime.tail import LogTail
from supervisor.spec import JobSpec, redacted_yaml
from supervisor.training.diagnose import gpu_advice
from supervisor.training.events import (
    Event,
    FatalError,
    Flavour,
    GpuError,
    Iteration,
    MapResult,
    Tick,
    WeightsSaved,
)
from supervisor.training.history import Evaluation, History
from supervisor.training.policy import Evaluate, Policy, Stop, pct
from supervisor.training.retention import Snapshot, plan_retention
from supervisor.training.schedule import Schedule

log = structlog.get_logger("trainsup.runner")

Status = Literal["finished", "stopped", "failed", "killed", "cancelled"]


class JobSetupError(Exception):
    """The job cannot start (bad files, binary, arguments); the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One update for a progress line."""

    iteration: int
    max_iterations: int | None
    avg_loss: float | None
    last_map: float | None
    best_map: float | None
    best_iteration: int | None
    iterations_per_s: float | None
    eta_s: float | None
    stopping: str | None


@dataclass(slots=True)
class _Save:
    path: Path
    iteration: int


@dataclass
class RunnerConfig:
    """Knobs of the runner itself (not of the training).

    Attributes:
        poll: seconds between looks at darknet.log.
        tick: seconds between clock ticks fed to the policy (time budgets).
        grace: seconds between TERM and KILL when stopping.
        save_wait: longest wait, in seconds, for the next save after a stop was decided;
            None = three times the time darknet currently takes for 100 iterations, ≥ 60 s.
        binary_override: run this binary whatever the spec says (tests, `trainsup demo`).
    """

    poll: float = 0.2
    tick: float = 1.0
    grace: float = 10.0
    save_wait: float | None = None
    binary_override: str | None = None


@dataclass
class JobResult:
    status: Status
    job_dir: Path
    report: dict[str, Any] = field(default_factory=dict)


class JobRunner:
    """Runs one job in `job_dir` (created and laid out as DESIGN "The job dir" says).

    Attributes:
        spec: the validated job.
        job_dir: where everything of the job lives.
        config: the runner's own knobs.
        on_progress: called after every iteration line and evaluation with a `Progress`.
    """

    def __init__(
        self,
        spec: JobSpec,
        job_dir: Path,
        config: RunnerConfig | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.spec = spec
        self.job_dir = job_dir.absolute()
        self.config = config or RunnerConfig()
        self.on_progress = on_progress
        self.history = History()
        self.stop_decision: Stop | None = None
        self._stop_requested_at: float | None = None
        self._kill_now = False
        self._terminated = False
        self._pending_save: _Save | None = None
        self._last_complete: _Save | None = None
        self._evaluating: set[int] = set()
        self._eval_queue: asyncio.Queue[tuple[int, Path]] = asyncio.Queue()
        self._events_file: Any = None
        self._eval_errors: list[str] = []
        self._rate: list[tuple[float, int]] = []  # (time, iteration) for it/s

    # --- public controls ---------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped by the user") -> None:
        """Graceful stop: end after the next completed save (nothing is lost)."""
        if self.stop_decision is None:
            self._decide_stop(Stop("user", reason, self.history.iteration, {}, ""))

    def request_kill(self) -> None:
        """Stop now, without waiting for a save (the newest completed save is still kept)."""
        self._kill_now = True

    # --- setup --------------------------------------------------------------------------------

    def _prepare(self) -> None:
        spec = self.spec
        # What can be refused without touching the disk is refused first.
        try:
            self.binary = resolve_binary(self.config.binary_override or spec.darknet.binary)
            flavour = spec.darknet.flavour
            self.flavour: Flavour = detect_flavour(self.binary) if flavour == "auto" else flavour
        except BinaryError as e:
            raise JobSetupError(str(e)) from None
        source = spec.evaluation.source
        if source == "auto":
            source = "supervisor" if self.flavour == "pjreddie" else "darknet"
        self.own_eval = source == "supervisor"
        if not self.own_eval and spec.evaluation.iou_threshold != 0.5:
            # darknet's training-time -map scores at IoU 0.5 (facts §2); the job asked for
            # another threshold, which only the supervisor's own evaluation honours.
            raise JobSetupError(
                f"evaluation.iou_threshold is {spec.evaluation.iou_threshold}, but darknet's "
                "-map measures at 0.5: set evaluation.source: supervisor to score at "
                f"{spec.evaluation.iou_threshold}, or use iou_threshold: 0.5"
            )
        self.job_dir.mkdir(parents=True, exist_ok=True)
        (self.job_dir / "job.yaml").write_text(redacted_yaml(spec))
        self.files = prepare_job_files(self.job_dir, spec.darknet.data, spec.darknet.cfg)
        self.cfg = Cfg.load(self.files.cfg)
        self.schedule: Schedule = schedule_of(self.cfg)
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
        try:
            self.argv = train_argv(
                self.binary,
                self.flavour,
                self.files.data,
                self.files.cfg,
                spec.darknet.weights,
                gpus=spec.darknet.gpus,
                map=not self.own_eval,
                extra_args=spec.darknet.extra_args,
            )
        except ArgvError as e:
            raise JobSetupError(str(e)) from None
        self.names = weights_names(self.flavour, self.files.base)
        for d in ("snapshots", "kept"):
            (self.job_dir / d).mkdir(exist_ok=True)

    # --- main loop ----------------------------------------------------------------------------

    async def run(self) -> JobResult:
        self._prepare()
        self._events_file = (self.job_dir / "events.jsonl").open("a", encoding="utf-8")
        try:
            return await self._run()
        finally:
            self._events_file.close()

    async def _run(self) -> JobResult:
        logfile = self.job_dir / "darknet.log"
        tail = LogTail(logfile, offset=logfile.stat().st_size if logfile.exists() else 0)
        parser = LogParser(self.flavour)
        number = 1
        handle, proc = launch.start(
            self.argv,
            number=number,
            log=logfile,
            exit_path=self.job_dir / "exit.json",
            cwd=self.files.run,
        )
        (self.job_dir / "launch.json").write_text(json.dumps(handle.to_json()))
        # The wrapper's marker line in darknet.log becomes the Launch event (with its time).
        log.info("launched", job=self.spec.name, pid=handle.pid, argv=self.argv)
        evaluator = asyncio.create_task(self._evaluate_loop())
        next_tick = time.monotonic()
        try:
            while True:
                for line in tail.read_lines():
                    for ev in parser.feed_line(line):
                        self._on_event(ev)
                exited = proc.poll() is not None
                if exited:
                    for line in tail.read_lines():
                        for ev in parser.feed_line(line):
                            self._on_event(ev)
                    rest = tail.rest()
                    for ev in [*(parser.feed(rest) if rest else []), *parser.close()]:
                        self._on_event(ev)
                    break
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.config.tick
                    self._on_event(Tick(time.time()))
                await self._act_on_stop(handle)
                await asyncio.sleep(self.config.poll)
        except asyncio.CancelledError:
            await launch.terminate(handle, self.config.grace)
            proc.wait()
            raise
        # darknet is gone: complete what it saved, score what is due, then keep and report.
        self._complete_pending_save(final=True)
        exit_entry = launch.read_exit(self.job_dir / "exit.json", number)
        status, cause = self._end_cause(exit_entry)
        if status == "finished":
            self._snapshot_final()
        self._evaluate_last()
        await self._eval_queue.join()
        evaluator.cancel()
        result = self._finish(status, cause, exit_entry)
        return result

    # --- events and decisions -----------------------------------------------------------------

    def _write(self, kind: str, payload: dict[str, Any]) -> None:
        rec = {"type": kind, **payload}
        self._events_file.write(json.dumps(_clean(rec)) + "\n")
        self._events_file.flush()

    def _on_event(self, ev: Event) -> None:
        if getattr(ev, "time", None) is None:
            ev = dataclasses.replace(ev, time=time.time())
        if isinstance(ev, Iteration):
            self._complete_pending_save()
            self._rate.append((time.monotonic(), ev.iteration))
            self._rate = self._rate[-200:]
        if not isinstance(ev, Tick):
            self._write(type(ev).__name__, dataclasses.asdict(ev))
        self.history = self.history.add(ev)
        if isinstance(ev, WeightsSaved):
            # darknet writes one file at a time: a new `Saving weights` line means the previous
            # file is complete (AlexeyAB saves _best and then _last after one iteration).
            self._complete_pending_save(final=True)
            it = ev.iteration if ev.iteration is not None else self.history.iteration
            self._pending_save = _Save(self._weights_path(ev.path), it)
        if isinstance(ev, Iteration | MapResult | Tick):
            self._decide()
        if isinstance(ev, Iteration | MapResult):
            self._progress()

    def _weights_path(self, printed: str) -> Path:
        p = Path(printed)
        return p if p.is_absolute() else self.files.run / p

    def _decide(self) -> None:
        d = self.policy.decide(self.history, self.schedule)
        if isinstance(d, Stop):
            self._decide_stop(d)
        elif isinstance(d, Evaluate) and d.iteration not in self._evaluating:
            save = self._last_complete
            if save is not None and save.iteration == d.iteration:
                self._evaluating.add(d.iteration)
                snap = self._snapshot(save)
                if snap is not None:
                    self._eval_queue.put_nowait((d.iteration, snap))

    def _decide_stop(self, d: Stop) -> None:
        if self.stop_decision is not None:
            return
        self.stop_decision = d
        self._stop_requested_at = time.monotonic()
        self._write("Decision", {"decision": "stop", **dataclasses.asdict(d)})
        log.info("stopping", job=self.spec.name, rule=d.rule, reason=d.reason)

    def _complete_pending_save(self, final: bool = False) -> None:
        """darknet printed `Saving weights` before writing; the next iteration line, the next
        save, or its exit (`final`) means the write finished (facts §4)."""
        save = self._pending_save
        if save is None:
            return
        if not final and self.history.iteration <= save.iteration:
            return
        self._pending_save = None
        if not save.path.exists():
            return
        self._last_complete = save
        if self.stop_decision is not None and not self._terminated:
            self._snapshot(save)
        best = self.history.best
        if (
            not self.own_eval
            and self.names.best is not None
            and save.path.name == self.names.best
            and best is not None
            and best.iteration == save.iteration
        ):
            # darknet's -map found a new best and wrote _best.weights: copy it now, before a
            # later best overwrites it, so retention can keep (and rank) it.
            self._snapshot(save)

    def _snapshot(self, save: _Save) -> Path | None:
        """Copy a completed save to snapshots/<iteration>.weights and check the copy."""
        dest = self.job_dir / "snapshots" / f"{save.iteration}.weights"
        if dest.exists():
            return dest
        tmp = dest.with_suffix(".tmp")
        try:
            shutil.copyfile(save.path, tmp)
            header = read_weights_header(tmp)
        except (OSError, ValueError) as e:
            tmp.unlink(missing_ok=True)
            self._write("SnapshotFailed", {"iteration": save.iteration, "error": str(e)})
            return None
        seen_it = header.iteration(self.cfg.batch, self.cfg.subdivisions)
        if seen_it != save.iteration:
            # darknet was already overwriting the file with a later save: not this iteration.
            self._write(
                "SnapshotFailed",
                {"iteration": save.iteration, "error": f"header says iteration {seen_it}"},
            )
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, dest)
        ev = self._evaluation_at(save.iteration)
        self._write_snapshot_meta(save.iteration, ev.result if ev else None)
        return dest

    def _snapshot_final(self) -> None:
        final = self.files.backup / self.names.final
        if final.exists():
            it = self.schedule.max_batches or self.history.iteration
            snap = self._snapshot(_Save(final, it))
            if snap is not None and self.own_eval and not self.history.evaluated(it):
                self._evaluating.add(it)
                self._eval_queue.put_nowait((it, snap))

    def _evaluate_last(self) -> None:
        """Score the newest snapshot too, so the kept `last` weights carry their mAP."""
        if not self.own_eval:
            return
        snaps = self.job_dir / "snapshots"
        its = [int(p.stem) for p in snaps.glob("*.weights") if p.stem.isdigit()]
        if not its:
            return
        it = max(its)
        if it not in self._evaluating and not self.history.evaluated(it):
            self._evaluating.add(it)
            self._eval_queue.put_nowait((it, snaps / f"{it}.weights"))

    async def _act_on_stop(self, handle: launch.LaunchHandle) -> None:
        if self._terminated or (self.stop_decision is None and not self._kill_now):
            return
        saved = (
            self._last_complete is not None
            and self.stop_decision is not None
            and self._last_complete.iteration >= self.stop_decision.iteration
            and (self.job_dir / "snapshots" / f"{self._last_complete.iteration}.weights").exists()
        )
        waited = time.monotonic() - (self._stop_requested_at or time.monotonic())
        if self._kill_now or saved or waited > self._save_wait():
            self._terminated = True
            how = await launch.terminate(handle, 0.0 if self._kill_now else self.config.grace)
            self._write(
                "Terminated", {"how": how, "waited_s": round(waited, 1), "after_save": saved}
            )

    def _save_wait(self) -> float:
        if self.config.save_wait is not None:
            return self.config.save_wait
        ips = self._iterations_per_s()
        return max(60.0, 3 * 100 / ips) if ips else 600.0

    # --- evaluation ---------------------------------------------------------------------------

    async def _evaluate_loop(self) -> None:
        while True:
            it, weights = await self._eval_queue.get()
            try:
                res = await evaluate_weights(
                    self.binary,
                    self.files.data,
                    self.files.cfg,
                    weights,
                    iou_threshold=self.spec.evaluation.iou_threshold,
                    work_dir=self.job_dir / "results",
                    flavour=self.flavour,
                )
                m = res.to_map_result(iteration=it, weights=str(weights), time=time.time())
                self._on_event(m)
                self._write_snapshot_meta(it, m)
            except EvaluationError as e:
                self._eval_errors.append(str(e))
                self._write("EvaluationFailed", {"iteration": it, "error": str(e)})
                log.warning("evaluation failed", job=self.spec.name, iteration=it, error=str(e))
            finally:
                self._eval_queue.task_done()

    def _evaluation_at(self, iteration: int) -> Evaluation | None:
        """The latest valid evaluation of the weights of `iteration`, if any."""
        for e in reversed(self.history.evaluations):
            if e.iteration == iteration and e.valid:
                return e
        return None

    def _write_snapshot_meta(self, it: int, m: MapResult | None = None) -> None:
        path = self.job_dir / "snapshots" / f"{it}.json"
        meta: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        avg = self.history.loss_around(it, 1)
        meta.update(
            iteration=it,
            cfg_hash=self.cfg_hash,
            time=time.time(),
            avg_loss=avg if avg is not None and math.isfinite(avg) else None,
        )
        if m is not None:
            meta.update(
                map=m.map,
                valid=m.valid,
                iou_threshold=m.iou_threshold,
                per_class=[dataclasses.asdict(c) for c in m.per_class],
                average_iou=m.average_iou,
                precision=m.precision,
                recall=m.recall,
            )
        path.write_text(json.dumps(meta, indent=2))

    # --- the end ------------------------------------------------------------------------------

    def _end_cause(self, entry: dict[str, Any] | None) -> tuple[Status, str]:
        h = self.history
        problems = [f"line {e.line}: {e.message}" for e in _errors(h)]
        if self._terminated:
            d = self.stop_decision
            return "stopped", d.reason if d else "stopped at once by the user"
        if entry is None:
            return "killed", "darknet and its wrapper were killed (no exit record)"
        if entry.get("error"):
            return "failed", f"darknet could not start: {entry['error']}"
        rc, sig = entry.get("returncode"), entry.get("signal")
        how = f"exit status {rc}" if rc is not None else f"signal {sig}"
        if h.gpu_errors:
            problems.append("advice: " + gpu_advice(h.gpu_errors[0].kind))
        if weights_complete(self.files.backup / self.names.final):
            # Debian's pjreddie sometimes segfaults while freeing memory after writing _final:
            # a complete _final file is the proof of a finished run, not the exit status.
            crashed = "" if rc == 0 else f" (then ended with {how}, after saving)"
            return "finished", f"darknet reached max_batches ({self.schedule.max_batches}){crashed}"
        if rc == 0:
            why = "; ".join(problems) or "no final weights were written"
            # pjreddie's file_error() exits 0 (facts §5): exit status alone proves nothing.
            return "failed", f"darknet exited 0 without finishing: {why}"
        return "failed", f"darknet failed ({how})" + (
            ": " + "; ".join(problems) if problems else ""
        )

    def _finish(self, status: Status, cause: str, exit_entry: dict[str, Any] | None) -> JobResult:
        snaps = self.job_dir / "snapshots"
        known = sorted(int(p.stem) for p in snaps.glob("*.weights") if p.stem.isdigit())
        snapshots = []
        for it in known:
            ev = self._evaluation_at(it)
            snapshots.append(Snapshot(it, ev.map, ev.valid) if ev else Snapshot(it))
        r = self.spec.retain
        plan = plan_retention(snapshots, best=r.best, last=r.last, top_k=r.top_k)
        kept: dict[str, Any] = {}
        kept_dir = self.job_dir / "kept"
        roles: list[tuple[str, Snapshot]] = []
        if plan.best:
            roles.append(("best", plan.best))
        if plan.last:
            roles.append(("last", plan.last))
        roles += [(f"top{k + 1}", s) for k, s in enumerate(plan.top)]
        for role, s in roles:
            src = snaps / f"{s.iteration}.weights"
            if not src.exists():
                continue
            dest = kept_dir / f"{role}.weights"
            dest.unlink(missing_ok=True)
            os.link(src, dest)
            meta_src = snaps / f"{s.iteration}.json"
            meta = json.loads(meta_src.read_text()) if meta_src.exists() else {}
            meta["role"] = role
            (kept_dir / f"{role}.json").write_text(json.dumps(meta, indent=2))
            kept[role] = {"path": str(dest), "iteration": s.iteration, "map": s.map}
        for it in plan.prune:
            (snaps / f"{it}.weights").unlink(missing_ok=True)
        h = self.history
        d = self.stop_decision
        report: dict[str, Any] = {
            "job": self.spec.name,
            "status": status,
            "cause": cause,
            "flavour": self.flavour,
            "argv": self.argv,
            "evaluation_source": "supervisor" if self.own_eval else "darknet",
            "stop": None
            if d is None
            else {
                "rule": d.rule,
                "reason": d.reason,
                "iteration": d.iteration,
                "advice": d.advice,
                "numbers": dict(d.numbers),
            },
            "iterations": {
                "first": h.first_iteration,
                "last": h.iteration,
                "lines": h.iteration_lines,
            },
            "final_avg_loss": _finite(h.last.avg_loss) if h.last else None,
            "elapsed_s": round(h.elapsed, 1),
            "evaluations": [
                {
                    "iteration": e.iteration,
                    "map": _finite(e.map),
                    "valid": e.valid,
                    "avg_loss": e.avg_loss,
                }
                for e in h.evaluations
            ],
            "best": None if h.best is None else {"iteration": h.best.iteration, "map": h.best.map},
            "kept": kept,
            "exit": exit_entry,
            "evaluation_errors": self._eval_errors,
            "errors": [{"line": e.line, "message": e.message} for e in _errors(h)],
        }
        (self.job_dir / "report.json").write_text(json.dumps(_clean(report), indent=2))
        self._write("Finished", {"status": status, "cause": cause})
        return JobResult(status, self.job_dir, report)

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
        eta = (cap - h.iteration) / ips if cap and ips else None
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
                eta_s=eta,
                stopping=self.stop_decision.rule if self.stop_decision else None,
            )
        )


def _errors(h: History) -> list[GpuError | FatalError]:
    return sorted([*h.gpu_errors, *h.fatal_errors], key=lambda e: e.line)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _clean(o: object) -> Any:
    """JSON-safe: NaN/inf become null (JSON has none), paths and tuples plain values."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple | set):
        return [_clean(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    return o


def format_progress(p: Progress) -> str:
    it = f"{p.iteration}" + (f"/{p.max_iterations}" if p.max_iterations else "")
    parts = [f"it {it}"]
    if p.avg_loss is not None:
        parts.append(f"avg loss {p.avg_loss:.3f}")
    if p.last_map is not None:
        parts.append(f"mAP {pct(p.last_map)}")
    if p.best_map is not None:
        parts.append(f"best {pct(p.best_map)}@{p.best_iteration}")
    if p.iterations_per_s:
        parts.append(f"{p.iterations_per_s:.2f} it/s")
    if p.eta_s is not None:
        # The budget's end: the policy usually stops earlier, which no ETA can promise.
        parts.append(f"{p.max_iterations} in {int(p.eta_s // 60)}m{int(p.eta_s % 60):02d}s")
    if p.stopping:
        parts.append(f"stopping ({p.stopping}) after the next save")
    return " · ".join(parts)
