"""A renderer that knows 3D: a feature volume, rotated rigidly by the pose and projected.

DC-IGN's image decoder learns what each view looks like one view at a time, so a pose edit has
nothing to keep the face's parts in place and a view outside the training range cannot be drawn.
This decoder splits the code by role instead:

- the **pose** latents (one per pose group: ``azimuth``, ``elevation``) are angles in radians;
  they build a rotation and do nothing else, so the only way a view can change with them is by
  turning the object;
- the **shape** latents (``intrinsic``) are decoded into a feature volume ``[C + 1, V, V, V]``:
  ``C`` feature channels and one density;
- the volume is rotated rigidly (``affine_grid`` / ``grid_sample`` in 3D) and projected along
  the depth axis by alpha compositing, so a voxel in front hides the ones behind it;
- the remaining (**shading**) latents, light for faces, reach a small 2D network that turns the
  projected features into the image; with ``film`` the shape and shading latents also scale and
  shift each of its channels (FiLM, as HoloGAN styles its 2D stages), which lets the code draw
  detail finer than the grid without giving the 2D network the pose.

Rotating the volume commutes with the pose by construction: rendering at angle ``a + b`` is
rendering the volume turned by ``b`` at angle ``a``. What it cannot do: draw what the volume's
grid cannot hold (``V`` voxels across), or turn a part that the 2D network draws on its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dcign.errors import ConfigError
from dcign.model.film import FiLM, styled
from dcign.model.layout import INTRINSIC, LatentLayout

# The latent groups read as rotation angles, in the order the rotation applies them: the object
# turns about the vertical axis (azimuth), then tilts towards the camera (elevation).
POSE_GROUPS = ("azimuth", "elevation")


@dataclass(frozen=True)
class LatentRoles:
    """Which latents the volume decoder reads as what: angles, shape and shading."""

    azimuth: int | None
    elevation: int | None
    shape: tuple[int, ...]
    shading: tuple[int, ...]

    @classmethod
    def of(cls, layout: LatentLayout) -> LatentRoles:
        groups = layout.as_dict()
        poses = [name for name in POSE_GROUPS if name in groups]
        if not poses:
            raise ConfigError(
                f"model.net.decoder=volume rotates its volume by the {list(POSE_GROUPS)} latent "
                f"groups, and the layout {layout.names} has neither. Train on a data set with a "
                "view factor, or use model.net.decoder=image."
            )
        if INTRINSIC not in groups:
            raise ConfigError(
                "model.net.decoder=volume builds its volume from the 'intrinsic' latent group, "
                f"and the layout {layout.names} has none; add one, e.g. "
                "model.layout='{azimuth: 1, intrinsic: null}'."
            )
        for name in poses:
            if len(groups[name]) != 1:
                raise ConfigError(
                    f"model.net.decoder=volume reads the '{name}' group as one angle, but it "
                    f"has {len(groups[name])} latents; give it one (model.layout.{name}=1)."
                )
        angles = {name: groups[name][0] for name in poses}
        others = [idx for name, idx in groups.items() if name not in (*poses, INTRINSIC)]
        shading = [i for idx in others for i in idx]
        return cls(
            azimuth=angles.get("azimuth"),
            elevation=angles.get("elevation"),
            shape=tuple(groups[INTRINSIC]),
            shading=tuple(shading),
        )

    @property
    def pose(self) -> dict[str, int]:
        """Pose group name -> its angle's latent index."""
        named = {"azimuth": self.azimuth, "elevation": self.elevation}
        return {name: index for name, index in named.items() if index is not None}


def full_turns(roles: LatentRoles, factors: Sequence[Mapping[str, Any]] | None) -> list[int]:
    """The angle latents of the pose factors that turn fully (``periodic``: the chairs'
    azimuth), in the layout's order."""
    periodic = {str(f["name"]) for f in factors or () if f.get("periodic")}
    return [index for name, index in roles.pose.items() if name in periodic]


def style_latents(roles: LatentRoles, with_shape: bool) -> tuple[int, ...]:
    """The latents that style the 2D renderer: the shading ones, and the shape ones too
    ``with_shape``. Never the pose: no 2D stage may turn the object on its own. Without the
    shape, the object's code reaches the image only through the volume, which turns, and not
    through a 2D network that could learn to draw its marks from the code at the trained views
    alone (measured beyond the training range in docs/results.md; not the default)."""
    return (*(roles.shape if with_shape else ()), *roles.shading)


def one_latent_per_pose(sizes: dict[str, int | None]) -> dict[str, int | None]:
    """A layout with every pose group shrunk to one latent (its angle); the rest unchanged.

    The data sets' own layouts give azimuth two latents, which an image decoder needs (one
    latent folds the turn in two); the volume decoder reads one angle, and the freed latent
    goes to the group that takes the rest of the code.
    """
    return {name: 1 if name in POSE_GROUPS else size for name, size in sizes.items()}


