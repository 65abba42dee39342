"""The progress line: the budget's end and the next evaluation, never an ETA of the run."""

from __future__ import annotations

from supervisor.runtime.runner import Progress, format_progress


def test_progress_names_the_budget_and_the_next_evaluation() -> None:
    p = Progress(
        iteration=350, max_iterations=1500, avg_loss=1.23456, last_map=0.55, best_map=0.6,
        best_iteration=300, iterations_per_s=2.5, budget_left_s=482.0, next_evaluation=400,
        stopping=None,
    )  # fmt: skip
    line = format_progress(p)
    assert line == (
        "it 350/1500 · avg loss 1.235 · mAP 55.0 % · best 60.0 %@300 · 2.50 it/s · "
        "next eval at 400 in 0m20s · budget ends in 8m02s"
    )
    assert "ETA" not in line and "1500 in" not in line


def test_progress_while_stopping_and_long_budgets() -> None:
    p = Progress(
        iteration=10, max_iterations=None, avg_loss=None, last_map=None, best_map=None,
        best_iteration=None, iterations_per_s=None, budget_left_s=7 * 3600 + 65,
        next_evaluation=None, stopping="plateau",
    )  # fmt: skip
    assert format_progress(p) == (
        "it 10 · budget ends in 7h01m · stopping (plateau) after the next save"
    )
