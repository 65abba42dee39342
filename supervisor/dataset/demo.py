"""`trainsup demo`: a small real training a user can watch in a few minutes on a CPU.

It generates the shapes dataset, derives a tiny cfg from Debian's yolov3-tiny, and writes a job
file with the default stop rules, which fit the run from its cfg. The tests use the same pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from supervisor.darknet.cfg import Cfg
from supervisor.dataset.synth import ShapesDataset, make_shapes_dataset

STOCK_CFG = Path("/usr/share/darknet/cfg/yolov3-tiny.cfg")

# yolov3-tiny's widest layers, cut so that one iteration at 96×96 with batch 8 takes ~0.25 s
# on one CPU core; two classes need no more capacity.
FILTER_CUTS = {1024: 128, 512: 128, 256: 64}


@dataclass(frozen=True, slots=True)
class Demo:
    job: Path
    cfg: Path
    dataset: ShapesDataset


def write_demo_cfg(
    dest: Path,
    *,
    source: Path = STOCK_CFG,
    classes: int = 2,
    size: int = 96,
    max_batches: int = 1500,
    steps: tuple[int, int] = (300, 400),
    burn_in: int = 50,
    learning_rate: float | None = None,
) -> Path:
    """The demo cfg: batch 8 / subdivisions 1 (the stock file trains with batch=1), small input,
    random=0 (no multi-scale resizing: pjreddie would jump to 608×608), steps early enough that
    the learning rate has dropped when the mAP plateau comes, so the policy can stop early."""
    if not source.exists():
        raise FileNotFoundError(
            f"{source} is missing: it comes with Debian's darknet package (apt-get install darknet)"
        )
    cfg = Cfg.load(source)
    for key, value in (
        ("batch", 8),
        ("subdivisions", 1),
        ("width", size),
        ("height", size),
        ("burn_in", burn_in),
        ("max_batches", max_batches),
        ("steps", ",".join(map(str, steps))),
    ):
        cfg.set_net(key, value)
    if learning_rate is not None:
        cfg.set_net("learning_rate", learning_rate)
    cfg.set_random(0)
    for index, section in enumerate(cfg.sections):
        opt = section.get("filters")
        if section.kind == "convolutional" and opt is not None:
            cut = FILTER_CUTS.get(section.get_int("filters", 0))
            if cut is not None:
                cfg.set_option(index, "filters", cut)
    cfg.set_classes(classes)  # also sets filters=(classes+5)×masks before each [yolo]
    cfg.save(dest)
    return dest


def demo_job(name: str, data: Path, cfg: Path, *, max_time: str = "15m") -> dict[str, object]:
    """The demo's job file as a mapping (relative paths are fine: relative to the job file)."""
    return {
        "name": name,
        "darknet": {
            "binary": "darknet",
            "flavour": "pjreddie",
            "data": str(data),
            "cfg": str(cfg),
            "gpus": [],
        },
        "budget": {"max_time": max_time},
        "evaluation": {"every": 100, "iou_threshold": 0.5, "source": "supervisor"},
        # No `stop:` section: the default rules fit the run from its cfg (patience a share of
        # max_batches, short once the last rate step at 400 has had its evaluation), so the
        # demo stops on its own a few evaluations after 400 with no hand-tuned numbers.
        "retain": {"best": True, "last": True, "top_k": 0},
        # The rules of thumb are for real datasets; this cfg is short on purpose (the check
        # shows these two as notes with the reason, and `check --strict` passes).
        "checks": {
            "accept": {
                "max_batches_rule": "a demo that must stop in minutes on a CPU: 1 500 "
                "iterations are plenty for two shapes, and the plateau rule stops it earlier",
                "steps_rule": "the rate drops early (300, 400) so that the demo's plateau "
                "comes, and is stopped, within a few minutes",
            }
        },
    }


def make_demo(root: Path, *, train: int = 300, valid: int = 60, seed: int = 0) -> Demo:
    """Dataset under `root/data`, cfg and job.yaml in `root`."""
    root = root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    ds = make_shapes_dataset(root / "data", train=train, valid=valid, seed=seed)
    cfg = write_demo_cfg(root / "yolov3-tiny-shapes.cfg")
    job = root / "job.yaml"
    job.write_text(
        "# trainsup demo job: see configs/job.example.yaml for every key\n"
        + yaml.safe_dump(demo_job("demo", ds.data, cfg), sort_keys=False)
    )
    return Demo(job, cfg, ds)
