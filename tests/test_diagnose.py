"""The diagnosis (training/diagnose.py) and its live watch (runtime/diagnosis.py).

Synthetic histories pin each rule's boundary; the real curves of the corpus (bench/curves) and
the labelled shared logs check that the rules read real runs as a person does; a real log fed
line by line through the parser, as the runner reads darknet.log, checks the live answer.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from bench.curves import curve_events, curve_paths, load_curve
from supervisor.darknet.logparse import LogParser
from supervisor.runtime.diagnosis import DiagnosisWatch
from supervisor.runtime.records import to_record
from supervisor.training.diagnose import (
    PATTERNS,
    THRESHOLDS,
    Diagnosis,
    DiagnosisFacts,
    diagnose,
    gpu_advice,
)
from supervisor.training.events import Event, Iteration, MapResult
from supervisor.training.history import History

ROOT = Path(__file__).resolve().parent.parent
LABELS = json.loads((ROOT / "bench" / "diagnose_labels.json").read_text())["labels"]
CORPUS_LABELS = {"insufficient": "insufficient_data"}


def run(
    losses: Sequence[float],
    maps: dict[int, float],
    objects: int = 500,
    start: int = 1,
) -> History:
    """A history: avg loss per iteration from `start`, an evaluation at each key of `maps`
    over a valid split of `objects` ground-truth boxes (TP + FN)."""
    h = History()
    for k, avg in enumerate(losses):
        it = start + k
        h = h.add(Iteration(it, avg, avg, 0.001))
        if it in maps:
            m = maps[it]
            if not math.isfinite(m):  # what no evaluation can produce: recorded, invalid
                h = h.add(MapResult(it, m, valid=False))
                continue
            tp = round(objects * m)
            h = h.add(MapResult(it, m, tp=tp, fn=objects - tp, fp=10))
    return h


def falling(n: int, top: float = 20.0, floor: float = 0.5) -> list[float]:
    """A loss that descends fast and keeps falling slowly (a healthy run)."""
    return [floor + (top - floor) * math.exp(-k / 60) + 0.6 * (1 - k / n) for k in range(n)]


def curve_history(name: str) -> tuple[History, DiagnosisFacts, str]:
    c = load_curve(name)
    by_it = {e["iteration"]: e for e in c["evaluations"]}
    h = History()
    for e in curve_events(c):
        if isinstance(e, MapResult):
            j = by_it[e.iteration]
            e = dataclasses.replace(e, tp=j.get("tp"), fn=j.get("fn"))
        h = h.add(e)
    s, r = c["schedule"], c["recipe"]
    facts = DiagnosisFacts(
        max_batches=s["max_batches"],
        burn_in=s["burn_in"],
        valid_images=r["valid_images"],
        train_images=r["train_images"],
    )
    return h, facts, CORPUS_LABELS.get(c["label"], c["label"])


# --- the answer's shape ---------------------------------------------------------------------------


def test_gpu_advice_is_kept() -> None:
    assert "subdivisions" in gpu_advice("out_of_memory")
    assert "nvidia-smi" in gpu_advice("no_device")


def test_title_and_json_use_the_issue_names() -> None:
    d = Diagnosis("overtraining", 0.8, ("a",), ("b",), ("c",))
    assert d.title() == "overtraining (confidence 0.80)"
    assert d.to_json() == {
        "pattern": "overtraining",
        "confidence": 0.8,
        "evidence": ["a"],
        "causes": ["b"],
        "advice": ["c"],
    }
    assert set(PATTERNS) == {
        "good", "overtraining", "not_learning", "corrupted", "low_variance",
        "insufficient_data", "too_early",
    }  # fmt: skip


# --- each rule on synthetic curves ----------------------------------------------------------------


def test_peak_then_lasting_drop_while_loss_falls_is_overtraining() -> None:
    maps = {1000: 0.60, 1500: 0.75, 2000: 0.81, 2500: 0.79, 3000: 0.75, 3500: 0.74, 4000: 0.745}
    d = diagnose(run(falling(4000), maps))
    assert d.pattern == "overtraining"
    assert "mAP peaked at 81.0 % at 2 000 and is 6.5 pts lower at 4 000" in d.evidence[0]
    assert "(80.0 % with its neighbour) have a median of 74.5 %" in d.evidence[1]
    assert any("keep the best weights (iteration 2 000" in a for a in d.advice)


def test_a_lone_high_evaluation_is_not_a_peak() -> None:
    # 0.82 once among evaluations at 0.78: after it they are 4 points lower, but no lower than
    # before it. (Held with a neighbour the peak is 0.80: 2 points, under the 3 asked.)
    maps = {it: 0.78 for it in range(500, 4001, 250)} | {2000: 0.82}
    assert diagnose(run(falling(4000), maps)).pattern == "good"
    # It is the pairing that keeps it quiet: the paired peak's 2 points pass a 1.5-point bar.
    single = dataclasses.replace(THRESHOLDS, overtraining_drop=0.015)
    assert diagnose(run(falling(4000), maps), thresholds=single).pattern == "overtraining"


def test_a_drop_within_the_evaluations_own_noise_is_not_overtraining() -> None:
    # The same 4-point gap under the best, but the evaluations swing 6 points each time.
    maps = {1000: 0.60, 1500: 0.75, 2000: 0.81, 2500: 0.72, 3000: 0.80, 3500: 0.71, 4000: 0.79}
    d = diagnose(run(falling(4000), maps))
    assert d.pattern == "good"


def test_a_drop_while_the_loss_is_flat_is_not_overtraining() -> None:
    maps = {1000: 0.60, 1500: 0.75, 2000: 0.81, 2500: 0.77, 3000: 0.76, 3500: 0.765, 4000: 0.76}
    flat = falling(1000) + [falling(1000)[-1]] * 3000
    assert diagnose(run(flat, maps)).pattern != "overtraining"


def test_mAP_near_zero_is_not_learning_and_check_findings_explain_it() -> None:
    maps = {it: 0.01 + 0.001 * (it // 500) for it in range(500, 4001, 500)}
    h = run(falling(4000), maps)
    plain = diagnose(h)
    assert plain.pattern == "not_learning"
    found = diagnose(h, DiagnosisFacts(findings={"label_class_out_of_range": 12}))
    assert found.pattern == "not_learning"
    assert found.confidence > plain.confidence
    assert any("class id ≥ classes" in e and "12" in e for e in found.evidence)


def test_a_tiny_valid_split_is_insufficient_data_whatever_the_mAP() -> None:
    maps = {it: 0.9 + 0.01 * (it % 3) for it in range(500, 4001, 500)}
    d = diagnose(run(falling(4000), maps, objects=12))
    assert d.pattern == "insufficient_data"
    assert "12 objects" in d.evidence[0]
    assert diagnose(run(falling(4000), maps, objects=500)).pattern == "good"
    # The split is what is too small: enlarging it is the first advice, not a longer run.
    assert d.advice[0].startswith("add data; make the validation split larger")


def test_too_few_evaluations_advise_a_longer_run_first() -> None:
    d = diagnose(run(falling(3000), {2000: 0.8, 3000: 0.82}))
    assert d.pattern == "insufficient_data" and d.advice[0].startswith("train longer")


def test_too_few_evaluations_are_insufficient_data_or_too_early_live() -> None:
    h = run(falling(3000), {2000: 0.8, 3000: 0.82})
    assert diagnose(h).pattern == "insufficient_data"
    assert diagnose(h, live=True).pattern == "too_early"


def test_live_before_a_quarter_of_max_batches_is_too_early() -> None:
    maps = {it: 0.3 + it / 10000 for it in range(200, 1001, 100)}
    h = run(falling(1000), maps)
    facts = DiagnosisFacts(max_batches=6000, burn_in=100)
    d = diagnose(h, facts, live=True)
    assert d.pattern == "too_early"
    assert "1 000 of 6 000" in d.evidence[0]


def test_nan_loss_is_a_corrupted_dataset_even_live() -> None:
    losses = falling(2000) + [math.nan] * 30
    d = diagnose(run(losses, {1000: 0.5}), DiagnosisFacts(max_batches=6000), live=True)
    assert d.pattern == "corrupted"
    assert "NaN" in d.evidence[0]


def test_a_mediocre_plateau_is_low_variance_and_a_high_one_good() -> None:
    # A Colab tail: iterations 2 001–6 000, mAP up 10 points early, then level.
    maps = {it: 0.40 + (0.1 if it >= 3000 else 0.0) for it in range(2500, 6001, 500)}
    low = diagnose(run(falling(4000), maps, start=2001))
    assert low.pattern == "low_variance"
    high = {it: m + 0.4 for it, m in maps.items()}
    assert diagnose(run(falling(4000), high, start=2001)).pattern == "good"


def test_a_mediocre_tail_with_too_few_late_evaluations_is_not_called_good() -> None:
    # Four evaluations of a Colab tail: two in the last third, no plateau or climb to read.
    maps = {2500: 0.40, 3000: 0.45, 3500: 0.47, 4000: 0.50}
    h = run(falling(2500), maps, start=1501)
    assert diagnose(h).pattern == "insufficient_data"
    assert "to tell a plateau from a climb" in diagnose(h).evidence[0]
    assert diagnose(h, live=True).pattern == "too_early"


def test_duplicates_across_splits_make_a_great_mAP_suspect() -> None:
    maps = {it: 0.97 for it in range(500, 4001, 500)}
    h = run(falling(4000), maps)
    plain = diagnose(h)
    dup = diagnose(h, DiagnosisFacts(findings={"split_overlap_content": 40}))
    assert plain.pattern == dup.pattern == "good"
    assert dup.confidence < plain.confidence
    assert any("40 duplicates" in e for e in dup.evidence)


def test_a_log_without_mAP_gets_what_its_loss_supports_and_says_so() -> None:
    short = diagnose(run(falling(400), {}))
    assert short.pattern == "insufficient_data"
    still = diagnose(run(falling(4000), {}))
    assert still.pattern == "good" and still.confidence <= 0.35
    flat = diagnose(run([2.0] * 4000, {}))
    assert flat.pattern == "insufficient_data"
    for d in (short, still, flat):
        assert any("loss alone" in e for e in d.evidence)
    invalid = run(falling(4000), {1000: math.nan, 2000: math.inf})
    assert any("no valid mAP among 2 evaluations" in e for e in diagnose(invalid).evidence)
    assert diagnose(History()).pattern == "insufficient_data"
    assert diagnose(History(), live=True).pattern == "too_early"


# --- the real curves ------------------------------------------------------------------------------


# The reviewed curves when the rules were written, each read as labelled. Curves the background
# generator adds later count in the aggregate below (the issue's ≥ 90 %), not one by one.
KNOWN_CURVES = (
    "generous-corrupted-s0", "generous-good-s0", "generous-low_variance-s0",
    "generous-not_learning-s0", "generous-overtraining-s0",
    "recipe-corrupted-s0", "recipe-corrupted-s1", "recipe-good-s0", "recipe-good-s1",
    "recipe-insufficient-s0", "recipe-insufficient-s1", "recipe-low_variance-s0",
    "recipe-low_variance-s1", "recipe-not_learning-s0", "recipe-not_learning-s1",
    "recipe-overtraining-s0", "recipe-overtraining-s1",
)  # fmt: skip


@pytest.mark.parametrize(
    "name", [n for n in KNOWN_CURVES if any(p.stem == n for p in curve_paths())]
)
def test_each_known_corpus_curve_gets_its_label(name: str) -> None:
    h, facts, label = curve_history(name)
    d = diagnose(h, facts)
    assert d.pattern == label, d.evidence
    assert 0.0 < d.confidence <= 1.0 and d.evidence and d.advice


def test_the_whole_corpus_is_read_as_labelled_nine_times_in_ten() -> None:
    paths = curve_paths()
    assert len(paths) >= 13
    got = []
    for p in paths:
        h, facts, label = curve_history(p.stem)
        got.append((label, diagnose(h, facts).pattern))
    assert sum(label == pattern for label, pattern in got) / len(got) >= 0.9
    good = [pattern for label, pattern in got if label == "good"]
    assert good and good.count("overtraining") / len(good) <= 0.05


def test_a_live_corpus_curve_moves_from_too_early_to_its_pattern_through_the_watch() -> None:
    """The runner's order: it publishes a MapResult record, then adds the event to its
    history; the watch, a bus listener, publishes a Diagnosis record when the pattern moves."""
    c = load_curve("recipe-not_learning-s0")
    s = c["schedule"]
    box: list[History] = [History()]
    published: list[dict[str, object]] = []
    watch = DiagnosisWatch(
        lambda: box[0],
        DiagnosisFacts(max_batches=s["max_batches"], burn_in=s["burn_in"]),
        publish=published.append,
    )
    for e in curve_events(c):
        watch(to_record(e))
        box[0] = box[0].add(e)
    patterns = [r["pattern"] for r in published]
    assert patterns == ["too_early", "not_learning"]
    assert published[1]["previous"] == "too_early" and published[1]["type"] == "Diagnosis"
    assert isinstance(published[1]["iteration"], int) and published[1]["iteration"] >= 337
    # Called after the history holds the evaluation, the watch does not count it twice.
    again = DiagnosisWatch(lambda: box[0])
    assert again.check(box[0]) is not None and again.check(box[0]) is None


def test_the_watch_publishes_a_noisy_curves_verdict_once() -> None:
    """The generous 12-image run: diagnosed after each of its 40 evaluations it moves between
    low variance and too early (and once overtraining); published, it moves once."""
    c = load_curve("generous-overtraining-s0")
    s = c["schedule"]
    facts = DiagnosisFacts(max_batches=s["max_batches"], burn_in=s["burn_in"])
    watch = DiagnosisWatch(lambda: History(), facts)
    h = History()
    raw: list[str] = []
    published: list[str] = []
    for e in curve_events(c):
        h = h.add(e)
        if isinstance(e, MapResult):
            raw.append(diagnose(h, facts, live=True).pattern)
            rec = watch.check(h)
            if rec is not None:
                published.append(rec["pattern"])
    assert sum(a != b for a, b in itertools.pairwise(raw)) >= 4  # the raw readings swing
    assert published == ["too_early", "low_variance"]
    assert watch.published is not None and watch.published.pattern == raw[-1] == "low_variance"


@pytest.mark.shared_logs
def test_a_real_log_read_line_by_line_moves_from_too_early_to_good(logs_dir: Path) -> None:
    """Shared log 53 (4 000 iterations, 14 evaluations) through the parser in small pieces, as
    the runner tails darknet.log, with the diagnosis after each evaluation."""
    text = (logs_dir / "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log").read_text(
        errors="replace"
    )
    parser = LogParser()
    h = History()
    seen: list[tuple[int, str]] = []

    def fold(events: list[Event]) -> None:
        nonlocal h
        for e in events:
            h = h.add(e)
            if isinstance(e, MapResult):
                seen.append((h.iteration, diagnose(h, live=True).pattern))

    for k in range(0, len(text), 4096):
        fold(parser.feed(text[k : k + 4096]))
    fold(parser.close())
    assert len(seen) == 14
    patterns = [p for _, p in seen]
    first_good = patterns.index("good")
    assert patterns[:first_good] == ["too_early"] * first_good
    assert first_good == THRESHOLDS.min_evaluations - 1  # the 4th evaluation
    assert set(patterns[first_good:]) == {"good"}
    assert diagnose(h).pattern == "good"


@pytest.mark.shared_logs
def test_the_labelled_real_logs_are_read_as_labelled(logs_dir: Path) -> None:
    from supervisor.darknet.analyze import analyze_log
    from supervisor.training.policy import Policy

    right, good, good_as_ot = 0, 0, 0
    for name, lab in LABELS.items():
        a = analyze_log(logs_dir / name, Policy(rules=()))
        d = diagnose(a.history, DiagnosisFacts(burn_in=a.schedule.burn_in or None))
        right += d.pattern == lab["pattern"]
        if lab["pattern"] == "good":
            good += 1
            good_as_ot += d.pattern == "overtraining"
    assert len(LABELS) >= 30
    assert right / len(LABELS) >= 0.80  # the issue's target (35 of 38 at the last run)
    assert good_as_ot / good <= 0.05


# --- where users see it ---------------------------------------------------------------------------


@pytest.mark.shared_logs
def test_analyze_prints_and_returns_the_diagnosis(logs_dir: Path) -> None:
    from supervisor.darknet.analyze import analyze_log, format_analysis

    a = analyze_log(logs_dir / "42_alexeyab-yolov4tiny-ball-peak-plateau-hitanshu.log")
    j = a.to_json()["diagnosis"]
    assert j["pattern"] == "overtraining"
    assert set(j) == {"pattern", "confidence", "evidence", "causes", "advice"}
    text = format_analysis(a)
    assert f"diagnosis: overtraining (confidence {j['confidence']:.2f})" in text
    assert "mAP peaked at 69.9 % at 1 420" in text
    assert text.splitlines()[-1].startswith("keep: ")


def test_report_json_carries_the_diagnosis_live_while_detached() -> None:
    from supervisor.report.report import build_report
    from supervisor.training.ending import End

    h = run(falling(3000), {2000: 0.8, 3000: 0.82})
    common: dict[str, object] = dict(
        job="j", history=h, flavour="pjreddie", argv=[], own_evaluation=True, stop=None,
        stop_end=None, kept={}, unscored=[], launches=[], evaluation_errors=[],
        internal_errors=[],
    )  # fmt: skip
    done = build_report(end=End("finished", "reached max_batches"), **common)  # type: ignore[arg-type]
    assert done["diagnosis"]["pattern"] == "insufficient_data"
    assert set(done["diagnosis"]) == {"pattern", "confidence", "evidence", "causes", "advice"}
    going = build_report(end=End("detached", "darknet trains on"), **common)  # type: ignore[arg-type]
    assert going["diagnosis"]["pattern"] == "too_early"
    facts = DiagnosisFacts(findings={"valid_too_small": 1})
    told = build_report(end=End("finished", "x"), diagnosis_facts=facts, **common)  # type: ignore[arg-type]
    assert "too small" in told["diagnosis"]["evidence"][0]


def test_run_prints_the_diagnosis_report_json_holds(
    tmp_path: Path, standin: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    """`trainsup run` on the scripted stand-in (seconds): the end of its output shows the
    diagnosis of report.json — here the tiny valid split's insufficient data."""
    import os
    import subprocess
    import sys

    from tests.standin_fixtures import job_yaml, write_cfg

    cfg = write_cfg(tmp_path / "t.cfg", stock_cfg, max_batches=300)
    job = job_yaml(tmp_path, tiny_data, cfg, binary=str(standin))
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"iteration_s": 0.002}))
    done = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "run", "--preflight", "off",
         "--workdir", str(tmp_path / "run"), str(job)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "TRAINSUP_SCRIPT": str(script)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    d = Diagnosis.from_json(report["diagnosis"])
    assert d is not None and d.pattern == "insufficient_data"
    assert f"  diagnosis: {d.title()}" in done.stdout
    assert f"    evidence: {d.evidence[0]}" in done.stdout


