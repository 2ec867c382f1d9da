"""Image files -> the model's input: the decoding shared by every data set read from picture
files, and by an image a user hands the explorer.

Real data sets store their pictures in many ways (RGB or gray, with or without alpha, any size,
objects on white or on black); the model wants ``uint8 [C, S, S]`` squares with the object on
black, as the project's renders. Each step here exists for that reason:

1. decode with PIL, strictly: a truncated file is an error, whatever PIL's global
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` says, so a half-downloaded image never enters training
   as a grey bar; transparent pixels are laid over the background colour;
2. cut a square, so that resizing never changes the object's proportions: with ``crop``, the
   square around everything that differs from the background (for a data set, in *any* image
   of one identity: the same box for every view of a chair, so that only the viewpoint changes
   within a group, not the zoom), plus a small border; otherwise the whole image, padded with
   the background;
3. with ``invert``, ``255 - x``: an object on white becomes an object on black;
4. gray by ``0.21 R + 0.72 G + 0.07 B`` (as the paper's code) or RGB, resized with Lanczos
   in floating point and rounded once.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile

from dcign.errors import ConfigError, UnreadableImageError

# Luminosity weights of the DC-IGN authors' preprocessing.
GRAY_WEIGHTS = np.array([0.21, 0.72, 0.07])
# A pixel belongs to the object when a channel differs from the background by more than this:
# anti-aliased renders fade into the background, and a near-background fringe would widen the
# box by a pixel or two without holding any of the object.
BACKGROUND_TOLERANCE = 10
# Border kept around the object's box on each side, as a fraction of its larger side, so that
# the object does not touch the image edge, where the convolutions see padding.
CROP_BORDER = 0.05

# What PIL raises for a file that is not a readable image (UnidentifiedImageError and
# "image file is truncated" are OSErrors; some plugins raise SyntaxError for broken chunks).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    zlib.error,
    Image.DecompressionBombError,
)


@dataclass(frozen=True)
class ImageOptions:
    """How files become cache rows: output ``size`` and ``channels`` (1 gray, 3 RGB), ``crop``
    to the object's box, ``invert`` to put the object on black, and the ``background`` colour
    (RGB 0-255) that the crop looks for and that transparent and padded pixels get."""

    size: int
    channels: int = 1
    crop: bool = False
    invert: bool = False
    background: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ConfigError(
                f"dataset.channels must be 1 (gray) or 3 (RGB) for image files, got "
                f"{self.channels!r}. Example: dataset.channels=3."
            )
        for option in ("crop", "invert"):
            if not isinstance(getattr(self, option), bool):
                raise ConfigError(
                    f"dataset.{option} must be true or false, got {getattr(self, option)!r}."
                )
        colour = self.background
        if (
            not isinstance(colour, Sequence)
            or len(colour) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in colour)
            or not all(0 <= c <= 255 for c in colour)
        ):
            raise ConfigError(
                f"dataset.background must be an RGB colour of three integers in 0-255, got "
                f"{colour!r}. Example: dataset.background=[255,255,255] (white)."
            )
        object.__setattr__(self, "background", tuple(colour))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for cache keys."""
        return {**asdict(self), "background": list(self.background)}


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make PIL fail on truncated files while decoding, restoring the user's setting after."""
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def read_rgb(path: str | Path | BinaryIO, background: Sequence[int]) -> np.ndarray:
    """The image at ``path`` as ``uint8 [H, W, 3]``, transparency laid over ``background``.

    Raises :class:`UnreadableImageError` for a missing, truncated or corrupt file.
    """
    try:
        with _strict_truncation(), Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                backdrop = Image.new("RGBA", image.size, (*background, 255))
                image = Image.alpha_composite(backdrop, image.convert("RGBA"))
            return np.asarray(image.convert("RGB"))
    except _DECODE_ERRORS as error:
        raise UnreadableImageError(str(error) or type(error).__name__) from error


def object_mask(rgb: np.ndarray, background: Sequence[int]) -> np.ndarray:
    """``bool [H, W]``: pixels that differ from ``background`` by more than the tolerance.

    Compared channel by channel in uint8 (no wider copy of the image): this runs on every pixel
    of every image, and 600 x 600 renders make it the slowest step after decoding otherwise.
    """
    mask = np.zeros(rgb.shape[:2], dtype=bool)
    for channel, level in enumerate(background):
        plane = rgb[..., channel]
        mask |= (plane < level - BACKGROUND_TOLERANCE) | (plane > level + BACKGROUND_TOLERANCE)
    return mask


def square_box(mask: np.ndarray) -> tuple[int, int, int]:
    """``(top, left, side)`` of the square around ``mask``'s pixels with a border of
    ``CROP_BORDER``, centred on them; the whole image's square when ``mask`` is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return whole_box(mask.shape)
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    extent = max(bottom - top, right - left)
    side = extent + 2 * math.ceil(CROP_BORDER * extent)
    return int((top + bottom - side) // 2), int((left + right - side) // 2), int(side)


def whole_box(shape: Sequence[int]) -> tuple[int, int, int]:
    """The square centred on an image of ``shape`` that holds all of it (padding the short side)."""
    height, width = shape[:2]
    side = max(height, width)
    return (height - side) // 2, (width - side) // 2, side


def cut_square(rgb: np.ndarray, box: tuple[int, int, int], background: Sequence[int]) -> np.ndarray:
    """The ``box`` of ``rgb``; where it leaves the image, the pixels are ``background``."""
    top, left, side = box
    height, width = rgb.shape[:2]
    if top >= 0 and left >= 0 and top + side <= height and left + side <= width:
        return rgb[top : top + side, left : left + side]
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = np.asarray(background, dtype=np.uint8)
    y0, y1 = max(top, 0), min(top + side, height)
    x0, x1 = max(left, 0), min(left + side, width)
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = rgb[y0:y1, x0:x1]
    return out


def finish(square: np.ndarray, options: ImageOptions) -> np.ndarray:
    """A square RGB cut -> ``uint8 [C, size, size]``: inverted, gray or RGB, resized."""
    pixels = square.astype(np.float32)
    if options.invert:
        pixels = 255.0 - pixels
    if options.channels == 1:
        planes = [pixels @ GRAY_WEIGHTS.astype(np.float32)]
    else:
        planes = [np.ascontiguousarray(pixels[..., c]) for c in range(3)]
    size = (options.size, options.size)
    resized = [
        np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.LANCZOS))
        for plane in planes
    ]
    return np.round(np.clip(np.stack(resized), 0.0, 255.0)).astype(np.uint8)


def convert_file(source: str | Path | BinaryIO, options: ImageOptions) -> np.ndarray:
    """One image on its own -> ``uint8 [C, size, size]``, cropped to its own object's box.

    Raises :class:`UnreadableImageError` when it cannot be decoded.
    """
    rgb = read_rgb(source, options.background)
    box = square_box(object_mask(rgb, options.background)) if options.crop else whole_box(rgb.shape)
    return finish(cut_square(rgb, box, options.background), options)
