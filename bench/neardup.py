"""Near-duplicate search across train/valid: numpy over all pairs against a band index.

Usage: `.venv/bin/python bench/neardup.py [--sizes 5000,20000,50000,100000] [--baseline-max 50000]`

The images are the shapes dataset at 96 px (`bench/data/shapes-100000-96`, generated once, ~2.5
min) and their facts come from a full `scan` with a fact cache under `bench/data/` (the first
run decodes the 100 000 images, ~35 s). Each size takes the first 90 % train / 10 % valid of the
lists. Timed: `splits._near_duplicates` (the checker's search: every valid dHash against every
train dHash with numpy, colour filter, thumbnail correlation on the survivors) and, as the
baseline, the pure-Python band index the checker used before (multi-index hashing: the 64 bits
in NEAR_DUP_BITS + 1 bands, candidates from exact band matches, Python Hamming test and
the likeness per candidate in Python), kept here only for this comparison. Both must report the same
findings; the script checks that and prints the ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.dataset import splits  # noqa: E402
from supervisor.dataset.cache import open_cache  # noqa: E402
from supervisor.dataset.findings import Finding, finding  # noqa: E402
from supervisor.dataset.images import (  # noqa: E402
    COLOUR_TOLERANCE,
    FLAT_COLOUR_TOLERANCE,
    ImageFacts,
)
from supervisor.dataset.scan import scan  # noqa: E402
from supervisor.dataset.synth import make_shapes_dataset  # noqa: E402

DATA = ROOT / "bench" / "data"


def python_similarity(a: ImageFacts, b: ImageFacts) -> float:
    """The previous per-pair likeness in pure Python (now `images.similarities`), the baseline."""
    if not a.thumb or len(a.thumb) != len(b.thumb):
        return 0.0
    shift = max(abs(x - y) for x, y in zip(a.colour, b.colour, strict=True))
    if shift > COLOUR_TOLERANCE:
        return 0.0
    n = len(a.thumb)
    ma, mb = sum(a.thumb) / n, sum(b.thumb) / n
    va = sum((x - ma) ** 2 for x in a.thumb)
    vb = sum((y - mb) ** 2 for y in b.thumb)
    flat = 2.25 * n
    if va < flat or vb < flat:
        if va >= flat or vb >= flat:
            return 0.0
        return max(0.0, 1.0 - shift / FLAT_COLOUR_TOLERANCE)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a.thumb, b.thumb, strict=True))
    return cov / math.sqrt(va * vb)


def band_index(
    train: dict[str, object], valid: dict[str, object], facts: dict[str, ImageFacts]
) -> list[Finding]:
    """The previous search (supervisor/dataset/splits.py before numpy), the baseline."""
    bits = splits.NEAR_DUP_BITS
    bands = bits + 1
    edges = [round(i * 64 / bands) for i in range(bands + 1)]
    spans = [(edges[b], (1 << (edges[b + 1] - edges[b])) - 1) for b in range(bands)]
    index: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(bands)]
    hashed: list[tuple[str, ImageFacts]] = []
    for path in train:
        f = facts.get(path)
        if f is not None and f.thumb:
            for b, (shift, mask) in enumerate(spans):
                index[b][(f.dhash >> shift) & mask].append(len(hashed))
            hashed.append((path, f))
    out: list[Finding] = []
    for path in valid:
        f = facts.get(path)
        if f is None or not f.thumb:
            continue
        found: set[int] = set()
        for b, (shift, mask) in enumerate(spans):
            found.update(index[b].get((f.dhash >> shift) & mask, ()))
        best: tuple[float, str] | None = None
        for i in sorted(i for i in found if (f.dhash ^ hashed[i][1].dhash).bit_count() <= bits):
            name, g = hashed[i]
            if g.digest == f.digest:
                continue
            sim = python_similarity(f, g)
            if sim >= splits.NEAR_DUP_SIMILARITY and (best is None or sim > best[0]):
                best = (sim, name)
        if best is not None:
            out.append(finding("near_duplicate_across_splits", path, None, best[1], ""))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="5000,20000,50000,100000")
    ap.add_argument("--baseline-max", type=int, default=50000, help="skip the baseline above")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = DATA / "shapes-100000-96"
    if not (root / "obj.data").exists():
        make_shapes_dataset(root, train=90000, valid=10000, size=96, seed=1)
    train_all = (root / "train.txt").read_text().split()
    valid_all = (root / "valid.txt").read_text().split()
    cache, problem = open_cache(DATA / "neardup-cache")
    t = time.perf_counter()
    pairs = [(p, p.rsplit(".", 1)[0] + ".txt") for p in train_all + valid_all]
    facts = {
        p: f
        for p, f in scan(pairs, workers=None, cache=cache, progress=None).images.items()
        if isinstance(f, ImageFacts)
    }
    if cache is not None:
        cache.close()
    print(f"facts of {len(facts)} images in {time.perf_counter() - t:.1f} s ({problem or 'cache'})")
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for n in sizes:
        train = dict.fromkeys(train_all[: n * 9 // 10])
        valid = dict.fromkeys(valid_all[: n // 10])
        t = time.perf_counter()
        ours = splits._near_duplicates(train, valid, facts, set())  # type: ignore[arg-type]
        t_ours = time.perf_counter() - t
        line = f"{n:7d} images: numpy {t_ours:6.2f} s ({len(ours)} findings)"
        if n <= args.baseline_max:
            t = time.perf_counter()
            base = band_index(train, valid, facts)
            t_base = time.perf_counter() - t
            same = [(f.file, f.message.split("image ")[1].split(" ")[0]) for f in ours] == [
                (f.file, f.message) for f in base
            ]
            line += f", band index {t_base:6.2f} s, ratio {t_base / t_ours:5.1f}x, same: {same}"
        print(line)


if __name__ == "__main__":
    main()
