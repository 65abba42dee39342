"""The `trainsup` command as a user runs it (a real process), on the shared real logs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LogFacts

ROOT = Path(__file__).resolve().parent.parent


def trainsup(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
    )


def analyze_json(log: Path) -> dict[str, Any]:
    p = trainsup("analyze", "--json", str(log))
    assert p.returncode == 0, p.stderr
    out: dict[str, Any] = json.loads(p.stdout)
    return out


@pytest.mark.parametrize(
    "name",
    [
        "04_alexeyab-yolov3tiny-fire-dstaroff.log",
        "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log",
        "01_pjreddie-yolov3tiny-buddyzhu-6000.log",
        "66_alexeyab-yolov4-coco-dockerlogs-replayed-jax79sg.log",
    ],
)
def test_analyze_json_matches_the_independent_reading(
    name: str, logs_dir: Path, log_index: list[LogFacts]
) -> None:
    facts = next(f for f in log_index if f.file == name)
    a = analyze_json(logs_dir / name)
    assert a["iterations"]["count"] == facts.iter_lines
    assert a["iterations"]["first"] == facts.first_iter
    assert a["iterations"]["last"] == facts.last_iter
    assert len(a["evaluations"]) == facts.map_evals
    assert [(e["iteration"], round(e["map"], 6)) for e in a["evaluations"]] == [
        (i, round(m, 6)) for i, m in facts.map_series
    ]
    if facts.best_map is None:
        assert a["best"] is None
    else:
        assert a["best"]["iteration"] == facts.best_map_iter
        assert round(a["best"]["map"], 4) == facts.best_map
    assert a["flavour"] == name.split("_")[1].split("-")[0]


def test_analyze_stops_a_long_plateau_and_keeps_its_best(logs_dir: Path) -> None:
    a = analyze_json(logs_dir / "04_alexeyab-yolov3tiny-fire-dstaroff.log")
    stop, kept = a["stop"], a["kept"]
    assert stop["rule"] == "plateau" and stop["iteration"] < a["iterations"]["last"]
    assert a["iterations_saved"] == a["iterations"]["last"] - stop["iteration"]
    # What it keeps is the best evaluation seen up to the stop.
    seen = [e for e in a["evaluations"] if e["iteration"] <= stop["iteration"] and e["valid"]]
    best_seen = max(seen, key=lambda e: (e["map"], -e["iteration"]))
    assert kept == {"iteration": best_seen["iteration"], "map": best_seen["map"]}
    assert stop["advice"]


def test_analyze_human_output_shows_percent_and_the_stop(logs_dir: Path) -> None:
    p = trainsup("analyze", str(logs_dir / "04_alexeyab-yolov3tiny-fire-dstaroff.log"))
    assert p.returncode == 0, p.stderr
    assert "best mAP: 48.1 % at iteration 6400" in p.stdout
    assert "stop: at iteration" in p.stdout and "kept: weights of iteration" in p.stdout


def test_analyze_reports_gpu_failures(logs_dir: Path) -> None:
    a = analyze_json(logs_dir / "56_alexeyab-yolov4-OOM-at-start-608-sahil.log")
    oom = [g for g in a["gpu_errors"] if g["kind"] == "out_of_memory"]
    assert oom and "raise subdivisions" in oom[0]["advice"]
    assert a["iterations"]["count"] == 0 and a["stop"] is None


def test_analyze_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    p = trainsup("analyze", str(tmp_path / "nope.log"))
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr


def test_check_accepts_the_example_and_rejects_bad_input(tmp_path: Path) -> None:
    # The example's data files do not exist here: only the job file itself is checked.
    ok = trainsup("check", "--no-dataset", str(ROOT / "configs" / "job.example.yaml"))
    assert ok.returncode == 0, ok.stderr + ok.stdout
    bad = tmp_path / "job.yaml"
    bad.write_text("name: x\ndarknet:\n  data: a.data\n  cfg: b.cfg\nstop:\n  platea: {}\n")
    p = trainsup("check", str(bad))
    assert p.returncode == 2
    assert f"{bad}:6" in p.stderr and "plateau" in p.stderr and "Traceback" not in p.stderr


def test_schema_is_json_schema_for_the_job_file() -> None:
    p = trainsup("schema")
    assert p.returncode == 0
    schema = json.loads(p.stdout)
    assert {"name", "darknet", "budget", "evaluation", "stop", "retain"} <= set(
        schema["properties"]
    )


@pytest.fixture()
def demo_dir(tmp_path: Path) -> Path:
    from supervisor.dataset.demo import make_demo

    make_demo(tmp_path / "demo", train=40, valid=12)
    return tmp_path / "demo"


def test_check_job_runs_the_dataset_checks(demo_dir: Path) -> None:
    p = trainsup("check", "--json", str(demo_dir / "job.yaml"))
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["summary"]["splits"]["train"]["images"] == 40
    codes = {f["code"] for f in report["findings"]}
    assert "backup_missing" not in codes  # a job's backup dir is the job dir's own
    assert all(f["severity"] != "error" for f in report["findings"])
    # After a full check the cache holds every image's hashes: a fast check reports the same.
    fast = trainsup("check", "--json", "--fast", str(demo_dir / "job.yaml"))
    assert {f["code"] for f in json.loads(fast.stdout)["findings"]} == codes
    strict = trainsup("check", "--strict", str(demo_dir / "job.yaml"))
    assert strict.returncode == (1 if report["findings"] else 0)
    assert "Dataset check of" in strict.stdout


def test_check_and_run_block_on_dataset_errors(demo_dir: Path) -> None:
    first = (demo_dir / "data" / "train.txt").read_text().split()[0]
    label = Path(first).with_suffix(".txt")
    label.write_text("7 0.5 0.5 0.2 0.2\n")  # class 7 of 2
    p = trainsup("check", "--json", str(demo_dir / "job.yaml"))
    assert p.returncode == 2
    [f] = [f for f in json.loads(p.stdout)["findings"] if f["code"] == "label_class_out_of_range"]
    assert f["file"] == str(label) and f["line"] == 1 and f["fix"]
    run = trainsup("run", "--workdir", str(demo_dir / "run"), str(demo_dir / "job.yaml"))
    assert run.returncode == 2 and "not started" in run.stderr
    assert not (demo_dir / "run").exists()  # darknet never started


def test_check_job_file_errors_as_json(tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("name: x\ndarknet:\n  data: a.data\n  cfg: b.cfg\nstop:\n  target_map: 85\n")
    p = trainsup("check", "--json", str(bad))
    assert p.returncode == 2
    [f] = json.loads(p.stdout)["findings"]
    assert f["code"] == "job_spec" and f["line"] == 6 and "0.85" in f["message"]


@pytest.mark.darknet
def test_ctrl_c_in_run_stops_after_the_next_save(demo_dir: Path, darknet_bin: str) -> None:
    """A real training under `trainsup run`, stopped by Ctrl-C; its chat messages (a generic
    webhook to a real local HTTP server) say what its report.json says."""
    import signal
    import time

    from supervisor.notify.receiver import Receiver, mismatches_with_report, webhook_section

    job_dir = demo_dir / "run"
    job_file = demo_dir / "job.yaml"
    with Receiver() as rx:
        job_file.write_text(job_file.read_text() + webhook_section(rx.url("/e2e")))
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "run", "--preflight", "off",
             "--workdir", str(job_dir), str(job_file)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        log = job_dir / "darknet.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.exists() and "\n20: " in log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        messages = rx.messages("/e2e")
    assert proc.returncode == 0, err
    assert "Ctrl-C: stopping after the next save" in err
    report = json.loads((job_dir / "report.json").read_text())
    assert report["status"] == "stopped" and report["stop"]["rule"] == "user"
    assert report["kept"]["last"]["iteration"] == 100  # the save after the Ctrl-C, not lost
    assert "user at iteration" in out and "stopped after darknet's save at 100" in out
    assert "kept last" in out
    assert messages[0]["event"] == "started"
    assert messages[-1]["event"] == "stopped" and messages[-1]["kept"]
    assert mismatches_with_report(messages, report) == []
    assert report["notifications"]["sent"] == len({m["id"] for m in messages})
