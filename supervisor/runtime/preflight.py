"""Pre-flight: the job file and its dataset checked before darknet starts (or a job is queued).

`trainsup check` prints it; `trainsup run` blocks on errors, warns, or skips it, as asked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from supervisor.dataset.check import CheckReport, check_dataset
from supervisor.runtime.binary import BinaryError, detect_flavour, resolve_binary
from supervisor.spec import JobSpec, SpecError
from supervisor.training.events import Flavour

PreflightMode = Literal["block", "warn", "off"]


def job_flavour(spec: JobSpec) -> Flavour:
    """The flavour whose label rule applies: the spec's, else the binary's; pjreddie (whose
    missing labels end training) when the binary cannot be found here."""
    if spec.darknet.flavour != "auto":
        return spec.darknet.flavour
    try:
        return detect_flavour(resolve_binary(spec.darknet.binary))
    except BinaryError:
        return "pjreddie"


def check_job(
    spec: JobSpec, progress: Callable[[int, int], None] | None = None, *, decode: bool = True
) -> CheckReport:
    """The dataset checks of a job. Its backup= is the job dir's own, so not checked here.
    `decode=False` reads image headers only (no near-duplicate search)."""
    return check_dataset(
        spec.darknet.data,
        spec.darknet.cfg,
        flavour=job_flavour(spec),
        progress=progress,
        managed_backup=True,
        decode=decode,
    )


def spec_findings(err: SpecError) -> list[dict[str, Any]]:
    """Job-file problems in the shape of dataset findings (`--json` has one list of both)."""
    return [
        {
            "severity": "error",
            "code": "job_spec",
            "file": p.file,
            "line": p.line,
            "message": (f"{p.path}: " if p.path else "") + p.message,
            "fix": "see configs/job.example.yaml or `trainsup schema` for the allowed values",
        }
        for p in err.problems
    ]
