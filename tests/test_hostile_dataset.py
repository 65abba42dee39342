"""Hostile datasets (issue 14, points 2, 3 and 8): huge class counts, million-line label files,
decompression bombs and label paths that are not what they seem get a clear finding, quickly."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

from PIL import Image

from supervisor.dataset.check import check_dataset
from supervisor.dataset.images import inspect_image
from supervisor.dataset.labels_check import (
    MAX_LINES,
    MAX_PER_CODE,
    label_findings,
    missing_label_advice,
    parse_label_bytes,
)


def _dataset(root: Path, classes: str = "1", label: bytes = b"0 0.5 0.5 0.2 0.2\n") -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.new("RGB", (64, 64), (120, 40, 10)).save(root / "images" / "a.jpg")
    (root / "labels" / "a.txt").write_bytes(label)
    (root / "train.txt").write_text(f"{root / 'images' / 'a.jpg'}\n")
    (root / "obj.names").write_text("thing\n")
    data = root / "obj.data"
    data.write_text(f"classes={classes}\ntrain={root / 'train.txt'}\nnames={root / 'obj.names'}\n")
    return data


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_class_count_beyond_any_dataset_is_a_finding_not_an_overflow(tmp_path: Path) -> None:
    data = _dataset(tmp_path, classes="99999999999999999999")
    report = check_dataset(data, None, managed_backup=True, cache_dir=tmp_path / "cache")
    (f,) = [f for f in report.findings if f.code == "data_syntax"]
    assert f.file == str(data) and f.line == 1 and "classes=" in f.message
    assert report.exit_status() == 2


def test_a_million_line_label_file_is_checked_quickly_and_briefly(tmp_path: Path) -> None:
    # Every row a different box that is not normalized: one finding each, if uncapped.
    rows = "".join(f"0 0.5 0.5 1.{i:06d} 0.2\n" for i in range(1_000_000))
    data = _dataset(tmp_path, label=rows.encode())
    started = time.perf_counter()
    report = check_dataset(data, None, managed_backup=True, cache_dir=tmp_path / "cache")
    assert time.perf_counter() - started < 5.0
    codes = [f.code for f in report.findings]
    assert codes.count("label_not_normalized") == MAX_PER_CODE + 1
    (long,) = [f for f in report.findings if f.code == "label_too_many_rows"]
    assert long.line is not None and long.line == MAX_LINES + 1
    assert f"{1_000_000 - MAX_LINES:,}" in long.message
    assert long.severity == "warning" and "max=" in long.message
    summary = [f for f in report.findings if f.code == "label_not_normalized"][-1]
    assert "more lines like this" in summary.message
    assert summary.line is not None and summary.line > MAX_PER_CODE


def test_a_file_at_exactly_the_line_limit_is_read_whole() -> None:
    facts = parse_label_bytes(b"0 0.5 0.5 0.1 0.1\n" * MAX_LINES)
    assert facts.unread == 0
    more = parse_label_bytes(b"0 0.5 0.5 0.1 0.1\n" * MAX_LINES + b"0 0.5 0.5 0.1 0.1")
    assert more.unread == 1


def test_findings_of_one_code_are_capped_per_file() -> None:
    facts = parse_label_bytes(b"x y\n" * 500 + b"0 0.5 0.5 0.1\n" * 3)
    found = label_findings(facts, "l.txt", 1, 0, 0, [0])
    assert [f.code for f in found].count("label_columns") == MAX_PER_CODE + 1
    assert "and 483 more lines like this" in found[-1].message
    assert all(len(f.message) < 400 for f in found)


def test_an_endless_label_line_is_quoted_short() -> None:
    facts = parse_label_bytes(b"0 " + b"9" * 100_000 + b"\n")
    (f,) = label_findings(facts, "l.txt", 1, 0, 0, [0])
    assert f.code == "label_columns" and len(f.message) < 200 and "…" in f.message


def test_a_decompression_bomb_reports_its_real_size(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))
    for decode in (True, False):
        facts = inspect_image(str(bomb), decode)
        assert (facts.problem, facts.width, facts.height) == ("too_large", 20000, 20000)
        assert "400,000,000 pixels" in facts.detail and "decompression-bomb limit" in facts.detail
    data = _dataset(tmp_path / "d")
    (tmp_path / "d" / "train.txt").write_text(f"{bomb}\n")
    report = check_dataset(data, None, managed_backup=True, cache_dir=tmp_path / "cache")
    (f,) = [f for f in report.findings if f.code == "image_too_large"]
    assert "20000×20000" in f.message and "0×0" not in f.message


def test_a_bmp_image_under_pjreddie_gets_advice_that_helps(tmp_path: Path) -> None:
    said, fix = missing_label_advice("/d/images/a.bmp", "/d/labels/a.bmp", "pjreddie")
    assert ".jpg .png .JPG .JPEG" in said and "/d/labels/a.bmp" in said
    assert "convert the image to .jpg or .png" in fix and "AlexeyAB" in fix
    assert "create the label file" not in fix
    said, fix = missing_label_advice("/d/images/a.bmp", "/d/images/a.txt", "alexeyab")
    assert "create the label file" in fix and "negative" in said


def test_a_label_path_that_is_a_directory_is_called_one(tmp_path: Path) -> None:
    (tmp_path / "a.txt").mkdir()
    said, fix = missing_label_advice(str(tmp_path / "a.jpg"), str(tmp_path / "a.txt"), "hankai")
    assert "is a directory" in said and "missing" not in said
    assert str(tmp_path / "a.txt") in fix


def test_long_names_and_data_values_are_quoted_short(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    (tmp_path / "obj.names").write_text("n" * 10_000 + "\n")
    data.write_text(data.read_text() + "valid=" + "v" * 10_000 + "\n")
    report = check_dataset(data, None, managed_backup=True, cache_dir=tmp_path / "cache")
    assert "list_missing" in {f.code for f in report.findings}
    assert all(len(f.message) < 400 and len(f.fix) < 400 for f in report.findings)


def test_a_list_that_is_a_directory_is_called_one(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    (tmp_path / "valid").mkdir()
    data.write_text(data.read_text() + f"valid={tmp_path / 'valid'}\n")
    report = check_dataset(data, None, managed_backup=True, cache_dir=tmp_path / "cache")
    (f,) = [f for f in report.findings if f.code == "list_missing"]
    assert "is a directory" in f.message and f.line == 4


def test_a_list_that_is_a_device_is_not_read(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    data.write_text(data.read_text() + "valid=/dev/zero\n")
    report = check_dataset(data, None, managed_backup=True, cache_dir=tmp_path / "cache")
    (f,) = [f for f in report.findings if f.code == "list_missing"]
    assert "not a regular file" in f.message


def test_devices_given_as_names_data_or_cfg_are_not_read(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    data.write_text(data.read_text().replace(str(tmp_path / "obj.names"), "/dev/zero"))
    started = time.perf_counter()
    report = check_dataset(data, Path("/dev/zero"), managed_backup=True, cache_dir=tmp_path / "c")
    assert time.perf_counter() - started < 5.0
    (names,) = [f for f in report.findings if f.code == "names_missing"]
    assert "not a regular file" in names.message
    (cfg,) = [f for f in report.findings if f.code == "cfg_syntax"]
    assert cfg.file == "/dev/zero" and "not a regular file" in cfg.message
    report = check_dataset(Path("/dev/zero"), None, managed_backup=True, cache_dir=tmp_path / "c")
    assert [f.code for f in report.findings] == ["data_syntax"]


def test_the_dataset_check_gives_that_advice_for_a_bmp_and_a_directory(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "images" / "b.bmp")
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # not where pjreddie looks
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "images" / "c.jpg")
    (tmp_path / "labels" / "c.txt").mkdir()
    (tmp_path / "train.txt").write_text(
        "".join(f"{tmp_path / 'images' / n}\n" for n in ("a.jpg", "b.bmp", "c.jpg"))
    )
    report = check_dataset(data, None)
    found = {f.file: f for f in report.findings if f.code == "label_missing"}
    bmp = found[str(tmp_path / "labels" / "b.bmp")]
    assert "convert the image to .jpg or .png" in bmp.fix
    directory = found[str(tmp_path / "labels" / "c.txt")]
    assert "is a directory" in directory.message and "rename or move" in directory.fix
