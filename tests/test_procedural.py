"""Mesh primitives and the procedural chair and face generators."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from datamodules.chair_meshes import (
    ARM_STYLES,
    BACK_STYLES,
    CHAIR_AZIMUTHS,
    CHAIR_ELEVATIONS,
    LEG_STYLES,
    chair_mesh,
    chair_spec,
)
from datamodules.face_meshes import (
    FACE_AZIMUTH_RANGE,
    FACE_ELEVATION_RANGE,
    FACE_LIGHT_RANGE,
    face_mesh,
)
from datamodules.meshes import (
    FRAME_RADIUS,
    box,
    merge,
    normalize_to_unit_sphere,
    prism,
    rotation_x,
    rotation_y,
    signed_volume,
    uv_sphere,
)
from datamodules.renderer import Lighting, Mesh, render_views

FLAT_LIGHT = Lighting(ambient=1.0, diffuse=0.0)


def _silhouettes(meshes: list[Mesh], azimuth: float, elevation: float, size: int) -> np.ndarray:
    return np.stack(
        [
            render_views(m, [azimuth], [elevation], [0.0], size, lighting=FLAT_LIGHT)[0] > 0
            for m in meshes
        ]
    )


def _all_pairs_differ(masks: np.ndarray, min_pixels: int) -> bool:
    flat = masks.reshape(len(masks), -1).astype(np.int32)
    differences = (flat[:, None, :] != flat[None, :, :]).sum(-1)
    off_diagonal = differences[~np.eye(len(masks), dtype=bool)]
    return bool(off_diagonal.min() >= min_pixels)


def _border_is_empty(images: np.ndarray) -> bool:
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], 1)
    return bool(np.all(border == 0.0))


# --- primitives --------------------------------------------------------------------------------


def test_box_is_closed_outward_with_its_volume() -> None:
    rotation = rotation_x(0.3) @ rotation_y(-1.1)
    part = box((0.2, -0.1, 0.4), (0.5, 0.3, 0.2), rotation)
    assert signed_volume(part) == pytest.approx(0.5 * 0.3 * 0.2)
    assert np.linalg.norm(part.vertices.mean(0) - (0.2, -0.1, 0.4)) < 1e-12


@pytest.mark.parametrize("sides", [3, 4, 8])
def test_prism_volume(sides: int) -> None:
    radius, length = 0.3, 1.7
    part = prism(
        (0.1, 0.2, 0.3),
        (0.1 + length / math.sqrt(2), 0.2, 0.3 + length / math.sqrt(2)),
        radius,
        sides,
    )
    polygon = 0.5 * sides * radius**2 * math.sin(2 * math.pi / sides)
    assert signed_volume(part) == pytest.approx(polygon * length)


def test_tapered_prism_is_a_frustum() -> None:
    r0, r1, length, sides = 0.4, 0.1, 0.9, 6
    part = prism((0, 0, 0), (0, length, 0), r0, sides, end_radius=r1)
    area = lambda r: 0.5 * sides * r**2 * math.sin(2 * math.pi / sides)  # noqa: E731
    expected = length / 3 * (area(r0) + area(r1) + math.sqrt(area(r0) * area(r1)))
    assert signed_volume(part) == pytest.approx(expected)


def test_uv_sphere_is_closed_outward_and_round() -> None:
    coarse, fine = uv_sphere(8, 12), uv_sphere(48, 96)
    ball = 4.0 / 3.0 * math.pi
    assert 0.0 < signed_volume(coarse) < signed_volume(fine) < ball
    assert signed_volume(fine) == pytest.approx(ball, rel=0.01)
    np.testing.assert_allclose(np.linalg.norm(fine.vertices, axis=1), 1.0)
    assert len(coarse.faces) == 2 * 12 * 7


def test_bad_primitives() -> None:
    with pytest.raises(ValueError):
        prism((0, 0, 0), (0, 0, 0), 0.1)
    with pytest.raises(ValueError):
        prism((0, 0, 0), (0, 1, 0), 0.1, sides=2)
    with pytest.raises(ValueError):
        merge([])


def test_merge_keeps_each_part_and_its_albedo() -> None:
    a, b = box((0, 0, 0), (1, 1, 1)), prism((2, 0, 0), (2, 1, 0), 0.2, 5)
    mesh = merge([(a, 0.2), (b, 0.7)])
    assert len(mesh.vertices) == len(a.vertices) + len(b.vertices)
    np.testing.assert_array_equal(mesh.faces[len(a.faces) :], b.faces + len(a.vertices))
    np.testing.assert_allclose(mesh.albedo[: len(a.vertices)], 0.2)
    np.testing.assert_allclose(mesh.albedo[len(a.vertices) :], 0.7)
    assert signed_volume(mesh) == pytest.approx(signed_volume(a) + signed_volume(b), rel=1e-6)


def test_normalize_centres_and_scales() -> None:
    mesh = merge([(box((3, 1, -2), (2, 1, 0.5)), 0.5)])
    normalized = normalize_to_unit_sphere(mesh, radius=0.6)
    vertices = normalized.vertices.astype(np.float64)
    assert np.linalg.norm(vertices, axis=1).max() == pytest.approx(0.6, rel=1e-6)
    np.testing.assert_allclose(vertices.min(0) + vertices.max(0), 0.0, atol=1e-6)


# --- chairs ------------------------------------------------------------------------------------


def test_chair_view_grid() -> None:
    assert CHAIR_AZIMUTHS.shape == (31,)
    np.testing.assert_allclose(np.diff(CHAIR_AZIMUTHS), 2 * math.pi / 31)
    assert CHAIR_AZIMUTHS[0] == 0.0
    np.testing.assert_allclose(CHAIR_ELEVATIONS, [math.radians(20), math.radians(30)])


def test_chairs_are_deterministic() -> None:
    first, second = chair_mesh(17), chair_mesh(17)
    np.testing.assert_array_equal(first.vertices, second.vertices)
    np.testing.assert_array_equal(first.faces, second.faces)
    np.testing.assert_array_equal(first.albedo, second.albedo)
    assert not first.smooth
    other_seed = chair_mesh(17, seed=1)
    assert first.vertices.shape != other_seed.vertices.shape or not np.array_equal(
        first.vertices, other_seed.vertices
    )


def test_chair_styles_vary() -> None:
    specs = [chair_spec(i) for i in range(200)]
    legs = Counter(s.legs for s in specs)
    backs = Counter(s.back for s in specs)
    arms = Counter(s.arms for s in specs)
    assert set(legs) == set(LEG_STYLES)
    assert set(backs) == set(BACK_STYLES)
    assert set(arms) == set(ARM_STYLES)
    assert sum(s.back_members for s in specs if s.back in ("slats", "bars")) > 0
    assert len({round(s.seat_height, 6) for s in specs}) == 200
    # Parts get visibly different albedos in many chairs.
    assert sum(abs(s.albedo_seat - s.albedo_legs) > 0.25 for s in specs) > 60


def test_chair_silhouettes_are_distinct() -> None:
    masks = _silhouettes([chair_mesh(i) for i in range(50)], 0.6, CHAIR_ELEVATIONS[0], 32)
    assert _all_pairs_differ(masks, min_pixels=3)


def test_chairs_fit_the_frame_at_every_grid_view() -> None:
    azimuth = np.tile(CHAIR_AZIMUTHS, 2)
    elevation = np.repeat(CHAIR_ELEVATIONS, 31)
    for identity in range(40):
        mesh = chair_mesh(identity)
        assert np.linalg.norm(mesh.vertices, axis=1).max() <= FRAME_RADIUS + 1e-6
        images = render_views(mesh, azimuth, elevation, np.zeros(62), 64, lighting=FLAT_LIGHT)
        assert _border_is_empty(images), identity
        # ...while filling a good part of it: the tallest silhouette spans half the image.
        rows = np.nonzero(images.max(axis=(0, 2)))[0]
        assert rows.max() - rows.min() >= 32, identity


def test_bad_identity() -> None:
    with pytest.raises(ValueError):
        chair_mesh(-1)
    with pytest.raises(ValueError):
        face_mesh(0, seed=-2)


# --- faces -------------------------------------------------------------------------------------


def test_face_ranges() -> None:
    np.testing.assert_allclose(FACE_AZIMUTH_RANGE, (-1.5, 1.5))
    np.testing.assert_allclose(FACE_ELEVATION_RANGE, (-0.4, 0.4))
    np.testing.assert_allclose(FACE_LIGHT_RANGE, (-math.radians(80), math.radians(80)))


def test_face_mesh_shape_and_determinism() -> None:
    mesh = face_mesh(3)
    assert mesh.smooth
    assert 1000 <= len(mesh.faces) <= 2500
    np.testing.assert_array_equal(mesh.vertices, face_mesh(3).vertices)
    np.testing.assert_array_equal(mesh.albedo, face_mesh(3).albedo)
    assert signed_volume(mesh) > 0.0  # closed and wound outward


def test_face_looks_toward_plus_z() -> None:
    for identity in range(10):
        vertices = face_mesh(identity).vertices
        nose_tip = vertices[np.argmax(vertices[:, 2])]
        assert abs(nose_tip[0]) < 0.05
        # The frontmost point is a nose: it sticks out of the head at its own height.
        band = (np.abs(vertices[:, 1] - nose_tip[1]) < 0.05) & (np.abs(vertices[:, 0]) > 0.15)
        assert vertices[band, 2].max() < nose_tip[2] - 0.05


def test_faces_differ_in_shape_and_albedo() -> None:
    meshes = [face_mesh(i) for i in range(20)]
    masks = _silhouettes(meshes, 0.8, 0.1, 48)
    assert _all_pairs_differ(masks, min_pixels=3)
    # Same topology, so albedo maps can be compared vertex by vertex.
    albedo = np.stack([m.albedo for m in meshes])
    differences = np.abs(albedo[:, None] - albedo[None]).mean(-1)
    assert differences[~np.eye(20, dtype=bool)].min() > 0.01


def test_heads_stay_in_frame_over_the_pose_ranges() -> None:
    azimuth, elevation = np.meshgrid(
        np.linspace(*FACE_AZIMUTH_RANGE, 9), np.linspace(*FACE_ELEVATION_RANGE, 3)
    )
    azimuth, elevation = azimuth.ravel(), elevation.ravel()
    for identity in range(15):
        images = render_views(
            face_mesh(identity), azimuth, elevation, np.zeros(azimuth.size), 64, lighting=FLAT_LIGHT
        )
        assert _border_is_empty(images), identity
        rows = np.nonzero(images.max(axis=(0, 2)))[0]
        assert rows.max() - rows.min() >= 40, identity


@pytest.mark.parametrize("identity", range(5))
def test_light_from_the_right_brightens_the_right_half(identity: int) -> None:
    mesh = face_mesh(identity)
    light = FACE_LIGHT_RANGE[1]
    right_lit, left_lit = render_views(mesh, [0.0, 0.0], [0.0, 0.0], [light, -light], 32)
    half = 16
    assert right_lit[:, half:].sum() > 1.3 * right_lit[:, :half].sum()
    assert left_lit[:, :half].sum() > 1.3 * left_lit[:, half:].sum()
