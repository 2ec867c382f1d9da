"""The rendered data sets: faces (procedural or of a morphable model) and chairs, on a factor grid.

Each identity is a mesh (seeded random, a sample of a face model, or a file; see
``mesh_folder``), rendered once on the CPU at every point of the full grid of its factors
(``itertools.product`` order, last factor fastest) into the cache. Having every combination
lets the sampler form a group for any factor around any view, like the paper's face data, and
the chairs' grid is the real 3D-chairs grid (31 azimuths x 2 elevations).
"""

from __future__ import annotations

import logging
import math
import os
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from datamodules.chair_meshes import CHAIR_AZIMUTHS, CHAIR_ELEVATIONS, chair_mesh
from datamodules.face_meshes import (
    FACE_AZIMUTH_RANGE,
    FACE_ELEVATION_RANGE,
    FACE_LIGHT_RANGE,
    face_mesh,
)
from datamodules.face_models import face_model_path, fingerprint, load_face_model
from datamodules.factors import FactorSpec, evenly_spaced, factor_values, grid_codes
from datamodules.grouped import CacheContents, GroupedDataModule
from datamodules.renderer import Mesh, render_views
from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC

log = logging.getLogger(__name__)

# Part of every cache key: bump it whenever the meshes or the renderer change the pixels, so
# that caches rendered by older code are not reused.
RENDER_VERSION = 1

# Chairs are lit by one lamp beside the camera (light azimuths are in the camera frame): a lamp
# at the camera would light every surface facing the viewer alike and flatten the shape.
CHAIR_LIGHT_AZIMUTH = math.radians(30.0)


