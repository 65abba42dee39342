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
    "CPU_FLAGS",
    "EXTRA_FLAGS",
    "LAST_EVERY",
    "MANAGED_FLAGS",
    "ArgvError",
    "FlagValue",
    "WeightsFile",
    "WeightsKind",
    "WeightsNames",
    "classify_weights",
    "cpu_problem",
    "extra_args_problems",
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

# Extra flags a job may pass to `detector train`, per flavour, and what follows each. This table
# is the one truth about extra_args: the job spec validates with it (`extra_args_problems`),
# `trainsup check` against the flavour the binary proved to be, and `train_argv` builds with it.
# pjreddie takes only what its run_detector/main remove from argv: anything else stays in argv
# and shifts the positional weights path (facts §8). `-clear` (restart the image count from
# pretrained weights) is known to all three: pjreddie's and AlexeyAB's run_detector
# (`find_arg(argc, argv, "-clear")`) and hank-ai's argument table ("clear").
EXTRA_FLAGS: Mapping[Flavour, Mapping[str, FlagValue]] = {
    "pjreddie": {"-clear": "switch"},
    "alexeyab": {
        "-clear": "switch",
        "-mAP_epochs": "int",
        "-thresh": "float",
        "-iou_thresh": "float",
        "-mjpeg_port": "int",
        "-json_port": "int",
        "-show_imgs": "switch",
        "-benchmark_layers": "switch",
    },
    "hankai": {
        "-clear": "switch",
        "-verbose": "switch",
        "-trace": "switch",
        "-saveweights": "int",
        "-thresh": "float",
        "-iou_thresh": "float",
        "-show_imgs": "switch",
        "-benchmark_layers": "switch",
    },
}
# Flags the supervisor sets itself, the job-file key that decides each, and whether a value
# follows it (so that `-gpus 0` is one problem, not two).
MANAGED_FLAGS: Mapping[str, tuple[str, bool]] = {
    "-map": ("evaluation.source (-map is passed where the flavour has it)", False),
    "-gpus": ("darknet.gpus", True),
    "-i": ("darknet.gpus", True),
    "-nogpu": ("darknet.gpus: [] (the CPU; -nogpu is passed where the flavour has it)", False),
    "-dont_show": ("nothing: it is always passed where the flavour knows it", False),
    "-nocolour": ("nothing: it is always passed to hank-ai", False),
}
# What `gpus: []` (the CPU) adds to the argv. pjreddie's main sets gpu_index = -1 on -nogpu
# (a no-op on a CPU build such as Debian's, where gpu_index is always -1). AlexeyAB's main exits
# on -nogpu ("Currently Darknet doesn't support -nogpu flag"), and hank-ai has no such flag:
# those train on the CPU only as CPU builds, which need nothing (see `cpu_problem`).
CPU_FLAGS: Mapping[Flavour, tuple[str, ...]] = {
    "pjreddie": ("-nogpu",),
    "alexeyab": (),
    "hankai": (),
}
# Managed flags a flavour never gets: to it they are unknown flags like any other.
_NOT_FOR: Mapping[Flavour, tuple[str, ...]] = {
    "pjreddie": ("-dont_show", "-nocolour"),
    "alexeyab": ("-nocolour",),
}
_FLAVOUR_NAMES: Mapping[Flavour, str] = {
    "pjreddie": "pjreddie",
    "alexeyab": "AlexeyAB",
    "hankai": "hank-ai",
}
_VALUE_PATTERNS: Mapping[FlagValue, re.Pattern[str]] = {
    "switch": re.compile(""),
    "int": re.compile(r"\d+"),
    "float": re.compile(r"\d+(?:\.\d*)?|\.\d+"),
}
_SHOWN = 60  # characters of a bad value quoted back (a 100 KB argument is not echoed whole)


