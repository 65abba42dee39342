"""The darknet log parser: real shared logs against their independent reading, then each line
type and each robustness case on synthetic lines written here from darknet-facts §1–§6."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path
from typing import TypeVar

import pytest

from supervisor.darknet import logparse
from supervisor.darknet.logparse import (
    LogParser,
    LogReadError,
    detect_flavour,
    parse_file,
    parse_lines,
)
from supervisor.training.events import (
    Event,
    FatalError,
    GpuError,
    Iteration,
    IterationRun,
    IterationsRepeated,
    LayerIoU,
    MapResult,
    NanLoss,
    Resized,
    WeightsSaved,
)
from tests.conftest import LOGS, LogFacts

E = TypeVar("E")
# Needed at collection time to parametrize; conftest decides skip-or-fail when it is absent.
SHARED_LOGS = sorted(p.name for p in LOGS.glob("*.log")) if LOGS.is_dir() else []


def excerpt(logs_dir: Path, prefix: str) -> list[Event]:
    """The events of the excerpt whose file name starts with `prefix` (E1_, E3_ …)."""
    (path,) = (logs_dir / "excerpts").glob(prefix + "*.txt")
    return list(parse_file(path))


def run(*lines: str) -> list[Event]:
    return list(parse_lines(lines))


def of(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def one(events: list[Event], kind: type[E]) -> E:
    """The only event, checked to be of `kind`."""
    assert len(events) == 1, events
    (ev,) = events
    assert isinstance(ev, kind), ev
    return ev


def facts_for(log_index: list[LogFacts], name: str) -> LogFacts:
    return next(r for r in log_index if r.file == name)


# ---- every shared log against INDEX_details.tsv ----------------------------------------------


@pytest.mark.shared_logs
def test_every_indexed_log_is_replayed(logs_dir: Path, log_index: list[LogFacts]) -> None:
    assert log_index, "INDEX_details.tsv lists no log"
    assert sorted(r.file for r in log_index) == SHARED_LOGS


@pytest.mark.shared_logs
@pytest.mark.parametrize("name", SHARED_LOGS)
def test_shared_log_matches_index(name: str, logs_dir: Path, log_index: list[LogFacts]) -> None:
    facts = facts_for(log_index, name)
    events = list(parse_file(logs_dir / name))

    iterations = of(events, Iteration)
    assert len(iterations) == facts.iter_lines
    if iterations:
        assert iterations[0].iteration == facts.first_iter
        assert iterations[-1].iteration == facts.last_iter
    assert len(of(events, IterationsRepeated)) == facts.decreases
    for rep in of(events, IterationsRepeated):
        assert rep.to_iteration < rep.from_iteration

    nans = of(events, NanLoss)
    assert len(nans) == facts.nan_iter_lines
    assert len(nans) == sum(not it.finite for it in iterations)

    maps = of(events, MapResult)
    # A Colab tail that starts inside an evaluation has a result with no iteration before it;
    # the index cannot name its iteration, so it is compared apart (it must come first).
    first_iter_line = iterations[0].line if iterations else math.inf
    assert all(m.line < first_iter_line for m in maps if m.iteration is None)
    dated = [m for m in maps if m.iteration is not None]
    assert len(dated) == facts.map_evals
    assert [m.iteration for m in dated] == [it for it, _ in facts.map_series]
    for m, (_, value) in zip(dated, facts.map_series, strict=True):
        assert m.map == pytest.approx(value, abs=5e-7)

    valid = [m for m in dated if m.valid]
    if facts.best_map is None:
        assert not valid
    else:
        best = max(valid, key=lambda m: m.map)  # max() keeps the first of equal values
        assert best.map == pytest.approx(facts.best_map, abs=5e-5)
        assert best.iteration == facts.best_map_iter
        assert dated[-1].map == pytest.approx(facts.final_map, abs=5e-5)
        assert dated[-1].iteration == facts.final_map_iter

    lines = [e.line for e in events]
    assert all(n >= 1 for n in lines)
    assert lines == sorted(lines)


@pytest.mark.shared_logs
def test_detected_flavour_matches_index(logs_dir: Path) -> None:
    with (logs_dir / "INDEX.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows
    for row in rows:
        text = (logs_dir / row["file"]).read_bytes().decode("utf-8", errors="replace")
        assert detect_flavour(text) == row["flavour"], row["file"]


@pytest.mark.shared_logs
@pytest.mark.parametrize(
    "name",
    [
        "04_alexeyab-yolov3tiny-fire-dstaroff.log",
        "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log",
        "48_alexeyab-NaN-realloc-crash-notes-miyakz1192.log",
    ],
)
def test_streaming_in_random_chunks_gives_the_same_events(name: str, logs_dir: Path) -> None:
    path = logs_dir / name
    whole = list(parse_file(path))
    text = path.read_bytes().decode("utf-8", errors="replace")
    rng = random.Random(name)
    parser = LogParser()
    streamed: list[Event] = []
    pos = 0
    while pos < len(text):
        step = rng.choice((1, 7, 80, 4096))
        streamed += parser.feed(text[pos : pos + step])
        pos += step
    streamed += parser.close()
    assert list(map(repr, streamed)) == list(map(repr, whole))  # repr: NaN != NaN


@pytest.mark.shared_logs
def test_real_evaluation_block_fills_every_field(logs_dir: Path) -> None:
    # 04's first evaluation, as printed at lines 4514-4534 of that log.
    events = list(parse_file(logs_dir / "04_alexeyab-yolov3tiny-fire-dstaroff.log"))
    first = of(events, MapResult)[0]
    assert first.iteration == 1000
    assert first.map == pytest.approx(0.028207)
    assert [(c.class_id, c.name) for c in first.per_class] == [(0, "fire"), (1, "smoke")]
    assert first.per_class[0].ap == pytest.approx(0.0564)
    assert (first.per_class[0].tp, first.per_class[0].fp) == (47, 156)
    assert (first.precision, first.recall, first.f1) == (0.23, 0.05, 0.08)
    assert (first.tp, first.fp, first.fn) == (47, 156, 889)
    assert first.average_iou == pytest.approx(0.1396)
    assert first.iou_threshold == 0.5
    assert first.conf_thresh == 0.25


@pytest.mark.shared_logs
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("47_alexeyab-yolov4-OOM-at-resize-896-sami10644.log", "out_of_memory"),
        ("56_alexeyab-yolov4-OOM-at-start-608-sahil.log", "out_of_memory"),
        ("60_alexeyab-yolov4-OOM-assert-facemask-bassoline.log", "out_of_memory"),
        ("50_alexeyab-CUDA-no-device-amirafshari.log", "no_device"),
        ("51_alexeyab-CUDA-no-device-assert-sandeshshrestha45.log", "no_device"),
        ("55_alexeyab-yolov4-cuDNN-BAD_PARAM-during-map-belowzero.log", "cudnn"),
        ("58_alexeyab-yolov4-illegal-memory-access-at-first-map-nilutpol.log", "cuda"),
        ("69_alexeyab-cuDNN-BAD_PARAM-at-first-map-1000-darkmark-docker.log", "cudnn"),
    ],
)
def test_failure_logs_name_their_gpu_error(name: str, kind: str, logs_dir: Path) -> None:
    events = list(parse_file(logs_dir / name))
    assert [e.kind for e in of(events, GpuError)] == [kind]
    assert of(events, FatalError), "the abort that follows is reported too"


# ---- excerpts of issue threads ---------------------------------------------------------------


@pytest.mark.shared_logs
@pytest.mark.parametrize(
    "name",
    [
        "E1_AlexeyAB-issue-3281_oom_utils-assert.txt",
        "E2_AlexeyAB-issue-5485_cudnn-slow_oom.txt",
        "E3_AlexeyAB-issue-5301_multigpu_oom_interleaved.txt",
        "E4_AlexeyAB-issue-4533_windows_oom_mid-training.txt",
        "E5_pjreddie-issue-98_oom_cuda-c-36.txt",
        "E5b_pjreddie-issue-904_oom_during_layer_build.txt",
    ],
)
def test_excerpt_out_of_memory(name: str, logs_dir: Path) -> None:
    events = excerpt(logs_dir, name.split("_")[0] + "_")
    kinds = {e.kind for e in of(events, GpuError)}
    assert kinds == {"out_of_memory"}


@pytest.mark.shared_logs
def test_excerpt_multi_gpu_interleaving(logs_dir: Path) -> None:
    events = excerpt(logs_dir, "E3_")
    its = of(events, Iteration)
    # `> 29843: …` counts; `0.089131, …` lost its number; `44019: … 3873672 im` is cut.
    assert [i.iteration for i in its] == [29843]
    assert its[0].hours_left == pytest.approx(20.452617)
    assert of(events, Resized)[0].width == 544
    assert len(of(events, GpuError)) == 1  # one OOM burst from two GPUs: one event


@pytest.mark.shared_logs
def test_excerpt_mid_training_oom_carries_iteration(logs_dir: Path) -> None:
    events = excerpt(logs_dir, "E4_")
    oom = of(events, GpuError)[0]
    assert oom.iteration == 10514
    assert "Assertion failed" in of(events, FatalError)[0].message


@pytest.mark.shared_logs
def test_excerpt_pm2_prefixed_lines(logs_dir: Path) -> None:
    events = excerpt(logs_dir, "E8_")
    (it,) = of(events, Iteration)
    assert (it.iteration, it.loss, it.avg_loss, it.images) == (10313, 0.576849, 0.677636, 1320064)
    (iou,) = of(events, LayerIoU)
    assert (iou.count, iou.layers) == (52, 3)
    assert iou.mean_iou == pytest.approx((0.889933 * 11 + 0.727005 * 41) / 52)


@pytest.mark.shared_logs
def test_excerpt_nan_and_yolov2_regions(logs_dir: Path) -> None:
    e6 = excerpt(logs_dir, "E6_")
    assert [n.iteration for n in of(e6, NanLoss)] == [2677]
    e9 = excerpt(logs_dir, "E9_")
    its = of(e9, Iteration)
    assert [i.iteration for i in its] == [11149, 11150]
    assert all(i.hours_left is None for i in its)
    (iou,) = of(e9, LayerIoU)
    assert (iou.iteration, iou.layers, iou.count) == (11150, 8, 128)


# ---- iteration lines -------------------------------------------------------------------------


def test_pjreddie_iteration() -> None:
    p = LogParser()
    it = one(
        p.feed_line("1: 498.505402, 498.505402 avg, 0.000000 rate, 1.214810 seconds, 1 images"),
        Iteration,
    )
    assert it == Iteration(1, 498.505402, 498.505402, 0.0, 1.21481, 1, None, line=1)
    assert p.flavour == "pjreddie"


@pytest.mark.parametrize(
    ("line", "hours"),
    [
        (
            " 1001: 3.578424, 3.484814 avg loss, 0.001000 rate, 1.597000 seconds, 64064 images,"
            " 63.972469 hours left",
            63.972469,
        ),
        (
            " 1001: 3.578424, 3.484814 avg loss, 0.001000 rate, 1.597000 seconds, 64064 images,"
            " 12.5 time left",
            12.5,
        ),
        (" 1001: 3.578424, 3.484814 avg loss, 0.001000 rate, 1.597000 seconds, 64064 images", None),
        (
            " 1001: 3.578424, 3.484814 avg loss, 0.001000 rate, 1.597000 seconds, 64064 images,"
            " -1.000000 hours left",
            None,
        ),
    ],
)
def test_alexeyab_iteration_variants(line: str, hours: float | None) -> None:
    p = LogParser()
    it = one(p.feed_line(line), Iteration)
    assert (it.iteration, it.loss, it.avg_loss, it.rate) == (1001, 3.578424, 3.484814, 0.001)
    assert (it.seconds, it.images, it.hours_left) == (1.597, 64064, hours)
    assert p.flavour == "alexeyab"


def test_hankai_v2_iteration() -> None:
    line = (
        "5989: loss=0.444, avg loss=0.329, rate=0.000026, 64.424 milliseconds, 383296 images,"
        " time remaining=7 seconds"
    )
    p = LogParser()
    it = one(p.feed_line(line), Iteration)
    assert (it.iteration, it.loss, it.avg_loss, it.rate, it.images) == (
        5989,
        0.444,
        0.329,
        0.000026,
        383296,
    )
    assert it.seconds == pytest.approx(0.064424)
    assert it.hours_left == pytest.approx(7 / 3600)
    assert p.flavour == "hankai"


def test_hankai_v5_iteration_in_colour() -> None:
    line = (
        "\x1b[1;37m1234\x1b[0m: loss=\x1b[1;36m3.456\x1b[0m, avg loss=\x1b[1;36m3.512\x1b[0m,"
        " last=81.23%, best=83.10%, next=1300, rate=0.001000, load 64=12.345 milliseconds,"
        " train=1.234 seconds, 78976 images, time remaining=4.5 hours"
    )
    it = one(run(line), Iteration)
    assert (it.iteration, it.loss, it.avg_loss, it.rate) == (1234, 3.456, 3.512, 0.001)
    assert (it.seconds, it.images, it.hours_left) == (1.234, 78976, 4.5)


def test_hankai_v5_without_map_and_unknown_time() -> None:
    line = (
        "12: loss=712.345, avg loss=720.001, last=none, best=none, mAP=DISABLED,"
        " rate=0.000000, load 64=3.1 seconds, train=2.500 seconds, 768 images,"
        " time remaining=unknown"
    )
    it = one(run(line), Iteration)
    assert (it.iteration, it.seconds, it.images, it.hours_left) == (12, 2.5, 768, None)


def test_hankai_status_title_is_not_an_iteration() -> None:
    # AlexeyAB's status line `it/max: loss=…` looks like hank-ai's but is not an iteration.
    assert run("\x1b[H\x1b[J5741/6000: loss=0.0 map=1.00 best=1.00 hours left=0.0\x07") == []
    assert run("5741/6000: loss=0.0 map=1.00 best=1.00 hours left=0.0") == []


@pytest.mark.parametrize("token", ["-nan", "nan", "inf", "-inf", "-nan(ind)", "1.#QNAN0"])
def test_nan_loss(token: str) -> None:
    events = run(
        f" 8: {token}, {token} avg loss, 0.000000 rate, 40.37 seconds, 512 images,"
        " 5600.3 hours left"
    )
    (it,) = of(events, Iteration)
    (nan,) = of(events, NanLoss)
    assert not it.finite
    assert nan.iteration == 8
    assert not math.isfinite(nan.loss)


def test_finite_iteration_has_no_nanloss() -> None:
    assert not of(run("3: 1.0, 2.0 avg, 0.1 rate, 1.0 seconds, 3 images"), NanLoss)


def test_iterations_going_backwards() -> None:
    events = run(
        "2669: 19.1, 19.0 avg loss, 0.001 rate, 1.0 seconds, 85408 images, 1.0 hours left",
        "1: 4173.0, 4173.0 avg loss, 0.0 rate, 1.0 seconds, 32 images, 1.0 hours left",
        "2: 4170.0, 4172.0 avg loss, 0.0 rate, 1.0 seconds, 64 images, 1.0 hours left",
    )
    (rep,) = of(events, IterationsRepeated)
    assert (rep.from_iteration, rep.to_iteration, rep.line) == (2669, 1, 2)
    assert events.index(rep) < events.index(of(events, Iteration)[1])


# ---- mAP ------------------------------------------------------------------------------------

ALEXEYAB_EVAL = [
    " 5200: 0.9, 0.9 avg loss, 0.001 rate, 1.0 seconds, 332800 images, 2.0 hours left",
    " calculation mAP (mean average precision)...",
    " detections_count = 1200, unique_truth_count = 511  ",
    "class_id = 0, name = helmet, ap = 81.23%   \t (TP = 120, FP = 14) ",
    "class_id = 1, name = safety vest, ap = 79.00%   \t (TP = 310, FP = 38) ",
    " for conf_thresh = 0.25, precision = 0.89, recall = 0.84, F1-score = 0.86 ",
    " for conf_thresh = 0.25, TP = 430, FP = 52, FN = 81, average IoU = 70.12 % ",
    " IoU threshold = 50 %, used Area-Under-Curve for each unique Recall ",
    " mean average precision (mAP@0.50) = 0.812345, or 81.23 % ",
    "Set -points flag:",
    " mean_average_precision (mAP@0.5) = 0.812345 ",
    "New best mAP!",
    " (next mAP calculation at 5300 iterations) ",
    " Last accuracy mAP@0.50 = 81.23 %, best = 83.10 % ",
    " 5201: 0.9, 0.9 avg loss, 0.001 rate, 1.0 seconds, 332864 images, 2.0 hours left",
    " Last accuracy mAP@0.50 = 81.23 %, best = 83.10 % ",
]


def test_alexeyab_evaluation_is_one_map_result() -> None:
    events = run(*ALEXEYAB_EVAL)
    (m,) = of(events, MapResult)
    assert (m.iteration, m.map, m.valid, m.line) == (5200, 0.812345, True, 9)
    assert [(c.class_id, c.name, c.tp, c.fp) for c in m.per_class] == [
        (0, "helmet", 120, 14),
        (1, "safety vest", 310, 38),
    ]
    assert [c.ap for c in m.per_class] == pytest.approx([0.8123, 0.79])
    assert (m.precision, m.recall, m.f1, m.conf_thresh) == (0.89, 0.84, 0.86, 0.25)
    assert (m.tp, m.fp, m.fn) == (430, 52, 81)
    assert m.average_iou == pytest.approx(0.7012)
    assert m.iou_threshold == 0.5
    assert m.source == "darknet"


def test_older_map_line_forms() -> None:
    base = " 900: 1.0, 1.0 avg loss, 0.001 rate, 1.0 seconds, 57600 images, 2.0 hours left"
    (a,) = of(run(base, " mean average precision (mAP@0.5) = 0.400000, or 40.00 % "), MapResult)
    (b,) = of(run(base, " mean average precision (mAP) = 0.300000, or 30.00 % "), MapResult)
    assert (a.map, a.iou_threshold, a.iteration) == (0.4, 0.5, 900)
    assert (b.map, b.iou_threshold) == (0.3, None)


def test_summary_line_alone_is_the_result() -> None:
    # A Colab tail that starts between the result line and the training loop's summary.
    events = run(
        " mean_average_precision (mAP@0.5) = 0.890550 ",
        " 401: 3.8, 4.4 avg loss, 0.0026 rate, 0.6 seconds, 19248 images, 1.0 hours left",
    )
    (m,) = of(events, MapResult)
    assert (m.iteration, m.map, m.iou_threshold, m.line) == (None, 0.89055, 0.5, 1)


def test_last_accuracy_lines_are_not_evaluations() -> None:
    events = run(
        " Last accuracy mAP@0.50 = 81.23 %, best = 83.10 % ",
        " Last accuracy mAP@0.5 = 95.99 %, best = 95.99 % ",
        " (next mAP calculation at 31926 iterations) ",
    )
    assert events == []


@pytest.mark.parametrize("value", ["1" * 283 + ".000000", "inf", "-nan", "1.500000", "-0.100000"])
def test_impossible_map_is_recorded_invalid(value: str) -> None:
    (m,) = of(run(f" mean average precision (mAP@0.50) = {value}, or 100.00 % "), MapResult)
    assert m.valid is False


def test_hankai_map_and_class_table() -> None:
    events = run(
        "2000: loss=1.1, avg loss=1.2, rate=0.001, 50.0 milliseconds, 128000 images,"
        " time remaining=2.0 hours",
        "  Id Name                        AP     TP     FP     FN     GT AvgIoU",
        "  -- -------------------- --------- ------ ------ ------ ------ -------",
        "   0 helmet                 81.2300    120     14     27    147 70.1200",
        "   1 safety vest            79.0000    310     38     40    350 68.0000",
        "-> mean average precision (mAP@0.50)=80.12%",
    )
    (m,) = of(events, MapResult)
    assert (m.iteration, m.iou_threshold, m.valid) == (2000, 0.5, True)
    assert m.map == pytest.approx(0.8012)
    assert [(c.class_id, c.name, c.tp, c.fp) for c in m.per_class] == [
        (0, "helmet", 120, 14),
        (1, "safety vest", 310, 38),
    ]
    assert m.per_class[0].ap == pytest.approx(0.8123)


HANKAI_V5_EVAL = [
    # hank-ai v4.1-v5.1 (docs/hankai.md §2): AlexeyAB's table header, `key=value` lines.
    "2000: loss=1.1, avg loss=1.2, rate=0.001, 50.0 milliseconds, 128000 images,"
    " time remaining=2.0 hours",
    "Calculating mAP (mean average precision)...",
    "  Id Name             AvgPrecision     TP     FN     FP     TN Accuracy ErrorRate"
    " Precision Recall Specificity FalsePosRate",
    "  -- ----             ------------ ------ ------ ------ ------ -------- ---------"
    " --------- ------ ----------- ------------",
    "   0 mirror                85.0000     17      3      2     40   0.9032    0.0968"
    "    0.8947 0.8500      0.9524       0.0476",
    "   1 memory card           77.0000     12      6      5     39   0.8226    0.1774"
    "    0.7059 0.6667      0.8864       0.1136",
    "for conf_thresh=0.25, precision=0.81, recall=0.76, F1 score=0.78",
    "for conf_thresh=0.25, TP=29, FP=7, FN=9, average IoU=68.13%",
    "IoU threshold=50.00%, used area-under-curve for each unique recall",
    "mean average precision (mAP@0.50)=81.00%",
]


def test_hankai_v5_table_with_error_rate_and_key_value_lines() -> None:
    # `ErrorRate` in the header and the class names `mirror`/`memory card` contain error
    # triggers (`rror`, `memory`): the table is read before them.
    events = run(*HANKAI_V5_EVAL)
    assert not of(events, FatalError) and not of(events, GpuError)
    (m,) = of(events, MapResult)
    assert [(c.class_id, c.name, c.tp, c.fp) for c in m.per_class] == [
        (0, "mirror", 17, 2),
        (1, "memory card", 12, 5),
    ]
    assert [c.ap for c in m.per_class] == pytest.approx([0.85, 0.77])
    assert (m.precision, m.recall, m.f1, m.conf_thresh) == (0.81, 0.76, 0.78, 0.25)
    assert (m.tp, m.fp, m.fn) == (29, 7, 9)
    assert m.average_iou == pytest.approx(0.6813)
    assert m.iou_threshold == 0.5
    assert m.map == pytest.approx(0.81)


def test_hankai_master_arrow_lines_and_a_mirror_row() -> None:
    events = run(
        "2000: loss=1.1, avg loss=1.2, rate=0.001, 50.0 milliseconds, 128000 images,"
        " time remaining=2.0 hours",
        "  Id Name                        AP     TP     FP     FN     GT AvgIoU",
        "   0 mirror                 81.2300    120     14     27    147 70.1200",
        "-> for conf_thresh=0.25, precision=0.89, recall=0.84, F1 score=0.86",
        "-> for conf_thresh=0.25, TP=430, FP=52, FN=81, average IoU=70.12%",
        "-> IoU threshold=75.00%, used area-under-curve for each unique recall",
        "-> mean average precision (mAP@0.75)=80.12%",
    )
    (m,) = of(events, MapResult)
    assert [(c.class_id, c.name, c.tp, c.fp) for c in m.per_class] == [(0, "mirror", 120, 14)]
    assert (m.precision, m.recall, m.f1, m.tp, m.fp, m.fn) == (0.89, 0.84, 0.86, 430, 52, 81)
    assert m.average_iou == pytest.approx(0.7012)
    assert m.iou_threshold == 0.75


def test_an_error_line_in_an_open_table_is_still_an_error() -> None:
    # Rows are read before the error triggers only when they are rows: a CUDA error glued to
    # progress digits while the table is open stays an error.
    events = run(
        *HANKAI_V5_EVAL[:4],
        "4CUDA Error: out of memory",
    )
    assert [e.kind for e in of(events, GpuError)] == ["out_of_memory"]


HANKAI_BOX = [
    "* * * * * * * * * * * * * * * * * * * * * * * * * * * * *",
    "* Errno 2: No such file or directory",
    "* Error location: /src/darknet/src-lib/data.cpp, read_boxes(), line #112",
    "* Error message:  {message}",
    "* Thread #140: loading thread #0",
    '* Version "Moonlit" v5.1-104-gf684e1d7 built on Jun 27 2026 12:00:00',
    "* * * * * * * * * * * * * * * * * * * * * * * * * * * * *",
]


@pytest.mark.parametrize(
    "message",
    [
        'failed to open annotation file "/data/img 1.txt"',
        "There is no /data/valid.txt file for mAP calculation! Don't use -map flag.",
        "Cancel the attempt to train a neural network using a CPU.",
        "signal handler invoked for signal #11 (Segmentation fault)",
        "signal handler invoked for signal #6 (Aborted)",
    ],
)
def test_hankai_error_box_is_one_fatal_error(message: str) -> None:
    events = run(
        " 7: loss=1.1, avg loss=1.2, rate=0.001, 50.0 milliseconds, 448 images,"
        " time remaining=2.0 hours",
        *(line.format(message=message) for line in HANKAI_BOX),
    )
    (f,) = of(events, FatalError)
    assert message in f.message and (f.iteration, f.line) == (7, 5)


@pytest.mark.parametrize("sig", ["1 (Hangup)", "2 (Interrupt)", "3 (Quit)",
                                 "10 (User defined signal 1)", "12 (User defined signal 2)",
                                 "15 (Terminated)"])  # fmt: skip
def test_hankai_box_for_a_stop_from_outside_is_not_fatal(sig: str) -> None:
    events = run(
        f"calling Darknet's fatal error handler due to signal #{sig.split()[0]}",
        *(line.format(message=f"signal handler invoked for signal #{sig}") for line in HANKAI_BOX),
    )
    assert events == []


def test_hankai_box_for_out_of_memory_is_a_gpu_error() -> None:
    events = run(
        *(line.format(message="CUDA memory allocation failed (4096000).") for line in HANKAI_BOX),
    )
    assert one(events, GpuError).kind == "out_of_memory"


# hank-ai's `check_cuda_error` (src-lib/dark_cuda.cpp, docs/hankai.md §6): `darknet_fatal_error(…,
# "current CUDA error: status=%d %s: %s", status, cudaGetErrorName, cudaGetErrorString)`, or
# `most recent CUDA error: …` for `cudaGetLastError`; `check_cuda_error_extended` prints the
# locator line `CUDA status error: <file>, <function>(), line #N` before it.
@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("current CUDA error: status=700 cudaErrorIllegalAddress: an illegal memory access was"
         " encountered", "cuda"),
        ("most recent CUDA error: status=719 cudaErrorLaunchFailure: unspecified launch failure",
         "cuda"),
        ("current CUDA error: status=2 cudaErrorMemoryAllocation: out of memory",
         "out_of_memory"),
        ("current CUDA error: status=100 cudaErrorNoDevice: no CUDA-capable device is detected",
         "no_device"),
    ],
)  # fmt: skip
def test_hankai_box_for_a_cuda_error_is_a_gpu_error_as_alexeyabs(message: str, kind: str) -> None:
    events = run(
        "CUDA status error: /src/darknet/src-lib/dark_cuda.cpp, cuda_push_array(), line #495",
        *(line.format(message=message) for line in HANKAI_BOX),
    )
    (e,) = of(events, GpuError)
    assert (e.kind, e.line) == (kind, 5) and message in e.message
    assert of(events, FatalError) == []  # one cause, a GPU one (as AlexeyAB's `CUDA Error: …`)
    assert events == [e]


def test_hankai_cuda_locator_lines_emit_nothing() -> None:
    assert (
        run(
            "CUDA status error: /src/darknet/src-lib/dark_cuda.cpp, cuda_push_array(), line #495",
            "CUDA status = cudaDeviceSynchronize() error: /src/darknet/src-lib/dark_cuda.cpp,"
            " cuda_pull_array(), line #510",
            "cuDNN status error in /src/darknet/src-lib/convolutional_kernels.cu,"
            " forward_convolutional_layer_gpu(), line #541",
        )
        == []
    )


# ---- region/YOLO IoU -------------------------------------------------------------------------


def test_region_lines_aggregate_count_weighted_into_the_closing_iteration() -> None:
    events = run(
        "Region 16 Avg IOU: -nan, Class: -nan, Obj: -nan, No Obj: 0.499592, .5R: -nan,"
        " .75R: -nan,  count: 0",
        "Region 23 Avg IOU: 0.270277, Class: 0.497752, Obj: 0.499920, No Obj: 0.500030,"
        " .5R: 0.000000, .75R: 0.000000,  count: 31",
        "v3 (iou loss, Normalizer: (iou: 0.05, obj: 4.00, cls: 0.50) Region 144 Avg"
        " (IOU: 0.100000), count: 9, class_loss = 3229.0, iou_loss = -2417.5, total_loss = 811.4",
        "Region 82 Avg (IOU: 0.500000, GIOU: 0.400000), Class: 0.9, Obj: 0.8, No Obj: 0.01,"
        " .5R: 1.0, .75R: 0.5, count: 10",
        "Region Avg IOU: 0.951268, Class: 0.998667, Obj: 0.948771, No Obj: 0.012058,"
        " Avg Recall: 1.000000,  count: 16",
        "1: 498.5, 498.5 avg, 0.000000 rate, 1.2 seconds, 1 images",
    )
    (iou,) = of(events, LayerIoU)
    expected = (0.270277 * 31 + 0.1 * 9 + 0.5 * 10 + 0.951268 * 16) / 66
    assert (iou.iteration, iou.count, iou.layers, iou.line) == (1, 66, 5, 6)
    assert iou.mean_iou == pytest.approx(expected)
    assert events.index(iou) > events.index(of(events, Iteration)[0])


def test_region_lines_without_objects_give_no_mean() -> None:
    events = run(
        "Region 94 Avg IOU: -nan, Class: -nan, Obj: -nan, No Obj: 0.0, .5R: -nan, .75R: -nan,"
        "  count: 0",
        "7: 1.0, 1.0 avg, 0.1 rate, 1.0 seconds, 7 images",
    )
    (iou,) = of(events, LayerIoU)
    assert (iou.mean_iou, iou.count, iou.layers) == (None, 0, 1)


def test_nan_iou_with_objects_makes_the_mean_nan() -> None:
    events = run(
        "Region 106 Avg IOU: nan, Class: 0.0, Obj: 0.0, No Obj: 0.0, .5R: 0.0, .75R: 0.0,"
        "  count: 1",
        "Region 82 Avg IOU: 0.55, Class: 0.16, Obj: 0.005, No Obj: 0.001, .5R: 0.6, .75R: 0.0,"
        "  count: 3",
        " 2677: nan, nan avg, 0.001000 rate, 4.580532 seconds, 171328 images",
    )
    (iou,) = of(events, LayerIoU)
    assert iou.mean_iou is not None and math.isnan(iou.mean_iou)


def test_region_lines_no_iteration_closes_are_dropped() -> None:
    p = LogParser()
    p.feed_line(
        "Region 23 Avg IOU: 0.27, Class: 0.49, Obj: 0.49, No Obj: 0.5, .5R: 0.0,"
        " .75R: 0.0,  count: 31"
    )
    assert p.close() == []


# ---- saves, resizes, errors -----------------------------------------------------------------


def test_weights_saved_carries_the_last_iteration() -> None:
    events = run(
        " 100: 1.0, 1.0 avg loss, 0.001 rate, 1.0 seconds, 6400 images, 1.0 hours left",
        "Saving weights to /job/backup/yolo-obj_last.weights",
    )
    (w,) = of(events, WeightsSaved)
    assert (w.path, w.iteration, w.line) == ("/job/backup/yolo-obj_last.weights", 100, 2)


@pytest.mark.parametrize(
    ("lines", "size"),
    [
        (["Resizing", "416"], (416, 416)),
        (["Resizing, random_coef = 1.40 ", "", " 896 x 896 "], (896, 896)),
        (["Resizing to initial size: 608 x 608  try to allocate additional workspace"], (608, 608)),
        (["Resizing", "608 x 416"], (608, 416)),
    ],
)
def test_resized(lines: list[str], size: tuple[int, int]) -> None:
    events = run("10: 1.0, 1.0 avg loss, 0.1 rate, 1.0 seconds, 640 images, 1.0 hours left", *lines)
    (r,) = of(events, Resized)
    assert ((r.width, r.height), r.iteration) == (size, 10)


def test_resizing_without_size_still_reports_the_resize() -> None:
    events = run(
        "Resizing",
        " try to allocate additional workspace_size = 52.43 MB ",
        "Loaded: 0.000000 seconds",
    )
    (r,) = of(events, Resized)
    assert (r.width, r.height, r.line) == (None, None, 1)


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (" Try to set subdivisions=64 in your cfg-file. ", "out_of_memory"),
        (" CUDA Error: out of memory", "out_of_memory"),
        ("CUDA Error Prev: out of memory", "out_of_memory"),
        ("cuDNN Error: CUDNN_STATUS_ALLOC_FAILED", "out_of_memory"),
        ("Error: cuDNN isn't found FWD algo for convolution.", "out_of_memory"),
        (" cuDNN hasn't found FWD algo for convolution", "out_of_memory"),
        ("CUDA memory allocation failed (1234567890).", "out_of_memory"),
        ("If possible, try to set subdivisions=... higher in your cfg file.", "out_of_memory"),
        ("status=2 cudaErrorMemoryAllocation: out of memory", "out_of_memory"),
        ("cuDNN Error: CUDNN_STATUS_BAD_PARAM: Success", "cudnn"),
        ("cuDNN current error: status=3 CUDNN_STATUS_BAD_PARAM", "cudnn"),
        ("CUDA Error: an illegal memory access was encountered", "cuda"),
        (" CUDA Error: no CUDA-capable device is detected", "no_device"),
        ("    3 CUDA Error: out of memory", "out_of_memory"),
    ],
)
def test_gpu_error_kinds(line: str, kind: str) -> None:
    e = one(run(line), GpuError)
    assert e.kind == kind


def test_gpu_error_locator_and_warning_lines_emit_nothing() -> None:
    assert (
        run(
            "CUDA status Error: file: ./src/dark_cuda.c : () : line: 492 : build time: x",
            "cuDNN status Error in: file: ./src/convolutional_kernels.cu : () : line: 541",
            " used slow CUDNN algo without Workspace! Need memory: 237158039, available: 1",
            "Warning: You set batch=6 lower than 64! It is recommended to set batch=64",
        )
        == []
    )


def test_one_gpu_error_per_kind_between_iterations() -> None:
    it = " {}: 1.0, 1.0 avg loss, 0.001 rate, 1.0 seconds, 64 images, 1.0 hours left"
    events = run(
        it.format(1),
        " CUDA Error: out of memory",
        "CUDA Error: out of memory: Success",
        it.format(2),
        "CUDA Error: out of memory",
    )
    assert [(e.iteration, e.line) for e in of(events, GpuError)] == [(1, 2), (2, 5)]


@pytest.mark.parametrize(
    "line",
    [
        "Couldn't open file: /data/labels/img_001.txt",
        "Darknet error location: ./src/dark_cuda.c, check_error, line #69",
        "darknet: ./src/utils.c:325: error: Assertion `0' failed.",
        "Assertion failed: 0, file C:\\darknet\\src\\utils.c, line 295",
        "Error: l.outputs == params.inputs",
        "realloc(): invalid old size",
    ],
)
def test_fatal_errors(line: str) -> None:
    e = one(run(line), FatalError)
    assert e.message == line.strip()


def test_ordinary_lines_are_not_errors() -> None:
    assert (
        run(
            "Can't open label file. (This can be normal only if you use MSCOCO): x.txt",
            " If error occurs - run training with flag: -dont_show ",
            "Learning Rate: 0.001, Momentum: 0.9, Decay: 0.0005",
        )
        == []
    )


# ---- robustness ------------------------------------------------------------------------------

ITER = " 5: 337.6, 337.6 avg loss, 0.0 rate, 1.0 seconds, 320 images, 7.1 hours left"


def test_osc_title_glued_to_the_end_of_a_line() -> None:
    events = run(
        " (next mAP calculation at 1000 iterations) \x1b]2;5/4000: loss=337.6 hours left=7.1\x07",
        ITER,
        ITER.replace(" 5:", " 6:") + "\x1b]2;6/4000: loss=337.6 hours left=7.1\x07",
    )
    assert [e.iteration for e in of(events, Iteration)] == [5, 6]
    assert len(events) == 2


def test_screen_clear_status_glued_to_last_accuracy() -> None:
    events = run(
        " Last accuracy mAP@0.50 = 100.00 %, best = 100.00 % \x1b[H\x1b[J5741/6000:"
        " loss=0.0 map=1.00 best=1.00 hours left=0.0\x07",
        ITER,
    )
    assert [type(e) for e in events] == [Iteration]


def test_bel_crlf_and_carriage_return_progress() -> None:
    events = run(
        ITER + "\r",
        "\x07Saving weights to backup/x_last.weights\r",
        " rank = 0 of ranks = 11768 \r rank = 100 of ranks = 11768 \rclass_id = 0, name = fire,"
        " ap = 5.64%   \t (TP = 47, FP = 156) \r",
        " mean average precision (mAP@0.50) = 0.028207, or 2.82 % \r",
    )
    assert of(events, Iteration)[0].hours_left == 7.1
    assert of(events, WeightsSaved)[0].path == "backup/x_last.weights"
    (m,) = of(events, MapResult)
    assert [c.name for c in m.per_class] == ["fire"]


def test_process_manager_prefixes() -> None:
    events = run(
        "0|yolo     | Region 94 Avg IOU: 0.889933, Class: 0.99, Obj: 0.99, No Obj: 0.003,"
        " .5R: 1.0, .75R: 1.0,  count: 11",
        "0|yolo     | 10313: 0.576849, 0.677636 avg, 0.002000 rate, 3.992994 seconds,"
        " 1320064 images",
        "yolo_1  | Saving weights to backup/yolo.backup",
        "2024-01-02T03:04:05.678Z CUDA Error: out of memory",
    )
    assert [type(e) for e in events] == [Iteration, LayerIoU, WeightsSaved, GpuError]


@pytest.mark.parametrize(
    "tail",
    [
        " 44019: 0.088612, 0.088801 avg loss, 0.000200 rate, 3.028000 seconds, 3873672 im",
        " 44019: 0.088612, 0.088801 avg loss, 0.000200 rate, 3.028000 seconds, 3873672 images, 6.4",
        " 44019: 0.08",
        "Saving weights to backup/yolov4-obj_la",
        " mean average precision (mAP@0.50) = 0.81",
        " mean_average_precision (mAP@0.5) = 0.8",
        "CUDA Error: out of mem",
        "Region 23 Avg IOU: 0.27, Class: 0.49, Obj: 0.49, No Obj: 0.5, .5R: 0.0, .75R: 0.0,  cou",
        "5989: loss=0.444, avg loss=0.329, rate=0.000026, 64.424 milliseconds, 383296 images, ti",
        "Resizing",
        "416 x 4",
    ],
)
def test_truncated_last_line_yields_nothing(tail: str) -> None:
    p = LogParser()
    before = p.feed(ITER + "\n")
    assert [type(e) for e in before] == [Iteration]
    assert p.feed(tail) == []  # no newline yet: nothing is read
    assert p.close() == []


@pytest.mark.parametrize(
    "tail",
    [
        " 44019: 0.088612, 0.088801 avg loss, 0.000200 rate, 3.028000 seconds, 3873672 images,"
        " 6.448461 hours left",
        "44019: 0.088612, 0.088801 avg, 0.000200 rate, 3.028000 seconds, 3873672 images",
        "44019: loss=0.444, avg loss=0.329, rate=0.000026, 64.424 milliseconds, 383296 images,"
        " time remaining=7 seconds",
    ],
)
def test_complete_last_line_without_newline_is_read(tail: str) -> None:
    p = LogParser()
    assert p.feed(tail) == []
    it = one(p.close(), Iteration)
    assert it.iteration == 44019


def test_unterminated_error_line_is_still_reported() -> None:
    p = LogParser()
    p.feed("CUDA Error: out of memory")
    e = one(p.close(), GpuError)
    assert e.kind == "out_of_memory"


def test_feed_joins_a_line_split_across_chunks() -> None:
    p = LogParser()
    assert p.feed(ITER[:20]) == []
    assert p.feed(ITER[20:40]) == []
    it = one(p.feed(ITER[40:] + "\nLoaded: 0.0 seconds\n"), Iteration)
    assert (it.iteration, it.line) == (5, 1)
    assert p.summary.lines == 2
    assert p.summary.counts == {"Iteration": 1}


def test_parse_file_decodes_bad_bytes_and_missing_file(tmp_path: Path) -> None:
    log = tmp_path / "darknet.log"
    log.write_bytes(b"\xff\xfe garbage \xc3\n" + ITER.encode() + b"\r\n")
    it = one(list(parse_file(log)), Iteration)
    assert (it.iteration, it.line) == (5, 2)
    with pytest.raises(LogReadError, match=r"nope\.log"):
        list(parse_file(tmp_path / "nope.log"))


def test_detect_flavour() -> None:
    assert detect_flavour("1: 498.5, 498.5 avg, 0.0 rate, 1.2 seconds, 1 images\n") == "pjreddie"
    assert detect_flavour(ITER + "\n") == "alexeyab"
    assert (
        detect_flavour(
            "Region 23 Avg IOU: 0.2, Class: 0.4, Obj: 0.4, No Obj: 0.5, .5R: 0.0, .75R: 0.0,"
            " count: 3\n"
            "1: 498.5, 498.5 avg, 0.0 rate, 1.2 seconds, 1 images\n"
            " calculation mAP (mean average precision)...\n"
        )
        == "alexeyab"
    )
    assert (
        detect_flavour(
            "7: loss=1.0, avg loss=1.0, rate=0.1, 5.0 seconds, 64 images, time remaining=1 second\n"
        )
        == "hankai"
    )
    assert detect_flavour("hello\nworld\n") is None


def test_given_flavour_is_kept_and_unknown_one_refused() -> None:
    p = LogParser("hankai")
    p.feed_line(ITER)
    assert p.flavour == "hankai"
    with pytest.raises(ValueError, match="unknown darknet flavour 'yolo'"):
        LogParser("yolo")  # type: ignore[arg-type]


def test_an_unknown_cfg_section_is_a_fatal_error() -> None:
    # pjreddie prints this and goes on until an unrelated assert; the line names the cause.
    from supervisor.darknet.logparse import LogParser

    events = LogParser("pjreddie").feed_line("    1 Type not recognized: [maxpoool]")
    assert len(events) == 1 and isinstance(events[0], FatalError)
    assert "[maxpoool]" in events[0].message


def test_the_wrappers_launch_marker_is_a_launch_event() -> None:
    from supervisor.darknet.logparse import LogParser, launch_marker
    from supervisor.training.events import Launch

    line = launch_marker(2, ["/usr/bin/darknet", "detector", "train", "a.data"], 1795644947.25)
    events = LogParser().feed_line(line.rstrip("\n"))
    assert events == [
        Launch(2, ("/usr/bin/darknet", "detector", "train", "a.data"), 1, 1795644947.25)
    ]


# ---- interleaved streams: pjreddie's stdout cut by stderr's saves (facts §1) -----------------

SAVE = "Saving weights to /data/backup/t.backup"


def test_iteration_cut_after_its_seconds_by_a_save() -> None:
    events = run("794: 1.025418, 0.958934 avg, 0.001000 rate, 0.248048 seconds," + SAVE)
    assert events == [
        Iteration(794, 1.025418, 0.958934, 0.001, 0.248048, None, None, 1),
        WeightsSaved("/data/backup/t.backup", 794, 1),
    ]


def test_iteration_cut_in_its_rate_by_a_save() -> None:
    events = run("1394: 0.579085, 0.779891 avg, 0.0000" + SAVE)
    it = of(events, Iteration)[0]
    assert (it.iteration, it.loss, it.avg_loss, it.seconds, it.images) == (
        1394,
        0.579085,
        0.779891,
        None,
        None,
    )
    assert math.isnan(it.rate)  # cut: unknown, and skipped by the schedule inference
    assert [type(e) for e in events] == [Iteration, WeightsSaved]


def test_iteration_cut_right_after_images_keeps_the_save() -> None:
    events = run("12: 1.0, 0.9 avg, 0.001000 rate, 0.24 seconds, 96 images" + SAVE)
    assert [type(e) for e in events] == [Iteration, WeightsSaved]
    assert of(events, Iteration)[0].images == 96


def test_save_glued_to_a_loaded_line_is_still_a_save() -> None:
    events = run("Loaded: 0.000093 seconds" + SAVE)
    assert [type(e) for e in events] == [WeightsSaved]


def test_fragment_before_the_avg_is_joined_with_its_tail() -> None:
    events = run(
        "89: 2.7, 2.8 avg, 0.001000 rate, 0.2 seconds, 712 images",
        "90: 2.614442" + SAVE,
        "Saving weights to /data/backup/t_100.weights",
        ", 2.767134 avg, 0.001000 rate, 0.248048 seconds, 720 images",
        "Loaded: 0.000088 seconds",
    )
    assert [type(e) for e in events] == [Iteration, WeightsSaved, WeightsSaved, Iteration]
    joined = of(events, Iteration)[1]
    assert (joined.iteration, joined.loss, joined.avg_loss, joined.images, joined.line) == (
        90,
        2.614442,
        2.767134,
        720,
        4,
    )


def test_fragment_cut_inside_its_number_is_joined() -> None:
    events = run("79" + SAVE, "4: 1.025418, 0.958934 avg, 0.001000 rate, 0.25 seconds, 6352 images")
    assert [e.iteration for e in of(events, Iteration)] == [794]


@pytest.mark.parametrize(
    "after",
    [
        "Loaded: 0.000088 seconds",  # not the tail: the wait ends here
        "5: 477.761383, 493.087494 avg, 0.000000 rate, 1.164809 seconds, 5 images",
    ],
)
def test_fragment_is_never_glued_to_an_unrelated_line(after: str) -> None:
    events = run("79" + SAVE, after, "4: 1.0, 0.9 avg, 0.001000 rate, 0.25 seconds, 6352 images")
    assert 794 not in [e.iteration for e in of(events, Iteration)]


def parse_text(text: str) -> list[Event]:
    p = LogParser()
    return p.feed(text) + p.close()


def block_buffered(stdout: str, block: int, every: int) -> str:
    """`stdout` as a file sees it without stdbuf: 4 KB blocks, a save after every `every`th."""
    out: list[str] = []
    for k, pos in enumerate(range(0, len(stdout), block)):
        out.append(stdout[pos : pos + block])
        if k % every == every - 1:
            out.append(SAVE + "\n")
    return "".join(out)


@pytest.mark.shared_logs
def test_block_buffered_real_log_keeps_every_iteration(logs_dir: Path) -> None:
    # Log 01 (pjreddie, 6000 iterations) as pjreddie writes it to a file without stdbuf, a
    # save landing at ~1 900 block boundaries: every cut position of every line type occurs.
    text = (logs_dir / "01_pjreddie-yolov3tiny-buddyzhu-6000.log").read_text(errors="replace")
    want = [(e.iteration, e.loss, e.avg_loss) for e in of(parse_text(text), Iteration)]
    assert len(want) == 6000
    for block in (4096, 1021):
        cut = parse_text(block_buffered(text, block, 1))
        got = [(e.iteration, e.loss, e.avg_loss) for e in of(cut, Iteration)]
        assert got == want
        assert not of(cut, IterationsRepeated)
        injected = -(-len(text) // block)
        assert len(of(cut, WeightsSaved)) == injected + text.count("Saving weights to ")


# ---- line ends, encodings, binary data --------------------------------------------------------


def test_split_lines_treats_cr_crlf_and_lf_as_line_ends() -> None:
    from supervisor.darknet.logparse import split_lines

    assert split_lines("a\nb\r\nc\rd") == (["a", "b", "c"], "d")
    assert split_lines("a\r") == ([], "a\r")  # its `\n` may come with the next chunk
    assert split_lines("a\r" + "\nb\n") == (["a", "b"], "")
    assert split_lines("\r\r") == ([""], "\r")


def test_crlf_split_between_two_chunks_is_one_line_end() -> None:
    p = LogParser()
    assert p.feed(ITER + "\r") == []
    assert [type(e) for e in p.feed("\n" + ITER + "\n")] == [Iteration, Iteration]
    assert p.summary.lines == 2


def test_last_line_ended_by_cr_is_whole() -> None:
    p = LogParser()
    p.feed(" 44019: 0.08, 0.08 avg loss, 0.0002 rate, 3.0 seconds, 3873672 images, 6.4\r")
    assert one(p.close(), Iteration).hours_left is None  # read as whole, not strictly
    assert p.summary.lines == 1


@pytest.mark.shared_logs
@pytest.mark.parametrize("ends", ["\r", "\r\n"])
def test_real_log_with_cr_line_ends_reads_every_iteration(
    ends: str, tmp_path: Path, logs_dir: Path, log_index: list[LogFacts]
) -> None:
    name = "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log"
    text = (logs_dir / name).read_bytes().replace(b"\r\n", b"\n")
    log = tmp_path / "cr.log"
    log.write_bytes(text.replace(b"\n", ends.encode()))
    events = list(parse_file(log))
    want = list(parse_file(logs_dir / name))
    assert len(of(events, Iteration)) == facts_for(log_index, name).iter_lines == 4000
    assert list(map(repr, events)) == list(map(repr, want))


def test_cr_progress_segments_are_lines_of_their_own() -> None:
    events = run("  rank = 100 of ranks = 11768 \r" + ITER + "\r rank = 200 of ranks = 11768 ")
    assert [type(e) for e in events] == [Iteration]
    assert events[0].line == 2


@pytest.mark.shared_logs
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-8-sig"])
def test_utf16_and_bom_logs_are_decoded(codec: str, tmp_path: Path, logs_dir: Path) -> None:
    from supervisor.darknet.logparse import LogFile

    name = "39_alexeyab-yolov4tiny-first1000-from-scratch-1ravikumar.log"
    text = (logs_dir / name).read_text(encoding="utf-8", errors="replace")
    log = tmp_path / "tee.log"
    log.write_bytes(text.encode(codec))  # "utf-16": BOM + native order, as PowerShell writes
    lf = LogFile(log, chunk_size=4096)  # small chunks: a UTF-16 pair may straddle two
    events = list(lf.events(LogParser()))
    assert list(map(repr, events)) == list(map(repr, parse_file(logs_dir / name)))
    assert lf.encoding == codec and not lf.binary
    assert lf.utf16 == codec.startswith("utf-16")


def test_detect_encoding_needs_the_nul_pattern_for_utf16() -> None:
    from supervisor.darknet.logparse import detect_encoding

    sample = ITER * 20
    assert detect_encoding(sample.encode("utf-16-le")) == "utf-16-le"
    assert detect_encoding(sample.encode("utf-16-be")) == "utf-16-be"
    assert detect_encoding(b"\xff\xfe" + sample.encode("utf-16-le")) == "utf-16"
    assert detect_encoding(b"\xff\xfe garbage " + sample.encode()) == "utf-8"
    assert detect_encoding(sample.encode()) == "utf-8"


def test_random_bytes_are_binary_and_real_logs_are_not(tmp_path: Path) -> None:
    from supervisor.darknet.logparse import LogFile

    junk = tmp_path / "junk.log"
    junk.write_bytes(random.Random(14).randbytes(1 << 20))
    lf = LogFile(junk)
    events = list(lf.events(LogParser()))
    assert lf.binary and not of(events, Iteration)
    assert lf.bytes_read == lf.size == 1 << 20


@pytest.mark.shared_logs
def test_no_shared_log_is_binary(logs_dir: Path) -> None:
    from supervisor.darknet.logparse import LogFile

    for path in sorted(logs_dir.glob("*.log")):
        lf = LogFile(path)
        for _ in lf.chunks():
            pass
        assert not lf.binary, path.name
        assert lf.encoding == "utf-8", path.name


# --- bulk reading (`feed_runs`): the same events as `feed`, line for line -----------------------


def expanded(events: list[Event | IterationRun]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        out.extend(e.events() if isinstance(e, IterationRun) else (e,))
    return out


def both_ways(chunks: list[str]) -> tuple[list[Event], list[Event], LogParser, LogParser, int]:
    """`feed` and `feed_runs` over the same chunks: their events, parsers and runs given."""
    a, b = LogParser(), LogParser()
    want: list[Event] = []
    got: list[Event | IterationRun] = []
    for chunk in chunks:
        want += a.feed(chunk)
        got += b.feed_runs(chunk)
    want += a.close()
    got += b.close()
    return want, expanded(got), a, b, sum(isinstance(e, IterationRun) for e in got)


def cut(text: str, rng: random.Random, most: int) -> list[str]:
    out, i = [], 0
    while i < len(text):
        k = rng.randint(1, most)
        out.append(text[i : i + k])
        i += k
    return out


@pytest.mark.shared_logs
@pytest.mark.parametrize("shortest", [1, logparse._RUN_MIN])
def test_bulk_reading_gives_the_events_of_line_reading_on_every_shared_log(
    logs_dir: Path, shortest: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs of every length (1: even one line is a run), and the default (short ones line by
    # line, a chunk of short ones making the next chunks skip the bulk pass).
    monkeypatch.setattr(logparse, "_RUN_MIN", shortest)
    rng = random.Random(14)
    paths = sorted(logs_dir.glob("*.log")) + sorted((logs_dir / "excerpts").glob("*"))
    runs = 0
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        # Whole, and in random pieces (runs and lines cut anywhere, a CRLF split in two).
        for chunks in ([text], cut(text, rng, 5000)):
            want, got, a, b, n = both_ways(chunks)
            assert repr(got) == repr(want), path.name
            assert (b.summary, b.flavour) == (a.summary, a.flavour), path.name
            runs += n
    # Every stretch a run: the bulk path read most lines. By default the shared logs' region
    # lines between iterations keep stretches short: read line by line, the same events.
    assert runs > 1000 if shortest == 1 else runs >= 0


def plain(i: int, rng: random.Random) -> str:
    avg = " avg loss" if rng.random() < 0.5 else " avg"
    hours = f", {rng.uniform(-1, 9):.6f} hours left" if rng.random() < 0.5 else ""
    return (
        f"{i}: {rng.uniform(0, 9):.6f}, {rng.uniform(0, 9):.6f}{avg}, 0.001000 rate,"
        f" {rng.uniform(0, 3):.6f} seconds, {i * 64} images{hours}"
    )


# Lines a bulk reader could misread: each must be read as `_line` reads it.
ODD_LINES = [
    "7: -nan, -nan avg, 0.001000 rate, 1.000000 seconds, 448 images",
    "7: 1.000000, inf avg, 0.001000 rate, 1.000000 seconds, 448 images",
    "7: " + "9" * 400 + ".5, 1.0 avg, 0.001000 rate, 1.000000 seconds, 448 images",
    "7: 1.000000, " + "9" * 320 + ".0 avg, 0.001000 rate, 1.000000 seconds, 448 images",
    "3: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 192 images",  # backwards
    "\t12:\t1.000000,\t1.000000\tavg,\t0.001000\trate,\t1.0\tseconds,\t64\timages",
    "12: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 64 images, junk",
    "0|yolo | 12: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 64 images",
    "\x1b[1m12: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 64 images\x1b[0m",
    "12: 1.0, 1.0 avg, 0.001 rate, 1.0 seconds, 64 images\rRegion Avg IOU: 0.5, count: 3",
    "Region Avg IOU: 0.512, Class: 0.9, Obj: 0.4, No Obj: 0.01, Avg Recall: 0.5,  count: 8",
    "v3 (mse loss, Normalizer: (iou: 0.75, cls: 1.00) Region 16 Avg (IOU: 0.4), count: 2",
    "Saving weights to backup/yolo.backup",
    "15: 2.5Saving weights to backup/yolo_last.weights",
    "Resizing",
    "608",
    "Resizing, random_coef = 1.40 \n\n 896 x 896 ",
    " calculation mAP (mean average precision)...",
    " mean average precision (mAP@0.50) = 0.612345, or 61.23 % ",
    "CUDA Error: out of memory",
    "",
    "   ",
    "12: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 64 images, 5.0 time left",
    "٣: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 64 images",
    "00012: 1.000000, 1.000000 avg, 0.001000 rate, 1.000000 seconds, 64 images",
]


def test_bulk_reading_agrees_on_mixed_and_odd_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logparse, "_RUN_MIN", 1)  # every stretch a run, however short
    rng = random.Random(9)
    for trial in range(300):
        lines: list[str] = []
        i = rng.randint(0, 3)
        for _ in range(rng.randint(1, 60)):
            if rng.random() < 0.75:
                i += rng.choice((1, 1, 1, 1, 2, 0, -2))
                lines.append(plain(i, rng))
            else:
                lines.append(rng.choice(ODD_LINES))
        end = rng.choice(("\n", "\r\n", "\r"))
        text = end.join(lines) + rng.choice((end, ""))
        chunks = cut(text, rng, rng.choice((7, 80, 100000)))
        want, got, a, b, _ = both_ways(chunks)
        assert repr(got) == repr(want), (trial, text)
        assert (b.summary, b.flavour) == (a.summary, a.flavour), (trial, text)


def test_a_run_is_the_lines_it_stands_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logparse, "_RUN_MIN", 1)
    text = "".join(
        f"{i}: 2.5, 2.25 avg, 0.001000 rate, 1.5 seconds, {i * 64} images\n" for i in (1, 2, 3)
    )
    p = LogParser()
    (run,) = p.feed_runs("header\n" + text)
    assert isinstance(run, IterationRun) and len(run) == 3 and run.first_line == 2
    assert list(run.iterations) == [1, 2, 3] and run.avg_loss == [2.25] * 3
    assert run.iteration_at(-1) == Iteration(3, 2.5, 2.25, 0.001, 1.5, 192, None, 4)
    assert list(run.rate_runs()) == [(0, 2, 0.001)]
    assert p.summary.counts == {"Iteration": 3} and p.flavour == "pjreddie"


def test_an_iteration_only_log_is_read_in_runs_that_hold_its_saves() -> None:
    # Issue 14's shape at the default run length: iteration lines and a save every 100.
    rng = random.Random(1)
    lines = []
    for i in range(1, 3001):
        lines.append(
            f"{i}: {rng.uniform(1, 9):.6f}, {rng.uniform(1, 9):.6f} avg, 0.001000 rate,"
            f" {rng.uniform(0, 3):.6f} seconds, {i * 64} images"
        )
        if i % 100 == 0:
            lines.append("Saving weights to backup/yolov3-tiny.backup")
    text = "\n".join(lines) + "\n"
    want, got, a, b, runs = both_ways(cut(text, rng, 40_000))
    assert repr(got) == repr(want) and b.summary == a.summary
    assert 0 < runs < 20  # a run or two per chunk, not one per save (31)
