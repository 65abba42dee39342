"""Per-file readers of the dataset check: the JPEG/PNG header reader answers as Pillow does or
not at all, and the one-regex path for label rows reads each row as the field-by-field path.
"""

from __future__ import annotations

import io
import random
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin

from supervisor.dataset import images as images_module
from supervisor.dataset import labels_check
from supervisor.dataset.headers import read_header
from supervisor.dataset.images import inspect_image
from supervisor.dataset.labels_check import LabelFacts, parse_label_bytes
from supervisor.dataset.reading import read_bytes


def _pillow(data: bytes) -> tuple[str | None, str, int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.format, im.mode, im.width, im.height


def _saved(mode: str, fmt: str, size: tuple[int, int] = (37, 23), **options: object) -> bytes:
    rng = random.Random(7)
    im = Image.new("RGB", size)
    im.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256))] * (size[0] * size[1]))
    im = im.convert(mode)
    out = io.BytesIO()
    im.save(out, fmt, **options)
    return out.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(
    bits: int, colour: int, size: tuple[int, int] = (5, 3), extra: bytes = b"", interlace: int = 0
) -> bytes:
    """A PNG written by hand, for the bit depths and colour types Pillow cannot save."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = b"\0" + bytes(-(-size[0] * channels * bits // 8))
    ihdr = struct.pack(">IIBBBBB", size[0], size[1], bits, colour, 0, 0, interlace)
    plte = _chunk(b"PLTE", bytes(range(12))) if colour == 3 else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + plte
        + extra
        + _chunk(b"IDAT", zlib.compress(row * size[1]))
        + _chunk(b"IEND", b"")
    )


def _icc() -> bytes:
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return bytes(profile.tobytes())


def _exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotated
    exif[0x011A] = TiffImagePlugin.IFDRational(300, 1)
    exif[0x0128] = 2
    return exif.tobytes()


# Files whose header is plain: read_header must answer, and answer as Pillow.
PLAIN: dict[str, Callable[[], bytes]] = {
    "jpeg rgb": lambda: _saved("RGB", "JPEG"),
    "jpeg grey": lambda: _saved("L", "JPEG"),
    "jpeg cmyk": lambda: _saved("CMYK", "JPEG"),
    "jpeg progressive optimized": lambda: _saved("RGB", "JPEG", progressive=True, optimize=True),
    "jpeg 4:4:4 quality 10": lambda: _saved("RGB", "JPEG", subsampling=0, quality=10),
    "jpeg dpi, comment": lambda: _saved("RGB", "JPEG", dpi=(300, 300), comment=b"made here"),
    "jpeg DRI, DNL-free extra segments": lambda: (
        _JPEG[:2] + b"\xff\xdd\x00\x04\x00\x00" + _JPEG[2:]
    ),
    "jpeg exif": lambda: _saved("RGB", "JPEG", exif=_exif()),
    "jpeg icc profile": lambda: _saved("RGB", "JPEG", icc_profile=_icc()),
    "jpeg restart markers": lambda: _saved("RGB", "JPEG", restart_marker_blocks=2),
    "jpeg large": lambda: _saved("RGB", "JPEG", size=(1920, 1080)),
    "png rgb": lambda: _saved("RGB", "PNG"),
    "png rgba": lambda: _saved("RGBA", "PNG"),
    "png grey": lambda: _saved("L", "PNG"),
    "png grey alpha": lambda: _saved("LA", "PNG"),
    "png 1 bit": lambda: _saved("1", "PNG"),
    "png palette": lambda: _saved("P", "PNG"),
    "png 16-bit grey": lambda: _saved("I;16", "PNG"),
    "png dpi": lambda: _saved("RGB", "PNG", dpi=(72, 72)),
    "png gamma, srgb, chromaticity, time": lambda: _png(
        8,
        2,
        extra=_chunk(b"gAMA", struct.pack(">I", 45455))
        + _chunk(b"sRGB", b"\0")
        + _chunk(b"cHRM", bytes(32))
        + _chunk(b"tIME", bytes(7)),
    ),
    "png interlaced": lambda: _png(8, 2, interlace=1),
    **{
        f"png {bits}-bit colour type {colour}": (lambda b=bits, c=colour: _png(b, c))
        for bits, colour in [(2, 0), (4, 0), (16, 2), (1, 3), (2, 3), (4, 3), (16, 4), (16, 6)]
    },
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_header_of_a_plain_file_is_pillows(name: str) -> None:
    data = PLAIN[name]()
    header = read_header(data)
    assert header is not None, f"{name}: the fast path should answer"
    assert (header.format, header.mode, header.width, header.height) == _pillow(data)


def _mpo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 10)).save(
        out, "MPO", save_all=True, append_images=[Image.new("RGB", (20, 10), "red")]
    )
    return out.getvalue()


def _patch_sof(data: bytes, offset: int, value: bytes) -> bytes:
    sof = re.search(rb"\xff[\xc0-\xc2]", data)
    assert sof is not None
    at = sof.start() + 4 + offset
    return data[:at] + value + data[at + len(value) :]


def _apng() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(out, "PNG", save_all=True, append_images=frames[1:])
    return out.getvalue()


_JPEG = _saved("RGB", "JPEG")
# Files read_header must leave to Pillow (it answers None): unusual headers, and headers Pillow
# reads in ways that can fail or change the answer.
UNUSUAL: dict[str, Callable[[], bytes]] = {
    "mpo (multi-picture jpeg)": _mpo,
    "jpeg 12-bit precision": lambda: _patch_sof(_JPEG, 0, b"\x0c"),
    "jpeg 2 components": lambda: _patch_sof(_JPEG, 5, b"\x02"),
    "jpeg zero width": lambda: _patch_sof(_JPEG, 3, b"\0\0"),
    "jpeg over the pixel limit": lambda: _patch_sof(_JPEG, 1, b"\x4e\x20\x4e\x20"),
    "jpeg cut inside its header": lambda: _JPEG[:200],
    "jpeg junk between segments": lambda: _JPEG[:2] + b"\0" + _JPEG[2:],
    "jpeg short JFIF segment": lambda: b"\xff\xd8\xff\xe0\x00\x06JFIF" + _JPEG[20:],
    "jpeg JPG0 extension segment": lambda: _JPEG[:2] + b"\xff\xf0\x00\x04ab" + _JPEG[2:],
    "jpeg DHP segment": lambda: _JPEG[:2] + b"\xff\xde\x00\x04ab" + _JPEG[2:],
    "png transparency": lambda: _saved("P", "PNG", transparency=0),
    "png text": lambda: _png(8, 2, extra=_chunk(b"tEXt", b"Software\0me")),
    "png icc profile": lambda: _saved("RGB", "PNG", icc_profile=_icc()),
    "png animated": _apng,
    "png short gAMA": lambda: _png(8, 2, extra=_chunk(b"gAMA", b"\0\0")),
    "png unknown bit depth": lambda: _png(8, 2)[:24] + b"\x03" + _png(8, 2)[25:],
    "png without IDAT": lambda: _png(8, 2)[:33] + _chunk(b"IEND", b""),
    "gif": lambda: _saved("P", "GIF"),
    "bmp": lambda: _saved("RGB", "BMP"),
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_header_leaves_unusual_files_to_pillow(name: str) -> None:
    assert read_header(UNUSUAL[name]()) is None


@pytest.mark.parametrize("name", sorted({**PLAIN, **UNUSUAL}))
def test_fast_inspection_is_the_same_with_and_without_the_header_reader(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "image"
    path.write_bytes({**PLAIN, **UNUSUAL}[name]())
    with_reader = inspect_image(str(path), decode=False)
    monkeypatch.setattr(images_module, "read_header", lambda data: None)
    assert with_reader == inspect_image(str(path), decode=False)


def test_pillows_verdicts_on_unusual_files_reach_the_facts(tmp_path: Path) -> None:
    cases = {"mpo": _mpo(), "bomb": UNUSUAL["jpeg over the pixel limit"](), "cut": _JPEG[:200]}
    facts = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        facts[name] = inspect_image(str(tmp_path / name), decode=False)
    assert facts["mpo"].format == "MPO" and facts["mpo"].problem is None
    assert facts["bomb"].problem == "too_large"
    # Cut inside its header, the file cannot be decoded at all (not just grey at the bottom).
    assert facts["cut"].problem == "corrupt"


# --- label rows ---------------------------------------------------------------------------


def _rows(facts: LabelFacts) -> tuple[object, ...]:
    return facts.rows, facts.bad, facts.dups, facts.bom


@pytest.mark.parametrize(
    ("text", "rows", "bad"),
    [
        ("0 0.5 0.5 0.1 0.2\n", [(1, 0, 0.5, 0.5, 0.1, 0.2)], []),
        ("  +3\t.5 5. 1e-1 2E0  \r\n", [(1, 3, 0.5, 5.0, 0.1, 2.0)], []),
        ("\n\n1 0 0 0 0", [(3, 1, 0.0, 0.0, 0.0, 0.0)], []),
        ("0\u00a00.5 0.5 0.1 0.2", [(1, 0, 0.5, 0.5, 0.1, 0.2)], []),  # no-break space
        ("0 0.5 0.5 0.1", [], [(1, "label_columns")]),
        ("1.0 0.5 0.5 0.1 0.2", [], [(1, "label_class_not_integer")]),
        ("x 0.5 0.5 0.1 0.2", [], [(1, "label_columns")]),
        ("0 0.5 nan 0.1 0.2", [], [(1, "label_not_a_number")]),
        ("0 0.5 1e999 0.1 0.2", [], [(1, "label_not_a_number")]),
        ("0 0.5 1_0 0.1 0.2", [], [(1, "label_not_a_number")]),
        ("0 0.5 0,5 0.1 0.2", [], [(1, "label_not_a_number")]),
        ("0 1e308 1e308 1e308 1e308", [(1, 0, 1e308, 1e308, 1e308, 1e308)], []),
    ],
)
def test_label_rows(text: str, rows: list[tuple[object, ...]], bad: list[tuple[int, str]]) -> None:
    facts = parse_label_bytes(text.encode())
    assert list(facts.rows) == rows
    assert [(line, code) for line, code, _ in facts.bad] == bad


def test_duplicate_rows_point_at_the_first() -> None:
    facts = parse_label_bytes(b"0 .5 .5 .1 .1\n1 .5 .5 .1 .1\n0 0.5 0.50 .1 .1\n")
    assert [r[0] for r in facts.rows] == [1, 2]
    assert facts.dups == ((3, 1),)


def test_one_regex_rows_read_as_the_field_by_field_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random rows from tokens darknet users write, good and bad; with the row regex disabled
    every row takes the field-by-field path, which must give the very same facts."""
    rng = random.Random(11)
    tokens = ["0", "12", "-1", "+2", "0.5", ".5", "5.", "1e-3", "2E+1", "1.0", "nan", "inf",
              "1e999", "x", "1_0", "0,5", "--1", "0x1", "", "١"]  # fmt: skip
    spaces = [" ", "  ", "\t", "\u00a0", "\u2003", "\x0b", "\r"]
    lines = []
    for _ in range(3000):
        n = rng.choice([4, 5, 5, 5, 5, 6])
        fields = [rng.choice(tokens[:9] if rng.random() < 0.7 else tokens) for _ in range(n)]
        line = "".join(f + rng.choice(spaces) for f in fields).rstrip(" ")
        lines.append(rng.choice(["", " "]) + line)
    data = "\n".join(lines).encode()
    fast = parse_label_bytes(data)
    monkeypatch.setattr(labels_check, "_ROW", re.compile(r"(?!)"))
    slow = parse_label_bytes(data)
    assert _rows(fast) == _rows(slow)
    assert len(fast.rows) > 300 and len(fast.bad) > 300  # both kinds of row were exercised


