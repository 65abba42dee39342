"""The supervisor's own mAP: VOC all-point AP from `darknet detector valid` (DESIGN decision 3).

Pure part (`compute_map`): per class, detections are sorted by descending score and matched
greedily, as darknet's `validate_detector_map` and the VOC devkit do: a detection goes to the
ground-truth box of its class in its image with the highest IoU; it is a true positive when that
IoU *exceeds* the threshold (strictly, like darknet and VOC: IoU exactly 0.5 at threshold 0.5 is
a miss) and that box is not taken yet, else a false positive (a second detection of one object
is a false positive). AP is the area under the precision envelope at every unique recall (the
"Area-Under-Curve for each unique Recall" darknet prints).

Choices and their reasons:
- A class without ground truth in the valid set has AP None and is left out of the mAP: its
  AP is undefined (recall has nothing to divide by). AlexeyAB counts it as 0 and divides by all
  classes, which caps the mAP of such a valid set at (k-1)/k whatever the model does, so a
  `target_map` could never be reached. Its detections still count as false positives.
- Equal scores: darknet and the devkit leave the order to an unstable sort, so their AP can
  change between runs. Here ties are ordered by the image's position in the valid list, then by
  the order darknet wrote them: the same files always give the same numbers.
- Precision, recall, TP/FP and mean IoU "at conf_thresh" count detections whose score exceeds
  it (darknet's `prob > thresh`). Mean IoU is over those true positives only; AlexeyAB's
  "average IoU" also averages zeros for its false positives, so it reads lower.

I/O part (`evaluate_weights`): runs `darknet detector valid` with a private results dir and
reads `comp4_det_test_<name>.txt` (facts §9) and the YOLO labels (`labels.label_path`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from supervisor.darknet.cfg import Cfg, CfgError, DataFile
from supervisor.darknet.command import valid_argv
from supervisor.darknet.labels import Box, label_path, read_yolo_labels
from supervisor.darknet.weights import (
    WeightsError,
    expected_weights_size,
    read_weights_header,
    weights_complete,
)
from supervisor.training.events import ClassAP, Flavour, MapResult

DEFAULT_CONF_THRESH = 0.25
RESULTS_PREFIX = "comp4_det_test_"


class EvaluationError(Exception):
    """An evaluation could not be done; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One detection in pixels of the original image (0-based, continuous coordinates)."""

    image_id: str
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One labelled object in pixels of its image (0-based, continuous coordinates)."""

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class ClassResult:
    """One class: AP over all detections; TP/FP at the conf threshold."""

    class_id: int
    name: str
    ap: float | None  # None: no ground truth in the valid set (left out of the mAP)
    ground_truth: int
    detections: int
    tp: int
    fp: int


@dataclass(frozen=True, slots=True)
class EvalResult:
    """An evaluation. mAP is the mean AP over classes with ground truth (module docstring)."""

    map: float
    iou_threshold: float
    conf_thresh: float
    per_class: tuple[ClassResult, ...]
    images: int
    detections: int
    tp: int
    fp: int
    fn: int
    precision: float | None  # None when no detection exceeds conf_thresh
    recall: float
    f1: float | None
    average_iou: float | None  # mean IoU of the true positives above conf_thresh
    notes: tuple[str, ...] = ()  # label problems met on the way (missing files, bad classes)

    def to_map_result(
        self,
        *,
        iteration: int | None = None,
        weights: str | None = None,
        time: float | None = None,
    ) -> MapResult:
        """The event the history and policy consume. Classes without ground truth are left
        out of `per_class`: `ClassAP.ap` is a number and theirs is undefined."""
        return MapResult(
            iteration=iteration,
            map=self.map,
            valid=math.isfinite(self.map),
            iou_threshold=self.iou_threshold,
            per_class=tuple(
                ClassAP(c.class_id, c.name, c.ap, tp=c.tp, fp=c.fp)
                for c in self.per_class
                if c.ap is not None
            ),
            precision=self.precision,
            recall=self.recall,
            f1=self.f1,
            average_iou=self.average_iou,
            tp=self.tp,
            fp=self.fp,
            fn=self.fn,
            conf_thresh=self.conf_thresh,
            source="supervisor",
            weights=weights,
            time=time,
        )


