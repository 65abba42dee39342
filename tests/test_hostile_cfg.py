"""cfg values darknet dies on or silently misreads (issue 14, points 4 and 8): each is an error
naming the cfg file and line, what is wrong and what to write instead.

The consequences quoted in the messages were observed on the Debian binary with a one-conv
[yolo] cfg, batch=2, on one 64×64 image: subdivisions=4 → SIGFPE; no max_batches → 0
iterations, `_final.weights`, exit 0; width=-32 → SIGSEGV; height=0 or no width → abort;
[foobar] → "Type not recognized", abort; policy=steps without scales → abort; fewer scales than
steps → SIGSEGV; learning_rate=abc → trains at rate 0.000000; policy=foo → constant rate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.darknet.cfg import DataFile
from supervisor.dataset.config_checks import check_cfg, check_data_file
from supervisor.dataset.findings import CODES, Finding

BASE = """[net]
batch=64
subdivisions=8
width=416
height=416
channels=3
learning_rate=0.001
max_batches=6000
policy=steps
steps=4800,5400
scales=.1,.1

[convolutional]
filters=21
size=1
stride=1
pad=1
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
"""


def _check(tmp_path: Path, text: str, flavour: str | None = None) -> list[Finding]:
    cfg = tmp_path / "net.cfg"
    cfg.write_text(text)
    return check_cfg(cfg, 2, 100, flavour)  # type: ignore[arg-type]


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if line.startswith(needle))


def _only(findings: list[Finding], code: str) -> Finding:
    found = [f for f in findings if f.code == code]
    assert len(found) == 1, findings
    return found[0]


def test_the_base_cfg_is_clean(tmp_path: Path) -> None:
    assert _check(tmp_path, BASE) == []


CASES = [
    # (replace, by, code, line starts with, words in the message, words in the fix)
    ("subdivisions=8", "subdivisions=128", "cfg_subdivisions_above_batch", "subdivisions=",
     ("SIGFPE", "128", "64"), ("subdivisions=1",)),
    ("max_batches=6000\n", "", "cfg_max_batches_missing", "[net]",
     ("0 iterations", "status 0"), ("max_batches=6000",)),
    ("max_batches=6000", "max_batches=0", "cfg_max_batches_missing", "max_batches=",
     ("max_batches=0",), ("max_batches=",)),
    ("width=416", "width=-32", "cfg_size_invalid", "width=", ("width=-32",), ("width=416",)),
    ("height=416", "height=0", "cfg_size_invalid", "height=", ("height=0",), ("height=416",)),
    ("width=416\n", "", "cfg_size_invalid", "[net]", ("no width=",), ("width=416",)),
    ("[yolo]", "[foobar]\nx=1\n\n[yolo]", "cfg_unknown_section", "[foobar]",
     ("[foobar]", "Type not recognized"), ("[convolutional]",)),
    ("scales=.1,.1\n", "", "cfg_policy_incomplete", "policy=", ("scales=", "aborts"),
     ("scales=.1,.1",)),
    ("steps=4800,5400\n", "", "cfg_policy_incomplete", "policy=", ("steps=",), ("steps=",)),
    ("scales=.1,.1", "scales=.1", "cfg_policy_incomplete", "scales=", ("2 values", "only 1"),
     ("one scale per step",)),
    ("learning_rate=0.001", "learning_rate=abc", "cfg_value_not_a_number", "learning_rate=",
     ("learning_rate=abc", "as 0", "rate 0"), ("learning_rate=0.001",)),
    ("mask=0,1,2", "mask=0,1,5", "cfg_mask_out_of_range", "mask=", ("anchor 5", "num=3"),
     ("below num",)),
    ("num=3", "num=0", "cfg_mask_out_of_range", "num=", ("num=0",), ("num=",)),
    ("anchors=10,14, 23,27, 37,58", "anchors=10,14, 23,27, 37,58, 81,82", "cfg_anchors_mismatch",
     "anchors=", ("8 values", "num=3 needs 6", "aborts"), ("one width,height pair",)),
    ("anchors=10,14, 23,27, 37,58", "anchors=10,14", "cfg_anchors_mismatch", "anchors=",
     ("size 0",), ("num=",)),
    ("steps=4800,5400", "steps=5400,4800", "cfg_steps_not_increasing", "steps=",
     ("do not increase",), ("4800,5400",)),
    ("policy=steps", "policy=foo", "cfg_policy_unknown", "policy=", ("policy=foo",),
     ("policy=steps",)),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "code", "at", "says", "fix"), CASES)
def test_a_cfg_value_darknet_dies_on_is_reported_at_its_line(
    tmp_path: Path,
    old: str,
    new: str,
    code: str,
    at: str,
    says: tuple[str, ...],
    fix: tuple[str, ...],
) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    f = _only(_check(tmp_path, text), code)
    assert f.file == str(tmp_path / "net.cfg")
    assert f.line == _line(text, at)
    for word in says:
        assert word in f.message
    for word in fix:
        assert word in f.fix
    expected = "warning" if code == "cfg_policy_unknown" else "error"
    assert f.severity == CODES[code].severity == expected


def test_subdivisions_above_batch_is_not_also_the_divisibility_warning(tmp_path: Path) -> None:
    found = _check(tmp_path, BASE.replace("subdivisions=8", "subdivisions=100"))
    assert [f.code for f in found] == ["cfg_subdivisions_above_batch"]


def test_no_max_batches_is_an_error_not_the_rule_warning(tmp_path: Path) -> None:
    found = _check(tmp_path, BASE.replace("max_batches=6000\n", ""))
    assert "max_batches_rule" not in {f.code for f in found}
    assert "steps_rule" not in {f.code for f in found}


def test_an_alexeyab_layer_is_unknown_to_pjreddie_only(tmp_path: Path) -> None:
    text = BASE.replace("[yolo]", "[sam]\nfrom=-1\n\n[yolo]")
    assert [f.code for f in _check(tmp_path, text, "alexeyab")] == []
    f = _only(_check(tmp_path, text, "pjreddie"), "cfg_unknown_section")
    assert "pjreddie" in f.message


def test_a_close_section_name_gets_a_suggestion(tmp_path: Path) -> None:
    text = BASE.replace("[convolutional]", "[convolutinal]")
    f = _only(_check(tmp_path, text), "cfg_unknown_section")
    assert "did you mean [convolutional]?" in f.fix


def test_filters_message_speaks_of_the_layer_kind_it_is_under(tmp_path: Path) -> None:
    yolo = _only(_check(tmp_path, BASE.replace("filters=21", "filters=18")), "cfg_filters_mismatch")
    assert "(classes + 5) × masks = (2 + 5) × 3" in yolo.message
    assert "= for" not in yolo.message
    region = (
        BASE.replace("[yolo]", "[region]").replace("mask=0,1,2\n", "").replace("num=3", "num=5")
    )
    r = _only(_check(tmp_path, region.replace("filters=21", "filters=30")), "cfg_filters_mismatch")
    assert "it must be 35 = num × (classes + coords + 1) = 5 × (2 + 4 + 1)" in r.message
    assert "[region]" in r.message
    assert "[yolo]" not in CODES["cfg_filters_mismatch"].title


def test_a_huge_binary_line_is_quoted_short(tmp_path: Path) -> None:
    cfg = tmp_path / "junk.cfg"
    cfg.write_bytes(b"[net]\n" + bytes(range(1, 9)) + b"\xff" * 5000 + b"\n")
    (f,) = check_cfg(cfg, 2, 0)
    assert f.code == "cfg_syntax" and f.line == 2
    assert len(f.message) < 300 and "…" in f.message


def test_an_endless_number_does_not_hang_the_cfg_reader(tmp_path: Path) -> None:
    (f,) = _check(
        tmp_path, BASE.replace("learning_rate=0.001", "learning_rate=" + "9" * 50_000 + "x")
    )
    assert f.code == "cfg_value_not_a_number" and len(f.message) < 400


def test_classes_beyond_any_dataset_is_an_error_not_an_overflow(tmp_path: Path) -> None:
    data = tmp_path / "obj.data"
    data.write_text("classes=99999999999999999999\ntrain=t.txt\nnames=n\n")
    info, found = check_data_file(data, "pjreddie", managed_backup=True)
    assert info.classes is None
    (f,) = found
    assert f.code == "data_syntax" and f.line == 1 and "set classes" in f.fix
    assert DataFile("classes=100000\n").classes == 100000


def test_the_steps_rule_never_suggests_steps_it_would_refuse(tmp_path: Path) -> None:
    text = BASE.replace("max_batches=6000", "max_batches=3").replace("steps=4800,5400", "steps=1")
    (f,) = [f for f in _check(tmp_path, text) if f.code == "steps_rule"]
    assert f.fix == "set steps=2"
    text = BASE.replace("max_batches=6000", "max_batches=10").replace("steps=4800,5400", "steps=1")
    (f,) = [f for f in _check(tmp_path, text) if f.code == "steps_rule"]
    assert f.fix == "set steps=8,9"
