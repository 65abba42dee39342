"""Checks of the `.data` file and of the network `.cfg` against it (darknet-facts §4, §7).

Parsing is `supervisor.darknet.cfg`'s; its `CfgError`s (with file and line) become findings.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from supervisor.darknet.cfg import Cfg, CfgError, DataFile, DetectionLayer, Option
from supervisor.dataset.findings import Finding, finding
from supervisor.training.events import Flavour

PJREDDIE_DEFAULT_BACKUP = "/backup/"  # option_find_str(options, "backup", "/backup/")
STEP_TOLERANCE = 0.05  # steps may sit within ±5 % of max_batches around 80 % and 90 %


@dataclass(frozen=True)
class DataInfo:
    """What the rest of the check needs from the `.data` file."""

    classes: int | None
    names: tuple[str, ...]  # empty when the names file is missing
    train: Path | None  # list files that exist
    valid: Path | None
    base: Path  # folder relative paths are resolved against


def _from_error(code: str, e: CfgError) -> Finding:
    return finding(code, e.path, e.line, e.problem, e.fix)


def check_data_file(
    data: Path, flavour: Flavour, *, managed_backup: bool
) -> tuple[DataInfo, list[Finding]]:
    base = data.absolute().parent
    out: list[Finding] = []
    try:
        df = DataFile.load(data)
        classes = df.classes
    except CfgError as e:
        return DataInfo(None, (), None, None, base), [_from_error("data_syntax", e)]
    where = str(data)
    if classes is None:
        out.append(
            finding(
                "data_key_missing",
                where,
                None,
                "no classes= line",
                "add classes=N, N being the number of lines in the names file",
            )
        )
    lists: dict[str, Path | None] = {}
    for key in ("train", "valid"):
        opt = df.get(key)
        if opt is None:
            code = "data_key_missing" if key == "train" else "data_valid_missing"
            why = (
                "darknet has nothing to train on"
                if key == "train"
                else "no mAP can be measured (AlexeyAB's -map exits with an error without it)"
            )
            out.append(
                finding(
                    code,
                    where,
                    None,
                    f"no {key}= line: {why}",
                    f"add {key} = /path/to/{key}.txt (one image path per line)",
                )
            )
            lists[key] = None
            continue
        path = _resolve(opt, base)
        if not path.is_file():
            out.append(
                finding(
                    "list_missing",
                    where,
                    opt.line,
                    f"{key} = {opt.value}: no such file ({path})",
                    "fix the path; relative paths are taken from the .data file's folder",
                )
            )
            lists[key] = None
        else:
            lists[key] = path
    names = _names(df, base, classes, where, out)
    if not managed_backup:
        out.extend(_backup(df, base, where, flavour))
    return DataInfo(classes, names, lists["train"], lists["valid"], base), out


def _resolve(opt: Option, base: Path) -> Path:
    p = Path(opt.value)
    return p if p.is_absolute() else base / p


def _names(
    df: DataFile, base: Path, classes: int | None, where: str, out: list[Finding]
) -> tuple[str, ...]:
    opt = df.get("names")
    if opt is None:
        out.append(
            finding(
                "data_key_missing",
                where,
                None,
                "no names= line: class names and their order are unknown",
                "add names = /path/to/obj.names (one class name per line, in label-id order)",
            )
        )
        return ()
    path = _resolve(opt, base)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        out.append(
            finding(
                "names_missing",
                where,
                opt.line,
                f"names = {opt.value}: cannot read {path} ({e.strerror})",
                "fix the path; relative paths are taken from the .data file's folder",
            )
        )
        return ()
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if classes is not None and len(names) != classes:
        c_opt = df.get("classes")
        out.append(
            finding(
                "names_count_mismatch",
                where,
                c_opt.line if c_opt else None,
                f"classes={classes} but {path} names {len(names)} classes",
                "make classes= equal the number of names, and check the names' order matches "
                "the class ids in the labels",
            )
        )
    return names


def _backup(df: DataFile, base: Path, where: str, flavour: Flavour) -> list[Finding]:
    opt = df.get("backup")
    value = opt.value if opt is not None else PJREDDIE_DEFAULT_BACKUP
    path = Path(value) if Path(value).is_absolute() else base / value
    line = opt.line if opt is not None else None
    said = f"backup = {value}" if opt is not None else f"no backup= line (darknet uses {value})"
    consequence = (
        "pjreddie darknet exits with status 0 at its first save and keeps nothing"
        if flavour == "pjreddie"
        else "darknet stops with an error at its first save"
    )
    if not path.is_dir():
        return [
            finding(
                "backup_missing",
                where,
                line,
                f"{said}: the folder {path} does not exist; {consequence}",
                f"mkdir -p {path} (trainsup run/submit use a backup/ inside the job instead)",
            )
        ]
    try:
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".trainsup-check-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return [
            finding(
                "backup_not_writable",
                where,
                line,
                f"{said}: cannot create a file in {path} ({e.strerror}); {consequence}",
                "make the folder writable for the user who trains, or point backup= elsewhere",
            )
        ]
    return []


def check_cfg(cfg_path: Path, classes: int | None, train_images: int) -> list[Finding]:
    """Detection layers against the data's classes, [net] sizes, and the schedule rules."""
    try:
        cfg = Cfg.load(cfg_path)
        layers = cfg.detection_layers()
        out = [f for layer in layers for f in _layer(cfg, layer, classes)]
        out.extend(_net(cfg, classes, train_images))
    except CfgError as e:
        return [_from_error("cfg_syntax", e)]
    return out


