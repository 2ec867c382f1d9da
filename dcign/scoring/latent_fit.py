"""A factor's value as latents of a network, and back: the equivariance fit as a map.

A network that learned a factor encodes its value in a few latents. "The code of this value" is
the mean code of the reference images taken at that value, and between the values the data
holds it is interpolated linearly (around the turn for a periodic factor): a 2-d azimuth group
traces an arc, which a straight line fitted to the value would cut short (DC-IGN's arc spans
about three quarters of a circle over a half turn of the head). The explorer's sliders move
along it, and DC-IGN rendering a novel view from the query's factor values
(``dcign.scoring.multi_view``) takes the target's latents from it. Reading a value back from
latents is the equivariance regression (on cosine and sine for a full turn).

A latent that *is* an angle (``angular``: a volume decoder's full-turn pose latent, read as the
direction of two outputs, radians modulo a turn) is averaged, interpolated and regressed on the
circle: the mean of 179 and -179 degrees is 180, not 0, and between two values the angle turns
the way the readings turn with the values, which across a held-out half turn need not be the
short way round (see :func:`unwrapped`).
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


def _wrapped(angles: torch.Tensor) -> torch.Tensor:
    """Angles in radians carried into ``[-pi, pi)``."""
    return torch.remainder(angles + math.pi, 2 * math.pi) - math.pi


def _latent_design(latents: torch.Tensor, angular: bool) -> torch.Tensor:
    """The inverse regression's design ``[N, 1 + L or 1 + 2L]``: an angle enters as its cosine
    and sine, so that its wrap from pi to -pi is no jump."""
    columns = [latents.cos(), latents.sin()] if angular else [latents]
    return torch.cat([torch.ones_like(latents[:, :1]), *columns], dim=1)


def turn_direction(knots: torch.Tensor, means: torch.Tensor) -> float:
    """+1 where angle latents ``means [K, L]`` turn with the values ``knots [K]`` (radians),
    -1 where against them (a mirrored reading): whichever of latent minus value or latent plus
    value is the more nearly constant over the knots (the larger mean resultant length)."""
    along = torch.polar(torch.ones_like(means), means - knots[:, None]).mean(dim=0).abs().sum()
    against = torch.polar(torch.ones_like(means), means + knots[:, None]).mean(dim=0).abs().sum()
    return 1.0 if float(along) >= float(against) else -1.0


def unwrapped(knots: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Angle latents ``means [K, L]`` at ascending ``knots [K]`` made continuous: each step
    from one knot to the next is the turn that differs least from the step the values take
    (times the direction the latents turn), so a gap in the values - a held-out half of a
    turn - is crossed the way the latents turn, not the short way back."""
    direction = turn_direction(knots, means)
    expected = direction * knots.diff()[:, None]
    steps = _wrapped(means.diff(dim=0) - expected) + expected
    return torch.cat([means[:1], means[:1] + steps.cumsum(dim=0)])


