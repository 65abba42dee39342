"""Image lists (`train=`/`valid=` files): one image path per line, read the way darknet does.

pjreddie's `get_paths` keeps each line as it is apart from the `\\n`: a trailing `\\r` (a list
written on Windows) or a blank line becomes part of / a whole image path. AlexeyAB and hank-ai
also drop the `\\r`. Relative paths are resolved by darknet against its working directory,
which under trainsup is the job's `run/` folder, so the check resolves them against the
`.data` file's folder (where trainsup resolves `train=`/`valid=` too) and warns.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from supervisor.darknet.labels import label_path
from supervisor.dataset.findings import Finding, finding
from supervisor.training.events import Flavour


class Entry(NamedTuple):  # a tuple: a list of 100 000 is built and read on every check
    """One line of an image list."""

    split: str  # "train" | "valid"
    list_file: str
    line: int
    written: str  # the path as written in the list (without line end)
    image: str  # absolute, normalised path of the image ("" for a blank line)
    label: str | None  # absolute path of the label file darknet opens; None: not applicable
    label_is_image: bool  # darknet's rule maps the image onto itself (e.g. `.bmp` in pjreddie)


def _resolve(base: Path, path: str) -> str:
    """`normpath(join(base, path))`; an absolute path that normpath would not change skips it
    (normpath is pure Python: a third of the time to read a list of absolute paths)."""
    if path.startswith("/") and "//" not in path and "/." not in path and path[-1] != "/":
        return path
    return os.path.normpath(os.path.join(base, path))


def read_list(
    list_file: Path, split: str, base: Path, flavour: Flavour
) -> tuple[list[Entry], list[Finding]]:
    """Entries of one list, and findings about the list as a whole (CRLF, relative paths)."""
    raw = list_file.read_bytes().decode("utf-8", "surrogateescape")
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    entries: list[Entry] = []
    findings: list[Finding] = []
    crlf_first: int | None = None
    relative: list[int] = []
    for no, text in enumerate(lines, start=1):
        if text.endswith("\r"):
            text = text[:-1]
            if crlf_first is None:
                crlf_first = no
        if not text:
            entries.append(Entry(split, str(list_file), no, "", "", None, False))
            continue
        written = text
        if not os.path.isabs(written):
            relative.append(no)
        image = _resolve(base, written)
        lbl_written = label_path(written, flavour)
        label_is_image = lbl_written == written
        label = None if label_is_image else _resolve(base, lbl_written)
        entries.append(Entry(split, str(list_file), no, written, image, label, label_is_image))
    if crlf_first is not None and flavour == "pjreddie":
        findings.append(
            finding(
                "list_crlf",
                str(list_file),
                crlf_first,
                "lines end in CR LF (written on Windows); pjreddie darknet keeps the CR as part "
                "of each path and finds no image",
                f"convert the file to Unix line ends: sed -i 's/\\r$//' {list_file}",
            )
        )
    if relative:
        more = f" and {len(relative) - 1} more lines" if len(relative) > 1 else ""
        findings.append(
            finding(
                "image_path_relative",
                str(list_file),
                relative[0],
                f"relative image path{more}; darknet resolves them against its working "
                f"directory (the job's run/ folder under trainsup), the check against {base}",
                "write absolute image paths in the list",
            )
        )
    return entries, findings
