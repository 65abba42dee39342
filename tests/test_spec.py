"""Job spec: loading, defaults, located errors, JSON Schema, the job.yaml record."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from supervisor.spec import (
    JobSpec,
    Problem,
    SpecError,
    format_duration,
    json_schema,
    load_spec,
    parse_duration,
    parse_spec,
    redacted_yaml,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "job.example.yaml"

MINIMAL = """\
name: demo
darknet:
  data: data/obj.data
  cfg: cfg/yolo.cfg
"""


def spec_of(text: str, base: Path | None = None) -> JobSpec:
    return parse_spec(textwrap.dedent(text), "job.yaml", base or Path("/jobs"))


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        spec_of(text)
    return info.value.problems


def at(text: str, needle: str) -> tuple[int, int]:
    """1-based line and column where `needle` first appears in the (dedented) text."""
    for number, line in enumerate(textwrap.dedent(text).splitlines(), 1):
        if needle in line:
            return number, line.index(needle) + 1
    raise AssertionError(f"{needle!r} not in the test text")


def only(problems: list[Problem], path: str) -> Problem:
    found = [p for p in problems if p.path == path]
    assert len(found) == 1, f"{path}: {[str(p) for p in problems]}"
    return found[0]


# --- the example and the defaults


def test_example_loads_and_resolves_paths_against_its_folder() -> None:
    spec = load_spec(EXAMPLE)
    written = yaml.safe_load(EXAMPLE.read_text())
    assert spec.name == written["name"]
    assert spec.darknet.cfg == EXAMPLE.parent / written["darknet"]["cfg"]
    assert spec.written("darknet.cfg") == written["darknet"]["cfg"]
    assert spec.budget.max_time == 12 * 3600


def _leaf_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, value in data.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _leaf_paths(value, f"{prefix}{key}.")
    return out


def _schema_paths(schema: dict[str, Any], node: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for key, prop in node.get("properties", {}).items():
        out.add(prefix + key)
        refs = [prop.get("$ref")] + [alt.get("$ref") for alt in prop.get("anyOf", [])]
        for ref in filter(None, refs):
            target = schema["$defs"][ref.rsplit("/", 1)[1]]
            out |= _schema_paths(schema, target, f"{prefix}{key}.")
    return out


def test_example_writes_out_every_key_the_schema_knows() -> None:
    schema = json_schema()
    assert _leaf_paths(yaml.safe_load(EXAMPLE.read_text())) == _schema_paths(schema, schema)


def test_defaults() -> None:
    spec = spec_of(MINIMAL)
    d, ev, stop, retain = spec.darknet, spec.evaluation, spec.stop, spec.retain
    assert (d.binary, d.flavour, d.weights) == ("darknet", "auto", None)
    assert (d.gpus, d.extra_args) == ((0,), ())
    assert (spec.budget.max_iterations, spec.budget.max_time) == (None, None)
    assert (ev.iou_threshold, ev.source) == (0.5, "auto")
    assert ev.every % 100 == 0 and ev.every > 0
    assert stop.min_iterations == 0 and stop.target_map is None
    plateau = stop.plateau
    assert (plateau.enabled, plateau.patience, plateau.min_delta) == (True, 2000, 0.005)
    assert (stop.overfit.enabled, stop.overfit.drop, stop.overfit.confirm) == (True, 0.05, 3)
    assert (stop.not_learning.after, stop.not_learning.map_below) == (2000, 0.05)
    assert stop.not_learning.enabled and stop.not_learning.loss_window > 0
    assert (stop.diverged.enabled, stop.diverged.loss_factor, stop.diverged.nan) == (True, 10, True)
    assert (retain.best, retain.last, retain.top_k) == (True, True, 0)


@pytest.mark.parametrize("off", ["false", "null", "", "{enabled: false}"])
def test_a_rule_can_be_switched_off(off: str) -> None:
    spec = spec_of(MINIMAL + f"stop:\n  overfit: {off}\n")
    assert not spec.stop.overfit.enabled
    assert spec.stop.plateau.enabled


def test_a_rule_set_to_true_takes_its_defaults() -> None:
    spec = spec_of(MINIMAL + "stop:\n  plateau: true\n")
    assert spec.stop.plateau == spec_of(MINIMAL).stop.plateau
    assert spec.stop.plateau.enabled and spec.stop.plateau.patience == 2000


def test_an_empty_section_takes_its_defaults() -> None:
    spec = spec_of(MINIMAL + "retain:\n  # best: false\n")
    assert spec.retain.best and spec.retain.last


def test_gpus_accepts_darknet_forms_and_empty_means_cpu() -> None:
    assert spec_of(MINIMAL + "  gpus: 0,1\n").darknet.gpus == (0, 1)
    assert spec_of(MINIMAL + "  gpus: 2\n").darknet.gpus == (2,)
    assert spec_of(MINIMAL + "  gpus: []\n").darknet.gpus == ()


def test_spec_is_frozen() -> None:
    spec = spec_of(MINIMAL)
    with pytest.raises(ValidationError):
        spec.name = "other"


# --- paths


def test_relative_paths_resolve_against_the_job_file_folder(tmp_path: Path) -> None:
    job = tmp_path / "sub" / "job.yaml"
    job.parent.mkdir()
    job.write_text(
        "name: p\ndarknet:\n  data: ../d/obj.data\n  cfg: /abs/yolo.cfg\n"
        "  weights: w/init.weights\n  binary: ./bin/darknet\n"
    )
    spec = load_spec(job)
    assert spec.darknet.data == tmp_path / "d" / "obj.data"
    assert spec.darknet.cfg == Path("/abs/yolo.cfg")
    assert spec.darknet.weights == job.parent / "w" / "init.weights"
    assert spec.darknet.binary == str(job.parent / "bin" / "darknet")
    assert spec.written("darknet.data") == "../d/obj.data"
    assert spec.written("darknet.weights") == "w/init.weights"


def test_a_bare_binary_name_is_left_for_the_daemon_config() -> None:
    spec = spec_of(MINIMAL + "  binary: darknet-alexeyab\n")
    assert spec.darknet.binary == "darknet-alexeyab"


def test_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = spec_of("name: h\ndarknet:\n  data: ~/obj.data\n  cfg: c.cfg\n")
    assert spec.darknet.data == tmp_path / "obj.data"


def test_a_symlinked_cfg_keeps_its_own_name(tmp_path: Path) -> None:
    # darknet names the weights after the cfg file (facts §4): the link's name must survive.
    (tmp_path / "real.cfg").write_text("[net]\n")
    (tmp_path / "mine.cfg").symlink_to(tmp_path / "real.cfg")
    spec = spec_of("name: s\ndarknet:\n  data: a.data\n  cfg: mine.cfg\n", base=tmp_path)
    assert spec.darknet.cfg.name == "mine.cfg"


# --- located errors

SEVERAL = """\
name: demo
darknet:
  data: data/obj.data
  cfg: cfg/yolo.cfg
  flavor: alexeyab
