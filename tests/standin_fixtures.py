"""Shared pieces for tests that run the scripted stand-in darknet (tests/standins/
scripted_darknet.py) — an executable `darknet` wrapper, a tiny dataset, Debian's stock cfg — and
for the daemon tests: a `trainsup serve` subprocess with its own config and state dir, and
the CLI run as a process against it.

The stand-in's fixtures (`standin`, `tiny_data`, `stock_cfg`) are in tests/conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from supervisor.darknet.cfg import Cfg
from supervisor.dataset.demo import write_demo_cfg

ROOT = Path(__file__).resolve().parent.parent


def missing(msg: str) -> None:
    """Skip outside CI; under CI a missing prerequisite is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def write_cfg(path: Path, stock: Path, max_batches: int, **net: Any) -> Path:
    cfg = write_demo_cfg(path, source=stock, max_batches=max_batches, steps=(200, 250))
    if net:
        c = Cfg.load(cfg)
        for k, v in net.items():
            c.set_net(k, v)
        c.save(cfg)
    return cfg


def job_yaml(
    folder: Path,
    data: Path,
    cfg: Path,
    *,
    name: str = "t",
    binary: str = "darknet",
    file: str = "job.yaml",
    **sections: Any,
) -> Path:
    """A job file for the stand-in: CPU, the supervisor's evaluation every 100, rules off."""
    job: dict[str, Any] = {
        "name": name,
        "darknet": {"binary": binary, "data": str(data), "cfg": str(cfg), "gpus": []},
        "evaluation": {"every": 100, "source": "supervisor"},
        "stop": {"plateau": False, "overfit": False, "not_learning": False},
    }
    job.update(sections)
    path = folder / file
    path.write_text(yaml.safe_dump(job))
    return path


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Daemon:
    """`trainsup serve` as a subprocess, with a config written from `config` (a dict)."""

    def __init__(self, state: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        self.state = state
        self.config_path = state.parent / "config.yaml"
        self.config = {"state_dir": str(state), "queue_every": 0.5, **config}
        self.config.setdefault(
            "runner", {"poll": 0.02, "tick": 0.2, "grace": 3.0, "checkpoint_every": 0.0}
        )
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.socket = state / "trainsup.sock"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = state.parent / "daemon.log"
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://trainsup"
        )

    def start(self, extra_env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "supervisor.cli",
                    "serve",
                    "--config",
                    str(self.config_path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**self.env, **(extra_env or {})},
                cwd=ROOT,
            )
        if wait:
            wait_for(self.healthy, 30, f"the daemon to be ready (log: {self.log_text()[-2000:]})")
        return self

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the daemon exited {self.proc.returncode}:\n{self.log_text()}")
        try:
            return bool(self.http.get("/healthz").json()["status"] == "ok")
        except (httpx.HTTPError, OSError, ValueError):
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "supervisor.cli", *args, "--socket", str(self.socket)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=60,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"trainsup {' '.join(args)} → {r.returncode}\n{r.stderr}")
        return r

    def submit(self, job: Path, *extra: str) -> int:
        return int(json.loads(self.cli("submit", str(job), "--json", *extra).stdout)["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        r = self.http.get(f"/jobs/{job_id}")
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def wait_state(self, job_id: int, states: set[str], timeout: float = 60.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            j = self.job(job_id)
            return j if j["state"] in states else None

        result: dict[str, Any] = wait_for(reached, timeout, f"job {job_id} to be {states}")
        return result

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def term(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.http.close()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path: a Unix socket path has at most 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="tsd-", dir="/tmp"))
    yield d
    _kill_leftovers(d)
    shutil.rmtree(d, ignore_errors=True)


def _kill_leftovers(d: Path) -> None:
    # darknet stand-ins a failed test left running (they outlive the daemon by design).
    for launch in d.glob("state/jobs/*/launch.json"):
        try:
            pid = int(json.loads(launch.read_text())["pid"])
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.fixture
def make_daemon(
    short_tmp: Path, standin: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Daemon]]:
    """A daemon factory: `make_daemon(**config)`; the stand-in is the binary `darknet`, the
    tiny dataset and `short_tmp` are the data roots, TRAINSUP_SCRIPT is `short_tmp/script.json`."""
    made: list[Daemon] = []
    script = short_tmp / "script.json"
    script.write_text("{}")
    env = {**os.environ, "TRAINSUP_SCRIPT": str(script), "PYTHONPATH": str(ROOT)}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("TRAINSUP_SOCKET", None)

    def make(**config: Any) -> Daemon:
        config.setdefault("binaries", {"darknet": {"path": str(standin), "flavour": "pjreddie"}})
        config.setdefault("data_roots", [str(tiny_data.parent), str(short_tmp)])
        d = Daemon(short_tmp / "state", config, env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def set_script(short_tmp: Path, **s: Any) -> None:
    """What the stand-in does on its next launch (see its docstring)."""
    (short_tmp / "script.json").write_text(json.dumps({"log": str(short_tmp / "calls.log"), **s}))
