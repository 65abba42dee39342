"""The spec, `trainsup check` and the argv darknet is started with agree (issue 8 point 5).

Specs go through to the argv for each flavour, against a binary of that flavour (scripted
stand-ins of the forks' mains; the real Debian darknet for pjreddie, which also trains with
the argv built for `gpus: []` and `-clear`): a job the spec accepts and `check` passes gets
exactly the argv `check` built, and whatever is refused is refused by the same table
(`EXTRA_FLAGS`, `MANAGED_FLAGS`, `CPU_FLAGS` in darknet/command.py).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from supervisor.darknet.command import (
    CPU_FLAGS,
    EXTRA_FLAGS,
    MANAGED_FLAGS,
    ArgvError,
    FlagValue,
    train_argv,
)
from supervisor.darknet.evaluate import Detection, GroundTruth, compute_map
from supervisor.darknet.jobfiles import prepare_job_files
from supervisor.runtime import binary
from supervisor.runtime.preflight import check_binary, evaluation_source
from supervisor.spec import JobSpec, SpecError, parse_spec
from supervisor.training.events import FLAVOURS, Flavour
from tests.helpers import box_dataset
from tests.test_command import TINY_CFG

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "job.example.yaml"
STANDIN = ROOT / "tests" / "standins" / "alexeyab_replay.py"
VALUES: dict[FlagValue, list[str]] = {"switch": [], "int": ["2"], "float": ["0.25"]}


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(binary, "_MEMORY", {})


@pytest.fixture
def binaries(tmp_path: Path) -> dict[Flavour, str]:
    """One executable per flavour that the probe proves to be that flavour."""
    pjreddie = tmp_path / "pj" / "darknet"
    hankai = tmp_path / "hank" / "darknet"
    for exe, body in [
        (pjreddie, 'echo "usage: $0 <function>" >&2'),
        (hankai, "printf 'Darknet/YOLO CLI usage:\\n\\n\\t\\tdarknet <command>\\n'"),
    ]:
        exe.parent.mkdir()
        exe.write_text(f"#!/bin/sh\n# darknet stand-in\n{body}\n")
        exe.chmod(0o755)
    return {"pjreddie": str(pjreddie), "alexeyab": str(STANDIN), "hankai": str(hankai)}


def write_job(root: Path, darknet: Mapping[str, object], evaluation: str = "auto") -> str:
    for name in ("obj.data", "yolo.cfg"):
        (root / name).touch()
    job = {
        "name": "agree",
        "darknet": {"data": "obj.data", "cfg": "yolo.cfg", **darknet},
        "evaluation": {"source": evaluation},
    }
    return yaml.safe_dump(job)


def runner_argv(spec: JobSpec, exe: str, flavour: Flavour) -> list[str]:
    """The argv the runner builds (runtime/runner.py `_argv`), on the job's own files."""
    return train_argv(
        exe,
        flavour,
        spec.darknet.data,
        spec.darknet.cfg,
        spec.darknet.weights,
        gpus=spec.darknet.gpus,
        map=evaluation_source(spec, flavour) == "darknet",
        extra_args=spec.darknet.extra_args,
    )


def extra_cases() -> list[list[str]]:
    """Every flag of every flavour with a valid value, the managed ones, and hostile ones."""
    cases: list[list[str]] = [[]]
    for flavour in FLAVOURS:
        for flag, kind in EXTRA_FLAGS[flavour].items():
            cases.append([flag, *VALUES[kind]])
    cases += [[flag, "0"] if takes else [flag] for flag, (_, takes) in MANAGED_FLAGS.items()]
    cases += [["; rm -rf /"], ["-mjpeg_port"], ["-thresh", "high"], ["-prefix", "/etc/x"]]
    return cases


