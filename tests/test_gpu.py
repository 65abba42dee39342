"""GPU backends (NVML with a fake pynvml, the simulated GPU, no GPU), the sampler, the store.

This machine has no NVIDIA GPU: NVML is exercised through a fake `pynvml` module that behaves
as the real one does (NVMLError per call, usedGpuMemory None where hidden) and through the real
one failing cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import structlog

from supervisor.runtime import gpu as gpu_mod
from supervisor.runtime.gpu import (
    GpuDevice,
    NoGpu,
    NvmlBackend,
    SimulatedGpu,
    describe,
    gpu_backend,
)
from supervisor.runtime.gpu_sampler import GpuSampler, peak_memory
from supervisor.runtime.memory_store import MemoryStore, user_path
from supervisor.training.memory_model import MemoryKey, MemoryModel, oom, peak
from tests.standins.gpu_need import free_mib, remove_proc, sim_device, write_devices, write_proc

# --- no GPU, NVML -----------------------------------------------------------------------------


@pytest.fixture
def fresh_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpu_backend() keeps one NVML backend per process: start each test without it."""
    monkeypatch.setattr(gpu_mod, "_nvml", None)
    monkeypatch.delenv("TRAINSUP_SIM_GPU", raising=False)


def test_without_a_driver_the_backend_is_nogpu_with_nvmls_reason(
    fresh_nvml: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pynvml

    def no_library() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_library)
    b = gpu_backend({})
    assert isinstance(b, NoGpu)
    assert b.reason == "pynvml: NVML Shared Library Not Found"
    assert b.devices() == [] and b.process_memory(1) == {}
    assert describe(b) == "no NVIDIA GPU: pynvml: NVML Shared Library Not Found"


def test_the_real_pynvml_here_fails_cleanly_or_reads_a_gpu(fresh_nvml: None) -> None:
    """On this GPU-less machine: NoGpu with NVML's own reason; on a GPU machine: devices."""
    b = gpu_backend({})
    if isinstance(b, NoGpu):
        assert b.reason.startswith("pynvml: ") and len(b.reason) > len("pynvml: ")
    else:
        devs = b.devices()
        assert devs and all(d.total_mib for d in devs)


