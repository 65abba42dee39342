"""The daemon's HTTP API (JSON), on its Unix socket and, when configured, on TCP.

`GET /jobs/ID` is the one negotiated route: a browser (Accept ranks text/html above
application/json) gets the job's HTML page (supervisor/service/page.py), everyone else the JSON
view. `GET /jobs/ID/chart.png` serves the job dir's chart. Both pass the same auth as the rest.

aiohttp's server: it runs in the daemon's own asyncio loop (no second server process or
thread), listens on a Unix socket natively (`web.UnixSite`), and is one well-kept dependency.
The socket is created with the configured mode (umask set around the bind, so there is no
moment with wider access) and group. TCP answers only requests with the bearer token from
`api.tcp.token_file` (401 otherwise); the token is never logged.
"""

from __future__ import annotations

import asyncio
import grp
import hmac
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from supervisor.runtime.chart_listener import CHART_FILE
from supervisor.service import metrics, page
from supervisor.service.admission import Refused
from supervisor.service.store import TERMINAL

if TYPE_CHECKING:
    from supervisor.service.daemon import Daemon

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
TOKEN: web.AppKey[str | None] = web.AppKey("token")
MAX_BODY = 2 * 1024 * 1024  # a job file is at most 1 MiB
LOG_CHUNK = 1024 * 1024


class ApiStartError(Exception):
    pass


