"""The out-of-memory ladder and the crash-loop guard, as pure decisions."""

from __future__ import annotations

from supervisor.training.ending import End, EndFacts, Relaunch, classify_end
from supervisor.training.events import GpuError, Iteration
from supervisor.training.history import History
from supervisor.training.memory import MemorySetting, next_memory_step


def test_the_ladder_doubles_subdivisions_keeping_batch_then_drops_random() -> None:
    s = MemorySetting(batch=64, subdivisions=16, random=True)
    step = next_memory_step(s)
    assert step is not None and step.changes == {"subdivisions": 32}
    assert step.words == "subdivisions=32 (batch still 64, mini-batch 2)"
    last = next_memory_step(MemorySetting(64, 64, True))
    assert last is not None and last.changes == {"random": 0}
    assert next_memory_step(MemorySetting(64, 64, False)) is None


def history_with_oom(at: int) -> tuple[History, GpuError]:
    h = History()
    for i in range(1, at + 1):
        h = h.add(Iteration(i, 1.0, 1.0, 0.001, line=i))
    oom = GpuError("out_of_memory", "CUDA Error: out of memory", at, line=at + 1)
    return h.add(oom), oom


def test_an_oom_is_a_relaunch_until_the_same_failure_repeats() -> None:
    h, oom = history_with_oom(29843)
    setting = MemorySetting(64, 8, True)
    facts = EndFacts({"returncode": 1}, False, launch_errors=(oom,), memory=setting)
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch) and d.cfg_changes == {"subdivisions": 16}
    assert d.reason.startswith("out of memory at iteration 29 843 (mini-batch 8)")
    # The same failure, at the same place, with the same setting: no relaunch ends otherwise.
    again = EndFacts(
        {"returncode": 1}, False, launch_errors=(oom,), memory=setting,
        earlier_failures=(d.failure or "",),
    )  # fmt: skip
    end = classify_end(h, again)
    assert isinstance(end, End) and end.status == "failed"
    # Nor beyond the relaunch budget.
    spent = EndFacts({"returncode": 1}, False, launch_errors=(oom,), memory=setting, relaunches=6)
    assert isinstance(classify_end(h, spent), End)


def test_an_earlier_launchs_oom_does_not_count() -> None:
    h, _ = history_with_oom(100)
    facts = EndFacts({"returncode": 1}, False, launch_errors=(), memory=MemorySetting(8, 1, False))
    end = classify_end(h, facts)
    assert isinstance(end, End) and end.status == "failed"


def test_resume_after_down_is_guarded_against_a_loop() -> None:
    h = History().add(Iteration(500, 1.0, 1.0, 0.001, line=1))
    facts = EndFacts(None, False, supervisor_was_down=True)
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch) and d.failure == "ended unwatched at 500"
    facts = EndFacts(None, False, supervisor_was_down=True, earlier_failures=(d.failure,))
    end = classify_end(h, facts)
    assert isinstance(end, End) and end.status == "killed"


def test_resume_after_down_ignores_an_earlier_launchs_errors() -> None:
    # Launch 1 ran out of memory and was relaunched; launch 2 was killed while nobody watched.
    h, _ = history_with_oom(150)
    h = h.add(Iteration(300, 1.0, 1.0, 0.001, line=400))
    facts = EndFacts(None, False, supervisor_was_down=True, memory=MemorySetting(8, 2, False))
    d = classify_end(h, facts)
    assert isinstance(d, Relaunch) and d.kind == "resume" and not d.cfg_changes
