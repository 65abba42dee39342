"""The daemon config (located errors, schema, discovery) and the SQLite store (migrations,
transitions, the records it mirrors, resync on re-adoption). No daemon process here."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.runtime.records import resume_records
from supervisor.service.config import (
    DaemonConfig,
    find_config,
    find_socket,
    load_config,
    parse_config,
)
from supervisor.service.store import SCHEMA_VERSION, Store, StoreError
from supervisor.spec import SpecError

ROOT = Path(__file__).resolve().parent.parent


def test_config_errors_are_all_located_with_what_is_allowed(tmp_path: Path) -> None:
    f = tmp_path / "config.yaml"
    f.write_text(
        "binaries:\n"
        "  darknet: {path: usr/bin/darknet, flavor: pjreddie}\n"
        "cpu_slot: 2\n"
        "data_roots: [data, /]\n"
        "api:\n"
        "  socket_mode: '0666'\n"
        "  tcp: {listen: 127.0.0.1, token_file: t}\n"
        "gpus: [0, 0]\n"
        "on_shutdown: kill\n"
    )
    with pytest.raises(SpecError) as e:
        load_config(f)
    text = str(e.value)
    assert "problems in the daemon config" in text
    expected = [
        ":2:19: binaries.darknet.path = usr/bin/darknet: must be an absolute path",
        "binaries.darknet.flavor: unknown key `flavor`; did you mean `flavour`? Allowed here: "
        "path, flavour",
        ":3:1: cpu_slot: unknown key `cpu_slot`; did you mean `cpu_slots`?",
        "data_roots",
        ":6:16: api.socket_mode = 0666: gives access to every user",
        "api.tcp.listen = 127.0.0.1: must be host:port",
        ":8:7: gpus",
        ":9:14: on_shutdown = kill",
    ]
    for piece in expected:
        assert piece in text, (piece, text)


def test_defaults_and_derived_paths(tmp_path: Path) -> None:
    c = parse_config("state_dir: st\ndata_roots: [/data/]\n", base_dir=tmp_path)
    assert c.state() == tmp_path / "st"
    assert c.socket_path() == tmp_path / "st" / "trainsup.sock"
    assert c.binaries["darknet"].path == Path("/usr/bin/darknet")
    assert c.cpu_slots == 1 and c.gpus == "auto" and c.on_shutdown == "leave"
    assert c.data_roots == (Path("/data"),)
    assert c.api.mode == 0o660
    assert parse_config("# all commented out\n") == DaemonConfig()
    with pytest.raises(SpecError, match="binary names are 1-64 characters"):
        parse_config("binaries: {'my darknet': {path: /opt/d}}\n")
    long = "/tmp/" + "x" * 120 + "/s.sock"
    with pytest.raises(SpecError, match="107 bytes"):
        parse_config(f"api: {{socket: {long}}}\n")


def test_config_and_socket_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "given.yaml"
    monkeypatch.setenv("TRAINSUP_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config(given) == given
    assert find_config() == tmp_path / "env.yaml"
    monkeypatch.delenv("TRAINSUP_CONFIG")
    assert find_config() in (None, Path("/etc/trainsup/config.yaml"))
    c = parse_config(f"state_dir: {tmp_path}\n")
    monkeypatch.delenv("TRAINSUP_SOCKET", raising=False)
    assert find_socket(c) == tmp_path / "trainsup.sock"
    monkeypatch.setenv("TRAINSUP_SOCKET", "/run/x.sock")
    assert find_socket(c) == Path("/run/x.sock")
    assert find_socket(c, Path("/a.sock")) == Path("/a.sock")


def test_schema_config_command_prints_the_config_schema() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "schema", "--config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    schema = json.loads(p.stdout)
    assert schema["title"] == "trainsup daemon config"
    for key in ("state_dir", "binaries", "data_roots", "gpus", "cpu_slots", "api", "defaults"):
        assert key in schema["properties"], key
    assert schema["additionalProperties"] is False


def test_store_migrates_an_empty_db_and_refuses_a_newer_one(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    s = Store(db)
    assert s.version == SCHEMA_VERSION
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    assert Store(db).version == SCHEMA_VERSION  # idempotent
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this trainsup knows"):
        Store(db)


def _job(s: Store) -> int:
    return s.add_job(
        name="a", priority=0, after=None, source="a.yaml", base_dir="/", spec_text="",
        binary_name="darknet", binary_path="/usr/bin/darknet", gpus=[], user="me",
    )  # fmt: skip


def test_store_transitions_and_mirrored_records(tmp_path: Path) -> None:
    s = Store(tmp_path / "t.db")
    j = _job(s)
    with pytest.raises(StoreError, match="cannot become running"):
        s.transition(j, "running")
    s.transition(j, "starting", "test")
    for rec in (
        {"type": "Launched", "time": 1.0, "pid": 42, "number": 1},
        {"type": "Iteration", "time": 2.0, "iteration": 1, "avg_loss": 3.0},
        {"type": "Iteration", "time": 3.0, "iteration": 2, "avg_loss": 2.5},
        {"type": "MapResult", "time": 4.0, "iteration": 2, "map": 0.4, "valid": True},
        {"type": "NewBest", "time": 4.0, "iteration": 2, "map": 0.4, "previous": None},
        {"type": "Checkpoint", "time": 5.0, "offset": 1234},
        {"type": "Relaunched", "time": 6.0, "reason": "r", "iteration": 0},
        {
            "type": "Finished",
            "time": 7.0,
            "status": "stopped",
            "cause": "c",
            "stop": {"rule": "plateau", "reason": "flat"},
            "best": {"iteration": 2, "map": 0.4},
            "kept": {"best": {"path": "/k/best.weights", "iteration": 2, "map": 0.4}},
        },
    ):
        s.record(j, rec)
    row = s.get(j)
    assert row is not None
    assert (row["pid"], row["iteration"], row["avg_loss"], row["last_map"]) == (42, 2, 2.5, 0.4)
    assert (row["best_iteration"], row["best_map"], row["log_offset"]) == (2, 0.4, 1234)
    assert (row["stop_rule"], row["relaunches"], row["status"]) == ("plateau", 1, "stopped")
    assert s.kept(j) == [{"name": "best", "path": "/k/best.weights", "iteration": 2, "map": 0.4}]
    s.transition(j, "running")
    s.transition(j, "finished", "done")
    assert [t["to_state"] for t in s.transitions(j)] == [
        "queued",
        "starting",
        "running",
        "finished",
    ]
    assert s.get(j)["ended"] is not None  # type: ignore[index]
    # A resume repeats iterations: the store holds both records, the history the later one.
    s.record(j, {"type": "Iteration", "time": 8.0, "iteration": 2, "avg_loss": 2.0})
    assert s.iteration_records(j) == {1: 1, 2: 2}
    assert [h["avg_loss"] for h in s.history(j)] == [3.0, 2.0]


def test_resync_keeps_what_the_attaching_runner_keeps(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    recs = [
        {"type": "JobStarted", "time": 1},
        {"type": "Iteration", "time": 2, "iteration": 1},
        {"type": "Checkpoint", "time": 3, "offset": 10},
        {"type": "Iteration", "time": 4, "iteration": 2},  # read again from the log
        {"type": "Decision", "time": 5, "decision": "stop", "rule": "user"},
    ]
    events.write_text("".join(json.dumps(r) + "\n" for r in recs))
    kept = resume_records(events)
    assert [r["type"] for r in kept] == ["JobStarted", "Iteration", "Checkpoint", "Decision"]
    s = Store(tmp_path / "t.db")
    j = _job(s)
    for r in recs:
        s.record(j, r)
    s.resync_events(j, kept)
    assert [r["type"] for _, r in s.events(j)] == ["JobStarted", "Iteration", "Checkpoint",
                                                   "Decision"]  # fmt: skip
    assert s.iteration_records(j) == {1: 1}


def test_the_example_config_is_valid() -> None:
    c = load_config(ROOT / "configs" / "config.yaml")
    assert c.binaries["darknet"].path == Path("/usr/bin/darknet")
    assert c.api.mode == 0o660 and c.on_shutdown == "leave"


def test_admission_merges_the_config_defaults_under_the_job(tmp_path: Path) -> None:
    from supervisor.dataset.synth import make_shapes_dataset
    from supervisor.service.admission import Refused, admit

    data = make_shapes_dataset(tmp_path / "d", train=2, valid=2, seed=1).data
    (tmp_path / "c.cfg").write_text("[net]\nbatch=1\n")
    config = parse_config(
        f"data_roots: [{tmp_path}]\npreflight: off\n"
        "defaults: {budget: {max_time: 2h, max_iterations: 50}, evaluation: {every: 200}}\n"
    )
    job = (
        "name: j\ndarknet: {data: d/obj.data, cfg: c.cfg, gpus: []}\nbudget: {max_iterations: 70}\n"
    )
    a = admit(config, job, "j.yaml", tmp_path, [])
    assert a.spec.budget.max_iterations == 70, "the job's own key wins"
    assert a.spec.budget.max_time == 7200 and a.spec.evaluation.every == 200
    assert a.spec.darknet.flavour == "auto" and a.binary_path == "/usr/bin/darknet"
    assert a.spec.darknet.data == data
    with pytest.raises(Refused) as e:
        admit(config, job.replace("70", "-1"), "j.yaml", tmp_path, [])
    assert "j.yaml:3" in str(e.value), "located in the user's own file"


async def test_the_queue_gives_each_gpu_one_job_and_cpu_jobs_their_slots(tmp_path: Path) -> None:
    # The queue pass alone (no runner): which job gets which device, in which order.
    from supervisor.service.daemon import Daemon, Running

    d = Daemon(parse_config(f"state_dir: {tmp_path}\ngpus: [0, 1]\ncpu_slots: 1\n"))
    d.store = Store(tmp_path / "t.db")
    d.gpus, d.accepting = [0, 1], True
    started: list[tuple[str, list[int]]] = []

    def start(row: dict[str, object], device: list[int]) -> None:
        started.append((str(row["name"]), device))
        d.store.transition(int(row["id"]), "starting")  # type: ignore[call-overload]
        d.running[int(row["id"])] = Running(int(row["id"]), None, device)  # type: ignore[arg-type, call-overload]

    d._start = start  # type: ignore[method-assign]

    def add(name: str, gpus: list[int], priority: int = 0) -> int:
        return d.store.add_job(
            name=name, priority=priority, after=None, source="x", base_dir="/", spec_text="",
            binary_name="darknet", binary_path="/usr/bin/darknet", gpus=gpus, user=None,
        )  # fmt: skip

    a = add("a", [0])
    add("b", [0])
    add("c", [1])
    add("cpu1", [])
    add("cpu2", [])
    add("both", [0, 1], priority=-1)
    await d.queue_pass()
    assert started == [("a", [0]), ("c", [1]), ("cpu1", [])]
    await d.queue_pass()
    assert len(started) == 3, "nothing more fits"
    d.running.pop(a)  # job a ended: GPU 0 is free again, for b (submitted before `both`)
    await d.queue_pass()
    assert started[3:] == [("b", [0])]
    d.store.close()


async def test_jobs_per_gpu_lets_jobs_share_a_gpu(tmp_path: Path) -> None:
    from supervisor.service.daemon import Daemon, Running

    d = Daemon(parse_config(f"state_dir: {tmp_path}\ngpus: [0]\njobs_per_gpu: 2\n"))
    d.store = Store(tmp_path / "t.db")
    d.gpus, d.accepting = [0], True
    started: list[str] = []

    def start(row: dict[str, object], device: list[int]) -> None:
        started.append(str(row["name"]))
        d.store.transition(int(row["id"]), "starting")  # type: ignore[call-overload]
        d.running[int(row["id"])] = Running(int(row["id"]), None, device)  # type: ignore[arg-type, call-overload]

    d._start = start  # type: ignore[method-assign]
    for name in ("a", "b", "c"):
        d.store.add_job(
            name=name, priority=0, after=None, source="x", base_dir="/", spec_text="",
            binary_name="darknet", binary_path="/usr/bin/darknet", gpus=[0], user=None,
        )  # fmt: skip
    await d.queue_pass()
    assert started == ["a", "b"], "two share GPU 0, the third waits"
    d.store.close()


async def test_a_job_whose_runner_had_finished_is_recorded_not_rerun(tmp_path: Path) -> None:
    # The daemon died after the runner's Finished record, before the state transition.
    from supervisor.service.daemon import Daemon

    d = Daemon(parse_config(f"state_dir: {tmp_path}\n"))
    d.store = Store(tmp_path / "t.db")
    j = _job(d.store)
    job_dir = tmp_path / "jobs" / str(j)
    job_dir.mkdir(parents=True)
    (job_dir / "launch.json").write_text("{}")
    finished = {
        "type": "Finished", "time": 2.0, "status": "stopped", "cause": "plateau",
        "stop": {"rule": "plateau", "reason": "flat"}, "best": {"iteration": 100, "map": 0.5},
        "kept": {},
    }  # fmt: skip
    (job_dir / "events.jsonl").write_text(
        json.dumps({"type": "JobStarted", "time": 1.0}) + "\n" + json.dumps(finished) + "\n"
    )
    d.store.transition(j, "starting", job_dir=str(job_dir))
    d.store.transition(j, "running")
    await d.readopt()
    row = d.store.get(j)
    assert row is not None and row["state"] == "finished" and row["stop_rule"] == "plateau"
    assert not d.running, "no runner started"
    assert [r["type"] for _, r in d.store.events(j)] == ["JobStarted", "Finished"]
    d.store.close()


async def test_a_detached_job_is_readopted_not_recorded_as_ended(tmp_path: Path) -> None:
    # `on_shutdown: leave`: the runner's last record is Finished with status detached.
    from supervisor.service.daemon import Daemon

    d = Daemon(parse_config(f"state_dir: {tmp_path}\n"))
    d.store = Store(tmp_path / "t.db")
    j = _job(d.store)
    job_dir = tmp_path / "jobs" / str(j)
    job_dir.mkdir(parents=True)
    (job_dir / "launch.json").write_text("{}")
    detached = {"type": "Finished", "time": 2.0, "status": "detached", "cause": "left"}
    (job_dir / "events.jsonl").write_text(json.dumps(detached) + "\n")
    d.store.transition(j, "starting", job_dir=str(job_dir))
    d.store.transition(j, "running")
    await d.readopt()
    row = d.store.get(j)
    # Re-adoption was tried (this fake job has no spec in the store, so it fails saying so):
    # not recorded as ended by its runner.
    assert row is not None and row["state"] == "failed" and "job spec" in row["error"]
    d.store.close()


def test_the_configs_notify_targets_are_told_about_every_job(tmp_path: Path) -> None:
    from supervisor.service.daemon import Daemon
    from supervisor.spec import parse_spec

    d = Daemon(
        parse_config(
            f"state_dir: {tmp_path}\nnotify:\n"
            "  - {type: webhook, url: 'http://hooks.example/all'}\n"
            "  - {type: webhook, url: 'http://hooks.example/team'}\n"
        )
    )
    job = parse_spec(
        "name: j\ndarknet: {data: d.data, cfg: c.cfg}\n"
        "notify: [{type: webhook, url: 'http://hooks.example/team'}]\n"
    )
    targets = d._targets(job.notify)
    assert [t.url.get_secret_value() for t in targets] == [  # type: ignore[union-attr]
        "http://hooks.example/team",  # the job's own first; the config's same one not twice
        "http://hooks.example/all",
    ]
