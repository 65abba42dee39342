#!/usr/bin/env python3
"""A stand-in for hank-ai darknet ("Darknet/YOLO"), written from its source (docs/hankai.md).

Nothing here is copied from a log or from hank-ai's code: the lines are generated with the
formats that hank-ai's source prints (`train_detector_internal` in src-lib/detector.cpp,
`validate_detector_map`, `save_weights_upto` in src-lib/weights.cpp, `show_version_info`,
`display_usage`, `darknet_fatal_error`, the signal handler in src-cli/darknet_cli.cpp), for
one of these console layouts (TRAINSUP_HANKAI_FORMAT):

- `v3.0`   tag v3.0 (bcd5a639, 2024-05): `N: loss=…, avg loss=…, rate=…, 64.424 milliseconds,
  I images, time remaining=7 seconds`, a `-> next mAP calculation will be at iteration #N` line
  before every iteration line with -map, AlexeyAB's mAP block with a confusion-matrix table;
- `v5.0`   tags v4.1/v5.0 (2025-05): `last=…, best=…, next=N` added to the iteration line, the
  `mean average precision (mAP@0.50)=81.23%` result, `New best mAP, saving weights!`;
- `v5.1`   tag v5.1 (e1720f44, 2025-10): `load N=…, train=…` instead of one duration;
- `master` (default) tag v6.0 and master f684e1d7 (2026-06): `mAP=N|DISABLED` instead of
  `next=N`, the rewritten mAP block (`-> mean average precision (mAP@0.50)=81.23%`, an
  `Id Name AP TP FP FN GT F1 AvgIoU` table, `\\r` progress lines).

Called as the supervisor calls hank-ai (`detector train <data> <cfg> [weights] -dont_show
-nocolour [-map] -gpus 0 …`; arguments in any order, .data/.cfg/.weights told by their
extension). Per iteration, in hank-ai's order: the iteration line; with -map, at
`max(burn_in, last evaluation + max(100, train images / batch))` and at max_batches, the mAP
block, then `_best` when the mAP is ≥ the best so far; `_<N>` every 1000 iterations (10000 when
max_batches > 10000, `-saveweights N` from v4.1); `_last` every 100; `_final` at the end. Each
save prints `Saving weights to <backup>/<base>_….weights` (stdout) before the file is written,
with the header (0, 2, 5, seen = iteration × (batch ÷ subdivisions) × subdivisions) and the
network's full size (`expected_weights_size`). SIGTERM/SIGINT: hank-ai's handler prints its
fatal-error box and aborts (SIGABRT), saving nothing. A train image without its label file
(`<image minus extension>.txt`, v3.1+) aborts the same way, a few iterations in. Without
`-nocolour` the output is coloured, as hank-ai's is by default even into a pipe. Without any
argument it prints the banner and `Darknet/YOLO CLI usage:` and exits 0.

Environment: TRAINSUP_HANKAI_FORMAT; TRAINSUP_HANKAI_DELAY (seconds per iteration, default
0.002); TRAINSUP_HANKAI_MAPS (comma-separated mAP fractions, one per evaluation, the last
repeated; default a rising curve that flattens).
"""

from __future__ import annotations

import math
import os
import signal
import struct
import sys
import time
from pathlib import Path
from types import FrameType

FORMATS = ("v3.0", "v5.0", "v5.1", "master")
# (what show_version_info prints before the version string, the version string, build date)
BANNERS = {
    "v3.0": ("Darknet", "v3.0-0-gbcd5a639", None),
    "v5.0": ('Darknet V4 "Moonlit"', "v5.0-0-gb992aebe", None),
    "v5.1": ('Darknet V5 "Moonlit"', "v5.1-0-ge1720f44", None),
    "master": ('Darknet V5 "Moonlit"', "v5.1-104-gf684e1d7", "Jun 27 2026"),
}
KEYWORDS = {"v3.0": "", "v5.0": "Moonlit", "v5.1": "Moonlit", "master": "Moonlit"}
DEFAULT_MAPS = (0.05, 0.22, 0.41, 0.55, 0.63, 0.66, 0.67, 0.67, 0.665, 0.668)
THRESH = 0.25
IOU_THRESH = 0.5

