"""How long to wait before a relaunch: Kubernetes Job-style exponential backoff. Pure.

A launch that fails quickly, again and again, must not hammer a GPU (or a driver that is
resetting) in a tight loop: the first relaunch after a failure waits `first` seconds, each
further quick failure doubles it, up to `cap` (Kubernetes: 10 s doubling, capped at 6 min).
A launch that ran at least `reset` seconds proves the setting works, so the count starts over
(Kubernetes resets after 10 min of running). A resume of a training that ended while the
supervisor was down is nobody's failure and waits nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_S = 10.0
CAP_S = 300.0
RESET_S = 600.0


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = FIRST_S
    cap: float = CAP_S
    reset: float = RESET_S

    def failures_in_a_row(self, before: int, ran_s: float) -> int:
        """The count after a launch that failed having run `ran_s` seconds."""
        return 1 if ran_s >= self.reset else before + 1

    def delay(self, failures_in_a_row: int) -> float:
        """Seconds to wait before relaunching after this many quick failures in a row."""
        if failures_in_a_row <= 0 or self.first <= 0:
            return 0.0
        return min(self.cap, self.first * 2.0 ** (failures_in_a_row - 1))

    def words(self, failures_in_a_row: int) -> str:
        d = self.delay(failures_in_a_row)
        return (
            f"relaunching after {_seconds(d)} (backoff: {_seconds(self.first)} doubling per "
            f"quick failure, at most {_seconds(self.cap)}; failure {failures_in_a_row} in a row)"
        )


def _seconds(s: float) -> str:
    if s >= 60 and s % 60 == 0:
        return f"{s / 60:g} min"
    if s >= 1:
        return f"{s:g} s"
    return f"{s * 1000:g} ms"