def _layer(cfg: Cfg, layer: DetectionLayer, classes: int | None) -> list[Finding]:
    where = str(cfg.path)
    out: list[Finding] = []
    section = cfg.sections[layer.section]
    if classes is not None and layer.classes != classes:
        opt = section.get("classes")
        out.append(
            finding(
                "cfg_classes_mismatch",
                where,
                opt.line if opt else layer.line,
                f"[{section.name}] has classes={layer.classes}, the .data file {classes}",
                f"set classes={classes} in every [{section.name}] section",
            )
        )
    target = classes if classes is not None else layer.classes
    if layer.filters is not None:
        expected = layer.filters_for(target)
        if layer.filters != expected:
            conv_line = cfg.sections[layer.conv_section or 0].line
            formula = (
                f"({target}+5)×{layer.mask_count}"
                if layer.kind == "yolo"
                else f"for {target} classes"
            )
            out.append(
                finding(
                    "cfg_filters_mismatch",
                    where,
                    layer.filters_line or conv_line,
                    f"filters={layer.filters} in the [convolutional] before the "
                    f"[{section.name}] at line {layer.line}; it must be {expected} = {formula}",
                    f"set filters={expected} there",
                )
            )
    return out


def _line(cfg: Cfg, key: str) -> int:
    opt = cfg.net.get(key)
    return opt.line if opt is not None else cfg.net.line


def _net(cfg: Cfg, classes: int | None, train_images: int) -> list[Finding]:
    where = str(cfg.path)
    out: list[Finding] = []
    batch, subdivisions = cfg.batch, cfg.subdivisions
    if batch % subdivisions:
        out.append(
            finding(
                "batch_not_divisible",
                where,
                _line(cfg, "subdivisions"),
                f"batch={batch} is not divisible by subdivisions={subdivisions}; darknet "
                f"trains with {batch // subdivisions * subdivisions} images per iteration",
                "choose subdivisions that divide batch (e.g. 1, 2, 4, 8, 16, 32, 64 for 64)",
            )
        )
    bad = [(k, v) for k, v in (("width", cfg.width), ("height", cfg.height)) if v % 32]
    if bad:
        key = bad[0][0]
        said = " and ".join(f"{k}={v}" for k, v in bad)
        out.append(
            finding(
                "size_not_multiple_of_32",
                where,
                _line(cfg, key),
                f"{said} is not a multiple of 32; YOLO's downsampling by 32 misaligns the "
                "grid (and layers that concatenate feature maps may fail)",
                "use multiples of 32, e.g. " + ", ".join(f"{k}={_round32(v)}" for k, v in bad),
            )
        )
    max_batches = cfg.max_batches
    if classes is not None:
        wanted = max(classes * 2000, train_images, 6000)
        if max_batches < wanted:
            out.append(
                finding(
                    "max_batches_rule",
                    where,
                    _line(cfg, "max_batches"),
                    f"max_batches={max_batches} is below the usual rule max(classes×2000, "
                    f"training images, 6000) = {wanted}; training may stop before it converged",
                    f"set max_batches={wanted} and steps={int(wanted * 0.8)},{int(wanted * 0.9)}"
                    " (trainsup stops earlier when the mAP stops improving)",
                )
            )
    if cfg.policy == "steps" and max_batches > 0:
        out.extend(_steps(cfg, max_batches))
    return out


def _steps(cfg: Cfg, max_batches: int) -> list[Finding]:
    steps = cfg.steps
    targets = (0.8, 0.9)
    ok = len(steps) >= 1 and all(
        abs(s / max_batches - t) <= STEP_TOLERANCE for s, t in zip(steps, targets, strict=False)
    )
    ok = ok and all(s < max_batches for s in steps)
    if ok:
        return []
    shown = ",".join(str(s) for s in steps) or "(none)"
    return [
        finding(
            "steps_rule",
            str(cfg.path),
            _line(cfg, "steps"),
            f"steps={shown} with max_batches={max_batches}; the learning rate should drop at "
            "about 80 % and 90 % of max_batches",
            f"set steps={int(max_batches * 0.8)},{int(max_batches * 0.9)}",
        )
    ]


def _round32(v: int) -> int:
    return max(32, round(v / 32) * 32)
