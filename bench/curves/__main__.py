"""Generate the curve corpus: real whole darknet trainings, one JSON file per curve.

    .venv/bin/python -m bench.curves [--jobs N] [--only TEXT] [--list] [--work DIR]
    .venv/bin/python -m bench.curves --relabel    # re-propose labels not yet reviewed

Each recipe (`bench/curves/recipes.py`) is trained from iteration 1 to max_batches by the
project's own runner (`supervisor.runtime.runner.JobRunner`) with every stop rule off and the
supervisor's evaluator every 100 iterations, so a curve is exactly what the live path sees.
The runner's `events.jsonl` and `report.json` become `bench/curves/<name>.json`. Finished
curves are skipped; a half-done one is started again from scratch (darknet seeds from the
clock, so a resumed run would not be the same run anyway). Hours of CPU: never in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from bench.curves.label import propose_label
from bench.curves.recipes import Recipe, all_recipes, build_dataset
from supervisor.dataset.demo import write_demo_cfg
from supervisor.runtime.runner import JobRunner, Progress, RunnerConfig
from supervisor.spec import load_spec

OUT = Path(__file__).resolve().parent
DEFAULT_WORK = Path(tempfile.gettempdir()) / "trainsup-curves"
EVERY = 100
# Measured here on one core at nice 19 with other work around: ≈ 0.4 s per iteration and
# ≈ 4 s per evaluation of 60 valid images; refined from finished curves when there are some.
DEFAULT_S_PER_IT = 0.4
S_PER_EVAL = 4.0


def darknet_package() -> str | None:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package} ${Version}", "darknet"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def job_mapping(r: Recipe, data: Path, cfg: Path) -> dict[str, Any]:
    """A job whose every stop rule is off: the run goes to max_batches, evaluated every 100."""
    return {
        "name": r.name,
        "darknet": {
            "binary": "darknet",
            "flavour": "pjreddie",
            "data": str(data),
            "cfg": str(cfg),
            "gpus": [],
        },
        "budget": {"max_iterations": None, "max_time": None},
        "evaluation": {"every": EVERY, "iou_threshold": 0.5, "source": "supervisor"},
        "stop": {
            "min_iterations": 0,
            "plateau": False,
            "overfit": False,
            "not_learning": False,
            "diverged": False,
            "target_map": None,
        },
        "retain": {"best": True, "last": True, "top_k": 0},
    }


def _records(job_dir: Path) -> list[dict[str, Any]]:
    out = []
    with (job_dir / "events.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def curve_from_job(r: Recipe, job_dir: Path, cfg: Path, wall_s: float) -> dict[str, Any]:
    """The curve JSON from the runner's events.jsonl and report.json."""
    from supervisor.darknet.cfg import Cfg

    iters: dict[int, dict[str, Any]] = {}
    evals: dict[int, dict[str, Any]] = {}
    start = end = None
    for rec in _records(job_dir):
        kind = rec["type"]
        if kind == "Iteration":
            # The history keeps the later value of a repeated iteration; so does the curve.
            iters[rec["iteration"]] = rec
            t = rec.get("time")
            if t is not None:
                start = t if start is None else min(start, t)
                end = t if end is None else max(end, t)
        elif kind == "MapResult" and rec.get("iteration") is not None:
            evals[rec["iteration"]] = rec
    c = Cfg.load(cfg)
    report = json.loads((job_dir / "report.json").read_text())
    its = sorted(iters)
    curve: dict[str, Any] = {
        "name": r.name,
        "format": 1,
        "recipe": r.to_json(),
        "seed": r.seed,
        "family": r.family,
        "darknet": {
            "flavour": report.get("flavour"),
            "package": darknet_package(),
            "binary": (report.get("argv") or [None])[0],
            "note": "pjreddie seeds its RNG from the clock: the same recipe gives another curve",
        },
        "schedule": {
            "burn_in": c.burn_in,
            "steps": list(c.steps),
            "scales": list(c.scales),
            "max_batches": c.max_batches,
            "learning_rate": c.learning_rate,
            "batch": c.batch,
            "subdivisions": c.subdivisions,
            "width": c.net.get_int("width", 0),
            "height": c.net.get_int("height", 0),
        },
        "status": report.get("status"),
        "cause": report.get("cause"),
        "wall_s": round(wall_s, 1),
        "train_s": None if start is None or end is None else round(end - start, 1),
        "iterations": {
            "iteration": its,
            "loss": [iters[i]["loss"] for i in its],
            "avg_loss": [iters[i]["avg_loss"] for i in its],
            "rate": [iters[i]["rate"] for i in its],
            "seconds": [iters[i].get("seconds") for i in its],
        },
        "evaluations": [
            {
                "iteration": i,
                "map": e["map"],
                "valid": e.get("valid", True),
                "iou_threshold": e.get("iou_threshold"),
                "per_class": [
                    {"class_id": p["class_id"], "name": p["name"], "ap": p["ap"]}
                    for p in e.get("per_class") or []
                ],
                "average_iou": e.get("average_iou"),
                "precision": e.get("precision"),
                "recall": e.get("recall"),
                "f1": e.get("f1"),
                "tp": e.get("tp"),
                "fp": e.get("fp"),
                "fn": e.get("fn"),
            }
            for i, e in sorted(evals.items())
        ],
    }
    label, why = propose_label(curve)
    curve.update(label=label, why=why, label_by="proposed")
    return curve


