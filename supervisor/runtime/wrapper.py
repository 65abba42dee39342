"""The tiny process that owns one darknet launch (DESIGN "Decisions" 1).

Started in its own session by `launch.start`, it appends a marker line to `darknet.log`, runs
`stdbuf -oL -eL <darknet> …` with stdin `/dev/null` (old AlexeyAB waits on `getchar()` after a
cuDNN error — facts §5) and stdout+stderr appended to `darknet.log`, waits for it, and records
how it ended in `exit.json`. Whoever reads the job dir later, the same supervisor or a restarted
one, learns the exit without being darknet's parent.

Run as `python -m supervisor.runtime.wrapper --log L --exit E --cwd D --launch N -- argv…`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from supervisor.atomicio import write_json_atomic
from supervisor.darknet.logparse import launch_marker


def record_exit(path: Path, entry: dict[str, Any]) -> None:
    """Append this launch's end to exit.json atomically (a list, one entry per launch)."""
    launches: list[dict[str, Any]] = []
    if path.exists():
        try:
            data = json.loads(path.read_text())
            launches = list(data.get("launches", []))
        except (OSError, ValueError):
            launches = []
    launches.append(entry)
    # fsync: this record is how a restarted supervisor learns the launch ended at all.
    write_json_atomic(path, {"launches": launches}, fsync=True)


def main(args: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trainsup-wrapper")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("--exit", dest="exit_path", type=Path, required=True)
    p.add_argument("--cwd", type=Path, required=True)
    p.add_argument("--launch", type=int, default=1)
    p.add_argument("argv", nargs="+")
    ns = p.parse_args(args)

    # TERM/INT go to the whole process group; the wrapper must outlive darknet to record its
    # end. A handler (not SIG_IGN) is used because an ignored disposition survives exec and
    # darknet would then ignore the stop too.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)

    argv = list(ns.argv)
    stdbuf = shutil.which("stdbuf")
    # pjreddie block-buffers stdout (facts §1): line buffering keeps saves and iterations in order.
    full = [stdbuf, "-oL", "-eL", *argv] if stdbuf else argv
    started = time.time()
    with ns.log.open("ab") as log:
        log.write(launch_marker(ns.launch, argv, started).encode())
        log.flush()
        try:
            child = subprocess.Popen(
                full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ns.cwd
            )
        except OSError as e:
            log.write(f"[trainsup] could not start {argv[0]}: {e}\n".encode())
            record_exit(
                ns.exit_path,
                {
                    "launch": ns.launch,
                    "started": started,
                    "ended": time.time(),
                    "returncode": None,
                    "signal": None,
                    "error": str(e),
                },
            )
            return 127
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
                continue
    entry: dict[str, Any] = {
        "launch": ns.launch,
        "pid": child.pid,
        "started": started,
        "ended": time.time(),
        "returncode": rc if rc >= 0 else None,
        "signal": signal.Signals(-rc).name if rc < 0 else None,
    }
    record_exit(ns.exit_path, entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
