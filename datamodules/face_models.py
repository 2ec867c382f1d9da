"""Faces of a 3D morphable model: the Basel Face Model 2009 (the paper's face data) and eos models.

The paper rendered faces of the Basel Face Model (BFM). A morphable model is a PCA model per
vertex: a face is ``mean + basis[:, :k] @ (coefficients * std[:k])`` for its shape, and the
same for its texture (RGB per vertex), with ``std`` the standard deviation of each component.
Each integer identity draws its coefficients from N(0, 1), seeded by the render seed and the
identity, so that the faces are a reproducible sample of the model's distribution.

Two file formats are read, chosen by extension:

* ``.mat``: the BFM 2009 ``01_MorphableModel.mat`` (``shapeMU``, ``shapePC``, ``shapeEV``,
  ``texMU``, ``texPC``, ``texEV``, 1-based triangles ``tl``; coordinates interleaved x, y, z).
* ``.bin``: the binary shape models of the eos library (e.g. the Surrey Face Model
  ``sfm_shape_3448.bin``), a cereal archive: a uint32 version, then the shape model's mean,
  orthonormal basis and eigenvalues (variances), each an Eigen matrix stored as int32 rows,
  int32 cols and ``rows * cols`` little-endian float32 in column-major order, then a uint64
  triangle count and as many int32 triples (0-based). Shape only: the face gets a uniform
  albedo.

Both models have y up and the face looking along +z, the renderer's convention, so a face only
needs centring and scaling (BFM coordinates are micrometres, eos' millimetres), which is done
as for the procedural heads.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from datamodules.meshes import normalize_to_unit_sphere
from datamodules.renderer import Mesh
from datamodules.sources import existing_path
from dcign.errors import ConfigError

# Luminance weights of (R, G, B) turning a colour into the renderer's gray albedo.
GRAY_WEIGHTS = np.array([0.21, 0.72, 0.07])
# Albedo of a surface without colours (an eos shape model, an uncoloured mesh file): a light
# gray that leaves the diffuse shading, the only cue to the shape, most of the intensity range.
UNIFORM_ALBEDO = 0.7

BFM_FIELDS = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl")
FORMATS = {".mat": "Basel Face Model 2009", ".bin": "eos binary shape model"}
OPTION = "dataset.face_model"
EXAMPLE = "python train.py dataset=faces dataset.face_model=/data/PublicMM1/01_MorphableModel.mat"


def gray_albedo(rgb: np.ndarray) -> np.ndarray:
    """Gray albedo in [0, 1] of colours ``[..., 3]`` in 0..255 (luminance, clipped)."""
    return np.clip(np.asarray(rgb, dtype=np.float64) @ GRAY_WEIGHTS / 255.0, 0.0, 1.0)


@dataclass(frozen=True)
class PcaModel:
    """Mean ``[D]``, basis ``[D, K]`` and standard deviations ``[K]`` of one PCA model."""

    mean: np.ndarray
    basis: np.ndarray
    std: np.ndarray

    @property
    def n_components(self) -> int:
        return len(self.std)

    def instance(self, coefficients: np.ndarray) -> np.ndarray:
        """``mean + basis[:, :k] @ (coefficients * std[:k])`` with ``k = len(coefficients)``.

        The product is taken in the basis' own precision: the BFM basis is over 100 MB, and
        promoting it to float64 would copy it for every face.
        """
        k = len(coefficients)
        weights = (np.asarray(coefficients, np.float64) * self.std[:k]).astype(self.basis.dtype)
        return self.mean.astype(np.float64) + self.basis[:, :k] @ weights


@dataclass(frozen=True)
class FaceModel:
    """A morphable face model: shape, optional texture (RGB 0..255) and 0-based triangles."""

    path: Path
    shape: PcaModel
    texture: PcaModel | None
    triangles: np.ndarray

    def check_components(self, n_components: int | None) -> None:
        """Fail unless every PCA model has ``n_components`` components (``None``: use all)."""
        if n_components is None:
            return
        for name, model in (("shape", self.shape), ("texture", self.texture)):
            if model is not None and n_components > model.n_components:
                raise ConfigError(
                    f"dataset.n_components={n_components}, but the {name} model of "
                    f"'{self.path}' has {model.n_components} components. Use at most that "
                    "many, or dataset.n_components=null for all of them."
                )

    def coefficients(
        self, identity: int, seed: int, n_components: int | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Shape and texture coefficients of ``identity``, standard normal.

        Each has its own random stream, and a component's coefficient does not depend on
        ``n_components``: more components refine the same faces instead of drawing new ones.
        """

        def draw(model: PcaModel, stream: int) -> np.ndarray:
            k = model.n_components if n_components is None else n_components
            return np.random.default_rng([seed, identity, stream]).standard_normal(k)

        texture = None if self.texture is None else draw(self.texture, 1)
        return draw(self.shape, 0), texture

    def mesh(self, shape: np.ndarray, texture: np.ndarray | None) -> Mesh:
        """The face with these coefficients, in model coordinates (smooth, gray albedo)."""
        vertices = self.shape.instance(shape).reshape(-1, 3)
        if self.texture is None or texture is None:
            albedo = np.full(len(vertices), UNIFORM_ALBEDO)
        else:
            albedo = gray_albedo(self.texture.instance(texture).reshape(-1, 3))
        return Mesh(vertices, self.triangles, albedo, smooth=True)

    def sample(self, identity: int, seed: int, n_components: int | None) -> Mesh:
        """Face ``identity`` under ``seed``, centred and scaled to the frame like the heads."""
        return normalize_to_unit_sphere(self.mesh(*self.coefficients(identity, seed, n_components)))


