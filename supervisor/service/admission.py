"""What the daemon accepts (DESIGN "Decisions" 7, least privilege): a job file that validates,
names its darknet by a name from the config's `binaries`, reads data only under `data_roots` —
the paths in the YAML, in its `.data` file and inside the train/valid lists — and asks for
devices this daemon has. Everything refused is refused at submit, with every reason.

Runs in a worker thread (a list of 100 000 images takes a moment to check); it only reads.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from supervisor.darknet.cfg import CfgError, DataFile
from supervisor.dataset.check import CheckReport, check_dataset
from supervisor.dataset.lists import read_list
from supervisor.dataset.render import format_report
from supervisor.runtime.preflight import accept_findings, check_binary
from supervisor.service.config import DaemonConfig
from supervisor.spec import JobSpec, SpecError, parse_spec

# How many paths outside the roots a refusal quotes (then a count).
SHOW_PATHS = 5


class Refused(Exception):
    """The job is not accepted; `reasons` each say what to change."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("\n".join(reasons))


@dataclass(frozen=True)
class Admitted:
    spec: JobSpec
    spec_text: str  # the job as the daemon runs it (defaults merged, flavour from the config)
    binary_name: str
    binary_path: str
    gpus: list[int]
    # The pre-flight's report, for the runner's diagnosis (as `trainsup run` passes its own);
    # None with `preflight: off`.
    check: CheckReport | None = None


def admit(
    config: DaemonConfig, text: str, source: str, base_dir: Path, gpus_here: list[int]
) -> Admitted:
    """Validate one job for this daemon; Refused with every reason otherwise."""
    try:
        spec = parse_spec(text, source, base_dir)
    except SpecError as e:
        raise Refused([str(e)]) from None
    reasons: list[str] = []
    name = spec.written("darknet.binary")
    known = ", ".join(sorted(config.binaries)) or "(none configured)"
    binary = None
    if "/" in name or name.startswith("~"):
        reasons.append(
            f"{source}: darknet.binary = {name}: is a path; under the daemon a job names its "
            f"darknet by a name from the config's binaries ({known})"
        )
    elif name not in config.binaries:
        reasons.append(
            f"{source}: darknet.binary = {name}: unknown binary name; this daemon runs {known} "
            "(ask the admin to add it to `binaries` in the daemon config)"
        )
    else:
        binary = config.binaries[name]
    if reasons:
        raise Refused(reasons)
    assert binary is not None

    # The job as the daemon runs it: the config's defaults under the user's keys, and the
    # binary's flavour where the job leaves it to detection. Kept as YAML (with the base dir
    # for relative paths) so that nothing a model dump masks — a notifier's secret — is lost.
    raw = yaml.safe_load(text)
    merged = _merge(copy.deepcopy(config.defaults), raw) if isinstance(raw, dict) else raw
    if binary.flavour != "auto" and _get(merged, "darknet", "flavour") in (None, "auto"):
        merged["darknet"]["flavour"] = binary.flavour
    spec_text = text
    if merged != raw:
        spec_text = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
        try:
            spec = parse_spec(spec_text, f"{source} (with the config's defaults)", base_dir)
        except SpecError as e:
            raise Refused([str(e)]) from None

    gpus = list(spec.darknet.gpus)
    if gpus:
        missing = [g for g in gpus if g not in gpus_here]
        if missing:
            have = ", ".join(map(str, gpus_here)) if gpus_here else "no GPU"
            reasons.append(
                f"{source}: darknet.gpus = {gpus}: this daemon has {have}; write gpus: [] to "
                "train on the CPU, or GPU indices it has"
            )
    elif config.cpu_slots == 0:
        reasons.append(
            f"{source}: darknet.gpus = []: this daemon runs no CPU jobs (cpu_slots: 0); "
            "ask for a GPU"
        )
    reasons += data_root_problems(config, spec, source)
    if reasons:
        raise Refused(reasons)
    # Only now, with every path known to be inside the roots, are the files read.
    problems, report = preflight(config, spec, str(binary.path))
    if problems:
        raise Refused(problems)
    return Admitted(
        spec=spec,
        spec_text=spec_text,
        binary_name=name,
        binary_path=str(binary.path),
        gpus=gpus,
        check=report,
    )


