"""The training history: an immutable value built from events, read by the stop policy.

`History.add(event)` returns a new history and leaves the old one untouched, so a decision can
be replayed from any snapshot. The per-iteration series would make copying O(n) per event, so it
lives in an append-only `LossSeries` that snapshots share: a snapshot sees only its first `n`
entries, and a writer that is not at the tip (an older snapshot, or a resume that repeats
iterations) copies the prefix before it writes. Nothing here does I/O or reads a clock.

Memory is bounded whatever the log's length: past `MAX_POINTS` stored entries, the newest half
of the series stays as it is and the older raw entries are merged into buckets of `w` entries
each (an iteration range and the mean of its finite avg losses); once the buckets fill a quarter
of the entries they are merged pairwise and `w` doubles. So a week-long log keeps O(`MAX_POINTS`)
entries, the latest at full resolution, the older in buckets of about equal width that grows
with the log (8-16 iterations for a 10 M-line log at the default cap). The approximation, only
in a series that passed the cap (no shared log, curve or test does at the default):

- the prefix sums and counts stay exact at bucket edges, so `mean` over a window whose ends fall
  on edges (or in the unmerged part) is the same float as before; a window end inside a bucket
  takes a share of the bucket's sum and count in proportion to the iterations it covers (linear
  interpolation of the prefix sums), which is off by at most the spread of the loss within the
  bucket (`tests/test_history.py` states it: within 2 % on 100-iteration windows of a noisy
  descent at 5 times the cap, and never outside the values of the buckets touched);
- `point`, `points`, `find` (so `avg_loss_at`) and `max_from` / `above` see a bucket as one entry
  at its last iteration with the bucket's mean (NaN when it holds no finite value);
- a resume that goes back into a bucket drops the whole bucket (resumes go back one save
  interval, well inside the unmerged part).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import reduce
from itertools import accumulate, islice, repeat
from operator import add, sub, truediv
from typing import Any, overload

from supervisor.training.events import (
    Event,
    FatalError,
    GpuError,
    Iteration,
    IterationRun,
    IterationsRepeated,
    LayerIoU,
    MapResult,
    WeightsSaved,
)

# Window (in iterations) for "the avg loss around an evaluation". darknet's avg loss is already
# an EMA over ~10 iterations; 100 iterations spans one save interval and smooths the noisy
# curves in the shared logs (e.g. 25, wild swings) without hiding a real trend.
LOSS_WINDOW = 100

# Stored entries of a `LossSeries` before its oldest raw ones are merged into buckets (module
# docstring). Why this number: an entry costs 20 bytes (iteration int32, avg loss and prefix sum
# float64; 8 more for prefix counts once a NaN came) and a merge builds the new arrays beside the
# old ones (snapshots may still read those), so the series peaks near 2 × 20 × 2 M ≈ 110 MB
# (measured, allocator included); with the interpreter and parser (~50 MB) and the saves,
# `analyze` stays under issue 14's 200 MB (166 MB on a 630 MB, 7.4 M-iteration log), while logs
# up to 2 M iteration lines (a 170 MB pjreddie log, every shared log, curve and test) are kept
# exactly. Read at every append, so a test may lower it (`monkeypatch.setattr(history,
# "MAX_POINTS", …)`).
MAX_POINTS = 2**21

_new = object.__new__


def _setters(cls: type, names: Sequence[str]) -> tuple[Any, ...]:
    """The slot descriptors' setters of a frozen slots dataclass, in the order of `names`.

    Copying a frozen dataclass with `dataclasses.replace` re-runs `__init__` over every field
    and was the top cost of a replay (about 4 µs per iteration line); a hand-written copy that
    sets the slots directly is the same value at a fraction of it. Only this module uses them,
    and only on an object it has just created, so the instances stay immutable to everyone else.
    """
    return tuple(cls.__dict__[n].__set__ for n in names)


@dataclass(slots=True)
class _Arrays:
    """The shared append-only storage of `LossSeries`: 20 bytes per iteration, in arrays.

    `iterations` holds 32-bit numbers (darknet's own iteration counter is an int) and widens to
    64 bits, then to a list, for a number that does not fit (a hostile log); `cnt` (prefix
    counts of finite values) stays None while every value is finite, its count then being the
    index itself (8 bytes more per iteration once a NaN came).

    The first `m` entries are merged buckets (`compacted`): entry `k < m` covers iterations
    `iterations[k - 1] + 1` (`start` for the first) to `iterations[k]`, its avg loss is their
    mean, and `cum`/`cnt` are exact at its edges. While every value is finite, `bcnt` holds the
    counts at the buckets' edges only (`m + 1` of them) and a raw entry's count is its index
    moved by what the buckets merged (`count`): the raw part stays 20 bytes an entry.
    `finite`: no non-finite value was ever pushed (then `cnt` is None).
    """

    iterations: array[int] | list[int] = field(default_factory=lambda: array("i"))
    avg_loss: array[float] = field(default_factory=lambda: array("d"))
    # Prefix sums over finite avg-loss values, so any window mean is O(log n).
    cum: array[float] = field(default_factory=lambda: array("d", [0.0]))
    cnt: array[int] | None = None
    m: int = 0
    start: int = 0
    finite: bool = True
    w: int = 2  # raw entries per bucket in the latest merge (doubles as the buckets fill)
    bcnt: array[int] = field(default_factory=lambda: array("q", [0]))

    def shift(self) -> int:
        """What `count` adds to a raw entry's index while `cnt` is None."""
        return self.bcnt[self.m] - self.m

    def count(self, k: int) -> int:
        """How many finite values the first `k` entries hold."""
        if self.cnt is not None:
            return self.cnt[k]
        return self.bcnt[k] if k <= self.m else k + self.shift()

    def counts(self, stop: int) -> array[int]:
        """`count(k)` for each `k` < `stop`, in an array (to materialize `cnt`)."""
        if self.cnt is not None:
            return self.cnt[:stop]
        m = min(self.m, stop - 1)
        out = self.bcnt[: m + 1]
        out.extend(range(m + 1 + self.shift(), stop + self.shift()))
        return out

    def prefix(self, keep: int) -> _Arrays:
        its = self.iterations[:keep]
        cnt = None if self.cnt is None else self.cnt[: keep + 1]
        m = min(self.m, keep)
        return _Arrays(
            its,
            self.avg_loss[:keep],
            self.cum[: keep + 1],
            cnt,
            m,
            self.start,
            self.finite,
            self.w,
            self.bcnt[: m + 1],
        )

    def before(self, lo: int, x: int) -> tuple[float, float]:
        """The sum and count of finite values at iterations below `x`, where `lo` (< `m`) is
        `bisect_left(iterations, x)`: bucket `lo` holds `x`, and gives the share of its sum and
        count that its iterations below `x` make (exact at the bucket's first iteration)."""
        its, cum = self.iterations, self.cum
        c0 = self.count(lo)
        s = its[lo - 1] + 1 if lo else self.start
        if x <= s:
            return cum[lo], c0
        f = (x - s) / (its[lo] - s + 1)
        return cum[lo] + f * (cum[lo + 1] - cum[lo]), c0 + f * (self.count(lo + 1) - c0)

    def compacted(self) -> _Arrays:
        """A copy with its oldest raw entries merged into buckets (module docstring).

        The newest half stays as it is; older raw entries are merged `w` at a time, and once
        the buckets fill a quarter of the entries they are first merged pairwise (`w`
        doubles), so the buckets stay about as wide as each other and never more than a
        quarter plus the raw half's. A new value, not an edit: older snapshots keep reading
        the arrays they index. The edges' sums and counts are copied, not recomputed, so they
        stay the same floats.
        """
        its, cum = self.iterations, self.cum
        n, m = len(its), self.m
        w = self.w if m else 2  # the first merge: pairs
        pairs = m // 2 if m >= n // 4 else 0
        if pairs:
            w *= 2
        group = (n - m - n // 2) // w * w  # raw entries merged, whole groups of `w`
        out = _Arrays(
            [] if isinstance(its, list) else array(its.typecode),
            array("d"),
            cum[:1],
            None if self.cnt is None else self.cnt[:1],
            pairs + (m - 2 * pairs) + group // w,
            self.start if m else its[0],
            self.finite,
            w,
        )
        out.merge(self, 0, 2, pairs)
        out.copy(self, 2 * pairs, m)
        out.merge(self, m, w, group // w)
        out.copy(self, m + group, n)
        return out

    def edge_counts(self, i: int, stop: int, k: int) -> array[int]:
        """`count(j)` for `j` in `range(i, stop + 1, k)`, without materializing `cnt`."""
        if self.cnt is not None:
            return self.cnt[i : stop + 1 : k]
        if stop <= self.m:
            return self.bcnt[i : stop + 1 : k]
        assert i >= self.m  # (`compacted` never merges across the buckets' end)
        d = self.shift()
        return array("q", range(i + d, stop + 1 + d, k))

    def merge(self, src: _Arrays, i: int, k: int, q: int) -> None:
        """Append `q` buckets, each of `k` entries of `src` from `i` on."""
        if not q:
            return
        stop = i + q * k
        sums = src.cum[i : stop + 1 : k]
        cnts = src.edge_counts(i, stop, k)
        try:  # in C; a bucket without a finite value (only after NaNs) has no mean
            means = array("d", map(truediv, map(sub, sums[1:], sums), map(sub, cnts[1:], cnts)))
        except ZeroDivisionError:
            ds = map(sub, sums[1:], sums)
            dc = map(sub, cnts[1:], cnts)
            means = array("d", (d / c if c else math.nan for d, c in zip(ds, dc, strict=True)))
        self.avg_loss += means
        self.iterations += src.iterations[i + k - 1 : stop : k]  # type: ignore[operator]
        self.cum += sums[1:]
        if self.cnt is not None:
            self.cnt += cnts[1:]
        else:
            self.bcnt += cnts[1:]

    def copy(self, src: _Arrays, i: int, j: int) -> None:
        """Append entries `i`…`j - 1` of `src` as they are."""
        if i >= j:
            return
        its = src.iterations
        out = self.iterations
        if isinstance(its, array) and isinstance(out, array):
            # From buffers, not slices: no third copy of the kept half at the peak.
            out.frombytes(memoryview(its).cast("B")[i * its.itemsize : j * its.itemsize])
        else:
            out += its[i:j]  # type: ignore[operator]
        self.avg_loss.frombytes(memoryview(src.avg_loss).cast("B")[i * 8 : j * 8])
        self.cum.frombytes(memoryview(src.cum).cast("B")[(i + 1) * 8 : (j + 1) * 8])
        cnt = src.cnt
        if cnt is not None and self.cnt is not None:
            size = cnt.itemsize
            self.cnt.frombytes(memoryview(cnt).cast("B")[(i + 1) * size : (j + 1) * size])
        elif j <= src.m:  # buckets kept as they are: their edges' counts
            self.bcnt += src.bcnt[i + 1 : j + 1]

    def push(self, iteration: int, avg_loss: float) -> None:
        try:
            self.iterations.append(iteration)
        except OverflowError:
            its = self.iterations
            wide = isinstance(its, array) and its.typecode == "i" and -(2**63) <= iteration < 2**63
            self.iterations = array("q", its) if wide else list(its)
            self.iterations.append(iteration)
        self.avg_loss.append(avg_loss)
        cum = self.cum
        if math.isfinite(avg_loss):
            cum.append(cum[-1] + avg_loss)
            if self.cnt is not None:
                self.cnt.append(self.cnt[-1] + 1)
        else:
            cum.append(cum[-1])
            self.finite = False
            if self.cnt is None:
                self.cnt = self.counts(len(cum) - 1)
            self.cnt.append(self.cnt[-1])

    def extend(self, iterations: Sequence[int], avg_loss: list[float]) -> bool:
        """`push` of each pair, for finite avg losses; False (nothing changed) if it cannot.

        The prefix sums are accumulated left to right as `push` adds them, so they are the
        same floats.
        """
        its = self.iterations
        if isinstance(its, array):
            try:
                its.fromlist(list(iterations))  # whole or not at all
            except OverflowError:
                return False  # a number that does not fit: `push` widens the array
        else:
            its.extend(iterations)
        self.avg_loss.fromlist(avg_loss)
        cum = self.cum
        # From the last sum on, which `accumulate` gives back first: one list, no slicing.
        cum.fromlist(list(accumulate(avg_loss, initial=cum.pop())))
        if self.cnt is not None:
            c = self.cnt[-1]
            self.cnt.extend(range(c + 1, c + 1 + len(avg_loss)))
        return True


@dataclass(frozen=True, slots=True)
class LossSeries:
    """Iteration numbers and avg loss, one entry per iteration, ascending by iteration."""

    _a: _Arrays = field(default_factory=_Arrays)
    n: int = 0

    def append(self, iteration: int, avg_loss: float) -> LossSeries:
        a = self._a
        keep = self.n
        its = a.iterations
        if keep and its[keep - 1] >= iteration:
            # A resumed launch repeats iterations since its last save: the later value wins.
            keep = bisect_left(its, iteration, 0, keep)
        if keep != len(its):
            a = a.prefix(keep)
        a.push(iteration, avg_loss)
        n = keep + 1
        if n > MAX_POINTS:
            a = a.compacted()
            n = len(a.iterations)
        new = _new(LossSeries)
        _SET_A(new, a)
        _SET_N(new, n)
        return new

    def extend(self, iterations: Sequence[int], avg_loss: list[float]) -> LossSeries:
        """`append` of each pair, for ascending iterations after this series' last one and
        finite avg losses (an `IterationRun`'s)."""
        a = self._a
        keep = self.n
        if keep and a.iterations[keep - 1] >= iterations[0]:
            raise ValueError("LossSeries.extend: iterations must follow the series' last one")
        if keep != len(a.iterations):
            a = a.prefix(keep)
        if not a.extend(iterations, avg_loss):
            for it, avg in zip(iterations, avg_loss, strict=True):
                a.push(it, avg)
        n = keep + len(avg_loss)
        while n > MAX_POINTS and n > 3:  # (a run longer than the cap: as often as needed)
            a = a.compacted()
            n = len(a.iterations)
        new = _new(LossSeries)
        _SET_A(new, a)
        _SET_N(new, n)
        return new

    def __len__(self) -> int:
        return self.n

    @property
    def last_iteration(self) -> int | None:
        return self._a.iterations[self.n - 1] if self.n else None

    def mean(self, first: int, last: int) -> float | None:
        """Mean finite avg loss over iterations in [first, last]; None when there is none."""
        a = self._a
        n = self.n
        its = a.iterations
        if not n:
            return None
        top = its[n - 1]
        # The policy asks for windows that end at the latest iteration, several per line, and a
        # search in an array boxes every probe: in a series without gaps the index of `first`
        # is known, and is checked (the series is strictly ascending, so a hit is exact).
        k = n - 1 - (top - first)
        lo = k if 0 <= k < n and its[k] == first else bisect_left(its, first, 0, n)
        hi = n if last >= top else bisect_left(its, last + 1, 0, n)
        if lo < a.m or hi < a.m:  # an end inside a merged bucket: its share
            s0, c0 = a.before(lo, first) if lo < a.m else (a.cum[lo], a.count(lo))
            s1, c1 = a.before(hi, last + 1) if hi < a.m else (a.cum[hi], a.count(hi))
            return (s1 - s0) / (c1 - c0) if c1 - c0 > 0 else None
        cnt = a.cnt
        count = hi - lo if cnt is None else cnt[hi] - cnt[lo]
        return (a.cum[hi] - a.cum[lo]) / count if count else None

    def point(self, k: int) -> tuple[int, float]:
        """The `k`-th (iteration, avg loss), 0-based; negative `k` counts from the end."""
        if k < 0:
            k += self.n
        if not 0 <= k < self.n:
            raise IndexError(f"loss series index {k} out of range (0..{self.n - 1})")
        return self._a.iterations[k], self._a.avg_loss[k]

    def find(self, iteration: int) -> int | None:
        """The index of `iteration` in the series, None when it has no entry."""
        its = self._a.iterations
        k = bisect_left(its, iteration, 0, self.n)
        return k if k < self.n and its[k] == iteration else None

    def index_from(self, iteration: int) -> int:
        """The index of the first entry at or after `iteration` (the length when none is)."""
        return bisect_left(self._a.iterations, iteration, 0, self.n)

    def max_from(self, k: int) -> float:
        """The highest avg loss of entries `k`… (NaN, or any value, when a NaN is among them:
        as Python's `max` compares; test `not x <= bound`)."""
        return max(self._a.avg_loss[k : self.n])

    def above(self, k: int, bound: float) -> Iterator[bool]:
        """For each entry `k`…: whether its avg loss is above `bound` (NaN is not)."""
        return map(bound.__lt__, self._a.avg_loss[k : self.n])

    def window_means(
        self, iterations: Sequence[int], avg_loss: Sequence[float], window: int, span: range
    ) -> list[float] | None:
        """`means_extended` for the entries of `span` at once, where the windows are whole and
        the iterations in them consecutive (the usual case); None where they are not.

        There the series' own fast path places each window `window` entries back and counts
        `window` values (no NaN ever seen): one subtraction and one division per entry, the
        same floats, without a bisect per entry.
        """
        a = self._a
        n0 = self.n
        n = len(iterations)
        if not a.finite or window <= 0 or not span or span.stop > n:
            return None
        first_lo = n0 + span.start + 1 - window  # the lowest window start, a series index
        if first_lo < a.m or iterations[span.stop - 1] - iterations[0] != span.stop - 1:
            return None
        its = a.iterations
        if first_lo < n0 and (
            its[n0 - 1] != iterations[0] - 1 or its[n0 - 1] - its[first_lo] != n0 - 1 - first_lo
        ):
            return None
        sums = list(accumulate(avg_loss[: span.stop], initial=a.cum[n0]))
        his = sums[span.start + 1 : span.stop + 1]
        # The window starts: in the series' own sums, then in the run's.
        cut = min(max(n0 - first_lo + 1, 0), len(span))
        los = [
            *a.cum[first_lo : first_lo + cut],
            *sums[max(first_lo + cut - n0, 0) : span.stop + 1 - window],
        ]
        return list(map(truediv, map(sub, his, los), repeat(window, len(his))))

    def means_extended(
        self,
        iterations: Sequence[int],
        avg_loss: Sequence[float],
        window: int,
        entries: Iterable[int],
    ) -> Iterator[tuple[int, float | None]]:
        """For each of `entries` (ascending indices `k` into `iterations`/`avg_loss`: ascending,
        after this series' last iteration, finite avg losses): `k` and the
        `mean(it - window + 1, it)` that this series extended by entries …`k` gives, in the same
        floats, without extending it.

        The same prefix sums (`accumulate` from the last one, as `_Arrays.extend` adds them),
        the same bounds and counts: `training.quiet` compares them with a rule's threshold.
        """
        a = self._a
        n0 = self.n
        old_its = a.iterations
        cum0 = a.cum
        sums = list(accumulate(avg_loss, initial=cum0[n0]))  # sums[k + 1]: at index n0 + k + 1
        cnt0 = a.cnt
        for k in entries:
            first = iterations[k] - window + 1
            lo_cnt: float
            if n0 and first <= old_its[n0 - 1]:
                lo = bisect_left(old_its, first, 0, n0)
                if lo < a.m:  # (the index-based counts below leave the shift out)
                    lo_sum, lo_cnt = a.before(lo, first)
                    lo_cnt -= a.shift() if cnt0 is None else 0
                else:
                    lo_sum = cum0[lo]
                    lo_cnt = lo if cnt0 is None else cnt0[lo]
            else:
                j = bisect_left(iterations, first, 0, k + 1)
                lo_sum = sums[j]
                lo_cnt = n0 + j if cnt0 is None else cnt0[n0] + j
            count = (n0 + k + 1 if cnt0 is None else cnt0[n0] + k + 1) - lo_cnt
            yield k, (sums[k + 1] - lo_sum) / count if count > 0 else None

    def points(self) -> list[tuple[int, float]]:
        """Every (iteration, avg loss): a list as long as the series (prefer `point`)."""
        a = self._a
        return list(zip(a.iterations[: self.n], a.avg_loss[: self.n], strict=True))


_SET_A, _SET_N = _setters(LossSeries, ("_a", "n"))


def _col_append(cols: list[Any], c: int, value: Any) -> None:
    """Append to column `c`, an array until a value does not fit it (None, a huge number)."""
    try:
        cols[c].append(value)
    except (TypeError, OverflowError):
        cols[c] = list(cols[c])
        cols[c].append(value)


class Saves(Sequence[WeightsSaved]):
    """Every `Saving weights to` line so far: an immutable view of shared append-only columns.

    A tuple grown by one per save copied every earlier save each time (quadratic on a long
    log: 31 000 saves in a 3.1 M-iteration one); snapshots share the storage as `LossSeries`
    shares its arrays, each seeing its first `n` items. The saves are kept in columns (path
    index into the distinct paths, iteration, line, time), 28 bytes a save rather than ~160 as
    objects, so that they do not undo the loss series' bound (`MAX_POINTS`): a pjreddie log
    saves every 100 iterations, 150 000 saves in 15 M iterations. Items are rebuilt on access:
    equal, not identical, to the events added. Compares equal to a tuple or another `Saves`
    with the same items.
    """

    __slots__ = ("_cols", "_index", "_n", "_paths")

    def __init__(self, items: Sequence[WeightsSaved] = ()) -> None:
        self._paths: list[str] = []
        self._index: dict[str, int] = {}
        self._cols: list[Any] = [array("I"), array("q"), array("q"), array("d")]
        self._n = 0
        for save in items:
            self._push(save)

    def _push(self, save: WeightsSaved) -> None:
        k = self._index.get(save.path)
        if k is None:
            k = self._index[save.path] = len(self._paths)
            self._paths.append(save.path)
        cols = self._cols
        for c, v in enumerate((k, save.iteration, save.line, save.time)):
            _col_append(cols, c, v)
        self._n += 1

    def append(self, save: WeightsSaved) -> Saves:
        new = _new(Saves)
        new._paths, new._index, new._n = self._paths, self._index, self._n
        if self._n != len(self._cols[0]):
            # Written from an older snapshot: copy its prefix (the paths may stay shared, an
            # index never points past what a snapshot's own rows use).
            new._cols = [col[: self._n] for col in self._cols]
            new._paths = list(self._paths)
            new._index = dict(self._index)
        else:
            new._cols = self._cols
        new._push(save)
        return new

    def _item(self, k: int) -> WeightsSaved:
        pi, its, lines, times = self._cols
        return WeightsSaved(self._paths[pi[k]], its[k], lines[k], times[k])

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, k: int) -> WeightsSaved: ...
    @overload
    def __getitem__(self, k: slice) -> tuple[WeightsSaved, ...]: ...
    def __getitem__(self, k: int | slice) -> WeightsSaved | tuple[WeightsSaved, ...]:
        if isinstance(k, slice):
            return tuple(map(self._item, range(self._n)[k]))
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError("saves index out of range")
        return self._item(k)

    def __iter__(self) -> Iterator[WeightsSaved]:
        return map(self._item, range(self._n))

    def __reversed__(self) -> Iterator[WeightsSaved]:
        return map(self._item, range(self._n - 1, -1, -1))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Saves | tuple):
            return len(other) == self._n and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable storage underneath, as LossSeries

    def __repr__(self) -> str:
        return f"Saves({tuple(self)!r})"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """An mAP result placed on the curve, with the training loss around it."""

    iteration: int
    map: float
    valid: bool
    avg_loss: float | None
    result: MapResult


class Evaluations(Sequence[Evaluation]):
    """Every evaluation so far: an immutable view of a shared append-only list, as `Saves`.

    A tuple grown by one per evaluation copied every earlier one each time: quadratic in
    evaluations (a log evaluated every 10 iterations for a million iterations has 100 000).
    Snapshots share the list, each seeing its first `n` items; a writer that is not at the tip
    (an older snapshot, a second history branching from the same parent) copies its prefix
    before it appends, so no snapshot ever sees another's evaluations. Items are the
    `Evaluation` objects added (identical, not rebuilt). Compares equal to a tuple or another
    `Evaluations` with the same items; slices are tuples. One writer at a time, as for the
    rest of `History`: two threads appending at the same tip at once would share a slot.
    """

    __slots__ = ("_items", "_n")

    def __init__(self, items: Iterable[Evaluation] = ()) -> None:
        self._items: list[Evaluation] = list(items)
        self._n = len(self._items)

    def append(self, ev: Evaluation) -> Evaluations:
        """This sequence with `ev` at the end; `self` is left as it was."""
        items, n = self._items, self._n
        if n != len(items):
            items = items[:n]  # not the tip: a branch of its own
        items.append(ev)
        new = _new(Evaluations)
        new._items, new._n = items, n + 1
        return new

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, k: int) -> Evaluation: ...
    @overload
    def __getitem__(self, k: slice) -> tuple[Evaluation, ...]: ...
    def __getitem__(self, k: int | slice) -> Evaluation | tuple[Evaluation, ...]:
        if isinstance(k, slice):
            return tuple(map(self._items.__getitem__, range(self._n)[k]))
        if k < 0:
            k += self._n
        if not 0 <= k < self._n:
            raise IndexError("evaluations index out of range")
        return self._items[k]

    def __iter__(self) -> Iterator[Evaluation]:
        return islice(self._items, self._n)

    def __reversed__(self) -> Iterator[Evaluation]:
        return map(self._items.__getitem__, range(self._n - 1, -1, -1))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Evaluations | tuple):
            return len(other) == self._n and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable storage underneath, as Saves

    def __repr__(self) -> str:
        return f"Evaluations({tuple(self)!r})"

    def __reduce__(self) -> tuple[type[Evaluations], tuple[tuple[Evaluation, ...]]]:
        # A pickle or deep copy holds this snapshot's items, not the whole shared list.
        return Evaluations, (tuple(self),)


