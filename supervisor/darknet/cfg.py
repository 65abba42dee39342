"""Read and patch darknet `.cfg` and `.data` files without disturbing anything else.

Both are parsed the way darknet's `read_cfg`/`read_data_cfg` read them: a line is split at
`\\n`, every space/tab/CR in it is removed (darknet's `strip()`), an empty line or one starting
with `#`/`;` is a comment, `[...]` opens a section (`.cfg` only), anything else is `key=value`
split at the first `=`. Keys are case-sensitive and the *first* occurrence of a key wins
(`option_find` walks the list from the front).

The original text is kept line by line, so `Cfg.text` is byte-identical to the input until a
setter changes a value, and a setter rewrites only the value part of the lines it touches.
Errors a user can cause are `CfgError`s naming file, line, problem and fix.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.atomicio import write_text_atomic

__all__ = [
    "KNOWN_NET_KEYS",
    "Cfg",
    "CfgChanges",
    "CfgError",
    "CfgValue",
    "DataFile",
    "DetectionLayer",
    "Option",
    "Section",
    "cfg_base",
    "cfg_hash",
    "shown",
]

CfgValue = int | float | str | Sequence[int | float]
CfgChanges = Mapping[str, CfgValue]

# darknet's strip() removes ' ', '\t', '\n'; AlexeyAB also '\r'. Treating '\r' as whitespace
# everywhere lets CRLF files parse; the job copies are written with LF for pjreddie's sake.
_WS = re.compile(r"[ \t\r\n]")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_BOM = "\ufeff"
_SHOW = 80  # characters of a written line or value quoted in a message
# No dataset has this many classes (yolo9000 has 9 418); a bigger classes= is a typo, and the
# check's per-class counts would need memory in proportion.
MAX_CLASSES = 100_000


def shown(text: str) -> str:
    """`text` for a message: at most `_SHOW` characters, cut with "…" (a binary file's line
    or a pasted blob must not flood the terminal)."""
    text = text.strip()
    return text if len(text) <= _SHOW else text[: _SHOW - 1] + "…"


def _quoted(text: str) -> str:
    # repr first: a control byte becomes four characters, and those count towards the cap.
    return shown(repr(text.strip()))


_SECTION_ALIASES = {
    "network": "net",
    "conv": "convolutional",
    "conn": "connected",
    "max": "maxpool",
    "avg": "avgpool",
    "lrn": "normalization",
    "soft": "softmax",
    "deconv": "deconvolutional",
    "local_avg": "local_avgpool",
}
_DETECTION_KINDS = ("yolo", "Gaussian_yolo", "region")

# [net] keys that `Cfg.apply` accepts even when the file lacks them. A change naming any other
# key that is not already in [net] is refused: darknet ignores unknown keys (it only prints
# "Unused field"), so a typo such as `subdivision` would silently change nothing.
# fmt: off
KNOWN_NET_KEYS = frozenset({
    "batch", "subdivisions", "width", "height", "channels", "momentum", "decay", "angle",
    "saturation", "exposure", "hue", "learning_rate", "burn_in", "max_batches", "policy",
    "steps", "scales", "step", "gamma", "power", "mosaic", "cutmix", "mixup", "flip",
    "letter_box", "blur", "gaussian_noise", "adam", "B1", "B2", "eps", "max_crop", "min_crop",
    "aspect", "jitter", "ema_alpha", "loss_scale", "dynamic_minibatch", "optimized_memory",
    "workspace_size_limit_MB", "max_chart_loss", "sgdr_cycle", "sgdr_mult", "seq_scales",
    "time_steps", "inputs", "track", "label_smooth_eps",
})
# fmt: on


class CfgError(ValueError):
    """A problem in a `.cfg`/`.data` file (or a requested change) a user can fix."""

    def __init__(self, path: str | Path | None, line: int | None, problem: str, fix: str):
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        self.fix = fix
        where = self.path or ("<cfg text>" if line is not None else "")
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where + ': ' if where else ''}{problem}. Fix: {fix}")


@dataclass(frozen=True, slots=True)
class Option:
    """One `key=value` line. `value` is what darknet sees: all whitespace removed."""

    key: str
    value: str
    line: int  # 1-based


@dataclass(frozen=True, slots=True)
class _Line:
    kind: str  # "blank" | "comment" | "header" | "option"
    name: str = ""  # section name without brackets, or option key
    value: str = ""
    value_start: int = 0  # span of the written value inside the line (for patching)
    value_end: int = 0


def _split_lines(text: str) -> list[str]:
    # darknet's fgetl splits on '\n' only; str.splitlines would also split on \f, \x1c, ….
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _body(raw: str) -> str:
    return raw.rstrip("\n").rstrip("\r")


def _classify(raw: str, *, first: bool, sections: bool, path: str | None, no: int) -> _Line:
    body = _body(raw)
    if first and body.startswith(_BOM):
        body = " " + body[1:]  # keep offsets: the BOM is one char, so is the space
    squeezed = _WS.sub("", body)
    if not squeezed:
        return _Line("blank")
    if squeezed[0] in "#;":
        return _Line("comment")
    if squeezed[0] == "[" and sections:
        if not squeezed.endswith("]") or len(squeezed) < 3:
            raise CfgError(
                path,
                no,
                f"section header {_quoted(body)} is malformed",
                "write it alone on its line as [name], e.g. [net] or [convolutional]; "
                "put comments on their own line",
            )
        return _Line("header", name=squeezed[1:-1])
    eq = body.find("=")
    if eq < 0:
        raise CfgError(
            path,
            no,
            f"line {_quoted(body)} is neither key=value, a [section] nor a comment",
            "write key=value, or start the line with # to make it a comment",
        )
    key = _WS.sub("", body[:eq])
    value = _WS.sub("", body[eq + 1 :])
    if not key:
        raise CfgError(path, no, f"{_quoted(body)} has no key before '='", "write key=value")
    if not value:
        raise CfgError(
            path,
            no,
            f"{shown(key)}= has no value (darknet ignores such a line)",
            f"give {shown(key)} a value or delete the line",
        )
    start = eq + 1
    while body[start] in " \t":
        start += 1
    end = len(body.rstrip(" \t"))
    return _Line("option", name=key, value=value, value_start=start, value_end=end)


def _number_part(value: str) -> str:
    # atoi/atof stop at the first non-numeric char, so `random=1 # 0 if OOM` reads as 1.
    return re.split(r"[#;]", value, maxsplit=1)[0]


def _format(value: CfgValue) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise ValueError(f"a cfg value cannot contain a line break: {value!r}")
        return value
    return ",".join(_format(v) for v in value)


class _LineFile:
    """Lines of text plus where each option sits; shared by `Cfg` and `DataFile`."""

    _sections_allowed = False
    # .cfg values are numbers mostly: a patch keeps an inline comment after the value.
    # .data values are paths, where darknet takes '#' literally: a patch replaces it all.
    _keep_inline_comment = False

    def __init__(self, text: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._lines = _split_lines(text)
        self._parse()

    @property
    def _where(self) -> str | None:
        return str(self.path) if self.path is not None else None

    @property
    def text(self) -> str:
        """The file's text as it is now (byte-identical to the input when nothing changed)."""
        return "".join(self._lines)

    @property
    def has_bom(self) -> bool:
        return bool(self._lines) and self._lines[0].startswith(_BOM)

    @property
    def crlf(self) -> bool:
        return any(line.endswith("\r\n") for line in self._lines)

    def darknet_text(self) -> str:
        """The text with LF line ends and no BOM.

        pjreddie's strip() keeps '\\r', so a CRLF `[net]\\r` is not `[net]` and it stops with
        "First section must be [net]"; a BOM makes the first line an option outside any
        section. Job copies use this form, which every flavour reads the same way.
        """
        text = "".join(_body(line) + ("\n" if line.endswith("\n") else "") for line in self._lines)
        return text.removeprefix(_BOM)

    def save(self, path: str | Path | None = None, *, darknet_form: bool = False) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves half a cfg."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save to")
        write_text_atomic(target, self.darknet_text() if darknet_form else self.text)
        return target

    def _classified(self) -> list[_Line]:
        return [
            _classify(
                raw, first=i == 0, sections=self._sections_allowed, path=self._where, no=i + 1
            )
            for i, raw in enumerate(self._lines)
        ]

    def _parse(self) -> None:
        raise NotImplementedError

    def _replace_value(self, line_no: int, value: str) -> None:
        idx = line_no - 1
        raw = self._lines[idx]
        info = _classify(
            raw, first=idx == 0, sections=self._sections_allowed, path=self._where, no=line_no
        )
        body = _body(raw)
        end = info.value_end
        if self._keep_inline_comment:
            m = re.search(r"[#;]", body[info.value_start : info.value_end])
            if m is not None:
                end = len(body[: info.value_start + m.start()].rstrip(" \t"))
        self._lines[idx] = body[: info.value_start] + value + body[end:] + raw[len(body) :]

    def _insert_line(self, after_line_no: int, text: str) -> None:
        newline = "\r\n" if self.crlf else "\n"
        if after_line_no > 0 and not self._lines[after_line_no - 1].endswith("\n"):
            self._lines[after_line_no - 1] += newline
        self._lines.insert(after_line_no, text + newline)


