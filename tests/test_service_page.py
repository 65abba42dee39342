"""The job page a chat link opens (`GET /jobs/ID` for a browser), the chart route and
`trainsup chart ID` — against a real `trainsup serve` process with the scripted stand-in
darknet; the JSON everyone else gets stays the API's contract."""

# ruff: noqa: F811 (pytest fixtures imported from tests/standin_fixtures.py)
from __future__ import annotations

import html
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from supervisor.service.page import prefers_html, render_job
from supervisor.training.diagnose import Diagnosis
from tests.standin_fixtures import (  # noqa: F401 (fixtures)
    ROOT,
    Daemon,
    job_yaml,
    make_daemon,
    set_script,
    short_tmp,
    wait_for,
    write_cfg,
)

pytestmark = pytest.mark.timeout(180)
MakeDaemon = Callable[..., Daemon]
PNG = b"\x89PNG\r\n\x1a\n"
# What browsers send for a page they navigate to (Firefox, Chrome, Safari).
BROWSERS = [
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
]
# The job view's keys before the page existed: the JSON contract of `GET /jobs/ID`.
VIEW_KEYS = {
    "id", "name", "state", "priority", "after", "user", "binary", "device", "submitted",
    "started", "ended", "pid", "iteration", "max_iterations", "avg_loss", "last_map", "best",
    "iterations_per_s", "budget_left_s", "next_evaluation", "stop", "status", "cause", "error",
    "relaunches", "kept", "job_dir", "diagnosis", "waiting",
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(d: Daemon, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.cli", *args, "--socket", str(d.socket)],
        capture_output=True, text=True, env=d.env, cwd=cwd, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("accept", "html_wanted"),
    [
        *[(a, True) for a in BROWSERS],
        (None, False),  # httpx/requests without the header
        ("*/*", False),  # curl
        ("application/json", False),
        ("application/json, text/html;q=0.5", False),
        ("text/html;q=0, */*", False),
        ("text/html;q=0.9, application/json;q=0.8", True),
        ("text/html;q=bogus, application/json", False),
    ],
)
def test_only_a_client_that_ranks_html_first_gets_the_page(
    accept: str | None, html_wanted: bool
) -> None:
    assert prefers_html(accept) is html_wanted


def test_every_user_string_on_the_page_is_escaped() -> None:
    # The spec allows only [A-Za-z0-9._-] in names today; the page must not rely on it.
    evil = '<script>alert("x")</script>'
    view = {
        "id": 7, "name": evil, "state": "failed", "user": evil, "iteration": 5,
        "max_iterations": 10, "best": {"iteration": 4, "map": 0.5},
        "stop": {"rule": "user", "reason": evil}, "status": "crashed", "cause": evil,
        "error": evil, "kept": [{"name": evil, "path": f"/w/{evil}.weights", "iteration": 4,
                                 "map": 0.5}],
        "job_dir": f"/j/{evil}",
    }  # fmt: skip
    diagnosis = {"pattern": "overtraining", "confidence": 0.8, "evidence": [evil],
                 "causes": [], "advice": [evil]}  # fmt: skip
    page = render_job(view, diagnosis, 123)
    assert "<script" not in page and 'alert("x")' not in page
    assert page.count(html.escape(evil)) >= 9, "each field is there, escaped"
    assert "50.0 %" in page and "at iteration 4" in page
    assert 'http-equiv="refresh"' not in page, "an ended job's page does not reload"
    running = render_job({**view, "state": "running"}, None, None)
    assert '<meta http-equiv="refresh" content="60">' in running and "No chart yet" in running


def test_a_browser_gets_the_page_scripts_the_json_and_the_chart_route(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    set_script(short_tmp, iteration_s=0.01)
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=1000)
    job = job_yaml(short_tmp, tiny_data, cfg, name="helmets", budget={"max_iterations": 250})
    d = make_daemon().start()
    job_id = d.submit(job)
    waiting = d.submit(job, "--after", str(job_id))
    # A queued job has no job dir: no chart, said so in JSON.
    r = d.http.get(f"/jobs/{waiting}/chart.png")
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json")
    assert "has not started" in r.json()["error"]
    assert d.http.post(f"/jobs/{waiting}/cancel").status_code == 200
    j = d.wait_state(job_id, {"finished", "failed"})
    assert j["state"] == "finished" and j["best"] is not None and j["kept"], j
    job_dir = Path(j["job_dir"])
    drawn = (job_dir / "chart.png").read_bytes()

    # Scripts and the CLI: the JSON as before, whatever they send short of preferring HTML.
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"},
                    {"Accept": "application/json, text/html;q=0.5"}):  # fmt: skip
        r = d.http.get(f"/jobs/{job_id}", headers=headers)
        assert r.headers["Content-Type"].startswith("application/json"), headers
        assert set(r.json()) == VIEW_KEYS, headers
    assert json.loads(d.cli("show", str(job_id), "--json").stdout) == r.json()

    # A browser: the page.
    r = d.http.get(f"/jobs/{job_id}", headers={"Accept": BROWSERS[0]})
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Accept" in r.headers["Vary"] and "default-src 'none'" in r.headers[
        "Content-Security-Policy"]  # fmt: skip
    page = r.text
    assert f"job {job_id}: helmets" in page and "finished" in page
    assert f"{j['iteration']} / {j['max_iterations']}" in page
    best = j["best"]
    assert f"{best['map'] * 100:.1f} %" in page and f"at iteration {best['iteration']}" in page
    assert html.escape(j["stop"]["reason"]) in page and j["stop"]["rule"] in page
    for k in j["kept"]:
        assert html.escape(k["path"]) in page
    report = json.loads((job_dir / "report.json").read_text())
    final = Diagnosis.from_json(report["diagnosis"])
    assert final is not None and f"Diagnosis: {html.escape(final.title())}" in page
    assert html.escape(final.evidence[0]) in page and html.escape(final.advice[0]) in page
    assert "<script" not in page and 'http-equiv="refresh"' not in page, "ended: no refresh"
    assert f'<img src="{job_id}/chart.png?v=' in page

    # The chart route: the job dir's file, as PNG.
    r = d.http.get(f"/jobs/{job_id}/chart.png")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert r.content == drawn and r.content.startswith(PNG)

    # `trainsup chart ID`: through the daemon, to -o or ./chart-ID.png.
    out = short_tmp / "got.png"
    p = _cli(d, ROOT, "chart", str(job_id), "-o", str(out))
    assert p.returncode == 0 and p.stdout.strip() == str(out), p.stderr
    assert out.read_bytes() == drawn
    here = short_tmp / "cwd"
    here.mkdir()
    p = _cli(d, here, "chart", str(job_id))
    assert p.returncode == 0, p.stderr
    assert (here / f"chart-{job_id}.png").read_bytes().startswith(PNG)
    p = _cli(d, here, "chart", str(job_id), "--svg")
    assert p.returncode == 2 and "PNG only" in p.stderr, p.stderr
    # A folder named like the id is drawn as the job dir it is, not asked of the daemon.
    (here / str(job_id)).mkdir()
    p = _cli(d, here, "chart", str(job_id))
    assert p.returncode == 2 and "not a job dir" in p.stderr, p.stderr

    # Not drawn (yet): 404 with the reason, the page says so, the CLI exits 1 with it.
    (job_dir / "chart.png").unlink()
    r = d.http.get(f"/jobs/{job_id}/chart.png")
    assert r.status_code == 404 and "not drawn yet" in r.json()["error"]
    page = d.http.get(f"/jobs/{job_id}", headers={"Accept": BROWSERS[1]}).text
    assert "No chart yet" in page and "<img" not in page
    p = _cli(d, short_tmp, "chart", str(job_id), "-o", str(short_tmp / "none.png"))
    assert p.returncode == 1 and "not drawn yet" in p.stderr and "Traceback" not in p.stderr
    assert not (short_tmp / "none.png").exists()
    # A symlink in its place is not served (the listener writes a plain file).
    (job_dir / "chart.png").symlink_to(job_dir / "report.json")
    assert d.http.get(f"/jobs/{job_id}/chart.png").status_code == 404
    r = d.http.get("/jobs/999/chart.png")
    assert r.status_code == 404 and "999" in r.json()["error"]


