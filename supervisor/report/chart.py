"""The training chart: `chart.png` of every job and `trainsup chart`.

Two halves. `chart_data` is pure: it reads a `History` (plus what only the caller knows: the
schedule, the stop decision, the kept weights, the relaunches, the per-iteration loss and layer
IoU, the diagnosis title) and returns a `ChartData`, the small value of everything that is drawn
— the x of the stop marker, the best point, the learning-rate steps — so that tests check the
picture's parts against the history without reading pixels. `render` draws a `ChartData` with
matplotlib's Agg canvas (no display, no pyplot: its global state is not thread-safe, and the job
chart is drawn in a worker thread).

`render_darknet_style` draws the same data the way AlexeyAB's darknet draws its own `chart.png`
(`draw_train_chart`/`draw_train_loss` in its `image_opencv.cpp`): a 1000 × 1000 px square, a
100 × 100 grid, avg loss as blue dots on a linear axis clipped at `max_chart_loss` (20 unless
the cfg says otherwise), mAP as a red line with percent labels, x from 0 to max_batches, and one
text line under it. It is our redrawing from the parsed data, for comparison (README "Charts"),
not darknet's pixels: fonts differ.
"""

from __future__ import annotations

import io
import math
import textwrap
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from supervisor.atomicio import write_bytes_atomic
from supervisor.training.history import History
from supervisor.training.policy import Stop, pct
from supervisor.training.schedule import Schedule

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Format = Literal["png", "svg"]
# Iterations and values of one series, index by index (arrays or lists: a week-long log has
# millions of iterations, which tuples of pairs would make ten times bigger).
Series = tuple[Sequence[int], Sequence[float]]

# The loss axis turns logarithmic when the avg loss spans this factor (a decade or more):
# YOLO's loss starts in the tens or hundreds and ends near 1, and on a linear axis everything
# after the first few hundred iterations — the part a person reads — is a flat line at the
# bottom (the corpus' good run, 30 → 0.6, was unreadable at 50×). A tail of a log that
# starts past the fall (log 21: 1.4–3.1) stays linear.
LOG_SCALE_SPAN = 10.0
# Points per drawn line: a 1 100 px wide chart shows no more, and drawing millions of points
# is what would make a redraw slow. The raw loss is drawn as a min–max band per bucket, so a
# spike survives the thinning.
MAX_POINTS = 1500
# AlexeyAB's `max_chart_loss` default: its chart's loss axis ends there.
DARKNET_MAX_CHART_LOSS = 20.0

_BLUE, _RAW, _RED, _GREEN = "#1f4e9c", "#7fa6d9", "#c62828", "#2e7d32"
_STEP, _RELAUNCH, _STOP, _BEST = "#757575", "#8e24aa", "#111111", "#f9a825"


@dataclass(frozen=True, slots=True)
class Kept:
    """Weights the run kept: the role (`best`, `last` …), the iteration, its mAP if scored."""

    role: str
    iteration: int
    map: float | None = None


@dataclass(frozen=True, slots=True)
class StopMark:
    iteration: int
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class ChartData:
    """Everything a chart draws, in data units (iterations; mAP and IoU as fractions).

    `avg_loss` is thinned to at most `MAX_POINTS` finite points (first and last kept); `loss`
    is (iteration, lowest, highest) per bucket of the per-iteration loss (one iteration per
    bucket when short). `iou` holds the evaluations' average IoU where they report one, else
    the training batches' layer IoU (`iou_source` says which).
    """

    title: str
    subtitle: str
    avg_loss: tuple[tuple[int, float], ...]
    loss: tuple[tuple[int, float, float], ...]
    log_scale: bool
    evaluations: tuple[tuple[int, float], ...]
    invalid: tuple[int, ...]
    best: tuple[int, float] | None
    iou: tuple[tuple[int, float], ...]
    iou_source: Literal["evaluation", "layers"] | None
    steps: tuple[int, ...]
    burn_in: int
    relaunches: tuple[int, ...]
    stop: StopMark | None
    kept: tuple[Kept, ...]
    first_iteration: int
    last_iteration: int
    max_batches: int | None
    final_avg_loss: float | None
    hours_left: float | None
    nan_lines: int


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def _thin(xs: Sequence[int], ys: Sequence[float], limit: int) -> tuple[tuple[int, float], ...]:
    """Every k-th finite point, the last one included (the avg loss is already smooth)."""
    n = len(xs)
    step = max(1, math.ceil(n / limit))
    out = [(xs[k], ys[k]) for k in range(0, n, step) if math.isfinite(ys[k])]
    if n and (n - 1) % step and math.isfinite(ys[n - 1]):
        out.append((xs[n - 1], ys[n - 1]))
    return tuple(out)


