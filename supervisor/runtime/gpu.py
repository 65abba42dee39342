"""The GPUs a training runs on: devices and per-process memory, behind one small interface.

Three backends (DESIGN "Decisions" 5 needs to know how much memory darknet uses and how much
is free):
- `NvmlBackend`: NVIDIA's management library through `pynvml` (distribution nvidia-ml-py).
  Initialised once per process; every call handles `NVMLError` on its own (a device that stops
  answering, a field a card does not have) so one missing reading never ends a sample.
- `SimulatedGpu`: reads the files of a simulated GPU (below). A documented testing hook, chosen
  only by `TRAINSUP_SIM_GPU=<dir>`, never by default.
- `NoGpu`: no NVIDIA GPU or driver here (`reason` says why, e.g. "pynvml: NVML Shared Library
  Not Found"): no devices, no process memory, and CPU training works as before.

`gpu_backend()` picks: the simulation when `TRAINSUP_SIM_GPU` is set, else NVML when it
initialises, else `NoGpu` with the reason.

The simulated GPU's files (the contract with `tests/standins/gpu_need.py`):
    <dir>/devices.json     [{"index": 0, "uuid": "GPU-sim-0", "name": "Simulated 12 GB",
                             "total_mib": 12288, "other_used_mib": 300}, …]
    <dir>/proc-<pid>.json  {"pid": <pid>, "gpu": <index>, "used_mib": <float>}, written
                           atomically by each running stand-in darknet, removed when it exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
import structlog

SIM_ENV = "TRAINSUP_SIM_GPU"
MIB = 1024 * 1024

log = structlog.get_logger("trainsup.gpu")


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU as read now; None where the backend cannot tell."""

    index: int
    uuid: str | None
    name: str  # the GPU model ("NVIDIA GeForce RTX 3060"): the memory model's key
    total_mib: float | None
    used_mib: float | None
    free_mib: float | None
    util_percent: float | None
    temperature_c: float | None
    power_w: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class GpuBackend(Protocol):
    def devices(self) -> list[GpuDevice]:
        """Every GPU, in index order; [] without one."""
        ...

    def process_memory(self, pid: int) -> dict[int, float]:
        """GPU index → MiB used by `pid` and its descendants (darknet runs under a wrapper),
        as far as the backend shows per-process use; {} when it uses none or cannot tell."""
        ...


@dataclass(frozen=True, slots=True)
class NoGpu:
    """No NVIDIA GPU or driver: training runs on the CPU as it always did."""

    reason: str

    def devices(self) -> list[GpuDevice]:
        return []

    def process_memory(self, pid: int) -> dict[int, float]:
        return {}


def _family(pid: int) -> set[int]:
    """`pid` and its descendants: NVML lists the process that holds the CUDA context, which
    is darknet, a child of the wrapper whose pid the runner knows."""
    try:
        p = psutil.Process(pid)
        return {pid} | {c.pid for c in p.children(recursive=True)}
    except psutil.Error:
        return {pid}


class NvmlBackend:
    """NVML through pynvml. Construct it once (it calls `nvmlInit`, which raises `NVMLError`
    where there is no driver); `gpu_backend()` keeps one per process."""

    def __init__(self) -> None:
        import pynvml

        self._nv = pynvml
        pynvml.nvmlInit()
        self._lock = threading.Lock()  # the sampler reads from a worker thread

    def _read(self, fn: str, *args: Any) -> Any:
        """One NVML call; None when that reading is not available on this device."""
        try:
            return getattr(self._nv, fn)(*args)
        except self._nv.NVMLError as e:
            log.debug("nvml reading unavailable", call=fn, error=str(e))
            return None

    def _count(self) -> int:
        n = self._read("nvmlDeviceGetCount")
        return int(n) if n is not None else 0

    def devices(self) -> list[GpuDevice]:
        out = []
        with self._lock:
            for i in range(self._count()):
                h = self._read("nvmlDeviceGetHandleByIndex", i)
                if h is None:
                    continue
                mem = self._read("nvmlDeviceGetMemoryInfo", h)
                util = self._read("nvmlDeviceGetUtilizationRates", h)
                temp = self._read("nvmlDeviceGetTemperature", h, self._nv.NVML_TEMPERATURE_GPU)
                power = self._read("nvmlDeviceGetPowerUsage", h)  # milliwatts
                name = self._read("nvmlDeviceGetName", h)
                uuid = self._read("nvmlDeviceGetUUID", h)
                out.append(
                    GpuDevice(
                        index=i,
                        uuid=_text(uuid),
                        name=_text(name) or f"GPU {i}",
                        total_mib=mem.total / MIB if mem is not None else None,
                        used_mib=mem.used / MIB if mem is not None else None,
                        free_mib=mem.free / MIB if mem is not None else None,
                        util_percent=float(util.gpu) if util is not None else None,
                        temperature_c=float(temp) if temp is not None else None,
                        power_w=power / 1000 if power is not None else None,
                    )
                )
        return out

    def process_memory(self, pid: int) -> dict[int, float]:
        family = _family(pid)
        out: dict[int, float] = {}
        with self._lock:
            for i in range(self._count()):
                h = self._read("nvmlDeviceGetHandleByIndex", i)
                procs = (
                    self._read("nvmlDeviceGetComputeRunningProcesses", h) if h is not None else None
                )
                for p in procs or ():
                    used = getattr(p, "usedGpuMemory", None)
                    # None (or NVML's "not available" sentinel) where the driver hides
                    # per-process use: WSL, some containers.
                    if p.pid in family and isinstance(used, int) and 0 <= used < 2**63:
                        out[i] = out.get(i, 0.0) + used / MIB
        return out

    def close(self) -> None:
        with self._lock, contextlib.suppress(self._nv.NVMLError):
            self._nv.nvmlShutdown()


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


