"""The DC-IGN encoder ("de-renderer") and decoder ("renderer").

Paper architecture (section 3): the encoder is convolution + max-pooling stages (96/64/32 filters
of 5x5 on 150x150 grayscale) followed by a linear map to the mean and log-variance of a
D-dimensional Gaussian code; the decoder mirrors it with nearest-neighbour unpooling +
convolution stages (32/64/96 filters of 7x7). Everything is configurable so that the same code
serves the paper preset and a small preset that trains in minutes on a CPU; the decoder's
upsampling can also be learnt (transposed or sub-pixel convolution), a lever for how much
fine detail it draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dcign.errors import ConfigError
from dcign.model.film import FiLM, modulate, styled
from dcign.model.volume import LatentRoles, VolumeDecoder

# model.net.volume_held_elevation's setting for "the data's own camera elevation".
HELD_FROM_DATA = "data"
# How the encoder reads a full-turn angle for the volume decoder: as the direction of two
# outputs (circle), or as one output (line).
TURN_READINGS = ("circle", "line")

# How a decoder stage doubles its grid: the paper's nearest-neighbour unpooling followed by a
# convolution, one stride-2 transposed convolution, or a convolution to four times the channels
# rearranged into a grid twice as large (sub-pixel convolution, Shi et al. 2016).
UPSAMPLING = ("nearest", "transposed", "subpixel")
# What draws the image from the code: the paper's 2D network (image), or a feature volume
# rotated by the pose latents and projected (volume, dcign/model/volume.py).
DECODERS = ("image", "volume")


@dataclass(frozen=True)
class Architecture:
    """Sizes of the encoder and the decoder (conf/model/paper.yaml: the published ones)."""

    image_size: int = 32
    channels: int = 1
    latent_dim: int = 32
    encoder_filters: Sequence[int] = field(default=(32, 64))
    encoder_kernel: int = 3
    decoder_filters: Sequence[int] = field(default=(64, 32))
    decoder_kernel: int = 3
    decoder_upsampling: str = "nearest"
    decoder: str = "image"
    volume_size: int = 16
    volume_channels: int = 8
    decoder_film: bool = False
    volume_film: bool = False
    volume_film_shape: bool = True
    volume_render_filters: Sequence[int] | None = None
    volume_mirror: bool = False
    volume_doublings: int = 2
    # Degrees, or "data" (resolved by for_data). A checkpoint saved before the key existed was
    # trained at 0 degrees, and is read so (DCIGN.on_load_checkpoint).
    volume_held_elevation: float | str = "data"
    volume_turn_reading: str = "circle"

    def __post_init__(self) -> None:
        for name in ("encoder_kernel", "decoder_kernel"):
            kernel = getattr(self, name)
            if kernel < 1 or kernel % 2 == 0:
                raise ConfigError(
                    f"model.net.{name} must be a positive odd number so that 'same' padding keeps "
                    f"the image size, got {kernel}."
                )
        for name in ("encoder_filters", "decoder_filters"):
            filters = list(getattr(self, name))
            if not filters or any(int(f) < 1 for f in filters):
                raise ConfigError(f"model.net.{name} must be a non-empty list of positive ints.")
        if len(self.encoder_filters) != len(self.decoder_filters):
            raise ConfigError(
                f"model.net.encoder_filters {list(self.encoder_filters)} and "
                f"model.net.decoder_filters {list(self.decoder_filters)} must have the same "
                "length: each decoder stage unpools what one encoder stage pooled."
            )
        smallest = self.image_size // 2 ** len(self.encoder_filters)
        if smallest < 1:
            raise ConfigError(
                f"dataset.image_size={self.image_size} is too small for "
                f"{len(self.encoder_filters)} pooling stages; use at least "
                f"{2 ** len(self.encoder_filters)} pixels or fewer model.net.encoder_filters."
            )
        if self.channels < 1:
            raise ConfigError(f"dataset.channels must be >= 1, got {self.channels}.")
        if self.decoder_upsampling not in UPSAMPLING:
            raise ConfigError(
                f"model.net.decoder_upsampling must be one of {list(UPSAMPLING)}, "
                f"got {self.decoder_upsampling!r}."
            )
        if self.decoder not in DECODERS:
            raise ConfigError(
                f"model.net.decoder must be one of {list(DECODERS)}, got {self.decoder!r}."
            )
        if type(self.volume_doublings) is not int or self.volume_doublings not in (1, 2):
            raise ConfigError(
                "model.net.volume_doublings is how many times the volume's grid doubles after "
                "the code's linear projection fills it: 2 (from a quarter of volume_size) or 1 "
                f"(from half of it), got {self.volume_doublings!r}."
            )
        step = 2**self.volume_doublings
        if self.volume_size < step or self.volume_size % step:
            raise ConfigError(
                f"model.net.volume_size must be a multiple of {step} (the volume grows from "
                f"1/{step} of it in {self.volume_doublings} doubling(s), "
                f"model.net.volume_doublings), got {self.volume_size}."
            )
        if self.volume_channels < 1:
            raise ConfigError(
                f"model.net.volume_channels must be >= 1, got {self.volume_channels}."
            )
        self.check_render_filters()
        self.check_held_elevation()
        if self.volume_turn_reading not in TURN_READINGS:
            raise ConfigError(
                f"model.net.volume_turn_reading must be one of {list(TURN_READINGS)}, got "
                f"{self.volume_turn_reading!r}."
            )
        for name in ("decoder_film", "volume_film", "volume_film_shape", "volume_mirror"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"model.net.{name} must be true or false, got {getattr(self, name)!r}."
                )

    def check_render_filters(self) -> None:
        """The volume renderer's widths: two or more positive ints, whose doublings between the
        volume's grid and the image's last stage stay within the image."""
        render = self.volume_render_filters
        if render is None:
            return
        if (
            isinstance(render, str | int)
            or len(render) < 2
            or not all(isinstance(f, int) and not isinstance(f, bool) and f >= 1 for f in render)
        ):
            raise ConfigError(
                "model.net.volume_render_filters are the widths of the volume decoder's 2D "
                "renderer, at the volume's grid, then one per doubling, the last at the "
                "image's size: two or more positive ints, e.g. [64, 32] or [64, 32, 16], or "
                f"null for the last two of decoder_filters; got {render!r}."
            )
        reached = self.volume_size * 2 ** (len(render) - 2)
        if reached > self.image_size:
            raise ConfigError(
                f"model.net.volume_render_filters {list(render)} double the volume's grid "
                f"({self.volume_size}) {len(render) - 2} times before the image's last stage, "
                f"to {reached}, past dataset.image_size={self.image_size}; use fewer widths or "
                "a smaller model.net.volume_size."
            )

    def check_held_elevation(self) -> None:
        """``data`` or a number of degrees within [-90, 90]."""
        held = self.volume_held_elevation
        number = isinstance(held, int | float) and not isinstance(held, bool)
        if held != HELD_FROM_DATA and not (number and -90.0 <= held <= 90.0):
            raise ConfigError(
                "model.net.volume_held_elevation is the elevation the volume decoder views the "
                "object from when the latent layout has no elevation group: 'data' (the mean "
                "of the data's elevation values, 0 without any) or degrees within [-90, 90]; "
                f"got {held!r}."
            )

    def for_data(self, factors: Sequence[Mapping[str, Any]] | None) -> Architecture:
        """This architecture with ``volume_held_elevation: data`` resolved to degrees: the mean
        of the training factors' elevation values (radians), or 0 where the data has no
        elevation factor."""
        if self.volume_held_elevation != HELD_FROM_DATA:
            return self
        values = next((f["values"] for f in factors or () if f["name"] == "elevation"), [0.0])
        held = math.degrees(sum(float(v) for v in values) / len(values))
        return replace(self, volume_held_elevation=held)

    def feature_sizes(self) -> list[int]:
        """Spatial size after each pooling stage (floor, as max-pooling does)."""
        sizes = [self.image_size]
        for _ in self.encoder_filters:
            sizes.append(sizes[-1] // 2)
        return sizes


# The ``model.net`` keys a checkpoint's weights depend on (all of them), each with what a
# checkpoint saved before the key existed was trained with (None: the key always existed).
WEIGHT_KEYS = {item.name: None for item in fields(Architecture)} | {
    "decoder_upsampling": "nearest",
    "decoder": "image",
    "volume_size": 16,
    "volume_channels": 8,
    "decoder_film": False,
    "volume_film": False,
    "volume_film_shape": True,
    "volume_render_filters": None,
    "volume_mirror": False,
    "volume_doublings": 2,
}
# The held elevation shapes no weight: a checkpoint resumes under another one (and learns to
# turn about the new axis).
del WEIGHT_KEYS["volume_held_elevation"]
# Read from the checkpoint instead (DCIGN.on_load_checkpoint): a run with the circle reading
# resumes a checkpoint saved before it existed, with the line reading it was trained with.
del WEIGHT_KEYS["volume_turn_reading"]


class Encoder(nn.Module):
    """Image ``[N, C, H, W]`` -> ``(mu, logvar)`` of the code, each ``[N, D]``.

    The latents in ``turns`` (full-turn angles, in radians) are read as the direction of two
    outputs of their own (``atan2``) instead of as one output: a linear output cannot wrap, so
    near the half turn, where the angle jumps from +180 to -180 degrees, it settles in between
    and reads a chair seen from behind as seen from the side; a direction wraps by itself.
    """

    def __init__(self, arch: Architecture, turns: Sequence[int] = ()) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = arch.channels
        for out_ch in arch.encoder_filters:
            layers += [
                nn.Conv2d(in_ch, out_ch, arch.encoder_kernel, padding=arch.encoder_kernel // 2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        flat = in_ch * arch.feature_sizes()[-1] ** 2
        self.mu = nn.Linear(flat, arch.latent_dim)
        self.logvar = nn.Linear(flat, arch.latent_dim)
        self.register_buffer("turn_latents", torch.tensor(list(turns)).long(), persistent=False)
        self.turn = nn.Linear(flat, 2 * len(turns)) if turns else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        mu = self.mu(h)
        if self.turn is not None:
            # atan2 in float32 under any autocast: its gradient divides by the squared length.
            pairs = self.turn(h).float().unflatten(1, (-1, 2))
            angles = torch.atan2(pairs[..., 1], pairs[..., 0]).to(mu.dtype)
            mu = mu.index_copy(1, self.turn_latents, angles)
        return mu, self.logvar(h)


class FitSize(nn.Module):
    """Pads a doubled grid by replication to the encoder's mirrored size.

    Max-pooling floors odd sizes (75 -> 37), and a learnt 2x upsampling gives back 74; the
    missing last row and column are copies of their neighbours, as nearest unpooling would
    draw them.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        missing = self.size - h.shape[-1]
        return F.pad(h, (0, missing, 0, missing), mode="replicate") if missing else h


