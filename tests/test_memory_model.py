"""The memory model (pure) against the stand-in's true need (tests/standins/gpu_need.py), which
is deliberately not the model's formula: nonlinear in mini-batch and size, noisy, -map's net."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bench.oom import CASES, GPUS, Gpu, primed_model, run_job
from supervisor.darknet.cfg import Cfg
from supervisor.training.memory_model import (
    KeyFacts,
    MemoryKey,
    MemoryModel,
    cfg_fingerprint,
    fits,
    largest_size,
    oom,
    peak,
    pick_subdivisions,
)
from tests.standins.gpu_need import FULL, SPP, TINY, YOLOV2, need_for, profile_of

G12 = "NVIDIA GeForce RTX 3060"
G24 = "NVIDIA GeForce RTX 4090"


def key(gpu: str, mb: int, w: int = 608, h: int = 608, map_on: bool = False) -> MemoryKey:
    return MemoryKey(gpu, "fp-yolov3", mb, w, h, map_on)


def facts(gpu: str, w: int = 608, h: int = 608, map_on: bool = False) -> KeyFacts:
    return KeyFacts(gpu, "fp-yolov3", w, h, map_on)


# --- the stand-in's need ---------------------------------------------------------------------


def test_the_profiles_of_the_bench_are_the_walk_of_debians_cfgs(stock_cfg: Path) -> None:
    for name, p in (
        ("yolov3-tiny", TINY),
        ("yolov3", FULL),
        ("yolov2", YOLOV2),
        ("yolov3-spp", SPP),
    ):
        walked = profile_of(Cfg.load(stock_cfg.parent / f"{name}.cfg"))
        assert (walked.weights_mib, walked.act_mib, walked.width) == (
            p.weights_mib,
            p.act_mib,
            p.width,
        ), name


def test_the_true_need_is_nonlinear_noisy_and_map_adds_a_network() -> None:
    needs = [need_for(FULL, mini_batch=m) for m in (4, 8, 16, 32)]
    ratios = [b / a for a, b in itertools.pairwise(needs)]
    assert len({round(r, 2) for r in ratios}) == 3  # not one constant factor per doubling
    assert all(1.5 < r < 2.2 for r in ratios)
    # size: more than proportional to the pixels (r^1.07 on the activations)
    small, big = need_for(FULL, mini_batch=8, width=416, height=416), need_for(FULL, mini_batch=8)
    assert big > small * 1.8
    # seeded noise: another seed, another value; the same seed, the same value
    assert need_for(FULL, mini_batch=8, seed=1) != need_for(FULL, mini_batch=8, seed=2)
    assert need_for(FULL, mini_batch=8, seed=1) == need_for(FULL, mini_batch=8, seed=1)
    with_map = need_for(FULL, mini_batch=8, map_on=True)
    assert with_map - need_for(FULL, mini_batch=8) > FULL.weights_mib


# --- the fingerprint -----------------------------------------------------------------------


def test_the_fingerprint_is_the_network_not_its_schedule_or_its_key(stock_cfg: Path) -> None:
    base = Cfg(stock_cfg.read_text())
    fp = cfg_fingerprint(base)
    other = Cfg(stock_cfg.read_text())
    other.set_net("max_batches", 123)
    other.set_net("learning_rate", 0.01)
    other.set_net("steps", "10,20")
    other.set_subdivisions(16)
    other.set_size(320, 320)
    other.set_random(0)
    assert cfg_fingerprint(other) == fp
    wider = Cfg(stock_cfg.read_text())
    conv = next(s for s in wider.sections if s.kind == "convolutional")
    wider.set_option(conv.index, "filters", 32)
    assert cfg_fingerprint(wider) != fp
    assert cfg_fingerprint(Cfg((stock_cfg.parent / "yolov3.cfg").read_text())) != fp


def test_largest_size_follows_each_flavours_random() -> None:
    assert largest_size(416, 416, random=False, flavour="alexeyab") == (416, 416)
    assert largest_size(416, 416, random=True, flavour="pjreddie") == (608, 608)
    assert largest_size(416, 416, random=True, flavour="alexeyab") == (576, 576)


# --- predictions ---------------------------------------------------------------------------


def test_a_peak_seen_on_one_gpu_model_predicts_the_same_setting_on_another() -> None:
    m = MemoryModel().observe(peak(key(G24, 8), 8700, total_mib=24576))
    p = m.predict(key(G12, 8))
    assert p is not None and p.mib == 8700 and not p.exact
    assert "8.5 GB at mini-batch 8 (608×608) on NVIDIA GeForce RTX 4090 (24 GB)" in p.basis
    same = m.predict(key(G24, 8))
    assert same is not None and same.exact


def test_unseen_mini_batches_scale_from_the_nearest_seen_and_overestimate_the_true_need() -> None:
    m = MemoryModel()
    for mb in (4, 16):
        m = m.observe(peak(key(G24, mb), need_for(FULL, mini_batch=mb)))
    between = m.predict(key(G12, 8))
    below = m.predict(key(G12, 2))
    above = m.predict(key(G12, 32))
    assert between and below and above
    assert "between" in between.basis and "scaled down" in below.basis
    assert "scaled up" in above.basis
    # The true curve is convex but noisy (±4 %): every prediction lands within the pick's
    # 10 % headroom of the truth, and none is so cautious that it wastes half the card.
    for p, mb in ((between, 8), (below, 2), (above, 32)):
        truth = need_for(FULL, mini_batch=mb)
        assert 0.9 * truth <= p.mib <= 1.3 * truth, (mb, p.mib, truth)
    # a size change scales by the pixels of a pass
    size = m.predict(key(G12, 16, 416, 416))
    assert size is not None
    assert size.mib >= 0.9 * need_for(FULL, mini_batch=16, width=416, height=416)


def test_map_adds_a_second_network_when_only_runs_without_it_were_seen() -> None:
    m = MemoryModel().observe(peak(key(G12, 8), 8500)).observe(peak(key(G12, 2), 3100))
    plain, with_map = m.predict(key(G12, 8)), m.predict(key(G12, 8, map_on=True))
    assert plain and with_map
    assert with_map.mib > plain.mib + 1000 and "second network" in with_map.basis


def test_an_out_of_memory_is_a_lower_bound_for_its_setting_and_larger_ones() -> None:
    m = MemoryModel().observe(oom(key(G12, 8), 11_400, total_mib=12_288))
    at = m.predict(key(G12, 8))
    assert at is not None and at.lower_bound and at.mib == 11_400
    bigger = m.predict(key(G12, 8, map_on=True))  # -map needs more than that, too
    assert bigger is not None and bigger.lower_bound
    assert m.predict(key(G12, 4)) is None  # smaller: not known
    # a curve below the bound is raised to it
    m2 = m.observe(peak(key(G12, 4), 4000))
    p = m2.predict(key(G12, 8))
    assert p is not None and p.mib >= 11_400


def test_observing_a_key_again_keeps_one_entry_with_the_largest_values() -> None:
    m = MemoryModel().observe(peak(key(G12, 8), 8000)).observe(peak(key(G12, 8), 8300))
    m = m.observe(oom(key(G12, 8), 7000))
    assert len(m.entries) == 1
    e = m.entries[0]
    assert (e.peak_mib, e.oom_free_mib) == (8300, 7000)


def test_json_round_trip_and_a_bad_version_is_refused() -> None:
    m = (
        MemoryModel()
        .observe(peak(key(G12, 8), 8000, total_mib=12288))
        .observe(oom(key(G12, 16), 11_000))
    )
    assert MemoryModel.from_json(m.to_json()) == m
    with pytest.raises(ValueError):
        MemoryModel.from_json({"version": 99, "entries": []})


# --- the pick --------------------------------------------------------------------------------


def test_the_story_a_seen_cfg_starts_at_the_subdivisions_that_fitted_and_says_why() -> None:
    # the first job: subdivisions=8 ran out of memory on the 12 GB card, 16 ran
    m = MemoryModel().observe(oom(key(G12, 8), 11_700, total_mib=12_288))
    m = m.observe(peak(key(G12, 4), 5_200, total_mib=12_288))
    pick = pick_subdivisions(m, facts(G12), 64, 8, free_mib=11_700)
    assert pick.subdivisions == 16 and pick.fits is True
    assert pick.reason == (
        "the memory model has seen this cfg run out of memory at this setting with 11.4 GB free "
        "on NVIDIA GeForce RTX 3060 (12 GB): starting at subdivisions=16 (batch still 64: "
        "mini-batch 4, about 5.1 GB, under 90 % of the 11.4 GB free)"
    )


def test_the_pick_keeps_the_cfgs_value_when_it_fits_or_the_cfg_is_unseen() -> None:
    m = MemoryModel().observe(peak(key(G12, 8), 5000))
    keep = pick_subdivisions(m, facts(G12), 64, 8, free_mib=11_000)
    assert keep.subdivisions == 8 and keep.fits and "keeping subdivisions=8" in keep.reason
    unseen = pick_subdivisions(MemoryModel(), facts(G12), 64, 8, free_mib=11_000)
    assert (unseen.subdivisions, unseen.fits, unseen.predicted_mib) == (8, None, None)
    assert "has not seen this cfg" in unseen.reason


def test_the_pick_goes_below_the_cfgs_value_only_with_tune_and_a_known_fit() -> None:
    m = MemoryModel().observe(peak(key(G24, 32), 9000)).observe(peak(key(G24, 8), 3000))
    assert pick_subdivisions(m, facts(G24), 64, 8, free_mib=23_000).subdivisions == 8
    tuned = pick_subdivisions(m, facts(G24), 64, 8, free_mib=23_000, tune=True)
    # mini-batch 64 (subdivisions=1) is a guess above the seen curve: 9.0·2^1.05 GB fits 20.7
    assert tuned.subdivisions in (1, 2) and "memory.tune" in tuned.reason
    assert "lowering subdivisions from 8" in tuned.reason
    # only an out-of-memory at 16: tune does not guess below it
    bound = MemoryModel().observe(oom(key(G24, 16), 20_000)).observe(peak(key(G24, 8), 9000))
    assert pick_subdivisions(bound, facts(G24), 64, 8, 23_000, tune=True).subdivisions == 8


def test_the_pick_keeps_the_images_per_iteration() -> None:
    m = MemoryModel().observe(oom(key(G24, 16), 15_000)).observe(peak(key(G24, 8), 8000))
    # batch 48, subdivisions 3: 16 images a pass; 4 keeps 48 images per iteration, 5 would not
    pick = pick_subdivisions(m, facts(G24), 48, 3, free_mib=16_000)
    assert pick.subdivisions == 4 and (48 // pick.subdivisions) * pick.subdivisions == 48


def test_nothing_fits_starts_at_subdivisions_batch_and_says_so() -> None:
    m = MemoryModel().observe(peak(key(G24, 1), 9000))
    pick = pick_subdivisions(m, facts(G12), 64, 8, free_mib=8000)
    assert pick.subdivisions == 64 and pick.fits is False
    assert "the out-of-memory ladder goes on from there" in pick.reason


def test_fits_answers_the_daemons_question() -> None:
    m = MemoryModel().observe(peak(key(G12, 8), 8000))
    assert fits(m, facts(G12), 8, free_mib=11_000) is True
    assert fits(m, facts(G12), 8, free_mib=8_000) is False
    assert fits(MemoryModel(), facts(G12), 8, free_mib=8_000) is None


# --- the bar, on the bench's grid ----------------------------------------------------


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.name)
def test_primed_an_unseen_pair_is_stable_within_one_relaunch_and_a_seen_pair_at_once(
    gpu: Gpu,
) -> None:
    for c in CASES:
        naive, _ = run_job(c, gpu, None, naive=True)
        primed, after = run_job(c, gpu, primed_model((gpu, c)))
        assert primed.stable and primed.relaunches <= 1, (gpu, c.name, primed)
        assert primed.relaunches <= naive.relaunches and primed.lost <= naive.lost
        seen, _ = run_job(c, gpu, after)
        assert seen.stable and seen.relaunches == 0, (gpu, c.name, seen)
        # and a seen pair starts where the last job ended, not more cautiously
        assert seen.subdivisions <= primed.subdivisions


def test_cold_the_model_learns_within_the_job_and_the_grid_does_oom() -> None:
    """Without priming the first job pays the ladder; the grid is not trivially roomy."""
    g8 = GPUS[0]
    hard = [c for c in CASES if run_job(c, g8, None)[0].relaunches > 0]
    assert len(hard) >= 4
    for c in hard:
        cold, after = run_job(c, g8, MemoryModel())
        assert cold.stable and after is not None and after.entries
        again, _ = run_job(c, g8, after)
        assert again.relaunches == 0