def face_model_path(path: str | os.PathLike | None) -> Path:
    """The model file ``path`` as an absolute path, checked to exist with a known extension."""
    resolved = existing_path(
        path,
        OPTION,
        "a Basel Face Model 2009 file (01_MorphableModel.mat) or an eos binary shape model (.bin)",
        EXAMPLE,
        is_dir=False,
    )
    if resolved.suffix.lower() not in FORMATS:
        known = ", ".join(f"{suffix} ({name})" for suffix, name in FORMATS.items())
        raise ConfigError(
            f"{OPTION}='{path}' has an unknown extension '{resolved.suffix}'. Known formats: "
            f"{known}. Example: {EXAMPLE}"
        )
    return resolved


def fingerprint(path: Path) -> dict[str, int | str]:
    """Path, size and modification time of the model file, for the cache key.

    Reading a 200 MB file to hash it would cost more than any cache hit saves; a changed or
    replaced model file changes its size or time.
    """
    stat = path.stat()
    return {"path": os.fspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def load_face_model(path: Path) -> FaceModel:
    """Read a ``.mat`` (BFM 2009) or ``.bin`` (eos) model; a ConfigError names what is wrong."""
    return {".mat": load_bfm, ".bin": load_eos}[path.suffix.lower()](path)


def load_bfm(path: Path) -> FaceModel:
    """The Basel Face Model 2009 in ``path`` (only the fields listed in ``BFM_FIELDS``)."""
    try:
        fields = scipy.io.loadmat(path, variable_names=BFM_FIELDS)
    except NotImplementedError as error:
        raise ConfigError(
            f"The face model '{path}' is a MATLAB v7.3 (HDF5) file, which cannot be read here "
            f"({error}). Save it again in the v7 format, in MATLAB: load it, then "
            "save('01_MorphableModel_v7.mat', '-struct', 'model', '-v7')."
        ) from error
    except (OSError, ValueError, EOFError, MatReadError, zlib.error) as error:
        raise ConfigError(
            f"Cannot read the face model '{path}' as a MATLAB file ({error}). {OPTION} must "
            f"point to the Basel Face Model's 01_MorphableModel.mat. Example: {EXAMPLE}"
        ) from error
    missing = [name for name in BFM_FIELDS if name not in fields]
    if missing:
        raise ConfigError(
            f"The face model '{path}' lacks the fields {missing}. A Basel Face Model 2009 file "
            f"(01_MorphableModel.mat) holds {list(BFM_FIELDS)}."
        )
    shape = _pca_model(path, fields, "shapeMU", "shapePC", "shapeEV")
    texture = _pca_model(path, fields, "texMU", "texPC", "texEV")
    if len(texture.mean) != len(shape.mean):
        raise ConfigError(
            f"The face model '{path}' has {len(texture.mean)} values in texMU but "
            f"{len(shape.mean)} in shapeMU; both hold 3 values (xyz, RGB) per vertex."
        )
    triangles = _triangles(path, "tl", fields["tl"], len(shape.mean) // 3, first=1)
    return FaceModel(path, shape, texture, triangles)


def _pca_model(path: Path, fields: dict[str, np.ndarray], mu: str, pc: str, ev: str) -> PcaModel:
    """The PCA model stored as fields ``mu`` (mean), ``pc`` (basis) and ``ev`` (std. devs)."""
    mean = np.asarray(fields[mu]).reshape(-1)
    basis = np.asarray(fields[pc])
    std = np.asarray(fields[ev]).reshape(-1).astype(np.float64)
    _check_pca(path, (mu, pc, ev), mean, basis, std)
    return PcaModel(mean, basis, std)


def _check_pca(
    path: Path, names: tuple[str, str, str], mean: np.ndarray, basis: np.ndarray, std: np.ndarray
) -> None:
    """Sizes that fit together: 3 values per vertex, a basis row per value, a std per column."""
    mu, pc, ev = names
    if len(mean) == 0 or len(mean) % 3:
        raise ConfigError(
            f"The face model '{path}': {mu} has {len(mean)} values; it must hold 3 per vertex "
            "(x, y, z interleaved)."
        )
    if basis.ndim != 2 or basis.shape[0] != len(mean):
        raise ConfigError(
            f"The face model '{path}': {pc} has shape {basis.shape}, but {mu} has {len(mean)} "
            f"values; {pc} needs one row per value of {mu} and one column per component."
        )
    if len(std) != basis.shape[1]:
        raise ConfigError(
            f"The face model '{path}': {ev} has {len(std)} values but {pc} has "
            f"{basis.shape[1]} columns (components); they must match."
        )
    for name, values in zip(names, (mean, basis, std), strict=True):
        if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)):
            raise ConfigError(f"The face model '{path}': {name} must hold finite numbers.")
    if np.any(std < 0.0):
        raise ConfigError(
            f"The face model '{path}': {ev} has negative values; it must hold standard "
            "deviations (or variances, for eos models), which are never negative."
        )


