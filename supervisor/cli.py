"""`trainsup`: the command line. Thin: parse the arguments, call the library, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, cast

import click

from supervisor import __version__
from supervisor.service.commands import config_option, socket_option
from supervisor.training.events import Flavour

FLAVOUR_CHOICE = click.Choice(["pjreddie", "alexeyab", "hankai"])


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _crash_dir() -> Path:
    import os

    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "trainsup" / "crashes"


def _write_crash_report(exc: BaseException) -> Path:
    """The traceback, the command line and the versions in a file the user can attach to a
    bug report; the state dir, else the temp dir."""
    import os
    import platform
    import tempfile
    import time
    import traceback

    text = "".join(
        [
            f"trainsup {__version__}, Python {platform.python_version()}, {platform.platform()}\n",
            f"argv: {sys.argv!r}\n\n",
            *traceback.format_exception(exc),
        ]
    )
    name = f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    for folder in (_crash_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    raise exc


class _Trainsup(click.Group):
    """The command group, with a last-resort handler: an exception that no command turned
    into a message of its own is a bug, so the user gets one line saying so and where the
    traceback went, not the traceback itself. Click's usage errors, exits and aborts pass."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # `trainsup analyze … | head`: the reader left; Python's docs' way of leaving quietly.
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:
            path = _write_crash_report(exc)
            what = str(exc)
            what = what if len(what) <= 200 else what[:199] + "…"
            click.echo(
                f"internal error: {type(exc).__name__}: {what} (details written to {path}; "
                "please report it with that file)",
                err=True,
            )
            sys.exit(70)  # EX_SOFTWARE


