"""VOC AP from `detector valid`: hand-computed cases, darknet's files, and a real darknet run."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from supervisor.darknet.evaluate import (
    Detection,
    EvalResult,
    EvaluationError,
    GroundTruth,
    average_precision,
    compute_map,
    evaluate_weights,
    image_id,
    iou,
    parse_detection_file,
    yolo_to_pixels,
)
from supervisor.darknet.labels import Box
from supervisor.dataset.demo import write_demo_cfg
from supervisor.dataset.synth import make_shapes_dataset


def det(image: str, score: float, box: Sequence[float], cls: int = 0) -> Detection:
    return Detection(image, cls, score, *box)


def gt(box: Sequence[float], cls: int = 0) -> GroundTruth:
    return GroundTruth(cls, *box)


# --- pure ----------------------------------------------------------------------------------------


def test_several_images_duplicate_and_background_detections() -> None:
    truth = {
        "im1": [gt((0, 0, 10, 10))],
        "im2": [gt((0, 0, 10, 10)), gt((20, 20, 30, 30))],
        "im3": [],
    }
    dets = [
        det("im1", 0.9, (0, 0, 10, 10)),  # TP (im1's object)
        det("im1", 0.8, (0, 0, 10, 10)),  # FP: the same object a second time
        det("im2", 0.7, (20, 20, 30, 30)),  # TP
        det("im3", 0.6, (0, 0, 10, 10)),  # FP: nothing there
        det("im2", 0.5, (50, 50, 60, 60)),  # FP: no overlap
    ]
    r = compute_map(dets, truth, ["a"])
    # 3 objects. Ranked: TP FP TP FP FP -> precision 1, 1/2, 2/3, 2/4, 2/5
    # recall rises at rank 1 (to 1/3) and rank 3 (to 2/3). Envelope there: 1 and 2/3.
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert r.per_class[0].ap == pytest.approx(5 / 9)
    assert r.map == pytest.approx(5 / 9)
    # at conf 0.25 all five count: TP 2, FP 3, FN 1
    assert (r.tp, r.fp, r.fn) == (2, 3, 1)
    assert r.precision == pytest.approx(2 / 5)
    assert r.recall == pytest.approx(2 / 3)
    # F1 = 2 * 0.4 * 2/3 / (0.4 + 2/3) = (8/15) / (16/15) = 0.5
    assert r.f1 == pytest.approx(0.5)
    assert r.average_iou == pytest.approx(1.0)
    assert (r.per_class[0].tp, r.per_class[0].fp, r.per_class[0].ground_truth) == (2, 3, 3)
    assert r.images == 3 and r.detections == 5


def test_precision_envelope() -> None:
    # FP, TP, TP on 2 objects: raw precision 0, 1/2, 2/3; the envelope lifts rank 2 to 2/3.
    # AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3 (without the envelope it would be 1/2*1/2 + 1/2*2/3 = 7/12)
    assert average_precision([False, True, True], 2) == pytest.approx(2 / 3)
    # a missed object caps recall: TP only -> 1/2 * 1
    assert average_precision([True], 2) == pytest.approx(1 / 2)
    assert average_precision([], 3) == 0.0
    with pytest.raises(ValueError):
        average_precision([True], 0)


def test_score_ties_follow_the_valid_list_order() -> None:
    dets = [
        det("b", 0.5, (0, 0, 10, 10)),  # TP in image b
        det("a", 0.5, (0, 0, 10, 10)),  # FP in image a (nothing there), same score
    ]
    truth_a_first: dict[str, list[GroundTruth]] = {"a": [], "b": [gt((0, 0, 10, 10))]}
    truth_b_first: dict[str, list[GroundTruth]] = {"b": [gt((0, 0, 10, 10))], "a": []}
    # a first: FP then TP -> precision 1/2 at recall 1 -> AP 1/2
    assert compute_map(dets, truth_a_first, ["c"]).map == pytest.approx(0.5)
    # b first: TP then FP -> precision 1 at recall 1 -> AP 1
    assert compute_map(dets, truth_b_first, ["c"]).map == pytest.approx(1.0)
    # the order detections arrive in does not matter across images
    assert compute_map(dets[::-1], truth_a_first, ["c"]).map == pytest.approx(0.5)


def test_class_without_ground_truth_is_left_out_of_the_map() -> None:
    truth = {"im": [gt((0, 0, 10, 10), cls=0)]}
    dets = [
        det("im", 0.9, (0, 0, 10, 10), cls=0),  # TP, AP(a) = 1
        det("im", 0.8, (0, 0, 10, 10), cls=1),  # class b has no object anywhere: FP
    ]
    r = compute_map(dets, truth, ["a", "b"])
    assert r.per_class[1].ap is None
    assert r.per_class[1].ground_truth == 0 and r.per_class[1].fp == 1
    # mean over classes with ground truth only: (1) / 1, not (1 + 0) / 2
    assert r.map == pytest.approx(1.0)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0)
    event = r.to_map_result(iteration=500, weights="w_500.weights")
    assert [c.name for c in event.per_class] == ["a"]


def test_class_with_ground_truth_but_no_detection_counts_zero() -> None:
    truth = {"im": [gt((0, 0, 10, 10), cls=0), gt((20, 20, 30, 30), cls=1)]}
    r = compute_map([det("im", 0.9, (0, 0, 10, 10), cls=0)], truth, ["a", "b"])
    assert r.per_class[1].ap == 0.0 and r.per_class[1].detections == 0
    assert r.map == pytest.approx((1.0 + 0.0) / 2)
    assert r.fn == 1


def test_iou_exactly_at_the_threshold_is_a_miss() -> None:
    truth = {"im": [gt((0, 0, 10, 10))]}
    half = det("im", 0.9, (0, 0, 10, 5))  # overlap 50, union 100: IoU exactly 0.5
    assert iou(half, truth["im"][0]) == 0.5
    assert compute_map([half], truth, ["a"], iou_threshold=0.5).map == 0.0
    assert compute_map([half], truth, ["a"], iou_threshold=0.49).map == 1.0
    six = det("im", 0.9, (0, 0, 10, 6))  # IoU 60/100
    r = compute_map([six], truth, ["a"], iou_threshold=0.5)
    assert r.map == 1.0
    assert r.average_iou == pytest.approx(0.6)


def test_match_goes_to_the_best_overlap_even_when_taken() -> None:
    # Two neighbouring objects; the second detection overlaps the taken one best
    # (IoU 95/105) and the free one less (85/115 > 0.5): VOC and darknet call it a FP.
    truth = {"im": [gt((0, 0, 10, 10)), gt((2, 0, 12, 10))]}
    dets = [det("im", 0.9, (0, 0, 10, 10)), det("im", 0.8, (0.5, 0, 10.5, 10))]
    r = compute_map(dets, truth, ["a"])
    # TP FP on 2 objects: AP = 1/2 * 1
    assert r.map == pytest.approx(0.5)


def test_conf_threshold_counts_only_scores_above_it() -> None:
    truth = {"im": [gt((0, 0, 10, 10)), gt((20, 20, 30, 30))]}
    dets = [
        det("im", 0.9, (0, 0, 10, 10)),  # TP above
        det("im", 0.25, (20, 20, 30, 30)),  # TP, but not above 0.25
        det("im", 0.1, (50, 50, 60, 60)),  # FP below
    ]
    r = compute_map(dets, truth, ["a"])
    assert (r.tp, r.fp, r.fn) == (1, 0, 1)
    assert r.precision == 1.0 and r.recall == 0.5
    # AP uses every detection: TP TP FP -> 1/2*1 + 1/2*1
    assert r.map == pytest.approx(1.0)


def test_no_detection_above_threshold_has_no_precision() -> None:
    truth = {"im": [gt((0, 0, 10, 10))]}
    r = compute_map([det("im", 0.01, (0, 0, 10, 10))], truth, ["a"])
    assert r.precision is None and r.f1 is None and r.average_iou is None
    assert r.map == 1.0


def test_errors_in_input() -> None:
    with pytest.raises(ValueError, match="not in the valid list"):
        compute_map([det("zz", 0.5, (0, 0, 1, 1))], {"im": [gt((0, 0, 1, 1))]}, ["a"])
    with pytest.raises(ValueError, match="no ground-truth"):
        compute_map([], {"im": []}, ["a"])


def test_to_map_result() -> None:
    truth = {"im": [gt((0, 0, 10, 10))]}
    r = compute_map([det("im", 0.9, (0, 0, 10, 10))], truth, ["a"])
    event = r.to_map_result(iteration=300, weights="/w/tiny_300.weights", time=12.0)
    assert event.source == "supervisor"
    assert (event.iteration, event.map, event.valid) == (300, 1.0, True)
    assert (event.tp, event.fp, event.fn) == (1, 0, 0)
    assert event.iou_threshold == 0.5 and event.conf_thresh == 0.25
    assert event.per_class[0].ap == 1.0 and event.per_class[0].tp == 1
    assert event.weights == "/w/tiny_300.weights" and event.time == 12.0


def test_yolo_to_pixels() -> None:
    # centre (50, 25), size (20, 20) in a 100 x 50 image
    assert yolo_to_pixels(Box(1, 0.5, 0.5, 0.2, 0.4), 100, 50) == GroundTruth(1, 40, 15, 60, 35)


# --- darknet's files -----------------------------------------------------------------------------


def test_image_id() -> None:
    assert image_id("/data/valid/x.y.jpg") == "x"
    assert image_id("rel/000001.png") == "000001"
    assert image_id("C:\\d\\a.jpg") == "a"


def test_parse_detection_file(tmp_path: Path) -> None:
    f = tmp_path / "comp4_det_test_dog.txt"
    f.write_text("img1 0.912345 11.000000 21.000000 31.500000 41.000000\nmy img 0.5 1 1 5 5\n\n")
    # darknet writes 1-based pixels: subtract 1
    assert parse_detection_file(f, 3) == [
        Detection("img1", 3, 0.912345, 10.0, 20.0, 30.5, 40.0),
        Detection("my img", 3, 0.5, 0.0, 0.0, 4.0, 4.0),
    ]
    bad = tmp_path / "comp4_det_test_cat.txt"
    bad.write_text("img1 0.9 1 2 3 4\nimg2 0.9 1 2\n")
    with pytest.raises(EvaluationError, match=r"comp4_det_test_cat.txt:2: expected"):
        parse_detection_file(bad, 0)


async def test_clear_errors_before_running_darknet(tmp_path: Path) -> None:
    data = tmp_path / "x.data"
    data.write_text("classes=1\nnames=n.names\n")
    with pytest.raises(EvaluationError, match=r"x.data: no `valid=` line"):
        await evaluate_weights("darknet", data, "c", "w", work_dir=tmp_path / "w")
    (tmp_path / "n.names").write_text("a\na\n")
    (tmp_path / "v.txt").write_text("/d/one.jpg\n/e/one.png\n")
    data.write_text("classes=2\nnames=n.names\nvalid=v.txt\n")
    with pytest.raises(EvaluationError, match=r"n.names:2: name 'a' repeats line 1"):
        await evaluate_weights(
            "darknet", data, "c", "w", work_dir=tmp_path / "w", base_dir=tmp_path
        )
    (tmp_path / "n.names").write_text("a\nb\n")
    with pytest.raises(EvaluationError, match=r"v.txt:2: '/e/one.png' has the same name"):
        await evaluate_weights(
            "darknet", data, "c", "w", work_dir=tmp_path / "w", base_dir=tmp_path
        )


# --- real darknet ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(darknet_bin: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A short training (~40 s of CPU): data file, cfg, weights.

    Early on darknet's training pushes every objectness below `detector valid`'s 0.005 floor
    (100 iterations at 96 px left 0 or 1 detection); 200 iterations at 64 px with a short
    warm-up and a doubled rate cost about as much and leave hundreds."""
    root = tmp_path_factory.mktemp("evalrun")
    ds = make_shapes_dataset(root / "shapes", train=64, valid=16, seed=3)
    cfg = write_demo_cfg(
        root / "tiny.cfg", max_batches=200, size=64, burn_in=10, learning_rate=0.002
    )
    subprocess.run(
        ["stdbuf", "-oL", "-eL", darknet_bin, "detector", "train", str(ds.data), str(cfg)],
        cwd=root,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=300,
        check=True,
    )
    weights = ds.backup / "tiny_final.weights"
    assert weights.exists(), sorted(p.name for p in ds.backup.iterdir())
    return ds.data, cfg, weights


