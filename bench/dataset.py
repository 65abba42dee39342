"""Dataset check throughput: `check_dataset` against Ultralytics' `verify_image_label`.

Usage: `.venv/bin/python bench/dataset.py [--setup] [--images 5000] [--size 416] [--workers N]`
`--stages` instead prints where one process spends its time per image (500 JPEG, 200 PNG).
Ours runs twice: the full check and the fast one (`decode=False`: headers only, no pixels).

Both sides see the same files of a generated shapes dataset (`make_shapes_dataset`, kept under
`bench/data/` and reused: the generator is deterministic) with the same number of processes.
The page cache is warmed by reading every file once before any timing, so neither side pays
for the disk. Ours is timed whole (read the .data and lists, stat, decode, hash, parse,
cross-split checks, report), cold (empty fact cache) and warm (a re-check with the cache).
Ultralytics is timed from the pool's creation to the last result of
`Pool(N).imap_unordered(verify_image_label, …, chunksize)`, the way its dataset cache builder
calls it (it uses threads there; processes here, as for ours); its import time is excluded.

Ultralytics runs in its own virtual environment (`bench/.venv-ultralytics`, gitignored, never
a project dependency) because it pulls torch; `--setup` creates it with pinned versions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xxhash

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from supervisor.dataset import images  # noqa: E402
from supervisor.dataset.cache import dumps  # noqa: E402
from supervisor.dataset.check import check_dataset  # noqa: E402
from supervisor.dataset.headers import read_header  # noqa: E402
from supervisor.dataset.labels_check import inspect_label  # noqa: E402
from supervisor.dataset.scan import _work  # noqa: E402
from supervisor.dataset.synth import make_shapes_dataset  # noqa: E402

VENV = ROOT / "bench" / ".venv-ultralytics"
ULTRALYTICS = "ultralytics==8.4.190"
# ultralytics needs torchvision; the only torchvision that imports on this machine's Python 3.11
# is 0.29.1, which needs torch 2.14.1 (both from the local wheel store, the CUDA build: ~6 GB).
# The CPU wheel torch==2.13.0 has no importable torchvision beside it.
TORCH = ("torch==2.14.1", "torchvision==0.29.1")

ULTRALYTICS_SIDE = r"""
import json, sys, time
from multiprocessing import Pool
from ultralytics import __version__
from ultralytics.data.utils import verify_image_label, img2label_paths

images, workers, classes, chunksize = json.loads(sys.stdin.read())
labels = img2label_paths(images)
args = [(im, lb, "", False, classes, 0, 0, False) for im, lb in zip(images, labels)]
t = time.perf_counter()
with Pool(workers) as pool:
    results = list(pool.imap_unordered(verify_image_label, args, chunksize=chunksize))
seconds = time.perf_counter() - t
missing = sum(r[5] for r in results); corrupt = sum(r[8] for r in results)
print(json.dumps({"seconds": seconds, "version": __version__, "missing": missing,
                  "corrupt": corrupt, "n": len(results)}))
