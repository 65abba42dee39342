"""What to do about how a run ended: advice per failure, in the words of facts §6 and DESIGN 5.

Pure lookups; the runner, `analyze` and (later) notifications use the same sentences.
"""

from __future__ import annotations

from supervisor.training.events import GpuErrorKind

GPU_ADVICE: dict[GpuErrorKind, str] = {
    "out_of_memory": (
        "the GPU ran out of memory: raise subdivisions in [net] (batch stays, so the training "
        "is the same with a smaller mini-batch), then random=0, then drop -map (let trainsup "
        "evaluate), then a smaller width/height; resume from the newest weights without -clear"
    ),
    "cudnn": (
        "cuDNN failed, most often for lack of memory: try the out-of-memory remedies (raise "
        "subdivisions first); if it persists, check that the cuDNN and CUDA versions match"
    ),
    "no_device": (
        "darknet sees no CUDA device: check nvidia-smi, CUDA_VISIBLE_DEVICES and the driver, "
        "or use a CPU build"
    ),
    "cuda": (
        "a CUDA error ended the run: read the message above it; check the driver and the GPU "
        "(nvidia-smi), and resume from the newest weights"
    ),
}


def gpu_advice(kind: GpuErrorKind) -> str:
    return GPU_ADVICE[kind]
