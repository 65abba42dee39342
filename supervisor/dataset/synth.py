"""A small synthetic detection dataset (circles and squares) for the demo and the tests.

Images sit next to their label files in `train/` and `valid/`, folders whose paths contain none
of the words darknet rewrites (`images`, `JPEGImages`, `raw`: facts §4b), so pjreddie, AlexeyAB
and hank-ai all find the labels. The same seed gives the same files, byte for byte.
"""

from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageStat

from supervisor.darknet.labels import label_path
from supervisor.training.events import FLAVOURS

CLASSES: tuple[str, ...] = ("circle", "square")
NEGATIVE_SHARE = 0.1  # images without objects: darknet needs an empty label file for each


@dataclass(frozen=True, slots=True)
class ShapesDataset:
    """Paths of a generated dataset (all absolute) and what it holds."""

    root: Path
    data: Path  # obj.data: classes, train, valid, names, backup
    names: Path
    train: Path  # list of training images
    valid: Path  # list of validation images
    backup: Path
    classes: tuple[str, ...]
    train_images: int
    valid_images: int
    objects: dict[str, int]  # per class name, both splits


def _check_root(root: Path) -> None:
    if any(c.isspace() for c in str(root)):
        # pjreddie strips every blank inside a .data line, so such a path would not be found.
        raise ValueError(
            f"dataset folder {root} contains a blank; pjreddie darknet cannot read such paths "
            "from a .data file — choose a folder without spaces"
        )
    probe = str(root / "train" / "0.jpg")
    for flavour in FLAVOURS:
        found = label_path(probe, flavour)
        if found != probe[: -len(".jpg")] + ".txt":
            raise ValueError(
                f"dataset folder {root}: {flavour} darknet would look for the labels of {probe} "
                f"at {found} (it rewrites 'images', 'JPEGImages' and 'raw' anywhere in a path) — "
                "choose a folder whose path has none of these words"
            )


def _colour(rng: random.Random, hues: tuple[float, float]) -> tuple[int, int, int]:
    h = rng.uniform(*hues) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    return round(r * 255), round(g * 255), round(b * 255)


def _random_rgb(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def _background(rng: random.Random, size: int) -> Image.Image:
    kind = rng.randrange(4)
    if kind == 0:  # flat colour
        img = Image.new("RGB", (size, size), _random_rgb(rng))
    elif kind == 1:  # linear gradient at a random angle between two colours
        mask = Image.linear_gradient("L").rotate(rng.uniform(0, 360), expand=False)
        mask = mask.resize((size, size))
        a = Image.new("RGB", (size, size), _random_rgb(rng))
        b = Image.new("RGB", (size, size), _random_rgb(rng))
        img = Image.composite(a, b, mask)
    elif kind == 2:  # blotches: coarse random colours, smoothly upscaled
        cells = rng.randrange(3, 8)
        small = Image.frombytes("RGB", (cells, cells), rng.randbytes(cells * cells * 3))
        img = small.resize((size, size), Image.Resampling.BICUBIC)
    else:  # fine noise over a colour
        noise = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
        img = Image.blend(Image.new("RGB", (size, size), _random_rgb(rng)), noise, 0.35)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randrange(0, 5)):  # clutter: lines and triangles, never a class shape
        pts = [(rng.uniform(0, size), rng.uniform(0, size)) for _ in range(rng.choice((2, 3)))]
        if len(pts) == 2:
            draw.line(pts, fill=_random_rgb(rng), width=rng.randrange(1, 3))
        else:
            draw.polygon(pts, fill=_random_rgb(rng))
    return img


def _overlaps(box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]]) -> bool:
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        iw = min(x + w, bx + bw) - max(x, bx)
        ih = min(y + h, by + bh) - max(y, by)
        if iw > 0 and ih > 0 and iw * ih > 0.1 * min(w * h, bw * bh):
            return True
    return False


def _contrast(img: Image.Image, box: tuple[int, int, int, int], colour: tuple[int, ...]) -> bool:
    x, y, w, h = box
    mean = ImageStat.Stat(img.crop((x, y, x + w, y + h))).mean
    return sum(abs(m - c) for m, c in zip(mean, colour, strict=True)) > 120