def subpixel_conv(in_ch: int, out_ch: int, kernel: int) -> nn.Conv2d:
    """A convolution to ``4 * out_ch`` channels for a 2x pixel shuffle, initialised so that the
    four sub-pixels of each output channel start equal (ICNR, Aitken et al. 2017): the stage
    starts as nearest unpooling of one convolution and learns to tell the sub-pixels apart,
    instead of starting from the checkerboard an independent initialisation draws."""
    conv = nn.Conv2d(in_ch, 4 * out_ch, kernel, padding=kernel // 2)
    with torch.no_grad():
        conv.weight.copy_(conv.weight[:out_ch].repeat_interleave(4, dim=0))
        conv.bias.copy_(conv.bias[:out_ch].repeat_interleave(4))
    return conv


def upsampling_stage(arch: Architecture, in_ch: int, out_ch: int, size: int) -> list[nn.Module]:
    """One decoder stage, ``[N, in_ch, s, s]`` -> ``[N, out_ch, size, size]`` (size 2s or 2s+1).

    The nearest stage keeps its module order (unpool, convolution, ReLU), so weights saved
    before the option existed load unchanged.
    """
    kernel, pad = arch.decoder_kernel, arch.decoder_kernel // 2
    if arch.decoder_upsampling == "nearest":
        layers = [
            nn.Upsample(size=(size, size), mode="nearest"),
            nn.Conv2d(in_ch, out_ch, kernel, padding=pad),
        ]
    elif arch.decoder_upsampling == "transposed":
        # Output (s - 1) * 2 - 2 * pad + kernel + 1 = 2s for an odd kernel.
        layers = [
            nn.ConvTranspose2d(in_ch, out_ch, kernel, stride=2, padding=pad, output_padding=1),
            FitSize(size),
        ]
    else:
        layers = [subpixel_conv(in_ch, out_ch, kernel), nn.PixelShuffle(2), FitSize(size)]
    return [*layers, nn.ReLU(inplace=True)]


def in_layout_of(network: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """``h`` in the memory layout of ``network``'s first convolution weights.

    A linear layer's output viewed as a grid is NCHW. A convolution returns the layout of its
    weights, but the stages before the first one (an unpooling, a ReLU) run in the layout they
    are given, and on a CPU nearest unpooling of an NCHW grid costs several times its NHWC cost
    (``runtime.channels_last``, docs/performance.md). The copy is of the smallest grid.
    """
    conv = next(layer for layer in network if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d))
    nhwc = conv.weight.is_contiguous(memory_format=torch.channels_last)
    if nhwc and not conv.weight.is_contiguous():
        return h.contiguous(memory_format=torch.channels_last)
    return h


class Decoder(nn.Module):
    """Code ``[N, D]`` -> pixel logits ``[N, C, H, W]``.

    Returns logits rather than probabilities so the Bernoulli likelihood can use the numerically
    stable ``binary_cross_entropy_with_logits`` (also under bf16 autocast); the public
    ``decode`` of the model applies the sigmoid. With ``arch.decoder_film`` the whole code also
    scales and shifts every hidden channel (:mod:`dcign.model.film`), from the projected grid
    to the last stage.
    """

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        sizes = arch.feature_sizes()
        self.start_channels = int(arch.decoder_filters[0])
        self.start_size = sizes[-1]
        self.project = nn.Linear(arch.latent_dim, self.start_channels * self.start_size**2)
        layers: list[nn.Module] = []
        in_ch = self.start_channels
        # Unpool to the encoder's mirrored sizes, so odd sizes (150 -> 75 -> 37 -> 18) come back
        # exactly instead of as powers of two.
        for out_ch, size in zip(arch.decoder_filters, reversed(sizes[:-1]), strict=True):
            layers += upsampling_stage(arch, in_ch, int(out_ch), size)
            in_ch = out_ch
        layers.append(
            nn.Conv2d(in_ch, arch.channels, arch.decoder_kernel, padding=arch.decoder_kernel // 2)
        )
        self.render = nn.Sequential(*layers)
        widths = (self.start_channels, *arch.decoder_filters)
        self.style = FiLM(arch.latent_dim, widths) if arch.decoder_film else None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], self.start_channels, self.start_size, self.start_size)
        h = in_layout_of(self.render, h)
        if self.style is None:
            return self.render(torch.relu(h))
        styles = self.style.styles(z)
        return styled(self.render, torch.relu(modulate(h, next(styles))), styles)


