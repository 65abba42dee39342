"""The corpus' recipes: which dataset, which schedule, which pattern of the seed it aims at.

`supervisor.dataset.synth.make_shapes_dataset` makes a varied, clean two-class set. The seed's
other patterns need bad or poor data, which synth has no knob for, so they are made here by
post-processing a generated set (never by changing synth): class ids swapped in the train
labels, random boxes and emptied label files, a handful of train images, one background and
pose, a tiny valid split. The valid split stays clean and varied in every recipe except
`insufficient`: it is the measuring stick, and a real user's valid set is the part they trust.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw

from supervisor.dataset.synth import ShapesDataset, make_shapes_dataset

Family = Literal["recipe", "generous"]
Pattern = Literal[
    "good", "overtraining", "not_learning", "corrupted", "low_variance", "insufficient"
]

PATTERNS: tuple[Pattern, ...] = (
    "good",
    "overtraining",
    "not_learning",
    "corrupted",
    "low_variance",
    "insufficient",
)
FAMILIES: tuple[Family, ...] = ("recipe", "generous")
SEEDS: tuple[int, ...] = (0, 1)

# The shapes set reaches its plateau by ≈ 500–800 iterations at 96 px (README, demo), so
# 1 200 is a fitted budget; darknet's guide (classes × 2 000 = 4 000 for two classes) is the
# generous one, where most of the run is spent on a plateau.
RECIPE_MAX_BATCHES = 1200
GENEROUS_MAX_BATCHES = 4000
SHORT_RUN = 400  # `insufficient` in the recipe family: a run too short to trust the trend


def darknet_steps(max_batches: int) -> tuple[int, int]:
    """darknet's recipe: the learning rate drops ×0.1 at 80 % and 90 % of max_batches."""
    return round(max_batches * 0.8), round(max_batches * 0.9)


@dataclass(frozen=True, slots=True)
class Recipe:
    """One curve to generate: dataset, schedule and the pattern it is meant to show."""

    family: Family
    pattern: Pattern
    seed: int
    train: int
    valid: int
    max_batches: int
    steps: tuple[int, int]
    burn_in: int = 50
    post: str = ""  # name of the post-processing in POST, "" = the clean set
    options: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.family}-{self.pattern}-s{self.seed}"

    def to_json(self) -> dict[str, object]:
        return {
            "family": self.family,
            "pattern": self.pattern,
            "seed": self.seed,
            "train_images": self.train,
            "valid_images": self.valid,
            "max_batches": self.max_batches,
            "steps": list(self.steps),
            "burn_in": self.burn_in,
            "post": self.post,
            "options": dict(self.options),
            "description": DESCRIPTIONS[self.pattern],
        }


DESCRIPTIONS: dict[Pattern, str] = {
    "good": "varied clean shapes set (300 train / 60 valid)",
    "overtraining": "a handful of training images (12) against a varied 60-image valid set",
    "not_learning": "class ids swapped in every train label (.names order mismatch); "
    "valid labels correct",
    "corrupted": "half the train boxes replaced by random boxes of random classes, and a "
    "quarter of the train label files with objects emptied",
    "low_variance": "every train image has the same background and one object at the same "
    "pose (centre, one size, one colour per class); valid varied",
    "insufficient": "tiny valid split (6 images); in the recipe family also a very short run",
}


def recipe(family: Family, pattern: Pattern, seed: int) -> Recipe:
    mb = RECIPE_MAX_BATCHES if family == "recipe" else GENEROUS_MAX_BATCHES
    train, valid, post = 300, 60, ""
    options: dict[str, float] = {}
    if pattern == "overtraining":
        train = 12
    elif pattern == "not_learning":
        post = "swap_class_ids"
    elif pattern == "corrupted":
        post = "corrupt_labels"
        options = {"random_box_share": 0.5, "empty_label_share": 0.25}
    elif pattern == "low_variance":
        post = "one_background"
    elif pattern == "insufficient":
        valid = 6
        if family == "recipe":
            mb = SHORT_RUN
    return Recipe(family, pattern, seed, train, valid, mb, darknet_steps(mb), 50, post, options)


