"""A job accepts dataset-check warnings on purpose (`checks.accept`), with its reason; errors
cannot be accepted. The demo job passes `check --strict` this way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.dataset.check import CheckReport
from supervisor.dataset.findings import finding
from supervisor.runtime.preflight import accept_findings

ROOT = Path(__file__).resolve().parent.parent


def report(*codes: str) -> CheckReport:
    from supervisor.dataset.check import Summary

    findings = tuple(finding(c, "x.cfg", 3, f"{c} says so", "fix it") for c in codes)
    return CheckReport(Summary.__new__(Summary), findings)


def test_an_accepted_warning_becomes_a_note_with_the_reason() -> None:
    r = accept_findings(report("steps_rule", "max_batches_rule"), {"steps_rule": "a demo"})
    by_code = {f.code: f for f in r.findings}
    assert by_code["steps_rule"].severity == "note"
    assert by_code["steps_rule"].message.endswith("accepted by the job: a demo")
    assert by_code["max_batches_rule"].severity == "warning"
    assert r.exit_status(strict=True) == 1


def test_errors_and_unknown_codes_cannot_be_accepted() -> None:
    r = accept_findings(
        report("label_class_out_of_range"),
        {"label_class_out_of_range": "I know", "step_rule": "typo"},
    )
    errors = [f for f in r.findings if f.severity == "error"]
    messages = " | ".join(f.message for f in errors)
    assert "label_class_out_of_range is an error" in messages
    assert "step_rule is not a check code (did you mean steps_rule?)" in messages
    assert r.exit_status() == 2


@pytest.mark.darknet
def test_the_demo_job_passes_check_strict(tmp_path: Path, darknet_bin: str) -> None:
    from supervisor.dataset.demo import make_demo

    demo = make_demo(tmp_path / "demo")  # the demo as users get it
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "check", str(demo.job), "--strict"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted by the job" in done.stdout
