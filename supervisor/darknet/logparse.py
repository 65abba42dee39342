"""darknet console output → typed events (`supervisor.training.events`).

One parser for all three flavours and their historical variants (darknet-facts §1–§6). It is
the supervisor's hot path: every line darknet prints passes through `LogParser.feed_line`, and
region/YOLO IoU lines come several per iteration. So a line is first sorted by a cheap test
(its first character, then a few substring checks) and a regex runs only on lines that can
match it; region lines are read with `str.find` and slicing, without a regex.

Decisions (each one is a choice a reader of the events should know about):
- Every pattern is tried whatever the flavour: real logs mix forms (old AlexeyAB printed
  pjreddie's `avg` line), so the flavour, given or detected, is reported and never filters.
- Patterns are searched, not anchored, so process-manager prefixes (`0|yolo | …`), quoting
  (`> …`) and glued progress digits (`4CUDA status Error`) do not hide a line.
- Region lines are summed into one `LayerIoU`, emitted right after the `Iteration` whose line
  closes them (darknet prints them while it trains that iteration). Region lines that no
  iteration line closes (a crash, the end of input) are dropped: they describe an iteration
  that never finished. A layer with count > 0 and a NaN IoU makes the mean NaN on purpose:
  that is a divergence signal, like a NaN loss.
- An iteration line that lost its number (multi-GPU interleaving, facts E3) is dropped:
  guessing the number could rewrite history. It also ends the pending region lines.
- `hours left` < 0 (AlexeyAB prints -1 before it can estimate) becomes None, so that a time
  budget never reads "-1 hours" as a real estimate.
- An mAP evaluation gives one `MapResult`, emitted on its `mean average precision (mAP@…)`
  line; the `mean_average_precision (mAP@0.5) = …` line that the training loop prints after
  it is the same evaluation and is absorbed. Without a preceding result line since the last
  iteration (a Colab tail that starts inside an evaluation) that summary line is itself the
  result. `Last accuracy mAP@… best = …` lines are darknet's memory, not evaluations.
- A value no evaluation can produce (NaN, inf, > 1, a 283-digit number) gives
  `MapResult(valid=False)`: recorded, never a best.
- One failure prints the same CUDA error several times (`CUDA Error: out of memory`, then
  `…: out of memory: Success`); each GPU error kind is emitted once between two iteration
  lines. `CUDA status Error: file: …` / `cuDNN status Error in: …` only locate the error that
  the next line names, so they emit nothing themselves.
- `Resizing` whose size line never comes still gives `Resized(None, None)`: an OOM often
  follows a resize, and the policy needs to see that one happened.
- The last line of an input that does not end with a newline may be cut mid-write: it only
  yields an event when the event cannot be a truncation (`close()` reads it strictly).
- Line ends are `\n`, `\r\n` and a lone `\r`, each one line (as Python's universal newlines
  and most editors count them): hank-ai and AlexeyAB's mAP progress rewrite a line with `\r`,
  and a log saved with CR-only ends is otherwise one line. Each `\r` segment is read, so a
  progress segment followed by a result on the same terminal line loses neither.
- pjreddie's block-buffered stdout, without `stdbuf`, is cut wherever stderr's `Saving weights
  to …` lands (facts §1 "Interleaved streams"). The cut iteration line still gives an
  `Iteration` when its number, loss and avg are whole; what the cut lost is None (seconds,
  images) or NaN (the rate, which is a float). When the cut falls before the avg, the fragment
  waits for its tail (the start of a later line, when the next stdout block arrives) and the
  joined line is read as one, on the tail's line; a fragment no tail completes within
  `_FRAGMENT_LINES` lines is dropped, like a line that lost its number.
- `feed_runs` (what `analyze` reads with) gives the same events as `feed`, but a stretch of
  at least `_RUN_MIN` plain printf iteration lines (and pjreddie's lone saves among them) comes
  as one `IterationRun` read in bulk: one regex `split` per chunk, numbers converted by column.
  Whatever it cannot vouch for goes through `_line`; the tests compare both on every shared log.
- AlexeyAB's status line (`ESC]2;<it>/<max>: loss=… BEL`, since 2023-08 `ESC[H ESC[J<it>/<max>:
  …`, facts §1) is stripped like any escape, but the max_batches it prints is kept first
  (`StatusLines`, `LogParser.printed_max_batches`): no other line of a log without its cfg says
  how long the run was meant to be. It is state, not an event: the live runner has the cfg, and
  the status line repeats the iteration line that follows it. Only lines with an ESC are looked
  at, which the bulk path never takes (`_RUN_LINE_RE` and `_lone_save` refuse them).
- A log's encoding is found from its first bytes (`LogFile`): a BOM (UTF-8, UTF-16) or the NUL
  pattern of UTF-16 without BOM (PowerShell's `Tee-Object` and `>` write UTF-16LE), else
  UTF-8; undecodable bytes become U+FFFD and are counted, so that binary data can be told
  from a log in which darknet did not train.
"""

from __future__ import annotations

import codecs
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress, pairwise
from pathlib import Path
from typing import BinaryIO

from supervisor.training.events import (
    FLAVOURS,
    ClassAP,
    Event,
    FatalError,
    Flavour,
    GpuError,
    GpuErrorKind,
    Iteration,
    IterationRun,
    IterationsRepeated,
    Launch,
    LayerIoU,
    LogSummary,
    MapResult,
    NanLoss,
    Resized,
    WeightsSaved,
)
from supervisor.training.schedule import PrintedMaxBatches

__all__ = [
    "LogFile",
    "LogParser",
    "LogReadError",
    "StatusLines",
    "detect_encoding",
    "detect_flavour",
    "parse_file",
    "parse_lines",
    "split_lines",
]

# ESC[H ESC[J <status> BEL is AlexeyAB's since-2023 status line: its text repeats the iteration
# line and must go with its escapes (its max_batches is read before: `StatusLines`). Then OSC
# (ESC ] … BEL or ESC \), CSI, and 2-byte escapes.
_ESC_RE = re.compile(
    r"\x1b\[H\x1b\[J[^\x07]*\x07?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b[()][0-9A-Za-z]"
    r"|\x1b[@-Z\\-_]?"
)

# The `<it>/<max>` of AlexeyAB's status line, in either form (window title, or after a screen
# clear). `: loss=` after the max proves the number whole (a line cut mid-write cannot shorten it).
_STATUS_RE = re.compile(r"\x1b(?:\]2;|\[H\x1b\[J)[ \t]*(\d+)/(\d+): loss=", re.ASCII)