@click.group(cls=_Trainsup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainsup")
def main() -> None:
    """Supervise darknet/YOLO trainings: stop each at the right moment, keep the best weights."""
    import logging

    import structlog

    # Diagnostics go to stderr so that stdout stays the command's output (JSON, progress).
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


@main.command()
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--flavour", type=FLAVOUR_CHOICE, default=None, help="Skip flavour detection.")
@click.option(
    "--job",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Use this job file's stop and budget settings instead of the defaults.",
)
@click.option(
    "--cfg",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The run's .cfg (burn_in, steps); else they are read off the printed learning rate.",
)
def analyze(
    log: Path, as_json: bool, flavour: str | None, job: Path | None, cfg: Path | None
) -> None:
    """Replay a darknet training LOG: the curve, where the policy stops and why, what it keeps."""
    from supervisor.darknet.analyze import analyze_log, format_analysis, terminal_progress
    from supervisor.darknet.cfg import CfgError
    from supervisor.darknet.logparse import LogReadError
    from supervisor.runtime.jobpolicy import policy_for, schedule_from_cfg

    policy = policy_for(_load_spec(job)) if job else policy_for(None)
    try:
        schedule = schedule_from_cfg(cfg) if cfg else None
    except CfgError as e:  # an empty, binary or misspelt cfg: its file, line and fix
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    # A bar on stderr for a long log, only when stderr is a terminal.
    progress = terminal_progress(log)
    try:
        a = analyze_log(log, policy, schedule, cast(Flavour | None, flavour), progress)
    except LogReadError as e:  # unreadable (permissions, a directory swapped in): say so
        click.echo(str(e), err=True)
        sys.exit(2)
    if as_json:
        _dump(a.to_json())
    else:
        click.echo(format_analysis(a))


@main.command()
@click.argument("target", metavar="(JOB_DIR|LOG|ID)")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the image [default: JOB_DIR/chart.png, ./<LOG name>.chart.png, or "
    "./chart-<ID>.png].",
)
@click.option("--svg", is_flag=True, help="Write SVG instead of PNG (not with a job ID).")
@config_option
@socket_option
def chart(
    target: str,
    output: Path | None,
    svg: bool,
    config_path: Path | None,
    socket_path: Path | None,
) -> None:
    """Draw the chart of a job dir (TARGET is JOB_DIR) or of any darknet LOG; or fetch the chart
    of the daemon's job ID (a number that is no path here) from `trainsup serve`.

    Loss and avg loss, mAP with the best marked, IoU, learning-rate steps, relaunches, the stop
    point with its rule, the kept weights and the diagnosis in the title. A LOG gets the stop
    and weights that `trainsup analyze` finds for it.
    """
    from supervisor.darknet.logparse import LogReadError
    from supervisor.report.chart import write_chart
    from supervisor.runtime.chart_listener import NothingToChart, chart_of_job_dir, chart_of_log

    path = Path(target)
    if not path.exists():
        # A path that exists wins: `trainsup chart 12` on a folder named 12 draws that folder.
        if target.isascii() and target.isdigit():
            _chart_of_daemon_job(int(target), output, svg, config_path, socket_path)
            return
        click.echo(
            f"error: {target} does not exist: give a job dir, a darknet log, or the number of "
            "a daemon's job (`trainsup ls` lists them)",
            err=True,
        )
        sys.exit(2)
    fmt: Literal["png", "svg"] = "svg" if svg else "png"
    if path.is_dir():
        if not (path / "events.jsonl").is_file():
            click.echo(f"error: {path} is not a job dir (no events.jsonl in it)", err=True)
            sys.exit(2)
        data = chart_of_job_dir(path)
        out = output or path / f"chart.{fmt}"
    else:
        try:
            data = chart_of_log(path)
        except (LogReadError, NothingToChart) as e:
            click.echo(str(e), err=True)
            sys.exit(2)
        out = output or Path(f"{path.stem}.chart.{fmt}")
    try:
        write_chart(out, data, fmt)
    except OSError as e:
        click.echo(f"error: cannot write {out}: {e}", err=True)
        sys.exit(2)
    click.echo(str(out))


def _chart_of_daemon_job(
    job_id: int, output: Path | None, svg: bool, config_path: Path | None, socket_path: Path | None
) -> None:
    """`trainsup chart ID`: the chart.png the daemon's chart listener drew, as it serves it."""
    from supervisor.service.commands import call, client_for

    if svg:
        click.echo(
            f"error: the daemon serves job charts as PNG only: drop --svg, or draw SVG from the "
            f"job dir on the daemon's machine (`trainsup chart JOB_DIR --svg`; `trainsup show "
            f"{job_id}` prints the job dir)",
            err=True,
        )
        sys.exit(2)
    client = client_for(config_path, socket_path)
    try:
        data = call(client.chart_png, job_id)
    finally:
        client.close()
    out = output or Path(f"chart-{job_id}.png")
    try:
        out.write_bytes(data)
    except OSError as e:
        click.echo(f"error: cannot write {out}: {e.strerror or e}", err=True)
        sys.exit(2)
    click.echo(str(out))


def _load_spec(path: Path) -> Any:
    from supervisor.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


def _progress_printer(what: str) -> Any:
    """(done, total) → a `\r` line on a terminal's stderr; silent otherwise."""
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        click.echo(f"\r{what} {done}/{total}", nl=done >= total, err=True)

    return show


@main.command()
@click.argument("job", type=click.Path(path_type=Path), required=False)
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="Check this .data file's dataset (instead of a job file).",
)
@click.option(
    "--cfg",
    type=click.Path(path_type=Path),
    default=None,
    help="With --data: the .cfg to check against it.",
)
@click.option(
    "--flavour",
    type=FLAVOUR_CHOICE,
    default=None,
    help="With --data: whose label rule applies (default pjreddie).",
)
@click.option("--json", "as_json", is_flag=True, help="One object: summary and findings.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--no-dataset", is_flag=True, help="Check only the job file itself.")
@click.option(
    "--fast",
    is_flag=True,
    help="Read image headers only: no pixel decoding, so no "
    "near-duplicate search (a first check of a large dataset is several times faster).",
)
def check(
    job: Path | None,
    data: Path | None,
    cfg: Path | None,
    flavour: str | None,
    as_json: bool,
    strict: bool,
    no_dataset: bool,
    fast: bool,
) -> None:
    """Check a JOB file and its dataset before training (exit 0 ok, 1 warnings with --strict,
    2 errors). `trainsup check --data obj.data --cfg yolo.cfg` checks a dataset alone."""
    from supervisor.dataset.check import check_dataset
    from supervisor.dataset.render import format_report
    from supervisor.runtime.preflight import (
        binary_findings,
        check_binary,
        check_job,
        format_binary_check,
        spec_findings,
    )
    from supervisor.spec import SpecError, load_spec

    if (job is None) == (data is None):
        raise click.UsageError("give a JOB file, or --data (and --cfg) for a dataset alone")
    progress = None if as_json else _progress_printer("checking images")
    binary_errors: list[dict[str, Any]] = []
    if job is not None:
        try:
            spec = load_spec(job)
        except SpecError as e:
            if as_json:
                _dump({"summary": None, "findings": spec_findings(e)})
            else:
                click.echo(str(e), err=True)
            sys.exit(2)
        # The binary is proven darknet (and its flavour read) before anything else uses it.
        binary = check_binary(spec, files=not no_dataset)
        binary_errors = binary_findings(binary, str(job))
        if no_dataset:
            if as_json:
                _dump({"summary": None, "findings": binary_errors})
            else:
                click.echo(f"{job}: job file OK — job `{spec.name}`\n")
                click.echo(format_binary_check(binary))
            sys.exit(2 if binary_errors else 0)
        report = check_job(spec, progress, decode=not fast)
    else:
        assert data is not None
        report = check_dataset(
            data,
            cfg,
            flavour=cast(Flavour, flavour or "pjreddie"),
            progress=progress,
            decode=not fast,
        )
    if as_json:
        out = report.to_json()
        if binary_errors:
            out["findings"][:0] = binary_errors
            out["summary"]["findings"]["error"] += len(binary_errors)
        _dump(out)
    else:
        if job is not None:
            click.echo(f"{job}: job file OK — job `{spec.name}`\n")
            click.echo(format_binary_check(binary) + "\n")
        click.echo(format_report(report))
    sys.exit(2 if binary_errors else report.exit_status(strict))


