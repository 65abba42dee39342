"""Shared fixtures.

`../shared/logs/` holds real darknet logs written by other people. They are never copied into
this repository: tests read them in place. In a user's clone without `../shared` those tests
skip with a message; under `CI=true` a missing `../shared` is a failure, not a skip.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TRAINSUP_SHARED", ROOT.parent / "shared"))
LOGS = SHARED / "logs"


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path} (set TRAINSUP_SHARED to the shared/ folder)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + " — CI must have ../shared", pytrace=False)
    pytest.skip(msg)


STOCK_CFG_DIR = Path("/usr/share/darknet/cfg")


def pytest_configure(config: pytest.Config) -> None:
    """Under CI nothing a test needs may be missing: some tests are parametrized (or marked
    skipif) from these folders at collection time, where a missing folder would silently
    collect nothing instead of failing."""
    if os.environ.get("CI") != "true":
        return
    missing = [
        f"{what} ({path})"
        for what, path in (
            ("the shared darknet logs", LOGS),
            ("Debian's darknet cfgs", STOCK_CFG_DIR),
        )
        if not path.is_dir()
    ]
    if missing:
        raise pytest.UsageError(
            "CI=true but " + " and ".join(missing) + " are missing: CI must have ../shared "
            "and `apt-get install -y darknet` (scripts/setup.sh does the latter)"
        )


@pytest.fixture(scope="session")
def logs_dir() -> Path:
    return _require(LOGS, "the shared darknet logs")


@dataclass(frozen=True)
class LogFacts:
    """One row of INDEX_details.tsv: an independent reading of a shared log."""

    file: str
    iter_lines: int
    first_iter: int | None
    last_iter: int | None
    decreases: int
    nan_iter_lines: int
    map_evals: int
    best_map: float | None
    best_map_iter: int | None
    final_map: float | None
    final_map_iter: int | None
    map_series: tuple[tuple[int, float], ...]


def _at(value: str) -> tuple[float | None, int | None]:
    if not value:
        return None, None
    m, it = value.split("@")
    return float(m), int(it)


def read_index(logs: Path) -> list[LogFacts]:
    rows = []
    with (logs / "INDEX_details.tsv").open(newline="") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            best, best_it = _at(r["best_map_eval(<=1)@iter"])
            final, final_it = _at(r["final_map_eval@iter"])
            series_field = next(k for k in r if k.startswith("map_series"))
            series = tuple(
                (int(a), float(b))
                for a, b in (p.split(":") for p in (r[series_field] or "").split())
            )
            rows.append(
                LogFacts(
                    file=r["file"],
                    iter_lines=int(r["iter_lines"]),
                    first_iter=int(r["first_iter_seen"]) if r["first_iter_seen"] else None,
                    last_iter=int(r["last_iter_seen"]) if r["last_iter_seen"] else None,
                    decreases=int(r["iter_number_decreases"]),
                    nan_iter_lines=int(r["nan_iter_lines"]),
                    map_evals=int(r["map_eval_result_lines"]),
                    best_map=best,
                    best_map_iter=best_it,
                    final_map=final,
                    final_map_iter=final_it,
                    map_series=series,
                )
            )
    return rows


@pytest.fixture(scope="session")
def log_index(logs_dir: Path) -> list[LogFacts]:
    return read_index(logs_dir)


@pytest.fixture(scope="session")
def darknet_bin() -> str:
    path = shutil.which("darknet")
    if path is None:
        msg = "the darknet binary is missing: `apt-get install -y darknet` (see README)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


@pytest.fixture(autouse=True)
def structlog_defaults() -> None:
    """Each test starts with structlog's defaults: the CLI's `main` configures it (WARNING and
    up) in-process, which would otherwise hide the log lines a later test captures."""
    import structlog

    structlog.reset_defaults()


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The dataset checks' fact cache lives in a temp dir, never in the user's ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


# --- the scripted stand-in darknet (tests/standins/scripted_darknet.py) -----------------------


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An executable named `darknet` that runs the scripted stand-in with this Python."""
    import sys

    d = tmp_path_factory.mktemp("standin-bin")
    exe = d / "darknet"
    exe.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.standins.scripted_darknet import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    exe.chmod(0o755)
    return exe


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny generated shapes dataset (6 train, 10 valid images): its .data file."""
    from supervisor.dataset.synth import make_shapes_dataset

    root = tmp_path_factory.mktemp("tiny")
    return make_shapes_dataset(root / "data", train=6, valid=10, seed=3).data


@pytest.fixture(scope="session")
def stock_cfg() -> Path:
    """Debian's yolov3-tiny.cfg, which the demo's and the tests' cfgs derive from."""
    from supervisor.dataset.demo import STOCK_CFG

    return _require(STOCK_CFG, "Debian's yolov3-tiny.cfg (apt-get install -y darknet)")