_F = r"([^,\s]+)"  # a printf %f field, also -nan, inf, -nan(ind), 1.#QNAN0
_ITER_RE = re.compile(
    r"(?<!\d)(\d+):\s*"
    + _F
    + r",\s*"
    + _F
    + r"\s+avg( loss)?,\s*"
    + _F
    + r"\s+rate,\s*"
    + _F
    + r"\s+seconds,\s*(\d+)\s+images(?:,\s*"
    + _F
    + r"\s+(?:hours|time) left)?"
)
# The part of a pjreddie iteration line left before an interleaved `Saving weights to` (facts §1):
# number, loss and avg always; rate, seconds and images only when their word follows them.
_CUT_ITER_RE = re.compile(
    r"(?<!\d)(\d+):\s*"
    + _F
    + r",\s*"
    + _F
    + r"\s+avg( loss)?(?:,\s*"
    + _F
    + r"\s+rate(?:,\s*"
    + _F
    + r"\s+seconds?(?:,\s*(\d+)\s+images)?)?)?"
)
# A line cut before its avg, from its start: the iteration number (maybe cut itself) and at most
# the loss, the avg and the start of the word `avg`.
_FRAGMENT_RE = re.compile(r"\d+(?::\s*[^,\s]*(?:,\s*[^,\s]*(?:\s+av?)?)?)?\s*")
_FRAGMENT_LINES = 32  # save lines a fragment's tail may come after (a burst of saves)
_SAVING = "Saving weights to "
_HANK_ITER_RE = re.compile(r"(?<!\d)(\d+):\s*loss=" + _F + r",\s*avg loss=" + _F + r"(.*)")
_DUR_RE = re.compile(
    r"([-+]?\d+(?:\.\d*)?)\s*(microsecond|millisecond|second|minute|hour|day|week)s?$"
)
_DUR_UNIT = {
    "microsecond": 1e-6,
    "millisecond": 1e-3,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
}
_MAP_RE = re.compile(
    r"mean average precision \(mAP(?:@([\d.]+))?\)\s*=\s*([^,\s%]+)\s*(%?)"
    r"(?:,\s*or\s+([^,\s%]+)\s*%)?"
)
_MAP_SUMMARY_RE = re.compile(r"mean_average_precision \(mAP(?:@([\d.]+))?\)\s*=\s*([^,\s]+)")
_CLASS_RE = re.compile(
    r"class_id = (\d+), name = (.*?),\s+ap = ([^%\s]+)\s*%(?:\s*\(TP = (\d+), FP = (\d+)\))?"
)
# AlexeyAB and hank-ai ≤ v4.0 print `conf_thresh = 0.25, precision = 0.89, …, F1-score = 0.86`;
# hank-ai v4.1+ `conf_thresh=0.25, precision=0.89, …, F1 score=0.86` (docs/hankai.md §2).
_PREC_RE = re.compile(
    r"conf_thresh\s*=\s*"
    + _F
    + r",\s*precision\s*=\s*"
    + _F
    + r",\s*recall\s*=\s*"
    + _F
    + r",\s*F1[- ]score\s*=\s*"
    + _F
)
_TPFN_RE = re.compile(
    r"conf_thresh\s*=\s*"
    + _F
    + r",\s*TP\s*=\s*(\d+),\s*FP\s*=\s*(\d+),\s*FN\s*=\s*(\d+),\s*average IoU\s*=\s*([^,\s%]+)"
)
_IOU_THR_RE = re.compile(r"IoU threshold\s*=\s*([\d.]+)\s*%")
_WH_RE = re.compile(r"(?<!\d)(\d{2,5})\s*x\s*(\d{2,5})(?!\d)")
_SIZE_LINE_RE = re.compile(r"(?:^|[\s|>])(\d{2,5})(?:\s*x\s*(\d{2,5}))?$")

# A plain pjreddie/AlexeyAB iteration line as printf writes it (`%d: %f, %f avg[ loss], %f rate,
# %lf seconds, %d images[, %f hours left]`), alone on its line: the lines `feed_runs` reads in
# bulk. A strict subset of what `_ITER_RE` reads (ASCII digits, printf's spacing and %f
# numbers, nothing after), so that both read such a line alike; any other line takes `_line`.
# Groups: the whole line (for `_line`, and for the few `Iteration`s a replay builds), then only
# what a replay reads on every line: each group costs a string per line, the regex's main cost.
_PF = r"-?\d+\.\d+"
_RUN_LINE_RE = re.compile(
    r"^([ \t]*(\d+): "
    + _PF
    + r", ("
    + _PF
    + r") avg(?: loss)?, ("
    + _PF
    + r") rate, ("
    + _PF
    + r") seconds, \d+ images(?:, "
    + _PF
    + r" (?:hours|time) left)?[ \t]*)\n",
    re.MULTILINE | re.ASCII,
)
# A line of a run this long or longer may hold a number of 309 digits, which is inf as a float:
# such a run is read line by line (shorter lines hold only finite numbers: no NaN check needed).
_RUN_LINE_MAX = 300
_RUN_GROUPS = 5  # `_RUN_LINE_RE.split` gives the text before a match, then its 5 groups
# A stretch shorter than this is read line by line: a run's fixed cost (its arrays, a history
# and the policy's decision points) exceeds what it saves on a few lines. Where the chunk's
# stretches are that short on average (AlexeyAB's region lines between iterations), the next
# `_BULK_OFF_CHUNKS` chunks are read line by line without the regex pass.
_RUN_MIN = 16
_BULK_OFF_CHUNKS = 8


def _lone_save(text: str) -> bool:
    """`text` (lines of `feed_runs`' split) is one `Saving weights to <path>` line that `_line`
    reads as a `WeightsSaved` and nothing else: a run may hold it."""
    if text.count("\n") != 1 or "\x1b" in text or "\x07" in text or "IOU: " in text:
        return False
    s = text.strip()
    return s.startswith(_SAVING) and bool(s[18:].strip())


def _plain_iteration(raw: str, line: int) -> Iteration:
    """The `Iteration` of a line `_RUN_LINE_RE` matched, exactly as `_line` reads it."""
    m = _ITER_RE.match(raw.strip())
    assert m is not None, raw
    it, t_loss, t_avg, _, t_rate, t_secs, images, t_hours = m.groups()
    hours = float(t_hours) if t_hours is not None else None
    ev = _NEW(Iteration)  # slot by slot, as `_emit_iteration` builds it (see `_IT_FIELDS`)
    _IT_ITERATION(ev, int(it))
    _IT_LOSS(ev, float(t_loss))
    _IT_AVG(ev, float(t_avg))
    _IT_RATE(ev, float(t_rate))
    _IT_SECONDS(ev, float(t_secs))
    _IT_IMAGES(ev, int(images))
    _IT_HOURS(ev, hours if hours is None or hours >= 0 else None)
    _IT_LINE(ev, line)
    _IT_TIME(ev, None)
    return ev


_RANK: dict[Flavour, int] = {"pjreddie": 1, "alexeyab": 2, "hankai": 3}

