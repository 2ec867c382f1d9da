"""smallNORB (LeCun, Huang and Bottou, 2004): real photographs of toys on a known view grid.

50 toys (5 categories x 10 instances) were photographed by a stereo camera at 18 azimuths (a
full turn), 9 elevations (30 to 70 degrees) and under 6 lightings, every combination of them,
so, like the paper's rendered faces, every factor can be varied alone around any view. The
official files split the instances: 4, 6, 7, 8, 9 of each category in the training files and
0, 1, 2, 3, 5 in the test files; that split is kept, so test scores compare with the
literature, and the validation identities are drawn from the training files.

The six files are in LeCun's binary matrix format: an int32 magic number giving the element
type, an int32 ``ndim``, ``max(3, ndim)`` int32 dimensions (the unused ones are ignored), then
the elements, all little-endian, optionally gzipped:

    -dat.mat   uint8 [N, 2, 96, 96]  the stereo pair of each image
    -cat.mat   int32 [N]             category 0-4
    -info.mat  int32 [N, 4]          instance 0-9, elevation 0-8 (30 + 5 * e degrees),
                                     azimuth 0, 2, ..., 34 (10 * a degrees), lighting 0-5
"""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from datamodules.factors import FactorSpec
from datamodules.grouped import CacheContents, GroupedDataModule
from datamodules.sources import existing_path
from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC

# Part of every cache key: bump it whenever the conversion changes the pixels or codes.
CONVERT_VERSION = 1

DOWNLOAD = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
EXAMPLE = "python train.py dataset=norb dataset.root=/data/smallnorb"
PARTS = {
    "training": "smallnorb-5x46789x9x18x6x2x96x96-training",
    "testing": "smallnorb-5x01235x9x18x6x2x96x96-testing",
}
KINDS = ("dat", "cat", "info")

# Magic number -> (element type as LeCun's format names it, numpy dtype; None: not readable).
MAGIC = {
    0x1E3D4C51: ("single precision", np.dtype("<f4")),
    0x1E3D4C52: ("packed", None),
    0x1E3D4C53: ("double precision", np.dtype("<f8")),
    0x1E3D4C54: ("integer", np.dtype("<i4")),
    0x1E3D4C55: ("byte", np.dtype("u1")),
    0x1E3D4C56: ("short", np.dtype("<i2")),
}
BYTE, INTEGER = 0x1E3D4C55, 0x1E3D4C54
# More dimensions than any smallNORB file has; a larger ndim means the header is garbage.
MAX_DIMS = 8
# Stereo pairs converted per step: bounds memory (~18 MB of raw pixels at 96x96) whatever N is.
CHUNK = 1000


@dataclass(frozen=True)
class Label:
    """One label column of smallNORB: the raw codes it may hold, and how messages name them."""

    name: str
    codes: tuple[int, ...]
    described: str


CATEGORY = Label("category", tuple(range(5)), "0..4")
# The -info.mat columns, in file order.
INFO = (
    Label("instance", tuple(range(10)), "0..9"),
    Label("elevation", tuple(range(9)), "0..8"),
    Label("azimuth", tuple(range(0, 35, 2)), "0, 2, ..., 34"),
    Label("lighting", tuple(range(6)), "0..5"),
)
INSTANCES = len(INFO[0].codes)

FACTORS = (
    FactorSpec("azimuth", tuple(math.radians(10.0 * a) for a in INFO[2].codes), periodic=True),
    FactorSpec("elevation", tuple(math.radians(30.0 + 5.0 * e) for e in INFO[1].codes)),
    # Lighting conditions are categories, not angles: ordered only by their index.
    FactorSpec("light", tuple(float(light) for light in INFO[3].codes), unit="category"),
)
# The info column that each factor (in FACTORS order) is read from.
FACTOR_COLUMNS = (2, 1, 3)


