"""GPU memory on a schedule: `GpuSample` records onto the runner's bus, and the peak per launch.

The sampler is one of the runner's listeners (DESIGN "Decisions" 9): it runs as an asyncio task
beside the runner, reads the backend in a worker thread (an NVML call or a file read must never
block the runner's loop), and publishes from the loop, so records reach the bus in order with
the runner's own. It also listens: a `Launch` record tells it which launch the samples belong to.

What it publishes, every `every_s` (10 s) at most, per GPU of the job:

    GpuSample {gpu, name, used_mib, total_mib, process_mib, util, temp, power, launch, peak_mib}

- only when something changed enough: the first sample of a launch on a GPU, the device's use
  moved by `change_mib` (256 MiB) since the last published one, the process reached a new peak
  (by more than `peak_step_mib`, 64 MiB), or nothing was published for `quiet_s` (5 min);
- `process_mib`: what darknet (and its children) hold on that GPU; None where the backend cannot
  see per-process use (WSL, some containers) or no darknet runs;
- `peak_mib`: the launch's largest `process_mib` so far (on `stop()` and at the next launch the
  last peak is published if it grew since), so `peak_memory(records)` is exact to the sampling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from supervisor.runtime.bus import Record
from supervisor.runtime.gpu import GpuBackend, GpuDevice

log = structlog.get_logger("trainsup.gpu")


@dataclass(slots=True)
class _Last:
    time: float
    used_mib: float | None
    peak_mib: float | None  # the peak as last published


class GpuSampler:
    """`GpuSampler(backend, bus.publish, pid_getter, gpus=[0], every_s=10).start()` inside the
    runner's loop; `bus.subscribe(sampler)` so it sees `Launch`; `await sampler.stop()` at the
    end. `pid_getter()` returns darknet's (or its wrapper's) pid, None between launches."""

    def __init__(
        self,
        backend: GpuBackend,
        publish: Callable[[Record], None],
        pid_getter: Callable[[], int | None],
        gpus: Sequence[int] | None = None,
        every_s: float = 10.0,
        *,
        launch_getter: Callable[[], int] | None = None,
        change_mib: float = 256.0,
        peak_step_mib: float = 64.0,
        quiet_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.publish = publish
        self.pid_getter = pid_getter
        self.gpus = None if gpus is None else list(gpus)  # None: every GPU the backend shows
        self.every_s = every_s
        self.launch_getter = launch_getter
        self.change_mib = change_mib
        self.peak_step_mib = peak_step_mib
        self.quiet_s = quiet_s
        self.clock = clock
        self.launch = 0  # from the bus's Launch records unless launch_getter is given
        self._last: dict[tuple[int, int], _Last] = {}  # (launch, gpu) → last published
        self._peak: dict[tuple[int, int], float] = {}
        self._latest: dict[int, Record] = {}  # gpu → the latest sample, published or not
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    # -- the bus listener --------------------------------------------------------------------
    def __call__(self, record: Record, /) -> None:
        launch = record.get("number")
        if record.get("type") == "Launch" and isinstance(launch, int) and not self.launch_getter:
            self._flush_peaks()
            self.launch = launch

    def _launch(self) -> int:
        return self.launch_getter() if self.launch_getter is not None else self.launch

    # -- the schedule ------------------------------------------------------------------------
    def start(self) -> None:
        """Start sampling on the running loop (the runner's)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="gpu-sampler")

    async def stop(self) -> None:
        """Stop, then publish each launch's peak where it grew since its last sample."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._flush_peaks()

    async def _run(self) -> None:
        while True:
            pid = self.pid_getter()
            try:
                devices, procs = await asyncio.to_thread(self._read, pid)
            except Exception as e:  # a sampler must never end a training
                if not self._warned:
                    log.warning("GPU sampling failed; retrying", error=str(e))
                    self._warned = True
            else:
                for r in self._decide(devices, procs, pid is not None):
                    self.publish(r)
            await asyncio.sleep(self.every_s)

    def _read(self, pid: int | None) -> tuple[list[GpuDevice], dict[int, float]]:
        devices = self.backend.devices()
        procs = self.backend.process_memory(pid) if pid is not None else {}
        return devices, procs

    def sample_once(self) -> list[Record]:
        """Read now and publish what the rules say (for tests and a last reading at an
        out-of-memory: the runner may call it from the loop; it blocks for one reading)."""
        pid = self.pid_getter()
        devices, procs = self._read(pid)
        out = self._decide(devices, procs, pid is not None)
        for r in out:
            self.publish(r)
        return out

    def latest(self, gpu: int) -> Record | None:
        """The latest reading of `gpu`, published or not (the GPU's use at an out-of-memory)."""
        return self._latest.get(gpu)

    # -- what to publish ---------------------------------------------------------------------
    def _decide(
        self, devices: Iterable[GpuDevice], procs: dict[int, float], running: bool
    ) -> list[Record]:
        now = self.clock()
        launch = self._launch()
        out = []
        for d in devices:
            if self.gpus is not None and d.index not in self.gpus:
                continue
            # A process NVML lists with no memory of its own on this GPU holds 0 there; one it
            # cannot see per process stays None.
            mine = procs.get(d.index) if procs else None
            if running and procs and mine is None:
                mine = 0.0
            k = (launch, d.index)
            peak = self._peak.get(k)
            if mine is not None and (peak is None or mine > peak):
                peak = self._peak[k] = mine
            rec: Record = {
                "type": "GpuSample",
                "time": now,
                "gpu": d.index,
                "name": d.name,
                "used_mib": _r(d.used_mib),
                "total_mib": _r(d.total_mib),
                "process_mib": _r(mine),
                "util": d.util_percent,
                "temp": d.temperature_c,
                "power": _r(d.power_w),
                "launch": launch,
                "peak_mib": _r(peak),
            }
            self._latest[d.index] = rec
            last = self._last.get(k)
            if last is None or self._changed(last, rec, now):
                self._last[k] = _Last(now, d.used_mib, peak)
                out.append(rec)
        return out

    def _changed(self, last: _Last, rec: Record, now: float) -> bool:
        used, peak = rec["used_mib"], rec["peak_mib"]
        if now - last.time >= self.quiet_s:
            return True
        if used is not None and (
            last.used_mib is None or abs(used - last.used_mib) >= self.change_mib
        ):
            return True
        return peak is not None and (
            last.peak_mib is None or peak - last.peak_mib > self.peak_step_mib
        )

    def _flush_peaks(self) -> None:
        for (launch, gpu), peak in list(self._peak.items()):
            last = self._last.get((launch, gpu))
            rec = self._latest.get(gpu)
            if rec is None or last is None or last.peak_mib == peak:
                continue
            self._last[(launch, gpu)] = _Last(self.clock(), rec["used_mib"], peak)
            self.publish({**rec, "time": self.clock(), "launch": launch, "peak_mib": _r(peak)})


def _r(v: float | None) -> float | None:
    return None if v is None else round(float(v), 1)


def peak_memory(records: Iterable[Record]) -> dict[int, float]:
    """Launch number → the peak GPU memory of that launch, in MiB, for `report.json`: the
    largest per-process use on any one of its GPUs (each holds a whole copy of the network,
    so the largest is what has to fit a card). Where the backend never showed per-process use,
    the device's whole use stands in (an overestimate: other users count too)."""
    own: dict[int, float] = {}
    device: dict[int, float] = {}
    for r in records:
        if r.get("type") != "GpuSample":
            continue
        n = int(r.get("launch") or 0)
        for v in (r.get("process_mib"), r.get("peak_mib")):
            if v is not None:
                own[n] = max(own.get(n, 0.0), float(v))
        if r.get("used_mib") is not None:
            device[n] = max(device.get(n, 0.0), float(r["used_mib"]))
    return {n: own.get(n, device.get(n, 0.0)) for n in sorted(own.keys() | device.keys())}