def run_one(r: Recipe, out: Path, work: Path, index: int, total: int, keep: bool) -> str:
    """Train one recipe to the end and write its curve; returns a one-line summary."""
    root = work / r.name
    if root.exists():
        shutil.rmtree(root)  # a half-done curve: start again
    root.mkdir(parents=True)
    ds = build_dataset(r, root / "data")
    cfg = write_demo_cfg(
        root / f"{r.name}.cfg", max_batches=r.max_batches, steps=r.steps, burn_in=r.burn_in
    )
    job_path = root / "job.yaml"
    job_path.write_text(yaml.safe_dump(job_mapping(r, ds.data, cfg), sort_keys=False))
    spec = load_spec(job_path)
    t0 = time.monotonic()
    shown = [0]

    def progress(p: Progress) -> None:
        if p.iteration >= shown[0] + 100:
            shown[0] = p.iteration - p.iteration % 100
            best = "-" if p.best_map is None else f"{p.best_map:.3f}"
            last = "-" if p.last_map is None else f"{p.last_map:.3f}"
            ips = f"{1 / p.iterations_per_s:.2f} s/it" if p.iterations_per_s else "?"
            print(
                f"[{index}/{total}] {r.name}: it {p.iteration}/{r.max_batches} avg "
                f"{p.avg_loss if p.avg_loss is None else round(p.avg_loss, 3)} mAP last {last} "
                f"best {best} ({ips}, {time.monotonic() - t0:.0f} s)",
                flush=True,
            )

    runner = JobRunner(spec, root / "job", RunnerConfig(poll=0.5, grace=10.0), progress)
    result = asyncio.run(runner.run())
    wall = time.monotonic() - t0
    if result.status != "finished":
        raise RuntimeError(f"{r.name}: darknet did not finish: {result.status}: "
                           f"{result.report.get('cause')} (job dir {root / 'job'})")  # fmt: skip
    curve = curve_from_job(r, root / "job", root / "job" / cfg.name, wall)
    dest = out / f"{r.name}.json"
    tmp = dest.with_suffix(".tmp")
    tmp.write_text(json.dumps(curve, indent=1) + "\n")
    os.replace(tmp, dest)  # a curve file exists only when whole: that is what resume trusts
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    best = max((e["map"] for e in curve["evaluations"] if e["valid"]), default=None)
    return f"{r.name}: done in {wall / 60:.1f} min, best mAP {best}, proposed {curve['label']}"


def _done(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for p in sorted(out.glob("*.json")):
        try:
            found[p.stem] = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
    return found


def _s_per_it(done: dict[str, dict[str, Any]]) -> float:
    rates = [
        c["train_s"] / c["iterations"]["iteration"][-1]
        for c in done.values()
        if c.get("train_s") and c["iterations"]["iteration"]
    ]
    return sum(rates) / len(rates) if rates else DEFAULT_S_PER_IT


def estimate_hours(todo: list[Recipe], s_per_it: float, jobs: int) -> float:
    seconds = sum(r.max_batches * s_per_it + r.max_batches / EVERY * S_PER_EVAL for r in todo)
    return seconds / 3600 / max(1, jobs)


def relabel(out: Path) -> None:
    for name, c in _done(out).items():
        if c.get("label_by") == "reviewed":
            continue
        c["label"], c["why"] = propose_label(c)
        (out / f"{name}.json").write_text(json.dumps(c, indent=1) + "\n")
        print(f"{name}: {c['label']}: {c['why']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.curves", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="trainings at once (one core each)")
    ap.add_argument("--only", default="", help="only recipes whose name contains this")
    ap.add_argument("--list", action="store_true", help="show the plan and the estimate")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch dir for the runs")
    ap.add_argument("--out", type=Path, default=OUT, help="where the curve JSON files go")
    ap.add_argument("--keep-work", action="store_true", help="keep job dirs (weights, logs)")
    ap.add_argument("--relabel", action="store_true", help="re-propose unreviewed labels")
    a = ap.parse_args(argv)
    if a.relabel:
        relabel(a.out)
        return 0
    plan = [r for r in all_recipes() if a.only in r.name]
    done = _done(a.out)
    todo = [r for r in plan if r.name not in done]
    spi = _s_per_it(done)
    hours = estimate_hours(todo, spi, a.jobs)
    print(
        f"{len(plan)} curves planned, {len(plan) - len(todo)} done, {len(todo)} to train: "
        f"≈ {hours:.1f} h at {spi:.2f} s/iteration with {a.jobs} job(s)",
        flush=True,
    )
    if a.list:
        for r in plan:
            print(f"  {'done ' if r.name in done else 'todo '} {r.name}: {r.max_batches} it.")
        return 0
    a.work.mkdir(parents=True, exist_ok=True)
    failures = 0
    total = len(plan)
    index = {r.name: plan.index(r) + 1 for r in plan}
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futures = {
            pool.submit(run_one, r, a.out, a.work, index[r.name], total, a.keep_work): r
            for r in todo
        }
        for f, r in futures.items():
            try:
                print(f.result(), flush=True)
            except Exception as e:  # one failed recipe must not end hours of others
                failures += 1
                print(f"{r.name}: FAILED: {e}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
