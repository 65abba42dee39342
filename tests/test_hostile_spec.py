"""Hostile job files (issue 14, points 2, 3, 5 and 8): each gets a clear, located error at once,
never a traceback, a hang or gigabytes of memory."""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path

import pytest

from supervisor.spec import SpecError, load_spec, parse_spec, redacted_yaml
from supervisor.spec.job import MAX_ITERATION, MAX_TOP_K, parse_duration
from supervisor.spec.yamlsource import MAX_BYTES, MAX_DEPTH, MAX_VALUES, Problem

MINIMAL = "name: x\ndarknet:\n  data: a.data\n  cfg: a.cfg\n"


def problems(text: str, **kw: bool) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "job.yaml", Path("/jobs"), **kw)
    return info.value.problems


def only(text: str, path: str = "", **kw: bool) -> Problem:
    found = [p for p in problems(text, **kw) if p.path == path]
    assert len(found) == 1, problems(text, **kw)
    return found[0]


def quick(fn: object, seconds: float = 3.0) -> None:
    """`fn()` must finish within `seconds` (generous for 2 shared cores)."""
    assert callable(fn)
    started = time.perf_counter()
    fn()
    assert time.perf_counter() - started < seconds


# --- point 2: nesting that exhausted the stack


@pytest.mark.parametrize(
    "nested",
    [
        "a: " + "[" * 600 + "]" * 600 + "\n",
        "a: " + "{b: " * 600 + "1" + "}" * 600 + "\n",
        "".join("  " * i + f"k{i}:\n" for i in range(700)),
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
    ],
    ids=["flow-lists", "flow-maps", "block-maps", "5000-levels"],
)
def test_deep_nesting_is_refused_with_its_line(nested: str) -> None:
    p = only(MINIMAL + nested)
    assert f"nested more than {MAX_DEPTH} levels" in p.message
    assert p.line is not None and p.line >= 5


# --- point 3: size and expansion limits


def test_a_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(MINIMAL + "# " + "x" * (50 << 20) + "\n")
    started = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(job)
    assert time.perf_counter() - started < 2.0
    (p,) = info.value.problems
    assert p.file == str(job) and "1 MiB" in p.message and f"{job.stat().st_size:,}" in p.message


def test_an_endless_device_is_refused_at_the_limit() -> None:
    started = time.perf_counter()
    with pytest.raises(SpecError) as info:
        load_spec(Path("/dev/zero"))
    assert time.perf_counter() - started < 2.0
    assert "goes on past 1 MiB" in info.value.problems[0].message


def test_text_over_the_size_limit_is_refused_too() -> None:
    p = only(MINIMAL + "#" * (MAX_BYTES + 1) + "\n")
    assert "at most" in p.message


def test_a_comment_file_just_under_the_limit_reads_quickly() -> None:
    text = MINIMAL + "# " + "x" * (MAX_BYTES - 200) + "\n"
    quick(lambda: parse_spec(text))


def test_a_long_list_stops_at_the_value_limit_quickly() -> None:
    text = MINIMAL + "  extra_args:\n" + "  - a\n" * (MAX_BYTES // 6 - 20)
    assert len(text) <= MAX_BYTES
    holder: list[Problem] = []
    quick(lambda: holder.extend(problems(text)))
    (p,) = holder
    assert f"more than {MAX_VALUES:,} values" in p.message and p.line is not None


def test_billion_laughs_is_refused_without_expanding() -> None:
    laughs = 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 12)
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    holder: list[Problem] = []
    quick(lambda: holder.extend(problems(MINIMAL + laughs)))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB
    (p,) = holder
    assert "billion laughs" in p.message and "aliases" in p.message and p.line is not None


def test_nested_merge_keys_are_refused_before_pyyaml_flattens_them() -> None:
    bomb = "m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}\n" + "".join(
        f"m{i}: &m{i}\n  <<: [" + ", ".join([f"*m{i - 1}"] * 8) + "]\n" for i in range(1, 12)
    )
    holder: list[Problem] = []
    # PyYAML 6.0.4 merges each key object once (older versions copied every merged entry);
    # either way the file is read at once, and its unknown keys are what is wrong with it.
    quick(lambda: holder.extend(problems(MINIMAL + bomb)))
    assert {p.path for p in holder} == {f"m{i}" for i in range(12)}


def test_merge_key_expansion_is_counted_before_flattening() -> None:
    import yaml

    from supervisor.spec.yamlsource import _merged_size

    text = "m0: &m0 {a: 1, b: 2}\n" + "".join(
        f"m{i}: &m{i}\n  <<: [" + ", ".join([f"*m{i - 1}"] * 8) + "]\n" for i in range(1, 8)
    )
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    assert isinstance(root, yaml.MappingNode)
    assert _merged_size(root.value[1][1], {}) == 16
    assert _merged_size(root.value[7][1], {}) > MAX_VALUES  # 2 × 8**7 before any dedup