def _job_dir(workdir: Path | None, name: str, runs: Path = Path("runs")) -> Path:
    """`./runs/<name>-<n>/` with the next free n (like Ultralytics' runs/), or `--workdir`."""
    if workdir is not None:
        return workdir
    n = 1
    while (runs / f"{name}-{n}").exists():
        n += 1
    return runs / f"{name}-{n}"


def _preflight(spec: Any, mode: str) -> tuple[bool, Any]:
    """Check the dataset before training: (False when the run must not start, the report —
    which the runner's diagnosis weighs — or None when the check is off)."""
    if mode == "off":
        return True, None
    from supervisor.dataset.render import format_report
    from supervisor.runtime.preflight import check_job

    report = check_job(spec, _progress_printer("pre-flight: checking images"))
    errors = report.exit_status() == 2
    if errors or report.findings:
        click.echo(format_report(report), err=True)
    if errors and mode == "block":
        click.echo(
            "\nnot started: fix the errors above, or run with --preflight warn "
            "(or off) to train anyway",
            err=True,
        )
        return False, report
    return True, report


# `trainsup run` exit statuses (README "`run` and the job dir").
EXIT_DONE, EXIT_FAILED, EXIT_NOT_STARTED, EXIT_DETACHED = 0, 1, 2, 3


