"""A scripted stand-in for pjreddie darknet, for fast runner tests (seconds, no real training).

Called as darknet is: `detector train <data> <cfg> [weights] [flags]` or `detector valid <data>
<cfg> <weights>`; without arguments it prints darknet's usage line. What it does is read from
the JSON file named by TRAINSUP_SCRIPT (every key optional):

    iteration_s   seconds per iteration (default 0.005)
    save_s        seconds a weights file takes to write, in pieces (default 0: at once)
    hang_at       iteration after which it prints nothing more and sleeps
    crash_at      iteration after which it ends by SIGABRT, as darknet's assert does
    oom_at        iteration after which it prints pjreddie's CUDA out-of-memory lines, exits 1
    oom_mini_batch_over  … only while batch ÷ subdivisions is above this (default 0: always)
    valid_s       seconds `detector valid` takes (default 0)
    valid_hang    `detector valid` never ends (bool)
    quality       [[iteration, share], …]: share of the valid boxes `valid` detects at weights
                  of that iteration (the last entry at or below it); default 0.5
    log           path of a file where each launch appends "train <start> <pid>" / "valid <it>"

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


def script() -> dict[str, Any]:
    path = os.environ.get("TRAINSUP_SCRIPT")
    data: dict[str, Any] = json.loads(Path(path).read_text()) if path else {}
    return data


def note(s: dict[str, Any], text: str) -> None:
    if s.get("log"):
        with open(s["log"], "a") as f:
            f.write(text + "\n")


def write_weights(path: Path, seen: int, size: int, seconds: float) -> None:
    body = size - 20
    with path.open("wb") as f:
        f.write(struct.pack("<iiiQ", 0, 2, 0, seen))
        pieces = 20 if seconds > 0 else 1
        chunk = body // pieces
        for k in range(pieces):
            f.write(b"\0" * (chunk if k < pieces - 1 else body - chunk * (pieces - 1)))
            f.flush()
            if seconds > 0:
                time.sleep(seconds / pieces)


def train(args: list[str], s: dict[str, Any]) -> int:
    data, cfg_path = args[0], args[1]
    weights = args[2] if len(args) > 2 and not args[2].startswith("-") else None
    cfg = Cfg.load(cfg_path)
    per_it = images_per_iteration(cfg.batch, cfg.subdivisions)
    size = expected_weights_size(cfg)
    assert size is not None
    backup = Path(DataFile.load(Path(data)).value("backup") or "backup")
    base = Path(cfg_path).name.split(".", 1)[0]
    start = 0
    if weights:
        with open(weights, "rb") as f:
            start = struct.unpack("<iiiQ", f.read(20))[3] // per_it
    note(s, f"train {start} {os.getpid()}")
    print(f"{base}\nLearning Rate: 0.001, Momentum: 0.9, Decay: 0.0005", flush=True)
    for i in range(start + 1, cfg.max_batches + 1):
        time.sleep(float(s.get("iteration_s", 0.005)))
        loss = 5.0 / (1 + i / 50)
        print(
            f"{i}: {loss:.6f}, {loss * 1.05:.6f} avg, 0.001000 rate, 0.01 seconds, "
            f"{i * per_it} images",
            flush=True,
        )
        if s.get("hang_at") == i:
            while True:
                time.sleep(60)
        if s.get("crash_at") == i:
            print("darknet: ./src/utils.c:256: error: Assertion `0' failed.", flush=True)
            os.kill(os.getpid(), signal.SIGABRT)
        if s.get("oom_at") == i and cfg.mini_batch > int(s.get("oom_mini_batch_over", 0)):
            print("CUDA Error: out of memory", flush=True)
            print("darknet: ./src/cuda.c:36: check_error: Assertion `0' failed.", flush=True)
            return 1
        if i % 100 == 0 or i == cfg.max_batches:
            names = [f"{base}.backup"]
            if i < 1000 and i % 100 == 0:
                names.append(f"{base}_{i}.weights")
            if i == cfg.max_batches:
                names = [f"{base}_final.weights"]
            for name in names:
                print(f"Saving weights to {backup / name}", file=sys.stderr, flush=True)
                write_weights(backup / name, i * per_it, size, float(s.get("save_s", 0)))
    return 0


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
