"""Weights names and headers, and darknet argv per flavour."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from supervisor.darknet.command import (
    EXTRA_FLAGS,
    ArgvError,
    WeightsError,
    classify_weights,
    is_final,
    iteration_from_weights_name,
    iteration_of_weights,
    map_argv,
    newest_weights,
    periodic_iterations,
    read_weights_header,
    train_argv,
    valid_argv,
    weights_complete,
    weights_names,
)
from supervisor.darknet.jobfiles import prepare_job_files


def write_weights(path: Path, seen: int, *, version: tuple[int, int, int] = (0, 2, 0),
                  body: int = 64) -> Path:  # fmt: skip
    major, minor, revision = version
    fmt = "<iiiQ" if major * 10 + minor >= 2 else "<iiiI"
    path.write_bytes(struct.pack(fmt, major, minor, revision, seen) + b"\0" * body)
    return path


# -- names -----------------------------------------------------------------------------------


def test_weights_names_per_flavour() -> None:
    pj = weights_names("pjreddie", "yolov3-tiny")
    assert (pj.last, pj.final, pj.best) == (
        "yolov3-tiny.backup",
        "yolov3-tiny_final.weights",
        None,
    )
    assert pj.periodic(900) == "yolov3-tiny_900.weights"
    for flavour in ("alexeyab", "hankai"):
        n = weights_names(flavour, "obj")
        assert (n.last, n.final, n.best) == (
            "obj_last.weights",
            "obj_final.weights",
            "obj_best.weights",
        )


def test_periodic_iterations() -> None:
    assert periodic_iterations("pjreddie", 25000) == [
        *range(100, 1000, 100),
        10000,
        20000,
    ]
    assert periodic_iterations("pjreddie", 450) == [100, 200, 300, 400]
    assert periodic_iterations("alexeyab", 6000) == [1000, 2000, 3000, 4000, 5000, 6000]
    assert periodic_iterations("hankai", 9999)[-1] == 9000
    assert periodic_iterations("alexeyab", 30000) == [10000, 20000, 30000]
    assert periodic_iterations("hankai", 1000, save_every=250) == [250, 500, 750, 1000]


@pytest.mark.parametrize(
    ("name", "base", "kind", "iteration"),
    [
        ("yolov3-tiny.backup", "yolov3-tiny", "last", None),
        ("yolov3-tiny_700.weights", "yolov3-tiny", "periodic", 700),
        ("my_net_v2_last.weights", "my_net_v2", "last", None),
        ("my_net_v2_10000.weights", "my_net_v2", "periodic", 10000),
        ("obj_best.weights", "obj", "best", None),
        ("obj_final.weights", "obj", "final", None),
        ("obj_ema.weights", "obj", "ema", None),
    ],
)
def test_classify_weights(name: str, base: str, kind: str, iteration: int | None) -> None:
    info = classify_weights(Path("/b") / name)
    assert info is not None
    assert (info.base, info.kind, info.iteration) == (base, kind, iteration)
    assert classify_weights(Path("/b") / name, base) == info
    assert classify_weights(Path("/b") / name, "other") is None


@pytest.mark.parametrize(
    "name", ["obj.weights", "obj_x.weights", "chart.png", "obj_last.weights.tmp"]
)
def test_not_darknet_saves(name: str) -> None:
    assert classify_weights(name) is None
    assert iteration_from_weights_name(name) is None
    assert not is_final(name)


def test_iteration_from_name_and_is_final() -> None:
    assert iteration_from_weights_name("/x/obj_4000.weights") == 4000
    assert iteration_from_weights_name("/x/obj_last.weights") is None
    assert is_final("/x/obj_final.weights") and not is_final("/x/obj_best.weights")


# -- header ----------------------------------------------------------------------------------


def test_header_64_bit_seen(tmp_path: Path) -> None:
    # pjreddie writes (0, 2, 0, seen) with a uint64 seen; seen = iteration × batch.
    p = write_weights(tmp_path / "a.weights", 800, version=(0, 2, 0))
    h = read_weights_header(p)
    assert (h.major, h.minor, h.revision, h.seen, h.size) == (0, 2, 0, 800, 20)
    assert iteration_of_weights(p, 8, "pjreddie") == 100
    big = write_weights(tmp_path / "b.weights", 2**40, version=(0, 2, 5))
    assert read_weights_header(big).seen == 2**40


def test_header_32_bit_seen_for_old_versions(tmp_path: Path) -> None:
    p = write_weights(tmp_path / "old.weights", 6400, version=(0, 1, 0))
    h = read_weights_header(p)
    assert (h.seen, h.size) == (6400, 16)
    assert iteration_of_weights(p, 64, "alexeyab") == 100


@pytest.mark.parametrize("length", [0, 7, 12, 19])
def test_truncated_header_is_a_clear_error(tmp_path: Path, length: int) -> None:
    p = tmp_path / "t.weights"
    p.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 100)[:length])
    with pytest.raises(WeightsError, match=rf"{length} bytes, shorter than .*truncated"):
        read_weights_header(p)
    assert not weights_complete(p)


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        read_weights_header(tmp_path / "none.weights")
    assert not weights_complete(tmp_path / "none.weights")


def test_weights_complete(tmp_path: Path) -> None:
    p = write_weights(tmp_path / "a.weights", 100, body=40)
    assert weights_complete(p)
    assert weights_complete(p, expected_size=60)
    assert not weights_complete(p, expected_size=80)  # still growing
    header_only = write_weights(tmp_path / "h.weights", 100, body=0)
    assert not weights_complete(header_only)


def test_iteration_needs_positive_batch(tmp_path: Path) -> None:
    p = write_weights(tmp_path / "a.weights", 100)
    with pytest.raises(ValueError, match="batch"):
        iteration_of_weights(p, 0, "pjreddie")


def test_newest_weights_by_header(tmp_path: Path) -> None:
    batch = 16
    write_weights(tmp_path / "obj_1000.weights", 1000 * batch)
    write_weights(tmp_path / "obj_last.weights", 1100 * batch)
    write_weights(tmp_path / "obj_best.weights", 900 * batch)
    write_weights(tmp_path / "other_last.weights", 5000 * batch)  # another cfg
    write_weights(tmp_path / "obj.backup", 9000 * batch)  # pjreddie's name: not AlexeyAB's
    newest = newest_weights(tmp_path, "alexeyab", "obj", batch)
    assert newest is not None
    assert (newest.path.name, newest.iteration) == ("obj_last.weights", 1100)

    # _last half-written (darknet printed 'Saving weights' and is writing): the next best.
    (tmp_path / "obj_last.weights").write_bytes(b"\0" * 10)
    newest = newest_weights(tmp_path, "alexeyab", "obj", batch)
    assert newest is not None and newest.path.name == "obj_1000.weights"

    pj = newest_weights(tmp_path, "pjreddie", "obj", batch)
    assert pj is not None and (pj.path.name, pj.iteration) == ("obj.backup", 9000)
    assert newest_weights(tmp_path / "absent", "pjreddie", "obj", batch) is None


def test_newest_weights_prefers_final_on_a_tie(tmp_path: Path) -> None:
    write_weights(tmp_path / "obj_last.weights", 6000)
    write_weights(tmp_path / "obj_final.weights", 6000)
    newest = newest_weights(tmp_path, "hankai", "obj", 1)
    assert newest is not None and newest.file.kind == "final"


# -- argv ------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    data, cfg, weights = tmp_path / "job.data", tmp_path / "obj.cfg", tmp_path / "w.weights"
    for p in (data, cfg):
        p.write_text("x=1\n")
    write_weights(weights, 0)
    return data, cfg, weights


def test_pjreddie_argv(files: tuple[Path, Path, Path]) -> None:
    data, cfg, weights = files
    assert train_argv("darknet", "pjreddie", data, cfg) == [
        "darknet", "detector", "train", str(data), str(cfg),
    ]  # fmt: skip
    assert train_argv("/usr/bin/darknet", "pjreddie", data, cfg, weights, gpus=[0, 1],
                      clear=True, extra_args=["-nogpu"]) == [
        "/usr/bin/darknet", "detector", "train", str(data), str(cfg), str(weights),
        "-gpus", "0,1", "-clear", "-nogpu",
    ]  # fmt: skip


@pytest.mark.parametrize("flag", ["-dont_show", "-map", "-mjpeg_port", "-mAP_epochs", "-verbose"])
def test_pjreddie_rejects_fork_flags(files: tuple[Path, Path, Path], flag: str) -> None:
    data, cfg, _ = files
    with pytest.raises(ArgvError, match=flag) as err:
        train_argv("darknet", "pjreddie", data, cfg, extra_args=[flag, "8090"])
    assert flag not in EXTRA_FLAGS["pjreddie"]
    assert "set it with" in str(err.value) or "positional" in str(err.value)


def test_pjreddie_map_option_is_refused(files: tuple[Path, Path, Path]) -> None:
    data, cfg, _ = files
    with pytest.raises(ArgvError, match="no -map"):
        train_argv("darknet", "pjreddie", data, cfg, map=True)


def test_alexeyab_argv(files: tuple[Path, Path, Path]) -> None:
    data, cfg, weights = files
    assert train_argv("darknet", "alexeyab", data, cfg) == [
        "darknet", "detector", "train", str(data), str(cfg), "-dont_show",
    ]  # fmt: skip
    argv = train_argv("darknet", "alexeyab", data, cfg, weights, map=True, gpus=[1],
                      extra_args=["-mAP_epochs", "2", "-iou_thresh", "0.75"])  # fmt: skip
    assert argv == [
        "darknet", "detector", "train", str(data), str(cfg), str(weights),
        "-dont_show", "-map", "-gpus", "1", "-mAP_epochs", "2", "-iou_thresh", "0.75",
    ]  # fmt: skip


def test_hankai_argv(files: tuple[Path, Path, Path]) -> None:
    data, cfg, _ = files
    argv = train_argv("darknet", "hankai", data, cfg, map=True, extra_args=["-verbose"])
    assert argv == [
        "darknet", "detector", "train", str(data), str(cfg),
        "-dont_show", "-nocolour", "-map", "-verbose",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flavour", "extra", "words"),
    [
        ("alexeyab", ["-map"], "map=True"),
        ("alexeyab", ["-gpus", "0"], "gpus="),
        ("hankai", ["-nocolour"], "always passed"),
        ("alexeyab", ["-mAP_epochs"], "needs a whole number"),
        ("alexeyab", ["-mAP_epochs", "-map"], "needs a whole number"),
        ("alexeyab", ["-thresh", "high"], "needs a number"),
        ("alexeyab", ["-saveweights", "500"], "not allowed for alexeyab"),
        ("alexeyab", ["-prefix", "/etc/x"], "not allowed"),
    ],
)
def test_extra_args_checked(
    files: tuple[Path, Path, Path], flavour: str, extra: list[str], words: str
) -> None:
    data, cfg, _ = files
    with pytest.raises(ArgvError, match=words):
        train_argv("darknet", flavour, data, cfg, extra_args=extra)  # type: ignore[arg-type]


def test_bad_gpus_and_missing_weights(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, cfg, _ = files
    with pytest.raises(ArgvError, match="twice"):
        train_argv("darknet", "alexeyab", data, cfg, gpus=[0, 0])
    with pytest.raises(ArgvError, match="≥ 0"):
        train_argv("darknet", "alexeyab", data, cfg, gpus=[-1])
    with pytest.raises(ArgvError, match="starts from scratch"):
        train_argv("darknet", "hankai", data, cfg, tmp_path / "typo.weights")
    with pytest.raises(ValueError, match="unknown darknet flavour"):
        train_argv("darknet", "yolov5", data, cfg)  # type: ignore[arg-type]


def test_relative_paths_become_absolute(
    files: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data, cfg, _ = files
    monkeypatch.chdir(data.parent)
    argv = train_argv("darknet", "pjreddie", data.name, cfg.name)
    assert argv[3:] == [str(data), str(cfg)]


def test_valid_and_map_argv(files: tuple[Path, Path, Path]) -> None:
    data, cfg, weights = files
    assert valid_argv("darknet", data, cfg, weights) == [
        "darknet", "detector", "valid", str(data), str(cfg), str(weights),
    ]  # fmt: skip
    assert valid_argv("darknet", data, cfg, weights, flavour="hankai")[-1] == "-nocolour"
    assert map_argv("darknet", data, cfg, weights, iou_thresh=0.5) == [
        "darknet", "detector", "map", str(data), str(cfg), str(weights), "-iou_thresh", "0.5",
    ]  # fmt: skip
    with pytest.raises(ArgvError, match="no `detector map`"):
        map_argv("darknet", data, cfg, weights, flavour="pjreddie")


# -- the real pjreddie binary ----------------------------------------------------------------

TINY_CFG = """[net]
batch=8
subdivisions=1
width=96
height=96
channels=3
learning_rate=0.001
max_batches=3
policy=constant