@dataclass(frozen=True, slots=True)
class History:
    """Everything the policy may look at, as of one moment of a training.

    Attributes:
        loss: avg loss per iteration (the later launch's value where iterations repeat).
        last: the latest iteration line (None before the first).
        evaluations: every mAP evaluation in order, invalid ones included (never a best): an
            `Evaluations` sequence, shared between snapshots.
        best: the best valid evaluation; on ties the earliest wins.
        min_avg_loss / min_avg_loss_iteration: the lowest finite avg loss so far.
        nan_streak: consecutive iteration lines with a non-finite avg loss.
        saves: every `Saving weights to` line (a `Saves` sequence, shared between snapshots).
        gpu_errors / fatal_errors: what darknet reported before dying.
        repeats: how many times iteration numbers went backwards.
        first_time / last_time: wall clock of the first and latest timed event.
        seconds: sum of darknet's per-iteration seconds (the clock of a replayed log).
        iou: the latest aggregated region/yolo IoU.
    """

    loss: LossSeries = field(default_factory=LossSeries)
    last: Iteration | None = None
    first_iteration: int | None = None
    iteration_lines: int = 0
    evaluations: Evaluations = field(default_factory=Evaluations)
    best: Evaluation | None = None
    min_avg_loss: float | None = None
    min_avg_loss_iteration: int | None = None
    nan_streak: int = 0
    nan_lines: int = 0
    saves: Saves = field(default_factory=Saves)
    gpu_errors: tuple[GpuError, ...] = ()
    fatal_errors: tuple[FatalError, ...] = ()
    repeats: int = 0
    first_time: float | None = None
    last_time: float | None = None
    seconds: float = 0.0
    iou: LayerIoU | None = None

    @property
    def iteration(self) -> int:
        """The latest iteration darknet reported (0 before the first line)."""
        last = self.last
        return last.iteration if last is not None else 0

    @property
    def elapsed(self) -> float:
        """Training time so far: wall clock when events carry it, else darknet's own seconds."""
        if self.first_time is not None and self.last_time is not None:
            return self.last_time - self.first_time
        return self.seconds

    def loss_around(self, iteration: int, window: int = LOSS_WINDOW) -> float | None:
        """Mean avg loss over the `window` iterations up to `iteration`."""
        return self.loss.mean(iteration - window + 1, iteration)

    def avg_loss_at(self, iteration: int) -> float | None:
        """darknet's avg loss as printed at `iteration` (None without a finite one there)."""
        k = self.loss.find(iteration)
        if k is None:
            return None
        v = self.loss.point(k)[1]
        return v if math.isfinite(v) else None

    def evaluated(self, iteration: int) -> bool:
        return any(e.iteration == iteration for e in self.evaluations)

    def add(self, event: Event) -> History:
        """This history with `event` added; `self` is left as it was."""
        if type(event) is Iteration:
            return self._add_iteration(event)
        t = getattr(event, "time", None)
        if isinstance(event, LayerIoU):  # the next most frequent: one per iteration
            h = self._copy()
            _S_IOU(h, event)
        elif isinstance(event, MapResult):
            h = self._add_evaluation(event)
        elif isinstance(event, WeightsSaved):
            h = self._copy()
            _SET["saves"](h, self.saves.append(event))
        elif isinstance(event, GpuError):
            h = self._copy()
            _SET["gpu_errors"](h, (*self.gpu_errors, event))
        elif isinstance(event, FatalError):
            h = self._copy()
            _SET["fatal_errors"](h, (*self.fatal_errors, event))
        elif isinstance(event, IterationsRepeated):
            h = self._copy()
            _SET["repeats"](h, self.repeats + 1)
        elif isinstance(event, Iteration):
            return self._add_iteration(event)  # a subclass of Iteration
        elif t is None:
            # NanLoss: the Iteration event that comes with it carries the NaN already.
            return self
        else:
            h = self._copy()
        if t is not None:
            _SET["first_time"](h, t if self.first_time is None else self.first_time)
            _SET["last_time"](h, t)
        return h

    def _copy(self) -> History:
        # Unrolled like `_add_iteration`: region lines give a LayerIoU on every iteration.
        h = _new(History)
        _S_LOSS(h, self.loss)
        _S_LAST(h, self.last)
        _S_FIRST(h, self.first_iteration)
        _S_LINES(h, self.iteration_lines)
        _S_EVALS(h, self.evaluations)
        _S_BEST(h, self.best)
        _S_MIN(h, self.min_avg_loss)
        _S_MIN_IT(h, self.min_avg_loss_iteration)
        _S_STREAK(h, self.nan_streak)
        _S_NANS(h, self.nan_lines)
        _S_SAVES(h, self.saves)
        _S_GPU(h, self.gpu_errors)
        _S_FATAL(h, self.fatal_errors)
        _S_REPEATS(h, self.repeats)
        _S_T0(h, self.first_time)
        _S_T1(h, self.last_time)
        _S_SECS(h, self.seconds)
        _S_IOU(h, self.iou)
        return h

    def _add_iteration(self, it: Iteration) -> History:
        # The hot path of a replay: one new object, each slot set once (see `_setters`).
        avg = it.avg_loss
        finite_avg = math.isfinite(avg)
        low = self.min_avg_loss
        new_min = finite_avg and (low is None or avg < low)
        secs = it.seconds
        t = it.time
        h = _new(History)
        _S_LOSS(h, self.loss.append(it.iteration, avg))
        _S_LAST(h, it)
        first = self.first_iteration
        _S_FIRST(h, it.iteration if first is None else first)
        _S_LINES(h, self.iteration_lines + 1)
        _S_EVALS(h, self.evaluations)
        _S_BEST(h, self.best)
        _S_MIN(h, avg if new_min else low)
        _S_MIN_IT(h, it.iteration if new_min else self.min_avg_loss_iteration)
        _S_STREAK(h, 0 if finite_avg else self.nan_streak + 1)
        _S_NANS(h, self.nan_lines if finite_avg and math.isfinite(it.loss) else self.nan_lines + 1)
        _S_SAVES(h, self.saves)
        _S_GPU(h, self.gpu_errors)
        _S_FATAL(h, self.fatal_errors)
        _S_REPEATS(h, self.repeats)
        if t is None:
            _S_T0(h, self.first_time)
            _S_T1(h, self.last_time)
        else:
            _S_T0(h, t if self.first_time is None else self.first_time)
            _S_T1(h, t)
        _S_SECS(h, self.seconds + secs if secs and secs > 0 else self.seconds)
        _S_IOU(h, self.iou)
        return h

    def add_run(self, run: IterationRun, start: int = 0, stop: int | None = None) -> History:
        """This history with entries `start`…`stop - 1` of `run` added: the same value as
        adding their events (`run.events(start, stop)`: the saves read before each entry, its
        `Iteration`) one by one, in one step (no object per line).

        The invariants of `IterationRun` (finite losses, ascending iterations, no other event)
        are what make the per-line rules collapse: no NaN streak, a minimum found by `min`, the
        seconds summed left to right as `_add_iteration` sums them.
        """
        n = len(run)
        stop = n if stop is None else min(stop, n)
        if start >= stop:
            return self
        its = run.iterations[start:stop]
        loss = self.loss
        if loss.n and loss.last_iteration is not None and loss.last_iteration >= its[0]:
            h = self  # a run that repeats iterations: the per-line rules (later value wins)
            for e in run.events(start, stop):
                h = h.add(e)
            return h
        avgs = run.avg_loss[start:stop]
        low = self.min_avg_loss
        low_it = self.min_avg_loss_iteration
        m = min(avgs)
        if low is None or m < low:  # the first minimal value, as `<` line by line finds it
            low, low_it = m, its[avgs.index(m)]
        secs = run.seconds[start:stop]
        total = self.seconds
        if min(secs) > 0 and math.isfinite(sum(secs)):
            total = reduce(add, secs, total)
        else:
            for x in secs:
                if x > 0:  # `_add_iteration`: a None, zero, negative or NaN duration adds none
                    total += x
        last = run.iteration_at(stop - 1)
        h = _new(History)
        _S_LOSS(h, loss.extend(its, avgs))
        _S_LAST(h, last)
        first = self.first_iteration
        _S_FIRST(h, its[0] if first is None else first)
        _S_LINES(h, self.iteration_lines + len(its))
        _S_EVALS(h, self.evaluations)
        _S_BEST(h, self.best)
        _S_MIN(h, low)
        _S_MIN_IT(h, low_it)
        _S_STREAK(h, 0)
        _S_NANS(h, self.nan_lines)
        saves = self.saves
        for save in run.saves_in(start, stop):  # (no rule reads them between two entries)
            saves = saves.append(save)
        _S_SAVES(h, saves)
        _S_GPU(h, self.gpu_errors)
        _S_FATAL(h, self.fatal_errors)
        _S_REPEATS(h, self.repeats)
        _S_T0(h, self.first_time)  # the parser's events carry no time
        _S_T1(h, self.last_time)
        _S_SECS(h, total)
        _S_IOU(h, self.iou)
        return h

    def _add_evaluation(self, m: MapResult) -> History:
        iteration = m.iteration if m.iteration is not None else self.iteration
        valid = m.valid and math.isfinite(m.map) and 0.0 <= m.map <= 1.0
        ev = Evaluation(iteration, m.map, valid, self.loss_around(iteration), m)
        better = valid and (self.best is None or m.map > self.best.map)
        evals: Sequence[Evaluation] = self.evaluations
        if not isinstance(evals, Evaluations):  # a tuple passed to History(evaluations=…)
            evals = Evaluations(evals)
        h = self._copy()
        _SET["evaluations"](h, evals.append(ev))
        _SET["best"](h, ev if better else self.best)
        return h