def _is_tcp(request: web.Request) -> bool:
    return isinstance(request.transport.get_extra_info("peername") if request.transport else None,
                      tuple)  # fmt: skip


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    if _is_tcp(request):
        token = request.app[TOKEN]
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if token is None or not hmac.compare_digest(given.encode(), expected.encode()):
            return web.json_response(
                {"error": "a bearer token is required on TCP (Authorization: Bearer …)"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)  # type: ignore[no-any-return]


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    from supervisor.service.daemon import Conflict, NotFound

    try:
        return await handler(request)  # type: ignore[no-any-return]
    except NotFound as e:
        return web.json_response({"error": str(e)}, status=404)
    except Conflict as e:
        return web.json_response({"error": str(e)}, status=409)
    except Refused as e:
        return web.json_response({"error": "refused", "reasons": e.reasons}, status=400)
    except ValueError as e:
        return web.json_response({"error": f"bad request: {e}"}, status=400)


def _peer_user(request: web.Request) -> str | None:
    """Who is at the other end of the Unix socket (SO_PEERCRED), for the job record."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return None


def _job_id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def healthz(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    c = d.store.counts()
    return web.json_response(
        {
            "status": "ok" if d.ready else "starting",
            "accepting": d.accepting,
            "running": c["starting"] + c["running"] + c["stopping"],
            "queued": c["queued"],
        }
    )


async def get_metrics(request: web.Request) -> web.Response:
    body = metrics.render(request.app[DAEMON])
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


async def list_jobs(request: web.Request) -> web.Response:
    return web.json_response(request.app[DAEMON].views())


async def submit(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    body = await request.json()
    if not isinstance(body, dict) or not isinstance(body.get("yaml"), str):
        raise ValueError('send {"yaml": <job file text>, "source": …, "base_dir": …}')
    after = body.get("after")
    job_id = await d.submit(
        body["yaml"],
        str(body.get("source") or "<submitted>"),
        Path(str(body.get("base_dir") or "/")),
        priority=int(body.get("priority") or 0),
        after=int(after) if after is not None else None,
        user=_peer_user(request) or body.get("user"),
    )
    return web.json_response({"id": job_id}, status=201)


async def show(request: web.Request) -> web.Response:
    view = request.app[DAEMON].view(_job_id(request))
    # Vary: a cache in front (the reverse proxy of `public_url`) must not hand the page to
    # a script or the JSON to a browser.
    if not page.prefers_html(request.headers.get("Accept")):
        return web.json_response(view, headers={"Vary": "Accept"})
    diagnosis, chart_version = await asyncio.to_thread(_page_files, view)
    return web.Response(
        text=page.render_job(view, diagnosis, chart_version),
        content_type=page.CONTENT_TYPE,
        charset="utf-8",
        headers={"Vary": "Accept", **page.SECURITY_HEADERS},
    )


def _page_files(view: dict[str, Any]) -> tuple[dict[str, Any] | None, int | None]:
    """What the page reads from the job dir: the final diagnosis (report.json's, as
    `trainsup show` prefers it once the job ended) else the live one; the chart's mtime."""
    diagnosis = view.get("diagnosis")
    if not view.get("job_dir"):
        return diagnosis, None
    job_dir = Path(view["job_dir"])
    try:
        final = json.loads((job_dir / "report.json").read_text()).get("diagnosis")
    except (OSError, ValueError, AttributeError):
        final = None
    if isinstance(final, dict):
        diagnosis = final
    try:
        st = (job_dir / CHART_FILE).lstat()
    except OSError:
        return diagnosis, None
    return diagnosis, st.st_mtime_ns if stat.S_ISREG(st.st_mode) else None


def _no_chart(job_id: int, why: str) -> web.Response:
    return web.json_response(
        {"error": f"job {job_id} has no chart yet: {why}; it is drawn after each evaluation "
                  "and at the end (try again later)"},
        status=404,
    )  # fmt: skip


def _read_chart(path: Path) -> bytes | None:
    """The chart's bytes; None when absent or not a regular file (the listener writes a plain
    file by rename: a symlink there is not its chart, so it is not followed)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


async def chart(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    view = request.app[DAEMON].view(job_id)  # 404 for an unknown job
    if not view["job_dir"]:
        return _no_chart(job_id, f"it is {view['state']} and has not started")
    # Only the job's own dir and the one file name: nothing from the request reaches the path.
    data = await asyncio.to_thread(_read_chart, Path(view["job_dir"]) / CHART_FILE)
    if data is None:
        return _no_chart(job_id, "not drawn yet")
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-cache"})


async def logs(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    job_id = _job_id(request)
    offset = int(request.query.get("offset", "0"))
    state = d.view(job_id)["state"]
    path = d.log_path(job_id)
    data = b""
    if path is not None and path.exists():
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(LOG_CHUNK)
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={
            "X-Next-Offset": str(offset + len(data)),
            "X-Job-State": state,
            "X-Job-Ended": "1" if state in TERMINAL else "0",
        },
    )


async def events(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    job_id = _job_id(request)
    state = d.view(job_id)["state"]
    after = int(request.query.get("after", "0"))
    limit = min(int(request.query.get("limit", "1000")), 10000)
    types = request.query.get("types")
    rows = d.store.events(job_id, after, limit, types.split(",") if types else None)
    return web.json_response(
        {"state": state, "events": [{"seq": s, "record": rec} for s, rec in rows]}
    )


async def stop(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    message = request.app[DAEMON].stop(_job_id(request), now=bool(body.get("now")))
    return web.json_response({"id": _job_id(request), "message": message})


async def cancel(request: web.Request) -> web.Response:
    message = request.app[DAEMON].cancel(_job_id(request))
    return web.json_response({"id": _job_id(request), "message": message})


async def retry(request: web.Request) -> web.Response:
    new = await request.app[DAEMON].retry(_job_id(request))
    return web.json_response({"id": new, "retry_of": _job_id(request)}, status=201)


def make_app(daemon: Daemon, token: str | None) -> web.Application:
    app = web.Application(middlewares=[_auth, _errors], client_max_size=MAX_BODY)
    app[DAEMON] = daemon
    app[TOKEN] = token
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/metrics", get_metrics),
            web.get("/jobs", list_jobs),
            web.post("/jobs", submit),
            web.get(r"/jobs/{id:\d+}", show),
            web.get(r"/jobs/{id:\d+}/chart.png", chart),
            web.get(r"/jobs/{id:\d+}/log", logs),
            web.get(r"/jobs/{id:\d+}/events", events),
            web.post(r"/jobs/{id:\d+}/stop", stop),
            web.post(r"/jobs/{id:\d+}/cancel", cancel),
            web.post(r"/jobs/{id:\d+}/retry", retry),
        ]
    )
    return app


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ApiStartError(f"api.tcp.token_file {path}: {e.strerror}") from None
    if len(token) < 16:
        raise ApiStartError(
            f"api.tcp.token_file {path}: the token must be at least 16 characters "
            "(e.g. `openssl rand -hex 32 > token`)"
        )
    return token


def _clear_stale_socket(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ApiStartError(f"{path} exists and is not a socket: remove it or choose api.socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a daemon that was killed
        return
    finally:
        probe.close()
    raise ApiStartError(f"another trainsup serve is listening on {path}")


async def start(daemon: Daemon) -> web.AppRunner:
    api = daemon.config.api
    tcp = api.tcp
    token = _read_token(tcp.token_file) if tcp is not None else None
    runner = web.AppRunner(make_app(daemon, token), access_log=None, handle_signals=False)
    await runner.setup()
    path = daemon.config.socket_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale_socket(path)
    old = os.umask(0o777 & ~api.mode)
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old)
    os.chmod(path, api.mode)
    if api.socket_group:
        try:
            os.chown(path, -1, grp.getgrnam(api.socket_group).gr_gid)
        except (KeyError, PermissionError) as e:
            await runner.cleanup()
            raise ApiStartError(f"api.socket_group {api.socket_group}: {e}") from None
    if tcp is not None:
        await web.TCPSite(runner, tcp.host, tcp.port).start()
    return runner