def test_show_prints_the_diagnosis_of_the_jobs_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from supervisor.service import commands

    d = Diagnosis("low_variance", 0.7, ("mAP levelled at 25.0 %",), ("repetitive",), ("vary",))
    (tmp_path / "report.json").write_text(json.dumps({"diagnosis": d.to_json()}))
    job = {
        "id": 3, "name": "n", "state": "finished", "status": "finished", "cause": "done",
        "device": None, "priority": 0, "after": None, "iteration": 4000,
        "max_iterations": 4000, "avg_loss": 0.6, "last_map": 0.25, "best": None,
        "iterations_per_s": None, "budget_left_s": None, "next_evaluation": None, "stop": None,
        "error": None, "kept": [], "submitted": None, "user": None, "started": None,
        "ended": None, "job_dir": str(tmp_path),
    }  # fmt: skip

    class FakeClient:
        def json(self, method: str, path: str) -> dict[str, object]:
            return job

    monkeypatch.setattr(commands, "client_for", lambda *a: FakeClient())
    out = CliRunner().invoke(commands.show, ["3"])
    assert out.exit_code == 0, out.output
    assert "  diagnosis: low variance (confidence 0.70)" in out.output
    assert "    evidence: mAP levelled at 25.0 %" in out.output
    job["job_dir"] = str(tmp_path / "elsewhere")  # no report there: no diagnosis, no error
    out = CliRunner().invoke(commands.show, ["3"])
    assert out.exit_code == 0 and "diagnosis:" not in out.output


