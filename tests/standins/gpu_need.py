"""The stand-in darknet's true GPU memory need, and the simulated GPU's files (a test contract).

Shared by the issue-12 tests, the stand-in darknets and `bench/oom.py`. The memory model under
test (`supervisor/training/memory_model.py`) must *learn* this need; it is deliberately not the
model's formula, so a model that only fits its own shape would fail the tests:

    need = context + weights + A·m^0.93·r^1.07 + 0.004·A·m²·r      (MiB)
           + (weights + A·r)                                       when `-map` evaluates
    × a seeded noise factor in [0.96, 1.04]

with m the mini-batch (batch ÷ subdivisions), r = (width·height) / (cfg width·height) and A the
activation memory of one image at the cfg's size. The m² term stands for cuDNN's workspace and
the allocator's fragmentation growing faster than the batch; `-map` builds a second network at
batch 1 (darknet-facts §2). Weights and A come from walking the cfg's layers
(convolutional/maxpool/upsample/route/shortcut), so Debian's yolov3-tiny and yolov3 need
plausible amounts (yolov3-tiny ≈ 1.4 GB at mini-batch 16, 416×416; yolov3 ≈ 8.8 GB at
mini-batch 8, 608×608, ≈ 16 GB at mini-batch 16; see `need_table()`).

The simulated GPU (`TRAINSUP_SIM_GPU=<dir>`, read by `supervisor.runtime.gpu.SimulatedGpu`):
    <dir>/devices.json   [{"index", "uuid", "name", "total_mib", "other_used_mib"}, …]
    <dir>/proc-<pid>.json  {"pid", "gpu", "used_mib"}: one per running stand-in, written
                         atomically (temp + rename) when its use changes, removed at exit.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.darknet.cfg import Cfg

SIM_ENV = "TRAINSUP_SIM_GPU"
CONTEXT_MIB = 220.0  # CUDA context + cuBLAS/cuDNN handles: paid before the first layer
NOISE = 0.04


@dataclass(frozen=True, slots=True)
class NetProfile:
    """What drives one network's memory: weight memory and one image's activations."""

    name: str
    weights_mib: float  # weights, their updates and gradients (×3 of the parameter floats)
    act_mib: float  # one image's outputs, deltas and batch-norm buffers at width×height
    width: int
    height: int


# Walked from Debian's yolov3-tiny, yolov3, yolov2 and yolov3-spp cfgs (`profile_of`); fixed
# here so the bench needs no cfg files. tests/test_memory_model.py checks they match the walk.
TINY = NetProfile("yolov3-tiny", weights_mib=101.3, act_mib=77.5, width=416, height=416)
FULL = NetProfile("yolov3", weights_mib=708.7, act_mib=1095.6, width=608, height=608)
YOLOV2 = NetProfile("yolov2", weights_mib=562.9, act_mib=445.2, width=608, height=608)
SPP = NetProfile("yolov3-spp", weights_mib=720.7, act_mib=1104.1, width=608, height=608)
PROFILES = {p.name: p for p in (TINY, FULL, YOLOV2, SPP)}


def _i(options: dict[str, str], key: str, default: int) -> int:
    try:
        return int(float(options.get(key, default)))
    except ValueError:
        return default


def profile_of(cfg: Cfg) -> NetProfile:
    """Walk the layers as darknet builds them: each layer's output w×h×c, parameter count."""
    w, h, c = cfg.width or 416, cfg.height or 416, cfg.net.get_int("channels", 3)
    outs: list[tuple[int, int, int]] = []
    params = 0
    act = 0  # floats per image
    for s in cfg.sections[1:]:
        o = {opt.key: opt.value for opt in s.options}
        kind = s.kind
        if kind == "convolutional":
            filters, size = _i(o, "filters", 1), _i(o, "size", 1)
            stride = _i(o, "stride", 1)
            params += filters * c * size * size + filters
            w, h, c = max(1, (w - 1) // stride + 1), max(1, (h - 1) // stride + 1), filters
            # output and delta, and with batch_normalize x_norm
            act += w * h * c * (3 if _i(o, "batch_normalize", 0) else 2)
        elif kind == "maxpool":
            stride = _i(o, "stride", 1)
            w, h = max(1, (w - 1) // stride + 1), max(1, (h - 1) // stride + 1)
            act += w * h * c
        elif kind == "upsample":
            stride = _i(o, "stride", 2)
            w, h = w * stride, h * stride
            act += w * h * c
        elif kind == "route":
            idx = [int(x) for x in o.get("layers", "-1").split(",") if x.strip()]
            picked = [outs[k if k >= 0 else len(outs) + k] for k in idx]
            w, h = picked[0][0], picked[0][1]
            c = sum(p[2] for p in picked)
            act += w * h * c
        else:  # shortcut, yolo, region, dropout …: same shape as their input
            act += w * h * c
        outs.append((w, h, c))
    mib = 4 / 2**20
    # Named by its layers, not its file: the ladder's cfg copy (other subdivisions) is the same net.
    return NetProfile(
        f"net-{params}-{act}",
        weights_mib=round(params * 3 * mib, 1),
        act_mib=round(act * mib, 1),
        width=cfg.width or 416,
        height=cfg.height or 416,
    )


def need_for(
    p: NetProfile,
    *,
    mini_batch: int,
    width: int | None = None,
    height: int | None = None,
    map_on: bool = False,
    seed: int = 0,
) -> float:
    """MiB one darknet process needs on the GPU for this profile and setting (see the module)."""
    w, h = width or p.width, height or p.height
    r = (w * h) / (p.width * p.height)
    m = max(1, mini_batch)
    need = CONTEXT_MIB + p.weights_mib + p.act_mib * m**0.93 * r**1.07
    need += 0.004 * p.act_mib * m * m * r
    if map_on:
        need += p.weights_mib + p.act_mib * r
    # The same setting needs the same amount each launch (reproducible tests), but a different
    # one is off the smooth curve by up to ±4 %: what a real GPU's allocator does to a model.
    rng = random.Random(f"{seed}:{p.name}:{m}:{w}x{h}:{int(map_on)}")
    return float(round(need * (1 + rng.uniform(-NOISE, NOISE)), 1))


def need_mib(
    cfg: Cfg,
    *,
    mini_batch: int | None = None,
    width: int | None = None,
    height: int | None = None,
    map_on: bool = False,
    seed: int = 0,
) -> float:
    """The need of a stand-in darknet training `cfg` (its own mini-batch and size unless given:
    a `random=1` resize passes the new size)."""
    return need_for(
        profile_of(cfg),
        mini_batch=cfg.mini_batch if mini_batch is None else mini_batch,
        width=width,
        height=height,
        map_on=map_on,
        seed=seed,
    )


def need_table() -> dict[str, float]:
    """A few reference points (for the docs and a sanity test)."""
    return {
        "tiny mb16 416": need_for(TINY, mini_batch=16),
        "tiny mb64 416": need_for(TINY, mini_batch=64),
        "yolov3 mb8 608": need_for(FULL, mini_batch=8),
        "yolov3 mb4 608": need_for(FULL, mini_batch=4),
        "yolov3 mb8 608 map": need_for(FULL, mini_batch=8, map_on=True),
    }


# --- the simulated GPU's files ---------------------------------------------------------------


def sim_dir() -> Path | None:
    value = os.environ.get(SIM_ENV)
    return Path(value) if value else None


def write_devices(d: Path, devices: list[dict[str, Any]]) -> Path:
    """Write devices.json (tests): each {"index", "uuid", "name", "total_mib", "other_used_mib"}."""
    d.mkdir(parents=True, exist_ok=True)
    return _atomic(d / "devices.json", devices)


def sim_device(index: int, total_gb: float, *, other_used_mib: float = 300.0) -> dict[str, Any]:
    return {
        "index": index,
        "uuid": f"GPU-sim-{index}",
        "name": f"Simulated {total_gb:g} GB",
        "total_mib": round(total_gb * 1024),
        "other_used_mib": other_used_mib,
    }


def free_mib(d: Path, gpu: int, *, except_pid: int | None = None) -> float:
    """What a process could still allocate on `gpu`: total − other users − running stand-ins."""
    devices = json.loads((d / "devices.json").read_text())
    dev = next(x for x in devices if int(x["index"]) == gpu)
    used = float(dev.get("other_used_mib", 0))
    for f in d.glob("proc-*.json"):
        try:
            p = json.loads(f.read_text())
        except (OSError, ValueError):  # removed or being replaced right now
            continue
        if int(p["gpu"]) == gpu and p["pid"] != except_pid:
            used += float(p["used_mib"])
    return float(dev["total_mib"]) - used


def write_proc(d: Path, pid: int, gpu: int, used_mib: float) -> Path:
    return _atomic(d / f"proc-{pid}.json", {"pid": pid, "gpu": gpu, "used_mib": used_mib})


def remove_proc(d: Path, pid: int) -> None:
    (d / f"proc-{pid}.json").unlink(missing_ok=True)


def _atomic(path: Path, value: Any) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return path