def _triangles(
    path: Path, name: str, values: np.ndarray, n_vertices: int, first: int
) -> np.ndarray:
    """Triangles ``[T, 3]`` as 0-based indices; ``first`` is the file's index of vertex one."""
    values = np.asarray(values)
    if (
        values.ndim != 2
        or values.shape[1] != 3
        or len(values) == 0
        or not np.issubdtype(values.dtype, np.number)
        or not np.all(values == np.round(values))
    ):
        raise ConfigError(
            f"The face model '{path}': {name} has shape {values.shape} ({values.dtype}); it must "
            "hold one row of 3 integer vertex indices per triangle."
        )
    triangles = values.astype(np.int64) - first
    if triangles.min() < 0 or triangles.max() >= n_vertices:
        raise ConfigError(
            f"The face model '{path}': {name} holds vertex indices from {values.min():.0f} to "
            f"{values.max():.0f}, but the model has {n_vertices} vertices (indices start at "
            f"{first} in this format)."
        )
    return triangles


def load_eos(path: Path) -> FaceModel:
    """The shape model of an eos binary morphable model (``.bin``); see the module docstring."""
    with path.open("rb") as handle:
        reader = _EosReader(path, handle)
        reader.scalar("<I", "the version number")
        mean = reader.matrix("the mean (matrix 1 of 3)")
        basis = reader.matrix("the orthonormal PCA basis (matrix 2 of 3)")
        variances = reader.matrix("the eigenvalues (matrix 3 of 3)")
        count = reader.scalar("<Q", "the triangle count")
        triangles = reader.array("<i4", 3 * count, f"the triangle list ({count} triangles)")
    if mean.shape[1] != 1 or variances.shape[1] != 1:
        raise ConfigError(
            f"The face model '{path}': the mean ({mean.shape[0]} x {mean.shape[1]}) and the "
            f"eigenvalues ({variances.shape[0]} x {variances.shape[1]}) must be column "
            "vectors; this is not an eos shape model."
        )
    names = ("the mean", "the PCA basis", "the eigenvalues")
    _check_pca(path, names, mean[:, 0], basis, variances[:, 0].astype(np.float64))
    std = np.sqrt(variances[:, 0].astype(np.float64))  # eos stores variances
    shape = PcaModel(mean[:, 0], basis, std)
    triangles = _triangles(path, "the triangle list", triangles.reshape(-1, 3), len(mean) // 3, 0)
    return FaceModel(path, shape, None, triangles)


class _EosReader:
    """Reads the fields of an eos cereal archive in order, naming the field a truncation hits."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self.handle = handle
        self.size = os.fstat(handle.fileno()).st_size

    def take(self, n_bytes: int, what: str) -> bytes:
        """The next ``n_bytes``; checked against the file size first, so that a garbage
        length cannot make us allocate more than the file holds."""
        offset = self.handle.tell()
        if offset + n_bytes > self.size:
            raise ConfigError(
                f"The face model '{self.path}' ends inside {what}: it needs {n_bytes} bytes "
                f"at byte {offset}, but the file has {self.size}. The file is truncated or not "
                "an eos binary shape model (such as sfm_shape_3448.bin)."
            )
        return self.handle.read(n_bytes)

    def scalar(self, fmt: str, what: str) -> int:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)

    def matrix(self, what: str) -> np.ndarray:
        """An Eigen float32 matrix: int32 rows, int32 cols, then the values column by column."""
        rows, cols = (self.scalar("<i", what) for _ in range(2))
        if rows < 0 or cols < 0:
            raise ConfigError(
                f"The face model '{self.path}': {what} claims {rows} x {cols} values; this is "
                "not an eos binary shape model (such as sfm_shape_3448.bin)."
            )
        return self.array("<f4", rows * cols, what).reshape((rows, cols), order="F")
