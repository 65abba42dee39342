"""Checks across images and splits: overlaps, duplicates, near-duplicates, split and class balance.

These are the seed's "mAP too good to be true" causes (validation too small or too similar to
training, duplicates / near-duplicates) and its starter checklist's "enough examples per class".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from supervisor.darknet.cfg import shown
from supervisor.dataset.findings import Finding, finding
from supervisor.dataset.images import COLOUR_TOLERANCE, ImageFacts, similarities
from supervisor.dataset.lists import Entry

NEAR_DUP_BITS = 5  # dHash Hamming distance of a near-duplicate candidate (of 64 bits)
NEAR_DUP_SIMILARITY = 0.9  # likeness that confirms a candidate (images.similarities)
VALID_MIN_SHARE = 0.10  # below this share of all images the validation mAP is mostly noise
VALID_MIN_OBJECTS = 10  # fewer validation objects of a class: its AP moves in big steps
IMBALANCE_RATIO = 10.0  # most / least frequent class in train


@dataclass(frozen=True, slots=True)
class SplitCounts:
    """Per split: images found on disk, negatives, objects per class id."""

    images: int
    negatives: int
    per_class: tuple[int, ...]


def overlap_findings(
    entries: Sequence[Entry], facts: dict[str, ImageFacts], near_duplicates: bool = True
) -> tuple[list[Finding], set[str]]:
    """Listed twice, in both splits (path, content, near-duplicate), duplicates within a split.

    `entries` are the non-blank list lines in file order; `facts` the inspected images by
    path. `near_duplicates=False` (some images were not decoded) skips that search and says
    so in a note. Returns the findings and the valid images that overlap train.
    """
    out: list[Finding] = []
    first: dict[tuple[str, str], Entry] = {}
    by_split: dict[str, dict[str, Entry]] = {"train": {}, "valid": {}}
    for e in entries:
        if (e.split, e.image) in first:
            prev = first[(e.split, e.image)]
            out.append(
                finding(
                    "image_listed_twice",
                    e.list_file,
                    e.line,
                    f"{shown(e.written)} is already listed on line {prev.line}; darknet trains "
                    "on it twice as often as on the others",
                    f"delete line {e.line}",
                )
            )
            continue
        first[(e.split, e.image)] = e
        by_split.setdefault(e.split, {})[e.image] = e
    train, valid = by_split["train"], by_split["valid"]
    overlapping: set[str] = set()

    for path, e in valid.items():
        if path in train:
            overlapping.add(path)
            t = train[path]
            out.append(
                finding(
                    "split_overlap_path",
                    e.list_file,
                    e.line,
                    f"{shown(e.written)} is also in the training list ({t.list_file}:{t.line}); "
                    "its mAP measures memory, not generalisation",
                    "remove it from one of the two lists",
                )
            )

    train_by_digest: dict[str, list[str]] = defaultdict(list)
    for path in train:
        if path in facts:
            train_by_digest[facts[path].digest].append(path)
    for path in valid:
        if path in overlapping or path not in facts:
            continue
        same = train_by_digest.get(facts[path].digest)
        if same:
            overlapping.add(path)
            out.append(
                finding(
                    "split_overlap_content",
                    path,
                    None,
                    f"identical bytes to training image {same[0]}; its mAP measures memory",
                    "delete the copy from the validation list (or from the training list)",
                )
            )

    for split, members in by_split.items():
        groups: dict[str, list[str]] = defaultdict(list)
        for path in members:
            if path in facts and facts[path].problem != "empty":
                groups[facts[path].digest].append(path)
        for paths in groups.values():
            # One finding per extra copy: each is a file to delete, the first one stays.
            out.extend(
                finding(
                    "duplicate_images",
                    copy,
                    None,
                    f"identical to {paths[0]} (both in {split}); duplicates weigh those images "
                    "more in training",
                    f"delete {copy} from the {split} list (keep one copy)",
                )
                for copy in paths[1:]
            )

    if near_duplicates:
        out.extend(_near_duplicates(train, valid, facts, overlapping))
    elif train and valid:
        undecoded = sum(1 for f in facts.values() if not f.decoded)
        out.append(
            finding(
                "near_duplicates_skipped",
                None,
                None,
                f"near-duplicates across train/valid were not looked for: {undecoded} images "
                "were checked without decoding their pixels (fast check), and only pixels "
                "show a re-encoded or resized copy",
                "run without --fast to look for near-duplicates across train/valid",
            )
        )
    return out, overlapping


def _near_duplicates(
    train: dict[str, Entry],
    valid: dict[str, Entry],
    facts: dict[str, ImageFacts],
    skip: set[str],
) -> list[Finding]:
    hashed = [(p, f) for p in train if (f := facts.get(p)) is not None and f.thumb]
    if not hashed:
        return []
    # Every valid hash against every train hash, vectorised: ~1 ns a pair, so 10 000 valid ×
    # 90 000 train images take about a second. A band index (multi-index hashing) was faster
    # on uniform hashes, but real hashes are not uniform (flat sky, walls and backgrounds
    # give runs of zero bits), and on a 100 000-image dataset its buckets held thousands of
    # images each: minutes of Python per check.
    table = np.fromiter((f.dhash for _, f in hashed), dtype=np.uint64, count=len(hashed))
    colours = np.array([f.colour for _, f in hashed], dtype=np.int16)
    out: list[Finding] = []
    for path in valid:
        f = facts.get(path)
        if path in skip or f is None or not f.thumb:
            continue
        near = np.flatnonzero(np.bitwise_count(table ^ np.uint64(f.dhash)) <= NEAR_DUP_BITS)
        # `similarities` also rejects a colour shift; doing it here first, for all candidates
        # at once, leaves it a few pairs per image instead of dozens (flat images hash alike).
        shift = np.abs(colours[near] - np.array(f.colour, dtype=np.int16)).max(axis=1, initial=0)
        close: list[int] = near[shift <= COLOUR_TOLERANCE].tolist()
        close = [i for i in close if hashed[i][1].digest != f.digest]  # exact copies: found above
        best: tuple[float, str] | None = None
        # In train-list order, so that of equally similar images the first one is named.
        for i, sim in zip(close, similarities(f, [hashed[i][1] for i in close]), strict=True):
            if sim >= NEAR_DUP_SIMILARITY and (best is None or sim > best[0]):
                best = (sim, hashed[i][0])
        if best is not None:
            out.append(
                finding(
                    "near_duplicate_across_splits",
                    path,
                    None,
                    f"looks like training image {best[1]} (re-encoded, resized or re-exposed "
                    f"copy; likeness {best[0]:.2f}); mAP on such pairs looks too good to be true",
                    "move near-identical shots (same scene, consecutive frames) into one split",
                )
            )
    return out


def balance_findings(
    counts: dict[str, SplitCounts],
    names: Sequence[str],
    valid_list: str | None,
    train_list: str | None,
) -> list[Finding]:
    """Validation size, classes absent or rare in a split, class imbalance, negatives."""
    out: list[Finding] = []
    train, valid = counts.get("train"), counts.get("valid")
    if train is None:
        return out
    names = [shown(n) for n in names]  # a .names line is quoted in messages: keep it short
    if valid is not None:
        total = train.images + valid.images
        if total and valid.images < VALID_MIN_SHARE * total:
            out.append(
                finding(
                    "valid_too_small",
                    valid_list,
                    None,
                    f"validation has {valid.images} of {total} images "
                    f"({valid.images / total:.1%}); its mAP will swing with a handful of images",
                    f"move images into validation until it holds at least "
                    f"{VALID_MIN_SHARE:.0%} (~{round(VALID_MIN_SHARE * total)} images)",
                )
            )
        for cls, name in enumerate(names):
            n_valid = valid.per_class[cls] if cls < len(valid.per_class) else 0
            n_train = train.per_class[cls] if cls < len(train.per_class) else 0
            if n_valid == 0 and n_train > 0:
                out.append(
                    finding(
                        "class_missing_in_valid",
                        valid_list,
                        None,
                        f"class {cls} ({name}) has no object in validation; its AP is never "
                        "measured and the mAP hides it",
                        f"move some images with {name} into validation",
                    )
                )
            elif 0 < n_valid < VALID_MIN_OBJECTS:
                out.append(
                    finding(
                        "valid_class_too_few",
                        valid_list,
                        None,
                        f"class {cls} ({name}) has only {n_valid} objects in validation; one "
                        "miss moves its AP by several points",
                        f"give validation at least {VALID_MIN_OBJECTS} objects of {name}",
                    )
                )
    present = [n for n in train.per_class if n > 0]
    for cls, name in enumerate(names):
        if cls < len(train.per_class) and train.per_class[cls] == 0:
            out.append(
                finding(
                    "class_missing_in_train",
                    train_list,
                    None,
                    f"class {cls} ({name}) has no object in the training images; the network "
                    "cannot learn it",
                    f"add labelled images of {name}, or remove the class from .names and cfg",
                )
            )
    if len(present) >= 2 and max(present) >= IMBALANCE_RATIO * min(present):
        lo = min(range(len(names)), key=lambda c: train.per_class[c] or 1 << 62)
        hi = max(range(len(names)), key=lambda c: train.per_class[c])
        out.append(
            finding(
                "class_imbalance",
                train_list,
                None,
                f"{names[hi]} has {train.per_class[hi]} training objects, {names[lo]} only "
                f"{train.per_class[lo]} ({train.per_class[hi] / train.per_class[lo]:.0f}:1); "
                f"the rare class will be detected poorly",
                f"add images of {names[lo]} (or fewer of {names[hi]}) until the ratio is "
                f"below {IMBALANCE_RATIO:.0f}:1",
            )
        )
    if train.images and train.negatives == 0:
        out.append(
            finding(
                "no_negatives",
                train_list,
                None,
                "no training image is a negative (empty label file); the network never sees "
                "scenes without objects and tends to false positives",
                "add some images of your real background with empty .txt files",
            )
        )
    return out
