"""Job spec models: what a user may write in a job file, its defaults and its limits.

Units (DESIGN "Conventions"): mAP-valued settings are fractions in [0, 1]; patience, windows
and intervals are in iterations; durations are strings like `1h30m`, held as seconds.

Adding a section (e.g. `notify`): write a `Section` subclass and add one field to `JobSpec`;
error locations, did-you-mean, `null` handling and the JSON Schema follow from the models.
Secrets go in `SecretStr` fields, which `model_dump(mode="json")` masks.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from supervisor.darknet.command import cpu_problem, extra_args_problems
from supervisor.spec.notify import NotifyTargets
from supervisor.spec.yamlsource import cross_field, shorten
from supervisor.training.events import FLAVOURS, Flavour
from supervisor.training.policy import Diverged, NotLearning, Overfit, Plateau

# --- Defaults. The stop-rule numbers belong to the rule objects in `training/policy.py`
# --- (chosen by replaying the real curves: bench/policy.py, README "Why these defaults");
# --- they are read from there so that the spec and the policy cannot disagree.

# Every flavour saves weights only every 100 iterations (`_last`/`.backup`, facts §4) and an
# evaluation scores a saved snapshot, so evaluation points are multiples of this.
SAVE_INTERVAL = 100
# 500 gives four evaluations inside the default plateau patience and lets the overfit rule's
# three confirmations span 1000 iterations, while a `detector valid` pass over a large
# validation list every 100 iterations would cost a noticeable share of training time.
EVALUATION_EVERY = 500
# Bounds that keep every number finite and meaningful: darknet counts iterations in a C int;
# a duration beyond a year or a kept-snapshot count in the thousands is a typo, and an
# unbounded one once became infinity and then `nan` in the job dir's job.yaml.
MAX_ITERATION = 2**31 - 1
MAX_DURATION = 365 * 86400.0
MAX_TOP_K = 100
MAX_GPU_INDEX = 63
IOU_THRESHOLD = 0.5  # VOC-style AP@0.5: what darknet's own -map reports (facts §2)
MIN_ITERATIONS = 0  # no rule may stop before this iteration; 0 = rules apply from the start
_PLATEAU, _OVERFIT, _NOT_LEARNING, _DIVERGED = Plateau(), Overfit(), NotLearning(), Diverged()
PLATEAU_PATIENCE = _PLATEAU.patience  # iterations without an mAP gain of at least min_delta
PLATEAU_MIN_DELTA = _PLATEAU.min_delta  # smaller gains count as no gain
PLATEAU_PATIENCE_SHARE = _PLATEAU.patience_share  # ... or this share of the run, if less
PLATEAU_AFTER_LAST_STEP_SHARE = _PLATEAU.after_last_step_share  # after the last rate step
PLATEAU_VALID_K = _PLATEAU.valid_k  # the gain that counts grows on a small valid split
OVERFIT_DROP = _OVERFIT.drop  # mAP this far below the best counts as a drop
OVERFIT_CONFIRM = _OVERFIT.confirm  # evaluations in a row below best - drop
OVERFIT_SPAN = _OVERFIT.span  # ... spanning at least this many iterations
OVERFIT_VALID_K = _OVERFIT.valid_k  # a drop within a small valid split's noise is none
NOT_LEARNING_AFTER = _NOT_LEARNING.after  # give the network this long before judging it
NOT_LEARNING_MAP_BELOW = _NOT_LEARNING.map_below  # mAP still under this means not learning
NOT_LEARNING_LOSS_WINDOW = _NOT_LEARNING.window  # iterations a falling avg loss is looked for in
NOT_LEARNING_AFTER_SHARE = _NOT_LEARNING.after_share  # ... or this share of max_batches if sooner
NOT_LEARNING_AFTER_MIN = _NOT_LEARNING.after_min  # ... but never before this iteration
NOT_LEARNING_MIN_LOSS_DROP = _NOT_LEARNING.min_loss_drop  # a fall this steep: still descending
DIVERGED_LOSS_FACTOR = _DIVERGED.loss_factor  # avg loss above this × its minimum: diverged
DIVERGED_NAN = _DIVERGED.nan  # NaN/inf loss (darknet prints -nan) never recovers

# --- Field types


def _map_fraction(value: float) -> float:
    if 1 < value <= 100:
        raise PydanticCustomError(
            "percent",
            "mAP settings are fractions: write {fraction} for {percent} %",
            {"fraction": f"{value / 100:g}", "percent": f"{value:g}"},
        )
    if not 0 <= value <= 1:
        raise PydanticCustomError("fraction", "must be a fraction in [0, 1] (85 % mAP is 0.85)")
    return value


def _iou_fraction(value: float) -> float:
    if 1 < value <= 100:
        raise PydanticCustomError(
            "percent",
            "IoU thresholds are fractions: write {fraction} for {percent} %",
            {"fraction": f"{value / 100:g}", "percent": f"{value:g}"},
        )
    if not 0 < value < 1:
        # A hit needs an IoU above the threshold (the evaluator and darknet alike) and no IoU
        # exceeds 1, so 1 would score every detection a miss.
        raise PydanticCustomError("fraction", "must be a fraction in (0, 1), e.g. 0.5")
    return value


MapFraction = Annotated[StrictFloat, AfterValidator(_map_fraction)]
IouFraction = Annotated[StrictFloat, AfterValidator(_iou_fraction)]

_NUM = r"\d+(?:\.\d+)?"
DURATION_PATTERN = rf"^\s*(?:{_NUM}d)?\s*(?:{_NUM}h)?\s*(?:{_NUM}m)?\s*(?:{_NUM}s)?\s*$"
_DURATION_RE = re.compile(
    rf"(?:(?P<d>{_NUM})d)?\s*(?:(?P<h>{_NUM})h)?\s*(?:(?P<m>{_NUM})m)?\s*(?:(?P<s>{_NUM})s)?"
)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_DURATION_FORMS = "45s, 90m, 12h, 2d or 1h30m (units d h m s, largest first)"


def parse_duration(text: str) -> float:
    """Seconds in `12h`, `90m`, `1h30m`, `45s`, `2d`; ValueError naming the allowed forms."""
    match = _DURATION_RE.fullmatch(text.strip().lower())
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"`{shorten(text)}` is not a duration: write {_DURATION_FORMS}")
    return sum(float(v) * _UNIT_SECONDS[u] for u, v in match.groupdict().items() if v)


def format_duration(seconds: float) -> str:
    """The shortest `parse_duration` form of `seconds` (`5400` → `1h30m`)."""
    rest, parts = seconds, []
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count:g}{unit}")
    if rest or not parts:
        parts.append(f"{round(rest, 3):g}s")
    return "".join(parts)


def _duration_error(message: str) -> PydanticCustomError:
    # Through ctx, so that braces in what the user wrote are not read as a template.
    return PydanticCustomError("duration", "{message}", {"message": message})


def _duration(value: object, info: ValidationInfo) -> object:
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise _duration_error(str(exc)) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # In YAML a bare number has no unit (seconds? hours?); in Python it is seconds.
        if (info.context or {}).get("yaml"):
            raise _duration_error(f"a bare number has no unit: write {_DURATION_FORMS}")
        seconds = float(value)
    else:
        raise _duration_error(f"must be a duration: write {_DURATION_FORMS}")
    if seconds <= 0:
        raise _duration_error("must be longer than 0s")
    if not seconds <= MAX_DURATION:  # also NaN and inf: 400 digits of hours are inf seconds
        raise _duration_error(
            f"must be at most {format_duration(MAX_DURATION)} (a year); null means no limit"
        )
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    PlainSerializer(lambda seconds: format_duration(seconds), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN, "examples": ["12h", "1h30m"]}),
]

# --- Models


class Section(BaseModel):
    """A mapping in the job file: frozen, unknown keys rejected, empty (`key:`) = defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        return {} if data is None else data