def _make_image(rng: random.Random, size: int) -> tuple[Image.Image, list[str]]:
    """One image and its YOLO label lines."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    count = 0 if rng.random() < NEGATIVE_SHARE else rng.randint(1, 3)
    placed: list[tuple[int, int, int, int]] = []
    lines: list[str] = []
    for _ in range(count):
        class_id = rng.randrange(len(CLASSES))
        # Circles a bit smaller and warm, squares larger and cool: the net may use shape,
        # colour and size, as real classes often differ in all three.
        lo, hi = (0.15, 0.35) if class_id == 0 else (0.2, 0.42)
        hues = (-0.08, 0.16) if class_id == 0 else (0.45, 0.78)
        for _attempt in range(20):
            w = max(4, round(size * rng.uniform(lo, hi)))
            h = w if class_id == 1 else max(4, round(w * rng.uniform(0.85, 1.15)))
            box = (rng.randrange(0, size - w + 1), rng.randrange(0, size - h + 1), w, h)
            colour = _colour(rng, hues)
            if not _overlaps(box, placed) and _contrast(img, box, colour):
                break
        else:
            continue
        x, y, w, h = box
        corners = (x, y, x + w - 1, y + h - 1)  # Pillow's corners are inclusive
        outline = (0, 0, 0) if rng.random() < 0.3 else None
        if class_id == 0:
            draw.ellipse(corners, fill=colour, outline=outline)
        else:
            draw.rectangle(corners, fill=colour, outline=outline)
        placed.append(box)
        lines.append(
            f"{class_id} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} "
            f"{w / size:.6f} {h / size:.6f}"
        )
    return img, lines


def _write_split(
    root: Path, split: str, n: int, size: int, seed: int
) -> tuple[list[str], list[int]]:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[str] = []
    per_class = [0] * len(CLASSES)
    for i in range(n):
        # A string seed is hashed with SHA-512: stable across runs and Python versions.
        rng = random.Random(f"shapes/{seed}/{split}/{i}")
        img, lines = _make_image(rng, size)
        ext = ".png" if rng.random() < 0.2 else ".jpg"
        image = folder / f"{split}_{i:05d}{ext}"
        if ext == ".jpg":
            img.save(image, quality=90)
        else:
            img.save(image)
        image.with_suffix(".txt").write_text("".join(f"{x}\n" for x in lines))
        for line in lines:
            per_class[int(line.split()[0])] += 1
        paths.append(str(image))
    return paths, per_class


def make_shapes_dataset(
    root: str | Path,
    *,
    train: int = 300,
    valid: int = 60,
    size: int = 96,
    seed: int = 0,
) -> ShapesDataset:
    """Write the dataset under `root` (created if needed) and return its paths.

    Two classes, `circle` and `square`; 1–3 objects per image, about one image in ten empty;
    JPEG and PNG; backgrounds flat, gradient, blotchy or noisy with clutter. Raises ValueError
    when `root` has a path darknet would rewrite or cannot read, or sizes are out of range.
    """
    if train < 1 or valid < 1:
        raise ValueError(f"train={train}, valid={valid}: each split needs at least one image")
    if size < 32:
        raise ValueError(f"size={size}: images must be at least 32 pixels to hold the shapes")
    base = Path(root).resolve()
    _check_root(base)
    base.mkdir(parents=True, exist_ok=True)
    train_paths, train_counts = _write_split(base, "train", train, size, seed)
    valid_paths, valid_counts = _write_split(base, "valid", valid, size, seed)
    names = base / "obj.names"
    names.write_text("".join(f"{c}\n" for c in CLASSES))
    train_list = base / "train.txt"
    train_list.write_text("".join(f"{p}\n" for p in train_paths))
    valid_list = base / "valid.txt"
    valid_list.write_text("".join(f"{p}\n" for p in valid_paths))
    backup = base / "backup"
    # facts §4: pjreddie exits 0 at its first save when the backup folder is missing.
    backup.mkdir(exist_ok=True)
    data = base / "obj.data"
    data.write_text(
        f"classes={len(CLASSES)}\ntrain={train_list}\nvalid={valid_list}\n"
        f"names={names}\nbackup={backup}\n"
    )
    return ShapesDataset(
        root=base,
        data=data,
        names=names,
        train=train_list,
        valid=valid_list,
        backup=backup,
        classes=CLASSES,
        train_images=train,
        valid_images=valid,
        objects={c: train_counts[i] + valid_counts[i] for i, c in enumerate(CLASSES)},
    )
