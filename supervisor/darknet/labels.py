"""Where darknet looks for an image's label file, and a tolerant reader of YOLO label files.

`label_path` reproduces each flavour's string rewriting exactly, quirks included, because the
dataset check and the evaluator must read the file darknet itself reads (facts §4b):

- pjreddie (`fill_truth_detection`, Debian 2018 snapshot): `find_replace` of the *first*
  occurrence, anywhere in the path, of `images`, `JPEGImages`, `raw` (each by `labels`), then of
  `.jpg`, `.png`, `.JPG`, `.JPEG` (each by `.txt`). Verified on /usr/bin/darknet:
  `/tmp/dtest/drawings/myimages/a.jpg` → `/tmp/dtest/dlabelsings/mylabels/a.txt`, and `.jpeg`
  or `.bmp` images keep their own path (darknet then reads the image as its label file and sees
  no boxes). facts §4b omits `raw`; the binary has it.
- AlexeyAB (`replace_image_to_label`): only the COCO/VOC folders `/images/train2017/`,
  `/images/val2017/`, `/JPEGImages/`, `/images/train2014/`, `/images/val2014/` (and their
  backslash forms) become `labels`; leading/trailing blanks are trimmed; then an image extension
  is replaced only when its first occurrence is at the very end of the path.
- hank-ai (v3+, 2024 on): everything after the last `.` of the path becomes `.txt`. hank-ai v2
  still used AlexeyAB's rule; both agree for a label file next to an image with a usual extension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from supervisor.training.events import Flavour

_PJREDDIE_STEPS: tuple[tuple[str, str], ...] = (
    ("images", "labels"),
    ("JPEGImages", "labels"),
    ("raw", "labels"),
    (".jpg", ".txt"),
    (".png", ".txt"),
    (".JPG", ".txt"),
    (".JPEG", ".txt"),
)

_ALEXEYAB_FOLDERS: tuple[tuple[str, str], ...] = (
    ("/images/train2017/", "/labels/train2017/"),
    ("/images/val2017/", "/labels/val2017/"),
    ("/JPEGImages/", "/labels/"),
    ("\\images\\train2017\\", "\\labels\\train2017\\"),
    ("\\images\\val2017\\", "\\labels\\val2017\\"),
    ("\\images\\train2014\\", "\\labels\\train2014\\"),
    ("\\images\\val2014\\", "\\labels\\val2014\\"),
    ("/images/train2014/", "/labels/train2014/"),
    ("/images/val2014/", "/labels/val2014/"),
    ("\\JPEGImages\\", "\\labels\\"),
)

_ALEXEYAB_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG",
    ".bmp", ".BMP", ".ppm", ".PPM", ".tiff", ".TIFF",
)  # fmt: skip


def _find_replace(text: str, orig: str, rep: str) -> str:
    """darknet's `find_replace`: the first occurrence only, wherever it is."""
    return text.replace(orig, rep, 1)


def _find_replace_extension(text: str, orig: str, rep: str) -> str:
    """AlexeyAB's `find_replace_extension`: replaces only when the *first* occurrence ends the
    string, so `a.jpg.d/b.jpg` is left alone (darknet then warns it cannot infer the name)."""
    at = text.find(orig)
    if at < 0 or at + len(orig) != len(text):
        return text
    return text[:at] + rep


def label_path(image_path: str, flavour: Flavour) -> str:
    """The label file path darknet of `flavour` opens for `image_path` (same string form)."""
    if flavour == "pjreddie":
        out = image_path
        for orig, rep in _PJREDDIE_STEPS:
            out = out.replace(orig, rep, 1)  # `_find_replace`, inlined: once per listed image
        return out
    if flavour == "alexeyab":
        out = image_path
        for orig, rep in _ALEXEYAB_FOLDERS:
            out = _find_replace(out, orig, rep)
        out = out.strip(" \t")
        for ext in _ALEXEYAB_EXTENSIONS:
            out = _find_replace_extension(out, ext, ".txt")
        return out
    if flavour == "hankai":
        dot = image_path.rfind(".")
        return (image_path[:dot] if dot >= 0 else image_path) + ".txt"
    raise ValueError(f"unknown darknet flavour {flavour!r}: use pjreddie, alexeyab or hankai")


@dataclass(frozen=True, slots=True)
class Box:
    """One YOLO label: class id and centre/size normalized to the image (fractions of w, h)."""

    class_id: int
    cx: float
    cy: float
    w: float
    h: float


def read_yolo_labels(path: str | Path) -> list[Box]:
    """Boxes of a YOLO label file, read tolerantly for the evaluator.

    Blank lines, lines with fewer than five fields, or fields that are not finite numbers are
    skipped (the dataset checker reports them; an evaluation should still score the rest). A missing
    file raises `FileNotFoundError`, because a missing label is not the same as a negative image.
    """
    boxes: list[Box] = []
    # utf-8-sig: label files written on Windows often start with a BOM.
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5:
                continue
            try:
                class_id = int(fields[0])
                cx, cy, w, h = (float(v) for v in fields[1:5])
            except ValueError:
                continue
            if not all(math.isfinite(v) for v in (cx, cy, w, h)):
                continue
            boxes.append(Box(class_id, cx, cy, w, h))
    return boxes
