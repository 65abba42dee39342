"""Inspect every image and label file once: from the cache, else in parallel worker processes.

The per-file work (read, decode, hash, parse) is CPU-bound Python and Pillow, so it runs in a
process pool in chunks; everything that needs the whole dataset (class ids against `classes`,
duplicates, splits) is done afterwards from these facts in the calling process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from supervisor.dataset.cache import FactCache, Key
from supervisor.dataset.images import ImageFacts, inspect_image
from supervisor.dataset.labels_check import LabelFacts, inspect_label

Progress = Callable[[int, int], None]
# Below this many files to inspect a pool costs more than it saves (start-up ~50 ms).
_INLINE_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A file that exists but could not be read (permissions, I/O error)."""

    reason: str


@dataclass
class ScanResult:
    images: dict[str, ImageFacts | Unreadable | None]  # None: no such file
    labels: dict[str, LabelFacts | Unreadable | None]
    from_cache: int  # images whose facts came from the cache
    workers: int


def scan(
    pairs: Sequence[tuple[str, str | None]],
    *,
    workers: int | None,
    cache: FactCache | None,
    progress: Progress | None,
) -> ScanResult:
    """Facts of each (image, label-or-None) pair; paths must be absolute and unique."""
    total = len(pairs)
    image_keys = _stat_all(p for p, _ in pairs)
    label_keys = _stat_all(lbl for _, lbl in pairs if lbl is not None)
    images: dict[str, ImageFacts | Unreadable | None] = {
        p: None for p, k in image_keys.items() if k is None
    }
    labels: dict[str, LabelFacts | Unreadable | None] = {
        p: None for p, k in label_keys.items() if k is None
    }
    hits = 0
    if cache is not None:
        present = {p: k for p, k in image_keys.items() if k is not None}
        for p, v in cache.get_many("images", present).items():
            images[p] = ImageFacts.from_json(v)
            hits += 1
        present_l = {p: k for p, k in label_keys.items() if k is not None}
        for p, v in cache.get_many("labels", present_l).items():
            labels[p] = LabelFacts.from_json(v)

    todo: list[tuple[str | None, str | None]] = []
    for img, lbl in pairs:
        need_i = img if img not in images else None
        need_l = lbl if lbl is not None and lbl not in labels else None
        if need_i is not None or need_l is not None:
            todo.append((need_i, need_l))
    done = total - len(todo)
    if progress is not None:
        progress(done, total)

    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    new_images: list[tuple[str, Key, Any]] = []
    new_labels: list[tuple[str, Key, Any]] = []

    def take(results: list[tuple[str | None, Any, str | None, Any]]) -> None:
        nonlocal done
        for img, ifacts, lbl, lfacts in results:
            if img is not None:
                images[img] = ifacts
                key = image_keys[img]
                if isinstance(ifacts, ImageFacts) and key is not None:
                    new_images.append((img, key, ifacts.to_json()))
            if lbl is not None:
                labels[lbl] = lfacts
                key = label_keys[lbl]
                if isinstance(lfacts, LabelFacts) and key is not None:
                    new_labels.append((lbl, key, lfacts.to_json()))
        done += len(results)
        if progress is not None:
            progress(done, total)

    used = _run(todo, n_workers, take)
    if cache is not None:
        cache.put_many("images", new_images)
        cache.put_many("labels", new_labels)
    return ScanResult(images, labels, hits, used)


def _stat_all(paths: Any) -> dict[str, Key | None]:
    keys: dict[str, Key | None] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            keys[p] = None
            continue
        # A directory or device listed as an image is "missing" as far as darknet goes.
        keys[p] = (st.st_size, st.st_mtime_ns) if os.path.isfile(p) else None
    return keys


def _run(
    todo: list[tuple[str | None, str | None]],
    workers: int,
    take: Callable[[list[tuple[str | None, Any, str | None, Any]]], None],
) -> int:
    """Inspect `todo`; returns the number of processes used."""
    if not todo:
        return 0
    if workers == 1 or len(todo) <= _INLINE_LIMIT:
        step = 64
        for i in range(0, len(todo), step):
            take(_work(todo[i : i + step]))
        return 1
    # ~8 chunks per worker: even load at the end, little pickling overhead per chunk.
    size = max(8, min(256, -(-len(todo) // (workers * 8))))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    used = min(workers, len(chunks))
    try:
        pool = ProcessPoolExecutor(max_workers=used)
    except (OSError, NotImplementedError):
        # Some sandboxes forbid the semaphores a pool needs: slower, but still a full check.
        for chunk in chunks:
            take(_work(chunk))
        return 1
    with pool:
        for fut in as_completed([pool.submit(_work, c) for c in chunks]):
            take(fut.result())
    return used


def _work(
    chunk: list[tuple[str | None, str | None]],
) -> list[tuple[str | None, Any, str | None, Any]]:
    out: list[tuple[str | None, Any, str | None, Any]] = []
    for img, lbl in chunk:
        ifacts: ImageFacts | Unreadable | None = None
        lfacts: LabelFacts | Unreadable | None = None
        if img is not None:
            try:
                ifacts = inspect_image(img)
            except OSError as e:
                ifacts = Unreadable(e.strerror or str(e))
        if lbl is not None:
            try:
                lfacts = inspect_label(lbl)
            except OSError as e:
                lfacts = Unreadable(e.strerror or str(e))
        out.append((img, ifacts, lbl, lfacts))
    return out