def iou(a: Detection | GroundTruth, b: Detection | GroundTruth) -> float:
    """Intersection over union of two boxes (0 when either has no area)."""
    iw = min(a.x2, b.x2) - max(a.x1, b.x1)
    ih = min(a.y2, b.y2) - max(a.y1, b.y1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def yolo_to_pixels(box: Box, width: int, height: int) -> GroundTruth:
    """A normalized YOLO box as pixel corners of a `width` × `height` image."""
    return GroundTruth(
        box.class_id,
        (box.cx - box.w / 2) * width,
        (box.cy - box.h / 2) * height,
        (box.cx + box.w / 2) * width,
        (box.cy + box.h / 2) * height,
    )


def average_precision(is_tp: Sequence[bool], n_ground_truth: int) -> float:
    """All-point AP of detections already ranked by score: area under the precision envelope,
    taken at every recall where a true positive adds to it."""
    if n_ground_truth <= 0:
        raise ValueError("AP needs at least one ground-truth box")
    precisions: list[float] = []
    tp_ranks: list[int] = []
    tp = 0
    for rank, hit in enumerate(is_tp):
        if hit:
            tp += 1
            tp_ranks.append(rank)
        precisions.append(tp / (rank + 1))
    # Envelope: the best precision at this recall or any higher one.
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = max(precisions[i], precisions[i + 1])
    # Each true positive raises recall by 1/n_ground_truth.
    return sum(precisions[r] for r in tp_ranks) / n_ground_truth


def compute_map(
    detections: Iterable[Detection],
    ground_truth: Mapping[str, Sequence[GroundTruth]],
    names: Sequence[str],
    *,
    iou_threshold: float = 0.5,
    conf_thresh: float = DEFAULT_CONF_THRESH,
    notes: Sequence[str] = (),
) -> EvalResult:
    """VOC AP per class and mAP. `ground_truth` has one entry per valid image, in valid-list
    order (that order breaks score ties); detections of images not in it are an error."""
    if not 0 < iou_threshold < 1:
        raise ValueError(f"IoU threshold {iou_threshold} is not in (0, 1): use e.g. 0.5")
    order = {img: i for i, img in enumerate(ground_truth)}
    by_class: list[list[tuple[float, int, int, Detection]]] = [[] for _ in names]
    count = 0
    for seq, det in enumerate(detections):
        if det.image_id not in order:
            raise ValueError(f"detection for image {det.image_id!r} that is not in the valid list")
        if not 0 <= det.class_id < len(names):
            raise ValueError(f"detection of class {det.class_id}, but there are {len(names)}")
        by_class[det.class_id].append((-det.score, order[det.image_id], seq, det))
        count += 1

    per_class: list[ClassResult] = []
    total_tp = total_fp = total_gt = 0
    tp_ious: list[float] = []
    for class_id, name in enumerate(names):
        ranked = [entry[3] for entry in sorted(by_class[class_id], key=lambda e: e[:3])]
        truths = {
            img: [g for g in boxes if g.class_id == class_id] for img, boxes in ground_truth.items()
        }
        n_gt = sum(len(t) for t in truths.values())
        taken: set[tuple[str, int]] = set()
        hits: list[bool] = []
        tp_at = fp_at = 0
        for det in ranked:
            best, best_iou = -1, 0.0
            for j, gt in enumerate(truths[det.image_id]):
                overlap = iou(det, gt)
                if overlap > best_iou:
                    best, best_iou = j, overlap
            hit = best >= 0 and best_iou > iou_threshold and (det.image_id, best) not in taken
            if hit:
                taken.add((det.image_id, best))
            hits.append(hit)
            if det.score > conf_thresh:
                if hit:
                    tp_at += 1
                    tp_ious.append(best_iou)
                else:
                    fp_at += 1
        ap = average_precision(hits, n_gt) if n_gt else None
        per_class.append(ClassResult(class_id, name, ap, n_gt, len(ranked), tp_at, fp_at))
        total_tp += tp_at
        total_fp += fp_at
        total_gt += n_gt

    aps = [c.ap for c in per_class if c.ap is not None]
    if not aps:
        raise ValueError("no ground-truth boxes in any valid image: mAP is undefined")
    precision = total_tp / (total_tp + total_fp) if total_tp + total_fp else None
    recall = total_tp / total_gt
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and precision + recall > 0
        else None
    )
    return EvalResult(
        map=sum(aps) / len(aps),
        iou_threshold=iou_threshold,
        conf_thresh=conf_thresh,
        per_class=tuple(per_class),
        images=len(ground_truth),
        detections=count,
        tp=total_tp,
        fp=total_fp,
        fn=total_gt - total_tp,
        precision=precision,
        recall=recall,
        f1=f1,
        average_iou=sum(tp_ious) / len(tp_ious) if tp_ious else None,
        notes=tuple(notes),
    )