class FakeNvml(types.ModuleType):
    """pynvml's surface as NvmlBackend uses it: two GPUs, GPU 1 without power readings, the
    process list with darknet (a child of the pid asked for) and someone else's process."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, child_pid: int) -> None:
        super().__init__("pynvml")
        self.child_pid = child_pid
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        gib = 1024**3
        return types.SimpleNamespace(total=12 * gib, used=(3 + h) * gib, free=(9 - h) * gib)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return types.SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 71

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 215_000

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA GeForce RTX 3060"  # older pynvml returns bytes

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}"

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        mib = 1024**2
        if h == 0:
            return [
                types.SimpleNamespace(pid=self.child_pid, usedGpuMemory=2048 * mib),
                types.SimpleNamespace(pid=999_999, usedGpuMemory=512 * mib),
            ]
        # GPU 1: darknet is listed, but the driver hides its use (WSL, containers)
        return [types.SimpleNamespace(pid=self.child_pid, usedGpuMemory=None)]


def test_nvml_backend_reads_devices_and_a_childs_memory_and_survives_missing_readings(
    fresh_nvml: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        fake = FakeNvml(child.pid)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        b = gpu_backend({})
        assert isinstance(b, NvmlBackend) and gpu_backend({}) is b and fake.inits == 1
        d0, d1 = b.devices()
        assert d0 == GpuDevice(0, "GPU-0", "NVIDIA GeForce RTX 3060", 12288.0, 3072.0, 9216.0,
                               97.0, 71.0, 215.0)  # fmt: skip
        assert d1.power_w is None and d1.used_mib == 4096.0  # one missing reading, not a failure
        # our pid is the wrapper's; darknet is its child; the other process is not ours
        assert b.process_memory(os.getpid()) == {0: 2048.0}
        assert "GPUs 0: NVIDIA GeForce RTX 3060 (9.0/12.0 GB free)" in describe(b)
        b.close()
    finally:
        child.kill()
        child.wait()


# --- the simulated GPU ------------------------------------------------------------------------


def test_the_simulated_gpu_reads_devices_and_each_stand_ins_file(tmp_path: Path) -> None:
    write_devices(tmp_path, [sim_device(0, 12), sim_device(1, 24, other_used_mib=0)])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_proc(tmp_path, child.pid, 0, 5000.0)
        write_proc(tmp_path, 4_000_000, 0, 1000.0)  # another job's stand-in
        b = gpu_backend({"TRAINSUP_SIM_GPU": str(tmp_path)})
        assert isinstance(b, SimulatedGpu)
        d0, d1 = b.devices()
        assert (d0.name, d0.total_mib, d0.used_mib, d0.free_mib) == (
            "Simulated 12 GB",
            12288.0,
            6300.0,
            5988.0,
        )
        assert d1.used_mib == 0.0 and d1.util_percent == 0.0
        assert b.process_memory(os.getpid()) == {0: 5000.0}  # the child of "the wrapper"
        # the stand-in's own view of what it may still allocate agrees
        assert free_mib(tmp_path, 0, except_pid=child.pid) == 12288 - 300 - 1000
        remove_proc(tmp_path, child.pid)
        assert b.process_memory(os.getpid()) == {}
    finally:
        child.kill()
        child.wait()


def test_an_unreadable_simulation_is_no_devices_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "devices.json").write_text("{not json")
    assert SimulatedGpu(tmp_path).devices() == []


# --- the sampler ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sampler_on(tmp_path: Path, pid: int | None, clock: Clock) -> tuple[GpuSampler, list[Any]]:
    write_devices(tmp_path, [sim_device(0, 12)])
    out: list[Any] = []
    s = GpuSampler(SimulatedGpu(tmp_path), out.append, lambda: pid, [0], clock=clock)
    return s, out


def test_the_sampler_publishes_on_change_and_new_peaks_only(tmp_path: Path) -> None:
    clock = Clock()
    s, out = sampler_on(tmp_path, os.getpid(), clock)
    s({"type": "Launch", "number": 1, "argv": []})
    write_proc(tmp_path, os.getpid(), 0, 2000.0)
    assert len(s.sample_once()) == 1
    first = out[0]
    assert first["type"] == "GpuSample" and first["launch"] == 1
    assert (first["gpu"], first["used_mib"], first["total_mib"]) == (0, 2300.0, 12288.0)
    assert (first["process_mib"], first["peak_mib"]) == (2000.0, 2000.0)
    json.dumps(first, allow_nan=False)  # JSON-safe, as every bus record
    clock.t += 10
    assert s.sample_once() == []  # unchanged
    write_proc(tmp_path, os.getpid(), 0, 2050.0)
    clock.t += 10
    assert s.sample_once() == []  # +50 MiB: neither a move of 256 nor a peak step of 64
    write_proc(tmp_path, os.getpid(), 0, 2400.0)
    clock.t += 10
    assert [r["peak_mib"] for r in s.sample_once()] == [2400.0]
    clock.t += 400
    assert len(s.sample_once()) == 1  # quiet for 5 minutes: one for the record
    # a second launch: the first one's peak is kept, the new one starts again
    write_proc(tmp_path, os.getpid(), 0, 2440.0)
    s.sample_once()  # +40: not published, but the first launch's peak grew
    s({"type": "Launch", "number": 2, "argv": []})
    assert out[-1]["launch"] == 1 and out[-1]["peak_mib"] == 2440.0  # flushed at the switch
    write_proc(tmp_path, os.getpid(), 0, 900.0)
    clock.t += 10
    assert [r["launch"] for r in s.sample_once()] == [2]
    assert peak_memory(out) == {1: 2440.0, 2: 900.0}


def test_peak_memory_falls_back_to_the_devices_use_where_processes_are_hidden() -> None:
    recs = [
        {"type": "GpuSample", "launch": 1, "used_mib": 7000.0, "process_mib": None},
        {"type": "GpuSample", "launch": 1, "used_mib": 7400.0, "process_mib": None},
        {"type": "Iteration", "launch": 1, "used_mib": 99999.0},
    ]
    assert peak_memory(recs) == {1: 7400.0}


class SlowBackend:
    """Each reading takes 0.2 s: the runner's loop must keep running meanwhile."""

    def __init__(self) -> None:
        self.calls = 0

    def devices(self) -> list[GpuDevice]:
        self.calls += 1
        time.sleep(0.2)
        return [GpuDevice(0, "u", "Slow", 100.0, 10.0 * self.calls, 90.0, 0.0, None, None)]

    def process_memory(self, pid: int) -> dict[int, float]:
        return {}


async def test_the_sampler_runs_beside_the_loop_without_blocking_it() -> None:
    backend = SlowBackend()
    out: list[Any] = []
    s = GpuSampler(backend, out.append, lambda: None, None, every_s=0.01, change_mib=5)
    s.start()
    ticks = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        await asyncio.sleep(0.01)
        ticks += 1
    await s.stop()
    assert backend.calls >= 2 and len(out) >= 2
    # blocked, the loop would tick about once per 0.2 s reading; free, up to 50 times
    assert ticks >= 10
    assert out[0]["process_mib"] is None  # no darknet running


async def test_a_failing_backend_is_logged_once_and_sampling_goes_on() -> None:
    class Broken:
        calls = 0

        def devices(self) -> list[GpuDevice]:
            Broken.calls += 1
            raise RuntimeError("driver went away")

        def process_memory(self, pid: int) -> dict[int, float]:
            return {}

    s = GpuSampler(Broken(), lambda r: None, lambda: 1, None, every_s=0.01)
    with structlog.testing.capture_logs() as logs:
        s.start()
        await asyncio.sleep(0.15)
        await s.stop()
    assert Broken.calls >= 3
    assert [x["event"] for x in logs].count("GPU sampling failed; retrying") == 1