# Lines that can only be an error report; checked in the generic path only.
_ERROR_TRIGGERS = (
    "rror",
    "memory",
    "set subdivisions",
    "FWD algo",
    "CUDA",
    "cuDNN",
    "CUDNN",
    "Assert",
    "Couldn't open",
    "not recognized",
    "(): ",
    "double free",
    "Segmentation fault",
    "Aborted",
    "terminate called",
    "Floating point exception",
)
_FATAL_FRAGMENTS = (
    "Couldn't open file",
    # pjreddie's cfg parser names an unknown [section] and carries on until a later assert:
    # this line is the cause a user needs to see.
    "Type not recognized",
    "Darknet error location",
    "realloc(): ",
    "free(): ",
    "malloc(): ",
    "double free or corruption",
    "Segmentation fault",
    "Aborted (core dumped)",
    "terminate called after throwing",
    "Floating point exception",
)


# The line the supervisor's wrapper writes to darknet.log before each launch.
LAUNCH_MARKER = "[trainsup] launch"
_LAUNCH_RE = re.compile(r"\[trainsup\] launch (\d+) at \S+ \(([\d.]+)\): (.*)$")


def launch_marker(number: int, argv: list[str], when: float) -> str:
    """The marker line (with its newline) for launch `number` of `argv` at epoch `when`."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return f"{LAUNCH_MARKER} {number} at {stamp} ({when:.3f}): {' '.join(argv)}\n"


# `Iteration` is built by setting its slots, not by its frozen `__init__`: one per iteration
# line, it was a third of the parser's time on them (1 µs of 3); the object is the same. The
# field list is checked here so that a field added to `Iteration` fails at import, not later.
_IT_FIELDS = (
    "iteration",
    "loss",
    "avg_loss",
    "rate",
    "seconds",
    "images",
    "hours_left",
    "line",
    "time",
)
assert tuple(Iteration.__dataclass_fields__) == _IT_FIELDS, "Iteration changed: update logparse"
_NEW = object.__new__
(
    _IT_ITERATION,
    _IT_LOSS,
    _IT_AVG,
    _IT_RATE,
    _IT_SECONDS,
    _IT_IMAGES,
    _IT_HOURS,
    _IT_LINE,
    _IT_TIME,
) = (Iteration.__dict__[name].__set__ for name in _IT_FIELDS)


class StatusLines:
    """The max_batches AlexeyAB's status lines printed, in the text read so far.

    One reader for the parser (each line with an ESC) and `analyze`'s quick scan (each chunk),
    so that both find the same value.
    """

    __slots__ = ("_it", "_max", "_values")

    def __init__(self) -> None:
        # The latest `<it>` and `<max>` as printed: converted when asked for, not on each line.
        self._it = ""
        self._max = ""
        self._values: list[int] = []  # each max printed, in the order it first came

    def read(self, text: str, end: int | None = None) -> None:
        """Notes the status lines in `text[:end]` (whole lines; no status line spans two)."""
        for m in _STATUS_RE.finditer(text, 0, len(text) if end is None else end):
            self._it, top = m.groups()
            if top != self._max:
                self._max = top
                if int(top) not in self._values:
                    self._values.append(int(top))

    @property
    def printed(self) -> PrintedMaxBatches | None:
        """The latest `<it>/<max>` and every max seen; None before any status line."""
        if not self._values:
            return None
        return PrintedMaxBatches(int(self._it), int(self._max), tuple(self._values))


class LogReadError(OSError):
    """A darknet log could not be read; the message names the file and the reason."""


def _num(tok: str) -> float | None:
    """A printf float as darknet prints it on any platform; None when it is not a number."""
    try:
        return float(tok)
    except ValueError:
        low = tok.lower()
        # MSVC prints -nan(ind), 1.#QNAN0, -1.#IND00 and 1.#INF00.
        if "nan" in low or "ind" in low:
            return math.nan
        if "inf" in low:
            return -math.inf if low.startswith("-") else math.inf
        return None


def _duration(text: str) -> float | None:
    """hank-ai's durations (`64.424 milliseconds`, `4.5 hours`) in seconds."""
    m = _DUR_RE.search(text.strip())
    if m is None:
        return None
    return float(m.group(1)) * _DUR_UNIT[m.group(2)]


def _clean(line: str) -> str:
    """The text a terminal would show: escapes and BEL removed (`\\r` is a line end already)."""
    if "\x1b" in line:
        line = _ESC_RE.sub("", line)
    if "\x07" in line:
        line = line.replace("\x07", "")
    return line


def split_lines(text: str) -> tuple[list[str], str]:
    """The whole lines of `text` (without their ends) and the unfinished rest.

    `\\n`, `\\r\\n` and a lone `\\r` each end one line. A `\\r` at the very end stays in the rest:
    the `\\n` of its CRLF may come with the next chunk (prepend the rest to it). At the end of
    input, a rest ending in `\\r` is a whole line (drop the `\\r`); any other rest is a last line
    without its end, possibly cut mid-write.
    """
    if "\r" in text:
        if text[-1] == "\r":
            lines = text[:-1].replace("\r\n", "\n").replace("\r", "\n").split("\n")
            return lines, lines.pop() + "\r"
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    else:
        lines = text.split("\n")
    return lines, lines.pop()


@dataclass(slots=True)
class _Eval:
    """What an mAP evaluation printed so far, before its result line."""

    per_class: list[ClassAP] = field(default_factory=list)
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    average_iou: float | None = None
    tp: int | None = None
    fp: int | None = None
    fn: int | None = None
    conf_thresh: float | None = None
    iou_threshold: float | None = None
    table: list[str] | None = None  # hank-ai per-class table header columns