def _bands(
    xs: Sequence[int], ys: Sequence[float], limit: int
) -> tuple[tuple[int, float, float], ...]:
    """(first iteration, min, max) of the finite values in each of at most `limit` buckets."""
    n = len(xs)
    step = max(1, math.ceil(n / limit))
    out: list[tuple[int, float, float]] = []
    for k in range(0, n, step):
        vals = [v for v in ys[k : k + step] if math.isfinite(v)]
        if vals:
            out.append((xs[k], min(vals), max(vals)))
    return tuple(out)


Band = tuple[int, float, float]


def _merge(bands: Sequence[Band], limit: int) -> tuple[Band, ...]:
    """At most `limit` bands: neighbours merged k at a time (first start, lowest, highest)."""
    k = max(1, math.ceil(len(bands) / limit))
    if k == 1:
        return tuple(bands)
    return tuple(
        (bands[i][0], min(b[1] for b in bands[i : i + k]), max(b[2] for b in bands[i : i + k]))
        for i in range(0, len(bands), k)
    )


class Envelope:
    """A per-iteration series in bounded memory: lowest, highest and mean per bucket.

    What a chart needs of the loss and layer IoU of every iteration, which the history does
    not keep: a week-long log has millions of iterations, the chart ~1 000 pixels. Buckets
    start at multiples of `width`; when there are more than twice `limit` of them, the width
    doubles and neighbours merge, so memory stays ~2 × `limit` buckets whatever the length. A
    repeated iteration (a resumed launch) drops the buckets from its own on; that bucket keeps
    what it had seen before the repeat (an envelope, so at worst a little wider).
    """

    __slots__ = ("_hi", "_lo", "_n", "_starts", "_sum", "last", "limit", "width")

    def __init__(self, limit: int = MAX_POINTS) -> None:
        self.limit = limit
        self.width = 1
        self.last: int | None = None
        self._starts: list[int] = []
        self._lo: list[float] = []
        self._hi: list[float] = []
        self._sum: list[float] = []
        self._n: list[int] = []

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, iteration: int, value: float) -> None:
        starts = self._starts
        if self.last is not None and iteration <= self.last:
            k = bisect_right(starts, iteration - iteration % self.width)
            for col in (starts, self._lo, self._hi, self._sum, self._n):
                del col[k:]
        self.last = iteration
        if not math.isfinite(value):
            return
        start = iteration - iteration % self.width
        if starts and starts[-1] == start:
            self._lo[-1] = min(self._lo[-1], value)
            self._hi[-1] = max(self._hi[-1], value)
            self._sum[-1] += value
            self._n[-1] += 1
            return
        starts.append(start)
        self._lo.append(value)
        self._hi.append(value)
        self._sum.append(value)
        self._n.append(1)
        if len(starts) > 2 * self.limit:
            self._widen()

    def _widen(self) -> None:
        self.width *= 2
        w = self.width
        old = list(zip(self._starts, self._lo, self._hi, self._sum, self._n, strict=True))
        starts: list[int] = []
        lo: list[float] = []
        hi: list[float] = []
        sums: list[float] = []
        ns: list[int] = []
        for st, a, b, sm, n in old:
            st -= st % w
            if starts and starts[-1] == st:
                lo[-1], hi[-1] = min(lo[-1], a), max(hi[-1], b)
                sums[-1] += sm
                ns[-1] += n
            else:
                starts.append(st)
                lo.append(a)
                hi.append(b)
                sums.append(sm)
                ns.append(n)
        self._starts, self._lo, self._hi, self._sum, self._n = starts, lo, hi, sums, ns

    def bands(self) -> tuple[Band, ...]:
        """(bucket start, lowest, highest), one per bucket."""
        return tuple(zip(self._starts, self._lo, self._hi, strict=True))

    def means(self) -> Series:
        """(bucket start, mean) per bucket: the series thinned to the buckets."""
        return list(self._starts), [sm / n for sm, n in zip(self._sum, self._n, strict=True)]