"""


def setup() -> None:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *TORCH], check=True)
    subprocess.run([*pip, ULTRALYTICS], check=True)


def dataset(n: int, size: int) -> Path:
    root = ROOT / "bench" / "data" / f"shapes-{n}-{size}"
    data = root / "obj.data"
    if not data.exists():
        t = time.perf_counter()
        valid = n // 10
        make_shapes_dataset(root, train=n - valid, valid=valid, size=size, seed=1)
        print(f"generated {n} images of {size} px in {time.perf_counter() - t:.0f} s")
    return data


def image_paths(data: Path) -> list[str]:
    root = data.parent
    return [p for name in ("train.txt", "valid.txt") for p in (root / name).read_text().split()]


def only(data: Path, suffix: str, folder: Path) -> Path:
    """A .data over the same files, listing only images ending in `suffix`."""
    text = data.read_text()
    for name in ("train.txt", "valid.txt"):
        src = data.parent / name
        kept = [p for p in src.read_text().split() if p.endswith(suffix)]
        (folder / name).write_text("".join(f"{p}\n" for p in kept))
        text = text.replace(str(src), str(folder / name))
    out = folder / "obj.data"
    out.write_text(text)
    return out


def warm_page_cache(paths: list[str]) -> None:
    for p in paths:
        for f in (p, p.rsplit(".", 1)[0] + ".txt"):
            with open(f, "rb") as fh:
                fh.read()


def ours(
    data: Path, workers: int, rounds: int, decode: bool
) -> tuple[list[float], list[float], list[str]]:
    """Cold and warm times of each round, and the codes of the findings."""
    cold: list[float] = []
    warm: list[float] = []
    codes: list[str] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            t = time.perf_counter()
            report = check_dataset(
                data, None, workers=workers, cache_dir=Path(cache), decode=decode
            )
            cold.append(time.perf_counter() - t)
            codes = [f.code for f in report.findings]
            t = time.perf_counter()
            check_dataset(data, None, workers=workers, cache_dir=Path(cache), decode=decode)
            warm.append(time.perf_counter() - t)
    return cold, warm, codes


def ultralytics(
    paths: list[str], workers: int, rounds: int
) -> tuple[list[float], dict[str, object]]:
    python = VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{VENV} is missing: run `bench/dataset.py --setup` first")
    chunksize = max(1, min(256, len(paths) // (workers * 8)))
    payload = json.dumps([paths, workers, 2, chunksize])
    times: list[float] = []
    info: dict[str, object] = {}
    for _ in range(rounds):
        out = subprocess.run(
            [str(python), "-c", ULTRALYTICS_SIDE],
            input=payload,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "YOLO_OFFLINE": "1"},
        )
        info = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(float(info["seconds"]))  # type: ignore[arg-type]
    info["chunksize"] = chunksize
    return times, info


def stages(paths: list[str]) -> None:
    """Per-image cost of each step of `inspect_image` and of the whole worker task, one process."""

    def best(fn: Callable[[Any], object], xs: list[Any]) -> float:
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for x in xs:
                fn(x)
            times.append(time.perf_counter() - t)
        return min(times) / len(xs) * 1e3

    def opened(d: bytes) -> Image.Image:
        return Image.open(io.BytesIO(d))

    def loaded(d: bytes) -> Image.Image:
        im = opened(d)
        if im.format == "JPEG":
            im.draft("RGB", (images.THUMB * 2, images.THUMB * 2))
        im.load()
        return im

    for kind, n in ((".jpg", 500), (".png", 200)):
        some = [p for p in paths if p.endswith(kind)][:n]
        if not some:
            continue
        datas = [Path(p).read_bytes() for p in some]
        decoded = [loaded(d) for d in datas]
        small = [images._small_rgb(im) for im in decoded]
        facts = [images.inspect_image(p) for p in some]
        check = images.jpeg_complete if kind == ".jpg" else images.png_damage
        opening = best(opened, datas)
        rows = {
            "read the file": best(lambda p: Path(p).read_bytes(), some),
            "xxh3 digest": best(xxhash.xxh3_128_hexdigest, datas),
            "end marker" if kind == ".jpg" else "chunk CRCs + IEND": best(check, datas),
            "Pillow open (full check)": opening,
            "own header reader (fast)": best(read_header, datas),
            "decode (1/8 scale)" if kind == ".jpg" else "decode (full)": best(loaded, datas)
            - opening,
            "reduce to 64-127 px": best(images._small_rgb, decoded),
            "dHash, thumbnail, colour": best(images._hashes, small),
            "label file read + parse": best(lambda p: inspect_label(p[:-4] + ".txt"), some),
            "cache entry": best(dumps, facts),
        }
        whole = best(lambda p: _work([(p, p[:-4] + ".txt")]), some)
        fast = best(lambda p: _work([(p, p[:-4] + ".txt")], False), some)
        kib = sum(map(len, datas)) / len(datas) / 1024
        print(f"{kind[1:].upper()}: {len(some)} files, mean {kib:.0f} KiB, one process")
        for name, ms in rows.items():
            print(f"  {name:26s} {ms:6.3f} ms  {ms / whole:4.0%}")
        print(f"  {'whole worker task':26s} {whole:6.3f} ms")
        print(f"  {'whole worker task, fast':26s} {fast:6.3f} ms  {fast / whole:4.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup", action="store_true", help="create bench/.venv-ultralytics first")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-ultralytics", action="store_true")
    ap.add_argument("--only", choices=(".jpg", ".png"), help="check only images of this type")
    ap.add_argument("--stages", action="store_true", help="time each per-image step instead")
    args = ap.parse_args()
    if args.setup:
        setup()
    data = dataset(args.images, args.size)
    if args.only:
        data = only(data, args.only, Path(tempfile.mkdtemp(prefix="bench-lists-")))
    paths = image_paths(data)
    warm_page_cache(paths)
    if args.stages:
        print(f"load {os.getloadavg()[0]:.2f}")
        stages(paths)
        return
    n = len(paths)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"dataset: {n} images of {args.size} px ({data}); workers: {args.workers}")
    results = {}
    for mode, decode in (("full", True), ("fast", False)):
        cold, warm, codes = ours(data, args.workers, args.rounds, decode)
        results[mode] = (cold, warm)
        found = ", ".join(f"{c} ×{k}" if k > 1 else c for c, k in Counter(codes).items())
        print(f"ours {mode} cold:  {_rate(n, cold)}  (findings: {found or 'none'})")
        print(f"ours {mode} warm:  {_rate(n, warm)}")
    print(f"load after ours {os.getloadavg()[0]:.2f}")
    if args.skip_ultralytics:
        return
    ul, info = ultralytics(paths, args.workers, args.rounds)
    print(
        f"ultralytics {info['version']} verify_image_label: {_rate(n, ul)}  "
        f"(chunksize {info['chunksize']}, missing {info['missing']}, corrupt {info['corrupt']})"
    )
    best = min(ul)
    for mode, (cold, warm) in results.items():
        print(
            f"ratio ours {mode}/ultralytics (images/s, best of {args.rounds}): "
            f"cold {best / min(cold):.2f}×, warm {best / min(warm):.2f}×"
        )


def _rate(n: int, times: list[float]) -> str:
    best, med = min(times), statistics.median(times)
    return f"{n / best:8.0f} images/s best, {n / med:8.0f} median ({best:.2f} s best)"


if __name__ == "__main__":
    main()
