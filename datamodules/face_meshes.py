"""Procedural heads standing in for the paper's Basel-face-model renders.

The paper's first experiment renders faces of a morphable model under varying pose (azimuth,
elevation) and light direction. The model itself cannot be downloaded here, so each integer
identity seeds a parametric head instead: a lat-long sphere whose vertices concentrate on the
face, deformed by smooth features (skull proportions, jaw, chin, nose, brow ridge, eye sockets,
cheekbones, lips, ears) and painted with a per-vertex albedo (skin, hair, eyebrows, eyes, lips).
Like the morphable model, identity lives in both shape and albedo, and the surface is smooth
enough for Gouraud shading to carry the lighting cues the network must disentangle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datamodules.meshes import grid_faces, normalize_to_unit_sphere
from datamodules.renderer import Mesh

# Scene ranges of the paper's face experiments, in radians: azimuth about +-86 degrees,
# elevation about +-23 degrees, light azimuth +-80 degrees.
FACE_AZIMUTH_RANGE = (-1.5, 1.5)
FACE_ELEVATION_RANGE = (-0.4, 0.4)
FACE_LIGHT_RANGE = (-math.radians(80.0), math.radians(80.0))

# Grid of the head and neck: 2 * N_LON * (HEAD_RINGS + NECK_RINGS) triangles (2,288), denser
# on the face than elsewhere. The head's rings end at a junction polar angle (from the crown)
# that goes from under the chin in front to the nape at the back; the neck ends in a flat cut.
HEAD_RINGS = 23
NECK_RINGS = 3
N_LON = 44
JUNCTION_FRONT = math.radians(150.0)
JUNCTION_BACK = math.radians(125.0)
NECK_BOTTOM = -1.15


@dataclass(frozen=True)
class FaceSpec:
    """Sampled identity of one head; lengths relative to a unit-radius skull."""

    width: float
    height: float
    depth: float
    jaw: float  # width of the jaw relative to the skull
    chin: float
    nose_length: float
    nose_width: float
    nose_height: float
    nose_top: float
    brow: float
    eye_depth: float
    eye_spacing: float
    cheekbones: float
    lips: float
    mouth_height: float
    ears: float  # 0 for no visible ears
    neck: float  # neck radius
    forehead_slope: float
    skin: float
    hair: float
    hairline: float
    bald: bool
    eyebrows: float  # albedo multiplier of the eyebrows
    eyes: float  # albedo multiplier of the eyes
    lip_tone: float  # albedo multiplier of the lips


def face_spec(identity: int, seed: int = 0) -> FaceSpec:
    """Deterministic parameters of head ``identity`` (a non-negative int) under ``seed``."""
    if identity < 0 or seed < 0:
        raise ValueError(f"identity and seed must be non-negative, got {identity}, {seed}")
    rng = np.random.default_rng([seed, identity])
    u = rng.uniform
    return FaceSpec(
        width=u(0.72, 0.84),
        height=u(0.98, 1.12),
        depth=u(0.88, 1.0),
        jaw=u(0.5, 0.8),
        chin=u(0.02, 0.08),
        nose_length=u(0.28, 0.42),
        nose_width=u(0.05, 0.085),
        nose_height=u(0.14, 0.26),
        nose_top=u(0.14, 0.24),
        brow=u(0.01, 0.05),
        eye_depth=u(0.03, 0.08),
        eye_spacing=u(0.34, 0.42),
        cheekbones=u(0.0, 0.05),
        lips=u(0.015, 0.04),
        mouth_height=u(-0.46, -0.38),
        ears=u(0.06, 0.12) if rng.random() < 0.85 else 0.0,
        neck=u(0.36, 0.46),
        forehead_slope=u(0.0, 0.12),
        skin=u(0.45, 0.88),
        hair=u(0.08, 0.8),
        hairline=u(0.42, 0.62),
        bald=bool(rng.random() < 0.15),
        eyebrows=u(0.3, 0.75),
        eyes=u(0.25, 0.6),
        lip_tone=u(0.6, 0.88),
    )


def face_mesh(identity: int, seed: int = 0) -> Mesh:
    """Smooth head mesh of ``identity`` facing +z, fitted to the frame radius."""
    return build_face(face_spec(identity, seed))


def build_face(spec: FaceSpec) -> Mesh:
    """Deform the face-centred grid by ``spec``, attach the neck and paint the albedo."""
    azimuth = _warped_grid(np.arange(N_LON) / N_LON, -math.pi, math.pi, 0.0, 0.6, 2.2)
    # Rings run from the crown (fraction 0) to the junction with the neck (fraction 1), which
    # sits under the chin in front and higher at the nape.
    fraction = _warped_grid(np.arange(1, HEAD_RINGS + 1) / HEAD_RINGS, 0.0, 1.0, 0.66, 0.2, 2.2)
    facing = 0.5 * (1.0 + np.cos(azimuth))
    junction = JUNCTION_BACK + (JUNCTION_FRONT - JUNCTION_BACK) * facing
    polar = fraction[:, None] * junction[None, :]
    rings = np.stack(
        [np.sin(polar) * np.sin(azimuth), np.cos(polar), np.sin(polar) * np.cos(azimuth)], -1
    )
    unit = np.concatenate([[[0.0, 1.0, 0.0]], rings.reshape(-1, 3)])
    x, y, z = unit[:, 0], unit[:, 1], unit[:, 2]
    front = _smoothstep(z, 0.0, 0.45)
    radial = 1.0 + front * _face_relief(spec, x, y) + _ears(spec, x, y, z)
    head = _proportions(spec, unit * radial[:, None])
    neck = _neck(spec, head[-N_LON:], azimuth, facing)
    albedo = np.concatenate([_albedo(spec, x, y, z, front), np.full(len(neck), spec.skin)])
    mesh = Mesh(
        np.concatenate([head, neck]).astype(np.float32),
        grid_faces(HEAD_RINGS + NECK_RINGS, N_LON),
        albedo,
        smooth=True,
    )
    return normalize_to_unit_sphere(mesh)


def _warped_grid(
    targets: np.ndarray, lo: float, hi: float, centre: float, width: float, boost: float
) -> np.ndarray:
    """Map fractions ``targets`` of [0, 1] into [lo, hi], ``1 + boost`` times denser at ``centre``.

    Inverting the cumulative density puts more rings/meridians where the face has detail
    (nose, lips, eyes) and fewer on the skull, at a fixed triangle budget.
    """
    fine = np.linspace(lo, hi, 4097)
    density = 1.0 + boost * np.exp(-0.5 * ((fine - centre) / width) ** 2)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]))])
    return np.interp(targets, cdf / cdf[-1], fine)


def _neck(
    spec: FaceSpec, junction: np.ndarray, azimuth: np.ndarray, facing: np.ndarray
) -> np.ndarray:
    """Neck rings below the head's last ring, closed by a flat cut (the south pole last).

    The neck starts a little below the junction ring, deeper under the chin than at the
    nape, so the underside of the jaw reads as a surface of its own.
    """
    top = junction[:, 1] - 0.06 - 0.08 * facing
    centre_z = -0.12 * spec.depth
    section = np.stack([spec.neck * np.sin(azimuth), np.cos(azimuth) * spec.neck * 0.95], -1)
    rings = []
    for widen, height in ((1.08, top), (1.0, 0.5 * (top + NECK_BOTTOM)), (1.0, NECK_BOTTOM)):
        heights = np.broadcast_to(height, azimuth.shape)
        rings.append(
            np.stack([widen * section[:, 0], heights, centre_z + widen * section[:, 1]], -1)
        )
    return np.concatenate(rings + [np.array([[0.0, NECK_BOTTOM, centre_z]])])


def _smoothstep(value: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((value - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bump(x: np.ndarray, y: np.ndarray, x0: float, y0: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((x - x0) / sx) ** 2 + ((y - y0) / sy) ** 2))


def _face_relief(spec: FaceSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Radial displacement of the front of the head, in front-view coordinates (x, y)."""
    top, tip = spec.nose_top, spec.nose_top - spec.nose_length
    along = np.clip((top - y) / (top - tip), 0.0, 1.0)
    below = np.exp(-0.5 * (np.minimum(y - tip, 0.0) / 0.035) ** 2)
    width = spec.nose_width * (0.7 + 0.6 * along)
    nose = spec.nose_height * along**1.3 * below * np.exp(-0.5 * (x / width) ** 2)
    nostrils = sum(
        0.25 * spec.nose_height * _bump(x, y, s * 1.5 * spec.nose_width, tip + 0.03, 0.04, 0.035)
        for s in (-1, 1)
    )
    eyes = sum(
        -spec.eye_depth * _bump(x, y, s * spec.eye_spacing, 0.12, 0.11, 0.08) for s in (-1, 1)
    )
    brow = spec.brow * _bump(x, y, 0.0, 0.27, 0.4, 0.06)
    cheeks = sum(spec.cheekbones * _bump(x, y, s * 0.45, -0.08, 0.13, 0.1) for s in (-1, 1))
    mouth = spec.mouth_height
    lips = spec.lips * (
        _bump(x, y, 0.0, mouth + 0.04, 0.14, 0.03) + _bump(x, y, 0.0, mouth - 0.05, 0.12, 0.035)
    ) - 0.5 * spec.lips * _bump(x, y, 0.0, mouth, 0.13, 0.012)
    chin = spec.chin * _bump(x, y, 0.0, -0.72, 0.14, 0.1)
    forehead = -spec.forehead_slope * _smoothstep(y, 0.35, 0.9)
    return nose + nostrils + eyes + brow + cheeks + lips + chin + forehead


