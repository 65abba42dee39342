"""Dataset pre-flight check: one injected instance of every fault is reported once, at the right
file and line, and a clean generated dataset gives no finding at all.

The clean dataset comes from `make_shapes_dataset`; faults are injected into copies of its
files in a separate folder and new list/.data files, so the clean dataset stays clean and its
facts stay in the shared cache (which keeps the many checks here fast).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageFile

from supervisor.dataset.check import CheckReport, check_dataset
from supervisor.dataset.findings import CODES
from supervisor.dataset.render import format_report
from supervisor.dataset.synth import ShapesDataset, make_shapes_dataset

Key = tuple[str, str | None, int | None]  # code, file, line

CFG_TEMPLATE = """[net]
batch=64
subdivisions={subdivisions}
width={width}
height=96
channels=3
learning_rate=0.001
burn_in=100
max_batches={max_batches}
policy=steps
steps={steps}
scales=.1,.1

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[convolutional]
size=1
stride=1
pad=1
filters=21
activation=linear

[yolo]
mask=3,4,5
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes={classes1}
num=6

[route]
layers=-4

[convolutional]
size=1
stride=1
pad=1
filters={filters2}
activation=linear

[yolo]
mask=0,1,2
anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319
classes=2
num=6
"""
CLEAN_CFG = dict(
    subdivisions=8, width=96, max_batches=6000, steps="4800,5400", classes1=2, filters2=21
)


def keys(report: CheckReport) -> list[Key]:
    return [(f.code, f.file, f.line) for f in report.findings]


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def line_no(text: str, needle: str, after: int = 0) -> int:
    """1-based number of the first line after line `after` that equals `needle`."""
    lines = text.splitlines()
    for i in range(after, len(lines)):
        if lines[i] == needle:
            return i + 1
    raise AssertionError(f"{needle!r} not in text")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dscheck")


@pytest.fixture(scope="module")
def cache(work: Path) -> Path:
    return work / "cache"


@pytest.fixture(scope="module")
def clean(work: Path) -> ShapesDataset:
    return make_shapes_dataset(work / "clean", train=300, valid=60)


def write_data(path: Path, ds: ShapesDataset, **override: str | None) -> Path:
    """A .data file like the clean one; a key set to None is left out."""
    values: dict[str, str | None] = {
        "classes": "2",
        "train": str(ds.train),
        "valid": str(ds.valid),
        "names": str(ds.names),
        "backup": str(ds.backup),
    }
    values.update(override)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if v is not None))
    return path


def label_rows(image: str) -> list[str]:
    return lines_of(Path(image).with_suffix(".txt"))


# -- clean --------------------------------------------------------------------------------


def test_clean_dataset_and_cfg_give_no_finding(
    clean: ShapesDataset, work: Path, cache: Path
) -> None:
    cfg = work / "clean.cfg"
    cfg.write_text(CFG_TEMPLATE.format(**CLEAN_CFG))
    report = check_dataset(clean.data, cfg, cache_dir=cache)
    assert keys(report) == []
    assert report.exit_status() == 0 and report.exit_status(strict=True) == 0
    s = report.summary
    assert s.classes == 2 and s.names == ("circle", "square")
    train, valid = s.splits
    assert (train.images, valid.images) == (300, 60)
    # Independent count from the generator's own numbers.
    assert dict(zip(s.names, s.objects_per_class(), strict=True)) == clean.objects
    negatives = sum(1 for p in lines_of(clean.train) if not label_rows(p))
    assert train.negatives == negatives
    assert s.image_sizes == ((96, 96, 360),)


# -- every image, label and split fault in one dataset ------------------------------------


@dataclass
class Faulty:
    data: Path
    train_list: Path
    valid_list: Path
    expected: list[Key]


def _with_rows(ds: ShapesDataset, want_rows: bool) -> Callable[[int], bool]:
    train = lines_of(ds.train)
    return lambda i: bool(label_rows(train[i])) == want_rows and train[i].endswith(".jpg")


@pytest.fixture(scope="module")
def faulty(clean: ShapesDataset, work: Path) -> Faulty:
    root = work / "faulty"
    f = root / "faults"
    f.mkdir(parents=True)
    train = lines_of(clean.train)
    valid = lines_of(clean.valid)
    expected: list[Key] = []
    with_rows = [i for i in range(len(train)) if _with_rows(clean, True)(i)]
    pick = iter(with_rows)
    used: set[int] = set()

    def clone(name: str) -> tuple[str, str]:
        """Copy a training image with boxes into faults/; the copy replaces it in the list."""
        i = next(pick)
        used.add(i)
        src = Path(train[i])
        img, lbl = f / f"{name}{src.suffix}", f / f"{name}.txt"
        shutil.copy(src, img)
        shutil.copy(src.with_suffix(".txt"), lbl)
        train[i] = str(img)
        return str(img), str(lbl)

    def append_row(name: str, row: str, code: str) -> None:
        _, lbl = clone(name)
        n = len(lines_of(Path(lbl)))
        with open(lbl, "a") as fh:
            fh.write(row + "\n")
        expected.append((code, lbl, n + 1))

    append_row("columns", "0 0.5 0.5 0.1", "label_columns")
    append_row("notint", "1.0 0.5 0.5 0.2 0.2", "label_class_not_integer")
    append_row("nan", "0 0.5 abc 0.2 0.2", "label_not_a_number")
    append_row("range", "2 0.5 0.5 0.2 0.2", "label_class_out_of_range")
    append_row("pixels", "0 48 48 20 20", "label_not_normalized")
    append_row("negative", "0 -0.2 0.5 0.1 0.1", "label_negative")
    append_row("outside", "0 0.95 0.5 0.2 0.2", "box_outside_image")
    append_row("tiny_box", "1 0.5 0.5 0.005 0.2", "box_too_small")
    _, lbl = clone("duprow")
    first = lines_of(Path(lbl))[0]
    with open(lbl, "a") as fh:
        fh.write(first + "\n")
    expected.append(("label_duplicate_row", lbl, len(lines_of(Path(lbl)))))
    _, lbl = clone("bom")
    Path(lbl).write_bytes(b"\xef\xbb\xbf" + Path(lbl).read_bytes())
    expected.append(("label_bom", lbl, 1))
    _, lbl = clone("nolabel")
    os.remove(lbl)
    expected.append(("label_missing", lbl, None))

    img, _ = clone("cut")
    data = Path(img).read_bytes()
    Path(img).write_bytes(data[: len(data) // 2])
    expected.append(("jpeg_truncated", img, None))
    img, _ = clone("cmyk")
    Image.open(img).convert("CMYK").save(img)
    expected.append(("image_cmyk", img, None))
    img, _ = clone("gray")
    Image.open(img).convert("L").save(img)
    expected.append(("image_grayscale", img, None))

    extra: list[tuple[str, str]] = []  # (image, label text or "" for none) appended to train

    def add(name: str, label: str | None = "") -> str:
        path = str(f / name)
        if label is not None:
            Path(path).with_suffix(".txt").write_text(label)
        extra.append((path, ""))
        return path

    empty = add("empty.jpg")
    Path(empty).write_bytes(b"")
    expected.append(("image_empty", empty, None))
    garbage = add("garbage.png")
    Path(garbage).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    expected.append(("image_corrupt", garbage, None))
    small = add("small.png")
    Image.new("RGB", (20, 20), (200, 30, 30)).save(small)
    expected.append(("image_too_small", small, None))
    expected.append(("mixed_resolutions", None, None))
    bmp = add("picture.bmp", label=None)
    Image.open(valid[0]).save(bmp)  # a valid-split picture: no overlap with train by content
    expected.append(("label_path_is_image", bmp, None))
    original = train[next(i for i in range(len(train)) if i not in used)]
    dup = add("dup" + Path(original).suffix, label="")
    shutil.copy(original, dup)
    expected.append(("duplicate_images", dup, None))

    # Split faults.
    free = [i for i in range(len(train)) if i not in used][1:]
    valid_extra: list[str] = []
    valid_extra.append(train[free[0]])
    copy = f / ("copy_in_valid" + Path(train[free[1]]).suffix)
    shutil.copy(train[free[1]], copy)
    shutil.copy(Path(train[free[1]]).with_suffix(".txt"), copy.with_suffix(".txt"))
    valid_extra.append(str(copy))
    expected.append(("split_overlap_content", str(copy), None))
    near = f / "near.jpg"
    src = Image.open(train[free[2]]).convert("RGB")
    ImageEnhance.Brightness(src).enhance(1.1).save(near, quality=80)
    shutil.copy(Path(train[free[2]]).with_suffix(".txt"), near.with_suffix(".txt"))
    valid_extra.append(str(near))
    expected.append(("near_duplicate_across_splits", str(near), None))

    train_list = root / "train.txt"
    ghost = str(f / "ghost.jpg")
    relative = f / "rel.jpg"
    shutil.copy(valid[1], relative)
    shutil.copy(Path(valid[1]).with_suffix(".txt"), relative.with_suffix(".txt"))
    train_lines = [
        *train,
        *(p for p, _ in extra),
        ghost,
        train[free[3]],
        "faults/rel.jpg",
    ]
    train_list.write_text("".join(f"{p}\n" for p in train_lines))
    n = len(train_lines)
    expected.append(("image_missing", str(train_list), n - 2))
    expected.append(("image_listed_twice", str(train_list), n - 1))
    expected.append(("image_path_relative", str(train_list), n))
    valid_list = root / "valid.txt"
    valid_list.write_text("".join(f"{p}\n" for p in [*valid[2:], *valid_extra]))
    expected.append(("split_overlap_path", str(valid_list), len(valid) - 2 + 1))
    data = write_data(root / "obj.data", clean, train=str(train_list), valid=str(valid_list))
    return Faulty(data, train_list, valid_list, expected)


def test_every_injected_fault_is_reported_once_at_its_place(faulty: Faulty, cache: Path) -> None:
    report = check_dataset(faulty.data, None, cache_dir=cache)
    assert sorted(keys(report), key=str) == sorted(faulty.expected, key=str)
    for f in report.findings:
        assert f.severity == CODES[f.code].severity
        assert f.message and f.fix
    assert report.exit_status() == 2


def test_the_fault_set_covers_every_per_image_and_split_code(faulty: Faulty) -> None:
    codes = {c for c, _, _ in faulty.expected}
    per_dataset = {  # reported from .data/.cfg/list/balance cases below
        "data_syntax", "data_key_missing", "data_valid_missing", "list_missing", "names_missing",
        "names_count_mismatch", "backup_missing", "backup_not_writable", "cfg_syntax",
        "cfg_classes_mismatch", "cfg_filters_mismatch", "batch_not_divisible",
        "size_not_multiple_of_32", "max_batches_rule", "steps_rule", "list_crlf",
        "valid_too_small", "valid_class_too_few", "class_missing_in_valid",
        "class_missing_in_train", "class_imbalance", "no_negatives", "cache_unavailable",
        "image_too_large", "near_duplicates_skipped",
        # covered by tests/test_hostile_cfg.py and tests/test_hostile_dataset.py
        "cfg_unknown_section", "cfg_mask_out_of_range", "cfg_subdivisions_above_batch",
        "cfg_anchors_mismatch",
        "cfg_size_invalid", "cfg_value_not_a_number", "cfg_max_batches_missing",
        "cfg_policy_incomplete", "cfg_policy_unknown", "cfg_steps_not_increasing",
        "label_too_many_rows",
    }  # fmt: skip
    assert codes | per_dataset == set(CODES)


def test_parallel_and_serial_agree_and_cache_answers_a_recheck(faulty: Faulty, work: Path) -> None:
    fresh = work / "cache-par"
    calls: list[tuple[int, int]] = []
    first = check_dataset(
        faulty.data, None, workers=2, cache_dir=fresh, progress=lambda d, t: calls.append((d, t))
    )
    assert first.summary.from_cache == 0 and first.summary.workers == 2
    total = first.summary.files_checked
    assert calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    serial = check_dataset(faulty.data, None, workers=1, cache_dir=work / "cache-ser")
    assert keys(serial) == keys(first)
    again = check_dataset(faulty.data, None, workers=2, cache_dir=fresh)
    missing = first.summary.splits[0].missing  # nothing to cache for a file that is not there
    assert missing == 1
    assert again.summary.from_cache == total - missing and again.summary.workers == 0
    assert keys(again) == keys(first)
    strip = lambda r: {k: v for k, v in r.to_json()["summary"].items() if k != "checked"}  # noqa: E731
    assert strip(again) == strip(first)


def test_a_changed_label_file_is_checked_again(clean: ShapesDataset, work: Path) -> None:
    root = work / "changed"
    (root / "t").mkdir(parents=True)
    paths = []
    for p in lines_of(clean.train)[:40]:
        dst = root / "t" / Path(p).name
        shutil.copy(p, dst)
        shutil.copy(Path(p).with_suffix(".txt"), dst.with_suffix(".txt"))
        paths.append(str(dst))
    train = root / "train.txt"
    train.write_text("".join(f"{p}\n" for p in paths))
    data = write_data(root / "obj.data", clean, train=str(train))
    cache = work / "cache-changed"
    before = check_dataset(data, None, cache_dir=cache)
    assert not [k for k in keys(before) if k[0].startswith("label")]
    lbl = Path(paths[3]).with_suffix(".txt")
    lbl.write_text(lbl.read_text() + "7 0.5 0.5 0.1 0.1\n")
    after = check_dataset(data, None, cache_dir=cache)
    assert ("label_class_out_of_range", str(lbl), len(lines_of(lbl))) in keys(after)
    # A label edit does not re-decode its image; an image edit does.
    assert after.summary.from_cache == before.summary.files_checked
    img = Path(paths[5])
    if img.suffix != ".jpg":
        img = next(Path(p) for p in paths if p.endswith(".jpg"))
    img.write_bytes(img.read_bytes()[:-100])
    third = check_dataset(data, None, cache_dir=cache)
    assert ("jpeg_truncated", str(img), None) in keys(third)
    assert third.summary.from_cache == before.summary.files_checked - 1


# -- .data, list and balance faults, each in its own .data over the clean dataset ---------


def _subset_with_labels(
    clean: ShapesDataset, work: Path, name: str, split: str, keep: Callable[[int, str], bool]
) -> Path:
    """A list of the split's images (symlinked) whose label rows pass `keep(class, row)`."""
    folder = work / name
    folder.mkdir()
    src_list = clean.train if split == "train" else clean.valid
    out = []
    for p in lines_of(src_list):
        dst = folder / Path(p).name
        dst.symlink_to(p)
        rows = [r for r in label_rows(p) if keep(int(r.split()[0]), r)]
        dst.with_suffix(".txt").write_text("".join(f"{r}\n" for r in rows))
        out.append(str(dst))
    lst = work / f"{name}.txt"
    lst.write_text("".join(f"{p}\n" for p in out))
    return lst


