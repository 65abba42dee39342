"""`trainsup analyze`: replay a finished (or running) darknet log through the parser and policy.

The same parser, history and policy as the live runner, so what `analyze` says about an old
log is what the supervisor would have done. The one difference: a replay cannot evaluate
weights itself, so a log without darknet's own mAP lines has no mAP evidence.

The log is streamed (users analyse week-long logs of gigabytes): events are folded into the
history chunk by chunk and none is kept, so memory is the history itself — 20 bytes per
iteration line in its loss arrays, plus the evaluations, saves and errors the report lists.
Without `--cfg` the policy needs the schedule that the printed learning rate shows over the
*whole* log (burn_in gates the rules, the last step lengthens the plateau patience) before it
can decide on the first line. A quick scan reads the rates first (`_scan_rates`, one regex over
each chunk); the replay then collects the same rates from the parser's own events, and should
the two schedules differ (a line the scan read differently from the parser), the replay is run
again with the parser's, so the answer is always the parser's. max_batches goes the same way:
AlexeyAB's status line prints it (`<it>/<max>`), the scan and the parser read it with one reader
(`logparse.StatusLines`), and it beats the 80 %/90 % assumption; `--cfg` beats both.

`kept` is what the retention would keep: with a stop, the best evaluation up to it; without
one, the best evaluation of the whole log (the run's end keeps the best evaluated weights).
An evaluation's `avg_loss` is darknet's printed avg loss at its iteration and `loss_mean_100`
the mean of it over the 100 iterations up to there (what the policy compares), as in
report.json.
"""

from __future__ import annotations

import math
import re
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, TextIO

from supervisor.darknet.logparse import LogFile, LogParser, StatusLines
from supervisor.training.diagnose import Diagnosis, DiagnosisFacts, diagnose, gpu_advice
from supervisor.training.events import (
    Event,
    Flavour,
    Iteration,
    IterationRun,
    MapResult,
    WeightsSaved,
)
from supervisor.training.history import Evaluation, History
from supervisor.training.policy import Policy, Stop, pct
from supervisor.training.quiet import add_run_deciding
from supervisor.training.schedule import (
    STATUS_LINE_SOURCE,
    PrintedMaxBatches,
    Schedule,
    infer_schedule,
    with_printed_max_batches,
)

# (phase, bytes done, bytes in all): `scan` reads the rates, `replay` runs the policy, `done`
# once at the end.
Progress = Callable[[str, int, int], None]

# Logs smaller than this replay in a few seconds: no progress bar for them.
PROGRESS_MIN_BYTES = 16 << 20
_PHASES = {"scan": "reading rates", "replay": "replaying"}


class TerminalProgress:
    """A one-line progress bar for a long replay, redrawn with `\\r` at most 5 times a second.

    Cleared at `done`, so that the report that follows starts on a clean line.
    """

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self._shown = 0.0
        self._drawn = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase == "done":
            if self._drawn:
                self.stream.write("\r" + " " * (self.width + 40) + "\r")
                self.stream.flush()
            return
        now = time.monotonic()
        if now - self._shown < 0.2 and done < total:
            return
        self._shown = now
        share = min(1.0, done / total) if total else 1.0
        bar = "#" * round(share * self.width)
        self.stream.write(
            f"\r{_PHASES.get(phase, phase):>13} [{bar:<{self.width}}] {share:4.0%}"
            f" {done >> 20}/{total >> 20} MB"
        )
        self.stream.flush()
        self._drawn = True


def terminal_progress(path: Path, stream: TextIO | None = None) -> Progress | None:
    """A progress bar on `stream` (stderr) for a long log, when it is a terminal; else None."""
    stream = stream if stream is not None else sys.stderr
    try:
        big = path.stat().st_size >= PROGRESS_MIN_BYTES
    except OSError:
        return None
    return TerminalProgress(stream) if big and stream.isatty() else None