# --- darknet's files --------------------------------------------------------------------------


def image_id(path: str) -> str:
    """The id `detector valid` writes for an image: its basename cut at the first `.`."""
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    return base.split(".", 1)[0]


def parse_detection_file(path: Path, class_id: int) -> list[Detection]:
    """Lines `<id> <score> <x1> <y1> <x2> <y2>` (1-based pixels: darknet adds 1 before it
    clips to the image) as 0-based detections of `class_id`."""
    out: list[Detection] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            # rsplit: an image name may contain spaces; the five numbers never do.
            fields = line.rstrip("\n").rsplit(maxsplit=5)
            try:
                score, x1, y1, x2, y2 = (float(v) for v in fields[1:])
                if len(fields) != 6:
                    raise ValueError
            except ValueError:
                raise EvaluationError(
                    f"{path}:{lineno}: expected `<image> <score> <x1> <y1> <x2> <y2>`, got "
                    f"{line.strip()!r} — the file is not darknet `detector valid` output"
                ) from None
            out.append(Detection(fields[0], class_id, score, x1 - 1, y1 - 1, x2 - 1, y2 - 1))
    return out


def read_data_file(path: Path) -> dict[str, str]:
    """`key = value` options of a darknet .data file, read as darknet reads them (`DataFile`)."""
    try:
        data = DataFile.load(path)
    except OSError as e:
        raise EvaluationError(f"cannot read the .data file {path}: {e.strerror}") from None
    except CfgError as e:
        raise EvaluationError(str(e)) from None
    options: dict[str, str] = {}
    for opt in data.options:
        options.setdefault(opt.key, opt.value)  # darknet uses the first of a repeated key
    return options


def _read_lines(path: Path, what: str, data: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise EvaluationError(
            f"cannot read the {what} file {path} (named in {data}): {e.strerror}"
        ) from None
    return [line.strip() for line in text.splitlines()]


@dataclass(frozen=True, slots=True)
class _ValidSet:
    names: tuple[str, ...]
    images: tuple[Path, ...]  # absolute
    entries: tuple[str, ...]  # as written in the valid list


def _load_valid_set(data: Path, options: Mapping[str, str], base_dir: Path) -> _ValidSet:
    for key in ("valid", "names"):
        if key not in options:
            raise EvaluationError(
                f"{data}: no `{key}=` line; the evaluation needs it (add `{key} = <path>`)"
            )
    names_file = base_dir / options["names"]
    names = _read_lines(names_file, "names", data)
    while names and not names[-1]:
        names.pop()
    classes = len(names)
    if "classes" in options:
        try:
            classes = int(options["classes"])
        except ValueError:
            raise EvaluationError(
                f"{data}: classes = {options['classes']!r} is not a whole number"
            ) from None
    if classes < 1 or len(names) < classes:
        raise EvaluationError(
            f"{data}: classes = {classes} but {names_file} has {len(names)} names; "
            "give one name per line for each class"
        )
    names = names[:classes]
    seen: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if name in seen:
            raise EvaluationError(
                f"{names_file}:{i}: name {name!r} repeats line {seen[name]}; darknet would write "
                "both classes into one results file — make the names unique"
            )
        seen[name] = i
    valid_file = base_dir / options["valid"]
    entries = [e for e in _read_lines(valid_file, "valid list", data) if e]
    if not entries:
        raise EvaluationError(f"{valid_file}: the valid list names no images")
    ids: dict[str, int] = {}
    for i, entry in enumerate(entries, 1):
        other = ids.setdefault(image_id(entry), i)
        if other != i:
            raise EvaluationError(
                f"{valid_file}:{i}: {entry!r} has the same name up to the first '.' as line "
                f"{other}; darknet names detections by that alone, so they cannot be told "
                "apart — rename one of the images"
            )
    return _ValidSet(tuple(names), tuple(base_dir / e for e in entries), tuple(entries))


def _load_ground_truth(
    valid: _ValidSet, base_dir: Path, flavour: Flavour
) -> tuple[dict[str, list[GroundTruth]], list[str]]:
    """Ground truth per image id in valid-list order, and notes on label problems."""
    truth: dict[str, list[GroundTruth]] = {}
    notes: list[str] = []
    for entry, image in zip(valid.entries, valid.images, strict=True):
        try:
            with Image.open(image) as im:  # reads the header only
                width, height = im.size
        except (OSError, ValueError) as e:
            raise EvaluationError(f"cannot read the size of valid image {image}: {e}") from None
        labels = base_dir / label_path(entry, flavour)
        boxes: list[GroundTruth] = []
        try:
            for box in read_yolo_labels(labels):
                if 0 <= box.class_id < len(valid.names):
                    boxes.append(yolo_to_pixels(box, width, height))
                else:
                    last = len(valid.names) - 1
                    notes.append(f"{labels}: class {box.class_id} is not in 0..{last}, ignored")
        except FileNotFoundError:
            notes.append(f"{labels}: label file missing (image {image} counted as negative)")
        except OSError as e:
            notes.append(f"{labels}: cannot read ({e.strerror}); image counted as negative")
        truth[image_id(entry)] = boxes
    return truth, notes


def read_detections(results_dir: Path, names: Sequence[str], ids: Iterable[str]) -> list[Detection]:
    """All `comp4_det_test_<name>.txt` files of one `detector valid` run."""
    known = set(ids)
    out: list[Detection] = []
    for class_id, name in enumerate(names):
        path = results_dir / f"{RESULTS_PREFIX}{name}.txt"
        if not path.is_file():
            raise EvaluationError(
                f"darknet wrote no {path.name} in {results_dir}: does the cfg's `classes=` match "
                "the names file?"
            )
        for det in parse_detection_file(path, class_id):
            if det.image_id not in known:
                raise EvaluationError(
                    f"{path}: detection for image {det.image_id!r}, which is not in the valid list"
                )
            out.append(det)
    return out


# --- running darknet --------------------------------------------------------------------------


def _tail(text: bytes, lines: int = 12) -> str:
    return "\n".join(text.decode("utf-8", "replace").splitlines()[-lines:])


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the kernel SIGKILL the child when the supervisor dies.

    The evaluation runs in its own session (below), so a supervisor killed with SIGKILL or by
    the OOM killer would leave a `detector valid` behind — holding GPU memory the relaunched
    training needs, or hanging for ever. Unlike the training (whose wrapper outlives the
    supervisor on purpose, to be re-adopted), nothing can adopt an evaluation: it is redone.
    Linux only (prctl); elsewhere the child is left as before.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)

    return preexec


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