def test_read_bytes_reads_whole_files_of_any_size(tmp_path: Path) -> None:
    for size in (0, 1, 1 << 20, (1 << 20) + 1, 3 << 20):
        path = tmp_path / f"f{size}"
        data = random.Random(size).randbytes(size)
        path.write_bytes(data)
        assert read_bytes(str(path)) == data
    with pytest.raises(FileNotFoundError):
        read_bytes(str(tmp_path / "missing"))


def _geometry_by_the_rules(
    cx: float, cy: float, w: float, h: float, width: int, height: int
) -> str | None:
    """The box rules of docs/dataset-check.md, in their order, without any shortcut."""
    if max(cx, cy, w, h) > 1.0 + 1e-6:
        return "label_not_normalized"
    if min(cx, cy, w, h) < -1e-6:
        return "label_negative"
    t = labels_check.EDGE_TOLERANCE
    if cx - w / 2 < -t or cy - h / 2 < -t or cx + w / 2 > 1 + t or cy + h / 2 > 1 + t:
        return "box_outside_image"
    small = labels_check.DARKNET_MIN_WH
    tiny = width > 0 and height > 0 and min(w * width, h * height) < labels_check.MIN_BOX_PX
    if w < small or h < small or tiny:
        return "box_too_small"
    return None


def test_box_geometry_shortcut_gives_the_rules_answer() -> None:
    rng = random.Random(5)
    edges = [-0.02, -1e-6, -5e-7, 0.0, 5e-4, 1e-3, 0.005, 0.5, 0.99, 1.0, 1.0000005, 1.005, 1.02]
    seen: set[str | None] = set()
    for _ in range(20000):
        cx, cy, w, h = (
            rng.choice(edges) if rng.random() < 0.5 else rng.uniform(-0.05, 1.05) for _ in range(4)
        )
        width, height = rng.choice([(0, 0), (416, 416), (64, 4000)])
        got = labels_check._geometry(cx, cy, w, h, width, height)
        want = _geometry_by_the_rules(cx, cy, w, h, width, height)
        assert (got[0] if got else None) == want, (cx, cy, w, h, width, height)
        seen.add(want)
    assert len(seen) == 5  # every outcome was reached


