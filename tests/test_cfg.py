"""Reading and patching .cfg/.data files; Debian's stock cfgs are read in place."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from supervisor.darknet.cfg import Cfg, CfgError, DataFile, cfg_base, cfg_hash
from supervisor.darknet.jobfiles import prepare_job_files

STOCK = Path("/usr/share/darknet/cfg")
STOCK_CFGS = sorted(STOCK.glob("*.cfg")) if STOCK.is_dir() else []
STOCK_DATA = sorted(STOCK.glob("*.data")) if STOCK.is_dir() else []
needs_stock = pytest.mark.skipif(not STOCK_CFGS, reason="Debian darknet cfgs not installed")


def stock(name: str) -> Path:
    path = STOCK / name
    if not path.exists():
        pytest.skip(f"{path} missing: apt-get install -y darknet")
    return path


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) pairs of replaced lines; fails on anything but 1:1 replacements."""
    a, b = before.split("\n"), after.split("\n")
    pairs = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            continue
        assert op == "replace" and i2 - i1 == j2 - j1, (op, a[i1:i2], b[j1:j2])
        pairs += list(zip(a[i1:i2], b[j1:j2], strict=True))
    return pairs


def lines_matching(path: Path, text: str) -> list[int]:
    return [n for n, line in enumerate(path.read_text().split("\n"), 1) if line.strip() == text]


# -- round trip ------------------------------------------------------------------------------


@needs_stock
@pytest.mark.parametrize("path", STOCK_CFGS + STOCK_DATA, ids=lambda p: p.name)
def test_stock_files_round_trip_byte_identical(path: Path) -> None:
    cls = Cfg if path.suffix == ".cfg" else DataFile
    parsed = cls.load(path)
    assert parsed.text.encode() == path.read_bytes()


@needs_stock
@pytest.mark.parametrize("path", STOCK_CFGS, ids=lambda p: p.name)
def test_stock_cfg_layers_match_their_conv(path: Path) -> None:
    # Every stock detection cfg is a working network, so filters must fit classes/mask.
    for layer in Cfg.load(path).detection_layers():
        assert layer.filters == layer.expected_filters, (path.name, layer.line)


# -- accessors -------------------------------------------------------------------------------


def test_yolov3_tiny_accessors() -> None:
    path = stock("yolov3-tiny.cfg")
    cfg = Cfg.load(path)
    # Values as written in /usr/share/darknet/cfg/yolov3-tiny.cfg ([net] and both [yolo]).
    assert (cfg.batch, cfg.subdivisions, cfg.width, cfg.height) == (1, 1, 416, 416)
    assert (cfg.max_batches, cfg.burn_in, cfg.learning_rate) == (500200, 1000, 0.001)
    assert cfg.policy == "steps"
    assert cfg.steps == (400000, 450000)
    assert cfg.scales == (0.1, 0.1)
    layers = cfg.detection_layers()
    assert [layer.kind for layer in layers] == ["yolo", "yolo"]
    assert [layer.mask for layer in layers] == [(3, 4, 5), (0, 1, 2)]
    anchors = tuple(map(float, (10, 14, 23, 27, 37, 58, 81, 82, 135, 169, 344, 319)))
    for layer in layers:
        assert (layer.classes, layer.random, layer.num, layer.mask_count) == (80, 1, 6, 3)
        assert layer.anchors == anchors
        assert layer.filters == 255
    assert [layer.line for layer in layers] == lines_matching(path, "[yolo]")
    assert [layer.filters_line for layer in layers] == lines_matching(path, "filters=255")
    opt = cfg.net.get("max_batches")
    assert opt is not None and opt.line == lines_matching(path, "max_batches = 500200")[0]


def test_net_defaults_are_darknets_when_keys_are_absent() -> None:
    cfg = Cfg("[net]\nwidth=64\nheight=64\n[yolo]\n")
    assert (cfg.batch, cfg.subdivisions, cfg.max_batches, cfg.burn_in) == (1, 1, 0, 0)
    assert (cfg.learning_rate, cfg.policy, cfg.steps) == (0.001, "constant", ())
    (layer,) = cfg.detection_layers()
    assert (layer.classes, layer.random, layer.num, layer.filters) == (20, 0.0, 1, None)


