"""Start, recognise and stop one darknet launch (through `wrapper`), independent of who started it.

A launch is identified by the wrapper's pid *and* its process start time: a pid alone can be
reused by an unrelated process after a reboot or a long time, and signalling that would be a bug.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil


@dataclass(frozen=True, slots=True)
class LaunchHandle:
    """Enough to find the launch again: pid and start time of the wrapper (its group leader)."""

    number: int
    pid: int
    create_time: float
    argv: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LaunchHandle:
        return cls(int(d["number"]), int(d["pid"]), float(d["create_time"]), tuple(d["argv"]))

    def process(self) -> psutil.Process | None:
        """The wrapper process if it is still this launch's, else None."""
        try:
            p = psutil.Process(self.pid)
            if abs(p.create_time() - self.create_time) > 1.0:
                return None
            if p.status() == psutil.STATUS_ZOMBIE:
                return None
            return p
        except psutil.Error:
            return None

    @property
    def alive(self) -> bool:
        return self.process() is not None

    def signal_group(self, sig: signal.Signals) -> bool:
        """Signal darknet and the wrapper (one process group: the wrapper's own session)."""
        if self.process() is None:
            return False
        try:
            os.killpg(self.pid, sig)
            return True
        except ProcessLookupError:
            return False


def start(
    argv: list[str], *, number: int, log: Path, exit_path: Path, cwd: Path
) -> tuple[LaunchHandle, subprocess.Popen[bytes]]:
    """Start the wrapper in a new session; it runs `argv` (a list: never a shell)."""
    cmd = [
        sys.executable, "-m", "supervisor.runtime.wrapper",
        "--log", str(log), "--exit", str(exit_path), "--cwd", str(cwd),
        "--launch", str(number), "--", *argv,
    ]  # fmt: skip
    # The wrapper's own complaints (bad arguments, a crash) land in darknet.log too.
    with log.open("ab") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        created = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        created = 0.0
    return LaunchHandle(number, proc.pid, created, tuple(argv)), proc


def read_exit(exit_path: Path, number: int) -> dict[str, Any] | None:
    """The wrapper's record of how launch `number` ended, if it wrote one."""
    try:
        data = json.loads(exit_path.read_text())
    except (OSError, ValueError):
        return None
    for entry in data.get("launches", []):
        if entry.get("launch") == number:
            return dict(entry)
    return None


async def wait_gone(handle: LaunchHandle, timeout: float, poll: float = 0.1) -> bool:
    """Wait until the launch's wrapper has exited; False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while handle.alive:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def terminate(handle: LaunchHandle, grace: float = 10.0) -> str:
    """TERM the group, KILL after `grace` seconds. Returns what it took: 'term' or 'kill'."""
    handle.signal_group(signal.SIGTERM)
    if await wait_gone(handle, grace):
        return "term"
    handle.signal_group(signal.SIGKILL)
    await wait_gone(handle, 5.0)
    return "kill"
