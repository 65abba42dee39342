"""The README's chart images, in one command, and what drawing them costs.

    .venv/bin/python bench/charts.py            # writes docs/images/*.png, prints the timings

Draws (into `docs/images/`, or `--out`):
- `side-by-side-darknet.png` and `side-by-side-trainsup.png`: one real AlexeyAB log from
  `../shared/logs/` (read in place, never copied), drawn as darknet draws its chart.png
  (`render_darknet_style`: our redrawing of the same parsed data with darknet's geometry) and
  as trainsup draws it;
- `pattern-<label>.png`: one curve of the corpus (`bench/curves/*.json`, real trainings) per
  label, replayed through the default stop policy as `trainsup analyze` would; the corpus has
  no curve labelled `overtraining` (its overtraining recipe came out `low_variance` on review),
  so that pattern is drawn from the shared log that peaks and then falls (log 21).

Measured in the same run: seconds per drawing of trainsup's chart against the darknet-style
one (the baseline: the least a chart can draw), and what the chart listener adds to the
runner's publishing of one curve's records (its bus with the listener against the same bus
without it; drawings happen in the listener's thread, so the ratio should stay near 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.curves import curve_events, curve_paths, curve_schedule, load_curve  # noqa: E402
from supervisor.report.chart import (  # noqa: E402
    ChartData,
    Kept,
    chart_data,
    render,
    render_darknet_style,
)
from supervisor.runtime.bus import Bus  # noqa: E402
from supervisor.runtime.chart_listener import (  # noqa: E402
    ChartListener,
    chart_of_log,
    diagnosis_title,
)
from supervisor.runtime.jobpolicy import policy_for  # noqa: E402
from supervisor.runtime.records import to_record  # noqa: E402
from supervisor.training.events import Iteration, MapResult  # noqa: E402
from supervisor.training.history import History  # noqa: E402
from supervisor.training.policy import Stop  # noqa: E402

LOGS = ROOT.parent / "shared" / "logs"
SIDE_BY_SIDE_LOG = "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log"
OVERTRAINING_LOG = "21_alexeyab-yolov4tiny-peak-then-drop-qwerlarlgus.log"
PATTERNS = ("good", "overtraining", "not_learning", "corrupted", "low_variance", "insufficient")
README_DPI = 80  # 880 × 528 px: readable on GitHub, and under 150 KB


def curve_chart(path: Path) -> tuple[ChartData, dict[str, object]]:
    """A corpus curve replayed through the default policy: its history, stop and kept."""
    curve = load_curve(path)
    schedule = curve_schedule(curve)
    policy = policy_for(None)
    h = History()
    stop: Stop | None = None
    kept = None
    for e in curve_events(curve):
        h = h.add(e)
        if stop is None and isinstance(e, Iteration | MapResult):
            d = policy.decide(h, schedule)
            if isinstance(d, Stop):
                stop, kept = d, h.best
    if stop is None:
        kept = h.best
    it = curve["iterations"]
    diagnosis = diagnosis_title(h, schedule, False)
    title = f"{curve['name']}, labelled {curve['label']!s}" + (
        f" — diagnosed: {diagnosis}" if diagnosis else ""
    )
    data = chart_data(
        h,
        schedule=schedule,
        stop=stop,
        kept=[] if kept is None else [Kept("best", kept.iteration, kept.map)],
        loss=(it["iteration"], it["loss"]),
        title=title,
    )
    return data, curve


def pick_curves() -> dict[str, Path]:
    """The first curve (by name: recipe family before generous, seed 0 first) per label."""
    out: dict[str, Path] = {}
    for p in sorted(curve_paths(), key=lambda p: (not p.name.startswith("recipe"), p.name)):
        label = str(load_curve(p).get("label"))
        out.setdefault(label, p)
    return out


def timed(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def publish_cost(path: Path, rounds: int) -> tuple[float, float, float, int, int]:
    """Seconds to publish one curve's records (and fold them into a history, as the runner
    does) on a bus without / with the chart listener; the wait for its last drawing after
    that; the records; the drawings made."""
    import tempfile

    curve = load_curve(path)
    records = [(e, to_record(e)) for e in curve_events(curve)]
    drawn = [0]

    def replay(with_chart: bool, out: Path) -> float:
        bus = Bus()
        h = [History()]
        chart = None
        if with_chart:
            chart = ChartListener(out, lambda: h[0], title=None)
            bus.subscribe(chart)
        for e, rec in records:
            bus.publish(rec)
            h[0] = h[0].add(e)
        t = time.perf_counter()
        if chart is not None:
            chart.close()
            drawn[0] = chart.drawn
        return time.perf_counter() - t

    waits: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = timed(lambda: replay(False, Path(tmp)), rounds)
        # Timed without the wait at the end: that is the drawing, in its own thread.
        totals = []
        for _ in range(rounds):
            t = time.perf_counter()
            w = replay(True, Path(tmp))
            totals.append(time.perf_counter() - t - w)
            waits.append(w)
    return base, min(totals), min(waits), len(records), drawn[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if not (LOGS / SIDE_BY_SIDE_LOG).is_file():
        print(f"the shared logs are missing ({LOGS}): set up ../shared first", file=sys.stderr)
        return 2

    written: list[Path] = []

    def write(name: str, data: bytes) -> None:
        p = out / name
        p.write_bytes(data)
        written.append(p)

    side = chart_of_log(LOGS / SIDE_BY_SIDE_LOG)
    write("side-by-side-darknet.png", render_darknet_style(side))
    write("side-by-side-trainsup.png", render(side, dpi=README_DPI))

    curves = pick_curves()
    for label in PATTERNS:
        if label in curves:
            data, _ = curve_chart(curves[label])
        elif label == "overtraining":
            data = chart_of_log(LOGS / OVERTRAINING_LOG)
            data = chart_data_with_title(
                data, f"shared log 21 (AlexeyAB) — diagnosed: {data.title}"
            )
        else:
            print(f"no curve labelled {label}: skipped", file=sys.stderr)
            continue
        write(f"pattern-{label}.png", render(data, dpi=README_DPI))

    for p in written:
        size = p.stat().st_size
        flag = "" if size < 150_000 else "  (over 150 KB!)"
        print(f"{p.relative_to(ROOT) if p.is_relative_to(ROOT) else p}: {size / 1000:.0f} KB{flag}")

    # Timings, best of `rounds`, in this run.
    ours = timed(lambda: render(side), args.rounds)
    theirs = timed(lambda: render_darknet_style(side), args.rounds)
    extract = timed(lambda: chart_of_log(LOGS / SIDE_BY_SIDE_LOG), 1)
    print(f"\nlog {SIDE_BY_SIDE_LOG[:2]}: chart_of_log (replay + parse) {extract:.2f} s")
    print(f"trainsup chart {ours:.3f} s, darknet-style chart {theirs:.3f} s per drawing")
    print(f"ratio: trainsup's chart takes {ours / theirs:.2f}x the darknet-style drawing")
    longest = max(curve_paths(), key=lambda p: p.stat().st_size)
    base, with_chart, wait, n, drawn = publish_cost(longest, args.rounds)
    print(
        f"\npublishing {longest.stem} ({n} events, as fast as Python goes): bus alone "
        f"{base:.3f} s, with the chart listener {with_chart:.3f} s ({drawn} drawings in its "
        f"thread meanwhile; {wait:.2f} s more for the last one at close)"
    )
    extra = (with_chart - base) / n * 1e6
    print(f"ratio: the chart listener makes publishing {with_chart / base:.2f}x as long "
          f"({extra:.1f} µs more per event)")  # fmt: skip
    return 0


def chart_data_with_title(d: ChartData, title: str) -> ChartData:
    import dataclasses

    return dataclasses.replace(d, title=title)


if __name__ == "__main__":
    sys.exit(main())
