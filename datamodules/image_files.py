"""Data sets read from picture files: they list the files and their factor codes,
:class:`ImageFilesDataModule` converts them into the cache (:mod:`datamodules.image_conversion`
says how each file is decoded, cut and resized), one identity at a time.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.factors import FactorSpec
from datamodules.grouped import CacheContents, GroupedDataModule
from datamodules.image_conversion import (
    ImageOptions,
    cut_square,
    finish,
    object_mask,
    read_rgb,
    square_box,
    whole_box,
)
from datamodules.sources import LISTED, BadFiles
from dcign.errors import UnreadableImageError

log = logging.getLogger(__name__)


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

    def image_options(self) -> ImageOptions:
        return self.options

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