def _kept_first(n: int) -> Callable[[int, str], bool]:
    """Keep every class-0 row and only the first `n` class-1 rows."""
    seen = [0]

    def keep(cls: int, _row: str) -> bool:
        if cls == 0:
            return True
        seen[0] += 1
        return seen[0] <= n

    return keep


def test_data_file_faults(clean: ShapesDataset, work: Path, cache: Path) -> None:
    d = work / "datafaults"
    d.mkdir()
    names3 = d / "three.names"
    names3.write_text("circle\nsquare\ntriangle\n")
    crlf = d / "crlf.txt"
    crlf.write_bytes(clean.train.read_bytes().replace(b"\n", b"\r\n"))
    unwritable = Path("/proc") if os.geteuid() == 0 else d / "ro"
    if unwritable != Path("/proc"):
        unwritable.mkdir()
        unwritable.chmod(0o555)
    cases: list[tuple[str, dict[str, str | None], Callable[[Path], Key]]] = [
        ("no_names", {"names": None}, lambda p: ("data_key_missing", str(p), None)),
        ("no_valid", {"valid": None}, lambda p: ("data_valid_missing", str(p), None)),
        ("no_list", {"train": str(d / "nope.txt")}, lambda p: ("list_missing", str(p), 2)),
        ("no_names_file", {"names": str(d / "x.names")}, lambda p: ("names_missing", str(p), 4)),
        ("names3", {"names": str(names3)}, lambda p: ("names_count_mismatch", str(p), 1)),
        ("no_backup", {"backup": str(d / "nobackup")}, lambda p: ("backup_missing", str(p), 5)),
        ("ro_backup", {"backup": str(unwritable)}, lambda p: ("backup_not_writable", str(p), 5)),
        ("crlf", {"train": str(crlf)}, lambda p: ("list_crlf", str(crlf), 1)),
    ]
    for name, override, expect in cases:
        data = write_data(d / f"{name}.data", clean, **override)
        report = check_dataset(data, None, cache_dir=cache)
        assert keys(report) == [expect(data)], name
    broken = d / "broken.data"
    broken.write_text(f"classes=2\ntrain {clean.train}\n")
    report = check_dataset(broken, None, cache_dir=cache)
    assert keys(report) == [("data_syntax", str(broken), 2)]
    assert "key=value" in report.findings[0].fix
    missing = check_dataset(d / "absent.data", None, cache_dir=cache)
    assert keys(missing) == [("data_syntax", str(d / "absent.data"), None)]