def test_a_damaged_exif_block_does_not_hide_the_size() -> None:
    """Metadata darknet never reads is not parsed: garbage in the EXIF block leaves the header."""
    data = PLAIN["jpeg exif"]()
    start = data.index(b"Exif\0\0") + 6
    damaged = data[:start] + bytes(range(200, 240)) + data[start + 40 :]
    header = read_header(damaged)
    assert header is not None and (header.width, header.height, header.mode) == (37, 23, "RGB")


def test_a_damaged_cache_entry_is_a_miss_and_the_others_still_answer(tmp_path: Path) -> None:
    from supervisor.dataset.cache import FactCache, dumps

    cache = FactCache(tmp_path / "c.sqlite3")
    keys = {f"/d/{i}.jpg": (i, i) for i in range(5)}
    cache.put_many("images", [(p, k, dumps((k[0], "x"))) for p, k in keys.items()])
    cut = dumps((2, "x" * 40))[:-9]  # e.g. a bad disk block
    cache.put_many("images", [("/d/2.jpg", (2, 2), cut)])
    found = cache.get_many("images", keys)
    cache.close()
    assert found == {p: (k[0], "x") for p, k in keys.items() if p != "/d/2.jpg"}


@pytest.mark.parametrize(
    "name", ["jpeg rgb", "jpeg progressive optimized", "png dpi", "png palette"]
)
def test_randomly_damaged_headers_get_pillows_answer_or_none(name: str) -> None:
    """Bytes of the header region overwritten at random: wherever read_header still answers
    (after the PNG chunk CRCs, which inspect_image checks first), Pillow gives the same."""
    from supervisor.dataset.images import png_damage

    base = PLAIN[name]()
    jpeg = name.startswith("jpeg")
    end = base.index(b"\xff\xda" if jpeg else b"IDAT") + 4
    rng = random.Random(name)
    answered = 0
    for _ in range(1500):
        data = bytearray(base)
        for _ in range(rng.choice([1, 1, 2, 3])):
            data[rng.randrange(2, end)] = rng.choice([0, 0xFF, rng.randrange(256)])
        damaged = bytes(data)
        if not jpeg and png_damage(damaged) is not None:
            continue
        header = read_header(damaged)
        if header is None:
            continue
        answered += 1
        try:
            pillow: object = _pillow(damaged)
        except Exception as e:  # Pillow refused a file the reader answered for
            pillow = repr(e)
        assert (header.format, header.mode, header.width, header.height) == pillow
    assert answered > 50
