"""A folder of mesh files (``.obj``, ``.ply``) as a data set: each file is one identity.

Real shape collections (ShapeNet chairs, the 3D-chairs CAD models exported to OBJ, scans)
come as mesh files, not as renders on a controlled grid. Rendering them with the project's
renderer gives them the same exact factor grid as the procedural chairs (by default the
3D-chairs grid, 31 azimuths x 2 elevations under one fixed lamp), so every DC-IGN group can
be formed. Files are found recursively and sorted by their path relative to the root; the
identity of a file is its position in that list (the list is stored in the cache metadata).

Each mesh is loaded with trimesh (scenes merged into one mesh with their transforms), centred
and scaled like the procedural meshes (bounding-box centre at the origin, farthest vertex on
the frame radius, so every view fits the image), and flat-shaded with a uniform albedo, or the
gray of its vertex colours when it has them. Meshes are expected with y up and the front
toward +z, the renderer's convention (azimuth 0 shows the front).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import trimesh

from datamodules.face_models import UNIFORM_ALBEDO, gray_albedo
from datamodules.factors import FactorSpec
from datamodules.meshes import normalize_to_unit_sphere
from datamodules.procedural import CHAIR_LIGHT_AZIMUTH, RenderedDataModule, check_int
from datamodules.renderer import Mesh
from datamodules.sources import BadFiles, existing_path
from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC

log = logging.getLogger(__name__)

SUFFIXES = (".obj", ".ply")
EXAMPLE = "python train.py dataset=meshes dataset.root=/data/ShapeNetCore.v2/03001627"
# The 3D-chairs elevations, in degrees (the chairs' grid, ``CHAIR_ELEVATIONS``).
DEFAULT_ELEVATIONS_DEG = (20.0, 30.0)


def find_mesh_files(root: Path) -> list[Path]:
    """Every ``.obj``/``.ply`` file under ``root`` (any depth), sorted by relative path.

    Sorting by the relative POSIX path makes the identity numbers the same on every machine
    the folder is copied to.
    """
    files = [path for path in root.rglob("*") if path.suffix.lower() in SUFFIXES and path.is_file()]
    return sorted(files, key=lambda path: path.relative_to(root).as_posix())


def load_mesh(path: Path) -> Mesh:
    """The mesh in ``path``, normalized to the frame; ValueError if it has no usable surface."""
    loaded = trimesh.load(path, force="mesh", process=False)
    if len(loaded.faces) == 0:
        raise ValueError("the file holds no triangles")
    visual = loaded.visual
    if visual is not None and visual.kind in ("vertex", "face"):
        albedo = gray_albedo(np.asarray(visual.vertex_colors)[:, :3])
    else:
        albedo = np.full(len(loaded.vertices), UNIFORM_ALBEDO)
    mesh = Mesh(np.asarray(loaded.vertices), np.asarray(loaded.faces), albedo)
    return normalize_to_unit_sphere(mesh)


def folder_digest(root: Path, files: Sequence[Path]) -> str:
    """sha256 over the relative path, size and modification time of every file.

    It stands for the folder's content in the cache key: adding, removing, renaming or
    changing a file renders the data set again, without reading every file to hash it.
    """
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}\t{stat.st_size}\t".encode())
        digest.update(f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _elevations(elevations_deg: Sequence[float]) -> tuple[float, ...]:
    """Elevations in radians from the configured degrees, checked."""
    values = list(elevations_deg) if isinstance(elevations_deg, list | tuple) else []
    if not values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and -90.0 < v < 90.0 for v in values
    ):
        raise ConfigError(
            "dataset.elevations_deg must be a non-empty list of camera elevations in degrees, "
            f"each strictly between -90 and 90; got {elevations_deg!r}. Example: "
            "dataset.elevations_deg=[20,30]"
        )
    return tuple(math.radians(v) for v in values)


class MeshFolderDataModule(RenderedDataModule):
    """The meshes under ``root`` on a view grid: ``n_azimuth`` azimuths over a full turn
    (from 0, evenly spaced) times ``elevations_deg``; one fixed lamp, as for the chairs.

    An unreadable or empty mesh file stops the rendering with a message naming it, unless
    ``skip_bad_files`` is true: then it is skipped, counted, and the count stored in the cache
    metadata. The default layout trains azimuth and ``intrinsic``, as for the chairs.
    """

    generator = "meshes"
    layout_sizes = MappingProxyType({"azimuth": 2, INTRINSIC: None})

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        n_azimuth: int = 31,
        elevations_deg: Sequence[float] = DEFAULT_ELEVATIONS_DEG,
        skip_bad_files: bool = False,
        supersample: int = 2,
        **kwargs: Any,
    ) -> None:
        check_int("n_azimuth", n_azimuth, 1)
        factors = [
            FactorSpec(
                "azimuth", tuple(2.0 * math.pi * np.arange(n_azimuth) / n_azimuth), periodic=True
            ),
            FactorSpec("elevation", _elevations(elevations_deg)),
        ]
        super().__init__(factors, supersample, fixed_light=CHAIR_LIGHT_AZIMUTH, **kwargs)
        self.skip_bad_files = BadFiles(skip_bad_files, "mesh").skip
        self.root = existing_path(
            root, "dataset.root", "a folder of .obj/.ply mesh files", EXAMPLE, is_dir=True
        )
        self.files = find_mesh_files(self.root)
        if not self.files:
            raise ConfigError(
                f"dataset.root='{root}' holds no {'/'.join(SUFFIXES)} files (searched "
                f"recursively). Point it to a folder of meshes. Example: {EXAMPLE}"
            )
        # Taken now, so that the cache key stays the same for the life of this data set.
        self._digest = folder_digest(self.root, self.files)

    @property
    def n_meshes(self) -> int:
        return len(self.files)

    def cache_config(self) -> dict[str, Any]:
        return {
            **super().cache_config(),
            "root": os.fspath(self.root),
            "n_files": len(self.files),
            "files_sha256": self._digest,
            "skip_bad_files": self.skip_bad_files,
        }

    def meshes(self, meta: dict[str, Any]) -> Iterator[tuple[int, Mesh]]:
        meta["files"] = [path.relative_to(self.root).as_posix() for path in self.files]
        bad = BadFiles(self.skip_bad_files, "mesh")
        loaded = 0
        for identity, path in enumerate(self.files):
            try:
                mesh = load_mesh(path)
            # trimesh's many parsers fail with many exception types on a broken file.
            except Exception as error:
                bad.handle(path, error)
                continue
            loaded += 1
            yield identity, mesh
        meta.update(bad.summary())
        if not loaded:
            raise ConfigError(
                f"None of the {len(self.files)} mesh files under '{self.root}' could be read "
                "(see the warnings above); there is nothing to train on."
            )
