"""The daemon's runner gets the pre-flight check's report, as `trainsup run`'s does: kept as JSON
in the store at submit, read back when the job starts and when a restarted daemon re-adopts it,
so the diagnosis weighs the split sizes and findings the same way under both."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.dataset.check import CheckReport, check_dataset
from supervisor.dataset.synth import make_shapes_dataset
from supervisor.runtime.diagnosis import diagnosis_facts
from supervisor.service.admission import Refused, admit
from supervisor.service.config import parse_config
from supervisor.service.store import MIGRATIONS, SCHEMA_VERSION, Store
from supervisor.training.diagnose import diagnose
from supervisor.training.history import History
from supervisor.training.schedule import Schedule
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

pytestmark = pytest.mark.timeout(180)
MakeDaemon = Callable[..., Daemon]
VALID = 6  # images in the valid split: below the diagnosis's 20 (Thresholds.min_valid_images)
SMALL_VALID = f"the valid split has {VALID} images"


def test_a_check_report_round_trips_through_its_json(tmp_path: Path) -> None:
    ds = make_shapes_dataset(tmp_path / "d", train=8, valid=VALID, seed=5)
    # A broken label and a duplicate across the splits: findings the diagnosis counts.
    first = ds.train.read_text().split()[0]
    Path(first).with_suffix(".txt").write_text("0 1.7 0.5 0.2 0.2\n")
    ds.valid.write_text(ds.valid.read_text() + first + "\n")
    report = check_dataset(ds.data, None, decode=False)
    assert report.findings, "the fixture must have findings to round-trip"
    text = json.dumps(report.to_json())
    back = CheckReport.from_json(json.loads(text))
    assert back.to_json() == report.to_json()
    assert back.findings == report.findings
    assert [s.name for s in back.summary.splits] == ["train", "valid"]
    schedule = Schedule(max_batches=500, burn_in=100)
    facts = diagnosis_facts(schedule, back)
    assert facts == diagnosis_facts(schedule, report)
    assert facts.valid_images == VALID + 1 and facts.train_images == 8
    assert facts.findings.get("label_not_normalized") == 1
    assert facts.findings.get("split_overlap_path") == 1
    with pytest.raises(KeyError):
        CheckReport.from_json({"summary": {}, "findings": []})
    bad = json.loads(text)
    bad["findings"][0]["severity"] = "fatal"
    with pytest.raises(ValueError, match="fatal"):
        CheckReport.from_json(bad)


def test_a_store_of_schema_1_gains_the_checks_table_and_keeps_its_jobs(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    raw = sqlite3.connect(db)
    raw.executescript(MIGRATIONS[0])
    raw.execute(
        "INSERT INTO jobs (name, state, submitted, source, base_dir, spec_text, binary_name,"
        " binary_path, gpus) VALUES ('old', 'queued', 1.0, 'j.yaml', '/', '', 'darknet', '/d',"
        " '[]')"
    )
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    s = Store(db)
    assert s.version == SCHEMA_VERSION == 2
    assert s.check_report(1) is None, "a job from before keeps running without a report"
    new = s.add_job(name="new", priority=0, after=None, source="j.yaml", base_dir="/",
                    spec_text="", binary_name="darknet", binary_path="/d", gpus=[], user=None,
                    check_report='{"kept": true}')  # fmt: skip
    s.close()
    assert Store(db).check_report(new) == '{"kept": true}', "read back from disk"


def _admit(tmp_path: Path, standin: Path, job: str, preflight: str) -> Any:
    config = parse_config(
        f"data_roots: [{tmp_path}]\npreflight: {preflight}\nstate_dir: {tmp_path / 'state'}\n"
        f"binaries: {{darknet: {{path: {standin}, flavour: pjreddie}}}}\n"
    )
    return admit(config, job, "j.yaml", tmp_path, [])


def test_admission_keeps_the_report_and_applies_checks_accept(
    tmp_path: Path, standin: Path, stock_cfg: Path
) -> None:
    data = make_shapes_dataset(tmp_path / "d", train=8, valid=VALID, seed=5).data
    cfg = write_cfg(tmp_path / "c.cfg", stock_cfg, max_batches=300)
    job = f"name: j\ndarknet: {{data: {data}, cfg: {cfg}, gpus: []}}\n"
    a = _admit(tmp_path, standin, job, "block")
    assert a.check is not None
    assert {s.name: s.images for s in a.check.summary.splits} == {"train": 8, "valid": VALID}
    assert _admit(tmp_path, standin, job, "off").check is None
    # `checks.accept` as under `trainsup run`: an accepted warning becomes a note …
    codes = {f.code: f for f in a.check.findings if f.severity == "warning"}
    assert "max_batches_rule" in codes, codes
    accepted = _admit(
        tmp_path, standin, job + "checks: {accept: {max_batches_rule: a smoke test}}\n", "block"
    ).check
    note = next(f for f in accepted.findings if f.code == "max_batches_rule")
    assert note.severity == "note" and "a smoke test" in note.message
    # … and a code no check has refuses the job, as `run --preflight block` refuses it.
    with pytest.raises(Refused, match="max_batch_rule is not a check code"):
        _admit(tmp_path, standin, job + "checks: {accept: {max_batch_rule: typo}}\n", "block")


async def test_the_daemon_keeps_the_report_and_hands_it_to_the_runner_after_a_restart(
    tmp_path: Path, standin: Path, stock_cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (no runner): what `_start` and `readopt` give the runner as `runner.check`.
    from supervisor.service.daemon import Daemon as InProcess

    data = make_shapes_dataset(tmp_path / "d", train=8, valid=VALID, seed=5).data
    cfg = write_cfg(tmp_path / "c.cfg", stock_cfg, max_batches=300)
    job = f"name: j\ndarknet: {{data: {data}, cfg: {cfg}, gpus: []}}\n"

    def daemon(preflight: str) -> InProcess:
        d = InProcess(parse_config(
            f"state_dir: {tmp_path / 'state'}\ndata_roots: [{tmp_path}]\npreflight: {preflight}\n"
            f"binaries: {{darknet: {{path: {standin}, flavour: pjreddie}}}}\n"
        ))  # fmt: skip
        d.store, d.accepting = Store(tmp_path / "t.db"), True
        return d

    first = daemon("warn")
    checked = await first.submit(job, "j.yaml", tmp_path)
    first.store.close()
    again = daemon("off")  # a restarted daemon: only the store remembers the check
    report = again._check_report(checked)
    assert report is not None
    facts = diagnosis_facts(Schedule(max_batches=300, burn_in=50), report)
    assert (facts.valid_images, facts.train_images) == (VALID, 8)
    assert facts.findings.get("valid_class_too_few", 0) >= 1
    # A finished run that never evaluated: the check's split size is the evidence, as under
    # `trainsup run` (without it the diagnosis would know nothing of the valid split).
    d = diagnose(History(), facts)
    assert d.pattern == "insufficient_data" and SMALL_VALID in d.evidence[0]
    assert all(SMALL_VALID not in e for e in diagnose(History(), None).evidence)
    # `preflight: off` keeps no report: the runner gets None, as `run --preflight off` gives.
    unchecked = await again.submit(job, "j.yaml", tmp_path)
    assert again._check_report(unchecked) is None
    # A kept copy that cannot be read: None too, and the log says so.
    again.store.db.execute("UPDATE checks SET report = '{\"summary\": 1}' WHERE job_id = ?",
                           (checked,))  # fmt: skip
    capsys.readouterr()
    assert again._check_report(checked) is None
    assert "the kept pre-flight report cannot be read" in capsys.readouterr().out
    again.store.close()


def _diagnosis(job_dir: Path) -> dict[str, Any]:
    d: dict[str, Any] = json.loads((job_dir / "report.json").read_text())["diagnosis"]
    return d


def test_a_daemon_job_is_diagnosed_with_its_check_as_under_run_also_after_kill_9(
    make_daemon: MakeDaemon, short_tmp: Path, stock_cfg: Path
) -> None:
    # High mAP on a valid split that shares 3 images with train: only the check can tell that
    # the good mAP is partly memory (the diagnosis of a clean set has no such line).
    set_script(short_tmp, iteration_s=0.02, quality=[[0, 0.9]])
    ds = make_shapes_dataset(short_tmp / "d", train=20, valid=40, seed=5)
    shared = ds.valid.read_text().split()[:3]
    ds.train.write_text(ds.train.read_text() + "".join(f"{v}\n" for v in shared))
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=400)
    job = job_yaml(short_tmp, ds.data, cfg, name="shared")
    duplicates = "`trainsup check` found 3 duplicates between train and valid"

    d = make_daemon().start()
    # Started by this daemon (`_start`): the report kept at submit goes to the runner.
    started = d.wait_state(d.submit(job), {"finished", "failed"}, timeout=90)
    assert started["state"] == "finished", (started, d.log_text()[-3000:])
    first = _diagnosis(Path(started["job_dir"]))
    assert first["pattern"] == "good"
    assert any(duplicates in e for e in first["evidence"]), first
    assert first["advice"][0].startswith("remove the duplicates")
    # The live diagnosis in the job view has it too.
    assert any(duplicates in e for e in started["diagnosis"]["evidence"]), started["diagnosis"]

    # Re-adopted by a restarted daemon (`readopt`): the report comes from the store on disk.
    job_id = d.submit(job)
    wait_for(lambda: (d.job(job_id)["iteration"] or 0) >= 150, what="iteration 150")
    pid = d.job(job_id)["pid"]
    d.kill9()
    assert alive(pid), "darknet must outlive the daemon"
    d.start()
    j = d.wait_state(job_id, {"finished", "failed"}, timeout=90)
    assert j["state"] == "finished", (j, d.log_text()[-3000:])
    job_dir = Path(j["job_dir"])
    events = [json.loads(x) for x in (job_dir / "events.jsonl").read_text().splitlines()]
    assert [e["pid"] for e in events if e["type"] == "Attached"] == [pid], "re-adopted"
    assert _diagnosis(job_dir) == first
    assert j["diagnosis"] == started["diagnosis"]
    assert d.term() == 0

    # The same job under `trainsup run` (its own pre-flight): the same diagnosis.
    binary = str(d.config["binaries"]["darknet"]["path"])
    r = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", str(job), "--binary", binary,
         "--workdir", str(short_tmp / "run")],
        env=d.env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert _diagnosis(short_tmp / "run") == first
