"""The job's HTML page: what a person gets on opening a chat message's link (`GET /jobs/ID` with a
browser's Accept header). Pure: the API handler gathers the view and the file facts, this only
chooses the representation and renders.

One self-contained document: no script, no external asset (the chart is the API's own
`/jobs/ID/chart.png`, by a relative URL so that a reverse proxy's path prefix keeps working).
Every value from the view is escaped: job names, users, reasons, errors and paths are text a
submitter chose or a log printed.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from supervisor.training.diagnose import Diagnosis

TERMINAL = frozenset({"finished", "failed", "cancelled"})
REFRESH_S = 60
CONTENT_TYPE = "text/html"
# The page needs nothing but its own inline style and the chart from the same origin; the
# policy makes a missed escape inert rather than executable.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:.8rem;
line-height:1.4;color:#1b1b1b;background:#fff}
h1{font-size:1.3rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1rem 0 .3rem}
table{border-collapse:collapse}td,th{padding:.15rem .6rem .15rem 0;text-align:left;
vertical-align:top}th{font-weight:600;white-space:nowrap}
code{word-break:break-all}progress{width:12rem}
.state{display:inline-block;padding:0 .4rem;border-radius:.3rem;background:#e6e6e6}
.failed{background:#f6c7c7}.finished{background:#cdeccd}.running{background:#cfe2f7}
img{max-width:100%;height:auto;border:1px solid #ddd}ul{margin:.2rem 0;padding-left:1.2rem}
.muted{color:#666}
"""


def _q(param: str) -> float:
    try:
        return max(0.0, min(1.0, float(param)))
    except ValueError:
        return 0.0  # a malformed weight is no preference


def _accept_q(accept: str, media: str) -> float:
    """The weight `accept` gives `media` (RFC 9110 §12.5.1): the most specific range that
    matches it decides; 0 when none does."""
    kind = media.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        rng = parts[0].lower()
        q = 1.0
        for p in parts[1:]:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                q = _q(value.strip())
        if rng == media:
            specificity = 2
        elif rng == f"{kind}/*":
            specificity = 1
        elif rng == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q)
    return best[1]


def prefers_html(accept: str | None) -> bool:
    """True only when the client ranks text/html above application/json: a browser does
    (`text/html,…,*/*;q=0.8`); curl, httpx and scripts (`*/*` or no header) rank them equal
    and keep getting the JSON, which is the API's contract."""
    if not accept:
        return False
    return _accept_q(accept, "text/html") > _accept_q(accept, "application/json")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f} %"


def _when(t: float | None) -> str:
    # UTC: the reader of a chat link may be anywhere, the daemon's local time means nothing there.
    return "–" if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _device(v: Any) -> str:
    if v is None:
        return "–"
    if v == "cpu":
        return "CPU"
    return "GPU " + ", ".join(map(str, v[1]))


def _row(label: str, value_html: str) -> str:
    return f"<tr><th>{_e(label)}</th><td>{value_html}</td></tr>"


def _progress(view: Mapping[str, Any]) -> list[str]:
    it, top = view.get("iteration"), view.get("max_iterations")
    rows = []
    if it is None:
        rows.append(_row("iteration", "–"))
    elif top:
        share = min(1.0, max(0.0, it / top))
        rows.append(
            _row(
                "iteration",
                f"{_e(it)} / {_e(top)} ({share * 100:.0f} %) "
                f'<progress max="{_e(top)}" value="{_e(min(it, top))}"></progress>',
            )
        )
    else:
        rows.append(_row("iteration", _e(it)))
    speed = view.get("iterations_per_s")
    if speed:
        extra = ""
        if view.get("budget_left_s") is not None:
            extra += f"; budget ends in {_e(_duration(view['budget_left_s']))}"
        if view.get("next_evaluation") is not None:
            extra += f"; next evaluation at {_e(view['next_evaluation'])}"
        rows.append(_row("speed", f"{speed:.2f} it/s{extra}"))
    if view.get("avg_loss") is not None:
        rows.append(_row("avg loss", f"{view['avg_loss']:.3f}"))
    return rows


def _map_rows(view: Mapping[str, Any]) -> list[str]:
    best = view.get("best")
    best_html = "–"
    if best:
        where = f"at iteration {best.get('iteration')}"
        best_html = f"<strong>{_e(_pct(best.get('map')))}</strong> {_e(where)}"
    return [_row("best mAP", best_html), _row("last mAP", _e(_pct(view.get("last_map"))))]