def test_darknet_reading_quirks() -> None:
    text = (
        "; leading comment\n"
        "[network]\n"
        "  batch =\t64\n"
        "Batch=2\n"  # keys are case-sensitive: not batch
        "batch=8\n"  # a repeated key: darknet uses the first one
        "subdivisions = 1 6\n"  # darknet deletes every space: 16
        "# comment\n"
        "[ conv ]\n"
        "filters=18\n"
        "[yolo]\n"
        "mask = 0, 1, 2\n"
        "random=1 # set 0 when out of memory\n"
        "classes=1\n"
    )
    cfg = Cfg(text)
    assert cfg.net.kind == "net" and cfg.net.name == "network"
    assert (cfg.batch, cfg.subdivisions) == (64, 16)
    other = cfg.net.get("Batch")
    assert other is not None and other.value == "2"
    (layer,) = cfg.detection_layers()
    assert cfg.sections[layer.conv_section or 0].kind == "convolutional"
    assert (layer.filters, layer.mask, layer.random) == (18, (0, 1, 2), 1.0)
    assert cfg.text == text


def test_crlf_and_bom_parse_and_darknet_form_drops_them() -> None:
    text = "\ufeff[net]\r\nbatch=4\r\nsubdivisions=2\r\n"
    cfg = Cfg(text)
    assert (cfg.batch, cfg.subdivisions) == (4, 2)
    assert cfg.text == text and cfg.crlf and cfg.has_bom
    assert cfg.darknet_text() == "[net]\nbatch=4\nsubdivisions=2\n"
    cfg.set_subdivisions(4)
    assert cfg.text == "\ufeff[net]\r\nbatch=4\r\nsubdivisions=4\r\n"


# -- patching --------------------------------------------------------------------------------


def test_set_subdivisions_changes_only_that_line() -> None:
    path = stock("yolov3.cfg")
    before = path.read_text()
    cfg = Cfg.load(path)
    cfg.set_subdivisions(32)
    assert changed_lines(before, cfg.text) == [("subdivisions=16", "subdivisions=32")]
    assert cfg.subdivisions == 32 and cfg.batch == 64


def test_patch_keeps_spacing_around_equals() -> None:
    path = stock("yolov3-tiny.cfg")
    before = path.read_text()
    cfg = Cfg.load(path)
    cfg.set_max_batches(6000)
    cfg.set_size(320, 256)
    assert changed_lines(before, cfg.text) == [
        ("width=416", "width=320"),
        ("height=416", "height=256"),
        ("max_batches = 500200", "max_batches = 6000"),
    ]
    assert Cfg(cfg.text).max_batches == 6000


def test_set_classes_two_gives_filters_21_before_each_yolo() -> None:
    path = stock("yolov3-tiny.cfg")
    before = path.read_text()
    cfg = Cfg.load(path)
    cfg.set_classes(2)
    # (classes + 5) × 3 masks = 21; nothing but the two filters= and two classes= lines change.
    assert changed_lines(before, cfg.text) == [
        ("filters=255", "filters=21"),
        ("classes=80", "classes=2"),
        ("filters=255", "filters=21"),
        ("classes=80", "classes=2"),
    ]
    reread = Cfg(cfg.text)
    assert [(ly.classes, ly.filters) for ly in reread.detection_layers()] == [(2, 21), (2, 21)]


def test_set_classes_on_region_uses_num_and_coords() -> None:
    cfg = Cfg.load(stock("yolov2-tiny-voc.cfg"))
    cfg.set_classes(3)
    (layer,) = cfg.detection_layers()
    assert (layer.classes, layer.filters) == (3, 5 * (3 + 4 + 1))


def test_set_random_in_every_yolo() -> None:
    path = stock("yolov3-spp.cfg")
    before = path.read_text()
    cfg = Cfg.load(path)
    cfg.set_random(0)
    assert changed_lines(before, cfg.text) == [("random=1", "random=0")] * 3


def test_patch_keeps_inline_comment() -> None:
    cfg = Cfg("[net]\nbatch=64\n[conv]\nfilters=18\n[yolo]\nrandom = 1   # 0 if OOM\n")
    cfg.set_random(0)
    assert cfg.text.endswith("random = 0   # 0 if OOM\n")


def test_absent_key_is_added_after_the_sections_last_option() -> None:
    text = "[net]\nbatch=64\n# keep me\n\n[convolutional]\nfilters=1"
    cfg = Cfg(text)
    cfg.set_net("burn_in", 100)
    assert cfg.text == "[net]\nbatch=64\nburn_in=100\n# keep me\n\n[convolutional]\nfilters=1"
    cfg.set_option(1, "size", 3)  # last line had no newline
    assert cfg.text.endswith("[convolutional]\nfilters=1\nsize=3\n")
    assert cfg.burn_in == 100