def _run_job(
    spec: Any,
    job_dir: Path,
    binary: str | None,
    *,
    attach: bool = False,
    detach_on_hangup: bool = False,
    check: Any = None,
) -> int:
    import asyncio
    import signal
    import time

    from supervisor.runtime.runner import (
        JobRunner,
        JobSetupError,
        Progress,
        RunnerConfig,
        format_progress,
    )

    tty = sys.stdout.isatty()
    last_print = [0.0]

    def progress(p: Progress) -> None:
        line = format_progress(p)
        if tty:
            click.echo("\r\033[K" + line, nl=False)
        elif time.monotonic() - last_print[0] >= 10:
            last_print[0] = time.monotonic()
            click.echo(line)

    config = RunnerConfig(binary_override=binary)
    try:
        if attach:
            runner = JobRunner.for_job_dir(job_dir, config, progress)
        else:
            runner = JobRunner(spec, job_dir, config, progress)
            runner.check = check  # the pre-flight's findings weigh in the diagnosis
    except JobSetupError as e:
        click.echo(f"cannot attach to {job_dir}: {e}", err=True)
        return EXIT_NOT_STARTED
    interrupts = [0]

    def on_sigint() -> None:
        interrupts[0] += 1
        if interrupts[0] == 1:
            click.echo(
                "\nCtrl-C: stopping after the next save (Ctrl-C again to stop now)", err=True
            )
            runner.request_stop("interrupted by the user (Ctrl-C)")
        else:
            runner.request_kill()

    def on_sigterm() -> None:
        # Slurm's --signal before the time limit, systemd, `kill`: a graceful stop.
        runner.request_stop("asked to stop by SIGTERM")

    def on_sighup() -> None:
        # A closed SSH session: without a terminal nobody could stop darknet later, so it is
        # stopped after its next save — or left running for `--attach` when asked.
        if detach_on_hangup:
            runner.request_detach()
        else:
            runner.request_stop("the terminal hung up (SIGHUP)")

    notes_left = [0]

    async def go() -> Any:
        from supervisor.notify.listener import NOTIFY_FLUSH_S, attach_notifications
        from supervisor.report.report import add_to_report
        from supervisor.runtime.chart_listener import attach_chart

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        runner.prepare()  # a refused job dir gets no outbox
        # chart.png after each evaluation and at the end, drawn off the event loop.
        chart = attach_chart(
            runner.bus.subscribe, runner.job_dir, lambda: runner.history, schedule=runner.schedule
        )
        notes = attach_notifications(
            runner.bus.subscribe,
            runner.spec.notify,
            runner.job_dir,
            job_name=runner.spec.name,
            chart=chart,  # an upload waits for the drawing its record asked for
        )
        try:
            result = await runner.run()
        finally:
            await asyncio.to_thread(chart.close)  # the final chart, before the command ends
            # Messages still undelivered after the flush stay in the job dir's outbox.
            notes_left[0] = await notes.flush(NOTIFY_FLUSH_S)
            summary = notes.summary()
            await notes.aclose()
        if summary is not None:
            result.report["notifications"] = summary
            add_to_report(runner.job_dir / "report.json", {"notifications": summary})
        return result

    click.echo(f"job dir: {job_dir}")
    try:
        result = asyncio.run(go())
    except (JobSetupError, OSError, ValueError) as e:
        click.echo(f"\ncannot run job `{runner.spec.name}`: {e}", err=True)
        return EXIT_NOT_STARTED
    if tty:
        click.echo()
    r = result.report
    if notes_left[0]:
        click.echo(
            f"{notes_left[0]} notifications not delivered yet: `trainsup notify flush {job_dir}`",
            err=True,
        )
    if result.status == "detached":
        click.echo(
            f"\ndetached: darknet keeps training (pid {_pid_of(job_dir)}); follow it again with "
            f"`trainsup run --attach {job_dir}`"
        )
        return EXIT_DETACHED
    stop = r.get("stop")
    if stop and r["status"] == "stopped":
        # The rule fires at one iteration; darknet trains on until its next complete save.
        after = stop.get("stopped_after_iteration")
        when = (
            f" → stopped after darknet's save at {stop['newest_save']} "
            f"({stop.get('waited_s', 0):.0f} s later)"
            if after is not None and stop.get("newest_save") is not None
            else ""
        )
        click.echo(f"\n{stop['rule']} at iteration {stop['iteration']}{when}: {stop['reason']}")
        if stop.get("over_budget_s"):
            click.echo(f"  ran {stop['over_budget_s']:.0f} s past max_time, waiting for that save")
        if stop.get("no_save_after_s"):
            click.echo(
                f"  no complete save came within {stop['no_save_after_s']} s: stopped without "
                "one; the newest complete save is kept"
            )
    else:
        click.echo(f"\n{r['status']}: {r['cause']}")
    if r.get("stop"):
        click.echo(f"  advice: {r['stop']['advice']}")
    if r.get("best"):
        click.echo(
            f"  best mAP: {r['best']['map'] * 100:.1f} % at iteration {r['best']['iteration']}"
        )
    for role, k in r.get("kept", {}).items():
        m = f", mAP {k['map'] * 100:.1f} %" if k.get("map") is not None else ""
        click.echo(f"  kept {role}: {k['path']} (iteration {k['iteration']}{m})")
    for u in r.get("unscored", []):
        click.echo(
            f"  unscored (kept, score it with `trainsup evaluate`): {u['path']} — {u['error']}"
        )
    from supervisor.training.diagnose import Diagnosis

    diagnosis = Diagnosis.from_json(r.get("diagnosis") or {})
    for line in diagnosis.lines() if diagnosis else ():
        click.echo(f"  {line}")
    click.echo(f"  report: {job_dir / 'report.json'}")
    return EXIT_DONE if result.status in ("finished", "stopped") else EXIT_FAILED