_FIELDS = tuple(History.__dataclass_fields__)
_SET: dict[str, Any] = dict(zip(_FIELDS, _setters(History, _FIELDS), strict=True))
(
    _S_LOSS,
    _S_LAST,
    _S_FIRST,
    _S_LINES,
    _S_EVALS,
    _S_BEST,
    _S_MIN,
    _S_MIN_IT,
    _S_STREAK,
    _S_NANS,
    _S_SAVES,
    _S_GPU,
    _S_FATAL,
    _S_REPEATS,
    _S_T0,
    _S_T1,
    _S_SECS,
    _S_IOU,
) = (
    _SET[n]
    for n in (
        "loss",
        "last",
        "first_iteration",
        "iteration_lines",
        "evaluations",
        "best",
        "min_avg_loss",
        "min_avg_loss_iteration",
        "nan_streak",
        "nan_lines",
        "saves",
        "gpu_errors",
        "fatal_errors",
        "repeats",
        "first_time",
        "last_time",
        "seconds",
        "iou",
    )
)
# `_add_iteration` and `_copy` set every field by hand: a field added to History goes there too.
assert len(_FIELDS) == 18, "History gained a field: set it in History._add_iteration"


def build(events: Sequence[Event]) -> History:
    h = History()
    for e in events:
        h = h.add(e)
    return h
