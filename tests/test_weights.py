"""Weights headers, the iteration they encode, and when a save is complete."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from supervisor.darknet.cfg import Cfg
from supervisor.darknet.weights import (
    HEADER_SIZE,
    WeightsError,
    expected_weights_size,
    images_per_iteration,
    iteration_of_weights,
    newest_weights,
    read_weights_header,
    weights_complete,
)
from tests.helpers import write_weights

STOCK = Path("/usr/share/darknet/cfg")


def test_header_64_bit_seen(tmp_path: Path) -> None:
    # pjreddie writes (0, 2, 0, seen) with a uint64 seen; seen = iteration × batch.
    p = write_weights(tmp_path / "a.weights", 800, version=(0, 2, 0))
    h = read_weights_header(p)
    assert (h.major, h.minor, h.revision, h.seen, h.size) == (0, 2, 0, 800, 20)
    assert iteration_of_weights(p, 8, 1) == 100
    big = write_weights(tmp_path / "b.weights", 2**40, version=(0, 2, 5))
    assert read_weights_header(big).seen == 2**40


def test_header_32_bit_seen_for_old_versions(tmp_path: Path) -> None:
    p = write_weights(tmp_path / "old.weights", 6400, version=(0, 1, 0))
    h = read_weights_header(p)
    assert (h.seen, h.size) == (6400, 16)
    assert iteration_of_weights(p, 64, 16) == 100


def test_iteration_when_batch_is_not_a_multiple_of_subdivisions(tmp_path: Path) -> None:
    # batch 64 / subdivisions 24: 24 mini-batches of 2 images, so `seen` grows by 48 per
    # iteration; dividing by batch (64) would call iteration 200 iteration 150.
    assert images_per_iteration(64, 24) == 48
    assert images_per_iteration(64, 16) == 64
    p = write_weights(tmp_path / "c_200.weights", 200 * 48)
    assert iteration_of_weights(p, 64, 24) == 200


def test_iteration_needs_a_mini_batch(tmp_path: Path) -> None:
    p = write_weights(tmp_path / "a.weights", 100)
    with pytest.raises(ValueError, match="batch"):
        iteration_of_weights(p, 0, 1)
    with pytest.raises(ValueError, match="subdivisions=16 > batch=8"):
        iteration_of_weights(p, 8, 16)


@pytest.mark.parametrize("length", [0, 7, 12, 19])
def test_truncated_header_is_a_clear_error(tmp_path: Path, length: int) -> None:
    p = tmp_path / "t.weights"
    p.write_bytes(struct.pack("<iiiQ", 0, 2, 0, 100)[:length])
    with pytest.raises(WeightsError, match=rf"{length} bytes, shorter than .*truncated"):
        read_weights_header(p)
    assert not weights_complete(p)


def test_missing_weights_and_directories(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        read_weights_header(tmp_path / "none.weights")
    assert not weights_complete(tmp_path / "none.weights")
    with pytest.raises(WeightsError, match="is a directory"):
        read_weights_header(tmp_path)


def test_weights_complete_needs_the_networks_size(tmp_path: Path) -> None:
    p = write_weights(tmp_path / "a.weights", 100, body=40)
    assert weights_complete(p, expected_size=60)
    assert not weights_complete(p, expected_size=4_001_020)  # a save caught mid-write
    header_only = write_weights(tmp_path / "h.weights", 100, body=0)
    assert not weights_complete(header_only, expected_size=None)


def test_newest_weights_by_header_skips_short_files(tmp_path: Path) -> None:
    batch, size = 16, HEADER_SIZE + 64
    write_weights(tmp_path / "obj_1000.weights", 1000 * batch)
    write_weights(tmp_path / "obj_last.weights", 1100 * batch)
    write_weights(tmp_path / "obj_best.weights", 900 * batch)
    write_weights(tmp_path / "other_last.weights", 5000 * batch)  # another cfg
    write_weights(tmp_path / "obj.backup", 9000 * batch)  # pjreddie's name: not AlexeyAB's
    newest = newest_weights(tmp_path, "alexeyab", "obj", batch, 1, expected_size=size)
    assert newest is not None
    assert (newest.path.name, newest.iteration) == ("obj_last.weights", 1100)

    # _last half-written: its header is whole (seen of 1 200) but the body is short.
    write_weights(tmp_path / "obj_last.weights", 1200 * batch, body=10)
    newest = newest_weights(tmp_path, "alexeyab", "obj", batch, 1, expected_size=size)
    assert newest is not None and newest.path.name == "obj_1000.weights"

    pj = newest_weights(tmp_path, "pjreddie", "obj", batch, 1, expected_size=size)
    assert pj is not None and (pj.path.name, pj.iteration) == ("obj.backup", 9000)
    absent = tmp_path / "absent"
    assert newest_weights(absent, "pjreddie", "obj", batch, 1, expected_size=size) is None


def test_newest_weights_prefers_final_on_a_tie(tmp_path: Path) -> None:
    write_weights(tmp_path / "obj_last.weights", 6000)
    write_weights(tmp_path / "obj_final.weights", 6000)
    newest = newest_weights(tmp_path, "hankai", "obj", 1, 1, expected_size=HEADER_SIZE + 64)
    assert newest is not None and newest.file.kind == "final"


def test_size_of_a_small_network(tmp_path: Path) -> None:
    cfg = tmp_path / "s.cfg"
    cfg.write_text(
        "[net]\nchannels=3\n"
        "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\n"  # 4*4 + 3*4*9 = 124
        "[maxpool]\nsize=2\nstride=2\n"
        "[convolutional]\nfilters=2\nsize=1\n"  # 2 + 4*2 = 10
        "[route]\nlayers=-1,-3\n"  # 2 + 4 = 6 channels
        "[convolutional]\nfilters=1\nsize=1\ngroups=2\n"  # 1 + 3*1 = 4
        "[yolo]\n"
    )
    assert expected_weights_size(Cfg.load(cfg)) == HEADER_SIZE + 4 * (124 + 10 + 4)


def test_unmodelled_layers_give_no_size(tmp_path: Path) -> None:
    cfg = tmp_path / "r.cfg"
    cfg.write_text("[net]\n[rnn]\noutput=4\n")
    assert expected_weights_size(Cfg.load(cfg)) is None


@pytest.mark.darknet
@pytest.mark.parametrize(
    "name", ["yolov3-tiny", "yolov2-tiny", "yolov3", "yolov3-spp", "yolov2-voc", "tiny"]
)
def test_size_matches_what_darknet_writes(tmp_path: Path, darknet_bin: str, name: str) -> None:
    # `darknet partial` loads a header-only file and saves the whole network: the size of a
    # complete save of that cfg, written by darknet itself.
    src = STOCK / f"{name}.cfg"
    assert src.is_file(), f"{src} is missing: install Debian's darknet package"
    empty = write_weights(tmp_path / "h.weights", 0, body=0)
    out = tmp_path / "out.weights"
    subprocess.run(
        [darknet_bin, "partial", str(src), str(empty), str(out), "10000"],
        cwd=tmp_path, capture_output=True, timeout=120, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert expected_weights_size(Cfg.load(src)) == out.stat().st_size
