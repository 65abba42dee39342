"""The daemon's commands: `serve` and the client commands (`submit`, `ls`, `show`, `logs`,
`events`, `stop`, `cancel`, `retry`). Thin: parse, call, print. `register(main)` adds them to
the `trainsup` group."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from supervisor.service.client import Client
    from supervisor.training.diagnose import Diagnosis

_TERMINAL = {"finished", "failed", "cancelled"}
POLL_S = 0.5

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Daemon config (else $TRAINSUP_CONFIG, else /etc/trainsup/config.yaml).",
)
socket_option = click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The daemon's socket (else $TRAINSUP_SOCKET, else <state>/trainsup.sock).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _config(path: Path | None) -> Any:
    from supervisor.service.config import SpecError, resolve_config

    try:
        return resolve_config(path)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)


def client_for(config_path: Path | None, socket_path: Path | None) -> Client:
    """The daemon's client: `TRAINSUP_URL` (+ `TRAINSUP_TOKEN_FILE`) over TCP, else the socket
    of `--socket`, `TRAINSUP_SOCKET` or the config."""
    # Imported here: httpx is a tenth of a second that the other commands need not pay.
    from supervisor.service.client import Client
    from supervisor.service.config import find_socket

    url = os.environ.get("TRAINSUP_URL")
    if url and socket_path is None:
        token_file = os.environ.get("TRAINSUP_TOKEN_FILE")
        token = Path(token_file).read_text().strip() if token_file else None
        return Client(url=url, token=token)
    if socket_path is None and not os.environ.get("TRAINSUP_SOCKET"):
        return Client(find_socket(_config(config_path)))
    return Client(find_socket(None, socket_path))


def call(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """`fn(*args, **kw)`, a client error turned into the command's clear message and exit."""
    from supervisor.service.client import ClientError

    try:
        return fn(*args, **kw)
    except ClientError as e:
        click.echo(f"trainsup: {e}", err=True)
        for reason in e.reasons:
            click.echo(reason, err=True)
        sys.exit(2 if e.status in (400, 409) else 1)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def _fmt_time(s: float | None) -> str:
    return "-" if s is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s))


def _device(v: Any) -> str:
    if v is None:
        return "-"
    if v == "cpu":
        return "cpu"
    return "gpu " + ",".join(map(str, v[1]))


def _setup_logging() -> None:
    import logging

    import structlog

    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )


