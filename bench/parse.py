"""Log parser throughput: `LogParser` against a naive regex chain, in the same run.

Usage: `.venv/bin/python bench/parse.py [--mb 50] [--rounds 3]`

The corpus is every shared log (`../shared/logs/*.log`, read in place) repeated in memory until
it holds at least `--mb` MB; nothing is written to disk. Both contenders see the same lines,
one log copy after another, and each log copy gets a fresh parser. The naive chain is what one
writes first: one precompiled regex per line type, tried in a fixed order on every line (after
one escape-stripping `sub`), first match wins, and its fields converted as the parser does.
It keeps no state (no region aggregation, no evaluation assembly, no events), so the ratio is
a lower bound of what the dispatch saves.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.darknet.logparse import LogParser  # noqa: E402
from supervisor.training.events import IterationRun  # noqa: E402

SHARED = Path(os.environ.get("TRAINSUP_SHARED", ROOT.parent / "shared"))
LOGS = SHARED / "logs"

_F = r"([^,\s]+)"
_ESC = re.compile(r"\x1b\[H\x1b\[J[^\x07]*\x07?|\x1b\][^\x07\x1b]*\x07?|\x1b\[[0-?]*[ -/]*[@-~]")


def _f(tok: str | None) -> float | None:
    if tok is None:
        return None
    try:
        return float(tok)
    except ValueError:
        return float("nan")


def _i(tok: str | None) -> int | None:
    return int(tok) if tok is not None else None


Fields = tuple[object, ...]
# Fixed order, first match wins: the frequent types first, as a careful naive author would.
NAIVE_CHAIN: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], Fields]]] = [
    (
        "iteration",
        re.compile(
            r"(?<!\d)(\d+):\s*"
            + _F
            + r",\s*"
            + _F
            + r"\s+avg(?: loss)?,\s*"
            + _F
            + r"\s+rate,\s*"
            + _F
            + r"\s+seconds,\s*(\d+)\s+images(?:,\s*"
            + _F
            + r"\s+(?:hours|time) left)?"
        ),
        lambda m: (int(m[1]), _f(m[2]), _f(m[3]), _f(m[4]), _f(m[5]), int(m[6]), _f(m[7])),
    ),
    (
        "hankai_iteration",
        re.compile(
            r"(?<!\d)(\d+):\s*loss="
            + _F
            + r",\s*avg loss="
            + _F
            + r".*?rate="
            + _F
            + r",.*?(\d+) images, time remaining=(.*)$"
        ),
        lambda m: (int(m[1]), _f(m[2]), _f(m[3]), _f(m[4]), int(m[5]), m[6]),
    ),
    (
        "region",
        re.compile(r"Region.*?IOU: ([^,\s)]+).*?count: (\d+)"),
        lambda m: (_f(m[1]), int(m[2])),
    ),
    ("last_accuracy", re.compile(r"Last accuracy mAP"), lambda m: ()),
    ("next_map", re.compile(r"\(next mAP calculation"), lambda m: ()),
    (
        "map_result",
        re.compile(r"mean average precision \(mAP(?:@([\d.]+))?\)\s*=\s*([^,\s%]+)"),
        lambda m: (_f(m[1]), _f(m[2])),
    ),
    (
        "map_summary",
        re.compile(r"mean_average_precision \(mAP(?:@([\d.]+))?\)\s*=\s*([^,\s]+)"),
        lambda m: (_f(m[1]), _f(m[2])),
    ),
    ("map_start", re.compile(r"calculation mAP"), lambda m: ()),
    (
        "class_ap",
        re.compile(
            r"class_id = (\d+), name = (.*?),\s+ap = ([^%\s]+)\s*%"
            r"(?:\s*\(TP = (\d+), FP = (\d+)\))?"
        ),
        lambda m: (int(m[1]), m[2], _f(m[3]), _i(m[4]), _i(m[5])),
    ),
    (
        "precision",
        re.compile(
            r"conf_thresh = "
            + _F
            + r", precision = "
            + _F
            + r", recall = "
            + _F
            + r", F1-score = "
            + _F
        ),
        lambda m: (_f(m[1]), _f(m[2]), _f(m[3]), _f(m[4])),
    ),
    (
        "tp_fp_fn",
        re.compile(
            r"conf_thresh = "
            + _F
            + r", TP = (\d+), FP = (\d+), FN = (\d+), average IoU = "
            + r"([^,\s%]+)"
        ),
        lambda m: (_f(m[1]), int(m[2]), int(m[3]), int(m[4]), _f(m[5])),
    ),
    ("iou_threshold", re.compile(r"IoU threshold = ([\d.]+)\s*%"), lambda m: (_f(m[1]),)),
    (
        "resizing",
        re.compile(r"Resizing(?:.*?(\d{2,5})\s*x\s*(\d{2,5}))?"),
        lambda m: (_i(m[1]), _i(m[2])),
    ),
    (
        "size",
        re.compile(r"^\s*(\d{2,5})(?:\s*x\s*(\d{2,5}))?\s*$"),
        lambda m: (_i(m[1]), _i(m[2])),
    ),
    ("saved", re.compile(r"Saving weights to (.+?)\s*$"), lambda m: (m[1],)),
    (
        "oom",
        re.compile(
            r"out of memory|set subdivisions|cudaErrorMemoryAllocation|CUDA memory allocation"
            r" failed|CUDNN_STATUS_ALLOC_FAILED|found FWD algo"
        ),
        lambda m: ("out_of_memory",),
    ),
    ("no_device", re.compile(r"no CUDA-capable device|cudaErrorNoDevice"), lambda m: ("nd",)),
    ("locator", re.compile(r"(?:CUDA|cuDNN) status Error"), lambda m: ()),
    ("cudnn", re.compile(r"cuDNN Error|cuDNN current error|CUDNN_STATUS_"), lambda m: ("cudnn",)),
    ("cuda", re.compile(r"CUDA Error"), lambda m: ("cuda",)),
    (
        "fatal",
        re.compile(
            r"Couldn't open file|Darknet error location|Assertion.*failed|realloc\(\): |"
            r"free\(\): |Segmentation fault|Aborted \(core dumped\)|(?:^|\W)Error: "
        ),
        lambda m: (m[0],),
    ),
]


def naive(lines: list[str]) -> int:
    """The naive chain over one log; returns how many lines matched a type."""
    found = 0
    for raw in lines:
        s = _ESC.sub("", raw).replace("\x07", "").rstrip("\r")
        if "\r" in s:
            s = s.rsplit("\r", 1)[-1]
        for _name, rx, fields in NAIVE_CHAIN:
            m = rx.search(s)
            if m is not None:
                fields(m)
                found += 1
                break
    return found


def parser(lines: list[str]) -> int:
    """`LogParser.feed_line` line by line over one log; returns how many events it emitted."""
    p = LogParser()
    n = 0
    for line in lines:
        n += len(p.feed_line(line))
    return n + len(p.close())


def parser_feed(lines: list[str]) -> int:
    """`LogParser.feed` over one log's text in 64 KiB chunks, as `parse_file` and a tail do."""
    text = "\n".join(lines) + "\n"
    p = LogParser()
    n = 0
    for pos in range(0, len(text), 1 << 16):
        n += len(p.feed(text[pos : pos + (1 << 16)]))
    return n + len(p.close())