# ANSI colours as hank-ai's darknet_format_and_colour.cpp defines them.
NORMAL, BRIGHT_WHITE, BRIGHT_CYAN, BRIGHT_MAGENTA = (
    "\033[0m",
    "\033[1;37m",
    "\033[1;36m",
    "\033[1;35m",
)
BRIGHT_RED, BRIGHT_BLUE, DARK_GREY = "\033[1;31m", "\033[1;34m", "\033[1;30m"


class Console:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def c(self, colour: str, text: object) -> str:
        return f"{colour}{text}{NORMAL}" if self.colour else str(text)

    def out(self, text: str = "", end: str = "\n") -> None:
        sys.stdout.write(text + end)
        sys.stdout.flush()

    def loss(self, v: float) -> str:
        return self.c(BRIGHT_CYAN, f"{v:.3f}")

    def accuracy(self, v: float) -> str:
        if v == -1.0:
            return self.c(NORMAL, "none")
        return self.c(BRIGHT_RED if v < 0.5 else BRIGHT_BLUE, f"{100.0 * v:.2f}%")


def option(path: Path, key: str, default: str | None = None) -> str:
    for line in path.read_text().splitlines():
        k, _, v = line.split("#")[0].replace(" ", "").partition("=")
        if k == key:
            return v
    if default is None:
        raise SystemExit(f"{path}: no {key}=")
    return default


def format_time(seconds: float) -> str:
    """v2–v5.0 `Darknet::format_time`: the iteration's duration."""
    if seconds >= 0.5:
        return f"{seconds:.3f} seconds"
    if seconds >= 0.005:
        return f"{seconds * 1000.0:.3f} milliseconds"
    return f"{seconds * 1000000.0:.3f} microseconds"


def format_time_remaining(seconds: float) -> str:
    """v2–v5.0 `Darknet::format_time_remaining`."""
    minute, hour = 60.0, 3600.0
    day, week = 24 * hour, 7 * 24 * hour
    if seconds < 0 or seconds >= 4 * week:
        return "unknown"
    for size, word in ((week, "weeks"), (day, "days"), (hour, "hours"), (minute, "minutes")):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {word}"
    secs = round(seconds)
    return f"{secs} second" + ("" if secs == 1 else "s")


def format_duration(seconds: float, decimals: int = 1, trim: bool = False) -> str:
    """v5.1+ `Darknet::format_duration_string` (durations and, trimmed, time remaining)."""
    if seconds <= 0:
        return "unknown"
    if decimals < 3 and seconds <= 1e-6:
        text = f"{seconds * 1e9:.{decimals}f} nanoseconds"
    elif decimals < 3 and seconds <= 1e-4:
        text = f"{seconds * 1e6:.{decimals}f} microseconds"
    elif seconds < 1.0:
        text = f"{seconds * 1e3:.{decimals}f} milliseconds"
    elif seconds < 1.0005:
        text = f"{1.0:.{decimals}f} second"
    elif seconds <= 120:
        text = f"{seconds:.{decimals}f} seconds"
    elif seconds <= 7200:
        text = f"{seconds / 60:.{decimals}f} minutes"
    elif seconds <= 48 * 3600:
        text = f"{seconds / 3600:.{decimals}f} hours"
    elif seconds <= 7 * 86400:
        text = f"{seconds / 86400:.{decimals}f} days"
    else:
        text = f"{seconds / 604800:.{decimals}f} weeks"
    if trim:
        text = text.replace("." + "0" * decimals + " ", " ", 1)
    return text


def fatal(con: Console, fmt: str, where: str, message: str) -> None:
    """`darknet_fatal_error`: the box (stderr before v4.1, the console stream since), abort."""
    stream = sys.stderr if fmt == "v3.0" else sys.stdout
    box = "* * * * * * * * * * * * * * * * * * * * * * * * * * * * *"
    version = f'"{KEYWORDS[fmt]}" {BANNERS[fmt][1]}'
    stream.write(
        f"\n{box}\n* Error location: {where}\n* Error message:  {con.c(BRIGHT_RED, message)}\n"
        f"* Thread #140234: main darknet thread\n"
        f"* Version {version} built on Jun 27 2026 12:00:00\n"
        f"{box}\n\n"
    )
    stream.flush()
    sys.stdout.flush()
    signal.signal(signal.SIGABRT, signal.SIG_DFL)
    os.abort()


