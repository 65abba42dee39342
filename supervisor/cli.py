"""`trainsup`: the command line. Thin: parse the arguments, call the library, print."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from supervisor import __version__

FLAVOUR_CHOICE = click.Choice(["pjreddie", "alexeyab", "hankai"])


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trainsup")
def main() -> None:
    """Supervise darknet/YOLO trainings: stop each at the right moment, keep the best weights."""


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
    from supervisor.analyze import analyze_log, format_analysis
    from supervisor.jobpolicy import policy_for, schedule_from_cfg

    policy = policy_for(_load_spec(job)) if job else policy_for(None)
    schedule = schedule_from_cfg(cfg) if cfg else None
    a = analyze_log(log, policy, schedule, flavour)  # type: ignore[arg-type]
    if as_json:
        _dump(a.to_json())
    else:
        click.echo(format_analysis(a))


def _load_spec(path: Path) -> Any:
    from supervisor.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


@main.command()
@click.argument("job", type=click.Path(path_type=Path))
def check(job: Path) -> None:
    """Validate a JOB file; print every problem with its line and how to fix it."""
    spec = _load_spec(job)
    click.echo(f"{job}: OK — job `{spec.name}`")


@main.command()
def schema() -> None:
    """Print the job file's JSON Schema (for editors: yaml-language-server)."""
    from supervisor.spec import json_schema

    _dump(json_schema())


if __name__ == "__main__":  # pragma: no cover
    main()
