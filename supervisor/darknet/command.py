"""What darknet writes (weights names and headers) and how to call it (argv per flavour).

Weights naming and saving follow darknet-facts §4; flags follow §8. Every argv is a list for
`subprocess`/`asyncio.create_subprocess_exec`, never a shell string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from supervisor.training.events import FLAVOURS, Flavour

__all__ = [
    "EXTRA_FLAGS",
    "LAST_EVERY",
    "ArgvError",
    "FlagValue",
    "WeightsFile",
    "WeightsKind",
    "WeightsNames",
    "classify_weights",
    "is_final",
    "iteration_from_weights_name",
    "map_argv",
    "periodic_every",
    "periodic_iterations",
    "train_argv",
    "valid_argv",
    "weights_names",
]

# -- weights names ------------------------------------------------------------------------

WeightsKind = Literal["last", "periodic", "best", "final", "ema"]

LAST_EVERY = 100
"""Iterations between saves of the overwritten file (`.backup` / `_last`) in every flavour
(AlexeyAB since 2023 and hank-ai read `savelast=` from the .data file instead)."""


@dataclass(frozen=True, slots=True)
class WeightsNames:
    """File names (no folder) a flavour writes into the `backup=` dir for one cfg base."""

    flavour: Flavour
    base: str
    last: str  # overwritten every LAST_EVERY iterations: the newest save while training
    final: str  # written once at max_batches
    best: str | None  # new best mAP with -map; pjreddie has none

    def periodic(self, iteration: int) -> str:
        """The kept-forever save of one iteration: `<base>_<iteration>.weights`."""
        return f"{self.base}_{iteration}.weights"


def weights_names(flavour: Flavour, base: str) -> WeightsNames:
    _check_flavour(flavour)
    if flavour == "pjreddie":
        return WeightsNames(flavour, base, f"{base}.backup", f"{base}_final.weights", None)
    return WeightsNames(
        flavour, base, f"{base}_last.weights", f"{base}_final.weights", f"{base}_best.weights"
    )


def periodic_every(flavour: Flavour, max_batches: int, save_every: int | None = None) -> int:
    """Spacing of `_<i>.weights` saves for AlexeyAB/hank-ai: `saveweights=` when given, else
    1000, or 10000 once max_batches ≥ 10000. pjreddie's spacing is not regular: see
    `periodic_iterations`."""
    _check_flavour(flavour)
    if flavour == "pjreddie":
        raise ValueError("pjreddie saves _<i>.weights at 100…900 and then every 10000")
    if save_every is not None:
        return save_every
    return 10000 if max_batches >= 10000 else 1000


def periodic_iterations(
    flavour: Flavour, max_batches: int, *, save_every: int | None = None
) -> list[int]:
    """Iterations that get their own `<base>_<i>.weights`, up to max_batches inclusive.

    These are the nominal ones. Multi-GPU runs advance several iterations per step and older
    AlexeyAB saved every 1000 whatever max_batches, so look at the files, not this list, to
    know what exists (`classify_weights`, `newest_weights`).
    """
    if flavour == "pjreddie":
        early = range(100, min(max_batches, 900) + 1, 100)
        return [*early, *range(10000, max_batches + 1, 10000)]
    every = periodic_every(flavour, max_batches, save_every)
    return list(range(every, max_batches + 1, every))


@dataclass(frozen=True, slots=True)
class WeightsFile:
    """A weights file name understood: which save it is and, for `_<i>`, its iteration."""

    path: Path
    base: str
    kind: WeightsKind
    iteration: int | None  # from the name; only periodic saves carry one


# base is cut at the first '.', so it never holds one: that keeps the match unambiguous.
_WEIGHTS_NAME = re.compile(
    r"(?P<base>[^.]+?)(?:(?P<backup>\.backup)|_(?P<tag>last|best|final|ema|\d+)\.weights)"
)
_TAG_KIND: Mapping[str, WeightsKind] = {
    "last": "last",
    "best": "best",
    "final": "final",
    "ema": "ema",
}


def classify_weights(path: str | Path, base: str | None = None) -> WeightsFile | None:
    """Which save `path` is (None when it is not a darknet save, or of another `base`)."""
    p = Path(path)
    m = _WEIGHTS_NAME.fullmatch(p.name)
    if m is None or (base is not None and m["base"] != base):
        return None
    if m["backup"]:
        return WeightsFile(p, m["base"], "last", None)
    tag = m["tag"]
    if tag.isdigit():
        return WeightsFile(p, m["base"], "periodic", int(tag))
    return WeightsFile(p, m["base"], _TAG_KIND[tag], None)


def iteration_from_weights_name(path: str | Path) -> int | None:
    """The iteration in a `<base>_<i>.weights` name; None for any other name."""
    info = classify_weights(path)
    return info.iteration if info is not None else None


def is_final(path: str | Path) -> bool:
    info = classify_weights(path)
    return info is not None and info.kind == "final"


# -- argv -----------------------------------------------------------------------------------

FlagValue = Literal["switch", "int", "float"]

# Extra flags a job may pass to `detector train`, per flavour, and what follows each. The
# supervisor sets -map, -clear, -gpus, -dont_show and -nocolour itself (see train_argv), so
# they are not extra. pjreddie takes only what its run_detector/main remove from argv:
# anything else stays in argv and shifts the positional weights path (facts §8).
EXTRA_FLAGS: Mapping[Flavour, Mapping[str, FlagValue]] = {
    "pjreddie": {"-nogpu": "switch", "-i": "int"},
    "alexeyab": {
        "-mAP_epochs": "int",
        "-thresh": "float",
        "-iou_thresh": "float",
        "-mjpeg_port": "int",
        "-json_port": "int",
        "-show_imgs": "switch",
        "-benchmark_layers": "switch",
        "-nogpu": "switch",
        "-i": "int",
    },
    "hankai": {
        "-verbose": "switch",
        "-trace": "switch",
        "-saveweights": "int",
        "-thresh": "float",
        "-iou_thresh": "float",
        "-show_imgs": "switch",
        "-benchmark_layers": "switch",
    },
}
_MANAGED = {
    "-map": "map=True",
    "-clear": "clear=True",
    "-gpus": "gpus=[…]",
    "-dont_show": "nothing (it is always passed where the flavour knows it)",
    "-nocolour": "nothing (it is always passed to hank-ai)",
}
_VALUE_PATTERNS: Mapping[FlagValue, re.Pattern[str]] = {
    "switch": re.compile(""),
    "int": re.compile(r"\d+"),
    "float": re.compile(r"\d+(?:\.\d*)?|\.\d+"),
}


class ArgvError(ValueError):
    """A requested darknet invocation that cannot work; the message says why and what to do."""


def train_argv(
    binary: str | Path,
    flavour: Flavour,
    data: str | Path,
    cfg: str | Path,
    weights: str | Path | None = None,
    *,
    gpus: Sequence[int] = (),
    map: bool = False,
    clear: bool = False,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """argv for `darknet detector train`.

    Paths become absolute because darknet runs in the job's run/ dir. `weights` must exist:
    pjreddie exits 0 on a missing file and hank-ai silently trains from scratch.
    AlexeyAB and hank-ai always get `-dont_show` (no OpenCV window on a headless server);
    hank-ai always gets `-nocolour` (it colours output even into a pipe, facts §1).
    """
    _check_flavour(flavour)
    if map and flavour == "pjreddie":
        raise ArgvError(
            "pjreddie darknet has no -map (it would read '-map' as the weights path and exit); "
            "leave map off: the supervisor measures mAP itself with `detector valid`"
        )
    argv = [str(binary), "detector", "train", _abs(data), _abs(cfg)]
    if weights is not None:
        w = Path(weights)
        if not w.is_file():
            raise ArgvError(
                f"weights file {w} not found; darknet would not train from it "
                f"({'it exits 0' if flavour == 'pjreddie' else 'it starts from scratch'}). "
                "Fix the path, or leave weights out to train from scratch"
            )
        argv.append(_abs(w))
    if flavour != "pjreddie":
        argv.append("-dont_show")
    if flavour == "hankai":
        argv.append("-nocolour")
    if map:
        argv.append("-map")
    if gpus:
        argv += ["-gpus", _gpu_list(gpus)]
    if clear:
        argv.append("-clear")
    argv += _check_extra(flavour, extra_args)
    return argv


def valid_argv(
    binary: str | Path,
    data: str | Path,
    cfg: str | Path,
    weights: str | Path,
    *,
    flavour: Flavour = "pjreddie",
) -> list[str]:
    """argv for `darknet detector valid` (writes `<results>/comp4_det_test_<class>.txt`;
    the results dir must exist, facts §9)."""
    _check_flavour(flavour)
    argv = [str(binary), "detector", "valid", _abs(data), _abs(cfg), _abs(weights)]
    if flavour == "hankai":
        argv.append("-nocolour")
    return argv


def map_argv(
    binary: str | Path,
    data: str | Path,
    cfg: str | Path,
    weights: str | Path,
    *,
    flavour: Flavour = "alexeyab",
    iou_thresh: float | None = None,
) -> list[str]:
    """argv for `darknet detector map` (AlexeyAB/hank-ai; prints facts §2's lines)."""
    _check_flavour(flavour)
    if flavour == "pjreddie":
        raise ArgvError(
            "pjreddie darknet has no `detector map`; use valid_argv and compute mAP from "
            "the results files"
        )
    argv = [str(binary), "detector", "map", _abs(data), _abs(cfg), _abs(weights)]
    if flavour == "hankai":
        argv.append("-nocolour")
    if iou_thresh is not None:
        if not 0 < iou_thresh <= 1:
            raise ArgvError(f"iou_thresh={iou_thresh} must be a fraction in (0, 1], e.g. 0.5")
        argv += ["-iou_thresh", f"{iou_thresh:g}"]
    return argv


def _check_extra(flavour: Flavour, extra: Sequence[str]) -> list[str]:
    allowed = EXTRA_FLAGS[flavour]
    out: list[str] = []
    i = 0
    while i < len(extra):
        flag = extra[i]
        if flag in _MANAGED:
            raise ArgvError(f"extra argument {flag!r}: set it with {_MANAGED[flag]}, not extra")
        kind = allowed.get(flag)
        if kind is None:
            known = ", ".join(f"{f}{'' if k == 'switch' else ' N'}" for f, k in allowed.items())
            why = (
                " pjreddie does not know it and would read it as a positional argument "
                "(e.g. as the weights path), which breaks the run (darknet-facts §8)."
                if flavour == "pjreddie"
                else ""
            )
            raise ArgvError(
                f"extra argument {flag!r} is not allowed for {flavour} `detector train`.{why} "
                f"Allowed: {known}"
            )
        out.append(flag)
        i += 1
        if kind != "switch":
            value = extra[i] if i < len(extra) else None
            if value is None or not _VALUE_PATTERNS[kind].fullmatch(value):
                raise ArgvError(
                    f"extra argument {flag} needs a {'whole number' if kind == 'int' else 'number'}"
                    f" after it, got {value!r}"
                )
            out.append(value)
            i += 1
    return out


def _gpu_list(gpus: Sequence[int]) -> str:
    if any(isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in gpus):
        raise ArgvError(f"gpus={list(gpus)}: GPU indices are whole numbers ≥ 0, e.g. [0, 1]")
    if len(set(gpus)) != len(gpus):
        raise ArgvError(f"gpus={list(gpus)} names a GPU twice")
    return ",".join(str(g) for g in gpus)


def _abs(path: str | Path) -> str:
    return os.path.abspath(path)


def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown darknet flavour {flavour!r}; expected one of {FLAVOURS}")