def banner(con: Console, fmt: str) -> str:
    """The first line of `show_version_info` (v3.0: main's `Darknet <version>`)."""
    prefix, version, date = BANNERS[fmt]
    line = f"{prefix} {con.c(BRIGHT_WHITE, version)}"
    return f"{line} {con.c(DARK_GREY, f'[{date}]')}" if date else line


def usage(con: Console, fmt: str) -> int:
    con.out(banner(con, fmt))
    con.out(
        f"CUDA runtime version 12020 ({con.c(BRIGHT_WHITE, 'v12.2')}), driver version 12040"
        f" ({con.c(BRIGHT_WHITE, 'v12.4')})"
    )
    con.out(f"OpenCV {con.c(BRIGHT_WHITE, '4.6.0')}, Ubuntu {con.c(BRIGHT_WHITE, '24.04')}")
    con.out()
    con.out("Darknet/YOLO CLI usage:")
    con.out()
    con.out("\t\tdarknet <command> [<options>] [<function>] [<more options and filenames>]")
    con.out()
    con.out("Commands:")
    con.out("  detector  help  version  ...")
    return 0


def learning_rate(it: int, lr: float, burn_in: int, steps: list[int], scales: list[float]) -> float:
    if it < burn_in:
        return lr * (it / burn_in) ** 4
    for step, scale in zip(steps, scales, strict=False):
        if it >= step:
            lr *= scale
    return lr


def synthetic_loss(it: int) -> float:
    """A loss that falls fast, then slowly, with a little deterministic wobble."""
    return 0.35 + 7.0 * math.exp(-it / 45.0) + 0.6 * math.exp(-it / 400.0) + 0.04 * math.sin(it)