# --- the store --------------------------------------------------------------------------------

K = MemoryKey("Simulated 12 GB", "fp", 8, 608, 608, False)


def test_the_store_lives_in_the_users_state_dir_and_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert user_path() == tmp_path / "state" / "trainsup" / "memory.json"
    store = MemoryStore()
    assert store.load() == MemoryModel()
    store.observe(peak(K, 8000.0, total_mib=12288))
    assert MemoryStore().load().entries[0].peak_mib == 8000.0
    daemon = MemoryStore.in_state_dir(tmp_path / "daemon")
    assert daemon.path == tmp_path / "daemon" / "memory.json"


def test_two_jobs_saving_together_keep_both_observations(tmp_path: Path) -> None:
    a, b = MemoryStore(tmp_path / "m.json"), MemoryStore(tmp_path / "m.json")
    a.observe(peak(K, 8000.0))
    b.observe(oom(MemoryKey("Simulated 12 GB", "fp", 16, 608, 608, False), 11_000.0))
    m = MemoryStore(tmp_path / "m.json").load()
    assert len(m.entries) == 2


def test_a_corrupt_file_is_moved_aside_and_the_model_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "memory.json"
    path.write_text('{"version": 1, "entries": [{"gpu_model": "x"}]}')
    with structlog.testing.capture_logs() as logs:
        assert MemoryStore(path).load() == MemoryModel()
    assert any("corrupt" in x["event"] for x in logs)
    assert (tmp_path / "memory.json.corrupt").exists() and not path.exists()
    MemoryStore(path).observe(peak(K, 1.0))  # and saving works again
    assert MemoryStore(path).load().entries


# --- the daemon: its GPUs from the backend, and the memory model before a shared GPU ---------


def test_the_daemon_sees_the_simulated_gpus_and_asks_the_model_before_sharing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_data: Path, stock_cfg: Path
) -> None:
    from supervisor.darknet.cfg import Cfg
    from supervisor.runtime.memory_store import launch_facts
    from supervisor.service.daemon import Daemon, detect_gpus
    from tests.standin_fixtures import job_yaml, write_cfg

    sim = tmp_path / "sim"
    write_devices(sim, [sim_device(0, 12), sim_device(1, 8)])
    monkeypatch.setenv("TRAINSUP_SIM_GPU", str(sim))
    assert detect_gpus() == [0, 1]
    monkeypatch.delenv("TRAINSUP_SIM_GPU")
    monkeypatch.setattr(gpu_mod, "_nvml", None)
    monkeypatch.setattr(gpu_mod, "NvmlBackend", lambda: (_ for _ in ()).throw(OSError("no")))
    assert detect_gpus() == []  # no NVML: CPU jobs only, as before
    monkeypatch.setenv("TRAINSUP_SIM_GPU", str(sim))

    cfg = write_cfg(tmp_path / "t.cfg", stock_cfg, 500, batch=64, subdivisions=8)
    spec = job_yaml(tmp_path, tiny_data, cfg)
    row = {"id": 7, "spec_text": spec.read_text(), "source": str(spec), "base_dir": str(tmp_path)}
    state = tmp_path / "state"
    daemon: Any = types.SimpleNamespace(state_dir=state)
    assert Daemon._memory_fits(daemon, row, [0])  # nothing known: it may start
    # another job's stand-in holds 9 GB of GPU 0, and the model has seen this cfg need 4 GB
    # even at mini-batch 1 (subdivisions = batch): it does not fit beside it
    write_proc(sim, 4_000_001, 0, 9 * 1024)
    facts = launch_facts(Cfg.load(cfg), "Simulated 12 GB", map_on=False, flavour="pjreddie")
    MemoryStore.in_state_dir(state).observe(peak(facts.key(1), 4096.0, total_mib=12288))
    assert not Daemon._memory_fits(daemon, row, [0])
    remove_proc(sim, 4_000_001)
    assert Daemon._memory_fits(daemon, row, [0])


def test_daemon_jobs_learn_into_the_model_its_admission_reads(tmp_path: Path) -> None:
    """The daemon's runners write the memory model where `_memory_fits` reads it (its state
    dir), not into the service user's home."""
    from supervisor.service.config import parse_config
    from supervisor.service.daemon import Daemon

    config = parse_config(f"state_dir: {tmp_path / 'state'}\n", "<test>")
    daemon: Any = types.SimpleNamespace(config=config, state_dir=tmp_path / "state")
    row = {"binary_name": "darknet", "binary_path": "/usr/bin/darknet"}
    rc = Daemon._runner_config(daemon, row)
    assert rc.memory_store == MemoryStore.in_state_dir(tmp_path / "state").path
