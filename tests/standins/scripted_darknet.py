"""A scripted stand-in for pjreddie darknet, for fast runner tests (seconds, no real training).

Called as darknet is: `detector train <data> <cfg> [weights] [flags]` or `detector valid <data>
<cfg> <weights>`; without arguments it prints darknet's usage line. What it does is read from
the JSON file named by TRAINSUP_SCRIPT (every key optional):

    iteration_s   seconds per iteration (default 0.005)
    save_s        seconds a weights file takes to write, in pieces (default 0: at once)
    hang_at       iteration after which it prints nothing more and sleeps
    hang_marker   a path: hang only while it does not exist (it is created on hanging), so
                  that the relaunch after a hang goes through
    startup_s     seconds each launch takes before its first iteration (loading, default 0)
    map_s         seconds AlexeyAB's -map evaluation takes (default 0)
    crash_at      iteration after which it ends by SIGABRT, as darknet's assert does
    oom_at        iteration after which it prints pjreddie's CUDA out-of-memory lines, exits 1
    oom_mini_batch_over  … only while batch ÷ subdivisions is above this (default 0: always)
    valid_s       seconds `detector valid` takes (default 0)
    valid_hang    `detector valid` never ends (bool)
    quality       [[iteration, share], …]: share of the valid boxes `valid` detects at weights
                  of that iteration (the last entry at or below it); default 0.5
    log           path of a file where each launch appends "train <start> <pid>" / "valid <it>"
    flavour       "pjreddie" (default) or "alexeyab": AlexeyAB's iteration lines, `Resizing`
                  lines, its -map block (with `-map`), `_last`/`_N`/`_best` saves, OOM words;
                  "hankai": hank-ai's out-of-memory box only (its iteration lines are
                  hankai_standin.py's; here they stay pjreddie's)
    resizes       [[after, size], …]: with random=1 in the cfg, resize to size×size after
                  iteration `after` (-1: at every launch's start, as AlexeyAB resizes to its
                  largest size first); a bigger input needs more memory
    map_every     AlexeyAB with -map: evaluate every N iterations (default 100)
    maps          [mAP, …]: what the evaluations print in turn (default 0.3, 0.4, … 0.9)
    oom_words     "cuda" (default), "cudnn_alloc" (CUDNN_STATUS_ALLOC_FAILED) or "cudnn_algo"
                  (no FWD algo found): what an out-of-memory prints
    lose_stdout   pjreddie: stdout is lost at the abort (unflushed): only stderr's assertion

The simulated GPU (TRAINSUP_SIM_GPU=<dir>, tests/standins/gpu_need.py): with it, training on
`-gpus N` (default GPU 0; none with `-nogpu`) needs `gpu_need.need_mib(cfg…)` MiB — at the
cfg's size, at a resize's size, and with -map's second network while AlexeyAB evaluates. When
that exceeds the device's free memory the flavour's out-of-memory lines are printed (facts §6)
and it exits as darknet does (pjreddie: SIGABRT; AlexeyAB: exit 1). Its use is in
`<dir>/proc-<pid>.json` while it runs; SIGTERM removes it (darknet saves nothing on signals).

Training prints pjreddie's iteration lines and, every 100 iterations, `Saving weights to`
`<base>.backup` then (below 1000) `<base>_<i>.weights`, each written after its line as pjreddie
does (facts §4), with a real header (`seen` = iteration × (batch ÷ subdivisions) ×
subdivisions) and the cfg's network size; `<base>_final.weights` at max_batches. With a weights
argument it resumes at the iteration its header holds, like darknet without -clear.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

from supervisor.darknet.cfg import Cfg, DataFile
from supervisor.darknet.weights import expected_weights_size, images_per_iteration
from tests.standins import gpu_need


def script() -> dict[str, Any]:
    path = os.environ.get("TRAINSUP_SCRIPT")
    data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
    return data


def note(s: dict[str, Any], text: str) -> None:
    if s.get("log"):
        with open(s["log"], "a") as f:
            f.write(text + "\n")


def write_weights(path: Path, header: tuple[int, int, int, int], size: int, seconds: float) -> None:
    body = size - 20
    with path.open("wb") as f:
        f.write(struct.pack("<iiiQ", *header))
        pieces = 20 if seconds > 0 else 1
        chunk = body // pieces
        for k in range(pieces):
            f.write(b"\0" * (chunk if k < pieces - 1 else body - chunk * (pieces - 1)))
            f.flush()
            if seconds > 0:
                time.sleep(seconds / pieces)


class SimGpu:
    """This process's use of the simulated GPU (module docstring); inert without one."""

    def __init__(self, args: list[str], cfg: Cfg, s: dict[str, Any]) -> None:
        self.dir = gpu_need.sim_dir()
        self.cfg, self.seed = cfg, int(s.get("sim_seed", 0))
        gpus = args[args.index("-gpus") + 1] if "-gpus" in args else "0"
        self.gpu = None if "-nogpu" in args or self.dir is None else int(gpus.split(",")[0])
        self.used = 0.0

    def fits(self, **setting: Any) -> bool:
        """Take the memory this setting needs, if the device has it free."""
        if self.dir is None or self.gpu is None:
            return True
        _forget_dead(self.dir)
        need = gpu_need.need_mib(self.cfg, seed=self.seed, **setting)
        if need > gpu_need.free_mib(self.dir, self.gpu, except_pid=os.getpid()):
            return False
        if need != self.used:
            self.used = need
            gpu_need.write_proc(self.dir, os.getpid(), self.gpu, need)
        return True

    def release(self) -> None:
        if self.dir is not None:
            gpu_need.remove_proc(self.dir, os.getpid())


