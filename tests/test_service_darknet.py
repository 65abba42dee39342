"""The daemon end to end with the real Debian darknet (pjreddie, CPU): a job submitted with the
CLI trains, is re-adopted after a `kill -9` of the daemon (the same darknet pid, every
iteration once), stops on its policy (the iteration budget) with its best weights kept, and
`ls`, `show`, `logs`, `events` and `/metrics` show it. One short training (~2 min on 2 cores)."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.dataset.demo import write_demo_cfg
from supervisor.dataset.synth import make_shapes_dataset
from supervisor.service.store import Store
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    Daemon,
    alive,
    job_yaml,
    make_daemon,
    missing,
    short_tmp,
    wait_for,
)

pytestmark = [pytest.mark.darknet, pytest.mark.timeout(600)]
DARKNET = Path("/usr/bin/darknet")


def _sample(d: Daemon, name: str, job_id: int) -> float | None:
    for fam in text_string_to_metric_families(d.http.get("/metrics").text):
        for s in fam.samples:
            if s.name == name and s.labels.get("job") == str(job_id):
                return float(s.value)
    return None


def test_real_darknet_under_the_daemon_survives_kill_9_and_stops_on_its_budget(
    make_daemon: Callable[..., Daemon], short_tmp: Path, stock_cfg: Path
) -> None:
    if not DARKNET.exists():
        missing(f"{DARKNET} is missing: apt-get install darknet")
    ds = make_shapes_dataset(short_tmp / "data", train=40, valid=12, seed=4)
    cfg = write_demo_cfg(short_tmp / "shapes.cfg", size=64, max_batches=1000, steps=(600, 800))
    job = job_yaml(short_tmp, ds.data, cfg, name="shapes", budget={"max_iterations": 200})
    d = make_daemon(
        binaries={"darknet": {"path": str(DARKNET), "flavour": "pjreddie"}},
        runner={"poll": 0.2, "tick": 1.0, "grace": 10.0, "checkpoint_every": 2.0},
    ).start()
    job_id = d.submit(job)
    wait_for(lambda: d.job(job_id)["best"] is not None and d.job(job_id)["iteration"] >= 110,
             300, "the first evaluation and iteration 110")  # fmt: skip
    j = d.job(job_id)
    assert (_sample(d, "trainsup_job_iteration", job_id) or 0) >= 110
    assert _sample(d, "trainsup_job_best_map", job_id) == j["best"]["map"]
    pid = j["pid"]
    d.kill9()
    assert alive(pid)
    d.start()
    j = d.wait_state(job_id, {"finished", "failed"}, timeout=300)
    assert j["state"] == "finished", (j, d.log_text()[-3000:])
    assert j["pid"] == pid, "the same darknet, re-adopted"
    assert j["stop"]["rule"] == "max_iterations"
    assert j["best"] is not None and 0 <= j["best"]["map"] <= 1
    kept = {k["name"]: k for k in j["kept"]}
    assert Path(kept["best"]["path"]).is_file()
    assert kept["best"]["iteration"] == j["best"]["iteration"]
    store = Store(d.state / "trainsup.db")
    counts = store.iteration_records(job_id)
    assert set(counts.values()) == {1} and sorted(counts) == list(range(1, max(counts) + 1))
    assert max(counts) >= 200
    store.close()
    listed = json.loads(d.cli("ls", "--json").stdout)
    assert listed[0]["id"] == job_id and listed[0]["state"] == "finished"
    shown = json.loads(d.cli("show", str(job_id), "--json").stdout)
    assert shown["best"] == j["best"] and shown["job_dir"] == j["job_dir"]
    assert "Saving weights to" in d.cli("logs", str(job_id)).stdout
    kinds = [
        json.loads(x)["type"] for x in d.cli("events", str(job_id), "--json").stdout.splitlines()
    ]
    assert {"Attached", "MapResult", "NewBest", "Decision", "Finished"} <= set(kinds)