def test_managed_backup_skips_the_backup_checks(clean: ShapesDataset, work: Path) -> None:
    data = write_data(work / "managed.data", clean, backup=str(work / "nowhere"))
    assert keys(check_dataset(data, None, cache_dir=work / "cache", managed_backup=True)) == []


def test_split_and_balance_faults(clean: ShapesDataset, work: Path, cache: Path) -> None:
    valid_rows = [r for p in lines_of(clean.valid) for r in label_rows(p)]
    train_rows = [r for p in lines_of(clean.train) for r in label_rows(p)]
    per_class = lambda rows, c: sum(1 for r in rows if r.split()[0] == str(c))  # noqa: E731

    small_valid = work / "valid30.txt"
    first30 = lines_of(clean.valid)[:30]
    small_valid.write_text("".join(f"{p}\n" for p in first30))
    rows30 = [r for p in first30 for r in label_rows(p)]
    assert min(per_class(rows30, 0), per_class(rows30, 1)) >= 10  # only the share is too small

    no_sq_valid = _subset_with_labels(clean, work, "v_nosq", "valid", lambda c, _: c == 0)
    few_sq_valid = _subset_with_labels(clean, work, "v_fewsq", "valid", _kept_first(3))
    assert per_class(valid_rows, 1) > 3
    rare = per_class(train_rows, 0) // 12
    rare_train = _subset_with_labels(clean, work, "t_rare", "train", _kept_first(rare))
    no_sq_train = _subset_with_labels(clean, work, "t_nosq", "train", lambda c, _: c == 0)
    no_neg = work / "t_noneg.txt"
    no_neg.write_text("".join(f"{p}\n" for p in lines_of(clean.train) if label_rows(p)))

    cases = [
        ({"valid": str(small_valid)}, "valid_too_small", small_valid),
        ({"valid": str(no_sq_valid)}, "class_missing_in_valid", no_sq_valid),
        ({"valid": str(few_sq_valid)}, "valid_class_too_few", few_sq_valid),
        ({"train": str(rare_train)}, "class_imbalance", rare_train),
        ({"train": str(no_sq_train)}, "class_missing_in_train", no_sq_train),
        ({"train": str(no_neg)}, "no_negatives", no_neg),
    ]
    for override, code, lst in cases:
        data = write_data(work / f"{code}.data", clean, **override)
        report = check_dataset(data, None, cache_dir=cache)
        assert keys(report) == [(code, str(lst), None)], code


