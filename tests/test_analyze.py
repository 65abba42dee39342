"""`analyze` streams a log: the same answer as replaying every event kept in a list (the way it
was done before), in memory that does not grow with the events; files that are not darknet
logs are named as such; long logs get a progress bar on a terminal."""

from __future__ import annotations

import io
import math
import random
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import supervisor.darknet.analyze as analyze_mod
from supervisor.darknet.analyze import (
    Analysis,
    TerminalProgress,
    _RateRuns,
    analyze_log,
    format_analysis,
    terminal_progress,
)
from supervisor.darknet.logparse import LogFile, LogParser
from supervisor.runtime.jobpolicy import policy_for
from supervisor.training.events import Event, Iteration, MapResult
from supervisor.training.history import Evaluation, History
from supervisor.training.policy import IterationBudget, Policy, Stop
from supervisor.training.schedule import Schedule, infer_schedule, with_printed_max_batches


def kept_in_a_list(path: Path, policy: Policy, schedule: Schedule | None = None) -> Analysis:
    """The replay as it was: every event in a list, the schedule from all of them (and the
    max_batches the parser read off the status line), then the history and the policy over the
    list."""
    parser = LogParser()
    events: list[Event] = list(LogFile(path).events(parser))
    if schedule is None:
        inferred = infer_schedule(e for e in events if isinstance(e, Iteration))
        schedule = with_printed_max_batches(inferred, parser.printed_max_batches)
    h = History()
    stop: Stop | None = None
    kept: Evaluation | None = None
    for e in events:
        h = h.add(e)
        if stop is None and isinstance(e, Iteration | MapResult):
            d = policy.decide(h, schedule)
            if isinstance(d, Stop):
                stop, kept = d, h.best
    if stop is None:
        kept = h.best  # the run's end keeps the best evaluated weights
    return Analysis(str(path), None, h, schedule, stop, kept)


def report(a: Analysis) -> dict[str, Any]:
    j = a.to_json()
    for key in ("log", "flavour", "input", "not_a_log"):
        j.pop(key)
    return j


LOGS = [
    "01_pjreddie-yolov3tiny-buddyzhu-6000.log",  # pjreddie, burn_in and steps from the rate
    "04_alexeyab-yolov3tiny-fire-dstaroff.log",  # plateau stop, CRLF and CR progress
    "21_alexeyab-yolov4tiny-peak-then-drop-qwerlarlgus.log",
    "48_alexeyab-NaN-realloc-crash-notes-miyakz1192.log",  # diverged stop, backwards numbers
    "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log",
    "57_alexeyab-yolov4-resume74901-interrupted-sahil.log",
    "excerpts/E8_pjreddie-issue-715_pm2-prefixed-lines.txt",  # prefixes the rate scan skips
]


@pytest.mark.shared_logs
@pytest.mark.parametrize("name", LOGS)
def test_streamed_analysis_equals_the_list_replay(name: str, logs_dir: Path) -> None:
    path = logs_dir / name
    policy = policy_for(None)
    got = analyze_log(path, policy)
    want = kept_in_a_list(path, policy)
    assert got.schedule == want.schedule
    assert repr(got.stop) == repr(want.stop)
    assert repr(report(got)) == repr(report(want))  # repr: NaN-safe, every value shown
    assert format_analysis(got) == format_analysis(
        Analysis(got.log, got.flavour, want.history, want.schedule, want.stop, want.kept)
    )


