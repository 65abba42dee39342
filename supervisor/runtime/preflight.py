"""Pre-flight: the job file, its darknet and its dataset checked before darknet starts (or a
job is queued).

`trainsup check` prints it; `trainsup run` blocks on errors, warns, or skips it, as asked.
`check_binary` proves the binary is darknet and builds the argv `run` will start it with, from
the flavour found: a job that passes it runs as checked.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from supervisor.darknet.cfg import shown
from supervisor.darknet.command import ArgvError, extra_args_problems, train_argv
from supervisor.dataset.check import CheckReport, check_dataset
from supervisor.dataset.findings import CODES, Finding
from supervisor.runtime.binary import BinaryError, Probe, verify_binary
from supervisor.spec import JobSpec, SpecError
from supervisor.training.events import Flavour

PreflightMode = Literal["block", "warn", "off"]
EvaluationSource = Literal["darknet", "supervisor"]


@dataclass(frozen=True, slots=True)
class BinaryCheck:
    """What `check_binary` found: the proven binary (None when it is not usable), the argv
    `run` would start it with (the job's own files; `run` passes patched copies), and every
    problem as (job-file key, message)."""

    probe: Probe | None
    argv: tuple[str, ...] | None
    problems: tuple[tuple[str, str], ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def evaluation_source(spec: JobSpec, flavour: Flavour) -> EvaluationSource:
    """Who measures mAP for this job with this flavour: `auto` is darknet's -map where the
    flavour has it (facts §2), else the supervisor's own `detector valid`."""
    source = spec.evaluation.source
    if source == "auto":
        return "supervisor" if flavour == "pjreddie" else "darknet"
    return source


def check_binary(spec: JobSpec, binary: str | None = None, *, files: bool = True) -> BinaryCheck:
    """Prove the job's darknet (or `binary`, e.g. `run --binary`) and check every setting that
    depends on its flavour against the flavour found, also under `flavour: auto`.
    `files=False` (`check --no-dataset`) leaves out whether the weights file exists."""
    try:
        probe = verify_binary(binary or spec.darknet.binary, spec.darknet.flavour)
    except BinaryError as e:
        return BinaryCheck(None, None, ((e.key, str(e)),))
    problems = [
        (f"darknet.extra_args.{i}", message)
        for i, message in extra_args_problems(probe.flavour, spec.darknet.extra_args)
    ]
    own = evaluation_source(spec, probe.flavour) == "supervisor"
    iou = spec.evaluation.iou_threshold
    if not own and iou != 0.5:
        problems.append(
            (
                "evaluation.iou_threshold",
                f"is {iou}, but darknet's -map measures at 0.5: set evaluation.source: "
                f"supervisor to score at {iou}, or use iou_threshold: 0.5",
            )
        )
    argv: tuple[str, ...] | None = None
    try:
        argv = tuple(
            train_argv(
                probe.path,
                probe.flavour,
                spec.darknet.data,
                spec.darknet.cfg,
                spec.darknet.weights if files else None,
                gpus=spec.darknet.gpus,
                map=not own,
                # Already reported one by one above; left out so the rest is still checked.
                extra_args=() if problems else spec.darknet.extra_args,
                cuda=probe.cuda,
            )
        )
    except ArgvError as e:
        problems.append((e.key or "darknet", str(e)))
    if problems:
        argv = None
    return BinaryCheck(probe, argv, tuple(problems))


def binary_findings(check: BinaryCheck, file: str | None) -> list[dict[str, Any]]:
    """`check_binary`'s problems in the shape of dataset findings (`--json` has one list)."""
    return [
        {
            "severity": "error",
            "code": "job_binary",
            "file": file,
            "line": None,
            "message": f"{key}: {message}",
            "fix": "point darknet.binary at a darknet executable and keep the settings to what "
            "its flavour takes (configs/job.example.yaml)",
        }
        for key, message in check.problems
    ]


def job_flavour(spec: JobSpec) -> Flavour:
    """The flavour whose label rule applies: the binary's as proven (the written one where the
    binary cannot tell, e.g. a wrapper script), else the written one; pjreddie (whose missing
    labels end training) when the binary is not usable here."""
    written = spec.darknet.flavour
    try:
        probe = verify_binary(spec.darknet.binary)
    except BinaryError:
        return "pjreddie" if written == "auto" else written
    return written if written != "auto" and not probe.decisive else probe.flavour


def check_job(
    spec: JobSpec, progress: Callable[[int, int], None] | None = None, *, decode: bool = True
) -> CheckReport:
    """The dataset checks of a job. Its backup= is the job dir's own, so not checked here.
    `decode=False` reads image headers only (no near-duplicate search). Warnings the job's
    `checks.accept` names become notes carrying the job's reason."""
    report = check_dataset(
        spec.darknet.data,
        spec.darknet.cfg,
        flavour=job_flavour(spec),
        progress=progress,
        managed_backup=True,
        decode=decode,
    )
    return accept_findings(report, spec.checks.accept)


def accept_findings(report: CheckReport, accept: Mapping[str, str]) -> CheckReport:
    """Apply a job's `checks.accept`: an accepted warning or note is shown as a note with the
    job's reason; an error cannot be accepted (it breaks the training whatever the reason),
    and a code no check has is a mistake — both are errors of the job file."""
    if not accept:
        return report
    extra: list[Finding] = []
    for code in accept:
        info = CODES.get(code)
        if info is None:
            near = difflib.get_close_matches(code, CODES, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            extra.append(
                Finding("error", "job_spec", None, None,
                        f"checks.accept: {shown(code)} is not a check code{hint}",
                        "use a code from docs/dataset-check.md")
            )  # fmt: skip
        elif info.severity == "error":
            extra.append(
                Finding("error", "job_spec", None, None,
                        f"checks.accept: {code} is an error: darknet breaks or learns wrong "
                        "data with it whatever the reason", "fix what the finding says")
            )  # fmt: skip
    findings = tuple(
        replace(f, severity="note", message=f"{f.message} — accepted by the job: {accept[f.code]}")
        if f.code in accept and f.severity != "error"
        else f
        for f in report.findings
    )
    return replace(report, findings=(*extra, *findings))


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


def format_binary_check(check: BinaryCheck) -> str:
    """The human lines of `check_binary`: what darknet was proven, or why it cannot run."""
    p = check.probe
    head = (
        f"darknet: {p.path} — {p.flavour} ({p.usage}; {p.evidence}"
        f"{'; CUDA build' if p.cuda else ''})"
        if p is not None
        else "darknet: not usable"
    )
    if check.ok:
        return head
    return "\n".join([head, *(f"  error: {key}: {message}" for key, message in check.problems)])
