"""The wrapper, launch handles and the log tail, with scripted stand-ins for darknet."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from supervisor.darknet.logparse import LAUNCH_MARKER as MARKER
from supervisor.runtime import launch
from supervisor.runtime.tail import LogTail


def script(tmp_path: Path, body: str) -> list[str]:
    p = tmp_path / "fake_darknet.py"
    p.write_text("import sys, time, os\n" + body)
    return [sys.executable, str(p)]


async def run_to_end(tmp_path: Path, argv: list[str], number: int = 1) -> dict[str, object]:
    (tmp_path / "run").mkdir(exist_ok=True)
    _h, proc = launch.start(
        argv,
        number=number,
        log=tmp_path / "darknet.log",
        exit_path=tmp_path / "exit.json",
        cwd=tmp_path / "run",
    )
    while proc.poll() is None:
        await asyncio.sleep(0.05)
    entry = launch.read_exit(tmp_path / "exit.json", number)
    assert entry is not None
    return entry


async def test_wrapper_records_exit_code_and_appends_output(tmp_path: Path) -> None:
    argv = script(
        tmp_path,
        "print('1: 2.0, 2.0 avg'); print('err', file=sys.stderr)\n"
        "print(os.getcwd()); print(sys.stdin.read() == '')\nsys.exit(3)\n",
    )
    entry = await run_to_end(tmp_path, argv)
    assert entry["returncode"] == 3 and entry["signal"] is None
    text = (tmp_path / "darknet.log").read_text()
    assert text.startswith(f"{MARKER} 1 at ")
    assert "1: 2.0, 2.0 avg" in text and "err" in text
    assert str(tmp_path / "run") in text  # cwd is run/
    assert "True" in text  # stdin is /dev/null (reads empty, never blocks)
    # A second launch appends to the same log and to exit.json.
    await run_to_end(tmp_path, script(tmp_path, "print('second')\n"), number=2)
    text = (tmp_path / "darknet.log").read_text()
    assert text.count(MARKER) == 2 and "second" in text
    assert launch.read_exit(tmp_path / "exit.json", 1) == entry


async def test_wrapper_records_a_signal_death(tmp_path: Path) -> None:
    entry = await run_to_end(tmp_path, script(tmp_path, "os.abort()\n"))
    assert entry["returncode"] is None and entry["signal"] == "SIGABRT"


async def start_until_ready(
    tmp_path: Path, argv: list[str]
) -> tuple[launch.LaunchHandle, subprocess.Popen[bytes]]:
    """Launch `argv` and wait until it printed `ready` (its signal handlers are set)."""
    h, proc = launch.start(
        argv,
        number=1,
        log=tmp_path / "darknet.log",
        exit_path=tmp_path / "exit.json",
        cwd=tmp_path / "run",
    )
    tail = LogTail(tmp_path / "darknet.log")
    for _ in range(100):
        if any("ready" in line for line in tail.read_lines()):
            break
        await asyncio.sleep(0.05)
    return h, proc


async def test_terminate_stops_the_group_and_the_wrapper_records_it(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    argv = script(tmp_path, "print('ready', flush=True)\ntime.sleep(60)\n")
    h, proc = await start_until_ready(tmp_path, argv)
    assert h.alive
    reaper = asyncio.get_running_loop().run_in_executor(None, proc.wait)
    how = await launch.terminate(h, grace=5)
    await reaper
    assert how == "term" and not h.alive
    entry = launch.read_exit(tmp_path / "exit.json", 1)
    assert entry is not None and entry["signal"] == "SIGTERM"


async def test_terminate_kills_what_ignores_term(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    argv = script(
        tmp_path,
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\ntime.sleep(60)\n",
    )
    h, proc = await start_until_ready(tmp_path, argv)
    reaper = asyncio.get_running_loop().run_in_executor(None, proc.wait)
    assert await launch.terminate(h, grace=0.5) == "kill"
    await reaper
    # The wrapper died with darknet: no exit record, which the runner reads as "killed".
    assert launch.read_exit(tmp_path / "exit.json", 1) is None


def test_handle_does_not_match_a_reused_pid(tmp_path: Path) -> None:
    import os

    import psutil

    me = psutil.Process(os.getpid())
    assert launch.LaunchHandle(1, os.getpid(), me.create_time(), ()).alive
    assert not launch.LaunchHandle(1, os.getpid(), me.create_time() - 3600, ()).alive
    assert not launch.LaunchHandle(1, os.getpid(), me.create_time() - 3600, ()).signal_group(
        signal.SIGTERM
    )


def test_tail_returns_whole_lines_only_and_resumes_at_offset(tmp_path: Path) -> None:
    log = tmp_path / "darknet.log"
    tail = LogTail(log)
    assert tail.read_lines() == []  # missing file
    log.write_bytes(b"1: 1.0, 1.0 avg\n2: 0.9, 0.99 av")
    assert tail.read_lines() == ["1: 1.0, 1.0 avg"]
    assert tail.read_lines() == []
    with log.open("ab") as f:
        f.write(b"g\n3: \xff\n")
    assert tail.read_lines() == ["2: 0.9, 0.99 avg", "3: \ufffd"]
    again = LogTail(log, offset=tail.offset)
    with log.open("ab") as f:
        f.write(b"tail without newline")
    assert again.read_lines() == [] and again.rest() == "tail without newline"


def test_tail_takes_carriage_returns_as_line_ends(tmp_path: Path) -> None:
    # hank-ai redraws its progress line with \r only; \r\n is one line end, not two.
    log = tmp_path / "darknet.log"
    log.write_bytes(b"1: a\r2: b\r\n3: c\r")
    tail = LogTail(log)
    assert tail.read_lines() == ["1: a", "2: b"]  # the last \r may be half of \r\n
    with log.open("ab") as f:
        f.write(b"\n4: d\n")
    assert tail.read_lines() == ["3: c", "4: d"]


def test_tail_cuts_a_stretch_without_line_ends(tmp_path: Path) -> None:
    log = tmp_path / "darknet.log"
    log.write_bytes(b"x" * 2500 + b"\nnext\n")
    tail = LogTail(log, max_line=1000)
    assert tail.read_lines() == ["x" * 1000]
    assert tail.read_lines() == ["x" * 1000]
    assert tail.read_lines() == ["x" * 500, "next"]
