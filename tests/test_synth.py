"""The synthetic shapes dataset: layout darknet can read, honest labels, determinism, speed."""

from __future__ import annotations

import colorsys
import hashlib
import time
from pathlib import Path

import pytest
from PIL import Image

from supervisor.darknet.labels import label_path
from supervisor.dataset.synth import ShapesDataset, make_shapes_dataset
from supervisor.training.events import FLAVOURS


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> ShapesDataset:
    return make_shapes_dataset(tmp_path_factory.mktemp("ds") / "shapes", train=120, valid=30)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _digest(root: Path) -> dict[str, str]:
    return {
        # list files hold absolute paths: compare them with the root taken out
        str(p.relative_to(root)): hashlib.sha256(
            p.read_bytes().replace(str(root).encode(), b"<root>")
        ).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".jpg", ".png", ".txt")
    }


def test_layout_and_data_file(shapes: ShapesDataset) -> None:
    assert len(_lines(shapes.train)) == 120 and len(_lines(shapes.valid)) == 30
    assert _lines(shapes.names) == ["circle", "square"]
    assert shapes.backup.is_dir()  # pjreddie exits at its first save without it
    options = dict(line.split("=", 1) for line in _lines(shapes.data))
    assert options == {
        "classes": "2",
        "train": str(shapes.train),
        "valid": str(shapes.valid),
        "names": str(shapes.names),
        "backup": str(shapes.backup),
    }
    train = set(_lines(shapes.train))
    assert not train & set(_lines(shapes.valid))
    assert all(Path(p).is_absolute() and "/train/" in p for p in train)


def test_every_flavour_finds_each_label_next_to_its_image(shapes: ShapesDataset) -> None:
    images = _lines(shapes.train) + _lines(shapes.valid)
    suffixes = {Path(p).suffix for p in images}
    assert suffixes == {".jpg", ".png"}
    for image in images:
        sibling = str(Path(image).with_suffix(".txt"))
        assert Path(sibling).is_file()
        for flavour in FLAVOURS:
            assert label_path(image, flavour) == sibling


def test_labels_are_valid_and_varied(shapes: ShapesDataset) -> None:
    per_image = []
    classes = set()
    for image in _lines(shapes.train) + _lines(shapes.valid):
        with Image.open(image) as im:
            assert im.size == (96, 96) and im.mode == "RGB"
        rows = [line.split() for line in _lines(Path(image).with_suffix(".txt"))]
        per_image.append(len(rows))
        for cls, *nums in rows:
            cx, cy, w, h = map(float, nums)
            classes.add(int(cls))
            assert 0 < w < 1 and 0 < h < 1
            assert cx - w / 2 >= 0 and cy - h / 2 >= 0
            assert cx + w / 2 <= 1 + 1e-6 and cy + h / 2 <= 1 + 1e-6
    assert classes == {0, 1}
    assert set(per_image) <= {0, 1, 2, 3}
    assert 0 < per_image.count(0) < len(per_image) * 0.25  # some negatives, not many
    assert per_image.count(3) > 0


def test_labels_describe_what_was_drawn(shapes: ShapesDataset) -> None:
    """In the lossless PNGs: a square's fill reaches its box corners, a circle's does not,
    and each class has its own hue range (warm circles, cool squares)."""
    checked = agree = 0
    for image in _lines(shapes.train) + _lines(shapes.valid):
        if not image.endswith(".png"):
            continue
        with Image.open(image) as im:
            px = im.convert("RGB").load()
        assert px is not None
        for line in _lines(Path(image).with_suffix(".txt")):
            cls, *nums = line.split()
            cx, cy, w, h = (float(v) * 96 for v in nums)
            centre = px[int(cx), int(cy)]
            # one pixel in: past a square's outline, still outside a circle
            corner = px[round(cx - w / 2) + 1, round(cy - h / 2) + 1]
            assert isinstance(centre, tuple)
            hue, sat, _ = colorsys.rgb_to_hsv(*(c / 255 for c in centre))
            warm = hue <= 0.17 or hue >= 0.91
            checked += 1
            if cls == "0":
                agree += warm and sat >= 0.55 and corner != centre
            else:
                agree += 0.44 <= hue <= 0.79 and sat >= 0.55 and corner == centre
    assert checked >= 20
    # a later shape may cover up to a tenth of an earlier one, hiding a corner or centre
    assert agree >= 0.9 * checked


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = make_shapes_dataset(tmp_path / "a", train=20, valid=5, seed=7)
    b = make_shapes_dataset(tmp_path / "b", train=20, valid=5, seed=7)
    c = make_shapes_dataset(tmp_path / "c", train=20, valid=5, seed=8)
    assert _digest(a.root) == _digest(b.root)
    assert a.objects == b.objects
    digest_a, digest_c = _digest(a.root), _digest(c.root)
    assert sum(digest_a[k] != digest_c.get(k) for k in digest_a) > 20


def test_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    ds = make_shapes_dataset(tmp_path / "big")
    elapsed = time.perf_counter() - start
    assert ds.train_images == 300 and ds.valid_images == 60
    assert elapsed < 5.0, f"{elapsed:.1f} s for 360 images"


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("myimages", "pjreddie darknet would look for the labels"),
        ("drawings", "pjreddie darknet would look for the labels"),
        ("VOC/JPEGImages", "would look for the labels"),
        ("my data", "contains a blank"),
    ],
)
def test_folders_darknet_would_misread_are_refused(
    tmp_path: Path, folder: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_shapes_dataset(tmp_path / folder / "ds", train=1, valid=1)
    assert not (tmp_path / folder).exists()


def test_bad_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        make_shapes_dataset(tmp_path, train=0)
    with pytest.raises(ValueError, match="at least 32 pixels"):
        make_shapes_dataset(tmp_path, size=16)
