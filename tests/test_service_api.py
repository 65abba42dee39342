"""Least privilege at submit (binary names, data roots inside the YAML, the .data file and the
lists), the spool dir, the TCP listener's token, and SIGTERM with `on_shutdown: stop` — all
against a real `trainsup serve` process with the scripted stand-in darknet."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from supervisor.dataset.synth import make_shapes_dataset
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    Daemon,
    alive,
    job_yaml,
    make_daemon,
    set_script,
    short_tmp,
    wait_for,
    write_cfg,
)

pytestmark = pytest.mark.timeout(120)
MakeDaemon = Callable[..., Daemon]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_at_submit_with_the_reason_and_tcp_needs_the_token(
    make_daemon: MakeDaemon,
    short_tmp: Path,
    tiny_data: Path,
    stock_cfg: Path,
    tmp_path: Path,
    standin: Path,
) -> None:
    token = "s3cret-token-0123456789abcdef"
    (short_tmp / "token").write_text(token + "\n")
    port = _free_port()
    d = make_daemon(
        binaries={
            "darknet": {"path": str(standin), "flavour": "pjreddie"},
            "fake": {"path": "/bin/true"},
        },
        gpus=[],
        api={"tcp": {"listen": f"127.0.0.1:{port}", "token_file": str(short_tmp / "token")}},
    ).start()
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=100)
    outside = make_shapes_dataset(tmp_path / "outside", train=2, valid=2, seed=1).data

    def refused(job: Path) -> str:
        r = d.cli("submit", str(job), check=False)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert r.stdout == ""
        return r.stderr

    assert "is a path" in refused(job_yaml(short_tmp, tiny_data, cfg, binary="/bin/sh"))
    err = refused(job_yaml(short_tmp, tiny_data, cfg, binary="sh"))
    assert "unknown binary name" in err and "darknet" in err
    err = refused(job_yaml(short_tmp, outside, cfg))
    assert "darknet.data" in err and "outside the data roots" in err
    # A .data inside the roots whose train list lies outside.
    inner = short_tmp / "inner.data"
    inner.write_text(outside.read_text())
    err = refused(job_yaml(short_tmp, inner, cfg))
    assert "train = " in err and "outside the data roots" in err
    # A list inside the roots naming images outside, also through a symlink inside the roots.
    images = [ln for ln in Path(tiny_data.parent / "train.txt").read_text().splitlines() if ln]
    (short_tmp / "link").symlink_to(outside.parent)
    foreign = sorted((outside.parent / "train").glob("*.jpg"))
    via_link = short_tmp / "link" / "train" / foreign[1].name
    lst = short_tmp / "list.txt"
    lst.write_text("\n".join([*images, str(foreign[0]), str(via_link)]) + "\n")
    mixed = short_tmp / "mixed.data"
    mixed.write_text(tiny_data.read_text().replace(str(tiny_data.parent / "train.txt"), str(lst)))
    err = refused(job_yaml(short_tmp, mixed, cfg))
    assert "2 image path(s) outside the data roots" in err and "line 7" in err, err
    err = refused(_gpu_job(short_tmp, tiny_data, cfg))
    assert "this daemon has no GPU" in err
    # A configured binary that is not darknet, and a dataset darknet would choke on: refused
    # as `trainsup check` would refuse them.
    err = refused(job_yaml(short_tmp, tiny_data, cfg, binary="fake"))
    assert "darknet.binary" in err and "/bin/true" in err, err
    broken = make_shapes_dataset(short_tmp / "broken", train=3, valid=2, seed=2)
    label = sorted((short_tmp / "broken" / "train").glob("*.txt"))[0]
    label.write_text("7 0.5 0.5 0.2 0.2\n")
    err = refused(job_yaml(short_tmp, broken.data, cfg))
    assert label.name in err and "error" in err, err
    assert json.loads(d.cli("ls", "--json").stdout) == [], "nothing refused was queued"

    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/jobs").status_code == 401
    assert httpx.get(f"{url}/healthz", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.get(f"{url}/jobs", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json() == []
    env = {**d.env, "TRAINSUP_URL": url, "TRAINSUP_TOKEN_FILE": str(short_tmp / "token")}
    p = subprocess.run([sys.executable, "-m", "supervisor.cli", "ls", "--json"],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert p.returncode == 0 and json.loads(p.stdout) == [], p.stderr
    assert token not in d.log_text(), "the token is never logged"


def _gpu_job(folder: Path, data: Path, cfg: Path) -> Path:
    job = job_yaml(folder, data, cfg, file="gpu.yaml")
    spec = yaml.safe_load(job.read_text())
    spec["darknet"]["gpus"] = [0]
    job.write_text(yaml.safe_dump(spec))
    return job


def test_spool_accepts_a_good_file_and_rejects_a_bad_one_with_the_reason(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.002)
    d = make_daemon().start()
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=100)
    inbox = d.state / "inbox"
    good = job_yaml(short_tmp, tiny_data, cfg, name="spooled", file="good.yaml")
    bad = short_tmp / "bad.yaml"
    bad.write_text(good.read_text().replace("evaluation:", "evalution:"))
    shell = job_yaml(short_tmp, tiny_data, cfg, binary="/bin/sh", file="shell.yaml")
    old = time.time() - 10  # settled: the spool leaves files younger than a second alone
    for f in (good, bad, shell):
        os.utime(f, (old, old))
        f.rename(inbox / f.name)
    accepted = d.state / "accepted" / "good.yaml"
    wait_for(accepted.exists, 20, "good.yaml accepted")
    error = d.state / "rejected" / "bad.yaml.error"
    wait_for(error.exists, 20, "bad.yaml rejected")
    assert (d.state / "rejected" / "bad.yaml").exists()
    text = error.read_text()
    assert "bad.yaml:" in text and "evalution" in text and "did you mean `evaluation`" in text
    shell_error = d.state / "rejected" / "shell.yaml.error"
    wait_for(shell_error.exists, 20, "shell.yaml rejected")
    assert "is a path" in shell_error.read_text()
    assert not list(inbox.iterdir())
    assert stat.S_IMODE(inbox.stat().st_mode) == 0o3770, "the group may drop files in"
    jobs = json.loads(d.cli("ls", "--json").stdout)
    assert [j["name"] for j in jobs] == ["spooled"]
    d.wait_state(jobs[0]["id"], {"finished"}, timeout=30)


def test_sigterm_with_on_shutdown_stop_stops_the_trainings_then_exits_0(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.005)
    d = make_daemon(on_shutdown="stop").start()
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=100000)
    job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg))
    wait_for(lambda: (d.job(job_id)["iteration"] or 0) >= 50, what="iteration 50")
    pid = d.job(job_id)["pid"]
    assert d.term(timeout=60) == 0
    assert not alive(pid)
    d.start()
    j = d.job(job_id)
    assert j["state"] == "finished" and j["stop"]["rule"] == "user"
    assert "shutting down" in j["stop"]["reason"]
    assert {k["name"] for k in j["kept"]} >= {"last"}


def test_a_second_daemon_on_the_same_state_dir_is_refused(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    p = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "serve", "--config", str(d.config_path)],
        capture_output=True, text=True, env=d.env, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "another trainsup serve" in p.stderr, p.stderr
    assert d.healthy(), "the first one is untouched"


def test_a_silent_darknet_is_reported_in_the_log_and_the_metrics(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.002, hang_at=20)
    d = make_daemon(stall_after=1.0).start()
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=1000)
    job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg))
    wait_for(lambda: "no output from darknet" in d.log_text(), 30, "the stall warning")
    line = next(json.loads(x) for x in d.log_text().splitlines()
                if "no output from darknet" in x)  # fmt: skip
    assert line["job_id"] == job_id and line["level"] == "warning" and line["seconds"] >= 1
    metrics = d.http.get("/metrics").text
    age = [ln for ln in metrics.splitlines() if ln.startswith("trainsup_job_output_age_seconds{")]
    assert age and float(age[0].rsplit(" ", 1)[1]) >= 1.0
    d.cli("stop", str(job_id), "--now")
    d.wait_state(job_id, {"finished", "failed"})


def test_serve_refuses_a_bad_config_and_the_cli_says_when_no_daemon_runs(short_tmp: Path) -> None:
    bad = short_tmp / "bad.yaml"
    bad.write_text(f"state_dir: {short_tmp}/s\ncpu_slot: 2\n")
    p = subprocess.run([sys.executable, "-m", "supervisor.cli", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 2 and f"{bad}:2:1: cpu_slot" in p.stderr and "cpu_slots" in p.stderr
    assert not (short_tmp / "s").exists(), "nothing created"
    sock = short_tmp / "none.sock"
    p = subprocess.run([sys.executable, "-m", "supervisor.cli", "ls", "--socket", str(sock)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 1 and "cannot reach the trainsup daemon" in p.stderr
    assert "Traceback" not in p.stderr