def _forget_dead(d: Path) -> None:
    """A killed process's memory is freed by the driver: drop the files of dead stand-ins (a
    SIGKILL leaves its file; a zombie waiting to be reaped holds no memory either)."""
    import psutil

    for f in d.glob("proc-*.json"):
        try:
            pid = int(f.stem.split("-", 1)[1])
        except ValueError:
            continue
        try:
            dead = psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            dead = True
        except psutil.Error:
            continue
        if dead:
            f.unlink(missing_ok=True)


def out_of_memory(flavour: str, s: dict[str, Any], gpu: SimGpu) -> int:
    """Print the flavour's out-of-memory lines (facts §6) and end as it does."""
    gpu.release()
    words = s.get("oom_words", "cuda")
    if flavour == "alexeyab":
        if words == "cudnn_alloc":
            lines = [
                "cuDNN status Error in: file: ./src/convolutional_kernels.cu : () : line: 533",
                " cuDNN Error: CUDNN_STATUS_ALLOC_FAILED",
                "Darknet error location: ./src/dark_cuda.c, cudnn_check_error, line #204",
            ]
        elif words == "cudnn_algo":
            lines = [" Error: cuDNN isn't found FWD algo for convolution."]
        else:
            lines = [
                " Try to set subdivisions=64 in your cfg-file. ",
                "CUDA status Error: file: ./src/dark_cuda.c : () : line: 492 : build time: -",
                "",
                " CUDA Error: out of memory",
                "Darknet error location: ./src/dark_cuda.c, check_error, line #69",
                "CUDA Error: out of memory: Success",
            ]
        for line in lines:
            print(line, file=sys.stderr, flush=True)
        return 1
    if flavour == "hankai":
        # darknet_fatal_error's box (docs/hankai.md §5), then abort().
        for line in (
            "If possible, try to set subdivisions=... higher in your cfg file.",
            "* * * * * * * * * * * * * * * * * * * * * * * * * * * * *",
            "* Error location: /src/darknet/src-lib/dark_cuda.cpp, cuda_make_array(), line #491",
            "* Error message:  CUDA memory allocation failed (4096000).",
            "* Thread #1: main darknet thread",
            '* Version "Moonlit" v5.1 built on Jun 27 2026 12:00:00',
            "* * * * * * * * * * * * * * * * * * * * * * * * * * * * *",
        ):
            print(line, file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGABRT)
        return 134
    # pjreddie: printf to stdout, then assert(0) → abort(): an unflushed stdout is lost
    # (not left to Python's buffering, which PYTHONUNBUFFERED would defeat).
    if not s.get("lose_stdout"):
        print("CUDA Error: out of memory", flush=True)
    print("darknet: ./src/cuda.c:36: check_error: Assertion `0' failed.", file=sys.stderr)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGABRT)
    return 134