def _pid_of(job_dir: Path) -> str:
    import json

    try:
        return str(json.loads((job_dir / "launch.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return "?"


@main.command()
@click.argument("job", type=click.Path(path_type=Path), required=False)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Job dir to use (default: ./runs/<name>-<n>/).",
)
@click.option("--binary", default=None, help="darknet executable to run instead of the job's.")
@click.option(
    "--preflight",
    type=click.Choice(["block", "warn", "off"]),
    default="block",
    show_default=True,
    help="Dataset checks before training: errors block the run, "
    "are only shown, or nothing is checked.",
)
@click.option(
    "--attach",
    "attach_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue supervising the job in this job dir: its darknet if it still runs, else "
    "resume it from its newest complete weights.",
)
@click.option(
    "--detach-on-hangup",
    is_flag=True,
    help="On SIGHUP (a closed terminal) leave darknet training and exit (status 3) instead "
    "of stopping it after its next save; continue later with --attach.",
)
def run(
    job: Path | None,
    workdir: Path | None,
    binary: str | None,
    preflight: str,
    attach_dir: Path | None,
    detach_on_hangup: bool,
) -> None:
    """Run JOB in the foreground; Ctrl-C stops after the next save, twice stops at once.

    Exit status: 0 finished or stopped (weights kept), 1 darknet failed, 2 not started
    (bad job, failed pre-flight), 3 detached (darknet still runs).
    """
    if attach_dir is not None:
        if job is not None:
            click.echo("error: give either JOB or --attach JOB_DIR, not both", err=True)
            sys.exit(EXIT_NOT_STARTED)
        sys.exit(
            _run_job(
                None,
                attach_dir.absolute(),
                binary,
                attach=True,
                detach_on_hangup=detach_on_hangup,
            )
        )
    if job is None:
        click.echo("error: missing JOB (a job file), or --attach JOB_DIR", err=True)
        sys.exit(EXIT_NOT_STARTED)
    spec = _load_spec(job)
    ok, check = _preflight(spec, preflight)
    if not ok:
        sys.exit(EXIT_NOT_STARTED)
    sys.exit(
        _run_job(
            spec,
            _job_dir(workdir, spec.name).absolute(),
            binary,
            detach_on_hangup=detach_on_hangup,
            check=check,
        )
    )


@main.command()
@click.option(
    "--dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Where the dataset, cfg, job file and runs go.",
)
@click.option("--seed", default=0, show_default=True, help="Dataset generator seed.")
def demo(root: Path, seed: int) -> None:
    """Generate a small shapes dataset and train it under the supervisor (~5 min on 2 cores)."""
    from supervisor.dataset.demo import make_demo

    d = make_demo(root, seed=seed)
    click.echo(
        f"dataset: {d.dataset.root} ({d.dataset.train_images} train, "
        f"{d.dataset.valid_images} valid images)"
    )
    click.echo(f"job file: {d.job}")
    spec = _load_spec(d.job)
    ok, check = _preflight(spec, "block")
    if not ok:
        sys.exit(2)
    sys.exit(_run_job(spec, _job_dir(None, spec.name, root.absolute() / "runs"), None, check=check))


def _iou_option(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    # Checked while the arguments are read, so that nothing (no binary probe, no darknet)
    # runs before a threshold that cannot be honoured is refused.
    from supervisor.darknet.evaluate import EvaluationError, check_iou_threshold

    try:
        check_iou_threshold(value)
    except EvaluationError as e:
        raise click.BadParameter(str(e)) from None
    return value


@main.command()
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The .data file whose valid= list is scored.",
)
@click.option(
    "--cfg",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The network .cfg the weights belong to.",
)
@click.argument(
    "weights", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--iou",
    "iou_threshold",
    type=float,
    default=0.5,
    show_default=True,
    callback=_iou_option,
    help="IoU a detection needs to count (fraction).",
)
@click.option("--binary", default="darknet", show_default=True, help="darknet executable.")
@click.option(
    "--flavour",
    type=FLAVOUR_CHOICE,
    default=None,
    help="Label lookup rule (default: detected from the binary).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per weights file.")
def evaluate(
    data: Path,
    cfg: Path,
    weights: tuple[Path, ...],
    iou_threshold: float,
    binary: str,
    flavour: str | None,
    as_json: bool,
) -> None:
    """Score WEIGHTS files (e.g. every _N.weights of a backup dir) on the valid list."""
    import asyncio
    import tempfile

    from supervisor.darknet.cfg import Cfg, CfgError
    from supervisor.darknet.evaluate import EvaluationError, evaluate_weights
    from supervisor.darknet.weights import WeightsError, read_weights_header
    from supervisor.runtime.binary import BinaryError, verify_binary

    try:
        # Proven darknet before it gets any argument; a --flavour it contradicts is an error.
        probe = verify_binary(binary, flavour or "auto")
        exe, fl = probe.path, probe.flavour
        net = Cfg.load(cfg)
        batch, subdivisions = net.batch, net.subdivisions
    except (BinaryError, CfgError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    rows: list[dict[str, Any]] = []
    failed = 0
    with tempfile.TemporaryDirectory(prefix="trainsup-eval-") as work:
        for w in weights:
            try:
                header = read_weights_header(w)
                res = asyncio.run(
                    evaluate_weights(
                        exe,
                        data.absolute(),
                        cfg.absolute(),
                        w.absolute(),
                        iou_threshold=iou_threshold,
                        work_dir=Path(work),
                        flavour=fl,
                    )
                )
            except (EvaluationError, WeightsError) as e:
                failed += 1
                click.echo(f"{w}: {e}", err=True)
                continue
            row = {
                "weights": str(w),
                "iteration": header.iteration(batch, subdivisions),
                "map": res.map,
                "iou_threshold": res.iou_threshold,
                "average_iou": res.average_iou,
                "per_class": [
                    {
                        "class_id": c.class_id,
                        "name": c.name,
                        "ap": c.ap,
                        "ground_truth": c.ground_truth,
                    }
                    for c in res.per_class
                ],
            }
            rows.append(row)
            if as_json:
                click.echo(json.dumps(row))
            else:
                iou = "" if res.average_iou is None else f", mean IoU {res.average_iou:.3f}"
                per = ", ".join(
                    f"{c.name} {c.ap * 100:.1f} %" for c in res.per_class if c.ap is not None
                )
                click.echo(
                    f"{w}: iteration {row['iteration']}, mAP@{iou_threshold:g} "
                    f"{res.map * 100:.2f} %{iou} ({per})"
                )
    if not as_json and len(rows) > 1:
        best = max(rows, key=lambda r: r["map"])
        click.echo(f"best: {best['weights']} (mAP {best['map'] * 100:.2f} %)")
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--config", "config", is_flag=True, help="The daemon config's schema instead.")
def schema(config: bool) -> None:
    """Print the job file's JSON Schema (for editors: yaml-language-server)."""
    if config:
        from supervisor.service.config import config_schema

        _dump(config_schema())
        return
    from supervisor.spec import json_schema

    _dump(json_schema())


def _register_service() -> None:
    # The daemon and its client commands live in supervisor/service/commands.py, the
    # notification commands in supervisor/notify/cli.py.
    from supervisor.notify.cli import notify
    from supervisor.service.commands import register

    register(main)
    main.add_command(notify)


_register_service()


if __name__ == "__main__":  # pragma: no cover
    main()