# -- cfg ----------------------------------------------------------------------------------


def test_cfg_faults_at_their_lines(clean: ShapesDataset, work: Path, cache: Path) -> None:
    bad = dict(CLEAN_CFG, subdivisions=6, width=100, max_batches=2000, steps="1600,1800")
    bad.update(classes1=3, filters2=24)
    cfg = work / "bad.cfg"
    text = CFG_TEMPLATE.format(**bad)
    cfg.write_text(text)
    yolo2 = line_no(text, "[yolo]", line_no(text, "[yolo]"))
    expected = {
        ("cfg_classes_mismatch", str(cfg), line_no(text, "classes=3")),
        ("cfg_filters_mismatch", str(cfg), line_no(text, "filters=24")),
        ("batch_not_divisible", str(cfg), line_no(text, "subdivisions=6")),
        ("size_not_multiple_of_32", str(cfg), line_no(text, "width=100")),
        ("max_batches_rule", str(cfg), line_no(text, "max_batches=2000")),
    }
    report = check_dataset(clean.data, cfg, cache_dir=cache)
    assert set(keys(report)) == expected and len(report.findings) == len(expected)
    filters = next(f for f in report.findings if f.code == "cfg_filters_mismatch")
    assert "21" in filters.fix and f"line {yolo2}" in filters.message

    steps_cfg = work / "steps.cfg"
    text = CFG_TEMPLATE.format(**dict(CLEAN_CFG, steps="3000,5400"))
    steps_cfg.write_text(text)
    report = check_dataset(clean.data, steps_cfg, cache_dir=cache)
    assert keys(report) == [("steps_rule", str(steps_cfg), line_no(text, "steps=3000,5400"))]
    assert "steps=4800,5400" in report.findings[0].fix

    broken = work / "broken.cfg"
    broken.write_text("[net]\nbatch=64\nthis is not an option\n")
    report = check_dataset(clean.data, broken, cache_dir=cache)
    assert keys(report) == [("cfg_syntax", str(broken), 3)]


