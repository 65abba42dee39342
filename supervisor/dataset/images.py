"""Per-image facts for the dataset check: decode, size, mode, content hash, perceptual hash.

`inspect_image` runs in worker processes and its result is cached, so it reads each file once
and does all per-image work on those bytes. With `decode=False` (a fast check) it stops after
the header: size, mode, content digest, the JPEG end marker and the PNG chunk CRCs are known, the
decode's outcome and the perceptual hashes are not (`ImageFacts.decoded` is False).

A full check decodes JPEGs with Pillow's `draft` (libjpeg's DCT scaling to 1/8): every
entropy-coded block is still decoded, so a file whose blocks cannot be decoded still fails,
but the inverse DCT and colour conversion of the full image are skipped; the hashes need only
a thumbnail. PNGs get their chunk CRCs checked (Pillow's decoder skips them) before the full
decode, and one integer `reduce` makes the thumbnail.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import xxhash
from PIL import Image, ImageChops, ImageFilter, UnidentifiedImageError

from supervisor.dataset.headers import PNG_SIGNATURE, read_header
from supervisor.dataset.reading import read_bytes

HASH_W, HASH_H = 9, 8  # dHash: 8 comparisons per row, 8 rows = 64 bits
THUMB = 16  # side of the grayscale thumbnail used to confirm a near-duplicate
COLOUR_TOLERANCE = 40  # a re-exposed copy shifts the mean colour; another scene more
FLAT_COLOUR_TOLERANCE = 16  # images without detail: likeness 0 at this mean-colour shift

SMALL = 4 * THUMB  # the decoded image is first reduced to at least this many px a side
_EOI, _SOS = b"\xff\xd9", b"\xff\xda"
_INDEXED = frozenset({"1", "P", "PA"})


class ImageFacts(NamedTuple):
    """What the check needs to know about one image file."""

    size: int  # bytes
    problem: str | None  # None | "empty" | "corrupt" | "truncated" | "too_large"
    detail: str  # the decoder's message when `problem` is set
    format: str | None  # Pillow's format name: "JPEG", "PNG", …
    mode: str | None  # Pillow's mode before any conversion: "RGB", "L", "CMYK", …
    width: int
    height: int
    digest: str  # 128-bit xxh3 of the bytes, hex: exact duplicates
    dhash: int = 0  # 64-bit difference hash; 0 when the image was not decoded
    thumb: bytes = b""  # THUMB×THUMB high-pass grayscale (128 = flat); b"": not decoded
    colour: tuple[int, int, int] = (0, 0, 0)  # mean R, G, B
    # False: a fast check read only the header, so whether the pixels decode and the hashes
    # (dhash, thumb, colour) are unknown; a full check must inspect the file again.
    decoded: bool = True


def inspect_image(path: str, decode: bool = True) -> ImageFacts:
    """Read and decode one image file (`decode=False`: its header only).

    Raises OSError only when the file cannot be read. Facts found before the decode step
    (empty file, damaged PNG chunks, a header Pillow refuses, too large) are the same in both
    modes and count as `decoded`: a full check would learn nothing more from the file.
    """
    data = read_bytes(path)
    # Only equal files must get equal digests (no adversary here): xxh3 is 6-8x faster than
    # sha256 (3 µs a 28 KB JPEG, 10 µs a 120 KB PNG), and random collisions of 128 bits
    # among a dataset's files do not happen.
    digest = xxhash.xxh3_128_hexdigest(data)

    def undecoded(
        problem: str | None, detail: str = "", fmt: str | None = None, mode: str | None = None,
        size: tuple[int, int] = (0, 0), decoded: bool = True,
    ) -> ImageFacts:  # fmt: skip
        return ImageFacts(len(data), problem, detail, fmt, mode, *size, digest, decoded=decoded)

    if not data:
        return undecoded("empty")
    if data.startswith(PNG_SIGNATURE):
        damage = png_damage(data)
        if damage is not None:
            return undecoded("corrupt", damage, "PNG")
    if not decode:
        header = read_header(data)
        if header is not None:
            cut = "truncated" if header.format == "JPEG" and not jpeg_complete(data) else None
            size = (header.width, header.height)
            return undecoded(cut, "", header.format, header.mode, size, decoded=False)
    fmt: str | None = None
    mode: str | None = None
    width = height = 0
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is a finding of ours, not noise on stderr.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, mode, (width, height) = im.format, im.mode, im.size
                truncated = fmt == "JPEG" and not jpeg_complete(data)
                if not decode:
                    cut = "truncated" if truncated else None
                    return undecoded(cut, "", fmt, mode, im.size, decoded=False)
                if fmt == "JPEG":
                    im.draft("RGB", (THUMB * 2, THUMB * 2))
                im.load()
                rgb = _small_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow refuses before it tells the size: read it from the header, so the report
        # says how large the image is rather than "0×0".
        fmt, mode, (width, height) = _bomb_size(data)
        limit = Image.MAX_IMAGE_PIXELS or 0
        detail = (
            f"{width * height:,} pixels, more than Pillow's decompression-bomb limit of {limit:,}"
            if width and height
            else f"more pixels than Pillow's decompression-bomb limit of {limit:,}"
        )
        return undecoded("too_large", detail, fmt, mode, (width, height))
    except Exception as e:  # Pillow raises many types for bad data; all mean "cannot decode"
        failed = "truncated" if fmt == "JPEG" and not jpeg_complete(data) else "corrupt"
        if isinstance(e, UnidentifiedImageError):
            detail = "not an image format Pillow knows (wrong content or extension?)"
        else:
            detail = f"{type(e).__name__}: {e}"
        return undecoded(failed, detail, fmt, mode, (width, height))
    problem = "truncated" if truncated else None
    dhash, edges, colour = _hashes(rgb)
    return ImageFacts(
        len(data), problem, "", fmt, mode, width, height, digest, dhash, edges, colour
    )


def _bomb_size(data: bytes) -> tuple[str | None, str | None, tuple[int, int]]:
    """Format, mode and size of an image Pillow refused as a decompression bomb: Pillow's own
    header reader, with the limit lifted for this open only (no pixel is decoded, and the
    worker processes are single-threaded)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format, im.mode, im.size
    except Exception:  # a header Pillow cannot read after all: the size stays unknown
        return None, None, (0, 0)
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _hashes(rgb: Image.Image) -> tuple[int, bytes, tuple[int, int, int]]:
    """dHash, high-pass thumbnail and mean colour, all from one small RGB image."""
    gray = rgb.convert("L")
    small = gray.resize((HASH_W, HASH_H), Image.Resampling.BOX)
    thumb = gray.resize((THUMB, THUMB), Image.Resampling.BOX)
    # High-pass: the thumbnail minus its blur. Smooth gradients (sky, walls, studio
    # backdrops) dominate a plain thumbnail and make unrelated pictures correlate; edges do not.
    edges = ImageChops.subtract(thumb, thumb.filter(ImageFilter.BoxBlur(1)), 1.0, 128)
    # Reducing by the whole size gives the exact mean in one pixel; ImageStat would build
    # three 256-bin histograms and sum them in Python (0.1 ms, 6 µs here).
    mean = rgb.reduce(rgb.size).getpixel((0, 0))
    assert isinstance(mean, tuple)  # an RGB pixel
    return _dhash(small.tobytes()), edges.tobytes(), (int(mean[0]), int(mean[1]), int(mean[2]))


