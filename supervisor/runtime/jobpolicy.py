"""From a job spec and its cfg to the pure policy objects (`training.policy`, `training.schedule`).

The spec speaks the user's language (sections, `false` to switch a rule off); the policy is a
tuple of small rule objects. This is the one place that maps one onto the other.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.darknet.cfg import Cfg
from supervisor.spec import JobSpec, StopSpec
from supervisor.training.policy import (
    Diverged,
    IterationBudget,
    NotLearning,
    Overfit,
    Plateau,
    Policy,
    Rule,
    TargetMap,
    TimeBudget,
)
from supervisor.training.schedule import Schedule


def rules_for(stop: StopSpec) -> tuple[Rule, ...]:
    """Curve rules in the order they are tried: a diverged run is reported as such even when
    its mAP also plateaued; a reached target wins over a plateau."""
    rules: list[Rule] = []
    if stop.diverged.enabled:
        rules.append(Diverged(loss_factor=stop.diverged.loss_factor, nan=stop.diverged.nan))
    if stop.target_map is not None:
        rules.append(TargetMap(stop.target_map))
    if stop.overfit.enabled:
        o = stop.overfit
        rules.append(Overfit(drop=o.drop, confirm=o.confirm, span=o.span, valid_k=o.valid_k))
    if stop.plateau.enabled:
        p = stop.plateau
        rules.append(
            Plateau(
                patience=p.patience,
                min_delta=p.min_delta,
                patience_share=p.patience_share,
                after_last_step_share=p.after_last_step_share,
                valid_k=p.valid_k,
            )
        )
    if stop.not_learning.enabled:
        nl = stop.not_learning
        rules.append(
            NotLearning(
                after=nl.after,
                map_below=nl.map_below,
                window=nl.loss_window,
                after_share=nl.after_share,
                after_min=nl.after_min,
                min_loss_drop=nl.min_loss_drop,
            )
        )
    return tuple(rules)


def policy_for(spec: JobSpec | None, *, evaluate_every: int | None = None) -> Policy:
    """The job's policy; the defaults (every rule on, no budget) when there is no spec."""
    stop = spec.stop if spec is not None else StopSpec()
    budgets: list[Rule] = []
    if spec is not None and spec.budget.max_iterations is not None:
        budgets.append(IterationBudget(spec.budget.max_iterations))
    if spec is not None and spec.budget.max_time is not None:
        budgets.append(TimeBudget(float(spec.budget.max_time)))
    return Policy(
        budgets=tuple(budgets),
        rules=rules_for(stop),
        min_iterations=stop.min_iterations,
        evaluate_every=evaluate_every,
    )


def schedule_of(cfg: Cfg) -> Schedule:
    return Schedule(
        burn_in=cfg.burn_in,
        steps=cfg.steps,
        scales=cfg.scales,
        max_batches=cfg.max_batches,
    )


def schedule_from_cfg(path: Path) -> Schedule:
    return schedule_of(Cfg.load(path))