# -- darknet's label rule per flavour -----------------------------------------------------


def test_label_files_are_found_by_each_flavours_rule(clean: ShapesDataset, work: Path) -> None:
    # Images in an `images/` folder with labels beside them: AlexeyAB reads those (it only
    # rewrites COCO/VOC folders), pjreddie looks in `labels/` instead (facts §4b).
    folder = work / "flav" / "images"
    folder.mkdir(parents=True)
    paths = []
    for p in lines_of(clean.train)[:30]:
        dst = folder / Path(p).name
        shutil.copy(p, dst)
        shutil.copy(Path(p).with_suffix(".txt"), dst.with_suffix(".txt"))
        paths.append(str(dst))
    train = work / "flav" / "train.txt"
    train.write_text("".join(f"{p}\n" for p in paths))
    data = write_data(work / "flav" / "obj.data", clean, train=str(train))
    cache = work / "cache"
    alexeyab = check_dataset(data, None, flavour="alexeyab", cache_dir=cache)
    assert not [k for k in keys(alexeyab) if k[0] == "label_missing"]
    gone = Path(paths[0]).with_suffix(".txt")
    gone.unlink()
    alexeyab = check_dataset(data, None, flavour="alexeyab", cache_dir=cache)
    assert [(f.code, f.file, f.severity) for f in alexeyab.findings] == [
        ("label_missing", str(gone), "warning")  # AlexeyAB trains on, without the boxes
    ]
    assert alexeyab.exit_status() == 0
    pjreddie = check_dataset(data, None, flavour="pjreddie", cache_dir=cache)
    missing = [f for f in pjreddie.findings if f.code == "label_missing"]
    expected = {p.replace("/flav/images/", "/flav/labels/")[:-4] + ".txt" for p in paths}
    assert {f.file for f in missing} == expected
    assert "exit status 0" in missing[0].message