def _spans_decades(values: Sequence[float]) -> bool:
    pos = [v for v in values if v > 0]
    return bool(pos) and max(pos) >= LOG_SCALE_SPAN * min(pos)


def _num(x: int) -> str:
    return f"{x:,}".replace(",", " ")


def default_title(h: History) -> str:
    """What the chart's title says without a diagnosis: how far it got and the best mAP."""
    parts = [f"{_num(h.iteration)} iterations" if h.last else "no iteration yet"]
    if h.best is not None:
        parts.append(f"best mAP {pct(h.best.map)} at {_num(h.best.iteration)}")
    elif h.evaluations:
        parts.append("no valid mAP")
    return " · ".join(parts)


def chart_data(
    history: History,
    *,
    schedule: Schedule | None = None,
    stop: Stop | None = None,
    kept: Sequence[Kept] = (),
    relaunches: Sequence[int] = (),
    loss: Series | None = None,
    loss_bands: Sequence[Band] | None = None,
    layer_iou: Series | None = None,
    title: str | None = None,
    max_points: int = MAX_POINTS,
) -> ChartData:
    """What to draw for `history`. Pure: everything comes from the arguments.

    `schedule` gives the learning-rate steps, burn_in and max_batches (a replayed log's is
    inferred from the printed rate); `stop` the stop marker; `kept` the kept weights;
    `relaunches` the iterations a relaunch resumed from; `loss` (or `loss_bands`, an
    `Envelope`'s) and `layer_iou` the per-iteration loss and the layers' IoU, which the history
    does not keep; `title` the diagnosis' title (else `default_title`).
    """
    h = history
    s = schedule or Schedule()
    pts = h.loss.points() if len(h.loss) <= max_points else None
    if pts is not None:
        avg = tuple((i, v) for i, v in pts if math.isfinite(v))
    else:
        # Thin by index, without building the whole list of points of a long log.
        n = len(h.loss)
        step = math.ceil(n / max_points)
        ks = [*range(0, n, step), *([n - 1] if (n - 1) % step else [])]
        avg = tuple(p for p in (h.loss.point(k) for k in ks) if math.isfinite(p[1]))
    if loss_bands is not None:
        bands = _merge(loss_bands, max_points)
    else:
        bands = _bands(loss[0], loss[1], max_points) if loss is not None else ()
    valid = tuple((e.iteration, e.map) for e in h.evaluations if e.valid)
    invalid = tuple(e.iteration for e in h.evaluations if not e.valid)
    eval_iou = tuple(
        (e.iteration, e.result.average_iou)
        for e in h.evaluations
        if e.result.average_iou is not None and math.isfinite(e.result.average_iou)
    )
    iou_source: Literal["evaluation", "layers"] | None = None
    iou: tuple[tuple[int, float], ...] = ()
    if eval_iou:
        iou, iou_source = eval_iou, "evaluation"
    elif layer_iou is not None and len(layer_iou[0]):
        iou = _thin(layer_iou[0], layer_iou[1], max_points)
        iou_source = "layers" if iou else None
    last = h.iteration
    first = h.first_iteration if h.first_iteration is not None else 0
    final = h.last.avg_loss if h.last is not None and _finite(h.last.avg_loss) else None
    head = default_title(h)
    subtitle = [] if title is None else [head]
    if stop is not None:
        subtitle.append(f"stopped by `{stop.rule}` at {_num(stop.iteration)}: {stop.reason}")
    if h.nan_lines:
        subtitle.append(f"{h.nan_lines} iteration lines with a NaN/inf loss")
    return ChartData(
        title=title or head,
        subtitle=" — ".join(subtitle),
        avg_loss=avg,
        loss=bands,
        log_scale=_spans_decades([v for _, v in avg]),
        evaluations=valid,
        invalid=invalid,
        best=(h.best.iteration, h.best.map) if h.best is not None else None,
        iou=iou,
        iou_source=iou_source,
        # Steps beyond what the run reached are drawn too (the reader sees what was to come)
        # only when the x axis goes there: `render` limits the axis to the run and max_batches.
        steps=tuple(s.steps),
        burn_in=s.burn_in,
        relaunches=tuple(sorted(set(relaunches))),
        stop=None if stop is None else StopMark(stop.iteration, stop.rule, stop.reason),
        kept=tuple(kept),
        first_iteration=first,
        last_iteration=last,
        max_batches=s.max_batches,
        final_avg_loss=final,
        hours_left=h.last.hours_left if h.last is not None else None,
        nan_lines=h.nan_lines,
    )


