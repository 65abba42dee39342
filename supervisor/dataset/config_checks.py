"""Checks of the `.data` file and of the network `.cfg` against it (darknet-facts §4, §7).

Parsing is `supervisor.darknet.cfg`'s; its `CfgError`s (with file and line) become findings.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from supervisor.darknet.cfg import Cfg, CfgError, DataFile, DetectionLayer, Option, Section, shown
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
        unusable = _not_a(path, "file")
        if unusable is not None:
            out.append(
                finding(
                    "list_missing",
                    where,
                    opt.line,
                    f"{key} = {shown(opt.value)}: {unusable} ({shown(str(path))})",
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


def _not_a(path: Path, kind: str) -> str | None:
    """Why `path` is not an existing file/folder, or None. Path.is_file() raises on some
    errors (a name too long for the file system) instead of answering False."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "no such file" if kind == "file" else "the folder does not exist"
    except OSError as e:
        return f"cannot be used ({e.strerror or e})"
    if kind == "file" and stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device or pipe darknet would read forever)"
    if kind == "folder" and not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    return None


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
    unusable = _not_a(path, "file")
    if unusable is not None:
        out.append(
            finding(
                "names_missing",
                where,
                opt.line,
                f"names = {shown(opt.value)}: {unusable} ({shown(str(path))})",
                "fix the path; relative paths are taken from the .data file's folder",
            )
        )
        return ()
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        out.append(
            finding(
                "names_missing",
                where,
                opt.line,
                f"names = {shown(opt.value)}: cannot read {shown(str(path))} ({e.strerror})",
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
    said = (
        f"backup = {shown(value)}" if opt is not None else f"no backup= line (darknet uses {value})"
    )
    consequence = (
        "pjreddie darknet exits with status 0 at its first save and keeps nothing"
        if flavour == "pjreddie"
        else "darknet stops with an error at its first save"
    )
    why = _not_a(path, "folder")
    if why is not None:
        return [
            finding(
                "backup_missing",
                where,
                line,
                f"{said}: {why} ({shown(str(path))}); {consequence}",
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


# Section names darknet builds a layer from (pjreddie's `string_to_layer_type`, read off the
# Debian binary's strings; the forks add their own). Any other name is "Type not recognized":
# pjreddie then aborts (verified on the Debian binary), so a typo never trains.
PJREDDIE_SECTIONS = frozenset({
    "net", "network", "shortcut", "crop", "cost", "detection", "region", "yolo", "iseg",
    "local", "conv", "convolutional", "deconv", "deconvolutional", "activation", "logistic",
    "l2norm", "crnn", "gru", "lstm", "rnn", "conn", "connected", "max", "maxpool", "reorg",
    "avg", "avgpool", "dropout", "lrn", "normalization", "batchnorm", "soft", "softmax",
    "route", "upsample",
})  # fmt: skip
FORK_SECTIONS = PJREDDIE_SECTIONS | frozenset({
    "Gaussian_yolo", "sam", "scale_channels", "contrastive", "implicit", "empty", "silence",
    "conv_lstm", "history", "local_avg", "local_avgpool", "reorg3d", "reorg_old",
})  # fmt: skip
# [net] keys darknet reads with atoi/atof: a value that is not a number silently becomes its
# numeric prefix (`learning_rate=abc` trains at rate 0, verified on the Debian binary).
_NET_FLOATS = (
    "learning_rate", "momentum", "decay", "angle", "saturation", "exposure", "hue", "gamma",
    "power", "scale", "aspect", "B1", "B2", "eps",
)  # fmt: skip
_NET_INTS = ("channels", "burn_in", "step", "time_steps", "max_crop", "min_crop")
_POLICIES = frozenset({"constant", "step", "steps", "exp", "poly", "sig", "random", "sgdr"})


def check_cfg(
    cfg_path: Path, classes: int | None, train_images: int, flavour: Flavour | None = None
) -> list[Finding]:
    """Detection layers against the data's classes, [net] sizes, and the schedule rules.

    `flavour` decides which section names are layers darknet knows (None: any flavour's).
    """
    try:
        cfg = Cfg.load(cfg_path)
        out = _sections(cfg, flavour)
        layers = cfg.detection_layers()
        out.extend(f for layer in layers for f in _layer(cfg, layer, classes))
        out.extend(_net(cfg, classes, train_images))
    except CfgError as e:
        return [_from_error("cfg_syntax", e)]
    return out


def _sections(cfg: Cfg, flavour: Flavour | None) -> list[Finding]:
    known = PJREDDIE_SECTIONS if flavour == "pjreddie" else FORK_SECTIONS
    out = []
    for s in cfg.sections[1:]:
        if s.name in known:
            continue
        close = difflib.get_close_matches(s.name, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean [{close[0]}]? " if close else ""
        who = f"{flavour} darknet" if flavour else "no darknet flavour"
        out.append(
            finding(
                "cfg_unknown_section",
                str(cfg.path),
                s.line,
                f"[{shown(s.name)}] is not a layer type {who} knows: darknet prints 'Type not "
                "recognized' and aborts (pjreddie) or builds a broken network",
                f"{hint}use a layer name such as [convolutional], [maxpool], [route], "
                "[upsample] or [yolo] (names are case-sensitive), or delete the section",
            )
        )
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
            out.append(
                finding(
                    "cfg_filters_mismatch",
                    where,
                    layer.filters_line or conv_line,
                    f"filters={layer.filters} in the [convolutional] before the "
                    f"[{section.name}] at line {layer.line}; it must be {expected} = "
                    f"{_filters_formula(layer, target)}",
                    f"set filters={expected} there",
                )
            )
    out.extend(_mask(cfg, layer, section))
    out.extend(_anchors(cfg, layer, section))
    return out


def _filters_formula(layer: DetectionLayer, classes: int) -> str:
    """How `filters_for` is computed, in the words of this layer kind."""
    if layer.kind == "region":
        return (
            f"num × (classes + coords + 1) = {layer.num} × ({classes} + {layer.coords} + 1) "
            f"for {classes} classes"
        )
    extra, what = (9, "box with sigmas") if layer.kind == "Gaussian_yolo" else (5, "box")
    boxes = "masks" if layer.mask else "num (no mask=)"
    return (
        f"(classes + {extra}) × {boxes} = ({classes} + {extra}) × {layer.mask_count} "
        f"for {classes} classes ({extra - 1} {what} values and objectness per anchor)"
    )


def _anchors(cfg: Cfg, layer: DetectionLayer, section: Section) -> list[Finding]:
    # pjreddie sizes the anchor array by num= and writes every value of anchors= into it:
    # more values abort it (heap corruption, verified), fewer leave zero-sized anchors.
    if not layer.anchors or len(layer.anchors) == 2 * layer.num:
        return []
    opt = section.get("anchors")
    pairs = len(layer.anchors) / 2
    return [
        finding(
            "cfg_anchors_mismatch",
            str(cfg.path),
            opt.line if opt is not None else layer.line,
            f"anchors= in [{section.name}] holds {len(layer.anchors)} values "
            f"({pairs:g} pairs) but num={layer.num} needs {2 * layer.num}: "
            + (
                "darknet writes past its anchor array and aborts"
                if len(layer.anchors) > 2 * layer.num
                else "darknet leaves the missing anchors at size 0, and those boxes never learn"
            ),
            "give one width,height pair per anchor and set num= to the number of pairs "
            "(the same anchors and num in every detection layer)",
        )
    ]


def _mask(cfg: Cfg, layer: DetectionLayer, section: Section) -> list[Finding]:
    if layer.kind == "region" or not layer.mask:
        return []
    if layer.num <= 0:
        opt = section.get("num")
        return [
            finding(
                "cfg_mask_out_of_range",
                str(cfg.path),
                opt.line if opt is not None else layer.line,
                f"num={layer.num} in [{section.name}] leaves no anchor for mask= to pick",
                "set num= to the number of anchor pairs in anchors= (e.g. num=9)",
            )
        ]
    bad = [m for m in layer.mask if not 0 <= m < layer.num]
    if not bad:
        return []
    opt = section.get("mask")
    return [
        finding(
            "cfg_mask_out_of_range",
            str(cfg.path),
            opt.line if opt is not None else layer.line,
            f"mask={shown(opt.value if opt else '')} in [{section.name}] uses anchor "
            f"{bad[0]}, but num={layer.num} gives anchors 0…{layer.num - 1}: darknet reads "
            "past the anchors it has and trains with garbage anchor sizes",
            f"use mask indices below num (e.g. mask=0,1,2 with num={max(layer.num, 3)} and "
            "that many anchor pairs), or raise num= to the number of anchor pairs",
        )
    ]


def _line(cfg: Cfg, key: str) -> int:
    opt = cfg.net.get(key)
    return opt.line if opt is not None else cfg.net.line


def _atof_prefix(text: str) -> str:
    """What C's atof/atoi make of `text`: its longest numeric prefix, else 0."""
    m = re.match(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", text)
    return m.group(0) if m else "0"


def _net_numbers(cfg: Cfg) -> list[Finding]:
    out = []
    for key in (*_NET_FLOATS, *_NET_INTS):
        opt = cfg.net.get(key)
        if opt is None:
            continue
        try:
            if key in _NET_INTS:
                cfg.net.get_int(key, 0)
            else:
                cfg.net.get_float(key, 0.0)
        except CfgError:
            whole = "a whole number" if key in _NET_INTS else "a number"
            read = _atof_prefix(opt.value)
            zero_rate = key == "learning_rate" and float(read) == 0
            out.append(
                finding(
                    "cfg_value_not_a_number",
                    str(cfg.path),
                    opt.line,
                    f"{key}={shown(opt.value)} in [net] is not {whole}: darknet reads it "
                    f"as {shown(read)} without a word"
                    + (" and trains at learning rate 0" if zero_rate else ""),
                    f"write {whole}, e.g. "
                    + ("learning_rate=0.001" if key == "learning_rate" else f"{key}=1"),
                )
            )
    return out


def _size(cfg: Cfg) -> list[Finding]:
    out: list[Finding] = []
    bad = []
    for key in ("width", "height"):
        value = cfg.net.get_int(key, 0)
        if value <= 0:
            said = f"{key}={value}" if cfg.net.get(key) else f"no {key}= line (darknet uses 0)"
            out.append(
                finding(
                    "cfg_size_invalid",
                    str(cfg.path),
                    _line(cfg, key),
                    f"{said} in [net]: the network input needs a positive size; darknet "
                    "aborts or segfaults while building the network",
                    f"set {key} to a positive multiple of 32, e.g. {key}=416",
                )
            )
        elif value % 32:
            bad.append((key, value))
    if bad:
        key = bad[0][0]
        said = " and ".join(f"{k}={v}" for k, v in bad)
        out.append(
            finding(
                "size_not_multiple_of_32",
                str(cfg.path),
                _line(cfg, key),
                f"{said} is not a multiple of 32; YOLO's downsampling by 32 misaligns the "
                "grid (and layers that concatenate feature maps may fail)",
                "use multiples of 32, e.g. " + ", ".join(f"{k}={_round32(v)}" for k, v in bad),
            )
        )
    return out


def _net(cfg: Cfg, classes: int | None, train_images: int) -> list[Finding]:
    where = str(cfg.path)
    out: list[Finding] = []
    batch, subdivisions = cfg.batch, cfg.subdivisions
    if subdivisions > batch:
        out.append(
            finding(
                "cfg_subdivisions_above_batch",
                where,
                _line(cfg, "subdivisions"),
                f"subdivisions={subdivisions} is larger than batch={batch}: a mini-batch of "
                "batch ÷ subdivisions holds 0 images and darknet dies with a floating-point "
                "exception (SIGFPE) before the first iteration",
                f"set subdivisions to a divisor of batch no larger than {batch} (e.g. "
                f"subdivisions=1), or raise batch",
            )
        )
    elif batch % subdivisions:
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
    out.extend(_size(cfg))
    out.extend(_net_numbers(cfg))
    max_batches = cfg.max_batches
    wanted = max((classes or 1) * 2000, train_images, 6000)
    rule = f"max_batches={wanted} and steps={int(wanted * 0.8)},{int(wanted * 0.9)}"
    if max_batches <= 0:
        said = f"max_batches={max_batches}" if cfg.net.get("max_batches") else "no max_batches="
        out.append(
            finding(
                "cfg_max_batches_missing",
                where,
                _line(cfg, "max_batches"),
                f"{said} in [net]: darknet trains 0 iterations, writes _final.weights and "
                "exits with status 0 as if it had finished",
                f"add {rule} to [net] (the usual rule: max(classes×2000, training images, "
                "6000); trainsup stops earlier when the mAP stops improving)",
            )
        )
    elif classes is not None and max_batches < wanted:
        out.append(
            finding(
                "max_batches_rule",
                where,
                _line(cfg, "max_batches"),
                f"max_batches={max_batches} is below the usual rule max(classes×2000, "
                f"training images, 6000) = {wanted}; training may stop before it converged",
                f"set {rule} (trainsup stops earlier when the mAP stops improving)",
            )
        )
    out.extend(_policy(cfg, max_batches))
    return out


def _policy(cfg: Cfg, max_batches: int) -> list[Finding]:
    where = str(cfg.path)
    policy = cfg.policy
    if policy not in _POLICIES:
        return [
            finding(
                "cfg_policy_unknown",
                where,
                _line(cfg, "policy"),
                f"policy={shown(policy)} is not a learning-rate policy darknet knows: it "
                "prints 'Couldn't find policy' and trains at a constant rate",
                "write policy=steps (with steps= and scales=), or constant, step, exp, poly, "
                "sig, random (sgdr in AlexeyAB)",
            )
        ]
    if policy != "steps":
        return []
    missing = [k for k in ("steps", "scales") if cfg.net.get(k) is None]
    if missing:
        have = "steps" if "steps" not in missing else "scales"
        example = (
            f"steps={int(max_batches * 0.8)},{int(max_batches * 0.9)}"
            if max_batches > 0
            else "steps=4800,5400"
        )
        return [
            finding(
                "cfg_policy_incomplete",
                where,
                _line(cfg, "policy"),
                f"policy=steps without {' and '.join(k + '=' for k in missing)}: darknet "
                "aborts ('STEPS policy must have steps and scales in cfg file')",
                f"add {example} and scales=.1,.1 to [net] (one scale per step)"
                if len(missing) == 2
                else f"add {missing[0]}= with one value per value of {have}= "
                f"(e.g. {example} with scales=.1,.1)",
            )
        ]
    steps, scales = cfg.steps, cfg.scales
    out: list[Finding] = []
    if len(scales) < len(steps):
        out.append(
            finding(
                "cfg_policy_incomplete",
                where,
                _line(cfg, "scales"),
                f"steps= has {len(steps)} values but scales= only {len(scales)}: pjreddie "
                "darknet reads past the end of the scales and crashes (segfault)",
                "give one scale per step, e.g. steps=4800,5400 with scales=.1,.1",
            )
        )
    if any(b <= a for a, b in itertools.pairwise(steps)):
        out.append(
            finding(
                "cfg_steps_not_increasing",
                where,
                _line(cfg, "steps"),
                f"steps={','.join(str(s) for s in steps)} do not increase: darknet walks the "
                "steps in order and stops at the first one above the iteration, so a later, "
                "smaller step takes effect only after the larger one before it",
                "write the steps in increasing order, e.g. "
                + ",".join(str(s) for s in sorted(set(steps))),
            )
        )
    if max_batches > 0 and not out:
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
            f"set steps={_rule_steps(max_batches)}",
        )
    ]


def _rule_steps(max_batches: int) -> str:
    """80 % and 90 % of max_batches, as increasing steps (a tiny max_batches rounds both
    to the same iteration, which cfg_steps_not_increasing would then refuse)."""
    first = int(max_batches * 0.8)
    second = max(int(max_batches * 0.9), first + 1)
    return f"{first},{second}" if second < max_batches else str(first)


def _round32(v: int) -> int:
    return max(32, round(v / 32) * 32)
