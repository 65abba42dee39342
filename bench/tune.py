"""`memory.tune` mid-run: how far it lowers subdivisions, and how often that runs out of memory,
over a grid of simulated GPUs and cfgs. A pure simulation (under a second): no darknet, no GPU.

    .venv/bin/python bench/tune.py

Each job trains a cfg (a network's true need from `tests/standins/gpu_need.py`, nonlinear in
mini-batch, seeded ±4 % noise — not the memory model's formula) on a simulated GPU of 8…80 GB
with 300 MiB used by others, starting at the cfg's subdivisions where that fits. Each launch's
measured peak is its true need. The real decision (`supervisor.training.tune.decide_tune`, with
the real memory model fed each launch's peak as the runner's `JobMemory` does) is asked once per
launch; a tune whose true need exceeds the free memory runs out of memory and the ladder's
subdivisions step climbs back (that value is then never tried again).

Baseline in the same run: tune off (the cfg's subdivisions throughout). Printed per job: the
subdivisions start → end, the tunes, the out-of-memory failures they caused; then the ratio of
GPU passes per iteration (= subdivisions) tune / baseline over the grid. Passes per iteration
are a proxy for speed: what a larger mini-batch gains per pass depends on the GPU's
utilisation, not measured here (no GPU). The oracle column: the smallest subdivisions whose
true need fits under (1 − headroom) × the free memory (no two-tune cap, the need known).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.training.memory import next_subdivisions  # noqa: E402
from supervisor.training.memory_model import KeyFacts, MemoryModel, oom, peak  # noqa: E402
from supervisor.training.tune import GpuRoom, TuneFacts, decide_tune  # noqa: E402
from tests.standins.gpu_need import FULL, SPP, TINY, YOLOV2, NetProfile, need_for  # noqa: E402

OTHER_USED_MIB = 300.0
HEADROOM = 0.1
BATCH = 64
CASES: tuple[tuple[NetProfile, int], ...] = (
    (TINY, 16),
    (TINY, 4),
    (YOLOV2, 16),
    (FULL, 32),
    (FULL, 16),
    (SPP, 32),
    (SPP, 8),
)
GPUS_GB = (8, 12, 16, 24, 40, 80)


def job(net: NetProfile, subdivisions: int, total_gb: float) -> tuple[int, int, int] | None:
    """(final subdivisions, tunes, out-of-memory failures); None: the cfg does not fit."""
    total = total_gb * 1024.0
    free = total - OTHER_USED_MIB
    key = KeyFacts(f"Simulated {total_gb} GB", net.name, net.width, net.height, False)
    if need_for(net, mini_batch=BATCH // subdivisions) > free:
        return None  # the out-of-memory ladder's case (bench/oom.py), not tune's
    model, tried, tunes, ooms, relaunches, s = MemoryModel(), set[int](), 0, 0, 0, subdivisions
    for _ in range(8):  # launches
        m = BATCH // s
        need = need_for(net, mini_batch=m)
        room = GpuRoom(0, total, OTHER_USED_MIB + need, need)
        facts = TuneFacts(
            BATCH, s, False, False, "mid_run", 100, 60.0, 10.0, need, [room], HEADROOM,
            frozenset(tried), tunes, relaunches,
        )  # fmt: skip
        step = decide_tune(model, key, facts)
        model = model.observe(peak(key.key(m), need, total_mib=total))  # the launch's peak
        if step is None:
            break
        tried.add(step.subdivisions)
        tunes += 1
        relaunches += 1
        m2 = BATCH // step.subdivisions
        if need_for(net, mini_batch=m2) > free:
            ooms += 1
            relaunches += 1
            tried.add(step.subdivisions)
            model = model.observe(oom(key.key(m2), free, total_mib=total))
            s = next_subdivisions(BATCH, step.subdivisions) or s
        else:
            s = step.subdivisions
    return s, tunes, ooms


def oracle(net: NetProfile, total_gb: float) -> int:
    """The smallest subdivisions whose true need fits under (1 − headroom) × the free memory
    (what a tune without its two-step cap, knowing the need exactly, would reach)."""
    free = total_gb * 1024.0 - OTHER_USED_MIB
    fit = [
        s
        for s in (1, 2, 4, 8, 16, 32, 64)
        if need_for(net, mini_batch=BATCH // s) <= (1 - HEADROOM) * free
    ]
    return fit[0] if fit else BATCH


def main() -> None:
    print(f"{'GPU':>6} {'cfg':<22} {'sub':>9} {'tunes':>5} {'oom':>4} {'oracle':>6}")
    base = tuned = best = 0
    total_tunes = total_ooms = jobs = 0
    for gb_ in GPUS_GB:
        for net, sub in CASES:
            r = job(net, sub, gb_)
            if r is None:
                continue
            end, tunes, ooms = r
            jobs += 1
            base += sub
            tuned += end
            total_tunes += tunes
            total_ooms += ooms
            o = min(sub, oracle(net, gb_))
            best += o
            name = f"{net.name} sub{sub}"
            print(f"{gb_:>4}GB {name:<22} {sub:>3} → {end:<3} {tunes:>5} {ooms:>4} {o:>6}")
    print(
        f"\n{jobs} jobs: {total_tunes} tunes, {total_ooms} out-of-memory after a tune; "
        f"GPU passes per iteration, tune / baseline (tune off): {tuned}/{base} = "
        f"{tuned / base:.2f} (the oracle's {best}/{base} = {best / base:.2f})"
    )


if __name__ == "__main__":
    main()
