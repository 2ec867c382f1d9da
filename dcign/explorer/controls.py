"""The explorer's sliders: what a slider position means for each network's code.

A factor's slider moves in the factor's own units (degrees for angles), over the values the data
takes. Each network maps a value to latents through :class:`~dcign.scoring.latent_fit.LatentFit`
on reference test images: DC-IGN's latent group of the factor, and each comparison network's
latents chosen for that factor (the baseline's: paper 4.1.1). A slider at 30 degrees asks each
network for "its code of 30 degrees", and the truth can be rendered at the same 30 degrees beside
them. A slider left where it started changes nothing, so an untouched image shows the plain
reconstruction.

The intrinsic code has no units: its sliders move along the main directions (principal
components) of DC-IGN's intrinsic latents over the reference images, in standard deviations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dcign.scoring.latent_fit import LatentFit


@dataclass(frozen=True)
class FactorSlider:
    """One extrinsic factor: its range in the data and each network's fit."""

    name: str
    column: int
    periodic: bool
    low: float
    high: float
    degrees: bool
    dcign: LatentFit
    # The comparison networks' fits by network name (those whose latents could be chosen).
    comparisons: Mapping[str, LatentFit]

    @property
    def key(self) -> str:
        return self.name

    def spec(self) -> dict[str, object]:
        """What the page needs to draw the slider (in display units)."""
        scale = 180 / math.pi if self.degrees else 1.0
        return {
            "key": self.key,
            "label": self.name,
            "unit": "deg" if self.degrees else "",
            "min": self.low * scale,
            "max": self.high * scale,
            "step": (self.high - self.low) * scale / 200,
            "kind": "factor",
        }

    def from_display(self, shown: float) -> float:
        """A slider position (display units) as a factor value, kept inside the data's range."""
        value = math.radians(shown) if self.degrees else shown
        return min(max(value, self.low), self.high)

    def to_display(self, value: float) -> float:
        return math.degrees(value) if self.degrees else value


@dataclass(frozen=True)
class IntrinsicSlider:
    """One main direction of DC-IGN's intrinsic code, in standard deviations."""

    index: int
    dims: tuple[int, ...]
    direction: torch.Tensor  # [len(dims)], unit length
    spread: float  # standard deviation of the references along it

    @property
    def key(self) -> str:
        return f"intrinsic_{self.index + 1}"

    def spec(self) -> dict[str, object]:
        return {
            "key": self.key,
            "label": f"identity direction {self.index + 1}",
            "unit": "sd",
            "min": -3.0,
            "max": 3.0,
            "step": 0.05,
            "kind": "intrinsic",
        }

    def apply(self, code: torch.Tensor, amount: float) -> torch.Tensor:
        """``code`` moved ``amount`` standard deviations along this direction."""
        edited = code.clone()
        edited[list(self.dims)] += amount * self.spread * self.direction.to(code)
        return edited


def intrinsic_sliders(codes: torch.Tensor, dims: list[int], count: int) -> list[IntrinsicSlider]:
    """The ``count`` principal directions of ``codes[:, dims]`` (fewer if there are fewer)."""
    latents = codes[:, dims].double()
    centred = latents - latents.mean(dim=0)
    _, singular, directions = torch.linalg.svd(centred, full_matrices=False)
    spreads = singular / math.sqrt(max(1, len(latents) - 1))
    count = min(count, len(dims), len(spreads))
    return [
        IntrinsicSlider(k, tuple(dims), directions[k].float(), float(spreads[k]))
        for k in range(count)
    ]