# --- drawing ------------------------------------------------------------------------------------


def _figure(width: float, height: float, dpi: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, fmt: Format) -> bytes:
    buf = io.BytesIO()
    # metadata without a date or version: the same data gives the same bytes.
    meta = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    fig.savefig(buf, format=fmt, metadata=meta)
    return buf.getvalue()


def _thousands(x: float, _pos: object = None) -> str:
    return _num(round(x))


def _x_end(d: ChartData) -> int:
    return max(d.last_iteration, 1)


def _mark_x(ax: Axes, d: ChartData, *, labels: bool) -> None:
    """The vertical markers both panels share: burn-in, lr steps, relaunches, the stop."""
    end = _x_end(d)
    if 0 < d.burn_in <= end:
        ax.axvspan(
            0, d.burn_in, color="#fff3c4", lw=0, zorder=0, label="burn-in" if labels else None
        )
    shown_steps = [x for x in d.steps if x <= end]
    for k, x in enumerate(shown_steps):
        ax.axvline(
            x, color=_STEP, ls="--", lw=1, zorder=1, label="lr step" if labels and k == 0 else None
        )
    for k, x in enumerate(d.relaunches):
        ax.axvline(
            x,
            color=_RELAUNCH,
            ls=":",
            lw=1.4,
            zorder=1,
            label="relaunch" if labels and k == 0 else None,
        )
    if d.stop is not None:
        ax.axvline(
            d.stop.iteration, color=_STOP, lw=1.6, zorder=3, label="stop" if labels else None
        )
        if d.stop.iteration < end:
            # What the run trained on after the rule fired: what stopping there saves.
            ax.axvspan(d.stop.iteration, end, color="#000000", alpha=0.05, lw=0, zorder=0)


