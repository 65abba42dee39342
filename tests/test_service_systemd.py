"""systemd: the unit file (`systemd-analyze verify` on it rendered with the installed trainsup
path, the lines the design asks for) and the notify protocol spoken by a real `trainsup serve`
over a NOTIFY_SOCKET this test creates: READY=1 only after re-adoption, STATUS=, WATCHDOG=1,
STOPPING=1. Also the daemon's log: JSON lines with the job id bound."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.service.sdnotify import SdNotify
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    ROOT,
    Daemon,
    job_yaml,
    make_daemon,
    missing,
    set_script,
    short_tmp,
    wait_for,
    write_cfg,
)

pytestmark = pytest.mark.timeout(120)
UNIT = ROOT / "systemd" / "trainsup.service"
MakeDaemon = Callable[..., Daemon]


def _unit_lines() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_the_unit_has_what_the_design_asks_for() -> None:
    u = _unit_lines()
    for key, value in {
        "Type": "notify",
        "KillMode": "process",
        "StateDirectory": "trainsup",
        "User": "trainsup",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
    }.items():
        assert u.get(key) == [value], key
    assert u["ExecStart"][0].endswith("trainsup serve --config /etc/trainsup/config.yaml")
    assert "WatchdogSec" in u


def test_systemd_analyze_verify_passes_on_the_rendered_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing("systemd-analyze is not installed (apt-get install systemd)")
    assert tool is not None
    installed = Path(sys.executable).parent / "trainsup"
    if not installed.exists():
        missing(f"{installed} is missing: install the package into this environment")
    unit = tmp_path / "trainsup.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/trainsup", str(installed)))
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on lines it ignores, so its warnings count as failures too.
    assert r.returncode == 0 and not r.stderr.strip() and not r.stdout.strip(), r.stderr + r.stdout


def test_sdnotify_sends_datagrams_and_is_silent_without_a_socket(short_tmp: Path) -> None:
    addr = short_tmp / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(addr))
        n = SdNotify({"NOTIFY_SOCKET": str(addr), "WATCHDOG_USEC": "2000000"})
        assert n.enabled and n.watchdog_s == 2.0
        n.ready("0 running, 0 queued")
        assert s.recv(4096) == b"READY=1\nSTATUS=0 running, 0 queued"
        n.close()
    off = SdNotify({})
    assert not off.enabled
    off.ready("x")  # nothing to send to, nothing raised


def _messages(sock: socket.socket, until: Callable[[list[str]], bool], timeout: float) -> list[str]:
    got: list[str] = []
    end = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < end and not until(got):
        with contextlib.suppress(TimeoutError):
            got += sock.recv(4096).decode().split("\n")
    return got


def test_the_daemon_speaks_the_notify_protocol_after_readoption(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.02)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=100000)
    d = make_daemon().start()
    job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg))
    wait_for(lambda: (d.job(job_id)["iteration"] or 0) >= 10, what="iteration 10")
    d.kill9()
    addr = short_tmp / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(addr))
        d.start(
            {"NOTIFY_SOCKET": str(addr), "WATCHDOG_USEC": "300000", "WATCHDOG_PID": ""},
            wait=False,
        )
        got = _messages(sock, lambda m: m.count("WATCHDOG=1") >= 3, 30)
        assert "READY=1" in got, got
        ready_at = got.index("READY=1")
        # READY's status already counts the re-adopted training.
        assert got[ready_at + 1] == "STATUS=1 running, 0 queued", got
        assert got.count("WATCHDOG=1") >= 3, got
        # STATUS= also on its own, every few seconds, from the event loop.
        later = _messages(sock, lambda m: any(x.startswith("STATUS=") for x in m), 15)
        assert "STATUS=1 running, 0 queued" in later, later
        assert d.job(job_id)["state"] == "running"
        assert d.proc is not None
        d.proc.terminate()
        got = _messages(sock, lambda m: "STOPPING=1" in m, 30)
        assert "STOPPING=1" in got
        assert d.proc.wait(30) == 0
    # The daemon's log is JSON lines (not a TTY), the job id bound into the job's lines.
    lines = [json.loads(x) for x in d.log_text().splitlines() if x.startswith("{")]
    assert any(x.get("event") == "re-adopting" and x.get("job_id") == job_id for x in lines)
    assert any(x.get("event") == "launched" and x.get("job_id") == job_id for x in lines)
    assert all("level" in x and "timestamp" in x for x in lines)
