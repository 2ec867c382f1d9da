"""Building blocks for procedural meshes: convex primitives, a lat-long sphere, merging.

Procedural objects are assembled from closed parts (boxes, prisms, spheres), each with one
albedo. Every part keeps its own vertices in the merged mesh, so flat shading sees exactly the
part's albedo and the silhouettes of touching parts stay sharp. Triangles of closed parts are
wound counter-clockwise seen from outside (outward normals), as the renderer expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from datamodules.renderer import Mesh

# Largest radius that keeps an object inside the frame of the default camera (distance 3,
# 30 degree field of view) from every direction: a sphere of radius r subtends asin(r / 3),
# which stays below the 15 degree half-angle for r < 0.776; 0.7 leaves a few pixels of margin.
FRAME_RADIUS = 0.7


@dataclass(frozen=True)
class Part:
    """Vertices (V, 3) float64 and triangles (F, 3) int64 of one closed, single-albedo piece."""

    vertices: np.ndarray
    faces: np.ndarray

    def transformed(
        self, rotation: np.ndarray | None = None, offset: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> Part:
        """Apply a linear map (rotation or scaling) about the origin, then translate."""
        vertices = self.vertices if rotation is None else self.vertices @ np.asarray(rotation).T
        return Part(vertices + np.asarray(offset, dtype=np.float64), self.faces)


def rotation_x(angle: float) -> np.ndarray:
    """Rotation about +x; positive angles turn +y toward +z."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rotation_y(angle: float) -> np.ndarray:
    """Rotation about +y; positive angles turn +z toward +x."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def box(center: Sequence[float], size: Sequence[float], rotation: np.ndarray | None = None) -> Part:
    """Axis-aligned box of extents ``size`` centred at ``center``, optionally rotated about it."""
    corners = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
    corners = corners * np.asarray(size, dtype=np.float64)
    # Corner index = 4 * ix + 2 * iy + iz; two triangles per side, oriented below.
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = np.array([tri for a, b, c, d in quads for tri in ((a, b, c), (a, c, d))])
    part = Part(corners, _orient_outward(corners, faces))
    return part.transformed(rotation, center)


def prism(
    start: Sequence[float],
    end: Sequence[float],
    radius: float,
    sides: int = 6,
    end_radius: float | None = None,
    phase: float = 0.0,
) -> Part:
    """Closed n-gon prism (or frustum, with ``end_radius``) whose axis runs from start to end.

    Legs, posts and tubes are prisms: 4 sides with ``phase = pi / 4`` gives a square section
    whose sides are ``radius * sqrt(2)`` long; 8 or more sides read as round at 64 pixels.
    """
    if sides < 3:
        raise ValueError(f"a prism needs at least 3 sides, got {sides}")
    start_point = np.asarray(start, dtype=np.float64)
    axis = np.asarray(end, dtype=np.float64) - start_point
    length = float(np.linalg.norm(axis))
    if length == 0.0:
        raise ValueError("prism start and end coincide")
    axis /= length
    # Any unit vector orthogonal to the axis; the helper avoids the axis' dominant component.
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    w = np.cross(axis, u)
    angles = phase + 2.0 * math.pi * np.arange(sides) / sides
    ring = np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * w
    far_radius = radius if end_radius is None else end_radius
    vertices = np.concatenate(
        [start_point + radius * ring, start_point + length * axis + far_radius * ring]
    )
    k = np.arange(sides)
    k1 = (k + 1) % sides
    walls = np.concatenate(
        [np.stack([k, k1, k1 + sides], 1), np.stack([k, k1 + sides, k + sides], 1)]
    )
    fan = np.arange(1, sides - 1)
    caps = np.concatenate(
        [
            np.stack([np.zeros_like(fan), fan, fan + 1], 1),
            np.stack([np.full_like(fan, sides), fan + sides, fan + 1 + sides], 1),
        ]
    )
    faces = np.concatenate([walls, caps])
    return Part(vertices, _orient_outward(vertices, faces))


def latlong_sphere(polar: np.ndarray, azimuth: np.ndarray) -> Part:
    """Unit sphere on a latitude/longitude grid with poles on +-y.

    ``polar`` holds the ring angles from +y, strictly inside (0, pi) and increasing; ``azimuth``
    holds the meridians, increasing within one turn, measured about y from +z toward +x (so
    azimuth 0 is the front). Non-uniform grids let a head spend its vertices on the face.
    Vertex order: north pole, the rings row by row, south pole.
    """
    polar = np.asarray(polar, dtype=np.float64)
    azimuth = np.asarray(azimuth, dtype=np.float64)
    n_rings, n_lon = polar.shape[0], azimuth.shape[0]
    if n_rings < 1 or n_lon < 3:
        raise ValueError("a lat-long sphere needs at least 1 ring and 3 meridians")
    sin_p = np.sin(polar)[:, None]
    ring_points = np.stack(
        [
            sin_p * np.sin(azimuth),
            np.repeat(np.cos(polar)[:, None], n_lon, 1),
            sin_p * np.cos(azimuth),
        ],
        axis=-1,
    ).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 1.0, 0.0]], ring_points, [[0.0, -1.0, 0.0]]])
    return Part(vertices, grid_faces(n_rings, n_lon))


def grid_faces(n_rings: int, n_lon: int) -> np.ndarray:
    """Triangles of a closed lat-long grid: north pole, ``n_rings`` rings of ``n_lon``, south pole.

    Meridians are assumed to run counter-clockwise seen from the north pole (from +z toward +x
    when the north pole is +y), which makes the triangles wind outward.
    """
    south = 1 + n_rings * n_lon
    col = np.arange(n_lon)
    nxt = (col + 1) % n_lon
    faces = [np.stack([np.zeros(n_lon, int), 1 + col, 1 + nxt], 1)]
    for r in range(n_rings - 1):
        top, bottom = 1 + r * n_lon, 1 + (r + 1) * n_lon
        faces.append(np.stack([top + col, bottom + col, bottom + nxt], 1))
        faces.append(np.stack([top + col, bottom + nxt, top + nxt], 1))
    last = 1 + (n_rings - 1) * n_lon
    faces.append(np.stack([last + col, np.full(n_lon, south), last + nxt], 1))
    return np.concatenate(faces)


def uv_sphere(n_lat: int, n_lon: int) -> Part:
    """Unit sphere with ``n_lat`` uniformly spaced latitude bands and ``n_lon`` meridians."""
    if n_lat < 2:
        raise ValueError(f"uv_sphere needs n_lat >= 2, got {n_lat}")
    polar = math.pi * np.arange(1, n_lat) / n_lat
    azimuth = 2.0 * math.pi * np.arange(n_lon) / n_lon
    return latlong_sphere(polar, azimuth)


def merge(parts: Sequence[tuple[Part, float | np.ndarray]], smooth: bool = False) -> Mesh:
    """Concatenate parts into one mesh; each part's albedo is a scalar or one value per vertex."""
    if not parts:
        raise ValueError("merge needs at least one part")
    vertices, faces, albedo = [], [], []
    offset = 0
    for part, part_albedo in parts:
        vertices.append(part.vertices)
        faces.append(part.faces + offset)
        albedo.append(np.broadcast_to(np.asarray(part_albedo, np.float64), (len(part.vertices),)))
        offset += len(part.vertices)
    return Mesh(
        vertices=np.concatenate(vertices).astype(np.float32),
        faces=np.concatenate(faces).astype(np.int32),
        albedo=np.clip(np.concatenate(albedo), 0.0, 1.0).astype(np.float32),
        smooth=smooth,
    )