def volume_decoder(arch: Architecture, roles: LatentRoles | None) -> VolumeDecoder:
    """The volume decoder of ``arch``; it reads latents by role, so it needs ``roles``."""
    if roles is None:
        raise ValueError("A volume decoder needs the latents' roles (LatentRoles.of).")
    return VolumeDecoder(
        arch.image_size,
        arch.channels,
        roles,
        arch.volume_size,
        arch.volume_channels,
        arch.volume_render_filters or arch.decoder_filters[-2:],
        arch.decoder_kernel,
        arch.volume_film,
        arch.volume_mirror,
        arch.volume_film_shape,
        arch.volume_doublings,
        # "data" unresolved (a network built without the data's factors): no elevation known.
        math.radians(float(arch.for_data(None).volume_held_elevation)),
    )


class InverseGraphicsNet(nn.Module):
    """Encoder + decoder pair: the unit shared by DC-IGN and its entangled baseline.

    A volume decoder reads latents by role (angles, shape, shading), so it needs ``roles``;
    an image decoder reads the code as one vector.
    """

    def __init__(
        self, arch: Architecture, roles: LatentRoles | None = None, turns: Sequence[int] = ()
    ) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch, turns)
        self.decoder = Decoder(arch) if arch.decoder == "image" else volume_decoder(arch, roles)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Code -> pixel probabilities in [0, 1]."""
        return torch.sigmoid(self.decoder(z))