def check_int(option: str, value: int, minimum: int) -> None:
    """ConfigError unless ``dataset.<option>`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"dataset.{option} must be an integer >= {minimum}, got {value!r}.")


class RenderedDataModule(GroupedDataModule):
    """Meshes rendered with the project's renderer at every point of the full grid of ``factors``.

    Subclasses only say where the meshes come from (:meth:`meshes`): seeded generators, a face
    model, a folder of mesh files. ``factors`` may include ``azimuth``, ``elevation`` and
    ``light`` (light azimuth); one that is absent is held at 0, or at ``fixed_light`` for the
    light. Gray renders are repeated over ``channels`` when a model wants more than one.
    """

    generator: str

    def __init__(
        self,
        factors: Sequence[FactorSpec],
        supersample: int,
        fixed_light: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(factors, **kwargs)
        check_int("supersample", supersample, 1)
        self.supersample = supersample
        self.fixed_light = fixed_light
        self._grid = grid_codes(self._factors)

    @property
    @abstractmethod
    def n_meshes(self) -> int:
        """How many meshes :meth:`meshes` yields at most; bounds the size of the cache."""

    @abstractmethod
    def meshes(self, meta: dict[str, Any]) -> Iterator[tuple[int, Mesh]]:
        """``(identity, mesh)`` of each identity to render, loading what it needs once.

        A source that skips unreadable inputs adds their count to ``meta``, which is stored
        in the cache after the last mesh.
        """

    @property
    def views_per_identity(self) -> int:
        return len(self._grid)

    def cache_config(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "version": RENDER_VERSION,
            "supersample": self.supersample,
            "fixed_light": self.fixed_light,
            "image_shape": self.image_shape,
            "factors": [factor.to_dict() for factor in self._factors],
        }

    def _view_angles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Azimuth, elevation and light azimuth of every grid view."""
        values = dict(
            zip(self.factor_names, factor_values(self._factors, self._grid).T, strict=True)
        )
        held = np.zeros(self.views_per_identity)
        return (
            values.get("azimuth", held),
            values.get("elevation", held),
            values.get("light", held + self.fixed_light),
        )

    def render_identity(self, mesh: Mesh) -> np.ndarray:
        """All grid views of one identity's mesh, ``uint8 [views, C, H, W]``, in one call."""
        gray = render_views(
            mesh,
            *self._view_angles(),
            image_size=self.image_size,
            supersample=self.supersample,
        )
        pixels = np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.repeat(pixels[:, None], self.channels, axis=1)

    def cache_contents(self) -> CacheContents:
        views = self.views_per_identity
        grid = " x ".join(f"{len(f.values)} {f.name}" for f in self._factors)

        def items(meta: dict[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for i, mesh in self.meshes(meta):
                yield self.render_identity(mesh), np.column_stack([np.full(views, i), self._grid])

        return CacheContents(
            description=(
                f"Rendering {self.n_meshes} {self.generator} x {views} views ({grid}) at "
                f"{self.image_size}x{self.image_size}"
            ),
            items=items,
            capacity=self.n_meshes * views,
            progress=f"Rendering {self.generator}",
            progress_total=self.n_meshes,
        )


class ProceduralDataModule(RenderedDataModule):
    """``n_identities`` meshes made by a function of the identity, seeded by ``render_seed``."""

    can_render = True

    def __init__(
        self,
        factors: Sequence[FactorSpec],
        n_identities: int,
        render_seed: int,
        supersample: int,
        fixed_light: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(factors, supersample, fixed_light, **kwargs)
        check_int("n_identities", n_identities, 1)
        check_int("render_seed", render_seed, 0)
        self.n_identities = n_identities
        self.render_seed = render_seed
        self._meshes: Callable[[int], Mesh] | None = None

    def render_truth(self, identity: int, values: Mapping[str, float]) -> torch.Tensor | None:
        """The render of ``identity`` at ``values`` (absent factors at 0, the light at
        ``fixed_light``), stored as the cache stores its renders (8-bit levels)."""
        gray = render_views(
            self._cached_mesh(identity),
            np.array([values.get("azimuth", 0.0)]),
            np.array([values.get("elevation", 0.0)]),
            np.array([values.get("light", self.fixed_light)]),
            image_size=self.image_size,
            supersample=self.supersample,
        )
        pixels = np.round(np.clip(gray[0], 0.0, 1.0) * 255.0) / 255.0
        return torch.from_numpy(pixels).float()[None].expand(self.channels, -1, -1)

    def _cached_mesh(self, identity: int) -> Mesh:
        """A mesh of the identities asked for lately: a person sliding one face in the explorer
        asks for the same mesh many times, and building it costs more than the render."""
        if self._meshes is None:
            self._meshes = lru_cache(maxsize=64)(self.mesh_factory())
        return self._meshes(identity)

    @abstractmethod
    def mesh_factory(self) -> Callable[[int], Mesh]:
        """The function from identity to mesh (seeded by ``render_seed``).

        It is asked for once per cache, so a factory that needs a large file loads it once.
        """

    @property
    def n_meshes(self) -> int:
        return self.n_identities

    def meshes(self, meta: dict[str, Any]) -> Iterator[tuple[int, Mesh]]:
        make = self.mesh_factory()
        return ((i, make(i)) for i in range(self.n_identities))

    def cache_config(self) -> dict[str, Any]:
        return {
            **super().cache_config(),
            "n_identities": self.n_identities,
            "render_seed": self.render_seed,
        }


class FacesDataModule(ProceduralDataModule):
    """Faces varying in azimuth, elevation and light azimuth (paper, section 4.1).

    The faces are procedural heads, or with ``face_model`` (a Basel Face Model 2009 ``.mat``
    or an eos ``.bin``) random faces of that morphable model, the paper's data, using its
    first ``n_components`` components (``None``: all). The grids span the ranges of the
    paper's plots; the default ratio is ``azimuth:1, elevation:1, light:1, intrinsic:3`` (the
    paper's is 1:1:1:10; conf/dataset/faces.yaml says why), and a batch is three groups of four
    images, 833 batches an epoch (the paper's is one group of 20; the same yaml says why).
    """

    generator = "faces"
    default_ratio = MappingProxyType({INTRINSIC: 3.0})
    # Azimuth as a 2-d group: a single latent (the paper's z1) folded in four seeds of seven -
    # one value for two azimuths, equivariance R^2 0.32 to 0.69 - where a 2-d group did in none
    # (docs/results.md).
    layout_sizes = MappingProxyType({"azimuth": 2, "elevation": 1, "light": 1, INTRINSIC: None})

    def __init__(
        self,
        n_identities: int = 480,
        n_azimuth: int = 15,
        n_elevation: int = 5,
        n_light: int = 7,
        render_seed: int = 0,
        supersample: int = 2,
        face_model: str | os.PathLike | None = None,
        n_components: int | None = None,
        group_size: int = 4,
        groups_per_batch: int = 3,
        batches_per_epoch: int | None = 833,
        **kwargs: Any,
    ) -> None:
        factors = [
            FactorSpec(name, evenly_spaced(*span, n, f"dataset.n_{name}"))
            for name, span, n in (
                ("azimuth", FACE_AZIMUTH_RANGE, n_azimuth),
                ("elevation", FACE_ELEVATION_RANGE, n_elevation),
                ("light", FACE_LIGHT_RANGE, n_light),
            )
        ]
        super().__init__(
            factors,
            n_identities,
            render_seed,
            supersample,
            group_size=group_size,
            groups_per_batch=groups_per_batch,
            batches_per_epoch=batches_per_epoch,
            **kwargs,
        )
        self.face_model = None if face_model is None else face_model_path(face_model)
        if n_components is not None:
            if self.face_model is None:
                raise ConfigError(
                    "dataset.n_components only applies to a face model; set dataset.face_model "
                    "too, or leave dataset.n_components=null. Example: dataset.face_model="
                    "/data/PublicMM1/01_MorphableModel.mat dataset.n_components=50"
                )
            check_int("n_components", n_components, 1)
        self.n_components = n_components
        # Taken now, so that the cache key stays the same for the life of this data set.
        self._model_fingerprint = None if self.face_model is None else fingerprint(self.face_model)

    def cache_config(self) -> dict[str, Any]:
        config = super().cache_config()
        if self.face_model is not None:
            config.update(face_model=self._model_fingerprint, n_components=self.n_components)
        return config

    def mesh_factory(self) -> Callable[[int], Mesh]:
        if self.face_model is None:
            return partial(face_mesh, seed=self.render_seed)
        model = load_face_model(self.face_model)
        model.check_components(self.n_components)
        log.info("Sampling faces of the face model %s", self.face_model)
        return partial(model.sample, seed=self.render_seed, n_components=self.n_components)


class ChairsDataModule(ProceduralDataModule):
    """Procedural chairs on the 3D-chairs view grid, under one fixed lamp (paper, section 4.2).

    Factors are azimuth (full turn) and elevation; the default layout trains azimuth and
    ``intrinsic`` only, as the paper did.
    """

    generator = "chairs"
    # Four azimuth groups to one intrinsic group (conf/dataset/chairs.yaml says why).
    default_ratio = MappingProxyType({"azimuth": 4.0})
    layout_sizes = MappingProxyType({"azimuth": 2, INTRINSIC: None})

    def __init__(
        self,
        n_identities: int = 500,
        render_seed: int = 0,
        supersample: int = 2,
        **kwargs: Any,
    ) -> None:
        factors = [
            FactorSpec("azimuth", tuple(CHAIR_AZIMUTHS), periodic=True),
            FactorSpec("elevation", tuple(CHAIR_ELEVATIONS)),
        ]
        super().__init__(
            factors,
            n_identities,
            render_seed,
            supersample,
            fixed_light=CHAIR_LIGHT_AZIMUTH,
            **kwargs,
        )

    def mesh_factory(self) -> Callable[[int], Mesh]:
        return partial(chair_mesh, seed=self.render_seed)