budget:
  max_time: 12 hours
evaluation:
  every: 250
stop:
  plateau:
    patince: 3000
  target_map: 85
retain:
  top_k: -1
"""


def test_several_errors_are_reported_together_in_file_order() -> None:
    problems = problems_of(SEVERAL)
    expected = [
        ("darknet.flavor", at(SEVERAL, "flavor")),
        ("budget.max_time", at(SEVERAL, "12 hours")),
        ("evaluation.every", at(SEVERAL, "250")),
        ("stop.plateau.patince", at(SEVERAL, "patince")),
        ("stop.target_map", at(SEVERAL, "85")),
        ("retain.top_k", at(SEVERAL, "-1")),
    ]
    assert [(p.path, (p.line, p.column)) for p in problems] == expected
    assert all(p.file == "job.yaml" for p in problems)


def test_the_report_names_file_line_path_value_and_what_is_allowed() -> None:
    with pytest.raises(SpecError) as info:
        spec_of(SEVERAL)
    report = str(info.value).splitlines()
    assert report[0] == "job.yaml: 6 problems in the job spec"
    line, column = at(SEVERAL, "85")
    assert (
        f"  job.yaml:{line}:{column}: stop.target_map = 85: "
        "mAP settings are fractions: write 0.85 for 85 %" in report
    )
    every = next(r for r in report if "evaluation.every = 250" in r)
    assert "multiple of 100" in every


@pytest.mark.parametrize(
    ("text", "path", "needle", "suggestion"),
    [
        ("nmae: x\ndarknet: {data: a, cfg: b}\n", "nmae", "nmae", "did you mean `name`?"),
        (MINIMAL + "  flavor: pjreddie\n", "darknet.flavor", "flavor", "did you mean `flavour`?"),
        (
            MINIMAL + "stop:\n  plateau:\n    patince: 10\n",
            "stop.plateau.patince",
            "patince",
            "did you mean `patience`?",
        ),
        (MINIMAL + "stop:\n  patience: 10\n", "stop.patience", "patience", "`stop.plateau`"),
    ],
)
def test_unknown_keys_at_any_depth_suggest_the_right_one(
    text: str, path: str, needle: str, suggestion: str
) -> None:
    problem = only(problems_of(text), path)
    assert (problem.line, problem.column) == at(text, needle)
    assert suggestion in problem.message
    assert "Allowed here:" in problem.message


def test_unknown_key_lists_the_allowed_keys() -> None:
    problem = only(problems_of(MINIMAL + "retain:\n  bogus: 1\n"), "retain.bogus")
    assert problem.message.endswith("Allowed here: best, last, top_k")


@pytest.mark.parametrize(
    ("line", "path", "words"),
    [
        ("name: 12", "name", "text"),
        ("stop: {plateau: {patience: true}}", "stop.plateau.patience", "whole number"),
        ("stop: {overfit: {confirm: 2.5}}", "stop.overfit.confirm", "whole number"),
        ("stop: {diverged: {nan: maybe}}", "stop.diverged.nan", "true or false"),
        ("stop: {plateau: 5}", "stop.plateau", "false/null to switch it off"),
        ("evaluation: {source: gpu}", "evaluation.source", "auto"),
        ("budget: {max_iterations: 0}", "budget.max_iterations", "greater than 0"),
        ("retain: {top_k: -1}", "retain.top_k", "at least 0"),
        ("stop: {diverged: {loss_factor: 0.5}}", "stop.diverged.loss_factor", "greater than 1"),
        ("evaluation: {every: 150}", "evaluation.every", "multiple of 100"),
        ("evaluation: {iou_threshold: 0}", "evaluation.iou_threshold", "(0, 1)"),
        ("stop: {min_iterations: -5}", "stop.min_iterations", "at least 0"),
        ("stop: {target_map: 150}", "stop.target_map", "fraction in [0, 1]"),
    ],
)
def test_wrong_type_and_out_of_range_values(line: str, path: str, words: str) -> None:
    text = MINIMAL.replace("name: demo\n", "") + line + "\n"
    if not line.startswith("name"):
        text = "name: demo\n" + text
    problem = only(problems_of(text), path)
    assert problem.line == at(text, line)[0]
    assert words in problem.message


def test_wrong_type_inside_a_list_points_at_the_item() -> None:
    text = MINIMAL + "  gpus: [0, x]\n"
    problem = only(problems_of(text), "darknet.gpus[1]")
    assert (problem.line, problem.column) == at(text, "x]")
    assert problem.shown == "x"


@pytest.mark.parametrize(
    ("key", "value", "fix"),
    [
        ("stop:\n  target_map", "85", "write 0.85 for 85 %"),
        ("stop:\n  plateau:\n    min_delta", "50", "write 0.5 for 50 %"),
        ("stop:\n  not_learning:\n    map_below", "5", "write 0.05 for 5 %"),
        ("stop:\n  overfit:\n    drop", "10", "write 0.1 for 10 %"),
    ],
)
def test_percent_instead_of_fraction(key: str, value: str, fix: str) -> None:
    text = MINIMAL + f"{key}: {value}\n"
    [problem] = problems_of(text)
    assert problem.message == f"mAP settings are fractions: {fix}"
    assert problem.line == len(text.splitlines())
    assert problem.value == int(value)


def test_iou_threshold_in_percent() -> None:
    [problem] = problems_of(MINIMAL + "evaluation:\n  iou_threshold: 50\n")
    assert problem.path == "evaluation.iou_threshold"
    assert "write 0.5 for 50 %" in problem.message


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("12 hours", "45s, 90m, 12h, 2d or 1h30m"),
        ("3600", "a bare number has no unit"),
        ("0s", "longer than 0s"),
        ("30m1h", "largest first"),
        ("[1h]", "must be a duration"),
    ],
)
def test_bad_durations(value: str, words: str) -> None:
    text = MINIMAL + f"budget:\n  max_time: {value}\n"
    [problem] = problems_of(text)
    assert problem.path == "budget.max_time"
    assert (problem.line, problem.column) == at(text, value)
    assert words in problem.message


def test_missing_required_keys_point_at_their_section() -> None:
    text = "name: demo\ndarknet:\n  gpus: [0]\n"
    problems = problems_of(text)
    assert [p.path for p in problems] == ["darknet.data", "darknet.cfg"]
    assert all((p.line, p.column) == at(text, "darknet:") for p in problems)
    assert all("required key" in p.message for p in problems)


def test_missing_top_level_keys_point_at_the_document() -> None:
    text = "# my job\nbudget: {max_time: 1h}\n"
    problems = problems_of(text)
    assert {p.path for p in problems} == {"name", "darknet"}
    assert all(p.line == 2 for p in problems)


def test_duplicate_keys_are_errors() -> None:
    text = MINIMAL + "name: again\n"
    problem = only(problems_of(text), "name")
    assert problem.line == at(text, "name: again")[0]
    assert "line 1" in problem.message


def test_cross_field_findings_point_at_their_own_keys() -> None:
    text = (
        "name: x\ndarknet: {data: a, cfg: b, flavour: pjreddie}\n"
        "budget:\n  max_iterations: 500\nevaluation:\n  source: darknet\n"
        "stop:\n  min_iterations: 1000\n"
    )
    problems = problems_of(text)
    source = only(problems, "evaluation.source")
    assert source.line == at(text, "source:")[0] and "-map" in source.message
    minimum = only(problems, "stop.min_iterations")
    assert minimum.line == at(text, "min_iterations")[0] and minimum.value == 1000


def test_extra_args_the_supervisor_sets_or_pjreddie_misreads() -> None:
    text = MINIMAL + "  flavour: pjreddie\n  extra_args: [-clear, -map, -dont_show]\n"
    problems = problems_of(text)
    assert [p.path for p in problems] == ["darknet.extra_args[1]", "darknet.extra_args[2]"]
    assert "evaluation.source" in problems[0].message
    assert problems[1].column == at(text, "-dont_show")[1]
    assert "pjreddie" in problems[1].message


def test_extra_args_as_one_string_is_refused() -> None:
    [problem] = problems_of(MINIMAL + "  extra_args: -mjpeg_port 8090\n")
    assert problem.path == "darknet.extra_args" and "list" in problem.message


def test_hankai_needs_weights_with_their_extension() -> None:
    text = MINIMAL + "  flavour: hankai\n  weights: yolov4.conv.137\n"
    problem = only(problems_of(text), "darknet.weights")
    assert problem.line == at(text, "yolov4.conv.137")[0]
    assert ".weights" in problem.message
    spec_of(MINIMAL + "  flavour: alexeyab\n  weights: yolov4.conv.137\n")


@pytest.mark.parametrize("name", ["..", "a/b", "x" * 65, "with space"])
def test_names_must_be_safe_for_directories(name: str) -> None:
    problem = only(problems_of(MINIMAL.replace("demo", json.dumps(name))), "name")
    assert problem.line == 1 and "A-Z a-z 0-9" in problem.message


def test_empty_path_is_refused() -> None:
    problem = only(problems_of(MINIMAL.replace("cfg/yolo.cfg", '""')), "darknet.cfg")
    assert problem.line == 4 and "empty" in problem.message


# --- broken files


def test_tab_indentation() -> None:
    text = "name: demo\ndarknet:\n\tdata: a\n"
    [problem] = problems_of(text)
    assert (problem.line, problem.column) == (3, 1)
    assert "tabs" in problem.message


def test_bad_indentation() -> None:
    text = "name: demo\ndarknet:\n  data: a\n cfg: b\n"
    [problem] = problems_of(text)
    assert problem.line == 4 and problem.message.startswith("YAML syntax error")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    [problem] = problems_of(text)
    assert problem.line is None and "empty" in problem.message


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "a list"), ("just text\n", "a single")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    [problem] = problems_of(text)
    assert problem.line == 1 and kind in problem.message


def test_self_referencing_alias_is_an_error_not_a_crash() -> None:
    problem = only(problems_of(MINIMAL + "  extra_args: &a [*a]\n"), "darknet.extra_args[0]")
    assert "alias" in problem.message


@pytest.mark.parametrize(
    "value", ["!!python/object/apply:os.getcwd []", "!!python/name:os.getcwd x", "!custom {a: 1}"]
)
def test_yaml_tags_are_refused_not_run(value: str) -> None:
    [problem] = problems_of(f"name: {value}\ndarknet: {{data: a, cfg: b}}\n")
    assert (problem.path, problem.line, problem.column) == ("name", 1, 7)
    assert "tags" in problem.message


def test_control_characters_are_located() -> None:
    text = "name: demo\ndarknet: {data: a\x07, cfg: b}\n"
    [problem] = problems_of(text)
    assert (problem.line, problem.column) == at(text, "\x07")
    assert "not allowed" in problem.message


def test_without_base_dir_paths_resolve_against_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(MINIMAL)
    assert spec.darknet.data == tmp_path / "data" / "obj.data"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "nope.yaml")
    [problem] = info.value.problems
    assert problem.file == str(tmp_path / "nope.yaml") and "no such file" in problem.message


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path)
    assert "directory" in info.value.problems[0].message


def test_non_utf8_bytes_are_located(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_bytes(b"name: demo\ndarknet:\n  data: caf\xe9.data\n")
    with pytest.raises(SpecError) as info:
        load_spec(job)
    [problem] = info.value.problems
    assert (problem.line, problem.column) == (3, 12)
    assert "UTF-8" in problem.message and "0xe9" in problem.message


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL)

    # Root (CI) reads any file whatever its mode, so the refusal is injected at the OS call.
    def refuse(self: Path, *args: object, **kwargs: object) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(SpecError) as info:
        load_spec(job)
    assert "permission denied" in info.value.problems[0].message


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL + "stop:\n  target_map: 85\n")
    with pytest.raises(SpecError) as info:
        load_spec(job)
    assert str(info.value).splitlines()[1].startswith(f"  {job}:6:15: stop.target_map = 85")


# --- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45s", 45), ("90m", 5400), ("12h", 43200), ("2d", 172800), ("1h30m", 5400),
     ("1h 30m", 5400), ("1.5h", 5400), ("1d2h3m4s", 93784)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "12", "12 hours", "h", "1x", "30m1h", "-5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="45s, 90m, 12h, 2d or 1h30m"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1, 45, 60, 5400, 86400, 93784, 0.5])
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --- schema and record


def test_json_schema_covers_every_section_and_forbids_unknown_keys() -> None:
    schema = json_schema()
    json.dumps(schema)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert set(schema["properties"]) == {
        "name", "darknet", "budget", "evaluation", "stop", "retain", "notify", "checks",
        "memory",
    }  # fmt: skip
    assert schema["required"] == ["name", "darknet"]
    objects = [schema, *schema["$defs"].values()]
    assert all(o["additionalProperties"] is False for o in objects)
    assert set(schema["$defs"]) == {
        "DarknetSpec", "BudgetSpec", "EvaluationSpec", "StopSpec", "PlateauRule",
        "OverfitRule", "NotLearningRule", "DivergedRule", "RetainSpec", "NotifyTarget",
        "ChecksSpec", "MemorySpec",
    }  # fmt: skip
    stop = schema["$defs"]["StopSpec"]["properties"]
    for rule in ("plateau", "overfit", "not_learning", "diverged"):
        assert {"type": "boolean"} in stop[rule]["anyOf"]
    max_time = schema["$defs"]["BudgetSpec"]["properties"]["max_time"]["anyOf"][0]
    assert max_time["type"] == "string" and "pattern" in max_time


def test_redacted_yaml_reads_back_to_the_same_spec(tmp_path: Path) -> None:
    spec = spec_of(
        MINIMAL + "budget: {max_time: 1h30m}\nstop: {overfit: false, target_map: 0.9}\n",
        base=tmp_path,
    )
    text = redacted_yaml(spec)
    assert "max_time: 1h30m" in text
    assert str(tmp_path / "data" / "obj.data") in text
    again = parse_spec(text, "job.yaml", Path("/elsewhere"))
    assert again.model_dump() == spec.model_dump()


def test_plateau_patience_is_a_share_of_the_run_unless_written_alone() -> None:
    from supervisor.runtime.jobpolicy import rules_for
    from supervisor.training.policy import Plateau

    base = "name: a\ndarknet: {data: a.data, cfg: a.cfg}\n"

    def plateau(extra: str) -> Plateau:
        spec = parse_spec(base + extra, "job.yaml", Path("/j"))
        return next(r for r in rules_for(spec.stop) if isinstance(r, Plateau))

    default = plateau("")
    assert default.patience_share == Plateau().patience_share is not None
    assert default.after_last_step_share == Plateau().after_last_step_share
    # `patience: 5000` alone keeps its meaning: 5 000 iterations, whatever the run's length.
    alone = plateau("stop: {plateau: {patience: 5000}}\n")
    assert alone.patience == 5000 and alone.patience_share is None
    both = plateau(
        "stop: {plateau: {patience: 5000, patience_share: 0.2, after_last_step_share: null}}\n"
    )
    assert (both.patience_share, both.after_last_step_share) == (0.2, None)
    with pytest.raises(SpecError) as info:
        parse_spec(base + "stop: {plateau: {patience_share: 15}}\n", "job.yaml", Path("/j"))
    assert "patience_share" in str(info.value)
    assert default.valid_k == Plateau().valid_k > 0
    assert plateau("stop: {plateau: {valid_k: 0.0}}\n").valid_k == 0.0
    with pytest.raises(SpecError) as info:
        parse_spec(base + "stop: {plateau: {valid_k: -1.0}}\n", "job.yaml", Path("/j"))
    assert "valid_k" in str(info.value)
