"""Label files as darknet reads them: syntax (cached, per file) and box rules (per dataset).

darknet reads a label file with `fscanf(f, "%d %f %f %f %f")` in a loop (pjreddie
`read_boxes`, AlexeyAB the same): line breaks mean nothing to it. So one line with four or six
fields shifts every later box, a token that is not a number ends the reading (the rest of the
file is lost), and a UTF-8 byte-order mark at the start makes the first `%d` fail: the file
yields no boxes at all. The evaluator's tolerant reader (`darknet.labels.read_yolo_labels`)
hides all of this, which is why the check reads the files itself.
"""

from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

from supervisor.dataset.findings import Finding, finding
from supervisor.dataset.reading import read_bytes
from supervisor.training.events import Flavour

_INT = re.compile(r"[+-]?\d+")
# What `%f` accepts; Python's float() would also take "1_0", which darknet would not.
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_FLOAT = re.compile(rf"{_NUMBER}|[+-]?(?:nan|inf|infinity)", re.I)
# A well-formed row in one match (most rows): its groups are the five fields that `split`
# would give, so the field-by-field path below only sees the rows that need a finding.
_ROW = re.compile(rf"\s*([+-]?\d+)\s+({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s*")

EDGE_TOLERANCE = 0.01  # a box may overshoot the image by 1 % of its size (labelling tools do)
MIN_BOX_PX = 2.0  # smaller boxes hold nothing a detector can learn
DARKNET_MIN_WH = 0.001  # pjreddie's fill_truth_detection drops boxes with w or h below this
# darknet trains on at most `max=` boxes of an image (90 in pjreddie's [yolo], 200 in
# AlexeyAB's), drawn at random each time it loads the image; a label file of thousands of
# lines is a wrong file, not a dense scene. Reading only this many lines keeps a 1 M-line file
# from costing seconds and hundreds of MB in every check and in the cache.
MAX_LINES = 10_000
# Findings of one code in one file beyond this are summed up in one more finding.
MAX_PER_CODE = 20

Row = tuple[int, int, float, float, float, float]  # line, class id, cx, cy, w, h


class LabelFacts(NamedTuple):
    """A parsed label file: rows that read as five numbers, and the lines that do not."""

    rows: tuple[Row, ...]
    bad: tuple[tuple[int, str, str], ...]  # (line, code, the line's text)
    dups: tuple[tuple[int, int], ...]  # (line, line it repeats)
    bom: bool
    unread: int = 0  # lines after the first MAX_LINES, not checked


def inspect_label(path: str) -> LabelFacts:
    """Read one label file. Raises OSError only when it cannot be read."""
    return parse_label_bytes(read_bytes(path))


def parse_label_bytes(data: bytes) -> LabelFacts:
    bom = data.startswith(b"\xef\xbb\xbf")
    text = data[3:].decode("utf-8", "replace") if bom else data.decode("utf-8", "replace")
    rows: list[Row] = []
    bad: list[tuple[int, str, str]] = []
    dups: list[tuple[int, int]] = []
    seen: dict[tuple[int, float, float, float, float], int] = {}
    lines = text.split("\n", MAX_LINES)
    unread = 0
    if len(lines) > MAX_LINES:
        rest = lines.pop()
        unread = rest.count("\n") + (1 if rest and not rest.endswith("\n") else 0)
    for no, raw in enumerate(lines, start=1):
        match = _ROW.fullmatch(raw)
        if match is not None:
            fields: list[str] = list(match.groups())
        else:
            fields = raw.split()
            if not fields:
                continue
            problem = _syntax_problem(fields)
            if problem is not None:
                bad.append((no, problem, _cut(raw)))
                continue
        cx, cy, w, h = (float(t) for t in fields[1:])
        if not all(math.isfinite(v) for v in (cx, cy, w, h)):  # nan, inf, or 1e999
            bad.append((no, "label_not_a_number", _cut(raw)))
            continue
        key = (int(fields[0]), cx, cy, w, h)
        if key in seen:
            dups.append((no, seen[key]))
            continue
        seen[key] = no
        rows.append((no, *key))
    return LabelFacts(tuple(rows), tuple(bad), tuple(dups), bom, unread)


def _cut(raw: str) -> str:
    text = raw.strip()
    return text if len(text) <= 80 else text[:79] + "…"