class LogParser:
    """Turns darknet's console output, line by line, into events.

    Stateful: it remembers the last iteration (for `MapResult.iteration`, backwards jumps and
    region aggregation) and any evaluation in progress. Feed one log per parser.
    """

    def __init__(self, flavour: Flavour | None = None) -> None:
        if flavour is not None and flavour not in FLAVOURS:
            raise ValueError(
                f"unknown darknet flavour {flavour!r}: use one of {', '.join(FLAVOURS)}"
                " or None to detect it from the log"
            )
        self._flavour: Flavour | None = flavour
        self._rank = 99 if flavour is not None else 0  # a given flavour is never revised
        self._lineno = 0
        self._buf = ""
        self._strict = False
        self._last_iter: int | None = None
        self._map_since_iter = False
        self._eval: _Eval | None = None
        self._gpu_kinds: set[str] = set()
        self._resize_line = 0  # line number of a `Resizing` still waiting for its size
        self._r_lines = 0
        self._r_count = 0
        self._r_sum = 0.0
        self._counts: dict[str, int] = {}
        self._fragment: str | None = None  # an iteration line cut before its avg (see docstring)
        self._bulk_off = 0  # chunks `feed_runs` reads line by line (see `_BULK_OFF_CHUNKS`)
        self._fragment_age = 0
        self._status = StatusLines()

    @property
    def printed_max_batches(self) -> PrintedMaxBatches | None:
        """max_batches as AlexeyAB's status line printed it so far (module docstring)."""
        return self._status.printed

    @property
    def flavour(self) -> Flavour | None:
        """The flavour given, else the most specific one the log has shown so far."""
        return self._flavour

    @property
    def evaluating(self) -> bool:
        """An mAP evaluation block has begun and not yet printed its result (the runner: an
        out-of-memory here is `-map`'s, and the stall watchdog waits)."""
        return self._eval is not None

    @property
    def summary(self) -> LogSummary:
        """Flavour, lines read and events emitted per event type so far."""
        return LogSummary(flavour=self._flavour, lines=self._lineno, counts=dict(self._counts))

    # ---- public feeding API -------------------------------------------------------------

    def feed_line(self, line: str) -> list[Event]:
        """Events from one whole line (without its trailing newline).

        A `\\r` inside it ends a line too (module docstring): each segment counts as a line; a
        trailing `\\r` (of a CRLF) adds none.
        """
        if "\r" in line:
            parts, rest = split_lines(line)
            if rest and rest != "\r":
                parts.append(rest)
            out: list[Event] = []
            for part in parts:
                self._lineno += 1
                got = self._line(part)
                if got:
                    out.extend(got)
            return out
        self._lineno += 1
        return self._line(line) or []

    def feed(self, chunk: str) -> list[Event]:
        """Events from arbitrary text; an unfinished last line waits for the next chunk."""
        if "\n" not in chunk and "\r" not in chunk and not self._buf.endswith("\r"):
            # (A `\r` ending the rest was a line end, unless a `\n` follows: split it now.)
            self._buf += chunk
            return []
        parts, self._buf = split_lines(self._buf + chunk)
        out: list[Event] = []
        for part in parts:
            self._lineno += 1
            got = self._line(part)
            if got:
                out.extend(got)
        return out

    def feed_runs(self, chunk: str) -> list[Event | IterationRun]:
        """`feed`, with each stretch of plain iteration lines given as one `IterationRun`.

        The same events in the same order (`IterationRun.events()` expands a run), for a
        fraction of the time on an iteration-dense log: the stretch is found and cut into
        columns by one regex over the chunk (`_RUN_LINE_RE.split`) and its numbers converted
        column by column, instead of one regex match, six conversions and one event per line.
        A stretch the bulk path cannot vouch for (a NaN, a number going backwards, one too big
        for 64 bits, pending region lines or a cut fragment before it) is read line by line.
        """
        text = self._buf + chunk
        if "\r" in text:
            if text[-1] == "\r":  # its `\n` may come with the next chunk (`split_lines`)
                text = text[:-1].replace("\r\n", "\n").replace("\r", "\n")
                cut = text.rfind("\n") + 1
                self._buf = text[cut:] + "\r"
            else:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
                cut = text.rfind("\n") + 1
                self._buf = text[cut:]
        else:
            cut = text.rfind("\n") + 1
            self._buf = text[cut:]
        if not cut:
            return []
        body = text if cut == len(text) else text[:cut]
        out: list[Event | IterationRun] = []
        if self._bulk_off:
            # Short runs in the last chunk (region lines between iterations): line by line,
            # as `feed` reads, without the regex pass that would find no stretch to gain on.
            self._bulk_off -= 1
            self._lines(body, out)
            return out
        parts = _RUN_LINE_RE.split(body)
        stride = _RUN_GROUPS + 1
        between = parts[::stride]  # the other lines before each match, and after the last
        matches = len(between) - 1
        # Runs end where other lines come between two matches, except a lone `Saving weights
        # to` line (pjreddie saves every 100 iterations): the run holds it and goes on.
        breaks = [*compress(range(matches + 1), between), matches + 1]
        if matches < _RUN_MIN * len(breaks):
            self._bulk_off = _BULK_OFF_CHUNKS  # mostly other lines: try again later
        start = 0
        saves: list[int] = []
        for end in breaks:
            if start < end < matches and _lone_save(between[end]):
                saves.append(end)
                continue
            if start < end:
                self._run(parts, between, start, min(end, matches), saves, out)
                saves = []
            if end <= matches:
                self._lines(between[end], out)
            start = end
        return out

    def _lines(self, text: str, out: list[Event | IterationRun]) -> None:
        """Each line of `text` (whole lines, each ending with `\n`) read by `_line`."""
        for line in text.split("\n")[:-1]:
            self._lineno += 1
            got = self._line(line)
            if got:
                out.extend(got)

    def _run(
        self,
        parts: list[str],
        between: list[str],
        start: int,
        end: int,
        saves: list[int],
        out: list[Event | IterationRun],
    ) -> None:
        """Matches `start`…`end - 1` of `feed_runs`' split: consecutive plain iteration lines,
        with a lone save line before each match in `saves`."""
        stride = _RUN_GROUPS + 1
        lo, hi = start * stride, end * stride
        # Pending region lines, a cut fragment or a `Resizing` waiting for its size change what
        # the first line means: `_line` reads lines until that state is gone.
        while start < end and (self._r_lines or self._fragment is not None or self._resize_line):
            self._lineno += 1
            got = self._line(parts[lo + 1])
            if got:
                out.extend(got)
            start += 1
            lo += stride
            if saves and saves[0] == start:  # it now comes before the run: read it as it is
                self._lines(between[saves.pop(0)], out)
        if start == end:
            return
        n = end - start
        texts = parts[lo + 2 : hi : stride]
        first = int(texts[0])
        last = self._last_iter
        consecutive = range(first, first + n)
        iterations: Sequence[int] | None = consecutive
        if last is not None and first <= last:
            iterations = None  # a backwards jump (or a repeat): `IterationsRepeated` and all
        elif n > 1 and texts != list(map(str, consecutive)):  # printed consecutive: the usual
            its = list(map(int, texts))
            iterations = its if all(a < b for a, b in pairwise(its)) else None
        lines = parts[lo + 1 : hi : stride]
        if n < _RUN_MIN or iterations is None or max(map(len, lines)) >= _RUN_LINE_MAX:
            pending = set(saves)
            for m in range(start, end):
                if m in pending:
                    self._lines(between[m], out)
                self._lineno += 1
                got = self._line(parts[m * stride + 1])
                if got:
                    out.extend(got)
            return
        if self._rank < 2:
            # The flavour as `_iteration` hints it: only AlexeyAB says `avg loss` or `hours left`.
            joined = "".join(lines)
            if " loss," in joined or " left" in joined:
                self._hint("alexeyab")
            elif self._rank < 1:
                self._hint("pjreddie")
        at = [m - start for m in saves]
        saved: list[WeightsSaved] = []
        for j, k in enumerate(at):
            # `_saving` as `_line` reaches it for such a line; its line comes after k entries
            # and j saves of the run.
            path = between[start + k][:-1].strip()[18:].strip()
            saved.append(WeightsSaved(path, iterations[k - 1], self._lineno + k + j + 1))
        out.append(
            IterationRun(
                iterations,
                list(map(float, parts[lo + 3 : hi : stride])),
                parts[lo + 4 : hi : stride],
                list(map(float, parts[lo + 5 : hi : stride])),
                lines,
                self._lineno + 1,
                _plain_iteration,
                at,
                saved,
            )
        )
        self._lineno += n + len(at)
        counts = self._counts
        counts["Iteration"] = counts.get("Iteration", 0) + n
        if saved:
            counts["WeightsSaved"] = counts.get("WeightsSaved", 0) + len(saved)
        self._last_iter = iterations[-1]
        self._map_since_iter = False
        self._eval = None
        if self._gpu_kinds:
            self._gpu_kinds.clear()

    def close(self) -> list[Event]:
        """End of input: read an unterminated last line strictly and drop unfinished state."""
        out: list[Event] = []
        if self._buf.endswith("\r"):
            # Its line end came (a lone `\r`, or a CRLF whose `\n` never will): a whole line.
            self._lineno += 1
            out.extend(self._line(self._buf[:-1]) or ())
            self._buf = ""
        if self._buf:
            self._lineno += 1
            self._strict = True
            try:
                out.extend(self._line(self._buf) or ())
            finally:
                self._strict = False
            self._buf = ""
        self._fragment = None
        if self._resize_line:
            # The size never came: the resize still happened, and OOM often follows it.
            out.append(self._count(Resized(None, None, self._last_iter, self._resize_line)))
            self._resize_line = 0
        self._r_lines = self._r_count = 0
        self._r_sum = 0.0
        self._eval = None
        return out

    # ---- dispatch -------------------------------------------------------------------------

    def _line(self, raw: str) -> list[Event] | None:
        if "\x1b" in raw or "\x07" in raw:
            if "/" in raw:
                self._status.read(raw)
            raw = _clean(raw)
        if self._fragment is not None:
            joined = self._join(raw)
            if joined is not None:
                return joined
        s = raw.strip()
        if not s:
            return None
        c = s[0]
        # Fast path: the frequent lines of an unprefixed log, told apart by their start.
        if c == "R":
            if s.startswith("Region") and self._region(s):
                return None
        elif c == "v":
            if s.startswith("v3 (") and self._region(s):
                if self._rank < 2:
                    self._hint("alexeyab")
                return None
        elif c == "L":
            if s.startswith("Loaded:"):
                # pjreddie prints it on stdout every iteration: a save can be glued to it.
                return self._saving(s) if "Sav" in s and _SAVING in s else None
            if s.startswith("Last accuracy"):
                if self._rank < 2:
                    self._hint("alexeyab")
                return None
        elif c == "(":
            if s.startswith("(next mAP"):
                if self._rank < 2:
                    self._hint("alexeyab")
                return None
        elif c == "[":
            if s.startswith(LAUNCH_MARKER):
                return self._launch(s)
        elif "0" <= c <= "9" and not self._resize_line:
            m = _ITER_RE.match(s)
            if m is not None:
                return self._iteration(m, s)
        return self._generic(s)

    def _launch(self, s: str) -> list[Event] | None:
        m = _LAUNCH_RE.match(s)
        if m is None:
            return None
        # A new darknet process: the previous one's errors (one burst per kind) and any
        # evaluation it was in are over, so its out of memory is reported again.
        self._gpu_kinds.clear()
        self._eval = None
        return [
            self._count(
                Launch(
                    int(m.group(1)), tuple(m.group(3).split(" ")), self._lineno, float(m.group(2))
                )
            )
        ]

    def _generic(self, s: str) -> list[Event] | None:
        """Every line type, found by substring wherever it sits in the line."""
        if self._resize_line:
            size = self._size_line(s)
            if size is not None:
                return size
        if "IOU: " in s and "count: " in s and self._region(s):
            return None
        if _SAVING in s:
            # Before the iteration patterns: an interleaved save may have cut one (docstring).
            return self._saving(s)
        if _HANK_BOX_MESSAGE in s:
            # Whatever it names (`… file for mAP calculation! …`): the cause darknet died of.
            return self._error(s)
        if "avg" in s:
            if "loss=" in s:
                hm = _HANK_ITER_RE.search(s)
                if hm is not None:
                    got = self._hank_iteration(hm, s)
                    if got is not None:
                        return got
            m = _ITER_RE.search(s)
            if m is not None:
                return self._iteration(m, s)
            if " avg loss, " in s and " rate, " in s and " images" in s:
                # An iteration line that lost its number (facts E3): see module docstring.
                self._r_lines = self._r_count = 0
                self._r_sum = 0.0
                return None
        if "mAP" in s or "precision" in s or "conf_thresh" in s:
            return self._map_line(s)
        if "class_id = " in s:
            self._class_line(s)
            return None
        if "IoU threshold" in s:
            m = _IOU_THR_RE.search(s)
            if m is not None:
                self._open_eval().iou_threshold = float(m.group(1)) / 100.0
            return None
        if "Resizing" in s:
            return self._resizing(s)
        # hank-ai's per-class table, before the error triggers: v2.1–v5.1's header has
        # `ErrorRate`, and a class may be called `mirror` or `memory card`.
        if "Name" in s and s.startswith("Id"):
            cols = s.split()
            if cols[1:2] == ["Name"] and ("AP" in cols or "AvgPrecision" in cols):
                self._open_eval().table = cols  # hank-ai's per-class table starts
                return None
        table_open = self._eval is not None and self._eval.table is not None
        if table_open and s[0].isdigit() and self._table_row(s):
            return None
        for trig in _ERROR_TRIGGERS:
            if trig in s:
                return self._error(s)
        if table_open:
            return None  # the table's legend or rule lines
        if self._rank < 3:
            self._banner_hint(s)
        return None

    # ---- line types -----------------------------------------------------------------------

    def _count(self, ev: Event) -> Event:
        name = type(ev).__name__
        self._counts[name] = self._counts.get(name, 0) + 1
        return ev

    def _hint(self, flavour: Flavour) -> None:
        rank = _RANK[flavour]
        if rank > self._rank:
            self._flavour = flavour
            self._rank = rank

    def _banner_hint(self, s: str) -> None:
        if "Darknet/YOLO" in s:
            self._hint("hankai")
        elif self._rank < 2 and (
            "Kilo-batches" in s or "avg_outputs" in s or "nms_kind" in s or "CUDA-version" in s
        ):
            self._hint("alexeyab")

    def _region(self, s: str) -> bool:
        """Adds one region/YOLO line to the current iteration's IoU; False if it is not one."""
        i = s.find("IOU: ")
        if i < 0:
            return False
        j = s.find("count: ", i)
        if j < 0:
            return False
        k = s.find(",", i)
        tok = s[i + 5 : k] if 0 <= k < j else s[i + 5 : j]
        if tok.endswith(")"):
            tok = tok[:-1]  # AlexeyAB's `Avg (IOU: 0.136669), count: …`
        try:
            iou: float | None = float(tok)
        except ValueError:
            iou = _num(tok.strip())
        if iou is None:
            return False
        k = s.find(",", j)
        try:
            count = int(s[j + 7 : k] if k >= 0 else s[j + 7 :])
        except ValueError:
            return False
        self._r_lines += 1
        if count > 0:
            self._r_count += count
            self._r_sum += iou * count
        return True

    def _iteration(self, m: re.Match[str], s: str) -> list[Event] | None:
        if self._strict and m.end() != len(s):
            return None  # an unterminated line that stops mid-field may be cut
        it, t_loss, t_avg, avg_loss_word, t_rate, t_secs, images, t_hours = m.groups()
        secs: float | None
        try:
            loss, avg, rate, secs = float(t_loss), float(t_avg), float(t_rate), float(t_secs)
        except ValueError:
            f_loss, f_avg, f_rate = _num(t_loss), _num(t_avg), _num(t_rate)
            if f_loss is None or f_avg is None or f_rate is None:
                return None
            loss, avg, rate, secs = f_loss, f_avg, f_rate, _num(t_secs)
        hours: float | None = None
        if t_hours is not None:
            hours = _num(t_hours)
            if hours is not None and hours < 0:
                hours = None
        if self._rank < 2 and (avg_loss_word or t_hours is not None):
            self._hint("alexeyab")
        elif self._rank < 1:
            self._hint("pjreddie")
        out = self._emit_iteration(int(it), loss, avg, rate, secs, int(images), hours)
        if m.end() < len(s) and _SAVING in s:
            # Cut right after `images` by a save (module docstring): the save is on it too.
            saved = self._saving(s[s.index(_SAVING) :])
            if saved:
                out.extend(saved)
        return out

    def _hank_iteration(self, m: re.Match[str], s: str) -> list[Event] | None:
        loss = _num(m.group(2))
        avg = _num(m.group(3))
        if loss is None or avg is None:
            return None
        rate: float | None = None
        secs: float | None = None
        train: float | None = None
        images: int | None = None
        hours: float | None = None
        remaining_ok = False
        for item in m.group(4).split(","):
            item = item.strip()
            if item.startswith("rate="):
                rate = _num(item[5:])
            elif item.endswith(" images"):
                try:
                    images = int(item[:-7])
                except ValueError:
                    return None
            elif item.startswith("time remaining="):
                rest = item[15:].strip()
                if rest == "unknown":
                    remaining_ok = True
                else:
                    sec = _duration(rest)
                    if sec is not None:
                        remaining_ok = True
                        hours = sec / 3600.0 if sec >= 0 else None
            elif item.startswith("train="):
                train = _duration(item[6:])
            elif "=" not in item and secs is None:
                secs = _duration(item)  # v2–v4: the iteration's duration has no key
        if rate is None or images is None:
            return None
        if self._strict and not remaining_ok:
            return None
        self._hint("hankai")
        return self._emit_iteration(
            int(m.group(1)), loss, avg, rate, train if train is not None else secs, images, hours
        )

    def _emit_iteration(
        self,
        it: int,
        loss: float,
        avg: float,
        rate: float,
        secs: float | None,
        images: int | None,
        hours: float | None,
    ) -> list[Event]:
        line = self._lineno
        prev = self._last_iter
        if prev is not None and it < prev:
            out: list[Event] = [self._count(IterationsRepeated(prev, it, line))]
        else:
            out = []
        counts = self._counts
        counts["Iteration"] = counts.get("Iteration", 0) + 1
        ev = _NEW(Iteration)
        _IT_ITERATION(ev, it)
        _IT_LOSS(ev, loss)
        _IT_AVG(ev, avg)
        _IT_RATE(ev, rate)
        _IT_SECONDS(ev, secs)
        _IT_IMAGES(ev, images)
        _IT_HOURS(ev, hours)
        _IT_LINE(ev, line)
        _IT_TIME(ev, None)
        out.append(ev)
        if not (math.isfinite(loss) and math.isfinite(avg)):
            out.append(self._count(NanLoss(it, loss, avg, line)))
        if self._r_lines:
            mean = self._r_sum / self._r_count if self._r_count else None
            out.append(self._count(LayerIoU(it, mean, self._r_count, self._r_lines, line)))
            self._r_lines = self._r_count = 0
            self._r_sum = 0.0
        self._last_iter = it
        self._map_since_iter = False
        self._eval = None
        self._fragment = None
        if self._gpu_kinds:
            self._gpu_kinds.clear()
        return out

    def _open_eval(self) -> _Eval:
        if self._eval is None:
            self._eval = _Eval()
        return self._eval

    def _map_line(self, s: str) -> list[Event] | None:
        if "conf_thresh" in s:
            self._conf_line(s)
            return None
        if "mean average precision (mAP" in s:
            m = _MAP_RE.search(s)
            if m is None:
                return None
            return self._map_result(m, s)
        if "mean_average_precision" in s:
            if self._map_since_iter or self._strict:
                return None  # the same evaluation's summary (or possibly cut): absorbed
            m2 = _MAP_SUMMARY_RE.search(s)
            if m2 is None:
                return None
            value = _num(m2.group(2))
            if value is None:
                return None
            return [self._emit_map(value, m2.group(1))]
        if "calculation mAP" in s:
            self._eval = _Eval()
            if self._rank < 2:
                self._hint("alexeyab")
        elif "alculating mAP (mean average precision)" in s:
            self._eval = _Eval()  # hank-ai's opening line (docs/hankai.md): no flavour hint
        return None

    def _map_result(self, m: re.Match[str], s: str) -> list[Event] | None:
        hank = bool(m.group(3))  # hank-ai: `(mAP@0.50)=81.23%`
        if self._strict and not (hank or (m.group(4) is not None and s.endswith("%"))):
            return None
        value = _num(m.group(2))
        if value is not None and hank:
            value /= 100.0
        elif value is None and m.group(4) is not None:
            pct = _num(m.group(4))
            value = pct / 100.0 if pct is not None else None
        if value is None:
            return None
        self._hint("hankai" if hank else "alexeyab")
        return [self._emit_map(value, m.group(1))]

    def _emit_map(self, value: float, at: str | None) -> Event:
        ev = self._eval or _Eval()
        thr = ev.iou_threshold
        if thr is None and at:
            thr = _num(at)
        result = MapResult(
            iteration=self._last_iter,
            map=value,
            valid=math.isfinite(value) and 0.0 <= value <= 1.0,
            iou_threshold=thr,
            per_class=tuple(ev.per_class),
            precision=ev.precision,
            recall=ev.recall,
            f1=ev.f1,
            average_iou=ev.average_iou,
            tp=ev.tp,
            fp=ev.fp,
            fn=ev.fn,
            conf_thresh=ev.conf_thresh,
            line=self._lineno,
        )
        self._eval = None
        self._map_since_iter = True
        return self._count(result)

    def _conf_line(self, s: str) -> None:
        if self._strict:
            return
        m = _PREC_RE.search(s)
        if m is not None:
            ev = self._open_eval()
            ev.conf_thresh = _num(m.group(1))
            ev.precision = _num(m.group(2))
            ev.recall = _num(m.group(3))
            ev.f1 = _num(m.group(4))
            return
        m = _TPFN_RE.search(s)
        if m is not None:
            ev = self._open_eval()
            ev.conf_thresh = _num(m.group(1))
            ev.tp, ev.fp, ev.fn = int(m.group(2)), int(m.group(3)), int(m.group(4))
            iou = _num(m.group(5))
            ev.average_iou = iou / 100.0 if iou is not None else None

    def _class_line(self, s: str) -> None:
        m = _CLASS_RE.search(s)
        if m is None or self._strict:
            return
        ap = _num(m.group(3))
        if ap is None:
            return
        tp = int(m.group(4)) if m.group(4) is not None else None
        fp = int(m.group(5)) if m.group(5) is not None else None
        self._open_eval().per_class.append(
            ClassAP(int(m.group(1)), m.group(2).strip(), ap / 100.0, tp, fp)
        )

    def _table_row(self, s: str) -> bool:
        """One row of hank-ai's per-class table, read by the columns of its header.

        True when `s` is one (an unterminated last line is not read: it may be cut).
        """
        ev = self._eval
        if ev is None or ev.table is None or self._strict:
            return False
        cols = ev.table
        toks = s.split()
        tail = len(cols) - 2  # columns after Id and Name
        if len(toks) < tail + 2 or not toks[0].isdigit():
            return False
        values = toks[-tail:]
        named = dict(zip(cols[2:], values, strict=True))
        ap_txt = named.get("AP") or named.get("AvgPrecision")
        ap = _num(ap_txt) if ap_txt is not None else None
        if ap is None:
            return False
        tp = named.get("TP")
        fp = named.get("FP")
        ev.per_class.append(
            ClassAP(
                int(toks[0]),
                " ".join(toks[1:-tail]),
                ap / 100.0,
                int(tp) if tp is not None and tp.isdigit() else None,
                int(fp) if fp is not None and fp.isdigit() else None,
            )
        )
        return True

    def _resizing(self, s: str) -> list[Event] | None:
        if self._resize_line:
            self._resize_line = 0  # two `Resizing` in a row: the first never got a size
        m = _WH_RE.search(s)
        if m is not None:
            if self._strict and not s.rstrip().endswith(m.group(2)) and "try" not in s:
                return None
            return [
                self._count(
                    Resized(int(m.group(1)), int(m.group(2)), self._last_iter, self._lineno)
                )
            ]
        if not self._strict:
            self._resize_line = self._lineno
        return None

    def _size_line(self, s: str) -> list[Event] | None:
        """The line after `Resizing` that names the new size (`416` or ` 896 x 896 `)."""
        if not any(ch.isalnum() for ch in s):
            return []  # a quoting or prefix remnant between `Resizing` and its size
        resize_line = self._resize_line
        self._resize_line = 0
        m = _SIZE_LINE_RE.search(s)
        if m is None or self._strict:
            out: list[Event] = [self._count(Resized(None, None, self._last_iter, resize_line))]
            more = self._generic(s)
            return out + more if more else out
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) is not None else w
        return [self._count(Resized(w, h, self._last_iter, self._lineno))]

    def _saving(self, s: str) -> list[Event] | None:
        at = s.index(_SAVING)
        out: list[Event] = []
        if at and s[0].isdigit():
            out = self._cut_iteration(s[:at])
        if self._strict:
            return out or None  # the path may be cut
        path = s[at + 18 :].strip()
        if path:
            out.append(self._count(WeightsSaved(path, self._last_iter, self._lineno)))
        return out or None

    def _cut_iteration(self, head: str) -> list[Event]:
        """The iteration line that stderr's save cut (module docstring), or its fragment."""
        m = _CUT_ITER_RE.search(head)
        if m is None:
            if _FRAGMENT_RE.fullmatch(head):
                self._fragment = head
                self._fragment_age = 0
            return []
        it, t_loss, t_avg, avg_loss_word, t_rate, t_secs, images = m.groups()
        loss, avg = _num(t_loss), _num(t_avg)
        if loss is None or avg is None:
            return []
        rate = _num(t_rate) if t_rate is not None else None
        if self._rank < 2 and avg_loss_word:
            self._hint("alexeyab")
        elif self._rank < 1:
            self._hint("pjreddie")
        return self._emit_iteration(
            int(it),
            loss,
            avg,
            math.nan if rate is None else rate,
            _num(t_secs) if t_secs is not None else None,
            int(images) if images is not None else None,
            None,
        )

    def _join(self, raw: str) -> list[Event] | None:
        """A waiting fragment completed by this line, read as one iteration line.

        The tail is the start of the next stdout block, so it is the first line after the
        fragment that is not one of stderr's saves: any other line ends the wait. That keeps a
        fragment of digits from being glued to an unrelated line.
        """
        fragment = self._fragment
        assert fragment is not None
        m = _ITER_RE.match(fragment + raw)
        if m is None:
            self._fragment_age += 1
            if _SAVING not in raw or self._fragment_age >= _FRAGMENT_LINES:
                self._fragment = None
            return None
        self._fragment = None
        return self._iteration(m, fragment + raw.rstrip())

    def _error(self, s: str) -> list[Event] | None:
        if self._rank < 2 and ("dark_cuda" in s or "Darknet error location" in s):
            self._hint("alexeyab")  # AlexeyAB's file and function names
        kind = _gpu_kind(s)
        if kind is not None:
            if kind == "cuda" and self._strict:
                return None  # a cut message could have named a more specific kind
            if kind in self._gpu_kinds:
                return None
            self._gpu_kinds.add(kind)
            return [self._count(GpuError(kind, s, self._last_iter, self._lineno))]
        if "status Error" in s:
            return None  # `CUDA status Error: file: …` only locates the next line's error
        if _is_fatal(s):
            return [self._count(FatalError(s, self._last_iter, self._lineno))]
        return None