# -- report forms -------------------------------------------------------------------------


def test_json_form_is_complete_and_serialisable(faulty: Faulty, cache: Path) -> None:
    report = check_dataset(faulty.data, None, cache_dir=cache)
    doc = json.loads(json.dumps(report.to_json()))
    assert set(doc) == {"summary", "findings"}
    assert len(doc["findings"]) == len(report.findings)
    for f in doc["findings"]:
        assert set(f) == {"severity", "code", "file", "line", "message", "fix"}
        assert f["severity"] in ("error", "warning", "note")
    s = doc["summary"]
    assert s["findings"] == {
        sev: sum(1 for f in doc["findings"] if f["severity"] == sev)
        for sev in ("error", "warning", "note")
    }
    assert s["splits"]["train"]["images"] == len(set(lines_of(faulty.train_list)))
    assert s["splits"]["train"]["missing"] == 1
    assert set(s["objects_per_class"]) == {"circle", "square"}
    assert {"width": 20, "height": 20, "images": 1} in s["image_sizes"]


def test_exit_status_levels(clean: ShapesDataset, work: Path, cache: Path) -> None:
    warn = write_data(work / "warnonly.data", clean, valid=None)
    report = check_dataset(warn, None, cache_dir=cache)
    assert report.exit_status() == 0 and report.exit_status(strict=True) == 1


def test_human_report_groups_many_findings_of_one_code(
    clean: ShapesDataset, work: Path, cache: Path
) -> None:
    lst = work / "ghosts.txt"
    ghosts = [str(work / "gone" / f"g{i}.jpg") for i in range(12)]
    lst.write_text("".join(f"{p}\n" for p in [*lines_of(clean.train), *ghosts]))
    data = write_data(work / "ghosts.data", clean, train=str(lst))
    report = check_dataset(data, None, cache_dir=cache)
    assert [f.code for f in report.findings] == ["image_missing"] * 12
    text = format_report(report)
    assert "Errors (12)" in text
    assert "image_missing — listed image not found (12)" in text
    assert "… and 7 more" in text
    shown = [g for g in ghosts if g in text]
    assert len(shown) == 5
    assert text.count("fix: fix the path in the list") == 1  # one fix for the whole group
    assert "Result: 12 errors, 0 warnings, 0 notes" in text
    assert f"train        {300 + 12} images, 12 missing" in text


