"""Follow darknet.log from a byte offset, whole lines only.

darknet's writes can split a line (facts §1: pjreddie's block-buffered stdout arrives in 4 KB
pieces), so a trailing piece without a line end stays unread until the rest arrives; the offset
always points after the last whole line handed out, so a restarted supervisor resumes exactly
there. `\\r` ends a line as `\\n` does: hank-ai redraws progress lines with `\\r` only, and
a log of those would otherwise never yield a line. A stretch of more than `max_line` bytes
without any line end is handed out as one (cut) line rather than waited on forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")


def split_lines(data: bytes) -> tuple[list[str], int]:
    """The whole lines in `data` (decoded leniently, line ends stripped) and the number of
    bytes they span. A trailing `\\r` is not consumed: it may be the first half of `\\r\\n`."""
    lines: list[str] = []
    start = 0
    for m in _LINE_END.finditer(data):
        if m.group() == b"\r" and m.end() == len(data):
            break
        lines.append(data[start : m.start()].decode("utf-8", errors="replace"))
        start = m.end()
    return lines, start


def read_lines_until(path: Path, end: int) -> Iterator[str]:
    """The whole lines in the first `end` bytes of `path` (a checkpointed offset always ends a
    line), read in pieces: a log of gigabytes is never in memory at once."""
    with path.open("rb") as f:
        buf = b""
        left = end
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            buf += data
            lines, used = split_lines(buf)
            yield from lines
            buf = buf[used:]
        if buf:
            yield buf.decode("utf-8", errors="replace").rstrip("\r")


class LogTail:
    """Reads new whole lines of `path`.

    Attributes:
        path: the log file (may not exist yet).
        offset: byte offset just after the last whole line returned.
        max_line: longest line waited for; longer stretches come out in pieces of this size.
    """

    def __init__(self, path: Path, offset: int = 0, max_line: int = CHUNK) -> None:
        self.path = path
        self.offset = offset
        self.max_line = max_line

    def read_lines(self) -> list[str]:
        """The whole lines written since the last call (at most about 1 MiB of them)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(self.max_line)
        except FileNotFoundError:
            return []
        lines, used = split_lines(data)
        if used == 0 and len(data) >= self.max_line:
            # No line end in a whole buffer: not a line darknet will finish; hand it out cut.
            lines, used = [data[: self.max_line].decode("utf-8", errors="replace")], self.max_line
        self.offset += used
        return lines

    def rest(self) -> str:
        """An unterminated last line (after the writer ended), consumed."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        return data.decode("utf-8", errors="replace").rstrip("\r")