def _gpu_kind(s: str) -> GpuErrorKind | None:
    """The GPU error kind a line reports; None if it reports none."""
    if (
        "out of memory" in s
        or "set subdivisions" in s
        or "cudaErrorMemoryAllocation" in s
        or "CUDA memory allocation failed" in s
        or "CUDNN_STATUS_ALLOC_FAILED" in s
        or "found FWD algo" in s
    ):
        return "out_of_memory"
    if "no CUDA-capable device" in s or "cudaErrorNoDevice" in s:
        return "no_device"
    if "cuDNN Error" in s or "cuDNN current error" in s or "CUDNN_STATUS_" in s:
        return "cudnn"
    # AlexeyAB: `CUDA Error: <text>`; hank-ai's box: `current CUDA error: status=N <name>: <text>`
    # and `most recent CUDA error: status=…` (docs/hankai.md §6). Its locator line `CUDA status
    # error: <file>, …` has neither: like AlexeyAB's `CUDA status Error: file: …`, it names nothing.
    if "CUDA Error" in s or "CUDA error: status=" in s:
        return "cuda"
    return None


# hank-ai's `darknet_fatal_error` box names its cause on this line, then abort()s (docs/hankai.md
# §5); the GPU kinds are told before (`_error`), so its OOM messages stay `GpuError`s.
_HANK_BOX_MESSAGE = "* Error message:"
# The box of hank-ai's signal handler for a stop from outside (SIGHUP, SIGINT, SIGQUIT, SIGUSR1,
# SIGUSR2, SIGTERM): not darknet failing, so that such an end stays a stop (or a resume).
# #4, #6, #8, #11 (SIGILL, SIGABRT, SIGFPE, SIGSEGV) are crashes and stay fatal.
_OUTSIDE_SIGNAL_RE = re.compile(r"signal handler invoked for signal #(?:1|2|3|10|12|15)(?!\d)")