async def _run_valid(argv: list[str], cwd: Path, timeout_s: float | None) -> tuple[int, bytes]:
    # Its own session: a Ctrl-C in the terminal (SIGINT to the foreground group) is a graceful
    # stop for the supervisor, and must not kill an evaluation half-way.
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,  # facts §5: some builds wait on stdin
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        # The kernel signals on the death of the *thread* that forked: this is the event
        # loop's, which lives as long as anything awaits this evaluation.
        preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except (TimeoutError, asyncio.CancelledError):
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out


def check_iou_threshold(value: float) -> None:
    """EvaluationError unless `value` is an IoU threshold a hit can pass: in (0, 1).

    A hit needs an IoU above the threshold and no IoU exceeds 1, so 1 scores every detection
    a miss and 0 counts any touching box; 50 is 50 % written as a percentage."""
    if not (isinstance(value, int | float) and 0 < value < 1):
        hint = f"; write {value / 100:g} for {value:g} %" if 1 < value <= 100 else ""
        raise EvaluationError(
            f"IoU threshold {value:g} is not in (0, 1): give a fraction, e.g. 0.5{hint}"
        )


def check_weights_file(weights: Path, cfg: Path) -> None:
    """EvaluationError for a weights file darknet would score as garbage: missing, not
    darknet weights, or shorter/longer than a complete save of `cfg`'s network.

    darknet's `load_weights` reads whatever the file holds and leaves the rest of the network
    at its initial values without a word, so a header-only file (20 or 84 bytes) scores an
    mAP of 0.00 % and looks like a real, bad result.
    """
    try:
        read_weights_header(weights)
        size = weights.stat().st_size
    except WeightsError as e:
        raise EvaluationError(str(e)) from None
    except OSError as e:
        raise EvaluationError(f"{weights}: cannot read the weights file ({e.strerror})") from None
    try:
        expected = expected_weights_size(Cfg.load(cfg))
    except CfgError as e:
        raise EvaluationError(str(e)) from None
    if weights_complete(weights, expected):
        return
    if expected is None:
        raise EvaluationError(
            f"{weights}: {size} bytes, only a weights header and no layer: the file was cut "
            "off or written by something else; use a complete save"
        )
    raise EvaluationError(
        f"{weights}: {size:,} bytes, but a complete save of {cfg.name}'s network is "
        f"{expected:,} bytes: the file is truncated (or still being written), or belongs to "
        "another cfg; use a complete save of this cfg"
    )