def _get(d: object, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged onto `base` (mappings key by key; anything else replaced)."""
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = _merge(base[k], v)
        else:
            base[k] = v
    return base


def preflight(
    config: DaemonConfig, spec: JobSpec, binary: str
) -> tuple[list[str], CheckReport | None]:
    """What `trainsup check` would refuse: the binary proven darknet (and the settings its
    flavour takes), then the dataset's errors (headers only, one process: the daemon shares
    the machine with trainings); and the dataset's report, None with `preflight: off`.
    The job's `checks.accept` applies as under `trainsup run`."""
    check = check_binary(spec, binary)
    if not check.ok or check.probe is None:
        return [f"{key}: {message}" for key, message in check.problems], None
    if config.preflight == "off":
        return [], None
    report = check_dataset(
        spec.darknet.data,
        spec.darknet.cfg,
        flavour=check.probe.flavour,
        workers=1,
        cache_dir=config.state() / "cache",
        managed_backup=True,
        decode=False,
    )
    report = accept_findings(report, spec.checks.accept)
    if report.exit_status() == 2 and config.preflight == "block":
        return [format_report(report)], report
    return [], report


class _Roots:
    """Is a path under one of the roots, after symlinks? Directories are resolved once."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = [os.path.realpath(r) for r in roots]
        self._dirs: dict[str, bool] = {}

    def _under(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.roots)

    def allows(self, path: str) -> bool:
        if os.path.islink(path):
            return self._under(os.path.realpath(path))
        d = os.path.dirname(path)
        ok = self._dirs.get(d)
        if ok is None:
            ok = self._dirs[d] = self._under(os.path.realpath(d))
        return ok


def data_root_problems(config: DaemonConfig, spec: JobSpec, source: str) -> list[str]:
    """Every data path the job would read that lies outside `data_roots`, as reasons."""
    roots = _Roots(config.data_roots)
    rootnames = ", ".join(str(r) for r in config.data_roots) or "none are configured"
    tail = f"this daemon reads data only under its data_roots ({rootnames})"
    reasons: list[str] = []
    d = spec.darknet
    for key, p in (
        ("darknet.data", d.data),
        ("darknet.cfg", d.cfg),
        ("darknet.weights", d.weights),
    ):
        if p is not None and not roots.allows(os.path.abspath(p)):
            reasons.append(f"{source}: {key} = {spec.written(key)}: outside the data roots; {tail}")
    if reasons:
        # The .data file itself may not be read: nothing inside it is looked at.
        return reasons
    try:
        data = DataFile.load(d.data)
    except (CfgError, OSError) as e:
        return [f"{source}: darknet.data: cannot read {d.data}: {e}"]
    base = Path(d.data).absolute().parent
    lists: list[tuple[str, str]] = []
    for key in ("train", "valid", "names"):
        value = data.value(key)
        if not value:
            continue
        path = os.path.normpath(base / value)
        if not roots.allows(path):
            reasons.append(f"{d.data}: {key} = {value}: outside the data roots; {tail}")
        elif key != "names":
            lists.append((key, path))
    flavour = spec.darknet.flavour if spec.darknet.flavour != "auto" else "pjreddie"
    for key, path in lists:
        try:
            entries, _ = read_list(Path(path), key, base, flavour)
        except OSError as e:
            reasons.append(f"{d.data}: {key} = {path}: cannot read the list: {e.strerror}")
            continue
        outside = [e for e in entries if e.image and not roots.allows(e.image)]
        if outside:
            shown = "; ".join(f"line {e.line}: {e.written}" for e in outside[:SHOW_PATHS])
            more = f" and {len(outside) - SHOW_PATHS} more" if len(outside) > SHOW_PATHS else ""
            reasons.append(
                f"{path}: {len(outside)} image path(s) outside the data roots ({shown}{more}); "
                f"{tail}"
            )
    return reasons
