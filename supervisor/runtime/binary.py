"""Find the darknet executable and tell which flavour it is, before it runs.

The flavour decides the argv (facts §8: AlexeyAB flags shift pjreddie's positional arguments),
so it must be known before the first launch. Running the binary to ask is unreliable (CPU
hank-ai builds wait on stdin; pjreddie has no version flag), but the flags each flavour parses
are string constants inside the executable or its libdarknet: reading them is cheap and safe.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from supervisor.training.events import Flavour

# Strings only that flavour contains (its flag names and banners).
_HANKAI = (b"Darknet/YOLO", b"hank.ai", b"-nocolour")
_ALEXEYAB = (b"dont_show", b"mjpeg_port", b"calc_map_for_each")
_CHUNK = 1 << 20


class BinaryError(Exception):
    """The darknet binary cannot be used; the message says what to do."""


def resolve_binary(binary: str) -> str:
    """An absolute path to an executable: `binary` itself if it is a path, else from PATH."""
    if os.sep in binary:
        p = Path(binary).expanduser()
        if not p.is_file():
            raise BinaryError(f"darknet binary {binary} does not exist; fix darknet.binary")
        if not os.access(p, os.X_OK):
            raise BinaryError(f"darknet binary {binary} is not executable (chmod +x it)")
        return str(p.absolute())
    found = shutil.which(binary)
    if found is None:
        raise BinaryError(
            f"`{binary}` is not on PATH; install darknet (`apt-get install darknet` gives the "
            "pjreddie flavour) or set darknet.binary to the executable's path"
        )
    return found


def _scan(path: Path, needles: tuple[bytes, ...]) -> bool:
    keep = max(len(n) for n in needles)
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            window = tail + chunk
            if any(n in window for n in needles):
                return True
            tail = window[-keep:]
    return False


def _linked_darknet_libs(binary: Path) -> list[Path]:
    """libdarknet.so files next to the binary or in ../lib (where builds put them)."""
    out: list[Path] = []
    for d in (binary.parent, binary.parent.parent / "lib", binary.parent.parent / "lib64"):
        if d.is_dir():
            out += [p for p in d.iterdir() if re.match(r"lib.*darknet.*\.so", p.name)]
    return out


def detect_flavour(binary: str) -> Flavour:
    """pjreddie unless the executable (or its libdarknet) carries AlexeyAB's or hank-ai's flags."""
    path = Path(binary)
    files = [path, *_linked_darknet_libs(path)]
    try:
        if any(_scan(f, _HANKAI) for f in files):
            return "hankai"
        if any(_scan(f, _ALEXEYAB) for f in files):
            return "alexeyab"
    except OSError as e:
        raise BinaryError(
            f"cannot read {binary} to detect its flavour: {e.strerror}; "
            "set darknet.flavour explicitly"
        ) from None
    return "pjreddie"
