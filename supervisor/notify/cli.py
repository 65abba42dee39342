"""`trainsup notify test JOB` and `trainsup notify flush JOB_DIR`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from supervisor.spec.notify import REDACTED_HINT, NotifyTarget


def _load(path: Path) -> Any:
    from supervisor.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


@click.group()
def notify() -> None:
    """Chat notifications: try a job's targets, deliver what a run left undelivered."""


async def _test_targets(targets: tuple[NotifyTarget, ...], job: str, timeout: float) -> bool:
    import httpx

    from supervisor.notify.delivery import DeliveryConfig, send
    from supervisor.notify.formats import render
    from supervisor.notify.message import JobFacts, probe_message
    from supervisor.redact import install_log_scrubbing

    install_log_scrubbing()
    config = DeliveryConfig(timeout=timeout, connect_timeout=min(timeout, 10.0))
    message = probe_message(JobFacts(job))
    all_ok = True
    for t in targets:
        if t.redacted:
            click.echo(f"FAIL {t.label}: not sent: {REDACTED_HINT}")
            all_ok = False
    targets = tuple(t for t in targets if not t.redacted)
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout)
    ) as client:
        outcomes = await asyncio.gather(
            *(send(client, render(t, message), config) for t in targets)
        )
    for target, outcome in zip(targets, outcomes, strict=True):
        mark = "ok  " if outcome.ok else "FAIL"
        extra = ""
        if outcome.retry_after is not None:
            extra = f" (asks to retry after {outcome.retry_after:g} s)"
        click.echo(f"{mark} {target.label}: {outcome.describe()}{extra}")
        all_ok = all_ok and outcome.ok
    return all_ok


@notify.command("test")
@click.argument("job", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Test the daemon config's `notify:` targets (those told about every job) instead.",
)
@click.option("--timeout", type=float, default=15.0, show_default=True, help="Seconds per target.")
def test_command(job: Path | None, config_file: Path | None, timeout: float) -> None:
    """Send a test message to each `notify:` target of JOB (or of the daemon config, with
    --config) and print the HTTP outcome (one attempt each, no retries). Exit status 1 when any
    target did not take it."""
    if (job is None) == (config_file is None):
        click.echo("error: give a job file, or --config FILE", err=True)
        sys.exit(2)
    if config_file is not None:
        # A command, at the top of the layers: it may read the daemon's config.
        from supervisor.service.config import load_config
        from supervisor.spec import SpecError

        try:
            targets, name, where = load_config(config_file).notify, "trainsup", config_file
        except SpecError as e:
            click.echo(str(e), err=True)
            sys.exit(2)
    else:
        assert job is not None
        spec = _load(job)
        targets, name, where = spec.notify, spec.name, job
    if not targets:
        click.echo(f"{where}: no `notify:` targets", err=True)
        sys.exit(1)
    ok = asyncio.run(_test_targets(targets, name, timeout))
    sys.exit(0 if ok else 1)


async def _flush(job_dir: Path, targets: tuple[NotifyTarget, ...], timeout: float) -> int:
    from supervisor.notify.delivery import Deliverer
    from supervisor.notify.outbox import FAILED, OUTBOX_FILE, PENDING, SENT, SqliteOutbox

    outbox = SqliteOutbox(job_dir / OUTBOX_FILE)
    try:
        before = {d.seq: d.state for d in outbox.deliveries()}
        for t in targets:
            if t.redacted:
                click.echo(f"cannot use {t.label}: {REDACTED_HINT} (--job)", err=True)
        targets = tuple(t for t in targets if not t.redacted)
        known = {t.key for t in targets}
        orphans = [d for d in outbox.deliveries(PENDING) if d.target not in known]
        usable = [t for t in targets if outbox.pending(t.key)]
        pending = sum(1 for s in before.values() if s == PENDING)
        click.echo(f"{pending} pending in {job_dir / OUTBOX_FILE}")
        left = 0
        if usable:
            deliverer = Deliverer(outbox, usable)
            deliverer.start()
            try:
                left = await deliverer.flush(timeout)
            finally:
                await deliverer.aclose()
        after = outbox.deliveries()
        sent = [d for d in after if d.state == SENT and before.get(d.seq) == PENDING]
        refused = [d for d in after if d.state == FAILED and before.get(d.seq) == PENDING]
        click.echo(f"delivered {len(sent)}")
        for d in refused:
            click.echo(f"refused  {d.message.event} → {d.label}: {d.error}")
        if left:
            click.echo(f"left     {left} still pending (the receivers did not take them in time)")
        labels = sorted({d.label for d in orphans})
        for label in labels:
            n = sum(1 for d in orphans if d.label == label)
            click.echo(
                f"skipped  {n} for {label}: no such target in the job file "
                "(its URL changed? pass the job file it was sent with, --job)"
            )
        return 1 if left or refused or orphans else 0
    finally:
        outbox.close()


@notify.command("flush")
@click.argument("job_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--job",
    "job_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The job file whose targets to use (default: JOB_DIR/job.yaml; needed when its "
    "URLs were written literally, as the job dir's copy has them redacted).",
)
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds to keep trying."
)
def flush_command(job_dir: Path, job_file: Path | None, timeout: float) -> None:
    """Deliver the messages a run left in JOB_DIR's outbox (receiver down, process killed).
    Exit status 1 when some are still pending or were refused."""
    from supervisor.notify.outbox import OUTBOX_FILE

    if not (job_dir / OUTBOX_FILE).exists():
        click.echo(f"{job_dir}: no outbox, nothing to deliver")
        return
    spec = _load(job_file or job_dir / "job.yaml")
    sys.exit(asyncio.run(_flush(job_dir, tuple(spec.notify), timeout)))