@dataclass(frozen=True, slots=True)
class Analysis:
    """What a replay found: the final history, the first stop, and what would have been kept.

    `kept`: the best valid evaluation up to the stop, or of the whole log without a stop (None
    only when no valid evaluation was there to keep).
    """

    log: str
    flavour: Flavour | None
    history: History
    schedule: Schedule
    stop: Stop | None
    kept: Evaluation | None
    encoding: str = "utf-8"
    lines: int = 0
    undecodable: int = 0  # characters that were not text: U+FFFD for bad bytes, NUL
    chars: int = 0
    binary: bool = False
    events: int = 0  # events the parser read (iterations, evaluations, saves, errors …)

    @property
    def diagnosis(self) -> Diagnosis:
        """The seed's pattern the whole log shows (training/diagnose.py); a finished log's
        reading, with the schedule as the only fact beside the history."""
        s = self.schedule
        facts = DiagnosisFacts(max_batches=s.max_batches, burn_in=s.burn_in or None)
        return diagnose(self.history, facts)

    @property
    def iterations_saved(self) -> int | None:
        if self.stop is None or self.history.last is None:
            return None
        return max(0, self.history.iteration - self.stop.iteration)

    def to_json(self) -> dict[str, Any]:
        h = self.history
        return {
            "log": self.log,
            "flavour": self.flavour,
            "iterations": {
                "count": h.iteration_lines,
                "first": h.first_iteration,
                "last": h.iteration if h.last else None,
            },
            "final_avg_loss": _num(h.last.avg_loss) if h.last else None,
            "nan_iterations": h.nan_lines,
            "repeats": h.repeats,
            "schedule": {
                "burn_in": self.schedule.burn_in,
                "steps": list(self.schedule.steps),
                "inferred": self.schedule.inferred,
                "max_batches": self.schedule.max_batches,
                "max_batches_from": self.schedule.max_batches_from or None,
            },
            "evaluations": [
                {
                    "iteration": e.iteration,
                    "map": _num(e.map),
                    "valid": e.valid,
                    "avg_loss": _printed_loss(h, e.iteration),
                    "loss_mean_100": _num(e.avg_loss),
                    "iou_threshold": e.result.iou_threshold,
                    "precision": e.result.precision,
                    "recall": e.result.recall,
                    "f1": e.result.f1,
                    "average_iou": e.result.average_iou,
                    "per_class": [
                        {"class_id": c.class_id, "name": c.name, "ap": _num(c.ap)}
                        for c in e.result.per_class
                    ],
                }
                for e in h.evaluations
            ],
            "best": _point(h.best),
            "stop": None
            if self.stop is None
            else {
                "iteration": self.stop.iteration,
                "rule": self.stop.rule,
                "reason": self.stop.reason,
                "advice": self.stop.advice,
                "numbers": {k: _num(v) for k, v in self.stop.numbers.items()},
            },
            "kept": _point(self.kept),
            "iterations_saved": self.iterations_saved,
            "gpu_errors": [
                {"kind": g.kind, "line": g.line, "message": g.message, "advice": gpu_advice(g.kind)}
                for g in h.gpu_errors
            ],
            "fatal_errors": [{"line": f.line, "message": f.message} for f in h.fatal_errors],
            "input": {
                "encoding": self.encoding,
                "lines": self.lines,
                "undecodable": self.undecodable,
                "binary": self.binary,
            },
            "not_a_log": self.not_a_log,
            "diagnosis": None if self.not_a_log else self.diagnosis.to_json(),
        }

    @property
    def not_a_log(self) -> str | None:
        """Why this file is not a darknet log, when nothing in it says it is one."""
        if self.history.last is not None:
            return None
        if self.binary:
            share = self.undecodable / max(1, self.chars)
            return (
                f"this is not a darknet log: {share:.0%} of it is not text (binary data?); "
                "give the file darknet's console output was written to"
            )
        if self.events == 0 and self.flavour is None:
            return (
                "this does not look like a darknet log: no iteration, mAP, save, error or "
                "banner line in it; give the file darknet's console output was written to"
            )
        return None


def _num(x: float | int | None) -> float | int | None:
    """JSON has no NaN/inf: such values become null (their `valid` flag says why)."""
    if x is None or isinstance(x, int):
        return x
    return x if math.isfinite(x) else None