async def evaluate_weights(
    binary: str | Path,
    data: str | Path,
    cfg: str | Path,
    weights: str | Path,
    *,
    iou_threshold: float = 0.5,
    work_dir: str | Path,
    flavour: Flavour = "pjreddie",
    conf_thresh: float = DEFAULT_CONF_THRESH,
    base_dir: str | Path | None = None,
    timeout_s: float | None = None,
    gpu: int | None = None,
    cpu: bool = False,
) -> EvalResult:
    """Score `weights` on the .data file's valid list with `darknet detector valid`.

    Relative paths in the .data file and in the valid list are taken from `base_dir` (default:
    the current directory, where darknet itself would look). darknet runs in a private folder
    under `work_dir` with a .data copy whose `results=` points there and whose paths are
    absolute, so concurrent evaluations never share results files (facts §9: the folder must
    exist, else SIGSEGV). The folder is removed on success and kept, and named, on failure.
    """
    check_iou_threshold(iou_threshold)
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    data_path = base / data
    options = read_data_file(data_path)
    valid = _load_valid_set(data_path, options, base)
    check_weights_file(base / weights, base / cfg)

    Path(work_dir).mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix="eval-", dir=work_dir)).resolve()
    results = private / "results"
    results.mkdir()
    valid_copy = private / "valid.txt"
    valid_copy.write_text("".join(f"{p.resolve()}\n" for p in valid.images), encoding="utf-8")
    names_copy = private / "names.txt"
    names_copy.write_text("".join(f"{n}\n" for n in valid.names), encoding="utf-8")
    # `eval=coco`/`imagenet` would change the output format; voc (the default) is what is parsed.
    kept = {k: v for k, v in options.items() if k not in ("valid", "names", "results", "eval")}
    kept.update(valid=str(valid_copy), names=str(names_copy), results=str(results))
    data_copy = private / "eval.data"
    data_copy.write_text("".join(f"{k}={v}\n" for k, v in kept.items()), encoding="utf-8")

    argv = valid_argv(
        binary, data_copy, (base / cfg).resolve(), (base / weights).resolve(),
        flavour=flavour, gpu=gpu, cpu=cpu,
    )  # fmt: skip
    try:
        rc, output = await _run_valid(argv, private, timeout_s)
    except TimeoutError:
        raise EvaluationError(
            f"`darknet detector valid` ran longer than {timeout_s} s and was stopped "
            f"(work folder kept: {private})"
        ) from None
    except OSError as e:
        shutil.rmtree(private, ignore_errors=True)
        raise EvaluationError(f"cannot start darknet {binary}: {e.strerror}") from None
    except asyncio.CancelledError:
        shutil.rmtree(private, ignore_errors=True)
        raise
    (private / "valid.log").write_bytes(output)
    text = output.decode("utf-8", "replace")
    # pjreddie's file_error exits 0 (facts §5), so the exit status alone proves nothing; the
    # message may follow `Loading weights from …` on the same line.
    failed = "Couldn't open file" in text or "Cannot load image" in text
    if rc != 0 or failed:
        how = f"exit status {rc}" if rc >= 0 else f"signal {-rc}"
        raise EvaluationError(
            f"`{' '.join(argv)}` failed ({how}); last lines of its output:\n{_tail(output)}\n"
            f"(work folder kept: {private})"
        )
    # Opening every valid image (sizes) and scoring take seconds on a large valid set: in a
    # worker thread, since the daemon shares this event loop between jobs.
    truth, notes = await asyncio.to_thread(_load_ground_truth, valid, base, flavour)
    try:
        detections = await asyncio.to_thread(read_detections, results, valid.names, truth)
        result = await asyncio.to_thread(
            compute_map,
            detections,
            truth,
            valid.names,
            iou_threshold=iou_threshold,
            conf_thresh=conf_thresh,
            notes=notes,
        )
    except EvaluationError as e:
        raise EvaluationError(f"{e} (work folder kept: {private})") from None
    except ValueError as e:
        raise EvaluationError(
            f"{e}; label files are looked up the {flavour} way, e.g. "
            f"{base / label_path(valid.entries[0], flavour)} (work folder kept: {private})"
        ) from None
    shutil.rmtree(private, ignore_errors=True)
    return result