def test_set_repeated_key_sets_every_copy() -> None:
    cfg = Cfg("[net]\nbatch=64\nbatch=32\n")
    cfg.set_net("batch", 16)
    assert cfg.text == "[net]\nbatch=16\nbatch=16\n"


def test_apply_changes_and_typo_hint() -> None:
    cfg = Cfg.load(stock("yolov3-tiny.cfg"))
    cfg.apply({"classes": 2, "random": 0, "subdivisions": 8, "steps": [4800, 5400]})
    assert cfg.subdivisions == 8 and cfg.steps == (4800, 5400)
    assert {(ly.classes, ly.filters, ly.random) for ly in cfg.detection_layers()} == {(2, 21, 0)}
    with pytest.raises(CfgError, match=r"'subdivision'.*did you mean 'subdivisions'"):
        cfg.apply({"subdivision": 8})


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[convolutional]\nfilters=1\n", 1, "needs [net]"),
        ("# only comments\n\n", 1, "no sections"),
        ("batch=1\n[net]\n", 1, "before any [section]"),
        ("[net]\nbatch 64\n", 2, "neither key=value"),
        ("[net]\nbatch=\n", 2, "has no value"),
        ("[net]\n[yolo] # out\n", 2, "malformed"),
    ],
)
def test_parse_errors_name_line_and_fix(text: str, line: int, words: str) -> None:
    with pytest.raises(CfgError) as err:
        Cfg(text, "my.cfg")
    assert err.value.line == line
    assert words in err.value.problem
    assert str(err.value).startswith(f"my.cfg:{line}: ") and "Fix: " in str(err.value)


@pytest.mark.parametrize(
    ("text", "attr", "line", "words"),
    [
        ("[net]\n\nbatch=sixty\n", "batch", 3, "not a whole number"),
        ("[net]\nlearning_rate=fast\n", "learning_rate", 2, "not a number"),
        ("[net]\nsteps=100,,200\n", "steps", 2, "not a list of whole numbers"),
        ("[net]\nbatch=0\n", "batch", 2, "at least 1"),
        ("[net]\nbatch=4\nsubdivisions=8\n", "mini_batch", 3, "larger than batch"),
        ("[net]\npolicy=steps # lr\n", "policy", 2, "comment as part of the name"),
    ],
)
def test_value_errors_name_line(text: str, attr: str, line: int, words: str) -> None:
    cfg = Cfg(text, "my.cfg")
    with pytest.raises(CfgError) as err:
        getattr(cfg, attr)
    assert err.value.line == line and words in err.value.problem
    assert err.value.path == "my.cfg"


def test_set_classes_refuses_when_no_conv_feeds_yolo() -> None:
    cfg = Cfg("[net]\n[route]\nlayers=-1\n[yolo]\nclasses=1\n", "x.cfg")
    with pytest.raises(CfgError, match=r"\[route\]") as err:
        cfg.set_classes(2)
    assert err.value.line == 4


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CfgError, match="file not found"):
        Cfg.load(tmp_path / "nope.cfg")


# -- hash ------------------------------------------------------------------------------------


def test_cfg_hash_ignores_formatting_but_not_values() -> None:
    a = "[net]\nbatch=64\nsubdivisions=16\n[conv]\nfilters=18\n"
    b = "# same\n[network]\n batch = 64 \n\nsubdivisions=16 ; note\n[convolutional]\nfilters=18"
    assert cfg_hash(a) == cfg_hash(b)
    assert cfg_hash(a) != cfg_hash(a.replace("filters=18", "filters=21"))
    assert cfg_hash(a) != cfg_hash(a.replace("[conv]", "[maxpool]"))
    assert cfg_hash(a) != cfg_hash(a.replace("batch=64", "Batch=64"))
    assert len(cfg_hash(a)) == 64


# -- .data -----------------------------------------------------------------------------------


def test_data_file_parse_and_patch() -> None:
    text = "classes= 2\ntrain  = data/train.txt\n#valid = old.txt\nnames = a#b.names\n"
    data = DataFile(text, "obj.data")
    assert (data.classes, data.train, data.valid) == (2, "data/train.txt", None)
    assert data.names == "a#b.names"  # darknet takes '#' inside a .data value literally
    data.set("names", "/abs/c.names")
    data.set("backup", "/job/backup")
    assert data.text == (
        "classes= 2\ntrain  = data/train.txt\n#valid = old.txt\nnames = /abs/c.names\n"
        "backup = /job/backup\n"
    )