def _ears(spec: FaceSpec, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Flat outward bumps on both sides, slightly behind the middle of the head."""
    side = np.abs(x)
    return spec.ears * _smoothstep(side, 0.8, 0.97) * _bump(z, y, -0.08, 0.0, 0.09, 0.16)


def _proportions(spec: FaceSpec, points: np.ndarray) -> np.ndarray:
    """Give the skull a squarer section, a jaw narrowing toward the chin and a flatter base."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    # A superellipse of exponent 2.6 in the horizontal plane flattens the face and the sides.
    ring = np.hypot(x, z)
    squarer = np.where(
        ring > 0.0, ring / np.maximum(np.abs(x) ** 2.6 + np.abs(z) ** 2.6, 1e-12) ** (1 / 2.6), 1.0
    )
    x, z = x * squarer, z * squarer
    lower = _smoothstep(-y, 0.2, 0.95)
    x = x * (1.0 - (1.0 - spec.jaw) * lower)
    # The back of the lower head recedes into the neck, leaving the jaw in front.
    z = np.where(z < 0.0, z * (1.0 - 0.35 * lower), z)
    y = y + 0.5 * np.maximum(0.0, -0.75 - y)
    return np.stack([x * spec.width, y * spec.height, z * spec.depth], axis=1)


def _albedo(
    spec: FaceSpec, x: np.ndarray, y: np.ndarray, z: np.ndarray, front: np.ndarray
) -> np.ndarray:
    """Skin with darker eyebrows, eyes and lips on the face and hair over the skull."""
    tone = np.ones_like(x)
    for s in (-1, 1):
        brow = _bump(x, y, s * spec.eye_spacing, 0.25, 0.09, 0.03)
        eye = _bump(x, y, s * spec.eye_spacing, 0.12, 0.045, 0.03)
        tone *= 1.0 - front * (1.0 - spec.eyebrows) * brow
        tone *= 1.0 - front * (1.0 - spec.eyes) * eye
    lips = _bump(x, y, 0.0, spec.mouth_height, 0.13, 0.05)
    tone *= 1.0 - front * (1.0 - spec.lip_tone) * lips
    albedo = spec.skin * tone
    if not spec.bald:
        # Hair above the hairline and over the back of the skull; both borders follow the
        # grid's rings and meridians, which keeps them from turning into staircases.
        over_top = _smoothstep(y - spec.hairline, -0.05, 0.12)
        behind = _smoothstep(-z, 0.1, 0.45) * _smoothstep(y, -0.55, -0.35)
        hair = np.maximum(over_top, behind)
        albedo = albedo * (1.0 - hair) + spec.hair * hair
    return np.clip(albedo, 0.0, 1.0)