def _stop_section(view: Mapping[str, Any]) -> str:
    stop = view.get("stop")
    out = ""
    if stop:
        out += (
            f"<h2>Stop decision</h2><p><strong>{_e(stop.get('rule'))}</strong>: "
            f"{_e(stop.get('reason') or '')}</p>"
        )
    if view.get("error"):
        status = f"{view.get('status')}: {view.get('cause')}" if view.get("status") else "error"
        out += f"<h2>Error</h2><p>{_e(status)}</p><p><code>{_e(view['error'])}</code></p>"
    return out


def _diagnosis_section(diagnosis: Mapping[str, Any] | None) -> str:
    d = Diagnosis.from_json(diagnosis) if diagnosis else None
    if d is None:
        return ""
    out = f"<h2>Diagnosis: {_e(d.title())}</h2>"
    if d.evidence:
        out += "<ul>" + "".join(f"<li>{_e(x)}</li>" for x in d.evidence) + "</ul>"
    if d.advice:
        out += f"<p><strong>Advice:</strong> {_e(d.advice[0])}</p>"
    return out


def _kept_section(kept: Sequence[Mapping[str, Any]]) -> str:
    if not kept:
        return ""
    rows = []
    for k in kept:
        extra = ""
        if k.get("iteration") is not None:
            at = f"(iteration {k['iteration']}, mAP {_pct(k.get('map'))})"
            extra = f" <span class=muted>{_e(at)}</span>"
        rows.append(_row(str(k.get("name")), f"<code>{_e(k.get('path'))}</code>{extra}"))
    return "<h2>Kept weights</h2><table>" + "".join(rows) + "</table>"


def _chart_section(job_id: object, chart_version: int | None) -> str:
    if chart_version is None:
        return (
            "<h2>Chart</h2><p class=muted>No chart yet: it is drawn after the first "
            "evaluation and at the end.</p>"
        )
    # Relative to /jobs/ID, so it is /jobs/ID/chart.png under any proxy prefix; the version
    # makes a redrawn chart a new URL for the browser's cache at each refresh.
    src = f"{job_id}/chart.png?v={chart_version}"
    return (
        f'<h2>Chart</h2><a href="{_e(src)}"><img src="{_e(src)}" '
        f'alt="training chart of job {_e(job_id)}"></a>'
    )


def render_job(
    view: Mapping[str, Any], diagnosis: Mapping[str, Any] | None, chart_version: int | None
) -> str:
    """The page of one job. `view` is the API's JSON view of it; `diagnosis` the reading to
    show (report.json's once the job ended, else the live one); `chart_version` the chart's
    mtime in ns, None when it is not drawn."""
    job_id = view.get("id")
    state = str(view.get("state"))
    refresh = "" if state in TERMINAL else f'<meta http-equiv="refresh" content="{REFRESH_S}">'
    times = f"submitted {_when(view.get('submitted'))}"
    if view.get("user"):
        times += f" by {view['user']}"
    if view.get("started"):
        times += f"; started {_when(view['started'])}"
    if view.get("ended"):
        times += f"; ended {_when(view['ended'])}"
    facts = [
        _row("state", f'<span class="state {_e(state)}">{_e(state)}</span>'),
        *_progress(view),
        *_map_rows(view),
        _row("device", _e(_device(view.get("device")))),
    ]
    if view.get("relaunches"):
        facts.append(_row("relaunches", _e(view["relaunches"])))
    if view.get("job_dir"):
        facts.append(_row("job dir", f"<code>{_e(view['job_dir'])}</code>"))
    name = view.get("name")
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{refresh}<title>job {_e(job_id)}: {_e(name)} — {_e(state)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>job {_e(job_id)}: {_e(name)}</h1>"
        f"<p class=muted>{_e(times)}</p>"
        f"<table>{''.join(facts)}</table>"
        f"{_stop_section(view)}{_diagnosis_section(diagnosis)}"
        f"{_kept_section(view.get('kept') or ())}{_chart_section(job_id, chart_version)}"
        f"<p class=muted>trainsup; the JSON of this job: <code>trainsup show {_e(job_id)} "
        "--json</code></p></body></html>\n"
    )