@pytest.mark.darknet
async def test_evaluate_weights_end_to_end(
    darknet_bin: str, trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, cfg, weights = trained
    work = tmp_path / "work"
    # two at once in one work dir: private results folders keep them apart
    r1, r2 = await asyncio.gather(
        evaluate_weights(darknet_bin, data, cfg, weights, iou_threshold=0.5, work_dir=work),
        evaluate_weights(darknet_bin, data, cfg, weights, iou_threshold=0.5, work_dir=work),
    )
    assert isinstance(r1, EvalResult)
    assert [c.name for c in r1.per_class] == ["circle", "square"]
    assert r1.images == 16
    assert r1.detections > 0  # darknet writes every box above 0.005
    assert 0.0 <= r1.map <= 1.0
    assert all(c.ground_truth > 0 and c.ap is not None for c in r1.per_class)
    assert r1.tp + r1.fn == sum(c.ground_truth for c in r1.per_class)
    # inference is deterministic: the same weights give the same numbers
    assert r1 == r2
    assert list(work.iterdir()) == []  # private folders removed after success
    event = r1.to_map_result(iteration=200, weights=str(weights))
    assert event.source == "supervisor" and len(event.per_class) == 2


@pytest.mark.darknet
async def test_evaluate_weights_reports_darknet_failure(
    darknet_bin: str,
    trained: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, cfg, _ = trained
    # pjreddie exits 0 after `Couldn't open file` (facts §5): must still be an error. A missing
    # file is refused before darknet runs (test_hostile_cli); here one that vanished after that
    # check (e.g. pruned meanwhile) reaches darknet.
    monkeypatch.setattr("supervisor.darknet.evaluate.check_weights_file", lambda w, c: None)
    with pytest.raises(EvaluationError, match=r"(?s)failed \(exit status 0\).*Couldn't open file"):
        await evaluate_weights(
            darknet_bin, data, cfg, tmp_path / "nope.weights", work_dir=tmp_path / "w"
        )


def test_evaluation_dies_with_a_killed_supervisor(tmp_path: Path) -> None:
    """A supervisor killed with SIGKILL must not leave its `detector valid` behind (its own
    session keeps it from Ctrl-C, so only the kernel's parent-death signal can end it)."""
    import subprocess
    import sys
    import time

    import psutil

    code = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from supervisor.darknet.evaluate import _run_valid\n"
        "print('ready', flush=True)\n"
        "asyncio.run(_run_valid(['sleep', '300'], Path(sys.argv[1]), None))\n"
    )
    sup = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert sup.stdout is not None and sup.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 20
        children: list[psutil.Process] = []
        while not children and time.monotonic() < deadline:
            children = psutil.Process(sup.pid).children()
            time.sleep(0.05)
        assert children, "the evaluation never started"
        sup.kill()
        sup.wait()
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"evaluation {alive[0].pid} outlived the killed supervisor"
    finally:
        if sup.poll() is None:
            sup.kill()