@pytest.mark.parametrize("found", FLAVOURS)
@pytest.mark.parametrize("written", ["auto", "same"])
def test_spec_check_and_argv_agree(
    tmp_path: Path, binaries: dict[Flavour, str], found: Flavour, written: str
) -> None:
    exe = binaries[found]
    flavour = found if written == "same" else "auto"
    seen_ok = seen_refused = 0
    for gpus, extra, source in itertools.product(
        ([], [0], [0, 1]), extra_cases(), ("auto", "supervisor", "darknet")
    ):
        darknet = {"binary": exe, "flavour": flavour, "gpus": gpus, "extra_args": extra}
        text = write_job(tmp_path, darknet, source)
        case = f"{found} flavour={flavour} gpus={gpus} extra={extra} source={source}"
        try:
            spec = parse_spec(text, "job.yaml", tmp_path)
        except SpecError:
            # Whatever the spec refuses, the argv builder refuses for the flavour found.
            spec = parse_spec(write_job(tmp_path, {"binary": exe}), "job.yaml", tmp_path)
            with pytest.raises(ArgvError):
                train_argv(
                    exe,
                    found,
                    spec.darknet.data,
                    spec.darknet.cfg,
                    gpus=gpus,
                    map=source == "darknet" or (source == "auto" and found != "pjreddie"),
                    extra_args=extra,
                )
            seen_refused += 1
            continue
        checked = check_binary(spec)
        assert checked.probe is not None and checked.probe.flavour == found, case
        try:
            argv = runner_argv(spec, checked.probe.path, found)
        except ArgvError:
            assert not checked.ok, f"{case}: check passed a job the runner cannot start"
            seen_refused += 1
            continue
        if checked.ok:
            # A job that passes check runs as checked: the very same argv.
            assert checked.argv == tuple(argv), case
            assert_argv_is_darknets(argv, found, gpus)
            seen_ok += 1
        else:
            # Only settings the runner itself refuses later (darknet's -map scores at 0.5).
            assert [k for k, _ in checked.problems] == ["evaluation.iou_threshold"], case
    assert seen_ok > 20 and seen_refused > 20


def assert_argv_is_darknets(argv: list[str], flavour: Flavour, gpus: list[int]) -> None:
    assert argv[1:3] == ["detector", "train"]
    rest = argv[5:]
    assert ("-nogpu" in rest) == (not gpus and flavour == "pjreddie")
    assert ("-gpus" in rest) == bool(gpus)
    own = {"-map", "-gpus", *CPU_FLAGS[flavour]}
    if flavour != "pjreddie":
        own.add("-dont_show")
    if flavour == "hankai":
        own.add("-nocolour")
    values = re.compile(r"\d+(?:[.,]\d+)*")
    for arg in rest:
        assert arg in own or arg in EXTRA_FLAGS[flavour] or values.fullmatch(arg), (arg, argv)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_example_lists_the_flags_the_argv_builder_takes(flavour: Flavour) -> None:
    text = EXAMPLE.read_text()
    comment = " ".join(
        line.strip().lstrip("#").strip()
        for line in text.split("  extra_args:")[0].split("  gpus:")[-1].splitlines()[1:]
    )
    names = {"pjreddie": "pjreddie accepts only", "alexeyab": "AlexeyAB", "hankai": "hank-ai"}
    listed = re.search(re.escape(names[flavour]) + r" (-[^;(]+?)(?:[;(]|Default)", comment)
    assert listed is not None, comment
    flags = {f.split()[0].rstrip(".") for f in listed.group(1).split(",")}
    assert flags == set(EXTRA_FLAGS[flavour])
    for managed in MANAGED_FLAGS:
        assert managed in comment  # each named as set by the supervisor
    assert yaml.safe_load(text)["darknet"]["extra_args"] == []


