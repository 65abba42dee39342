"""`trainsup serve` as a real process with the scripted stand-in darknet: submit, queue order,
`--after`, the CLI's listings, `/metrics`, `kill -9` of the daemon and re-adoption, darknet
dying while the daemon is down, SIGTERM leaving trainings running, `stop`, `cancel`, `retry`."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.runtime import records
from supervisor.service.store import Store
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    ROOT,
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


def _metrics(d: Daemon) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = d.http.get("/metrics").text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _train_starts(tmp: Path) -> list[int]:
    calls = (tmp / "calls.log").read_text().split("\n")
    return [int(c.split()[1]) for c in calls if c.startswith("train")]


def test_a_submitted_job_runs_to_its_stop_and_every_listing_shows_it(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.01)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=1000)
    job = job_yaml(short_tmp, tiny_data, cfg, name="helmets", budget={"max_iterations": 250})
    d = make_daemon().start()
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o660
    job_id = d.submit(job)
    # Followers started now print everything until the job ends, then exit by themselves.
    argv = [sys.executable, "-m", "supervisor.cli"]
    sock = ["--socket", str(d.socket)]
    follow_logs = subprocess.Popen([*argv, "logs", str(job_id), "-f", *sock],
                                   stdout=subprocess.PIPE, env=d.env, cwd=ROOT)  # fmt: skip
    follow_events = subprocess.Popen([*argv, "events", str(job_id), "-f", "--json", *sock],
                                     stdout=subprocess.PIPE, env=d.env, cwd=ROOT)  # fmt: skip
    j = d.wait_state(job_id, {"running", "stopping"})
    # While it runs: /metrics has its iteration.
    wait_for(lambda: (d.job(job_id)["iteration"] or 0) >= 20, what="iterations")
    running = _metrics(d)
    key = (("job", str(job_id)), ("name", "helmets"))
    assert running[("trainsup_job_iteration", key)] >= 20
    assert (
        running[("trainsup_jobs", (("state", "running"),))]
        + running[("trainsup_jobs", (("state", "stopping"),))]
        == 1
    )
    j = d.wait_state(job_id, {"finished", "failed"})
    assert j["state"] == "finished", j
    assert j["user"] == pwd.getpwuid(os.getuid()).pw_name, "who submitted, from the socket"
    assert j["device"] == "cpu"
    assert j["stop"]["rule"] == "max_iterations" and j["stop"]["reason"]
    assert j["iteration"] >= 250
    assert j["best"] is not None and j["best"]["iteration"] in (100, 200)
    assert 0 <= j["best"]["map"] <= 1
    job_dir = Path(j["job_dir"])
    assert job_dir == d.state / "jobs" / str(job_id)
    kept = {k["name"]: k for k in j["kept"]}
    assert Path(kept["best"]["path"]).is_file() and Path(kept["last"]["path"]).is_file()
    # The daemon draws the job's chart as `trainsup run` does, the final one before the end.
    assert (job_dir / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    shown = json.loads(d.cli("show", str(job_id), "--json").stdout)
    for k in ("id", "name", "state", "iteration", "best", "stop", "job_dir"):
        assert shown[k] == j[k], k
    # The live diagnosis the runner published is in the daemon's view of the job.
    diag = [e for e in records.read_records(job_dir / "events.jsonl") if e["type"] == "Diagnosis"]
    assert diag and shown["diagnosis"]["pattern"] == diag[-1]["pattern"]
    assert shown["diagnosis"]["evidence"] == diag[-1]["evidence"]
    listed = json.loads(d.cli("ls", "--json").stdout)
    assert [x["id"] for x in listed] == [job_id] and listed[0]["state"] == "finished"
    human = d.cli("show", str(job_id)).stdout
    assert "max_iterations" in human and str(job_dir) in human
    assert "helmets" in d.cli("ls").stdout
    log = d.cli("logs", str(job_id)).stdout
    assert log == (job_dir / "darknet.log").read_text()
    assert "250:" in log
    followed_log, _ = follow_logs.communicate(timeout=30)
    assert follow_logs.returncode == 0 and followed_log.decode() == log
    followed, _ = follow_events.communicate(timeout=30)
    assert follow_events.returncode == 0
    assert followed.decode() == d.cli("events", str(job_id), "--json").stdout
    evs = [json.loads(x) for x in d.cli("events", str(job_id), "--json").stdout.splitlines()]
    kinds = [e["type"] for e in evs]
    assert "Decision" in kinds and kinds[-1] == "Finished" and "Iteration" not in kinds
    # The store mirrors events.jsonl record for record.
    file_recs = list(records.read_records(job_dir / "events.jsonl"))
    all_evs = d.cli("events", str(job_id), "--json", "--all").stdout.splitlines()
    assert [json.loads(x)["type"] for x in all_evs] == [r["type"] for r in file_recs]
    # A finished job's metrics: no per-job series, the state count moved.
    after = _metrics(d)
    assert after[("trainsup_jobs", (("state", "finished"),))] == 1
    assert d.term() == 0


def test_kill_9_of_the_daemon_then_restart_readopts_the_same_darknet(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.03)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=400)
    d = make_daemon().start()
    job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg))
    wait_for(lambda: (d.job(job_id)["iteration"] or 0) >= 120, what="iteration 120")
    pid = d.job(job_id)["pid"]
    d.kill9()
    assert alive(pid), "darknet must outlive the daemon"
    d.start()
    j = d.wait_state(job_id, {"finished", "failed"}, timeout=60)
    assert j["state"] == "finished", j
    assert j["pid"] == pid
    job_dir = Path(j["job_dir"])
    attached = [
        r for r in records.read_records(job_dir / "events.jsonl") if r["type"] == "Attached"
    ]
    assert len(attached) == 1 and attached[0]["pid"] == pid
    assert _train_starts(short_tmp) == [0], "one darknet, never a second launch"
    store = Store(d.state / "trainsup.db")
    counts = store.iteration_records(job_id)
    assert sorted(counts) == list(range(1, 401)), "every iteration in the store"
    assert set(counts.values()) == {1}, "and each once"
    assert {k["name"] for k in store.kept(job_id)} >= {"best", "last"}
    assert store.get(job_id)["best_map"] is not None
    store.close()


def test_darknet_killed_while_the_daemon_is_down_is_resumed_from_its_newest_save(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.01)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=600)
    d = make_daemon().start()
    job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg))
    wait_for(lambda: (d.job(job_id)["iteration"] or 0) >= 330, what="iteration 330")
    # SIGTERM with on_shutdown: leave → the daemon exits 0, darknet trains on alone.
    assert d.term() == 0
    pid = json.loads((d.state / "jobs" / str(job_id) / "launch.json").read_text())["pid"]
    assert alive(pid)
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), what="darknet gone")
    d.start()
    j = d.wait_state(job_id, {"finished", "failed"}, timeout=60)
    assert j["state"] == "finished", (json.dumps(j), d.log_text()[-3000:])
    assert j["relaunches"] == 1 and j["iteration"] == 600
    starts = _train_starts(short_tmp)
    assert starts[0] == 0 and starts[1] >= 300, starts  # resumed at its newest save, no -clear
    evs = json.loads(d.http.get(f"/jobs/{job_id}/events", params={"limit": 10000}).text)
    relaunched = [e["record"] for e in evs["events"] if e["record"]["type"] == "Relaunched"]
    assert "supervisor was down" in relaunched[0]["reason"]
    store = Store(d.state / "trainsup.db")
    history = store.history(job_id)
    assert [h["iteration"] for h in history] == list(range(1, 601)), "the history holds each once"
    store.close()


def test_one_slot_runs_jobs_in_priority_order_and_after_holds_a_job(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.004)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=200)
    long_cfg = write_cfg(short_tmp / "long.cfg", stock_cfg, max_batches=100000)
    d = make_daemon(cpu_slots=1).start()
    blocker = d.submit(job_yaml(short_tmp, tiny_data, long_cfg, name="blocker", file="b.yaml"))
    d.wait_state(blocker, {"running", "stopping"})
    low = d.submit(job_yaml(short_tmp, tiny_data, cfg, name="low", file="l.yaml"))
    high = d.submit(
        job_yaml(short_tmp, tiny_data, cfg, name="high", file="h.yaml"), "--priority", "5"
    )
    held = d.submit(job_yaml(short_tmp, tiny_data, cfg, name="held", file="x.yaml"),
                    "--priority", "9", "--after", str(low))  # fmt: skip
    assert d.job(high)["state"] == "queued" and d.job(low)["state"] == "queued"
    d.cli("stop", str(blocker), "--now")
    for job_id in (blocker, high, low, held):
        d.wait_state(job_id, {"finished"}, timeout=60)
    started = {i: d.job(i)["started"] for i in (blocker, high, low, held)}
    ended = {i: d.job(i)["ended"] for i in (blocker, high, low, held)}
    # One at a time, in priority order; `held` (highest priority) waited for `low` to end.
    assert started[high] >= ended[blocker]
    assert started[low] >= ended[high]
    assert started[held] >= ended[low]


def test_stop_cancel_and_retry(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.01)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=3000)
    d = make_daemon(cpu_slots=1).start()
    a = d.submit(job_yaml(short_tmp, tiny_data, cfg, name="a", file="a.yaml"))
    b = d.submit(job_yaml(short_tmp, tiny_data, cfg, name="b", file="b.yaml"))
    d.wait_state(a, {"running"})
    r = d.cli("cancel", str(a), check=False)
    assert r.returncode == 2 and "trainsup stop" in r.stderr
    assert "cancelled" in d.cli("cancel", str(b)).stdout
    wait_for(lambda: (d.job(a)["iteration"] or 0) >= 120, what="iteration 120")
    asked_at = d.job(a)["iteration"]
    assert "next complete save" in d.cli("stop", str(a)).stdout
    j = d.wait_state(a, {"finished", "failed"})
    assert j["state"] == "finished" and j["stop"]["rule"] == "user"
    last = {k["name"]: k for k in j["kept"]}["last"]
    # Stopped after a complete save that came after the request, long before max_batches.
    assert last["iteration"] % 100 == 0 and asked_at < last["iteration"] < 3000
    assert d.job(b)["state"] == "cancelled"
    new = int(d.cli("retry", str(b)).stdout.strip())
    assert new not in (a, b) and d.job(new)["name"] == "b"
    d.wait_state(new, {"running"})
    d.cli("stop", str(new), "--now")
    assert d.wait_state(new, {"finished", "failed", "cancelled"})["state"] in {"finished", "failed"}


@pytest.mark.timeout(180)
def test_messages_left_undelivered_are_delivered_after_a_restart(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    from supervisor.notify.outbox import job_dir_summary
    from supervisor.notify.receiver import Receiver
    from tests.test_notify_delivery import free_port

    set_script(short_tmp, iteration_s=0.002)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=200)
    port = free_port()  # nothing listens there yet: the chat service is down
    hook = {"type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "new_best_interval": None}
    d = make_daemon().start()
    job_id = d.submit(job_yaml(short_tmp, tiny_data, cfg, notify=[hook]))
    j = d.wait_state(job_id, {"finished", "failed"}, timeout=60)
    assert j["state"] == "finished", j
    job_dir = Path(j["job_dir"])
    summary = job_dir_summary(job_dir)
    assert summary is not None and summary["pending"] >= 2 and summary["sent"] == 0
    assert d.term() == 0
    with Receiver(port=port) as rx:
        d.start()
        wait_for(
            lambda: any(m["event"] == "stopped" for m in rx.messages("/hook")),
            timeout=90,
            what="the job's messages, delivered by the restarted daemon",
        )
        # The outbox records each delivery after its answer came: wait for the last one
        # (a SIGTERM between the two only means that message is sent again, same id).
        wait_for(
            lambda: (job_dir_summary(job_dir) or {}).get("pending") == 0,
            timeout=30,
            what="the outbox recording every delivery",
        )
        got = rx.messages("/hook")
    assert got[0]["event"] == "started" and got[0]["job"] == {"name": "t", "id": str(job_id)}
    assert [m["event"] for m in got][-1] == "stopped"
    assert d.term() == 0
    assert job_dir_summary(job_dir)["pending"] == 0  # type: ignore[index]