def render(
    d: ChartData, fmt: Format = "png", *, width: float = 11.0, height: float = 6.6, dpi: float = 90
) -> bytes:
    """trainsup's chart of `d`: loss on top, mAP and IoU below, shared iteration axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = _figure(width, height, dpi)
    grid = fig.add_gridspec(2, 1, height_ratios=(3, 2), hspace=0.06)
    top = fig.add_subplot(grid[0])
    low = fig.add_subplot(grid[1], sharex=top)
    end = _x_end(d)
    # From 0 for a whole run; from its first line for a log's tail (a Colab cell, a resume).
    x0 = d.first_iteration if d.first_iteration > max(d.burn_in, 1) else 0

    # Loss panel.
    if d.loss:
        xs = [b[0] for b in d.loss]
        if all(b[1] == b[2] for b in d.loss):
            top.plot(xs, [b[1] for b in d.loss], color=_RAW, lw=0.6, alpha=0.8, label="loss")
        else:
            top.fill_between(
                xs, [b[1] for b in d.loss], [b[2] for b in d.loss],
                color=_RAW, alpha=0.35, lw=0, step="post", label="loss (range per bucket)",
            )  # fmt: skip
    if d.avg_loss:
        last = "" if d.final_avg_loss is None else f" (last {d.final_avg_loss:.4g})"
        top.plot([p[0] for p in d.avg_loss], [p[1] for p in d.avg_loss], color=_BLUE, lw=1.6,
                 label=f"avg loss{last}", zorder=4)  # fmt: skip
        ys = [p[1] for p in d.avg_loss]
        if d.log_scale:
            top.set_yscale("log")
            # 0.5, 1, 2, 5, 10 … rather than powers of ten only: a person reads "loss 2".
            top.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            top.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            top.yaxis.set_minor_formatter(NullFormatter())
            lows = [v for v in ys if v > 0] + [b[1] for b in d.loss if b[1] > 0]
            top.set_ylim(min(lows) * 0.8, max(ys) * 1.5)
        else:
            # The raw loss may spike far above: the avg loss decides the axis.
            top.set_ylim(0, max(max(ys) * 1.1, 1e-9))
    _mark_x(top, d, labels=True)
    top.set_ylabel("loss" + (" (log scale)" if d.log_scale else ""))
    top.grid(True, which="major", color="#e0e0e0", lw=0.6)
    top.tick_params(labelbottom=False)

    # mAP / IoU panel, in percent.
    if d.evaluations:
        low.plot([e[0] for e in d.evaluations], [e[1] * 100 for e in d.evaluations], color=_RED,
                 lw=1.4, marker="o", ms=2.5, label="mAP", zorder=4)  # fmt: skip
    if d.invalid:
        low.plot(d.invalid, [0] * len(d.invalid), "x", color=_RED, ms=6, label="invalid mAP")
    if d.iou:
        what = "IoU (evaluations)" if d.iou_source == "evaluation" else "IoU (training batches)"
        low.plot([p[0] for p in d.iou], [p[1] * 100 for p in d.iou], color=_GREEN, lw=1.1,
                 ls="--", label=what, zorder=3)  # fmt: skip
    if d.best is not None:
        bx, by = d.best
        low.plot([bx], [by * 100], marker="*", ms=14, color=_BEST, mec=_STOP, mew=0.8, ls="none",
                 label="best mAP", zorder=6)  # fmt: skip
        right = bx > x0 + 0.75 * (end - x0)
        high = by > 0.85  # near the top edge: the label goes under the star
        low.annotate(
            f"best {pct(by)} @ {_num(bx)}", xy=(bx, by * 100),
            xytext=(-10 if right else 10, -14 if high else 8),
            textcoords="offset points", ha="right" if right else "left", fontsize=8,
        )  # fmt: skip
    rings = [k for k in d.kept if k.map is not None]
    for n, k in enumerate(rings):
        assert k.map is not None
        low.plot([k.iteration], [k.map * 100], marker="o", ms=12, mfc="none", mec=_STOP, mew=1.3,
                 ls="none", zorder=5, label="kept weights" if n == 0 else None)  # fmt: skip
    _mark_x(low, d, labels=False)
    if not d.evaluations and not d.invalid:
        low.text(0.5, 0.55, "no mAP evaluation in this run", transform=low.transAxes,
                 ha="center", va="center", fontsize=10, color="#9e9e9e")  # fmt: skip
    low.set_ylim(0, 100)
    low.set_ylabel("mAP / IoU (%)")
    low.set_xlabel("iteration")
    low.grid(True, color="#e0e0e0", lw=0.6)
    low.xaxis.set_major_formatter(FuncFormatter(_thousands))
    # A little room at the right: the last evaluation is often the best, and its star.
    low.set_xlim(x0, end + max(1, (end - x0) // 60))
    # One legend for both panels, in a row under the title: inside either panel it would
    # cover part of a curve whatever corner it took.
    handles, names = top.get_legend_handles_labels()
    more, more_names = low.get_legend_handles_labels()
    handles, names = handles + more, names + more_names

    # Text: the labels on the markers, the title, the stop's reason.
    trans = top.get_xaxis_transform()
    for x in [x for x in d.steps if x <= end]:
        top.annotate("lr step", (x, 1), xycoords=trans, xytext=(2, -3), textcoords="offset points",
                     fontsize=7, color=_STEP, va="top", ha="left", rotation=90)  # fmt: skip
    for x in d.relaunches:
        top.annotate("relaunch", (x, 1), xycoords=trans, xytext=(2, -3), textcoords="offset points",
                     fontsize=7, color=_RELAUNCH, va="top", ha="left", rotation=90)  # fmt: skip
    if d.stop is not None:
        top.text(d.stop.iteration, 1.0, f"stop: {d.stop.rule} @ {_num(d.stop.iteration)}",
                 transform=trans, fontsize=8, ha="center", va="bottom", weight="bold")  # fmt: skip
    kept_text = ", ".join(
        f"{k.role} = iteration {_num(k.iteration)}"
        + (f" ({pct(k.map)})" if k.map is not None else "")
        for k in d.kept
    )
    # The header, top down: title, subtitle and kept lines, the legend; the panels below it.
    line_h = 11.5 / (height * 72)  # one 8.5 pt line, in figure fractions
    fig.suptitle(d.title, fontsize=12, weight="bold", y=0.995)
    lines = textwrap.wrap(d.subtitle, 160, max_lines=2, placeholder=" …") if d.subtitle else []
    if kept_text:
        lines.append(f"kept: {kept_text}")
    y = 0.995 - 1.6 * line_h
    if lines:
        fig.text(0.5, y, "\n".join(lines), ha="center", va="top", fontsize=8.5, color="#424242")
        y -= len(lines) * line_h + 0.3 * line_h
    if handles:
        fig.legend(handles, names, loc="upper center", ncols=min(len(handles), 11), fontsize=7.5,
                   frameon=False, bbox_to_anchor=(0.5, y), handlelength=1.8,
                   columnspacing=1.2)  # fmt: skip
        y -= 1.7 * line_h
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.09, top=y - 0.9 * line_h)
    return _save(fig, fmt)


def render_darknet_style(d: ChartData, fmt: Format = "png", *, dpi: float = 60) -> bytes:
    """`d` drawn as AlexeyAB's darknet draws its chart.png (module docstring): for comparison.

    Geometry as darknet's: a square of `img_size` 1000 px (at `dpi` 100; the default 60 gives a
    600 px square for the README), 60 px left and bottom for text, x from 0 to max_batches,
    loss from 0 to `max_chart_loss`, dots above it drawn at the top edge.
    """
    fig = _figure(10, 10, dpi)
    ax = fig.add_axes((0.06, 0.06, 0.94, 0.94))
    top_x = d.max_batches or _x_end(d)
    ymax = DARKNET_MAX_CHART_LOSS
    ax.set_xlim(0, top_x)
    ax.set_ylim(0, ymax)
    for i in range(101):
        major = i % 10 == 0
        shade = "#808080" if major else "#e0e0e0"
        ax.axhline(ymax * i / 100, color=shade, lw=0.8, zorder=0)
        ax.axvline(top_x * i / 100, color=shade, lw=0.8, zorder=0)
    ax.set_xticks([top_x * i / 10 for i in range(11)], [str(top_x * i // 10) for i in range(11)],
                  fontsize=9)  # fmt: skip
    ax.set_yticks([ymax * i / 10 for i in range(11)], [f"{ymax * i / 10:2.1f}" for i in range(11)],
                  fontsize=9)  # fmt: skip
    ax.tick_params(length=0, pad=2)
    for side in ax.spines.values():
        side.set_visible(False)
    if d.avg_loss:
        ax.scatter(
            [p[0] for p in d.avg_loss], [min(p[1], ymax * 0.999) for p in d.avg_loss],
            s=2, color="#0000ff", lw=0, zorder=3,
        )  # fmt: skip
    if d.evaluations:
        xs = [e[0] for e in d.evaluations]
        ys = [e[1] * ymax for e in d.evaluations]
        ax.plot(xs, ys, color="#ff0000", lw=1, zorder=4)
        # darknet labels a point when it moved by > 10 points, is a new maximum, or a tenth
        # of max_batches passed since the last label.
        old, best_so_far, last_label = 0.0, 0.0, -(10**12)
        for x, m in d.evaluations:
            if abs(old - m) > 0.1 or m > best_so_far or x - last_label >= top_x / 10:
                last_label, best_so_far = x, max(best_so_far, m)
                shift = (-30 * dpi / 100, -15 * dpi / 100)
                ax.annotate(f"{m * 100:2.0f}% ", (x, m * ymax), xytext=shift,
                            textcoords="offset pixels", fontsize=9, color="#c80000")  # fmt: skip
            old = m
        fig.text(0.01, 0.985, "mAP%", color="#ff0000", fontsize=9)
        fig.text(0.01, 0.97, f"{d.evaluations[-1][1] * 100:2.1f}% ", color="#c80000", fontsize=9)
    fig.text(0.01, 0.94, "Loss", color="#0000ff", fontsize=9)
    avg = d.final_avg_loss if d.final_avg_loss is not None else 0.0
    fig.text(
        0.015, 0.025,
        f"current avg loss = {avg:2.4f}    iteration = {d.last_iteration}    "
        f"approx. time left = {d.hours_left or 0:2.2f} hours",
        color="#000064", fontsize=9,
    )  # fmt: skip
    fig.text(0.005, 0.003, "Press 's' to save : chart.png", fontsize=9)
    fig.text(0.47, 0.003, "Iteration number", fontsize=9)
    fig.text(0.745, 0.003, f"in cfg max_batches={top_x}", fontsize=9)
    return _save(fig, fmt)


def write_chart(path: Path, data: ChartData, fmt: Format = "png") -> None:
    """Draw `data` and replace `path` atomically: a reader (a web page, a chat upload) never
    sees a half-written image."""
    write_bytes_atomic(path, render(data, fmt))
    # The temp file's 0600 would hide the chart from the web page or a colleague; a chart
    # holds nothing secret (the job dir's own mode guards what needs guarding).
    path.chmod(0o644)
