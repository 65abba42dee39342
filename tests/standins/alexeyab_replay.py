#!/usr/bin/env python3
"""A scripted stand-in for AlexeyAB darknet: replays a real AlexeyAB training log.

Called as darknet would be (`detector train <data> <cfg> [weights] -dont_show -map …`); it
prints the lines of the log named by TRAINSUP_REPLAY_LOG, TRAINSUP_REPLAY_DELAY seconds per
iteration line, and writes weights files the way AlexeyAB does (facts §4): `<base>_last` every
100 iterations, `<base>_<N>` every 1000, `<base>_best` after each `New best mAP!`, into the
.data file's backup dir, each with a darknet header whose `seen` is iteration × batch and
the size TRAINSUP_REPLAY_WEIGHTS_SIZE gives (the network's: the runner refuses short files). The
replayed logs kept stdout only, so the `Saving weights to …` lines (stderr) are printed here,
where AlexeyAB prints them: before the file is written. Without arguments it prints
AlexeyAB's usage line, as the real one does.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import time
from pathlib import Path

ITERATION = re.compile(r"^\s*(\d+): [\d.\-naif]+, [\d.\-naif]+ avg")


def option(path: str, key: str) -> str:
    for line in Path(path).read_text().splitlines():
        k, _, v = line.replace(" ", "").partition("=")
        if k == key:
            return v
    raise SystemExit(f"{path}: no {key}=")


def main() -> int:
    args = sys.argv[1:]
    if not args:
        # What AlexeyAB's main (darknet.c) does with no arguments; trainsup's probe reads it.
        print(f"usage: {sys.argv[0]} <function>", file=sys.stderr)
        return 0
    assert args[:2] == ["detector", "train"], args
    data, cfg = args[2], args[3]
    assert "-dont_show" in args, "AlexeyAB needs -dont_show on a headless machine"
    backup = Path(option(data, "backup"))
    batch = int(option(cfg, "batch"))
    base = Path(cfg).name.split(".")[0]
    delay = float(os.environ.get("TRAINSUP_REPLAY_DELAY", "0.002"))
    # A complete save has the network's size (the runner checks it); the test computes it.
    size = int(os.environ.get("TRAINSUP_REPLAY_WEIGHTS_SIZE", "4116"))

    def save(suffix: str, iteration: int) -> None:
        path = backup / f"{base}{suffix}.weights"
        print(f"Saving weights to {path}", file=sys.stderr, flush=True)
        with path.open("wb") as f:
            f.write(struct.pack("<iiiQ", 0, 2, 5, iteration * batch) + b"\0" * (size - 20))

    last = 0
    with open(os.environ["TRAINSUP_REPLAY_LOG"], "rb") as log:
        for raw in log:
            line = raw.decode("utf-8", "replace")
            m = ITERATION.match(line)
            if m:
                if last and last % 100 == 0:
                    save("_last", last)
                    if last % 1000 == 0:
                        save(f"_{last}", last)
                last = int(m.group(1))
                time.sleep(delay)
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("New best mAP!"):
                save("_best", last)
    return 0


if __name__ == "__main__":
    sys.exit(main())
