"""A small CPU rasterizer for procedural datasets, compiled with numba.

DC-IGN trains on renders of a mesh where exactly one scene variable (pose or light) changes
inside a mini-batch, so every training batch needs dozens of fresh, exactly controlled views
of one object. Rendering on the fly on the CPU keeps the datasets procedural and infinite,
without any GPU or external graphics stack.

Conventions
-----------
* Object coordinates: y is up and the object's front faces +z.
* The camera orbits the origin. At azimuth ``a`` and elevation ``e`` (radians) it sits at
  ``d * (cos(e) sin(a), sin(e), cos(e) cos(a))`` and looks at the origin with y up, so azimuth 0
  shows the object's front and a positive azimuth moves the camera towards +x.
* Camera frame: x right, y up, z toward the viewer (the camera looks along -z).
* Light: given in the camera frame, so the lamp stays put relative to the viewer while the
  object turns (a face turning under a fixed lamp, as in the paper's face data). Light azimuth
  ``t`` and the lighting's elevation ``p`` give the unit vector pointing *toward* the light,
  ``(sin(t) cos(p), sin(p), cos(t) cos(p))``; ``t = p = 0`` is a lamp at the camera and ``t > 0``
  lights the object from the viewer's right.
* Shading: ``albedo * (ambient + diffuse * max(0, n . l))`` clipped to [0, 1], with ``n`` the unit
  normal flipped to face the camera (two-sided, so open panels are lit from either side).
  Smooth meshes use Gouraud shading with area-weighted vertex normals; the others use flat
  shading with one normal and one albedo (the mean of its vertices') per triangle.
* Image: perspective projection; pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)`` in screen units
  and is sampled at its centre; row 0 is the top of the image. A z-buffer on perspective-correct
  inverse depth keeps the nearest surface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange


@dataclass
class Mesh:
    """A triangle mesh with one albedo per vertex.

    Flat-shaded meshes give each part its own vertices (see ``meshes.merge``), so the per-face
    albedo (mean of the three vertices) is exactly the part's albedo and edges stay crisp.
    """

    vertices: np.ndarray
    faces: np.ndarray
    albedo: np.ndarray
    smooth: bool = False

    def __post_init__(self) -> None:
        vertices = np.asarray(self.vertices)
        faces = np.asarray(self.faces)
        albedo = np.asarray(self.albedo)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise ValueError(f"vertices must have shape (V, 3), got {vertices.shape}")
        if not np.issubdtype(vertices.dtype, np.number):
            raise ValueError(f"vertices must be numeric, got dtype {vertices.dtype}")
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
        if not np.issubdtype(faces.dtype, np.integer):
            raise ValueError(f"faces must hold integer vertex indices, got dtype {faces.dtype}")
        if albedo.shape != (vertices.shape[0],):
            raise ValueError(
                f"albedo must hold one value per vertex, shape ({vertices.shape[0]},), "
                f"got {albedo.shape}"
            )
        if not np.issubdtype(albedo.dtype, np.number):
            raise ValueError(f"albedo must be numeric, got dtype {albedo.dtype}")
        if not np.all(np.isfinite(vertices)):
            raise ValueError("vertices must be finite")
        if faces.size and (faces.min() < 0 or faces.max() >= vertices.shape[0]):
            raise ValueError(
                f"face indices must lie in [0, {vertices.shape[0]}), "
                f"got range [{faces.min()}, {faces.max()}]"
            )
        if albedo.size and not (np.all(albedo >= 0.0) and np.all(albedo <= 1.0)):
            raise ValueError("albedo must lie in [0, 1]")
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(faces, dtype=np.int32)
        self.albedo = np.ascontiguousarray(albedo, dtype=np.float32)
        self.smooth = bool(self.smooth)

    def face_normals(self) -> np.ndarray:
        """Unit normals (F, 3) by the counter-clockwise winding; zero for degenerate faces."""
        normals = self._face_cross()
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)

    def vertex_normals(self) -> np.ndarray:
        """Area-weighted unit vertex normals (V, 3), for Gouraud shading of smooth surfaces.

        Summing the unnormalized face cross products weights each face by its area, so tiny
        sliver triangles near the sphere poles do not bend the normals.
        """
        summed = np.zeros((self.vertices.shape[0], 3), dtype=np.float64)
        cross = self._face_cross()
        for corner in range(3):
            np.add.at(summed, self.faces[:, corner], cross)
        length = np.linalg.norm(summed, axis=1, keepdims=True)
        return np.divide(summed, length, out=np.zeros_like(summed), where=length > 0)

    def _face_cross(self) -> np.ndarray:
        corners = self.vertices.astype(np.float64)[self.faces]
        return np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])


@dataclass(frozen=True)
class Camera:
    """Pinhole camera orbiting the origin at ``distance`` with a vertical field of view."""

    distance: float = 3.0
    fov_deg: float = 30.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.distance) and self.distance > 0.0):
            raise ValueError(f"camera distance must be positive, got {self.distance}")
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"fov_deg must lie in (0, 180), got {self.fov_deg}")


@dataclass(frozen=True)
class Lighting:
    """Ambient plus one directional lamp whose elevation is fixed; its azimuth varies per view."""

    ambient: float = 0.3
    diffuse: float = 0.7
    elevation: float = 0.35

    def __post_init__(self) -> None:
        if not (self.ambient >= 0.0 and self.diffuse >= 0.0):
            raise ValueError(
                f"ambient and diffuse must be non-negative, got {self.ambient}, {self.diffuse}"
            )
        if not math.isfinite(self.elevation):
            raise ValueError(f"light elevation must be finite, got {self.elevation}")


def render_views(
    mesh: Mesh,
    azimuth: np.ndarray,
    elevation: np.ndarray,
    light_azimuth: np.ndarray,
    image_size: int,
    camera: Camera = Camera(),
    lighting: Lighting = Lighting(),
    supersample: int = 1,
    background: float = 0.0,
) -> np.ndarray:
    """Render N grayscale views of ``mesh``; view k uses the k-th entry of each angle array.

    Returns a float32 array ``[N, image_size, image_size]`` in [0, 1]. ``supersample = k``
    renders at ``k * image_size`` and box-filters down, which anti-aliases the silhouettes.
    Views are rendered in parallel, one z-buffer each; the result is deterministic. The
    default camera and lighting are frozen, so sharing them as defaults is safe.
    """
    angles = [
        _as_angles(name, value)
        for name, value in (
            ("azimuth", azimuth),
            ("elevation", elevation),
            ("light_azimuth", light_azimuth),
        )
    ]
    if len({a.shape[0] for a in angles}) != 1:
        raise ValueError(
            "azimuth, elevation and light_azimuth must have equal lengths, got "
            f"{[a.shape[0] for a in angles]}"
        )
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise ValueError(f"image_size must be an int, got {image_size!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    if isinstance(supersample, bool) or not isinstance(supersample, int | np.integer):
        raise ValueError(f"supersample must be an int, got {supersample!r}")
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    if not 0.0 <= background <= 1.0:
        raise ValueError(f"background must lie in [0, 1], got {background}")
    vertices = mesh.vertices.astype(np.float64)
    if vertices.size and np.linalg.norm(vertices, axis=1).max() >= camera.distance:
        raise ValueError(
            "mesh reaches the camera orbit: every vertex must lie closer to the origin than "
            f"camera.distance={camera.distance}"
        )
    if mesh.smooth:
        normals = mesh.vertex_normals()
        albedo = mesh.albedo.astype(np.float64)
    else:
        normals = mesh.face_normals()
        albedo = mesh.albedo.astype(np.float64)[mesh.faces].mean(axis=1)
    hi_size = int(image_size) * int(supersample)
    focal = 0.5 * hi_size / math.tan(math.radians(camera.fov_deg) / 2.0)
    out = np.empty((angles[0].shape[0], int(image_size), int(image_size)), dtype=np.float32)
    _render_kernel(
        vertices,
        mesh.faces,
        normals,
        albedo,
        mesh.smooth,
        angles[0],
        angles[1],
        angles[2],
        int(supersample),
        float(camera.distance),
        focal,
        float(lighting.ambient),
        float(lighting.diffuse),
        float(lighting.elevation),
        float(background),
        out,
    )
    return out


def _as_angles(name: str, value: np.ndarray) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return np.ascontiguousarray(array)


@njit(cache=True, parallel=True)
def _render_kernel(
    vertices,
    faces,
    normals,
    albedo,
    smooth,
    azimuth,
    elevation,
    light_azimuth,
    supersample,
    distance,
    focal,
    ambient,
    diffuse,
    light_elevation,
    background,
    out,
):  # pragma: no cover - compiled
    size = out.shape[1]
    hi_size = size * supersample
    scale = 1.0 / (supersample * supersample)
    for view in prange(azimuth.shape[0]):
        image = _render_one(
            vertices,
            faces,
            normals,
            albedo,
            smooth,
            azimuth[view],
            elevation[view],
            light_azimuth[view],
            hi_size,
            distance,
            focal,
            ambient,
            diffuse,
            light_elevation,
            background,
        )
        for i in range(size):
            for j in range(size):
                total = 0.0
                for di in range(supersample):
                    for dj in range(supersample):
                        total += image[i * supersample + di, j * supersample + dj]
                out[view, i, j] = min(1.0, max(0.0, total * scale))


@njit(cache=True)
def _render_one(
    vertices,
    faces,
    normals,
    albedo,
    smooth,
    azimuth,
    elevation,
    light_azimuth,
    size,
    distance,
    focal,
    ambient,
    diffuse,
    light_elevation,
    background,
):  # pragma: no cover - compiled
    """Rasterize one view; returns the (size, size) float64 image before any downsampling."""
    sa, ca = math.sin(azimuth), math.cos(azimuth)
    se, ce = math.sin(elevation), math.cos(elevation)
    # Camera axes in object coordinates: right, up, and toward-viewer (the orbit direction).
    rx, ry, rz = ca, 0.0, -sa
    ux, uy, uz = -se * sa, ce, -se * ca
    bx, by, bz = ce * sa, se, ce * ca
    # The light direction is fixed in the camera frame; express it in object coordinates once.
    lx_c = math.sin(light_azimuth) * math.cos(light_elevation)
    ly_c = math.sin(light_elevation)
    lz_c = math.cos(light_azimuth) * math.cos(light_elevation)
    lx = lx_c * rx + ly_c * ux + lz_c * bx
    ly = lx_c * ry + ly_c * uy + lz_c * by
    lz = lx_c * rz + ly_c * uz + lz_c * bz

    n_vertices = vertices.shape[0]
    half = 0.5 * size
    screen_x = np.empty(n_vertices)
    screen_y = np.empty(n_vertices)
    inv_depth = np.empty(n_vertices)
    for v in range(n_vertices):
        px, py, pz = vertices[v, 0], vertices[v, 1], vertices[v, 2]
        depth = distance - (px * bx + py * by + pz * bz)
        inv_depth[v] = 1.0 / depth
        screen_x[v] = half + focal * (px * rx + py * ry + pz * rz) / depth
        screen_y[v] = half - focal * (px * ux + py * uy + pz * uz) / depth

    # Gouraud: clipped intensity of each vertex for both orientations, picked per face below.
    # Clipping before interpolation and box filtering keeps every sample a valid shade.
    lit_front = np.empty(n_vertices if smooth else 0)
    lit_back = np.empty(n_vertices if smooth else 0)
    if smooth:
        for v in range(n_vertices):
            ndl = normals[v, 0] * lx + normals[v, 1] * ly + normals[v, 2] * lz
            lit_front[v] = min(1.0, albedo[v] * (ambient + diffuse * max(0.0, ndl)))
            lit_back[v] = min(1.0, albedo[v] * (ambient + diffuse * max(0.0, -ndl)))

    image = np.full((size, size), background)
    zbuffer = np.zeros((size, size))  # inverse depth; 0 is infinitely far
    for f in range(faces.shape[0]):
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = screen_x[i0], screen_y[i0]
        x1, y1 = screen_x[i1], screen_y[i1]
        x2, y2 = screen_x[i2], screen_y[i2]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        # Screen rows grow downward, so a counter-clockwise (front) face has negative area.
        front = area < 0.0
        sign = -1.0 if front else 1.0
        inv_area = 1.0 / (area * sign)
        if smooth:
            if front:
                c0, c1, c2 = lit_front[i0], lit_front[i1], lit_front[i2]
            else:
                c0, c1, c2 = lit_back[i0], lit_back[i1], lit_back[i2]
        else:
            ndl = normals[f, 0] * lx + normals[f, 1] * ly + normals[f, 2] * lz
            if not front:
                ndl = -ndl
            c0 = min(1.0, albedo[f] * (ambient + diffuse * max(0.0, ndl)))
            c1 = c0
            c2 = c0
        jmin = max(0, math.ceil(min(x0, x1, x2) - 0.5))
        jmax = min(size - 1, math.floor(max(x0, x1, x2) - 0.5))
        imin = max(0, math.ceil(min(y0, y1, y2) - 0.5))
        imax = min(size - 1, math.floor(max(y0, y1, y2) - 0.5))
        if jmin > jmax or imin > imax:
            continue
        # Edge functions w_k (weight of vertex k), made non-negative inside by ``sign``,
        # stepped incrementally across the bounding box.
        a0, b0 = -(y2 - y1) * sign, (x2 - x1) * sign
        a1, b1 = -(y0 - y2) * sign, (x0 - x2) * sign
        a2, b2 = -(y1 - y0) * sign, (x1 - x0) * sign
        px0 = jmin + 0.5
        z0, z1, z2 = inv_depth[i0], inv_depth[i1], inv_depth[i2]
        for i in range(imin, imax + 1):
            py = i + 0.5
            w0 = a0 * (px0 - x1) + b0 * (py - y1)
            w1 = a1 * (px0 - x2) + b1 * (py - y2)
            w2 = a2 * (px0 - x0) + b2 * (py - y0)
            for j in range(jmin, jmax + 1):
                if w0 >= 0.0 and w1 >= 0.0 and w2 >= 0.0:
                    z = (w0 * z0 + w1 * z1 + w2 * z2) * inv_area
                    if z > zbuffer[i, j]:
                        zbuffer[i, j] = z
                        image[i, j] = (w0 * c0 + w1 * c1 + w2 * c2) * inv_area
                w0 += a0
                w1 += a1
                w2 += a2
    return image