@dataclass(frozen=True, slots=True)
class Section:
    """One `[name]` section: its options in file order, first line and last line."""

    name: str  # as written, without brackets: "net", "network", "conv", "yolo" …
    index: int  # 0-based position among the sections
    line: int  # line of the header
    last_line: int  # last line that holds one of its options (the header when none)
    options: tuple[Option, ...]
    path: str | None = None

    @property
    def kind(self) -> str:
        """The layer type darknet builds: aliases folded (`[conv]` → `convolutional`)."""
        return _SECTION_ALIASES.get(self.name, self.name)

    def get(self, key: str) -> Option | None:
        """The option darknet uses: the first one with this exact key."""
        return next((o for o in self.options if o.key == key), None)

    def all(self, key: str) -> list[Option]:
        return [o for o in self.options if o.key == key]

    def get_str(self, key: str, default: str) -> str:
        opt = self.get(key)
        return opt.value if opt is not None else default

    def get_int(self, key: str, default: int) -> int:
        opt = self.get(key)
        if opt is None:
            return default
        text = _number_part(opt.value)
        if _INT.fullmatch(text):
            return int(text)
        raise CfgError(
            self.path,
            opt.line,
            f"{key}={shown(opt.value)} in [{shown(self.name)}] is not a whole number",
            f"write a whole number, e.g. {key}={default if default > 0 else 1}",
        )

    def get_float(self, key: str, default: float) -> float:
        opt = self.get(key)
        if opt is None:
            return default
        text = _number_part(opt.value)
        if _FLOAT.fullmatch(text):
            return float(text)
        raise CfgError(
            self.path,
            opt.line,
            f"{key}={shown(opt.value)} in [{shown(self.name)}] is not a number",
            f"write a number, e.g. {key}={default!r}",
        )

    def get_ints(self, key: str) -> tuple[int, ...]:
        return tuple(int(x) for x in self._items(key, _INT, "whole numbers", "400,450"))

    def get_floats(self, key: str) -> tuple[float, ...]:
        return tuple(float(x) for x in self._items(key, _FLOAT, "numbers", ".1,.1"))

    def _items(self, key: str, pattern: re.Pattern[str], what: str, example: str) -> list[str]:
        opt = self.get(key)
        if opt is None:
            return []
        items = _number_part(opt.value).split(",")
        if all(pattern.fullmatch(x) for x in items):
            return items
        raise CfgError(
            self.path,
            opt.line,
            f"{key}={shown(opt.value)} in [{shown(self.name)}] is not a list of {what}",
            f"write {what} separated by commas, e.g. {key}={example}",
        )


