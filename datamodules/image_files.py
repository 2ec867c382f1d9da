"""Image files -> cache rows: the decoding shared by every data set read from picture files.

Real data sets store their pictures in many ways (RGB or gray, with or without alpha, any size,
objects on white or on black); the model wants ``uint8 [C, S, S]`` squares with the object on
black, as the project's renders. Each step here exists for that reason:

1. decode with PIL, strictly: a truncated file is an error, whatever PIL's global
   ``ImageFile.LOAD_TRUNCATED_IMAGES`` says, so a half-downloaded image never enters training
   as a grey bar; transparent pixels are laid over the background colour;
2. cut a square, so that resizing never changes the object's proportions: with ``crop``, the
   square around everything that differs from the background in *any* image of one identity
   (the same box for every view of a chair, so that only the viewpoint changes within a group,
   not the zoom), plus a small border; otherwise the whole image, padded with the background;
3. with ``invert``, ``255 - x``: an object on white becomes an object on black;
4. gray by ``0.21 R + 0.72 G + 0.07 B`` (as the paper's code) or RGB, resized with Lanczos
   in floating point and rounded once.

:class:`ImageFilesDataModule` is the base of the data sets read from image files (3D chairs, a
CSV manifest): they list the files and their factor codes, it converts them into the cache.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from datamodules.factors import FactorSpec
from datamodules.grouped import CacheContents, GroupedDataModule
from datamodules.sources import LISTED, BadFiles
from dcign.errors import ConfigError

log = logging.getLogger(__name__)

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


class UnreadableImageError(Exception):
    """An image file that cannot be decoded; callers pass it to :meth:`BadFiles.handle`."""


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


def read_rgb(path: str | Path, background: Sequence[int]) -> np.ndarray:
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


def convert_images(
    paths: Sequence[Path], options: ImageOptions, bad: BadFiles
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the images of one identity: ``(uint8 [v, C, size, size], kept positions [v])``.

    An unreadable file stops with a message naming it or, when ``bad`` skips, is left out of
    both results. With ``options.crop`` all images of the same size share one box.
    """
    decoded, kept = [], []
    for position, path in enumerate(paths):
        try:
            decoded.append(read_rgb(path, options.background))
            kept.append(position)
        except UnreadableImageError as error:
            bad.handle(path, error)
    boxes = _boxes(decoded, options)
    images = [
        finish(cut_square(rgb, boxes[rgb.shape], options.background), options) for rgb in decoded
    ]
    stacked = np.stack(images) if images else np.zeros((0, *options.shape), np.uint8)
    return stacked, np.asarray(kept, dtype=np.int64)


def _boxes(
    images: Sequence[np.ndarray], options: ImageOptions
) -> dict[tuple[int, ...], tuple[int, int, int]]:
    """One square box per image shape: the union of the objects' boxes, or the whole image."""
    if not options.crop:
        return {rgb.shape: whole_box(rgb.shape) for rgb in images}
    masks: dict[tuple[int, ...], np.ndarray] = {}
    for rgb in images:
        mask = object_mask(rgb, options.background)
        masks[rgb.shape] = masks[rgb.shape] | mask if rgb.shape in masks else mask
    return {shape: square_box(mask) for shape, mask in masks.items()}


@dataclass(frozen=True)
class FileTable:
    """The image files of a data set, ``paths[i]`` coded by ``codes[i]`` (identity id, then an
    index into each factor's values), and the name of each identity id."""

    paths: Sequence[Path]
    codes: np.ndarray
    identities: Sequence[str]


class ImageFilesDataModule(GroupedDataModule):
    """Base of the data sets read from image files: a subclass lists the files, this converts.

    ``source`` is the folder or file the user pointed to; ``table`` the files found there and
    their codes; ``bad`` the policy for unreadable files, shared with the subclass's listing so
    that the cache metadata counts every skipped file. ``crop``, ``invert`` and ``background``
    are the :class:`ImageOptions`. The conversion reads the files of one identity at a time
    (the crop box is shared by them) and stores the skipped files and the identities that lack
    some combination of factor values in the cache metadata.
    """

    format: str
    # Part of every cache key: bump it in a subclass whenever its conversion changes.
    version = 1

    def __init__(
        self,
        factors: Sequence[FactorSpec],
        source: Path,
        table: FileTable,
        bad: BadFiles,
        *,
        crop: bool,
        invert: bool,
        background: Sequence[int],
        **kwargs: Any,
    ) -> None:
        super().__init__(factors, **kwargs)
        self.source = source
        self.table = table
        self._bad = bad
        self.options = ImageOptions(self.image_size, self.channels, crop, invert, background)
        listing = (
            f"{path}\t{row}" for path, row in zip(table.paths, table.codes.tolist(), strict=True)
        )
        self._files_digest = hashlib.sha256("\n".join(listing).encode()).hexdigest()[:16]

    def cache_config(self) -> dict[str, Any]:
        # The digest of the files and their codes: adding, removing or re-labelling files
        # builds a new cache instead of reusing one made from other files.
        return {
            "format": self.format,
            "version": self.version,
            "source": os.fspath(self.source),
            "files": self._files_digest,
            "factors": [factor.to_dict() for factor in self._factors],
            "image": self.options.to_dict(),
        }

    def source_metadata(self) -> dict[str, Any]:
        """What the cache metadata records about the source, beyond factors and columns."""
        return {"identities": list(self.table.identities)}

    def cache_contents(self) -> CacheContents:
        return CacheContents(
            description=(
                f"Converting {len(self.table.paths)} {self.format} images of "
                f"{len(self.table.identities)} identities from {self.source}"
            ),
            items=self._items,
            capacity=len(self.table.paths),
            progress=f"Converting {self.format}",
            progress_total=len(self.table.identities),
            metadata=self.source_metadata(),
        )

    def _items(self, meta: dict[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each identity's images and codes; adds the skipped and incomplete counts to ``meta``."""
        codes = self.table.codes
        order = np.argsort(codes[:, 0], kind="stable")
        starts = np.searchsorted(codes[order, 0], np.arange(len(self.table.identities) + 1))
        full_grid = math.prod(len(factor.values) for factor in self._factors)
        incomplete = []
        for identity, name in enumerate(self.table.identities):
            rows = order[starts[identity] : starts[identity + 1]]
            paths = [self.table.paths[row] for row in rows]
            images, kept = convert_images(paths, self.options, self._bad)
            if len(np.unique(codes[rows[kept]], axis=0)) < full_grid:
                incomplete.append(name)
            yield images, codes[rows[kept]]
        if incomplete:
            log.warning(
                "%d of %d identities lack some of the %d combinations of factor values (for "
                "example %s); groups are formed from the images that exist.",
                len(incomplete),
                len(self.table.identities),
                full_grid,
                incomplete[:3],
            )
        meta.update(
            self._bad.summary(),
            incomplete_identities=len(incomplete),
            incomplete_examples=incomplete[:LISTED],
        )
