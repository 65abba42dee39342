"""Per-image facts for the dataset check: decode, size, mode, content hash, perceptual hash.

`inspect_image` runs in worker processes and its result is cached, so it reads each file once
and does all per-image work in that pass. JPEGs are decoded with Pillow's `draft` (libjpeg's
DCT scaling to 1/8 and grayscale): every entropy-coded block is still decoded, so a corrupt or
truncated file still fails, but the inverse DCT and colour conversion of the full image are
skipped; the hashes need only a thumbnail.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageChops, ImageFilter, ImageStat, UnidentifiedImageError

HASH_W, HASH_H = 9, 8  # dHash: 8 comparisons per row, 8 rows = 64 bits
THUMB = 16  # side of the grayscale thumbnail used to confirm a near-duplicate
COLOUR_TOLERANCE = 40  # a re-exposed copy shifts the mean colour; another scene more
FLAT_COLOUR_TOLERANCE = 16  # images without detail: likeness 0 at this mean-colour shift

_EOI, _SOS = b"\xff\xd9", b"\xff\xda"


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the check needs to know about one image file."""

    size: int  # bytes
    problem: str | None  # None | "empty" | "corrupt" | "truncated" | "too_large"
    detail: str  # the decoder's message when `problem` is set
    format: str | None  # Pillow's format name: "JPEG", "PNG", …
    mode: str | None  # Pillow's mode before any conversion: "RGB", "L", "CMYK", …
    width: int
    height: int
    sha: str  # first 128 bits of the sha256 of the bytes: exact duplicates
    dhash: int  # 64-bit difference hash; 0 when the image could not be decoded
    thumb: bytes  # THUMB×THUMB high-pass grayscale (128 = flat); b"" when not decodable
    colour: tuple[int, int, int]  # mean R, G, B

    def to_json(self) -> list[Any]:
        return [
            self.size,
            self.problem,
            self.detail,
            self.format,
            self.mode,
            self.width,
            self.height,
            self.sha,
            self.dhash,
            base64.b64encode(self.thumb).decode("ascii"),
            list(self.colour),
        ]

    @classmethod
    def from_json(cls, v: list[Any]) -> ImageFacts:
        return cls(
            int(v[0]),
            v[1],
            str(v[2]),
            v[3],
            v[4],
            int(v[5]),
            int(v[6]),
            str(v[7]),
            int(v[8]),
            base64.b64decode(v[9]),
            (int(v[10][0]), int(v[10][1]), int(v[10][2])),
        )


def inspect_image(path: str) -> ImageFacts:
    """Read and decode one image file. Raises OSError only when the file cannot be read."""
    with open(path, "rb") as f:
        data = f.read()
    # sha256 runs on the CPU's SHA extensions: twice as fast as blake2b on large PNGs here.
    sha = hashlib.sha256(data).hexdigest()[:32]
    if not data:
        return ImageFacts(0, "empty", "", None, None, 0, 0, sha, 0, b"", (0, 0, 0))
    fmt: str | None = None
    mode: str | None = None
    width = height = 0
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning is a finding of ours, not noise on stderr.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, mode, (width, height) = im.format, im.mode, im.size
                truncated = fmt == "JPEG" and not _jpeg_complete(data)
                if fmt == "JPEG":
                    im.draft("RGB", (THUMB * 2, THUMB * 2))
                im.load()
                rgb = _small_rgb(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return ImageFacts(
            len(data), "too_large", str(e), fmt, mode, width, height, sha, 0, b"", (0, 0, 0)
        )
    except Exception as e:  # Pillow raises many types for bad data; all mean "cannot decode"
        failed = "truncated" if fmt == "JPEG" and not _jpeg_complete(data) else "corrupt"
        if isinstance(e, UnidentifiedImageError):
            detail = "not an image format Pillow knows (wrong content or extension?)"
        else:
            detail = f"{type(e).__name__}: {e}"
        return ImageFacts(
            len(data), failed, detail, fmt, mode, width, height, sha, 0, b"", (0, 0, 0)
        )
    problem = "truncated" if truncated else None
    gray = rgb.convert("L")
    small = gray.resize((HASH_W, HASH_H), Image.Resampling.BOX)
    thumb = gray.resize((THUMB, THUMB), Image.Resampling.BOX)
    # High-pass: the thumbnail minus its blur. Smooth gradients (sky, walls, studio
    # backdrops) dominate a plain thumbnail and make unrelated pictures correlate; edges do not.
    edges = ImageChops.subtract(thumb, thumb.filter(ImageFilter.BoxBlur(1)), 1.0, 128)
    mean = ImageStat.Stat(rgb.resize((THUMB, THUMB), Image.Resampling.BOX)).mean
    colour = (round(mean[0]), round(mean[1]), round(mean[2]))
    return ImageFacts(
        len(data),
        problem,
        "",
        fmt,
        mode,
        width,
        height,
        sha,
        _dhash(small.tobytes()),
        edges.tobytes(),
        colour,
    )


def _small_rgb(im: Image.Image) -> Image.Image:
    """A new RGB image of at most 4·THUMB px a side: every hash works on a thumbnail.

    Shrinking the decoded image first (a JPEG is already at 1/8 scale) avoids a full-size
    colour conversion; the result is a new image, valid after the file is closed.
    """
    if im.width > 4 * THUMB or im.height > 4 * THUMB:
        im = im.resize((4 * THUMB, 4 * THUMB), Image.Resampling.BOX)
        return im if im.mode == "RGB" else im.convert("RGB")
    return im.convert("RGB")


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the last start-of-scan marker.

    `FF D9` cannot occur inside entropy-coded data (a data `FF` is stuffed as `FF 00`), and an
    EXIF thumbnail's own end marker comes before the main scan, so this finds a cut-off file
    even when a tool appended trailing bytes after the real end.
    """
    return data.rfind(_EOI) > data.rfind(_SOS)


def _dhash(pixels: bytes) -> int:
    value = 0
    for y in range(HASH_H):
        row = pixels[y * HASH_W : (y + 1) * HASH_W]
        for x in range(HASH_W - 1):
            value = (value << 1) | (row[x] > row[x + 1])
    return value


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def similarity(a: ImageFacts, b: ImageFacts) -> float:
    """Likeness of two decoded images in [0, 1], from their thumbnails' detail and colour.

    dHash alone is not enough: two different nearly flat or smoothly shaded images hash
    alike. So a candidate pair must also have mean colours within `COLOUR_TOLERANCE` per
    channel and correlated high-pass thumbnails (correlation ignores brightness and contrast
    changes). Two images without detail are compared by mean colour alone.
    """
    if not a.thumb or len(a.thumb) != len(b.thumb):
        return 0.0
    shift = max(abs(x - y) for x, y in zip(a.colour, b.colour, strict=True))
    if shift > COLOUR_TOLERANCE:
        return 0.0
    n = len(a.thumb)
    ma, mb = sum(a.thumb) / n, sum(b.thumb) / n
    va = sum((x - ma) ** 2 for x in a.thumb)
    vb = sum((y - mb) ** 2 for y in b.thumb)
    flat = 2.25 * n  # detail under 1.5 grey levels (standard deviation)
    if va < flat or vb < flat:
        if va >= flat or vb >= flat:
            return 0.0
        return max(0.0, 1.0 - shift / FLAT_COLOUR_TOLERANCE)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a.thumb, b.thumb, strict=True))
    return cov / math.sqrt(va * vb)
