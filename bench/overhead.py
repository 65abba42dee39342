"""What supervision costs: the same tiny real training (Debian's darknet, pjreddie, CPU) run bare
and under `trainsup serve`, alternated, in pairs.

For each pair: darknet's own per-iteration time (the `seconds` it prints on every iteration
line; median over the run), bare and supervised; the daemon's CPU time during the supervised
run as a share of darknet's; the daemon's peak RSS (VmHWM, over the whole benchmark).

    .venv/bin/python bench/overhead.py [--pairs 5] [--iterations 100]

Targets (issue 9): rate ratio ≥ 0.99, daemon CPU ≤ 1 % of darknet's, peak RSS ≤ 100 MB. The
daemon runs with its default runner settings (poll 0.2 s, checkpoint every 2 s); evaluations
are off (every > the run) so that the comparison is the training alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.darknet.command import train_argv  # noqa: E402
from supervisor.darknet.jobfiles import prepare_job_files  # noqa: E402
from supervisor.dataset.demo import write_demo_cfg  # noqa: E402
from supervisor.dataset.synth import make_shapes_dataset  # noqa: E402

DARKNET = "/usr/bin/darknet"


def seconds_per_iteration(log: Path) -> float:
    vals = []
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split(",")
        if len(parts) >= 4 and parts[3].strip().endswith("seconds") and ":" in parts[0]:
            try:
                vals.append(float(parts[3].split()[0]))
            except ValueError:
                continue
    if not vals:
        raise RuntimeError(f"no iteration lines in {log}")
    return statistics.median(vals)


def bare(root: Path, data: Path, cfg: Path, n: int) -> float:
    d = root / f"bare-{n}"
    files = prepare_job_files(d, data, cfg)
    argv = train_argv(DARKNET, "pjreddie", files.data, files.cfg, None, gpus=(), clear=True)
    log = d / "darknet.log"
    with log.open("wb") as out:
        subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       cwd=files.run, check=False)  # fmt: skip
    return seconds_per_iteration(log)


def _iterated(log: Path) -> bool:
    try:
        return b" avg, " in log.read_bytes()[-4096:]
    except OSError:
        return False


class Serve:
    def __init__(self, root: Path, data_root: Path) -> None:
        self.state = root / "state"
        config = root / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state_dir": str(self.state),
                    "binaries": {"darknet": {"path": DARKNET, "flavour": "pjreddie"}},
                    "data_roots": [str(data_root)],
                    "gpus": [],
                    "preflight": "off",
                }
            )
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(root / "daemon.log").open("wb"),
            cwd=ROOT,
        )
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.state / "trainsup.sock")),
            base_url="http://trainsup",
            timeout=60,
        )
        for _ in range(300):
            try:
                if self.http.get("/healthz").json()["status"] == "ok":
                    break
            except (httpx.HTTPError, OSError):
                time.sleep(0.1)
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def run(self, job: Path) -> tuple[float, float, float]:
        """(seconds per iteration, daemon CPU s, darknet CPU s) of one supervised job."""
        body = {"yaml": job.read_text(), "source": str(job), "base_dir": str(job.parent)}
        job_id = self.http.post("/jobs", json=body).json()["id"]
        # Followed through the job dir, not the API: a request is the daemon's CPU time too.
        job_dir = self.state / "jobs" / str(job_id)
        tree: dict[int, float] = {}
        top: psutil.Process | None = None
        cpu0: float | None = None
        while not (job_dir / "report.json").exists():
            if top is None and (job_dir / "launch.json").exists():
                top = psutil.Process(json.loads((job_dir / "launch.json").read_text())["pid"])
            if cpu0 is None and _iterated(job_dir / "darknet.log"):
                # From darknet's first iteration on: what supervision costs per second of
                # training, not the one-off admission (parsing, proving the binary).
                cpu0 = self.cpu()
            if top is not None:
                # The launch pid is the wrapper's (darknet's parent, own session): its tree.
                try:
                    for p in [top, *top.children(recursive=True)]:
                        t = p.cpu_times()
                        tree[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            time.sleep(0.2)
        if cpu0 is None:
            raise RuntimeError(f"job {job_id} ended before its first iteration")
        daemon_cpu = self.cpu() - cpu0
        j = self.http.get(f"/jobs/{job_id}").json()
        if j["state"] != "finished":
            raise RuntimeError(f"supervised job ended {j['state']}: {j}")
        return seconds_per_iteration(job_dir / "darknet.log"), daemon_cpu, sum(tree.values())

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=100)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tsbench-", dir="/tmp"))
    ds = make_shapes_dataset(root / "data", train=40, valid=8, seed=5)
    cfg = write_demo_cfg(root / "data" / "shapes.cfg", size=64, max_batches=args.iterations,
                         steps=(args.iterations * 10, args.iterations * 20))  # fmt: skip
    job = root / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "bench",
                "darknet": {"binary": "darknet", "data": str(ds.data), "cfg": str(cfg), "gpus": []},
                "evaluation": {"every": args.iterations * 100, "source": "supervisor"},
                "stop": {"plateau": False, "overfit": False, "not_learning": False},
            }
        )
    )
    serve = Serve(root, root / "data")
    rows = []
    try:
        for n in range(args.pairs):
            # Alternate which goes first, so a drift in machine load hits both alike.
            if n % 2 == 0:
                b = bare(root, ds.data, cfg, n)
                s, dcpu, kcpu = serve.run(job)
            else:
                s, dcpu, kcpu = serve.run(job)
                b = bare(root, ds.data, cfg, n)
            rows.append({"bare_s": b, "served_s": s, "daemon_cpu_s": dcpu, "darknet_cpu_s": kcpu})
            print(json.dumps(rows[-1]), flush=True)
        rss = serve.peak_rss_mb()
    finally:
        serve.close()
    ratios = [r["bare_s"] / r["served_s"] for r in rows]
    shares = [r["daemon_cpu_s"] / r["darknet_cpu_s"] for r in rows if r["darknet_cpu_s"]]
    load = os.getloadavg()
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {load[0]:.1f} at the end; {args.pairs} pairs of {args.iterations} "
        "iterations (64 px, batch 8)"
    )
    print(
        f"iteration-rate ratio (served/bare): median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    print(
        f"daemon CPU as a share of darknet's: median {statistics.median(shares) * 100:.2f} % "
        f"(max {max(shares) * 100:.2f} %)"
    )
    print(f"daemon peak RSS: {rss:.1f} MB")


if __name__ == "__main__":
    main()
