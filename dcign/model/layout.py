"""The latent layout: which code dimensions mean which graphics factor.

DC-IGN's code is a vector of size D split into named, contiguous groups (paper: azimuth=[0],
elevation=[1], light=[2], intrinsic=[3:200]). The layout is configuration, so it is validated
once at start-up: a wrong layout would otherwise train for hours and produce a code whose
"azimuth" latent means nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dcign.errors import ConfigError

INTRINSIC = "intrinsic"


@dataclass(frozen=True)
class LatentLayout:
    """Named contiguous slices of a ``latent_dim``-sized code, in declaration order."""

    latent_dim: int
    slices: tuple[tuple[str, int, int], ...]  # (name, start, stop)

    @classmethod
    def from_sizes(cls, sizes: Mapping[str, int | None], latent_dim: int) -> LatentLayout:
        """Build from ``{name: size}``; at most one size may be ``None`` ("the rest of D").

        The paper's faces layout is ``{azimuth: 1, elevation: 1, light: 1, intrinsic: null}``
        with D=200.
        """
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ConfigError(
                f"model.net.latent_dim must be a positive integer, got {latent_dim!r}. "
                "The paper uses model.net.latent_dim=200."
            )
        if not sizes:
            raise ConfigError(
                "model.layout is empty. Give each trained factor a latent group, e.g. "
                "model.layout='{azimuth: 1, elevation: 1, light: 1, intrinsic: null}'."
            )
        open_ended = [name for name, size in sizes.items() if size is None]
        if len(open_ended) > 1:
            raise ConfigError(
                f"model.layout leaves the size of {open_ended} open; only one group may take "
                "'the rest of the code' (null). Give the others an integer size."
            )
        for name, size in sizes.items():
            if size is not None and (not isinstance(size, int) or size < 1):
                raise ConfigError(
                    f"model.layout.{name} must be a positive integer (or null for 'the rest'), "
                    f"got {size!r}."
                )
        fixed = sum(size for size in sizes.values() if size is not None)
        rest = latent_dim - fixed
        if rest < (1 if open_ended else 0) or (not open_ended and rest != 0):
            wanted = dict(sizes)
            raise ConfigError(
                f"model.layout {wanted} needs {fixed}{' + at least 1' if open_ended else ''} "
                f"latents but model.net.latent_dim={latent_dim}. Make the group sizes add up to "
                "model.net.latent_dim, or set one group (usually intrinsic) to null so it takes "
                "the rest."
            )
        slices = []
        start = 0
        for name, size in sizes.items():
            stop = start + (rest if size is None else size)
            slices.append((str(name), start, stop))
            start = stop
        return cls(latent_dim=latent_dim, slices=tuple(slices))

    @property
    def names(self) -> list[str]:
        """Group names in layout order; their positions are the group-type ids of a batch."""
        return [name for name, _, _ in self.slices]

    def indices(self, name: str) -> list[int]:
        """Latent indices of one group, e.g. ``layout.indices("azimuth") == [0]``."""
        for group, start, stop in self.slices:
            if group == name:
                return list(range(start, stop))
        raise ConfigError(f"No latent group named {name!r}; the layout has {self.names}.")

    def as_dict(self) -> dict[str, list[int]]:
        """Group name -> latent indices, the form other code and logs read."""
        return {name: list(range(start, stop)) for name, start, stop in self.slices}

    def active_masks(self) -> torch.Tensor:
        """Boolean ``[num_groups, latent_dim]``: row t marks the latents group type t trains."""
        masks = torch.zeros(len(self.slices), self.latent_dim, dtype=torch.bool)
        for row, (_, start, stop) in enumerate(self.slices):
            masks[row, start:stop] = True
        return masks
