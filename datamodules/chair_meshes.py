"""Procedural chairs standing in for the 3D-chairs dataset (Aubry et al., CVPR 2014).

The paper's second experiment disentangles chair identity from the viewpoint on 809 CAD
chairs rendered on a fixed grid of 31 azimuths x 2 elevations. Those renders cannot be
downloaded here, so each integer identity seeds a random chair instead: seat, one of several leg
and backrest constructions, optional armrests and contrasting part albedos. The styles change
the topology and silhouette, not only the proportions, so a network has to encode real shape.

Chairs are built in metres-like units (floor at y = 0, front toward +z, backrest toward -z) and
then normalized to the frame radius of ``meshes.normalize_to_unit_sphere``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from datamodules.meshes import (
    Part,
    box,
    merge,
    normalize_to_unit_sphere,
    prism,
    rotation_x,
    uv_sphere,
)
from datamodules.renderer import Mesh

# The 3D-chairs view grid: 31 azimuths over the full turn and elevations of 20 and 30 degrees.
CHAIR_AZIMUTHS = 2.0 * math.pi * np.arange(31) / 31
CHAIR_ELEVATIONS = np.radians([20.0, 30.0])

# Legs: four square legs, four round tapered legs, a central column on a star or disc base,
# tube runners on the floor (sled), a bent tube with no rear legs (cantilever), or arm panels
# down to the floor (club chair).
LEG_STYLES = ("straight", "round", "pedestal", "sled", "cantilever", "panel")
# Backrests: a panel (optionally raised on posts or arched), vertical slats, horizontal bars;
# stools have none.
BACK_STYLES = ("solid", "slats", "bars", "none")
# Armrests: none, pads on posts, or solid side panels.
ARM_STYLES = ("none", "posts", "boxed")


@dataclass(frozen=True)
class ChairSpec:
    """Sampled parameters of one chair; lengths in metres, angles in radians."""

    seat_width: float
    seat_depth: float
    seat_thickness: float
    seat_height: float
    round_seat: bool
    cushion: float  # cushion thickness; 0 for none
    legs: str
    leg_size: float
    leg_inset: float
    leg_splay: float
    stretchers: bool
    apron: float  # height of the skirt under the seat; 0 for none
    feet: int  # pedestal feet; 0 means a disc base
    casters: bool
    back: str
    back_height: float
    back_width: float
    back_thickness: float
    back_tilt: float
    back_gap: float  # solid backs: gap between seat and panel
    back_arch: float  # solid backs: arch height as a fraction of half the width; 0 for flat
    back_members: int  # slats or bars
    arms: str
    arm_height: float
    arm_width: float
    albedo_seat: float
    albedo_legs: float
    albedo_back: float
    albedo_arms: float
    albedo_cushion: float


def chair_spec(identity: int, seed: int = 0) -> ChairSpec:
    """Deterministic parameters of chair ``identity`` (a non-negative int) under ``seed``."""
    if identity < 0 or seed < 0:
        raise ValueError(f"identity and seed must be non-negative, got {identity}, {seed}")
    rng = np.random.default_rng([seed, identity])
    u = rng.uniform
    back = str(rng.choice(BACK_STYLES, p=[0.45, 0.25, 0.22, 0.08]))
    stool = back == "none"
    legs = str(rng.choice(LEG_STYLES[:5], p=[0.3, 0.2, 0.2, 0.15, 0.15]))
    arms = "none" if stool else str(rng.choice(ARM_STYLES, p=[0.55, 0.27, 0.18]))
    if arms == "boxed" and legs in ("straight", "round") and rng.random() < 0.5:
        legs = "panel"  # club chair: the arm panels reach the floor and replace the legs
    round_seat = arms == "none" and legs in ("pedestal", "round") and rng.random() < 0.4
    bar_stool = stool and rng.random() < 0.4
    width = u(0.40, 0.60)
    depth = width * u(0.85, 1.15) if round_seat else u(0.38, 0.56)
    albedo_seat = u(0.25, 0.95)
    return ChairSpec(
        seat_width=width,
        seat_depth=depth,
        seat_thickness=u(0.025, 0.10),
        seat_height=u(0.62, 0.80) if bar_stool else u(0.38, 0.50),
        round_seat=round_seat,
        cushion=u(0.03, 0.07) if rng.random() < 0.25 else 0.0,
        legs=legs,
        leg_size=u(0.025, 0.06),
        leg_inset=u(0.0, 0.05),
        leg_splay=u(0.0, 0.08) if rng.random() < 0.5 else 0.0,
        stretchers=bool(rng.random() < 0.4),
        apron=u(0.04, 0.10) if rng.random() < 0.35 else 0.0,
        feet=int(rng.choice([0, 4, 5], p=[0.25, 0.3, 0.45])),
        casters=bool(rng.random() < 0.5),
        back=back,
        back_height=u(0.25, 0.60),
        back_width=u(0.75, 1.0),
        back_thickness=u(0.02, 0.06),
        back_tilt=u(0.0, 0.35),
        back_gap=u(0.04, 0.15) if rng.random() < 0.35 else 0.0,
        back_arch=u(0.2, 0.6) if rng.random() < 0.35 else 0.0,
        back_members=int(rng.integers(2, 7)),
        arms=arms,
        arm_height=u(0.15, 0.28),
        arm_width=u(0.03, 0.10),
        albedo_seat=albedo_seat,
        albedo_legs=_contrasting(rng, albedo_seat),
        albedo_back=albedo_seat if rng.random() < 0.6 else u(0.25, 0.95),
        albedo_arms=u(0.25, 0.95),
        albedo_cushion=u(0.25, 0.95),
    )


def chair_mesh(identity: int, seed: int = 0) -> Mesh:
    """Flat-shaded mesh of chair ``identity``, facing +z and fitted to the frame radius."""
    return build_chair(chair_spec(identity, seed))


def build_chair(spec: ChairSpec) -> Mesh:
    """Assemble the parts described by ``spec`` into one normalized mesh."""
    parts = _seat(spec) + _legs(spec) + _back(spec) + _arms(spec)
    return normalize_to_unit_sphere(merge(parts, smooth=False))


def _contrasting(rng: np.random.Generator, albedo: float) -> float:
    """Leg albedo: usually clearly lighter or darker than the seat, otherwise similar."""
    if rng.random() < 0.4:
        return float(np.clip(albedo + rng.uniform(-0.1, 0.1), 0.25, 0.95))
    shift = rng.uniform(0.3, 0.6)
    darker, lighter = albedo - shift, albedo + shift
    return float(np.clip(darker if darker >= 0.25 or lighter > 0.95 else lighter, 0.25, 0.95))


def _seat(spec: ChairSpec) -> list[tuple[Part, float]]:
    top, bottom = spec.seat_height, spec.seat_height - spec.seat_thickness
    if spec.round_seat:
        radius = 0.25 * (spec.seat_width + spec.seat_depth)
        parts = [(prism((0, bottom, 0), (0, top, 0), radius, sides=20), spec.albedo_seat)]
    else:
        size = (spec.seat_width, spec.seat_thickness, spec.seat_depth)
        parts = [(box((0, top - spec.seat_thickness / 2, 0), size), spec.albedo_seat)]
    if spec.cushion > 0.0:
        depth = spec.seat_depth - spec.back_thickness - 0.03
        center = (0, top + spec.cushion / 2, spec.seat_depth / 2 - 0.01 - depth / 2)
        size = (spec.seat_width - 0.03, spec.cushion, depth)
        if spec.round_seat:
            parts.append(
                (
                    prism(
                        (0, top, 0),
                        (0, top + spec.cushion, 0),
                        0.25 * (spec.seat_width + spec.seat_depth) - 0.02,
                        sides=20,
                    ),
                    spec.albedo_cushion,
                )
            )
        else:
            parts.append((box(center, size), spec.albedo_cushion))
    return parts


def _seat_half_extents(spec: ChairSpec) -> tuple[float, float]:
    if spec.round_seat:
        radius = 0.25 * (spec.seat_width + spec.seat_depth)
        return radius * 0.7, radius * 0.7
    return spec.seat_width / 2, spec.seat_depth / 2


def _legs(spec: ChairSpec) -> list[tuple[Part, float]]:
    builders = {
        "straight": _four_legs,
        "round": _four_legs,
        "pedestal": _pedestal,
        "sled": _sled,
        "cantilever": _cantilever,
        "panel": lambda _: [],
    }
    return [(part, spec.albedo_legs) for part in builders[spec.legs](spec)]


def _four_legs(spec: ChairSpec) -> list[Part]:
    half_w, half_d = _seat_half_extents(spec)
    x = half_w - spec.leg_inset - spec.leg_size / 2
    z = half_d - spec.leg_inset - spec.leg_size / 2
    top = spec.seat_height - spec.seat_thickness / 2  # overlaps the seat, hiding the joint
    square = spec.legs == "straight"
    parts, feet = [], {}
    for sx in (-1, 1):
        for sz in (-1, 1):
            start = (sx * x, top, sz * z)
            end = (sx * (x + spec.leg_splay), 0.0, sz * (z + spec.leg_splay))
            feet[sx, sz] = (np.array(start), np.array(end))
            if square:
                parts.append(prism(start, end, spec.leg_size / math.sqrt(2), 4, phase=math.pi / 4))
            else:
                parts.append(prism(start, end, spec.leg_size / 2, 8, spec.leg_size * 0.35))
    if spec.stretchers:
        # Bars between the legs at a fraction of their height: both sides and the front.
        t = 0.75
        radius = spec.leg_size * 0.3
        for a, b in [((-1, 1), (-1, -1)), ((1, 1), (1, -1)), ((-1, 1), (1, 1))]:
            pa = feet[a][0] + t * (feet[a][1] - feet[a][0])
            pb = feet[b][0] + t * (feet[b][1] - feet[b][0])
            parts.append(prism(pa, pb, radius, 4 if square else 8, phase=math.pi / 4))
    if spec.apron > 0.0 and not spec.round_seat:
        y = spec.seat_height - spec.seat_thickness - spec.apron / 2
        depth = spec.leg_size * 0.6
        for sz in (-1, 1):
            parts.append(box((0, y, sz * z), (2 * x, spec.apron, depth)))
        for sx in (-1, 1):
            parts.append(box((sx * x, y, 0), (depth, spec.apron, 2 * z)))
    return parts


def _pedestal(spec: ChairSpec) -> list[Part]:
    bottom = spec.seat_height - spec.seat_thickness
    column = max(0.02, spec.leg_size * 0.8)
    parts = [box((0, bottom - 0.02, 0), (0.18, 0.04, 0.18))]  # tilt mechanism under the seat
    if spec.feet == 0:
        radius = 0.18 + 2.0 * spec.leg_size
        parts.append(prism((0, 0, 0), (0, 0.03, 0), radius, sides=20))
        parts.append(prism((0, 0.03, 0), (0, bottom, 0), column * 1.8, 12, column))
        return parts
    hub = 0.05 if spec.casters else 0.08
    parts.append(prism((0, hub, 0), (0, bottom, 0), column, sides=10))
    length = 0.22 + 2.0 * spec.leg_size
    tip = 0.06 if spec.casters else 0.015
    for k in range(spec.feet):
        angle = 2.0 * math.pi * k / spec.feet
        end = (length * math.sin(angle), tip, length * math.cos(angle))
        parts.append(prism((0, hub, 0), end, 0.022, 4, 0.014, phase=math.pi / 4))
        if spec.casters:
            parts.append(prism((end[0], 0.0, end[2]), (end[0], tip, end[2]), 0.025, sides=6))
    return parts


def _tube(points: list[tuple[float, float, float]], radius: float) -> list[Part]:
    """Bent tube through ``points``: straight prisms joined by small spheres at the bends."""
    parts = [prism(a, b, radius, sides=6) for a, b in zip(points[:-1], points[1:], strict=True)]
    joint = uv_sphere(3, 6)
    parts += [Part(joint.vertices * radius + np.asarray(p), joint.faces) for p in points[1:-1]]
    return parts


def _tube_frame(spec: ChairSpec) -> tuple[float, float, float, float]:
    """Where the bent tubes of a sled or cantilever base run: the seat's half depth, the tube
    radius, the tubes' distance from the middle (x) and the height of their top run (y)."""
    half_w, half_d = _seat_half_extents(spec)
    radius = 0.008 + 0.25 * spec.leg_size
    y = spec.seat_height - spec.seat_thickness - radius
    return half_d, radius, half_w - spec.leg_inset, y