@dataclass(frozen=True)
class LatentFit:
    """Latents ``dims`` of one network as a function of a factor's value, and back."""

    dims: tuple[int, ...]
    periodic: bool
    knots: torch.Tensor  # [K] the distinct values of the reference images, ascending
    means: torch.Tensor  # [K, len(dims)] their mean latents
    inverse: torch.Tensor  # [1 + len(dims), targets]: latents -> value (or cos, sin)
    # Beyond the knots of a bounded factor: hold the end knot's latents (False), or go on along
    # the least-squares line through all knots (True: values never seen, docs/volume.md).
    extrapolate: bool = False
    # The latents are angles in radians, read modulo a turn (a full-turn pose latent).
    angular: bool = False

    @classmethod
    def fit(
        cls,
        codes: torch.Tensor,
        values: torch.Tensor,
        dims: list[int],
        periodic: bool,
        angular: bool = False,
    ) -> LatentFit:
        """Fit on reference ``codes [N, D]`` with factor ``values [N]`` (radians or units);
        ``angular``: the latents are angles (each knot's mean is then the circular mean)."""
        latents = codes[:, dims].double()
        knots, which = torch.unique(values.double(), return_inverse=True)

        def knot_means(columns: torch.Tensor) -> torch.Tensor:
            sums = columns.new_zeros(len(knots), len(dims)).index_add_(0, which, columns)
            return sums / torch.bincount(which, minlength=len(knots)).double()[:, None]

        if angular:
            means = torch.atan2(knot_means(latents.sin()), knot_means(latents.cos()))
        else:
            means = knot_means(latents)
        targets = _features(values, periodic)[:, 1:]
        inverse = _least_squares(_latent_design(latents, angular), targets)
        return cls(tuple(dims), periodic, knots, means, inverse, angular=angular)

    def latents(self, value: float) -> torch.Tensor:
        """The latents ``[len(dims)]`` this network uses for ``value``."""
        return self.latents_of(torch.tensor([value]))[0]

    def latents_of(self, values: torch.Tensor) -> torch.Tensor:
        """The latents ``[N, len(dims)]`` this network uses for each of ``values [N]``:
        linear between the two nearest knots, the nearest knot's beyond the ends (or, for a
        full turn, between the last knot and the first one turned once round; or, with
        ``extrapolate``, the end knot's plus the knots' least-squares slope times the way
        beyond it). Angle latents are unwrapped along the knots first (:func:`unwrapped`;
        round a full turn, the first knot's angle comes back one turn on in the direction the
        latents turn) and the result is carried back into ``[-pi, pi)``."""
        knots, means = self.knots, self.means
        values = values.cpu().double()
        if self.periodic:
            knots = torch.cat([knots, knots[:1] + 2 * math.pi])
            means = torch.cat([means, means[:1]])
            values = knots[0] + torch.remainder(values - knots[0], 2 * math.pi)
        if self.angular:
            means = unwrapped(knots, means)
        result = self._between(knots, means, values)
        return (_wrapped(result) if self.angular else result).float()

    def _between(
        self, knots: torch.Tensor, means: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Linear between the knots' ``means``, held or extrapolated beyond the ends."""
        inside = values.clamp(float(knots[0]), float(knots[-1]))
        beyond = self.slope()[None] * (values - inside)[:, None]
        upper = torch.searchsorted(knots, inside).clamp(1, max(1, len(knots) - 1))
        if len(knots) == 1:
            return means.expand(len(values), -1)
        low, high = knots[upper - 1], knots[upper]
        weight = ((inside - low) / (high - low))[:, None]
        return (1 - weight) * means[upper - 1] + weight * means[upper] + beyond

    def slope(self) -> torch.Tensor:
        """Latents per unit of value beyond the ends ``[len(dims)]``: the least-squares slope of
        the knots' mean latents when extrapolating a bounded factor, else zero (held)."""
        if not self.extrapolate or self.periodic or len(self.knots) < 2:
            return torch.zeros(self.means.shape[1], dtype=torch.float64)
        means = unwrapped(self.knots, self.means) if self.angular else self.means
        design = torch.stack([torch.ones_like(self.knots), self.knots], dim=1)
        return _least_squares(design, means)[1]

    def value(self, code: torch.Tensor) -> float:
        """The factor value a code's latents stand for (the equivariance fit)."""
        latents = code[list(self.dims)].double()
        predicted = _latent_design(latents[None], self.angular)[0] @ self.inverse
        if self.periodic:
            return math.atan2(float(predicted[1]), float(predicted[0])) % (2 * math.pi)
        return float(predicted[0])

    def apply(self, code: torch.Tensor, value: float) -> torch.Tensor:
        """``code`` with this fit's latents set to those of ``value``."""
        edited = code.clone()
        edited[list(self.dims)] = self.latents(value).to(code)
        return edited