def train(args: list[str], s: dict[str, Any]) -> int:
    data, cfg_path = args[0], args[1]
    weights = args[2] if len(args) > 2 and not args[2].startswith("-") else None
    cfg = Cfg.load(cfg_path)
    gpu = SimGpu(args, cfg, s)

    def on_term(signum: int, frame: Any) -> None:
        gpu.release()  # darknet saves nothing on signals (facts §5): die of the signal
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return _train(args, s, data, cfg_path, weights, cfg, gpu)
    finally:
        gpu.release()


def _train(
    args: list[str],
    s: dict[str, Any],
    data: str,
    cfg_path: str,
    weights: str | None,
    cfg: Cfg,
    gpu: SimGpu,
) -> int:
    flavour = s.get("flavour", "pjreddie")
    alexey = flavour == "alexeyab"
    map_on = alexey and "-map" in args
    per_it = images_per_iteration(cfg.batch, cfg.subdivisions)
    size = expected_weights_size(cfg)
    assert size is not None
    backup = Path(DataFile.load(Path(data)).value("backup") or "backup")
    base = Path(cfg_path).name.split(".", 1)[0]
    random = any(d.random for d in cfg.detection_layers())
    resizes = {int(at): int(px) for at, px in s.get("resizes", [])} if random else {}
    maps = list(s.get("maps", [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]))
    start = 0
    if weights:
        with open(weights, "rb") as f:
            start = struct.unpack("<iiiQ", f.read(20))[3] // per_it
    note(s, f"train {start} {os.getpid()}")
    print(f"{base}\nLearning Rate: 0.001, Momentum: 0.9, Decay: 0.0005", flush=True)
    time.sleep(float(s.get("startup_s", 0)))
    if not gpu.fits():
        return out_of_memory(flavour, s, gpu)
    side: int | None = None  # the input size after a resize (None: the cfg's)
    best = -1.0
    evaluations = 0

    def save(name: str, i: int) -> None:
        print(f"Saving weights to {backup / name}", file=sys.stderr, flush=True)
        header = (0, 2, 5 if alexey else 0, i * per_it)
        write_weights(backup / name, header, size, float(s.get("save_s", 0)))

    for i in range(start + 1, cfg.max_batches + 1):
        px = resizes.get(-1) if i == start + 1 else None
        px = resizes.get(i - 1, px)
        if px is not None:
            side = px
            if alexey:
                print(f"Resizing, random_coef = 1.40 \n\n {px} x {px} ", flush=True)
            else:
                print(f"Resizing\n{px}", flush=True)
            if not gpu.fits(width=px, height=px):
                return out_of_memory(flavour, s, gpu)
        time.sleep(float(s.get("iteration_s", 0.005)))
        loss = 5.0 / (1 + i / 50)
        if alexey:
            print(
                f"\n {i}: {loss:.6f}, {loss * 1.05:.6f} avg loss, 0.001000 rate, 0.01 seconds, "
                f"{i * per_it} images, 0.1 hours left",
                flush=True,
            )
        else:
            print(
                f"{i}: {loss:.6f}, {loss * 1.05:.6f} avg, 0.001000 rate, 0.01 seconds, "
                f"{i * per_it} images",
                flush=True,
            )
        if s.get("hang_at") == i:
            marker = Path(s["hang_marker"]) if s.get("hang_marker") else None
            if marker is None or not marker.exists():
                if marker is not None:
                    marker.touch()
                while True:
                    time.sleep(60)
        if s.get("crash_at") == i:
            print("darknet: ./src/utils.c:256: error: Assertion `0' failed.", flush=True)
            os.kill(os.getpid(), signal.SIGABRT)
        if s.get("oom_at") == i and cfg.mini_batch > int(s.get("oom_mini_batch_over", 0)):
            print("CUDA Error: out of memory", flush=True)
            print("darknet: ./src/cuda.c:36: check_error: Assertion `0' failed.", flush=True)
            return 1
        new_best = False
        if map_on and (i % int(s.get("map_every", 100)) == 0 or i == cfg.max_batches):
            print(" calculation mAP (mean average precision)...", flush=True)
            if not gpu.fits(map_on=True):
                return out_of_memory(flavour, s, gpu)
            time.sleep(float(s.get("map_s", 0)))
            value = maps[min(evaluations, len(maps) - 1)]
            evaluations += 1
            print_map_block(value)
            new_best = value > best
            best = max(best, value)
            gpu.fits(width=side, height=side)  # back to training's need
        if alexey:
            names = []
            if new_best:
                names.append(f"{base}_best.weights")
            if i % 1000 == 0:
                names.append(f"{base}_{i}.weights")
            if i % 100 == 0:
                names.append(f"{base}_last.weights")
            if i == cfg.max_batches:
                names.append(f"{base}_final.weights")
        else:
            names = []
            if i % 100 == 0 or i == cfg.max_batches:
                names = [f"{base}.backup"]
                if i < 1000 and i % 100 == 0:
                    names.append(f"{base}_{i}.weights")
                if i == cfg.max_batches:
                    names = [f"{base}_final.weights"]
        for name in names:
            save(name, i)
    return 0