def parser_runs(lines: list[str]) -> int:
    """`LogParser.feed_runs` over the same chunks, as `analyze` reads: stretches of plain
    iteration lines in bulk (an `IterationRun` counts its lines as events)."""
    text = "\n".join(lines) + "\n"
    p = LogParser()
    n = 0
    for pos in range(0, len(text), 1 << 16):
        for e in p.feed_runs(text[pos : pos + (1 << 16)]):
            n += len(e) if isinstance(e, IterationRun) else 1
    return n + len(p.close())


def build_corpus(min_mb: float) -> tuple[list[list[str]], int, int]:
    """The shared logs as lists of lines, repeated to at least `min_mb` MB of text."""
    if not LOGS.is_dir():
        sys.exit(f"bench/parse.py: the shared logs are not at {LOGS}; set TRAINSUP_SHARED")
    base: list[tuple[list[str], int]] = []
    for path in sorted(LOGS.glob("*.log")):
        data = path.read_bytes()
        text = data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        base.append((lines, len(data)))
    per_copy = sum(size for _, size in base)
    copies = max(1, -(-int(min_mb * 1_000_000) // per_copy))
    corpus = [lines for _ in range(copies) for lines, _ in base]
    n_lines = sum(len(lines) for lines in corpus)
    return corpus, n_lines, per_copy * copies


def timed(fn: Callable[[list[str]], int], corpus: list[list[str]]) -> tuple[float, int]:
    start = time.perf_counter()
    total = 0
    for lines in corpus:
        total += fn(lines)
    return time.perf_counter() - start, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default 50)")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds each (default 3)")
    args = ap.parse_args()

    corpus, n_lines, n_bytes = build_corpus(args.mb)
    print(f"corpus: {n_bytes / 1e6:.1f} MB, {n_lines:,} lines ({len(corpus)} log copies)")
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    contenders = (
        ("LogParser", parser),
        ("LogParser.feed", parser_feed),
        ("feed_runs", parser_runs),
        ("naive chain", naive),
    )
    results: dict[str, list[float]] = {name: [] for name, _ in contenders}
    counts: dict[str, int] = {}
    for _ in range(args.rounds):  # interleaved, so that load on shared cores hits both
        for name, fn in contenders:
            secs, count = timed(fn, corpus)
            results[name].append(secs)
            counts[name] = count
    rate = {name: n_lines / min(times) for name, times in results.items()}
    for name, times in results.items():
        what = "matched lines" if name == "naive chain" else "events"
        print(
            f"{name:15s} best {min(times):6.2f} s  median {statistics.median(times):6.2f} s"
            f"  {rate[name] / 1e6:5.3f} M lines/s  ({counts[name]:,} {what})"
        )
    for name in ("LogParser", "LogParser.feed", "feed_runs"):
        ratio = rate[name] / rate["naive chain"]
        print(f"ratio: {name} is {ratio:.2f}x the naive chain (lines/s, best round)")


if __name__ == "__main__":
    main()
