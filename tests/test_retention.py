from __future__ import annotations

from supervisor.training.retention import Snapshot, plan_retention


def test_keeps_best_and_last_and_prunes_the_rest() -> None:
    snaps = [
        Snapshot(100, 0.2, True),
        Snapshot(200, 0.5, True),
        Snapshot(300, 0.4, True),
        Snapshot(400, None, False),
    ]
    p = plan_retention(snaps)
    assert p.best == snaps[1] and p.last == snaps[3]
    assert p.prune == (100, 300)


def test_top_k_ties_keep_the_earlier_and_invalid_is_never_best() -> None:
    snaps = [
        Snapshot(100, 0.5, True),
        Snapshot(200, 0.5, True),
        Snapshot(300, 0.9, False),
        Snapshot(400, 0.3, True),
    ]
    p = plan_retention(snaps, last=False, top_k=2)
    assert p.best == snaps[0]
    assert [s.iteration for s in p.top] == [100, 200]
    assert p.prune == (300, 400)


def test_nothing_kept_when_nothing_asked() -> None:
    p = plan_retention([Snapshot(100, 0.5, True)], best=False, last=False)
    assert p.kept == set() and p.prune == (100,)


def test_an_unscored_snapshot_is_never_pruned() -> None:
    # The evaluation of 300 timed out: it may be the best, so it stays until scored.
    snaps = [Snapshot(200, 0.4, True), Snapshot(300, unscored=True), Snapshot(400, 0.3, True)]
    p = plan_retention(snaps, last=False)
    assert p.best == snaps[0] and p.prune == (400,)