class SimulatedGpu:
    """The simulated GPU of the tests (module docstring): devices.json plus one file per
    running stand-in darknet. Used = other users + every stand-in's use on that device."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _procs(self) -> list[Mapping[str, Any]]:
        out = []
        for f in self.dir.glob("proc-*.json"):
            try:
                out.append(json.loads(f.read_text()))
            except (OSError, ValueError):  # removed as we looked: that process has ended
                continue
        return out

    def devices(self) -> list[GpuDevice]:
        try:
            raw = json.loads((self.dir / "devices.json").read_text())
        except (OSError, ValueError) as e:
            log.warning("simulated GPU unreadable", dir=str(self.dir), error=str(e))
            return []
        procs = self._procs()
        out = []
        for d in sorted(raw, key=lambda d: int(d["index"])):
            i = int(d["index"])
            mine = [float(p["used_mib"]) for p in procs if int(p["gpu"]) == i]
            total = float(d["total_mib"])
            used = float(d.get("other_used_mib", 0.0)) + sum(mine)
            out.append(
                GpuDevice(
                    index=i,
                    uuid=d.get("uuid"),
                    name=str(d.get("name", f"Simulated GPU {i}")),
                    total_mib=total,
                    used_mib=used,
                    free_mib=max(0.0, total - used),
                    util_percent=100.0 if mine else 0.0,
                    temperature_c=None,
                    power_w=None,
                )
            )
        return out

    def process_memory(self, pid: int) -> dict[int, float]:
        family = _family(pid)
        out: dict[int, float] = {}
        for p in self._procs():
            if int(p["pid"]) in family:
                g = int(p["gpu"])
                out[g] = out.get(g, 0.0) + float(p["used_mib"])
        return out


_nvml: NvmlBackend | None = None
_nvml_lock = threading.Lock()


def gpu_backend(env: Mapping[str, str] | None = None) -> GpuBackend:
    """The simulation when TRAINSUP_SIM_GPU is set, else NVML when it initialises (once per
    process), else `NoGpu` with the reason."""
    global _nvml
    env = os.environ if env is None else env
    sim = env.get(SIM_ENV)
    if sim:
        return SimulatedGpu(sim)
    with _nvml_lock:
        if _nvml is not None:
            return _nvml
        try:
            _nvml = NvmlBackend()
            return _nvml
        except ImportError as e:
            return NoGpu(f"pynvml is not installed ({e})")
        except Exception as e:  # NVMLError and its subclasses: no library, no driver, no GPU
            return NoGpu(f"pynvml: {e}" if str(e) else f"pynvml: {type(e).__name__}")


def find(devices: Iterable[GpuDevice], index: int) -> GpuDevice | None:
    return next((d for d in devices if d.index == index), None)


def describe(backend: GpuBackend) -> str:
    """One line for logs and `report.json`: which GPUs, or why none."""
    if isinstance(backend, NoGpu):
        return f"no NVIDIA GPU: {backend.reason}"
    devs = backend.devices()
    if not devs:
        return "no GPU found"
    kind = "simulated " if isinstance(backend, SimulatedGpu) else ""
    parts = [
        f"{d.index}: {d.name}"
        + (
            f" ({d.free_mib / 1024:.1f}/{d.total_mib / 1024:.1f} GB free)"
            if d.total_mib is not None and d.free_mib is not None
            else ""
        )
        for d in devs
    ]
    return f"{kind}GPUs " + ", ".join(parts)
