"""A local HTTP receiver that records what it is sent: for the tests, for an end-to-end run
against a real training, and for trying a job's `notify:` by hand.

    with Receiver() as rx:                 # listens on 127.0.0.1, a free port
        url = rx.url("/hook")              # → http://127.0.0.1:PORT/hook
        rx.plan("/hook", 503, "drop", Reply(429, {"Retry-After": "1"}))   # then 200s
        ...
        rx.wait_for(3, timeout=10)         # until 3 requests were recorded
        rx.requests[0].json                # parsed body; .form/.files for multipart
        rx.messages("/hook")               # every JSON body received there

For an end-to-end run, append `webhook_section(rx.url("/hook"))` to a job file.

A planned reply is a status, a `Reply`, or "drop": the request is read and recorded, then the
connection is closed without an answer (a response lost after the receiver accepted).
`stop()` and `start()` take the receiver down and back up on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from supervisor.notify.reasons import QUIET_PATTERNS


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'


Planned = int | Reply | str


@dataclass
class Recorded:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    time: float
    answered: int | None  # the status sent back; None when the connection was dropped
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)  # name, type, data

    @property
    def json(self) -> Any:
        if self.headers.get("content-type", "").startswith("multipart/"):
            return json.loads(self.form["payload_json"]) if "payload_json" in self.form else None
        return json.loads(self.body)


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """multipart/form-data → (fields, files {name: (filename, content type, bytes)})."""
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    form: dict[str, str] = {}
    files: dict[str, Any] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if filename is not None:
            files[str(name)] = (filename, part.get_content_type(), data)
        else:
            form[str(name)] = data.decode()
    return form, files


class Receiver:
    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.requests: list[Recorded] = []
        self._plans: dict[str, deque[Planned]] = {}
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def plan(self, path: str, *replies: Planned) -> None:
        """The next requests to `path` get these replies, in order; after them, 200."""
        with self._lock:
            self._plans.setdefault(path, deque()).extend(replies)

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output is not the place for an access log

            def do_POST(self) -> None:
                receiver._handle(self)

            do_GET = do_PUT = do_POST

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Receiver:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Recorded]:
        """Block until at least `n` requests were recorded; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.requests)} requests arrived, not {n}")
                self._lock.wait(left)
            return list(self.requests)

    def messages(self, path: str | None = None) -> list[Any]:
        """The JSON bodies received (at `path`), in arrival order, repeats included."""
        with self._lock:
            return [r.json for r in self.requests if path is None or r.path == path]

    # --- serving

    def _next(self, path: str) -> Planned:
        with self._lock:
            plan = self._plans.get(path)
            return plan.popleft() if plan else 200

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        planned = self._next(h.path)
        headers = {k.lower(): v for k, v in h.headers.items()}
        rec = Recorded(h.command, h.path, headers, body, time.time(), None)
        ctype = headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            rec.form, rec.files = parse_multipart(ctype, body)
        if planned == "drop":
            self._record(rec)
            h.close_connection = True
            return
        reply = planned if isinstance(planned, Reply) else Reply(int(planned))
        rec.answered = reply.status
        self._record(rec)
        h.send_response(reply.status)
        for k, v in reply.headers.items():
            h.send_header(k, v)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(reply.body)))
        h.end_headers()
        h.wfile.write(reply.body)

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)
            self._lock.notify_all()


def webhook_section(url: str) -> str:
    """A job file's `notify:` section that sends every event, every new best, to `url` as the
    generic webhook — for an end-to-end run against a `Receiver`."""
    return f"notify:\n  - type: webhook\n    url: {url}\n    new_best_interval: null\n"


def mismatches_with_report(messages: list[Any], report: dict[str, Any]) -> list[str]:
    """What one job's generic-webhook messages (`Receiver.messages`) say that its report.json
    does not; [] when they agree. Checked: one `started`; every `new_best` is an evaluation of
    the report at that iteration with that mAP, and the bests rise; every `diagnosis` a
    problem, none told twice; the `relaunched` triggers those that ended the report's launches;
    exactly one final `stopped`/`failed`, last, whose status, rule, reason, best and kept are
    the report's."""
    out: list[str] = []
    unique = list({m["id"]: m for m in messages}.values())  # at-least-once: repeats allowed
    events = [m["event"] for m in unique]
    if events.count("started") != 1:
        out.append(f"{events.count('started')} started messages, not 1")
    scores = {
        (e["iteration"], e["map"]) for e in report.get("evaluations", []) if e.get("valid", True)
    }
    bests = [m for m in unique if m["event"] == "new_best"]
    for m in bests:
        if (m["iteration"], m["map"]) not in scores:
            out.append(f"new_best {m['map']} at {m['iteration']} is no evaluation in the report")
    maps = [m["map"] for m in bests]
    if maps != sorted(maps):
        out.append(f"new_best mAPs do not rise: {maps}")
    told = [m.get("pattern") for m in unique if m["event"] == "diagnosis"]
    if len(told) != len(set(told)) or QUIET_PATTERNS & set(told):
        out.append(f"diagnosis messages not one per problem pattern: {told}")
    if isinstance(report.get("launches"), list):
        ended = [
            launch["ended_by"].get("trigger")
            for launch in report["launches"]
            if isinstance(launch, dict) and isinstance(launch.get("ended_by"), dict)
        ]
        triggers = [m.get("trigger") for m in unique if m["event"] == "relaunched"]
        if triggers != ended:
            out.append(f"relaunched triggers {triggers}, report.json's launches: {ended}")
    ends = [m for m in unique if m["event"] in ("stopped", "failed")]
    if len(ends) != 1 or unique[-1] is not ends[-1]:
        out.append(f"{len(ends)} final messages, or not last: {events}")
    if ends:
        end, stop = ends[-1], report.get("stop") or {}
        expected = {
            "status": report.get("status"),
            "rule": stop.get("rule"),
            "reason": stop.get("reason"),
            "best": report.get("best"),
            "kept": report.get("kept"),
        }
        for key, value in expected.items():
            if end.get(key) != value:
                out.append(f"{end['event']}.{key} = {end.get(key)!r}, report.json: {value!r}")
    return out