def print_map_block(value: float) -> None:
    """AlexeyAB's -map block (facts §2), with one class."""
    pct = value * 100
    for line in (
        f"class_id = 0, name = shape, ap = {pct:.2f}%   \t (TP = 10, FP = 2) ",
        " for conf_thresh = 0.25, precision = 0.83, recall = 0.50, F1-score = 0.62 ",
        " for conf_thresh = 0.25, TP = 10, FP = 2, FN = 10, average IoU = 60.00 % ",
        " IoU threshold = 50 %, used Area-Under-Curve for each unique Recall ",
        f" mean average precision (mAP@0.50) = {value:.6f}, or {pct:.2f} % ",
        "Total Detection Time: 1 Seconds",
    ):
        print(line, flush=True)


def valid(args: list[str], s: dict[str, Any]) -> int:
    data_path, weights = Path(args[0]), args[2]
    with open(weights, "rb") as f:
        seen = struct.unpack("<iiiQ", f.read(20))[3]
    cfg = Cfg.load(args[1])
    it = seen // images_per_iteration(cfg.batch, cfg.subdivisions)
    note(s, f"valid {it} {' '.join(args[3:])}".rstrip())
    if s.get("valid_hang"):
        while True:
            time.sleep(60)
    time.sleep(float(s.get("valid_s", 0)))
    share = 0.5
    for at, q in s.get("quality", []):
        if it >= at:
            share = q
    data = DataFile.load(data_path)
    names = Path(data.value("names") or "").read_text().split()
    results = Path(data.value("results") or "results")
    images = Path(data.value("valid") or "").read_text().split()
    from PIL import Image

    out: dict[int, list[str]] = {k: [] for k in range(len(names))}
    boxes: list[tuple[str, int, int, list[str]]] = []
    for image in images:
        label = Path(image.replace("images", "labels", 1)).with_suffix(".txt")
        with Image.open(image) as im:
            w, h = im.size
        boxes += [(image, w, h, r.split()) for r in label.read_text().splitlines() if r.strip()]
    # The first `share` of all boxes are found exactly; the rest are missed (recall = share).
    for image, w, h, r in boxes[: round(share * len(boxes))]:
        c, x, y, bw, bh = int(r[0]), *(float(v) for v in r[1:])
        x1, y1 = (x - bw / 2) * w + 1, (y - bh / 2) * h + 1
        x2, y2 = (x + bw / 2) * w + 1, (y + bh / 2) * h + 1
        ident = Path(image).name.split(".", 1)[0]
        out[c].append(f"{ident} 0.9 {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}")
    for c, name in enumerate(names):
        (results / f"comp4_det_test_{name}.txt").write_text("".join(r + "\n" for r in out[c]))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(f"usage: {Path(sys.argv[0]).name} <function>")
        return 0
    s = script()
    if argv[:2] == ["detector", "train"]:
        return train(argv[2:], s)
    if argv[:2] == ["detector", "valid"]:
        return valid(argv[2:], s)
    print(f"not a command the stand-in knows: {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
