"""Label paths per flavour (facts §4b) and the tolerant YOLO label reader."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from supervisor.darknet.labels import Box, label_path, read_yolo_labels


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        # the first `images` anywhere, even inside a folder name; later ones stay
        ("/d/myimages/x.jpg", "/d/mylabels/x.txt"),
        ("/images/a/images/x.jpg", "/labels/a/images/x.txt"),
        # `images` runs first, so a path with both ends with two `labels` folders
        ("/data/images/JPEGImages/x.jpg", "/data/labels/labels/x.txt"),
        ("/VOC2007/JPEGImages/000001.jpg", "/VOC2007/labels/000001.txt"),
        # `raw` too (not in facts §4b; the Debian binary does it: see the darknet test below)
        ("/d/drawings/x.jpg", "/d/dlabelsings/x.txt"),
        ("/d/x.png", "/d/x.txt"),
        ("/d/x.JPG", "/d/x.txt"),
        ("/d/x.JPEG", "/d/x.txt"),
        # extensions darknet does not know keep their path: it reads the image as labels
        ("/d/x.jpeg", "/d/x.jpeg"),
        ("/d/x.bmp", "/d/x.bmp"),
        # the first `.jpg` anywhere, not the extension
        ("/d/a.jpg.d/b.jpg", "/d/a.txt.d/b.jpg"),
        ("rel/x.jpg", "rel/x.txt"),
    ],
)
def test_pjreddie(image: str, expected: str) -> None:
    assert label_path(image, "pjreddie") == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("/coco/images/train2017/x.jpg", "/coco/labels/train2017/x.txt"),
        ("/coco/images/val2014/x.png", "/coco/labels/val2014/x.txt"),
        ("/VOC/JPEGImages/x.jpg", "/VOC/labels/x.txt"),
        ("C:\\coco\\images\\val2017\\x.jpg", "C:\\coco\\labels\\val2017\\x.txt"),
        # other `images` folders stay: the label sits next to the image
        ("/d/images/x.jpg", "/d/images/x.txt"),
        ("/d/myimages/x.jpg", "/d/myimages/x.txt"),
        ("/d/drawings/x.jpg", "/d/drawings/x.txt"),
        ("/d/x.jpeg", "/d/x.txt"),
        ("/d/x.TIFF", "/d/x.txt"),
        ("/d/x.bmp", "/d/x.txt"),
        # only all-lower or all-upper extensions
        ("/d/x.Jpg", "/d/x.Jpg"),
        # the first `.jpg` must end the path, else nothing is replaced
        ("/d/a.jpg.d/b.jpg", "/d/a.jpg.d/b.jpg"),
        ("  /d/x.jpg \t", "/d/x.txt"),
    ],
)
def test_alexeyab(image: str, expected: str) -> None:
    assert label_path(image, "alexeyab") == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("/d/images/x.jpeg", "/d/images/x.txt"),
        ("/d/x.Jpg", "/d/x.txt"),
        ("/d/a.jpg.d/b.jpg", "/d/a.jpg.d/b.txt"),
        # the last `.` of the whole path, even in a folder
        ("/d/v1.2/img", "/d/v1.txt"),
        ("noext", "noext.txt"),
    ],
)
def test_hankai(image: str, expected: str) -> None:
    assert label_path(image, "hankai") == expected


def test_unknown_flavour() -> None:
    with pytest.raises(ValueError, match="unknown darknet flavour 'yolov8'"):
        label_path("/d/x.jpg", "yolov8")  # type: ignore[arg-type]


_TINY_CFG = """[net]
batch=1
subdivisions=1
width=32
height=32
channels=3
learning_rate=0.001
max_batches=1
policy=constant
[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear
[yolo]
mask=0,1,2
anchors=10,14,23,27,37,58
classes=2
num=3
random=0
"""


@pytest.mark.darknet
def test_pjreddie_rule_matches_the_binary(darknet_bin: str, tmp_path: Path) -> None:
    """darknet names the label file it cannot open; our rule must name the same file."""
    folder = tmp_path / "drawings" / "myimages"
    folder.mkdir(parents=True)
    image = folder / "a.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(image)
    (tmp_path / "train.txt").write_text(f"{image}\n")
    (tmp_path / "n.names").write_text("a\nb\n")
    (tmp_path / "backup").mkdir()
    (tmp_path / "t.data").write_text(
        f"classes=2\ntrain={tmp_path}/train.txt\nnames={tmp_path}/n.names\n"
        f"backup={tmp_path}/backup\n"
    )
    (tmp_path / "t.cfg").write_text(_TINY_CFG)
    run = subprocess.run(
        [darknet_bin, "detector", "train", str(tmp_path / "t.data"), str(tmp_path / "t.cfg")],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Couldn't open file: (.*)", run.stderr + run.stdout)
    assert found is not None, run.stderr[-2000:]
    assert found.group(1) == label_path(str(image), "pjreddie")
    assert "/dlabelsings/mylabels/" in found.group(1)


def test_read_tolerant(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_bytes(
        b"\xef\xbb\xbf0 0.5 0.5 0.2 0.4\r\n"  # BOM and CRLF
        b"\n"
        b"1 0.1 0.2\n"  # too short
        b"x 0.1 0.2 0.3 0.4\n"  # class not a number
        b"1 nan 0.2 0.3 0.4\n"  # not finite
        b"  1   0.25 0.75 0.1 0.1  extra\n"
    )
    assert read_yolo_labels(path) == [
        Box(0, 0.5, 0.5, 0.2, 0.4),
        Box(1, 0.25, 0.75, 0.1, 0.1),
    ]


def test_read_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "neg.txt"
    empty.write_text("")
    assert read_yolo_labels(empty) == []
    with pytest.raises(FileNotFoundError):
        read_yolo_labels(tmp_path / "missing.txt")