@click.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Run the daemon in the foreground (what systemd's ExecStart= runs)."""
    import asyncio

    from supervisor.service.api import ApiStartError
    from supervisor.service.daemon import AlreadyRunning
    from supervisor.service.daemon import serve as run_daemon
    from supervisor.service.store import StoreError

    config = _config(config_path)
    _setup_logging()
    try:
        code = asyncio.run(run_daemon(config))
    except (ApiStartError, AlreadyRunning, StoreError, OSError) as e:
        click.echo(f"trainsup serve: {e}", err=True)
        sys.exit(1)
    sys.exit(code)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--priority", type=int, default=0, show_default=True, help="Higher runs first.")
@click.option("--after", type=int, default=None, help="Start only once job ID has ended.")
@json_option
@config_option
@socket_option
def submit(
    file: Path,
    priority: int,
    after: int | None,
    as_json: bool,
    config_path: Path | None,
    socket_path: Path | None,
) -> None:
    """Queue the job FILE; prints its id."""
    from supervisor.spec.yamlsource import SpecError, read_text

    try:
        text = read_text(file)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(2)
    client = client_for(config_path, socket_path)
    body = {
        "yaml": text,
        "source": str(file),
        "base_dir": str(file.absolute().parent),
        "priority": priority,
        "after": after,
    }
    res = call(lambda: client.json("POST", "/jobs", json=body))
    if as_json:
        click.echo(json.dumps({"id": res["id"]}))
    else:
        click.echo(res["id"])


@click.command("ls")
@json_option
@config_option
@socket_option
def ls_(as_json: bool, config_path: Path | None, socket_path: Path | None) -> None:
    """List the jobs."""
    client = client_for(config_path, socket_path)
    jobs = call(lambda: client.json("GET", "/jobs"))
    if as_json:
        _dump(jobs)
        return
    rows = [("ID", "NAME", "STATE", "PRIO", "DEVICE", "ITER", "BEST mAP", "STOP")]
    for j in jobs:
        best = j["best"]
        rows.append(
            (
                str(j["id"]),
                j["name"],
                j["state"],
                str(j["priority"]),
                _device(j["device"]),
                "-" if j["iteration"] is None else str(j["iteration"]),
                "-" if best is None else f"{_pct(best['map'])}@{best['iteration']}",
                j["stop"]["rule"] if j["stop"] else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


@click.command()
@click.argument("job_id", type=int)
@json_option
@config_option
@socket_option
def show(job_id: int, as_json: bool, config_path: Path | None, socket_path: Path | None) -> None:
    """One job: state, device, progress, mAP, stop rule and reason, kept weights, job dir."""
    client = client_for(config_path, socket_path)
    j = call(lambda: client.json("GET", f"/jobs/{job_id}"))
    if as_json:
        _dump(j)
        return
    it = "-" if j["iteration"] is None else str(j["iteration"])
    if j["max_iterations"]:
        it += f"/{j['max_iterations']}"
    lines = [
        f"job {j['id']}: {j['name']} — {j['state']}"
        + (f" ({j['status']}: {j['cause']})" if j["status"] else ""),
        f"  device      {_device(j['device'])}   priority {j['priority']}"
        + (f"   after {j['after']}" if j["after"] else ""),
        f"  iteration   {it}   avg loss "
        + ("-" if j["avg_loss"] is None else f"{j['avg_loss']:.3f}"),
        f"  mAP         last {_pct(j['last_map'])}   best "
        + ("-" if j["best"] is None else f"{_pct(j['best']['map'])} at {j['best']['iteration']}"),
    ]
    if j["iterations_per_s"]:
        left = j["budget_left_s"]
        nxt = j["next_evaluation"]
        lines.append(
            f"  speed       {j['iterations_per_s']:.2f} it/s"
            + ("" if left is None else f"   budget ends in {int(left // 60)}m{int(left % 60):02d}s")
            + ("" if nxt is None else f"   next evaluation at {nxt}")
        )
    if j["stop"]:
        lines.append(f"  stop        {j['stop']['rule']}: {j['stop']['reason']}")
    if j["error"]:
        lines.append(f"  error       {j['error']}")
    diagnosis = _diagnosis_of(j)
    if diagnosis is not None:
        lines += [f"  {line}" for line in diagnosis.lines()]
    for k in j["kept"]:
        extra = f" (iteration {k['iteration']}, mAP {_pct(k['map'])})" if k["iteration"] else ""
        lines.append(f"  kept        {k['name']}: {k['path']}{extra}")
    lines += [
        f"  submitted   {_fmt_time(j['submitted'])} by {j['user'] or '-'}",
        f"  started     {_fmt_time(j['started'])}   ended {_fmt_time(j['ended'])}",
        f"  job dir     {j['job_dir'] or '-'}",
    ]
    click.echo("\n".join(lines))


def _diagnosis_of(j: dict[str, Any]) -> Diagnosis | None:
    """The job's diagnosis: report.json's once the job ended (the final reading, the job dir is
    on this machine when the daemon is), else the daemon's live one (its latest `Diagnosis`
    record); None where neither exists yet."""
    from supervisor.training.diagnose import Diagnosis

    d: Any = None
    if j.get("job_dir"):
        try:
            d = json.loads((Path(j["job_dir"]) / "report.json").read_text()).get("diagnosis")
        except (OSError, ValueError, AttributeError):
            d = None
    if not isinstance(d, dict):
        d = j.get("diagnosis")
    return Diagnosis.from_json(d) if isinstance(d, dict) else None


@click.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@config_option
@socket_option
def logs(job_id: int, follow: bool, config_path: Path | None, socket_path: Path | None) -> None:
    """darknet's output of a job (all launches)."""
    client = client_for(config_path, socket_path)
    offset = 0
    out = sys.stdout.buffer
    while True:
        r = call(client.request, "GET", f"/jobs/{job_id}/log", params={"offset": offset})
        out.write(r.content)
        out.flush()
        offset = int(r.headers["X-Next-Offset"])
        if r.content:
            continue
        if not follow or r.headers.get("X-Job-Ended") == "1":
            return
        time.sleep(POLL_S)


def _event_line(seq: int, rec: dict[str, Any]) -> str:
    skip = {"type", "time"}
    fields = " ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}"
        for k, v in rec.items()
        if k not in skip and v is not None and not isinstance(v, dict | list)
    )
    t = time.strftime("%H:%M:%S", time.localtime(rec.get("time") or 0))
    return f"{seq:>7} {t} {rec.get('type')} {fields}".rstrip()


@click.command()
@click.argument("job_id", type=int)
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--all", "everything", is_flag=True, help="Include every Iteration record too.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
@socket_option
def events(
    job_id: int,
    follow: bool,
    everything: bool,
    as_json: bool,
    config_path: Path | None,
    socket_path: Path | None,
) -> None:
    """The job's events and decisions (Iteration and Checkpoint records only with --all)."""
    client = client_for(config_path, socket_path)
    after = 0
    while True:
        res = call(client.json, "GET", f"/jobs/{job_id}/events", params={"after": after})
        for e in res["events"]:
            after = e["seq"]
            rec = e["record"]
            if not everything and rec.get("type") in ("Iteration", "Checkpoint"):
                continue
            if as_json:
                click.echo(json.dumps({"seq": e["seq"], **rec}, ensure_ascii=False))
            else:
                click.echo(_event_line(e["seq"], rec))
        if res["events"]:
            continue
        if not follow or res["state"] in _TERMINAL:
            return
        time.sleep(POLL_S)


def _action(name: str, doc: str, method: Callable[[Client, int], Any]) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("job_id", type=int)
    @json_option
    @config_option
    @socket_option
    def command(job_id: int, as_json: bool, config_path: Path | None,
                socket_path: Path | None) -> None:  # fmt: skip
        client = client_for(config_path, socket_path)
        res = call(lambda: method(client, job_id))
        if as_json:
            _dump(res)
        else:
            click.echo(f"job {res['id']}: {res['message']}" if "message" in res else res["id"])

    return command


@click.command()
@click.argument("job_id", type=int)
@click.option("--now", is_flag=True, help="Stop at once (the newest complete save is kept).")
@json_option
@config_option
@socket_option
def stop(
    job_id: int, now: bool, as_json: bool, config_path: Path | None, socket_path: Path | None
) -> None:
    """Stop a job after its next complete save (--now: at once); a queued job is cancelled."""
    client = client_for(config_path, socket_path)
    res = call(lambda: client.json("POST", f"/jobs/{job_id}/stop", json={"now": now}))
    if as_json:
        _dump(res)
    else:
        click.echo(f"job {res['id']}: {res['message']}")


cancel = _action(
    "cancel",
    "Cancel a queued job.",
    lambda c, i: c.json("POST", f"/jobs/{i}/cancel"),
)
retry = _action(
    "retry",
    "Submit an ended job again (same spec and priority); prints the new id.",
    lambda c, i: c.json("POST", f"/jobs/{i}/retry"),
)


def register(group: click.Group) -> None:
    for cmd in (serve, submit, ls_, show, logs, events, stop, cancel, retry):
        group.add_command(cmd)
