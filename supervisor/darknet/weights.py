"""darknet's weights files: the header, the iteration it encodes, and when a save is complete.

A save is complete when its size is the network's: darknet prints `Saving weights` before it
opens the file (facts §4) and then writes the header and every layer's parameters in order, so
a file caught mid-write has a valid header and too few bytes. The size is computed from the
cfg's layers (`expected_weights_size`); for layers whose parameter count is not modelled here
the caller falls back to the size of the first save that a later iteration line proved done.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.darknet.cfg import Cfg, CfgError
from supervisor.darknet.command import WeightsFile, WeightsKind, classify_weights, weights_names
from supervisor.training.events import Flavour

__all__ = [
    "HEADER_SIZE",
    "SavedWeights",
    "WeightsError",
    "WeightsHeader",
    "expected_weights_size",
    "images_per_iteration",
    "iteration_of_weights",
    "newest_weights",
    "read_weights_header",
    "weights_complete",
]

HEADER_SIZE = 20
"""Bytes of the header every current flavour writes: major, minor, revision (int32) and seen
(uint64, since version 0.2)."""


class WeightsError(ValueError):
    """A weights file that cannot be used (missing, truncated, not darknet weights)."""


def images_per_iteration(batch: int, subdivisions: int) -> int:
    """What darknet adds to `seen` per iteration: (batch ÷ subdivisions, integer) × subdivisions.

    darknet trains `subdivisions` mini-batches of `batch // subdivisions` images per iteration
    and counts the images it trained on, so with batch 64 and subdivisions 24 an iteration adds
    48, not 64. Every place that turns `seen` into an iteration uses this one function.
    """
    if batch <= 0 or subdivisions <= 0:
        raise ValueError(f"batch and subdivisions must be ≥ 1, got {batch} and {subdivisions}")
    mini = batch // subdivisions
    if mini == 0:
        raise ValueError(f"subdivisions={subdivisions} > batch={batch}: no image per mini-batch")
    return mini * subdivisions


@dataclass(frozen=True, slots=True)
class WeightsHeader:
    """The header darknet writes first: version and `seen` (images trained on)."""

    major: int
    minor: int
    revision: int
    seen: int
    size: int  # bytes of the header: 20 with a 64-bit seen, 16 with the old 32-bit one

    def iteration(self, batch: int, subdivisions: int = 1) -> int:
        """The iteration darknet resumes at with the *current* cfg (its get_current_batch)."""
        return self.seen // images_per_iteration(batch, subdivisions)


def read_weights_header(path: str | Path) -> WeightsHeader:
    """Read the header. darknet stores `seen` as uint64 when major*10+minor ≥ 2 (every
    current flavour writes 0.2.x), as uint32 before (`load_weights_upto`)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(20)
    except FileNotFoundError:
        raise WeightsError(f"{p}: weights file not found") from None
    except IsADirectoryError:
        raise WeightsError(f"{p}: is a directory, not a weights file") from None
    except OSError as e:
        raise WeightsError(f"{p}: cannot read the weights file ({e.strerror})") from None
    if len(head) < 12:
        raise WeightsError(_truncated(p, len(head), 12))
    major, minor, revision = struct.unpack("<iii", head[:12])
    wide = major * 10 + minor >= 2
    need = 20 if wide else 16
    if len(head) < need:
        raise WeightsError(_truncated(p, len(head), need))
    (seen,) = struct.unpack("<Q" if wide else "<I", head[12:need])
    return WeightsHeader(major, minor, revision, seen, need)


def _truncated(p: Path, have: int, need: int) -> str:
    return (
        f"{p}: {have} bytes, shorter than a darknet weights header ({need} bytes). The file "
        "is truncated or still being written (darknet prints 'Saving weights' before it "
        "writes); wait for the save to finish or use an earlier save"
    )


def iteration_of_weights(path: str | Path, batch: int, subdivisions: int) -> int:
    """The iteration a weights file resumes at with the cfg's `batch` and `subdivisions`."""
    return read_weights_header(path).iteration(batch, subdivisions)


# Layers that hold no parameters in any flavour, and how they change the channel count.
_NO_WEIGHTS_SAME_CHANNELS = frozenset(
    {
        "maxpool", "upsample", "yolo", "region", "detection", "dropout", "avgpool",
        "softmax", "cost", "logistic", "l2norm", "gaussian_yolo", "scale_channels", "sam",
    }
)  # fmt: skip


