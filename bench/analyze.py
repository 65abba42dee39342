"""`trainsup analyze` on a big log: the streaming replay against the code before it, same run.

Usage: `.venv/bin/python bench/analyze.py [--mb 200] [--shape pjreddie|alexeyab] [--baseline
COMMIT] [--old] [--keep-log PATH]`

The log is generated for the run in a temporary directory (never in the repository): the
iteration lines of a real pjreddie log (`../shared/logs/01_…`, read in place) repeated and
renumbered until the file holds `--mb` MB, with darknet's own avg (0.9·avg + 0.1·loss) carried
over the repetitions, a burn-in ramp and steps at 80 % / 90 % in the printed rate, and a
`Saving weights to` line every 100 iterations — the shape of the 200 MB, 3.1 M-iteration log of
issue 14. Each contender runs in a child process of its own, so that its peak RSS is its own:

- `new`: `supervisor.darknet.analyze.analyze_log` as it is now (default policy, no `--cfg`);
- `before`: the same call on the tree of `--baseline` (default `BEFORE`, the commit before the
  bulk reading; its `supervisor/` extracted with `git archive` into a temporary directory and
  imported from there): the ratio of the two is what the bulk path gained;
- for the breakdown, on the same log: the bulk parser alone (`parse`: `LogParser.feed_runs`
  over `LogFile`'s chunks, as the replay reads), parser + history without rules (`history`;
  `analyze_log` with a policy without rules);
- `old` (with `--old`): the code as it was at commit `OLD` (its `logparse.py` and `history.py`
  read with `git show`, its `read_events` + replay copied below): every event kept in a list,
  `History.add` by `dataclasses.replace` (slow, and over 1 GB of memory on 200 MB).

All run the default policy (`policy_for(None)`) of their own tree; the bench checks that
`before` (and `old`) give the same answer as `new`: stop, schedule, iteration lines, best.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# A child measuring `before` imports the baseline's tree (see `measure`).
sys.path.insert(0, os.environ.get("BENCH_CODE") or str(ROOT))

SHARED = Path(os.environ.get("TRAINSUP_SHARED", ROOT.parent / "shared"))
SOURCE = SHARED / "logs" / "01_pjreddie-yolov3tiny-buddyzhu-6000.log"
# For `--shape alexeyab`: a whole AlexeyAB run (10 007 iterations, region lines, 91 mAP
# evaluations, CRLF and `\r` progress), repeated with its iteration numbers moved on.
ALEXEYAB = SHARED / "logs" / "04_alexeyab-yolov3tiny-fire-dstaroff.log"
OLD = "1ae74dc"  # the last commit before analyze streamed (issue 14, point 9)
BEFORE = "cc989e1"  # the last commit before the bulk reading (`feed_runs`, `training.quiet`)


def generate(path: Path, mb: int) -> int:
    """Write the synthetic log; returns its number of iteration lines."""
    import re

    it_re = re.compile(r"^(\d+): ([^,]+), ([^ ]+) avg, ([^ ]+) rate, ([^ ]+) seconds")
    losses = []
    with SOURCE.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            m = it_re.match(line)
            if m and int(m.group(1)) > 1000:  # after burn-in: a realistic noisy descent
                losses.append((float(m.group(2)), float(m.group(5))))
    target = mb << 20
    # ~68 bytes per line: enough iterations for the size, to place the steps at 80 / 90 %.
    n_est = target // 68
    steps = (int(n_est * 0.8), int(n_est * 0.9))
    avg = losses[0][0]
    written = 0
    i = 0
    with path.open("w", encoding="ascii") as f:
        buf: list[str] = []
        while written < target:
            i += 1
            loss, secs = losses[i % len(losses)]
            avg = 0.9 * avg + 0.1 * loss
            rate = 0.001 * (i / 1000) ** 4 if i < 1000 else 0.001
            rate *= 0.1 ** sum(i >= s for s in steps)
            line = (
                f"{i}: {loss:.6f}, {avg:.6f} avg, {rate:.6f} rate, {secs:.6f} seconds,"
                f" {i * 64} images\n"
            )
            if i % 100 == 0:
                line += "Saving weights to /content/backup/yolov3-tiny.backup\n"
            buf.append(line)
            written += len(line)
            if len(buf) >= 10000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    return i


def generate_alexeyab(path: Path, mb: int) -> int:
    """Log 04 from its first iteration line on, repeated and renumbered to `mb` MB."""
    import re

    text = ALEXEYAB.read_bytes()
    it_re = re.compile(rb"(?m)^([ \t]*)(\d+)(: [^,\r\n]+, [^ \r\n]+ avg)")
    first = it_re.search(text)
    assert first is not None
    body = text[first.start() :]
    last = max(int(m.group(2)) for m in it_re.finditer(body))
    target = mb << 20
    written = copies = 0
    with path.open("wb") as f:
        f.write(text[: first.start()])
        while written < target:
            offset = copies * last

            def moved(m: re.Match[bytes], offset: int = offset) -> bytes:
                return m.group(1) + str(int(m.group(2)) + offset).encode() + m.group(3)

            chunk = it_re.sub(moved, body) if offset else body
            f.write(chunk)
            written += len(chunk)
            copies += 1
    return copies * len(it_re.findall(body))


def _old_modules() -> tuple[types.ModuleType, types.ModuleType]:
    """The parser and history of `OLD`, as modules of their own."""
    mods = []
    for name in ("logparse", "history"):
        rel = f"supervisor/{'darknet' if name == 'logparse' else 'training'}/{name}.py"
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{OLD}:{rel}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        mod = types.ModuleType(f"old_{name}")
        sys.modules[mod.__name__] = mod  # dataclasses look their module up
        exec(compile(src, f"{OLD}:{rel}", "exec"), mod.__dict__)
        mods.append(mod)
    return mods[0], mods[1]


def run_old(path: Path) -> dict[str, Any]:
    """`analyze_log` as it was at OLD (read_events + replay), verbatim but for imports."""
    from supervisor.runtime.jobpolicy import policy_for
    from supervisor.training.events import Iteration, MapResult
    from supervisor.training.policy import Stop
    from supervisor.training.schedule import infer_schedule

    old_logparse, old_history = _old_modules()
    policy = policy_for(None)

    def read_events(path: Path) -> tuple[list[Any], Any]:
        parser = old_logparse.LogParser(None)
        events: list[Any] = []
        with path.open("rb") as f:
            for raw in f:
                events.extend(parser.feed(raw.decode("utf-8", errors="replace")))
        events.extend(parser.close())
        return events, parser.flavour

    events, _ = read_events(path)
    schedule = infer_schedule(e for e in events if isinstance(e, Iteration))
    h = old_history.History()
    stop = None
    for e in events:
        h = h.add(e)
        if stop is None and isinstance(e, Iteration | MapResult):
            d = policy.decide(h, schedule)
            if isinstance(d, Stop):
                stop = d
    return {
        "iterations": h.iteration_lines,
        "stop": None if stop is None else f"{stop.rule}@{stop.iteration}",
        "steps": list(schedule.steps),
    }


def run_new(path: Path, rules: bool) -> dict[str, Any]:
    from supervisor.darknet.analyze import analyze_log
    from supervisor.runtime.jobpolicy import policy_for
    from supervisor.training.policy import Policy

    policy = policy_for(None) if rules else Policy(rules=())
    a = analyze_log(path, policy)
    h = a.history
    return {
        "lines": a.lines,
        "iterations": h.iteration_lines,
        "stop": None if a.stop is None else f"{a.stop.rule}@{a.stop.iteration}",
        "reason": None if a.stop is None else a.stop.reason,
        "steps": list(a.schedule.steps),
        "best": None if h.best is None else (h.best.iteration, h.best.map),
        "final": (h.iteration, repr(h.last.avg_loss) if h.last else None, h.seconds),
        "stored": len(h.loss),  # loss-series entries kept (`history.MAX_POINTS` caps them)
    }


def run_parse(path: Path) -> dict[str, Any]:
    from supervisor.darknet.logparse import LogFile, LogParser

    parser = LogParser()
    for text in LogFile(path).chunks():
        parser.feed_runs(text)  # the replay's reading (bulk stretches of iteration lines)
    parser.close()
    return {"lines": parser.summary.lines, "iterations": parser.summary.counts["Iteration"]}


def child(mode: str, path: Path) -> None:
    # Imports (pydantic among them) before the clock starts: the replay is what is timed.
    import supervisor.darknet.analyze
    import supervisor.runtime.jobpolicy  # noqa: F401

    if mode == "old":
        _old_modules()
    t0 = time.perf_counter()
    c0 = time.process_time()
    if mode == "old":
        out = run_old(path)
    elif mode in ("new", "before"):
        out = run_new(path, rules=True)
    elif mode == "history":
        out = run_new(path, rules=False)
    else:
        out = run_parse(path)
    out["seconds"] = time.perf_counter() - t0
    out["cpu"] = time.process_time() - c0
    print(repr(out))


def measure(mode: str, path: Path, code: Path | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("BENCH_CODE", None)
    if code is not None:
        env["BENCH_CODE"] = str(code)
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", mode, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed with status {proc.returncode}")
    out: dict[str, Any] = eval(text.strip().splitlines()[-1])  # our own repr of a dict
    out["rss_mb"] = usage.ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200, help="size of the generated log (MB)")
    ap.add_argument(
        "--shape",
        choices=("pjreddie", "alexeyab"),
        default="pjreddie",
        help="pjreddie: iteration lines only (issue 14's log); alexeyab: log 04 repeated",
    )
    ap.add_argument("--keep-log", type=Path, default=None, help="write the log here, keep it")
    ap.add_argument(
        "--baseline", default=BEFORE, help=f"commit measured as `before` (default {BEFORE})"
    )
    ap.add_argument("--old", action="store_true", help=f"also run the list replay of {OLD}")
    ap.add_argument("--child", nargs=2, metavar=("MODE", "LOG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        log = args.keep_log or Path(tmp) / "big.log"
        t0 = time.perf_counter()
        n = (generate if args.shape == "pjreddie" else generate_alexeyab)(log, args.mb)
        size = log.stat().st_size
        src = SOURCE if args.shape == "pjreddie" else ALEXEYAB
        print(
            f"log: {size / 1e6:.1f} MB, {n:,} iteration lines (generated in "
            f"{time.perf_counter() - t0:.0f} s from {src.name}, shape {args.shape})"
        )
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}, load {os.getloadavg()[0]:.2f}"
        )
        before = Path(tmp) / "before"
        before.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.baseline, "supervisor"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        # Interleaved `new` and `before`, so that a change of load hits both alike.
        modes = ["parse", "history", "new", "before"] + (["old"] if args.old else [])
        results = {}
        for mode in modes:
            r = measure(mode, log, before if mode == "before" else None)
            results[mode] = r
            lines = results["parse"]["lines"]
            print(
                f"{mode:<8} wall {r['seconds']:6.1f} s {lines / r['seconds'] / 1e6:6.3f} M lines/s"
                f" | CPU {r['cpu']:6.1f} s {lines / r['cpu'] / 1e6:6.3f} M lines/s"
                f" | peak RSS {r['rss_mb']:5.0f} MB | stop {r.get('stop')}"
                f" (load {os.getloadavg()[0]:.2f})"
            )
        new = results["new"]
        keys: tuple[str, ...] = ("stop", "reason", "steps", "iterations", "best", "final", "lines")
        for name in ("before", "old"):
            if name not in results:
                continue
            other = results[name]
            if name == "old":
                keys = ("stop", "steps", "iterations")  # what the old replay reports
            same = all(other[k] == new[k] for k in keys)
            print(
                f"ratio: new is {other['cpu'] / new['cpu']:.2f}x as fast as {name} "
                f"({args.baseline if name == 'before' else OLD}) in CPU time "
                f"({other['seconds'] / new['seconds']:.2f}x wall), peak RSS "
                f"{new['rss_mb']:.0f} MB against {other['rss_mb']:.0f} MB; same answer "
                f"({', '.join(keys)}): {same}"
            )
        lines = results["parse"]["lines"]
        print(
            f"issue 14 point 9: peak RSS {new['rss_mb']:.0f} MB <= 200 MB: "
            f"{new['rss_mb'] <= 200}; {lines / new['seconds'] / 1e6:.3f} M lines/s wall >= 0.5: "
            f"{lines / new['seconds'] >= 5e5}; loss entries kept {new['stored']:,} of "
            f"{new['iterations']:,} iteration lines"
        )
        for mode, what in (("parse", "the parser"), ("history", "the stop rules")):
            if mode == "history" and new["stop"] is not None:
                # After its stop the policy is not asked again: `history` did more than `new`.
                print(f"{what}: not measured (the policy stopped at {new['stop']})")
                continue
            base = results["parse"]["cpu"] if mode == "parse" else results["history"]["cpu"]
            share = base if mode == "parse" else new["cpu"] - base
            print(
                f"{what}: {share / new['cpu']:.0%} of new's CPU time "
                f"({share / max(1, new['iterations']) * 1e6:.2f} µs per iteration line)"
            )


if __name__ == "__main__":
    main()