def normalize_to_unit_sphere(mesh: Mesh, radius: float = FRAME_RADIUS) -> Mesh:
    """Centre the bounding box on the origin and scale the farthest vertex to ``radius``.

    Objects bounded this way fit the frame from every camera direction, and the size of the
    object in the image no longer depends on the random proportions of one identity.
    """
    vertices = mesh.vertices.astype(np.float64)
    centred = vertices - 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    extent = np.linalg.norm(centred, axis=1).max()
    if extent == 0.0:
        raise ValueError("cannot normalize a mesh whose vertices all coincide")
    return Mesh(centred * (radius / extent), mesh.faces, mesh.albedo, mesh.smooth)


def signed_volume(part: Part | Mesh) -> float:
    """Enclosed volume by the divergence theorem; positive when a closed surface winds outward."""
    corners = np.asarray(part.vertices, dtype=np.float64)[part.faces]
    return float(
        np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6.0
    )


def _orient_outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Flip triangles of a convex part whose normal points toward the part's centroid."""
    corners = vertices[faces]
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    outward = corners.mean(axis=1) - vertices.mean(axis=0)
    flip = np.einsum("ij,ij->i", normal, outward) < 0.0
    oriented = faces.copy()
    oriented[flip] = oriented[flip][:, [0, 2, 1]]
    return oriented