def expected_weights_size(cfg: Cfg) -> int | None:
    """Bytes of a complete save of this cfg's network, or None for a layer not modelled here.

    darknet's `save_weights_upto` writes, after the 20-byte header, for each convolutional
    layer its biases, then (with batch_normalize) scales, rolling mean and rolling variance,
    then `channels / groups × filters × size²` weights, all float32. Other layers of YOLO cfgs
    (route, shortcut, maxpool, upsample, yolo, …) hold no parameters but change the channel
    count the next convolution sees. Checked against `darknet partial` on Debian's cfgs.
    """
    try:
        channels = cfg.net.get_int("channels", 3)
        outputs: list[int] = []
        floats = 0
        for sec in cfg.sections[1:]:
            kind = sec.kind
            prev = outputs[-1] if outputs else channels
            if kind == "convolutional":
                filters = sec.get_int("filters", 1)
                size = sec.get_int("size", 1)
                groups = max(1, sec.get_int("groups", 1))
                bn = sec.get_int("batch_normalize", 0) != 0
                floats += filters * (4 if bn else 1) + prev // groups * filters * size * size
                out = filters
            elif kind == "route":
                idx = [int(v) for v in sec.get_str("layers", "").split(",") if v.strip()]
                here = len(outputs)
                chans = [outputs[i if i >= 0 else here + i] for i in idx]
                out = sum(chans) // max(1, sec.get_int("groups", 1))
            elif kind == "shortcut":
                if sec.get_str("weights_type", "none") != "none":
                    return None  # AlexeyAB's weighted shortcut: parameters not modelled
                out = prev
            elif kind == "reorg":
                stride = sec.get_int("stride", 1)
                out = prev // (stride * stride) if sec.get_int("reverse", 0) else prev * stride**2
            elif kind in _NO_WEIGHTS_SAME_CHANNELS:
                out = prev
            else:
                return None
            outputs.append(out)
    except (CfgError, ValueError, IndexError):
        return None
    return HEADER_SIZE + 4 * floats


def weights_complete(path: str | Path, expected_size: int | None = None) -> bool:
    """True when the header reads, the file holds more than the header, and its size equals
    `expected_size` when given (always give it when it is known: a file caught mid-write has a
    good header and too few bytes)."""
    try:
        header = read_weights_header(path)
        size = Path(path).stat().st_size
    except (WeightsError, OSError):
        return False
    if size <= header.size:
        return False
    return expected_size is None or size == expected_size


@dataclass(frozen=True, slots=True)
class SavedWeights:
    """A complete save found in a backup dir, with the iteration its header records."""

    file: WeightsFile
    iteration: int
    size: int

    @property
    def path(self) -> Path:
        return self.file.path


# On equal iterations prefer files darknet will not overwrite later.
_KIND_RANK: Mapping[WeightsKind, int] = {"final": 4, "periodic": 3, "best": 2, "ema": 1, "last": 0}


def newest_weights(
    backup_dir: str | Path,
    flavour: Flavour,
    base: str,
    batch: int,
    subdivisions: int,
    *,
    expected_size: int | None,
) -> SavedWeights | None:
    """The complete save of `base` with the highest iteration in `backup_dir` (by header).

    Files whose size is not `expected_size` (still being written, truncated) are skipped; so
    are files of other cfg bases. `.backup` counts only for pjreddie, `_last` only for the
    forks. `expected_size` is required (None only where no size is known at all) because a
    short file with a good header is exactly what a resume must not pick.
    """
    names = weights_names(flavour, base)
    best: SavedWeights | None = None
    try:
        entries = list(Path(backup_dir).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    for p in entries:
        info = classify_weights(p, base)
        if info is None or (info.kind == "last" and p.name != names.last):
            continue
        if not p.is_file() or not weights_complete(p, expected_size):
            continue
        try:
            it = read_weights_header(p).iteration(batch, subdivisions)
            size = p.stat().st_size
        except (WeightsError, OSError, ValueError):
            continue
        found = SavedWeights(info, it, size)
        if best is None or (it, _KIND_RANK[info.kind]) > (
            best.iteration,
            _KIND_RANK[best.file.kind],
        ):
            best = found
    return best
