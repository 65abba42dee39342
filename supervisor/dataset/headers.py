"""Size and mode of a JPEG or PNG read straight from its header bytes, as Pillow reports them.

A fast check needs only an image's format, mode and size. Pillow's `Image.open` finds them
too, but its marker parser in Python costs ~0.1 ms per JPEG, a third of the fast check's whole
work per image. `read_header` walks the same markers and chunks without building an image
object (~10 µs) and answers only for files whose header is plain: every segment and chunk well
formed and none of the ones Pillow would treat specially (a multi-picture MPO, a PNG's
transparency, text or colour-profile chunks that it decompresses, an animated PNG). For
anything else it returns None and the caller asks Pillow: where this module answers, Pillow
answers the same (tests compare them), with one exception. The contents of metadata blocks
(EXIF, Photoshop, XMP) are not parsed, as darknet does not read them: a JPEG whose EXIF block is
damaged passes here, while Pillow may refuse the whole file (a full check then reports it
corrupt, though darknet trains on it).
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, PngImagePlugin

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Pillow's modes by (bit depth, colour type) (PngImagePlugin._MODES, copied: a private name).
_PNG_MODES = {
    (1, 0): "1",
    (2, 0): "L",
    (4, 0): "L",
    (8, 0): "L",
    (16, 0): "I;16",
    (8, 2): "RGB",
    (16, 2): "RGB",
    (1, 3): "P",
    (2, 3): "P",
    (4, 3): "P",
    (8, 3): "P",
    (8, 4): "LA",
    (16, 4): "RGBA",
    (8, 6): "RGBA",
    (16, 6): "RGBA",
}
# Chunks before the pixel data whose Pillow handler cannot fail on a chunk at least this long
# (shorter ones raise there). Other chunks Pillow has a handler for go to Pillow; chunks it
# has none for are skipped by Pillow and here alike.
_PNG_PLAIN = {b"PLTE": 0, b"gAMA": 4, b"cHRM": 32, b"sRGB": 1, b"pHYs": 9}
_PNG_HANDLED = frozenset(
    n[6:].encode("latin-1") for n in dir(PngImagePlugin.PngStream) if n.startswith("chunk_")
)

_JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers whose segment Pillow reads and skips (its `Skip` and `COM` handlers). Pillow reads
# no length after the JPGn extensions (F0–FD) and refuses DHP (DE): those go to Pillow.
_JPEG_SKIPPED = frozenset({0xC4, 0xCC, 0xDC, 0xDD, 0xDF, 0xFE})


@dataclass(frozen=True, slots=True)
class Header:
    format: str  # Pillow's format name: "JPEG" | "PNG"
    mode: str  # Pillow's mode: "RGB", "L", "CMYK", "P", …
    width: int
    height: int


def read_header(data: bytes) -> Header | None:
    """The header of a plain JPEG or PNG, or None: then ask Pillow (see the module docstring).

    None also for an image over Pillow's decompression-bomb limit, so that Pillow's own
    warning or error reports it. Chunk CRCs are not checked here: a PNG must have passed
    `images.png_damage` first (Pillow refuses a header chunk with a bad CRC).
    """
    if data.startswith(b"\xff\xd8\xff"):
        header = _jpeg(data)
    elif data.startswith(PNG_SIGNATURE):
        header = _png(data)
    else:
        return None
    if header is None:
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and header.width * header.height > limit:
        return None
    return header


def _jpeg(data: bytes) -> Header | None:
    pos, end = 2, len(data)
    size: tuple[int, int] | None = None
    layers = 0
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None  # junk between segments: Pillow skips it, let it decide
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body, pos = pos + 4, pos + 2 + length
        if length < 2 or pos > end:
            return None
        if marker == 0xDA:  # start of scan: the header is complete
            if size is None:
                return None
            return Header("JPEG", _JPEG_MODES[layers], size[0], size[1])
        if marker in _SOF:
            if length < 8 or data[body] != 8 or data[body + 5] not in _JPEG_MODES:
                return None  # Pillow refuses other precisions and layer counts
            height = int.from_bytes(data[body + 1 : body + 3], "big")
            width = int.from_bytes(data[body + 3 : body + 5], "big")
            if not width or not height:
                return None
            size, layers = (width, height), data[body + 5]
        elif marker == 0xDB:
            if not _dqt_ok(data, body, pos):
                return None
        elif 0xE0 <= marker <= 0xEF:
            if not _app_plain(marker, data[body:pos]):
                return None
        elif marker not in _JPEG_SKIPPED:
            return None  # restart, SOI/EOI or reserved markers before the scan: unusual
    return None


def _dqt_ok(data: bytes, pos: int, end: int) -> bool:
    """Pillow's check of a quantization segment: each table is complete."""
    while pos < end:
        size = 65 if data[pos] < 16 else 129  # 8- or 16-bit entries
        if end - pos < size:
            return False
        pos += size
    return True


def _app_plain(marker: int, s: bytes) -> bool:
    """False for the application segments Pillow reads in ways that can fail or change the
    format: short JFIF/Adobe/ICC headers, and the MPF segment of a multi-picture file."""
    if marker == 0xE0 and s.startswith(b"JFIF"):
        return len(s) >= 7
    if marker == 0xEE and s.startswith(b"Adobe"):
        return len(s) >= 7
    if marker == 0xE2:
        if s.startswith(b"MPF\0"):
            return False
        if s.startswith(b"ICC_PROFILE\0"):
            return len(s) >= 14
    return True


def _png(data: bytes) -> Header | None:
    pos, end = len(PNG_SIGNATURE), len(data)
    if data[pos + 4 : pos + 8] != b"IHDR" or int.from_bytes(data[pos : pos + 4], "big") != 13:
        return None
    ihdr = data[pos + 8 : pos + 21]
    if len(ihdr) < 13 or ihdr[11]:  # cut off, or a filter method Pillow refuses
        return None
    mode = _PNG_MODES.get((ihdr[8], ihdr[9]))
    width = int.from_bytes(ihdr[0:4], "big")
    height = int.from_bytes(ihdr[4:8], "big")
    if mode is None or not width or not height:
        return None
    pos += 25
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            return Header("PNG", mode, width, height)
        if not kind.isalpha():
            return None
        least = _PNG_PLAIN.get(kind)
        if least is None:
            if kind in _PNG_HANDLED:
                return None
        elif length < least:
            return None
        pos += 12 + length
    return None
