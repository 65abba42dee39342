"""max_batches from AlexeyAB's status line (`ESC]2;<it>/<max>: loss=… BEL`, since 2023-08
`ESC[H ESC[J<it>/<max>: …`): the parser reads it before it strips the escapes, and `analyze`
takes it over the 80 %/90 % assumption; a cfg beats both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import supervisor.darknet.analyze as analyze_mod
from supervisor.darknet.analyze import _RateRuns, analyze_log, format_analysis
from supervisor.darknet.logparse import LogFile, LogParser
from supervisor.training.events import Iteration, IterationRun, MapResult
from supervisor.training.schedule import PrintedMaxBatches, Schedule

LOG_53 = "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log"  # OSC form, 4000 lines
LOG_57 = "57_alexeyab-yolov4-resume74901-interrupted-sahil.log"  # OSC form, a resume at 74901
LOG_05 = "05_alexeyab-yolov4tiny-tomato-colabtail.log"  # since-2023 form, a Colab tail
LOG_55 = "55_alexeyab-yolov4-cuDNN-BAD_PARAM-during-map-belowzero.log"  # since-2023 form
PJREDDIE = "01_pjreddie-yolov3tiny-buddyzhu-6000.log"

CFG = """[net]
batch=64
subdivisions=16
width=416
height=416
channels=3
learning_rate=0.00261
burn_in=1000
max_batches={max_batches}
policy=steps
steps={steps}
scales=.1,.1

[convolutional]
filters=18
size=1
stride=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def it_line(i: int, avg: float = 2.0, rate: float = 0.001) -> str:
    return (
        f" {i}: {avg + 0.1:.6f}, {avg:.6f} avg loss, {rate:.6f} rate, 0.5 seconds,"
        f" {i * 64} images, 1.0 hours left"
    )


def osc(i: int, top: int) -> str:
    """The window-title status line as AlexeyAB before 2023-08 printed it, glued to the end of
    the `(next mAP …)` line."""
    head = " (next mAP calculation at 1000 iterations) "
    return f"{head}\x1b]2;{i}/{top}: loss=2.1 hours left=1.0\x07"


def csi(i: int, top: int) -> str:
    """The since-2023 form: screen clear, then the status, ended by BEL."""
    return f"\x1b[H\x1b[J{i}/{top}: loss=2.1 map=0.52 best=0.55 hours left=1.2\x07"


def parsed(path: Path) -> LogParser:
    parser = LogParser()
    for _ in LogFile(path).events(parser):
        pass
    return parser


def cli_json(*args: str) -> dict[str, Any]:
    from supervisor.cli import main

    result = CliRunner().invoke(main, ["analyze", "--json", *args])
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    return out


@pytest.mark.shared_logs
@pytest.mark.parametrize(
    ("name", "printed"),
    [(LOG_53, PrintedMaxBatches(4000, 4000, (4000,))),
     (LOG_57, PrintedMaxBatches(75105, 80000, (80000,))),
     (LOG_05, PrintedMaxBatches(6000, 6000, (6000,))),
     (LOG_55, PrintedMaxBatches(1500, 174000, (174000,))),
     (PJREDDIE, None)],
)  # fmt: skip
def test_the_parser_reads_the_printed_max_batches(
    name: str, printed: PrintedMaxBatches | None, logs_dir: Path
) -> None:
    assert parsed(logs_dir / name).printed_max_batches == printed


@pytest.mark.shared_logs
def test_analyze_json_of_log_53_gives_its_max_batches_and_where_it_came_from(
    logs_dir: Path,
) -> None:
    s = cli_json(str(logs_dir / LOG_53))["schedule"]
    assert s["max_batches"] == 4000
    assert s["max_batches_from"] == "printed by darknet's status line (4000/4000)"


@pytest.mark.shared_logs
def test_log_57_gets_the_max_batches_no_step_could_give(logs_dir: Path) -> None:
    # A resume past 74 901 with no step in the log: the 80/90 % assumption has nothing to go on.
    a = analyze_log(logs_dir / LOG_57)
    assert (a.schedule.max_batches, a.schedule.steps) == (80000, ())
    line = next(t for t in format_analysis(a).splitlines() if t.startswith("max_batches:"))
    assert line == (
        "max_batches: 80000, printed by darknet's status line (75105/80000); the rules that "
        "judge a share of the run use it"
    )


