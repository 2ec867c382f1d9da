"""Renderer checks against closed-form pinhole geometry and Lambertian shading."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datamodules.meshes import box, merge, uv_sphere
from datamodules.renderer import Camera, Lighting, Mesh, render_views

FLAT_LIGHT = Lighting(ambient=1.0, diffuse=0.0)  # pixel value = albedo: a clean silhouette


def _render(
    mesh: Mesh,
    azimuth: float = 0.0,
    elevation: float = 0.0,
    light: float = 0.0,
    size: int = 16,
    **kwargs,
) -> np.ndarray:
    return render_views(mesh, [azimuth], [elevation], [light], size, **kwargs)[0]


def _square(
    center: tuple[float, float, float], half: float, albedo: float, clockwise: bool = False
) -> Mesh:
    """Open square in a plane z = const, wound counter-clockwise seen from +z unless flipped."""
    cx, cy, cz = center
    vertices = np.array(
        [
            [cx - half, cy - half, cz],
            [cx + half, cy - half, cz],
            [cx + half, cy + half, cz],
            [cx - half, cy + half, cz],
        ]
    )
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    if clockwise:
        faces = faces[:, ::-1]
    return Mesh(vertices, faces, np.full(4, albedo))


def _look_at(azimuth: float, elevation: float, camera: Camera) -> tuple[np.ndarray, ...]:
    """Camera position and (right, up, forward) axes of a standard y-up look-at camera."""
    position = camera.distance * np.array(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ]
    )
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return position, right, up, forward


def _project(
    point: np.ndarray, azimuth: float, elevation: float, size: int, camera: Camera
) -> tuple[float, float]:
    """(column, row) in continuous pixel units of a world point under the pinhole model."""
    position, right, up, forward = _look_at(azimuth, elevation, camera)
    rel = np.asarray(point) - position
    focal = 0.5 * size / math.tan(math.radians(camera.fov_deg) / 2)
    depth = rel @ forward
    return 0.5 * size + focal * (rel @ right) / depth, 0.5 * size - focal * (rel @ up) / depth


def _ray_cast_triangle(
    triangle: np.ndarray, azimuth: float, elevation: float, size: int, camera: Camera
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centre ray hits the triangle, and pixels too close to an edge to judge."""
    position, right, up, forward = _look_at(azimuth, elevation, camera)
    focal = 0.5 * size / math.tan(math.radians(camera.fov_deg) / 2)
    rows, cols = np.mgrid[0:size, 0:size]
    u = (cols + 0.5 - 0.5 * size) / focal
    v = (0.5 * size - (rows + 0.5)) / focal
    rays = forward + u[..., None] * right + v[..., None] * up
    # Moller-Trumbore: solve position + t * ray = v0 + b1 * e1 + b2 * e2.
    v0, v1, v2 = triangle
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(rays, e2)
    det = p @ e1
    s = position - v0
    b1 = np.einsum("ijk,k->ij", p, s) / det
    q = np.cross(s, e1)
    b2 = (rays * q).sum(-1) / det
    t = (q @ e2) / det
    b0 = 1.0 - b1 - b2
    hit = (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (t > 0)
    ambiguous = np.minimum(np.minimum(np.abs(b0), np.abs(b1)), np.abs(b2)) < 1e-6
    return hit, ambiguous


@pytest.mark.parametrize("azimuth, elevation", [(0.0, 0.0), (0.4, 0.3), (-0.7, -0.2), (2.8, 0.5)])
def test_triangle_coverage_matches_ray_casting(azimuth: float, elevation: float) -> None:
    triangle = np.array([[-0.6, -0.5, 0.0], [0.7, -0.3, 0.1], [0.05, 0.65, -0.1]])
    mesh = Mesh(triangle, np.array([[0, 1, 2]]), np.ones(3))
    camera = Camera()
    image = _render(mesh, azimuth, elevation, size=16, camera=camera, lighting=FLAT_LIGHT)
    expected, ambiguous = _ray_cast_triangle(triangle, azimuth, elevation, 16, camera)
    assert expected.sum() > 20
    wrong = (image > 0) != expected
    assert not np.any(wrong & ~ambiguous), np.argwhere(wrong)
    np.testing.assert_allclose(image[expected & ~ambiguous], 1.0)


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_square_wins_in_the_overlap(near_first: bool) -> None:
    near = _square((-0.15, 0.0, 0.3), 0.35, 0.9)
    far = _square((0.15, 0.0, -0.3), 0.35, 0.4)
    parts = [near, far] if near_first else [far, near]
    mesh = Mesh(
        np.concatenate([p.vertices for p in parts]),
        np.concatenate([parts[0].faces, parts[1].faces + 4]),
        np.concatenate([p.albedo for p in parts]),
    )
    size, camera = 32, Camera()
    for azimuth, overlap_value in ((0.0, 0.9), (math.pi, 0.4)):
        image = _render(mesh, azimuth, size=size, camera=camera, lighting=FLAT_LIGHT)
        col, row = _project((0.0, 0.0, 0.0), azimuth, 0.0, size, camera)
        assert image[int(row), int(col)] == pytest.approx(overlap_value)
        # Points seen only through one square keep that square's albedo.
        for point, value in (((-0.4, 0.0, 0.3), 0.9), ((0.4, 0.0, -0.3), 0.4)):
            col, row = _project(point, azimuth, 0.0, size, camera)
            assert image[int(row), int(col)] == pytest.approx(value)


@pytest.mark.parametrize("light", [0.0, 0.5, -1.0, 2.5, math.pi])
@pytest.mark.parametrize("light_elevation", [0.0, 0.3])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("clockwise", [False, True])
def test_plane_shade_follows_lambert(
    light: float, light_elevation: float, smooth: bool, clockwise: bool
) -> None:
    albedo, ambient, diffuse = 0.8, 0.2, 0.6
    square = _square((0.0, 0.0, 0.0), 0.5, albedo, clockwise)
    mesh = Mesh(square.vertices, square.faces, square.albedo, smooth)
    lighting = Lighting(ambient=ambient, diffuse=diffuse, elevation=light_elevation)
    image = _render(mesh, light=light, lighting=lighting)
    cosine = math.cos(light) * math.cos(light_elevation)
    expected = albedo * (ambient + diffuse * max(0.0, cosine))
    covered = image[4:12, 4:12]
    np.testing.assert_allclose(covered, expected, rtol=1e-5)
    assert image[0, 0] == 0.0


@pytest.mark.parametrize("azimuth", [math.pi / 2, 1.0, -2.0])
def test_plane_shade_uses_the_turned_normal(azimuth: float) -> None:
    # A square in the plane x = 0 (normal +-x), seen obliquely. The camera's right axis is
    # (cos a, 0, -sin a) and its back axis (sin a, 0, cos a), so the light at azimuth t in the
    # camera frame points along (sin(a + t), 0, cos(a + t)) in object space; the normal
    # flipped toward the camera is sign(sin a) * (1, 0, 0).
    vertices = np.array([[0.0, -0.5, -0.5], [0.0, -0.5, 0.5], [0.0, 0.5, 0.5], [0.0, 0.5, -0.5]])
    mesh = Mesh(vertices, np.array([[0, 2, 1], [0, 3, 2]]), np.full(4, 0.5))
    lighting = Lighting(ambient=0.1, diffuse=0.9, elevation=0.0)
    light = 0.6
    cosine = math.copysign(1.0, math.sin(azimuth)) * math.sin(azimuth + light)
    expected = 0.5 * (0.1 + 0.9 * max(0.0, cosine))
    image = _render(mesh, azimuth, light=light, size=32, lighting=lighting)
    col, row = _project((0.0, 0.0, 0.0), azimuth, 0.0, 32, Camera())
    assert image[int(row), int(col)] == pytest.approx(expected, rel=1e-5)


def _marker_centroid(
    center: tuple[float, float, float], azimuth: float, elevation: float, size: int = 32
) -> tuple[float, float]:
    mesh = merge([(box(center, (0.2, 0.2, 0.2)), 1.0)])
    image = _render(mesh, azimuth, elevation, size=size, lighting=FLAT_LIGHT)
    rows, cols = np.nonzero(image)
    return cols.mean() + 0.5, rows.mean() + 0.5


@pytest.mark.parametrize(
    "center, azimuth, elevation, side",
    [
        ((0.5, 0.0, 0.0), 0.0, 0.0, "right"),
        ((0.0, 0.0, 0.5), math.pi / 2, 0.0, "left"),
        ((0.0, 0.0, 0.5), -math.pi / 2, 0.0, "right"),
        ((0.0, 0.5, 0.0), 0.0, 0.0, "top"),
        ((0.0, 0.0, 0.5), 0.0, 0.6, "bottom"),
        ((0.0, 0.0, 0.5), 0.0, -0.6, "top"),
    ],
)
def test_view_conventions(
    center: tuple[float, float, float], azimuth: float, elevation: float, side: str
) -> None:
    col, row = _marker_centroid(center, azimuth, elevation)
    expected_col, expected_row = _project(center, azimuth, elevation, 32, Camera())
    assert col == pytest.approx(expected_col, abs=1.0)
    assert row == pytest.approx(expected_row, abs=1.0)
    offset = {"right": col - 16, "left": 16 - col, "top": 16 - row, "bottom": row - 16}[side]
    assert offset > 2.0


def test_marker_facing_the_camera_is_centred() -> None:
    col, row = _marker_centroid((0.5, 0.0, 0.0), math.pi / 2, 0.0)
    assert (col, row) == (pytest.approx(16.0, abs=0.5), pytest.approx(16.0, abs=0.5))


@pytest.mark.parametrize("light, brighter", [(1.0, "right"), (-1.0, "left")])
def test_light_azimuth_lights_the_expected_side(light: float, brighter: str) -> None:
    sphere = uv_sphere(16, 24)
    mesh = merge([(sphere.transformed(np.eye(3) * 0.6), 0.9)], smooth=True)
    image = _render(mesh, light=light, size=32, lighting=Lighting(elevation=0.0))
    left, right = image[:, :16].sum(), image[:, 16:].sum()
    assert (right > 1.3 * left) if brighter == "right" else (left > 1.3 * right)


def test_light_elevation_lights_the_top() -> None:
    mesh = merge([(uv_sphere(16, 24).transformed(np.eye(3) * 0.6), 0.9)], smooth=True)
    image = _render(mesh, size=32, lighting=Lighting(elevation=0.6))
    assert image[:16].sum() > 1.3 * image[16:].sum()


def test_supersampling_integrates_the_projected_area() -> None:
    camera = Camera()
    size, half = 16, 0.5
    image = _render(
        _square((0.0, 0.0, 0.0), half, 1.0),
        size=size,
        camera=camera,
        lighting=FLAT_LIGHT,
        supersample=4,
    )
    focal = 0.5 * size / math.tan(math.radians(camera.fov_deg) / 2)
    side = 2 * half * focal / camera.distance
    assert image.sum() == pytest.approx(side**2, rel=0.02)
    assert np.any((image > 0.05) & (image < 0.95))  # anti-aliased edges


def test_background_value_and_output_contract() -> None:
    mesh = merge([(box((0, 0, 0), (0.8, 0.5, 0.3)), 0.7)])
    rng = np.random.default_rng(0)
    azimuth, elevation, light = rng.uniform(-3, 3, (3, 5))
    first = render_views(mesh, azimuth, elevation, light, 12, background=0.25, supersample=2)
    second = render_views(mesh, azimuth, elevation, light, 12, background=0.25, supersample=2)
    assert first.shape == (5, 12, 12) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert first[:, 0, 0] == pytest.approx(0.25)


def test_bright_shading_is_clipped() -> None:
    image = _render(_square((0, 0, 0), 0.5, 1.0), lighting=Lighting(ambient=0.9, diffuse=0.9))
    assert image.max() == 1.0


def test_views_are_independent_of_batching() -> None:
    mesh = merge([(box((0.1, 0, 0), (0.8, 0.5, 0.3)), 0.7)])
    angles = np.array([0.3, 1.2, -2.0])
    batch = render_views(mesh, angles, angles / 3, -angles, 16)
    for k in range(3):
        np.testing.assert_array_equal(batch[k], _render(mesh, angles[k], angles[k] / 3, -angles[k]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"azimuth": [0.0, 1.0]}, "equal lengths"),
        ({"azimuth": [[0.0]]}, "1-D"),
        ({"light_azimuth": [np.nan]}, "finite"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": 8.0}, "image_size"),
        ({"supersample": 0}, "supersample"),
        ({"background": 1.5}, "background"),
        ({"camera": Camera(distance=0.5)}, "camera"),
    ],
)
def test_bad_render_arguments(kwargs: dict, message: str) -> None:
    arguments = {
        "mesh": merge([(box((0, 0, 0), (1, 1, 1)), 0.5)]),
        "azimuth": [0.0],
        "elevation": [0.0],
        "light_azimuth": [0.0],
        "image_size": 8,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        render_views(**arguments)


@pytest.mark.parametrize(
    "vertices, faces, albedo, message",
    [
        (np.zeros((3, 2)), [[0, 1, 2]], np.ones(3), "vertices"),
        (np.zeros((3, 3)), [[0, 1, 3]], np.ones(3), "indices"),
        (np.zeros((3, 3)), [[0.0, 1.0, 2.0]], np.ones(3), "integer"),
        (np.zeros((3, 3)), [[0, 1]], np.ones(3), "faces"),
        (np.zeros((3, 3)), [[0, 1, 2]], np.ones(2), "albedo"),
        (np.zeros((3, 3)), [[0, 1, 2]], np.full(3, 1.5), r"\[0, 1\]"),
        (np.full((3, 3), np.inf), [[0, 1, 2]], np.ones(3), "finite"),
    ],
)
def test_bad_meshes(vertices, faces, albedo, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mesh(np.asarray(vertices), np.asarray(faces), np.asarray(albedo))


def test_mesh_normalizes_dtypes() -> None:
    mesh = Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]], dtype=np.int64), np.ones(3), smooth=1)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert mesh.albedo.dtype == np.float32 and mesh.smooth is True


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Camera(fov_deg=0.0),
        lambda: Camera(distance=-1.0),
        lambda: Lighting(ambient=-0.1),
        lambda: Lighting(elevation=math.inf),
    ],
)
def test_bad_camera_and_lighting(factory) -> None:
    with pytest.raises(ValueError):
        factory()