def _is_fatal(s: str) -> bool:
    for frag in _FATAL_FRAGMENTS:
        if frag in s:
            return True
    if _HANK_BOX_MESSAGE in s:
        return _OUTSIDE_SIGNAL_RE.search(s) is None
    if "Assertion" in s and "failed" in s:
        return True
    i = s.find("Error: ")
    # `Error: …` opens darknet's own error() messages; glued to a word it is something else.
    return i == 0 or (i > 0 and not s[i - 1].isalnum())


def parse_lines(lines: Iterable[str], flavour: Flavour | None = None) -> Iterator[Event]:
    """Events from whole lines (a trailing newline, if any, is ignored)."""
    parser = LogParser(flavour)
    for line in lines:
        got = parser.feed_line(line[:-1] if line.endswith("\n") else line)
        if got:
            yield from got
    yield from parser.close()


def parse_file(path: Path, flavour: Flavour | None = None) -> Iterator[Event]:
    """Streams the events of a log file (`LogFile`: its encoding found, bad bytes U+FFFD)."""
    return LogFile(path).events(LogParser(flavour))


# Share of undecodable characters (U+FFFD, NUL) above which a file is binary data, not a log.
# A real log with a few bytes in another encoding (a Windows path in cp1252) stays far below.
BINARY_SHARE = 0.1


