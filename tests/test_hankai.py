"""hank-ai darknet through a stand-in written from its source (tests/standins/hankai_standin.py,
docs/hankai.md): the parser on each console layout hank-ai has had, the probe, and `trainsup
run` end to end (darknet's own -map, `_best` kept, a plateau stop that TERMs it)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.darknet.cfg import Cfg
from supervisor.darknet.logparse import LogParser
from supervisor.darknet.weights import expected_weights_size
from supervisor.dataset.demo import STOCK_CFG, write_demo_cfg
from supervisor.dataset.synth import make_shapes_dataset
from supervisor.runtime.binary import probe_binary
from supervisor.training.events import (
    Event,
    FatalError,
    GpuError,
    Iteration,
    MapResult,
    WeightsSaved,
)
from tests.standins.hankai_standin import DEFAULT_MAPS, FORMATS, synthetic_loss

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)
MAX_BATCHES = 300  # demo cfg: batch 8, subdivisions 1, burn_in 50; -map every 100 (6 images)


@pytest.fixture(scope="session")
def stock_cfg() -> Path:
    if not STOCK_CFG.exists():
        msg = f"{STOCK_CFG} is missing: install Debian's darknet package (apt-get install darknet)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return STOCK_CFG


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny shapes dataset's .data file (6 train, 10 valid images)."""
    root = tmp_path_factory.mktemp("hankai-shapes")
    return make_shapes_dataset(root / "data", train=6, valid=10, seed=3).data