[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky

[convolutional]
filters=255
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=4,4, 8,8, 16,16
classes=80
num=3
random=1
"""


@pytest.mark.darknet
def test_pjreddie_trains_with_prepared_files(tmp_path: Path, darknet_bin: str) -> None:
    # batch=8 on 8 pictures: with batch=2 on 2 pictures this Debian build often dies by
    # SIGSEGV right after writing _final (seen while writing this test).
    # Labels sit next to the pictures: no "images" in the path, so darknet looks there.
    pics = tmp_path / "ds" / "pics"
    pics.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (96, 96), (20 * i, 90, 160)).save(pics / f"{i}.jpg")
        (pics / f"{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    (tmp_path / "ds" / "train.txt").write_text("".join(f"{pics / f'{i}.jpg'}\n" for i in range(8)))
    (tmp_path / "ds" / "obj.names").write_text("box\n")
    data = tmp_path / "ds" / "obj.data"
    data.write_text("classes=1\ntrain=train.txt\nnames=obj.names\nbackup=backup\n")
    cfg = tmp_path / "tiny.test.cfg"
    cfg.write_text(TINY_CFG)

    job = prepare_job_files(tmp_path / "job", data, cfg, cfg_changes={"classes": 1, "random": 0})
    argv = train_argv(darknet_bin, "pjreddie", job.data, job.cfg)
    done = subprocess.run(argv, cwd=job.run, stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=120, check=False, env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    out = (done.stdout + done.stderr).decode(errors="replace")
    # This Debian build sometimes dies by SIGSEGV right after writing _final, even with
    # batch=8 (seen in CI); the runner takes a complete _final as finished, and so does this
    # test: the checks below prove the file is whole.
    assert done.returncode in (0, -signal.SIGSEGV), out[-2000:]

    final = job.backup / weights_names("pjreddie", job.base).final
    assert final.name == "tiny_final.weights"  # base cut at the first '.'
    assert final.is_file(), out[-2000:]
    header = read_weights_header(final)
    assert (header.major, header.minor, header.revision) == (0, 2, 0)
    assert iteration_of_weights(final, 8, "pjreddie") == 3  # max_batches
    newest = newest_weights(job.backup, "pjreddie", job.base, 8)
    assert newest is not None and newest.path == final and weights_complete(final, newest.size)