def main(argv: list[str]) -> int:
    fmt = os.environ.get("TRAINSUP_HANKAI_FORMAT", "master")
    if fmt not in FORMATS:
        raise SystemExit(f"TRAINSUP_HANKAI_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    # hank-ai matches a flag by its lower-case letters and digits: -dont_show is "dontshow".
    flags = {"".join(ch for ch in a.lower() if ch.isalnum()) for a in argv if a.startswith("-")}
    con = Console(colour="nocolour" not in flags and "nocolor" not in flags)
    # hank-ai sorts its arguments by kind: existing files by extension, the rest by name.
    files = [Path(a) for a in argv if Path(a).exists()]
    data = next((p for p in files if p.suffix == ".data"), None)
    cfg = next((p for p in files if p.suffix == ".cfg"), None)
    weights = next((p for p in files if p.suffix == ".weights"), None)
    words = [a for a in argv if not a.startswith("-") and not Path(a).exists()]
    if not words:
        return usage(con, fmt)  # no command: main() calls display_usage()
    assert words[:2] == ["detector", "train"], argv
    assert data is not None and cfg is not None, f"no .data or .cfg among {argv}"
    calc_map = "map" in flags
    clear = "clear" in flags
    gpus = argv[argv.index("-gpus") + 1] if "-gpus" in argv else None
    save_every = int(argv[argv.index("-saveweights") + 1]) if "-saveweights" in argv else 0
    delay = float(os.environ.get("TRAINSUP_HANKAI_DELAY", "0.002"))
    maps_env = os.environ.get("TRAINSUP_HANKAI_MAPS")
    maps = [float(x) for x in maps_env.split(",")] if maps_env else list(DEFAULT_MAPS)

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        signal.signal(sig, signal.SIG_DFL)
        con.out(f"calling Darknet's fatal error handler due to signal #{sig}")
        fatal(
            con,
            fmt,
            "/src/darknet/src-cli/darknet_cli.cpp, darknet_signal_handler(), line #484",
            f"signal handler invoked for signal #{sig} ({signal.strsignal(sig)})",
        )

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, on_signal)

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from supervisor.darknet.cfg import Cfg
    from supervisor.darknet.weights import expected_weights_size

    net = Cfg.load(cfg)
    batch, subdivisions = net.batch, net.subdivisions
    mini = batch // subdivisions
    n = net.net
    max_batches = n.get_int("max_batches", 0)
    burn_in = n.get_int("burn_in", 0)
    lr = n.get_float("learning_rate", 0.001)
    steps = [int(s) for s in n.get_str("steps", "").split(",") if s.strip()]
    scales = [float(s) for s in n.get_str("scales", "").split(",") if s.strip()]
    size = expected_weights_size(net) or 20 + 4096
    backup = option(data, "backup", "/backup/")
    train_list = Path(option(data, "train", "data/train.txt"))
    train_images = [p for p in train_list.read_text().splitlines() if p.strip()]
    valid_list = Path(option(data, "valid", str(train_list)))
    valid_images = [p for p in valid_list.read_text().splitlines() if p.strip()]
    base = cfg.name.split(".")[0]
    imgs = mini * subdivisions * (len(gpus.split(",")) if gpus else 1)

    con.out(banner(con, fmt))
    if gpus is not None:
        con.out(gpus)  # run_detector prints the -gpus list as it reads it
    if calc_map:
        con.out("Prepare additional network for mAP calculation...")
    con.out(f"Learning Rate: {lr:.6f}, Momentum: 0.900000, Decay: 0.000500")
    con.out("Detection layer #16 is type 28 (yolo)")
    con.out("Detection layer #23 is type 28 (yolo)")
    map_every = max(100, len(train_images) // (mini * subdivisions))
    con.out(f"mAP calculations will be every {map_every} iterations")
    if fmt == "v3.0":
        save_every = 0  # -saveweights arrived in v4.1
    how_often = save_every or (1000 if max_batches <= 10000 else 10000)
    con.out(f"weights will be saved every {how_often} iterations")
    if fmt == "master":
        for k in range(0, len(train_images) + 1, max(1, len(train_images) // 3)):
            pct = round(100 * k / len(train_images))
            con.out(
                f"\r-> loading image #{k} ({pct}%) in {333 * (k + 1):.1f} milliseconds      ",
                end="",
            )
        con.out()

    missing = [
        p for p in train_images if not Path(p.rsplit(".", 1)[0] + ".txt").exists()
    ]  # v3.1+: the last extension becomes .txt

    def save(suffix: str, it: int) -> None:
        path = f"{backup}/{base}{suffix}.weights"  # sprintf("%s/%s_….weights", backup, base)
        con.out(f"Saving weights to {con.c(BRIGHT_MAGENTA, path)}")
        header = struct.pack("<iiiQ", 0, 2, 5, it * mini * subdivisions)
        with open(path, "wb") as f:
            f.write(header)
            f.flush()
            f.write(b"\0" * (size - len(header)))

    it = 0
    if weights is not None and not clear:
        with weights.open("rb") as f:
            it = struct.unpack("<iiiQ", f.read(20))[3] // (mini * subdivisions)
    first = it
    iter_save = iter_save_last = iter_map = it
    last_map, best_map, best_at = -1.0, -1.0, it
    evaluations = 0
    avg = -1.0
    start = time.monotonic()
    while it < max_batches:
        t0 = time.monotonic()
        time.sleep(delay)
        if missing and it - first >= 3:
            label = missing[0].rsplit(".", 1)[0] + ".txt"
            fatal(
                con,
                fmt,
                "/src/darknet/src-lib/data.cpp, read_boxes(), line #185",
                f'failed to open annotation file "{label}"',
            )
        it += 1
        loss = synthetic_loss(it)
        avg = loss if avg < 0 else avg
        avg = avg * 0.9 + loss * 0.1
        took = time.monotonic() - t0
        per_it = (time.monotonic() - start) / (it - first)
        remaining = (max_batches - it) * per_it
        rate = learning_rate(it, lr, burn_in, steps, scales)
        next_map = max(burn_in, iter_map + map_every)
        head = f"{con.c(BRIGHT_WHITE, it)}: loss={con.loss(loss)}, avg loss={con.loss(avg)}"
        if fmt == "v3.0":
            if calc_map:
                con.out(f"-> next mAP calculation will be at iteration #{next_map}")
                if last_map > 0:
                    con.out(
                        f"-> last accuracy mAP@{IOU_THRESH:.2f}={con.accuracy(last_map)},"
                        f" best={con.accuracy(best_map)}"
                    )
            left = format_time_remaining(remaining)
            line = (
                f"{head}, rate={rate:.8f}, {format_time(took)}, {it * imgs} images,"
                f" time remaining={left}"
            )
        else:
            acc = f"last={con.accuracy(last_map)}, best={con.accuracy(best_map)}"
            if fmt == "master":
                acc += f", mAP={next_map if calc_map else con.c(BRIGHT_RED, 'DISABLED')}"
            else:
                acc += f", next={next_map}"
            if fmt == "v5.0":
                timing = format_time(took)
                left = format_time_remaining(remaining)
            else:
                timing = f"load {imgs}={format_duration(took / 3)}, train={format_duration(took)}"
                left = format_duration(round(remaining), 1, trim=True)
            line = (
                f"{head}, {acc}, rate={rate:.8f}, {timing}, {it * imgs} images,"
                f" time remaining={left}"
            )
        if con.colour:
            # The terminal title (OSC 2), glued to the start of the iteration line.
            seen = f" map={last_map:.2f} best={best_map:.2f}" if last_map > 0 else ""
            line = f"\033]2;{it}/{max_batches}: loss={loss:.1f}{seen} time={left}\007" + line
        con.out(line)

        if calc_map and (it >= next_map or it == max_batches):
            iter_map = it
            last_map = maps[min(evaluations, len(maps) - 1)]
            evaluations += 1
            map_block(con, fmt, last_map, len(valid_images))
            if last_map >= best_map:
                best_map, best_at = last_map, it
                con.out("New best mAP!" if fmt == "v3.0" else "New best mAP, saving weights!")
                save("_best", it)
        if it >= iter_save + how_often or it % how_often == 0:
            iter_save = it
            save(f"_{it}", it)
        if it >= iter_save_last + 100 or (it % 100 == 0 and it > 1):
            iter_save_last = it
            save("_last", it)

    save("_final", it)
    if fmt == "v3.0":
        con.out(
            'If you want to re-start training, then use the flag "-clear" in the training command.'
        )
    else:
        if last_map > 0 or best_map > 0:
            con.out()
            con.out(
                f"Last accuracy mAP@{IOU_THRESH:.2f}={con.accuracy(last_map)},"
                f" best={con.accuracy(best_map)} at iteration #{best_at}."
            )
        con.out()
        con.out(f"Training iteration has reached max batch limit of {max_batches}.  If you want")
        con.out("to restart training with these weights, either increase the limit, or")
        con.out('use the "-clear" flag to reset the training images counter to zero.')
    return 0


def map_block(con: Console, fmt: str, m: float, images: int) -> None:
    """What `validate_detector_map` prints for an evaluation whose mean AP is `m` (2 classes)."""
    aps = (min(1.0, m + 0.04), max(0.0, m - 0.04))
    names = ("circle", "square")
    tp, fp, gt = (17, 12), (2, 5), (20, 18)
    fn = (gt[0] - tp[0], gt[1] - tp[1])
    precision = sum(tp) / (sum(tp) + sum(fp))
    recall = sum(tp) / sum(gt)
    f1 = 2 * precision * recall / (precision + recall)
    iou = 0.6813
    if fmt == "master":
        con.out(
            f"Calculating mAP (mean average precision) with threshold {THRESH:.2f} and IoU"
            f" threshold {IOU_THRESH:.2f}."
        )
        con.out(f"-> {images} validation images for 2 classes")
        con.out("-> 2 loading threads with a maximum work queue size of 64 images")
        for k in (images // 2, images):
            pct = round(100 * k / images)
            con.out(
                f"\r-> 812 images/sec: loading #{k} ({pct}%), predicting #{k} ({pct}%),"
                f" analyzing #{k} ({pct}%)  ",
                end="",
            )
        con.out()
        con.out(f"detections_count=41, unique_truth_count={sum(gt)}")
        con.out("\rrank=0 of ranks=41", end="")
        con.out()
        con.out()
        con.out(" AP=average precision, TP=true positive, TN=true negative,")
        con.out(" FP=false positive, FN=false negative, GT=ground truth count")
        con.out()
        con.out(
            "  Id Name                       AP      TP      FP      FN      GT       F1   AvgIoU"
        )
        con.out(
            "  -- -------------------- -------- ------- ------- ------- ------- -------- --------"
        )
        for i in range(2):
            p = tp[i] / (tp[i] + fp[i])
            r = tp[i] / gt[i]
            cf1 = 2 * p * r / (p + r)
            con.out(
                f"  {i:>2} {con.c(BRIGHT_WHITE, names[i])}{' ' * (20 - len(names[i]))}"
                f" {100 * aps[i]:>8.4f}"
                f" {tp[i]:>7} {fp[i]:>7} {fn[i]:>7} {gt[i]:>7} {100 * cf1:>8.4f} {100 * iou:>8.4f}"
            )
        con.out()
        con.out(
            f"-> for conf_thresh={THRESH:.2f}, precision={precision:.2f}, recall={recall:.2f},"
            f" F1 score={f1:.2f}"
        )
        con.out(
            f"-> for conf_thresh={THRESH:.2f}, TP={sum(tp)}, FP={sum(fp)}, FN={sum(fn)},"
            f" average IoU={100 * iou:.2f}%"
        )
        con.out(
            f"-> IoU threshold={100 * IOU_THRESH:.2f}%,"
            " used area-under-curve for each unique recall"
        )
        con.out(f"-> mean average precision (mAP@{IOU_THRESH:.2f})={con.accuracy(m)}")
        con.out("mAP calculations took a total of 1.2 seconds.")
        return
    header = (
        "  Id Name             AvgPrecision     TP     FN     FP     TN Accuracy ErrorRate"
        " Precision Recall Specificity FalsePosRate"
    )
    rule = (
        "  -- ----             ------------ ------ ------ ------ ------ -------- ---------"
        " --------- ------ ----------- ------------"
    )
    if fmt == "v3.0":
        con.out()
        con.out(" calculating mAP (mean average precision)...")
        con.out(f"using 2 threads to load {images} validation images for mAP% calculations")
        con.out(f"\rprocessing #{images} (100%) ", end="")
        con.out()
        con.out(f" detections_count = 41, unique_truth_count = {sum(gt)}  ")
        con.out(" rank = 0 of ranks = 41 \r", end="")
    else:
        con.out("Calculating mAP (mean average precision)...")
        con.out(f"\rprocessing #{images} (100%) ", end="")
        con.out(f"detections_count={41}, unique_truth_count={sum(gt)}")
    con.out()
    con.out()
    con.out(header)
    con.out(rule)
    for i in range(2):
        dets = 30
        tn = dets - tp[i] - fn[i] - fp[i]
        p = tp[i] / (tp[i] + fp[i])
        r = tp[i] / (tp[i] + fn[i])
        con.out(
            f"  {i:>2} {con.c(BRIGHT_WHITE, names[i])}{' ' * (16 - len(names[i]))}"
            f" {100 * aps[i]:>12.4f} {tp[i]:>6}"
            f" {fn[i]:>6} {fp[i]:>6} {tn:>6} {(tp[i] + tn) / dets:>8.4f}"
            f" {(fp[i] + fn[i]) / dets:>9.4f} {p:>9.4f} {r:>6.4f} {0.0:>11.4f} {0.0:>12.4f}"
        )
    if fmt == "v3.0":
        con.out()
        con.out(
            f" for conf_thresh = {THRESH:.2f}, precision = {precision:.2f}, recall = {recall:.2f},"
            f" F1-score = {f1:.2f} "
        )
        con.out(
            f" for conf_thresh = {THRESH:.2f}, TP = {sum(tp)}, FP = {sum(fp)}, FN = {sum(fn)},"
            f" average IoU = {100 * iou:.2f} % "
        )
        con.out()
        con.out(
            f" IoU threshold = {100 * IOU_THRESH:.0f} %,"
            " used Area-Under-Curve for each unique Recall "
        )
        con.out(f" mean average precision (mAP@{IOU_THRESH:.2f}) = {m:f}, or {100 * m:.2f} % ")
        sys.stderr.write("Total Detection Time: 1 Seconds\n")
        con.out()
        con.out(f" mean_average_precision (mAP@{IOU_THRESH:.2f}) = {m:f} ")
        return
    con.out()
    con.out(
        f"for conf_thresh={THRESH:.2f}, precision={precision:.2f}, recall={recall:.2f},"
        f" F1 score={f1:.2f}"
    )
    con.out(
        f"for conf_thresh={THRESH:.2f}, TP={sum(tp)}, FP={sum(fp)}, FN={sum(fn)},"
        f" average IoU={100 * iou:.2f}%"
    )
    con.out(f"IoU threshold={100 * IOU_THRESH:.2f}%, used area-under-curve for each unique recall")
    con.out(f"mean average precision (mAP@{IOU_THRESH:.2f})={con.accuracy(m)}")
    con.out("Total detection time: 1 seconds")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
