"""Findings about single list entries: each image and its label file, once per distinct path.

Also the dataset-wide image notes (sizes, grayscale) that need every image's facts.
"""

from __future__ import annotations

from dataclasses import replace

from supervisor.dataset.findings import Finding, finding
from supervisor.dataset.images import ImageFacts
from supervisor.dataset.labels_check import missing_label_advice
from supervisor.dataset.lists import Entry
from supervisor.dataset.scan import ScanResult, Unreadable
from supervisor.training.events import Flavour

MIN_SIDE = 32  # smaller images are mostly upsampling noise at any YOLO input size
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F", "P;L"})


def entry_findings(entries: list[Entry], scanned: ScanResult, flavour: Flavour) -> list[Finding]:
    """Per image and per label file, each reported once however often it is listed."""
    out: list[Finding] = []
    done: set[str] = set()
    for e in entries:
        if not e.image:
            out.append(
                finding(
                    "image_missing",
                    e.list_file,
                    e.line,
                    "blank line: darknet reads it as an image path and finds no image (and no "
                    "label file)",
                    f"delete line {e.line}",
                )
            )
            continue
        if e.image in done:
            continue
        done.add(e.image)
        facts = scanned.images.get(e.image)
        out.extend(_image_findings(e, facts))
        if facts is None:
            continue
        if e.label_is_image:
            out.append(
                finding(
                    "label_path_is_image",
                    e.image,
                    None,
                    f"{flavour} darknet looks for this image's labels at the image path itself "
                    "(it only rewrites the usual extensions), reads the image bytes as labels "
                    "and finds no box",
                    "convert the image to .jpg or .png and list that file",
                )
            )
        elif e.label is not None and scanned.labels.get(e.label) is None:
            out.append(_label_missing(e, flavour))
        elif isinstance(scanned.labels.get(e.label or ""), Unreadable):
            why = scanned.labels[e.label or ""]
            assert isinstance(why, Unreadable)
            out.append(
                finding(
                    "label_missing",
                    e.label,
                    None,
                    f"the label file of {e.written} cannot be read ({why.reason})",
                    "fix the file's permissions",
                )
            )
    return out


def _image_findings(e: Entry, facts: ImageFacts | Unreadable | None) -> list[Finding]:
    if facts is None:
        return [
            finding(
                "image_missing",
                e.list_file,
                e.line,
                f"{e.written}: no such file"
                + (f" (resolved to {e.image})" if e.written != e.image else ""),
                "fix the path in the list, or delete the line",
            )
        ]
    if isinstance(facts, Unreadable):
        return [
            finding(
                "image_corrupt",
                e.image,
                None,
                f"cannot be read ({facts.reason})",
                "fix the file's permissions, or delete it from the list",
            )
        ]
    problem = {
        "empty": ("image_empty", "the file is empty (0 bytes)", "delete it from the list"),
        "corrupt": (
            "image_corrupt",
            f"cannot be decoded ({facts.detail})",
            "re-export the image, or delete it from the list",
        ),
        "truncated": (
            "jpeg_truncated",
            "the JPEG ends before its end-of-image marker (cut off during a copy or upload); "
            "darknet fills the missing part with grey and trains on it",
            "copy the original again, or delete it from the list",
        ),
        "too_large": (
            "image_too_large",
            f"{facts.width}×{facts.height} pixels is too large to decode safely ({facts.detail})",
            "downscale it; darknet resizes every image to the network size anyway",
        ),
    }.get(facts.problem or "")
    if problem is not None:
        return [finding(problem[0], e.image, None, problem[1], problem[2])]
    out = []
    if min(facts.width, facts.height) < MIN_SIDE:
        out.append(
            finding(
                "image_too_small",
                e.image,
                None,
                f"{facts.width}×{facts.height} pixels; darknet upscales it to the network size "
                "and the objects become blur",
                f"use images of at least {MIN_SIDE} px per side, or drop this one",
            )
        )
    if facts.mode == "CMYK":
        out.append(
            finding(
                "image_cmyk",
                e.image,
                None,
                "CMYK JPEG (print colours); some loaders refuse it or invert its colours",
                "convert it to RGB, e.g. with Pillow: Image.open(p).convert('RGB').save(p)",
            )
        )
    return out


def _label_missing(e: Entry, flavour: Flavour) -> Finding:
    # The advice depends on why darknet will not open it: absent, a directory, or a path that
    # kept the image's extension (a .bmp under pjreddie) — "create the file" fits only the first.
    what, fix = missing_label_advice(e.image or "", e.label or "", flavour)
    f = finding("label_missing", e.label, None, f"{e.written}: {what}", fix)
    # The one code whose severity depends on the flavour (issue 4): pjreddie ends the whole
    # training, AlexeyAB/hank-ai only lose the image's boxes (a silent negative).
    return f if flavour == "pjreddie" else replace(f, severity="warning")


def image_set_findings(
    inspected: dict[str, ImageFacts], sizes: tuple[tuple[int, int, int], ...]
) -> list[Finding]:
    out: list[Finding] = []
    if len(sizes) > 1:
        shown = ", ".join(f"{w}×{h} ({n})" for w, h, n in sizes[:5])
        more = f" and {len(sizes) - 5} more sizes" if len(sizes) > 5 else ""
        out.append(
            finding(
                "mixed_resolutions",
                None,
                None,
                f"images come in {len(sizes)} sizes: {shown}{more}; mixed sources often differ "
                "in more than size",
                "nothing to do if intended; otherwise check the odd sizes come from the same "
                "camera/export as the rest",
            )
        )
    ok = [(p, f) for p, f in inspected.items() if f.problem is None]
    gray = [p for p, f in ok if f.mode in _GRAY_MODES]
    if gray and len(gray) == len(ok):
        out.append(
            finding(
                "image_grayscale",
                None,
                None,
                f"all {len(ok)} images are grayscale; darknet loads them as three equal channels",
                "nothing to do; use grayscale images in deployment too",
            )
        )
    else:
        out.extend(
            finding(
                "image_grayscale",
                p,
                None,
                "grayscale image in a colour dataset (a different camera or export?)",
                "nothing to do if intended; darknet loads it as three equal channels",
            )
            for p in gray
        )
    return out