def _side_tubes(path: list[tuple[float, float]], x: float, radius: float) -> list[Part]:
    """The same tube through ``path`` ((y, z) points) on either side, at -x and at +x."""
    return [part for sx in (-1, 1) for part in _tube([(sx * x, y, z) for y, z in path], radius)]


def _sled(spec: ChairSpec) -> list[Part]:
    half_d, radius, x, y = _tube_frame(spec)
    reach = half_d + spec.leg_splay
    path = [(y, half_d - 0.04), (radius, reach), (radius, -reach), (y, -half_d + 0.04)]
    return _side_tubes([*path, path[0]], x, radius)


def _cantilever(spec: ChairSpec) -> list[Part]:
    half_d, radius, x, y = _tube_frame(spec)
    front = half_d + 0.02 + spec.leg_splay
    foot = half_d + spec.leg_splay * 0.5 + spec.leg_inset
    rear = -half_d + 2.0 * spec.leg_inset
    parts = _side_tubes(
        [(y, -half_d + 0.05), (y, front), (radius, foot), (radius, rear)], x, radius
    )
    if spec.stretchers:
        parts.append(prism((-x, radius, rear), (x, radius, rear), radius, sides=6))
    return parts


def _back(spec: ChairSpec) -> list[tuple[Part, float]]:
    if spec.back == "none":
        return []
    _, half_d = _seat_half_extents(spec)
    if spec.round_seat:
        half_d = 0.25 * (spec.seat_width + spec.seat_depth) * 0.85
    width = spec.back_width * spec.seat_width
    height, depth = spec.back_height, spec.back_thickness
    post = max(0.025, min(0.06, spec.leg_size))
    below = spec.seat_thickness  # posts start inside the seat so tilted backs stay attached
    local: list[Part] = []
    if spec.back == "solid":
        panel = height - spec.back_gap
        local.append(box((0, spec.back_gap + panel / 2, 0), (width, panel, depth)))
        if spec.back_arch > 0.0:
            # A flattened disc as thick as the panel; its lower half hides inside the panel.
            disc = prism((0, 0, -depth / 2), (0, 0, depth / 2), width / 2, sides=20)
            local.append(disc.transformed(np.diag([1.0, spec.back_arch, 1.0]), (0, height, 0)))
        if spec.back_gap > 0.0:
            for sx in (-1, 1):
                span = spec.back_gap + panel / 2 + below
                local.append(
                    box((sx * (width / 2 - post), span / 2 - below, 0), (post, span, depth * 0.8))
                )
    else:
        for sx in (-1, 1):
            local.append(
                box(
                    (sx * (width / 2 - post / 2), (height - below) / 2, 0),
                    (post, height + below, depth),
                )
            )
        rail = min(0.1, 0.2 * height)
        if spec.back == "slats":
            local.append(box((0, height - rail / 2, 0), (width, rail, depth)))
            inner = width - 2 * post
            n = spec.back_members
            slat = inner / n * 0.45
            for k in range(n):
                x = -inner / 2 + inner * (k + 0.5) / n
                local.append(box((x, (height - rail) / 2, 0), (slat, height - rail, depth * 0.6)))
        else:
            n = spec.back_members
            bar = min(0.07, 0.5 * height / n)
            lowest = height * 0.35
            for k in range(n):
                y = height - bar / 2 - (height - lowest) * k / max(1, n - 1)
                local.append(box((0, y, 0), (width - post, bar, depth * 0.8)))
    pivot = (0.0, spec.seat_height, -half_d + depth / 2)
    tilt = rotation_x(-spec.back_tilt)  # lean backward, toward -z
    return [(part.transformed(tilt, pivot), spec.albedo_back) for part in local]