# The image extensions each flavour's label rule turns into `.txt` (darknet.labels.label_path).
_REWRITTEN = {
    "pjreddie": (".jpg", ".png", ".JPG", ".JPEG"),
    "alexeyab": (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".bmp", ".BMP", ".ppm",
                 ".PPM", ".tiff", ".TIFF"),
}  # fmt: skip


def missing_label_advice(image: str, label: str, flavour: Flavour) -> tuple[str, str]:
    """(what is true, how to fix it) for an image whose label file darknet will not open.

    The plain "create the label file" is wrong advice in two cases: the label path exists but
    is a directory, and the flavour's rule kept the image's own extension (a `.bmp` under
    pjreddie: it looks for `labels/x.bmp`), where the fix is another image format.
    """
    effect = (
        "pjreddie darknet stops the whole training with exit status 0 when it draws the image"
        if flavour == "pjreddie"
        else f"{flavour} darknet skips the image's boxes and trains on it as a negative"
    )
    if os.path.isdir(label):
        return (
            f"darknet's label path for this image ({flavour} rule) is a directory, not a "
            f"file; {effect}",
            f"rename or move the directory {label}: darknet opens that exact path as the "
            "label file",
        )
    ext = os.path.splitext(image)[1]
    kept = flavour in _REWRITTEN and ext not in _REWRITTEN[flavour] and label.endswith(ext)
    if kept and ext:
        known = " ".join(_REWRITTEN[flavour])
        other = (
            "; AlexeyAB and hank-ai darknet map it to .txt"
            if flavour == "pjreddie" and ext.lower() in (".bmp", ".ppm", ".tiff", ".jpeg")
            else ""
        )
        return (
            f"{flavour} darknet turns only {known} into .txt, so for this {ext} image it "
            f"looks for labels at {label} (with the image's extension); {effect}",
            f"convert the image to .jpg or .png and list that file{other}",
        )
    return (
        f"no label file at this path (darknet's rule for {flavour}); {effect}",
        "create the label file (empty for an image without objects), or delete the image "
        "from the list",
    )


def _syntax_problem(fields: list[str]) -> str | None:
    """The finding code of a row `_ROW` did not match, or None when it still reads as a box."""
    if len(fields) != 5:
        return "label_columns"
    if not _INT.fullmatch(fields[0]):
        return "label_class_not_integer" if _FLOAT.fullmatch(fields[0]) else "label_columns"
    if not all(_FLOAT.fullmatch(t) for t in fields[1:]):
        return "label_not_a_number"
    return None


_SYNTAX_TEXT = {
    "label_columns": (
        "has {n} instead of 5 columns: {text!r}",
        "write `class x_center y_center width height`, one box per line; darknet reads the "
        "file as a stream of numbers, so this line shifts every box after it",
    ),
    "label_class_not_integer": (
        "class id is not a whole number: {text!r}",
        "write the class id as a whole number (0, 1, …); darknet reads `1.0` as class 1 and "
        "then `.0` as the x of the box, which shifts every later box",
    ),
    "label_not_a_number": (
        "a coordinate is not a finite number: {text!r}",
        "write four numbers between 0 and 1; darknet stops reading the file at the first "
        "token that is not a number and drops the rest",
    ),
}


def label_findings(
    facts: LabelFacts,
    label_file: str,
    classes: int | None,
    width: int,
    height: int,
    counts: list[int],
) -> list[Finding]:
    """Findings of one label file; adds each box of a valid class to `counts[class]`.

    `width`/`height` are the image's pixels (0 when unknown: then only darknet's own minimum
    box size applies).
    """
    out: list[Finding] = []
    if facts.bom:
        out.append(
            finding(
                "label_bom",
                label_file,
                1,
                "the file starts with a UTF-8 byte-order mark; darknet's fscanf stops at it and "
                "reads no box from this file",
                "save the file as UTF-8 without BOM (or ASCII)",
            )
        )
    for no, code, text in facts.bad:
        msg, fix = _SYNTAX_TEXT[code]
        out.append(finding(code, label_file, no, msg.format(n=len(text.split()), text=text), fix))
    for no, first in facts.dups:
        out.append(
            finding(
                "label_duplicate_row",
                label_file,
                no,
                f"repeats line {first} exactly; the box is trained twice as hard",
                f"delete line {no}",
            )
        )
    for row in facts.rows:
        out.extend(_row_findings(row, label_file, classes, width, height, counts))
    if facts.unread:
        out.append(
            finding(
                "label_too_many_rows",
                label_file,
                MAX_LINES + 1,
                f"the file goes on for {facts.unread:,} more lines after line {MAX_LINES:,}, "
                "which were not checked; darknet trains on at most `max=` boxes of an image "
                "(90 in pjreddie, 200 in AlexeyAB) and drops the others at random",
                "check that this is the label file of this image (one box per object); split "
                "a crowded scene into crops",
            )
        )
    return _capped(out)