@dataclass(frozen=True, slots=True)
class DetectionLayer:
    """A `[yolo]`, `[Gaussian_yolo]` or `[region]` section and the conv that feeds it.

    Values are darknet's effective ones (its defaults when a key is absent: classes=20,
    num=1, random=0, coords=4). `filters` is the `filters=` of the section right before,
    None when that section is not a [convolutional]; `filters_line` is None when the
    conv has no `filters=` line (darknet's default 1).
    """

    kind: str
    section: int
    line: int
    classes: int
    random: float
    num: int
    mask: tuple[int, ...]
    anchors: tuple[float, ...]
    coords: int
    filters: int | None
    filters_line: int | None
    conv_section: int | None

    @property
    def mask_count(self) -> int:
        """Boxes predicted per cell: the mask's length, or `num` without a mask."""
        if self.kind == "region":
            return self.num
        return len(self.mask) if self.mask else self.num

    def filters_for(self, classes: int) -> int:
        """What the feeding conv's `filters=` must be for `classes` classes."""
        if self.kind == "region":
            return self.num * (classes + self.coords + 1)
        extra = 9 if self.kind == "Gaussian_yolo" else 5  # box (4 or 8 with sigmas) + objectness
        return self.mask_count * (classes + extra)

    @property
    def expected_filters(self) -> int:
        return self.filters_for(self.classes)