def test_data_file_errors() -> None:
    with pytest.raises(CfgError, match=r"obj\.data:2: .*neither key=value"):
        DataFile("classes=1\ntrain data/train.txt\n", "obj.data")
    with pytest.raises(CfgError, match="classes=two"):
        _ = DataFile("classes=two\n", "obj.data").classes


# -- job dir ---------------------------------------------------------------------------------


def make_dataset(root: Path) -> Path:
    (root / "lists").mkdir(parents=True)
    (root / "lists" / "train.txt").write_text("/x/a.jpg\n")
    (root / "lists" / "valid.txt").write_text("/x/b.jpg\n")
    (root / "obj.names").write_text("cat\ndog\n")
    data = root / "obj.data"
    data.write_text(
        "classes = 2\n# my dataset\ntrain = lists/train.txt\nvalid = lists/valid.txt\n"
        "names = obj.names\nbackup = backup/\n"
    )
    return data


def test_prepare_job_files_layout(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    cfg_src = tmp_path / "yolov3-tiny.custom.cfg"
    cfg_src.write_bytes(stock("yolov3-tiny.cfg").read_bytes().replace(b"\n", b"\r\n"))
    job = tmp_path / "runs" / "demo-1"
    files = prepare_job_files(job, data, cfg_src, cfg_changes={"classes": 2, "batch": 16})

    assert files.base == "yolov3-tiny"  # cut at the FIRST '.'
    assert files.cfg == job / "yolov3-tiny.cfg" and files.data == job / "job.data"
    for d in (files.backup, files.results, files.run):
        assert d.is_dir() and d.parent == job
    assert files.train == tmp_path / "ds" / "lists" / "train.txt"
    assert files.valid == tmp_path / "ds" / "lists" / "valid.txt"
    assert files.names == tmp_path / "ds" / "obj.names"

    written = DataFile.load(files.data)
    assert written.train == str(files.train) and written.names == str(files.names)
    assert (written.backup, written.results) == (str(files.backup), str(files.results))
    assert "# my dataset\n" in files.data.read_text()

    cfg_text = files.cfg.read_bytes()
    assert b"\r" not in cfg_text  # pjreddie would not see [net] with a CR after it
    cfg = Cfg.load(files.cfg)
    assert cfg.batch == 16
    assert {ly.filters for ly in cfg.detection_layers()} == {21}
    assert cfg_src.read_bytes().count(b"\r\n") > 0  # the user's file is untouched

    with pytest.raises(FileExistsError, match="prepared before"):
        prepare_job_files(job, data, cfg_src)


def test_prepare_job_files_relative_path_not_found(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "lists" / "valid.txt").unlink()
    cfg_src = tmp_path / "net.cfg"
    cfg_src.write_text("[net]\nbatch=1\n")
    with pytest.raises(CfgError) as err:
        prepare_job_files(tmp_path / "job", data, cfg_src, search_dirs=[tmp_path / "darknet"])
    msg = str(err.value)
    assert err.value.line == 4 and "valid = lists/valid.txt" in msg
    assert str(tmp_path / "ds" / "lists" / "valid.txt") in msg
    assert str(tmp_path / "darknet" / "lists" / "valid.txt") in msg
    assert not (tmp_path / "job").exists()


def test_prepare_job_files_uses_search_dirs(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    darknet_dir = tmp_path / "darknet"
    (darknet_dir / "lists").mkdir(parents=True)
    (tmp_path / "ds" / "lists" / "valid.txt").rename(darknet_dir / "lists" / "valid.txt")
    cfg_src = tmp_path / "net.cfg"
    cfg_src.write_text("[net]\nbatch=1\n")
    files = prepare_job_files(tmp_path / "job", data, cfg_src, search_dirs=[darknet_dir])
    assert files.valid == darknet_dir / "lists" / "valid.txt"


def test_prepare_job_files_refuses_spaces(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "ds")
    cfg_src = tmp_path / "net.cfg"
    cfg_src.write_text("[net]\nbatch=1\n")
    with pytest.raises(CfgError, match="whitespace"):
        prepare_job_files(tmp_path / "my job", data, cfg_src)


def test_cfg_base() -> None:
    assert cfg_base("/a.b/yolov4-tiny.custom.cfg") == "yolov4-tiny"
    with pytest.raises(CfgError, match=r"starts with '\.'"):
        cfg_base("/x/.cfg")