def _capped(found: list[Finding]) -> list[Finding]:
    """At most MAX_PER_CODE findings of a code in one file, then one that counts the rest: a
    file of a million bad lines is one problem, not a million lines of report."""
    kept: list[Finding] = []
    extra: dict[str, list[Finding]] = {}
    seen: dict[str, int] = {}
    for f in found:
        seen[f.code] = seen.get(f.code, 0) + 1
        if seen[f.code] <= MAX_PER_CODE:
            kept.append(f)
        else:
            extra.setdefault(f.code, []).append(f)
    for code, rest in extra.items():
        first = rest[0]
        kept.append(
            finding(
                code,
                first.file,
                first.line,
                f"and {len(rest):,} more lines like this in this file (from line {first.line} "
                f"on; the first {MAX_PER_CODE} are listed): {first.message}",
                first.fix,
            )
        )
    return kept


def _row_findings(
    row: Row, label_file: str, classes: int | None, width: int, height: int, counts: list[int]
) -> list[Finding]:
    no, cls, cx, cy, w, h = row
    out: list[Finding] = []
    if classes is not None and not 0 <= cls < classes:
        out.append(
            finding(
                "label_class_out_of_range",
                label_file,
                no,
                f"class id {cls} is outside 0…{classes - 1} (classes={classes})",
                "check that the .names order matches the ids your labelling tool wrote, and "
                "that classes= counts every class",
            )
        )
    elif classes is not None:
        counts[cls] += 1
    geometry = _geometry(cx, cy, w, h, width, height)
    if geometry is not None:
        code, msg, fix = geometry
        out.append(finding(code, label_file, no, msg, fix))
    return out


def _geometry(
    cx: float, cy: float, w: float, h: float, width: int, height: int
) -> tuple[str, str, str] | None:
    t = EDGE_TOLERANCE
    tiny_px = width > 0 and height > 0 and (w * width < MIN_BOX_PX or h * height < MIN_BOX_PX)
    if (
        min(cx, cy, w, h) >= 0.0
        and max(cx, cy, w, h) <= 1.0
        and cx - w / 2 >= -t
        and cy - h / 2 >= -t
        and cx + w / 2 <= 1 + t
        and cy + h / 2 <= 1 + t
        and w >= DARKNET_MIN_WH
        and h >= DARKNET_MIN_WH
        and not tiny_px
    ):
        return None  # most boxes: none of the findings below, and no message formatted
    values = f"x={cx:g} y={cy:g} w={w:g} h={h:g}"
    if max(cx, cy, w, h) > 1.0 + 1e-6:
        return (
            "label_not_normalized",
            f"{values}: values above 1 look like pixels, YOLO labels are fractions of the image",
            "divide x and w by the image width and y and h by its height",
        )
    if min(cx, cy, w, h) < -1e-6:
        return (
            "label_negative",
            f"{values}: negative values",
            "re-export the labels; centre and size must lie between 0 and 1",
        )
    if cx - w / 2 < -t or cy - h / 2 < -t or cx + w / 2 > 1 + t or cy + h / 2 > 1 + t:
        return (
            "box_outside_image",
            f"{values}: the box reaches beyond the image edge (darknet clips it, so the "
            "trained box is not the one you drew)",
            "clip the box to the image: its edges cx±w/2 and cy±h/2 must lie in 0…1",
        )
    if w < DARKNET_MIN_WH or h < DARKNET_MIN_WH or tiny_px:
        px = f" ({w * width:.1f}×{h * height:.1f} px)" if width > 0 and height > 0 else ""
        return (
            "box_too_small",
            f"{values}: zero or near-zero box{px}; darknet ignores boxes under 0.1 % of the "
            "image and nothing smaller than 2 px can be learned",
            "delete the line or redraw the box",
        )
    return None