class Cfg(_LineFile):
    """A darknet network `.cfg`, kept line by line so patches touch only changed lines."""

    _sections_allowed = True
    _keep_inline_comment = True
    sections: tuple[Section, ...]

    @classmethod
    def load(cls, path: str | Path) -> Cfg:
        return cls(_read_text(path), path)

    def _parse(self) -> None:
        sections: list[Section] = []
        name: str | None = None
        header = 0
        last = 0
        options: list[Option] = []

        def close() -> None:
            if name is not None:
                sections.append(
                    Section(name, len(sections), header, last, tuple(options), self._where)
                )

        for no, info in enumerate(self._classified(), start=1):
            if info.kind == "header":
                close()
                name, header, last, options = info.name, no, no, []
            elif info.kind == "option":
                if name is None:
                    raise CfgError(
                        self._where,
                        no,
                        f"{shown(info.name)}= comes before any [section]",
                        "start the file with [net] and put this option under the section "
                        "it belongs to",
                    )
                options.append(Option(info.name, info.value, no))
                last = no
        close()
        if not sections:
            raise CfgError(
                self._where, 1, "the file has no sections", "a darknet cfg starts with [net]"
            )
        if sections[0].kind != "net":
            raise CfgError(
                self._where,
                sections[0].line,
                f"the first section is [{shown(sections[0].name)}], darknet needs [net] or "
                "[network] first (it stops with 'First section must be [net] or [network]')",
                "put the [net] section (batch, subdivisions, width, height, …) at the top",
            )
        self.sections = tuple(sections)

    # -- [net] ------------------------------------------------------------------------------
    @property
    def net(self) -> Section:
        return self.sections[0]

    @property
    def batch(self) -> int:
        return self._positive("batch", 1)

    @property
    def subdivisions(self) -> int:
        return self._positive("subdivisions", 1)

    @property
    def mini_batch(self) -> int:
        """Images per GPU pass: `batch // subdivisions` (darknet's integer division)."""
        mini = self.batch // self.subdivisions
        if mini == 0:
            opt = self.net.get("subdivisions")
            raise CfgError(
                self._where,
                opt.line if opt else self.net.line,
                f"subdivisions={self.subdivisions} is larger than batch={self.batch}, which "
                "leaves 0 images per mini-batch",
                f"set subdivisions to a divisor of batch, at most {self.batch}",
            )
        return mini

    @property
    def max_batches(self) -> int:
        return self.net.get_int("max_batches", 0)

    @property
    def width(self) -> int:
        return self.net.get_int("width", 0)

    @property
    def height(self) -> int:
        return self.net.get_int("height", 0)

    @property
    def burn_in(self) -> int:
        return self.net.get_int("burn_in", 0)

    @property
    def learning_rate(self) -> float:
        return self.net.get_float("learning_rate", 0.001)

    @property
    def policy(self) -> str:
        opt = self.net.get("policy")
        if opt is None:
            return "constant"
        if re.search(r"[#;]", opt.value):
            raise CfgError(
                self._where,
                opt.line,
                f"policy={shown(opt.value)}: darknet reads the comment as part of the name and "
                "falls back to a constant learning rate",
                "move the comment to its own line",
            )
        return opt.value

    @property
    def steps(self) -> tuple[int, ...]:
        return self.net.get_ints("steps")

    @property
    def scales(self) -> tuple[float, ...]:
        return self.net.get_floats("scales")

    def _positive(self, key: str, default: int) -> int:
        value = self.net.get_int(key, default)
        if value <= 0:
            opt = self.net.get(key)
            raise CfgError(
                self._where,
                opt.line if opt else self.net.line,
                f"{key}={value} in [net] must be at least 1",
                f"set {key} to a positive number",
            )
        return value

    # -- detection layers -------------------------------------------------------------------
    def detection_layers(self) -> list[DetectionLayer]:
        """Every [yolo]/[Gaussian_yolo]/[region] in file order."""
        layers = []
        for s in self.sections:
            if s.kind not in _DETECTION_KINDS:
                continue
            prev = self.sections[s.index - 1] if s.index > 0 else None
            conv = prev if prev is not None and prev.kind == "convolutional" else None
            f_opt = conv.get("filters") if conv is not None else None
            layers.append(
                DetectionLayer(
                    kind=s.kind,
                    section=s.index,
                    line=s.line,
                    classes=s.get_int("classes", 20),
                    random=s.get_float("random", 0.0),
                    num=s.get_int("num", 1),
                    mask=s.get_ints("mask"),
                    anchors=s.get_floats("anchors"),
                    coords=s.get_int("coords", 4),
                    filters=conv.get_int("filters", 1) if conv is not None else None,
                    filters_line=f_opt.line if f_opt is not None else None,
                    conv_section=conv.index if conv is not None else None,
                )
            )
        return layers

    # -- patching ---------------------------------------------------------------------------
    def set_option(self, section: int, key: str, value: CfgValue) -> None:
        """Set `key` in section number `section` (every copy of a repeated key), or add it."""
        if not key or _WS.search(key) or "=" in key:
            raise ValueError(f"not a cfg key: {key!r}")
        text = _format(value)
        sec = self.sections[section]
        found = sec.all(key)
        for opt in found:
            self._replace_value(opt.line, text)
        if not found:
            self._insert_line(sec.last_line, f"{key}={text}")
        self._parse()

    def set_net(self, key: str, value: CfgValue) -> None:
        self.set_option(0, key, value)

    def set_subdivisions(self, value: int) -> None:
        _check_positive("subdivisions", value)
        self.set_net("subdivisions", value)

    def set_max_batches(self, value: int) -> None:
        _check_positive("max_batches", value)
        self.set_net("max_batches", value)

    def set_size(self, width: int, height: int) -> None:
        _check_positive("width", width)
        _check_positive("height", height)
        self.set_net("width", width)
        self.set_net("height", height)

    def set_random(self, value: float) -> None:
        """Set `random=` in every detection layer (random=0: no multi-scale resizing)."""
        for layer in self.detection_layers():
            self.set_option(layer.section, "random", value)

    def set_classes(self, classes: int) -> None:
        """Set `classes=` in every detection layer and `filters=` of the conv before each."""
        _check_positive("classes", classes)
        layers = self.detection_layers()
        for layer in layers:
            if layer.conv_section is None:
                prev = self.sections[layer.section - 1]
                raise CfgError(
                    self._where,
                    layer.line,
                    f"the section before this [{layer.kind}] is [{prev.name}] (line {prev.line}),"
                    " not a [convolutional] whose filters= could be set",
                    f"edit the cfg by hand: the layer feeding [{layer.kind}] must output "
                    f"{layer.filters_for(classes)} channels for {classes} classes",
                )
        for layer in layers:
            assert layer.conv_section is not None
            self.set_option(layer.conv_section, "filters", layer.filters_for(classes))
            self.set_option(layer.section, "classes", classes)

    def apply(self, changes: CfgChanges) -> None:
        """Apply `{key: value}` changes.

        `classes` → `set_classes` (classes and filters), `random` → every detection layer,
        any other key → [net]. A [net] key that is neither in the file nor in
        `KNOWN_NET_KEYS` is refused with the closest known key as a hint.
        """
        for key, value in changes.items():
            if key == "classes":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise CfgError(
                        None,
                        None,
                        f"classes={value!r} is not a whole number",
                        "give the number of classes, e.g. classes: 2",
                    )
                self.set_classes(value)
            elif key == "random":
                if not isinstance(value, int | float):
                    raise CfgError(
                        None,
                        None,
                        f"random={value!r} is not a number",
                        "use random: 0 or random: 1",
                    )
                self.set_random(value)
            else:
                if key not in KNOWN_NET_KEYS and self.net.get(key) is None:
                    close = difflib.get_close_matches(key, sorted(KNOWN_NET_KEYS), n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise CfgError(
                        self._where,
                        self.net.line,
                        f"unknown [net] key {key!r} in the requested changes (darknet would "
                        "ignore it)",
                        f"{hint}use a [net] key darknet reads",
                    )
                self.set_net(key, value)


def _check_positive(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CfgError(
            None,
            None,
            f"{key}={value!r} must be a whole number ≥ 1",
            f"give {key} a positive whole number",
        )


class DataFile(_LineFile):
    """A darknet `.data` file: `key = value` lines, comments kept.

    Paths are taken literally after whitespace removal, as darknet does: `#` in the middle
    of a value is part of the value, and a path cannot contain spaces.
    """

    options: tuple[Option, ...]

    @classmethod
    def load(cls, path: str | Path) -> DataFile:
        return cls(_read_text(path), path)

    def _parse(self) -> None:
        self.options = tuple(
            Option(info.name, info.value, no)
            for no, info in enumerate(self._classified(), start=1)
            if info.kind == "option"
        )

    def get(self, key: str) -> Option | None:
        return next((o for o in self.options if o.key == key), None)

    def value(self, key: str) -> str | None:
        opt = self.get(key)
        return opt.value if opt is not None else None

    @property
    def classes(self) -> int | None:
        opt = self.get("classes")
        if opt is None:
            return None
        if not _INT.fullmatch(opt.value) or int(opt.value) <= 0:
            raise CfgError(
                self._where,
                opt.line,
                f"classes={shown(opt.value)} is not a positive number",
                "set classes to the number of lines in the names file",
            )
        if int(opt.value) > MAX_CLASSES:
            raise CfgError(
                self._where,
                opt.line,
                f"classes={shown(opt.value)} is more than {MAX_CLASSES}, more classes than any "
                "dataset has (a typo?)",
                "set classes to the number of lines in the names file",
            )
        return int(opt.value)

    @property
    def train(self) -> str | None:
        return self.value("train")

    @property
    def valid(self) -> str | None:
        return self.value("valid")

    @property
    def names(self) -> str | None:
        return self.value("names")

    @property
    def backup(self) -> str | None:
        return self.value("backup")

    @property
    def results(self) -> str | None:
        return self.value("results")

    @property
    def eval(self) -> str | None:
        return self.value("eval")

    def set(self, key: str, value: CfgValue) -> None:
        """Set `key` (every copy of a repeated key), or append it at the end."""
        if not key or _WS.search(key) or "=" in key:
            raise ValueError(f"not a .data key: {key!r}")
        text = _format(value)
        found = [o for o in self.options if o.key == key]
        for opt in found:
            self._replace_value(opt.line, text)
        if not found:
            self._insert_line(len(self._lines), f"{key} = {text}")
        self._parse()


def cfg_hash(text: str) -> str:
    """sha256 of what darknet reads from a cfg: comments, blank lines, whitespace and inline
    comments after numbers ignored, section aliases folded (`[conv]` = `[convolutional]`)."""
    parts = []
    for raw in _split_lines(text.removeprefix(_BOM)):
        squeezed = _WS.sub("", raw)
        if not squeezed or squeezed[0] in "#;":
            continue
        if squeezed[0] == "[" and squeezed.endswith("]"):
            name = squeezed[1:-1]
            parts.append(f"[{_SECTION_ALIASES.get(name, name)}]")
        else:
            key, _, value = squeezed.partition("=")
            parts.append(f"{key}={_number_part(value)}")
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def cfg_base(cfg_path: str | Path) -> str:
    """darknet's name stem for weights: the file name cut at the FIRST `.` (facts §4)."""
    base = Path(cfg_path).name.split(".", 1)[0]
    if not base:
        raise CfgError(
            cfg_path,
            None,
            "the cfg file name starts with '.', so darknet would name the weights '_last.weights'",
            "rename the file, e.g. to model.cfg",
        )
    return base


# A cfg or .data file is a few KB (yolov4's cfg is 12 KB); a device, a pipe or a file of
# gigabytes given by mistake must not be read to the end.
MAX_FILE_BYTES = 16 << 20


def _read_text(path: str | Path) -> str:
    try:
        with Path(path).open("rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise CfgError(
                    path, None, "is not a regular file (a directory, device or pipe)",
                    "give the path of the file itself",
                )  # fmt: skip
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise CfgError(
                path, None, f"is larger than {MAX_FILE_BYTES >> 20} MiB, which no darknet "
                "cfg or .data file is", "check the path: is this the right file?",
            )  # fmt: skip
    except FileNotFoundError:
        raise CfgError(path, None, "file not found", "check the path") from None
    except OSError as e:
        raise CfgError(
            path, None, f"cannot read the file ({e.strerror})", "check the path and its permissions"
        ) from None
    # surrogateescape: any byte round-trips, so an odd byte in a comment never breaks a patch.
    return raw.decode("utf-8", "surrogateescape")
