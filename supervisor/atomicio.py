"""Files that a crash must never leave half-written: write a temp file beside, then rename.

`os.replace` within one folder is atomic on POSIX: a reader (a restarted supervisor, the
daemon, a user's `cat`) sees the old content or the new, never a mix. Imports nothing of the
package, so every layer may use it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["json_safe", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


def write_bytes_atomic(target: Path, data: bytes, *, fsync: bool = False) -> None:
    """Replace `target` with `data` atomically (`fsync` too where a power cut must not lose
    it: the write is on disk before the rename makes it visible)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(target: Path, text: str, *, fsync: bool = False) -> None:
    # surrogateescape: any byte read with it round-trips (cfg files with odd bytes in comments).
    write_bytes_atomic(target, text.encode("utf-8", "surrogateescape"), fsync=fsync)


def write_json_atomic(target: Path, obj: Any, *, fsync: bool = False) -> None:
    write_text_atomic(target, json.dumps(obj, indent=2, allow_nan=False) + "\n", fsync=fsync)


def json_safe(o: object) -> Any:
    """JSON-safe: NaN/inf become null (JSON has none), paths and tuples plain values."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, list | tuple | set):
        return [json_safe(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    return o