def _arms(spec: ChairSpec) -> list[tuple[Part, float]]:
    if spec.arms == "none":
        return []
    half_w, half_d = spec.seat_width / 2, spec.seat_depth / 2
    top = spec.seat_height + spec.arm_height
    # Reach the tilted backrest at arm height.
    rear = -half_d - spec.arm_height * math.tan(spec.back_tilt)
    parts = []
    for sx in (-1, 1):
        if spec.arms == "posts":
            x = sx * (half_w - spec.arm_width / 2)
            z = half_d - 0.06
            parts.append(
                prism(
                    (x, spec.seat_height - 0.01, z),
                    (x, top, z),
                    spec.arm_width * 0.3,
                    4,
                    phase=math.pi / 4,
                )
            )
            pad = (half_d + 0.03) - rear
            parts.append(box((x, top + 0.015, rear + pad / 2), (spec.arm_width, 0.03, pad)))
        else:
            thickness = spec.arm_width + 0.02
            x = sx * (half_w + thickness / 2)
            low = 0.0 if spec.legs == "panel" else spec.seat_height - spec.seat_thickness - 0.04
            parts.append(
                box(
                    (x, (low + top) / 2, (half_d + rear) / 2), (thickness, top - low, half_d - rear)
                )
            )
    return [(part, spec.albedo_arms) for part in parts]
