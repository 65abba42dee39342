"""Reading, exporting and recording job files: `load_spec`, `parse_spec`, `json_schema`,
`redacted_yaml`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from supervisor.spec.job import JobSpec, Rule
from supervisor.spec.yamlsource import all_models, read_text, unwrap_model, validate_yaml

# Path keys resolved against the job file's folder. `binary` only when it is a path: a bare
# name is looked up in the daemon config's allow-list (DESIGN decision 7).
_PATH_KEYS = ("data", "cfg", "weights", "binary")
_EMPTY = "a job needs at least `name:` and `darknet:` with `data:` and `cfg:`"


def _resolve_paths(data: object, base_dir: Path, written: dict[str, str]) -> None:
    darknet = data.get("darknet") if isinstance(data, dict) else None
    if not isinstance(darknet, dict):
        return
    for key in _PATH_KEYS:
        text = darknet.get(key)
        if not isinstance(text, str) or not text.strip():
            continue
        if key == "binary" and "/" not in text and not text.startswith("~"):
            continue
        written[f"darknet.{key}"] = text
        # normpath, not resolve(): a symlinked cfg keeps its own name, which darknet uses to
        # name the weights files (facts §4).
        darknet[key] = os.path.normpath(base_dir / Path(text).expanduser())


def parse_spec(
    text: str,
    source: str = "<string>",
    base_dir: Path | None = None,
    *,
    check_files: bool = False,
) -> JobSpec:
    """Validate a job spec given as YAML text; SpecError lists every problem, located.

    Relative paths resolve against `base_dir` (default: the current directory); the text as
    written stays available through `JobSpec.written`. `check_files`: `weights:` must name an
    existing file — for `check` and `run`; a job dir's job.yaml must stay readable after its
    initial weights are gone, and data and cfg are the dataset check's.
    """
    base = (base_dir or Path.cwd()).absolute()
    written: dict[str, str] = {}
    spec = validate_yaml(
        JobSpec,
        text,
        source,
        empty=_EMPTY,
        prepare=lambda data: _resolve_paths(data, base, written),
        context={"check_files": check_files},
    )
    spec._written = written
    return spec


def load_spec(path: Path, *, check_files: bool = False) -> JobSpec:
    """Read and validate a job file; relative paths in it resolve against its folder."""
    return parse_spec(read_text(path), str(path), path.absolute().parent, check_files=check_files)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the job file, for editors (yaml-language-server)."""
    schema = JobSpec.model_json_schema()
    defs = schema.get("$defs", {})
    for model in all_models(JobSpec):
        props = (schema if model is JobSpec else defs[model.__name__])["properties"]
        for name, field in model.model_fields.items():
            sub = unwrap_model(field.annotation)
            if sub is None or "$ref" not in props[name]:
                continue
            # Sections also accept `null` (all keys commented out), rules `true`/`false`.
            alts: list[dict[str, Any]] = [{"$ref": props[name].pop("$ref")}, {"type": "null"}]
            if issubclass(sub, Rule):
                alts.append({"type": "boolean"})
            props[name]["anyOf"] = alts
    schema.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "trainsup job",
        **schema,
    }


def redacted_yaml(spec: JobSpec) -> str:
    """The spec as YAML for <job>/job.yaml: absolute paths, durations as text, secrets masked
    (SecretStr fields dump as `**********`). `parse_spec` reads it back to an equal spec."""
    data = spec.model_dump(mode="json")
    head = "# trainsup job spec as submitted (relative paths resolved, secrets redacted)\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None)