def _printed_loss(h: History, iteration: int) -> float | int | None:
    """darknet's avg loss as printed at `iteration` (None without a finite one)."""
    return _num(h.avg_loss_at(iteration))


def _point(e: Evaluation | None) -> dict[str, Any] | None:
    return None if e is None else {"iteration": e.iteration, "map": e.map}


class _RateRuns:
    """The (iteration, rate) pairs that decide `infer_schedule`, in bounded memory.

    Only the first and the last pair of each run of equal rates are kept: the peak, the first
    iteration at the peak and every step (a fall between two neighbours, confirmed by the next
    one) are the same over these as over all pairs. A run of 10 000 iterations at one rate costs
    two entries; only a rate that changes on every line (the burn-in ramp) costs one per line.
    `printed`: the max_batches AlexeyAB's status line printed, which the schedule takes.
    """

    __slots__ = ("_run", "its", "printed", "rates")

    def __init__(self) -> None:
        self.its: array[int] | list[int] = array("q")
        self.rates = array("d")
        self._run = 0  # length of the current run of equal rates, as seen so far
        self.printed: PrintedMaxBatches | None = None

    def add(self, iteration: int, rate: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            return  # infer_schedule skips these too
        if self._run and rate == self.rates[-1]:
            self._run += 1
            if self._run > 2:
                self._set_last(iteration)  # the run's last pair moves on
                return
        else:
            self._run = 1
        try:
            self.its.append(iteration)
        except OverflowError:
            self.its = list(self.its)
            self.its.append(iteration)
        self.rates.append(rate)

    def _set_last(self, iteration: int) -> None:
        try:
            self.its[-1] = iteration
        except OverflowError:
            self.its = list(self.its)
            self.its[-1] = iteration

    def iterations(self) -> Iterator[Iteration]:
        for it, rate in zip(self.its, self.rates, strict=True):
            yield Iteration(it, 0.0, 0.0, rate)

    def schedule(self) -> Schedule:
        return with_printed_max_batches(infer_schedule(self.iterations()), self.printed)


# The iteration and rate of every per-iteration line, for the scan: the parser's patterns
# (pjreddie/AlexeyAB, then hank-ai) cut down to the rate and anchored on a line end, which the
# regex engine finds by a fast search (a line with a prefix before its number is left to the
# replay's check).
_RATE_RE = re.compile(
    r"[\n\r][ \t]*(\d+):[ \t]*(?:[^,\s]+,[ \t]*[^,\s]+[ \t]+avg(?: loss)?,[ \t]*([^,\s]+)[ \t]+rate"
    r"|loss=[^,\s]+,[ \t]*avg loss=[^,\s]+,[^\r\n]*?rate=([^,\s]+))"
)


def _scan_rates(path: Path, progress: Progress | None) -> _RateRuns:
    """The learning rates of a log by one regex pass (a first guess; see module docstring),
    and the max_batches its status lines print (the parser's own reader, on the chunk)."""
    runs = _RateRuns()
    status = StatusLines()
    log = LogFile(path)
    rest = "\n"  # the line end before the first line
    # Only the ends of each run of one printed rate matter (`_RateRuns`): convert only those.
    rate_text = ""
    run_it = ""
    run_len = 0
    for chunk in chain(log.chunks(), (None,)):
        last = chunk is None  # then a line end closes the last line
        text = rest + (chunk if chunk is not None else "\n")
        cut = max(text.rfind("\n"), text.rfind("\r"))
        rest = text[cut:]
        if "\x1b" in text:
            status.read(text, cut + 1)
        for it, rate, hank_rate in _rates_of(text, cut + 1):
            rate = rate or hank_rate
            if rate == rate_text:
                run_len += 1
            else:
                if run_len >= 2:
                    _add_text(runs, run_it, rate_text)
                _add_text(runs, it, rate)
                rate_text = rate
                run_len = 1
            run_it = it
        if progress is not None and log.size and not last:
            progress("scan", log.bytes_read, log.size)
    if run_len >= 2:
        _add_text(runs, run_it, rate_text)
    runs.printed = status.printed
    return runs


# Where the last iteration line of a chunk that prints one rate is looked for: its end.
_TAIL = 16 << 10


def _rates_of(text: str, end: int) -> list[tuple[str, str, str]]:
    """The scan's matches in `text[:end]`; of a stretch printing one rate, its first and last.

    `_RateRuns` keeps only the ends of each run of one rate, so a chunk in which every ` rate`
    follows the first line's rate needs no more (most chunks of a long log: the rate changes
    at burn_in and at the steps only); counting is far cheaper than the regex over every line.
    A count fooled (a tab before `rate`) only makes the guess wrong: the replay then corrects
    it (module docstring).
    """
    m = _RATE_RE.search(text, 0, end)
    if m is None:
        return []
    rate = m.group(2)
    # hank-ai's `, rate=…` counts as a ` rate` that no ` {rate} rate` has: the regex then.
    if rate and text.count(" rate", 0, end) == text.count(f" {rate} rate", 0, end):
        head: tuple[str, str, str] = (m.group(1), rate, "")
        tail = _RATE_RE.findall(text, max(m.end(), end - _TAIL), end)
        if tail:
            return [head, tail[-1]]
        if m.end() >= end - _TAIL:
            return [head]  # the only one
    return _RATE_RE.findall(text, 0, end)


def _add_text(runs: _RateRuns, it: str, rate: str) -> None:
    with suppress(ValueError):  # not a number to the parser either
        runs.add(int(it), float(rate))


@dataclass(slots=True)
class _Replay:
    history: History
    stop: Stop | None
    kept: Evaluation | None
    log: LogFile
    parser: LogParser
    runs: _RateRuns | None


def _replay(
    path: Path,
    policy: Policy,
    schedule: Schedule,
    flavour: Flavour | None,
    progress: Progress | None,
    collect_rates: bool,
) -> _Replay:
    """One pass: parse, fold into the history, let the policy decide until it first stops."""
    log = LogFile(path)
    parser = LogParser(flavour)
    runs = _RateRuns() if collect_rates else None
    run_rate = math.nan  # the run of equal rates being read (see `_scan_rates`)
    run_it = 0
    run_len = 0
    h = History()
    stop: Stop | None = None
    kept: Evaluation | None = None
    decide = policy.decide
    chunks = log.chunks()
    while True:
        text = next(chunks, None)
        # Stretches of plain iteration lines come as one `IterationRun` (most of a big log):
        # folded in one step, the policy asked only where it could stop (`training.quiet`).
        events: list[Event | IterationRun] = (
            parser.feed_runs(text) if text is not None else [*parser.close()]
        )
        for e in events:
            if type(e) is IterationRun:
                if runs is not None:
                    its = e.iterations
                    for first, last, rate in e.rate_runs():  # as below, a stretch at a time
                        if rate == run_rate:
                            run_len += last - first + 1
                        else:
                            if run_len >= 2:
                                runs.add(run_it, run_rate)
                            runs.add(its[first], rate)
                            run_rate = rate
                            run_len = last - first + 1
                        run_it = its[last]
                if stop is None:
                    h, stop = add_run_deciding(policy, schedule, h, e)
                    kept = h.best if stop is not None else None
                else:
                    h = h.add_run(e)
                continue
            assert not isinstance(e, IterationRun)  # for mypy: `type(e) is` does not narrow
            h = h.add(e)
            if isinstance(e, Iteration):
                if runs is not None:
                    if e.rate == run_rate:
                        run_len += 1
                    else:
                        if run_len >= 2:
                            runs.add(run_it, run_rate)
                        runs.add(e.iteration, e.rate)
                        run_rate = e.rate
                        run_len = 1
                    run_it = e.iteration
            elif not isinstance(e, MapResult):
                continue
            if stop is None:
                d = decide(h, schedule)
                if isinstance(d, Stop):
                    stop, kept = d, h.best
        if text is None:
            break
        if progress is not None and log.size:
            progress("replay", log.bytes_read, log.size)
    if runs is not None:
        if run_len >= 2:
            runs.add(run_it, run_rate)
        runs.printed = parser.printed_max_batches
    if stop is None:
        kept = h.best  # the end of the run keeps the best evaluated weights
    return _Replay(h, stop, kept, log, parser, runs)


def analyze_log(
    path: Path,
    policy: Policy | None = None,
    schedule: Schedule | None = None,
    flavour: Flavour | None = None,
    progress: Progress | None = None,
) -> Analysis:
    """Replay `path`; the policy decides after every iteration line and every evaluation.

    Without `schedule` it is inferred from the printed learning rate (module docstring).
    `progress`, when given, is called after each chunk read (about 1 MB).
    """
    policy = policy or Policy()
    if schedule is not None:
        r = _replay(path, policy, schedule, flavour, progress, collect_rates=False)
    else:
        guess = _scan_rates(path, progress).schedule()
        r = _replay(path, policy, guess, flavour, progress, collect_rates=True)
        assert r.runs is not None
        schedule = r.runs.schedule()
        if schedule != guess:
            r = _replay(path, policy, schedule, flavour, progress, collect_rates=False)
    if progress is not None:
        progress("done", r.log.size, r.log.size)
    summary = r.parser.summary
    return Analysis(
        str(path),
        r.parser.flavour,
        r.history,
        schedule,
        r.stop,
        r.kept,
        encoding=r.log.encoding or "utf-8",
        lines=summary.lines,
        undecodable=r.log.undecodable,
        chars=r.log.chars,
        binary=r.log.binary,
        events=sum(summary.counts.values()),
    )


def _max_batches_line(s: Schedule) -> str:
    """What the rules that judge a share of the run were told, and on what ground."""
    if s.max_batches is not None and not s.max_batches_from:
        return f"max_batches: {s.max_batches}"
    if s.max_batches is not None and s.max_batches_from.startswith(STATUS_LINE_SOURCE):
        # darknet's own number for the run it ran: no assumption to warn of.
        return (
            f"max_batches: {s.max_batches}, {s.max_batches_from}; the rules that judge a "
            "share of the run use it"
        )
    if s.max_batches is not None:
        return (
            f"max_batches: {s.max_batches}, {s.max_batches_from}; the rules that judge a "
            "share of the run use it (give --cfg to be sure)"
        )
    return (
        "max_batches: unknown (not in the log, and the steps are not at 80 %/90 % of one): "
        "plateau and not_learning use their absolute settings (patience, after); give --cfg "
        "for the shares of the run"
    )


def format_analysis(a: Analysis, rows: int = 20) -> str:
    """The human report: the curve, each evaluation, where the policy stops and what it keeps."""
    h = a.history
    out = [f"log: {a.log}", f"flavour: {a.flavour or 'unknown'}"]
    if a.encoding.startswith("utf-16"):
        out.append(f"encoding: {a.encoding.upper()} (read as such)")
    not_a_log = a.not_a_log
    if not_a_log is not None:
        out.append(not_a_log)
    elif h.last is None:
        out.append("no iteration lines: darknet did not train")
    else:
        out.append(
            f"iterations: {h.iteration_lines} lines, {h.first_iteration} → {h.iteration}, "
            f"final avg loss {h.last.avg_loss:.4f}"
        )
        s = a.schedule
        src = "from the printed learning rate" if s.inferred else "from the cfg"
        steps = ",".join(map(str, s.steps)) or "none seen"
        out.append(f"schedule ({src}): burn_in {s.burn_in}, steps {steps}")
        out.append(_max_batches_line(s))
        out.append("")
        out.append(f"{'iteration':>10}  {'avg loss':>10}  {'mAP':>8}")
        evals = {e.iteration: e for e in h.evaluations}
        loss = h.loss
        n = len(loss)
        step = max(1, n // rows)
        # Every `step`-th point, the last and the evaluated ones, found by index: the whole
        # curve as a list of points would be the biggest object of a long log's report.
        shown = set(range(0, n, step))
        shown.add(n - 1)
        for it in evals:
            k = loss.find(it)
            if k is not None:
                shown.add(k)
        for k in sorted(shown):
            it, avg = loss.point(k)
            e = evals.get(it)
            m = "" if e is None else (pct(e.map) if e.valid else "invalid")
            out.append(f"{it:>10}  {avg:>10.4f}  {m:>8}")
    out.append("")
    if h.evaluations:
        out.append(f"mAP evaluations: {len(h.evaluations)}")
    else:
        out.append(
            "mAP evaluations: none (plateau/overfit/not-learning need mAP: train with -map, "
            "or let trainsup evaluate)"
        )
    if h.best:
        out.append(f"best mAP: {pct(h.best.map)} at iteration {h.best.iteration}")
    for g in h.gpu_errors:
        out.append(f"GPU error ({g.kind}) at line {g.line}: {g.message}")
        out.append(f"  advice: {gpu_advice(g.kind)}")
    for f in h.fatal_errors:
        out.append(f"fatal at line {f.line}: {f.message}")
    out.append("")
    if a.stop is None:
        out.append("stop: the policy would not have stopped this run")
    else:
        out.append(f"stop: at iteration {a.stop.iteration} by rule `{a.stop.rule}`")
        out.append(f"  why: {a.stop.reason}")
        out.append(f"  advice: {a.stop.advice}")
        if a.kept:
            out.append(f"  kept: weights of iteration {a.kept.iteration} (mAP {pct(a.kept.map)})")
        saved = a.iterations_saved
        if saved:
            out.append(f"  saved: {saved} iterations of the {h.iteration} this log ran to")
    if not_a_log is None:
        out.append("")
        out.extend(a.diagnosis.lines())
    out.append(keep_line(a))
    return "\n".join(out)


# How darknet names its saves: `<backup>/<base>_best.weights`, `_last`, `_final`, `_ema`,
# `_<iteration>`, and pjreddie's `<base>.backup`.
_SAVE_NAME_RE = re.compile(r"^(.*?)(?:_(?:best|last|final|ema|\d+)\.weights|\.backup)$")


def _saves_until(a: Analysis) -> list[WeightsSaved]:
    """The saves a supervised run would have made: all of them, or those up to the stop."""
    saves = a.history.saves
    if a.stop is None:
        return list(saves)
    out: list[WeightsSaved] = []
    for s in saves:
        if s.iteration is not None and s.iteration > a.stop.iteration:
            break
        out.append(s)
    return out


def keep_line(a: Analysis) -> str:
    """The report's last line: the weights to keep, said plainly."""
    saves = _saves_until(a)
    k = a.kept
    if k is None:
        h = a.history
        why = (
            "no evaluation gave a valid mAP"
            if h.evaluations
            else "nothing was evaluated (no mAP line in the log)"
        )
        if not saves:
            return f"keep: {why}, and this log shows no save of weights"
        last = saves[-1]
        at = "" if last.iteration is None else f" (iteration {last.iteration})"
        by = " by the stop" if a.stop is not None else ""
        return f"keep: {why}; the newest save{by} is {last.path}{at}"
    it = k.iteration
    head = f"keep: the weights of iteration {it} (mAP {pct(k.map)})"
    # The files that hold them: those whose newest save (up to the stop) is of that iteration.
    newest: dict[str, WeightsSaved] = {}
    for s in saves:
        newest[s.path] = s
    holding = [path for path, s in newest.items() if s.iteration == it]
    if holding:
        return f"{head} — darknet saved them as {' and '.join(holding)}"
    base = next(
        (m.group(1) for s in reversed(saves) if (m := _SAVE_NAME_RE.match(s.path))),
        "<backup>/<cfg name>",
    )
    best, numbered = f"{base}_best.weights", f"{base}_{it}.weights"
    other = newest.get(best)
    if other is not None and other.iteration is not None:
        # darknet's own best is another iteration (a tie it saved later, or a save lost).
        return f"{head} — {numbered} if darknet saved it ({best} holds iteration {other.iteration})"
    return f"{head} — {best} / {numbered} if darknet saved them"
