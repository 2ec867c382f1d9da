"""The DC-IGN encoder ("de-renderer") and decoder ("renderer").

Paper architecture (section 3): the encoder is convolution + max-pooling stages (96/64/32 filters
of 5x5 on 150x150 grayscale) followed by a linear map to the mean and log-variance of a
D-dimensional Gaussian code; the decoder mirrors it with nearest-neighbour unpooling +
convolution stages (32/64/96 filters of 7x7). Everything is configurable so that the same code
serves the paper preset and a small preset that trains in minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from dcign.errors import ConfigError


@dataclass(frozen=True)
class Architecture:
    """Sizes of the encoder and the decoder (conf/model/paper.yaml: the published ones)."""

    image_size: int = 32
    channels: int = 1
    latent_dim: int = 32
    encoder_filters: Sequence[int] = field(default=(16, 32, 64))
    encoder_kernel: int = 3
    decoder_filters: Sequence[int] = field(default=(64, 32, 16))
    decoder_kernel: int = 3

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

    def feature_sizes(self) -> list[int]:
        """Spatial size after each pooling stage (floor, as max-pooling does)."""
        sizes = [self.image_size]
        for _ in self.encoder_filters:
            sizes.append(sizes[-1] // 2)
        return sizes


# The ``model.net`` keys a checkpoint's weights depend on: all of them.
WEIGHT_KEYS = tuple(item.name for item in fields(Architecture))


class Encoder(nn.Module):
    """Image ``[N, C, H, W]`` -> ``(mu, logvar)`` of the code, each ``[N, D]``."""

    def __init__(self, arch: Architecture) -> None:
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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x).flatten(1)
        return self.mu(h), self.logvar(h)


class Decoder(nn.Module):
    """Code ``[N, D]`` -> pixel logits ``[N, C, H, W]``.

    Returns logits rather than probabilities so the Bernoulli likelihood can use the numerically
    stable ``binary_cross_entropy_with_logits`` (also under bf16 autocast); the public
    ``decode`` of the model applies the sigmoid.
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
            layers += [
                nn.Upsample(size=(size, size), mode="nearest"),
                nn.Conv2d(in_ch, out_ch, arch.decoder_kernel, padding=arch.decoder_kernel // 2),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        layers.append(
            nn.Conv2d(in_ch, arch.channels, arch.decoder_kernel, padding=arch.decoder_kernel // 2)
        )
        self.render = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.project(z))
        h = h.view(z.shape[0], self.start_channels, self.start_size, self.start_size)
        return self.render(h)


class InverseGraphicsNet(nn.Module):
    """Encoder + decoder pair: the unit shared by DC-IGN and its entangled baseline."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        self.encoder = Encoder(arch)
        self.decoder = Decoder(arch)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Code -> pixel probabilities in [0, 1]."""
        return torch.sigmoid(self.decoder(z))