def _nul_side(sample: bytes) -> str | None:
    """ "le"/"be" when every other byte is NUL, as in UTF-16 of mostly ASCII text; else None."""
    half = len(sample) // 2
    if half < 8:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    if odd >= 0.4 * half and even <= 0.05 * half:
        return "le"
    if even >= 0.4 * half and odd <= 0.05 * half:
        return "be"
    return None


def detect_encoding(head: bytes) -> str:
    """The codec for a log that starts with `head` (its first few KB).

    UTF-16 text of mostly ASCII, which darknet's output is, has a NUL in every other byte
    (Windows PowerShell's `Tee-Object` and `>` write UTF-16LE, with a BOM): the side the NULs
    are on gives the byte order, and a UTF-16 BOM counts only where that pattern confirms it
    (`\\xff\\xfe` also starts plain binary junk). A UTF-8 BOM is dropped. Anything else is UTF-8.
    """
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    bom = head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    side = _nul_side(head[2:4098] if bom else head[:4096])
    if side is None:
        return "utf-8"
    # The "utf-16" codec reads the BOM (and drops it); without one the order must be named.
    return "utf-16" if bom else f"utf-16-{side}"


# Bytes read at a time: the memory a replay needs beyond its history is about 5× this (the text,
# its lines and their events), whatever the size of the log.
CHUNK_SIZE = 1 << 20