def test_gpus_empty_is_the_cpu_per_flavour(tmp_path: Path, binaries: dict[Flavour, str]) -> None:
    argv = {}
    for flavour in ("pjreddie", "alexeyab"):
        spec = parse_spec(
            write_job(tmp_path, {"binary": binaries[flavour], "gpus": []}), "job.yaml", tmp_path
        )
        result = check_binary(spec)
        assert result.ok and result.argv is not None
        argv[flavour] = result.argv
    assert argv["pjreddie"][5:] == ("-nogpu",)
    assert argv["alexeyab"][5:] == ("-dont_show", "-map")  # a CPU build needs nothing
    # hank-ai cannot: refused in the spec when written, at check when found.
    with pytest.raises(SpecError, match="no -nogpu"):
        parse_spec(write_job(tmp_path, {"flavour": "hankai", "gpus": []}), "job.yaml", tmp_path)
    spec = parse_spec(
        write_job(tmp_path, {"binary": binaries["hankai"], "gpus": []}), "job.yaml", tmp_path
    )
    [(key, message)] = check_binary(spec).problems
    assert key == "darknet.gpus" and 'Type "yes"' in message


@pytest.mark.parametrize("iou", [1.0, 0.0, -0.5])
def test_iou_threshold_the_spec_accepts_is_what_the_evaluator_takes(
    tmp_path: Path, iou: float
) -> None:
    def spec_text(value: float) -> str:
        threshold = f"source: supervisor\n  iou_threshold: {value}"
        return write_job(tmp_path, {}, "supervisor").replace("source: supervisor", threshold)

    with pytest.raises(SpecError, match=r"\(0, 1\)"):
        parse_spec(spec_text(iou), "job.yaml", tmp_path)
    # A perfect detection is a hit at any threshold the spec accepts (a hit needs IoU above it).
    truth = {"img": [GroundTruth(0, 10, 10, 50, 50)]}
    perfect = [Detection("img", 0, 0.9, 10, 10, 50, 50)]
    for ok in (0.001, 0.5, 0.999):
        spec = parse_spec(spec_text(ok), "job.yaml", tmp_path)
        threshold = spec.evaluation.iou_threshold
        assert compute_map(perfect, truth, ["a"], iou_threshold=threshold).map == 1.0
    with pytest.raises(ValueError, match="not in"):
        compute_map(perfect, truth, ["a"], iou_threshold=1.0)


@pytest.mark.darknet
def test_pjreddie_trains_with_the_cpu_argv_check_built(tmp_path: Path, darknet_bin: str) -> None:
    """Debian's darknet with `gpus: []` and `-clear`: -nogpu and -clear are removed from argv
    by pjreddie's main and run_detector, so the positional paths stay where they are."""
    data = box_dataset(tmp_path / "ds")
    cfg = tmp_path / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    text = yaml.safe_dump(
        {
            "name": "cpu",
            "darknet": {
                "binary": "darknet",
                "data": str(data),
                "cfg": str(cfg),
                "gpus": [],
                "extra_args": ["-clear"],
            },
        }
    )
    spec = parse_spec(text, "job.yaml", tmp_path)
    checked = check_binary(spec)
    assert checked.ok and checked.probe is not None and checked.probe.path == darknet_bin
    assert checked.argv is not None and checked.argv[5:] == ("-nogpu", "-clear")

    job = prepare_job_files(tmp_path / "job", data, cfg, cfg_changes={"classes": 1, "random": 0})
    argv = train_argv(
        checked.probe.path,
        checked.probe.flavour,
        job.data,
        job.cfg,
        gpus=spec.darknet.gpus,
        extra_args=spec.darknet.extra_args,
    )
    assert argv[5:] == list(checked.argv[5:])
    done = subprocess.run(argv, cwd=job.run, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=120, check=False, env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    out = (done.stdout + done.stderr).decode(errors="replace")
    # Debian's build sometimes dies by SIGSEGV right after writing a complete _final.
    assert done.returncode in (0, -signal.SIGSEGV), out[-2000:]
    assert "Couldn't open file" not in out, out[-2000:]
    assert (job.backup / "tiny_final.weights").is_file(), out[-2000:]
    assert argv[3] == str(job.data)
