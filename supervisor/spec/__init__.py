"""The job spec: a user's YAML job file, validated into frozen models.

Every problem in a file is reported at once, each with file, line, column, key path, the value
as written and what is allowed (`SpecError`); nothing a user can write ends in a traceback.
"""

from supervisor.spec.job import (
    BudgetSpec,
    DarknetSpec,
    DivergedRule,
    EvaluationSpec,
    JobSpec,
    NotLearningRule,
    OverfitRule,
    PlateauRule,
    RetainSpec,
    StopSpec,
    format_duration,
    parse_duration,
)
from supervisor.spec.jobfile import json_schema, load_spec, parse_spec, redacted_yaml
from supervisor.spec.yamlsource import Problem, SpecError

__all__ = [
    "BudgetSpec",
    "DarknetSpec",
    "DivergedRule",
    "EvaluationSpec",
    "JobSpec",
    "NotLearningRule",
    "OverfitRule",
    "PlateauRule",
    "Problem",
    "RetainSpec",
    "SpecError",
    "StopSpec",
    "format_duration",
    "json_schema",
    "load_spec",
    "parse_duration",
    "parse_spec",
    "redacted_yaml",
]