class LogFile:
    """A darknet log file read as text in chunks, with what the reading found.

    `encoding` (from `detect_encoding`, set once the first block is read), `size` (bytes at
    open), `bytes_read`, `chars` decoded, `undecodable` (U+FFFD and NUL characters). Memory is
    one chunk, whatever the file's size.
    """

    def __init__(self, path: Path, chunk_size: int | None = None) -> None:
        self.path = path
        self.chunk_size = chunk_size or CHUNK_SIZE
        self.encoding: str | None = None
        self.size = 0
        self.bytes_read = 0
        self.chars = 0
        self.undecodable = 0

    @property
    def utf16(self) -> bool:
        return self.encoding is not None and self.encoding.startswith("utf-16")

    @property
    def binary(self) -> bool:
        """Mostly undecodable: binary data (or a text encoding nobody writes logs in)."""
        return self.chars > 0 and self.undecodable > BINARY_SHARE * self.chars

    def chunks(self) -> Iterator[str]:
        """The decoded text, chunk by chunk (a line may span two chunks)."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - the generator closes it in `finally`
        except OSError as e:
            raise LogReadError(
                f"cannot read darknet log {self.path}: {e.strerror or e}. Check the path and"
                " that this user may read it."
            ) from e
        try:
            try:
                self.size = os.fstat(f.fileno()).st_size
            except OSError:
                self.size = 0
            block = self._read(f)
            self.encoding = detect_encoding(block)
            decoder = codecs.getincrementaldecoder(self.encoding)(errors="replace")
            while block:
                self.bytes_read += len(block)
                yield self._counted(decoder.decode(block))
                block = self._read(f)
            tail = decoder.decode(b"", final=True)
            if tail:
                yield self._counted(tail)
        finally:
            f.close()

    def _read(self, f: BinaryIO) -> bytes:
        try:
            return f.read(self.chunk_size)
        except OSError as e:
            raise LogReadError(
                f"cannot read darknet log {self.path} after {self.bytes_read} bytes:"
                f" {e.strerror or e}. Is it a regular file on a working disk?"
            ) from e

    def _counted(self, text: str) -> str:
        self.chars += len(text)
        if "\ufffd" in text or "\x00" in text:
            self.undecodable += text.count("\ufffd") + text.count("\x00")
        return text

    def events(self, parser: LogParser) -> Iterator[Event]:
        """The events `parser` reads from the whole file, its `close()` included."""
        for text in self.chunks():
            if text:
                yield from parser.feed(text)
        yield from parser.close()


def detect_flavour(text_sample: str) -> Flavour | None:
    """The darknet flavour a piece of its output shows; None when nothing tells."""
    parser = LogParser()
    parser.feed(text_sample)
    parser.close()
    return parser.flavour