@dataclass(frozen=True)
class Matrix:
    """The header of one matrix file: what it holds and where its elements start."""

    path: Path
    magic: int
    shape: tuple[int, ...]
    offset: int

    @property
    def dtype(self) -> np.dtype:
        return MAGIC[self.magic][1]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def find_files(root: Path) -> dict[str, dict[str, Path]]:
    """The six files under ``root`` (part -> kind -> path), each plain or gzipped.

    A plain file wins over its ``.gz``: it is read as is, with no decompression. All missing
    files are listed at once, so one download fixes them.
    """
    found: dict[str, dict[str, Path]] = {part: {} for part in PARTS}
    missing = []
    for part, stem in PARTS.items():
        for kind in KINDS:
            name = f"{stem}-{kind}.mat"
            present = [root / n for n in (name, f"{name}.gz") if (root / n).is_file()]
            if present:
                found[part][kind] = present[0]
            else:
                missing.append(name)
    if missing:
        raise ConfigError(
            f"dataset.root='{root}' lacks the smallNORB files {missing} (each may also be "
            f"gzipped, with .gz). Download the six files from {DOWNLOAD} into one folder, e.g. "
            f"/data/smallnorb/{PARTS['training']}-dat.mat.gz, and run: {EXAMPLE}"
        )
    return found