def rotation_matrices(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """Rotations ``[N, 3, 3]`` acting on ``(x, y, z)`` = (image right, image down, depth).

    Azimuth turns about the vertical (y) axis, mixing x and depth; elevation then turns about
    the horizontal (x) axis, mixing y and depth.
    """
    ca, sa = torch.cos(azimuth), torch.sin(azimuth)
    ce, se = torch.cos(elevation), torch.sin(elevation)
    zero, one = torch.zeros_like(ca), torch.ones_like(ca)
    turn = torch.stack([ca, zero, sa, zero, one, zero, -sa, zero, ca], dim=-1).unflatten(-1, (3, 3))
    tilt = torch.stack([one, zero, zero, zero, ce, -se, zero, se, ce], dim=-1).unflatten(-1, (3, 3))
    return tilt @ turn


def rotate_volume(volume: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """``volume [N, C, D, H, W]`` turned rigidly by ``rotation [N, 3, 3]`` about its centre.

    ``grid_sample`` reads, for each output voxel at ``p``, the input at ``R^T p``; what the turn
    brings in from outside the grid is zeros, which is empty space for a non-negative density.
    """
    theta = torch.cat([rotation.transpose(1, 2), rotation.new_zeros(len(rotation), 3, 1)], dim=2)
    grid = F.affine_grid(theta, list(volume.shape), align_corners=False)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def composite(density: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Alpha compositing front to back along depth (dim 2): ``[N, C + 1, H, W]``.

    ``density [N, 1, D, H, W]`` is a non-negative optical depth per voxel, ``features [N, C, D,
    H, W]``; slice 0 faces the camera. A voxel's weight is its opacity ``1 - exp(-density)``
    times the transmittance of the voxels in front of it, so an opaque voxel hides whatever lies
    behind it. After the C features come the accumulated opacity (the silhouette) and the
    expected depth of what is seen (slice centres at ``(d + 0.5) / D``), from whose slopes the
    2D network can shade: the features turn with the volume, their meaning does not, so
    a surface's facing is told by its depth.
    """
    depth_before = torch.cumsum(density, dim=2) - density
    weights = torch.exp(-depth_before) * (1.0 - torch.exp(-density))
    slices = density.shape[2]
    centres = (torch.arange(slices, device=density.device, dtype=density.dtype) + 0.5) / slices
    seen_depth = (weights * centres[:, None, None]).sum(dim=2)
    projected = (weights * features).sum(dim=2)
    return torch.cat([projected, weights.sum(dim=2), seen_depth], dim=1)


def voxel_shuffle(volume: torch.Tensor) -> torch.Tensor:
    """``[N, 8C, D, H, W]`` -> ``[N, C, 2D, 2H, 2W]``: channel ``8c + 4i + 2j + k`` becomes
    voxel ``(2d + i, 2h + j, 2w + k)`` of channel c (sub-pixel convolution in 3D): a grid
    twice as fine for the cost of a per-voxel convolution on the coarse one."""
    n, channels, d, h, w = volume.shape
    grouped = volume.view(n, channels // 8, 2, 2, 2, d, h, w)
    return grouped.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(n, channels // 8, 2 * d, 2 * h, 2 * w)


def mirrored(volume: torch.Tensor) -> torch.Tensor:
    """``volume [N, C, D, H, W]`` made left-right symmetric: the mean of it and its mirror
    across the plane ``x = 0`` (``W`` reversed). An object that is its own mirror image (a
    face, a chair) then shows one side as the mirror of the other, so what any view shows of
    either side trains both."""
    return 0.5 * (volume + volume.flip(-1))


def renderer(
    inputs: int, channels: int, widths: Sequence[int], kernel: int, image_size: int
) -> nn.Sequential:
    """The 2D network from the projected grid to the image's pixel logits.

    Two convolutions of ``widths[0]`` filters at the grid; then each further width is one
    stage of nearest upsampling and a convolution, doubling the grid, the last stage reaching
    the image's size; then one convolution to the image's channels. With two widths that is one
    jump from the grid to the image. A grid a quarter of the image or smaller is grown in
    doublings instead, so that no single convolution has to smooth blocks of 4x4 pixels.
    """
    pad = kernel // 2
    first = widths[0]
    layers: list[nn.Module] = [
        nn.Conv2d(inputs, first, kernel, padding=pad),
        nn.ReLU(inplace=True),
        nn.Conv2d(first, first, kernel, padding=pad),
        nn.ReLU(inplace=True),
    ]
    for index, (wide, narrow) in enumerate(pairwise(widths), start=2):
        last = index == len(widths)
        grow = nn.Upsample(size=(image_size, image_size)) if last else nn.Upsample(scale_factor=2)
        layers += [grow, nn.Conv2d(wide, narrow, kernel, padding=pad), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(widths[-1], channels, kernel, padding=pad))
    return nn.Sequential(*layers)


class VolumeDecoder(nn.Module):
    """Code ``[N, D]`` -> pixel logits ``[N, C, H, W]`` through a rotated feature volume."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        roles: LatentRoles,
        volume_size: int,
        volume_channels: int,
        filters: Sequence[int],
        kernel: int,
        film: bool = False,
        mirror: bool = False,
        film_shape: bool = True,
        doublings: int = 2,
        held_elevation: float = 0.0,
    ) -> None:
        super().__init__()
        self.roles = roles
        self.held_elevation = held_elevation
        self.mirror = mirror
        self.register_buffer("shape_index", torch.tensor(roles.shape), persistent=False)
        shading = torch.tensor(roles.shading, dtype=torch.long)
        self.register_buffer("shading_index", shading, persistent=False)
        style = style_latents(roles, film and film_shape)
        if film and not style:
            raise ConfigError(
                "model.net.volume_film_shape=false styles the volume decoder's renderer with "
                "the shading latents alone (the groups besides the pose and 'intrinsic' ones), "
                "and the latent layout has none; set model.net.volume_film_shape=true or "
                "model.net.volume_film=false."
            )
        self.register_buffer("style_index", torch.tensor(style, dtype=torch.long), persistent=False)
        start = volume_size // 2**doublings
        wide, mid = 4 * volume_channels, 2 * volume_channels
        self.start = (wide, start)
        self.project = nn.Linear(len(roles.shape), wide * start**3)
        # To the half-size grid (unpooling when the projection filled a quarter-size one; with
        # one doubling the projection places each of its voxels itself, as the image decoder's
        # 8x8 start does), a 3x3x3 convolution there, then a per-voxel convolution to eight
        # sub-voxels each (a 3x3x3 convolution on the full grid would cost more than the whole
        # image decoder).
        unpool = [nn.Upsample(scale_factor=2, mode="nearest")] if doublings == 2 else []
        self.grow = nn.Sequential(
            *unpool,
            nn.Conv3d(wide, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, 8 * (volume_channels + 1), 1),
        )
        widths = [int(width) for width in filters]
        self.render = renderer(
            volume_channels + 2 + len(roles.shading), channels, widths, kernel, image_size
        )
        # The pose-free latents style each hidden stage of the renderer, in its order; the pose
        # latents never reach the style, so no 2D stage can turn the face on its own.
        self.style = FiLM(len(style), (widths[0], *widths)) if film else None

    def angles(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Azimuth and elevation ``[N]`` in radians: zero azimuth where the layout has no
        azimuth group, and ``held_elevation`` where it has no elevation group. The held tilt is
        what makes an azimuth turn rigid on data seen from above (the chairs, from 20-30
        degrees): the object turns about its own vertical axis, which the camera sees tilted
        towards it; turned about the image's vertical instead, a seat seen from above at the
        front would be seen from below at the back."""
        azimuth = (
            z[:, self.roles.azimuth] if self.roles.azimuth is not None else z.new_zeros(len(z))
        )
        if self.roles.elevation is not None:
            return azimuth, z[:, self.roles.elevation]
        return azimuth, z.new_full((len(z),), self.held_elevation)

    def volume(self, z: torch.Tensor) -> torch.Tensor:
        """The unrotated volume ``[N, C + 1, V, V, V]``: the density first (an optical depth,
        made non-negative by softplus so that zero is empty space), then the features; with
        ``mirror``, left-right symmetric about the object's own midplane."""
        wide, start = self.start
        h = torch.relu(self.project(z[:, self.shape_index]))
        grown = voxel_shuffle(self.grow(h.view(len(z), wide, start, start, start)))
        volume = torch.cat([F.softplus(grown[:, :1]), grown[:, 1:]], dim=1)
        return mirrored(volume) if self.mirror else volume

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        volume = self.volume(z)
        # The turn and the projection in float32 under any autocast: a cumulative optical depth
        # summed in bf16 would lose the transmittance of the voxels behind the first few.
        with torch.autocast(device_type=z.device.type, enabled=False):
            rotation = rotation_matrices(*(angle.float() for angle in self.angles(z)))
            turned = rotate_volume(volume.float(), rotation)
            projected = composite(turned[:, :1], turned[:, 1:])
        shading = z[:, self.shading_index][:, :, None, None].expand(-1, -1, *projected.shape[2:])
        return self.draw(torch.cat([projected, shading.to(projected)], dim=1), z)

    def draw(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The 2D renderer on the projected features; with FiLM, each hidden stage is scaled
        and shifted per channel by the code's style just before its ReLU."""
        if self.style is None:
            return self.render(h)
        return styled(self.render, h, self.style.styles(z[:, self.style_index]))
