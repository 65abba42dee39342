"""Follow darknet.log from a byte offset, whole lines only.

darknet's writes can split a line (facts §1: pjreddie's block-buffered stdout arrives in 4 KB
pieces), so a trailing piece without a newline stays unread until the rest arrives; the offset
always points after the last whole line handed out, so a restarted supervisor resumes exactly
there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

CHUNK = 1 << 20


class LogTail:
    """Reads new whole lines of `path`.

    Attributes:
        path: the log file (may not exist yet).
        offset: byte offset just after the last whole line returned.
        poll: seconds between looks when nothing new arrived.
    """

    def __init__(self, path: Path, offset: int = 0, poll: float = 0.2) -> None:
        self.path = path
        self.offset = offset
        self.poll = poll

    def read_lines(self) -> list[str]:
        """The whole lines written since the last call (decoded leniently, newline stripped)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read(CHUNK)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return data[:end].decode("utf-8", errors="replace").split("\n")

    def rest(self) -> str:
        """An unterminated last line (after the writer ended), consumed."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return ""
        self.offset += len(data)
        return data.decode("utf-8", errors="replace")

    async def follow(self) -> AsyncIterator[list[str]]:
        """Batches of new lines, forever; the caller stops iterating when it is done."""
        while True:
            lines = self.read_lines()
            if lines:
                yield lines
                if len(lines) > 1000:
                    continue  # more is likely waiting: don't sleep
            await asyncio.sleep(self.poll)
