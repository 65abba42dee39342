"""Replay the stop policy over every real log in ../shared/logs and score its choices.

    .venv/bin/python bench/policy.py [--logs DIR] [--set rule.param=value ...]
    .venv/bin/python bench/policy.py whole [--set ...] [--chart bench/policy.png] [--per-curve]

`whole`: every whole curve (the corpus in bench/curves/ and the shared logs 04 and 53) through
trainsup's policy and the classic baselines (bench/curves/baselines.py), each keeping only
evaluated weights that exist at its stop: saved share, regret in points (mean, median, p90,
max, share of curves over 1 point), by family, and the Pareto chart (saved vs mean regret).

For each log with mAP evaluations: where the policy stops, which rule, the mAP of the weights
it keeps, the best mAP the whole log reached (hindsight), the regret (best − kept, in points)
and the share of iterations it saves. The summary compares the policy with the baseline of
running to the end and keeping the best (regret 0, saves nothing). This is how the defaults in
`supervisor/spec` were chosen (README "Why these defaults").
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.darknet.analyze import analyze_log  # noqa: E402
from supervisor.runtime.jobpolicy import policy_for  # noqa: E402
from supervisor.training.policy import Policy  # noqa: E402


def tuned(policy: Policy, settings: list[str]) -> Policy:
    """Apply `rule.param=value` overrides, e.g. `plateau.patience=1500`."""
    rules = list(policy.rules)
    for s in settings:
        key, value = s.split("=", 1)
        rule_name, param = key.split(".", 1)
        for i, r in enumerate(rules):
            if r.name == rule_name:
                cur = getattr(r, param)
                kind = float if cur is None else type(cur)  # an option that is off by default
                new = None if value in ("None", "null") else kind(value)
                rules[i] = dataclasses.replace(r, **{param: new})  # type: ignore[type-var]
                break
        else:
            raise SystemExit(f"no rule {rule_name!r} in {[r.name for r in rules]}")
    return dataclasses.replace(policy, rules=tuple(rules))


def whole(argv: list[str]) -> int:
    from bench.curves import CURVES
    from bench.curves.baselines import baselines, load_all, score, summary

    ap = argparse.ArgumentParser(prog="bench/policy.py whole")
    ap.add_argument("--logs", type=Path, default=ROOT.parent / "shared" / "logs")
    ap.add_argument("--corpus", type=Path, default=CURVES)
    ap.add_argument("--set", dest="settings", action="append", default=[])
    ap.add_argument("--chart", type=Path, default=None, help="write the Pareto chart here")
    ap.add_argument("--per-curve", action="store_true", help="trainsup's stop on each curve")
    ap.add_argument("--markdown", action="store_true", help="the table as Markdown")
    ap.add_argument(
        "--lofo",
        metavar="RULE.PARAM=V1,V2,…",
        action="append",
        help="tune settings leave-one-family-out (repeat for a grid over several): for each "
        "family, choose the values that save most on the other families with mean regret ≤ "
        "0.5 and none over 2 points (times --margin), and score them on the held-out family",
    )
    ap.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="--lofo's bounds times this (0.5: mean regret ≤ 0.25, max ≤ 1 on the folds chosen "
        "on, so that a setting picked at the edge of the bound keeps room on the held-out one)",
    )
    ns = ap.parse_args(argv)
    policy = tuned(policy_for(None), ns.settings)
    curves = load_all(ns.corpus, ns.logs if ns.logs.exists() else None)
    fams = sorted({c.family for c in curves})
    print(f"{len(curves)} whole curves: " + ", ".join(
        f"{f} {sum(c.family == f for c in curves)}" for f in fams))  # fmt: skip
    if ns.lofo:
        lofo(policy, curves, ns.lofo, ns.margin)
        return 0
    if ns.per_curve:
        run = baselines(policy)["trainsup defaults"]
        orc = baselines(policy)["oracle"]
        for c in curves:
            s, o = score(run, c), score(orc, c)
            print(f"  {c.name:<28} {c.label:<13} last {c.last:>6} stop {s.stop:>6} kept "
                  f"{s.kept * 100:5.1f} best {c.best * 100:5.1f} regret {s.regret:5.1f} "
                  f"saved {s.saved * 100:4.0f}% (oracle {o.saved * 100:4.0f}%)")  # fmt: skip
    head = (f"{'policy':<26} {'saved':>6} {'mean':>5} {'median':>6} {'p90':>5} {'max':>5} "
            f"{'>1pt':>5}  " + "  ".join(f"{f}: saved/mean" for f in fams))  # fmt: skip
    if ns.markdown:
        cols = ["policy", "saved", "mean regret", "median", "p90", "max", "> 1 pt"]
        cols += [f"{f}: saved / mean regret" for f in fams]
        print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    else:
        print("\n" + head)
    points: list[tuple[str, float, float]] = []
    for name, b in baselines(policy).items():
        scores = [score(b, c) for c in curves]
        a = summary(scores)
        by = []
        for f in fams:
            fs = summary([s for s in scores if s.family == f])
            by.append(f"{fs['saved'] * 100:4.0f}%/{fs['mean']:4.1f}")
        if ns.markdown:
            cells = [name, f"{a['saved'] * 100:.0f} %", f"{a['mean']:.2f}"]
            cells += [f"{a['median']:.2f}", f"{a['p90']:.1f}", f"{a['max']:.1f}"]
            cells += [f"{a['over1'] * 100:.0f} %", *(b.replace(" ", "") for b in by)]
            print("| " + " | ".join(cells) + " |")
        else:
            row = (f"{name:<26} {a['saved'] * 100:5.0f}% {a['mean']:5.2f} {a['median']:6.2f} "
                   f"{a['p90']:5.1f} {a['max']:5.1f} {a['over1'] * 100:4.0f}%  ")  # fmt: skip
            print(row + "  ".join(by))
        points.append((name, a["saved"], a["mean"]))
    target(policy, curves)
    if ns.chart is not None:
        chart(points, ns.chart, len(curves))
    return 0


def target(policy: Policy, curves: list[Any]) -> None:
    """The issue's target in one place: the defaults' saving as a share of the oracle's, on
    every curve and on the runs that learn (a dead run's stop saves more than its noisy best)."""
    from bench.curves.baselines import oracle, score, summary, trainsup

    run = trainsup(policy)
    groups = {
        "all curves": curves,
        "runs that learn (best ≥ 5 %)": [c for c in curves if c.best >= 0.05],
    }
    dead = [c for c in curves if c.best < 0.05]
    print()
    for label, group in groups.items():
        t = summary([score(run, c) for c in group])
        o = summary([score(oracle, c) for c in group])
        share = t["saved"] / o["saved"] if o["saved"] else float("nan")
        print(f"target, {label} ({len(group)}): defaults save {t['saved'] * 100:.1f} %, oracle "
              f"{o['saved'] * 100:.1f} % → {share * 100:.0f} % of the oracle (need ≥ 80 %); mean "
              f"regret {t['mean']:.2f} (≤ 0.5), max {t['max']:.1f} (≤ 2)")  # fmt: skip
    for c in dead:
        stop, budget = score(run, c).stop, c.schedule.max_batches or c.last
        print(f"dead run {c.name}: stopped at {stop} of {budget} ({stop / budget * 100:.0f} %, "
              "need < 40 %)")  # fmt: skip


def lofo(policy: Policy, curves: list[Any], settings: list[str], margin: float = 1.0) -> None:
    import itertools

    from bench.curves.baselines import oracle, score, summary, trainsup

    axes = []
    for setting in settings:
        key, _, values = setting.partition("=")
        axes.append([f"{key}={v}" for v in values.split(",")])
    grid = [list(combo) for combo in itertools.product(*axes)]
    fams = sorted({c.family for c in curves})
    print(f"leave-one-family-out over {len(grid)} settings (families: {', '.join(fams)}), "
          f"bounds on the other families: mean regret ≤ {0.5 * margin:g}, max ≤ {2 * margin:g}")
    for held in fams:
        train = [c for c in curves if c.family != held]
        test = [c for c in curves if c.family == held]
        best: tuple[float, float, list[str]] | None = None
        for combo in grid:
            a = summary([score(trainsup(tuned(policy, combo)), c) for c in train])
            ok = a["mean"] <= 0.5 * margin and a["max"] <= 2.0 * margin
            flag = "" if ok else " (over the bound)"
            print(f"  without {held}: {' '.join(combo)}: saved {a['saved'] * 100:.1f} %, mean "
                  f"regret {a['mean']:.2f}, max {a['max']:.1f}{flag}")  # fmt: skip
            # Most saved within the bound; ties go to the lower mean regret, then the first.
            if ok and (best is None or (a["saved"], -a["mean"]) > (best[0], -best[1])):
                best = (a["saved"], a["mean"], combo)
        if best is None:
            print(f"  {held}: no setting within the bound on the other families")
            continue
        chosen = tuned(policy, best[2])
        t = summary([score(trainsup(chosen), c) for c in test])
        o = summary([score(oracle, c) for c in test])
        print(f"=> {held} held out: chosen {' '.join(best[2])}; on {held}: saved "
              f"{t['saved'] * 100:.0f} % (oracle {o['saved'] * 100:.0f} %), mean regret "
              f"{t['mean']:.2f}, max {t['max']:.1f}")  # fmt: skip


def chart(points: list[tuple[str, float, float]], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for name, saved, regret in points:
        colour = "tab:red" if name.startswith("trainsup") else (
            "tab:green" if name == "oracle" else "tab:blue")  # fmt: skip
        ax.scatter(saved * 100, regret, color=colour)
        ax.annotate(name, (saved * 100, regret), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel("iterations saved, mean share (%)")
    ax.set_ylabel("mean regret (mAP points lost vs the best of the whole curve)")
    ax.set_title(f"Stopping policies on {n} whole curves (better: right and low)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"chart: {path}")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "whole":
        return whole(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", type=Path, default=ROOT.parent / "shared" / "logs")
    ap.add_argument("--set", dest="settings", action="append", default=[])
    ns = ap.parse_args()
    policy = tuned(policy_for(None), ns.settings)
    print(f"policy: {[(r.name, dataclasses.asdict(r)) for r in policy.rules]}\n")  # type: ignore[call-overload]
    cols = [
        ("log", "<44"),
        ("evals", ">5"),
        ("last", ">6"),
        ("stop", ">6"),
        ("rule", "<13"),
        ("kept", ">6"),
        ("best", ">6"),
        ("regret", ">6"),
        ("saved", ">6"),
    ]
    head = " ".join(f"{name:{fmt}}" for name, fmt in cols)
    print(head)
    regrets: list[float] = []
    saved: list[float] = []
    stops = 0
    for log in sorted(ns.logs.glob("*.log")):
        a = analyze_log(log, policy)
        h = a.history
        if not h.evaluations or h.best is None or h.last is None:
            continue
        span = h.iteration - (h.first_iteration or 0)
        kept = a.kept.map if a.kept else h.best.map
        regret = (h.best.map - kept) * 100
        frac = (a.iterations_saved or 0) / span if span else 0.0
        regrets.append(regret)
        saved.append(frac)
        stops += a.stop is not None
        print(
            f"{log.name[:44]:<44} {len(h.evaluations):>5} {h.iteration:>6} "
            f"{a.stop.iteration if a.stop else '-':>6} {a.stop.rule if a.stop else '-':<13} "
            f"{kept * 100:>6.1f} {h.best.map * 100:>6.1f} {regret:>6.1f} {frac * 100:>5.0f}%"
        )
    n = len(regrets)
    print(
        f"\n{n} logs with mAP; policy stopped {stops}. Regret (points of mAP lost vs keeping the "
        f"best of the whole log): mean {statistics.mean(regrets):.2f}, max {max(regrets):.1f}, "
        f"logs with regret > 1 point: {sum(r > 1 for r in regrets)}. Iterations saved (share "
        f"of each log's span): mean {statistics.mean(saved) * 100:.1f} %. Baseline (run to the "
        "end, keep the best): regret 0, saved 0 %."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
