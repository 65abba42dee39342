"""Small builders shared by several test modules."""

from __future__ import annotations

import struct
from pathlib import Path

from PIL import Image


def write_weights(path: Path, seen: int, *, version: tuple[int, int, int] = (0, 2, 0),
                  body: int = 64) -> Path:  # fmt: skip
    """A darknet weights file: header with `seen`, then `body` zero bytes."""
    major, minor, revision = version
    fmt = "<iiiQ" if major * 10 + minor >= 2 else "<iiiI"
    path.write_bytes(struct.pack(fmt, major, minor, revision, seen) + b"\0" * body)
    return path


def box_dataset(root: Path) -> Path:
    """Eight 96×96 pictures with one centred box each, labels beside them (no `images` in the
    path, so every flavour looks there), listed in train.txt: the .data file (backup=backup)."""
    pics = root / "pics"
    pics.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (96, 96), (20 * i, 90, 160)).save(pics / f"{i}.jpg")
        (pics / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    (root / "train.txt").write_text("".join(f"{pics / f'{i}.jpg'}\n" for i in range(8)))
    (root / "obj.names").write_text("box\n")
    data = root / "obj.data"
    data.write_text("classes=1\ntrain=train.txt\nnames=obj.names\nbackup=backup\n")
    return data