@contextmanager
def _opened(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading (decompressed if gzipped); a read failure names the file."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as stream:
            yield stream
    except (OSError, EOFError, zlib.error) as error:
        raise ConfigError(
            f"Cannot read '{path}' ({error}). Check its permissions; if it is damaged or "
            f"not a smallNORB file, download it again from {DOWNLOAD}."
        ) from error


def _truncated(matrix: Matrix, available: int) -> ConfigError:
    return ConfigError(
        f"'{matrix.path}' is truncated: its header describes {MAGIC[matrix.magic][0]} "
        f"elements of shape {list(matrix.shape)} ({matrix.nbytes} bytes after the "
        f"{matrix.offset}-byte header), but the file holds only {available} bytes after the "
        f"header. Download it again from {DOWNLOAD}."
    )


def _int32s(stream: BinaryIO, count: int, path: Path) -> np.ndarray:
    data = stream.read(4 * count)
    if len(data) < 4 * count:
        raise ConfigError(
            f"'{path}' ends inside its header ({len(data)} of {4 * count} bytes); it is "
            f"truncated or not a smallNORB file. Download it again from {DOWNLOAD}."
        )
    return np.frombuffer(data, "<i4")


def read_header(path: Path) -> Matrix:
    """Parse the header of the matrix file ``path``; a plain file must hold all its elements.

    The size of a gzipped file is only known once it is decompressed, so its truncation is
    found while it is read (:func:`read_rows`).
    """
    with _opened(path) as stream:
        magic_ndim = _int32s(stream, 2, path)
        magic, ndim = int(magic_ndim[0]) & 0xFFFFFFFF, int(magic_ndim[1])
        if magic not in MAGIC or MAGIC[magic][1] is None:
            raise ConfigError(
                f"'{path}' starts with magic number {magic:#010x}, which is not a readable "
                f"matrix of LeCun's format (byte {BYTE:#010x} or integer {INTEGER:#010x} for "
                f"smallNORB). It is not a smallNORB file; download it again from {DOWNLOAD}."
            )
        if not 1 <= ndim <= MAX_DIMS:
            raise ConfigError(
                f"'{path}' has a header with {ndim} dimensions (expected 1 to {MAX_DIMS}); it "
                f"is damaged. Download it again from {DOWNLOAD}."
            )
        dims = _int32s(stream, max(3, ndim), path)[:ndim]
    if np.any(dims < 0):
        raise ConfigError(
            f"'{path}' has negative dimensions {dims.tolist()} in its header; it is damaged. "
            f"Download it again from {DOWNLOAD}."
        )
    matrix = Matrix(path, magic, tuple(int(d) for d in dims), 8 + 4 * max(3, ndim))
    if path.suffix != ".gz" and path.stat().st_size < matrix.offset + matrix.nbytes:
        raise _truncated(matrix, path.stat().st_size - matrix.offset)
    return matrix


def _expect(matrix: Matrix, kind: str, magic: int, shape: tuple[int | str, ...]) -> None:
    """A ConfigError unless ``matrix`` has the element type and ``shape`` (str: any size)."""
    if (
        matrix.magic != magic
        or len(matrix.shape) != len(shape)
        or any(
            isinstance(want, int) and want != got
            for want, got in zip(shape, matrix.shape, strict=True)
        )
    ):
        raise ConfigError(
            f"'{matrix.path}' holds {MAGIC[matrix.magic][0]} elements of shape "
            f"{list(matrix.shape)}, but a smallNORB -{kind} file holds {MAGIC[magic][0]} "
            f"elements of shape [{', '.join(map(str, shape))}]. Check that the file names "
            "match their contents."
        )


def read_rows(matrix: Matrix, rows: int) -> Iterator[np.ndarray]:
    """The elements of ``matrix`` in chunks of ``rows`` along its first dimension.

    Read straight from the (decompressed) stream, so that memory holds one chunk at a time.
    """
    row_bytes = math.prod(matrix.shape[1:]) * matrix.dtype.itemsize
    with _opened(matrix.path) as stream:
        stream.seek(matrix.offset)
        done = 0
        for start in range(0, matrix.shape[0], rows):
            count = min(rows, matrix.shape[0] - start)
            data = stream.read(count * row_bytes)
            done += len(data)
            if len(data) < count * row_bytes:
                raise _truncated(matrix, done)
            yield np.frombuffer(data, matrix.dtype).reshape(count, *matrix.shape[1:])


def _read_all(matrix: Matrix) -> np.ndarray:
    """All elements of a small (label) matrix in one read."""
    chunks = list(read_rows(matrix, max(1, matrix.shape[0])))
    return chunks[0] if chunks else np.zeros(matrix.shape, matrix.dtype)


def _check_codes(values: np.ndarray, label: Label, path: Path) -> None:
    """A ConfigError naming the first value of ``label`` that smallNORB does not define."""
    bad = np.flatnonzero(~np.isin(values, label.codes))
    if len(bad):
        raise ConfigError(
            f"'{path}' has {len(bad)} row(s) whose {label.name} is not one of smallNORB's "
            f"{label.described}; the first is row {bad[0]} with {label.name} {values[bad[0]]}. "
            f"The file is damaged; download it again from {DOWNLOAD}."
        )


@dataclass(frozen=True)
class Part:
    """One of the two halves of smallNORB, checked and labelled, its pixels still on disk."""

    images: Matrix
    codes: np.ndarray

    @property
    def identities(self) -> np.ndarray:
        return np.unique(self.codes[:, 0])


def read_part(files: Mapping[str, Path], camera: int) -> Part:
    """Check the dat/cat/info files of one part against each other and build its code table.

    Everything but the pixels is checked here, before any image is converted: a bad file
    fails in seconds, not after minutes of conversion.

    Code table columns: identity (category * 10 + instance), then the value indices of the
    factors azimuth, elevation and light.
    """
    images, categories, info = (read_header(files[kind]) for kind in KINDS)
    _expect(images, "dat", BYTE, ("N", "cameras", "H", "W"))
    _expect(categories, "cat", INTEGER, ("N",))
    _expect(info, "info", INTEGER, ("N", len(INFO)))
    if images.shape[1] <= camera:
        raise ConfigError(
            f"'{images.path}' holds {images.shape[1]} camera(s), so dataset.camera={camera} "
            "does not exist. Use dataset.camera=0."
        )
    counts = {m.path.name: m.shape[0] for m in (images, categories, info)}
    if len(set(counts.values())) > 1:
        raise ConfigError(
            f"The smallNORB files {list(counts)} in '{files['dat'].parent}' must describe the "
            f"same images, but hold {list(counts.values())} rows. They come from different "
            f"downloads or one is damaged; download them again from {DOWNLOAD}."
        )
    category = _read_all(categories)
    labels = _read_all(info)
    _check_codes(category, CATEGORY, categories.path)
    for column, label in enumerate(INFO):
        _check_codes(labels[:, column], label, info.path)
    value_codes = [
        np.searchsorted(INFO[column].codes, labels[:, column]) for column in FACTOR_COLUMNS
    ]
    identity = category.astype(np.int64) * INSTANCES + labels[:, 0]
    return Part(images, np.column_stack([identity, *value_codes]).astype(np.int64))


def to_image_shape(pairs: np.ndarray, camera: int, shape: tuple[int, int, int]) -> np.ndarray:
    """One camera of stereo pairs ``uint8 [k, 2, H, W]`` as ``uint8 [k, C, size, size]``.

    Antialiased bilinear resizing averages every source pixel an output pixel covers, so
    downscaling does not alias the toys' fine texture; gray is repeated over the C channels.
    """
    channels, height, width = shape
    gray = torch.from_numpy(pairs[:, camera, None].astype(np.float32))
    if gray.shape[-2:] != (height, width):
        gray = F.interpolate(gray, size=(height, width), mode="bilinear", antialias=True)
    pixels = gray.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return np.repeat(pixels, channels, axis=1)


class NorbDataModule(GroupedDataModule):
    """smallNORB from the six official files under ``root``, grouped by azimuth, elevation, light.

    ``camera`` picks the left (0) or right (1) image of each stereo pair. The test split is the
    official one (the identities of the test files); ``split`` divides the training files'
    identities into train and val (fractions or counts, seeded by ``split_seed``) and may not
    name a test share. The default ratio is the faces' ``1:1:1:3``.
    """

    default_ratio = MappingProxyType({INTRINSIC: 3.0})
    default_split = MappingProxyType({"train": 0.8, "val": 0.2, "test": 0})

    def __init__(
        self,
        root: str | None = None,
        camera: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(FACTORS, **kwargs)
        if self.split["test"]:
            raise ConfigError(
                f"dataset.split={self.split} has a test share, but smallNORB's test split is "
                "the official one (the identities of its -testing files). dataset.split only "
                "divides the training files' identities, e.g. "
                "dataset.split='{train: 0.8, val: 0.2}'."
            )
        if camera not in (0, 1) or isinstance(camera, bool):
            raise ConfigError(
                f"dataset.camera must be 0 (left) or 1 (right camera of the stereo pair), got "
                f"{camera!r}. Example: dataset.camera=1."
            )
        self.root = existing_path(
            root,
            "dataset.root",
            f"the folder of the six smallNORB files from {DOWNLOAD}",
            EXAMPLE,
            is_dir=True,
        )
        self.camera = camera
        self._files = find_files(self.root)

    def cache_config(self) -> dict[str, Any]:
        # File sizes stand in for contents: a new download of other data changes the key
        # without hashing 900 MB on every start.
        return {
            "source": "smallnorb",
            "version": CONVERT_VERSION,
            "root": self.root,
            "files": {p.name: p.stat().st_size for f in self._files.values() for p in f.values()},
            "camera": self.camera,
            "image_shape": self.image_shape,
            "factors": [factor.to_dict() for factor in self._factors],
        }

    def split_identities(
        self, identities: np.ndarray, meta: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """The official test identities; train and val drawn from the rest by ``split``."""
        test = np.intersect1d(identities, meta["test_identities"])
        assigned = super().split_identities(np.setdiff1d(identities, test), meta)
        return {**assigned, "test": test}

    def cache_contents(self) -> CacheContents:
        parts = {name: read_part(files, self.camera) for name, files in self._files.items()}
        shared = np.intersect1d(parts["training"].identities, parts["testing"].identities)
        if len(shared):
            raise ConfigError(
                f"The identities {shared.tolist()} (category * 10 + instance) appear in both the "
                f"training and the testing files under '{self.root}', but smallNORB keeps its "
                f"instances apart. The files are mixed up; download them again from {DOWNLOAD}."
            )
        total = sum(len(part.codes) for part in parts.values())
        return CacheContents(
            description=(
                f"Converting {total} smallNORB images (camera {self.camera}) at "
                f"{self.image_size}x{self.image_size}"
            ),
            items=lambda meta: (item for part in parts.values() for item in self._items(part)),
            capacity=total,
            progress="Converting smallNORB",
            progress_total=sum(-(-len(part.codes) // CHUNK) for part in parts.values()),
            metadata={"test_identities": parts["testing"].identities},
        )

    def _items(self, part: Part) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Chunks of ``part`` as cache items: resized images and their codes."""
        for start, pairs in zip(
            range(0, len(part.codes), CHUNK), read_rows(part.images, CHUNK), strict=True
        ):
            yield (
                to_image_shape(pairs, self.camera, self.image_shape),
                part.codes[start : start + len(pairs)],
            )