class Rule(Section):
    """A stop rule: `false`/`null` or `enabled: false` switch it off, `true` = defaults."""

    enabled: StrictBool = Field(default=True, description="false switches this rule off")

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, data: Any) -> Any:
        if data is None or data is False:
            return {"enabled": False}
        return {} if data is True else data


class DarknetSpec(Section):
    """Which darknet runs, on which files and GPUs."""

    binary: str = Field(
        default="darknet",
        min_length=1,
        description="darknet executable: a path, or a bare name the daemon config resolves",
    )
    flavour: Literal["auto", Flavour] = Field(
        default="auto", description="darknet flavour; auto = detected from the binary's output"
    )
    data: Path = Field(description="the .data file: classes, train, valid, names, backup")
    cfg: Path = Field(description="the network .cfg file")
    weights: Path | None = Field(
        default=None, description="pretrained/initial weights; null = none"
    )
    gpus: tuple[StrictInt, ...] = Field(
        default=(0,), description="GPU indices, e.g. [0, 1]; [] = train on the CPU"
    )
    extra_args: tuple[str, ...] = Field(
        default=(), description="extra darknet flags, one list item each"
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        # darknet's own `-gpus 0,1` form and a single index are unambiguous, so accept them.
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", value):
            return [int(v) for v in value.split(",")]
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus_valid(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if any(v < 0 for v in value) or len(set(value)) != len(value):
            raise PydanticCustomError("gpus", "GPU indices must be distinct and ≥ 0")
        flavour = info.data.get("flavour")
        if not value and flavour in FLAVOURS:
            # What no build of the flavour can do; `trainsup check` asks again of the binary.
            problem = cpu_problem(flavour)
            if problem is not None:
                raise PydanticCustomError(
                    "gpus_cpu", "[] asks for the CPU, but {problem}", {"problem": problem}
                )
        return value

    @field_validator("extra_args", mode="before")
    @classmethod
    def _args_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            # Splitting a string would need shell rules; argv is built from a list only.
            raise PydanticCustomError(
                "args_string", "write a list, one argument per item: [-mjpeg_port, '8090']"
            )
        return value

    @field_validator("extra_args")
    @classmethod
    def _args_allowed(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # The argv builder's table decides (one truth); under `auto` a flag must be one some
        # flavour takes, and `trainsup check` checks it again against the flavour found.
        flavour = info.data.get("flavour")
        problems = extra_args_problems(flavour if flavour in FLAVOURS else None, value)
        findings = [(str(i), message) for i, message in problems]
        if findings:
            raise cross_field(findings)
        return value

    @field_validator("data", "cfg", "weights", mode="before")
    @classmethod
    def _path_given(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            # Path("") would silently mean the current directory.
            raise PydanticCustomError("empty_path", "must not be empty: write the file's path")
        return value

    @model_validator(mode="after")
    def _hankai_weights(self) -> DarknetSpec:
        # facts §8: hank-ai takes an argument as weights only by its .weights extension.
        if self.flavour == "hankai" and self.weights and self.weights.suffix != ".weights":
            message = (
                "hank-ai darknet recognises weights only by the .weights extension and "
                "silently ignores other files: link or rename it to *.weights"
            )
            raise cross_field([("weights", message)])
        return self


class BudgetSpec(Section):
    """Hard limits: whichever is reached first stops the run (after the next save)."""

    max_iterations: Annotated[StrictInt, Field(gt=0, le=MAX_ITERATION)] | None = Field(
        default=None, description="stop at this iteration; null = the cfg's max_batches"
    )
    max_time: Duration | None = Field(
        default=None, description="wall-clock limit, e.g. 12h, 90m, 1h30m; null = none"
    )


class EvaluationSpec(Section):
    """How and how often mAP is measured."""

    every: Annotated[StrictInt, Field(gt=0, le=MAX_ITERATION, multiple_of=SAVE_INTERVAL)] = Field(
        default=EVALUATION_EVERY,
        description="iterations between the evaluations the supervisor runs itself (darknet's "
        "-map keeps its own interval); a multiple of 100 because weights are saved only "
        "every 100 iterations",
    )
    iou_threshold: IouFraction = Field(
        default=IOU_THRESHOLD, description="IoU a detection needs to count as a hit, as a fraction"
    )
    source: Literal["auto", "darknet", "supervisor"] = Field(
        default="auto",
        description="who measures mAP; auto = darknet's -map when the flavour prints it, "
        "else the supervisor (detector valid on a snapshot)",
    )


def _absolute_when_alone(data: Any, key: str, share: str) -> Any:
    """A rule's iterations written alone (`patience`, `after`: job files from before the share
    of the run existed) mean that many iterations on any run length: the share is turned off,
    here in the parsed data so that job.yaml round-trips it."""
    if isinstance(data, dict) and key in data and share not in data:
        return {**data, share: None}
    return data


class PlateauRule(Rule):
    """Stop when mAP has not improved for a while."""

    patience: Annotated[StrictInt, Field(gt=0)] = Field(
        default=PLATEAU_PATIENCE,
        description="iterations without a gain of min_delta before stopping; with "
        "patience_share, the most the share may give",
    )
    min_delta: MapFraction = Field(
        default=PLATEAU_MIN_DELTA, description="smallest mAP gain that counts, as a fraction"
    )
    patience_share: Annotated[StrictFloat, Field(gt=0, le=1)] | None = Field(
        default=PLATEAU_PATIENCE_SHARE,
        description="the patience as this share of (max_batches − burn_in), at least 300 and "
        "at most `patience`; null = `patience` iterations on any run (also when `patience` "
        "is set and this is not)",
    )
    after_last_step_share: Annotated[StrictFloat, Field(gt=0, le=1)] | None = Field(
        default=PLATEAU_AFTER_LAST_STEP_SHARE,
        description="once an evaluation came after the cfg's last rate step: the patience is "
        "this share of the iterations left after that step (at least 100); null = off",
    )
    valid_k: Annotated[StrictFloat, Field(ge=0, le=5)] = Field(
        default=PLATEAU_VALID_K,
        description="the gain that counts is at least this many times the sampling σ of an "
        "mAP on the valid split's N objects, √(p(1−p)/N) (N = TP + FN of the evaluations); "
        "min_delta stays the floor; 0 = off",
    )

    @model_validator(mode="before")
    @classmethod
    def _patience_alone(cls, data: Any) -> Any:
        return _absolute_when_alone(data, "patience", "patience_share")


class OverfitRule(Rule):
    """Stop when mAP falls below its best and stays there."""

    drop: Annotated[MapFraction, Field(gt=0)] = Field(
        default=OVERFIT_DROP, description="mAP this far below the best counts as a drop (fraction)"
    )
    confirm: Annotated[StrictInt, Field(ge=1)] = Field(
        default=OVERFIT_CONFIRM,
        description="evaluations in a row below best - drop before stopping",
    )
    span: Annotated[StrictInt, Field(ge=0)] = Field(
        default=OVERFIT_SPAN,
        description="iterations those evaluations must span (noisy frequent evaluations)",
    )
    valid_k: Annotated[StrictFloat, Field(ge=0, le=10)] = Field(
        default=OVERFIT_VALID_K,
        description="the drop that counts is at least this many times the sampling σ of an "
        "mAP on the valid split's N objects, √(p(1−p)/N); `drop` stays the floor; 0 = off",
    )


class NotLearningRule(Rule):
    """Stop a run whose mAP stays near zero."""

    after: Annotated[StrictInt, Field(gt=0)] = Field(
        default=NOT_LEARNING_AFTER, description="iteration from which the rule may fire"
    )
    map_below: MapFraction = Field(
        default=NOT_LEARNING_MAP_BELOW, description="mAP under this (fraction) means not learning"
    )
    loss_window: Annotated[StrictInt, Field(gt=0)] = Field(
        default=NOT_LEARNING_LOSS_WINDOW,
        description="iterations over which a falling loss is looked for",
    )
    after_share: Annotated[StrictFloat, Field(gt=0, le=1)] | None = Field(
        default=NOT_LEARNING_AFTER_SHARE,
        description="judge from burn_in + this share of (max_batches − burn_in) when that "
        "comes before `after`; null = from `after` only (also when `after` is set and this "
        "is not)",
    )
    after_min: Annotated[StrictInt, Field(ge=0)] = Field(
        default=NOT_LEARNING_AFTER_MIN,
        description="never judge before this iteration, however short the run",
    )
    min_loss_drop: Annotated[StrictFloat, Field(ge=0, lt=1)] = Field(
        default=NOT_LEARNING_MIN_LOSS_DROP,
        description="the loss still falls well (wait) while the latest half of loss_window is "
        "this much lower (fraction) than the half before",
    )

    @model_validator(mode="before")
    @classmethod
    def _after_alone(cls, data: Any) -> Any:
        return _absolute_when_alone(data, "after", "after_share")


class DivergedRule(Rule):
    """Stop a run whose loss explodes."""

    loss_factor: Annotated[StrictFloat, Field(gt=1)] = Field(
        default=DIVERGED_LOSS_FACTOR,
        description="avg loss risen above this × a minimum reached before its last 100 "
        "iterations, and staying there, means diverged",
    )
    nan: StrictBool = Field(default=DIVERGED_NAN, description="a NaN/inf loss means diverged")


class StopSpec(Section):
    """When to stop before the budget: each rule can be switched off with `false`."""

    min_iterations: Annotated[StrictInt, Field(ge=0, le=MAX_ITERATION)] = Field(
        default=MIN_ITERATIONS, description="no rule stops the run before this iteration"
    )
    plateau: PlateauRule = Field(default_factory=PlateauRule)
    overfit: OverfitRule = Field(default_factory=OverfitRule)
    not_learning: NotLearningRule = Field(default_factory=NotLearningRule)
    diverged: DivergedRule = Field(default_factory=DivergedRule)
    target_map: Annotated[MapFraction, Field(gt=0)] | None = Field(
        default=None, description="stop once mAP reaches this fraction; null = no target"
    )


class RetainSpec(Section):
    """Which weights are kept in <job>/kept/."""

    best: StrictBool = Field(default=True, description="keep the weights with the best mAP")
    last: StrictBool = Field(default=True, description="keep the last saved weights")
    top_k: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_K)] = Field(
        default=0, description="also keep the k best evaluated snapshots; 0 = none"
    )


class ChecksSpec(Section):
    """Dataset-check warnings this job accepts on purpose, each with the reason."""

    accept: dict[str, Annotated[str, Field(min_length=3, max_length=300)]] = Field(
        default_factory=dict,
        description="check code → why it does not apply to this job (e.g. a short demo cfg); "
        "the finding is then shown as a note with that reason. Errors cannot be accepted",
    )


# A relaunch is a step of the out-of-memory ladder, a resume or a stall recovery; six cover
# subdivisions ×2 three times (e.g. 8 → 64), random=0, dropping -map and one retry, while a
# cfg that fails every way cannot restart for ever.
MAX_RELAUNCHES = 6
MAX_RELAUNCHES_LIMIT = 100
# The share of a GPU's free memory kept free when the memory model picks subdivisions: the
# model's predictions are off by a few percent (cuDNN workspace, the allocator), and other
# processes may allocate while darknet starts.
MEMORY_HEADROOM = 0.1


def _share(value: float) -> float:
    if 1 <= value <= 100:
        raise PydanticCustomError(
            "percent",
            "headroom is a fraction of the free memory: write {fraction} for {percent} %",
            {"fraction": f"{value / 100:g}", "percent": f"{value:g}"},
        )
    if not 0 <= value < 1:
        raise PydanticCustomError(
            "fraction", "must be a fraction in [0, 1) of the free memory (0.1 = keep 10 % free)"
        )
    return value


class MemorySpec(Section):
    """What the supervisor may do when the GPU runs out of memory (DESIGN "Decisions" 5)."""

    max_relaunches: Annotated[StrictInt, Field(ge=0, le=MAX_RELAUNCHES_LIMIT)] = Field(
        default=MAX_RELAUNCHES,
        description="relaunches a job may have (out-of-memory steps, stall recoveries, "
        "resumes) before it fails with its report; 0 = none",
    )
    allow_resize: StrictBool = Field(
        default=False,
        description="after the other steps, lower width/height by 32 per relaunch (this "
        "changes what the network sees: small objects get harder to detect)",
    )
    tune: StrictBool = Field(
        default=False,
        description="lower subdivisions for speed when the first iterations leave much "
        "memory unused (the memory model decides)",
    )
    headroom: Annotated[StrictFloat, AfterValidator(_share)] = Field(
        default=MEMORY_HEADROOM,
        description="share of the GPU's free memory kept free when subdivisions are picked "
        "before a launch, as a fraction",
    )


_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class JobSpec(Section):
    """One training job. From `load_spec`/`parse_spec` its paths are absolute (relative ones
    resolved against the job file's folder); `written(path)` gives one as the user wrote it."""

    name: str = Field(description="job name, used in directory names: [A-Za-z0-9._-], 1-64")
    darknet: DarknetSpec = Field(description="which darknet runs, on which files and GPUs")
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    stop: StopSpec = Field(default_factory=StopSpec)
    retain: RetainSpec = Field(default_factory=RetainSpec)
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    notify: NotifyTargets = Field(
        default=(), description="chat/webhook targets told about this job (docs/notifications.md)"
    )

    _written: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value) or set(value) == {"."}:
            raise PydanticCustomError(
                "job_name",
                "must be 1-64 characters from A-Z a-z 0-9 . _ - (it names directories), "
                "and not only dots",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobSpec:
        findings: list[tuple[str, str]] = []
        if self.darknet.flavour == "pjreddie" and self.evaluation.source == "darknet":
            # facts §2: only AlexeyAB and hank-ai have -map.
            findings.append(
                (
                    "evaluation.source",
                    "pjreddie darknet has no -map, so it prints no mAP: "
                    "use `supervisor` (or `auto`, which picks it)",
                )
            )
        diverged = self.stop.diverged
        if diverged.enabled and not math.isfinite(diverged.loss_factor):
            findings.append(
                (
                    "stop.diverged.loss_factor",
                    "must be a finite number (e.g. 10): an infinite factor silently switches "
                    "the loss-growth check off; to switch the rule off write `diverged: false`",
                )
            )
        huge = [g for g in self.darknet.gpus if g > MAX_GPU_INDEX]
        if huge:
            findings.append(
                (
                    "darknet.gpus",
                    f"GPU index {huge[0]} is above {MAX_GPU_INDEX}: GPUs are numbered from 0 "
                    "as `nvidia-smi -L` lists them",
                )
            )
        cap = self.budget.max_iterations
        if cap is not None and self.stop.min_iterations > cap:
            findings.append(
                (
                    "stop.min_iterations",
                    f"is above budget.max_iterations ({cap}), so no stop rule could ever act: "
                    "lower it or raise the budget",
                )
            )
        if findings:
            raise cross_field(findings)
        return self

    @model_validator(mode="after")
    def _files(self, info: ValidationInfo) -> JobSpec:
        # Only where the caller asks (`check_files=True`: check and run): a job dir's
        # job.yaml must stay readable after the initial weights are gone.
        weights = self.darknet.weights
        if weights is None or not (info.context or {}).get("check_files"):
            return self
        if weights.is_dir():
            message = "is a directory: give the path of a .weights file (or null for none)"
        elif not weights.exists():
            message = (
                f"no such file ({weights}): fix the path (relative paths are taken from the "
                "job file's folder), or write null to train from scratch"
            )
        else:
            return self
        raise cross_field([("darknet.weights", message)])

    def written(self, path: str) -> str:
        """The text the user wrote for a path key (`darknet.cfg`), before resolving."""
        if path in self._written:
            return self._written[path]
        value: Any = self
        for part in path.split("."):
            value = getattr(value, part)
        return str(value)