@pytest.mark.shared_logs
def test_a_cfg_overrides_the_status_line(logs_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "run.cfg"
    cfg.write_text(CFG.format(max_batches=6000, steps="4800,5400"))
    s = cli_json("--cfg", str(cfg), str(logs_dir / LOG_53))["schedule"]
    assert (s["max_batches"], s["max_batches_from"], s["inferred"]) == (6000, None, False)


@pytest.mark.shared_logs
def test_a_scan_that_missed_the_status_line_is_corrected_by_the_parser(
    logs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both paths read the status line; should the scan not, the replay is redone with the
    # parser's max_batches (as with a rate the scan misread).
    passes: list[Schedule] = []
    real_replay = analyze_mod._replay

    def counted(*args: Any, **kw: Any) -> Any:
        passes.append(args[2])
        return real_replay(*args, **kw)

    def scan_without_status(path: Path, progress: Any) -> _RateRuns:
        runs = real_scan(path, progress)
        runs.printed = None
        return runs

    real_scan = analyze_mod._scan_rates
    monkeypatch.setattr(analyze_mod, "_scan_rates", scan_without_status)
    monkeypatch.setattr(analyze_mod, "_replay", counted)
    a = analyze_log(logs_dir / LOG_57)
    assert [p.max_batches for p in passes] == [None, 80000]
    assert a.schedule.max_batches == 80000


@pytest.mark.shared_logs
@pytest.mark.parametrize("name", [LOG_53, LOG_57, LOG_05, LOG_55])
def test_the_scan_reads_what_the_parser_reads(name: str, logs_dir: Path) -> None:
    path = logs_dir / name
    assert analyze_mod._scan_rates(path, None).printed == parsed(path).printed_max_batches


def test_the_2023_screen_clear_form_is_read_and_its_text_dropped() -> None:
    parser = LogParser()
    events = parser.feed("\n".join([csi(1200, 6000), it_line(1200), ""]))
    assert parser.printed_max_batches == PrintedMaxBatches(1200, 6000, (6000,))
    # The status repeats the iteration line: it gives no event of its own.
    assert [type(e) for e in events] == [Iteration]
    assert events[0].iteration == 1200 and events[0].line == 2  # type: ignore[union-attr]


def test_a_status_line_glued_to_the_previous_line_and_a_cut_one() -> None:
    parser = LogParser()
    parser.feed(it_line(5) + csi(6, 6000) + "\n")
    assert parser.printed_max_batches == PrintedMaxBatches(6, 6000, (6000,))
    # Cut before `: loss=`: its max may be cut too, so it is not read.
    parser.feed("\x1b]2;7/80\n")
    parser.feed(it_line(7) + "\n")
    parser.close()
    assert parser.printed_max_batches == PrintedMaxBatches(6, 6000, (6000,))


def test_a_resume_with_another_max_takes_the_latest_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "resumed.log"
    lines = []
    for i in range(1, 301):
        lines += [osc(i, 6000), it_line(i)]
    for i in range(201, 401):  # resumed from the 200 save with max_batches=8000
        lines += [csi(i, 8000), it_line(i)]
    log.write_text("\n".join(lines) + "\n")
    s = analyze_log(log).schedule
    assert s.max_batches == 8000
    assert s.max_batches_from == (
        "printed by darknet's status line (400/8000), the latest of the values it printed"
        " (6000, 8000): a resume with another cfg?"
    )


def test_the_status_line_beats_the_recipe_assumption(tmp_path: Path) -> None:
    # Steps at 80/90 % of 1000 make the recipe assume max_batches 1000; darknet printed 1200.
    rates = [(i, 0.001 if i < 800 else 0.0001 if i < 900 else 0.00001) for i in range(1, 1001)]
    plain = tmp_path / "plain.log"
    plain.write_text("".join(f"{it_line(i, rate=r)}\n" for i, r in rates))
    assert analyze_log(plain).schedule.max_batches_from.startswith("assumed from the steps")
    log = tmp_path / "status.log"
    log.write_text("".join(f"{osc(i, 1200)}\n{it_line(i, rate=r)}\n" for i, r in rates))
    s = analyze_log(log).schedule
    assert s.steps == (800, 900)
    assert (s.max_batches, s.max_batches_from) == (
        1200,
        "printed by darknet's status line (1000/1200)",
    )


def test_feed_and_feed_runs_read_the_same_status_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from supervisor.darknet import logparse

    monkeypatch.setattr(logparse, "_RUN_MIN", 1)  # bulk runs wherever they can be
    text = "".join(
        f"{it_line(i)}\n" if i % 50 else f"{csi(i, 3000)}\n{it_line(i)}\n" for i in range(1, 501)
    )
    a, b = LogParser(), LogParser()
    a.feed(text)
    got = b.feed_runs(text)
    assert any(isinstance(e, IterationRun) for e in got)  # the bulk path was taken
    assert not any(isinstance(e, MapResult) for e in got)
    assert a.printed_max_batches == b.printed_max_batches == PrintedMaxBatches(500, 3000, (3000,))