# -- damaged files the decoder alone would miss, and the fast paths of large images -------


def _png_chunk(data: bytes, kind: bytes) -> tuple[int, int]:
    """(offset, data length) of the first chunk of `kind`, read from the PNG layout itself."""
    pos = 8
    while True:
        length = int.from_bytes(data[pos : pos + 4], "big")
        if data[pos + 4 : pos + 8] == kind:
            return pos, length
        pos += 12 + length


def _with_crc(data: bytearray, pos: int, length: int) -> bytes:
    """The chunk at `pos` given a correct CRC again: the damage is in the stream, not the copy."""
    crc = zlib.crc32(bytes(data[pos + 4 : pos + 8 + length]))
    data[pos + 8 + length : pos + 12 + length] = crc.to_bytes(4, "big")
    return bytes(data)


def test_damaged_pngs_and_a_jpeg_cut_mid_scan_are_found(
    clean: ShapesDataset, work: Path, cache: Path
) -> None:
    folder = work / "damaged"
    folder.mkdir()
    train = lines_of(clean.train)
    png = Path(next(p for p in train if p.endswith(".png")))
    jpg = Path(next(p for p in train if p.endswith(".jpg")))
    data = png.read_bytes()
    pos, length = _png_chunk(data, b"IDAT")
    flipped = bytearray(data)
    flipped[pos + 8 + length // 2] ^= 0x01  # one bit in the pixel data: only the CRC knows
    bad_stream = bytearray(data)
    bad_stream[pos + 8 : pos + 10] = b"\x00\x00"  # zlib header check fails
    iend, _ = _png_chunk(data, b"IEND")
    jpeg = jpg.read_bytes()
    scan = jpeg.rfind(b"\xff\xda")
    damaged = {
        "bitflip.png": (bytes(flipped), "image_corrupt", "CRC"),
        "stream.png": (_with_crc(bad_stream, pos, length), "image_corrupt", "cannot be decoded"),
        "no_iend.png": (data[:iend], "image_corrupt", "IEND"),
        "midscan.jpg": (jpeg[: scan + (len(jpeg) - scan) // 2], "jpeg_truncated", "end-of-image"),
    }
    listed = []
    for name, (blob, _, _) in damaged.items():
        (folder / name).write_bytes(blob)
        shutil.copy(png.with_suffix(".txt"), (folder / name).with_suffix(".txt"))
        listed.append(str(folder / name))
    lst = work / "damaged.txt"
    lst.write_text("".join(f"{p}\n" for p in [*train, *listed]))
    data_file = write_data(work / "damaged.data", clean, train=str(lst))
    report = check_dataset(data_file, None, cache_dir=cache)
    assert sorted(keys(report)) == sorted(
        (code, str(folder / name), None) for name, (_, code, _) in damaged.items()
    )
    for f in report.findings:
        assert damaged[Path(f.file or "").name][2] in f.message, f.message
    # Headers only: a zlib stream broken under a correct CRC shows only when it is inflated,
    # which is the decode; the chunk CRCs, IEND and the JPEG end marker need no pixels.
    fast = check_dataset(data_file, None, cache_dir=work / "cache-damaged-fast", decode=False)
    assert sorted(keys(fast), key=str) == sorted(
        [
            *(
                (code, str(folder / name), None)
                for name, (_, code, _) in damaged.items()
                if name != "stream.png"
            ),
            ("near_duplicates_skipped", None, None),
        ],
        key=str,
    )


def test_near_duplicates_among_large_and_palette_images(work: Path) -> None:
    # 320 px: the JPEG decode stops at 1/8 scale and a PNG is reduced before hashing; the
    # 96 px images of the other tests take neither path.
    ds = make_shapes_dataset(work / "large", train=24, valid=6, size=320, seed=3)
    train = lines_of(ds.train)
    source = Image.open(next(p for p in train if p.endswith(".png"))).convert("RGB")
    copies = work / "large" / "copies"
    copies.mkdir()
    brighter = copies / "brighter.png"
    ImageEnhance.Brightness(source).enhance(1.1).save(brighter)
    palette = copies / "palette.png"  # its thumbnail must come from colours, not indices
    source.quantize(256).save(palette)
    src_jpg = Image.open(next(p for p in train if p.endswith(".jpg")))
    recoded = copies / "recoded.jpg"
    src_jpg.save(recoded, quality=70)
    for p in (brighter, palette, recoded):
        p.with_suffix(".txt").write_text("")
    valid = work / "large" / "valid-copies.txt"
    valid.write_text("".join(f"{p}\n" for p in [*lines_of(ds.valid), brighter, palette, recoded]))
    data = write_data(work / "large" / "copies.data", ds, valid=str(valid))
    report = check_dataset(data, None, cache_dir=work / "cache-large")
    near = sorted(f.file or "" for f in report.findings if f.code == "near_duplicate_across_splits")
    # Exactly the three copies: no distinct large image is taken for a near-duplicate.
    assert near == sorted(str(p) for p in (brighter, palette, recoded))


# -- fast check: headers only, no pixels decoded ------------------------------------------

# Faults only decoded pixels show, with the reason; the fast check must find all the others.
NEEDS_PIXELS = {
    # a brighter, re-encoded copy has other bytes (digest) and the same header; only the
    # perceptual hash of its pixels relates it to its training original
    "near_duplicate_across_splits": "perceptual hash of the pixels",
}
SKIPPED = ("near_duplicates_skipped", None, None)


def test_fast_check_finds_every_fault_that_needs_no_pixels(faulty: Faulty, work: Path) -> None:
    report = check_dataset(faulty.data, None, cache_dir=work / "cache-fast-faulty", decode=False)
    expected = [k for k in faulty.expected if k[0] not in NEEDS_PIXELS] + [SKIPPED]
    assert sorted(keys(report), key=str) == sorted(expected, key=str)
    assert (
        report.summary.decode is False and report.to_json()["summary"]["checked"]["decode"] is False
    )
    # Sizes and modes come from the headers: the same summary as a full check's.
    full = check_dataset(faulty.data, None, cache_dir=work / "cache-full-faulty")
    assert (report.summary.image_sizes, report.summary.image_modes) == (
        full.summary.image_sizes,
        full.summary.image_modes,
    )
    assert set(keys(full)) - set(keys(report)) == {
        k for k in faulty.expected if k[0] in NEEDS_PIXELS
    }


def test_fast_check_of_a_clean_dataset_decodes_nothing_and_only_notes_the_skip(
    clean: ShapesDataset, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[str] = []

    def no_load(self: ImageFile.ImageFile) -> None:
        loads.append(str(self.filename))
        raise AssertionError("pixels decoded in a fast check")

    # workers=1 inspects in this process, so the patch sees every decode a fast check tries.
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    report = check_dataset(
        clean.data, None, workers=1, cache_dir=work / "cache-fast-clean", decode=False
    )
    assert loads == []
    assert keys(report) == [SKIPPED]
    note = report.findings[0]
    assert note.severity == "note" and "360 images" in note.message and "--fast" in note.fix
    assert report.exit_status(strict=True) == 0
    assert report.summary.image_sizes == ((96, 96, 360),)
    text = format_report(report)
    assert "no pixels decoded" in text and "near_duplicates_skipped" in text


def test_full_check_after_a_fast_one_decodes_and_finds_the_near_duplicates(
    faulty: Faulty, work: Path
) -> None:
    cache = work / "cache-upgrade"
    fast = check_dataset(faulty.data, None, cache_dir=cache, decode=False)
    assert SKIPPED in keys(fast)
    full = check_dataset(faulty.data, None, cache_dir=cache)
    assert sorted(keys(full), key=str) == sorted(faulty.expected, key=str)
    # Only what a full check would not decode either is taken from the fast entries: the
    # empty file and the PNG whose chunks are broken.
    assert full.summary.from_cache == 2
    assert full.summary.workers > 0


def test_fast_check_after_a_full_one_reuses_the_cache(faulty: Faulty, work: Path) -> None:
    cache = work / "cache-reuse"
    full = check_dataset(faulty.data, None, cache_dir=cache)
    fast = check_dataset(faulty.data, None, cache_dir=cache, decode=False)
    missing = full.summary.splits[0].missing
    assert fast.summary.from_cache == full.summary.files_checked - missing
    assert fast.summary.workers == 0  # nothing inspected again
    # Every hash is in the cache, so even the fast check finds the near-duplicate.
    assert keys(fast) == keys(full)
