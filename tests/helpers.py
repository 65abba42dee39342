"""Small builders shared by several test modules."""

from __future__ import annotations

import struct
from pathlib import Path


def write_weights(path: Path, seen: int, *, version: tuple[int, int, int] = (0, 2, 0),
                  body: int = 64) -> Path:  # fmt: skip
    """A darknet weights file: header with `seen`, then `body` zero bytes."""
    major, minor, revision = version
    fmt = "<iiiQ" if major * 10 + minor >= 2 else "<iiiI"
    path.write_bytes(struct.pack(fmt, major, minor, revision, seen) + b"\0" * body)
    return path