@pytest.mark.shared_logs
def test_every_shared_log_gets_a_well_formed_diagnosis(logs_dir: Path) -> None:
    """Failures, resumes, replays going backwards, NaN, Colab tails: an answer for each, live
    or not, never an exception."""
    from supervisor.darknet.analyze import analyze_log
    from supervisor.training.policy import Policy

    for p in sorted(logs_dir.glob("*.log")):
        h = analyze_log(p, Policy(rules=())).history
        for live in (False, True):
            d = diagnose(h, live=live)
            assert d.pattern in PATTERNS and 0.0 <= d.confidence <= 1.0, p.name
            assert d.evidence and all(isinstance(e, str) and e for e in d.evidence), p.name
            assert Diagnosis.from_json(json.loads(json.dumps(d.to_json()))) is not None


def test_the_facts_come_from_the_schedule_and_the_preflight_check(tiny_data: Path) -> None:
    from supervisor.dataset.check import check_dataset
    from supervisor.runtime.diagnosis import diagnosis_facts
    from supervisor.training.schedule import Schedule

    s = Schedule(burn_in=50, steps=(240, 270), max_batches=300)
    assert diagnosis_facts(s) == DiagnosisFacts(max_batches=300, burn_in=50)
    report = check_dataset(tiny_data, None)
    facts = diagnosis_facts(s, report)
    assert (facts.valid_images, facts.train_images) == (10, 6)  # the fixture's split sizes
    assert facts.findings == {c: n for c, n in facts.findings.items() if n > 0}
    assert sum(facts.findings.values()) == len(report.findings)
    # A 10-image valid split is too small to trust, whatever the history says.
    h = run(falling(3000), {it: 0.9 for it in range(500, 3001, 500)})
    assert diagnose(h, facts).pattern == "insufficient_data"
