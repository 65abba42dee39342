"""Inspect every image and label file once: from the cache, else in parallel worker processes.

The per-file work (read, decode, hash, parse) is CPU-bound Python and Pillow, so it runs in a
process pool in chunks; everything that needs the whole dataset (class ids against `classes`,
duplicates, splits) is done afterwards from these facts in the calling process.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

from supervisor.dataset.cache import FactCache, Key, dumps
from supervisor.dataset.images import ImageFacts, inspect_image
from supervisor.dataset.labels_check import LabelFacts, inspect_label

Progress = Callable[[int, int], None]
# Below this many files to inspect a pool costs more than it saves (start-up ~50 ms).
_INLINE_LIMIT = 64
# (path, facts, the cache entry or None) for the image and for its label file.
Result = tuple[str | None, Any, bytes | None, str | None, Any, bytes | None]


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
    decode: bool = True,
) -> ScanResult:
    """Facts of each (image, label-or-None) pair; paths must be absolute and unique.

    `decode=False` reads image headers only (see `inspect_image`) and takes any cached entry;
    `decode=True` takes only cached entries whose pixels were decoded.
    """
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
            try:
                facts = ImageFacts._make(v)
            except TypeError:  # an entry of another shape: inspect the file again
                continue
            if decode and not facts.decoded:
                continue  # a fast check's entry lacks what a full check needs: inspect again
            images[p] = facts
            hits += 1
        present_l = {p: k for p, k in label_keys.items() if k is not None}
        for p, v in cache.get_many("labels", present_l).items():
            try:
                labels[p] = LabelFacts._make(v)
            except TypeError:
                continue

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
    new_images: list[tuple[str, Key, bytes]] = []
    new_labels: list[tuple[str, Key, bytes]] = []

    def take(results: list[Result]) -> None:
        nonlocal done
        for img, ifacts, ientry, lbl, lfacts, lentry in results:
            if img is not None:
                images[img] = ifacts
                key = image_keys[img]
                if ientry is not None and key is not None:
                    new_images.append((img, key, ientry))
            if lbl is not None:
                labels[lbl] = lfacts
                key = label_keys[lbl]
                if lentry is not None and key is not None:
                    new_labels.append((lbl, key, lentry))
        done += len(results)
        if progress is not None:
            progress(done, total)

    used = _run(todo, n_workers, decode, take)
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
        keys[p] = (st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
    return keys


def _run(
    todo: list[tuple[str | None, str | None]],
    workers: int,
    decode: bool,
    take: Callable[[list[Result]], None],
) -> int:
    """Inspect `todo`; returns the number of processes used."""
    if not todo:
        return 0
    if workers == 1 or len(todo) <= _INLINE_LIMIT:
        step = 64
        for i in range(0, len(todo), step):
            take(_work(todo[i : i + step], decode))
        return 1
    # ~32 chunks per worker, at most 64 files: while the last chunk runs the other workers
    # idle, for ~50 ms of JPEGs or ~0.2 s of large PNGs; a chunk's IPC (~0.2 ms) stays
    # under 1 % of its work.
    size = max(8, min(64, -(-len(todo) // (workers * 32))))
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    used = min(workers, len(chunks))
    try:
        pool = ProcessPoolExecutor(max_workers=used)
    except (OSError, NotImplementedError):
        # Some sandboxes forbid the semaphores a pool needs: slower, but still a full check.
        for chunk in chunks:
            take(_work(chunk, decode))
        return 1
    with pool:
        for fut in as_completed([pool.submit(_work, c, decode) for c in chunks]):
            take(fut.result())
    return used


def _work(chunk: list[tuple[str | None, str | None]], decode: bool = True) -> list[Result]:
    """Inspect a chunk; the cache entries are made here, in parallel, not in the parent."""
    out: list[Result] = []
    for img, lbl in chunk:
        ifacts: ImageFacts | Unreadable | None = None
        lfacts: LabelFacts | Unreadable | None = None
        ientry = lentry = None
        if img is not None:
            try:
                ifacts = inspect_image(img, decode)
                ientry = dumps(ifacts)
            except OSError as e:
                ifacts = Unreadable(e.strerror or str(e))
        if lbl is not None:
            try:
                lfacts = inspect_label(lbl)
                lentry = dumps(lfacts)
            except OSError as e:
                lfacts = Unreadable(e.strerror or str(e))
        out.append((img, ifacts, ientry, lbl, lfacts, lentry))
    return out