class ArgvError(ValueError):
    """A requested darknet invocation that cannot work; the message says why and what to do.
    `key` is the job-file key whose value is at fault, where there is one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def cpu_problem(flavour: Flavour, *, cuda: bool | None = None) -> str | None:
    """Why `gpus: []` (train on the CPU) cannot work with this darknet, or None.

    `cuda`: whether the binary is a CUDA build (`runtime.binary.Probe.cuda`); None = unknown,
    which refuses only what no build of the flavour can do.
    """
    _check_flavour(flavour)
    if flavour == "hankai":
        return (
            "hank-ai darknet has no -nogpu: a CUDA build trains on GPU 0 whatever is asked, and "
            'a CPU build asks `Type "yes"` on stdin before it trains, which a supervised run '
            "(stdin /dev/null) cannot answer. List a GPU in darknet.gpus, e.g. [0]"
        )
    if not cuda:
        return None
    if flavour == "pjreddie":
        return (
            "this pjreddie darknet is a CUDA build: with -nogpu its `detector train` still calls "
            "cudaSetDevice(-1) and aborts. Train on the CPU with a CPU build (Debian's "
            "`darknet` package), or list a GPU in darknet.gpus, e.g. [0]"
        )
    return (
        "this AlexeyAB darknet is a CUDA build, which cannot train on the CPU (its -nogpu "
        "exits with 'Currently Darknet doesn't support -nogpu flag'). Use a build made with "
        "GPU=0, or list a GPU in darknet.gpus, e.g. [0]"
    )


def extra_args_problems(flavour: Flavour | None, extra: Sequence[str]) -> list[tuple[int, str]]:
    """Every problem of an `extra_args` list, each with the index of its item.

    `flavour` None (`flavour: auto`, binary not yet probed): a flag must be one that some
    flavour takes; the flavour found is checked again before darknet runs.
    """
    if flavour is not None:
        _check_flavour(flavour)
    allowed: dict[str, FlagValue] = {}
    for fl in FLAVOURS if flavour is None else (flavour,):
        for known, value_kind in EXTRA_FLAGS[fl].items():
            allowed.setdefault(known, value_kind)
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(extra):
        flag = extra[i]
        if flag in MANAGED_FLAGS and not (flavour and flag in _NOT_FOR.get(flavour, ())):
            key, takes_value = MANAGED_FLAGS[flag]
            out.append((i, f"{flag} is set by the supervisor from {key}: use that"))
            i += 2 if takes_value else 1
            continue
        kind = allowed.get(flag)
        if kind is None:
            out.append((i, _unknown_flag(flavour, flag)))
            # Another flavour's flag with a value (`-mjpeg_port 8090`): one problem, not two.
            elsewhere = next(
                (EXTRA_FLAGS[f][flag] for f in FLAVOURS if flag in EXTRA_FLAGS[f]), None
            )
            takes_value = elsewhere not in (None, "switch")
            i += 2 if takes_value and i + 1 < len(extra) and not extra[i + 1].startswith("-") else 1
            continue
        i += 1
        if kind != "switch":
            value = extra[i] if i < len(extra) else None
            if value is None or not _VALUE_PATTERNS[kind].fullmatch(value):
                what = "whole number" if kind == "int" else "number"
                got = "nothing" if value is None else repr(_shown(value))
                out.append((i - 1, f"{flag} needs a {what} after it (its own item), got {got}"))
                i += 0 if value is None or value in MANAGED_FLAGS or value in allowed else 1
                continue
            i += 1
    return out


def _unknown_flag(flavour: Flavour | None, flag: str) -> str:
    if flavour is None:
        known = "; ".join(f"{_FLAVOUR_NAMES[fl]}: {_flag_list(fl)}" for fl in FLAVOURS)
        return (
            f"{_shown(flag)!r} is not a `detector train` flag of any darknet flavour. "
            f"Allowed: {known}"
        )
    why = (
        " pjreddie does not know it and would read it as a positional argument "
        "(e.g. as the weights path), which breaks the run (darknet-facts §8)."
        if flavour == "pjreddie"
        else ""
    )
    return (
        f"{_shown(flag)!r} is not allowed for {_FLAVOUR_NAMES[flavour]} `detector train`.{why} "
        f"Allowed: {_flag_list(flavour)}"
    )


def _flag_list(flavour: Flavour) -> str:
    marks = {"switch": "", "int": " N", "float": " X"}
    return ", ".join(f"{f}{marks[k]}" for f, k in EXTRA_FLAGS[flavour].items())


def _shown(value: str) -> str:
    return value if len(value) <= _SHOWN else value[:_SHOWN] + "…"


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
    cuda: bool | None = None,
    resume: bool = False,
) -> list[str]:
    """argv for `darknet detector train`.

    Paths become absolute because darknet runs in the job's run/ dir. `weights` must exist:
    pjreddie exits 0 on a missing file and hank-ai silently trains from scratch.
    AlexeyAB and hank-ai always get `-dont_show` (no OpenCV window on a headless server);
    hank-ai always gets `-nocolour` (it colours output even into a pipe, facts §1).
    `gpus=()` trains on the CPU (`CPU_FLAGS`; refused where the flavour cannot, see
    `cpu_problem`, given `cuda` = whether the binary is a CUDA build, None = unknown).
    `resume`: a relaunch from this run's own save, which never gets `-clear` (asked for by
    `clear` or in `extra_args`): -clear sets `seen` to 0, and the count must go on.
    """
    _check_flavour(flavour)
    if map and flavour == "pjreddie":
        raise ArgvError(
            "pjreddie darknet has no -map (it would read '-map' as the weights path and exit); "
            "leave map off: the supervisor measures mAP itself with `detector valid`",
            key="evaluation.source",
        )
    argv = [str(binary), "detector", "train", _abs(data), _abs(cfg)]
    if weights is not None:
        w = Path(weights)
        if not w.is_file():
            raise ArgvError(
                f"weights file {w} {'is a directory' if w.is_dir() else 'not found'}; darknet "
                f"would not train from it "
                f"({'it exits 0' if flavour == 'pjreddie' else 'it starts from scratch'}). "
                "Fix the path, or leave weights out to train from scratch",
                key="darknet.weights",
            )
        argv.append(_abs(w))
    extra = _check_extra(flavour, extra_args)
    if flavour != "pjreddie":
        argv.append("-dont_show")
    if flavour == "hankai":
        argv.append("-nocolour")
    if map:
        argv.append("-map")
    if gpus:
        argv += ["-gpus", _gpu_list(gpus)]
    else:
        problem = cpu_problem(flavour, cuda=cuda)
        if problem is not None:
            raise ArgvError(f"gpus: [] asks for the CPU, but {problem}", key="darknet.gpus")
        argv += CPU_FLAGS[flavour]
    if resume:
        extra = [a for a in extra if a != "-clear"]
    elif clear and "-clear" not in extra:
        argv.append("-clear")
    return argv + extra


def valid_argv(
    binary: str | Path,
    data: str | Path,
    cfg: str | Path,
    weights: str | Path,
    *,
    flavour: Flavour = "pjreddie",
    gpu: int | None = None,
    cpu: bool = False,
) -> list[str]:
    """argv for `darknet detector valid` (writes `<results>/comp4_det_test_<class>.txt`;
    the results dir must exist, facts §9).

    `gpu`: the GPU to score on — the job's first, so an evaluation never lands on GPU 0 beside
    someone else's training (`-i N` in all three flavours' `main`); `cpu`: the job trains on the
    CPU, so the flavour's CPU switch goes in (pjreddie's `-nogpu`)."""
    _check_flavour(flavour)
    argv = [str(binary), "detector", "valid", _abs(data), _abs(cfg), _abs(weights)]
    if flavour == "hankai":
        argv.append("-nocolour")
    if cpu:
        argv += CPU_FLAGS[flavour]
    elif gpu is not None:
        argv += ["-i", str(gpu)]
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
        # A hit needs an IoU above the threshold, and no IoU exceeds 1: 1 scores nothing.
        if not 0 < iou_thresh < 1:
            raise ArgvError(f"iou_thresh={iou_thresh} must be a fraction in (0, 1), e.g. 0.5")
        argv += ["-iou_thresh", f"{iou_thresh:g}"]
    return argv


def _check_extra(flavour: Flavour, extra: Sequence[str]) -> list[str]:
    problems = extra_args_problems(flavour, extra)
    if problems:
        index, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArgvError(f"extra argument {index}: {message}{more}", key="darknet.extra_args")
    return list(extra)


def _gpu_list(gpus: Sequence[int]) -> str:
    if any(isinstance(g, bool) or not isinstance(g, int) or g < 0 for g in gpus):
        raise ArgvError(
            f"gpus={list(gpus)}: GPU indices are whole numbers ≥ 0, e.g. [0, 1]", key="darknet.gpus"
        )
    if len(set(gpus)) != len(gpus):
        raise ArgvError(f"gpus={list(gpus)} names a GPU twice", key="darknet.gpus")
    return ",".join(str(g) for g in gpus)


def _abs(path: str | Path) -> str:
    return os.path.abspath(path)


def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown darknet flavour {flavour!r}; expected one of {FLAVOURS}")
