"""Score the diagnosis: confusion matrices on the curve corpus and on the labelled real logs.

    .venv/bin/python bench/diagnose.py [--logs DIR] [--corpus DIR] [--misses]

- Corpus (bench/curves/*.json, labels in each file): leave-one-seed-out. The two thresholds
  that the corpus argues for (`loss_stall`, `fit_fall`) are chosen on the curves of the other
  seeds (the middle of the grid values that score best there) and the held-out seed's curves
  are diagnosed with them. Facts are what the live runner knows: max_batches and burn_in from
  the cfg, the split sizes; evaluations carry TP/FN as trainsup's evaluator prints them.
- Real logs (../shared/logs, labels in bench/diagnose_labels.json, written before tuning):
  `analyze`'s replay, then the diagnosis of a finished log with the default thresholds. No
  facts beyond the printed learning rate's burn_in. The logs are read in place, never copied.
- Baselines measured in the same run: the majority label, and "level only" (best mAP ≥ 70 %
  good, < 5 % not learning, else low variance; no mAP: insufficient data). Printed as ratios.
- Cost: a diagnosis of the final history against the replay that built it.

`--misses` prints each miss with its evidence (what bench/RESULTS.md explains).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.curves import CURVES, curve_events, curve_paths, load_curve  # noqa: E402
from supervisor.darknet.analyze import analyze_log  # noqa: E402
from supervisor.runtime.diagnosis import DiagnosisWatch  # noqa: E402
from supervisor.training.diagnose import (  # noqa: E402
    PATTERNS,
    THRESHOLDS,
    Diagnosis,
    DiagnosisFacts,
    Thresholds,
    diagnose,
)
from supervisor.training.events import Event, MapResult  # noqa: E402
from supervisor.training.history import History  # noqa: E402
from supervisor.training.policy import Policy  # noqa: E402

# The corpus README's label names → the diagnosis's.
CORPUS_LABELS = {"insufficient": "insufficient_data"}
GRID_STALL = [round(0.05 * k, 2) for k in range(1, 13)]  # 0.05 … 0.60
GRID_FIT = [round(0.5 + 0.03 * k, 2) for k in range(0, 16)]  # 0.50 … 0.95


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    seed: int | None
    label: str
    history: History
    facts: DiagnosisFacts
    why: str = ""


def corpus_case(path: Path) -> Case:
    c = load_curve(path)
    by_it = {e["iteration"]: e for e in c["evaluations"]}
    events: list[Event] = []
    for e in curve_events(c):
        if isinstance(e, MapResult) and e.iteration in by_it:
            j = by_it[e.iteration]
            # curve_events leaves out the counts; trainsup's evaluator reports them live.
            e = dataclasses.replace(e, tp=j.get("tp"), fp=j.get("fp"), fn=j.get("fn"))
        events.append(e)
    h = History()
    for e in events:
        h = h.add(e)
    s, r = c["schedule"], c["recipe"]
    facts = DiagnosisFacts(
        max_batches=s["max_batches"],
        burn_in=s["burn_in"],
        valid_images=r["valid_images"],
        train_images=r["train_images"],
    )
    label = CORPUS_LABELS.get(c["label"], c["label"])
    return Case(c["name"], c["seed"], label, h, facts, c.get("why", ""))


def log_cases(logs: Path, labels_path: Path) -> tuple[list[Case], float]:
    labels = json.loads(labels_path.read_text())["labels"]
    out: list[Case] = []
    replay_s = 0.0
    for name, lab in labels.items():
        p = logs / name
        if not p.exists():
            print(f"missing log {p}", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        a = analyze_log(p, Policy(rules=()))
        replay_s += time.perf_counter() - t0
        facts = DiagnosisFacts(burn_in=a.schedule.burn_in or None)
        out.append(Case(name[:2] + "-log", None, lab["pattern"], a.history, facts, lab["why"]))
    return out, replay_s


def level_only(h: History) -> str:
    b = h.best
    if b is None:
        return "insufficient_data"
    if b.map >= 0.70:
        return "good"
    return "not_learning" if b.map < 0.05 else "low_variance"


def score(cases: list[Case], preds: list[str]) -> float:
    return sum(c.label == p for c, p in zip(cases, preds, strict=True)) / max(1, len(cases))


def matrix(cases: list[Case], preds: list[str]) -> str:
    used = [p for p in PATTERNS if any(c.label == p for c in cases) or p in preds]
    short = {p: p[:8] for p in used}
    head = "| label \\ diagnosis | " + " | ".join(short[p] for p in used) + " | right |"
    rows = [head, "|" + "---|" * (len(used) + 2)]
    for lab in used:
        mine = [p for c, p in zip(cases, preds, strict=True) if c.label == lab]
        if not mine:
            continue
        n = Counter(mine)
        rows.append(
            f"| {lab} | "
            + " | ".join(str(n[p]) if n[p] else "·" for p in used)
            + f" | {n[lab]}/{len(mine)} |"
        )
    return "\n".join(rows)


def tuned(cases: list[Case]) -> tuple[Thresholds, str]:
    """The (loss_stall, fit_fall) pair that scores best on `cases` (the median of the best
    pairs), and the ranges of the best pairs in words."""
    best: list[tuple[float, float]] = []
    top = -1.0
    for stall in GRID_STALL:
        for fit in GRID_FIT:
            t = dataclasses.replace(THRESHOLDS, loss_stall=stall, fit_fall=fit)
            s = score(cases, [diagnose(c.history, c.facts, thresholds=t).pattern for c in cases])
            if s > top:
                top, best = s, [(stall, fit)]
            elif s == top:
                best.append((stall, fit))
    stall = statistics.median_low(sorted({b[0] for b in best}))
    fit = statistics.median_low(sorted({b[1] for b in best if b[0] == stall}))
    ranges = (
        f"{top:.0%} right for loss_stall {min(b[0] for b in best)}–{max(b[0] for b in best)}, "
        f"fit_fall {min(b[1] for b in best)}–{max(b[1] for b in best)}"
    )
    return dataclasses.replace(THRESHOLDS, loss_stall=stall, fit_fall=fit), ranges


def live_path(path: Path) -> str:
    """One curve replayed as the runner sees it, diagnosed live after each evaluation."""
    case = corpus_case(path)
    c = load_curve(path)
    h = History()
    seq: list[tuple[int, str]] = []
    watch = DiagnosisWatch(lambda: h, case.facts)
    published: list[str] = []
    for e in curve_events(c):
        h = h.add(e)
        if isinstance(e, MapResult):
            seq.append((h.iteration, diagnose(h, case.facts, live=True).pattern))
            rec = watch.check(h)
            if rec is not None:
                published.append(f"{rec['pattern']}@{rec['iteration']}")
    mb = case.facts.max_batches or h.iteration
    final = seq[-1][1]
    left = next((it for it, p in seq if p != "too_early"), None)
    settled = seq[-1][0]
    for it, p in reversed(seq):
        if p != final:
            break
        settled = it
    changes = sum(a[1] != b[1] for a, b in itertools.pairwise(seq))
    return (
        f"{case.name}: label {case.label}; leaves too_early at "
        f"{left if left is not None else '-'}, settles on {final} at {settled} of {mb} "
        f"({settled / mb:.0%}); {changes} change(s) of pattern; published (DiagnosisWatch): "
        + " → ".join(published)
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "inf"


def show_misses(cases: list[Case], diags: list[Diagnosis]) -> None:
    for c, d in zip(cases, diags, strict=True):
        if c.label != d.pattern:
            print(f"  MISS {c.name}: label {c.label}, diagnosed {d.title()}")
            for e in d.evidence:
                print(f"      · {e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/diagnose.py")
    ap.add_argument("--logs", type=Path, default=ROOT.parent / "shared" / "logs")
    ap.add_argument("--corpus", type=Path, default=CURVES)
    ap.add_argument("--labels", type=Path, default=ROOT / "bench" / "diagnose_labels.json")
    ap.add_argument("--misses", action="store_true")
    args = ap.parse_args(argv)

    corpus = [corpus_case(p) for p in curve_paths(args.corpus)]
    seeds = sorted({c.seed for c in corpus if c.seed is not None})
    loso_preds: dict[str, Diagnosis] = {}
    print(f"## corpus: {len(corpus)} curves, leave-one-seed-out over seeds {seeds}")
    for s in seeds:
        train = [c for c in corpus if c.seed != s]
        t, ranges = tuned(train)
        print(f"  held out seed {s}: on the {len(train)} other curves {ranges}; chosen "
              f"loss_stall {t.loss_stall}, fit_fall {t.fit_fall}")  # fmt: skip
        for c in corpus:
            if c.seed == s:
                loso_preds[c.name] = diagnose(c.history, c.facts, thresholds=t)
    c_diag = [loso_preds[c.name] for c in corpus]
    c_pred = [d.pattern for d in c_diag]
    default_pred = [diagnose(c.history, c.facts).pattern for c in corpus]
    print(matrix(corpus, c_pred))
    acc = score(corpus, c_pred)
    maj = Counter(c.label for c in corpus).most_common(1)[0][0]
    base_maj = score(corpus, [maj] * len(corpus))
    base_lvl = score(corpus, [level_only(c.history) for c in corpus])
    right = sum(p == c.label for c, p in zip(corpus, c_pred, strict=True))
    print(f"corpus leave-one-seed-out: {acc:.0%} right ({right}/{len(corpus)}); default "
          f"thresholds: {score(corpus, default_pred):.0%}; majority baseline ({maj}) "
          f"{base_maj:.0%} (×{acc / base_maj:.2f}); level-only baseline {base_lvl:.0%} "
          f"(×{ratio(acc, base_lvl)})")  # fmt: skip
    if args.misses:
        show_misses(corpus, c_diag)
    print("\nlive (the runner's order, default thresholds): where each curve's diagnosis "
          "leaves too_early, where it settles on its final pattern, and what the watch "
          "publishes")  # fmt: skip
    for path in curve_paths(args.corpus):
        print("  " + live_path(path))

    if not args.logs.exists():
        print(f"\n(no real logs at {args.logs}: real-log score skipped)")
        return 0
    logs, replay_s = log_cases(args.logs, args.labels)
    t0 = time.perf_counter()
    l_diag = [diagnose(c.history, c.facts) for c in logs]
    diag_s = time.perf_counter() - t0
    l_pred = [d.pattern for d in l_diag]
    print(f"\n## real logs: {len(logs)} labelled (bench/diagnose_labels.json), default thresholds")
    print(matrix(logs, l_pred))
    acc = score(logs, l_pred)
    maj = Counter(c.label for c in logs).most_common(1)[0][0]
    base_maj = score(logs, [maj] * len(logs))
    base_lvl = score(logs, [level_only(c.history) for c in logs])
    right = sum(p == c.label for c, p in zip(logs, l_pred, strict=True))
    print(f"real logs: {acc:.0%} right ({right}/{len(logs)}); majority baseline ({maj}) "
          f"{base_maj:.0%} (×{ratio(acc, base_maj)}); level-only baseline {base_lvl:.0%} "
          f"(×{ratio(acc, base_lvl)})")  # fmt: skip
    if args.misses:
        show_misses(logs, l_diag)

    both = corpus + logs
    good = [p for c, p in zip(both, c_pred + l_pred, strict=True) if c.label == "good"]
    ot = sum(p == "overtraining" for p in good)
    print(f"\ngood runs called overtraining: {ot}/{len(good)} ({ot / max(1, len(good)):.0%})")
    print(f"cost: {len(logs)} diagnoses {diag_s * 1000:.1f} ms against their replays "
          f"{replay_s:.1f} s (×{diag_s / replay_s:.5f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
