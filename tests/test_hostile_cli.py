"""Hostile command lines (issue 14, points 2, 7 and 8): a clear error and exit status, never a
traceback, and nothing run before the arguments are known to be usable."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from supervisor import cli
from supervisor.darknet.cfg import Cfg
from supervisor.darknet.evaluate import EvaluationError, check_iou_threshold, evaluate_weights
from supervisor.darknet.weights import expected_weights_size
from tests.helpers import write_weights

LOG = "".join(f"{i}: 2.5, 2.5 avg, 0.001 rate, 0.1 seconds, {i * 64} images\n" for i in range(1, 6))

TINY_CFG = """[net]
batch=2
subdivisions=1
width=32
height=32
channels=3
max_batches=10

[convolutional]
filters=18
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=1
num=3
"""


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli.main, args)
    return result.exit_code, result.stdout, result.stderr


# --- analyze --cfg


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (b"", 1, "no sections"),
        (b"\x7fELF\x02\x01\x01\0" + bytes(range(256)) * 40, 1, "neither key=value"),
        (b"[net]\nbatch=1\nsteps=abc\npolicy=steps\nscales=.1\n", 3, "steps=abc"),
    ],
    ids=["empty", "binary", "steps=abc"],
)
def test_analyze_reports_a_bad_cfg_with_its_line(
    tmp_path: Path, content: bytes, line: int, words: str
) -> None:
    log = tmp_path / "train.log"
    log.write_text(LOG)
    cfg = tmp_path / "net.cfg"
    cfg.write_bytes(content)
    code, out, err = _invoke(["analyze", str(log), "--cfg", str(cfg)])
    assert code == 2 and out == ""
    assert err.startswith(f"error: {cfg}:{line}: ") and words in err and "Fix:" in err
    assert "Traceback" not in err and len(err) < 600


# --- the last-resort handler


def test_an_unexpected_exception_is_one_line_and_a_crash_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))

    def boom() -> None:
        raise RuntimeError("the schema exploded")

    monkeypatch.setattr("supervisor.spec.json_schema", boom)
    code, out, err = _invoke(["schema"])
    assert code == 70 and out == ""
    assert err.startswith("internal error: RuntimeError: the schema exploded (details written to ")
    assert "Traceback" not in err and err.count("\n") == 1
    (crash,) = (tmp_path / "state" / "trainsup" / "crashes").iterdir()
    assert str(crash) in err
    text = crash.read_text()
    assert "Traceback" in text and "the schema exploded" in text and "argv:" in text


def test_usage_errors_and_exits_are_clicks_own(tmp_path: Path) -> None:
    code, _, err = _invoke(["analyze"])
    assert code == 2 and "Usage:" in err and "internal error" not in err
    code, out, _ = _invoke(["--version"])
    assert code == 0 and "trainsup" in out
    code, _, err = _invoke(["no-such-command"])
    assert code == 2 and "No such command" in err


# --- evaluate


def test_iou_threshold_bounds() -> None:
    for ok in (0.5, 0.05, 0.95):
        check_iou_threshold(ok)
    for bad, words in ((50, "write 0.5 for 50 %"), (0, "(0, 1)"), (1, "(0, 1)"), (-0.5, "")):
        with pytest.raises(EvaluationError, match=r"not in \(0, 1\)") as info:
            check_iou_threshold(bad)
        assert words in str(info.value)


def test_evaluate_refuses_an_iou_percentage_before_touching_the_binary(tmp_path: Path) -> None:
    data, cfg, weights = tmp_path / "x.data", tmp_path / "x.cfg", tmp_path / "x.weights"
    for p in (data, cfg, weights):
        p.write_text("")
    sentinel = tmp_path / "ran"
    binary = tmp_path / "darknet"
    binary.write_text(f"#!/bin/sh\ntouch {sentinel}\n")
    binary.chmod(0o755)
    args = ["evaluate", "--data", str(data), "--cfg", str(cfg), str(weights)]
    code, _, err = _invoke([*args, "--iou", "50", "--binary", str(binary)])
    assert code == 2 and "--iou" in err and "write 0.5 for 50 %" in err
    assert not sentinel.exists()


def _valid_set(root: Path) -> tuple[Path, Path]:
    Image.new("RGB", (32, 32)).save(root / "a.jpg")
    (root / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "valid.txt").write_text(f"{root / 'a.jpg'}\n")
    (root / "obj.names").write_text("thing\n")
    data = root / "obj.data"
    data.write_text(f"classes=1\nvalid={root / 'valid.txt'}\nnames={root / 'obj.names'}\n")
    cfg = root / "tiny.cfg"
    cfg.write_text(TINY_CFG)
    return data, cfg


@pytest.mark.parametrize("body", [0, 64], ids=["20-byte header", "84-byte header"])
def test_a_header_only_weights_file_is_refused_before_darknet_runs(
    tmp_path: Path, body: int
) -> None:
    data, cfg = _valid_set(tmp_path)
    weights = write_weights(tmp_path / "short.weights", seen=200, body=body)
    expected = expected_weights_size(Cfg.load(cfg))
    assert expected is not None and expected > 84
    with pytest.raises(EvaluationError) as info:
        # A binary that does not exist: the refusal must come before any attempt to run it.
        asyncio.run(
            evaluate_weights(
                tmp_path / "no-darknet", data, cfg, weights, work_dir=tmp_path / "work"
            )
        )
    message = str(info.value)
    assert str(weights) in message and f"{expected:,} bytes" in message
    assert "truncated" in message and not (tmp_path / "work").exists()


def test_a_complete_weights_file_passes_the_size_check(tmp_path: Path) -> None:
    data, cfg = _valid_set(tmp_path)
    expected = expected_weights_size(Cfg.load(cfg))
    assert expected is not None
    weights = write_weights(tmp_path / "full.weights", seen=200, body=expected - 20)
    with pytest.raises(EvaluationError, match="cannot start darknet"):
        asyncio.run(
            evaluate_weights(
                tmp_path / "no-darknet", data, cfg, weights, work_dir=tmp_path / "work"
            )
        )


@pytest.mark.skipif(shutil.which("darknet") is None, reason="Debian's darknet is not installed")
def test_evaluate_command_exits_non_zero_on_a_header_only_file(tmp_path: Path) -> None:
    data, cfg = _valid_set(tmp_path)
    weights = write_weights(tmp_path / "short.weights", seen=200, body=64)
    code, out, err = _invoke(["evaluate", "--data", str(data), "--cfg", str(cfg), str(weights)])
    assert code == 1 and "mAP" not in out
    assert f"{weights}: 84 bytes" in err
