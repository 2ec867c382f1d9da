"""The explorer's sliders: what a slider position means for each network's code.

A factor's slider moves in the factor's own units (degrees for angles), over the values the data
takes. Each network maps a value to latents by a least-squares fit on reference test images:
DC-IGN's latent group of the factor, and the baseline's latents chosen for that factor (paper
4.1.1), regressed on the value (on its cosine and sine for a full turn). That is the
equivariance fit read backwards: a slider at 30 degrees asks each network for "its code of 30
degrees", and the truth can be rendered at the same 30 degrees beside them. A slider left where
it started changes nothing, so an untouched image shows the plain reconstruction.

The intrinsic code has no units: its sliders move along the main directions (principal
components) of DC-IGN's intrinsic latents over the reference images, in standard deviations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _features(values: torch.Tensor, periodic: bool) -> torch.Tensor:
    """Regression design ``[N, 2 or 3]``: ``[1, v]``, or ``[1, cos v, sin v]`` for a full turn."""
    values = values.double()
    columns = [torch.ones_like(values)]
    columns += [values.cos(), values.sin()] if periodic else [values]
    return torch.stack(columns, dim=1)


def _least_squares(design: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.linalg.lstsq(design, targets.double(), driver="gelsd").solution


@dataclass(frozen=True)
class LatentFit:
    """Latents ``dims`` of one network as a linear function of a factor's value, and back."""

    dims: tuple[int, ...]
    periodic: bool
    forward: torch.Tensor  # [features, len(dims)]: value -> latents
    inverse: torch.Tensor  # [1 + len(dims), targets]: latents -> value (or cos, sin)

    @classmethod
    def fit(
        cls, codes: torch.Tensor, values: torch.Tensor, dims: list[int], periodic: bool
    ) -> LatentFit:
        """Fit on reference ``codes [N, D]`` with factor ``values [N]`` (radians or units)."""
        design = _features(values, periodic)
        latents = codes[:, dims].double()
        targets = design[:, 1:]
        latent_design = torch.cat([torch.ones_like(latents[:, :1]), latents], dim=1)
        return cls(
            tuple(dims),
            periodic,
            _least_squares(design, latents),
            _least_squares(latent_design, targets),
        )

    def latents(self, value: float) -> torch.Tensor:
        """The latents ``[len(dims)]`` this network uses for ``value``."""
        design = _features(torch.tensor([value]), self.periodic)
        return (design @ self.forward)[0].float()

    def value(self, code: torch.Tensor) -> float:
        """The factor value a code's latents stand for (the equivariance fit)."""
        latents = code[list(self.dims)].double()
        predicted = torch.cat([latents.new_ones(1), latents]) @ self.inverse
        if self.periodic:
            return math.atan2(float(predicted[1]), float(predicted[0])) % (2 * math.pi)
        return float(predicted[0])

    def apply(self, code: torch.Tensor, value: float) -> torch.Tensor:
        """``code`` with this fit's latents set to those of ``value``."""
        edited = code.clone()
        edited[list(self.dims)] = self.latents(value).to(code)
        return edited


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
    baseline: LatentFit | None

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