def all_recipes() -> list[Recipe]:
    """Every curve of the corpus, in the order they are generated: the short fitted runs of
    the first seed first (one of each pattern soonest), then one generous good run (where
    stopping pays most), then the rest."""
    first = [recipe("recipe", p, SEEDS[0]) for p in PATTERNS]
    first.append(recipe("generous", "good", SEEDS[0]))
    rest = [recipe("recipe", p, s) for s in SEEDS[1:] for p in PATTERNS]
    rest += [recipe("generous", p, s) for s in SEEDS for p in PATTERNS]
    seen: set[str] = set()
    out: list[Recipe] = []
    for r in first + rest:
        if r.name not in seen:
            seen.add(r.name)
            out.append(r)
    return out


# --- dataset post-processing ----------------------------------------------------------------


def _train_images(ds: ShapesDataset) -> list[Path]:
    return [Path(line) for line in ds.train.read_text().split()]


def _read_boxes(label: Path) -> list[list[str]]:
    return [line.split() for line in label.read_text().splitlines() if line.strip()]


def _write_boxes(label: Path, boxes: list[list[str]]) -> None:
    label.write_text("".join(" ".join(b) + "\n" for b in boxes))


def swap_class_ids(ds: ShapesDataset, rng: random.Random, options: dict[str, float]) -> None:
    """Every train box gets the next class id (circle ↔ square): the labels are consistent,
    so the loss falls, but they disagree with `.names` and the valid labels."""
    n = len(ds.classes)
    for image in _train_images(ds):
        label = image.with_suffix(".txt")
        boxes = _read_boxes(label)
        for b in boxes:
            b[0] = str((int(b[0]) + 1) % n)
        _write_boxes(label, boxes)


def corrupt_labels(ds: ShapesDataset, rng: random.Random, options: dict[str, float]) -> None:
    """Random boxes (random class, place, size) instead of a share of the real ones, and a
    share of label files emptied although their image holds objects."""
    box_share = options.get("random_box_share", 0.5)
    empty_share = options.get("empty_label_share", 0.25)
    for image in _train_images(ds):
        label = image.with_suffix(".txt")
        boxes = _read_boxes(label)
        if boxes and rng.random() < empty_share:
            _write_boxes(label, [])
            continue
        for b in boxes:
            if rng.random() < box_share:
                w, h = rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)
                x, y = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
                b[:] = [str(rng.randrange(len(ds.classes)))] + [f"{v:.6f}" for v in (x, y, w, h)]
        _write_boxes(label, boxes)


def one_background(ds: ShapesDataset, rng: random.Random, options: dict[str, float]) -> None:
    """Redraw every train image as one flat background with a single object at one pose:
    the class alternates and nothing else varies (no position, size, colour or clutter)."""
    size = Image.open(_train_images(ds)[0]).size[0]
    background = (90, 110, 100)
    colours = {0: (230, 120, 40), 1: (60, 90, 220)}
    w = round(size * 0.3)
    x0 = y0 = (size - w) // 2
    for i, image in enumerate(_train_images(ds)):
        class_id = i % len(ds.classes)
        img = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(img)
        corners = (x0, y0, x0 + w - 1, y0 + w - 1)
        if class_id == 0:
            draw.ellipse(corners, fill=colours[0])
        else:
            draw.rectangle(corners, fill=colours[1])
        if image.suffix == ".jpg":
            img.save(image, quality=90)
        else:
            img.save(image)
        c = (x0 + w / 2) / size
        _write_boxes(image.with_suffix(".txt"), [[str(class_id)] + [f"{v:.6f}" for v in (c, c)]
                                                  + [f"{w / size:.6f}"] * 2])  # fmt: skip


POST: dict[str, Callable[[ShapesDataset, random.Random, dict[str, float]], None]] = {
    "swap_class_ids": swap_class_ids,
    "corrupt_labels": corrupt_labels,
    "one_background": one_background,
}


def build_dataset(r: Recipe, root: Path) -> ShapesDataset:
    """The recipe's dataset under `root` (the same recipe gives the same files)."""
    ds = make_shapes_dataset(root, train=r.train, valid=r.valid, seed=r.seed)
    if r.post:
        POST[r.post](ds, random.Random(f"curves/{r.name}"), r.options)
    return ds