@pytest.mark.shared_logs
def test_a_wrong_rate_scan_is_caught_and_the_replay_redone(
    logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scan is only a first guess: a guess that differs from what the parser read makes
    # analyze replay again with the parser's schedule (log 04 stops by plateau: it matters).
    path = logs_dir / "04_alexeyab-yolov3tiny-fire-dstaroff.log"
    passes: list[Schedule] = []
    real_replay = analyze_mod._replay

    def counted(*args: Any, **kw: Any) -> Any:
        passes.append(args[2])
        return real_replay(*args, **kw)

    monkeypatch.setattr(analyze_mod, "_scan_rates", lambda p, progress: _RateRuns())
    monkeypatch.setattr(analyze_mod, "_replay", counted)
    got = analyze_log(path)
    want = kept_in_a_list(path, Policy())
    assert len(passes) == 2 and passes[0] == Schedule(inferred=True)
    assert got.schedule == want.schedule and repr(got.stop) == repr(want.stop)
    assert got.stop is not None and got.stop.rule == "plateau"


@pytest.mark.shared_logs
def test_scan_guesses_the_parsers_schedule_on_every_shared_log(logs_dir: Path) -> None:
    wrong = []
    printed = []
    for path in sorted(logs_dir.glob("*.log")):
        parser = LogParser()
        its = [e for e in LogFile(path).events(parser) if isinstance(e, Iteration)]
        want = with_printed_max_batches(infer_schedule(its), parser.printed_max_batches)
        if analyze_mod._scan_rates(path, None).schedule() != want:
            wrong.append(path.name)
        if parser.printed_max_batches is not None:
            printed.append(path.name[:2])
    assert wrong == []
    # The shared logs with AlexeyAB's status line: 05 and 55 in the 2023 form, 53 and 57 the older.
    assert printed == ["05", "53", "55", "57"]


def test_rate_runs_give_the_schedule_of_all_rates() -> None:
    rng = random.Random(9)
    alphabet = [0.01, 0.001, 0.0001, 0.00001, 0.0005, math.nan, 0.0, -1.0, math.inf]
    for _ in range(2000):
        its, k = [], rng.randint(0, 40)
        i = 0
        for _ in range(k):
            i += rng.choice((1, 1, 1, 0, 2, -3))
            its.append(Iteration(i, 1.0, 1.0, rng.choice(alphabet[: rng.randint(1, 9)])))
        runs = _RateRuns()
        for it in its:
            runs.add(it.iteration, it.rate)
        assert runs.schedule() == infer_schedule(its), its


def synthetic_log(path: Path, iterations: int) -> Path:
    """A pjreddie-style log: an iteration line, `Loaded:`, and a save every 100 iterations."""
    rng = random.Random(iterations)
    avg = 5.0
    with path.open("w") as f:
        for i in range(1, iterations + 1):
            loss = max(0.1, avg + rng.uniform(-0.5, 0.5))
            avg = 0.9 * avg + 0.1 * loss
            rate = 0.001 * min(1.0, i / 1000) ** 4 if i < 1000 else 0.001
            f.write(f"{i}: {loss:.6f}, {avg:.6f} avg, {rate:.6f} rate, 0.25 seconds,")
            f.write(f" {i * 64} images\nLoaded: 0.000050 seconds\n")
            if i % 100 == 0:
                f.write("Saving weights to backup/tiny.backup\n")
    return path


def peak_bytes(path: Path) -> int:
    tracemalloc.start()
    try:
        analyze_log(path, Policy(rules=()))  # no rules: the history alone is measured
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from supervisor.darknet import logparse

    # Small chunks, so that both logs span many and the per-chunk memory is the same in both.
    monkeypatch.setattr(logparse, "CHUNK_SIZE", 32 << 10)
    small = peak_bytes(synthetic_log(tmp_path / "small.log", 5_000))
    big = peak_bytes(synthetic_log(tmp_path / "big.log", 20_000))
    # 15 000 more iteration lines: 20 bytes each in the loss arrays, ~0.3 MB (and 150 saves).
    # Kept as events, as before, they were ~250 bytes each: 3.7 MB more.
    assert big - small < 1_200_000, (small, big)


def test_random_bytes_are_not_a_darknet_log(tmp_path: Path) -> None:
    junk = tmp_path / "junk.log"
    junk.write_bytes(random.Random(14).randbytes(1 << 20))
    a = analyze_log(junk)
    assert a.binary and a.not_a_log is not None
    text = format_analysis(a)
    assert "this is not a darknet log" in text and "did not train" not in text
    assert a.to_json()["not_a_log"].startswith("this is not a darknet log")


def test_text_without_darknet_output_is_named_as_such(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping list\neggs\nmilk\n" * 100)
    text = format_analysis(analyze_log(notes))
    assert "does not look like a darknet log" in text and "did not train" not in text


@pytest.mark.shared_logs
def test_a_darknet_log_that_did_not_train_is_still_a_darknet_log(logs_dir: Path) -> None:
    a = analyze_log(logs_dir / "50_alexeyab-CUDA-no-device-amirafshari.log")
    assert a.not_a_log is None
    assert "no iteration lines: darknet did not train" in format_analysis(a)


@pytest.mark.shared_logs
def test_utf16_and_cr_only_logs_are_analysed(tmp_path: Path, logs_dir: Path) -> None:
    src = logs_dir / "39_alexeyab-yolov4tiny-first1000-from-scratch-1ravikumar.log"
    want = analyze_log(src)
    text = src.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    tee = tmp_path / "tee.log"
    tee.write_bytes(text.encode("utf-16"))
    cr = tmp_path / "cr.log"
    cr.write_bytes(text.replace("\n", "\r").encode())
    for path in (tee, cr):
        got = analyze_log(path)
        assert got.history.iteration_lines == want.history.iteration_lines == 1000
        assert repr(report(got)) == repr(report(want))
    assert "encoding: UTF-16 (read as such)" in format_analysis(analyze_log(tee))
    assert analyze_log(tee).to_json()["input"]["encoding"] == "utf-16"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_for_long_logs_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = synthetic_log(tmp_path / "d.log", 3000)
    assert terminal_progress(log, FakeTerminal()) is None  # small
    monkeypatch.setattr(analyze_mod, "PROGRESS_MIN_BYTES", 1)
    assert terminal_progress(log, io.StringIO()) is None  # not a terminal
    tty = FakeTerminal()
    bar = terminal_progress(log, tty)
    assert isinstance(bar, TerminalProgress)
    calls: list[tuple[str, int, int]] = []

    def both(phase: str, done: int, total: int) -> None:
        calls.append((phase, done, total))
        bar(phase, done, total)

    analyze_log(log, progress=both)
    size = log.stat().st_size
    assert [c[0] for c in calls] == ["scan", "replay", "done"]  # one chunk each
    assert all(c[1:] == (size, size) for c in calls)
    out = tty.getvalue()
    assert "reading rates [" in out and "replaying [" in out and "100%" in out
    assert out.endswith("\r")  # cleared: the report starts on a clean line


def test_cli_analyze_says_not_a_darknet_log(tmp_path: Path) -> None:
    from supervisor.cli import main

    junk = tmp_path / "junk.log"
    junk.write_bytes(random.Random(3).randbytes(1 << 16))
    result = CliRunner().invoke(main, ["analyze", str(junk)])
    assert result.exit_code == 0, result.output
    assert "this is not a darknet log" in result.output


def test_cli_analyze_names_an_unreadable_log() -> None:
    from supervisor.cli import main

    # Any user can open /proc/self/mem, and reading it at offset 0 fails (EIO), even as root.
    result = CliRunner().invoke(main, ["analyze", "/proc/self/mem"])
    assert result.exit_code == 2
    assert "cannot read darknet log /proc/self/mem" in result.output
    assert "Traceback" not in result.output


@pytest.mark.shared_logs
@pytest.mark.parametrize(
    "name",
    [
        "04_alexeyab-yolov3tiny-fire-dstaroff.log",
        "57_alexeyab-yolov4-resume74901-interrupted-sahil.log",
    ],
)
def test_curve_rows_are_those_the_whole_point_list_gave(name: str, logs_dir: Path) -> None:
    # The report samples the curve by index now; before, from a list of every point.
    from supervisor.training.policy import pct

    a = analyze_log(logs_dir / name)
    evals = {e.iteration: e for e in a.history.evaluations}
    pts = a.history.loss.points()
    step = max(1, len(pts) // 20)
    shown = {it for k, (it, _) in enumerate(pts) if k % step == 0 or k == len(pts) - 1}
    shown |= set(evals)
    want = []
    for it, avg in pts:
        if it in shown:
            e = evals.get(it)
            m = "" if e is None else (pct(e.map) if e.valid else "invalid")
            want.append(f"{it:>10}  {avg:>10.4f}  {m:>8}")
    lines = format_analysis(a).splitlines()
    start = lines.index(f"{'iteration':>10}  {'avg loss':>10}  {'mAP':>8}") + 1
    assert lines[start : start + len(want)] == want and lines[start + len(want)] == ""


# ---- what is kept, the closing `keep:` line, the two losses ----------------------------------


def alexeyab_log(
    path: Path,
    iterations: int,
    maps: dict[int, float],
    saves: dict[int, list[str]] | None = None,
) -> Path:
    """An AlexeyAB-style log: avg loss falling 0.001 per iteration from 5 (so a 100-iteration
    mean differs from the printed value), `maps` evaluated after their iteration line, then
    `saves` (file names under backup/) of that iteration."""
    with path.open("w") as f:
        for i in range(1, iterations + 1):
            avg = 5.0 - 0.001 * i
            f.write(
                f" {i}: {avg + 0.1:.6f}, {avg:.6f} avg loss, 0.001000 rate, 1.0 seconds,"
                f" {i * 64} images, 1.0 hours left\n"
            )
            if i in maps:
                m = maps[i]
                f.write(f" mean average precision (mAP@0.50) = {m:.6f}, or {m * 100:.2f} % \n")
            for name in (saves or {}).get(i, []):
                f.write(f"Saving weights to backup/yolo_{name}.weights\n")
    return path


def stop_at(iteration: int) -> Policy:
    """A policy whose only stop is the iteration budget."""
    return Policy(budgets=(IterationBudget(iteration),), rules=())


MAPS = {200: 0.30, 400: 0.55, 600: 0.70, 800: 0.60, 1000: 0.65}


def test_kept_without_a_stop_is_the_best_evaluation(tmp_path: Path) -> None:
    # Before, `kept` was null unless a rule stopped; the run's end keeps the best weights.
    a = analyze_log(alexeyab_log(tmp_path / "a.log", 1000, MAPS), Policy(rules=()))
    assert a.stop is None
    assert a.to_json()["kept"] == {"iteration": 600, "map": 0.70}


def test_kept_with_a_stop_is_the_best_up_to_it(tmp_path: Path) -> None:
    log = alexeyab_log(tmp_path / "a.log", 1000, {**MAPS, 1000: 0.90})
    a = analyze_log(log, stop_at(500))
    assert a.stop is not None and a.stop.iteration == 500
    assert a.to_json()["kept"] == {"iteration": 400, "map": 0.55}
    assert a.to_json()["best"] == {"iteration": 1000, "map": 0.90}  # the whole log's
    assert (
        format_analysis(a)
        .splitlines()[-1]
        .startswith("keep: the weights of iteration 400 (mAP 55.0 %)")
    )


def test_the_report_ends_with_the_files_that_hold_the_kept_weights(tmp_path: Path) -> None:
    saves = {600: ["best", "last"], 800: ["last"], 1000: ["1000", "last", "final"]}
    a = analyze_log(alexeyab_log(tmp_path / "a.log", 1000, MAPS, saves), Policy(rules=()))
    # _last was overwritten at 800: only _best still holds iteration 600.
    assert format_analysis(a).splitlines()[-1] == (
        "keep: the weights of iteration 600 (mAP 70.0 %) — darknet saved them as"
        " backup/yolo_best.weights"
    )


def test_the_keep_line_names_the_files_darknet_would_have_written(tmp_path: Path) -> None:
    saves = {200: ["best", "last"], 400: ["best", "last"], 800: ["last"], 1000: ["1000"]}
    a = analyze_log(alexeyab_log(tmp_path / "a.log", 1000, MAPS, saves), Policy(rules=()))
    # The log shows no save of 600 (stderr not captured, say): the names darknet gives them.
    assert format_analysis(a).splitlines()[-1] == (
        "keep: the weights of iteration 600 (mAP 70.0 %) — backup/yolo_600.weights if darknet"
        " saved it (backup/yolo_best.weights holds iteration 400)"
    )
    bare = analyze_log(alexeyab_log(tmp_path / "b.log", 1000, MAPS), Policy(rules=()))
    assert format_analysis(bare).splitlines()[-1] == (
        "keep: the weights of iteration 600 (mAP 70.0 %) — <backup>/<cfg name>_best.weights /"
        " <backup>/<cfg name>_600.weights if darknet saved them"
    )


def test_without_an_evaluation_the_keep_line_names_the_newest_save(tmp_path: Path) -> None:
    from supervisor.cli import main

    saves = {500: ["last"], 1000: ["1000", "last", "final"]}
    log = alexeyab_log(tmp_path / "a.log", 1000, {}, saves)
    a = analyze_log(log, Policy(rules=()))
    assert a.kept is None and a.to_json()["kept"] is None
    assert format_analysis(a).splitlines()[-1] == (
        "keep: nothing was evaluated (no mAP line in the log); the newest save is"
        " backup/yolo_final.weights (iteration 1000)"
    )
    stopped = analyze_log(log, stop_at(700))
    assert format_analysis(stopped).splitlines()[-1] == (
        "keep: nothing was evaluated (no mAP line in the log); the newest save by the stop is"
        " backup/yolo_last.weights (iteration 500)"
    )
    none = analyze_log(alexeyab_log(tmp_path / "b.log", 300, {}), Policy(rules=()))
    assert format_analysis(none).splitlines()[-1] == (
        "keep: nothing was evaluated (no mAP line in the log), and this log shows no save of"
        " weights"
    )
    result = CliRunner().invoke(main, ["analyze", str(log)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip("\n").splitlines()[-1].startswith("keep: nothing was evaluated")


def test_avg_loss_is_darknets_and_loss_mean_100_the_policys(tmp_path: Path) -> None:
    a = analyze_log(alexeyab_log(tmp_path / "a.log", 1000, MAPS), Policy(rules=()))
    ev = {e["iteration"]: e for e in a.to_json()["evaluations"]}[600]
    assert ev["avg_loss"] == 4.4  # printed `4.400000 avg loss` at iteration 600
    # The mean of 4.499 … 4.400 (iterations 501–600), what the policy compares.
    assert ev["loss_mean_100"] == pytest.approx(4.4495)
    # The human table shows darknet's value too, rounded.
    assert f"{600:>10}  {4.4:>10.4f}  {'70.0 %':>8}" in format_analysis(a).splitlines()