def test_ordinary_anchors_still_work() -> None:
    text = MINIMAL + "budget: {max_iterations: &n 4000}\nstop:\n  min_iterations: *n\n"
    spec = parse_spec(text)
    assert spec.stop.min_iterations == spec.budget.max_iterations == 4000


# --- point 5: settings accepted in silence


def test_max_time_of_400_digits_is_refused_and_never_becomes_infinity() -> None:
    p = only(MINIMAL + "budget:\n  max_time: " + "9" * 400 + "h\n", "budget.max_time")
    assert "at most 365d" in p.message and "null" in p.message
    assert p.shown is not None and len(p.shown) <= 80
    assert math.isinf(parse_duration("9" * 400 + "h"))  # the parser alone: the spec refuses it


def test_a_long_max_time_round_trips_through_job_yaml() -> None:
    spec = parse_spec(MINIMAL + "budget:\n  max_time: 364d23h\n")
    again = parse_spec(redacted_yaml(spec))
    assert again.budget.max_time == spec.budget.max_time


@pytest.mark.parametrize(
    ("yaml", "path", "words"),
    [
        ("budget:\n  max_iterations: " + "1" + "0" * 40 + "\n", "budget.max_iterations",
         f"at most {MAX_ITERATION}"),
        ("budget:\n  max_iterations: 1e40\n", "budget.max_iterations", "whole number"),
        ("retain:\n  top_k: " + "1" + "0" * 20 + "\n", "retain.top_k", f"at most {MAX_TOP_K}"),
        ("stop:\n  min_iterations: " + "9" * 30 + "\n", "stop.min_iterations", "at most"),
        ("evaluation:\n  every: " + "1" + "0" * 30 + "\n", "evaluation.every", "at most"),
    ],
)  # fmt: skip
def test_huge_numbers_are_refused_with_their_bound(yaml: str, path: str, words: str) -> None:
    assert words in only(MINIMAL + yaml, path).message


def test_an_infinite_loss_factor_is_refused_and_says_how_to_disable_the_rule() -> None:
    p = only(MINIMAL + "stop:\n  diverged: {loss_factor: .inf}\n", "stop.diverged.loss_factor")
    assert "finite" in p.message and "diverged: false" in p.message
    assert p.line == 6
    parse_spec(MINIMAL + "stop:\n  diverged: false\n")  # the way it tells works
    parse_spec(MINIMAL + "stop:\n  diverged: {enabled: false, loss_factor: .inf}\n")


def test_a_gpu_index_no_machine_has_is_refused() -> None:
    p = only(MINIMAL + "  gpus: [0, 99]\n", "darknet.gpus")
    assert "99" in p.message and "nvidia-smi" in p.message


def test_darknet_evaluation_on_pjreddie_is_refused() -> None:
    text = MINIMAL + "  flavour: pjreddie\nevaluation:\n  source: darknet\n"
    assert "no -map" in only(text, "evaluation.source").message


def test_missing_or_directory_weights_are_refused_when_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "init.weights").write_bytes(b"\0" * 100)
    job = tmp_path / "job.yaml"
    for written, words in (("w", "is a directory"), ("nope.weights", "no such file")):
        job.write_text(MINIMAL + f"  weights: {written}\n")
        with pytest.raises(SpecError) as info:
            load_spec(job, check_files=True)
        (p,) = info.value.problems
        assert p.path == "darknet.weights" and p.line == 5 and words in p.message
        assert str(tmp_path / written) in p.message or words == "is a directory"
        load_spec(job)  # a job dir's job.yaml stays readable without its initial weights
    job.write_text(MINIMAL + "  weights: init.weights\n")
    assert load_spec(job, check_files=True).darknet.weights == tmp_path / "init.weights"


# --- point 8: offending values are quoted short


def test_a_huge_name_is_quoted_short() -> None:
    p = only("name: " + "n" * 100_000 + "\ndarknet: {data: a.data, cfg: a.cfg}\n", "name")
    assert p.shown is not None and len(p.shown) == 80 and p.shown.endswith("…")
    assert len(str(p)) < 300


def test_a_huge_unknown_key_is_quoted_short() -> None:
    key = "k" * 1000
    p = problems(MINIMAL + f"budget:\n  {key}: 1\n")[0]
    assert len(str(p)) < 400 and "…" in p.message


def test_a_huge_duration_text_is_quoted_short() -> None:
    p = only(MINIMAL + "budget:\n  max_time: " + "x" * 5000 + "\n", "budget.max_time")
    assert len(p.message) < 300