@pytest.fixture(scope="session")
def hankai(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """An executable `darknet` per console layout, running the stand-in with this Python."""
    made: dict[str, Path] = {}

    def make(fmt: str) -> Path:
        if fmt not in made:
            exe = tmp_path_factory.mktemp(f"hankai-{fmt}") / "darknet"
            exe.write_text(
                f"#!{sys.executable}\n# hank-ai darknet stand-in\nimport os, sys\n"
                f"sys.path.insert(0, {str(ROOT)!r})\n"
                f"os.environ.setdefault('TRAINSUP_HANKAI_FORMAT', {fmt!r})\n"
                "from tests.standins.hankai_standin import main\nsys.exit(main(sys.argv[1:]))\n"
            )
            exe.chmod(0o755)
            made[fmt] = exe
        return made[fmt]

    return make


def train_output(
    exe: Path, data: Path, cfg: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `detector train` as trainsup does and return its output (stdout and stderr)."""
    run_env = {**os.environ, "TRAINSUP_HANKAI_DELAY": "0", **(env or {})}
    argv = [str(exe), "detector", "train", str(data), str(cfg), "-dont_show", *flags]
    return subprocess.run(
        [*argv, "-gpus", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env,
        timeout=60,
        check=False,
    )


def parse(text: str, flavour: Any = "hankai") -> tuple[LogParser, list[Event]]:
    p = LogParser(flavour)
    events = p.feed(text) + p.close()
    return p, events


@pytest.fixture
def job_data(shapes: Path, tmp_path: Path) -> Path:
    """The dataset's .data with its own backup dir, as trainsup's job.data has."""
    backup = tmp_path / "backup"
    backup.mkdir()
    text = "".join(
        line + "\n" for line in shapes.read_text().splitlines() if not line.startswith("backup")
    )
    data = tmp_path / "job.data"
    data.write_text(text + f"backup={backup}\n")
    return data


@pytest.fixture
def cfg(stock_cfg: Path, tmp_path: Path) -> Path:
    return write_demo_cfg(
        tmp_path / "tiny.cfg", source=stock_cfg, max_batches=MAX_BATCHES, steps=(200, 250)
    )


# --- (a) the parser on each layout ---------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_parser_reads_iterations_evaluations_and_saves(
    fmt: str, hankai: Callable[[str], Path], job_data: Path, cfg: Path
) -> None:
    done = train_output(hankai(fmt), job_data, cfg, "-nocolour", "-map")
    assert done.returncode == 0, done.stdout[-2000:]
    _, events = parse(done.stdout)

    its = [e for e in events if isinstance(e, Iteration)]
    assert [e.iteration for e in its] == list(range(1, MAX_BATCHES + 1))
    for e in its:
        assert e.loss == pytest.approx(round(synthetic_loss(e.iteration), 3), abs=5e-4)
        assert e.images == e.iteration * 8  # iteration × batch × 1 GPU
        assert e.seconds is not None and e.seconds > 0
    assert its[-1].rate == pytest.approx(0.001 * 0.1 * 0.1)  # steps=200,250, scales .1,.1
    assert its[10].rate == pytest.approx(0.001 * (11 / 50) ** 4, abs=1e-8)  # burn_in, power 4

    maps = [e for e in events if isinstance(e, MapResult)]
    assert [(e.iteration, round(e.map, 4)) for e in maps] == [
        (100, DEFAULT_MAPS[0]),
        (200, DEFAULT_MAPS[1]),
        (300, DEFAULT_MAPS[2]),
    ]
    for m in maps:
        assert m.valid and m.iou_threshold == pytest.approx(0.5)

    saves = [(Path(e.path).name, e.iteration) for e in events if isinstance(e, WeightsSaved)]
    assert saves == [
        ("tiny_best.weights", 100),
        ("tiny_last.weights", 100),
        ("tiny_best.weights", 200),
        ("tiny_last.weights", 200),
        ("tiny_best.weights", 300),
        ("tiny_last.weights", 300),
        ("tiny_final.weights", 300),
    ]
    backup = Path(next(line for line in job_data.read_text().splitlines() if "backup" in line)[7:])
    size = expected_weights_size(Cfg.load(cfg))
    for name in ("tiny_best.weights", "tiny_last.weights", "tiny_final.weights"):
        path = backup / name
        assert path.stat().st_size == size
        with path.open("rb") as f:
            assert struct.unpack("<iiiQ", f.read(20)) == (0, 2, 5, 300 * 8)


@pytest.mark.parametrize("fmt", FORMATS)
def test_per_class_table_is_read(
    fmt: str, hankai: Callable[[str], Path], job_data: Path, cfg: Path
) -> None:
    done = train_output(hankai(fmt), job_data, cfg, "-nocolour", "-map")
    maps = [e for e in parse(done.stdout)[1] if isinstance(e, MapResult)]
    assert len(maps) == 3
    for e in maps:
        assert [(c.class_id, c.name) for c in e.per_class] == [(0, "circle"), (1, "square")]
        assert [c.ap for c in e.per_class] == pytest.approx([e.map + 0.04, e.map - 0.04])
        assert [(c.tp, c.fp) for c in e.per_class] == [(17, 2), (12, 5)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_flavour_is_detected_from_the_output(
    fmt: str, hankai: Callable[[str], Path], job_data: Path, cfg: Path
) -> None:
    done = train_output(hankai(fmt), job_data, cfg, "-nocolour")
    p, events = parse(done.stdout, None)
    assert p.flavour == "hankai"
    assert sum(isinstance(e, Iteration) for e in events) == MAX_BATCHES
    assert not any(isinstance(e, MapResult) for e in events)  # no -map: `mAP=DISABLED`


def test_default_colour_output_parses_like_nocolour(
    hankai: Callable[[str], Path], job_data: Path, cfg: Path
) -> None:
    # hank-ai colours its output by default, into a pipe too, and sets the terminal title.
    coloured = train_output(hankai("master"), job_data, cfg, "-map")
    assert "\x1b[1;37m" in coloured.stdout and "\x1b]2;" in coloured.stdout
    plain = train_output(hankai("master"), job_data, cfg, "-nocolour", "-map")
    assert "\x1b" not in plain.stdout

    def key(events: list[Event]) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        for e in events:
            if isinstance(e, Iteration):
                out.append((e.iteration, e.loss, e.avg_loss, e.rate, e.images))
            elif isinstance(e, MapResult):
                out.append((e.iteration, e.map, tuple(c.ap for c in e.per_class)))
            elif isinstance(e, WeightsSaved):
                out.append((e.iteration, e.path))
        return out

    assert key(parse(coloured.stdout)[1]) == key(parse(plain.stdout)[1])


def test_v3_precision_recall_lines_are_read(
    hankai: Callable[[str], Path], job_data: Path, cfg: Path
) -> None:
    # Up to v4.0 hank-ai printed AlexeyAB's ` for conf_thresh = 0.25, precision = …` lines.
    done = train_output(hankai("v3.0"), job_data, cfg, "-nocolour", "-map")
    first = next(e for e in parse(done.stdout)[1] if isinstance(e, MapResult))
    assert (first.precision, first.recall, first.f1) == (0.81, 0.76, 0.78)
    assert (first.tp, first.fp, first.fn) == (29, 7, 9)
    assert first.average_iou == pytest.approx(0.6813)


@pytest.mark.parametrize("fmt", ["v5.0", "v5.1", "master"])
def test_v5_precision_recall_lines_are_read(
    fmt: str, hankai: Callable[[str], Path], job_data: Path, cfg: Path
) -> None:
    done = train_output(hankai(fmt), job_data, cfg, "-nocolour", "-map")
    first = next(e for e in parse(done.stdout)[1] if isinstance(e, MapResult))
    assert (first.precision, first.recall, first.f1) == (0.81, 0.76, 0.78)
    assert (first.tp, first.fp, first.fn) == (29, 7, 9)


@pytest.mark.parametrize("fmt", ["v3.0", "master"])
def test_fatal_error_box_is_a_fatal_error(
    fmt: str, hankai: Callable[[str], Path], job_data: Path, cfg: Path, tmp_path: Path
) -> None:
    label = Path(Path(job_data).read_text().split("train=")[1].split("\n")[0])
    first = label.read_text().splitlines()[0]
    missing = Path(first.rsplit(".", 1)[0] + ".txt")
    moved = tmp_path / "moved.txt"
    missing.rename(moved)
    try:
        done = train_output(hankai(fmt), job_data, cfg, "-nocolour")
    finally:
        moved.rename(missing)
    assert done.returncode == -6  # abort(): SIGABRT
    assert f'failed to open annotation file "{missing}"' in done.stdout
    fatal = [e for e in parse(done.stdout)[1] if isinstance(e, FatalError)]
    assert fatal and "failed to open annotation file" in fatal[0].message


@pytest.mark.parametrize(("fmt", "colour"), [("v3.0", False), ("master", True), ("master", False)])
def test_a_cuda_error_box_is_a_gpu_error_as_alexeyabs(fmt: str, colour: bool) -> None:
    # `check_cuda_error`'s box (docs/hankai.md §6), written and aborted on by the stand-in's
    # `darknet_fatal_error`: a "cuda" GpuError, as AlexeyAB's `CUDA Error: …`, not a FatalError.
    message = (
        "current CUDA error: status=700 cudaErrorIllegalAddress: an illegal memory access was"
        " encountered"
    )
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.standins.hankai_standin import Console, fatal\n"
        f"print('CUDA status error: /src/darknet/src-lib/dark_cuda.cpp, cuda_pull_array(), line"
        f" #510', flush=True)\n"
        f"fatal(Console({colour}), {fmt!r}, '/src/darknet/src-lib/dark_cuda.cpp,"
        f" check_cuda_error(), line #70', {message!r})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -6  # abort(): SIGABRT
    assert ("\x1b[" in done.stdout) == colour
    events = parse(done.stdout)[1]
    assert [(type(e), getattr(e, "kind", None)) for e in events] == [(GpuError, "cuda")]
    assert message in events[0].message  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_probe_recognises_hankai(fmt: str, hankai: Callable[[str], Path]) -> None:
    probe = probe_binary(str(hankai(fmt)))
    assert probe.flavour == "hankai", probe
    assert probe.usage.startswith("Darknet"), probe.usage


# --- (b) `trainsup run` end to end ------------------------------------------------------------


def trainsup_run(
    tmp_path: Path, exe: Path, data: Path, cfg: Path, stop: dict[str, Any], maps: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    job = {
        "name": "hank",
        "darknet": {
            "binary": str(exe),
            "flavour": "hankai",
            "data": str(data),
            "cfg": str(cfg),
            "gpus": [0],
        },
        "evaluation": {"source": "darknet"},
        "stop": stop,
        "retain": {"best": True, "last": True, "top_k": 0},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    workdir = tmp_path / "run"
    env = {**os.environ, "TRAINSUP_HANKAI_DELAY": "0.003", "TRAINSUP_HANKAI_MAPS": maps}
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", str(path), "--workdir", str(workdir)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        timeout=110,
        check=False,
    )
    report = json.loads((workdir / "report.json").read_text())
    return done, report, workdir


def printed_evaluations(log: Path) -> list[tuple[int | None, float]]:
    events = LogParser("hankai").feed(log.read_text()) if log.exists() else []
    return [(e.iteration, round(e.map, 4)) for e in events if isinstance(e, MapResult)]


def weights_iteration(path: Path) -> int:
    with path.open("rb") as f:
        return int(struct.unpack("<iiiQ", f.read(20))[3] // 8)


OFF: dict[str, Any] = {"plateau": False, "overfit": False, "not_learning": False}


def test_run_to_the_end_keeps_darknets_best(
    tmp_path: Path, hankai: Callable[[str], Path], shapes: Path, cfg: Path
) -> None:
    done, r, workdir = trainsup_run(tmp_path, hankai("master"), shapes, cfg, OFF, "0.30,0.55,0.50")
    assert done.returncode == 0, done.stdout[-3000:]
    assert r["status"] == "finished", r.get("cause")
    assert "-map" in r["argv"] and "-nocolour" in r["argv"] and "-dont_show" in r["argv"]
    assert r["evaluation_source"] == "darknet"
    printed = printed_evaluations(workdir / "darknet.log")
    assert printed == [(100, 0.30), (200, 0.55), (300, 0.50)]
    assert [(e["iteration"], round(e["map"], 4)) for e in r["evaluations"]] == printed
    best = r["kept"]["best"]
    assert (best["iteration"], round(best["map"], 4)) == (200, 0.55)
    # Copied from darknet's _best.weights of iteration 200, before the end overwrote nothing
    # (300 was no new best), whole and with its iteration in the header.
    kept = Path(best["path"])
    assert kept.stat().st_size == expected_weights_size(Cfg.load(cfg))
    assert weights_iteration(kept) == 200
    last = r["kept"]["last"]
    assert last["iteration"] == MAX_BATCHES and weights_iteration(Path(last["path"])) == 300


def test_plateau_stop_terminates_hankai_after_its_save(
    tmp_path: Path, hankai: Callable[[str], Path], shapes: Path, stock_cfg: Path
) -> None:
    long_cfg = write_demo_cfg(
        tmp_path / "long.cfg", source=stock_cfg, max_batches=5000, steps=(300, 400)
    )
    stop = {
        "min_iterations": 300,
        "plateau": {"patience": 200, "min_delta": 0.02},
        "overfit": False,
        "not_learning": False,
    }
    maps = "0.20,0.40,0.60,0.62,0.615,0.625,0.61,0.62,0.618"
    done, r, workdir = trainsup_run(tmp_path, hankai("master"), shapes, long_cfg, stop, maps)
    assert done.returncode == 0, done.stdout[-3000:]
    assert r["status"] == "stopped", r.get("cause")
    assert r["stop"]["rule"] == "plateau"
    printed = printed_evaluations(workdir / "darknet.log")
    live = [(e["iteration"], round(e["map"], 4)) for e in r["evaluations"]]
    assert live == printed[: len(live)] and len(live) >= 6
    # Best: 0.62 at 400 (0.625 at 600 is within min_delta, but it is the higher mAP).
    top = max(printed[: len(live)], key=lambda e: e[1])
    best = r["kept"]["best"]
    assert (best["iteration"], round(best["map"], 4)) == top
    assert weights_iteration(Path(best["path"])) == best["iteration"]
    assert r["kept"]["last"]["iteration"] >= r["stop"]["iteration"]
    # Stopped long before max_batches; hank-ai's handler aborted on the TERM (no save of its own).
    assert r["stop"]["iteration"] < 1500
    assert "long_final" not in (workdir / "darknet.log").read_text()
    assert "signal handler invoked for signal #15" in (workdir / "darknet.log").read_text()


def test_the_probes_usage_line_is_plain_text(hankai: Callable[[str], Path]) -> None:
    # hank-ai colours the version string by default; the probe reads the text without it.
    probe = probe_binary(str(hankai("master")))
    assert probe.usage == 'Darknet V5 "Moonlit" v5.1-104-gf684e1d7 [Jun 27 2026]'


def missing_label_run(
    tmp_path: Path, exe: Path, cfg: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    ds = make_shapes_dataset(tmp_path / "broken", train=6, valid=4, seed=5)
    first = Path(ds.data.read_text().split("train=")[1].split("\n")[0]).read_text().split()[0]
    label = Path(first.rsplit(".", 1)[0] + ".txt")
    label.unlink()
    job = {
        "name": "nolabel",
        "darknet": {"binary": str(exe), "flavour": "hankai", "data": str(ds.data),
                    "cfg": str(cfg), "gpus": [0]},
        "evaluation": {"source": "darknet"},
        "stop": OFF,
    }  # fmt: skip
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    workdir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", str(path), "--workdir", str(workdir),
         "--preflight", "off"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TRAINSUP_HANKAI_DELAY": "0.003"}, timeout=110, check=False,
    )  # fmt: skip
    return done, json.loads((workdir / "report.json").read_text()), label


def test_a_missing_label_file_aborts_hankai_and_the_run_fails(
    tmp_path: Path, hankai: Callable[[str], Path], cfg: Path
) -> None:
    # hank-ai v2.1+: read_boxes() -> darknet_fatal_error -> abort(), a few iterations in.
    done, r, _ = missing_label_run(tmp_path, hankai("master"), cfg)
    assert done.returncode == 1, done.stdout[-3000:]
    assert r["status"] == "failed"
    assert r["exit"]["signal"] == "SIGABRT"


def test_a_missing_label_file_is_named_in_the_cause(
    tmp_path: Path, hankai: Callable[[str], Path], cfg: Path
) -> None:
    _, r, label = missing_label_run(tmp_path, hankai("master"), cfg)
    assert f'failed to open annotation file "{label}"' in r["cause"]
