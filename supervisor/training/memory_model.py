"""How much GPU memory a training needs, learned from what was seen. Pure (DESIGN "Decisions" 2, 5).

A `MemoryModel` holds observations keyed by (GPU model name, cfg fingerprint, mini-batch,
width × height, `-map` on/off): the peak a launch used (a launch that ran without running out
of memory), or an out-of-memory, which says "needs more than was free at that time". From
them it predicts the peak of a setting and picks, before a launch, the smallest
`subdivisions` whose predicted peak fits under (1 − headroom) × the free memory.

How it predicts (`MemoryModel.predict`), for a target setting:
1. The same setting seen on the same GPU model: its peak (the largest seen).
2. Otherwise a curve over the *pixels of one GPU pass*, x = mini-batch × width × height,
   through the peaks of this cfg at its `-map` setting on **any** GPU model: memory need is a
   property of the network (activations grow with the pixels of a pass; weights and the CUDA
   context are a fixed part); the card only sets the limit.
   - between two seen points: the straight line between them (the need is convex in x, so the
     chord lies above it: a slight overestimate);
   - below the smallest seen point: need ∝ x^0.7 from it (halving the mini-batch saves 38 %
     rather than 50 %: the fixed part does not shrink; an overestimate for typical nets);
   - above the largest: need ∝ x^k with k = max(1.05, the log-log slope of the two largest
     points) (growing at least as fast as the pixels, a little faster with size: cuDNN's
     workspace and the allocator's rounding).
3. With `-map` and only runs without it: that prediction plus a second network at mini-batch 1
   (darknet-facts §2: `-map` builds one). Without `-map` and only runs with it: the `-map`
   curve, an overestimate.
4. Out-of-memory observations are lower bounds: the need of x is more than the free memory of
   any out-of-memory at x' ≤ x. With no peak for the cfg at all, a lower bound is all it knows.
No observation of the cfg at all: no prediction (`None`); the cfg's own value is used.

Record a peak only for a launch that did not run out of memory: one that did reached less than
its need. The model never changes `batch` (darknet-facts §4); `pick_subdivisions` only chooses
values that keep the images per iteration, so the effective batch and the iteration count stay.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

BELOW_EXPONENT = 0.7
ABOVE_EXPONENT = 1.05
# [net] keys that change what darknet allocates (the rest — learning rate, max_batches, steps,
# augmentation — do not). width/height/batch/subdivisions are part of the key, not the print.
_NET_KEYS = frozenset({"channels", "adam", "optimized_memory", "workspace_size_limit_mb"})
# Layer keys that shape outputs and weights; loss and augmentation keys (jitter, ignore_thresh,
# random …) leave the memory as it is.
_LAYER_KEYS = frozenset(
    {
        "filters",
        "size",
        "stride",
        "stride_x",
        "stride_y",
        "pad",
        "padding",
        "groups",
        "group_id",
        "layers",
        "from",
        "batch_normalize",
        "dilation",
        "classes",
        "num",
        "mask",
        "output",
        "coords",
        "antialiasing",
        "share_index",
        "reorg",
        "reverse",
    }
)


# --- the cfg's fingerprint ----------------------------------------------------------------------


class _OptionLike(Protocol):
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str: ...


class _SectionLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def options(self) -> Sequence[_OptionLike]: ...


class CfgLike(Protocol):
    """What the fingerprint reads: `supervisor.darknet.cfg.Cfg` is one."""

    @property
    def sections(self) -> Sequence[_SectionLike]: ...


def cfg_fingerprint(cfg: CfgLike) -> str:
    """A short hash of what drives a network's memory: its layers, filters, sizes, strides,
    routes — not max_batches, steps, the learning rate or augmentation, and not batch,
    subdivisions, width or height (those are the key's other parts). The ladder's patched copy
    of a cfg (other subdivisions, random=0) has the same fingerprint as the original."""
    parts = []
    for n, s in enumerate(cfg.sections):
        keys = _NET_KEYS if n == 0 else _LAYER_KEYS
        opts = sorted(f"{o.key.lower()}={o.value}" for o in s.options if o.key.lower() in keys)
        parts.append(f"[{'net' if n == 0 else s.kind}]" + ",".join(opts))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def largest_size(width: int, height: int, *, random: bool, flavour: str) -> tuple[int, int]:
    """The largest input a launch reaches (the size its peak memory is for). With `random=1`
    pjreddie resizes to 320…608 whatever the cfg says, AlexeyAB/hank-ai up to 1.4 × the cfg's
    size (multiples of 32); without it the cfg's size (darknet-facts §1, §6)."""
    if not random:
        return width, height
    if flavour == "pjreddie":
        return max(width, 608), max(height, 608)
    return (max(width, int(width * 1.4) // 32 * 32), max(height, int(height * 1.4) // 32 * 32))


# --- observations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryKey:
    gpu_model: str  # NVML's device name: the memory is the cfg's, the limit the card's
    fingerprint: str
    mini_batch: int
    width: int
    height: int
    map_on: bool

    @property
    def pixels(self) -> int:
        return self.mini_batch * self.width * self.height

    def same_net(self, other: MemoryKey) -> bool:
        return self.fingerprint == other.fingerprint and self.map_on == other.map_on


@dataclass(frozen=True, slots=True)
class Entry:
    """What is known of one key: the largest peak seen, and the most free memory it still ran
    out of memory with (its need is more than that)."""

    key: MemoryKey
    peak_mib: float | None = None
    oom_free_mib: float | None = None
    total_mib: float | None = None  # the GPU's size, for the words ("on a 12 GB GPU")

    def merged(self, other: Entry) -> Entry:
        return Entry(
            self.key,
            _max(self.peak_mib, other.peak_mib),
            _max(self.oom_free_mib, other.oom_free_mib),
            other.total_mib if other.total_mib is not None else self.total_mib,
        )


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def peak(key: MemoryKey, mib: float, *, total_mib: float | None = None) -> Entry:
    """An observation: a launch at `key` that ran without running out of memory used `mib`."""
    return Entry(key, peak_mib=mib, total_mib=total_mib)


def oom(key: MemoryKey, free_mib: float, *, total_mib: float | None = None) -> Entry:
    """An observation: a launch at `key` ran out of memory with `free_mib` free at its start."""
    return Entry(key, oom_free_mib=free_mib, total_mib=total_mib)


@dataclass(frozen=True, slots=True)
class Prediction:
    mib: float
    basis: str  # the phrase after "the memory model …": what it saw and how it scaled
    exact: bool = False  # seen at this very setting on this GPU model
    lower_bound: bool = False  # only "more than mib" is known


def gb(mib: float) -> str:
    return f"{mib / 1024:.1f} GB"


def _setting(k: MemoryKey) -> str:
    return f"mini-batch {k.mini_batch} ({k.width}×{k.height}{', -map' if k.map_on else ''})"


def _gpu(e: Entry) -> str:
    """ "NVIDIA GeForce RTX 3060 (12 GB)"; a name that says its size already stays as it is."""
    name = e.key.gpu_model
    if e.total_mib and "GB" not in name:
        return f"{name} ({e.total_mib / 1024:.0f} GB)"
    return name


@dataclass(frozen=True, slots=True)
class MemoryModel:
    """Immutable: `observe` returns a new model. One entry per key (peaks and bounds merged),
    so the model stays as small as the settings ever tried."""

    entries: tuple[Entry, ...] = ()

    def observe(self, obs: Entry) -> MemoryModel:
        out = list(self.entries)
        for i, e in enumerate(out):
            if e.key == obs.key:
                out[i] = e.merged(obs)
                return MemoryModel(tuple(out))
        return MemoryModel((*out, obs))

    def merge(self, other: MemoryModel) -> MemoryModel:
        m = self
        for e in other.entries:
            m = m.observe(e)
        return m

    def knows(self, fingerprint: str) -> bool:
        return any(e.key.fingerprint == fingerprint for e in self.entries)

    # -- prediction --------------------------------------------------------------------------
    def predict(self, key: MemoryKey) -> Prediction | None:
        """The peak `key` is expected to need (module docstring: how), or None."""
        same = [e for e in self.entries if e.key.same_net(key)]
        pred = self._from_peaks(key, same)
        if pred is None and key.map_on:
            pred = self._map_from_plain(key)
        if pred is None and not key.map_on:
            other = [e for e in self.entries if e.key.fingerprint == key.fingerprint]
            pred = self._from_peaks(key, [e for e in other if e.key.map_on])
        # An out-of-memory without -map bounds the need with -map too (it only adds).
        bounding = [
            e
            for e in self.entries
            if e.key.fingerprint == key.fingerprint and (e.key.map_on == key.map_on or key.map_on)
        ]
        return _bounded(pred, key, bounding)

    def _from_peaks(self, key: MemoryKey, same: list[Entry]) -> Prediction | None:
        exact = [e for e in same if e.key == key and e.peak_mib is not None]
        if exact:
            e = exact[0]
            assert e.peak_mib is not None
            return Prediction(
                e.peak_mib,
                f"has seen this cfg need {gb(e.peak_mib)} at {_setting(key)} on {_gpu(e)}",
                exact=True,
            )
        by_x: dict[int, Entry] = {}
        for e in same:
            if e.peak_mib is None:
                continue
            best = by_x.get(e.key.pixels)
            if best is None or (best.peak_mib or 0) < e.peak_mib:
                by_x[e.key.pixels] = e
        if not by_x:
            return None
        xs = sorted(by_x)
        x = key.pixels

        def y(p: int) -> float:
            v = by_x[p].peak_mib
            assert v is not None
            return v

        def seen(e: Entry) -> str:
            assert e.peak_mib is not None
            return f"{gb(e.peak_mib)} at {_setting(e.key)} on {_gpu(e)}"

        if x in by_x:  # the same pixels per pass on another GPU model, or another w×h split
            e = by_x[x]
            return Prediction(y(x), f"has seen this cfg need {seen(e)}")
        if x < xs[0]:
            mib = y(xs[0]) * (x / xs[0]) ** BELOW_EXPONENT
            return Prediction(
                mib, f"predicts {gb(mib)} at {_setting(key)}, scaled down from {seen(by_x[xs[0]])}"
            )
        if x > xs[-1]:
            k = ABOVE_EXPONENT
            if len(xs) >= 2:
                k = max(k, math.log(y(xs[-1]) / y(xs[-2])) / math.log(xs[-1] / xs[-2]))
            mib = y(xs[-1]) * (x / xs[-1]) ** k
            return Prediction(
                mib, f"predicts {gb(mib)} at {_setting(key)}, scaled up from {seen(by_x[xs[-1]])}"
            )
        hi = next(p for p in xs if p > x)
        lo = max(p for p in xs if p < x)
        mib = y(lo) + (y(hi) - y(lo)) * (x - lo) / (hi - lo)
        return Prediction(
            mib,
            f"predicts {gb(mib)} at {_setting(key)}, between {seen(by_x[lo])} and {seen(by_x[hi])}",
        )

    def _map_from_plain(self, key: MemoryKey) -> Prediction | None:
        plain = replace(key, map_on=False)
        same = [e for e in self.entries if e.key.same_net(plain)]
        base = self._from_peaks(plain, same)
        second = self._from_peaks(replace(plain, mini_batch=1), same)
        if base is None or second is None:
            return None
        mib = base.mib + second.mib
        return Prediction(
            mib,
            f"predicts {gb(mib)} at {_setting(key)}: without -map it {base.basis.split(' ', 1)[1]}"
            f", and -map adds a second network ({gb(second.mib)})",
        )

    # -- persistence (the file I/O is runtime/memory_store.py's) -----------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "entries": [
                {
                    "gpu_model": e.key.gpu_model,
                    "fingerprint": e.key.fingerprint,
                    "mini_batch": e.key.mini_batch,
                    "width": e.key.width,
                    "height": e.key.height,
                    "map": e.key.map_on,
                    "peak_mib": e.peak_mib,
                    "oom_free_mib": e.oom_free_mib,
                    "total_mib": e.total_mib,
                }
                for e in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MemoryModel:
        """Raises ValueError (or KeyError/TypeError) on a malformed document."""
        if data.get("version") != 1:
            raise ValueError(f"unknown memory model version {data.get('version')!r}")
        m = cls()
        for d in data["entries"]:
            key = MemoryKey(
                str(d["gpu_model"]),
                str(d["fingerprint"]),
                int(d["mini_batch"]),
                int(d["width"]),
                int(d["height"]),
                bool(d["map"]),
            )
            m = m.observe(
                Entry(
                    key,
                    _opt(d.get("peak_mib")),
                    _opt(d.get("oom_free_mib")),
                    _opt(d.get("total_mib")),
                )
            )
        return m


def _opt(v: Any) -> float | None:
    return None if v is None else float(v)


def _bounded(pred: Prediction | None, key: MemoryKey, same: Iterable[Entry]) -> Prediction | None:
    """Apply out-of-memory lower bounds: the need at x exceeds the free memory of every
    out-of-memory at x' ≤ x (more pixels per pass never need less)."""
    bounds = [e for e in same if e.oom_free_mib is not None and e.key.pixels <= key.pixels]
    if not bounds:
        return pred
    top = max(bounds, key=lambda e: e.oom_free_mib or 0.0)
    assert top.oom_free_mib is not None
    if pred is not None and pred.mib > top.oom_free_mib:
        return pred
    at = "at this setting" if top.key == key else f"at {_setting(top.key)}"
    return Prediction(
        top.oom_free_mib,
        f"has seen this cfg run out of memory {at} with {gb(top.oom_free_mib)} free on {_gpu(top)}",
        exact=top.key == key,
        lower_bound=True,
    )


# --- the pick before a launch -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """The launch as the key sees it, all but the mini-batch (which the pick chooses)."""

    gpu_model: str
    fingerprint: str
    width: int  # the largest size it reaches (`largest_size`)
    height: int
    map_on: bool

    def key(self, mini_batch: int) -> MemoryKey:
        return MemoryKey(
            self.gpu_model, self.fingerprint, mini_batch, self.width, self.height, self.map_on
        )


@dataclass(frozen=True, slots=True)
class Pick:
    subdivisions: int
    reason: str
    predicted_mib: float | None  # None: the model has not seen this cfg
    fits: bool | None  # None: not known (no prediction, or only a lower bound under the limit)


def _candidates(batch: int, current: int, tune: bool) -> list[int]:
    """Values that keep the images per iteration ((batch ÷ s) × s) of the cfg's own, as the
    ladder's `next_subdivisions` does: the weights' `seen` maps to the same iteration."""
    per_iteration = (batch // current) * current
    keep = [s for s in range(1, batch + 1) if (batch // s) * s == per_iteration]
    low = 1 if tune else current
    return sorted({s for s in keep if s >= low} | {current})


def pick_subdivisions(
    model: MemoryModel,
    facts: KeyFacts,
    batch: int,
    current_subdivisions: int,
    free_mib: float,
    headroom: float = 0.1,
    *,
    tune: bool = False,
) -> Pick:
    """The smallest `subdivisions` (one that keeps the images per iteration, so the effective
    batch and the iteration count stay) whose
    predicted peak fits under (1 − headroom) × `free_mib`; never below the cfg's own value
    unless `tune`, and then only where the prediction is a value, not a guess."""
    limit = (1 - headroom) * free_mib
    room = f"under {100 * (1 - headroom):.0f} % of the {gb(free_mib)} free"
    current = max(1, min(current_subdivisions, batch))
    rejected: Prediction | None = None
    last: Prediction | None = None
    for s in _candidates(batch, current, tune):
        m = max(1, batch // s)
        pred = model.predict(facts.key(m))
        if s < current and (pred is None or pred.lower_bound or pred.mib > limit):
            continue  # tune: only a known fit lowers subdivisions
        if pred is None:
            why = (
                f"{rejected.basis}: starting at subdivisions={s} (batch still {batch}: mini-batch "
                f"{m}, not seen yet)"
                if rejected
                else f"the memory model has not seen this cfg: subdivisions={s} as the cfg says"
            )
            if rejected:
                why = "the memory model " + why
            return Pick(s, why, None, None)
        last = pred
        if pred.mib > limit:
            rejected = rejected or pred
            continue
        fits: bool | None = None if pred.lower_bound else True
        est = f"more than {gb(pred.mib)} known" if pred.lower_bound else f"about {gb(pred.mib)}"
        if s < current:
            why = (
                f"memory.tune: the memory model {pred.basis}, {room}: lowering subdivisions "
                f"from {current} to {s} (batch still {batch}: mini-batch {m}) for speed"
            )
        elif rejected is None:
            why = f"the memory model {pred.basis}, {room}: keeping subdivisions={s}"
        else:
            why = (
                f"the memory model {rejected.basis}: starting at subdivisions={s} (batch still "
                f"{batch}: mini-batch {m}, {est}, {room})"
            )
        return Pick(s, why, pred.mib, fits)
    assert last is not None  # the last candidate (subdivisions = batch) was rejected above
    return Pick(
        batch,
        f"even at subdivisions={batch} (mini-batch {max(1, batch // batch)}) the memory model "
        f"{last.basis}, more than {100 * (1 - headroom):.0f} % of the {gb(free_mib)} free: "
        f"starting at subdivisions={batch}; the out-of-memory ladder goes on from there",
        last.mib,
        False,
    )


def fits(
    model: MemoryModel, facts: KeyFacts, mini_batch: int, free_mib: float, headroom: float = 0.1
) -> bool | None:
    """Whether a launch at `mini_batch` is predicted to fit `free_mib` (the daemon's question
    before it starts a job on a GPU); None where the model cannot tell."""
    pred = model.predict(facts.key(mini_batch))
    if pred is None:
        return None
    limit = (1 - headroom) * free_mib
    if pred.mib > limit:
        return False
    return None if pred.lower_bound else True