def _small_rgb(im: Image.Image) -> Image.Image:
    """A new RGB image of SMALL to 2·SMALL px a side (or the image itself when smaller).

    An integer `reduce` (a block mean, one pass over the pixels) shrinks the decoded image
    first: half the cost of a box resize straight to SMALL, and it keeps the colour
    conversion small. A JPEG is already at 1/8 scale. The result is a new image, valid after
    the file is closed.
    """
    factor = max(im.width, im.height) // SMALL
    if factor > 1:
        if im.mode in _INDEXED:
            im = im.convert("RGB")  # a block mean of palette indices is no colour
        try:
            im = im.reduce(factor)
        except ValueError:  # a mode `reduce` does not take (I;16 …)
            im = im.convert("RGB").reduce(factor)
        return im if im.mode == "RGB" else im.convert("RGB")
    return im.convert("RGB")


def jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    `FF D9` cannot occur inside entropy-coded data (a data `FF` is stuffed as `FF 00`), and an
    EXIF thumbnail's own end marker comes before the main scan, so this finds a cut-off file
    even when a tool appended trailing bytes after the real end. A file that ends in the
    marker passes without the search (no scan marker can follow it).
    """
    return data.endswith(_EOI) or data.rfind(_EOI) > data.rfind(_SOS)


def png_damage(data: bytes) -> str | None:
    """Why a PNG's chunk structure is damaged, or None: every chunk's CRC, and IEND present.

    Pillow's decoder skips the CRCs of the pixel data (IDAT), so a flipped bit there decodes
    to wrong pixels without an error; the CRC finds it, for 0.05 ms per 450 KB. A file
    without IEND was cut off: darknet's stb_image refuses it.
    """
    pos, end = len(PNG_SIGNATURE), len(data)
    view = memoryview(data)  # CRC over slices of the file without copying them
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        stop = pos + 12 + length
        name = kind.decode("ascii", "backslashreplace")  # damaged type bytes stay readable
        if stop > end:
            return f"the file ends inside its {name} chunk at byte {pos} (cut off)"
        if zlib.crc32(view[pos + 4 : stop - 4]) != int.from_bytes(data[stop - 4 : stop], "big"):
            return (
                f"the {name} chunk at byte {pos} fails its CRC check: the file changed after "
                "it was written (a bad copy, transfer or disk)"
            )
        if kind == b"IEND":
            return None
        pos = stop
    return "the file ends before its IEND chunk (cut off)"


def _dhash(pixels: bytes) -> int:
    value = 0
    for y in range(HASH_H):
        row = pixels[y * HASH_W : (y + 1) * HASH_W]
        for x in range(HASH_W - 1):
            value = (value << 1) | (row[x] > row[x + 1])
    return value


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def similarities(a: ImageFacts, others: Sequence[ImageFacts]) -> list[float]:
    """Likeness of `a` to each of `others`, in [0, 1], from the thumbnails' detail and colour.

    dHash alone is not enough: two different nearly flat or smoothly shaded images hash
    alike. So a candidate pair must also have mean colours within `COLOUR_TOLERANCE` per
    channel and correlated high-pass thumbnails (correlation ignores brightness and contrast
    changes). Two images without detail are compared by mean colour alone. Images without a
    thumbnail (not decoded) are like nothing.
    """
    out = np.zeros(len(others))
    n = len(a.thumb)
    rows = [i for i, b in enumerate(others) if n and len(b.thumb) == n]
    if not rows:
        return out.tolist()
    colours = np.array([others[i].colour for i in rows], dtype=np.int16)
    shift = np.abs(colours - np.array(a.colour, dtype=np.int16)).max(axis=1)
    x = np.frombuffer(a.thumb, dtype=np.uint8).astype(np.float64)
    x -= x.mean()
    va = float(x @ x)
    y = np.frombuffer(b"".join(others[i].thumb for i in rows), dtype=np.uint8)
    y = y.reshape(len(rows), n).astype(np.float64)
    y -= y.mean(axis=1, keepdims=True)
    vb = np.einsum("ij,ij->i", y, y)
    flat = 2.25 * n  # detail under 1.5 grey levels (standard deviation)
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = (y @ x) / np.sqrt(va * vb)
    if va < flat:
        by_colour = np.maximum(0.0, 1.0 - shift / FLAT_COLOUR_TOLERANCE)
        sim = np.where(vb < flat, by_colour, 0.0)
    else:
        sim = np.where(vb < flat, 0.0, corr)
    sim[shift > COLOUR_TOLERANCE] = 0.0
    out[rows] = sim
    return out.tolist()
