"""Replay the stop policy over every real log in ../shared/logs and score its choices.

    .venv/bin/python bench/policy.py [--logs DIR] [--set rule.param=value ...]

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
                rules[i] = dataclasses.replace(r, **{param: type(cur)(value)})  # type: ignore[type-var]
                break
        else:
            raise SystemExit(f"no rule {rule_name!r} in {[r.name for r in rules]}")
    return dataclasses.replace(policy, rules=tuple(rules))


def main() -> int:
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