def test_the_page_over_tcp_needs_the_token_and_escapes_the_submitter(
    make_daemon: MakeDaemon, short_tmp: Path, tiny_data: Path, stock_cfg: Path
) -> None:
    token = "page-token-0123456789abcdef"
    (short_tmp / "token").write_text(token + "\n")
    port = _free_port()
    set_script(short_tmp, iteration_s=0.002)
    d = make_daemon(
        api={"tcp": {"listen": f"127.0.0.1:{port}", "token_file": str(short_tmp / "token")}}
    ).start()
    cfg = write_cfg(short_tmp / "c.cfg", stock_cfg, max_batches=1000)
    job = job_yaml(short_tmp, tiny_data, cfg, budget={"max_iterations": 100})
    auth = {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{port}"
    evil = "<script>alert(1)</script>"
    # Over TCP the submitter's name is the client's word (no SO_PEERCRED): user input.
    r = httpx.post(
        f"{url}/jobs",
        headers=auth,
        timeout=30,
        json={"yaml": job.read_text(), "base_dir": str(short_tmp), "user": evil},
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    # The page and the chart are behind the same rule as the JSON: a browser without the
    # header (a chat link opened as is) gets 401.
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/chart.png"):
        assert httpx.get(url + path, headers={"Accept": BROWSERS[0]}).status_code == 401
    page = httpx.get(f"{url}/jobs/{job_id}", headers={**auth, "Accept": BROWSERS[0]})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert html.escape(evil) in page.text and "<script" not in page.text
    d.wait_state(job_id, {"finished", "failed"})
    got = httpx.get(f"{url}/jobs/{job_id}/chart.png", headers=auth)
    assert got.status_code == 200 and got.content.startswith(PNG)
    assert token not in d.log_text()


def test_trainsup_chart_id_without_a_daemon_says_so(short_tmp: Path) -> None:
    sock = short_tmp / "none.sock"
    p = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "chart", "12", "--socket", str(sock)],
        capture_output=True, text=True, cwd=short_tmp, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1 and "cannot reach the trainsup daemon" in p.stderr
    assert not (short_tmp / "chart-12.png").exists()
    p = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "chart", "no-such.log"],
        capture_output=True, text=True, cwd=short_tmp, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2 and "does not exist" in p.stderr and "Traceback" not in p.stderr
