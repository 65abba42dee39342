"""The training chart (issue 11, "Chart"): what is drawn comes from the history, the image is a
real PNG/SVG, `trainsup chart` draws a shared log and a job dir, and the job's listener redraws
after an evaluation without ever holding up the runner that publishes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from supervisor.atomicio import json_safe
from supervisor.cli import main
from supervisor.darknet.analyze import analyze_log
from supervisor.dataset.demo import write_demo_cfg
from supervisor.report.chart import (
    MAX_POINTS,
    ChartData,
    Envelope,
    Kept,
    chart_data,
    render,
    render_darknet_style,
)
from supervisor.runtime.bus import Bus
from supervisor.runtime.chart_listener import (
    ChartListener,
    attach_chart,
    chart_of_job_dir,
    chart_of_log,
)
from supervisor.runtime.records import to_record
from supervisor.runtime.runner import JobRunner, RunnerConfig
from supervisor.spec import load_spec
from supervisor.training.events import Event, Iteration, IterationsRepeated, LayerIoU, MapResult
from supervisor.training.history import History, build
from supervisor.training.policy import Stop
from supervisor.training.schedule import Schedule

PNG = b"\x89PNG\r\n\x1a\n"
LOG_53 = "53_alexeyab-yolov4tiny-full4000-vegetable-dumbled0re.log"  # -map, steps, a plateau
LOG_21 = "21_alexeyab-yolov4tiny-peak-then-drop-qwerlarlgus.log"  # small: the CLI test


def _curve(n: int = 1000, *, start: float = 300.0, end: float = 1.0) -> list[Event]:
    """Iterations 1..n with a loss falling from `start` to `end`, the rate ×0.1 at 800 and 900,
    and an evaluation every 100 that peaks at 600 (0.70) and falls after."""
    maps = {100: 0.1, 200: 0.3, 300: 0.5, 400: 0.6, 500: 0.65, 600: 0.70, 700: 0.66, 800: 0.62}
    out: list[Event] = []
    for i in range(1, n + 1):
        avg = start * (end / start) ** (i / n)
        rate = 0.001 if i < 800 else 0.0001 if i < 900 else 0.00001
        out.append(Iteration(i, avg * 1.2, avg, rate))
        out.append(LayerIoU(i, 0.2 + 0.5 * i / n, 10, 2))
        if i in maps:
            out.append(MapResult(i, maps[i], average_iou=0.4 + i / 10_000))
    return out


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # a truncated or corrupt PNG raises here
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --- the data: every part from the history ------------------------------------------------------


def test_the_parts_come_from_the_history() -> None:
    h = build(_curve())
    stop = Stop("overfit", "mAP fell 4 points after its peak", 750)
    d = chart_data(
        h,
        schedule=Schedule(burn_in=50, steps=(800, 900), max_batches=1000),
        stop=stop,
        kept=[Kept("best", 600, 0.70)],
        relaunches=[420],
        title="overtraining (high confidence)",
    )
    assert h.best is not None and d.best == (h.best.iteration, h.best.map) == (600, 0.70)
    assert d.stop is not None and (d.stop.iteration, d.stop.rule) == (750, "overfit")
    assert d.steps == (800, 900) and d.burn_in == 50 and d.max_batches == 1000
    assert d.relaunches == (420,)
    assert d.kept == (Kept("best", 600, 0.70),)
    assert d.evaluations == tuple((e.iteration, e.map) for e in h.evaluations)
    assert d.iou_source == "evaluation" and d.iou[0] == (100, pytest.approx(0.41))
    assert d.title == "overtraining (high confidence)"
    assert "1 000 iterations" in d.subtitle and "`overfit` at 750" in d.subtitle
    # From 300 to 1: more than two decades, so the loss axis is logarithmic.
    assert d.log_scale
    assert d.avg_loss[0] == h.loss.point(0) and d.avg_loss[-1] == h.loss.point(-1)


def test_without_a_diagnosis_the_title_says_how_far_and_the_best() -> None:
    d = chart_data(build(_curve(900)))
    assert d.title == "900 iterations · best mAP 70.0 % at 600"
    assert d.stop is None and d.steps == () and d.kept == ()


def test_a_loss_within_a_decade_stays_linear_and_layer_iou_fills_in() -> None:
    events = [e for e in _curve(500, start=5.0, end=1.0) if not isinstance(e, MapResult)]
    ious = [e for e in events if isinstance(e, LayerIoU)]
    d = chart_data(
        build(events),
        layer_iou=([e.iteration for e in ious], [e.mean_iou or 0.0 for e in ious]),
    )
    assert not d.log_scale
    assert d.evaluations == () and d.best is None
    assert d.iou_source == "layers" and d.iou[0] == (1, pytest.approx(0.201))


def test_the_envelope_keeps_memory_bounded_spikes_and_the_later_launchs_values() -> None:
    env = Envelope(limit=100)
    for i in range(1, 100_001):
        env.add(i, 1000.0 if i == 54_321 else 2.0)
    assert len(env) <= 200 and env.width > 1
    bands = env.bands()
    assert bands[0][0] == 0 and max(b[2] for b in bands) == 1000.0
    assert min(b[1] for b in bands) == 2.0
    # A resume from 90 000: what came after it is gone, the new values count.
    for i in range(90_000, 95_001):
        env.add(i, 1.0)
    assert env.last == 95_000 and env.bands()[-1][0] <= 95_000
    assert env.bands()[-1][1] == 1.0
    xs, means = env.means()
    assert len(xs) == len(env) and all(0.9 < m < 1000 for m in means)


def test_a_long_run_is_thinned_for_drawing_with_its_ends_and_spikes_kept() -> None:
    n = 20_000
    h = History()
    for i in range(1, n + 1):
        h = h.add(Iteration(i, 2.0, 2.0 - i / n, 0.001))
    losses = [2.0] * n
    losses[12_345] = 50.0  # one spike in the raw loss
    d = chart_data(h, loss=(list(range(1, n + 1)), losses))
    assert len(d.avg_loss) <= MAX_POINTS + 1
    assert d.avg_loss[0][0] == 1 and d.avg_loss[-1][0] == n
    assert len(d.loss) <= MAX_POINTS and max(b[2] for b in d.loss) == 50.0


# --- the image ------------------------------------------------------------------------------------


def _data() -> ChartData:
    return chart_data(
        build(_curve()),
        schedule=Schedule(burn_in=50, steps=(800, 900)),
        stop=Stop("overfit", "mAP fell after its peak", 750),
        kept=[Kept("best", 600, 0.70)],
        relaunches=[420],
    )


def test_render_writes_a_valid_png_and_svg() -> None:
    png = render(_data())
    assert _png_size(png) == (990, 594)  # 11 × 6.6 in at 90 dpi
    assert len(png) < 150_000
    svg = render(_data(), "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg
    # The darknet-style rendering: darknet's square.
    assert _png_size(render_darknet_style(_data())) == (600, 600)


def test_an_empty_history_still_draws() -> None:
    _png_size(render(chart_data(History())))


# --- trainsup chart -------------------------------------------------------------------------------


@pytest.mark.shared_logs
def test_chart_of_a_shared_log_marks_analyzes_stop_and_kept(logs_dir: Path) -> None:
    log = logs_dir / LOG_53
    a = analyze_log(log)
    d = chart_of_log(log)
    assert a.stop is not None and d.stop is not None
    assert (d.stop.iteration, d.stop.rule) == (a.stop.iteration, a.stop.rule)
    assert a.kept is not None and d.kept == (Kept("best", a.kept.iteration, a.kept.map),)
    assert a.history.best is not None
    assert d.best == (a.history.best.iteration, a.history.best.map)
    assert d.steps == a.schedule.steps and d.steps  # the printed rate's steps
    assert d.loss and d.iou_source == "evaluation"


@pytest.mark.shared_logs
def test_trainsup_chart_on_a_shared_log(
    logs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "c.png"
    r = CliRunner().invoke(main, ["chart", str(logs_dir / LOG_21), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out)
    _png_size(out.read_bytes())
    # Without -o: <log name>.chart.svg in the current directory.
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["chart", str(logs_dir / LOG_21), "--svg"])
    assert r.exit_code == 0, r.output
    assert b"<svg" in (tmp_path / (Path(LOG_21).stem + ".chart.svg")).read_bytes()


def test_trainsup_chart_refuses_a_file_that_is_no_log(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("shopping: milk, eggs\n")
    out = tmp_path / "c.png"
    r = CliRunner().invoke(main, ["chart", str(notes), "-o", str(out)])
    assert r.exit_code == 2 and "does not look like a darknet log" in r.output
    assert not out.exists()


def _job_dir(tmp_path: Path) -> Path:
    """A job dir as the runner leaves it: events.jsonl with parser events and the runner's
    own records (a relaunch, the stop decision, the end), and report.json."""
    d = tmp_path / "job"
    d.mkdir()
    recs: list[dict[str, Any]] = [{"type": "JobStarted", "job": "t", "max_iterations": 1000}]
    for e in _curve():
        recs.append(to_record(e))
        if isinstance(e, Iteration) and e.iteration == 400:
            recs.append({"type": "Relaunched", "reason": "out of memory", "iteration": 300})
            recs.append({"type": "Launch", "number": 2, "argv": []})
            recs.append(to_record(IterationsRepeated(400, 301)))
        if isinstance(e, MapResult) and e.iteration == 800:
            recs.append(
                {"type": "Decision", "decision": "stop", "rule": "overfit", "iteration": 800,
                 "reason": "mAP fell", "advice": "", "numbers": {}}
            )  # fmt: skip
    kept = {"best": {"path": str(d / "kept/best.weights"), "iteration": 600, "map": 0.7}}
    recs.append({"type": "Finished", "status": "stopped", "kept": kept})
    (d / "events.jsonl").write_text("".join(json.dumps(json_safe(r)) + "\n" for r in recs))
    report = {"stop": {"rule": "overfit", "reason": "mAP fell", "iteration": 800}, "kept": kept}
    (d / "report.json").write_text(json.dumps(report))
    return d


def test_chart_of_a_job_dir_reads_its_events_and_report(tmp_path: Path) -> None:
    d = chart_of_job_dir(_job_dir(tmp_path))
    assert d.stop is not None and (d.stop.iteration, d.stop.rule) == (800, "overfit")
    assert d.kept == (Kept("best", 600, 0.7),)
    assert d.best == (600, 0.70)
    # The relaunch once, though the log's marker and the repeat say it again.
    assert d.relaunches == (300,)
    # No cfg: the steps as the printed rate shows them; max_batches from JobStarted.
    assert d.steps == (800, 900) and d.max_batches == 1000


def test_trainsup_chart_on_a_job_dir(tmp_path: Path) -> None:
    job = _job_dir(tmp_path)
    r = CliRunner().invoke(main, ["chart", str(job)])
    assert r.exit_code == 0, r.output
    assert _png_size((job / "chart.png").read_bytes())
    assert (job / "chart.png").stat().st_mode & 0o777 == 0o644
    # A folder that is no job dir is refused with a message, not a crash.
    r = CliRunner().invoke(main, ["chart", str(tmp_path)])
    assert r.exit_code == 2 and "not a job dir" in r.output


# --- the listener ---------------------------------------------------------------------------------


class _Runner:
    """The runner's side of the bus: publish a record, then fold its event into the history
    (the runner's order)."""

    def __init__(self) -> None:
        self.bus = Bus()
        self.history = History()

    def feed(self, ev: Event) -> None:
        self.bus.publish(to_record(ev))
        self.history = self.history.add(ev)


class _SlowDraw:
    def __init__(self, seconds: float, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.calls: list[ChartData] = []
        self.threads: set[str] = set()

    def __call__(self, d: ChartData) -> bytes:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        self.calls.append(d)
        if self.fail:
            raise RuntimeError("no fonts today")
        return PNG + b"chart"


def test_the_listener_redraws_after_an_evaluation_without_delaying_the_publisher(
    tmp_path: Path,
) -> None:
    run = _Runner()
    draw = _SlowDraw(0.8)
    chart = ChartListener(tmp_path, lambda: run.history, draw=draw, title=None, coalesce_s=0.05)
    run.bus.subscribe(chart)
    events = _curve(300)
    slowest = 0.0
    for ev in events:
        t = time.monotonic()
        run.feed(ev)
        slowest = max(slowest, time.monotonic() - t)
    # Three evaluations, each published while a 0.8 s drawing may be running.
    assert slowest < 0.2, f"a publish took {slowest:.2f} s"
    assert threading.current_thread().name not in draw.threads
    assert chart.flush(10)
    assert (tmp_path / "chart.png").read_bytes() == PNG + b"chart"
    # Requests that came during a drawing were coalesced into the next one, and the last
    # drawing shows every evaluation.
    assert 1 <= len(draw.calls) < 3
    assert [e[0] for e in draw.calls[-1].evaluations] == [100, 200, 300]
    # A later evaluation: one more drawing.
    n = len(draw.calls)
    run.feed(MapResult(300, 0.55))
    assert chart.flush(10) and len(draw.calls) == n + 1
    assert chart.close(5) and chart.failures == 0


def test_the_drawing_waits_for_the_evaluation_to_reach_the_history(tmp_path: Path) -> None:
    run = _Runner()
    draw = _SlowDraw(0.0)
    chart = ChartListener(tmp_path, lambda: run.history, draw=draw, title=None, coalesce_s=0.0)
    run.bus.subscribe(chart)
    for ev in _curve(100):
        if not isinstance(ev, MapResult):
            run.feed(ev)
    # Published, but the runner folds it in only 0.3 s later.
    run.bus.publish(to_record(MapResult(100, 0.4)))
    time.sleep(0.3)
    run.history = run.history.add(MapResult(100, 0.4))
    assert chart.close(5)
    assert draw.calls[-1].evaluations == ((100, 0.4),)


def test_a_failing_drawing_is_logged_and_the_training_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _Runner()
    chart = ChartListener(
        tmp_path, lambda: run.history, draw=_SlowDraw(0.0, fail=True), title=None, coalesce_s=0
    )
    run.bus.subscribe(chart)
    for ev in _curve(200):
        run.feed(ev)
    assert chart.flush(5)
    assert chart.failures >= 1 and chart.drawn == 0
    assert not (tmp_path / "chart.png").exists()
    assert "chart not drawn" in capsys.readouterr().out
    # Still subscribed: the bus did not drop it, and the next evaluation asks again.
    before = chart.failures
    run.feed(MapResult(200, 0.5))
    assert chart.close(5) and chart.failures == before + 1


@pytest.mark.timeout(120)
def test_a_run_leaves_chart_png_with_its_evaluations_and_kept_weights(
    tmp_path: Path,
    standin: Path,
    tiny_data: Path,
    stock_cfg: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner's real path: the stand-in darknet trains 300 iterations, the supervisor
    evaluates every 100, and `attach_chart` (as `trainsup run` wires it) draws chart.png."""
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"iteration_s": 0.002, "quality": [[100, 0.3], [200, 0.9]]}))
    monkeypatch.setenv("TRAINSUP_SCRIPT", str(script))
    cfg = write_demo_cfg(tmp_path / "c.cfg", source=stock_cfg, max_batches=300, steps=(200, 250))
    job = {
        "name": "t",
        "darknet": {"binary": str(standin), "flavour": "pjreddie", "data": str(tiny_data),
                    "cfg": str(cfg), "gpus": []},
        "evaluation": {"every": 100, "source": "supervisor"},
        "stop": {"plateau": False, "overfit": False, "not_learning": False},
    }  # fmt: skip
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    runner = JobRunner(
        load_spec(tmp_path / "job.yaml"),
        tmp_path / "job",
        RunnerConfig(poll=0.02, tick=0.2, grace=3.0, checkpoint_every=0.0),
    )
    runner.prepare()
    seen: list[ChartData] = []

    def remember(d: ChartData) -> bytes:
        seen.append(d)
        return render(d)

    chart = attach_chart(runner.bus.subscribe, runner.job_dir, lambda: runner.history,
                         schedule=runner.schedule)  # fmt: skip
    chart._draw = remember  # the real drawing, and what it was given
    result = asyncio.run(runner.run())
    assert chart.close(30)
    assert result.status == "finished"
    _png_size((runner.job_dir / "chart.png").read_bytes())
    last = seen[-1]
    assert [e[0] for e in last.evaluations] == [
        e["iteration"] for e in result.report["evaluations"]
    ]
    best = result.report["best"]
    assert last.best == (best["iteration"], best["map"])
    assert {k.role: k.iteration for k in last.kept} == {
        role: k["iteration"] for role, k in result.report["kept"].items()
    }
    assert last.steps == (200, 250)
    assert os.stat(runner.job_dir / "chart.png").st_mode & 0o777 == 0o644


def test_attach_chart_seeds_the_curve_from_an_existing_events_file(tmp_path: Path) -> None:
    job = _job_dir(tmp_path)
    subscribed: list[Callable[..., None]] = []
    chart = attach_chart(subscribed.append, job, History, title=None)
    assert subscribed == [chart]
    # Records published while the worker reads the file wait for it, and come after it.
    chart({"type": "Relaunched", "reason": "resume", "iteration": 1000})
    assert chart.flush(10)
    assert chart.facts.last_iteration == 1000 and chart.facts.relaunches == [300, 1000]
    assert chart.close(5) and chart.drawn == 0  # nothing asked for a drawing


@pytest.mark.shared_logs
def test_the_title_is_the_diagnosis(logs_dir: Path) -> None:
    from supervisor.training.diagnose import DiagnosisFacts, diagnose

    log = logs_dir / LOG_21
    a = analyze_log(log)
    d = chart_of_log(log)
    facts = DiagnosisFacts(max_batches=a.schedule.max_batches, burn_in=a.schedule.burn_in or None)
    assert d.title == diagnose(a.history, facts).title()
    # Without a diagnosis: the default title, the same numbers.
    plain = chart_of_log(log, title=None)
    assert plain.title.startswith(f"{a.history.iteration:,} iterations".replace(",", " "))
